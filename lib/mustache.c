/*
 * Mustache renderer (see mustache.h). A template is parsed in three passes
 * over a token list (tags and the text between them): tokenizing, which
 * follows set-delimiter tags; matching sections with their closing tags; and
 * deciding which tags are standalone, which trims the text around them. The
 * standalone rules depend on pairs (a parent's opening tag is standalone when
 * its closing tag ends the line) and on nesting (a block directly inside a
 * parent ignores what is on its left), hence the separate passes. The tokens
 * then become a flat node array in which a container (section, parent, block)
 * records the index past its last child. Text is copied into an arena with
 * the block "intrinsic indentation" removed; indentation of standalone
 * partials, parents and blocks is added back at render time, before the
 * first byte of each template line, so that newlines inside interpolated
 * data are never indented (spec: partials.json "Standalone Indentation").
 * Partials are parsed once per render and kept by name.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json_object.h>

#include "mustache.h"
#include "text.h"
#include "xmalloc.h"

enum kind {
	K_TEXT,
	K_VAR,      /* {{x}} */
	K_RAW,      /* {{{x}}} {{&x}} */
	K_SECTION,  /* {{#x}} */
	K_INVERTED, /* {{^x}} */
	K_PARTIAL,  /* {{>x}} */
	K_PARENT,   /* {{<x}} */
	K_BLOCK,    /* {{$x}} */
	K_CLOSE,    /* {{/x}}: tokens only */
	K_COMMENT,  /* {{!x}}: tokens only */
	K_DELIM,    /* {{=a b=}}: tokens only */
};

struct tok {
	enum kind kind;
	size_t start, end; /* the text, or the whole tag with its delimiters */
	size_t name, name_len;
	int line;
	size_t lead;     /* start of the blanks before the tag on its line */
	size_t trail;    /* end of the blanks and the line end after the tag */
	bool cl, cr;     /* only blanks from the line start / to the line end */
	bool in_parent;  /* directly inside {{<parent}}…{{/parent}} */
	bool standalone; /* its line (or the pair's) was trimmed */
	size_t partner;  /* opening <-> closing tag */
};

struct node {
	enum kind kind;
	int line;
	size_t end;       /* containers: index past the last child */
	const char *name; /* into the template source, not NUL-terminated */
	size_t name_len;
	size_t off, len; /* into the arena: the text, or the indentation */
};

struct tmpl {
	const char *name; /* for messages */
	const char *src;
	size_t src_len;
	struct node *nodes;
	size_t n, cap;
	struct buf arena;
};

struct parser {
	struct tmpl *t;
	struct tok *toks;
	size_t n, cap;
	struct err *err;
};

/* A {{<parent}} being rendered: the blocks among its children override. */
struct frame {
	const struct tmpl *t;
	size_t parent;
};

struct cached {
	char *name;
	struct tmpl *t; /* NULL: no such partial */
};

struct render {
	const struct mustache_opts *o;
	struct buf *out;
	struct err *err;
	struct json_object **ctx;
	size_t nctx, capctx;
	struct frame *frames;
	size_t nframes, capframes;
	struct cached *cache;
	size_t ncache, capcache;
	struct buf indent; /* of the current line, all levels concatenated */
	bool bol;          /* nothing written yet on the current template line */
	int depth;         /* partials, parents and overridden blocks */
	struct buf key;
};

#define SHOW 64 /* longest name quoted in a message */

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_container(enum kind k)
{
	return k == K_SECTION || k == K_INVERTED || k == K_PARENT || k == K_BLOCK;
}

/* The arena is empty (data NULL) in a template without text or indentation. */
static const char *arena(const struct tmpl *t, size_t off)
{
	return buf_str(&t->arena) + off;
}

static void tmpl_free(struct tmpl *t)
{
	if (!t)
		return;
	free(t->nodes);
	buf_free(&t->arena);
	free(t);
}

/* --- tokenizing ------------------------------------------------------------------ */

static struct tok *tok_add(struct parser *p)
{
	if (p->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 64;
		p->toks = xreallocarray(p->toks, p->cap, sizeof *p->toks);
	}
	struct tok *k = &p->toks[p->n++];
	memset(k, 0, sizeof *k);
	return k;
}

