/*
 * Lists, subscribers, memberships and their history (see subs.h for the
 * rules). CSV import and export live in subs_csv.c. Every statement is a
 * cached, parameter-bound one from store_stmt(); every write runs between
 * store_begin() and store_commit().
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "listname.h"
#include "ledger.h"
#include "subs.h"
#include "utf8.h"
#include "xmalloc.h"

#define FORGET_CHECKPOINT_MS 2000

static const char *const status_names[SUBS_NSTATUS] = {"pending", "confirmed", "unsubscribed",
                                                       "bounced"};
static const char *const mode_names[2] = {"article", "digest"};
static const char *const outcome_names[4] = {"added", "updated", "unchanged", "suppressed"};

const char *subs_status_name(enum subs_status st)
{
	return (unsigned)st < SUBS_NSTATUS ? status_names[st] : "?";
}

const char *subs_mode_name(enum subs_mode m)
{
	return (unsigned)m < 2 ? mode_names[m] : "?";
}

const char *subs_outcome_name(enum subs_outcome o)
{
	return (unsigned)o < 4 ? outcome_names[o] : "?";
}

int subs_status_parse(const char *s, enum subs_status *out)
{
	for (int i = 0; i < SUBS_NSTATUS; i++)
		if (strcasecmp(s, status_names[i]) == 0) {
			*out = (enum subs_status)i;
			return 0;
		}
	return -1;
}

int subs_mode_parse(const char *s, enum subs_mode *out)
{
	for (int i = 0; i < 2; i++)
		if (strcasecmp(s, mode_names[i]) == 0) {
			*out = (enum subs_mode)i;
			return 0;
		}
	return -1;
}

bool subs_is_suppressed(enum subs_status st)
{
	return st == SUBS_UNSUBSCRIBED || st == SUBS_BOUNCED;
}

/* Statuses come back from the database as text; the CHECK constraint keeps
 * them to the four names. */
static enum subs_status status_of(sqlite3_stmt *st, int col)
{
	enum subs_status v = SUBS_PENDING;
	const char *t = (const char *)sqlite3_column_text(st, col);
	if (t)
		subs_status_parse(t, &v);
	return v;
}

static enum subs_mode mode_of(sqlite3_stmt *st, int col)
{
	enum subs_mode v = SUBS_ARTICLE;
	const char *t = (const char *)sqlite3_column_text(st, col);
	if (t)
		subs_mode_parse(t, &v);
	return v;
}

static char *col_dup(sqlite3_stmt *st, int col)
{
	const char *t = (const char *)sqlite3_column_text(st, col);
	return xstrdup(t ? t : "");
}

const char *subs_text_check(const char *s, size_t n, size_t max_cp)
{
	if (memchr(s, '\0', n))
		return "contains a NUL byte";
	if (!utf8_valid(s, n, NULL))
		return "is not valid UTF-8";
	const char *p = s, *end = s + n;
	size_t cps = 0;
	while (p < end) {
		int32_t cp = utf8_next(&p, end);
		/* C0, DEL and C1: a name ends up in a To: header (RFC 5322 §2.2). */
		if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0))
			return "contains a control character (a line break, a tab …)";
		cps++;
	}
	if (max_cp && cps > max_cp)
		return "is too long";
	return NULL;
}

int subs_event_add(struct store *s, int64_t subscriber_id, int64_t list_id, const char *kind,
                   const char *via, const char *actor, const char *detail, struct err *err)
{
	static const char sql[] =
	    "INSERT INTO events(subscriber_id, list_id, at, kind, via, actor, detail) "
	    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	if (subscriber_id > 0)
		sqlite3_bind_int64(st, 1, subscriber_id);
	if (list_id > 0)
		sqlite3_bind_int64(st, 2, list_id);
	sqlite3_bind_int64(st, 3, store_now());
	sqlite3_bind_text(st, 4, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, via ? via : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, actor ? actor : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, detail ? detail : "", -1, SQLITE_STATIC);
	return store_step_done(s, st, err, "recording an event");
}

/*
 * The key keeps the local part's case (addr.h), so "Alice@x" and "alice@x"
 * are two subscribers. When a lookup finds nothing, name an address that
 * differs only in case: a full scan, but only on this error path.
 */
static int not_found(struct store *s, const char *key, struct err *err, const char *fmt,
                     const char *a, const char *b)
{
	static const char sql[] =
	    "SELECT email FROM subscribers WHERE email_key = ?1 COLLATE NOCASE LIMIT 1";
	char msg[600];
	snprintf(msg, sizeof msg, fmt, a, b);
	sqlite3_stmt *st = store_stmt(s, sql, NULL);
	if (st) {
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_ROW) {
			size_t n = strlen(msg);
			snprintf(msg + n, sizeof msg - n,
			         " (but %s is known: the part before '@' is case-sensitive)",
			         (const char *)sqlite3_column_text(st, 0));
		}
		sqlite3_reset(st);
	}
	return err_set(err, ERR_NOTFOUND, "%s", msg);
}

/* ---- lists ---------------------------------------------------------------- */

int64_t subs_list_id(struct store *s, const char *name, struct err *err)
{
	static const char sql[] = "SELECT id FROM lists WHERE name = ?1";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	int64_t id = -1;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		id = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		err_set(err, ERR_NOTFOUND,
		        "no list '%s' (see matrixctl lists; create it with "
		        "matrixctl list-create)",
		        name);
	else
		store_fail(s, err, "looking up a list");
	sqlite3_reset(st);
	return id;
}

int subs_list_names(struct store *s, int64_t list_id, char **name, char **title, struct err *err)
{
	static const char sql[] = "SELECT name, title FROM lists WHERE id = ?1";
	*name = *title = NULL;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, list_id);
	int rc = sqlite3_step(st), r = -1;
	if (rc == SQLITE_ROW) {
		*name = col_dup(st, 0);
		*title = col_dup(st, 1);
		r = 0;
	} else if (rc == SQLITE_DONE) {
		err_set(err, ERR_NOTFOUND, "no list with id %lld (deleted meanwhile?)",
		        (long long)list_id);
	} else {
		store_fail(s, err, "looking up a list");
	}
	sqlite3_reset(st);
	return r;
}

