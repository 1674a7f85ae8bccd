/*
 * matrixctl subscribe, unsubscribe, subscribers, show, forget: one address
 * at a time, and the listing. The rules (suppression, consent, the
 * confirmation mail) are in lib/subs.c; this file parses argv and prints.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "store.h"
#include "subs.h"
#include "utf8.h"
#include "xmalloc.h"

static const char subscribe_usage[] = "subscribe EMAIL [--list NAME] [--name N] "
                                      "[--mode article|digest] [--confirm] [--resubscribe]";
static const char unsubscribe_usage[] = "unsubscribe EMAIL [--list NAME]";
static const char subscribers_usage[] =
    "subscribers [--list NAME] [--status pending|confirmed|unsubscribed|bounced] | "
    "subscribers --conflicts";
static const char show_usage[] = "show EMAIL | show --id N";
static const char forget_usage[] = "forget EMAIL | forget --id N";

/* Tables show UTC minutes, JSON the full ISO 8601 time. */
static void human_time(char *out, size_t n, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (t <= 0) {
		snprintf(out, n, "-");
		return;
	}
	gmtime_r(&tt, &tm);
	strftime(out, n, "%Y-%m-%d %H:%M", &tm);
}

static struct json_object *json_time(int64_t t)
{
	char s[32];
	time_t tt = (time_t)t;
	struct tm tm;
	if (t <= 0)
		return NULL;
	gmtime_r(&tt, &tm);
	strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_object_new_string(s);
}

/* The stored attrs (a JSON object); an unreadable value shows as {}. */
static struct json_object *json_attrs(const char *attrs)
{
	struct json_object *o = attrs ? json_tokener_parse(attrs) : NULL;
	if (o == NULL || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		o = json_object_new_object();
	}
	return o;
}

/* --- subscribe / unsubscribe ------------------------------------------------ */

static void print_result(const struct cli *c, const char *email, const char *list,
                         const struct subs_result *r)
{
	if (c->json) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "email", json_object_new_string(email));
		json_object_object_add(o, "list", json_object_new_string(list));
		json_object_object_add(o, "result",
		                       json_object_new_string(subs_outcome_name(r->outcome)));
		json_object_object_add(o, "status",
		                       json_object_new_string(subs_status_name(r->status)));
		json_object_object_add(
		    o, "previous_status",
		    r->had_membership ? json_object_new_string(subs_status_name(r->prev_status))
		                      : NULL);
		json_object_object_add(o, "mode", json_object_new_string(subs_mode_name(r->mode)));
		json_object_object_add(o, "confirmation_queued",
		                       json_object_new_boolean(r->mail_queued));
		cli_json_print(o);
		return;
	}
	const char *st = subs_status_name(r->status), *md = subs_mode_name(r->mode);
	switch (r->outcome) {
	case SUBS_ADDED:
		printf("subscribed %s to %s (%s, %s)\n", email, list, st, md);
		break;
	case SUBS_UPDATED:
		if (r->had_membership && r->prev_status != r->status)
			printf("%s on %s: %s -> %s (%s)\n", email, list,
			       subs_status_name(r->prev_status), st, md);
		else
			printf("%s on %s: updated (%s, %s)\n", email, list, st, md);
		break;
	default:
		printf("%s on %s: already %s (%s)%s\n", email, list, st, md,
		       r->mail_queued ? "" : "; nothing changed");
	}
	if (r->mail_queued)
		printf("a confirmation mail is queued; matrixd sends it\n");
}

