/*
 * Configuration loading on libconfig 1.5 (docs/libraries.md, libconfig): it accepts
 * unknown keys silently and gives no defaults, so we walk every setting
 * against a table of known keys, check type and range ourselves, and copy
 * every string out before config_destroy().
 */
#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "buf.h"
#include "conf.h"
#include "fsutil.h"
#include "httpreq.h"
#include "mailconv.h"
#include "utf8.h"
#include "xmalloc.h"

#ifndef MATRIXD_TEMPLATE_DIR
#define MATRIXD_TEMPLATE_DIR "/usr/share/matrixd/templates"
#endif

/* K_TLS, K_DKIM_KEYS and K_RELAYS are read by their own functions (take). */
enum ktype { K_STR, K_PATH, K_INT, K_INT64, K_FLOAT, K_TLS, K_DKIM_KEYS, K_RELAYS };

/*
 * Every key of the file, with its type, range and default: the one place
 * a key is described. conf_defaults(), conf_free(), the parser and the
 * "valid here" list of an unknown key all walk it, so a new key is a
 * member of struct conf and a row here (and its lines in matrixd.conf(5)
 * and conf/matrixd.conf.example).
 */
struct key {
	const char *group; /* NULL: top level */
	const char *name;
	enum ktype type;
	size_t off;         /* of the member in struct conf */
	long long min, max; /* numbers */
	const char *def;    /* the default, as it would be written in the file */
};

#define OFF(f) offsetof(struct conf, f)
/* group, name, type, member, min, max, default: one row a key, so by position */
static const struct key keys[] = {
    {NULL, "issue_dir", K_PATH, OFF(issue_dir), 0, 0, "/var/lib/matrixd/issues"},
    {NULL, "state_dir", K_PATH, OFF(state_dir), 0, 0, "/var/lib/matrixd"},
    {NULL, "public_dir", K_PATH, OFF(public_dir), 0, 0, "/var/lib/matrixd/public"},
    {NULL, "template_dir", K_PATH, OFF(template_dir), 0, 0, MATRIXD_TEMPLATE_DIR},
    {NULL, "issue_settle_seconds", K_INT, OFF(issue_settle_seconds), 0, 3600, "5"},
    {NULL, "max_issue_bytes", K_INT64, OFF(max_issue_bytes), 1024, 1LL << 30, "16777216"},
    {NULL, "bounce_threshold", K_INT, OFF(bounce_threshold), 1, 1000, "3"},
    {NULL, "schedule_grace", K_INT, OFF(schedule_grace), 0, 366 * 86400, "86400"},
    {"site", "title", K_STR, OFF(site.title), 0, 0, "Matrix"},
    {"site", "base_url", K_STR, OFF(site.base_url), 0, 0, ""}, /* required */
    {"site", "language", K_STR, OFF(site.language), 0, 0, "zh-CN"},
    {"site", "from", K_STR, OFF(site.from), 0, 0, ""}, /* required */
    {"site", "feed_items", K_INT, OFF(site.feed_items), 1, 10000, "50"},
    {"site", "timezone", K_STR, OFF(site.timezone), 0, 0, ""},
    {"smtp", "url", K_STR, OFF(smtp.url), 0, 0, "smtp://127.0.0.1:25"},
    {"smtp", "tls", K_TLS, OFF(smtp.tls), 0, 0, "auto"},
    {"smtp", "ca_file", K_PATH, OFF(smtp.ca_file), 0, 0, ""},
    {"smtp", "username", K_STR, OFF(smtp.username), 0, 0, ""},
    {"smtp", "password_file", K_PATH, OFF(smtp.password_file), 0, 0, ""},
    {"smtp", "connections", K_INT, OFF(smtp.connections), 1, 256, "4"},
    {"smtp", "rate", K_FLOAT, OFF(smtp.rate), 0, 1000000, "0"},
    {"smtp", "max_attempts", K_INT, OFF(smtp.max_attempts), 1, 1000, "10"},
    {"smtp", "retry_max_age", K_INT, OFF(smtp.retry_max_age), 60, 60 * 86400, "259200"},
    /* "": bounces+{token}@ the domain of site.from (semantic) */
    {"smtp", "return_path", K_STR, OFF(smtp.return_path), 0, 0, ""},
    {"smtp", "relays", K_RELAYS, 0, 0, 0, NULL},
    {"http", "listen", K_STR, OFF(http.listen), 0, 0, "127.0.0.1:8025"},
    {"http", "trusted_proxies", K_STR, OFF(http.trusted_proxies), 0, 0, ""},
    /* "": the A-label domain of site.from (semantic) */
    {"dkim", "domain", K_STR, OFF(dkim.domain), 0, 0, ""},
    {"dkim", "keys", K_DKIM_KEYS, 0, 0, 0, NULL},
};
static const char *groups[] = {"site", "smtp", "http", "dkim"};

