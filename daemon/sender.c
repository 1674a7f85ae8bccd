/*
 * Sender threads: Postfix's shape (one smtp process per connection) in
 * threads. Each owns one transport, so one SMTP connection reused for every
 * message it sends, and blocks in it; a slow relay slows that thread only.
 * Each relay (smtp.relays) has its own threads and its own bounded queue,
 * so the dispatcher decides which relay a message goes to; results of all
 * go into one list and one eventfd wakes the main thread's event loop.
 * Threads sleep on their relay's condition variable when there is nothing
 * to send.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "matrixd.h"
#include "xmalloc.h"

/* The threads of one relay and the queue they take work from. */
struct pool {
	int first, n;        /* its threads: s->threads[first .. first + n) */
	struct sjob **queue; /* ring of cap jobs */
	size_t cap, head, count;
	size_t held;          /* queued + being sent + finished and not yet collected */
	int64_t paused_until; /* the dispatcher paused the relay (monotonic ms) */
	pthread_cond_t cv;
};

struct senders {
	int n; /* threads, over every relay */
	pthread_t *threads;
	struct transport **tr;
	struct pool *pools;
	int npools;
	pthread_mutex_t mu;
	struct sjob **done;
	size_t ndone, capdone;
	bool woken; /* the eventfd was written since the last senders_collect */
	bool stop;
	atomic_bool abort;
	int efd;
	bool started;
};

struct worker {
	struct senders *s;
	int i;
	struct pool *pool;
};

void sjob_free(struct sjob *j)
{
	if (j == NULL)
		return;
	free(j->from);
	free(j->rcpt);
	free(j->uid);
	free(j->data);
	sign_keys_unref(j->keys);
	free(j);
}

static void finish(struct senders *s, struct sjob *j)
{
	if (s->ndone == s->capdone) {
		s->capdone = s->capdone ? s->capdone * 2 : 16;
		s->done = xreallocarray(s->done, s->capdone, sizeof *s->done);
	}
	s->done[s->ndone++] = j;
	/* While the queue is more than half full the main thread has nothing to
	 * add: let results gather and wake it once for many (bench/send: +13 %
	 * at 16 connections). They stay within the 5-per-connection budget. */
	const struct pool *p = &s->pools[j->relay];
	if (s->woken || (!s->stop && p->count > p->cap / 2))
		return;
	/* once until the main thread collects: it takes every result then */
	s->woken = true;
	uint64_t one = 1;
	/* An eventfd write only fails when the counter would overflow. */
	if (write(s->efd, &one, sizeof one) < 0 && errno != EAGAIN)
		log_warn("sender eventfd");
}

/*
 * Signs j in this thread, in front of its message: the signatures cost
 * more CPU than everything else about a message (docs/libraries.md,
 * libopendkim), so they are made where the connections run in parallel.
 * A message that cannot be signed is not sent: the relay could take it,
 * receivers would not. That is our trouble, not the message's: nothing is
 * counted and sending pauses.
 */
static int sign_job(struct signer **signer, struct sjob *j)
{
	struct err e;
	err_clear(&e);
	if (j->signed_once)
		return 0; /* handed on from a relay that was down: signed already */
	if ((*signer == NULL && (*signer = signer_new(&e)) == NULL) ||
	    sign_prepend(*signer, j->keys, &j->data, &j->len, &e) < 0) {
		j->res = (struct send_result){.outcome = SEND_TEMP, .relay_level = true};
		snprintf(j->res.reply, sizeof j->res.reply, "not signed: %s", e.msg);
		return -1;
	}
	j->signed_once = true;
	return 0;
}

/* The job at the head of p's queue, taken off it (under s->mu). */
static struct sjob *dequeue(struct pool *p)
{
	struct sjob *j = p->queue[p->head];
	p->head = (p->head + 1) % p->cap;
	p->count--;
	return j;
}

/* What a thread holds besides the job it is sending: the next one, taken
 * from the queue and signed while the relay answers the one before. */
struct ahead {
	struct senders *s;
	struct pool *p;
	struct signer **signer;
	struct sjob *next;
};

