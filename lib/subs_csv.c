/*
 * CSV import and export of subscribers (subs.h), through libcsv.
 *
 * libcsv tells neither where a record starts nor how far it got, so the
 * file is fed to it one physical line at a time (a line ends after LF, or
 * after a CR: RFC 4180 says CRLF, old spreadsheets write a lone CR). A
 * record then always ends at the end of a piece fed, and the line a record
 * starts on is the line of the first non-blank piece fed while no record
 * was open; quoted line breaks inside a record count as lines, as an
 * editor shows them. Memory stays flat: the file is streamed through a
 * 64 KiB buffer, libcsv's field buffer is capped by its realloc hook, and
 * only the record in hand is kept.
 *
 * Throughput: new addresses go in by multi-row INSERTs (subscribers, then
 * their memberships); consent goes into the membership row and the run is
 * one events row (an events row per address measured a tenth more time for
 * a copy of what the membership says). Rows are committed in chunks (BEGIN
 * IMMEDIATE) with a pause between them, so that matrixd's own writes wait
 * at most about one chunk.
 */
#include <csv.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "addr.h"
#include "buf.h"
#include "subs.h"
#include "utf8.h"
#include "xmalloc.h"

#define READ_BLOCK 65536
/*
 * Rows per multi-row INSERT. A statement per row costs more than the row:
 * every step opens and closes a cursor per table and index and walks each
 * B-tree from the root, and Debian's SQLite (OMIT_LOOKASIDE, serialized
 * threading) mallocs and locks for each. Measured on 1,000,000 rows: 8.9 s
 * of CPU with a statement per row, 6.1 s in batches of 256 (README.md in
 * bench/import).
 */
#define BATCH 256

/* A validated row, its strings in imp.arena (offsets; attrs SIZE_MAX = none). */
struct pending {
	size_t email, key, name, attrs;
	int mode;
	enum subs_status status;
	int64_t id; /* subscriber id once inserted by the batch */
};

enum { COL_ATTR = 0, COL_EMAIL, COL_NAME, COL_MODE, COL_STATUS };

struct imp {
	struct store *s;
	const struct subs_import_opts *o;
	struct subs_import_stats *st;
	struct subs_import_stats done; /* as of the last commit */
	struct err *err;
	const char *path;
	char *consent_by; /* "import:PATH" */
	int64_t list_id;
	size_t chunk;

	struct csv_parser p;
	unsigned char popts;

	/* the record in hand: fields NUL-terminated one after the other */
	struct buf rec;
	size_t off[SUBS_CSV_FIELDS_MAX], len[SUBS_CSV_FIELDS_MAX];
	int nf;
	bool too_many, too_long;

	/* the header */
	bool have_header;
	int ncols;
	int kind[SUBS_CSV_FIELDS_MAX];
	char *colname[SUBS_CSV_FIELDS_MAX];
	bool has_attrs;

	/* position */
	int cur_line, start_line;
	bool in_record, ended, pending_cr, skip_line;

	/* rows validated, waiting for the next batch insert */
	struct pending *batch;
	int nbatch;
	struct buf arena;
	sqlite3_stmt *sub_batch, *mem_batch;

	/* transaction */
	bool in_tx, doomed, fatal;
	size_t in_chunk;
	int chunks; /* transactions begun */
};

/*
 * libcsv grows its field buffer by realloc without a limit: a quote left
 * open in a large file would make it swallow the file. Refusing to grow
 * past the cap makes csv_parse stop with CSV_ENOMEM.
 */
static void *capped_realloc(void *p, size_t n)
{
	if (n > SUBS_CSV_FIELD_MAX + 4096)
		return NULL;
	return realloc(p, n);
}

static void parser_init(struct imp *im)
{
	csv_init(&im->p, im->popts);
	csv_set_realloc_func(&im->p, capped_realloc);
	csv_set_blk_size(&im->p, 4096);
}

/* A bad row is not an error of the import: it is counted and reported,
 * and reading goes on. Returns 0, so the record reader can write
 * `return reject(…);`. */
