/*
 * What a message that came back to us says: a delivery status notification
 * (RFC 3464), an abuse report (ARF, RFC 5965), an unsubscribe request sent to
 * the List-Unsubscribe mailto address, one of the many non-standard bounces
 * MTAs still write (Exim, qmail, old Sendmail, Gmail …), or none of these (an
 * auto-reply, a person's reply, anything else). Parsing only: lib/inbound.c
 * maps the tokens and the Message-ID to a delivery and records the result.
 * Bounces are hostile input; everything here is bounded (size, MIME depth,
 * parts, recipients, string lengths) and every string handed out is valid
 * UTF-8 without control characters.
 */
#ifndef MATRIX_BOUNCE_H
#define MATRIX_BOUNCE_H

#include <stddef.h>

#include "err.h"

struct json_object;

#define BOUNCE_MAX_BYTES (1024 * 1024) /* a larger message is refused */
#define BOUNCE_MAX_RCPTS 64            /* recipients kept per message */

enum bounce_kind {
	BOUNCE_NOT = 0,     /* "not-a-bounce": auto-reply, success DSN, anything else */
	BOUNCE_HARD,        /* "hard": the delivery failed for good: Action: failed
	                     * whatever the status class (an MTA that gave up on a
	                     * 4.x.x), a 5.x.x, or a permanent failure without a code */
	BOUNCE_SOFT,        /* "soft": only delayed: Action: delayed, a 4.x.x with no
	                     * Action: failed, "will retry", and a "mailbox full"
	                     * without any code */
	BOUNCE_COMPLAINT,   /* "complaint": an ARF feedback report */
	BOUNCE_UNSUBSCRIBE, /* "unsubscribe": mail to the unsubscribe+TOKEN address */
};

struct bounce_rcpt {
	char *address;    /* as reported (Final-Recipient, or found in the text) */
	char *status;     /* RFC 3463 "5.1.1"; "5.0.0"/"4.0.0" when only an SMTP
	                   * reply code was found; "" when unknown */
	char *action;     /* "failed", "delayed" …; "" when unknown (complaints) */
	char *diagnostic; /* the remote server's words, one line; may be "" */
};

struct bounce {
	enum bounce_kind kind;
	/* nrcpts entries, failed/delayed ones only (a complaint: the
	 * complainer). Written by the remote side: find the delivery through
	 * verp_token or message_id, not through these addresses. */
	struct bounce_rcpt *rcpts;
	size_t nrcpts;
	/* The token in a `<verp_prefix>TOKEN@domain` recipient of the message
	 * (To, Delivered-To, X-Original-To, Envelope-To, Original-Recipient,
	 * X-Envelope-To, Cc), or
	 * failing that in the Return-Path of the returned original; NULL when
	 * none. Not verified: pass it to token_check(). */
	char *verp_token;
	/* The same for `<unsubscribe_prefix>TOKEN@domain` (recipient headers
	 * only); set whatever the kind, kind is BOUNCE_UNSUBSCRIBE only for a
	 * request (not a report, not an auto-reply). */
	char *unsubscribe_token;
	/* The Message-ID of the returned original message, without the angle
	 * brackets ("matrix.1234-abc@example.org"); NULL when not found. Only
	 * from the returned message: a message/rfc822 or text/rfc822-headers
	 * part, or, in a text bounce, the copy after its separator line
	 * ("------ This is a copy of the message …"). Never from the headers
	 * of the message itself: any reply carries our Message-ID there. */
	char *message_id;
	/* For a bounce or a complaint: the first Message-ID of its own
	 * In-Reply-To (else References). Some MTAs point at the original only
	 * this way, but so does every reply from anyone: a hint for the
	 * admin, never proof that the report is about that message. */
	char *in_reply_to;
	/* How the verdict was reached, for logs: "delivery-status",
	 * "feedback-report", "unsubscribe request", "auto-reply", "text: …".
	 * Static string, not owned. */
	const char *how;
};

struct bounce_opts {
	/* The part of smtp.return_path before "{token}", e.g. "bounces+";
	 * NULL or "" finds no VERP token. Compared case-insensitively. */
	const char *verp_prefix;
	/* The local-part prefix of the List-Unsubscribe mailto address, e.g.
	 * "unsubscribe+"; NULL or "" finds no unsubscribe request. */
	const char *unsubscribe_prefix;
};

/*
 * Parses msg (len bytes, LF or CRLF line ends; need not be NUL-terminated;
 * only read, never kept). On success *out is an allocated result the caller
 * frees with bounce_free() and 0 is returned; a message that is no bounce is
 * a success with kind BOUNCE_NOT. Fails (-1, ERR_INPUT) only for a message
 * over BOUNCE_MAX_BYTES.
 */
int bounce_parse(const char *msg, size_t len, const struct bounce_opts *o, struct bounce **out,
                 struct err *err);

void bounce_free(struct bounce *b);

/* "hard", "soft", "complaint", "unsubscribe", "not-a-bounce". */
const char *bounce_kind_name(enum bounce_kind k);

/*
 * {"kind": …, "recipients": [{"address", "status", "action", "diagnostic"}],
 *  "delivery": delivery} — the shape of `matrixctl --json bounce --dry-run`
 * (matrixctl(8)). Takes over the caller's reference to delivery; NULL gives
 * "delivery": null. Returns a new object (json_object_put()).
 */
struct json_object *bounce_to_json(const struct bounce *b, struct json_object *delivery);

/*
 * Finds `<prefix>TOKEN@` in s (n bytes; an address list, a header value, or
 * an envelope recipient from argv) at the start of a local part; returns the
 * token allocated, or NULL. TOKEN is 1 to 95 characters of [A-Za-z0-9._=-].
 */
char *bounce_token_in(const char *s, size_t n, const char *prefix);

#endif
