#!/usr/bin/env bash
# Benchmark 5: a compressible guest, without compression, with lz4 and
# with zstd.
#
# A `text` guest (RAM filled once with words of a small vocabulary, which
# compresses about 2x with lz4 and 3x with zstd, then idle) migrated by
# `ferry demo` over loopback with --compress none, lz4 and zstd (each at
# its default level), interleaved round by round. This benchmark is about
# a setting, the codec: its rows vary the codec and run on the defaults
# otherwise (ferry-vm's default memory backing, verification on; none is
# the default codec). The table gives the bytes on the wire, guest bytes /
# wire bytes, and the time. On loopback the link is faster than one core
# compresses, so compression costs time here; it pays when the link is the
# bottleneck, so every codec also runs over a link capped at CAP MB/s
# (--max-bandwidth, default 250: about 2 Gbit/s). Every run verifies the
# guest.
#
# usage: bench/b5-compress.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 3 rounds of 1024 MiB; --quick: 1 round of 256 MiB.
#   FERRY_BACKEND=B runs every row on backing B instead of the default.
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b5 "$@"

MIB=$(pick 256 1024)
ROUNDS=${RUNS:-$(pick 1 3)}
CAP=${CAP:-250}
need_memory $((MIB * 2 + 512))

args=("$FERRY" demo --json --memory "${MIB}M" --workload text)
if [ -n "${FERRY_BACKEND:-}" ]; then
	args+=(--memory-backend "$FERRY_BACKEND")
fi
meta default_backend "$(default_backend)" backend "${FERRY_BACKEND:-}"
echo "[b5] $ROUNDS rounds of a $MIB MiB text guest: none, lz4, zstd" >&2
for round in $(seq 1 "$ROUNDS"); do
	for codec in none lz4 zstd; do
		measure "$codec" "$round" "${args[@]}" --compress "$codec"
		measure "$codec@$CAP" "$round" "${args[@]}" --compress "$codec" \
			--max-bandwidth "$CAP"
	done
done
report "$MIB" "$CAP"
