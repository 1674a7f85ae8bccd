/* Template set: built-ins plus overrides from template_dir (see tmpl.h). */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "mustache.h"
#include "tmpl.h"
#include "xmalloc.h"

#define SUFFIX       ".mustache"
#define MAX_TEMPLATE (1 << 20)

struct file {
	char *name; /* without SUFFIX */
	char *text;
	char *path; /* where it came from, for messages */
};

struct tmpl {
	struct file *files;
	size_t n;
};

static char *strip_suffix(const char *name)
{
	size_t n = strlen(name), k = strlen(SUFFIX);
	if (n > k && strcmp(name + n - k, SUFFIX) == 0)
		n -= k;
	return xstrndup(name, n);
}

static struct file *find(const struct tmpl *t, const char *name)
{
	char *bare = strip_suffix(name);
	struct file *f = NULL;
	for (size_t i = 0; i < t->n && f == NULL; i++)
		if (strcmp(t->files[i].name, bare) == 0)
			f = &t->files[i];
	free(bare);
	return f;
}

static void put(struct tmpl *t, const char *file_name, char *text, char *path)
{
	char *bare = strip_suffix(file_name);
	struct file *f = find(t, bare);
	if (f) {
		free(f->text);
		free(f->path);
		free(bare);
	} else {
		t->files = xreallocarray(t->files, t->n + 1, sizeof *t->files);
		f = &t->files[t->n++];
		f->name = bare;
	}
	f->text = text;
	f->path = path;
}

int tmpl_load(struct tmpl **out, const char *dir, struct err *err)
{
	struct tmpl *t = xcalloc(1, sizeof *t);
	*out = NULL;
	for (const struct tmpl_builtin *b = tmpl_builtins; b->name; b++)
		put(t, b->name, xstrdup(b->text), xasprintf("(built-in) %s", b->name));
	DIR *d = dir && *dir ? opendir(dir) : NULL;
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)) != NULL) {
			size_t n = strlen(de->d_name), k = strlen(SUFFIX);
			if (de->d_name[0] == '.' || n <= k ||
			    strcmp(de->d_name + n - k, SUFFIX) != 0)
				continue;
			char *path = xasprintf("%s/%s", dir, de->d_name);
			struct buf b;
			buf_init(&b, BUF_NOLIMIT);
			if (fs_read(path, MAX_TEMPLATE, &b, err) < 0) {
				buf_free(&b);
				free(path);
				closedir(d);
				tmpl_free(t);
				return -1;
			}
			put(t, de->d_name, buf_detach(&b), path);
		}
		closedir(d);
	}
	for (size_t i = 0; i < t->n; i++)
		if (mustache_check(t->files[i].text, t->files[i].path, err) < 0) {
			tmpl_free(t);
			return -1;
		}
	*out = t;
	return 0;
}

void tmpl_free(struct tmpl *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++) {
		free(t->files[i].name);
		free(t->files[i].text);
		free(t->files[i].path);
	}
	free(t->files);
	free(t);
}

static bool is_builtin(const char *bare)
{
	for (const struct tmpl_builtin *b = tmpl_builtins; b->name; b++) {
		char *n = strip_suffix(b->name);
		bool same = strcmp(n, bare) == 0;
		free(n);
		if (same)
			return true;
	}
	return false;
}

void tmpl_lint(const struct tmpl *t, void (*warn)(void *arg, const char *msg), void *arg)
{
	for (size_t i = 0; i < t->n; i++) {
		const char *name = t->files[i].name;
		if (is_builtin(name))
			continue;
		bool used = false;
		char *a = xasprintf("{{>%s", name), *b = xasprintf("{{<%s", name);
		for (size_t j = 0; j < t->n && !used; j++)
			used = strstr(t->files[j].text, a) || strstr(t->files[j].text, b);
		free(a);
		free(b);
		if (!used) {
			char *msg =
			    xasprintf("%s overrides no built-in template and is used by none "
			              "(a misspelt name?)",
			              t->files[i].path);
			warn(arg, msg);
			free(msg);
		}
	}
}

const char *tmpl_get(const struct tmpl *t, const char *name)
{
	struct file *f = find(t, name);
	return f ? f->text : NULL;
}

static const char *partial(void *ctx, const char *name)
{
	return tmpl_get(ctx, name);
}

int tmpl_render(const struct tmpl *t, const char *name, struct json_object *ctx, struct buf *out,
                struct err *err)
{
	struct file *f = find(t, name);
	if (f == NULL)
		return err_set(err, ERR_INTERNAL, "no template named %s%s", name, SUFFIX);
	struct mustache_opts o = {f->path, partial, (void *)t, strstr(name, ".html") != NULL};
	return mustache_render(f->text, ctx, &o, out, err);
}
