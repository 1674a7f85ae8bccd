/*
 * Markdown to HTML and plain text (see md.h).
 *
 * cmark-gfm parses (tables, autolinks, strikethrough, tagfilter; safe mode),
 * then we rewrite the tree: raw HTML, unsafe or empty links and images the
 * issue does not hold go, and for raw magazine exports the rules of
 * docs/issue-format.md (a pass over the lines before cmark, one over its
 * tree) turn lines into captions, bylines, lists, subheadings and a
 * related-reading box. Our own blocks
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
	/* letter: a symbol that reads as a letter, which the space after the
	 * command (its end in TeX) does not separate from what follows */
	static const struct {
		const char *tex, *text;
		bool letter;
	} cmds[] = {
	    {"times", "×", 0},     {"cdot", "·", 0},   {"pm", "±", 0},     {"leq", "≤", 0},
	    {"le", "≤", 0},        {"geq", "≥", 0},    {"ge", "≥", 0},     {"neq", "≠", 0},
	    {"approx", "≈", 0},    {"sim", "∼", 0},    {"propto", "∝", 0}, {"in", "∈", 0},
	    {"infty", "∞", 1},     {"sum", "∑", 1},    {"prod", "∏", 1},   {"sqrt", "√", 1},
	    {"partial", "∂", 1},   {"nabla", "∇", 1},  {"to", "→", 0},     {"rightarrow", "→", 0},
	    {"leftarrow", "←", 0}, {"circ", "∘", 0},   {"ldots", "…", 1},  {"cdots", "⋯", 1},
	    {"alpha", "α", 1},     {"beta", "β", 1},   {"gamma", "γ", 1},  {"delta", "δ", 1},
	    {"epsilon", "ε", 1},   {"zeta", "ζ", 1},   {"eta", "η", 1},    {"theta", "θ", 1},
	    {"kappa", "κ", 1},     {"lambda", "λ", 1}, {"mu", "μ", 1},     {"nu", "ν", 1},
	    {"xi", "ξ", 1},        {"pi", "π", 1},     {"rho", "ρ", 1},    {"sigma", "σ", 1},
	    {"tau", "τ", 1},       {"phi", "φ", 1},    {"chi", "χ", 1},    {"psi", "ψ", 1},
	    {"omega", "ω", 1},     {"Gamma", "Γ", 1},  {"Delta", "Δ", 1},  {"Theta", "Θ", 1},
	    {"Lambda", "Λ", 1},    {"Xi", "Ξ", 1},     {"Pi", "Π", 1},     {"Sigma", "Σ", 1},
	    {"Phi", "Φ", 1},       {"Psi", "Ψ", 1},    {"Omega", "Ω", 1},
	};
	while (p < end) {
		if ((size_t)(end - p) >= 6 && memcmp(p, "^\\circ", 6) == 0) {
			buf_adds(out, "°"); /* 25^\circ */
			p += 6;
			continue;
		}
		if ((size_t)(end - p) >= 8 && memcmp(p, "^{\\circ}", 8) == 0) {
			buf_adds(out, "°");
			p += 8;
			continue;
		}
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
					if (cmds[i].letter && q < end && *q == ' ')
						q++;
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

/* Which of our blocks a custom block is: "caption", "byline", "related",
 * "table", "items" (a list of numbered lines) or "item". */
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
	if (strncmp(k, "items", 5) == 0)
		return "items";
	if (strncmp(k, "item", 4) == 0)
		return "item";
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

/* A block of a raw export the typeset pass decided on, by the line of the
 * Markdown it hands to cmark where the block starts. */
enum { MK_CAPTION = 1, MK_ITEM, MK_HEAD };
struct mark {
	int line;
	int kind;
	int run; /* MK_ITEM, MK_HEAD: the enumeration */
};

struct ctx {
	const struct md_opts *o;
	struct md_doc *doc;
	const struct mark *marks; /* raw exports: what the typeset pass decided */
	size_t nmarks;
};

static void add_asset(struct ctx *x, const char *path)
{
	for (size_t i = 0; i < x->doc->nassets; i++)
		if (strcmp(x->doc->assets[i], path) == 0)
			return;
	x->doc->assets = xreallocarray(x->doc->assets, x->doc->nassets + 1, sizeof *x->doc->assets);
	x->doc->assets[x->doc->nassets++] = xstrdup(path);
}

static bool is_caption_text(const char *s);
static const char *absent_mark(const char *caption);

/* A relative image the issue does not hold (md_opts.have_image). */
static bool image_missing(const struct ctx *x, cmark_node *img)
{
	const char *u = cmark_node_get_url(img);
	return x->o && x->o->have_image && relative_url(u) && safe_relpath(u) &&
	       !x->o->have_image(x->o->image_arg, u);
}

/* The only image of paragraph p (nothing else but blanks), or NULL. */
static cmark_node *lone_image(cmark_node *p)
{
	cmark_node *img = NULL;
	for (cmark_node *c = cmark_node_first_child(p); c; c = cmark_node_next(c)) {
		cmark_node_type t = cmark_node_get_type(c);
		const char *lit = t == CMARK_NODE_TEXT ? cmark_node_get_literal(c) : NULL;
		if (t == CMARK_NODE_IMAGE && img == NULL)
			img = c;
		else if (!(t == CMARK_NODE_SOFTBREAK || t == CMARK_NODE_LINEBREAK ||
		           (lit && lit[strspn(lit, " \t")] == '\0')))
			return NULL;
	}
	return img;
}

/*
 * A paragraph that is only an image the issue does not hold: its figure
 * caption ("![图 3：…](fig-3.png)") stays as a caption marked as for a figure
 * not there, anything else goes. Returns the node that replaces p, or NULL
 * when p is gone.
 */
static cmark_node *missing_figure(struct ctx *x, cmark_node *p, cmark_node *img)
{
	add_asset(x, cmark_node_get_url(img));
	char *alt = plain_dup(img);
	cmark_node *cap = NULL;
	if (is_caption_text(alt)) {
		struct buf b;
		buf_init(&b, BUF_NOLIMIT);
		const char *s = alt;
		while (*s == ' ')
			s++;
		buf_adds(&b, s);
		buf_adds(&b, absent_mark(s));
		cap = custom("<p class=\"mx-caption\">", "</p>\n");
		cmark_node *txt = cmark_node_new(CMARK_NODE_TEXT);
		cmark_node_set_literal(txt, buf_str(&b));
		cmark_node_append_child(cap, txt);
		cmark_node_insert_before(p, cap);
		buf_free(&b);
	}
	free(alt);
	cmark_node_free(p);
	return cap;
}

/* Removes an inline node, and the second of the two spaces around it. */
static void drop_inline(cmark_node *c)
{
	cmark_node *prev = cmark_node_previous(c), *next = cmark_node_next(c);
	const char *a = prev && cmark_node_get_type(prev) == CMARK_NODE_TEXT
	                    ? cmark_node_get_literal(prev)
	                    : NULL;
	const char *b = next && cmark_node_get_type(next) == CMARK_NODE_TEXT
	                    ? cmark_node_get_literal(next)
	                    : NULL;
	if (a && b && *a && a[strlen(a) - 1] == ' ' && *b == ' ') {
		char *rest = xstrdup(b + 1);
		cmark_node_set_literal(next, rest);
		free(rest);
	}
	cmark_node_free(c);
}

/* Depth-first: drop raw HTML, unwrap unsafe links, fix image URLs, leave
 * out images the issue does not hold. */
static void sanitise(struct ctx *x, cmark_node *n)
{
	cmark_node *c = cmark_node_first_child(n), *next;
	for (; c; c = next) {
		next = cmark_node_next(c);
		cmark_node_type t = cmark_node_get_type(c);
		cmark_node *img;
		if (t == CMARK_NODE_PARAGRAPH && (img = lone_image(c)) != NULL &&
		    image_missing(x, img)) {
			missing_figure(x, c, img);
			continue;
		}
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
			if (image_missing(x, c)) {
				add_asset(x, u);
				drop_inline(c);
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

static bool has_sentence_mark(const char *s);

/*
 * "来源：文汇报", "作者: …", "文 / 李明", "文｜本刊记者 陈可", "图｜…", "By …":
 * a credit label, then a colon, a slash or a bar, on a short line that is no
 * sentence.
 */
static bool is_byline_text(const char *s)
{
	static const char *const pre[] = {
	    "来源", "图片来源", "资料来源", "作者", "撰文", "编辑", "责编",   "责任编辑", "摄影",
	    "图片", "整理",     "策划",     "文",   "图",   "By ",  "Source", "Text",     "Photo"};
	s = skip_ws(s);
	if (utf8_len(s) > 40 || has_sentence_mark(s))
		return false;
	for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++) {
		if (strncasecmp(s, pre[i], strlen(pre[i])) != 0)
			continue;
		if (pre[i][strlen(pre[i]) - 1] == ' ')
			return true;
		const char *p = skip_ws(s + strlen(pre[i]));
		if (*p == ':' || *p == '/' || *p == '|' || starts(p, "：") || starts(p, "｜") ||
		    starts(p, "／"))
			return true;
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

enum pkind {
	PK_STRUCT,  /* Markdown or several lines: passed on as they are */
	PK_TEXT,    /* a paragraph or a subheading */
	PK_CAPTION, /* "图 1: …", "Table 2. …" */
	PK_PHOTO,   /* the caption of an image that stood right above */
	PK_ITEM,    /* an item of a list printed as numbered lines */
	PK_NUMHEAD, /* a numbered subheading ("一、…" over its section) */
};

struct para {
	char *text;    /* the lines as one string, joins applied */
	size_t nlines; /* lines in the source */
	int line;      /* 1-based line of the source */
	int gap;       /* blank lines before it */
	enum pkind kind;
	bool gone; /* joined into an earlier paragraph */
	int run;   /* PK_ITEM, PK_NUMHEAD: which enumeration (1, 2, …) */
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

/*
 * The number an enumerated line starts with: "1、", "2.", "3）", "(4)",
 * "（5）", "六、", "（七）", "①". Its style (which kind of marker) and value
 * go to *style and *value, the marker's length in bytes is returned; 0 for a
 * line that is not numbered. "1.5 倍" is a number, not a marker.
 */
enum { EN_DUN = 1, EN_DOT, EN_CLOSE, EN_PAREN, EN_HAN_DUN, EN_HAN_PAREN, EN_CIRCLED };

static long han_number(const char **pp)
{
	static const char *const d[] = {"一", "二", "三", "四", "五", "六", "七", "八", "九"};
	const char *p = *pp;
	long v = 0, unit = 0;
	for (bool more = true; more;) {
		more = false;
		for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
			if (starts(p, d[i])) {
				unit = (long)i + 1;
				p += 3;
				more = true;
			}
		if (starts(p, "十")) {
			v += (unit ? unit : 1) * 10;
			unit = 0;
			p += 3;
			more = true;
		}
	}
	*pp = p;
	return v + unit;
}

static size_t enum_marker(const char *line, int *style, long *value)
{
	const char *s = skip_ws(line), *p = s;
	bool paren = false;
	int st = 0;
	long v = 0;
	if (*p == '(' || starts(p, "（")) {
		p += *p == '(' ? 1 : 3;
		paren = true;
	}
	if (isdigit((unsigned char)*p)) {
		while (isdigit((unsigned char)*p) && v < 1000)
			v = v * 10 + (*p++ - '0');
		if (paren && (*p == ')' || starts(p, "）")))
			st = EN_PAREN;
		else if (!paren && starts(p, "、"))
			st = EN_DUN;
		else if (!paren && (*p == '.' || starts(p, "．")) &&
		         !isdigit((unsigned char)p[*p == '.' ? 1 : 3]))
			st = EN_DOT;
		else if (!paren && (*p == ')' || starts(p, "）")))
			st = EN_CLOSE;
	} else if ((v = han_number(&p)) > 0) {
		if (paren && (*p == ')' || starts(p, "）")))
			st = EN_HAN_PAREN;
		else if (!paren && starts(p, "、"))
			st = EN_HAN_DUN;
	} else if (!paren) {
		/* ① … ⑳: U+2460 … U+2473 */
		uint32_t c = utf8_first(p, strlen(p));
		if (c >= 0x2460 && c <= 0x2473) {
			st = EN_CIRCLED;
			v = (long)(c - 0x2460 + 1);
			p += 3;
		}
	}
	if (st == 0 || v <= 0)
		return 0;
	if (st != EN_CIRCLED)
		p += *p == '.' || *p == ')' ? 1 : 3;
	if (style)
		*style = st;
	if (value)
		*value = v;
	return (size_t)(p - line);
}

static bool enumerated(const char *s)
{
	return enum_marker(s, NULL, NULL) > 0;
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

/* A line of a date or a time only ("2023年7月1日", "2023-07-01 10:00"): a
 * dateline, not a title. */
static bool date_only(const char *s)
{
	bool digit = false;
	for (const char *p = s, *end = s + strlen(s); p < end;) {
		int32_t c = utf8_next(&p, end);
		if (c >= '0' && c <= '9')
			digit = true;
		else if (!(c == ' ' || c == '.' || c == '-' || c == '/' || c == ':' ||
		           c == 0x5e74 || c == 0x6708 || c == 0x65e5 || c == 0x53f7 ||
		           c == 0x65f6 || c == 0x5206 || c == 0xff1a))
			return false; /* 年 月 日 号 时 分 ： */
	}
	return digit;
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
	/* not a bracketed note, a footnote, nor an attribution ("——某某") */
	bool ok = n > 0 && n <= HEADING_MAX && s[0] != '(' && !starts(s, "（") && !starts(s, "*") &&
	          !starts(s, "—") && !starts(s, "--");
	for (size_t i = 0; ok && i < sizeof stop / sizeof stop[0]; i++)
		ok = last != stop[i];
	return ok && !ends_sentence_str(s) && !prose_str(s) && !date_only(s);
}

/* Markdown that is not a paragraph of prose: tables, lists, quotes, code,
 * headings, links on a line of their own, raw HTML. */
static bool structural_line(const char *s)
{
	s = skip_ws(s);
	if (*s == '|' || *s == '#' || *s == '>' || *s == '`' || *s == '<' || *s == '[' ||
	    *s == '\0' || starts(s, "!["))
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

/* A mark after which the sentence goes on: ，、；：,;: */
static bool clause_mark(uint32_t c)
{
	return c == 0xff0c || c == 0x3001 || c == 0xff1b || c == 0xff1a || c == ',' || c == ';' ||
	       c == ':';
}

/* The line after an image trace is that image's caption when it reads like
 * one: short, no sentence in it, not ending where a clause goes on, not a
 * numbered item or a label. A closing quote or bracket may end it. */
static bool photo_caption(const struct para *p)
{
	const char *s = skip_ws(p->text);
	return p->gap >= IMAGE_GAP && p->nlines == 1 && utf8_len(s) <= CAPTION_MAX &&
	       !has_sentence_mark(s) && !ends_sentence_str(s) && !clause_mark(last_cp_of(s)) &&
	       !enumerated(s) && !is_qr_text(s) && !is_byline_text(s) && !is_related_text(s);
}

static bool curly_quote(uint32_t c)
{
	return c == 0x201c || c == 0x201d || c == 0x2018 || c == 0x2019;
}

/* Joins b to a: no space between two CJK characters (curly quotes count as
 * Chinese punctuation next to them) nor after CJK punctuation, one space
 * otherwise (Chinese and Latin, two Latin words). */
static void join_text(struct buf *a, const char *b)
{
	b = skip_ws(b);
	uint32_t x = utf8_last(a->data, a->len), y = utf8_first(b, strlen(b));
	bool cx = utf8_is_cjk(x) || (curly_quote(x) && utf8_is_cjk(y));
	bool cy = utf8_is_cjk(y) || (curly_quote(y) && utf8_is_cjk(x));
	if (!(cx && (cy || (utf8_is_cjk(x) && !utf8_is_han(x)))))
		buf_addc(a, ' ');
	buf_adds(a, b);
}

/* A closing mark of Chinese text: ” ’ 」 』 ） 》 】 */
static bool cjk_close(uint32_t c)
{
	return c == 0x201d || c == 0x2019 || c == 0x300d || c == 0x300f || c == 0xff09 ||
	       c == 0x300b || c == 0x3011;
}

/*
 * ASCII , : ; ! ? right after a Han character is what the export made of the
 * full-width mark (Chinese text has no other use for it there); it becomes
 * the full-width one and the space the export added after it goes. So it does
 * after a closing quote or bracket of Chinese text (”, 」, ）, 》) when Chinese
 * text follows. ASCII after anything else is as the author typed it. Link
 * targets, autolinks and code spans are left alone.
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
		bool after = utf8_is_han(prev);
		if (fw && !after && cjk_close(prev)) {
			const char *q = p + 1;
			while (q < end && *q == ' ')
				q++;
			after = utf8_is_cjk(utf8_first(q, (size_t)(end - q)));
		}
		if (fw && *p != '(' && *p != ')' && after) {
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
	struct mark *marks; /* what the tree pass makes of the blocks, nmarks */
	size_t nmarks;
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

/* Trims blanks (spaces, tabs, ideographic spaces) around [*s, *s + *n). */
static void trim_blanks(const char **s, size_t *n)
{
	for (;;) {
		if (*n > 0 && (**s == ' ' || **s == '\t')) {
			(*s)++;
			(*n)--;
		} else if (*n >= 3 && memcmp(*s, "\xe3\x80\x80", 3) == 0) {
			*s += 3;
			*n -= 3;
		} else {
			break;
		}
	}
	for (;;) {
		if (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
			(*n)--;
		else if (*n >= 3 && memcmp(*s + *n - 3, "\xe3\x80\x80", 3) == 0)
			*n -= 3;
		else
			break;
	}
}

/* A line printed under a caption that belongs to it: a note or a source. */
static bool caption_note(const char *s)
{
	s = skip_ws(s);
	if (*s == '*' || starts(s, "※"))
		return true;
	static const char *const pre[] = {"注",       "Note",     "Notes",    "来源",
	                                  "资料来源", "数据来源", "图片来源", "Source"};
	for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++) {
		size_t n = strlen(pre[i]);
		if (strncasecmp(s, pre[i], n) == 0) {
			const char *p = skip_ws(s + n);
			if (*p == ':' || starts(p, "："))
				return true;
		}
	}
	return false;
}

/*
 * The export's lines as paragraphs: a blank line (or one of blanks only)
 * ends one. The blanks around a line are the printed page's indent and go.
 * A caption takes only its own line: a block that has one in the middle is
 * cut before it, and the lines after it are a paragraph of their own unless
 * they are its note ("注：", "* …") or the caption goes on (its line ends
 * in a comma). So does a title-like first line with prose under it.
 */
static void split_paras(struct typeset *t, const char *src, size_t len)
{
	int no = 0, gap = 0;
	struct para *cur = NULL;
	bool cur_caption = false, cur_table = false;
	uint32_t cur_last = 0;
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	for (const char *p = src, *end = src + len; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t k = nl ? (size_t)(nl - p) : (size_t)(end - p);
		const char *s = p;
		size_t n = k;
		trim_blanks(&s, &n);
		no++;
		if (n == 0) {
			if (cur) {
				cur->text = buf_detach(&b);
				buf_init(&b, BUF_NOLIMIT);
				cur = NULL;
			}
			gap++;
		} else {
			char *one = xstrndup(s, n);
			bool caption = is_caption_text(one);
			/* a title printed right on its paragraph: the first line is
			 * title-like and the second prose */
			const char *first = buf_str(&b);
			bool titled = cur && cur->nlines == 1 && !cur_caption && !cur_table &&
			              title_like_str(first) && !enumerated(first) &&
			              !is_qr_text(first) && !is_byline_text(first) &&
			              !is_related_text(first) && !structural_line(one) &&
			              prose_str(one);
			if (cur && !cur_table &&
			    (caption || titled ||
			     (cur_caption && !caption_note(one) && !clause_mark(cur_last)))) {
				cur->text = buf_detach(&b);
				buf_init(&b, BUF_NOLIMIT);
				cur = NULL;
			}
			if (cur == NULL) {
				t->p = xreallocarray(t->p, t->n + 1, sizeof *t->p);
				cur = &t->p[t->n++];
				*cur = (struct para){NULL,  0, t->first_line + no - 1, gap, PK_TEXT,
				                     false, 0};
				gap = 0;
				cur_caption = caption;
				cur_table = *one == '|';
			} else {
				buf_addc(&b, '\n');
			}
			buf_add(&b, s, n);
			cur->nlines++;
			cur_last = utf8_last(s, n);
			free(one);
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
		bool image = starts(s, "![") && is_caption_text(s + 2);
		if (image)
			s = skip_ws(s + 2); /* the caption of a Markdown image */
		if (!(t->p[i].kind == PK_CAPTION || image) ||
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

/* A numbered line that may be an item of an enumeration. */
static bool item_para(const struct para *p, int *style, long *value)
{
	return !p->gone && p->kind == PK_TEXT && p->nlines == 1 &&
	       enum_marker(p->text, style, value) > 0;
}

/* The next paragraph after i that is still there, or NULL. */
static struct para *next_para(struct typeset *t, size_t i)
{
	for (size_t j = i + 1; j < t->n; j++)
		if (!t->p[j].gone)
			return &t->p[j];
	return NULL;
}

/* A line that will be a subheading: a title followed by prose. */
static bool plain_heading(struct typeset *t, size_t i)
{
	const struct para *n = next_para(t, i);
	return heading_candidate(&t->p[i]) && n && continues(n);
}

#define MAX_ITEMS 100

/*
 * Numbered lines ("1、", "（一）", "(1)", "①"…) whose numbers run on from 1 in
 * one style are one enumeration. Printed one right after the other they are
 * a list; each a title over its own paragraphs, they are numbered
 * subheadings; otherwise they stay paragraphs. A numbered line is never a
 * caption, and never a subheading on its own.
 */
static void enumerations(struct typeset *t, unsigned flags)
{
	if (flags & MD_COLOPHON)
		return;
	int runs = 0;
	size_t item[MAX_ITEMS];
	for (size_t i = 0; i < t->n; i++) {
		int style, st;
		long v, w;
		if (t->p[i].run || !item_para(&t->p[i], &style, &v) || v != 1)
			continue;
		size_t n = 0;
		bool adjacent = true, between = false;
		item[n++] = i;
		for (size_t k = i + 1; k < t->n && n < MAX_ITEMS; k++) {
			const struct para *q = &t->p[k];
			if (q->gone)
				continue;
			if (item_para(q, &st, &w) && st == style) {
				if (w != v + (long)n)
					break;
				adjacent &= !between;
				between = false;
				item[n++] = k;
				continue;
			}
			if (plain_heading(t, k) ||
			    (q->kind == PK_STRUCT && is_related_text(q->text)))
				break;
			between = true;
		}
		if (n < 2)
			continue;
		bool heads = !adjacent;
		for (size_t j = 0; j < n && heads; j++) {
			/* a title, with a paragraph (not the next item) under it, or
			 * the items of an enumeration of another style */
			const struct para *q = &t->p[item[j]];
			const struct para *u = next_para(t, item[j]);
			while (u && (u->kind == PK_CAPTION || u->kind == PK_PHOTO))
				u = next_para(t, (size_t)(u - t->p));
			int us = 0;
			heads = title_like_str(q->text) && u &&
			        (j + 1 == n || u != &t->p[item[j + 1]]) &&
			        (u->kind == PK_STRUCT ||
			         (u->kind == PK_TEXT &&
			          (enum_marker(u->text, &us, NULL) == 0 || us != style)));
		}
		if (!adjacent && !heads)
			continue;
		runs++;
		for (size_t j = 0; j < n; j++) {
			t->p[item[j]].kind = adjacent ? PK_ITEM : PK_NUMHEAD;
			t->p[item[j]].run = runs;
		}
	}
}

/* What a caption whose figure (or table) is not there gets at its end:
 * "（图略）" ("（表略）"), or " (figure not included)" without Chinese. */
static const char *absent_mark(const char *caption)
{
	bool table;
	const char *s = figure_word(caption, &table);
	bool zh = false;
	for (const char *q = s, *end = s + strlen(s); q < end && !zh;) {
		int32_t c = utf8_next(&q, end);
		zh = c > 0 && utf8_is_han((uint32_t)c);
	}
	return zh ? (table ? "（表略）" : "（图略）")
	          : (table ? " (table not included)" : " (figure not included)");
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
		const char *mark = absent_mark(s);
		const char *bare = mark[0] == ' ' ? mark + 1 : mark;
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
	enumerations(t, flags);
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
		int mk = p->kind == PK_CAPTION || p->kind == PK_PHOTO ? MK_CAPTION
		         : p->kind == PK_ITEM                         ? MK_ITEM
		         : p->kind == PK_NUMHEAD                      ? MK_HEAD
		                                                      : 0;
		if (mk) {
			t->marks = xreallocarray(t->marks, t->nmarks + 1, sizeof *t->marks);
			t->marks[t->nmarks++] = (struct mark){line, mk, p->run};
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
	free(t->marks);
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

/* What the typeset pass made of the paragraph n, or NULL. */
static const struct mark *mark_of(const struct ctx *x, cmark_node *n)
{
	int line = cmark_node_get_start_line(n);
	for (size_t i = 0; i < x->nmarks; i++)
		if (x->marks[i].line == line)
			return &x->marks[i];
	return NULL;
}

static cmark_node *make_heading(cmark_node *c, int level)
{
	cmark_node *h = cmark_node_new(CMARK_NODE_HEADING);
	cmark_node_set_heading_level(h, level);
	cmark_node_insert_before(c, h);
	move_children(c, h);
	cmark_node_free(c);
	han_spaces(h);
	return h;
}

/*
 * Title-like paragraphs between text become subheadings of level; a
 * numbered subheading the typeset pass found (MK_HEAD) is one level below
 * the heading its enumeration starts under, all its items alike.
 */
static void subheadings(const struct ctx *x, cmark_node *parent, int level)
{
	int last = 0, maxrun = 0;
	for (size_t i = 0; i < x->nmarks; i++)
		if (x->marks[i].run > maxrun)
			maxrun = x->marks[i].run;
	int *run_level = xcalloc((size_t)maxrun + 1, sizeof *run_level);
	cmark_node *c = cmark_node_first_child(parent), *next;
	for (; c; c = next) {
		next = cmark_node_next(c);
		if (cmark_node_get_type(c) == CMARK_NODE_HEADING) {
			last = cmark_node_get_heading_level(c);
			continue;
		}
		if (cmark_node_get_type(c) != CMARK_NODE_PARAGRAPH)
			continue;
		const struct mark *m = mark_of(x, c);
		if (m && m->kind == MK_HEAD) {
			if (run_level[m->run] == 0)
				run_level[m->run] = last == 0 ? level : last < 4 ? last + 1 : 4;
			last = run_level[m->run];
			make_heading(c, last);
			continue;
		}
		if (!title_like(c))
			continue;
		if (!is_text_block(cmark_node_previous(c)) && level == 2)
			continue; /* a subheading follows text */
		if (next == NULL || !is_text_block(next))
			continue; /* and text follows it */
		char *t = plain_dup(c);
		bool numbered = enumerated(t);
		free(t);
		if (numbered)
			continue; /* only as one of an enumeration (MK_HEAD) */
		make_heading(c, level);
		last = level;
	}
	free(run_level);
}

/* Numbered lines the typeset pass took for a list (MK_ITEM): one list per
 * enumeration, each line an item keeping its printed number. */
static void items(const struct ctx *x, cmark_node *parent)
{
	cmark_node *c = cmark_node_first_child(parent), *next, *list = NULL;
	int run = 0;
	for (; c; c = next) {
		next = cmark_node_next(c);
		const struct mark *m =
		    cmark_node_get_type(c) == CMARK_NODE_PARAGRAPH ? mark_of(x, c) : NULL;
		if (m == NULL || m->kind != MK_ITEM) {
			list = NULL;
			continue;
		}
		if (list == NULL || run != m->run) {
			list = custom("<ul class=\"mx-items\">\n", "</ul>\n");
			cmark_node_insert_before(c, list);
			run = m->run;
		}
		cmark_node *li = retype(c, "<li class=\"mx-item\">", "</li>\n");
		cmark_node_unlink(li);
		cmark_node_append_child(list, li);
	}
}

/* Captions and bylines among the children of parent. */
static void captions(const struct ctx *x, cmark_node *parent)
{
	cmark_node *c = cmark_node_first_child(parent), *next;
	for (; c; c = next) {
		next = cmark_node_next(c);
		if (cmark_node_get_type(c) != CMARK_NODE_PARAGRAPH)
			continue;
		const struct mark *m = mark_of(x, c);
		if (m && m->kind == MK_CAPTION) {
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
	items(x, doc);
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
		/* "延伸阅读：" is the box's label "延伸阅读" */
		for (bool more = true; more;) {
			more = n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == ':');
			if (more)
				n--;
			else if (n >= 3 && memcmp(s + n - 3, "：", 3) == 0)
				n -= 3, more = true;
		}
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
			subheadings(x, box, 3);
		break;
	}
	if (!(flags & MD_COLOPHON))
		subheadings(x, doc, 2);
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

/*
 * A list of numbered lines: each item keeps its printed number, the lines
 * it wraps onto hang under its text. Items of one line each stay together;
 * longer ones get a blank line between them.
 */
static void items_text(cmark_node *list, struct buf *out, const char *indent)
{
	bool tight = true;
	for (cmark_node *it = cmark_node_first_child(list); it; it = cmark_node_next(it)) {
		struct buf b;
		buf_init(&b, BUF_NOLIMIT);
		inline_text(it, &b);
		tight &= utf8_width(buf_str(&b)) + utf8_width(indent) <= TEXT_WIDTH;
		buf_free(&b);
	}
	bool first = true;
	for (cmark_node *it = cmark_node_first_child(list); it; it = cmark_node_next(it)) {
		struct buf b, w;
		buf_init(&b, BUF_NOLIMIT);
		buf_init(&w, BUF_NOLIMIT);
		inline_text(it, &b);
		const char *s = buf_str(&b);
		size_t m = enum_marker(s, NULL, NULL);
		char *marker = xstrndup(s, m);
		char *hang = xasprintf("%s%*s", indent, (int)utf8_width(marker), "");
		md_wrap(&w, skip_ws(s + m), TEXT_WIDTH, hang);
		if (!first && !tight)
			buf_addc(out, '\n');
		buf_adds(out, indent);
		buf_adds(out, marker);
		buf_adds(out, buf_str(&w) + strlen(hang));
		first = false;
		free(marker);
		free(hang);
		buf_free(&w);
		buf_free(&b);
	}
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
	} else if (t == CMARK_NODE_CUSTOM_BLOCK && strcmp(kind(n), "items") == 0) {
		items_text(n, out, indent);
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
		x.marks = ts.marks;
		x.nmarks = ts.nmarks;
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
