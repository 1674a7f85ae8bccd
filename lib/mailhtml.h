/*
 * Inline styles for the article HTML in mail. Mail clients (Gmail above
 * all) drop or ignore <style> in places, so every element of the rendered
 * Markdown gets its look in a style attribute, plus a class hook for the
 * dark-mode rules of the mail template. The input is our own HTML (cmark
 * output and our mx-… blocks), well-formed with escaped attribute values.
 */
#ifndef MATRIX_MAILHTML_H
#define MATRIX_MAILHTML_H

#include "buf.h"

/* Appends html with style attributes added; -1 only when out is full. */
int mailhtml_inline(const char *html, struct buf *out);

#endif
