/*
 * The HTTP endpoint: RFC 8058 one-click unsubscribe at /u/TOKEN, the
 * double opt-in link at /c/TOKEN, a reader's preference page at /p/TOKEN,
 * the subscribe form at /subscribe (its pages come from web.c), and the
 * files of public_dir, every path
 * relative to site.base_url and served at the root of http.listen.
 * libmicrohttpd runs in external-epoll mode inside the main thread's event
 * loop, never in threads of its own: the handlers touch SQLite and the
 * templates, which only the main thread may. GET and HEAD never change
 * anything, since mail scanners follow every link; only a POST unsubscribes
 * or confirms. Every request head is judged (lib/httpreq.h) before its body
 * is read, and every connection must deliver its request within a bounded
 * time (docs/design.md). docs/nginx.md describes the reverse proxy that puts
 * this behind TLS in production, and every limit.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <microhttpd.h>

#include "buf.h"
#include "fsutil.h"
#include "httpreq.h"
#include "log.h"
#include "matrixd.h"
#include "prefs.h"
#include "render.h"
#include "subs.h"
#include "xmalloc.h"

#define HTTP_DISCARD_MAX 65536 /* bytes of an oversized chunked body read before closing */
/* Per connection: request line, headers and their records. Four times
 * HTTPREQ_HEAD_MAX, so that our 414 and 431 (with the header set of every
 * answer) come first; past it libmicrohttpd answers itself (docs/nginx.md). */
#define HTTP_MEMORY      65536
#define HTTP_CONN_MAX    256
#define HTTP_CONN_PER_IP 32 /* behind a proxy every connection is the proxy's */
#define HTTP_TIMEOUT_S   15 /* idle seconds before a connection is closed */
/* A request must arrive whole (line, headers, body) within this long of the
 * connection opening or of the previous answer: libmicrohttpd's timeout is
 * an idle one, which a client sending a byte now and then never meets. */
#define HTTP_ARRIVE_MS 10000
/* Connections still waiting for their request hold at most this many of
 * the HTTP_CONN_MAX slots; a new one past it pushes out the oldest, so the
 * rest stays free for clients that are not slow. */
#define HTTP_ARRIVING_MAX (HTTP_CONN_MAX * 3 / 4)

/* Token bucket per client for /u/, /c/ and /p/: a burst of RATE_BURST requests,
 * then one every 1/RATE_PER_S seconds. IPv6 clients are keyed by their /64,
 * which one subscriber's line usually owns whole. */
#define RATE_SLOTS 1024
#define RATE_PROBE 8
#define RATE_BURST 20.0
#define RATE_PER_S 0.5
#define RATE_RETRY "2"
/* POST /subscribe has its own, tighter bucket: each request may mail an
 * address, so a client gets a few at once and then one a minute (the
 * per-address limit, subs.h, is the other half). */
#define SUBSCRIBE_BURST 5.0
#define SUBSCRIBE_PER_S (1.0 / 60)
#define SUBSCRIBE_RETRY "60"
/* A store another process holds locked answers a POST with 503: the
 * client may try again in this many seconds (docs/design.md). */
#define BUSY_RETRY "5"

/* Static pages, no script; inline styles (page-layout) and remote images
 * (articles) allowed; forms may only post back here. */
#define CSP                                                                                        \
	"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "             \
	"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

struct bucket {
	unsigned char key[16];
	bool used;
	double tokens;
	int64_t at; /* ms, monotonic */
};

/* One connection, from its start to its close: in the arriving list while
 * its next request has not arrived whole. */
struct conn {
	struct conn *prev, *next;
	int fd;
	int64_t since; /* ms, monotonic: opened, or the previous answer completed */
	bool arriving;
};

struct http {
	struct daemon *d;
	struct MHD_Daemon *mhd;
	int ep;  /* what the loop polls: MHD's epoll fd and tfd */
	int tfd; /* armed for MHD's next timeout */
	char *listen;
	bool starting;
	char startmsg[256]; /* MHD's last complaint while starting */
	struct bucket buckets[RATE_SLOTS];
	struct bucket sub_buckets[RATE_SLOTS]; /* POST /subscribe */
	int64_t limit_logged;                  /* ms: when 429s to /subscribe were last logged */
	size_t limit_count;                    /* since then */
	struct conn *oldest, *newest;          /* the arriving connections, oldest first */
	size_t narriving;
	int64_t cut_logged;          /* ms: when cut connections were last logged */
	size_t cut_count;            /* cut since then */
	struct httpreq_net *proxies; /* http.trusted_proxies, parsed */
	size_t nproxies;
	char *proxies_text; /* what proxies was parsed from */
	bool warned_forwarded;
};

enum method { M_GET, M_HEAD, M_POST, M_OTHER };

struct req {
	enum method method;
	struct buf body;
	bool too_big;
	size_t dropped;
};

enum page_kind { PAGE_UNSUBSCRIBE, PAGE_CONFIRM };

/* ---- responses ----------------------------------------------------------- */

static void add_security_headers(struct MHD_Response *r)
{
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_SECURITY_POLICY, CSP);
	MHD_add_response_header(r, MHD_HTTP_HEADER_X_FRAME_OPTIONS, "DENY");
}

static enum MHD_Result queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r)
{
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* A short plain-text answer (errors outside the token pages). allow: the
 * Allow header of a 405, or NULL. */
static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text,
                                  const char *allow)
{
	char *body = xasprintf("%u %s\n", status, text);
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (allow)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
	if (status == MHD_HTTP_TOO_MANY_REQUESTS)
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, RATE_RETRY);
	else if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, BUSY_RETRY);
	add_security_headers(r);
	return queue(c, status, r);
}

/* IMF-fixdate (RFC 9110 §5.6.7), independent of the locale. */
static void http_date(time_t t, char out[40])
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;
	gmtime_r(&t, &tm);
	snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
	         months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* -1 when s is not an IMF-fixdate; the obsolete forms RFC 9110 also lets
 * recipients accept are ignored, which only costs a full answer. */
