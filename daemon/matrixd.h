/*
 * matrixd's inside. One main thread runs one event loop (loop.c) over
 * signalfd, inotify, a timerfd, the sender threads' completion eventfd and
 * the HTTP endpoint; it alone touches SQLite, templates, cmark and libxml2.
 * Sender threads (sender.c) only send: each owns one transport (one SMTP
 * connection), takes prepared messages from a bounded queue and hands back
 * results.
 *
 *   loop.c      the event loop, signals, timers, systemd notification
 *   watch.c     the issue directory: scanning, inotify, settling
 *   publish.c   a settled or due issue: saved, its pages, its deliveries,
 *               the index and the feeds
 *   schedule.c  the timer of scheduled issues (send_at)
 *   dispatch.c  ledger → messages → senders → ledger; rate limit; progress
 *   sender.c    the sender threads and their queues
 *   http.c      one-click unsubscribe, confirmation, the archive
 *   web.c       the subscribe form: its lists, its page, its POST
 */
#ifndef MATRIXD_H
#define MATRIXD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "conf.h"
#include "render.h"
#include "sign.h"
#include "store.h"
#include "subs.h"
#include "tmpl.h"
#include "token.h"
#include "transport.h"

struct senders;
struct dispatch;
struct watch;
struct http;
struct schedule;

struct daemon {
	const char *conf_path;
	struct conf conf;
	struct store *store;
	struct tmpl *tmpl;
	struct token_key key;
	char **passwords; /* one per relay of conf.smtp.relays, NULL when none */
	size_t npasswords;
	struct sign_keys *dkim; /* NULL: mail goes out unsigned */
	bool once;              /* --once: exit when nothing is left to do now */
	bool progress;          /* a live progress line on a terminal */
	bool stopping;          /* SIGTERM/SIGINT: no new work */
	int64_t stop_deadline_ms;
	int exit_code;
	int64_t store_trouble_since; /* ms; 0: the store takes writes */
	/* publish.c: index.html and the feeds could not be written; tried
	 * again at listing_retry_ms (0: nothing to retry) */
	int64_t listing_retry_ms, listing_backoff_ms;
	struct senders *senders;
	struct dispatch *dispatch;
	struct watch *watch;
	struct http *http;
	struct schedule *schedule;
	int epfd;
};

/* Monotonic milliseconds. */
int64_t now_ms(void);

/* The store's busy timeout and write-retry period in the daemon (see
 * store_set_busy): the loop never waits on SQLite longer than that. */
#define DAEMON_STORE_WAIT_MS  100
#define DAEMON_STORE_RETRY_MS 500
/* --once gives up (exit 75) on a store that takes no writes this long. */
#define DAEMON_ONCE_PATIENCE_MS 60000

/* A store write failed for a passing reason (ERR_TEMP): what waits is
 * logged once per episode; the loop logs its end. */
void daemon_store_trouble(struct daemon *d, const char *what, const struct err *e);
/* When work waiting on the store is tried again (monotonic ms). */
int64_t daemon_store_retry(struct daemon *d);

/* loop.c: runs until stopped (or, with --once, until nothing is left to do
 * now); returns the exit code. main.c: SIGHUP. */
int loop_run(struct daemon *d);
int daemon_reload(struct daemon *d);

/* ---- watch.c ------------------------------------------------------------- */
int watch_start(struct daemon *d, struct watch **out);
void watch_free(struct watch *w);
int watch_fd(struct watch *w);         /* inotify fd, -1 in --once mode */
void watch_on_event(struct daemon *d); /* inotify readable */
void watch_rescan(struct daemon *d);   /* full scan (start, IN_Q_OVERFLOW) */
/* Processes every issue whose settle time has passed, and a listing that
 * is due to be tried again; returns the earliest deadline of one still
 * settling or waiting (ms, monotonic), or 0. With --once, a file that has
 * not settled within issue_settle_seconds of the start is left for the
 * next run. */
