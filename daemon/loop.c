/*
 * The event loop: one epoll over signalfd (SIGTERM, SIGINT, SIGHUP),
 * inotify, one timerfd armed for the nearest deadline (an issue settling, a
 * deferred delivery coming due, the rate limiter, the watchdog, a progress
 * update), the senders' eventfd and libmicrohttpd's epoll fd. When nothing
 * is due the process sleeps in epoll_wait: no polling.
 *
 * systemd (Type=notify, LIBNOTES.md §5): READY=1 once the configuration is
 * loaded, the store open and the directory watched; STATUS= with progress;
 * WATCHDOG=1 from this loop (a wedged loop stops the pings); RELOADING=1 and
 * STOPPING=1 around a reload and a stop. sd_notify is a no-op without
 * NOTIFY_SOCKET.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "ledger.h"
#include "log.h"
#include "matrixd.h"
#include "xmalloc.h"

#define STOP_GRACE_MS 5000 /* after SIGTERM, transfers in flight get this long */

int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

enum { EV_SIGNAL = 1, EV_INOTIFY, EV_TIMER, EV_SENDERS, EV_HTTP, EV_WAKE, EV_SCHEDULE };

static int add_fd(int ep, int fd, int tag)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)tag};
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static void min_deadline(int64_t *acc, int64_t t)
{
	if (t > 0 && (*acc == 0 || t < *acc))
		*acc = t;
}

static void status(struct daemon *d, bool busy, int64_t *next_status)
{
	static char last[300];
	char line[300];
	dispatch_status(d->dispatch, line, sizeof line);
	if (!busy && strcmp(line, "idle") != 0 && strcmp(last, line) == 0)
		return;
	static int64_t kv_at;
	if (strcmp(line, last) != 0 && (now_ms() - kv_at >= 5000 || !busy)) {
		struct err e;
		if (store_kv_set(d->store, "daemon.status", line, &e) < 0)
			log_debug("%s", e.msg);
		kv_at = now_ms();
	}
	if (strcmp(line, last) != 0) {
		sd_notifyf(0, "STATUS=%s", line);
		if (d->progress) {
			fprintf(stderr, "\r\033[K%s", line);
			fflush(stderr);
		}
		snprintf(last, sizeof last, "%s", line);
	}
	*next_status = busy ? now_ms() + 1000 : 0;
}

/*
 * The wake file matrixctl closes after queueing mail (ledger.h). Made
 * afresh when it is not ours or not group-writable: an admin's copy would
 * shut the other admins out. Returns an inotify fd watching state_dir, or
 * -1 (logged): the daemon then still sends, only not at once.
 */
static int wake_start(struct daemon *d)
{
	char *path = xasprintf("%s/%s", d->conf.state_dir, LEDGER_WAKE_FILE);
	struct stat st;
	int fd = -1, ifd = -1;
	if (lstat(path, &st) == 0 &&
	    (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0060) != 0060) &&
	    unlink(path) < 0)
		log_warn("%s", path);
	fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0660);
	if (fd < 0 || fchmod(fd, 0660) < 0) {
		log_warn("%s: matrixctl cannot wake matrixd; queued mail waits for its next round",
		         path);
		goto out;
	}
	ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (ifd < 0 || inotify_add_watch(ifd, d->conf.state_dir, IN_CLOSE_WRITE | IN_ONLYDIR) < 0) {
		log_warn("%s: cannot watch for matrixctl's wake-up calls", d->conf.state_dir);
		if (ifd >= 0)
			close(ifd);
		ifd = -1;
	}
out:
	if (fd >= 0)
		close(fd);
	free(path);
	return ifd;
}

/* Drains the wake fd; the loop's next round claims what is due. Other
 * files of state_dir (the store's, closed by matrixctl) wake it too, which
 * costs one round. */
static void wake_read(int fd)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0)
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			p += sizeof *ev + ev->len;
			if (ev->len > 0 && strcmp(ev->name, LEDGER_WAKE_FILE) == 0)
				log_debug("woken by matrixctl");
		}
}

static int exit_code(struct daemon *d)
{
	struct ledger_counts c;
	struct err e;
	if (ledger_totals(d->store, &c, &e) < 0) {
		log_err("%s", e.msg);
		return 1;
	}
	if (d->exit_code == 1)
		return 1; /* an issue could not be published: the error wins */
	if (ledger_counts_open(&c) > 0) {
		log_notice("%" PRId64 " deliveries deferred or waiting for the relay; exit 75",
		           ledger_counts_open(&c));
		return 75;
	}
	return d->exit_code;
}

