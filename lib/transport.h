/*
 * Transports: how one prepared message reaches one recipient. Backends
 * behind a small table of functions, as OpenSMTPD does for its queues:
 *
 *   transport_smtp.c     smtp:// and smtps:// with one libcurl easy handle,
 *                        i.e. one reused connection, per transport
 *   transport_maildir.c  maildir:/path, each message a file (tmp → new)
 *
 * A transport belongs to one thread (the daemon's sender threads each own
 * one). transport_send() blocks for at most the connect timeout plus the
 * transfer timeout, or until *abort becomes true.
 */
#ifndef MATRIX_TRANSPORT_H
#define MATRIX_TRANSPORT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "conf.h"
#include "err.h"

#define TRANSPORT_CONNECT_TIMEOUT 30 /* seconds */
/* RFC 5321 §4.5.3.2 gives the reply to the final dot 10 minutes: a relay
 * with a slow content filter must not be cut off (and sent the message
 * again). Stalls are caught sooner by the low-speed limit. */
#define TRANSPORT_TIMEOUT 600
#define TRANSPORT_STALL   300 /* seconds without progress */
/* After an abort request, a transfer whose message is fully sent may wait
 * this long for its reply before it is cut (a cut there can duplicate). */
#define TRANSPORT_ABORT_GRACE 20

enum send_outcome {
	SEND_OK,   /* 2xx: the relay took it */
	SEND_TEMP, /* 4xx, timeout, dropped connection, TLS or AUTH trouble: try later */
	SEND_PERM, /* 5xx for this recipient or message: fails for good */
};

struct send_result {
	enum send_outcome outcome;
	/* The relay's trouble, not this message's: no connection, TLS or AUTH
	 * refused, 421, a 5xx at the greeting or to MAIL FROM, relaying denied.
	 * The attempt does not count and sending pauses. */
	bool relay_level;
	/* Refused for good because of the recipient (5xx to RCPT TO): counts
	 * toward the subscriber's bounce score. A message refused after DATA
	 * fails without counting. */
	bool bounce;
	int code;          /* SMTP reply code, 0 when none */
	char status[16];   /* enhanced status "5.1.1", "" when none */
	char reply[512];   /* the last reply line, or curl's error */
	char queue_id[64]; /* from "250 … queued as X", "" when none */
};

struct transport;

struct transport_ops {
	int (*send)(struct transport *t, const char *from, const char *rcpt, const char *uid,
	            const char *data, size_t len, struct send_result *res);
	void (*free)(struct transport *t);
};

struct transport {
	const struct transport_ops *ops;
	atomic_bool *abort; /* set to stop an ongoing transfer (SIGTERM) */
	/* Called (when set) once the whole message is out and its reply is
	 * awaited (SMTP: after the end of data; again if the send is tried
	 * once more), so that the caller can prepare its next message
	 * meanwhile. */
	void (*meanwhile)(void *arg);
	void *meanwhile_arg;
};

/*
 * Makes the transport of c->smtp.url. password is the AUTH password (may be
 * NULL), copied. abort (may be NULL) is polled during transfers.
 */
struct transport *transport_new(const struct conf *c, const char *password, atomic_bool *abort,
                                struct err *err);
/* The same for relay r of c (c gives the EHLO name). */
struct transport *transport_new_relay(const struct conf *c, const struct conf_relay *r,
                                      const char *password, atomic_bool *abort, struct err *err);

/*
 * Sends data (a complete message, CRLF line ends) from the envelope sender
 * to one recipient; always fills res. Returns 0 when res says SEND_OK, -1
 * otherwise. uid (NULL: none) names the message the same each time it is
 * sent again, after a crash as well, and no other message ever (the daemon gives its
 * Message-ID's local part, a signed VERP token). A transport that can see what it delivered before
 * (the Maildir) delivers a uid once; SMTP cannot, and ignores it.
 */
int transport_send(struct transport *t, const char *from, const char *rcpt, const char *uid,
                   const char *data, size_t len, struct send_result *res);
void transport_free(struct transport *t);

/* Backends, for transport_new(). */
struct transport *transport_smtp_new(const struct conf *c, const struct conf_relay *r,
                                     const char *password, struct err *err);
struct transport *transport_maildir_new(const char *dir, struct err *err);

/* ---- SMTP replies and what they mean: pure functions ------------------------ */

/* The reply parts of an SMTP reply line: "250 2.0.0 Ok: queued as 4AB".
 * Fills reply (cleaned: valid UTF-8, no control characters), code (0 when
 * the line has none), status ("" when there is no RFC 3463 code) and
 * queue_id ("" when none) of res. */
void transport_parse_reply(const char *line, struct send_result *res);

/*
 * Keeps one reply line as it arrives (n bytes, its CRLF included, not
 * NUL-terminated) in last (cap bytes, NUL-terminated, cut to fit), so that
 * last holds the final line of the transaction's last reply: of a multiline
 * reply ("250-…" … "250 …") the closing line. The 221 to QUIT is no
 * answer about a message and is not kept. Returns whether it was kept.
 */
bool transport_keep_reply(char *last, size_t cap, const char *line, size_t n);

/*
 * The envelope as it goes on the wire (both transports): each address in its
 * key form (addr_check: NFC, the domain's A-label) into from_key and
 * rcpt_key (ADDR_MAX + 1 bytes each). A recipient that has no such form
 * fills res as a permanent failure and returns -1; a sender that has none
 * (checked with the configuration already) goes as it is.
 */
int transport_envelope(const char *from, const char *rcpt, char *from_key, char *rcpt_key,
                       struct send_result *res);

/* Where an SMTP transaction ended: after the last command the client sent. */
enum smtp_stage {
	SMTP_STAGE_SESSION, /* greeting, EHLO, STARTTLS, AUTH */
	SMTP_STAGE_MAIL,
	SMTP_STAGE_RCPT,
	SMTP_STAGE_DATA,
};

/* What the SMTP client said of the transaction. */
enum smtp_end {
	SMTP_END_OK,     /* finished: the last reply answers the final dot */
	SMTP_END_RELAY,  /* no usable session: resolve, connect, TLS, AUTH refused */
	SMTP_END_FAILED, /* any other failure: a refusal, a timeout, a dropped connection */
};

struct smtp_txn {
	enum smtp_stage stage;
	enum smtp_end end;
	bool body_sent;    /* at DATA, every byte of the message went out */
	bool no_utf8;      /* an address needs SMTPUTF8 and MAIL FROM went without it */
	const char *last;  /* the transaction's last reply line (transport_keep_reply) */
	const char *error; /* the client's words for a failure, shown when no reply says more */
};

/*
 * The outcome of one transaction, by docs/design.md's classification
 * table: the client's verdict first, then the last reply and the stage
 * it answered (a dropped connection can leave an earlier 250 or 354 as
 * the last reply: below 400 after a failure, it is no answer). Fills
 * every field of res.
 */
void transport_classify(const struct smtp_txn *t, struct send_result *res);

#endif