int subs_membership_status(struct store *s, int64_t subscriber_id, int64_t list_id,
                           enum subs_status *status, struct err *err)
{
	static const char sql[] =
	    "SELECT status FROM memberships WHERE list_id = ?1 AND subscriber_id = ?2";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, list_id);
	sqlite3_bind_int64(st, 2, subscriber_id);
	int rc = sqlite3_step(st), r = 0;
	if (rc == SQLITE_ROW)
		r = subs_status_parse((const char *)sqlite3_column_text(st, 0), status) == 0;
	else if (rc != SQLITE_DONE)
		r = store_fail(s, err, "looking up a membership");
	sqlite3_reset(st);
	return r;
}

int subs_list_create(struct store *s, const char *name, const char *title, const char *description,
                     const char *actor, struct err *err)
{
	static const char sql[] =
	    "INSERT INTO lists(name, title, description, created_at) VALUES (?1, ?2, ?3, ?4) "
	    "ON CONFLICT(name) DO NOTHING";
	const char *why;
	if (!list_name_valid(name))
		return err_set(err, ERR_INPUT,
		               "invalid list name '%s': use " LIST_NAME_RULE
		               " (it becomes part of the List-Id header)",
		               name);
	if (title == NULL || *title == '\0')
		title = name;
	if (description == NULL)
		description = "";
	if ((why = subs_text_check(title, strlen(title), 200)) != NULL)
		return err_set(err, ERR_INPUT,
		               "the title %s; a title is one line of at most 200 characters", why);
	if (!utf8_valid(description, strlen(description), NULL))
		return err_set(err, ERR_INPUT, "the description is not valid UTF-8");

	if (store_begin(s, err) < 0)
		return -1;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		goto fail;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, title, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, description, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, store_now());
	if (store_step_done(s, st, err, "creating a list") < 0)
		goto fail;
	if (sqlite3_changes(s->db) == 0) {
		err_set(err, ERR_INPUT, "list '%s' exists already (see matrixctl lists)", name);
		goto fail;
	}
	if (subs_event_add(s, 0, sqlite3_last_insert_rowid(s->db), "list-create", "cli", actor,
	                   name, err) < 0)
		goto fail;
	return store_commit(s, err);
fail:
	store_rollback(s);
	return -1;
}

int subs_list_delete(struct store *s, const char *name, bool force, const char *actor,
                     int64_t *removed, struct err *err)
{
	static const char count_sql[] = "SELECT count(*) FROM memberships WHERE list_id = ?1";
	static const char del_deliv_sql[] =
	    "DELETE FROM deliveries WHERE list_id = ?1 AND state IN ('queued', 'deferred')";
	static const char del_sql[] = "DELETE FROM lists WHERE id = ?1";
	int64_t n = 0;
	sqlite3_stmt *st;
	if (removed)
		*removed = 0;
	if (strcmp(name, SUBS_DEFAULT_LIST) == 0)
		return err_set(err, ERR_INPUT,
		               "list '%s' is the default list (--list defaults to it) and cannot "
		               "be deleted",
		               name);
	if (store_begin(s, err) < 0)
		return -1;
	int64_t id = subs_list_id(s, name, err);
	if (id < 0)
		goto fail;
	if ((st = store_stmt(s, count_sql, err)) == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, id);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (n > 0 && !force) {
		err_set(err, ERR_INPUT,
		        "list '%s' has %lld subscriber record(s) (any status); pass --force to "
		        "delete them with the list",
		        name, (long long)n);
		goto fail;
	}
	if ((st = store_stmt(s, del_deliv_sql, err)) == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, id);
	if (store_step_done(s, st, err, "deleting the list's queued mail") < 0)
		goto fail;
	if ((st = store_stmt(s, del_sql, err)) == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, id);
	if (store_step_done(s, st, err, "deleting a list") < 0)
		goto fail;
	char detail[128];
	snprintf(detail, sizeof detail, "%s (%lld memberships removed)", name, (long long)n);
	if (subs_event_add(s, 0, 0, "list-delete", "cli", actor, detail, err) < 0)
		goto fail;
	if (store_commit(s, err) < 0)
		return -1;
	if (removed)
		*removed = n;
	return 0;
fail:
	store_rollback(s);
	return -1;
}

int subs_list_set_private(struct store *s, const char *name, bool is_private, const char *actor,
                          bool *changed, struct err *err)
{
	static const char sql[] = "UPDATE lists SET private = ?2 WHERE id = ?1 AND private <> ?2";
	if (changed)
		*changed = false;
	if (store_begin(s, err) < 0)
		return -1;
	int64_t id = subs_list_id(s, name, err);
	sqlite3_stmt *st = id < 0 ? NULL : store_stmt(s, sql, err);
	if (st == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int(st, 2, is_private);
	if (store_step_done(s, st, err, "changing a list") < 0)
		goto fail;
	bool did = sqlite3_changes(s->db) > 0;
	if (did && subs_event_add(s, 0, id, is_private ? "list-private" : "list-public", "cli",
	                          actor, name, err) < 0)
		goto fail;
	if (store_commit(s, err) < 0)
		return -1;
	if (changed)
		*changed = did;
	return 0;
fail:
	store_rollback(s);
	return -1;
}

struct subs_list *subs_lists(struct store *s, size_t *n, struct err *err)
{
	static const char sql[] =
	    "SELECT l.id, l.name, l.title, l.description, l.created_at,"
	    " (SELECT count(*) FROM memberships m WHERE m.list_id = l.id AND m.status = 'pending'),"
	    " (SELECT count(*) FROM memberships m WHERE m.list_id = l.id AND m.status = "
	    "'confirmed'),"
	    " (SELECT count(*) FROM memberships m WHERE m.list_id = l.id"
	    "   AND m.status = 'unsubscribed'),"
	    " (SELECT count(*) FROM memberships m WHERE m.list_id = l.id AND m.status = 'bounced'),"
	    " l.pace, l.private FROM lists l ORDER BY l.name";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	struct subs_list *v = NULL;
	size_t len = 0, cap = 0;
	int rc;
	*n = 0;
	if (st == NULL)
		return NULL;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (len == cap) {
			cap = cap ? cap * 2 : 8;
			v = xreallocarray(v, cap, sizeof *v);
		}
		struct subs_list *l = &v[len++];
		l->id = sqlite3_column_int64(st, 0);
		l->name = col_dup(st, 1);
		l->title = col_dup(st, 2);
		l->description = col_dup(st, 3);
		l->created_at = sqlite3_column_int64(st, 4);
		for (int i = 0; i < SUBS_NSTATUS; i++)
			l->count[i] = sqlite3_column_int64(st, 5 + i);
		l->pace = sqlite3_column_int64(st, 5 + SUBS_NSTATUS);
		l->is_private = sqlite3_column_int(st, 6 + SUBS_NSTATUS) != 0;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		store_fail(s, err, "listing lists");
		subs_lists_free(v, len);
		return NULL;
	}
	*n = len;
	return v ? v : xcalloc(1, sizeof *v);
}

