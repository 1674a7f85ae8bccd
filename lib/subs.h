/*
 * Lists, subscribers and memberships: the rules of who gets mail, on top of
 * the store (store.h). A subscriber is one address (keyed by addr_check's
 * key) with a name and free-form attributes (a JSON object of strings); a
 * membership ties it to a list with a status, a delivery mode and a consent
 * record (when, how, by whom). Everything that changes a status also writes
 * an events row: the history `matrixctl show` prints.
 *
 * Status rules (listmonk's and Mailman's behaviour):
 *   - unsubscribed and bounced are suppression records: nothing (subscribe,
 *     import) makes such a membership receive mail again unless the caller
 *     says resubscribe, which admins should do only with renewed consent;
 *   - subscribing an address that is already pending or confirmed changes
 *     nothing, except an explicit name or mode that differs;
 *   - subscribe by an admin without confirm vouches for the address
 *     (confirmed, also for a pending one); with confirm it stays or becomes
 *     pending and a confirmation mail is queued for the daemon (a deliveries
 *     row with issue_id 0, part = list id).
 *
 * This module never prints. Every write runs inside store_begin() (BEGIN
 * IMMEDIATE); the functions nest inside a caller's transaction.
 */
#ifndef MATRIX_SUBS_H
#define MATRIX_SUBS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"
#include "ledger.h"
#include "store.h"

#define SUBS_DEFAULT_LIST "matrix"
#define SUBS_NAME_MAX     256 /* code points in a subscriber's name */

enum subs_status { SUBS_PENDING, SUBS_CONFIRMED, SUBS_UNSUBSCRIBED, SUBS_BOUNCED };
#define SUBS_NSTATUS 4
enum subs_mode { SUBS_ARTICLE, SUBS_DIGEST };

/* The names stored in the database and printed ("pending", "article" …). */
const char *subs_status_name(enum subs_status st);
const char *subs_mode_name(enum subs_mode m);
/* Parse a name (ASCII case-insensitive); -1 for anything else. */
int subs_status_parse(const char *s, enum subs_status *out);
int subs_mode_parse(const char *s, enum subs_mode *out);
/* True for unsubscribed and bounced. */
bool subs_is_suppressed(enum subs_status st);

/* ---- lists ---------------------------------------------------------------- */

struct subs_list {
	int64_t id;
	char *name, *title, *description;
	int64_t created_at;
	int64_t count[SUBS_NSTATUS]; /* memberships by status */
	int64_t pace;                /* seconds between an issue's article mails, 0 = none */
	bool is_private;             /* never offered on the web, refuses web subscriptions */
};

/* Creates a list. ERR_INPUT for a bad name (listname.h) or title and for
 * an existing name; title NULL or "" = the name. actor is recorded in the events table. */
int subs_list_create(struct store *s, const char *name, const char *title, const char *description,
                     const char *actor, struct err *err);

/*
 * Deletes a list. Refuses (ERR_INPUT) the default list, and a list that
 * still has memberships unless force; with force the memberships go too,
 * and so do its queued or deferred deliveries. Subscribers stay (forget
 * erases them). *removed (if not NULL) is the number of memberships removed.
 */
int subs_list_delete(struct store *s, const char *name, bool force, const char *actor,
                     int64_t *removed, struct err *err);

/*
 * A list's pace spreads an issue's article mails for its members: article
 * k goes at the send time + (k - 1) x pace (ledger.h). A duration
 * is a number with a unit, s m h or d, or several ("1h30m"), or "0";
 * at most 30 days. -1 for anything else.
 */
#define SUBS_PACE_MAX (30 * 86400)
int subs_pace_parse(const char *s, int64_t *seconds);
/* "90s", "3h", "1d2h", "0": the shortest spelling; out holds 32 bytes. */
void subs_pace_format(int64_t seconds, char *out, size_t n);

/* Changes a list: title and description NULL keep theirs, pace < 0 keeps
 * its pace. ERR_NOTFOUND for no such list; ERR_INPUT for a bad title. A
 * new pace applies to issues queued from then on. */
int subs_list_set(struct store *s, const char *name, const char *title, const char *description,
                  int64_t pace, const char *actor, struct err *err);

