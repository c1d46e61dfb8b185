#!/usr/bin/env bash
# Benchmark 2: a large, mostly zero guest.
#
# An 8 GiB guest running the `idle` workload (its RAM was never written, so
# nearly every page is zero) migrated by `ferry demo` over loopback, with
# the defaults (`ferry demo --memory 8192M --workload idle`: ferry-vm's
# default memory backing, verification on) and with the best setting
# (--memory-backend B --no-verify, B as bench/lib.sh's best_backend picks
# it), interleaved run by run. The figure is the total migration time;
# target under 1.5 s, for each row. Every defaults run verifies the guest.
# Both ferry-vm processes hold the guest, so twice its size must be
# available.
#
# usage: bench/b2-zero.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 5 runs of each row, 8 GiB; --quick: 3 of each, 2 GiB.
#   FERRY_BACKEND=B makes B the best row's backing (anon, memfd, hugetlb).
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b2 "$@"

MIB=$(pick 2048 8192)
N=${RUNS:-$(pick 3 5)}
need_memory $((MIB * 2 + 1024))

settings "$MIB"
echo "[b2] runs of each row: $N, a $MIB MiB idle guest" >&2
for i in $(seq 1 "$N"); do
	both_rows "$i" "" "$FERRY" demo --json --memory "${MIB}M" --workload idle
done
report "$MIB"
