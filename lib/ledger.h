/*
 * The delivery ledger (matrixd(8), docs/design.md "The ledger"): one row in
 * deliveries per (issue, article or digest, subscriber), created when an
 * issue is published, before anything is sent. States:
 *
 *   queued ──claim──> sending ──result──> sent | deferred | failed
 *   deferred ──due──> sending               (exponential backoff, jitter)
 *   sending ──relay trouble──> queued       (no attempt counted, same place)
 *   sending ──restart──> queued             (ledger_recover after a crash)
 *
 * A row is due at its next_attempt. For a list with a pace, article k's is
 * the issue's send time + (k - 1) x pace, kept in not_before too; such a
 * row is also claimed only in its turn (after the earlier articles of the
 * same issue for the same subscriber are sent or failed).
 *
 * A claim commits 'sending' before the message is handed to a sender, and
 * each result is committed after the server's reply, so a crash loses no
 * delivery: whatever is left in 'sending' is sent again on restart. The
 * duplicates that can cause are bounded by the messages in flight (see
 * docs/design.md).
 *
 * Rows with an issue_id <= 0 are the mails of one membership (part = the
 * list id): 0 the confirmation (double opt-in; sent only while the
 * membership is pending), LEDGER_WELCOME the welcome after a confirmation
 * and LEDGER_NOTICE the "you are already subscribed" answer to the
 * subscribe form (both sent only while it is confirmed).
 */
#ifndef MATRIX_LEDGER_H
#define MATRIX_LEDGER_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "store.h"
#include "transport.h"

#define LEDGER_CONFIRM 0
#define LEDGER_WELCOME (-1)
#define LEDGER_NOTICE  (-2)

/* A delivery's state; the names are the ones stored in deliveries.state
 * (the schema's CHECK lists them) and printed. */
enum ledger_state { LEDGER_QUEUED, LEDGER_SENDING, LEDGER_SENT, LEDGER_DEFERRED, LEDGER_FAILED };
#define LEDGER_NSTATES 5
const char *ledger_state_name(enum ledger_state st);
/* Parses a stored name (exact, lower case); -1 for anything else. */
int ledger_state_parse(const char *s, enum ledger_state *out);

struct ledger_job {
	int64_t id, issue_id, subscriber_id, list_id;
	int part, attempts;
	int number;            /* the issue's number, for logs; 0 for confirmations */
	int64_t first_attempt; /* retry_max_age counts from here */
	char *email, *name;
	bool was_deferred; /* its state before the claim (progress counts) */
	bool digest;       /* the membership's mode is digest (the welcome says so) */
};

struct ledger_policy {
	int max_attempts;     /* smtp.max_attempts */
	int retry_max_age;    /* smtp.retry_max_age, seconds */
	int bounce_threshold; /* hard bounces before a membership is bounced */
};

/*
 * Creates the deliveries of an issue: articles 1..nparts for confirmed
 * members in article mode, part 0 (the digest) for those in digest mode,
 * of the lists named in lists (comma-separated; "" = every list). Existing
 * rows are left alone (idempotent). *added counts new rows. now is the
 * issue's send time: article k of a list with a pace is due at now +
 * (k - 1) x pace; digests at once.
 */
int ledger_enqueue_issue(struct store *s, int64_t issue_id, int nparts, const char *lists,
                         int64_t now, int64_t *added, struct err *err);

/* Puts rows left in 'sending' by a crash back to 'queued'. */
int ledger_recover(struct store *s, int64_t *n, struct err *err);

/*
 * Claims up to max due rows (queued, or deferred and due by now): marks
 * them 'sending', counts the attempt, and returns them (ledger_jobs_free).
 * A row whose subscriber is no longer confirmed on the list (pending, for
 * a confirmation mail) is cancelled: failed, "cancelled: …", not returned;
 * *cancelled (may be NULL) counts them.
 */
int ledger_claim(struct store *s, int64_t now, size_t max, struct ledger_job **out, size_t *n,
                 size_t *cancelled, struct err *err);
void ledger_jobs_free(struct ledger_job *j, size_t n);

/* Puts a claimed row back, unattempted (shutdown before it was sent). */
int ledger_unclaim(struct store *s, int64_t id, struct err *err);

/*
 * Records the outcome of one attempt (inside the caller's transaction, or
 * its own): sent; deferred with backoff; failed when the server refused for
 * good, when max_attempts or retry_max_age (from the first attempt) is
 * reached. Only a row still 'sending' is written: one that a bounce report
 * failed meanwhile (ledger_bounced) keeps that, and *state_out says
 * "failed". A refusal of the recipient (r->bounce) is the delivery's bounce:
 * it adds to the bounce score of the membership (subscriber, list) once per
 * delivery. A failure of the relay itself (r->relay_level) does not use up
 * an attempt and puts the row back in the queue where it was (queued, its
 * next_attempt kept). *state_out (may be NULL) is the state the row is in.
 */
