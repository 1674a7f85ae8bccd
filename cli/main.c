/*
 * matrixctl: the admin's tool. Global options, the command table and the
 * helpers every command shares (config, store, errors, JSON, tables).
 */
#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "store.h"
#include "utf8.h"
#include "xmalloc.h"

#ifndef MATRIXD_VERSION
#define MATRIXD_VERSION "dev"
#endif

struct command {
	const char *name;
	int (*fn)(struct cli *, int, char **);
	const char *usage;
};

static const struct command commands[] = {
    {"lists", cmd_lists, "lists"},
    {"list-create", cmd_list_create,
     "list-create NAME [--title T] [--description D] [--pace DURATION] [--private]"},
    {"list-set", cmd_list_set,
     "list-set NAME [--title T] [--description D] [--pace DURATION] [--public|--private]"},
    {"list-delete", cmd_list_delete, "list-delete NAME [--force]"},
    {"subscribe", cmd_subscribe,
     "subscribe EMAIL [--list NAME] [--name N] [--mode article|digest] [--confirm] "
     "[--resubscribe]"},
    {"unsubscribe", cmd_unsubscribe, "unsubscribe EMAIL [--list NAME]"},
    {"subscribers", cmd_subscribers,
     "subscribers [--list NAME] [--status pending|confirmed|unsubscribed|bounced] | "
     "subscribers --conflicts"},
    {"import", cmd_import, "import FILE.csv [--list NAME] [--atomic] [--dry-run] [--resubscribe]"},
    {"export", cmd_export, "export [--list NAME]"},
    {"show", cmd_show, "show EMAIL | show --id N"},
    {"forget", cmd_forget, "forget EMAIL | forget --id N"},
    {"inspect", cmd_inspect, "inspect ISSUE"},
    {"render", cmd_render, "render ISSUE --out DIR [--to EMAIL]"},
    {"send-test", cmd_send_test, "send-test ISSUE --to EMAIL [--digest]"},
    {"status", cmd_status, "status"},
    {"retry", cmd_retry, "retry [--issue N]"},
    {"release", cmd_release, "release N"},
    {"bounce", cmd_bounce, "bounce [--dry-run] < MESSAGE"},
    {"dkim-keygen", cmd_dkim_keygen,
     "dkim-keygen --selector S [--type rsa|ed25519] [--bits N] --out FILE"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
	fprintf(f, "usage: matrixctl [-c FILE] [--json] COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  %s\n", commands[i].usage);
	fprintf(f,
	        "\n-c FILE defaults to $MATRIXD_CONF, then %s.\n"
	        "See matrixctl(8).\n",
	        CONF_DEFAULT_PATH);
}

int cli_fail(const struct err *e)
{
	fprintf(stderr, "matrixctl: %s\n", e->msg[0] ? e->msg : "unknown error");
	return e->kind == ERR_USAGE ? EXIT_USAGE : EXIT_ERR;
}

int cli_failf(const char *fmt, ...)
{
	va_list ap;
	fputs("matrixctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_ERR;
}

int cli_usage(const char *u)
{
	fprintf(stderr, "usage: matrixctl %s\n", u);
	return EXIT_USAGE;
}

void cli_json_print(struct json_object *o)
{
	fputs(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
	                                            JSON_C_TO_STRING_NOSLASHESCAPE),
	      stdout);
	fputc('\n', stdout);
	json_object_put(o);
}

const char *cli_actor(void)
{
	static char actor[300];
	if (actor[0] == '\0') {
		struct passwd *pw = getpwuid(getuid());
		if (pw)
			snprintf(actor, sizeof actor, "cli:%s", pw->pw_name);
		else
			snprintf(actor, sizeof actor, "cli:uid=%u", (unsigned)getuid());
	}
	return actor;
}

int cli_need_conf(struct cli *c)
{
	if (c->have_conf)
		return 0;
	struct err e;
	err_clear(&e);
	if (conf_load(&c->conf, c->conf_path, &e) < 0) {
		/* a missing file's message says where one comes from (conf_load) */
		fprintf(stderr, "matrixctl: %s\n", e.msg);
		return -1;
	}
	c->have_conf = true;
	conf_apply_timezone(&c->conf);
	return 0;
}

int cli_want_conf(struct cli *c)
{
	struct stat st;
	if (c->have_conf)
		return 0;
	if (!c->conf_explicit && stat(c->conf_path, &st) < 0) {
		conf_defaults(&c->conf);
		c->have_conf = true;
		return 0;
	}
	return cli_need_conf(c);
}

/* Releases what the commands opened (the store is closed by store.c's owner). */
static void cli_close(struct cli *c)
{
	if (c->store)
		store_close(c->store);
	if (c->have_conf)
		conf_free(&c->conf);
}

int main(int argc, char **argv)
{
	struct cli c = {0};
	int rc;

	/* --json is accepted anywhere before "--", as admins type it at the end. */
	int n = 0;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			memmove(&argv[n], &argv[i], (size_t)(argc - i) * sizeof *argv);
			n += argc - i;
			break;
		}
		if (strcmp(argv[i], "--json") == 0)
			c.json = true;
		else
			argv[n++] = argv[i];
	}
	argc = n;
	argv[argc] = NULL;

	for (int i = 1; i < argc; i++)
		if (!utf8_valid(argv[i], strlen(argv[i]), NULL))
			return cli_failf("argument %d is not valid UTF-8", i);

	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "+c:hV", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			c.conf_path = optarg;
			c.conf_explicit = true;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case 'V':
			printf("matrixctl %s\n", MATRIXD_VERSION);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (c.conf_path == NULL) {
		const char *env = getenv("MATRIXD_CONF");
		c.conf_path = env && *env ? env : CONF_DEFAULT_PATH;
		c.conf_explicit = env && *env;
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *name = argv[optind];
	const struct command *cmd = NULL;
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			cmd = &commands[i];
	if (cmd == NULL) {
		fprintf(stderr, "matrixctl: unknown command '%s'\n", name);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (cmd->fn == NULL)
		return cli_failf("'%s' is not available in this build", name);
	int at = optind;
	optind = 0; /* GNU getopt: full re-initialisation for the command's options */
	rc = cmd->fn(&c, argc - at, argv + at);
	cli_close(&c);
	/* What was printed is a write too: a full disk or a closed pipe must not
	 * end in exit 0 with the output lost (stdio only says so here). */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "matrixctl: writing the output: %s\n",
		        strerror(errno ? errno : EIO));
		if (rc == EXIT_OK)
			rc = EXIT_ERR;
	}
	return rc;
}

int cli_need_store(struct cli *c)
{
	if (c->store)
		return 0;
	if (cli_need_conf(c) < 0)
		return -1;
	struct err e;
	err_clear(&e);
	if (store_open(&c->store, c->conf.state_dir, &e) < 0) {
		cli_fail(&e);
		return -1;
	}
	return 0;
}
