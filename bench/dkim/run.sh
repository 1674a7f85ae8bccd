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
. "$here/../need.sh"
need dkim smtp-sink smtp-source openssl
exec /usr/bin/python3 "$here/dkim.py" "$@"
