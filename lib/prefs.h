/*
 * A reader's own page of settings (BASE p/TOKEN, daemon/http.c; the form is
 * described in docs/nginx.md): what it shows, what a POST of its form
 * asks for, and the changes written. The token is the reader's proof: it
 * came to their mailbox, so the page may do what a confirmation link does
 * without another mail. Every change is a transition (subs.h) or a mode
 * change with an events row, via and actor as the caller says ("web",
 * "http").
 *
 * What the page may do on a list:
 *   - switch the delivery mode of a membership (any status);
 *   - subscribe (no membership yet), come back (unsubscribed, bounced) or
 *     confirm (pending): the membership becomes confirmed at once. Only on
 *     a public list; on a private one only a pending membership (the
 *     admin's own invitation) may be confirmed;
 *   - unsubscribe (any membership not unsubscribed already).
 * The page shows every list the reader has a membership of and every
 * public list besides; nothing else can be named.
 */
#ifndef MATRIX_PREFS_H
#define MATRIX_PREFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "httpreq.h"
#include "store.h"
#include "subs.h"

/* One list as the page shows it. */
struct prefs_list {
	int64_t id;
	char *name, *title; /* title "" when the list has none */
	bool is_private;
	bool member;             /* the reader has a membership of it */
	enum subs_status status; /* when member */
	enum subs_mode mode;     /* when member */
};

struct prefs {
	int64_t subscriber_id;
	char *email;
	struct prefs_list *lists; /* the default list first, then by name */
	size_t n;
};

/* Loads the page of subscriber sid into *p (free with prefs_free, also
 * after an error). ERR_NOTFOUND when there is no such subscriber (it was
 * forgotten: its old links name nobody). */
int prefs_load(struct store *s, int64_t sid, struct prefs *p, struct err *err);
void prefs_free(struct prefs *p);

/* What a POST asks for on one list, and (prefs_apply) what came of it. */
struct prefs_change {
	size_t list; /* index into prefs.lists */
	int mode;    /* enum subs_mode, or -1: keep (a new membership: article) */
	int join;    /* +1 subscribe, come back or confirm; -1 unsubscribe; 0 neither */
	/* filled in by prefs_apply */
	bool mode_changed, status_changed, added;
	enum subs_status from, to;
};

/*
 * Reads the form of a POST against the page p shows: mode.LIST=article|
 * digest for each list ("mode" alone when the page shows one list),
 * subscribe=LIST and unsubscribe=LIST (repeatable). Other names (the
 * buttons' own, like save) are ignored. Refuses (-1, ERR_INPUT, err
 * saying what, never echoing the form) a list the page does not show, a
 * mode that is neither, two different modes for one list, "mode" when
 * the page shows several lists, subscribe and unsubscribe of one list,
 * subscribe to what the rules above refuse, unsubscribe where there is no
 * membership, and a form that asks for nothing. A mode for a list without
 * a membership counts only with its subscribe. *out: allocated (free()),
 * one change per list touched, *n of them; NULL on error.
 */
int prefs_form(const struct prefs *p, const struct httpreq_form *f, struct prefs_change **out,
               size_t *n, struct err *err);

/*
 * Writes changes (from prefs_form against p) in one transaction, each
 * checked again against the store as it is then (a list gone private or
 * deleted meanwhile is ERR_INPUT / ERR_NOTFOUND and nothing is written).
 * A change that is already so writes nothing. On success p shows what was
 * written and *changed (if not NULL) is how many lists changed. ERR_TEMP
 * when the store takes no writes now.
 */
int prefs_apply(struct store *s, struct prefs *p, struct prefs_change *c, size_t n, const char *via,
                const char *actor, size_t *changed, struct err *err);

#endif
