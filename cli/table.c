/* Plain-text tables for humans: columns padded by display width, so that
 * Chinese names (two columns per character) line up; control and bidi
 * characters removed. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "utf8.h"
#include "xmalloc.h"

struct table {
	int ncols;
	size_t nrows, cap;
	char **cells; /* nrows × ncols, row 0 = header */
};

static void add_row(struct table *t, va_list ap)
{
	if (t->nrows == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 16;
		t->cells = xreallocarray(t->cells, t->cap * (size_t)t->ncols, sizeof *t->cells);
	}
	for (int i = 0; i < t->ncols; i++) {
		const char *s = va_arg(ap, const char *);
		/* a cell holds what subscribers typed: no control may reorder the line */
		t->cells[t->nrows * (size_t)t->ncols + (size_t)i] =
		    utf8_clean_dup(s ? s : "", UTF8_NO_BIDI);
	}
	t->nrows++;
}

struct table *table_new(int ncols, ...)
{
	struct table *t = xcalloc(1, sizeof *t);
	t->ncols = ncols;
	va_list ap;
	va_start(ap, ncols);
	add_row(t, ap);
	va_end(ap);
	return t;
}

void table_row(struct table *t, ...)
{
	va_list ap;
	va_start(ap, t);
	add_row(t, ap);
	va_end(ap);
}

void table_print(struct table *t, FILE *f)
{
	size_t *w = xcalloc((size_t)t->ncols, sizeof *w);
	for (size_t r = 0; r < t->nrows; r++)
		for (int i = 0; i < t->ncols; i++) {
			size_t cw = utf8_width(t->cells[r * (size_t)t->ncols + (size_t)i]);
			if (cw > w[i])
				w[i] = cw;
		}
	for (size_t r = 0; r < t->nrows; r++) {
		/* pad each cell but the last non-empty one: no trailing blanks */
		int last = t->ncols - 1;
		while (last > 0 && t->cells[r * (size_t)t->ncols + (size_t)last][0] == '\0')
			last--;
		for (int i = 0; i <= last; i++) {
			const char *s = t->cells[r * (size_t)t->ncols + (size_t)i];
			fputs(s, f);
			if (i < last)
				for (size_t pad = utf8_width(s); pad < w[i] + 2; pad++)
					fputc(' ', f);
		}
		fputc('\n', f);
	}
	for (size_t k = 0; k < t->nrows * (size_t)t->ncols; k++)
		free(t->cells[k]);
	free(t->cells);
	free(w);
	free(t);
}
