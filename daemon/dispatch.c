/*
 * The dispatcher: ledger → messages → sender threads → ledger.
 *
 * Due deliveries are claimed in batches the size of the free room in the
 * senders' queue (the claim commits 'sending' first, see ledger.h). The
 * shared part of each message is rendered once per (issue, part, list) and
 * kept in a small cache; per delivery only the tokens, headers and footer
 * are built. Results are recorded in one transaction per wake-up.
 *
 * A failure of the relay itself (no connection, 421, TLS or AUTH refused)
 * pauses that relay with a growing backoff instead of burning every queued
 * message's attempts against a relay that is down. With several relays
 * (smtp.relays) each message goes to the relay that is up with the most
 * free room, and one that a relay could not take goes on to another at
 * once, still claimed: no ledger round trip, no attempt counted. Each
 * relay's state and counts go to the store's kv (daemon.relays, JSON) for
 * `matrixctl status`, and into the STATUS= line.
 */
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "archive.h"
#include "ledger.h"
#include "log.h"
#include "matrixd.h"
#include "msg.h"
#include "render.h"
#include "subs.h"
#include "xmalloc.h"

#define PREP_CACHE 16
#define CLAIM_MAX  256

struct prep {
	int64_t issue_id, list_id;
	int part;
	int variant; /* the welcome: 1 for a digest reader */
	uint64_t used;
	bool ok;
	struct msg_prep m;
};

struct relay_state {
	int64_t down_until, backoff; /* monotonic ms */
	int64_t sent, deferred, failed, troubles;
	char trouble[200];  /* the last one */
	int64_t trouble_at; /* wall clock */
};

struct list_info {
	int64_t id;
	char *name, *title;
};

struct dispatch {
	struct prep cache[PREP_CACHE];
	uint64_t tick;
	struct issue *issue; /* the issue last rendered */
	int64_t issue_id;
	struct list_info *lists;
	size_t nlists;
	/* rate limit: a token bucket over all connections */
	double tokens;
	int64_t refill_ms;
	/* each relay's trouble and counts */
	struct relay_state *relays;
	int nrelays;
	bool relays_changed;                 /* a relay went down or came back */
	int64_t relays_at;                   /* when daemon.relays was written (ms) */
	uint64_t relays_gen, relays_written; /* counts changed since */
	struct daemon *d;
	/* progress of the issue being sent */
	int64_t prog_issue, prog_synced;
	char *prog_title;
	struct ledger_counts prog;
	bool prog_done_logged;
	/* finished jobs whose result could not be recorded yet (store busy) */
	struct sjob **unrecorded;
	size_t nunrecorded;
	bool recovered;     /* the rows a crash left 'sending' are queued again */
	int64_t enqueue_at; /* ms: look for published issues without deliveries */
	int64_t rate_t0, rate_n;
	double rate;
	bool idle;
};

int dispatch_new(struct daemon *d, struct dispatch **out)
{
	struct dispatch *p = xcalloc(1, sizeof *p);
	p->tokens = d->conf.smtp.rate > 0 ? 1 : 0;
	p->refill_ms = now_ms();
	p->rate_t0 = now_ms();
	p->idle = true;
	p->enqueue_at = now_ms(); /* a crash between publishing and queueing */
	p->d = d;
	p->nrelays = senders_relays(d->senders);
	p->relays = xcalloc((size_t)p->nrelays, sizeof *p->relays);
	p->relays_changed = true;
	*out = p;
	return 0;
}

void dispatch_invalidate(struct dispatch *p)
{
	for (int i = 0; i < PREP_CACHE; i++)
		if (p->cache[i].used) {
			if (p->cache[i].ok)
				msg_prep_free(&p->cache[i].m);
			memset(&p->cache[i], 0, sizeof p->cache[i]);
		}
	issue_free(p->issue);
	p->issue = NULL;
	p->issue_id = 0;
	for (size_t i = 0; i < p->nlists; i++) {
		free(p->lists[i].name);
		free(p->lists[i].title);
	}
	free(p->lists);
	p->lists = NULL;
	p->nlists = 0;
}

void dispatch_free(struct dispatch *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->nunrecorded; i++) {
		ledger_jobs_free(p->unrecorded[i]->ctx, 1);
		sjob_free(p->unrecorded[i]);
	}
	free(p->unrecorded);
	dispatch_invalidate(p);
	free(p->prog_title);
	free(p->relays);
	free(p);
}

static bool relay_up(const struct dispatch *p, int r, int64_t now)
{
	return p->relays[r].down_until <= now;
}

/* The earliest moment a relay is back; 0 when one is up. */
static int64_t relays_back(const struct dispatch *p)
{
	int64_t now = now_ms(), back = INT64_MAX;
	for (int r = 0; r < p->nrelays; r++) {
		if (relay_up(p, r, now))
			return 0;
		if (p->relays[r].down_until < back)
			back = p->relays[r].down_until;
	}
	return back;
}