/*
 * The transport's meanwhile hook: the message is out and the relay is
 * working on it; the next message to sign is signed now rather than after
 * the reply. Signing is most of a signed message's CPU, and the wait for
 * the reply is otherwise idle time for this connection (bench/dkim).
 * Unsigned jobs are not taken ahead: there is nothing to gain.
 */
static void sign_ahead(void *arg)
{
	struct ahead *a = arg;
	if (a->next)
		return;
	struct pool *p = a->p;
	pthread_mutex_lock(&a->s->mu);
	if (!a->s->stop && p->count > 0 && p->paused_until <= now_ms() &&
	    p->queue[p->head]->keys != NULL && !p->queue[p->head]->signed_once)
		a->next = dequeue(p);
	pthread_mutex_unlock(&a->s->mu);
	if (a->next)
		(void)sign_job(a->signer, a->next); /* a failure is its result */
}

static void *run(void *arg)
{
	struct worker *w = arg;
	struct senders *s = w->s;
	struct pool *p = w->pool;
	struct transport *t = s->tr[w->i];
	struct signer *signer = NULL; /* this thread's, made on first use */
	struct ahead a = {s, p, &signer, NULL};
	free(w);
	t->meanwhile = sign_ahead;
	t->meanwhile_arg = &a;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct sjob *j = a.next;
		a.next = NULL;
		if (j == NULL) {
			while (!s->stop && p->count == 0)
				pthread_cond_wait(&p->cv, &s->mu);
			if (s->stop)
				break;
			j = dequeue(p);
		}
		if (s->stop || p->paused_until > now_ms()) {
			/* the relay went down after this job was queued (or we
			 * stop): it goes back for another relay (or later), not
			 * tried here, one slow failure after the other */
			j->attempted = false;
			j->skipped = !s->stop;
			finish(s, j);
			continue;
		}
		pthread_mutex_unlock(&s->mu);

		if (j->keys == NULL || sign_job(&signer, j) == 0)
			transport_send(t, j->from, j->rcpt, j->uid, j->data, j->len, &j->res);
		j->attempted = true;

		pthread_mutex_lock(&s->mu);
		/* The relay is in trouble: this thread and its siblings take
		 * nothing more from its queue until the dispatcher, seeing this
		 * result, pauses the relay or finds it up (senders_pause). */
		if (j->res.relay_level && p->paused_until <= now_ms())
			p->paused_until = INT64_MAX;
		finish(s, j);
	}
	pthread_mutex_unlock(&s->mu);
	signer_free(signer);
	return NULL;
}

int senders_start(struct senders **out, const struct conf *c, char *const *passwords,
                  struct err *err)
{
	struct senders *s = xcalloc(1, sizeof *s);
	*out = NULL;
	s->efd = -1;
	s->npools = (int)c->smtp.nrelays;
	s->pools = xcalloc(c->smtp.nrelays, sizeof *s->pools);
	for (int r = 0; r < s->npools; r++) {
		struct pool *p = &s->pools[r];
		p->first = s->n;
		p->n = c->smtp.relays[r].connections;
		s->n += p->n;
		/* At most 5 jobs per connection exist at once (queued, being sent,
		 * or finished and not yet recorded): enough that no thread waits
		 * for the main thread, and the bound on duplicates after a crash
		 * (design.md). */
		p->cap = (size_t)p->n * 5;
		p->queue = xcalloc(p->cap, sizeof *p->queue);
		pthread_cond_init(&p->cv, NULL);
	}
	s->tr = xcalloc((size_t)s->n, sizeof *s->tr);
	s->threads = xcalloc((size_t)s->n, sizeof *s->threads);
	atomic_init(&s->abort, false);
	pthread_mutex_init(&s->mu, NULL);
	s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->efd < 0) {
		err_sys(err, "eventfd");
		senders_free(s);
		return -1;
	}
	for (int r = 0; r < s->npools; r++)
		for (int i = s->pools[r].first; i < s->pools[r].first + s->pools[r].n; i++) {
			s->tr[i] = transport_new_relay(c, &c->smtp.relays[r], passwords[r],
			                               &s->abort, err);
			if (s->tr[i] == NULL) {
				senders_free(s);
				return -1;
			}
		}
	int started = 0;
	for (int r = 0; r < s->npools; r++)
		for (int i = s->pools[r].first; i < s->pools[r].first + s->pools[r].n; i++) {
			struct worker *w = xmalloc(sizeof *w);
			*w = (struct worker){s, i, &s->pools[r]};
			int rc = pthread_create(&s->threads[i], NULL, run, w);
			if (rc != 0) {
				free(w);
				s->n = started;
				errno = rc;
				err_sys(err, "pthread_create");
				s->started = started > 0;
				senders_free(s);
				return -1;
			}
			started++;
		}
	s->started = true;
	*out = s;
	return 0;
}

