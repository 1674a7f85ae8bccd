/*
 * Bounce, complaint and unsubscribe-mail parser (see bounce.h). libetpan
 * splits the MIME tree and the header fields (docs/libraries.md, libetpan); a
 * message/delivery-status part is read as RFC 3464 status groups, a
 * message/feedback-report part as RFC 5965 fields. Everything else falls to
 * text heuristics written after the formats in the sisimai corpus
 * (tests/data/bounces-real): the recipients are the addresses that open a
 * line of the notice before the returned message (Exim, qmail, Postfix,
 * Gmail put them there), their SMTP reply and RFC 3463 codes the ones in the
 * lines that follow. The input is copied into a NUL-terminated buffer that
 * outlives the parse tree, because the tree points into it.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <libetpan/libetpan.h>

#include "bounce.h"
#include "buf.h"
#include "htmltext.h"
#include "utf8.h"
#include "xmalloc.h"

enum {
	MAX_PARTS = 256,         /* MIME nodes visited */
	MAX_DEPTH = 12,          /* multipart nesting descended into */
	MAX_EMBEDDED = 4,        /* message/rfc822 parts searched for a nested report */
	MAX_TYPE_LINES = 200,    /* Content-Type lines beyond which libetpan is not asked */
	MAX_NOTICE = 256 * 1024, /* decoded notice text considered */
	MAX_DIAG = 1000,         /* bytes of a diagnostic */
	MAX_ADDR = 320,          /* bytes of an address (RFC 5321 §4.5.3.1: 64 + 1 + 255) */
	MAX_CANDIDATES = 256,    /* addresses looked at in a notice */
	MAX_GROUPS = 512,        /* status groups read from one part */
	MAX_OWN = 16,            /* addresses of the bounce's own From, To … */
	MAX_BLOCK = 16 * 1024,   /* text about one recipient in a notice */
};

struct rcpt_extra {
	int cls; /* 5, 4, 2 or 0 (unknown) */
};

struct cand {
	size_t addr, addr_len; /* in the notice */
	size_t line;           /* start of its line */
};

struct ctx {
	const struct bounce_opts *o;
	struct bounce *b;
	struct rcpt_extra extra[BOUNCE_MAX_RCPTS];
	struct mailimf_fields *top; /* the message's own header fields */
	bool dsn;                   /* a delivery-status part was read */
	int dsn_ok;                 /* recipients reported delivered/relayed/expanded */
	bool arf;
	char *arf_type;
	char *returned_to; /* To of the returned original */
	char *returned_rp; /* Return-Path of the returned original */
	char *jmrp_rcpt;   /* X-HmXmrOriginalRecipient of the returned original */
	bool broken_mime;  /* the parts cover little of the body: boundary mismatch */
	int nparts;
	struct mailmime *embedded[MAX_EMBEDDED];
	int nembedded;
	bool reports_only;  /* inside an embedded message: look for reports only */
	struct buf notice;  /* decoded text/plain parts */
	struct buf html;    /* decoded text/html parts, used when no text/plain */
	char *own[MAX_OWN]; /* see excluded() */
	bool own_is_to[MAX_OWN];
	int nown;
};