bool dispatch_relay_down(struct dispatch *p)
{
	return relays_back(p) != 0;
}

/* The relay that is up with the most room left in rooms[], or -1. */
static int pick_relay(const struct dispatch *p, const size_t *rooms, int not )
{
	int best = -1;
	int64_t now = now_ms();
	for (int r = 0; r < p->nrelays; r++)
		if (r != not &&relay_up(p, r, now) && rooms[r] > 0 &&
		    (best < 0 || rooms[r] > rooms[best]))
			best = r;
	return best;
}

static const struct list_info *list_info(struct daemon *d, int64_t id, struct err *err)
{
	struct dispatch *p = d->dispatch;
	for (size_t i = 0; i < p->nlists; i++)
		if (p->lists[i].id == id)
			return &p->lists[i];
	struct list_info li = {id, NULL, NULL};
	if (subs_list_names(d->store, id, &li.name, &li.title, err) < 0) {
		if (err->kind != ERR_NOTFOUND)
			return NULL;
		/* the list was deleted meanwhile: mail still names it somehow */
		li.name = xasprintf("list-%" PRId64, id);
		li.title = xstrdup(d->conf.site.title);
	}
	p->lists = xreallocarray(p->lists, p->nlists + 1, sizeof *p->lists);
	p->lists[p->nlists] = li;
	return &p->lists[p->nlists++];
}

static const struct msg_prep *prep_for(struct daemon *d, const struct ledger_job *j,
                                       struct err *err)
{
	struct dispatch *p = d->dispatch;
	struct prep *victim = &p->cache[0];
	int variant = j->issue_id == LEDGER_WELCOME && j->digest;
	for (int i = 0; i < PREP_CACHE; i++) {
		struct prep *c = &p->cache[i];
		if (c->used && c->issue_id == j->issue_id && c->part == j->part &&
		    c->list_id == j->list_id && c->variant == variant) {
			c->used = ++p->tick;
			return c->ok ? &c->m : NULL;
		}
		if (c->used < victim->used)
			victim = c;
	}
	const struct list_info *li = list_info(d, j->list_id, err);
	if (li == NULL)
		return NULL;
	struct render_list rl = {li->name,
	                         li->title && *li->title ? li->title : d->conf.site.title};
	if (victim->used && victim->ok)
		msg_prep_free(&victim->m);
	memset(victim, 0, sizeof *victim);
	int r;
	if (j->issue_id == LEDGER_CONFIRM) {
		r = render_confirm(&d->conf, d->tmpl, &rl, &victim->m, err);
	} else if (j->issue_id == LEDGER_WELCOME) {
		r = render_welcome(&d->conf, d->tmpl, &rl, j->digest, &victim->m, err);
	} else if (j->issue_id == LEDGER_NOTICE) {
		r = render_already(&d->conf, d->tmpl, &rl, &victim->m, err);
	} else {
		if (p->issue_id != j->issue_id) {
			issue_free(p->issue);
			p->issue = archive_load(d->store, j->issue_id, err);
			p->issue_id = p->issue ? j->issue_id : 0;
			if (p->issue == NULL)
				return NULL;
		}
		r = render_mail(&d->conf, d->tmpl, p->issue, p->issue->date, j->part, &rl,
		                &victim->m, err);
	}
	if (r < 0)
		return NULL;
	*victim =
	    (struct prep){j->issue_id, j->list_id, j->part, variant, ++p->tick, true, victim->m};
	return &victim->m;
}

static struct sjob *build(struct daemon *d, struct ledger_job *j, struct err *err)
{
	const struct msg_prep *m = prep_for(d, j, err);
	if (m == NULL)
		return NULL;
	struct render_links l;
	render_links(&d->conf, &d->key, j->subscriber_id, j->list_id, j->id, j->issue_id == 0, &l);
	struct msg_rcpt r = {
	    .email = j->email,
	    .name = j->name,
	    .message_id = l.message_id,
	    .unsub_url = l.unsub_url,
	    .unsub_mailto = l.unsub_mailto,
	    .confirm_url = l.confirm_url,
	    .prefs_url = l.prefs_url,
	    .date = time(NULL),
	};
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	struct sjob *job = NULL;
	if (msg_build(m, &r, &b, err) == 0) {
		job = xcalloc(1, sizeof *job);
		job->delivery_id = j->id;
		job->from = l.return_path;
		l.return_path = NULL;
		job->rcpt = xstrdup(j->email);
		job->uid = xstrdup(l.message_id); /* its local part: a VERP token */
		job->len = b.len;
		job->data = buf_detach(&b);
		job->keys = sign_keys_ref(d->dkim);
	}
	buf_free(&b);
	render_links_free(&l);
	return job;
}

