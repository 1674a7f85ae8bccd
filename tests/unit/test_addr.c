/*
 * Tests for lib/addr.c: every class of address the subscriber commands must
 * refuse (with the reason in the message), the valid shapes of RFC 5321 and
 * RFC 6531 they must accept, the length limits at their exact edges, the
 * key (domain in IDNA2008 ASCII form, local part kept), invisible
 * characters, and "Name <address>" parsing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <unictype.h>

#include "addr.h"
#include "utf8.h"
#include "xmalloc.h"

static void ok(const char *s, const char *key)
{
	char out[ADDR_MAX + 1];
	struct err e;
	err_clear(&e);
	if (addr_check(s, strlen(s), out, &e) != 0)
		fail_msg("'%s' refused: %s", s, e.msg);
	assert_string_equal(out, key);
}

/* Refused, with why in the message. */
static void bad_n(const char *s, size_t n, const char *why)
{
	struct err e;
	err_clear(&e);
	if (addr_check(s, n, NULL, &e) == 0)
		fail_msg("'%.*s' accepted", (int)n, s);
	assert_int_equal(e.kind, ERR_INPUT);
	if (strstr(e.msg, why) == NULL)
		fail_msg("'%.*s': message '%s' lacks '%s'", (int)n, s, e.msg, why);
	assert_non_null(strstr(e.msg, "invalid address"));
}

static void bad(const char *s, const char *why)
{
	bad_n(s, strlen(s), why);
}

static void test_valid(void **state)
{
	(void)state;
	ok("user@example.org", "user@example.org");
	ok("first.last+tag@mail.example.org", "first.last+tag@mail.example.org");
	ok("o'brien@example.ie", "o'brien@example.ie");
	ok("!#$%&'*+-/=?^_`{|}~@example.org", "!#$%&'*+-/=?^_`{|}~@example.org");
	ok("a@b-c.example", "a@b-c.example");
	ok("x@123.example.org", "x@123.example.org");
	ok("x@xn--fiqs8s.example", "x@xn--fiqs8s.example");
	/* RFC 6531: UTF-8 local parts and domain labels */
	ok("用户@例子.中国", "用户@xn--fsqu00a.xn--fiqs8s");
	ok("\"quoted.local\"@example.org", "\"quoted.local\"@example.org");
	ok("\"a\\\"b\"@example.org", "\"a\\\"b\"@example.org");
	ok("\"a..b\"@example.org", "\"a..b\"@example.org");
	ok("user@[192.0.2.1]", "user@[192.0.2.1]");
	ok("user@[IPv6:2001:db8::1]", "user@[ipv6:2001:db8::1]");
}

static void test_key_case(void **state)
{
	(void)state;
	/* RFC 5321 §2.4: the domain folds, the local part does not */
	ok("Alice.Smith@Example.ORG", "Alice.Smith@example.org");
	ok("BOB@MAIL.EXAMPLE.COM", "BOB@mail.example.com");
	char *k = addr_key("Zoe@EXAMPLE.org", NULL);
	assert_string_equal(k, "Zoe@example.org");
	free(k);
	assert_null(addr_key("no at sign", NULL));
}

static void test_forbidden_characters(void **state)
{
	(void)state;
	bad("user@example.org\r\nBcc: x@evil.example", "line break");
	bad("user\n@example.org", "line break");
	bad("user@exam\rple.org", "line break");
	bad_n("user\0x@example.org", 18, "NUL");
	bad("us\ter@example.org", "control character");
	bad("user\x7f@example.org", "control character");
	bad("us er@example.org", "space");
	bad(" user@example.org", "space");
	bad("user@example.org ", "space");
	bad("\"john doe\"@example.org", "space");
	bad("<user@example.org>", "'<' or '>'");
	bad("User <user@example.org>", "'<' or '>'"); /* space first, but both are wrong */
	bad("user>@example.org", "'<' or '>'");
	bad("\"a<b\"@example.org", "'<' or '>'");
	bad("us\xc3@example.org", "UTF-8");
	bad("\xed\xa0\x80@example.org", "UTF-8"); /* a surrogate */
}

