/*
 * What happens to an issue once it has settled (watch.c) or come due
 * (schedule.c): parse (a bad issue is logged and recorded with its
 * FILE:LINE error, and retried when it changes), save in the store, render
 * its pages, create its deliveries once (a correction updates pages and
 * feeds and sends nothing; a draft or a scheduled issue is rendered for its
 * editors and not sent), then rewrite the index and the feeds. Nothing is
 * queued before the issue's pages are written (docs/design.md, Publishing);
 * a write that fails is shown in `matrixctl status` and tried again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "archive.h"
#include "issue.h"
#include "log.h"
#include "matrixd.h"
#include "render.h"
#include "subs.h"
#include "xmalloc.h"

int64_t publish_backoff(int64_t *ms)
{
	*ms = *ms ? *ms * 2 : 5000;
	if (*ms > 300000)
		*ms = 300000;
	return now_ms() + *ms;
}

/*
 * index.html and the feeds: a failure (public_dir read-only, full) is shown
 * by `matrixctl status` under public_dir's name and tried again; success
 * clears it.
 */
static void listing_result(struct daemon *d, bool ok, const struct err *e)
{
	struct err e2;
	if (ok) {
		if (archive_error_clear(d->store, d->conf.public_dir, &e2) < 0)
			log_warnx("%s", e2.msg);
		d->listing_retry_ms = d->listing_backoff_ms = 0;
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
	} else {
		d->listing_retry_ms = publish_backoff(&d->listing_backoff_ms);
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
	struct web_offer w;
	web_offer_load(d, &w); /* the store cannot tell: pages without the form, said so */
	int r = render_index(&d->conf, d->tmpl, items, k, &w.offer, d->conf.public_dir, &e);
	web_offer_free(&w);
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

int64_t publish_listing_retry(struct daemon *d)
{
	if (d->listing_retry_ms && d->listing_retry_ms <= now_ms())
		publish_listing(d);
	return d->listing_retry_ms;
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
	struct web_offer w;
	if (changed)
		web_offer_load(d, &w);
	if (changed &&
	    render_issue_pages(&d->conf, d->tmpl, is, (time_t)a->date, &w.offer, dir, &e) < 0)
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
	if (changed)
		web_offer_free(&w);
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
	(void)issue_publish(d, load ? load : path, path);
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
	struct web_offer w;
	web_offer_load(d, &w);
	int r = render_issue_pages(&d->conf, d->tmpl, is, (time_t)a->date, &w.offer,
	                           d->conf.public_dir, &e);
	web_offer_free(&w);
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

enum publish_result issue_publish(struct daemon *d, const char *load, const char *path)
{
	struct issue_opts o = issue_opts_of(&d->conf);
	struct issue *is = NULL;
	struct err e;
	err_clear(&e);
	if (issue_load(load, &o, &is, &e) < 0) {
		reject(d, path, "", &e);
		return PUBLISH_DONE;
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
			return PUBLISH_LATER;
		}
		err_at(&e, ERR_INPUT, path, is->lists_line,
		       "no list named '%s' (see matrixctl lists); fix the name or create the list "
		       "with matrixctl list-create",
		       is->lists[i]);
		reject(d, path, is->hash, &e);
		issue_free(is);
		return PUBLISH_DONE;
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
		return e.kind == ERR_TEMP ? PUBLISH_STORE : PUBLISH_DONE;
	}
	int64_t renumbered = 0;
	if (change != ARCHIVE_UNCHANGED &&
	    archive_cancel_renumbered(d->store, path, is->number, &renumbered, &e) < 0)
		log_warnx("issue=%d: %s", is->number, e.msg);
	else if (renumbered)
		log_notice("%s now holds issue %d: the schedule of the number it held before is "
		           "cancelled, nothing is sent for it",
		           path, is->number);
	struct archive_issue *a = archive_get(d->store, 0, id, &e);
	if (a == NULL) {
		log_warnx("issue %d: %s", is->number, e.msg);
		issue_free(is);
		return PUBLISH_DONE;
	}
	enum archive_phase ph = archive_phase(a, store_now(), d->conf.schedule_grace);
	if (ph == ARCHIVE_HELD && a->held_at == 0 &&
	    archive_hold(d->store, id, store_now(), &e) < 0)
		log_warnx("issue=%d: %s", is->number, e.msg);
	bool listing = change != ARCHIVE_UNCHANGED; /* the index and feeds to rewrite */
	int r = PUBLISH_DONE;
	if (ph == ARCHIVE_DRAFT || ph == ARCHIVE_SCHEDULED || ph == ARCHIVE_HELD) {
		preview(d, is, a, ph, change != ARCHIVE_UNCHANGED);
	} else if (change != ARCHIVE_UNCHANGED || !a->is_published || ph == ARCHIVE_DUE) {
		/* new, changed, due, or its pages failed before */
		if (publish_pages(d, is, a, path) < 0) {
			r = PUBLISH_LATER;
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

/* The public lists as the pages show them: names and titles, one a line. */
static char *offer_signature(const struct web_offer *w)
{
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	for (size_t i = 0; i < w->nlists; i++)
		buf_printf(&b, "%s\t%s\n", w->lists[i].name, w->lists[i].title);
	char *sig = buf_detach(&b);
	return sig ? sig : xstrdup("");
}

#define OFFER_KEY "web.offer"

int publish_offer_check(struct daemon *d, bool listing)
{
	struct web_offer w;
	struct err e;
	err_clear(&e);
	if (web_offer_load(d, &w) < 0)
		return -1;
	char *sig = offer_signature(&w), *had = store_kv_get(d->store, OFFER_KEY, &e);
	int r = 0;
	if (had && strcmp(had, sig) == 0)
		goto out;
	/* every public issue's pages again, then the index: a form that
	 * offers a list gone private would only earn its readers a 400 */
	size_t n = 0, k = 0;
	struct archive_issue *all = archive_list(d->store, &n, &e);
	if (all == NULL) {
		log_warnx("the subscribe form's lists changed; pages not rewritten: %s", e.msg);
		r = -1;
		goto out;
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		if (!archive_is_public(&all[i]))
			continue;
		struct issue *is = archive_load(d->store, all[i].id, &e);
		r = is ? render_issue_pages(&d->conf, d->tmpl, is, (time_t)all[i].date, &w.offer,
		                            d->conf.public_dir, &e)
		       : -1;
		issue_free(is);
		k += r == 0;
	}
	archive_issues_free(all, n);
	if (r == 0 && listing)
		r = publish_listing(d);
	if (r == 0)
		r = store_kv_set(d->store, OFFER_KEY, sig, &e);
	if (r < 0)
		log_warnx("the subscribe form's lists changed; pages not all rewritten (tried "
		          "again at the next change or start): %s",
		          e.msg[0] ? e.msg : "index.html");
	else if (had)
		log_info("the subscribe form's lists changed: the pages of %zu issue%s rewritten",
		         k, k == 1 ? "" : "s");
out:
	free(sig);
	free(had);
	web_offer_free(&w);
	return r;
}