static size_t rate_allow(struct daemon *d, size_t want, int64_t *wake)
{
	struct dispatch *p = d->dispatch;
	double rate = d->conf.smtp.rate;
	if (rate <= 0)
		return want;
	int64_t now = now_ms();
	p->tokens += (double)(now - p->refill_ms) * rate / 1000.0;
	p->refill_ms = now;
	double burst = rate < 1 ? 1 : rate;
	if (p->tokens > burst)
		p->tokens = burst;
	size_t n = p->tokens >= 1 ? (size_t)p->tokens : 0;
	if (n > want)
		n = want;
	p->tokens -= (double)n;
	if (n < want)
		*wake = now + (int64_t)((1.0 - p->tokens) * 1000.0 / rate) + 1;
	return n;
}

static const struct ledger_policy *policy(struct daemon *d)
{
	static struct ledger_policy pol;
	pol = (struct ledger_policy){d->conf.smtp.max_attempts, d->conf.smtp.retry_max_age,
	                             d->conf.bounce_threshold};
	return &pol;
}

/* ---- progress: counts of the issue being sent, kept up to date by the
 * claims and results, resynchronised from the store now and then ---- */

static void progress_sync(struct daemon *d, int64_t issue_id)
{
	struct dispatch *p = d->dispatch;
	struct err e;
	if (p->prog_issue != issue_id) {
		struct archive_issue *a = archive_get(d->store, 0, issue_id, &e);
		free(p->prog_title);
		/* the number too: two issues may share a title */
		p->prog_title = a ? xasprintf("issue %d (%s)", a->number, a->title) : xstrdup("?");
		archive_issues_free(a, a ? 1 : 0);
		p->prog_issue = issue_id;
		p->prog_done_logged = false;
	}
	if (ledger_counts(d->store, issue_id, &p->prog, &e) < 0)
		memset(&p->prog, 0, sizeof p->prog);
	p->prog_synced = now_ms();
}

/* A claim moved rows from queued/deferred to sending. */
static void progress_claims(struct daemon *d, const struct ledger_job *jobs, size_t n)
{
	struct dispatch *p = d->dispatch;
	int64_t last = 0;
	for (size_t i = 0; i < n; i++)
		if (jobs[i].issue_id > 0)
			last = jobs[i].issue_id;
	if (last == 0)
		return;
	if (last != p->prog_issue || now_ms() - p->prog_synced > 60000) {
		progress_sync(d, last); /* the store already counts these claims */
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (jobs[i].issue_id != p->prog_issue)
			continue;
		int64_t *from = &p->prog.n[jobs[i].was_deferred ? LEDGER_DEFERRED : LEDGER_QUEUED];
		if (*from > 0)
			(*from)--;
		p->prog.n[LEDGER_SENDING]++;
	}
}

static void progress_result(struct daemon *d, const struct ledger_job *j, enum ledger_state state)
{
	struct dispatch *p = d->dispatch;
	if (j->issue_id <= 0 || p->prog_issue != j->issue_id)
		return;
	int64_t *c = p->prog.n;
	if (c[LEDGER_SENDING] > 0)
		c[LEDGER_SENDING]--;
	c[state]++;
	if (c[LEDGER_QUEUED] + c[LEDGER_SENDING] == 0 && !p->prog_done_logged) {
		log_info("%s: done: %" PRId64 " sent, %" PRId64 " deferred, %" PRId64 " failed",
		         p->prog_title, c[LEDGER_SENT], c[LEDGER_DEFERRED], c[LEDGER_FAILED]);
		p->prog_done_logged = true;
	}
}

static void keep_unrecorded(struct dispatch *p, struct sjob *job)
{
	p->unrecorded = xreallocarray(p->unrecorded, p->nunrecorded + 1, sizeof *p->unrecorded);
	p->unrecorded[p->nunrecorded++] = job;
}

/* A message that cannot be built (its article was removed by a correction,
 * a template fails) is not the subscriber's problem: recorded as a
 * temporary failure, or cancelled when its article is gone. A result the
 * store cannot take now is kept and recorded later, like a sender's: the
 * row must not stay 'sending'. */
static void build_failed(struct daemon *d, struct ledger_job *j, const struct err *e)
{
	struct send_result r = {.outcome = SEND_TEMP};
	if (e->kind == ERR_NOTFOUND) {
		r.outcome = SEND_PERM;
		snprintf(r.reply, sizeof r.reply, "cancelled: %s", e->msg);
	} else {
		log_err("issue=%d part=%d delivery=%" PRId64 " cannot build the message: %s",
		        j->number, j->part, j->id, e->msg);
		snprintf(r.reply, sizeof r.reply, "not sent: %s", e->msg);
	}
	enum ledger_state state = LEDGER_DEFERRED;
	struct err e2;
	if (ledger_record(d->store, j, &r, store_now(), policy(d), &state, &e2) == 0) {
		progress_result(d, j, state);
		return;
	}
	if (e2.kind == ERR_TEMP)
		daemon_store_trouble(d, "recording results waits", &e2);
	else
		log_warnx("delivery=%" PRId64 " cannot record its result yet: %s", j->id, e2.msg);
	struct sjob *job = xcalloc(1, sizeof *job);
	struct ledger_job *copy = xmalloc(sizeof *copy);
	*copy = *j;
	j->email = j->name = NULL;
	job->delivery_id = j->id;
	job->ctx = copy;
	job->attempted = true;
	job->res = r;
	keep_unrecorded(d->dispatch, job);
}

