/*
 * Delivery commands: status (the daemon, each issue's progress, the last
 * errors), retry (requeue failed deliveries), send-test (each article of an
 * issue to one address, now, through the configured relay).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "archive.h"
#include "cli.h"
#include "issue.h"
#include "ledger.h"
#include "mailconv.h"
#include "msg.h"
#include "render.h"
#include "sign.h"
#include "store.h"
#include "tmpl.h"
#include "token.h"
#include "transport.h"
#include "xmalloc.h"

/* state_dir free space under which status warns (or a tenth of it) */
#define STATUS_LOW_SPACE (16 * 1024 * 1024)

static void when(int64_t t, char *out, size_t n)
{
	if (t <= 0) {
		snprintf(out, n, "-");
		return;
	}
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, n, "%Y-%m-%d %H:%M UTC", &tm);
}

/* Messages per second of an issue; 0 when unknown (a status line is no
 * place to fail for it). */
static double issue_rate(struct store *s, int64_t issue_id)
{
	struct err e;
	double r = 0;
	if (ledger_send_rate(s, issue_id, &r, &e) < 0)
		return 0;
	return r;
}

/* What status calls an issue: publish (sent or going out), draft,
 * scheduled or held. */
static const char *phase_name(const struct archive_issue *a, int64_t now, int grace)
{
	switch (archive_phase(a, now, grace)) {
	case ARCHIVE_DRAFT:
		return "draft";
	case ARCHIVE_SCHEDULED:
		return "scheduled";
	case ARCHIVE_HELD:
		return "held";
	default:
		return "publish";
	}
}

static struct json_object *counts_json(const struct ledger_counts *k)
{
	struct json_object *o = json_object_new_object();
	for (int i = 0; i < LEDGER_NSTATES; i++)
		json_object_object_add(o, ledger_state_name((enum ledger_state)i),
		                       json_object_new_int64(k->n[i]));
	return o;
}

static void counts_cells(const struct ledger_counts *k, char out[LEDGER_NSTATES][24])
{
	for (int i = 0; i < LEDGER_NSTATES; i++)
		snprintf(out[i], 24, "%" PRId64, k->n[i]);
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;
	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
	           ? json_object_get_string(v)
	           : "";
}

