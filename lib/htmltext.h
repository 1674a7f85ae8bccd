/*
 * The words of an HTML document, as plain text: what a reader would see,
 * for code that reads mail written only in HTML (Office 365 and Exchange
 * notices). libxml2's HTML parser does the hard part (tag soup, entities,
 * comments, CDATA); this walks its tree. libxml2 2.9 knows the HTML 4
 * entities and every numeric reference, not HTML5's additions (&commat;).
 */
#ifndef MATRIX_HTMLTEXT_H
#define MATRIX_HTMLTEXT_H

#include <stddef.h>

#include "buf.h"

/*
 * Appends the text of html (len bytes of UTF-8, need not be NUL-terminated)
 * to out: script, style and the document head are left out; block elements
 * (p, div, tr, li, headings, br …) start and end a line; other whitespace
 * runs become one space, except inside pre; a no-break space is a space.
 * The text is valid UTF-8 without control characters but LF and TAB.
 * Returns 0, or -1 when libxml2 finds no document in the input (nothing
 * appended) or out is full (what fitted is kept).
 */
int html_text(struct buf *out, const char *html, size_t len);

#endif
