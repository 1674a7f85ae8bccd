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

/* "HEAD message TAIL" into e, the message formatted from fmt. */
static void compose(struct err *e, enum err_kind kind, const char *head, const char *fmt,
                    va_list ap, const char *tail)
{
	char tmp[sizeof e->msg];
	vsnprintf(tmp, sizeof tmp, fmt, ap);
	e->kind = kind;
	snprintf(e->msg, sizeof e->msg, "%s%s%s", head, tmp, tail);
}

int err_at(struct err *e, enum err_kind kind, const char *file, int line, const char *fmt, ...)
{
	if (e == NULL)
		return -1;
	char head[sizeof e->msg];
	if (line > 0)
		snprintf(head, sizeof head, "%s:%d: ", file, line);
	else
		snprintf(head, sizeof head, "%s: ", file);
	va_list ap;
	va_start(ap, fmt);
	compose(e, kind, head, fmt, ap, "");
	va_end(ap);
	return -1;
}

int err_sys(struct err *e, const char *fmt, ...)
{
	int saved = errno;
	if (e == NULL)
		return -1;
	char tail[256];
	snprintf(tail, sizeof tail, ": %s", strerror(saved));
	va_list ap;
	va_start(ap, fmt);
	compose(e, ERR_IO, "", fmt, ap, tail);
	va_end(ap);
	errno = saved;
	return -1;
}

int err_prefix(struct err *e, const char *fmt, ...)
{
	if (e == NULL)
		return -1;
	char tail[sizeof e->msg + 2];
	snprintf(tail, sizeof tail, ": %s", e->msg);
	va_list ap;
	va_start(ap, fmt);
	compose(e, e->kind, "", fmt, ap, tail);
	va_end(ap);
	return -1;
}
