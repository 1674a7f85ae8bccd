/* HTTP request judging: framing, paths, trusted proxies, forms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "httpreq.h"

#define H(n, v)                                                                                    \
	{                                                                                          \
		n, v, sizeof n - 1, sizeof v - 1                                                   \
	}

static unsigned judge(const char *method, const char *version, const struct httpreq_header *h,
                      size_t n)
{
	struct httpreq_head head = {method, "/u/1-1-x", version, h, n};
	return httpreq_judge(&head, NULL);
}

static void test_judge_framing(void **state)
{
	(void)state;
	const struct httpreq_header ok[] = {H("Host", "news.example.org"),
	                                    H("Content-Length", "26")};
	assert_int_equal(judge("POST", "HTTP/1.1", ok, 2), 0);
	const struct httpreq_header chunked[] = {H("Host", "x"),
	                                         H("Transfer-Encoding", " Chunked ")};
	assert_int_equal(judge("POST", "HTTP/1.1", chunked, 2), 0);
	/* HTTP/1.0 needs no Host */
	assert_int_equal(judge("GET", "HTTP/1.0", NULL, 0), 0);

	const struct {
		struct httpreq_header h[3];
		size_t n;
		const char *version;
		unsigned want;
	} bad[] = {
	    {{H("Content-Length", "26")}, 1, "HTTP/1.1", 400},
	    {{H("Host", "a"), H("Host", "b")}, 2, "HTTP/1.1", 400},
	    {{H("Host", "a b")}, 1, "HTTP/1.1", 400},
	    {{H("Host", "a"), H("Content-Length", "5"), H("Content-Length", "5")},
	     3,
	     "HTTP/1.1",
	     400},
	    {{H("Host", "a"), H("Content-Length", "5"), H("Transfer-Encoding", "chunked")},
	     3,
	     "HTTP/1.1",
	     400},
	    {{H("Host", "a"), H("Transfer-Encoding", "chunked"), H("Content-Length", "5")},
	     3,
	     "HTTP/1.1",
	     400},
	    {{H("Transfer-Encoding", "chunked")}, 1, "HTTP/1.0", 400},
	    {{H("Host", "a"), H("Content-Length ", "5")}, 2, "HTTP/1.1", 400},
	    {{H("Host", "a"), H("Content-Length", "+5")}, 2, "HTTP/1.1", 400},
	    {{H("Host", "a"), H("Content-Length", "5, 5")}, 2, "HTTP/1.1", 400},
	    {{H("Host", "a"), H("X", "a\rb")}, 2, "HTTP/1.1", 400},
	    {{H("Host", "a"), H("Transfer-Encoding", "gzip, chunked")}, 2, "HTTP/1.1", 501},
	    {{H("Host", "a"), H("Transfer-Encoding", "chunked"), H("Transfer-Encoding", "chunked")},
	     3,
	     "HTTP/1.1",
	     501},
	    {{H("Host", "a"), H("Content-Length", "4097")}, 2, "HTTP/1.1", 413},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		const char *why = NULL;
		struct httpreq_head head = {"POST", "/", bad[i].version, bad[i].h, bad[i].n};
		assert_int_equal(httpreq_judge(&head, &why), bad[i].want);
		assert_non_null(why);
	}
	assert_int_equal(judge("PUT", "HTTP/1.1", ok, 1), 405);
	assert_int_equal(judge("GET", "HTTP/1.5", ok, 1), 505);
	assert_int_equal(judge("GET", "", ok, 1), 505);
	const char *targets[] = {"/a b", "/a\tb", "/\xe4\xb8\xad", "/a\x7f"};
	for (size_t i = 0; i < sizeof targets / sizeof *targets; i++) {
		struct httpreq_head head = {"GET", targets[i], "HTTP/1.1", ok, 1};
		assert_int_equal(httpreq_judge(&head, NULL), 400);
	}
}