int cmd_subscribe(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"list", required_argument, NULL, 'l'},  {"name", required_argument, NULL, 'n'},
	    {"mode", required_argument, NULL, 'm'},  {"confirm", no_argument, NULL, 'c'},
	    {"resubscribe", no_argument, NULL, 'r'}, {NULL, 0, NULL, 0},
	};
	struct subs_request rq = {.mode = -1, .via = "cli"};
	struct subs_result res;
	struct err e;
	int ch;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'l':
			rq.list = optarg;
			break;
		case 'n':
			rq.name = optarg;
			break;
		case 'm': {
			enum subs_mode m;
			if (subs_mode_parse(optarg, &m) < 0) {
				fprintf(stderr,
				        "matrixctl: --mode is article or digest, not '%s'\n",
				        optarg);
				return cli_usage(subscribe_usage);
			}
			rq.mode = (int)m;
			break;
		}
		case 'c':
			rq.confirm = true;
			break;
		case 'r':
			rq.resubscribe = true;
			break;
		default:
			return cli_usage(subscribe_usage);
		}
	}
	if (optind + 1 != argc)
		return cli_usage(subscribe_usage);
	rq.email = argv[optind];
	rq.actor = cli_actor();
	if (cli_need_store(c) < 0)
		return EXIT_ERR;
	err_clear(&e);
	if (subs_subscribe(c->store, &rq, &res, &e) < 0)
		return cli_fail(&e);
	const char *list = rq.list ? rq.list : SUBS_DEFAULT_LIST;
	if (res.outcome == SUBS_SUPPRESSED) {
		char when[32];
		human_time(when, sizeof when, res.status_at);
		return cli_failf("%s is %s on list '%s' since %s UTC and is kept as a suppression "
		                 "record; pass --resubscribe to subscribe it again (only with the "
		                 "subscriber's renewed consent)",
		                 rq.email, subs_status_name(res.status), list, when);
	}
	print_result(c, rq.email, list, &res);
	if (res.mail_queued)
		cli_wake_daemon(c);
	return EXIT_OK;
}

int cmd_unsubscribe(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"list", required_argument, NULL, 'l'},
	    {NULL, 0, NULL, 0},
	};
	const char *list = NULL;
	struct subs_result res;
	struct err e;
	int ch;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch != 'l')
			return cli_usage(unsubscribe_usage);
		list = optarg;
	}
	if (optind + 1 != argc)
		return cli_usage(unsubscribe_usage);
	const char *email = argv[optind];
	if (cli_need_store(c) < 0)
		return EXIT_ERR;
	err_clear(&e);
	if (subs_unsubscribe(c->store, email, list, "cli", cli_actor(), &res, &e) < 0)
		return cli_fail(&e);
	list = list ? list : SUBS_DEFAULT_LIST;
	if (c->json)
		print_result(c, email, list, &res);
	else if (res.outcome == SUBS_UNCHANGED)
		printf("%s was already unsubscribed from %s; nothing changed\n", email, list);
	else
		printf("unsubscribed %s from %s (was %s)\n", email, list,
		       subs_status_name(res.prev_status));
	return EXIT_OK;
}

/* --- subscribers ------------------------------------------------------------ */

struct listing {
	bool json;
	struct json_object *arr;
	struct table *t;
};

static int add_row(const struct subs_row *r, void *arg)
{
	struct listing *l = arg;
	if (l->json) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "email", json_object_new_string(r->email));
		json_object_object_add(o, "name", json_object_new_string(r->name));
		json_object_object_add(o, "list", json_object_new_string(r->list));
		json_object_object_add(o, "status",
		                       json_object_new_string(subs_status_name(r->status)));
		json_object_object_add(o, "mode", json_object_new_string(subs_mode_name(r->mode)));
		json_object_object_add(o, "since", json_time(r->status_at));
		json_object_object_add(o, "attrs", json_attrs(r->attrs));
		json_object_array_add(l->arr, o);
	} else {
		char since[32];
		human_time(since, sizeof since, r->status_at);
		table_row(l->t, r->email, r->name, r->list, subs_status_name(r->status),
		          subs_mode_name(r->mode), since);
	}
	return 0;
}

