/*
 * Tests for the SMTP reply rules of lib/transport.c: which line of a
 * multiline reply is kept, what is read out of a reply line (code, RFC 3463
 * status, queue id) when it has no enhanced code or holds control bytes or
 * invalid UTF-8, and the outcome of a transaction for every row of
 * docs/design.md's classification table, stage by stage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "transport.h"
#include "utf8.h"

static struct send_result parsed(const char *line)
{
	struct send_result r;
	memset(&r, 0x5a, sizeof r); /* every field must be written */
	r.reply[sizeof r.reply - 1] = '\0';
	struct smtp_txn t = {.stage = SMTP_STAGE_DATA, .end = SMTP_END_OK, .last = line};
	transport_classify(&t, &r);
	return r;
}

static void test_reply_parts(void **state)
{
	(void)state;
	struct send_result r = parsed("250 2.0.0 Ok: queued as 4AB12C3D");
	assert_int_equal(r.code, 250);
	assert_string_equal(r.status, "2.0.0");
	assert_string_equal(r.queue_id, "4AB12C3D");
	assert_string_equal(r.reply, "250 2.0.0 Ok: queued as 4AB12C3D");

	/* the queue id ends at the first space or punctuation after it */
	r = parsed("250 OK id=1 (queued as 0F1E2D3C, mx.example)");
	assert_string_equal(r.queue_id, "0F1E2D3C");
	assert_string_equal(r.status, "");
	r = parsed("250 2.6.0 <m@x> [InternalId=1] Queued mail for delivery");
	assert_string_equal(r.queue_id, "");

	/* no enhanced status code (RFC 821 servers, qmail, many appliances) */
	r = parsed("550 No such user here");
	assert_int_equal(r.code, 550);
	assert_string_equal(r.status, "");
	r = parsed("554 5000 messages a day is the limit");
	assert_string_equal(r.status, ""); /* a number after the code is no status */
	r = parsed("421");
	assert_int_equal(r.code, 421);
	assert_string_equal(r.status, "");

	/* a continuation line has its code and status too */
	r = parsed("550-5.1.1 The email account that you tried to reach does not exist.");
	assert_int_equal(r.code, 550);
	assert_string_equal(r.status, "5.1.1");

	/* not a reply line at all: no code, the text is kept for people */
	r = parsed("connection closed");
	assert_int_equal(r.code, 0);
	assert_string_equal(r.status, "");
	r = parsed("25 short");
	assert_int_equal(r.code, 0);
	r = parsed("");
	assert_int_equal(r.code, 0);
	assert_string_equal(r.reply, "");
}

static void test_control_bytes_and_bad_utf8_never_reach_the_ledger(void **state)
{
	(void)state;
	/* The reply is the server's text: it goes into the ledger, the logs and
	 * matrixctl's tables and JSON, so it must be one clean line. */
	struct send_result r = parsed("550 5.1.1 \x1b[31mno\x1b[0m such\x7f user\rX-Evil: 1\x01");
	assert_int_equal(r.code, 550);
	assert_string_equal(r.status, "5.1.1");
	for (const char *p = r.reply; *p; p++)
		assert_true((unsigned char)*p >= 0x20 && *p != 0x7f);
	assert_non_null(strstr(r.reply, "no"));
	assert_null(strchr(r.reply, '\r'));
	/* invalid UTF-8 is replaced, valid UTF-8 kept */
	r = parsed("550 5.1.1 \xff\xfe bad, 邮箱不存在");
	assert_true(utf8_valid(r.reply, strlen(r.reply), NULL));
	assert_non_null(strstr(r.reply, "邮箱不存在"));
	assert_non_null(strstr(r.reply, "\xef\xbf\xbd")); /* U+FFFD */
	/* a C1 control (U+009B is CSI on some terminals) goes too */
	r = parsed("451 4.3.0 \xc2\x9b"
	           "31m later");
	assert_null(strstr(r.reply, "\xc2\x9b"));
	/* a reply longer than the field is cut, still valid UTF-8 */
	char longline[2000];
	size_t n = (size_t)snprintf(longline, sizeof longline, "550 5.1.1 ");
	while (n + 3 < sizeof longline - 1) {
		memcpy(longline + n, "邮", 3);
		n += 3;
	}
	longline[n] = '\0';
	r = parsed(longline);
	assert_true(strlen(r.reply) < sizeof r.reply);
	assert_true(utf8_valid(r.reply, strlen(r.reply), NULL));
	assert_int_equal(r.code, 550);
}

/* Feeds lines as libcurl hands them to the header callback. */
static void feed(char *last, size_t cap, const char *const *lines)
{
	for (; *lines; lines++)
		transport_keep_reply(last, cap, *lines, strlen(*lines));
}

