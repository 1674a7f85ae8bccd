/*
 * Readers on the web, the subscribe half (docs/design.md, "Readers on the
 * web"): the lists the archive pages offer, the page at site.base_url +
 * "subscribe" and the answer to its POST. This file knows forms and
 * templates, not HTTP: http.c reads the request, applies the per-client
 * limit and sends what is built here. Every POST that gets as far as the
 * store is answered with the same page whatever the address's state; what
 * was decided (subs_web_subscribe) goes to the log with the subscriber's
 * id, never the address, and to the mailbox.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "addr.h"
#include "buf.h"
#include "httpreq.h"
#include "log.h"
#include "matrixd.h"
#include "render.h"
#include "subs.h"
#include "xmalloc.h"

#define PAGE "page-subscribe.html"

int web_offer_load(struct daemon *d, struct web_offer *w)
{
	struct err e;
	memset(w, 0, sizeof *w);
	w->lists = subs_public_lists(d->store, &w->nlists, &e);
	if (w->lists == NULL) {
		log_warnx("the lists the subscribe form offers: %s", e.msg);
		w->nlists = 0;
		return -1;
	}
	w->rl = xcalloc(w->nlists ? w->nlists : 1, sizeof *w->rl);
	for (size_t i = 0; i < w->nlists; i++)
		w->rl[i] = (struct render_list){w->lists[i].name, w->lists[i].title};
	w->offer = (struct render_offer){w->rl, w->nlists};
	return 0;
}

void web_offer_free(struct web_offer *w)
{
	if (w == NULL)
		return;
	subs_lists_free(w->lists, w->nlists);
	free(w->rl);
	memset(w, 0, sizeof *w);
}

/* What a refused POST had in its fields, for the form to show again so that
 * the reader corrects only the field named. Text with control characters
 * (or not UTF-8) is not shown back. */
struct kept {
	const char *email, *name; /* NULL: shown empty */
	bool digest;
	const char **lists; /* the names chosen, of the lists offered */
	size_t nlists;
};

static bool showable(const char *s)
{
	return s && *s && strlen(s) <= 4 * ADDR_MAX && subs_text_check(s, strlen(s), 0) == NULL;
}

/* The form's fields filled in with k (typed_email, typed_name, typed_digest
 * and each list's checked). */
static void keep_into(struct json_object *sub, const struct kept *k)
{
	if (showable(k->email))
		json_object_object_add(sub, "typed_email", json_object_new_string(k->email));
	if (showable(k->name))
		json_object_object_add(sub, "typed_name", json_object_new_string(k->name));
	if (k->digest)
		json_object_object_add(sub, "typed_digest", json_object_new_boolean(1));
	struct json_object *arr;
	if (!json_object_object_get_ex(sub, "lists", &arr))
		return;
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *l = json_object_array_get_idx(arr, i), *n;
		bool on = false;
		if (json_object_object_get_ex(l, "name", &n))
			for (size_t j = 0; j < k->nlists && !on; j++)
				on = strcmp(k->lists[j], json_object_get_string(n)) == 0;
		json_object_object_add(l, "checked", json_object_new_boolean(on));
	}
}

/* page-subscribe.html with ctx (consumed) and the form of offer, filled in
 * with k when not NULL. */
static void page_kept(struct daemon *d, unsigned status, struct json_object *ctx,
                      const struct web_offer *w, const struct kept *k, struct web_answer *a)
{
	struct json_object *sub = w ? render_subscribe_json(&d->conf, &w->offer) : NULL;
	if (sub && k)
		keep_into(sub, k);
	if (sub)
		json_object_object_add(ctx, "subscribe", sub);
	struct buf out;
	struct err e;
	buf_init(&out, BUF_NOLIMIT);
	int r = render_page(&d->conf, d->tmpl, PAGE, ctx, &out, &e);
	json_object_put(ctx);
	if (r < 0) {
		log_err("http: %s", e.msg);
		buf_free(&out);
		a->status = 500;
		a->body = NULL;
		a->len = 0;
		return;
	}
	a->status = status;
	a->len = out.len;
	a->body = buf_detach(&out);
}

static void page(struct daemon *d, unsigned status, struct json_object *ctx,
                 const struct web_offer *w, struct web_answer *a)
{
	page_kept(d, status, ctx, w, NULL, a);
}

static struct json_object *state(const char *name)
{
	struct json_object *ctx = json_object_new_object();
	json_object_object_add(ctx, name, json_object_new_boolean(1));
	return ctx;
}

void web_busy_page(struct daemon *d, unsigned status, struct web_answer *a)
{
	page(d, status, state("busy"), NULL, a);
}

void web_subscribe_page(struct daemon *d, struct web_answer *a)
{
	struct web_offer w;
	if (web_offer_load(d, &w) < 0) {
		web_busy_page(d, 503, a);
		return;
	}
	page(d, 200, state(w.nlists ? "form" : "closed"), &w, a);
	web_offer_free(&w);
}

/* A 4xx naming what is wrong (page-subscribe.html, "problem"), logged once;
 * the form filled in with k (NULL: as on GET). */
static void problem(struct daemon *d, unsigned status, const char *what, const char *why,
                    const struct web_offer *w, const struct kept *k, struct web_answer *a)
{
	log_info("http: subscribe refused (%u): %s", status, why);
	struct json_object *ctx = json_object_new_object(), *p = json_object_new_object();
	json_object_object_add(p, what, json_object_new_boolean(1));
	json_object_object_add(ctx, "problem", p);
	page_kept(d, status, ctx, w, k, a);
}

/* The value without the blanks a form field picks up around it. */
static char *trimmed(const char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	return xstrndup(s, n);
}

