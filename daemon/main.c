/*
 * matrixd: options, start-up, reload and shutdown. The work happens in the
 * event loop (loop.c).
 */
#include <curl/curl.h>
#include <fcntl.h>
#include <getopt.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <signal.h>
#include <inttypes.h>
#include <libxml/parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "fsutil.h"
#include "log.h"
#include "matrixd.h"
#include "md.h"
#include "msg.h"
#include "xmalloc.h"

#ifndef MATRIXD_VERSION
#define MATRIXD_VERSION "dev"
#endif

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: matrixd [-c FILE] [-n] [-v] [--once] [--foreground]\n"
	        "  -c FILE       configuration (default $MATRIXD_CONF, then %s)\n"
	        "  -n            check the configuration and templates, exit 0 (valid) or 1\n"
	        "  -v            debug logging (subscriber addresses included)\n"
	        "  --once        process pending issues and due deliveries, then exit\n"
	        "                (0 nothing left queued, 75 some deferred, 1 error)\n"
	        "  --foreground  accepted for compatibility; matrixd never forks\n",
	        CONF_DEFAULT_PATH);
}

static void warn_line(void *arg, const char *msg)
{
	(void)arg;
	log_warnx("%s", msg);
}

/* Checks a configuration, its DKIM keys and its templates; fills c, k and
 * t on success. */
static int load_all(const char *path, struct conf *c, struct sign_keys **k, struct tmpl **t,
                    struct err *e)
{
	if (conf_load(c, path, e) < 0)
		return -1;
	if (sign_keys_load(c, k, warn_line, NULL, e) < 0) {
		conf_free(c);
		return -1;
	}
	struct stat st;
	if (stat(c->issue_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		err_set(e, ERR_CONFIG,
		        "%s: issue_dir %s is not a directory; create it or fix issue_dir", c->path,
		        c->issue_dir);
		sign_keys_unref(*k);
		*k = NULL;
		conf_free(c);
		return -1;
	}
	if (c->template_dir[0] && stat(c->template_dir, &st) < 0)
		log_warnx("template_dir %s does not exist: the built-in templates are used",
		          c->template_dir);
	if (tmpl_load(t, c->template_dir, e) < 0) {
		sign_keys_unref(*k);
		*k = NULL;
		conf_free(c);
		return -1;
	}
	tmpl_lint(*t, warn_line, NULL);
	return 0;
}

static bool smtp_same(const struct conf *a, const struct conf *b)
{
	if (a->smtp.nrelays != b->smtp.nrelays)
		return false;
	for (size_t i = 0; i < a->smtp.nrelays; i++) {
		const struct conf_relay *x = &a->smtp.relays[i], *y = &b->smtp.relays[i];
		if (strcmp(x->url, y->url) != 0 || x->tls != y->tls ||
		    strcmp(x->ca_file, y->ca_file) != 0 || strcmp(x->username, y->username) != 0 ||
		    strcmp(x->password_file, y->password_file) != 0 ||
		    x->connections != y->connections)
			return false;
	}
	return true;
}

/* Every relay's AUTH password (relay i's in (*out)[i], NULL when none). */
static int read_passwords(const struct conf *c, char ***out, size_t *n, struct err *e)
{
	*n = c->smtp.nrelays;
	*out = xcalloc(*n, sizeof **out);
	for (size_t i = 0; i < *n; i++)
		if (conf_relay_password(&c->smtp.relays[i], &(*out)[i], e) < 0)
			return -1;
	return 0;
}

static void free_passwords(char **pw, size_t n)
{
	for (size_t i = 0; pw && i < n; i++)
		if (pw[i]) {
			explicit_bzero(pw[i], strlen(pw[i]));
			free(pw[i]);
		}
	free(pw);
}

/* SIGHUP: a new configuration and templates, or the old ones if either is bad. */
int daemon_reload(struct daemon *d)
{
	struct conf c;
	struct tmpl *t = NULL;
	struct sign_keys *k = NULL;
	struct err e;
	err_clear(&e);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRId64 "\nSTATUS=reloading", now_ms() * 1000);
	if (load_all(d->conf_path, &c, &k, &t, &e) < 0) {
		log_err("reload refused, keeping the running configuration: %s", e.msg);
		sd_notify(0, "READY=1");
		return -1;
	}
	if (strcmp(c.state_dir, d->conf.state_dir) != 0)
		log_warnx("state_dir changed in %s: restart matrixd for it to take effect",
		          d->conf_path);
	if (strcmp(c.http.listen, d->conf.http.listen) != 0)
		log_warnx("http.listen changed in %s: restart matrixd for it to take effect",
		          d->conf_path);
	if (strcmp(c.site.timezone, d->conf.site.timezone) != 0)
		log_warnx("site.timezone changed in %s: restart matrixd for it to take effect",
		          d->conf_path);
	if (!smtp_same(&c, &d->conf)) {
		log_warnx("smtp settings changed in %s: restart matrixd for them to take effect",
		          d->conf_path);
		/* The senders, their connections and passwords are the running
		 * relays'; the dispatcher and the status count and name those,
		 * one for one: the new list (perhaps shorter) waits for the
		 * restart. conf_free() below frees it. */
		struct conf_relay *r = c.smtp.relays;
		size_t nr = c.smtp.nrelays;
		char *url = c.smtp.url;
		c.smtp.relays = d->conf.smtp.relays;
		c.smtp.nrelays = d->conf.smtp.nrelays;
		c.smtp.url = d->conf.smtp.url;
		d->conf.smtp.relays = r;
		d->conf.smtp.nrelays = nr;
		d->conf.smtp.url = url;
	}
	/* what needs a restart keeps its running value */
	free(c.state_dir);
	c.state_dir = xstrdup(d->conf.state_dir);
	free(c.site.timezone);
	c.site.timezone = xstrdup(d->conf.site.timezone);
	bool new_dir = strcmp(c.issue_dir, d->conf.issue_dir) != 0;
	tmpl_free(d->tmpl);
	d->tmpl = t;
	/* messages already handed to the senders keep their own reference */
	sign_keys_unref(d->dkim);
	d->dkim = k;
	conf_free(&d->conf);
	d->conf = c;
	dispatch_invalidate(d->dispatch);
	if (new_dir)
		log_warnx("issue_dir changed: restart matrixd to watch %s", d->conf.issue_dir);
	publish_listing(d);
	watch_retry_now(d);
	log_info("reloaded %s", d->conf_path);
	sd_notify(0, "READY=1\nSTATUS=reloaded");
	return 0;
}

