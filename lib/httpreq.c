/* Judging HTTP requests (see httpreq.h): pure functions over bytes. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httpreq.h"
#include "text.h"
#include "utf8.h"
#include "xmalloc.h"

static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* ---- the head ------------------------------------------------------------ */

/* RFC 9110 §5.6.2 tchar */
static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool name_is(const struct httpreq_header *h, const char *name)
{
	return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

/* Host = uri-host [ ":" port ] (RFC 9110 §7.2): reg-name, IPv4 or an IP
 * literal in brackets; empty is allowed (§7.2, no authority). */
static bool host_valid(const char *s, size_t n)
{
	size_t i = 0;
	if (n > 0 && s[0] == '[') {
		for (i = 1; i < n && s[i] != ']'; i++)
			if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
			      (s[i] >= 'A' && s[i] <= 'F') || s[i] == ':' || s[i] == '.'))
				return false;
		if (i == n)
			return false;
		i++;
	} else {
		for (; i < n && s[i] != ':'; i++) {
			unsigned char c = (unsigned char)s[i];
			bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			                  (c >= '0' && c <= '9') || strchr("-._~", c) != NULL;
			bool sub_delim = strchr("!$&'()*+,;=", c) != NULL;
			if (c == 0 || !(unreserved || sub_delim || c == '%'))
				return false;
		}
	}
	if (i == n)
		return true;
	if (s[i] != ':')
		return false;
	for (i++; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* The value without leading and trailing OWS. */
static void trim(const char **s, size_t *n)
{
	while (*n > 0 && (**s == ' ' || **s == '\t'))
		(*s)++, (*n)--;
	while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
		(*n)--;
}

unsigned httpreq_judge(const struct httpreq_head *h, const char **why)
{
	static const char *dummy;
	if (why == NULL)
		why = &dummy;
	*why = NULL;
	const char *m = h->method;
	if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0 && strcmp(m, "POST") != 0) {
		*why = "method not allowed";
		return 405;
	}
	bool v10 = strcmp(h->version, "HTTP/1.0") == 0;
	if (!v10 && strcmp(h->version, "HTTP/1.1") != 0) {
		*why = "HTTP version not supported";
		return 505;
	}
	if (strlen(h->target) > HTTPREQ_URL_MAX) {
		*why = "request target too long";
		return 414;
	}
	for (const unsigned char *t = (const unsigned char *)h->target; *t; t++)
		if (*t <= ' ' || *t >= 0x7f) {
			/* RFC 9112 §3.2: a target is printable ASCII; what else
			 * there is would be read differently by the next parser */
			*why = "space, control or non-ASCII byte in the request target";
			return 400;
		}
	size_t bytes = 0, hosts = 0, lengths = 0, codings = 0;
	bool chunked_last = false;
	unsigned long long length = 0;
	for (size_t i = 0; i < h->nheaders; i++) {
		const struct httpreq_header *x = &h->headers[i];
		bytes += x->name_len + x->value_len;
		if (bytes > HTTPREQ_HEAD_MAX) {
			*why = "header fields too large";
			return 431;
		}
		if (x->name_len == 0) {
			*why = "empty header name";
			return 400;
		}
		for (size_t k = 0; k < x->name_len; k++)
			if (!is_tchar((unsigned char)x->name[k])) {
				/* RFC 9112 §5.1: whitespace before the colon is one of these */
				*why = "header name is not a token";
				return 400;
			}
		if (memchr(x->value, '\0', x->value_len) || memchr(x->value, '\r', x->value_len) ||
		    memchr(x->value, '\n', x->value_len)) {
			*why = "NUL, CR or LF in a header value";
			return 400;
		}
		const char *v = x->value;
		size_t vn = x->value_len;
		trim(&v, &vn);
		if (name_is(x, "Host")) {
			if (++hosts > 1 || !host_valid(v, vn)) {
				*why = hosts > 1 ? "more than one Host" : "invalid Host";
				return 400;
			}
		} else if (name_is(x, "Content-Length")) {
			if (++lengths > 1) {
				*why = "more than one Content-Length";
				return 400;
			}
			if (vn == 0 || vn > 18) {
				*why = "invalid Content-Length";
				return 400;
			}
			for (size_t k = 0; k < vn; k++) {
				if (v[k] < '0' || v[k] > '9') {
					*why = "invalid Content-Length";
					return 400;
				}
				length = length * 10 + (unsigned)(v[k] - '0');
			}
		} else if (name_is(x, "Transfer-Encoding")) {
			/* a list, possibly over several lines (RFC 9110 §5.3): only
			 * "chunked", once and last, is a framing we read */
			for (const char *p = v, *end = v + vn; p <= end;) {
				const char *comma = memchr(p, ',', (size_t)(end - p));
				const char *e = comma ? comma : end;
				const char *t = p;
				size_t tn = (size_t)(e - p);
				trim(&t, &tn);
				if (tn > 0) {
					codings++;
					chunked_last = tn == 7 && strncasecmp(t, "chunked", 7) == 0;
					if (!chunked_last || codings > 1) {
						*why = "transfer coding other than chunked";
						return 501;
					}
				}
				p = e + 1;
			}
		}
	}
	if (!v10 && hosts == 0) {
		*why = "no Host in HTTP/1.1";
		return 400;
	}
	if (codings > 0 && lengths > 0) {
		*why = "Content-Length with Transfer-Encoding";
		return 400;
	}
	if (codings > 0 && v10) {
		/* RFC 9112 §6.1: the framing of such a message is faulty */
		*why = "Transfer-Encoding in HTTP/1.0";
		return 400;
	}
	if (lengths > 0 && length > HTTPREQ_BODY_MAX) {
		*why = "request body too large";
		return 413;
	}
	return 0;
}

