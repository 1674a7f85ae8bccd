/*
 * The issue directory. inotify tells us a file changed (IN_CLOSE_WRITE,
 * IN_MOVED_TO for editors that save through a temp file and rename, deletes);
 * a full rescan runs at start and when the kernel's event queue overflowed.
 * A changed issue is processed only once it has been left alone for
 * issue_settle_seconds — measured from the last event and from the file's
 * mtime both — so a file copied in chunks is never published half-written.
 *
 * Processing: parse (a bad issue is logged and recorded with its FILE:LINE
 * error, and retried when it changes), save in the store, render its pages,
 * rewrite the index and the feeds, and create its deliveries once (a
 * correction updates pages and feeds and sends nothing; a draft is rendered
 * and never sent).
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "archive.h"
#include "issue.h"
#include "ledger.h"
#include "log.h"
#include "matrixd.h"
#include "render.h"
#include "subs.h"
#include "xmalloc.h"

struct entry {
	char *name;  /* in issue_dir */
	char *path;  /* the file to parse: NAME or NAME/issue.md */
	bool folder; /* NAME is a folder issue: it is loaded as such (its images) */
	int wd;      /* inotify watch of a folder issue, or -1 */
	time_t mtime;
	long mtime_ns; /* an edit in the same second with the same size still shows */
	ino_t ino;     /* a file renamed over the old one is another file */
	off_t size;
	int64_t changed_ms; /* monotonic time of the last change we saw */
	/* publishing failed (public_dir not writable, the store busy or
	 * full): tried again then */
	int64_t retry_ms, backoff_ms;
	bool done; /* processed in this (mtime, size) state */
	bool seen; /* still present in the last scan */
};

struct watch {
	int fd;
	int wd;
	struct entry *e;
	size_t n;
	int64_t give_up_ms; /* --once: a file not settled by then waits for the next run */
	/* index.html and the feeds could not be written: tried again then */
	int64_t listing_retry_ms, listing_backoff_ms;
};

/* Publishing that failed is tried again after 5 s, doubling to 5 min. */
static int64_t backoff(int64_t *ms)
{
	*ms = *ms ? *ms * 2 : 5000;
	if (*ms > 300000)
		*ms = 300000;
	return now_ms() + *ms;
}

static bool ignored(const char *name)
{
	size_t n = strlen(name);
	if (name[0] == '.' || n == 0 || name[n - 1] == '~')
		return true;
	return (n > 4 && strcmp(name + n - 4, ".tmp") == 0) ||
	       (n > 4 && strcmp(name + n - 4, ".swp") == 0);
}

static bool issue_file(const char *name)
{
	size_t n = strlen(name);
	return (n > 3 && strcmp(name + n - 3, ".md") == 0) ||
	       (n > 4 && strcmp(name + n - 4, ".txt") == 0);
}

int watch_start(struct daemon *d, struct watch **out)
{
	struct watch *w = xcalloc(1, sizeof *w);
	w->fd = -1;
	w->wd = -1;
	/* --once has no later: it waits for a file copied just before it
	 * started to settle, and no longer (plus a second of slack), so that a
	 * file that keeps changing cannot hold it. */
	w->give_up_ms = now_ms() + (int64_t)d->conf.issue_settle_seconds * 1000 + 1000;
	if (!d->once) {
		w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
		if (w->fd < 0) {
			log_warn("inotify_init1");
			free(w);
			return -1;
		}
		w->wd = inotify_add_watch(w->fd, d->conf.issue_dir,
		                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
		                              IN_CREATE | IN_ATTRIB | IN_ONLYDIR);
		if (w->wd < 0) {
			log_warn("issue_dir %s: cannot watch", d->conf.issue_dir);
			close(w->fd);
			free(w);
			return -1;
		}
	}
	*out = w;
	return 0;
}

void watch_free(struct watch *w)
{
	if (w == NULL)
		return;
	for (size_t i = 0; i < w->n; i++) {
		free(w->e[i].name);
		free(w->e[i].path);
	}
	free(w->e);
	if (w->fd >= 0)
		close(w->fd);
	free(w);
}