/* The members of one group of smtp.relays (what a relay leaves out comes
 * from the smtp group: no defaults here) and of dkim.keys. */
#define ROFF(f) offsetof(struct conf_relay, f)
static const struct key relay_keys[] = {
    {"smtp.relays", "url", K_STR, ROFF(url), 0, 0, NULL},
    {"smtp.relays", "tls", K_TLS, ROFF(tls), 0, 0, NULL},
    {"smtp.relays", "ca_file", K_PATH, ROFF(ca_file), 0, 0, NULL},
    {"smtp.relays", "username", K_STR, ROFF(username), 0, 0, NULL},
    {"smtp.relays", "password_file", K_PATH, ROFF(password_file), 0, 0, NULL},
    {"smtp.relays", "connections", K_INT, ROFF(connections), 1, 256, NULL},
};
#define DOFF(f) offsetof(struct conf_dkim_key, f)
static const struct key dkim_key_keys[] = {
    {"dkim.keys", "selector", K_STR, DOFF(selector), 0, 0, NULL},
    {"dkim.keys", "key_file", K_PATH, DOFF(key_file), 0, 0, NULL},
};
#define NKEYS(t) (sizeof(t) / sizeof(t)[0])

/* Frees the strings of base that table t describes. */
static void free_strings(const struct key *t, size_t n, void *base)
{
	for (size_t i = 0; i < n; i++)
		if (t[i].type == K_STR || t[i].type == K_PATH)
			free(*(char **)((char *)base + t[i].off));
}

static const char *const tls_names[] = {
    [TLS_AUTO] = "auto", [TLS_REQUIRED] = "required", [TLS_OFF] = "off"};

static bool parse_tls(const char *v, enum tls_mode *out)
{
	for (size_t i = 0; i < sizeof tls_names / sizeof tls_names[0]; i++)
		if (strcmp(v, tls_names[i]) == 0) {
			*out = (enum tls_mode)i;
			return true;
		}
	return false;
}

/* Stores k's default (k->def, written as the file would write it). */
static void set_default(struct conf *c, const struct key *k)
{
	char *field = (char *)c + k->off;
	switch (k->type) {
	case K_STR:
	case K_PATH:
		*(char **)field = xstrdup(k->def);
		break;
	case K_INT:
		*(int *)field = (int)strtol(k->def, NULL, 10);
		break;
	case K_INT64:
		*(long long *)field = strtoll(k->def, NULL, 10);
		break;
	case K_FLOAT: {
		double f = strtod(k->def, NULL);
		memcpy(field, &f, sizeof f); /* the member is a double */
		break;
	}
	case K_TLS:
		parse_tls(k->def, (enum tls_mode *)field);
		break;
	case K_DKIM_KEYS:
	case K_RELAYS:
		break; /* none */
	}
}

void conf_defaults(struct conf *c)
{
	memset(c, 0, sizeof *c);
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		set_default(c, &keys[i]);
}

void conf_free(struct conf *c)
{
	if (c == NULL)
		return;
	free(c->path);
	free_strings(keys, NKEYS(keys), c);
	for (size_t i = 0; i < c->smtp.nrelays; i++)
		free_strings(relay_keys, NKEYS(relay_keys), &c->smtp.relays[i]);
	free(c->smtp.relays);
	for (size_t i = 0; i < c->dkim.nkeys; i++)
		free_strings(dkim_key_keys, NKEYS(dkim_key_keys), &c->dkim.keys[i]);
	free(c->dkim.keys);
	memset(c, 0, sizeof *c);
}

static const char *type_name(int t)
{
	switch (t) {
	case CONFIG_TYPE_GROUP:
		return "a group { … }";
	case CONFIG_TYPE_INT:
		return "an integer";
	case CONFIG_TYPE_INT64:
		return "a 64-bit integer";
	case CONFIG_TYPE_FLOAT:
		return "a number";
	case CONFIG_TYPE_STRING:
		return "a string";
	case CONFIG_TYPE_BOOL:
		return "a boolean";
	case CONFIG_TYPE_ARRAY:
		return "an array";
	case CONFIG_TYPE_LIST:
		return "a list";
	default:
		return "something else";
	}
}

static const char *want_name(enum ktype t)
{
	switch (t) {
	case K_STR:
	case K_PATH:
		return "a string in double quotes";
	case K_INT:
	case K_INT64:
		return "an integer";
	case K_FLOAT:
		return "a number";
	case K_TLS:
	case K_DKIM_KEYS:
	case K_RELAYS:
		break; /* said by their own messages */
	}
	return "?";
}

