#!/bin/sh
# `make fresh-check`: prove that `./setup check` passes on a bare Debian 12.
#
# A green `make check` on a developer's machine once hid a missing package
# (man(1), needed by `systemd-analyze verify`). This builds what a new user
# has: a debootstrap --variant=minbase bookworm (no python3, no compiler, no
# make, no man, empty apt lists), puts a clean clone of HEAD in it (only what
# is committed), and runs the README's test command inside it, as root.
#
#   sh scripts/fresh-check.sh [DIR]     (default build/fresh; needs root)
#
# Set MIRROR to use another Debian mirror, KEEP=1 to keep the chroot after a
# run (it is removed otherwise, also on failure), ARGS to run `./setup ARGS`
# instead of `./setup check` (e.g. ARGS=run).
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
root=${1:-$top/build/fresh}
mirror=${MIRROR:-http://deb.debian.org/debian}
args=${ARGS:-check}

[ "$(id -u)" = 0 ] || { echo "fresh-check needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null 2>&1 || {
	echo "installing: debootstrap" >&2
	apt-get update -q >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2
}

cleanup() {
	for m in dev/pts dev proc sys tmp; do
		mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
	done
	[ "${KEEP:-0}" = 1 ] || rm -rf "$root"
}
trap cleanup EXIT INT TERM

start=$(date +%s)
rm -rf "$root"
mkdir -p "$root"
echo "fresh-check: debootstrap minbase bookworm into $root" >&2
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 || {
	tail -20 "$root.debootstrap.log" >&2; exit 1; }
# What a fresh install has: no package lists until `apt-get update`.
rm -rf "$root"/var/lib/apt/lists/*
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"

git clone -q --no-local "$top" "$root/root/matrixd"
echo "fresh-check: clone of $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (uncommitted changes are NOT in it)')" >&2

mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
mount -t tmpfs tmpfs "$root/tmp"

set +e
chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	sh -c "cd /root/matrixd && ./setup $args"
rc=$?
set -e
echo "fresh-check: ./setup $args exited $rc after $(( $(date +%s) - start )) s" >&2
exit $rc
