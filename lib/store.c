/*
 * SQLite store: open, pragmas, migrations, transactions and a cache of
 * prepared statements (see store.h). Every statement in matrixd is prepared
 * with bound parameters; nothing builds SQL from data.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "subs.h"
#include "xmalloc.h"

struct store_stmt {
	const char *sql;
	sqlite3_stmt *st;
	struct store_stmt *next;
};

/* Version 1: the whole schema. Later versions append ALTERs below it. */
static const char schema_v1[] =
    "CREATE TABLE lists ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  title TEXT NOT NULL DEFAULT '',"
    "  description TEXT NOT NULL DEFAULT '',"
    "  created_at INTEGER NOT NULL);"
    /* email_key: the address with its domain lowercased (RFC 5321 §2.4:
     * local parts are case-sensitive, domains are not); since version 3
     * the domain in its IDNA2008 ASCII form (lib/addr.h). */
    /* AUTOINCREMENT: an id is never reused after `forget`, so a token
     * signed for a forgotten subscriber never acts on a newcomer. */
    "CREATE TABLE subscribers ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  email TEXT NOT NULL,"
    "  email_key TEXT NOT NULL UNIQUE,"
    "  name TEXT NOT NULL DEFAULT '',"
    "  attrs TEXT NOT NULL DEFAULT '{}',"
    "  bounce_score INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL);"
    "CREATE TABLE memberships ("
    "  list_id INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,"
    "  subscriber_id INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,"
    "  status TEXT NOT NULL CHECK (status IN"
    "    ('pending','confirmed','unsubscribed','bounced')),"
    "  mode TEXT NOT NULL DEFAULT 'article' CHECK (mode IN ('article','digest')),"
    "  consent_at INTEGER," /* when the subscriber (or an admin) opted in */
    "  consent_via TEXT,"   /* cli | import | confirm-link */
    "  consent_by TEXT,"    /* cli:USER, import:FILE, http */
    "  status_at INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (list_id, subscriber_id)) WITHOUT ROWID;"
    "CREATE INDEX memberships_subscriber ON memberships(subscriber_id);"
    "CREATE INDEX memberships_status ON memberships(list_id, status);"
    /* History of everything that happened to a subscriber: consent records,
     * unsubscribes, bounces, complaints. Erased with the subscriber.
     * subscriber_id NULL: an event of a list or of a whole import run (one
     * row per run, not per address: each membership row already holds its
     * consent, and a row per address would add a tenth to a bulk import's
     * time and a million rows to the table per million subscribers). */
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY,"
    "  subscriber_id INTEGER REFERENCES subscribers(id) ON DELETE CASCADE,"
    "  list_id INTEGER REFERENCES lists(id) ON DELETE SET NULL,"
    "  at INTEGER NOT NULL,"
    "  kind TEXT NOT NULL," /* subscribe confirm unsubscribe bounce complaint … */
    "  via TEXT NOT NULL,"  /* cli import confirm-link one-click mail bounce */
    "  actor TEXT NOT NULL DEFAULT '',"
    "  detail TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX events_subscriber ON events(subscriber_id);"
    "CREATE TABLE issues ("
    "  id INTEGER PRIMARY KEY,"
    "  number INTEGER NOT NULL UNIQUE,"
    "  title TEXT NOT NULL,"
    "  period TEXT NOT NULL DEFAULT '',"
    "  language TEXT NOT NULL DEFAULT '',"
    "  status TEXT NOT NULL CHECK (status IN ('publish','draft')),"
    "  lists TEXT NOT NULL DEFAULT ''," /* comma-separated names; '' = every list */
    "  path TEXT NOT NULL,"
    "  hash TEXT NOT NULL,"
    "  date INTEGER NOT NULL,"             /* publication date */
    "  preface TEXT NOT NULL DEFAULT '',"  /* HTML */
    "  colophon TEXT NOT NULL DEFAULT ''," /* HTML */
    "  queued_at INTEGER,"                 /* deliveries created; NULL for drafts */
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL);"
    "CREATE TABLE articles ("
    "  issue_id INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,"
    "  idx INTEGER NOT NULL,"
    "  slug TEXT NOT NULL,"
    "  section TEXT NOT NULL DEFAULT '',"
    "  title TEXT NOT NULL,"
    "  summary TEXT NOT NULL DEFAULT '',"
    "  markdown TEXT NOT NULL,"
    "  html TEXT NOT NULL,"
    "  text TEXT NOT NULL,"
    "  PRIMARY KEY (issue_id, idx));"
    /* Issue files that failed to parse, for `matrixctl status`. */
    "CREATE TABLE issue_errors ("
    "  path TEXT PRIMARY KEY,"
    "  hash TEXT NOT NULL,"
    "  error TEXT NOT NULL,"
    "  at INTEGER NOT NULL);"
    /*
     * The ledger. part: article index (1..n), 0 = the digest.
     * issue_id 0 marks a confirmation request, with part = the list id;
     * since version 7, -1 a welcome mail and -2 an "already subscribed"
     * notice, part = the list id too (ledger.h).
     * The UNIQUE key makes enqueueing idempotent: re-publishing an issue
     * never creates a second row for the same (issue, part, subscriber).
     */
    "CREATE TABLE deliveries ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  issue_id INTEGER NOT NULL,"
    "  part INTEGER NOT NULL,"
    "  subscriber_id INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,"
    "  list_id INTEGER NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN"
    "    ('queued','sending','sent','deferred','failed')),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt INTEGER NOT NULL DEFAULT 0,"
    "  first_attempt INTEGER," /* retry_max_age counts from here */
    "  last_code INTEGER,"     /* SMTP reply code */
    "  last_status TEXT,"      /* enhanced status, 4.2.0 */
    "  last_reply TEXT,"       /* the server's last reply line */
    "  queue_id TEXT,"         /* the relay's queue id, from 250 … queued as X */
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  sent_at INTEGER,"
    "  UNIQUE (issue_id, part, subscriber_id));"
    "CREATE INDEX deliveries_due ON deliveries(state, next_attempt);"
    "CREATE INDEX deliveries_subscriber ON deliveries(subscriber_id);"
    "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "INSERT INTO lists(name, title, created_at) VALUES ('matrix', 'Matrix', unixepoch());";