/* Removes "." and "dir/.." components of an absolute path, in place. */
static void tidy(char *p)
{
	char *out = p;
	for (const char *s = p; *s;) {
		while (*s == '/')
			s++;
		const char *e = strchr(s, '/');
		size_t n = e ? (size_t)(e - s) : strlen(s);
		if (n == 0)
			break;
		if (n == 1 && s[0] == '.') {
			/* skip */
		} else if (n == 2 && s[0] == '.' && s[1] == '.') {
			while (out > p && *--out != '/')
				;
		} else {
			*out++ = '/';
			memmove(out, s, n);
			out += n;
		}
		s += n;
	}
	if (out == p)
		*out++ = '/';
	*out = '\0';
}

/* An absolute path, or one relative to the directory of the config file. */
static char *resolve(const char *dir, const char *v)
{
	if (v[0] == '\0' || v[0] == '/' || dir == NULL)
		return xstrdup(v);
	char *p = xasprintf("%s/%s", dir, v);
	tidy(p);
	return p;
}

struct ctx {
	struct conf *c;
	const char *file;
	char *dir;
	struct err *err;
};

static int bad(struct ctx *x, const config_setting_t *s, const char *fmt, const char *a,
               const char *b)
{
	char msg[600];
	snprintf(msg, sizeof msg, fmt, a, b);
	return err_at(x->err, ERR_CONFIG, x->file, config_setting_source_line(s), "%s", msg);
}

static const char *valid_keys(const char *group, struct buf *b)
{
	buf_reset(b);
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		if ((group == NULL) != (keys[i].group == NULL))
			continue;
		if (group && strcmp(group, keys[i].group) != 0)
			continue;
		buf_printf(b, "%s%s", b->len ? ", " : "", keys[i].name);
	}
	if (group == NULL)
		for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
			buf_printf(b, ", %s", groups[i]);
	return buf_str(b);
}

bool conf_valid_labels(const char *s)
{
	size_t label = 0;
	if (*s == '\0' || strlen(s) > 253)
		return false;
	for (const char *p = s;; p++) {
		if (*p == '.' || *p == '\0') {
			if (label == 0 || label > 63 || p[-1] == '-')
				return false;
			if (*p == '\0')
				return true;
			label = 0;
			continue;
		}
		bool ldh = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		           (*p >= '0' && *p <= '9') || (*p == '-' && label > 0);
		if (!ldh)
			return false;
		label++;
	}
}

static int take(struct ctx *x, const struct key *k, const config_setting_t *s, void *base);

/* The members of one group g of a list (a relay, a DKIM key) into base,
 * each by its row of t. */
static int take_members(struct ctx *x, const config_setting_t *g, const struct key *t, size_t n,
                        void *base)
{
	for (int j = 0; j < config_setting_length(g); j++) {
		const config_setting_t *m = config_setting_get_elem(g, (unsigned)j);
		const char *name = config_setting_name(m);
		const struct key *k = NULL;
		for (size_t i = 0; i < n && k == NULL; i++)
			if (strcmp(t[i].name, name) == 0)
				k = &t[i];
		if (k == NULL) {
			char full[200];
			struct buf valid;
			buf_init(&valid, BUF_NOLIMIT);
			for (size_t i = 0; i < n; i++)
				buf_printf(&valid, "%s%s", i ? ", " : "", t[i].name);
			snprintf(full, sizeof full, "%s.%s", t[0].group, name);
			int r =
			    bad(x, m, "unknown key '%s' (valid here: %s)", full, buf_str(&valid));
			buf_free(&valid);
			return r;
		}
		if (take(x, k, m, base) < 0)
			return -1;
	}
	return 0;
}

/*
 * A list of groups (smtp.relays, dkim.keys): -1 with a message that shows
 * the shape (example) unless s is a list (not empty if nonempty) whose
 * elements are all groups; one() takes each group.
 */
struct group_list {
	const char *name, *example, *each; /* "smtp.relays", its shape, "each relay is …" */
	bool nonempty;
	int (*one)(struct ctx *x, const config_setting_t *g);
};

static int take_groups(struct ctx *x, const config_setting_t *s, const struct group_list *l)
{
	if (config_setting_type(s) != CONFIG_TYPE_LIST ||
	    (l->nonempty && config_setting_length(s) == 0))
		return bad(x, s, "%s must be a list of groups: %s", l->name, l->example);
	int n = config_setting_length(s);
	for (int i = 0; i < n; i++) {
		const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
		if (config_setting_type(g) != CONFIG_TYPE_GROUP)
			return bad(x, g, "%s: %s", l->name, l->each);
		if (l->one(x, g) < 0)
			return -1;
	}
	return 0;
}

