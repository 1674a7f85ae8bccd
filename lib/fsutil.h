/*
 * Files: reading with a size cap, atomic replacement (write a temp file in
 * the same directory, fsync, rename — readers never see half a feed or
 * page), and mkdir -p.
 */
#ifndef MATRIX_FSUTIL_H
#define MATRIX_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "buf.h"
#include "err.h"

/*
 * Reads the whole file into out (appending). A file larger than max bytes
 * fails with ERR_INPUT "PATH: file is N bytes, more than the limit of MAX".
 */
int fs_read(const char *path, size_t max, struct buf *out, struct err *err);

/* Replaces path atomically with len bytes of data, file mode `mode`. */
int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, struct err *err);

/* Creates dir and its missing parents with mode (like mkdir -p). */
int fs_mkdirs(const char *dir, mode_t mode, struct err *err);

/* Creates the parent directories of path. */
int fs_mkparents(const char *path, mode_t mode, struct err *err);

#endif
