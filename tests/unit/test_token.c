/*
 * Tests for lib/token.c, the tokens that let a link or an address act on a
 * subscriber (docs/design.md, Tokens): a token made for one purpose never
 * passes as another; a truncated, extended, garbled or other-key token is
 * refused; the ids a token gives back are exactly the ids it was made for
 * (never a neighbour's, never after a failed check); and the secret file is
 * created owner-only, read back, and refused when others can read it, when
 * it is a link, or when it does not hold 64 hex digits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "token.h"

static const enum token_purpose PURPOSES[] = {TOKEN_UNSUBSCRIBE, TOKEN_CONFIRM, TOKEN_VERP,
                                              TOKEN_PREFS};
#define NPURPOSES (sizeof PURPOSES / sizeof PURPOSES[0])

/* The purposes whose token names one id only (token.h). */
static bool one_id(enum token_purpose p)
{
	return p == TOKEN_VERP || p == TOKEN_PREFS;
}

static struct token_key key_of(unsigned char fill)
{
	struct token_key k;
	memset(k.secret, fill, sizeof k.secret);
	return k;
}

static bool check(const struct token_key *k, enum token_purpose p, const char *tok, int64_t *a,
                  int64_t *b)
{
	return token_check(k, p, tok, strlen(tok), a, b);
}

static void test_round_trip_gives_back_the_ids(void **state)
{
	(void)state;
	struct token_key k = key_of(0x11);
	static const int64_t ids[] = {0, 1, 9, 10, 12, 123, 4567, 1000000007, INT64_MAX};
	size_t n = sizeof ids / sizeof ids[0];
	for (size_t p = 0; p < NPURPOSES; p++)
		for (size_t i = 0; i < n; i++)
			for (size_t j = 0; j < n; j++) {
				char tok[TOKEN_MAX];
				token_make(&k, PURPOSES[p], ids[i], ids[j], tok);
				int64_t a = -1, b = -1;
				assert_true(check(&k, PURPOSES[p], tok, &a, &b));
				assert_true(a == ids[i]);
				if (!one_id(PURPOSES[p]))
					assert_true(b == ids[j]);
				/* lowercase hex and decimal only: an MTA that folds
				 * the case of a local part cannot change it */
				for (const char *c = tok; *c; c++)
					assert_true((*c >= '0' && *c <= '9') ||
					            (*c >= 'a' && *c <= 'f') || *c == '-');
			}
	/* the shapes of token.h: SUB-LIST-MAC-MAC, DELIVERY-MAC64, SUB-MAC-MAC */
	char tok[TOKEN_MAX];
	token_make(&k, TOKEN_UNSUBSCRIBE, 12, 3, tok);
	assert_int_equal(strlen(tok), strlen("12-3-") + 16 + 1 + 16);
	assert_int_equal(tok[5 + 16], '-');
	/* the form of links mailed before the halves, one run of 32, still
	 * works; a dash anywhere else does not */
	char old[TOKEN_MAX], moved[TOKEN_MAX];
	snprintf(old, sizeof old, "%.21s%s", tok, tok + 22);
	int64_t oa = 0, ob = 0;
	assert_true(check(&k, TOKEN_UNSUBSCRIBE, old, &oa, &ob));
	assert_true(oa == 12 && ob == 3);
	snprintf(moved, sizeof moved, "%.20s-%c%s", tok, tok[20], tok + 22);
	assert_false(check(&k, TOKEN_UNSUBSCRIBE, moved, &oa, &ob));
	token_make(&k, TOKEN_CONFIRM, 12, 3, tok);
	snprintf(old, sizeof old, "%.21s%s", tok, tok + 22);
	assert_true(check(&k, TOKEN_CONFIRM, old, &oa, &ob));
	token_make(&k, TOKEN_VERP, 77, 0, tok);
	assert_int_equal(strlen(tok), strlen("77-") + 16);
	/* a VERP token names a delivery only: the second id is not in it */
	char other[TOKEN_MAX];
	token_make(&k, TOKEN_VERP, 77, 5, other);
	assert_string_equal(tok, other);
	/* a preference token names a subscriber only, with a 128-bit MAC: one
	 * link per reader, the same in every mail whatever the list; the MAC
	 * in two halves, so that no run of its letters and digits is long
	 * enough to pass for a Bitcoin address (token.h) */
	token_make(&k, TOKEN_PREFS, 77, 0, tok);
	assert_int_equal(strlen(tok), strlen("77-") + 16 + 1 + 16);
	assert_int_equal(tok[3 + 16], '-');
	token_make(&k, TOKEN_PREFS, 77, 5, other);
	assert_string_equal(tok, other);
	int64_t only = -1, untouched = -1;
	assert_true(check(&k, TOKEN_PREFS, tok, &only, &untouched));
	assert_true(only == 77);
	/* b may be NULL when the caller wants only the first id */
	int64_t a = 0;
	token_make(&k, TOKEN_CONFIRM, 4, 2, tok);
	assert_true(token_check(&k, TOKEN_CONFIRM, tok, strlen(tok), &a, NULL));
	assert_true(a == 4);
}

