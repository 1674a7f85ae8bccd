/*
 * MIME composition with libetpan (see msg.h). libetpan writes whatever the
 * tree holds; our job is to hand it only clean values: every display name
 * and the subject go through utf8_rfc2047 (which also removes control
 * characters), addresses are checked, and header values we build from
 * configuration were validated when it was loaded.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <gnutls/gnutls.h>
#include <libetpan/libetpan.h>

#include "addr.h"
#include "msg.h"
#include "text.h"
#include "utf8.h"
#include "xmalloc.h"

/* base64 lines are 76 characters, i.e. 57 input bytes: a head cut at a
 * multiple of 57 ends on a line boundary with no partial group. */
#define B64_LINE 57

/* Boundaries: a random prefix per process and a counter. */
static uint64_t boundary_seed;
static atomic_uint_fast64_t boundary_seq;

void msg_init(void)
{
	unsigned seed = 0;
	if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
		seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)&seed;
	srandom(seed);
	if (getrandom(&boundary_seed, sizeof boundary_seed, 0) != sizeof boundary_seed)
		boundary_seed = ((uint64_t)seed << 32) ^ (uint64_t)time(NULL);
}

/*
 * libetpan's own boundary costs two system calls per message (it calls
 * gethostname() and getpid()). "=_" can occur in neither base64 nor
 * quoted-printable text (RFC 2045 §6.7, §6.8), so this one never collides
 * with a body; the counter, always BND_DIGITS digits, makes it unique per message
 * (msg_build() writes a new one into the prepared MIME structure).
 */
#define BND_DIGITS 12 /* 2^48 messages; short enough that libetpan need not fold */

static char *new_boundary(void)
{
	return xasprintf("=_%08x_%0*llx", (unsigned)boundary_seed, BND_DIGITS, 0ULL);
}

/*
 * mailimf_get_date() finds the zone offset with mail_mkgmtime() twice
 * (a tenth of msg_build's time) and drops the minutes of a +05:30 zone;
 * glibc's tm_gmtoff has the exact offset.
 */
static struct mailimf_date_time *date_of(time_t t)
{
	struct tm tm;
	if (localtime_r(&t, &tm) == NULL)
		return NULL;
	long off = tm.tm_gmtoff / 60, a = off < 0 ? -off : off;
	int zone = (int)((a / 60) * 100 + a % 60);
	return mailimf_date_time_new(tm.tm_mday, tm.tm_mon + 1, tm.tm_year + 1900, tm.tm_hour,
	                             tm.tm_min, tm.tm_sec, off < 0 ? -zone : zone);
}

/* RFC 2045 §6.8: base64 in lines of 76 characters. libetpan's writer goes
 * byte by byte through its string type; GnuTLS encodes in one call. */
static int base64_lines(const char *s, size_t n, struct buf *out)
{
	gnutls_datum_t in = {(unsigned char *)s, (unsigned)n}, enc = {NULL, 0};
	if (n > UINT32_MAX / 2 || gnutls_base64_encode2(&in, &enc) < 0)
		return -1;
	int r = buf_grow(out, enc.size + (enc.size / 76 + 1) * 2);
	for (size_t at = 0; r == 0 && at < enc.size; at += 76) {
		size_t k = enc.size - at < 76 ? enc.size - at : 76;
		buf_add(out, enc.data + at, k);
		buf_add(out, "\r\n", 2);
	}
	gnutls_free(enc.data);
	return r;
}

static int encode(int mechanism, bool is_text, const char *s, size_t n, struct buf *out)
{
	if (mechanism == MAILMIME_MECHANISM_BASE64)
		return base64_lines(s, n, out);
	MMAPString *m = mmap_string_new("");
	int col = 0, r;
	if (m == NULL)
		return -1;
	r = mailmime_quoted_printable_write_mem(m, &col, is_text, s, n);
	if (r == MAILIMF_NO_ERROR && col != 0)
		r = mmap_string_append(m, "\r\n") ? MAILIMF_NO_ERROR : MAILIMF_ERROR_MEMORY;
	if (r == MAILIMF_NO_ERROR)
		r = buf_add(out, m->str, m->len) == 0 ? MAILIMF_NO_ERROR : MAILIMF_ERROR_MEMORY;
	mmap_string_free(m);
	return r == MAILIMF_NO_ERROR ? 0 : -1;
}