struct subs_list *subs_public_lists(struct store *s, size_t *n, struct err *err)
{
	static const char sql[] = "SELECT id, name, title, description, created_at, pace FROM lists"
	                          " WHERE private = 0 ORDER BY name <> ?1, name";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	struct subs_list *v = NULL;
	size_t len = 0;
	int rc;
	*n = 0;
	if (st == NULL)
		return NULL;
	sqlite3_bind_text(st, 1, SUBS_DEFAULT_LIST, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		v = xreallocarray(v, len + 1, sizeof *v);
		struct subs_list *l = &v[len++];
		memset(l, 0, sizeof *l);
		l->id = sqlite3_column_int64(st, 0);
		l->name = col_dup(st, 1);
		l->title = col_dup(st, 2);
		l->description = col_dup(st, 3);
		l->created_at = sqlite3_column_int64(st, 4);
		l->pace = sqlite3_column_int64(st, 5);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		store_fail(s, err, "listing the public lists");
		subs_lists_free(v, len);
		return NULL;
	}
	*n = len;
	return v ? v : xcalloc(1, sizeof *v);
}

void subs_lists_free(struct subs_list *l, size_t n)
{
	if (l == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(l[i].name);
		free(l[i].title);
		free(l[i].description);
	}
	free(l);
}

/* ---- memberships ------------------------------------------------------- */

/*
 * The confirmation mail the daemon sends for a pending membership: a ledger
 * row with issue_id 0 and part = the list id (the welcome and the notice:
 * issue_id LEDGER_WELCOME, LEDGER_NOTICE). Requeued when it was sent or
 * failed before; one still on its way (queued, deferred, being sent) is
 * left alone, and *queued is false: nothing new goes out.
 */
int subs_queue_confirmation(struct store *s, int64_t subscriber_id, int64_t list_id, bool *queued,
                            struct err *err)
{
	return subs_queue_mail(s, LEDGER_CONFIRM, subscriber_id, list_id, queued, err);
}

int subs_queue_mail(struct store *s, int kind, int64_t subscriber_id, int64_t list_id, bool *queued,
                    struct err *err)
{
	static const char sql[] =
	    "INSERT INTO deliveries(issue_id, part, subscriber_id, list_id, state, attempts,"
	    " next_attempt, created_at, updated_at) VALUES (?4, ?2, ?1, ?2, 'queued', 0, ?3, ?3, "
	    "?3)"
	    " ON CONFLICT(issue_id, part, subscriber_id) DO UPDATE SET state = 'queued',"
	    " attempts = 0, next_attempt = excluded.next_attempt, updated_at = excluded.updated_at,"
	    " first_attempt = NULL" /* retry_max_age counts from this mail's first attempt */
	    " WHERE state IN ('sent', 'failed')";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, subscriber_id);
	sqlite3_bind_int64(st, 2, list_id);
	sqlite3_bind_int64(st, 3, store_now());
	sqlite3_bind_int(st, 4, kind);
	if (store_step_done(s, st, err, "queueing a mail") < 0)
		return -1;
	if (queued)
		*queued = sqlite3_changes(s->db) > 0;
	return 0;
}

int subs_membership_add(struct store *s, int64_t sid, int64_t lid, enum subs_status status,
                        enum subs_mode mode, const char *via, const char *by, struct err *err)
{
	static const char sql[] =
	    "INSERT INTO memberships(list_id, subscriber_id, status, mode, consent_at,"
	    " consent_via, consent_by, status_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,"
	    " ?8, ?8)";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	int64_t now = store_now();
	sqlite3_bind_int64(st, 1, lid);
	sqlite3_bind_int64(st, 2, sid);
	sqlite3_bind_text(st, 3, subs_status_name(status), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, subs_mode_name(mode), -1, SQLITE_STATIC);
	if (!subs_is_suppressed(status)) {
		sqlite3_bind_int64(st, 5, now);
		sqlite3_bind_text(st, 6, via, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 7, by, -1, SQLITE_STATIC);
	}
	sqlite3_bind_int64(st, 8, now);
	return store_step_done(s, st, err, "adding a membership");
}

int subs_transition(struct store *s, int64_t sid, int64_t lid, enum subs_status from,
                    enum subs_status to, const char *via, const char *by, const char *actor,
                    const char *why, struct err *err)
{
	static const char optin_sql[] =
	    "UPDATE memberships SET status = ?3, status_at = ?4, consent_at = ?4,"
	    " consent_via = ?5, consent_by = ?6,"
	    " bounce_score = CASE WHEN ?7 THEN 0 ELSE bounce_score END"
	    " WHERE list_id = ?1 AND subscriber_id = ?2";
	static const char optout_sql[] = "UPDATE memberships SET status = ?3, status_at = ?4"
	                                 " WHERE list_id = ?1 AND subscriber_id = ?2";
	static const char touch_sql[] = "UPDATE subscribers SET updated_at = ?2 WHERE id = ?1";
	if (from == to)
		return 0;
	bool optin = !subs_is_suppressed(to);
	int64_t now = store_now();
	sqlite3_stmt *st = store_stmt(s, optin ? optin_sql : optout_sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, lid);
	sqlite3_bind_int64(st, 2, sid);
	sqlite3_bind_text(st, 3, subs_status_name(to), -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, now);
	if (optin) {
		sqlite3_bind_text(st, 5, via ? via : "", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 6, by ? by : actor ? actor : "", -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 7, from == SUBS_BOUNCED);
	}
	if (store_step_done(s, st, err, "changing a membership") < 0)
		return -1;
	if ((st = store_stmt(s, touch_sql, err)) == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, sid);
	sqlite3_bind_int64(st, 2, now);
	if (store_step_done(s, st, err, "changing a subscriber") < 0)
		return -1;
	char detail[512];
	snprintf(detail, sizeof detail, "%s -> %s%s%s", subs_status_name(from),
	         subs_status_name(to), why && *why ? ": " : "", why && *why ? why : "");
	return subs_event_add(s, sid, lid, subs_transition_kind(from, to), via, actor, detail, err);
}

int subs_membership_set_mode(struct store *s, int64_t sid, int64_t lid, enum subs_mode mode,
                             struct err *err)
{
	static const char sql[] =
	    "UPDATE memberships SET mode = ?3 WHERE list_id = ?1 AND subscriber_id = ?2";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, lid);
	sqlite3_bind_int64(st, 2, sid);
	sqlite3_bind_text(st, 3, subs_mode_name(mode), -1, SQLITE_STATIC);
	return store_step_done(s, st, err, "changing the delivery mode");
}

