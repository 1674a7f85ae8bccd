/*
 * Tests for lib/inbound.c on a real SQLite store in a temp directory: every
 * sample of tests/data/bounces/ made to name one of the store's deliveries
 * (its VERP token, our Message-ID, an unsubscribe token signed by the
 * store's key) and applied; every real bounce of tests/data/bounces-real/
 * (none names us: nothing may change); a store that fails the lookup is an
 * error, never "dropped"; a bounce that overtakes the relay's reply; a
 * report counted once; the score of the membership the delivery was for.
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
#include <json-c/json.h>

#include "buf.h"
#include "inbound.h"
#include "ledger.h"
#include "mailconv.h"
#include "store.h"
#include "subs.h"
#include "token.h"
#include "helpers.h"
#include "xmalloc.h"

#define SAMPLES "tests/data/bounces/"
#define REAL    "tests/data/bounces-real/"
#define NOW     1700000000
#define NSUBS   20

struct fx {
	char dir[64];
	struct store *s;
	struct token_key key;
	int64_t list2;         /* a second list, "extra" */
	int64_t sub[NSUBS];    /* subscribers s0@ … on list matrix (and s0 on extra) */
	int64_t deliv[NSUBS];  /* their delivery of article 1 of issue 60 */
	int64_t deliv0[3];     /* s0's deliveries of articles 2 … 4 */
	struct inbound_opts o; /* bounce_threshold 3 */
};

static int setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof *f);
	struct err e;
	setenv("MATRIXD_FAKE_NOW", "1700000000", 1);
	if (tmpstore_dir(f->dir, "test_inbound") < 0 || tmpstore_open(&f->s, f->dir) < 0)
		return -1;
	err_clear(&e);
	token_key_random(&f->key);
	f->o = (struct inbound_opts){.return_path = "bounces+{token}@example.org",
	                             .bounce_threshold = 3};
	assert_int_equal(subs_list_create(f->s, "extra", "Extra", "", "test", &e), 0);
	f->list2 = subs_list_id(f->s, "extra", &e);
	for (int i = 0; i < NSUBS; i++) {
		char addr[32];
		snprintf(addr, sizeof addr, "s%d@example.net", i);
		struct subs_request rq = {.email = addr, .mode = -1, .via = "cli", .actor = "t"};
		struct subs_result r;
		assert_int_equal(subs_subscribe(f->s, &rq, &r, &e), 0);
		f->sub[i] = r.subscriber_id;
	}
	struct subs_request rq = {.email = "s0@example.net", .list = "extra", .mode = -1};
	struct subs_result r;
	assert_int_equal(subs_subscribe(f->s, &rq, &r, &e), 0);
	q_exec(f->s,
	       "INSERT INTO issues(id, number, title, status, lists, path, hash, date, "
	       "created_at, updated_at) VALUES (1, 60, 'NO.60', 'publish', 'matrix', 'p', 'h', "
	       "1, 1, 1)");
	int64_t added;
	assert_int_equal(ledger_enqueue_issue(f->s, 1, 4, "matrix", NOW, &added, &e), 0);
	assert_int_equal(added, 4 * NSUBS);
	for (int i = 0; i < NSUBS; i++)
		f->deliv[i] = q_intf(
		    f->s, "SELECT id FROM deliveries WHERE part = 1 AND subscriber_id = %lld",
		    (long long)f->sub[i]);
	for (int k = 0; k < 3; k++)
		f->deliv0[k] = q_intf(
		    f->s, "SELECT id FROM deliveries WHERE part = %d AND subscriber_id = %lld",
		    k + 2, (long long)f->sub[0]);
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

