#!/usr/bin/env bash
# One migration between two ferry-vm processes driven by `ferry migrate`
# rather than `ferry demo`, for the options only `migrate` has
# (--max-passes, --max-precopy-ms, --timeout-strategy). Prints the
# migration report as one JSON line, plus "verified" (null with
# --no-verify; else the report's and the destination's verdicts and its
# bad-page count together, as `ferry demo` does it).
#
# usage: bench/pair-migrate.sh [--build DIR] [VM OPTIONS] -- [MIGRATE OPTIONS]
#   --build DIR: take ferry and ferry-vm from this build directory
#               (default: $FERRY and $FERRY_VM if set, else build/)
#   VM OPTIONS: --memory SIZE --workload W [--dirty-rate R]
#               [--memory-backend B] [--no-verify] (without --memory-backend
#               ferry-vm's default backing)
#               [--lane-cpu C] [--lane-poll-us US] for both ferry-vm processes
#               [--unix] migrate over a UNIX socket instead of loopback TCP
#               [--local] a local migration by memory fds: --unix, the
#               destination started with --local, `ferry migrate --local`
#   PAIR_LIMIT_S=S: stop `ferry migrate` after S seconds (SIGINT, which
#               cancels a precopy; SIGKILL 10 s later) so that no run hangs
#               a benchmark; the report then says "timeout"
#   PAIR_KEEP_LOGS=DIR: copy both ferry-vm logs there at the end
#               (src-PID.log, dst-PID.log; with FERRY_VM_LOG=2 they hold
#               the engine's own lines, e.g. how often the postcopy push
#               gave way to the answers of page requests)
# Exit status: that of `ferry migrate` (0 completed, 1 failed or cancelled),
# 124 when PAIR_LIMIT_S ran out, 2 for a usage error or a missing program.
set -euo pipefail
build=build vm=() src_only=() dst_only=() mig_only=() verify=1 unix=0
while [ $# -gt 0 ] && [ "$1" != -- ]; do
	case $1 in
	--build) build=$2; FERRY=''; FERRY_VM=''; shift ;;
	--unix) unix=1 ;;
	--local) unix=1; dst_only+=(--local); mig_only+=(--local) ;;
	--dirty-rate) src_only+=("$1" "$2"); shift ;;
	--no-verify) vm+=("$1"); verify=0 ;;
	--memory | --workload | --memory-backend | --lane-cpu | --lane-poll-us) vm+=("$1" "$2"); shift ;;
	*) echo "pair-migrate: unknown VM option '$1'" >&2; exit 2 ;;
	esac
	shift
done
[ "${1:-}" = -- ] && shift
FERRY=${FERRY:-$build/tools/ferry}
FERRY_VM=${FERRY_VM:-$build/vm/ferry-vm}
for f in "$FERRY" "$FERRY_VM"; do
	[ -x "$f" ] || { echo "pair-migrate: $f is missing: build first, or pass --build DIR" >&2; exit 2; }
done