static int64_t jint(struct json_object *o, const char *key)
{
	struct json_object *v;
	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

/* The daemon's relays (daemon/dispatch.c writes them): state, connections, counts. */
static void print_relays(struct json_object *relays)
{
	struct table *t = table_new(7, "RELAY", "STATE", "CONNECTIONS", "SENT", "DEFERRED",
	                            "FAILED", "LAST TROUBLE");
	for (size_t i = 0; i < json_object_array_length(relays); i++) {
		struct json_object *r = json_object_array_get_idx(relays, i);
		char state[64], conns[16], sent[24], def[24], fail[24], trouble[300];
		int64_t retry = jint(r, "retry_at"), now = (int64_t)time(NULL);
		if (strcmp(jstr(r, "state"), "down") == 0)
			snprintf(state, sizeof state, "down, again in %" PRId64 " s",
			         retry > now ? retry - now : 0);
		else
			snprintf(state, sizeof state, "%s", jstr(r, "state"));
		snprintf(conns, sizeof conns, "%" PRId64, jint(r, "connections"));
		snprintf(sent, sizeof sent, "%" PRId64, jint(r, "sent"));
		snprintf(def, sizeof def, "%" PRId64, jint(r, "deferred"));
		snprintf(fail, sizeof fail, "%" PRId64, jint(r, "failed"));
		snprintf(trouble, sizeof trouble, "%s", jstr(r, "last_trouble"));
		table_row(t, jstr(r, "url"), state, conns, sent, def, fail, trouble);
	}
	printf("\n");
	table_print(t, stdout);
}

/* What status shows, read once. */
struct status {
	bool running;
	long pid;
	int64_t since;
	char *conf, *line;          /* the daemon's configuration and status line */
	struct json_object *relays; /* the running daemon's relays (daemon/dispatch.c), or NULL */
	struct archive_issue *is;
	size_t n;
	struct archive_error *errs;
	size_t nerr;
	struct ledger_counts confirm, welcome, notice; /* the mails of a membership */
	char **warn; /* what needs the admin's eye besides the errors */
	size_t nwarn;
	int64_t free_bytes; /* in state_dir; -1 unknown */
	int64_t now;
	int grace; /* schedule_grace */
};

static void warn_add(struct status *st, char *msg)
{
	st->warn = xreallocarray(st->warn, st->nwarn + 1, sizeof *st->warn);
	st->warn[st->nwarn++] = msg;
}

/*
 * An issue due, its pages written, without deliveries (their enqueue
 * failed: the store busy or state_dir full; the daemon retries) and a
 * state_dir nearly full
 * are shown here (with the subscriber records that wait for the admin's
 * decision after the address-key change), since neither can be written into the store when the
 * disk is what is full.
 */
static void status_warnings(struct cli *c, struct status *st)
{
	for (size_t i = 0; i < st->n; i++)
		if (archive_phase(&st->is[i], st->now, st->grace) == ARCHIVE_DUE &&
		    st->is[i].is_published)
			warn_add(st, xasprintf("issue %d is published but its deliveries are not "
			                       "queued yet; matrixd retries (see its log: is "
			                       "state_dir full?)",
			                       st->is[i].number));
	char *conflicts = cli_conflicts_note(c);
	if (conflicts)
		warn_add(st, conflicts);
	struct statvfs v;
	st->free_bytes = -1;
	if (statvfs(c->conf.state_dir, &v) != 0)
		return;
	st->free_bytes = (int64_t)v.f_bavail * (int64_t)v.f_frsize;
	int64_t size = (int64_t)v.f_blocks * (int64_t)v.f_frsize, low = size / 10;
	if (low > STATUS_LOW_SPACE)
		low = STATUS_LOW_SPACE;
	if (st->free_bytes < low)
		warn_add(st, xasprintf("state_dir %s has only %" PRId64
		                       " KiB free: matrixd cannot queue or record deliveries "
		                       "when it is full; free some space",
		                       c->conf.state_dir, st->free_bytes / 1024));
}

static int status_read(struct cli *c, struct status *st, struct err *e)
{
	struct store *s = c->store;
	memset(st, 0, sizeof *st);
	st->now = store_now();
	st->grace = c->conf.schedule_grace;
	char *pid_s = store_kv_get(s, "daemon.pid", e);
	char *started = store_kv_get(s, "daemon.started", e);
	st->conf = store_kv_get(s, "daemon.config", e);
	st->line = store_kv_get(s, "daemon.status", e);
	st->pid = pid_s && *pid_s ? strtol(pid_s, NULL, 10) : 0;
	st->running = st->pid > 0 && (kill((pid_t)st->pid, 0) == 0 || errno == EPERM);
	st->since = started ? strtoll(started, NULL, 10) : 0;
	free(pid_s);
	free(started);
	/* the running daemon's relays; a stopped one's are history */
	char *relays = store_kv_get(s, "daemon.relays", e);
	if (st->running && relays)
		st->relays = json_tokener_parse(relays);
	if (st->relays && !json_object_is_type(st->relays, json_type_array)) {
		json_object_put(st->relays);
		st->relays = NULL;
	}
	free(relays);
	st->is = archive_list(s, &st->n, e);
	st->errs = archive_errors(s, &st->nerr, e);
	if (st->is == NULL || st->errs == NULL ||
	    ledger_counts(s, LEDGER_CONFIRM, &st->confirm, e) < 0 ||
	    ledger_counts(s, LEDGER_WELCOME, &st->welcome, e) < 0 ||
	    ledger_counts(s, LEDGER_NOTICE, &st->notice, e) < 0)
		return -1;
	status_warnings(c, st);
	return 0;
}

static void status_free(struct status *st)
{
	archive_issues_free(st->is, st->n);
	archive_errors_free(st->errs, st->nerr);
	for (size_t i = 0; i < st->nwarn; i++)
		free(st->warn[i]);
	free(st->warn);
	free(st->conf);
	free(st->line);
	if (st->relays)
		json_object_put(st->relays);
}

static void status_json(struct store *s, const struct status *st)
{
	struct err e;
	struct json_object *o = json_object_new_object(), *dj = json_object_new_object();
	json_object_object_add(dj, "running", json_object_new_boolean(st->running));
	json_object_object_add(dj, "pid", st->running ? json_object_new_int64(st->pid) : NULL);
	json_object_object_add(dj, "since", json_object_new_int64(st->since));
	json_object_object_add(dj, "config", json_object_new_string(st->conf ? st->conf : ""));
	json_object_object_add(dj, "status",
	                       json_object_new_string(st->running && st->line ? st->line : ""));
	json_object_object_add(dj, "relays",
	                       st->relays ? json_object_get(st->relays) : json_object_new_array());
	json_object_object_add(o, "daemon", dj);
	struct json_object *arr = json_object_new_array();
	for (size_t i = 0; i < st->n; i++) {
		const struct archive_issue *a = &st->is[i];
		struct ledger_counts k;
		ledger_counts(s, a->id, &k, &e);
		struct json_object *j = counts_json(&k);
		json_object_object_add(j, "number", json_object_new_int(a->number));
		json_object_object_add(j, "title", json_object_new_string(a->title));
		json_object_object_add(j, "status",
		                       json_object_new_string(phase_name(a, st->now, st->grace)));
		char at[48];
		if (a->send_at)
			issue_format_time((time_t)a->send_at, at, sizeof at);
		json_object_object_add(j, "send_at",
		                       a->send_at ? json_object_new_string(at) : NULL);
		int64_t waiting = 0, next = 0;
		ledger_waiting(s, a->id, st->now, &waiting, &next, &e);
		if (next)
			issue_format_time((time_t)next, at, sizeof at);
		json_object_object_add(j, "waiting", json_object_new_int64(waiting));
		json_object_object_add(j, "next_at", waiting ? json_object_new_string(at) : NULL);
		json_object_object_add(j, "path", json_object_new_string(a->path));
		json_object_object_add(j, "queued_at",
		                       a->queued_at ? json_object_new_int64(a->queued_at) : NULL);
		json_object_object_add(j, "rate", json_object_new_double(issue_rate(s, a->id)));
		json_object_array_add(arr, j);
	}
	json_object_object_add(o, "issues", arr);
	json_object_object_add(o, "confirmations", counts_json(&st->confirm));
	json_object_object_add(o, "welcomes", counts_json(&st->welcome));
	json_object_object_add(o, "notices", counts_json(&st->notice));
	struct json_object *ea = json_object_new_array();
	for (size_t i = 0; i < st->nerr; i++) {
		struct json_object *j = json_object_new_object();
		json_object_object_add(j, "path", json_object_new_string(st->errs[i].path));
		json_object_object_add(j, "error", json_object_new_string(st->errs[i].msg));
		json_object_object_add(j, "at", json_object_new_int64(st->errs[i].at));
		json_object_array_add(ea, j);
	}
	json_object_object_add(o, "errors", ea);
	struct json_object *wa = json_object_new_array();
	for (size_t i = 0; i < st->nwarn; i++)
		json_object_array_add(wa, json_object_new_string(st->warn[i]));
	json_object_object_add(o, "warnings", wa);
	json_object_object_add(o, "state_dir_free",
	                       st->free_bytes >= 0 ? json_object_new_int64(st->free_bytes) : NULL);
	cli_json_print(o);
}

static void status_text(struct store *s, const struct status *st)
{
	struct err e;
	char ts[64];
	when(st->since, ts, sizeof ts);
	const char *conf = st->conf ? st->conf : "";
	if (st->running)
		printf("matrixd: running (pid %ld) since %s, config %s\n", st->pid, ts,
		       *conf ? conf : "?");
	else
		printf("matrixd: not running%s%s%s\n", *conf ? " (last config " : "", conf,
		       *conf ? ")" : "");
	if (st->running && st->line && *st->line)
		printf("         %s\n", st->line);
	if (st->relays && json_object_array_length(st->relays) > 0)
		print_relays(st->relays);
	printf("\n");
	struct table *t = table_new(9, "ISSUE", "TITLE", "STATUS", "QUEUED", "SENDING", "SENT",
	                            "DEFERRED", "FAILED", "MSG/S");
	for (size_t i = 0; i < st->n; i++) {
		const struct archive_issue *a = &st->is[i];
		struct ledger_counts k;
		ledger_counts(s, a->id, &k, &e);
		char num[16], cnt[LEDGER_NSTATES][24], rt[24];
		snprintf(num, sizeof num, "%d", a->number);
		counts_cells(&k, cnt);
		double rate = issue_rate(s, a->id);
		snprintf(rt, sizeof rt, rate > 0 ? "%.0f" : "-", rate);
		char phase[80];
		if (archive_phase(a, st->now, st->grace) == ARCHIVE_SCHEDULED) {
			time_t at = (time_t)a->send_at;
			struct tm tm;
			localtime_r(&at, &tm);
			strftime(phase, sizeof phase, "scheduled %Y-%m-%d %H:%M %z", &tm);
		} else {
			snprintf(phase, sizeof phase, "%s", phase_name(a, st->now, st->grace));
		}
		table_row(t, num, a->title, phase, cnt[LEDGER_QUEUED], cnt[LEDGER_SENDING],
		          cnt[LEDGER_SENT], cnt[LEDGER_DEFERRED], cnt[LEDGER_FAILED], rt);
	}
	const struct {
		const struct ledger_counts *c;
		const char *what;
	} rows[] = {{&st->confirm, "(confirmation mails)"},
	            {&st->welcome, "(welcome mails)"},
	            {&st->notice, "(\"already subscribed\" mails)"}};
	for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
		if (ledger_counts_total(rows[i].c) == 0)
			continue;
		char cnt[LEDGER_NSTATES][24];
		counts_cells(rows[i].c, cnt);
		table_row(t, "-", rows[i].what, "", cnt[LEDGER_QUEUED], cnt[LEDGER_SENDING],
		          cnt[LEDGER_SENT], cnt[LEDGER_DEFERRED], cnt[LEDGER_FAILED], "");
	}
	table_print(t, stdout);
	if (st->n == 0)
		printf("no issues yet\n");
	for (size_t i = 0; i < st->n; i++) {
		int64_t waiting = 0, next = 0;
		if (ledger_waiting(s, st->is[i].id, st->now, &waiting, &next, &e) < 0 ||
		    waiting == 0)
			continue;
		char at[48];
		issue_format_time((time_t)next, at, sizeof at);
		printf("\nissue %d: %" PRId64
		       " of the queued deliveries wait for their time (a list's pace); the next at "
		       "%s\n",
		       st->is[i].number, waiting, at);
	}
	for (size_t i = 0; i < st->n; i++) {
		if (archive_phase(&st->is[i], st->now, st->grace) != ARCHIVE_HELD)
			continue;
		char at[48];
		issue_format_time((time_t)st->is[i].send_at, at, sizeof at);
		printf("\nissue %d is held: its send_at %s passed more than schedule_grace "
		       "(%d s) before matrixd could send it.\n  `matrixctl release %d` sends "
		       "it; or give it a new send_at.\n",
		       st->is[i].number, at, st->grace, st->is[i].number);
	}
	if (st->nerr > 0) {
		printf("\nerrors:\n");
		for (size_t i = 0; i < st->nerr; i++) {
			when(st->errs[i].at, ts, sizeof ts);
			printf("  %s  %s\n", ts, st->errs[i].msg);
		}
	}
	if (st->nwarn > 0) {
		printf("\nwarnings:\n");
		for (size_t i = 0; i < st->nwarn; i++)
			printf("  %s\n", st->warn[i]);
	}
}