int watch_fd(struct watch *w)
{
	return w ? w->fd : -1;
}

static struct entry *find(struct watch *w, const char *name)
{
	for (size_t i = 0; i < w->n; i++)
		if (strcmp(w->e[i].name, name) == 0)
			return &w->e[i];
	return NULL;
}

static void drop(struct daemon *d, struct entry *e)
{
	struct watch *w = d->watch;
	struct err err;
	log_info("issue file %s removed (anything published from it stays in the archive)",
	         e->path);
	if (archive_error_clear(d->store, e->path, &err) < 0)
		log_warnx("%s", err.msg);
	int64_t cancelled = 0;
	if (archive_cancel_scheduled(d->store, e->path, &cancelled, &err) < 0)
		log_warnx("%s", err.msg);
	else if (cancelled)
		log_notice("%s was removed before its send_at: the schedule is cancelled, nothing "
		           "is sent",
		           e->path);
	if (cancelled)
		schedule_refresh(d);
	if (e->wd >= 0 && w->fd >= 0)
		inotify_rm_watch(w->fd, e->wd);
	free(e->name);
	free(e->path);
	*e = w->e[--w->n];
}

static bool same_file(const struct entry *e, const struct stat *st)
{
	return e->mtime == st->st_mtime && e->mtime_ns == st->st_mtim.tv_nsec &&
	       e->size == st->st_size && e->ino == st->st_ino;
}

/* How long ago the file was last written, in ms (0 for a future mtime):
 * to the nanosecond, so that a file written 1.9 s ago is not taken for
 * one written 2 s ago by rounding. */
static int64_t mtime_age_ms(const struct entry *e)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t age = ((int64_t)now.tv_sec - (int64_t)e->mtime) * 1000 +
	              ((int64_t)now.tv_nsec - (int64_t)e->mtime_ns) / 1000000;
	return age > 0 ? age : 0;
}

static void remember(struct entry *e, const struct stat *st)
{
	e->mtime = st->st_mtime;
	e->mtime_ns = st->st_mtim.tv_nsec;
	e->size = st->st_size;
	e->ino = st->st_ino;
}

/* Looks at one name in issue_dir: new, changed, unchanged or gone. */
static void look(struct daemon *d, const char *name)
{
	struct watch *w = d->watch;
	struct entry *e = find(w, name);
	if (ignored(name)) {
		return;
	}
	char *top = xasprintf("%s/%s", d->conf.issue_dir, name);
	struct stat st;
	char *path = NULL;
	bool folder = false;
	if (stat(top, &st) == 0 && S_ISDIR(st.st_mode)) {
		folder = true;
		path = xasprintf("%s/issue.md", top);
		if (stat(path, &st) != 0) {
			/* a folder without issue.md (yet): watch it for one */
			st.st_mtim = (struct timespec){0};
			st.st_size = -1;
			st.st_ino = 0;
		}
	} else if (issue_file(name) && lstat(top, &st) == 0) {
		/* links, FIFOs and the like too: loading refuses them with an
		 * error that `matrixctl status` shows, rather than silence */
		path = xstrdup(top);
	}
	if (path == NULL) {
		if (e)
			drop(d, e);
		free(top);
		return;
	}
	if (e == NULL) {
		w->e = xreallocarray(w->e, w->n + 1, sizeof *w->e);
		e = &w->e[w->n++];
		*e = (struct entry){.name = xstrdup(name),
		                    .path = path,
		                    .folder = folder,
		                    .wd = -1,
		                    .size = -2,
		                    .seen = true};
		path = NULL;
		if (folder && w->fd >= 0)
			e->wd = inotify_add_watch(w->fd, top,
			                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE |
			                              IN_CREATE | IN_ONLYDIR);
	}
	e->seen = true;
	if (!same_file(e, &st)) {
		remember(e, &st);
		/* The quiet time counts from the last write: a file found old at a
		 * scan (start, --once) is ready at once, one just written waits. */
		e->changed_ms = now_ms() - mtime_age_ms(e);
		e->done = st.st_size < 0; /* nothing to parse yet */
		e->retry_ms = e->backoff_ms = 0;
	}
	free(path);
	free(top);
}

