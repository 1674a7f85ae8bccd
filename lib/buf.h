/*
 * A growable byte buffer with a hard size cap, after curl's dynbuf and git's
 * strbuf. The contents are always NUL-terminated (the NUL is not counted in
 * len), so b->data can be handed to C string functions once non-NULL; use
 * buf_str() to get "" for a buffer that never grew.
 *
 * Appending beyond the cap fails with -1 and leaves the buffer unchanged:
 * every producer of unbounded input (an issue file, a bounce, an SMTP reply)
 * states how much it accepts. Memory exhaustion aborts (xmalloc.h).
 */
#ifndef MATRIX_BUF_H
#define MATRIX_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct buf {
	char *data; /* NULL until the first append */
	size_t len; /* bytes used, excluding the NUL */
	size_t cap; /* bytes allocated */
	size_t max; /* hard cap on len */
};

#define BUF_NOLIMIT ((size_t)-1 / 2)

/* Sets up an empty buffer that will refuse to grow beyond max bytes. */
void buf_init(struct buf *b, size_t max);
/* Frees the contents; the buffer is empty and reusable (same cap). */
void buf_free(struct buf *b);
/* Empties the buffer, keeping its memory. */
void buf_reset(struct buf *b);
/* Returns the contents, "" for an empty buffer. Valid until the next append. */
const char *buf_str(const struct buf *b);
/* Hands the allocated, NUL-terminated contents to the caller (free()),
 * leaving b empty. Never returns NULL. */
char *buf_detach(struct buf *b);

/* Append; each returns 0, or -1 when the cap would be exceeded. */
int buf_add(struct buf *b, const void *p, size_t n);
int buf_adds(struct buf *b, const char *s);
int buf_addc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Ensures room for n more bytes without changing len; -1 over the cap. */
int buf_grow(struct buf *b, size_t n);
/* Shortens the contents to n bytes (n <= len). */
void buf_truncate(struct buf *b, size_t n);

#endif