int cmd_status(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {{NULL, 0, NULL, 0}};
	if (getopt_long(argc, argv, "", opts, NULL) != -1 || optind != argc)
		return cli_usage("status");
	if (cli_need_store(c) < 0)
		return EXIT_ERR;
	struct err e;
	struct status st;
	err_clear(&e);
	if (status_read(c, &st, &e) < 0) {
		status_free(&st);
		return cli_fail(&e);
	}
	if (c->json)
		status_json(c->store, &st);
	else
		status_text(c->store, &st);
	status_free(&st);
	return EXIT_OK;
}

void cli_wake_daemon(struct cli *c)
{
	struct err e;
	err_clear(&e);
	if (ledger_wake(c->conf.state_dir, &e) < 0)
		fprintf(stderr, "matrixctl: warning: %s\n", e.msg);
}

int cmd_retry(struct cli *c, int argc, char **argv)
{
	static const char usage[] = "retry [--issue N]";
	static const struct option opts[] = {{"issue", required_argument, NULL, 'i'},
	                                     {NULL, 0, NULL, 0}};
	int ch, number = 0;
	while ((ch = getopt_long(argc, argv, "i:", opts, NULL)) != -1) {
		if (ch != 'i')
			return cli_usage(usage);
		char *end;
		long v = strtol(optarg, &end, 10);
		if (*end || v <= 0 || v > 1000000)
			return cli_usage(usage);
		number = (int)v;
	}
	if (optind != argc)
		return cli_usage(usage);
	if (cli_need_store(c) < 0)
		return EXIT_ERR;
	struct err e;
	err_clear(&e);
	if (number) {
		struct archive_issue *a = archive_get(c->store, number, 0, &e);
		if (a == NULL)
			return cli_fail(&e);
		archive_issues_free(a, 1);
	}
	int64_t n = 0;
	if (ledger_retry(c->store, number, store_now(), &n, &e) < 0)
		return cli_fail(&e);
	if (n > 0)
		cli_wake_daemon(c);
	if (c->json) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "requeued", json_object_new_int64(n));
		cli_json_print(o);
	} else {
		printf("requeued %" PRId64 " failed deliver%s%s\n", n, n == 1 ? "y" : "ies",
		       n ? "; a running matrixd sends them now (or run matrixd --once)" : "");
	}
	return EXIT_OK;
}

