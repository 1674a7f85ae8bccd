/*
 * The store: one SQLite database, state_dir/matrixd.db, shared by matrixd
 * and matrixctl (docs/libraries.md, SQLite). WAL, a busy timeout, foreign keys on,
 * synchronous=NORMAL, and the schema migrated forward on open inside
 * BEGIN IMMEDIATE (PRAGMA user_version). Every write transaction starts
 * with store_begin() (BEGIN IMMEDIATE): a deferred BEGIN that reads then
 * writes fails at once with SQLITE_BUSY when another process committed in
 * between, whatever the busy timeout.
 *
 * Tables (docs/design.md has the full story):
 *   lists, subscribers, memberships (status + mode per list), events
 *   (consent and history), issues, articles, issue_errors, deliveries (the
 *   ledger: one row per issue × article-or-digest × subscriber), kv.
 *
 * A struct store belongs to one thread.
 */
#ifndef MATRIX_STORE_H
#define MATRIX_STORE_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define STORE_FILE           "matrixd.db"
#define STORE_SCHEMA_VERSION 8
#define STORE_BUSY_MS        10000 /* how long a statement waits for another writer */

struct store {
	sqlite3 *db;
	char *path;
	struct store_stmt *cache; /* prepared statements, see store_stmt() */
	int depth;                /* store_begin nesting */
	bool doomed;              /* a nested part rolled back: the commit will too */
	int retry_ms;             /* store_set_busy(); 0: no write gate */
	int64_t busy_until;       /* monotonic ms; 0: the last write went through */
	char busy_msg[256];       /* why the last write failed */
};

/*
 * Opens (creating if needed, mode 0660 so that the daemon's group can share
 * it) state_dir/matrixd.db and migrates it. Returns allocated store; caller
 * closes with store_close().
 */
int store_open(struct store **out, const char *state_dir, struct err *err);
void store_close(struct store *s);
/* store_open, migrating only up to schema version (1 to
 * STORE_SCHEMA_VERSION): for the tests of the migrations. A store newer
 * than version is not touched (version is then only a floor). */
int store_open_version(struct store **out, const char *state_dir, int version, struct err *err);

/*
 * The event loop's way with a store that cannot take writes (another
 * process holds the write lock, the disk is full): a statement waits at
 * most timeout_ms for the lock (instead of STORE_BUSY_MS), and once a
 * statement failed so (ERR_TEMP), every write (store_begin, store_kv_set)
 * is refused at once with ERR_TEMP for retry_ms (ten times that after a
 * full disk or an I/O error, where an attempt may be a big transaction
 * that fails at its end), without waiting again:
 * the caller keeps its work and tries again from its timer at
 * store_retry_at(). A long lock held elsewhere then costs the loop one
 * wait of timeout_ms per retry_ms, not one per call. Reads are not gated:
 * in WAL mode they do not wait for a writer. A commit that goes through
 * ends it. Without this call (matrixctl) writes simply wait.
 */
void store_set_busy(struct store *s, int timeout_ms, int retry_ms);
/* Monotonic ms from when writes are tried again; 0 when the last write
 * went through (the store is not known to be in trouble). */
int64_t store_retry_at(const struct store *s);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. Nested begins only count; a nested
 * rollback makes the outermost commit roll back and fail. */
int store_begin(struct store *s, struct err *err);
int store_commit(struct store *s, struct err *err);
void store_rollback(struct store *s);

/* Runs fixed SQL without parameters (DDL, pragmas). */
int store_exec(struct store *s, const char *sql, struct err *err);

/*
 * Returns a prepared statement for sql, cached for the store's lifetime and
 * keyed by the sql pointer (pass string literals). The statement is reset
 * and its bindings cleared; the caller steps it and must call
 * sqlite3_reset() when done (docs/libraries.md: an unreset SELECT pins a read
 * transaction and starves checkpoints). NULL on error, with err set.
 */
sqlite3_stmt *store_stmt(struct store *s, const char *sql, struct err *err);

/* Fills err with the connection's last error, prefixed by what; returns -1.
 * The kind is ERR_TEMP for what passes (SQLITE_BUSY, LOCKED, FULL, IOERR:
 * try again later), ERR_DB for the rest. */
int store_fail(struct store *s, struct err *err, const char *what);

/* Steps a statement that returns no rows (or ignores them) and resets it. */
int store_step_done(struct store *s, sqlite3_stmt *st, struct err *err, const char *what);

/* Key/value settings (daemon state, secrets' metadata …). */
int store_kv_set(struct store *s, const char *key, const char *value, struct err *err);
/* Allocated value or NULL when absent (err untouched) or on error (err set). */
char *store_kv_get(struct store *s, const char *key, struct err *err);

/* Checkpoints and truncates the WAL when no reader holds it (after forget). */
void store_checkpoint(struct store *s);

/* Current time, seconds since the epoch (one place to fake it in tests). */
int64_t store_now(void);

#endif
