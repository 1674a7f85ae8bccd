/*
 * When the event loop must wake up if no fd does: the nearest of its
 * timers, as a pure function of what the loop knows, so that the rules
 * (what counts while stopping or while the relay is down) can be tested
 * without a loop around them (tests/unit/test_deadline.c).
 */
#ifndef MATRIXD_DEADLINE_H
#define MATRIXD_DEADLINE_H

#include <stdbool.h>
#include <stdint.h>

/* Monotonic milliseconds unless said otherwise; 0 = no such timer. */
struct loop_timers {
	int64_t now;
	int64_t settle;   /* an issue file settling (not looked at while stopping) */
	int64_t dispatch; /* the dispatcher's own: rate limit, relay pause, store retry */
	int64_t due_in_s; /* seconds until the next deferred delivery; <= 0: none, or due */
	bool relay_down;  /* the relay pauses us: due deliveries wait for dispatch */
	bool stopping;    /* SIGTERM: no new work, only the grace period */
	int64_t stop;     /* the end of the grace period; INT64_MAX once spent */
	int64_t watchdog; /* the next WATCHDOG=1 */
	int64_t status;   /* the next progress update */
	int64_t http_in;  /* libmicrohttpd's timeout, relative ms; -1 none */
};

/* The absolute time (ms) to wake at, never before now + 1 (a timerfd
 * armed with zero is disarmed); 0 when only an fd can wake the loop. */
int64_t loop_deadline(const struct loop_timers *t);

#endif
