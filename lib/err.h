/*
 * The one error convention of matrixd: actions return 0 or -1, lookups a
 * pointer or NULL, and the detail goes into a caller-owned struct err with a
 * fixed message buffer. Messages that concern a file read "FILE:LINE: what
 * is wrong; what to do". cli/ maps kinds to exit codes, daemon/ logs them.
 * Every function taking a struct err * accepts NULL.
 */
#ifndef MATRIX_ERR_H
#define MATRIX_ERR_H

enum err_kind {
	ERR_NONE = 0,
	ERR_USAGE,    /* the caller asked for something malformed */
	ERR_INPUT,    /* bad data: an issue, a CSV row, an address, a bounce */
	ERR_CONFIG,   /* bad configuration */
	ERR_NOTFOUND, /* a named thing does not exist */
	ERR_IO,       /* the system refused (open, write, rename …) */
	ERR_DB,       /* SQLite refused */
	ERR_TEMP,     /* transient: try again later */
	ERR_INTERNAL, /* a bug or a library misbehaving */
};

struct err {
	enum err_kind kind;
	char msg[1024];
};

void err_clear(struct err *e);
/* Each returns -1 so that callers can write `return err_set(…);`. */
int err_set(struct err *e, enum err_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "FILE:LINE: message"; line <= 0 gives "FILE: message". */
int err_at(struct err *e, enum err_kind kind, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* kind ERR_IO, message followed by ": strerror(errno)". */
int err_sys(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends "prefix: " to an existing message. */
int err_prefix(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
