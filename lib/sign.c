/*
 * DKIM signing (see sign.h). We write the DKIM-Signature fields ourselves
 * with OpenSSL's primitives: one relaxed body canonicalisation and SHA-256
 * per message, shared by every key, then per key the header hash and the
 * signature. libopendkim canonicalises and hashes the body again for each
 * key, byte by byte, and has no call to share or be given a body hash:
 * that was most of the CPU of a signed message (docs/libraries.md,
 * libopendkim). libopendkim stays as the independent check: sign_verify()
 * runs its verifier, sign_keys_load() signs a probe message with each key
 * and refuses the start unless libopendkim verifies it, and the unit tests
 * verify signatures of awkward messages with it.
 *
 * Keys are read and checked once, here, with GnuTLS (type, size, PEM
 * form) and OpenSSL (it signs); each thread keeps its own parsed copies.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <opendkim/dkim.h>

#include "addr.h"
#include "sign.h"
#include "xmalloc.h"

#define KEY_FILE_MAX (64 * 1024)
#define RSA_MIN_BITS 2048
#define SIG_MAX      1024 /* bytes of an RSA-8192 signature, larger than any we accept */
#define RECORD_MAX   1024 /* libopendkim's buffer for a key record (docs/libraries.md) */
#define LINE_WIDTH   78   /* RFC 5322 §2.1.1, a TAB counted as 8 columns */

const char *const sign_headers[] = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-language",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-archive",
    NULL,
};

/* Signed once more than they occur (RFC 6376 §8.15): a From, Subject or
 * To added on the way then breaks the signature instead of showing. */
static const char *const oversign[] = {"from", "subject", "to", NULL};

struct sign_key {
	char *selector;
	char *pem;    /* from its "-----BEGIN" line on */
	char *record; /* the DNS record's text, "v=DKIM1; k=…; p=…", for the verifier */
	bool ed25519;
};

struct sign_keys {
	atomic_int refs;
	unsigned long id; /* unique per load: a signer's cache names it */
	char *domain;
	struct sign_key *k;
	size_t n;
};

/* One header field of the message being signed: the text from its name
 * to its last character, folding kept, without the final CRLF. */
struct field {
	const char *p;
	size_t len;
	size_t namelen; /* up to the colon, WSP before it left out */
	bool used;      /* taken by an h= name (RFC 6376 §5.4.2) */
};

struct hname {
	const char *p;
	size_t len;
};

/*
 * One per thread. The keys are parsed once per thread (pkeys, by index in
 * the sign_keys it last used): OpenSSL 3.0's PEM decoder costs 0.5 to
 * 0.8 ms, more than an RSA-2048 signature, and a freshly parsed RSA key
 * pays its blinding set-up again. The rest is the message in hand,
 * prepared once for all its signatures.
 */
struct signer {
	unsigned long keys_id; /* the sign_keys whose pkeys these are */
	EVP_PKEY **pkeys;
	size_t npkeys;
	EVP_MD *sha256;
	EVP_MD_CTX *md;  /* the body hash, then each header hash */
	EVP_MD_CTX *sig; /* Ed25519 signatures */
	struct field *f; /* the message's header fields */
	size_t nf, fcap;
	struct hname *h; /* the h= list */
	size_t nh, hcap;
	struct buf canon; /* the fields the h= list selects, canonicalised */
	struct buf field; /* the DKIM-Signature field being written */
	struct buf tmp;   /* the same, canonicalised */
	char bh[EVP_ENCODE_LENGTH(EVP_MAX_MD_SIZE)];
	unsigned long bodies; /* body hashes computed */
};

static atomic_ulong keys_ids;

/* This thread's parsed copy of key i of k (parsed on first use). */
static EVP_PKEY *parsed(struct signer *s, const struct sign_keys *k, size_t i)
{
	if (s->keys_id != k->id) {
		for (size_t j = 0; j < s->npkeys; j++)
			EVP_PKEY_free(s->pkeys[j]);
		free(s->pkeys);
		s->pkeys = xcalloc(k->n, sizeof *s->pkeys);
		s->npkeys = k->n;
		s->keys_id = k->id;
	}
	if (s->pkeys[i] == NULL) {
		BIO *b = BIO_new_mem_buf(k->k[i].pem, -1);
		if (b)
			s->pkeys[i] = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
		BIO_free(b);
	}
	return s->pkeys[i];
}

static void keys_free(struct sign_keys *k)
{
	for (size_t i = 0; i < k->n; i++) {
		free(k->k[i].selector);
		free(k->k[i].record);
		if (k->k[i].pem) {
			explicit_bzero(k->k[i].pem, strlen(k->k[i].pem));
			free(k->k[i].pem);
		}
	}
	free(k->k);
	free(k->domain);
	free(k);
}

struct sign_keys *sign_keys_ref(struct sign_keys *k)
{
	if (k)
		atomic_fetch_add(&k->refs, 1);
	return k;
}

