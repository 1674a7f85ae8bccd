#!/bin/sh
# Several relays next to one: matrixd --once to two smtp-sink relays of 4
# connections each, and to one of 8, alternately in the same run
# (bench/relays/README.md).
#
#   sh bench/relays/run.sh [--runs N] [--subscribers N] [--layouts 1x8,2x4,3x4] [--json FILE]
#
# Needs build/matrixd and build/matrixctl (make), smtp-sink (Debian package
# postfix: `sh scripts/deps.sh bench` as root) and /usr/bin/python3.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${MATRIXD_BUILD:-$root/build}

for b in matrixd matrixctl; do
	[ -x "$build/$b" ] || { echo "bench/relays: $build/$b missing; run make first" >&2; exit 1; }
done
PATH=$PATH:/usr/sbin:/sbin
command -v smtp-sink >/dev/null ||
	{ echo "bench/relays: smtp-sink missing; run \`sh scripts/deps.sh bench\` as root" >&2; exit 1; }
exec /usr/bin/python3 "$here/relays.py" "$@"