/* ---- the path ------------------------------------------------------------ */

int httpreq_path_decode(const char *raw, char *out, size_t *n)
{
	size_t o = 0;
	if (raw[0] != '/')
		return -1;
	for (const char *p = raw; *p; p++) {
		int ch = (unsigned char)*p;
		if (ch == '%') {
			int hi = hex_value((unsigned char)p[1]);
			int lo = hi < 0 ? -1 : hex_value((unsigned char)p[2]);
			if (lo < 0)
				return -1;
			ch = hi * 16 + lo;
			p += 2;
		}
		if (ch < 0x20 || ch == 0x7f || ch == '\\')
			return -1;
		out[o++] = (char)ch;
	}
	out[o] = '\0';
	*n = o;
	for (const char *s = out; s; s = strchr(s + 1, '/')) {
		const char *seg = s + 1;
		size_t len = strcspn(seg, "/");
		if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
			return -1;
	}
	return 0;
}

/* ---- addresses and the client -------------------------------------------- */

bool httpreq_addr_parse(const char *s, size_t len, unsigned char out[16])
{
	char tmp[INET6_ADDRSTRLEN + 2];
	if (len >= 2 && s[0] == '[' && s[len - 1] == ']')
		s++, len -= 2;
	if (len == 0 || len >= sizeof tmp || memchr(s, '\0', len))
		return false;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	struct in_addr a4;
	if (inet_pton(AF_INET, tmp, &a4) == 1) {
		memcpy(out, v4mapped, 12);
		memcpy(out + 12, &a4, 4);
		return true;
	}
	return inet_pton(AF_INET6, tmp, out) == 1;
}

int httpreq_nets_parse(const char *s, struct httpreq_net **out, size_t *n, struct err *err)
{
	struct httpreq_net *nets = NULL;
	size_t k = 0;
	*out = NULL;
	*n = 0;
	for (const char *p = s; *p;) {
		p += strspn(p, ", \t");
		size_t len = strcspn(p, ", \t");
		if (len == 0)
			break;
		const char *slash = memchr(p, '/', len);
		size_t alen = slash ? (size_t)(slash - p) : len;
		struct httpreq_net net;
		bool ok = httpreq_addr_parse(p, alen, net.addr) && p[0] != '[';
		bool is4 = ok && memcmp(net.addr, v4mapped, 12) == 0;
		net.bits = 128;
		if (ok && slash) {
			unsigned long bits = 0;
			size_t digits = len - alen - 1;
			ok = digits > 0 && digits <= 3;
			for (size_t i = 0; ok && i < digits; i++) {
				char c = slash[1 + i];
				ok = c >= '0' && c <= '9';
				bits = bits * 10 + (unsigned long)(c - '0');
			}
			ok = ok && bits <= (is4 ? 32u : 128u);
			net.bits = (unsigned)(is4 ? bits + 96 : bits);
		}
		if (!ok) {
			free(nets);
			return err_set(err, ERR_CONFIG,
			               "'%.*s' is not an address or network such as 127.0.0.1, ::1 "
			               "or 10.0.0.0/8",
			               (int)(len > 64 ? 64 : len), p);
		}
		nets = xreallocarray(nets, k + 1, sizeof *nets);
		nets[k++] = net;
		p += len;
	}
	*out = nets;
	*n = k;
	return 0;
}