void sign_keys_unref(struct sign_keys *k)
{
	if (k && atomic_fetch_sub(&k->refs, 1) == 1)
		keys_free(k);
}

const char *sign_keys_domain(const struct sign_keys *k)
{
	return k->domain;
}

struct signer *signer_new(struct err *err)
{
	struct signer *s = xcalloc(1, sizeof *s);
	s->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	s->md = EVP_MD_CTX_new();
	s->sig = EVP_MD_CTX_new();
	buf_init(&s->canon, BUF_NOLIMIT);
	buf_init(&s->field, BUF_NOLIMIT);
	buf_init(&s->tmp, BUF_NOLIMIT);
	if (s->sha256 == NULL || s->md == NULL || s->sig == NULL) {
		signer_free(s);
		err_set(err, ERR_INTERNAL, "OpenSSL: no SHA-256");
		return NULL;
	}
	return s;
}

void signer_free(struct signer *s)
{
	if (s == NULL)
		return;
	for (size_t j = 0; j < s->npkeys; j++)
		EVP_PKEY_free(s->pkeys[j]);
	free(s->pkeys);
	EVP_MD_free(s->sha256);
	EVP_MD_CTX_free(s->md);
	EVP_MD_CTX_free(s->sig);
	free(s->f);
	free(s->h);
	buf_free(&s->canon);
	buf_free(&s->field);
	buf_free(&s->tmp);
	free(s);
}

unsigned long signer_body_hashes(const struct signer *s)
{
	return s->bodies;
}

/* ---- canonicalisation (RFC 6376 §3.4) ------------------------------------ */

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/*
 * The header fields of msg into s->f, and *body where the body starts.
 * A field ends at a CRLF not followed by WSP; the header ends at an empty
 * line, which must be there.
 */
static int split_fields(struct signer *s, const char *msg, size_t len, const char **body,
                        struct err *err)
{
	const char *p = msg, *end = msg + len;
	s->nf = 0;
	for (;;) {
		if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
			*body = p + 2;
			return 0;
		}
		const char *q = p;
		for (;;) {
			q = memmem(q, (size_t)(end - q), "\r\n", 2);
			if (q == NULL || q + 2 >= end || !is_wsp(q[2]))
				break;
			q += 2;
		}
		const char *colon = q ? memchr(p, ':', (size_t)(q - p)) : NULL;
		if (colon == NULL || colon == p)
			return err_set(err, ERR_INTERNAL,
			               "cannot sign: the message's header is not CRLF-terminated "
			               "\"Name: value\" fields ending at an empty line");
		const char *n = colon;
		while (n > p && is_wsp(n[-1]))
			n--;
		if (s->nf == s->fcap) {
			s->fcap = s->fcap ? 2 * s->fcap : 32;
			s->f = xrealloc(s->f, s->fcap * sizeof *s->f);
		}
		s->f[s->nf++] = (struct field){p, (size_t)(q - p), (size_t)(n - p), false};
		p = q + 2;
	}
}

/*
 * Appends field f canonicalised "relaxed" (RFC 6376 §3.4.2), without a
 * CRLF: the name in lower case, a colon, the value unfolded, each run of
 * WSP one SP, none at either end.
 */
static void canon_field(struct buf *out, const char *p, size_t len, size_t namelen)
{
	buf_grow(out, len + 1);
	for (size_t i = 0; i < namelen; i++)
		buf_addc(out, (char)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 'a' - 'A' : p[i]));
	buf_addc(out, ':');
	const char *colon = memchr(p + namelen, ':', len - namelen), *end = p + len;
	const char *v = colon + 1;
	bool space = false, any = false;
	for (; v < end; v++) {
		if (*v == '\r' || *v == '\n') /* only CRLF WSP is left inside a field */
			continue;
		if (is_wsp(*v)) {
			space = true;
			continue;
		}
		if (space && any)
			buf_addc(out, ' ');
		space = false;
		any = true;
		buf_addc(out, *v);
	}
}

/*
 * Source bytes that go into the hash unchanged are gathered into one run
 * and hashed with one EVP_DigestUpdate: for our base64 and
 * quoted-printable bodies that is nearly the whole body in one call.
 */
struct run {
	EVP_MD_CTX *md;
	const char *p, *end; /* pending, unchanged: [p, end) */
	bool ok;
};

static void run_flush(struct run *r)
{
	if (r->end != r->p)
		r->ok &= EVP_DigestUpdate(r->md, r->p, (size_t)(r->end - r->p)) == 1;
	r->p = r->end = NULL;
}

static void run_src(struct run *r, const char *a, const char *b)
{
	if (a != r->end) {
		run_flush(r);
		r->p = a;
	}
	r->end = b;
}

static void run_lit(struct run *r, const char *s, size_t n)
{
	run_flush(r);
	r->ok &= EVP_DigestUpdate(r->md, s, n) == 1;
}

