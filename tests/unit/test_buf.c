/* The capped buffer: growth, the cap, NUL termination, detach. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "text.h"

static void test_grow_and_terminate(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	assert_string_equal(buf_str(&b), "");
	for (int i = 0; i < 1000; i++)
		assert_int_equal(buf_printf(&b, "%03d", i), 0);
	assert_int_equal(b.len, 3000);
	assert_int_equal(b.data[b.len], '\0');
	assert_memory_equal(b.data + 2997, "999", 3);
	buf_truncate(&b, 3);
	assert_string_equal(b.data, "000");
	buf_reset(&b);
	assert_string_equal(buf_str(&b), "");
	buf_free(&b);
}

static void test_cap(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 8);
	assert_int_equal(buf_adds(&b, "12345678"), 0);
	assert_int_equal(buf_addc(&b, 'x'), -1);
	assert_int_equal(buf_printf(&b, "%s", "y"), -1);
	assert_int_equal(b.len, 8);
	assert_string_equal(b.data, "12345678");
	assert_int_equal(buf_add(&b, "", 0), 0);
	buf_free(&b);
	buf_init(&b, 4);
	assert_int_equal(buf_adds(&b, "12345"), -1);
	assert_int_equal(b.len, 0);
	buf_free(&b);
}

static void test_detach(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 100);
	char *s = buf_detach(&b);
	assert_string_equal(s, "");
	free(s);
	buf_adds(&b, "hello");
	s = buf_detach(&b);
	assert_string_equal(s, "hello");
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	free(s);
	buf_free(&b);
}

/* The one HTML escape every output uses: safe in text and in attributes
 * of either quote. */
static void test_html_escape(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	const char *s = "a<b>&\"c\"'d' 中文";
	assert_int_equal(html_escape(&b, s, strlen(s)), 0);
	assert_string_equal(buf_str(&b), "a&lt;b&gt;&amp;&quot;c&quot;&#39;d&#39; 中文");
	buf_free(&b);
	assert_int_equal(hex_value('0'), 0);
	assert_int_equal(hex_value('f'), 15);
	assert_int_equal(hex_value('F'), 15);
	assert_int_equal(hex_value('g'), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_grow_and_terminate),
	    cmocka_unit_test(test_cap),
	    cmocka_unit_test(test_detach),
	    cmocka_unit_test(test_html_escape),
	};
	return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}
