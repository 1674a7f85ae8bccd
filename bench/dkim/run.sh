#!/bin/sh
# DKIM benchmark: matrixd --once unsigned, with RSA, with RSA + Ed25519,
# next to openssl speed rsa2048 and smtp-source (bench/dkim/README.md).
#
#   sh bench/dkim/run.sh [--runs N] [--subscribers N] [--json FILE]
#
# Needs build/matrixd and build/matrixctl (make), smtp-sink and smtp-source
# (Debian package postfix), openssl and /usr/bin/python3. About 3 minutes.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${MATRIXD_BUILD:-$root/build}
for b in matrixd matrixctl; do
	[ -x "$build/$b" ] || { echo "bench/dkim: $build/$b missing; run make first" >&2; exit 1; }
done
PATH=$PATH:/usr/sbin:/sbin
for t in smtp-sink smtp-source openssl; do
	command -v $t >/dev/null ||
		{ echo "bench/dkim: $t missing; run \`sh scripts/deps.sh bench\` as root" >&2; exit 1; }
done
exec /usr/bin/python3 "$here/dkim.py" "$@"