/* dkim.keys = ( { selector = "…"; key_file = "…"; }, … ); */
static int take_dkim_key(struct ctx *x, const config_setting_t *g)
{
	struct conf *c = x->c;
	c->dkim.keys = xreallocarray(c->dkim.keys, c->dkim.nkeys + 1, sizeof *c->dkim.keys);
	struct conf_dkim_key *dk = &c->dkim.keys[c->dkim.nkeys++]; /* conf_free frees it */
	*dk = (struct conf_dkim_key){.line = config_setting_source_line(g)};
	if (take_members(x, g, dkim_key_keys, NKEYS(dkim_key_keys), dk) < 0)
		return -1;
	const char *sel = dk->selector;
	if (sel == NULL || dk->key_file == NULL || *dk->key_file == '\0')
		return bad(x, g, "dkim.keys: this key needs both selector and key_file%s%s", "",
		           "");
	if (!conf_valid_labels(sel))
		return bad(x, g,
		           "dkim.keys: selector \"%s\" must be letters, digits and '-' "
		           "(labels separated by dots), e.g. \"rsa2026\"%s",
		           sel, "");
	for (size_t k = 0; k + 1 < c->dkim.nkeys; k++)
		if (strcmp(c->dkim.keys[k].selector, sel) == 0)
			return bad(x, g, "dkim.keys: selector \"%s\" is given twice%s", sel, "");
	return 0;
}

static const struct group_list dkim_keys_list = {
    .name = "dkim.keys",
    .example = "keys = ( { selector = \"s1\"; key_file = \"/etc/matrixd/dkim/s1.pem\"; } );",
    .each = "each key is a group { selector = …; key_file = …; }",
    .one = take_dkim_key,
};

/*
 * smtp.relays = ( { url = "smtp://mx1.example.org:587"; connections = 8; }, … );
 * Each group takes the members of relay_keys; what it leaves out comes
 * from the smtp group. Checked in semantic(), where the smtp group's
 * values are known.
 */
static int take_relay(struct ctx *x, const config_setting_t *g)
{
	struct conf *c = x->c;
	c->smtp.relays = xreallocarray(c->smtp.relays, c->smtp.nrelays + 1, sizeof *c->smtp.relays);
	struct conf_relay *r = &c->smtp.relays[c->smtp.nrelays++]; /* conf_free frees it */
	/* tls -1 and connections 0: the smtp group's */
	*r = (struct conf_relay){.tls = -1, .line = config_setting_source_line(g)};
	if (take_members(x, g, relay_keys, NKEYS(relay_keys), r) < 0)
		return -1;
	if (r->url == NULL || r->url[0] == '\0')
		return bad(x, g, "smtp.relays: this relay has no url%s%s", "", "");
	return 0;
}

static const struct group_list relays_list = {
    .name = "smtp.relays",
    .example = "relays = ( { url = \"smtp://mx1.example.org:587\"; }, { url = \"…\"; } );",
    .each = "each relay is a group { url = …; … }",
    .nonempty = true,
    .one = take_relay,
};

static int take(struct ctx *x, const struct key *k, const config_setting_t *s, void *base)
{
	int t = config_setting_type(s);
	char full[128];
	snprintf(full, sizeof full, "%s%s%s", k->group ? k->group : "", k->group ? "." : "",
	         k->name);

	char *field = (char *)base + k->off;
	long long v = 0;
	switch (k->type) {
	case K_STR:
	case K_PATH:
		if (t != CONFIG_TYPE_STRING)
			goto wrong_type;
		const char *sv = config_setting_get_string(s);
		if (!utf8_valid(sv, strlen(sv), NULL))
			return bad(x, s, "%s is not valid UTF-8%s", full, "");
		free(*(char **)field);
		*(char **)field = k->type == K_PATH ? resolve(x->dir, sv) : xstrdup(sv);
		return 0;
	case K_INT:
	case K_INT64:
		if (t == CONFIG_TYPE_INT)
			v = config_setting_get_int(s);
		else if (t == CONFIG_TYPE_INT64)
			v = config_setting_get_int64(s);
		else
			goto wrong_type;
		break;
	case K_FLOAT: {
		double f;
		if (t == CONFIG_TYPE_FLOAT)
			f = config_setting_get_float(s);
		else if (t == CONFIG_TYPE_INT)
			f = config_setting_get_int(s);
		else if (t == CONFIG_TYPE_INT64)
			f = (double)config_setting_get_int64(s);
		else
			goto wrong_type;
		if (f < (double)k->min || f > (double)k->max) {
			char range[64];
			snprintf(range, sizeof range, "%lld and %lld", k->min, k->max);
			return bad(x, s, "%s must be between %s", full, range);
		}
		memcpy(field, &f, sizeof f); /* the member is a double (keys[]) */
		return 0;
	}
	case K_TLS: {
		const char *tv = t == CONFIG_TYPE_STRING ? config_setting_get_string(s) : NULL;
		if (tv == NULL || !parse_tls(tv, (enum tls_mode *)field))
			return bad(x, s, "%s must be \"auto\", \"required\" or \"off\"%s", full,
			           "");
		return 0;
	}
	case K_DKIM_KEYS:
		return take_groups(x, s, &dkim_keys_list);
	case K_RELAYS:
		return take_groups(x, s, &relays_list);
	}
	if (v < k->min || v > k->max) {
		char range[64];
		snprintf(range, sizeof range, "%lld and %lld", k->min, k->max);
		return bad(x, s, "%s must be between %s", full, range);
	}
	if (k->type == K_INT)
		*(int *)field = (int)v;
	else
		*(long long *)field = v;
	return 0;
wrong_type:;
	char want[160];
	snprintf(want, sizeof want, "%s, not %s", want_name(k->type), type_name(t));
	return bad(x, s, "%s must be %s", full, want);
}

