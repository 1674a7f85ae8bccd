#!/bin/sh
# `make run`: the demo. matrixd in the foreground on examples/ (the real
# issue No. 60), SQLite in run/state, mail into the Maildir run/mail, the
# archive and feeds in run/public, served at http://127.0.0.1:8025/.
# Run it again: nothing is sent twice. Ctrl-C stops it.
set -eu
cd "$(dirname "$0")/.."
conf=examples/matrixd.conf
ctl="build/matrixctl -c $conf"
mkdir -p run/state run/public run/mail run/dkim
for k in rsa:demo-rsa ed25519:demo-ed; do
	[ -e "run/dkim/${k#*:}.pem" ] ||
		$ctl dkim-keygen --type "${k%%:*}" --selector "${k#*:}" \
			--out "run/dkim/${k#*:}.pem" >"run/dkim/${k#*:}.txt"
done
if [ ! -e run/state/matrixd.db ]; then
	echo "first run: adding three demo subscribers"
	$ctl subscribe reader1@example.org --name "读者一" >/dev/null
	$ctl subscribe reader2@example.org --name "Reader Two" >/dev/null
	$ctl subscribe digest@example.org --name "摘要读者" --mode digest >/dev/null
fi
here=$(pwd)
cat <<MSG

  matrixd is running on examples/ (Ctrl-C stops it)

  issues     $here/examples/issues/        (drop a new issue here)
  mail       $here/run/mail/new/           (one file per message; open with any mail reader)
  archive    $here/run/public/index.html   http://127.0.0.1:8025/
  feeds      $here/run/public/feed.xml     http://127.0.0.1:8025/feed.xml (RSS)
             $here/run/public/atom.xml     http://127.0.0.1:8025/atom.xml (Atom)
  dkim       $here/run/dkim/           (the signing keys; *.txt: their DNS records)
  status     build/matrixctl -c $conf status

MSG
exec build/matrixd -c "$conf"
