/* Published issues and parse errors in the store (see archive.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "archive.h"
#include "xmalloc.h"

static char *col_dup(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return xstrdup(t ? (const char *)t : "");
}

static int save_articles(struct store *s, int64_t id, const struct issue *is, struct err *err)
{
	static const char del[] = "DELETE FROM articles WHERE issue_id = ?1";
	static const char ins[] =
	    "INSERT INTO articles(issue_id, idx, slug, section, title, summary, markdown, html, "
	    "text) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
	sqlite3_stmt *st = store_stmt(s, del, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, id);
	if (store_step_done(s, st, err, "articles") < 0)
		return -1;
	for (size_t i = 0; i < is->narticles; i++) {
		const struct article *a = &is->articles[i];
		st = store_stmt(s, ins, err);
		if (st == NULL)
			return -1;
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_int(st, 2, a->index);
		sqlite3_bind_text(st, 3, a->slug, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, a->section, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, a->title, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 6, a->summary, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 7, a->markdown, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 8, a->html, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 9, a->text, -1, SQLITE_STATIC);
		if (store_step_done(s, st, err, "articles") < 0)
			return -1;
	}
	return 0;
}

int archive_save(struct store *s, const struct issue *is, const char *path, int64_t date,
                 int64_t *id, enum archive_change *change, struct err *err)
{
	static const char find[] = "SELECT id, path, hash FROM issues WHERE number = ?1";
	static const char ins[] =
	    "INSERT INTO issues(number, title, period, language, status, lists, path, hash, date, "
	    "colophon, preface, created_at, updated_at, send_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
	    "?7, ?8, ?9, ?10, ?13, ?11, ?11, nullif(?14, 0)) RETURNING id";
	static const char upd[] =
	    "UPDATE issues SET title = ?2, period = ?3, language = ?4, status = ?5, lists = ?6, "
	    "path = ?7, hash = ?8, date = CASE WHEN ?12 > 0 THEN ?12 ELSE date END, "
	    "colophon = ?10, preface = ?13, updated_at = ?11, "
	    /* a new send_at is a new schedule: what held or released the old
	     * one does not carry over (SET reads the row as it was) */
	    "held_at = CASE WHEN send_at IS nullif(?14, 0) THEN held_at END, "
	    "released_at = CASE WHEN send_at IS nullif(?14, 0) THEN released_at END, "
	    "send_at = nullif(?14, 0) WHERE number = ?1 RETURNING id";
	int64_t now = store_now();
	char *old_path = NULL, *old_hash = NULL, *lists = issue_lists_csv(is);
	int rc = -1;
	if (store_begin(s, err) < 0)
		goto out;
	sqlite3_stmt *st = store_stmt(s, find, err);
	if (st == NULL)
		goto fail;
	sqlite3_bind_int(st, 1, is->number);
	if (sqlite3_step(st) == SQLITE_ROW) {
		*id = sqlite3_column_int64(st, 0);
		old_path = col_dup(st, 1);
		old_hash = col_dup(st, 2);
	}
	sqlite3_reset(st);
	if (old_path && strcmp(old_path, path) != 0 && access(old_path, F_OK) == 0) {
		err_at(err, ERR_INPUT, path, 1,
		       "issue number %d already comes from %s; give this issue another number "
		       "or remove one of the files",
		       is->number, old_path);
		goto fail;
	}
	if (old_hash && strcmp(old_hash, is->hash) == 0 && strcmp(old_path, path) == 0) {
		*change = ARCHIVE_UNCHANGED;
		rc = store_commit(s, err);
		goto out;
	}
	*change = old_path ? ARCHIVE_CORRECTED : ARCHIVE_NEW;
	st = store_stmt(s, old_path ? upd : ins, err);
	if (st == NULL)
		goto fail;
	sqlite3_bind_int(st, 1, is->number);
	sqlite3_bind_text(st, 2, is->title, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, is->period, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, is->language, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, is->is_draft ? "draft" : "publish", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, lists, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, path, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, is->hash, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 9, date > 0 ? date : now);
	sqlite3_bind_text(st, 10, is->colophon_html, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 11, now);
	sqlite3_bind_int64(st, 12, date);
	sqlite3_bind_text(st, 13, is->preface_html ? is->preface_html : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 14, (int64_t)is->send_at);
	if (sqlite3_step(st) != SQLITE_ROW) {
		store_fail(s, err, "save issue");
		sqlite3_reset(st);
		goto fail;
	}
	*id = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (save_articles(s, *id, is, err) < 0)
		goto fail;
	rc = store_commit(s, err);
	goto out;