static int walk(struct ctx *x, const config_setting_t *grp, const char *gname)
{
	struct buf names;
	buf_init(&names, BUF_NOLIMIT);
	int n = config_setting_length(grp), r = 0;
	for (int i = 0; i < n && r == 0; i++) {
		const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
		const char *name = config_setting_name(s);
		const struct key *k = NULL;
		for (size_t j = 0; j < sizeof keys / sizeof keys[0]; j++) {
			if ((gname == NULL) != (keys[j].group == NULL))
				continue;
			if (gname && strcmp(gname, keys[j].group) != 0)
				continue;
			if (strcmp(keys[j].name, name) == 0)
				k = &keys[j];
		}
		if (k) {
			r = take(x, k, s, x->c);
			continue;
		}
		bool is_group = false;
		for (size_t j = 0; gname == NULL && j < sizeof groups / sizeof groups[0]; j++)
			is_group |= strcmp(groups[j], name) == 0;
		if (is_group) {
			if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
				r = bad(x, s, "%s must be a group: %s = { … };", name, name);
				continue;
			}
			r = walk(x, s, name);
			continue;
		}
		char full[200];
		snprintf(full, sizeof full, "%s%s%s", gname ? gname : "", gname ? "." : "", name);
		r = bad(x, s, "unknown key '%s' (valid here: %s)", full, valid_keys(gname, &names));
	}
	buf_free(&names);
	return r;
}

static bool valid_hostport(const char *s)
{
	const char *colon = strrchr(s, ':');
	if (colon == NULL || colon == s)
		return false;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	return *end == '\0' && colon[1] != '\0' && port > 0 && port < 65536;
}

/*
 * A time zone name as tzset(3) reads it from TZ: a file of the zoneinfo
 * database ("Asia/Shanghai", "UTC"), checked to exist and to be a TZif
 * file (RFC 8536), because glibc quietly takes an unknown name for UTC.
 */
static bool valid_timezone(const char *name)
{
	if (name[0] == '/' || strstr(name, "..") || strlen(name) > 200)
		return false;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || strchr("/_+-", *p)))
			return false;
	const char *dir = getenv("TZDIR");
	char *path = xasprintf("%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", name);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	free(path);
	if (fd < 0)
		return false;
	struct stat st;
	char magic[4];
	bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	          read(fd, magic, sizeof magic) == (ssize_t)sizeof magic &&
	          memcmp(magic, "TZif", 4) == 0;
	close(fd);
	return ok;
}

void conf_apply_timezone(const struct conf *c)
{
	if (c->site.timezone == NULL || c->site.timezone[0] == '\0')
		return;
	setenv("TZ", c->site.timezone, 1);
	tzset();
}

/* A relay's url: a scheme we speak, a Maildir made absolute, no
 * credentials in it (they would show in logs and status). */
static int check_relay(struct ctx *x, struct conf_relay *r, const char *key, int line)
{
	if (strncmp(r->url, "smtp://", 7) != 0 && strncmp(r->url, "smtps://", 8) != 0 &&
	    strncmp(r->url, "maildir:", 8) != 0)
		return err_at(x->err, ERR_CONFIG, x->file, line,
		              "%s must start with smtp://, smtps:// or maildir:", key);
	if (strncmp(r->url, "maildir:", 8) == 0) {
		if (r->url[8] == '\0')
			return err_at(
			    x->err, ERR_CONFIG, x->file, line,
			    "%s maildir: needs a directory, e.g. \"maildir:/var/mail/out\"", key);
		if (r->url[8] != '/') {
			char *abs = resolve(x->dir, r->url + 8);
			free(r->url);
			r->url = xasprintf("maildir:%s", abs);
			free(abs);
		}
		return 0;
	}
	const char *host = strstr(r->url, "://") + 3;
	size_t hn = strcspn(host, "/");
	if (memchr(host, '@', hn))
		return err_at(x->err, ERR_CONFIG, x->file, line,
		              "%s must not hold a user or password: set username and "
		              "password_file instead",
		              key);
	if (strncmp(r->url, "smtps://", 8) == 0 && r->tls == TLS_OFF)
		return err_at(x->err, ERR_CONFIG, x->file, line,
		              "tls = \"off\" contradicts the smtps:// url of %s", key);
	if (r->password_file[0] && r->username[0] == '\0')
		return err_at(x->err, ERR_CONFIG, x->file, line,
		              "%s: password_file is set but username is empty", key);
	return 0;
}