/* ---- queueing a published issue's deliveries ------------------------------ */

static void min_time(int64_t *acc, int64_t t)
{
	if (t > 0 && (*acc == 0 || t < *acc))
		*acc = t;
}

int dispatch_enqueue(struct daemon *d, int64_t issue_id, int number, int nparts, const char *lists)
{
	struct dispatch *p = d->dispatch;
	struct err e;
	int64_t added = 0, now = store_now();
	err_clear(&e);
	/* One transaction: an issue is either queued and marked so, or
	 * neither, and then found again by enqueue_pending. */
	if (store_begin(d->store, &e) == 0) {
		if (ledger_enqueue_issue(d->store, issue_id, nparts, lists, now, &added, &e) < 0 ||
		    archive_mark_queued(d->store, issue_id, now, &e) < 0) {
			store_rollback(d->store);
		} else if (store_commit(d->store, &e) == 0) {
			log_info("issue=%d queued %" PRId64 " deliveries", number, added);
			return 0;
		}
	}
	int64_t retry;
	if (e.kind == ERR_TEMP) {
		log_err("issue=%d cannot queue deliveries yet (matrixd tries again): %s", number,
		        e.msg);
		daemon_store_trouble(d, "queueing deliveries waits", &e);
		retry = daemon_store_retry(d);
	} else {
		log_err("issue=%d cannot queue deliveries (matrixd tries again in 30 s): %s",
		        number, e.msg);
		retry = now_ms() + 30000;
	}
	min_time(&p->enqueue_at, retry);
	return -1;
}

/* Issues due without deliveries (an enqueue that failed, a crash right
 * after publishing) are queued. Returns when to look again, or 0. */
static int64_t enqueue_pending(struct daemon *d)
{
	struct dispatch *p = d->dispatch;
	if (p->enqueue_at == 0 || p->enqueue_at > now_ms())
		return p->enqueue_at;
	p->enqueue_at = 0;
	struct err e;
	size_t n = 0;
	struct archive_issue *all = archive_list(d->store, &n, &e);
	if (all == NULL) {
		log_warnx("looking for issues to queue: %s", e.msg);
		p->enqueue_at = now_ms() + 5000;
		return p->enqueue_at;
	}
	bool queued = false;
	for (size_t i = 0; i < n; i++) {
		/* not a draft, sent, waiting for its send_at, or without its
		 * pages (nothing is queued before they are written) */
		if (archive_phase(&all[i], store_now(), d->conf.schedule_grace) != ARCHIVE_DUE ||
		    !all[i].is_published)
			continue;
		if (dispatch_enqueue(d, all[i].id, all[i].number, all[i].narticles, all[i].lists) <
		    0)
			break;
		queued = true;
	}
	archive_issues_free(all, n);
	if (queued)
		publish_listing(d); /* a scheduled issue is listed once it is out */
	return p->enqueue_at;
}

/* True unless no queued or deferred row is due now: a claim without one
 * would take the write lock for nothing. */
static bool something_due(struct daemon *d)
{
	int64_t due = 0;
	struct err e;
	return ledger_next_due(d->store, &due, &e) < 0 || (due != 0 && due <= store_now());
}

/* Before the first claim: the rows a crash left 'sending' go back to
 * 'queued'. Here, not at start, so that a busy store delays it without
 * holding up the start (main.c took the lock first). */
static bool recover(struct daemon *d, int64_t *wake)
{
	struct dispatch *p = d->dispatch;
	int64_t n = 0;
	struct err e;
	if (p->recovered)
		return true;
	if (ledger_recover(d->store, &n, &e) < 0) {
		if (e.kind == ERR_TEMP) {
			daemon_store_trouble(d, "sending waits", &e);
			min_time(wake, daemon_store_retry(d));
		} else {
			log_err("%s", e.msg);
			min_time(wake, now_ms() + 5000);
		}
		return false;
	}
	p->recovered = true;
	if (n > 0)
		log_notice("%" PRId64 " deliveries were in flight when matrixd last stopped; "
		           "sending them again",
		           n);
	return true;
}

/* The free room of each relay that is up (rooms[], nrelays of them, may
 * be NULL); the sum. */
