/*
 * Sender threads: Postfix's shape (one smtp process per connection) in
 * threads. Each owns one transport, so one SMTP connection reused for every
 * message it sends, and blocks in it; a slow relay slows that thread only.
 * Work arrives through a bounded queue; results go into a list and an
 * eventfd wakes the main thread's event loop. Threads sleep on a condition
 * variable when there is nothing to send.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "matrixd.h"
#include "xmalloc.h"

struct senders {
	int n;
	pthread_t *threads;
	struct transport **tr;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct sjob **queue; /* ring of cap jobs */
	size_t cap, head, count;
	struct sjob **done;
	size_t ndone, capdone;
	size_t busy; /* jobs a thread is sending */
	bool stop;
	atomic_bool abort;
	int efd;
	bool started;
};

struct worker {
	struct senders *s;
	int i;
};

void sjob_free(struct sjob *j)
{
	if (j == NULL)
		return;
	free(j->from);
	free(j->rcpt);
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
	if (!s->stop && s->count > s->cap / 2)
		return;
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
	if ((*signer == NULL && (*signer = signer_new(&e)) == NULL) ||
	    sign_prepend(*signer, j->keys, &j->data, &j->len, &e) < 0) {
		j->res = (struct send_result){.outcome = SEND_TEMP, .relay_level = true};
		snprintf(j->res.reply, sizeof j->res.reply, "not signed: %s", e.msg);
		return -1;
	}
	return 0;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	struct senders *s = w->s;
	struct transport *t = s->tr[w->i];
	struct signer *signer = NULL; /* this thread's, made on first use */
	free(w);
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (!s->stop && s->count == 0)
			pthread_cond_wait(&s->cv, &s->mu);
		if (s->stop)
			break;
		struct sjob *j = s->queue[s->head];
		s->head = (s->head + 1) % s->cap;
		s->count--;
		s->busy++;
		pthread_mutex_unlock(&s->mu);

		if (j->keys == NULL || sign_job(&signer, j) == 0)
			transport_send(t, j->from, j->rcpt, j->data, j->len, &j->res);
		j->attempted = true;

		pthread_mutex_lock(&s->mu);
		s->busy--;
		finish(s, j);
	}
	pthread_mutex_unlock(&s->mu);
	signer_free(signer);
	return NULL;
}

int senders_start(struct senders **out, const struct conf *c, const char *password, int n,
                  struct err *err)
{
	struct senders *s = xcalloc(1, sizeof *s);
	*out = NULL;
	s->efd = -1;
	s->n = n;
	/* At most 5 jobs per connection exist at once (queued, being sent, or
	 * finished and not yet recorded): enough that no thread waits for the
	 * main thread, and the bound on duplicates after a crash (design.md). */
	s->cap = (size_t)n * 5;
	s->queue = xcalloc(s->cap, sizeof *s->queue);
	s->tr = xcalloc((size_t)n, sizeof *s->tr);
	s->threads = xcalloc((size_t)n, sizeof *s->threads);
	atomic_init(&s->abort, false);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->efd < 0) {
		err_sys(err, "eventfd");
		senders_free(s);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		s->tr[i] = transport_new(c, password, &s->abort, err);
		if (s->tr[i] == NULL) {
			senders_free(s);
			return -1;
		}
	}
	for (int i = 0; i < n; i++) {
		struct worker *w = xmalloc(sizeof *w);
		*w = (struct worker){s, i};
		int r = pthread_create(&s->threads[i], NULL, run, w);
		if (r != 0) {
			free(w);
			s->n = i;
			errno = r;
			err_sys(err, "pthread_create");
			senders_free(s);
			return -1;
		}
	}
	s->started = true;
	*out = s;
	return 0;
}

int senders_fd(struct senders *s)
{
	return s->efd;
}

size_t senders_room(struct senders *s)
{
	pthread_mutex_lock(&s->mu);
	size_t used = s->count + s->busy + s->ndone;
	size_t room = s->stop || used >= s->cap ? 0 : s->cap - used;
	pthread_mutex_unlock(&s->mu);
	return room;
}

void senders_submit(struct senders *s, struct sjob *j)
{
	pthread_mutex_lock(&s->mu);
	s->queue[(s->head + s->count) % s->cap] = j;
	s->count++;
	pthread_cond_signal(&s->cv);
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
	s->done = NULL;
	s->ndone = s->capdone = 0;
	pthread_mutex_unlock(&s->mu);
	return d;
}

size_t senders_inflight(struct senders *s)
{
	pthread_mutex_lock(&s->mu);
	size_t n = s->count + s->busy + s->ndone;
	pthread_mutex_unlock(&s->mu);
	return n;
}

void senders_shutdown(struct senders *s, bool abort)
{
	pthread_mutex_lock(&s->mu);
	s->stop = true;
	/* Jobs nobody started go back as not attempted. */
	while (s->count > 0) {
		struct sjob *j = s->queue[s->head];
		s->head = (s->head + 1) % s->cap;
		s->count--;
		j->attempted = false;
		finish(s, j);
	}
	pthread_cond_broadcast(&s->cv);
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
	free(s->queue);
	free(s->tr);
	free(s->threads);
	if (s->efd >= 0)
		close(s->efd);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s);
}
