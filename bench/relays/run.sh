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
. "$here/../need.sh"
need relays smtp-sink
exec /usr/bin/python3 "$here/relays.py" "$@"
