/*
 * The issue parser (see issue.h and docs/issue-format.md).
 *
 * The input is checked and normalised first (BOM, CRLF, control
 * characters) without changing line numbers, so every error can name the
 * editor's line. Then the file is cut into lines and one of three splitters
 * finds the articles. The table-of-contents splitter is the delicate one:
 * the printed magazine's export changes titles between the contents page
 * and the article pages (punctuation width, spaces, quotes, case, a comma,
 * a line break), so titles are compared by a key that keeps only letters,
 * digits and ideographs.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmark-gfm.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "buf.h"
#include "fsutil.h"
#include "issue.h"
#include "listname.h"
#include "md.h"
#include "utf8.h"
#include "xmalloc.h"

struct line {
	const char *s; /* not NUL-terminated */
	size_t n;
	int no; /* 1-based line number in the file */
};

struct doc {
	const char *path;
	const char *base_url;
	const char *folder; /* a folder issue's folder; NULL for a single file */
	char *text;         /* normalised copy of the file */
	struct line *lines;
	size_t nlines;
	size_t body; /* index of the first line after the front matter */
	struct issue *is;
	struct err *err;
	/* what the front matter set */
	bool fm_title, fm_number, fm_period;
	int period_line; /* where the period was read, 0 when none */
	/* article boundaries found by a splitter */
	struct span {
		size_t title_first, title_last; /* line indexes of the title */
		size_t body_first, body_end;    /* body lines [first, end) */
		size_t intro_first, intro_end;  /* a section's introduction, put first */
		char *title, *section;
	} * spans;
	size_t nspans;
	size_t preface_first, preface_end;
	size_t colophon_first; /* == nlines when there is none */
};

/* ---- small string helpers ------------------------------------------------ */

static bool is_space_at(const char *s, size_t n, size_t *len)
{
	unsigned char c = (unsigned char)s[0];
	if (c == ' ' || c == '\t') {
		*len = 1;
		return true;
	}
	/* U+00A0 NBSP, U+3000 ideographic space: both appear in exports. */
	if (n >= 2 && c == 0xc2 && (unsigned char)s[1] == 0xa0) {
		*len = 2;
		return true;
	}
	if (n >= 3 && c == 0xe3 && (unsigned char)s[1] == 0x80 && (unsigned char)s[2] == 0x80) {
		*len = 3;
		return true;
	}
	return false;
}

static void trim(const char **s, size_t *n)
{
	size_t k;
	while (*n > 0 && is_space_at(*s, *n, &k)) {
		*s += k;
		*n -= k;
	}
	for (;;) {
		if (*n >= 1 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
			*n -= 1;
		else if (*n >= 2 && (unsigned char)(*s)[*n - 2] == 0xc2 &&
		         (unsigned char)(*s)[*n - 1] == 0xa0)
			*n -= 2;
		else if (*n >= 3 && memcmp(*s + *n - 3, "\xe3\x80\x80", 3) == 0)
			*n -= 3;
		else
			break;
	}
}

static bool blank(const struct line *l)
{
	const char *s = l->s;
	size_t n = l->n;
	trim(&s, &n);
	return n == 0;
}

/* Ends like a sentence or a label rather than a title. */
static bool ends_sentence(uint32_t c)
{
	static const uint32_t punct[] = {'.',    '!',    '?',    ';',    ':',    ',',    0x3002,
	                                 0xff01, 0xff1f, 0xff1b, 0xff1a, 0xff0c, 0x3001, 0x2026};
	for (size_t i = 0; i < sizeof punct / sizeof punct[0]; i++)
		if (c == punct[i])
			return true;
	return false;
}

static bool starts_with_ci(const char *s, size_t n, const char *pre)
{
	size_t k = strlen(pre);
	return n >= k && strncasecmp(s, pre, k) == 0;
}

/* ---- the title key ------------------------------------------------------- */

static uint32_t fold(uint32_t c)
{
	if (c >= 0xff01 && c <= 0xff5e) /* full-width ASCII */
		c -= 0xfee0;
	if (c >= 'A' && c <= 'Z')
		return c + 32;
	if (c >= 0xc0 && c <= 0xde && c != 0xd7) /* Latin-1 capitals */
		return c + 32;
	return c;
}

static bool key_char(uint32_t c)
{
	if (c < 0x80)
		return isalnum((int)c) != 0;
	if (c <= 0xbf || c == 0xd7 || c == 0xf7)
		return false; /* Latin-1 punctuation and symbols, × ÷ */
	if ((c >= 0x2000 && c <= 0x2bff) || (c >= 0x2e00 && c <= 0x2e7f) ||
	    (c >= 0x3000 && c <= 0x303f) || (c >= 0xfe10 && c <= 0xfe6f) ||
	    (c >= 0xff00 && c <= 0xffef) || c == 0x30fb)
		return false; /* punctuation, symbols, CJK punctuation, forms */
	return true;
}

void issue_title_key(const char *s, size_t n, struct buf *out)
{
	const char *p = s, *end = s + n;
	while (p < end) {
		int32_t c = utf8_next(&p, end);
		if (c < 0)
			continue;
		uint32_t f = fold((uint32_t)c);
		if (key_char(f)) {
			char u[4];
			buf_add(out, u, utf8_put(u, f));
		}
	}
}

/* ---- slugs --------------------------------------------------------------- */

/* à → a, ü → u, ß → s: Latin-1 letters by their base letter, for slugs. */
static uint32_t latin_base(uint32_t c)
{
	static const char map[] = "aaaaaaaceeeeiiiidnooooo\0ouuuuyts";
	if (c >= 0xe0 && c <= 0xfe && c != 0xf7)
		return (uint32_t)(unsigned char)map[c - 0xe0];
	if (c == 0xdf)
		return 's';
	return c;
}

char *issue_slug(const char *title)
{
	struct buf b, key;
	buf_init(&b, BUF_NOLIMIT);
	buf_init(&key, BUF_NOLIMIT);
	const char *p = title, *end = title + strlen(title);
	bool in_word = false, non_ascii = false;
	size_t cut = 0; /* length at the last word end within 48 chars */
	while (p < end) {
		int32_t c = utf8_next(&p, end);
		if (c < 0)
			continue;
		uint32_t f = latin_base(fold((uint32_t)c));
		if (f < 0x80 && isalnum((int)f)) {
			if (!in_word && b.len > 0)
				buf_addc(&b, '-');
			buf_addc(&b, (char)f);
			in_word = true;
			if (b.len <= 48)
				cut = b.len;
		} else {
			if (key_char(f))
				non_ascii = true;
			in_word = false;
		}
	}
	/* Cut at a word boundary: the last word end that fits. */
	if (b.len > 48) {
		buf_truncate(&b, cut);
		while (b.len > 0 && b.data[b.len - 1] == '-')
			buf_truncate(&b, b.len - 1);
	}
	if (non_ascii) {
		unsigned char h[32];
		issue_title_key(title, strlen(title), &key);
		gnutls_hash_fast(GNUTLS_DIG_SHA256, buf_str(&key), key.len, h);
		buf_printf(&b, "%s%02x%02x%02x", b.len ? "-" : "", h[0], h[1], h[2]);
	}
	if (b.len == 0)
		buf_adds(&b, "article");
	buf_free(&key);
	return buf_detach(&b);
}

/* ---- input checks and normalisation ------------------------------------- */

static int line_of(const char *data, size_t off)
{
	int no = 1;
	for (size_t i = 0; i < off; i++)
		if (data[i] == '\n')
			no++;
	return no;
}

static int check_bytes(const char *path, const char *data, size_t len, const struct issue_opts *o,
                       struct err *err)
{
	if (o->max_bytes && len > o->max_bytes)
		return err_at(
		    err, ERR_INPUT, path, 1,
		    "the file is %zu bytes, over max_issue_bytes (%zu); split the issue or "
		    "raise max_issue_bytes",
		    len, o->max_bytes);
	const char *nul = memchr(data, '\0', len);
	if (nul)
		return err_at(err, ERR_INPUT, path, line_of(data, (size_t)(nul - data)),
		              "NUL byte in the file; save it as UTF-8 text (was it UTF-16?)");
	size_t bad;
	if (!utf8_valid(data, len, &bad)) {
		size_t ls = bad;
		while (ls > 0 && data[ls - 1] != '\n')
			ls--;
		return err_at(
		    err, ERR_INPUT, path, line_of(data, bad),
		    "invalid UTF-8 at byte %zu of the line (0x%02x); save the file as UTF-8",
		    bad - ls + 1, (unsigned char)data[bad]);
	}
	bool empty = true;
	for (size_t i = 0; i < len && empty; i++)
		empty = isspace((unsigned char)data[i]) != 0;
	if (empty || (len == 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0))
		return err_at(err, ERR_INPUT, path, 1,
		              "the file is empty; an issue needs at least a title line");
	return 0;
}

/*
 * A copy without BOM, with CRLF as LF, a lone CR as a space and other
 * control characters (but TAB) removed. Line numbers are unchanged.
 */
static char *normalise(const char *data, size_t len)
{
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	buf_grow(&b, len);
	size_t i = 0;
	if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
		i = 3;
	for (; i < len; i++) {
		unsigned char c = (unsigned char)data[i];
		if (c == '\r') {
			if (i + 1 < len && data[i + 1] == '\n')
				continue;
			buf_addc(&b, ' ');
		} else if (c == '\n' || c == '\t' || (c >= 0x20 && c != 0x7f)) {
			/* C1 controls U+0080..U+009F are C2 80..C2 9F in UTF-8. */
			if (c == 0xc2 && i + 1 < len && (unsigned char)data[i + 1] >= 0x80 &&
			    (unsigned char)data[i + 1] <= 0x9f) {
				i++;
				continue;
			}
			buf_addc(&b, (char)c);
		}
	}
	return buf_detach(&b);
}

static void split_lines(struct doc *d)
{
	size_t cap = 64;
	d->lines = xreallocarray(NULL, cap, sizeof *d->lines);
	const char *p = d->text;
	int no = 1;
	for (;;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		if (nl == NULL && n == 0)
			break;
		if (d->nlines == cap) {
			cap *= 2;
			d->lines = xreallocarray(d->lines, cap, sizeof *d->lines);
		}
		d->lines[d->nlines++] = (struct line){p, n, no++};
		if (nl == NULL)
			break;
		p = nl + 1;
	}
}

static char *line_dup(const struct line *l)
{
	const char *s = l->s;
	size_t n = l->n;
	trim(&s, &n);
	return xstrndup(s, n);
}

/* ---- front matter -------------------------------------------------------- */

static bool is_fence(const struct line *l)
{
	const char *s = l->s;
	size_t n = l->n;
	trim(&s, &n);
	return n == 3 && memcmp(s, "---", 3) == 0;
}

static char *unquote(const char *s, size_t n)
{
	trim(&s, &n);
	if (n >= 2 && ((s[0] == '"' && s[n - 1] == '"') || (s[0] == '\'' && s[n - 1] == '\''))) {
		s++;
		n -= 2;
	}
	return utf8_clean_dup_n(s, n, 0);
}

static bool parse_date(const char *v, time_t *out)
{
	int y = 0, m = 0, d = 0, n = 0;
	const char *p = v;
	for (; n < 4 && isdigit((unsigned char)*p); n++, p++)
		y = y * 10 + (*p - '0');
	if (n != 4 || *p++ != '-')
		return false;
	for (n = 0; n < 2 && isdigit((unsigned char)*p); n++, p++)
		m = m * 10 + (*p - '0');
	if (n != 2 || *p++ != '-')
		return false;
	for (n = 0; n < 2 && isdigit((unsigned char)*p); n++, p++)
		d = d * 10 + (*p - '0');
	if (n != 2 || *p != '\0' || m < 1 || m > 12 || d < 1 || d > 31 || y < 1970)
		return false;
	struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
	time_t t = timegm(&tm);
	struct tm back;
	gmtime_r(&t, &back);
	if (back.tm_mday != d)
		return false; /* 2022-02-30 */
	*out = t;
	return true;
}

/* n digits at *p into *v; advances *p. */
static bool digits(const char **p, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++, (*p)++) {
		if (!isdigit((unsigned char)**p))
			return false;
		*v = *v * 10 + (**p - '0');
	}
	return true;
}

