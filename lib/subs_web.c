/*
 * Subscriptions from the web form (see subs_web_subscribe in subs.h): the
 * rules of docs/design.md, "Readers on the web", over the building blocks
 * of subs.c, in one transaction. The caller (daemon/web.c) answers the
 * same page whatever happens here, so what is decided here never reaches
 * the person who submitted the form, only the mailbox.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "subs.h"
#include "xmalloc.h"

#define WEB_VIA   "web"
#define WEB_ACTOR "web"

/* A public list's id; -1 with ERR_INPUT for one that does not exist or is
 * private, with the same words. */
static int64_t public_list(struct store *s, const char *name, struct err *err)
{
	static const char sql[] = "SELECT id FROM lists WHERE name = ?1 AND private = 0";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	int64_t id = -1;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		id = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		err_set(err, ERR_INPUT,
		        "no public list named '%.64s' takes subscriptions from the web", name);
	else
		store_fail(s, err, "looking up a list");
	sqlite3_reset(st);
	return id;
}

/* The subscriber with key, and when the form last mailed it: 1 found, 0
 * not, -1 error. */
static int find(struct store *s, const char *key, int64_t *sid, int64_t *mail_at, struct err *err)
{
	static const char sql[] =
	    "SELECT id, coalesce(web_mail_at, 0) FROM subscribers WHERE email_key = ?1";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st), found = 0;
	if (rc == SQLITE_ROW) {
		*sid = sqlite3_column_int64(st, 0);
		*mail_at = sqlite3_column_int64(st, 1);
		found = 1;
	} else if (rc != SQLITE_DONE) {
		found = store_fail(s, err, "looking up a subscriber");
	}
	sqlite3_reset(st);
	return found;
}

/* One list of the request: what its membership needs, and its mail. */
static int one_list(struct store *s, int64_t sid, int64_t lid, enum subs_mode mode,
                    struct subs_web_result *res, struct err *err)
{
	enum subs_status st;
	int r = subs_membership_status(s, sid, lid, &st, err);
	bool queued = false;
	if (r < 0)
		return -1;
	if (r == 0) {
		char detail[64];
		snprintf(detail, sizeof detail, "pending, %s", subs_mode_name(mode));
		if (subs_membership_add(s, sid, lid, SUBS_PENDING, mode, WEB_VIA, WEB_ACTOR, err) <
		        0 ||
		    subs_event_add(s, sid, lid, "subscribe", WEB_VIA, WEB_ACTOR, detail, err) < 0)
			return -1;
	} else if (st == SUBS_CONFIRMED) {
		/* changes nothing: whoever filled in the form may not be the reader */
		if (subs_queue_mail(s, LEDGER_NOTICE, sid, lid, &queued, err) < 0)
			return -1;
		res->notices += queued;
		return 0;
	} else if (st != SUBS_PENDING &&
	           subs_transition(s, sid, lid, st, SUBS_PENDING, WEB_VIA, WEB_ACTOR, WEB_ACTOR,
	                           "asked on the web; the confirmation mail decides", err) < 0) {
		return -1;
	}
	/* not confirmed: nothing goes out before the mailbox says so */
	if (subs_membership_set_mode(s, sid, lid, mode, err) < 0 ||
	    subs_queue_mail(s, LEDGER_CONFIRM, sid, lid, &queued, err) < 0)
		return -1;
	res->confirmations += queued;
	return 0;
}

int subs_web_subscribe(struct store *s, const struct subs_web_request *rq,
                       struct subs_web_result *res, struct err *err)
{
	static const char ins_sql[] =
	    "INSERT INTO subscribers(email, email_key, name, created_at, updated_at)"
	    " VALUES (?1, ?2, ?3, ?4, ?4)";
	static const char mailed_sql[] = "UPDATE subscribers SET web_mail_at = ?2 WHERE id = ?1";
	char key[ADDR_MAX + 1];
	const char *name = rq->name ? rq->name : "";
	const char *why;
	memset(res, 0, sizeof *res);
	if (addr_check(rq->email, strlen(rq->email), key, err) < 0)
		return -1;
	if ((why = subs_text_check(name, strlen(name), SUBS_NAME_MAX)) != NULL)
		return err_set(err, ERR_INPUT,
		               "the name %s; a name is one line of at most %d characters", why,
		               SUBS_NAME_MAX);
	if (rq->nlists == 0)
		return err_set(err, ERR_INPUT, "no list chosen");
	if (store_begin(s, err) < 0)
		return -1;
	int64_t *lids = xcalloc(rq->nlists, sizeof *lids);
	for (size_t i = 0; i < rq->nlists; i++)
		if ((lids[i] = public_list(s, rq->lists[i], err)) < 0)
			goto fail;
	int64_t sid = 0, mail_at = 0, now = store_now();
	int found = find(s, key, &sid, &mail_at, err);
	if (found < 0)
		goto fail;
	if (found && mail_at > now - SUBS_WEB_INTERVAL && mail_at <= now) {
		res->limited = true;
		free(lids);
		return store_commit(s, err); /* nothing written */
	}
	if (!found) {
		sqlite3_stmt *st = store_stmt(s, ins_sql, err);
		if (st == NULL)
			goto fail;
		sqlite3_bind_text(st, 1, rq->email, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, now);
		if (store_step_done(s, st, err, "adding a subscriber") < 0)
			goto fail;
		sid = sqlite3_last_insert_rowid(s->db);
		res->created = true;
	}
	for (size_t i = 0; i < rq->nlists; i++) {
		bool seen = false; /* a list named twice counts once */
		for (size_t k = 0; k < i && !seen; k++)
			seen = lids[k] == lids[i];
		if (!seen && one_list(s, sid, lids[i], rq->mode, res, err) < 0)
			goto fail;
	}
	if (res->confirmations + res->notices > 0) {
		sqlite3_stmt *st = store_stmt(s, mailed_sql, err);
		if (st == NULL)
			goto fail;
		sqlite3_bind_int64(st, 1, sid);
		sqlite3_bind_int64(st, 2, now);
		if (store_step_done(s, st, err, "noting the form's mail") < 0)
			goto fail;
	}
	free(lids);
	if (store_commit(s, err) < 0) {
		memset(res, 0, sizeof *res);
		return -1;
	}
	res->subscriber_id = sid;
	return 0;
fail:
	free(lids);
	store_rollback(s);
	memset(res, 0, sizeof *res);
	return -1;
}

int subs_web_confirm(struct store *s, int64_t subscriber_id, int64_t list_id, const char *via,
                     const char *actor, bool *changed, bool *welcome, struct err *err)
{
	bool did = false, queued = false;
	*changed = *welcome = false;
	if (store_begin(s, err) < 0)
		return -1;
	if (subs_confirm_id(s, subscriber_id, list_id, via, actor, &did, err) < 0 ||
	    (did && subs_queue_mail(s, LEDGER_WELCOME, subscriber_id, list_id, &queued, err) < 0)) {
		store_rollback(s);
		return -1;
	}
	if (store_commit(s, err) < 0)
		return -1;
	*changed = did;
	*welcome = queued;
	return 0;
}