static time_t parse_http_date(const char *s)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	char mon[4];
	int day, year, hh, mm, ss, n = 0;
	if (strlen(s) != 29 || s[3] != ',' || s[4] != ' ' || strcmp(s + 25, " GMT") != 0)
		return -1;
	const char *p = s + 5;
	char *end;
	day = (int)strtol(p, &end, 10);
	if (end != p + 2 || *end != ' ')
		return -1;
	memcpy(mon, p + 3, 3);
	mon[3] = '\0';
	const char *m = strstr(months, mon);
	if (m == NULL || (m - months) % 3 != 0 || p[6] != ' ')
		return -1;
	year = (int)strtol(p + 7, &end, 10);
	if (end != p + 11 || *end != ' ')
		return -1;
	int *fields[] = {&hh, &mm, &ss};
	for (const char *q = p + 12; n < 3; n++, q += 3) {
		*fields[n] = (int)strtol(q, &end, 10);
		if (end != q + 2 || (n < 2 && *end != ':'))
			return -1;
	}
	struct tm tm = {.tm_year = year - 1900,
	                .tm_mon = (int)((m - months) / 3),
	                .tm_mday = day,
	                .tm_hour = hh,
	                .tm_min = mm,
	                .tm_sec = ss};
	return timegm(&tm);
}

/* ---- rate limit ---------------------------------------------------------- */

static void peer_addr(struct MHD_Connection *c, unsigned char key[16])
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;
	memset(key, 0, 16);
	if (sa && sa->sa_family == AF_INET) {
		memcpy(key, mapped, 12);
		memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa && sa->sa_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	}
}

struct xff {
	const char *v[16];
	size_t len[16], n;
	bool real_ip;
};

static enum MHD_Result collect_xff(void *cls, enum MHD_ValueKind kind, const char *key,
                                   size_t key_size, const char *value, size_t value_size)
{
	struct xff *x = cls;
	(void)kind, (void)key_size;
	if (strcasecmp(key, "X-Forwarded-For") == 0) {
		if (x->n == sizeof x->v / sizeof *x->v) {
			x->n = 0; /* more lines than any chain of proxies: believe none */
			return MHD_NO;
		}
		x->v[x->n] = value;
		x->len[x->n++] = value_size;
	} else if (strcasecmp(key, "X-Real-IP") == 0) {
		x->real_ip = true;
	}
	return MHD_YES;
}

/* The parsed http.trusted_proxies, parsed again after a reload changed it
 * (conf_load checked it). */
static void proxies_update(struct http *h)
{
	const char *text = h->d->conf.http.trusted_proxies;
	if (h->proxies_text && strcmp(h->proxies_text, text) == 0)
		return;
	free(h->proxies);
	free(h->proxies_text);
	h->proxies = NULL;
	h->nproxies = 0;
	struct err e;
	if (httpreq_nets_parse(text, &h->proxies, &h->nproxies, &e) < 0)
		log_err("http: %s", e.msg);
	h->proxies_text = xstrdup(text);
}

/* The client behind the request: the peer, or from a trusted proxy the
 * rightmost X-Forwarded-For hop that is not one (lib/httpreq.h). A
 * forwarding header from anyone else is ignored, and said so once, since
 * an nginx left out of http.trusted_proxies makes every reader one client. */
static void client_key(struct http *h, struct MHD_Connection *c, unsigned char key[16], char *text,
                       size_t n)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	unsigned char peer[16];
	struct xff x = {.n = 0};
	peer_addr(c, peer);
	proxies_update(h);
	MHD_get_connection_values_n(c, MHD_HEADER_KIND, collect_xff, &x);
	httpreq_client(peer, x.v, x.len, x.n, h->proxies, h->nproxies, key);
	if ((x.n > 0 || x.real_ip) && !httpreq_nets_match(h->proxies, h->nproxies, peer) &&
	    !h->warned_forwarded) {
		char p[INET6_ADDRSTRLEN];
		bool is4 = memcmp(peer, mapped, 12) == 0;
		if (inet_ntop(is4 ? AF_INET : AF_INET6, is4 ? peer + 12 : peer, p, sizeof p) ==
		    NULL)
			snprintf(p, sizeof p, "?");
		log_notice("http: X-Forwarded-For or X-Real-IP from %s ignored: it is not in "
		           "http.trusted_proxies (set it to the address of your reverse proxy, "
		           "docs/nginx.md)",
		           p);
		h->warned_forwarded = true;
	}
	bool is4 = memcmp(key, mapped, 12) == 0;
	if (text &&
	    inet_ntop(is4 ? AF_INET : AF_INET6, is4 ? key + 12 : key, text, (socklen_t)n) == NULL)
		snprintf(text, n, "?");
	if (!is4)
		memset(key + 8, 0, 8); /* IPv6: the /64 */
}

static bool rate_take_from(struct bucket *buckets, const unsigned char key[16], double burst,
                           double per_s)
{
	uint32_t hash = 2166136261u; /* FNV-1a */
	for (int i = 0; i < 16; i++)
		hash = (hash ^ key[i]) * 16777619u;
	int64_t now = now_ms();
	struct bucket *victim = NULL, *b = NULL;
	for (int i = 0; i < RATE_PROBE && b == NULL; i++) {
		struct bucket *x = &buckets[(hash + (uint32_t)i) % RATE_SLOTS];
		if (x->used && memcmp(x->key, key, 16) == 0)
			b = x;
		else if (victim == NULL || !x->used || (victim->used && x->at < victim->at))
			victim = x;
	}
	if (b == NULL) {
		/* a full neighbourhood forgets its stalest client, who starts afresh */
		b = victim;
		memcpy(b->key, key, 16);
		b->used = true;
		b->tokens = burst;
		b->at = now;
	}
	b->tokens += (double)(now - b->at) / 1000.0 * per_s;
	if (b->tokens > burst)
		b->tokens = burst;
	b->at = now;
	if (b->tokens < 1.0)
		return false;
	b->tokens -= 1.0;
	return true;
}

static bool rate_take(struct http *h, const unsigned char key[16])
{
	return rate_take_from(h->buckets, key, RATE_BURST, RATE_PER_S);
}

/* ---- token pages --------------------------------------------------------- */

struct member {
	char *title; /* the list's title (site.title when it has none) */
	bool exists; /* a membership of this subscriber on this list */
	enum subs_status st;
};

static int member_get(struct daemon *d, int64_t sid, int64_t lid, struct member *m, struct err *err)
{
	char *name = NULL;
	memset(m, 0, sizeof *m);
	if (subs_list_names(d->store, lid, &name, &m->title, err) < 0 && err->kind != ERR_NOTFOUND)
		return -1;
	free(name);
	int r = m->title ? subs_membership_status(d->store, sid, lid, &m->st, err) : 0;
	if (r < 0)
		return -1;
	m->exists = r == 1;
	if (m->title == NULL || m->title[0] == '\0') {
		free(m->title);
		m->title = xstrdup(d->conf.site.title);
	}
	return 0;
}

