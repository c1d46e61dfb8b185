# shellcheck shell=bash
# Shared by bench/b*.sh (sourced, not run): the common options, the checks
# that the tools exist, running one measurement and keeping its JSON.
#
# Every benchmark script takes the same options:
#   --quick        fewer runs and smaller guests (about a minute each)
#   --build DIR    the Meson build directory (default build, or $BUILD)
#   --runs N       override the number of runs (rounds)
#   --out DIR      where raw results and logs go (default: a new
#                  directory under /tmp, or $BENCH_OUT)
# Results: DIR/bN.jsonl holds one record per measurement (the command line,
# its exit status and its JSON), DIR/bN.log the tools' stderr; the table is
# printed by bench/report.py from the .jsonl, so it can be printed again.
#
# "The default is what we measure": a benchmark runs ferry as a user types
# it (the "defaults" row: no --memory-backend, verification on) and, in
# the same run, with the best setting (the "best" row: the fastest memory
# backing this host offers, --no-verify), unless it is about a setting,
# and then its table says so. FERRY_BACKEND=B makes B the best row's
# backing instead of the one best_backend() picks.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# As short as it can be, for the commands printed under the tables.
BENCH_DIR=$(realpath --relative-to="$PWD" "$BENCH_DIR")
BUILD=${BUILD:-build}
QUICK=${QUICK:-0}
RUNS=${RUNS:-}
BENCH_OUT=${BENCH_OUT:-}

# The calling script's header comment is its help.
bench_usage() {
	awk 'NR > 1 && /^# shellcheck/ { exit } NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
	exit "${1:-0}"
}

die() {
	echo "$BENCH_NAME: $*" >&2
	exit 2
}

# bench_init NAME "$@": parse the common options, check the build and set
# FERRY, FERRY_VM, OUT, JSONL and LOG.
bench_init() {
	BENCH_NAME=$1
	shift
	while [ $# -gt 0 ]; do
		case $1 in
		--quick) QUICK=1 ;;
		--build) BUILD=${2:?--build needs a directory}; shift ;;
		--runs) RUNS=${2:?--runs needs a number}; shift ;;
		--out) BENCH_OUT=${2:?--out needs a directory}; shift ;;
		-h | --help) bench_usage 0 ;;
		*) echo "$BENCH_NAME: unknown option '$1'" >&2; bench_usage 2 ;;
		esac
		shift
	done
	case $RUNS in '' | [1-9] | [1-9][0-9]) ;; *) die "--runs wants 1 to 99, not '$RUNS'" ;; esac
	need_cmd python3 "the Debian package python3"
	FERRY=$BUILD/tools/ferry
	FERRY_VM=$BUILD/vm/ferry-vm
	for f in "$FERRY" "$FERRY_VM" "$BUILD/bench/rawcopy" "$BUILD/bench/dirtyscan" "$BUILD/bench/freshmem"; do
		[ -x "$f" ] || die "$f is missing: build first (make build, or ninja -C $BUILD), or pass --build DIR"
	done
	export FERRY FERRY_VM
	if [ -z "$BENCH_OUT" ]; then
		BENCH_OUT=$(mktemp -d /tmp/ferry-bench.XXXXXX)
	fi
	mkdir -p "$BENCH_OUT" || die "cannot create $BENCH_OUT"
	OUT=$BENCH_OUT
	JSONL=$OUT/$BENCH_NAME.jsonl
	LOG=$OUT/$BENCH_NAME.log
	: >"$JSONL"
	: >"$LOG"
}

# need_cmd CMD WHAT: fail clearly when CMD is not installed.
need_cmd() {
	command -v "$1" >/dev/null 2>&1 || die "$1 not found: install $2"
}

# need_memory MIB: fail clearly unless MIB MiB are available now.
need_memory() {
	local avail
	avail=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
	[ "$avail" -ge "$1" ] ||
		die "needs ${1} MiB of available memory, the machine has ${avail} MiB now (other jobs running?)"
}

