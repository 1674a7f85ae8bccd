/*
 * Markdown to HTML and plain text (see md.h).
 *
 * cmark-gfm parses (tables, autolinks, strikethrough, tagfilter; safe mode),
 * then we rewrite the tree: raw HTML and unsafe or empty links go, and for
 * raw magazine exports the rules of docs/issue-format.md turn lines into
 * captions, bylines, subheadings and a related-reading box. Our own blocks
 * are cmark custom blocks whose on_enter string names them ("mx-caption"),
 * so both renderers know them. The HTML comes from cmark; the plain text
 * from our own walk, because cmark's plaintext renderer drops link targets
 * and images (docs/libraries.md, cmark-gfm).
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmark-gfm-core-extensions.h>
#include <cmark-gfm.h>
#include <cmark-gfm/registry.h>
#include <unilbrk.h>

#include "buf.h"
#include "md.h"
#include "text.h"
#include "utf8.h"
#include "xmalloc.h"

/* Exported by libcmark-gfm-extensions, not declared in its headers. */
extern cmark_node_type CMARK_NODE_TABLE, CMARK_NODE_TABLE_ROW, CMARK_NODE_TABLE_CELL,
    CMARK_NODE_STRIKETHROUGH;

#define TEXT_WIDTH 72
/* A line of the text part a terminal shows whole (80 columns, and room for
 * a quoting "> "). */
#define LINE_MAX_COLS 78

static const char *const exts[] = {"table", "autolink", "strikethrough", "tagfilter"};

void md_init(void)
{
	cmark_gfm_core_extensions_ensure_registered();
}

void md_shutdown(void)
{
	cmark_release_plugins();
}

/* ---- $…$ math in raw exports --------------------------------------------- */

static const char *sup(char c)
{
	static const char *const d[] = {"⁰", "¹", "²", "³", "⁴", "⁵", "⁶", "⁷", "⁸", "⁹"};
	if (c >= '0' && c <= '9')
		return d[c - '0'];
	switch (c) {
	case '+':
		return "⁺";
	case '-':
		return "⁻";
	case '=':
		return "⁼";
	case '(':
		return "⁽";
	case ')':
		return "⁾";
	case 'n':
		return "ⁿ";
	case 'i':
		return "ⁱ";
	}
	return NULL;
}

static const char *sub(char c)
{
	static const char *const d[] = {"₀", "₁", "₂", "₃", "₄", "₅", "₆", "₇", "₈", "₉"};
	if (c >= '0' && c <= '9')
		return d[c - '0'];
	switch (c) {
	case '+':
		return "₊";
	case '-':
		return "₋";
	case '=':
		return "₌";
	case '(':
		return "₍";
	case ')':
		return "₎";
	}
	return NULL;
}

static void add_md_escaped(struct buf *out, char c)
{
	if (strchr("\\`*_[]<>|#!~", c))
		buf_addc(out, '\\');
	buf_addc(out, c);
}

/* A script group "^{11}" or "^2": superscripts when every character has one. */
static const char *script(struct buf *out, const char *p, const char *end, bool up)
{
	const char *s = p, *e;
	if (s < end && *s == '{') {
		e = memchr(s, '}', (size_t)(end - s));
		if (e == NULL)
			return NULL;
		s++;
	} else {
		e = s < end ? s + 1 : s;
	}
	for (const char *q = s; q < e; q++)
		if ((up ? sup(*q) : sub(*q)) == NULL)
			return NULL;
	for (const char *q = s; q < e; q++)
		buf_adds(out, up ? sup(*q) : sub(*q));
	return e < end && *e == '}' ? e + 1 : e;
}

static void math(struct buf *out, const char *p, const char *end)
{
	static const struct {
		const char *tex, *text;
	} cmds[] = {{"times", "×"},  {"cdot", "·"},  {"pm", "±"},      {"leq", "≤"},
	            {"le", "≤"},     {"geq", "≥"},   {"ge", "≥"},      {"neq", "≠"},
	            {"approx", "≈"}, {"infty", "∞"}, {"alpha", "α"},   {"beta", "β"},
	            {"gamma", "γ"},  {"delta", "δ"}, {"epsilon", "ε"}, {"theta", "θ"},
	            {"lambda", "λ"}, {"mu", "μ"},    {"pi", "π"},      {"sigma", "σ"},
	            {"omega", "ω"},  {"sum", "∑"},   {"sqrt", "√"},    {"to", "→"}};
	while (p < end) {
		if (*p == '^' || *p == '_') {
			const char *q = script(out, p + 1, end, *p == '^');
			if (q) {
				p = q;
				continue;
			}
			add_md_escaped(out, *p++);
		} else if (*p == '*') {
			buf_adds(out, "×");
			p++;
		} else if (*p == '\\') {
			const char *q = p + 1;
			while (q < end && isalpha((unsigned char)*q))
				q++;
			size_t n = (size_t)(q - p - 1);
			bool done = false;
			for (size_t i = 0; i < sizeof cmds / sizeof cmds[0] && !done; i++)
				if (strlen(cmds[i].tex) == n &&
				    memcmp(p + 1, cmds[i].tex, n) == 0) {
					buf_adds(out, cmds[i].text);
					done = true;
				}
			if (!done && n == 0 && q < end) {
				add_md_escaped(out, *q); /* \{ \} \, */
				q++;
			} else if (!done) {
				buf_add(out, p + 1, n);
			}
			p = q;
		} else if (*p == '{' || *p == '}') {
			p++;
		} else {
			add_md_escaped(out, *p++);
		}
	}
}

/* Rewrites $…$ spans (pandoc's rule: no space inside the dollars, no digit
 * right after the closing one) so "$2 * 10^{11}$" reads "2 × 10¹¹". */
static char *rewrite_math(const char *src, size_t len)
{
	struct buf out;
	buf_init(&out, BUF_NOLIMIT);
	const char *p = src, *end = src + len;
	while (p < end) {
		const char *d = memchr(p, '$', (size_t)(end - p));
		if (d == NULL) {
			buf_add(&out, p, (size_t)(end - p));
			break;
		}
		buf_add(&out, p, (size_t)(d - p));
		const char *s = d + 1;
		const char *close = NULL;
		if (s < end && *s != ' ' && *s != '$' && *s != '\n' &&
		    (d == src || d[-1] != '\\')) {
			for (const char *q = s; q < end && *q != '\n'; q++)
				if (*q == '$') {
					if (q[-1] != ' ' &&
					    (q + 1 >= end || !isdigit((unsigned char)q[1])))
						close = q;
					break;
				}
		}
		if (close == NULL) {
			buf_addc(&out, '$');
			p = d + 1;
			continue;
		}
		math(&out, s, close);
		p = close + 1;
	}
	return buf_detach(&out);
}

/* ---- tree helpers -------------------------------------------------------- */

static void plain(cmark_node *n, struct buf *out)
{
	for (cmark_node *c = cmark_node_first_child(n); c; c = cmark_node_next(c)) {
		cmark_node_type t = cmark_node_get_type(c);
		if (t == CMARK_NODE_TEXT || t == CMARK_NODE_CODE)
			buf_adds(out, cmark_node_get_literal(c));
		else if (t == CMARK_NODE_SOFTBREAK || t == CMARK_NODE_LINEBREAK)
			buf_addc(out, '\n');
		else
			plain(c, out);
	}
}

static char *plain_dup(cmark_node *n)
{
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	plain(n, &b);
	return buf_detach(&b);
}

static bool has_breaks(cmark_node *n)
{
	for (cmark_node *c = cmark_node_first_child(n); c; c = cmark_node_next(c))
		if (cmark_node_get_type(c) == CMARK_NODE_SOFTBREAK ||
		    cmark_node_get_type(c) == CMARK_NODE_LINEBREAK)
			return true;
	return false;
}