static void test_one_purpose_never_passes_as_another(void **state)
{
	(void)state;
	struct token_key k = key_of(0x22);
	for (int64_t a = 1; a < 40; a += 7)
		for (int64_t b = 1; b < 6; b++)
			for (size_t p = 0; p < NPURPOSES; p++) {
				char tok[TOKEN_MAX];
				token_make(&k, PURPOSES[p], a, b, tok);
				for (size_t q = 0; q < NPURPOSES; q++) {
					int64_t x = -1, y = -1;
					assert_int_equal(check(&k, PURPOSES[q], tok, &x, &y),
					                 p == q);
					if (p != q)
						assert_true(x == -1 && y == -1);
				}
			}
	/* The same ids under two purposes make two different MACs, so the
	 * confirm link of a subscription is no unsubscribe link of it. */
	char u[TOKEN_MAX], c[TOKEN_MAX];
	token_make(&k, TOKEN_UNSUBSCRIBE, 5, 7, u);
	token_make(&k, TOKEN_CONFIRM, 5, 7, c);
	assert_string_not_equal(u, c);
	assert_int_equal(strncmp(u, "5-7-", 4), 0);
	assert_int_equal(strncmp(c, "5-7-", 4), 0);
}

static void test_ids_are_never_confused(void **state)
{
	(void)state;
	struct token_key k = key_of(0x33);
	/* "1-23" and "12-3" hold the same digits: the MAC covers the dash */
	char t1[TOKEN_MAX], t2[TOKEN_MAX];
	token_make(&k, TOKEN_UNSUBSCRIBE, 1, 23, t1);
	token_make(&k, TOKEN_UNSUBSCRIBE, 12, 3, t2);
	assert_string_not_equal(strchr(t1 + 2, '-'), strchr(t2 + 3, '-'));
	int64_t a, b;
	assert_true(check(&k, TOKEN_UNSUBSCRIBE, t1, &a, &b) && a == 1 && b == 23);
	assert_true(check(&k, TOKEN_UNSUBSCRIBE, t2, &a, &b) && a == 12 && b == 3);
	/* moving the dash of a real token names other ids: refused */
	char moved[TOKEN_MAX];
	snprintf(moved, sizeof moved, "12-3%s", t1 + 4); /* "1-23-MAC" → "12-3-MAC" */
	assert_false(check(&k, TOKEN_UNSUBSCRIBE, moved, &a, &b));

	/* One id spelled another way (leading zeros, a sign, a space) is
	 * refused even with the right MAC: one id, one spelling. */
	char tok[TOKEN_MAX], alt[TOKEN_MAX + 8];
	token_make(&k, TOKEN_CONFIRM, 7, 9, tok);
	const char *mac = tok + 4;
	static const char *const spellings[] = {"07-9-", "7-09-", "+7-9-", " 7-9-",
	                                        "7 -9-", "7--9-", "-7-9-", "7-9--"};
	for (size_t i = 0; i < sizeof spellings / sizeof spellings[0]; i++) {
		snprintf(alt, sizeof alt, "%s%s", spellings[i], mac);
		a = b = -1;
		assert_false(check(&k, TOKEN_CONFIRM, alt, &a, &b));
		assert_true(a == -1 && b == -1);
	}
	/* A preference token is no unsubscribe or confirm token of some list
	 * (its one id is not "SUB-LIST"), and a VERP token of the same number
	 * is no preference token: lengths and purposes differ. */
	char p77[TOKEN_MAX], v77[TOKEN_MAX], u77[TOKEN_MAX];
	token_make(&k, TOKEN_PREFS, 77, 0, p77);
	token_make(&k, TOKEN_VERP, 77, 0, v77);
	token_make(&k, TOKEN_UNSUBSCRIBE, 77, 0, u77);
	assert_false(check(&k, TOKEN_UNSUBSCRIBE, p77, &a, &b));
	assert_false(check(&k, TOKEN_PREFS, u77, &a, &b));
	assert_false(check(&k, TOKEN_PREFS, v77, &a, &b));
	/* the first 16 digits of a preference MAC make no VERP token either */
	char cut[TOKEN_MAX];
	snprintf(cut, sizeof cut, "%.19s", p77);
	assert_false(check(&k, TOKEN_VERP, cut, &a, &b));
	snprintf(alt, sizeof alt, "77-0-%s", p77 + 3);
	assert_false(check(&k, TOKEN_PREFS, alt, &a, &b));
	assert_false(check(&k, TOKEN_UNSUBSCRIBE, alt, &a, &b));
	/* the MAC's dash moved, or left out: refused */
	char p2[TOKEN_MAX];
	snprintf(p2, sizeof p2, "77-%.15s-%c%s", p77 + 3, p77[3 + 15], p77 + 3 + 17);
	assert_false(check(&k, TOKEN_PREFS, p2, &a, &b));
	snprintf(p2, sizeof p2, "77-%.16s%s", p77 + 3, p77 + 3 + 17);
	assert_false(check(&k, TOKEN_PREFS, p2, &a, &b));
	/* an id beyond int64 never wraps around to a small one */
	snprintf(alt, sizeof alt, "9223372036854775808-1-%s", mac);
	assert_false(check(&k, TOKEN_CONFIRM, alt, &a, &b));
	snprintf(alt, sizeof alt, "18446744073709551623-%.16s", mac); /* 2^64 + 7 */
	assert_false(check(&k, TOKEN_VERP, alt, &a, &b));
	snprintf(alt, sizeof alt, "18446744073709551623-%s", p77 + 3);
	assert_false(check(&k, TOKEN_PREFS, alt, &a, &b));
}

