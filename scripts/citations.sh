#!/bin/sh
# What the comments cite is in the repository (part of make lint; the rule
# is docs/design.md, Conventions). Over the comments of the tracked sources
# (C /* */ and //, # in shell, Python, make and configuration files, Python
# docstrings, {{! }} in templates) it looks for
#   - a path with a directory (docs/design.md, lib/ledger.h, tests/data/…):
#     it must exist in the tree; an absolute path is the system's, a header
#     found under /usr/include is too, and a pattern (a placeholder part or
#     a *, as in issues/N/SLUG.html) names files matrixd makes;
#   - a document named without its directory (issue-format.md, matrixd.8,
#     matrixctl(8)): some tracked file must have that name, unless it is
#     one of the names matrixd reads in an issue directory (RUNTIME below);
#   - "docs/NAME.md, Section": that document must have a heading with the
#     section's first word in it;
#   - a path into the project's private notes (the shared directory beside
#     the repository), which no clone has.
# It prints FILE:LINE: for each citation that does not hold and exits 1.
set -u
cd "$(dirname "$0")/.."

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	files=$(git ls-files --cached --others --exclude-standard)
else
	files=$(find . -path ./build -prune -o -path ./.git -prune -o -type f -print | sed 's|^\./||')
fi
src=$(printf '%s\n' "$files" | grep -E '(\.(c|h|sh|py|mustache|example|ini|service|sysusers|tmpfiles|pl|md)|^docs/.*\.[58]|(^|/)(Makefile|setup|run|\.clang-format))$' |
	grep -vE '^tests/data/.*[^E]\.(c|h|py|sh|pl|md)$|^tests/data/.*/(real|not-bounces)/' | while read -r f; do [ -f "$f" ] && printf '%s\n' "$f"; done)
names=$(printf '%s\n' "$files" | sed 's|.*/||' | sort -u)