/* Where the line at p ends: its CRLF, or end. A lone CR or LF is text. */
static const char *line_end(const char *p, const char *end)
{
	for (const char *c = p; (c = memchr(c, '\r', (size_t)(end - c))) != NULL; c++)
		if (c + 1 < end && c[1] == '\n')
			return c;
	return end;
}

/*
 * The relaxed body (RFC 6376 §3.4.4) of [p, end) into md: WSP at the end
 * of a line dropped, each other run of WSP one SP, the empty lines at the
 * end dropped (an empty body, or one of empty lines only, hashes as
 * nothing), a CRLF added to a last line that lacks one. A line is looked
 * at with memchr for its CRLF, its SPs and its TABs; only what changes is
 * not hashed straight from the message.
 */
static bool canon_body(EVP_MD_CTX *md, const char *p, const char *end)
{
	struct run r = {md, NULL, NULL, true};
	size_t blank = 0;            /* empty lines held back: they may be the last */
	const char *blank_at = NULL; /* where they start */
	bool blank_plain = true;     /* they are exactly blank × CRLF */
	while (p < end) {
		const char *eol = line_end(p, end), *next = eol < end ? eol + 2 : end;
		const char *q = p;
		while (q < eol && is_wsp(*q))
			q++;
		if (q == eol) {
			if (blank++ == 0) {
				blank_at = p;
				blank_plain = true;
			}
			blank_plain &= eol == p && eol < end;
			p = next;
			continue;
		}
		if (blank > 0 && blank_plain)
			run_src(&r, blank_at, p);
		for (; blank > 0 && !blank_plain; blank--)
			run_lit(&r, "\r\n", 2);
		blank = 0;
		/* the line: stretches without WSP as they are, WSP runs as one SP */
		const char *tab = memchr(p, '\t', (size_t)(eol - p));
		if (tab == NULL)
			tab = eol;
		for (q = p;;) {
			const char *sp = memchr(q, ' ', (size_t)(eol - q));
			const char *w = sp && sp < tab ? sp : tab;
			run_src(&r, q, w);
			if (w == eol)
				break;
			const char *v = w;
			while (v < eol && is_wsp(*v))
				v++;
			if (v == eol)
				break; /* WSP at the end of the line */
			if (v - w == 1 && *w == ' ')
				run_src(&r, w, v);
			else
				run_lit(&r, " ", 1);
			if (tab < v && (tab = memchr(v, '\t', (size_t)(eol - v))) == NULL)
				tab = eol;
			q = v;
		}
		if (eol < end)
			run_src(&r, eol, next);
		else
			run_lit(&r, "\r\n", 2);
		p = next;
	}
	run_flush(&r);
	return r.ok;
}

static bool is_signed(const char *name, size_t len)
{
	for (size_t i = 0; sign_headers[i]; i++)
		if (strlen(sign_headers[i]) == len && strncasecmp(name, sign_headers[i], len) == 0)
			return true;
	return false;
}

static void add_hname(struct signer *s, const char *p, size_t len)
{
	if (s->nh == s->hcap) {
		s->hcap = s->hcap ? 2 * s->hcap : 32;
		s->h = xrealloc(s->h, s->hcap * sizeof *s->h);
	}
	s->h[s->nh++] = (struct hname){p, len};
}

/*
 * What every signature of msg shares: the body hash (s->bh, base64), the
 * h= list (the signed fields in the order of the message, as they are
 * spelt, then the over-signed names) and the fields it selects,
 * canonicalised (s->canon). For each name the instances are taken from
 * the bottom up (RFC 6376 §5.4.2); a name with none left adds nothing.
 */
static int prepare(struct signer *s, const char *msg, size_t len, struct err *err)
{
	const char *body;
	if (split_fields(s, msg, len, &body, err) < 0)
		return -1;
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	if (EVP_DigestInit_ex(s->md, s->sha256, NULL) != 1 || !canon_body(s->md, body, msg + len) ||
	    EVP_DigestFinal_ex(s->md, d, &dlen) != 1)
		return err_set(err, ERR_INTERNAL, "cannot sign: OpenSSL: SHA-256 failed");
	s->bodies++;
	EVP_EncodeBlock((unsigned char *)s->bh, d, (int)dlen);
	s->nh = 0;
	for (size_t i = 0; i < s->nf; i++)
		if (is_signed(s->f[i].p, s->f[i].namelen))
			add_hname(s, s->f[i].p, s->f[i].namelen);
	for (size_t i = 0; oversign[i]; i++)
		add_hname(s, oversign[i], strlen(oversign[i]));
	buf_reset(&s->canon);
	for (size_t j = 0; j < s->nh; j++) {
		for (size_t i = s->nf; i-- > 0;) {
			struct field *f = &s->f[i];
			if (!f->used && f->namelen == s->h[j].len &&
			    strncasecmp(f->p, s->h[j].p, f->namelen) == 0) {
				f->used = true;
				canon_field(&s->canon, f->p, f->len, f->namelen);
				buf_add(&s->canon, "\r\n", 2);
				break;
			}
		}
	}
	return 0;
}

