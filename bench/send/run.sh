#!/bin/sh
# Delivery benchmark: matrixd --once against Postfix's smtp-sink, next to
# Postfix's smtp-source on the same sink (bench/send/README.md).
#
#   sh bench/send/run.sh [--runs N] [--only throughput,slow,memory] [--json FILE] …
#
# Needs build/matrixd and build/matrixctl (make), smtp-sink and smtp-source
# (Debian package postfix: `sh scripts/deps.sh bench` as root) and
# /usr/bin/python3. Takes about 6 minutes; prints a table; exits 1 when a
# target is missed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${MATRIXD_BUILD:-$root/build}

for b in matrixd matrixctl; do
	[ -x "$build/$b" ] || { echo "bench/send: $build/$b missing; run make first" >&2; exit 1; }
done
PATH=$PATH:/usr/sbin:/sbin
for t in smtp-sink smtp-source; do
	command -v $t >/dev/null ||
		{ echo "bench/send: $t missing; run \`sh scripts/deps.sh bench\` as root" >&2; exit 1; }
done
exec /usr/bin/python3 "$here/send.py" "$@"
