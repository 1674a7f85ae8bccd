/*
 * Raw exports typeset as an editor would (docs/issue-format.md, "Raw
 * exports"): which text is a caption, a heading, a paragraph — asserted on
 * the structure of the rendered HTML, not its bytes, over the seed issue
 * (No. 60) and over exports written for these tests with every case in new
 * text: tests/data/issues/export-62.txt, export-65.txt and export-66.txt
 * (tests/data/README.md says what each exercises).
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libxml/HTMLparser.h>
#include <libxml/tree.h>

#include "buf.h"
#include "issue.h"
#include "md.h"
#include "utf8.h"

#define SEED   "examples/issues/matrix-060.txt"
#define EXPORT "tests/data/issues/export-62.txt"
#define EX65   "tests/data/issues/export-65.txt"
#define EX66   "tests/data/issues/export-66.txt"

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

/* One block of a rendered body: "p", "caption", "byline", "h2", "table"… */
struct block {
	char kind[16];
	char *text;
};

struct blocks {
	struct block *v;
	size_t n;
};

static void node_text(xmlNode *n, struct buf *out)
{
	for (xmlNode *c = n; c; c = c->next) {
		if (c->type == XML_TEXT_NODE)
			buf_adds(out, (const char *)c->content);
		else if (c->type == XML_ELEMENT_NODE && strcmp((const char *)c->name, "br") == 0)
			buf_addc(out, '\n');
		else if (c->type == XML_ELEMENT_NODE)
			node_text(c->children, out);
	}
}

static void collect(xmlNode *n, struct blocks *b)
{
	for (xmlNode *c = n; c; c = c->next) {
		if (c->type != XML_ELEMENT_NODE)
			continue;
		const char *name = (const char *)c->name;
		xmlChar *cls = xmlGetProp(c, (const xmlChar *)"class");
		const char *k = NULL;
		if (cls && strncmp((const char *)cls, "mx-", 3) == 0 && strcmp(name, "p") == 0)
			k = (const char *)cls + 3; /* caption, byline, related-title */
		else if (strcmp(name, "p") == 0 ||
		         (name[0] == 'h' && isdigit((unsigned char)name[1])) ||
		         strcmp(name, "table") == 0 || strcmp(name, "li") == 0)
			k = name;
		if (k) {
			struct buf t;
			buf_init(&t, BUF_NOLIMIT);
			node_text(c->children, &t);
			/* trim the newlines cmark puts around captions */
			char *s = buf_detach(&t), *p = s;
			while (*p == '\n')
				p++;
			size_t l = strlen(p);
			while (l > 0 && p[l - 1] == '\n')
				p[--l] = 0;
			b->v = realloc(b->v, (b->n + 1) * sizeof *b->v);
			snprintf(b->v[b->n].kind, sizeof b->v[b->n].kind, "%s", k);
			b->v[b->n].text = strdup(p);
			b->n++;
			free(s);
		} else {
			collect(c->children, b);
		}
		xmlFree(cls);
	}
}

static struct blocks parse_blocks(const char *html)
{
	struct blocks b = {NULL, 0};
	struct buf doc;
	buf_init(&doc, BUF_NOLIMIT);
	buf_printf(&doc, "<html><head><meta charset=\"utf-8\"></head><body>%s</body></html>", html);
	htmlDocPtr d = htmlReadMemory(buf_str(&doc), (int)doc.len, "body.html", "utf-8",
	                              HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | HTML_PARSE_NONET);
	assert_non_null(d);
	collect(xmlDocGetRootElement(d), &b);
	xmlFreeDoc(d);
	buf_free(&doc);
	return b;
}

static void blocks_free(struct blocks *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->v[i].text);
	free(b->v);
}

/* All blocks of every article of is, in order. */
static struct blocks all_blocks(const struct issue *is)
{
	struct buf h;
	buf_init(&h, BUF_NOLIMIT);
	for (size_t i = 0; i < is->narticles; i++)
		buf_adds(&h, is->articles[i].html);
	struct blocks b = parse_blocks(buf_str(&h));
	buf_free(&h);
	return b;
}

/* The index of the block whose text contains needle; fails when none. */
static size_t find(const struct blocks *b, const char *needle)
{
	for (size_t i = 0; i < b->n; i++)
		if (strstr(b->v[i].text, needle))
			return i;
	fail_msg("no block contains \"%s\"", needle);
	return 0;
}

static void dump(const struct blocks *b, size_t i)
{
	print_message("  block %zu is <%s>: \"%.400s\"\n", i, b->v[i].kind, b->v[i].text);
}

