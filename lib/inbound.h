/*
 * Inbound mail, the fourth stage after parse, render and deliver: a message
 * that came back to one of our addresses (a bounce, an abuse complaint, an
 * unsubscribe request to the List-Unsubscribe mailto) is read by
 * lib/bounce.c and applied to the store here, with one rule for every
 * caller (`matrixctl bounce` today; the daemon reading a Maildir of bounces
 * could call the same):
 *
 *   unsubscribe request   the membership its token names is unsubscribed
 *   hard bounce           the delivery it names fails, whenever the report
 *                         arrives, and counts once toward the bounce score of
 *                         that delivery's membership (subscriber, list);
 *                         bounce_threshold of them and it is bounced
 *   final 4.x.x failure   a hard bounce; one of class x.7.x (the receiver
 *                         refused us, not the address) fails the delivery
 *                         without counting
 *   delay notice          noted in the membership's history ("delayed")
 *   complaint (ARF)       unsubscribed, recorded as a complaint
 *   anything else         dropped
 *
 * A report acts only on what we signed: the VERP token of the address it
 * came to, or our Message-ID in the message it returns. A Message-ID only
 * in the report's own In-Reply-To/References is reported, never acted on
 * (docs/design.md, "Bounces").
 */
#ifndef MATRIX_INBOUND_H
#define MATRIX_INBOUND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bounce.h"
#include "err.h"
#include "ledger.h"
#include "store.h"
#include "token.h"

enum inbound_action {
	INBOUND_DROPPED,      /* nothing of ours, or no bounce at all: see why */
	INBOUND_FAILED,       /* the delivery failed; its membership's score + 1 */
	INBOUND_BOUNCED,      /* … and the membership reached bounce_threshold */
	INBOUND_REFUSED,      /* the delivery failed (x.7.x final failure), not counted */
	INBOUND_REPEATED,     /* this delivery's bounce was recorded before: no change */
	INBOUND_DELAYED,      /* a delay notice, noted in the history */
	INBOUND_UNSUBSCRIBED, /* a request or complaint unsubscribed the membership */
	INBOUND_UNCHANGED,    /* the same, but it was unsubscribed already (or gone) */
	INBOUND_HINT_ONLY,    /* names a delivery only in its own In-Reply-To/References */
	INBOUND_DRY_RUN,      /* looked up, nothing recorded */
};

struct inbound_opts {
	const char *return_path; /* smtp.return_path, where the VERP token sits */
	int bounce_threshold;
	bool dry_run; /* look up, record nothing */
	int64_t now;  /* 0: store_now() */
};

struct inbound_result {
	enum inbound_action action;
	struct bounce *report; /* what the message says; NULL for one over the size limit */
	/* The delivery the report names (also for HINT_ONLY, never acted on);
	 * delivery.id 0 when none. */
	struct ledger_delivery delivery;
	int64_t subscriber_id, list_id; /* the membership acted on; 0 when none */
	int score;                      /* its bounce score after FAILED or BOUNCED */
	const char *why;                /* static: for DROPPED and UNCHANGED, else "" */
};

/*
 * Reads one message (len bytes) and applies it to the store s as above,
 * inside one transaction. key verifies the tokens; NULL (a dry run by
 * someone who may not read the secret) finds no delivery. Fills *res
 * (inbound_result_free) and returns 0 whatever the message says; -1 only
 * when the store failed (ERR_DB, or ERR_TEMP when it was busy): nothing was
 * recorded and the message should be offered again later.
 */
int inbound_apply(struct store *s, const struct token_key *key, const struct inbound_opts *o,
                  const char *msg, size_t len, struct inbound_result *res, struct err *err);

void inbound_result_free(struct inbound_result *res);

/* "dropped", "failed", "bounced", "refused", "repeated", "delayed",
 * "unsubscribed", "unchanged", "hint-only", "dry-run". */
const char *inbound_action_name(enum inbound_action a);

#endif
