/* File helpers: capped reads, atomic writes, mkdir -p (see fsutil.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "xmalloc.h"

int fs_read(const char *path, size_t max, struct buf *out, struct err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_sys(err, "%s", path);
	struct stat st;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return err_sys(err, "%s", path);
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		return err_set(err, ERR_INPUT, "%s: is a directory", path);
	}
	if ((unsigned long long)st.st_size > max) {
		close(fd);
		return err_set(err, ERR_INPUT, "%s: file is %lld bytes, more than the limit of %zu",
		               path, (long long)st.st_size, max);
	}
	char chunk[65536];
	size_t total = 0;
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof chunk);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			return err_sys(err, "%s", path);
		}
		if (n == 0)
			break;
		total += (size_t)n;
		if (total > max || buf_add(out, chunk, (size_t)n) < 0) {
			close(fd);
			return err_set(err, ERR_INPUT,
			               "%s: file is more than the limit of %zu bytes", path, max);
		}
	}
	close(fd);
	return 0;
}

int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, struct err *err)
{
	char *tmp = xasprintf("%s.%ld.tmp", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	int r = -1;
	if (fd < 0) {
		err_sys(err, "%s", tmp);
		goto out;
	}
	(void)fchmod(fd, mode);
	const char *p = data;
	size_t left = len;
	while (left > 0) {
		ssize_t n = write(fd, p, left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err_sys(err, "%s", tmp);
			goto out;
		}
		p += n;
		left -= (size_t)n;
	}
	if (fsync(fd) < 0) {
		err_sys(err, "%s", tmp);
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		err_sys(err, "%s", tmp);
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		err_sys(err, "%s", path);
		goto out;
	}
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	if (r < 0)
		unlink(tmp);
	free(tmp);
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