/* The event kind for a status change. */
const char *subs_transition_kind(enum subs_status from, enum subs_status to)
{
	if (to == SUBS_UNSUBSCRIBED)
		return "unsubscribe";
	if (to == SUBS_BOUNCED)
		return "bounce";
	if (subs_is_suppressed(from))
		return "resubscribe";
	if (from == SUBS_PENDING && to == SUBS_CONFIRMED)
		return "confirm";
	return "status";
}

/* Looks up a subscriber by key and its membership of lid. Returns 1 found
 * (fills the outputs), 0 not found, -1 on error. */
static int lookup(struct store *s, const char *key, int64_t lid, int64_t *sid, char **name,
                  bool *member, enum subs_status *status, enum subs_mode *mode, int64_t *status_at,
                  struct err *err)
{
	static const char sql[] =
	    "SELECT s.id, s.name, m.status, m.mode, m.status_at FROM subscribers s"
	    " LEFT JOIN memberships m ON m.list_id = ?2 AND m.subscriber_id = s.id"
	    " WHERE s.email_key = ?1";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, lid);
	int rc = sqlite3_step(st), found = 0;
	if (rc == SQLITE_ROW) {
		found = 1;
		*sid = sqlite3_column_int64(st, 0);
		if (name)
			*name = col_dup(st, 1);
		*member = sqlite3_column_type(st, 2) != SQLITE_NULL;
		if (*member) {
			*status = status_of(st, 2);
			*mode = mode_of(st, 3);
			*status_at = sqlite3_column_int64(st, 4);
		}
	} else if (rc != SQLITE_DONE) {
		found = -1;
		store_fail(s, err, "looking up a subscriber");
	}
	sqlite3_reset(st);
	return found;
}

int subs_subscribe(struct store *s, const struct subs_request *rq, struct subs_result *res,
                   struct err *err)
{
	static const char ins_sql[] =
	    "INSERT INTO subscribers(email, email_key, name, created_at, updated_at)"
	    " VALUES (?1, ?2, ?3, ?4, ?4)";
	static const char name_sql[] = "UPDATE subscribers SET name = ?2, updated_at = ?3"
	                               " WHERE id = ?1";
	char key[ADDR_MAX + 1];
	char *old_name = NULL;
	const char *why;
	const char *list = rq->list ? rq->list : SUBS_DEFAULT_LIST;
	const char *via = rq->via ? rq->via : "cli";
	const char *actor = rq->actor ? rq->actor : "";
	bool member = false, changed = false;
	enum subs_status status = SUBS_PENDING;
	enum subs_mode mode = SUBS_ARTICLE;
	int64_t sid = 0, status_at = 0;
	sqlite3_stmt *st;
	int rc = -1;

	memset(res, 0, sizeof *res);
	if (addr_check(rq->email, strlen(rq->email), key, err) < 0)
		return -1;
	if (rq->name && (why = subs_text_check(rq->name, strlen(rq->name), SUBS_NAME_MAX)))
		return err_set(err, ERR_INPUT,
		               "the name %s; a name is one line of at most %d characters", why,
		               SUBS_NAME_MAX);
	if (store_begin(s, err) < 0)
		return -1;
	int64_t lid = subs_list_id(s, list, err);
	if (lid < 0)
		goto out;
	int found = lookup(s, key, lid, &sid, &old_name, &member, &status, &mode, &status_at, err);
	if (found < 0)
		goto out;
	enum subs_status target = rq->confirm ? SUBS_PENDING : SUBS_CONFIRMED;
	res->list_id = lid;
	res->had_membership = member;
	res->prev_status = status;

	if (member && subs_is_suppressed(status) && !rq->resubscribe) {
		/* A suppression record is left exactly as it is. */
		res->outcome = SUBS_SUPPRESSED;
		res->subscriber_id = sid;
		res->status = status;
		res->mode = mode;
		res->status_at = status_at;
		free(old_name);
		/* nothing written: commit, so that an enclosing transaction lives on */
		return store_commit(s, err);
	}
	int64_t now = store_now();
	if (!found) {
		if ((st = store_stmt(s, ins_sql, err)) == NULL)
			goto out;
		sqlite3_bind_text(st, 1, rq->email, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, rq->name ? rq->name : "", -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, now);
		if (store_step_done(s, st, err, "adding a subscriber") < 0)
			goto out;
		sid = sqlite3_last_insert_rowid(s->db);
	} else if (rq->name && strcmp(rq->name, old_name) != 0) {
		if ((st = store_stmt(s, name_sql, err)) == NULL)
			goto out;
		sqlite3_bind_int64(st, 1, sid);
		sqlite3_bind_text(st, 2, rq->name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, now);
		if (store_step_done(s, st, err, "renaming a subscriber") < 0)
			goto out;
		changed = true;
	}

	bool queue = false;
	char detail[64];
	if (!member) {
		mode = rq->mode >= 0 ? (enum subs_mode)rq->mode : SUBS_ARTICLE;
		if (subs_membership_add(s, sid, lid, target, mode, via, actor, err) < 0)
			goto out;
		snprintf(detail, sizeof detail, "%s, %s", subs_status_name(target),
		         subs_mode_name(mode));
		if (subs_event_add(s, sid, lid, "subscribe", via, actor, detail, err) < 0)
			goto out;
		res->outcome = SUBS_ADDED;
		status = target;
		status_at = now;
		queue = target == SUBS_PENDING;
	} else {
		/* A confirmed address is never put back to pending; a pending one
		 * is confirmed by an admin who vouches, or mailed again. */
		enum subs_status to = status;
		if (subs_is_suppressed(status) || (status == SUBS_PENDING && !rq->confirm))
			to = target;
		if (to != status) {
			if (subs_transition(s, sid, lid, status, to, via, NULL, actor, NULL, err) <
			    0)
				goto out;
			status = to;
			status_at = now;
			changed = true;
		}
		if (rq->mode >= 0 && (enum subs_mode)rq->mode != mode) {
			mode = (enum subs_mode)rq->mode;
			if (subs_membership_set_mode(s, sid, lid, mode, err) < 0)
				goto out;
			changed = true;
		}
		queue = status == SUBS_PENDING && rq->confirm;
		res->outcome = changed ? SUBS_UPDATED : SUBS_UNCHANGED;
	}
	if (queue && subs_queue_confirmation(s, sid, lid, &res->mail_queued, err) < 0)
		goto out;
	if (store_commit(s, err) < 0)
		goto done;
	res->subscriber_id = sid;
	res->status = status;
	res->mode = mode;
	res->status_at = status_at;
	rc = 0;
	goto done;
out:
	store_rollback(s);
done:
	free(old_name);
	return rc;
}