static void test_judge_sizes(void **state)
{
	(void)state;
	char *target = malloc(HTTPREQ_URL_MAX + 2);
	memset(target, 'a', HTTPREQ_URL_MAX + 1);
	target[0] = '/';
	target[HTTPREQ_URL_MAX + 1] = '\0';
	struct httpreq_header host = H("Host", "a");
	struct httpreq_head head = {"GET", target, "HTTP/1.1", &host, 1};
	assert_int_equal(httpreq_judge(&head, NULL), 414);
	target[HTTPREQ_URL_MAX] = '\0';
	assert_int_equal(httpreq_judge(&head, NULL), 0);
	free(target);

	static char big[HTTPREQ_HEAD_MAX];
	memset(big, 'y', sizeof big);
	struct httpreq_header hs[2] = {H("Host", "a"),
	                               {"X-Big", big, 5, sizeof big - 10}}; /* 16384 in all */
	struct httpreq_head h2 = {"GET", "/", "HTTP/1.1", hs, 2};
	assert_int_equal(httpreq_judge(&h2, NULL), 0);
	hs[1].value_len++;
	assert_int_equal(httpreq_judge(&h2, NULL), 431);
}

static void test_path_decode(void **state)
{
	(void)state;
	char out[64];
	size_t n;
	assert_int_equal(httpreq_path_decode("/issues/60/a%20b.html", out, &n), 0);
	assert_string_equal(out, "/issues/60/a b.html");
	assert_int_equal(n, strlen(out));
	const char *bad[] = {"x",      "/../a",  "/%2e%2e/a", "/.%2E/a", "/a/.",
	                     "/a%00b", "/a%5cb", "/a\\b",     "/%",      "/%g0",
	                     "/%0",    "/a%0ab", "/./feed",   "/a/../b", "/%7f"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		assert_int_equal(httpreq_path_decode(bad[i], out, &n), -1);
	assert_int_equal(httpreq_path_decode("/a..b/.c", out, &n), 0); /* not a segment */
}

static void addr(const char *s, unsigned char out[16])
{
	assert_true(httpreq_addr_parse(s, strlen(s), out));
}

static void test_nets(void **state)
{
	(void)state;
	struct httpreq_net *nets;
	size_t n;
	struct err e;
	assert_int_equal(httpreq_nets_parse("", &nets, &n, &e), 0);
	assert_int_equal(n, 0);
	free(nets);
	assert_int_equal(
	    httpreq_nets_parse("127.0.0.1, ::1 10.0.0.0/8,fd00::/8 192.0.2.128/25", &nets, &n, &e),
	    0);
	assert_int_equal(n, 5);
	unsigned char a[16];
	const char *in[] = {"127.0.0.1", "::1", "10.200.3.4", "fd12::1", "192.0.2.200"};
	const char *out[] = {"127.0.0.2", "::2",         "11.0.0.1",
	                     "fe00::1",   "192.0.2.127", "::ffff:7f00:2"};
	for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
		addr(in[i], a);
		assert_true(httpreq_nets_match(nets, n, a));
	}
	for (size_t i = 0; i < sizeof out / sizeof *out; i++) {
		addr(out[i], a);
		assert_false(httpreq_nets_match(nets, n, a));
	}
	addr("::ffff:127.0.0.1", a); /* the mapped spelling is the same address */
	assert_true(httpreq_nets_match(nets, n, a));
	free(nets);
	const char *bad[] = {"localhost", "10.0.0.0/33", "::/129", "1.2.3.4/",
	                     "1.2.3.4/x", "[::1]",       "1.2.3",  "::1/-1"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		assert_int_equal(httpreq_nets_parse(bad[i], &nets, &n, &e), -1);
		assert_non_null(strstr(e.msg, "is not an address"));
	}
}

