/*
 * libFuzzer target for what matrixd judges of an HTTP request itself
 * (lib/httpreq.c, lib/token.c): the input is read as a raw request (a
 * request line, header lines, an empty line, a body) by a deliberately
 * loose splitter, and every piece goes through the functions the daemon
 * calls on it: the head's framing and limits, the path decoder, the
 * X-Forwarded-For walk, the form parser and the token checks. Nothing may
 * crash, leak or read past its input, whatever the bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httpreq.h"
#include "token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXH 64

/* The next line of [*p, end) without its CRLF or LF; NULL at the end. */
static const char *line(const char **p, const char *end, size_t *len)
{
	if (*p >= end)
		return NULL;
	const char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
	const char *e = nl ? nl : end;
	*p = nl ? nl + 1 : end;
	*len = (size_t)(e - s) - (e > s && e[-1] == '\r');
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct token_key key;
	static struct httpreq_net *nets;
	static size_t nnets;
	static int init;
	if (!init) {
		memset(key.secret, 0x42, sizeof key.secret);
		struct err e;
		httpreq_nets_parse("127.0.0.1, ::1, 10.0.0.0/8", &nets, &nnets, &e);
		init = 1;
	}
	const char *p = (const char *)data, *end = p + size;
	size_t len;
	const char *first = line(&p, end, &len);
	if (first == NULL)
		return 0;
	/* METHOD SP TARGET SP VERSION, split at the first and last space */
	char *rl = strndup(first, len);
	char *sp1 = strchr(rl, ' '), *sp2 = strrchr(rl, ' ');
	const char *method = rl, *target = "", *version = "";
	if (sp1 && sp2 && sp1 != sp2) {
		*sp1 = *sp2 = '\0';
		target = sp1 + 1;
		version = sp2 + 1;
	}
	struct httpreq_header hs[MAXH];
	const char *xff[MAXH];
	size_t xlen[MAXH], n = 0, nx = 0;
	const char *l;
	while ((l = line(&p, end, &len)) != NULL && len > 0 && n < MAXH) {
		const char *colon = memchr(l, ':', len);
		if (colon == NULL)
			continue;
		const char *v = colon + 1;
		while (v < l + len && (*v == ' ' || *v == '\t'))
			v++;
		hs[n] = (struct httpreq_header){l, v, (size_t)(colon - l), (size_t)(l + len - v)};
		if (hs[n].name_len == 15 && strncasecmp(l, "X-Forwarded-For", 15) == 0) {
			xff[nx] = v;
			xlen[nx++] = hs[n].value_len;
		}
		n++;
	}
	struct httpreq_head head = {method, target, version, hs, n};
	const char *why;
	(void)httpreq_judge(&head, &why);

	char *path = malloc(strlen(target) + 1);
	size_t plen;
	if (httpreq_path_decode(target, path, &plen) == 0 && plen >= 3) {
		int64_t a, b;
		(void)token_check(&key, TOKEN_UNSUBSCRIBE, path + 3, plen - 3, &a, &b);
		(void)token_check(&key, TOKEN_CONFIRM, path + 3, plen - 3, &a, &b);
		(void)token_check(&key, TOKEN_VERP, path + 3, plen - 3, &a, NULL);
	}
	free(path);

	unsigned char peer[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
	unsigned char client[16];
	(void)httpreq_client(peer, xff, xlen, nx, nets, nnets, client);

	struct httpreq_form f;
	struct err e;
	if (httpreq_form_parse(p, (size_t)(end - p), &f, &e) == 0) {
		for (size_t i = 0; i < f.n; i++)
			(void)httpreq_form_count(&f, f.fields[i].name);
		(void)httpreq_form_get(&f, "email");
		httpreq_form_free(&f);
	}
	/* the header values as a trusted-proxies setting, too */
	for (size_t i = 0; i < n && i < 4; i++) {
		char *s = strndup(hs[i].value, hs[i].value_len);
		struct httpreq_net *x;
		size_t nxn;
		if (httpreq_nets_parse(s, &x, &nxn, &e) == 0)
			free(x);
		free(s);
	}
	free(rl);
	return 0;
}