int subs_unsubscribe(struct store *s, const char *email, const char *list, const char *via,
                     const char *actor, struct subs_result *res, struct err *err)
{
	char key[ADDR_MAX + 1];
	bool member = false;
	enum subs_status status = SUBS_PENDING;
	enum subs_mode mode = SUBS_ARTICLE;
	int64_t sid = 0, status_at = 0;

	memset(res, 0, sizeof *res);
	if (list == NULL)
		list = SUBS_DEFAULT_LIST;
	if (addr_check(email, strlen(email), key, err) < 0)
		return -1;
	if (store_begin(s, err) < 0)
		return -1;
	int64_t lid = subs_list_id(s, list, err);
	if (lid < 0)
		goto fail;
	int found = lookup(s, key, lid, &sid, NULL, &member, &status, &mode, &status_at, err);
	if (found < 0)
		goto fail;
	if (!found) {
		not_found(s, key, err, "%s is not on list '%s'; nothing to unsubscribe", email,
		          list);
		goto fail;
	}
	if (!member) {
		err_set(err, ERR_NOTFOUND, "%s is not on list '%s'; nothing to unsubscribe", email,
		        list);
		goto fail;
	}
	res->subscriber_id = sid;
	res->list_id = lid;
	res->had_membership = true;
	res->prev_status = status;
	res->mode = mode;
	res->status = SUBS_UNSUBSCRIBED;
	if (status == SUBS_UNSUBSCRIBED) {
		res->outcome = SUBS_UNCHANGED;
		res->status_at = status_at;
		return store_commit(s, err); /* nothing written */
	}
	if (subs_transition(s, sid, lid, status, SUBS_UNSUBSCRIBED, via, NULL, actor, NULL, err) <
	    0)
		goto fail;
	if (store_commit(s, err) < 0)
		return -1;
	res->outcome = SUBS_UPDATED;
	res->status_at = store_now();
	return 0;
fail:
	store_rollback(s);
	return -1;
}

/* Changes one membership by ids when its current status is one of from[]. */
static int transition_id(struct store *s, int64_t sid, int64_t lid, unsigned from_mask,
                         enum subs_status to, const char *via, const char *actor,
                         const char *detail, bool *changed, struct err *err)
{
	static const char sql[] =
	    "SELECT status FROM memberships WHERE list_id = ?1 AND subscriber_id = ?2";
	if (changed)
		*changed = false;
	if (store_begin(s, err) < 0)
		return -1;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, lid);
	sqlite3_bind_int64(st, 2, sid);
	int rc = sqlite3_step(st);
	enum subs_status cur = rc == SQLITE_ROW ? status_of(st, 0) : SUBS_PENDING;
	sqlite3_reset(st);
	if (rc == SQLITE_DONE) {
		err_set(err, ERR_NOTFOUND, "subscriber %lld is not on list %lld", (long long)sid,
		        (long long)lid);
		goto fail;
	}
	if (rc != SQLITE_ROW) {
		store_fail(s, err, "looking up a membership");
		goto fail;
	}
	if (cur == to || !(from_mask & (1u << cur)))
		return store_commit(s, err); /* nothing written */
	if (subs_transition(s, sid, lid, cur, to, via, NULL, actor, detail, err) < 0)
		goto fail;
	if (store_commit(s, err) < 0)
		return -1;
	if (changed)
		*changed = true;
	return 0;
fail:
	store_rollback(s);
	return -1;
}

int subs_confirm_id(struct store *s, int64_t subscriber_id, int64_t list_id, const char *via,
                    const char *actor, bool *changed, struct err *err)
{
	return transition_id(s, subscriber_id, list_id, 1u << SUBS_PENDING, SUBS_CONFIRMED, via,
	                     actor, NULL, changed, err);
}

int subs_unsubscribe_id(struct store *s, int64_t subscriber_id, int64_t list_id, const char *via,
                        const char *actor, bool *changed, struct err *err)
{
	return transition_id(s, subscriber_id, list_id,
	                     1u << SUBS_PENDING | 1u << SUBS_CONFIRMED | 1u << SUBS_BOUNCED,
	                     SUBS_UNSUBSCRIBED, via, actor, NULL, changed, err);
}

int subs_bounce_id(struct store *s, int64_t subscriber_id, int64_t list_id, const char *detail,
                   bool *changed, struct err *err)
{
	return transition_id(s, subscriber_id, list_id, 1u << SUBS_PENDING | 1u << SUBS_CONFIRMED,
	                     SUBS_BOUNCED, "bounce", "matrixd", detail, changed, err);
}

/* ---- listing ------------------------------------------------------------- */

int subs_each(struct store *s, const char *list, int status,
              int (*fn)(const struct subs_row *row, void *arg), void *arg, struct err *err)
{
	/* ?1 NULL = every list, ?2 NULL = every status. */
	static const char sql[] =
	    "SELECT s.id, l.id, s.email, s.name, l.name, s.attrs, m.status, m.mode, m.status_at,"
	    " m.created_at FROM memberships m JOIN lists l ON l.id = m.list_id"
	    " JOIN subscribers s ON s.id = m.subscriber_id"
	    " WHERE (?1 IS NULL OR l.name = ?1) AND (?2 IS NULL OR m.status = ?2)"
	    " ORDER BY l.name, m.subscriber_id";
	if (list && subs_list_id(s, list, err) < 0)
		return -1;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	if (list)
		sqlite3_bind_text(st, 1, list, -1, SQLITE_STATIC);
	if (status >= 0)
		sqlite3_bind_text(st, 2, subs_status_name((enum subs_status)status), -1,
		                  SQLITE_STATIC);
	int rc, ret = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct subs_row r = {
		    .subscriber_id = sqlite3_column_int64(st, 0),
		    .list_id = sqlite3_column_int64(st, 1),
		    .email = (const char *)sqlite3_column_text(st, 2),
		    .name = (const char *)sqlite3_column_text(st, 3),
		    .list = (const char *)sqlite3_column_text(st, 4),
		    .attrs = (const char *)sqlite3_column_text(st, 5),
		    .status = status_of(st, 6),
		    .mode = mode_of(st, 7),
		    .status_at = sqlite3_column_int64(st, 8),
		    .created_at = sqlite3_column_int64(st, 9),
		};
		if ((ret = fn(&r, arg)) != 0)
			break;
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = store_fail(s, err, "listing subscribers");
	sqlite3_reset(st);
	return ret;
}

