/*
 * DKIM signing with libopendkim (see sign.h). The library does the
 * canonicalisation, the header selection, the tags and the signature; we
 * hand it each header field and the body of a finished message and put its
 * DKIM-Signature in front. Keys are read and checked once, here, with
 * GnuTLS (type, size, PEM form), then proven with one real signature, so
 * that a bad key stops `matrixd -n` and the start rather than the first
 * message. docs/libraries.md (libopendkim) explains the choices: one
 * library handle per thread, the options passed by pointer size, the PEM
 * text handed from its "-----BEGIN" line.
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
#include <unistd.h>

#include <dlfcn.h>
#include <pthread.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <opendkim/dkim.h>

#include "addr.h"
#include "sign.h"
#include "xmalloc.h"

#define KEY_FILE_MAX (64 * 1024)
#define RSA_MIN_BITS 2048

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
	char *pem; /* from its "-----BEGIN" line on */
	bool ed25519;
};

struct sign_keys {
	atomic_int refs;
	unsigned long id; /* unique per load: a signer's cache names it */
	char *domain;
	struct sign_key *k;
	size_t n;
};

/*
 * libopendkim parses the PEM text of the key again for every signature
 * (dkim_privkey_load), and in Debian 12's OpenSSL 3.0 that parse costs
 * 0.5 to 0.8 ms, more than an RSA-2048 signature; a freshly parsed RSA key
 * also pays its blinding and Montgomery set-up again. So each signer keeps
 * its keys parsed once (pkeys, by index in the sign_keys it last used),
 * and while it is inside libopendkim (`inside`) our PEM_read_bio_PrivateKey
 * below hands libopendkim a reference to the parsed key instead of parsing.
 *
 * The same hook repairs a leak: for an Ed25519 signature dkim_free()
 * releases neither the key nor the 64-byte signature buffer (it frees
 * them for RSA only), 0.5 KB per message. The signer notes both and
 * releases them after dkim_free(), on the libopendkim version known to
 * leak (docs/libraries.md, libopendkim).
 */
struct signer {
	DKIM_LIB *lib;
	unsigned long keys_id; /* the sign_keys whose pkeys these are */
	EVP_PKEY **pkeys;
	size_t npkeys;
	/* the signature in progress */
	const struct sign_key *key;
	EVP_PKEY *pkey; /* parsed key of `key` */
	bool lent;      /* libopendkim took a reference to pkey */
	bool want_out;  /* the next allocation is libopendkim's signature buffer */
	void *out;
	unsigned long hits;
};

static _Thread_local struct signer *inside;
static atomic_ulong keys_ids;

/* libopendkim 2.11.0 (Debian 12), whose dkim_free() leaks for Ed25519. */
#define LEAKY_ED25519 0x020B0000

typedef EVP_PKEY *(*pem_reader)(BIO *, EVP_PKEY **, pem_password_cb *, void *);
static pem_reader real_pem_read;
static pthread_once_t real_once = PTHREAD_ONCE_INIT;

static void find_real(void)
{
	real_pem_read = (pem_reader)dlsym(RTLD_NEXT, "PEM_read_bio_PrivateKey");
}

/*
 * Stands in for OpenSSL's PEM_read_bio_PrivateKey (libopendkim calls it
 * through the PLT): inside a signature, for the text of the key being
 * used, a new reference to the key parsed before; for anything else, the
 * real function.
 */
EVP_PKEY *PEM_read_bio_PrivateKey(BIO *bp, EVP_PKEY **x, pem_password_cb *cb, void *u)
{
	struct signer *s = inside;
	pthread_once(&real_once, find_real);
	if (s && s->pkey && x == NULL && !s->lent) {
		char *data = NULL;
		long n = BIO_get_mem_data(bp, &data);
		if (n > 0 && data && (size_t)n == strlen(s->key->pem) &&
		    memcmp(data, s->key->pem, (size_t)n) == 0 && EVP_PKEY_up_ref(s->pkey) == 1) {
			s->lent = true;
			s->want_out = s->key->ed25519;
			s->hits++;
			return s->pkey;
		}
	}
	if (real_pem_read == NULL)
		return NULL;
	return real_pem_read(bp, x, cb, u);
}

/* libopendkim's allocator (dkim_init): plain malloc, but the signature
 * buffer of an Ed25519 key is noted to be freed after dkim_free(). */
static void *dk_malloc(void *closure, size_t n)
{
	(void)closure;
	void *p = malloc(n);
	struct signer *s = inside;
	if (s && s->want_out) {
		s->want_out = false;
		s->out = p;
	}
	return p;
}

static void dk_free(void *closure, void *p)
{
	(void)closure;
	struct signer *s = inside;
	if (s && p == s->out)
		s->out = NULL;
	free(p);
}

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
		pthread_once(&real_once, find_real);
		BIO *b = BIO_new_mem_buf(k->k[i].pem, -1);
		if (b && real_pem_read)
			s->pkeys[i] = real_pem_read(b, NULL, NULL, NULL);
		BIO_free(b);
	}
	return s->pkeys[i];
}

