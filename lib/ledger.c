/* The delivery ledger in SQLite (see ledger.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ledger.h"
#include "subs.h"
#include "xmalloc.h"

static const char *const state_names[LEDGER_NSTATES] = {"queued", "sending", "sent", "deferred",
                                                        "failed"};

const char *ledger_state_name(enum ledger_state st)
{
	return (unsigned)st < LEDGER_NSTATES ? state_names[st] : "?";
}

int ledger_state_parse(const char *s, enum ledger_state *out)
{
	for (int i = 0; s && i < LEDGER_NSTATES; i++)
		if (strcmp(s, state_names[i]) == 0) {
			*out = (enum ledger_state)i;
			return 0;
		}
	return -1;
}

int ledger_enqueue_issue(struct store *s, int64_t issue_id, int nparts, const char *lists,
                         int64_t now, int64_t *added, struct err *err)
{
	/* Rows are inserted article by article, so that the sender works through
	 * one article at a time (one rendered message shared by many). The
	 * WHERE 1 resolves the INSERT … SELECT … ON CONFLICT parsing ambiguity. */
	static const char articles[] =
	    "WITH RECURSIVE parts(p) AS (SELECT 1 UNION ALL SELECT p + 1 FROM parts WHERE p < ?2) "
	    "INSERT INTO deliveries(issue_id, part, subscriber_id, list_id, state, next_attempt, "
	    "                       not_before, created_at, updated_at) "
	    "SELECT ?1, parts.p, m.subscriber_id, m.list_id, 'queued', "
	    "       ?3 + (parts.p - 1) * l.pace, "
	    "       CASE WHEN l.pace > 0 THEN ?3 + (parts.p - 1) * l.pace END, ?3, ?3 "
	    "FROM parts, memberships m JOIN lists l ON l.id = m.list_id "
	    "WHERE m.status = 'confirmed' AND m.mode = 'article' "
	    "  AND (?4 = '' OR instr(',' || ?4 || ',', ',' || l.name || ',') > 0) "
	    "ORDER BY parts.p, m.subscriber_id, m.list_id "
	    "ON CONFLICT(issue_id, part, subscriber_id) DO NOTHING";
	static const char digests[] =
	    "INSERT INTO deliveries(issue_id, part, subscriber_id, list_id, state, next_attempt, "
	    "                       created_at, updated_at) "
	    "SELECT ?1, 0, m.subscriber_id, m.list_id, 'queued', ?3, ?3, ?3 "
	    "FROM memberships m JOIN lists l ON l.id = m.list_id "
	    "WHERE m.status = 'confirmed' AND m.mode = 'digest' AND ?2 >= 0 "
	    "  AND (?4 = '' OR instr(',' || ?4 || ',', ',' || l.name || ',') > 0) "
	    "ORDER BY m.subscriber_id, m.list_id "
	    "ON CONFLICT(issue_id, part, subscriber_id) DO NOTHING";
	const char *sqls[] = {articles, digests};
	*added = 0;
	if (store_begin(s, err) < 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		sqlite3_stmt *st = store_stmt(s, sqls[i], err);
		if (st == NULL)
			goto fail;
		sqlite3_bind_int64(st, 1, issue_id);
		sqlite3_bind_int(st, 2, nparts);
		sqlite3_bind_int64(st, 3, now);
		sqlite3_bind_text(st, 4, lists ? lists : "", -1, SQLITE_STATIC);
		if (store_step_done(s, st, err, "enqueue") < 0)
			goto fail;
		*added += sqlite3_changes(s->db);
	}
	return store_commit(s, err);
fail:
	store_rollback(s);
	return -1;
}

int ledger_recover(struct store *s, int64_t *n, struct err *err)
{
	/* The attempt the crash interrupted is not held against the message. */
	static const char sql[] =
	    "UPDATE deliveries SET state = 'queued', attempts = max(attempts - 1, 0), "
	    "updated_at = ?1 WHERE state = 'sending'";
	if (store_begin(s, err) < 0)
		return -1;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, store_now());
	if (store_step_done(s, st, err, "recover") < 0)
		goto fail;
	*n = sqlite3_changes(s->db);
	return store_commit(s, err);