/* ---- the DKIM-Signature field (RFC 6376 §3.5) ----------------------------- */

/* Writes a field folded at whitespace: CRLF TAB between tags, CRLF TAB SP
 * inside a value (the h= list, a base64 string), where FWS is allowed. */
struct fold {
	struct buf *out;
	size_t col;
};

static void fold_word(struct fold *f, const char *sep, const char *s, size_t n, bool in_value)
{
	size_t sl = strlen(sep);
	if (f->col + sl + n > LINE_WIDTH && f->col > 9) {
		buf_adds(f->out, in_value ? "\r\n\t " : "\r\n\t");
		f->col = in_value ? 9 : 8;
	} else {
		buf_adds(f->out, sep);
		f->col += sl;
	}
	buf_add(f->out, s, n);
	f->col += n;
}

/* a base64 string, cut anywhere to fill the lines */
static void fold_b64(struct fold *f, const char *s, size_t n)
{
	while (n > 0) {
		if (f->col >= LINE_WIDTH) {
			buf_adds(f->out, "\r\n\t ");
			f->col = 9;
		}
		size_t k = LINE_WIDTH - f->col < n ? LINE_WIDTH - f->col : n;
		buf_add(f->out, s, k);
		f->col += k;
		s += k;
		n -= k;
	}
}

/* The signature of the digest d by key: RSASSA-PKCS1-v1_5 with SHA-256's
 * DigestInfo (RFC 6376 §3.3.1), or PureEdDSA over the digest itself (RFC
 * 8463 §3). */
static int sign_digest(struct signer *s, EVP_PKEY *key, bool ed25519, const unsigned char *d,
                       size_t dlen, unsigned char *sig, size_t *siglen)
{
	*siglen = SIG_MAX;
	if (ed25519)
		return EVP_MD_CTX_reset(s->sig) == 1 &&
		               EVP_DigestSignInit(s->sig, NULL, NULL, NULL, key) == 1 &&
		               EVP_DigestSign(s->sig, sig, siglen, d, dlen) == 1
		           ? 0
		           : -1;
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(key, NULL);
	int ok = pc && EVP_PKEY_sign_init(pc) == 1 &&
	         EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) > 0 &&
	         EVP_PKEY_CTX_set_signature_md(pc, s->sha256) > 0 &&
	         EVP_PKEY_sign(pc, sig, siglen, d, dlen) == 1;
	EVP_PKEY_CTX_free(pc);
	return ok ? 0 : -1;
}

/*
 * The DKIM-Signature of the prepared message by key i of k, CRLF-
 * terminated, appended to out (nothing on error). The field is written
 * up to an empty b=, hashed canonicalised after the selected fields and
 * without its CRLF (RFC 6376 §3.7), and the signature then takes b='s
 * place.
 */
static int sign_one(struct signer *s, const struct sign_keys *k, size_t i, time_t t,
                    struct buf *out, struct err *err)
{
	const struct sign_key *key = &k->k[i];
	EVP_PKEY *pkey = parsed(s, k, i);
	if (pkey == NULL)
		return err_set(err, ERR_INTERNAL, "DKIM key %s: OpenSSL cannot read it",
		               key->selector);
	struct buf *fb = &s->field;
	struct fold f = {fb, 0};
	char tag[320];
	buf_reset(fb);
	buf_adds(fb, "DKIM-Signature:");
	f.col = fb->len;
	fold_word(&f, " ", "v=1;", 4, false);
	snprintf(tag, sizeof tag, "a=%s;", key->ed25519 ? "ed25519-sha256" : "rsa-sha256");
	fold_word(&f, " ", tag, strlen(tag), false);
	fold_word(&f, " ", "c=relaxed/relaxed;", 18, false);
	snprintf(tag, sizeof tag, "d=%s;", k->domain);
	fold_word(&f, " ", tag, strlen(tag), false);
	snprintf(tag, sizeof tag, "s=%s;", key->selector);
	fold_word(&f, " ", tag, strlen(tag), false);
	snprintf(tag, sizeof tag, "t=%lld;", (long long)t);
	fold_word(&f, " ", tag, strlen(tag), false);
	snprintf(tag, sizeof tag, "bh=%s;", s->bh);
	fold_word(&f, " ", tag, strlen(tag), false);
	for (size_t j = 0; j < s->nh; j++) {
		int n = snprintf(tag, sizeof tag, "%s%.*s%s", j == 0 ? "h=" : "", (int)s->h[j].len,
		                 s->h[j].p, j + 1 < s->nh ? ":" : ";");
		fold_word(&f, j == 0 ? " " : "", tag, (size_t)n, j > 0);
	}
	fold_word(&f, " ", "b=", 2, false);

