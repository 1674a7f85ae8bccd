/* Transport dispatch and SMTP reply parsing (see transport.h). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "transport.h"
#include "utf8.h"

struct transport *transport_new(const struct conf *c, const char *password, atomic_bool *abort,
                                struct err *err)
{
	if (c->smtp.nrelays > 0)
		return transport_new_relay(c, &c->smtp.relays[0], password, abort, err);
	struct conf_relay r = {c->smtp.url,
	                       c->smtp.tls,
	                       c->smtp.ca_file,
	                       c->smtp.username,
	                       c->smtp.password_file,
	                       c->smtp.connections,
	                       0};
	return transport_new_relay(c, &r, password, abort, err);
}

struct transport *transport_new_relay(const struct conf *c, const struct conf_relay *r,
                                      const char *password, atomic_bool *abort, struct err *err)
{
	struct transport *t;
	if (strncmp(r->url, "maildir:", 8) == 0)
		t = transport_maildir_new(r->url + 8, err);
	else
		t = transport_smtp_new(c, r, password, err);
	if (t)
		t->abort = abort;
	return t;
}

int transport_send(struct transport *t, const char *from, const char *rcpt, const char *uid,
                   const char *data, size_t len, struct send_result *res)
{
	memset(res, 0, sizeof *res);
	return t->ops->send(t, from, rcpt, uid, data, len, res);
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

bool transport_keep_reply(char *last, size_t cap, const char *line, size_t n)
{
	if (n >= 4 && memcmp(line, "221", 3) == 0 && (line[3] == ' ' || line[3] == '-'))
		return false;
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	if (n >= cap)
		n = cap - 1;
	memcpy(last, line, n);
	last[n] = '\0';
	return true;
}

void transport_classify(const struct smtp_txn *t, struct send_result *res)
{
	res->code = 0;
	res->status[0] = res->queue_id[0] = '\0';
	transport_parse_reply(t->last ? t->last : "", res);
	if (t->end != SMTP_END_OK && res->code < 400) {
		/* no refusal to report: a 250 or 354 left over is no answer */
		res->code = 0;
		res->status[0] = res->queue_id[0] = '\0';
		snprintf(res->reply, sizeof res->reply, "%s", t->error ? t->error : "");
	}
	int code = res->code;
	res->relay_level = false;
	res->bounce = false;
	if (t->no_utf8) {
		/* The relay's abilities, not the reader's mailbox: no bounce. */
		res->outcome = SEND_PERM;
		res->code = 0;
		res->status[0] = res->queue_id[0] = '\0';
		snprintf(res->reply, sizeof res->reply,
		         "not sent: the relay does not offer SMTPUTF8 (RFC 6531), which an "
		         "address with a non-ASCII local part needs; send through a relay that "
		         "offers it, then matrixctl retry");
		return;
	}
	if (t->end == SMTP_END_OK) {
		res->outcome = code >= 200 && code < 300 ? SEND_OK : SEND_TEMP;
		return;
	}
	res->outcome = SEND_TEMP;
	if (t->end == SMTP_END_RELAY) {
		res->relay_level = true;
		return;
	}
	if (code >= 500 && code < 600) {
		if (t->stage == SMTP_STAGE_RCPT && strncmp(res->status, "5.7.", 4) != 0) {
			res->outcome = SEND_PERM; /* the mailbox: counts toward the bounce score */
			res->bounce = true;
		} else if (t->stage == SMTP_STAGE_DATA) {
			res->outcome = SEND_PERM; /* the content: fails, no bounce */
		} else {
			res->relay_level = true; /* greeting, AUTH, MAIL FROM, relaying denied */
		}
		return;
	}
	if (code >= 400 && code < 500) {
		res->relay_level =
		    code == 421 || t->stage == SMTP_STAGE_SESSION || t->stage == SMTP_STAGE_MAIL;
		return;
	}
	/* No reply: a timeout or a dropped connection. Once the whole message
	 * went out the relay may have it, and the attempt counts (a possible
	 * duplicate, bounded by max_attempts); before that it is the relay's. */
	res->relay_level = !t->body_sent;
}

int transport_envelope(const char *from, const char *rcpt, char *from_key, char *rcpt_key,
                       struct send_result *res)
{
	struct err e;
	if (addr_check(rcpt, strlen(rcpt), rcpt_key, &e) < 0) {
		res->outcome = SEND_PERM;
		snprintf(res->reply, sizeof res->reply, "not sent: %s", e.msg);
		return -1;
	}
	if (addr_check(from, strlen(from), from_key, NULL) < 0)
		snprintf(from_key, ADDR_MAX + 1, "%s", from);
	return 0;
}
