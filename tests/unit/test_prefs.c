/*
 * Tests for lib/prefs.c, a reader's preference page, on a real SQLite store
 * in a temp directory: which lists the page shows (memberships of any
 * list, public lists besides, never a private list the reader is not on),
 * how a POST's form is read (mode / mode.LIST, subscribe, unsubscribe, and
 * every way a form is refused), and what is written: one transaction, an
 * events row per change with the caller's via, nothing when nothing
 * changes, and nothing at all when one change cannot be made.
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

#include "helpers.h"
#include "prefs.h"
#include "store.h"
#include "subs.h"
#include "xmalloc.h"

struct fx {
	char dir[64];
	struct store *s;
	int64_t ann;
};

static int64_t subscribe(struct store *s, const char *email, const char *list, bool confirm,
                         int mode)
{
	struct subs_request rq = {.email = email,
	                          .list = list,
	                          .mode = mode,
	                          .confirm = confirm,
	                          .via = "cli",
	                          .actor = "cli:t"};
	struct subs_result r;
	struct err e;
	if (subs_subscribe(s, &rq, &r, &e) < 0)
		fail_msg("subscribe %s: %s", email, e.msg);
	return r.subscriber_id;
}

static int setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof *f);
	struct err e;
	setenv("MATRIXD_FAKE_NOW", "1700000000", 1);
	if (tmpstore_dir(f->dir, "test_prefs") < 0 || tmpstore_open(&f->s, f->dir) < 0)
		return -1;
	/* lists: matrix (default), weekly (public), staff and vip (private) */
	if (subs_list_create(f->s, "weekly", "周刊", NULL, "t", &e) < 0 ||
	    subs_list_create(f->s, "staff", NULL, NULL, "t", &e) < 0 ||
	    subs_list_create(f->s, "vip", NULL, NULL, "t", &e) < 0 ||
	    subs_list_set_private(f->s, "staff", true, "t", NULL, &e) < 0 ||
	    subs_list_set_private(f->s, "vip", true, "t", NULL, &e) < 0) {
		fprintf(stderr, "%s\n", e.msg);
		return -1;
	}
	f->ann = subscribe(f->s, "ann@example.org", NULL, false, SUBS_ARTICLE);
	subscribe(f->s, "ann@example.org", "staff", true, SUBS_DIGEST); /* pending */
	subscribe(f->s, "bob@example.org", "vip", false, SUBS_ARTICLE);
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

static void load(struct fx *f, struct prefs *p)
{
	struct err e;
	if (prefs_load(f->s, f->ann, p, &e) < 0)
		fail_msg("prefs_load: %s", e.msg);
}

static const struct prefs_list *list_of(const struct prefs *p, const char *name)
{
	for (size_t i = 0; i < p->n; i++)
		if (strcmp(p->lists[i].name, name) == 0)
			return &p->lists[i];
	return NULL;
}

/* Parses body as the form, reads it against p: the rc of prefs_form. */
static int form(const struct prefs *p, const char *body, struct prefs_change **c, size_t *n,
                struct err *e)
{
	struct httpreq_form fm;
	if (httpreq_form_parse(body, strlen(body), &fm, e) < 0)
		fail_msg("%s: %s", body, e->msg);
	int rc = prefs_form(p, &fm, c, n, e);
	httpreq_form_free(&fm);
	return rc;
}

/* Reads body against the page of f->ann and writes it; *changed lists. */
static int post(struct fx *f, const char *body, size_t *changed, struct err *e)
{
	struct prefs p;
	struct prefs_change *c = NULL;
	size_t n = 0;
	load(f, &p);
	int rc = form(&p, body, &c, &n, e);
	if (rc == 0)
		rc = prefs_apply(f->s, &p, c, n, "web", "http", changed, e);
	free(c);
	prefs_free(&p);
	return rc;
}