static bool has_link(cmark_node *n)
{
	for (cmark_node *c = cmark_node_first_child(n); c; c = cmark_node_next(c)) {
		cmark_node_type t = cmark_node_get_type(c);
		if (t == CMARK_NODE_LINK || t == CMARK_NODE_IMAGE || has_link(c))
			return true;
	}
	return false;
}

/* Moves every child of from to the end of to. */
static void move_children(cmark_node *from, cmark_node *to)
{
	cmark_node *c;
	while ((c = cmark_node_first_child(from)) != NULL) {
		cmark_node_unlink(c);
		cmark_node_append_child(to, c);
	}
}

static cmark_node *custom(const char *enter, const char *exit)
{
	cmark_node *n = cmark_node_new(CMARK_NODE_CUSTOM_BLOCK);
	cmark_node_set_on_enter(n, enter);
	cmark_node_set_on_exit(n, exit);
	return n;
}

/* Which of our blocks a custom block is: "caption", "byline", "related". */
static const char *kind(cmark_node *n)
{
	const char *e = cmark_node_get_on_enter(n);
	const char *k = e ? strstr(e, "class=\"mx-") : NULL;
	if (k == NULL)
		return "";
	k += strlen("class=\"mx-");
	if (strncmp(k, "caption", 7) == 0)
		return "caption";
	if (strncmp(k, "byline", 6) == 0)
		return "byline";
	if (strncmp(k, "related", 7) == 0)
		return "related";
	if (strncmp(k, "table", 5) == 0)
		return "table";
	return "";
}

static bool is_custom(cmark_node *n, const char *k)
{
	return cmark_node_get_type(n) == CMARK_NODE_CUSTOM_BLOCK && strcmp(kind(n), k) == 0;
}

/* ---- safety rewrites ------------------------------------------------------ */

static bool unsafe_url(const char *u)
{
	while (*u == ' ' || *u == '\t')
		u++;
	if (*u == '\0' || strcmp(u, "#") == 0)
		return true;
	const char *colon = strchr(u, ':');
	const char *slash = strchr(u, '/');
	if (colon == NULL || (slash && slash < colon))
		return false; /* relative */
	static const char *const ok[] = {"http:", "https:", "mailto:", "ftp:", "tel:"};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
		if (strncasecmp(u, ok[i], strlen(ok[i])) == 0)
			return false;
	return true;
}

static bool relative_url(const char *u)
{
	if (u[0] == '/' || u[0] == '#' || u[0] == '\0')
		return false;
	const char *colon = strchr(u, ':');
	const char *slash = strchr(u, '/');
	return colon == NULL || (slash && slash < colon);
}

static bool safe_relpath(const char *u)
{
	if (strstr(u, "..") || strchr(u, '\\') || strchr(u, '?') || strchr(u, '#'))
		return false;
	for (const char *p = u; *p; p++)
		if ((unsigned char)*p < 0x20)
			return false;
	return true;
}

static void strip_tags(const char *html, struct buf *out)
{
	bool in_tag = false;
	for (const char *p = html; *p; p++) {
		if (*p == '<')
			in_tag = true;
		else if (*p == '>' && in_tag)
			in_tag = false;
		else if (!in_tag)
			buf_addc(out, *p);
	}
}

struct ctx {
	const struct md_opts *o;
	struct md_doc *doc;
	const int *caption_lines; /* raw exports: where the typeset pass put captions */
	size_t ncaptions;
};

static void add_asset(struct ctx *x, const char *path)
{
	for (size_t i = 0; i < x->doc->nassets; i++)
		if (strcmp(x->doc->assets[i], path) == 0)
			return;
	x->doc->assets = xreallocarray(x->doc->assets, x->doc->nassets + 1, sizeof *x->doc->assets);
	x->doc->assets[x->doc->nassets++] = xstrdup(path);
}

/* Depth-first: drop raw HTML, unwrap unsafe links, fix image URLs. */
static void sanitise(struct ctx *x, cmark_node *n)
{
	cmark_node *c = cmark_node_first_child(n), *next;
	for (; c; c = next) {
		next = cmark_node_next(c);
		cmark_node_type t = cmark_node_get_type(c);
		if (t == CMARK_NODE_HTML_INLINE) {
			cmark_node_free(c);
			continue;
		}
		if (t == CMARK_NODE_HTML_BLOCK) {
			/* Keep the words of a raw HTML block, never its markup or scripts. */
			const char *lit = cmark_node_get_literal(c);
			if (lit && !strcasestr(lit, "<script") && !strcasestr(lit, "<style") &&
			    strncmp(lit, "<!--", 4) != 0) {
				struct buf b;
				buf_init(&b, BUF_NOLIMIT);
				strip_tags(lit, &b);
				const char *s = buf_str(&b);
				while (*s && isspace((unsigned char)*s))
					s++;
				if (*s) {
					cmark_node *p = cmark_node_new(CMARK_NODE_PARAGRAPH);
					cmark_node *txt = cmark_node_new(CMARK_NODE_TEXT);
					cmark_node_set_literal(txt, s);
					cmark_node_append_child(p, txt);
					cmark_node_insert_before(c, p);
				}
				buf_free(&b);
			}
			cmark_node_free(c);
			continue;
		}
		if (t == CMARK_NODE_LINK && unsafe_url(cmark_node_get_url(c))) {
			sanitise(x, c);
			cmark_node *k;
			while ((k = cmark_node_first_child(c)) != NULL) {
				cmark_node_unlink(k);
				cmark_node_insert_before(c, k);
			}
			cmark_node_free(c);
			continue;
		}
		if (t == CMARK_NODE_IMAGE) {
			const char *u = cmark_node_get_url(c);
			if (unsafe_url(u) || (relative_url(u) && !safe_relpath(u))) {
				cmark_node_free(c);
				continue;
			}
			if (relative_url(u)) {
				add_asset(x, u);
				if (x->o && x->o->asset_base) {
					char *abs = xasprintf("%s%s", x->o->asset_base, u);
					cmark_node_set_url(c, abs);
					free(abs);
				}
			}
		}
		sanitise(x, c);
	}
}

/* ---- raw export rules ---------------------------------------------------- */

static bool starts(const char *s, const char *pre)
{
	return strncmp(s, pre, strlen(pre)) == 0;
}

static const char *skip_ws(const char *s)
{
	while (*s == ' ' || *s == '\t' || starts(s, "\xe3\x80\x80"))
		s += *s == ' ' || *s == '\t' ? 1 : 3;
	return s;
}

static bool is_qr_text(const char *s)
{
	s = skip_ws(s);
	return starts(s, "扫描二维码") || starts(s, "扫码") || starts(s, "扫一扫") ||
	       starts(s, "长按二维码") || starts(s, "长按识别二维码");
}

/* "图 1: …", "表2：…", "Figure 3: …", "Table 1. …" */
static bool is_caption_text(const char *s)
{
	s = skip_ws(s);
	const char *p;
	if (starts(s, "图") || starts(s, "表"))
		p = s + 3;
	else if (strncasecmp(s, "figure", 6) == 0)
		p = s + 6;
	else if (strncasecmp(s, "fig.", 4) == 0)
		p = s + 4;
	else if (strncasecmp(s, "table", 5) == 0)
		p = s + 5;
	else
		return false;
	p = skip_ws(p);
	if (!isdigit((unsigned char)*p))
		return false;
	while (isdigit((unsigned char)*p) || *p == '.' || *p == '-')
		p++;
	p = skip_ws(p);
	return *p == ':' || *p == '.' || starts(p, "：") || starts(p, "．") || *p == ' ';
}

static bool is_byline_text(const char *s)
{
	static const char *const pre[] = {"来源",  "作者", "撰文",   "编辑",
	                                  "文 / ", "文/",  "Source", "By "};
	s = skip_ws(s);
	for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++)
		if (starts(s, pre[i])) {
			const char *p = skip_ws(s + strlen(pre[i]));
			return *p == ':' || starts(p, "：") || pre[i][strlen(pre[i]) - 1] == ' ' ||
			       pre[i][strlen(pre[i]) - 1] == '/';
		}
	return false;
}