static void test_shape(void **state)
{
	(void)state;
	bad("", "empty");
	bad("user", "no '@domain'");
	bad("user.example.org", "no '@domain'");
	bad("@example.org", "nothing before the '@'");
	bad("user@", "no domain");
	bad("a@b@example.org", "more than one '@'");
	bad(".user@example.org", "starts or ends with a dot");
	bad("user.@example.org", "starts or ends with a dot");
	bad("us..er@example.org", "two dots in a row");
	bad("us(er@example.org", "only allowed when quoted");
	bad("us,er@example.org", "only allowed when quoted");
	bad("us\\er@example.org", "only allowed when quoted");
	bad("us\"er@example.org", "quote");
	bad("\"unclosed@example.org", "not closed");
	bad("\"\"@example.org", "empty");
	bad("\"a\"b@example.org", "no '@' right after");
}

static void test_domain(void **state)
{
	(void)state;
	bad("user@localhost", "not fully qualified");
	bad("user@.example.org", "starts or ends with a dot");
	bad("user@example.org.", "starts or ends with a dot");
	bad("user@example..org", "two dots in a row");
	bad("user@-example.org", "starts or ends with '-'");
	bad("user@example-.org", "starts or ends with '-'");
	bad("user@exa_mple.org", "other than letters");
	bad("user@exam!ple.org", "other than letters");
	bad("user@192.0.2.1", "numeric");
	bad("user@[192.0.2.300]", "address literal");
	bad("user@[IPv6:2001:db8::g]", "IPv6");
	bad("user@[192.0.2.1", "not closed");
}

/* One mailbox, one key: every spelling of an internationalized domain. */
static void test_key_idna(void **state)
{
	(void)state;
	const char *key = "u@xn--bcher-kva.de";
	ok("u@bücher.de", key);
	ok("u@BÜCHER.de", key);
	ok("u@Bücher.DE", key);
	ok("u@xn--bcher-kva.de", key);
	ok("u@XN--BCHER-KVA.DE", key);
	ok("u@bu\xcc\x88"
	   "cher.de",
	   key); /* u + COMBINING DIAERESIS (NFD) */
	/* the local part is kept exactly, also its case and normalisation */
	ok("Ü@bücher.de", "Ü@xn--bcher-kva.de");
	ok("u\xcc\x88@bücher.de", "u\xcc\x88@xn--bcher-kva.de");
	/* ideographic full stop and full-width letters, as Chinese input
	 * methods type them (UTS #46 mapping) */
	ok("用户@例子。中国", "用户@xn--fsqu00a.xn--fiqs8s");
	ok("u@ｅｘａｍｐｌｅ.org", "u@example.org");
	/* non-transitional: ß is its own letter (two registrable domains) */
	ok("u@faß.de", "u@xn--fa-hia.de");
	ok("u@fass.de", "u@fass.de");
	/* ZWNJ where Persian needs it (IDNA2008 CONTEXTJ) */
	ok("u@\xd9\x85\xdb\x8c\xe2\x80\x8c\xd8\xae\xd9\x88\xd8\xa7\xd9\x87\xd9\x85.ir",
	   "u@xn--mgbn2ecje63gr19l.ir");
	bad("u@ab\xe2\x80\x8c"
	    "c.com",
	    "joiner");
	bad("u@☃.net", "IDNA2008");
	bad("u@xn--zz.de", "A-label");
	bad("u@xn--abc-.de", "A-label");
	bad("u@bü_cher.de", "other than letters");
	bad("u@bücher..de", "two dots");
	bad("u@-bücher.de", "'-'");
	/* The 63-octet limit is the A-label's: 20 ideographs make 63, 21 make 65
	 * (both are at most 63 octets in UTF-8) */
	ok("u@矩阵杂志中文研究季刊数学物理化学生命科技.cn",
	   "u@xn--fiqz7g8wab5bh2qtab402gl9fzoifhv3qw27bhzeruebso9uau4wj9cy46s.cn");
	bad("u@矩阵杂志中文研究季刊数学物理化学生命科技史.cn", "63 octets");
	char *k = addr_key("u@BÜCHER.de", NULL);
	assert_true(addr_is_ascii(k + 2, strlen(k + 2)));
	assert_false(addr_is_ascii("用户", strlen("用户")));
	free(k);
}

