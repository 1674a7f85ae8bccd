#!/bin/sh
# Runs every cmocka program in $1 and prints one summary line:
#   unit tests (plain): 123 passed, 0 failed, 9 programs
# Each program's own output is shown only when it fails.
dir=$1
label=${2:-plain}
passed=0 failed=0 progs=0 bad=""
for t in "$dir"/test_*; do
	[ -x "$t" ] || continue
	progs=$((progs + 1))
	out=$(cd "$(dirname "$0")/../.." && "$t" 2>&1)
	rc=$?
	p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
	f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
	passed=$((passed + ${p:-0}))
	if [ $rc -ne 0 ] || [ -n "$f" ]; then
		failed=$((failed + ${f:-1}))
		bad="$bad $(basename "$t")"
		printf '%s\n' "$out"
	fi
done
echo "unit tests ($label): $passed passed, $failed failed, $progs programs"
[ $failed -eq 0 ] || { echo "failing:$bad"; exit 1; }
