/*
 * The template set: every default template is compiled in (scripts/embed.sh
 * from templates/), and a file of the same name in template_dir overrides
 * it; other *.mustache files there are available as partials. All are
 * checked at load, so a broken override is reported (with its file and
 * line) when matrixd starts or reloads, not when a mail goes out.
 *
 * Names are file names without ".mustache": "mail-article.html". A name
 * containing ".html" renders with HTML escaping, any other without.
 */
#ifndef MATRIX_TMPL_H
#define MATRIX_TMPL_H

#include <json-c/json_object.h>

#include "buf.h"
#include "err.h"

struct tmpl_builtin {
	const char *name; /* "mail-article.html.mustache" */
	const char *text;
};
extern const struct tmpl_builtin tmpl_builtins[]; /* NULL-terminated, generated */

struct tmpl;

/* Loads the built-ins and the overrides found in dir (which may be NULL or
 * missing). Returns an allocated set (tmpl_free). */
int tmpl_load(struct tmpl **out, const char *dir, struct err *err);
void tmpl_free(struct tmpl *t);

/* Calls warn(arg, message) for each file in template_dir that overrides no
 * built-in template and that no template uses as a partial or parent: most
 * likely a misspelt name. */
void tmpl_lint(const struct tmpl *t, void (*warn)(void *arg, const char *msg), void *arg);

/* The text of a template or partial, NULL when unknown. */
const char *tmpl_get(const struct tmpl *t, const char *name);

/* Renders template name against ctx, appending to out. */
int tmpl_render(const struct tmpl *t, const char *name, struct json_object *ctx, struct buf *out,
                struct err *err);

#endif