fail:
	store_rollback(s);
out:
	free(old_path);
	free(old_hash);
	free(lists);
	return rc;
}

int archive_mark_published(struct store *s, int64_t id, const char *hash, struct err *err)
{
	static const char sql[] = "UPDATE issues SET pages_hash = ?2 WHERE id = ?1";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, hash, -1, SQLITE_STATIC);
	return store_step_done(s, st, err, "mark published");
}

int archive_mark_queued(struct store *s, int64_t id, int64_t now, struct err *err)
{
	static const char sql[] = "UPDATE issues SET queued_at = ?2 WHERE id = ?1";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, now);
	return store_step_done(s, st, err, "mark queued");
}

enum archive_phase archive_phase(const struct archive_issue *a, int64_t now, int grace)
{
	if (a->is_draft)
		return ARCHIVE_DRAFT;
	if (a->queued_at)
		return ARCHIVE_PUBLISHED;
	if (a->send_at == 0 || a->released_at)
		return ARCHIVE_DUE;
	if (a->held_at)
		return ARCHIVE_HELD;
	if (a->send_at > now)
		return ARCHIVE_SCHEDULED;
	return now - a->send_at > grace ? ARCHIVE_HELD : ARCHIVE_DUE;
}

bool archive_is_public(const struct archive_issue *a)
{
	return !a->is_draft && a->is_published && (a->send_at == 0 || a->queued_at != 0);
}

int archive_hold(struct store *s, int64_t id, int64_t now, struct err *err)
{
	static const char sql[] = "UPDATE issues SET held_at = ?2 WHERE id = ?1 AND held_at IS "
	                          "NULL AND queued_at IS NULL";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, now);
	return store_step_done(s, st, err, "hold issue");
}

int archive_release(struct store *s, int number, int64_t now, struct err *err)
{
	static const char sql[] = "UPDATE issues SET released_at = ?2 WHERE id = ?1";
	if (store_begin(s, err) < 0)
		return -1;
	struct archive_issue *a = archive_get(s, number, 0, err);
	if (a == NULL)
		goto fail;
	char when[48] = "";
	if (a->send_at)
		issue_format_time((time_t)a->send_at, when, sizeof when);
	int refused = 0;
	if (a->is_draft)
		refused = err_set(err, ERR_INPUT,
		                  "issue %d is a draft: set status: publish in its file to send it",
		                  number);
	else if (a->queued_at)
		refused = err_set(err, ERR_INPUT,
		                  "issue %d was already sent (see matrixctl status)", number);
	else if (a->send_at == 0)
		refused = err_set(
		    err, ERR_INPUT,
		    "issue %d has no send_at: it goes out as soon as matrixd picks it up", number);
	else if (a->send_at > now)
		refused = err_set(
		    err, ERR_INPUT,
		    "issue %d is scheduled for %s, which is still to come; change or remove "
		    "its send_at to send it sooner",
		    number, when);
	else if (a->released_at)
		refused =
		    err_set(err, ERR_INPUT,
		            "issue %d is released already; matrixd sends it when it runs", number);
	if (refused < 0)
		goto fail;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, a->id);
	sqlite3_bind_int64(st, 2, now);
	if (store_step_done(s, st, err, "release issue") < 0)
		goto fail;
	archive_issues_free(a, 1);
	return store_commit(s, err);
fail:
	archive_issues_free(a, a ? 1 : 0);
	store_rollback(s);
	return -1;
}

/* Not yet published issues with a send_at, that are not waiting for a release. */
#define SCHEDULED_WHERE                                                                            \
	"WHERE status = 'publish' AND queued_at IS NULL AND send_at IS NOT NULL "                  \
	"AND (held_at IS NULL OR released_at IS NOT NULL) "

int archive_scheduled_list(struct store *s, struct archive_scheduled **out, size_t *n,
                           struct err *err)
{
	static const char sql[] = "SELECT id, number, path, send_at, released_at IS NOT NULL "
	                          "FROM issues " SCHEDULED_WHERE "ORDER BY send_at";
	*out = NULL;
	*n = 0;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		*out = xreallocarray(*out, *n + 1, sizeof **out);
		(*out)[(*n)++] = (struct archive_scheduled){
		    sqlite3_column_int64(st, 0), sqlite3_column_int(st, 1), col_dup(st, 2),
		    sqlite3_column_int64(st, 3), sqlite3_column_int(st, 4) != 0};
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		archive_scheduled_free(*out, *n);
		*out = NULL;
		*n = 0;
		return store_fail(s, err, "scheduled issues");
	}
	return 0;
}

