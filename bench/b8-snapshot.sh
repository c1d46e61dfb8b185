#!/usr/bin/env bash
# Benchmark 8: live snapshots into a file (issue 19), beside dd and QEMU.
#
# For each size (1, 4 and 8 GiB), each round starts a `random` guest
# writing 100 MB/s with ferry-vm's defaults (`ferry-vm --api-socket SOCK
# --memory SIZE --workload random --dirty-rate 100`: every page holds
# data from the start), lets it run 2 s and takes a live snapshot, `ferry
# snapshot SOCK FILE --json` (the guest keeps running; the report gives
# the pause, the total time, the passes), then stops it. In the same
# round, on the same file system and with the same file size (the
# snapshot's, in 1 MiB blocks), the file system's own speed: dd from
# random data in /dev/shm (a 64 MiB random block repeated) with `oflag=direct conv=fsync` and buffered
# with `conv=fsync`. Then QEMU's snapshot of a guest of the same RAM size
# (bench/qemu-snapshot.sh, TCG: RAM of random data): `migrate "exec:cat >
# FILE"` of a paused guest (savevm-style) and the same with QEMU's live
# snapshot capability background-snapshot (its guest, idle firmware,
# writes almost nothing), in the first QEMU_ROUNDS rounds (default 2);
# mapped-ram too when this QEMU has it (Debian's 7.2 does not: the table
# says what `query-migrate-capabilities` and a file: URI answered). The
# order alternates from round to round (ferry first in odd rounds, dd
# first in even ones). Files are removed after each measurement, a size
# whose files do not fit in the free space (or whose guest does not fit
# in the available memory) is skipped and the table says so.
# Figures: pause (downtime_ms), total_ms, file size against RAM (apparent
# and allocated), write throughput (file bytes / total) and its ratio to
# each dd with the range of the per-round ratios.
# Targets (issue 19): 1 GiB pause <= 50 ms; file <= 1.05 x RAM; write
# throughput >= 0.8 x dd (direct).
#
# usage: bench/b8-snapshot.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 3 rounds of 1G, 4G, 8G; --quick: 2 rounds of 256M and 1G.
#   SNAP_SIZES="1G 4G" chooses the sizes; SNAP_DIR=DIR where files go
#   (default: a new directory in the build directory, the repository's
#   file system); QEMU_ROUNDS=N (0 leaves QEMU out).
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b8 "$@"

ROUNDS=${RUNS:-$(pick 2 3)}
read -r -a SIZES <<<"${SNAP_SIZES:-$(pick "256M 1G" "1G 4G 8G")}"
RATE=100
WARM=2
QEMU_ROUNDS=${QEMU_ROUNDS:-2}
QEMU_SNAP=$BENCH_DIR/qemu-snapshot.sh
snap_dir
trap snap_cleanup EXIT
if [ "$QEMU_ROUNDS" != 0 ] && ! command -v qemu-system-x86_64 >/dev/null 2>&1 &&
	[ "$(id -u)" != 0 ]; then
	die "qemu-system-x86_64 not found: install the Debian package qemu-system-x86 (or QEMU_ROUNDS=0)"
fi

# ferry_round SIZE ROUND: one live snapshot of a fresh guest.
ferry_round() {
	local size=$1 round=$2 sock=$SNAP_DIR/b8-vm.sock file=$SNAP_DIR/b8-ferry.snap
	rm -f "$file"
	sync
	if ! vm_start "$sock" --memory "$size" --workload random --dirty-rate "$RATE"; then
		meta "fail_$size-$round" "ferry-vm --memory $size did not start (see the log)"
		echo "[b8] ferry-vm --memory $size did not start" >&2
		return
	fi
	sleep "$WARM"
	measure "ferry-$size" "$round" snapshot_run "$sock" "$file" "$(size_mib "$size")"
	vm_stop
	# dd writes as much as a complete snapshot took.
	if tail -n 1 "$JSONL" | grep -q '"rc": 0,'; then
		FILE_MIB=$(python3 -c 'import os, sys; print(-(-os.path.getsize(sys.argv[1]) // 2**20))' \
			"$file" 2>/dev/null || echo "${FILE_MIB:-}")
	fi
	rm -f "$file" "$sock"
}

