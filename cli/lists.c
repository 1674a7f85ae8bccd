/*
 * matrixctl lists, list-create, list-set, list-delete: the mailing lists themselves.
 * The rules (names, the default list, what --force removes) are in
 * lib/subs.c; this file parses argv and prints.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "store.h"
#include "subs.h"

static const char lists_usage[] = "lists";
static const char create_usage[] =
    "list-create NAME [--title T] [--description D] [--pace DURATION] [--private]";
static const char set_usage[] =
    "list-set NAME [--title T] [--description D] [--pace DURATION] [--public|--private]";
static const char delete_usage[] = "list-delete NAME [--force]";

static void iso_time(char *out, size_t n, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int cmd_lists(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {{NULL, 0, NULL, 0}};
	struct err e;
	size_t n;

	if (getopt_long(argc, argv, "", opts, NULL) != -1 || optind != argc)
		return cli_usage(lists_usage);
	if (cli_need_store(c) < 0)
		return EXIT_ERR;
	err_clear(&e);
	struct subs_list *l = subs_lists(c->store, &n, &e);
	if (l == NULL)
		return cli_fail(&e);
	if (c->json) {
		struct json_object *arr = json_object_new_array();
		for (size_t i = 0; i < n; i++) {
			char when[32];
			struct json_object *o = json_object_new_object();
			struct json_object *counts = json_object_new_object();
			int64_t total = 0;
			iso_time(when, sizeof when, l[i].created_at);
			json_object_object_add(o, "name", json_object_new_string(l[i].name));
			json_object_object_add(o, "title", json_object_new_string(l[i].title));
			json_object_object_add(o, "description",
			                       json_object_new_string(l[i].description));
			json_object_object_add(o, "created_at", json_object_new_string(when));
			json_object_object_add(o, "pace", json_object_new_int64(l[i].pace));
			json_object_object_add(o, "private",
			                       json_object_new_boolean(l[i].is_private));
			for (int k = 0; k < SUBS_NSTATUS; k++) {
				json_object_object_add(counts,
				                       subs_status_name((enum subs_status)k),
				                       json_object_new_int64(l[i].count[k]));
				total += l[i].count[k];
			}
			json_object_object_add(o, "subscribers", counts);
			json_object_object_add(o, "total", json_object_new_int64(total));
			json_object_array_add(arr, o);
		}
		cli_json_print(arr);
	} else {
		struct table *t = table_new(8, "LIST", "TITLE", "CONFIRMED", "PENDING",
		                            "UNSUBSCRIBED", "BOUNCED", "PACE", "WEB");
		for (size_t i = 0; i < n; i++) {
			char num[SUBS_NSTATUS][24];
			for (int k = 0; k < SUBS_NSTATUS; k++)
				snprintf(num[k], sizeof num[k], "%lld", (long long)l[i].count[k]);
			char pace[32];
			subs_pace_format(l[i].pace, pace, sizeof pace);
			table_row(t, l[i].name, l[i].title, num[SUBS_CONFIRMED], num[SUBS_PENDING],
			          num[SUBS_UNSUBSCRIBED], num[SUBS_BOUNCED], pace,
			          l[i].is_private ? "private" : "public");
		}
		table_print(t, stdout);
	}
	subs_lists_free(l, n);
	return EXIT_OK;
}

static int bad_pace(const char *v)
{
	return cli_failf("--pace %s: a duration such as 90s, 15m, 3h, 1d or 1h30m (0: no pace), "
	                 "at most 30d",
	                 v);
}

int cmd_list_set(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"title", required_argument, NULL, 't'}, {"description", required_argument, NULL, 'd'},
	    {"pace", required_argument, NULL, 'p'},  {"private", no_argument, NULL, 'P'},
	    {"public", no_argument, NULL, 'W'},      {NULL, 0, NULL, 0},
	};
	const char *title = NULL, *desc = NULL;
	int64_t pace = -1;
	int priv = -1; /* keep */
	struct err e;
	int ch;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 't':
			title = optarg;
			break;
		case 'd':
			desc = optarg;
			break;
		case 'p':
			if (subs_pace_parse(optarg, &pace) < 0)
				return bad_pace(optarg);
			break;
		case 'P':
		case 'W':
			if (priv == (ch == 'W'))
				return cli_usage(set_usage); /* both */
			priv = ch == 'P';
			break;
		default:
			return cli_usage(set_usage);
		}
	}
	if (optind + 1 != argc || (title == NULL && desc == NULL && pace < 0 && priv < 0))
		return cli_usage(set_usage);
	const char *name = argv[optind];
	if (cli_need_store(c) < 0)
		return EXIT_ERR;
	err_clear(&e);
	/* one transaction: all of it or nothing */
	if (store_begin(c->store, &e) < 0)
		return cli_fail(&e);
	if (((title || desc || pace >= 0) &&
	     subs_list_set(c->store, name, title, desc, pace, cli_actor(), &e) < 0) ||
	    (priv >= 0 &&
	     subs_list_set_private(c->store, name, priv == 1, cli_actor(), NULL, &e) < 0)) {
		store_rollback(c->store);
		return cli_fail(&e);
	}
	if (store_commit(c->store, &e) < 0)
		return cli_fail(&e);
	if (title || priv >= 0)
		cli_wake_daemon(c); /* the archive pages' form offers the public lists */
	char p[32];
	if (pace >= 0)
		subs_pace_format(pace, p, sizeof p);
	if (c->json) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(name));
		if (title)
			json_object_object_add(o, "title", json_object_new_string(title));
		if (desc)
			json_object_object_add(o, "description", json_object_new_string(desc));
		if (pace >= 0)
			json_object_object_add(o, "pace", json_object_new_int64(pace));
		if (priv >= 0)
			json_object_object_add(o, "private", json_object_new_boolean(priv));
		cli_json_print(o);
	} else {
		printf("list %s changed", name);
		if (pace >= 0)
			printf("; pace %s (for issues queued from now on)", p);
		if (priv == 1)
			printf("; private: the web form no longer offers it or takes subscriptions "
			       "to it");
		else if (priv == 0)
			printf("; public: the web form offers it");
		printf("\n");
	}
	return EXIT_OK;
}