/* Renders page template name with ctx (put here). */
static enum MHD_Result reply_ctx(struct daemon *d, struct MHD_Connection *c, unsigned status,
                                 const char *name, struct json_object *ctx)
{
	struct buf out;
	struct err e;
	buf_init(&out, BUF_NOLIMIT);
	int r = render_page(&d->conf, d->tmpl, name, ctx, &out, &e);
	json_object_put(ctx);
	if (r < 0) {
		log_err("http: %s", e.msg);
		buf_free(&out);
		return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "Internal Server Error", NULL);
	}
	size_t len = out.len;
	char *body = buf_detach(&out);
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	add_security_headers(resp);
	return queue(c, status, resp);
}

/* Renders page template name with {list: {title}, STATE: true}. */
static enum MHD_Result reply_page(struct daemon *d, struct MHD_Connection *c, unsigned status,
                                  const char *name, const char *title, const char *state)
{
	struct json_object *ctx = json_object_new_object(), *list = json_object_new_object();
	json_object_object_add(list, "title", json_object_new_string(title));
	json_object_object_add(ctx, "list", list);
	json_object_object_add(ctx, state, json_object_new_boolean(1));
	return reply_ctx(d, c, status, name, ctx);
}

/* What a token page shows for a membership in state st, before a POST. */
static const char *ask_state(enum page_kind kind, const struct member *m)
{
	if (!m->exists)
		return "unknown";
	if (kind == PAGE_UNSUBSCRIBE)
		return m->st == SUBS_UNSUBSCRIBED ? "already" : "ask";
	switch (m->st) {
	case SUBS_PENDING:
		return "ask";
	case SUBS_CONFIRMED:
		return "already";
	default:
		return "closed"; /* an old confirm link must not lift an unsubscribe */
	}
}

static bool is_one_click(const struct buf *b)
{
	/* RFC 8058 §3.1: the body is exactly this key=value, urlencoded or as
	 * multipart/form-data; a substring test accepts both. */
	return b->len > 0 && memmem(b->data, b->len, "List-Unsubscribe=One-Click", 26) != NULL;
}

static void add_bool(struct json_object *o, const char *k, bool v)
{
	if (v)
		json_object_object_add(o, k, json_object_new_boolean(1));
}

/*
 * What the unsubscribe page offers besides (page-unsubscribe): the digest
 * instead (a form posting mode=digest), once unsubscribed a way back (a
 * form posting resubscribe=1: confirmed again at once, the link came to
 * the reader's mailbox; never on a private list), and the reader's
 * preference page. The one-click POST of a mail provider, and any other
 * POST, unsubscribes as it always did.
 */
enum unsub_act { ACT_UNSUBSCRIBE, ACT_MODE, ACT_COME_BACK };

static enum unsub_act unsub_action(const struct buf *body, int *mode)
{
	struct httpreq_form f;
	struct err e;
	enum unsub_act act = ACT_UNSUBSCRIBE;
	if (is_one_click(body) ||
	    httpreq_form_parse(body->data ? body->data : "", body->len, &f, &e) < 0)
		return ACT_UNSUBSCRIBE;
	const char *m = httpreq_form_get(&f, "mode");
	enum subs_mode sm;
	if (httpreq_form_get(&f, "unsubscribe") == NULL) {
		if (httpreq_form_get(&f, "resubscribe")) {
			act = ACT_COME_BACK;
		} else if (m && subs_mode_parse(m, &sm) == 0) {
			act = ACT_MODE;
			*mode = (int)sm;
		}
	}
	httpreq_form_free(&f);
	return act;
}

/* The membership (sid, lid) in p, or -1 (forgotten, or the list deleted). */
static long unsub_index(const struct prefs *p, int64_t lid)
{
	for (size_t i = 0; i < p->n; i++)
		if (p->lists[i].id == lid && p->lists[i].member)
			return (long)i;
	return -1;
}

/* A POST of the digest or the come-back form: *state and *status for the
 * page; -1 with err when the store failed. */
static int unsub_other(struct daemon *d, int64_t sid, int64_t lid, enum unsub_act act, int mode,
                       const char **state, unsigned *status, struct err *err)
{
	struct prefs p;
	*state = "unknown";
	int r = prefs_load(d->store, sid, &p, err);
	long i = r == 0 ? unsub_index(&p, lid) : -1;
	if (r < 0 && err->kind != ERR_NOTFOUND) {
		prefs_free(&p);
		return -1;
	}
	if (i < 0) {
		prefs_free(&p);
		return 0;
	}
	struct prefs_change ch = {.list = (size_t)i,
	                          .mode = act == ACT_MODE ? mode : -1,
	                          .join = act == ACT_COME_BACK ? 1 : 0};
	size_t changed = 0;
	r = prefs_apply(d->store, &p, &ch, 1, "unsubscribe-page", "http", &changed, err);
	prefs_free(&p);
	if (r < 0 && (err->kind == ERR_INPUT || err->kind == ERR_NOTFOUND)) {
		/* a private list takes no one back from the web; or it is gone */
		log_info("http: unsubscribe page subscriber=%" PRId64 " list=%" PRId64 ": 409, %s",
		         sid, lid, err->msg);
		*status = MHD_HTTP_CONFLICT;
		*state = err->kind == ERR_INPUT ? "already" : "unknown";
		return 0;
	}
	if (r < 0)
		return -1;
	if (changed)
		log_info("http: %s subscriber=%" PRId64 " list=%" PRId64 " via=unsubscribe-page",
		         act == ACT_MODE ? "mode changed" : "resubscribed", sid, lid);
	*state = act == ACT_MODE ? "switched" : "back";
	return 0;
}

/* The unsubscribe page: {list: {title}, STATE: true} and digest_offer,
 * come_back or closed, and preferences_url. */
static enum MHD_Result reply_unsub(struct daemon *d, struct MHD_Connection *c, unsigned status,
                                   int64_t sid, int64_t lid, const char *title, const char *state)
{
	struct json_object *ctx = json_object_new_object(), *list = json_object_new_object();
	json_object_object_add(list, "title", json_object_new_string(title));
	json_object_object_add(ctx, "list", list);
	json_object_object_add(ctx, state, json_object_new_boolean(1));
	struct prefs p = {.n = 0};
	struct err e;
	long i = -1;
	if (strcmp(state, "unknown") != 0 && prefs_load(d->store, sid, &p, &e) == 0)
		i = unsub_index(&p, lid);
	if (i >= 0) {
		const struct prefs_list *l = &p.lists[i];
		bool suppressed = subs_is_suppressed(l->status);
		add_bool(ctx, "digest_offer", !suppressed && l->mode == SUBS_ARTICLE);
		add_bool(ctx, "come_back", suppressed && !l->is_private);
		add_bool(ctx, "closed", suppressed && l->is_private);
		char tok[TOKEN_MAX];
		token_make(&d->key, TOKEN_PREFS, sid, 0, tok);
		char *url = xasprintf("%sp/%s", d->conf.site.base_url, tok);
		json_object_object_add(ctx, "preferences_url", json_object_new_string(url));
		free(url);
	}
	prefs_free(&p);
	return reply_ctx(d, c, status, "page-unsubscribe.html", ctx);
}

