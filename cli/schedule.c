/*
 * matrixctl release: sends an issue whose send_at was missed by more than
 * schedule_grace, which the daemon holds instead of mailing a stale issue
 * (docs/design.md, "Scheduled issues"). The rule of what may be released is
 * lib/archive.c's; this file parses argv, wakes the daemon and prints.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "archive.h"
#include "cli.h"
#include "store.h"

int cmd_release(struct cli *c, int argc, char **argv)
{
	static const char usage[] = "release N";
	static const struct option opts[] = {{NULL, 0, NULL, 0}};
	if (getopt_long(argc, argv, "", opts, NULL) != -1 || optind + 1 != argc)
		return cli_usage(usage);
	char *end;
	long number = strtol(argv[optind], &end, 10);
	if (*end || end == argv[optind] || number <= 0 || number > 1000000)
		return cli_usage(usage);
	if (cli_need_store(c) < 0)
		return EXIT_ERR;
	struct err e;
	err_clear(&e);
	if (archive_release(c->store, (int)number, store_now(), &e) < 0)
		return cli_fail(&e);
	cli_wake_daemon(c);
	if (c->json) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "number", json_object_new_int((int)number));
		json_object_object_add(o, "released", json_object_new_boolean(1));
		cli_json_print(o);
	} else {
		printf("released issue %ld; a running matrixd publishes and sends it now (or run "
		       "matrixd --once)\n",
		       number);
	}
	return EXIT_OK;
}
