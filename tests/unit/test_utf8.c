/* UTF-8 validation, cleaning, width and the RFC 2047 encoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <gnutls/gnutls.h>

#include "buf.h"
#include "utf8.h"

static void test_valid(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		bool ok;
		size_t bad;
	} cases[] = {
	    {"plain ascii", true, 0},
	    {"中文 and Ünïcödé 😀", true, 0},
	    {"ab\xc0\xaf", false, 2},         /* overlong '/' */
	    {"\xed\xa0\x80", false, 0},       /* surrogate */
	    {"x\xf4\x90\x80\x80", false, 1},  /* above U+10FFFF */
	    {"\xe4\xb8", false, 0},           /* truncated */
	    {"ok\xff", false, 2},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t bad = 99;
		assert_int_equal(utf8_valid(cases[i].s, strlen(cases[i].s), &bad), cases[i].ok);
		if (!cases[i].ok)
			assert_int_equal(bad, cases[i].bad);
	}
}

static void test_clean(void **state)
{
	(void)state;
	char *s = utf8_clean_dup("a\x01" "b\r\nc\td\x7f\xc2\x85" "e\xff", 0);
	assert_string_equal(s, "ab  c de\xef\xbf\xbd");
	free(s);
	s = utf8_clean_dup("a\nb\tc\xef\xbf\xbe", UTF8_KEEP_NL | UTF8_XML);
	assert_string_equal(s, "a\nb\tc");
	free(s);
}

static void test_width(void **state)
{
	(void)state;
	assert_int_equal(utf8_width("abc"), 3);
	assert_int_equal(utf8_width("中文"), 4);
	assert_int_equal(utf8_width("ＡＢ"), 4);
	assert_int_equal(utf8_len("中文ab"), 4);
	assert_int_equal(utf8_prefix("中文ab", 1), 3);
	assert_true(utf8_is_han(0x4e2d));
	assert_false(utf8_is_han('a'));
}

static char *decode_words(const char *enc)
{
	/* Decodes our own output: "=?UTF-8?B?…?=" words separated by spaces. */
	struct buf out;
	buf_init(&out, BUF_NOLIMIT);
	const char *p = enc;
	while (*p) {
		if (*p == ' ') {
			p++;
			continue;
		}
		assert_true(strncmp(p, "=?UTF-8?B?", 10) == 0);
		const char *s = p + 10, *e = strstr(s, "?=");
		assert_non_null(e);
		assert_true(e + 2 - p <= 75);
		gnutls_datum_t in = {(unsigned char *)s, (unsigned)(e - s)}, dec;
		assert_int_equal(gnutls_base64_decode2(&in, &dec), 0);
		/* each word holds whole characters */
		assert_true(utf8_valid((char *)dec.data, dec.size, NULL));
		buf_add(&out, dec.data, dec.size);
		gnutls_free(dec.data);
		p = e + 2;
	}
	return buf_detach(&out);
}

static void test_rfc2047(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	utf8_rfc2047(&b, "Plain ASCII subject");
	assert_string_equal(buf_str(&b), "Plain ASCII subject");
	buf_reset(&b);
	utf8_rfc2047(&b, "Injected\r\nBcc: victim@example.org");
	assert_null(strchr(buf_str(&b), '\r'));
	assert_null(strchr(buf_str(&b), '\n'));
	buf_reset(&b);
	const char *title = "Swin Transformer 迎来 30 亿参数的 v2.0，我们应该拥抱视觉大模型吗？"
			    "一个很长很长的标题用来测试分词是否只在字符边界";
	utf8_rfc2047(&b, title);
	for (const char *p = buf_str(&b); *p; p++)
		assert_true((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
	char *back = decode_words(buf_str(&b));
	assert_string_equal(back, title);
	free(back);
	buf_reset(&b);
	utf8_rfc2047(&b, "=?UTF-8?B?looks encoded?=");
	assert_true(strncmp(buf_str(&b), "=?UTF-8?B?", 10) == 0);
	back = decode_words(buf_str(&b));
	assert_string_equal(back, "=?UTF-8?B?looks encoded?=");
	free(back);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid),
	    cmocka_unit_test(test_clean),
	    cmocka_unit_test(test_width),
	    cmocka_unit_test(test_rfc2047),
	};
	return cmocka_run_group_tests_name("utf8", tests, NULL, NULL);
}
