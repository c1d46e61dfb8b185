#!/usr/bin/env bash
# Benchmark 4: a guest dirtying faster than the link, with and without
# auto-converge.
#
# A `random` guest dirtying 250 MB/s migrated over a link capped at
# 100 MB/s (--max-bandwidth 100), with a 300 ms downtime limit and at most
# --max-precopy-ms of precopy before the migration is cancelled (the
# default timeout strategy): the scenario, the same in every row. With
# auto-converge (the default) the engine throttles the vCPUs until the
# passes shrink and the migration completes; the table gives the throttle
# reached (the report's throttle_peak_pct, "n/a" when the engine does not
# report it) and the downtime. It runs with the defaults (ferry-vm's
# default memory backing, verification on) and with the best setting
# (--memory-backend B --no-verify, B as bench/lib.sh's best_backend picks
# it), interleaved. The contrast run, the defaults with
# --no-auto-converge, must not converge: it ends cancelled at the time
# limit. Every defaults run verifies the guest.
# Uses bench/pair-migrate.sh (two ferry-vm processes and `ferry migrate`),
# since `ferry demo` has no --max-precopy-ms. Also checks that the link
# really was capped: if the sender moved more than the cap allows, the
# engine ignored --max-bandwidth and the figures say nothing about
# auto-converge.
#
# usage: bench/b4-converge.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 2 runs of each row, 512 MiB, 60 s limit; --quick: 1 of each,
#   256 MiB, 20 s.
#   FERRY_BACKEND=B makes B the best row's backing (anon, memfd, hugetlb).
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b4 "$@"

MIB=$(pick 256 512)
N=${RUNS:-$(pick 1 2)}
LIMIT_MS=$(pick 20000 60000)
CAP=100
RATE=250
PAIR=$BENCH_DIR/pair-migrate.sh
need_memory $((MIB * 2 + 512))

settings "$MIB"
echo "[b4] $MIB MiB random guest at $RATE MB/s over a $CAP MB/s cap: $N runs of each row with auto-converge, 1 without" >&2
vm=(--build "$BUILD" --memory "${MIB}M" --workload random --dirty-rate "$RATE")
mig=(-- --max-bandwidth "$CAP" --downtime-ms 300 --max-precopy-ms "$LIMIT_MS")
for i in $(seq 1 "$N"); do
	if [ $((i % 2)) = 1 ]; then
		measure defaults "$i" "$PAIR" "${vm[@]}" "${mig[@]}"
		measure best "$i" "$PAIR" "${vm[@]}" "${BEST[@]}" "${mig[@]}"
	else
		measure best "$i" "$PAIR" "${vm[@]}" "${BEST[@]}" "${mig[@]}"
		measure defaults "$i" "$PAIR" "${vm[@]}" "${mig[@]}"
	fi
done
measure no-auto 1 "$PAIR" "${vm[@]}" "${mig[@]}" --no-auto-converge
report "$MIB" "$RATE" "$CAP" "$LIMIT_MS"