fail:
	store_rollback(s);
	return -1;
}

void ledger_jobs_free(struct ledger_job *j, size_t n)
{
	for (size_t i = 0; j && i < n; i++) {
		free(j[i].email);
		free(j[i].name);
	}
	free(j);
}

static int set_state(struct store *s, int64_t id, enum ledger_state state, const char *reply,
                     int64_t now, struct err *err)
{
	static const char sql[] = "UPDATE deliveries SET state = ?2, last_reply = coalesce(?3, "
	                          "last_reply), updated_at = ?4, "
	                          "attempts = attempts + (?2 = 'sending'), "
	                          "first_attempt = CASE WHEN ?2 = 'sending' THEN "
	                          "coalesce(first_attempt, ?4) ELSE first_attempt END "
	                          "WHERE id = ?1";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, ledger_state_name(state), -1, SQLITE_STATIC);
	if (reply)
		sqlite3_bind_text(st, 3, reply, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, now);
	return store_step_done(s, st, err, "claim");
}

/* Why a row is cancelled at claim time, given its membership's stored
 * status (NULL: none) and the status its mail needs; NULL: it goes out. */
static const char *cancel_reason(const char *stored, enum subs_status want)
{
	enum subs_status st;
	if (stored == NULL || subs_status_parse(stored, &st) < 0)
		return "cancelled: no longer on the list";
	if (st == want)
		return NULL;
	switch (st) {
	case SUBS_UNSUBSCRIBED:
		return "cancelled: unsubscribed";
	case SUBS_BOUNCED:
		return "cancelled: bounced";
	default:
		return "cancelled: not pending";
	}
}

/*
 * A paced delivery waits for its turn: while an earlier article of the same
 * issue for the same subscriber is still to go (queued, being sent, or
 * deferred), the later one is not claimed, so that a reader gets a paced
 * list's articles in the order of the table of contents even when several
 * came due together (the relay was down, the daemon stopped) or one was
 * deferred. deliveries_subscriber makes it a look at one subscriber's rows.
 */
#define LEDGER_IN_TURN                                                                             \
	"(d.not_before IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries e "                         \
	"  WHERE e.subscriber_id = d.subscriber_id AND e.issue_id = d.issue_id "                   \
	"  AND e.part > 0 AND e.part < d.part AND e.state IN ('queued', 'sending', 'deferred')))"

