/*
 * The Maildir transport (maildir:/path): every message becomes a file in
 * PATH/new, written to PATH/tmp first and renamed, the Maildir way, so a
 * reader never sees half a message. The demo (make run) uses it: no mail
 * server needed. The envelope goes into Return-Path and Delivered-To
 * headers, as a local delivery agent would write them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "transport.h"
#include "xmalloc.h"

struct maildir {
	struct transport base;
	char *dir;
	char host[64];
};

static atomic_ulong seq;

static int md_send(struct transport *t, const char *from, const char *rcpt, const char *data,
                   size_t len, struct send_result *res)
{
	struct maildir *m = (struct maildir *)t;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	char name[160];
	snprintf(name, sizeof name, "%lld.M%06ldP%dQ%lu.%s", (long long)ts.tv_sec,
	         ts.tv_nsec / 1000, (int)getpid(), (unsigned long)atomic_fetch_add(&seq, 1),
	         m->host);
	char *tmp = xasprintf("%s/tmp/%s", m->dir, name);
	char *dst = xasprintf("%s/new/%s", m->dir, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	int rc = -1;
	if (fd < 0)
		goto fail;
	FILE *f = fdopen(fd, "w");
	if (f == NULL) {
		close(fd);
		goto fail;
	}
	fprintf(f, "Return-Path: <%s>\r\nDelivered-To: %s\r\n", from, rcpt);
	fwrite(data, 1, len, f);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		fclose(f);
		goto fail;
	}
	if (fclose(f) != 0 || rename(tmp, dst) != 0)
		goto fail;
	res->outcome = SEND_OK;
	res->code = 250;
	snprintf(res->reply, sizeof res->reply, "250 delivered to maildir as %s", name);
	snprintf(res->queue_id, sizeof res->queue_id, "%.63s", name);
	rc = 0;
	goto out;
fail:
	/* A full disk or a permission problem is the operator's to fix: retry. */
	res->outcome = SEND_TEMP;
	res->relay_level = true; /* the disk's trouble: pause, count nothing */
	snprintf(res->reply, sizeof res->reply, "maildir %s: %s", m->dir, strerror(errno));
	unlink(tmp);
out:
	free(tmp);
	free(dst);
	return rc;
}

static void md_free(struct transport *t)
{
	struct maildir *m = (struct maildir *)t;
	free(m->dir);
	free(m);
}

static const struct transport_ops maildir_ops = {md_send, md_free};

struct transport *transport_maildir_new(const char *dir, struct err *err)
{
	static const char *const sub[] = {"tmp", "new", "cur"};
	for (size_t i = 0; i < 3; i++) {
		char *p = xasprintf("%s/%s", dir, sub[i]);
		int r = fs_mkdirs(p, 0750, err);
		free(p);
		if (r < 0)
			return NULL;
	}
	struct maildir *m = xcalloc(1, sizeof *m);
	m->base.ops = &maildir_ops;
	m->dir = xstrdup(dir);
	if (gethostname(m->host, sizeof m->host) != 0)
		snprintf(m->host, sizeof m->host, "localhost");
	m->host[sizeof m->host - 1] = '\0';
	/* Maildir names must not contain '/' or ':' */
	for (char *p = m->host; *p; p++)
		if (*p == '/' || *p == ':')
			*p = '_';
	return &m->base;
}
