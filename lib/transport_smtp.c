/*
 * SMTP over one libcurl easy handle (docs/libraries.md, libcurl). libcurl
 * opens the session, which is where SMTP's hard parts are: the connection,
 * the greeting, EHLO, STARTTLS with its certificate checks, AUTH
 * (CURLOPT_CONNECT_ONLY stops there). The transactions on that session
 * are ours, through curl_easy_send() and curl_easy_recv(): MAIL FROM, RCPT
 * TO and DATA in one write when the relay offers PIPELINING (RFC 2920), the
 * message sent straight from its buffer with a dot added only where a line
 * begins with one (RFC 5321 §4.5.2), and RSET after a refusal keeps the
 * session. libcurl's own upload copies and examines every byte of the
 * message and waits for each reply in turn; that was most of the CPU a
 * message cost (docs/libraries.md, libcurl, and bench/dkim/README.md).
 * Not the multi interface: in curl 7.88 its SMTP DONE phase blocks the
 * whole loop until the server answers the final dot (curl#8555); threads,
 * one handle each, don't share that stall.
 *
 * What a transaction ended with (the stage, the last reply line, whether
 * the session ever came up) is handed to transport_classify() (transport.c,
 * a pure function after docs/design.md's table).
 *
 * Addresses go out in their key form (addr.h): the domain as an A-label, so
 * a relay without SMTPUTF8 takes them. A UTF-8 local part may only travel in
 * a transaction whose MAIL FROM carries the SMTPUTF8 parameter (RFC 6531
 * §3.4), which needs the relay's EHLO to offer it; when it does not, the
 * transaction is not begun.
 */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
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

/* A wait on the socket lasts at most this long before the abort flag and
 * the timeouts are looked at again. */
#define POLL_SLICE_MS 200

struct smtp {
	struct transport base;
	CURL *tmpl;         /* every option set, never performed: copied for a new session */
	CURL *h;            /* the session's handle; NULL when there is none */
	curl_socket_t fd;   /* its socket */
	bool reused;        /* the session carried a transaction before this one */
	bool in_ehlo;       /* the reply being read answers EHLO */
	bool drained;       /* the last receive found nothing (TLS holds nothing back) */
	int64_t idle_since; /* the end of the last transaction, ms */
	bool pipelining, size, smtputf8; /* what its last EHLO offered */
	int64_t abort_seen;              /* when an abort request was first seen, ms; 0 none */
	char *password;
	char errbuf[CURL_ERROR_SIZE];
	char last[512]; /* the last reply line of the transaction */
	char in[2048];  /* received and not yet read as reply lines */
	size_t inlen;
};

/* One transaction's clock and what is known of it. */
struct io {
	int64_t deadline, progress; /* ms */
	bool body_sent;             /* every byte of the message went out */
	int replies;                /* replies read in this transaction */
	char error[256];            /* why it stopped, when no reply says */
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fail(struct io *io, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct io *io, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(io->error, sizeof io->error, fmt, ap);
	va_end(ap);
	return -1;
}

/* What the relay offers, from its EHLO reply lines ("250-SIZE 1000"). */
static void ehlo_line(struct smtp *s, const char *p, size_t n)
{
	if (n < 4 || memcmp(p, "250", 3) != 0)
		return;
	const char *kw = p + 4;
	size_t k = 0;
	while (4 + k < n && isalnum((unsigned char)kw[k]))
		k++;
	if (k == 10 && strncasecmp(kw, "PIPELINING", k) == 0)
		s->pipelining = true;
	else if (k == 4 && strncasecmp(kw, "SIZE", k) == 0)
		s->size = true;
	else if (k == 8 && strncasecmp(kw, "SMTPUTF8", k) == 0)
		s->smtputf8 = true;
	if (p[3] == ' ')
		s->in_ehlo = false;
}

/* Every reply line of the session set-up (libcurl's header callback). */
static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct smtp *s = arg;
	size_t len = size * n;
	if (s->in_ehlo)
		ehlo_line(s, p, len);
	transport_keep_reply(s->last, sizeof s->last, p, len);
	return len;
}

