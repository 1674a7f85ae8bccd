/*
 * Tests for lib/ledger.c: the next state for every reply class of
 * docs/design.md's classification table and the retry limits, the bounds
 * of the backoff (jitter range, the 4-hour cap), and on a real store in a
 * temp directory: enqueue, claim (with cancellation of rows whose
 * membership ended), record, unclaim, recover, retry, the counts, and a
 * bounce report that arrives before the relay's reply is recorded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ledger.h"
#include "store.h"
#include "subs.h"
#include "helpers.h"
#include "xmalloc.h"

#define NOW 1700000000

static const struct ledger_policy POLICY = {
    .max_attempts = 5, .retry_max_age = 3 * 86400, .bounce_threshold = 2};

/* ---- pure rules ------------------------------------------------------------ */

static struct send_result reply(enum send_outcome o, bool relay, bool bounce, int code,
                                const char *text)
{
	struct send_result r = {.outcome = o, .relay_level = relay, .bounce = bounce, .code = code};
	snprintf(r.reply, sizeof r.reply, "%s", text);
	return r;
}

static void test_next_state_for_each_reply_class(void **state)
{
	(void)state;
	/* one row per line of the classification table, as the transport
	 * classifies the reply; attempts is the claim's count */
	const struct {
		struct send_result r;
		enum ledger_state want;
		int attempts; /* kept */
	} rows[] = {
	    {reply(SEND_OK, false, false, 250, "250 2.0.0 Ok: queued as X"), LEDGER_SENT, 2},
	    {reply(SEND_PERM, false, true, 550, "550 5.1.1 no such user"), LEDGER_FAILED, 2},
	    {reply(SEND_PERM, false, false, 554, "554 5.6.0 content rejected"), LEDGER_FAILED, 2},
	    {reply(SEND_TEMP, false, false, 451, "451 4.7.1 greylisted"), LEDGER_DEFERRED, 2},
	    {reply(SEND_TEMP, false, false, 452, "452 4.3.1 after DATA"), LEDGER_DEFERRED, 2},
	    {reply(SEND_TEMP, false, false, 0, "no reply after the message"), LEDGER_DEFERRED, 2},
	    {reply(SEND_TEMP, true, false, 0, "connection refused"), LEDGER_QUEUED, 1},
	    {reply(SEND_TEMP, true, false, 421, "421 4.3.2 closing"), LEDGER_QUEUED, 1},
	    {reply(SEND_TEMP, true, false, 530, "530 5.7.0 AUTH first (MAIL FROM)"), LEDGER_QUEUED,
	     1},
	    {reply(SEND_TEMP, true, false, 554, "554 5.7.1 relaying denied"), LEDGER_QUEUED, 1},
	};
	struct ledger_job j = {.id = 1, .issue_id = 1, .attempts = 2, .first_attempt = NOW - 60};
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		int attempts = -1;
		enum ledger_state st = ledger_next_state(&j, &rows[i].r, NOW, &POLICY, &attempts);
		if (st != rows[i].want || attempts != rows[i].attempts)
			fail_msg("%s: %s with %d attempts, want %s with %d", rows[i].r.reply,
			         ledger_state_name(st), attempts, ledger_state_name(rows[i].want),
			         rows[i].attempts);
	}
}

static void test_retry_limits(void **state)
{
	(void)state;
	int a;
	struct send_result temp = reply(SEND_TEMP, false, false, 451, "451 later");
	struct send_result relay = reply(SEND_TEMP, true, false, 0, "refused");
	struct ledger_job j = {.attempts = POLICY.max_attempts - 1, .first_attempt = NOW - 60};
	assert_int_equal(ledger_next_state(&j, &temp, NOW, &POLICY, &a), LEDGER_DEFERRED);
	j.attempts = POLICY.max_attempts;
	assert_int_equal(ledger_next_state(&j, &temp, NOW, &POLICY, &a), LEDGER_FAILED);
	/* the relay's trouble never uses up attempts: back in the queue … */
	assert_int_equal(ledger_next_state(&j, &relay, NOW, &POLICY, &a), LEDGER_QUEUED);
	assert_int_equal(a, POLICY.max_attempts - 1);
	/* … and retry_max_age counts from the first attempt, for both */
	j.attempts = 1;
	j.first_attempt = NOW - POLICY.retry_max_age;
	assert_int_equal(ledger_next_state(&j, &temp, NOW, &POLICY, &a), LEDGER_FAILED);
	assert_int_equal(ledger_next_state(&j, &relay, NOW, &POLICY, &a), LEDGER_FAILED);
	j.first_attempt = NOW - POLICY.retry_max_age + 1;
	assert_int_equal(ledger_next_state(&j, &relay, NOW, &POLICY, &a), LEDGER_QUEUED);
	/* a relay-level result of a claim that counted nothing stays at 0 */
	j.attempts = 0;
	assert_int_equal(ledger_next_state(&j, &relay, NOW, &POLICY, &a), LEDGER_QUEUED);
	assert_int_equal(a, 0);
}

