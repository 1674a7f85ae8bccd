/*
 * Article bodies: Markdown (GitHub-flavoured, through cmark-gfm) to HTML,
 * plain text and a summary. Raw HTML and unsafe links never reach an output.
 *
 * With MD_RAW_EXPORT the body is the raw text export of the printed
 * magazine, and the rules of docs/issue-format.md apply: one paragraph per
 * line, QR-code lines are dropped, "图 N:"/"表 N:" lines and lines after an
 * image trace are captions, page breaks are joined, numbered lines are lists
 * or numbered subheadings, short title-like lines are subheadings, "来源："
 * lines are bylines, a "相关阅读" line starts a related-reading box, $…$ math
 * is made readable.
 */
#ifndef MATRIX_MD_H
#define MATRIX_MD_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

enum {
	MD_RAW_EXPORT = 0x1, /* the raw text export of the printed magazine */
	MD_COLOPHON = 0x2,   /* with MD_RAW_EXPORT: back matter, no subheadings or captions */
};

/* Something the raw export rules had to guess: line of the source (1-based). */
struct md_warning {
	int line;
	char *msg;
};

struct md_opts {
	unsigned flags;
	/* Absolute URL prefix for images referenced by relative path, ending in
	 * '/' ("https://…/issues/60/"); NULL leaves them relative. */
	const char *asset_base;
	/* The line of the file that the source's first line is, for warnings
	 * (0: count from 1). */
	int first_line;
	/* Whether the issue holds the image at a relative path (NULL: every one
	 * is kept). One it does not hold is left out of the HTML and the text, so
	 * that nobody sees a broken image; alone in its paragraph with a figure
	 * caption for its text ("图 3：…"), the caption stays, marked as for a
	 * figure not in the export. It is listed in assets all the same. */
	bool (*have_image)(void *arg, const char *path);
	void *image_arg;
};

struct md_doc {
	char *html;    /* HTML fragment; our own blocks carry class="mx-…" */
	char *text;    /* plain text for text/plain mail, every link target kept */
	char *summary; /* first paragraph as text, at most 200 characters */
	char **assets; /* relative image paths referenced (to copy), nassets */
	size_t nassets;
	struct md_warning *warnings; /* raw exports: the guesses made, nwarnings */
	size_t nwarnings;
};

/* Registers the cmark-gfm extensions; call once from main() before threads. */
void md_init(void);
/* Releases cmark-gfm's plugin registry (for leak checkers); call at exit. */
void md_shutdown(void);

/* Renders len bytes of src. Fills every field of out (md_doc_free). */
int md_render(const char *src, size_t len, const struct md_opts *o, struct md_doc *out,
              struct err *err);
void md_doc_free(struct md_doc *d);

/* Plain text wrapped to width display columns, broken where UAX #14 allows
 * (libunistring); ASCII runs without spaces (URLs) are never broken.
 * Appends to out. */
struct buf;
void md_wrap(struct buf *out, const char *text, size_t width, const char *indent);

#endif