int ledger_record(struct store *s, const struct ledger_job *j, const struct send_result *r,
                  int64_t now, const struct ledger_policy *p, enum ledger_state *state_out,
                  struct err *err);
/* The state ledger_record would write, and the attempts it would keep
 * (docs/design.md, "Classification" and "Retries"). */
enum ledger_state ledger_next_state(const struct ledger_job *j, const struct send_result *r,
                                    int64_t now, const struct ledger_policy *p, int *attempts);

/*
 * A bounce report for delivery id: the delivery becomes failed (status and
 * reply recorded) whatever its state, even 'sending' before the relay's
 * reply was recorded, and gets the bounce marker. Once per delivery:
 * *fresh is false, and nothing is written, when the marker was already
 * set (the same report piped twice, or the relay refused it at RCPT).
 */
int ledger_bounced(struct store *s, int64_t id, const char *status, const char *reply, int64_t now,
                   bool *fresh, struct err *err);

/*
 * One hard bounce for the membership (subscriber, list): its bounce_score
 * + 1 when it is pending or confirmed, and it becomes 'bounced' when the
 * score reaches threshold (*bounced says whether that happened now; *score,
 * which may be NULL, the score after, 0 when nothing was counted). Other
 * lists of the subscriber are left alone.
 */
int ledger_hard_bounce(struct store *s, int64_t subscriber_id, int64_t list_id, int threshold,
                       const char *detail, bool *bounced, int *score, struct err *err);

/* One delivery, as a bounce report names it. */
struct ledger_delivery {
	int64_t id, subscriber_id, list_id;
	int issue, article; /* the issue's number (0: a confirmation mail), the part */
	char *email;        /* the subscriber's address, allocated */
};
/* Looks delivery id up: 1 found (d filled; free d->email), 0 none, -1 error. */
int ledger_delivery_get(struct store *s, int64_t id, struct ledger_delivery *d, struct err *err);

/* Deliveries by state: n[LEDGER_SENT] … */
struct ledger_counts {
	int64_t n[LEDGER_NSTATES];
};
/* The sum of every state's count. */
int64_t ledger_counts_total(const struct ledger_counts *c);
/* Still to do: queued, sending and deferred. */
int64_t ledger_counts_open(const struct ledger_counts *c);
/* Counts of an issue's deliveries by state (issue_id 0: confirmations). */
int ledger_counts(struct store *s, int64_t issue_id, struct ledger_counts *c, struct err *err);
/* Counts over everything. */
int ledger_totals(struct store *s, struct ledger_counts *c, struct err *err);
/* Counts of one subscriber's deliveries. */
int ledger_subscriber_counts(struct store *s, int64_t subscriber_id, struct ledger_counts *c,
                             struct err *err);

/*
 * Messages per second over the span of an issue's sent deliveries: *rate is
 * 0 when fewer than two were sent or within under two seconds (sent_at
 * has whole seconds).
 */
int ledger_send_rate(struct store *s, int64_t issue_id, double *rate, struct err *err);

/* The earliest next_attempt of a queued or deferred row in its turn (a
 * paced row behind an earlier article that is still to go does not count:
 * that one comes first); 0 when none. */
int ledger_next_due(struct store *s, int64_t *when, struct err *err);

/* Deliveries of an issue waiting for their time (queued, due after now:
 * a paced list's later articles): *n of them, the first at *next. */
int ledger_waiting(struct store *s, int64_t issue_id, int64_t now, int64_t *n, int64_t *next,
                   struct err *err);

/* Requeues failed deliveries (of one issue number; 0 = all). */
int ledger_retry(struct store *s, int issue_number, int64_t now, int64_t *n, struct err *err);

/*
 * Waking the daemon. matrixctl runs as an admin, the daemon as its own
 * user: a signal cannot cross that line, a file in the group-writable
 * state_dir can. The daemon creates state_dir/LEDGER_WAKE_FILE (mode 0660)
 * at start and watches the directory with inotify; ledger_wake() opens the
 * file for writing and closes it (IN_CLOSE_WRITE), and the daemon's loop
 * then claims what is due at once. Call it after the commit that queued
 * mail. No file (no daemon ever ran here) is not an error: the next start
 * sends what is queued. A failure leaves the mail queued; the daemon sends
 * it on its next wake-up for any other reason.
 */
#define LEDGER_WAKE_FILE "wake"
int ledger_wake(const char *state_dir, struct err *err);

/* Seconds to wait before attempt number `attempts` + 1 (with ±20 % jitter). */
int64_t ledger_backoff(int attempts);

#endif
