/*
 * RSS 2.0 and Atom 1.0 through libxml2's xmlTextWriter (see feed.h for the
 * shape). The writer's output goes straight into the caller's capped buffer
 * through an I/O callback, so the cap bounds the document; libxml2's error
 * messages are captured for the duration of one call instead of going to
 * stderr, since lib/ never prints. Every value is cleaned here, at the last
 * step before the writer, so no caller can forget it.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/globals.h>
#include <libxml/parser.h>
#include <libxml/xmlIO.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlwriter.h>

#include "feed.h"
#include "text.h"
#include "utf8.h"
#include "xmalloc.h"

#ifndef MATRIXD_VERSION
#define MATRIXD_VERSION "dev"
#endif

#define NS_ATOM    "http://www.w3.org/2005/Atom"
#define NS_CONTENT "http://purl.org/rss/1.0/modules/content/"
#define NS_DC      "http://purl.org/dc/elements/1.1/"

/* 9999-12-31T23:59:59Z: RFC 3339 and the RSS validator want four-digit years. */
#define FEED_TIME_MAX 253402300799LL

struct feed_writer {
	xmlTextWriterPtr w;
	struct buf *out;
	size_t start;     /* out->len on entry: restored on failure */
	bool full;        /* out's cap refused a write */
	const char *at;   /* element being written, for the error message */
	char xmlerr[256]; /* first message libxml2 reported */
	struct buf line;  /* scratch: a cleaned one-line value (titles, attributes) */
	struct buf body;  /* scratch: a cleaned body, alive while attributes are written */
	struct buf esc;   /* scratch: a body escaped as HTML */
};

/* --- dates ------------------------------------------------------------------ */