int cmd_list_create(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"title", required_argument, NULL, 't'},
	    {"description", required_argument, NULL, 'd'},
	    {"pace", required_argument, NULL, 'p'},
	    {"private", no_argument, NULL, 'P'},
	    {NULL, 0, NULL, 0},
	};
	const char *title = NULL, *desc = NULL;
	int64_t pace = 0;
	bool priv = false;
	struct err e;
	int ch;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 't':
			title = optarg;
			break;
		case 'd':
			desc = optarg;
			break;
		case 'p':
			if (subs_pace_parse(optarg, &pace) < 0)
				return bad_pace(optarg);
			break;
		case 'P':
			priv = true;
			break;
		default:
			return cli_usage(create_usage);
		}
	}
	if (optind + 1 != argc)
		return cli_usage(create_usage);
	const char *name = argv[optind];
	if (cli_need_store(c) < 0)
		return EXIT_ERR;
	err_clear(&e);
	/* one transaction: a list is never seen public before it is private */
	if (store_begin(c->store, &e) < 0)
		return cli_fail(&e);
	if (subs_list_create(c->store, name, title, desc, cli_actor(), &e) < 0 ||
	    (pace > 0 && subs_list_set(c->store, name, NULL, NULL, pace, cli_actor(), &e) < 0) ||
	    (priv && subs_list_set_private(c->store, name, true, cli_actor(), NULL, &e) < 0)) {
		store_rollback(c->store);
		return cli_fail(&e);
	}
	if (store_commit(c->store, &e) < 0)
		return cli_fail(&e);
	if (!priv)
		cli_wake_daemon(c); /* the archive pages' form offers the public lists */
	if (c->json) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(name));
		json_object_object_add(o, "title",
		                       json_object_new_string(title && *title ? title : name));
		json_object_object_add(o, "description", json_object_new_string(desc ? desc : ""));
		json_object_object_add(o, "pace", json_object_new_int64(pace));
		json_object_object_add(o, "private", json_object_new_boolean(priv));
		json_object_object_add(o, "created", json_object_new_boolean(1));
		cli_json_print(o);
	} else {
		printf("created list %s%s\n", name,
		       priv ? " (private: not offered on the web)" : "");
	}
	return EXIT_OK;
}

int cmd_list_delete(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"force", no_argument, NULL, 'f'},
	    {NULL, 0, NULL, 0},
	};
	bool force = false;
	int64_t removed = 0;
	struct err e;
	int ch;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch != 'f')
			return cli_usage(delete_usage);
		force = true;
	}
	if (optind + 1 != argc)
		return cli_usage(delete_usage);
	const char *name = argv[optind];
	if (cli_need_store(c) < 0)
		return EXIT_ERR;
	err_clear(&e);
	if (subs_list_delete(c->store, name, force, cli_actor(), &removed, &e) < 0)
		return cli_fail(&e);
	cli_wake_daemon(c); /* the archive pages' form offers the public lists */
	if (c->json) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(name));
		json_object_object_add(o, "deleted", json_object_new_boolean(1));
		json_object_object_add(o, "memberships_removed", json_object_new_int64(removed));
		cli_json_print(o);
	} else if (removed) {
		printf("deleted list %s and its %lld subscriber record(s)\n", name,
		       (long long)removed);
	} else {
		printf("deleted list %s\n", name);
	}
	return EXIT_OK;
}
