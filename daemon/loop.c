/*
 * The event loop: one epoll over signalfd (SIGTERM, SIGINT, SIGHUP),
 * inotify (issue_dir, and state_dir for matrixctl's wake-up calls), one
 * timerfd armed for the nearest deadline (deadline.c: an issue settling, a
 * deferred delivery coming due, the rate limiter, the store's retry, the
 * watchdog, a progress update), the senders' eventfd and libmicrohttpd's
 * epoll fd. When nothing is due the process sleeps in epoll_wait: no
 * polling.
 *
 * Each round does the work (loop_work), decides whether to stop, arms the
 * timer and waits (loop_wait). No store call in a round waits longer than
 * DAEMON_STORE_WAIT_MS: a store that another process holds locked delays
 * writes (retried from the timer), never the round (docs/design.md, "The
 * store under a lock").
 *
 * systemd (Type=notify, docs/libraries.md, sd-daemon): READY=1 once the configuration is
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

#include "deadline.h"
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

struct loop {
	int ep, sfd, tfd, wfd;
	uint64_t wd_usec;    /* the watchdog period systemd wants, 0: none */
	int64_t next_wd;     /* the next WATCHDOG=1 */
	int64_t next_status; /* the next progress update */
	char last[300];      /* the status line last shown */
	char stored[300];    /* the status line in the store (matrixctl status) */
	int64_t stored_at;
	bool announced; /* daemon.pid and friends are in the store */
};

void daemon_store_trouble(struct daemon *d, const char *what, const struct err *e)
{
	if (d->store_trouble_since != 0)
		return;
	d->store_trouble_since = now_ms();
	log_warnx("%s: %s; matrixd tries again every %d ms and goes on serving", what, e->msg,
	          DAEMON_STORE_RETRY_MS);
}

int64_t daemon_store_retry(struct daemon *d)
{
	int64_t at = store_retry_at(d->store);
	return at > now_ms() ? at : now_ms() + DAEMON_STORE_RETRY_MS;
}

/* The end of an episode: a write went through again. */
static void store_recovered(struct daemon *d)
{
	if (d->store_trouble_since == 0 || store_retry_at(d->store) != 0)
		return;
	log_notice("the store takes writes again (after %.1f s)",
	           (double)(now_ms() - d->store_trouble_since) / 1000.0);
	d->store_trouble_since = 0;
}

/* For `matrixctl status`: who runs, since when, with what. Retried each
 * round until the store takes it. */
static void announce(struct daemon *d, struct loop *l)
{
	if (l->announced || d->once)
		return;
	char pid[32], started[32];
	snprintf(pid, sizeof pid, "%ld", (long)getpid());
	snprintf(started, sizeof started, "%lld", (long long)time(NULL));
	struct err e;
	if (store_begin(d->store, &e) < 0 || store_kv_set(d->store, "daemon.pid", pid, &e) < 0 ||
	    store_kv_set(d->store, "daemon.started", started, &e) < 0 ||
	    store_kv_set(d->store, "daemon.config", d->conf.path, &e) < 0) {
		store_rollback(d->store);
		log_debug("%s", e.msg);
		return;
	}
	l->announced = store_commit(d->store, &e) == 0;
}

