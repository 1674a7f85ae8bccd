/*
 * The issue parser against the seed issue (No. 60, the raw export of the
 * printed magazine), hand-written variants of its format, the other two
 * splitting modes and every class of bad input.
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

#include "buf.h"
#include "issue.h"
#include "md.h"
#include "utf8.h"

#define SEED "examples/issues/matrix-060.txt"
#define DATA "tests/data/issues/"

static const struct issue_opts opts = {16 << 20, "Matrix", "zh-CN", "https://news.example.org/m/"};

static struct issue *load(const char *path)
{
	struct issue *is = NULL;
	struct err e;
	err_clear(&e);
	if (issue_load(path, &opts, &is, &e) < 0)
		fail_msg("%s: %s", path, e.msg);
	return is;
}

static struct issue *parse_str(const char *name, const char *text, struct err *e)
{
	struct issue *is = NULL;
	err_clear(e);
	if (issue_parse(name, text, strlen(text), &opts, &is, e) < 0)
		return NULL;
	return is;
}

static void assert_contains(const char *hay, const char *needle)
{
	if (strstr(hay, needle) == NULL)
		fail_msg("expected to find \"%s\" in \"%.300s…\"", needle, hay);
}

/* The body's first and last non-blank lines contain these. */
static void assert_body(const struct article *a, const char *start, const char *end)
{
	const char *m = a->markdown;
	size_t n = strlen(m);
	const char *nl = strchr(m, '\n');
	char *first = strndup(m, nl ? (size_t)(nl - m) : n);
	assert_contains(first, start);
	free(first);
	while (n > 0 && m[n - 1] == '\n')
		n--;
	size_t s = n;
	while (s > 0 && m[s - 1] != '\n')
		s--;
	char *last = strndup(m + s, n - s);
	assert_contains(last, end);
	free(last);
}

static const struct {
	const char *section, *title, *start, *end;
} seed[] = {
    {"焦点", "ACM/IEEE Fellow 邱锺力博士担任微软亚洲研究院（上海）负责人",
     "2022年1月17日，微软亚洲研究院宣布", "在美国康奈尔大学先后获得计算机硕士及博士学位。"},
    {"焦点", "微软亚洲研究院副院长刘铁岩博士获选 2021 ACM Fellow", "2022年1月，国际计算机学会",
     "扫描二维码了解更多信息"},
    {"焦点", "微软亚洲研究院常务副院长张冬梅获 2022 年度 MSR Foundational Contribution Award",
     "微软亚洲研究院常务副院长张冬梅与北京大学教授谢涛", "扫描二维码查看张冬梅博士个人页面"},
    {"前沿求索", "AI 挺进生命科学领域，分子动力学模拟加速新冠病毒致病机理研究进程",
     "我们身体的三分之一是蘑菇？", "通用 AI 分子模拟库 Graphormer 开源！"},
    {"前沿求索", "微软亚洲研究院多模态模型 NÜWA：以自然语言创造视觉内容",
     "此前我们曾提出了一个问题", "查看原文视频"},
    {"前沿求索", "Swin Transformer 迎来 30 亿参数的 v2.0，我们应该拥抱视觉大模型吗？",
     "2021 年，获得 ICCV 最佳论文奖的 Swin Transformer", "扫描二维码查看文章"},
    {"前沿求索", "语音识别的快速纠错模型 FastCorrect 系列来了!",
     "语音识别支持着许多生活中的常见服务", "文末获取相关论文链接"},
    {"科研第一线", "你真的了解计算生物学和 AI for Science 吗？",
     "近年来，计算生物学无疑是人工智能领域的一大热门话题", "以及精华版文字内容！"},
    {"科研第一线", "如何亿点点降低语音识别跨领域、跨语种迁移难度？", "随着深度学习的不断发展",
     "扫描二维码查看文章"},
    {"文化故事", "科学匠人 | 白静：拥抱变化，不断发现计算机科学中的新天地",
     "在计算机领域，研究与产品的关系往往十分微妙", "安心、专心地研究技术的重要原因。"},
    {"文化故事", "她们非同凡响的“另一面”", "人类经常少年老成",
     "本篇文章带我们了解四位成员与微软乐队的故事。"},
    {"文化故事", "星跃重洋 | 刘国栋：非典型理工男在微软亚洲研究院的科研“旅”记",
     "结束一天的科研工作", "Guodong's greatest ability"},
    {"媒体报道", "周礼栋：成熟的 AI 不再只是谈“颠覆”", "来源：文汇报", "让最好的想法获胜。"},
    {"媒体报道", "微软云强劲增长的背后，是全新的人工智能黑科技", "来源：云科技时代",
     "微软亚洲研究院"},
    {"媒体报道", "中国科学家利用计算生物学开展新冠病毒系列研究揭示病毒侵染机理",
     "来源: DeepTech 深科技", "才能推动跨学科间的研究持续向前发展。"},
};