int ledger_claim(struct store *s, int64_t now, size_t max, struct ledger_job **out, size_t *n,
                 size_t *cancelled, struct err *err)
{
	/* One state at a time, so that SQLite walks deliveries_due in index order
	 * and stops at the limit instead of sorting every due row; the state a
	 * literal, so that one plan uses that partial index (store.c, v8). */
#define CLAIM_SQL(state)                                                                           \
	"SELECT d.id, d.issue_id, d.part, d.subscriber_id, d.list_id, d.attempts, "                \
	"       coalesce(d.first_attempt, ?2), s.email, s.name, m.status, "                        \
	"       coalesce(i.number, 0), m.mode = 'digest' "                                         \
	"FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "                          \
	"LEFT JOIN memberships m ON m.subscriber_id = d.subscriber_id AND m.list_id = "            \
	"d.list_id "                                                                               \
	"LEFT JOIN issues i ON i.id = d.issue_id "                                                 \
	"WHERE d.state = '" state "' AND d.next_attempt <= ?2 AND " LEDGER_IN_TURN " LIMIT ?3"
	static const char *const sqls[] = {CLAIM_SQL("queued"), CLAIM_SQL("deferred")};
#undef CLAIM_SQL
	struct ledger_job *j = NULL;
	size_t k = 0;
	int64_t *cancel = NULL;
	const char **why = NULL;
	size_t ncancel = 0;
	*out = NULL;
	*n = 0;
	if (store_begin(s, err) < 0)
		return -1;
	for (int i = 0; i < 2 && k < max; i++) {
		sqlite3_stmt *st = store_stmt(s, sqls[i], err);
		if (st == NULL)
			goto fail;
		sqlite3_bind_int64(st, 2, now);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)(max - k));
		int rc;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			int64_t issue = sqlite3_column_int64(st, 1);
			const char *why_not =
			    cancel_reason((const char *)sqlite3_column_text(st, 9),
			                  issue == 0 ? SUBS_PENDING : SUBS_CONFIRMED);
			if (why_not) {
				cancel = xreallocarray(cancel, ncancel + 1, sizeof *cancel);
				why = xreallocarray(why, ncancel + 1, sizeof *why);
				cancel[ncancel] = sqlite3_column_int64(st, 0);
				why[ncancel++] = why_not;
				continue;
			}
			j = xreallocarray(j, k + 1, sizeof *j);
			j[k] = (struct ledger_job){
			    .id = sqlite3_column_int64(st, 0),
			    .issue_id = issue,
			    .part = sqlite3_column_int(st, 2),
			    .subscriber_id = sqlite3_column_int64(st, 3),
			    .list_id = sqlite3_column_int64(st, 4),
			    .attempts = sqlite3_column_int(st, 5) + 1,
			    .first_attempt = sqlite3_column_int64(st, 6),
			    .was_deferred = i == 1,
			    .number = sqlite3_column_int(st, 10),
			    .digest = sqlite3_column_int(st, 11) != 0,
			    .email = xstrdup((const char *)sqlite3_column_text(st, 7)),
			    .name = xstrdup((const char *)sqlite3_column_text(st, 8)),
			};
			k++;
		}
		sqlite3_reset(st);
		if (rc != SQLITE_DONE) {
			store_fail(s, err, "claim");
			goto fail;
		}
	}
	for (size_t i = 0; i < ncancel; i++)
		if (set_state(s, cancel[i], LEDGER_FAILED, why[i], now, err) < 0)
			goto fail;
	for (size_t i = 0; i < k; i++)
		if (set_state(s, j[i].id, LEDGER_SENDING, NULL, now, err) < 0)
			goto fail;
	if (store_commit(s, err) < 0)
		goto fail_nocommit;
	free(cancel);
	free(why);
	*out = j;
	*n = k;
	if (cancelled)
		*cancelled = ncancel;
	return 0;
fail:
	store_rollback(s);
fail_nocommit:
	free(cancel);
	free(why);
	ledger_jobs_free(j, k);
	return -1;
}

int ledger_unclaim(struct store *s, int64_t id, struct err *err)
{
	static const char sql[] = "UPDATE deliveries SET state = 'queued', "
	                          "attempts = max(attempts - 1, 0), updated_at = ?2 "
	                          "WHERE id = ?1 AND state = 'sending'";
	if (store_begin(s, err) < 0)
		return -1;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, store_now());
	if (store_step_done(s, st, err, "unclaim") < 0)
		goto fail;
	return store_commit(s, err);
fail:
	store_rollback(s);
	return -1;
}

int64_t ledger_backoff(int attempts)
{
	/* 1 min, 2, 4 … capped at 4 h; ±20 % jitter spreads a burst of retries. */
	int64_t base = 60;
	for (int i = 1; i < attempts && base < 4 * 3600; i++)
		base *= 2;
	if (base > 4 * 3600)
		base = 4 * 3600;
	unsigned r = 0;
	if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r)
		r = (unsigned)base;
	int64_t jitter = base / 5;
	return base - jitter + (int64_t)(r % (unsigned)(2 * jitter + 1));
}

int ledger_hard_bounce(struct store *s, int64_t subscriber_id, int64_t list_id, int threshold,
                       const char *detail, bool *bounced, int *score_out, struct err *err)
{
	/* Only a live membership counts: an unsubscribed or bounced one gets
	 * no more mail, and its score would only surprise a resubscription. */
	static const char bump[] =
	    "UPDATE memberships SET bounce_score = bounce_score + 1 "
	    "WHERE subscriber_id = ?1 AND list_id = ?2 AND status IN ('pending', 'confirmed') "
	    "RETURNING bounce_score";
	*bounced = false;
	if (score_out)
		*score_out = 0;
	if (store_begin(s, err) < 0)
		return -1;
	sqlite3_stmt *st = store_stmt(s, bump, err);
	if (st == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, subscriber_id);
	sqlite3_bind_int64(st, 2, list_id);
	int score = 0, rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		score = sqlite3_column_int(st, 0);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		store_fail(s, err, "bounce score");
		goto fail;
	}
	if (rc == SQLITE_DONE) /* forgotten, left or bounced meanwhile: nothing to count */
		return store_commit(s, err);
	if (score_out)
		*score_out = score;
	if (subs_event_add(s, subscriber_id, list_id, "bounce", "bounce", "", detail, err) < 0)
		goto fail;
	if (score >= threshold) {
		char why[96];
		snprintf(why, sizeof why, "%d hard bounces (threshold %d)", score, threshold);
		if (subs_bounce_id(s, subscriber_id, list_id, why, bounced, err) < 0)
			goto fail;
	}
	return store_commit(s, err);
