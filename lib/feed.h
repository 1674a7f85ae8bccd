/*
 * The RSS 2.0 and Atom 1.0 feeds of the archive, written with libxml2's
 * xmlTextWriter, and the two date formats feeds use. Every string is cleaned
 * before it reaches the writer (invalid UTF-8 becomes U+FFFD; C0/C1 controls,
 * DEL, U+FFFE and U+FFFF are dropped), because libxml2 passes characters XML
 * 1.0 forbids straight through and one of them makes feed readers drop the
 * whole feed (docs/libraries.md, libxml2). Single-line fields (titles, names, section,
 * URLs) additionally have every run of whitespace collapsed into one space and
 * are trimmed. HTML goes out as escaped text, never CDATA, so "]]>" in an
 * article cannot break the document.
 *
 * Output shape (pinned by tests/unit/test_feed.c):
 *   RSS  item: title, link, guid isPermaLink="true" (the entry id), pubDate
 *        (published), dc:creator (entry author, else the feed's), category
 *        (omitted when ""), description (the plain-text summary, HTML-escaped
 *        because RSS readers treat description as HTML), content:encoded.
 *        The channel carries managingEditor only when author_email is set:
 *        RSS wants an address there, a bare name fails the W3C validator.
 *   Atom entry: id, title, link rel="alternate", published, updated,
 *        author (only when the entry's author is not ""), category term,
 *        summary type="text", content type="html". The feed id is site_url.
 *
 * The functions use libxml2 and so belong to the main thread (docs/libraries.md, libxml2).
 */
#ifndef MATRIX_FEED_H
#define MATRIX_FEED_H

#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "err.h"

/* NULL string members are treated as "". The strings are borrowed. */
struct feed_entry {
	const char *id; /* stable: permalink URL; Atom <id>, RSS <guid isPermaLink="true"> */
	const char *title;
	const char *link;    /* absolute article URL */
	const char *section; /* category; "" = none */
	const char *summary; /* plain text, <= 200 chars */
	const char *html;    /* full article HTML (fragment) */
	const char *author;  /* "" = use the feed's author */
	time_t published;    /* issue publication date */
	time_t updated;      /* last change (a correction); an earlier value counts as published */
};

struct feed_meta {
	const char *title;        /* site.title, e.g. "Matrix" */
	const char *subtitle;     /* may be ""; RSS falls back to title for its description */
	const char *site_url;     /* site.base_url, ends with '/'; also the Atom feed id */
	const char *rss_url;      /* absolute URL of feed.xml (self link) */
	const char *atom_url;     /* absolute URL of atom.xml (self link) */
	const char *language;     /* "zh-CN" */
	const char *author;       /* feed-level author name; "" falls back to title */
	const char *author_email; /* may be "" */
	time_t updated;           /* newest entry's updated; 0 = computed from the entries */
};

/*
 * Render a whole feed document (UTF-8, XML declaration included), appending it
 * to out; entries appear in the order given (newest first). Return 0, or -1
 * with err set and out unchanged: ERR_INPUT when the document would exceed
 * out's cap, ERR_INTERNAL when libxml2 refuses (its message is in err).
 */
int feed_rss(struct buf *out, const struct feed_meta *m, const struct feed_entry *e, size_t n,
             struct err *err);
int feed_atom(struct buf *out, const struct feed_meta *m, const struct feed_entry *e, size_t n,
              struct err *err);

/*
 * "Sat, 07 Sep 2002 00:00:01 GMT" (RFC 822 §5 with a four-digit year, as
 * RFC 1123 §5.2.14 and RSS 2.0 use it) and "2002-09-07T00:00:01Z" (RFC 3339).
 * Always UTC with English names from fixed tables: neither TZ nor the locale
 * changes the result. Times outside years 1970..9999 are clamped to that range.
 */
void feed_rfc822_date(time_t t, char out[40]);
void feed_rfc3339(time_t t, char out[32]);

#endif