static size_t free_rooms(struct daemon *d, size_t *rooms)
{
	struct dispatch *p = d->dispatch;
	size_t room = 0;
	int64_t now = now_ms();
	for (int r = 0; r < p->nrelays; r++) {
		size_t k = relay_up(p, r, now) ? senders_room(d->senders, r) : 0;
		if (rooms)
			rooms[r] = k;
		room += k;
	}
	return room;
}

/* Claims up to room due rows (*jobs, *n; inside the caller's transaction,
 * if any); false when there is nothing to hand out, and then *more says
 * whether a claim may find more now. */
static bool claim(struct daemon *d, size_t room, struct ledger_job **jobs, size_t *n, bool *more,
                  int64_t *wake)
{
	struct dispatch *p = d->dispatch;
	size_t cancelled = 0;
	struct err e;
	*jobs = NULL;
	*n = 0;
	*more = false;
	if (room > CLAIM_MAX)
		room = CLAIM_MAX;
	room = rate_allow(d, room, wake);
	if (room == 0)
		return false;
	err_clear(&e);
	if (ledger_claim(d->store, store_now(), room, jobs, n, &cancelled, &e) < 0) {
		if (d->conf.smtp.rate > 0)
			p->tokens += (double)room;
		if (e.kind == ERR_TEMP) {
			daemon_store_trouble(d, "sending waits", &e);
			min_time(wake, daemon_store_retry(d));
		} else {
			log_warnx("claim deliveries: %s", e.msg);
			min_time(wake, now_ms() + 1000);
		}
		return false;
	}
	if (d->conf.smtp.rate > 0)
		p->tokens += (double)(room - *n);
	if (*n == 0) {
		free(*jobs);
		*jobs = NULL;
		*more = cancelled > 0; /* only cancelled rows this time: there may be more */
		return false;
	}
	return true;
}

/* Hands claimed (and committed) jobs to the senders, each to the relay
 * that is up with the most room left in rooms[] (free_rooms() before the
 * claim); false when done for now. */
static bool hand_out(struct daemon *d, size_t *rooms, struct ledger_job *jobs, size_t n,
                     int *failures, int64_t *wake)
{
	struct dispatch *p = d->dispatch;
	struct err e;
	p->idle = false;
	progress_claims(d, jobs, n);
	for (size_t i = 0; i < n; i++) {
		struct sjob *job = build(d, &jobs[i], &e);
		if (job == NULL) {
			build_failed(d, &jobs[i], &e);
			(*failures)++;
			continue;
		}
		struct ledger_job *copy = xmalloc(sizeof *copy);
		*copy = jobs[i];
		jobs[i].email = jobs[i].name = NULL;
		job->ctx = copy;
		int r = pick_relay(p, rooms, -1);
		if (r < 0)
			r = 0; /* cannot be: the claim took no more than the room */
		rooms[r] -= rooms[r] > 0;
		senders_submit(d->senders, r, job);
	}
	ledger_jobs_free(jobs, n);
	if (p->nunrecorded > 0) {
		min_time(wake, daemon_store_retry(d));
		return false;
	}
	if (*failures >= CLAIM_MAX) {
		/* Many messages that cannot be built: give the loop (and the
		 * admin) a breath instead of spinning through all of them. */
		min_time(wake, now_ms() + 5000);
		return false;
	}
	return true;
}

/* Claims one batch and hands it to the senders; false when done for now. */
static bool fill_once(struct daemon *d, int *failures, int64_t *wake)
{
	struct ledger_job *jobs;
	size_t n, *rooms = xcalloc((size_t)d->dispatch->nrelays, sizeof *rooms);
	bool more = true;
	if (claim(d, free_rooms(d, rooms), &jobs, &n, &more, wake))
		more = hand_out(d, rooms, jobs, n, failures, wake);
	free(rooms);
	return more;
}

int64_t dispatch_fill(struct daemon *d)
{
	struct dispatch *p = d->dispatch;
	int64_t wake = 0;
	if (p->nunrecorded > 0)
		return daemon_store_retry(d); /* the store is in trouble: record first */
	if (d->stopping)
		return 0;
	min_time(&wake, enqueue_pending(d));
	if (!recover(d, &wake))
		return wake;
	int64_t back = relays_back(p);
	if (back) {
		min_time(&wake, back);
		return wake;
	}
	/* no room: the next result wakes the loop, and it looks then */
	if (free_rooms(d, NULL) == 0 || !something_due(d))
		return wake;
	int failures = 0;
	while (fill_once(d, &failures, &wake))
		;
	return wake;
}

bool dispatch_full(struct daemon *d)
{
	return relays_back(d->dispatch) == 0 && free_rooms(d, NULL) == 0;
}

bool dispatch_pending(struct dispatch *p)
{
	return !p->recovered || p->enqueue_at != 0 || p->nunrecorded > 0;
}

