/*
 * Tests for lib/subs.c and lib/subs_csv.c on a real SQLite store in a temp
 * directory: list rules, the subscribe/unsubscribe state machine with its
 * consent records, events and confirmation ledger rows, suppression, the
 * daemon's by-id transitions, show and forget, and CSV import (line
 * numbers through quoted line breaks, CRLF, lone CR and BOM; the batched
 * and the row-by-row paths; atomic, dry run; limits) and export round trips.
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

#include "buf.h"
#include "store.h"
#include "listname.h"
#include "subs.h"
#include "xmalloc.h"

struct fx {
	char dir[64];
	struct store *s;
};

static int setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof *f);
	struct err e;
	memcpy(f->dir, "/tmp/test_subs.XXXXXX", 22);
	if (mkdtemp(f->dir) == NULL)
		return -1;
	setenv("MATRIXD_FAKE_NOW", "1700000000", 1);
	err_clear(&e);
	if (store_open(&f->s, f->dir, &e) < 0) {
		fprintf(stderr, "%s\n", e.msg);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char *cmd;
	store_close(f->s);
	/* the directory holds matrixd.db, -wal, -shm and test CSV files only */
	cmd = xasprintf("%s", f->dir);
	const char *names[] = {"matrixd.db", "matrixd.db-wal", "matrixd.db-shm",
	                       "in.csv",     "out.csv",        "big.csv"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		char *p = xasprintf("%s/%s", f->dir, names[i]);
		unlink(p);
		free(p);
	}
	rmdir(cmd);
	free(cmd);
	free(f);
	return 0;
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

/* The first column of the first row as text ("" for none); caller frees. */
static char *q_text(struct store *s, const char *sql)
{
	sqlite3_stmt *st = NULL;
	char *v;
	assert_int_equal(sqlite3_prepare_v2(s->db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
		v = xstrdup((const char *)sqlite3_column_text(st, 0));
	else
		v = xstrdup("");
	sqlite3_finalize(st);
	return v;
}

static void assert_q(struct store *s, const char *sql, const char *want)
{
	char *v = q_text(s, sql);
	if (strcmp(v, want) != 0)
		fail_msg("%s: got '%s', want '%s'", sql, v, want);
	free(v);
}

static struct subs_result sub(struct store *s, const char *email, const char *list, bool confirm,
                              bool resub, int mode, const char *name, int want_rc)
{
	struct subs_request rq = {.email = email,
	                          .list = list,
	                          .name = name,
	                          .mode = mode,
	                          .confirm = confirm,
	                          .resubscribe = resub,
	                          .via = "cli",
	                          .actor = "cli:tester"};
	struct subs_result r;
	struct err e;
	err_clear(&e);
	int rc = subs_subscribe(s, &rq, &r, &e);
	if (rc != want_rc)
		fail_msg("subscribe %s: rc %d (%s)", email, rc, e.msg);
	return r;
}

/* ---- lists ------------------------------------------------------------ */

static void test_lists(void **state)
{
	struct fx *f = *state;
	struct err e;
	size_t n;
	int64_t removed;

	assert_true(list_name_valid("matrix-en"));
	assert_true(list_name_valid("a"));
	assert_false(list_name_valid(""));
	assert_false(list_name_valid("Matrix"));
	assert_false(list_name_valid("-x"));
	assert_false(list_name_valid("x-"));
	assert_false(list_name_valid("a.b"));
	assert_false(list_name_valid("a b"));

	err_clear(&e);
	assert_int_equal(subs_list_create(f->s, "Bad Name", NULL, NULL, "t", &e), -1);
	assert_int_equal(e.kind, ERR_INPUT);
	assert_int_equal(
	    subs_list_create(f->s, "matrix-en", "Matrix (English)", "quarterly", "t", &e), 0);
	assert_int_equal(subs_list_create(f->s, "matrix-en", NULL, NULL, "t", &e), -1);
	assert_non_null(strstr(e.msg, "exists"));
	assert_int_equal(subs_list_create(f->s, "x", "bad\ntitle", NULL, "t", &e), -1);

	struct subs_list *l = subs_lists(f->s, &n, &e);
	assert_non_null(l);
	assert_int_equal(n, 2);
	assert_string_equal(l[0].name, "matrix");
	assert_string_equal(l[1].name, "matrix-en");
	assert_string_equal(l[1].title, "Matrix (English)");
	assert_string_equal(l[1].description, "quarterly");
	assert_false(l[0].is_private || l[1].is_private);
	subs_lists_free(l, n);

	/* a private list: listed as such, left out of the public lists */
	assert_int_equal(subs_list_create(f->s, "aaa", NULL, NULL, "t", &e), 0);
	bool changed = false;
	assert_int_equal(subs_list_set_private(f->s, "matrix-en", true, "t", &changed, &e), 0);
	assert_true(changed);
	assert_int_equal(subs_list_set_private(f->s, "matrix-en", true, "t", &changed, &e), 0);
	assert_false(changed); /* nothing to do, no event */
	assert_int_equal(subs_list_set_private(f->s, "nosuch", true, "t", &changed, &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);
	l = subs_lists(f->s, &n, &e);
	assert_int_equal(n, 3);
	assert_true(l[2].is_private && !l[0].is_private && !l[1].is_private);
	subs_lists_free(l, n);
	l = subs_public_lists(f->s, &n, &e);
	assert_int_equal(n, 2); /* the default list first */
	assert_string_equal(l[0].name, "matrix");
	assert_string_equal(l[1].name, "aaa");
	subs_lists_free(l, n);
	assert_int_equal(subs_list_set_private(f->s, "matrix-en", false, "t", &changed, &e), 0);
	assert_true(changed);
	l = subs_public_lists(f->s, &n, &e);
	assert_int_equal(n, 3);
	subs_lists_free(l, n);
	assert_int_equal(subs_list_delete(f->s, "aaa", false, "t", &removed, &e), 0);

	/* the default list stays; a list with members needs force */
	assert_int_equal(subs_list_delete(f->s, "matrix", true, "t", &removed, &e), -1);
	assert_non_null(strstr(e.msg, "default"));
	sub(f->s, "a@example.org", "matrix-en", false, false, -1, NULL, 0);
	sub(f->s, "b@example.org", "matrix-en", true, false, -1, NULL, 0);
	assert_int_equal(subs_list_delete(f->s, "matrix-en", false, "t", &removed, &e), -1);
	assert_non_null(strstr(e.msg, "--force"));
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries"), 1);
	assert_int_equal(subs_list_delete(f->s, "matrix-en", true, "t", &removed, &e), 0);
	assert_int_equal(removed, 2);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM memberships"), 0);
	/* the queued confirmation for the list went with it; subscribers stay */
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries"), 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM subscribers"), 2);
	assert_int_equal(subs_list_delete(f->s, "matrix-en", true, "t", &removed, &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);
	assert_q(f->s, "SELECT group_concat(kind) FROM events WHERE subscriber_id IS NULL",
	         "list-create,list-create,list-private,list-public,list-delete,list-delete");
}

/* ---- subscribe ---------------------------------------------------------- */

static void test_subscribe_new_and_twice(void **state)
{
	struct fx *f = *state;
	struct subs_result r = sub(f->s, "Alice@Example.ORG", NULL, false, false, -1, "爱丽丝", 0);
	assert_int_equal(r.outcome, SUBS_ADDED);
	assert_int_equal(r.status, SUBS_CONFIRMED);
	assert_int_equal(r.mode, SUBS_ARTICLE);
	assert_false(r.mail_queued);
	assert_q(f->s, "SELECT email || '|' || email_key || '|' || name FROM subscribers",
	         "Alice@Example.ORG|Alice@example.org|爱丽丝");
	assert_q(f->s,
	         "SELECT status || '|' || mode || '|' || consent_at || '|' || consent_via || '|' ||"
	         " consent_by || '|' || status_at FROM memberships",
	         "confirmed|article|1700000000|cli|cli:tester|1700000000");
	assert_q(f->s, "SELECT kind || '|' || via || '|' || actor || '|' || detail FROM events",
	         "subscribe|cli|cli:tester|confirmed, article");

	/* twice, later, with the domain in another case: nothing changes */
	setenv("MATRIXD_FAKE_NOW", "1700000500", 1);
	r = sub(f->s, "Alice@example.org", NULL, false, false, -1, NULL, 0);
	assert_int_equal(r.outcome, SUBS_UNCHANGED);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM subscribers"), 1);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events"), 1);
	assert_int_equal(q_int(f->s, "SELECT status_at FROM memberships"), 1700000000);
	assert_int_equal(q_int(f->s, "SELECT consent_at FROM memberships"), 1700000000);
	/* --confirm on a confirmed address: still nothing (never back to pending) */
	r = sub(f->s, "Alice@example.org", NULL, true, false, -1, NULL, 0);
	assert_int_equal(r.outcome, SUBS_UNCHANGED);
	assert_int_equal(r.status, SUBS_CONFIRMED);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries"), 0);

	/* an explicit, different mode or name is an update */
	r = sub(f->s, "Alice@example.org", NULL, false, false, SUBS_DIGEST, NULL, 0);
	assert_int_equal(r.outcome, SUBS_UPDATED);
	assert_q(f->s, "SELECT mode FROM memberships", "digest");
	r = sub(f->s, "Alice@example.org", NULL, false, false, -1, "Alice", 0);
	assert_int_equal(r.outcome, SUBS_UPDATED);
	assert_q(f->s, "SELECT name FROM subscribers", "Alice");

	/* the local part is case-sensitive: another subscriber */
	r = sub(f->s, "alice@example.org", NULL, false, false, -1, NULL, 0);
	assert_int_equal(r.outcome, SUBS_ADDED);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM subscribers"), 2);
}

