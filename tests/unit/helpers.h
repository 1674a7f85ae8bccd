/*
 * What several unit programs need: a test file read whole, and for those
 * that run on a real store, a fresh directory under /tmp, the store opened
 * in it, the directory removed afterwards, and the queries that check what
 * the lib functions wrote by reading the tables themselves. Static inline:
 * a program takes what it uses. Include it after <cmocka.h>.
 */
#ifndef MATRIX_TEST_HELPERS_H
#define MATRIX_TEST_HELPERS_H

#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "buf.h"
#include "fsutil.h"
#include "store.h"
#include "xmalloc.h"

/* The file at path (relative to the repository root, where the programs
 * run), at most 8 MiB; *len its length. Caller frees. */
static inline char *slurp(const char *path, size_t *len)
{
	struct buf b;
	struct err e;
	buf_init(&b, BUF_NOLIMIT);
	if (fs_read(path, 8 << 20, &b, &e) < 0)
		fail_msg("%s (run from the repository root)", e.msg);
	*len = b.len;
	return buf_detach(&b);
}

/* A new directory /tmp/NAME.XXXXXX in dir (64 bytes); -1 when it fails. */
static inline int tmpstore_dir(char *dir, const char *name)
{
	snprintf(dir, 64, "/tmp/%s.XXXXXX", name);
	return mkdtemp(dir) ? 0 : -1;
}

/* The store of dir opened into *s; prints the error and returns -1. */
static inline int tmpstore_open(struct store **s, const char *dir)
{
	struct err e;
	err_clear(&e);
	if (store_open(s, dir, &e) < 0) {
		fprintf(stderr, "%s\n", e.msg);
		return -1;
	}
	return 0;
}

/* Closes s and removes dir: the store's three files and the n other names
 * given. */
static inline void tmpstore_close(struct store *s, const char *dir, const char *const *more,
                                  size_t n)
{
	store_close(s);
	static const char *const db[] = {"matrixd.db", "matrixd.db-wal", "matrixd.db-shm"};
	for (size_t i = 0; i < 3 + n; i++) {
		char *p = xasprintf("%s/%s", dir, i < 3 ? db[i] : more[i - 3]);
		unlink(p);
		free(p);
	}
	rmdir(dir);
}

/* The first column of the first row of sql as an integer, ?1 bound to arg
 * (if sql has it); -1 for no row. */
static inline int64_t q_int1(struct store *s, const char *sql, int64_t arg)
{
	sqlite3_stmt *st = NULL;
	int64_t v = -1;
	assert_int_equal(sqlite3_prepare_v2(s->db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_bind_parameter_count(st) > 0)
		sqlite3_bind_int64(st, 1, arg);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static inline int64_t q_int(struct store *s, const char *sql)
{
	return q_int1(s, sql, 0);
}

/* q_int of sql made by printf. */
static inline int64_t q_intf(struct store *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline int64_t q_intf(struct store *s, const char *fmt, ...)
{
	struct buf b;
	va_list ap;
	buf_init(&b, BUF_NOLIMIT);
	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	int64_t v = q_int(s, b.data);
	buf_free(&b);
	return v;
}

/* The first column of the first row as text ("" for none); caller frees. */
static inline char *q_text(struct store *s, const char *sql)
{
	sqlite3_stmt *st = NULL;
	char *v = NULL;
	assert_int_equal(sqlite3_prepare_v2(s->db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
		v = xstrdup((const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return v ? v : xstrdup("");
}

/* Runs sql (statements the test needs the lib to find, e.g. an issue row). */
static inline void q_exec(struct store *s, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
}

#endif
