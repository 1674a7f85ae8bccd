/* Caller-owned error detail (see err.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

void err_clear(struct err *e)
{
	if (e) {
		e->kind = ERR_NONE;
		e->msg[0] = '\0';
	}
}

static void vset(struct err *e, enum err_kind kind, const char *fmt, va_list ap)
{
	e->kind = kind;
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
}

int err_set(struct err *e, enum err_kind kind, const char *fmt, ...)
{
	if (e) {
		va_list ap;
		va_start(ap, fmt);
		vset(e, kind, fmt, ap);
		va_end(ap);
	}
	return -1;
}

int err_at(struct err *e, enum err_kind kind, const char *file, int line, const char *fmt, ...)
{
	if (e == NULL)
		return -1;
	char tmp[sizeof e->msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	e->kind = kind;
	if (line > 0)
		snprintf(e->msg, sizeof e->msg, "%s:%d: %s", file, line, tmp);
	else
		snprintf(e->msg, sizeof e->msg, "%s: %s", file, tmp);
	return -1;
}

int err_sys(struct err *e, const char *fmt, ...)
{
	int saved = errno;
	if (e == NULL)
		return -1;
	char tmp[sizeof e->msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	e->kind = ERR_IO;
	snprintf(e->msg, sizeof e->msg, "%s: %s", tmp, strerror(saved));
	errno = saved;
	return -1;
}

int err_prefix(struct err *e, const char *fmt, ...)
{
	if (e == NULL)
		return -1;
	char pre[256], old[sizeof e->msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(pre, sizeof pre, fmt, ap);
	va_end(ap);
	memcpy(old, e->msg, sizeof old);
	snprintf(e->msg, sizeof e->msg, "%s: %s", pre, old);
	return -1;
}