int issue_parse_send_at(const char *v, time_t *out, const char **why)
{
	static const char form[] =
	    "must be a date and time with an offset such as 2022-04-15 08:00 +08:00 (or "
	    "2022-04-15T08:00:00Z), or a bare date for 00:00 in site.timezone";
	const char *p = v;
	int y, mo, d, h = 0, mi = 0, sec = 0;
	*why = form;
	if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
	    !digits(&p, 2, &d) || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31)
		return -1;
	struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d};
	if (*p == '\0') {
		/* midnight where the newsletter lives; mktime settles DST itself */
		tm.tm_isdst = -1;
		struct tm want = tm;
		time_t t = mktime(&tm);
		if (t <= 0 || tm.tm_mday != want.tm_mday)
			return -1; /* 2022-02-30; 0 would be "no send_at" */
		*out = t;
		return 0;
	}
	if (*p != 'T' && *p != 't' && *p != ' ')
		return -1;
	while (*p == ' ')
		p++;
	if (*p == 'T' || *p == 't')
		p++;
	if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || h > 23 || mi > 59)
		return -1;
	if (*p == ':') {
		p++;
		if (!digits(&p, 2, &sec) || sec > 60)
			return -1;
	}
	while (*p == ' ')
		p++;
	long off = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
		if (!digits(&p, 2, &oh) || oh > 14)
			return -1;
		if (*p == ':')
			p++;
		if (isdigit((unsigned char)*p) && (!digits(&p, 2, &om) || om > 59))
			return -1;
		off = sign * (oh * 3600L + om * 60L);
	} else if (*p == '\0') {
		*why = "has a time but no offset: add one, e.g. 2022-04-15 08:00 +08:00 (Z for "
		       "UTC), so that the time means the same on every server";
		return -1;
	} else {
		return -1;
	}
	if (*p != '\0')
		return -1;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec == 60 ? 59 : sec;
	time_t t = timegm(&tm);
	struct tm back;
	gmtime_r(&t, &back);
	if (back.tm_mday != d || t - off <= 0)
		return -1; /* 0 would be "no send_at": sent at once, never held */
	*out = t - off;
	return 0;
}

void issue_format_time(time_t t, char *out, size_t n)
{
	struct tm tm;
	if (localtime_r(&t, &tm) == NULL) {
		snprintf(out, n, "@%lld", (long long)t);
		return;
	}
	long off = tm.tm_gmtoff / 60, a = off < 0 ? -off : off;
	char day[32];
	strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, n, "%s%c%02ld:%02ld", day, off < 0 ? '-' : '+', a / 60, a % 60);
}

static bool parse_number(const char *v, int *out)
{
	long x = 0;
	if (*v == '\0')
		return false;
	for (const char *p = v; *p; p++) {
		if (!isdigit((unsigned char)*p) || x > 1000000)
			return false;
		x = x * 10 + (*p - '0');
	}
	if (x < 1)
		return false;
	*out = (int)x;
	return true;
}

/*
 * The front matter's keys, as conf.c has its table: each takes the
 * unquoted, cleaned value of its line and keeps it (*val = NULL) or leaves
 * it to be freed; it reports what is wrong at line no. The "known" list of
 * an unknown key is this table.
 */
typedef int fm_take(struct doc *d, int no, char **val);

static int fm_title(struct doc *d, int no, char **val)
{
	free(d->is->title);
	d->is->title = *val;
	*val = NULL;
	d->fm_title = true;
	if (d->is->title[0] == '\0')
		return err_at(d->err, ERR_INPUT, d->path, no, "title is empty");
	return 0;
}

static int fm_number(struct doc *d, int no, char **val)
{
	d->fm_number = true;
	if (!parse_number(*val, &d->is->number))
		return err_at(d->err, ERR_INPUT, d->path, no,
		              "number must be a positive integer, not '%s'", *val);
	return 0;
}

static int fm_period(struct doc *d, int no, char **val)
{
	free(d->is->period);
	d->is->period = *val;
	*val = NULL;
	d->fm_period = true;
	d->period_line = no;
	return 0;
}

static int fm_date(struct doc *d, int no, char **val)
{
	if (!parse_date(*val, &d->is->date))
		return err_at(d->err, ERR_INPUT, d->path, no, "date must be YYYY-MM-DD, not '%s'",
		              *val);
	return 0;
}

