/*
 * Rendering (see render.h): template contexts as json-c objects, mail
 * bodies with per-subscriber placeholders, archive pages and feeds.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "feed.h"
#include "fsutil.h"
#include "mailconv.h"
#include "mailhtml.h"
#include "md.h"
#include "render.h"
#include "utf8.h"
#include "xmalloc.h"

#define JSTR(s) json_object_new_string((s) ? (s) : "")

void render_links(const struct conf *c, const struct token_key *k, int64_t subscriber, int64_t list,
                  int64_t delivery, bool confirm, struct render_links *l)
{
	char unsub[TOKEN_MAX], verp[TOKEN_MAX];
	token_make(k, TOKEN_UNSUBSCRIBE, subscriber, list, unsub);
	token_make(k, TOKEN_VERP, delivery, 0, verp);
	l->unsub_url = xasprintf("%su/%s", c->site.base_url, unsub);
	l->unsub_mailto = mailconv_unsub_mailto(c->smtp.return_path, unsub);
	l->confirm_url = NULL;
	if (confirm) {
		/* only the confirmation mail has one: an HMAC saved on every other */
		char tok[TOKEN_MAX];
		token_make(k, TOKEN_CONFIRM, subscriber, list, tok);
		l->confirm_url = xasprintf("%sc/%s", c->site.base_url, tok);
	}
	l->return_path = mailconv_return_path(c->smtp.return_path, verp);
	l->message_id = mailconv_message_id(verp);
	char prefs[TOKEN_MAX];
	token_make(k, TOKEN_PREFS, subscriber, 0, prefs);
	l->prefs_url = xasprintf("%sp/%s", c->site.base_url, prefs);
}

void render_links_free(struct render_links *l)
{
	free(l->unsub_url);
	free(l->unsub_mailto);
	free(l->confirm_url);
	free(l->return_path);
	free(l->message_id);
	free(l->prefs_url);
	memset(l, 0, sizeof *l);
}

char *render_issue_url(const struct conf *c, int number)
{
	return xasprintf("%sissues/%d/", c->site.base_url, number);
}

char *render_article_url(const struct conf *c, int number, const char *slug)
{
	return xasprintf("%sissues/%d/%s.html", c->site.base_url, number, slug);
}

static void add_str(struct json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, JSTR(v));
}

static void add_owned(struct json_object *o, const char *k, char *v)
{
	json_object_object_add(o, k, JSTR(v));
	free(v);
}

static struct json_object *site_json(const struct conf *c)
{
	struct json_object *s = json_object_new_object();
	add_str(s, "title", c->site.title);
	add_str(s, "base_url", c->site.base_url);
	add_str(s, "language", c->site.language);
	add_str(s, "archive_url", c->site.base_url);
	add_owned(s, "feed_url", xasprintf("%sfeed.xml", c->site.base_url));
	add_owned(s, "atom_url", xasprintf("%satom.xml", c->site.base_url));
	add_owned(s, "subscribe_url", xasprintf("%ssubscribe", c->site.base_url));
	return s;
}