# pick: the quick value or the full one.
pick() {
	if [ "$QUICK" = 1 ]; then echo "$1"; else echo "$2"; fi
}

# free_port: a TCP port free on 127.0.0.1 right now.
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# measure WHAT ROUND CMD...: run CMD, take the last line of its stdout as
# its JSON result and append a record {"what", "round", "cmd", "rc", "r"}
# to JSONL. A command that fails still leaves a record (with its exit
# status, and "r" null when it printed no JSON), so a failed run shows in
# the table instead of vanishing. Prints a one-line summary on stderr.
measure() {
	local what=$1 round=$2 line rc=0
	shift 2
	printf '$ %s\n' "$*" >>"$LOG"
	line=$("$@" 2>>"$LOG" | tail -n 1) || rc=$?
	python3 - "$what" "$round" "$rc" "$line" "$*" >>"$JSONL" <<'PY'
import json, sys
what, rnd, rc, line, cmd = sys.argv[1:6]
try:
    r = json.loads(line)
except ValueError:
    r = None
print(json.dumps({"what": what, "round": int(rnd), "cmd": cmd, "rc": int(rc), "r": r}))
PY
	python3 - "$BENCH_NAME" "$what" "$round" "$rc" "$line" >&2 <<'PY'
import json, sys
name, what, rnd, rc, line = sys.argv[1:6]
try:
    r = json.loads(line)
except ValueError:
    r = {}
keys = ("status", "total_ms", "ms", "downtime_ms", "mb_per_s", "passes")
brief = " ".join(f"{k}={r[k]}" for k in keys if r.get(k) is not None)
print(f"[{name}] {what} #{rnd}: rc {rc} {brief or '(no JSON output)'}")
PY
}

# default_backend: the memory backing ferry-vm uses when none is given, as
# its --help states it ("?" if the text does not say).
default_backend() {
	local help
	help=$("$FERRY_VM" --help 2>/dev/null) || true
	awk '/--memory-backend/ { on = 2 } on-- > 0 && match($0, /default [a-z]+/) {
			print substr($0, RSTART + 8, RLENGTH - 8); found = 1; exit }
			END { if (!found) print "?" }' <<<"$help"
}

