/*
 * An issue file and the articles in it (docs/issue-format.md).
 * issue_parse() checks the bytes (UTF-8, no NUL, size),
 * reads the front matter, and finds the articles in one of three ways:
 * headings, the printed magazine's table of contents, or a single article.
 * Each article is then rendered (md.h) to HTML, plain text and a summary.
 *
 * docs/issue-format.md describes the rules for editors.
 */
#ifndef MATRIX_ISSUE_H
#define MATRIX_ISSUE_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "conf.h"
#include "err.h"

enum issue_mode { ISSUE_HEADINGS, ISSUE_TOC, ISSUE_SINGLE };

struct article {
	int index;      /* 1-based */
	char *section;  /* "" when none */
	char *title;    /* one line, no control characters */
	char *slug;     /* URL-safe ASCII, unique in the issue */
	char *markdown; /* the body as written (after normalisation) */
	char *html;     /* rendered body (fragment) */
	char *text;     /* plain-text body */
	char *summary;  /* first paragraph, at most 200 characters */
	int line;       /* line of the title in the file (0: front matter) */
	int body_line;  /* first line of the body */
};

struct issue {
	char *path;
	char *title; /* "Matrix NO.60" */
	int number;
	char *period;   /* "2022年1 - 3月", may be "" */
	char *language; /* "zh-CN" */
	bool is_draft;
	char **lists; /* list names from the front matter; nlists = 0: every list */
	size_t nlists;
	int lists_line; /* where the front matter names them */
	time_t date;    /* front matter date (UTC midnight); 0 when not given */
	time_t send_at; /* front matter send_at; 0 when not given */
	int send_at_line;
	enum issue_mode mode;
	struct article *articles;
	size_t narticles;
	char *preface; /* text before the first article (markdown), may be "" */
	char *preface_html;
	char *preface_text; /* plain text, for the text part of the digest */
	char *colophon;     /* back matter after the last article (markdown), may be "" */
	char *colophon_html;
	char hash[65]; /* SHA-256 of the file's bytes, hex */
	char *folder;  /* the issue's folder when it is one (images live there), else NULL */
	char **assets; /* relative image paths the articles reference, nassets */
	size_t nassets;
	/* What the parser had to guess or found doubtful, "FILE:LINE: what and
	 * what to do" each (matrixctl inspect prints them); nwarnings of them. */
	char **warnings;
	size_t nwarnings;
};

struct issue_opts {
	size_t max_bytes;       /* max_issue_bytes */
	const char *site_title; /* names the issue when nothing else does: "Matrix NO.61" */
	const char *language;   /* default language */
	const char *base_url;   /* site.base_url: images become base_url/issues/N/PATH */
};

/* The options a configuration gives (max_issue_bytes, site.*). */
struct issue_opts issue_opts_of(const struct conf *c);

/*
 * Parses len bytes of an issue named path (used in messages only). Returns
 * an allocated issue (issue_free) or -1 with err "PATH:LINE: what is wrong".
 */
int issue_parse(const char *path, const char *data, size_t len, const struct issue_opts *o,
                struct issue **out, struct err *err);

/* Reads and parses path: a file, or a directory holding issue.md. */
int issue_load(const char *path, const struct issue_opts *o, struct issue **out, struct err *err);

void issue_free(struct issue *is);

/* Whether the period ("2022年1 - 3月") ended before now; false when it
 * names no year. */
bool period_passed(const char *period, time_t now);

/*
 * The front matter's send_at: an ISO 8601 date and time with an offset
 * ("2022-04-15 08:00 +08:00", "2022-04-15T08:00:00Z"; seconds optional,
 * offsets as Z, +HH:MM, +HHMM or +HH), or a bare date, which is 00:00 in
 * the process's local time zone (site.timezone, conf_apply_timezone).
 * 0 with *out set, or -1 with *why saying what is wrong.
 */
int issue_parse_send_at(const char *v, time_t *out, const char **why);
/* t as ISO 8601 in the local time zone: "2022-04-15T08:00:00+08:00". */
void issue_format_time(time_t t, char *out, size_t n);

/* The front matter's lists as "a,b" ("" = every list); allocated. */
char *issue_lists_csv(const struct issue *is);

/* The `matrixctl --json inspect` object (docs/matrixctl.8). Caller owns the reference. */
struct json_object *issue_to_json(const struct issue *is);

/*
 * The slug rule (docs/issue-format.md): lowercase ASCII words of the title
 * joined by '-', at most 48 characters; a title with non-ASCII letters (CJK)
 * gets a 6-hex-digit hash of its normalised text appended ("ai-3f9a1c"), or
 * is only that hash. Allocated.
 */
char *issue_slug(const char *title);

/*
 * The matching key of a title: letters, digits and ideographs only, full-width
 * forms folded to ASCII, Latin letters lowercased — what stays the same when
 * an export changes punctuation width, spacing, quotes, case or commas.
 * Appends UTF-8 to out.
 */
void issue_title_key(const char *s, size_t n, struct buf *out);

#endif
