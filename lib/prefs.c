/* A reader's page of settings: what it shows, reads and writes (prefs.h). */
#include <stdlib.h>
#include <string.h>

#include "prefs.h"
#include "xmalloc.h"

static char *col_dup(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);
	return xstrdup(t ? (const char *)t : "");
}

int prefs_load(struct store *s, int64_t sid, struct prefs *p, struct err *err)
{
	static const char who_sql[] = "SELECT email FROM subscribers WHERE id = ?1";
	static const char lists_sql[] =
	    "SELECT l.id, l.name, l.title, l.private, m.status, m.mode FROM lists l"
	    " LEFT JOIN memberships m ON m.list_id = l.id AND m.subscriber_id = ?1"
	    " WHERE m.status IS NOT NULL OR l.private = 0"
	    " ORDER BY l.name = ?2 DESC, l.name";
	memset(p, 0, sizeof *p);
	p->subscriber_id = sid;
	sqlite3_stmt *st = store_stmt(s, who_sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, sid);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		p->email = col_dup(st, 0);
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return err_set(err, ERR_NOTFOUND, "no subscriber %lld (forgotten?)",
		               (long long)sid);
	if (rc != SQLITE_ROW)
		return store_fail(s, err, "looking up a subscriber");
	if ((st = store_stmt(s, lists_sql, err)) == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, sid);
	sqlite3_bind_text(st, 2, SUBS_DEFAULT_LIST, -1, SQLITE_STATIC);
	size_t cap = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (p->n == cap) {
			cap = cap ? cap * 2 : 4;
			p->lists = xreallocarray(p->lists, cap, sizeof *p->lists);
		}
		struct prefs_list *l = &p->lists[p->n++];
		memset(l, 0, sizeof *l);
		l->id = sqlite3_column_int64(st, 0);
		l->name = col_dup(st, 1);
		l->title = col_dup(st, 2);
		l->is_private = sqlite3_column_int(st, 3) != 0;
		l->member = sqlite3_column_type(st, 4) != SQLITE_NULL;
		if (l->member) {
			int a =
			    subs_status_parse((const char *)sqlite3_column_text(st, 4), &l->status);
			int b = subs_mode_parse((const char *)sqlite3_column_text(st, 5), &l->mode);
			if (a < 0 || b < 0) {
				sqlite3_reset(st);
				return err_set(
				    err, ERR_DB,
				    "subscriber %lld: a membership of list '%s' has an "
				    "unknown status or mode; check it with matrixctl show",
				    (long long)sid, l->name);
			}
		}
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return store_fail(s, err, "listing a subscriber's lists");
	return 0;
}

void prefs_free(struct prefs *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->n; i++) {
		free(p->lists[i].name);
		free(p->lists[i].title);
	}
	free(p->lists);
	free(p->email);
	memset(p, 0, sizeof *p);
}

/* ---- the form ------------------------------------------------------------ */

static long find(const struct prefs *p, const char *name)
{
	for (size_t i = 0; i < p->n; i++)
		if (strcmp(p->lists[i].name, name) == 0)
			return (long)i;
	return -1;
}

/* Whether the page may make the reader's membership of l confirmed. */
static bool may_join(const struct prefs_list *l)
{
	if (!l->is_private)
		return true;
	return l->member && (l->status == SUBS_PENDING || l->status == SUBS_CONFIRMED);
}

