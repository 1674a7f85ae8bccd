/*
 * Mail messages, built with libetpan (docs/libraries.md): one multipart/
 * alternative message (text/plain then text/html, both UTF-8) per
 * subscriber: From, To, Subject, Date, Message-ID, List-Id,
 * List-Unsubscribe (+ -Post, RFC 8058), List-Archive, Content-Language.
 *
 * What every recipient of one article shares is prepared once
 * (msg_prepare): the rendered bodies, whose per-subscriber places are
 * marked by placeholders, are split at the first placeholder and the part
 * before it is transfer-encoded once, and the MIME structure around them
 * is written once. msg_build() then only encodes the short tail (the
 * footer with the unsubscribe and preference links), writes the header
 * fields and numbers the boundaries: a few microseconds per message
 * instead of re-encoding 20 KB.
 *
 * Bodies: text/plain is quoted-printable when mostly ASCII, else base64
 * (QP triples CJK text); text/html is base64. CRLF everywhere, no line
 * over 998 octets, no 8-bit byte in a header (RFC 2047 B-words).
 */
#ifndef MATRIX_MSG_H
#define MATRIX_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "err.h"

/* Placeholders the templates receive for per-subscriber values. The issue
 * parser removes control characters from content, so they cannot occur in
 * an article. (Split literals: "\x01E" would be the single byte 0x1e.) */
#define MSG_PH_UNSUBSCRIBE                                                                         \
	"\x01"                                                                                     \
	"U"                                                                                        \
	"\x01"
#define MSG_PH_EMAIL                                                                               \
	"\x01"                                                                                     \
	"E"                                                                                        \
	"\x01"
#define MSG_PH_NAME                                                                                \
	"\x01"                                                                                     \
	"N"                                                                                        \
	"\x01"
/* What stands between MSG_PH_IF_NAME and MSG_PH_END_NAME is kept only for a
 * recipient with a name ("{{name}}，" before a greeting). */
#define MSG_PH_IF_NAME                                                                             \
	"\x01"                                                                                     \
	"["                                                                                        \
	"\x01"
#define MSG_PH_END_NAME                                                                            \
	"\x01"                                                                                     \
	"]"                                                                                        \
	"\x01"
#define MSG_PH_CONFIRM                                                                             \
	"\x01"                                                                                     \
	"C"                                                                                        \
	"\x01"
#define MSG_PH_PREFS                                                                               \
	"\x01"                                                                                     \
	"P"                                                                                        \
	"\x01"

struct msg_body {
	int mechanism; /* MAILMIME_MECHANISM_BASE64 or _QUOTED_PRINTABLE */
	char *head;    /* transfer-encoded, complete lines */
	size_t head_len;
	char *tail; /* raw, with placeholders */
	size_t tail_len;
	bool is_html;
};

struct msg_prep {
	char *subject; /* RFC 2047-encoded */
	char *from;    /* encoded display name, may be "" */
	char *from_addr;
	char *list_id;      /* List-Id value, "" for none */
	char *list_archive; /* URL, "" for none */
	char *language;     /* Content-Language */
	char *msgid_domain;
	bool bulk; /* List-Unsubscribe headers (not on confirmation mail) */
	struct msg_body text, html;
	/* Everything after the header fields, written by libetpan once: the
	 * MIME headers, boundaries and part headers, a marker where each body
	 * goes. Each boundary's counter (16 hex digits at the offsets in
	 * bnd) is made new per message. */
	char *mime;
	size_t mime_len;
	size_t text_at, html_at; /* where the markers of the two bodies are */
	size_t bnd[4];
	size_t nbnd;
};

struct msg_head {
	const char *subject;      /* UTF-8 */
	const char *from;         /* "Name <addr>" (site.from) */
	const char *list_name;    /* "matrix" */
	const char *list_title;   /* "Matrix" */
	const char *list_archive; /* site.base_url */
	const char *language;     /* "zh-CN" */
	bool bulk;
};

/* Seeds libetpan's boundary generator (random()) once, from getrandom. */
void msg_init(void);

/* Prepares the shared part of a message. html and text are the rendered
 * bodies with placeholders. */
int msg_prepare(struct msg_prep *p, const struct msg_head *h, const char *html, const char *text,
                struct err *err);
void msg_prep_free(struct msg_prep *p);

struct msg_rcpt {
	const char *email;
	const char *name;         /* may be "" */
	const char *message_id;   /* without <>; @domain is added */
	const char *unsub_url;    /* https one-click URL (bulk mail) */
	const char *unsub_mailto; /* unsubscribe+TOKEN@domain (bulk mail) */
	const char *confirm_url;  /* confirmation mail */
	const char *prefs_url;    /* the reader's preference page (every mail's footer) */
	time_t date;
};

/* Appends one complete message (CRLF line ends) for r to out. */
int msg_build(const struct msg_prep *p, const struct msg_rcpt *r, struct buf *out, struct err *err);

#endif
