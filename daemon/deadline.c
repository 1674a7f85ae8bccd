/* The event loop's next wake-up (see deadline.h). */
#include "deadline.h"

static void nearest(int64_t *acc, int64_t t)
{
	if (t > 0 && (*acc == 0 || t < *acc))
		*acc = t;
}

int64_t loop_deadline(const struct loop_timers *t)
{
	int64_t wake = 0;
	if (!t->stopping) {
		nearest(&wake, t->settle);
		if (!t->relay_down && t->due_in_s > 0)
			nearest(&wake, t->now + t->due_in_s * 1000);
	} else if (t->stop != INT64_MAX) {
		nearest(&wake, t->stop);
	}
	nearest(&wake, t->dispatch);
	nearest(&wake, t->watchdog);
	nearest(&wake, t->status);
	if (t->http_in >= 0)
		nearest(&wake, t->now + (t->http_in > 0 ? t->http_in : 1));
	if (wake != 0 && wake < t->now + 1)
		wake = t->now + 1;
	return wake;
}