static char *date_text(const char *lang, time_t t)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	if (strncmp(lang, "zh", 2) == 0 || strncmp(lang, "ja", 2) == 0)
		return xasprintf("%d年%d月%d日", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
	return xasprintf("%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

/* A rule of '=' as wide as the title (text mail), at most 72 columns. */
static char *rule_for(const char *title)
{
	size_t w = utf8_width(title);
	if (w > 72)
		w = 72;
	char *r = xmalloc(w + 1);
	memset(r, '=', w);
	r[w] = '\0';
	return r;
}

/* One article; html_mail selects the inline-styled HTML for mail. */
static struct json_object *article_json(const struct conf *c, const struct issue *is, size_t i,
                                        bool html_mail, bool neighbours)
{
	const struct article *a = &is->articles[i];
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "index", json_object_new_int(a->index));
	add_str(o, "title", a->title);
	add_owned(o, "title_rule", rule_for(a->title));
	add_str(o, "section", a->section);
	add_str(o, "slug", a->slug);
	add_owned(o, "url", render_article_url(c, is->number, a->slug));
	add_str(o, "summary", a->summary);
	struct buf sw;
	buf_init(&sw, BUF_NOLIMIT);
	md_wrap(&sw, a->summary, 72, "");
	add_owned(o, "summary_text", buf_detach(&sw));
	add_str(o, "text", a->text);
	if (html_mail) {
		struct buf b;
		buf_init(&b, BUF_NOLIMIT);
		mailhtml_inline(a->html, &b);
		add_owned(o, "html", buf_detach(&b));
	} else {
		add_str(o, "html", a->html);
	}
	if (neighbours) {
		for (int d = -1; d <= 1; d += 2) {
			if ((d < 0 && i == 0) || (d > 0 && i + 1 >= is->narticles))
				continue;
			const struct article *n = &is->articles[i + (size_t)d];
			struct json_object *no = json_object_new_object();
			add_str(no, "title", n->title);
			add_owned(no, "url", render_article_url(c, is->number, n->slug));
			json_object_object_add(o, d < 0 ? "prev" : "next", no);
		}
	}
	return o;
}

/* issue, articles[] and sections[{name, articles[]}] */
static void issue_into(struct json_object *ctx, const struct conf *c, const struct issue *is,
                       time_t date, bool html_mail)
{
	struct json_object *io = json_object_new_object();
	add_str(io, "title", is->title);
	/* "NO.60" when the title repeats the site's name ("Matrix NO.60") */
	size_t tl = strlen(c->site.title);
	add_str(io, "short_title",
	        strncmp(is->title, c->site.title, tl) == 0 && is->title[tl] == ' ' &&
	                is->title[tl + 1]
	            ? is->title + tl + 1
	            : is->title);
	json_object_object_add(io, "number", json_object_new_int(is->number));
	add_str(io, "period", is->period);
	add_owned(io, "url", render_issue_url(c, is->number));
	add_owned(io, "date_text", date_text(is->language, date));
	json_object_object_add(io, "count", json_object_new_int((int)is->narticles));
	add_str(io, "colophon_html", is->colophon_html);
	add_str(io, "preface_html", is->preface_html);
	add_str(io, "preface_text", is->preface_text ? is->preface_text : "");
	add_str(io, "language", is->language);
	json_object_object_add(ctx, "issue", io);

	struct json_object *arts = json_object_new_array();
	struct json_object *secs = json_object_new_array();
	struct json_object *cur = NULL;
	const char *cur_name = NULL;
	for (size_t i = 0; i < is->narticles; i++) {
		struct json_object *a = article_json(c, is, i, html_mail, false);
		json_object_array_add(arts, a);
		if (cur_name == NULL || strcmp(cur_name, is->articles[i].section) != 0) {
			struct json_object *s = json_object_new_object();
			cur_name = is->articles[i].section;
			add_str(s, "name", cur_name);
			cur = json_object_new_array();
			json_object_object_add(s, "articles", cur);
			json_object_array_add(secs, s);
		}
		json_object_array_add(cur, json_object_get(a));
	}
	json_object_object_add(ctx, "articles", arts);
	json_object_object_add(ctx, "sections", secs);
}

static struct json_object *base_ctx(const struct conf *c, const struct render_list *list)
{
	struct json_object *ctx = json_object_new_object();
	json_object_object_add(ctx, "site", site_json(c));
	if (list) {
		struct json_object *l = json_object_new_object();
		add_str(l, "name", list->name);
		add_str(l, "title", list->title && *list->title ? list->title : list->name);
		json_object_object_add(ctx, "list", l);
	}
	struct json_object *s = json_object_new_object();
	add_str(s, "email", MSG_PH_EMAIL);
	add_str(s, "name", MSG_PH_NAME);
	add_str(s, "if_name", MSG_PH_IF_NAME); /* {{if_name}}…{{end_name}}: kept with a name */
	add_str(s, "end_name", MSG_PH_END_NAME);
	add_str(s, "unsubscribe_url", MSG_PH_UNSUBSCRIBE);
	add_str(s, "preferences_url", MSG_PH_PREFS);
	json_object_object_add(ctx, "subscriber", s);
	return ctx;
}

static int render_both(const struct tmpl *t, const char *stem, struct json_object *ctx,
                       struct buf *html, struct buf *text, struct err *err)
{
	char name[64];
	snprintf(name, sizeof name, "%s.html", stem);
	if (tmpl_render(t, name, ctx, html, err) < 0)
		return -1;
	snprintf(name, sizeof name, "%s.txt", stem);
	return tmpl_render(t, name, ctx, text, err);
}

int render_mail(const struct conf *c, const struct tmpl *t, const struct issue *is, time_t date,
                int idx, const struct render_list *list, struct msg_prep *out, struct err *err)
{
	return render_test_mail(c, t, is, date, idx, list, NULL, out, err);
}

int render_test_mail(const struct conf *c, const struct tmpl *t, const struct issue *is,
                     time_t date, int idx, const struct render_list *list, const char *tag,
                     struct msg_prep *out, struct err *err)
{
	struct json_object *ctx = base_ctx(c, list);
	struct buf html, text;
	buf_init(&html, BUF_NOLIMIT);
	buf_init(&text, BUF_NOLIMIT);
	int r = -1;
	if (idx < 0 || (size_t)idx > is->narticles) {
		err_set(err, ERR_INTERNAL, "issue %d has no article %d", is->number, idx);
		goto out;
	}
	issue_into(ctx, c, is, date, true);
	struct msg_head h = {
	    .from = c->site.from,
	    .list_name = list ? list->name : NULL,
	    .list_title = list ? list->title : NULL,
	    .list_archive = c->site.base_url,
	    .language = is->language,
	    .bulk = true,
	};
	char *subject;
	if (idx == 0) {
		subject = is->period[0] ? xasprintf("%s · %s", is->title, is->period)
		                        : xstrdup(is->title);
		r = render_both(t, "mail-digest", ctx, &html, &text, err);
	} else {
		json_object_object_add(ctx, "article",
		                       article_json(c, is, (size_t)idx - 1, true, false));
		subject = xstrdup(is->articles[idx - 1].title);
		r = render_both(t, "mail-article", ctx, &html, &text, err);
	}
	if (tag && *tag) {
		char *tagged = xasprintf("%s %s", tag, subject);
		free(subject);
		subject = tagged;
	}
	h.subject = subject;
	if (r == 0)
		r = msg_prepare(out, &h, buf_str(&html), buf_str(&text), err);
	free(subject);
out:
	json_object_put(ctx);
	buf_free(&html);
	buf_free(&text);
	return r;
}

/* A mail of one membership through templates stem: the confirmation (no
 * list mail: bulk false, no List-Unsubscribe), the welcome and the
 * "already subscribed" notice (to a confirmed member: bulk, the one-click
 * unsubscribe applies). Takes ctx. */
static int render_member_mail(const struct conf *c, const struct tmpl *t,
                              const struct render_list *list, const char *stem,
                              const char *subject_fmt, bool bulk, struct json_object *ctx,
                              struct msg_prep *out, struct err *err)
{
	struct buf html, text;
	buf_init(&html, BUF_NOLIMIT);
	buf_init(&text, BUF_NOLIMIT);
	const char *title = list->title && *list->title ? list->title : list->name;
	char *subject = xasprintf(subject_fmt, title);
	struct msg_head h = {
	    .subject = subject,
	    .from = c->site.from,
	    .list_name = list->name,
	    .list_title = list->title,
	    .list_archive = bulk ? c->site.base_url : NULL,
	    .language = c->site.language,
	    .bulk = bulk,
	};
	int r = render_both(t, stem, ctx, &html, &text, err);
	if (r == 0)
		r = msg_prepare(out, &h, buf_str(&html), buf_str(&text), err);
	free(subject);
	json_object_put(ctx);
	buf_free(&html);
	buf_free(&text);
	return r;
}

int render_confirm(const struct conf *c, const struct tmpl *t, const struct render_list *list,
                   struct msg_prep *out, struct err *err)
{
	struct json_object *ctx = base_ctx(c, list);
	add_str(ctx, "confirm_url", MSG_PH_CONFIRM);
	return render_member_mail(c, t, list, "mail-confirm", "请确认订阅《%s》", false, ctx, out,
	                          err);
}

int render_welcome(const struct conf *c, const struct tmpl *t, const struct render_list *list,
                   bool digest, struct msg_prep *out, struct err *err)
{
	struct json_object *ctx = base_ctx(c, list);
	json_object_object_add(ctx, digest ? "digest" : "article", json_object_new_boolean(1));
	return render_member_mail(c, t, list, "mail-welcome", "欢迎订阅《%s》", true, ctx, out,
	                          err);
}

int render_already(const struct conf *c, const struct tmpl *t, const struct render_list *list,
                   struct msg_prep *out, struct err *err)
{
	return render_member_mail(c, t, list, "mail-already", "你已经订阅了《%s》", true,
	                          base_ctx(c, list), out, err);
}

int render_page(const struct conf *c, const struct tmpl *t, const char *name,
                struct json_object *ctx, struct buf *out, struct err *err)
{
	json_object_object_add(ctx, "site", site_json(c));
	return tmpl_render(t, name, ctx, out, err);
}

static int write_page(const struct tmpl *t, const char *name, struct json_object *ctx,
                      const char *path, struct err *err)
{
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	int r = tmpl_render(t, name, ctx, &b, err);
	if (r == 0)
		r = fs_mkparents(path, 0755, err);
	if (r == 0)
		r = fs_write_atomic(path, b.data ? b.data : "", b.len, 0644, err);
	buf_free(&b);
	return r;
}

/* Copies an image of the issue folder: neither the folder nor any
 * component of rel may be a link, and the image must be a regular file
 * (fsutil.h), or anything the daemon can read could be published. */
static int copy_asset(const char *folder, const char *rel, const char *dest, struct err *err)
{
	struct stat st;
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	char *name = xasprintf("%s/%s", folder, rel);
	int fd = fs_open_nofollow(folder, rel, 0, &st, err);
	int r = fd < 0 ? -1 : fs_read_fd(fd, name, 64 << 20, &b, err);
	if (fd >= 0)
		close(fd);
	if (r < 0)
		err_prefix(err, "image referenced by the issue");
	if (r == 0)
		r = fs_mkparents(dest, 0755, err);
	if (r == 0)
		r = fs_write_atomic(dest, b.data ? b.data : "", b.len, 0644, err);
	buf_free(&b);
	free(name);
	return r;
}

struct json_object *render_subscribe_json(const struct conf *c, const struct render_offer *o)
{
	if (o == NULL || o->n == 0)
		return NULL;
	struct json_object *s = json_object_new_object();
	add_owned(s, "action", xasprintf("%ssubscribe", c->site.base_url));
	json_object_object_add(s, "several", json_object_new_boolean(o->n > 1));
	struct json_object *arr = json_object_new_array();
	for (size_t i = 0; i < o->n; i++) {
		struct json_object *l = json_object_new_object();
		add_str(l, "name", o->lists[i].name);
		add_str(l, "title",
		        o->lists[i].title && *o->lists[i].title ? o->lists[i].title
		                                                : o->lists[i].name);
		json_object_object_add(l, "checked", json_object_new_boolean(i == 0));
		json_object_array_add(arr, l);
	}
	json_object_object_add(s, "lists", arr);
	return s;
}

/* site, and the subscribe form when there is a list to offer */
static struct json_object *page_ctx(const struct conf *c, const struct render_offer *offer)
{
	struct json_object *ctx = json_object_new_object();
	json_object_object_add(ctx, "site", site_json(c));
	struct json_object *sub = render_subscribe_json(c, offer);
	if (sub)
		json_object_object_add(ctx, "subscribe", sub);
	return ctx;
}

int render_issue_pages(const struct conf *c, const struct tmpl *t, const struct issue *is,
                       time_t date, const struct render_offer *offer, const char *dir,
                       struct err *err)
{
	int r = 0;
	for (size_t i = 0; i < is->narticles && r == 0; i++) {
		struct json_object *ctx = page_ctx(c, offer);
		issue_into(ctx, c, is, date, false);
		json_object_object_add(ctx, "article", article_json(c, is, i, false, true));
		char *path =
		    xasprintf("%s/issues/%d/%s.html", dir, is->number, is->articles[i].slug);
		r = write_page(t, "page-article.html", ctx, path, err);
		free(path);
		json_object_put(ctx);
	}
	if (r == 0) {
		struct json_object *ctx = page_ctx(c, offer);
		issue_into(ctx, c, is, date, false);
		char *path = xasprintf("%s/issues/%d/index.html", dir, is->number);
		r = write_page(t, "page-issue.html", ctx, path, err);
		free(path);
		json_object_put(ctx);
	}
	for (size_t i = 0; i < is->nassets && r == 0 && is->folder; i++) {
		char *dest = xasprintf("%s/issues/%d/%s", dir, is->number, is->assets[i]);
		struct err e;
		r = copy_asset(is->folder, is->assets[i], dest, &e);
		if (r < 0 && e.kind == ERR_NOTFOUND)
			r = 0; /* not in the folder: the issue's warning (issue.h), not ours */
		else if (r < 0 && err)
			*err = e;
		free(dest);
	}
	return r;
}

int render_index(const struct conf *c, const struct tmpl *t, const struct render_index_item *items,
                 size_t n, const struct render_offer *offer, const char *dir, struct err *err)
{
	struct json_object *ctx = page_ctx(c, offer);
	json_object_object_add(ctx, "count", json_object_new_int((int)n));
	struct json_object *arr = json_object_new_array();
	for (size_t i = 0; i < n; i++) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "number", json_object_new_int(items[i].number));
		add_str(o, "title", items[i].title);
		add_str(o, "period", items[i].period);
		add_str(o, "lead", items[i].lead);
		add_owned(o, "url", render_issue_url(c, items[i].number));
		add_owned(o, "date_text", date_text(c->site.language, items[i].date));
		json_object_object_add(o, "count", json_object_new_int((int)items[i].narticles));
		json_object_array_add(arr, o);
	}
	json_object_object_add(ctx, "issues", arr);
	char *path = xasprintf("%s/index.html", dir);
	int r = write_page(t, "page-index.html", ctx, path, err);
	free(path);
	json_object_put(ctx);
	return r;
}

