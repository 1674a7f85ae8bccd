/*
 * RFC 5321 mailbox validation and the subscriber key (see addr.h). The
 * checks run in the order an admin can act on: characters that can never
 * appear, then the shape (local part, '@', domain), then lengths. Unicode
 * properties come from GNU libunistring, IDNA2008 from libidn2.
 */
#include <arpa/inet.h>
#include <idn2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unictype.h>
#include <uniname.h>

#include "addr.h"
#include "buf.h"
#include "utf8.h"
#include "xmalloc.h"

#define ZWNJ 0x200c
#define ZWJ  0x200d

enum invisible { VISIBLE, INVISIBLE, BIDI, SPACE, C1 };

/* What is wrong with showing code point c inside an address. */
static enum invisible invisible(uint32_t c)
{
	if (c < 0x80)
		return VISIBLE;
	if (c <= 0x9f)
		return C1;
	if (uc_is_property_bidi_control(c))
		return BIDI;
	if (uc_is_property_default_ignorable_code_point(c))
		return INVISIBLE;
	if (uc_is_property_white_space(c))
		return SPACE;
	return VISIBLE;
}

/* Shows at most the first 80 bytes of an address on one printable line:
 * control bytes escaped (\x0a), invisible characters named (<U+200B>). */
static void show(char *out, size_t size, const char *s, size_t n)
{
	size_t o = 0;
	const char *p = s, *end = s + (n > 80 ? 80 : n);
	while (p < end && o + 12 < size) {
		const char *at = p;
		int32_t c = (unsigned char)*p < 0x80 ? (unsigned char)*p++ : utf8_next(&p, end);
		if (c >= 0 && c < 0x80 && (c < 0x20 || c == 0x7f))
			o += (size_t)snprintf(out + o, size - o, "\\x%02x", (unsigned)c);
		else if (c < 0)
			o += (size_t)snprintf(out + o, size - o, "\\x%02x", (unsigned char)*at);
		else if (invisible((uint32_t)c) != VISIBLE)
			o += (size_t)snprintf(out + o, size - o, "<U+%04X>", (unsigned)c);
		else {
			memcpy(out + o, at, (size_t)(p - at));
			o += (size_t)(p - at);
		}
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
	       c == '-';
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

/* The domain in ASCII (see to_ascii): LDH labels, lengths, a real TLD. */
static const char *check_domain(const char *d, size_t n)
{
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
			return "a domain label is longer than 63 octets (in ASCII, as an A-label)";
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

static bool plain_ldh(const char *d, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)d[i] >= 0x80)
			return false;
		if ((i == 0 || d[i - 1] == '.') && n - i >= 4 && strncasecmp(d + i, "xn--", 4) == 0)
			return false;
	}
	return true;
}

/*
 * Writes the domain's ASCII form to out (ADDR_DOMAIN_MAX + 1 bytes): a
 * plain ASCII domain lowercased; anything with a non-ASCII character or an
 * A-label through libidn2 (IDNA2008 lookup with UTS #46 non-transitional
 * mapping, NFC first), which also checks that an A-label decodes to a valid
 * U-label and back. Returns NULL, or what is wrong.
 */
