/*
 * Scheduled issues (the front matter's send_at, docs/design.md "Scheduled
 * issues"). Until its time an issue is only rendered for its editors
 * (publish.c); the store remembers the schedule, so a restart changes
 * nothing. The daemon keeps one timer for the earliest send_at: a
 * CLOCK_REALTIME timerfd armed at that absolute wall-clock time, which
 * fires at the right moment whatever happens to the clock meanwhile
 * (TFD_TIMER_CANCEL_ON_SET wakes us when it is set, and we re-arm). When it
 * fires, each due issue is processed again from its file, which publishes
 * and queues it, or holds it when the time was missed by more than
 * schedule_grace.
 *
 * An issue that cannot be published at its time (the file no longer
 * parses, the store refused) is retried a minute later, not in a loop; its
 * file changing retries it at once.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "archive.h"
#include "log.h"
#include "matrixd.h"
#include "xmalloc.h"

#define STUCK_RETRY 60 /* seconds before an issue that failed at its time is tried again */

struct stuck {
	int64_t id, retry_at;
};

struct schedule {
	int fd;
	int64_t armed; /* wall-clock second the timer is set for, 0 = disarmed */
	struct stuck *stuck;
	size_t nstuck;
};

int schedule_start(struct schedule **out)
{
	struct schedule *s = xcalloc(1, sizeof *s);
	s->fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
	if (s->fd < 0) {
		log_warn("timerfd_create(CLOCK_REALTIME)");
		free(s);
		return -1;
	}
	*out = s;
	return 0;
}

void schedule_free(struct schedule *s)
{
	if (s == NULL)
		return;
	if (s->fd >= 0)
		close(s->fd);
	free(s->stuck);
	free(s);
}

int schedule_fd(struct schedule *s)
{
	return s ? s->fd : -1;
}

static struct stuck *stuck_find(struct schedule *s, int64_t id)
{
	for (size_t i = 0; i < s->nstuck; i++)
		if (s->stuck[i].id == id)
			return &s->stuck[i];
	return NULL;
}

void schedule_retry_now(struct schedule *s)
{
	if (s)
		s->nstuck = 0;
}

static void arm(struct schedule *s, int64_t when)
{
	if (when == s->armed)
		return;
	struct itimerspec its = {0};
	if (when > 0)
		its.it_value.tv_sec = (time_t)when; /* 0 would disarm: when >= 1 */
	if (timerfd_settime(s->fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its, NULL) < 0) {
		log_warn("timerfd_settime");
		return;
	}
	s->armed = when;
}

void schedule_refresh(struct daemon *d)
{
	struct schedule *s = d->schedule;
	if (s == NULL)
		return;
	struct archive_scheduled *a = NULL;
	size_t n = 0;
	struct err e;
	if (archive_scheduled_list(d->store, &a, &n, &e) < 0) {
		log_warnx("schedule: %s; looking again in %d s", e.msg, STUCK_RETRY);
		arm(s, (int64_t)time(NULL) + STUCK_RETRY);
		return;
	}
	int64_t next = 0;
	for (size_t i = 0; i < n; i++) {
		if (watch_settling(d->watch, a[i].path))
			continue; /* its settling processes it, and calls us again */
		const struct stuck *k = stuck_find(s, a[i].id);
		int64_t t = a[i].released ? 1 : a[i].send_at;
		if (k && k->retry_at > t)
			t = k->retry_at;
		if (next == 0 || t < next)
			next = t;
	}
	archive_scheduled_free(a, n);
	arm(s, next);
}

void schedule_run(struct daemon *d)
{
	struct schedule *s = d->schedule;
	uint64_t x;
	if (s == NULL)
		return;
	/* ECANCELED: the clock was set; what is due is looked at anew */
	if (read(s->fd, &x, sizeof x) < 0 && errno != EAGAIN && errno != ECANCELED)
		log_warn("schedule timerfd");
	s->armed = -1; /* whatever it was, it is set again below */
	if (d->stopping)
		return;
	struct archive_scheduled *a = NULL;
	size_t n = 0;
	struct err e;
	int64_t now = store_now();
	if (archive_scheduled_list(d->store, &a, &n, &e) < 0) {
		log_warnx("schedule: %s", e.msg);
		schedule_refresh(d);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		struct stuck *k = stuck_find(s, a[i].id);
		if ((!a[i].released && a[i].send_at > now) || (k && k->retry_at > now))
			continue;
		if (watch_settling(d->watch, a[i].path))
			continue; /* being written: processed once it settles */
		struct stat st;
		if (stat(a[i].path, &st) < 0 && errno == ENOENT) {
			int64_t gone = 0;
			if (archive_cancel_scheduled(d->store, a[i].path, &gone, &e) < 0)
				log_warnx("%s", e.msg);
			else if (gone)
				log_notice("issue=%d: %s is gone; its schedule is cancelled",
				           a[i].number, a[i].path);
			continue;
		}
		log_info("issue=%d: its time has come", a[i].number);
		issue_process(d, a[i].path);
		struct archive_issue *now_is = archive_get(d->store, 0, a[i].id, &e);
		if (now_is &&
		    archive_phase(now_is, store_now(), d->conf.schedule_grace) == ARCHIVE_DUE) {
			log_warnx(
			    "issue=%d could not be published at its time; trying again in %d s "
			    "(or when %s changes)",
			    a[i].number, STUCK_RETRY, a[i].path);
			if (k == NULL) {
				s->stuck = xreallocarray(s->stuck, s->nstuck + 1, sizeof *s->stuck);
				k = &s->stuck[s->nstuck++];
				k->id = a[i].id;
			}
			k->retry_at = store_now() + STUCK_RETRY;
		}
		archive_issues_free(now_is, now_is ? 1 : 0);
	}
	archive_scheduled_free(a, n);
	schedule_refresh(d);
}
