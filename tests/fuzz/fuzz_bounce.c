/*
 * libFuzzer target for the bounce parser (lib/bounce.c): bounces are
 * hostile input read by `matrixctl bounce`, so every byte string must parse
 * without a crash, a leak or a read past the buffer, and render as JSON.
 * The first byte picks the prefixes, so the VERP and unsubscribe paths are
 * reached as well as the no-prefix one.
 */
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "bounce.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct bounce_opts with = {"bounces+", "unsubscribe+"}, without = {NULL, NULL};
	struct bounce *b = NULL;
	struct err err;
	const struct bounce_opts *o = size > 0 && (data[0] & 1) ? &without : &with;

	if (bounce_parse((const char *)data, size, o, &b, &err) < 0)
		return 0;
	struct json_object *j = bounce_to_json(b, NULL);
	(void)json_object_to_json_string(j);
	json_object_put(j);
	bounce_free(b);
	return 0;
}
