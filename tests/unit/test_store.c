/*
 * Tests for lib/store.c on real SQLite files in a temp directory: nested
 * transactions (a nested rollback dooms the outer commit), the migrations
 * (a schema 1 store brought forward with its data, a failing migration
 * leaving the store as it was, a newer store refused), and the busy
 * behaviour of BEGIN IMMEDIATE against a second connection holding the
 * write lock (a prompt ERR_TEMP, reads going on meanwhile in WAL mode) and
 * the daemon's write gate (store_set_busy: one wait, then refusals until
 * the retry time).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "store.h"
#include "xmalloc.h"

struct fx {
	char dir[64];
	struct store *s;
};

static int setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof *f);
	memcpy(f->dir, "/tmp/test_store.XXXXXX", 23);
	if (mkdtemp(f->dir) == NULL)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	store_close(f->s);
	const char *names[] = {"matrixd.db", "matrixd.db-wal", "matrixd.db-shm"};
	for (size_t i = 0; i < 3; i++) {
		char *p = xasprintf("%s/%s", f->dir, names[i]);
		unlink(p);
		free(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

static void open_ok(struct fx *f)
{
	struct err e;
	err_clear(&e);
	if (store_open(&f->s, f->dir, &e) < 0)
		fail_msg("%s", e.msg);
}

static int64_t q_int(struct store *s, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int64_t v = -1;
	assert_int_equal(sqlite3_prepare_v2(s->db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* A second connection to the same file, as another process would hold it. */
