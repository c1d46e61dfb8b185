#!/usr/bin/env bash
# Benchmark 3: downtime of a guest writing 200 MB/s.
#
# A 2 GiB `random` guest (each write rewrites a whole self-checking page)
# dirtying 200 MB/s, migrated by `ferry demo` over loopback with a 50 ms
# downtime limit, ten times. Timing runs use --no-verify: with verification
# the digests of all of RAM run inside the pause and dominate it. The table
# gives every run's downtime split into the final pass, the state (save,
# send, load) and the switchover handshake, then min/median/max. Target:
# every run converges (completes) with downtime under 50 ms. One more run
# with verification (its downtime includes the checks) must verify.
#
# usage: bench/b3-dirty.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 10 runs of 2048 MiB; --quick: 3 runs of 512 MiB.
#   FERRY_BACKEND=memfd|hugetlb changes the guest's memory (default anon).
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b3 "$@"

MIB=$(pick 512 2048)
N=${RUNS:-$(pick 3 10)}
RATE=200
LIMIT=50
BACKEND=${FERRY_BACKEND:-anon}
need_memory $((MIB * 2 + 512))

echo "[b3] $N runs of a $MIB MiB random guest at $RATE MB/s ($BACKEND), limit $LIMIT ms" >&2
args=(demo --json --memory "${MIB}M" --workload random --dirty-rate "$RATE"
	--memory-backend "$BACKEND" --downtime-ms "$LIMIT")
for i in $(seq 1 "$N"); do
	measure ferry "$i" "$FERRY" "${args[@]}" --no-verify
done
measure verified 1 "$FERRY" "${args[@]}"
report "$MIB" "$RATE" "$LIMIT" "$BACKEND"