void archive_scheduled_free(struct archive_scheduled *a, size_t n)
{
	for (size_t i = 0; a && i < n; i++)
		free(a[i].path);
	free(a);
}

int archive_cancel_scheduled(struct store *s, const char *path, int64_t *n, struct err *err)
{
	static const char sql[] = "DELETE FROM issues WHERE path = ?1 AND status = 'publish' "
	                          "AND queued_at IS NULL AND send_at IS NOT NULL";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
	if (store_step_done(s, st, err, "cancel schedule") < 0)
		return -1;
	if (n)
		*n = sqlite3_changes(s->db);
	return 0;
}

int archive_cancel_renumbered(struct store *s, const char *path, int number, int64_t *n,
                              struct err *err)
{
	static const char sql[] =
	    "DELETE FROM issues WHERE path = ?1 AND number <> ?2 "
	    "AND status = 'publish' AND queued_at IS NULL AND send_at IS NOT NULL";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, number);
	if (store_step_done(s, st, err, "cancel the old number's schedule") < 0)
		return -1;
	if (n)
		*n = sqlite3_changes(s->db);
	return 0;
}

#define ISSUE_COLS                                                                                 \
	"SELECT i.id, i.number, i.title, i.period, i.path, i.hash, i.lists, i.status, i.date, "    \
	"coalesce(i.queued_at, 0), i.updated_at, "                                                 \
	"(SELECT count(*) FROM articles a WHERE a.issue_id = i.id), "                              \
	"(SELECT title FROM articles a WHERE a.issue_id = i.id AND a.idx = 1), "                   \
	"coalesce(i.send_at, 0), coalesce(i.held_at, 0), coalesce(i.released_at, 0), "             \
	"i.pages_hash = i.hash FROM issues i "

static void issue_row(sqlite3_stmt *st, struct archive_issue *a)
{
	a->id = sqlite3_column_int64(st, 0);
	a->number = sqlite3_column_int(st, 1);
	a->title = col_dup(st, 2);
	a->period = col_dup(st, 3);
	a->path = col_dup(st, 4);
	a->hash = col_dup(st, 5);
	a->lists = col_dup(st, 6);
	a->is_draft = strcmp((const char *)sqlite3_column_text(st, 7), "draft") == 0;
	a->date = sqlite3_column_int64(st, 8);
	a->queued_at = sqlite3_column_int64(st, 9);
	a->updated_at = sqlite3_column_int64(st, 10);
	a->narticles = sqlite3_column_int(st, 11);
	a->lead = col_dup(st, 12);
	a->send_at = sqlite3_column_int64(st, 13);
	a->held_at = sqlite3_column_int64(st, 14);
	a->released_at = sqlite3_column_int64(st, 15);
	a->is_published = sqlite3_column_int(st, 16) != 0;
}

void archive_issues_free(struct archive_issue *a, size_t n)
{
	for (size_t i = 0; a && i < n; i++) {
		free(a[i].title);
		free(a[i].period);
		free(a[i].path);
		free(a[i].hash);
		free(a[i].lists);
		free(a[i].lead);
	}
	free(a);
}

struct archive_issue *archive_get(struct store *s, int number, int64_t id, struct err *err)
{
	static const char sql[] = ISSUE_COLS "WHERE (?1 > 0 AND i.number = ?1) OR i.id = ?2";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return NULL;
	sqlite3_bind_int(st, 1, number);
	sqlite3_bind_int64(st, 2, number > 0 ? -1 : id);
	struct archive_issue *a = NULL;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		a = xcalloc(1, sizeof *a);
		issue_row(st, a);
	} else if (rc == SQLITE_DONE) {
		err_set(err, ERR_NOTFOUND, "no issue number %d", number);
	} else {
		store_fail(s, err, "issue");
	}
	sqlite3_reset(st);
	return a;
}