# best_backend MIB: set BEST_BACKEND to the fastest guest memory backing
# this host offers for MIB MiB (both ferry-vm processes together), and
# BEST_WHY to the reason: hugetlb when enough huge pages are reserved and
# free, else anonymous memory with transparent huge pages. FERRY_BACKEND
# overrides the choice.
best_backend() {
	local need=$1 free_mib
	if [ -n "${FERRY_BACKEND:-}" ]; then
		BEST_BACKEND=$FERRY_BACKEND
		BEST_WHY="FERRY_BACKEND=$FERRY_BACKEND"
		return
	fi
	free_mib=$(awk '/^HugePages_Free:/ { n = $2 } /^Hugepagesize:/ { kb = $2 }
		END { print int(n * kb / 1024) }' /proc/meminfo)
	if [ "$free_mib" -ge "$need" ]; then
		BEST_BACKEND=hugetlb
		BEST_WHY="$free_mib MiB of huge pages free, $need needed"
	else
		BEST_BACKEND=anon
		BEST_WHY="hugetlb needs $need MiB of reserved huge pages, $free_mib free"
	fi
}

# meta KEY VALUE...: record facts about the run (the settings of its rows)
# for bench/report.py, as a {"meta": {...}} line in JSONL.
meta() {
	python3 - "$@" >>"$JSONL" <<'PY'
import json, sys
a = sys.argv[1:]
print(json.dumps({"meta": dict(zip(a[::2], a[1::2]))}))
PY
}

# settings MIB: choose the best row's backing for two guests of MIB MiB,
# set BEST (the best row's options) and record both rows' settings.
settings() {
	DEFAULT_BACKEND=$(default_backend)
	best_backend $(($1 * 2))
	BEST=(--memory-backend "$BEST_BACKEND" --no-verify)
	meta default_backend "$DEFAULT_BACKEND" best "${BEST[*]}" best_why "$BEST_WHY"
	echo "[$BENCH_NAME] defaults: ferry-vm's default backing ($DEFAULT_BACKEND), verification on; best: ${BEST[*]} ($BEST_WHY)" >&2
}

# both_rows ROUND SUFFIX CMD...: measure CMD as "defaults" and CMD plus the
# best setting as "best" (each followed by SUFFIX), defaults first in odd
# rounds and second in even ones, so neither always runs right after the
# other's memory was freed.
both_rows() {
	local round=$1 suffix=$2
	shift 2
	if [ $((round % 2)) = 1 ]; then
		measure "defaults$suffix" "$round" "$@"
		measure "best$suffix" "$round" "$@" "${BEST[@]}"
	else
		measure "best$suffix" "$round" "$@" "${BEST[@]}"
		measure "defaults$suffix" "$round" "$@"
	fi
}

# report: print this benchmark's table from its records.
report() {
	python3 "$BENCH_DIR/report.py" "$BENCH_NAME" "$JSONL" "$@"
	echo "raw results: $JSONL, tool output: $LOG"
}

# --- snapshots (benchmarks 8 and 9) ----------------------------------------

# snap_dir: set SNAP_DIR to where snapshot and dd files go, create it and
# describe its file system in SNAP_FS. SNAP_DIR=DIR chooses it; the default
# is a new directory in the build directory, on the repository's own file
# system (a tmpfs would measure memory, not a disk). snap_cleanup removes
# it again (or, in a SNAP_DIR given, the files this benchmark made).
SNAP_OWN=''
snap_dir() {
	if [ -z "${SNAP_DIR:-}" ]; then
		mkdir -p "$BUILD" || die "cannot create $BUILD"
		SNAP_DIR=$(mktemp -d "$BUILD/bench-snap.XXXXXX") || die "cannot create a directory in $BUILD"
		SNAP_OWN=$SNAP_DIR
	fi
	mkdir -p "$SNAP_DIR" || die "cannot create $SNAP_DIR"
	SNAP_FS=$(df -PT "$SNAP_DIR" | awk 'NR == 2 { print $2 " on " $1 ", mounted on " $7 }')
	case $SNAP_FS in
	tmpfs* | ramfs*) echo "[$BENCH_NAME] WARNING: $SNAP_DIR is on $SNAP_FS: memory, not a disk" >&2 ;;
	esac
}

# snap_cleanup: stop the VM and remove this benchmark's files (at exit).
snap_cleanup() {
	vm_stop
	if [ -n "$SNAP_OWN" ]; then
		rm -rf "$SNAP_OWN"
	elif [ -n "${SNAP_DIR:-}" ]; then
		rm -f "$SNAP_DIR/$BENCH_NAME"-*
	fi
	rm -f /dev/shm/ferry-"$BENCH_NAME"-$$-*
}

# avail_mib: MiB of memory available now.
avail_mib() {
	awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo
}

# free_mib DIR: MiB free for an unprivileged writer on DIR's file system.
free_mib() {
	df -Pk "$1" | awk 'NR == 2 { print int($4 / 1024) }'
}

# snap_room SIZE MIB: whether a snapshot file of a MIB guest fits in
# SNAP_DIR (RAM plus a tenth and 512 MiB); if not, records skip_SIZE and
# says so on stderr, and returns 1.
snap_room() {
	local need=$(($2 * 11 / 10 + 512)) free
	free=$(free_mib "$SNAP_DIR")
	[ "$free" -ge "$need" ] && return 0
	meta "skip_$1" "needs $need MiB free on $SNAP_DIR, $free free"
	echo "[$BENCH_NAME] $1 skipped: a file needs $need MiB free on $SNAP_DIR, $free free" >&2
	return 1
}