static bool is_hex(int c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Length of a sample's token "DIGITS-HEX" (or "D-D-HEX") at p, 0 if none. */
static size_t token_len(const char *p)
{
	const char *q = p;
	while ((*q >= '0' && *q <= '9') || *q == '-' || is_hex(*q))
		q++;
	return *q == '@' && q > p && memchr(p, '-', (size_t)(q - p)) ? (size_t)(q - p) : 0;
}

/*
 * The sample with its identifiers made ours: every bounces+TOKEN@ becomes
 * the VERP token of delivery id, every unsubscribe+TOKEN@ the unsubscribe
 * token of (sub, list 1), every Message-ID <m.…> or <matrix.…> ours for
 * the delivery.
 */
static char *ours(const struct fx *f, const char *msg, int64_t id, int64_t sub)
{
	char verp[TOKEN_MAX], unsub[TOKEN_MAX];
	token_make(&f->key, TOKEN_VERP, id, 0, verp);
	token_make(&f->key, TOKEN_UNSUBSCRIBE, sub, 1, unsub);
	char *mid = mailconv_message_id(verp);
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	for (const char *p = msg; *p;) {
		size_t n;
		if (strncmp(p, "bounces+", 8) == 0 && (n = token_len(p + 8)) > 0) {
			buf_printf(&b, "bounces+%s", verp);
			p += 8 + n;
		} else if (strncmp(p, "unsubscribe+", 12) == 0 && (n = token_len(p + 12)) > 0) {
			buf_printf(&b, "unsubscribe+%s", unsub);
			p += 12 + n;
		} else if (strncmp(p, "<m.60.", 6) == 0 || strncmp(p, "<matrix.", 8) == 0) {
			const char *e = strchr(p, '>');
			assert_non_null(e);
			buf_printf(&b, "<%s@news.example.org>", mid);
			p = e + 1;
		} else {
			buf_addc(&b, *p++);
		}
	}
	free(mid);
	return buf_detach(&b);
}

static int apply(struct fx *f, const char *msg, struct inbound_result *r, struct err *e)
{
	err_clear(e);
	return inbound_apply(f->s, &f->key, &f->o, msg, strlen(msg), r, e);
}

static enum inbound_action apply_ok(struct fx *f, const char *msg, struct inbound_result *r)
{
	struct err e;
	int rc = apply(f, msg, r, &e);
	if (rc != 0)
		fail_msg("inbound_apply: %s", e.msg);
	assert_non_null(r->report);
	return r->action;
}

static enum inbound_action apply_sample(struct fx *f, const char *name, int i)
{
	char path[256];
	size_t len;
	snprintf(path, sizeof path, SAMPLES "%s", name);
	char *raw = slurp(path, &len);
	char *msg = ours(f, raw, f->deliv[i], f->sub[i]);
	struct inbound_result r;
	enum inbound_action a = apply_ok(f, msg, &r);
	if (a != INBOUND_DROPPED && a != INBOUND_UNSUBSCRIBED)
		assert_int_equal(r.delivery.id, f->deliv[i]);
	inbound_result_free(&r);
	free(msg);
	free(raw);
	return a;
}

static const char *state_of(struct fx *f, int64_t id)
{
	static char st[16];
	char *sql = xasprintf("SELECT state FROM deliveries WHERE id = %lld", (long long)id);
	char *v = q_text(f->s, sql);
	snprintf(st, sizeof st, "%s", v);
	free(v);
	free(sql);
	return st;
}

static int64_t score_of(struct fx *f, int64_t sub, int64_t list)
{
	return q_intf(f->s,
	              "SELECT bounce_score FROM memberships WHERE subscriber_id = %lld AND "
	              "list_id = %lld",
	              (long long)sub, (long long)list);
}

static char *status_of(struct fx *f, int64_t sub, int64_t list)
{
	char *sql = xasprintf("SELECT status FROM memberships WHERE subscriber_id = %lld AND "
	                      "list_id = %lld",
	                      (long long)sub, (long long)list);
	char *v = q_text(f->s, sql);
	free(sql);
	return v;
}

/* --- every sample ---------------------------------------------------------- */

static void test_every_sample(void **state)
{
	struct fx *f = *state;
	static const struct {
		const char *name;
		enum inbound_action want;
	} samples[] = {
	    {"postfix-dsn-hard.eml", INBOUND_FAILED},
	    {"gmail-dsn-hard.eml", INBOUND_FAILED},
	    {"exim-text-hard.eml", INBOUND_FAILED},
	    {"qmail-text-hard.eml", INBOUND_FAILED},
	    {"postfix-expired-hard.eml", INBOUND_FAILED},
	    {"verp-undecodable.eml", INBOUND_FAILED},
	    {"postfix-delay-soft.eml", INBOUND_DELAYED},
	    {"exim-delay-soft.eml", INBOUND_DELAYED},
	    {"arf-abuse.eml", INBOUND_UNSUBSCRIBED},
	    {"unsubscribe-mailto.eml", INBOUND_UNSUBSCRIBED},
	    {"vacation-autoreply.eml", INBOUND_DROPPED},
	    {"plain-mail.eml", INBOUND_DROPPED},
	    {"reply-delivery-failed.eml", INBOUND_DROPPED},
	    {"arf-in-reply-to.eml", INBOUND_HINT_ONLY},
	};
	size_t n = sizeof samples / sizeof samples[0];
	assert_true(n <= NSUBS - 1);
	for (size_t k = 0; k < n; k++) {
		int i = (int)k + 1; /* s0 is the per-list test's */
		enum inbound_action got = apply_sample(f, samples[k].name, i);
		if (got != samples[k].want)
			fail_msg("%s: %s, want %s", samples[k].name, inbound_action_name(got),
			         inbound_action_name(samples[k].want));
		const char *st = state_of(f, f->deliv[i]);
		char *ms = status_of(f, f->sub[i], 1);
		switch (samples[k].want) {
		case INBOUND_FAILED:
			assert_string_equal(st, "failed");
			assert_int_equal(score_of(f, f->sub[i], 1), 1);
			assert_string_equal(ms, "confirmed");
			assert_int_equal(q_intf(f->s,
			                        "SELECT bounced_at FROM deliveries WHERE id = %lld",
			                        (long long)f->deliv[i]),
			                 NOW);
			break;
		case INBOUND_UNSUBSCRIBED:
			assert_string_equal(st, "queued");
			assert_string_equal(ms, "unsubscribed");
			break;
		default:
			assert_string_equal(st, "queued");
			assert_int_equal(score_of(f, f->sub[i], 1), 0);
			assert_string_equal(ms, "confirmed");
			break;
		}
		free(ms);
	}
	/* the history tells a delay from a failure from a complaint */
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events WHERE kind = 'bounce'"), 6);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events WHERE kind = 'delayed'"), 2);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events WHERE kind = 'complaint'"), 1);
	char *d =
	    q_text(f->s, "SELECT group_concat(detail, '|') FROM events WHERE kind = 'bounce'");
	assert_non_null(strstr(d, "4.4.1 connect to mx.example.net"));
	free(d);
}