static void status(struct daemon *d, struct loop *l, bool busy)
{
	char line[300];
	dispatch_status(d->dispatch, line, sizeof line);
	/* the store's copy at most every 5 s while sending; tried again when
	 * it could not be written */
	if (strcmp(line, l->stored) != 0 && (now_ms() - l->stored_at >= 5000 || !busy)) {
		struct err e;
		if (store_kv_set(d->store, "daemon.status", line, &e) == 0)
			snprintf(l->stored, sizeof l->stored, "%s", line);
		else
			log_debug("%s", e.msg);
		l->stored_at = now_ms();
	}
	if (strcmp(line, l->last) != 0) {
		sd_notifyf(0, "STATUS=%s", line);
		if (d->progress) {
			fprintf(stderr, "\r\033[K%s", line);
			fflush(stderr);
		}
		snprintf(l->last, sizeof l->last, "%s", line);
	}
	l->next_status = busy || strcmp(line, l->stored) != 0 ? now_ms() + 1000 : 0;
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

static int loop_open(struct daemon *d, struct loop *l)
{
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	*l = (struct loop){.ep = -1, .sfd = -1, .tfd = -1, .wfd = -1};
	l->sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	l->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	l->ep = epoll_create1(EPOLL_CLOEXEC);
	if (l->sfd < 0 || l->tfd < 0 || l->ep < 0 || add_fd(l->ep, l->sfd, EV_SIGNAL) < 0 ||
	    add_fd(l->ep, l->tfd, EV_TIMER) < 0 ||
	    add_fd(l->ep, senders_fd(d->senders), EV_SENDERS) < 0 ||
	    (watch_fd(d->watch) >= 0 && add_fd(l->ep, watch_fd(d->watch), EV_INOTIFY) < 0) ||
	    (d->http && http_fd(d->http) >= 0 && add_fd(l->ep, http_fd(d->http), EV_HTTP) < 0) ||
	    (!d->once && (l->wfd = wake_start(d)) >= 0 && add_fd(l->ep, l->wfd, EV_WAKE) < 0) ||
	    (schedule_fd(d->schedule) >= 0 &&
	     add_fd(l->ep, schedule_fd(d->schedule), EV_SCHEDULE) < 0)) {
		log_warn("event loop setup");
		return -1;
	}
	d->epfd = l->ep;
	if (sd_watchdog_enabled(0, &l->wd_usec) > 0)
		l->next_wd = now_ms();
	return 0;
}

static void loop_close(struct daemon *d, struct loop *l)
{
	if (d->progress)
		fputc('\n', stderr);
	int fds[] = {l->ep, l->sfd, l->tfd, l->wfd};
	for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	d->epfd = -1;
}

static void on_signals(struct daemon *d, int sfd)
{
	struct signalfd_siginfo si;
	while (read(sfd, &si, sizeof si) == sizeof si) {
		if (si.ssi_signo == SIGHUP) {
			daemon_reload(d);
		} else if (!d->stopping) {
			log_info("%s: finishing the messages in flight, then exiting",
			         si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
			sd_notify(0, "STOPPING=1");
			d->stopping = true;
			d->stop_deadline_ms = now_ms() + STOP_GRACE_MS;
			senders_shutdown(d->senders, false);
		}
	}
}

/*
 * One round of work: issues that settled, results to record, deliveries
 * to claim, the watchdog and the progress line. Fills t with the timers
 * for the next wake-up; returns true when the loop should end.
 */
static bool loop_work(struct daemon *d, struct loop *l, struct loop_timers *t)
{
	*t = (struct loop_timers){
	    .stopping = d->stopping, .stop = d->stop_deadline_ms, .http_in = -1};
	int64_t settling = d->stopping ? 0 : watch_settle(d);
	dispatch_collect(d);
	t->dispatch = dispatch_fill(d);
	t->settle = settling;
	size_t inflight = senders_inflight(d->senders) + dispatch_unrecorded(d->dispatch);
	t->relay_down = dispatch_relay_down(d->dispatch);

	int64_t due = 0;
	struct err e;
	if (!d->stopping && !dispatch_full(d) && ledger_next_due(d->store, &due, &e) == 0 && due)
		t->due_in_s = due - store_now();
	if (l->next_wd && now_ms() >= l->next_wd) {
		sd_notify(0, "WATCHDOG=1");
		l->next_wd = now_ms() + (int64_t)(l->wd_usec / 2000);
	}
	t->watchdog = l->next_wd;
	announce(d, l);
	if (now_ms() >= l->next_status)
		status(d, l, inflight > 0);
	t->status = l->next_status;
	store_recovered(d);

	if (d->stopping) {
		if (inflight == 0)
			return true;
		if (now_ms() >= d->stop_deadline_ms) {
			senders_shutdown(d->senders, true);
			d->stop_deadline_ms = INT64_MAX;
			t->stop = INT64_MAX;
		}
		return false;
	}
	if (!d->once)
		return false;
	if (d->store_trouble_since && now_ms() - d->store_trouble_since > DAEMON_ONCE_PATIENCE_MS) {
		log_err("the store has taken no writes for %d s; giving up (exit 75)",
		        DAEMON_ONCE_PATIENCE_MS / 1000);
		d->exit_code = 75;
		return true;
	}
	/* --once: done when nothing more can be done now */
	if (inflight == 0 && settling == 0 && !dispatch_pending(d->dispatch) &&
	    (t->relay_down || due == 0 || due > store_now())) {
		d->exit_code = exit_code(d);
		return true;
	}
	return false;
}

/* Arms the timer for the nearest deadline, waits, and handles what came. */
static int loop_wait(struct daemon *d, struct loop *l, struct loop_timers *t)
{
	if (d->http)
		t->http_in = http_timeout_ms(d->http);
	t->now = now_ms();
	int64_t wake = loop_deadline(t);
	struct itimerspec its = {0};
	if (wake) {
		int64_t in = wake - t->now;
		its.it_value.tv_sec = in / 1000;
		its.it_value.tv_nsec = (in % 1000) * 1000000;
	}
	timerfd_settime(l->tfd, 0, &its, NULL);

	struct epoll_event evs[8];
	int n = epoll_wait(l->ep, evs, 8, -1);
	if (n < 0 && errno != EINTR) {
		log_warn("epoll_wait");
		return -1;
	}
	for (int i = 0; i < n; i++) {
		switch (evs[i].data.u32) {
		case EV_SIGNAL:
			on_signals(d, l->sfd);
			break;
		case EV_TIMER: {
			uint64_t x;
			if (read(l->tfd, &x, sizeof x) < 0 && errno != EAGAIN)
				log_warn("timerfd");
			break;
		}
		case EV_INOTIFY:
			watch_on_event(d);
			break;
		case EV_SENDERS:
			break; /* collected by the next round */
		case EV_HTTP:
			http_run(d);
			break;
		case EV_WAKE:
			wake_read(l->wfd);
			schedule_run(d);              /* matrixctl release */
			publish_offer_check(d, true); /* matrixctl list-set --private … */
			break;
		case EV_SCHEDULE:
			schedule_run(d);
			break;
		}
	}
	return 0;
}

int loop_run(struct daemon *d)
{
	struct loop l;
	if (loop_open(d, &l) < 0) {
		d->exit_code = 1;
		loop_close(d, &l);
		return d->exit_code;
	}
	watch_rescan(d);
	publish_listing(d);
	publish_offer_check(d, false); /* pages older than the lists their form offers */
	schedule_refresh(d);
	sd_notify(0, "READY=1\nSTATUS=watching for issues");
	log_info("ready: issue_dir=%s public_dir=%s smtp=%s", d->conf.issue_dir, d->conf.public_dir,
	         d->conf.smtp.url);
	struct loop_timers t;
	while (!loop_work(d, &l, &t))
		if (loop_wait(d, &l, &t) < 0) {
			d->exit_code = 1;
			break;
		}
	loop_close(d, &l);
	return d->exit_code;
}
