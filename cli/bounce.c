/*
 * matrixctl bounce: the MTA pipes each message for our VERP and
 * unsubscribe addresses here (docs/postfix.md). This file reads standard
 * input and the options, hands the message to lib/inbound.c, prints what
 * happened and turns it into the exit status the MTA acts on
 * (<sysexits.h>, as pipe(8) and Exim read it):
 *
 *   0             recorded, or certainly not ours (the MTA must never
 *                 bounce a bounce)
 *   75 TEMPFAIL   the configuration, the key or the store failed: nothing
 *                 was recorded, and the MTA keeps the message and offers it
 *                 again later
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "bounce.h"
#include "buf.h"
#include "cli.h"
#include "inbound.h"
#include "token.h"

/* Reads all of standard input; past the limit it still drains it, so the
 * MTA sees the message taken. */
static int read_stdin(struct buf *b, bool *too_big)
{
	char chunk[65536];
	ssize_t n;
	*too_big = false;
	for (;;) {
		n = read(STDIN_FILENO, chunk, sizeof chunk);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (!*too_big && buf_add(b, chunk, (size_t)n) < 0)
			*too_big = true;
	}
	return n < 0 ? -1 : 0;
}

/* What happened, in one line for a human or an MTA's log. */
static void print_what(const struct inbound_result *r, int threshold)
{
	const struct ledger_delivery *d = &r->delivery;
	bool complaint = r->report && r->report->kind == BOUNCE_COMPLAINT;
	switch (r->action) {
	case INBOUND_FAILED:
	case INBOUND_BOUNCED:
		printf("delivery=%" PRId64 " subscriber=%" PRId64 " list=%" PRId64
		       " failed: bounce score %d of %d%s\n",
		       d->id, d->subscriber_id, d->list_id, r->score, threshold,
		       r->action == INBOUND_BOUNCED ? "; now bounced, no more mail from this list"
		                                    : "");
		break;
	case INBOUND_REFUSED:
		printf("delivery=%" PRId64 " subscriber=%" PRId64
		       " failed: the receiver refused us, not the address; not counted toward "
		       "the bounce score\n",
		       d->id, d->subscriber_id);
		break;
	case INBOUND_REPEATED:
		printf("delivery=%" PRId64 ": bounce already recorded for this delivery; "
		       "nothing changed\n",
		       d->id);
		break;
	case INBOUND_DELAYED:
		printf("delivery=%" PRId64 " subscriber=%" PRId64
		       " delayed: noted in the history\n",
		       d->id, d->subscriber_id);
		break;
	case INBOUND_UNSUBSCRIBED:
		printf("subscriber=%" PRId64 " list=%" PRId64 " %s\n", r->subscriber_id, r->list_id,
		       complaint ? "complained: unsubscribed" : "unsubscribed");
		break;
	case INBOUND_UNCHANGED:
		printf("subscriber=%" PRId64 " list=%" PRId64 " %s%s\n", r->subscriber_id,
		       r->list_id, complaint ? "complained, " : "", r->why);
		break;
	case INBOUND_HINT_ONLY:
		printf("names delivery=%" PRId64 " only in its In-Reply-To or References, which "
		       "any reply has: not acted on; dropped\n",
		       d->id);
		break;
	case INBOUND_DRY_RUN:
		printf("dry run: nothing recorded\n");
		break;
	case INBOUND_DROPPED:
		printf("%s; dropped\n", r->why);
		break;
	}
}