static void test_multiline_replies_keep_their_last_line(void **state)
{
	(void)state;
	char last[512] = "";
	static const char *const ehlo[] = {"220 mx.example ESMTP\r\n", "250-mx.example\r\n",
	                                   "250-PIPELINING\r\n",       "250-SIZE 10240000\r\n",
	                                   "250 SMTPUTF8\r\n",         NULL};
	feed(last, sizeof last, ehlo);
	assert_string_equal(last, "250 SMTPUTF8");
	/* Gmail's multiline refusal: the closing line is the one kept */
	static const char *const gmail[] = {
	    "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n",
	    "550-5.1.1 double-checking the recipient's email address for typos or\r\n",
	    "550 5.1.1 https://support.google.com/mail/?p=NoSuchUser x1si123 - gsmtp\r\n", NULL};
	feed(last, sizeof last, gmail);
	assert_string_equal(
	    last, "550 5.1.1 https://support.google.com/mail/?p=NoSuchUser x1si123 - gsmtp");
	struct send_result r = parsed(last);
	assert_int_equal(r.code, 550);
	assert_string_equal(r.status, "5.1.1");

	/* libcurl's QUIT after a failure: its 221 is no answer about the
	 * message and leaves the refusal in place */
	static const char *const quit[] = {"221 2.0.0 Bye\r\n", NULL};
	feed(last, sizeof last, quit);
	assert_string_equal(
	    last, "550 5.1.1 https://support.google.com/mail/?p=NoSuchUser x1si123 - gsmtp");
	assert_false(transport_keep_reply(last, sizeof last, "221-closing\r\n", 13));
	/* ... but a 2210 or a 221 inside another reply's text is no QUIT reply */
	assert_true(transport_keep_reply(last, sizeof last, "2210\r\n", 6));
	assert_string_equal(last, "2210");

	/* bare LF, no line end, a line longer than the buffer */
	transport_keep_reply(last, sizeof last, "250 Ok\n", 7);
	assert_string_equal(last, "250 Ok");
	transport_keep_reply(last, sizeof last, "354 go ahead", 12);
	assert_string_equal(last, "354 go ahead");
	char tiny[8];
	transport_keep_reply(tiny, sizeof tiny, "550 5.1.1 no such user\r\n", 24);
	assert_string_equal(tiny, "550 5.1");
	/* a line is taken by its length, not up to a NUL: the NUL ends it for
	 * the parser, which never reads past it */
	transport_keep_reply(last, sizeof last, "550 5.1.1 a\0b\r\n", 15);
	r = parsed(last);
	assert_string_equal(r.reply, "550 5.1.1 a");
}

struct row {
	const char *what;
	enum smtp_stage stage;
	enum smtp_end end;
	bool body_sent;
	const char *last;
	enum send_outcome outcome;
	bool relay_level, bounce;
	int code; /* what the ledger records */
};