static int fm_send_at(struct doc *d, int no, char **val)
{
	const char *why;
	d->is->send_at_line = no;
	if (issue_parse_send_at(*val, &d->is->send_at, &why) < 0)
		return err_at(d->err, ERR_INPUT, d->path, no, "send_at '%s' %s", *val, why);
	return 0;
}

static int fm_language(struct doc *d, int no, char **val)
{
	const char *v = *val;
	bool ok = v[0] != '\0' && strlen(v) < 36;
	for (const char *p = v; *p; p++)
		ok &= isalnum((unsigned char)*p) || *p == '-';
	int r = ok ? 0
	           : err_at(d->err, ERR_INPUT, d->path, no,
	                    "language must be a tag such as zh-CN, not '%s'", v);
	free(d->is->language);
	d->is->language = *val;
	*val = NULL;
	return r;
}

/* "a, b" or "[a, b]", each name possibly quoted. */
static int fm_lists(struct doc *d, int no, char **val)
{
	struct issue *is = d->is;
	is->lists_line = no;
	char *v = *val;
	size_t vn = strlen(v);
	if (vn >= 2 && v[0] == '[' && v[vn - 1] == ']') {
		v[vn - 1] = '\0';
		v++;
	}
	char *save = NULL;
	for (char *tok = strtok_r(v, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		const char *t = tok;
		size_t tn = strlen(tok);
		trim(&t, &tn);
		char *name = unquote(t, tn);
		if (!list_name_valid(name)) {
			err_at(d->err, ERR_INPUT, d->path, no,
			       "'%s' is not a list name: " LIST_NAME_RULE
			       " (as matrixctl list-create takes)",
			       name);
			free(name);
			return -1;
		}
		is->lists = xreallocarray(is->lists, is->nlists + 1, sizeof *is->lists);
		is->lists[is->nlists++] = name;
	}
	return 0;
}

static int fm_status(struct doc *d, int no, char **val)
{
	if (strcmp(*val, "publish") == 0)
		d->is->is_draft = false;
	else if (strcmp(*val, "draft") == 0)
		d->is->is_draft = true;
	else
		return err_at(d->err, ERR_INPUT, d->path, no,
		              "status must be 'publish' or 'draft', not '%s'", *val);
	return 0;
}

static const struct fm_key {
	const char *name;
	fm_take *take;
} fm_keys[] = {
    {"title", fm_title},   {"number", fm_number},     {"period", fm_period},
    {"date", fm_date},     {"language", fm_language}, {"lists", fm_lists},
    {"status", fm_status}, {"send_at", fm_send_at},
};

static int fm_unknown(struct doc *d, int no, const char *key)
{
	struct buf known;
	buf_init(&known, BUF_NOLIMIT);
	for (size_t i = 0; i < sizeof fm_keys / sizeof fm_keys[0]; i++)
		buf_printf(&known, "%s%s", i ? ", " : "", fm_keys[i].name);
	err_at(d->err, ERR_INPUT, d->path, no, "unknown front matter key '%s' (known: %s)", key,
	       buf_str(&known));
	buf_free(&known);
	return -1;
}

/* The lines between a first line '---' and the next one: "key: value". */
static int front_matter(struct doc *d)
{
	if (d->nlines == 0 || !is_fence(&d->lines[0]))
		return 0;
	size_t end = 0;
	for (size_t i = 1; i < d->nlines; i++)
		if (is_fence(&d->lines[i])) {
			end = i;
			break;
		}
	if (end == 0)
		return err_at(
		    d->err, ERR_INPUT, d->path, 1,
		    "the front matter opened here is never closed; add a line '---' after "
		    "its last key");
	for (size_t i = 1; i < end; i++) {
		const struct line *l = &d->lines[i];
		const char *s = l->s;
		size_t n = l->n;
		trim(&s, &n);
		if (n == 0 || s[0] == '#')
			continue;
		const char *colon = memchr(s, ':', n);
		if (colon == NULL || colon == s)
			return err_at(d->err, ERR_INPUT, d->path, l->no,
			              "expected 'key: value' in the front matter");
		size_t kn = (size_t)(colon - s);
		while (kn > 0 && s[kn - 1] == ' ')
			kn--;
		char *key = xstrndup(s, kn);
		char *val = unquote(colon + 1, n - (size_t)(colon - s) - 1);
		const struct fm_key *k = NULL;
		for (size_t j = 0; j < sizeof fm_keys / sizeof fm_keys[0] && k == NULL; j++)
			if (strcmp(key, fm_keys[j].name) == 0)
				k = &fm_keys[j];
		int r = k ? k->take(d, l->no, &val) : fm_unknown(d, l->no, key);
		free(key);
		free(val);
		if (r < 0)
			return -1;
	}
	d->body = end + 1;
	return 0;
}

/* ---- masthead ------------------------------------------------------------ */

/* "NO.60", "No. 60", "no 60", "N°60", "#60", "Issue 60", "第60期" → 60 */
static bool number_line(const struct line *l, int *num)
{
	const char *s = l->s;
	size_t n = l->n;
	trim(&s, &n);
	static const char *const pre[] = {"no.", "no", "n\xc2\xb0", "#", "issue", "\xe7\xac\xac"};
	size_t k = 0;
	for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++)
		if (starts_with_ci(s, n, pre[i])) {
			k = strlen(pre[i]);
			break;
		}
	if (k == 0)
		return false;
	s += k;
	n -= k;
	trim(&s, &n);
	if (n >= 3 && memcmp(s + n - 3, "\xe6\x9c\x9f", 3) == 0) /* 期 */
		n -= 3;
	char tmp[16];
	if (n == 0 || n >= sizeof tmp)
		return false;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	return parse_number(tmp, num);
}

static size_t next_nonblank(const struct doc *d, size_t i, size_t end)
{
	while (i < end && blank(&d->lines[i]))
		i++;
	return i;
}

/* Title, number and period from the first lines of [first, end). */
static void masthead(struct doc *d, size_t first, size_t end)
{
	struct issue *is = d->is;
	size_t seen = 0, prev = SIZE_MAX;
	for (size_t i = next_nonblank(d, first, end); i < end && seen < 10;
	     i = next_nonblank(d, i + 1, end), seen++) {
		int num;
		if (!number_line(&d->lines[i], &num)) {
			prev = i;
			continue;
		}
		if (!d->fm_number) {
			is->number = num;
			d->fm_number = true;
		}
		if (!d->fm_title) {
			char *nl = line_dup(&d->lines[i]);
			free(is->title);
			if (prev != SIZE_MAX &&
			    utf8_count(d->lines[prev].s, d->lines[prev].n) <= 40) {
				char *name = line_dup(&d->lines[prev]);
				is->title = xasprintf("%s %s", name, nl);
				free(name);
			} else {
				is->title = NULL; /* filled from site.title later */
				is->number = num;
			}
			free(nl);
			d->fm_title = is->title != NULL;
		}
		size_t p = next_nonblank(d, i + 1, end);
		if (!d->fm_period && p < end) {
			const struct line *l = &d->lines[p];
			bool digit = false;
			for (size_t k = 0; k < l->n; k++)
				digit |= isdigit((unsigned char)l->s[k]) != 0;
			if (digit && utf8_count(l->s, l->n) <= 40 && l->s[0] != '-') {
				free(is->period);
				is->period = line_dup(l);
				d->fm_period = true;
				d->period_line = l->no;
			}
		}
		return;
	}
}

/* ---- headings ------------------------------------------------------------ */

static void node_text(cmark_node *n, struct buf *out)
{
	for (cmark_node *c = cmark_node_first_child(n); c; c = cmark_node_next(c)) {
		switch (cmark_node_get_type(c)) {
		case CMARK_NODE_TEXT:
		case CMARK_NODE_CODE:
			buf_adds(out, cmark_node_get_literal(c));
			break;
		case CMARK_NODE_SOFTBREAK:
		case CMARK_NODE_LINEBREAK:
			buf_addc(out, ' ');
			break;
		case CMARK_NODE_HTML_INLINE:
			break;
		default:
			node_text(c, out);
		}
	}
}

struct heading {
	size_t line;
	int level;
	char *text;
};