static int count_nl(const char *s, size_t n)
{
	int c = 0;
	const char *e = s + n;
	while (s < e && (s = memchr(s, '\n', (size_t)(e - s))) != NULL) {
		c++;
		s++;
	}
	return c;
}

/* memmem, but linear under AddressSanitizer too: its memmem interceptor checks
 * the whole haystack on every call, which made tokenizing quadratic. */
static const char *find(const char *s, size_t len, const char *needle, size_t nlen)
{
	const char *end = s + len;
	while ((size_t)(end - s) >= nlen) {
		const char *m = memchr(s, needle[0], (size_t)(end - s) - nlen + 1);
		if (!m)
			return NULL;
		if (memcmp(m, needle, nlen) == 0)
			return m;
		s = m + 1;
	}
	return NULL;
}

/* Position of the closing delimiter, or of `closer` right before it ('}' of
 * a triple mustache, '=' of a set-delimiters tag); SIZE_MAX when absent. */
static size_t find_close(const char *s, size_t len, size_t from, const char *cd, size_t cdl,
                         char closer)
{
	size_t k = from;
	while (k < len) {
		const char *m = find(s + k, len - k, cd, cdl);
		if (!m)
			break;
		size_t e = (size_t)(m - s);
		if (!closer)
			return e;
		if (e > from && s[e - 1] == closer)
			return e - 1;
		k = e + 1;
	}
	return SIZE_MAX;
}

static void clearance(const char *s, size_t len, struct tok *k)
{
	size_t a = k->start;
	while (a > 0 && is_blank(s[a - 1]))
		a--;
	k->lead = a;
	k->cl = a == 0 || s[a - 1] == '\n';

	size_t b = k->end;
	while (b < len && is_blank(s[b]))
		b++;
	k->cr = true;
	if (b == len)
		k->trail = b;
	else if (s[b] == '\n')
		k->trail = b + 1;
	else if (s[b] == '\r' && b + 1 < len && s[b + 1] == '\n')
		k->trail = b + 2;
	else
		k->cr = false;
}

static int set_delims(struct parser *p, size_t a, size_t b, int line, const char **od, size_t *odl,
                      const char **cd, size_t *cdl)
{
	const char *s = p->t->src;
	while (a < b && is_space(s[a]))
		a++;
	while (b > a && is_space(s[b - 1]))
		b--;
	size_t w1 = a;
	while (a < b && !is_space(s[a]))
		a++;
	size_t w1e = a;
	while (a < b && is_space(s[a]))
		a++;
	size_t w2 = a;
	while (a < b && !is_space(s[a]))
		a++;
	size_t w2e = a;
	if (w1e == w1 || w2e == w2 || a != b || memchr(s + w1, '=', w1e - w1) ||
	    memchr(s + w2, '=', w2e - w2))
		return err_at(p->err, ERR_INPUT, p->t->name, line,
		              "bad set-delimiters tag; write e.g. {{=<%% %%>=}}: two delimiters "
		              "without blanks or '='");
	*od = s + w1;
	*odl = w1e - w1;
	*cd = s + w2;
	*cdl = w2e - w2;
	return 0;
}