/* Makes a list private (never offered by the subscribe form, which
 * refuses subscriptions to it: matrixctl(8), list-set) or public
 * again. Existing memberships are not touched. ERR_NOTFOUND for no such
 * list. *changed (if not NULL): whether it was the other way before. */
int subs_list_set_private(struct store *s, const char *name, bool is_private, const char *actor,
                          bool *changed, struct err *err);

/* The list's id, or -1 with ERR_NOTFOUND ("no list 'x'; see matrixctl lists"). */
int64_t subs_list_id(struct store *s, const char *name, struct err *err);

/* The name and title ("" when it has none) of list list_id, allocated;
 * ERR_NOTFOUND when there is no such list (deleted meanwhile). */
int subs_list_names(struct store *s, int64_t list_id, char **name, char **title, struct err *err);

/* The status of the membership (subscriber, list): 1 with *status set, 0
 * when there is none, -1 with err on error. */
int subs_membership_status(struct store *s, int64_t subscriber_id, int64_t list_id,
                           enum subs_status *status, struct err *err);

/* All lists by name with their counts: allocated array of *n; free with
 * subs_lists_free(). NULL with err on error (an empty result is non-NULL). */
struct subs_list *subs_lists(struct store *s, size_t *n, struct err *err);
void subs_lists_free(struct subs_list *l, size_t n);
/* The public lists only, the default list first, then by name, without
 * counts (cheap: what every subscribe form offers). Free as above. */
struct subs_list *subs_public_lists(struct store *s, size_t *n, struct err *err);

/* ---- subscribe / unsubscribe -------------------------------------------- */

enum subs_outcome {
	SUBS_ADDED,      /* a new membership */
	SUBS_UPDATED,    /* an existing one changed (status, name, mode, attrs) */
	SUBS_UNCHANGED,  /* nothing to do */
	SUBS_SUPPRESSED, /* unsubscribed or bounced, and no resubscribe */
};
const char *subs_outcome_name(enum subs_outcome o); /* "added" … "suppressed" */

struct subs_request {
	const char *email; /* as typed; validated here */
	const char *list;  /* NULL = SUBS_DEFAULT_LIST */
	const char *name;  /* NULL = keep (or "" for a new subscriber) */
	int mode;          /* enum subs_mode, or -1 = keep (article when new) */
	bool confirm;      /* double opt-in: pending + confirmation mail */
	bool resubscribe;  /* lift an unsubscribed/bounced suppression */
	const char *via;   /* consent_via: "cli", "import", "confirm-link" … */
	const char *actor; /* consent_by: "cli:alice" */
};

struct subs_result {
	enum subs_outcome outcome;
	int64_t subscriber_id, list_id;
	enum subs_status status;      /* after the call */
	enum subs_status prev_status; /* before; valid when had_membership */
	bool had_membership;
	enum subs_mode mode;
	bool mail_queued;  /* a confirmation delivery was (re)queued */
	int64_t status_at; /* when the current status began */
};

/*
 * Subscribes rq->email to a list (see the status rules above). An invalid
 * address or name is ERR_INPUT; an unknown list ERR_NOTFOUND. A suppressed
 * membership without rq->resubscribe is not an error: res->outcome is
 * SUBS_SUPPRESSED and nothing is written.
 */
int subs_subscribe(struct store *s, const struct subs_request *rq, struct subs_result *res,
                   struct err *err);

/*
 * Unsubscribes email from list (NULL = default). Pending, confirmed and
 * bounced memberships become unsubscribed (SUBS_UPDATED); an unsubscribed
 * one is SUBS_UNCHANGED. An address not on the list is ERR_NOTFOUND.
 */
int subs_unsubscribe(struct store *s, const char *email, const char *list, const char *via,
                     const char *actor, struct subs_result *res, struct err *err);

/*
 * The same two transitions by id, for the daemon (one-click unsubscribe,
 * the confirmation link, a bounce report). *changed (if not NULL) tells
 * whether the status changed. subs_confirm_id turns only a pending
 * membership into confirmed (a link in an old mail must not lift a later
 * unsubscribe); subs_unsubscribe_id sets any membership to unsubscribed,
 * subs_bounce_id a pending or confirmed one to bounced. ERR_NOTFOUND when
 * there is no such membership.
 */
