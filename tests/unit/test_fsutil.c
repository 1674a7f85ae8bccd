/*
 * Files someone else may have planted: the atomic write never follows a
 * link planted at its temporary name, reads never block on a FIFO nor
 * follow a link where the caller said not to, and every mode is exact.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fsutil.h"
#include "xmalloc.h"

static char *dir;

static int setup(void **state)
{
	(void)state;
	char tmpl[] = "/tmp/test_fsutil.XXXXXX";
	dir = xstrdup(mkdtemp(tmpl));
	/* a test that would block in open() fails instead of hanging */
	alarm(20);
	return dir ? 0 : -1;
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st, (void)type, (void)ftw;
	return remove(path) < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	int r = nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
	return r;
}

static char *at(const char *name)
{
	return xasprintf("%s/%s", dir, name);
}

static char *slurp(const char *path)
{
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	if (fs_read(path, 1 << 20, &b, NULL) < 0) {
		buf_free(&b);
		return NULL;
	}
	return buf_detach(&b);
}

static void spit(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(s, f);
	assert_int_equal(fclose(f), 0);
}

/* A link planted where the old code put its temporary file (PATH.PID.tmp)
 * must not be followed: the target keeps its bytes. */
static void test_atomic_ignores_planted_link(void **state)
{
	(void)state;
	char *victim = at("victim"), *path = at("feed.xml");
	spit(victim, "precious\n");
	char *planted = xasprintf("%s.%ld.tmp", path, (long)getpid());
	assert_int_equal(symlink(victim, planted), 0);
	struct err e;
	err_clear(&e);
	assert_int_equal(fs_write_atomic(path, "new\n", 4, 0644, &e), 0);
	char *v = slurp(victim), *p = slurp(path);
	assert_string_equal(v, "precious\n");
	assert_string_equal(p, "new\n");
	free(v);
	free(p);
	free(planted);
	free(victim);
	free(path);
}

/* A link at the final name is replaced, not written through. */
static void test_atomic_replaces_link_at_path(void **state)
{
	(void)state;
	char *victim = at("victim2"), *path = at("index.html");
	spit(victim, "precious\n");
	assert_int_equal(symlink(victim, path), 0);
	assert_int_equal(fs_write_atomic(path, "page\n", 5, 0644, NULL), 0);
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	char *v = slurp(victim);
	assert_string_equal(v, "precious\n");
	free(v);
	free(victim);
	free(path);
}