/* The block holding needle is a kind block. */
static void assert_kind(const struct blocks *b, const char *needle, const char *kind)
{
	size_t i = find(b, needle);
	if (strcmp(b->v[i].kind, kind) != 0) {
		dump(b, i);
		fail_msg("\"%s\" should be in a <%s>", needle, kind);
	}
}

/* A caption that holds exactly its own line: it starts with start, has no
 * more text than the caption and the absent-figure mark. */
static void assert_caption_alone(const struct blocks *b, const char *start, const char *not_in)
{
	size_t i = find(b, start);
	for (size_t k = 0; k < b->n; k++)
		if (strncmp(b->v[k].text, start, strlen(start)) == 0) {
			i = k;
			break;
		}
	if (strcmp(b->v[i].kind, "caption") != 0 || strncmp(b->v[i].text, start, strlen(start)) ||
	    (not_in && strstr(b->v[i].text, not_in))) {
		dump(b, i);
		fail_msg("\"%s\" should be a caption of its own", start);
	}
}

/* A heading whose whole text is exactly want. */
static void assert_heading(const struct blocks *b, const char *want)
{
	size_t i = find(b, want);
	if (b->v[i].kind[0] != 'h' || strcmp(b->v[i].text, want) != 0) {
		dump(b, i);
		fail_msg("\"%s\" should be a heading of its own", want);
	}
}

/* A heading of level (2 for <h2>…) whose whole text is exactly want. */
static void assert_heading_level(const struct blocks *b, const char *want, int level)
{
	assert_heading(b, want);
	size_t i = find(b, want);
	if (b->v[i].kind[1] - '0' != level) {
		dump(b, i);
		fail_msg("\"%s\" should be an <h%d>", want, level);
	}
}

/* The block holding needle is a kind block whose text starts with it. */
static void assert_starts(const struct blocks *b, const char *needle, const char *kind)
{
	assert_kind(b, needle, kind);
	size_t i = find(b, needle);
	if (strncmp(b->v[i].text, needle, strlen(needle)) != 0) {
		dump(b, i);
		fail_msg("\"%s\" should start its <%s>", needle, kind);
	}
}

/* No block contains needle. */
static void assert_absent(const struct blocks *b, const char *needle)
{
	for (size_t i = 0; i < b->n; i++)
		if (strstr(b->v[i].text, needle)) {
			dump(b, i);
			fail_msg("\"%s\" should not be in the output", needle);
		}
}

