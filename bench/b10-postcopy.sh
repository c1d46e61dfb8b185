#!/usr/bin/env bash
# Benchmark 10: postcopy (issue 20), in two parts.
#
# Part 1, a guest dirtying faster than the link: a 1 GiB `random` guest
# writing 300 MB/s migrated over --max-bandwidth 100 (MB/s) with the
# default 300 ms downtime limit and a precopy limit (--max-precopy-ms,
# the default timeout strategy: cancel), the same scenario in every row:
#   precopy       precopy alone (--no-auto-converge): must not converge
#   autoconverge  ferry's defaults (auto-converge is on by default)
#   postcopy      --postcopy (auto: switch when precopy cannot converge)
# interleaved, R rounds, the order rotating from round to round: outcome,
# total time, downtime, throttle peak, passes, and for postcopy the
# destination's faults (p50/p99 of a vCPU's wait for a page) and pages
# requested vs pushed. Target: postcopy total <= 1.2 x RAM / bandwidth
# + 1 s (the table prints total / (RAM / bandwidth)). QEMU's postcopy-ram
# (bench/qemu-postcopy.sh, TCG, the ab boot-sector guest) runs beside it
# at the same size and cap, R rounds; its precopy and auto-converge once
# each (not with --quick).
# Part 2, fault latency on loopback: a 2 GiB `random` guest writing
# 400 MB/s, --postcopy-after-passes 1 (which switches even when what is
# left after pass 1 would fit the downtime limit), no cap, R rounds: the
# destination's fault p50/p99/max (targets p50 <= 100 us, p99 <= 1 ms),
# postcopy_ms (the switch to the last page placed), pages requested vs
# pushed.
# Every row runs on ferry-vm's default memory backing (anon: private
# memory with transparent huge pages, what a user gets without
# --memory-backend) with verification on; the table states the backing.
# Each run goes through bench/pair-migrate.sh (two ferry-vm processes and
# `ferry migrate`), bounded by PAIR_LIMIT_S; its processes end with it.
# While this build's `ferry migrate` has no --postcopy, the postcopy rows
# are left out and the table says so.
#
# usage: bench/b10-postcopy.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 3 rounds, 1 GiB (part 1, precopy limit 120 s) and 2 GiB (part 2);
#   --quick: 1 round, 256 MiB and 512 MiB, 30 s, no QEMU precopy rows.
#   B10_ROWS="precopy autoconverge postcopy qemu-postcopy qemu-precopy
#   qemu-autoconverge latency" chooses rows (default all).
#   B10_LANE_POLL="US ..." runs each round of the latency row once per
#   value of ferry-vm --lane-poll-us (both processes), interleaved, the
#   rows named latency-pollUS (default: one row, ferry-vm's default).
#   Measure it quiet and with SCHED_IDLE busy loops on every CPU: the
#   keeper only matters where a CPU would otherwise halt.
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b10 "$@"

MIB=$(pick 256 1024)
LAT_MIB=$(pick 512 2048)
N=${RUNS:-$(pick 1 3)}
LIMIT_MS=$(pick 30000 120000)
CAP=100
RATE=300
LAT_RATE=400
ROWS=${B10_ROWS:-precopy autoconverge postcopy qemu-postcopy qemu-precopy qemu-autoconverge latency}
[ "$QUICK" = 1 ] && [ -z "${B10_ROWS:-}" ] &&
	ROWS="precopy autoconverge postcopy qemu-postcopy latency"
PAIR=$BENCH_DIR/pair-migrate.sh
QEMU=$BENCH_DIR/qemu-postcopy.sh
# A run may take its precopy limit, a postcopy phase of a few RAM /
# bandwidth, and the verification: beyond that it hangs.
export PAIR_LIMIT_S=$((LIMIT_MS / 1000 + 180))
need_memory $((LAT_MIB * 2 + 1024))

want() { [[ " $ROWS " == *" $1 "* ]]; }

# This build's ferry migrate knows --postcopy (the engine and CLI of
# issue 20), or the postcopy rows are left out.
PC=1
if ! "$FERRY" migrate --help 2>&1 | grep -q -- '--postcopy'; then
	PC=0
	meta skip_postcopy "this build's ferry migrate has no --postcopy"
	echo "[b10] postcopy rows left out: this build's ferry migrate has no --postcopy" >&2
fi
# QEMU needs the Debian package (bench/qemu-postcopy.sh installs it as root).
QEMU_OK=1
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 && [ "$(id -u)" != 0 ]; then
	QEMU_OK=0
	meta skip_qemu "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)"
fi

meta default_backend "$(default_backend)" ram_mib "$MIB" rate "$RATE" cap "$CAP" \
	limit_ms "$LIMIT_MS" lat_ram_mib "$LAT_MIB" lat_rate "$LAT_RATE" rows "$ROWS" \
	lane_poll "${B10_LANE_POLL:-default}"
echo "[b10] part 1: $MIB MiB random guest at $RATE MB/s over a $CAP MB/s cap, precopy limit $((LIMIT_MS / 1000)) s; part 2: $LAT_MIB MiB at $LAT_RATE MB/s, postcopy after 1 pass; $N rounds; rows: $ROWS" >&2

vm=(--build "$BUILD" --memory "${MIB}M" --workload random --dirty-rate "$RATE")
mig=(-- --max-bandwidth "$CAP" --max-precopy-ms "$LIMIT_MS")

# row NAME ROUND: one measurement of part 1's row NAME.
row() {
	case $1 in
	precopy) measure precopy "$2" "$PAIR" "${vm[@]}" "${mig[@]}" --no-auto-converge ;;
	autoconverge) measure autoconverge "$2" "$PAIR" "${vm[@]}" "${mig[@]}" ;;
	postcopy)
		[ "$PC" = 1 ] || return 0
		measure postcopy "$2" "$PAIR" "${vm[@]}" "${mig[@]}" --postcopy
		;;
	qemu-*)
		[ "$QEMU_OK" = 1 ] || return 0
		measure "$1" "$2" "$QEMU" "$MIB" "${1#qemu-}" "$CAP" "$(free_port)" \
			$((LIMIT_MS / 1000))
		;;
	esac
}

order=()
for r in precopy autoconverge postcopy qemu-postcopy; do want "$r" && order+=("$r"); done
for i in $(seq 1 "$N"); do
	# Rotate the order, so no row always runs right after another's
	# memory was freed.
	k=$(((i - 1) % (${#order[@]} > 0 ? ${#order[@]} : 1)))
	for j in $(seq 0 $((${#order[@]} - 1))); do
		row "${order[$(((j + k) % ${#order[@]}))]}" "$i"
	done
done
for r in qemu-precopy qemu-autoconverge; do want "$r" && row "$r" 1; done

if want latency && [ "$PC" = 1 ]; then
	for i in $(seq 1 "$N"); do
		for us in ${B10_LANE_POLL:-default}; do
			row=latency poll=()
			[ "$us" = default ] || { row=latency-poll$us; poll=(--lane-poll-us "$us"); }
			measure "$row" "$i" "$PAIR" --build "$BUILD" --memory "${LAT_MIB}M" \
				--workload random --dirty-rate "$LAT_RATE" "${poll[@]}" \
				-- --postcopy-after-passes 1
		done
	done
fi
report
