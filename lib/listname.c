/* The list-name rule (see listname.h). */
#include <string.h>

#include "listname.h"

bool list_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > LIST_NAME_MAX || name[0] == '-' || name[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return false;
	}
	return true;
}