	unsigned char d[EVP_MAX_MD_SIZE], sig[SIG_MAX];
	unsigned dlen = 0;
	size_t siglen = 0;
	buf_reset(&s->tmp);
	canon_field(&s->tmp, fb->data, fb->len, strlen("DKIM-Signature"));
	if (EVP_DigestInit_ex(s->md, s->sha256, NULL) != 1 ||
	    EVP_DigestUpdate(s->md, s->canon.data, s->canon.len) != 1 ||
	    EVP_DigestUpdate(s->md, s->tmp.data, s->tmp.len) != 1 ||
	    EVP_DigestFinal_ex(s->md, d, &dlen) != 1 ||
	    sign_digest(s, pkey, key->ed25519, d, dlen, sig, &siglen) < 0)
		return err_set(err, ERR_INTERNAL, "DKIM key %s: OpenSSL cannot sign",
		               key->selector);
	char b64[EVP_ENCODE_LENGTH(SIG_MAX)];
	int n = EVP_EncodeBlock((unsigned char *)b64, sig, (int)siglen);
	fold_b64(&f, b64, (size_t)n);
	buf_add(fb, "\r\n", 2);
	if (buf_add(out, fb->data, fb->len) < 0)
		return err_set(err, ERR_INTERNAL, "DKIM key %s: the signature does not fit",
		               key->selector);
	return 0;
}

int sign_message(struct signer *s, const struct sign_keys *k, const char *msg, size_t len,
                 struct buf *out, struct err *err)
{
	if (k == NULL || k->n == 0)
		return 0;
	if (prepare(s, msg, len, err) < 0)
		return -1;
	time_t t = time(NULL);
	for (size_t i = 0; i < k->n; i++)
		if (sign_one(s, k, i, t, out, err) < 0)
			return -1;
	return 0;
}

int sign_prepend(struct signer *s, const struct sign_keys *k, char **data, size_t *len,
                 struct err *err)
{
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	if (sign_message(s, k, *data, *len, &b, err) < 0) {
		buf_free(&b);
		return -1;
	}
	buf_add(&b, *data, *len); /* no cap on b */
	free(*data);
	*len = b.len;
	*data = buf_detach(&b);
	return 0;
}

/* ---- the check: libopendkim's verifier ----------------------------------- */

/* libopendkim's key lookup (dkim_set_key_lookup): the record of the
 * signature's selector, from the keys being checked, not from DNS. */
static DKIM_CBSTAT lookup(DKIM *d, DKIM_SIGINFO *sig, unsigned char *buf, size_t buflen)
{
	const struct sign_keys *k = dkim_get_user_context(d);
	const char *sel = (const char *)dkim_sig_getselector(sig);
	const char *dom = (const char *)dkim_sig_getdomain(sig);
	for (size_t i = 0; k && sel && dom && i < k->n; i++) {
		if (strcmp(sel, k->k[i].selector) != 0 || strcasecmp(dom, k->domain) != 0)
			continue;
		size_t n = strlen(k->k[i].record);
		if (n >= buflen)
			return DKIM_CBSTAT_ERROR;
		memcpy(buf, k->k[i].record, n + 1);
		return DKIM_CBSTAT_CONTINUE;
	}
	return DKIM_CBSTAT_NOTFOUND;
}

static bool is_dkim_field(const struct field *f)
{
	return f->namelen == strlen(DKIM_SIGNHEADER) &&
	       strncasecmp(f->p, DKIM_SIGNHEADER, f->namelen) == 0;
}

/* libopendkim's verdict on DKIM-Signature number j of the message in
 * s->f and body. */
static int verify_one(DKIM_LIB *lib, const struct sign_keys *k, struct signer *s, size_t j,
                      const char *body, size_t blen, struct err *err)
{
	DKIM_STAT st = DKIM_STAT_OK;
	DKIM *d = dkim_verify(lib, (const unsigned char *)"matrixd", NULL, &st);
	if (d == NULL)
		return err_set(err, ERR_INTERNAL, "libopendkim: dkim_verify: %s",
		               dkim_getresultstr(st));
	st = dkim_set_user_context(d, (void *)k);
	for (size_t i = 0, n = 0; i < s->nf && st == DKIM_STAT_OK; i++) {
		if (is_dkim_field(&s->f[i]) && n++ != j)
			continue; /* one signature at a time */
		st = dkim_header(d, (unsigned char *)s->f[i].p, s->f[i].len);
	}
	if (st == DKIM_STAT_OK)
		st = dkim_eoh(d);
	if (st == DKIM_STAT_OK && blen > 0)
		st = dkim_body(d, (unsigned char *)body, blen);
	if (st == DKIM_STAT_OK)
		st = dkim_eom(d, NULL);
	DKIM_SIGINFO *si = dkim_getsignature(d);
	int rc = 0;
	if (st != DKIM_STAT_OK || si == NULL || !DKIM_SIG_CHECK(si)) {
		const char *s_tag = si ? (const char *)dkim_sig_getselector(si) : NULL;
		const char *why = si && dkim_sig_getbh(si) == DKIM_SIGBH_MISMATCH
		                      ? "the body hash differs"
		                  : si ? dkim_sig_geterrorstr(dkim_sig_geterror(si))
		                       : dkim_geterror(d);
		rc = err_set(err, ERR_INTERNAL,
		             "DKIM key %s: libopendkim does not verify our signature: %s%s%s",
		             s_tag ? s_tag : "(unread)", dkim_getresultstr(st), why ? ": " : "",
		             why ? why : "");
	}
	dkim_free(d);
	return rc;
}