static int tokenize(struct parser *p)
{
	const char *s = p->t->src;
	size_t len = p->t->src_len;
	const char *od = "{{", *cd = "}}";
	size_t odl = 2, cdl = 2;
	size_t pos = 0, counted = 0;
	int line = 1;

	while (pos < len) {
		const char *o = find(s + pos, len - pos, od, odl);
		size_t ts = o ? (size_t)(o - s) : len;
		if (ts > pos) {
			line += count_nl(s + counted, pos - counted);
			counted = pos;
			struct tok *k = tok_add(p);
			k->kind = K_TEXT;
			k->start = pos;
			k->end = ts;
			k->line = line;
		}
		if (!o)
			break;
		line += count_nl(s + counted, ts - counted);
		counted = ts;

		size_t c = ts + odl;
		while (c < len && is_space(s[c]))
			c++;
		enum kind kind = K_VAR;
		char closer = 0;
		switch (c < len ? s[c] : '\0') {
		case '#':
			kind = K_SECTION;
			break;
		case '^':
			kind = K_INVERTED;
			break;
		case '/':
			kind = K_CLOSE;
			break;
		case '>':
			kind = K_PARTIAL;
			break;
		case '<':
			kind = K_PARENT;
			break;
		case '$':
			kind = K_BLOCK;
			break;
		case '!':
			kind = K_COMMENT;
			break;
		case '&':
			kind = K_RAW;
			break;
		case '{':
			kind = K_RAW;
			closer = '}';
			break;
		case '=':
			kind = K_DELIM;
			closer = '=';
			break;
		default:
			break;
		}
		if (kind != K_VAR)
			c++;
		size_t ce = find_close(s, len, c, cd, cdl, closer);
		if (ce == SIZE_MAX)
			return err_at(p->err, ERR_INPUT, p->t->name, line,
			              "tag opened with \"%.*s\" is never closed; end it with "
			              "\"%s%.*s\"",
			              (int)(odl < SHOW ? odl : SHOW), od,
			              closer == '}'   ? "}"
			              : closer == '=' ? "="
			                              : "",
			              (int)(cdl < SHOW ? cdl : SHOW), cd);

		struct tok *k = tok_add(p);
		k->kind = kind;
		k->start = ts;
		k->end = ce + (closer ? 1 : 0) + cdl;
		k->line = line;
		clearance(s, len, k);
		pos = k->end;

		if (kind == K_COMMENT)
			continue;
		if (kind == K_DELIM) {
			if (set_delims(p, c, ce, line, &od, &odl, &cd, &cdl) < 0)
				return -1;
			continue;
		}
		size_t a = c, b = ce;
		while (a < b && is_space(s[a]))
			a++;
		while (b > a && is_space(s[b - 1]))
			b--;
		if (a == b)
			return err_at(p->err, ERR_INPUT, p->t->name, line,
			              "tag without a name; write a name between the delimiters");
		for (size_t i = a; i < b; i++)
			if (is_space(s[i]))
				return err_at(p->err, ERR_INPUT, p->t->name, line,
				              "tag name \"%.*s\" contains blanks; a name is one "
				              "word (dots for nested keys)",
				              (int)(b - a < SHOW ? b - a : SHOW), s + a);
		k->name = a;
		k->name_len = b - a;
	}
	return 0;
}

/* --- matching and standalone lines ------------------------------------------------- */

static int match(struct parser *p)
{
	const char *s = p->t->src;
	size_t *stack = NULL, depth = 0;
	int rc = -1;

	stack = xreallocarray(NULL, MUSTACHE_MAX_NESTING + 1, sizeof *stack);
	for (size_t i = 0; i < p->n; i++) {
		struct tok *k = &p->toks[i];
		if (k->kind == K_TEXT)
			continue;
		k->in_parent = depth > 0 && p->toks[stack[depth - 1]].kind == K_PARENT;
		if (is_container(k->kind)) {
			if (depth == MUSTACHE_MAX_NESTING) {
				err_at(p->err, ERR_INPUT, p->t->name, k->line,
				       "sections nested more than %d deep; flatten the template",
				       MUSTACHE_MAX_NESTING);
				goto out;
			}
			stack[depth++] = i;
			continue;
		}
		if (k->kind != K_CLOSE)
			continue;
		if (depth == 0) {
			err_at(p->err, ERR_INPUT, p->t->name, k->line,
			       "closing tag \"%.*s\" has no opening section; remove it",
			       (int)(k->name_len < SHOW ? k->name_len : SHOW), s + k->name);
			goto out;
		}
		struct tok *o = &p->toks[stack[depth - 1]];
		if (o->name_len != k->name_len || memcmp(s + o->name, s + k->name, k->name_len)) {
			err_at(p->err, ERR_INPUT, p->t->name, k->line,
			       "closing tag \"%.*s\" does not match \"%.*s\" opened at line %d; "
			       "close sections in the reverse order of opening",
			       (int)(k->name_len < SHOW ? k->name_len : SHOW), s + k->name,
			       (int)(o->name_len < SHOW ? o->name_len : SHOW), s + o->name,
			       o->line);
			goto out;
		}
		o->partner = i;
		k->partner = stack[--depth];
	}
	if (depth > 0) {
		struct tok *o = &p->toks[stack[depth - 1]];
		err_at(p->err, ERR_INPUT, p->t->name, o->line,
		       "section \"%.*s\" is never closed; add {{/%.*s}}",
		       (int)(o->name_len < SHOW ? o->name_len : SHOW), s + o->name,
		       (int)(o->name_len < SHOW ? o->name_len : SHOW), s + o->name);
		goto out;
	}
	rc = 0;
out:
	free(stack);
	return rc;
}