/* The mode asked for, whatever the umask; no temporary file is left. */
static void test_atomic_mode_and_no_leftovers(void **state)
{
	(void)state;
	mode_t old = umask(077);
	char *a = at("m/a"), *b = at("m/b");
	assert_int_equal(fs_mkparents(a, 0755, NULL), 0);
	assert_int_equal(fs_write_atomic(a, "x", 1, 0644, NULL), 0);
	assert_int_equal(fs_write_atomic(b, "y", 1, 0600, NULL), 0);
	assert_int_equal(fs_write_atomic(b, "z", 1, 0600, NULL), 0);
	umask(old);
	struct stat st;
	assert_int_equal(stat(a, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(stat(b, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	char *m = at("m");
	DIR *d = opendir(m);
	assert_non_null(d);
	int n = 0;
	for (struct dirent *de; (de = readdir(d)) != NULL;)
		n += de->d_name[0] != '.' || strlen(de->d_name) > 2;
	closedir(d);
	assert_int_equal(n, 2);
	free(m);
	free(a);
	free(b);
}

/* A write that cannot complete leaves the old file whole and says why. */
static void test_atomic_failure_keeps_old(void **state)
{
	(void)state;
	char *sub = at("ro"), *path = at("ro/page.html");
	assert_int_equal(mkdir(sub, 0755), 0);
	spit(path, "old\n");
	if (geteuid() == 0) {
		/* root writes anywhere: a directory that is gone is the refusal */
		free(path);
		path = at("gone/page.html");
	} else {
		assert_int_equal(chmod(sub, 0555), 0);
	}
	struct err e;
	err_clear(&e);
	assert_int_equal(fs_write_atomic(path, "new\n", 4, 0644, &e), -1);
	assert_int_equal(e.kind, ERR_IO);
	assert_non_null(strstr(e.msg, "page.html"));
	chmod(sub, 0755);
	char *keep = at("ro/page.html"), *v = slurp(keep);
	assert_string_equal(v, "old\n");
	free(v);
	free(keep);
	free(sub);
	free(path);
}

/* A FIFO is refused at once (no writer would ever come). */
static void test_read_fifo_refused(void **state)
{
	(void)state;
	char *fifo = at("fifo.md");
	assert_int_equal(mkfifo(fifo, 0644), 0);
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	struct err e;
	err_clear(&e);
	assert_int_equal(fs_read(fifo, 1024, &b, &e), -1);
	assert_int_equal(e.kind, ERR_INPUT);
	assert_non_null(strstr(e.msg, "regular file"));
	buf_free(&b);
	free(fifo);
}

/* Nothing planted in an issue folder is followed or opened. */
static void test_open_under(void **state)
{
	(void)state;
	char *root = at("issue"), *img = at("issue/img"), *pic = at("issue/img/a.png");
	char *secret = at("secret");
	assert_int_equal(mkdir(root, 0755), 0);
	assert_int_equal(mkdir(img, 0755), 0);
	spit(pic, "PNG");
	spit(secret, "key");
	char *l1 = at("issue/img/b.png"), *l2 = at("issue/state"), *ff = at("issue/img/f.png");
	assert_int_equal(symlink(secret, l1), 0);
	assert_int_equal(symlink(dir, l2), 0);
	assert_int_equal(mkfifo(ff, 0644), 0);
	struct stat st;
	struct err e;

	int fd = fs_open_under(root, "img/a.png", 0, &st, &e);
	assert_true(fd >= 0);
	assert_true(S_ISREG(st.st_mode));
	close(fd);

	/* each refusal names the component at fault */
	static const char *const refused[][2] = {
	    {"img/b.png", "img/b.png: is a symbolic link"},
	    {"state/secret", "issue/state: is a symbolic link"},
	    {"img/f.png", "img/f.png: is a FIFO"},
	};
	for (size_t i = 0; i < 3; i++) {
		err_clear(&e);
		assert_int_equal(fs_open_under(root, refused[i][0], 0, &st, &e), -1);
		assert_int_equal(e.kind, ERR_INPUT);
		assert_non_null(strstr(e.msg, "not a regular file"));
		assert_non_null(strstr(e.msg, refused[i][1]));
	}

	static const char *const absent[] = {"img/../img/a.png", "./img/a.png", "img//a.png",
	                                     "img/", "nope.png", "img/a.png/x"};
	for (size_t i = 0; i < 6; i++) {
		err_clear(&e);
		assert_int_equal(fs_open_under(root, absent[i], 0, &st, &e), -1);
		assert_int_equal(e.kind, ERR_NOTFOUND);
	}
	/* a directory only when asked for; dot names only when allowed */
	assert_int_equal(fs_open_under(root, "img", 0, &st, &e), -1);
	fd = fs_open_under(root, "img", FS_DIR_OK, &st, &e);
	assert_true(fd >= 0 && S_ISDIR(st.st_mode));
	close(fd);
	char *hidden = at("issue/.x");
	spit(hidden, "tmp");
	fd = fs_open_under(root, ".x", 0, &st, &e);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(fs_open_under(root, ".x", FS_NO_DOT, &st, &e), -1);
	assert_int_equal(e.kind, ERR_NOTFOUND);

	/* the last component of a path the caller names is not followed either */
	char *linked = at("linked.md");
	assert_int_equal(symlink(secret, linked), 0);
	err_clear(&e);
	assert_int_equal(fs_open_nofollow(linked, NULL, 0, &st, &e), -1);
	assert_int_equal(e.kind, ERR_INPUT);
	assert_int_equal(strncmp(e.msg, linked, strlen(linked)), 0);
	char *slashed = xasprintf("%s/", root);
	fd = fs_open_nofollow(slashed, NULL, FS_DIR_OK, &st, &e);
	assert_true(fd >= 0 && S_ISDIR(st.st_mode));
	close(fd);
	/* below a folder, nothing is followed: not the folder, not rel */
	char *dirlink = at("issue-link");
	assert_int_equal(symlink(root, dirlink), 0);
	assert_int_equal(fs_open_nofollow(dirlink, "img/a.png", 0, &st, &e), -1);
	assert_int_equal(e.kind, ERR_INPUT);
	assert_int_equal(fs_open_nofollow(root, "state/secret", 0, &st, &e), -1);
	assert_int_equal(e.kind, ERR_INPUT);
	assert_non_null(strstr(e.msg, "issue/state: is a symbolic link"));
	fd = fs_open_nofollow(root, "img/a.png", 0, &st, &e);
	assert_true(fd >= 0);
	close(fd);
	free(dirlink);
	fd = fs_open_nofollow(pic, NULL, 0, &st, &e);
	assert_true(fd >= 0);
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	assert_int_equal(fs_read_fd(fd, pic, 2, &b, &e), -1);
	assert_non_null(strstr(e.msg, "limit"));
	assert_int_equal(b.len, 0);
	assert_int_equal(fs_read_fd(fd, pic, 3, &b, &e), 0);
	assert_string_equal(buf_str(&b), "PNG");
	buf_free(&b);
	close(fd);
	free(slashed);
	free(linked);
	free(hidden);
	free(l1);
	free(l2);
	free(ff);
	free(root);
	free(img);
	free(pic);
	free(secret);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_atomic_ignores_planted_link),
	    cmocka_unit_test(test_atomic_replaces_link_at_path),
	    cmocka_unit_test(test_atomic_mode_and_no_leftovers),
	    cmocka_unit_test(test_atomic_failure_keeps_old),
	    cmocka_unit_test(test_read_fifo_refused),
	    cmocka_unit_test(test_open_under),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
