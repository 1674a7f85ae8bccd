/*
 * Email addresses: validation of an RFC 5321 mailbox (Local-part "@"
 * Domain, §4.1.2) with the RFC 6531 extension that lets UTF-8 into local
 * parts and domain labels, the comparison key subscribers are stored under,
 * and the "Display Name <address>" form used by site.from.
 *
 * What is refused beyond the grammar, and why:
 *   - CR, LF, NUL and every other control character, spaces and '<' '>' even
 *     inside a quoted local part: an address is written into SMTP commands
 *     and mail headers, where these break the line or the syntax;
 *   - a domain without a dot ("user@localhost") and an all-numeric last
 *     label: a newsletter subscriber needs a mail domain on the Internet
 *     (RFC 1123 §2.1; an IP address must be written as a literal [192.0.2.1]);
 *   - local part over 64 octets, domain over 255, label over 63, whole
 *     address over 254 (RFC 5321 §4.5.3.1, RFC 3696 erratum 1690).
 *
 *   - invisible characters anywhere: Unicode's default-ignorable code points
 *     (zero-width spaces and joiners, a byte-order mark, soft hyphens,
 *     variation selectors …), bidirectional controls, and spaces other than
 *     U+0020. They make two addresses that look identical differ, or show
 *     an address reversed; IDNA's mapping would even drop some of them
 *     silently. The one exception is ZWNJ/ZWJ inside a domain label, where
 *     IDNA2008's CONTEXTJ rule (RFC 5892 A.1, A.2) allows them in the few
 *     scripts that need them and refuses them elsewhere.
 *
 * The key: the local part exactly as given (RFC 5321 §2.4: local parts may
 * be case-sensitive) + "@" + the domain as IDNA2008 writes it in ASCII
 * (libidn2 with UTS #46 non-transitional mapping: case-folded, NFC,
 * full-width forms narrowed, every label an A-label "xn--…" or LDH).
 * "u@bücher.de", "u@BÜCHER.de", "u@xn--bcher-kva.de" and a decomposed
 * "u@bu\u0308cher.de" have one key. The key is also the form sent on the wire
 * (RCPT TO, To:): a relay without SMTPUTF8 takes it whenever the local part
 * is ASCII. docs/design.md says why these choices.
 */
#ifndef MATRIX_ADDR_H
#define MATRIX_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

#define ADDR_LOCAL_MAX  64
#define ADDR_DOMAIN_MAX 255
#define ADDR_MAX        254

/*
 * Checks the n bytes at s (which need not be NUL-terminated; an embedded NUL
 * is an error) and, when out is not NULL, writes the key there as a
 * NUL-terminated string (out has room for ADDR_MAX + 1 bytes; the length
 * limits apply to the key, whose A-labels may be longer than the U-labels
 * given). Returns 0, or -1 with err (ERR_INPUT) reading "invalid address
 * 'X': what is wrong", X shown with control bytes escaped (\x0a) and
 * invisible characters named (<U+200B>).
 */
int addr_check(const char *s, size_t n, char *out, struct err *err);

/* addr_check on a C string; returns the key allocated (caller frees) or NULL. */
char *addr_key(const char *s, struct err *err);

/* True when the n bytes at s are all ASCII: an address whose key is not
 * needs a relay that offers SMTPUTF8 (RFC 6531). */
bool addr_is_ascii(const char *s, size_t n);

/*
 * Parses a mailbox with an optional display name (RFC 5322 §3.4 name-addr,
 * as written in configuration files):
 *     Matrix 矩阵 <matrix@example.org>
 *     "Matrix, the magazine" <matrix@example.org>
 *     matrix@example.org
 * The display name may be quoted (backslash escapes are undone) and may hold
 * UTF-8 but no control character. On success *name ("" when absent) and
 * *addr (the address as written, validated by addr_check) are allocated;
 * the caller frees both. On failure both are NULL and err is set.
 */
int addr_parse_named(const char *s, char **name, char **addr, struct err *err);

/* The domain of the mailbox in s (addr_parse_named's forms) as DNS, d= and
 * EHLO name it: lower case, A-labels. Allocated; NULL when s is none. */
char *addr_domain_of(const char *s);

#endif