static void test_what_the_page_shows(void **state)
{
	struct fx *f = *state;
	struct prefs p;
	load(f, &p);
	assert_string_equal(p.email, "ann@example.org");
	/* the default list first; staff (private, but ann's) shown; vip not */
	assert_int_equal(p.n, 3);
	assert_string_equal(p.lists[0].name, "matrix");
	assert_string_equal(p.lists[1].name, "staff");
	assert_string_equal(p.lists[2].name, "weekly");
	assert_true(p.lists[0].member && p.lists[0].status == SUBS_CONFIRMED &&
	            p.lists[0].mode == SUBS_ARTICLE && !p.lists[0].is_private);
	assert_true(p.lists[1].member && p.lists[1].status == SUBS_PENDING &&
	            p.lists[1].mode == SUBS_DIGEST && p.lists[1].is_private);
	assert_true(!p.lists[2].member && !p.lists[2].is_private);
	assert_string_equal(p.lists[2].title, "周刊");
	assert_null(list_of(&p, "vip"));
	prefs_free(&p);
	prefs_free(&p); /* twice is harmless, as is NULL */
	prefs_free(NULL);

	/* a forgotten subscriber: nobody */
	struct err e;
	assert_int_equal(prefs_load(f->s, 9999, &p, &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);
	prefs_free(&p);
}

static void test_forms_refused(void **state)
{
	struct fx *f = *state;
	struct prefs p;
	load(f, &p);
	static const char *const bad[] = {
	    "mode=digest",                            /* three lists shown: mode.LIST */
	    "mode.matrix=weekly",                     /* no such mode */
	    "mode.matrix=",                           /* empty */
	    "mode.vip=digest",                        /* not shown */
	    "mode.nosuch=digest",                     /* no such list */
	    "mode.matrix=digest&mode.matrix=article", /* which? */
	    "subscribe=vip",                          /* private, not the reader's */
	    "subscribe=nosuch",                       /* no such list */
	    "unsubscribe=weekly",                     /* not on it */
	    "subscribe=weekly&unsubscribe=weekly",    /* both ways */
	    "",                                       /* nothing asked */
	    "save=1",                                 /* only a button */
	    "mode..matrix=digest&save=1",             /* no list of that name */
	};
	int64_t events = q_int(f->s, "SELECT count(*) FROM events");
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct prefs_change *c = (void *)1;
		size_t n = 7;
		struct err e;
		err_clear(&e);
		if (form(&p, bad[i], &c, &n, &e) != -1)
			fail_msg("accepted: %s", bad[i]);
		assert_int_equal(e.kind, ERR_INPUT);
		assert_null(c);
		assert_int_equal(n, 0);
		/* the message never echoes the form's text */
		assert_null(strstr(e.msg, "nosuch"));
	}
	/* the same mode twice is one mode; unknown fields are the buttons' */
	struct prefs_change *c;
	size_t n;
	struct err e;
	assert_int_equal(form(&p, "mode.matrix=digest&mode.matrix=DIGEST&save=1&x=y", &c, &n, &e),
	                 0);
	assert_int_equal(n, 1);
	assert_int_equal(c[0].list, 0);
	assert_int_equal(c[0].mode, SUBS_DIGEST);
	assert_int_equal(c[0].join, 0);
	free(c);
	/* the mode of a list without a membership counts only with its subscribe */
	assert_int_equal(form(&p, "mode.matrix=article&mode.weekly=digest", &c, &n, &e), 0);
	assert_int_equal(n, 1);
	assert_int_equal(c[0].list, 0);
	free(c);
	assert_int_equal(form(&p, "mode.weekly=digest&subscribe=weekly", &c, &n, &e), 0);
	assert_int_equal(n, 1);
	assert_true(c[0].list == 2 && c[0].mode == SUBS_DIGEST && c[0].join == 1);
	free(c);
	/* one that leaves keeps its mode */
	assert_int_equal(form(&p, "mode.matrix=digest&unsubscribe=matrix", &c, &n, &e), 0);
	assert_true(n == 1 && c[0].mode == -1 && c[0].join == -1);
	free(c);
	/* ann's pending membership of the private list may be confirmed */
	assert_int_equal(form(&p, "subscribe=staff", &c, &n, &e), 0);
	free(c);
	prefs_free(&p);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events"), events);
}