static void test_backoff_bounds(void **state)
{
	(void)state;
	for (int attempts = 1; attempts <= 40; attempts++) {
		int64_t base = 60;
		for (int i = 1; i < attempts && base < 4 * 3600; i++)
			base *= 2;
		if (base > 4 * 3600)
			base = 4 * 3600;
		int64_t lo = INT64_MAX, hi = 0;
		for (int k = 0; k < 300; k++) {
			int64_t b = ledger_backoff(attempts);
			if (b < base - base / 5 || b > base + base / 5)
				fail_msg("attempt %d: %lld s outside %lld ±20 %%", attempts,
				         (long long)b, (long long)base);
			lo = b < lo ? b : lo;
			hi = b > hi ? b : hi;
		}
		/* jitter: a burst of retries does not come back at one instant */
		assert_true(hi - lo >= base / 10);
	}
	assert_true(ledger_backoff(1) >= 48 && ledger_backoff(1) <= 72);
	assert_true(ledger_backoff(1000) <= 4 * 3600 + 4 * 3600 / 5); /* the cap */
}

static void test_state_names(void **state)
{
	(void)state;
	enum ledger_state st;
	for (int i = 0; i < LEDGER_NSTATES; i++) {
		assert_int_equal(ledger_state_parse(ledger_state_name((enum ledger_state)i), &st),
		                 0);
		assert_int_equal(st, i);
	}
	assert_string_equal(ledger_state_name(LEDGER_DEFERRED), "deferred");
	assert_int_equal(ledger_state_parse("Sent", &st), -1);
	assert_int_equal(ledger_state_parse("", &st), -1);
	assert_int_equal(ledger_state_parse(NULL, &st), -1);
}

/* ---- on a store ------------------------------------------------------------ */

struct fx {
	char dir[64];
	struct store *s;
	int64_t sub[3]; /* three confirmed subscribers of the default list */
};

static int setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof *f);
	struct err e;
	setenv("MATRIXD_FAKE_NOW", "1700000000", 1);
	if (tmpstore_dir(f->dir, "test_ledger") < 0 || tmpstore_open(&f->s, f->dir) < 0)
		return -1;
	err_clear(&e);
	const char *who[] = {"a@example.org", "b@example.org", "c@example.org"};
	for (int i = 0; i < 3; i++) {
		struct subs_request rq = {.email = who[i], .mode = -1, .via = "cli", .actor = "t"};
		struct subs_result res;
		if (subs_subscribe(f->s, &rq, &res, &e) < 0) {
			fprintf(stderr, "%s\n", e.msg);
			return -1;
		}
		f->sub[i] = res.subscriber_id;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	tmpstore_close(f->s, f->dir, NULL, 0);
	free(f);
	return 0;
}

static enum ledger_state state_of(struct store *s, int64_t id)
{
	sqlite3_stmt *st = NULL;
	enum ledger_state v = LEDGER_NSTATES;
	assert_int_equal(
	    sqlite3_prepare_v2(s->db, "SELECT state FROM deliveries WHERE id = ?1", -1, &st, NULL),
	    SQLITE_OK);
	sqlite3_bind_int64(st, 1, id);
	if (sqlite3_step(st) == SQLITE_ROW)
		assert_int_equal(ledger_state_parse((const char *)sqlite3_column_text(st, 0), &v),
		                 0);
	sqlite3_finalize(st);
	return v;
}