fail:
	store_rollback(s);
	return -1;
}

int ledger_delivery_get(struct store *s, int64_t id, struct ledger_delivery *d, struct err *err)
{
	static const char sql[] =
	    "SELECT d.subscriber_id, d.list_id, coalesce(i.number, 0), d.part, s.email "
	    "FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
	    "LEFT JOIN issues i ON i.id = d.issue_id WHERE d.id = ?1";
	memset(d, 0, sizeof *d);
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		d->id = id;
		d->subscriber_id = sqlite3_column_int64(st, 0);
		d->list_id = sqlite3_column_int64(st, 1);
		d->issue = sqlite3_column_int(st, 2);
		d->article = sqlite3_column_int(st, 3);
		d->email = xstrdup((const char *)sqlite3_column_text(st, 4));
	}
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_fail(s, err, "looking up a delivery");
	return rc == SQLITE_ROW;
}

/* Sets the bounce marker of a delivery: 1 when set now, 0 when it was set. */
static int mark_bounced(struct store *s, int64_t id, int64_t now, struct err *err)
{
	static const char sql[] =
	    "UPDATE deliveries SET bounced_at = ?2 WHERE id = ?1 AND bounced_at IS NULL";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, now);
	if (store_step_done(s, st, err, "bounce marker") < 0)
		return -1;
	return sqlite3_changes(s->db) == 1;
}

int ledger_bounced(struct store *s, int64_t id, const char *status, const char *reply, int64_t now,
                   bool *fresh, struct err *err)
{
	/* The marker first: a report seen before changes nothing, whatever
	 * happened to the row since (a reply recorded, a retry). */
	static const char sql[] =
	    "UPDATE deliveries SET state = 'failed', last_code = NULL, last_status = ?2, "
	    "last_reply = ?3, updated_at = ?4 WHERE id = ?1";
	*fresh = false;
	if (store_begin(s, err) < 0)
		return -1;
	int m = mark_bounced(s, id, now, err);
	if (m < 0)
		goto fail;
	if (m == 1) {
		sqlite3_stmt *st = store_stmt(s, sql, err);
		if (st == NULL)
			goto fail;
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, reply, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, now);
		if (store_step_done(s, st, err, "bounce") < 0)
			goto fail;
		*fresh = true;
	}
	return store_commit(s, err);
fail:
	store_rollback(s);
	return -1;
}

enum ledger_state ledger_next_state(const struct ledger_job *j, const struct send_result *r,
                                    int64_t now, const struct ledger_policy *p, int *attempts)
{
	*attempts = j->attempts;
	if (r->outcome == SEND_OK)
		return LEDGER_SENT;
	if (r->outcome == SEND_PERM)
		return LEDGER_FAILED;
	if (r->relay_level) {
		/* the relay's trouble, not this message's: the attempt does not
		 * count, the row goes back in line where it was (another relay, or
		 * this one once it is back, takes it in order), and only
		 * retry_max_age ends the wait */
		if (*attempts > 0)
			(*attempts)--;
		return now - j->first_attempt >= p->retry_max_age ? LEDGER_FAILED : LEDGER_QUEUED;
	}
	if (*attempts >= p->max_attempts || now - j->first_attempt >= p->retry_max_age)
		return LEDGER_FAILED;
	return LEDGER_DEFERRED;
}

/* The state of a row whose reply came too late to be recorded: what the
 * one who changed it wrote (queued when the row is gone). */