static const char *to_ascii(const char *d, size_t n, char *out)
{
	if (plain_ldh(d, n)) {
		for (size_t i = 0; i < n; i++)
			out[i] = d[i] >= 'A' && d[i] <= 'Z' ? (char)(d[i] - 'A' + 'a') : d[i];
		out[n] = '\0';
		return NULL;
	}
	char in[ADDR_DOMAIN_MAX + 1], *o = NULL;
	memcpy(in, d, n);
	in[n] = '\0';
	int rc = idn2_to_ascii_8z(in, &o, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
	const char *why = NULL;
	switch (rc) {
	case IDN2_OK:
		if (strlen(o) > ADDR_DOMAIN_MAX)
			why = "the domain is longer than 255 octets (in ASCII, with A-labels)";
		else
			memcpy(out, o, strlen(o) + 1);
		break;
	case IDN2_TOO_BIG_LABEL:
	case IDN2_PUNYCODE_BIG_OUTPUT: /* libidn2 stops encoding at 63 */
		why = "a domain label is longer than 63 octets (in ASCII, as an A-label)";
		break;
	case IDN2_TOO_BIG_DOMAIN:
		why = "the domain is longer than 255 octets (in ASCII, with A-labels)";
		break;
	case IDN2_DISALLOWED:
	case IDN2_UNASSIGNED:
		why = "the domain holds a character that IDNA2008 does not allow in domain "
		      "names (a symbol, or a character not yet assigned)";
		break;
	case IDN2_CONTEXTJ:
		why = "the domain holds a zero-width joiner or non-joiner where IDNA2008 does "
		      "not allow one (RFC 5892 A.1, A.2)";
		break;
	case IDN2_PUNYCODE_BAD_INPUT:
	case IDN2_ALABEL_ROUNDTRIP_FAILED:
		why = "a label starting with 'xn--' is not a valid A-label";
		break;
	case IDN2_LEADING_COMBINING:
		why = "a domain label starts with a combining mark";
		break;
	case IDN2_BIDI:
		why = "the domain mixes right-to-left and left-to-right text in a way IDNA2008 "
		      "forbids (RFC 5893)";
		break;
	case IDN2_HYPHEN_STARTEND:
		why = "a domain label starts or ends with '-'";
		break;
	default:
		/* idn2_strerror() is static text in English, fit for a message. */
		why = idn2_strerror(rc);
	}
	idn2_free(o);
	return why;
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

	/* Joiners are left to IDNA2008 in the domain; elsewhere they are as
	 * invisible as the rest. */
	size_t joiner = SIZE_MAX;
	for (const char *p = s, *end = s + n; p < end;) {
		if ((unsigned char)*p < 0x80) {
			p++;
			continue;
		}
		const char *at = p;
		uint32_t c = (uint32_t)utf8_next(&p, end);
		enum invisible k = invisible(c);
		if (k == VISIBLE)
			continue;
		if ((c == ZWNJ || c == ZWJ) && joiner == SIZE_MAX) {
			joiner = (size_t)(at - s);
			continue;
		}
		if (c == ZWNJ || c == ZWJ)
			continue;
		char name[UNINAME_MAX], why[UNINAME_MAX + 200];
		if (unicode_character_name(c, name) == NULL)
			snprintf(name, sizeof name, "unnamed");
		snprintf(why, sizeof why, "%s U+%04X %s%s",
		         k == BIDI    ? "contains a bidirectional control character,"
		         : k == SPACE ? "contains a space character,"
		         : k == C1    ? "contains a control character,"
		                      : "contains an invisible character,",
		         (unsigned)c, name,
		         k == BIDI     ? " (it changes how the text around it is shown)"
		         : c == 0xfeff ? " (a byte-order mark: type the address again or save the "
		                         "file without one)"
		                       : " (type the address again rather than pasting it)");
		return bad(err, s, n, why);
	}

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
	if (joiner < at)
		return bad(err, s, n,
		           "contains an invisible character, a zero-width joiner or non-joiner, "
		           "in the local part (type the address again rather than pasting it)");
	if (at > ADDR_LOCAL_MAX)
		return bad(err, s, n, "the local part is longer than 64 octets");
	const char *why = s[0] == '"' ? check_quoted(s, at) : check_dot_string(s, at);
	if (why)
		return bad(err, s, n, why);

	const char *d = s + at + 1;
	size_t dn = n - at - 1;
	char ascii[ADDR_DOMAIN_MAX + 1];
	if (dn == 0)
		return bad(err, s, n, "no domain after the '@'");
	if (dn > ADDR_DOMAIN_MAX)
		return bad(err, s, n, "the domain is longer than 255 octets");
	if (d[0] == '[') {
		if ((why = check_literal(d, dn)) != NULL)
			return bad(err, s, n, why);
		for (size_t i = 0; i < dn; i++)
			ascii[i] = d[i] >= 'A' && d[i] <= 'Z' ? (char)(d[i] - 'A' + 'a') : d[i];
		ascii[dn] = '\0';
	} else {
		/* A '@' in the domain would reach IDNA as a symbol: name it. */
		if (memchr(d, '@', dn))
			return bad(err, s, n, "more than one '@' outside quotes");
		if ((why = to_ascii(d, dn, ascii)) != NULL ||
		    (why = check_domain(ascii, strlen(ascii))) != NULL)
			return bad(err, s, n, why);
	}
	size_t an = strlen(ascii);
	if (at + 1 + an > ADDR_MAX)
		return bad(err, s, n,
		           an > dn ? "longer than 254 octets once its domain is written in ASCII"
		                   : "longer than 254 octets");
	if (out) {
		memcpy(out, s, at + 1);
		memcpy(out + at + 1, ascii, an + 1);
	}
	return 0;
}

bool addr_is_ascii(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return false;
	return true;
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

char *addr_domain_of(const char *s)
{
	char *name = NULL, *addr = NULL, *key = NULL, *dom = NULL;
	if (addr_parse_named(s, &name, &addr, NULL) == 0 && (key = addr_key(addr, NULL)) != NULL)
		dom = xstrdup(strrchr(key, '@') + 1);
	free(name);
	free(addr);
	free(key);
	return dom;
}
