/*
 * RFC 5321 mailbox validation and the subscriber key (see addr.h). The
 * checks run in the order an admin can act on: characters that can never
 * appear, then the shape (local part, '@', domain), then lengths.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "buf.h"
#include "utf8.h"
#include "xmalloc.h"

/* Shows at most the first 80 bytes of an address, control bytes escaped, so
 * that the message stays one printable line. */
static void show(char *out, size_t size, const char *s, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n && i < 80 && o + 5 < size; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			o += (size_t)snprintf(out + o, size - o, "\\x%02x", c);
		else
			out[o++] = (char)c;
	}
	if (n > 80 && o + 4 < size) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

static int bad(struct err *err, const char *s, size_t n, const char *why)
{
	char shown[400];
	show(shown, sizeof shown, s, n);
	return err_set(err, ERR_INPUT, "invalid address '%s': %s", shown, why);
}

/* RFC 5322 §3.2.3 atext; bytes >= 0x80 are UTF8-non-ascii (RFC 6531 §3.3),
 * already known to be valid UTF-8. */
static bool is_atext(unsigned char c)
{
	if (c >= 0x80)
		return true;
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool is_ldh(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c >= 0x80;
}

/* Dot-string (RFC 5321 §4.1.2): atoms separated by single dots. */
static const char *check_dot_string(const char *p, size_t n)
{
	if (p[0] == '.' || p[n - 1] == '.')
		return "the local part starts or ends with a dot";
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '.') {
			if (p[i + 1] == '.')
				return "the local part has two dots in a row";
		} else if (!is_atext(c)) {
			return c == '"'
			           ? "a quote in the local part (quote all of it or nothing)"
			           : "the local part holds a character only allowed when quoted "
			             "(one of ( ) , : ; @ [ \\ ])";
		}
	}
	return NULL;
}

/* Quoted-string: qtextSMTP or a backslash pair, space excluded (see addr.h). */
static const char *check_quoted(const char *p, size_t n)
{
	if (n < 3)
		return "the quoted local part is empty";
	for (size_t i = 1; i + 1 < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '\\') {
			if (i + 2 >= n)
				return "the quoted local part ends with a backslash";
			i++;
		} else if (c == '"') {
			return "a quote inside the quoted local part is not escaped";
		}
	}
	return NULL;
}

static const char *check_literal(const char *d, size_t n)
{
	char tmp[ADDR_DOMAIN_MAX + 1];
	unsigned char bin[16];
	if (d[n - 1] != ']' || n - 2 >= sizeof tmp)
		return "the address literal is not closed by ']'";
	memcpy(tmp, d + 1, n - 2);
	tmp[n - 2] = '\0';
	if (strncasecmp(tmp, "IPv6:", 5) == 0) {
		if (inet_pton(AF_INET6, tmp + 5, bin) == 1)
			return NULL;
		return "the IPv6 address literal is not valid";
	}
	if (inet_pton(AF_INET, tmp, bin) == 1)
		return NULL;
	return "the address literal is neither [IPv4] nor [IPv6:…]";
}

static const char *check_domain(const char *d, size_t n)
{
	if (d[0] == '[')
		return check_literal(d, n);
	if (d[0] == '.' || d[n - 1] == '.')
		return "the domain starts or ends with a dot";
	size_t labels = 0, start = 0;
	bool numeric = true;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && d[i] != '.') {
			unsigned char c = (unsigned char)d[i];
			if (!is_ldh(c))
				return c == '@'
				           ? "more than one '@' outside quotes"
				           : "the domain holds a character other than letters, "
				             "digits, '-' and '.'";
			continue;
		}
		size_t len = i - start;
		if (len == 0)
			return "the domain has two dots in a row";
		if (len > 63)
			return "a domain label is longer than 63 octets";
		if (d[start] == '-' || d[i - 1] == '-')
			return "a domain label starts or ends with '-'";
		numeric = true;
		for (size_t k = start; k < i; k++)
			if (d[k] < '0' || d[k] > '9')
				numeric = false;
		labels++;
		start = i + 1;
	}
	if (labels < 2)
		return "the domain is not fully qualified (user@example.org)";
	if (numeric)
		return "the top-level domain is numeric (write an IP address as [192.0.2.1])";
	return NULL;
}