static int state_now(struct store *s, int64_t id, enum ledger_state *state, struct err *err)
{
	static const char sql[] = "SELECT state FROM deliveries WHERE id = ?1";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, id);
	int rc = sqlite3_step(st);
	*state = LEDGER_QUEUED;
	if (rc == SQLITE_ROW)
		(void)ledger_state_parse((const char *)sqlite3_column_text(st, 0), state);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_fail(s, err, "record");
	return 0;
}

int ledger_record(struct store *s, const struct ledger_job *j, const struct send_result *r,
                  int64_t now, const struct ledger_policy *p, enum ledger_state *state_out,
                  struct err *err)
{
	/* A reply answers the claim that made the row 'sending'; a row that
	 * left it meanwhile was changed by someone who knew more (a bounce
	 * report that overtook the relay's 250) and keeps what they wrote. */
	static const char sql[] =
	    "UPDATE deliveries SET state = ?2, attempts = ?3, "
	    "  next_attempt = CASE WHEN ?2 = 'queued' THEN next_attempt ELSE ?4 END, last_code = "
	    "?5, "
	    "  last_status = nullif(?6, ''), last_reply = ?7, queue_id = nullif(?8, ''), "
	    "  updated_at = ?9, sent_at = CASE WHEN ?2 = 'sent' THEN ?9 ELSE sent_at END "
	    "WHERE id = ?1 AND state = 'sending'";
	int attempts;
	enum ledger_state state = ledger_next_state(j, r, now, p, &attempts);
	int64_t next =
	    state == LEDGER_DEFERRED ? now + ledger_backoff(attempts > 0 ? attempts : 1) : now;
	if (state_out)
		*state_out = state;
	if (store_begin(s, err) < 0)
		return -1;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, j->id);
	sqlite3_bind_text(st, 2, ledger_state_name(state), -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, attempts);
	sqlite3_bind_int64(st, 4, next);
	if (r->code)
		sqlite3_bind_int(st, 5, r->code);
	sqlite3_bind_text(st, 6, r->status, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, r->reply, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, r->queue_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 9, now);
	if (store_step_done(s, st, err, "record") < 0)
		goto fail;
	if (sqlite3_changes(s->db) == 0) {
		if (state_now(s, j->id, &state, err) < 0)
			goto fail;
	} else if (r->bounce && j->issue_id != 0) {
		/* the relay refused the recipient: that is this delivery's bounce,
		 * counted once like a report */
		bool bounced;
		int fresh = mark_bounced(s, j->id, now, err);
		if (fresh < 0 || (fresh && ledger_hard_bounce(s, j->subscriber_id, j->list_id,
		                                              p->bounce_threshold, r->reply,
		                                              &bounced, NULL, err) < 0))
			goto fail;
	}
	if (store_commit(s, err) < 0)
		return -1;
	if (state_out)
		*state_out = state;
	return 0;
fail:
	store_rollback(s);
	return -1;
}

int64_t ledger_counts_total(const struct ledger_counts *c)
{
	int64_t t = 0;
	for (int i = 0; i < LEDGER_NSTATES; i++)
		t += c->n[i];
	return t;
}

int64_t ledger_counts_open(const struct ledger_counts *c)
{
	return c->n[LEDGER_QUEUED] + c->n[LEDGER_SENDING] + c->n[LEDGER_DEFERRED];
}

static int counts_where(struct store *s, const char *sql, int64_t id, bool bind,
                        struct ledger_counts *c, struct err *err)
{
	memset(c, 0, sizeof *c);
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	if (bind)
		sqlite3_bind_int64(st, 1, id);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		enum ledger_state state;
		if (ledger_state_parse((const char *)sqlite3_column_text(st, 0), &state) == 0)
			c->n[state] = sqlite3_column_int64(st, 1);
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : store_fail(s, err, "counts");
}

int ledger_counts(struct store *s, int64_t issue_id, struct ledger_counts *c, struct err *err)
{
	static const char sql[] =
	    "SELECT state, count(*) FROM deliveries WHERE issue_id = ?1 GROUP BY state";
	return counts_where(s, sql, issue_id, true, c, err);
}

int ledger_totals(struct store *s, struct ledger_counts *c, struct err *err)
{
	static const char sql[] = "SELECT state, count(*) FROM deliveries GROUP BY state";
	return counts_where(s, sql, 0, false, c, err);
}

