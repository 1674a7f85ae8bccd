/*
 * UTF-8 helpers (see utf8.h). The RFC 2047 encoder is here because libetpan
 * 1.9.4 only decodes encoded words; base64 comes from GnuTLS.
 */
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>
#include <unictype.h>

#include <uniwidth.h>

#include "utf8.h"
#include "xmalloc.h"

int32_t utf8_next(const char **pp, const char *end)
{
	const unsigned char *p = (const unsigned char *)*pp;
	const unsigned char *e = (const unsigned char *)end;
	uint32_t c = p[0], min;
	int n;

	if (c < 0x80) {
		*pp += 1;
		return (int32_t)c;
	} else if (c >= 0xc2 && c <= 0xdf) {
		n = 1, c &= 0x1f, min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 2, c &= 0x0f, min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 3, c &= 0x07, min = 0x10000;
	} else {
		goto bad;
	}
	if (e - p <= n)
		goto bad;
	for (int i = 1; i <= n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			goto bad;
		c = (c << 6) | (p[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		goto bad;
	*pp += n + 1;
	return (int32_t)c;
bad:
	*pp += 1;
	return -1;
}

uint32_t utf8_first(const char *s, size_t n)
{
	if (n == 0)
		return 0;
	const char *p = s;
	int32_t c = utf8_next(&p, s + n);
	return c < 0 ? 0 : (uint32_t)c;
}

uint32_t utf8_last(const char *s, size_t n)
{
	if (n == 0)
		return 0;
	size_t i = n - 1;
	while (i > 0 && ((unsigned char)s[i] & 0xc0) == 0x80)
		i--;
	return utf8_first(s + i, n - i);
}

bool utf8_valid(const char *s, size_t n, size_t *bad)
{
	const char *p = s, *end = s + n;
	while (p < end) {
		if ((unsigned char)*p < 0x80) {
			p++;
			continue;
		}
		const char *at = p;
		if (utf8_next(&p, end) < 0) {
			if (bad)
				*bad = (size_t)(at - s);
			return false;
		}
	}
	return true;
}

size_t utf8_put(char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	} else if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	} else if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

bool utf8_is_han(uint32_t cp)
{
	return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) ||
	       (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x20000 && cp <= 0x3fffd);
}

bool utf8_is_cjk(uint32_t cp)
{
	return utf8_is_han(cp) || (cp >= 0x3000 && cp <= 0x30ff) ||
	       (cp >= 0xff00 && cp <= 0xffef) || (cp >= 0xac00 && cp <= 0xd7a3);
}

int utf8_cp_width(uint32_t cp)
{
	/* libunistring's tables follow Unicode's East Asian Width and its
	 * combining marks; "UTF-8" counts ambiguous characters as narrow, as
	 * terminals in a UTF-8 locale do. Control characters count 0. */
	int w = uc_width(cp, "UTF-8");
	return w < 0 ? 0 : w;
}

size_t utf8_width(const char *s)
{
	const char *end = s + strlen(s);
	size_t w = 0;
	while (s < end) {
		int32_t c = utf8_next(&s, end);
		w += c < 0 ? 1 : (size_t)utf8_cp_width((uint32_t)c);
	}
	return w;
}

size_t utf8_count(const char *s, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += ((unsigned char)s[i] & 0xc0) != 0x80;
	return c;
}

size_t utf8_len(const char *s)
{
	return utf8_count(s, strlen(s));
}

const char *utf8_fullwidth_punct(char c)
{
	switch (c) {
	case ',':
		return "\xef\xbc\x8c";
	case ':':
		return "\xef\xbc\x9a";
	case '?':
		return "\xef\xbc\x9f";
	case '!':
		return "\xef\xbc\x81";
	case ';':
		return "\xef\xbc\x9b";
	case '(':
		return "\xef\xbc\x88";
	case ')':
		return "\xef\xbc\x89";
	default:
		return NULL;
	}
}

size_t utf8_prefix(const char *s, size_t max)
{
	size_t i = 0, n = 0;
	while (s[i]) {
		if (((unsigned char)s[i] & 0xc0) != 0x80) {
			if (n == max)
				break;
			n++;
		}
		i++;
	}
	return i;
}

int utf8_clean(struct buf *out, const char *s, size_t n, int flags)
{
	const char *p = s, *end = s + n;
	while (p < end) {
		const char *at = p;
		int32_t c = utf8_next(&p, end);
		if (c < 0) {
			if (buf_adds(out, "\xef\xbf\xbd") < 0)
				return -1;
			continue;
		}
		if (c == '\n' || c == '\t') {
			if (buf_addc(out, (flags & UTF8_KEEP_NL) ? (char)c : ' ') < 0)
				return -1;
			continue;
		}
		if (c == '\r') {
			if (buf_addc(out, ' ') < 0)
				return -1;
			continue;
		}
		if (c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f))
			continue;
		if ((flags & UTF8_XML) && (c == 0xfffe || c == 0xffff))
			continue;
		if ((flags & UTF8_NO_BIDI) && uc_is_property_bidi_control((ucs4_t)c))
			continue;
		if (buf_add(out, at, (size_t)(p - at)) < 0)
			return -1;
	}
	return 0;
}

char *utf8_clean_dup_n(const char *s, size_t n, int flags)
{
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	utf8_clean(&b, s, n, flags);
	return buf_detach(&b);
}

char *utf8_clean_dup(const char *s, int flags)
{
	return utf8_clean_dup_n(s, strlen(s), flags);
}

static bool is_plain_ascii(const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c > 0x7e)
			return false;
	}
	/* "=?" would be read back as the start of an encoded word. */
	return true;
}

static int add_word(struct buf *out, const char *p, size_t n)
{
	gnutls_datum_t in = {(unsigned char *)p, (unsigned)n}, enc = {NULL, 0};
	if (gnutls_base64_encode2(&in, &enc) < 0)
		return -1;
	int r = buf_adds(out, "=?UTF-8?B?");
	if (r == 0)
		r = buf_add(out, enc.data, enc.size);
	if (r == 0)
		r = buf_adds(out, "?=");
	gnutls_free(enc.data);
	return r;
}

int utf8_rfc2047(struct buf *out, const char *s)
{
	char *clean = utf8_clean_dup(s, 0);
	int r = 0;
	if (is_plain_ascii(clean) && strstr(clean, "=?") == NULL) {
		r = buf_adds(out, clean);
		free(clean);
		return r;
	}
	/*
	 * "=?UTF-8?B?" + "?=" is 12 characters, leaving 63 for base64 in a
	 * 75-character word: 60 characters encode 45 bytes. Cut before the code
	 * point that would cross 45 bytes (RFC 2047 §5: words must hold whole
	 * characters).
	 */
	const char *p = clean, *end = clean + strlen(clean);
	bool first = true;
	while (p < end && r == 0) {
		const char *start = p;
		/* The first word is shorter (36 bytes, 60 characters) so that it
		 * fits after "Subject: " and the header folder does not start the
		 * value with a line break (some clients then show a leading space). */
		long max = first ? 36 : 45;
		while (p < end) {
			const char *q = p;
			utf8_next(&q, end);
			if (q - start > max)
				break;
			p = q;
		}
		if (!first)
			r = buf_addc(out, ' ');
		if (r == 0)
			r = add_word(out, start, (size_t)(p - start));
		first = false;
	}
	free(clean);
	return r;
}