/* Top-level ATX headings (setext underlines are too easy to make by accident). */
static size_t find_headings(struct doc *d, struct heading **out)
{
	struct buf src;
	buf_init(&src, BUF_NOLIMIT);
	for (size_t i = d->body; i < d->nlines; i++) {
		buf_add(&src, d->lines[i].s, d->lines[i].n);
		buf_addc(&src, '\n');
	}
	cmark_node *doc = cmark_parse_document(buf_str(&src), src.len, CMARK_OPT_DEFAULT);
	size_t n = 0;
	*out = NULL;
	for (cmark_node *c = cmark_node_first_child(doc); c; c = cmark_node_next(c)) {
		if (cmark_node_get_type(c) != CMARK_NODE_HEADING)
			continue;
		size_t li = d->body + (size_t)cmark_node_get_start_line(c) - 1;
		const char *s = d->lines[li].s;
		size_t k = 0;
		while (k < 3 && k < d->lines[li].n && s[k] == ' ')
			k++;
		if (k >= d->lines[li].n || s[k] != '#')
			continue;
		struct buf t;
		buf_init(&t, BUF_NOLIMIT);
		node_text(c, &t);
		char *clean = utf8_clean_dup(buf_str(&t), 0);
		buf_free(&t);
		const char *cs = clean;
		size_t cn = strlen(clean);
		trim(&cs, &cn);
		*out = xreallocarray(*out, n + 1, sizeof **out);
		(*out)[n++] =
		    (struct heading){li, cmark_node_get_heading_level(c), xstrndup(cs, cn)};
		free(clean);
	}
	cmark_node_free(doc);
	buf_free(&src);
	return n;
}

static void add_span(struct doc *d, size_t first, size_t last, char *title, const char *section)
{
	d->spans = xreallocarray(d->spans, d->nspans + 1, sizeof *d->spans);
	d->spans[d->nspans++] = (struct span){
	    .title_first = first,
	    .title_last = last,
	    .body_first = last + 1,
	    .body_end = d->nlines,
	    .title = title,
	    .section = xstrdup(section ? section : ""),
	};
	/* The previous article ends here, or earlier where a section heading
	 * already ended it. */
	if (d->nspans > 1 && d->spans[d->nspans - 2].body_end > first)
		d->spans[d->nspans - 2].body_end = first;
}

static int split_headings(struct doc *d, struct heading *h, size_t nh)
{
	bool two = false;
	for (size_t i = 0; i < nh; i++)
		two |= h[i].level == 2;
	const char *section = "";
	size_t first_article = d->nlines, intro = 0;
	for (size_t i = 0; i < nh; i++) {
		if (two && h[i].level == 1) {
			section = h[i].text;
			if (d->nspans > 0)
				d->spans[d->nspans - 1].body_end = h[i].line;
			else if (first_article == d->nlines)
				d->preface_end = h[i].line;
			/* Text under a section heading, before its first article, leads
			 * that first article. */
			intro = h[i].line + 1;
			continue;
		}
		if (h[i].level > (two ? 2 : 1))
			continue;
		if (h[i].text[0] == '\0')
			return err_at(d->err, ERR_INPUT, d->path, d->lines[h[i].line].no,
			              "empty heading; give the article a title");
		if (first_article == d->nlines) {
			first_article = h[i].line;
			if (d->preface_end == d->nlines || d->preface_end > h[i].line)
				d->preface_end = h[i].line;
		}
		add_span(d, h[i].line, h[i].line, xstrdup(h[i].text), section);
		if (intro) {
			d->spans[d->nspans - 1].intro_first = intro;
			d->spans[d->nspans - 1].intro_end = h[i].line;
			intro = 0;
		}
	}
	if (d->nspans == 0)
		return err_at(d->err, ERR_INPUT, d->path, d->lines[h[0].line].no,
		              "only section headings (#) and no article headings (##)");
	d->preface_first = d->body;
	return 0;
}

/* ---- table of contents --------------------------------------------------- */

struct entry {
	size_t line;
	char *title; /* page number removed */
	char *full;  /* as written, when it ends in a number that may be no page */
	char *section;
};

/* "- Title 12" (also "* ", "• ", "· "); the title and whether a page was cut. */
static bool entry_line(const struct line *l, const char **ts, size_t *tn, size_t *fulln)
{
	const char *s = l->s;
	size_t n = l->n;
	trim(&s, &n);
	size_t k;
	if (n >= 2 && (s[0] == '-' || s[0] == '*' || s[0] == '+') && s[1] == ' ')
		k = 2;
	else if (n >= 4 && (memcmp(s, "\xe2\x80\xa2", 3) == 0 || memcmp(s, "\xe3\x83\xbb", 3) == 0))
		k = 3;
	else if (n >= 3 && memcmp(s, "\xc2\xb7", 2) == 0)
		k = 2;
	else
		return false;
	s += k;
	n -= k;
	trim(&s, &n);
	if (n == 0)
		return false;
	*ts = s;
	*fulln = n;
	/* A trailing page number, possibly after dot leaders. */
	size_t e = n;
	while (e > 0 && isdigit((unsigned char)s[e - 1]))
		e--;
	if (e < n && n - e <= 4 && e > 0) {
		size_t t = e;
		bool sep = false;
		while (t > 0 && (s[t - 1] == ' ' || s[t - 1] == '.' || s[t - 1] == '\t')) {
			t--;
			sep = true;
		}
		while (t >= 3 && memcmp(s + t - 3, "\xe2\x80\xa6", 3) == 0) {
			t -= 3;
			sep = true;
		}
		if (sep && t > 0) {
			*tn = t;
			return true;
		}
	}
	*tn = n;
	return true;
}

/* "01 焦点" → "焦点"; an unnumbered short line stands for itself. */
static bool section_line(const struct line *l, const char **ss, size_t *sn)
{
	const char *s = l->s;
	size_t n = l->n, tn, fn;
	const char *ts;
	trim(&s, &n);
	if (n == 0 || entry_line(l, &ts, &tn, &fn) || utf8_count(s, n) > 24 ||
	    ends_sentence(utf8_last(s, n)))
		return false;
	size_t k = 0;
	while (k < n && k < 2 && isdigit((unsigned char)s[k]))
		k++;
	if (k > 0 && k < n && (s[k] == ' ' || s[k] == '.')) {
		s += k;
		n -= k;
		trim(&s, &n);
		if (n > 0 && s[0] == '.') {
			s++;
			n--;
			trim(&s, &n);
		}
	}
	if (n == 0)
		return false;
	*ss = s;
	*sn = n;
	return true;
}

static void entries_free(struct entry *e, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(e[i].title);
		free(e[i].full);
		free(e[i].section);
	}
	free(e);
}

/*
 * Finds a table of contents starting before the first long paragraph: a run
 * of entry lines, optionally grouped under section lines. Returns the number
 * of entries (0: none) and sets [*toc_first, *toc_end).
 */
static size_t find_toc(struct doc *d, struct entry **out, size_t *toc_first, size_t *toc_end)
{
	struct entry *e = NULL;
	size_t n = 0, pages = 0, nsections = 0;
	char *section = xstrdup("");
	size_t i = d->body, start = SIZE_MAX;
	const char *ts, *ss;
	size_t tn, fn, sn;

	for (; i < d->nlines; i++) {
		const struct line *l = &d->lines[i];
		if (blank(l))
			continue;
		if (utf8_count(l->s, l->n) > 100)
			break; /* prose: a table of contents comes before it */
		bool entry = entry_line(l, &ts, &tn, &fn);
		size_t nx = next_nonblank(d, i + 1, d->nlines);
		bool sect = !entry && nx < d->nlines && section_line(l, &ss, &sn) &&
		            entry_line(&d->lines[nx], &ts, &tn, &fn);
		if (entry || sect) {
			start = i;
			break;
		}
	}
	if (start == SIZE_MAX) {
		free(section);
		return 0;
	}
	for (i = start; i < d->nlines; i++) {
		const struct line *l = &d->lines[i];
		if (blank(l))
			continue;
		if (entry_line(l, &ts, &tn, &fn)) {
			e = xreallocarray(e, n + 1, sizeof *e);
			e[n] = (struct entry){i, utf8_clean_dup_n(ts, tn, 0),
			                      tn != fn ? utf8_clean_dup_n(ts, fn, 0) : NULL,
			                      xstrdup(section)};
			pages += tn != fn;
			n++;
			continue;
		}
		size_t nx = next_nonblank(d, i + 1, d->nlines);
		if (nx < d->nlines && section_line(l, &ss, &sn) &&
		    entry_line(&d->lines[nx], &ts, &tn, &fn)) {
			free(section);
			section = utf8_clean_dup_n(ss, sn, 0);
			nsections++;
			continue;
		}
		break;
	}
	free(section);
	/* Two entries at least, and something that makes it a contents page
	 * rather than a bulleted list: sections or page numbers. */
	if (n < 2 || (nsections == 0 && pages * 2 < n)) {
		entries_free(e, n);
		return 0;
	}
	*out = e;
	*toc_first = start;
	*toc_end = i;
	return n;
}