static bool mostly_ascii(const char *s)
{
	size_t all = 0, high = 0;
	for (; *s; s++, all++)
		high += (unsigned char)*s >= 0x80;
	return high * 5 <= all;
}

static int prepare_body(struct msg_body *b, const char *s, bool is_html, struct err *err)
{
	size_t n = strlen(s);
	const char *ph = memchr(s, '\x01', n);
	size_t cut = ph ? (size_t)(ph - s) : n;
	b->is_html = is_html;
	b->mechanism = is_html || !mostly_ascii(s) ? MAILMIME_MECHANISM_BASE64
	                                           : MAILMIME_MECHANISM_QUOTED_PRINTABLE;
	if (b->mechanism == MAILMIME_MECHANISM_BASE64) {
		if (ph)
			cut -= cut % B64_LINE;
	} else if (ph) {
		/* quoted-printable is line by line: cut after the last line break */
		while (cut > 0 && s[cut - 1] != '\n')
			cut--;
	}
	struct buf head;
	buf_init(&head, BUF_NOLIMIT);
	if (cut > 0 && encode(b->mechanism, !is_html, s, cut, &head) < 0) {
		buf_free(&head);
		return err_set(err, ERR_INTERNAL, "cannot encode the message body");
	}
	b->head_len = head.len;
	b->head = buf_detach(&head);
	b->tail = xstrndup(s + cut, n - cut);
	b->tail_len = n - cut;
	return 0;
}

static char *domain_of(const char *addr)
{
	const char *at = strrchr(addr, '@');
	return xstrdup(at ? at + 1 : "localhost");
}

static char *encoded(const char *s)
{
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	utf8_rfc2047(&b, s);
	return buf_detach(&b);
}

/* A display name (From:, To:) without bidi controls, encoded. */
static char *encoded_name(const char *s)
{
	char *clean = utf8_clean_dup(s, UTF8_NO_BIDI);
	char *e = encoded(clean);
	free(clean);
	return e;
}

static int skeleton(struct msg_prep *p);

int msg_prepare(struct msg_prep *p, const struct msg_head *h, const char *html, const char *text,
                struct err *err)
{
	char *name = NULL, *addr = NULL;
	memset(p, 0, sizeof *p);
	if (addr_parse_named(h->from, &name, &addr, err) < 0)
		return err_prefix(err, "site.from");
	p->from = encoded_name(name);
	/* the ASCII form of the domain (addr.h): Message-ID and List-Id must be
	 * ASCII, and a relay without SMTPUTF8 takes the From: */
	p->from_addr = addr_key(addr, NULL);
	free(addr);
	free(name);
	if (p->from_addr == NULL) {
		msg_prep_free(p);
		return err_set(err, ERR_INTERNAL, "site.from: the address no longer validates");
	}
	p->msgid_domain = domain_of(p->from_addr);
	p->subject = encoded(h->subject);
	p->language = utf8_clean_dup(h->language ? h->language : "", 0);
	p->bulk = h->bulk;
	if (h->list_name && *h->list_name) {
		/* RFC 2919: List-Id: phrase <label.namespace> */
		char *t = encoded(h->list_title && *h->list_title ? h->list_title : h->list_name);
		char *label = utf8_clean_dup(h->list_name, 0);
		p->list_id = xasprintf("%s <%s.%s>", t, label, p->msgid_domain);
		free(t);
		free(label);
	} else {
		p->list_id = xstrdup("");
	}
	p->list_archive = utf8_clean_dup(h->list_archive ? h->list_archive : "", 0);
	if (prepare_body(&p->text, text, false, err) < 0 ||
	    prepare_body(&p->html, html, true, err) < 0) {
		msg_prep_free(p);
		return -1;
	}
	if (skeleton(p) < 0) {
		msg_prep_free(p);
		return err_set(err, ERR_INTERNAL, "cannot build the message (libetpan)");
	}
	return 0;
}

