#!/usr/bin/env bash
# Benchmark 12: local migration by memory fds (issue 21, measurement 4):
# downtime and bytes on the wire when the guest's memory is passed as its
# memfd to a new ferry-vm process on the same host, next to a copying
# migration of the same guest over the same UNIX socket.
#
# For each backing (memfd: 4 KiB shmem pages; hugetlb: 2 MiB pages, the
# pool grown by ferry-vm as root) and each size (1, 8 and 16 GiB), a
# `random` guest writing 100 MB/s (ferry-vm's defaults otherwise,
# verification on) is migrated by bench/pair-migrate.sh, R rounds:
#   local  --local: `ferry-vm --local --incoming unix:PATH` (RAM neither
#          populated nor reserved) and `ferry migrate --local`
#   copy   the same pair without --local: precopy passes over the socket
# interleaved, the order alternating from round to round. The copying
# row runs at 1 and 8 GiB only: it needs the guest's RAM twice on one
# host (two processes each holding all of it), and 16 GiB twice does not
# fit this machine's 24 GiB; the fd migration needs it once.
# Columns: downtime (median and range), wire bytes (the source's, all
# records), total time, passes, and the runs that verified. The verdict
# of a large guest comes with its row: the destination's running note
# waits for its check of every page as long as the check advances (its
# stderr says how far every 10 s, its status has guest.verify_pct), where
# a fixed 30 s once left a 16 GiB row unverified.
#
# usage: bench/b12-local.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 3 rounds of 1G, 8G, 16G; --quick: 1 round of 256M and 1G.
#   B12_SIZES="1G 8G" chooses the sizes, B12_BACKINGS="memfd" the
#   backings, B12_COPY_MAX_MIB (8192) the largest copying run.
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b12 "$@"

N=${RUNS:-$(pick 1 3)}
read -r -a SIZES <<<"${B12_SIZES:-$(pick "256M 1G" "1G 8G 16G")}"
read -r -a BACKINGS <<<"${B12_BACKINGS:-memfd hugetlb}"
COPY_MAX_MIB=${B12_COPY_MAX_MIB:-8192}
RATE=100
PAIR=$BENCH_DIR/pair-migrate.sh
export PAIR_LIMIT_S=${PAIR_LIMIT_S:-900}

# hugetlb_ok MIB: whether ferry-vm can have MIB MiB of huge pages here (as
# root it grows the pool itself; otherwise they must be free already).
hugetlb_ok() {
	local free
	grep -q '^Hugepagesize: *2048 kB' /proc/meminfo || return 1
	[ "$(id -u)" = 0 ] && return 0
	free=$(awk '/^HugePages_Free/ {print $2}' /proc/meminfo)
	[ "$free" -ge $(($1 / 2)) ]
}

meta rate "$RATE" sizes "${SIZES[*]}" backings "${BACKINGS[*]}" \
	copy_max_mib "$COPY_MAX_MIB" default_backend "$(default_backend)"
echo "[b12] $N rounds of ${SIZES[*]} on ${BACKINGS[*]}: local (--local) and copy (up to $COPY_MAX_MIB MiB), random guest at $RATE MB/s" >&2

for backing in "${BACKINGS[@]}"; do
	for size in "${SIZES[@]}"; do
		mib=$(size_mib "$size")
		if [ "$backing" = hugetlb ] && ! hugetlb_ok "$mib"; then
			meta "skip_${backing}_$size" "no hugetlb pool of $mib MiB (needs root, or free huge pages)"
			continue
		fi
		modes=(local)
		if [ "$mib" -le "$COPY_MAX_MIB" ]; then
			modes+=(copy)
		else
			meta "skip_copy_${backing}_$size" "a copying migration needs the guest's RAM twice ($((mib * 2)) MiB); only the fd migration runs"
		fi
		# Local: the source's RAM once (plus slack); copy: twice.
		need=$((mib + 1024))
		[ "${#modes[@]}" = 1 ] || need=$((mib * 2 + 1024))
		if [ "$(avail_mib)" -lt "$need" ]; then
			meta "skip_${backing}_$size" "needs $need MiB of memory available, $(avail_mib) available"
			echo "[b12] $backing $size skipped: needs $need MiB, $(avail_mib) available" >&2
			continue
		fi
		vm=(--build "$BUILD" --memory "$size" --memory-backend "$backing"
			--workload random --dirty-rate "$RATE")
		for i in $(seq 1 "$N"); do
			order=("${modes[@]}")
			[ $((i % 2)) = 1 ] || order=($(printf '%s\n' "${modes[@]}" | tac))
			for mode in "${order[@]}"; do
				case $mode in
				local) measure "local-$backing-$size" "$i" "$PAIR" "${vm[@]}" --local ;;
				copy) measure "copy-$backing-$size" "$i" "$PAIR" "${vm[@]}" --unix ;;
				esac
			done
		done
	done
done
report
