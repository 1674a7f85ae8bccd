/* Transport dispatch and SMTP reply parsing (see transport.h). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "transport.h"
#include "utf8.h"

struct transport *transport_new(const struct conf *c, const char *password, atomic_bool *abort,
                                struct err *err)
{
	struct transport *t;
	if (strncmp(c->smtp.url, "maildir:", 8) == 0)
		t = transport_maildir_new(c->smtp.url + 8, err);
	else
		t = transport_smtp_new(c, password, err);
	if (t)
		t->abort = abort;
	return t;
}

int transport_send(struct transport *t, const char *from, const char *rcpt, const char *data,
                   size_t len, struct send_result *res)
{
	memset(res, 0, sizeof *res);
	return t->ops->send(t, from, rcpt, data, len, res);
}

void transport_free(struct transport *t)
{
	if (t)
		t->ops->free(t);
}

void transport_parse_reply(const char *line, struct send_result *res)
{
	struct buf b = {0};
	buf_init(&b, sizeof res->reply - 1);
	/* A reply line is the server's text: clean it before it reaches a log,
	 * the ledger or JSON (UTF-8 only, no control characters). */
	utf8_clean(&b, line, strnlen(line, sizeof res->reply - 1), 0);
	snprintf(res->reply, sizeof res->reply, "%s", buf_str(&b));
	buf_free(&b);
	const char *p = res->reply;
	if (isdigit((unsigned char)p[0]) && isdigit((unsigned char)p[1]) &&
	    isdigit((unsigned char)p[2])) {
		res->code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
		p += 3;
		if (*p == ' ' || *p == '-')
			p++;
		/* RFC 3463 enhanced status: class.subject.detail */
		const char *s = p;
		if ((*s == '2' || *s == '4' || *s == '5') && s[1] == '.') {
			size_t n = 0;
			while (n < sizeof res->status - 1 &&
			       (isdigit((unsigned char)s[n]) || s[n] == '.'))
				n++;
			memcpy(res->status, s, n);
			res->status[n] = '\0';
		}
	}
	const char *q = strstr(res->reply, "queued as ");
	if (q) {
		q += strlen("queued as ");
		size_t n = 0;
		while (n < sizeof res->queue_id - 1 && q[n] && !isspace((unsigned char)q[n]) &&
		       q[n] != ')' && q[n] != ',' && q[n] != ';')
			n++;
		memcpy(res->queue_id, q, n);
		res->queue_id[n] = '\0';
	}
}