static enum MHD_Result token_page(struct http *h, struct MHD_Connection *c, struct req *rq,
                                  enum page_kind kind, const char *tok, size_t len)
{
	struct daemon *d = h->d;
	const char *tmpl = kind == PAGE_UNSUBSCRIBE ? "page-unsubscribe.html" : "page-confirm.html";
	const char *what = kind == PAGE_UNSUBSCRIBE ? "unsubscribe" : "confirm";
	unsigned char key[16];
	char peer[INET6_ADDRSTRLEN];
	client_key(h, c, key, peer, sizeof peer);
	if (!rate_take(h, key)) {
		log_debug("http: rate limited %s link from %s", what, peer);
		return reply_text(c, MHD_HTTP_TOO_MANY_REQUESTS, "Too Many Requests", NULL);
	}
	int64_t sid = 0, lid = 0;
	if (!token_check(&d->key, kind == PAGE_UNSUBSCRIBE ? TOKEN_UNSUBSCRIBE : TOKEN_CONFIRM, tok,
	                 len, &sid, &lid)) {
		log_info("http: invalid %s token (%zu bytes)", what, len);
		log_debug("http: invalid %s token from %s", what, peer);
		return reply_page(d, c, MHD_HTTP_BAD_REQUEST, "page-invalid.html",
		                  d->conf.site.title, what);
	}
	struct member m;
	struct err e;
	err_clear(&e);
	enum MHD_Result ret;
	if (member_get(d, sid, lid, &m, &e) < 0)
		goto fail;
	const char *state;
	unsigned status = MHD_HTTP_OK;
	enum unsub_act act = ACT_UNSUBSCRIBE;
	int mode = -1;
	if (rq->method != M_POST) {
		state = ask_state(kind, &m);
	} else if (kind == PAGE_UNSUBSCRIBE &&
	           (act = unsub_action(&rq->body, &mode)) != ACT_UNSUBSCRIBE) {
		if (unsub_other(d, sid, lid, act, mode, &state, &status, &e) < 0)
			goto fail;
	} else {
		bool changed = false;
		int r;
		const char *via;
		if (kind == PAGE_UNSUBSCRIBE) {
			via = is_one_click(&rq->body) ? "one-click" : "unsubscribe-page";
			r = subs_unsubscribe_id(d->store, sid, lid, via, "http", &changed, &e);
		} else {
			via = "confirm-link";
			bool welcome = false; /* queued with the confirmation, once */
			r = subs_web_confirm(d->store, sid, lid, via, "http", &changed, &welcome,
			                     &e);
		}
		if (r < 0 && e.kind != ERR_NOTFOUND)
			goto fail;
		if (r < 0) {
			state = "unknown"; /* forgotten, or the list was deleted */
		} else if (changed) {
			state = "done";
			log_info("http: %s subscriber=%" PRId64 " list=%" PRId64 " via=%s",
			         kind == PAGE_UNSUBSCRIBE ? "unsubscribed" : "confirmed", sid, lid,
			         via);
		} else {
			/* nothing to do; matrixctl may have changed it since member_get */
			free(m.title);
			if (member_get(d, sid, lid, &m, &e) < 0)
				goto fail;
			state = ask_state(kind, &m);
			if (strcmp(state, "ask") == 0)
				state = "already";
		}
	}
	ret = kind == PAGE_UNSUBSCRIBE ? reply_unsub(d, c, status, sid, lid, m.title, state)
	                               : reply_page(d, c, status, tmpl, m.title, state);
	free(m.title);
	return ret;
fail:
	free(m.title);
	if (e.kind == ERR_TEMP) {
		daemon_store_trouble(d, "one-click and confirmation answers get 503", &e);
		log_info("http: %s subscriber=%" PRId64 " list=%" PRId64
		         ": 503, the store takes no writes now",
		         what, sid, lid);
	} else
		log_err("http: %s subscriber=%" PRId64 " list=%" PRId64 ": %s", what, sid, lid,
		        e.msg);
	return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "Service Unavailable; try again later",
	                  NULL);
}

/* ---- the preference page ------------------------------------------------- */

/*
 * /p/TOKEN, a reader's own settings (lib/prefs.h): GET shows them, a POST
 * of the page's form changes them, every change in the history with
 * via=web. The context: subscriber.email; lists[] with name, title, field
 * (the name of its mode radios: "mode" when the page shows one list,
 * "mode.NAME" otherwise), the status (confirmed, pending, unsubscribed,
 * bounced, or none), the mode (article, digest), can_join with what it
 * means (subscribe, confirm, come_back), can_leave, closed (a private list
 * the reader left), and after a POST just_joined, just_left, just_mode;
 * several; after a POST saved or unchanged; refused with a 4xx; unknown
 * for a reader forgotten since.
 */