static void counts_are(struct store *s, int64_t issue, int64_t q, int64_t sg, int64_t st,
                       int64_t df, int64_t fl)
{
	struct ledger_counts c;
	struct err e;
	assert_int_equal(ledger_counts(s, issue, &c, &e), 0);
	int64_t want[LEDGER_NSTATES] = {q, sg, st, df, fl};
	for (int i = 0; i < LEDGER_NSTATES; i++)
		if (c.n[i] != want[i])
			fail_msg("issue %lld: %s %lld, want %lld", (long long)issue,
			         ledger_state_name((enum ledger_state)i), (long long)c.n[i],
			         (long long)want[i]);
}

static void test_enqueue_claim_record(void **state)
{
	struct fx *f = *state;
	struct err e;
	int64_t added = 0;
	err_clear(&e);
	assert_int_equal(ledger_enqueue_issue(f->s, 1, 2, "", NOW, &added, &e), 0);
	assert_int_equal(added, 6); /* 2 articles × 3 subscribers */
	assert_int_equal(ledger_enqueue_issue(f->s, 1, 2, "", NOW, &added, &e), 0);
	assert_int_equal(added, 0); /* idempotent */
	counts_are(f->s, 1, 6, 0, 0, 0, 0);
	int64_t due = 0;
	assert_int_equal(ledger_next_due(f->s, &due, &e), 0);
	assert_int_equal(due, NOW);

	struct ledger_job *jobs = NULL;
	size_t n = 0, cancelled = 9;
	assert_int_equal(ledger_claim(f->s, NOW, 4, &jobs, &n, &cancelled, &e), 0);
	assert_int_equal(n, 4);
	assert_int_equal(cancelled, 0);
	counts_are(f->s, 1, 2, 4, 0, 0, 0);
	/* article by article: the first article's rows come first */
	assert_int_equal(jobs[0].part, 1);
	assert_int_equal(jobs[2].part, 1);
	assert_int_equal(jobs[3].part, 2);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(jobs[i].attempts, 1);
		assert_int_equal(jobs[i].first_attempt, NOW);
		assert_false(jobs[i].was_deferred);
		assert_non_null(strstr(jobs[i].email, "@example.org"));
		assert_int_equal(state_of(f->s, jobs[i].id), LEDGER_SENDING);
	}

	enum ledger_state st;
	struct send_result ok = reply(SEND_OK, false, false, 250, "250 2.0.0 Ok: queued as Q1");
	transport_parse_reply(ok.reply, &ok);
	assert_int_equal(ledger_record(f->s, &jobs[0], &ok, NOW, &POLICY, &st, &e), 0);
	assert_int_equal(st, LEDGER_SENT);
	assert_int_equal(q_int1(f->s, "SELECT sent_at FROM deliveries WHERE id = ?1", jobs[0].id),
	                 NOW);

	struct send_result later = reply(SEND_TEMP, false, false, 451, "451 4.7.1 later");
	assert_int_equal(ledger_record(f->s, &jobs[1], &later, NOW, &POLICY, &st, &e), 0);
	assert_int_equal(st, LEDGER_DEFERRED);
	int64_t next =
	    q_int1(f->s, "SELECT next_attempt FROM deliveries WHERE id = ?1", jobs[1].id) - NOW;
	assert_true(next >= 48 && next <= 72); /* the first backoff, jitter included */

	/* the relay refused the recipient: failed, counted once toward the
	 * membership's score */
	struct send_result gone = reply(SEND_PERM, false, true, 550, "550 5.1.1 no such user");
	assert_int_equal(ledger_record(f->s, &jobs[2], &gone, NOW, &POLICY, &st, &e), 0);
	assert_int_equal(st, LEDGER_FAILED);
	assert_int_equal(q_int1(f->s,
	                        "SELECT bounce_score FROM memberships WHERE subscriber_id = ?1",
	                        jobs[2].subscriber_id),
	                 1);
	/* shutdown before sending: back to queued, the attempt not counted */
	assert_int_equal(ledger_unclaim(f->s, jobs[3].id, &e), 0);
	assert_int_equal(state_of(f->s, jobs[3].id), LEDGER_QUEUED);
	assert_int_equal(q_int1(f->s, "SELECT attempts FROM deliveries WHERE id = ?1", jobs[3].id),
	                 0);
	counts_are(f->s, 1, 3, 0, 1, 1, 1);
	int64_t deferred_id = jobs[1].id;
	ledger_jobs_free(jobs, n);

	/* the deferred row is not due yet; the queued ones are */
	assert_int_equal(ledger_claim(f->s, NOW, 10, &jobs, &n, NULL, &e), 0);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++)
		assert_true(jobs[i].id != deferred_id);
	ledger_jobs_free(jobs, n);
	/* a crash now: recovery puts them back, the attempt not held against them */
	int64_t rec = 0;
	assert_int_equal(ledger_recover(f->s, &rec, &e), 0);
	assert_int_equal(rec, 3);
	counts_are(f->s, 1, 3, 0, 1, 1, 1);
	assert_int_equal(
	    q_int1(f->s, "SELECT max(attempts) FROM deliveries WHERE state = 'queued'", 0), 0);

	/* due later: the deferred row comes back with its attempt count */
	assert_int_equal(ledger_claim(f->s, NOW + 3600, 10, &jobs, &n, NULL, &e), 0);
	assert_int_equal(n, 4);
	bool seen = false;
	for (size_t i = 0; i < n; i++)
		if (jobs[i].id == deferred_id) {
			seen = true;
			assert_true(jobs[i].was_deferred);
			assert_int_equal(jobs[i].attempts, 2);
			assert_int_equal(jobs[i].first_attempt, NOW);
		}
	assert_true(seen);
	ledger_jobs_free(jobs, n);

	/* retry requeues the failed one with a fresh count */
	int64_t requeued = 0;
	assert_int_equal(ledger_retry(f->s, 0, NOW + 7200, &requeued, &e), 0);
	assert_int_equal(requeued, 1);
	struct ledger_counts all;
	assert_int_equal(ledger_totals(f->s, &all, &e), 0);
	assert_int_equal(ledger_counts_total(&all), 6);
	assert_int_equal(ledger_counts_open(&all), 5);
	/* deliveries_due holds the rows waiting to be claimed and no others
	 * (every cell of its b-tree is one row's entry, store.c v8): a claim
	 * and a result need not move rows within an index of the history */
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries "
	                             "WHERE state IN ('sending', 'sent', 'failed')"),
	                 5);
	assert_int_equal(q_int(f->s, "SELECT sum(ncell) FROM dbstat WHERE name = 'deliveries_due'"),
	                 all.n[LEDGER_QUEUED] + all.n[LEDGER_DEFERRED]);
}

