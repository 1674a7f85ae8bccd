/*
 * SMTP over one libcurl easy handle (LIBNOTES.md §2). The handle is reused
 * for every message, so libcurl keeps the connection (and its TLS session
 * and AUTH) open between them; one recipient per transaction gives an
 * unambiguous result per delivery. Not the multi interface: in curl 7.88
 * its SMTP DONE phase blocks the whole loop until the server answers the
 * final dot (curl#8555); threads, one handle each, don't share that stall.
 *
 * Classification (LIBNOTES.md §2.2): curl's result first, the reply code
 * second, because a dropped connection can leave the previous transfer's
 * 250 as the response code.
 */
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "transport.h"
#include "xmalloc.h"

struct smtp {
	struct transport base;
	CURL *h;
	char *password;
	char errbuf[CURL_ERROR_SIZE];
	char last[512]; /* the last reply line of the transaction */
	const char *data;
	size_t len, off;
};

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct smtp *s = arg;
	size_t len = size * n, k = len;
	/* After a failed transaction libcurl says QUIT; its 221 is no answer
	 * about the message. */
	if (len >= 4 && memcmp(p, "221", 3) == 0 && (p[3] == ' ' || p[3] == '-'))
		return len;
	while (k > 0 && (p[k - 1] == '\n' || p[k - 1] == '\r'))
		k--;
	if (k >= sizeof s->last)
		k = sizeof s->last - 1;
	memcpy(s->last, p, k);
	s->last[k] = '\0';
	return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *arg)
{
	struct smtp *s = arg;
	size_t want = size * n, left = s->len - s->off;
	if (want > left)
		want = left;
	memcpy(buf, s->data + s->off, want);
	s->off += want;
	return want;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt, (void)dn, (void)ut, (void)un;
	struct smtp *s = arg;
	return s->base.abort && atomic_load(s->base.abort) ? 1 : 0;
}

/* Maps curl's result and the last reply to an outcome (see file comment). */
static enum send_outcome classify(CURLcode rc, int code)
{
	switch (rc) {
	case CURLE_OK:
		return code >= 200 && code < 300 ? SEND_OK : SEND_TEMP;
	case CURLE_SEND_ERROR:         /* MAIL, RCPT or DATA refused */
	case CURLE_WEIRD_SERVER_REPLY: /* the final dot refused */
	case CURLE_RECV_ERROR:
		return code >= 500 && code < 600 ? SEND_PERM : SEND_TEMP;
	default:
		/* connect, timeouts, dropped connection (CURLE_GOT_NOTHING), TLS
		 * (CURLE_USE_SSL_FAILED), AUTH (CURLE_LOGIN_DENIED): none is about
		 * this recipient; the message waits for the relay or the admin. */
		return SEND_TEMP;
	}
}

static int smtp_send(struct transport *t, const char *from, const char *rcpt, const char *data,
                     size_t len, struct send_result *res)
{
	struct smtp *s = (struct smtp *)t;
	char *env_from = xasprintf("<%s>", from);
	char *env_rcpt = xasprintf("<%s>", rcpt);
	struct curl_slist *rcpts = curl_slist_append(NULL, env_rcpt);
	s->data = data;
	s->len = len;
	s->off = 0;
	s->last[0] = '\0';
	s->errbuf[0] = '\0';
	curl_easy_setopt(s->h, CURLOPT_MAIL_FROM, env_from);
	curl_easy_setopt(s->h, CURLOPT_MAIL_RCPT, rcpts);
	curl_easy_setopt(s->h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
	CURLcode rc = curl_easy_perform(s->h);
	long code = 0;
	curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &code);
	/* CURLOPT_MAIL_RCPT is not copied: keep the list until the transfer is done. */
	curl_easy_setopt(s->h, CURLOPT_MAIL_RCPT, NULL);
	curl_slist_free_all(rcpts);
	free(env_from);
	free(env_rcpt);

	transport_parse_reply(s->last, res);
	if (rc != CURLE_OK && res->code != (int)code)
		res->code = (int)code; /* the last line can be the greeting's or EHLO's */
	if (rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING || rc == CURLE_OPERATION_TIMEDOUT)
		res->code = res->code >= 400 ? res->code : 0; /* a 250 left over is no answer */
	res->outcome = classify(rc, res->code);
	if (rc != CURLE_OK) {
		char why[sizeof res->reply];
		snprintf(why, sizeof why, "%s%s%s", curl_easy_strerror(rc),
		         s->errbuf[0] ? ": " : "", s->errbuf);
		if (res->reply[0] && res->code >= 400)
			snprintf(res->reply + strlen(res->reply),
			         sizeof res->reply - strlen(res->reply), " (%s)",
			         curl_easy_strerror(rc));
		else
			snprintf(res->reply, sizeof res->reply, "%s", why);
	}
	return res->outcome == SEND_OK ? 0 : -1;
}