static struct json_object *prefs_json(const struct prefs *p, const struct prefs_change *ch,
                                      size_t nch)
{
	struct json_object *ctx = json_object_new_object(), *who = json_object_new_object();
	json_object_object_add(who, "email", json_object_new_string(p->email));
	json_object_object_add(ctx, "subscriber", who);
	add_bool(ctx, "several", p->n > 1);
	struct json_object *arr = json_object_new_array();
	for (size_t i = 0; i < p->n; i++) {
		const struct prefs_list *l = &p->lists[i];
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(l->name));
		json_object_object_add(o, "title",
		                       json_object_new_string(*l->title ? l->title : l->name));
		char *field = p->n > 1 ? xasprintf("mode.%s", l->name) : xstrdup("mode");
		json_object_object_add(o, "field", json_object_new_string(field));
		free(field);
		bool confirmed = l->member && l->status == SUBS_CONFIRMED;
		bool suppressed = l->member && subs_is_suppressed(l->status);
		add_bool(o, "member", l->member);
		add_bool(o, "none", !l->member);
		if (l->member)
			add_bool(o, subs_status_name(l->status), true);
		add_bool(o, l->member ? subs_mode_name(l->mode) : "article", true);
		/* the rules of lib/prefs.h: a private list takes back no one who left */
		bool can_join = !confirmed && (!l->is_private || (l->member && !suppressed));
		add_bool(o, "can_join", can_join);
		add_bool(o, "subscribe", can_join && !l->member);
		add_bool(o, "confirm", can_join && l->member && l->status == SUBS_PENDING);
		add_bool(o, "come_back", can_join && suppressed);
		add_bool(o, "closed", l->is_private && !can_join && !confirmed);
		add_bool(o, "can_leave", l->member && l->status != SUBS_UNSUBSCRIBED);
		for (size_t k = 0; k < nch; k++) {
			if (ch[k].list != i)
				continue;
			add_bool(o, "just_joined",
			         ch[k].status_changed && ch[k].to == SUBS_CONFIRMED);
			add_bool(o, "just_left",
			         ch[k].status_changed && ch[k].to == SUBS_UNSUBSCRIBED);
			add_bool(o, "just_mode", ch[k].mode_changed);
		}
		json_object_array_add(arr, o);
	}
	json_object_object_add(ctx, "lists", arr);
	return ctx;
}

static enum MHD_Result prefs_page(struct http *h, struct MHD_Connection *c, struct req *rq,
                                  const char *tok, size_t len)
{
	struct daemon *d = h->d;
	unsigned char key[16];
	char peer[INET6_ADDRSTRLEN];
	client_key(h, c, key, peer, sizeof peer);
	if (!rate_take(h, key)) {
		log_debug("http: rate limited preference link from %s", peer);
		return reply_text(c, MHD_HTTP_TOO_MANY_REQUESTS, "Too Many Requests", NULL);
	}
	int64_t sid = 0;
	if (!token_check(&d->key, TOKEN_PREFS, tok, len, &sid, NULL)) {
		log_info("http: invalid preference token (%zu bytes)", len);
		log_debug("http: invalid preference token from %s", peer);
		return reply_page(d, c, MHD_HTTP_BAD_REQUEST, "page-invalid.html",
		                  d->conf.site.title, "preferences");
	}
	struct prefs p;
	struct prefs_change *ch = NULL;
	size_t nch = 0, changed = 0;
	struct httpreq_form f = {NULL, 0};
	struct err e;
	err_clear(&e);
	unsigned status = MHD_HTTP_OK;
	const char *notice = NULL;
	if (prefs_load(d->store, sid, &p, &e) < 0) {
		prefs_free(&p);
		if (e.kind != ERR_NOTFOUND)
			goto fail;
		struct json_object *ctx = json_object_new_object();
		add_bool(ctx, "unknown", true);
		return reply_ctx(d, c, MHD_HTTP_NOT_FOUND, "page-preferences.html", ctx);
	}
	if (rq->method == M_POST) {
		const char *body = rq->body.data ? rq->body.data : "";
		if (httpreq_form_parse(body, rq->body.len, &f, &e) < 0 ||
		    prefs_form(&p, &f, &ch, &nch, &e) < 0) {
			status = MHD_HTTP_BAD_REQUEST;
			notice = "refused";
		} else if (prefs_apply(d->store, &p, ch, nch, "web", "http", &changed, &e) < 0) {
			if (e.kind != ERR_INPUT && e.kind != ERR_NOTFOUND)
				goto fail;
			status = MHD_HTTP_CONFLICT; /* the store changed since the page was read */
			notice = "refused";
		} else {
			notice = changed ? "saved" : "unchanged";
		}
		if (status != MHD_HTTP_OK)
			log_info("http: preferences subscriber=%" PRId64 ": %u, %s", sid, status,
			         e.msg);
		else if (changed)
			log_info("http: preferences subscriber=%" PRId64
			         ": %zu list%s changed via=web",
			         sid, changed, changed == 1 ? "" : "s");
	}
	struct json_object *ctx = prefs_json(&p, status == MHD_HTTP_OK ? ch : NULL, nch);
	if (notice)
		add_bool(ctx, notice, true);
	httpreq_form_free(&f);
	free(ch);
	prefs_free(&p);
	return reply_ctx(d, c, status, "page-preferences.html", ctx);
fail:
	httpreq_form_free(&f);
	free(ch);
	prefs_free(&p);
	if (e.kind == ERR_TEMP) {
		daemon_store_trouble(d, "preference changes get 503", &e);
		log_info("http: preferences subscriber=%" PRId64
		         ": 503, the store takes no writes now",
		         sid);
	} else {
		log_err("http: preferences subscriber=%" PRId64 ": %s", sid, e.msg);
	}
	return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "Service Unavailable; try again later",
	                  NULL);
}

/* ---- the subscribe form (daemon/web.c builds its pages) ------------------- */

static enum MHD_Result reply_web(struct MHD_Connection *c, struct web_answer *a, const char *retry)
{
	if (a->body == NULL)
		return reply_text(c, a->status, "Internal Server Error", NULL);
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(a->len, a->body, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (retry)
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, retry);
	add_security_headers(r);
	return queue(c, a->status, r);
}

/* 429s are counted and logged once a minute: one line per refused request
 * would let any client fill the journal. */
static void limited(struct http *h)
{
	int64_t now = now_ms();
	h->limit_count++;
	if (h->limit_logged == 0 || now - h->limit_logged >= 60000) {
		log_info("http: subscribe refused (429) %zu time%s: over the per-client limit (%g "
		         "at once, then one a minute)",
		         h->limit_count, h->limit_count == 1 ? "" : "s", SUBSCRIBE_BURST);
		h->limit_logged = now;
		h->limit_count = 0;
	}
}

static enum MHD_Result subscribe(struct http *h, struct MHD_Connection *c, struct req *rq)
{
	struct daemon *d = h->d;
	struct web_answer a = {0, NULL, 0};
	unsigned char key[16];
	client_key(h, c, key, NULL, 0);
	if (rq->method == M_POST) {
		if (!rate_take_from(h->sub_buckets, key, SUBSCRIBE_BURST, SUBSCRIBE_PER_S)) {
			limited(h);
			web_busy_page(d, MHD_HTTP_TOO_MANY_REQUESTS, &a);
			return reply_web(c, &a, SUBSCRIBE_RETRY);
		}
		const char *ctype =
		    MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
		web_subscribe_post(d, ctype, rq->body.data ? rq->body.data : "", rq->body.len, &a);
	} else {
		if (!rate_take(h, key)) {
			web_busy_page(d, MHD_HTTP_TOO_MANY_REQUESTS, &a);
			return reply_web(c, &a, RATE_RETRY);
		}
		web_subscribe_page(d, &a);
	}
	return reply_web(c, &a, a.status == MHD_HTTP_SERVICE_UNAVAILABLE ? BUSY_RETRY : NULL);
}