/*
 * smtp.relays, or one relay made of smtp.url and its keys. A relay group
 * takes what it leaves out from the smtp group (tls, ca_file, username,
 * password_file, connections); smtp.url and smtp.relays exclude each
 * other. smtp.url then names the relays, for logs.
 */
static int relays(struct ctx *x, const config_t *cf)
{
	struct conf *c = x->c;
	const config_setting_t *s;
	if (c->smtp.nrelays == 0) {
		struct conf_relay r = {xstrdup(c->smtp.url),
		                       c->smtp.tls,
		                       xstrdup(c->smtp.ca_file),
		                       xstrdup(c->smtp.username),
		                       xstrdup(c->smtp.password_file),
		                       c->smtp.connections,
		                       0};
		c->smtp.relays = xmalloc(sizeof *c->smtp.relays);
		c->smtp.relays[0] = r;
		c->smtp.nrelays = 1; /* conf_free frees it */
		/* the same rules as a relay group's url: no user:password@ */
		s = config_lookup(cf, "smtp.url");
		return check_relay(x, &c->smtp.relays[0], "smtp.url",
		                   s ? config_setting_source_line(s) : 0);
	}
	if ((s = config_lookup(cf, "smtp.url")) != NULL)
		return err_at(x->err, ERR_CONFIG, x->file, config_setting_source_line(s),
		              "smtp.url and smtp.relays exclude each other: give every relay's "
		              "url in smtp.relays, or use smtp.url alone");
	struct buf names;
	buf_init(&names, BUF_NOLIMIT);
	for (size_t i = 0; i < c->smtp.nrelays; i++) {
		struct conf_relay *r = &c->smtp.relays[i];
		if ((int)r->tls < 0)
			r->tls = c->smtp.tls;
		if (r->ca_file == NULL)
			r->ca_file = xstrdup(c->smtp.ca_file);
		if (r->username == NULL)
			r->username = xstrdup(c->smtp.username);
		if (r->password_file == NULL)
			r->password_file = xstrdup(c->smtp.password_file);
		if (r->connections == 0)
			r->connections = c->smtp.connections;
		char key[48];
		snprintf(key, sizeof key, "smtp.relays[%zu].url", i);
		if (check_relay(x, r, key, r->line) < 0) {
			buf_free(&names);
			return -1;
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(c->smtp.relays[j].url, r->url) == 0) {
				buf_free(&names);
				return err_at(x->err, ERR_CONFIG, x->file, r->line,
				              "smtp.relays: %s is given twice; give it more "
				              "connections instead",
				              r->url);
			}
		buf_printf(&names, "%s%s", i ? ", " : "", conf_relay_name(r));
	}
	free(c->smtp.url);
	c->smtp.url = buf_detach(&names);
	return 0;
}

const char *conf_relay_name(const struct conf_relay *r)
{
	return r->url;
}