int sign_verify(const struct sign_keys *k, const char *msg, size_t len, struct err *err)
{
	struct signer *s = NULL;
	DKIM_LIB *lib = NULL;
	const char *body;
	int rc = -1;
	if ((s = signer_new(err)) == NULL)
		return -1;
	if (split_fields(s, msg, len, &body, err) < 0)
		goto out;
	size_t nsig = 0;
	for (size_t i = 0; i < s->nf; i++)
		nsig += is_dkim_field(&s->f[i]);
	if (nsig == 0) {
		err_set(err, ERR_INTERNAL, "no DKIM-Signature to verify");
		goto out;
	}
	if ((lib = dkim_init(NULL, NULL)) == NULL) {
		err_set(err, ERR_INTERNAL, "libopendkim: dkim_init failed");
		goto out;
	}
	if (!dkim_libfeature(lib, DKIM_FEATURE_SHA256) ||
	    !dkim_libfeature(lib, DKIM_FEATURE_ED25519)) {
		err_set(err, ERR_INTERNAL,
		        "libopendkim was built without SHA-256 or Ed25519; install Debian's "
		        "libopendkim11 (2.11)");
		goto out;
	}
	if (dkim_set_key_lookup(lib, lookup) != DKIM_STAT_OK) {
		err_set(err, ERR_INTERNAL, "libopendkim refused the key lookup");
		goto out;
	}
	for (size_t j = 0; j < nsig; j++)
		if (verify_one(lib, k, s, j, body, (size_t)(msg + len - body), err) < 0)
			goto out;
	rc = 0;
out:
	if (lib)
		dkim_close(lib);
	signer_free(s);
	return rc;
}

/* ---- loading and checking ---------------------------------------------- */

/* a is b or a subdomain of b (case-insensitive, at a label boundary). */
static bool within(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la < lb || strcasecmp(a + la - lb, b) != 0)
		return false;
	return la == lb || a[la - lb - 1] == '.';
}

static void warnf(void (*warn)(void *, const char *), void *arg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void warnf(void (*warn)(void *, const char *), void *arg, const char *fmt, ...)
{
	if (warn == NULL)
		return;
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	warn(arg, msg);
}

/* The text of the key's DNS record (RFC 6376 §3.6.1; RFC 8463 §4.2 for
 * Ed25519's raw key) from the private key, read by OpenSSL, which signs
 * with it: allocated, or NULL when OpenSSL cannot read the key. */
static char *key_record(const char *pem, bool ed25519)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *pk = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	unsigned char *der = NULL, raw[32];
	size_t rawlen = sizeof raw;
	int n = -1;
	char *rec = NULL;
	if (pk && ed25519 && EVP_PKEY_get_raw_public_key(pk, raw, &rawlen) == 1) {
		der = OPENSSL_memdup(raw, rawlen);
		n = der ? (int)rawlen : -1;
	} else if (pk && !ed25519)
		n = i2d_PUBKEY(pk, &der);
	if (n > 0 && der) {
		rec = xmalloc(32 + (size_t)EVP_ENCODE_LENGTH(n));
		int m = snprintf(rec, 32, "v=DKIM1; k=%s; p=", ed25519 ? "ed25519" : "rsa");
		EVP_EncodeBlock((unsigned char *)rec + m, der, n);
	}
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
	BIO_free(b);
	return rec;
}

/* Reads one key file: regular, the owner's alone, PEM, RSA >= 2048 or
 * Ed25519. err reads "CONF:LINE: dkim key SELECTOR (FILE): …". */