/* The records the address-key migration kept apart (subs_rekey). */
static int print_conflicts(struct cli *c)
{
	struct err e;
	size_t n;
	err_clear(&e);
	struct subs_conflict *v = subs_conflicts(c->store, &n, &e);
	if (v == NULL)
		return cli_fail(&e);
	if (c->json) {
		struct json_object *arr = json_object_new_array();
		for (size_t i = 0; i < n; i++) {
			struct json_object *o = json_object_new_object();
			json_object_object_add(o, "id", json_object_new_int64(v[i].subscriber_id));
			json_object_object_add(o, "email", json_object_new_string(v[i].email));
			json_object_object_add(o, "key",
			                       v[i].key ? json_object_new_string(v[i].key) : NULL);
			json_object_object_add(
			    o, "held_by",
			    v[i].holder_email ? json_object_new_int64(v[i].holder_id) : NULL);
			json_object_object_add(
			    o, "held_by_email",
			    v[i].holder_email ? json_object_new_string(v[i].holder_email) : NULL);
			json_object_object_add(o, "problem", json_object_new_string(v[i].problem));
			json_object_object_add(o, "since", json_time(v[i].found_at));
			json_object_array_add(arr, o);
		}
		cli_json_print(arr);
	} else {
		struct table *t = table_new(4, "ID", "EMAIL", "HELD BY", "PROBLEM");
		for (size_t i = 0; i < n; i++) {
			char id[24], *by = NULL;
			snprintf(id, sizeof id, "%lld", (long long)v[i].subscriber_id);
			if (v[i].holder_email)
				by = xasprintf("%lld %s", (long long)v[i].holder_id,
				               v[i].holder_email);
			table_row(t, id, v[i].email, by ? by : "-", v[i].problem);
			free(by);
		}
		table_print(t, stdout);
		if (n)
			printf("\nthese records are kept apart and still get mail; decide for each "
			       "(matrixctl show --id N), then matrixctl forget --id N the one to "
			       "drop; forgetting the holder gives its key to the next record\n");
	}
	subs_conflicts_free(v, n);
	return EXIT_OK;
}

char *cli_conflicts_note(struct cli *c)
{
	size_t n = 0;
	struct subs_conflict *v = subs_conflicts(c->store, &n, NULL);
	char *note = v && n ? xasprintf("%zu subscriber record(s) share a mailbox with another "
	                                "or no longer have a valid address since the "
	                                "address-key change; see matrixctl subscribers "
	                                "--conflicts",
	                                n)
	                    : NULL;
	subs_conflicts_free(v, n);
	return note;
}

/* After a listing: a word on stderr when records wait for a decision. */
static void note_conflicts(struct cli *c)
{
	char *note = cli_conflicts_note(c);
	if (note)
		fprintf(stderr, "matrixctl: note: %s\n", note);
	free(note);
}

int cmd_subscribers(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"list", required_argument, NULL, 'l'},
	    {"status", required_argument, NULL, 's'},
	    {"conflicts", no_argument, NULL, 'c'},
	    {NULL, 0, NULL, 0},
	};
	const char *list = NULL;
	int status = -1, ch;
	bool conflicts = false;
	struct err e;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			conflicts = true;
			break;
		case 'l':
			list = optarg;
			break;
		case 's': {
			enum subs_status st;
			if (subs_status_parse(optarg, &st) < 0) {
				fprintf(
				    stderr,
				    "matrixctl: --status is pending, confirmed, unsubscribed or "
				    "bounced, not '%s'\n",
				    optarg);
				return cli_usage(subscribers_usage);
			}
			status = (int)st;
			break;
		}
		default:
			return cli_usage(subscribers_usage);
		}
	}
	if (optind != argc || (conflicts && (list || status >= 0)))
		return cli_usage(subscribers_usage);
	if (cli_need_store(c) < 0)
		return EXIT_ERR;
	if (conflicts)
		return print_conflicts(c);
	err_clear(&e);
	if (list && subs_list_id(c->store, list, &e) < 0)
		return cli_fail(&e); /* before any output: no empty table on stdout */
	struct listing l = {.json = c->json};
	if (c->json)
		l.arr = json_object_new_array();
	else
		l.t = table_new(6, "EMAIL", "NAME", "LIST", "STATUS", "MODE", "SINCE (UTC)");
	err_clear(&e);
	int rc = subs_each(c->store, list, status, add_row, &l, &e);
	if (c->json) {
		if (rc == 0)
			cli_json_print(l.arr);
		else
			json_object_put(l.arr);
	} else {
		table_print(l.t, stdout); /* also frees it; rows before an error stand */
	}
	if (rc == 0)
		note_conflicts(c);
	return rc == 0 ? EXIT_OK : cli_fail(&e);
}

/* --- show ---------------------------------------------------------------------- */

