/*
 * HTML to plain text (see htmltext.h): libxml2 parses, we walk the tree
 * without recursion (a hostile document may nest deeply) and lay the text
 * out the way a browser would break it into lines. Whitespace follows the
 * HTML rule: runs collapse to one space outside pre.
 */
#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include <libxml/HTMLparser.h>

#include "htmltext.h"
#include "utf8.h"

enum role { R_INLINE, R_SKIP, R_LINE, R_PARA, R_CELL, R_BREAK, R_PRE };

struct layout {
	struct buf text;
	int pre;    /* depth of pre elements we are in */
	bool space; /* whitespace seen since the last word */
};

static enum role role_of(const xmlNode *n)
{
	/* clang-format off */
	static const char *const skip[] = {"script", "style", "head", "template", NULL};
	static const char *const para[] = {"p", "table", "blockquote", "ul", "ol", "dl", "h1",
		"h2", "h3", "h4", "h5", "h6", "hr", "address", "fieldset", "figure", NULL};
	static const char *const line[] = {"div", "tr", "li", "dt", "dd", "caption", "center",
		"section", "article", "aside", "header", "footer", "main", "nav", "form",
		"tbody", "thead", "tfoot", "figcaption", "details", "summary", "menu", "dir",
		"body", "html", NULL};
	/* clang-format on */
	if (n->type != XML_ELEMENT_NODE || n->name == NULL)
		return R_INLINE;
	const char *name = (const char *)n->name; /* the HTML parser lowercases it */
	if (strcmp(name, "br") == 0)
		return R_BREAK;
	if (strcmp(name, "pre") == 0)
		return R_PRE;
	if (strcmp(name, "td") == 0 || strcmp(name, "th") == 0)
		return R_CELL;
	for (const char *const *p = skip; *p; p++)
		if (strcmp(name, *p) == 0)
			return R_SKIP;
	for (const char *const *p = para; *p; p++)
		if (strcmp(name, *p) == 0)
			return R_PARA;
	for (const char *const *p = line; *p; p++)
		if (strcmp(name, *p) == 0)
			return R_LINE;
	return R_INLINE;
}

static size_t trailing_newlines(const struct buf *b)
{
	size_t n = 0;
	while (n < b->len && b->data[b->len - 1 - n] == '\n')
		n++;
	return n;
}

/* Ends the current line; want 2 leaves a blank line (a paragraph break). */
static void new_line(struct layout *l, size_t want)
{
	l->space = false;
	while (l->text.len > 0 && l->text.data[l->text.len - 1] == ' ')
		buf_truncate(&l->text, l->text.len - 1);
	if (l->text.len == 0)
		return;
	for (size_t have = trailing_newlines(&l->text); have < want; have++)
		buf_addc(&l->text, '\n');
}

static void add_words(struct layout *l, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		bool nbsp = p[0] == 0xc2 && p[1] == 0xa0;
		if (l->pre > 0) {
			if (*p == '\r')
				continue;
			buf_addc(&l->text, nbsp ? ' ' : (char)*p);
			p += nbsp;
			continue;
		}
		if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || nbsp) {
			p += nbsp;
			l->space = true;
			continue;
		}
		if (l->space && l->text.len > 0 && l->text.data[l->text.len - 1] != '\n')
			buf_addc(&l->text, ' ');
		l->space = false;
		buf_addc(&l->text, (char)*p);
	}
}

/* Where an element of role r starts or ends: a blank line around a
 * paragraph (pre too), a line break around a line, a space between cells. */
static void edge(struct layout *l, enum role r)
{
	if (r == R_PARA || r == R_PRE)
		new_line(l, 2);
	else if (r == R_LINE)
		new_line(l, 1);
	else if (r == R_CELL)
		l->space = true;
}

/* Returns whether to descend into n's children. */
static bool enter(struct layout *l, const xmlNode *n)
{
	if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) {
		if (n->content)
			add_words(l, (const char *)n->content);
		return false;
	}
	enum role r = role_of(n);
	switch (r) {
	case R_SKIP:
		return false;
	case R_BREAK:
		l->space = false;
		while (l->text.len > 0 && l->text.data[l->text.len - 1] == ' ')
			buf_truncate(&l->text, l->text.len - 1);
		if (trailing_newlines(&l->text) < 2)
			buf_addc(&l->text, '\n');
		return false;
	default:
		l->pre += r == R_PRE;
		edge(l, r);
		break;
	}
	return n->type == XML_ELEMENT_NODE || n->type == XML_DOCUMENT_NODE ||
	       n->type == XML_HTML_DOCUMENT_NODE;
}

static void leave(struct layout *l, const xmlNode *n)
{
	enum role r = role_of(n);
	if (r == R_PRE)
		l->pre--;
	edge(l, r);
}

int html_text(struct buf *out, const char *html, size_t len)
{
	if (len == 0 || len > INT_MAX)
		return -1;
	htmlDocPtr doc = htmlReadMemory(html, (int)len, NULL, "UTF-8",
	                                HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
	                                    HTML_PARSE_NONET | HTML_PARSE_NOIMPLIED);
	if (doc == NULL)
		return -1;
	struct layout l = {.pre = 0};
	buf_init(&l.text, out->max ? out->max : BUF_NOLIMIT);
	xmlNode *root = (xmlNode *)doc, *n = root;
	for (;;) {
		if (enter(&l, n) && n->children) {
			n = n->children;
			continue;
		}
		for (;;) {
			if (n != root)
				leave(&l, n);
			if (n == root || n->next) {
				n = n == root ? NULL : n->next;
				break;
			}
			n = n->parent;
		}
		if (n == NULL)
			break;
	}
	xmlFreeDoc(doc);
	new_line(&l, 1);
	while (l.text.len > 1 && l.text.data[l.text.len - 2] == '\n')
		buf_truncate(&l.text, l.text.len - 1);
	int rc = utf8_clean(out, l.text.data ? l.text.data : "", l.text.len, UTF8_KEEP_NL);
	buf_free(&l.text);
	return rc < 0 ? -1 : 0;
}