/*
 * One matrixd per state directory: two would send the same deliveries.
 * The lock (state_dir/matrixd.lock, flock) dies with the process, so a
 * crash never leaves it behind; the file holds the owner's pid.
 *
 * Contract: nothing that writes daemon-owned state runs before this
 * returns 0: not the store's migrations, not the secret's creation, and
 * above all not ledger_recover(). Recovery puts every 'sending' row back to
 * 'queued'; run by a second matrixd (a --once from cron next to the
 * service) it takes the rows the running daemon is sending, which then
 * claims and sends them again. Only state_dir itself may be created first:
 * the lock file lives in it.
 */
static int lock_state(struct daemon *d, int *fd_out)
{
	char *path = xasprintf("%s/matrixd.lock", d->conf.state_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0660);
	if (fd < 0) {
		log_warn("%s", path);
		free(path);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		char other[32] = "";
		ssize_t k = pread(fd, other, sizeof other - 1, 0);
		other[k > 0 ? k : 0] = '\0';
		other[strcspn(other, "\n")] = '\0';
		log_err("another matrixd (pid %s) is using %s; stop it first",
		        other[0] ? other : "?", d->conf.state_dir);
		close(fd);
		free(path);
		return -1;
	}
	char pid[32];
	int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)len, 0) != len)
		log_warn("%s", path);
	free(path);
	*fd_out = fd;
	return 0;
}

enum { RUN = -1 }; /* "go on" among the exit codes */

