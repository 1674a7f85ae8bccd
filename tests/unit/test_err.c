/* The error convention: the three message forms, the kinds they set, errno
 * kept, NULL accepted, and the cap of the message buffer. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"

static void test_forms(void **state)
{
	(void)state;
	struct err e;
	err_clear(&e);
	assert_int_equal(e.kind, ERR_NONE);
	assert_string_equal(e.msg, "");

	assert_int_equal(err_at(&e, ERR_INPUT, "a.md", 12, "bad %s", "date"), -1);
	assert_int_equal(e.kind, ERR_INPUT);
	assert_string_equal(e.msg, "a.md:12: bad date");
	err_at(&e, ERR_CONFIG, "m.conf", 0, "unreadable");
	assert_int_equal(e.kind, ERR_CONFIG);
	assert_string_equal(e.msg, "m.conf: unreadable");

	errno = ENOSPC;
	assert_int_equal(err_sys(&e, "write %s", "x.tmp"), -1);
	assert_int_equal(errno, ENOSPC);
	assert_int_equal(e.kind, ERR_IO);
	char want[128];
	snprintf(want, sizeof want, "write x.tmp: %s", strerror(ENOSPC));
	assert_string_equal(e.msg, want);

	assert_int_equal(err_prefix(&e, "issue %d", 60), -1);
	assert_int_equal(e.kind, ERR_IO); /* the kind stays */
	snprintf(want, sizeof want, "issue 60: write x.tmp: %s", strerror(ENOSPC));
	assert_string_equal(e.msg, want);

	assert_int_equal(err_set(&e, ERR_DB, "locked %d", 5), -1);
	assert_int_equal(e.kind, ERR_DB);
	assert_string_equal(e.msg, "locked 5");
}

static void test_null_and_cap(void **state)
{
	(void)state;
	errno = EIO;
	assert_int_equal(err_set(NULL, ERR_IO, "x"), -1);
	assert_int_equal(err_at(NULL, ERR_IO, "f", 1, "x"), -1);
	assert_int_equal(err_sys(NULL, "x"), -1);
	assert_int_equal(err_prefix(NULL, "x"), -1);
	err_clear(NULL);
	assert_int_equal(errno, EIO);

	static char big[3000];
	memset(big, 'a', sizeof big - 1);
	struct err e;
	err_at(&e, ERR_INPUT, big, 1, "%s", big);
	assert_int_equal(strlen(e.msg), sizeof e.msg - 1);
	err_set(&e, ERR_INPUT, "%s", "short");
	err_prefix(&e, "%s", big);
	assert_true(strlen(e.msg) < sizeof e.msg);
	assert_int_equal(e.msg[0], 'a');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_forms),
	    cmocka_unit_test(test_null_and_cap),
	};
	return cmocka_run_group_tests_name("err", tests, NULL, NULL);
}