static int read_key(const struct conf *c, const struct conf_dkim_key *ck, struct sign_key *out,
                    struct err *err)
{
	const char *f = ck->key_file;
	char *text = NULL;
	gnutls_x509_privkey_t xk = NULL;
	int fd = -1, rc = -1;
#define FAIL(...) err_at(err, ERR_CONFIG, c->path, ck->line, __VA_ARGS__)
	fd = open(f, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		FAIL("dkim key %s: %s: %s", ck->selector, f, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		FAIL("dkim key %s: %s is not a regular file", ck->selector, f);
		goto out;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		FAIL("dkim key %s: %s is readable by others (mode %03o); run: chmod 600 %s",
		     ck->selector, f, (unsigned)(st.st_mode & 0777), f);
		goto out;
	}
	if (st.st_size > KEY_FILE_MAX) {
		FAIL("dkim key %s: %s is %lld bytes: not a private key", ck->selector, f,
		     (long long)st.st_size);
		goto out;
	}
	text = xmalloc((size_t)st.st_size + 1);
	ssize_t n = read(fd, text, (size_t)st.st_size);
	if (n < 0) {
		FAIL("dkim key %s: %s: %s", ck->selector, f, strerror(errno));
		goto out;
	}
	text[n] = '\0';
	/* libopendkim takes PEM only when the text starts with "-----" */
	const char *begin = strstr(text, "-----BEGIN ");
	if (begin == NULL || memchr(text, '\0', (size_t)n)) {
		FAIL("dkim key %s: %s is not a PEM private key (make one with: matrixctl "
		     "dkim-keygen --selector %s --out %s)",
		     ck->selector, f, ck->selector, f);
		goto out;
	}
	if (strstr(begin, "ENCRYPTED")) {
		FAIL("dkim key %s: %s is encrypted; matrixd needs it unencrypted (mode 600)",
		     ck->selector, f);
		goto out;
	}
	gnutls_datum_t d = {(unsigned char *)begin, (unsigned)strlen(begin)};
	unsigned bits = 0;
	int alg;
	if (gnutls_x509_privkey_init(&xk) < 0 ||
	    gnutls_x509_privkey_import2(xk, &d, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN) < 0 ||
	    (alg = gnutls_x509_privkey_get_pk_algorithm2(xk, &bits)) < 0) {
		FAIL("dkim key %s: %s does not parse as a private key", ck->selector, f);
		goto out;
	}
	if (alg == GNUTLS_PK_RSA) {
		if (bits < RSA_MIN_BITS) {
			FAIL("dkim key %s: %s is a %u-bit RSA key; receivers ignore keys under %d "
			     "bits (RFC 8301): make a new one with matrixctl dkim-keygen",
			     ck->selector, f, bits, RSA_MIN_BITS);
			goto out;
		}
	} else if (alg != GNUTLS_PK_EDDSA_ED25519) {
		FAIL("dkim key %s: %s is a %s key; DKIM signs with RSA or Ed25519", ck->selector, f,
		     gnutls_pk_algorithm_get_name((gnutls_pk_algorithm_t)alg));
		goto out;
	}
	out->ed25519 = alg == GNUTLS_PK_EDDSA_ED25519;
	if ((out->record = key_record(begin, out->ed25519)) == NULL) {
		FAIL("dkim key %s: %s: OpenSSL cannot read it", ck->selector, f);
		goto out;
	}
	if (strlen(out->record) >= RECORD_MAX) {
		FAIL("dkim key %s: %s is a %u-bit RSA key, whose DNS record is too long for "
		     "libopendkim to check (nor can OpenDKIM receivers; RFC 8301 asks "
		     "verifiers for up to 4096 bits): make one of 4096 bits or less",
		     ck->selector, f, bits);
		goto out;
	}
	out->selector = xstrdup(ck->selector);
	out->pem = xstrdup(begin);
	rc = 0;
out:
#undef FAIL
	if (xk)
		gnutls_x509_privkey_deinit(xk);
	if (text) {
		explicit_bzero(text, strlen(text));
		free(text);
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

int sign_keys_load(const struct conf *c, struct sign_keys **out,
                   void (*warn)(void *arg, const char *msg), void *arg, struct err *err)
{
	*out = NULL;
	char *from = addr_domain_of(c->site.from), *rp = addr_domain_of(c->smtp.return_path);
	/* SPF is checked on the return path's domain; DMARC counts it only
	 * when that domain is aligned with From (RFC 7489 §3.1.2). Both in
	 * their DNS form: an IDN spelt in U-labels in one is the same name. */
	if (from && rp && !within(rp, from))
		warnf(warn, arg,
		      "%s: smtp.return_path's domain %s is neither %s (site.from) nor a "
		      "subdomain of it: an SPF pass there does not count for DMARC",
		      c->path ? c->path : "defaults", rp, from);
	free(rp);
	if (!c->dkim.on) {
		free(from);
		return 0;
	}
	struct sign_keys *k = xcalloc(1, sizeof *k);
	atomic_init(&k->refs, 1);
	k->id = atomic_fetch_add(&keys_ids, 1) + 1;
	k->domain = xstrdup(c->dkim.domain);
	k->k = xcalloc(c->dkim.nkeys, sizeof *k->k);
	struct signer *s = NULL;
	for (size_t i = 0; i < c->dkim.nkeys; i++) {
		if (read_key(c, &c->dkim.keys[i], &k->k[i], err) < 0)
			goto fail;
		k->n++;
	}
	/* one signature with each key, of a message with what relaxed
	 * canonicalisation changes, that libopendkim must verify: our
	 * canonicalisation never disagrees with it unseen */
	if ((s = signer_new(err)) == NULL)
		goto fail;
	static const char probe[] = "From: Probe <a@example.org>\r\n"
	                            "To: b@example.org\r\n"
	                            "Subject:  a folded\r\n"
	                            " \t subject \r\n"
	                            "To:c@example.org\r\n"
	                            "Date: Thu, 1 Jan 1970 00:00:00 +0000\r\n"
	                            "\r\n"
	                            "two  spaces and\ta tab \t\r\n"
	                            "TWF0cml4IMK3IE5PLjYwIMK3IOWJjeayv+axgue0ogoKU3dpbiBUcmFu\r\n"
	                            " \r\n"
	                            "=E6=A0=87 quoted-printable=\r\n"
	                            "\r\n"
	                            "\t\r\n";
	struct err why;
	err_clear(&why);
	int r = prepare(s, probe, sizeof probe - 1, &why);
	for (size_t i = 0; i < k->n; i++) {
		struct buf b;
		buf_init(&b, BUF_NOLIMIT);
		if (r == 0)
			r = sign_one(s, k, i, time(NULL), &b, &why);
		if (r == 0) {
			buf_add(&b, probe, sizeof probe - 1);
			r = sign_verify(k, b.data, b.len, &why);
		}
		buf_free(&b);
		if (r < 0) {
			err_at(err, ERR_CONFIG, c->path, c->dkim.keys[i].line,
			       "dkim key %s: %s: %s", c->dkim.keys[i].selector,
			       c->dkim.keys[i].key_file, why.msg);
			goto fail;
		}
	}
	signer_free(s);
	if (from && !within(from, k->domain) && !within(k->domain, from))
		warnf(warn, arg,
		      "%s:%d: dkim.domain %s is not aligned with %s (site.from): DMARC does "
		      "not count these signatures unless both share one organizational domain",
		      c->path, c->dkim.line, k->domain, from);
	free(from);
	*out = k;
	return 0;
fail:
	signer_free(s);
	free(from);
	keys_free(k);
	return -1;
}

/* ---- key generation (GnuTLS) ------------------------------------------- */

static int b64(const gnutls_datum_t *in, struct buf *out)
{
	gnutls_datum_t enc = {NULL, 0};
	if (gnutls_base64_encode2(in, &enc) < 0)
		return -1;
	buf_add(out, enc.data, enc.size);
	gnutls_free(enc.data);
	return 0;
}

int sign_keygen(enum sign_type type, int bits, struct buf *pem, struct buf *p, struct err *err)
{
	gnutls_x509_privkey_t xk = NULL;
	gnutls_privkey_t pk = NULL;
	gnutls_pubkey_t pub = NULL;
	gnutls_datum_t text = {NULL, 0}, der = {NULL, 0}, x = {NULL, 0};
	gnutls_ecc_curve_t curve;
	int rc = -1, r;
	if (type == SIGN_RSA && (bits < RSA_MIN_BITS || bits > 4096))
		return err_set(err, ERR_USAGE, "--bits must be between %d and 4096", RSA_MIN_BITS);
	if ((r = gnutls_x509_privkey_init(&xk)) < 0 ||
	    (r = type == SIGN_RSA
	             ? gnutls_x509_privkey_generate2(xk, GNUTLS_PK_RSA, (unsigned)bits, 0, NULL, 0)
	             : gnutls_x509_privkey_generate2(xk, GNUTLS_PK_EDDSA_ED25519,
	                                             GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_ED25519),
	                                             0, NULL, 0)) < 0 ||
	    /* PKCS#8, unencrypted: "BEGIN PRIVATE KEY", which OpenSSL (so
	     * libopendkim) reads for both types */
	    (r = gnutls_x509_privkey_export2_pkcs8(xk, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN,
	                                           &text)) < 0 ||
	    (r = gnutls_privkey_init(&pk)) < 0 || (r = gnutls_privkey_import_x509(pk, xk, 0)) < 0 ||
	    (r = gnutls_pubkey_init(&pub)) < 0 ||
	    (r = gnutls_pubkey_import_privkey(pub, pk, 0, 0)) < 0)
		goto fail;
	if (type == SIGN_RSA)
		r = gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &der);
	else
		r = gnutls_pubkey_export_ecc_raw2(pub, &curve, &x, NULL, 0);
	if (r < 0 || b64(type == SIGN_RSA ? &der : &x, p) < 0)
		goto fail;
	buf_add(pem, text.data, text.size);
	rc = 0;
	goto out;
fail:
	err_set(err, ERR_INTERNAL, "cannot make the key: GnuTLS: %s", gnutls_strerror(r));
out:
	if (text.data) {
		explicit_bzero(text.data, text.size);
		gnutls_free(text.data);
	}
	gnutls_free(der.data);
	gnutls_free(x.data);
	if (pub)
		gnutls_pubkey_deinit(pub);
	if (pk)
		gnutls_privkey_deinit(pk);
	if (xk)
		gnutls_x509_privkey_deinit(xk);
	return rc;
}