/* Records one finished job (in the caller's transaction, if any). */
static int record(struct daemon *d, struct sjob *job, int64_t now, enum ledger_state *state,
                  struct err *e)
{
	struct ledger_job *j = job->ctx;
	if (!job->attempted) {
		*state = LEDGER_QUEUED;
		return ledger_unclaim(d->store, j->id, e);
	}
	return ledger_record(d->store, j, &job->res, now, policy(d), state, e);
}

/* A result that says the relay is in trouble: noted for the relay. */
static void relay_trouble(struct dispatch *p, const struct sjob *job, bool *trouble)
{
	struct relay_state *rs = &p->relays[job->relay];
	trouble[job->relay] = true;
	rs->troubles++;
	snprintf(rs->trouble, sizeof rs->trouble, "%s", job->res.reply);
	rs->trouble_at = (int64_t)time(NULL);
}

/* What is logged and counted once a result is safely recorded. */
static void recorded(struct daemon *d, struct sjob *job, enum ledger_state state, bool *trouble,
                     bool *ok)
{
	struct dispatch *p = d->dispatch;
	struct ledger_job *j = job->ctx;
	if (job->attempted) {
		const struct send_result *r = &job->res;
		struct relay_state *rs = &p->relays[job->relay];
		if (r->relay_level)
			relay_trouble(p, job, trouble);
		ok[job->relay] |= r->outcome == SEND_OK;
		if (r->outcome == SEND_OK) {
			log_debug("delivery=%" PRId64 " issue=%d part=%d subscriber=%" PRId64
			          " rcpt=%s sent: %s",
			          j->id, j->number, j->part, j->subscriber_id, j->email, r->reply);
			p->rate_n++;
			rs->sent++;
		} else if (!r->relay_level) {
			log_info("delivery=%" PRId64 " issue=%d part=%d subscriber=%" PRId64
			         " %s: %s",
			         j->id, j->number, j->part, j->subscriber_id,
			         ledger_state_name(state), r->reply);
			rs->deferred += state == LEDGER_DEFERRED;
			rs->failed += state == LEDGER_FAILED;
		}
		p->relays_gen++;
	}
	progress_result(d, j, state);
}

/*
 * A job its relay could not take (down, TLS or AUTH refused), or that it
 * gave back unsent because it was paused meanwhile, goes on to another
 * relay that is up, still claimed: the ledger never sees it, and no
 * attempt is counted. false when there is none (or we are stopping):
 * then it is recorded, and its row goes back in line.
 */
static bool hand_on(struct daemon *d, struct sjob *job, bool *trouble, size_t *rooms)
{
	struct dispatch *p = d->dispatch;
	bool skipped = !job->attempted && job->skipped;
	if (d->stopping || p->nrelays < 2 ||
	    (!skipped && (!job->attempted || !job->res.relay_level)))
		return false;
	if (!skipped)
		trouble[job->relay] = true;
	int64_t now = now_ms();
	for (int r = 0; r < p->nrelays; r++)
		rooms[r] = trouble[r] || !relay_up(p, r, now) ? 0 : senders_room(d->senders, r);
	int r = pick_relay(p, rooms, job->relay);
	if (r < 0)
		return false; /* recorded: recorded() notes the trouble */
	if (!skipped)
		relay_trouble(p, job, trouble);
	job->attempted = job->skipped = false;
	memset(&job->res, 0, sizeof job->res);
	senders_submit(d->senders, r, job);
	return true;
}

/* A relay had trouble in this batch (handed on, or a relay-level result):
 * its pause is decided after the batch, so nothing is claimed before. */
static bool any_trouble(const struct dispatch *p, struct sjob **jobs, size_t n, const bool *trouble)
{
	for (int r = 0; r < p->nrelays; r++)
		if (trouble[r])
			return true;
	for (size_t i = 0; i < n; i++)
		if (jobs[i]->skipped || (jobs[i]->attempted && jobs[i]->res.relay_level))
			return true;
	return false;
}