void msg_prep_free(struct msg_prep *p)
{
	if (p == NULL)
		return;
	free(p->subject);
	free(p->from);
	free(p->from_addr);
	free(p->list_id);
	free(p->list_archive);
	free(p->language);
	free(p->msgid_domain);
	free(p->text.head);
	free(p->text.tail);
	free(p->html.head);
	free(p->html.tail);
	free(p->mime);
	memset(p, 0, sizeof *p);
}

static void add_escaped(struct buf *out, const char *s, bool html)
{
	if (html)
		html_escape(out, s, strlen(s));
	else
		buf_adds(out, s);
}

/* What utf8_clean leaves as it is: no control, nothing but ASCII. */
static bool printable_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

/* The tail with every placeholder replaced by the recipient's value. */
static void fill(const struct msg_body *b, const struct msg_rcpt *r, struct buf *out)
{
	const char *p = b->tail, *end = b->tail + b->tail_len;
	while (p < end) {
		const char *ph = memchr(p, '\x01', (size_t)(end - p));
		if (ph == NULL || end - ph < 3 || ph[2] != '\x01') {
			buf_add(out, p, (size_t)(end - p));
			break;
		}
		buf_add(out, p, (size_t)(ph - p));
		const char *v = "";
		switch (ph[1]) {
		case 'U':
			v = r->unsub_url ? r->unsub_url : "";
			break;
		case 'E':
			v = r->email;
			break;
		case 'N':
			v = r->name ? r->name : "";
			break;
		case 'C':
			v = r->confirm_url ? r->confirm_url : "";
			break;
		case 'P':
			v = r->prefs_url ? r->prefs_url : "";
			break;
		case '[':
			if (r->name == NULL || *r->name == '\0') {
				/* no name: on after the end mark (or to the end) */
				const char *e = memmem(ph + 3, (size_t)(end - ph - 3),
				                       MSG_PH_END_NAME, sizeof MSG_PH_END_NAME - 1);
				p = e ? e + sizeof MSG_PH_END_NAME - 1 : end;
				continue;
			}
			break;
		}
		/* the values are the subscriber's, shown to people: no bidi controls.
		 * Printable ASCII (our links, most addresses) has nothing to clean:
		 * utf8_clean's code point by code point was half of fill's cost
		 * per message (callgrind). */
		if (printable_ascii(v)) {
			add_escaped(out, v, b->is_html);
		} else {
			char *clean = utf8_clean_dup(v, UTF8_NO_BIDI);
			add_escaped(out, clean, b->is_html);
			free(clean);
		}
		p = ph + 3;
	}
}

/*
 * libetpan writes the message around these markers; msg_build() then puts
 * the encoded bodies in their place. Copying 40 KB of encoded body through
 * libetpan's writer byte by byte was half of the main thread's time per
 * message (bench/send). \x02 occurs in no header: values are encoded or
 * checked, boundaries are hex.
 */
static const char text_mark[] = "\x02"
                                "T"
                                "\x02\r\n";
static const char html_mark[] = "\x02"
                                "H"
                                "\x02\r\n";

static struct mailmime *part(const struct msg_body *b, const char *type, const char *mark)
{
	struct mailmime_fields *mf = mailmime_fields_new_encoding(b->mechanism);
	struct mailmime_content *ct = mailmime_content_new_with_str(type);
	struct mailmime_parameter *param = mailmime_param_new_with_data("charset", "utf-8");
	if (mf == NULL || ct == NULL || param == NULL ||
	    clist_append(ct->ct_parameters, param) < 0) {
		if (mf)
			mailmime_fields_free(mf);
		if (ct)
			mailmime_content_free(ct);
		return NULL;
	}
	struct mailmime *m = mailmime_new_empty(ct, mf);
	if (m == NULL) {
		mailmime_fields_free(mf);
		mailmime_content_free(ct);
		return NULL;
	}
	/* "Already encoded" (dt_encoded = 1): libetpan writes the marker as is.
	 * mailmime_free() does not free the bytes (docs/libraries.md, libetpan). */
	m->mm_data.mm_single =
	    mailmime_data_new(MAILMIME_DATA_TEXT, b->mechanism, 1, mark, strlen(mark), NULL);
	if (m->mm_data.mm_single == NULL) {
		mailmime_free(m);
		return NULL;
	}
	return m;
}

