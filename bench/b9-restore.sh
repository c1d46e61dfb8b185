#!/usr/bin/env bash
# Benchmark 9: restoring a guest from a snapshot file alone (issue 19),
# eagerly and lazily, beside dd reading the same file.
#
# For each size (1, 4 and 8 GiB) a `random` guest writing 100 MB/s
# (ferry-vm's defaults otherwise) runs 2 s and is saved once with `ferry
# snapshot SOCK FILE --json`; then each round, in an order that rotates
# from round to round, each measurement from a cold start: the page cache
# dropped (as root) and SETTLE_S (8) seconds of quiet, so that this
# machine's kernel has handed the freed memory back to its host (free page
# reporting, /proc/cmdline's page_reporting.page_reporting_order):
# - dd reading the file: `dd if=FILE of=/dev/null bs=1M iflag=direct`;
# - freshmem (bench/freshmem.c): the guest's size of fresh memory, as
#   ferry-vm allocates it, populated by 4 threads (what memory alone
#   costs), and the file read into it by 4 threads with 8 MiB direct reads
#   and nothing else (the ceiling of an eager restore on this machine);
# - a full restore: `ferry-vm --api-socket SOCK --incoming file:FILE`
#   (no other option), timed from the start of the process to the first
#   status whose guest runs (bench/restore.py polls the API socket), with
#   the engine's own figures (total_ms, mb_per_s) from `ferry status`;
#   then the same on hugetlb memory (`--memory-backend hugetlb`) from a
#   pool reserved before the rounds and used once by an unmeasured
#   restore: pages in a hugetlb pool stay out of the free lists, so the
#   host keeps backing them (as root; the pool is set back at the end);
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
SETTLE_S=${SETTLE_S:-8}
FRESHMEM=$BUILD/bench/freshmem
snap_dir
HUGE_ORIG=$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || true)
# huge_restore: the pool back to its size before the benchmark.
huge_restore() {
	[ -z "$HUGE_ORIG" ] || echo "$HUGE_ORIG" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
}
trap 'huge_restore; snap_cleanup' EXIT
# huge_reserve MIB: at least MIB of free 2 MiB pages in the hugetlb pool
# (as root); 1 when it cannot be had.
huge_reserve() {
	local want=$(($1 / 2 + 8)) free
	[ "$(id -u)" = 0 ] && grep -q '^Hugepagesize: *2048 kB' /proc/meminfo || return 1
	free=$(awk '/^HugePages_Free/ {print $2}' /proc/meminfo)
	[ "$free" -ge "$want" ] && return 0
	echo $(($(cat /proc/sys/vm/nr_hugepages) + want - free)) >/proc/sys/vm/nr_hugepages 2>/dev/null
	[ "$(awk '/^HugePages_Free/ {print $2}' /proc/meminfo)" -ge "$want" ]
}
if [ "$(id -u)" = 0 ]; then
	CACHES="dropped before each measurement (echo 3 > /proc/sys/vm/drop_caches)"
else
	CACHES="NOT dropped (not root): reads may come from the page cache"
fi
REPORTING=$(cat /sys/module/page_reporting/parameters/page_reporting_order 2>/dev/null || echo none)
meta sizes "${SIZES[*]}" rate "$RATE" snap_fs "$SNAP_FS" snap_dir "$SNAP_DIR" \
	caches "$CACHES" default_backend "$(default_backend)" settle_s "$SETTLE_S" \
	page_reporting_order "$REPORTING"

# cold: drop the page cache (as root), then let the host take back the
# memory freed so far, before a measurement.
cold() {
	drop_caches || true
	sleep "$SETTLE_S"
}

echo "[b9] $ROUNDS rounds of each of ${SIZES[*]}: restore (full, lazy) and dd from one snapshot in $SNAP_DIR ($SNAP_FS); caches $CACHES" >&2
for size in "${SIZES[@]}"; do
	mib=$(size_mib "$size")
	snap_room "$size" "$mib" || continue
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
	huge=
	if huge_reserve "$mib"; then
		huge=1
		python3 "$BENCH_DIR/restore.py" "$FERRY_VM" "$sock" "$file" eager -- \
			--memory-backend hugetlb >>"$LOG" 2>&1 || huge=
	fi
	[ -n "$huge" ] || meta "skip_hugetlb_$size" "no hugetlb pool of $mib MiB (needs root and free memory)"
	for round in $(seq 1 "$ROUNDS"); do
		# Rotate the order: dd, fresh, eager, lazy; fresh, eager, lazy, dd; ...
		order=(dd fresh eager lazy dd fresh eager)
		for what in "${order[@]:$(((round - 1) % 4)):4}"; do
			cold
			case $what in
			dd) measure "dd-read-$size" "$round" dd_json if="$file" of=/dev/null bs=1M iflag=direct ;;
			fresh)
				measure "fresh-mem-$size" "$round" "$FRESHMEM" --size "$mib" --threads 4
				cold
				measure "fresh-read-$size" "$round" "$FRESHMEM" --size "$mib" --threads 4 --read "$file"
				;;
			eager)
				measure "eager-$size" "$round" python3 "$BENCH_DIR/restore.py" "$FERRY_VM" "$sock" "$file" eager
				[ -z "$huge" ] || {
					cold
					measure "eager-hugetlb-$size" "$round" python3 "$BENCH_DIR/restore.py" \
						"$FERRY_VM" "$sock" "$file" eager -- --memory-backend hugetlb
				}
				;;
			*) measure "$what-$size" "$round" python3 "$BENCH_DIR/restore.py" "$FERRY_VM" "$sock" \
				"$file" "$what" ;;
			esac
		done
	done
	rm -f "$file" "$sock"
	huge_restore
done
# shellcheck disable=SC2119
report
cat <<EOF
the snapshot: $FERRY snapshot SOCK FILE --json (snapshot_run), of a guest started as
  $FERRY_VM --api-socket SOCK --memory SIZE --workload random --dirty-rate $RATE
  (running, then $WARM s of its workload); restore.py starts
  $FERRY_VM --api-socket SOCK --incoming file:FILE [--lazy | --memory-backend hugetlb];
  dd_json ARGS = dd ARGS;
  fresh memory: $FRESHMEM --size MIB --threads 4 [--read FILE];
  cold = sync; echo 3 > /proc/sys/vm/drop_caches; sleep $SETTLE_S
EOF