void watch_rescan(struct daemon *d)
{
	struct watch *w = d->watch;
	DIR *dir = opendir(d->conf.issue_dir);
	if (dir == NULL) {
		log_warn("issue_dir %s", d->conf.issue_dir);
		return;
	}
	for (size_t i = 0; i < w->n; i++)
		w->e[i].seen = false;
	struct dirent *de;
	while ((de = readdir(dir)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			look(d, de->d_name);
	closedir(dir);
	for (size_t i = 0; i < w->n;)
		if (!w->e[i].seen)
			drop(d, &w->e[i]);
		else
			i++;
}

void watch_on_event(struct daemon *d)
{
	struct watch *w = d->watch;
	char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t n = read(w->fd, buf, sizeof buf);
		if (n <= 0) {
			if (n < 0 && errno != EAGAIN)
				log_warn("inotify read");
			return;
		}
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			p += sizeof *ev + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				log_notice("inotify queue overflowed; rescanning %s",
				           d->conf.issue_dir);
				watch_rescan(d);
				continue;
			}
			if (ev->wd == w->wd && ev->len > 0) {
				look(d, ev->name);
				continue;
			}
			for (size_t i = 0; i < w->n; i++)
				if (w->e[i].wd == ev->wd) {
					char *name = xstrdup(w->e[i].name);
					look(d, name);
					free(name);
					break;
				}
		}
	}
}

/*
 * index.html and the feeds: a failure (public_dir read-only, full) is shown
 * by `matrixctl status` under public_dir's name and tried again; success
 * clears it.
 */
static void listing_result(struct daemon *d, bool ok, const struct err *e)
{
	struct watch *w = d->watch;
	struct err e2;
	if (ok) {
		if (archive_error_clear(d->store, d->conf.public_dir, &e2) < 0)
			log_warnx("%s", e2.msg);
		if (w)
			w->listing_retry_ms = w->listing_backoff_ms = 0;
		return;
	}
	char msg[sizeof e->msg + 200];
	snprintf(msg, sizeof msg,
	         "index.html and feeds not written: %s; make public_dir writable (tried again "
	         "every few minutes, at SIGHUP and at the next start)",
	         e->msg);
	log_err("%s", msg);
	if (archive_error_set(d->store, d->conf.public_dir, "", msg, &e2) < 0)
		log_warnx("%s", e2.msg);
	if (d->once) {
		if (d->exit_code == 0)
			d->exit_code = 75; /* nothing lost: the next run tries again */
	} else if (w) {
		w->listing_retry_ms = backoff(&w->listing_backoff_ms);
	}
}

int publish_listing(struct daemon *d)
{
	struct err e;
	err_clear(&e);
	size_t n = 0;
	struct archive_issue *all = archive_list(d->store, &n, &e);
	if (all == NULL) {
		log_warnx("publishing the archive: %s", e.msg);
		return -1;
	}
	struct render_index_item *items = xcalloc(n ? n : 1, sizeof *items);
	size_t k = 0;
	struct issue **loaded = xcalloc(n ? n : 1, sizeof *loaded);
	size_t nloaded = 0, want = (size_t)d->conf.site.feed_items, have = 0;
	struct render_feed_item *feed = xcalloc(want, sizeof *feed);
	for (size_t i = 0; i < n; i++) {
		const struct archive_issue *a = &all[i];
		if (!archive_is_public(a))
			continue; /* a draft or a schedule: rendered for the editors, not listed */
		items[k++] = (struct render_index_item){
		    .number = a->number,
		    .title = a->title,
		    .period = a->period,
		    .lead = a->lead,
		    .date = (time_t)a->date,
		    .narticles = (size_t)a->narticles,
		};
		if (have >= want)
			continue;
		struct issue *is = archive_load(d->store, a->id, &e);
		if (is == NULL)
			continue;
		loaded[nloaded++] = is;
		have += render_feed_items(is, (time_t)a->date,
		                          (time_t)(a->updated_at > a->date ? a->updated_at : 0),
		                          feed + have, want - have);
	}
	int r = render_index(&d->conf, d->tmpl, items, k, d->conf.public_dir, &e);
	if (r == 0)
		r = render_feeds(&d->conf, feed, have, d->conf.public_dir, &e);
	listing_result(d, r == 0, &e);
	for (size_t i = 0; i < nloaded; i++)
		issue_free(loaded[i]);
	free(loaded);
	free(feed);
	free(items);
	archive_issues_free(all, n);
	return r;
}

