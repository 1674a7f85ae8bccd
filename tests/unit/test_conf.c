/* Configuration: defaults, every class of error with its line, paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf.h"

static char dir[] = "/tmp/matrixd-conf-XXXXXX";

static const char *write_conf(const char *name, const char *text)
{
	static char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

#define REQUIRED "site = { base_url = \"https://n.example.org/m\"; from = \"M <m@example.org>\"; };\n"

static void test_minimal_and_defaults(void **state)
{
	(void)state;
	struct conf c;
	struct err e;
	const char *p = write_conf("min.conf", REQUIRED);
	assert_int_equal(conf_load(&c, p, &e), 0);
	assert_string_equal(c.site.base_url, "https://n.example.org/m/"); /* slash added */
	assert_string_equal(c.issue_dir, "/var/lib/matrixd/issues");
	assert_int_equal(c.issue_settle_seconds, 5);
	assert_int_equal(c.max_issue_bytes, 16777216);
	assert_int_equal(c.bounce_threshold, 3);
	assert_int_equal(c.site.feed_items, 50);
	assert_string_equal(c.site.language, "zh-CN");
	assert_string_equal(c.smtp.url, "smtp://127.0.0.1:25");
	assert_int_equal(c.smtp.tls, TLS_AUTO);
	assert_int_equal(c.smtp.connections, 4);
	assert_int_equal(c.smtp.max_attempts, 10);
	assert_int_equal(c.smtp.retry_max_age, 259200);
	assert_string_equal(c.http.listen, "127.0.0.1:8025");
	assert_string_equal(c.http.trusted_proxies, "");
	/* bounces go back to the sender's own domain, never to example.org */
	assert_string_equal(c.smtp.return_path, "bounces+{token}@example.org");
	conf_free(&c);
	p = write_conf("from.conf", "site = { base_url = \"https://x.example/\"; "
				    "from = \"矩阵 <matrix@news.msra.cn>\"; };\n");
	assert_int_equal(conf_load(&c, p, &e), 0);
	assert_string_equal(c.smtp.return_path, "bounces+{token}@news.msra.cn");
	conf_free(&c);
}

static void test_full(void **state)
{
	(void)state;
	struct conf c;
	struct err e;
	const char *p = write_conf("full.conf",
				   "issue_dir = \"issues\";\n"
				   "state_dir = \"/srv/state\";\n"
				   "max_issue_bytes = 1048576;\n"
				   "site = {\n"
				   "  title = \"矩阵\";\n"
				   "  base_url = \"https://n.example.org/m/\";\n"
				   "  from = \"Matrix <m@example.org>\";\n"
				   "  feed_items = 20;\n"
				   "};\n"
				   "smtp = { url = \"maildir:out\"; tls = \"required\"; rate = 10;\n"
				   "         connections = 16; };\n"
				   "http = { listen = \"\"; trusted_proxies = \"127.0.0.1, ::1\"; };\n");
	assert_int_equal(conf_load(&c, p, &e), 0);
	char want[600];
	snprintf(want, sizeof want, "%s/issues", dir);
	assert_string_equal(c.issue_dir, want); /* relative to the file */
	snprintf(want, sizeof want, "maildir:%s/out", dir);
	assert_string_equal(c.smtp.url, want);
	assert_string_equal(c.state_dir, "/srv/state");
	assert_int_equal(c.smtp.tls, TLS_REQUIRED);
	assert_true(c.smtp.rate == 10.0);
	assert_int_equal(c.smtp.connections, 16);
	assert_string_equal(c.site.title, "矩阵");
	assert_string_equal(c.http.listen, "");
	assert_string_equal(c.http.trusted_proxies, "127.0.0.1, ::1");
	conf_free(&c);
}

