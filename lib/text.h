/*
 * Small text rules that several stages share and that must not drift apart:
 * HTML escaping (templates, Markdown, feeds, mail bodies) and hex digits
 * (tokens, percent-decoding).
 */
#ifndef MATRIX_TEXT_H
#define MATRIX_TEXT_H

#include <stddef.h>

#include "buf.h"

/*
 * Appends n bytes of s to out with & < > " ' as entities: safe as HTML text
 * and inside a quoted attribute value of either quote. Returns -1 only when
 * out is full.
 */
int html_escape(struct buf *out, const char *s, size_t n);

/* The value of a hex digit (either case), -1 for any other character. */
int hex_value(int c);

#endif