/* mailmime_multiple_new() with our boundary (new_boundary): the helper
 * mailmime_new_empty() always appends a generated one of its own. */
static struct mailmime *multipart(const char *type)
{
	struct mailmime_fields *mf = mailmime_fields_new_empty();
	struct mailmime_content *ct = mailmime_content_new_with_str(type);
	struct mailmime_parameter *param =
	    ct ? mailmime_parameter_new(xstrdup("boundary"), new_boundary()) : NULL;
	clist *parts = clist_new();
	struct mailmime *m = NULL;
	if (mf && ct && param && parts && clist_append(ct->ct_parameters, param) == 0) {
		param = NULL;
		m = mailmime_new(MAILMIME_MULTIPLE, NULL, 0, mf, ct, NULL, NULL, NULL, parts, NULL,
		                 NULL);
	}
	if (m == NULL) {
		if (param)
			mailmime_parameter_free(param);
		if (parts)
			clist_free(parts);
		if (mf)
			mailmime_fields_free(mf);
		if (ct)
			mailmime_content_free(ct);
	}
	return m;
}

static int add_field(struct mailimf_fields *f, const char *name, const char *value)
{
	struct mailimf_field *fl = mailimf_field_new_custom(xstrdup(name), xstrdup(value));
	if (fl == NULL)
		return -1;
	if (mailimf_fields_add(f, fl) != MAILIMF_NO_ERROR) {
		mailimf_field_free(fl);
		return -1;
	}
	return 0;
}