/* Removes the blanks before tag i (they become indentation, or vanish). */
static void strip_left(struct parser *p, size_t i)
{
	struct tok *k = &p->toks[i];
	if (i > 0 && p->toks[i - 1].kind == K_TEXT && p->toks[i - 1].end == k->start) {
		struct tok *t = &p->toks[i - 1];
		t->end = k->lead > t->start ? k->lead : t->start;
	}
}

/* Removes the blanks and the line end after tag i. */
static void strip_right(struct parser *p, size_t i)
{
	struct tok *k = &p->toks[i];
	if (i + 1 < p->n && p->toks[i + 1].kind == K_TEXT && p->toks[i + 1].start == k->end) {
		struct tok *t = &p->toks[i + 1];
		t->start = k->trail < t->end ? k->trail : t->end;
	}
}

/*
 * A tag alone on its line (blanks aside) disappears with its line. The
 * inheritance module adds the rules of spec PR #131: what follows {{<parent}}
 * and precedes {{/parent}} is ignored text, so a parent pair is standalone
 * when the opening tag clears its line start and the closing tag its line
 * end, even on one line ("Standalone parent"); a block argument's opening tag
 * only needs to end its line, and its closing tag never eats a line end.
 */
static void standalone(struct parser *p)
{
	for (size_t i = 0; i < p->n; i++) {
		struct tok *k = &p->toks[i];
		switch (k->kind) {
		case K_TEXT:
		case K_VAR:
		case K_RAW:
			continue;
		case K_PARENT:
			if (k->cl && p->toks[k->partner].cr) {
				k->standalone = true;
				strip_left(p, i);
				strip_right(p, k->partner);
			}
			continue;
		case K_BLOCK:
			if (k->in_parent) {
				if (k->cr) {
					k->standalone = true;
					strip_right(p, i);
				}
				continue;
			}
			break;
		case K_CLOSE: {
			const struct tok *o = &p->toks[k->partner];
			if (o->kind == K_PARENT)
				continue;
			if (o->kind == K_BLOCK && o->in_parent) {
				if (k->cl)
					strip_left(p, i);
				continue;
			}
			break;
		}
		default:
			break;
		}
		if (k->cl && k->cr) {
			k->standalone = true;
			strip_left(p, i);
			strip_right(p, i);
		}
	}
}

/* --- building nodes ----------------------------------------------------------------- */

static struct node *node_add(struct tmpl *t, enum kind kind, const struct tok *k)
{
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 64;
		t->nodes = xreallocarray(t->nodes, t->cap, sizeof *t->nodes);
	}
	struct node *nd = &t->nodes[t->n++];
	memset(nd, 0, sizeof *nd);
	nd->kind = kind;
	nd->line = k->line;
	nd->name = t->src + k->name;
	nd->name_len = k->name_len;
	return nd;
}

/* Copies text [a, b) into the arena, removing the dedent prefix (or as much of
 * it as is there) at the start of each line. */
static void add_text(struct tmpl *t, const struct tok *k, const char *dd, size_t ddl)
{
	const char *s = t->src;
	size_t a = k->start, b = k->end, off = t->arena.len;
	while (a < b) {
		if (ddl && (a == 0 || s[a - 1] == '\n'))
			for (size_t j = 0; j < ddl && a < b && s[a] == dd[j]; j++)
				a++;
		const char *nl = ddl ? memchr(s + a, '\n', b - a) : NULL;
		size_t e = nl ? (size_t)(nl - s) + 1 : b;
		(void)buf_add(&t->arena, s + a, e - a);
		a = e;
	}
	if (t->arena.len > off) {
		struct node *nd = node_add(t, K_TEXT, k);
		nd->off = off;
		nd->len = t->arena.len - off;
	}
}

