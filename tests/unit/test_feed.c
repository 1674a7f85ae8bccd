/*
 * Unit tests of lib/feed: RSS 2.0 and Atom 1.0 are re-parsed in-process with
 * libxml2 (XML_PARSE_NONET, no recovery, every parser error fails the test)
 * and checked element by element with XPath; hostile input must come back as
 * exactly the cleaned text; dates must not depend on TZ or the locale. The
 * feeds are also left in build/feedtest/ for a look with xmllint or
 * feedparser.
 */
#include <fcntl.h>
#include <locale.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libxml/parser.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "buf.h"
#include "err.h"
#include "feed.h"
#include "fsutil.h"
#include "xmalloc.h"

extern char **environ;

#define OUT_DIR "build/feedtest"

/* --- helpers -------------------------------------------------------------------- */

static int parse_errors;

static void count_error(void *ctx, xmlErrorPtr e)
{
	(void)ctx;
	parse_errors++;
	fprintf(stderr, "libxml2: line %d: %s", e ? e->line : 0,
	        e && e->message ? e->message : "?\n");
}

/* Strict parse: no recovery, no network, and any error or namespace error fails. */
static xmlDocPtr parse(const char *data, size_t len)
{
	xmlParserCtxtPtr ctx = xmlNewParserCtxt();
	assert_non_null(ctx);
	parse_errors = 0;
	xmlSetStructuredErrorFunc(NULL, count_error);
	xmlDocPtr doc = xmlCtxtReadMemory(ctx, data, (int)len, "feed.xml", NULL, XML_PARSE_NONET);
	int wf = ctx->wellFormed, nswf = ctx->nsWellFormed;
	xmlFreeParserCtxt(ctx);
	xmlSetStructuredErrorFunc(NULL, NULL);
	assert_non_null(doc);
	assert_int_equal(wf, 1);
	assert_int_equal(nswf, 1);
	assert_int_equal(parse_errors, 0);
	return doc;
}

static xmlXPathObjectPtr eval(xmlDocPtr doc, const char *expr)
{
	xmlXPathContextPtr x = xmlXPathNewContext(doc);
	assert_non_null(x);
	xmlXPathRegisterNs(x, BAD_CAST "a", BAD_CAST "http://www.w3.org/2005/Atom");
	xmlXPathRegisterNs(x, BAD_CAST "atom", BAD_CAST "http://www.w3.org/2005/Atom");
	xmlXPathRegisterNs(x, BAD_CAST "content",
	                   BAD_CAST "http://purl.org/rss/1.0/modules/content/");
	xmlXPathRegisterNs(x, BAD_CAST "dc", BAD_CAST "http://purl.org/dc/elements/1.1/");
	xmlXPathObjectPtr o = xmlXPathEvalExpression(BAD_CAST expr, x);
	xmlXPathFreeContext(x);
	if (o == NULL)
		fail_msg("bad XPath %s", expr);
	return o;
}

/* The string value of the first node expr selects ("" when none). */
static char *xs(xmlDocPtr doc, const char *expr)
{
	char *q = xasprintf("string(%s)", expr);
	xmlXPathObjectPtr o = eval(doc, q);
	free(q);
	char *s = xstrdup(o->stringval ? (const char *)o->stringval : "");
	xmlXPathFreeObject(o);
	return s;
}

static int xcount(xmlDocPtr doc, const char *expr)
{
	char *q = xasprintf("count(%s)", expr);
	xmlXPathObjectPtr o = eval(doc, q);
	free(q);
	int n = (int)o->floatval;
	xmlXPathFreeObject(o);
	return n;
}

#define assert_xs(doc, expr, want)                                                                 \
	do {                                                                                       \
		char *got_ = xs((doc), (expr));                                                    \
		if (strcmp(got_, (want)) != 0) {                                                   \
			print_error("%s\n  got  [%s]\n  want [%s]\n", (expr), got_, (want));       \
			free(got_);                                                                \
			fail();                                                                    \
		}                                                                                  \
		free(got_);                                                                        \
	} while (0)