/* The key of lines [i, i+k) joined, skipping blank ones. */
static bool match_at(struct doc *d, size_t i, const char *key, size_t keylen, size_t *last)
{
	struct buf acc;
	buf_init(&acc, BUF_NOLIMIT);
	bool ok = false;
	size_t used = 0;
	for (size_t j = i; j < d->nlines && used < 4; j++) {
		const struct line *l = &d->lines[j];
		if (blank(l)) {
			if (j == i)
				break;
			continue;
		}
		if (l->n > keylen * 4 + 64)
			break;
		size_t before = acc.len;
		issue_title_key(l->s, l->n, &acc);
		used++;
		if (acc.len == before)
			break; /* a line of punctuation only */
		if (acc.len > keylen || memcmp(acc.data, key, acc.len) != 0)
			break;
		if (acc.len == keylen) {
			*last = j;
			ok = true;
			break;
		}
	}
	buf_free(&acc);
	return ok;
}

/*
 * Appends a title line with runs of spaces collapsed, and the spaces between
 * two Han characters removed: Chinese sets no spaces between ideographs, so
 * one there is a line break of the printed page.
 */
static void add_title_text(struct buf *out, const char *s, size_t n)
{
	const char *p = s, *end = s + n;
	uint32_t prev = out->len ? utf8_last(out->data, out->len) : 0;
	bool pending = false;
	while (p < end) {
		size_t k;
		if (is_space_at(p, (size_t)(end - p), &k)) {
			pending = out->len > 0;
			p += k;
			continue;
		}
		const char *at = p;
		int32_t c = utf8_next(&p, end);
		if (c < 0)
			continue;
		if (pending && !(utf8_is_han(prev) && utf8_is_han((uint32_t)c)))
			buf_addc(out, ' ');
		pending = false;
		buf_add(out, at, (size_t)(p - at));
		prev = (uint32_t)c;
	}
}

/* Splits s into its key characters and the gaps between them:
 * gaps[k] precedes key character k; gaps[nkeys] is the tail. */
struct gap {
	const char *s;
	size_t n;
};

static size_t gaps_of(const char *s, struct gap **gaps)
{
	size_t n = 0, cap = 16;
	const char *p = s, *end = s + strlen(s), *g = s;
	*gaps = xreallocarray(NULL, cap, sizeof **gaps);
	while (p < end) {
		const char *at = p;
		int32_t c = utf8_next(&p, end);
		if (c < 0 || !key_char(fold((uint32_t)c)))
			continue;
		if (n + 2 > cap) {
			cap *= 2;
			*gaps = xreallocarray(*gaps, cap, sizeof **gaps);
		}
		(*gaps)[n++] = (struct gap){g, (size_t)(at - g)};
		g = p;
	}
	(*gaps)[n] = (struct gap){g, (size_t)(end - g)};
	return n;
}

static bool only_spaces(const char *s, size_t n)
{
	trim(&s, &n);
	return n == 0;
}

/*
 * The contents page keeps punctuation that the article page sometimes
 * drops (a comma at a line break, "v2.0, 我们" printed "v2.0 我们"). Where
 * the body title has only space between two key characters and the contents
 * entry has punctuation, take the entry's, in full width next to CJK.
 */
static char *restore_punct(const char *title, const char *toc)
{
	struct gap *tg = NULL, *eg = NULL;
	size_t nt = gaps_of(title, &tg), ne = gaps_of(toc, &eg);
	struct buf out;
	buf_init(&out, BUF_NOLIMIT);
	for (size_t k = 0; k <= nt; k++) {
		const struct gap *g = &tg[k];
		if (nt == ne && only_spaces(g->s, g->n) && !only_spaces(eg[k].s, eg[k].n)) {
			const char *e = eg[k].s;
			size_t en = eg[k].n;
			trim(&e, &en);
			uint32_t before = out.len ? utf8_last(out.data, out.len) : 0;
			uint32_t after = k < nt ? utf8_first(g->s + g->n, 4) : 0;
			bool cjk = utf8_is_cjk(before) || utf8_is_cjk(after);
			char last = 0;
			for (size_t i = 0; i < en; i++) {
				const char *fw = cjk ? utf8_fullwidth_punct(e[i]) : NULL;
				if (fw)
					buf_adds(&out, fw);
				else if (e[i] != ' ')
					buf_addc(&out, e[i]);
				last = fw ? 0 : e[i];
			}
			if (k > 0 && k < nt && !cjk && last && strchr(",:;!?)", last))
				buf_addc(&out, ' ');
		} else {
			buf_add(&out, g->s, g->n);
		}
		if (k < nt) {
			const char *p = g->s + g->n, *q = p;
			utf8_next(&q, p + 4);
			buf_add(&out, p, (size_t)(q - p));
		}
	}
	free(tg);
	free(eg);
	return buf_detach(&out);
}

/*
 * The title as printed in the body, lines [first, last], joined by a space
 * (which add_title_text drops between ideographs), with the punctuation the
 * contents entry has where the page has none.
 */
static char *body_title(struct doc *d, size_t first, size_t last, const char *toc)
{
	struct buf joined, out;
	buf_init(&joined, BUF_NOLIMIT);
	buf_init(&out, BUF_NOLIMIT);
	for (size_t j = first; j <= last; j++) {
		if (blank(&d->lines[j]))
			continue;
		if (joined.len > 0)
			buf_addc(&joined, ' ');
		buf_add(&joined, d->lines[j].s, d->lines[j].n);
	}
	add_title_text(&out, buf_str(&joined), joined.len);
	char *clean = utf8_clean_dup(buf_str(&out), 0);
	buf_free(&joined);
	buf_free(&out);
	char *t = restore_punct(clean, toc);
	free(clean);
	return t;
}

static bool key_equal_line(const struct line *l, const char *name)
{
	struct buf a, b;
	buf_init(&a, BUF_NOLIMIT);
	buf_init(&b, BUF_NOLIMIT);
	issue_title_key(l->s, l->n, &a);
	issue_title_key(name, strlen(name), &b);
	bool eq = a.len > 0 && a.len == b.len && memcmp(a.data, b.data, a.len) == 0;
	if (!eq) {
		/* "01 焦点" in the body against the section name "焦点" */
		const char *s;
		size_t n;
		if (section_line(l, &s, &n)) {
			buf_reset(&a);
			issue_title_key(s, n, &a);
			eq = a.len > 0 && a.len == b.len && memcmp(a.data, b.data, a.len) == 0;
		}
	}
	buf_free(&a);
	buf_free(&b);
	return eq;
}

/* ---- colophon ------------------------------------------------------------ */

static bool contact_line(const struct line *l)
{
	const char *s = l->s;
	size_t n = l->n;
	trim(&s, &n);
	static const char *const labels[] = {"电话",   "传真",    "网址",   "网站",    "微博",
	                                     "微信",   "邮箱",    "地址",   "邮编",    "tel",
	                                     "phone",  "fax",     "web",    "website", "email",
	                                     "e-mail", "address", "wechat", "weibo"};
	for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++) {
		size_t k = strlen(labels[i]);
		if (starts_with_ci(s, n, labels[i]) && n > k &&
		    (s[k] == ':' || memcmp(s + k, "\xef\xbc\x9a", n - k >= 3 ? 3 : n - k) == 0 ||
		     (s[k] == ' ' && n > k + 1 && s[k + 1] == ':')))
			return true;
	}
	return starts_with_ci(s, n, "http://") || starts_with_ci(s, n, "https://") ||
	       starts_with_ci(s, n, "<http");
}

static bool about_line(const struct line *l)
{
	const char *s = l->s;
	size_t n = l->n;
	trim(&s, &n);
	if (n == 0 || utf8_count(s, n) > 30 || ends_sentence(utf8_last(s, n)))
		return false;
	return starts_with_ci(s, n, "关于") || starts_with_ci(s, n, "about ");
}

