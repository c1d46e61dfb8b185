#!/usr/bin/env bash
# Benchmark 3: downtime of a guest writing 200 MB/s.
#
# A 2 GiB `random` guest (each write rewrites a whole self-checking page)
# dirtying 200 MB/s, migrated by `ferry demo` over loopback with a 50 ms
# downtime limit (the scenario: --memory 2048M --workload random
# --dirty-rate 200 --downtime-ms 50 in every row), ten times with the
# defaults (ferry-vm's default memory backing, verification on) and ten
# times with the best setting (--memory-backend B --no-verify, B as
# bench/lib.sh's best_backend picks it), interleaved. When B is not the
# default backing, a third row runs the defaults with --no-verify alone,
# so that what verification adds to the pause is measured on its own.
# The table gives every run's downtime split into the final pass, the
# state (save, send, load; with the checks that run in the pause, shown
# on their own) and the switchover handshake, then min/median/max per
# row. Targets: every run of each row converges (completes) with downtime
# under 50 ms; the defaults' median downtime is within 1 ms (or 5%) of the
# same runs with --no-verify (verification must not lengthen the pause);
# every defaults run verifies.
#
# usage: bench/b3-dirty.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 10 runs of each row, 2048 MiB; --quick: 3 of each, 512 MiB.
#   FERRY_BACKEND=B makes B the best row's backing (anon, memfd, hugetlb).
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b3 "$@"

MIB=$(pick 512 2048)
N=${RUNS:-$(pick 3 10)}
RATE=200
LIMIT=50
need_memory $((MIB * 2 + 512))

settings "$MIB"
echo "[b3] runs of each row: $N, a $MIB MiB random guest at $RATE MB/s, limit $LIMIT ms" >&2
args=("$FERRY" demo --json --memory "${MIB}M" --workload random --dirty-rate "$RATE"
	--downtime-ms "$LIMIT")
for i in $(seq 1 "$N"); do
	both_rows "$i" "" "${args[@]}"
	if [ "$BEST_BACKEND" != "$DEFAULT_BACKEND" ]; then
		measure noverify "$i" "${args[@]}" --no-verify
	fi
done
report "$MIB" "$RATE" "$LIMIT"
