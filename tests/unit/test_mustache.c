/*
 * Unit tests of lib/mustache. First every test of the Mustache specification
 * files copied in tests/data/mustache-spec (the six core modules and
 * ~inheritance; ~lambdas needs a host language and ~dynamic-names is not
 * implemented), one cmocka test per file, each failing case printed with its
 * template, expected and actual output. Then matrixd's own choices and limits:
 * error messages with line numbers, escaping of all five HTML characters, ""
 * being falsey, numbers, runaway recursion, size caps, large inputs rendered
 * in linear time, and random hostile templates under the sanitizers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "buf.h"
#include "err.h"
#include "mustache.h"
#include "xmalloc.h"

#define SPEC_DIR "tests/data/mustache-spec/"

/* --- helpers -------------------------------------------------------------------- */

/* Partials from a JSON object name -> template, as the spec files give them. */
static const char *json_partial(void *ctx, const char *name)
{
	struct json_object *p;
	if (!ctx || !json_object_object_get_ex(ctx, name, &p))
		return NULL;
	return json_object_get_string(p);
}

static void print_escaped(const char *label, const char *s)
{
	fprintf(stderr, "    %-9s \"", label);
	for (; *s; s++) {
		switch (*s) {
		case '\n':
			fputs("\\n", stderr);
			break;
		case '\r':
			fputs("\\r", stderr);
			break;
		case '\t':
			fputs("\\t", stderr);
			break;
		case '"':
			fputs("\\\"", stderr);
			break;
		case '\\':
			fputs("\\\\", stderr);
			break;
		default:
			fputc(*s, stderr);
			break;
		}
	}
	fputs("\"\n", stderr);
}

/* Renders tmpl with data given as JSON text and partials as a JSON object text
 * (either may be NULL); returns the output, or NULL with *err set. */
static char *render(const char *tmpl, const char *data, const char *partials, bool html,
                    struct err *err)
{
	struct json_object *d = data ? json_tokener_parse(data) : NULL;
	struct json_object *p = partials ? json_tokener_parse(partials) : NULL;
	struct mustache_opts o = {"t.mustache", json_partial, p, html};
	struct buf out;
	char *res = NULL;

	if (data)
		assert_non_null(d);
	if (partials)
		assert_non_null(p);
	buf_init(&out, BUF_NOLIMIT);
	err_clear(err);
	if (mustache_render(tmpl, d, &o, &out, err) == 0)
		res = buf_detach(&out);
	else
		assert_true(err->msg[0] != '\0');
	buf_free(&out);
	json_object_put(d);
	json_object_put(p);
	return res;
}

static void assert_renders(const char *tmpl, const char *data, const char *partials, bool html,
                           const char *expected)
{
	struct err err;
	char *got = render(tmpl, data, partials, html, &err);
	if (!got)
		fail_msg("%s: unexpected error: %s", tmpl, err.msg);
	bool same = strcmp(got, expected) == 0;
	if (!same) {
		print_escaped("template", tmpl);
		print_escaped("expected", expected);
		print_escaped("got", got);
	}
	free(got);
	assert_true(same);
}

