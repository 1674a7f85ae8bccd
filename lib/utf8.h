/*
 * UTF-8 at the boundaries: strict validation, decoding, display width for
 * terminal tables, cleaning of strings bound for XML or mail headers, and the
 * RFC 2047 encoder libetpan lacks (docs/libraries.md, libetpan).
 */
#ifndef MATRIX_UTF8_H
#define MATRIX_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/*
 * Strict UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above
 * U+10FFFF). On failure *bad (if not NULL) is the offset of the first bad byte.
 */
bool utf8_valid(const char *s, size_t n, size_t *bad);

/* The first and the last code point of n bytes at s; 0 when empty or
 * invalid there. */
uint32_t utf8_first(const char *s, size_t n);
uint32_t utf8_last(const char *s, size_t n);

/* Decodes one code point at *p (p < end) and advances *p; an invalid sequence
 * yields -1 and advances one byte. */
int32_t utf8_next(const char **p, const char *end);

/* Writes cp as UTF-8 into out (4 bytes room); returns the length. */
size_t utf8_put(char *out, uint32_t cp);

/* Terminal columns of cp (libunistring uc_width): 0 for combining marks and
 * controls, 2 for East Asian wide and full width. */
int utf8_cp_width(uint32_t cp);
/* Columns of a (valid) UTF-8 string. */
size_t utf8_width(const char *s);
/* Number of code points of a string, or of n bytes at s. */
size_t utf8_len(const char *s);
size_t utf8_count(const char *s, size_t n);

/* The full-width form (U+FF0C …) of ASCII punctuation , : ? ! ; ( ) as
 * UTF-8, NULL for any other character: what Chinese text sets where an
 * export or a contents page has the ASCII one. */
const char *utf8_fullwidth_punct(char c);

/* Han ideographs and the CJK symbol/punctuation and full-width blocks. */
bool utf8_is_cjk(uint32_t cp);
bool utf8_is_han(uint32_t cp);

/* Byte length of the longest prefix of s holding at most max code points. */
size_t utf8_prefix(const char *s, size_t max);

enum {
	UTF8_KEEP_NL = 0x1, /* keep LF and TAB (bodies); otherwise they become spaces */
	UTF8_XML = 0x2,     /* also drop U+FFFE, U+FFFF (XML 1.0 Char) */
	/* also drop the bidirectional controls (Unicode's Bidi_Control: U+202E
	 * and the like), for a name shown to people: one would reorder the
	 * text around it ("\u202egro.live@eve" reads "eve@live.org") */
	UTF8_NO_BIDI = 0x4,
};
/*
 * Appends s to out with every control character removed (C0 but see
 * UTF8_KEEP_NL, DEL, C1; a CR becomes a space) and every invalid byte
 * replaced by U+FFFD. The result is valid UTF-8 fit for XML text and, without
 * UTF8_KEEP_NL, for one header line. Returns -1 only when out is full.
 */
int utf8_clean(struct buf *out, const char *s, size_t n, int flags);
/* Allocated cleaned copy of a NUL-terminated string (see utf8_clean). */
char *utf8_clean_dup(const char *s, int flags);
/* Same for n bytes of s. */
char *utf8_clean_dup_n(const char *s, size_t n, int flags);

/*
 * RFC 2047 for an unstructured header text (Subject) or a display name:
 * printable ASCII is appended as is; anything else becomes "=?UTF-8?B?…?="
 * words of at most 75 characters, split only between code points and
 * separated by single spaces so the header folder can break there. Control
 * characters are removed first. Returns -1 only when out is full.
 */
int utf8_rfc2047(struct buf *out, const char *s);

#endif