int prefs_form(const struct prefs *p, const struct httpreq_form *f, struct prefs_change **out,
               size_t *n, struct err *err)
{
	*out = NULL;
	*n = 0;
	int *mode = xcalloc(p->n ? p->n : 1, sizeof *mode);
	int *join = xcalloc(p->n ? p->n : 1, sizeof *join);
	for (size_t i = 0; i < p->n; i++)
		mode[i] = -1;
	bool asked = false;
	int rc = -1;
	for (size_t k = 0; k < f->n; k++) {
		const char *name = f->fields[k].name, *value = f->fields[k].value;
		long i;
		if (strcmp(name, "mode") == 0 || strncmp(name, "mode.", 5) == 0) {
			if (name[4] == '\0' && p->n != 1) {
				err_set(err, ERR_INPUT,
				        "a field \"mode\" while the page shows %zu lists: the form "
				        "names them, mode.LIST",
				        p->n);
				goto out;
			}
			i = name[4] == '\0' ? 0 : find(p, name + 5);
			if (i < 0) {
				err_set(err, ERR_INPUT,
				        "a mode field names a list the page does not "
				        "show");
				goto out;
			}
			enum subs_mode m;
			if (subs_mode_parse(value, &m) < 0) {
				err_set(err, ERR_INPUT, "a mode is neither article nor digest");
				goto out;
			}
			if (mode[i] >= 0 && mode[i] != (int)m) {
				err_set(err, ERR_INPUT, "two different modes for one list");
				goto out;
			}
			mode[i] = (int)m;
			asked = true;
		} else if (strcmp(name, "subscribe") == 0 || strcmp(name, "unsubscribe") == 0) {
			int want = name[0] == 's' ? 1 : -1;
			if ((i = find(p, value)) < 0) {
				err_set(err, ERR_INPUT, "%s names a list the page does not show",
				        name);
				goto out;
			}
			if (join[i] != 0 && join[i] != want) {
				err_set(err, ERR_INPUT, "subscribe and unsubscribe of one list");
				goto out;
			}
			const struct prefs_list *l = &p->lists[i];
			if (want > 0 && !may_join(l)) {
				err_set(err, ERR_INPUT,
				        "subscribe to a private list: only its admin adds readers");
				goto out;
			}
			if (want < 0 && !l->member) {
				err_set(err, ERR_INPUT,
				        "unsubscribe from a list the reader is not on");
				goto out;
			}
			join[i] = want;
			asked = true;
		}
	}
	if (!asked) {
		err_set(err, ERR_INPUT,
		        "the form asks for nothing (no mode, subscribe or "
		        "unsubscribe field)");
		goto out;
	}
	struct prefs_change *v = xcalloc(p->n ? p->n : 1, sizeof *v);
	for (size_t i = 0; i < p->n; i++) {
		/* a mode counts for a membership, or for the one a subscribe makes;
		 * one that leaves keeps its mode */
		int m = join[i] < 0 || (!p->lists[i].member && join[i] == 0) ? -1 : mode[i];
		if (join[i] != 0 || m >= 0)
			v[(*n)++] = (struct prefs_change){.list = i, .mode = m, .join = join[i]};
	}
	*out = v;
	rc = 0;
out:
	free(mode);
	free(join);
	return rc;
}

/* ---- writing --------------------------------------------------------------- */

/* The list and the reader's membership of it as they are now. 1: a
 * membership (*status, *mode set), 0: none, -1 with err (ERR_NOTFOUND: the
 * list is gone). */
static int now_of(struct store *s, int64_t sid, int64_t lid, bool *is_private,
                  enum subs_status *status, enum subs_mode *mode, struct err *err)
{
	static const char sql[] = "SELECT l.private, m.status, m.mode FROM lists l"
	                          " LEFT JOIN memberships m ON m.list_id = l.id"
	                          " AND m.subscriber_id = ?2 WHERE l.id = ?1";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, lid);
	sqlite3_bind_int64(st, 2, sid);
	int rc = sqlite3_step(st), r;
	if (rc == SQLITE_ROW) {
		*is_private = sqlite3_column_int(st, 0) != 0;
		r = sqlite3_column_type(st, 1) != SQLITE_NULL;
		if (r && (subs_status_parse((const char *)sqlite3_column_text(st, 1), status) < 0 ||
		          subs_mode_parse((const char *)sqlite3_column_text(st, 2), mode) < 0))
			r = err_set(err, ERR_DB,
			            "list %lld: a membership with an unknown status or mode",
			            (long long)lid);
	} else if (rc == SQLITE_DONE) {
		r = err_set(err, ERR_NOTFOUND, "list %lld was deleted meanwhile", (long long)lid);
	} else {
		r = store_fail(s, err, "looking up a membership");
	}
	sqlite3_reset(st);
	return r;
}

static int still_there(struct store *s, int64_t sid, struct err *err)
{
	static const char sql[] = "SELECT 1 FROM subscribers WHERE id = ?1";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, sid);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		return 0;
	if (rc == SQLITE_DONE)
		return err_set(err, ERR_NOTFOUND, "subscriber %lld was forgotten meanwhile",
		               (long long)sid);
	return store_fail(s, err, "looking up a subscriber");
}

