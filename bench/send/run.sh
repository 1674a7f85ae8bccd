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
. "$here/../need.sh"
need send smtp-sink smtp-source
exec /usr/bin/python3 "$here/send.py" "$@"
