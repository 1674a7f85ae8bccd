/*
 * libFuzzer target for the CSV importer (lib/subs_csv.c, through libcsv)
 * and the addresses it validates (lib/addr.c, libidn2): an import file is
 * whatever an admin was sent, so every byte string must import or be
 * rejected without a crash, a leak or a read past a buffer, into a real
 * SQLite store. And the round trip must hold: what an import stored, the
 * export writes so that importing it again rejects no row.
 *
 * The first byte picks the options (--atomic, --resubscribe, small
 * chunks); the rest is the file. The store lives in a temp directory for
 * the whole run and is emptied after each input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "store.h"
#include "subs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct store *st;

static struct store *store(void)
{
	if (st)
		return st;
	char dir[] = "/tmp/fuzz_csv.XXXXXX";
	struct err e;
	if (mkdtemp(dir) == NULL || store_open(&st, dir, &e) < 0)
		abort();
	return st;
}

/* A file descriptor path holding n bytes (no file system traffic). */
static int memfile(const void *p, size_t n, char *path, size_t pathn)
{
	int fd = memfd_create("csv", MFD_CLOEXEC);
	if (fd < 0 || (n && write(fd, p, n) != (ssize_t)n))
		abort();
	snprintf(path, pathn, "/proc/self/fd/%d", fd);
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct store *s = store();
	struct subs_import_opts o = {0};
	struct subs_import_stats stats;
	struct err e;
	char path[64];

	if (size == 0)
		return 0;
	o.atomic = data[0] & 1;
	o.resubscribe = data[0] & 2;
	o.chunk = data[0] & 4 ? 3 : 0;
	o.actor = "fuzz";
	int fd = memfile(data + 1, size - 1, path, sizeof path);
	int rc = subs_import(s, path, &o, &stats, &e);
	close(fd);

	if (rc == 0 && stats.added > 0) {
		char *out = NULL;
		size_t outn = 0;
		FILE *f = open_memstream(&out, &outn);
		int64_t rows = 0;
		if (f == NULL || subs_export(s, NULL, f, &rows, &e) < 0 || fclose(f) != 0)
			abort();
		struct subs_import_opts again = {.dry_run = true, .actor = "fuzz"};
		fd = memfile(out, outn, path, sizeof path);
		if (subs_import(s, path, &again, &stats, &e) < 0 || stats.rejected != 0 ||
		    stats.rows != rows)
			abort(); /* the export must import back, every row */
		close(fd);
		free(out);
	}
	if (store_exec(s, "DELETE FROM subscribers; DELETE FROM events;", &e) < 0)
		abort();
	return 0;
}