static int apply_one(struct store *s, const struct prefs *p, struct prefs_change *c,
                     const char *via, const char *actor, struct err *err)
{
	int64_t sid = p->subscriber_id, lid = p->lists[c->list].id;
	bool is_private = false;
	enum subs_status status = SUBS_PENDING;
	enum subs_mode mode = SUBS_ARTICLE;
	int member = now_of(s, sid, lid, &is_private, &status, &mode, err);
	if (member < 0)
		return -1;
	c->from = c->to = status;
	if (c->join > 0 && !member) {
		if (is_private)
			return err_set(err, ERR_INPUT, "list '%s' is private now",
			               p->lists[c->list].name);
		mode = c->mode >= 0 ? (enum subs_mode)c->mode : SUBS_ARTICLE;
		char detail[64];
		snprintf(detail, sizeof detail, "%s, %s", subs_status_name(SUBS_CONFIRMED),
		         subs_mode_name(mode));
		if (subs_membership_add(s, sid, lid, SUBS_CONFIRMED, mode, via, actor, err) < 0 ||
		    subs_event_add(s, sid, lid, "subscribe", via, actor, detail, err) < 0)
			return -1;
		c->added = c->status_changed = true;
		c->to = SUBS_CONFIRMED;
		return 0;
	}
	if (!member)
		return err_set(err, ERR_NOTFOUND, "no membership of list '%s' any more",
		               p->lists[c->list].name);
	enum subs_status to = status;
	if (c->join > 0)
		to = SUBS_CONFIRMED;
	else if (c->join < 0)
		to = SUBS_UNSUBSCRIBED;
	if (to == SUBS_CONFIRMED && status != SUBS_CONFIRMED && is_private &&
	    status != SUBS_PENDING)
		return err_set(err, ERR_INPUT, "list '%s' is private: only its admin adds readers",
		               p->lists[c->list].name);
	if (to != status) {
		if (subs_transition(s, sid, lid, status, to, via, NULL, actor, NULL, err) < 0)
			return -1;
		c->status_changed = true;
		c->to = to;
	}
	if (c->mode >= 0 && (enum subs_mode)c->mode != mode) {
		char detail[64];
		snprintf(detail, sizeof detail, "%s -> %s", subs_mode_name(mode),
		         subs_mode_name((enum subs_mode)c->mode));
		if (subs_membership_set_mode(s, sid, lid, (enum subs_mode)c->mode, err) < 0 ||
		    subs_event_add(s, sid, lid, "mode", via, actor, detail, err) < 0)
			return -1;
		c->mode_changed = true;
	}
	return 0;
}

int prefs_apply(struct store *s, struct prefs *p, struct prefs_change *c, size_t n, const char *via,
                const char *actor, size_t *changed, struct err *err)
{
	if (changed)
		*changed = 0;
	for (size_t i = 0; i < n; i++) {
		c[i].mode_changed = c[i].status_changed = c[i].added = false;
		c[i].from = c[i].to = SUBS_PENDING;
	}
	if (store_begin(s, err) < 0)
		return -1;
	if (still_there(s, p->subscriber_id, err) < 0)
		goto fail;
	for (size_t i = 0; i < n; i++)
		if (apply_one(s, p, &c[i], via, actor, err) < 0)
			goto fail;
	if (store_commit(s, err) < 0)
		goto undo;
	for (size_t i = 0; i < n; i++) {
		struct prefs_list *l = &p->lists[c[i].list];
		if (c[i].added)
			l->mode = c[i].mode >= 0 ? (enum subs_mode)c[i].mode : SUBS_ARTICLE;
		if (c[i].status_changed) {
			l->member = true;
			l->status = c[i].to;
		}
		if (c[i].mode_changed)
			l->mode = (enum subs_mode)c[i].mode;
		if (changed)
			*changed += c[i].mode_changed || c[i].status_changed;
	}
	return 0;
fail:
	store_rollback(s);
undo:
	for (size_t i = 0; i < n; i++)
		c[i].mode_changed = c[i].status_changed = c[i].added = false;
	return -1;
}