static sqlite3 *other(const struct fx *f)
{
	sqlite3 *db = NULL;
	char *p = xasprintf("%s/matrixd.db", f->dir);
	assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
	free(p);
	return db;
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_nested_rollback_dooms_the_outer_commit(void **state)
{
	struct fx *f = *state;
	struct err e;
	open_ok(f);
	err_clear(&e);
	assert_int_equal(store_begin(f->s, &e), 0);
	assert_int_equal(store_kv_set(f->s, "outer", "1", &e), 0);
	assert_int_equal(store_begin(f->s, &e), 0); /* a callee's own transaction */
	assert_int_equal(store_kv_set(f->s, "inner", "1", &e), 0);
	store_rollback(f->s);
	assert_int_equal(f->s->depth, 1);
	assert_int_equal(store_commit(f->s, &e), -1);
	assert_non_null(strstr(e.msg, "rolled back"));
	assert_int_equal(f->s->depth, 0);
	/* neither half was written */
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM kv"), 0);
	/* and the doom does not outlive it: the next transaction commits */
	assert_int_equal(store_begin(f->s, &e), 0);
	assert_int_equal(store_kv_set(f->s, "after", "1", &e), 0);
	assert_int_equal(store_commit(f->s, &e), 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM kv"), 1);
	/* a nested commit only counts: the outer one writes */
	assert_int_equal(store_begin(f->s, &e), 0);
	assert_int_equal(store_begin(f->s, &e), 0);
	assert_int_equal(store_kv_set(f->s, "nested", "1", &e), 0);
	assert_int_equal(store_commit(f->s, &e), 0);
	assert_true(sqlite3_get_autocommit(f->s->db) == 0);
	assert_int_equal(store_commit(f->s, &e), 0);
	assert_true(sqlite3_get_autocommit(f->s->db) != 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM kv"), 2);
}

static void test_fresh_store_is_current(void **state)
{
	struct fx *f = *state;
	open_ok(f);
	assert_int_equal(q_int(f->s, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM lists WHERE name = 'matrix'"), 1);
	store_close(f->s);
	f->s = NULL;
	open_ok(f); /* opening again changes nothing */
	assert_int_equal(q_int(f->s, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM lists"), 1);
}

static void test_schema_1_is_brought_forward(void **state)
{
	struct fx *f = *state;
	struct err e;
	err_clear(&e);
	assert_int_equal(store_open_version(&f->s, f->dir, 1, &e), 0);
	assert_int_equal(q_int(f->s, "PRAGMA user_version"), 1);
	/* schema 1: the bounce score per subscriber, a counted bounce marked
	 * by its reply text */
	assert_int_equal(
	    store_exec(f->s,
	               "INSERT INTO subscribers(email, email_key, bounce_score, created_at,"
	               " updated_at) VALUES ('a@example.org', 'a@example.org', 2, 1, 1);"
	               "INSERT INTO memberships(list_id, subscriber_id, status, status_at,"
	               " created_at) VALUES (1, 1, 'confirmed', 1, 1);"
	               "INSERT INTO deliveries(issue_id, part, subscriber_id, list_id, state,"
	               " last_reply, created_at, updated_at) VALUES"
	               " (7, 1, 1, 1, 'failed', 'bounced: 550 5.1.1 no', 1, 5),"
	               " (7, 2, 1, 1, 'failed', '550 5.1.1 no', 1, 6);",
	               &e),
	    0);
	store_close(f->s);
	f->s = NULL;
	open_ok(f);
	assert_int_equal(q_int(f->s, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	assert_int_equal(q_int(f->s, "SELECT bounce_score FROM memberships"), 2);
	assert_int_equal(q_int(f->s, "SELECT bounced_at FROM deliveries WHERE part = 1"), 5);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries WHERE bounced_at IS NULL"),
	                 1);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM pragma_table_info('subscribers')"
	                             " WHERE name = 'bounce_score'"),
	                 0);
}

/* Version 7: every list stays public, no address has had a mail from the
 * web form yet; both columns take values. */
static void test_schema_6_gains_the_web_columns(void **state)
{
	struct fx *f = *state;
	struct err e;
	err_clear(&e);
	assert_int_equal(store_open_version(&f->s, f->dir, 6, &e), 0);
	assert_int_equal(store_exec(f->s,
	                            "INSERT INTO lists(name, created_at) VALUES ('extra', 1);"
	                            "INSERT INTO subscribers(email, email_key, created_at,"
	                            " updated_at) VALUES ('a@example.org', 'a@example.org', 1, 1);",
	                            &e),
	                 0);
	store_close(f->s);
	f->s = NULL;
	open_ok(f);
	assert_int_equal(q_int(f->s, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM lists WHERE private = 0"), 2);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM subscribers WHERE web_mail_at IS NULL"),
	                 1);
	assert_int_equal(store_exec(f->s,
	                            "UPDATE lists SET private = 1 WHERE name = 'extra';"
	                            "UPDATE subscribers SET web_mail_at = 5;",
	                            &e),
	                 0);
	assert_int_equal(q_int(f->s, "SELECT sum(private) FROM lists"), 1);
	assert_int_equal(q_int(f->s, "SELECT web_mail_at FROM subscribers"), 5);
}

static void test_failed_migration_changes_nothing(void **state)
{
	struct fx *f = *state;
	struct err e;
	err_clear(&e);
	assert_int_equal(store_open_version(&f->s, f->dir, 1, &e), 0);
	/* a column in the way of the next migration's ALTER TABLE */
	assert_int_equal(store_exec(f->s,
	                            "ALTER TABLE deliveries ADD COLUMN bounced_at TEXT;"
	                            "INSERT INTO kv VALUES ('k', 'v');",
	                            &e),
	                 0);
	store_close(f->s);
	f->s = NULL;
	assert_int_equal(store_open(&f->s, f->dir, &e), -1);
	assert_null(f->s);
	assert_non_null(strstr(e.msg, "migrate"));
	assert_non_null(strstr(e.msg, "matrixd.db"));
	/* all or nothing: still schema 1, the half-done step rolled back */
	assert_int_equal(store_open_version(&f->s, f->dir, 1, &e), 0);
	assert_int_equal(q_int(f->s, "PRAGMA user_version"), 1);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM pragma_table_info('memberships')"
	                             " WHERE name = 'bounce_score'"),
	                 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM kv"), 1);
}

static void test_newer_schema_is_refused(void **state)
{
	struct fx *f = *state;
	struct err e;
	open_ok(f);
	err_clear(&e);
	assert_int_equal(store_exec(f->s, "PRAGMA user_version = 99", &e), 0);
	store_close(f->s);
	f->s = NULL;
	assert_int_equal(store_open(&f->s, f->dir, &e), -1);
	assert_non_null(strstr(e.msg, "schema version 99 is newer"));
	assert_non_null(strstr(e.msg, "upgrade matrixd"));
	sqlite3 *db = other(f);
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 99);
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void test_begin_immediate_when_busy(void **state)
{
	struct fx *f = *state;
	struct err e;
	open_ok(f);
	err_clear(&e);
	assert_int_equal(store_kv_set(f->s, "k", "before", &e), 0);
	sqlite3 *db = other(f);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "UPDATE kv SET value = 'uncommitted'", NULL, NULL, NULL),
	                 SQLITE_OK);

	store_set_busy(f->s, 200, 0);
	int64_t t = mono_ms();
	assert_int_equal(store_begin(f->s, &e), -1);
	int64_t took = mono_ms() - t;
	assert_int_equal(e.kind, ERR_TEMP); /* "later", not an error of the data */
	assert_non_null(strstr(e.msg, "locked"));
	assert_true(took >= 150 && took < 2000);
	assert_int_equal(f->s->depth, 0); /* nothing half-open is left behind */
	/* a write outside a transaction waits as long, then fails the same way */
	assert_int_equal(store_kv_set(f->s, "k", "mine", &e), -1);
	assert_int_equal(e.kind, ERR_TEMP);
	/* WAL: readers go on and see the last commit */
	char *v = store_kv_get(f->s, "k", &e);
	assert_non_null(v);
	assert_string_equal(v, "before");
	free(v);
	/* opening a current store takes no write lock either */
	struct store *s2 = NULL;
	t = mono_ms();
	assert_int_equal(store_open(&s2, f->dir, &e), 0);
	assert_true(mono_ms() - t < 1000);
	store_close(s2);

	/* the lock released: the same calls go through */
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(store_begin(f->s, &e), 0);
	assert_int_equal(store_kv_set(f->s, "k", "mine", &e), 0);
	assert_int_equal(store_commit(f->s, &e), 0);
	v = store_kv_get(f->s, "k", &e);
	assert_string_equal(v, "mine");
	free(v);
	sqlite3_close(db);
}

static void test_write_gate_after_busy(void **state)
{
	struct fx *f = *state;
	struct err e;
	open_ok(f);
	err_clear(&e);
	store_set_busy(f->s, 100, 400);
	assert_int_equal(store_retry_at(f->s), 0);
	sqlite3 *db = other(f);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	int64_t t = mono_ms();
	assert_int_equal(store_begin(f->s, &e), -1); /* waits timeout_ms once */
	assert_true(mono_ms() - t >= 80);
	assert_int_equal(e.kind, ERR_TEMP);
	int64_t retry = store_retry_at(f->s);
	assert_true(retry >= t + 400 && retry <= mono_ms() + 400);
	/* within retry_ms every write is refused at once, with the reason */
	t = mono_ms();
	err_clear(&e);
	assert_int_equal(store_begin(f->s, &e), -1);
	assert_int_equal(store_kv_set(f->s, "k", "v", &e), -1);
	assert_true(mono_ms() - t < 50);
	assert_int_equal(e.kind, ERR_TEMP);
	assert_non_null(strstr(e.msg, "locked"));
	assert_int_equal(f->s->depth, 0);
	/* reads are not gated */
	err_clear(&e);
	char *v = store_kv_get(f->s, "k", &e);
	assert_null(v);
	assert_int_equal(e.kind, ERR_NONE);
	/* released, and the retry time come: writes go through and the
	 * trouble is over */
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	while (mono_ms() < retry)
		usleep(10000);
	assert_int_equal(store_begin(f->s, &e), 0);
	assert_int_equal(store_kv_set(f->s, "k", "v", &e), 0);
	assert_int_equal(store_commit(f->s, &e), 0);
	assert_int_equal(store_retry_at(f->s), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_nested_rollback_dooms_the_outer_commit, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_fresh_store_is_current, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_schema_1_is_brought_forward, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_schema_6_gains_the_web_columns, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failed_migration_changes_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_newer_schema_is_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_begin_immediate_when_busy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_gate_after_busy, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