/* ---- static files -------------------------------------------------------- */

static const char *content_type(const char *name)
{
	static const struct {
		const char *ext, *type;
	} types[] = {
	    {".html", "text/html; charset=utf-8"},
	    {".htm", "text/html; charset=utf-8"},
	    {".css", "text/css; charset=utf-8"},
	    {".txt", "text/plain; charset=utf-8"},
	    {".xml", "application/xml; charset=utf-8"},
	    {".json", "application/json"},
	    {".png", "image/png"},
	    {".jpg", "image/jpeg"},
	    {".jpeg", "image/jpeg"},
	    {".gif", "image/gif"},
	    {".webp", "image/webp"},
	    {".avif", "image/avif"},
	    {".svg", "image/svg+xml"},
	    {".ico", "image/vnd.microsoft.icon"},
	    {".pdf", "application/pdf"},
	};
	if (strcmp(name, "feed.xml") == 0)
		return "application/rss+xml; charset=utf-8";
	if (strcmp(name, "atom.xml") == 0)
		return "application/atom+xml; charset=utf-8";
	const char *dot = strrchr(name, '.');
	if (dot)
		for (size_t i = 0; i < sizeof types / sizeof *types; i++)
			if (strcasecmp(dot, types[i].ext) == 0)
				return types[i].type;
	return "application/octet-stream";
}

/* RFC 9110 §13.1.2: weak comparison, a list of tags or "*". */
static bool etag_matches(const char *header, const char *etag)
{
	const char *p = header;
	while (*p) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '*')
			return true;
		if (strncmp(p, "W/", 2) == 0)
			p += 2;
		const char *start = p;
		if (*p == '"') {
			p = strchr(p + 1, '"');
			if (p == NULL)
				return false;
			p++;
		} else {
			while (*p && *p != ',')
				p++;
		}
		if ((size_t)(p - start) == strlen(etag) && memcmp(start, etag, strlen(etag)) == 0)
			return true;
	}
	return false;
}

static bool not_modified(struct MHD_Connection *c, const char *etag, time_t mtime)
{
	const char *inm =
	    MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
	if (inm)
		return etag_matches(inm, etag); /* §13.1.3: If-Modified-Since is ignored then */
	const char *ims =
	    MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_MODIFIED_SINCE);
	time_t t = ims ? parse_http_date(ims) : -1;
	return t >= 0 && mtime <= t;
}

static void file_headers(struct MHD_Response *r, const char *etag, const char *lastmod,
                         const char *type)
{
	if (type)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, etag);
	MHD_add_response_header(r, MHD_HTTP_HEADER_LAST_MODIFIED, lastmod);
	/* short: index.html and the feeds change with every issue; the ETag
	 * makes the revalidation cheap */
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "public, max-age=300");
	add_security_headers(r);
}

/*
 * Opens path (decoded, checked by httpreq_path_decode) under public_dir without
 * following any symbolic link, wherever it points (fs_open_under); names
 * starting with '.' (the temp files of an atomic replacement among them)
 * are not served. A directory serves its index.html. Returns the fd (*st
 * filled, *name its last component), -1 with *isdir set when path names a
 * directory without the final '/', -1 otherwise.
 */
static int open_public(const char *root, char *path, struct stat *st, const char **name,
                       bool *isdir)
{
	*isdir = false;
	const char *rel = path + 1, *last = strrchr(path, '/') + 1;
	bool slashed = *last == '\0';
	*name = slashed ? "index.html" : last;
	char *want = slashed ? xasprintf("%sindex.html", rel) : xstrdup(rel);
	int fd = fs_open_under(root, want, FS_DIR_OK | FS_NO_DOT, st, NULL);
	free(want);
	if (fd >= 0 && S_ISDIR(st->st_mode)) {
		close(fd);
		*isdir = true;
		return -1;
	}
	return fd;
}

static enum MHD_Result serve_file(struct http *h, struct MHD_Connection *c, const char *raw,
                                  char *path)
{
	struct daemon *d = h->d;
	struct stat st;
	const char *name = NULL;
	bool isdir;
	int fd = open_public(d->conf.public_dir, path, &st, &name, &isdir);
	if (fd < 0 && isdir) {
		/* "issues/60" → "issues/60/", under the public base URL */
		static const char moved[] = "301 Moved Permanently\n";
		char *loc = xasprintf("%s%s/", d->conf.site.base_url, raw + 1);
		struct MHD_Response *r = MHD_create_response_from_buffer(
		    sizeof moved - 1, (void *)moved, MHD_RESPMEM_PERSISTENT);
		MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, loc);
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
		                        "text/plain; charset=utf-8");
		add_security_headers(r);
		free(loc);
		return queue(c, MHD_HTTP_MOVED_PERMANENTLY, r);
	}
	if (fd < 0)
		return reply_text(c, MHD_HTTP_NOT_FOUND, "Not Found", NULL);
	char etag[80], lastmod[40];
	snprintf(etag, sizeof etag, "\"%" PRIx64 "-%" PRIx64 "-%" PRIx64 "\"", (uint64_t)st.st_ino,
	         (uint64_t)st.st_size,
	         (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec);
	http_date(st.st_mtim.tv_sec, lastmod);
	struct MHD_Response *r;
	if (not_modified(c, etag, st.st_mtim.tv_sec)) {
		close(fd);
		r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
		file_headers(r, etag, lastmod, NULL);
		return queue(c, MHD_HTTP_NOT_MODIFIED, r);
	}
	/* MHD owns fd from here and sends it with sendfile(2) */
	r = MHD_create_response_from_fd64((uint64_t)st.st_size, fd);
	if (r == NULL) {
		close(fd);
		return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "Internal Server Error", NULL);
	}
	file_headers(r, etag, lastmod, content_type(name));
	return queue(c, MHD_HTTP_OK, r);
}

/* ---- connections: the arriving list -------------------------------------- */

static void arriving_remove(struct http *h, struct conn *k)
{
	if (!k->arriving)
		return;
	if (k->prev)
		k->prev->next = k->next;
	else
		h->oldest = k->next;
	if (k->next)
		k->next->prev = k->prev;
	else
		h->newest = k->prev;
	k->prev = k->next = NULL;
	k->arriving = false;
	h->narriving--;
}