/* Stores the blanks ws minus the dedent prefix as nd's indentation. */
static void set_indent(struct tmpl *t, struct node *nd, const char *ws, size_t n, const char *dd,
                       size_t ddl)
{
	size_t j = 0;
	while (j < n && j < ddl && ws[j] == dd[j])
		j++;
	nd->off = t->arena.len;
	nd->len = n - j;
	(void)buf_add(&t->arena, ws + j, n - j);
}

/* The blanks starting the first non-blank line from position a: a block's
 * intrinsic indentation (spec PR #131, "Intrinsic indentation"). */
static const char *intrinsic(const char *s, size_t len, size_t a, size_t *n)
{
	for (;;) {
		size_t b = a;
		while (b < len && is_blank(s[b]))
			b++;
		if (b < len && s[b] == '\n') {
			a = b + 1;
			continue;
		}
		if (b + 1 < len && s[b] == '\r' && s[b + 1] == '\n') {
			a = b + 2;
			continue;
		}
		*n = b - a;
		return s + a;
	}
}

struct open {
	size_t node;
	const char *dd; /* dedent in force outside this container */
	size_t ddl;
};

static void build(struct parser *p)
{
	struct tmpl *t = p->t;
	const char *s = t->src;
	struct open *stack = xreallocarray(NULL, MUSTACHE_MAX_NESTING + 1, sizeof *stack);
	size_t depth = 0;
	const char *dd = "";
	size_t ddl = 0;

	for (size_t i = 0; i < p->n; i++) {
		const struct tok *k = &p->toks[i];
		struct node *nd;
		switch (k->kind) {
		case K_TEXT:
			add_text(t, k, dd, ddl);
			break;
		case K_VAR:
		case K_RAW:
			node_add(t, k->kind, k);
			break;
		case K_PARTIAL:
			nd = node_add(t, k->kind, k);
			if (k->standalone)
				set_indent(t, nd, s + k->lead, k->start - k->lead, dd, ddl);
			break;
		case K_SECTION:
		case K_INVERTED:
		case K_PARENT:
		case K_BLOCK: {
			nd = node_add(t, k->kind, k);
			stack[depth++] = (struct open){t->n - 1, dd, ddl};
			if (k->kind == K_PARENT && k->standalone)
				set_indent(t, nd, s + k->lead, k->start - k->lead, dd, ddl);
			if (k->kind != K_BLOCK)
				break;
			const struct tok *close = &p->toks[k->partner];
			size_t n;
			const char *ws;
			if (k->in_parent) {
				/* An argument: the indentation is the one of the
				 * block it replaces, only its own is removed. */
				if (k->standalone)
					dd = intrinsic(s, t->src_len, k->trail, &ddl);
			} else if (k->standalone && close->cr) {
				/* Tags on lines of their own: the content keeps
				 * its indentation relative to the first line. */
				ws = intrinsic(s, t->src_len, k->trail, &n);
				set_indent(t, nd, ws, n, dd, ddl);
				dd = ws;
				ddl = n;
			} else if (k->cl && close->cr) {
				/* "  {{$b}}{{/b}}\n": a standalone pair on one
				 * line keeps its blanks and line end, and indents
				 * the lines after the first ("Standalone block"). */
				set_indent(t, nd, s + k->lead, k->start - k->lead, dd, ddl);
			}
			break;
		}
		case K_CLOSE: {
			struct open *o = &stack[--depth];
			t->nodes[o->node].end = t->n;
			dd = o->dd;
			ddl = o->ddl;
			break;
		}
		case K_COMMENT:
		case K_DELIM:
			break;
		}
	}
	free(stack);
}

static int tmpl_parse(struct tmpl **out, const char *name, const char *src, struct err *err)
{
	struct parser p = {0};
	int rc = -1;

	p.t = xcalloc(1, sizeof *p.t);
	p.t->name = name;
	p.t->src = src;
	p.t->src_len = strlen(src);
	buf_init(&p.t->arena, BUF_NOLIMIT);
	p.err = err;
	if (tokenize(&p) < 0 || match(&p) < 0)
		goto out;
	standalone(&p);
	build(&p);
	*out = p.t;
	p.t = NULL;
	rc = 0;
out:
	tmpl_free(p.t);
	free(p.toks);
	return rc;
}

