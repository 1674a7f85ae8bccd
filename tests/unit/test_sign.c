/* DKIM signing: keys from sign_keygen() load, sign and repeat without a
 * leak (the ASan build counts every byte: libopendkim 2.11 leaks per
 * Ed25519 signature unless lib/sign.c makes up for it); the header list,
 * the over-signing and the checks of the key files. */
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
#include "sign.h"

static char dir[] = "/tmp/matrixd-sign-XXXXXX";

static void write_file(const char *name, const char *text, mode_t mode)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	unlink(path);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
}

static void keys(void)
{
	struct buf pem, p;
	struct err e;
	buf_init(&pem, BUF_NOLIMIT);
	buf_init(&p, BUF_NOLIMIT);
	assert_int_equal(sign_keygen(SIGN_RSA, 2048, &pem, &p, &e), 0);
	assert_non_null(strstr(pem.data, "-----BEGIN PRIVATE KEY-----\n"));
	assert_true(p.len > 300); /* base64 of a 2048-bit SubjectPublicKeyInfo */
	write_file("rsa.pem", pem.data, 0600);
	buf_free(&pem);
	buf_free(&p);
	assert_int_equal(sign_keygen(SIGN_ED25519, 0, &pem, &p, &e), 0);
	assert_int_equal(p.len, 44); /* 32 raw bytes, RFC 8463 §4.2 */
	write_file("ed.pem", pem.data, 0600);
	buf_free(&pem);
	buf_free(&p);
	assert_int_equal(sign_keygen(SIGN_RSA, 1024, &pem, &p, &e), -1);
}

static int load(const char *dkim, struct conf *c, struct sign_keys **k, struct err *e)
{
	char text[2048];
	snprintf(
	    text, sizeof text,
	    "site = { base_url = \"https://n.example.org/\"; from = \"M <m@example.org>\"; };\n"
	    "%s\n",
	    dkim);
	write_file("m.conf", text, 0644);
	char path[512];
	snprintf(path, sizeof path, "%s/m.conf", dir);
	if (conf_load(c, path, e) < 0)
		return -1;
	int r = sign_keys_load(c, k, NULL, NULL, e);
	conf_free(c);
	return r;
}

static const char msg[] = "From: M <m@example.org>\r\n"
                          "To: a@example.org\r\n"
                          "Subject: =?UTF-8?B?5qCH6aKY?=\r\n"
                          " =?UTF-8?B?5qCH6aKY?=\r\n"
                          "Date: Wed, 15 Nov 2023 03:43:20 +0000\r\n"
                          "Message-ID: <m.1@example.org>\r\n"
                          "List-Unsubscribe: <https://n.example.org/u/1>\r\n"
                          "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                          "X-Other: not signed\r\n"
                          "MIME-Version: 1.0\r\n"
                          "Content-Type: text/plain; charset=utf-8\r\n"
                          "\r\n"
                          "body line\r\n";

static void test_sign_repeatedly(void **state)
{
	(void)state;
	keys();
	struct conf c;
	struct sign_keys *k = NULL;
	struct err e;
	assert_int_equal(load("dkim = { keys = ( { selector = \"r1\"; key_file = \"rsa.pem\"; },"
	                      " { selector = \"e1\"; key_file = \"ed.pem\"; } ); };",
	                      &c, &k, &e),
	                 0);
	assert_non_null(k);
	assert_string_equal(sign_keys_domain(k), "example.org");
	struct signer *s = signer_new(&e);
	assert_non_null(s);
	for (int i = 0; i < 200; i++) { /* a leak would be 200 times over */
		struct buf out;
		buf_init(&out, BUF_NOLIMIT);
		assert_int_equal(sign_message(s, k, msg, sizeof msg - 1, &out, &e), 0);
		const char *rsa =
		    strstr(out.data, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;");
		const char *ed =
		    strstr(out.data, "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;");
		assert_non_null(rsa);
		assert_non_null(ed);
		assert_true(rsa < ed);
		if (i == 0) {
			char *flat = strdup(out.data), *w = flat;
			for (char *r = flat; *r; r++)
				if (*r != '\r' && *r != '\n' && *r != '\t' && *r != ' ')
					*w++ = *r;
			*w = '\0';
			assert_non_null(strstr(flat,
			                       "h=From:To:Subject:Date:Message-ID:List-Unsubscribe:"
			                       "List-Unsubscribe-Post:MIME-Version:Content-Type:"
			                       "from:subject:to;"));
			assert_null(strstr(flat, "X-Other"));
			assert_non_null(strstr(flat, "d=example.org;s=r1;"));
			free(flat);
		}
		buf_free(&out);
	}
	/* a reload: new keys, the same signer */
	sign_keys_unref(k);
	assert_int_equal(load("dkim = { domain = \"example.org\"; keys = ( { selector = \"e2\"; "
	                      "key_file = \"ed.pem\"; } ); };",
	                      &c, &k, &e),
	                 0);
	struct buf out;
	buf_init(&out, BUF_NOLIMIT);
	assert_int_equal(sign_message(s, k, msg, sizeof msg - 1, &out, &e), 0);
	assert_non_null(strstr(out.data, "s=e2;"));
	assert_null(strstr(out.data, "rsa-sha256"));
	buf_free(&out);
	signer_free(s);
	sign_keys_unref(k);
}

static void test_refused_keys(void **state)
{
	(void)state;
	struct conf c;
	struct sign_keys *k = NULL;
	struct err e;
	char rsa[4096];
	snprintf(rsa, sizeof rsa, "%s/rsa.pem", dir);
	assert_int_equal(chmod(rsa, 0640), 0);
	assert_int_equal(
	    load("dkim = {\n keys = ( { selector = \"r1\"; key_file = \"rsa.pem\"; } );\n};", &c,
	         &k, &e),
	    -1);
	assert_non_null(strstr(e.msg, "m.conf:3: dkim key r1: "));
	assert_non_null(strstr(e.msg, "readable by others (mode 640)"));
	assert_int_equal(chmod(rsa, 0600), 0);
	write_file("junk.pem",
	           "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n", 0600);
	assert_int_equal(
	    load("dkim = { keys = ( { selector = \"j\"; key_file = \"junk.pem\"; } ); };", &c, &k,
	         &e),
	    -1);
	assert_non_null(strstr(e.msg, "does not parse"));
	assert_int_equal(
	    load("dkim = { keys = ( { selector = \"bad_sel\"; key_file = \"rsa.pem\"; } ); };", &c,
	         &k, &e),
	    -1);
	assert_non_null(strstr(e.msg, "selector \"bad_sel\""));
	assert_int_equal(load("dkim = { domain = \"exa mple.org\"; keys = ( { selector = \"a\"; "
	                      "key_file = \"rsa.pem\"; } ); };",
	                      &c, &k, &e),
	                 -1);
	assert_non_null(strstr(e.msg, "dkim.domain"));
	/* no dkim group: nothing to sign with, no error */
	assert_int_equal(load("", &c, &k, &e), 0);
	assert_null(k);
}

int main(void)
{
	if (mkdtemp(dir) == NULL)
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sign_repeatedly),
	    cmocka_unit_test(test_refused_keys),
	};
	int r = cmocka_run_group_tests_name("sign", tests, NULL, NULL);
	const char *names[] = {"rsa.pem", "ed.pem", "junk.pem", "m.conf"};
	for (size_t i = 0; i < 4; i++) {
		char p[600];
		snprintf(p, sizeof p, "%s/%s", dir, names[i]);
		unlink(p);
	}
	rmdir(dir);
	return r;
}
