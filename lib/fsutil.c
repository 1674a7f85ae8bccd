/* File helpers: capped reads, safe opens, atomic writes, mkdir -p (see fsutil.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "xmalloc.h"

/* err_sys, with ERR_NOTFOUND when absent is true. */
static int __attribute__((format(printf, 3, 4)))
sys_error(struct err *err, bool absent, const char *fmt, ...)
{
	int saved = errno;
	char what[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	errno = saved;
	err_sys(err, "%s", what);
	if (err && absent)
		err->kind = ERR_NOTFOUND;
	return -1;
}

/* "/" between root and a relative name, unless root already ends with one. */
static const char *sep(const char *root)
{
	size_t n = strlen(root);
	return n && root[n - 1] == '/' ? "" : "/";
}

static const char *kind_of(const struct stat *st)
{
	if (S_ISLNK(st->st_mode))
		return "a symbolic link";
	if (S_ISDIR(st->st_mode))
		return "a directory";
	if (S_ISFIFO(st->st_mode))
		return "a FIFO";
	if (S_ISSOCK(st->st_mode))
		return "a socket";
	if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode))
		return "a device";
	return "not a regular file";
}

static int refuse(struct err *err, const char *root, const char *rel, const struct stat *st)
{
	return err_set(err, ERR_INPUT,
	               "%s%s%s: is %s, not a regular file; links, FIFOs and devices are never "
	               "read from here: put the file itself in its place",
	               root, rel ? sep(root) : "", rel ? rel : "", kind_of(st));
}

/* Why openat(dfd, name, O_NOFOLLOW…) failed, as an error. A link gives
 * ELOOP (or ENOTDIR with O_DIRECTORY): lstat tells them apart. */
static int open_failed(int dfd, const char *name, const char *root, const char *rel,
                       struct stat *st, struct err *err)
{
	int saved = errno;
	if (fstatat(dfd, name, st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st->st_mode)) {
		st->st_mode = 0;
		struct stat link = {.st_mode = S_IFLNK};
		return refuse(err, root, rel, &link);
	}
	memset(st, 0, sizeof *st);
	errno = saved;
	return sys_error(err, saved == ENOENT || saved == ENOTDIR, "%s%s%s", root, sep(root), rel);
}

int fs_open_under(const char *root, const char *rel, int flags, struct stat *st, struct err *err)
{
	memset(st, 0, sizeof *st);
	int dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return sys_error(err, errno == ENOENT || errno == ENOTDIR, "%s", root);
	/* copy holds rel up to the component being opened: what messages name */
	char *copy = xstrdup(rel);
	int fd = -1;
	for (char *p = copy;;) {
		char *slash = strchr(p, '/');
		if (slash)
			*slash = '\0';
		if (*p == '\0' || strcmp(p, ".") == 0 || strcmp(p, "..") == 0 ||
		    ((flags & FS_NO_DOT) && *p == '.')) {
			err_set(err, ERR_NOTFOUND,
			        "%s%s%s: no such file (empty, '.' or '..' component)", root,
			        sep(root), rel);
			break;
		}
		if (slash == NULL) {
			fd = openat(dfd, p, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
			if (fd < 0)
				open_failed(dfd, p, root, copy, st, err);
			break;
		}
		int next = openat(dfd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0) {
			open_failed(dfd, p, root, copy, st, err);
			break;
		}
		*slash = '/';
		close(dfd);
		dfd = next;
		p = slash + 1;
	}
	close(dfd);
	free(copy);
	if (fd < 0)
		return -1;
	if (fstat(fd, st) < 0) {
		err_sys(err, "%s%s%s", root, sep(root), rel);
		close(fd);
		return -1;
	}
	if (S_ISREG(st->st_mode) || (S_ISDIR(st->st_mode) && (flags & FS_DIR_OK)))
		return fd;
	refuse(err, root, rel, st);
	close(fd);
	return -1;
}

int fs_open_nofollow(const char *path, const char *rel, int flags, struct stat *st, struct err *err)
{
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--; /* "issues/matrix-61/" names the folder */
	char *p = xstrndup(path, n);
	char *slash = strrchr(p, '/');
	const char *root = ".", *base = p;
	if (slash == p) {
		root = "/";
		base = p + 1;
	} else if (slash) {
		*slash = '\0';
		root = p;
		base = slash + 1;
	}
	char *below = rel ? xasprintf("%s/%s", base, rel) : xstrdup(base);
	int fd = fs_open_under(root, below, flags, st, err);
	if (fd < 0 && err && root[0] == '.' && strncmp(err->msg, "./", 2) == 0)
		memmove(err->msg, err->msg + 2, strlen(err->msg + 2) + 1); /* as the caller said */
	free(below);
	free(p);
	return fd;
}

int fs_read_fd(int fd, const char *name, size_t max, struct buf *out, struct err *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return err_sys(err, "%s", name);
	if (S_ISREG(st.st_mode) && (unsigned long long)st.st_size > max)
		return err_set(err, ERR_INPUT, "%s: file is %lld bytes, more than the limit of %zu",
		               name, (long long)st.st_size, max);
	char chunk[65536];
	size_t total = 0, start = out->len;
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof chunk);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			buf_truncate(out, start);
			return err_sys(err, "%s", name);
		}
		if (n == 0)
			break;
		total += (size_t)n;
		if (total > max || buf_add(out, chunk, (size_t)n) < 0) {
			buf_truncate(out, start);
			return err_set(err, ERR_INPUT,
			               "%s: file is more than the limit of %zu bytes", name, max);
		}
	}
	return 0;
}

