#!/bin/sh
# Import benchmark: `matrixctl import` of N generated subscribers (default
# 1,000,000) next to sqlite3's own .import of the same file into the same
# schema, measured in the same run, each into a fresh copy of the same empty
# database. Prints a table: seconds, rows/s, peak RSS, and the ratio.
#
#   sh bench/import/run.sh [ROWS]
#
# Needs build/matrixctl (make), sqlite3 and /usr/bin/python3; /usr/bin/time
# when present (Debian package `time`), else Python's wait4() rusage, which
# is the same getrusage figure.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${MATRIXD_BUILD:-$root/build}
ctl=$build/matrixctl
rows=${1:-1000000}
py=/usr/bin/python3
cache_kib=32768 # what matrixctl import uses (lib/subs_csv.c)

[ -x "$ctl" ] || { echo "bench/import: $ctl missing; run make first" >&2; exit 1; }
command -v sqlite3 >/dev/null || { echo "bench/import: sqlite3 missing (apt-get install sqlite3)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/matrixd-bench-import.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
mkdir "$work/state"
cat >"$work/matrixd.conf" <<EOF
state_dir = "$work/state";
issue_dir = "$work/issues";
public_dir = "$work/public";
site = { base_url = "https://news.example.org/matrix/"; from = "Matrix <matrix@example.org>"; };
EOF

csv=$work/subscribers.csv
$py "$here/gen.py" "$rows" "$csv"
bytes=$(wc -c <"$csv")
cat "$csv" >/dev/null # same page-cache state for every run

# The empty database matrixctl creates: the schema every run starts from.
"$ctl" -c "$work/matrixd.conf" lists >/dev/null
cp "$work/state/matrixd.db" "$work/pristine.db"

# measure LABEL CMD… : runs CMD, appends "LABEL|seconds peak-KiB user sys" to results
measure() {
	label=$1
	shift
	if [ -x /usr/bin/time ]; then
		/usr/bin/time -f '%e %M %U %S' -o "$work/t" "$@" >"$work/out" 2>"$work/err" ||
			{ cat "$work/err" >&2; exit 1; }
	else
		$py - "$work/t" "$@" >"$work/out" 2>"$work/err" <<'EOF' || { cat "$work/err" >&2; exit 1; }
import os, sys, time
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write("%.2f %d %.2f %.2f\n" % (time.monotonic() - t0, ru.ru_maxrss, ru.ru_utime,
                                      ru.ru_stime))
sys.exit(os.waitstatus_to_exitcode(status))
EOF
	fi
	echo "$label|$(cat "$work/t")" >>"$work/results"
}

# check DB TABLE : the run must have stored every row
check() {
	n=$(sqlite3 "$1" "SELECT count(*) FROM $2")
	[ "$n" = "$rows" ] || { echo "bench/import: $1 has $n rows in $2, expected $rows" >&2; exit 1; }
}

fresh() {
	rm -f "$work/state/matrixd.db" "$work/state/matrixd.db-wal" "$work/state/matrixd.db-shm"
	cp "$work/pristine.db" "$work/state/matrixd.db"
}

pragmas="PRAGMA cache_size=-$cache_kib; PRAGMA synchronous=NORMAL;"
db=$work/state/matrixd.db

# 1. matrixctl import, as admins run it: chunks of 50,000 rows with a pause
#    between them for matrixd (lib/subs_csv.c)
fresh
measure "matrixctl import" "$ctl" -c "$work/matrixd.conf" import "$csv"
check "$db" memberships

# 1b. the same in one transaction: the import without the pauses
fresh
measure "matrixctl import --atomic" "$ctl" -c "$work/matrixd.conf" import --atomic "$csv"
check "$db" memberships

# 2. sqlite3 .import into the matrixd schema: a view whose INSTEAD OF
#    trigger inserts each row into subscribers and memberships, as
#    matrixctl does (same tables, indexes and constraints).
fresh
cat >"$work/trigger.sql" <<EOF
$pragmas
CREATE TEMP VIEW import_rows(email, name, mode) AS SELECT email, name, '' FROM subscribers;
CREATE TEMP TRIGGER import_rows_insert INSTEAD OF INSERT ON import_rows BEGIN
  INSERT INTO subscribers(email, email_key, name, attrs, created_at, updated_at)
    VALUES (NEW.email, substr(NEW.email, 1, instr(NEW.email, '@'))
            || lower(substr(NEW.email, instr(NEW.email, '@') + 1)), NEW.name, '{}',
            unixepoch(), unixepoch());
  INSERT INTO memberships(list_id, subscriber_id, status, mode, consent_at, consent_via,
                          consent_by, status_at, created_at)
    VALUES (1, last_insert_rowid(), 'confirmed', NEW.mode, unixepoch(), 'import',
            'import:bench', unixepoch(), unixepoch());
END;
EOF
measure "sqlite3 .import, same schema (trigger)" \
	sqlite3 "$db" ".read $work/trigger.sql" ".import --csv --skip 1 $csv import_rows"
check "$db" memberships

# 3. sqlite3 .import into a staging table, then set-based INSERT … SELECT
#    into the same schema.
fresh
measure "sqlite3 .import + INSERT…SELECT" \
	sqlite3 "$db" "$pragmas" "CREATE TEMP TABLE staging(email TEXT, name TEXT, mode TEXT)" \
	".import --csv --skip 1 $csv staging" "BEGIN" \
	"INSERT INTO subscribers(email, email_key, name, attrs, created_at, updated_at)
	 SELECT email, substr(email, 1, instr(email, '@'))
	        || lower(substr(email, instr(email, '@') + 1)), name, '{}', unixepoch(), unixepoch()
	 FROM staging ORDER BY rowid" \
	"INSERT INTO memberships(list_id, subscriber_id, status, mode, consent_at, consent_via,
	                         consent_by, status_at, created_at)
	 SELECT 1, id, 'confirmed', 'article', unixepoch(), 'import', 'import:bench', unixepoch(),
	        unixepoch() FROM subscribers ORDER BY id" "COMMIT"
check "$db" memberships

# 4. The floor: .import into a bare table without index or constraint.
fresh
measure "sqlite3 .import, bare table (floor)" \
	sqlite3 "$db" "$pragmas" "CREATE TABLE bare(email TEXT, name TEXT, mode TEXT)" \
	".import --csv --skip 1 $csv bare"
check "$db" bare

$py - "$work/results" "$rows" "$bytes" "$cache_kib" <<'EOF'
import sys
rows, size, cache = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
res = []
for line in open(sys.argv[1]):
    label, v = line.rstrip("\n").split("|")
    t, kb, user, sys_ = v.split()
    res.append((label, float(t), int(kb), float(user) + float(sys_)))
ours = res[0][1]
print("import of %d rows (%.1f MB of CSV), each run into a fresh copy of the same empty"
      " matrixd database; WAL, synchronous=NORMAL, cache_size %d MiB"
      % (rows, size / 1e6, cache // 1024))
print("%-40s %8s %8s %10s %10s %15s" % ("", "seconds", "CPU s", "rows/s", "peak RSS",
                                       "matrixctl/this"))
for label, t, kb, cpu in res:
    ratio = "" if label.startswith("matrixctl") else "%.2fx" % (ours / t)
    print("%-40s %8.2f %8.2f %10d %7.1f MB %15s" % (label, t, cpu, rows / t if t else 0,
                                                   kb / 1024, ratio))
same = [r for r in res if "same schema" in r[0]][0][1]
rss = max(r[2] for r in res if r[0].startswith("matrixctl")) / 1024
print("target: matrixctl import <= 2x sqlite3 .import into the same schema: %s (%.2fx); "
      "peak RSS < 64 MB: %s (%.1f MB)" % ("met" if ours <= 2 * same else "MISSED", ours / same,
                                           "met" if rss < 64 else "MISSED", rss))
EOF
