/*
 * Paced lists: the duration syntax; on a real store, an issue queued for a
 * paced list (article k due at the send time + (k - 1) x pace, digests at
 * once, an unpaced list untouched), the claim taking a subscriber's
 * articles only in table-of-contents order (a deferred or unsent earlier
 * article holds the later ones back), the relay's trouble putting a row
 * back in its place, and what status reports as waiting.
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

#define NOW  1700000000
#define PACE 600

static const struct ledger_policy POLICY = {
    .max_attempts = 5, .retry_max_age = 3 * 86400, .bounce_threshold = 3};

static void test_durations(void **state)
{
	(void)state;
	const struct {
		const char *s;
		int64_t v;
		const char *back;
	} ok[] = {{"0", 0, "0"},
	          {"90s", 90, "1m30s"},
	          {"3h", 10800, "3h"},
	          {"1d", 86400, "1d"},
	          {"1h30m", 5400, "1h30m"},
	          {"15m", 900, "15m"},
	          {"30d", 2592000, "30d"},
	          {"2d3h4m5s", 183845, "2d3h4m5s"}};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		int64_t v = -1;
		char out[32];
		if (subs_pace_parse(ok[i].s, &v) != 0)
			fail_msg("refused %s", ok[i].s);
		assert_int_equal(v, ok[i].v);
		subs_pace_format(v, out, sizeof out);
		assert_string_equal(out, ok[i].back);
	}
	const char *bad[] = {"",     "90",  "s",   "1x",  "-5m",
	                     "1.5h", "31d", "1h ", " 1h", "99999999999d"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int64_t v;
		if (subs_pace_parse(bad[i], &v) != -1)
			fail_msg("accepted '%s'", bad[i]);
	}
}

struct fx {
	char dir[64];
	struct store *s;
	int64_t paced[2], plain, digest;
};

static int64_t subscribe(struct store *s, const char *email, const char *list, int mode)
{
	struct err e;
	struct subs_request rq = {
	    .email = email, .list = list, .mode = mode, .via = "cli", .actor = "t"};
	struct subs_result res;
	if (subs_subscribe(s, &rq, &res, &e) < 0)
		fail_msg("%s", e.msg);
	return res.subscriber_id;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	struct err e;
	if (tmpstore_dir(f->dir, "test_pace") < 0 || tmpstore_open(&f->s, f->dir) < 0)
		return -1;
	if (subs_list_create(f->s, "slow", NULL, NULL, "t", &e) < 0 ||
	    subs_list_set(f->s, "slow", NULL, NULL, PACE, "t", &e) < 0)
		return -1;
	f->paced[0] = subscribe(f->s, "a@example.org", "slow", SUBS_ARTICLE);
	f->paced[1] = subscribe(f->s, "b@example.org", "slow", SUBS_ARTICLE);
	f->digest = subscribe(f->s, "d@example.org", "slow", SUBS_DIGEST);
	f->plain = subscribe(f->s, "p@example.org", NULL, SUBS_ARTICLE);
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

/* Claims everything due at now; returns how many, and the parts claimed
 * for subscriber sub in *parts (a bit per part). */
static size_t claim(struct fx *f, int64_t now, int64_t sub, unsigned *parts,
                    struct ledger_job **keep)
{
	struct ledger_job *jobs;
	size_t n;
	struct err e;
	assert_int_equal(ledger_claim(f->s, now, 100, &jobs, &n, NULL, &e), 0);
	*parts = 0;
	for (size_t i = 0; i < n; i++)
		if (jobs[i].subscriber_id == sub)
			*parts |= 1u << jobs[i].part;
	if (keep)
		*keep = jobs;
	else
		ledger_jobs_free(jobs, n);
	return n;
}

static void record_all(struct fx *f, struct ledger_job *jobs, size_t n, int64_t now,
                       const struct send_result *r)
{
	struct err e;
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ledger_record(f->s, &jobs[i], r, now, &POLICY, NULL, &e), 0);
	ledger_jobs_free(jobs, n);
}

static void test_enqueue_paces_articles(void **state)
{
	struct fx *f = *state;
	struct err e;
	int64_t added;
	assert_int_equal(ledger_enqueue_issue(f->s, 1, 3, "", NOW, &added, &e), 0);
	assert_int_equal(added, 2 * 3 + 1 + 3); /* two paced readers, a digest, the plain list */
	/* article k at NOW + (k - 1) x pace, for each paced reader */
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries WHERE not_before IS NOT NULL "
	                             "AND not_before = next_attempt "
	                             "AND next_attempt = 1700000000 + (part - 1) * 600"),
	                 6);
	/* the digest and the unpaced list go at once */
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries WHERE not_before IS NULL "
	                             "AND next_attempt = 1700000000"),
	                 4);
	int64_t n, next;
	assert_int_equal(ledger_waiting(f->s, 1, NOW, &n, &next, &e), 0);
	assert_int_equal(n, 4);
	assert_int_equal(next, NOW + PACE);
	int64_t due;
	assert_int_equal(ledger_next_due(f->s, &due, &e), 0);
	assert_int_equal(due, NOW);
}

