/*
 * Mustache templates (https://mustache.github.io/mustache.5.html) rendered
 * against json-c data: the complete core specification (variables, sections,
 * inverted sections, comments, partials, set delimiters, standalone lines and
 * partial indentation) and the optional inheritance module (parents {{<p}} and
 * blocks {{$b}}, with the block reindentation of spec PR #131). Lambdas and
 * dynamic names are not supported: {{>*x}} names a partial called "*x".
 *
 * Choices where the specification leaves room:
 *  - falsey: missing, null, false, [] and the empty string ""; 0 and {} are
 *    truthy. So {{#subtitle}}<h2>{{subtitle}}</h2>{{/subtitle}} drops an
 *    empty subtitle.
 *  - {{x}} escapes & < > " ' (the last as &#39;) when html_escape is set;
 *    {{{x}}} and {{&x}} never escape.
 *  - integers print in full; doubles in the shortest %g form that reads
 *    back as the same double (1.21, 0.1, 3, 1e+300), not json-c's %.17g;
 *    booleans as true/false; objects and arrays as compact JSON text.
 *  - blank lines of an indented partial or block stay blank (no trailing
 *    whitespace), as in mustache.js.
 *  - blanks may precede the sigil: {{ #items }} opens a section. A name
 *    with blanks inside is an error rather than a silent empty string.
 *  - a template is limited to MUSTACHE_MAX_NESTING nested sections, parents
 *    and blocks, and a render to MUSTACHE_MAX_DEPTH nested partials, parents
 *    and overridden blocks: deeper is an error (a partial including itself
 *    unconditionally), never a stack overflow.
 */
#ifndef MATRIX_MUSTACHE_H
#define MATRIX_MUSTACHE_H

#include <stdbool.h>

#include <json-c/json_object.h>

#include "buf.h"
#include "err.h"

#define MUSTACHE_MAX_DEPTH   64  /* partials, parents, overrides nested when rendering */
#define MUSTACHE_MAX_NESTING 100 /* sections, parents, blocks nested in one template */

struct mustache_opts {
	/* Template name used in error messages, e.g. "article.html.mustache";
	 * NULL gives "template". */
	const char *name;
	/*
	 * Resolves a partial or parent by name (valid during the call only):
	 * returns its template text, owned by the callee and valid until
	 * mustache_render() returns, or NULL when there is none (it then
	 * renders as empty, per the spec). Each name is asked for once per
	 * render. NULL: every partial is empty.
	 */
	const char *(*partial)(void *ctx, const char *name);
	void *ctx;
	/* true: {{x}} escapes for HTML; false: no escaping (text/plain). */
	bool html_escape;
};

/*
 * Renders the NUL-terminated template tmpl against data (the root context;
 * NULL is JSON null; not modified except for json-c's cached serialisations)
 * and appends the result to out.
 *
 * Returns 0, or -1 with err set (kind ERR_INPUT, or ERR_USAGE when o is NULL):
 * "NAME:LINE: what is wrong; what to do" for an unclosed tag, an unclosed,
 * unopened or mismatched section, bad set-delimiters, an empty or spaced tag
 * name, nesting beyond the limits above, or out's size cap being reached. An
 * error inside a partial reads "NAME:LINE: PARTIAL:LINE: …", NAME:LINE being
 * where the partial is included. A failed render may leave partial output
 * appended to out: truncate it to its old length if that matters.
 */
int mustache_render(const char *tmpl, struct json_object *data, const struct mustache_opts *o,
                    struct buf *out, struct err *err);

/*
 * Parses tmpl without rendering it, to report syntax errors early (at load
 * or reload time). name as in struct mustache_opts. Partials are not
 * looked at: they are only known when rendering.
 */
int mustache_check(const char *tmpl, const char *name, struct err *err);

#endif
