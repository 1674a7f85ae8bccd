#!/bin/sh
# make lint: banned functions, the include rule and no SQL outside lib/
# (scripts/layers.sh), what comments cite (scripts/citations.sh), formatting
# drift, cppcheck.
set -u
cd "$(dirname "$0")/.."
rc=0
banned='\b(strcpy|strcat|sprintf|vsprintf|strtok|atoi|atol|sscanf|gets|strncpy|system|popen)[[:space:]]*\('
if grep -nE "$banned" lib/*.c lib/*.h daemon/*.c cli/*.c cli/*.h 2>/dev/null | grep -vE '(snprintf|vsnprintf|strtok_r)'; then
	echo "lint: banned functions above (docs/design.md, Conventions)"; rc=1
fi
sh scripts/layers.sh || rc=1
sh scripts/citations.sh || rc=1
if command -v clang-format >/dev/null; then
	n=0
	for f in lib/*.[ch] daemon/*.[ch] cli/*.[ch]; do
		[ -e "$f" ] || continue
		clang-format --dry-run "$f" 2>&1 | grep -q warning && { echo "lint: $f is not clang-formatted"; n=$((n+1)); }
	done
	[ $n -eq 0 ] || rc=1
fi
if command -v cppcheck >/dev/null; then
	cppcheck -q --error-exitcode=1 --enable=warning,portability --inline-suppr \
		--suppress=missingIncludeSystem --suppress=ctuuninitvar -Ilib lib daemon cli || rc=1
fi
[ $rc -eq 0 ] && echo "lint: ok"
exit $rc