/* Invisible characters: named in the message, refused anywhere. */
static void test_invisible(void **state)
{
	(void)state;
	bad("u@\xe2\x80\x8b"
	    "example.org",
	    "U+200B ZERO WIDTH SPACE");
	bad("\xef\xbb\xbf"
	    "a@example.org",
	    "byte-order mark");
	bad("\xe2\x80\xae"
	    "gro.live@eve.example",
	    "bidirectional control");
	bad("a\xe2\x81\xa6"
	    "b@example.org",
	    "U+2066");
	bad("a\xe2\x80\x8e"
	    "b@example.org",
	    "U+200E");
	bad("a\xc2\xad"
	    "b@example.org",
	    "U+00AD SOFT HYPHEN");
	bad("u@exa\xc2\xad"
	    "mple.org",
	    "SOFT HYPHEN");
	bad("u@a\xe3\x80\x80"
	    "b.org",
	    "space character"); /* IDEOGRAPHIC SPACE */
	bad("a\xc2\xa0"
	    "b@example.org",
	    "space character"); /* NO-BREAK SPACE */
	bad("a\xe2\x80\xa8"
	    "b@example.org",
	    "space character");
	bad("a\xc2\x85"
	    "b@example.org",
	    "control character"); /* NEL, C1 */
	bad("a\xe2\x80\x8c"
	    "b@example.org",
	    "local part"); /* ZWNJ */
	bad("a\xef\xb8\x8f"
	    "b@example.org",
	    "invisible"); /* VARIATION SELECTOR-16 */
	bad("a\xf3\xa0\x80\x81"
	    "b@example.org",
	    "invisible"); /* LANGUAGE TAG */
	struct err e;
	err_clear(&e);
	assert_int_equal(addr_check("u@\xe2\x80\x8b"
	                            "x.org",
	                            10, NULL, &e),
	                 -1);
	assert_non_null(strstr(e.msg, "'u@<U+200B>x.org'"));
}

/*
 * The rule over every code point of the BMP, plane 1 and the tags: a
 * character inserted into a domain is refused or changes the key (IDNA's
 * mapping never drops one silently), and an address accepted with it in the
 * local part holds nothing that Unicode calls invisible.
 */
static void test_invisible_rule(void **state)
{
	(void)state;
	char s[64], key[ADDR_MAX + 1];
	struct err e;
	for (uint32_t c = 0x80; c < 0xe1000; c++) {
		if (c == 0x20000)
			c = 0xe0000;
		if (c >= 0xd800 && c <= 0xdfff)
			continue;
		char u[4];
		size_t un = utf8_put(u, c);
		int n = snprintf(s, sizeof s, "u@exa%.*smple.org", (int)un, u);
		if (addr_check(s, (size_t)n, key, &e) == 0 && strcmp(key, "u@example.org") == 0)
			fail_msg("U+%04X in a domain was dropped silently", (unsigned)c);
		n = snprintf(s, sizeof s, "a%.*sb@example.org", (int)un, u);
		if (addr_check(s, (size_t)n, key, &e) == 0 &&
		    (uc_is_property_default_ignorable_code_point(c) ||
		     uc_is_property_bidi_control(c) || uc_is_property_white_space(c) || c < 0xa0))
			fail_msg("U+%04X accepted in a local part", (unsigned)c);
	}
}

static void test_lengths(void **state)
{
	(void)state;
	char s[600], key[600];
	/* local part: 64 octets pass, 65 fail */
	memset(s, 'a', 64);
	memcpy(s + 64, "@example.org", sizeof "@example.org");
	ok(s, s);
	memset(s, 'a', 65);
	memcpy(s + 65, "@example.org", sizeof "@example.org");
	bad(s, "local part is longer than 64");

	/* a label: 63 pass, 64 fail */
	memcpy(s, "u@", 2);
	memset(s + 2, 'b', 63);
	memcpy(s + 65, ".org", sizeof ".org");
	ok(s, s);
	memset(s + 2, 'b', 64);
	memcpy(s + 66, ".org", sizeof ".org");
	bad(s, "label is longer than 63");

	/* whole address: 254 pass, 255 fail (labels of 63 and dots) */
	size_t n = 0;
	memset(s, 'l', 60);
	n = 60;
	s[n++] = '@';
	while (n < 254 - 4) {
		size_t lab = 254 - 4 - n < 63 ? 254 - 4 - n : 63;
		memset(s + n, 'd', lab);
		n += lab;
		if (n < 254 - 4)
			s[n++] = '.';
	}
	memcpy(s + n, ".org", 5);
	n += 4;
	assert_int_equal(n, 254);
	memcpy(key, s, n + 1);
	ok(s, key);
	memmove(s + 1, s, n + 1); /* one more octet in the local part */
	bad(s, "longer than 254");

	/* domain over 255 octets */
	s[0] = 'u';
	s[1] = '@';
	n = 2;
	while (n < 2 + 256) {
		memset(s + n, 'd', 50);
		n += 50;
		s[n++] = '.';
	}
	memcpy(s + n, "org", 4);
	bad(s, "domain is longer than 255");
}