/* Options into d and *check; RUN to go on, or the exit code. */
static int parse_args(int argc, char **argv, struct daemon *d, bool *check)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'n'},
	    {"once", no_argument, NULL, 'o'},         {"foreground", no_argument, NULL, 'f'},
	    {"verbose", no_argument, NULL, 'v'},      {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
	};
	const char *path = NULL;
	int ch;
	while ((ch = getopt_long(argc, argv, "c:nvhV", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'n':
			*check = true;
			break;
		case 'o':
			d->once = true;
			break;
		case 'f':
			break;
		case 'v':
			log_set_level(LOG_L_DEBUG);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("matrixd %s\n", MATRIXD_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (path == NULL) {
		const char *env = getenv("MATRIXD_CONF");
		path = env && *env ? env : CONF_DEFAULT_PATH;
	}
	d->conf_path = path;
	return RUN;
}

/* -n, after load_all: also what the start would trip over, the AUTH
 * password file. */
static int check_config(struct daemon *d)
{
	struct err e;
	char **pw = NULL;
	size_t npw = 0;
	int rc = 0;
	if (read_passwords(&d->conf, &pw, &npw, &e) < 0) {
		fprintf(stderr, "matrixd: %s\n", e.msg);
		rc = 1;
	} else if (d->dkim) {
		printf("%s: configuration ok; DKIM: %zu key%s, d=%s\n", d->conf.path,
		       d->conf.dkim.nkeys, d->conf.dkim.nkeys == 1 ? "" : "s",
		       sign_keys_domain(d->dkim));
	} else {
		printf("%s: configuration ok\n", d->conf.path);
	}
	free_passwords(pw, npw);
	tmpl_free(d->tmpl);
	sign_keys_unref(d->dkim);
	conf_free(&d->conf);
	return rc;
}

static void process_init(struct daemon *d)
{
	d->progress = isatty(STDERR_FILENO) && getenv("JOURNAL_STREAM") == NULL && !d->once;
	log_set_progress(d->progress);
	/* Blocked before any thread exists, so that every thread inherits the
	 * mask and the signals reach only the loop's signalfd. */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	xmlInitParser();
	md_init();
	msg_init();
}

static void process_cleanup(void)
{
	md_shutdown();
	xmlCleanupParser();
	curl_global_cleanup();
}

/* The lock first (lock_state), then the store and the parts of the
 * daemon. RUN, or the exit code. */
static int daemon_start(struct daemon *d, int *lock_fd)
{
	struct err e;
	err_clear(&e);
	if (fs_mkdirs(d->conf.state_dir, 0750, &e) < 0) {
		log_err("%s", e.msg);
		return 1;
	}
	if (lock_state(d, lock_fd) < 0)
		return d->once ? 75 : 1; /* cron's --once: try again next time */
	if (fs_mkdirs(d->conf.public_dir, 0755, &e) < 0 ||
	    store_open(&d->store, d->conf.state_dir, &e) < 0 ||
	    token_key_load(&d->key, d->conf.state_dir, true, &e) < 0 ||
	    read_passwords(&d->conf, &d->passwords, &d->npasswords, &e) < 0) {
		log_err("%s", e.msg);
		return 1;
	}
	/* From here the loop never waits on another process's lock for long;
	 * the recovery of in-flight rows is the dispatcher's first step. */
	store_set_busy(d->store, DAEMON_STORE_WAIT_MS, DAEMON_STORE_RETRY_MS);
	if (senders_start(&d->senders, &d->conf, d->passwords, &e) < 0 ||
	    dispatch_new(d, &d->dispatch) < 0) {
		log_err("%s", e.msg);
		return 1;
	}
	if (watch_start(d, &d->watch) < 0 || schedule_start(&d->schedule) < 0)
		return 1;
	if (!d->once && http_start(d, &d->http, &e) < 0) {
		log_err("%s", e.msg);
		return 1;
	}
	return RUN;
}

static void daemon_stop(struct daemon *d, int lock_fd)
{
	struct err e;
	http_free(d->http);
	senders_free(d->senders);
	if (d->store && !d->once && lock_fd >= 0) {
		/* the last word for matrixctl status: worth a short wait */
		store_set_busy(d->store, 2000, 0);
		if (store_kv_set(d->store, "daemon.pid", "", &e) < 0)
			log_warnx("%s", e.msg);
	}
	if (lock_fd >= 0)
		close(lock_fd);
	dispatch_free(d->dispatch);
	watch_free(d->watch);
	schedule_free(d->schedule);
	store_close(d->store);
	tmpl_free(d->tmpl);
	sign_keys_unref(d->dkim);
	free_passwords(d->passwords, d->npasswords);
	conf_free(&d->conf);
}

int main(int argc, char **argv)
{
	struct daemon d = {.epfd = -1};
	bool check = false;
	log_init("matrixd", 0);
	int rc = parse_args(argc, argv, &d, &check);
	if (rc != RUN)
		return rc;
	struct err e;
	err_clear(&e);
	if (load_all(d.conf_path, &d.conf, &d.dkim, &d.tmpl, &e) < 0) {
		fprintf(stderr, "matrixd: %s\n", e.msg);
		return 1;
	}
	if (check)
		return check_config(&d);
	conf_apply_timezone(&d.conf); /* before any thread: TZ is process-wide */
	process_init(&d);
	int lock_fd = -1;
	rc = daemon_start(&d, &lock_fd);
	if (rc == RUN)
		rc = loop_run(&d);
	if (rc != 0 && rc != 75)
		sd_notifyf(0, "ERRNO=%d", rc);
	daemon_stop(&d, lock_fd);
	process_cleanup();
	return rc;
}