int fs_read(const char *path, size_t max, struct buf *out, struct err *err)
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return sys_error(err, errno == ENOENT, "%s", path);
	struct stat st;
	int r = -1;
	if (fstat(fd, &st) < 0)
		err_sys(err, "%s", path);
	else if (S_ISDIR(st.st_mode))
		err_set(err, ERR_INPUT, "%s: is a directory", path);
	else if (!S_ISREG(st.st_mode))
		refuse(err, path, NULL, &st);
	else
		r = fs_read_fd(fd, path, max, out, err);
	close(fd);
	return r;
}

int fs_write_all(int fd, const char *name, const void *data, size_t len, struct err *err)
{
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = ENOSPC; /* write(2) makes no progress: the disk is full */
			return err_sys(err, "%s", name);
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int fs_sync_dir(const char *dir, struct err *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return err_sys(err, "%s", dir);
	/* EINVAL: a file system that cannot sync directories (it has nothing
	 * to make durable this way) */
	int r = fsync(fd) < 0 && errno != EINVAL ? err_sys(err, "%s", dir) : 0;
	close(fd);
	return r;
}

int fs_sync_rename(int fd, const char *tmp, const char *path, struct err *err)
{
	if (fsync(fd) < 0) {
		err_sys(err, "%s", tmp);
		close(fd);
		return -1;
	}
	if (close(fd) < 0)
		return err_sys(err, "%s", tmp);
	if (rename(tmp, path) < 0)
		return err_sys(err, "%s", path);
	return 0;
}

int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, struct err *err)
{
	const char *slash = strrchr(path, '/');
	char *tmp, *dir;
	if (slash) {
		tmp = xasprintf("%.*s/.%s.XXXXXX", (int)(slash - path), path, slash + 1);
		dir = xstrndup(path, slash == path ? 1 : (size_t)(slash - path));
	} else {
		tmp = xasprintf(".%s.XXXXXX", path);
		dir = xstrdup(".");
	}
	int r = -1;
	bool made = false;
	/* mkostemp opens with O_CREAT | O_EXCL: never an existing file, never
	 * through a link, whoever planted it */
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		err_sys(err, "%s", path);
		goto out;
	}
	made = true;
	if (fchmod(fd, mode) < 0) {
		err_sys(err, "%s", tmp);
		goto out;
	}
	if (fs_write_all(fd, tmp, data, len, err) < 0)
		goto out;
	int c = fs_sync_rename(fd, tmp, path, err);
	fd = -1;
	if (c < 0)
		goto out;
	made = false;
	r = fs_sync_dir(dir, err);
out:
	if (fd >= 0)
		close(fd);
	if (made)
		unlink(tmp);
	free(tmp);
	free(dir);
	return r;
}

int fs_mkdirs(const char *dir, mode_t mode, struct err *err)
{
	char *p = xstrdup(dir);
	int r = 0;
	for (char *s = p + 1;; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;
			*s = '\0';
			if (mkdir(p, mode) < 0 && errno != EEXIST) {
				r = err_sys(err, "%s", p);
				break;
			}
			*s = c;
			if (c == '\0')
				break;
		}
	}
	free(p);
	return r;
}

int fs_mkparents(const char *path, mode_t mode, struct err *err)
{
	const char *slash = strrchr(path, '/');
	if (slash == NULL || slash == path)
		return 0;
	char *dir = xstrndup(path, (size_t)(slash - path));
	int r = fs_mkdirs(dir, mode, err);
	free(dir);
	return r;
}
