/* Markdown rendering: safety rewrites, raw-export rules, plain text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "md.h"
#include "utf8.h"

static struct md_doc render(const char *src, unsigned flags)
{
	struct md_doc d;
	struct err e;
	struct md_opts o = {.flags = flags, .asset_base = "https://x.example/issues/1/"};
	if (md_render(src, strlen(src), &o, &d, &e) < 0)
		fail_msg("md_render: %s", e.msg);
	return d;
}

#define HAS(hay, needle)                                                                          \
	do {                                                                                      \
		if (strstr((hay), (needle)) == NULL)                                              \
			fail_msg("missing \"%s\" in:\n%s", (needle), (hay));                     \
	} while (0)
#define HASNT(hay, needle)                                                                        \
	do {                                                                                      \
		if (strstr((hay), (needle)) != NULL)                                              \
			fail_msg("unexpected \"%s\" in:\n%s", (needle), (hay));                  \
	} while (0)

static void test_unsafe(void **state)
{
	(void)state;
	struct md_doc d = render("a <script>alert(1)</script> [x](javascript:alert(1)) [y](#) "
				 "[z](https://ok.example/) ![i](data:text/html,x) ![p](pic.png)\n\n"
				 "<div onclick=\"x()\">words kept</div>\n\n<script>\nbad()\n</script>\n",
				 0);
	HASNT(d.html, "<script");
	HASNT(d.html, "javascript:");
	HASNT(d.html, "href=\"#\"");
	HASNT(d.html, "href=\"\"");
	HASNT(d.html, "onclick");
	HASNT(d.html, "bad()");
	HASNT(d.html, "raw HTML omitted");
	HAS(d.html, "<a href=\"https://ok.example/\">z</a>");
	HAS(d.html, "x y");
	HAS(d.html, "words kept");
	HAS(d.html, "src=\"https://x.example/issues/1/pic.png\"");
	assert_int_equal(d.nassets, 1);
	assert_string_equal(d.assets[0], "pic.png");
	md_doc_free(&d);
	d = render("![up](../../etc/passwd)\n", 0);
	HASNT(d.html, "passwd");
	assert_int_equal(d.nassets, 0);
	md_doc_free(&d);
}

static void test_raw_export_rules(void **state)
{
	(void)state;
	const char *src =
	    "第一段正文很长很长，讲述了一个完整的故事，而且以句号结尾，是一个真正的段落。\n\n"
	    "扫描二维码了解更多信息\n\n"
	    "[扫描二维码查看文章](#)\n\n"
	    "一个小标题\n\n"
	    "第二段正文也很长很长，讲述了另一个完整的故事，而且同样以句号结尾，很好。\n\n"
	    "图 1: 一张图的说明\n\n"
	    "来源：文汇报\n\n"
	    "这一段在印刷页的末尾被截断了，句子还没有说完，下一页接着讲这个\n\n"
	    "故事的后半部分，直到句号为止。\n\n"
	    "* 表示一个脚注。\n\n"
	    "计算量是 $2 * 10^{11}$ 步，$x_{2}$ 也行，价格 $5 和 $6 不是公式。\n\n"
	    "相关阅读\n\n"
	    "扫描二维码查看文章\n\n"
	    "另一篇文章的标题\n\n"
	    "另一篇文章的介绍，也是一个完整的段落，以句号结尾。\n";
	struct md_doc d = render(src, MD_RAW_EXPORT);
	HASNT(d.html, "扫描二维码");
	HASNT(d.text, "扫描二维码");
	HASNT(d.html, "href=\"#\"");
	HAS(d.html, "<h2>一个小标题</h2>");
	HAS(d.html, "<p class=\"mx-caption\">\n图 1: 一张图的说明（图略）\n</p>");
	HAS(d.html, "<p class=\"mx-byline\">\n来源：文汇报\n</p>");
	HAS(d.html, "说完，下一页接着讲这个故事的后半部分");
	HAS(d.html, "<p class=\"mx-caption\">\n* 表示一个脚注。\n</p>");
	HASNT(d.html, "<li>");
	HAS(d.html, "2 × 10¹¹");
	HAS(d.html, "x₂");
	HAS(d.html, "$5 和 $6");
	HAS(d.html, "<div class=\"mx-related\">\n<p class=\"mx-related-title\">相关阅读</p>");
	HAS(d.html, "<h3>另一篇文章的标题</h3>");
	HAS(d.text, "相关阅读\n--------");
	assert_true(strncmp(d.summary, "第一段正文很长很长", strlen("第一段正文很长很长")) == 0);
	md_doc_free(&d);
}

static void test_text_part(void **state)
{
	(void)state;
	struct md_doc d = render("# Title\n\nSee [the paper](https://arxiv.org/abs/2111.09883) and "
				 "<https://example.org/x>.\n\n"
				 "| Model | 分数 |\n|:------|-----:|\n| A | 1.0 |\n| 中文模型 | 22.5 |\n\n"
				 "- one\n- two\n\n1. first\n2. second\n\n> quoted\n\n"
				 "    code line\n",
				 0);
	HAS(d.text, "Title\n=====");
	HAS(d.text, "the paper <https://arxiv.org/abs/2111.09883>");
	HAS(d.text, "https://example.org/x");
	HAS(d.text, "Model    | 分数\n---------+-----\nA        |  1.0\n中文模型 | 22.5");
	HAS(d.text, "- one\n- two");
	HAS(d.text, "1. first\n2. second");
	HAS(d.text, "> quoted");
	HAS(d.text, "    code line");
	HAS(d.html, "<table>");
	md_doc_free(&d);
}

static void test_wrap(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, BUF_NOLIMIT);
	md_wrap(&b, "这是一段很长的中文文字，用来测试按显示宽度折行是否正确，并且标点符号不会出现在行首。"
		    "这是一段很长的中文文字，用来测试按显示宽度折行是否正确。",
		20, "");
	const char *p = buf_str(&b);
	while (*p) {
		const char *nl = strchr(p, '\n');
		char *line = strndup(p, (size_t)(nl - p));
		assert_true(utf8_width(line) <= 20);
		assert_true(strncmp(line, "，", 3) != 0 && strncmp(line, "。", 3) != 0);
		free(line);
		p = nl + 1;
	}
	/* a word after an opening bracket stays whole (it was "（S" / "oftware") */
	for (size_t w = 10; w < 40; w++) {
		buf_reset(&b);
		md_wrap(&b, "两位科学家携手开创了软件分析学（Software Analytics）这一新领域。", w, "");
		HASNT(buf_str(&b), "S\noftware");
		for (const char *q = buf_str(&b); (q = strstr(q, "\n")) != NULL; q++)
			assert_true(strncmp(q + 1, "）", 3) != 0 && strncmp(q - 3, "（", 3) != 0);
	}
	buf_reset(&b);
	md_wrap(&b, "a https://example.org/a/very/long/url/that/must/not/be/broken end", 20, "  ");
	HAS(buf_str(&b), "  https://example.org/a/very/long/url/that/must/not/be/broken\n");
	buf_free(&b);
}

static void test_summary(void **state)
{
	(void)state;
	struct buf src;
	buf_init(&src, BUF_NOLIMIT);
	buf_adds(&src, "## heading first\n\n");
	for (int i = 0; i < 150; i++)
		buf_adds(&src, "很长");
	buf_adds(&src, "\n");
	struct md_doc d = render(buf_str(&src), 0);
	assert_int_equal(utf8_len(d.summary), 200);
	assert_true(strstr(d.summary, "…") != NULL);
	assert_true(strncmp(d.summary, "很长", 6) == 0);
	md_doc_free(&d);
	buf_free(&src);
}

int main(void)
{
	md_init();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unsafe),     cmocka_unit_test(test_raw_export_rules),
	    cmocka_unit_test(test_text_part),  cmocka_unit_test(test_wrap),
	    cmocka_unit_test(test_summary),
	};
	int r = cmocka_run_group_tests_name("md", tests, NULL, NULL);
	md_shutdown();
	return r;
}