static void test_subscribe_errors(void **state)
{
	struct fx *f = *state;
	struct subs_request rq = {.email = "a@example.org", .mode = -1, .list = "nope"};
	struct subs_result r;
	struct err e;
	err_clear(&e);
	assert_int_equal(subs_subscribe(f->s, &rq, &r, &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);
	assert_non_null(strstr(e.msg, "nope"));
	rq.list = NULL;
	rq.email = "a@b@example.org";
	assert_int_equal(subs_subscribe(f->s, &rq, &r, &e), -1);
	assert_int_equal(e.kind, ERR_INPUT);
	rq.email = "a@example.org";
	rq.name = "two\nlines";
	assert_int_equal(subs_subscribe(f->s, &rq, &r, &e), -1);
	assert_non_null(strstr(e.msg, "control character"));
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM subscribers"), 0);
}

static void test_confirm_flow(void **state)
{
	struct fx *f = *state;
	struct subs_result r = sub(f->s, "p@example.org", NULL, true, false, SUBS_DIGEST, NULL, 0);
	assert_int_equal(r.outcome, SUBS_ADDED);
	assert_int_equal(r.status, SUBS_PENDING);
	assert_true(r.mail_queued);
	assert_q(f->s,
	         "SELECT issue_id || '|' || part || '|' || list_id || '|' || state || '|' ||"
	         " attempts || '|' || next_attempt FROM deliveries",
	         "0|1|1|queued|0|1700000000");

	/* sent, then --confirm again: the mail is queued again */
	assert_int_equal(sqlite3_exec(f->s->db, "UPDATE deliveries SET state='sent', attempts=1",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	r = sub(f->s, "p@example.org", NULL, true, false, -1, NULL, 0);
	assert_int_equal(r.outcome, SUBS_UNCHANGED);
	assert_true(r.mail_queued);
	assert_q(f->s, "SELECT state || attempts FROM deliveries", "queued0");
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries"), 1);
	/* but never while a sender holds it */
	assert_int_equal(sqlite3_exec(f->s->db, "UPDATE deliveries SET state='sending', attempts=1",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	r = sub(f->s, "p@example.org", NULL, true, false, -1, NULL, 0);
	assert_false(r.mail_queued);
	assert_q(f->s, "SELECT state || attempts FROM deliveries", "sending1");

	/* an admin subscribing without --confirm vouches: confirmed */
	r = sub(f->s, "p@example.org", NULL, false, false, -1, NULL, 0);
	assert_int_equal(r.outcome, SUBS_UPDATED);
	assert_int_equal(r.prev_status, SUBS_PENDING);
	assert_int_equal(r.status, SUBS_CONFIRMED);
	assert_q(f->s, "SELECT group_concat(kind) FROM events", "subscribe,confirm");

	/* the confirmation link: only pending → confirmed */
	r = sub(f->s, "q@example.org", NULL, true, false, -1, NULL, 0);
	bool changed;
	struct err e;
	err_clear(&e);
	assert_int_equal(
	    subs_confirm_id(f->s, r.subscriber_id, r.list_id, "confirm-link", "http", &changed, &e),
	    0);
	assert_true(changed);
	assert_q(f->s,
	         "SELECT status || '|' || consent_via || '|' || consent_by FROM memberships m JOIN"
	         " subscribers s ON s.id = m.subscriber_id WHERE s.email = 'q@example.org'",
	         "confirmed|confirm-link|http");
	assert_int_equal(subs_unsubscribe_id(f->s, r.subscriber_id, r.list_id, "one-click", "http",
	                                     &changed, &e),
	                 0);
	assert_true(changed);
	/* an old confirmation link does not lift a later unsubscribe */
	assert_int_equal(
	    subs_confirm_id(f->s, r.subscriber_id, r.list_id, "confirm-link", "http", &changed, &e),
	    0);
	assert_false(changed);
	assert_int_equal(
	    subs_confirm_id(f->s, r.subscriber_id, 99, "confirm-link", "http", &changed, &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);
}

static void test_suppression(void **state)
{
	struct fx *f = *state;
	struct subs_result r;
	struct err e;
	err_clear(&e);
	sub(f->s, "u@example.org", NULL, false, false, -1, "U", 0);
	setenv("MATRIXD_FAKE_NOW", "1700000100", 1);
	assert_int_equal(subs_unsubscribe(f->s, "u@example.org", NULL, "cli", "cli:tester", &r, &e),
	                 0);
	assert_int_equal(r.outcome, SUBS_UPDATED);
	assert_int_equal(r.prev_status, SUBS_CONFIRMED);
	/* the consent record of the opt-in stays for the history */
	assert_q(f->s, "SELECT status || '|' || status_at || '|' || consent_at FROM memberships",
	         "unsubscribed|1700000100|1700000000");
	assert_int_equal(subs_unsubscribe(f->s, "u@example.org", NULL, "cli", "cli:tester", &r, &e),
	                 0);
	assert_int_equal(r.outcome, SUBS_UNCHANGED);

	/* subscribe on a suppression record: refused, nothing written */
	setenv("MATRIXD_FAKE_NOW", "1700000200", 1);
	r = sub(f->s, "u@example.org", NULL, false, false, -1, "New Name", 0);
	assert_int_equal(r.outcome, SUBS_SUPPRESSED);
	assert_int_equal(r.status, SUBS_UNSUBSCRIBED);
	assert_int_equal(r.status_at, 1700000100);
	assert_q(f->s, "SELECT name FROM subscribers", "U");
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events"), 2);

	r = sub(f->s, "u@example.org", NULL, false, true, -1, NULL, 0);
	assert_int_equal(r.outcome, SUBS_UPDATED);
	assert_int_equal(r.status, SUBS_CONFIRMED);
	assert_q(f->s, "SELECT status || '|' || consent_at FROM memberships",
	         "confirmed|1700000200");
	assert_q(f->s, "SELECT group_concat(kind) FROM events",
	         "subscribe,unsubscribe,resubscribe");

	/* bounced: a suppression too; resubscribe resets the bounce score */
	bool changed;
	assert_int_equal(
	    sqlite3_exec(f->s->db, "UPDATE memberships SET bounce_score = 3", NULL, NULL, NULL),
	    SQLITE_OK);
	assert_int_equal(
	    subs_bounce_id(f->s, r.subscriber_id, r.list_id, "550 5.1.1", &changed, &e), 0);
	assert_true(changed);
	r = sub(f->s, "u@example.org", NULL, true, false, -1, NULL, 0);
	assert_int_equal(r.outcome, SUBS_SUPPRESSED);
	assert_int_equal(r.status, SUBS_BOUNCED);
	r = sub(f->s, "u@example.org", NULL, true, true, -1, NULL, 0);
	assert_int_equal(r.status, SUBS_PENDING);
	assert_true(r.mail_queued);
	assert_int_equal(q_int(f->s, "SELECT bounce_score FROM memberships"), 0);

	/* unsubscribe of an address not on the list */
	assert_int_equal(subs_unsubscribe(f->s, "U@example.org", NULL, "cli", "t", &r, &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);
	assert_non_null(strstr(e.msg, "case-sensitive")); /* names u@example.org */
}

static int collect(const struct subs_row *r, void *arg)
{
	struct buf *b = arg;
	buf_printf(b, "%s:%s:%s:%s;", r->list, r->email, subs_status_name(r->status),
	           subs_mode_name(r->mode));
	return 0;
}

static void test_each_show_forget(void **state)
{
	struct fx *f = *state;
	struct err e;
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	err_clear(&e);
	assert_int_equal(subs_list_create(f->s, "zeta", NULL, NULL, "t", &e), 0);
	sub(f->s, "b@example.org", NULL, false, false, SUBS_DIGEST, NULL, 0);
	sub(f->s, "a@example.org", NULL, true, false, -1, NULL, 0);
	sub(f->s, "b@example.org", "zeta", false, false, -1, NULL, 0);
	assert_int_equal(subs_each(f->s, NULL, -1, collect, &b, &e), 0);
	assert_string_equal(buf_str(&b), "matrix:b@example.org:confirmed:digest;"
	                                 "matrix:a@example.org:pending:article;"
	                                 "zeta:b@example.org:confirmed:article;");
	buf_reset(&b);
	assert_int_equal(subs_each(f->s, "matrix", SUBS_PENDING, collect, &b, &e), 0);
	assert_string_equal(buf_str(&b), "matrix:a@example.org:pending:article;");
	assert_int_equal(subs_each(f->s, "nope", -1, collect, &b, &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);
	buf_free(&b);

	struct subs_info *i = subs_show(f->s, "b@EXAMPLE.org", &e);
	assert_non_null(i);
	assert_string_equal(i->email, "b@example.org");
	assert_int_equal(i->nmemberships, 2);
	assert_string_equal(i->memberships[0].list, "matrix");
	assert_string_equal(i->memberships[0].consent_via, "cli");
	assert_string_equal(i->memberships[0].consent_by, "cli:tester");
	assert_int_equal(i->memberships[0].consent_at, 1700000000);
	assert_int_equal(i->nevents, 2);
	assert_string_equal(i->events[1].list, "zeta");
	subs_info_free(i);
	i = subs_show(f->s, "a@example.org", &e);
	assert_int_equal(i->deliveries.n[LEDGER_QUEUED], 1); /* the queued confirmation */
	subs_info_free(i);
	assert_null(subs_show(f->s, "nobody@example.org", &e));
	assert_int_equal(e.kind, ERR_NOTFOUND);

	struct subs_forgotten fg;
	assert_int_equal(subs_forget(f->s, "a@example.org", "cli:tester", &fg, &e), 0);
	assert_int_equal(fg.memberships, 1);
	assert_int_equal(fg.events, 1);
	assert_int_equal(fg.deliveries, 1);
	assert_true(fg.wal_truncated);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM subscribers WHERE email_key LIKE 'a@%'"),
	                 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries"), 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events WHERE kind = 'forget'"
	                             " AND detail = '' AND subscriber_id IS NULL"),
	                 1);
	assert_int_equal(subs_forget(f->s, "a@example.org", "t", &fg, &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);
}

/* ---- import --------------------------------------------------------- */

struct rej {
	struct buf lines; /* "LINE;" per rejected row */
	struct buf msgs;
};

static void on_reject(void *arg, int line, const char *msg)
{
	struct rej *r = arg;
	buf_printf(&r->lines, "%d;", line);
	buf_printf(&r->msgs, "%s\n", msg);
}

static char *write_file(struct fx *f, const char *name, const char *data, size_t n)
{
	char *p = xasprintf("%s/%s", f->dir, name);
	FILE *fp = fopen(p, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(data, 1, n, fp), n);
	fclose(fp);
	return p;
}

static int import_str(struct fx *f, const char *csv, size_t n, struct subs_import_opts *o,
                      struct subs_import_stats *st, struct rej *rj, struct err *e)
{
	char *p = write_file(f, "in.csv", csv, n);
	buf_init(&rj->lines, BUF_NOLIMIT);
	buf_init(&rj->msgs, BUF_NOLIMIT);
	o->reject = on_reject;
	o->arg = rj;
	if (o->actor == NULL)
		o->actor = "cli:tester";
	err_clear(e);
	int rc = subs_import(f->s, p, o, st, e);
	free(p);
	return rc;
}

static void rej_free(struct rej *rj)
{
	buf_free(&rj->lines);
	buf_free(&rj->msgs);
}

static void test_import_lines(void **state)
{
	struct fx *f = *state;
	struct subs_import_opts o = {0};
	struct subs_import_stats st;
	struct rej rj;
	struct err e;
	/* BOM, CRLF, a quoted CRLF, blank lines, a lone CR, a bad row after
	 * each, a quote error, and an unclosed quote at the end */
	static const char csv[] = "\xef\xbb\xbf"
	                          "Name,EMAIL,city,Mode\r\n"                /* 1 */
	                          "\"Wang, Li\",wang@example.org,\"Bei\r\n" /* 2 */
	                          "jing\",digest\r\n"                       /* 3 */
	                          "\r\n"                                    /* 4 */
	                          "bad,not-an-address,x,\r\n"               /* 5 */
	                          "\"multi\nline\nname\",m@example.org,,\n" /* 6-8 */
	                          "  \n"                                    /* 9 */
	                          "ok,ok@example.org,,article\r"            /* 10 (lone CR) */
	                          "cr,cr@example.org,,weekly\r\n"           /* 11 */
	                          "q,q\"x@example.org,,\n"                  /* 12 */
	                          "z,z@example.org,,\n"                     /* 13 */
	                          "few,fields@example.org\n"                /* 14 */
	                          "u,\"unclosed@example.org,,\n"            /* 15 */
	                          "v,v@example.org,,\n";                    /* 16 */
	int rc = import_str(f, csv, sizeof csv - 1, &o, &st, &rj, &e);
	assert_int_equal(rc, 0);
	assert_string_equal(buf_str(&rj.lines), "5;6;11;12;14;15;");
	assert_non_null(strstr(buf_str(&rj.msgs), "/in.csv:5: invalid address 'not-an-address'"));
	assert_non_null(strstr(buf_str(&rj.msgs), ":6: the name contains a control character"));
	assert_non_null(strstr(buf_str(&rj.msgs), ":11: mode must be 'article' or 'digest'"));
	assert_non_null(strstr(buf_str(&rj.msgs), ":12: bad quoting"));
	assert_non_null(strstr(buf_str(&rj.msgs), ":14: 2 fields, but the header has 4 columns"));
	assert_non_null(strstr(buf_str(&rj.msgs), ":15: a quoted field is not closed"));
	assert_int_equal(st.rows, 9);
	assert_int_equal(st.added, 3);
	assert_int_equal(st.rejected, 6);
	assert_q(f->s,
	         "SELECT group_concat(email, ' ') FROM (SELECT email FROM subscribers"
	         " ORDER BY id)",
	         "wang@example.org ok@example.org z@example.org");
	assert_q(f->s, "SELECT name || '|' || attrs FROM subscribers WHERE id = 1",
	         "Wang, Li|{\"city\":\"Bei\\r\\njing\"}");
	assert_q(f->s, "SELECT mode FROM memberships WHERE subscriber_id = 1", "digest");
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM memberships WHERE consent_via = 'import'"
	                             " AND consent_by LIKE 'import:/tmp/test_subs.%/in.csv'"),
	                 3);
	rej_free(&rj);
}

static void test_import_header_errors(void **state)
{
	struct fx *f = *state;
	struct subs_import_opts o = {0};
	struct subs_import_stats st;
	struct rej rj;
	struct err e;
	assert_int_equal(import_str(f, "name,mode\na,article\n", 20, &o, &st, &rj, &e), -1);
	assert_non_null(strstr(e.msg, "in.csv:1: the header has no 'email' column"));
	rej_free(&rj);
	assert_int_equal(import_str(f, "email,Email\n", 12, &o, &st, &rj, &e), -1);
	assert_non_null(strstr(e.msg, "appears twice"));
	rej_free(&rj);
	assert_int_equal(import_str(f, "\n\n", 2, &o, &st, &rj, &e), -1);
	assert_non_null(strstr(e.msg, "empty"));
	rej_free(&rj);
	assert_int_equal(import_str(f, "email,\n", 7, &o, &st, &rj, &e), -1);
	assert_non_null(strstr(e.msg, "column 2 of the header has no name"));
	rej_free(&rj);
	assert_int_equal(import_str(f, "email,n\xff\n", 9, &o, &st, &rj, &e), -1);
	assert_non_null(strstr(e.msg, "UTF-8"));
	rej_free(&rj);
	/* a header alone is a valid, empty import */
	assert_int_equal(import_str(f, "email", 5, &o, &st, &rj, &e), 0);
	assert_int_equal(st.rows, 0);
	rej_free(&rj);
	o.list = "nope";
	assert_int_equal(import_str(f, "email\n", 6, &o, &st, &rj, &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);
	rej_free(&rj);
}

static void test_import_bad_bytes(void **state)
{
	struct fx *f = *state;
	struct subs_import_opts o = {0};
	struct subs_import_stats st;
	struct rej rj;
	struct err e;
	static const char csv[] = "email,name\n"
	                          "a@example.org,caf\xe9\n" /* Latin-1 */
	                          "b@example.org,ok\n"
	                          "c@exa\0mple.org,nul\n";
	assert_int_equal(import_str(f, csv, sizeof csv - 1, &o, &st, &rj, &e), 0);
	assert_string_equal(buf_str(&rj.lines), "2;4;");
	assert_non_null(strstr(buf_str(&rj.msgs), "column 'name' is not valid UTF-8"));
	assert_non_null(strstr(buf_str(&rj.msgs), "column 'email' contains a NUL byte"));
	assert_int_equal(st.added, 1);
	rej_free(&rj);
}

static void test_import_field_cap(void **state)
{
	struct fx *f = *state;
	struct subs_import_opts o = {0};
	struct subs_import_stats st;
	struct rej rj;
	struct err e;
	/* an unclosed quote early in a large file: stop, never slurp the file */
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	buf_adds(&b, "email,name\nfirst@example.org,ok\nx@example.org,\"open\n");
	while (b.len < SUBS_CSV_FIELD_MAX + 100000)
		buf_adds(&b, "more@example.org,filler text for the runaway field\n");
	assert_int_equal(import_str(f, b.data, b.len, &o, &st, &rj, &e), -1);
	assert_non_null(strstr(e.msg, "in.csv:3: a field is longer than"));
	/* the good row before it was kept */
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM subscribers"), 1);
	assert_int_equal(st.added, 1);
	buf_free(&b);
	rej_free(&rj);
}

/* n generated rows "userI@example.org" (I from first), LF line ends. */
static void gen(struct buf *b, int first, int n, const char *extra)
{
	for (int i = first; i < first + n; i++)
		buf_printf(b, "user%d@example.org,User %d,%s%s\n", i, i,
		           i % 3 ? "article" : "digest", extra ? extra : "");
}

static void test_import_batches(void **state)
{
	struct fx *f = *state;
	struct subs_import_opts o = {.chunk = 700};
	struct subs_import_stats st;
	struct rej rj;
	struct err e;
	struct buf b;
	struct subs_result r;
	buf_init(&b, BUF_NOLIMIT);

	/* known addresses of every kind before the import */
	sub(f->s, "user5@example.org", NULL, false, false, -1, "Old", 0);
	sub(f->s, "user600@example.org", NULL, false, false, -1, NULL, 0);
	err_clear(&e);
	assert_int_equal(subs_unsubscribe(f->s, "user600@example.org", NULL, "cli", "t", &r, &e),
	                 0);
	sub(f->s, "user700@example.org", NULL, true, false, -1, NULL, 0);

	/* 2000 rows (several batches of 256, a partial one, chunks of 700),
	 * with a duplicate inside one batch and one across batches */
	buf_adds(&b, "email,name,mode\n");
	gen(&b, 0, 2000, NULL);
	buf_adds(&b, "user10@example.org,User Ten,digest\n");
	buf_adds(&b, "USER11@example.org,Other Case,\n");
	assert_int_equal(import_str(f, b.data, b.len, &o, &st, &rj, &e), 0);
	assert_int_equal(st.rows, 2002);
	assert_int_equal(st.rejected, 0);
	assert_int_equal(st.skipped, 1);  /* user600: unsubscribed */
	assert_int_equal(st.updated, 3);  /* user5 name, user700 confirmed, user10 again */
	assert_int_equal(st.added, 1998); /* 2000 - 3 known + USER11 */
	assert_int_equal(st.unchanged, 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM subscribers"), 2001);
	assert_q(f->s, "SELECT name FROM subscribers WHERE email = 'user5@example.org'", "User 5");
	assert_q(f->s,
	         "SELECT status FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id"
	         " WHERE s.email = 'user600@example.org'",
	         "unsubscribed");
	assert_q(f->s,
	         "SELECT status || '|' || consent_via FROM memberships m JOIN subscribers s ON"
	         " s.id = m.subscriber_id WHERE s.email = 'user700@example.org'",
	         "confirmed|import");
	/* the later row for user10 won */
	assert_q(f->s,
	         "SELECT name || '|' || mode FROM memberships m JOIN subscribers s ON"
	         " s.id = m.subscriber_id WHERE s.email = 'user10@example.org'",
	         "User Ten|digest");
	/* ids follow the file order, batch or not */
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM subscribers a JOIN subscribers b ON"
	                             " b.id = a.id + 1 WHERE a.id > 3 AND b.email GLOB 'user*'"
	                             " AND a.email GLOB 'user*' AND CAST(substr(b.email, 5) AS INT)"
	                             " < CAST(substr(a.email, 5) AS INT)"),
	                 0);
	/* one event for the run, plus one per status change */
	assert_q(f->s, "SELECT group_concat(kind) FROM events WHERE subscriber_id IS NULL",
	         "import");
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events WHERE via = 'import'"), 2);
	rej_free(&rj);

	/* again: unchanged but for user10, set and reset by its two rows; with
	 * --resubscribe user600 comes back */
	assert_int_equal(import_str(f, b.data, b.len, &o, &st, &rj, &e), 0);
	assert_int_equal(st.unchanged, 1999);
	assert_int_equal(st.updated, 2);
	assert_int_equal(st.skipped, 1);
	rej_free(&rj);
	o.resubscribe = true;
	assert_int_equal(import_str(f, b.data, b.len, &o, &st, &rj, &e), 0);
	assert_int_equal(st.skipped, 0);
	assert_int_equal(st.updated, 3);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM memberships WHERE status='confirmed'"),
	                 2001);
	buf_free(&b);
	rej_free(&rj);
}

static void test_import_status_attrs(void **state)
{
	struct fx *f = *state;
	struct subs_import_opts o = {0};
	struct subs_import_stats st;
	struct rej rj;
	struct err e;
	static const char one[] = "email,status,city,team\n"
	                          "a@example.org,,Beijing,\n"
	                          "b@example.org,unsubscribed,,x\n"
	                          "c@example.org,pending,,\n"
	                          "d@example.org,maybe,,\n";
	assert_int_equal(import_str(f, one, sizeof one - 1, &o, &st, &rj, &e), 0);
	assert_string_equal(buf_str(&rj.lines), "5;");
	assert_int_equal(st.added, 3);
	assert_q(f->s,
	         "SELECT group_concat(status) FROM (SELECT status FROM memberships"
	         " ORDER BY subscriber_id)",
	         "confirmed,unsubscribed,pending");
	/* a suppression record imported as such carries no consent */
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM memberships WHERE consent_at IS NULL"),
	                 1);
	/* import never queues mail */
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries"), 0);
	rej_free(&rj);

	/* attributes merge; an empty cell leaves one alone; status moves to a
	 * suppression freely, never out of one */
	static const char two[] = "email,city,team,status\n"
	                          "a@example.org,,red,unsubscribed\n"
	                          "b@example.org,Paris,,confirmed\n";
	assert_int_equal(import_str(f, two, sizeof two - 1, &o, &st, &rj, &e), 0);
	assert_int_equal(st.updated, 1);
	assert_int_equal(st.skipped, 1);
	assert_q(f->s, "SELECT attrs FROM subscribers WHERE email = 'a@example.org'",
	         "{\"city\":\"Beijing\",\"team\":\"red\"}");
	assert_q(f->s, "SELECT attrs FROM subscribers WHERE email = 'b@example.org'",
	         "{\"team\":\"x\"}");
	assert_q(f->s, "SELECT status FROM memberships WHERE subscriber_id = 1", "unsubscribed");
	assert_q(f->s, "SELECT kind FROM events WHERE subscriber_id = 1", "unsubscribe");
	rej_free(&rj);
}

static void test_import_atomic_dry(void **state)
{
	struct fx *f = *state;
	struct subs_import_opts o = {.atomic = true};
	struct subs_import_stats st;
	struct rej rj;
	struct err e;
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	buf_adds(&b, "email,name,mode\n");
	gen(&b, 0, 600, NULL);
	buf_adds(&b, "broken,x,article\n");
	gen(&b, 600, 10, NULL);

	assert_int_equal(import_str(f, b.data, b.len, &o, &st, &rj, &e), -1);
	assert_non_null(strstr(e.msg, "nothing was imported"));
	assert_string_equal(buf_str(&rj.lines), "602;");
	assert_int_equal(st.added, 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM subscribers"), 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events"), 0);
	rej_free(&rj);

	o.atomic = false;
	o.dry_run = true;
	assert_int_equal(import_str(f, b.data, b.len, &o, &st, &rj, &e), 0);
	assert_int_equal(st.added, 610);
	assert_int_equal(st.rejected, 1);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM subscribers"), 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events"), 0);
	rej_free(&rj);

	/* a dry run counts a repeated address as an update, like the import */
	buf_adds(&b, "user1@example.org,Again,\n");
	assert_int_equal(import_str(f, b.data, b.len, &o, &st, &rj, &e), 0);
	assert_int_equal(st.added, 610);
	assert_int_equal(st.updated, 1);
	rej_free(&rj);

	o.dry_run = false;
	o.atomic = true;
	buf_reset(&b);
	buf_adds(&b, "email\n");
	gen(&b, 0, 300, NULL);
	assert_int_equal(import_str(f, b.data, b.len, &o, &st, &rj, &e), -1); /* 2 fields */
	rej_free(&rj);
	buf_reset(&b);
	buf_adds(&b, "email,name,mode\n");
	gen(&b, 0, 300, NULL);
	assert_int_equal(import_str(f, b.data, b.len, &o, &st, &rj, &e), 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM subscribers"), 300);
	buf_free(&b);
	rej_free(&rj);
}

static char *export_str(struct store *s, const char *list)
{
	char *data = NULL;
	size_t n = 0;
	FILE *m = open_memstream(&data, &n);
	struct err e;
	err_clear(&e);
	if (subs_export(s, list, m, NULL, &e) < 0)
		fail_msg("export: %s", e.msg);
	fclose(m);
	return data;
}

static void test_export_round_trip(void **state)
{
	struct fx *f = *state;
	struct subs_import_opts o = {0};
	struct subs_import_stats st;
	struct rej rj;
	struct err e;
	struct subs_result r;
	static const char csv[] =
	    "email,name,mode,city,note\n"
	    "\"a@example.org\",\"Wang, \"\"Li\"\"\",digest,北京,\"two\r\nlines\"\n"
	    "b@Example.org,  padded  ,,,\n"
	    "\"c@example.org\",\"  spaces kept  \",article,,\"a,b\"\n";
	assert_int_equal(import_str(f, csv, sizeof csv - 1, &o, &st, &rj, &e), 0);
	rej_free(&rj);
	sub(f->s, "d@example.org", NULL, true, false, -1, "张三", 0);
	sub(f->s, "e@example.org", NULL, false, false, -1, NULL, 0);
	assert_int_equal(subs_unsubscribe(f->s, "e@example.org", NULL, "cli", "t", &r, &e), 0);

	char *one = export_str(f->s, NULL);
	assert_string_equal(one,
	                    "\"email\",\"name\",\"mode\",\"status\",\"city\",\"note\"\r\n"
	                    "\"a@example.org\",\"Wang, \"\"Li\"\"\",\"digest\",\"confirmed\","
	                    "\"北京\",\"two\r\nlines\"\r\n"
	                    "\"b@Example.org\",\"padded\",\"article\",\"confirmed\",\"\",\"\"\r\n"
	                    "\"c@example.org\",\"  spaces kept  \",\"article\",\"confirmed\",\"\","
	                    "\"a,b\"\r\n"
	                    "\"d@example.org\",\"张三\",\"article\",\"pending\",\"\",\"\"\r\n"
	                    "\"e@example.org\",\"\",\"article\",\"unsubscribed\",\"\",\"\"\r\n");

	/* into a fresh store, then out again: byte for byte */
	char dir2[64];
	struct store *s2 = NULL;
	memcpy(dir2, "/tmp/test_subs2.XXXXXX", 23);
	assert_non_null(mkdtemp(dir2));
	assert_int_equal(store_open(&s2, dir2, &e), 0);
	char *p = write_file(f, "out.csv", one, strlen(one));
	o = (struct subs_import_opts){0};
	assert_int_equal(subs_import(s2, p, &o, &st, &e), 0);
	assert_int_equal(st.added, 5);
	char *two = export_str(s2, NULL);
	assert_string_equal(one, two);
	store_close(s2);
	const char *names[] = {"matrixd.db", "matrixd.db-wal", "matrixd.db-shm"};
	for (size_t i = 0; i < 3; i++) {
		char *q = xasprintf("%s/%s", dir2, names[i]);
		unlink(q);
		free(q);
	}
	rmdir(dir2);
	free(p);
	free(one);
	free(two);

	/* an empty list exports the header only */
	assert_int_equal(subs_list_create(f->s, "empty", NULL, NULL, "t", &e), 0);
	char *h = export_str(f->s, "empty");
	assert_string_equal(h, "\"email\",\"name\",\"mode\",\"status\"\r\n");
	free(h);
}

/*
 * One transition rule: a bounced membership resubscribed by an admin and
 * one resubscribed by an import end up alike (status, its time, consent
 * renewed, bounce score reset, the subscriber's updated_at, the event's
 * kind and detail); only how and by whom differ.
 */
static void test_one_transition(void **state)
{
	struct fx *f = *state;
	struct subs_import_opts o = {.resubscribe = true};
	struct subs_import_stats st;
	struct rej rj;
	struct err e;
	sub(f->s, "a@example.org", NULL, false, false, -1, NULL, 0);
	sub(f->s, "b@example.org", NULL, false, false, -1, NULL, 0);
	assert_int_equal(subs_bounce_id(f->s, 1, 1, "3 hard bounces", NULL, &e), 0);
	assert_int_equal(subs_bounce_id(f->s, 2, 1, "3 hard bounces", NULL, &e), 0);
	assert_int_equal(store_exec(f->s, "UPDATE memberships SET bounce_score = 3", &e), 0);

	setenv("MATRIXD_FAKE_NOW", "1700000900", 1);
	struct subs_result r = sub(f->s, "a@example.org", NULL, false, true, -1, NULL, 0);
	assert_int_equal(r.outcome, SUBS_UPDATED);
	const char csv[] = "email\nb@example.org\n";
	assert_int_equal(import_str(f, csv, sizeof csv - 1, &o, &st, &rj, &e), 0);
	assert_int_equal(st.updated, 1);
	rej_free(&rj);

	static const char *const what[] = {
	    "SELECT m.status || '|' || m.status_at || '|' || m.consent_at || '|' || m.bounce_score"
	    " || '|' || s.updated_at FROM memberships m JOIN subscribers s ON s.id = "
	    "m.subscriber_id WHERE s.id = %d",
	    "SELECT kind || '|' || detail FROM events WHERE subscriber_id = %d ORDER BY id DESC"
	    " LIMIT 1",
	};
	for (size_t k = 0; k < 2; k++) {
		char qa[400], qb[400];
		snprintf(qa, sizeof qa, what[k], 1);
		snprintf(qb, sizeof qb, what[k], 2);
		char *a = q_text(f->s, qa), *b = q_text(f->s, qb);
		if (strcmp(a, b) != 0)
			fail_msg("subscribe gave '%s', import '%s'", a, b);
		free(a);
		free(b);
	}
	assert_q(f->s,
	         "SELECT status || '|' || bounce_score FROM memberships WHERE subscriber_id = 2",
	         "confirmed|0");
	assert_q(f->s, "SELECT updated_at FROM subscribers WHERE id = 2", "1700000900");
	assert_q(f->s,
	         "SELECT kind || '|' || detail FROM events WHERE subscriber_id = 2"
	         " ORDER BY id DESC LIMIT 1",
	         "resubscribe|bounced -> confirmed");
	assert_q(f->s,
	         "SELECT consent_via || '|' || consent_by FROM memberships"
	         " WHERE subscriber_id = 1",
	         "cli|cli:tester");
	char *by = q_text(f->s, "SELECT consent_via || '|' || consent_by FROM memberships"
	                        " WHERE subscriber_id = 2");
	assert_non_null(strstr(by, "import|import:"));
	free(by);
}

/* ---- the subscribe form (subs_web.c) ------------------------------------ */

static struct subs_web_result web(struct store *s, const char *email, const char *name,
                                  enum subs_mode mode, const char *list, int want_rc)
{
	const char *lists[] = {list ? list : "matrix"};
	struct subs_web_request rq = {email, name, mode, lists, 1};
	struct subs_web_result r;
	struct err e;
	err_clear(&e);
	int rc = subs_web_subscribe(s, &rq, &r, &e);
	if (rc != want_rc)
		fail_msg("web subscribe %s: rc %d (%s)", email, rc, e.msg);
	return r;
}

static void now_is(int64_t t)
{
	char v[32];
	snprintf(v, sizeof v, "%lld", (long long)t);
	setenv("MATRIXD_FAKE_NOW", v, 1);
}

static void test_web_subscribe_rules(void **state)
{
	struct fx *f = *state;
	struct err e;
	err_clear(&e);
	now_is(1700000000);
	sub(f->s, "conf@example.org", NULL, false, false, SUBS_DIGEST, "Conf", 0);
	sub(f->s, "pend@example.org", NULL, true, false, -1, NULL, 0);
	sub(f->s, "left@example.org", NULL, false, false, -1, NULL, 0);
	struct subs_result ur;
	assert_int_equal(subs_unsubscribe(f->s, "left@example.org", NULL, "cli", "t", &ur, &e), 0);
	assert_int_equal(subs_list_create(f->s, "staff", NULL, NULL, "t", &e), 0);
	assert_int_equal(subs_list_set_private(f->s, "staff", true, "t", NULL, &e), 0);
	int64_t subs0 = q_int(f->s, "SELECT count(*) FROM subscribers");
	int64_t events0 = q_int(f->s, "SELECT count(*) FROM events");

	/* refused: nothing written */
	web(f->s, "a@example.org", NULL, SUBS_ARTICLE, "staff", -1);
	web(f->s, "a@example.org", NULL, SUBS_ARTICLE, "nosuch", -1);
	web(f->s, "not an address", NULL, SUBS_ARTICLE, NULL, -1);
	web(f->s, "a@example.org", "two\nlines", SUBS_ARTICLE, NULL, -1);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM subscribers"), subs0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events"), events0);

	/* a new address: pending, a confirmation, the name taken */
	struct subs_web_result r = web(f->s, "new@example.org", "新", SUBS_DIGEST, NULL, 0);
	assert_true(r.created && !r.limited && r.confirmations == 1 && r.notices == 0);
	assert_q(f->s,
	         "SELECT s.name || ' ' || m.status || ' ' || m.mode || ' ' || m.consent_via"
	         " FROM subscribers s JOIN memberships m ON m.subscriber_id = s.id"
	         " WHERE s.email = 'new@example.org'",
	         "新 pending digest web");
	/* pending: the confirmation again (the one matrixctl queued went out) */
	assert_int_equal(store_exec(f->s, "UPDATE deliveries SET state = 'sent'", &e), 0);
	r = web(f->s, "pend@example.org", "Stranger", SUBS_DIGEST, NULL, 0);
	assert_true(!r.created && r.confirmations == 1);
	assert_q(f->s,
	         "SELECT name || ' ' || (SELECT mode FROM memberships WHERE subscriber_id = id)"
	         " FROM subscribers WHERE email = 'pend@example.org'",
	         " digest");
	/* confirmed: a notice, nothing changed */
	r = web(f->s, "conf@example.org", "Stranger", SUBS_ARTICLE, NULL, 0);
	assert_true(r.notices == 1 && r.confirmations == 0);
	assert_q(f->s,
	         "SELECT name || ' ' || m.status || ' ' || m.mode FROM subscribers s JOIN"
	         " memberships m ON m.subscriber_id = s.id WHERE email = 'conf@example.org'",
	         "Conf confirmed digest");
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries WHERE issue_id = -2"), 1);
	/* unsubscribed: asked again, the history says so */
	r = web(f->s, "left@example.org", NULL, SUBS_ARTICLE, NULL, 0);
	assert_true(r.confirmations == 1);
	assert_q(f->s,
	         "SELECT kind || ' ' || via || ' ' || detail FROM events ORDER BY id DESC"
	         " LIMIT 1",
	         "resubscribe web unsubscribed -> pending: asked on the web; the confirmation mail "
	         "decides");

	/* within the hour: nothing at all, whichever the state */
	int64_t deliveries = q_int(f->s, "SELECT count(*) FROM deliveries");
	events0 = q_int(f->s, "SELECT count(*) FROM events");
	now_is(1700000000 + SUBS_WEB_INTERVAL - 1);
	assert_int_equal(store_exec(f->s, "UPDATE deliveries SET state = 'sent'", &e), 0);
	const char *again[] = {"new@example.org", "pend@example.org", "conf@example.org",
	                       "left@example.org"};
	for (size_t i = 0; i < 4; i++) {
		r = web(f->s, again[i], NULL, SUBS_ARTICLE, NULL, 0);
		assert_true(r.limited && r.confirmations + r.notices == 0);
	}
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries WHERE state = 'queued'"), 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events"), events0);
	/* an hour on: the mail again, in the same row */
	now_is(1700000000 + SUBS_WEB_INTERVAL);
	r = web(f->s, "pend@example.org", NULL, SUBS_ARTICLE, NULL, 0);
	assert_true(!r.limited && r.confirmations == 1);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries"), deliveries);

	/* the confirmation link: confirmed, welcomed once */
	int64_t sid = q_int(f->s, "SELECT id FROM subscribers WHERE email = 'new@example.org'");
	bool changed = false, welcome = false;
	assert_int_equal(
	    subs_web_confirm(f->s, sid, 1, "confirm-link", "http", &changed, &welcome, &e), 0);
	assert_true(changed && welcome);
	assert_int_equal(
	    subs_web_confirm(f->s, sid, 1, "confirm-link", "http", &changed, &welcome, &e), 0);
	assert_true(!changed && !welcome);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries WHERE issue_id = -1"), 1);
	now_is(1700000000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_lists, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_web_subscribe_rules, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_subscribe_new_and_twice, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_subscribe_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_confirm_flow, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_suppression, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_each_show_forget, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_import_lines, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_import_header_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_import_bad_bytes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_import_field_cap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_import_batches, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_import_status_attrs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_import_atomic_dry, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_export_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_one_transition, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
