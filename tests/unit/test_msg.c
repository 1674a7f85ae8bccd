/* MIME composition: the shared head + per-recipient tail decode to the
 * whole body, headers are clean, bad input is refused. Parsed back with
 * libetpan's own parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <libetpan/libetpan.h>

#include "buf.h"
#include "msg.h"

/* Decoded body of the part with content subtype sub ("plain", "html"). */
static char *decoded(const char *raw, size_t len, const char *sub)
{
	size_t idx = 0;
	struct mailmime *m = NULL;
	assert_int_equal(mailmime_parse(raw, len, &idx, &m), MAILIMF_NO_ERROR);
	struct mailmime *alt = m->mm_data.mm_message.mm_msg_mime;
	assert_int_equal(alt->mm_type, MAILMIME_MULTIPLE);
	char *res = NULL;
	for (clistiter *it = clist_begin(alt->mm_data.mm_multipart.mm_mp_list); it;
	     it = clist_next(it)) {
		struct mailmime *p = clist_content(it);
		if (strcmp(p->mm_content_type->ct_subtype, sub) != 0)
			continue;
		struct mailmime_data *d = p->mm_data.mm_single;
		int enc = p->mm_mime_fields ? MAILMIME_MECHANISM_8BIT : MAILMIME_MECHANISM_8BIT;
		for (clistiter *f = clist_begin(p->mm_mime_fields->fld_list); f;
		     f = clist_next(f)) {
			struct mailmime_field *fl = clist_content(f);
			if (fl->fld_type == MAILMIME_FIELD_TRANSFER_ENCODING)
				enc = fl->fld_data.fld_encoding->enc_type;
		}
		size_t at = 0, outlen = 0;
		char *out = NULL;
		assert_int_equal(mailmime_part_parse(d->dt_data.dt_text.dt_data,
		                                     d->dt_data.dt_text.dt_length, &at, enc, &out,
		                                     &outlen),
		                 MAILIMF_NO_ERROR);
		res = strndup(out, outlen);
		mmap_string_unref(out);
	}
	mailmime_free(m);
	assert_non_null(res);
	return res;
}