/*
 * An issue that cannot go out: logged, kept for `matrixctl status`, retried
 * when the file changes; nothing already published or queued is touched.
 */
static void reject(struct daemon *d, const char *path, const char *hash, const struct err *e)
{
	log_err("%s", e->msg);
	struct err e2;
	if (archive_error_set(d->store, path, hash, e->msg, &e2) < 0)
		log_warnx("%s", e2.msg);
	if (d->once)
		d->exit_code = 1; /* --once: an error, after the rest is done */
}

static int process(struct daemon *d, const char *load, const char *path);

bool watch_settling(struct watch *w, const char *path)
{
	for (size_t i = 0; w && i < w->n; i++)
		if (!w->e[i].done && strcmp(w->e[i].path, path) == 0)
			return true;
	return false;
}

/* A scheduled, held or draft issue: rendered into state_dir/preview for its
 * editors (not into public_dir, where readers could guess its URL). */
static void preview(struct daemon *d, const struct issue *is, const struct archive_issue *a,
                    enum archive_phase ph, bool changed)
{
	char *dir = xasprintf("%s/preview", d->conf.state_dir);
	char when[48] = "";
	struct err e;
	if (a->send_at)
		issue_format_time((time_t)a->send_at, when, sizeof when);
	if (changed && render_issue_pages(&d->conf, d->tmpl, is, (time_t)a->date, dir, &e) < 0)
		log_err("issue=%d pages: %s", is->number, e.msg);
	else if (ph == ARCHIVE_SCHEDULED)
		log_info("issue=%d scheduled for %s: %s rendered to %s/issues/%d/ (not published, "
		         "nothing queued until then)",
		         is->number, when, is->title, dir, is->number);
	else if (ph == ARCHIVE_HELD)
		log_notice("issue=%d held: its send_at %s passed more than schedule_grace (%d s) "
		           "before matrixd could send it; nothing is sent. `matrixctl release %d` "
		           "sends it",
		           is->number, when, d->conf.schedule_grace, is->number);
	else if (changed)
		log_info("issue=%d draft: %s rendered to %s/issues/%d/ (not published, never "
		         "sent)",
		         is->number, is->title, dir, is->number);
	free(dir);
}

void issue_process(struct daemon *d, const char *path)
{
	/* a folder issue is loaded as its folder (its images come along) */
	char *load = NULL;
	size_t n = strlen(path);
	struct stat st;
	if (n > 9 && strcmp(path + n - 9, "/issue.md") == 0) {
		load = xstrndup(path, n - 9);
		if (stat(load, &st) != 0 || !S_ISDIR(st.st_mode)) {
			free(load);
			load = NULL;
		}
	}
	/* pages or a store that could not take it: the schedule tries again */
	(void)process(d, load ? load : path, path);
	free(load);
	schedule_refresh(d);
}

/*
 * Writes the issue's pages into public_dir and notes it in the store. A
 * failure is the issue's error in `matrixctl status` until the pages are
 * written, and -1: the caller tries again.
 */
