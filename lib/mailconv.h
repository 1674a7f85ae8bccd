/*
 * The conventions of the addresses and identifiers matrixd puts on its
 * mail, in one place, because the inbound side must recognise exactly what
 * the outbound side wrote (docs/design.md, "Tokens"):
 *
 *   envelope sender (VERP)    smtp.return_path with {token} = the delivery's
 *                             VERP token: bounces+TOKEN@DOMAIN by default
 *   List-Unsubscribe mailto   unsubscribe+TOKEN@DOMAIN, TOKEN = the
 *                             membership's unsubscribe token, DOMAIN that of
 *                             the return path (the MTA routes both)
 *   Message-ID                matrix.TOKEN@FROM-DOMAIN, TOKEN = the VERP
 *                             token, so a returned copy names its delivery
 *
 * The tokens themselves are lib/token.c's. Every string returned here is
 * allocated; the caller frees it.
 */
#ifndef MATRIX_MAILCONV_H
#define MATRIX_MAILCONV_H

#define MAILCONV_MSGID_PREFIX "matrix."         /* local part of our Message-IDs */
#define MAILCONV_UNSUB_PREFIX "unsubscribe+"    /* local part of the mailto address */
#define MAILCONV_VERP_LOCAL   "bounces+{token}" /* smtp.return_path's default local part */
#define MAILCONV_TOKEN_FIELD  "{token}"         /* where the token goes in smtp.return_path */

/* The return path of one delivery: return_path with {token} replaced by
 * verp (a copy of return_path when it holds no {token}). */
char *mailconv_return_path(const char *return_path, const char *verp);

/* The part of return_path before {token} ("bounces+"): what a bounce's
 * recipient starts with; NULL when the local part holds no {token} or
 * nothing before it. */
char *mailconv_verp_prefix(const char *return_path);

/* unsubscribe+TOKEN@ and the domain of return_path ("@localhost" when it
 * has none). */
char *mailconv_unsub_mailto(const char *return_path, const char *token);

/* matrix.TOKEN, the Message-ID without its "@domain" (lib/msg.c adds it). */
char *mailconv_message_id(const char *verp);

/* The VERP token of one of our Message-IDs (without angle brackets),
 * unverified; NULL when mid is not shaped like ours. */
char *mailconv_token_of_message_id(const char *mid);

#endif
