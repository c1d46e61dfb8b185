#!/usr/bin/env bash
# Benchmark 4: a guest dirtying faster than the link, with and without
# auto-converge.
#
# A `random` guest dirtying 250 MB/s migrated over a link capped at
# 100 MB/s (--max-bandwidth 100), with a 300 ms downtime limit and at most
# --max-precopy-ms of precopy before the migration is cancelled (the
# default timeout strategy). With auto-converge (the default) the engine
# throttles the vCPUs until the passes shrink and the migration completes;
# the table gives the throttle reached (the report's throttle_peak_pct,
# "n/a" when the engine does not report it) and the downtime. The contrast
# run with --no-auto-converge must not converge: it ends cancelled at the
# time limit. One more auto-converge run with verification must verify.
# Uses bench/pair-migrate.sh (two ferry-vm processes and `ferry migrate`),
# since `ferry demo` has no --max-precopy-ms. Also checks that the link
# really was capped: if the sender moved more than the cap allows, the
# engine ignored --max-bandwidth and the figures say nothing about
# auto-converge.
#
# usage: bench/b4-converge.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 3 runs of 512 MiB, 60 s limit; --quick: 1 run of 256 MiB, 20 s.
#   FERRY_BACKEND=memfd|hugetlb changes the guest's memory (default anon).
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b4 "$@"

MIB=$(pick 256 512)
N=${RUNS:-$(pick 1 3)}
LIMIT_MS=$(pick 20000 60000)
CAP=100
RATE=250
BACKEND=${FERRY_BACKEND:-anon}
PAIR=$BENCH_DIR/pair-migrate.sh
need_memory $((MIB * 2 + 512))

echo "[b4] $MIB MiB random guest at $RATE MB/s over a $CAP MB/s cap ($BACKEND): $N auto-converge runs, 1 without" >&2
vm=(--build "$BUILD" --memory "${MIB}M" --workload random --dirty-rate "$RATE" --memory-backend "$BACKEND")
mig=(--max-bandwidth "$CAP" --downtime-ms 300 --max-precopy-ms "$LIMIT_MS")
for i in $(seq 1 "$N"); do
	measure auto "$i" "$PAIR" "${vm[@]}" --no-verify -- "${mig[@]}"
done
measure no-auto 1 "$PAIR" "${vm[@]}" --no-verify -- "${mig[@]}" --no-auto-converge
measure verified 1 "$PAIR" "${vm[@]}" -- "${mig[@]}"
report "$MIB" "$RATE" "$CAP" "$LIMIT_MS"