static void test_head_tail_roundtrip(void **state)
{
	(void)state;
	struct buf html, text;
	buf_init(&html, BUF_NOLIMIT);
	buf_init(&text, BUF_NOLIMIT);
	for (int i = 0; i < 500; i++) {
		buf_printf(&html, "<p>段落 %d：中文内容 & more</p>\n", i);
		buf_printf(&text, "line %d: plain ascii text so that QP is chosen\n", i);
	}
	buf_adds(&html, "<a href=\"" MSG_PH_UNSUBSCRIBE "\">退订</a> " MSG_PH_EMAIL "\n");
	buf_adds(&html, "<a href=\"" MSG_PH_PREFS "\">设置</a>\n");
	buf_adds(&text, "unsubscribe: " MSG_PH_UNSUBSCRIBE "\nsent to " MSG_PH_EMAIL "\n");
	buf_adds(&text, "settings: " MSG_PH_PREFS "\n");
	struct msg_head h = {.subject = "标题 Subject",
	                     .from = "Matrix 矩阵 <m@example.org>",
	                     .list_name = "matrix",
	                     .list_title = "Matrix",
	                     .list_archive = "https://n.example/",
	                     .language = "zh-CN",
	                     .bulk = true};
	struct msg_prep p;
	struct err e;
	assert_int_equal(msg_prepare(&p, &h, buf_str(&html), buf_str(&text), &e), 0);
	assert_true(p.html.head_len > 1000); /* most of it encoded once */
	assert_int_equal(p.text.mechanism, MAILMIME_MECHANISM_QUOTED_PRINTABLE);
	assert_int_equal(p.html.mechanism, MAILMIME_MECHANISM_BASE64);
	const char *who[] = {"a@example.org", "b.c+tag@example.org"};
	for (int k = 0; k < 2; k++) {
		struct buf m;
		buf_init(&m, BUF_NOLIMIT);
		char url[100], prefs[100];
		snprintf(url, sizeof url, "https://n.example/u/%d-1-abc&x", k);
		snprintf(prefs, sizeof prefs, "https://n.example/p/%d-def&y", k);
		struct msg_rcpt r = {.email = who[k],
		                     .name = "读者\r\nBcc: evil@x",
		                     .message_id = "m.1.2.3",
		                     .unsub_url = url,
		                     .unsub_mailto = "unsubscribe+1@example.org",
		                     .prefs_url = prefs,
		                     .date = 1700000000};
		assert_int_equal(msg_build(&p, &r, &m, &e), 0);
		char *hb = decoded(m.data, m.len, "html");
		char *tb = decoded(m.data, m.len, "plain");
		char want[200];
		snprintf(want, sizeof want,
		         "<a href=\"https://n.example/u/%d-1-abc&amp;x\">退订</a> %s\n", k, who[k]);
		assert_non_null(strstr(hb, want));
		assert_non_null(strstr(hb, "<p>段落 0：中文内容 & more</p>\n<p>段落 1："));
		assert_non_null(strstr(hb, "<p>段落 499："));
		/* the preference link, escaped in HTML; never in a header */
		snprintf(want, sizeof want, "<a href=\"https://n.example/p/%d-def&amp;y\">设置</a>",
		         k);
		assert_non_null(strstr(hb, want));
		assert_int_equal(strlen(hb), html.len - 9 + strlen(url) + 4 + strlen(who[k]) +
		                                 strlen(prefs) + 4);
		snprintf(want, sizeof want, "unsubscribe: %s\r\nsent to %s\r\nsettings: %s", url,
		         who[k], prefs);
		assert_non_null(strstr(tb, want));
		const char *hend = strstr(m.data, "\r\n\r\n");
		assert_null(memmem(m.data, (size_t)(hend - m.data), "/p/", 3));
		assert_null(strchr(hb, '\x01'));
		assert_null(strchr(tb, '\x01'));
		/* headers: no raw CR/LF from the name, no 8-bit */
		const char *end = strstr(m.data, "\r\n\r\n");
		for (const char *q = m.data; q < end; q++)
			assert_true((unsigned char)*q < 0x80);
		assert_null(strstr(m.data, "\r\nBcc:"));
		assert_non_null(strstr(m.data, "Message-ID: <m.1.2.3@example.org>"));
		assert_non_null(
		    strstr(m.data, "List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
		assert_non_null(strstr(m.data, "List-Id: Matrix <matrix.example.org>"));
		free(hb);
		free(tb);
		buf_free(&m);
	}
	msg_prep_free(&p);
	buf_free(&html);
	buf_free(&text);
}

static void test_refuses_bad_input(void **state)
{
	(void)state;
	struct msg_head h = {.subject = "s",
	                     .from = "M <m@example.org>",
	                     .list_name = "matrix",
	                     .list_title = "Matrix",
	                     .list_archive = "",
	                     .language = "en",
	                     .bulk = true};
	struct msg_prep p;
	struct err e;
	assert_int_equal(msg_prepare(&p, &h, "<p>x</p>", "x", &e), 0);
	struct buf m;
	buf_init(&m, BUF_NOLIMIT);
	struct msg_rcpt r = {.email = "a@example.org\r\nBcc: x@y",
	                     .name = "",
	                     .message_id = "id",
	                     .unsub_url = "https://u"};
	assert_int_equal(msg_build(&p, &r, &m, &e), -1);
	r.email = "a@example.org";
	r.message_id = "id\r\nX-Injected: 1";
	assert_int_equal(msg_build(&p, &r, &m, &e), -1);
	assert_int_equal(m.len, 0);
	msg_prep_free(&p);
	h.from = "no address here";
	assert_int_equal(msg_prepare(&p, &h, "x", "x", &e), -1);
	buf_free(&m);
}

static void test_boundaries_differ(void **state)
{
	(void)state;
	msg_init();
	struct msg_head h = {.subject = "s", .from = "M <m@example.org>", .language = "en"};
	struct msg_prep p;
	struct err e;
	assert_int_equal(msg_prepare(&p, &h, "<p>x</p>", "x", &e), 0);
	struct buf a, b;
	buf_init(&a, BUF_NOLIMIT);
	buf_init(&b, BUF_NOLIMIT);
	struct msg_rcpt r = {.email = "a@example.org", .name = "", .message_id = "id"};
	assert_int_equal(msg_build(&p, &r, &a, &e), 0);
	assert_int_equal(msg_build(&p, &r, &b, &e), 0);
	const char *ba = strstr(a.data, "boundary="), *bb = strstr(b.data, "boundary=");
	assert_non_null(ba);
	assert_true(strncmp(ba, bb, 40) != 0);
	assert_null(strstr(a.data, "List-Unsubscribe"));
	buf_free(&a);
	buf_free(&b);
	msg_prep_free(&p);
}

/* A half-hour zone keeps its minutes (libetpan's own date helper wrote
 * +0500 for +05:30). */
static void test_date_zone_minutes(void **state)
{
	(void)state;
	setenv("TZ", "IST-5:30", 1);
	tzset();
	struct msg_head h = {.subject = "s", .from = "M <m@example.org>", .language = "en"};
	struct msg_prep p;
	struct err e;
	assert_int_equal(msg_prepare(&p, &h, "<p>x</p>", "x", &e), 0);
	struct buf m;
	buf_init(&m, BUF_NOLIMIT);
	struct msg_rcpt r = {
	    .email = "a@example.org", .name = "", .message_id = "id", .date = 1700000000};
	assert_int_equal(msg_build(&p, &r, &m, &e), 0);
	assert_non_null(strstr(m.data, "Date: Wed, 15 Nov 2023 03:43:20 +0530\r\n"));
	buf_free(&m);
	msg_prep_free(&p);
	unsetenv("TZ");
	tzset();
}

/* The value of header name in raw, unfolded and RFC 2047-decoded. */
static char *header_text(const char *raw, const char *name)
{
	char want[64];
	snprintf(want, sizeof want, "\r\n%s: ", name);
	const char *p = strstr(raw, want);
	assert_non_null(p);
	p += strlen(want);
	struct buf v;
	buf_init(&v, BUF_NOLIMIT);
	for (; *p && !(p[0] == '\r' && p[1] == '\n' && p[2] != ' ' && p[2] != '\t'); p++)
		if (*p != '\r' && *p != '\n')
			buf_addc(&v, *p);
	size_t idx = 0;
	char *out = NULL;
	assert_int_equal(
	    mailmime_encoded_phrase_parse("utf-8", buf_str(&v), v.len, &idx, "utf-8", &out),
	    MAILIMF_NO_ERROR);
	buf_free(&v);
	return out;
}

/* Display names lose their bidi controls; domains go out as A-labels. */
static void test_names_and_idn(void **state)
{
	(void)state;
	struct msg_head h = {.subject = "s",
	                     .from = "Ma\xe2\x80\xaetrix <m@例子.中国>",
	                     .list_name = "matrix",
	                     .list_title = "Matrix",
	                     .list_archive = "",
	                     .language = "en",
	                     .bulk = true};
	struct msg_prep p;
	struct err e;
	assert_int_equal(msg_prepare(&p, &h, "<p>" MSG_PH_NAME "</p>", "to " MSG_PH_NAME, &e), 0);
	struct buf m;
	buf_init(&m, BUF_NOLIMIT);
	struct msg_rcpt r = {.email = "u@例子.中国",
	                     .name = "\xe2\x80\xae"
	                             "gro.live@eve a\xe2\x81\xa6"
	                             "b\xe2\x81\xa9"
	                             "c",
	                     .message_id = "id",
	                     .date = 1700000000};
	assert_int_equal(msg_build(&p, &r, &m, &e), 0);
	char *to = header_text(m.data, "To"), *from = header_text(m.data, "From");
	assert_non_null(strstr(to, "gro.live@eve abc"));
	assert_non_null(strstr(to, "<u@xn--fsqu00a.xn--fiqs8s>"));
	assert_non_null(strstr(from, "Matrix <m@xn--fsqu00a.xn--fiqs8s>"));
	assert_null(strstr(to, "\xe2\x80\xae"));
	assert_null(strstr(from, "\xe2\x80\xae"));
	assert_non_null(strstr(m.data, "Message-ID: <id@xn--fsqu00a.xn--fiqs8s>"));
	char *hb = decoded(m.data, m.len, "html"), *tb = decoded(m.data, m.len, "plain");
	assert_non_null(strstr(hb, "<p>gro.live@eve abc</p>"));
	assert_non_null(strstr(tb, "to gro.live@eve abc"));
	free(to);
	free(from);
	free(hb);
	free(tb);
	buf_free(&m);
	msg_prep_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_head_tail_roundtrip), cmocka_unit_test(test_refuses_bad_input),
	    cmocka_unit_test(test_boundaries_differ),   cmocka_unit_test(test_date_zone_minutes),
	    cmocka_unit_test(test_names_and_idn),
	};
	return cmocka_run_group_tests_name("msg", tests, NULL, NULL);
}
