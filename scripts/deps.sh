#!/bin/sh
# Install the Debian 12 packages matrixd needs for a purpose, when missing.
#
#   sh scripts/deps.sh build|run|check|fuzz|bench
#
# As root it runs apt-get (updating the package lists first, because a fresh
# machine has none); as anyone else it prints the exact command and fails.
# Already-installed packages cost nothing: dpkg-query decides what is missing.
set -eu

build="make gcc libc6-dev pkg-config libetpan-dev libcurl4-gnutls-dev
libxml2-dev libconfig-dev libsystemd-dev libsqlite3-dev libcmark-gfm-dev
libcmark-gfm-extensions-dev libjson-c-dev libcsv-dev libmicrohttpd-dev
libgnutls28-dev libidn2-dev libunistring-dev libopendkim-dev libssl-dev"
run="$build sqlite3"
check="$build libcmocka-dev python3 python3-pytest python3-pytest-xdist postfix
python3-aiosmtpd python3-feedparser libxml2-utils sqlite3 openssl
spamassassin systemd procps locales man-db chromium chromium-driver
python3-selenium python3-dkim"
fuzz="$build clang libclang-rt-14-dev"
bench="$build postfix sqlite3 time procps python3 openssl"

case "${1:-build}" in
build) want=$build ;;
run) want=$run ;;
check) want=$check ;;
fuzz) want=$fuzz ;;
bench) want=$bench ;;
*) echo "usage: $0 build|run|check|fuzz|bench" >&2; exit 2 ;;
esac

missing=
for p in $want; do
	s=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$s" = installed ] || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" != 0 ]; then
	echo "matrixd needs these Debian packages:$missing" >&2
	echo "run as root:  $cmd" >&2
	exit 1
fi
echo "installing:$missing" >&2
# postfix asks questions on install; smtp-sink/smtp-source are all we use.
if echo "$missing" | grep -q postfix; then
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
fi
apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >&2