/* Before the subject of every test mail. */
#define TEST_TAG "[测试]"

static void warn_stderr(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "matrixctl: warning: %s\n", msg);
}

int cmd_send_test(struct cli *c, int argc, char **argv)
{
	static const char usage[] = "send-test ISSUE --to EMAIL [--digest]";
	static const struct option opts[] = {{"to", required_argument, NULL, 't'},
	                                     {"digest", no_argument, NULL, 'd'},
	                                     {NULL, 0, NULL, 0}};
	const char *to = NULL;
	bool digest = false;
	int ch;
	while ((ch = getopt_long(argc, argv, "t:", opts, NULL)) != -1) {
		if (ch == 'd')
			digest = true;
		else if (ch == 't')
			to = optarg;
		else
			return cli_usage(usage);
	}
	if (to == NULL || optind + 1 != argc)
		return cli_usage(usage);
	struct err e;
	err_clear(&e);
	struct issue *is = NULL;
	struct tmpl *t = NULL;
	struct transport *tr = NULL;
	struct sign_keys *keys = NULL;
	struct signer *signer = NULL;
	char *pw = NULL;
	int rc = EXIT_ERR, failed = 0;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (cli_issue_for_mail(c, argv[optind], to, &is, &t) < 0)
		goto out;
	/* signed as the daemon signs: a test mail shows what receivers see */
	if (sign_keys_load(&c->conf, &keys, warn_stderr, NULL, &e) < 0 ||
	    (keys && (signer = signer_new(&e)) == NULL) || conf_password(&c->conf, &pw, &e) < 0 ||
	    (tr = transport_new(&c->conf, pw, NULL, &e)) == NULL) {
		rc = cli_fail(&e);
		goto out;
	}
	struct token_key key;
	token_key_random(&key); /* test mail: links that work nowhere */
	struct render_links l;
	render_links(&c->conf, &key, 0, 0, 0, false, &l);
	struct render_list list = {"matrix", c->conf.site.title};
	time_t date = is->date ? is->date : time(NULL);
	struct json_object *arr = c->json ? json_object_new_array() : NULL;
	struct table *tab = c->json ? NULL : table_new(4, "#", "RESULT", "TITLE", "REPLY");
	/* the digest is mail 0; articles are 1..n */
	size_t first = digest ? 0 : 1, last = digest ? 0 : is->narticles;
	for (size_t i = first; i <= last; i++) {
		const char *title = i ? is->articles[i - 1].title : is->title;
		struct msg_prep prep;
		struct buf m;
		buf_init(&m, BUF_NOLIMIT);
		char *id = xasprintf(MAILCONV_MSGID_PREFIX "test.%d.%zu.%ld", is->number, i,
		                     (long)time(NULL));
		struct msg_rcpt r = {.email = to,
		                     .name = "",
		                     .message_id = id,
		                     .unsub_url = l.unsub_url,
		                     .prefs_url = l.prefs_url,
		                     .date = time(NULL)};
		struct send_result res = {0};
		const char *outcome, *reply;
		if (render_test_mail(&c->conf, t, is, date, (int)i, &list, TEST_TAG, &prep, &e) <
		    0) {
			outcome = "error";
			reply = e.msg;
			failed++;
		} else if (msg_build(&prep, &r, &m, &e) < 0 ||
		           (keys && sign_prepend(signer, keys, &m.data, &m.len, &e) < 0)) {
			outcome = "error";
			reply = e.msg;
			failed++;
			msg_prep_free(&prep);
		} else {
			transport_send(tr, l.return_path, to, NULL, m.data, m.len, &res);
			outcome = res.outcome == SEND_OK ? "sent" : "failed";
			reply = res.reply;
			failed += res.outcome != SEND_OK;
			msg_prep_free(&prep);
		}
		char idx[16];
		snprintf(idx, sizeof idx, "%zu", i);
		if (arr) {
			struct json_object *row = json_object_new_object();
			json_object_object_add(row, "article", json_object_new_int((int)i));
			json_object_object_add(row, "title", json_object_new_string(title));
			json_object_object_add(row, "result", json_object_new_string(outcome));
			json_object_object_add(row, "reply", json_object_new_string(reply));
			json_object_array_add(arr, row);
		} else {
			table_row(tab, i ? idx : "digest", outcome, title, reply);
		}
		free(id);
		buf_free(&m);
	}
	render_links_free(&l);
	if (arr) {
		cli_json_print(arr);
	} else {
		table_print(tab, stdout);
		if (digest)
			printf("the digest %s to %s\n", failed ? "was not sent" : "sent", to);
		else
			printf("%zu of %zu articles sent to %s\n", is->narticles - (size_t)failed,
			       is->narticles, to);
	}
	rc = failed ? EXIT_ERR : EXIT_OK;
out:
	transport_free(tr);
	signer_free(signer);
	sign_keys_unref(keys);
	if (pw) {
		explicit_bzero(pw, strlen(pw));
		free(pw);
	}
	issue_free(is);
	tmpl_free(t);
	curl_global_cleanup();
	return rc;
}
