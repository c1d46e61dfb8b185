#!/usr/bin/env bash
# Build the libFuzzer harnesses with clang in their own build directory and
# run each for a set time on a working copy of its committed corpus; print
# executions, executions per second and coverage of each.
#
#   tests/fuzz/run.sh [--build DIR] [--seconds N] [--no-build] [HARNESS...]
#
# --build DIR   the clang build directory (default build-fuzz), configured
#               here when it does not exist yet
# --seconds N   time per harness (default 60)
# --no-build    use the harnesses already in DIR (meson tests of a fuzz build)
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
do_build=1
want=()
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift 2 ;;
	--seconds) secs=$2; shift 2 ;;
	--no-build) do_build=0; shift ;;
	-*) echo "usage: $0 [--build DIR] [--seconds N] [--no-build] [HARNESS...]" >&2; exit 2 ;;
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
	echo "harnesses built in $((SECONDS - t0)) s"
fi

[ ${#want[@]} -gt 0 ] || want=("${all[@]}")
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
mkdir -p "$build/fuzz-artifacts"
failed=0
summary=()
for h in "${want[@]}"; do
	exe=$build/tests/fuzz/$h
	if [ ! -x "$exe" ]; then
		echo "skip $h: not built (its layer is not in this tree)"
		summary+=("$(printf '%-13s not built' "$h")")
		continue
	fi
	work=$build/fuzz-work/$h
	log=$build/fuzz-work/$h.log
	mkdir -p "$work"
	echo "running $h for ${secs}s"
	dict=()
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
		failed=1
		echo "FAIL: $h exited $rc; the end of its log ($log):"
		grep -v '^#\|^INFO\|^MS:\|^base64' "$log" | tail -n 40
		ls "$build"/fuzz-artifacts/"$h"-* 2>/dev/null | sed 's/^/artifact: /'
	fi
	summary+=("$(printf '%-13s %5ss %11s runs %8s exec/s  cov %-5s corpus %s%s' \
		"$h" "$secs" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${corp:-?}" \
		"$([ "$rc" -ne 0 ] && echo '  CRASH')")")
done
echo
printf '%s\n' "${summary[@]}"
exit $failed
