/*
 * Published issues in the store: the issues and articles tables, from which
 * the feeds and the web archive are rebuilt and the mail rendered; and the
 * issue files that failed to parse (issue_errors), for `matrixctl status`.
 *
 * An issue is identified by its number. Saving the same number again from
 * the same file (or a renamed one) with other content is a correction: the
 * articles are replaced, the deliveries are not touched.
 */
#ifndef MATRIX_ARCHIVE_H
#define MATRIX_ARCHIVE_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "issue.h"
#include "store.h"

enum archive_change { ARCHIVE_NEW, ARCHIVE_UNCHANGED, ARCHIVE_CORRECTED };

struct archive_issue {
	int64_t id;
	int number;
	char *title, *period, *path, *hash, *lists;
	bool is_draft;
	/* its pages in public_dir are written for its current content: only
	 * then is it queued or listed */
	bool is_published;
	int64_t date, queued_at, updated_at; /* queued_at 0: no deliveries yet */
	int64_t send_at;                     /* 0: not scheduled */
	int64_t held_at, released_at;        /* 0: not held, not released */
	int narticles;
	char *lead; /* the first article's title */
};

/*
 * Saves is (read from path). date is the front matter's publication date, or
 * 0: a new issue then gets the current time, a correction keeps its date.
 * Refuses (ERR_INPUT) an issue
 * number that another existing file already holds. *id and *change say
 * what happened.
 */
int archive_save(struct store *s, const struct issue *is, const char *path, int64_t date,
                 int64_t *id, enum archive_change *change, struct err *err);

/*
 * Where an issue stands (docs/design.md, "Scheduled issues"):
 *   DRAFT      status: draft; rendered for the editors, never sent
 *   SCHEDULED  send_at still to come: rendered for the editors only
 *   HELD       send_at missed by more than the grace: waits for release
 *   DUE        to be published and queued now
 *   PUBLISHED  its deliveries exist (queued_at)
 * A send_at missed by more than grace seconds at now is HELD even before
 * archive_hold() recorded it.
 */
enum archive_phase {
	ARCHIVE_DRAFT,
	ARCHIVE_SCHEDULED,
	ARCHIVE_HELD,
	ARCHIVE_DUE,
	ARCHIVE_PUBLISHED
};
enum archive_phase archive_phase(const struct archive_issue *a, int64_t now, int grace);
/* Readers see it (index, feeds, pages in public_dir): its pages are
 * written, and it is published, or an unscheduled issue that is not a
 * draft. */
bool archive_is_public(const struct archive_issue *a);

/* Records that issue id is held (its send_at was missed). */
int archive_hold(struct store *s, int64_t id, int64_t now, struct err *err);
/*
 * matrixctl release: lets issue number go out although its send_at was
 * missed. ERR_NOTFOUND for no such issue; ERR_INPUT (with what to do) for a
 * draft, an issue already sent, one without send_at, or one whose send_at
 * is still to come.
 */
int archive_release(struct store *s, int number, int64_t now, struct err *err);

/* The issues waiting for their send_at or released, not yet published
 * (held ones wait for a release, not for a time): ids, paths (allocated),
 * send_at, and whether an admin released them, earliest first. */
struct archive_scheduled {
	int64_t id;
	int number;
	char *path;
	int64_t send_at;
	bool released;
};
int archive_scheduled_list(struct store *s, struct archive_scheduled **out, size_t *n,
                           struct err *err);
void archive_scheduled_free(struct archive_scheduled *a, size_t n);

/*
 * The file of a scheduled issue was removed before its time: the schedule
 * is cancelled (the issue, never published, leaves the store). Published
 * issues and drafts stay. *n (may be NULL) counts the issues cancelled.
 */
int archive_cancel_scheduled(struct store *s, const char *path, int64_t *n, struct err *err);
/*
 * The file of a scheduled issue now holds issue number: the schedules of
 * the other numbers it held, never published, are cancelled as above.
 * *n (may be NULL) counts them.
 */
int archive_cancel_renumbered(struct store *s, const char *path, int number, int64_t *n,
                              struct err *err);

/* Notes that the issue's pages are written for the content of hash. */
int archive_mark_published(struct store *s, int64_t id, const char *hash, struct err *err);

/* Notes that the issue's deliveries were created. */
int archive_mark_queued(struct store *s, int64_t id, int64_t now, struct err *err);

/* One issue by number (id when number is 0) or NULL (err->kind
 * ERR_NOTFOUND when absent). */
struct archive_issue *archive_get(struct store *s, int number, int64_t id, struct err *err);
/* Every issue, newest (highest number) first. */
struct archive_issue *archive_list(struct store *s, size_t *n, struct err *err);
void archive_issues_free(struct archive_issue *a, size_t n);

/* The stored issue rebuilt for rendering (articles with their HTML, text,
 * summary, slug); NULL with err when absent. */
struct issue *archive_load(struct store *s, int64_t id, struct err *err);

/* Issue files that failed to parse: recorded, cleared, listed. */
int archive_error_set(struct store *s, const char *path, const char *hash, const char *msg,
                      struct err *err);
int archive_error_clear(struct store *s, const char *path, struct err *err);
struct archive_error {
	char *path, *msg;
	int64_t at;
};
struct archive_error *archive_errors(struct store *s, size_t *n, struct err *err);
void archive_errors_free(struct archive_error *e, size_t n);

#endif
