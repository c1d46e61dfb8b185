#!/usr/bin/env bash
# Benchmark 2: a large, mostly zero guest.
#
# An 8 GiB guest running the `idle` workload (its RAM was never written, so
# nearly every page is zero) migrated by `ferry demo` over loopback. The
# figure is the total migration time; target under 1.5 s. One more run
# with verification must verify. Both ferry-vm processes hold the guest, so
# twice its size must be available.
#
# usage: bench/b2-zero.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 5 runs of 8 GiB; --quick: 3 runs of 2 GiB.
#   FERRY_BACKEND=memfd|hugetlb changes the guest's memory (default anon).
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b2 "$@"

MIB=$(pick 2048 8192)
N=${RUNS:-$(pick 3 5)}
BACKEND=${FERRY_BACKEND:-anon}
need_memory $((MIB * 2 + 1024))

echo "[b2] $N runs of a $MIB MiB idle guest ($BACKEND)" >&2
for i in $(seq 1 "$N"); do
	measure ferry "$i" "$FERRY" demo --json --memory "${MIB}M" --workload idle \
		--memory-backend "$BACKEND" --no-verify
done
measure verified 1 "$FERRY" demo --json --memory "${MIB}M" --workload idle \
	--memory-backend "$BACKEND"
report "$MIB" "$BACKEND"
