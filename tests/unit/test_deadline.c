/*
 * Tests for daemon/deadline.c, the event loop's next wake-up: the nearest
 * timer wins, absent ones (0) never do, a deferred delivery counts only
 * while the loop takes new work and the relay is not paused, the stop
 * grace period only while stopping, libmicrohttpd's "now" is the next
 * millisecond, and nothing at all means sleeping until an fd wakes us.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "deadline.h"

#define NOW 1000000

static struct loop_timers idle(void)
{
	return (struct loop_timers){.now = NOW, .http_in = -1};
}

static void test_nothing_to_wait_for(void **state)
{
	(void)state;
	struct loop_timers t = idle();
	assert_int_equal(loop_deadline(&t), 0);
	t.due_in_s = -5; /* due already: the dispatcher handles it, no timer */
	assert_int_equal(loop_deadline(&t), 0);
}

static void test_nearest_wins(void **state)
{
	(void)state;
	struct loop_timers t = idle();
	t.settle = NOW + 2000;
	t.dispatch = NOW + 500;
	t.watchdog = NOW + 1500;
	t.status = NOW + 1000;
	assert_int_equal(loop_deadline(&t), NOW + 500);
	t.due_in_s = 1; /* a deferred delivery in a second */
	t.dispatch = 0;
	assert_int_equal(loop_deadline(&t), NOW + 1000);
	t.status = 0;
	assert_int_equal(loop_deadline(&t), NOW + 1000);
	t.due_in_s = 3600;
	assert_int_equal(loop_deadline(&t), NOW + 1500);
	t.http_in = 40;
	assert_int_equal(loop_deadline(&t), NOW + 40);
}

static void test_due_waits_while_the_relay_is_down(void **state)
{
	(void)state;
	struct loop_timers t = idle();
	t.due_in_s = 2;
	t.dispatch = NOW + 60000; /* the relay pause */
	t.relay_down = true;
	assert_int_equal(loop_deadline(&t), NOW + 60000);
	t.relay_down = false;
	assert_int_equal(loop_deadline(&t), NOW + 2000);
}

static void test_stopping(void **state)
{
	(void)state;
	struct loop_timers t = idle();
	t.stopping = true;
	t.settle = NOW + 10; /* no new issues while stopping */
	t.due_in_s = 1;      /* nor new deliveries */
	t.stop = NOW + 5000;
	assert_int_equal(loop_deadline(&t), NOW + 5000);
	t.dispatch = NOW + 1000; /* results still to record */
	assert_int_equal(loop_deadline(&t), NOW + 1000);
	t.dispatch = 0;
	t.stop = INT64_MAX; /* spent: transfers cut, only the senders' fd now */
	assert_int_equal(loop_deadline(&t), 0);
	t.stop = 0;
	t.stopping = false;
	assert_int_equal(loop_deadline(&t), NOW + 10);
}

static void test_never_in_the_past(void **state)
{
	(void)state;
	struct loop_timers t = idle();
	t.http_in = 0; /* MHD wants to run now */
	assert_int_equal(loop_deadline(&t), NOW + 1);
	t.http_in = -1;
	t.settle = NOW - 300; /* passed while we worked */
	assert_int_equal(loop_deadline(&t), NOW + 1);
	t.watchdog = NOW;
	assert_int_equal(loop_deadline(&t), NOW + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_nothing_to_wait_for),
	    cmocka_unit_test(test_nearest_wins),
	    cmocka_unit_test(test_due_waits_while_the_relay_is_down),
	    cmocka_unit_test(test_stopping),
	    cmocka_unit_test(test_never_in_the_past),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