static void show_json(const struct subs_info *i)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_int64(i->id));
	json_object_object_add(o, "email", json_object_new_string(i->email));
	json_object_object_add(o, "name", json_object_new_string(i->name));
	json_object_object_add(o, "attrs", json_attrs(i->attrs));
	json_object_object_add(o, "bounce_score", json_object_new_int64(i->bounce_score));
	json_object_object_add(o, "created_at", json_time(i->created_at));
	json_object_object_add(o, "updated_at", json_time(i->updated_at));
	struct json_object *ms = json_object_new_array();
	for (size_t k = 0; k < i->nmemberships; k++) {
		const struct subs_membership *m = &i->memberships[k];
		struct json_object *mo = json_object_new_object();
		json_object_object_add(mo, "list", json_object_new_string(m->list));
		json_object_object_add(mo, "status",
		                       json_object_new_string(subs_status_name(m->status)));
		json_object_object_add(mo, "mode", json_object_new_string(subs_mode_name(m->mode)));
		json_object_object_add(mo, "since", json_time(m->status_at));
		json_object_object_add(mo, "bounce_score", json_object_new_int64(m->bounce_score));
		json_object_object_add(mo, "created_at", json_time(m->created_at));
		struct json_object *co = NULL;
		if (m->consent_at > 0) {
			co = json_object_new_object();
			json_object_object_add(co, "at", json_time(m->consent_at));
			json_object_object_add(co, "via", json_object_new_string(m->consent_via));
			json_object_object_add(co, "by", json_object_new_string(m->consent_by));
		}
		json_object_object_add(mo, "consent", co);
		json_object_array_add(ms, mo);
	}
	json_object_object_add(o, "memberships", ms);
	struct json_object *ev = json_object_new_array();
	for (size_t k = 0; k < i->nevents; k++) {
		const struct subs_event *e = &i->events[k];
		struct json_object *eo = json_object_new_object();
		json_object_object_add(eo, "at", json_time(e->at));
		json_object_object_add(eo, "kind", json_object_new_string(e->kind));
		json_object_object_add(eo, "list",
		                       *e->list ? json_object_new_string(e->list) : NULL);
		json_object_object_add(eo, "via", json_object_new_string(e->via));
		json_object_object_add(eo, "actor", json_object_new_string(e->actor));
		json_object_object_add(eo, "detail", json_object_new_string(e->detail));
		json_object_array_add(ev, eo);
	}
	json_object_object_add(o, "events", ev);
	struct json_object *d = json_object_new_object();
	for (int k = 0; k < LEDGER_NSTATES; k++)
		json_object_object_add(d, ledger_state_name((enum ledger_state)k),
		                       json_object_new_int64(i->deliveries.n[k]));
	json_object_object_add(o, "deliveries", d);
	cli_json_print(o);
}

static void show_text(const struct subs_info *i)
{
	char a[32], b[32], c[32];
	human_time(a, sizeof a, i->created_at);
	human_time(b, sizeof b, i->updated_at);
	/* what subscribers typed, shown without controls that reorder a line */
	char *email = utf8_clean_dup(i->email, UTF8_NO_BIDI);
	char *name = utf8_clean_dup(i->name, UTF8_NO_BIDI);
	printf("email:         %s\n", email);
	printf("name:          %s\n", name);
	free(email);
	free(name);
	printf("id:            %lld\n", (long long)i->id);
	printf("added:         %s UTC\n", a);
	printf("updated:       %s UTC\n", b);
	printf("bounce score:  %lld (all lists)\n", (long long)i->bounce_score);
	printf("deliveries:   ");
	for (int k = 0; k < LEDGER_NSTATES; k++)
		printf(" %s %lld%s", ledger_state_name((enum ledger_state)k),
		       (long long)i->deliveries.n[k], k < LEDGER_NSTATES - 1 ? "," : "\n");
	struct json_object *attrs = json_attrs(i->attrs);
	if (json_object_object_length(attrs) > 0) {
		printf("attributes:\n");
		struct table *t = table_new(2, "  NAME", "VALUE");
		json_object_object_foreach(attrs, k, v)
		{
			char *key = xasprintf("  %s", k);
			table_row(t, key, json_object_get_string(v));
			free(key);
		}
		table_print(t, stdout);
	}
	json_object_put(attrs);

	printf("\nmemberships:\n");
	struct table *t =
	    table_new(6, "LIST", "STATUS", "MODE", "SINCE (UTC)", "BOUNCES", "CONSENT");
	for (size_t k = 0; k < i->nmemberships; k++) {
		const struct subs_membership *m = &i->memberships[k];
		char *consent = NULL, score[24];
		human_time(a, sizeof a, m->status_at);
		human_time(c, sizeof c, m->consent_at);
		snprintf(score, sizeof score, "%lld", (long long)m->bounce_score);
		if (m->consent_at > 0)
			consent = xasprintf("%s via %s by %s", c, m->consent_via, m->consent_by);
		table_row(t, m->list, subs_status_name(m->status), subs_mode_name(m->mode), a,
		          score, consent ? consent : "none recorded");
		free(consent);
	}
	table_print(t, stdout);

	printf("\nhistory:\n");
	t = table_new(6, "AT (UTC)", "EVENT", "LIST", "VIA", "BY", "DETAIL");
	for (size_t k = 0; k < i->nevents; k++) {
		const struct subs_event *e = &i->events[k];
		human_time(a, sizeof a, e->at);
		table_row(t, a, e->kind, e->list, e->via, e->actor, e->detail);
	}
	table_print(t, stdout);
}