/* Nothing in the real corpus names a delivery of ours: each is read, none
 * is an error, nothing changes. */
static void test_real_corpus_changes_nothing(void **state)
{
	struct fx *f = *state;
	struct json_object *ref = json_object_from_file(REAL "reference.json"), *files;
	assert_non_null(ref);
	assert_true(json_object_object_get_ex(ref, "files", &files));
	int changes = sqlite3_total_changes(f->s->db), n = 0;
	json_object_object_foreach(files, name, val)
	{
		(void)val;
		char path[512];
		size_t len;
		snprintf(path, sizeof path, REAL "%s", name);
		char *msg = slurp(path, &len);
		struct inbound_result r;
		struct err e;
		err_clear(&e);
		assert_int_equal(inbound_apply(f->s, &f->key, &f->o, msg, len, &r, &e), 0);
		if (r.action != INBOUND_DROPPED)
			fail_msg("%s: %s", name, inbound_action_name(r.action));
		assert_int_equal(r.delivery.id, 0);
		inbound_result_free(&r);
		free(msg);
		n++;
	}
	json_object_put(ref);
	assert_int_equal(n, 632);
	assert_int_equal(sqlite3_total_changes(f->s->db), changes);
}

/* --- failures of the store --------------------------------------------------- */

static char *sample_for(struct fx *f, const char *name, int i)
{
	char path[256];
	size_t len;
	snprintf(path, sizeof path, SAMPLES "%s", name);
	char *raw = slurp(path, &len);
	char *msg = ours(f, raw, f->deliv[i], f->sub[i]);
	free(raw);
	return msg;
}