static int reject(struct imp *im, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int reject(struct imp *im, int line, const char *fmt, ...)
{
	char msg[900], full[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(full, sizeof full, "%s:%d: %s", im->path, line, msg);
	im->st->rejected++;
	/* --atomic: nothing will be written, the rest of the file is only
	 * validated. A dry run goes on writing (and rolls back) so that its
	 * counts are those of a real import. */
	if (im->o->atomic)
		im->doomed = true;
	if (im->o->reject)
		im->o->reject(im->o->arg, line, full);
	return 0;
}

/* What stops the import (the house convention: -1 with err set). libcsv's
 * callbacks return nothing, so im->fatal also tells the reading loop. */
static int fatal(struct imp *im, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fatal(struct imp *im, int line, const char *fmt, ...)
{
	char msg[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	err_at(im->err, ERR_INPUT, im->path, line, "%s", msg);
	im->fatal = true;
	return -1;
}

/* ---- writing one row --------------------------------------------------- */

struct row {
	const char *email, *name;
	char key[ADDR_MAX + 1];
	int mode; /* -1 = not given */
	enum subs_status status;
	bool status_given;
	const char *attrs; /* the row's attributes as a JSON object, or NULL */
};

/*
 * SQLite has no queue of writers: a process waiting for the lock polls it
 * from the busy handler, and the default handler (sqlite3_busy_timeout)
 * sleeps up to 100 ms between tries. An importer that began its next chunk
 * right after a commit would take the lock back before any waiter woke, and
 * matrixd could wait for the whole import and time out. So the lock is left
 * free a little longer than that sleep before each further chunk.
 */
#define CHUNK_PAUSE_NS 110000000L

static int begin_chunk(struct imp *im)
{
	if (im->in_tx)
		return 0;
	if (im->chunks++ > 0) {
		struct timespec ts = {0, CHUNK_PAUSE_NS};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	if (store_begin(im->s, im->err) < 0)
		return -1;
	im->in_tx = true;
	im->in_chunk = 0;
	return 0;
}

static int commit_chunk(struct imp *im)
{
	if (!im->in_tx)
		return 0;
	im->in_tx = false;
	if (store_commit(im->s, im->err) < 0)
		return -1;
	im->done = *im->st;
	return 0;
}

/* Merges the row's attributes into the stored ones; returns the allocated
 * result, or NULL when nothing changes. */
static char *merge_attrs(const char *old, const char *add)
{
	struct json_object *o = json_tokener_parse(old);
	struct json_object *a = json_tokener_parse(add);
	char *res = NULL;
	if (o == NULL || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		o = json_object_new_object();
	}
	json_object_object_foreach(a, k, v)
	{
		json_object_object_add(o, k, json_object_get(v));
	}
	const char *j = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
	                                                      JSON_C_TO_STRING_NOSLASHESCAPE);
	if (strcmp(j, old) != 0)
		res = xstrdup(j);
	json_object_put(o);
	json_object_put(a);
	return res;
}

/* The slow path: the address is known already. */
static int apply_existing(struct imp *im, const struct row *r)
{
	static const char sel_sql[] =
	    "SELECT s.id, s.name, s.attrs, m.status, m.mode FROM subscribers s"
	    " LEFT JOIN memberships m ON m.list_id = ?2 AND m.subscriber_id = s.id"
	    " WHERE s.email_key = ?1";
	static const char upd_sql[] =
	    "UPDATE subscribers SET name = ?2, attrs = ?3, updated_at = ?4"
	    " WHERE id = ?1";
	struct store *s = im->s;
	char *old_name = NULL, *old_attrs = NULL, *new_attrs = NULL;
	bool member, changed = false;
	enum subs_status cur = SUBS_PENDING;
	enum subs_mode mode = SUBS_ARTICLE;
	int64_t sid, now = store_now();
	int rc = -1;

	sqlite3_stmt *st = store_stmt(s, sel_sql, im->err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, im->list_id);
	if (sqlite3_step(st) != SQLITE_ROW) {
		store_fail(s, im->err, "looking up a subscriber");
		sqlite3_reset(st);
		return -1;
	}
	sid = sqlite3_column_int64(st, 0);
	old_name = xstrdup((const char *)sqlite3_column_text(st, 1));
	old_attrs = xstrdup((const char *)sqlite3_column_text(st, 2));
	member = sqlite3_column_type(st, 3) != SQLITE_NULL;
	if (member) {
		subs_status_parse((const char *)sqlite3_column_text(st, 3), &cur);
		subs_mode_parse((const char *)sqlite3_column_text(st, 4), &mode);
	}
	sqlite3_reset(st);

	enum subs_status target = r->status;
	if (member && subs_is_suppressed(cur) && !subs_is_suppressed(target) &&
	    !im->o->resubscribe) {
		im->st->skipped++;
		rc = 0;
		goto out;
	}

	const char *name = *r->name && strcmp(r->name, old_name) != 0 ? r->name : old_name;
	if (r->attrs)
		new_attrs = merge_attrs(old_attrs, r->attrs);
	if (name != old_name || new_attrs) {
		if ((st = store_stmt(s, upd_sql, im->err)) == NULL)
			goto out;
		sqlite3_bind_int64(st, 1, sid);
		sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, new_attrs ? new_attrs : old_attrs, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, now);
		if (store_step_done(s, st, im->err, "updating a subscriber") < 0)
			goto out;
		changed = true;
	}

	if (!member) {
		mode = r->mode >= 0 ? (enum subs_mode)r->mode : SUBS_ARTICLE;
		if (subs_membership_add(s, sid, im->list_id, target, mode, "import", im->consent_by,
		                        im->err) < 0)
			goto out;
		im->st->added++;
		rc = 0;
		goto out;
	}

	enum subs_mode new_mode = r->mode >= 0 ? (enum subs_mode)r->mode : mode;
	if (target != cur) {
		if (subs_transition(s, sid, im->list_id, cur, target, "import", im->consent_by,
		                    im->o->actor, NULL, im->err) < 0)
			goto out;
		changed = true;
	}
	if (new_mode != mode) {
		if (subs_membership_set_mode(s, sid, im->list_id, new_mode, im->err) < 0)
			goto out;
		changed = true;
	}
	if (changed)
		im->st->updated++;
	else
		im->st->unchanged++;
	rc = 0;
out:
	free(old_name);
	free(old_attrs);
	free(new_attrs);
	return rc;
}

static const char one_sub_sql[] =
    "INSERT INTO subscribers(email, email_key, name, attrs, created_at, updated_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(email_key) DO NOTHING";
static const char one_mem_sql[] =
    "INSERT INTO memberships(list_id, subscriber_id, status, mode, consent_at, consent_via,"
    " consent_by, status_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)";

/* Binds one membership row at parameters base+1 … base+9, in one_mem_sql's
 * order (which names ?8 twice instead of having a ninth). */
static void bind_membership(struct imp *im, sqlite3_stmt *st, int base, int64_t sid,
                            const struct row *r, int64_t now)
{
	sqlite3_bind_int64(st, base + 1, im->list_id);
	sqlite3_bind_int64(st, base + 2, sid);
	sqlite3_bind_text(st, base + 3, subs_status_name(r->status), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, base + 4,
	                  subs_mode_name(r->mode >= 0 ? (enum subs_mode)r->mode : SUBS_ARTICLE), -1,
	                  SQLITE_STATIC);
	if (!subs_is_suppressed(r->status)) {
		sqlite3_bind_int64(st, base + 5, now);
		sqlite3_bind_text(st, base + 6, "import", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, base + 7, im->consent_by, -1, SQLITE_STATIC);
	} else {
		/* batch statements are not cleared between uses */
		sqlite3_bind_null(st, base + 5);
		sqlite3_bind_null(st, base + 6);
		sqlite3_bind_null(st, base + 7);
	}
	sqlite3_bind_int64(st, base + 8, now);
	if (sqlite3_bind_parameter_count(st) >= base + 9)
		sqlite3_bind_int64(st, base + 9, now);
}

/* One row, one statement at a time: the end of a file, and known addresses. */
static int apply_one(struct imp *im, const struct row *r)
{
	struct store *s = im->s;
	int64_t now = store_now();
	/* A new address costs one INSERT; a known one makes it do nothing,
	 * which costs an index probe only. */
	sqlite3_stmt *st = store_stmt(s, one_sub_sql, im->err);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, r->email, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, r->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, r->attrs ? r->attrs : "{}", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, now);
	if (store_step_done(s, st, im->err, "adding a subscriber") < 0)
		return -1;
	if (sqlite3_changes(s->db) == 0)
		return apply_existing(im, r);
	int64_t sid = sqlite3_last_insert_rowid(s->db);
	if ((st = store_stmt(s, one_mem_sql, im->err)) == NULL)
		return -1;
	bind_membership(im, st, 0, sid, r, now);
	if (store_step_done(s, st, im->err, "adding a membership") < 0)
		return -1;
	im->st->added++;
	return 0;
}

static const char *arena_str(const struct imp *im, size_t off)
{
	return (const char *)im->arena.data + off;
}

static void row_of(const struct imp *im, const struct pending *p, struct row *r)
{
	r->email = arena_str(im, p->email);
	r->name = arena_str(im, p->name);
	memcpy(r->key, arena_str(im, p->key), strlen(arena_str(im, p->key)) + 1);
	r->mode = p->mode;
	r->status = p->status;
	r->attrs = p->attrs == SIZE_MAX ? NULL : arena_str(im, p->attrs);
}

/* Prepares "INSERT … VALUES (…),(…) …" for BATCH rows of n parameters. */
static sqlite3_stmt *prepare_batch(struct imp *im, const char *head, int n, const char *tail)
{
	struct buf sql;
	sqlite3_stmt *st = NULL;
	buf_init(&sql, BUF_NOLIMIT);
	buf_adds(&sql, head);
	for (int i = 0; i < BATCH; i++) {
		buf_adds(&sql, i ? ",(" : "(");
		for (int k = 0; k < n; k++)
			buf_adds(&sql, k ? ",?" : "?");
		buf_addc(&sql, ')');
	}
	buf_adds(&sql, tail);
	if (sqlite3_prepare_v3(im->s->db, buf_str(&sql), (int)sql.len, SQLITE_PREPARE_PERSISTENT,
	                       &st, NULL) != SQLITE_OK)
		store_fail(im->s, im->err, "preparing the import");
	buf_free(&sql);
	return st;
}

static int key_order(const void *a, const void *b, void *arg)
{
	const struct imp *im = arg;
	const struct pending *pa = &im->batch[*(const int *)a], *pb = &im->batch[*(const int *)b];
	int c = strcmp(arena_str(im, pa->key), arena_str(im, pb->key));
	if (c == 0)
		c = *(const int *)a - *(const int *)b;
	return c;
}

/* A full batch: one INSERT for the subscribers, RETURNING the ids of those
 * that were new; one INSERT for their memberships; known addresses after
 * that, one by one and in file order (so a repeated address in the file
 * updates the row its first occurrence inserted). */
static int apply_batch(struct imp *im)
{
	struct store *s = im->s;
	int64_t now = store_now();
	int order[BATCH], inserted = 0, rc;
	struct row r;

	if (im->sub_batch == NULL &&
	    (im->sub_batch = prepare_batch(
	         im,
	         "INSERT INTO subscribers(email, email_key, name, attrs,"
	         " created_at, updated_at) VALUES ",
	         6, " ON CONFLICT(email_key) DO NOTHING RETURNING id, email_key")) == NULL)
		return -1;
	if (im->mem_batch == NULL &&
	    (im->mem_batch = prepare_batch(im,
	                                   "INSERT INTO memberships(list_id, subscriber_id, status,"
	                                   " mode, consent_at, consent_via, consent_by, status_at,"
	                                   " created_at) VALUES ",
	                                   9, "")) == NULL)
		return -1;

	sqlite3_stmt *st = im->sub_batch;
	for (int i = 0; i < BATCH; i++) {
		struct pending *p = &im->batch[i];
		int b = i * 6;
		p->id = 0;
		order[i] = i;
		sqlite3_bind_text(st, b + 1, arena_str(im, p->email), -1, SQLITE_STATIC);
		sqlite3_bind_text(st, b + 2, arena_str(im, p->key), -1, SQLITE_STATIC);
		sqlite3_bind_text(st, b + 3, arena_str(im, p->name), -1, SQLITE_STATIC);
		sqlite3_bind_text(st, b + 4, p->attrs == SIZE_MAX ? "{}" : arena_str(im, p->attrs),
		                  -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, b + 5, now);
		sqlite3_bind_int64(st, b + 6, now);
	}
	/* RETURNING rows come in no promised order: match them by key. Only
	 * the first of equal keys in a batch can have been inserted. */
	qsort_r(order, BATCH, sizeof *order, key_order, im);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *key = (const char *)sqlite3_column_text(st, 1);
		int lo = 0, hi = BATCH;
		while (lo < hi) {
			int mid = (lo + hi) / 2;
			if (strcmp(arena_str(im, im->batch[order[mid]].key), key) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < BATCH && strcmp(arena_str(im, im->batch[order[lo]].key), key) == 0) {
			im->batch[order[lo]].id = sqlite3_column_int64(st, 0);
			inserted++;
		}
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return store_fail(s, im->err, "adding subscribers");

	if (inserted == BATCH) {
		st = im->mem_batch;
		for (int i = 0; i < BATCH; i++) {
			row_of(im, &im->batch[i], &r);
			bind_membership(im, st, i * 9, im->batch[i].id, &r, now);
		}
		if (store_step_done(s, st, im->err, "adding memberships") < 0)
			return -1;
		im->st->added += BATCH;
		return 0;
	}
	for (int i = 0; i < BATCH; i++) {
		if (im->batch[i].id == 0)
			continue;
		row_of(im, &im->batch[i], &r);
		if ((st = store_stmt(s, one_mem_sql, im->err)) == NULL)
			return -1;
		bind_membership(im, st, 0, im->batch[i].id, &r, now);
		if (store_step_done(s, st, im->err, "adding a membership") < 0)
			return -1;
		im->st->added++;
	}
	for (int i = 0; i < BATCH; i++) {
		if (im->batch[i].id != 0)
			continue;
		row_of(im, &im->batch[i], &r);
		if (apply_existing(im, &r) < 0)
			return -1;
	}
	return 0;
}

/* Writes the rows waiting in the batch; commits when a chunk is full. */
static int flush(struct imp *im)
{
	int n = im->nbatch;
	if (n == 0)
		return 0;
	if (begin_chunk(im) < 0)
		return -1;
	if (n == BATCH) {
		if (apply_batch(im) < 0)
			return -1;
	} else {
		struct row r;
		for (int i = 0; i < n; i++) {
			row_of(im, &im->batch[i], &r);
			if (apply_one(im, &r) < 0)
				return -1;
		}
	}
	im->nbatch = 0;
	buf_reset(&im->arena);
	im->in_chunk += (size_t)n;
	if (im->in_chunk >= im->chunk && !im->o->atomic && !im->o->dry_run)
		return commit_chunk(im);
	return 0;
}

static size_t arena_add(struct imp *im, const char *str)
{
	size_t off = im->arena.len;
	buf_adds(&im->arena, str);
	buf_addc(&im->arena, '\0');
	return off;
}

static int apply(struct imp *im, const struct row *r)
{
	struct pending *p = &im->batch[im->nbatch++];
	p->email = arena_add(im, r->email);
	p->key = arena_add(im, r->key);
	p->name = arena_add(im, r->name);
	p->attrs = r->attrs ? arena_add(im, r->attrs) : SIZE_MAX;
	p->mode = r->mode;
	p->status = r->status;
	if (im->nbatch == BATCH)
		return flush(im);
	return 0;
}

/* ---- reading one record ------------------------------------------------ */

static const char *field(struct imp *im, int i)
{
	return (const char *)im->rec.data + im->off[i];
}

/* Reads the column names; 0, or -1 (fatal) when they are unusable. */
static int header(struct imp *im, int line)
{
	if (im->too_long || im->too_many)
		return fatal(im, line, "the header has more than %d columns or is too long",
		             SUBS_CSV_FIELDS_MAX);
	bool seen[5] = {false};
	im->ncols = im->nf;
	for (int i = 0; i < im->nf; i++) {
		const char *f = field(im, i);
		if (!utf8_valid(f, im->len[i], NULL) || memchr(f, '\0', im->len[i]))
			return fatal(im, line,
			             "column %d of the header is not valid UTF-8 (save the file as "
			             "UTF-8)",
			             i + 1);
		if (im->len[i] == 0)
			return fatal(im, line, "column %d of the header has no name", i + 1);
		int k = COL_ATTR;
		if (strcasecmp(f, "email") == 0)
			k = COL_EMAIL;
		else if (strcasecmp(f, "name") == 0)
			k = COL_NAME;
		else if (strcasecmp(f, "mode") == 0)
			k = COL_MODE;
		else if (strcasecmp(f, "status") == 0)
			k = COL_STATUS;
		for (int j = 0; j < i; j++)
			if (strcmp(im->colname[j], f) == 0 || (k != COL_ATTR && im->kind[j] == k))
				return fatal(im, line, "column '%s' appears twice in the header",
				             f);
		if (k != COL_ATTR)
			seen[k] = true;
		else
			im->has_attrs = true;
		im->kind[i] = k;
		im->colname[i] = xstrdup(f);
	}
	if (!seen[COL_EMAIL])
		return fatal(im, line,
		             "the header has no 'email' column (the first line names the "
		             "columns, e.g. email,name,mode)");
	im->have_header = true;
	return 0;
}

/* reject() for a row whose attributes were partly collected. */
static int rejected(struct json_object **attrs, struct imp *im, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int rejected(struct json_object **attrs, struct imp *im, int line, const char *fmt, ...)
{
	char msg[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	json_object_put(*attrs);
	*attrs = NULL;
	return reject(im, line, "%s", msg);
}

/* One record: the header, or a row that is imported or rejected (0);
 * -1 when the import stops (a bad header, the store failed). */
static int record(struct imp *im, int line)
{
	struct row r = {.email = "", .name = "", .mode = -1, .status = SUBS_CONFIRMED};
	struct json_object *attrs = NULL;
	const char *why;

	if (im->fatal)
		return -1;
	if (!im->have_header)
		return header(im, line);
	im->st->rows++;
	if (im->too_many)
		return reject(im, line, "more than %d fields", SUBS_CSV_FIELDS_MAX);
	if (im->too_long)
		return reject(im, line, "the record is longer than %d bytes", SUBS_CSV_FIELD_MAX);
	if (im->nf != im->ncols)
		return reject(im, line, "%d field%s, but the header has %d columns", im->nf,
		              im->nf == 1 ? "" : "s", im->ncols);
	for (int i = 0; i < im->nf; i++) {
		const char *f = field(im, i);
		size_t n = im->len[i];
		if (memchr(f, '\0', n))
			return reject(im, line, "column '%s' contains a NUL byte", im->colname[i]);
		if (!utf8_valid(f, n, NULL))
			return reject(im, line,
			              "column '%s' is not valid UTF-8 (save the file as UTF-8)",
			              im->colname[i]);
	}
	for (int i = 0; i < im->nf; i++) {
		const char *f = field(im, i);
		size_t n = im->len[i];
		struct err e;
		switch (im->kind[i]) {
		case COL_EMAIL:
			if (addr_check(f, n, r.key, &e) < 0)
				return rejected(&attrs, im, line, "%s", e.msg);
			r.email = f;
			break;
		case COL_NAME:
			if ((why = subs_text_check(f, n, SUBS_NAME_MAX)) != NULL)
				return rejected(
				    &attrs, im, line,
				    "the name %s; a name is one line of at most %d characters", why,
				    SUBS_NAME_MAX);
			r.name = f;
			break;
		case COL_MODE:
			if (n == 0)
				break;
			enum subs_mode m;
			if (subs_mode_parse(f, &m) < 0)
				return rejected(
				    &attrs, im, line,
				    "mode must be 'article' or 'digest' (or empty), not '%.40s'",
				    f);
			r.mode = (int)m;
			break;
		case COL_STATUS:
			if (n == 0)
				break;
			if (subs_status_parse(f, &r.status) < 0)
				return rejected(
				    &attrs, im, line,
				    "status must be confirmed, pending, unsubscribed or bounced "
				    "(or empty), not '%.40s'",
				    f);
			r.status_given = true;
			break;
		default:
			if (n == 0)
				break;
			if (attrs == NULL)
				attrs = json_object_new_object();
			json_object_object_add(attrs, im->colname[i],
			                       json_object_new_string_len(f, (int)n));
		}
	}
	if (im->doomed) {
		/* --atomic with an earlier bad row: validate only */
		json_object_put(attrs);
		return 0;
	}
	if (attrs)
		r.attrs = json_object_to_json_string_ext(attrs, JSON_C_TO_STRING_PLAIN |
		                                                    JSON_C_TO_STRING_NOSLASHESCAPE);
	int rc = 0;
	if (apply(im, &r) < 0) {
		im->fatal = true; /* the store failed; im->err says how */
		rc = -1;
	}
	json_object_put(attrs);
	return rc;
}

/*
 * A spreadsheet runs a cell that starts with = + - @, a tab or a CR as a
 * formula (OWASP, "CSV Injection"): the export writes such a cell with a
 * "'" in front, which spreadsheets take as "text", and so also a cell that
 * starts with "'" itself, so that the import can take exactly one "'" off
 * the cells that have one before such a character: export, import, export
 * gives the same bytes.
 */
static bool formula_start(const char *s, size_t n)
{
	return n > 0 && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' || s[0] == '\t' ||
	                 s[0] == '\r' || s[0] == '\'');
}

static void on_field(void *data, size_t n, void *arg)
{
	struct imp *im = arg;
	if (im->nf >= SUBS_CSV_FIELDS_MAX) {
		im->too_many = true;
		return;
	}
	if (n >= 2 && *(const char *)data == '\'' && formula_start((const char *)data + 1, n - 1)) {
		data = (char *)data + 1;
		n--;
	}
	im->off[im->nf] = im->rec.len;
	im->len[im->nf] = n;
	if ((n && buf_add(&im->rec, data, n) < 0) || buf_addc(&im->rec, '\0') < 0) {
		im->too_long = true;
		im->len[im->nf] = 0;
	}
	im->nf++;
}

static void on_record(int c, void *arg)
{
	struct imp *im = arg;
	(void)c;
	if (im->rec.data == NULL)
		buf_addc(&im->rec, '\0');
	(void)record(im, im->start_line); /* a failure stopped the import: im->fatal */
	buf_reset(&im->rec);
	im->nf = 0;
	im->too_many = im->too_long = false;
	im->ended = true;
}

static bool is_blank(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
			return false;
	return true;
}

/* Feeds one piece of one physical line; eol: the piece ends the line. */
static void feed(struct imp *im, const char *p, size_t n, bool eol)
{
	bool lf_of_crlf = im->pending_cr && n == 1 && p[0] == '\n';
	if (im->skip_line)
		goto advance;
	if (!im->in_record)
		im->start_line = im->cur_line;
	im->ended = false;
	size_t used = csv_parse(&im->p, p, n, on_field, on_record, im);
	if (im->fatal)
		return;
	if (used < n) {
		int e = csv_error(&im->p);
		if (e == CSV_ENOMEM || e == CSV_ETOOBIG) {
			fatal(im, im->start_line,
			      "a field is longer than %d bytes (is a quote left open?); nothing "
			      "after this line was read",
			      SUBS_CSV_FIELD_MAX);
			return;
		}
		if (!im->have_header) {
			fatal(im, im->start_line, "bad quoting in the header");
			return;
		}
		im->st->rows++;
		reject(im, im->start_line,
		       "bad quoting: a quote inside an unquoted field or text after a closing "
		       "quote (a quote inside a quoted field is written \"\")");
		csv_free(&im->p);
		parser_init(im);
		buf_reset(&im->rec);
		im->nf = 0;
		im->too_many = im->too_long = false;
		im->in_record = false;
		im->skip_line = !eol;
		goto advance;
	}
	if (im->ended)
		im->in_record = false;
	else if (im->in_record || !is_blank(p, n))
		im->in_record = true;
advance:
	if (!eol) {
		im->pending_cr = false;
		return;
	}
	im->skip_line = false;
	if (!lf_of_crlf)
		im->cur_line++;
	im->pending_cr = p[n - 1] == '\r';
}

static int import_stream(struct imp *im, FILE *f)
{
	char *block = xmalloc(READ_BLOCK);
	bool first = true;
	size_t n;
	while (!im->fatal && (n = fread(block, 1, READ_BLOCK, f)) > 0) {
		size_t i = 0;
		if (first && n >= 3 && memcmp(block, "\xef\xbb\xbf", 3) == 0)
			i = 3; /* the BOM Windows tools write before UTF-8 */
		first = false;
		while (i < n && !im->fatal) {
			size_t j = i;
			while (j < n && block[j] != '\n' && block[j] != '\r')
				j++;
			bool eol = j < n;
			if (eol)
				j++;
			feed(im, block + i, j - i, eol);
			i = j;
		}
	}
	free(block);
	if (im->fatal)
		return -1;
	if (ferror(f))
		return err_sys(im->err, "%s: reading", im->path);
	if (im->in_record && csv_fini(&im->p, on_field, on_record, im) != 0) {
		if (!im->have_header)
			return err_at(im->err, ERR_INPUT, im->path, im->start_line,
			              "a quoted column name is not closed");
		im->st->rows++;
		reject(im, im->start_line,
		       "a quoted field is not closed before the end of the file");
	} else if (!im->in_record) {
		csv_fini(&im->p, on_field, on_record, im);
	}
	if (im->fatal)
		return -1;
	if (!im->have_header)
		return err_at(im->err, ERR_INPUT, im->path, 0,
		              "empty; the first line must name the columns (email,name,mode)");
	return 0;
}

int subs_import(struct store *s, const char *path, const struct subs_import_opts *opts,
                struct subs_import_stats *stats, struct err *err)
{
	struct imp *im = xcalloc(1, sizeof *im);
	struct err e;
	FILE *f = NULL;
	int rc = -1;
	bool is_stdin = strcmp(path, "-") == 0;

	err_clear(&e);
	memset(stats, 0, sizeof *stats);
	im->s = s;
	im->o = opts;
	im->st = stats;
	im->err = &e;
	im->path = is_stdin ? "<stdin>" : path;
	im->chunk = opts->chunk ? opts->chunk : SUBS_IMPORT_CHUNK;
	im->consent_by = xasprintf("import:%s", im->path);
	im->cur_line = 1;
	im->popts = CSV_STRICT | CSV_STRICT_FINI;
	buf_init(&im->rec, SUBS_CSV_FIELD_MAX);
	buf_init(&im->arena, BUF_NOLIMIT);
	im->batch = xcalloc(BATCH, sizeof *im->batch);
	parser_init(im);

	im->list_id = subs_list_id(s, opts->list ? opts->list : SUBS_DEFAULT_LIST, &e);
	if (im->list_id < 0)
		goto out;
	f = is_stdin ? stdin : fopen(path, "re");
	if (f == NULL) {
		err_sys(&e, "%s", path);
		goto out;
	}
	/* A bigger page cache (32 MiB) keeps most of the email_key index in
	 * memory between chunks; with SQLite's default (2 MB) every chunk
	 * rereads it. Peak RSS stays near 50 MB (bench/import/README.md). */
	store_exec(s, "PRAGMA cache_size = -32768", NULL);
	if ((opts->atomic || opts->dry_run) && begin_chunk(im) < 0)
		goto out;
	if (import_stream(im, f) < 0 || flush(im) < 0)
		goto fail;
	if (opts->dry_run) {
		rc = 0;
		goto out; /* rolled back below */
	}
	if (im->doomed) {
		err_set(&e, ERR_INPUT, "%s: %lld row(s) rejected; --atomic: nothing was imported",
		        im->path, (long long)stats->rejected);
		goto fail;
	}
	char detail[512];
	snprintf(detail, sizeof detail,
	         "%s: %lld rows, %lld added, %lld updated, %lld unchanged, %lld skipped, "
	         "%lld rejected",
	         im->path, (long long)stats->rows, (long long)stats->added,
	         (long long)stats->updated, (long long)stats->unchanged, (long long)stats->skipped,
	         (long long)stats->rejected);
	if (begin_chunk(im) < 0 ||
	    subs_event_add(s, 0, im->list_id, "import", "import", opts->actor, detail, &e) < 0 ||
	    commit_chunk(im) < 0)
		goto fail;
	rc = 0;
	goto out;
fail:
	/* The rows of an unfinished chunk are good ones when the file, not the
	 * store, stopped the import: keep them unless all or nothing was asked. */
	if (e.kind == ERR_INPUT && !opts->atomic && !opts->dry_run) {
		struct err keep = e;
		if (flush(im) == 0)
			commit_chunk(im);
		e = keep;
	}
	if (opts->atomic || opts->dry_run) {
		stats->added = stats->updated = stats->unchanged = stats->skipped = 0;
	} else {
		stats->added = im->done.added;
		stats->updated = im->done.updated;
		stats->unchanged = im->done.unchanged;
		stats->skipped = im->done.skipped;
	}
out:
	if (im->in_tx)
		store_rollback(s);
	store_exec(s, "PRAGMA cache_size = -2000", NULL);
	if (f && !is_stdin)
		fclose(f);
	sqlite3_finalize(im->sub_batch);
	sqlite3_finalize(im->mem_batch);
	csv_free(&im->p);
	buf_free(&im->rec);
	buf_free(&im->arena);
	free(im->batch);
	for (int i = 0; i < im->ncols; i++)
		free(im->colname[i]);
	free(im->consent_by);
	free(im);
	if (rc < 0 && err)
		*err = e;
	return rc;
}

/* ---- export -------------------------------------------------------------- */

/* Appends s as one quoted CSV field, with a "'" first when a spreadsheet
 * would run it (formula_start). */
static int put_field(struct buf *line, const char *s, size_t n, bool first)
{
	if (!first && buf_addc(line, ',') < 0)
		return -1;
	bool tick = formula_start(s, n);
	size_t need = csv_write(NULL, 0, s, n) + tick;
	if (buf_grow(line, need + 1) < 0)
		return -1;
	csv_write(line->data + line->len + tick, need - tick, s, n);
	if (tick) {
		/* inside the opening quote csv_write wrote: "'=…" */
		line->data[line->len] = '"';
		line->data[line->len + 1] = '\'';
	}
	line->len += need;
	line->data[line->len] = '\0';
	return 0;
}

int subs_export(struct store *s, const char *list, FILE *f, int64_t *rows, struct err *err)
{
	static const char keys_sql[] =
	    "SELECT DISTINCT j.key FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id,"
	    " json_each(s.attrs) j WHERE m.list_id = ?1 AND s.attrs <> '{}' ORDER BY 1";
	static const char rows_sql[] =
	    "SELECT s.email, s.name, m.mode, m.status, s.attrs FROM memberships m"
	    " JOIN subscribers s ON s.id = m.subscriber_id WHERE m.list_id = ?1"
	    " ORDER BY m.subscriber_id";
	static const char *const fixed[] = {"email", "name", "mode", "status"};
	char **keys = NULL;
	size_t nkeys = 0, cap = 0;
	struct buf line;
	sqlite3_stmt *st;
	int64_t n = 0;
	int rc, ret = -1;

	buf_init(&line, BUF_NOLIMIT);
	if (rows)
		*rows = 0;
	int64_t lid = subs_list_id(s, list ? list : SUBS_DEFAULT_LIST, err);
	if (lid < 0)
		return -1;
	if ((st = store_stmt(s, keys_sql, err)) == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, lid);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (nkeys == cap) {
			cap = cap ? cap * 2 : 8;
			keys = xreallocarray(keys, cap, sizeof *keys);
		}
		keys[nkeys++] = xstrdup((const char *)sqlite3_column_text(st, 0));
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		store_fail(s, err, "reading attribute names");
		goto out;
	}

	for (size_t i = 0; i < 4; i++)
		put_field(&line, fixed[i], strlen(fixed[i]), i == 0);
	for (size_t i = 0; i < nkeys; i++)
		put_field(&line, keys[i], strlen(keys[i]), false);
	buf_add(&line, "\r\n", 2);
	fwrite(line.data, 1, line.len, f);

	if ((st = store_stmt(s, rows_sql, err)) == NULL)
		goto out;
	sqlite3_bind_int64(st, 1, lid);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		buf_reset(&line);
		for (int c = 0; c < 4; c++)
			put_field(&line, (const char *)sqlite3_column_text(st, c),
			          (size_t)sqlite3_column_bytes(st, c), c == 0);
		if (nkeys) {
			const char *a = (const char *)sqlite3_column_text(st, 4);
			struct json_object *o = strcmp(a, "{}") ? json_tokener_parse(a) : NULL;
			for (size_t k = 0; k < nkeys; k++) {
				struct json_object *v = NULL;
				const char *t = "";
				if (o && json_object_object_get_ex(o, keys[k], &v) && v)
					t = json_object_get_string(v);
				put_field(&line, t, strlen(t), false);
			}
			json_object_put(o);
		}
		buf_add(&line, "\r\n", 2);
		if (fwrite(line.data, 1, line.len, f) != line.len)
			break;
		n++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		store_fail(s, err, "reading subscribers");
		goto out;
	}
	if (fflush(f) != 0 || ferror(f)) {
		err_sys(err, "writing the export");
		goto out;
	}
	if (rows)
		*rows = n;
	ret = 0;
out:
	for (size_t i = 0; i < nkeys; i++)
		free(keys[i]);
	free(keys);
	buf_free(&line);
	return ret;
}
