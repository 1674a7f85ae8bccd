/*
 * Inbound mail applied to the store (see inbound.h). The parse is
 * lib/bounce.c's, the SQL the ledger's and the subscriber module's; this
 * file holds the policy between them: which identifier of a report may be
 * trusted, what each kind of report changes, and that all of it happens in
 * one transaction, so a report is recorded whole or not at all and the MTA
 * may offer it again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inbound.h"
#include "mailconv.h"
#include "subs.h"
#include "xmalloc.h"

const char *inbound_action_name(enum inbound_action a)
{
	switch (a) {
	case INBOUND_FAILED:
		return "failed";
	case INBOUND_BOUNCED:
		return "bounced";
	case INBOUND_REFUSED:
		return "refused";
	case INBOUND_REPEATED:
		return "repeated";
	case INBOUND_DELAYED:
		return "delayed";
	case INBOUND_UNSUBSCRIBED:
		return "unsubscribed";
	case INBOUND_UNCHANGED:
		return "unchanged";
	case INBOUND_HINT_ONLY:
		return "hint-only";
	case INBOUND_DRY_RUN:
		return "dry-run";
	case INBOUND_DROPPED:
		break;
	}
	return "dropped";
}

void inbound_result_free(struct inbound_result *res)
{
	if (res == NULL)
		return;
	bounce_free(res->report);
	free(res->delivery.email);
	memset(res, 0, sizeof *res);
}

/* The delivery a VERP token names, verified: 1, 0 (none), -1 (store). */
static int delivery_of_token(struct store *s, const struct token_key *key, const char *tok,
                             struct ledger_delivery *d, struct err *err)
{
	int64_t id;
	if (key == NULL || tok == NULL ||
	    !token_check(key, TOKEN_VERP, tok, strlen(tok), &id, NULL))
		return 0;
	return ledger_delivery_get(s, id, d, err);
}

static int delivery_of_msgid(struct store *s, const struct token_key *key, const char *mid,
                             struct ledger_delivery *d, struct err *err)
{
	char *tok = mailconv_token_of_message_id(mid);
	int rc = delivery_of_token(s, key, tok, d, err);
	free(tok);
	return rc;
}

/* The recipient a report is about: the first that failed, else the first. */
static const struct bounce_rcpt *first_rcpt(const struct bounce *b)
{
	for (size_t i = 0; i < b->nrcpts; i++)
		if (strcmp(b->rcpts[i].action, "failed") == 0)
			return &b->rcpts[i];
	return b->nrcpts ? &b->rcpts[0] : NULL;
}

/*
 * A final failure of class 4 and subject 7 (RFC 3463 §3.8: security or
 * policy) is a receiver that kept refusing us — our address, our IP, our
 * volume — until the reporting MTA gave up. That says nothing about the
 * subscriber's address, and counting it would bounce everyone at a provider
 * that throttled us for a week.
 */
static bool refused_us(const struct bounce_rcpt *r)
{
	return r && strncmp(r->status, "4.7.", 4) == 0;
}

static int apply_hard(struct store *s, const struct inbound_opts *o, int64_t now,
                      struct inbound_result *res, struct err *err)
{
	const struct ledger_delivery *d = &res->delivery;
	const struct bounce_rcpt *r = first_rcpt(res->report);
	const char *status = r && r->status[0] ? r->status : "5.0.0";
	const char *diag = r && r->diagnostic[0] ? r->diagnostic : "no reason given";
	bool fresh = false, bounced = false;
	char *reply = xasprintf("bounced: %s", diag);
	int rc = ledger_bounced(s, d->id, status, reply, now, &fresh, err);
	free(reply);
	if (rc < 0)
		return -1;
	res->subscriber_id = d->subscriber_id;
	res->list_id = d->list_id;
	if (!fresh) {
		res->action = INBOUND_REPEATED;
		return 0;
	}
	char *detail =
	    xasprintf("%s %s (issue %d, article %d)", status, diag, d->issue, d->article);
	if (refused_us(r)) {
		res->action = INBOUND_REFUSED;
		rc = subs_event_add(s, d->subscriber_id, d->list_id, "refused", "bounce", "",
		                    detail, err);
	} else {
		rc = ledger_hard_bounce(s, d->subscriber_id, d->list_id, o->bounce_threshold,
		                        detail, &bounced, &res->score, err);
		res->action = bounced ? INBOUND_BOUNCED : INBOUND_FAILED;
	}
	free(detail);
	return rc;
}

static int apply_delay(struct store *s, struct inbound_result *res, struct err *err)
{
	const struct ledger_delivery *d = &res->delivery;
	const struct bounce_rcpt *r = first_rcpt(res->report);
	char *detail = xasprintf("%s %s (issue %d, article %d)", r ? r->status : "",
	                         r ? r->diagnostic : "", d->issue, d->article);
	res->action = INBOUND_DELAYED;
	res->subscriber_id = d->subscriber_id;
	res->list_id = d->list_id;
	int rc =
	    subs_event_add(s, d->subscriber_id, d->list_id, "delayed", "bounce", "", detail, err);
	free(detail);
	return rc;
}