static void save(const char *name, const struct buf *b)
{
	struct err err;
	char *path = xasprintf("%s/%s", OUT_DIR, name);
	assert_int_equal(fs_mkdirs(OUT_DIR, 0755, &err), 0);
	if (fs_write_atomic(path, b->data, b->len, 0644, &err) < 0)
		fail_msg("%s", err.msg);
	free(path);
}

static const struct feed_meta meta = {
    .title = "Matrix",
    .subtitle = "Science and technology, weekly",
    .site_url = "https://matrix.example.org/",
    .rss_url = "https://matrix.example.org/feed.xml",
    .atom_url = "https://matrix.example.org/atom.xml",
    .language = "zh-CN",
    .author = "Matrix",
    .author_email = "",
    .updated = 1709210096, /* 2024-02-29T12:34:56Z */
};

/* Newest first, as the lead passes them. */
static const struct feed_entry entries[] = {
    {
        .id = "https://matrix.example.org/issues/60/swin-v2.html",
        .title = "Swin Transformer V2: 扩展容量与分辨率",
        .link = "https://matrix.example.org/issues/60/swin-v2.html",
        .section = "人工智能",
        .summary = "Scaling up: a < b & \"c\"",
        .html = "<p>Results in <a href=\"https://arxiv.org/abs/2111.09883\">arXiv</a> &amp; "
                "tables.</p>\n<table><tr><td>1</td></tr></table>\n",
        .author = "",
        .published = 1709164800, /* 2024-02-29T00:00:00Z */
        .updated = 1709210096,   /* corrected later that day */
    },
    {
        .id = "https://matrix.example.org/issues/60/no-section.html",
        .title = "No section",
        .link = "https://matrix.example.org/issues/60/no-section.html",
        .section = "",
        .summary = "Plain.",
        .html = "<p>Plain.</p>",
        .author = "Alice Zhang",
        .published = 1709164800,
        .updated = 0, /* never corrected: counts as published */
    },
    {
        .id = "https://matrix.example.org/issues/59/older.html",
        .title = "Older",
        .link = "https://matrix.example.org/issues/59/older.html",
        .section = "物理",
        .summary = "",
        .html = "",
        .author = "",
        .published = 1649980800, /* 2022-04-15T00:00:00Z */
        .updated = 1649980800,
    },
};
#define NENTRIES (sizeof entries / sizeof entries[0])

static void render_rss(struct buf *b, const struct feed_meta *m, const struct feed_entry *e,
                       size_t n)
{
	struct err err;
	err_clear(&err);
	if (feed_rss(b, m, e, n, &err) < 0)
		fail_msg("feed_rss: %s", err.msg);
}

static void render_atom(struct buf *b, const struct feed_meta *m, const struct feed_entry *e,
                        size_t n)
{
	struct err err;
	err_clear(&err);
	if (feed_atom(b, m, e, n, &err) < 0)
		fail_msg("feed_atom: %s", err.msg);
}

/* --- dates ------------------------------------------------------------------------ */

static const struct {
	long long t;
	const char *rfc822, *rfc3339;
} dates[] = {
    {0, "Thu, 01 Jan 1970 00:00:00 GMT", "1970-01-01T00:00:00Z"},
    {1031356801, "Sat, 07 Sep 2002 00:00:01 GMT", "2002-09-07T00:00:01Z"},
    {1649980800, "Fri, 15 Apr 2022 00:00:00 GMT", "2022-04-15T00:00:00Z"},
    {1709210096, "Thu, 29 Feb 2024 12:34:56 GMT", "2024-02-29T12:34:56Z"},
    /* Already 2025-01-01 in Asia/Shanghai: a local-time slip changes every field. */
    {1735689599, "Tue, 31 Dec 2024 23:59:59 GMT", "2024-12-31T23:59:59Z"},
    /* Clamped into years 1970..9999. */
    {-86400, "Thu, 01 Jan 1970 00:00:00 GMT", "1970-01-01T00:00:00Z"},
    {253402300799LL, "Fri, 31 Dec 9999 23:59:59 GMT", "9999-12-31T23:59:59Z"},
    {253402300800LL * 4, "Fri, 31 Dec 9999 23:59:59 GMT", "9999-12-31T23:59:59Z"},
};