static void test_claim_in_turn(void **state)
{
	struct fx *f = *state;
	struct err e;
	int64_t added, due;
	unsigned parts;
	struct ledger_job *jobs;
	const struct send_result ok = {.outcome = SEND_OK, .code = 250};
	const struct send_result later = {.outcome = SEND_TEMP, .code = 451};
	const struct send_result down = {.outcome = SEND_TEMP, .relay_level = true};
	assert_int_equal(ledger_enqueue_issue(f->s, 1, 3, "slow", NOW, &added, &e), 0);

	/* at the send time: article 1 of each paced reader, and the digest */
	size_t n = claim(f, NOW, f->paced[0], &parts, &jobs);
	assert_int_equal(n, 3);
	assert_int_equal(parts, 1u << 1);
	/* the relay was down: back in line, nothing counted, nothing later */
	record_all(f, jobs, n, NOW, &down);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries WHERE state = 'queued' "
	                             "AND attempts = 0"),
	                 7);
	assert_int_equal(q_int(f->s, "SELECT next_attempt FROM deliveries WHERE part = 1 "
	                             "AND not_before IS NOT NULL LIMIT 1"),
	                 NOW);

	/* the relay came back after article 3's time: one article at a time
	 * per reader, in order, whatever is due */
	int64_t late = NOW + 3 * PACE;
	n = claim(f, late, f->paced[0], &parts, &jobs);
	assert_int_equal(n, 3);
	assert_int_equal(parts, 1u << 1);
	/* while article 1 is being sent, nothing else of that reader is due */
	assert_int_equal(ledger_next_due(f->s, &due, &e), 0);
	assert_int_equal(due, 0);
	assert_int_equal(claim(f, late, f->paced[0], &parts, NULL), 0);
	/* article 1 of reader a deferred (4xx): its later ones wait for it */
	for (size_t i = 0; i < n; i++) {
		const struct send_result *r = jobs[i].subscriber_id == f->paced[0] ? &later : &ok;
		assert_int_equal(ledger_record(f->s, &jobs[i], r, late, &POLICY, NULL, &e), 0);
	}
	ledger_jobs_free(jobs, n);
	n = claim(f, late, f->paced[1], &parts, &jobs);
	assert_int_equal(n, 1);
	assert_int_equal(parts, 1u << 2); /* b goes on with article 2 */
	record_all(f, jobs, n, late, &ok);
	n = claim(f, late, f->paced[1], &parts, &jobs);
	assert_int_equal(parts, 1u << 3); /* then 3 */
	record_all(f, jobs, n, late, &ok);
	/* a's retry is the next thing due, not its article 2 (already due but
	 * behind it) */
	assert_int_equal(ledger_next_due(f->s, &due, &e), 0);
	assert_true(due > late);
	n = claim(f, due, f->paced[0], &parts, &jobs);
	assert_int_equal(parts, 1u << 1);
	record_all(f, jobs, n, due, &ok);
	n = claim(f, due, f->paced[0], &parts, &jobs);
	assert_int_equal(parts, 1u << 2);
	record_all(f, jobs, n, due, &ok);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries WHERE state = 'sent'"), 6);
}

static void test_list_set(void **state)
{
	struct fx *f = *state;
	struct err e;
	size_t n;
	assert_int_equal(subs_list_set(f->s, "nosuch", NULL, NULL, 60, "t", &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);
	assert_int_equal(subs_list_set(f->s, "slow", "Slow\nlist", NULL, -1, "t", &e), -1);
	assert_int_equal(e.kind, ERR_INPUT);
	assert_int_equal(subs_list_set(f->s, "slow", "Slow", NULL, -1, "t", &e), 0);
	struct subs_list *l = subs_lists(f->s, &n, &e);
	assert_non_null(l);
	for (size_t i = 0; i < n; i++)
		if (strcmp(l[i].name, "slow") == 0) {
			assert_string_equal(l[i].title, "Slow");
			assert_int_equal(l[i].pace, PACE); /* kept */
		} else {
			assert_int_equal(l[i].pace, 0);
		}
	subs_lists_free(l, n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_durations),
	    cmocka_unit_test_setup_teardown(test_enqueue_paces_articles, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_claim_in_turn, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_list_set, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