/* Every proper prefix, every extension by one character and every
 * single-character change of tok is refused under p. */
static void assert_only_exact(const struct token_key *k, enum token_purpose p, const char *tok)
{
	size_t n = strlen(tok);
	int64_t a = -1, b = -1;
	for (size_t len = 0; len < n; len++)
		assert_false(token_check(k, p, tok, len, &a, &b));
	char buf[TOKEN_MAX + 2];
	static const char extra[] = "0a-F ";
	for (size_t i = 0; i < sizeof extra - 1; i++) {
		snprintf(buf, sizeof buf, "%s%c", tok, extra[i]);
		assert_false(check(k, p, buf, &a, &b));
		snprintf(buf, sizeof buf, "%c%s", extra[i], tok);
		assert_false(check(k, p, buf, &a, &b));
	}
	static const char subst[] = "0123456789abcdef-xZ\x01";
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < sizeof subst - 1; j++) {
			if (subst[j] == tok[i])
				continue;
			memcpy(buf, tok, n + 1);
			buf[i] = subst[j];
			assert_false(check(k, p, buf, &a, &b));
		}
	assert_true(a == -1 && b == -1);
}

static void test_truncated_and_garbled_tokens_are_refused(void **state)
{
	(void)state;
	struct token_key k = key_of(0x44);
	char tok[TOKEN_MAX];
	for (size_t p = 0; p < NPURPOSES; p++) {
		token_make(&k, PURPOSES[p], 3141, 59, tok);
		assert_only_exact(&k, PURPOSES[p], tok);
	}
	/* The length is what the caller says: a token inside a longer string
	 * (a URL path, a local part before '@') is checked by its length. */
	token_make(&k, TOKEN_VERP, 42, 0, tok);
	char addr[TOKEN_MAX + 32];
	snprintf(addr, sizeof addr, "%s@example.org", tok);
	int64_t a = 0;
	assert_true(token_check(&k, TOKEN_VERP, addr, strlen(tok), &a, NULL) && a == 42);
	assert_false(token_check(&k, TOKEN_VERP, addr, strlen(addr), &a, NULL));
	/* A token with a NUL inside its length is not the token. */
	char nul[TOKEN_MAX];
	memcpy(nul, tok, sizeof nul);
	nul[5] = '\0';
	assert_false(token_check(&k, TOKEN_VERP, nul, strlen(tok), &a, NULL));
	/* empty and junk */
	assert_false(token_check(&k, TOKEN_UNSUBSCRIBE, "", 0, &a, NULL));
	assert_false(check(&k, TOKEN_UNSUBSCRIBE, "--", &a, NULL));
	assert_false(check(&k, TOKEN_UNSUBSCRIBE, "1-2-", &a, NULL));
	assert_false(check(&k, TOKEN_VERP, "1-0000000000000000", &a, NULL));
}