/*
 * A locale with German day and month names. Debian ships none compiled
 * unless `locales` is configured, so build one with localedef into
 * build/feedtest/locale and point LOCPATH at it. Returns whether strftime()
 * now really says "Do" for a Thursday; when it cannot, the date tests still
 * run under TZ=Asia/Shanghai and say so.
 */
static int german_locale(void)
{
	const char *name = "de_DE.UTF-8";
	if (setlocale(LC_ALL, name) == NULL) {
		char dir[] = OUT_DIR "/locale";
		char target[] = OUT_DIR "/locale/de_DE.UTF-8";
		struct stat st;
		struct err err;
		if (stat(OUT_DIR "/locale/de_DE.UTF-8/LC_TIME", &st) < 0) {
			char *argv[] = {"localedef", "-i", "de_DE", "-f", "UTF-8", target, NULL};
			pid_t pid;
			int status;
			posix_spawn_file_actions_t fa;
			if (fs_mkdirs(dir, 0755, &err) < 0)
				return 0;
			posix_spawn_file_actions_init(&fa);
			posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
			posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
			int rc = posix_spawnp(&pid, "localedef", &fa, NULL, argv, environ);
			posix_spawn_file_actions_destroy(&fa);
			if (rc != 0 || waitpid(pid, &status, 0) < 0)
				return 0;
		}
		setenv("LOCPATH", dir, 1);
		if (setlocale(LC_ALL, name) == NULL)
			return 0;
	}
	struct tm thu = {.tm_year = 70, .tm_mon = 0, .tm_mday = 1, .tm_wday = 4};
	char day[16];
	strftime(day, sizeof day, "%a", &thu);
	return strcmp(day, "Do") == 0;
}

static void test_dates_ignore_tz_and_locale(void **state)
{
	(void)state;
	setenv("TZ", "Asia/Shanghai", 1);
	tzset();
	/* Proves TZ took effect, so the checks below can fail on a local-time slip. */
	time_t t = 1735689599;
	struct tm lt;
	localtime_r(&t, &lt);
	assert_int_equal(lt.tm_year + 1900, 2025);
	int german = german_locale();
	if (!german)
		print_message("note: no German locale (localedef failed); checked TZ only\n");
	for (size_t i = 0; i < sizeof dates / sizeof dates[0]; i++) {
		char a[40], b[32];
		memset(a, 'x', sizeof a);
		memset(b, 'x', sizeof b);
		feed_rfc822_date((time_t)dates[i].t, a);
		feed_rfc3339((time_t)dates[i].t, b);
		assert_string_equal(a, dates[i].rfc822);
		assert_string_equal(b, dates[i].rfc3339);
	}
	setlocale(LC_ALL, "C");
	unsetenv("TZ");
	tzset();
}

/* --- RSS ---------------------------------------------------------------------------- */