static bool short_label(const struct line *l, size_t max)
{
	const char *s = l->s;
	size_t n = l->n;
	trim(&s, &n);
	return n > 0 && utf8_count(s, n) <= max && !ends_sentence(utf8_last(s, n));
}

static bool quote_open(const struct line *l)
{
	const char *s = l->s;
	size_t n = l->n;
	trim(&s, &n);
	uint32_t c = utf8_first(s, n);
	return c == 0x201c || c == 0x300c || c == '"';
}

static bool quote_close(const struct line *l)
{
	const char *s = l->s;
	size_t n = l->n;
	trim(&s, &n);
	uint32_t c = utf8_last(s, n);
	return c == 0x201d || c == 0x300d || c == '"';
}

/*
 * Back matter after the last article: it must end in a contact block (two
 * or more lines such as "电话：…", "网址：…"); walking back from there, short
 * labels, an "关于…" heading with its paragraphs, and a signed message (a
 * quoted letter under one or two short name/role lines) belong to it. Any
 * other line stops the walk. Without a contact block there is no colophon.
 */
static size_t find_colophon(struct doc *d, size_t lo)
{
	size_t n = d->nlines, i = n;
	while (i > lo && blank(&d->lines[i - 1]))
		i--;
	size_t contacts = 0, start = n;
	while (i > lo) {
		const struct line *l = &d->lines[i - 1];
		if (blank(l)) {
			i--;
			continue;
		}
		if (!contact_line(l))
			break;
		contacts++;
		start = --i;
	}
	if (contacts < 2)
		return n;
	/* Walk back over labels and "关于…" blocks; prose counts only when an
	 * about heading is found above it. */
	size_t pending = 0;
	for (i = start;;) {
		size_t j = i;
		while (j > lo && blank(&d->lines[j - 1]))
			j--;
		if (j == lo)
			break;
		const struct line *l = &d->lines[--j];
		if (about_line(l)) {
			start = i = j;
			pending = 0;
			continue;
		}
		if (pending == 0 && short_label(l, 12) && !quote_close(l)) {
			start = i = j;
			continue;
		}
		if ((pending == 0 && quote_close(l)) || ++pending > 6)
			break;
		i = j;
	}
	/* A signed message right above: quote paragraphs under name/role lines. */
	i = start;
	size_t j = i;
	while (j > lo && blank(&d->lines[j - 1]))
		j--;
	if (j > lo && quote_close(&d->lines[j - 1])) {
		size_t q = j - 1, paras = 0;
		for (;;) {
			paras++;
			if (quote_open(&d->lines[q]))
				break;
			size_t p = q;
			while (p > lo && blank(&d->lines[p - 1]))
				p--;
			if (p == lo || paras > 8) {
				q = SIZE_MAX;
				break;
			}
			q = p - 1;
		}
		if (q != SIZE_MAX) {
			size_t names = 0, top = q;
			size_t p = q;
			while (names < 2) {
				while (p > lo && blank(&d->lines[p - 1]))
					p--;
				if (p == lo || !short_label(&d->lines[p - 1], 20))
					break;
				top = --p;
				names++;
			}
			if (names > 0)
				start = top;
		}
	}
	return start;
}

static int split_toc(struct doc *d, struct entry *e, size_t ne, size_t toc_first, size_t toc_end)
{
	size_t cur = toc_end;
	masthead(d, d->body, toc_first);
	for (size_t k = 0; k < ne; k++) {
		const char *cand[2] = {e[k].title, e[k].full};
		size_t best = SIZE_MAX, best_last = 0, which = 0;
		struct buf key;
		buf_init(&key, BUF_NOLIMIT);
		for (int c = 0; c < 2; c++) {
			if (cand[c] == NULL)
				continue;
			buf_reset(&key);
			issue_title_key(cand[c], strlen(cand[c]), &key);
			if (key.len == 0) {
				buf_free(&key);
				return err_at(d->err, ERR_INPUT, d->path, d->lines[e[k].line].no,
				              "table of contents entry without a title");
			}
			for (size_t i = cur; i < d->nlines && i < best; i++) {
				size_t last;
				if (match_at(d, i, key.data, key.len, &last)) {
					best = i;
					best_last = last;
					which = (size_t)c;
					break;
				}
			}
		}
		buf_free(&key);
		if (best == SIZE_MAX) {
			int after = cur < d->nlines ? d->lines[cur].no : d->lines[d->nlines - 1].no;
			return err_at(
			    d->err, ERR_INPUT, d->path, d->lines[e[k].line].no,
			    "the table of contents lists \"%s\" but no line after line %d "
			    "matches it; fix the title here or in the body",
			    e[k].title, after);
		}
		if (k == 0) {
			d->preface_first = toc_end;
			d->preface_end = best;
		}
		add_span(d, best, best_last, body_title(d, best, best_last, cand[which]),
		         e[k].section);
		cur = best_last + 1;
	}
	/* A section banner ("科研第一线") just before the next section's first
	 * article is structure, not text of the article above it. */
	for (size_t k = 0; k < d->nspans; k++) {
		struct span *s = &d->spans[k];
		const char *next_section = k + 1 < d->nspans ? d->spans[k + 1].section : NULL;
		size_t end = s->body_end;
		if (next_section == NULL || strcmp(next_section, s->section) == 0 || !*next_section)
			continue;
		while (end > s->body_first && blank(&d->lines[end - 1]))
			end--;
		if (end > s->body_first && key_equal_line(&d->lines[end - 1], next_section))
			s->body_end = end - 1;
	}
	if (d->nspans > 0 && d->spans[0].section[0]) {
		size_t end = d->preface_end;
		while (end > d->preface_first && blank(&d->lines[end - 1]))
			end--;
		if (end > d->preface_first &&
		    key_equal_line(&d->lines[end - 1], d->spans[0].section))
			d->preface_end = end - 1;
	}
	struct span *last = &d->spans[d->nspans - 1];
	d->colophon_first = find_colophon(d, last->body_first);
	last->body_end = d->colophon_first;
	return 0;
}

/* ---- single article ------------------------------------------------------ */

static int split_single(struct doc *d)
{
	size_t i = next_nonblank(d, d->body, d->nlines);
	if (i == d->nlines)
		return err_at(d->err, ERR_INPUT, d->path,
		              d->nlines ? d->lines[d->nlines - 1].no : 1,
		              "no article text after the front matter");
	d->preface_first = d->preface_end = d->body;
	if (d->fm_title) {
		d->spans = xcalloc(1, sizeof *d->spans);
		d->nspans = 1;
		d->spans[0] = (struct span){
		    .title_first = i,
		    .title_last = i,
		    .body_first = i,
		    .body_end = d->nlines,
		    .title = xstrdup(d->is->title),
		    .section = xstrdup(""),
		};
		return 0;
	}
	char *t = line_dup(&d->lines[i]);
	char *clean = utf8_clean_dup(t, 0);
	free(t);
	add_span(d, i, i, clean, "");
	return 0;
}

/* ---- assembling ---------------------------------------------------------- */

static char *join_lines(struct doc *d, size_t first, size_t end)
{
	while (first < end && blank(&d->lines[first]))
		first++;
	while (end > first && blank(&d->lines[end - 1]))
		end--;
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	for (size_t i = first; i < end; i++) {
		buf_add(&b, d->lines[i].s, d->lines[i].n);
		buf_addc(&b, '\n');
	}
	return buf_detach(&b);
}

static int number_from_path(const char *path)
{
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	int num = 0;
	for (const char *p = base; *p; p++) {
		if (!isdigit((unsigned char)*p))
			continue;
		long v = 0;
		while (isdigit((unsigned char)*p) && v < 1000000)
			v = v * 10 + (*p++ - '0');
		num = (int)v;
		if (*p == '\0')
			break;
	}
	return num;
}

static void take_assets(struct issue *is, struct md_doc *md)
{
	for (size_t i = 0; i < md->nassets; i++) {
		bool dup = false;
		for (size_t j = 0; j < is->nassets && !dup; j++)
			dup = strcmp(is->assets[j], md->assets[i]) == 0;
		if (dup)
			continue;
		is->assets = xreallocarray(is->assets, is->nassets + 1, sizeof *is->assets);
		is->assets[is->nassets++] = xstrdup(md->assets[i]);
	}
}

