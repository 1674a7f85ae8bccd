/* Inline styles for article HTML in mail (see mailhtml.h). */
#include <ctype.h>
#include <stdbool.h>
#include <string.h>

#include "mailhtml.h"

struct rule {
	const char *tag, *class; /* class NULL: any element of the tag without an mx- class */
	const char *style;
	const char *add_class; /* a hook for the dark-mode rules, or NULL */
};

static const struct rule rules[] = {
    {"p", "mx-caption",
     "margin:-6px 0 18px;font-size:13px;line-height:1.6;color:#6b7280;text-align:center;", NULL},
    {"p", "mx-byline", "margin:0 0 16px;font-size:14px;color:#6b7280;", NULL},
    {"p", "mx-related-title", "margin:0 0 8px;font-size:15px;font-weight:700;", NULL},
    {"p", NULL, "margin:0 0 16px;", NULL},
    {"div", "mx-related",
     "background:#f3f4f6;border-radius:8px;padding:16px 20px;margin:28px 0 "
     "0;font-size:15px;line-height:1.7;",
     NULL},
    {"div", "mx-table", "overflow-x:auto;margin:4px 0 8px;", NULL},
    {"h1", NULL, "margin:32px 0 12px;font-size:22px;line-height:1.4;font-weight:700;", NULL},
    {"h2", NULL, "margin:32px 0 12px;font-size:21px;line-height:1.45;font-weight:700;", NULL},
    {"h3", NULL, "margin:28px 0 10px;font-size:18px;line-height:1.5;font-weight:700;", NULL},
    {"h4", NULL, "margin:16px 0 6px;font-size:16px;line-height:1.5;font-weight:700;", NULL},
    {"h5", NULL, "margin:16px 0 6px;font-size:15px;font-weight:700;", NULL},
    {"h6", NULL, "margin:16px 0 6px;font-size:14px;font-weight:700;", NULL},
    {"a", NULL, "color:#1a56db;text-decoration:underline;", NULL},
    {"ul", "mx-items", "margin:0 0 16px;padding-left:0;list-style:none;", NULL},
    {"li", "mx-item", "margin:0 0 8px;", NULL},
    {"ul", NULL, "margin:0 0 16px;padding-left:24px;", NULL},
    {"ol", NULL, "margin:0 0 16px;padding-left:24px;", NULL},
    {"li", NULL, "margin:0 0 6px;", NULL},
    {"blockquote", NULL,
     "margin:0 0 16px;padding:4px 16px;border-left:4px solid #e5e7eb;color:#4b5563;", NULL},
    {"pre", NULL,
     "margin:0 0 16px;background:#f3f4f6;padding:12px "
     "14px;border-radius:6px;overflow-x:auto;font-size:13px;line-height:1.5;white-space:pre;",
     "mx-code"},
    /* word-break and overflow-wrap are inherited: set once on the table, not
     * on every cell (a results table has hundreds; Gmail clips long mail). */
    {"table", NULL,
     "border-collapse:collapse;width:100%;font-size:12px;line-height:1.45;margin:0;"
     "word-break:keep-all;overflow-wrap:normal;",
     NULL},
    {"th", NULL, "border:1px solid #e5e7eb;padding:5px 7px;background:#f9fafb;", "mx-th"},
    {"td", NULL, "border:1px solid #e5e7eb;padding:5px 7px;vertical-align:top;", "mx-td"},
    {"img", NULL, "max-width:100%;height:auto;border:0;display:block;margin:0 auto 8px;", NULL},
    {"hr", NULL, "border:0;border-top:1px solid #e5e7eb;margin:28px 0;", "mx-rule"},
};

static const char inline_code[] =
    "font-family:Menlo,Consolas,'Courier New',monospace;font-size:14px;background:#f3f4f6;"
    "padding:1px 4px;border-radius:4px;";
static const char pre_code[] = "font-family:Menlo,Consolas,'Courier New',monospace;";

/* The value of attribute name in the tag text [p, end), or NULL. */
static const char *attr(const char *p, const char *end, const char *name, size_t *len)
{
	size_t n = strlen(name);
	for (const char *q = p + 1; q + n + 2 < end; q++) {
		if (q[-1] == ' ' && strncmp(q, name, n) == 0 && q[n] == '=' && q[n + 1] == '"') {
			const char *v = q + n + 2;
			const char *e = memchr(v, '"', (size_t)(end - v));
			if (e == NULL)
				return NULL;
			*len = (size_t)(e - v);
			return v;
		}
	}
	return NULL;
}

int mailhtml_inline(const char *html, struct buf *out)
{
	bool in_pre = false;
	const char *p = html;
	while (*p) {
		const char *lt = strchr(p, '<');
		if (lt == NULL) {
			if (buf_adds(out, p) < 0)
				return -1;
			break;
		}
		if (buf_add(out, p, (size_t)(lt - p)) < 0)
			return -1;
		const char *gt = strchr(lt, '>');
		if (gt == NULL) {
			if (buf_adds(out, lt) < 0)
				return -1;
			break;
		}
		const char *name = lt + 1;
		bool closing = *name == '/';
		if (closing)
			name++;
		size_t nl = 0;
		while (isalnum((unsigned char)name[nl]))
			nl++;
		char tag[16] = "";
		if (nl > 0 && nl < sizeof tag)
			memcpy(tag, name, nl);
		if (strcmp(tag, "pre") == 0)
			in_pre = !closing;
		size_t cl = 0, al = 0, sl = 0;
		const char *cls = attr(lt, gt, "class", &cl);
		const char *align = attr(lt, gt, "align", &al);
		const char *style = NULL, *add_class = NULL;
		if (!closing && nl > 0 && attr(lt, gt, "style", &sl) == NULL) {
			if (strcmp(tag, "code") == 0) {
				style = in_pre ? pre_code : inline_code;
			} else {
				for (size_t i = 0; i < sizeof rules / sizeof rules[0] && !style;
				     i++) {
					const struct rule *r = &rules[i];
					if (strcmp(r->tag, tag) != 0)
						continue;
					if (r->class == NULL
					        ? (cls == NULL || strncmp(cls, "mx-", 3) != 0)
					        : (cls && cl == strlen(r->class) &&
					           strncmp(cls, r->class, cl) == 0)) {
						style = r->style;
						add_class = cls ? NULL : r->add_class;
					}
				}
			}
		}
		if (style == NULL) {
			if (buf_add(out, lt, (size_t)(gt - lt + 1)) < 0)
				return -1;
			p = gt + 1;
			continue;
		}
		const char *end = gt;
		if (end > lt && end[-1] == '/')
			end--;
		while (end > lt && end[-1] == ' ')
			end--;
		int r = buf_add(out, lt, (size_t)(end - lt));
		if (r == 0 && add_class)
			r = buf_printf(out, " class=\"%s\"", add_class);
		if (r == 0)
			r = buf_printf(out, " style=\"%s", style);
		if (r == 0 && align && al > 0 && al < 8)
			r = buf_printf(out, "text-align:%.*s;", (int)al, align);
		if (r == 0)
			r = buf_addc(out, '"');
		if (r == 0)
			r = buf_add(out, end, (size_t)(gt - end + 1));
		if (r < 0)
			return -1;
		p = gt + 1;
	}
	return 0;
}