static void print_result(const struct cli *c, const struct inbound_result *r, bool dry)
{
	const struct bounce *b = r->report;
	bool show = r->delivery.id != 0 && r->action != INBOUND_HINT_ONLY;
	if (c->json) {
		struct json_object *dj = NULL;
		if (show) {
			dj = json_object_new_object();
			json_object_object_add(dj, "issue", json_object_new_int(r->delivery.issue));
			json_object_object_add(dj, "article",
			                       json_object_new_int(r->delivery.article));
			json_object_object_add(dj, "subscriber",
			                       json_object_new_string(r->delivery.email));
		}
		struct json_object *o = bounce_to_json(b, dj);
		if (!dry)
			json_object_object_add(
			    o, "result", json_object_new_string(inbound_action_name(r->action)));
		cli_json_print(o);
		return;
	}
	printf("%s", bounce_kind_name(b->kind));
	for (size_t i = 0; i < b->nrcpts && i < 5; i++)
		printf(" %s %s%s%s", b->rcpts[i].address, b->rcpts[i].status,
		       b->rcpts[i].diagnostic[0] ? ": " : "", b->rcpts[i].diagnostic);
	if (show)
		printf(" [issue %d, article %d, subscriber %s]", r->delivery.issue,
		       r->delivery.article, r->delivery.email);
	printf("\n");
	print_what(r, c->conf.bounce_threshold);
}

int cmd_bounce(struct cli *c, int argc, char **argv)
{
	static const char usage[] = "bounce [--dry-run] < MESSAGE";
	static const struct option opts[] = {{"dry-run", no_argument, NULL, 'n'},
	                                     {NULL, 0, NULL, 0}};
	bool dry = false;
	int ch;
	while ((ch = getopt_long(argc, argv, "n", opts, NULL)) != -1) {
		if (ch != 'n')
			return cli_usage(usage);
		dry = true;
	}
	if (optind != argc)
		return cli_usage(usage);
	if (cli_need_conf(c) < 0)
		return EX_TEMPFAIL;
	struct buf in;
	buf_init(&in, BOUNCE_MAX_BYTES);
	bool too_big;
	if (read_stdin(&in, &too_big) < 0) {
		buf_free(&in);
		fprintf(stderr, "matrixctl: bounce: cannot read the message from standard input\n");
		return EX_TEMPFAIL;
	}
	if (too_big) {
		/* Our messages are far smaller: no report of ours is this big. */
		fprintf(stderr, "matrixctl: bounce: message over %d bytes; dropped\n",
		        BOUNCE_MAX_BYTES);
		buf_free(&in);
		return EXIT_OK;
	}
	struct err e;
	err_clear(&e);
	struct token_key key;
	bool have_key = token_key_load(&key, c->conf.state_dir, false, &e) == 0;
	if (!have_key && e.kind == ERR_NOTFOUND) {
		/* No daemon has made the secret yet, so no address of ours carries a
		 * token it signed: a throw-away key verifies none, as it should. */
		token_key_random(&key);
		have_key = true;
	}
	if (!have_key && !dry) {
		/* without the key nothing can be verified: let the MTA retry later */
		fprintf(stderr, "matrixctl: bounce: %s\n", e.msg);
		buf_free(&in);
		return EX_TEMPFAIL;
	}
	if (!have_key)
		fprintf(stderr,
		        "matrixctl: bounce: %s; the deliveries it names are not looked up (run as "
		        "the daemon's user to see them)\n",
		        e.msg);
	if (cli_need_store(c) < 0) {
		buf_free(&in);
		return EX_TEMPFAIL;
	}
	struct inbound_opts o = {
	    .return_path = c->conf.smtp.return_path,
	    .bounce_threshold = c->conf.bounce_threshold,
	    .dry_run = dry,
	};
	struct inbound_result r;
	err_clear(&e);
	int rc = inbound_apply(c->store, have_key ? &key : NULL, &o, buf_str(&in), in.len, &r, &e);
	buf_free(&in);
	if (rc < 0) {
		fprintf(stderr, "matrixctl: bounce: %s; nothing recorded, try again later\n",
		        e.msg);
		inbound_result_free(&r);
		return EX_TEMPFAIL;
	}
	if (r.report)
		print_result(c, &r, dry);
	else
		fprintf(stderr, "matrixctl: bounce: %s; dropped\n", r.why);
	inbound_result_free(&r);
	return EXIT_OK;
}
