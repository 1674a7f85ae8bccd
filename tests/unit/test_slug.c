/*
 * The slug of an article names its page and must never change for a title
 * whose words stay the same: a changed slug breaks every link readers and
 * feed readers already hold. tests/data/slugs.golden holds the slugs of
 * every issue file under tests/data/issues/ and of the shipped example
 * (examples/issues/ is also the demo's drop folder: what an admin adds
 * there is theirs, not the golden file's), made
 * once by this program (`test_slug --generate > tests/data/slugs.golden`)
 * and kept since:
 *
 *   article FILE INDEX SLUG    the slugs of the parsed issue (clashes included)
 *   line FILE SLUG TEXT        issue_slug() of every line, as if it were a title
 *
 * Fields are separated by TAB. Every row must still hold: any refactoring of
 * the text helpers keeps every slug. A new issue file adds rows (generate,
 * then check with git diff that rows were only added); an edited file keeps
 * its old rows, which still hold as long as the texts do.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "issue.h"
#include "md.h"
#include "utf8.h"

#define GOLDEN "tests/data/slugs.golden"

static const char *const dirs[] = {"tests/data/issues/", "tests/data/issues/bad/"};
#define EXAMPLE "examples/issues/matrix-060.txt"

static const struct issue_opts opts = {16 << 20, "Matrix", "zh-CN", "https://news.example.org/m/"};

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The issue files, sorted, as "DIR/NAME"; *n of them. */
static char **issue_files(size_t *n)
{
	char **v = NULL;
	*n = 0;
	for (size_t d = 0; d < sizeof dirs / sizeof dirs[0]; d++) {
		DIR *dir = opendir(dirs[d]);
		if (dir == NULL)
			continue;
		struct dirent *de;
		while ((de = readdir(dir)) != NULL) {
			size_t l = strlen(de->d_name);
			if (de->d_name[0] == '.' ||
			    !((l > 3 && strcmp(de->d_name + l - 3, ".md") == 0) ||
			      (l > 4 && strcmp(de->d_name + l - 4, ".txt") == 0)))
				continue;
			v = realloc(v, (*n + 1) * sizeof *v);
			size_t sz = strlen(dirs[d]) + l + 1;
			v[*n] = malloc(sz);
			snprintf(v[*n], sz, "%s%s", dirs[d], de->d_name);
			(*n)++;
		}
		closedir(dir);
	}
	v = realloc(v, (*n + 1) * sizeof *v);
	v[(*n)++] = strdup(EXAMPLE);
	qsort(v, *n, sizeof *v, by_name);
	return v;
}

/* Every row for one file, appended to out. */
static void rows_of(const char *path, struct buf *out)
{
	struct issue *is = NULL;
	struct err e;
	err_clear(&e);
	if (issue_load(path, &opts, &is, &e) == 0) {
		for (size_t i = 0; i < is->narticles; i++)
			buf_printf(out, "article\t%s\t%d\t%s\n", path, is->articles[i].index,
			           is->articles[i].slug);
		issue_free(is);
	}
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return;
	char line[4096];
	while (fgets(line, sizeof line, f) != NULL) {
		size_t l = strcspn(line, "\r\n");
		line[l] = 0;
		/* Only what could be a title: valid UTF-8, no NUL, no TAB (the
		 * field separator), not blank. */
		if (l == 0 || strlen(line) != l || strchr(line, '\t') || !utf8_valid(line, l, NULL))
			continue;
		char *slug = issue_slug(line);
		buf_printf(out, "line\t%s\t%s\t%s\n", path, slug, line);
		free(slug);
	}
	fclose(f);
}

static char *all_rows(void)
{
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	size_t n;
	char **files = issue_files(&n);
	for (size_t i = 0; i < n; i++) {
		rows_of(files[i], &b);
		free(files[i]);
	}
	free(files);
	return buf_detach(&b);
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	char chunk[8192];
	size_t k;
	while ((k = fread(chunk, 1, sizeof chunk, f)) > 0)
		buf_add(&b, chunk, k);
	fclose(f);
	return buf_detach(&b);
}

/* The slug of article index of the issue at path; allocated, or NULL. */
static char *article_slug(const char *path, int index)
{
	struct issue *is = NULL;
	struct err e;
	err_clear(&e);
	if (issue_load(path, &opts, &is, &e) < 0)
		fail_msg("%s no longer parses: %s", path, e.msg);
	char *s = NULL;
	for (size_t i = 0; i < is->narticles; i++)
		if (is->articles[i].index == index)
			s = strdup(is->articles[i].slug);
	issue_free(is);
	return s;
}

static void test_golden(void **state)
{
	(void)state;
	char *want = read_all(GOLDEN);
	if (want == NULL)
		fail_msg("%s is missing; make it with test_slug --generate", GOLDEN);
	size_t rows = 0;
	for (char *row = want, *next; *row; row = next) {
		next = row + strcspn(row, "\n");
		if (*next)
			*next++ = 0;
		char *f[5] = {0};
		size_t nf = 0;
		for (char *p = row; nf < 5; nf++) {
			f[nf] = p;
			size_t l = strcspn(p, "\t");
			if (p[l] == 0 || nf == 3) {
				nf++;
				break;
			}
			p[l] = 0;
			p += l + 1;
		}
		char *got = NULL;
		const char *expect = NULL, *what = NULL;
		if (nf == 4 && strcmp(f[0], "article") == 0) {
			got = article_slug(f[1], (int)strtol(f[2], NULL, 10));
			expect = f[3], what = f[2];
		} else if (nf == 4 && strcmp(f[0], "line") == 0) {
			got = issue_slug(f[3]);
			expect = f[2], what = f[3];
		} else {
			fail_msg("%s: a bad row: %s", GOLDEN, row);
		}
		if (got == NULL || strcmp(got, expect) != 0)
			fail_msg("%s %s: the slug of \"%s\" was %s, is now %s", f[0], f[1], what,
			         expect, got ? got : "(no such article)");
		free(got);
		rows++;
	}
	assert_true(rows > 500);
	free(want);
}

static void test_golden_covers_data(void **state)
{
	(void)state;
	char *want = read_all(GOLDEN);
	assert_non_null(want);
	size_t n;
	char **files = issue_files(&n);
	assert_true(n >= 10);
	for (size_t i = 0; i < n; i++) {
		struct buf tab;
		buf_init(&tab, BUF_NOLIMIT);
		buf_printf(&tab, "\t%s\t", files[i]);
		if (strstr(want, buf_str(&tab)) == NULL &&
		    strcmp(files[i] + strlen(files[i]) - 9, "empty.txt"))
			fail_msg("%s has no rows in %s", files[i], GOLDEN);
		buf_free(&tab);
		free(files[i]);
	}
	free(files);
	free(want);
}

int main(int argc, char **argv)
{
	md_init();
	if (argc == 2 && strcmp(argv[1], "--generate") == 0) {
		char *rows = all_rows();
		fputs(rows, stdout);
		free(rows);
		return ferror(stdout) || fflush(stdout) ? 1 : 0;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_golden),
	    cmocka_unit_test(test_golden_covers_data),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
