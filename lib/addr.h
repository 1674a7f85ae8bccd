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
 * The key: the local part exactly as given (RFC 5321 §2.4: local parts may
 * be case-sensitive) + "@" + the domain with ASCII letters lowercased
 * (domains are case-insensitive; UTF-8 labels are kept as given).
 */
#ifndef MATRIX_ADDR_H
#define MATRIX_ADDR_H

#include <stddef.h>

#include "err.h"

#define ADDR_LOCAL_MAX  64
#define ADDR_DOMAIN_MAX 255
#define ADDR_MAX        254

/*
 * Checks the n bytes at s (which need not be NUL-terminated; an embedded NUL
 * is an error) and, when out is not NULL, writes the key there as a
 * NUL-terminated string (out has room for ADDR_MAX + 1 bytes). Returns 0, or
 * -1 with err (ERR_INPUT) reading "invalid address 'X': what is wrong", X
 * shown with control characters escaped.
 */
int addr_check(const char *s, size_t n, char *out, struct err *err);

/* addr_check on a C string; returns the key allocated (caller frees) or NULL. */
char *addr_key(const char *s, struct err *err);

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

#endif
