#!/usr/bin/env bash
# Benchmark 1: throughput of an incompressible guest over loopback.
#
# A 2 GiB `fill` guest (random data, idle once filled) migrated by
# `ferry demo` with 1, 2 and 4 connections, twice each round: with the
# defaults, exactly as a user types it (`ferry demo --memory 2048M
# --workload fill --connections N`: ferry-vm's default memory backing,
# verification on), and with the best setting (--memory-backend B
# --no-verify, B the fastest backing this host offers: hugetlb when
# enough huge pages are reserved, else anonymous THP memory; see
# best_backend in bench/lib.sh). Next to them the ceiling, bench/rawcopy
# moving the same bytes between two THP regions with plain send()/recv()
# over 1, 2 and 4 sockets (one thread each way per socket; in one
# process, the ceiling the targets use, once waking the receiver per
# segment and once per 256 KiB as ferry's receiver does, and once with the
# receiving end in a second process, as a migration's destination is),
# and QEMU's own migration of 2 GiB of random RAM with 1 channel and with
# 4 multifd channels (bench/qemu-peer.sh; installs qemu-system-x86 when
# run as root). Each round runs every configuration once, interleaved, so
# the machine's noise is shared; ratios are of the medians, with the
# range of the per-round ratios. QEMU runs in the first three rounds only
# (QEMU_ROUNDS=N changes that): at about 30 times slower it is far from
# its target, and its 17 s a round are better spent on more rounds of the
# configurations that are near theirs. Seven rounds by default: each
# round runs ferry twice (defaults and best setting).
# Targets, for each ferry row: >= 85% of the ceiling (the faster of the
# two one-process variants, by median) at each connection count, and the
# row's best connection count >= 4x the best QEMU one. Every defaults run
# verifies the guest, and the table counts the runs that verified.
#
# TCP congestion control: ferry runs with its automatic choice (the
# system's default, except that a pacing algorithm such as BBR gives way to
# cubic on a connection within the host) and rawcopy with the algorithm
# that choice gives, so the ceiling moves bytes under the same rules;
# TCP_CC=NAME runs both with NAME. QEMU has no such setting and runs under
# the system's default. The table shows the algorithm of every row.
#
# usage: bench/b1-throughput.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 7 rounds of 2048 MiB; --quick: 2 rounds of 512 MiB.
#   QEMU_PEER=0 leaves QEMU out (reported as skipped); FERRY_BACKEND=B
#   makes B the best row's memory backing (anon, memfd or hugetlb).
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b1 "$@"

MIB=$(pick 512 2048)
ROUNDS=${RUNS:-$(pick 2 7)}
QEMU_ROUNDS=${QEMU_ROUNDS:-3}
# The project's shared peer script is the reference; the copy in bench/
# serves a checkout that has no ../shared next to it.
shared_peer=$BENCH_DIR/../../shared/bench/qemu-peer.sh
if [ -z "${QEMU_PEER:-}" ]; then
	QEMU_PEER=$BENCH_DIR/qemu-peer.sh
	[ -x "$shared_peer" ] && QEMU_PEER=$shared_peer
fi
RAW=$BUILD/bench/rawcopy
SYS_CC=$(cat /proc/sys/net/ipv4/tcp_congestion_control 2>/dev/null || echo unknown)
if [ -n "${TCP_CC:-}" ]; then
	FERRY_CC=(--congestion-control "$TCP_CC")
	RAW_CC=$TCP_CC
else
	FERRY_CC=()
	case $SYS_CC in bbr*) RAW_CC=cubic ;; *) RAW_CC=$SYS_CC ;; esac
fi
need_memory $((MIB * 2 + 512))
if [ "$QEMU_PEER" != 0 ]; then
	[ -x "$QEMU_PEER" ] || die "$QEMU_PEER is missing (QEMU_PEER=0 skips QEMU)"
	if ! command -v qemu-system-x86_64 >/dev/null 2>&1 && [ "$(id -u)" != 0 ]; then
		die "qemu-system-x86_64 not found: install the Debian package qemu-system-x86 (or QEMU_PEER=0)"
	fi
fi

settings "$MIB"
echo "[b1] $ROUNDS rounds of $MIB MiB: rawcopy, ferry (defaults, best) and QEMU (first $QEMU_ROUNDS), interleaved; congestion control: system default $SYS_CC, ferry ${TCP_CC:-automatic}, rawcopy $RAW_CC" >&2
for round in $(seq 1 "$ROUNDS"); do
	for n in 1 2 4; do
		measure "ceiling-$n" "$round" "$RAW" --size "$MIB" --sockets "$n" --backing thp \
			--congestion-control "$RAW_CC"
		measure "ceilinglw-$n" "$round" "$RAW" --size "$MIB" --sockets "$n" --backing thp \
			--congestion-control "$RAW_CC" --rcvlowat 262144
		measure "ceiling2-$n" "$round" "$RAW" --size "$MIB" --sockets "$n" --backing thp \
			--processes 2 --congestion-control "$RAW_CC"
		demo=("$FERRY" demo --json --memory "${MIB}M" --workload fill --connections "$n"
			${FERRY_CC[@]+"${FERRY_CC[@]}"})
		both_rows "$round" "-$n" "${demo[@]}"
	done
	if [ "$QEMU_PEER" != 0 ] && [ "$round" -le "$QEMU_ROUNDS" ]; then
		for ch in 1 4; do
			# A fresh port each time: the last one may still be in use.
			measure "qemu-$ch" "$round" "$QEMU_PEER" "$MIB" "$ch" "$(free_port)"
		done
	fi
done
report "$MIB" "$SYS_CC"
