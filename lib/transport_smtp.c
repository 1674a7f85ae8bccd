/*
 * SMTP over one libcurl easy handle (docs/libraries.md, libcurl). The handle is reused
 * for every message, so libcurl keeps the connection (and its TLS session
 * and AUTH) open between them; one recipient per transaction gives an
 * unambiguous result per delivery. Not the multi interface: in curl 7.88
 * its SMTP DONE phase blocks the whole loop until the server answers the
 * final dot (curl#8555); threads, one handle each, don't share that stall.
 *
 * What a transaction ended with (curl's result, the stage, the last reply
 * line) is handed to transport_classify() (transport.c, a pure function
 * after docs/design.md's table): curl's result first, the reply second,
 * because a dropped connection can leave the previous transfer's 250 as
 * the response code (docs/libraries.md, libcurl).
 *
 * Addresses go out in their key form (addr.h): the domain as an A-label, so
 * a relay without SMTPUTF8 takes them (libcurl 7.88 converts a UTF-8 domain
 * itself only when the process runs in a UTF-8 locale). A UTF-8 local part
 * may only travel in a transaction whose MAIL FROM carries the SMTPUTF8
 * parameter (RFC 6531 §3.4), which libcurl adds when the relay's EHLO
 * offers it and an address is not ASCII; when it is missing, the
 * transaction stops at the reply to MAIL FROM, before any RCPT TO.
 */
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "addr.h"
#include "transport.h"
#include "xmalloc.h"

struct smtp {
	struct transport base;
	CURL *h;
	enum smtp_stage stage; /* of the last command (CURLOPT_DEBUGFUNCTION) */
	bool need_utf8;        /* an address of this transaction is not ASCII */
	bool no_utf8;          /* ... and MAIL FROM went out without SMTPUTF8 */
	int64_t abort_seen;    /* when an abort request was first seen, ms; 0 none */
	char *password;
	char errbuf[CURL_ERROR_SIZE];
	char last[512]; /* the last reply line of the transaction */
	const char *data;
	size_t len, off;
};

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct smtp *s = arg;
	size_t len = size * n;
	/* Stop before RCPT TO: a wrong length makes libcurl fail the transfer. */
	if (s->no_utf8 && s->stage == SMTP_STAGE_MAIL)
		return 0;
	transport_keep_reply(s->last, sizeof s->last, p, len);
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

static int on_debug(CURL *h, curl_infotype type, char *p, size_t n, void *arg)
{
	(void)h;
	struct smtp *s = arg;
	if (type != CURLINFO_HEADER_OUT || n < 4)
		return 0;
	if (strncasecmp(p, "MAIL", 4) == 0) {
		s->stage = SMTP_STAGE_MAIL;
		s->no_utf8 = s->need_utf8 && !memmem(p, n, " SMTPUTF8", 9);
	} else if (strncasecmp(p, "RCPT", 4) == 0)
		s->stage = SMTP_STAGE_RCPT;
	else if (strncasecmp(p, "DATA", 4) == 0)
		s->stage = SMTP_STAGE_DATA;
	return 0;
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt, (void)dn, (void)ut, (void)un;
	struct smtp *s = arg;
	if (s->base.abort == NULL || !atomic_load(s->base.abort))
		return 0;
	/* Cut at once while the message is still being sent; once it is all
	 * out, the relay may already have it: wait a while for the reply, as
	 * cutting now would send it again later. */
	if (s->off < s->len)
		return 1;
	if (s->abort_seen == 0)
		s->abort_seen = mono_ms();
	return mono_ms() - s->abort_seen > TRANSPORT_ABORT_GRACE * 1000;
}

static bool relay_curl_error(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_USE_SSL_FAILED:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_LOGIN_DENIED:
	case CURLE_AUTH_ERROR:
		return true;
	default:
		return false;
	}
}