static int unsubscribe(struct store *s, int64_t sub, int64_t list, const char *via,
                       struct inbound_result *res, struct err *err)
{
	bool changed = false;
	enum subs_status status;
	res->subscriber_id = sub;
	res->list_id = list;
	int found = subs_membership_status(s, sub, list, &status, err);
	if (found <= 0) {
		/* forgotten, or the list deleted, since the mail went out */
		res->action = INBOUND_UNCHANGED;
		res->why = "not on the list";
		return found;
	}
	if (subs_unsubscribe_id(s, sub, list, via, "mail", &changed, err) < 0)
		return -1;
	res->action = changed ? INBOUND_UNSUBSCRIBED : INBOUND_UNCHANGED;
	res->why = changed ? "" : "already unsubscribed";
	if (changed && strcmp(via, "complaint") == 0)
		return subs_event_add(s, sub, list, "complaint", "mail", "mail",
		                      "abuse report (ARF)", err);
	return 0;
}

/* What a report asks for, once its delivery (if any) is known. */
static int act(struct store *s, const struct token_key *key, const struct inbound_opts *o,
               int64_t now, struct inbound_result *res, struct err *err)
{
	const struct bounce *b = res->report;
	bool ours = res->delivery.id != 0 && res->action != INBOUND_HINT_ONLY;
	int64_t sub = 0, list = 0;
	switch (b->kind) {
	case BOUNCE_UNSUBSCRIBE:
		/* the token is the request: only its signer could have made it */
		if (key == NULL || b->unsubscribe_token == NULL ||
		    !token_check(key, TOKEN_UNSUBSCRIBE, b->unsubscribe_token,
		                 strlen(b->unsubscribe_token), &sub, &list)) {
			res->why = "unsubscribe request with no valid token";
			return 0;
		}
		if (o->dry_run) {
			res->subscriber_id = sub;
			res->list_id = list;
			res->action = INBOUND_DRY_RUN;
			return 0;
		}
		return unsubscribe(s, sub, list, "mail", res, err);
	case BOUNCE_HARD:
	case BOUNCE_SOFT:
	case BOUNCE_COMPLAINT:
		if (res->action == INBOUND_HINT_ONLY) {
			res->why = "names a delivery of ours only in its In-Reply-To or References";
			return 0;
		}
		if (!ours) {
			res->why = b->kind == BOUNCE_COMPLAINT
			               ? "complaint without a token or Message-ID of ours"
			               : "report for no delivery of ours";
			return 0;
		}
		if (o->dry_run) {
			res->action = INBOUND_DRY_RUN;
			return 0;
		}
		if (b->kind == BOUNCE_HARD)
			return apply_hard(s, o, now, res, err);
		if (b->kind == BOUNCE_SOFT)
			return apply_delay(s, res, err);
		return unsubscribe(s, res->delivery.subscriber_id, res->delivery.list_id,
		                   "complaint", res, err);
	case BOUNCE_NOT:
		break;
	}
	res->why = b->how ? b->how : "not a bounce";
	return 0;
}

int inbound_apply(struct store *s, const struct token_key *key, const struct inbound_opts *o,
                  const char *msg, size_t len, struct inbound_result *res, struct err *err)
{
	char *verp = mailconv_verp_prefix(o->return_path);
	struct bounce_opts bo = {verp, MAILCONV_UNSUB_PREFIX};
	struct err perr;
	int64_t now = o->now ? o->now : store_now();
	memset(res, 0, sizeof *res);
	res->why = "";
	int rc = bounce_parse(msg, len, &bo, &res->report, &perr);
	free(verp);
	if (rc < 0) {
		res->why = "over the size limit";
		return 0;
	}
	const struct bounce *b = res->report;
	if (store_begin(s, err) < 0)
		return -1;
	rc = 0;
	if (b->kind != BOUNCE_NOT && b->kind != BOUNCE_UNSUBSCRIBE) {
		rc = delivery_of_token(s, key, b->verp_token, &res->delivery, err);
		if (rc == 0)
			rc = delivery_of_msgid(s, key, b->message_id, &res->delivery, err);
		/* Any reply names our message here: shown, never acted on. */
		if (rc == 0 &&
		    (rc = delivery_of_msgid(s, key, b->in_reply_to, &res->delivery, err)) == 1)
			res->action = INBOUND_HINT_ONLY;
	}
	if (rc >= 0)
		rc = act(s, key, o, now, res, err);
	if (rc < 0) {
		store_rollback(s);
		return -1;
	}
	return store_commit(s, err);
}