/* --- small string helpers ------------------------------------------------ */

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static bool is_alnum(int c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_space(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool ci_starts(const char *s, const char *end, const char *p)
{
	for (; *p; s++, p++)
		if (s >= end || lower((unsigned char)*s) != lower((unsigned char)*p))
			return false;
	return true;
}

/* Case-insensitive search of a lowercase needle; for header values and lines. */
static const char *ci_find(const char *h, const char *end, const char *needle)
{
	size_t n = strlen(needle);
	for (const char *p = h; p + n <= end; p++)
		if (lower((unsigned char)*p) == needle[0] && ci_starts(p, end, needle))
			return p;
	return NULL;
}

static bool ci_has(const char *s, const char *needle)
{
	return s && ci_find(s, s + strlen(s), needle);
}

static bool ci_has_any(const char *s, const char *const *needles)
{
	for (; *needles; needles++)
		if (ci_has(s, *needles))
			return true;
	return false;
}

static const char *line_end(const char *p, const char *end)
{
	const char *e = memchr(p, '\n', (size_t)(end - p));
	return e ? e : end;
}

static const char *next_line(const char *p, const char *end)
{
	const char *e = line_end(p, end);
	return e < end ? e + 1 : end;
}

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p;
}

static bool blank_line(const char *p, const char *end)
{
	const char *e = line_end(p, end);
	for (; p < e; p++)
		if (!is_space((unsigned char)*p))
			return false;
	return true;
}

/*
 * One line of valid UTF-8 from a header value or a stretch of text:
 * whitespace runs (folding, line ends) become one space, RFC 2047 words are
 * decoded, control characters go, and the result is cut to max bytes at a
 * code point boundary.
 */
static char *clean_text(const char *s, size_t n, size_t max, bool decode)
{
	struct buf b, out;
	char *decoded = NULL;
	buf_init(&b, BUF_NOLIMIT);
	buf_init(&out, BUF_NOLIMIT);
	if (n > 4 * max)
		n = 4 * max;
	bool sp = false;
	for (size_t i = 0; i < n; i++) {
		if (is_space((unsigned char)s[i])) {
			sp = b.len > 0;
			continue;
		}
		if (sp)
			buf_addc(&b, ' ');
		sp = false;
		buf_addc(&b, s[i]);
	}
	const char *src = buf_str(&b);
	size_t srclen = b.len;
	if (decode && memmem(src, srclen, "=?", 2)) {
		size_t idx = 0;
		if (mailmime_encoded_phrase_parse("utf-8", src, srclen, &idx, "utf-8", &decoded) ==
		        MAILIMF_NO_ERROR &&
		    decoded) {
			src = decoded;
			srclen = strlen(decoded);
		}
	}
	utf8_clean(&out, src, srclen, 0);
	if (out.len > max) {
		size_t cut = max;
		while (cut > 0 && (out.data[cut] & 0xc0) == 0x80)
			cut--;
		buf_truncate(&out, cut);
	}
	while (out.len > 0 && out.data[out.len - 1] == ' ')
		buf_truncate(&out, out.len - 1);
	free(decoded);
	buf_free(&b);
	return buf_detach(&out);
}

static char *clean_line(const char *s, size_t n, size_t max)
{
	return clean_text(s, n, max, true);
}

/* --- addresses and codes in free text ------------------------------------ */

static bool is_atext(int c)
{
	return is_alnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

static bool is_dchar(int c)
{
	return is_alnum(c) || c == '-' || c == '.' || c == '_';
}

/*
 * Finds the next mailbox address in [p, end). Quoted local parts and address
 * literals are not recognised: bounces hardly ever carry them. With strict,
 * the domain must contain a dot (free text is full of "id@host"-like
 * words); a DSN field may name "user@localhost".
 */
static bool find_addr(const char *p, const char *end, bool strict, const char **as, const char **ae)
{
	while (p < end) {
		const char *at = memchr(p, '@', (size_t)(end - p));
		if (!at)
			return false;
		const char *s = at, *e = at + 1;
		/* '/' and '|' are atext but in bounces they end paths and pipes
		 * ("/home/u/.forward/user@example.org") */
		while (s > p && at - s < 128 && (is_atext((unsigned char)s[-1]) || s[-1] == '.') &&
		       (!strict || (s[-1] != '/' && s[-1] != '|')))
			s--;
		while (s < at && *s == '.')
			s++;
		while (e < end && e - at < 256 && is_dchar((unsigned char)*e))
			e++;
		while (e > at + 1 && (e[-1] == '.' || e[-1] == '-' || e[-1] == '_'))
			e--;
		bool dot = e > at + 1 && memchr(at + 1, '.', (size_t)(e - at - 1));
		if (s < at && e > at + 1 && is_alnum((unsigned char)at[1]) && (!strict || dot) &&
		    (size_t)(e - s) <= MAX_ADDR) {
			*as = s;
			*ae = e;
			return true;
		}
		p = at + 1;
	}
	return false;
}

/* An RFC 3463 code "c.s.d" (class 2, 4 or 5; 1-3 digits each) standing alone. */
static const char *find_status(const char *p, const char *end, size_t *n)
{
	for (const char *q = p; q + 5 <= end; q++) {
		if (*q != '2' && *q != '4' && *q != '5')
			continue;
		if (q > p && (is_alnum((unsigned char)q[-1]) || q[-1] == '.' || q[-1] == '-'))
			continue;
		const char *r = q + 1;
		if (*r != '.')
			continue;
		int part;
		for (part = 0, r++; part < 2; part++) {
			int d = 0;
			while (r < end && is_digit((unsigned char)*r) && d < 4)
				r++, d++;
			if (d == 0 || d > 3)
				break;
			if (part == 0) {
				if (r >= end || *r != '.')
					break;
				r++;
			}
		}
		if (part < 2)
			continue;
		if (r < end && (is_alnum((unsigned char)*r) ||
		                (*r == '.' && r + 1 < end && is_digit((unsigned char)r[1]))))
			continue;
		*n = (size_t)(r - q);
		return q;
	}
	return NULL;
}

/*
 * An SMTP reply code 4yz/5yz (RFC 5321 §4.2) standing alone and followed by
 * a space or hyphen and then text, as in "said: 550 5.1.1 <…>".
 */
static const char *find_smtp(const char *p, const char *end)
{
	for (const char *q = p; q + 4 < end; q++) {
		if ((*q != '4' && *q != '5') || q[1] < '0' || q[1] > '5' ||
		    !is_digit((unsigned char)q[2]))
			continue;
		if (q > p &&
		    (is_alnum((unsigned char)q[-1]) || (q[-1] && strchr(".:-/[#+=_", q[-1]))))
			continue;
		if (q[3] != ' ' && q[3] != '-')
			continue;
		int c = (unsigned char)q[4];
		if (is_alnum(c) || c == '<' || c == '(' || c == '"' || c == '#' || c == '[' ||
		    c == '\'')
			return q;
	}
	return NULL;
}

static int status_class(const char *s)
{
	return s && (s[0] == '2' || s[0] == '4' || s[0] == '5') && s[1] == '.' ? s[0] - '0' : 0;
}

/* --- header fields ------------------------------------------------------- */

/* Every field of a header block as a name/value pair (values still folded). */
static struct mailimf_fields *parse_fields(const char *s, size_t n, size_t *idx)
{
	struct mailimf_fields *f = NULL;
	size_t i = idx ? *idx : 0;
	if (mailimf_optional_fields_parse(s, n, &i, &f) != MAILIMF_NO_ERROR)
		return NULL;
	if (idx)
		*idx = i;
	return f;
}

/* The nth (0-based) value of a field, NULL when absent; names case-insensitive. */
static const char *field(const struct mailimf_fields *f, const char *name, int nth)
{
	if (!f)
		return NULL;
	for (clistiter *it = clist_begin(f->fld_list); it; it = clist_next(it)) {
		struct mailimf_field *fl = clist_content(it);
		if (fl->fld_type != MAILIMF_FIELD_OPTIONAL_FIELD)
			continue;
		struct mailimf_optional_field *o = fl->fld_data.fld_optional_field;
		if (strcasecmp(o->fld_name, name) == 0 && nth-- == 0)
			return o->fld_value;
	}
	return NULL;
}

char *bounce_token_in(const char *s, size_t n, const char *prefix)
{
	size_t pl = prefix ? strlen(prefix) : 0;
	if (!s || pl == 0)
		return NULL;
	const char *end = s + n;
	for (const char *p = s; p + pl < end; p++) {
		if (!ci_starts(p, end, prefix))
			continue;
		/* Only at the start of a local part, so "xbounces+1@" is not ours. */
		if (p > s && (is_atext((unsigned char)p[-1]) || p[-1] == '.'))
			continue;
		const char *t = p + pl, *e = t;
		while (e < end && e - t < 96 &&
		       (is_alnum((unsigned char)*e) || (*e && strchr("._=-", *e))))
			e++;
		if (e > t && e - t <= 95 && e < end && *e == '@')
			return xstrndup(t, (size_t)(e - t));
	}
	return NULL;
}

static char *token_in_field(const struct mailimf_fields *f, const char *name, const char *prefix)
{
	int seen = 0;
	if (!f)
		return NULL;
	for (clistiter *it = clist_begin(f->fld_list); it && seen < 16; it = clist_next(it)) {
		struct mailimf_field *fl = clist_content(it);
		if (fl->fld_type != MAILIMF_FIELD_OPTIONAL_FIELD ||
		    strcasecmp(fl->fld_data.fld_optional_field->fld_name, name) != 0)
			continue;
		seen++;
		const char *v = fl->fld_data.fld_optional_field->fld_value;
		char *t = bounce_token_in(v, strlen(v), prefix);
		if (t)
			return t;
	}
	return NULL;
}

static char *token_in_recipients(const struct mailimf_fields *f, const char *prefix)
{
	static const char *const names[] = {"To",
	                                    "Delivered-To",
	                                    "X-Original-To",
	                                    "Envelope-To",
	                                    "Original-Recipient",
	                                    "X-Envelope-To",
	                                    "Cc",
	                                    NULL};
	if (!prefix || !*prefix)
		return NULL;
	for (const char *const *n = names; *n; n++) {
		char *t = token_in_field(f, *n, prefix);
		if (t)
			return t;
	}
	return NULL;
}

static char *msgid_value(const char *v)
{
	const char *end = v + strlen(v);
	const char *s = memchr(v, '<', (size_t)(end - v));
	const char *e;
	if (s) {
		s++;
		e = memchr(s, '>', (size_t)(end - s));
		if (!e)
			e = end;
	} else {
		s = skip_ws(v, end);
		e = s;
		while (e < end && !is_space((unsigned char)*e))
			e++;
	}
	if (e <= s)
		return NULL;
	char *id = clean_line(s, (size_t)(e - s), 998);
	if (!*id || strchr(id, ' ')) {
		free(id);
		return NULL;
	}
	return id;
}

/* Headers of the returned original (RFC 3464 §2 third part, RFC 5965 §2). */
static void returned_headers(struct ctx *c, const char *s, size_t n)
{
	const char *end = s + n, *p = s;
	while (p < end && blank_line(p, end) && p - s < 1024)
		p = next_line(p, end);
	size_t idx = (size_t)(p - s);
	struct mailimf_fields *f = parse_fields(s, n, &idx);
	const char *v;
	if (!f)
		return;
	/* Microsoft's JMRP complaints (pre-ARF) name the complainer here. */
	if (!c->jmrp_rcpt && (v = field(f, "X-HmXmrOriginalRecipient", 0)))
		c->jmrp_rcpt = xstrdup(v);
	if (!c->b->message_id && (v = field(f, "Message-ID", 0)))
		c->b->message_id = msgid_value(v);
	if (!c->returned_to && (v = field(f, "To", 0)))
		c->returned_to = xstrdup(v);
	if (!c->returned_rp && (v = field(f, "Return-Path", 0)))
		c->returned_rp = xstrdup(v);
	mailimf_fields_free(f);
}

/* --- recipients ------------------------------------------------------------ */

static bool same_addr(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

/* Adds a recipient or merges it into the one with the same address (the
 * worse class wins); takes the four strings, NULL meaning "". */
static void add_rcpt(struct ctx *c, char *addr, char *status, char *action, char *diag, int cls)
{
	struct bounce *b = c->b;
	if (!status)
		status = xstrdup("");
	if (!action)
		action = xstrdup("");
	if (!diag)
		diag = xstrdup("");
	for (size_t i = 0; i < b->nrcpts; i++) {
		struct bounce_rcpt *r = &b->rcpts[i];
		if (!same_addr(r->address, addr))
			continue;
		bool better = cls > c->extra[i].cls;
		if (better || !*r->status)
			free(r->status), r->status = status, status = NULL;
		if (better || !*r->action)
			free(r->action), r->action = action, action = NULL;
		if (better || !*r->diagnostic)
			free(r->diagnostic), r->diagnostic = diag, diag = NULL;
		if (better)
			c->extra[i].cls = cls;
		free(addr), free(status), free(action), free(diag);
		return;
	}
	if (b->nrcpts == BOUNCE_MAX_RCPTS) {
		free(addr), free(status), free(action), free(diag);
		return;
	}
	b->rcpts = xreallocarray(b->rcpts, b->nrcpts + 1, sizeof *b->rcpts);
	b->rcpts[b->nrcpts] = (struct bounce_rcpt){addr, status, action, diag};
	c->extra[b->nrcpts].cls = cls;
	b->nrcpts++;
}

/* The address in a DSN recipient field ("rfc822; <user@example.org>"). */
static char *field_addr(const char *v)
{
	const char *end = v + strlen(v), *as, *ae;
	const char *semi = memchr(v, ';', (size_t)(end - v));
	const char *p = semi ? semi + 1 : v;
	/* Taken as written when it is one word with an "@" (a quoted local
	 * part, an RFC 6533 UTF-8 one); else the first address in it. */
	const char *q = p, *e = end;
	while (q < e && (is_space((unsigned char)*q) || *q == '<'))
		q++;
	while (e > q && (is_space((unsigned char)e[-1]) || e[-1] == '>'))
		e--;
	bool word = e > q && (size_t)(e - q) <= MAX_ADDR && memchr(q, '@', (size_t)(e - q));
	for (const char *r = q; word && r < e; r++)
		if (is_space((unsigned char)*r) || *r == '<' || *r == '>' || *r == ',' || *r == ';')
			word = *q == '"' && r < (const char *)memrchr(q, '"', (size_t)(e - q));
	if (word && e[-1] != '@' && *q != '@')
		return clean_text(q, (size_t)(e - q), MAX_ADDR, false);
	if (!find_addr(p, end, false, &as, &ae) && !find_addr(v, end, false, &as, &ae))
		return NULL;
	return clean_text(as, (size_t)(ae - as), MAX_ADDR, false);
}

/* "5.1.1" from a Status value such as "5.1.1 (user unknown)" or "550". */
static char *status_value(const char *v)
{
	const char *end = v + strlen(v), *p = skip_ws(v, end);
	size_t n;
	const char *s = find_status(p, end, &n);
	if (s && s == p)
		return xstrndup(s, n);
	if (end - p >= 3 && (p[0] == '4' || p[0] == '5') && is_digit((unsigned char)p[1]) &&
	    is_digit((unsigned char)p[2]) && (end - p == 3 || !is_digit((unsigned char)p[3])))
		return xasprintf("%c.0.0", p[0]);
	return NULL;
}

/* The codes a diagnostic text carries: an RFC 3463 status, else one made of
 * the SMTP reply class (RFC 3463 §3.1 "X.0.0 Other undefined status"). */
static char *status_in_text(const char *p, const char *end)
{
	size_t n;
	const char *s = find_status(p, end, &n);
	if (s && s[0] != '2')
		return xstrndup(s, n);
	const char *q = find_smtp(p, end);
	if (q)
		return xasprintf("%c.0.0", q[0]);
	return NULL;
}

/*
 * A multi-line SMTP reply repeats its code on every line ("550-5.1.1 …",
 * RFC 5321 §4.2.1); once the lines are joined the repeats are noise. Keeps
 * the first "550 5.1.1" and drops the later ones, in place.
 */
static char *squash_reply(char *d)
{
	size_t n = strlen(d), sl = 0;
	if (n < 5 || !is_digit((unsigned char)d[0]) || !is_digit((unsigned char)d[1]) ||
	    !is_digit((unsigned char)d[2]) || (d[3] != ' ' && d[3] != '-'))
		return d;
	const char *st = find_status(d + 4, d + n, &sl);
	if (st != d + 4)
		sl = 0;
	char code[4] = {d[0], d[1], d[2], '\0'};
	d[3] = ' ';
	size_t r = 0, w = 0;
	while (r < n) {
		if (r > 0 && d[r - 1] == ' ' && r + 4 <= n && memcmp(d + r, code, 3) == 0 &&
		    (d[r + 3] == ' ' || d[r + 3] == '-') &&
		    (sl == 0 || (r + 4 + sl <= n && memcmp(d + r + 4, st, sl) == 0 &&
		                 (r + 4 + sl == n || d[r + 4 + sl] == ' ')))) {
			r += 4 + sl;
			while (r < n && d[r] == ' ')
				r++;
			continue;
		}
		d[w++] = d[r++];
	}
	while (w > 0 && d[w - 1] == ' ')
		w--;
	d[w] = '\0';
	return d;
}

/* Drops a "smtp;" or "X-Postfix;" diagnostic-type (RFC 3464 §2.3.6). */
static char *diag_value(const char *v)
{
	const char *end = v + strlen(v), *p = skip_ws(v, end);
	const char *semi = memchr(p, ';', (size_t)(end - p));
	if (semi && semi - p < 32) {
		const char *q = p;
		while (q < semi && !is_space((unsigned char)*q))
			q++;
		if (q == semi)
			p = semi + 1;
	}
	return squash_reply(clean_line(p, (size_t)(end - p), MAX_DIAG));
}

static char *action_value(const char *v)
{
	const char *end = v + strlen(v), *p = skip_ws(v, end), *e = p;
	while (e < end && (is_alnum((unsigned char)*e) || *e == '-'))
		e++;
	char *a = xstrndup(p, (size_t)(e - p));
	for (char *q = a; *q; q++)
		*q = (char)lower((unsigned char)*q);
	return a;
}

struct fv {
	const char *name, *value;
};

static const char *fv_get(const struct fv *f, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(f[i].name, name) == 0)
			return f[i].value;
	return NULL;
}

/* One RFC 3464 §2.3 per-recipient group, n fields. */
static void dsn_group(struct ctx *c, const struct fv *f, size_t n)
{
	const char *final = fv_get(f, n, "Final-Recipient");
	const char *orig = fv_get(f, n, "Original-Recipient");
	const char *v;
	char *addr = NULL, *status = NULL, *action = NULL, *diag = NULL;
	if (!final && !orig)
		return;
	if (final)
		addr = field_addr(final);
	/* "rfc822;@relay:user@host" (a source route) or a bare host name: the
	 * Original-Recipient is the address that was submitted. */
	const char *at = addr ? strchr(addr, '@') : NULL;
	if (addr && orig && (addr[0] == '@' || !strchr(at ? at : addr, '.'))) {
		char *o2 = field_addr(orig);
		if (o2 && o2[0] != '@' && strchr(o2, '.')) {
			free(addr);
			addr = o2;
		} else {
			free(o2);
		}
	}
	if (!addr && orig)
		addr = field_addr(orig);
	if (!addr)
		return;
	diag = (v = fv_get(f, n, "Diagnostic-Code")) ? diag_value(v) : xstrdup("");
	action = (v = fv_get(f, n, "Action")) ? action_value(v) : xstrdup("");
	if ((v = fv_get(f, n, "Status")))
		status = status_value(v);
	char *from_diag = *diag ? status_in_text(diag, diag + strlen(diag)) : NULL;
	/* A vague "5.0.0" next to a precise code in the diagnostic: the
	 * diagnostic is the remote server's own word, as sisimai reads it. */
	if (status && from_diag && status[0] == from_diag[0] && strcmp(status + 1, ".0.0") == 0 &&
	    strcmp(from_diag + 1, ".0.0") != 0) {
		free(status);
		status = from_diag;
		from_diag = NULL;
	}
	if (!status)
		status = from_diag, from_diag = NULL;
	free(from_diag);
	int cls = status_class(status);
	if (strcmp(action, "delivered") == 0 || strcmp(action, "relayed") == 0 ||
	    strcmp(action, "expanded") == 0 || (cls == 2 && strcmp(action, "failed") != 0)) {
		c->dsn_ok++;
		free(addr), free(status), free(action), free(diag);
		return;
	}
	/* No usable status: a group in a delivery report that does not say
	 * "delivered" reports a failure. */
	if (cls == 0 || cls == 2)
		cls = strcmp(action, "delayed") == 0 ? 4 : 5;
	/* "failed" means the reporting MTA gave up (RFC 3464 §2.3.3): Postfix
	 * and Sendmail say 4.4.1 or 4.4.7 when mail expired in their queue.
	 * The status is kept as reported; the verdict is a failure. */
	if (cls == 4 && strcmp(action, "failed") == 0)
		cls = 5;
	if (!*action) {
		free(action);
		action = xstrdup(cls == 4 ? "delayed" : "failed");
	}
	if (!status)
		status = xstrdup("");
	add_rcpt(c, addr, status, action, diag, cls);
}

/*
 * Hands the recipient groups in f to dsn_group(). Some MTAs (AOL) run the
 * groups together without the blank line: a second Final-Recipient (or
 * Original-Recipient) starts the next one.
 */
static int split_groups(struct ctx *c, const struct mailimf_fields *f)
{
	size_t cap = (size_t)clist_count(f->fld_list), n = 0, start = 0;
	if (cap > 4096)
		cap = 4096;
	struct fv *fv = xcalloc(cap + 1, sizeof *fv);
	int found = 0;
	bool final = false, orig = false;
	for (clistiter *it = clist_begin(f->fld_list); it && n < cap; it = clist_next(it)) {
		struct mailimf_field *fl = clist_content(it);
		if (fl->fld_type != MAILIMF_FIELD_OPTIONAL_FIELD)
			continue;
		fv[n].name = fl->fld_data.fld_optional_field->fld_name;
		fv[n].value = fl->fld_data.fld_optional_field->fld_value;
		n++;
	}
	for (size_t i = 0; i <= n; i++) {
		bool is_final = i < n && strcasecmp(fv[i].name, "Final-Recipient") == 0;
		bool is_orig = i < n && strcasecmp(fv[i].name, "Original-Recipient") == 0;
		if (i == n || (is_final && final) || (is_orig && orig)) {
			if (final || orig) {
				found++;
				dsn_group(c, fv + start, i - start);
			}
			start = i;
			final = orig = false;
		}
		final |= is_final;
		orig |= is_orig;
	}
	free(fv);
	return found;
}

static bool is_dsn_field_line(const char *p, const char *end)
{
	static const char *const names[] = {"reporting-mta:",
	                                    "final-recipient:",
	                                    "original-recipient:",
	                                    "action:",
	                                    "status:",
	                                    "diagnostic-code:",
	                                    "arrival-date:",
	                                    "received-from-mta:",
	                                    "remote-mta:",
	                                    "last-attempt-date:",
	                                    "x-postfix-queue-id:",
	                                    "x-actual-recipient:",
	                                    NULL};
	for (const char *const *n = names; *n; n++)
		if (ci_starts(p, end, *n))
			return true;
	return false;
}

/*
 * Walks the blocks of header-like fields in s (blank lines between them;
 * with in_text, lines that are no DSN field are skipped too), calling fn on
 * each parsed block, at most MAX_GROUPS of them. Returns the sum of fn's
 * results.
 */
static int each_group(struct ctx *c, const char *s, size_t n, bool in_text,
                      int (*fn)(struct ctx *c, const struct mailimf_fields *f))
{
	const char *end = s + n, *p = s;
	int groups = 0, found = 0;
	while (p < end && groups < MAX_GROUPS) {
		if (blank_line(p, end) || (in_text && !is_dsn_field_line(p, end))) {
			p = next_line(p, end);
			continue;
		}
		size_t idx = (size_t)(p - s);
		struct mailimf_fields *f = parse_fields(s, n, &idx);
		if (!f || idx <= (size_t)(p - s)) {
			if (f)
				mailimf_fields_free(f);
			p = next_line(p, end);
			continue;
		}
		groups++;
		found += fn(c, f);
		mailimf_fields_free(f);
		p = s + idx;
	}
	return found;
}

/*
 * Reads status groups from s: mailimf_optional_fields_parse() stops at the
 * blank line that ends a group (RFC 3464 §2.1), so it is called once per
 * group. Lines that are no field are skipped, so groups quoted inside text
 * (some MTAs put them in text/plain) are found too. Returns the number of
 * recipient groups.
 */
static int dsn_groups(struct ctx *c, const char *s, size_t n, bool in_text)
{
	return each_group(c, s, n, in_text, split_groups);
}

static int arf_group(struct ctx *c, const struct mailimf_fields *f)
{
	const char *v;
	if (!c->arf_type && (v = field(f, "Feedback-Type", 0)))
		c->arf_type = clean_line(v, strlen(v), 64);
	static const char *const names[] = {"Original-Rcpt-To", "Removal-Recipient", NULL};
	for (const char *const *nm = names; *nm; nm++) {
		for (int i = 0; i < BOUNCE_MAX_RCPTS && (v = field(f, *nm, i)); i++) {
			char *a = field_addr(v);
			if (a)
				add_rcpt(c, a, xstrdup(""), xstrdup(""), NULL, 5);
		}
	}
	return 0;
}

static void arf_fields(struct ctx *c, const char *s, size_t n)
{
	each_group(c, s, n, false, arf_group);
}

/* --- MIME ---------------------------------------------------------------- */

static void content_type(const struct mailmime_content *ct, char *out, size_t n)
{
	const char *type = "application";
	out[0] = '\0';
	if (!ct || !ct->ct_type)
		return;
	const struct mailmime_type *t = ct->ct_type;
	if (t->tp_type == MAILMIME_TYPE_DISCRETE_TYPE && t->tp_data.tp_discrete_type) {
		switch (t->tp_data.tp_discrete_type->dt_type) {
		case MAILMIME_DISCRETE_TYPE_TEXT:
			type = "text";
			break;
		case MAILMIME_DISCRETE_TYPE_IMAGE:
			type = "image";
			break;
		case MAILMIME_DISCRETE_TYPE_AUDIO:
			type = "audio";
			break;
		case MAILMIME_DISCRETE_TYPE_VIDEO:
			type = "video";
			break;
		case MAILMIME_DISCRETE_TYPE_EXTENSION:
			if (t->tp_data.tp_discrete_type->dt_extension)
				type = t->tp_data.tp_discrete_type->dt_extension;
			break;
		default:
			break;
		}
	} else if (t->tp_type == MAILMIME_TYPE_COMPOSITE_TYPE && t->tp_data.tp_composite_type) {
		switch (t->tp_data.tp_composite_type->ct_type) {
		case MAILMIME_COMPOSITE_TYPE_MESSAGE:
			type = "message";
			break;
		case MAILMIME_COMPOSITE_TYPE_MULTIPART:
			type = "multipart";
			break;
		default:
			if (t->tp_data.tp_composite_type->ct_token)
				type = t->tp_data.tp_composite_type->ct_token;
			break;
		}
	}
	snprintf(out, n, "%s/%s", type, ct->ct_subtype ? ct->ct_subtype : "");
	for (char *p = out; *p; p++)
		*p = (char)lower((unsigned char)*p);
}

/*
 * The decoded bytes of a part. libetpan leaves transfer encodings alone;
 * decoding yields an MMAPString the caller releases with mmap_string_unref
 * (*tofree), otherwise the bytes point into the input.
 */
static const char *part_bytes(struct mailmime_data *d, size_t *len, char **tofree)
{
	*tofree = NULL;
	if (!d || d->dt_type != MAILMIME_DATA_TEXT || !d->dt_data.dt_text.dt_data)
		return NULL;
	const char *s = d->dt_data.dt_text.dt_data;
	*len = d->dt_data.dt_text.dt_length;
	if (d->dt_encoded && (d->dt_encoding == MAILMIME_MECHANISM_BASE64 ||
	                      d->dt_encoding == MAILMIME_MECHANISM_QUOTED_PRINTABLE)) {
		size_t idx = 0, outlen = 0;
		char *out = NULL;
		if (mailmime_part_parse(s, *len, &idx, d->dt_encoding, &out, &outlen) ==
		        MAILIMF_NO_ERROR &&
		    out) {
			*tofree = out;
			*len = outlen;
			return out;
		}
	}
	return s;
}

/* Appends text in its declared charset to out as UTF-8 with LF line ends. */
static void add_text(struct buf *out, const char *s, size_t n, struct mailmime_content *ct)
{
	char *conv = NULL;
	size_t convlen = 0;
	const char *cs = ct ? mailmime_content_param_get(ct, "charset") : NULL;
	if (out->len >= MAX_NOTICE)
		return;
	if (n > MAX_NOTICE - out->len)
		n = MAX_NOTICE - out->len;
	if (cs && strcasecmp(cs, "utf-8") != 0 && strcasecmp(cs, "us-ascii") != 0 &&
	    !utf8_valid(s, n, NULL) &&
	    charconv_buffer("utf-8", cs, s, n, &conv, &convlen) == MAIL_CHARCONV_NO_ERROR) {
		s = conv;
		n = convlen;
	} else if (cs && ci_starts(cs, cs + strlen(cs), "iso-2022-jp") && memchr(s, 0x1b, n) &&
	           charconv_buffer("utf-8", cs, s, n, &conv, &convlen) == MAIL_CHARCONV_NO_ERROR) {
		s = conv;
		n = convlen;
	}
	if (out->len > 0)
		buf_addc(out, '\n');
	utf8_clean(out, s, n, UTF8_KEEP_NL);
	if (conv)
		charconv_buffer_free(conv);
}

static void walk(struct ctx *c, struct mailmime *m, int depth)
{
	char ct[128];
	if (!m || depth > MAX_DEPTH || ++c->nparts > MAX_PARTS)
		return;
	content_type(m->mm_content_type, ct, sizeof ct);
	switch (m->mm_type) {
	case MAILMIME_MULTIPLE: {
		if (!m->mm_data.mm_multipart.mm_mp_list)
			break;
		/* A boundary parameter that matches no delimiter line (seen in
		 * redacted samples) leaves parts covering little of the body. */
		size_t covered = 0;
		for (clistiter *it = clist_begin(m->mm_data.mm_multipart.mm_mp_list); it;
		     it = clist_next(it))
			covered += ((struct mailmime *)clist_content(it))->mm_length;
		if (depth == 1 && m->mm_body && m->mm_body->dt_data.dt_text.dt_length > 256 &&
		    covered < m->mm_body->dt_data.dt_text.dt_length / 2)
			c->broken_mime = true;
		for (clistiter *it = clist_begin(m->mm_data.mm_multipart.mm_mp_list); it;
		     it = clist_next(it))
			walk(c, clist_content(it), depth + 1);
		break;
	}
	case MAILMIME_MESSAGE:
		if (depth == 0) {
			walk(c, m->mm_data.mm_message.mm_msg_mime, depth + 1);
			break;
		}
		/* An attached message is the returned original; it is searched
		 * for a report of its own only when the outer one holds none
		 * (a bounce forwarded as an attachment). */
		if (!c->reports_only) {
			char *tofree;
			size_t n = 0;
			const char *s = part_bytes(m->mm_body, &n, &tofree);
			if (s)
				returned_headers(c, s, n);
			if (tofree)
				mmap_string_unref(tofree);
		}
		if (c->nembedded < MAX_EMBEDDED)
			c->embedded[c->nembedded++] = m->mm_data.mm_message.mm_msg_mime;
		break;
	case MAILMIME_SINGLE: {
		char *tofree;
		size_t n = 0;
		const char *s = part_bytes(m->mm_data.mm_single, &n, &tofree);
		if (!s)
			break;
		if (strcmp(ct, "message/delivery-status") == 0 ||
		    strcmp(ct, "message/global-delivery-status") == 0) {
			c->dsn = true;
			/* A part that holds no group is read as text later. */
			if (dsn_groups(c, s, n, false) == 0 && !c->reports_only)
				add_text(&c->notice, s, n, NULL);
		} else if (strcmp(ct, "message/feedback-report") == 0) {
			c->arf = true;
			arf_fields(c, s, n);
		} else if (c->reports_only) {
			/* nothing else counts inside an embedded message */
		} else if (strcmp(ct, "text/rfc822-headers") == 0 ||
		           strcmp(ct, "text/rfc822-header") == 0 ||
		           strcmp(ct, "message/rfc822-headers") == 0 ||
		           strcmp(ct, "message/global-headers") == 0 ||
		           strcmp(ct, "message/global") == 0 || strcmp(ct, "message/rfc822") == 0) {
			returned_headers(c, s, n);
		} else if (strcmp(ct, "text/plain") == 0 || strcmp(ct, "text/") == 0) {
			add_text(&c->notice, s, n, m->mm_content_type);
		} else if (strcmp(ct, "text/html") == 0 && c->html.len < MAX_NOTICE) {
			struct buf tmp;
			buf_init(&tmp, MAX_NOTICE);
			add_text(&tmp, s, n, m->mm_content_type);
			/* Office 365 and Exchange notices come as HTML only. */
			if (c->html.len > 0)
				buf_addc(&c->html, '\n');
			html_text(&c->html, buf_str(&tmp), tmp.len);
			buf_free(&tmp);
		}
		if (tofree)
			mmap_string_unref(tofree);
		break;
	}
	default:
		break;
	}
}

/*
 * libetpan 1.9.4 parses nested multiparts recursively and without a limit;
 * a hostile message of a few hundred kilobytes could nest deep enough to
 * exhaust the stack. Counting Content-Type lines bounds the nesting cheaply.
 */
static bool too_many_parts(const char *s, size_t n)
{
	const char *end = s + n;
	int count = 0;
	for (const char *p = s; p < end; p = next_line(p, end))
		if (ci_starts(p, end, "content-type") && ++count > MAX_TYPE_LINES)
			return true;
	return false;
}

/* --- text heuristics (non-RFC-3464 bounces) -------------------------------- */

/* clang-format off */
static const char *const from_daemon[] = {
	"mailer-daemon", "mailer_daemon", "mailerdaemon", "mail-daemon", "postmaster@",
	"mail delivery", "<postmaster", "maildelivery", NULL,
};

static const char *const bounce_subjects[] = {
	"undeliver", "returned mail", "return mail", "returned to sender",
	"delivery status notification", "mail delivery failed", "delivery failure",
	"failure notice", "delivery failed", "delivery has failed", "non remis", "non-remis",
	"non recapitabile", "unzustellbar", "nicht zustellbar", "delayed mail", "delivery delay",
	"warning: could not send", "mail system error", "could not send message", "mail failure",
	"delivery notification", "not delivered", "delivery problem", "failed delivery",
	"nondeliverable", "non-deliverable", "non delivery", "non-delivery", "delivery report",
	"returned message", "mail could not be delivered", "bounce", "message delivery",
	"delivery error", "failed mail", "delivery final failure", "error sending",
	"mail status report", "unknown recipient", "rejected", "unable to deliver", NULL,
};

static const char *const bounce_phrases[] = {
	"created automatically by mail delivery software", "qmail-send program",
	"wasn't able to deliver", "could not be delivered", "couldn't be delivered",
	"not be delivered", "undeliverable", "undelivered", "delivery to the following recipient",
	"the following address(es) failed", "unable to deliver", "did not reach the following",
	"delivery has failed", "delivery failed", "transcript of session follows",
	"permanent fatal errors", "this is the mail system at host", "could not deliver",
	"failed to deliver", "was not delivered", "message could not be sent", "delivery failure",
	"has not yet been delivered", "error delivering", "returned mail",
	"delivery to the following recipients failed", "your message was not delivered",
	"message was not sent", "rejected your message", "delivery status notification",
	"mail delivery failed", "not been delivered", "delivery problem", "couldn't deliver",
	"permanent error", "temporary error", "no such user", "user unknown",
	"mailbox unavailable", "recipient address rejected", "message delivery has been delayed",
	"will retry", "delivery attempts will continue", "still being retried",
	"original message follows", "unsent message follows", "below this line is a copy",
	"this is a copy of the message", "message headers follow", NULL,
};

static const char *const auto_subjects[] = {
	"out of office", "out of the office", "automatic reply", "auto-reply", "autoreply",
	"auto reply", "auto:", "vacation", "abwesenheit", "abwesend", "réponse automatique",
	"risposta automatica", "respuesta automática", "away from", "on leave", "autosvar",
	"automatisch antwoord", "自動応答", "自动回复", "auto response", "autoresponse", NULL,
};

/* Wording that says the message is still queued: beats "fatal errors". */
static const char *const delay_phrases[] = {
	"warning message only", "will be retried", "will retry", "still being retried",
	"will continue to try", "will keep trying", "not yet been delivered",
	"not been delivered yet", "has been delayed", "delivery attempts will continue",
	"only a temporary", "do not need to resend", "do not need to re-send",
	"warning: could not send", "still trying", NULL,
};

static const char *const permanent_phrases[] = {
	"permanent error", "permanently", "given up", "giving up", "fatal error",
	"permanent failure", "failed permanently", "will not retry", NULL,
};

/* Weaker hints of a transient state; a full mailbox counts as one, as with
 * most bulk senders. */
static const char *const transient_phrases[] = {
	"delayed", "temporary failure", "temporarily", "deferred", "this is a warning", "retrying",
	"delay", "mailbox full", "mailbox is full", "over quota", "quota exceeded",
	"exceeded storage", NULL,
};
/* clang-format on */

/* The header of the whole message, decoded for matching. */
static char *top_value(const struct ctx *c, const char *name)
{
	const char *v = field(c->top, name, 0);
	return v ? clean_line(v, strlen(v), 4096) : NULL;
}

/* Where the returned original starts in the notice: a separator line
 * (Exim, qmail, Gmail, Sendmail …) or its first Received/Return-Path line. */
static size_t returned_start(const char *s, size_t n)
{
	static const char *const seps[] = {"this is a copy of the message",
	                                   "below this line is a copy of the message",
	                                   "original message follows",
	                                   "unsent message follows",
	                                   "message headers follow",
	                                   "returned message follows",
	                                   "original message headers",
	                                   "original message header",
	                                   "header of the original message",
	                                   "headers of the original message",
	                                   "----- original message -----",
	                                   "content-type: message/rfc822",
	                                   "returned mail follows",
	                                   "original message:",
	                                   NULL};
	const char *end = s + n;
	for (const char *p = s; p < end; p = next_line(p, end)) {
		const char *e = line_end(p, end), *q = skip_ws(p, e);
		if (ci_starts(p, e, "received: ") || ci_starts(p, e, "return-path: ") ||
		    ci_starts(p, e, "received: from"))
			return (size_t)(p - s);
		for (const char *const *sp = seps; *sp; sp++)
			if (ci_find(q, e, *sp))
				return (size_t)(p - s);
		if (e - q >= 3 &&
		    (ci_starts(q, e, "---") || ci_starts(q, e, "===") || ci_starts(q, e, "***"))) {
			static const char *const words[] = {
			    "original", "copy of",        "returned", "message follows",
			    "unsent",   "headers follow", NULL};
			for (const char *const *w = words; *w; w++)
				if (ci_find(q, e, *w))
					return (size_t)(p - s);
		}
	}
	return n;
}

/*
 * Addresses that are never a failed recipient: the mail daemons, our own
 * VERP and unsubscribe addresses, the bounce's sender and — unless the
 * address opens a line of the notice, where qmail and Exim write the failed
 * recipient even when it is the bounce's own addressee — its recipients.
 */
static bool excluded(const struct ctx *c, const char *a, size_t n, bool line_start)
{
	const char *at = memchr(a, '@', n);
	if (!at)
		return true;
	size_t local = (size_t)(at - a);
	static const char *const daemons[] = {"postmaster",   "mailer-daemon", "mailer_daemon",
	                                      "mailerdaemon", "mail-daemon",   NULL};
	for (const char *const *d = daemons; *d; d++)
		if (local == strlen(*d) && ci_starts(a, at, *d))
			return true;
	const char *pre[] = {c->o ? c->o->verp_prefix : NULL,
	                     c->o ? c->o->unsubscribe_prefix : NULL};
	for (size_t i = 0; i < 2; i++)
		if (pre[i] && *pre[i] && ci_starts(a, at, pre[i]))
			return true;
	for (int i = 0; i < c->nown; i++)
		if ((!line_start || !c->own_is_to[i]) && strlen(c->own[i]) == n &&
		    strncasecmp(c->own[i], a, n) == 0)
			return true;
	return false;
}

/* The addresses excluded() compares with, gathered once. */
static void own_addresses(struct ctx *c)
{
	/* Not Delivered-To or X-Original-To: DragonFly Mail Agent writes
	 * the failed recipient there. */
	static const char *const own[] = {"From", "Return-Path", "Sender", "Reply-To", "To", NULL};
	for (const char *const *h = own; *h; h++) {
		const char *v = field(c->top, *h, 0);
		if (!v)
			continue;
		const char *end = v + strlen(v), *as, *ae;
		for (const char *p = v; c->nown < MAX_OWN && find_addr(p, end, false, &as, &ae);
		     p = ae) {
			c->own_is_to[c->nown] = strcmp(*h, "To") == 0;
			c->own[c->nown++] = xstrndup(as, (size_t)(ae - as));
		}
	}
}

static bool have_cand_text(const struct cand *cs, int n, const char *s, const char *a, size_t len)
{
	for (int i = 0; i < n; i++)
		if (cs[i].addr_len == len && strncasecmp(s + cs[i].addr, a, len) == 0)
			return true;
	return false;
}

static bool have_cand(const struct cand *cs, int n, const char *s, size_t a, size_t len)
{
	return have_cand_text(cs, n, s, s + a, len);
}

/* Whether the address a (n bytes) is one of those in list. */
static bool addr_in(const char *list, const char *a, size_t n)
{
	const char *end = list + strlen(list), *as, *ae;
	for (const char *p = list; find_addr(p, end, false, &as, &ae); p = ae)
		if ((size_t)(ae - as) == n && strncasecmp(as, a, n) == 0)
			return true;
	return false;
}

static int add_cand(const struct ctx *c, struct cand *cs, int n, const char *s, const char *as,
                    const char *ae, const char *line, bool line_start)
{
	if (n >= MAX_CANDIDATES || excluded(c, as, (size_t)(ae - as), line_start) ||
	    have_cand(cs, n, s, (size_t)(as - s), (size_t)(ae - as)))
		return n;
	cs[n] = (struct cand){(size_t)(as - s), (size_t)(ae - as), (size_t)(line - s)};
	return n + 1;
}

/* A line whose first word ends in a colon ("To:", "Subject:"), unless it
 * names a recipient. */
static bool header_like(const char *p, const char *e)
{
	const char *q = p;
	while (q < e && (is_alnum((unsigned char)*q) || *q == '-' || *q == '_'))
		q++;
	if (q == p || q >= e || *q != ':')
		return false;
	return !ci_find(p, q, "recipient") && !ci_find(p, q, "rcpt") && !ci_find(p, q, "address");
}

/*
 * Candidate recipients in the notice area [s, s+n): addresses opening a line
 * ("<user@example.org>:", "  user@example.org", "user@example.org on …"),
 * after "RCPT TO:", and in recipient-naming fields; then, when there are none,
 * addresses in lines that speak of delivery.
 */
static int find_candidates(const struct ctx *c, const char *s, size_t n, struct cand *cs)
{
	static const char *const context[] = {
	    "recipient",    "deliver",      "address",   "mailbox",        "user unknown",
	    "unknown user", "rejected",     "failed",    "does not exist", "no such",
	    "invalid",      "destinataire", "empfänger", "not found",      NULL};
	const char *end = s + n, *as, *ae, *prev = NULL;
	int k = 0;
	for (const char *p = s; p < end; p = next_line(p, end)) {
		const char *e = line_end(p, end), *q = skip_ws(p, e);
		/* Sendmail's transcript: "550 <user@example.org>... User unknown" */
		if (e - q > 4 && find_smtp(q, e) == q)
			q = skip_ws(q + 4, e);
		while (q < e && *q && strchr("<\"'*-\t ", *q))
			q++;
		/* Exim's "A message sent by\n\n  <sender>" names the sender. */
		bool sender = prev && ci_find(prev, line_end(prev, end), "sent by");
		if (q < e && !sender && find_addr(q, e, true, &as, &ae) && as == q) {
			const char *r = ae;
			while (r < e && (*r == '>' || *r == '"' || *r == '\''))
				r++;
			if (r == e || *r == ':' || *r == ' ' || *r == '\t' || *r == '.' ||
			    *r == ',' || *r == ';' || *r == '(' || *r == '\r')
				k = add_cand(c, cs, k, s, as, ae, p, true);
		}
		static const char *const leads[] = {"rcpt to:", "generated by ", NULL};
		for (const char *const *l = leads; *l; l++) {
			size_t ln = strlen(*l);
			for (const char *r = p; (r = ci_find(r, e, *l)); r += ln)
				if (find_addr(r + ln, e, true, &as, &ae) && as - (r + ln) < 4)
					k = add_cand(c, cs, k, s, as, ae, p, false);
		}
		const char *colon = memchr(q, ':', (size_t)(e - q));
		if (colon && (ci_find(q, colon, "recipient") || ci_find(q, colon, "address")) &&
		    colon - q < 40) {
			const char *r = colon + 1;
			while (find_addr(r, e, true, &as, &ae)) {
				k = add_cand(c, cs, k, s, as, ae, p, false);
				r = ae;
			}
		}
		if (!blank_line(p, end))
			prev = p;
	}
	if (k > 0)
		return k;
	for (const char *p = s; p < end; p = next_line(p, end)) {
		const char *e = line_end(p, end);
		if (header_like(skip_ws(p, e), e))
			continue;
		bool ctx_ok = false;
		for (const char *const *w = context; *w && !ctx_ok; w++)
			ctx_ok = ci_find(p, e, *w) != NULL;
		if (!ctx_ok)
			continue;
		for (const char *r = p; find_addr(r, e, true, &as, &ae); r = ae)
			k = add_cand(c, cs, k, s, as, ae, p, false);
	}
	return k;
}

/* The diagnostic of one recipient's block: from its SMTP reply (or status
 * code) to the end of the line and its indented continuation lines. */
static char *block_diag(const char *bs, const char *be, const char *skip_to)
{
	const char *q = find_smtp(bs, be), *start;
	size_t sn;
	if (!q) {
		const char *st = find_status(bs, be, &sn);
		if (st) {
			q = st;
			while (q > bs && q[-1] != '\n')
				q--;
		}
	}
	if (q) {
		start = q;
		const char *e = line_end(q, be);
		while (e < be && e + 1 < be && (e[1] == ' ' || e[1] == '\t') &&
		       !blank_line(e + 1, be) && e - start < MAX_DIAG)
			e = line_end(e + 1, be);
		/* multi-line replies "550-5.7.26 …" continue with the same code */
		while (e < be && e + 4 < be && memcmp(e + 1, q, 3) == 0 && e - start < MAX_DIAG)
			e = line_end(e + 1, be);
		return squash_reply(clean_line(start, (size_t)(e - start), MAX_DIAG));
	}
	/* No code: the words after the address — the rest of its line and
	 * the next few non-blank lines (Exim indents them, Exchange does not). */
	start = skip_to;
	while (start < be && (*start == '>' || *start == ':' || *start == ' ' || *start == '\t'))
		start++;
	const char *e = start;
	for (int lines = 0; e < be && lines < 3 && e - start < 400;) {
		const char *le = line_end(e, be);
		if (!blank_line(e, be))
			lines++;
		e = le < be ? le + 1 : be;
	}
	if (e - start > 400)
		e = start + 400;
	return clean_line(start, (size_t)(e - start), MAX_DIAG);
}

/* The class a notice without codes implies; a bounce is permanent unless
 * it says otherwise. */
static int text_class(const char *s, size_t n)
{
	const char *end = s + n;
	for (const char *const *p = delay_phrases; *p; p++)
		if (ci_find(s, end, *p))
			return 4;
	for (const char *const *p = permanent_phrases; *p; p++)
		if (ci_find(s, end, *p))
			return 5;
	for (const char *const *p = transient_phrases; *p; p++)
		if (ci_find(s, end, *p))
			return 4;
	return 5;
}

/* Adds the recipient addr whose words are in [bs, be); what the block
 * lacks comes from the notice as a whole (msg_*). */
static void add_from_text(struct ctx *c, const char *addr, size_t alen, const char *bs,
                          const char *be, int msg_cls, const char *msg_status, const char *msg_diag)
{
	char *status = NULL, *diag = NULL;
	if (bs && be > bs) {
		status = status_in_text(bs, be);
		const char *after = bs;
		for (const char *p = bs; p + alen <= be; p++)
			if (strncasecmp(p, addr, alen) == 0) {
				after = p + alen;
				break;
			}
		diag = block_diag(bs, be, after);
	}
	if (!status && msg_status)
		status = xstrdup(msg_status);
	if ((!diag || !*diag) && msg_diag) {
		free(diag);
		diag = xstrdup(msg_diag);
	}
	int cls = status ? status_class(status) : msg_cls;
	if (cls != 4 && cls != 5)
		cls = msg_cls;
	add_rcpt(c, clean_text(addr, alen, MAX_ADDR, false), status ? status : xstrdup(""),
	         xstrdup(cls == 4 ? "delayed" : "failed"), diag ? diag : xstrdup(""), cls);
}

static int cmp_cand(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	return x->line < y->line ? -1 : x->line > y->line ? 1 : x->addr < y->addr ? -1 : 1;
}

/* Non-RFC-3464 bounce: recipients, codes and diagnostics from the notice. */
static void text_bounce(struct ctx *c, const char *s, size_t n)
{
	size_t area = returned_start(s, n);
	if (area < n) {
		/* The quoted original's header starts at or after the separator. */
		const char *p = s + area, *end = s + n;
		for (int i = 0; i < 8 && p < end; i++, p = next_line(p, end)) {
			const char *e = line_end(p, end), *q = p;
			while (q < e && (is_alnum((unsigned char)*q) || *q == '-'))
				q++;
			if (q > p && q < e && *q == ':') {
				returned_headers(c, p, (size_t)(end - p));
				break;
			}
		}
	}
	struct cand *cs = xcalloc(MAX_CANDIDATES, sizeof *cs);
	char *msg_status = status_in_text(s, s + area);
	char *msg_diag = msg_status ? block_diag(s, s + area, s) : NULL;
	int msg_cls = msg_status ? status_class(msg_status) : text_class(s, area);

	/* Groups of DSN fields written into the text (Amazon WorkMail, some
	 * rfc3464 variants, multipart/report without parts). */
	if (dsn_groups(c, s, area, true) > 0 && c->b->nrcpts > 0)
		goto out;

	int k = find_candidates(c, s, area, cs);
	/* X-Failed-Recipients (Exim, Gmail) is exact: it replaces what the
	 * text suggests, which may include greetings ("user@example.org 様"). */
	const char *xf = field(c->top, "X-Failed-Recipients", 0);
	char *xf_missing = NULL;
	if (xf) {
		const char *end = xf + strlen(xf), *as, *ae;
		int kept = 0;
		for (int i = 0; i < k; i++)
			if (addr_in(xf, s + cs[i].addr, cs[i].addr_len))
				cs[kept++] = cs[i];
		k = kept;
		struct buf miss;
		buf_init(&miss, 64 * 1024);
		int seen = 0;
		for (const char *p = xf;
		     seen++ < BOUNCE_MAX_RCPTS && find_addr(p, end, false, &as, &ae); p = ae) {
			size_t al = (size_t)(ae - as);
			if (have_cand_text(cs, k, s, as, al))
				continue;
			const char *hit = NULL;
			for (const char *q = s; !hit && q + al <= s + area; q++)
				if (strncasecmp(q, as, al) == 0)
					hit = q;
			if (hit && k < MAX_CANDIDATES) {
				const char *line = hit;
				while (line > s && line[-1] != '\n')
					line--;
				cs[k++] = (struct cand){(size_t)(hit - s), al, (size_t)(line - s)};
			} else {
				buf_add(&miss, as, al);
				buf_addc(&miss, ' ');
			}
		}
		xf_missing = buf_detach(&miss);
	}
	qsort(cs, (size_t)k, sizeof *cs, cmp_cand);
	for (int i = 0; i < k && c->b->nrcpts < BOUNCE_MAX_RCPTS; i++) {
		const char *bs = s + cs[i].line;
		const char *be = s + area;
		for (int j = i + 1; j < k; j++)
			if (cs[j].line > cs[i].line) {
				be = s + cs[j].line;
				break;
			}
		if (be - bs > MAX_BLOCK)
			be = bs + MAX_BLOCK;
		add_from_text(c, s + cs[i].addr, cs[i].addr_len, bs, be, msg_cls, msg_status,
		              msg_diag);
	}
	if (xf_missing) {
		const char *end = xf_missing + strlen(xf_missing), *as, *ae;
		for (const char *p = xf_missing;
		     c->b->nrcpts < BOUNCE_MAX_RCPTS && find_addr(p, end, false, &as, &ae); p = ae)
			add_from_text(c, as, (size_t)(ae - as), k == 0 ? s : NULL, s + area,
			              msg_cls, msg_status, msg_diag);
		free(xf_missing);
	}
	/* DSN fields anywhere, e.g. a bounce quoted whole inside another. */
	if (c->b->nrcpts == 0)
		dsn_groups(c, s, n, true);
	/* Last resort: the returned original names one recipient (ours always
	 * do) — Sendmail's "Unsent message follows" and others. */
	if (c->b->nrcpts == 0 && c->returned_to) {
		const char *v = c->returned_to, *end = v + strlen(v), *as, *ae;
		for (const char *p = v;
		     c->b->nrcpts < BOUNCE_MAX_RCPTS && find_addr(p, end, false, &as, &ae); p = ae)
			if (!excluded(c, as, (size_t)(ae - as), false))
				add_from_text(c, as, (size_t)(ae - as), s, s + area, msg_cls,
				              msg_status, msg_diag);
	}
out:
	free(cs);
	free(msg_status);
	free(msg_diag);
}

/* The first "Message-ID:" line of the original a text bounce returns after
 * its separator line (from); none when it returns none (from == n). */
static char *msgid_in_text(const char *s, size_t n, size_t from)
{
	const char *end = s + n;
	for (const char *p = s + from; p < end; p = next_line(p, end)) {
		const char *q = skip_ws(p, end);
		if (ci_starts(q, end, "message-id:")) {
			const char *e = line_end(q, end);
			char *v = xstrndup(q + 11, (size_t)(e - q - 11));
			char *id = msgid_value(v);
			free(v);
			if (id)
				return id;
		}
	}
	return NULL;
}

/* --- the verdict ----------------------------------------------------------- */

/* A DSN without Diagnostic-Code: the human-readable part often quotes the
 * server's reply next to the address (Postfix: "<user@…>: host … said: 550 …"). */
static void fill_diagnostics(struct ctx *c)
{
	const char *s = buf_str(&c->notice), *end = s + c->notice.len;
	end = s + returned_start(s, c->notice.len);
	for (size_t i = 0; i < c->b->nrcpts; i++) {
		struct bounce_rcpt *r = &c->b->rcpts[i];
		size_t al = strlen(r->address);
		if (*r->diagnostic || al == 0)
			continue;
		const char *hit = NULL;
		for (const char *q = s; !hit && q + al <= end; q++)
			if (strncasecmp(q, r->address, al) == 0)
				hit = q;
		if (!hit)
			continue;
		const char *bs = hit, *be = hit;
		while (bs > s && bs[-1] != '\n')
			bs--;
		/* to the blank line that ends the paragraph */
		for (be = next_line(hit, end);
		     be < end && !blank_line(be, end) && be - bs < MAX_DIAG;)
			be = next_line(be, end);
		char *d = block_diag(bs, be, hit + al);
		free(r->diagnostic);
		r->diagnostic = d;
	}
}

static void set_kind_from_rcpts(struct ctx *c, int fallback)
{
	int worst = 0;
	for (size_t i = 0; i < c->b->nrcpts; i++)
		if (c->extra[i].cls > worst)
			worst = c->extra[i].cls;
	if (worst == 0)
		worst = fallback;
	c->b->kind = worst == 4 ? BOUNCE_SOFT : worst == 5 ? BOUNCE_HARD : BOUNCE_NOT;
}

/*
 * Whether an address of a From value is a mail system's own: its local
 * part, without the separators people put in it (post_master, Mailer-Daemon,
 * mailer.daemon), is one of the names RFC 5321 §4.5.1 and RFC 2142 give
 * the mail system, or "MAILER-DAEMON", which Sendmail made the custom.
 */
static bool daemon_sender(const char *from)
{
	static const char *const names[] = {"postmaster",   "mailerdaemon", "maildaemon",
	                                    "maildelivery", "mailerdeamon", NULL};
	const char *end = from + strlen(from), *as, *ae;
	for (const char *p = from; find_addr(p, end, false, &as, &ae); p = ae) {
		char local[32];
		size_t n = 0;
		for (const char *q = as; q < ae && *q != '@' && n + 1 < sizeof local; q++)
			if (*q != '-' && *q != '_' && *q != '.')
				local[n++] = (char)lower((unsigned char)*q);
		local[n] = '\0';
		for (const char *const *nm = names; *nm; nm++)
			if (strcmp(local, *nm) == 0)
				return true;
	}
	return false;
}

/*
 * Whether a subject is a reply's: it opens, after any "[list]" tags, with
 * one of the reply prefixes mail programs write ("Re:", "AW:", "SV:",
 * "回复：" …; "Re[2]:" and "Re(2):" counted too). Forwards ("Fwd:") are not
 * replies: people forward real bounces.
 */
static bool reply_subject(const char *subject)
{
	/* clang-format off */
	static const char *const prefixes[] = {
	    "re", "aw", "sv", "vs", "antw", "odp", "ynt", "rif", "r", "res", "vá", "atb",
	    "回复", "回覆", "答复", "答覆", "返信", "회신", "ответ", "απ", NULL};
	/* clang-format on */
	const char *p = subject, *end = subject + strlen(subject);
	for (int tags = 0; tags < 4; tags++) {
		p = skip_ws(p, end);
		const char *close = *p == '[' ? memchr(p, ']', (size_t)(end - p)) : NULL;
		if (!close)
			break;
		p = close + 1;
	}
	const char *w = p;
	while (p < end && *p != ':' && *p != ' ' && *p != '[' && *p != '(' &&
	       !ci_starts(p, end, "\xef\xbc\x9a")) /* U+FF1A, the full-width colon */
		p++;
	size_t wn = (size_t)(p - w);
	if ((*p == '[' || *p == '(') && p < end) {
		const char *q = p + 1;
		while (q < end && is_digit((unsigned char)*q))
			q++;
		if (q < end && q > p + 1 && (*q == ']' || *q == ')'))
			p = q + 1;
	}
	p = skip_ws(p, end);
	if (!(p < end && (*p == ':' || ci_starts(p, end, "\xef\xbc\x9a"))) || wn == 0)
		return false;
	for (const char *const *x = prefixes; *x; x++)
		if (strlen(*x) == wn && ci_starts(w, w + wn, *x))
			return true;
	return false;
}

static void classify(struct ctx *c, const char *msg, size_t len, size_t body_off)
{
	struct bounce *b = c->b;
	char *subject = top_value(c, "Subject"), *from = top_value(c, "From");
	const char *v;

	if (!c->arf && c->jmrp_rcpt && subject && ci_has(subject, "complaint")) {
		c->arf = true;
		char *a = field_addr(c->jmrp_rcpt);
		if (a)
			add_rcpt(c, a, xstrdup(""), xstrdup(""), NULL, 5);
	}
	if (c->arf) {
		b->kind = BOUNCE_COMPLAINT;
		b->how = "feedback-report";
		if (b->nrcpts == 0 && c->returned_to) {
			char *a = field_addr(c->returned_to);
			if (a)
				add_rcpt(c, a, xstrdup(""), xstrdup(""), NULL, 5);
		}
		for (size_t i = 0; i < b->nrcpts; i++)
			if (!*b->rcpts[i].diagnostic && c->arf_type) {
				free(b->rcpts[i].diagnostic);
				b->rcpts[i].diagnostic = xstrdup(c->arf_type);
			}
		goto out;
	}
	if (c->dsn && (b->nrcpts > 0 || c->dsn_ok > 0)) {
		b->how = "delivery-status";
		fill_diagnostics(c);
		set_kind_from_rcpts(c, 0);
		goto out;
	}

	bool auto_hdr = false;
	if ((v = field(c->top, "Auto-Submitted", 0)) && ci_has(v, "auto-replied"))
		auto_hdr = true;
	static const char *const auto_fields[] = {"X-Autoreply", "X-Autorespond", "X-Vacation",
	                                          "X-Autoresponder", NULL};
	for (const char *const *f = auto_fields; *f; f++)
		if (field(c->top, *f, 0))
			auto_hdr = true;
	if ((v = field(c->top, "Precedence", 0)) && ci_has(v, "auto_reply"))
		auto_hdr = true;
	bool auto_subj = subject && ci_has_any(subject, auto_subjects);

	if (b->unsubscribe_token && !auto_hdr && !auto_subj) {
		b->kind = BOUNCE_UNSUBSCRIBE;
		b->how = "unsubscribe request";
		goto out;
	}

	if (c->notice.len == 0 && c->html.len > 0)
		buf_add(&c->notice, c->html.data, c->html.len);
	if (c->notice.len == 0 && body_off < len)
		add_text(&c->notice, msg + body_off, len - body_off, NULL);
	const char *text = buf_str(&c->notice);
	size_t tlen = c->notice.len;
	size_t area = returned_start(text, tlen);

	bool by_from = from && (ci_has_any(from, from_daemon) || daemon_sender(from));
	bool by_subject = subject && ci_has_any(subject, bounce_subjects);
	bool by_failed = field(c->top, "X-Failed-Recipients", 0) != NULL;
	bool by_text = false;
	for (const char *const *p = bounce_phrases; *p && !by_text; p++)
		by_text = ci_find(text, text + area, *p) != NULL;
	bool by_fields = false;
	for (const char *p = text; p < text + area && !by_fields; p = next_line(p, text + area))
		by_fields = ci_starts(p, text + area, "final-recipient:");
	bool strong = by_from || by_failed || by_fields || (by_subject && !auto_subj);

	if ((auto_hdr || auto_subj) && !strong) {
		b->kind = BOUNCE_NOT;
		b->how = "auto-reply";
		goto out;
	}
	/* A person's reply is no bounce, whatever its words ("Re: delivery
	 * failed … permanent error"): the text heuristics read only mail that
	 * an MTA wrote, which comes from a mail daemon or names its failed
	 * recipients in a header or in delivery-status fields. */
	if (!by_from && !by_failed && !by_fields &&
	    (field(c->top, "In-Reply-To", 0) || (subject && reply_subject(subject)))) {
		b->kind = BOUNCE_NOT;
		b->how = "reply";
		goto out;
	}

	if (!strong && !by_text && !by_subject && !b->verp_token) {
		b->kind = BOUNCE_NOT;
		b->how = "no bounce signature";
		goto out;
	}
	text_bounce(c, text, tlen);
	if (!strong && !b->verp_token && b->nrcpts == 0) {
		b->kind = BOUNCE_NOT;
		b->how = "no bounce signature";
		goto out;
	}
	/* Ours by its address even when unreadable: a bounce all the same. */
	b->how = by_fields                         ? "text: delivery-status fields"
	         : strong || by_text || by_subject ? "text"
	                                           : "text: addressed to the VERP address";
	set_kind_from_rcpts(c, text_class(text, area));
out:
	if (b->kind == BOUNCE_HARD || b->kind == BOUNCE_SOFT || b->kind == BOUNCE_COMPLAINT) {
		if (!b->message_id && c->notice.len > 0)
			b->message_id =
			    msgid_in_text(buf_str(&c->notice), c->notice.len,
			                  returned_start(buf_str(&c->notice), c->notice.len));
		/* Exim and Gmail point at the original with In-Reply-To or
		 * References even when they return no copy of it; so does every
		 * reply, from anyone: only a hint, kept apart. */
		if ((v = field(c->top, "In-Reply-To", 0)) || (v = field(c->top, "References", 0)))
			b->in_reply_to = msgid_value(v);
	}
	free(subject);
	free(from);
}

int bounce_parse(const char *msg, size_t len, const struct bounce_opts *o, struct bounce **out,
                 struct err *err)
{
	static const struct bounce_opts none = {NULL, NULL};
	struct ctx c = {.o = o ? o : &none};
	struct mailmime *mime = NULL;
	char *copy = NULL;
	size_t body_off = 0;

	*out = NULL;
	if (len > BOUNCE_MAX_BYTES)
		return err_set(err, ERR_INPUT, "message of %zu bytes is over the %d-byte limit",
		               len, BOUNCE_MAX_BYTES);
	c.b = xcalloc(1, sizeof *c.b);
	buf_init(&c.notice, MAX_NOTICE + 16);
	buf_init(&c.html, MAX_NOTICE + 16);
	/* libetpan's tree points into the buffer, and a NUL after it stops
	 * any scanner that would run past the length. */
	copy = xmalloc(len + 1);
	if (len)
		memcpy(copy, msg, len);
	copy[len] = '\0';

	/* An mbox "From " line (Postfix pipe flag F, procmail) precedes the
	 * header; libetpan would read it as the start of the body. */
	size_t start = 0;
	if (len > 5 && memcmp(copy, "From ", 5) == 0)
		start = (size_t)(next_line(copy, copy + len) - copy);
	body_off = start;
	c.top = parse_fields(copy, len, &body_off);
	while (body_off < len && copy[body_off] == '\r')
		body_off++;
	if (body_off < len && copy[body_off] == '\n')
		body_off++;
	own_addresses(&c);
	c.b->verp_token = token_in_recipients(c.top, c.o->verp_prefix);
	c.b->unsubscribe_token = token_in_recipients(c.top, c.o->unsubscribe_prefix);

	if (!too_many_parts(copy, len)) {
		size_t idx = 0;
		if (mailmime_parse(copy + start, len - start, &idx, &mime) != MAILIMF_NO_ERROR)
			mime = NULL;
	}
	if (mime) {
		walk(&c, mime, 0);
		if (!c.dsn && !c.arf) {
			/* A report inside an attached message: a bounce forwarded
			 * as an attachment. One level only. */
			int n = c.nembedded;
			c.reports_only = true;
			for (int i = 0; i < n; i++)
				walk(&c, c.embedded[i], 1);
			c.reports_only = false;
		}
	}
	if (c.broken_mime && !c.dsn && !c.arf) {
		buf_reset(&c.notice);
		add_text(&c.notice, copy + body_off, len - body_off, NULL);
	}
	if (!c.b->verp_token && c.o->verp_prefix && *c.o->verp_prefix && c.returned_rp)
		c.b->verp_token =
		    bounce_token_in(c.returned_rp, strlen(c.returned_rp), c.o->verp_prefix);
	classify(&c, copy, len, body_off);

	if (mime)
		mailmime_free(mime);
	if (c.top)
		mailimf_fields_free(c.top);
	free(copy);
	free(c.arf_type);
	free(c.returned_to);
	free(c.returned_rp);
	free(c.jmrp_rcpt);
	for (int i = 0; i < c.nown; i++)
		free(c.own[i]);
	buf_free(&c.notice);
	buf_free(&c.html);
	*out = c.b;
	return 0;
}

void bounce_free(struct bounce *b)
{
	if (!b)
		return;
	for (size_t i = 0; i < b->nrcpts; i++) {
		free(b->rcpts[i].address);
		free(b->rcpts[i].status);
		free(b->rcpts[i].action);
		free(b->rcpts[i].diagnostic);
	}
	free(b->rcpts);
	free(b->verp_token);
	free(b->unsubscribe_token);
	free(b->message_id);
	free(b->in_reply_to);
	free(b);
}

const char *bounce_kind_name(enum bounce_kind k)
{
	switch (k) {
	case BOUNCE_HARD:
		return "hard";
	case BOUNCE_SOFT:
		return "soft";
	case BOUNCE_COMPLAINT:
		return "complaint";
	case BOUNCE_UNSUBSCRIBE:
		return "unsubscribe";
	case BOUNCE_NOT:
		break;
	}
	return "not-a-bounce";
}

struct json_object *bounce_to_json(const struct bounce *b, struct json_object *delivery)
{
	struct json_object *o = json_object_new_object(), *arr = json_object_new_array();
	json_object_object_add(o, "kind", json_object_new_string(bounce_kind_name(b->kind)));
	for (size_t i = 0; i < b->nrcpts; i++) {
		const struct bounce_rcpt *r = &b->rcpts[i];
		struct json_object *j = json_object_new_object();
		json_object_object_add(j, "address", json_object_new_string(r->address));
		json_object_object_add(j, "status", json_object_new_string(r->status));
		json_object_object_add(j, "action", json_object_new_string(r->action));
		json_object_object_add(j, "diagnostic", json_object_new_string(r->diagnostic));
		json_object_array_add(arr, j);
	}
	json_object_object_add(o, "recipients", arr);
	json_object_object_add(o, "delivery", delivery);
	return o;
}
