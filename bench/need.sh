# Sourced by bench/*/run.sh after setting here (the benchmark's folder):
#   need NAME TOOL…
# stops with what to do when build/matrixd, build/matrixctl (or those of
# MATRIXD_BUILD) or one of the tools is missing; the Postfix tools are
# found in /usr/sbin too.
root=$(cd "$here/../.." && pwd)
build=${MATRIXD_BUILD:-$root/build}
PATH=$PATH:/usr/sbin:/sbin

need() {
	name=$1
	shift
	for b in matrixd matrixctl; do
		[ -x "$build/$b" ] || { echo "bench/$name: $build/$b missing; run make first" >&2; exit 1; }
	done
	for t in "$@"; do
		command -v "$t" >/dev/null ||
			{ echo "bench/$name: $t missing; run \`sh scripts/deps.sh bench\` as root" >&2; exit 1; }
	done
}
