/* HMAC-SHA256 tokens for links and VERP addresses (see token.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "fsutil.h"
#include "text.h"
#include "token.h"

static const char *purpose_word(enum token_purpose p)
{
	switch (p) {
	case TOKEN_UNSUBSCRIBE:
		return "unsubscribe";
	case TOKEN_CONFIRM:
		return "confirm";
	case TOKEN_VERP:
		return "verp";
	case TOKEN_PREFS:
		return "prefs";
	}
	return "?";
}

/* The purposes whose token names one id, and how many hex digits of MAC. */
static bool one_id(enum token_purpose p)
{
	return p == TOKEN_VERP || p == TOKEN_PREFS;
}

static size_t mac_digits(enum token_purpose p)
{
	return p == TOKEN_VERP ? 16 : 32;
}

/* Where a dash splits the MAC in two, or 0: every 128-bit MAC's (see
 * token.h). */
static size_t mac_split(enum token_purpose p)
{
	return mac_digits(p) == 32 ? 16 : 0;
}

/* Whether a MAC in one run is taken too: the unsubscribe and confirm links
 * mailed before their MAC came in halves. */
static bool takes_whole(enum token_purpose p)
{
	return p == TOKEN_UNSUBSCRIBE || p == TOKEN_CONFIRM;
}