int subs_confirm_id(struct store *s, int64_t subscriber_id, int64_t list_id, const char *via,
                    const char *actor, bool *changed, struct err *err);
int subs_unsubscribe_id(struct store *s, int64_t subscriber_id, int64_t list_id, const char *via,
                        const char *actor, bool *changed, struct err *err);
int subs_bounce_id(struct store *s, int64_t subscriber_id, int64_t list_id, const char *detail,
                   bool *changed, struct err *err);

/* ---- building blocks (the daemon's confirm/unsubscribe/bounce code too) --- */

/* NULL when the n bytes at s are valid UTF-8 without NUL or control
 * characters and at most max_cp code points (0 = no limit); otherwise what
 * is wrong ("contains a control character …"), to follow "the name ". */
const char *subs_text_check(const char *s, size_t n, size_t max_cp);

/* Appends to the history. subscriber_id / list_id <= 0 store NULL (an event
 * of a list or of an import run). via, actor, detail NULL = "". */
int subs_event_add(struct store *s, int64_t subscriber_id, int64_t list_id, const char *kind,
                   const char *via, const char *actor, const char *detail, struct err *err);

/* The event kind of a status change: "confirm", "unsubscribe", "bounce",
 * "resubscribe" or "status". */
const char *subs_transition_kind(enum subs_status from, enum subs_status to);

/*
 * The one way a membership's status changes (subscribe, unsubscribe, the
 * confirmation link, a bounce report, an import all come here): the status
 * and status_at; on an opt-in (to pending or confirmed) the consent record
 * renewed (now, via, by; by NULL = actor) and, after bounced, the bounce score reset; on a
 * suppression the consent kept for the history; the subscriber's
 * updated_at; and an events row (via, actor) of kind subs_transition_kind() with the
 * detail "FROM -> TO" (": why" added when why is not NULL or ""). Nothing
 * when from == to. In the caller's transaction.
 */
int subs_transition(struct store *s, int64_t subscriber_id, int64_t list_id, enum subs_status from,
                    enum subs_status to, const char *via, const char *by, const char *actor,
                    const char *why, struct err *err);

/*
 * Queues the confirmation mail of a pending membership: a deliveries row
 * (issue_id 0, part = list_id, state queued, next_attempt now). An existing
 * row that was sent or failed is queued again (attempts 0); one still on its
 * way (queued, deferred, sending) is left alone. *queued (if not NULL) says
 * whether a row was written, i.e. whether a mail will go out because of it.
 */
int subs_queue_confirmation(struct store *s, int64_t subscriber_id, int64_t list_id, bool *queued,
                            struct err *err);
/* The same for the other mails of a membership (ledger.h): kind is
 * LEDGER_CONFIRM, LEDGER_WELCOME or LEDGER_NOTICE. */
int subs_queue_mail(struct store *s, int kind, int64_t subscriber_id, int64_t list_id, bool *queued,
                    struct err *err);

/* Adds a membership of subscriber_id to list_id (the batched import writes
 * its new rows itself). An opt-in records its consent (now, via, by); one
 * created unsubscribed or bounced has none. */
int subs_membership_add(struct store *s, int64_t subscriber_id, int64_t list_id,
                        enum subs_status status, enum subs_mode mode, const char *via,
                        const char *by, struct err *err);

int subs_membership_set_mode(struct store *s, int64_t subscriber_id, int64_t list_id,
                             enum subs_mode mode, struct err *err);

/* ---- the subscribe form (subs_web.c) -------------------------------------- */

#define SUBS_WEB_INTERVAL 3600 /* seconds: at most one mail an address from the form */

struct subs_web_request {
	const char *email;        /* as typed */
	const char *name;         /* NULL or "": none; only a new subscriber takes it */
	enum subs_mode mode;      /* for a new or not yet confirmed membership */
	const char *const *lists; /* names, each a public list */
	size_t nlists;
};

struct subs_web_result {
	int64_t subscriber_id;         /* 0: nothing was written */
	bool created;                  /* a new subscriber */
	bool limited;                  /* a mail went within SUBS_WEB_INTERVAL: nothing done */
	size_t confirmations, notices; /* mails queued (ledger.h) */
};