static bool header_safe(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

/* One body's tail for r: filled in (scratch holds it) and transfer-encoded. */
static int encode_tail(const struct msg_body *b, const struct msg_rcpt *r, struct buf *scratch,
                       struct buf *out)
{
	buf_reset(scratch);
	fill(b, r, scratch);
	if (scratch->len == 0)
		return 0;
	return encode(b->mechanism, !b->is_html, scratch->data, scratch->len, out);
}

/* List-Id, List-Unsubscribe (+ -Post), List-Archive, Content-Language. */
static int add_list_fields(struct mailimf_fields *f, const struct msg_prep *p,
                           const struct msg_rcpt *r)
{
	if (*p->list_id && add_field(f, "List-Id", p->list_id) < 0)
		return -1;
	if (p->bulk && r->unsub_url) {
		char *v = r->unsub_mailto
		              ? xasprintf("<%s>, <mailto:%s>", r->unsub_url, r->unsub_mailto)
		              : xasprintf("<%s>", r->unsub_url);
		int a = add_field(f, "List-Unsubscribe", v);
		free(v);
		/* RFC 8058: one-click needs both headers and a DKIM signature covering them */
		if (a < 0 ||
		    add_field(f, "List-Unsubscribe-Post", "List-Unsubscribe=One-Click") < 0)
			return -1;
	}
	if (p->bulk && *p->list_archive) {
		char *v = xasprintf("<%s>", p->list_archive);
		int a = add_field(f, "List-Archive", v);
		free(v);
		if (a < 0)
			return -1;
	}
	if (*p->language && add_field(f, "Content-Language", p->language) < 0)
		return -1;
	return 0;
}

/* Every header of r's message; to_addr is the checked To: address. NULL
 * when libetpan runs out of memory. */
static struct mailimf_fields *header_fields(const struct msg_prep *p, const struct msg_rcpt *r,
                                            const char *to_addr)
{
	struct mailimf_mailbox_list *from = mailimf_mailbox_list_new_empty();
	struct mailimf_address_list *to = mailimf_address_list_new_empty();
	char *to_name = r->name && *r->name ? encoded_name(r->name) : NULL;
	if (from == NULL || to == NULL ||
	    mailimf_mailbox_list_add(from, mailimf_mailbox_new(*p->from ? xstrdup(p->from) : NULL,
	                                                       xstrdup(p->from_addr))) != 0 ||
	    mailimf_address_list_add_mb(to, to_name, xstrdup(to_addr)) != 0) {
		if (from)
			mailimf_mailbox_list_free(from);
		if (to)
			mailimf_address_list_free(to);
		return NULL;
	}
	struct mailimf_fields *f = mailimf_fields_new_with_data_all(
	    date_of(r->date), from, NULL, NULL, to, NULL, NULL,
	    xasprintf("%s@%s", r->message_id, p->msgid_domain), NULL, NULL, xstrdup(p->subject));
	if (f && add_list_fields(f, p, r) < 0) {
		mailimf_fields_free(f);
		f = NULL;
	}
	return f;
}

/*
 * The MIME structure written by libetpan, with a marker where each body
 * goes: MIME-Version, multipart/alternative, the two parts' headers, the
 * boundaries. Its header fields are left empty: msg_build() writes them per
 * recipient, in front. Fills p->mime and the offsets of the boundary
 * counters; -1 when libetpan runs out of memory.
 */
static int skeleton(struct msg_prep *p)
{
	struct mailmime *msg = NULL, *alt = NULL, *tp = NULL, *hp = NULL;
	struct mailimf_fields *fields = mailimf_fields_new_empty();
	MMAPString *s = NULL;
	int rc = -1;

	msg = mailmime_new_message_data(NULL);
	if (msg == NULL || fields == NULL)
		goto out;
	mailmime_set_imf_fields(msg, fields);
	fields = NULL;
	alt = multipart("multipart/alternative");
	tp = part(&p->text, "text/plain", text_mark);
	hp = part(&p->html, "text/html", html_mark);
	if (alt == NULL || tp == NULL || hp == NULL)
		goto out;
	/* RFC 2046 §5.1.4: the last alternative is the preferred one. */
	if (mailmime_smart_add_part(alt, tp) != MAILIMF_NO_ERROR)
		goto out;
	tp = NULL;
	if (mailmime_smart_add_part(alt, hp) != MAILIMF_NO_ERROR)
		goto out;
	hp = NULL;
	if (mailmime_smart_add_part(msg, alt) != MAILIMF_NO_ERROR)
		goto out;
	alt = NULL;
	s = mmap_string_sized_new(1024);
	int col = 0;
	if (s == NULL || mailmime_write_mem(s, &col, msg) != MAILIMF_NO_ERROR)
		goto out;
	/* the boundary: in the Content-Type and before, between and after the parts */
	char *b = new_boundary();
	size_t blen = strlen(b);
	for (const char *q = s->str;
	     p->nbnd < 4 && (q = memmem(q, s->len - (size_t)(q - s->str), b, blen)) != NULL;
	     q += blen)
		p->bnd[p->nbnd++] = (size_t)(q - s->str) + blen - BND_DIGITS;
	free(b);
	const char *tm = memmem(s->str, s->len, text_mark, sizeof text_mark - 1);
	const char *hm =
	    tm ? memmem(tm, s->len - (size_t)(tm - s->str), html_mark, sizeof html_mark - 1) : NULL;
	if (p->nbnd == 4 && hm) {
		p->text_at = (size_t)(tm - s->str);
		p->html_at = (size_t)(hm - s->str);
		p->mime = xmalloc(s->len);
		memcpy(p->mime, s->str, s->len);
		p->mime_len = s->len;
		rc = 0;
	}
out:
	if (s)
		mmap_string_free(s);
	if (fields)
		mailimf_fields_free(fields);
	if (tp)
		mailmime_free(tp);
	if (hp)
		mailmime_free(hp);
	if (alt)
		mailmime_free(alt);
	if (msg)
		mailmime_free(msg);
	return rc;
}

/* Appends mime[from, to) to out with each boundary counter in it set to
 * digits. */
static void add_mime(const struct msg_prep *p, size_t from, size_t to, const char *digits,
                     struct buf *out)
{
	size_t at = out->len;
	buf_add(out, p->mime + from, to - from);
	for (size_t i = 0; i < p->nbnd; i++)
		if (p->bnd[i] >= from && p->bnd[i] + BND_DIGITS <= to)
			memcpy(out->data + at + (p->bnd[i] - from), digits, BND_DIGITS);
}

/* Appends the header fields, then the MIME structure with each marker
 * replaced by its body: the shared, encoded head, then the recipient's
 * encoded tail. */
static int splice(const MMAPString *fields, const struct msg_prep *p, const struct buf *tdata,
                  const struct buf *hdata, struct buf *out, struct err *err)
{
	size_t tm = p->text_at, hm = p->html_at;
	size_t after_t = tm + sizeof text_mark - 1, after_h = hm + sizeof html_mark - 1;
	if (buf_grow(out, fields->len + p->mime_len + p->text.head_len + tdata->len +
	                      p->html.head_len + hdata->len) < 0)
		return err_set(err, ERR_INTERNAL, "message too large");
	char digits[BND_DIGITS + 1];
	snprintf(digits, sizeof digits, "%0*llx", BND_DIGITS,
	         (unsigned long long)(atomic_fetch_add(&boundary_seq, 1) &
	                              ((1ULL << 4 * BND_DIGITS) - 1)));
	buf_add(out, fields->str, fields->len);
	add_mime(p, 0, tm, digits, out);
	buf_add(out, p->text.head, p->text.head_len);
	buf_add(out, tdata->data, tdata->len);
	add_mime(p, after_t, hm, digits, out);
	buf_add(out, p->html.head, p->html.head_len);
	buf_add(out, hdata->data, hdata->len);
	add_mime(p, after_h, p->mime_len, digits, out);
	return 0;
}

int msg_build(const struct msg_prep *p, const struct msg_rcpt *r, struct buf *out, struct err *err)
{
	struct buf tdata, hdata, tmp;
	struct mailimf_fields *fields = NULL;
	MMAPString *s = NULL;
	int rc = -1;

	buf_init(&tdata, BUF_NOLIMIT);
	buf_init(&hdata, BUF_NOLIMIT);
	buf_init(&tmp, BUF_NOLIMIT);
	/* To: carries the key, the domain's ASCII form (addr.h) */
	char to_addr[ADDR_MAX + 1];
	if (addr_check(r->email, strlen(r->email), to_addr, err) < 0)
		goto out;
	if (!header_safe(r->message_id) || !header_safe(r->unsub_url) ||
	    !header_safe(r->unsub_mailto)) {
		err_set(err, ERR_INTERNAL, "a header value holds a control or 8-bit character");
		goto out;
	}
	/* this recipient's tails; splice() puts the shared heads before them */
	if (encode_tail(&p->text, r, &tmp, &tdata) < 0 ||
	    encode_tail(&p->html, r, &tmp, &hdata) < 0 ||
	    (fields = header_fields(p, r, to_addr)) == NULL) {
		err_set(err, ERR_INTERNAL, "cannot build the message (libetpan)");
		goto out;
	}
	s = mmap_string_sized_new(2048);
	int col = 0;
	if (s == NULL || mailimf_fields_write_mem(s, &col, fields) != MAILIMF_NO_ERROR) {
		err_set(err, ERR_INTERNAL, "cannot build the message (libetpan)");
		goto out;
	}
	rc = splice(s, p, &tdata, &hdata, out, err);
out:
	if (fields)
		mailimf_fields_free(fields);
	if (s)
		mmap_string_free(s);
	buf_free(&tdata);
	buf_free(&hdata);
	buf_free(&tmp);
	return rc;
}
