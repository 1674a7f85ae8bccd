/*
 * matrixctl bounce: one message from stdin (the MTA pipes bounces to the
 * VERP address and mail to unsubscribe+TOKEN@ here), parsed by lib/bounce.c
 * and recorded:
 *
 *   unsubscribe request  → the membership the token names is unsubscribed
 *   hard bounce (5.x.x)  → the delivery fails, the subscriber's bounce score
 *                          grows; at bounce_threshold they become bounced
 *   soft bounce (4.x.x)  → recorded in the subscriber's history only
 *   complaint (ARF)      → unsubscribed, recorded as a complaint
 *   anything else        → reported and dropped
 *
 * A delivery is found only through what we signed: the VERP token in the
 * address the bounce came to, or our Message-ID in the returned message.
 * Exit status 0 whatever the message says, so the MTA never bounces a
 * bounce; 75 (EX_TEMPFAIL) when the store is unavailable, so it retries.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "buf.h"
#include "bounce.h"
#include "cli.h"
#include "ledger.h"
#include "store.h"
#include "subs.h"
#include "token.h"
#include "xmalloc.h"

#define EX_TEMPFAIL 75

struct found {
	int64_t delivery_id, subscriber_id, list_id, issue_id;
	int part, number;
	char *email;
};

static int read_stdin(struct buf *b, bool *too_big)
{
	char chunk[65536];
	ssize_t n;
	*too_big = false;
	while ((n = read(STDIN_FILENO, chunk, sizeof chunk)) > 0) {
		if (buf_add(b, chunk, (size_t)n) < 0) {
			*too_big = true;
			while (read(STDIN_FILENO, chunk, sizeof chunk) > 0)
				; /* drain, so the MTA sees us take it */
			return 0;
		}
	}
	return n < 0 ? -1 : 0;
}

/* The delivery a VERP token names (verified). */
static bool delivery_of(struct store *s, const struct token_key *k, const char *tok,
                        struct found *f, struct err *err)
{
	int64_t id;
	if (tok == NULL || !token_check(k, TOKEN_VERP, tok, strlen(tok), &id, NULL))
		return false;
	static const char sql[] =
	    "SELECT d.subscriber_id, d.list_id, d.issue_id, d.part, coalesce(i.number, 0), s.email "
	    "FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
	    "LEFT JOIN issues i ON i.id = d.issue_id WHERE d.id = ?1";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return false;
	sqlite3_bind_int64(st, 1, id);
	bool ok = sqlite3_step(st) == SQLITE_ROW;
	if (ok) {
		f->delivery_id = id;
		f->subscriber_id = sqlite3_column_int64(st, 0);
		f->list_id = sqlite3_column_int64(st, 1);
		f->issue_id = sqlite3_column_int64(st, 2);
		f->part = sqlite3_column_int(st, 3);
		f->number = sqlite3_column_int(st, 4);
		f->email = xstrdup((const char *)sqlite3_column_text(st, 5));
	}
	sqlite3_reset(st);
	return ok;
}