static void test_claim_cancels_ended_memberships(void **state)
{
	struct fx *f = *state;
	struct err e;
	int64_t added = 0;
	assert_int_equal(ledger_enqueue_issue(f->s, 1, 1, "", NOW, &added, &e), 0);
	struct subs_result res;
	assert_int_equal(subs_unsubscribe(f->s, "b@example.org", NULL, "cli", "t", &res, &e), 0);
	struct ledger_job *jobs = NULL;
	size_t n = 0, cancelled = 0;
	assert_int_equal(ledger_claim(f->s, NOW, 10, &jobs, &n, &cancelled, &e), 0);
	assert_int_equal(n, 2);
	assert_int_equal(cancelled, 1);
	for (size_t i = 0; i < n; i++)
		assert_true(jobs[i].subscriber_id != f->sub[1]);
	ledger_jobs_free(jobs, n);
	assert_int_equal(q_int1(f->s,
	                        "SELECT count(*) FROM deliveries WHERE subscriber_id = ?1 AND "
	                        "state = 'failed' AND last_reply = 'cancelled: unsubscribed'",
	                        f->sub[1]),
	                 1);
	struct ledger_counts c;
	assert_int_equal(ledger_subscriber_counts(f->s, f->sub[1], &c, &e), 0);
	assert_int_equal(c.n[LEDGER_FAILED], 1);
	assert_int_equal(ledger_counts_total(&c), 1);
}