static void test_changes_and_their_history(void **state)
{
	struct fx *f = *state;
	size_t changed = 99;
	struct err e;
	err_clear(&e);

	/* article -> digest: one events row, via web */
	assert_int_equal(post(f, "mode.matrix=digest&mode.staff=digest&save=1", &changed, &e), 0);
	assert_int_equal(changed, 1);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM memberships WHERE list_id = 1 AND "
	                             "mode = 'digest'"),
	                 1);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events WHERE kind = 'mode' AND via = "
	                             "'web' AND actor = 'http' AND detail = 'article -> digest' "
	                             "AND list_id = 1"),
	                 1);
	/* saving the same again writes nothing */
	int64_t events = q_int(f->s, "SELECT count(*) FROM events");
	assert_int_equal(post(f, "mode.matrix=digest&mode.staff=digest&save=1", &changed, &e), 0);
	assert_int_equal(changed, 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events"), events);

	/* unsubscribe, then come back without a confirmation mail */
	assert_int_equal(post(f, "unsubscribe=matrix", &changed, &e), 0);
	assert_int_equal(changed, 1);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM memberships WHERE list_id = 1 AND "
	                             "status = 'unsubscribed'"),
	                 1);
	assert_int_equal(post(f, "subscribe=matrix", &changed, &e), 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM memberships WHERE list_id = 1 AND "
	                             "status = 'confirmed' AND mode = 'digest' AND consent_via = "
	                             "'web'"),
	                 1);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events WHERE kind = 'resubscribe' AND "
	                             "via = 'web'"),
	                 1);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM deliveries WHERE issue_id <= 0 AND "
	                             "subscriber_id = 1 AND list_id = 1"),
	                 0);

	/* another public list, in the mode asked */
	struct prefs p;
	struct prefs_change *c;
	size_t n;
	load(f, &p);
	assert_int_equal(form(&p, "mode.weekly=digest&subscribe=weekly", &c, &n, &e), 0);
	assert_int_equal(prefs_apply(f->s, &p, c, n, "web", "http", &changed, &e), 0);
	assert_int_equal(changed, 1);
	/* the page is what was written */
	const struct prefs_list *w = list_of(&p, "weekly");
	assert_true(w->member && w->status == SUBS_CONFIRMED && w->mode == SUBS_DIGEST);
	assert_true(c[0].added && c[0].status_changed && c[0].to == SUBS_CONFIRMED);
	free(c);
	prefs_free(&p);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM memberships m JOIN lists l ON "
	                             "l.id = m.list_id WHERE l.name = 'weekly' AND status = "
	                             "'confirmed' AND mode = 'digest' AND consent_via = 'web'"),
	                 1);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events WHERE kind = 'subscribe' AND "
	                             "via = 'web' AND detail = 'confirmed, digest'"),
	                 1);
	/* the pending membership of a private list: confirmed */
	assert_int_equal(post(f, "subscribe=staff", &changed, &e), 0);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM memberships m JOIN lists l ON "
	                             "l.id = m.list_id WHERE l.name = 'staff' AND status = "
	                             "'confirmed'"),
	                 1);
	/* ... but once left, a private list takes no one back from the web */
	assert_int_equal(post(f, "unsubscribe=staff", &changed, &e), 0);
	events = q_int(f->s, "SELECT count(*) FROM events");
	assert_int_equal(post(f, "subscribe=staff", &changed, &e), -1);
	assert_int_equal(e.kind, ERR_INPUT);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events"), events);
}

static void test_all_or_nothing(void **state)
{
	struct fx *f = *state;
	struct err e;
	struct prefs p;
	struct prefs_change *c;
	size_t n, changed = 5;
	/* the page was read; then the list went private (matrixctl list-set) */
	load(f, &p);
	assert_int_equal(form(&p, "mode.matrix=digest&subscribe=weekly", &c, &n, &e), 0);
	assert_int_equal(n, 2);
	assert_int_equal(subs_list_set_private(f->s, "weekly", true, "t", NULL, &e), 0);
	int64_t events = q_int(f->s, "SELECT count(*) FROM events");
	assert_int_equal(prefs_apply(f->s, &p, c, n, "web", "http", &changed, &e), -1);
	assert_int_equal(e.kind, ERR_INPUT);
	assert_int_equal(changed, 0);
	assert_false(c[0].mode_changed);
	/* the mode change before it is rolled back with it */
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM events"), events);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM memberships WHERE list_id = 1 AND "
	                             "mode = 'article'"),
	                 1);
	/* a list deleted meanwhile */
	assert_int_equal(subs_list_delete(f->s, "weekly", true, "t", NULL, &e), 0);
	assert_int_equal(prefs_apply(f->s, &p, c, n, "web", "http", &changed, &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);
	free(c);
	/* the subscriber forgotten meanwhile: nothing written for nobody */
	assert_int_equal(form(&p, "mode.matrix=digest", &c, &n, &e), 0);
	struct subs_forgotten fg;
	assert_int_equal(subs_forget(f->s, "ann@example.org", "t", &fg, &e), 0);
	assert_int_equal(prefs_apply(f->s, &p, c, n, "web", "http", &changed, &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);
	assert_int_equal(q_int(f->s, "SELECT count(*) FROM memberships WHERE subscriber_id = 1"),
	                 0);
	free(c);
	prefs_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_what_the_page_shows, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forms_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_changes_and_their_history, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_all_or_nothing, setup, teardown),
	};
	return cmocka_run_group_tests_name("prefs", tests, NULL, NULL);
}
