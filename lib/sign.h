/*
 * DKIM signatures (RFC 6376, RFC 8463 for Ed25519): one DKIM-Signature per
 * configured key, relaxed/relaxed, over a fixed list of header fields,
 * From, Subject and To signed once more than they occur so that none can
 * be added later. The fields are computed here with OpenSSL (one body
 * hash per message for all keys); libopendkim's verifier checks them
 * (sign_verify), at every start on a probe message and in the tests.
 * docs/libraries.md (libopendkim) says why; docs/deliverability.md has
 * the DNS side.
 *
 * Two objects:
 *   struct sign_keys  the keys of one configuration, read and checked once
 *                     (sign_keys_load); immutable, shared by every thread,
 *                     reference-counted so that a reload can replace them
 *                     while messages signed with the old ones are in flight;
 *   struct signer     one per thread: its parsed copies of the keys and the
 *                     message in hand. Signing takes no lock of ours; two
 *                     threads never share one.
 */
#ifndef MATRIX_SIGN_H
#define MATRIX_SIGN_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "conf.h"
#include "err.h"

struct sign_keys;
struct signer;

/* The header fields every signature covers, lower case, NULL-terminated
 * (matrixd.conf(5)). */
extern const char *const sign_headers[];

/*
 * Reads and checks the keys of c->dkim: each file a regular file that only
 * its owner can read, a PEM private key, RSA of at least 2048 bits or
 * Ed25519, with which a probe message is signed and then verified by
 * libopendkim (sign_verify: a disagreement stops the start). Errors say "CONF:LINE: …" with the
 * key's line in the configuration. What would weaken delivery without
 * being wrong (d= not aligned with the From domain, a return path outside
 * it) is reported through warn (may be NULL), one sentence per call.
 * *out is NULL when c has no dkim group. Release with sign_keys_unref().
 */
int sign_keys_load(const struct conf *c, struct sign_keys **out,
                   void (*warn)(void *arg, const char *msg), void *arg, struct err *err);
/* Takes one more reference (k may be NULL); returns k. Thread-safe. */
struct sign_keys *sign_keys_ref(struct sign_keys *k);
void sign_keys_unref(struct sign_keys *k);
/* The d= of every signature. */
const char *sign_keys_domain(const struct sign_keys *k);

/* A signer for the calling thread; NULL with err set when OpenSSL has no
 * SHA-256. */
struct signer *signer_new(struct err *err);
void signer_free(struct signer *s);
/* How many bodies s has canonicalised and hashed: one per sign_message(),
 * whatever the number of keys (the tests check it). */
unsigned long signer_body_hashes(const struct signer *s);

/*
 * Signs msg (a complete message, CRLF line ends) with every key of k and
 * appends the DKIM-Signature fields, CRLF-terminated, to out: they go in
 * front of the message. k NULL appends nothing. The header must end at an
 * empty line (ERR_INTERNAL otherwise).
 */
int sign_message(struct signer *s, const struct sign_keys *k, const char *msg, size_t len,
                 struct buf *out, struct err *err);

/* sign_message() put in front of the message at *data (allocated, *len
 * bytes), which is replaced by the signed one (allocated; the old freed). */
int sign_prepend(struct signer *s, const struct sign_keys *k, char **data, size_t *len,
                 struct err *err);

/*
 * libopendkim's verdict on every DKIM-Signature of msg (a signed message,
 * CRLF line ends), the public keys taken from k, not from DNS: 0 when each
 * verifies, -1 with err naming the selector and libopendkim's reason
 * otherwise, or when msg has none.
 */
int sign_verify(const struct sign_keys *k, const char *msg, size_t len, struct err *err);

enum sign_type { SIGN_RSA, SIGN_ED25519 };

/*
 * A new private key: PKCS#8 PEM appended to pem, and the value of the DNS
 * record's p= tag (base64 of the DER SubjectPublicKeyInfo for RSA, of the
 * raw 32-byte key for Ed25519, RFC 8463 §4.2) to p. bits: RSA only,
 * 2048–4096 (a longer record is more than libopendkim, and OpenDKIM
 * receivers, can check).
 */
int sign_keygen(enum sign_type type, int bits, struct buf *pem, struct buf *p, struct err *err);

#endif