static bool is_related_text(const char *s)
{
	s = skip_ws(s);
	static const char *const words[] = {"相关阅读", "延伸阅读", "推荐阅读", "Related reading",
	                                    "Further reading"};
	for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
		size_t n = strlen(words[i]);
		if (strncasecmp(s, words[i], n) == 0) {
			const char *p = skip_ws(s + n);
			if (*p == '\0' || ((*p == ':' || starts(p, "：")) &&
			                   *skip_ws(p + (*p == ':' ? 1 : 3)) == '\0'))
				return true;
		}
	}
	return false;
}

/* The last code point of s, trailing spaces and newlines ignored. */
static uint32_t last_cp_of(const char *s)
{
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n'))
		n--;
	return utf8_last(s, n);
}

/* ---- raw exports: lines to paragraphs ------------------------------------- */

/*
 * The export of the printed magazine is a list of paragraphs separated by one
 * blank line, with the page's artefacts left in (docs/issue-format.md, "Raw
 * exports"): a paragraph cut where a page ended, a heading printed over two
 * lines, and three or more blank lines where an image stood — the image is
 * not in the export, but its caption, if it had one, is the line right after.
 * This pass reads those traces before cmark sees the text; what it decides
 * on a guess it reports as a warning for `matrixctl inspect`.
 */