int64_t watch_settle(struct daemon *d);
/* The file at path changed and is waiting to settle (it is processed then). */
bool watch_settling(struct watch *w, const char *path);
/* Issues whose publishing failed are tried again now (SIGHUP). */
void watch_retry_now(struct daemon *d);

/* ---- publish.c ----------------------------------------------------------- */
enum publish_result {
	PUBLISH_DONE = 0,   /* published, previewed, or refused for its content (recorded) */
	PUBLISH_LATER = -1, /* its pages could not be written, or the store could not tell
	                     * whether its lists exist: tried again (publish_backoff) */
	PUBLISH_STORE = -2, /* the store could not take it now (busy, full) */
};
/*
 * Processes one settled issue: load (path is the file as recorded and
 * reported; load what issue_load reads, the folder of a folder issue so
 * that its images are published), save, write its pages, queue its
 * deliveries once its pages are written and it is due, rewrite the
 * listing. An error of the file itself is recorded and waits for the file
 * to change.
 */
enum publish_result issue_publish(struct daemon *d, const char *load, const char *path);
/* issue_publish for the file at path (a folder issue's issue.md is loaded
 * as its folder), then the schedule re-armed: what schedule.c calls. */
void issue_process(struct daemon *d, const char *path);
/* Rewrites index.html, feed.xml and atom.xml from the store (a failure is
 * shown in status and tried again by watch_settle). */
int publish_listing(struct daemon *d);
/* Runs publish_listing when a failed one is due again; returns when the
 * next try is due (ms, monotonic), 0 when none is waiting. */
int64_t publish_listing_retry(struct daemon *d);
/* When the lists the subscribe form offers (the public ones, their titles)
 * are not those the archive pages were written with (kv web.offer: at the
 * first start, after matrixctl list-create, list-set, list-delete), rewrites
 * every public issue's pages, and the index when listing (false: it was
 * just written); -1 (logged) when that could not be done, tried again at
 * the next wake-up. */
int publish_offer_check(struct daemon *d, bool listing);
/* When publishing that failed is tried again: 5 s, doubling to 5 min. */
int64_t publish_backoff(int64_t *ms);

/* ---- schedule.c ---------------------------------------------------------- */
int schedule_start(struct schedule **out);
void schedule_free(struct schedule *s);
int schedule_fd(struct schedule *s); /* the timer: readable when an issue is due */
/* Arms the timer for the earliest scheduled or released issue in the store. */
void schedule_refresh(struct daemon *d);
/* The timer fired (or matrixctl woke us): processes what is due, re-arms. */
void schedule_run(struct daemon *d);
/* Issues that failed at their time are tried again on the next run. */
void schedule_retry_now(struct schedule *s);

/* ---- sender.c ------------------------------------------------------------ */
struct sjob {
	int64_t delivery_id;
	void *ctx; /* the dispatcher's */
	char *from, *rcpt, *data;
	char *uid; /* transport_send's: its Message-ID's local part */
	size_t len;
	struct sign_keys *keys; /* a reference: the sender signs with them */
	bool signed_once;       /* data carries its signatures (a second relay keeps them) */
	int relay;              /* the relay it was handed to */
	bool attempted;         /* false: returned unsent (shutdown, or skipped) */
	bool skipped;           /* returned unsent: its relay was paused meanwhile */
	struct send_result res;
};
/* The threads of every relay of c->smtp.relays; passwords[i] is relay i's
 * AUTH password (NULL: none). */
int senders_start(struct senders **out, const struct conf *c, char *const *passwords,
                  struct err *err);
int senders_fd(struct senders *s); /* eventfd: results are ready */
int senders_relays(struct senders *s);
int senders_connections(struct senders *s, int relay);
size_t senders_room(struct senders *s, int relay); /* jobs that relay can take now */
void senders_submit(struct senders *s, int relay, struct sjob *j);
/* Relay is paused until until_ms (monotonic; 0: not): what waits in its
 * queue comes back unsent, skipped, instead of being tried in turn. A
 * thread whose message met the relay's trouble pauses it itself, until the
 * dispatcher, seeing that result, says how long. */