static void add_warning(struct issue *is, char *msg)
{
	is->warnings = xreallocarray(is->warnings, is->nwarnings + 1, sizeof *is->warnings);
	is->warnings[is->nwarnings++] = msg;
}

/* The line in the file of the first line join_lines(first, end) returns. */
static int first_line_no(const struct doc *d, size_t first, size_t end)
{
	while (first < end && blank(&d->lines[first]))
		first++;
	return first < d->nlines ? d->lines[first].no : 0;
}

static void take_warnings(struct doc *d, const struct md_doc *md)
{
	for (size_t i = 0; i < md->nwarnings; i++)
		add_warning(d->is, xasprintf("%s:%d: %s", d->path, md->warnings[i].line,
		                             md->warnings[i].msg));
}

/* The preface or the colophon as HTML and text ("" when empty); text may
 * be NULL. */
static int render_extra(struct doc *d, const char *src, const struct md_opts *mo, char **html,
                        char **text, struct err *err)
{
	struct issue *is = d->is;
	if (src[0] == '\0') {
		*html = xstrdup("");
		if (text)
			*text = xstrdup("");
		return 0;
	}
	struct md_doc md;
	if (md_render(src, strlen(src), mo, &md, err) < 0)
		return -1;
	*html = md.html;
	md.html = NULL;
	if (text) {
		*text = md.text;
		md.text = NULL;
	}
	take_assets(is, &md);
	take_warnings(d, &md);
	md_doc_free(&md);
	return 0;
}

/* Whether the issue folder arg (NULL: a single-file issue, which holds no
 * image) holds the image at path: a regular file, as publishing copies. */
static bool have_image(void *arg, const char *path)
{
	if (arg == NULL)
		return false;
	struct stat st;
	char *full = xasprintf("%s/%s", (const char *)arg, path);
	bool ok = lstat(full, &st) == 0 && S_ISREG(st.st_mode);
	free(full);
	return ok;
}

static int build_articles(struct doc *d)
{
	struct issue *is = d->is;
	struct md_opts mo = {.flags = is->mode == ISSUE_TOC ? MD_RAW_EXPORT : 0,
	                     .have_image = have_image,
	                     .image_arg = (void *)d->folder};
	char *base = NULL;
	if (d->base_url && *d->base_url)
		mo.asset_base = base = xasprintf("%sissues/%d/", d->base_url, is->number);
	int r = -1;
	is->articles = xcalloc(d->nspans, sizeof *is->articles);
	for (size_t k = 0; k < d->nspans; k++) {
		struct span *s = &d->spans[k];
		struct article *a = &is->articles[k];
		is->narticles = k + 1;
		a->index = (int)k + 1;
		a->section = s->section;
		s->section = NULL;
		a->title = s->title;
		s->title = NULL;
		if (a->title[0] == '\0') {
			err_at(d->err, ERR_INPUT, d->path, d->lines[s->title_first].no,
			       "the article title is empty");
			goto out;
		}
		a->line = d->lines[s->title_first].no;
		a->body_line = s->body_first < d->nlines ? d->lines[s->body_first].no : a->line;
		a->markdown = join_lines(d, s->body_first, s->body_end);
		if (s->intro_end > s->intro_first) {
			char *intro = join_lines(d, s->intro_first, s->intro_end);
			if (intro[0]) {
				char *both = xasprintf("%s\n%s", intro, a->markdown);
				free(a->markdown);
				a->markdown = both;
			}
			free(intro);
		}
		struct md_doc md;
		/* an introduction put first shifts the lines: count from the file's
		 * start of the body only without one */
		mo.first_line = s->intro_end > s->intro_first
		                    ? 0
		                    : first_line_no(d, s->body_first, s->body_end);
		if (md_render(a->markdown, strlen(a->markdown), &mo, &md, d->err) < 0) {
			err_prefix(d->err, "%s:%d", d->path, a->line);
			goto out;
		}
		take_warnings(d, &md);
		a->html = md.html;
		a->text = md.text;
		a->summary = md.summary;
		md.html = md.text = md.summary = NULL;
		take_assets(is, &md);
		md_doc_free(&md);
		/* Slugs: unique in the issue ("-2", "-3" on a clash). */
		char *slug = issue_slug(a->title);
		for (int n = 2;; n++) {
			bool clash = false;
			for (size_t j = 0; j < k; j++)
				clash |= strcmp(is->articles[j].slug, slug) == 0;
			if (!clash)
				break;
			char *stem = issue_slug(a->title);
			free(slug);
			slug = xasprintf("%s-%d", stem, n);
			free(stem);
		}
		a->slug = slug;
	}
	is->preface = join_lines(d, d->preface_first, d->preface_end);
	is->colophon = join_lines(d, d->colophon_first, d->nlines);
	struct md_opts co = mo;
	mo.first_line = first_line_no(d, d->preface_first, d->preface_end);
	co.first_line = first_line_no(d, d->colophon_first, d->nlines);
	if (co.flags & MD_RAW_EXPORT)
		co.flags |= MD_COLOPHON;
	if (render_extra(d, is->preface, &mo, &is->preface_html, &is->preface_text, d->err) < 0 ||
	    render_extra(d, is->colophon, &co, &is->colophon_html, NULL, d->err) < 0)
		goto out;
	r = 0;
out:
	free(base);
	return r;
}

bool period_passed(const char *period, time_t now)
{
	/* The year is the first 4-digit number, the month the last number from 1
	 * to 12 after it ("2022年1 - 3月", "Jan–Mar 2022" has none: the year's
	 * end); the period is over after that month. */
	long year = 0, month = 12;
	for (const char *p = period; *p;) {
		if (!isdigit((unsigned char)*p)) {
			p++;
			continue;
		}
		char *e;
		long v = strtol(p, &e, 10);
		if (e - p == 4 && year == 0)
			year = v;
		else if (year && v >= 1 && v <= 12 && e - p <= 2)
			month = v;
		p = e;
	}
	if (year < 1970 || year > 9999)
		return false;
	struct tm end = {.tm_year = (int)(month == 12 ? year + 1 : year) - 1900,
	                 .tm_mon = (int)(month == 12 ? 0 : month),
	                 .tm_mday = 1};
	return now >= timegm(&end);
}

struct issue_opts issue_opts_of(const struct conf *c)
{
	return (struct issue_opts){(size_t)c->max_issue_bytes, c->site.title, c->site.language,
	                           c->site.base_url};
}

static int parse(const char *path, const char *data, size_t len, const struct issue_opts *o,
                 const char *folder, struct issue **out, struct err *err)
{
	struct doc d = {.path = path, .err = err, .base_url = o->base_url, .folder = folder};
	struct issue *is = xcalloc(1, sizeof *is);
	struct heading *h = NULL;
	struct entry *e = NULL;
	size_t nh = 0, ne = 0;
	int r = -1;

	*out = NULL;
	d.is = is;
	is->path = xstrdup(path);
	is->period = xstrdup("");
	is->language = xstrdup(o->language && *o->language ? o->language : "zh-CN");
	unsigned char h256[32];
	gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, h256);
	for (int i = 0; i < 32; i++)
		snprintf(is->hash + 2 * i, 3, "%02x", h256[i]);

	if (check_bytes(path, data, len, o, err) < 0)
		goto out;
	d.text = normalise(data, len);
	split_lines(&d);
	if (next_nonblank(&d, 0, d.nlines) == d.nlines) {
		err_at(err, ERR_INPUT, path, 1,
		       "the file is empty; an issue needs at least a title line");
		goto out;
	}
	d.colophon_first = d.nlines;
	d.preface_end = d.nlines;
	if (front_matter(&d) < 0)
		goto out;

	nh = find_headings(&d, &h);
	size_t toc_first = 0, toc_end = 0;
	if (nh > 0) {
		is->mode = ISSUE_HEADINGS;
		if (split_headings(&d, h, nh) < 0)
			goto out;
		masthead(&d, d.preface_first, d.preface_end);
	} else if ((ne = find_toc(&d, &e, &toc_first, &toc_end)) > 0) {
		is->mode = ISSUE_TOC;
		if (split_toc(&d, e, ne, toc_first, toc_end) < 0)
			goto out;
	} else {
		is->mode = ISSUE_SINGLE;
		if (!d.fm_title || !d.fm_number)
			masthead(&d, d.body, d.nlines);
		if (split_single(&d) < 0)
			goto out;
	}

	if (!d.fm_number) {
		is->number = number_from_path(path);
		if (is->number <= 0) {
			err_at(err, ERR_INPUT, path, 1,
			       "no issue number: add a front matter line 'number: 61', a masthead "
			       "line such as 'NO.61', or put the number in the file name");
			goto out;
		}
	}
	if (is->title == NULL)
		is->title = xasprintf("%s NO.%d",
		                      o->site_title && *o->site_title ? o->site_title : "Matrix",
		                      is->number);
	if (build_articles(&d) < 0)
		goto out;
	if (!is->date && d.period_line && period_passed(is->period, time(NULL)))
		add_warning(is, xasprintf("%s:%d: the period \"%s\" is over and the issue has no "
		                          "date: it will be dated when matrixd picks it up; add "
		                          "'date: YYYY-MM-DD' to the front matter",
		                          path, d.period_line, is->period));
	r = 0;