/* --- rendering ---------------------------------------------------------------------- */

static int overflow(struct render *r, const struct tmpl *t, int line)
{
	return err_at(r->err, ERR_INPUT, t->name, line,
	              "output exceeds %zu bytes; shorten the data or raise the limit", r->out->max);
}

static int put_indent(struct render *r)
{
	if (r->bol && r->indent.len)
		if (buf_add(r->out, r->indent.data, r->indent.len) < 0)
			return -1;
	r->bol = false;
	return 0;
}

static int emit_text(struct render *r, const struct tmpl *t, const struct node *nd)
{
	const char *s = arena(t, nd->off);
	size_t n = nd->len;
	while (n > 0) {
		const char *nl = memchr(s, '\n', n);
		size_t seg = nl ? (size_t)(nl - s) + 1 : n;
		/* blank lines get no indentation: no trailing blanks */
		bool blank = s[0] == '\n' || (seg == 2 && s[0] == '\r');
		if (!blank && put_indent(r) < 0)
			return overflow(r, t, nd->line);
		if (buf_add(r->out, s, seg) < 0)
			return overflow(r, t, nd->line);
		r->bol = nl != NULL;
		s += seg;
		n -= seg;
	}
	return 0;
}

static int add_escaped(struct buf *b, const char *s, size_t n)
{
	return html_escape(b, s, n);
}

/* The shortest %g form that reads back as d, as JavaScript and Python print
 * doubles: 1.21 rather than json-c's "%.17g" 1.2099999999999999. */
static void format_double(double d, char *b, size_t n)
{
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(b, n, "%.*g", prec, d);
		if (!isfinite(d) || strtod(b, NULL) == d)
			return;
	}
}

static int emit_value(struct render *r, const struct tmpl *t, const struct node *nd,
                      struct json_object *v)
{
	char num[40];
	const char *s = NULL;
	size_t n = 0;

	switch (json_object_get_type(v)) {
	case json_type_null:
		return 0;
	case json_type_string:
		s = json_object_get_string(v);
		n = (size_t)json_object_get_string_len(v);
		break;
	case json_type_boolean:
		s = json_object_get_boolean(v) ? "true" : "false";
		break;
	case json_type_double:
		format_double(json_object_get_double(v), num, sizeof num);
		s = num;
		break;
	case json_type_int:
	case json_type_object:
	case json_type_array:
		s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
		                                          JSON_C_TO_STRING_NOSLASHESCAPE);
		break;
	}
	if (s && !n)
		n = strlen(s);
	if (n == 0)
		return 0;
	int rc = put_indent(r);
	if (rc == 0)
		rc = nd->kind == K_VAR && r->o->html_escape ? add_escaped(r->out, s, n)
		                                            : buf_add(r->out, s, n);
	return rc < 0 ? overflow(r, t, nd->line) : 0;
}

/*
 * Spec name resolution: "." is the top of the context stack; the first part
 * of a dotted name is looked up from the top down, the other parts only
 * inside what the previous part found ("Dotted Names - Broken Chain
 * Resolution"). Returns whether the name was found; *v may then be NULL (JSON
 * null), which stops the search as any found value does.
 */
static bool lookup(struct render *r, const char *name, size_t len, struct json_object **v)
{
	*v = NULL;
	if (len == 1 && name[0] == '.') {
		*v = r->ctx[r->nctx - 1];
		return true;
	}
	const char *end = name + len;
	const char *dot = memchr(name, '.', len);
	buf_reset(&r->key);
	(void)buf_add(&r->key, name, (size_t)((dot ? dot : end) - name));
	bool found = false;
	for (size_t i = r->nctx; i-- > 0 && !found;)
		found = json_object_is_type(r->ctx[i], json_type_object) &&
		        json_object_object_get_ex(r->ctx[i], buf_str(&r->key), v);
	while (found && dot) {
		const char *part = dot + 1;
		dot = memchr(part, '.', (size_t)(end - part));
		buf_reset(&r->key);
		(void)buf_add(&r->key, part, (size_t)((dot ? dot : end) - part));
		struct json_object *o = *v;
		*v = NULL;
		found = json_object_is_type(o, json_type_object) &&
		        json_object_object_get_ex(o, buf_str(&r->key), v);
	}
	return found;
}

