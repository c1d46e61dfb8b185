#!/usr/bin/env bash
# Benchmark 9: restoring a guest from a snapshot file alone (issue 19),
# eagerly and lazily, beside dd reading the same file.
#
# For each size (1, 4 and 8 GiB) a `random` guest writing 100 MB/s
# (ferry-vm's defaults otherwise) runs 2 s and is saved once with `ferry
# snapshot SOCK FILE --json`; then each round, with the page cache dropped
# before each measurement (as root; otherwise the table says the reads may
# come from memory), in an order that rotates from round to round:
# - dd reading the file: `dd if=FILE of=/dev/null bs=1M iflag=direct`;
# - a full restore: `ferry-vm --api-socket SOCK --incoming file:FILE`
#   (no other option), timed from the start of the process to the first
#   status whose guest runs (bench/restore.py polls the API socket), with
#   the engine's own figures (total_ms, mb_per_s) from `ferry status`;
# - a lazy restore: the same with --lazy, timed to the guest running, then
#   to every page in (lazy_placed = lazy_pages, or lazy_complete_ms), with
#   the page waits the engine measured (page_faults, page_wait_p50_ms,
#   page_wait_p99_ms, page_wait_max_ms).
# Each restore waits for the guest's verdict (verification on) before the
# VM is ended. Throughput: file bytes over the time from the process start
# to every page in, against dd's.
# Targets (issue 19): lazy restore to a running guest <= 100 ms at 8 GiB
# (Firecracker's class; reported at every size); full restore throughput
# >= 0.8 x dd iflag=direct.
#
# usage: bench/b9-restore.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 3 rounds of 1G, 4G, 8G; --quick: 2 rounds of 256M and 1G.
#   SNAP_SIZES="1G 4G" chooses the sizes; SNAP_DIR=DIR where the file goes
#   (default: a new directory in the build directory, the repository's
#   file system).
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b9 "$@"

ROUNDS=${RUNS:-$(pick 2 3)}
read -r -a SIZES <<<"${SNAP_SIZES:-$(pick "256M 1G" "1G 4G 8G")}"
RATE=100
WARM=2
snap_dir
trap snap_cleanup EXIT
if [ "$(id -u)" = 0 ]; then
	CACHES="dropped before each measurement (echo 3 > /proc/sys/vm/drop_caches)"
else
	CACHES="NOT dropped (not root): reads may come from the page cache"
fi
meta sizes "${SIZES[*]}" rate "$RATE" snap_fs "$SNAP_FS" snap_dir "$SNAP_DIR" \
	caches "$CACHES" default_backend "$(default_backend)"

# cold: drop the page cache (as root) before a measurement.
cold() {
	drop_caches || true
}

echo "[b9] $ROUNDS rounds of each of ${SIZES[*]}: restore (full, lazy) and dd from one snapshot in $SNAP_DIR ($SNAP_FS); caches $CACHES" >&2
for size in "${SIZES[@]}"; do
	mib=$(size_mib "$size")
	need_disk=$((mib * 11 / 10 + 512))
	free=$(free_mib "$SNAP_DIR")
	if [ "$free" -lt "$need_disk" ]; then
		meta "skip_$size" "needs $need_disk MiB free on $SNAP_DIR, $free free"
		echo "[b9] $size skipped: the file needs $need_disk MiB free on $SNAP_DIR, $free free" >&2
		continue
	fi
	need_mem=$((mib + 1024))
	if [ "$(avail_mib)" -lt "$need_mem" ]; then
		meta "skip_$size" "needs $need_mem MiB of memory available, $(avail_mib) available"
		echo "[b9] $size skipped: needs $need_mem MiB of memory, $(avail_mib) available" >&2
		continue
	fi
	sock=$SNAP_DIR/b9-vm.sock
	file=$SNAP_DIR/b9-$size.snap
	if ! vm_start "$sock" --memory "$size" --workload random --dirty-rate "$RATE"; then
		meta "skip_$size" "ferry-vm --memory $size did not start (see the log)"
		continue
	fi
	sleep "$WARM"
	measure "snapshot-$size" 0 snapshot_run "$sock" "$file" "$mib"
	vm_stop
	if ! tail -n 1 "$JSONL" | grep -q '"rc": 0,'; then
		meta "skip_$size" "the snapshot failed (see the log)"
		rm -f "$file"
		continue
	fi
	for round in $(seq 1 "$ROUNDS"); do
		# Rotate the order: dd, eager, lazy; eager, lazy, dd; ...
		order=(dd eager lazy dd eager)
		for what in "${order[@]:$(((round - 1) % 3)):3}"; do
			cold
			case $what in
			dd) measure "dd-read-$size" "$round" dd_json if="$file" of=/dev/null bs=1M iflag=direct ;;
			*) measure "$what-$size" "$round" python3 "$BENCH_DIR/restore.py" "$FERRY_VM" "$sock" \
				"$file" "$what" ;;
			esac
		done
	done
	rm -f "$file" "$sock"
done
# shellcheck disable=SC2119
report
cat <<EOF
the snapshot: $FERRY snapshot SOCK FILE --json (snapshot_run), of a guest started as
  $FERRY_VM --api-socket SOCK --memory SIZE --workload random --dirty-rate $RATE
  (running, then $WARM s of its workload); restore.py starts
  $FERRY_VM --api-socket SOCK --incoming file:FILE [--lazy]; dd_json ARGS = dd ARGS
EOF