# size_mib SIZE: "256M", "1G" as MiB.
size_mib() {
	case $1 in
	*G) echo $((${1%G} * 1024)) ;;
	*M) echo "${1%M}" ;;
	*) die "size '$1': want NNNM or NG" ;;
	esac
}

# drop_caches: write back and drop the page cache, so the next read comes
# from the disk. Returns 1 (and changes nothing) when not root.
drop_caches() {
	sync
	[ "$(id -u)" = 0 ] || return 1
	echo 3 >/proc/sys/vm/drop_caches
}

# dd_json: run dd "$@" and print its result as one JSON line {"status",
# "bytes", "total_ms", "mb_per_s"} (MB = 10^6 bytes, as ferry reports).
dd_json() {
	local out rc=0
	out=$(LC_ALL=C dd "$@" 2>&1) || rc=$?
	python3 - "$rc" "$out" <<'PY'
import json, re, sys
rc, out = int(sys.argv[1]), sys.argv[2]
m = re.search(r"^(\d+) bytes .* copied, ([0-9.e+-]+) s", out, re.M)
if rc or not m:
    print(json.dumps({"status": "failed", "error": out.strip().splitlines()[-1:] or None}))
    sys.exit(1)
n, s = int(m.group(1)), float(m.group(2))
print(json.dumps({"status": "completed", "bytes": n, "total_ms": round(s * 1e3, 1),
                  "mb_per_s": round(n / s / 1e6, 1) if s else None}))
PY
}

# snapshot_run SOCK FILE MIB: `ferry snapshot SOCK FILE --json`; its report
# plus the file's size, apparent and allocated, and the write rate.
snapshot_run() {
	local rc=0 line
	line=$("$FERRY" snapshot "$1" "$2" --json | tail -n 1) || rc=$?
	python3 - "$line" "$2" "$3" <<'PY'
import json, os, sys
line, path, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    r = json.loads(line)
except ValueError:
    r = {"status": "failed", "error": "ferry snapshot printed no report"}
try:
    st = os.stat(path)
    r["file_bytes"], r["file_alloc_bytes"] = st.st_size, st.st_blocks * 512
except OSError:
    r["file_bytes"] = None
r["ram_bytes"] = r.get("ram_bytes") or mib << 20
t = r.get("total_ms")
if r.get("file_bytes") and t:
    r["file_mb_per_s"] = round(r["file_bytes"] / (t / 1e3) / 1e6, 1)
print(json.dumps(r))
PY
	return "$rc"
}

# guest_state SOCK: the guest's "state" in ferry status ("" when there is
# no answer).
guest_state() {
	"$FERRY" status "$1" --json 2>/dev/null | tail -n 1 | python3 -c '
import json, sys
try:
    print((json.load(sys.stdin).get("guest") or {}).get("state") or "")
except ValueError:
    print("")' 2>/dev/null || true
}

# vm_start SOCK ARGS...: start ferry-vm --api-socket SOCK ARGS in the
# background (VM_PID) and wait until its guest runs (RAM populated, the
# random workload's pages written), 10 minutes at most. Its stderr goes
# to LOG.
vm_start() {
	local sock=$1 s
	shift
	rm -f "$sock"
	printf '$ %s\n' "$FERRY_VM --api-socket $sock $*" >>"$LOG"
	"$FERRY_VM" --api-socket "$sock" "$@" >/dev/null 2>>"$LOG" &
	VM_PID=$!
	for _ in $(seq 1 6000); do
		kill -0 "$VM_PID" 2>/dev/null || { VM_PID=''; return 1; }
		s=$(guest_state "$sock")
		case $s in running) return 0 ;; failed) vm_stop; return 1 ;; esac
		sleep 0.1
	done
	vm_stop
	return 1
}

# vm_stop: end the ferry-vm vm_start started.
vm_stop() {
	[ -n "${VM_PID:-}" ] || return 0
	kill "$VM_PID" 2>/dev/null || true
	wait "$VM_PID" 2>/dev/null || true
	VM_PID=''
}
