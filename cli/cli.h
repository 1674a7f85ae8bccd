/*
 * matrixctl: one file per noun (lists.c, subscribers.c, issue.c, …), each
 * defining cmd_* functions that main.c dispatches to. A command returns the
 * process exit code: 0 ok, 1 error (message on stderr), 2 usage.
 */
#ifndef MATRIX_CLI_H
#define MATRIX_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include <json-c/json.h>

#include "conf.h"
#include "err.h"

struct store;

struct cli {
	const char *conf_path; /* -c FILE, $MATRIXD_CONF, or CONF_DEFAULT_PATH */
	bool conf_explicit;    /* given with -c or $MATRIXD_CONF */
	bool json;             /* --json: machine-readable output on stdout */
	struct conf conf;
	bool have_conf;
	struct store *store;
};

enum { EXIT_OK = 0, EXIT_ERR = 1, EXIT_USAGE = 2 };

/* Loads the configuration once. On failure prints the error, returns -1. */
int cli_need_conf(struct cli *c);
/* Like cli_need_conf, but falls back to built-in defaults when no file was
 * named and the default file does not exist (inspect works without one). */
int cli_want_conf(struct cli *c);
/* Opens (and migrates) the store once; prints the error and returns -1. */
int cli_need_store(struct cli *c);

/* For the commands that make mail of an issue for one address: checks the
 * address to, then loads the configuration, the templates and the issue at
 * path (*is and *t are NULL on failure); prints the error and returns -1. */
struct issue;
struct tmpl;
int cli_issue_for_mail(struct cli *c, const char *path, const char *to, struct issue **is,
                       struct tmpl **t);

/* After a commit that queued mail: wakes the running daemon (ledger_wake);
 * a failure is only a warning, the mail stays queued. */
void cli_wake_daemon(struct cli *c);

/* What status and the listings say while subscriber records wait for the
 * admin after the address-key change (migration 3), or NULL: free it. */
char *cli_conflicts_note(struct cli *c);

/* Prints "matrixctl: MSG" on stderr; returns 2 for ERR_USAGE, else 1. */
int cli_fail(const struct err *e);
int cli_failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "usage: matrixctl USAGE" on stderr and returns 2. */
int cli_usage(const char *usage);
/* Prints o as pretty JSON plus a newline on stdout, then drops the reference. */
void cli_json_print(struct json_object *o);
/* The Unix user running the command, for consent records ("cli:alice"). */
const char *cli_actor(void);

/* Display-width aware text tables (CJK columns line up). */
struct table;
struct table *table_new(int ncols, ...);    /* header names */
void table_row(struct table *t, ...);       /* ncols strings (NULL = "") */
void table_print(struct table *t, FILE *f); /* prints and frees */

/* Commands; unresolved ones report "not available in this build". */
#define CMD(name) int name(struct cli *c, int argc, char **argv) __attribute__((weak))
CMD(cmd_lists);
CMD(cmd_list_create);
CMD(cmd_list_set);
CMD(cmd_list_delete);
CMD(cmd_subscribe);
CMD(cmd_unsubscribe);
CMD(cmd_subscribers);
CMD(cmd_import);
CMD(cmd_export);
CMD(cmd_show);
CMD(cmd_forget);
CMD(cmd_inspect);
CMD(cmd_render);
CMD(cmd_send_test);
CMD(cmd_status);
CMD(cmd_retry);
CMD(cmd_release);
CMD(cmd_bounce);
CMD(cmd_dkim_keygen);
#undef CMD

#endif