static void assert_fails(const char *tmpl, const char *partials, const char *msg)
{
	struct err err;
	char *got = render(tmpl, "{}", partials, true, &err);
	if (got) {
		print_escaped("template", tmpl);
		print_escaped("got", got);
		free(got);
		fail_msg("rendered where an error was expected");
	}
	assert_int_equal(err.kind, ERR_INPUT);
	assert_string_equal(err.msg, msg);
	/* mustache_check sees the same syntax errors, except inside partials */
	if (!partials) {
		err_clear(&err);
		assert_int_equal(mustache_check(tmpl, "t.mustache", &err), -1);
		assert_string_equal(err.msg, msg);
	}
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- the specification ------------------------------------------------------------ */

static void run_spec(void **state)
{
	const char *file = *state;
	char path[256];
	snprintf(path, sizeof path, SPEC_DIR "%s", file);
	struct json_object *root = json_object_from_file(path), *tests;
	if (!root)
		fail_msg("cannot read %s: %s", path, json_util_get_last_err());
	assert_true(json_object_object_get_ex(root, "tests", &tests));
	size_t n = json_object_array_length(tests), failed = 0;
	assert_true(n > 0);

	for (size_t i = 0; i < n; i++) {
		struct json_object *t = json_object_array_get_idx(tests, i);
		struct json_object *name, *tmpl, *expected, *data = NULL, *partials = NULL;
		assert_true(json_object_object_get_ex(t, "name", &name));
		assert_true(json_object_object_get_ex(t, "template", &tmpl));
		assert_true(json_object_object_get_ex(t, "expected", &expected));
		json_object_object_get_ex(t, "data", &data);
		json_object_object_get_ex(t, "partials", &partials);

		struct mustache_opts o = {file, json_partial, partials, true};
		struct buf out;
		struct err err;
		buf_init(&out, BUF_NOLIMIT);
		err_clear(&err);
		int rc = mustache_render(json_object_get_string(tmpl), data, &o, &out, &err);
		if (rc != 0 || strcmp(buf_str(&out), json_object_get_string(expected)) != 0) {
			failed++;
			fprintf(stderr, "  FAIL %s: %s\n", file, json_object_get_string(name));
			print_escaped("template", json_object_get_string(tmpl));
			if (partials)
				fprintf(stderr, "    partials  %s\n",
				        json_object_to_json_string(partials));
			print_escaped("expected", json_object_get_string(expected));
			if (rc != 0)
				fprintf(stderr, "    error     %s\n", err.msg);
			else
				print_escaped("got", buf_str(&out));
		}
		buf_free(&out);
	}
	printf("  %-20s %zu/%zu spec tests passed\n", file, n - failed, n);
	json_object_put(root);
	assert_int_equal(failed, 0);
}

/* --- syntax errors ---------------------------------------------------------------- */

static void test_errors(void **state)
{
	(void)state;
	assert_fails("line 1\nline 2 {{name", NULL,
	             "t.mustache:2: tag opened with \"{{\" is never closed; end it with \"}}\"");
	assert_fails("{{{name}}", NULL,
	             "t.mustache:1: tag opened with \"{{\" is never closed; end it with \"}}}\"");
	assert_fails("a\n{{#s}}\nb\n", NULL,
	             "t.mustache:2: section \"s\" is never closed; add {{/s}}");
	assert_fails("{{#a}}\n{{#b}}\n{{/a}}\n{{/b}}\n", NULL,
	             "t.mustache:3: closing tag \"a\" does not match \"b\" opened at line 2; "
	             "close sections in the reverse order of opening");
	assert_fails("x\n\n{{/a}}", NULL,
	             "t.mustache:3: closing tag \"a\" has no opening section; remove it");
	/* lines are counted across multi-line tags and after a delimiter change */
	assert_fails("{{! one\ntwo }}\n{{=<% %>=}}\n<%#x%>\n{{/x}}", NULL,
	             "t.mustache:4: section \"x\" is never closed; add {{/x}}");
	assert_fails("a\n{{=<% %>=}}\n<%name", NULL,
	             "t.mustache:3: tag opened with \"<%\" is never closed; end it with \"%>\"");
	const char *baddelim = "bad set-delimiters tag; write e.g. {{=<% %>=}}: two delimiters "
	                       "without blanks or '='";
	char msg[256];
	snprintf(msg, sizeof msg, "t.mustache:2: %s", baddelim);
	assert_fails("\n{{=<%=}}", NULL, msg);
	assert_fails("\n{{=<% %> x=}}", NULL, msg);
	assert_fails("\n{{=a= b=}}", NULL, msg);
	assert_fails("{{}}", NULL,
	             "t.mustache:1: tag without a name; write a name between the delimiters");
	assert_fails("{{# }}", NULL,
	             "t.mustache:1: tag without a name; write a name between the delimiters");
	assert_fails("{{first name}}", NULL,
	             "t.mustache:1: tag name \"first name\" contains blanks; a name is one word "
	             "(dots for nested keys)");
	assert_fails("{{<p}}{{$a}}{{/p}}", NULL,
	             "t.mustache:1: closing tag \"p\" does not match \"a\" opened at line 1; "
	             "close sections in the reverse order of opening");

	/* a partial's error names the partial and where it is included */
	assert_fails("one\n{{>inner}}", "{\"inner\": \"a\\n{{#x}}\"}",
	             "t.mustache:2: inner:2: section \"x\" is never closed; add {{/x}}");

	/* no name: "template" */
	struct err err;
	err_clear(&err);
	assert_int_equal(mustache_check("{{#a}}", NULL, &err), -1);
	assert_string_equal(err.msg, "template:1: section \"a\" is never closed; add {{/a}}");
	err_clear(&err);
	assert_int_equal(mustache_check("{{#a}}\n{{/a}}", NULL, &err), 0);
	assert_int_equal(err.kind, ERR_NONE);
}

/* --- matrixd's choices --------------------------------------------------------------- */

static void test_html_escape(void **state)
{
	(void)state;
	const char *data = "{\"x\": \"a&b <i>\\\"q\\\" 'a'</i>\"}";
	assert_renders("{{x}}|{{{x}}}|{{&x}}", data, NULL, true,
	               "a&amp;b &lt;i&gt;&quot;q&quot; &#39;a&#39;&lt;/i&gt;|"
	               "a&b <i>\"q\" 'a'</i>|a&b <i>\"q\" 'a'</i>");
	/* text/plain templates: nothing is escaped */
	assert_renders("{{x}}|{{{x}}}|{{&x}}", data, NULL, false,
	               "a&b <i>\"q\" 'a'</i>|a&b <i>\"q\" 'a'</i>|a&b <i>\"q\" 'a'</i>");
	/* all five, each alone, at both ends of the string */
	assert_renders("{{a}}{{b}}{{c}}{{d}}{{e}}",
	               "{\"a\": \"&\", \"b\": \"<\", \"c\": \">\", \"d\": \"\\\"\", \"e\": \"'\"}",
	               NULL, true, "&amp;&lt;&gt;&quot;&#39;");
	/* template text is never escaped */
	assert_renders("<a href='x'>&amp;</a>", "{}", NULL, true, "<a href='x'>&amp;</a>");
}

static void test_truthiness(void **state)
{
	(void)state;
	const char *data = "{\"empty\": \"\", \"text\": \"t\", \"zero\": 0, \"obj\": {}, "
	                   "\"none\": null, \"no\": false, \"list\": []}";
	/* "" is falsey, like a missing key, null, false and [] */
	assert_renders("{{#empty}}A{{/empty}}{{^empty}}B{{/empty}}", data, NULL, true, "B");
	assert_renders("{{#none}}x{{/none}}{{#no}}x{{/no}}{{#list}}x{{/list}}{{#missing}}x"
	               "{{/missing}}",
	               data, NULL, true, "");
	/* a non-empty string, 0 and {} are truthy */
	assert_renders("{{#text}}<{{.}}>{{/text}}{{#zero}}Z{{/zero}}{{#obj}}O{{/obj}}", data, NULL,
	               true, "<t>ZO");
	/* the use it is for */
	assert_renders("<h1>{{title}}</h1>\n{{#sub}}\n<h2>{{sub}}</h2>\n{{/sub}}\n<p>",
	               "{\"title\": \"T\", \"sub\": \"\"}", NULL, true, "<h1>T</h1>\n<p>");
	/* a key holding null hides the same key of an outer context */
	assert_renders("{{#inner}}[{{x}}]{{/inner}}",
	               "{\"x\": \"outer\", \"inner\": {\"x\": null}}", NULL, true, "[]");
}

static void test_values(void **state)
{
	(void)state;
	struct json_object *d = json_object_new_object();
	json_object_object_add(d, "a", json_object_new_double(1.21));
	json_object_object_add(d, "b", json_object_new_double(0.1));
	json_object_object_add(d, "c", json_object_new_double(3.0));
	json_object_object_add(d, "d", json_object_new_double(1e300));
	json_object_object_add(d, "e", json_object_new_double(-2.5e-7));
	json_object_object_add(d, "f", json_object_new_int64(INT64_MAX));
	json_object_object_add(d, "g", json_object_new_int(-5));
	json_object_object_add(d, "h", json_object_new_boolean(1));
	struct json_object *arr = json_object_new_array();
	json_object_array_add(arr, json_object_new_int(1));
	json_object_array_add(arr, json_object_new_string("a/b"));
	json_object_object_add(d, "i", arr);

	struct mustache_opts o = {"t", NULL, NULL, true};
	struct buf out;
	struct err err;
	buf_init(&out, BUF_NOLIMIT);
	assert_int_equal(mustache_render("{{a}} {{b}} {{c}} {{d}} {{e}} {{f}} {{g}} {{h}} {{i}}", d,
	                                 &o, &out, &err),
	                 0);
	assert_string_equal(buf_str(&out), "1.21 0.1 3 1e+300 -2.5e-07 9223372036854775807 -5 "
	                                   "true [1,&quot;a/b&quot;]");
	buf_free(&out);
	json_object_put(d);

	/* a NULL root is JSON null: only "." resolves, to nothing */
	buf_init(&out, BUF_NOLIMIT);
	assert_int_equal(
	    mustache_render("[{{.}}{{x}}{{#x}}y{{/x}}{{^x}}n{{/x}}]", NULL, &o, &out, &err), 0);
	assert_string_equal(buf_str(&out), "[n]");
	buf_free(&out);

	/* output is appended to what the buffer holds */
	d = json_object_new_string("x");
	buf_init(&out, BUF_NOLIMIT);
	buf_adds(&out, "head:");
	assert_int_equal(mustache_render("{{.}}", d, &o, &out, &err), 0);
	assert_string_equal(buf_str(&out), "head:x");
	buf_free(&out);
	json_object_put(d);
}

static void test_indentation(void **state)
{
	(void)state;
	/* blank lines of an indented partial stay blank */
	assert_renders("<ul>\n  {{>items}}\n</ul>\n", "{}", "{\"items\": \"<li>\\n\\n</li>\\n\"}",
	               true, "<ul>\n  <li>\n\n  </li>\n</ul>\n");
	/* nested standalone partials add up; data newlines are not indented */
	assert_renders("a\n  {{>p}}\n", "{\"v\": \"1\\n2\"}",
	               "{\"p\": \"b\\n  {{>q}}\\n\", \"q\": \"{{v}}\\nc\\n\"}", true,
	               "a\n  b\n    1\n2\n    c\n");
	/* the examples of spec PR #131 and issue #135 (block reindentation) */
	assert_renders("{{<parent}}\n        {{$block}}\n        Hello\n        {{/block}}\n"
	               "{{/parent}}",
	               "{}", "{\"parent\": \"I say,\\n  {{$block}}\\n  Hi there!\\n  {{/block}}\"}",
	               true, "I say,\n  Hello\n");
	assert_renders("* a\n* b\n* {{<parent}}{{$block}}\n                {{! big indent }}\n"
	               "                c{{/block}}{{/parent}}\n* d\n* e",
	               "{}", "{\"parent\": \"{{$block}}x{{/block}}\"}", true,
	               "* a\n* b\n* c\n* d\n* e");
	/* a parent layout with an indented block, the intended use */
	assert_renders("{{<layout}}\n{{$body}}\n<p>{{text}}</p>\n<p>more</p>\n{{/body}}\n"
	               "{{/layout}}\n",
	               "{\"text\": \"hi\"}",
	               "{\"layout\": \"<body>\\n  <main>\\n    {{$body}}{{/body}}\\n  </main>\\n"
	               "</body>\\n\"}",
	               true,
	               "<body>\n  <main>\n    <p>hi</p>\n    <p>more</p>\n\n  </main>\n</body>\n");
}

static void test_sigil_blanks(void **state)
{
	(void)state;
	/* blanks before the sigil do not turn {{ #a }} into a variable "#a" */
	assert_renders("{{ #a }}x{{ /a }}{{ ! c }}{{ &b }}{{ ^a }}y{{ /a }}{{ > p }}",
	               "{\"a\": true, \"b\": \"<\"}", "{\"p\": \"P\"}", true, "x<P");
}

/* --- limits and hostile input ------------------------------------------------------- */

static int calls;

static const char *counting_partial(void *ctx, const char *name)
{
	calls++;
	return json_partial(ctx, name);
}

static void test_recursion(void **state)
{
	(void)state;
	struct err err;
	char *got;

	/* an unconditional self-inclusion stops at the depth limit */
	got = render("{{>self}}", "{}", "{\"self\": \"x\\n{{>self}}\"}", true, &err);
	assert_null(got);
	assert_string_equal(err.msg, "self:2: partials, parents and blocks nested more than 64 "
	                             "deep at \"self\"; a template includes itself without a "
	                             "section to stop it");
	/* the same through parents, and through a block overriding itself */
	got = render("{{<p}}{{/p}}", "{}", "{\"p\": \"{{<p}}{{/p}}\"}", true, &err);
	assert_null(got);
	assert_non_null(strstr(err.msg, "nested more than 64 deep"));
	got = render("{{<p}}{{$a}}{{$a}}x{{/a}}{{/a}}{{/p}}", "{}", "{\"p\": \"{{$a}}{{/a}}\"}",
	             true, &err);
	assert_null(got);
	assert_non_null(strstr(err.msg, "nested more than 64 deep at \"a\""));

	/* 64 levels are allowed (recursion over data that ends), 65 are not */
	struct json_object *p = json_tokener_parse("{\"node\": \".{{#n}}{{>node}}{{/n}}\"}");
	struct mustache_opts o = {"t", counting_partial, p, true};
	/* the innermost n is false: an empty object would let {{#n}} find the
	 * outer n again, which is Mustache's context walk, and loop */
	struct json_object *d = json_object_new_object();
	struct buf out;
	json_object_object_add(d, "n", json_object_new_boolean(0));
	for (int i = 1; i <= 64; i++) {
		struct json_object *up = json_object_new_object();
		json_object_object_add(up, "n", d);
		d = up;
		buf_init(&out, BUF_NOLIMIT);
		err_clear(&err);
		int rc = mustache_render("{{>node}}", d, &o, &out, &err);
		if (i < 64) {
			if (rc != 0)
				fail_msg("depth %d: %s", i, err.msg);
			assert_int_equal(out.len, i + 1);
		} else {
			assert_int_equal(rc, -1);
			assert_non_null(strstr(err.msg, "nested more than 64 deep"));
		}
		buf_free(&out);
	}
	json_object_put(d);
	json_object_put(p);

	/* each partial is fetched and parsed once per render */
	struct json_object *list = json_object_new_array();
	d = json_object_new_object();
	for (int i = 0; i < 1000; i++)
		json_object_array_add(list, json_object_new_int(i));
	json_object_object_add(d, "list", list);
	p = json_tokener_parse("{\"item\": \"<{{.}}>\"}");
	o.ctx = p;
	buf_init(&out, BUF_NOLIMIT);
	calls = 0;
	assert_int_equal(mustache_render("{{#list}}{{>item}}{{>none}}{{/list}}", d, &o, &out, &err),
	                 0);
	assert_int_equal(calls, 2);
	assert_int_equal(strncmp(buf_str(&out), "<0><1><2>", 9), 0);
	buf_free(&out);
	json_object_put(d);
	json_object_put(p);
}

static void test_limits(void **state)
{
	(void)state;
	struct err err;
	struct mustache_opts o = {"t", NULL, NULL, true};
	struct buf out;
	struct json_object *d;

	/* the output buffer's cap is an error, not a truncation */
	d = json_tokener_parse("{\"x\": \"0123456789\"}");
	buf_init(&out, 15);
	assert_int_equal(mustache_render("ab\n{{x}}{{x}}", d, &o, &out, &err), -1);
	assert_string_equal(err.msg, "t:2: output exceeds 15 bytes; shorten the data or raise "
	                             "the limit");
	assert_true(out.len <= 15);
	buf_free(&out);
	json_object_put(d);

	/* MUSTACHE_MAX_NESTING sections are fine, one more is not */
	struct buf t;
	buf_init(&t, BUF_NOLIMIT);
	for (int i = 0; i < MUSTACHE_MAX_NESTING; i++)
		buf_adds(&t, "{{#.}}");
	buf_adds(&t, "x");
	for (int i = 0; i < MUSTACHE_MAX_NESTING; i++)
		buf_adds(&t, "{{/.}}");
	d = json_object_new_boolean(1);
	buf_init(&out, BUF_NOLIMIT);
	assert_int_equal(mustache_render(buf_str(&t), d, &o, &out, &err), 0);
	assert_string_equal(buf_str(&out), "x");
	buf_free(&out);
	json_object_put(d);
	buf_reset(&t);
	for (int i = 0; i <= MUSTACHE_MAX_NESTING; i++)
		buf_printf(&t, "{{#s%d}}\n", i);
	assert_int_equal(mustache_check(buf_str(&t), "t", &err), -1);
	assert_string_equal(err.msg, "t:101: sections nested more than 100 deep; flatten the "
	                             "template");
	buf_free(&t);

	/* truncated tags at the end of the template */
	const char *cut[] = {"{{",    "{{{",           "{{=",       "{{!",  "{{#", "x{{/",
	                     "{{{x}", "{{=<% %>=}}<%", "{{=<% %>=", "{{x}", "{{$", "{{<p"};
	for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
		err_clear(&err);
		assert_int_equal(mustache_check(cut[i], "t", &err), -1);
		assert_non_null(strstr(err.msg, "is never closed"));
	}
}