static int semantic(struct ctx *x, const config_t *cf)
{
	struct conf *c = x->c;
	const config_setting_t *s;
#define LINE(path) ((s = config_lookup(cf, path)) ? config_setting_source_line(s) : 0)

	if (c->site.base_url[0] == '\0')
		return err_at(x->err, ERR_CONFIG, x->file, LINE("site"),
		              "site.base_url is required, e.g. base_url = "
		              "\"https://news.example.org/matrix/\";");
	if (strncmp(c->site.base_url, "https://", 8) != 0 &&
	    strncmp(c->site.base_url, "http://", 7) != 0)
		return err_at(x->err, ERR_CONFIG, x->file, LINE("site.base_url"),
		              "site.base_url must start with https:// or http://");
	for (const char *p = c->site.base_url; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == '"' || *p == '<' || *p == '>' || *p == '\\')
			return err_at(x->err, ERR_CONFIG, x->file, LINE("site.base_url"),
			              "site.base_url must not contain spaces, quotes or <>");
	size_t bl = strlen(c->site.base_url);
	if (c->site.base_url[bl - 1] != '/') {
		char *u = xasprintf("%s/", c->site.base_url);
		free(c->site.base_url);
		c->site.base_url = u;
	}
	if (c->site.from[0] == '\0')
		return err_at(
		    x->err, ERR_CONFIG, x->file, LINE("site"),
		    "site.from is required, e.g. from = \"Matrix <matrix@example.org>\";");
	if (strchr(c->site.from, '@') == NULL || strpbrk(c->site.from, "\r\n"))
		return err_at(x->err, ERR_CONFIG, x->file, LINE("site.from"),
		              "site.from must be an address like \"Matrix <matrix@example.org>\"");
	{
		/* what every message's From is built from (msg.c): a from that
		 * does not parse, or whose local part no header can carry
		 * without SMTPUTF8, would stop every message, not the check */
		char *name = NULL, *addr = NULL, *key = NULL;
		struct err ae;
		err_clear(&ae);
		if (addr_parse_named(c->site.from, &name, &addr, &ae) == 0)
			key = addr_key(addr, &ae);
		bool ascii = key && addr_is_ascii(key, strlen(key));
		free(name);
		free(addr);
		free(key);
		if (!ascii)
			return err_at(x->err, ERR_CONFIG, x->file, LINE("site.from"),
			              "site.from must be an address like \"Matrix "
			              "<matrix@example.org>\" with an ASCII local part%s%s",
			              ae.msg[0] ? ": " : "", ae.msg);
	}
	for (const char *p = c->site.language; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-'))
			return err_at(x->err, ERR_CONFIG, x->file, LINE("site.language"),
			              "site.language must be a language tag such as zh-CN");
	if (c->site.timezone[0] && !valid_timezone(c->site.timezone))
		return err_at(x->err, ERR_CONFIG, x->file, LINE("site.timezone"),
		              "site.timezone \"%s\" is not a time zone of the zoneinfo database; "
		              "use a name such as \"Asia/Shanghai\" or \"UTC\" (see "
		              "timedatectl list-timezones), or \"\" for the system's",
		              c->site.timezone);
	if (strncmp(c->smtp.url, "smtp://", 7) != 0 && strncmp(c->smtp.url, "smtps://", 8) != 0 &&
	    strncmp(c->smtp.url, "maildir:", 8) != 0)
		return err_at(x->err, ERR_CONFIG, x->file, LINE("smtp.url"),
		              "smtp.url must start with smtp://, smtps:// or maildir:");
	if (strncmp(c->smtp.url, "maildir:", 8) == 0) {
		const char *p = c->smtp.url + 8;
		if (*p == '\0')
			return err_at(
			    x->err, ERR_CONFIG, x->file, LINE("smtp.url"),
			    "smtp.url maildir: needs a directory, e.g. \"maildir:/var/mail/out\"");
		char *abs = resolve(x->dir, p);
		free(c->smtp.url);
		c->smtp.url = xasprintf("maildir:%s", abs);
		free(abs);
	}
	if (strncmp(c->smtp.url, "smtps://", 8) == 0 && c->smtp.tls == TLS_OFF)
		return err_at(x->err, ERR_CONFIG, x->file, LINE("smtp.tls"),
		              "smtp.tls = \"off\" contradicts an smtps:// url");
	if (c->smtp.password_file[0] && c->smtp.username[0] == '\0')
		return err_at(x->err, ERR_CONFIG, x->file, LINE("smtp.password_file"),
		              "smtp.password_file is set but smtp.username is empty");
	if (relays(x, cf) < 0)
		return -1;
	if (c->smtp.return_path[0] == '\0') {
		/* The bounces go where the mail comes from, not to example.org. */
		const char *at = strrchr(c->site.from, '@');
		size_t n = strcspn(at + 1, "> \t");
		free(c->smtp.return_path);
		c->smtp.return_path = xasprintf(MAILCONV_VERP_LOCAL "@%.*s", (int)n, at + 1);
	}
	if (strchr(c->smtp.return_path, '@') == NULL || strpbrk(c->smtp.return_path, " <>\r\n"))
		return err_at(x->err, ERR_CONFIG, x->file, LINE("smtp.return_path"),
		              "smtp.return_path must be an address such as "
		              "\"bounces+{token}@example.org\"");
	if (!addr_is_ascii(c->smtp.return_path, strlen(c->smtp.return_path))) {
		/* It goes into headers (List-Unsubscribe's mailto), which take
		 * no 8-bit byte: an IDN as A-labels, as in From (the default
		 * above copies site.from's domain as written). */
		struct err ae;
		char *key = addr_key(c->smtp.return_path, &ae);
		if (key == NULL || !addr_is_ascii(key, strlen(key))) {
			free(key);
			return err_at(x->err, ERR_CONFIG, x->file, LINE("smtp.return_path"),
			              "smtp.return_path must be an address with an ASCII local "
			              "part, e.g. \"bounces+{token}@example.org\" (it is '%s')",
			              c->smtp.return_path);
		}
		free(c->smtp.return_path);
		c->smtp.return_path = key;
	}
	if ((s = config_lookup(cf, "dkim")) != NULL) {
		c->dkim.on = true;
		c->dkim.line = config_setting_source_line(s);
		if (c->dkim.nkeys == 0)
			return err_at(x->err, ERR_CONFIG, x->file, c->dkim.line,
			              "dkim needs at least one key: keys = ( { selector = \"s1\"; "
			              "key_file = \"/etc/matrixd/dkim/s1.pem\"; } ); or remove the "
			              "dkim group to send unsigned mail");
		if (c->dkim.domain[0] == '\0') {
			char *name = NULL, *addr = NULL, *key = NULL;
			if (addr_parse_named(c->site.from, &name, &addr, NULL) == 0)
				key = addr_key(addr, NULL);
			free(name);
			free(addr);
			if (key == NULL)
				return err_at(
				    x->err, ERR_CONFIG, x->file, LINE("site.from"),
				    "site.from has no domain to sign for; set dkim.domain");
			free(c->dkim.domain);
			c->dkim.domain = xstrdup(strrchr(key, '@') + 1);
			free(key);
		}
		if (!conf_valid_labels(c->dkim.domain))
			return err_at(x->err, ERR_CONFIG, x->file, LINE("dkim.domain"),
			              "dkim.domain \"%s\" must be a domain name in ASCII (an "
			              "internationalized one as A-labels, xn--…)",
			              c->dkim.domain);
	}
	if (c->http.listen[0] && !valid_hostport(c->http.listen))
		return err_at(
		    x->err, ERR_CONFIG, x->file, LINE("http.listen"),
		    "http.listen must be HOST:PORT such as \"127.0.0.1:8025\", or \"\" to "
		    "disable");
	struct httpreq_net *nets = NULL;
	size_t nnets;
	struct err e;
	if (httpreq_nets_parse(c->http.trusted_proxies, &nets, &nnets, &e) < 0)
		return err_at(x->err, ERR_CONFIG, x->file, LINE("http.trusted_proxies"),
		              "http.trusted_proxies: %s", e.msg);
	free(nets);
#undef LINE
	return 0;
}

int conf_load(struct conf *c, const char *path, struct err *err)
{
	config_t cf;
	struct ctx x = {c, path, NULL, err};
	int r = -1;

	conf_defaults(c);
	config_init(&cf);

	char *abs = realpath(path, NULL);
	if (abs == NULL && errno == ENOENT) {
		/* the first run, or a typo: where one comes from */
		err_set(
		    err, ERR_CONFIG,
		    "%s: No such file or directory; pass -c FILE or set $MATRIXD_CONF to "
		    "the configuration; conf/matrixd.conf.example (installed as " MATRIXD_DOC_DIR
		    "/matrixd.conf.example) documents every key",
		    path);
		goto out;
	}
	if (abs == NULL) {
		err_sys(err, "%s", path);
		err->kind = ERR_CONFIG;
		goto out;
	}
	c->path = abs;
	char *slash = strrchr(abs, '/');
	x.dir = xstrndup(abs, slash == abs ? 1 : (size_t)(slash - abs));

	/* config_read_file() reports an unreadable file without its name. */
	FILE *f = fopen(abs, "r");
	if (f == NULL) {
		err_sys(err, "%s", path);
		err->kind = ERR_CONFIG;
		goto out;
	}
	fclose(f);
	if (config_read_file(&cf, abs) != CONFIG_TRUE) {
		const char *file = config_error_file(&cf);
		err_at(err, ERR_CONFIG, file ? file : path, config_error_line(&cf), "%s",
		       config_error_text(&cf));
		goto out;
	}
	if (walk(&x, config_root_setting(&cf), NULL) < 0)
		goto out;
	if (semantic(&x, &cf) < 0)
		goto out;
	r = 0;
out:
	config_destroy(&cf);
	free(x.dir);
	if (r < 0) {
		conf_free(c);
	}
	return r;
}

int conf_password(const struct conf *c, char **out, struct err *err)
{
	if (c->smtp.nrelays > 0)
		return conf_relay_password(&c->smtp.relays[0], out, err);
	struct conf_relay r = {.password_file = c->smtp.password_file};
	return conf_relay_password(&r, out, err);
}

int conf_relay_password(const struct conf_relay *r, char **out, struct err *err)
{
	*out = NULL;
	if (r->password_file == NULL || r->password_file[0] == '\0')
		return 0;
	const char *p = r->password_file;
	struct stat st;
	/* a link could hand the relay any file the daemon can read */
	int fd = fs_open_nofollow(p, NULL, 0, &st, err);
	if (fd < 0)
		return err_prefix(err, "smtp.password_file");
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		close(fd);
		return err_set(err, ERR_CONFIG,
		               "smtp.password_file %s is readable by others (mode %03o); "
		               "run: chmod 600 %s",
		               p, (unsigned)(st.st_mode & 0777), p);
	}
	char pw[1024];
	ssize_t n = read(fd, pw, sizeof pw - 1);
	close(fd);
	if (n < 0)
		return err_sys(err, "smtp.password_file %s", p);
	pw[n] = '\0';
	while (n > 0 && (pw[n - 1] == '\n' || pw[n - 1] == '\r'))
		pw[--n] = '\0';
	if (n == 0)
		return err_set(err, ERR_CONFIG, "smtp.password_file %s is empty", p);
	*out = xstrdup(pw);
	explicit_bzero(pw, sizeof pw);
	return 0;
}
