/*
 * Logging for the programs (lib/ functions never log; they fill a struct err).
 * After OpenSMTPD's log.h: log_warn adds strerror(errno), log_warnx does not;
 * fatal/fatalx log and exit(1).
 *
 * Lines go to stderr. Under systemd (JOURNAL_STREAM set, or log_init with
 * LOG_F_PRIORITY) each line carries a "<N>" priority prefix that journald
 * turns into the record's priority; otherwise lines read "matrixd: …".
 * Context is written as key=value pairs by the caller: "issue=60 article=4".
 */
#ifndef MATRIX_LOG_H
#define MATRIX_LOG_H

#include <stdbool.h>

enum log_level {
	LOG_L_ERR = 3,
	LOG_L_WARNING = 4,
	LOG_L_NOTICE = 5,
	LOG_L_INFO = 6,
	LOG_L_DEBUG = 7
};

#define LOG_F_PRIORITY 0x1 /* force "<N>" prefixes */

void log_init(const char *progname, int flags);
/* A live progress line is on the terminal: clear it before each log line. */
void log_set_progress(bool on);
void log_set_level(enum log_level max);
bool log_enabled(enum log_level level);

void log_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