/*
 * Version 2: the bounce score belongs to a membership (subscriber, list),
 * as Mailman keeps it: a bounce counts for the list of the delivery it
 * names. Each membership starts from its subscriber's old score. A
 * delivery whose bounce was counted carries bounced_at, the marker that
 * makes a report count once and that a later relay reply never overwrites
 * (docs/design.md, "Bounces"); before it, a reply text "bounced: …" said so.
 */
static const char schema_v2[] =
    "ALTER TABLE memberships ADD COLUMN bounce_score INTEGER NOT NULL DEFAULT 0;"
    "UPDATE memberships SET bounce_score ="
    "  (SELECT s.bounce_score FROM subscribers s WHERE s.id = memberships.subscriber_id);"
    "ALTER TABLE subscribers DROP COLUMN bounce_score;"
    "ALTER TABLE deliveries ADD COLUMN bounced_at INTEGER;"
    "UPDATE deliveries SET bounced_at = updated_at"
    "  WHERE state = 'failed' AND last_reply LIKE 'bounced: %';";

/*
 * Version 3: subscriber keys with the domain in its IDNA2008 ASCII form
 * (lib/addr.h). subs_rekey() recomputes every key; records it cannot move
 * (another one holds the new key, or the address is no longer valid) keep
 * their old key and are listed here for the admin (docs/design.md).
 */
static const char schema_v3[] =
    "CREATE TABLE IF NOT EXISTS address_conflicts ("
    "  subscriber_id INTEGER PRIMARY KEY REFERENCES subscribers(id) ON DELETE CASCADE,"
    "  key TEXT," /* the key its address has now; NULL: no longer valid */
    "  problem TEXT NOT NULL,"
    "  found_at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS address_conflicts_key ON address_conflicts(key);";

/*
 * Version 4: scheduled issues (the front matter's send_at). held_at: the
 * daemon found the time missed by more than schedule_grace and holds the
 * issue; released_at: an admin released it (matrixctl release). Both are
 * reset when a correction changes send_at.
 */
