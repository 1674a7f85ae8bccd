/* The HTTP endpoint (issue 7): not built yet; matrixd runs without it. */
#include "matrixd.h"

int http_start(struct daemon *d, struct http **out, struct err *err)
{
	(void)d, (void)err;
	*out = NULL;
	return 0;
}

void http_free(struct http *h)
{
	(void)h;
}

int http_fd(struct http *h)
{
	(void)h;
	return -1;
}

void http_run(struct daemon *d)
{
	(void)d;
}

int64_t http_timeout_ms(struct http *h)
{
	(void)h;
	return -1;
}
