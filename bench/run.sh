#!/bin/sh
# Runs every benchmark: each bench/*/run.sh in turn (`make bench` calls this
# after installing the packages and building). A failing or missing-target
# benchmark does not stop the others; the exit status is 1 if any failed.
set -u

here=$(cd "$(dirname "$0")" && pwd)
status=0
for b in "$here"/*/run.sh; do
	[ -f "$b" ] || continue
	name=$(basename "$(dirname "$b")")
	echo "=== bench/$name"
	if ! sh "$b"; then
		echo "=== bench/$name: FAILED or missed a target" >&2
		status=1
	fi
	echo
done
exit $status
