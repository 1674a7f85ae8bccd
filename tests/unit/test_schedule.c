/*
 * Scheduled issues: the send_at syntax (offsets, a bare date in the local
 * zone, the errors), site.timezone and schedule_grace in the configuration,
 * the phase of an issue for every combination of its schedule, and on a
 * real store: saving a schedule, holding, releasing (and what cannot be
 * released), the list the daemon's timer reads, and cancelling.
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

#include "archive.h"
#include "conf.h"
#include "issue.h"
#include "md.h"
#include "store.h"

#define NOW 1700000000

static void test_send_at_forms(void **state)
{
	(void)state;
	setenv("TZ", "Asia/Shanghai", 1);
	tzset();
	/* 2022-04-15 00:00 UTC */
	const time_t base = 1649980800;
	const struct {
		const char *v;
		time_t want;
	} ok[] = {
	    {"2022-04-15 08:00 +08:00", base},
	    {"2022-04-15T08:00:00+08:00", base},
	    {"2022-04-15T00:00Z", base},
	    {"2022-04-15 00:00:30 z", base + 30},
	    {"2022-04-15 08:00 +0800", base},
	    {"2022-04-15 08:00+08", base},
	    {"2022-04-14 19:30 -04:30", base},
	    {"2022-04-15", base - 8 * 3600}, /* midnight in the local zone */
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		time_t t = 0;
		const char *why = NULL;
		if (issue_parse_send_at(ok[i].v, &t, &why) != 0)
			fail_msg("%s: %s", ok[i].v, why);
		assert_int_equal(t, ok[i].want);
	}
	setenv("TZ", "America/New_York", 1);
	tzset();
	time_t t;
	const char *why;
	assert_int_equal(issue_parse_send_at("2022-04-15", &t, &why), 0);
	assert_int_equal(t, base + 4 * 3600); /* EDT */
	assert_int_equal(issue_parse_send_at("2022-01-15", &t, &why), 0);
	assert_int_equal(t, 1642222800); /* EST: 05:00 UTC */
	char out[48];
	issue_format_time(base, out, sizeof out);
	assert_string_equal(out, "2022-04-14T20:00:00-04:00");

	/* a time needs an offset to mean one moment */
	assert_int_equal(issue_parse_send_at("2022-04-15 08:00", &t, &why), -1);
	assert_non_null(strstr(why, "no offset"));
	assert_int_equal(issue_parse_send_at("2022-04-15T08:00:00", &t, &why), -1);
	assert_non_null(strstr(why, "no offset"));
	const char *bad[] = {"",
	                     "tomorrow",
	                     "2022-4-15",
	                     "2022-02-30",
	                     "2022-02-30 08:00 Z",
	                     "2022-04-15 24:00 Z",
	                     "2022-04-15 08:60 Z",
	                     "2022-04-15 08:00 +15:00",
	                     "2022-04-15 08:00 CEST",
	                     "2022-04-15 08:00 Z trailing",
	                     "1969-12-31 08:00 Z",
	                     "2022-04-15x08:00 Z",
	                     "2022-04-15 8:00 Z",
	                     "1970-01-01 00:00 Z", /* 0 is "no send_at": out at once, never held */
	                     "1970-01-01 08:00 +08:00",
	                     "1970-01-01 00:00 +14:00"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		why = NULL;
		if (issue_parse_send_at(bad[i], &t, &why) != -1)
			fail_msg("accepted '%s'", bad[i]);
		assert_non_null(why);
	}
	/* midnight in Shanghai on 1970-01-01 is before the epoch in UTC */
	setenv("TZ", "Asia/Shanghai", 1);
	tzset();
	assert_int_equal(issue_parse_send_at("1970-01-01", &t, &why), -1);
	assert_int_equal(issue_parse_send_at("1970-01-02", &t, &why), 0);
	assert_int_equal(t, 86400 - 8 * 3600);
	unsetenv("TZ");
	tzset();
}

static void test_send_at_in_front_matter(void **state)
{
	(void)state;
	struct issue_opts o = {.max_bytes = 1 << 20,
	                       .site_title = "Matrix",
	                       .language = "zh-CN",
	                       .base_url = "https://n.example.org/"};
	struct issue *is = NULL;
	struct err e;
	const char good[] = "---\nnumber: 9\nsend_at: 2022-04-15 08:00 +08:00\n---\n# A\n\ntext\n";
	assert_int_equal(issue_parse("i.md", good, strlen(good), &o, &is, &e), 0);
	assert_int_equal(is->send_at, 1649980800);
	assert_int_equal(is->send_at_line, 3);
	issue_free(is);
	const char bad[] = "---\nnumber: 9\ntitle: T\nsend_at: 2022-04-15 08:00\n---\n# A\n\nt\n";
	assert_int_equal(issue_parse("i.md", bad, strlen(bad), &o, &is, &e), -1);
	assert_non_null(strstr(e.msg, "i.md:4: send_at '2022-04-15 08:00'"));
	assert_non_null(strstr(e.msg, "no offset"));
}