static void test_errors(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		int line;
		const char *what;
	} cases[] = {
	    {REQUIRED "issue_dir = \"a\"\nbogus = 1;\n", 3, "unknown key 'bogus'"},
	    {REQUIRED "smtp = {\n  url = \"smtp://x\";\n  conections = 4;\n};\n", 4,
	     "unknown key 'smtp.conections'"},
	    {REQUIRED "smtp = {\n  connections = \"4\";\n};\n", 3,
	     "smtp.connections must be an integer, not a string"},
	    {REQUIRED "smtp = { connections = 0; };\n", 2, "between 1 and 256"},
	    {REQUIRED "smtp = { tls = \"maybe\"; };\n", 2, "\"auto\", \"required\" or \"off\""},
	    {REQUIRED "smtp = { url = \"http://x\"; };\n", 2, "smtp.url must start with"},
	    {REQUIRED "smtp = 5;\n", 2, "smtp must be a group"},
	    {REQUIRED "issue_settle_seconds = -1;\n", 2, "between 0 and 3600"},
	    {REQUIRED "site2 = { };\n", 2, "unknown key 'site2'"},
	    {"site = {\n  from = \"M <m@example.org>\";\n};\n", 1, "site.base_url is required"},
	    {"site = {\n  base_url = \"ftp://x/\";\n  from = \"a@b\";\n};\n", 2,
	     "must start with https://"},
	    {"site = {\n  base_url = \"https://x/\";\n};\n", 1, "site.from is required"},
	    {REQUIRED "x = = 1;\n", 2, "syntax error"},
	    {REQUIRED "http = { listen = \"localhost\"; };\n", 2, "HOST:PORT"},
	    {REQUIRED "http = {\n  trusted_proxies = \"127.0.0.1, nginx\";\n};\n", 3,
	     "http.trusted_proxies: 'nginx' is not an address"},
	    {REQUIRED "smtp = { rate = \"fast\"; };\n", 2, "smtp.rate must be a number"},
	    {REQUIRED "smtp = { password_file = \"/x\"; };\n", 2, "smtp.username is empty"},
	    /* the two lists of groups: the shape, each element, what one needs */
	    {REQUIRED "smtp = {\n  relays = \"smtp://b:25\";\n};\n", 3,
	     "smtp.relays must be a list of groups: relays = ( { url = "},
	    {REQUIRED "smtp = {\n  relays = ( );\n};\n", 3, "smtp.relays must be a list of groups"},
	    {REQUIRED "smtp = { relays = (\n  { url = \"smtp://b:25\"; },\n  \"smtp://c:25\" ); };\n",
	     4, "smtp.relays: each relay is a group { url"},
	    {REQUIRED "smtp = { relays = (\n  { connections = 2; } ); };\n", 3,
	     "smtp.relays: this relay has no url"},
	    {REQUIRED "dkim = {\n  keys = { selector = \"s\"; };\n};\n", 3,
	     "dkim.keys must be a list of groups: keys = ( { selector = "},
	    {REQUIRED "dkim = { keys = (\n  \"s1\" ); };\n", 3, "dkim.keys: each key is a group"},
	    {REQUIRED "dkim = { keys = (\n  { selector = \"s1\"; key_file = \"/k1\"; },\n"
	              "  { selector = \"s1\"; key_file = \"/k2\"; } ); };\n",
	     4, "dkim.keys: selector \"s1\" is given twice"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct conf c;
		struct err e;
		err_clear(&e);
		const char *p = write_conf("bad.conf", cases[i].text);
		assert_int_equal(conf_load(&c, p, &e), -1);
		assert_int_equal(e.kind, ERR_CONFIG);
		char want[600];
		snprintf(want, sizeof want, "%s:%d: ", p, cases[i].line);
		if (strncmp(e.msg, want, strlen(want)) != 0 || strstr(e.msg, cases[i].what) == NULL)
			fail_msg("case %zu: want \"%s…%s\", got \"%s\"", i, want, cases[i].what,
				 e.msg);
		conf_free(&c); /* harmless on a failed load */
	}
	struct conf c;
	struct err e;
	snprintf(e.msg, sizeof e.msg, "x");
	assert_int_equal(conf_load(&c, "/nonexistent/matrixd.conf", &e), -1);
	assert_non_null(strstr(e.msg, "/nonexistent/matrixd.conf"));
	assert_non_null(strstr(e.msg, "No such file"));
}

static void test_password_file(void **state)
{
	(void)state;
	char text[1024];
	snprintf(text, sizeof text,
		 REQUIRED "smtp = { username = \"u\"; password_file = \"%s/pw\"; };\n", dir);
	const char *p = write_conf("pw.conf", text);
	char pw[600];
	snprintf(pw, sizeof pw, "%s/pw", dir);
	FILE *f = fopen(pw, "w");
	fputs("s3cret\n", f);
	fclose(f);
	struct conf c;
	struct err e;
	assert_int_equal(conf_load(&c, p, &e), 0);
	char *out = NULL;
	chmod(pw, 0644);
	assert_int_equal(conf_password(&c, &out, &e), -1);
	assert_non_null(strstr(e.msg, "chmod 600"));
	assert_null(strstr(e.msg, "s3cret"));
	chmod(pw, 0600);
	assert_int_equal(conf_password(&c, &out, &e), 0);
	assert_string_equal(out, "s3cret");
	free(out);
	conf_free(&c);
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	static const char *const files[] = {"min.conf", "full.conf", "bad.conf", "pw.conf", "pw",
					    "from.conf"};
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		char p[600];
		snprintf(p, sizeof p, "%s/%s", dir, files[i]);
		unlink(p);
	}
	return rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_minimal_and_defaults),
	    cmocka_unit_test(test_full),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_password_file),
	};
	return cmocka_run_group_tests_name("conf", tests, setup, teardown);
}
