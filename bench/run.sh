#!/usr/bin/env bash
# Runs ferry's benchmarks (docs/benchmarks.md) and prints their tables.
#
#   1 throughput: 2 GiB incompressible guest, 1/2/4 connections, against
#     send/recv over 1/2/4 sockets and QEMU's migration (b1-throughput.sh)
#   2 an 8 GiB mostly zero guest (b2-zero.sh)
#   3 ten runs of a 2 GiB guest dirtying 200 MB/s, downtime (b3-dirty.sh)
#   4 a guest dirtying faster than a capped link: auto-converge on and off
#     (b4-converge.sh)
#   5 a compressible guest: none, lz4, zstd (b5-compress.sh)
#   6 the dirty-bitmap scan micro-benchmark (b6-dirtyscan.sh)
#   7 time from a ferry-vm's start to its API's first answer, 256M, 2G and
#     8G (b7-startup.sh)
#   8 live snapshots of 1, 4 and 8 GiB guests writing 100 MB/s into a file,
#     against dd on the same file system and QEMU's own snapshots
#     (b8-snapshot.sh)
#   9 restores from those snapshot files, full and lazy, against dd
#     reading them (b9-restore.sh)
#  10 postcopy: a 1 GiB guest writing 300 MB/s over a 100 MB/s cap by
#     precopy alone, auto-converge and postcopy, beside QEMU's
#     postcopy-ram; fault latency of a 2 GiB guest on loopback
#     (b10-postcopy.sh)
#  11 live TCP connections: redis-benchmark against a kv guest through a
#     migration (one namespace, two namespace hosts), the guest as a
#     redis-server client, downtime by open connections (b11-net.sh)
#  12 local migration by memory fds: downtime and wire bytes of 1, 8 and
#     16 GiB guests (memfd, hugetlb), beside a copying migration at 1 and
#     8 GiB (b12-local.sh)
#  13 TLS: a 2 GiB incompressible guest over 1/2/4 connections, plaintext,
#     AES-128-GCM and CHACHA20-POLY1305, beside the cipher's single-core
#     speed and QEMU's TLS migration (b13-tls.sh)
#  14 stall detection: time to notice a frozen destination, a frozen
#     source and a black-holed link against --stall-timeout-ms
#     (b14-stall.sh)
#
# The default is what we measure: ferry runs as a user types it, and
# benchmarks 1 to 4 also run it with the best setting (the fastest memory
# backing this host offers, --no-verify), side by side in one table. A
# benchmark about a setting (5: the codec) varies it on the defaults, and
# its table says so; 6 has no user setting.
#
# usage: bench/run.sh [--quick] [--build DIR] [--out DIR] [N...]
#   N...     which benchmarks (default all; also BENCH="3" or BENCH="1 5")
#   --quick  fewer runs and smaller guests: about a minute per benchmark
# Each script also runs alone with the same options. The tables are also
# written to OUT/report.txt, next to the raw records (OUT/bN.jsonl) and the
# tools' output (OUT/bN.log). Exit status: 0 if every script ran (a missed
# target is reported in the table, not in the status), 1 if one failed,
# 2 for a usage error.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
opts=() sel=()
export BENCH_OUT=${BENCH_OUT:-}
while [ $# -gt 0 ]; do
	case $1 in
	--quick) opts+=(--quick) ;;
	--build) opts+=(--build "${2:?--build needs a directory}"); shift ;;
	--out) BENCH_OUT=${2:?--out needs a directory}; shift ;;
	[1-9] | 1[0-4]) sel+=("$1") ;;
	-h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
	*) echo "bench/run.sh: unknown argument '$1' (benchmarks are 1 to 14)" >&2; exit 2 ;;
	esac
	shift
done
scripts=("" b1-throughput b2-zero b3-dirty b4-converge b5-compress b6-dirtyscan b7-startup
	b8-snapshot b9-restore b10-postcopy b11-net b12-local b13-tls b14-stall)
if [ ${#sel[@]} = 0 ] && [ -z "${BENCH:-}" ]; then
	# All of them; a script not in this tree yet is left out with a note.
	for n in 1 2 3 4 5 6 7 8 9 10 11 12 13 14; do
		if [ -x "$here/${scripts[$n]}.sh" ]; then
			sel+=("$n")
		else
			echo "bench/run.sh: benchmark $n (bench/${scripts[$n]}.sh) is not in this tree, left out" >&2
		fi
	done
elif [ ${#sel[@]} = 0 ]; then
	# shellcheck disable=SC2206
	sel=($BENCH)
fi
for n in "${sel[@]}"; do
	case $n in [1-9] | 1[0-4]) ;; *) echo "bench/run.sh: no benchmark '$n' (1 to 14)" >&2; exit 2 ;; esac
	[ -x "$here/${scripts[$n]}.sh" ] || {
		echo "bench/run.sh: benchmark $n needs bench/${scripts[$n]}.sh, which is not in this tree" >&2
		exit 2
	}
done
[ -n "$BENCH_OUT" ] || BENCH_OUT=$(mktemp -d /tmp/ferry-bench.XXXXXX)
mkdir -p "$BENCH_OUT"

{
	rc=0
	echo "ferry benchmarks $(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$here" diff --quiet HEAD 2>/dev/null || echo '+changes')"
	echo "machine: $(nproc) cores, $(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "options: ${opts[*]:-(full)}; results in $BENCH_OUT"
	for n in "${sel[@]}"; do
		"$here/${scripts[$n]}.sh" "${opts[@]}" || {
			echo "benchmark $n (${scripts[$n]}.sh) failed, exit $?" >&2
			rc=1
		}
	done
	echo
	echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
	exit $rc
} | tee "$BENCH_OUT/report.txt"