/* SpamAssassin's __BITCOIN_ID: a word starting with 1 or 3 and 29 to 34
 * more base58 characters. No preference token holds such a run, whatever
 * the key and the id. */
static void test_no_preference_token_looks_like_a_bitcoin_address(void **state)
{
	(void)state;
	struct token_key k;
	for (int n = 0; n < 2000; n++) {
		if (n % 100 == 0)
			token_key_random(&k);
		char tok[TOKEN_MAX];
		token_make(&k, TOKEN_PREFS, n, 0, tok);
		size_t run = 0, longest = 0;
		for (const char *c = tok; *c; c++) {
			run = *c == '-' ? 0 : run + 1;
			if (run > longest)
				longest = run;
		}
		assert_true(longest <= 20);
		int64_t a = -1;
		assert_true(check(&k, TOKEN_PREFS, tok, &a, NULL) && a == n);
	}
}

static void test_case_folded_mac_still_passes(void **state)
{
	(void)state;
	/* an MTA that upper-cases a local part must not lose the bounce */
	struct token_key k = key_of(0x55);
	char tok[TOKEN_MAX];
	token_make(&k, TOKEN_VERP, 2024, 0, tok);
	for (char *c = tok; *c; c++)
		if (*c >= 'a' && *c <= 'f')
			*c = (char)(*c - 'a' + 'A');
	int64_t a = 0;
	assert_true(check(&k, TOKEN_VERP, tok, &a, NULL) && a == 2024);
}

static void test_another_key_refuses(void **state)
{
	(void)state;
	struct token_key k1 = key_of(0x66), k2 = key_of(0x66);
	k2.secret[31] ^= 1; /* one bit apart */
	struct token_key r1, r2;
	token_key_random(&r1);
	token_key_random(&r2);
	assert_memory_not_equal(r1.secret, r2.secret, sizeof r1.secret);
	for (size_t p = 0; p < NPURPOSES; p++) {
		char tok[TOKEN_MAX];
		int64_t a = -1, b = -1;
		token_make(&k1, PURPOSES[p], 8, 13, tok);
		assert_true(check(&k1, PURPOSES[p], tok, &a, &b));
		a = b = -1;
		assert_false(check(&k2, PURPOSES[p], tok, &a, &b));
		assert_true(a == -1 && b == -1);
		/* a preview's random key signs links that verify nowhere else */
		token_make(&r1, PURPOSES[p], 8, 13, tok);
		assert_false(check(&r2, PURPOSES[p], tok, &a, &b));
		assert_false(check(&k1, PURPOSES[p], tok, &a, &b));
	}
}