int senders_fd(struct senders *s)
{
	return s->efd;
}

int senders_relays(struct senders *s)
{
	return s->npools;
}

int senders_connections(struct senders *s, int relay)
{
	return s->pools[relay].n;
}

size_t senders_room(struct senders *s, int relay)
{
	pthread_mutex_lock(&s->mu);
	const struct pool *p = &s->pools[relay];
	size_t room = s->stop || p->held >= p->cap ? 0 : p->cap - p->held;
	pthread_mutex_unlock(&s->mu);
	return room;
}

void senders_submit(struct senders *s, int relay, struct sjob *j)
{
	pthread_mutex_lock(&s->mu);
	struct pool *p = &s->pools[relay];
	j->relay = relay;
	p->queue[(p->head + p->count) % p->cap] = j;
	p->count++;
	p->held++;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&s->mu);
}

void senders_pause(struct senders *s, int relay, int64_t until_ms)
{
	pthread_mutex_lock(&s->mu);
	s->pools[relay].paused_until = until_ms;
	pthread_mutex_unlock(&s->mu);
}

struct sjob **senders_collect(struct senders *s, size_t *n)
{
	uint64_t v;
	if (read(s->efd, &v, sizeof v) < 0 && errno != EAGAIN)
		log_warn("sender eventfd");
	pthread_mutex_lock(&s->mu);
	struct sjob **d = s->done;
	*n = s->ndone;
	for (size_t i = 0; i < s->ndone; i++)
		s->pools[d[i]->relay].held--;
	s->done = NULL;
	s->ndone = s->capdone = 0;
	s->woken = false;
	pthread_mutex_unlock(&s->mu);
	return d;
}

size_t senders_inflight(struct senders *s)
{
	pthread_mutex_lock(&s->mu);
	size_t n = 0;
	for (int r = 0; r < s->npools; r++)
		n += s->pools[r].held;
	pthread_mutex_unlock(&s->mu);
	return n;
}

void senders_shutdown(struct senders *s, bool abort)
{
	pthread_mutex_lock(&s->mu);
	s->stop = true;
	/* Jobs nobody started go back as not attempted. */
	for (int r = 0; r < s->npools; r++) {
		struct pool *p = &s->pools[r];
		while (p->count > 0) {
			struct sjob *j = dequeue(p);
			j->attempted = false;
			finish(s, j);
		}
		pthread_cond_broadcast(&p->cv);
	}
	pthread_mutex_unlock(&s->mu);
	if (abort)
		atomic_store(&s->abort, true);
}

void senders_free(struct senders *s)
{
	if (s == NULL)
		return;
	if (s->started) {
		senders_shutdown(s, false);
		for (int i = 0; i < s->n; i++)
			pthread_join(s->threads[i], NULL);
	}
	for (int i = 0; s->tr && i < s->n; i++)
		transport_free(s->tr[i]);
	for (size_t i = 0; i < s->ndone; i++)
		sjob_free(s->done[i]);
	free(s->done);
	for (int r = 0; r < s->npools; r++) {
		free(s->pools[r].queue);
		pthread_cond_destroy(&s->pools[r].cv);
	}
	free(s->pools);
	free(s->tr);
	free(s->threads);
	if (s->efd >= 0)
		close(s->efd);
	pthread_mutex_destroy(&s->mu);
	free(s);
}