/* ---- the key migration and its conflicts --------------------------------- */

/* Records that subscriber sid keeps an old key (see subs_rekey). */
static int conflict_add(struct store *s, int64_t sid, const char *key, const char *problem,
                        struct err *err)
{
	static const char sql[] =
	    "INSERT INTO address_conflicts(subscriber_id, key, problem, found_at)"
	    " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(subscriber_id) DO UPDATE SET"
	    " key = excluded.key, problem = excluded.problem";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, sid);
	if (key)
		sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, problem, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, store_now());
	if (store_step_done(s, st, err, "recording an address conflict") < 0)
		return -1;
	return subs_event_add(s, sid, 0, "address-conflict", "upgrade", "matrixd", problem, err);
}

/*
 * When the holder of key is gone, the oldest record kept apart under it
 * takes the key and leaves the conflict list: the mailbox is reachable by
 * its address again.
 */
static int promote(struct store *s, const char *key, struct err *err)
{
	static const char next_sql[] = "SELECT subscriber_id FROM address_conflicts WHERE key = ?1"
	                               " ORDER BY subscriber_id LIMIT 1";
	static const char set_sql[] = "UPDATE subscribers SET email_key = ?2 WHERE id = ?1";
	static const char del_sql[] = "DELETE FROM address_conflicts WHERE subscriber_id = ?1";
	sqlite3_stmt *st = store_stmt(s, next_sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	int64_t sid = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_fail(s, err, "looking up address conflicts");
	if (sid == 0)
		return 0;
	if ((st = store_stmt(s, set_sql, err)) == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, sid);
	sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
	if (store_step_done(s, st, err, "moving a subscriber to its key") < 0)
		return -1;
	if ((st = store_stmt(s, del_sql, err)) == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, sid);
	if (store_step_done(s, st, err, "resolving an address conflict") < 0)
		return -1;
	return subs_event_add(s, sid, 0, "address-resolved", "cli", "",
	                      "the record that held the key was forgotten", err);
}

struct rekey {
	int64_t id;
	char *email, *key; /* key NULL: the address is no longer valid */
	char *why;
};

int subs_rekey(struct store *s, struct err *err)
{
	static const char all_sql[] = "SELECT id, email, email_key FROM subscribers ORDER BY id";
	static const char holder_sql[] = "SELECT id, email FROM subscribers WHERE email_key = ?1";
	static const char set_sql[] = "UPDATE subscribers SET email_key = ?2 WHERE id = ?1";
	struct rekey *v = NULL;
	size_t n = 0, cap = 0;
	int rc, ret = -1;

	/* Collect first: the table is not written while it is walked. */
	sqlite3_stmt *st = store_stmt(s, all_sql, err);
	if (st == NULL)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *email = (const char *)sqlite3_column_text(st, 1);
		const char *old = (const char *)sqlite3_column_text(st, 2);
		char key[ADDR_MAX + 1];
		struct err e;
		int ok = addr_check(email, strlen(email), key, &e);
		if (ok == 0 && strcmp(key, old) == 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			v = xreallocarray(v, cap, sizeof *v);
		}
		v[n++] =
		    (struct rekey){sqlite3_column_int64(st, 0), xstrdup(email),
		                   ok == 0 ? xstrdup(key) : NULL, ok == 0 ? NULL : xstrdup(e.msg)};
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		store_fail(s, err, "reading subscribers");
		goto out;
	}
	/*
	 * In id order, so that the oldest of several records for one mailbox
	 * takes the key. No chains: a record's old key that is another's new
	 * key is an ASCII one, and ASCII keys do not change.
	 */
	for (size_t i = 0; i < n; i++) {
		char problem[1024];
		if (v[i].key == NULL) {
			snprintf(problem, sizeof problem, "no longer a valid address: %s",
			         v[i].why);
			if (conflict_add(s, v[i].id, NULL, problem, err) < 0)
				goto out;
			continue;
		}
		if ((st = store_stmt(s, holder_sql, err)) == NULL)
			goto out;
		sqlite3_bind_text(st, 1, v[i].key, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			snprintf(problem, sizeof problem,
			         "the same mailbox as subscriber %lld (%s), which keeps the key %s",
			         (long long)sqlite3_column_int64(st, 0),
			         (const char *)sqlite3_column_text(st, 1), v[i].key);
		sqlite3_reset(st);
		if (rc == SQLITE_ROW) {
			if (conflict_add(s, v[i].id, v[i].key, problem, err) < 0)
				goto out;
			continue;
		}
		if (rc != SQLITE_DONE) {
			store_fail(s, err, "looking up a key");
			goto out;
		}
		if ((st = store_stmt(s, set_sql, err)) == NULL)
			goto out;
		sqlite3_bind_int64(st, 1, v[i].id);
		sqlite3_bind_text(st, 2, v[i].key, -1, SQLITE_STATIC);
		if (store_step_done(s, st, err, "changing a subscriber's key") < 0)
			goto out;
	}
	ret = 0;
out:
	for (size_t i = 0; i < n; i++) {
		free(v[i].email);
		free(v[i].key);
		free(v[i].why);
	}
	free(v);
	return ret;
}

struct subs_conflict *subs_conflicts(struct store *s, size_t *n, struct err *err)
{
	static const char sql[] =
	    "SELECT c.subscriber_id, s.email, c.key, c.problem, c.found_at, h.id, h.email"
	    " FROM address_conflicts c JOIN subscribers s ON s.id = c.subscriber_id"
	    " LEFT JOIN subscribers h ON h.email_key = c.key ORDER BY c.key, c.subscriber_id";
	struct subs_conflict *v = NULL;
	size_t len = 0, cap = 0;
	int rc;
	*n = 0;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return NULL;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (len == cap) {
			cap = cap ? cap * 2 : 8;
			v = xreallocarray(v, cap, sizeof *v);
		}
		struct subs_conflict *c = &v[len++];
		c->subscriber_id = sqlite3_column_int64(st, 0);
		c->email = col_dup(st, 1);
		c->key = sqlite3_column_type(st, 2) == SQLITE_NULL ? NULL : col_dup(st, 2);
		c->problem = col_dup(st, 3);
		c->found_at = sqlite3_column_int64(st, 4);
		c->holder_id = sqlite3_column_int64(st, 5);
		c->holder_email = sqlite3_column_type(st, 6) == SQLITE_NULL ? NULL : col_dup(st, 6);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		store_fail(s, err, "listing address conflicts");
		subs_conflicts_free(v, len);
		return NULL;
	}
	*n = len;
	return v ? v : xcalloc(1, sizeof *v);
}