/* ---- the secret file ----------------------------------------------------- */

static char dir[] = "/tmp/matrixd-token-XXXXXX";

static const char *secret_path(void)
{
	static char p[600];
	snprintf(p, sizeof p, "%s/%s", dir, TOKEN_SECRET_FILE);
	return p;
}

static void write_secret(const char *text, mode_t mode)
{
	unlink(secret_path());
	FILE *f = fopen(secret_path(), "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(secret_path(), mode), 0);
}

static void test_secret_file(void **state)
{
	(void)state;
	struct token_key k1, k2;
	struct err e;
	unlink(secret_path());
	/* matrixctl never makes it: the daemon's user must be able to read it */
	assert_int_equal(token_key_load(&k1, dir, false, &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);
	assert_int_equal(access(secret_path(), F_OK), -1);
	assert_int_equal(token_key_load(&k1, dir, true, &e), 0);
	struct stat st;
	assert_int_equal(lstat(secret_path(), &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, 65); /* 64 hex digits and a newline */
	/* the next start reads the same key: old links keep working */
	assert_int_equal(token_key_load(&k2, dir, true, &e), 0);
	assert_memory_equal(k1.secret, k2.secret, sizeof k1.secret);

	/* readable by the group: refused, with the command that fixes it */
	chmod(secret_path(), 0640);
	assert_int_equal(token_key_load(&k2, dir, true, &e), -1);
	assert_non_null(strstr(e.msg, "chmod 600"));
	assert_non_null(strstr(e.msg, secret_path()));

	char hex[80];
	for (int i = 0; i < 64; i++)
		hex[i] = "0123456789abcdef"[i % 16];
	hex[64] = '\n';
	hex[65] = '\0';
	write_secret(hex, 0600);
	assert_int_equal(token_key_load(&k2, dir, true, &e), 0);
	assert_int_equal(k2.secret[0], 0x01);
	assert_int_equal(k2.secret[7], 0xef);

	hex[10] = 'g';
	write_secret(hex, 0600);
	assert_int_equal(token_key_load(&k2, dir, true, &e), -1);
	assert_non_null(strstr(e.msg, "64 hex digits"));
	write_secret("abcd\n", 0600);
	assert_int_equal(token_key_load(&k2, dir, true, &e), -1);
	assert_non_null(strstr(e.msg, "64 hex digits"));

	/* a link in state_dir is never followed to a key someone else chose */
	char target[600];
	snprintf(target, sizeof target, "%s/elsewhere", dir);
	hex[10] = 'a';
	write_secret(hex, 0600);
	assert_int_equal(rename(secret_path(), target), 0);
	assert_int_equal(symlink(target, secret_path()), 0);
	assert_int_equal(token_key_load(&k2, dir, true, &e), -1);
	unlink(secret_path());
	unlink(target);
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	unlink(secret_path());
	return rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_gives_back_the_ids),
	    cmocka_unit_test(test_one_purpose_never_passes_as_another),
	    cmocka_unit_test(test_ids_are_never_confused),
	    cmocka_unit_test(test_truncated_and_garbled_tokens_are_refused),
	    cmocka_unit_test(test_no_preference_token_looks_like_a_bitcoin_address),
	    cmocka_unit_test(test_case_folded_mac_still_passes),
	    cmocka_unit_test(test_another_key_refuses),
	    cmocka_unit_test(test_secret_file),
	};
	return cmocka_run_group_tests_name("token", tests, setup, teardown);
}