static int smtp_send(struct transport *t, const char *from, const char *rcpt, const char *uid,
                     const char *data, size_t len, struct send_result *res)
{
	(void)uid; /* a relay cannot be asked what it already has */
	struct smtp *s = (struct smtp *)t;
	char from_key[ADDR_MAX + 1], rcpt_key[ADDR_MAX + 1];
	if (transport_envelope(from, rcpt, from_key, rcpt_key, res) < 0)
		return -1;
	s->need_utf8 = !addr_is_ascii(from_key, strlen(from_key)) ||
	               !addr_is_ascii(rcpt_key, strlen(rcpt_key));
	s->no_utf8 = false;
	char *env_from = xasprintf("<%s>", from_key);
	char *env_rcpt = xasprintf("<%s>", rcpt_key);
	struct curl_slist *rcpts = curl_slist_append(NULL, env_rcpt);
	s->data = data;
	s->len = len;
	s->off = 0;
	s->last[0] = '\0';
	s->errbuf[0] = '\0';
	s->stage = SMTP_STAGE_SESSION;
	s->abort_seen = 0;
	curl_easy_setopt(s->h, CURLOPT_MAIL_FROM, env_from);
	curl_easy_setopt(s->h, CURLOPT_MAIL_RCPT, rcpts);
	curl_easy_setopt(s->h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
	CURLcode rc = curl_easy_perform(s->h);
	/* CURLOPT_MAIL_RCPT is not copied: keep the list until the transfer is done. */
	curl_easy_setopt(s->h, CURLOPT_MAIL_RCPT, NULL);
	curl_slist_free_all(rcpts);
	free(env_from);
	free(env_rcpt);

	/* Our own record of this transaction's last reply line, not
	 * CURLINFO_RESPONSE_CODE: that can be a previous transfer's 250 after
	 * a drop. */
	char error[sizeof res->reply];
	snprintf(error, sizeof error, "%s%s%s", curl_easy_strerror(rc), s->errbuf[0] ? ": " : "",
	         s->errbuf);
	struct smtp_txn txn = {
	    .stage = s->stage,
	    .end = rc == CURLE_OK         ? SMTP_END_OK
	           : relay_curl_error(rc) ? SMTP_END_RELAY
	                                  : SMTP_END_FAILED,
	    .body_sent = s->stage == SMTP_STAGE_DATA && s->off == s->len,
	    .no_utf8 = s->no_utf8,
	    .last = s->last,
	    .error = error,
	};
	transport_classify(&txn, res);
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

/* The EHLO name: our host name when it is qualified, else the sender's
 * domain (an IDN as A-labels: EHLO takes ASCII only). */
static char *ehlo_name(const struct conf *c)
{
	char host[256];
	if (gethostname(host, sizeof host) == 0 && strchr(host, '.'))
		return xstrdup(host);
	char *dom = addr_domain_of(c->site.from);
	return dom ? dom : xstrdup("localhost");
}

struct transport *transport_smtp_new(const struct conf *c, const struct conf_relay *r,
                                     const char *password, struct err *err)
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
	const char *u = r->url;
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
	curl_easy_setopt(s->h, CURLOPT_DEBUGFUNCTION, on_debug);
	curl_easy_setopt(s->h, CURLOPT_DEBUGDATA, s);
	curl_easy_setopt(s->h, CURLOPT_VERBOSE, 1L); /* feeds on_debug only */
	curl_easy_setopt(s->h, CURLOPT_CONNECTTIMEOUT, (long)TRANSPORT_CONNECT_TIMEOUT);
	curl_easy_setopt(s->h, CURLOPT_TIMEOUT, (long)TRANSPORT_TIMEOUT);
	curl_easy_setopt(s->h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(s->h, CURLOPT_LOW_SPEED_TIME, (long)TRANSPORT_STALL);
	switch (r->tls) {
	case TLS_REQUIRED:
		curl_easy_setopt(s->h, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
		break;
	case TLS_AUTO:
		/* STARTTLS whenever the relay offers it; "required" never falls back.
		 * With a password to send, "auto" is "required": AUTH never goes out
		 * in clear because a man in the middle hid STARTTLS. */
		curl_easy_setopt(s->h, CURLOPT_USE_SSL,
		                 r->username && *r->username ? (long)CURLUSESSL_ALL
		                                             : (long)CURLUSESSL_TRY);
		break;
	case TLS_OFF:
		curl_easy_setopt(s->h, CURLOPT_USE_SSL, (long)CURLUSESSL_NONE);
		break;
	}
	if (r->ca_file && *r->ca_file)
		curl_easy_setopt(s->h, CURLOPT_CAINFO, r->ca_file);
	if (r->username && *r->username) {
		curl_easy_setopt(s->h, CURLOPT_USERNAME, r->username);
		if (password) {
			s->password = xstrdup(password);
			curl_easy_setopt(s->h, CURLOPT_PASSWORD, s->password);
		}
	}
	return &s->base;
}