static void test_failing_lookup_is_an_error(void **state)
{
	struct fx *f = *state;
	char *dsn = sample_for(f, "postfix-dsn-hard.eml", 1);
	struct inbound_result r;
	struct err e;

	/* another process holds the write lock past our busy timeout */
	sqlite3 *other = NULL;
	char *path = xasprintf("%s/matrixd.db", f->dir);
	assert_int_equal(sqlite3_open(path, &other), SQLITE_OK);
	free(path);
	assert_int_equal(sqlite3_exec(other, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_busy_timeout(f->s->db, 50);
	assert_int_equal(apply(f, dsn, &r, &e), -1);
	assert_int_equal(e.kind, ERR_TEMP);
	inbound_result_free(&r);
	f->o.dry_run = true;
	assert_int_equal(apply(f, dsn, &r, &e), -1);
	inbound_result_free(&r);
	f->o.dry_run = false;
	assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(other);
	sqlite3_busy_timeout(f->s->db, STORE_BUSY_MS);
	assert_string_equal(state_of(f, f->deliv[1]), "queued");

	/* a broken schema: the lookup itself fails */
	q_exec(f->s, "ALTER TABLE deliveries RENAME TO deliveries_gone");
	assert_int_equal(apply(f, dsn, &r, &e), -1);
	assert_int_equal(e.kind, ERR_DB);
	assert_non_null(strstr(e.msg, "deliveries"));
	inbound_result_free(&r);
	q_exec(f->s, "ALTER TABLE deliveries_gone RENAME TO deliveries");
	/* statements prepared before the rename are re-prepared by SQLite */
	assert_int_equal(apply_ok(f, dsn, &r), INBOUND_FAILED);
	inbound_result_free(&r);
	free(dsn);
}

/* --- the ordering rule and idempotency ---------------------------------------- */

static const struct ledger_policy policy = {
    .max_attempts = 5, .retry_max_age = 86400, .bounce_threshold = 3};

/* Claims every due delivery; returns the job of delivery id. */
static struct ledger_job claim(struct fx *f, int64_t id, struct ledger_job **jobs, size_t *n)
{
	struct err e;
	size_t cancelled;
	assert_int_equal(ledger_claim(f->s, NOW, 1000, jobs, n, &cancelled, &e), 0);
	for (size_t i = 0; i < *n; i++)
		if ((*jobs)[i].id == id)
			return (*jobs)[i];
	fail_msg("delivery %lld not claimed", (long long)id);
	return (*jobs)[0];
}

static void test_bounce_before_the_reply(void **state)
{
	struct fx *f = *state;
	struct ledger_job *jobs;
	size_t n;
	struct ledger_job j = claim(f, f->deliv[1], &jobs, &n);
	assert_string_equal(state_of(f, f->deliv[1]), "sending");

	/* the DSN first, while the row is 'sending' */
	char *dsn = sample_for(f, "postfix-dsn-hard.eml", 1);
	struct inbound_result r;
	assert_int_equal(apply_ok(f, dsn, &r), INBOUND_FAILED);
	assert_int_equal(r.score, 1);
	inbound_result_free(&r);
	assert_string_equal(state_of(f, f->deliv[1]), "failed");

	/* then the relay's 250: it does not overwrite the bounce */
	struct send_result ok = {.outcome = SEND_OK, .code = 250};
	snprintf(ok.reply, sizeof ok.reply, "250 2.0.0 Ok: queued as Q1");
	enum ledger_state st = LEDGER_QUEUED;
	struct err e;
	assert_int_equal(ledger_record(f->s, &j, &ok, NOW, &policy, &st, &e), 0);
	assert_int_equal(st, LEDGER_FAILED);
	assert_string_equal(state_of(f, f->deliv[1]), "failed");
	char *status = q_text(f->s, "SELECT last_status || ' ' || last_reply FROM deliveries "
	                            "WHERE last_status IS NOT NULL");
	assert_non_null(strstr(status, "5.1.1 bounced: 550 5.1.1"));
	free(status);

	/* the same DSN again, after the reply: counted once */
	assert_int_equal(apply_ok(f, dsn, &r), INBOUND_REPEATED);
	inbound_result_free(&r);
	assert_int_equal(score_of(f, f->sub[1], 1), 1);

	/* the other order: reply recorded, then the DSN, then again */
	struct ledger_job j2 = j;
	for (size_t i = 0; i < n; i++)
		if (jobs[i].id == f->deliv[2])
			j2 = jobs[i];
	assert_int_equal(j2.id, f->deliv[2]);
	assert_int_equal(ledger_record(f->s, &j2, &ok, NOW, &policy, &st, &e), 0);
	assert_int_equal(st, LEDGER_SENT);
	char *dsn2 = sample_for(f, "gmail-dsn-hard.eml", 2);
	assert_int_equal(apply_ok(f, dsn2, &r), INBOUND_FAILED);
	inbound_result_free(&r);
	assert_string_equal(state_of(f, f->deliv[2]), "failed");
	assert_int_equal(apply_ok(f, dsn2, &r), INBOUND_REPEATED);
	inbound_result_free(&r);
	assert_int_equal(score_of(f, f->sub[2], 1), 1);

	/* the relay refusing the recipient is the delivery's bounce too: a
	 * DSN for it later is the same bounce */
	struct ledger_job j3 = j;
	for (size_t i = 0; i < n; i++)
		if (jobs[i].id == f->deliv[3])
			j3 = jobs[i];
	struct send_result no = {.outcome = SEND_PERM, .code = 550, .bounce = true};
	snprintf(no.status, sizeof no.status, "5.1.1");
	snprintf(no.reply, sizeof no.reply, "550 5.1.1 no such user");
	assert_int_equal(ledger_record(f->s, &j3, &no, NOW, &policy, &st, &e), 0);
	assert_int_equal(st, LEDGER_FAILED);
	assert_int_equal(score_of(f, f->sub[3], 1), 1);
	char *dsn3 = sample_for(f, "postfix-dsn-hard.eml", 3);
	assert_int_equal(apply_ok(f, dsn3, &r), INBOUND_REPEATED);
	inbound_result_free(&r);
	assert_int_equal(score_of(f, f->sub[3], 1), 1);

	/* an unsubscribe request and a delay piped twice change nothing more */
	char *unsub = sample_for(f, "unsubscribe-mailto.eml", 4);
	assert_int_equal(apply_ok(f, unsub, &r), INBOUND_UNSUBSCRIBED);
	inbound_result_free(&r);
	assert_int_equal(apply_ok(f, unsub, &r), INBOUND_UNCHANGED);
	inbound_result_free(&r);
	ledger_jobs_free(jobs, n);
	free(unsub);
	free(dsn3);
	free(dsn2);
	free(dsn);
}

/* --- scoring --------------------------------------------------------------------- */

static void test_score_of_the_deliverys_list(void **state)
{
	struct fx *f = *state;
	/* s0 is on matrix and extra; issue 60 went to matrix only */
	int64_t ids[4] = {f->deliv[0], f->deliv0[0], f->deliv0[1], f->deliv0[2]};
	static const char *const names[] = {"postfix-dsn-hard.eml", "gmail-dsn-hard.eml",
	                                    "exim-text-hard.eml", "postfix-expired-hard.eml"};
	enum inbound_action want[] = {INBOUND_FAILED, INBOUND_FAILED, INBOUND_BOUNCED,
	                              INBOUND_FAILED};
	for (int k = 0; k < 4; k++) {
		char path[256];
		size_t len;
		snprintf(path, sizeof path, SAMPLES "%s", names[k]);
		char *raw = slurp(path, &len);
		char *msg = ours(f, raw, ids[k], f->sub[0]);
		struct inbound_result r;
		assert_int_equal(apply_ok(f, msg, &r), want[k]);
		assert_int_equal(r.list_id, 1);
		/* the fourth finds the membership bounced: the delivery fails,
		 * nothing is counted */
		assert_int_equal(r.score, k < 3 ? k + 1 : 0);
		inbound_result_free(&r);
		free(msg);
		free(raw);
	}
	char *m = status_of(f, f->sub[0], 1), *x = status_of(f, f->sub[0], f->list2);
	assert_string_equal(m, "bounced");
	assert_string_equal(x, "confirmed");
	free(m);
	free(x);
	assert_int_equal(score_of(f, f->sub[0], 1), 3);
	assert_int_equal(score_of(f, f->sub[0], f->list2), 0);
}

static void test_refused_is_not_counted(void **state)
{
	struct fx *f = *state;
	char *msg = sample_for(f, "postfix-expired-hard.eml", 5);
	char *st = strstr(msg, "Status: 4.4.1");
	assert_non_null(st);
	memcpy(st, "Status: 4.7.0", 13);
	struct inbound_result r;
	assert_int_equal(apply_ok(f, msg, &r), INBOUND_REFUSED);
	inbound_result_free(&r);
	assert_string_equal(state_of(f, f->deliv[5]), "failed");
	assert_int_equal(score_of(f, f->sub[5], 1), 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events WHERE kind = 'refused'"), 1);
	/* still once per delivery */
	assert_int_equal(apply_ok(f, msg, &r), INBOUND_REPEATED);
	inbound_result_free(&r);
	free(msg);
}

static void test_dry_run_and_no_key(void **state)
{
	struct fx *f = *state;
	char *dsn = sample_for(f, "postfix-dsn-hard.eml", 6);
	int changes = sqlite3_total_changes(f->s->db);
	struct inbound_result r;
	f->o.dry_run = true;
	assert_int_equal(apply_ok(f, dsn, &r), INBOUND_DRY_RUN);
	assert_int_equal(r.delivery.id, f->deliv[6]);
	assert_string_equal(r.delivery.email, "s6@example.net");
	assert_int_equal(r.delivery.issue, 60);
	assert_int_equal(r.delivery.article, 1);
	inbound_result_free(&r);
	f->o.dry_run = false;
	assert_int_equal(sqlite3_total_changes(f->s->db), changes);

	/* no key: nothing can be verified, nothing is found */
	struct err e;
	err_clear(&e);
	assert_int_equal(inbound_apply(f->s, NULL, &f->o, dsn, strlen(dsn), &r, &e), 0);
	assert_int_equal(r.action, INBOUND_DROPPED);
	assert_int_equal(r.delivery.id, 0);
	inbound_result_free(&r);
	/* a token signed by another key names nothing */
	struct token_key other;
	token_key_random(&other);
	assert_int_equal(inbound_apply(f->s, &other, &f->o, dsn, strlen(dsn), &r, &e), 0);
	assert_int_equal(r.action, INBOUND_DROPPED);
	inbound_result_free(&r);
	assert_int_equal(sqlite3_total_changes(f->s->db), changes);
	free(dsn);

	/* over the size limit: dropped, nothing parsed */
	size_t big = BOUNCE_MAX_BYTES + 1;
	char *huge = xmalloc(big);
	memset(huge, 'x', big);
	assert_int_equal(inbound_apply(f->s, &f->key, &f->o, huge, big, &r, &e), 0);
	assert_int_equal(r.action, INBOUND_DROPPED);
	assert_null(r.report);
	inbound_result_free(&r);
	free(huge);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_every_sample, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_real_corpus_changes_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failing_lookup_is_an_error, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bounce_before_the_reply, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_score_of_the_deliverys_list, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused_is_not_counted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dry_run_and_no_key, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
