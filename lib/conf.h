/*
 * matrixd.conf (libconfig syntax, docs/matrixd.conf.5): defaults, type
 * and range checks, unknown keys rejected, every error "FILE:LINE: …".
 * Relative paths in the file are taken relative to the file's directory, so
 * a configuration and its directories can travel together (examples/).
 */
#ifndef MATRIX_CONF_H
#define MATRIX_CONF_H

#include <stdbool.h>

#include "err.h"

#define CONF_DEFAULT_PATH "/etc/matrixd/matrixd.conf"

enum tls_mode { TLS_AUTO, TLS_REQUIRED, TLS_OFF };

/* One DKIM key of the dkim group (lib/sign.h reads and checks the file). */
struct conf_dkim_key {
	char *selector;
	char *key_file; /* absolute */
	int line;       /* of its { … } in the file, for messages */
};

/*
 * One SMTP relay: smtp.url and its TLS and AUTH settings, or one group of
 * smtp.relays. Each has its own connections (sender threads).
 */
struct conf_relay {
	char *url; /* smtp://, smtps:// or maildir:/abs/path; never user:password@ */
	enum tls_mode tls;
	char *ca_file, *username, *password_file;
	int connections;
	int line; /* of its group in the file; 0 for smtp.url */
};

struct conf {
	char *path; /* the file read, absolute; NULL for pure defaults */
	char *issue_dir, *state_dir, *public_dir, *template_dir;
	int issue_settle_seconds;
	long long max_issue_bytes;
	int bounce_threshold;
	int schedule_grace; /* seconds a missed send_at may be late and still go out */
	struct {
		char *title, *base_url, *language, *from;
		int feed_items;
		char *timezone; /* a zoneinfo name; "" = the system's */
	} site;
	struct {
		char *url;
		enum tls_mode tls;
		char *ca_file, *username, *password_file;
		int connections;
		double rate;
		int max_attempts;
		int retry_max_age;
		char *return_path;
		/* the relays mail goes through: smtp.relays, or one made of
		 * smtp.url and its keys; at least one */
		struct conf_relay *relays;
		size_t nrelays;
	} smtp;
	struct {
		char *listen;          /* "" disables the endpoint */
		char *trusted_proxies; /* addresses/networks (httpreq_nets_parse); "" = none */
	} http;
	struct {
		bool on;      /* the group is present: every message is signed */
		char *domain; /* d=: as given, else the A-label domain of site.from */
		int line;     /* of the dkim group */
		struct conf_dkim_key *keys;
		size_t nkeys;
	} dkim;
};

/* Fills c with the built-in defaults (base_url and from are empty). */
void conf_defaults(struct conf *c);
/*
 * Reads path over the defaults into a fresh *c. On error *c is left empty
 * (conf_free-able) and err says "FILE:LINE: what is wrong". A file must
 * set the required keys (site.base_url, site.from).
 */
int conf_load(struct conf *c, const char *path, struct err *err);
void conf_free(struct conf *c);

/*
 * Makes site.timezone the process's local time zone (TZ, tzset), for
 * send_at dates without a time and for the times people read. Call it
 * before any thread starts: TZ is process-wide and getenv is not safe
 * against a concurrent setenv. Nothing happens when site.timezone is "".
 */
void conf_apply_timezone(const struct conf *c);

/*
 * Reads the SMTP password from smtp.password_file into an allocated string
 * (trailing newline removed); *out is NULL when no file is configured.
 * Refuses a file that group or others can read.
 */
int conf_password(const struct conf *c, char **out, struct err *err);
/* The same for one relay's password_file. */
int conf_relay_password(const struct conf_relay *r, char **out, struct err *err);
/* A relay's url for logs and status: scheme, host and port. */
const char *conf_relay_name(const struct conf_relay *r);
/* A DKIM selector or d= domain as RFC 6376 §3.1 has them: dot-separated
 * LDH labels (A-labels for internationalized names), 63 octets each. */
bool conf_valid_labels(const char *s);

#endif