# make_src MIB: random data in SRC (/dev/shm), at least MIB MiB: dd's
# source and QEMU's guest RAM. A 64 MiB random block repeated: made at
# memory speed, and neither a disk nor QEMU's stream compresses it. It is
# removed after each round, so that it never shares memory with a guest.
make_src() {
	local have=0
	[ -e "$SRC" ] && have=$(($(stat -c %s "$SRC") >> 20))
	[ "$have" -ge "$1" ] && return 0
	python3 - "$SRC" "$1" <<'PY'
import os, sys
block = os.urandom(64 << 20)
left = int(sys.argv[2]) << 20
with open(sys.argv[1], "wb") as f:
    while left > 0:
        left -= f.write(block[:left])
PY
}

# dd_round SIZE ROUND: the file system's speed for FILE_MIB MiB.
dd_round() {
	local size=$1 round=$2 file=$SNAP_DIR/b8-dd.img n
	# The snapshot's size once known, else the guest's.
	n=${FILE_MIB:-$(size_mib "$size")}
	make_src "$n"
	rm -f "$file"
	sync
	measure "dd-direct-$size" "$round" dd_json if="$SRC" of="$file" bs=1M count="$n" \
		oflag=direct conv=fsync
	rm -f "$file"
	sync
	measure "dd-fsync-$size" "$round" dd_json if="$SRC" of="$file" bs=1M count="$n" \
		conv=fsync
	rm -f "$file"
	# The source is as large as the guest's RAM: never beside a guest
	# (qemu_round makes it again).
	rm -f "$SRC"
}

# qemu_round SIZE ROUND: QEMU's snapshots of the same RAM size.
qemu_round() {
	local size=$1 round=$2 mib file=$SNAP_DIR/b8-qemu.snap mode
	[ "$round" -le "$QEMU_ROUNDS" ] || return 0
	mib=$(size_mib "$size")
	make_src "$mib"
	for mode in exec background-snapshot $QEMU_MAPPED; do
		sync
		measure "qemu-$mode-$size" "$round" "$QEMU_SNAP" save "$mib" "$file" "$mode" "$SRC"
		rm -f "$file"
	done
}

meta sizes "${SIZES[*]}" rate "$RATE" snap_fs "$SNAP_FS" snap_dir "$SNAP_DIR" \
	root "$([ "$(id -u)" = 0 ] && echo yes || echo no)" default_backend "$(default_backend)"
QEMU_MAPPED=''
if [ "$QEMU_ROUNDS" != 0 ]; then
	measure qemu-probe 0 "$QEMU_SNAP" probe
	# A QEMU with mapped-ram also runs it.
	if tail -n 1 "$JSONL" | grep -q '"mapped_ram": true'; then
		QEMU_MAPPED=mapped-ram
	fi
fi
echo "[b8] $ROUNDS rounds of each of ${SIZES[*]}: a random guest at $RATE MB/s, live snapshot into $SNAP_DIR ($SNAP_FS); dd; QEMU in the first $QEMU_ROUNDS rounds" >&2
for size in "${SIZES[@]}"; do
	mib=$(size_mib "$size")
	snap_room "$size" "$mib" || continue
	# The guest, then the dd source and QEMU's RAM image in /dev/shm.
	need_mem=$((mib * 11 / 10 + 1024))
	if [ "$(avail_mib)" -lt "$need_mem" ]; then
		meta "skip_$size" "needs $need_mem MiB of memory available, $(avail_mib) available"
		echo "[b8] $size skipped: needs $need_mem MiB of memory, $(avail_mib) available" >&2
		continue
	fi
	SRC=/dev/shm/ferry-b8-$$-src.bin
	FILE_MIB=''
	for round in $(seq 1 "$ROUNDS"); do
		if [ $((round % 2)) = 1 ] || [ -z "$FILE_MIB" ]; then
			ferry_round "$size" "$round"
			dd_round "$size" "$round"
		else
			dd_round "$size" "$round"
			ferry_round "$size" "$round"
		fi
		qemu_round "$size" "$round"
		rm -f "$SRC"
	done
done
# shellcheck disable=SC2119
report
cat <<EOF
snapshot_run SOCK FILE MIB = $FERRY snapshot SOCK FILE --json, on a guest started as
  $FERRY_VM --api-socket SOCK --memory SIZE --workload random --dirty-rate $RATE
  (running, then $WARM s of its workload); dd_json ARGS = dd ARGS (its figures as JSON)
EOF