static const char schema_v4[] = "ALTER TABLE issues ADD COLUMN send_at INTEGER;"
                                "ALTER TABLE issues ADD COLUMN held_at INTEGER;"
                                "ALTER TABLE issues ADD COLUMN released_at INTEGER;";

/*
 * Version 5: the hash of the issue content whose pages are in public_dir.
 * Nothing is queued or listed before its pages are written (docs/design.md, "Publishing"); the
 * issues from before were published when they were saved.
 */
static const char schema_v5[] = "ALTER TABLE issues ADD COLUMN pages_hash TEXT NOT NULL DEFAULT '';"
                                "UPDATE issues SET pages_hash = hash;";

/*
 * Version 6: paced lists. lists.pace spreads an issue's article mails
 * (seconds between article k and k + 1); deliveries.not_before is the
 * moment a paced delivery may go out, set when it is queued and kept
 * across restarts (NULL: not paced, due when queued).
 */
static const char schema_v6[] = "ALTER TABLE lists ADD COLUMN pace INTEGER NOT NULL DEFAULT 0;"
                                "ALTER TABLE deliveries ADD COLUMN not_before INTEGER;";

/*
 * Version 7: readers on the web (matrixctl(8), list-set). lists.private: the list is
 * never offered by the subscribe form and refuses its subscriptions.
 * subscribers.web_mail_at: when the form last made a mail go to this
 * address (a confirmation, or "already subscribed"), for the limit of one
 * an hour per address; NULL: never.
 */
static const char schema_v7[] = "ALTER TABLE lists ADD COLUMN private INTEGER NOT NULL DEFAULT 0;"
                                "ALTER TABLE subscribers ADD COLUMN web_mail_at INTEGER;";

/*
 * Version 8: deliveries_due holds only the rows waiting to be claimed
 * (queued, deferred). A claim takes a row out of it and a result writes
 * none into it, where every state change used to move the row within an
 * index of the whole history (bench/dkim/README.md). The queries that use
 * it name those states as literals (with a bound state SQLite uses a
 * partial index only by compiling the statement again for each value,
 * docs/libraries.md); the rows left 'sending' by a crash are found by one
 * scan at start.
 */
static const char schema_v8[] = "DROP INDEX deliveries_due;"
                                "CREATE INDEX deliveries_due ON deliveries(state, next_attempt)"
                                "  WHERE state = 'queued' OR state = 'deferred';";

/* Each step: SQL, then (when not NULL) a function in the same transaction. */
static const struct migration {
	const char *sql;
	int (*fn)(struct store *s, struct err *err);
} migrations[] = {{schema_v1, NULL}, {schema_v2, NULL}, {schema_v3, subs_rekey}, {schema_v4, NULL},
                  {schema_v5, NULL}, {schema_v6, NULL}, {schema_v7, NULL},       {schema_v8, NULL}};
#define NMIGRATIONS (int)(sizeof migrations / sizeof migrations[0])
_Static_assert(NMIGRATIONS == STORE_SCHEMA_VERSION, "STORE_SCHEMA_VERSION is the last migration");