size_t render_feed_items(const struct issue *is, time_t date, time_t updated,
                         struct render_feed_item *items, size_t room)
{
	size_t k = 0;
	for (; k < is->narticles && k < room; k++) {
		time_t t = date - (time_t)k;
		items[k] =
		    (struct render_feed_item){is, &is->articles[k], t, updated > t ? updated : t};
	}
	return k;
}

int render_feeds(const struct conf *c, const struct render_feed_item *items, size_t n,
                 const char *dir, struct err *err)
{
	if (n > (size_t)c->site.feed_items)
		n = (size_t)c->site.feed_items;
	struct feed_entry *e = xcalloc(n ? n : 1, sizeof *e);
	char **urls = xcalloc(n ? n : 1, sizeof *urls);
	char *rss_url = xasprintf("%sfeed.xml", c->site.base_url);
	char *atom_url = xasprintf("%satom.xml", c->site.base_url);
	time_t newest = 0;
	for (size_t i = 0; i < n; i++) {
		const struct article *a = items[i].a;
		urls[i] = render_article_url(c, items[i].is->number, a->slug);
		e[i] = (struct feed_entry){
		    .id = urls[i],
		    .title = a->title,
		    .link = urls[i],
		    .section = a->section,
		    .summary = a->summary,
		    .html = a->html,
		    .author = "",
		    .published = items[i].published,
		    .updated = items[i].updated,
		};
		if (items[i].updated > newest)
			newest = items[i].updated;
	}
	struct feed_meta m = {
	    .title = c->site.title,
	    .subtitle = "",
	    .site_url = c->site.base_url,
	    .rss_url = rss_url,
	    .atom_url = atom_url,
	    .language = c->site.language,
	    .author = c->site.title,
	    .author_email = "",
	    .updated = newest,
	};
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	char *path = NULL;
	int r = fs_mkdirs(dir, 0755, err);
	if (r == 0)
		r = feed_rss(&b, &m, e, n, err);
	if (r == 0) {
		path = xasprintf("%s/feed.xml", dir);
		r = fs_write_atomic(path, buf_str(&b), b.len, 0644, err);
		free(path);
	}
	buf_reset(&b);
	if (r == 0)
		r = feed_atom(&b, &m, e, n, err);
	if (r == 0) {
		path = xasprintf("%s/atom.xml", dir);
		r = fs_write_atomic(path, buf_str(&b), b.len, 0644, err);
		free(path);
	}
	buf_free(&b);
	for (size_t i = 0; i < n; i++)
		free(urls[i]);
	free(urls);
	free(e);
	free(rss_url);
	free(atom_url);
	return r;
}