bool httpreq_nets_match(const struct httpreq_net *nets, size_t n, const unsigned char addr[16])
{
	for (size_t i = 0; i < n; i++) {
		unsigned full = nets[i].bits / 8, rest = nets[i].bits % 8;
		if (memcmp(nets[i].addr, addr, full) != 0)
			continue;
		if (rest == 0)
			return true;
		unsigned char mask = (unsigned char)(0xff << (8 - rest));
		if (((nets[i].addr[full] ^ addr[full]) & mask) == 0)
			return true;
	}
	return false;
}

bool httpreq_client(const unsigned char peer[16], const char *const *xff, const size_t *xff_len,
                    size_t nxff, const struct httpreq_net *nets, size_t nnets,
                    unsigned char out[16])
{
	memcpy(out, peer, 16);
	if (!httpreq_nets_match(nets, nnets, peer))
		return false;
	/* the header lines from the last, each list from its end */
	for (size_t i = nxff; i-- > 0;) {
		const char *start = xff[i], *end = xff[i] + xff_len[i];
		while (end > start) {
			const char *comma = end;
			while (comma > start && comma[-1] != ',')
				comma--;
			const char *t = comma;
			size_t tn = (size_t)(end - comma);
			trim(&t, &tn);
			end = comma > start ? comma - 1 : start;
			if (tn == 0)
				continue;
			unsigned char hop[16];
			if (!httpreq_addr_parse(t, tn, hop))
				return memcmp(out, peer, 16) != 0;
			memcpy(out, hop, 16);
			if (!httpreq_nets_match(nets, nnets, hop))
				return true;
		}
	}
	return memcmp(out, peer, 16) != 0;
}

/* ---- forms --------------------------------------------------------------- */

/* Decodes n bytes of s ('+' and %XX) into an allocated string; NULL for a
 * bad escape, invalid UTF-8 or a NUL. */
static char *form_decode(const char *s, size_t n)
{
	char *out = xmalloc(n + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int ch = (unsigned char)s[i];
		if (ch == '+') {
			ch = ' ';
		} else if (ch == '%') {
			int h1 = i + 1 < n ? hex_value((unsigned char)s[i + 1]) : -1;
			int h2 = i + 2 < n ? hex_value((unsigned char)s[i + 2]) : -1;
			if (h1 < 0 || h2 < 0) {
				free(out);
				return NULL;
			}
			ch = h1 * 16 + h2;
			i += 2;
		}
		out[o++] = (char)ch;
	}
	out[o] = '\0';
	if (memchr(out, '\0', o) || !utf8_valid(out, o, NULL)) {
		free(out);
		return NULL;
	}
	return out;
}

int httpreq_form_parse(const char *body, size_t len, struct httpreq_form *f, struct err *err)
{
	f->fields = NULL;
	f->n = 0;
	for (size_t i = 0; i < len;) {
		const char *amp = memchr(body + i, '&', len - i);
		size_t end = amp ? (size_t)(amp - body) : len;
		if (end > i) {
			const char *eq = memchr(body + i, '=', end - i);
			size_t nend = eq ? (size_t)(eq - body) : end;
			if (f->n == HTTPREQ_FIELDS_MAX) {
				httpreq_form_free(f);
				return err_set(err, ERR_INPUT, "more than %d form fields",
				               HTTPREQ_FIELDS_MAX);
			}
			char *name = form_decode(body + i, nend - i);
			char *value = eq ? form_decode(eq + 1, end - nend - 1) : xstrdup("");
			if (name == NULL || value == NULL) {
				free(name);
				free(value);
				httpreq_form_free(f);
				return err_set(
				    err, ERR_INPUT,
				    "a form field is not valid UTF-8 or has a bad %% escape");
			}
			f->fields = xreallocarray(f->fields, f->n + 1, sizeof *f->fields);
			f->fields[f->n++] = (struct httpreq_field){name, value};
		}
		i = end + 1;
	}
	return 0;
}

void httpreq_form_free(struct httpreq_form *f)
{
	if (f == NULL)
		return;
	for (size_t i = 0; i < f->n; i++) {
		free(f->fields[i].name);
		free(f->fields[i].value);
	}
	free(f->fields);
	f->fields = NULL;
	f->n = 0;
}

const char *httpreq_form_get(const struct httpreq_form *f, const char *name)
{
	for (size_t i = 0; i < f->n; i++)
		if (strcmp(f->fields[i].name, name) == 0)
			return f->fields[i].value;
	return NULL;
}

size_t httpreq_form_count(const struct httpreq_form *f, const char *name)
{
	size_t k = 0;
	for (size_t i = 0; i < f->n; i++)
		k += strcmp(f->fields[i].name, name) == 0;
	return k;
}
