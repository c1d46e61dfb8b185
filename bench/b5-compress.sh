#!/usr/bin/env bash
# Benchmark 5: a compressible guest, without compression, with lz4 and
# with zstd.
#
# A `text` guest (RAM filled once with words of a small vocabulary, which
# compresses about 2x with lz4 and 3x with zstd, then idle) migrated by
# `ferry demo` over loopback with --compress none, lz4 and zstd (each at
# its default level), interleaved round by round. The table gives the
# bytes on the wire, guest bytes / wire bytes, and the time. On loopback
# the link is faster than one core compresses, so compression costs time
# here; it pays when the link is the bottleneck, so every codec also runs
# over a link capped at CAP MB/s (--max-bandwidth, default 250: about
# 2 Gbit/s). One more zstd run with verification must verify.
#
# usage: bench/b5-compress.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 3 rounds of 1024 MiB; --quick: 1 round of 256 MiB.
#   FERRY_BACKEND=memfd|hugetlb changes the guest's memory (default anon).
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b5 "$@"

MIB=$(pick 256 1024)
ROUNDS=${RUNS:-$(pick 1 3)}
BACKEND=${FERRY_BACKEND:-anon}
CAP=${CAP:-250}
need_memory $((MIB * 2 + 512))

echo "[b5] $ROUNDS rounds of a $MIB MiB text guest ($BACKEND): none, lz4, zstd" >&2
args=(demo --json --memory "${MIB}M" --workload text --memory-backend "$BACKEND")
for round in $(seq 1 "$ROUNDS"); do
	for codec in none lz4 zstd; do
		measure "$codec" "$round" "$FERRY" "${args[@]}" --compress "$codec" --no-verify
		measure "$codec@$CAP" "$round" "$FERRY" "${args[@]}" --compress "$codec" \
			--no-verify --max-bandwidth "$CAP"
	done
done
measure verified 1 "$FERRY" "${args[@]}" --compress zstd
report "$MIB" "$BACKEND" "$CAP"