int loop_run(struct daemon *d)
{
	int ep = -1, sfd = -1, tfd = -1, wfd = -1;
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (sfd < 0 || tfd < 0 || ep < 0 || add_fd(ep, sfd, EV_SIGNAL) < 0 ||
	    add_fd(ep, tfd, EV_TIMER) < 0 || add_fd(ep, senders_fd(d->senders), EV_SENDERS) < 0 ||
	    (watch_fd(d->watch) >= 0 && add_fd(ep, watch_fd(d->watch), EV_INOTIFY) < 0) ||
	    (d->http && http_fd(d->http) >= 0 && add_fd(ep, http_fd(d->http), EV_HTTP) < 0) ||
	    (!d->once && (wfd = wake_start(d)) >= 0 && add_fd(ep, wfd, EV_WAKE) < 0) ||
	    (schedule_fd(d->schedule) >= 0 &&
	     add_fd(ep, schedule_fd(d->schedule), EV_SCHEDULE) < 0)) {
		log_warn("event loop setup");
		d->exit_code = 1;
		goto out;
	}
	d->epfd = ep;
	watch_rescan(d);
	publish_listing(d);
	schedule_refresh(d);

	uint64_t wd_usec = 0;
	int64_t next_wd = 0, next_status = 0;
	if (sd_watchdog_enabled(0, &wd_usec) > 0)
		next_wd = now_ms();
	sd_notify(0, "READY=1\nSTATUS=watching for issues");
	log_info("ready: issue_dir=%s public_dir=%s smtp=%s", d->conf.issue_dir, d->conf.public_dir,
	         d->conf.smtp.url);

	for (;;) {
		int64_t wake = 0, settling = 0;
		if (!d->stopping)
			min_deadline(&wake, settling = watch_settle(d));
		dispatch_collect(d);
		min_deadline(&wake, dispatch_fill(d));
		size_t inflight = senders_inflight(d->senders) + dispatch_unrecorded(d->dispatch);
		if (dispatch_unrecorded(d->dispatch) > 0)
			min_deadline(&wake, now_ms() + 1000); /* the store was busy: try again */
		bool relay_down = dispatch_relay_down(d->dispatch);

		/* the next deferred delivery coming due */
		int64_t due = 0;
		struct err e;
		if (!d->stopping && !relay_down && ledger_next_due(d->store, &due, &e) == 0 &&
		    due) {
			int64_t in = due - store_now();
			if (in > 0)
				min_deadline(&wake, now_ms() + in * 1000);
		}
		if (next_wd && now_ms() >= next_wd) {
			sd_notify(0, "WATCHDOG=1");
			next_wd = now_ms() + (int64_t)(wd_usec / 2000);
		}
		min_deadline(&wake, next_wd);
		if (now_ms() >= next_status)
			status(d, inflight > 0, &next_status);
		min_deadline(&wake, next_status);

		if (d->stopping) {
			if (inflight == 0)
				break;
			if (now_ms() >= d->stop_deadline_ms) {
				senders_shutdown(d->senders, true);
				d->stop_deadline_ms = INT64_MAX;
			}
			if (d->stop_deadline_ms != INT64_MAX)
				min_deadline(&wake, d->stop_deadline_ms);
		} else if (d->once && inflight == 0 && settling == 0 &&
		           (relay_down || due == 0 || due > store_now())) {
			/* --once: nothing more can be done now */
			d->exit_code = exit_code(d);
			break;
		}
		if (d->http) {
			int64_t t = http_timeout_ms(d->http);
			if (t >= 0)
				min_deadline(&wake, now_ms() + (t > 0 ? t : 1));
		}

		struct itimerspec its = {0};
		if (wake) {
			int64_t in = wake - now_ms();
			if (in < 1)
				in = 1;
			its.it_value.tv_sec = in / 1000;
			its.it_value.tv_nsec = (in % 1000) * 1000000;
		}
		timerfd_settime(tfd, 0, &its, NULL);

		struct epoll_event evs[8];
		int n = epoll_wait(ep, evs, 8, -1);
		if (n < 0 && errno != EINTR) {
			log_warn("epoll_wait");
			d->exit_code = 1;
			break;
		}
		for (int i = 0; i < n; i++) {
			switch (evs[i].data.u32) {
			case EV_SIGNAL: {
				struct signalfd_siginfo si;
				while (read(sfd, &si, sizeof si) == sizeof si) {
					if (si.ssi_signo == SIGHUP) {
						daemon_reload(d);
					} else if (!d->stopping) {
						log_info(
						    "%s: finishing the messages in flight, then "
						    "exiting",
						    si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
						sd_notify(0, "STOPPING=1");
						d->stopping = true;
						d->stop_deadline_ms = now_ms() + STOP_GRACE_MS;
						senders_shutdown(d->senders, false);
					}
				}
				break;
			}
			case EV_TIMER: {
				uint64_t x;
				if (read(tfd, &x, sizeof x) < 0 && errno != EAGAIN)
					log_warn("timerfd");
				break;
			}
			case EV_INOTIFY:
				watch_on_event(d);
				break;
			case EV_SENDERS:
				break; /* collected at the top of the loop */
			case EV_HTTP:
				http_run(d);
				break;
			case EV_WAKE:
				wake_read(wfd);
				schedule_run(d); /* matrixctl release */
				break;
			case EV_SCHEDULE:
				schedule_run(d);
				break;
			}
		}
	}
out:
	if (d->progress)
		fputc('\n', stderr);
	if (ep >= 0)
		close(ep);
	if (sfd >= 0)
		close(sfd);
	if (tfd >= 0)
		close(tfd);
	if (wfd >= 0)
		close(wfd);
	return d->exit_code;
}