static void test_large(void **state)
{
	(void)state;
	/* a 4 MiB article body interpolated once, escaped */
	size_t n = 4u << 20;
	char *body = xmalloc(n + 1);
	static const char pat[] = "<p>Tom & Jerry's \"show\"</p>\n";
	for (size_t i = 0; i < n; i++)
		body[i] = pat[i % (sizeof pat - 1)];
	body[n] = '\0';
	struct buf want;
	buf_init(&want, BUF_NOLIMIT);
	buf_adds(&want, "<article>\n  ");
	for (size_t i = 0; i < n; i++) {
		switch (body[i]) {
		case '<':
			buf_adds(&want, "&lt;");
			break;
		case '>':
			buf_adds(&want, "&gt;");
			break;
		case '&':
			buf_adds(&want, "&amp;");
			break;
		case '"':
			buf_adds(&want, "&quot;");
			break;
		case '\'':
			buf_adds(&want, "&#39;");
			break;
		default:
			buf_addc(&want, body[i]);
			break;
		}
	}
	/* the standalone {{>b}} took its line end, and b has none */
	buf_adds(&want, "</article>\n");

	struct json_object *d = json_object_new_object();
	json_object_object_add(d, "body", json_object_new_string_len(body, (int)n));
	free(body);
	struct json_object *p =
	    json_tokener_parse("{\"a\": \"<article>\\n  {{>b}}\\n</article>\\n\","
	                       "\"b\": \"{{body}}\"}");
	struct mustache_opts o = {"t", json_partial, p, true};
	struct buf out;
	struct err err;
	buf_init(&out, BUF_NOLIMIT);
	double t0 = now();
	assert_int_equal(mustache_render("{{>a}}", d, &o, &out, &err), 0);
	double t1 = now();
	assert_int_equal(out.len, want.len);
	assert_memory_equal(out.data, want.data, want.len);
	printf("  4 MiB body: %.1f ms\n", (t1 - t0) * 1e3);
	assert_true(t1 - t0 < 2.0);
	buf_free(&out);
	buf_free(&want);
	json_object_put(d);
	json_object_put(p);

	/* a 2 MiB template of 40,000 tag lines over 50,000 list items */
	struct buf tm;
	buf_init(&tm, BUF_NOLIMIT);
	for (int i = 0; i < 40000; i++)
		buf_printf(&tm, "  <b>{{t%d}}</b>\n  {{#f}}\n  yes {{! c }}\n  {{/f}}\n", i % 10);
	d = json_tokener_parse("{\"t3\": \"x\", \"f\": true}");
	buf_init(&out, BUF_NOLIMIT);
	t0 = now();
	assert_int_equal(mustache_render(buf_str(&tm), d, &o, &out, &err), 0);
	t1 = now();
	/* per line: "  <b></b>\n  yes \n", plus "x" on every tenth */
	assert_int_equal(out.len, 40000 * (10 + 7) + 4000);
	printf("  %zu KiB template: %.1f ms\n", tm.len >> 10, (t1 - t0) * 1e3);
	assert_true(t1 - t0 < 2.0);
	buf_free(&out);
	buf_free(&tm);
	json_object_put(d);

	d = json_object_new_object();
	struct json_object *list = json_object_new_array();
	for (int i = 0; i < 50000; i++) {
		struct json_object *it = json_object_new_object();
		json_object_object_add(it, "n", json_object_new_int(i));
		json_object_array_add(list, it);
	}
	json_object_object_add(d, "items", list);
	buf_init(&out, BUF_NOLIMIT);
	t0 = now();
	assert_int_equal(
	    mustache_render("{{#items}}\n  <li>{{n}}</li>\n{{/items}}\n", d, &o, &out, &err), 0);
	t1 = now();
	assert_non_null(strstr(buf_str(&out), "  <li>49999</li>\n"));
	printf("  50,000 items: %.1f ms\n", (t1 - t0) * 1e3);
	assert_true(t1 - t0 < 2.0);
	buf_free(&out);
	json_object_put(d);
}

