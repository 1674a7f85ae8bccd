/*
 * Files: reading with a size cap, opening what someone else may have
 * planted (no symbolic link followed, no FIFO or device opened, regular
 * files only), atomic replacement (write a fresh temp file in the same
 * directory, fsync, rename, fsync the directory — readers never see half a
 * feed or page, a planted link is never written through), and mkdir -p.
 *
 * Every write checks every step (write, fsync, close, rename): a full disk
 * (ENOSPC), an I/O error (EIO) or a read-only file system, EROFS, is an
 * ERR_IO error naming the file, never a silent short file.
 */
#ifndef MATRIX_FSUTIL_H
#define MATRIX_FSUTIL_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "buf.h"
#include "err.h"

/* Flags of fs_open_under(). */
enum {
	FS_DIR_OK = 1, /* a directory is returned too (*st says which) */
	FS_NO_DOT = 2, /* components starting with '.' (hidden, temp files) are absent */
};

/*
 * Opens rel, a relative path beneath the directory root, for reading
 * (O_NONBLOCK: a FIFO never blocks the caller). root itself is trusted and
 * may be a link (it comes from the configuration or the command line);
 * no component of rel may be one, nor "", "." or "..": every component is
 * opened with O_NOFOLLOW from the one before, so no link anywhere in rel
 * is followed, whoever planted it. The result must be a regular file (or a
 * directory with FS_DIR_OK). Returns the fd with *st filled, or -1 with err:
 * ERR_NOTFOUND when something is missing, ERR_INPUT "ROOT/REL: is a
 * symbolic link / a FIFO / a device / a directory …; … must be a regular
 * file" when something is refused (*st then says what, st_mode 0 for a
 * link), ERR_IO for other failures.
 */
int fs_open_under(const char *root, const char *rel, int flags, struct stat *st, struct err *err);

/*
 * Opens path for reading: its directory is trusted, its last component must
 * not be a link, and neither may any component of rel beneath it (rel may
 * be NULL: path itself). Same checks, flags and errors as fs_open_under;
 * messages name the file as path/rel.
 */
int fs_open_nofollow(const char *path, const char *rel, int flags, struct stat *st,
                     struct err *err);

/*
 * Reads the whole of fd (named name in messages) into out (appending). More
 * than max bytes fails with ERR_INPUT "NAME: file is more than the limit of
 * MAX bytes". Does not close fd.
 */
int fs_read_fd(int fd, const char *name, size_t max, struct buf *out, struct err *err);

/*
 * Reads the whole file into out (appending). path may be a link (templates
 * of an admin's template_dir), but the file must be a regular one: a FIFO
 * or a device is refused (ERR_INPUT) without blocking. A file larger than
 * max bytes fails with ERR_INPUT "PATH: file is N bytes, more than the
 * limit of MAX".
 */
int fs_read(const char *path, size_t max, struct buf *out, struct err *err);

/*
 * Replaces path atomically with len bytes of data, file mode exactly `mode`
 * (the umask does not apply). The temporary file is ".NAME.XXXXXX" in the
 * same directory, created with O_EXCL (never an existing file or a planted
 * link); a link at path itself is replaced, not written through. The file
 * and then its directory are fsync'ed. On failure no temporary file is
 * left, and path is unchanged (unless only the directory's fsync failed:
 * the new content is in place, maybe not yet on disk, and -1 says so).
 */
int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, struct err *err);

/* Writes all of len bytes to fd (named name in messages), retrying short
 * writes and EINTR; ERR_IO on failure (ENOSPC, EIO …). */
int fs_write_all(int fd, const char *name, const void *data, size_t len, struct err *err);

/*
 * The end of every write into a temporary file: fsync(fd), close(fd)
 * (closed whatever fails), rename(tmp, path), each step checked and named
 * in err. The caller still fsyncs path's directory; on failure it removes
 * tmp.
 */
int fs_sync_rename(int fd, const char *tmp, const char *path, struct err *err);

/* fsyncs the directory dir (after a rename into it). */
int fs_sync_dir(const char *dir, struct err *err);

/* Creates dir and its missing parents with mode (like mkdir -p). */
int fs_mkdirs(const char *dir, mode_t mode, struct err *err);

/* Creates the parent directories of path. */
int fs_mkparents(const char *path, mode_t mode, struct err *err);

#endif