# FILE:LINE<TAB>citation, one a line
cites() {
	# shellcheck disable=SC2086
	awk '
	function lang(f) {
		if (f ~ /\.[ch]$/) return "c"
		if (f ~ /\.py$/) return "py"
		if (f ~ /\.mustache$/) return "mustache"
		if (f ~ /\.(md|[58])$/) return "doc"
		return "sh"
	}
	# a name of files matrixd makes or reads (issues/N/SLUG.html), not a citation
	function pattern(t,  k, n, p, parts) {
		if (t ~ /[*{}]/) return 1
		n = split(t, parts, "/")
		for (k = 1; k <= n; k++) {
			p = parts[k]; sub(/\..*/, "", p)
			if (p ~ /^(N|NAME|SLUG|ID|TOKEN|LIST|FILE|DIR|KEY|DATE)$/) return 1
		}
		return 0
	}
	# per language: a block comment OPEN … CLOSE, a LINE comment, quoted strings
	FNR == 1 {
		L = lang(FILENAME); incomment = 0; OPEN = ""; CLOSE = ""; LINE = "#"; STR = 1
		if (L == "c") { OPEN = "/*"; CLOSE = "*/"; LINE = "//" }
		if (L == "py") { OPEN = "\"\"\""; CLOSE = OPEN }
		if (L == "mustache") { OPEN = "{{!"; CLOSE = "}}"; LINE = ""; STR = 0 }
	}
	{
		line = $0; text = ""; n = length(line); i = 1; q = ""
		if (L == "doc") {
			text = line
			if (FILENAME ~ /\.[58]$/) gsub(/\\-/, "-", text)
		} else {
			while (i <= n) {
				c = substr(line, i, 1)
				if (incomment) {
					e = index(substr(line, i), CLOSE)
					if (e == 0) { text = text substr(line, i); break }
					text = text substr(line, i, e - 1); i += e - 1 + length(CLOSE); incomment = 0
				} else if (q != "") {
					if (c == "\\") i++
					else if (c == q) q = ""
					i++
				} else if (OPEN != "" && substr(line, i, length(OPEN)) == OPEN) {
					incomment = 1; i += length(OPEN)
				} else if (STR && (c == "\"" || c == "'\''")) { q = c; i++ }
				else if (LINE != "" && substr(line, i, length(LINE)) == LINE &&
				         (LINE != "#" || i == 1 || substr(line, i - 1, 1) ~ /[ \t]/)) {
					text = text substr(line, i + length(LINE)); break
				} else i++
			}
		}
		if (text == "") next
		where = FILENAME ":" FNR
		if (text ~ /\.\.\/shared([^A-Za-z0-9_-]|$)|(^|[^A-Za-z0-9_.-])shared\/[A-Z]/)
			print where "\tshared/"
		rest = text
		while (match(rest, /[A-Za-z0-9_.~\/*{},-]*[A-Za-z0-9_*}-]\.(md|txt|c|h|py|sh|pl|mustache|json|html|csv|eml|ini|5|8)([^A-Za-z0-9_]|$)/)) {
			t = substr(rest, RSTART, RLENGTH)
			sub(/[^A-Za-z0-9_*}]$/, "", t)
			rest = substr(rest, RSTART + length(t))
			if (L == "doc" && t !~ /\.(md|[58])$/) continue
			if (t ~ /\.[58]$/ && t !~ /(^|\/)[a-z][a-z.-]*\.[58]$/) continue
			if (t ~ /^[0-9.]*$/ || t ~ /^\.+\//) continue
			if (pattern(t)) continue
			# "docs/NAME.md, Section": the section too
			if (t ~ /^docs\/.*\.md$/ && match(rest, /^, [A-Za-z][A-Za-z0-9 ._-]*\)/)) {
				s = substr(rest, 3, RLENGTH - 3); sub(/[ .].*/, "", s)
				t = t "\t" s
			}
			print where "\t" t
		}
		rest = text
		while (match(rest, /matrix[a-z.]*\([58]\)/)) {
			t = substr(rest, RSTART, RLENGTH); rest = substr(rest, RSTART + RLENGTH)
			sub(/\(/, ".", t); sub(/\)/, "", t)
			print where "\t" t
		}
	}' "$@"
}

# file names of an issue directory (docs/issue-format.md), not documents
RUNTIME='issue.md'
bad=0
# shellcheck disable=SC2086
tab=$(printf '\t')
cites $src | sort -u >"${TMPDIR:-/tmp}/citations.$$"
while IFS="$tab" read -r where t section; do
	ok=1
	case "$t" in
	shared/) ok=0; why="cites shared/, which is not in the repository: point it to docs/" ;;
	/*) ;;
	*/*)
		dir=${where%%:*}; dir=${dir%/*}
		[ -e "$t" ] || [ -e "$dir/$t" ] || [ -e "/usr/include/$t" ] ||
			{ ok=0; why="cites $t, which is not in the repository"; } ;;
	*.c | *.h | *.py | *.sh | *.pl | *.json | *.html | *.csv | *.eml | *.ini | *.mustache) ;;
	$RUNTIME) ;;
	*)
		printf '%s\n' "$names" | grep -qxF -e "$t" || { ok=0; why="cites $t, which is not in the repository (docs/ holds the design, docs/libraries.md the library notes)"; } ;;
	esac
	if [ $ok -eq 1 ] && [ -n "${section:-}" ] && [ -f "$t" ]; then
		grep -E '^#+ ' "$t" | grep -qiF -e "$section" ||
			{ ok=0; why="cites $t, $section: no heading of $t has \"$section\" in it"; }
	fi
	[ $ok -eq 1 ] || { echo "$where: $why"; bad=1; }
done <"${TMPDIR:-/tmp}/citations.$$"
rm -f "${TMPDIR:-/tmp}/citations.$$"
[ $bad -eq 0 ] || echo "citations: a comment above cites what a clone does not have (docs/design.md, Conventions)"
exit $bad