static int publish_pages(struct daemon *d, const struct issue *is, const struct archive_issue *a,
                         const char *path)
{
	struct err e;
	err_clear(&e);
	int r = render_issue_pages(&d->conf, d->tmpl, is, (time_t)a->date, d->conf.public_dir, &e);
	if (r < 0) {
		char msg[sizeof e.msg + 300];
		snprintf(msg, sizeof msg,
		         "%s: issue %d: pages not written: %s; %s (tried again every few minutes, "
		         "at SIGHUP and at the next start)",
		         path, is->number, e.msg,
		         a->queued_at
		             ? "make public_dir writable"
		             : "nothing is sent before they are: make public_dir writable");
		log_err("%s", msg);
		struct err e2;
		if (archive_error_set(d->store, path, is->hash, msg, &e2) < 0)
			log_warnx("%s", e2.msg);
	} else if ((r = archive_mark_published(d->store, a->id, is->hash, &e)) < 0) {
		log_warnx("issue=%d: %s", is->number, e.msg);
	} else {
		/* what inspect says: a summary, not dozens of lines per issue (each
		 * at debug level) */
		if (is->nwarnings)
			log_notice(
			    "issue=%d: %zu warning%s from the parser (a missing image, a "
			    "guessed caption or page break): `matrixctl inspect %s` lists them",
			    is->number, is->nwarnings, is->nwarnings == 1 ? "" : "s", path);
		for (size_t i = 0; i < is->nwarnings; i++)
			log_debug("%s", is->warnings[i]);
		log_info("issue=%d %s: %s, %zu article%s%s", is->number,
		         a->queued_at == 0 ? "published" : "corrected", is->title, is->narticles,
		         is->narticles == 1 ? "" : "s",
		         a->queued_at ? " (pages and feeds updated; nothing is sent again)" : "");
	}
	return r;
}

/*
 * Processes one settled issue: load (path is the file as recorded and
 * reported; load what issue_load reads, the folder of a folder issue so
 * that its images are published), save, write its pages, queue its
 * deliveries once its pages are written and it is due, rewrite the
 * listing. Returns PROCESS_PAGES when the pages could not be written and
 * PROCESS_STORE when the store could not take it now (busy, full): the
 * caller tries again later; an error of the file itself is recorded and
 * waits for the file to change.
 */
enum { PROCESS_DONE = 0, PROCESS_PAGES = -1, PROCESS_STORE = -2 };
static int process(struct daemon *d, const char *load, const char *path)
{
	struct issue_opts o = issue_opts_of(&d->conf);
	struct issue *is = NULL;
	struct err e;
	err_clear(&e);
	if (issue_load(load, &o, &is, &e) < 0) {
		reject(d, path, "", &e);
		return 0;
	}
	/* A list name that does not exist would quietly send the issue to
	 * nobody: refuse it like any other error in the file. */
	for (size_t i = 0; i < is->nlists; i++) {
		struct err le;
		if (subs_list_id(d->store, is->lists[i], &le) >= 0)
			continue;
		if (le.kind != ERR_NOTFOUND) {
			log_warnx("issue=%d: %s", is->number, le.msg);
			issue_free(is);
			return -1;
		}
		err_at(&e, ERR_INPUT, path, is->lists_line,
		       "no list named '%s' (see matrixctl lists); fix the name or create the list "
		       "with matrixctl list-create",
		       is->lists[i]);
		reject(d, path, is->hash, &e);
		issue_free(is);
		return 0;
	}
	int64_t id = 0;
	enum archive_change change;
	/* a scheduled issue is dated by its send_at unless it says otherwise */
	if (archive_save(d->store, is, path, is->date ? is->date : is->send_at, &id, &change, &e) <
	    0) {
		if (e.kind == ERR_TEMP)
			daemon_store_trouble(d, "publishing waits", &e);
		else
			reject(d, path, is->hash, &e);
		issue_free(is);
		return e.kind == ERR_TEMP ? PROCESS_STORE : PROCESS_DONE;
	}
	struct archive_issue *a = archive_get(d->store, 0, id, &e);
	if (a == NULL) {
		log_warnx("issue %d: %s", is->number, e.msg);
		issue_free(is);
		return 0;
	}
	enum archive_phase ph = archive_phase(a, store_now(), d->conf.schedule_grace);
	if (ph == ARCHIVE_HELD && a->held_at == 0 &&
	    archive_hold(d->store, id, store_now(), &e) < 0)
		log_warnx("issue=%d: %s", is->number, e.msg);
	bool listing = change != ARCHIVE_UNCHANGED; /* the index and feeds to rewrite */
	int r = 0;
	if (ph == ARCHIVE_DRAFT || ph == ARCHIVE_SCHEDULED || ph == ARCHIVE_HELD) {
		preview(d, is, a, ph, change != ARCHIVE_UNCHANGED);
	} else if (change != ARCHIVE_UNCHANGED || !a->is_published || ph == ARCHIVE_DUE) {
		/* new, changed, due, or its pages failed before */
		if (publish_pages(d, is, a, path) < 0) {
			r = -1;
			goto out; /* nothing is queued before the pages are written */
		}
		listing = true;
		dispatch_invalidate(d->dispatch);
	}
	archive_error_clear(d->store, path, &e);
	if (ph == ARCHIVE_DUE) {
		/* a failure is the dispatcher's to retry, from the store */
		char *lists = issue_lists_csv(is);
		dispatch_enqueue(d, id, is->number, (int)is->narticles, lists);
		free(lists);
	}
	/* after the queueing: a scheduled issue is listed once it is out */
	if (listing)
		publish_listing(d);
out:
	archive_issues_free(a, 1);
	issue_free(is);
	return r;
}

