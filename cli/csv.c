/*
 * matrixctl import and export: subscribers as CSV (lib/subs_csv.c does the
 * work). Bad rows are printed as "FILE:LINE: what is wrong" on stderr, one
 * per line and without the program prefix, so that editors and grep can use
 * them; the summary goes to stdout (JSON with --json).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "store.h"
#include "subs.h"

static const char import_usage[] =
    "import FILE.csv [--list NAME] [--atomic] [--dry-run] [--resubscribe]";
static const char export_usage[] = "export [--list NAME]";

#define JSON_REJECTS_MAX 1000

struct rejects {
	struct json_object *arr; /* the first JSON_REJECTS_MAX, for --json */
};

static void on_reject(void *arg, int line, const char *msg)
{
	struct rejects *r = arg;
	fprintf(stderr, "%s\n", msg);
	if (r->arr && json_object_array_length(r->arr) < JSON_REJECTS_MAX) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "line", json_object_new_int(line));
		json_object_object_add(o, "error", json_object_new_string(msg));
		json_object_array_add(r->arr, o);
	}
}

int cmd_import(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"list", required_argument, NULL, 'l'},
	    {"atomic", no_argument, NULL, 'a'},
	    {"dry-run", no_argument, NULL, 'n'},
	    {"resubscribe", no_argument, NULL, 'r'},
	    {NULL, 0, NULL, 0},
	};
	struct subs_import_opts o = {0};
	struct subs_import_stats st;
	struct rejects rj = {0};
	struct err e;
	int ch;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'l':
			o.list = optarg;
			break;
		case 'a':
			o.atomic = true;
			break;
		case 'n':
			o.dry_run = true;
			break;
		case 'r':
			o.resubscribe = true;
			break;
		default:
			return cli_usage(import_usage);
		}
	}
	if (optind + 1 != argc)
		return cli_usage(import_usage);
	const char *path = argv[optind];
	const char *list = o.list ? o.list : SUBS_DEFAULT_LIST;
	if (cli_need_store(c) < 0)
		return EXIT_ERR;
	if (c->json)
		rj.arr = json_object_new_array();
	o.actor = cli_actor();
	o.reject = on_reject;
	o.arg = &rj;
	const char *chunk = getenv("MATRIXCTL_IMPORT_CHUNK"); /* tests and bench/import */
	if (chunk && *chunk)
		o.chunk = (size_t)strtoul(chunk, NULL, 10);
	err_clear(&e);
	int rc = subs_import(c->store, path, &o, &st, &e);
	bool imported = rc == 0 && !o.dry_run;

	if (c->json) {
		struct json_object *j = json_object_new_object();
		json_object_object_add(j, "file", json_object_new_string(path));
		json_object_object_add(j, "list", json_object_new_string(list));
		json_object_object_add(j, "dry_run", json_object_new_boolean(o.dry_run));
		json_object_object_add(j, "atomic", json_object_new_boolean(o.atomic));
		json_object_object_add(j, "ok", json_object_new_boolean(rc == 0 && !st.rejected));
		json_object_object_add(j, "rows", json_object_new_int64(st.rows));
		json_object_object_add(j, "added", json_object_new_int64(st.added));
		json_object_object_add(j, "updated", json_object_new_int64(st.updated));
		json_object_object_add(j, "unchanged", json_object_new_int64(st.unchanged));
		json_object_object_add(j, "skipped", json_object_new_int64(st.skipped));
		json_object_object_add(j, "rejected", json_object_new_int64(st.rejected));
		json_object_object_add(j, "rejects", rj.arr);
		json_object_object_add(j, "error", rc < 0 ? json_object_new_string(e.msg) : NULL);
		cli_json_print(j);
	} else if (rc == 0 || st.rows > 0) {
		printf("%s%s into %s: %lld row(s): %s%lld added, %lld updated, %lld unchanged, "
		       "%lld skipped (unsubscribed or bounced), %lld rejected\n",
		       o.dry_run ? "dry run, nothing written: " : "", path, list,
		       (long long)st.rows, o.dry_run ? "would be " : "", (long long)st.added,
		       (long long)st.updated, (long long)st.unchanged, (long long)st.skipped,
		       (long long)st.rejected);
		if (imported && st.rejected)
			printf("%lld bad row(s) were not imported (listed above); the other rows "
			       "were. Fix them and import the file again: rows already imported "
			       "count as unchanged\n",
			       (long long)st.rejected);
	}
	if (rc < 0)
		return cli_fail(&e);
	return st.rejected ? EXIT_ERR : EXIT_OK;
}

int cmd_export(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"list", required_argument, NULL, 'l'},
	    {NULL, 0, NULL, 0},
	};
	const char *list = NULL;
	struct err e;
	int ch;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch != 'l')
			return cli_usage(export_usage);
		list = optarg;
	}
	if (optind != argc)
		return cli_usage(export_usage);
	if (cli_need_store(c) < 0)
		return EXIT_ERR;
	err_clear(&e);
	if (subs_export(c->store, list, stdout, NULL, &e) < 0)
		return cli_fail(&e);
	return EXIT_OK;
}
