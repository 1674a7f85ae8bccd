/* libFuzzer target: the issue parser and the Markdown pipeline on
 * arbitrary bytes (make fuzz). */
#include <stddef.h>
#include <stdint.h>

#include "issue.h"
#include "md.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	if (!init) {
		md_init();
		init = 1;
	}
	struct issue_opts o = {1 << 20, "Matrix", "zh-CN", "https://x.example/"};
	struct issue *is = NULL;
	struct err e;
	if (issue_parse("fuzz.md", (const char *)data, size, &o, &is, &e) == 0) {
		struct json_object *j = issue_to_json(is);
		json_object_put(j);
		issue_free(is);
	}
	return 0;
}