/* The blocks of article index (1-based) only. */
static struct blocks article_blocks(const struct issue *is, size_t index)
{
	assert_true(index >= 1 && index <= is->narticles);
	return parse_blocks(is->articles[index - 1].html);
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;
	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

/* ASCII , ; : ! ? right after a Han character in the text of every block. */
static size_t ascii_after_han(const struct blocks *b)
{
	size_t n = 0;
	for (size_t i = 0; i < b->n; i++) {
		if (strcmp(b->v[i].kind, "table") == 0)
			continue;
		const char *p = b->v[i].text, *end = p + strlen(p);
		uint32_t prev = 0;
		while (p < end) {
			int32_t c = utf8_next(&p, end);
			if (c > 0 && strchr(",;:!?", (int)c) && c < 0x80 && utf8_is_han(prev)) {
				if (n < 5)
					print_message(
					    "  ASCII '%c' after a Han character in \"%.120s\"\n",
					    (char)c, b->v[i].text);
				n++;
			}
			prev = c > 0 ? (uint32_t)c : 0;
		}
	}
	return n;
}

/* The warnings of is as one string, one per line. */
static char *warnings(const struct issue *is)
{
	struct buf w;
	buf_init(&w, BUF_NOLIMIT);
	for (size_t i = 0; i < is->nwarnings; i++)
		buf_printf(&w, "%s\n", is->warnings[i]);
	return buf_detach(&w);
}

/* ---- the new export ------------------------------------------------------- */

static void test_export_captions(void **state)
{
	(void)state;
	struct issue *is = load(EXPORT);
	assert_int_equal(is->narticles, 3);
	struct blocks b = all_blocks(is);
	/* a numbered caption takes only its own line */
	assert_caption_alone(&b, "图 1: 2019 年至 2021 年东海表层温度距平 v3.2", "这张图");
	assert_kind(&b, "这张图展示了三年间的变化", "p");
	/* captions of photos not in the export: after an image trace */
	assert_caption_alone(&b, "项目负责人陈一鸣在青岛的观测站调试浮标", "陈一鸣说");
	assert_caption_alone(&b, "OceanNet 在 2021 年第 9 号台风期间补全的海面温度场示意图",
	                     "补全的结果");
	assert_caption_alone(&b, "陈一鸣（右）与合作者在科考船上", "科考船上的生活");
	assert_caption_alone(&b, "合作社的渔民在码头查看当天的温度图", "统的数据");
	/* table captions stand by their table, unmarked */
	assert_caption_alone(&b, "表 1: 各方法在东海测试集上的均方根误差", "图略");
	assert_caption_alone(&b, "表 2: 与已有方法的完整对比", "图略");
	/* figures not in the export are marked once, every one of them */
	size_t marked = 0;
	for (size_t i = 0; i < b.n; i++)
		if (strcmp(b.v[i].kind, "caption") == 0 && strncmp(b.v[i].text, "表", 3) != 0) {
			assert_int_equal(count(b.v[i].text, "（图略）"), 1);
			marked++;
		}
	assert_int_equal(marked, 5);
	blocks_free(&b);
	issue_free(is);
}

static void test_export_headings(void **state)
{
	(void)state;
	struct issue *is = load(EXPORT);
	struct blocks b = all_blocks(is);
	/* the line-break space between two Han characters goes, the one
	 * between Chinese and Latin stays; the next paragraph is its own */
	assert_heading(&b, "从浮标到卫星看 OceanNet 如何把稀疏的观测补成完整的海面温度场");
	assert_kind(&b, "观测数据的最大问题是稀疏", "p");
	assert_int_equal(strncmp(b.v[find(&b, "观测数据的最大问题是稀疏")].text, "观测数据", 12),
	                 0);
	/* a heading printed over two lines */
	assert_heading(&b, "把模型交到渔民手里");
	assert_heading(&b, "为什么是海洋而不是大气");
	/* subheadings come right under the page's <h1>: level 2 */
	for (size_t i = 0; i < b.n; i++)
		if (b.v[i].kind[0] == 'h')
			assert_string_equal(b.v[i].kind, "h2");
	blocks_free(&b);
	/* the colophon is text, not a stack of headings */
	assert_non_null(strstr(is->colophon_html, "海洋计算实验室"));
	assert_null(strstr(is->colophon_html, "<h"));
	issue_free(is);
}

static void test_export_page_breaks(void **state)
{
	(void)state;
	struct issue *is = load(EXPORT);
	struct blocks b = all_blocks(is);
	/* cut after a comma */
	assert_kind(&b, "补全被云遮住的区域，第二步再用时序模型", "p");
	/* cut inside a word, a photo and its caption standing between */
	assert_kind(&b, "希望能够共享这套系统的数据。陈一鸣觉得", "p");
	size_t para = find(&b, "共享这套系统"), cap = find(&b, "合作社的渔民在码头");
	assert_true(cap == para + 1);
	/* nothing else was joined: every paragraph still starts as written */
	assert_int_equal(strncmp(b.v[find(&b, "补全的结果与事后")].text, "补全的结果", 15), 0);
	blocks_free(&b);
	issue_free(is);
}

static void test_export_punctuation(void **state)
{
	(void)state;
	struct issue *is = load(EXPORT);
	struct blocks b = all_blocks(is);
	assert_kind(&b, "为此，团队设计了一个分两步走的模型：第一步", "p");
	assert_kind(&b, "如图 5 所示，分为编码器和解码器两部分；编码器负责读入多源数据！", "p");
	assert_kind(&b, "最专注的一段时间？", "p");
	/* ASCII the author typed after Latin letters stays */
	assert_kind(&b, "NÜWA-Sea: 一个更大的版本已经在训练中，预计明年发布", "p");
	assert_kind(&b, "团队的 mentor, 也就是海洋所的李老师，对此很期待", "p");
	assert_int_equal(ascii_after_han(&b), 0);
	blocks_free(&b);
	issue_free(is);
}

static void test_export_warnings(void **state)
{
	(void)state;
	struct issue *is = load(EXPORT);
	char *w = warnings(is);
	/* every guess, with the file and line it was made at */
	assert_non_null(strstr(w, EXPORT ":40: ")); /* photo caption */
	assert_non_null(strstr(w, EXPORT ":60: ")); /* caption between two halves */
	assert_non_null(strstr(w, EXPORT ":34: ")); /* page break after a comma */
	assert_non_null(strstr(w, EXPORT ":56: ")); /* page break inside a word */
	assert_non_null(strstr(w, EXPORT ":64: ")); /* 图 5 referenced, not there */
	assert_non_null(strstr(w, "图 5"));
	assert_non_null(strstr(w, EXPORT ":26: ")); /* 图 1 without its image */
	/* no warning for what is certain: the tables and their captions */
	assert_null(strstr(w, "表 1"));
	free(w);
	issue_free(is);
}

/* ---- export 65: a second export in new text ------------------------------------ */

static void test_ex65_captions(void **state)
{
	(void)state;
	struct issue *is = load(EX65);
	assert_int_equal(is->narticles, 8);
	struct blocks b = all_blocks(is);
	/* photo captions after an image trace, each its own line, marked once */
	static const char *const photos[] = {
	    "联合实验室揭牌仪式现场（图略）",
	    "研究院首席研究员林晓岚（图略）",
	    "研究院自然语言计算组主管研究员何静怡（图略）",
	    "林晓岚（右一）与团队成员讨论麦克风阵列的设计方案（图略）",
	    "林晓岚在研究院的语音实验室（图略）",
	    "赵一凡（前排左三）与系统组的同事们（图略）",
	    "林晓岚在实验室接受记者采访（图略）",
	    /* brackets and semicolons inside are no sentence */
	    "雷达回波外推与 StormCast "
	    "预报结果对比（左：实况；中：光流外推；右：StormCast）（图略）",
	};
	for (size_t i = 0; i < sizeof photos / sizeof photos[0]; i++) {
		assert_caption_alone(&b, photos[i], NULL);
		assert_int_equal(strlen(b.v[find(&b, photos[i])].text), strlen(photos[i]));
	}
	/* a numbered caption printed with the paragraph under it in one block:
	 * the caption takes its own line, the paragraph is a paragraph */
	assert_caption_alone(&b, "图 1: 检索增强生成的基本流程（图略）", "检索器的质量");
	assert_starts(&b, "检索器的质量决定了答案的上限", "p");
	assert_caption_alone(&b, "图 2：StormCast 的“由粗到细”注意力结构示意图（图略）", NULL);
	/* table captions, above or below their table: not marked */
	assert_caption_alone(&b, "表 1：不同检索方法在三个数据集上的精确匹配率（%）", "略");
	assert_caption_alone(&b, "表 2: 2022 年汛期强降水预报检验", "略");
	/* a name card under a portrait stays text; the QR requests go */
	assert_kind(&b, "Laura Bennett", "p");
	assert_absent(&b, "二维码");
	assert_absent(&b, "课件下载");
	assert_absent(&b, "查看论文与代码");
	blocks_free(&b);
	issue_free(is);
}

static void test_ex65_numbered(void **state)
{
	(void)state;
	struct issue *is = load(EX65);
	/* "（一）…（二）…（三）…" one after the other: a list, numbers as printed */
	struct blocks b = article_blocks(is, 1);
	assert_starts(&b, "（一）建设一个面向高校开放的算力平台", "li");
	assert_starts(&b, "（二）设立每年两期的访问学者计划", "li");
	assert_starts(&b, "（三）共同举办暑期学校与研讨会", "li");
	assert_starts(&b, "根据协议，联合实验室首期将重点推进以下工作：", "p");
	assert_caption_alone(&b, "联合实验室揭牌仪式现场", NULL);
	blocks_free(&b);
	/* "1、…" labels each over its own paragraphs: numbered subheadings, one
	 * level under the subheading they belong to, never captions */
	b = article_blocks(is, 3);
	assert_heading_level(&b, "三个让检索更好用的小技巧", 2);
	assert_heading_level(&b, "1、把长文档切成短段落", 3);
	assert_heading_level(&b, "2、让问题“换个说法”", 3);
	assert_heading_level(&b, "3、给检索结果“去重”", 3);
	assert_starts(&b, "检索的基本单位越短", "p");
	/* after the last item the text goes on in the section */
	assert_starts(&b, "当然，检索增强并非没有代价", "p");
	blocks_free(&b);
	issue_free(is);
}

static void test_ex65_headings(void **state)
{
	(void)state;
	struct issue *is = load(EX65);
	struct blocks b = all_blocks(is);
	/* printed over two lines, quotes included: no space where the line broke */
	assert_heading_level(&b, "从“背答案”到“查资料”", 2);
	assert_starts(&b, "传统的语言模型把知识都压缩在参数里", "p");
	/* a line-break space between two Han characters goes */
	assert_heading_level(&b, "检索增强让模型少说“胡话”", 2);
	assert_heading_level(&b, "让算法走出实验室走进会议室", 2);
	static const char *const plain[] = {
	    "模型是怎样“看懂”云的", "比“算得快”更重要的是“报得准”",
	    "从一间消声室开始",     "噪声不是敌人",
	    "一次失败的实验",       "Mentor 寄语",
	};
	for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
		assert_heading_level(&b, plain[i], 2);
	/* printed right on its paragraph, without a blank line between */
	assert_starts(&b, "回想起来，赵一凡觉得最有价值的反而是一次失败", "p");
	/* questions and interview lines are text */
	assert_starts(&b, "Q: 从物理转到计算机，最大的挑战是什么？", "p");
	assert_starts(&b, "记者：您认为年轻研究者最需要具备什么能力？", "p");
	assert_starts(&b, "姓名：赵一凡", "p");
	/* the related box: its label, then titles and their summaries */
	assert_kind(&b, "相关阅读", "related-title");
	assert_heading_level(&b, "科学匠人 | 何静怡：把问题想清楚，比把模型做大更重要", 3);
	assert_starts(&b, "从信息检索到大模型", "p");
	assert_kind(&b, "来源：科技日报", "byline");
	blocks_free(&b);
	/* the title printed over two lines on its page */
	assert_string_equal(is->articles[1].title, "首席研究员林晓岚当选 IEEE Fellow");
	assert_null(strstr(is->colophon_html, "<h"));
	assert_non_null(strstr(is->colophon_html, "关于研究院"));
	assert_non_null(strstr(is->colophon_html, "开放的合作"));
	issue_free(is);
}

static void test_ex65_page_breaks(void **state)
{
	(void)state;
	struct issue *is = load(EX65);
	struct blocks b = all_blocks(is);
	/* inside a word, the rest a line of its own */
	assert_kind(&b, "推动研究成果尽快在实际场景中落地。", "p");
	/* after a comma, a photo and its caption between */
	size_t para = find(&b, "纳入检索范围，让模型在回答科学问题时");
	assert_string_equal(b.v[para].kind, "p");
	assert_string_equal(b.v[para + 1].kind, "caption");
	assert_non_null(strstr(b.v[para + 1].text, "主管研究员何静怡"));
	/* inside a word, a blank-only line, a photo and its caption between */
	assert_kind(&b, "团队的每一次讨论几乎都是从一段录音开始的。", "p");
	/* mid-sentence before a quote closes */
	assert_kind(&b, "闭上眼睛都是一片片的绿色和黄色。”", "p");
	/* between two Latin words: a space */
	assert_kind(&b, "共同探索 Graph Neural Network 等新结构", "p");
	/* nothing else was joined */
	assert_starts(&b, "比“算得快”更重要的是“报得准”", "h2");
	assert_starts(&b, "林晓岚博士于 2009 年加入研究院", "p");
	blocks_free(&b);
	issue_free(is);
}

static void test_ex65_text(void **state)
{
	(void)state;
	struct issue *is = load(EX65);
	struct blocks b = all_blocks(is);
	/* full-width restored after Han and after a closing quote */
	assert_kind(&b, "检索增强的思路则不同，模型只负责理解与表达，知识交给", "p");
	assert_kind(&b, "说了一句“这个结果很干净”，我高兴了一整天", "p");
	assert_kind(&b, "赵一凡发现问题出在奖励函数上：模型只关心", "p");
	/* after a digit or a Latin word, as typed */
	assert_kind(&b, "降低了 27%, 而且已经被产品组采用", "p");
	assert_kind(&b, "Q: 从物理转到计算机", "p");
	assert_int_equal(ascii_after_han(&b), 0);
	/* numbers, units and math */
	assert_kind(&b, "约 3 × 10⁵ 组问答样本", "p");
	assert_kind(&b, "强降水（≥ 20 mm/h）", "p");
	blocks_free(&b);
	char *w = warnings(is);
	assert_non_null(strstr(w, EX65 ":61: taken for the caption"));
	assert_non_null(strstr(w, EX65 ":65: joined with line 67"));
	assert_non_null(strstr(w, EX65 ":104: the figure"));
	assert_non_null(strstr(w, EX65 ":145: the text refers to 图 3"));
	assert_non_null(strstr(w, EX65 ":147: joined with line 153"));
	assert_non_null(strstr(w, EX65 ":242: joined with line 249"));
	assert_null(strstr(w, "图 1, but"));
	assert_null(strstr(w, "表 1"));
	free(w);
	issue_free(is);
}

/* ---- export 66: other habits of other exports ----------------------------------- */

static void test_ex66_numbered(void **state)
{
	(void)state;
	struct issue *is = load(EX66);
	assert_int_equal(is->narticles, 6);
	/* short numbered lines one after the other: list items, not headings */
	struct blocks b = article_blocks(is, 1);
	assert_starts(&b, "1、智能语音展区", "li");
	assert_starts(&b, "2、科学计算展区", "li");
	assert_starts(&b, "3、创意互动展区", "li");
	for (size_t i = 0; i < b.n; i++)
		assert_true(b.v[i].kind[0] != 'h');
	blocks_free(&b);
	/* "一、…" section headings over their sections; "（1）…" items in one */
	b = article_blocks(is, 2);
	assert_heading_level(&b, "一、为什么电解质这么难找", 2);
	assert_heading_level(&b, "二、三步筛选的方法", 2);
	assert_heading_level(&b, "三、从计算到实验", 2);
	assert_starts(&b, "（1）用图神经网络快速预测", "li");
	assert_starts(&b, "（2）对剩下的约 2000 个分子", "li");
	assert_starts(&b, "（3）由材料学家根据合成难度", "li");
	/* a line ending in a colon introduces what follows */
	assert_starts(&b, "研究员们设计了一个由粗到精的三步筛选流程，如图 3 所示：", "p");
	blocks_free(&b);
	/* numbered sentences with paragraphs between: ordinary paragraphs */
	b = article_blocks(is, 3);
	assert_starts(&b, "1、先从相近的语言开始。", "p");
	assert_starts(&b, "2、再用单语数据补足。", "p");
	blocks_free(&b);
	issue_free(is);
}

static void test_ex66_captions(void **state)
{
	(void)state;
	struct issue *is = load(EX66);
	struct blocks b = all_blocks(is);
	/* a caption may end in a closing quote */
	assert_caption_alone(&b, "孩子们在创意互动展区体验“会说话的地图”（图略）", NULL);
	assert_caption_alone(&b, "研究员（左）向中学生介绍蛋白质结构预测模型（图略）", NULL);
	/* English captions */
	assert_caption_alone(&b,
	                     "Figure 2. Ionic conductivity of the three electrolytes at 25 °C "
	                     "(figure not included)",
	                     NULL);
	assert_caption_alone(&b, "Figure 3. BLEU on twelve low-resource languages", NULL);
	assert_caption_alone(&b, "Table 1: Prediction error of the screening models", "included");
	/* a note printed under a caption stays with it */
	assert_caption_alone(&b, "图 4：三种新型电解质与商用电解质的低温性能对比（图略）", NULL);
	assert_non_null(strstr(b.v[find(&b, "图 4：")].text, "注：商用电解质为 1 mol/L LiPF6"));
	/* the image the export names is not in the issue: no image, its caption */
	assert_caption_alone(&b, "图 3：三步筛选流程示意（图略）", NULL);
	for (size_t i = 0; i < is->narticles; i++) {
		assert_null(strstr(is->articles[i].html, "<img"));
		assert_null(strstr(is->articles[i].text, "fig-3.png"));
	}
	assert_kind(&b, "作者：研究院记者站", "byline");
	assert_kind(&b, "延伸阅读", "related-title");
	assert_string_equal(b.v[find(&b, "延伸阅读")].text, "延伸阅读");
	blocks_free(&b);
	char *w = warnings(is);
	assert_non_null(strstr(w, EX66 ":86: the image 'fig-3.png'"));
	assert_null(strstr(w, "refers to 图 3"));
	assert_null(strstr(w, "refers to 图 4"));
	free(w);
	issue_free(is);
}

static void test_ex66_text(void **state)
{
	(void)state;
	struct issue *is = load(EX66);
	struct blocks b = all_blocks(is);
	/* the printed first-line indent (two ideographic spaces) goes */
	assert_starts(&b, "长江江豚是长江里仅存的淡水鲸类", "p");
	assert_starts(&b, "据介绍，这套系统已在长江中下游", "p");
	/* page breaks: after "、" with a photo between, inside an English
	 * paragraph, and right before a comma */
	size_t para = find(&b, "训练需要多少数据、以及普通人能不能在自己的电脑上运行它");
	assert_string_equal(b.v[para].kind, "p");
	assert_string_equal(b.v[para + 1].kind, "caption");
	assert_kind(&b, "the shared subword vocabulary and to the careful filtering", "p");
	assert_kind(&b, "邀请更多母语者参与评估，并把他们的反馈", "p");
	/* a heading in quotes, its line-break space gone */
	assert_heading_level(&b, "“我想听听大自然在说什么”", 2);
	assert_heading_level(&b, "从听见到看见", 2);
	assert_starts(&b, "问：野外工作最难的是什么？", "p");
	/* a byline with a bar, an attribution under a quote: never headings */
	assert_kind(&b, "文｜本刊记者 陈可", "byline");
	assert_starts(&b, "——湖北一处江豚保护区的工作人员", "p");
	/* math */
	assert_kind(&b, "ΔE ≤ 0.1 eV", "p");
	blocks_free(&b);
	assert_string_equal(is->articles[2].title, "面向 Low-Resource Languages 的机器翻译");
	issue_free(is);
}

/* ---- rules on a body of their own ------------------------------------------------ */

static struct blocks body_blocks(const char *src)
{
	struct md_doc d;
	struct err e;
	err_clear(&e);
	struct md_opts o = {.flags = MD_RAW_EXPORT};
	if (md_render(src, strlen(src), &o, &d, &e) < 0)
		fail_msg("md_render: %s", e.msg);
	struct blocks b = parse_blocks(d.html);
	md_doc_free(&d);
	return b;
}

static void test_nested_enumerations(void **state)
{
	(void)state;
	/* "一、" sections, one opening on a "1、" list: sections stay headings */
	struct blocks b =
	    body_blocks("一、研究背景\n\n这项研究始于一次失败的实验，团队花了半年才找到原因。\n\n"
	                "二、研究方法\n\n1、数据清洗\n\n2、模型训练\n\n"
	                "两个步骤交替进行，直到误差不再下降为止。\n\n"
	                "三、主要结论\n\n结果表明，新方法把误差降低了一半。\n");
	assert_heading_level(&b, "一、研究背景", 2);
	assert_heading_level(&b, "二、研究方法", 2);
	assert_heading_level(&b, "三、主要结论", 2);
	assert_starts(&b, "1、数据清洗", "li");
	assert_starts(&b, "2、模型训练", "li");
	blocks_free(&b);
	/* a lone numbered line, or numbers that do not run on, are text */
	b = body_blocks("研究分为几个阶段，下面只介绍其中的一个。\n\n2、模型训练\n\n"
	                "训练用了三周时间，共消耗约 2000 GPU 小时。\n\n"
	                "1、先说数据\n\n3、再说模型\n\n这两点都很重要。\n");
	assert_starts(&b, "2、模型训练", "p");
	assert_starts(&b, "1、先说数据", "p");
	assert_starts(&b, "3、再说模型", "p");
	blocks_free(&b);
}

static void test_datelines_and_attributions(void **state)
{
	(void)state;
	struct blocks b =
	    body_blocks("编者按：这是一段编者按，说明本文的来历。\n\n2023年7月1日\n\n"
	                "研究院今天宣布了一项新的合作计划，合作期为三年。\n\n"
	                "1998 年的那个夏天\n\n那一年，实验室只有三个人和两台电脑。\n\n"
	                "“科研没有捷径。”\n\n——一位老研究员\n\n"
	                "这句话后来被写在了实验室的白板上，每天都能看到。\n");
	assert_starts(&b, "2023年7月1日", "p");
	assert_heading_level(&b, "1998 年的那个夏天", 2);
	assert_starts(&b, "——一位老研究员", "p");
	blocks_free(&b);
}

/* ---- the seed issue -------------------------------------------------------- */

static void test_seed_captions(void **state)
{
	(void)state;
	struct issue *is = load(SEED);
	struct blocks b = all_blocks(is);
	assert_caption_alone(&b, "图 3: Swin Transformer v1.0 vs. v2.0", "除此之外");
	assert_caption_alone(&b, "图 4: Log-spaced CPB vs. Linear spaced CPB", "借助");
	assert_caption_alone(&b, "图 1: FastCorrect 和基线方法的错误检测率和错误改正率对比",
	                     "考虑到");
	assert_kind(&b, "除此之外，研究员们还发现", "p");
	static const char *const photos[] = {
	    "微软亚洲研究院首席研究员白静",
	    "刘国栋参加微软亚洲研究院活动",
	    "微软亚洲研究院院长周礼栋",
	    "微软亚洲研究院主管研究员王童",
	    "微软云计算与人工智能事业部首席数据科学家党映农",
	    "龚海鹏教授在微软亚洲研究院做研究分享",
	    "NTD 在 SARS-CoV-2 的 S 蛋白构象变化中发挥调控功能示意图",
	    "刘国栋(后排左二)参加微软亚洲研究院院长周礼栋博士(前排右三)“咖啡时间”分享会",
	};
	for (size_t i = 0; i < sizeof photos / sizeof photos[0]; i++)
		assert_caption_alone(&b, photos[i], "利用这种");
	assert_kind(&b, "利用这种“楔形”模型", "p");
	/* a paragraph is not taken for a caption because of the trace */
	assert_kind(&b, "一年的“星跃”之旅已颇有成果", "p");
	blocks_free(&b);
	issue_free(is);
}

static void test_seed_headings(void **state)
{
	(void)state;
	struct issue *is = load(SEED);
	struct blocks b = all_blocks(is);
	assert_heading(&b, "从低分辨率向高分辨率迁移看 Swin Transformer v2.0 如何克服不良反应");
	assert_int_equal(strncmp(b.v[find(&b, "视觉大模型的另一难题")].text, "视觉大模型", 15), 0);
	assert_heading(&b, "Swin Transformer 打破视觉研究由 CNN “统治” 的局面");
	assert_heading(&b, "计算机科学的常态是变化这是它最具吸引力的所在");
	assert_heading(&b, "新冠病毒致病机理研究两开花计算生物学潜力凸显");
	/* the news item's heading in 微软云 */
	size_t h = find(&b, "2021 年度评选结果公布");
	assert_true(b.v[h].kind[0] == 'h');
	assert_int_equal(strncmp(b.v[h + 1].text, "自 2017 年至今", 17), 0);
	blocks_free(&b);
	assert_null(strstr(is->colophon_html, "<h"));
	assert_non_null(strstr(is->colophon_html, "关于微软亚洲研究院"));
	issue_free(is);
}

static void test_seed_numbered(void **state)
{
	(void)state;
	struct issue *is = load(SEED);
	struct blocks b = all_blocks(is);
	/* two numbered paragraphs one after the other: a list */
	assert_starts(&b, "1、大体系、全原子是指构建拥有百万级原子的完整 S 蛋白", "li");
	assert_starts(&b, "2、长时间指研究员们通过数十亿步的计算", "li");
	/* NÜWA's eight tasks, each over its description: under their heading */
	assert_heading_level(&b, "NÜWA 在八大任务中的效果", 2);
	static const char *const tasks[] = {"1、文本到图像任务", "2、草图到图像任务",
	                                    "5、图像到视频任务", "8、视频编辑"};
	for (size_t i = 0; i < sizeof tasks / sizeof tasks[0]; i++)
		assert_heading_level(&b, tasks[i], 3);
	assert_starts(&b, "输入编辑文本、视频，NÜWA 可以输出编辑之后的视频", "p");
	blocks_free(&b);
	issue_free(is);
}

static void test_seed_page_breaks(void **state)
{
	(void)state;
	struct issue *is = load(SEED);
	struct blocks b = all_blocks(is);
	assert_kind(&b, "从左到右依次扫描生成，边界处相比于 GLIDE 更加自然", "p");
	assert_kind(&b, "微软亚洲研究院在提供强大的计算资源", "p");
	assert_kind(&b, "避免增量式而无创新的工作、提升自己的研究品味", "p");
	blocks_free(&b);
	issue_free(is);
}

static void test_seed_punctuation(void **state)
{
	(void)state;
	struct issue *is = load(SEED);
	struct blocks b = all_blocks(is);
	assert_int_equal(ascii_after_han(&b), 0);
	/* ASCII after Latin, as typed */
	assert_kind(&b, "NÜWA-LIP: 让视觉编辑更精细", "h2");
	blocks_free(&b);
	issue_free(is);
}

int main(void)
{
	md_init();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_export_captions),
	    cmocka_unit_test(test_export_headings),
	    cmocka_unit_test(test_export_page_breaks),
	    cmocka_unit_test(test_export_punctuation),
	    cmocka_unit_test(test_export_warnings),
	    cmocka_unit_test(test_ex65_captions),
	    cmocka_unit_test(test_ex65_numbered),
	    cmocka_unit_test(test_ex65_headings),
	    cmocka_unit_test(test_ex65_page_breaks),
	    cmocka_unit_test(test_ex65_text),
	    cmocka_unit_test(test_ex66_numbered),
	    cmocka_unit_test(test_ex66_captions),
	    cmocka_unit_test(test_ex66_text),
	    cmocka_unit_test(test_nested_enumerations),
	    cmocka_unit_test(test_datelines_and_attributions),
	    cmocka_unit_test(test_seed_captions),
	    cmocka_unit_test(test_seed_headings),
	    cmocka_unit_test(test_seed_numbered),
	    cmocka_unit_test(test_seed_page_breaks),
	    cmocka_unit_test(test_seed_punctuation),
	};
	int r = cmocka_run_group_tests_name("typeset", tests, NULL, NULL);
	md_shutdown();
	return r;
}
