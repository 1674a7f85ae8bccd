/*
 * List names: the one rule that `matrixctl list-create` and an issue's
 * `lists:` line both apply, so that every name an issue may name can be
 * created and every list that exists can be named. A list name is the
 * list-label of the List-Id header (RFC 2919) under the site's domain, so
 * it is kept to a DNS label (RFC 1035 §2.3.1, lowercase): 1 to 63 of a-z,
 * 0-9 and '-', not starting or ending with '-'.
 */
#ifndef MATRIX_LISTNAME_H
#define MATRIX_LISTNAME_H

#include <stdbool.h>

#define LIST_NAME_MAX 63
/* The rule in words, for messages ("invalid list name 'x': " LIST_NAME_RULE). */
#define LIST_NAME_RULE "1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'"

bool list_name_valid(const char *name);

#endif
