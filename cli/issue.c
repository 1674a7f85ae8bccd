/*
 * Issue commands: inspect (the split), render (preview files), send-test.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "issue.h"
#include "md.h"
#include "utf8.h"

static void opts_from_conf(const struct conf *c, struct issue_opts *o)
{
	o->max_bytes = (size_t)c->max_issue_bytes;
	o->site_title = c->site.title;
	o->language = c->site.language;
	o->base_url = c->site.base_url;
}

static const char *mode_name(enum issue_mode m)
{
	switch (m) {
	case ISSUE_HEADINGS: return "headings";
	case ISSUE_TOC: return "table of contents";
	case ISSUE_SINGLE: return "single article";
	}
	return "?";
}

static void outline(const struct issue *is)
{
	printf("%s", is->title);
	if (is->period[0])
		printf(" · %s", is->period);
	printf(" · No. %d · %s · %s\n", is->number, is->language,
	       is->is_draft ? "draft (rendered, never sent)" : "publish");
	printf("%s: %zu article%s, split by %s", is->path, is->narticles,
	       is->narticles == 1 ? "" : "s", mode_name(is->mode));
	if (is->colophon[0])
		printf("; colophon %zu characters", utf8_len(is->colophon));
	printf("\n");
	const char *section = NULL;
	struct table *t = table_new(5, "#", "line", "title", "slug", "chars");
	for (size_t i = 0; i < is->narticles; i++) {
		const struct article *a = &is->articles[i];
		if (section == NULL || strcmp(section, a->section) != 0) {
			section = a->section;
			char head[300];
			snprintf(head, sizeof head, "[%s]", section[0] ? section : "—");
			table_row(t, "", "", head, "", "");
		}
		char idx[16], line[16], chars[32];
		snprintf(idx, sizeof idx, "%d", a->index);
		snprintf(line, sizeof line, "%d", a->line);
		snprintf(chars, sizeof chars, "%zu", utf8_len(a->markdown));
		table_row(t, idx, line, a->title, a->slug, chars);
	}
	printf("\n");
	table_print(t, stdout);
}

int cmd_inspect(struct cli *c, int argc, char **argv)
{
	static const char usage[] = "inspect ISSUE";
	static const struct option opts[] = {{NULL, 0, NULL, 0}};
	if (getopt_long(argc, argv, "", opts, NULL) != -1 || optind + 1 != argc)
		return cli_usage(usage);
	if (cli_want_conf(c) < 0)
		return EXIT_ERR;
	struct issue_opts o = {0};
	opts_from_conf(&c->conf, &o);
	struct issue *is = NULL;
	struct err e;
	err_clear(&e);
	md_init();
	if (issue_load(argv[optind], &o, &is, &e) < 0)
		return cli_fail(&e);
	if (c->json)
		cli_json_print(issue_to_json(is));
	else
		outline(is);
	issue_free(is);
	return EXIT_OK;
}