static bool is_form(const char *ctype)
{
	/* application/x-www-form-urlencoded, perhaps with a charset (what
	 * every browser sends for this form; UTF-8 is checked by the parser) */
	static const char t[] = "application/x-www-form-urlencoded";
	if (ctype == NULL || strncasecmp(ctype, t, sizeof t - 1) != 0)
		return false;
	char c = ctype[sizeof t - 1];
	return c == '\0' || c == ';' || c == ' ' || c == '\t';
}

void web_subscribe_post(struct daemon *d, const char *ctype, const char *body, size_t len,
                        struct web_answer *a)
{
	struct web_offer w;
	struct httpreq_form f = {NULL, 0};
	struct err e;
	char *email = NULL, *name = NULL;
	const char **lists = NULL;
	size_t nlists = 0;
	err_clear(&e);
	if (web_offer_load(d, &w) < 0) {
		web_busy_page(d, 503, a);
		return;
	}
	if (w.nlists == 0) {
		log_info("http: subscribe refused (403): every list is private");
		page(d, 403, state("closed"), &w, a);
		goto out;
	}
	if (!is_form(ctype)) {
		problem(d, 415, "form", "not an application/x-www-form-urlencoded body", &w, NULL,
		        a);
		goto out;
	}
	if (httpreq_form_parse(body, len, &f, &e) < 0) {
		problem(d, 400, "form", e.msg, &w, NULL, a);
		goto out;
	}
	/* what the reader typed, shown again if the form is refused */
	const char *ev = httpreq_form_get(&f, "email"), *nv = httpreq_form_get(&f, "name"),
	           *mv = httpreq_form_get(&f, "mode");
	email = trimmed(ev ? ev : "");
	name = trimmed(nv ? nv : "");
	lists = xcalloc(f.n + 1, sizeof *lists);
	for (size_t i = 0; i < f.n; i++)
		if (strcmp(f.fields[i].name, "list") == 0)
			for (size_t k = 0; k < w.nlists; k++)
				if (strcmp(w.lists[k].name, f.fields[i].value) == 0)
					lists[nlists++] = w.lists[k].name;
	struct kept kept = {email, name, mv && strcmp(mv, "digest") == 0, lists, nlists};
	nlists = 0;
	/* every field the form has at most once, except list */
	static const char *const once[] = {"email", "name", "mode", "website"};
	for (size_t i = 0; i < sizeof once / sizeof *once; i++)
		if (httpreq_form_count(&f, once[i]) > 1) {
			char why[64];
			snprintf(why, sizeof why, "the field %s more than once", once[i]);
			problem(d, 400, "form", why, &w, &kept, a);
			goto out;
		}
	if (*email == '\0') {
		problem(d, 400, "email", "no email field", &w, &kept, a);
		goto out;
	}
	char key[ADDR_MAX + 1];
	if (addr_check(email, strlen(email), key, &e) < 0) {
		/* addr_check's message quotes the address: not at info level */
		problem(d, 400, "email", "the email field is not a valid address", &w, &kept, a);
		goto out;
	}
	const char *why = subs_text_check(name, strlen(name), SUBS_NAME_MAX);
	if (why) {
		char msg[128];
		snprintf(msg, sizeof msg, "the name %s", why);
		problem(d, 400, "name", msg, &w, &kept, a);
		goto out;
	}
	enum subs_mode mode = SUBS_ARTICLE;
	if (mv && subs_mode_parse(mv, &mode) < 0) {
		problem(d, 400, "mode", "the mode is neither article nor digest", &w, &kept, a);
		goto out;
	}
	for (size_t i = 0; i < f.n; i++) {
		if (strcmp(f.fields[i].name, "list") != 0)
			continue;
		const char *want = f.fields[i].value;
		size_t k = 0;
		while (k < w.nlists && strcmp(w.lists[k].name, want) != 0)
			k++;
		if (k == w.nlists) {
			problem(d, 400, "list", "a list that is not public or does not exist", &w,
			        &kept, a);
			goto out;
		}
		lists[nlists++] = w.lists[k].name;
	}
	if (nlists == 0 && w.nlists == 1)
		lists[nlists++] = w.lists[0].name; /* the one list, the form shows no choice */
	if (nlists == 0) {
		problem(d, 400, "nolist", "no list chosen", &w, &kept, a);
		goto out;
	}
	const char *v = httpreq_form_get(&f, "website");
	if (v && *v) {
		/* a bot: the answer of every other POST, and nothing else */
		log_info("http: subscribe: the honeypot field was filled in; nothing done");
	} else {
		struct subs_web_request rq = {email, name, mode, lists, nlists};
		struct subs_web_result res;
		if (subs_web_subscribe(d->store, &rq, &res, &e) < 0) {
			if (e.kind == ERR_TEMP) {
				daemon_store_trouble(d, "subscriptions from the web get 503", &e);
				web_busy_page(d, 503, a);
			} else if (e.kind == ERR_INPUT) {
				problem(d, 400, "form", e.msg, &w, &kept, a);
			} else {
				log_err("http: subscribe: %s", e.msg);
				web_busy_page(d, 503, a);
			}
			goto out;
		}
		if (res.limited)
			log_info("http: subscribe: an address had a mail from the form less than "
			         "%d s ago; nothing done",
			         SUBS_WEB_INTERVAL);
		else
			log_info("http: subscribe subscriber=%" PRId64
			         "%s lists=%zu confirmations=%zu "
			         "notices=%zu",
			         res.subscriber_id, res.created ? " (new)" : "", nlists,
			         res.confirmations, res.notices);
	}
	struct json_object *ctx = state("sent");
	json_object_object_add(ctx, "email", json_object_new_string(email));
	page(d, 200, ctx, NULL, a);
out:
	free(email);
	free(name);
	free(lists);
	httpreq_form_free(&f);
	web_offer_free(&w);
}