struct archive_issue *archive_list(struct store *s, size_t *n, struct err *err)
{
	static const char sql[] = ISSUE_COLS "ORDER BY i.number DESC";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	*n = 0;
	if (st == NULL)
		return NULL;
	struct archive_issue *a = NULL;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		a = xreallocarray(a, *n + 1, sizeof *a);
		issue_row(st, &a[(*n)++]);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		store_fail(s, err, "issues");
		archive_issues_free(a, *n);
		*n = 0;
		return NULL;
	}
	if (a == NULL)
		a = xcalloc(1, sizeof *a);
	return a;
}

struct issue *archive_load(struct store *s, int64_t id, struct err *err)
{
	static const char head[] =
	    "SELECT number, title, period, language, status, date, colophon, "
	    "path, hash, preface FROM issues WHERE id = ?1";
	static const char arts[] =
	    "SELECT idx, slug, section, title, summary, markdown, html, text "
	    "FROM articles WHERE issue_id = ?1 ORDER BY idx";
	sqlite3_stmt *st = store_stmt(s, head, err);
	if (st == NULL)
		return NULL;
	sqlite3_bind_int64(st, 1, id);
	if (sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_reset(st);
		err_set(err, ERR_NOTFOUND, "no issue with id %lld", (long long)id);
		return NULL;
	}
	struct issue *is = xcalloc(1, sizeof *is);
	is->number = sqlite3_column_int(st, 0);
	is->title = col_dup(st, 1);
	is->period = col_dup(st, 2);
	is->language = col_dup(st, 3);
	is->is_draft = strcmp((const char *)sqlite3_column_text(st, 4), "draft") == 0;
	is->date = (time_t)sqlite3_column_int64(st, 5);
	is->colophon_html = col_dup(st, 6);
	is->colophon = xstrdup("");
	is->preface = xstrdup("");
	is->preface_html = col_dup(st, 9);
	is->path = col_dup(st, 7);
	snprintf(is->hash, sizeof is->hash, "%s", (const char *)sqlite3_column_text(st, 8));
	sqlite3_reset(st);
	st = store_stmt(s, arts, err);
	if (st == NULL) {
		issue_free(is);
		return NULL;
	}
	sqlite3_bind_int64(st, 1, id);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		is->articles = xreallocarray(is->articles, is->narticles + 1, sizeof *is->articles);
		struct article *a = &is->articles[is->narticles++];
		memset(a, 0, sizeof *a);
		a->index = sqlite3_column_int(st, 0);
		a->slug = col_dup(st, 1);
		a->section = col_dup(st, 2);
		a->title = col_dup(st, 3);
		a->summary = col_dup(st, 4);
		a->markdown = col_dup(st, 5);
		a->html = col_dup(st, 6);
		a->text = col_dup(st, 7);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		store_fail(s, err, "articles");
		issue_free(is);
		return NULL;
	}
	return is;
}

int archive_error_set(struct store *s, const char *path, const char *hash, const char *msg,
                      struct err *err)
{
	static const char sql[] =
	    "INSERT INTO issue_errors(path, hash, error, at) VALUES (?1, ?2, ?3, ?4) "
	    "ON CONFLICT(path) DO UPDATE SET hash = excluded.hash, error = excluded.error, "
	    "at = excluded.at";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, hash ? hash : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, msg, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, store_now());
	return store_step_done(s, st, err, "issue error");
}

int archive_error_clear(struct store *s, const char *path, struct err *err)
{
	static const char sql[] = "DELETE FROM issue_errors WHERE path = ?1";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
	return store_step_done(s, st, err, "issue error");
}

struct archive_error *archive_errors(struct store *s, size_t *n, struct err *err)
{
	static const char sql[] = "SELECT path, error, at FROM issue_errors ORDER BY at DESC";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	*n = 0;
	if (st == NULL)
		return NULL;
	struct archive_error *e = xcalloc(1, sizeof *e);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		e = xreallocarray(e, *n + 1, sizeof *e);
		e[*n].path = col_dup(st, 0);
		e[*n].msg = col_dup(st, 1);
		e[*n].at = sqlite3_column_int64(st, 2);
		(*n)++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		store_fail(s, err, "issue errors");
		archive_errors_free(e, *n);
		*n = 0;
		return NULL;
	}
	return e;
}

void archive_errors_free(struct archive_error *e, size_t n)
{
	for (size_t i = 0; e && i < n; i++) {
		free(e[i].path);
		free(e[i].msg);
	}
	free(e);
}