static void test_rss_structure(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	render_rss(&b, &meta, entries, NENTRIES);
	save("feed.xml", &b);
	assert_true(strncmp(b.data, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss", 43) == 0);
	assert_null(strstr(b.data, "CDATA"));
	xmlDocPtr d = parse(b.data, b.len);

	assert_xs(d, "/rss/@version", "2.0");
	assert_xs(d, "/rss/channel/title", "Matrix");
	assert_xs(d, "/rss/channel/link", "https://matrix.example.org/");
	assert_xs(d, "/rss/channel/description", "Science and technology, weekly");
	assert_xs(d, "/rss/channel/language", "zh-CN");
	assert_xs(d, "/rss/channel/lastBuildDate", "Thu, 29 Feb 2024 12:34:56 GMT");
	assert_xs(d, "substring(/rss/channel/generator, 1, 8)", "matrixd ");
	assert_int_equal(xcount(d, "/rss/channel/atom:link"), 1);
	assert_xs(d, "/rss/channel/atom:link/@rel", "self");
	assert_xs(d, "/rss/channel/atom:link/@href", "https://matrix.example.org/feed.xml");
	assert_xs(d, "/rss/channel/atom:link/@type", "application/rss+xml");
	assert_int_equal(xcount(d, "/rss/channel/managingEditor"), 0);

	assert_int_equal(xcount(d, "/rss/channel/item"), 3);
	/* Order as given. */
	assert_xs(d, "/rss/channel/item[1]/title", "Swin Transformer V2: 扩展容量与分辨率");
	assert_xs(d, "/rss/channel/item[2]/title", "No section");
	assert_xs(d, "/rss/channel/item[3]/title", "Older");

	assert_xs(d, "/rss/channel/item[1]/link",
	          "https://matrix.example.org/issues/60/swin-v2.html");
	assert_xs(d, "/rss/channel/item[1]/guid",
	          "https://matrix.example.org/issues/60/swin-v2.html");
	assert_xs(d, "/rss/channel/item[1]/guid/@isPermaLink", "true");
	assert_xs(d, "/rss/channel/item[1]/pubDate", "Thu, 29 Feb 2024 00:00:00 GMT");
	assert_xs(d, "/rss/channel/item[3]/pubDate", "Fri, 15 Apr 2022 00:00:00 GMT");
	assert_xs(d, "/rss/channel/item[1]/category", "人工智能");
	assert_int_equal(xcount(d, "/rss/channel/item[2]/category"), 0);
	assert_xs(d, "/rss/channel/item[3]/category", "物理");
	/* No bare name in <author> (RSS wants an address); dc:creator instead. */
	assert_int_equal(xcount(d, "//item/author"), 0);
	assert_xs(d, "/rss/channel/item[1]/dc:creator", "Matrix");
	assert_xs(d, "/rss/channel/item[2]/dc:creator", "Alice Zhang");
	/* description is HTML to RSS readers: the plain summary arrives HTML-escaped. */
	assert_xs(d, "/rss/channel/item[1]/description",
	          "Scaling up: a &lt; b &amp; &quot;c&quot;");
	assert_xs(d, "/rss/channel/item[1]/content:encoded", entries[0].html);
	assert_xs(d, "/rss/channel/item[2]/content:encoded", "<p>Plain.</p>");
	/* An empty summary leaves no empty description; content is always there. */
	assert_int_equal(xcount(d, "/rss/channel/item[3]/description"), 0);
	assert_int_equal(xcount(d, "/rss/channel/item[3]/content:encoded"), 1);

	xmlFreeDoc(d);
	buf_free(&b);
}

static void test_rss_managing_editor_needs_address(void **state)
{
	(void)state;
	struct feed_meta m = meta;
	m.author_email = "editor@matrix.example.org";
	m.subtitle = "";
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	render_rss(&b, &m, entries, 1);
	xmlDocPtr d = parse(b.data, b.len);
	assert_xs(d, "/rss/channel/managingEditor", "editor@matrix.example.org (Matrix)");
	/* RSS requires a channel description: the title stands in for "". */
	assert_xs(d, "/rss/channel/description", "Matrix");
	xmlFreeDoc(d);
	buf_free(&b);
}

/* --- Atom ---------------------------------------------------------------------------- */

static void test_atom_structure(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	render_atom(&b, &meta, entries, NENTRIES);
	save("atom.xml", &b);
	assert_null(strstr(b.data, "CDATA"));
	xmlDocPtr d = parse(b.data, b.len);

	assert_int_equal(xcount(d, "/a:feed"), 1);
	assert_xs(d, "/a:feed/@xml:lang", "zh-CN");
	assert_xs(d, "/a:feed/a:id", "https://matrix.example.org/");
	assert_xs(d, "/a:feed/a:title", "Matrix");
	assert_xs(d, "/a:feed/a:subtitle", "Science and technology, weekly");
	assert_xs(d, "/a:feed/a:updated", "2024-02-29T12:34:56Z");
	assert_xs(d, "/a:feed/a:author/a:name", "Matrix");
	assert_int_equal(xcount(d, "/a:feed/a:author/a:email"), 0);
	assert_xs(d, "/a:feed/a:link[@rel='self']/@href", "https://matrix.example.org/atom.xml");
	assert_xs(d, "/a:feed/a:link[@rel='self']/@type", "application/atom+xml");
	assert_xs(d, "/a:feed/a:link[@rel='alternate']/@href", "https://matrix.example.org/");
	assert_xs(d, "/a:feed/a:link[@rel='alternate']/@type", "text/html");
	assert_xs(d, "/a:feed/a:generator", "matrixd");
	assert_int_equal(xcount(d, "/a:feed/a:generator/@version"), 1);

	assert_int_equal(xcount(d, "/a:feed/a:entry"), 3);
	assert_xs(d, "/a:feed/a:entry[1]/a:id",
	          "https://matrix.example.org/issues/60/swin-v2.html");
	assert_xs(d, "/a:feed/a:entry[1]/a:title", "Swin Transformer V2: 扩展容量与分辨率");
	assert_xs(d, "/a:feed/a:entry[1]/a:link[@rel='alternate']/@href",
	          "https://matrix.example.org/issues/60/swin-v2.html");
	assert_xs(d, "/a:feed/a:entry[1]/a:published", "2024-02-29T00:00:00Z");
	assert_xs(d, "/a:feed/a:entry[1]/a:updated", "2024-02-29T12:34:56Z");
	/* updated = 0 must not put updated before published. */
	assert_xs(d, "/a:feed/a:entry[2]/a:updated", "2024-02-29T00:00:00Z");
	assert_xs(d, "/a:feed/a:entry[3]/a:updated", "2022-04-15T00:00:00Z");
	assert_xs(d, "/a:feed/a:entry[1]/a:category/@term", "人工智能");
	assert_int_equal(xcount(d, "/a:feed/a:entry[2]/a:category"), 0);
	/* Entry author only when the entry has one; the feed's covers the rest. */
	assert_int_equal(xcount(d, "/a:feed/a:entry[1]/a:author"), 0);
	assert_xs(d, "/a:feed/a:entry[2]/a:author/a:name", "Alice Zhang");
	assert_xs(d, "/a:feed/a:entry[1]/a:summary/@type", "text");
	assert_xs(d, "/a:feed/a:entry[1]/a:summary", "Scaling up: a < b & \"c\"");
	assert_xs(d, "/a:feed/a:entry[1]/a:content/@type", "html");
	assert_xs(d, "/a:feed/a:entry[1]/a:content", entries[0].html);
	assert_int_equal(xcount(d, "/a:feed/a:entry[3]/a:summary"), 0);
	assert_int_equal(xcount(d, "/a:feed/a:entry[3]/a:content"), 1);
	/* Nothing outside the Atom namespace. */
	assert_int_equal(xcount(d, "//*[namespace-uri() != 'http://www.w3.org/2005/Atom']"), 0);

	xmlFreeDoc(d);
	buf_free(&b);
}

static void test_atom_optional_parts(void **state)
{
	(void)state;
	struct feed_meta m = meta;
	m.subtitle = "";
	m.author = "";
	m.author_email = "editor@matrix.example.org";
	m.updated = 0; /* computed: the newest entry's updated */
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	render_atom(&b, &m, entries + 1, 2);
	xmlDocPtr d = parse(b.data, b.len);
	assert_int_equal(xcount(d, "/a:feed/a:subtitle"), 0);
	assert_xs(d, "/a:feed/a:updated", "2024-02-29T00:00:00Z");
	/* An author name is required: the site title stands in. */
	assert_xs(d, "/a:feed/a:author/a:name", "Matrix");
	assert_xs(d, "/a:feed/a:author/a:email", "editor@matrix.example.org");
	xmlFreeDoc(d);
	buf_free(&b);
}

/* --- both ------------------------------------------------------------------------------- */

static void test_empty_and_null_members(void **state)
{
	(void)state;
	struct feed_entry e = {.published = 1649980800};
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	render_rss(&b, &meta, NULL, 0);
	xmlDocPtr d = parse(b.data, b.len);
	assert_int_equal(xcount(d, "//item"), 0);
	xmlFreeDoc(d);

	buf_reset(&b);
	render_rss(&b, &meta, &e, 1);
	d = parse(b.data, b.len);
	assert_int_equal(xcount(d, "//item"), 1);
	assert_int_equal(xcount(d, "//item/category"), 0);
	assert_xs(d, "//item/dc:creator", "Matrix");
	xmlFreeDoc(d);

	buf_reset(&b);
	render_atom(&b, &meta, &e, 1);
	d = parse(b.data, b.len);
	assert_int_equal(xcount(d, "//a:entry"), 1);
	assert_int_equal(xcount(d, "//a:entry/a:author"), 0);
	assert_xs(d, "//a:entry/a:published", "2022-04-15T00:00:00Z");
	xmlFreeDoc(d);
	buf_free(&b);
}

/*
 * Hostile input: (input, as a line, as a body). Lines lose controls, U+FFFE and
 * U+FFFF, get U+FFFD for invalid bytes, and have whitespace runs collapsed;
 * bodies keep LF and TAB.
 */
static const struct {
	const char *in, *line, *body;
} bad[] = {
    {"A\001B\037", "AB", "AB"}, /* octal: "\x01B" would be one escape */
    {"<script>alert(1)</script>", "<script>alert(1)</script>", "<script>alert(1)</script>"},
    {" & ]]> ", " & ]]> ", " & ]]> "},
    {"\xef\xbf\xbe\xef\xbf\xbfX", "X", "X"}, /* U+FFFE U+FFFF */
    {"\xff|\xc3(", "\xef\xbf\xbd|\xef\xbf\xbd(", "\xef\xbf\xbd|\xef\xbf\xbd("},
    {"\x7f\xc2\x85\x0b\x0c", "", ""}, /* DEL, NEL (C1), VT, FF */
    {"l1\n\n  l2\r\tl3 ", "l1    l2  l3 ", "l1\n\n  l2 \tl3 "},
    {"\"quoted\" 'single' &amp;", "\"quoted\" 'single' &amp;", "\"quoted\" 'single' &amp;"},
};

static void hostile(struct buf *in, struct buf *line, struct buf *body)
{
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		buf_adds(in, bad[i].in);
		buf_adds(line, bad[i].line);
		buf_adds(body, bad[i].body);
	}
}

/* The expected one-line form: the pieces joined, then runs of spaces collapsed and trimmed. */
static char *squeeze(const char *s)
{
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	for (; *s; s++)
		if (*s != ' ' || (b.len > 0 && b.data[b.len - 1] != ' '))
			buf_addc(&b, *s);
	if (b.len > 0 && b.data[b.len - 1] == ' ')
		buf_truncate(&b, b.len - 1);
	return buf_detach(&b);
}

static void test_hostile_input(void **state)
{
	(void)state;
	struct buf in, line, body, title_in, title_want, html_in, html_want, out;
	buf_init(&in, BUF_NOLIMIT);
	buf_init(&line, BUF_NOLIMIT);
	buf_init(&body, BUF_NOLIMIT);
	buf_init(&title_in, BUF_NOLIMIT);
	buf_init(&title_want, BUF_NOLIMIT);
	buf_init(&html_in, BUF_NOLIMIT);
	buf_init(&html_want, BUF_NOLIMIT);
	buf_init(&out, BUF_NOLIMIT);
	hostile(&in, &line, &body);

	/* A 300-character title: kept whole. */
	buf_adds(&title_in, in.data);
	buf_adds(&title_want, line.data);
	for (int i = 0; i < 300; i++) {
		buf_adds(&title_in, "标");
		buf_adds(&title_want, "标");
	}
	buf_adds(&title_in, in.data);
	buf_adds(&title_want, line.data);
	char *title_exp = squeeze(title_want.data);
	char *line_exp = squeeze(line.data);

	/* A body over 100 KB. */
	while (html_in.len < 100 * 1024) {
		buf_adds(&html_in, "<p>para &amp; more</p>\n");
		buf_adds(&html_in, in.data);
		buf_adds(&html_want, "<p>para &amp; more</p>\n");
		buf_adds(&html_want, body.data);
	}

	struct feed_meta m = meta;
	m.title = in.data;
	m.subtitle = in.data;
	m.author = in.data;
	struct feed_entry e = entries[0];
	e.title = title_in.data;
	e.section = in.data;
	e.author = in.data;
	e.summary = in.data;
	e.html = html_in.data;
	e.link = "https://matrix.example.org/a?b=1&c=\"2\"\x01<x>\n";
	e.id = e.link;

	const char *link_exp = "https://matrix.example.org/a?b=1&c=\"2\"<x>";

	render_rss(&out, &m, &e, 1);
	save("hostile-feed.xml", &out);
	assert_null(strstr(out.data, "CDATA"));
	xmlDocPtr d = parse(out.data, out.len);
	assert_xs(d, "/rss/channel/title", line_exp);
	assert_xs(d, "/rss/channel/description", line_exp);
	assert_xs(d, "//item/title", title_exp);
	assert_xs(d, "//item/category", line_exp);
	assert_xs(d, "//item/dc:creator", line_exp);
	assert_xs(d, "//item/link", link_exp);
	assert_xs(d, "//item/guid", link_exp);
	assert_xs(d, "//item/content:encoded", html_want.data);
	/* The summary went through HTML escaping after cleaning. */
	char *desc = xs(d, "//item/description");
	assert_null(strstr(desc, "<script>"));
	assert_non_null(strstr(desc, "&lt;script&gt;alert(1)&lt;/script&gt; &amp; ]]&gt;"));
	free(desc);
	xmlFreeDoc(d);

	buf_reset(&out);
	render_atom(&out, &m, &e, 1);
	save("hostile-atom.xml", &out);
	assert_null(strstr(out.data, "CDATA"));
	d = parse(out.data, out.len);
	assert_xs(d, "/a:feed/a:title", line_exp);
	assert_xs(d, "/a:feed/a:subtitle", line_exp);
	assert_xs(d, "/a:feed/a:author/a:name", line_exp);
	assert_xs(d, "//a:entry/a:title", title_exp);
	assert_xs(d, "//a:entry/a:id", link_exp);
	assert_xs(d, "//a:entry/a:link/@href", link_exp);
	assert_xs(d, "//a:entry/a:category/@term", line_exp);
	assert_xs(d, "//a:entry/a:author/a:name", line_exp);
	assert_xs(d, "//a:entry/a:summary", body.data);
	assert_xs(d, "//a:entry/a:content", html_want.data);
	xmlFreeDoc(d);

	free(title_exp);
	free(line_exp);
	buf_free(&in);
	buf_free(&line);
	buf_free(&body);
	buf_free(&title_in);
	buf_free(&title_want);
	buf_free(&html_in);
	buf_free(&html_want);
	buf_free(&out);
}

/*
 * Indentation is for the structure only: whitespace at the edges of a body
 * survives exactly, and nothing is inserted between a start tag and its text.
 */
static void test_indent_leaves_text_alone(void **state)
{
	(void)state;
	const char *html = "\n  <p>lead</p>\n\n<pre>  code\n\tmore</pre>  \n";
	struct feed_entry e = entries[0];
	e.html = html;
	e.title = "  Spaced   title\n";
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);

	render_rss(&b, &meta, &e, 1);
	assert_non_null(strstr(b.data, "\n  <channel>\n    <title>Matrix</title>\n"));
	assert_non_null(strstr(b.data, "\n    <item>\n      <title>Spaced title</title>\n"));
	assert_non_null(strstr(b.data, "<content:encoded>\n  &lt;p&gt;lead&lt;/p&gt;\n\n&lt;pre&gt;"
	                               "  code\n\tmore&lt;/pre&gt;  \n</content:encoded>"));
	xmlDocPtr d = parse(b.data, b.len);
	assert_xs(d, "//item/content:encoded", html);
	assert_xs(d, "//item/title", "Spaced title");
	xmlFreeDoc(d);

	buf_reset(&b);
	render_atom(&b, &meta, &e, 1);
	assert_non_null(strstr(b.data, "\n  <entry>\n    <id>"));
	assert_non_null(strstr(b.data, "<content type=\"html\">\n  &lt;p&gt;lead"));
	d = parse(b.data, b.len);
	assert_xs(d, "//a:entry/a:content", html);
	xmlFreeDoc(d);
	buf_free(&b);
}

