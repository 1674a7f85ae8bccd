/*
 * Issue commands: inspect (the split), render (preview files), send-test.
 */
#include <getopt.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "cli.h"
#include "fsutil.h"
#include "issue.h"
#include "mailconv.h"
#include "md.h"
#include "msg.h"
#include "render.h"
#include "tmpl.h"
#include "token.h"
#include "utf8.h"
#include "xmalloc.h"

static const char *mode_name(enum issue_mode m)
{
	switch (m) {
	case ISSUE_HEADINGS:
		return "headings";
	case ISSUE_TOC:
		return "table of contents";
	case ISSUE_SINGLE:
		return "single article";
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
	struct issue_opts o = issue_opts_of(&c->conf);
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
	/* What the parser guessed, for the editor to check: on stderr, so that
	 * --json output stays the object alone. */
	for (size_t i = 0; i < is->nwarnings; i++)
		fprintf(stderr, "%s\n", is->warnings[i]);
	issue_free(is);
	return EXIT_OK;
}

int cli_issue_for_mail(struct cli *c, const char *path, const char *to, struct issue **is,
                       struct tmpl **t)
{
	struct err e;
	err_clear(&e);
	*is = NULL;
	*t = NULL;
	if (addr_check(to, strlen(to), NULL, &e) < 0) {
		cli_fail(&e);
		return -1;
	}
	if (cli_need_conf(c) < 0)
		return -1;
	struct issue_opts o = issue_opts_of(&c->conf);
	md_init();
	msg_init();
	if (tmpl_load(t, c->conf.template_dir, &e) < 0 || issue_load(path, &o, is, &e) < 0) {
		cli_fail(&e);
		tmpl_free(*t);
		*t = NULL;
		return -1;
	}
	/* a preview shows what the editor has to check, as inspect does */
	for (size_t i = 0; i < (*is)->nwarnings; i++)
		fprintf(stderr, "%s\n", (*is)->warnings[i]);
	return 0;
}

/* The preview's list: the default list, named after the site. */
static const struct render_list preview_list = {"matrix", NULL};

int cmd_render(struct cli *c, int argc, char **argv)
{
	static const char usage[] = "render ISSUE --out DIR [--to EMAIL]";
	static const struct option opts[] = {
	    {"out", required_argument, NULL, 'o'},
	    {"to", required_argument, NULL, 't'},
	    {NULL, 0, NULL, 0},
	};
	const char *out = NULL, *to = "reader@example.org";
	int ch;
	while ((ch = getopt_long(argc, argv, "o:t:", opts, NULL)) != -1) {
		if (ch == 'o')
			out = optarg;
		else if (ch == 't')
			to = optarg;
		else
			return cli_usage(usage);
	}
	if (out == NULL || optind + 1 != argc)
		return cli_usage(usage);
	struct issue *is;
	struct tmpl *t;
	if (cli_issue_for_mail(c, argv[optind], to, &is, &t) < 0)
		return EXIT_ERR;
	struct err e;
	err_clear(&e);
	int rc = EXIT_ERR;
	/* A preview must not create the daemon's secret: sign with a throw-away
	 * key unless the real one is there to read. */
	struct token_key key;
	if (token_key_load(&key, c->conf.state_dir, false, &e) < 0)
		token_key_random(&key);

	struct render_list list = preview_list;
	list.title = c->conf.site.title;
	time_t date = is->date ? is->date : time(NULL);
	char *maildir = xasprintf("%s/mail", out), *pub = xasprintf("%s/public", out);
	if (fs_mkdirs(maildir, 0755, &e) < 0)
		goto fail;
	struct render_links l;
	render_links(&c->conf, &key, 0, 1, 0, false, &l);
	size_t written = 0;
	for (size_t i = 0; i <= is->narticles; i++) {
		struct msg_prep prep;
		struct buf m;
		buf_init(&m, BUF_NOLIMIT);
		char *id = xasprintf(MAILCONV_MSGID_PREFIX "preview.%d.%zu", is->number, i);
		struct msg_rcpt r = {.email = to,
		                     .name = "",
		                     .message_id = id,
		                     .unsub_url = l.unsub_url,
		                     .unsub_mailto = l.unsub_mailto,
		                     .prefs_url = l.prefs_url,
		                     .date = time(NULL)};
		int ok = render_mail(&c->conf, t, is, date, (int)i, &list, &prep, &e) == 0 &&
		         msg_build(&prep, &r, &m, &e) == 0;
		if (ok) {
			char *path = i == 0 ? xasprintf("%s/digest.eml", out)
			                    : xasprintf("%s/%02zu-%s.eml", maildir, i,
			                                is->articles[i - 1].slug);
			ok = fs_write_atomic(path, buf_str(&m), m.len, 0644, &e) == 0;
			free(path);
			msg_prep_free(&prep);
		}
		free(id);
		buf_free(&m);
		if (!ok) {
			render_links_free(&l);
			goto fail;
		}
		written += i > 0;
	}
	render_links_free(&l);

	struct render_feed_item *fi = xcalloc(is->narticles + 1, sizeof *fi);
	render_feed_items(is, date, 0, fi, is->narticles);
	struct render_index_item item = {
	    .number = is->number,
	    .title = is->title,
	    .period = is->period,
	    .lead = is->narticles ? is->articles[0].title : "",
	    .date = date,
	    .narticles = is->narticles,
	};
	/* the form as it shows with one public list (render reads no store) */
	struct render_offer offer = {&list, 1};
	int r = render_issue_pages(&c->conf, t, is, date, &offer, pub, &e);
	if (r == 0)
		r = render_index(&c->conf, t, &item, 1, &offer, pub, &e);
	if (r == 0)
		r = render_feeds(&c->conf, fi, is->narticles, pub, &e);
	free(fi);
	if (r < 0)
		goto fail;
	if (c->json) {
		struct json_object *j = json_object_new_object();
		json_object_object_add(j, "messages", json_object_new_int((int)written));
		json_object_object_add(j, "mail", json_object_new_string(maildir));
		json_object_object_add(j, "public", json_object_new_string(pub));
		cli_json_print(j);
	} else {
		printf("%s: %zu messages to %s in %s/ (digest: %s/digest.eml)\n", is->title,
		       written, to, maildir, out);
		printf("archive and feeds in %s/ (index.html, issues/%d/, feed.xml, atom.xml)\n",
		       pub, is->number);
	}
	rc = EXIT_OK;
	goto done;
fail:
	rc = cli_fail(&e);
done:
	free(maildir);
	free(pub);
	issue_free(is);
	tmpl_free(t);
	return rc;
}