/*
 * A subscription from the web form (docs/design.md, "Readers on the web"),
 * in one transaction, for each list: no membership -> pending and a
 * confirmation mail; pending -> the confirmation again (and the mode);
 * confirmed -> an "already subscribed" notice, nothing changed;
 * unsubscribed or bounced -> pending and a confirmation mail (to come
 * back: only the link in that mail confirms). The history says via=web.
 * An address that got a mail from the form less than SUBS_WEB_INTERVAL
 * ago gets nothing and nothing changes (res->limited). Who submitted the
 * form is unknown, so nothing a stranger could use is changed: the name
 * of an existing subscriber, the mode of a confirmed membership. ERR_INPUT
 * for an invalid address or name and for a list that does not exist or is
 * private (one message for both: the form does not tell them apart).
 */
int subs_web_subscribe(struct store *s, const struct subs_web_request *rq,
                       struct subs_web_result *res, struct err *err);

/*
 * subs_confirm_id, and when it confirmed (*changed) the welcome mail
 * queued in the same transaction (*welcome): once per confirmation, so a
 * second click or a reload of the confirmation page sends nothing, and a
 * reader who left and came back is welcomed again.
 */
int subs_web_confirm(struct store *s, int64_t subscriber_id, int64_t list_id, const char *via,
                     const char *actor, bool *changed, bool *welcome, struct err *err);

/* ---- listing ------------------------------------------------------------- */

/* One membership as the listing walks it; strings die after the callback. */
struct subs_row {
	int64_t subscriber_id, list_id;
	const char *email, *name, *list, *attrs; /* attrs: a JSON object */
	enum subs_status status;
	enum subs_mode mode;
	int64_t status_at, created_at;
};

/*
 * Calls fn for every membership of list (NULL = every list) with status
 * (-1 = any), ordered by list name then subscriber id (the order of import).
 * The callback must not write to the store (a read statement is open); a
 * non-zero return stops the walk and is returned. -1 with err on error.
 */
int subs_each(struct store *s, const char *list, int status,
              int (*fn)(const struct subs_row *row, void *arg), void *arg, struct err *err);

/* ---- what we hold about one address -------------------------------------- */

struct subs_membership {
	char *list;
	enum subs_status status;
	enum subs_mode mode;
	int64_t consent_at;             /* 0 = none recorded */
	char *consent_via, *consent_by; /* "" when none */
	int64_t status_at, created_at;
	int64_t bounce_score; /* hard bounces counted for this list */
};

struct subs_event {
	int64_t at;
	char *kind, *via, *actor, *detail;
	char *list; /* "" when none or deleted */
};

struct subs_info {
	int64_t id;
	char *email, *name, *attrs; /* attrs: the JSON object as stored */
	int64_t bounce_score;       /* the memberships' scores added up */
	int64_t created_at, updated_at;
	struct subs_membership *memberships;
	size_t nmemberships;
	struct subs_event *events; /* oldest first */
	size_t nevents;
	struct ledger_counts deliveries; /* by state */
};

/* Allocated info about email, or NULL: ERR_NOTFOUND when nothing is held,
 * ERR_INPUT for an invalid address. Free with subs_info_free(). subs_show_id
 * finds the subscriber by id (a record kept apart by the key migration has
 * no address that leads to it). */
struct subs_info *subs_show(struct store *s, const char *email, struct err *err);
struct subs_info *subs_show_id(struct store *s, int64_t id, struct err *err);
void subs_info_free(struct subs_info *i);

struct subs_forgotten {
	int64_t memberships, events, deliveries;
	bool wal_truncated; /* false when a reader kept the WAL alive */
};

/*
 * Erases the subscriber and, through ON DELETE CASCADE, its memberships,
 * events and deliveries, then checkpoints and truncates the WAL so that the
 * address survives neither in the -wal file nor (SQLite's SECURE_DELETE,
 * on in Debian's build) in freed pages. ERR_NOTFOUND when nothing is held.
 * A "forget" event without the address records who erased a record, when.
 */