static void test_classification_table(void **state)
{
	(void)state;
	const enum smtp_stage S = SMTP_STAGE_SESSION, M = SMTP_STAGE_MAIL, R = SMTP_STAGE_RCPT,
	                      D = SMTP_STAGE_DATA;
	const enum smtp_end OK = SMTP_END_OK, RELAY = SMTP_END_RELAY, FAIL = SMTP_END_FAILED;
	static const struct row rows[] = {
	    /* 2xx to the final dot: sent */
	    {"250 to the dot", D, OK, true, "250 2.0.0 Ok: queued as Q1", SEND_OK, false, false,
	     250},
	    {"no 2xx though curl is done", D, OK, true, "", SEND_TEMP, false, false, 0},
	    /* 5xx to RCPT TO (but 5.7.x): failed, a bounce */
	    {"550 5.1.1 to RCPT", R, FAIL, false, "550 5.1.1 no such user", SEND_PERM, false, true,
	     550},
	    {"553 without enhanced code to RCPT", R, FAIL, false, "553 mailbox name not allowed",
	     SEND_PERM, false, true, 553},
	    {"551 5.1.6 moved", R, FAIL, false, "551 5.1.6 user has moved", SEND_PERM, false, true,
	     551},
	    {"554 5.7.1 relaying denied to RCPT", R, FAIL, false, "554 5.7.1 Relay access denied",
	     SEND_TEMP, true, false, 554},
	    {"550 5.7.26 unauthenticated", R, FAIL, false, "550 5.7.26 DMARC policy", SEND_TEMP,
	     true, false, 550},
	    /* 5xx after DATA: failed, no bounce */
	    {"554 5.6.0 to DATA", D, FAIL, false, "554 5.6.0 content rejected", SEND_PERM, false,
	     false, 554},
	    {"552 5.3.4 to the dot", D, FAIL, true, "552 5.3.4 message too big", SEND_PERM, false,
	     false, 552},
	    {"550 5.7.1 spam to the dot", D, FAIL, true, "550 5.7.1 looks like spam", SEND_PERM,
	     false, false, 550},
	    /* 4xx to RCPT TO or after DATA: deferred, the attempt counts */
	    {"450 4.2.0 greylisted at RCPT", R, FAIL, false, "450 4.2.0 greylisted", SEND_TEMP,
	     false, false, 450},
	    {"452 4.2.2 over quota at RCPT", R, FAIL, false, "452 4.2.2 mailbox full", SEND_TEMP,
	     false, false, 452},
	    {"451 4.3.0 to the dot", D, FAIL, true, "451 4.3.0 try later", SEND_TEMP, false, false,
	     451},
	    /* no reply after the whole message went out: deferred, counts */
	    {"timeout after the dot", D, FAIL, true, "", SEND_TEMP, false, false, 0},
	    {"drop after the dot, 354 left", D, FAIL, true, "354 go ahead", SEND_TEMP, false, false,
	     0},
	    /* the relay's trouble: deferred, not counted */
	    {"connect refused", S, RELAY, false, "", SEND_TEMP, true, false, 0},
	    {"AUTH refused (curl: login denied)", S, RELAY, false, "535 5.7.8 bad credentials",
	     SEND_TEMP, true, false, 535},
	    {"421 at the greeting", S, FAIL, false, "421 4.3.2 too busy", SEND_TEMP, true, false,
	     421},
	    {"421 to RCPT", R, FAIL, false, "421 4.4.2 closing", SEND_TEMP, true, false, 421},
	    {"421 to the dot", D, FAIL, true, "421 4.4.2 shutting down", SEND_TEMP, true, false,
	     421},
	    {"554 at the greeting", S, FAIL, false, "554 no SMTP service here", SEND_TEMP, true,
	     false, 554},
	    {"502 to EHLO", S, FAIL, false, "502 5.5.2 command not recognized", SEND_TEMP, true,
	     false, 502},
	    {"450 at the session", S, FAIL, false, "450 4.7.1 client host rejected", SEND_TEMP,
	     true, false, 450},
	    {"553 to MAIL FROM", M, FAIL, false, "553 5.7.1 sender rejected", SEND_TEMP, true,
	     false, 553},
	    {"451 to MAIL FROM", M, FAIL, false, "451 4.3.0 try later", SEND_TEMP, true, false,
	     451},
	    {"a previous 250 after a drop", S, FAIL, false, "250 2.0.0 Ok: queued as OLD",
	     SEND_TEMP, true, false, 0},
	    {"drop in the middle of the body", D, FAIL, false, "354 go ahead", SEND_TEMP, true,
	     false, 0},
	    {"timeout waiting for RCPT's reply", R, FAIL, false, "", SEND_TEMP, true, false, 0},
	};
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		const struct row *w = &rows[i];
		struct smtp_txn t = {.stage = w->stage,
		                     .end = w->end,
		                     .body_sent = w->body_sent,
		                     .last = w->last,
		                     .error = "Failure when receiving data from the peer"};
		struct send_result r;
		memset(&r, 0x5a, sizeof r);
		transport_classify(&t, &r);
		if (r.outcome != w->outcome || r.relay_level != w->relay_level ||
		    r.bounce != w->bounce || r.code != w->code)
			fail_msg("%s: got outcome %d relay %d bounce %d code %d, want %d %d %d %d",
			         w->what, r.outcome, r.relay_level, r.bounce, r.code, w->outcome,
			         w->relay_level, w->bounce, w->code);
		/* a failure without a refusal to show says what the client saw */
		if (w->end != SMTP_END_OK && w->code == 0) {
			assert_string_equal(r.reply, t.error);
			assert_string_equal(r.status, "");
			assert_string_equal(r.queue_id, "");
		}
	}
}

static void test_no_smtputf8_fails_without_a_bounce(void **state)
{
	(void)state;
	/* A UTF-8 local part behind a relay without SMTPUTF8: the relay's
	 * abilities say nothing about the mailbox (no bounce), and ASCII
	 * readers behind the same relay keep getting mail (not relay-level). */
	struct smtp_txn t = {.stage = SMTP_STAGE_MAIL,
	                     .end = SMTP_END_FAILED,
	                     .no_utf8 = true,
	                     .last = "250 2.1.0 Ok",
	                     .error = "Failed writing received data to disk/application"};
	struct send_result r;
	memset(&r, 0x5a, sizeof r);
	transport_classify(&t, &r);
	assert_int_equal(r.outcome, SEND_PERM);
	assert_false(r.bounce);
	assert_false(r.relay_level);
	assert_int_equal(r.code, 0);
	assert_string_equal(r.status, "");
	assert_non_null(strstr(r.reply, "SMTPUTF8"));
	assert_non_null(strstr(r.reply, "matrixctl retry"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reply_parts),
	    cmocka_unit_test(test_control_bytes_and_bad_utf8_never_reach_the_ledger),
	    cmocka_unit_test(test_multiline_replies_keep_their_last_line),
	    cmocka_unit_test(test_classification_table),
	    cmocka_unit_test(test_no_smtputf8_fails_without_a_bounce),
	};
	return cmocka_run_group_tests_name("transport", tests, NULL, NULL);
}