void subs_conflicts_free(struct subs_conflict *v, size_t n)
{
	if (v == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(v[i].email);
		free(v[i].key);
		free(v[i].problem);
		free(v[i].holder_email);
	}
	free(v);
}

/* ---- show and forget ----------------------------------------------------- */

/* email NULL: by id. */
static struct subs_info *show(struct store *s, const char *email, int64_t id, struct err *err)
{
	static const char sub_sql[] =
	    "SELECT id, email, name, attrs, (SELECT coalesce(sum(m.bounce_score), 0)"
	    " FROM memberships m WHERE m.subscriber_id = subscribers.id), created_at, updated_at"
	    " FROM subscribers WHERE email_key = ?1 OR id = ?2";
	static const char mem_sql[] =
	    "SELECT l.name, m.status, m.mode, m.consent_at, m.consent_via, m.consent_by,"
	    " m.status_at, m.created_at, m.bounce_score FROM memberships m"
	    " JOIN lists l ON l.id = m.list_id"
	    " WHERE m.subscriber_id = ?1 ORDER BY l.name";
	static const char ev_sql[] =
	    "SELECT e.at, e.kind, e.via, e.actor, e.detail, l.name FROM events e"
	    " LEFT JOIN lists l ON l.id = e.list_id WHERE e.subscriber_id = ?1 ORDER BY e.id";
	char key[ADDR_MAX + 1];
	struct subs_info *i = NULL;
	sqlite3_stmt *st;
	int rc;
	size_t cap;

	if (email && addr_check(email, strlen(email), key, err) < 0)
		return NULL;
	if ((st = store_stmt(s, sub_sql, err)) == NULL)
		return NULL;
	if (email)
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(st, 2, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		i = xcalloc(1, sizeof *i);
		i->id = sqlite3_column_int64(st, 0);
		i->email = col_dup(st, 1);
		i->name = col_dup(st, 2);
		i->attrs = col_dup(st, 3);
		i->bounce_score = sqlite3_column_int64(st, 4);
		i->created_at = sqlite3_column_int64(st, 5);
		i->updated_at = sqlite3_column_int64(st, 6);
	}
	sqlite3_reset(st);
	if (rc == SQLITE_DONE && email == NULL) {
		err_set(err, ERR_NOTFOUND, "no subscriber has id %lld", (long long)id);
		return NULL;
	}
	if (rc == SQLITE_DONE) {
		not_found(s, key, err, "nothing is held about %s%s", email, "");
		return NULL;
	}
	if (rc != SQLITE_ROW) {
		store_fail(s, err, "looking up a subscriber");
		return NULL;
	}

	if ((st = store_stmt(s, mem_sql, err)) == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, i->id);
	cap = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (i->nmemberships == cap) {
			cap = cap ? cap * 2 : 4;
			i->memberships = xreallocarray(i->memberships, cap, sizeof *i->memberships);
		}
		struct subs_membership *m = &i->memberships[i->nmemberships++];
		m->list = col_dup(st, 0);
		m->status = status_of(st, 1);
		m->mode = mode_of(st, 2);
		m->consent_at = sqlite3_column_int64(st, 3);
		m->consent_via = col_dup(st, 4);
		m->consent_by = col_dup(st, 5);
		m->status_at = sqlite3_column_int64(st, 6);
		m->created_at = sqlite3_column_int64(st, 7);
		m->bounce_score = sqlite3_column_int64(st, 8);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		goto dbfail;

	if ((st = store_stmt(s, ev_sql, err)) == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, i->id);
	cap = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (i->nevents == cap) {
			cap = cap ? cap * 2 : 8;
			i->events = xreallocarray(i->events, cap, sizeof *i->events);
		}
		struct subs_event *e = &i->events[i->nevents++];
		e->at = sqlite3_column_int64(st, 0);
		e->kind = col_dup(st, 1);
		e->via = col_dup(st, 2);
		e->actor = col_dup(st, 3);
		e->detail = col_dup(st, 4);
		e->list = col_dup(st, 5);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		goto dbfail;

	if (ledger_subscriber_counts(s, i->id, &i->deliveries, err) < 0)
		goto fail;
	return i;
dbfail:
	store_fail(s, err, "reading a subscriber's records");
fail:
	subs_info_free(i);
	return NULL;
}

struct subs_info *subs_show(struct store *s, const char *email, struct err *err)
{
	return show(s, email, 0, err);
}

struct subs_info *subs_show_id(struct store *s, int64_t id, struct err *err)
{
	return show(s, NULL, id, err);
}

void subs_info_free(struct subs_info *i)
{
	if (i == NULL)
		return;
	for (size_t k = 0; k < i->nmemberships; k++) {
		free(i->memberships[k].list);
		free(i->memberships[k].consent_via);
		free(i->memberships[k].consent_by);
	}
	for (size_t k = 0; k < i->nevents; k++) {
		free(i->events[k].kind);
		free(i->events[k].via);
		free(i->events[k].actor);
		free(i->events[k].detail);
		free(i->events[k].list);
	}
	free(i->memberships);
	free(i->events);
	free(i->email);
	free(i->name);
	free(i->attrs);
	free(i);
}

static int64_t count_of(struct store *s, const char *sql, int64_t id, struct err *err)
{
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, id);
	int64_t n = -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	else
		store_fail(s, err, "counting a subscriber's records");
	sqlite3_reset(st);
	return n;
}

/* email NULL: by id. */
static int forget(struct store *s, const char *email, int64_t id, const char *actor,
                  struct subs_forgotten *out, struct err *err)
{
	static const char id_sql[] =
	    "SELECT id, email_key FROM subscribers WHERE email_key = ?1 OR id = ?2";
	static const char nm_sql[] = "SELECT count(*) FROM memberships WHERE subscriber_id = ?1";
	static const char ne_sql[] = "SELECT count(*) FROM events WHERE subscriber_id = ?1";
	static const char nd_sql[] = "SELECT count(*) FROM deliveries WHERE subscriber_id = ?1";
	static const char del_sql[] = "DELETE FROM subscribers WHERE id = ?1";
	char key[ADDR_MAX + 1], *held = NULL;
	struct subs_forgotten f = {0};
	int64_t sid = -1;
	sqlite3_stmt *st;