void watch_retry_now(struct daemon *d)
{
	struct watch *w = d->watch;
	for (size_t i = 0; w && i < w->n; i++)
		if (w->e[i].retry_ms)
			w->e[i].retry_ms = now_ms();
}

int64_t watch_settle(struct daemon *d)
{
	struct watch *w = d->watch;
	int64_t settle_ms = (int64_t)d->conf.issue_settle_seconds * 1000, next = 0;
	if (w->listing_retry_ms && w->listing_retry_ms <= now_ms())
		publish_listing(d);
	next = w->listing_retry_ms;
	for (size_t i = 0; i < w->n; i++) {
		struct entry *e = &w->e[i];
		if (e->done)
			continue;
		int64_t due = e->changed_ms + settle_ms;
		if (e->retry_ms > due)
			due = e->retry_ms;
		/* Also wait for the file's own mtime to be settle seconds old: a
		 * writer may have been busy before we looked. */
		int64_t by_mtime = settle_ms - mtime_age_ms(e);
		if (by_mtime > 0 && now_ms() + by_mtime > due)
			due = now_ms() + by_mtime;
		if (due <= now_ms()) {
			/* A last look: a write since the last event restarts the clock. */
			struct stat st;
			int r =
			    e->folder ? stat(e->path, &st) : lstat(e->path, &st); /* as look() */
			if (r != 0 || same_file(e, &st)) {
				e->done = true;
				e->retry_ms = 0;
				char *path = xstrdup(e->path);
				char *load = e->folder
				                 ? xasprintf("%s/%s", d->conf.issue_dir, e->name)
				                 : NULL;
				/* may log; entries stay valid (no rescan here) */
				schedule_retry_now(d->schedule);
				int r2 = process(d, load ? load : path, path);
				if (r2 == PROCESS_PAGES && d->once) {
					if (d->exit_code == 0)
						d->exit_code = 75; /* the next run tries again */
				} else if (r2 != PROCESS_DONE) {
					e = &w->e[i];
					e->done = false;
					e->retry_ms = r2 == PROCESS_STORE ? daemon_store_retry(d)
					                                  : backoff(&e->backoff_ms);
					if (next == 0 || e->retry_ms < next)
						next = e->retry_ms;
				}
				schedule_refresh(d);
				free(load);
				free(path);
				continue;
			}
			remember(e, &st);
			e->changed_ms = now_ms();
			due = e->changed_ms + settle_ms;
		}
		if (d->once && e->retry_ms == 0 && due > w->give_up_ms) {
			log_notice("%s is still being written; it will be picked up later",
			           e->path);
			e->done = true;
			continue;
		}
		if (next == 0 || due < next)
			next = due;
	}
	return next;
}