static void keys_free(struct sign_keys *k)
{
	for (size_t i = 0; i < k->n; i++) {
		free(k->k[i].selector);
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
	DKIM_LIB *lib = dkim_init(dk_malloc, dk_free);
	if (lib == NULL) {
		err_set(err, ERR_INTERNAL, "libopendkim: dkim_init failed");
		return NULL;
	}
	if (!dkim_libfeature(lib, DKIM_FEATURE_SHA256) ||
	    !dkim_libfeature(lib, DKIM_FEATURE_ED25519) ||
	    !dkim_libfeature(lib, DKIM_FEATURE_OVERSIGN)) {
		dkim_close(lib);
		err_set(err, ERR_INTERNAL,
		        "libopendkim was built without SHA-256, Ed25519 or over-signing; "
		        "install Debian's libopendkim11 (2.11)");
		return NULL;
	}
	/* The option takes the array itself and sizeof(char **): any other
	 * length is refused, and without the option every header is signed. */
	if (dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS, (void *)sign_headers,
	                 sizeof(char **)) != DKIM_STAT_OK ||
	    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS, (void *)oversign,
	                 sizeof(char **)) != DKIM_STAT_OK) {
		dkim_close(lib);
		err_set(err, ERR_INTERNAL, "libopendkim refused the header lists");
		return NULL;
	}
	struct signer *s = xcalloc(1, sizeof *s);
	s->lib = lib;
	return s;
}

void signer_free(struct signer *s)
{
	if (s == NULL)
		return;
	dkim_close(s->lib);
	for (size_t j = 0; j < s->npkeys; j++)
		EVP_PKEY_free(s->pkeys[j]);
	free(s->pkeys);
	free(s);
}

/* After dkim_free(): what libopendkim 2.11.0 leaves behind for Ed25519. */
static void settle(struct signer *s)
{
	if (s->lent && s->key->ed25519 && dkim_libversion() == LEAKY_ED25519) {
		EVP_PKEY_free(s->pkey);
		free(s->out);
	}
	s->key = NULL;
	s->pkey = NULL;
	s->lent = s->want_out = false;
	s->out = NULL;
	inside = NULL;
}

/* One signature of msg by key i of k, appended to out. */
static int sign_one(struct signer *s, const struct sign_keys *k, size_t i, const char *msg,
                    size_t len, struct buf *out, struct err *err)
{
	const struct sign_key *key = &k->k[i];
	const char *domain = k->domain;
	DKIM_STAT st = DKIM_STAT_OK;
	s->key = key;
	s->pkey = parsed(s, k, i);
	inside = s;
	DKIM *d = dkim_sign(s->lib, (const unsigned char *)"matrixd", NULL, (dkim_sigkey_t)key->pem,
	                    (const unsigned char *)key->selector, (const unsigned char *)domain,
	                    DKIM_CANON_RELAXED, DKIM_CANON_RELAXED,
	                    key->ed25519 ? DKIM_SIGN_ED25519SHA256 : DKIM_SIGN_RSASHA256, -1, &st);
	if (d == NULL) {
		settle(s);
		return err_set(err, ERR_INTERNAL, "DKIM key %s: libopendkim: %s", key->selector,
		               dkim_getresultstr(st));
	}
	/* header fields one by one, folding kept, without the final CRLF */
	const char *p = msg, *end = msg + len;
	while (st == DKIM_STAT_OK) {
		if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
			p += 2;
			break;
		}
		const char *q = p;
		for (;;) {
			q = memmem(q, (size_t)(end - q), "\r\n", 2);
			if (q == NULL || q + 2 >= end || (q[2] != ' ' && q[2] != '\t'))
				break;
			q += 2;
		}
		if (q == NULL) {
			st = DKIM_STAT_SYNTAX;
			break;
		}
		st = dkim_header(d, (unsigned char *)p, (size_t)(q - p));
		p = q + 2;
	}
	if (st == DKIM_STAT_OK)
		st = dkim_eoh(d);
	if (st == DKIM_STAT_OK && p < end)
		st = dkim_body(d, (unsigned char *)p, (size_t)(end - p));
	if (st == DKIM_STAT_OK)
		st = dkim_eom(d, NULL);
	unsigned char *hdr = NULL;
	size_t hlen = 0;
	if (st == DKIM_STAT_OK)
		st = dkim_getsighdr_d(d, strlen(DKIM_SIGNHEADER ": "), &hdr, &hlen);
	int rc = 0;
	if (st != DKIM_STAT_OK) {
		const char *why = dkim_geterror(d);
		rc = err_set(err, ERR_INTERNAL, "DKIM key %s: cannot sign: %s%s%s", key->selector,
		             dkim_getresultstr(st), why ? ": " : "", why ? why : "");
	} else {
		buf_adds(out, DKIM_SIGNHEADER ": ");
		buf_add(out, hdr, hlen);
		buf_adds(out, "\r\n");
	}
	dkim_free(d);
	settle(s);
	return rc;
}

int sign_message(struct signer *s, const struct sign_keys *k, const char *msg, size_t len,
                 struct buf *out, struct err *err)
{
	for (size_t i = 0; k && i < k->n; i++)
		if (sign_one(s, k, i, msg, len, out, err) < 0)
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
	out->selector = xstrdup(ck->selector);
	out->pem = xstrdup(begin);
	out->ed25519 = alg == GNUTLS_PK_EDDSA_ED25519;
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
	/* one signature with each key: libopendkim (OpenSSL) must read what
	 * GnuTLS accepted */
	if ((s = signer_new(err)) == NULL)
		goto fail;
	static const char probe[] = "From: <a@example.org>\r\nSubject: probe\r\n\r\nprobe\r\n";
	for (size_t i = 0; i < k->n; i++) {
		struct buf b;
		buf_init(&b, BUF_NOLIMIT);
		struct err why;
		err_clear(&why);
		int r = sign_one(s, k, i, probe, sizeof probe - 1, &b, &why);
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
	if (type == SIGN_RSA && (bits < RSA_MIN_BITS || bits > 8192))
		return err_set(err, ERR_USAGE, "--bits must be between %d and 8192", RSA_MIN_BITS);
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