out:
	for (size_t i = 0; i < nh; i++)
		free(h[i].text);
	free(h);
	entries_free(e, ne);
	for (size_t i = 0; i < d.nspans; i++) {
		free(d.spans[i].title);
		free(d.spans[i].section);
	}
	free(d.spans);
	free(d.lines);
	free(d.text);
	if (r == 0)
		*out = is;
	else
		issue_free(is);
	return r;
}

int issue_parse(const char *path, const char *data, size_t len, const struct issue_opts *o,
                struct issue **out, struct err *err)
{
	return parse(path, data, len, o, NULL, out, err);
}

/* A folder's image that is a link, a FIFO or a device is the issue's
 * error, like a parse error: refused now, not found out when publishing.
 * A missing one is left out of mails and pages, and warned about. */
static int check_assets(const struct issue *is, const char *file, struct err *err)
{
	for (size_t i = 0; i < is->nassets; i++) {
		struct stat st;
		struct err e;
		int fd = fs_open_nofollow(is->folder, is->assets[i], 0, &st, &e);
		if (fd >= 0) {
			close(fd);
		} else if (e.kind == ERR_INPUT) {
			err_set(err, ERR_INPUT, "%s: image %s: %s", file, is->assets[i], e.msg);
			return -1;
		}
	}
	return 0;
}

/* An image the text references but the issue does not hold is left out of
 * every mail and page (md_opts.have_image): say so, at the line referencing
 * it. */
static void warn_missing_assets(struct issue *is, const char *file, const char *text)
{
	for (size_t i = 0; i < is->nassets; i++) {
		struct stat st;
		char *full = is->folder ? xasprintf("%s/%s", is->folder, is->assets[i]) : NULL;
		bool ok = full && lstat(full, &st) == 0 && S_ISREG(st.st_mode);
		free(full);
		if (ok)
			continue;
		char *ref = xasprintf("(%s", is->assets[i]);
		const char *at = strstr(text, ref);
		free(ref);
		int no = at ? line_of(text, (size_t)(at - text)) : 1;
		add_warning(is,
		            xasprintf(is->folder
		                          ? "%s:%d: the image '%s' is not in the issue folder: "
		                            "mails and pages leave it out (a figure caption in "
		                            "its text stays); add the file or remove the "
		                            "reference"
		                          : "%s:%d: the image '%s' cannot be published with a "
		                            "single-file issue, so mails and pages leave it out; "
		                            "make the issue a folder holding issue.md and the "
		                            "image",
		                      file, no, is->assets[i]));
	}
}

int issue_load(const char *path, const struct issue_opts *o, struct issue **out, struct err *err)
{
	struct stat st;
	char *file = NULL;
	struct buf b;
	size_t max = o->max_bytes ? o->max_bytes : BUF_NOLIMIT;
	int r = -1;
	/* An editor may plant a link (to state_dir/secret) or a FIFO: neither
	 * the issue, nor its folder, nor issue.md in it is followed or opened
	 * unless it is the thing itself (fsutil.h). */
	int fd = fs_open_nofollow(path, NULL, FS_DIR_OK, &st, err);
	if (fd < 0)
		return -1;
	bool folder = S_ISDIR(st.st_mode);
	if (folder) {
		close(fd);
		fd = fs_open_nofollow(path, "issue.md", 0, &st, err);
		if (fd < 0)
			return -1;
		size_t n = strlen(path);
		while (n > 1 && path[n - 1] == '/')
			n--;
		file = xasprintf("%.*s/issue.md", (int)n, path);
	} else {
		file = xstrdup(path);
	}
	buf_init(&b, BUF_NOLIMIT);
	r = fs_read_fd(fd, file, max, &b, err);
	close(fd);
	if (r < 0 && err && err->kind == ERR_INPUT && strstr(err->msg, "limit"))
		err_at(err, ERR_INPUT, file, 1,
		       "the file is over max_issue_bytes (%zu); split the issue or raise "
		       "max_issue_bytes",
		       o->max_bytes);
	char *dir = folder ? xstrndup(path, strlen(file) - strlen("/issue.md")) : NULL;
	if (r == 0)
		r = parse(file, buf_str(&b), b.len, o, dir, out, err);
	if (r == 0 && folder) {
		(*out)->folder = dir;
		dir = NULL;
		r = check_assets(*out, file, err);
		if (r < 0) {
			issue_free(*out);
			*out = NULL;
		}
	}
	if (r == 0)
		warn_missing_assets(*out, file, buf_str(&b));
	free(dir);
	buf_free(&b);
	free(file);
	return r;
}

void issue_free(struct issue *is)
{
	if (is == NULL)
		return;
	for (size_t i = 0; i < is->narticles; i++) {
		struct article *a = &is->articles[i];
		free(a->section);
		free(a->title);
		free(a->slug);
		free(a->markdown);
		free(a->html);
		free(a->text);
		free(a->summary);
	}
	free(is->articles);
	for (size_t i = 0; i < is->nlists; i++)
		free(is->lists[i]);
	free(is->lists);
	free(is->path);
	free(is->title);
	free(is->period);
	free(is->language);
	free(is->preface);
	free(is->preface_html);
	free(is->preface_text);
	free(is->colophon);
	free(is->colophon_html);
	free(is->folder);
	for (size_t i = 0; i < is->nassets; i++)
		free(is->assets[i]);
	free(is->assets);
	for (size_t i = 0; i < is->nwarnings; i++)
		free(is->warnings[i]);
	free(is->warnings);
	free(is);
}

char *issue_lists_csv(const struct issue *is)
{
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	for (size_t i = 0; i < is->nlists; i++)
		buf_printf(&b, "%s%s", i ? "," : "", is->lists[i]);
	return buf_detach(&b);
}

struct json_object *issue_to_json(const struct issue *is)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "title", json_object_new_string(is->title));
	json_object_object_add(o, "number", json_object_new_int(is->number));
	json_object_object_add(o, "period", json_object_new_string(is->period));
	json_object_object_add(o, "language", json_object_new_string(is->language));
	json_object_object_add(o, "status",
	                       json_object_new_string(is->is_draft ? "draft" : "publish"));
	if (is->send_at) { /* only then: an unscheduled issue keeps the documented shape */
		char when[48];
		issue_format_time(is->send_at, when, sizeof when);
		json_object_object_add(o, "send_at", json_object_new_string(when));
	}
	struct json_object *arr = json_object_new_array();
	for (size_t i = 0; i < is->narticles; i++) {
		const struct article *a = &is->articles[i];
		struct json_object *j = json_object_new_object();
		json_object_object_add(j, "index", json_object_new_int(a->index));
		json_object_object_add(j, "section", json_object_new_string(a->section));
		json_object_object_add(j, "title", json_object_new_string(a->title));
		json_object_object_add(j, "slug", json_object_new_string(a->slug));
		json_object_object_add(j, "summary", json_object_new_string(a->summary));
		json_object_object_add(j, "markdown", json_object_new_string(a->markdown));
		json_object_object_add(j, "text", json_object_new_string(a->text));
		json_object_object_add(j, "html", json_object_new_string(a->html));
		json_object_array_add(arr, j);
	}
	json_object_object_add(o, "articles", arr);
	json_object_object_add(o, "colophon", json_object_new_string(is->colophon));
	/* Not in matrixctl(8)'s shape: only when there is one, so nothing is hidden. */
	if (is->preface && is->preface[0])
		json_object_object_add(o, "preface", json_object_new_string(is->preface));
	return o;
}