static void test_seed_meta(void **state)
{
	(void)state;
	struct issue *is = load(SEED);
	assert_string_equal(is->title, "Matrix NO.60");
	assert_int_equal(is->number, 60);
	assert_string_equal(is->period, "2022年1 - 3月");
	assert_int_equal(is->mode, ISSUE_TOC);
	assert_false(is->is_draft);
	assert_int_equal(is->narticles, 15);
	assert_int_equal(strlen(is->hash), 64);
	issue_free(is);
}

static void test_seed_articles(void **state)
{
	(void)state;
	struct issue *is = load(SEED);
	assert_int_equal(is->narticles, sizeof seed / sizeof seed[0]);
	int per_section[5] = {0};
	const char *sections[5] = {"焦点", "前沿求索", "科研第一线", "文化故事", "媒体报道"};
	for (size_t i = 0; i < is->narticles; i++) {
		const struct article *a = &is->articles[i];
		assert_int_equal(a->index, (int)i + 1);
		assert_string_equal(a->title, seed[i].title);
		assert_string_equal(a->section, seed[i].section);
		assert_body(a, seed[i].start, seed[i].end);
		for (int k = 0; k < 5; k++)
			per_section[k] += strcmp(a->section, sections[k]) == 0;
		assert_true(utf8_len(a->summary) <= 200);
		assert_true(a->summary[0] != '\0');
		assert_non_null(strstr(a->html, "<p>"));
	}
	assert_int_equal(per_section[0], 3);
	assert_int_equal(per_section[1], 4);
	assert_int_equal(per_section[2], 2);
	assert_int_equal(per_section[3], 3);
	assert_int_equal(per_section[4], 3);
	/* article 4's title was broken over two lines in the body */
	assert_int_equal(is->articles[3].line, 97);
	assert_int_equal(is->articles[3].body_line, 100);
	issue_free(is);
}

/* Every non-blank line from the first title on is in a title, a body, the
 * colophon, or is a section banner between sections. */
static void test_seed_nothing_lost(void **state)
{
	(void)state;
	struct issue *is = load(SEED);
	FILE *f = fopen(SEED, "r");
	assert_non_null(f);
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int no = 0, checked = 0;
	while ((n = getline(&line, &cap, f)) > 0) {
		no++;
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == ' '))
			line[--n] = '\0';
		if (no < is->articles[0].line || n == 0)
			continue;
		bool found = strstr(is->colophon, line) != NULL;
		for (size_t i = 0; i < is->narticles && !found; i++) {
			const struct article *a = &is->articles[i];
			found = strstr(a->markdown, line) != NULL ||
			        (no >= a->line && no < a->body_line) ||
			        strcmp(line, a->section) == 0;
		}
		if (!found)
			fail_msg("line %d lost: %s", no, line);
		checked++;
	}
	free(line);
	fclose(f);
	assert_true(checked > 500);
	issue_free(is);
}

static void test_seed_colophon(void **state)
{
	(void)state;
	struct issue *is = load(SEED);
	assert_true(strncmp(is->colophon, "周礼栋\n", strlen("周礼栋\n")) == 0);
	assert_contains(is->colophon, "关于微软亚洲研究院");
	assert_contains(is->colophon, "电话：86-10-59178888");
	assert_contains(is->colophon, "微博：<http://t.sina.com.cn/msra>");
	const char *last = is->articles[14].markdown;
	assert_null(strstr(last, "关于微软亚洲研究院"));
	assert_null(strstr(last, "二十多年来"));
	assert_null(strstr(last, "电话"));
	issue_free(is);
}

