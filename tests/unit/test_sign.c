/* DKIM signing: keys from sign_keygen() load, sign and repeat without a
 * leak (the ASan build counts every byte); the header list, the
 * over-signing and the checks of the key files; and our signatures of
 * awkward messages (repeated and folded fields, WSP that relaxed
 * canonicalisation changes, empty lines at the end, 8-bit values), each
 * verified by libopendkim, with one body hash per message for both keys,
 * and failing once the Subject or the body is changed. */
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
	assert_int_equal(sign_keygen(SIGN_RSA, 8192, &pem, &p, &e),
	                 -1); /* libopendkim cannot check it */
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

/* The configuration of both keys made by keys(): an RSA and an Ed25519 one. */
static void load_both(struct conf *c, struct sign_keys **k, struct err *e)
{
	assert_int_equal(load("dkim = { keys = ( { selector = \"r1\"; key_file = \"rsa.pem\"; },"
	                      " { selector = \"e1\"; key_file = \"ed.pem\"; } ); };",
	                      c, k, e),
	                 0);
}

static void test_sign_repeatedly(void **state)
{
	(void)state;
	keys();
	struct conf c;
	struct sign_keys *k = NULL;
	struct err e;
	load_both(&c, &k, &e);
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

/* Messages whose canonicalisation (RFC 6376 §3.4.2, §3.4.4) and header
 * selection (§5.4.2) have something to get wrong. */
static const char *const tricky[] = {
    /* two To fields, a Received twice (not signed), a signed field twice
     * (Content-Language: taken from the bottom up) */
    "Received: from a by b; Wed, 15 Nov 2023 03:43:20 +0000\r\n"
    "Content-Language: zh-CN\r\n"
    "From: M <m@example.org>\r\n"
    "To: a@example.org\r\n"
    "Content-Language: en\r\n"
    "Received: from c by d; Wed, 15 Nov 2023 03:43:21 +0000\r\n"
    "To: b@example.org\r\n"
    "Subject: two To\r\n"
    "\r\n"
    "body\r\n",
    /* folded fields with tabs and runs of spaces, WSP around the colon */
    "From:   M\t <m@example.org>  \r\n"
    "Subject: a\r\n"
    "\t  folded \t\r\n"
    "   subject\t\r\n"
    "To: a@example.org,\r\n"
    "\tb@example.org\r\n"
    "Content-Type :  text/plain;\r\n"
    "  charset=utf-8\r\n"
    "\r\n"
    "body\r\n",
    /* WSP at the end of body lines, runs of spaces and tabs inside them,
     * a line of WSP only, empty lines at the end */
    "From: M <m@example.org>\r\n"
    "Subject: body WSP\r\n"
    "\r\n"
    "trailing space \r\n"
    "trailing tab\t\r\n"
    "runs  of\t\tspaces \t and\t tabs\r\n"
    "  leading spaces\r\n"
    " \t \r\n"
    "\tleading tab\r\n"
    "\r\n"
    " \r\n"
    "\r\n"
    "\r\n",
    /* a body of only CRLF */
    "From: M <m@example.org>\r\n"
    "Subject: empty body\r\n"
    "\r\n"
    "\r\n",
    /* no body at all */
    "From: M <m@example.org>\r\n"
    "Subject: no body\r\n"
    "\r\n",
    /* 8-bit UTF-8 values, a field without a space after its colon, upper
     * case names, a base64 body */
    "FROM:M <m@example.org>\r\n"
    "Subject:\xe6\xa0\x87\xe9\xa2\x98  \xe6\xa0\x87\xe9\xa2\x98\r\n"
    "TO:a@example.org\r\n"
    "X-Other: \xe4\xbd\xa0\xe5\xa5\xbd\r\n"
    "\r\n"
    "TWF0cml4IMK3IE5PLjYwIMK3IOWJjeayv+axgue0ogoKU3dpbiBUcmFuc2Zvcm1lciDov47mnaUg\r\n"
    "MzAg5Lq/5Y+C5pWw55qEIHYyLjDvvIzmiJHku6zlupTor6Xmi6XmirHop4bop4nlpKfmqKHlnovl\r\n"
    "=E4=BD=A0 quoted-printable =\r\n",
};

/* msg signed by both keys of k (the signatures in front), allocated */
static char *signed_copy(struct signer *s, struct sign_keys *k, const char *text, size_t *len)
{
	struct err e;
	*len = strlen(text);
	char *data = strdup(text);
	assert_non_null(data);
	if (sign_prepend(s, k, &data, len, &e) < 0)
		fail_msg("%s", e.msg);
	return data;
}

static void test_tricky_messages(void **state)
{
	(void)state;
	struct conf c;
	struct sign_keys *k = NULL;
	struct err e;
	load_both(&c, &k, &e);
	struct signer *s = signer_new(&e);
	assert_non_null(s);
	for (size_t i = 0; i < sizeof tricky / sizeof *tricky; i++) {
		unsigned long before = signer_body_hashes(s);
		size_t len;
		char *m = signed_copy(s, k, tricky[i], &len);
		assert_int_equal(signer_body_hashes(s), before + 1); /* one for both keys */
		assert_non_null(strstr(m, "a=rsa-sha256;"));
		assert_non_null(strstr(m, "a=ed25519-sha256;"));
		if (sign_verify(k, m, len, &e) < 0)
			fail_msg("message %zu: %s", i, e.msg);
		/* a changed Subject, then a changed body */
		char *subj = strcasestr(m, "\nSubject:");
		assert_non_null(subj);
		char *v = subj + strlen("\nSubject:"), was = *v;
		*v = was == 'X' ? 'Y' : 'X';
		assert_int_equal(sign_verify(k, m, len, &e), -1);
		assert_non_null(strstr(e.msg, "libopendkim does not verify"));
		*v = was;
		assert_int_equal(sign_verify(k, m, len, &e), 0);
		/* a letter of the body changed, or a line where there was none */
		char *longer = malloc(len + 3);
		assert_non_null(longer);
		memcpy(longer, m, len);
		char *at = strstr(longer, "\r\n\r\n") + 4;
		while (at < longer + len && !(*at >= 'a' && *at <= 'z'))
			at++;
		size_t n = len;
		if (at < longer + len)
			*at = *at == 'x' ? 'y' : 'x';
		else {
			memcpy(longer + len, "x\r\n", 3);
			n += 3;
		}
		if (sign_verify(k, longer, n, &e) == 0)
			fail_msg("message %zu: a changed body verifies", i);
		if (strstr(e.msg, "body hash") == NULL)
			fail_msg("message %zu: %s", i, e.msg);
		free(longer);
		free(m);
	}
	/* the over-signed names are listed once more than they occur */
	size_t len;
	char *m = signed_copy(s, k, tricky[0], &len);
	*strstr(m, "Received:") = '\0'; /* the signatures alone */
	char *flat = m, *w = m;
	for (char *r = m; *r; r++)
		if (*r != '\r' && *r != '\n' && *r != '\t' && *r != ' ')
			*w++ = *r;
	*w = '\0';
	assert_non_null(strstr(
	    flat, "h=Content-Language:From:To:Content-Language:To:Subject:from:subject:to;"));
	assert_null(strstr(flat, "Received"));
	free(m);
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
	    cmocka_unit_test(test_tricky_messages),
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
