/*
 * The parts of an HTTP request that matrixd judges itself, as pure
 * functions over bytes (no sockets, no libmicrohttpd), so that they can be
 * tested and fuzzed on their own (tests/fuzz/fuzz_http.c):
 *
 *   - the request head: method, target length, header size, and framing
 *     that two parsers could read two ways (RFC 9112 §6.1, §6.3, §3.2:
 *     a request smuggled past a proxy must be refused, not guessed at);
 *   - the request path, percent-decoded with every way out refused;
 *   - the client behind a reverse proxy: X-Forwarded-For read from the
 *     right, believed only from trusted proxies (http.trusted_proxies);
 *   - application/x-www-form-urlencoded bodies (WHATWG URL §5.1).
 *
 * Addresses are 16 bytes, IPv4 mapped into IPv6 (::ffff:a.b.c.d), so one
 * comparison serves both families.
 */
#ifndef MATRIX_HTTPREQ_H
#define MATRIX_HTTPREQ_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

#define HTTPREQ_URL_MAX    1024  /* bytes of a request target; a token path is under 100 */
#define HTTPREQ_HEAD_MAX   16384 /* bytes of header names and values together */
#define HTTPREQ_BODY_MAX   4096  /* bytes of a request body; a one-click body is 26 */
#define HTTPREQ_FIELDS_MAX 64    /* fields in a form body */

struct httpreq_header {
	const char *name, *value; /* not NUL-terminated necessarily: use the lengths */
	size_t name_len, value_len;
};

struct httpreq_head {
	const char *method, *target, *version; /* NUL-terminated */
	const struct httpreq_header *headers;  /* in the order received */
	size_t nheaders;
};

/*
 * Judges a request head before anything is read of its body. Returns 0
 * when it is acceptable, otherwise the status to answer, with *why (if not
 * NULL) a static phrase for the log:
 *   405  a method other than GET, HEAD, POST;
 *   505  a version other than HTTP/1.0 and HTTP/1.1;
 *   414  a target over HTTPREQ_URL_MAX;
 *   431  header names and values over HTTPREQ_HEAD_MAX;
 *   400  a space, control or non-ASCII byte in the target (which must
 *        come percent-encoded); a header name that is not a token (whitespace before the colon
 *        among others), a NUL, CR or LF in a value; no Host in HTTP/1.1,
 *        more than one Host, or one that is not host[:port]; more than one
 *        Content-Length or one that is not digits; Content-Length together
 *        with Transfer-Encoding; Transfer-Encoding in HTTP/1.0;
 *   501  a Transfer-Encoding other than chunked;
 *   413  a Content-Length over HTTPREQ_BODY_MAX.
 */
unsigned httpreq_judge(const struct httpreq_head *h, const char **why);

/*
 * Percent-decodes the request path raw (the target up to any '?') into out,
 * which has room for strlen(raw) + 1 bytes; *n is the decoded length.
 * Refuses (-1) a path not starting with '/', a bad escape, a NUL, a
 * backslash or another control character, and any "." or ".." segment,
 * decoded or not: nothing can climb out of a directory, and nothing is
 * normalised into something else.
 */
int httpreq_path_decode(const char *raw, char *out, size_t *n);

/* A trusted network: the first bits of addr. */
struct httpreq_net {
	unsigned char addr[16];
	unsigned bits;
};

/*
 * Parses a list of addresses and networks separated by commas or spaces
 * ("127.0.0.1, ::1, 10.0.0.0/8, fd00::/8"); "" is the empty list. Returns
 * an allocated array in *out (free()) of *n entries, or -1 with err naming
 * the entry that is wrong.
 */
int httpreq_nets_parse(const char *s, struct httpreq_net **out, size_t *n, struct err *err);
bool httpreq_nets_match(const struct httpreq_net *nets, size_t n, const unsigned char addr[16]);

/* An IPv4 or IPv6 address in text (IPv6 also in brackets) → 16 bytes. */
bool httpreq_addr_parse(const char *s, size_t len, unsigned char out[16]);

/*
 * The client of a request: the peer, unless the peer is a trusted proxy;
 * then the X-Forwarded-For values (xff[0..nxff), as received, each possibly
 * a comma-separated list) are read from the right, skipping trusted
 * proxies, and the first address that is not one is the client (every
 * proxy appends the address it saw, so only the part a trusted proxy wrote
 * is believed). A hop that is not an address stops the walk at the last
 * one believed. Returns true when the client is not the peer.
 */
bool httpreq_client(const unsigned char peer[16], const char *const *xff, const size_t *xff_len,
                    size_t nxff, const struct httpreq_net *nets, size_t nnets,
                    unsigned char out[16]);

/* One name=value of a form, both decoded, NUL-terminated, valid UTF-8
 * without NUL (the value may hold other control characters: the caller's
 * rules decide). */
struct httpreq_field {
	char *name, *value;
};
struct httpreq_form {
	struct httpreq_field *fields;
	size_t n;
};

/*
 * Parses an application/x-www-form-urlencoded body: '&'-separated
 * name=value pairs, '+' for a space, %XX escapes. Refuses (-1, ERR_INPUT)
 * a bad escape, a name or value that is not valid UTF-8 or holds a NUL,
 * and more than HTTPREQ_FIELDS_MAX fields; *f is then empty. Free with
 * httpreq_form_free.
 */
int httpreq_form_parse(const char *body, size_t len, struct httpreq_form *f, struct err *err);
void httpreq_form_free(struct httpreq_form *f);
/* The first value of name, or NULL; how many times name occurs. */
const char *httpreq_form_get(const struct httpreq_form *f, const char *name);
size_t httpreq_form_count(const struct httpreq_form *f, const char *name);

#endif
