/*
 * What readers see, from a parsed issue: the mail bodies (through the
 * templates, ready for msg.h), the web archive pages and the feeds. Every
 * link is absolute from site.base_url:
 *
 *   BASE                        index.html, the list of issues
 *   BASE issues/N/              the issue's table of contents
 *   BASE issues/N/SLUG.html     one page per article
 *   BASE feed.xml, atom.xml     the newest site.feed_items articles
 *   BASE subscribe              the subscribe form (daemon/http.c)
 *   BASE p/TOKEN                a reader's preference page (daemon/http.c)
 *
 * Every file is written to a temporary name and renamed into place.
 */
#ifndef MATRIX_RENDER_H
#define MATRIX_RENDER_H

#include <stddef.h>
#include <time.h>

#include "conf.h"
#include "err.h"
#include "issue.h"
#include "msg.h"
#include "tmpl.h"
#include "token.h"

struct render_list {
	const char *name;  /* "matrix" */
	const char *title; /* "Matrix" */
};

/* The shared part of the mail for article idx (1-based), or of the digest
 * (idx 0), of an issue published on date, for members of list. */
int render_mail(const struct conf *c, const struct tmpl *t, const struct issue *is, time_t date,
                int idx, const struct render_list *list, struct msg_prep *out, struct err *err);

/* The same, with tag ("[测试]") put before the subject: a test mail must
 * never pass for the real one in the editor's inbox. */
int render_test_mail(const struct conf *c, const struct tmpl *t, const struct issue *is,
                     time_t date, int idx, const struct render_list *list, const char *tag,
                     struct msg_prep *out, struct err *err);

/* The double opt-in mail of a list. */
int render_confirm(const struct conf *c, const struct tmpl *t, const struct render_list *list,
                   struct msg_prep *out, struct err *err);

/* The welcome after a reader confirmed (mail-welcome): what comes, how
 * often, how to change it; digest says which mode the reader chose. */
int render_welcome(const struct conf *c, const struct tmpl *t, const struct render_list *list,
                   bool digest, struct msg_prep *out, struct err *err);

/* The answer to the subscribe form for an address already confirmed on
 * list (mail-already): nothing changed, where to change it. */
int render_already(const struct conf *c, const struct tmpl *t, const struct render_list *list,
                   struct msg_prep *out, struct err *err);

/*
 * The lists the subscribe form of every archive page offers: the public
 * ones (matrixctl(8), list-set --private), the default list first. n 0:
 * no form. The daemon rewrites the pages when they change (publish.c).
 */
struct render_offer {
	const struct render_list *lists;
	size_t n;
};

/* The "subscribe" object of a page's context (subscribe-form.html):
 * action (site.base_url + "subscribe"), several, lists[{name, title,
 * checked}] (the first checked). NULL when o offers nothing. */
struct json_object *render_subscribe_json(const struct conf *c, const struct render_offer *o);

/* issues/N/index.html, issues/N/SLUG.html, and the issue folder's images,
 * under dir (public_dir). An image the folder does not hold is skipped
 * (the issue warns about it); one that is a link, a FIFO or a device is
 * refused (ERR_INPUT), as is any write that fails (ERR_IO). */
int render_issue_pages(const struct conf *c, const struct tmpl *t, const struct issue *is,
                       time_t date, const struct render_offer *offer, const char *dir,
                       struct err *err);

struct render_index_item {
	int number;
	const char *title, *period, *lead; /* lead: the first article's title */
	time_t date;
	size_t narticles;
};
/* index.html under dir, items newest first. */
int render_index(const struct conf *c, const struct tmpl *t, const struct render_index_item *items,
                 size_t n, const struct render_offer *offer, const char *dir, struct err *err);

struct render_feed_item {
	const struct issue *is;
	const struct article *a;
	time_t published, updated;
};
/*
 * Appends the articles of is to items (at most room): table-of-contents
 * order, one second apart so that readers sorting by date keep it (article
 * 1 carries the issue's date); updated is a correction's time, or 0.
 * Returns how many were added.
 */
size_t render_feed_items(const struct issue *is, time_t date, time_t updated,
                         struct render_feed_item *items, size_t room);

/* feed.xml and atom.xml under dir, items newest first (at most feed_items used). */
int render_feeds(const struct conf *c, const struct render_feed_item *items, size_t n,
                 const char *dir, struct err *err);

/*
 * What a message carries for one recipient beyond its body, all signed with
 * k: the one-click unsubscribe URL and mailto address (RFC 8058,
 * docs/deliverability.md), the confirmation URL (when confirm), the VERP
 * envelope sender (smtp.return_path with {token} naming the delivery), the
 * Message-ID's local part (naming the delivery too) and the reader's
 * preference page (BASE p/TOKEN, in every mail's footer). Allocated;
 * render_links_free.
 */
struct render_links {
	char *unsub_url, *unsub_mailto, *confirm_url, *return_path, *message_id, *prefs_url;
};
void render_links(const struct conf *c, const struct token_key *k, int64_t subscriber, int64_t list,
                  int64_t delivery, bool confirm, struct render_links *l);
void render_links_free(struct render_links *l);

/* Absolute URLs; allocated. */
char *render_issue_url(const struct conf *c, int number);
char *render_article_url(const struct conf *c, int number, const char *slug);

/* Renders an arbitrary page template with a context that gets "site" added
 * (used by the HTTP endpoint's unsubscribe and confirm pages). */
int render_page(const struct conf *c, const struct tmpl *t, const char *name,
                struct json_object *ctx, struct buf *out, struct err *err);

#endif