/* The first or last code point of a line, blanks around it ignored. */
static uint32_t edge_cp(const char *s, size_t n, bool last)
{
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	while (n > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	return last ? utf8_last(s, n) : utf8_first(s, n);
}

enum pkind {
	PK_STRUCT,  /* Markdown or several lines: passed on as they are */
	PK_TEXT,    /* a paragraph or a subheading */
	PK_CAPTION, /* "图 1: …", "Table 2. …" */
	PK_PHOTO,   /* the caption of an image that stood right above */
};

struct para {
	char *text;    /* the lines as one string, joins applied */
	size_t nlines; /* lines in the source */
	int line;      /* 1-based line of the source */
	int gap;       /* blank lines before it */
	enum pkind kind;
	bool gone; /* joined into an earlier paragraph */
};

#define IMAGE_GAP   3   /* blank lines that mean an image stood there */
#define HEADING_MAX 50  /* code points a subheading may have */
#define CAPTION_MAX 120 /* code points an untitled caption may have */

static bool sentence_final(uint32_t c)
{
	static const uint32_t p[] = {0x3002, 0xff01, 0xff1f, '!',    '?',    '.',    0x2026,
	                             0xff1b, ';',    0xff1a, ':',    0x201d, 0x2019, 0x300d,
	                             0x300f, 0xff09, ')',    0x3011, 0x300b, '"',    '\''};
	for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
		if (c == p[i])
			return true;
	return false;
}

/* A letter, digit or ideograph: the end of a line cut mid-sentence. */
static bool word_cp(uint32_t c)
{
	return utf8_is_han(c) || (c < 0x80 && isalnum((int)c)) ||
	       (c >= 0xc0 && c < 0x2000 && c != 0xd7 && c != 0xf7);
}

/* "1、", "2.", "(3)", "（4）", "五、": an enumerated item, never a caption. */
static bool enumerated(const char *s)
{
	s = skip_ws(s);
	const char *p = s;
	if (*p == '(' || starts(p, "（"))
		p += *p == '(' ? 1 : 3;
	const char *d = p;
	while (isdigit((unsigned char)*p))
		p++;
	if (p == d) {
		static const char *const num[] = {"一", "二", "三", "四", "五",
		                                  "六", "七", "八", "九", "十"};
		for (bool more = true; more;) {
			more = false;
			for (size_t i = 0; i < sizeof num / sizeof num[0]; i++)
				if (starts(p, num[i])) {
					p += 3;
					more = true;
				}
		}
	}
	return p > d && (starts(p, "、") || *p == '.' || *p == ')' || starts(p, "）"));
}

/* Ends with 。！？… or with one of them inside a closing quote or bracket. */
static bool ends_sentence_str(const char *s)
{
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n'))
		n--;
	for (int k = 0; k < 2 && n > 0; k++) {
		uint32_t c = utf8_last(s, n);
		if (c == 0x3002 || c == 0xff01 || c == 0xff1f || c == '!' || c == '?' ||
		    c == 0x2026 || c == '.')
			return true;
		if (!(c == 0x201d || c == 0x2019 || c == 0x300d || c == 0x300f || c == 0xff09 ||
		      c == ')' || c == '"'))
			return false;
		while (n > 0 && ((unsigned char)s[n - 1] & 0xc0) == 0x80)
			n--;
		n--; /* the closing mark */
	}
	return false;
}

static bool has_sentence_mark(const char *s)
{
	return strstr(s, "。") || strstr(s, "！") || strstr(s, "？") || strchr(s, '!') ||
	       strchr(s, '?');
}

/* Prose, not a title: a sentence mark inside, two commas, or too long. */
static bool prose_str(const char *s)
{
	const char *c = strstr(s, "，");
	return has_sentence_mark(s) || utf8_len(s) > HEADING_MAX || (c && strstr(c + 3, "，"));
}

/* Short, and not ending like a sentence or a label: a title. */
static bool title_like_str(const char *t)
{
	const char *s = skip_ws(t);
	size_t n = utf8_len(s);
	uint32_t last = last_cp_of(s);
	static const uint32_t stop[] = {'.',    '!',    '?',    ';',    ':',    ',',
	                                0x3002, 0xff01, 0xff1f, 0xff1b, 0xff1a, 0xff0c,
	                                0x3001, 0x2026, ')',    0xff09};
	bool ok = n > 0 && n <= HEADING_MAX && s[0] != '(' && !starts(s, "（") && !starts(s, "*");
	for (size_t i = 0; ok && i < sizeof stop / sizeof stop[0]; i++)
		ok = last != stop[i];
	return ok && !ends_sentence_str(s) && !prose_str(s);
}

/* Markdown that is not a paragraph of prose: tables, lists, quotes, code,
 * headings, links on a line of their own, raw HTML. */
static bool structural_line(const char *s)
{
	s = skip_ws(s);
	if (*s == '|' || *s == '#' || *s == '>' || *s == '`' || *s == '<' || *s == '[' ||
	    *s == '\0')
		return true;
	if ((*s == '-' || *s == '*' || *s == '+') && (s[1] == ' ' || s[1] == '\0'))
		return true;
	const char *p = s;
	while (isdigit((unsigned char)*p))
		p++;
	return p > s && (*p == '.' || *p == ')') && (p[1] == ' ' || p[1] == '\0');
}

static bool is_table(const struct para *p)
{
	return p && p->kind == PK_STRUCT && *skip_ws(p->text) == '|';
}

/* The paragraph that a line of the export cut by a page break ends with:
 * a comma, or a letter or ideograph in a line too long for a heading. */
static bool cut_mid_sentence(const struct para *p)
{
	if (p->kind != PK_TEXT || p->nlines != 1)
		return false;
	uint32_t last = last_cp_of(p->text);
	if (last == 0xff0c || last == 0x3001 || last == ',')
		return true;
	if (!word_cp(last) || sentence_final(last))
		return false;
	return prose_str(p->text);
}

/* A line that may be (part of) a subheading. */
static bool heading_candidate(const struct para *p)
{
	return p->kind == PK_TEXT && p->nlines == 1 && !p->gone && title_like_str(p->text) &&
	       !enumerated(p->text) && !is_qr_text(p->text) && !is_byline_text(p->text) &&
	       !is_related_text(p->text);
}

/* May continue a cut paragraph: prose, not a heading or a label. */
static bool continues(const struct para *p)
{
	return p->kind == PK_TEXT && p->nlines == 1 && !title_like_str(p->text) &&
	       !is_qr_text(p->text) && !is_byline_text(p->text) && !is_related_text(p->text) &&
	       !enumerated(p->text);
}

static bool photo_caption(const struct para *p)
{
	const char *s = skip_ws(p->text);
	uint32_t last = last_cp_of(s);
	return p->gap >= IMAGE_GAP && p->nlines == 1 && utf8_len(s) <= CAPTION_MAX &&
	       !has_sentence_mark(s) && !(sentence_final(last) && last != ')' && last != 0xff09) &&
	       last != 0xff0c && last != ',' && last != 0x3001 && !enumerated(s) &&
	       !is_qr_text(s) && !is_byline_text(s) && !is_related_text(s);
}

/* Joins b to a: no space between two CJK characters nor after CJK
 * punctuation, one space otherwise (Chinese and Latin, two Latin words). */
static void join_text(struct buf *a, const char *b)
{
	uint32_t x = utf8_last(a->data, a->len), y = utf8_first(b, strlen(b));
	if (!(utf8_is_cjk(x) && (utf8_is_cjk(y) || !utf8_is_han(x))))
		buf_addc(a, ' ');
	buf_adds(a, skip_ws(b));
}

/*
 * ASCII , : ; ! ? right after a Han character is what the export made of the
 * full-width mark (Chinese text has no other use for it there); it becomes
 * the full-width one and the space the export added after it goes. ASCII
 * after anything else is as the author typed it. Link targets, autolinks and
 * code spans are left alone.
 */
static void restore_fullwidth(struct buf *out, const char *s)
{
	const char *p = s, *end = s + strlen(s);
	uint32_t prev = 0;
	while (p < end) {
		if (*p == '`' || *p == '<' || (p[0] == ']' && p[1] == '(')) {
			const char *close = *p == '`'   ? memchr(p + 1, '`', (size_t)(end - p - 1))
			                    : *p == '<' ? memchr(p, '>', (size_t)(end - p))
			                                : memchr(p, ')', (size_t)(end - p));
			if (close) {
				buf_add(out, p, (size_t)(close + 1 - p));
				p = close + 1;
				prev = 0;
				continue;
			}
		}
		const char *fw = *p > 0 ? utf8_fullwidth_punct(*p) : NULL;
		if (fw && *p != '(' && *p != ')' && utf8_is_han(prev)) {
			buf_adds(out, fw);
			p++;
			while (p < end && *p == ' ')
				p++;
			prev = 0xff0c;
			continue;
		}
		const char *at = p;
		int32_t c = utf8_next(&p, end);
		buf_add(out, at, (size_t)(p - at));
		prev = c < 0 ? 0 : (uint32_t)c;
	}
}

struct typeset {
	struct para *p;
	size_t n;
	int first_line;     /* of the file, for warnings */
	int *caption_lines; /* output lines (1-based) where a caption starts */
	size_t ncaptions;
	struct md_doc *doc; /* warnings go here */
};

static void warn(struct typeset *t, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void warn(struct typeset *t, int line, const char *fmt, ...)
{
	struct md_doc *d = t->doc;
	va_list ap;
	va_start(ap, fmt);
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	d->warnings = xreallocarray(d->warnings, d->nwarnings + 1, sizeof *d->warnings);
	d->warnings[d->nwarnings++] = (struct md_warning){line, buf_detach(&b)};
}

static int by_line(const void *a, const void *b)
{
	const struct md_warning *x = a, *y = b;
	return (x->line > y->line) - (x->line < y->line);
}

static void split_paras(struct typeset *t, const char *src, size_t len)
{
	int no = 0, gap = 0;
	struct para *cur = NULL;
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	for (const char *p = src, *end = src + len; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t k = nl ? (size_t)(nl - p) : (size_t)(end - p);
		no++;
		if (edge_cp(p, k, false) == 0) {
			if (cur) {
				cur->text = buf_detach(&b);
				buf_init(&b, BUF_NOLIMIT);
				cur = NULL;
			}
			gap++;
		} else {
			if (cur == NULL) {
				t->p = xreallocarray(t->p, t->n + 1, sizeof *t->p);
				cur = &t->p[t->n++];
				*cur = (struct para){NULL, 0,       t->first_line + no - 1,
				                     gap,  PK_TEXT, false};
				gap = 0;
			} else {
				buf_addc(&b, '\n');
			}
			buf_add(&b, p, k);
			cur->nlines++;
		}
		p += k + 1;
	}
	if (cur)
		cur->text = buf_detach(&b);
	buf_free(&b);
}

static const char *figure_word(const char *s, bool *table)
{
	s = skip_ws(s);
	*table = starts(s, "表") || strncasecmp(s, "table", 5) == 0;
	return s;
}

/* "图 3"/"Figure 3" numbers: captions[] of the article, and references in
 * the text to numbers no caption has. */
static void figure_refs(struct typeset *t)
{
	bool have[1000] = {false};
	for (size_t i = 0; i < t->n; i++) {
		const char *s = skip_ws(t->p[i].text);
		if (t->p[i].kind != PK_CAPTION ||
		    !(starts(s, "图") || strncasecmp(s, "fig", 3) == 0))
			continue;
		while (*s && !isdigit((unsigned char)*s))
			s++;
		long v = strtol(s, NULL, 10);
		if (v > 0 && v < 1000)
			have[v] = true;
	}
	bool told[1000] = {false};
	for (size_t i = 0; i < t->n; i++) {
		const struct para *p = &t->p[i];
		if (p->gone || p->kind == PK_CAPTION || is_table(p))
			continue;
		for (const char *s = p->text; (s = strstr(s, "图")) != NULL;) {
			s += 3;
			const char *d = skip_ws(s);
			if (!isdigit((unsigned char)*d))
				continue;
			long v = strtol(d, NULL, 10);
			if (v > 0 && v < 1000 && !have[v] && !told[v]) {
				told[v] = true;
				warn(t, p->line,
				     "the text refers to 图 %ld, but the article has no caption "
				     "\"图 %ld: …\"; "
				     "check the number, or add the figure and its caption",
				     v, v);
			}
		}
	}
}

static void classify(struct typeset *t, unsigned flags)
{
	bool related = false;
	for (size_t i = 0; i < t->n; i++) {
		struct para *p = &t->p[i];
		if (!related && p->nlines == 1 && is_related_text(p->text))
			related = true; /* the box runs to the end: the tree pass makes it */
		if (related || structural_line(p->text))
			p->kind = PK_STRUCT;
		else if (is_caption_text(p->text))
			p->kind = PK_CAPTION;
		else if (p->nlines > 1)
			p->kind = PK_STRUCT;
		else if (!(flags & MD_COLOPHON) && photo_caption(p))
			p->kind = PK_PHOTO;
		else
			p->kind = PK_TEXT;
	}
}

static void join_page_breaks(struct typeset *t)
{
	for (size_t i = 0; i < t->n; i++) {
		struct para *a = &t->p[i];
		while (!a->gone && cut_mid_sentence(a)) {
			size_t j = i + 1;
			while (j < t->n && (t->p[j].gone || t->p[j].kind == PK_CAPTION ||
			                    t->p[j].kind == PK_PHOTO))
				j++;
			if (j == t->n || !continues(&t->p[j]))
				break;
			struct buf b;
			buf_init(&b, BUF_NOLIMIT);
			buf_adds(&b, a->text);
			join_text(&b, t->p[j].text);
			free(a->text);
			a->text = buf_detach(&b);
			t->p[j].gone = true;
			warn(
			    t, a->line,
			    "joined with line %d into one paragraph (taken for a page break%s); if "
			    "they are two paragraphs, end this line with punctuation",
			    t->p[j].line, j > i + 1 ? ", with a caption between" : "");
		}
	}
}

/* Two title lines in a row between paragraphs: one heading printed over two
 * lines. */
static void join_headings(struct typeset *t, unsigned flags)
{
	if (flags & MD_COLOPHON)
		return;
	for (size_t i = 0; i + 2 < t->n; i++) {
		struct para *a = &t->p[i], *b = &t->p[i + 1], *c = &t->p[i + 2];
		if (!heading_candidate(a) || !heading_candidate(b) || b->gap >= IMAGE_GAP ||
		    c->gone || !continues(c))
			continue;
		if (i > 0 && heading_candidate(&t->p[i - 1]))
			continue;
		struct buf m;
		buf_init(&m, BUF_NOLIMIT);
		buf_adds(&m, a->text);
		join_text(&m, b->text);
		if (utf8_len(buf_str(&m)) <= HEADING_MAX) {
			free(a->text);
			a->text = buf_detach(&m);
			b->gone = true;
		}
		buf_free(&m);
	}
}

/* Captions whose figure or table is not in the export are marked once. */
static void mark_absent(struct typeset *t)
{
	for (size_t i = 0; i < t->n; i++) {
		struct para *p = &t->p[i];
		if (p->gone || (p->kind != PK_CAPTION && p->kind != PK_PHOTO))
			continue;
		bool table;
		const char *s = figure_word(p->text, &table);
		const struct para *prev = NULL, *next = NULL;
		for (size_t j = i; j-- > 0 && prev == NULL;)
			if (!t->p[j].gone)
				prev = &t->p[j];
		for (size_t j = i + 1; j < t->n && next == NULL; j++)
			if (!t->p[j].gone)
				next = &t->p[j];
		if (p->kind == PK_CAPTION && (is_table(prev) || is_table(next)))
			continue; /* its table (or the figure the export made a table) is here */
		bool zh = false;
		for (const char *q = s, *end = s + strlen(s); q < end && !zh;) {
			int32_t c = utf8_next(&q, end);
			zh = c > 0 && utf8_is_han((uint32_t)c);
		}
		const char *mark =
		    zh ? (table ? "（表略）" : "（图略）")
		       : (table ? " (table not included)" : " (figure not included)");
		const char *bare = zh ? mark : mark + 1;
		if (!strstr(p->text, bare)) {
			/* after the caption's own line, before a footnote under it */
			size_t first = strcspn(p->text, "\n");
			struct buf b;
			buf_init(&b, BUF_NOLIMIT);
			buf_add(&b, p->text, first);
			buf_adds(&b, mark);
			buf_adds(&b, p->text + first);
			free(p->text);
			p->text = buf_detach(&b);
		}
		if (p->kind == PK_PHOTO)
			warn(t, p->line,
			     "taken for the caption of an image that is not in the export (the "
			     "blank "
			     "lines above it are where it stood); shown as a caption marked %s",
			     bare);
		else
			warn(
			    t, p->line,
			    "the %s this caption is for is not in the export; the caption is kept, "
			    "marked %s",
			    table ? "table" : "figure", bare);
	}
}

/*
 * The export as Markdown, one paragraph per block; t->caption_lines says
 * where the captions are for the tree pass. A lone "* …" line is a printed
 * footnote, not a list: its asterisk is escaped.
 */
static char *typeset_export(struct typeset *t, const char *src, size_t len, unsigned flags)
{
	split_paras(t, src, len);
	classify(t, flags);
	join_page_breaks(t);
	join_headings(t, flags);
	mark_absent(t);
	figure_refs(t);
	if (t->doc->nwarnings > 1)
		qsort(t->doc->warnings, t->doc->nwarnings, sizeof *t->doc->warnings, by_line);
	struct buf out;
	buf_init(&out, BUF_NOLIMIT);
	int line = 1;
	for (size_t i = 0; i < t->n; i++) {
		struct para *p = &t->p[i];
		if (p->gone)
			continue;
		if (out.len > 0) {
			buf_adds(&out, "\n\n");
			line += 2;
		}
		if (p->kind == PK_CAPTION || p->kind == PK_PHOTO) {
			t->caption_lines = xreallocarray(t->caption_lines, t->ncaptions + 1,
			                                 sizeof *t->caption_lines);
			t->caption_lines[t->ncaptions++] = line;
		}
		/* line by line: tables keep their ASCII */
		for (const char *l = p->text; l;) {
			const char *nl = strchr(l, '\n');
			char *one = xstrndup(l, nl ? (size_t)(nl - l) : strlen(l));
			if ((p->nlines == 1 || p->kind == PK_CAPTION) && one[0] == '*' &&
			    one[1] == ' ' && (unsigned char)one[2] >= 0x80)
				buf_addc(&out, '\\');
			if (*skip_ws(one) == '|')
				buf_adds(&out, one);
			else
				restore_fullwidth(&out, one);
			free(one);
			if (nl) {
				buf_addc(&out, '\n');
				line++;
			}
			l = nl ? nl + 1 : NULL;
		}
	}
	buf_addc(&out, '\n');
	return buf_detach(&out);
}

static void typeset_free(struct typeset *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->p[i].text);
	free(t->p);
	free(t->caption_lines);
}

static bool title_like(cmark_node *para)
{
	if (has_breaks(para) || has_link(para))
		return false;
	char *t = plain_dup(para);
	bool ok = title_like_str(t);
	free(t);
	return ok;
}

static bool is_text_block(cmark_node *n)
{
	if (n == NULL)
		return false;
	cmark_node_type t = cmark_node_get_type(n);
	return t == CMARK_NODE_PARAGRAPH || t == CMARK_NODE_LIST || t == CMARK_NODE_HEADING ||
	       t == CMARK_NODE_BLOCK_QUOTE || t == CMARK_NODE_CUSTOM_BLOCK || t == CMARK_NODE_TABLE;
}

/* Replaces a paragraph by one of our blocks holding its inline content. */
static cmark_node *retype(cmark_node *para, const char *enter, const char *exit)
{
	cmark_node *c = custom(enter, exit);
	cmark_node_insert_before(para, c);
	move_children(para, c);
	cmark_node_free(para);
	return c;
}

/* A space between two Han characters in a heading is the line break of the
 * printed page (Chinese sets none there); one between Chinese and Latin is
 * real. */
static void han_spaces(cmark_node *h)
{
	for (cmark_node *c = cmark_node_first_child(h); c; c = cmark_node_next(c)) {
		if (cmark_node_get_type(c) != CMARK_NODE_TEXT)
			continue;
		const char *s = cmark_node_get_literal(c), *p = s, *end = s + strlen(s);
		struct buf b;
		buf_init(&b, BUF_NOLIMIT);
		uint32_t prev = 0;
		while (p < end) {
			if (*p == ' ') {
				const char *q = p;
				while (q < end && *q == ' ')
					q++;
				uint32_t next = utf8_first(q, (size_t)(end - q));
				if (!(utf8_is_han(prev) && utf8_is_han(next)))
					buf_add(&b, p, (size_t)(q - p));
				p = q;
				continue;
			}
			const char *at = p;
			int32_t cp = utf8_next(&p, end);
			buf_add(&b, at, (size_t)(p - at));
			prev = cp < 0 ? 0 : (uint32_t)cp;
		}
		cmark_node_set_literal(c, buf_str(&b));
		buf_free(&b);
	}
}

static void subheadings(cmark_node *parent, int level)
{
	cmark_node *c = cmark_node_first_child(parent), *next;
	for (; c; c = next) {
		next = cmark_node_next(c);
		if (cmark_node_get_type(c) != CMARK_NODE_PARAGRAPH || !title_like(c))
			continue;
		if (!is_text_block(cmark_node_previous(c)) && level == 2)
			continue; /* a subheading follows text */
		if (next == NULL || !is_text_block(next))
			continue; /* and text follows it */
		cmark_node *h = cmark_node_new(CMARK_NODE_HEADING);
		cmark_node_set_heading_level(h, level);
		cmark_node_insert_before(c, h);
		move_children(c, h);
		cmark_node_free(c);
		han_spaces(h);
	}
}

static bool caption_at(const struct ctx *x, int line)
{
	for (size_t i = 0; i < x->ncaptions; i++)
		if (x->caption_lines[i] == line)
			return true;
	return false;
}

/* Captions and bylines among the children of parent. */
static void captions(const struct ctx *x, cmark_node *parent)
{
	cmark_node *c = cmark_node_first_child(parent), *next;
	for (; c; c = next) {
		next = cmark_node_next(c);
		if (cmark_node_get_type(c) != CMARK_NODE_PARAGRAPH)
			continue;
		if (caption_at(x, cmark_node_get_start_line(c))) {
			retype(c, "<p class=\"mx-caption\">", "</p>\n");
			continue;
		}
		if (has_breaks(c))
			continue;
		char *t = plain_dup(c);
		if (starts(t, "* "))
			retype(c, "<p class=\"mx-caption\">", "</p>\n");
		else if (is_byline_text(t))
			retype(c, "<p class=\"mx-byline\">", "</p>\n");
		free(t);
	}
}

static void raw_export(const struct ctx *x, cmark_node *doc, unsigned flags)
{
	cmark_node *c, *next;
	/* The printed QR code is not in the export: a line asking to scan it
	 * (or a link to "#") is noise in mail and on the web. */
	for (c = cmark_node_first_child(doc); c; c = next) {
		next = cmark_node_next(c);
		if (cmark_node_get_type(c) != CMARK_NODE_PARAGRAPH)
			continue;
		char *t = plain_dup(c);
		if (is_qr_text(t))
			cmark_node_free(c);
		free(t);
	}
	captions(x, doc);
	for (c = cmark_node_first_child(doc); c; c = cmark_node_next(c)) {
		if (cmark_node_get_type(c) != CMARK_NODE_PARAGRAPH)
			continue;
		char *t = plain_dup(c);
		bool related = is_related_text(t);
		if (!related) {
			free(t);
			continue;
		}
		struct buf enter;
		buf_init(&enter, BUF_NOLIMIT);
		buf_adds(&enter, "<div class=\"mx-related\">\n<p class=\"mx-related-title\">");
		const char *s = skip_ws(t);
		size_t n = strlen(s);
		while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
			n--;
		char *title = xstrndup(s, n);
		html_escape(&enter, title, strlen(title));
		buf_adds(&enter, "</p>\n");
		cmark_node *box = custom(buf_str(&enter), "</div>\n");
		buf_free(&enter);
		cmark_node_insert_before(c, box);
		/* The box runs to the end of the article. */
		cmark_node *k;
		while ((k = cmark_node_next(c)) != NULL) {
			cmark_node_unlink(k);
			cmark_node_append_child(box, k);
		}
		/* The HTML has the title in on_enter; text/plain takes it from here. */
		cmark_node_set_user_data(box, title);
		cmark_node_free(c);
		free(t);
		if (!(flags & MD_COLOPHON))
			subheadings(box, 3);
		break;
	}
	if (!(flags & MD_COLOPHON))
		subheadings(doc, 2);
}

/* Wide tables scroll on their own on a phone instead of widening the page. */
static void wrap_tables(cmark_node *doc)
{
	cmark_iter *it = cmark_iter_new(doc);
	cmark_event_type ev;
	cmark_node **tables = NULL;
	size_t n = 0;
	while ((ev = cmark_iter_next(it)) != CMARK_EVENT_DONE) {
		cmark_node *t = cmark_iter_get_node(it);
		if (ev == CMARK_EVENT_ENTER && cmark_node_get_type(t) == CMARK_NODE_TABLE) {
			tables = xreallocarray(tables, n + 1, sizeof *tables);
			tables[n++] = t;
		}
	}
	cmark_iter_free(it);
	for (size_t i = 0; i < n; i++) {
		/* focusable, so that the keyboard can scroll it too */
		cmark_node *w = custom("<div class=\"mx-table\" tabindex=\"0\">\n", "</div>\n");
		cmark_node_insert_before(tables[i], w);
		cmark_node_unlink(tables[i]);
		cmark_node_append_child(w, tables[i]);
	}
	free(tables);
}

/* ---- plain text ---------------------------------------------------------- */

static void inline_text(cmark_node *n, struct buf *out);

static void link_text(cmark_node *c, struct buf *out)
{
	const char *url = cmark_node_get_url(c);
	struct buf label;
	buf_init(&label, BUF_NOLIMIT);
	inline_text(c, &label);
	const char *l = buf_str(&label);
	bool same = strcmp(l, url) == 0 ||
	            (strncmp(url, "mailto:", 7) == 0 && strcmp(l, url + 7) == 0) ||
	            (strncmp(url, "http://", 7) == 0 && strcmp(l, url + 7) == 0);
	if (cmark_node_get_type(c) == CMARK_NODE_IMAGE) {
		buf_printf(out, "[%s] <%s>", label.len ? l : "image", url);
	} else if (same || label.len == 0) {
		buf_adds(out, url);
	} else {
		buf_printf(out, "%s <%s>", l, url);
	}
	buf_free(&label);
}

static void inline_text(cmark_node *n, struct buf *out)
{
	for (cmark_node *c = cmark_node_first_child(n); c; c = cmark_node_next(c)) {
		cmark_node_type t = cmark_node_get_type(c);
		if (t == CMARK_NODE_TEXT)
			buf_adds(out, cmark_node_get_literal(c));
		else if (t == CMARK_NODE_CODE)
			buf_adds(out, cmark_node_get_literal(c));
		else if (t == CMARK_NODE_SOFTBREAK)
			buf_addc(out, ' ');
		else if (t == CMARK_NODE_LINEBREAK)
			buf_addc(out, '\n');
		else if (t == CMARK_NODE_LINK || t == CMARK_NODE_IMAGE)
			link_text(c, out);
		else if (t == CMARK_NODE_STRIKETHROUGH) {
			buf_adds(out, "~~");
			inline_text(c, out);
			buf_adds(out, "~~");
		} else
			inline_text(c, out);
	}
}

static void trim_spaces(struct buf *out)
{
	while (out->len > 0 && out->data[out->len - 1] == ' ')
		buf_truncate(out, out->len - 1);
}

/*
 * Line breaking is UAX #14 through libunistring: it knows which marks may
 * not start or end a line in Chinese (kinsoku) and never breaks inside a
 * word or a URL. A line is broken where a break is allowed and needed; the
 * spaces before a break go.
 */
void md_wrap(struct buf *out, const char *text, size_t width, const char *indent)
{
	size_t ind = utf8_width(indent);
	int avail = width > ind + 8 ? (int)(width - ind) : 8;
	for (const char *line = text; line;) {
		const char *nl = strchr(line, '\n');
		size_t n = nl ? (size_t)(nl - line) : strlen(line);
		while (n > 0 && *line == ' ') {
			line++;
			n--;
		}
		/* An ASCII run without spaces (a URL, "IN-22K-14M", "v2.0,") stays
		 * whole: UAX #14 would break after '/' or '-'. */
		char *brk = xmalloc(n + 1), *keep = xcalloc(n + 1, 1);
		for (size_t i = 1; i < n; i++)
			if ((unsigned char)line[i] > ' ' && (unsigned char)line[i] < 0x80 &&
			    (unsigned char)line[i - 1] > ' ' && (unsigned char)line[i - 1] < 0x80)
				keep[i] = UC_BREAK_PROHIBITED;
		if (n > 0)
			u8_width_linebreaks((const uint8_t *)line, n, avail, 0, 0, keep, "UTF-8",
			                    brk);
		free(keep);
		buf_adds(out, indent);
		for (size_t i = 0; i < n; i++) {
			if (i > 0 && brk[i] == UC_BREAK_POSSIBLE) {
				trim_spaces(out);
				buf_addc(out, '\n');
				buf_adds(out, indent);
			}
			buf_addc(out, line[i]);
		}
		free(brk);
		trim_spaces(out);
		buf_addc(out, '\n');
		line = nl ? nl + 1 : NULL;
	}
}

static void block_text(cmark_node *n, struct buf *out, const char *indent);

static void underline(struct buf *out, const char *text, const char *indent, char ch)
{
	size_t w = 0;
	const char *line = text;
	for (const char *p = text;; p++)
		if (*p == '\n' || *p == '\0') {
			char *l = xstrndup(line, (size_t)(p - line));
			size_t lw = utf8_width(l);
			free(l);
			if (lw > w)
				w = lw;
			if (*p == '\0')
				break;
			line = p + 1;
		}
	buf_adds(out, indent);
	for (size_t i = 0; i < w && i < TEXT_WIDTH; i++)
		buf_addc(out, ch);
	buf_addc(out, '\n');
}

static bool empty_cell(const char *s)
{
	return s == NULL || *skip_ws(s) == '\0';
}

/*
 * A table too wide for a terminal, as one item per row: "- SwinV1-B: param
 * 88M, pre-train images IN-22K-14M, …". A second header row (first cell
 * empty under a header with empty cells, as printed tables with spanning
 * headings come out) is joined to the header; an empty heading takes the
 * one to its left, an empty first cell the row above's.
 */
static void rows_as_blocks(char **cell, size_t nrows, size_t ncols, struct buf *out,
                           const char *indent)
{
	char **head = xcalloc(ncols, sizeof *head);
	bool gaps = false;
	for (size_t c = 0; c < ncols; c++)
		gaps |= empty_cell(cell[c]);
	size_t first = 1;
	for (size_t c = 0; c < ncols; c++) {
		const char *h = cell[c];
		for (size_t k = c; empty_cell(h) && k-- > 1;)
			h = cell[k];
		struct buf b;
		buf_init(&b, BUF_NOLIMIT);
		if (!empty_cell(h))
			buf_adds(&b, h);
		if (gaps && nrows > 2 && empty_cell(cell[ncols]) && !empty_cell(cell[ncols + c])) {
			if (b.len)
				buf_addc(&b, ' ');
			buf_adds(&b, cell[ncols + c]);
		}
		head[c] = buf_detach(&b);
	}
	if (gaps && nrows > 2 && empty_cell(cell[ncols]))
		first = 2;
	const char *label = "";
	char *hang = xasprintf("%s  ", indent);
	for (size_t r = first; r < nrows; r++) {
		struct buf b;
		buf_init(&b, BUF_NOLIMIT);
		if (!empty_cell(cell[r * ncols]))
			label = cell[r * ncols];
		buf_printf(&b, "%s:", label);
		bool any = false;
		for (size_t c = 1; c < ncols; c++) {
			const char *v = cell[r * ncols + c];
			if (empty_cell(v))
				continue;
			buf_printf(&b, "%s %s%s%s", any ? "," : "", head[c], head[c][0] ? " " : "",
			           v);
			any = true;
		}
		size_t at = out->len + strlen(indent);
		md_wrap(out, buf_str(&b), TEXT_WIDTH, hang);
		out->data[at] = '-';
		buf_free(&b);
	}
	free(hang);
	for (size_t c = 0; c < ncols; c++)
		free(head[c]);
	free(head);
}

static void table_text(cmark_node *t, struct buf *out, const char *indent)
{
	size_t ncols = cmark_gfm_extensions_get_table_columns(t);
	uint8_t *align = cmark_gfm_extensions_get_table_alignments(t);
	size_t nrows = 0;
	for (cmark_node *r = cmark_node_first_child(t); r; r = cmark_node_next(r))
		nrows++;
	if (ncols == 0 || nrows == 0)
		return;
	char **cell = xcalloc(nrows * ncols, sizeof *cell);
	size_t *w = xcalloc(ncols, sizeof *w);
	size_t ri = 0;
	for (cmark_node *r = cmark_node_first_child(t); r; r = cmark_node_next(r), ri++) {
		size_t ci = 0;
		for (cmark_node *c = cmark_node_first_child(r); c && ci < ncols;
		     c = cmark_node_next(c), ci++) {
			struct buf b;
			buf_init(&b, BUF_NOLIMIT);
			inline_text(c, &b);
			for (size_t k = 0; k < b.len; k++)
				if (b.data[k] == '\n')
					b.data[k] = ' ';
			cell[ri * ncols + ci] = buf_detach(&b);
			size_t cw = utf8_width(cell[ri * ncols + ci]);
			if (cw > w[ci])
				w[ci] = cw;
		}
	}
	size_t total = utf8_width(indent) + 3 * (ncols - 1);
	for (size_t c = 0; c < ncols; c++)
		total += w[c];
	if (total > LINE_MAX_COLS) {
		rows_as_blocks(cell, nrows, ncols, out, indent);
		goto done;
	}
	for (size_t r = 0; r < nrows; r++) {
		buf_adds(out, indent);
		for (size_t c = 0; c < ncols; c++) {
			const char *s = cell[r * ncols + c] ? cell[r * ncols + c] : "";
			size_t pad = w[c] - utf8_width(s);
			size_t left = align && align[c] == 'r'   ? pad
			              : align && align[c] == 'c' ? pad / 2
			                                         : 0;
			if (c > 0)
				buf_adds(out, " | ");
			for (size_t k = 0; k < left; k++)
				buf_addc(out, ' ');
			buf_adds(out, s);
			if (c + 1 < ncols)
				for (size_t k = left; k < pad; k++)
					buf_addc(out, ' ');
		}
		while (out->len > 0 && out->data[out->len - 1] == ' ')
			buf_truncate(out, out->len - 1);
		buf_addc(out, '\n');
		if (r == 0) {
			buf_adds(out, indent);
			for (size_t c = 0; c < ncols; c++) {
				if (c > 0)
					buf_adds(out, "-+-");
				for (size_t k = 0; k < w[c]; k++)
					buf_addc(out, '-');
			}
			buf_addc(out, '\n');
		}
	}
done:
	for (size_t k = 0; k < nrows * ncols; k++)
		free(cell[k]);
	free(cell);
	free(w);
}

static void children_text(cmark_node *n, struct buf *out, const char *indent)
{
	for (cmark_node *c = cmark_node_first_child(n); c; c = cmark_node_next(c))
		block_text(c, out, indent);
}

static void block_text(cmark_node *n, struct buf *out, const char *indent)
{
	cmark_node_type t = cmark_node_get_type(n);
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	if (out->len > 0 &&
	    !(out->len >= 2 && out->data[out->len - 1] == '\n' && out->data[out->len - 2] == '\n'))
		buf_addc(out, '\n'); /* a blank line between blocks */
	if (t == CMARK_NODE_PARAGRAPH) {
		inline_text(n, &b);
		md_wrap(out, buf_str(&b), TEXT_WIDTH, indent);
	} else if (t == CMARK_NODE_HEADING) {
		inline_text(n, &b);
		md_wrap(out, buf_str(&b), TEXT_WIDTH, indent);
		underline(out, buf_str(&b), indent,
		          cmark_node_get_heading_level(n) == 1 ? '=' : '-');
	} else if (t == CMARK_NODE_CUSTOM_BLOCK && strcmp(kind(n), "related") == 0) {
		const char *title = cmark_node_get_user_data(n);
		buf_adds(&b, title ? title : "");
		md_wrap(out, buf_str(&b), TEXT_WIDTH, indent);
		underline(out, buf_str(&b), indent, '-');
		children_text(n, out, indent);
	} else if (t == CMARK_NODE_CUSTOM_BLOCK && strcmp(kind(n), "table") == 0) {
		children_text(n, out, indent);
	} else if (t == CMARK_NODE_CUSTOM_BLOCK) {
		/* caption, byline: their inline content */
		inline_text(n, &b);
		char *ind = xasprintf("%s  ", indent);
		md_wrap(out, buf_str(&b), TEXT_WIDTH, is_custom(n, "caption") ? ind : indent);
		free(ind);
	} else if (t == CMARK_NODE_BLOCK_QUOTE) {
		char *ind = xasprintf("%s> ", indent);
		children_text(n, out, ind);
		free(ind);
	} else if (t == CMARK_NODE_LIST) {
		int num = cmark_node_get_list_start(n);
		bool ordered = cmark_node_get_list_type(n) == CMARK_ORDERED_LIST;
		bool first = true;
		for (cmark_node *it = cmark_node_first_child(n); it; it = cmark_node_next(it)) {
			struct buf item;
			buf_init(&item, BUF_NOLIMIT);
			char *marker = ordered ? xasprintf("%d. ", num++) : xstrdup("- ");
			char *hang = xasprintf("%s%*s", indent, (int)strlen(marker), "");
			children_text(it, &item, hang);
			/* Replace the hanging indent of the first line by the marker. */
			const char *s = buf_str(&item);
			while (*s == '\n')
				s++;
			if (!first && cmark_node_get_list_tight(n) == 0)
				buf_addc(out, '\n');
			buf_adds(out, indent);
			buf_adds(out, marker);
			buf_adds(out, s + (strncmp(s, hang, strlen(hang)) == 0 ? strlen(hang) : 0));
			while (out->len >= 2 && out->data[out->len - 1] == '\n' &&
			       out->data[out->len - 2] == '\n')
				buf_truncate(out, out->len - 1);
			first = false;
			free(marker);
			free(hang);
			buf_free(&item);
		}
	} else if (t == CMARK_NODE_CODE_BLOCK) {
		const char *lit = cmark_node_get_literal(n);
		for (const char *l = lit; l && *l;) {
			const char *nl = strchr(l, '\n');
			size_t len = nl ? (size_t)(nl - l) : strlen(l);
			buf_printf(out, "%s    %.*s\n", indent, (int)len, l);
			l = nl ? nl + 1 : NULL;
		}
	} else if (t == CMARK_NODE_THEMATIC_BREAK) {
		buf_printf(out, "%s%s\n", indent, "* * *");
	} else if (t == CMARK_NODE_TABLE) {
		table_text(n, out, indent);
	} else {
		children_text(n, out, indent);
	}
	buf_free(&b);
}

/* ---- summary ------------------------------------------------------------- */

static char *summary(cmark_node *doc)
{
	for (cmark_node *c = cmark_node_first_child(doc); c; c = cmark_node_next(c)) {
		if (cmark_node_get_type(c) != CMARK_NODE_PARAGRAPH)
			continue;
		struct buf b;
		buf_init(&b, BUF_NOLIMIT);
		plain(c, &b);
		/* collapse whitespace, and drop it between CJK characters */
		char *flat = utf8_clean_dup(buf_str(&b), 0);
		buf_reset(&b);
		bool sp = false;
		for (const char *p = flat; *p; p++) {
			if (*p == ' ') {
				sp = b.len > 0;
				continue;
			}
			if (sp)
				buf_addc(&b, ' ');
			sp = false;
			buf_addc(&b, *p);
		}
		free(flat);
		if (b.len == 0) {
			buf_free(&b);
			continue;
		}
		if (utf8_len(buf_str(&b)) > 200) {
			buf_truncate(&b, utf8_prefix(buf_str(&b), 199));
			buf_adds(&b, "…");
		}
		return buf_detach(&b);
	}
	return xstrdup("");
}

/*
 * A header cell with no text (the blank corner of a printed table, or a
 * heading that spanned two columns) says nothing to a screen reader, which
 * announces it as a header all the same: it becomes an ordinary empty cell.
 */
static char *empty_headers_as_cells(const char *html)
{
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	for (const char *p = html; *p;) {
		const char *th = strstr(p, "<th");
		if (th == NULL) {
			buf_adds(&b, p);
			break;
		}
		const char *gt = strchr(th, '>');
		if (gt && (th[3] == '>' || th[3] == ' ') && strncmp(gt + 1, "</th>", 5) == 0) {
			buf_add(&b, p, (size_t)(th - p));
			buf_adds(&b, "<td");
			buf_add(&b, th + 3, (size_t)(gt + 1 - (th + 3)));
			buf_adds(&b, "</td>");
			p = gt + 6;
		} else {
			buf_add(&b, p, (size_t)(th + 3 - p));
			p = th + 3;
		}
	}
	return buf_detach(&b);
}

/* ---- entry point --------------------------------------------------------- */

int md_render(const char *src, size_t len, const struct md_opts *o, struct md_doc *out,
              struct err *err)
{
	unsigned flags = o ? o->flags : 0;
	struct ctx x = {o, out, NULL, 0};
	struct typeset ts = {NULL, 0, o && o->first_line > 0 ? o->first_line : 1, NULL, 0, out};
	memset(out, 0, sizeof *out);
	char *text;
	if (flags & MD_RAW_EXPORT) {
		char *typeset = typeset_export(&ts, src, len, flags);
		text = rewrite_math(typeset, strlen(typeset));
		free(typeset);
		x.caption_lines = ts.caption_lines;
		x.ncaptions = ts.ncaptions;
	} else {
		text = xstrndup(src, len);
	}
	int copt = CMARK_OPT_VALIDATE_UTF8 | ((flags & MD_RAW_EXPORT) ? CMARK_OPT_HARDBREAKS : 0);
	cmark_parser *p = cmark_parser_new(copt);
	for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
		cmark_syntax_extension *e = cmark_find_syntax_extension(exts[i]);
		if (e == NULL) {
			cmark_parser_free(p);
			free(text);
			typeset_free(&ts);
			return err_set(err, ERR_INTERNAL,
			               "cmark-gfm extension '%s' missing (md_init not called?)",
			               exts[i]);
		}
		cmark_parser_attach_syntax_extension(p, e);
	}
	cmark_parser_feed(p, text, strlen(text));
	cmark_node *doc = cmark_parser_finish(p);
	free(text);

	sanitise(&x, doc);
	if (flags & MD_RAW_EXPORT)
		raw_export(&x, doc, flags);
	typeset_free(&ts);
	wrap_tables(doc);

	char *html = cmark_render_html(doc, copt, cmark_parser_get_syntax_extensions(p));
	out->html = empty_headers_as_cells(html);
	free(html);

	struct buf t;
	buf_init(&t, BUF_NOLIMIT);
	children_text(doc, &t, "");
	while (t.len > 0 && t.data[t.len - 1] == '\n')
		buf_truncate(&t, t.len - 1);
	buf_addc(&t, '\n');
	out->text = buf_detach(&t);
	out->summary = summary(doc);

	/* related boxes keep their title in user data */
	cmark_iter *it = cmark_iter_new(doc);
	cmark_event_type ev;
	while ((ev = cmark_iter_next(it)) != CMARK_EVENT_DONE) {
		cmark_node *n = cmark_iter_get_node(it);
		if (ev == CMARK_EVENT_ENTER && is_custom(n, "related"))
			free(cmark_node_get_user_data(n));
	}
	cmark_iter_free(it);
	cmark_node_free(doc);
	cmark_parser_free(p);
	return 0;
}

void md_doc_free(struct md_doc *d)
{
	if (d == NULL)
		return;
	free(d->html);
	free(d->text);
	free(d->summary);
	for (size_t i = 0; i < d->nassets; i++)
		free(d->assets[i]);
	free(d->assets);
	for (size_t i = 0; i < d->nwarnings; i++)
		free(d->warnings[i].msg);
	free(d->warnings);
	memset(d, 0, sizeof *d);
}