void senders_pause(struct senders *s, int relay, int64_t until_ms);
/* Takes the finished jobs; *n of them. */
struct sjob **senders_collect(struct senders *s, size_t *n);
size_t senders_inflight(struct senders *s); /* queued + being sent */
/* Stops: jobs not started come back unattempted; abort cuts transfers. */
void senders_shutdown(struct senders *s, bool abort);
void senders_free(struct senders *s);
void sjob_free(struct sjob *j);

/* ---- dispatch.c ---------------------------------------------------------- */
int dispatch_new(struct daemon *d, struct dispatch **out);
void dispatch_free(struct dispatch *p);
/* Claims due deliveries and hands messages to the senders (first, once,
 * the recovery of rows a crash left 'sending'; and the queueing of
 * published issues whose deliveries could not be queued); returns the
 * earliest time (ms) it wants to run again for a reason of its own (rate
 * limit, relay backoff, the store in trouble), or 0. */
int64_t dispatch_fill(struct daemon *d);
/* Queues an issue's deliveries and marks it queued, in one transaction;
 * on failure (logged) dispatch_fill tries again later. */
int dispatch_enqueue(struct daemon *d, int64_t issue_id, int number, int nparts, const char *lists);
/* Work waiting for the store: recovery, an enqueue, unrecorded results. */
bool dispatch_pending(struct dispatch *p);
/* Records finished jobs in the ledger, and in the same transaction claims
 * the next batch for the room they left (handed out after the commit). */
void dispatch_collect(struct daemon *d);
/* Every relay that is up has its queue full: the next result wakes the
 * loop, so nothing due can be missed meanwhile. */
bool dispatch_full(struct daemon *d);
/* Forgets rendered messages (after a reload or a correction). */
void dispatch_invalidate(struct dispatch *p);
/* "Matrix NO.60: 1,200/4,500 sent, 3 deferred, 120 msg/s", or "" when idle. */
void dispatch_status(struct dispatch *p, char *out, size_t n);
bool dispatch_relay_down(struct dispatch *p);
/* Results waiting to be recorded (the store was busy). */
size_t dispatch_unrecorded(struct dispatch *p);

/* ---- http.c -------------------------------------------------------------- */
int http_start(struct daemon *d, struct http **out, struct err *err);
void http_free(struct http *h);
int http_fd(struct http *h);             /* epoll fd of libmicrohttpd, -1 when off */
void http_run(struct daemon *d);         /* serve what is ready */
int64_t http_timeout_ms(struct http *h); /* next MHD timer (ms, relative) or -1 */

/* ---- web.c --------------------------------------------------------------- */
/* The public lists, as the pages' subscribe form offers them. */
struct web_offer {
	struct subs_list *lists;
	size_t nlists;
	struct render_list *rl;
	struct render_offer offer;
};
/* -1 (logged) when the store cannot tell: then *w offers nothing. */
int web_offer_load(struct daemon *d, struct web_offer *w);
void web_offer_free(struct web_offer *w);

/* An answer: an HTML page (body allocated) with status; body NULL: a
 * plain-text answer of that status. */
struct web_answer {
	unsigned status;
	char *body;
	size_t len;
};
/* GET subscribe: the form alone. */
void web_subscribe_page(struct daemon *d, struct web_answer *a);
/* POST subscribe: ctype is the Content-Type (NULL when none). */
void web_subscribe_post(struct daemon *d, const char *ctype, const char *body, size_t len,
                        struct web_answer *a);
/* The page for 429 (too many from one client) and 503 (the store is busy). */
void web_busy_page(struct daemon *d, unsigned status, struct web_answer *a);

#endif