/* Our Message-ID is "matrix.TOKEN@domain" (TOKEN = the VERP token). */
static char *token_of_msgid(const char *mid)
{
	if (mid == NULL || strncmp(mid, "matrix.", 7) != 0)
		return NULL;
	const char *at = strchr(mid, '@');
	return at ? xstrndup(mid + 7, (size_t)(at - mid - 7)) : NULL;
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
		return cli_failf("cannot read the message from standard input");
	}
	if (too_big) {
		fprintf(stderr, "matrixctl: bounce: message over %d bytes; dropped\n",
		        BOUNCE_MAX_BYTES);
		buf_free(&in);
		return EXIT_OK;
	}
	struct err e;
	err_clear(&e);
	char *verp = bounce_verp_prefix(c->conf.smtp.return_path);
	struct bounce_opts o = {verp, "unsubscribe+"};
	struct bounce *b = NULL;
	int rc = EXIT_OK;
	if (bounce_parse(buf_str(&in), in.len, &o, &b, &e) < 0) {
		fprintf(stderr, "matrixctl: bounce: %s; dropped\n", e.msg);
		free(verp);
		buf_free(&in);
		return EXIT_OK;
	}
	buf_free(&in);
	free(verp);

	struct token_key key;
	struct found f = {0};
	bool have_key = token_key_load(&key, c->conf.state_dir, &e) == 0;
	if (!have_key) {
		/* without the key nothing can be verified: let the MTA retry later */
		fprintf(stderr, "matrixctl: bounce: %s\n", e.msg);
		rc = EX_TEMPFAIL;
		goto out;
	}
	if (cli_need_store(c) < 0) {
		rc = EX_TEMPFAIL;
		goto out;
	}
	struct store *s = c->store;
	bool found = delivery_of(s, &key, b->verp_token, &f, &e);
	if (!found) {
		char *t = token_of_msgid(b->message_id);
		found = delivery_of(s, &key, t, &f, &e);
		free(t);
	}
	int64_t sub = 0, list = 0;
	bool unsub_token = b->kind == BOUNCE_UNSUBSCRIBE && b->unsubscribe_token &&
	                   token_check(&key, TOKEN_UNSUBSCRIBE, b->unsubscribe_token,
	                               strlen(b->unsubscribe_token), &sub, &list);

	struct json_object *dj = NULL;
	if (found && f.delivery_id) {
		dj = json_object_new_object();
		json_object_object_add(dj, "issue", json_object_new_int(f.number));
		json_object_object_add(dj, "article", json_object_new_int(f.part));
		json_object_object_add(dj, "subscriber", json_object_new_string(f.email));
	}
	char what[600] = "";
	const struct bounce_rcpt *r0 = b->nrcpts ? &b->rcpts[0] : NULL;
	if (!dry) {
		int w = 0;
		bool changed = false, bounced = false;
		switch (b->kind) {
		case BOUNCE_UNSUBSCRIBE:
			if (!unsub_token) {
				snprintf(what, sizeof what,
				         "unsubscribe request with no valid token; "
				         "dropped");
				break;
			}
			w = subs_unsubscribe_id(s, sub, list, "mail", "mail", &changed, &e);
			snprintf(what, sizeof what, "subscriber=%" PRId64 " list=%" PRId64 " %s",
			         sub, list, changed ? "unsubscribed" : "was already unsubscribed");
			if (w < 0 && e.kind == ERR_NOTFOUND) {
				w = 0;
				snprintf(what, sizeof what,
				         "subscriber=%" PRId64 " is not subscribed", sub);
			}
			break;
		case BOUNCE_HARD:
			if (!found) {
				snprintf(what, sizeof what,
				         "hard bounce for no delivery of ours; dropped");
				break;
			}
			w = store_begin(s, &e);
			bool fresh = false;
			char *reply = xasprintf("bounced: %s", r0 && r0->diagnostic[0]
			                                           ? r0->diagnostic
			                                           : "no reason");
			if (w == 0)
				w = ledger_bounced(s, f.delivery_id,
				                   r0 && r0->status[0] ? r0->status : "5.0.0", reply,
				                   store_now(), &fresh, &e);
			free(reply);
			if (w == 0 && fresh)
				w = ledger_hard_bounce(s, f.subscriber_id, f.list_id,
				                       c->conf.bounce_threshold,
				                       r0 ? r0->diagnostic : "", &bounced, &e);
			if (w == 0)
				w = store_commit(s, &e);
			else
				store_rollback(s);
			snprintf(what, sizeof what,
			         "delivery=%" PRId64 " subscriber=%" PRId64 " hard bounce %s%s",
			         f.delivery_id, f.subscriber_id, r0 ? r0->status : "",
			         !fresh    ? " (already recorded for this delivery)"
			         : bounced  ? "; now bounced, no more mail"
			                    : "");
			break;
		case BOUNCE_SOFT:
			if (found)
				w = subs_event_add(s, f.subscriber_id, f.list_id, "soft-bounce",
				                   "bounce", "mail", r0 ? r0->diagnostic : "", &e);
			snprintf(what, sizeof what, "soft bounce %s%s", r0 ? r0->status : "",
			         found ? " recorded" : " for no delivery of ours; dropped");
			break;
		case BOUNCE_COMPLAINT:
			if (!found) {
				/* Only what we signed names a subscriber: a complaint
				 * naming an address could be forged by anyone. */
				snprintf(
				    what, sizeof what,
				    "complaint without a token or Message-ID of ours; dropped");
				break;
			}
			w = subs_unsubscribe_id(s, f.subscriber_id, f.list_id, "complaint", "mail",
			                        &changed, &e);
			if (w == 0)
				w = subs_event_add(s, f.subscriber_id, f.list_id, "complaint",
				                   "mail", "mail", "abuse report (ARF)", &e);
			snprintf(what, sizeof what,
			         "subscriber=%" PRId64 " complained: unsubscribed",
			         f.subscriber_id);
			break;
		case BOUNCE_NOT:
			snprintf(what, sizeof what, "not a bounce (%s); dropped",
			         b->how ? b->how : "");
			break;
		}
		if (w < 0) {
			json_object_put(dj);
			rc = e.kind == ERR_TEMP || e.kind == ERR_DB ? EX_TEMPFAIL : EXIT_OK;
			fprintf(stderr, "matrixctl: bounce: %s\n", e.msg);
			goto out;
		}
	}
	if (c->json) {
		cli_json_print(bounce_to_json(b, dj));
	} else {
		json_object_put(dj);
		printf("%s", bounce_kind_name(b->kind));
		for (size_t i = 0; i < b->nrcpts && i < 5; i++)
			printf(" %s %s%s%s", b->rcpts[i].address, b->rcpts[i].status,
			       b->rcpts[i].diagnostic[0] ? ": " : "", b->rcpts[i].diagnostic);
		if (found && f.delivery_id)
			printf(" [issue %d, article %d, subscriber %s]", f.number, f.part, f.email);
		printf("\n");
		if (what[0])
			printf("%s\n", what);
	}
out:
	free(f.email);
	bounce_free(b);
	return rc;
}