int ledger_subscriber_counts(struct store *s, int64_t subscriber_id, struct ledger_counts *c,
                             struct err *err)
{
	static const char sql[] =
	    "SELECT state, count(*) FROM deliveries WHERE subscriber_id = ?1 GROUP BY state";
	return counts_where(s, sql, subscriber_id, true, c, err);
}

int ledger_send_rate(struct store *s, int64_t issue_id, double *rate, struct err *err)
{
	static const char sql[] = "SELECT count(*), min(sent_at), max(sent_at) FROM deliveries "
	                          "WHERE issue_id = ?1 AND state = 'sent'";
	*rate = 0;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, issue_id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		int64_t n = sqlite3_column_int64(st, 0);
		int64_t span = sqlite3_column_int64(st, 2) - sqlite3_column_int64(st, 1);
		*rate = n > 1 && span >= 2 ? (double)n / (double)span : 0;
	}
	sqlite3_reset(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : store_fail(s, err, "send rate");
}

int ledger_next_due(struct store *s, int64_t *when, struct err *err)
{
	/* per state, so that SQLite walks deliveries_due in order and stops at
	 * the first row in its turn; literals, as in ledger_claim */
#define DUE_SQL(state)                                                                             \
	"SELECT d.next_attempt FROM deliveries d WHERE d.state = '" state "' "                     \
	"AND " LEDGER_IN_TURN " ORDER BY d.next_attempt LIMIT 1"
	static const char *const sqls[] = {DUE_SQL("queued"), DUE_SQL("deferred")};
#undef DUE_SQL
	*when = 0;
	for (int i = 0; i < 2; i++) {
		sqlite3_stmt *st = store_stmt(s, sqls[i], err);
		if (st == NULL)
			return -1;
		int rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			int64_t t = sqlite3_column_int64(st, 0);
			if (*when == 0 || t < *when)
				*when = t;
		}
		sqlite3_reset(st);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return store_fail(s, err, "next due");
	}
	return 0;
}

int ledger_waiting(struct store *s, int64_t issue_id, int64_t now, int64_t *n, int64_t *next,
                   struct err *err)
{
	static const char sql[] = "SELECT count(*), min(next_attempt) FROM deliveries "
	                          "WHERE issue_id = ?1 AND state = 'queued' AND next_attempt > ?2";
	*n = *next = 0;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, issue_id);
	sqlite3_bind_int64(st, 2, now);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*n = sqlite3_column_int64(st, 0);
		*next = sqlite3_column_int64(st, 1);
	}
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? 0 : store_fail(s, err, "waiting deliveries");
}

int ledger_retry(struct store *s, int issue_number, int64_t now, int64_t *n, struct err *err)
{
	static const char sql[] =
	    "UPDATE deliveries SET state = 'queued', attempts = 0, next_attempt = ?2, "
	    "  created_at = ?2, updated_at = ?2 "
	    "WHERE state = 'failed' AND (?1 = 0 OR issue_id = "
	    "  (SELECT id FROM issues WHERE number = ?1))";
	if (store_begin(s, err) < 0)
		return -1;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL) {
		store_rollback(s);
		return -1;
	}
	sqlite3_bind_int(st, 1, issue_number);
	sqlite3_bind_int64(st, 2, now);
	if (store_step_done(s, st, err, "retry") < 0) {
		store_rollback(s);
		return -1;
	}
	*n = sqlite3_changes(s->db);
	return store_commit(s, err);
}

int ledger_wake(const char *state_dir, struct err *err)
{
	char *path = xasprintf("%s/%s", state_dir, LEDGER_WAKE_FILE);
	int rc = 0;
	/* O_NONBLOCK: a FIFO planted under the name must not hang us */
	int fd = open(path, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 && errno != ENOENT)
		rc = err_sys(err, "%s: cannot wake matrixd; it sends the mail on its next round",
		             path);
	else if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)))
		rc = err_set(err, ERR_IO,
		             "%s is not a regular file: cannot wake matrixd; restart it to "
		             "recreate the file",
		             path);
	if (fd >= 0 && close(fd) < 0 && rc == 0)
		rc = err_sys(err, "%s", path);
	free(path);
	return rc;
}