d=$(mktemp -d /tmp/ferry-pair.XXXXXX)
SRC='' DST=''
cleanup() {
	local p
	for p in $SRC $DST; do kill "$p" 2>/dev/null || true; done
	for p in $SRC $DST; do wait "$p" 2>/dev/null || true; done
	if [ -n "${PAIR_KEEP_LOGS:-}" ]; then
		mkdir -p "$PAIR_KEEP_LOGS"
		cp "$d/src.log" "$PAIR_KEEP_LOGS/src-$$.log" 2>/dev/null || true
		cp "$d/dst.log" "$PAIR_KEEP_LOGS/dst-$$.log" 2>/dev/null || true
	fi
	rm -rf "$d"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
uri=tcp:127.0.0.1:$port
[ "$unix" = 0 ] || uri=unix:$d/mig.sock
"$FERRY_VM" "${vm[@]}" "${dst_only[@]}" --incoming "$uri" --api-socket "$d/dst.sock" >"$d/dst.log" 2>&1 &
DST=$!
"$FERRY_VM" "${vm[@]}" "${src_only[@]}" --api-socket "$d/src.sock" >"$d/src.log" 2>&1 &
SRC=$!
for _ in $(seq 1 600); do
	"$FERRY" status "$d/src.sock" >/dev/null 2>&1 &&
		"$FERRY" status "$d/dst.sock" >/dev/null 2>&1 && break
	if ! kill -0 "$SRC" 2>/dev/null || ! kill -0 "$DST" 2>/dev/null; then
		break
	fi
	sleep 0.1
done
if ! "$FERRY" status "$d/src.sock" >/dev/null 2>&1 ||
	! "$FERRY" status "$d/dst.sock" >/dev/null 2>&1; then
	echo "pair-migrate: the ferry-vm processes did not start:" >&2
	tail -n 3 "$d/src.log" "$d/dst.log" >&2
	exit 1
fi
# guest_state SOCK: the guest's "state" in the VM's status ("" when the VM
# predates the field, and then it answers only once its RAM is ready).
guest_state() {
	"$FERRY" status "$1" --json 2>/dev/null | tail -n 1 | python3 -c '
import json, sys
try:
    g = json.load(sys.stdin).get("guest") or {}
    # A destination listens while it populates: not ready until 100 %.
    pct = g.get("populated_pct")
    print("initializing" if pct is not None and pct < 100 else g.get("state") or "")
except ValueError:
    print("?")'
}
# ferry-vm answers at once and prepares guest RAM after: wait until both
# are past that, as a user who reads `ferry status` would.
for _ in $(seq 1 1200); do
	s=$(guest_state "$d/src.sock") t=$(guest_state "$d/dst.sock")
	case "$s $t" in *initializing*) sleep 0.1 ;; *) break ;; esac
done
sleep 1 # let the guest's workload run before the migration, as the demo does
rc=0
limit=()
[ -z "${PAIR_LIMIT_S:-}" ] || limit=(timeout -s INT -k 10 "$PAIR_LIMIT_S")
report=$("${limit[@]}" "$FERRY" migrate "$d/src.sock" "$uri" --json "${mig_only[@]}" "$@" | tail -n 1) ||
	rc=$?
dst=$("$FERRY" status "$d/dst.sock" --json 2>/dev/null | tail -n 1) || dst=null
if [ "$verify" = 1 ] && [ "$rc" = 0 ]; then
	# The destination guest runs and publishes its verdict when its checks
	# end, which may be after it resumed: wait for it, 30 s at most.
	sleep 0.3
	for _ in $(seq 1 300); do
		dst=$("$FERRY" status "$d/dst.sock" --json 2>/dev/null | tail -n 1) || dst=null
		python3 -c 'import json, sys; sys.exit(json.loads(sys.argv[1] or "null") is None or json.loads(sys.argv[1]).get("verified") is None)' "$dst" 2>/dev/null && break
		sleep 0.1
	done
fi
python3 - "$report" "$dst" "$verify" "$rc" <<'PY'
import json, sys
try:
    r = json.loads(sys.argv[1])
except ValueError:
    r = {"status": "failed", "error": "ferry migrate printed no report"}
if sys.argv[4] == "124":
    r["status"], r["error"] = "timeout", "stopped by PAIR_LIMIT_S"
try:
    d = json.loads(sys.argv[2]) or {}
except ValueError:
    d = {}
# The destination's word: its status's migration object, else its report.
mig, rep = d.get("migration") or {}, d.get("report") or {}
r["destination"] = {k: mig.get(k) if mig.get(k) is not None else rep.get(k)
                    for k in ("state", "owner", "postcopy", "postcopy_ms", "faults",
                              "fault_p50_us", "fault_p99_us", "fault_max_us",
                              "page_faults", "page_wait_p50_ms", "page_wait_p99_ms",
                              "page_wait_max_ms", "pages_requested", "pages_pushed",
                              "pages_missing", "recoveries")} if d else None
if sys.argv[3] == "1":
    errs = (d.get("guest") or {}).get("check_errors")
    r["destination_verified"] = d.get("verified")
    r["verified"] = bool(r.get("status") == "completed" and r.get("verified")
                         and d.get("verified") and errs == 0)
else:
    r["verified"] = None
print(json.dumps(r))
PY
exit "$rc"