static void test_message_escapes(void **state)
{
	(void)state;
	struct err e;
	err_clear(&e);
	assert_int_equal(addr_check("a\r\nb@example.org", 16, NULL, &e), -1);
	/* the message stays one printable line */
	assert_null(strchr(e.msg, '\r'));
	assert_null(strchr(e.msg, '\n'));
	assert_non_null(strstr(e.msg, "a\\x0d\\x0ab@example.org"));
}

static void named(const char *s, const char *name, const char *addr)
{
	char *n = NULL, *a = NULL;
	struct err e;
	err_clear(&e);
	if (addr_parse_named(s, &n, &a, &e) != 0)
		fail_msg("'%s' refused: %s", s, e.msg);
	assert_string_equal(n, name);
	assert_string_equal(a, addr);
	free(n);
	free(a);
}

static void named_bad(const char *s)
{
	char *n = (char *)"x", *a = (char *)"y";
	struct err e;
	err_clear(&e);
	if (addr_parse_named(s, &n, &a, &e) == 0)
		fail_msg("'%s' accepted", s);
	assert_null(n);
	assert_null(a);
	assert_true(e.msg[0] != '\0');
}

static void test_named(void **state)
{
	(void)state;
	named("Matrix 矩阵 <matrix@example.org>", "Matrix 矩阵", "matrix@example.org");
	named("  Matrix <Matrix@Example.org>  ", "Matrix", "Matrix@Example.org");
	named("\"Matrix, the magazine\" <m@example.org>", "Matrix, the magazine", "m@example.org");
	named("\"say \\\"hi\\\"\" <m@example.org>", "say \"hi\"", "m@example.org");
	named("<m@example.org>", "", "m@example.org");
	named("m@example.org", "", "m@example.org");
	named_bad("Matrix <m@example.org");
	named_bad("Matrix m@example.org>");
	named_bad("Matrix <not-an-address>");
	named_bad("Matrix\r\nBcc: x@example.org <m@example.org>");
	named_bad("\"unbalanced <m@example.org>");
	named_bad("");
}

/* The domain as DNS names it (d=, a DKIM record, EHLO): A-labels, lower case. */
static void test_domain_of(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
	    {"Matrix <matrix@Example.ORG>", "example.org"},
	    {"矩阵 <news@例子.测试>", "xn--fsqu00a.xn--0zwm56d"},
	    {"bounces+{token}@例子.测试", "xn--fsqu00a.xn--0zwm56d"},
	    {"\"a, b\" <x@mail.example.net>", "mail.example.net"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *d = addr_domain_of(cases[i][0]);
		assert_non_null(d);
		assert_string_equal(d, cases[i][1]);
		free(d);
	}
	assert_null(addr_domain_of("no address"));
	assert_null(addr_domain_of(""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid),
	    cmocka_unit_test(test_key_case),
	    cmocka_unit_test(test_forbidden_characters),
	    cmocka_unit_test(test_shape),
	    cmocka_unit_test(test_domain),
	    cmocka_unit_test(test_key_idna),
	    cmocka_unit_test(test_invisible),
	    cmocka_unit_test(test_invisible_rule),
	    cmocka_unit_test(test_lengths),
	    cmocka_unit_test(test_message_escapes),
	    cmocka_unit_test(test_named),
	    cmocka_unit_test(test_domain_of),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