static void test_appends_and_respects_cap(void **state)
{
	(void)state;
	struct err err;
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	buf_adds(&b, "PREFIX");
	render_rss(&b, &meta, entries, NENTRIES);
	assert_true(strncmp(b.data, "PREFIX<?xml ", 12) == 0);
	xmlDocPtr d = parse(b.data + 6, b.len - 6);
	xmlFreeDoc(d);
	size_t whole = b.len - 6;
	buf_free(&b);

	/* One byte short of the document: refused, buffer as it was. */
	buf_init(&b, 3 + whole - 1);
	buf_adds(&b, "abc");
	err_clear(&err);
	assert_int_equal(feed_rss(&b, &meta, entries, NENTRIES, &err), -1);
	assert_int_equal(err.kind, ERR_INPUT);
	assert_non_null(strstr(err.msg, "limit"));
	assert_int_equal(b.len, 3);
	assert_string_equal(b.data, "abc");
	buf_free(&b);

	/* Exactly enough: accepted. */
	buf_init(&b, 3 + whole);
	buf_adds(&b, "abc");
	assert_int_equal(feed_rss(&b, &meta, entries, NENTRIES, &err), 0);
	assert_int_equal(b.len, 3 + whole);
	buf_free(&b);

	/* The cap hit in the middle of a large body (libxml2 writes in chunks). */
	buf_init(&b, 100);
	err_clear(&err);
	assert_int_equal(feed_atom(&b, &meta, entries, NENTRIES, &err), -1);
	assert_int_equal(err.kind, ERR_INPUT);
	assert_int_equal(b.len, 0);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_dates_ignore_tz_and_locale),
	    cmocka_unit_test(test_rss_structure),
	    cmocka_unit_test(test_rss_managing_editor_needs_address),
	    cmocka_unit_test(test_atom_structure),
	    cmocka_unit_test(test_atom_optional_parts),
	    cmocka_unit_test(test_empty_and_null_members),
	    cmocka_unit_test(test_hostile_input),
	    cmocka_unit_test(test_indent_leaves_text_alone),
	    cmocka_unit_test(test_appends_and_respects_cap),
	};
	xmlInitParser();
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	xmlCleanupParser();
	return rc;
}
