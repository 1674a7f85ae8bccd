#!/bin/sh
# The include rule of docs/design.md ("What may include what"), checked over
# the #include "…" lines (part of make lint):
#   - every lib/ module sits in one layer; a file includes headers of its own
#     layer and of lower ones only;
#   - daemon/ and cli/ include any lib/ header and never each other's;
#   - no SQL outside lib/: daemon/ and cli/ call no sqlite3_ function and
#     hold no statement text.
# A new lib/ module needs a line below (and its place in docs/design.md).
set -u
cd "$(dirname "$0")/.."
for f in lib/*.c lib/*.h daemon/*.c daemon/*.h cli/*.c cli/*.h; do
	[ -e "$f" ] || continue
	echo "$f -"
	sed -n "s|^#include \"\\([^\"]*\\)\".*|$f \\1|p" "$f"
done | awk '
BEGIN {
	# layer  modules (file names without .c/.h)
	split("0 xmalloc err buf utf8 text log fsutil htmltext", l0)
	split("1 addr listname mailconv token httpreq conf", l1)
	split("2 issue md", l2)
	split("3 mustache tmpl mailhtml feed msg render", l3)
	split("4 transport transport_smtp transport_maildir sign", l4)
	split("5 store subs subs_csv subs_web prefs archive ledger", l5)
	split("6 bounce inbound", l6)
	name[0] = "base"; name[1] = "rules"; name[2] = "parse"; name[3] = "render"
	name[4] = "deliver"; name[5] = "store"; name[6] = "inbound"
	for (i = 2; i in l0; i++) layer[l0[i]] = 0
	for (i = 2; i in l1; i++) layer[l1[i]] = 1
	for (i = 2; i in l2; i++) layer[l2[i]] = 2
	for (i = 2; i in l3; i++) layer[l3[i]] = 3
	for (i = 2; i in l4; i++) layer[l4[i]] = 4
	for (i = 2; i in l5; i++) layer[l5[i]] = 5
	for (i = 2; i in l6; i++) layer[l6[i]] = 6
	bad = 0
}
function mod(path,  m) { m = path; sub(/^.*\//, "", m); sub(/\.[ch]$/, "", m); return m }
{
	file = $1; inc = $2
	dir = file; sub(/\/.*/, "", dir)
	if (dir == "lib") {
		m = mod(file); h = mod(inc)
		if (!(m in layer)) {
			if (inc == "-") { printf "layers: %s has no layer in scripts/layers.sh\n", file; bad = 1 }
			next
		}
		if (inc == "-") next
		if (!(h in layer)) {
			printf "layers: %s includes \"%s\", which is not a lib/ module\n", file, inc; bad = 1; next
		}
		if (layer[h] > layer[m]) {
			printf "layers: %s (%s) includes %s (%s, a later layer)\n", file, name[layer[m]], inc, name[layer[h]]
			bad = 1
		}
	} else if ((dir == "cli" && inc == "matrixd.h") || (dir == "daemon" && inc == "cli.h")) {
		printf "layers: %s includes %s: daemon/ and cli/ share only lib/\n", file, inc; bad = 1
	}
}
END { exit bad }
' || rc=1
if grep -n 'sqlite3_' daemon/*.c daemon/*.h cli/*.c cli/*.h 2>/dev/null; then
	echo "layers: SQLite above: statements live in lib/ (docs/design.md)"; rc=1
fi
sql='\b(SELECT|INSERT (OR [A-Z]+ )?INTO|UPDATE [A-Za-z_]+ SET|DELETE FROM|CREATE (TABLE|INDEX|TRIGGER)|ALTER TABLE|DROP (TABLE|INDEX)|PRAGMA|BEGIN( IMMEDIATE)?;|COMMIT;|ROLLBACK)\b'
if grep -nE "$sql" daemon/*.c daemon/*.h cli/*.c cli/*.h 2>/dev/null; then
	echo "layers: SQL above: statements live in lib/, behind a function (docs/design.md)"; rc=1
fi
exit ${rc:-0}