static void arriving_add(struct http *h, struct conn *k)
{
	arriving_remove(h, k);
	k->since = now_ms();
	k->prev = h->newest;
	if (h->newest)
		h->newest->next = k;
	else
		h->oldest = k;
	h->newest = k;
	k->arriving = true;
	h->narriving++;
}

/* Ends a connection whose request did not arrive in time: libmicrohttpd
 * owns the socket, so it is only shut down here; MHD sees the end on its
 * next round (the shutdown wakes its epoll) and closes it as a client's. */
static void cut(struct http *h, struct conn *k, const char *why)
{
	arriving_remove(h, k);
	if (shutdown(k->fd, SHUT_RDWR) < 0)
		log_debug("http: shutdown: %s", strerror(errno));
	k->fd = -1;
	h->cut_count++;
	int64_t now = now_ms();
	if (h->cut_logged == 0 || now - h->cut_logged >= 60000) {
		log_notice("http: closed %zu connection%s %s", h->cut_count,
		           h->cut_count == 1 ? "" : "s", why);
		h->cut_logged = now;
		h->cut_count = 0;
	}
}

/* The connections past their deadline, oldest first. */
static void cut_late(struct http *h)
{
	int64_t now = now_ms();
	while (h->oldest && now - h->oldest->since >= HTTP_ARRIVE_MS)
		cut(h, h->oldest, "that had not sent a whole request in 10 s (slow clients)");
}

static struct conn *conn_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci ? ci->socket_context : NULL;
}

/* The request has arrived (or was refused): its connection is no longer
 * waiting for one. */
static void arrived(struct http *h, struct MHD_Connection *c)
{
	struct conn *k = conn_of(c);
	if (k)
		arriving_remove(h, k);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
	struct http *h = cls;
	struct conn *k = *socket_context;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
		    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		k = xcalloc(1, sizeof *k);
		k->fd = ci ? ci->connect_fd : -1;
		*socket_context = k;
		arriving_add(h, k);
		if (h->narriving > HTTP_ARRIVING_MAX && h->oldest != k)
			cut(h, h->oldest, "to make room: too many were waiting for their request");
	} else if (k) {
		arriving_remove(h, k);
		free(k);
		*socket_context = NULL;
	}
}

/* ---- requests ------------------------------------------------------------ */

struct headers {
	struct httpreq_header *v;
	size_t n;
};

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      size_t key_size, const char *value, size_t value_size)
{
	struct headers *hs = cls;
	(void)kind;
	hs->v = xreallocarray(hs->v, hs->n + 1, sizeof *hs->v);
	hs->v[hs->n++] = (struct httpreq_header){key, value, key_size, value_size};
	return MHD_YES;
}

/* A refusal of the request as a whole: the connection is closed after it,
 * since whatever follows on it cannot be trusted to start a request. */
static enum MHD_Result refuse(struct MHD_Connection *c, unsigned status, const char *why)
{
	static const struct {
		unsigned status;
		const char *text;
	} texts[] = {
	    {400, "Bad Request"},
	    {405, "Method Not Allowed"},
	    {413, "Content Too Large"},
	    {414, "URI Too Long"},
	    {431, "Request Header Fields Too Large"},
	    {501, "Not Implemented"},
	    {505, "HTTP Version Not Supported"},
	};
	const char *text = "Bad Request";
	for (size_t i = 0; i < sizeof texts / sizeof *texts; i++)
		if (texts[i].status == status)
			text = texts[i].text;
	log_debug("http: refused with %u: %s", status, why ? why : text);
	char *body = xasprintf("%u %s\n", status, text);
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD, POST");
	add_security_headers(r);
	return queue(c, status, r);
}

static enum MHD_Result route(struct http *h, struct MHD_Connection *c, struct req *rq,
                             const char *raw)
{
	size_t n, len = strlen(raw);
	char *path = xmalloc(len + 1);
	enum MHD_Result ret;
	if (httpreq_path_decode(raw, path, &n) < 0)
		ret = reply_text(c, MHD_HTTP_BAD_REQUEST, "Bad Request", NULL);
	else if (strncmp(path, "/u/", 3) == 0)
		ret = token_page(h, c, rq, PAGE_UNSUBSCRIBE, path + 3, n - 3);
	else if (strncmp(path, "/c/", 3) == 0)
		ret = token_page(h, c, rq, PAGE_CONFIRM, path + 3, n - 3);
	else if (strncmp(path, "/p/", 3) == 0)
		ret = prefs_page(h, c, rq, path + 3, n - 3);
	else if (strcmp(path, "/subscribe") == 0)
		ret = subscribe(h, c, rq);
	else if (rq->method == M_POST)
		ret = reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "Method Not Allowed", "GET, HEAD");
	else
		ret = serve_file(h, c, raw, path);
	free(path);
	return ret;
}