static void test_client(void **state)
{
	(void)state;
	struct httpreq_net *nets;
	size_t n;
	struct err e;
	assert_int_equal(httpreq_nets_parse("127.0.0.1 10.0.0.0/8", &nets, &n, &e), 0);
	unsigned char lo[16], other[16], got[16], want[16];
	addr("127.0.0.1", lo);
	addr("192.0.2.9", other);
	const char *v[] = {"198.51.100.1, 203.0.113.7", "10.1.1.1"};
	size_t len[] = {strlen(v[0]), strlen(v[1])};
	/* from a trusted proxy: the rightmost hop not trusted */
	assert_true(httpreq_client(lo, v, len, 2, nets, n, got));
	addr("203.0.113.7", want);
	assert_memory_equal(got, want, 16);
	/* from anyone else: the peer */
	assert_false(httpreq_client(other, v, len, 2, nets, n, got));
	assert_memory_equal(got, other, 16);
	/* a hop that is not an address stops the walk at the last believed */
	const char *junk[] = {"203.0.113.7, junk, 10.2.2.2"};
	size_t jlen[] = {strlen(junk[0])};
	assert_true(httpreq_client(lo, junk, jlen, 1, nets, n, got));
	addr("10.2.2.2", want);
	assert_memory_equal(got, want, 16);
	/* all trusted: the leftmost */
	const char *all[] = {"10.0.0.5 , 127.0.0.1,,"};
	size_t alen[] = {strlen(all[0])};
	assert_true(httpreq_client(lo, all, alen, 1, nets, n, got));
	addr("10.0.0.5", want);
	assert_memory_equal(got, want, 16);
	/* bracketed IPv6 */
	const char *v6[] = {"[2001:db8::1]"};
	size_t v6len[] = {strlen(v6[0])};
	assert_true(httpreq_client(lo, v6, v6len, 1, nets, n, got));
	addr("2001:db8::1", want);
	assert_memory_equal(got, want, 16);
	free(nets);
}

static void test_form(void **state)
{
	(void)state;
	struct httpreq_form f;
	struct err e;
	const char body[] =
	    "email=a%40b.example&name=%E5%BC%A0+%E4%B8%89&list=a&list=b&empty=&flag";
	assert_int_equal(httpreq_form_parse(body, strlen(body), &f, &e), 0);
	assert_string_equal(httpreq_form_get(&f, "email"), "a@b.example");
	assert_string_equal(httpreq_form_get(&f, "name"), "张 三");
	assert_int_equal(httpreq_form_count(&f, "list"), 2);
	assert_string_equal(httpreq_form_get(&f, "empty"), "");
	assert_string_equal(httpreq_form_get(&f, "flag"), "");
	assert_null(httpreq_form_get(&f, "nope"));
	httpreq_form_free(&f);
	/* a CR LF is decoded, and left to the caller to refuse */
	assert_int_equal(httpreq_form_parse("name=a%0D%0Ab", 13, &f, &e), 0);
	assert_string_equal(httpreq_form_get(&f, "name"), "a\r\nb");
	httpreq_form_free(&f);
	const char *bad[] = {"a=%", "a=%4", "a=%zz", "a=%00", "a=%ff", "%c3=1", "a=%C3%28"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		assert_int_equal(httpreq_form_parse(bad[i], strlen(bad[i]), &f, &e), -1);
		assert_int_equal(f.n, 0);
	}
	char many[HTTPREQ_FIELDS_MAX * 4 + 8] = "";
	for (int i = 0; i <= HTTPREQ_FIELDS_MAX; i++)
		memcpy(many + 4 * i, "a=1&", 5);
	assert_int_equal(httpreq_form_parse(many, strlen(many), &f, &e), -1);
	assert_int_equal(httpreq_form_parse("", 0, &f, &e), 0);
	assert_int_equal(f.n, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_judge_framing), cmocka_unit_test(test_judge_sizes),
	    cmocka_unit_test(test_path_decode),   cmocka_unit_test(test_nets),
	    cmocka_unit_test(test_client),        cmocka_unit_test(test_form),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