int subs_forget(struct store *s, const char *email, const char *actor, struct subs_forgotten *out,
                struct err *err);
/* The same by id. Forgetting the record that holds a key gives that key to
 * the oldest record kept apart under it (see subs_rekey). */
int subs_forget_id(struct store *s, int64_t id, const char *actor, struct subs_forgotten *out,
                   struct err *err);

/* ---- address keys (store migration 2) ------------------------------------ */

/*
 * Recomputes every subscriber's key with addr_check (run once by the store's
 * migration to schema 2, inside its transaction). Nothing is merged: a
 * record whose new key another record holds already (the oldest keeps it),
 * and one whose address is no longer valid, keep their old key, which no
 * address leads to any more, and are listed in address_conflicts with the
 * problem, and an "address-conflict" event. They keep their memberships
 * and get mail as before until an admin decides (docs/design.md).
 */
int subs_rekey(struct store *s, struct err *err);

struct subs_conflict {
	int64_t subscriber_id;
	char *email;   /* as stored */
	char *key;     /* the key it would have; NULL: no longer a valid address */
	char *problem; /* what the migration found */
	int64_t found_at;
	int64_t holder_id;  /* who holds the key now, 0 when nobody */
	char *holder_email; /* NULL when nobody */
};

/* The records kept apart, by key: allocated array of *n (non-NULL when
 * empty), NULL with err on error. Free with subs_conflicts_free(). */
struct subs_conflict *subs_conflicts(struct store *s, size_t *n, struct err *err);
void subs_conflicts_free(struct subs_conflict *v, size_t n);

/* ---- CSV import and export (subs_csv.c) ---------------------------------- */

struct subs_import_opts {
	const char *list;  /* NULL = SUBS_DEFAULT_LIST */
	bool atomic;       /* one transaction; any bad row imports nothing */
	bool dry_run;      /* everything an import does, then rolled back */
	bool resubscribe;  /* lift suppressions for rows in the file */
	const char *actor; /* "cli:alice", recorded in the import event */
	size_t chunk;      /* rows per transaction; 0 = SUBS_IMPORT_CHUNK */
	/* Called for every rejected row with "FILE:LINE: what is wrong". */
	void (*reject)(void *arg, int line, const char *msg);
	void *arg;
};
#define SUBS_IMPORT_CHUNK   50000
#define SUBS_CSV_FIELD_MAX  (1 << 20) /* bytes in one field (an unclosed quote…) */
#define SUBS_CSV_FIELDS_MAX 256

struct subs_import_stats {
	int64_t rows; /* data records read (not the header, not blank lines) */
	int64_t added, updated, unchanged;
	int64_t skipped; /* suppressed: unsubscribed or bounced, no resubscribe */
	int64_t rejected;
};

/*
 * Imports the CSV file at path (RFC 4180 through libcsv; UTF-8, optional
 * BOM, CRLF or LF). The first record is the header: columns email
 * (required), name, mode, status in any order and any letter case; every
 * other column is an attribute, stored under its header text in the
 * subscriber's attrs (an empty cell leaves an attribute alone). A row
 * without a status is confirmed (the admin vouches for the file).
 *
 * A bad row is reported through opts->reject and counted; the others are
 * imported, in transactions of opts->chunk rows so that the daemon is never
 * blocked for long. A later row for the same address updates the earlier
 * one. Returns -1 with err when the file cannot be read, the header is bad,
 * a field is over SUBS_CSV_FIELD_MAX, the store fails, or (atomic and
 * dry_run) any row was rejected; stats are filled in every case.
 */
int subs_import(struct store *s, const char *path, const struct subs_import_opts *opts,
                struct subs_import_stats *stats, struct err *err);

/*
 * Writes list (NULL = default) as CSV to f: a header "email","name","mode",
 * "status" then the attribute names in byte order, one row per membership
 * in subscriber order, every field quoted, CRLF line ends (RFC 4180 §2),
 * a cell that a spreadsheet would run as a formula written with a "'"
 * first (subs_csv.c). subs_import reads it back to the same content. *rows (if not NULL) = the
 * rows written.
 */
int subs_export(struct store *s, const char *list, FILE *f, int64_t *rows, struct err *err);

#endif