void dispatch_collect(struct daemon *d)
{
	struct dispatch *p = d->dispatch;
	size_t n = 0;
	struct sjob **fresh = senders_collect(d->senders, &n);
	bool *trouble = xcalloc((size_t)p->nrelays, sizeof *trouble);
	bool *ok = xcalloc((size_t)p->nrelays, sizeof *ok);
	bool *seen = xcalloc((size_t)p->nrelays, sizeof *seen);     /* had a result now */
	bool *paused = xcalloc((size_t)p->nrelays, sizeof *paused); /* paused now */
	size_t *rooms = xcalloc((size_t)p->nrelays, sizeof *rooms);
	/* the next batch, claimed with the results; the dispatch_fill() that
	 * follows every collect sets the timers and counts failures itself */
	struct ledger_job *next = NULL;
	size_t nnext = 0;
	bool more;
	int failures = 0;
	int64_t unused = 0;
	/* results that could not be recorded before come first */
	struct sjob **jobs = xreallocarray(NULL, p->nunrecorded + n + 1, sizeof *jobs);
	size_t total = 0;
	for (size_t i = 0; i < p->nunrecorded; i++)
		jobs[total++] = p->unrecorded[i];
	for (size_t i = 0; i < n; i++) {
		seen[fresh[i]->relay] = true;
		if (!hand_on(d, fresh[i], trouble, rooms))
			jobs[total++] = fresh[i];
	}
	free(fresh);
	p->nunrecorded = 0;
	if (total == 0)
		goto relays;
	struct err e;
	err_clear(&e);
	int64_t now = store_now();
	enum ledger_state *states = xcalloc(total, sizeof *states);

	/* One transaction for every result of this wake-up: the commit is the
	 * expensive part. If any part of it fails, the whole rolls back (a
	 * nested failure dooms the batch, store.h) and each result is recorded
	 * on its own; what still fails is kept and tried again: a result is
	 * never dropped, or its row would stay 'sending' until a restart and
	 * the message go out twice. */
	bool batch_ok = store_begin(d->store, &e) == 0;
	for (size_t i = 0; i < total && batch_ok; i++)
		batch_ok = record(d, jobs[i], now, &states[i], &e) == 0;
	/* The next batch, for the room these results left, is claimed in the
	 * same transaction: one commit a wake-up. Not when a relay reported
	 * trouble (it may be paused below) or when anything waits first. */
	if (batch_ok && !d->stopping && p->recovered && p->enqueue_at == 0 &&
	    !any_trouble(p, jobs, total, trouble))
		claim(d, free_rooms(d, rooms), &next, &nnext, &more, &unused);
	if (batch_ok)
		batch_ok = store_commit(d->store, &e) == 0;
	else
		store_rollback(d->store);
	if (!batch_ok) { /* the claim went with the rest */
		ledger_jobs_free(next, nnext);
		next = NULL;
		nnext = 0;
	}
	bool busy = !batch_ok && e.kind == ERR_TEMP;
	if (busy)
		daemon_store_trouble(d, "recording results waits", &e);
	for (size_t i = 0; i < total; i++) {
		struct sjob *job = jobs[i];
		/* on its own, unless the store cannot take writes at all now:
		 * then each would only fail the same way */
		if (!batch_ok && (busy || record(d, job, now, &states[i], &e) < 0)) {
			if (!busy)
				log_warnx("delivery=%" PRId64 " cannot record its result yet: %s",
				          ((struct ledger_job *)job->ctx)->id, e.msg);
			busy |= e.kind == ERR_TEMP;
			keep_unrecorded(p, job);
			continue;
		}
		recorded(d, job, states[i], trouble, ok);
		ledger_jobs_free(job->ctx, 1);
		sjob_free(job);
	}
	free(states);
relays:
	free(jobs);
	for (int r = 0; r < p->nrelays; r++) {
		struct relay_state *rs = &p->relays[r];
		const struct conf_relay *cr = &d->conf.smtp.relays[r];
		if (ok[r]) {
			if (rs->backoff)
				log_notice("relay %s is back", conf_relay_name(cr));
			p->relays_changed |= rs->backoff != 0;
			rs->backoff = 0;
		} else if (trouble[r] && !relay_up(p, r, now_ms())) {
			/* paused already: these are the messages it held when it
			 * went down, failing one after the other; the pause grows
			 * when a message handed to it after the pause fails too,
			 * not once per result (one blip of 421s paused it 300 s) */
		} else if (trouble[r]) {
			rs->backoff = rs->backoff ? rs->backoff * 2 : 5000;
			if (rs->backoff > 300000)
				rs->backoff = 300000;
			rs->down_until = now_ms() + rs->backoff;
			p->relays_changed = true;
			paused[r] = true;
		}
		/* its threads wait for this word after a trouble: while it is
		 * paused, what waits in its queue comes back for another relay */
		if (seen[r] || trouble[r])
			senders_pause(d->senders, r, relay_up(p, r, now_ms()) ? 0 : rs->down_until);
	}
	/* logged once every relay's state is known: whether another one
	 * takes the share or sending waits */
	int64_t back = relays_back(p), t = now_ms();
	char waits[96];
	if (p->nrelays == 1)
		waits[0] = '\0'; /* the pause says it all */
	else if (back == 0)
		snprintf(waits, sizeof waits, " (the other relays take its share)");
	else
		snprintf(waits, sizeof waits,
		         "; all relays are down: sending waits until one is back (in %" PRId64
		         " s)",
		         (back - t + 999) / 1000);
	for (int r = 0; r < p->nrelays; r++)
		if (paused[r])
			log_warnx("relay %s: %s; pausing %" PRId64 " s%s",
			          conf_relay_name(&d->conf.smtp.relays[r]),
			          p->relays[r].trouble[0] ? p->relays[r].trouble : "unavailable",
			          p->relays[r].backoff / 1000, waits);
	if (nnext > 0)
		hand_out(d, rooms, next, nnext, &failures, &unused);
	free(paused);
	free(trouble);
	free(seen);
	free(ok);
	free(rooms);
}

