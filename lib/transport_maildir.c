/*
 * The Maildir transport (maildir:/path): every message becomes a file in
 * PATH/new, written to PATH/tmp first and renamed, the Maildir way, so a
 * reader never sees half a message. The demo (make run) uses it: no mail
 * server needed. The envelope, in its wire form (transport_envelope), goes
 * into Return-Path and Delivered-To headers, as a local delivery agent
 * would write them; line ends are LF, as in every local mailbox file.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "fsutil.h"
#include "transport.h"
#include "xmalloc.h"

struct maildir {
	struct transport base;
	char *dir;
	char host[64];
};

static atomic_ulong seq;

/*
 * Copies data into fd with every CRLF made LF: a Maildir file is a local
 * mailbox file, LF-terminated as mail readers (mutt, Dovecot) expect; CRLF
 * exists only on the wire (RFC 5322 §2.3 describes the wire form).
 */
static int write_lf(int fd, const char *name, const char *data, size_t len, struct err *err)
{
	char out[65536];
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		if (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n')
			continue;
		out[o++] = data[i];
		if (o == sizeof out) {
			if (fs_write_all(fd, name, out, o, err) < 0)
				return -1;
			o = 0;
		}
	}
	return fs_write_all(fd, name, out, o, err);
}

/* A uid fit for a file name: what the daemon gives (a VERP token) is. */
static bool uid_usable(const char *uid)
{
	if (uid == NULL || *uid == '\0' || *uid == '.' || strlen(uid) > 96)
		return false;
	for (const char *p = uid; *p; p++)
		if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '.' || *p == '_'))
			return false;
	return true;
}

/* Whether the message named name is in new/ or cur/ already (before a
 * reader's client gave it flags). */
static bool md_has(const struct maildir *m, const char *name)
{
	static const char *const sub[] = {"new", "cur"};
	for (size_t i = 0; i < 2; i++) {
		char *p = xasprintf("%s/%s/%s", m->dir, sub[i], name);
		struct stat st;
		bool there = lstat(p, &st) == 0;
		free(p);
		if (there)
			return true;
	}
	return false;
}

/*
 * The one write path of the transport: the envelope as Return-Path and
 * Delivered-To, then the message, written to tmp/UNIQUE, fsync'ed, closed,
 * renamed to new/NAME, and new/ fsync'ed, every step checked. Only then is
 * the message delivered: a full disk (ENOSPC, EDQUOT), an I/O error or a
 * read-only file system at any step returns -1 with err and leaves nothing
 * in new/ (and no half file in tmp/). NAME is name: UNIQUE (the Maildir
 * way: time, pid, a counter, the host) when it is "".
 */
static int md_deliver(const struct maildir *m, const char *from, const char *rcpt, const char *data,
                      size_t len, char *name, size_t nname, struct err *err)
{
	struct timespec ts;
	char unique[160];
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(unique, sizeof unique, "%lld.M%06ldP%dQ%lu.%s", (long long)ts.tv_sec,
	         ts.tv_nsec / 1000, (int)getpid(), (unsigned long)atomic_fetch_add(&seq, 1),
	         m->host);
	if (*name == '\0')
		snprintf(name, nname, "%s", unique);
	char *tmp = xasprintf("%s/tmp/%s", m->dir, unique);
	char *dst = xasprintf("%s/new/%s", m->dir, name);
	char *newdir = xasprintf("%s/new", m->dir);
	char *head = xasprintf("Return-Path: <%s>\nDelivered-To: %s\n", from, rcpt);
	int r = -1;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
	if (fd < 0) {
		err_sys(err, "%s", tmp);
		goto out;
	}
	if (fs_write_all(fd, tmp, head, strlen(head), err) < 0 ||
	    write_lf(fd, tmp, data, len, err) < 0)
		goto out;
	int c = fs_sync_rename(fd, tmp, dst, err);
	fd = -1;
	if (c < 0)
		goto out;
	if (fs_sync_dir(newdir, err) < 0) {
		/* not known to be on disk: take it back, it is sent again */
		if (unlink(dst) == 0)
			goto out;
		err_sys(err, "%s", dst);
		goto out;
	}
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	if (r < 0)
		unlink(tmp);
	free(head);
	free(newdir);
	free(dst);
	free(tmp);
	return r;
}

/*
 * A message with a uid is named UID.HOST, the same each time it is sent: one
 * found in new/ or cur/ already was delivered before a crash kept its
 * delivery from being recorded, and is not written twice.
 */
static int md_send(struct transport *t, const char *from, const char *rcpt, const char *uid,
                   const char *data, size_t len, struct send_result *res)
{
	struct maildir *m = (struct maildir *)t;
	char name[160] = "", from_key[ADDR_MAX + 1], rcpt_key[ADDR_MAX + 1];
	if (transport_envelope(from, rcpt, from_key, rcpt_key, res) < 0)
		return -1;
	if (uid_usable(uid)) {
		snprintf(name, sizeof name, "%s.%s", uid, m->host);
		if (md_has(m, name)) {
			res->outcome = SEND_OK;
			res->code = 250;
			snprintf(res->reply, sizeof res->reply, "250 in maildir already as %s",
			         name);
			snprintf(res->queue_id, sizeof res->queue_id, "%.63s", name);
			return 0;
		}
	}
	struct err e;
	err_clear(&e);
	if (md_deliver(m, from_key, rcpt_key, data, len, name, sizeof name, &e) < 0) {
		/* A full disk, an I/O error or a permission problem is the
		 * operator's to fix, not this message's: pause, count nothing,
		 * retry. */
		res->outcome = SEND_TEMP;
		res->relay_level = true;
		snprintf(res->reply, sizeof res->reply, "maildir %s", e.msg);
		return -1;
	}
	res->outcome = SEND_OK;
	res->code = 250;
	snprintf(res->reply, sizeof res->reply, "250 delivered to maildir as %s", name);
	snprintf(res->queue_id, sizeof res->queue_id, "%.63s", name);
	return 0;
}

static void md_free(struct transport *t)
{
	struct maildir *m = (struct maildir *)t;
	free(m->dir);
	free(m);
}

static const struct transport_ops maildir_ops = {md_send, md_free};

/*
 * The half-written files of a matrixd killed while it wrote them: tmp/
 * names of this host whose process is gone. Nothing reads them (they never
 * reached new/), and their message is written again.
 */
static void md_sweep(const struct maildir *m)
{
	char *dir = xasprintf("%s/tmp", m->dir);
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL) {
		const char *p = strchr(e->d_name, 'P'), *dot = strchr(e->d_name, '.');
		char *end;
		long pid = p && dot && p > dot ? strtol(p + 1, &end, 10) : 0;
		if (pid <= 0 || *end != 'Q' || (end = strchr(end, '.')) == NULL ||
		    strcmp(end + 1, m->host) != 0)
			continue;
		if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
			unlinkat(dirfd(d), e->d_name, 0);
	}
	if (d)
		closedir(d);
	free(dir);
}

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
	md_sweep(m);
	return &m->base;
}