static void smtp_free(struct transport *t)
{
	struct smtp *s = (struct smtp *)t;
	if (s->h)
		curl_easy_cleanup(s->h);
	if (s->password) {
		explicit_bzero(s->password, strlen(s->password));
		free(s->password);
	}
	free(s);
}

static const struct transport_ops smtp_ops = {smtp_send, smtp_free};

/* The EHLO name: our host name when it is qualified, else the sender's domain. */
static char *ehlo_name(const struct conf *c)
{
	char host[256];
	if (gethostname(host, sizeof host) == 0 && strchr(host, '.'))
		return xstrdup(host);
	const char *at = strrchr(c->site.from, '@');
	if (at == NULL)
		return xstrdup("localhost");
	size_t n = strcspn(at + 1, "> \t");
	return xstrndup(at + 1, n);
}

struct transport *transport_smtp_new(const struct conf *c, const char *password, struct err *err)
{
	struct smtp *s = xcalloc(1, sizeof *s);
	s->base.ops = &smtp_ops;
	s->h = curl_easy_init();
	if (s->h == NULL) {
		free(s);
		err_set(err, ERR_INTERNAL, "curl_easy_init failed");
		return NULL;
	}
	/* The URL path is the EHLO name (libcurl's SMTP URL scheme). */
	const char *u = c->smtp.url;
	const char *hostpart = strstr(u, "://") + 3;
	char *ehlo = ehlo_name(c);
	char *url = strchr(hostpart, '/') ? xstrdup(u) : xasprintf("%s/%s", u, ehlo);
	free(ehlo);
	curl_easy_setopt(s->h, CURLOPT_URL, url);
	free(url);
	curl_easy_setopt(s->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(s->h, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(s->h, CURLOPT_READFUNCTION, on_read);
	curl_easy_setopt(s->h, CURLOPT_READDATA, s);
	curl_easy_setopt(s->h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(s->h, CURLOPT_HEADERDATA, s);
	curl_easy_setopt(s->h, CURLOPT_ERRORBUFFER, s->errbuf);
	curl_easy_setopt(s->h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(s->h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(s->h, CURLOPT_XFERINFODATA, s);
	curl_easy_setopt(s->h, CURLOPT_CONNECTTIMEOUT, (long)TRANSPORT_CONNECT_TIMEOUT);
	curl_easy_setopt(s->h, CURLOPT_TIMEOUT, (long)TRANSPORT_TIMEOUT);
	/* A relay that stops answering mid-transfer is dropped well before the
	 * overall timeout. */
	curl_easy_setopt(s->h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(s->h, CURLOPT_LOW_SPEED_TIME, 30L);
	switch (c->smtp.tls) {
	case TLS_REQUIRED:
		curl_easy_setopt(s->h, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
		break;
	case TLS_AUTO:
		/* STARTTLS whenever the relay offers it; "required" never falls back. */
		curl_easy_setopt(s->h, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);
		break;
	case TLS_OFF:
		curl_easy_setopt(s->h, CURLOPT_USE_SSL, (long)CURLUSESSL_NONE);
		break;
	}
	if (c->smtp.ca_file && *c->smtp.ca_file)
		curl_easy_setopt(s->h, CURLOPT_CAINFO, c->smtp.ca_file);
	if (c->smtp.username && *c->smtp.username) {
		curl_easy_setopt(s->h, CURLOPT_USERNAME, c->smtp.username);
		if (password) {
			s->password = xstrdup(password);
			curl_easy_setopt(s->h, CURLOPT_PASSWORD, s->password);
		}
	}
	return &s->base;
}