/* EMAIL or --id N: *email NULL and *id set for the second. */
static int one_email(int argc, char **argv, const char *usage, const char **email, int64_t *id)
{
	static const struct option opts[] = {{"id", required_argument, NULL, 'i'},
	                                     {NULL, 0, NULL, 0}};
	int ch;
	*email = NULL;
	*id = 0;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		char *end;
		if (ch != 'i')
			return cli_usage(usage);
		long long v = strtoll(optarg, &end, 10);
		if (*optarg == '\0' || *end != '\0' || v <= 0) {
			fprintf(stderr,
			        "matrixctl: --id takes a subscriber id (a number), not '%s'\n",
			        optarg);
			return cli_usage(usage);
		}
		*id = v;
	}
	if (*id ? optind != argc : optind + 1 != argc)
		return cli_usage(usage);
	if (*id == 0)
		*email = argv[optind];
	return EXIT_OK;
}

int cmd_show(struct cli *c, int argc, char **argv)
{
	struct err e;
	const char *email;
	int64_t id;
	int rc = one_email(argc, argv, show_usage, &email, &id);
	if (rc != EXIT_OK)
		return rc;
	if (cli_need_store(c) < 0)
		return EXIT_ERR;
	err_clear(&e);
	struct subs_info *i =
	    email ? subs_show(c->store, email, &e) : subs_show_id(c->store, id, &e);
	if (i == NULL)
		return cli_fail(&e);
	if (c->json)
		show_json(i);
	else
		show_text(i);
	subs_info_free(i);
	return EXIT_OK;
}

int cmd_forget(struct cli *c, int argc, char **argv)
{
	struct subs_forgotten f;
	struct err e;
	const char *email;
	int64_t id;
	char idbuf[32];
	int rc = one_email(argc, argv, forget_usage, &email, &id);
	if (rc != EXIT_OK)
		return rc;
	if (cli_need_store(c) < 0)
		return EXIT_ERR;
	err_clear(&e);
	if ((email ? subs_forget(c->store, email, cli_actor(), &f, &e)
	           : subs_forget_id(c->store, id, cli_actor(), &f, &e)) < 0)
		return cli_fail(&e);
	if (email == NULL) {
		snprintf(idbuf, sizeof idbuf, "subscriber %lld", (long long)id);
		email = idbuf;
	}
	if (c->json) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "email", json_object_new_string(email));
		json_object_object_add(o, "forgotten", json_object_new_boolean(1));
		json_object_object_add(o, "memberships", json_object_new_int64(f.memberships));
		json_object_object_add(o, "events", json_object_new_int64(f.events));
		json_object_object_add(o, "deliveries", json_object_new_int64(f.deliveries));
		json_object_object_add(o, "wal_truncated",
		                       json_object_new_boolean(f.wal_truncated));
		cli_json_print(o);
	} else {
		printf("forgot %s: erased the subscriber, %lld membership(s), %lld event(s), "
		       "%lld delivery record(s)\n",
		       email, (long long)f.memberships, (long long)f.events,
		       (long long)f.deliveries);
	}
	if (!f.wal_truncated)
		fprintf(stderr,
		        "matrixctl: warning: another process is reading the database, so the "
		        "write-ahead log could not be truncated yet; old copies of the record "
		        "stay in %s-wal until matrixd checkpoints it (or run forget again)\n",
		        c->store->path);
	return EXIT_OK;
}