/*
 * MHD calls this once when the headers are in, once per piece of body, and
 * once at the end, where every request is answered: an answer queued
 * earlier makes libmicrohttpd 0.9.75 discard the rest of the request and
 * close the connection, which is right only for a refusal (405, 413, and
 * every request httpreq_judge refuses).
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
	struct http *h = cls;
	struct req *rq = *req_cls;
	if (rq == NULL) {
		rq = xcalloc(1, sizeof *rq);
		buf_init(&rq->body, HTTPREQ_BODY_MAX);
		*req_cls = rq;
		if (strcmp(method, MHD_HTTP_METHOD_GET) == 0)
			rq->method = M_GET;
		else if (strcmp(method, MHD_HTTP_METHOD_HEAD) == 0)
			rq->method = M_HEAD;
		else if (strcmp(method, MHD_HTTP_METHOD_POST) == 0)
			rq->method = M_POST;
		else
			rq->method = M_OTHER;
		/* the token is as good as the address: left out */
		bool secret = strncmp(url, "/u/", 3) == 0 || strncmp(url, "/c/", 3) == 0 ||
		              strncmp(url, "/p/", 3) == 0;
		log_debug("http: %s %.*s", method, secret ? 3 : 200, url);
		struct headers hs = {NULL, 0};
		MHD_get_connection_values_n(c, MHD_HEADER_KIND, collect_header, &hs);
		struct httpreq_head head = {method, url, version, hs.v, hs.n};
		const char *why;
		unsigned status = httpreq_judge(&head, &why);
		free(hs.v);
		if (status != 0) {
			arrived(h, c);
			return refuse(c, status, why);
		}
		return MHD_YES;
	}
	if (*upload_size > 0) {
		/* MHD cannot queue an answer while a body streams in: a chunked
		 * body over the cap (a Content-Length over it got 413 at once)
		 * is read and dropped up to HTTP_DISCARD_MAX, then cut. */
		if (!rq->too_big && buf_add(&rq->body, upload, *upload_size) < 0)
			rq->too_big = true;
		if (rq->too_big && (rq->dropped += *upload_size) > HTTP_DISCARD_MAX) {
			log_debug("http: request body over %d bytes; connection closed",
			          HTTP_DISCARD_MAX);
			return MHD_NO;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	arrived(h, c);
	if (rq->too_big)
		return refuse(c, MHD_HTTP_CONTENT_TOO_LARGE, "chunked body too large");
	return route(h, c, rq, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct http *h = cls;
	struct req *rq = *req_cls;
	if (rq) {
		buf_free(&rq->body);
		free(rq);
		*req_cls = NULL;
	}
	/* kept alive: the next request has the same time to arrive */
	struct conn *k = conn_of(c);
	if (k && k->fd >= 0 && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
		arriving_add(h, k);
}

/* Leaves the path as it came: httpreq_path_decode decodes it with checks MHD's own
 * unescaping (which turns %00 into an early end) does not make. */
static size_t keep_escaped(void *cls, struct MHD_Connection *c, char *s)
{
	(void)cls, (void)c;
	return strlen(s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct http *h = cls;
	char msg[256];
	vsnprintf(msg, sizeof msg, fmt, ap);
	msg[strcspn(msg, "\r\n")] = '\0';
	if (h->starting)
		snprintf(h->startmsg, sizeof h->startmsg, "%s", msg);
	else
		log_debug("http: libmicrohttpd: %s", msg);
}

/* ---- the loop's side ----------------------------------------------------- */

/*
 * MHD must run again within MHD_get_timeout() even when no socket is ready
 * (connection timeouts, data it has buffered). The loop only calls
 * http_run when http_fd() is readable, so that fd is an epoll of our own
 * over MHD's epoll fd and a timerfd armed here for that timeout.
 */
static void arm(struct http *h)
{
	struct itimerspec its = {0};
	int64_t t = http_timeout_ms(h);
	if (t == 0) {
		its.it_value.tv_nsec = 1; /* now: zero would disarm */
	} else if (t > 0) {
		its.it_value.tv_sec = (time_t)(t / 1000);
		its.it_value.tv_nsec = (long)(t % 1000) * 1000000;
	}
	if (timerfd_settime(h->tfd, 0, &its, NULL) < 0)
		log_warn("http: timerfd_settime");
}

int http_start(struct daemon *d, struct http **out, struct err *err)
{
	*out = NULL;
	const char *listen_on = d->conf.http.listen;
	if (listen_on[0] == '\0') {
		log_info("http: disabled (http.listen is empty)");
		return 0;
	}
	/* "HOST:PORT" or "[V6]:PORT" (conf.c checked the shape) */
	const char *colon = strrchr(listen_on, ':');
	char *host = xstrndup(listen_on, (size_t)(colon - listen_on));
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
	struct addrinfo *ai = NULL;
	struct http *h = NULL;
	int rc = getaddrinfo(host, colon + 1, &hints, &ai);
	if (rc != 0) {
		err_set(err, ERR_CONFIG, "http.listen %s: %s; fix it in %s", listen_on,
		        gai_strerror(rc), d->conf.path ? d->conf.path : "the configuration");
		goto fail;
	}
	h = xcalloc(1, sizeof *h);
	h->d = d;
	h->ep = h->tfd = -1;
	h->listen = xstrdup(listen_on);
	h->starting = true;
	unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	h->mhd = MHD_start_daemon(
	    flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
	    MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_CONN_MAX,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTP_CONN_PER_IP,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT_S,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_MEMORY, MHD_OPTION_NOTIFY_COMPLETED,
	    on_completed, h, MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
	    MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL, MHD_OPTION_END);
	h->starting = false;
	if (h->mhd == NULL) {
		err_set(err, ERR_IO, "http.listen %s: %s; free the port or change http.listen",
		        listen_on, h->startmsg[0] ? h->startmsg : "libmicrohttpd refused to start");
		goto fail;
	}
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	struct epoll_event ev = {.events = EPOLLIN};
	h->ep = epoll_create1(EPOLL_CLOEXEC);
	h->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (di == NULL || h->ep < 0 || h->tfd < 0 ||
	    epoll_ctl(h->ep, EPOLL_CTL_ADD, di->epoll_fd, &ev) < 0 ||
	    epoll_ctl(h->ep, EPOLL_CTL_ADD, h->tfd, &ev) < 0) {
		err_sys(err, "http: setting up the event loop");
		goto fail;
	}
	arm(h);
	log_info("http: listening on %s", listen_on);
	freeaddrinfo(ai);
	free(host);
	*out = h;
	return 0;
fail:
	if (ai)
		freeaddrinfo(ai);
	free(host);
	http_free(h);
	return -1;
}

void http_free(struct http *h)
{
	if (h == NULL)
		return;
	if (h->mhd)
		MHD_stop_daemon(h->mhd);
	if (h->ep >= 0)
		close(h->ep);
	if (h->tfd >= 0)
		close(h->tfd);
	free(h->listen);
	free(h->proxies);
	free(h->proxies_text);
	free(h);
}

int http_fd(struct http *h)
{
	return h ? h->ep : -1;
}

void http_run(struct daemon *d)
{
	struct http *h = d->http;
	if (h == NULL)
		return;
	uint64_t x;
	if (read(h->tfd, &x, sizeof x) < 0 && errno != EAGAIN)
		log_warn("http: timerfd");
	if (MHD_run(h->mhd) != MHD_YES)
		log_warnx("http: libmicrohttpd could not run");
	cut_late(h);
	arm(h);
}

int64_t http_timeout_ms(struct http *h)
{
	MHD_UNSIGNED_LONG_LONG t;
	if (h == NULL)
		return -1;
	int64_t ms = -1;
	if (MHD_get_timeout(h->mhd, &t) == MHD_YES)
		ms = t > INT64_MAX ? INT64_MAX : (int64_t)t;
	if (h->oldest) {
		/* the first arriving connection's deadline */
		int64_t in = h->oldest->since + HTTP_ARRIVE_MS - now_ms();
		if (in < 0)
			in = 0;
		if (ms < 0 || in < ms)
			ms = in;
	}
	return ms;
}