int token_key_load(struct token_key *k, const char *state_dir, bool create, struct err *err)
{
	char path[4096], hex[65];
	snprintf(path, sizeof path, "%s/%s", state_dir, TOKEN_SECRET_FILE);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT && !create)
		return err_set(err, ERR_NOTFOUND,
		               "%s does not exist yet: matrixd makes it when it first starts",
		               path);
	if (fd < 0 && errno == ENOENT) {
		unsigned char raw[32];
		if (gnutls_rnd(GNUTLS_RND_KEY, raw, sizeof raw) < 0)
			return err_set(err, ERR_INTERNAL, "cannot get random bytes for %s", path);
		for (size_t i = 0; i < sizeof raw; i++)
			snprintf(hex + 2 * i, 3, "%02x", raw[i]);
		char tmp[4200];
		snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", state_dir, TOKEN_SECRET_FILE);
		int w = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
		if (w < 0)
			return err_sys(err, "%s", path);
		hex[64] = '\n';
		int r = fs_write_all(w, tmp, hex, 65, err);
		if (r == 0 && fsync(w) < 0)
			r = err_sys(err, "%s", tmp);
		if (close(w) < 0 && r == 0)
			r = err_sys(err, "%s", tmp);
		/* link() fails if another process created the secret meanwhile: keep theirs. */
		if (r == 0 && link(tmp, path) < 0 && errno != EEXIST)
			r = err_sys(err, "%s", path);
		unlink(tmp);
		if (r == 0)
			r = fs_sync_dir(state_dir, err);
		if (r < 0)
			return -1;
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	}
	if (fd < 0)
		return err_sys(err, "%s", path);
	struct stat st;
	if (fstat(fd, &st) < 0 || (st.st_mode & 077)) {
		close(fd);
		return err_set(err, ERR_CONFIG,
		               "%s must be readable by its owner only; run: chmod 600 %s", path,
		               path);
	}
	ssize_t n = read(fd, hex, 64);
	close(fd);
	if (n != 64)
		return err_set(err, ERR_CONFIG,
		               "%s: expected 64 hex digits; delete it to make a new one "
		               "(outstanding links stop working)",
		               path);
	for (int i = 0; i < 32; i++) {
		int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return err_set(err, ERR_CONFIG, "%s: expected 64 hex digits", path);
		k->secret[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

void token_key_random(struct token_key *k)
{
	if (gnutls_rnd(GNUTLS_RND_RANDOM, k->secret, sizeof k->secret) < 0)
		memset(k->secret, 0x5a, sizeof k->secret);
}

/*
 * HMAC-SHA256 of a short message is four SHA-256 blocks, two of them the
 * key's inner and outer pads: the same for every token of a key. They are
 * hashed once per key and thread, and each token starts from a copy of
 * that keyed state (gnutls_hmac_copy): three tokens a message (four with
 * the preference link) cost what two did (callgrind, bench/send).
 */
static _Thread_local struct {
	unsigned char secret[32];
	gnutls_hmac_hd_t h;
} keyed;

static void hmac(const struct token_key *k, const char *msg, size_t n, unsigned char mac[32])
{
	if (keyed.h == NULL || memcmp(keyed.secret, k->secret, sizeof keyed.secret) != 0) {
		if (keyed.h)
			gnutls_hmac_deinit(keyed.h, NULL);
		keyed.h = NULL;
		if (gnutls_hmac_init(&keyed.h, GNUTLS_MAC_SHA256, k->secret, sizeof k->secret) < 0)
			keyed.h = NULL;
		else
			memcpy(keyed.secret, k->secret, sizeof keyed.secret);
	}
	gnutls_hmac_hd_t c = keyed.h ? gnutls_hmac_copy(keyed.h) : NULL;
	if (c == NULL || gnutls_hmac(c, msg, n) < 0) {
		if (c)
			gnutls_hmac_deinit(c, NULL);
		gnutls_hmac_fast(GNUTLS_MAC_SHA256, k->secret, sizeof k->secret, msg, n, mac);
		return;
	}
	gnutls_hmac_deinit(c, mac);
}

static void mac_hex(const struct token_key *k, enum token_purpose p, const char *ids, size_t nhex,
                    char *out)
{
	char msg[128];
	unsigned char mac[32];
	int n = snprintf(msg, sizeof msg, "%s:%s", purpose_word(p), ids);
	hmac(k, msg, (size_t)n, mac);
	/* two tokens per message: a snprintf per byte was a third of
	 * token_make's instructions (callgrind, bench/send) */
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < nhex / 2; i++) {
		out[2 * i] = digits[mac[i] >> 4];
		out[2 * i + 1] = digits[mac[i] & 15];
	}
	out[nhex] = '\0';
}

void token_make(const struct token_key *k, enum token_purpose p, int64_t a, int64_t b, char *out)
{
	char ids[64], mac[65];
	if (one_id(p))
		snprintf(ids, sizeof ids, "%" PRId64, a);
	else
		snprintf(ids, sizeof ids, "%" PRId64 "-%" PRId64, a, b);
	mac_hex(k, p, ids, mac_digits(p), mac);
	size_t h = mac_split(p);
	if (h)
		snprintf(out, TOKEN_MAX, "%s-%.*s-%s", ids, (int)h, mac, mac + h);
	else
		snprintf(out, TOKEN_MAX, "%s-%s", ids, mac);
}

static bool parse_id(const char **p, const char *end, int64_t *v)
{
	int64_t x = 0;
	const char *s = *p;
	if (s >= end || *s < '0' || *s > '9' || (*s == '0' && s + 1 < end && s[1] != '-'))
		return false;
	for (; s < end && *s >= '0' && *s <= '9'; s++) {
		int d = *s - '0';
		if (x > (INT64_MAX - d) / 10)
			return false; /* token_make writes up to INT64_MAX; more is no id */
		x = x * 10 + d;
	}
	*p = s;
	*v = x;
	return true;
}

bool token_check(const struct token_key *k, enum token_purpose p, const char *tok, size_t len,
                 int64_t *a, int64_t *b)
{
	const char *s = tok, *end = tok + len;
	int64_t x = 0, y = 0;
	if (!parse_id(&s, end, &x) || s >= end || *s++ != '-')
		return false;
	if (!one_id(p) && (!parse_id(&s, end, &y) || s >= end || *s++ != '-'))
		return false;
	size_t nhex = mac_digits(p), h = mac_split(p);
	if (h && (size_t)(end - s) == nhex && takes_whole(p))
		h = 0;
	if ((size_t)(end - s) != nhex + (h ? 1 : 0) || (h && s[h] != '-'))
		return false;
	char ids[64], want[65], got[65];
	if (one_id(p))
		snprintf(ids, sizeof ids, "%" PRId64, x);
	else
		snprintf(ids, sizeof ids, "%" PRId64 "-%" PRId64, x, y);
	mac_hex(k, p, ids, nhex, want);
	for (size_t i = 0; i < nhex; i++) {
		char c = s[h && i >= h ? i + 1 : i];
		got[i] = (char)((c >= 'A' && c <= 'F') ? c + 32 : c);
	}
	unsigned diff = 0;
	for (size_t i = 0; i < nhex; i++)
		diff |= (unsigned)(got[i] ^ want[i]);
	if (diff != 0)
		return false;
	*a = x;
	if (b)
		*b = y;
	return true;
}