int addr_check(const char *s, size_t n, char *out, struct err *err)
{
	if (n == 0)
		return err_set(err, ERR_INPUT, "invalid address '': empty");
	/* The most telling reason first: "Name <addr>" has a space too. */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\0')
			return bad(err, s, n, "contains a NUL byte");
		if (c == '\r' || c == '\n')
			return bad(err, s, n, "contains a line break (CR or LF)");
		if (c < 0x20 || c == 0x7f)
			return bad(err, s, n, "contains a control character");
	}
	if (memchr(s, '<', n) || memchr(s, '>', n))
		return bad(err, s, n,
		           "contains '<' or '>' (give the bare address, not 'Name <address>')");
	if (memchr(s, ' ', n))
		return bad(err, s, n, "contains a space");
	if (!utf8_valid(s, n, NULL))
		return bad(err, s, n, "is not valid UTF-8");

	size_t at;
	if (s[0] == '"') {
		/* The closing quote is the first unescaped one. */
		size_t i = 1;
		while (i < n && s[i] != '"')
			i += s[i] == '\\' ? 2 : 1;
		if (i >= n)
			return bad(err, s, n, "the quoted local part is not closed");
		at = i + 1;
		if (at >= n || s[at] != '@')
			return bad(err, s, n, "no '@' right after the quoted local part");
	} else {
		const char *p = memchr(s, '@', n);
		if (p == NULL)
			return bad(err, s, n, "no '@domain'");
		at = (size_t)(p - s);
	}
	if (at == 0)
		return bad(err, s, n, "nothing before the '@'");
	if (at > ADDR_LOCAL_MAX)
		return bad(err, s, n, "the local part is longer than 64 octets");
	const char *why = s[0] == '"' ? check_quoted(s, at) : check_dot_string(s, at);
	if (why)
		return bad(err, s, n, why);

	const char *d = s + at + 1;
	size_t dn = n - at - 1;
	if (dn == 0)
		return bad(err, s, n, "no domain after the '@'");
	if (dn > ADDR_DOMAIN_MAX)
		return bad(err, s, n, "the domain is longer than 255 octets");
	if ((why = check_domain(d, dn)) != NULL)
		return bad(err, s, n, why);
	if (n > ADDR_MAX)
		return bad(err, s, n, "longer than 254 octets");

	if (out) {
		memcpy(out, s, at + 1);
		for (size_t i = 0; i < dn; i++) {
			char c = d[i];
			out[at + 1 + i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
		}
		out[n] = '\0';
	}
	return 0;
}

char *addr_key(const char *s, struct err *err)
{
	char key[ADDR_MAX + 1];
	if (addr_check(s, strlen(s), key, err) < 0)
		return NULL;
	return xstrdup(key);
}

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

int addr_parse_named(const char *s, char **name, char **addr, struct err *err)
{
	struct buf nb;
	buf_init(&nb, BUF_NOLIMIT);
	*name = *addr = NULL;

	size_t n = strlen(s);
	while (n > 0 && is_wsp(s[n - 1]))
		n--;
	while (n > 0 && is_wsp(*s)) {
		s++;
		n--;
	}
	if (!utf8_valid(s, n, NULL))
		return err_set(err, ERR_INPUT, "mailbox is not valid UTF-8");
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 && s[i] != '\t')
			return err_set(err, ERR_INPUT, "mailbox contains a control character");

	if (n == 0 || s[n - 1] != '>') {
		if (memchr(s, '<', n) || memchr(s, '>', n))
			return err_set(err, ERR_INPUT,
			               "mailbox '%.*s': '<' without a closing '>' at the end",
			               (int)n, s);
		if (addr_check(s, n, NULL, err) < 0)
			return -1;
		*name = xstrdup("");
		*addr = xstrndup(s, n);
		return 0;
	}
	const char *lt = NULL;
	for (size_t i = n - 1; i-- > 0;)
		if (s[i] == '<') {
			lt = s + i;
			break;
		}
	if (lt == NULL)
		return err_set(err, ERR_INPUT, "mailbox '%.*s': '>' without '<'", (int)n, s);
	const char *a = lt + 1;
	size_t an = (size_t)(s + n - 1 - a);
	if (addr_check(a, an, NULL, err) < 0)
		return -1;

	size_t dn = (size_t)(lt - s);
	while (dn > 0 && is_wsp(s[dn - 1]))
		dn--;
	if (dn >= 2 && s[0] == '"' && s[dn - 1] == '"') {
		for (size_t i = 1; i + 1 < dn; i++) {
			if (s[i] == '\\' && i + 2 < dn)
				i++;
			else if (s[i] == '"')
				goto unbalanced;
			buf_addc(&nb, s[i]);
		}
	} else {
		if (memchr(s, '"', dn) || memchr(s, '<', dn) || memchr(s, '>', dn))
			goto unbalanced;
		buf_add(&nb, s, dn);
	}
	*name = buf_detach(&nb);
	*addr = xstrndup(a, an);
	return 0;
unbalanced:
	buf_free(&nb);
	return err_set(err, ERR_INPUT,
	               "mailbox '%.*s': the display name has unbalanced quotes or a stray '<'",
	               (int)n, s);
}