static char dir[] = "/tmp/matrixd-sched-XXXXXX";

static const char *write_conf(const char *text)
{
	static char path[512];
	snprintf(path, sizeof path, "%s/m.conf", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

#define SITE "site = { base_url = \"https://n.example.org/\"; from = \"M <m@example.org>\";"

static void test_conf_keys(void **state)
{
	(void)state;
	struct conf c;
	struct err e;
	assert_int_equal(conf_load(&c, write_conf(SITE " };\n"), &e), 0);
	assert_int_equal(c.schedule_grace, 86400);
	assert_string_equal(c.site.timezone, "");
	conf_free(&c);
	assert_int_equal(conf_load(&c,
	                           write_conf("schedule_grace = 600;\n" SITE
	                                      " timezone = \"Asia/Shanghai\"; };\n"),
	                           &e),
	                 0);
	assert_int_equal(c.schedule_grace, 600);
	assert_string_equal(c.site.timezone, "Asia/Shanghai");
	conf_free(&c);
	const char *bad[] = {"../etc/passwd", "/etc/localtime", "Mars/Olympus_Mons", "Asia",
	                     "UTC; rm"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char text[512];
		snprintf(text, sizeof text, SITE "\n timezone = \"%s\"; };\n", bad[i]);
		assert_int_equal(conf_load(&c, write_conf(text), &e), -1);
		if (strstr(e.msg, ":2: site.timezone") == NULL)
			fail_msg("%s: %s", bad[i], e.msg);
	}
	assert_int_equal(conf_load(&c, write_conf("schedule_grace = -1;\n" SITE " };\n"), &e), -1);
	assert_non_null(strstr(e.msg, ":1: schedule_grace must be between"));
}

static void test_phases(void **state)
{
	(void)state;
	const int grace = 3600;
	const struct {
		bool draft;
		int64_t queued, send_at, held, released;
		enum archive_phase want;
	} rows[] = {
	    {true, 0, 0, 0, 0, ARCHIVE_DRAFT},
	    {true, 0, NOW + 60, 0, 0, ARCHIVE_DRAFT},
	    {false, 0, 0, 0, 0, ARCHIVE_DUE},
	    {false, NOW - 5, 0, 0, 0, ARCHIVE_PUBLISHED},
	    {false, NOW - 5, NOW - 10, 0, 0, ARCHIVE_PUBLISHED},
	    {false, 0, NOW + 1, 0, 0, ARCHIVE_SCHEDULED},
	    {false, 0, NOW, 0, 0, ARCHIVE_DUE},
	    {false, 0, NOW - grace, 0, 0, ARCHIVE_DUE},
	    {false, 0, NOW - grace - 1, 0, 0, ARCHIVE_HELD},
	    {false, 0, NOW - 10, NOW - 5, 0, ARCHIVE_HELD},
	    {false, 0, NOW - 3 * 86400, NOW - 5, NOW - 1, ARCHIVE_DUE},
	};
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		struct archive_issue a = {.is_draft = rows[i].draft,
		                          .queued_at = rows[i].queued,
		                          .send_at = rows[i].send_at,
		                          .held_at = rows[i].held,
		                          .released_at = rows[i].released,
		                          .is_published = true};
		if (archive_phase(&a, NOW, grace) != rows[i].want)
			fail_msg("row %zu: phase %d, want %d", i, archive_phase(&a, NOW, grace),
			         rows[i].want);
		bool pub = rows[i].want == ARCHIVE_PUBLISHED ||
		           (rows[i].want == ARCHIVE_DUE && rows[i].send_at == 0);
		assert_int_equal(archive_is_public(&a), pub);
		a.is_published = false; /* its pages are not written: never listed */
		assert_false(archive_is_public(&a));
	}
}

static struct issue *mk_issue(int number, time_t send_at, const char *hash)
{
	static char title[] = "T", empty[] = "", lang[] = "en", body[] = "b", slug[] = "a";
	struct issue *is = calloc(1, sizeof *is);
	static struct article art;
	art = (struct article){.index = 1,
	                       .section = empty,
	                       .title = title,
	                       .slug = slug,
	                       .markdown = body,
	                       .html = body,
	                       .text = body,
	                       .summary = body};
	is->title = title;
	is->number = number;
	is->period = empty;
	is->language = lang;
	is->send_at = send_at;
	is->articles = &art;
	is->narticles = 1;
	is->colophon_html = empty;
	snprintf(is->hash, sizeof is->hash, "%s", hash);
	return is;
}

static void save(struct store *s, int number, time_t send_at, const char *hash, int64_t *id)
{
	struct issue *is = mk_issue(number, send_at, hash);
	enum archive_change ch;
	struct err e;
	char path[64];
	snprintf(path, sizeof path, "/nonexistent/%d.md", number);
	if (archive_save(s, is, path, 0, id, &ch, &e) != 0)
		fail_msg("%s", e.msg);
	free(is);
}

static struct archive_issue *get(struct store *s, int number)
{
	struct err e;
	struct archive_issue *a = archive_get(s, number, 0, &e);
	assert_non_null(a);
	return a;
}

static void test_store_schedule(void **state)
{
	(void)state;
	char sdir[] = "/tmp/matrixd-sched-store-XXXXXX";
	assert_non_null(mkdtemp(sdir));
	struct store *s;
	struct err e;
	assert_int_equal(store_open(&s, sdir, &e), 0);
	int64_t id70, id71, id72;
	time_t now = time(NULL);
	save(s, 70, now + 600, "h1", &id70);
	save(s, 71, now - 3 * 86400, "h1", &id71);
	save(s, 72, 0, "h1", &id72);

	struct archive_scheduled *l;
	size_t n;
	assert_int_equal(archive_scheduled_list(s, &l, &n, &e), 0);
	assert_int_equal(n, 2); /* earliest first; 72 has no schedule */
	assert_int_equal(l[0].number, 71);
	assert_int_equal(l[1].number, 70);
	assert_false(l[0].released);
	archive_scheduled_free(l, n);

	/* what cannot be released, and why */
	assert_int_equal(archive_release(s, 70, now, &e), -1);
	assert_int_equal(e.kind, ERR_INPUT);
	assert_non_null(strstr(e.msg, "still to come"));
	assert_int_equal(archive_release(s, 72, now, &e), -1);
	assert_non_null(strstr(e.msg, "no send_at"));
	assert_int_equal(archive_release(s, 99, now, &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);

	/* held: out of the timer's list; released: back in, due at once */
	assert_int_equal(archive_hold(s, id71, now, &e), 0);
	struct archive_issue *a = get(s, 71);
	assert_int_equal(archive_phase(a, now, 86400), ARCHIVE_HELD);
	archive_issues_free(a, 1);
	assert_int_equal(archive_scheduled_list(s, &l, &n, &e), 0);
	assert_int_equal(n, 1);
	archive_scheduled_free(l, n);
	assert_int_equal(archive_release(s, 71, now, &e), 0);
	assert_int_equal(archive_release(s, 71, now, &e), -1);
	assert_non_null(strstr(e.msg, "released already"));
	a = get(s, 71);
	assert_int_equal(archive_phase(a, now, 86400), ARCHIVE_DUE);
	archive_issues_free(a, 1);
	assert_int_equal(archive_scheduled_list(s, &l, &n, &e), 0);
	assert_int_equal(n, 2);
	assert_true(l[0].released);
	archive_scheduled_free(l, n);
	assert_int_equal(archive_mark_queued(s, id71, now, &e), 0);
	assert_int_equal(archive_release(s, 71, now, &e), -1);
	assert_non_null(strstr(e.msg, "already sent"));

	/* a correction with a new send_at is a new schedule: the hold goes */
	save(s, 70, now - 2 * 86400, "h2", &id70);
	assert_int_equal(archive_hold(s, id70, now, &e), 0);
	save(s, 70, now + 60, "h3", &id70);
	a = get(s, 70);
	assert_int_equal(a->held_at, 0);
	assert_int_equal(a->send_at, now + 60);
	assert_int_equal(archive_phase(a, now, 86400), ARCHIVE_SCHEDULED);
	assert_false(archive_is_public(a));
	archive_issues_free(a, 1);

	/* the file goes before the time: the schedule goes with it */
	int64_t gone = 0;
	assert_int_equal(archive_cancel_scheduled(s, "/nonexistent/70.md", &gone, &e), 0);
	assert_int_equal(gone, 1);
	assert_null(archive_get(s, 70, 0, &e));
	assert_int_equal(archive_cancel_scheduled(s, "/nonexistent/71.md", &gone, &e), 0);
	assert_int_equal(gone, 0); /* published: it stays */
	store_close(s);
	const char *names[] = {"matrixd.db", "matrixd.db-wal", "matrixd.db-shm"};
	for (size_t i = 0; i < 3; i++) {
		char p[600];
		snprintf(p, sizeof p, "%s/%s", sdir, names[i]);
		unlink(p);
	}
	rmdir(sdir);
}

static void cleanup(void)
{
	char p[600];
	snprintf(p, sizeof p, "%s/m.conf", dir);
	unlink(p);
	rmdir(dir);
}

int main(void)
{
	md_init();
	assert_non_null(mkdtemp(dir));
	atexit(cleanup);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_send_at_forms),  cmocka_unit_test(test_send_at_in_front_matter),
	    cmocka_unit_test(test_conf_keys),      cmocka_unit_test(test_phases),
	    cmocka_unit_test(test_store_schedule),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