static const char wday_names[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char month_names[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static void utc(time_t t, struct tm *tm)
{
	if ((long long)t < 0)
		t = 0;
	else if ((long long)t > FEED_TIME_MAX)
		t = (time_t)FEED_TIME_MAX;
	if (gmtime_r(&t, tm) == NULL) {
		/* Only reachable with a 32-bit time_t: fall back to the epoch. */
		t = 0;
		gmtime_r(&t, tm);
	}
}

void feed_rfc822_date(time_t t, char out[40])
{
	struct tm tm;
	utc(t, &tm);
	snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d GMT", wday_names[tm.tm_wday], tm.tm_mday,
	         month_names[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

void feed_rfc3339(time_t t, char out[32])
{
	struct tm tm;
	utc(t, &tm);
	snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* --- cleaning ----------------------------------------------------------------- */

static const char *str(const char *s)
{
	return s ? s : "";
}

/*
 * One line for a title, a name or an attribute: utf8_clean() without
 * UTF8_KEEP_NL turns LF, CR and TAB into spaces; runs of spaces then become
 * one and the ends are trimmed, so a title wrapped in the source reads as one
 * line in every reader.
 */
static const char *clean_line(struct feed_writer *fw, const char *s)
{
	buf_reset(&fw->line);
	utf8_clean(&fw->line, str(s), strlen(str(s)), UTF8_XML);
	char *p = fw->line.data;
	size_t j = 0;
	if (p == NULL)
		return "";
	for (size_t i = 0; i < fw->line.len; i++) {
		if (p[i] == ' ' && (j == 0 || p[j - 1] == ' '))
			continue;
		p[j++] = p[i];
	}
	if (j > 0 && p[j - 1] == ' ')
		j--;
	buf_truncate(&fw->line, j);
	return buf_str(&fw->line);
}

/* A body keeps its line breaks and tabs (UTF8_KEEP_NL); CR becomes a space. */
static const char *clean_body(struct feed_writer *fw, const char *s)
{
	buf_reset(&fw->body);
	utf8_clean(&fw->body, str(s), strlen(str(s)), UTF8_KEEP_NL | UTF8_XML);
	return buf_str(&fw->body);
}

/* Plain text as HTML text: RSS readers render <description> as HTML. */
static const char *feed_html_escape(struct feed_writer *fw, const char *s)
{
	buf_reset(&fw->esc);
	html_escape(&fw->esc, s, strlen(s));
	return buf_str(&fw->esc);
}

/* --- the writer ----------------------------------------------------------------- */

static int out_write(void *ctx, const char *p, int len)
{
	struct feed_writer *fw = ctx;
	if (len < 0 || buf_add(fw->out, p, (size_t)len) < 0) {
		fw->full = true;
		return -1;
	}
	return len;
}

static int out_close(void *ctx)
{
	(void)ctx;
	return 0;
}

static void on_xml_error(void *ctx, xmlErrorPtr e)
{
	struct feed_writer *fw = ctx;
	if (fw->xmlerr[0] != '\0' || e == NULL || e->message == NULL)
		return;
	snprintf(fw->xmlerr, sizeof fw->xmlerr, "%s", e->message);
	size_t n = strlen(fw->xmlerr);
	while (n > 0 && (fw->xmlerr[n - 1] == '\n' || fw->xmlerr[n - 1] == ' '))
		fw->xmlerr[--n] = '\0';
}

static int start(struct feed_writer *fw, const char *name)
{
	fw->at = name;
	return xmlTextWriterStartElement(fw->w, BAD_CAST name) < 0 ? -1 : 0;
}

static int end(struct feed_writer *fw)
{
	return xmlTextWriterEndElement(fw->w) < 0 ? -1 : 0;
}

/* An attribute with a cleaned one-line value. */
static int attr(struct feed_writer *fw, const char *name, const char *value)
{
	const char *v = clean_line(fw, value);
	return xmlTextWriterWriteAttribute(fw->w, BAD_CAST name, BAD_CAST v) < 0 ? -1 : 0;
}

/*
 * Text is written as escaped character data (xmlTextWriterWriteString),
 * never CDATA: "]]>" in a CDATA section ends it and breaks the document
 * (docs/libraries.md, libxml2). Indentation never lands inside text: the writer indents
 * only before tags that follow a tag.
 */
static int text(struct feed_writer *fw, const char *s)
{
	return xmlTextWriterWriteString(fw->w, BAD_CAST s) < 0 ? -1 : 0;
}

static int el_line(struct feed_writer *fw, const char *name, const char *s)
{
	if (start(fw, name) < 0 || text(fw, clean_line(fw, s)) < 0 || end(fw) < 0)
		return -1;
	return 0;
}

static int el_rfc822(struct feed_writer *fw, const char *name, time_t t)
{
	char d[40];
	feed_rfc822_date(t, d);
	return el_line(fw, name, d);
}

static int el_rfc3339(struct feed_writer *fw, const char *name, time_t t)
{
	char d[32];
	feed_rfc3339(t, d);
	return el_line(fw, name, d);
}

/* <name type="TYPE">body</name>, or without the attribute when type is NULL. */
static int el_body(struct feed_writer *fw, const char *name, const char *type, const char *body)
{
	if (start(fw, name) < 0 || (type && attr(fw, "type", type) < 0) || text(fw, body) < 0 ||
	    end(fw) < 0)
		return -1;
	return 0;
}

/* <link rel=… type=… href=…/> (Atom, and atom:link in RSS). */
static int el_link(struct feed_writer *fw, const char *name, const char *rel, const char *type,
                   const char *href)
{
	if (start(fw, name) < 0 || attr(fw, "href", href) < 0 || attr(fw, "rel", rel) < 0 ||
	    attr(fw, "type", type) < 0 || end(fw) < 0)
		return -1;
	return 0;
}

static bool is_empty_line(struct feed_writer *fw, const char *s)
{
	return clean_line(fw, s)[0] == '\0';
}

static time_t entry_updated(const struct feed_entry *e)
{
	return e->updated > e->published ? e->updated : e->published;
}

static time_t feed_updated(const struct feed_meta *m, const struct feed_entry *e, size_t n)
{
	time_t t = m->updated;
	if (t != 0)
		return t;
	for (size_t i = 0; i < n; i++)
		if (entry_updated(&e[i]) > t)
			t = entry_updated(&e[i]);
	return t;
}

static const char *feed_author(const struct feed_meta *m)
{
	return str(m->author)[0] ? m->author : str(m->title);
}

/* --- RSS 2.0 -------------------------------------------------------------------- */

static int rss_item(struct feed_writer *fw, const struct feed_meta *m, const struct feed_entry *e)
{
	const char *author = str(e->author)[0] ? e->author : feed_author(m);
	if (start(fw, "item") < 0 || el_line(fw, "title", e->title) < 0 ||
	    el_line(fw, "link", e->link) < 0)
		return -1;
	if (start(fw, "guid") < 0 || attr(fw, "isPermaLink", "true") < 0 ||
	    text(fw, clean_line(fw, e->id)) < 0 || end(fw) < 0)
		return -1;
	if (el_rfc822(fw, "pubDate", e->published) < 0)
		return -1;
	/* RSS <author> must be an address; a name goes into dc:creator. */
	if (!is_empty_line(fw, author) && el_line(fw, "dc:creator", author) < 0)
		return -1;
	if (!is_empty_line(fw, e->section) && el_line(fw, "category", e->section) < 0)
		return -1;
	/* Optional in RSS (the item has a title); an empty one only draws warnings. */
	const char *summary = clean_body(fw, e->summary);
	if (summary[0] && el_body(fw, "description", NULL, feed_html_escape(fw, summary)) < 0)
		return -1;
	if (el_body(fw, "content:encoded", NULL, clean_body(fw, e->html)) < 0)
		return -1;
	return end(fw);
}

static int rss_doc(struct feed_writer *fw, const struct feed_meta *m, const struct feed_entry *e,
                   size_t n)
{
	const char *desc = str(m->subtitle)[0] ? m->subtitle : m->title;
	fw->at = "rss";
	if (xmlTextWriterStartDocument(fw->w, NULL, "UTF-8", NULL) < 0)
		return -1;
	if (start(fw, "rss") < 0 || attr(fw, "version", "2.0") < 0 ||
	    attr(fw, "xmlns:content", NS_CONTENT) < 0 || attr(fw, "xmlns:dc", NS_DC) < 0 ||
	    attr(fw, "xmlns:atom", NS_ATOM) < 0)
		return -1;
	if (start(fw, "channel") < 0 || el_line(fw, "title", m->title) < 0 ||
	    el_line(fw, "link", m->site_url) < 0 || el_line(fw, "description", desc) < 0 ||
	    el_link(fw, "atom:link", "self", "application/rss+xml", m->rss_url) < 0)
		return -1;
	if (!is_empty_line(fw, m->language) && el_line(fw, "language", m->language) < 0)
		return -1;
	if (!is_empty_line(fw, m->author_email)) {
		/* RSS 2.0: "the email address … of the person responsible", "addr (name)". */
		char *who = xasprintf("%s (%s)", m->author_email, feed_author(m));
		int r = el_line(fw, "managingEditor", who);
		free(who);
		if (r < 0)
			return -1;
	}
	if (el_rfc822(fw, "lastBuildDate", feed_updated(m, e, n)) < 0 ||
	    el_line(fw, "generator", "matrixd " MATRIXD_VERSION) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (rss_item(fw, m, &e[i]) < 0)
			return -1;
	fw->at = "rss";
	return xmlTextWriterEndDocument(fw->w) < 0 ? -1 : 0;
}

/* --- Atom 1.0 ------------------------------------------------------------------- */

static int atom_author(struct feed_writer *fw, const char *name, const char *email)
{
	if (start(fw, "author") < 0 || el_line(fw, "name", name) < 0)
		return -1;
	if (!is_empty_line(fw, email) && el_line(fw, "email", email) < 0)
		return -1;
	return end(fw);
}

static int atom_entry(struct feed_writer *fw, const struct feed_entry *e)
{
	if (start(fw, "entry") < 0 || el_line(fw, "id", e->id) < 0 ||
	    el_line(fw, "title", e->title) < 0 ||
	    el_link(fw, "link", "alternate", "text/html", e->link) < 0 ||
	    el_rfc3339(fw, "published", e->published) < 0 ||
	    el_rfc3339(fw, "updated", entry_updated(e)) < 0)
		return -1;
	if (!is_empty_line(fw, e->author) && atom_author(fw, e->author, NULL) < 0)
		return -1;
	if (!is_empty_line(fw, e->section) &&
	    (start(fw, "category") < 0 || attr(fw, "term", e->section) < 0 || end(fw) < 0))
		return -1;
	/* RFC 4287 §4.1.1.1: summary is optional when there is inline content. */
	const char *summary = clean_body(fw, e->summary);
	if (summary[0] && el_body(fw, "summary", "text", summary) < 0)
		return -1;
	if (el_body(fw, "content", "html", clean_body(fw, e->html)) < 0)
		return -1;
	return end(fw);
}

static int atom_doc(struct feed_writer *fw, const struct feed_meta *m, const struct feed_entry *e,
                    size_t n)
{
	fw->at = "feed";
	if (xmlTextWriterStartDocument(fw->w, NULL, "UTF-8", NULL) < 0)
		return -1;
	if (xmlTextWriterStartElementNS(fw->w, NULL, BAD_CAST "feed", BAD_CAST NS_ATOM) < 0)
		return -1;
	if (!is_empty_line(fw, m->language) && attr(fw, "xml:lang", m->language) < 0)
		return -1;
	if (el_line(fw, "id", m->site_url) < 0 || el_line(fw, "title", m->title) < 0)
		return -1;
	if (!is_empty_line(fw, m->subtitle) && el_line(fw, "subtitle", m->subtitle) < 0)
		return -1;
	if (el_rfc3339(fw, "updated", feed_updated(m, e, n)) < 0 ||
	    atom_author(fw, feed_author(m), m->author_email) < 0 ||
	    el_link(fw, "link", "self", "application/atom+xml", m->atom_url) < 0 ||
	    el_link(fw, "link", "alternate", "text/html", m->site_url) < 0)
		return -1;
	if (start(fw, "generator") < 0 || attr(fw, "version", MATRIXD_VERSION) < 0 ||
	    text(fw, "matrixd") < 0 || end(fw) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (atom_entry(fw, &e[i]) < 0)
			return -1;
	fw->at = "feed";
	return xmlTextWriterEndDocument(fw->w) < 0 ? -1 : 0;
}

/* --- driver ----------------------------------------------------------------------- */

static int render(struct buf *out, const struct feed_meta *m, const struct feed_entry *e, size_t n,
                  struct err *err, const char *what,
                  int (*doc)(struct feed_writer *, const struct feed_meta *,
                             const struct feed_entry *, size_t))
{
	struct feed_writer fw = {.out = out, .start = out->len, .at = what};
	xmlOutputBufferPtr ob = NULL;
	xmlStructuredErrorFunc saved_fn;
	void *saved_ctx;
	int rc = -1;

	xmlInitParser();
	saved_fn = xmlStructuredError;
	saved_ctx = xmlStructuredErrorContext;
	xmlSetStructuredErrorFunc(&fw, on_xml_error);
	buf_init(&fw.line, BUF_NOLIMIT);
	buf_init(&fw.body, BUF_NOLIMIT);
	buf_init(&fw.esc, BUF_NOLIMIT);

	ob = xmlOutputBufferCreateIO(out_write, out_close, &fw, NULL);
	if (ob == NULL)
		goto out;
	fw.w = xmlNewTextWriter(ob);
	if (fw.w == NULL) {
		xmlOutputBufferClose(ob);
		goto out;
	}
	/* The writer owns ob from here on. */
	if (xmlTextWriterSetIndent(fw.w, 1) < 0 ||
	    xmlTextWriterSetIndentString(fw.w, BAD_CAST "  ") < 0)
		goto out;
	if (doc(&fw, m, e, n) < 0 || xmlTextWriterFlush(fw.w) < 0)
		goto out;
	rc = 0;
out:
	xmlFreeTextWriter(fw.w);
	xmlSetStructuredErrorFunc(saved_ctx, saved_fn);
	buf_free(&fw.line);
	buf_free(&fw.body);
	buf_free(&fw.esc);
	if (rc == 0 && fw.full)
		rc = -1; /* the final flush inside xmlFreeTextWriter hit the cap */
	if (rc < 0) {
		buf_truncate(out, fw.start);
		if (fw.full)
			err_set(err, ERR_INPUT, "%s feed: larger than the limit of %zu bytes", what,
			        out->max);
		else
			err_set(err, ERR_INTERNAL, "%s feed: libxml2 failed at <%s>: %s", what,
			        fw.at, fw.xmlerr[0] ? fw.xmlerr : "no detail");
	}
	return rc;
}

int feed_rss(struct buf *out, const struct feed_meta *m, const struct feed_entry *e, size_t n,
             struct err *err)
{
	return render(out, m, e, n, err, "RSS", rss_doc);
}

int feed_atom(struct buf *out, const struct feed_meta *m, const struct feed_entry *e, size_t n,
              struct err *err)
{
	return render(out, m, e, n, err, "Atom", atom_doc);
}