static void test_seed_slugs(void **state)
{
	(void)state;
	struct issue *is = load(SEED);
	for (size_t i = 0; i < is->narticles; i++) {
		const char *s = is->articles[i].slug;
		assert_true(strlen(s) > 0 && strlen(s) <= 60);
		for (const char *p = s; *p; p++)
			assert_true((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
			            *p == '-');
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(s, is->articles[j].slug);
		char *again = issue_slug(is->articles[i].title);
		assert_string_equal(again, s);
		free(again);
	}
	assert_string_equal(is->articles[5].slug, "swin-transformer-30-v2-0-7b6628");
	issue_free(is);
}

static void test_variant_en(void **state)
{
	(void)state;
	struct issue *is = load(DATA "toc-en.txt");
	static const char *const titles[] = {
	    "DEEP LEARNING： A NEW FRONTIER",           "The “Quantum” Leap in Computing",
	    "Graph Neural Networks for Drug Discovery", "How we built it",
	    "A Day in the Life of a Researcher",        "TOP 10"};
	static const char *const sections[] = {
	    "Focus", "Focus", "Research Frontline", "Research Frontline", "Culture", "Culture"};
	static const char *const nth[] = {"one", "two", "three", "four", "five", "six"};
	assert_string_equal(is->title, "Matrix No. 61");
	assert_int_equal(is->number, 61);
	assert_string_equal(is->period, "April - June 2023");
	assert_int_equal(is->narticles, 6);
	for (size_t i = 0; i < 6; i++) {
		char start[64], end[64];
		snprintf(start, sizeof start, "First sentence of article %s.", nth[i]);
		snprintf(end, sizeof end, "Last sentence of article %s", nth[i]);
		assert_string_equal(is->articles[i].title, titles[i]);
		assert_string_equal(is->articles[i].section, sections[i]);
		assert_body(&is->articles[i], i == 0 ? "first sentence of article one" : start,
		            end);
	}
	/* the banner "Research Frontline" is not the end of article two */
	assert_null(strstr(is->articles[1].markdown, "Research Frontline"));
	assert_true(strncmp(is->colophon, "About Matrix", 12) == 0);
	assert_contains(is->colophon, "Web: https://www.example.org/");
	assert_null(strstr(is->articles[5].markdown, "About Matrix"));
	issue_free(is);
}

static void check_zh(struct issue *is)
{
	static const char *const titles[] = {"量子计算：从实验室走向产业", "\"图学习\"的十年（上）",
	                                     "小样本学习，真的有用吗？",
	                                     "科学匠人 | 王小明：做有意义的研究"};
	static const char *const sections[] = {"前沿", "前沿", "科研第一线", "人物"};
	static const char *const nth[] = {"一", "二", "三", "四"};
	assert_string_equal(is->title, "Matrix NO.61");
	assert_string_equal(is->period, "2022年4 - 6月");
	assert_int_equal(is->narticles, 4);
	for (size_t i = 0; i < 4; i++) {
		char start[64], end[64];
		snprintf(start, sizeof start, "第%s篇文章的第一句话", nth[i]);
		snprintf(end, sizeof end, "第%s篇文章的最后一句话。", nth[i]);
		assert_string_equal(is->articles[i].title, titles[i]);
		assert_string_equal(is->articles[i].section, sections[i]);
		assert_body(&is->articles[i], start, end);
		assert_null(strchr(is->articles[i].title, '\r'));
		assert_null(strchr(is->articles[i].markdown, '\r'));
	}
	assert_string_equal(is->colophon, "");
}

static void test_variant_zh(void **state)
{
	(void)state;
	struct issue *is = load(DATA "toc-zh.txt");
	check_zh(is);
	issue_free(is);
}

static void test_variant_crlf_bom(void **state)
{
	(void)state;
	struct issue *is = load(DATA "toc-crlf-bom.txt");
	check_zh(is);
	struct issue *lf = load(DATA "toc-zh.txt");
	for (size_t i = 0; i < 4; i++)
		assert_string_equal(is->articles[i].html, lf->articles[i].html);
	assert_string_not_equal(is->hash, lf->hash);
	issue_free(lf);
	issue_free(is);
}

static void test_headings_sections(void **state)
{
	(void)state;
	struct issue *is = load(DATA "sections.md");
	assert_int_equal(is->mode, ISSUE_HEADINGS);
	assert_string_equal(is->title, "Matrix NO.62");
	assert_int_equal(is->number, 62);
	assert_true(is->is_draft);
	assert_int_equal(is->date, 1657843200); /* 2022-07-15 */
	assert_int_equal(is->nlists, 2);
	assert_string_equal(is->lists[1], "matrix-en");
	assert_int_equal(is->narticles, 3);
	assert_string_equal(is->articles[0].title, "First focus article");
	assert_string_equal(is->articles[0].section, "焦点");
	assert_string_equal(is->articles[2].section, "前沿求索");
	assert_body(&is->articles[0], "First sentence of the first article.",
	            "Last sentence of the first article.");
	assert_contains(is->articles[0].markdown, "### A subheading stays in the article");
	/* a section heading never ends up in the article above it; its
	 * introduction leads the section's first article */
	assert_null(strstr(is->articles[1].markdown, "前沿求索"));
	assert_body(&is->articles[1], "Only one paragraph here.", "Only one paragraph here.");
	assert_body(&is->articles[2], "This section introduces the frontier.",
	            "Last sentence of the frontier article.");
	assert_contains(is->articles[2].markdown, "| Model | Score |");
	assert_contains(is->articles[2].html, "<table>");
	assert_contains(is->articles[2].text, "https://arxiv.org/abs/2111.09883");
	assert_contains(is->articles[2].text, "<https://github.com/microsoft/Swin-Transformer>");
	assert_contains(is->preface, "Welcome to issue 62.");
	assert_contains(is->preface_html, "<p>Welcome to issue 62.");
	struct json_object *j = issue_to_json(is), *v;
	assert_true(json_object_object_get_ex(j, "preface", &v));
	json_object_put(j);
	issue_free(is);
}

static void test_headings_flat(void **state)
{
	(void)state;
	struct issue *is = load(DATA "flat-64.md");
	assert_int_equal(is->number, 64); /* from the file name */
	assert_string_equal(is->title, "Matrix NO.64");
	assert_int_equal(is->narticles, 3);
	assert_string_equal(is->articles[2].title, "第三篇文章");
	assert_string_equal(is->articles[2].section, "");
	assert_body(&is->articles[1], "Body of the second article.", "Body of the second article.");
	issue_free(is);
}

static void test_single(void **state)
{
	(void)state;
	struct issue *is = load(DATA "single-63.md");
	assert_int_equal(is->mode, ISSUE_SINGLE);
	assert_int_equal(is->narticles, 1);
	assert_string_equal(is->articles[0].title, "A single article issue");
	assert_body(&is->articles[0], "This issue has no headings", "Last sentence.");
	assert_contains(is->articles[0].html, "<li>a bullet list</li>");
	issue_free(is);
}

static void test_bad_inputs(void **state)
{
	(void)state;
	static const struct {
		const char *file, *prefix, *what;
	} bad[] = {
	    {"invalid-utf8.txt", "invalid-utf8.txt:5: ", "invalid UTF-8"},
	    {"nul.txt", "nul.txt:5: ", "NUL byte"},
	    {"empty.txt", "empty.txt:1: ", "empty"},
	    {"blank.txt", "blank.txt:1: ", "empty"},
	    {"unclosed-front-matter.md", "unclosed-front-matter.md:1: ", "never closed"},
	    {"bad-number.md", "bad-number.md:2: ", "positive integer"},
	    {"unknown-key.md", "unknown-key.md:3: ", "unknown front matter key 'titel'"},
	    {"toc-missing.txt", "toc-missing.txt:10: ", "这篇文章在正文里找不到"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char path[256];
		snprintf(path, sizeof path, DATA "bad/%s", bad[i].file);
		struct issue *is = NULL;
		struct err e;
		err_clear(&e);
		assert_int_equal(issue_load(path, &opts, &is, &e), -1);
		assert_null(is);
		assert_int_equal(e.kind, ERR_INPUT);
		char want[300];
		snprintf(want, sizeof want, DATA "bad/%s", bad[i].prefix);
		if (strncmp(e.msg, want, strlen(want)) != 0)
			fail_msg("%s: got \"%s\"", bad[i].file, e.msg);
		assert_contains(e.msg, bad[i].what);
		assert_null(strchr(e.msg, '\n'));
	}
}

static void test_oversize(void **state)
{
	(void)state;
	struct issue_opts small = opts;
	small.max_bytes = 1024;
	struct issue *is = NULL;
	struct err e;
	err_clear(&e);
	assert_int_equal(issue_load(SEED, &small, &is, &e), -1);
	assert_contains(e.msg, SEED ":1: ");
	assert_contains(e.msg, "max_issue_bytes");
}

static void test_control_characters(void **state)
{
	(void)state;
	struct err e;
	const char *text = "---\nnumber: 80\n---\n\n# Bad\rtitle\x01 with\x1b[31m escapes\x7f\n\n"
	                   "Body\x02 text\n";
	struct issue *is = parse_str("ctl.md", text, &e);
	assert_non_null(is);
	const char *t = is->articles[0].title;
	for (const char *p = t; *p; p++)
		assert_true((unsigned char)*p >= 0x20 && *p != 0x7f);
	assert_string_equal(t, "Bad title with[31m escapes");
	assert_null(strchr(is->articles[0].markdown, '\x02'));
	issue_free(is);
	/* A masthead number, no front matter: title from site.title when no name line */
	is = parse_str("x.txt", "NO.81\n\n# One\n\ntext\n", &e);
	assert_non_null(is);
	assert_int_equal(is->number, 81);
	issue_free(is);
}

static void test_front_matter_errors(void **state)
{
	(void)state;
	static const struct {
		const char *text, *want;
	} cases[] = {
	    {"---\nnumber: 1\ndate: 2022-02-30\n---\n# A\nx\n", "fm.md:3: date must be YYYY-MM-DD"},
	    {"---\nnumber: 1\nstatus: later\n---\n# A\nx\n", "fm.md:3: status must be"},
	    {"---\nnumber: 1\nlists: Matrix!\n---\n# A\nx\n", "fm.md:3: 'Matrix!' is not a list"},
	    {"---\nnumber: 1\njust words\n---\n# A\nx\n", "fm.md:3: expected 'key: value'"},
	    {"---\nnumber: 1\nlanguage: zh CN\n---\n# A\nx\n", "fm.md:3: language must be"},
	    {"---\nnumber: 1\n---\n\n", "fm.md:4: no article text"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct err e;
		struct issue *is = parse_str("fm.md", cases[i].text, &e);
		assert_null(is);
		if (strncmp(e.msg, cases[i].want, strlen(cases[i].want)) != 0)
			fail_msg("case %zu: got \"%s\"", i, e.msg);
	}
}

static void test_title_key(void **state)
{
	(void)state;
	static const char *const same[][2] = {
	    {"NÜWA: 以自然语言创造视觉内容", "nüwa：以自然语言 创造视觉内容"},
	    {"她们非同凡响的\"另一面\"", "她们非同凡响的“另一面”"},
	    {"ＡＢＣ（上海）", "abc(上海)"},
	    {"Deep Learning, Again!", "DEEP LEARNING AGAIN"},
	};
	for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
		struct buf a, b;
		buf_init(&a, BUF_NOLIMIT);
		buf_init(&b, BUF_NOLIMIT);
		issue_title_key(same[i][0], strlen(same[i][0]), &a);
		issue_title_key(same[i][1], strlen(same[i][1]), &b);
		assert_string_equal(buf_str(&a), buf_str(&b));
		buf_free(&a);
		buf_free(&b);
	}
}

static void test_slug_rules(void **state)
{
	(void)state;
	char *s = issue_slug("Hello, World!");
	assert_string_equal(s, "hello-world");
	free(s);
	s = issue_slug("她们非同凡响的“另一面”");
	assert_int_equal(strlen(s), 6);
	free(s);
	s = issue_slug("A very long English title that goes on and on and on beyond the limit");
	assert_true(strlen(s) <= 48);
	assert_true(s[strlen(s) - 1] != '-');
	free(s);
	s = issue_slug("!!!");
	assert_string_equal(s, "article");
	free(s);
	/* duplicates within one issue get -2 */
	struct err e;
	struct issue *is =
	    parse_str("d.md", "---\nnumber: 5\n---\n# Same\n\na\n\n# Same\n\nb\n", &e);
	assert_non_null(is);
	assert_string_equal(is->articles[0].slug, "same");
	assert_string_equal(is->articles[1].slug, "same-2");
	issue_free(is);
}

static void test_json(void **state)
{
	(void)state;
	struct issue *is = load(SEED);
	struct json_object *o = issue_to_json(is), *v = NULL, *arts = NULL;
	assert_true(json_object_object_get_ex(o, "number", &v));
	assert_int_equal(json_object_get_int(v), 60);
	assert_true(json_object_object_get_ex(o, "articles", &arts));
	assert_int_equal(json_object_array_length(arts), 15);
	static const char *const keys[] = {"index",   "section",  "title", "slug",
	                                   "summary", "markdown", "text",  "html"};
	struct json_object *a0 = json_object_array_get_idx(arts, 0);
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		assert_true(json_object_object_get_ex(a0, keys[i], &v));
	/* no preface in the seed: exactly the keys of docs/matrixctl.8 */
	assert_false(json_object_object_get_ex(o, "preface", &v));
	json_object_put(o);
	issue_free(is);
}

/* An issue whose period is over and that has no date gets a warning at
 * the period's line; the example issue has its date. */
static void test_period_without_date(void **state)
{
	(void)state;
	struct tm t = {.tm_year = 2022 - 1900, .tm_mon = 3, .tm_mday = 1};
	time_t april = timegm(&t);
	assert_true(period_passed("2022年1 - 3月", april));
	assert_false(period_passed("2022年4 - 6月", april));
	assert_false(period_passed("2022", april));
	assert_false(period_passed("Spring", april));
	struct issue *is = load(DATA "toc-zh.txt");
	bool warned = false;
	for (size_t i = 0; i < is->nwarnings; i++)
		warned |= strstr(is->warnings[i], DATA "toc-zh.txt:5: the period") != NULL;
	assert_true(warned);
	issue_free(is);
	is = load(SEED);
	assert_true(is->date > 0);
	for (size_t i = 0; i < is->nwarnings; i++)
		assert_null(strstr(is->warnings[i], "the period"));
	issue_free(is);
}

int main(void)
{
	md_init();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_seed_meta),
	    cmocka_unit_test(test_seed_articles),
	    cmocka_unit_test(test_seed_nothing_lost),
	    cmocka_unit_test(test_seed_colophon),
	    cmocka_unit_test(test_seed_slugs),
	    cmocka_unit_test(test_variant_en),
	    cmocka_unit_test(test_variant_zh),
	    cmocka_unit_test(test_variant_crlf_bom),
	    cmocka_unit_test(test_headings_sections),
	    cmocka_unit_test(test_headings_flat),
	    cmocka_unit_test(test_single),
	    cmocka_unit_test(test_bad_inputs),
	    cmocka_unit_test(test_oversize),
	    cmocka_unit_test(test_control_characters),
	    cmocka_unit_test(test_front_matter_errors),
	    cmocka_unit_test(test_title_key),
	    cmocka_unit_test(test_slug_rules),
	    cmocka_unit_test(test_json),
	    cmocka_unit_test(test_period_without_date),
	};
	int r = cmocka_run_group_tests_name("issue", tests, NULL, NULL);
	md_shutdown();
	return r;
}
