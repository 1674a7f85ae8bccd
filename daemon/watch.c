/*
 * The issue directory. inotify tells us a file changed (IN_CLOSE_WRITE,
 * IN_MOVED_TO for editors that save through a temp file and rename, deletes);
 * a full rescan runs at start and when the kernel's event queue overflowed.
 * A changed issue is processed only once it has been left alone for
 * issue_settle_seconds — measured from the last event and from the file's
 * mtime both — so a file copied in chunks is never published half-written.
 * What then happens to it is publish.c's.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "archive.h"
#include "log.h"
#include "matrixd.h"
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
};

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

bool watch_settling(struct watch *w, const char *path)
{
	for (size_t i = 0; w && i < w->n; i++)
		if (!w->e[i].done && strcmp(w->e[i].path, path) == 0)
			return true;
	return false;
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
	next = publish_listing_retry(d);
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
				int r2 = issue_publish(d, load ? load : path, path);
				if (r2 == PUBLISH_LATER && d->once) {
					if (d->exit_code == 0)
						d->exit_code = 75; /* the next run tries again */
				} else if (r2 != PUBLISH_DONE) {
					e = &w->e[i];
					e->done = false;
					e->retry_ms = r2 == PUBLISH_STORE
					                  ? daemon_store_retry(d)
					                  : publish_backoff(&e->backoff_ms);
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