static void test_bounce_before_the_reply(void **state)
{
	struct fx *f = *state;
	struct err e;
	int64_t added = 0;
	assert_int_equal(ledger_enqueue_issue(f->s, 1, 1, "", NOW, &added, &e), 0);
	struct ledger_job *jobs = NULL;
	size_t n = 0;
	assert_int_equal(ledger_claim(f->s, NOW, 1, &jobs, &n, NULL, &e), 0);
	assert_int_equal(n, 1);
	/* the MTA's DSN is piped in while the row is still 'sending' */
	bool fresh = false;
	assert_int_equal(
	    ledger_bounced(f->s, jobs[0].id, "5.1.1", "bounced: 550 5.1.1 no", NOW, &fresh, &e), 0);
	assert_true(fresh);
	assert_int_equal(state_of(f->s, jobs[0].id), LEDGER_FAILED);
	/* then the relay's 250 is recorded: it does not overwrite the bounce */
	enum ledger_state st = LEDGER_SENT;
	struct send_result ok = reply(SEND_OK, false, false, 250, "250 2.0.0 Ok");
	assert_int_equal(ledger_record(f->s, &jobs[0], &ok, NOW + 1, &POLICY, &st, &e), 0);
	assert_int_equal(st, LEDGER_FAILED);
	assert_int_equal(state_of(f->s, jobs[0].id), LEDGER_FAILED);
	assert_int_equal(
	    q_int1(f->s, "SELECT sent_at IS NULL FROM deliveries WHERE id = ?1", jobs[0].id), 1);
	/* the same report again counts nothing */
	assert_int_equal(
	    ledger_bounced(f->s, jobs[0].id, "5.1.1", "bounced: 550 5.1.1 no", NOW, &fresh, &e), 0);
	assert_false(fresh);
	ledger_jobs_free(jobs, n);

	/* a refusal at RCPT and a DSN for the same delivery count once */
	assert_int_equal(ledger_claim(f->s, NOW, 1, &jobs, &n, NULL, &e), 0);
	struct send_result gone = reply(SEND_PERM, false, true, 550, "550 5.1.1 no such user");
	assert_int_equal(ledger_record(f->s, &jobs[0], &gone, NOW, &POLICY, &st, &e), 0);
	assert_int_equal(
	    ledger_bounced(f->s, jobs[0].id, "5.1.1", "bounced: 550 5.1.1 no", NOW, &fresh, &e), 0);
	assert_false(fresh);
	assert_int_equal(q_int1(f->s,
	                        "SELECT bounce_score FROM memberships WHERE subscriber_id = ?1",
	                        jobs[0].subscriber_id),
	                 1);
	ledger_jobs_free(jobs, n);
}

static void test_send_rate(void **state)
{
	struct fx *f = *state;
	struct err e;
	int64_t added = 0;
	double rate = -1;
	assert_int_equal(ledger_enqueue_issue(f->s, 1, 2, "", NOW, &added, &e), 0);
	assert_int_equal(ledger_send_rate(f->s, 1, &rate, &e), 0);
	assert_true(rate == 0);
	struct ledger_job *jobs = NULL;
	size_t n = 0;
	assert_int_equal(ledger_claim(f->s, NOW, 6, &jobs, &n, NULL, &e), 0);
	struct send_result ok = reply(SEND_OK, false, false, 250, "250 Ok");
	for (size_t i = 0; i < n; i++)
		assert_int_equal(
		    ledger_record(f->s, &jobs[i], &ok, NOW + (int64_t)i, &POLICY, NULL, &e), 0);
	ledger_jobs_free(jobs, n);
	assert_int_equal(ledger_send_rate(f->s, 1, &rate, &e), 0);
	assert_true(rate > 1.19 && rate < 1.21); /* 6 in 5 s */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_next_state_for_each_reply_class),
	    cmocka_unit_test(test_retry_limits),
	    cmocka_unit_test(test_backoff_bounds),
	    cmocka_unit_test(test_state_names),
	    cmocka_unit_test_setup_teardown(test_enqueue_claim_record, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_claim_cancels_ended_memberships, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bounce_before_the_reply, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_send_rate, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
