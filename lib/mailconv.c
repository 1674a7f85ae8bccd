/* Our address and Message-ID conventions (see mailconv.h). */
#include <string.h>

#include "mailconv.h"
#include "xmalloc.h"

char *mailconv_return_path(const char *return_path, const char *verp)
{
	const char *t = strstr(return_path, MAILCONV_TOKEN_FIELD);
	if (t == NULL)
		return xstrdup(return_path);
	return xasprintf("%.*s%s%s", (int)(t - return_path), return_path, verp,
	                 t + strlen(MAILCONV_TOKEN_FIELD));
}

char *mailconv_verp_prefix(const char *return_path)
{
	const char *t = return_path ? strstr(return_path, MAILCONV_TOKEN_FIELD) : NULL;
	if (!t || t == return_path || memchr(return_path, '@', (size_t)(t - return_path)))
		return NULL;
	return xstrndup(return_path, (size_t)(t - return_path));
}

char *mailconv_unsub_mailto(const char *return_path, const char *token)
{
	const char *at = strrchr(return_path, '@');
	return xasprintf(MAILCONV_UNSUB_PREFIX "%s%s", token, at ? at : "@localhost");
}

char *mailconv_message_id(const char *verp)
{
	return xasprintf(MAILCONV_MSGID_PREFIX "%s", verp);
}

char *mailconv_token_of_message_id(const char *mid)
{
	size_t n = strlen(MAILCONV_MSGID_PREFIX);
	if (mid == NULL || strncmp(mid, MAILCONV_MSGID_PREFIX, n) != 0)
		return NULL;
	const char *at = strchr(mid + n, '@');
	return at && at > mid + n ? xstrndup(mid + n, (size_t)(at - mid - n)) : NULL;
}
