/* stderr logging with journald priority prefixes (see log.h). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static const char *prog = "matrixd";
static bool use_prio;
static enum log_level max_level = LOG_L_INFO;
static bool progress;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

void log_init(const char *progname, int flags)
{
	prog = progname;
	use_prio = (flags & LOG_F_PRIORITY) || getenv("JOURNAL_STREAM") != NULL;
}

void log_set_progress(bool on)
{
	progress = on;
}

void log_set_level(enum log_level max)
{
	max_level = max;
}

bool log_enabled(enum log_level level)
{
	return level <= max_level;
}

static void vlog(enum log_level level, const char *errstr, const char *fmt, va_list ap)
{
	if (level > max_level)
		return;
	char line[2048];
	vsnprintf(line, sizeof line, fmt, ap);
	/* One record per line: newlines in a message would split it in the journal. */
	for (char *p = line; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	pthread_mutex_lock(&log_mu);
	if (progress)
		fputs("\r\033[K", stderr);
	if (use_prio)
		fprintf(stderr, "<%d>", (int)level);
	else
		fprintf(stderr, "%s: ", prog);
	if (errstr)
		fprintf(stderr, "%s: %s\n", line, errstr);
	else
		fprintf(stderr, "%s\n", line);
	fflush(stderr);
	pthread_mutex_unlock(&log_mu);
}

#define LOGFN(name, level, witherr)                                                                \
	void name(const char *fmt, ...)                                                            \
	{                                                                                          \
		int saved = errno;                                                                 \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		vlog(level, witherr ? strerror(saved) : NULL, fmt, ap);                            \
		va_end(ap);                                                                        \
		errno = saved;                                                                     \
	}

LOGFN(log_err, LOG_L_ERR, false)
LOGFN(log_warn, LOG_L_WARNING, true)
LOGFN(log_warnx, LOG_L_WARNING, false)
LOGFN(log_notice, LOG_L_NOTICE, false)
LOGFN(log_info, LOG_L_INFO, false)
LOGFN(log_debug, LOG_L_DEBUG, false)

void fatal(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_L_ERR, strerror(saved), fmt, ap);
	va_end(ap);
	exit(1);
}

void fatalx(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_L_ERR, NULL, fmt, ap);
	va_end(ap);
	exit(1);
}