/* The commands of the set-up: an EHLO's reply says what the relay offers
 * (asked again after STARTTLS, which forgets what was said before). */
static int on_debug(CURL *h, curl_infotype type, char *p, size_t n, void *arg)
{
	(void)h;
	struct smtp *s = arg;
	if (type == CURLINFO_HEADER_OUT && n >= 4 && strncasecmp(p, "EHLO", 4) == 0) {
		s->in_ehlo = true;
		s->pipelining = s->size = s->smtputf8 = false;
	}
	return 0;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt, (void)dn, (void)ut, (void)un;
	struct smtp *s = arg;
	return s->base.abort && atomic_load(s->base.abort); /* nothing is sent yet: cut */
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

/* Ends the session (libcurl says QUIT when it can). */
static void drop(struct smtp *s)
{
	if (s->h)
		curl_easy_cleanup(s->h);
	s->h = NULL;
	s->inlen = 0;
}

/* Waits until the socket is ready for ev, the abort flag, the transfer
 * timeout or the stall limit. Once the whole message is out the relay may
 * already have it: an abort then waits a while for the reply, as cutting
 * would send the message again later. */
static int wait_fd(struct smtp *s, short ev, struct io *io)
{
	for (;;) {
		int64_t now = mono_ms();
		if (s->base.abort && atomic_load(s->base.abort)) {
			if (!io->body_sent)
				return fail(io, "stopped");
			if (s->abort_seen == 0)
				s->abort_seen = now;
			if (now - s->abort_seen > TRANSPORT_ABORT_GRACE * 1000)
				return fail(io, "stopped: no reply within %d s",
				            TRANSPORT_ABORT_GRACE);
		}
		if (now >= io->deadline)
			return fail(io, "timeout: no reply within %d s", TRANSPORT_TIMEOUT);
		if (now - io->progress >= TRANSPORT_STALL * 1000)
			return fail(io, "timeout: no progress for %d s", TRANSPORT_STALL);
		struct pollfd p = {.fd = s->fd, .events = ev};
		int r = poll(&p, 1, POLL_SLICE_MS);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return fail(io, "poll: %s", strerror(errno));
	}
}

static int put(struct smtp *s, const char *p, size_t n, struct io *io)
{
	while (n > 0) {
		size_t sent = 0;
		CURLcode rc = curl_easy_send(s->h, p, n, &sent);
		if (rc == CURLE_AGAIN) {
			if (wait_fd(s, POLLOUT, io) < 0)
				return -1;
			continue;
		}
		if (rc != CURLE_OK)
			return fail(io, "%s", curl_easy_strerror(rc));
		p += sent;
		n -= sent;
		io->progress = mono_ms();
	}
	return 0;
}

/* Reads one whole reply (its lines "250-…" up to "250 …"); its code, 0
 * when the closing line has none. keep: its closing line becomes the
 * transaction's last reply. */
static int get_reply(struct smtp *s, struct io *io, bool keep, int *code)
{
	for (;;) {
		char *nl = memchr(s->in, '\n', s->inlen);
		if (nl) {
			size_t n = (size_t)(nl - s->in) + 1;
			const char *l = s->in;
			bool digits = n >= 4 && isdigit((unsigned char)l[0]) &&
			              isdigit((unsigned char)l[1]) && isdigit((unsigned char)l[2]);
			bool final = !digits || l[3] != '-';
			if (final && keep)
				transport_keep_reply(s->last, sizeof s->last, l, n);
			int c = digits ? (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0') : 0;
			memmove(s->in, s->in + n, s->inlen - n);
			s->inlen -= n;
			if (final) {
				io->replies++;
				*code = c;
				return 0;
			}
			continue;
		}
		if (s->inlen == sizeof s->in)
			return fail(io,
			            "a reply line longer than %zu bytes (RFC 5321 §4.5.3.1.5: 512)",
			            sizeof s->in);
		/* Once a receive has found nothing, what comes next can only be
		 * in the socket: wait for it there first. Before that, TLS may
		 * hold back a record already read (a pipelined reply). */
		if (s->drained && wait_fd(s, POLLIN, io) < 0)
			return -1;
		size_t got = 0;
		CURLcode rc = curl_easy_recv(s->h, s->in + s->inlen, sizeof s->in - s->inlen, &got);
		s->drained = rc == CURLE_AGAIN;
		if (rc == CURLE_AGAIN)
			continue;
		if (rc != CURLE_OK)
			return fail(io, "%s", curl_easy_strerror(rc));
		if (got == 0)
			return fail(io, "the relay closed the connection");
		s->inlen += got;
		io->progress = mono_ms();
	}
}

/* The session can carry another transaction: nothing came from the relay
 * since (a 421 for idling, or the end of the connection). With TLS the
 * socket also wakes for the relay's session tickets: only application
 * data or the end counts. Within a second of the last reply that is not
 * asked: a relay that ends a session so soon ends it at a reply, and one
 * that went without a word is tried again (smtp_send). */
static bool alive(struct smtp *s)
{
	if (mono_ms() - s->idle_since < 1000)
		return true;
	struct pollfd p = {.fd = s->fd, .events = POLLIN};
	if (poll(&p, 1, 0) == 0)
		return true;
	char c;
	size_t got = 0;
	CURLcode rc = curl_easy_recv(s->h, &c, 1, &got);
	s->drained = rc == CURLE_AGAIN;
	return rc == CURLE_AGAIN;
}

/* A session with the relay, opened by libcurl when there is none. */
static int session(struct smtp *s, struct smtp_txn *txn, struct io *io)
{
	if (s->h && alive(s)) {
		s->reused = true;
		return 0;
	}
	drop(s);
	s->reused = false;
	s->drained = false;
	s->h = curl_easy_duphandle(s->tmpl);
	if (s->h == NULL) {
		txn->end = SMTP_END_FAILED;
		return fail(io, "curl_easy_duphandle failed");
	}
	s->errbuf[0] = '\0';
	CURLcode rc = curl_easy_perform(s->h);
	s->in_ehlo = false;
	if (rc == CURLE_OK && curl_easy_getinfo(s->h, CURLINFO_ACTIVESOCKET, &s->fd) == CURLE_OK &&
	    s->fd != CURL_SOCKET_BAD)
		return 0;
	txn->end = relay_curl_error(rc) ? SMTP_END_RELAY : SMTP_END_FAILED;
	fail(io, "%s%s%s", curl_easy_strerror(rc), s->errbuf[0] ? ": " : "", s->errbuf);
	drop(s);
	return -1;
}

/* Sends the message, a dot added in front of every line that begins with
 * one, and the final dot. */
static int put_body(struct smtp *s, const char *data, size_t len, struct io *io)
{
	const char *p = data, *end = data + len;
	if (p < end && *p == '.' && put(s, ".", 1, io) < 0)
		return -1;
	/* each dot, with memchr: a line that begins with one is rare, and
	 * glibc's memmem() for "\r\n." costs more than the rest of sending */
	for (const char *q = data; (q = memchr(q, '.', (size_t)(end - q))) != NULL; q++) {
		if (q - data >= 2 && q[-1] == '\n' && q[-2] == '\r') {
			/* up to and with the dot; the next run starts with it again */
			if (put(s, p, (size_t)(q + 1 - p), io) < 0)
				return -1;
			p = q;
		}
	}
	if (put(s, p, (size_t)(end - p), io) < 0)
		return -1;
	bool crlf = len >= 2 && data[len - 2] == '\r' && data[len - 1] == '\n';
	const char *dot = crlf ? ".\r\n" : "\r\n.\r\n";
	if (put(s, dot, strlen(dot), io) < 0)
		return -1;
	io->body_sent = true;
	return 0;
}

/*
 * One transaction on the session. MAIL, RCPT and DATA go in one write when
 * the relay pipelines (RFC 2920 §3.1: DATA last of the group), and their
 * replies are read in order; the first that refuses ends the transaction
 * (a 354 to DATA after a refusal is answered with an empty message).
 * Returns 0 when the session is still in step with the relay.
 */
static int transaction(struct smtp *s, const char *from, const char *rcpt, bool utf8,
                       const char *data, size_t len, struct smtp_txn *txn, struct io *io)
{
	char mail[ADDR_MAX + 64], to[ADDR_MAX + 16];
	int m = snprintf(mail, sizeof mail, "MAIL FROM:<%s>", from);
	if (s->size)
		m += snprintf(mail + m, sizeof mail - (size_t)m, " SIZE=%zu", len);
	if (utf8)
		m += snprintf(mail + m, sizeof mail - (size_t)m, " SMTPUTF8");
	snprintf(mail + m, sizeof mail - (size_t)m, "\r\n");
	snprintf(to, sizeof to, "RCPT TO:<%s>\r\n", rcpt);
	const char *cmd[] = {mail, to, "DATA\r\n"};
	const enum smtp_stage stage[] = {SMTP_STAGE_MAIL, SMTP_STAGE_RCPT, SMTP_STAGE_DATA};
	const int want[] = {2, 2, 3};
	int refused = -1, code = 0;
	if (s->pipelining) {
		char group[sizeof mail + sizeof to + 8];
		snprintf(group, sizeof group, "%s%s%s", cmd[0], cmd[1], cmd[2]);
		txn->stage = SMTP_STAGE_MAIL;
		if (put(s, group, strlen(group), io) < 0)
			return -1;
		for (int i = 0; i < 3; i++) {
			if (refused < 0)
				txn->stage = stage[i];
			if (get_reply(s, io, refused < 0, &code) < 0)
				return -1;
			if (refused < 0 && code / 100 != want[i])
				refused = i;
		}
		/* the relay took DATA though an earlier command was refused */
		if (refused >= 0 && refused < 2 && code == 354 &&
		    (put(s, ".\r\n", 3, io) < 0 || get_reply(s, io, false, &code) < 0))
			return -1;
	} else {
		for (int i = 0; i < 3 && refused < 0; i++) {
			txn->stage = stage[i];
			if (put(s, cmd[i], strlen(cmd[i]), io) < 0 ||
			    get_reply(s, io, true, &code) < 0)
				return -1;
			if (code / 100 != want[i])
				refused = i;
		}
	}
	if (refused < 0) {
		if (put_body(s, data, len, io) < 0)
			return -1;
		if (s->base.meanwhile)
			s->base.meanwhile(s->base.meanwhile_arg);
		if (get_reply(s, io, true, &code) < 0)
			return -1;
		txn->end = code / 100 == 2 ? SMTP_END_OK : SMTP_END_FAILED;
		if (txn->end == SMTP_END_OK)
			return 0;
	} else
		txn->end = SMTP_END_FAILED;
	/* refused: the next transaction starts afresh on the same session */
	int rset = 0;
	if (code == 421 || put(s, "RSET\r\n", 6, io) < 0 || get_reply(s, io, false, &rset) < 0 ||
	    rset / 100 != 2)
		return -1;
	return 0;
}

static int smtp_send(struct transport *t, const char *from, const char *rcpt, const char *uid,
                     const char *data, size_t len, struct send_result *res)
{
	(void)uid; /* a relay cannot be asked what it already has */
	struct smtp *s = (struct smtp *)t;
	char from_key[ADDR_MAX + 1], rcpt_key[ADDR_MAX + 1];
	if (transport_envelope(from, rcpt, from_key, rcpt_key, res) < 0)
		return -1;
	/* the key forms have no CR, LF or angle bracket; a sender taken as
	 * it is must not have them either: they would end the command */
	if (strpbrk(from_key, "\r\n<>") || strpbrk(rcpt_key, "\r\n<>")) {
		res->outcome = SEND_PERM;
		snprintf(res->reply, sizeof res->reply, "not sent: an address with CR, LF, < or >");
		return -1;
	}
	bool need_utf8 = !addr_is_ascii(from_key, strlen(from_key)) ||
	                 !addr_is_ascii(rcpt_key, strlen(rcpt_key));
	s->abort_seen = 0;
	struct io io;
	struct smtp_txn txn;
	for (int try = 0;; try++) {
		int64_t now = mono_ms();
		io = (struct io){.deadline = now + TRANSPORT_TIMEOUT * 1000, .progress = now};
		txn = (struct smtp_txn){.stage = SMTP_STAGE_SESSION, .end = SMTP_END_FAILED};
		s->last[0] = '\0';
		if (session(s, &txn, &io) < 0)
			break;
		if (need_utf8 && !s->smtputf8) {
			txn.stage = SMTP_STAGE_MAIL;
			txn.no_utf8 = true;
			break;
		}
		if (transaction(s, from_key, rcpt_key, need_utf8, data, len, &txn, &io) == 0)
			break;
		/* out of step with the relay, or no session any more */
		drop(s);
		/* A reused session the relay had ended without saying so:
		 * nothing of this message reached it; once more on a new one. */
		if (try > 0 || !s->reused || io.replies > 0)
			break;
	}
	s->idle_since = mono_ms();
	txn.body_sent = io.body_sent;
	txn.last = s->last;
	txn.error = io.error;
	transport_classify(&txn, res);
	return res->outcome == SEND_OK ? 0 : -1;
}

static void smtp_free(struct transport *t)
{
	struct smtp *s = (struct smtp *)t;
	drop(s);
	if (s->tmpl)
		curl_easy_cleanup(s->tmpl);
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
	s->tmpl = curl_easy_init();
	if (s->tmpl == NULL) {
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
	curl_easy_setopt(s->tmpl, CURLOPT_URL, url);
	free(url);
	curl_easy_setopt(s->tmpl, CURLOPT_NOSIGNAL, 1L);
	/* greeting, EHLO, STARTTLS, AUTH: the transactions are ours */
	curl_easy_setopt(s->tmpl, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(s->tmpl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(s->tmpl, CURLOPT_HEADERDATA, s);
	curl_easy_setopt(s->tmpl, CURLOPT_ERRORBUFFER, s->errbuf);
	curl_easy_setopt(s->tmpl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(s->tmpl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(s->tmpl, CURLOPT_XFERINFODATA, s);
	curl_easy_setopt(s->tmpl, CURLOPT_DEBUGFUNCTION, on_debug);
	curl_easy_setopt(s->tmpl, CURLOPT_DEBUGDATA, s);
	curl_easy_setopt(s->tmpl, CURLOPT_VERBOSE, 1L); /* feeds on_debug only */
	curl_easy_setopt(s->tmpl, CURLOPT_CONNECTTIMEOUT, (long)TRANSPORT_CONNECT_TIMEOUT);
	curl_easy_setopt(s->tmpl, CURLOPT_TIMEOUT, (long)TRANSPORT_TIMEOUT);
	curl_easy_setopt(s->tmpl, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(s->tmpl, CURLOPT_LOW_SPEED_TIME, (long)TRANSPORT_STALL);
	switch (r->tls) {
	case TLS_REQUIRED:
		curl_easy_setopt(s->tmpl, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
		break;
	case TLS_AUTO:
		/* STARTTLS whenever the relay offers it; "required" never falls back.
		 * With a password to send, "auto" is "required": AUTH never goes out
		 * in clear because a man in the middle hid STARTTLS. */
		curl_easy_setopt(s->tmpl, CURLOPT_USE_SSL,
		                 r->username && *r->username ? (long)CURLUSESSL_ALL
		                                             : (long)CURLUSESSL_TRY);
		break;
	case TLS_OFF:
		curl_easy_setopt(s->tmpl, CURLOPT_USE_SSL, (long)CURLUSESSL_NONE);
		break;
	}
	if (r->ca_file && *r->ca_file)
		curl_easy_setopt(s->tmpl, CURLOPT_CAINFO, r->ca_file);
	if (r->username && *r->username) {
		curl_easy_setopt(s->tmpl, CURLOPT_USERNAME, r->username);
		if (password) {
			s->password = xstrdup(password);
			curl_easy_setopt(s->tmpl, CURLOPT_PASSWORD, s->password);
		}
	}
	return &s->base;
}
