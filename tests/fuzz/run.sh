#!/usr/bin/env bash
# Build the libFuzzer harnesses with clang in their own build directory and
# run each for a set time on a working copy of its committed corpus; print
# executions, executions per second and coverage of each.
#
#   tests/fuzz/run.sh [--build DIR] [--seconds N] [--jobs N] [--no-build | --build-only]
#                     [HARNESS...]
#
# --build DIR   the clang build directory (default build-fuzz), configured
#               here when it does not exist yet
# --seconds N   time per harness (default 60)
# --jobs N      harnesses that run at the same time (default 1)
# --no-build    use the harnesses already in DIR (meson tests of a fuzz build)
# --build-only  build the harnesses and run none
# HARNESS       fuzz_wire, fuzz_receive, fuzz_state, fuzz_snapfile,
#               fuzz_proto, fuzz_memfds, fuzz_tlsrec (default: all built)
#
# New inputs go to DIR/fuzz-work/HARNESS (the committed corpus is only
# read); crashes to DIR/fuzz-artifacts/. Exit status: 0, 1 on a crash or a
# build failure, 77 (a skip for Meson) when clang or libFuzzer is missing.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$src/build-fuzz
secs=60
jobs=1
do_build=1
build_only=0
want=()
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift 2 ;;
	--seconds) secs=$2; shift 2 ;;
	--jobs) jobs=$2; shift 2 ;;
	--no-build) do_build=0; shift ;;
	--build-only) build_only=1; shift ;;
	-*) echo "usage: $0 [--build DIR] [--seconds N] [--jobs N] [--no-build | --build-only] [HARNESS...]" >&2; exit 2 ;;
	*) want+=("$1"); shift ;;
	esac
done
case $build in /*) ;; *) build=$PWD/$build ;; esac
all=(fuzz_wire fuzz_receive fuzz_state fuzz_snapfile fuzz_proto fuzz_memfds fuzz_tlsrec)

if [ "$do_build" = 1 ]; then
	t0=$SECONDS
	if ! command -v clang >/dev/null 2>&1; then
		echo "SKIP: clang is not installed (make deps installs it)"
		exit 77
	fi
	probe=$(mktemp -d)
	trap 'rm -rf "$probe"' EXIT
	echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return d && n; }' >"$probe/p.c"
	if ! clang -fsanitize=fuzzer,address,undefined -o "$probe/p" "$probe/p.c" >"$probe/log" 2>&1; then
		echo "SKIP: clang cannot link libFuzzer (install libclang-rt-14-dev): $(tail -n 1 "$probe/log")"
		exit 77
	fi
	# Two runs on one directory (fuzz-build and fuzz-short in `make check`)
	# take turns: the second waits for the first's build, then finds it done.
	exec 8>"$build.lock"
	flock 8
	if [ ! -f "$build/build.ninja" ]; then
		echo "configuring $build (clang, libFuzzer, ASan+UBSan)"
		CC=clang meson setup "$build" "$src" -Dfuzz=true \
			-Db_sanitize=address,undefined -Db_lundef=false \
			-Dc_args=-fsanitize=fuzzer-no-link >"$build.setup.log" 2>&1 || {
			tail -n 30 "$build.setup.log"
			echo "FAIL: meson setup of $build"
			exit 1
		}
		rm -f "$build.setup.log"
	fi
	targets=()
	for h in "${all[@]}"; do
		grep -q "^build tests/fuzz/$h:" "$build/build.ninja" && targets+=("tests/fuzz/$h")
	done
	ninja -C "$build" "${targets[@]}" >"$build/fuzz-build.log" 2>&1 || {
		grep -E "error|FAILED" "$build/fuzz-build.log" | head -n 20
		echo "FAIL: building the harnesses (log: $build/fuzz-build.log)"
		exit 1
	}
	if grep -q "warning:" "$build/fuzz-build.log"; then
		grep "warning:" "$build/fuzz-build.log" | sort -u | head -n 20
	fi
	exec 8>&-
	echo "harnesses built in $((SECONDS - t0)) s"
fi
[ "$build_only" = 1 ] && exit 0

[ ${#want[@]} -gt 0 ] || want=("${all[@]}")
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
mkdir -p "$build/fuzz-artifacts" "$build/fuzz-work"

# run_one HARNESS: run it for $secs seconds; what it prints goes to
# fuzz-work/HARNESS.out, its summary line to .summary, 1 to .failed on a
# crash. Several run at once with --jobs, each on its own output files.
run_one() {
	local h=$1 exe=$build/tests/fuzz/$1 work=$build/fuzz-work/$1
	local log=$build/fuzz-work/$1.log rc runs rate cov corp
	local dict=()
	exec >"$work.out" 2>&1
	if [ ! -x "$exe" ]; then
		echo "skip $h: not built (its layer is not in this tree)"
		printf '%-13s not built\n' "$h" >"$work.summary"
		return 0
	fi
	mkdir -p "$work"
	echo "running $h for ${secs}s"
	[ -f "$here/$h.dict" ] && dict=(-dict="$here/$h.dict")
	"$exe" -max_total_time="$secs" -print_final_stats=1 -timeout=25 \
		-rss_limit_mb=4096 -artifact_prefix="$build/fuzz-artifacts/$h-" \
		"${dict[@]}" "$work" "$here/corpus/$h" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
	corp=$(grep -o 'corp: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
	if [ "$rc" -ne 0 ]; then
		echo 1 >"$work.failed"
		echo "FAIL: $h exited $rc; the end of its log ($log):"
		grep -v '^#\|^INFO\|^MS:\|^base64' "$log" | tail -n 40
		ls "$build"/fuzz-artifacts/"$h"-* 2>/dev/null | sed 's/^/artifact: /'
	fi
	printf '%-13s %5ss %11s runs %8s exec/s  cov %-5s corpus %s%s\n' \
		"$h" "$secs" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${corp:-?}" \
		"$([ "$rc" -ne 0 ] && echo '  CRASH')" >"$work.summary"
}

for h in "${want[@]}"; do
	rm -f "$build/fuzz-work/$h.failed"
	while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
	run_one "$h" &
done
wait
failed=0
for h in "${want[@]}"; do
	cat "$build/fuzz-work/$h.out"
	[ -f "$build/fuzz-work/$h.failed" ] && failed=1
done
echo
for h in "${want[@]}"; do cat "$build/fuzz-work/$h.summary"; done
exit $failed