	if (out)
		memset(out, 0, sizeof *out);
	if (email && addr_check(email, strlen(email), key, err) < 0)
		return -1;
	if (store_begin(s, err) < 0)
		return -1;
	if ((st = store_stmt(s, id_sql, err)) == NULL)
		goto fail;
	if (email)
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(st, 2, id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		sid = sqlite3_column_int64(st, 0);
		held = col_dup(st, 1);
	}
	sqlite3_reset(st);
	if (rc == SQLITE_DONE) {
		if (email)
			not_found(s, key, err, "nothing is held about %s%s; nothing to forget",
			          email, "");
		else
			err_set(err, ERR_NOTFOUND, "no subscriber has id %lld; nothing to forget",
			        (long long)id);
		goto fail;
	}
	if (rc != SQLITE_ROW) {
		store_fail(s, err, "looking up a subscriber");
		goto fail;
	}
	if ((f.memberships = count_of(s, nm_sql, sid, err)) < 0 ||
	    (f.events = count_of(s, ne_sql, sid, err)) < 0 ||
	    (f.deliveries = count_of(s, nd_sql, sid, err)) < 0)
		goto fail;
	/* Foreign keys are on (store_open), so the cascade takes memberships,
	 * events, deliveries and a conflict record along. */
	if ((st = store_stmt(s, del_sql, err)) == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, sid);
	if (store_step_done(s, st, err, "erasing a subscriber") < 0)
		goto fail;
	/* An audit trail without the address: who erased a record and when. */
	if (subs_event_add(s, 0, 0, "forget", "cli", actor, "", err) < 0)
		goto fail;
	if (promote(s, held, err) < 0)
		goto fail;
	if (store_commit(s, err) < 0)
		goto done;
	/* The deleted rows' old page images are still in the WAL until a
	 * checkpoint copies the new ones over the database and truncates it.
	 * A TRUNCATE checkpoint waits through the busy timeout for readers to
	 * finish; matrixd's read transactions are short, so a little will do. */
	int log = -1, ckpt = -1;
	sqlite3_busy_timeout(s->db, FORGET_CHECKPOINT_MS);
	rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log, &ckpt);
	sqlite3_busy_timeout(s->db, STORE_BUSY_MS);
	f.wal_truncated = rc == SQLITE_OK && log == 0;
	if (out)
		*out = f;
	free(held);
	return 0;
fail:
	store_rollback(s);
done:
	free(held);
	return -1;
}

int subs_forget(struct store *s, const char *email, const char *actor, struct subs_forgotten *out,
                struct err *err)
{
	return forget(s, email, 0, actor, out, err);
}

int subs_forget_id(struct store *s, int64_t id, const char *actor, struct subs_forgotten *out,
                   struct err *err)
{
	return forget(s, NULL, id, actor, out, err);
}

/* ---- pace ---------------------------------------------------------------- */

int subs_pace_parse(const char *s, int64_t *seconds)
{
	static const struct {
		char unit;
		int64_t seconds;
	} units[] = {{'d', 86400}, {'h', 3600}, {'m', 60}, {'s', 1}};
	int64_t total = 0;
	const char *p = s;
	if (strcmp(s, "0") == 0) {
		*seconds = 0;
		return 0;
	}
	if (*p == '\0')
		return -1;
	while (*p) {
		int64_t v = 0;
		const char *start = p;
		while (*p >= '0' && *p <= '9' && v <= SUBS_PACE_MAX)
			v = v * 10 + (*p++ - '0');
		if (p == start)
			return -1;
		size_t u = 0;
		while (u < sizeof units / sizeof units[0] && units[u].unit != *p)
			u++;
		if (u == sizeof units / sizeof units[0] || v > SUBS_PACE_MAX)
			return -1;
		total += v * units[u].seconds;
		if (total > SUBS_PACE_MAX)
			return -1;
		p++;
	}
	*seconds = total;
	return 0;
}

void subs_pace_format(int64_t seconds, char *out, size_t n)
{
	static const struct {
		char unit;
		int64_t seconds;
	} units[] = {{'d', 86400}, {'h', 3600}, {'m', 60}, {'s', 1}};
	size_t o = 0;
	if (seconds <= 0) {
		snprintf(out, n, "0");
		return;
	}
	out[0] = '\0';
	for (size_t i = 0; i < sizeof units / sizeof units[0] && o < n; i++) {
		int64_t q = seconds / units[i].seconds;
		if (q == 0)
			continue;
		seconds -= q * units[i].seconds;
		int w = snprintf(out + o, n - o, "%lld%c", (long long)q, units[i].unit);
		o += w > 0 ? (size_t)w : 0;
	}
}

int subs_list_set(struct store *s, const char *name, const char *title, const char *description,
                  int64_t pace, const char *actor, struct err *err)
{
	static const char sql[] = "UPDATE lists SET title = coalesce(?2, title), description = "
	                          "coalesce(?3, description), "
	                          "pace = CASE WHEN ?4 >= 0 THEN ?4 ELSE pace END WHERE name = ?1";
	const char *why;
	if (title && *title == '\0')
		title = name;
	if (title && (why = subs_text_check(title, strlen(title), 200)) != NULL)
		return err_set(err, ERR_INPUT,
		               "the title %s; a title is one line of at most 200 characters", why);
	if (description && !utf8_valid(description, strlen(description), NULL))
		return err_set(err, ERR_INPUT, "the description is not valid UTF-8");
	if (pace > SUBS_PACE_MAX)
		return err_set(err, ERR_INPUT, "a pace is at most 30 days");
	if (store_begin(s, err) < 0)
		return -1;
	int64_t id = subs_list_id(s, name, err);
	if (id < 0)
		goto fail;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		goto fail;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	if (title)
		sqlite3_bind_text(st, 2, title, -1, SQLITE_STATIC);
	if (description)
		sqlite3_bind_text(st, 3, description, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, pace);
	if (store_step_done(s, st, err, "changing a list") < 0)
		goto fail;
	char detail[160], p[32] = "";
	if (pace >= 0)
		subs_pace_format(pace, p, sizeof p);
	snprintf(detail, sizeof detail, "%s%s%s", name, pace >= 0 ? " pace " : "", p);
	if (subs_event_add(s, 0, id, "list-set", "cli", actor, detail, err) < 0)
		goto fail;
	return store_commit(s, err);
fail:
	store_rollback(s);
	return -1;
}