static bool truthy(struct json_object *v)
{
	switch (json_object_get_type(v)) {
	case json_type_null:
		return false;
	case json_type_boolean:
		return json_object_get_boolean(v);
	case json_type_array:
		return json_object_array_length(v) > 0;
	case json_type_string:
		return json_object_get_string_len(v) > 0;
	default:
		return true;
	}
}

static void ctx_push(struct render *r, struct json_object *v)
{
	if (r->nctx == r->capctx) {
		r->capctx = r->capctx ? r->capctx * 2 : 16;
		r->ctx = xreallocarray(r->ctx, r->capctx, sizeof *r->ctx);
	}
	r->ctx[r->nctx++] = v;
}

static int render_range(struct render *r, const struct tmpl *t, size_t from, size_t to);

static int too_deep(struct render *r, const struct tmpl *t, const struct node *nd)
{
	return err_at(r->err, ERR_INPUT, t->name, nd->line,
	              "partials, parents and blocks nested more than %d deep at \"%.*s\"; "
	              "a template includes itself without a section to stop it",
	              MUSTACHE_MAX_DEPTH, (int)(nd->name_len < SHOW ? nd->name_len : SHOW),
	              nd->name);
}

static int get_partial(struct render *r, const struct tmpl *t, const struct node *nd,
                       struct tmpl **out)
{
	for (size_t i = 0; i < r->ncache; i++)
		if (strlen(r->cache[i].name) == nd->name_len &&
		    !memcmp(r->cache[i].name, nd->name, nd->name_len)) {
			*out = r->cache[i].t;
			return 0;
		}
	char *name = xstrndup(nd->name, nd->name_len);
	const char *src = r->o->partial ? r->o->partial(r->o->ctx, name) : NULL;
	struct tmpl *pt = NULL;
	if (src && tmpl_parse(&pt, name, src, r->err) < 0) {
		err_prefix(r->err, "%s:%d", t->name, nd->line);
		free(name);
		return -1;
	}
	if (r->ncache == r->capcache) {
		r->capcache = r->capcache ? r->capcache * 2 : 8;
		r->cache = xreallocarray(r->cache, r->capcache, sizeof *r->cache);
	}
	r->cache[r->ncache++] = (struct cached){name, pt};
	*out = pt;
	return 0;
}

/* {{>partial}} and {{<parent}}…{{/parent}} (node i of t). */
static int include(struct render *r, const struct tmpl *t, size_t i)
{
	const struct node *nd = &t->nodes[i];
	struct tmpl *pt;

	if (r->depth >= MUSTACHE_MAX_DEPTH)
		return too_deep(r, t, nd);
	if (get_partial(r, t, nd, &pt) < 0)
		return -1;
	if (!pt)
		return 0;
	size_t saved = r->indent.len;
	if (buf_add(&r->indent, arena(t, nd->off), nd->len) < 0)
		return overflow(r, t, nd->line);
	if (nd->kind == K_PARENT) {
		if (r->nframes == r->capframes) {
			r->capframes = r->capframes ? r->capframes * 2 : 8;
			r->frames = xreallocarray(r->frames, r->capframes, sizeof *r->frames);
		}
		r->frames[r->nframes++] = (struct frame){t, i};
	}
	r->depth++;
	int rc = render_range(r, pt, 0, pt->n);
	r->depth--;
	if (nd->kind == K_PARENT)
		r->nframes--;
	buf_truncate(&r->indent, saved);
	return rc;
}

/*
 * The argument overriding block nd, searched from the outermost parent in:
 * the top-level template's arguments win ("Multi-level inheritance").
 */
static bool find_block(struct render *r, const struct node *nd, const struct tmpl **ft, size_t *fi)
{
	for (size_t f = 0; f < r->nframes; f++) {
		const struct tmpl *t = r->frames[f].t;
		size_t p = r->frames[f].parent;
		for (size_t i = p + 1; i < t->nodes[p].end;) {
			const struct node *a = &t->nodes[i];
			if (a->kind == K_BLOCK && a->name_len == nd->name_len &&
			    !memcmp(a->name, nd->name, nd->name_len)) {
				*ft = t;
				*fi = i;
				return true;
			}
			i = is_container(a->kind) ? a->end : i + 1;
		}
	}
	return false;
}

