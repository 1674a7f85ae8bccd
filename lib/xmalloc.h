/*
 * Allocation wrappers that abort on out-of-memory, as OpenSMTPD, Redis and
 * git do: a daemon that cannot allocate a few bytes cannot do anything
 * useful, and checking every allocation hides the real error paths. This is
 * the only place in lib/ that aborts.
 */
#ifndef MATRIX_XMALLOC_H
#define MATRIX_XMALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
/* reallocarray with overflow check; aborts on overflow or out-of-memory. */
void *xreallocarray(void *p, size_t nmemb, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Returns an allocated string built from fmt; caller frees. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