size_t dispatch_unrecorded(struct dispatch *p)
{
	return p->nunrecorded;
}

static void thousands(int64_t v, char *out, size_t n)
{
	char raw[32];
	snprintf(raw, sizeof raw, "%" PRId64, v);
	size_t len = strlen(raw), o = 0;
	for (size_t i = 0; i < len && o + 2 < n; i++) {
		if (i > 0 && (len - i) % 3 == 0 && raw[0] != '-')
			out[o++] = ',';
		out[o++] = raw[i];
	}
	out[o] = '\0';
}

/*
 * daemon.relays in the store's kv, for `matrixctl status`: a JSON array,
 * one object per relay (url, state, connections, counts, the last
 * trouble). Written when a relay goes down or comes back, and at most once
 * a second while the counts move.
 */
static void publish_relays(struct dispatch *p)
{
	int64_t now = now_ms();
	if (!p->relays_changed && (p->relays_gen == p->relays_written || now - p->relays_at < 1000))
		return;
	if (p->d->once || p->d->store == NULL)
		return;
	struct json_object *arr = json_object_new_array();
	for (int r = 0; r < p->nrelays; r++) {
		const struct relay_state *rs = &p->relays[r];
		struct json_object *o = json_object_new_object();
		bool up = relay_up(p, r, now);
		json_object_object_add(
		    o, "url", json_object_new_string(conf_relay_name(&p->d->conf.smtp.relays[r])));
		json_object_object_add(o, "state", json_object_new_string(up ? "up" : "down"));
		json_object_object_add(o, "retry_at",
		                       up ? NULL
		                          : json_object_new_int64((int64_t)time(NULL) +
		                                                  (rs->down_until - now) / 1000));
		json_object_object_add(o, "connections",
		                       json_object_new_int(senders_connections(p->d->senders, r)));
		json_object_object_add(o, "sent", json_object_new_int64(rs->sent));
		json_object_object_add(o, "deferred", json_object_new_int64(rs->deferred));
		json_object_object_add(o, "failed", json_object_new_int64(rs->failed));
		json_object_object_add(o, "troubles", json_object_new_int64(rs->troubles));
		json_object_object_add(o, "last_trouble", json_object_new_string(rs->trouble));
		json_object_object_add(o, "last_trouble_at", json_object_new_int64(rs->trouble_at));
		json_object_array_add(arr, o);
	}
	struct err e;
	if (store_kv_set(p->d->store, "daemon.relays",
	                 json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN), &e) < 0)
		log_debug("%s", e.msg);
	else
		p->relays_changed = false;
	json_object_put(arr);
	p->relays_at = now;
	p->relays_written = p->relays_gen;
}

/* "; relays: 1 of 2 up (smtp://mx2… down, back in 20 s)", or "" with one relay up. */
static void relays_line(struct dispatch *p, char *out, size_t n)
{
	int64_t now = now_ms();
	int up = 0;
	size_t o = 0;
	out[0] = '\0';
	for (int r = 0; r < p->nrelays; r++)
		up += relay_up(p, r, now);
	if (p->nrelays == 1 && up == 1)
		return;
	o += (size_t)snprintf(out, n, "; relays: %d of %d up", up, p->nrelays);
	for (int r = 0; r < p->nrelays && o < n; r++)
		if (!relay_up(p, r, now))
			o += (size_t)snprintf(out + o, n - o, ", %s down (again in %" PRId64 " s)",
			                      conf_relay_name(&p->d->conf.smtp.relays[r]),
			                      (p->relays[r].down_until - now + 999) / 1000);
}

void dispatch_status(struct dispatch *p, char *out, size_t n)
{
	publish_relays(p);
	int64_t now = now_ms();
	if (now - p->rate_t0 >= 2000) {
		double inst = (double)p->rate_n * 1000.0 / (double)(now - p->rate_t0);
		p->rate = p->rate > 0 ? 0.5 * p->rate + 0.5 * inst : inst;
		p->rate_t0 = now;
		p->rate_n = 0;
	}
	if (p->prog_issue == 0) {
		snprintf(out, n, "idle");
		return;
	}
	const int64_t *c = p->prog.n;
	char sent[32], all[32];
	thousands(c[LEDGER_SENT], sent, sizeof sent);
	thousands(ledger_counts_total(&p->prog), all, sizeof all);
	char relays[200];
	relays_line(p, relays, sizeof relays);
	snprintf(out, n, "%s: %s/%s sent, %" PRId64 " deferred, %" PRId64 " failed, %.0f msg/s%s",
	         p->prog_title, sent, all, c[LEDGER_DEFERRED], c[LEDGER_FAILED], p->rate, relays);
}
