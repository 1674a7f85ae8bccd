/*
 * Tokens that name a subscriber, a list or a delivery in links and
 * addresses, authenticated with HMAC-SHA256 (GnuTLS) under a secret kept in
 * state_dir/secret (32 random bytes, hex, mode 0600, created on first use).
 *
 *   unsubscribe / confirm:  SUB-LIST-MAC-MAC MAC-MAC = 2 x 16 hex digits (128 bits)
 *   VERP return path:       DELIVERY-MAC     MAC = 16 hex digits (64 bits)
 *   preference page:        SUB-MAC-MAC      MAC-MAC = 2 x 16 hex digits (128 bits)
 *
 * A 128-bit MAC comes in two halves: a run of 30 letters and digits
 * starting with 1 or 3 is what SpamAssassin's __BITCOIN_ID rule takes for
 * a Bitcoin address (PDS_BTC_ID), and one in 60 MACs of 32 hex digits is
 * one. Unsubscribe and confirm tokens with the MAC in one run, as mail sent
 * before the halves has them, are still taken: those links must go on
 * working.
 *
 * The MAC covers a purpose word as well ("unsubscribe", "confirm", "verp",
 * "prefs"),
 * so a token made for one purpose never works for another. Lowercase hex
 * and decimal survive MTAs that fold the case of local parts.
 */
#ifndef MATRIX_TOKEN_H
#define MATRIX_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define TOKEN_SECRET_FILE "secret"
#define TOKEN_MAX         96 /* room for any token plus NUL */

enum token_purpose { TOKEN_UNSUBSCRIBE, TOKEN_CONFIRM, TOKEN_VERP, TOKEN_PREFS };

struct token_key {
	unsigned char secret[32];
};

/*
 * Loads state_dir/secret. When it is absent, create (the daemon, at its
 * start) makes it (0600, owned by whoever runs this); otherwise (matrixctl)
 * that is an error: a secret made by an admin's command could be one the
 * daemon's user cannot read. Refuses a secret readable by group or others.
 */
int token_key_load(struct token_key *k, const char *state_dir, bool create, struct err *err);

/* A throw-away random key (previews: links that look real but verify nowhere). */
void token_key_random(struct token_key *k);

/* Writes the token for (a, b) into out (TOKEN_MAX bytes). For TOKEN_VERP
 * only a (the delivery id) is used, for TOKEN_PREFS only a (the
 * subscriber id: one preference page per reader, whatever the list). */
void token_make(const struct token_key *k, enum token_purpose p, int64_t a, int64_t b, char *out);

/* Checks tok (len bytes, need not be NUL-terminated) and returns the ids it
 * names (*b = 0 for the one-id purposes). False for anything malformed,
 * truncated, made for another purpose or signed by another key. */
bool token_check(const struct token_key *k, enum token_purpose p, const char *tok, size_t len,
                 int64_t *a, int64_t *b);

#endif