/* Random templates from Mustache's own characters: each must render or fail
 * with a message, never crash or leak (the sanitizers watch). */
static void test_random(void **state)
{
	(void)state;
	static const char *const atoms[] = {
	    "{{",     "}}",     "{",           "}",      "#",      "^",      "/",      ">",
	    "<",      "$",      "!",           "=",      "&",      "a",      "b",      ".",
	    " ",      "\n",     "\r\n",        "{{#a}}", "{{/a}}", "{{$b}}", "{{/b}}", "{{<p}}",
	    "{{/p}}", "{{>p}}", "{{=<% %>=}}", "<%",     "%>"};
	struct json_object *d = json_tokener_parse("{\"a\": [{\"b\": \"<\"}, {\"a\": false}], "
	                                           "\"b\": \"x\\ny\"}");
	struct json_object *p = json_tokener_parse("{\"p\": \"[{{$b}}d{{/b}}\\n {{a}}]\"}");
	struct mustache_opts o = {"t", json_partial, p, true};
	unsigned seed = 12345;
	int ok = 0, bad = 0;

	for (int i = 0; i < 20000; i++) {
		char tmpl[512] = "";
		size_t len = 0;
		int natoms = (int)((seed = seed * 1103515245u + 12345u) >> 16) % 24;
		for (int k = 0; k < natoms; k++) {
			seed = seed * 1103515245u + 12345u;
			const char *a = atoms[(seed >> 16) % (sizeof atoms / sizeof atoms[0])];
			size_t al = strlen(a);
			if (len + al >= sizeof tmpl)
				break;
			memcpy(tmpl + len, a, al + 1);
			len += al;
		}
		struct buf out;
		struct err err;
		buf_init(&out, 1 << 16);
		err_clear(&err);
		int rc = mustache_render(tmpl, d, &o, &out, &err);
		if (rc == 0) {
			ok++;
			assert_int_equal(err.kind, ERR_NONE);
		} else {
			bad++;
			assert_int_equal(rc, -1);
			assert_int_equal(err.kind, ERR_INPUT);
			assert_true(strncmp(err.msg, "t:", 2) == 0);
		}
		buf_free(&out);
	}
	printf("  random templates: %d rendered, %d refused\n", ok, bad);
	assert_true(ok > 1000 && bad > 1000);
	json_object_put(d);
	json_object_put(p);
}

/* One cmocka test per specification file, named after it. */
#define SPEC(file)                                                                                 \
	{                                                                                          \
		"spec " file, run_spec, NULL, NULL, file                                           \
	}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    SPEC("comments.json"),
	    SPEC("delimiters.json"),
	    SPEC("interpolation.json"),
	    SPEC("inverted.json"),
	    SPEC("partials.json"),
	    SPEC("sections.json"),
	    SPEC("~inheritance.json"),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_html_escape),
	    cmocka_unit_test(test_truthiness),
	    cmocka_unit_test(test_values),
	    cmocka_unit_test(test_indentation),
	    cmocka_unit_test(test_sigil_blanks),
	    cmocka_unit_test(test_recursion),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_large),
	    cmocka_unit_test(test_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