int64_t store_now(void)
{
	const char *fake = getenv("MATRIXD_FAKE_NOW");
	if (fake && *fake)
		return strtoll(fake, NULL, 10);
	return (int64_t)time(NULL);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int store_fail(struct store *s, struct err *err, const char *what)
{
	/* Another writer, a full disk and an I/O error pass: the work is
	 * tried again later and nothing is lost. The rest (a constraint, a
	 * corrupt or read-only file) needs someone to look. */
	int code = sqlite3_extended_errcode(s->db) & 0xff;
	bool temp = code == SQLITE_BUSY || code == SQLITE_LOCKED || code == SQLITE_FULL ||
	            code == SQLITE_IOERR;
	err_set(err, temp ? ERR_TEMP : ERR_DB, "%s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
	if (temp && s->retry_ms > 0) {
		/* another writer is gone any moment; a full disk or failing I/O
		 * is retried less often: an attempt may be a big transaction */
		bool lock = code == SQLITE_BUSY || code == SQLITE_LOCKED;
		s->busy_until = mono_ms() + (lock ? s->retry_ms : 10 * s->retry_ms);
		snprintf(s->busy_msg, sizeof s->busy_msg, "%s", err->msg);
	}
	return -1;
}

/* A write while the last one failed for a passing reason, within retry_ms
 * of it: refused at once, without waiting on SQLite's lock again. */
static int write_gate(struct store *s, struct err *err)
{
	if (s->busy_until == 0 || mono_ms() >= s->busy_until)
		return 0;
	return err_set(err, ERR_TEMP, "%s (trying again shortly)", s->busy_msg);
}

void store_set_busy(struct store *s, int timeout_ms, int retry_ms)
{
	sqlite3_busy_timeout(s->db, timeout_ms);
	s->retry_ms = retry_ms;
}

int64_t store_retry_at(const struct store *s)
{
	return s->busy_until;
}

int store_exec(struct store *s, const char *sql, struct err *err)
{
	if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return store_fail(s, err, "exec");
	return 0;
}

int store_begin(struct store *s, struct err *err)
{
	if (s->depth > 0) {
		s->depth++;
		return 0;
	}
	if (write_gate(s, err) < 0)
		return -1;
	s->depth++;
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		s->depth = 0;
		return store_fail(s, err, "begin");
	}
	return 0;
}

int store_commit(struct store *s, struct err *err)
{
	if (s->depth == 0 || --s->depth > 0)
		return 0;
	if (s->doomed) {
		/* an inner part failed and rolled back: so does the whole */
		s->doomed = false;
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return err_set(err, ERR_DB, "%s: transaction rolled back: a part of it failed",
		               s->path);
	}
	if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		store_fail(s, err, "commit");
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	s->busy_until = 0; /* it takes writes again */
	return 0;
}

void store_rollback(struct store *s)
{
	if (s->depth == 0)
		return;
	if (--s->depth > 0) {
		/* Nested: the outermost caller decides; its commit will fail
		 * instead of silently committing half of the work. */
		s->doomed = true;
		return;
	}
	s->doomed = false;
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

sqlite3_stmt *store_stmt(struct store *s, const char *sql, struct err *err)
{
	struct store_stmt *c;
	for (c = s->cache; c; c = c->next)
		if (c->sql == sql) {
			sqlite3_reset(c->st);
			sqlite3_clear_bindings(c->st);
			return c->st;
		}
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
		store_fail(s, err, "prepare");
		return NULL;
	}
	c = xmalloc(sizeof *c);
	c->sql = sql;
	c->st = st;
	c->next = s->cache;
	s->cache = c;
	return st;
}

int store_step_done(struct store *s, sqlite3_stmt *st, struct err *err, const char *what)
{
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		;
	if (rc != SQLITE_DONE) {
		store_fail(s, err, what);
		sqlite3_reset(st);
		return -1;
	}
	sqlite3_reset(st);
	return 0;
}

int store_kv_set(struct store *s, const char *key, const char *value, struct err *err)
{
	static const char sql[] = "INSERT INTO kv(key, value) VALUES (?1, ?2) "
	                          "ON CONFLICT(key) DO UPDATE SET value = excluded.value";
	if (s->depth == 0 && write_gate(s, err) < 0)
		return -1;
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
	if (store_step_done(s, st, err, "kv set") < 0)
		return -1;
	if (s->depth == 0)
		s->busy_until = 0;
	return 0;
}

char *store_kv_get(struct store *s, const char *key, struct err *err)
{
	static const char sql[] = "SELECT value FROM kv WHERE key = ?1";
	sqlite3_stmt *st = store_stmt(s, sql, err);
	if (st == NULL)
		return NULL;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	char *v = NULL;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		v = xstrdup((const char *)sqlite3_column_text(st, 0));
	else if (rc != SQLITE_DONE)
		store_fail(s, err, "kv get");
	sqlite3_reset(st);
	return v;
}

void store_checkpoint(struct store *s)
{
	sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
}

static int user_version(struct store *s, int *version)
{
	sqlite3_stmt *st = NULL;
	*version = 0;
	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		return -1;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : -1;
}

/* Migrates forward to version target. A store already there is only read:
 * opening it takes no write lock, so a read-only command (status) is not
 * held up by another process's long write. */
static int migrate(struct store *s, int target, struct err *err)
{
	int version = 0;
	if (user_version(s, &version) < 0)
		return store_fail(s, err, "reading the schema version");
	if (version == target)
		return 0;
	if (store_begin(s, err) < 0)
		return -1;
	/* again under the lock: another process may have migrated meanwhile */
	if (user_version(s, &version) < 0)
		goto fail;
	if (version > NMIGRATIONS) {
		store_rollback(s);
		return err_set(err, ERR_DB,
		               "%s: schema version %d is newer than this program knows (%d); "
		               "upgrade matrixd",
		               s->path, version, NMIGRATIONS);
	}
	for (int v = version; v < target; v++) {
		if (sqlite3_exec(s->db, migrations[v].sql, NULL, NULL, NULL) != SQLITE_OK)
			goto fail;
		if (migrations[v].fn && migrations[v].fn(s, err) < 0) {
			store_rollback(s);
			return err_prefix(err, "migrate");
		}
		char pragma[64];
		snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
		if (sqlite3_exec(s->db, pragma, NULL, NULL, NULL) != SQLITE_OK)
			goto fail;
	}
	return store_commit(s, err);
fail:
	store_fail(s, err, "migrate");
	store_rollback(s);
	return -1;
}

int store_open(struct store **out, const char *state_dir, struct err *err)
{
	return store_open_version(out, state_dir, NMIGRATIONS, err);
}

int store_open_version(struct store **out, const char *state_dir, int version, struct err *err)
{
	if (version < 1 || version > NMIGRATIONS)
		return err_set(err, ERR_USAGE, "schema version %d: this program knows 1 to %d",
		               version, NMIGRATIONS);
	struct store *s = xcalloc(1, sizeof *s);
	*out = NULL;
	s->path = xasprintf("%s/%s", state_dir, STORE_FILE);

	/* Create the file ourselves so that it is group-writable: SQLite gives
	 * the -wal and -shm files the mode of the database file. */
	int fd = open(s->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0660);
	if (fd < 0) {
		int saved = errno;
		err_sys(err, "%s", s->path);
		if (saved == ENOENT)
			err_prefix(err, "state_dir does not exist (create it or fix state_dir)");
		else if (saved == EACCES)
			snprintf(err->msg + strlen(err->msg), sizeof err->msg - strlen(err->msg),
			         " (run matrixctl as the daemon's user or a member of its group; "
			         "the database and state_dir must be group-writable)");
		goto fail;
	}
	struct stat st, dir;
	if (fstat(fd, &st) == 0 && st.st_size == 0) {
		(void)fchmod(fd, 0660);
		/* A new database belongs to whoever owns state_dir, not to the
		 * admin (root) who happened to create it before the daemon's first
		 * start. SQLite gives -wal and -shm the database's owner. */
		if (stat(state_dir, &dir) == 0 &&
		    fchown(fd, geteuid() == 0 ? dir.st_uid : (uid_t)-1, dir.st_gid) < 0)
			(void)0; /* not a member of the group: the mode still lets it share */
	}
	close(fd);

	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW |
	            SQLITE_OPEN_EXRESCODE;
	if (sqlite3_open_v2(s->path, &s->db, flags, NULL) != SQLITE_OK) {
		store_fail(s, err, "open");
		goto fail;
	}
	sqlite3_busy_timeout(s->db, STORE_BUSY_MS);
	sqlite3_stmt *q = NULL;
	if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &q, NULL) != SQLITE_OK ||
	    sqlite3_step(q) != SQLITE_ROW ||
	    strcmp((const char *)sqlite3_column_text(q, 0), "wal") != 0) {
		sqlite3_finalize(q);
		store_fail(s, err, "cannot switch to WAL journal mode");
		goto fail;
	}
	sqlite3_finalize(q);
	if (store_exec(s, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;", err) < 0)
		goto fail;
	if (migrate(s, version, err) < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	store_close(s);
	return -1;
}

void store_close(struct store *s)
{
	if (s == NULL)
		return;
	struct store_stmt *c = s->cache, *n;
	for (; c; c = n) {
		n = c->next;
		sqlite3_finalize(c->st);
		free(c);
	}
	if (s->db)
		sqlite3_close(s->db);
	free(s->path);
	free(s);
}