static int block(struct render *r, const struct tmpl *t, size_t i)
{
	const struct node *nd = &t->nodes[i];
	const struct tmpl *ft = t;
	size_t fi = i;
	bool over = find_block(r, nd, &ft, &fi);
	int rc;

	if (over && r->depth >= MUSTACHE_MAX_DEPTH)
		return too_deep(r, t, nd);
	size_t saved = r->indent.len;
	if (buf_add(&r->indent, arena(t, nd->off), nd->len) < 0)
		return overflow(r, t, nd->line);
	r->depth += over;
	rc = render_range(r, ft, fi + 1, ft->nodes[fi].end);
	r->depth -= over;
	buf_truncate(&r->indent, saved);
	return rc;
}

static int section(struct render *r, const struct tmpl *t, size_t i)
{
	const struct node *nd = &t->nodes[i];
	struct json_object *v;
	bool on = lookup(r, nd->name, nd->name_len, &v) && truthy(v);
	int rc = 0;

	if (nd->kind == K_INVERTED)
		return on ? 0 : render_range(r, t, i + 1, nd->end);
	if (!on)
		return 0;
	if (!json_object_is_type(v, json_type_array)) {
		ctx_push(r, v);
		rc = render_range(r, t, i + 1, nd->end);
		r->nctx--;
		return rc;
	}
	size_t n = json_object_array_length(v);
	for (size_t k = 0; k < n && rc == 0; k++) {
		ctx_push(r, json_object_array_get_idx(v, k));
		rc = render_range(r, t, i + 1, nd->end);
		r->nctx--;
	}
	return rc;
}

static int render_range(struct render *r, const struct tmpl *t, size_t from, size_t to)
{
	for (size_t i = from; i < to;) {
		const struct node *nd = &t->nodes[i];
		int rc = 0;
		switch (nd->kind) {
		case K_TEXT:
			rc = emit_text(r, t, nd);
			break;
		case K_VAR:
		case K_RAW: {
			struct json_object *v;
			if (lookup(r, nd->name, nd->name_len, &v))
				rc = emit_value(r, t, nd, v);
			break;
		}
		case K_SECTION:
		case K_INVERTED:
			rc = section(r, t, i);
			break;
		case K_PARTIAL:
		case K_PARENT:
			rc = include(r, t, i);
			break;
		case K_BLOCK:
			rc = block(r, t, i);
			break;
		default:
			break;
		}
		if (rc < 0)
			return -1;
		i = is_container(nd->kind) ? nd->end : i + 1;
	}
	return 0;
}

int mustache_render(const char *tmpl, struct json_object *data, const struct mustache_opts *o,
                    struct buf *out, struct err *err)
{
	struct tmpl *t = NULL;
	struct render r = {0};
	int rc = -1;

	if (!tmpl || !o || !out)
		return err_set(err, ERR_USAGE, "mustache_render: NULL template, options or output");
	if (tmpl_parse(&t, o->name ? o->name : "template", tmpl, err) < 0)
		goto out;
	r.o = o;
	r.out = out;
	r.err = err;
	r.bol = true;
	buf_init(&r.indent, BUF_NOLIMIT);
	buf_init(&r.key, BUF_NOLIMIT);
	ctx_push(&r, data);
	rc = render_range(&r, t, 0, t->n);
out:
	for (size_t i = 0; i < r.ncache; i++) {
		free(r.cache[i].name);
		tmpl_free(r.cache[i].t);
	}
	free(r.cache);
	free(r.ctx);
	free(r.frames);
	buf_free(&r.indent);
	buf_free(&r.key);
	tmpl_free(t);
	return rc;
}

int mustache_check(const char *tmpl, const char *name, struct err *err)
{
	struct tmpl *t = NULL;

	if (!tmpl)
		return err_set(err, ERR_USAGE, "mustache_check: NULL template");
	if (tmpl_parse(&t, name ? name : "template", tmpl, err) < 0)
		return -1;
	tmpl_free(t);
	return 0;
}
