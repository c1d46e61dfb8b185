#!/usr/bin/env bash
# Benchmark 14: time to detect a stalled peer against the configured stall
# limit (--stall-timeout-ms).
#
# A 64 MiB guest writing 40 MB/s migrates over a link capped at 20 MB/s
# (--max-bandwidth 20, --no-auto-converge: it stays in precopy), and once
# its pages flow one of three things happens:
#   dst-stop   the destination ferry-vm is frozen (SIGSTOP): measured from
#              the signal to the end of 'ferry migrate' (the source has
#              failed and resumed its guest)
#   src-stop   the source ferry-vm is frozen: from the signal to the
#              destination's "incoming migration failed" (it gave up and
#              listens again); the destination has the same limit
#   black-hole a proxy between them stops forwarding both ways: from then
#              to the end of 'ferry migrate'
# The table gives the limit, the case, the detection time and its ratio to
# the limit, and what the engine measured (stall_detect_ms, the silence it
# saw; the rest is filling socket buffers, and for the source the ABORT it
# tries for at most a second and its resume).
#
# usage: bench/b14-stall.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: limits of 1, 2, 5 and 10 s, 3 runs each; --quick: 1 and 2 s, 1 run.
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b14 "$@"

N=${RUNS:-$(pick 1 3)}
read -r -a LIMITS <<<"$(pick "1000 2000" "1000 2000 5000 10000")"
CASES=(dst-stop src-stop black-hole)
need_memory 512

PROXY=$BENCH_DIR/../tests/lib/tcpproxy.py

# one LIMIT CASE: a run; prints {"status", "limit_ms", "case",
# "detected_ms", "stall_detect_ms"}.
one() {
	local limit=$1 what=$2 d pids=() port dport t0 t1 mig rc=0 det=null status=ok
	d=$(mktemp -d "$OUT/run.XXXXXX")
	port=$(free_port)
	dport=$port
	"$FERRY_VM" --api-socket "$d/src.sock" --memory 64M --workload random \
		--dirty-rate 40 >"$d/src.log" 2>&1 &
	pids+=($!)
	local src=$!
	"$FERRY_VM" --api-socket "$d/dst.sock" --memory 64M --stall-timeout-ms "$limit" \
		--incoming "tcp:127.0.0.1:$dport" >"$d/dst.log" 2>&1 &
	pids+=($!)
	local dst=$!
	if [ "$what" = black-hole ]; then
		port=$(free_port)
		python3 "$PROXY" "$port" "$dport" "$d/hole" 2>>"$LOG" &
		pids+=($!)
	fi
	for _ in $(seq 1 300); do
		"$FERRY" status "$d/src.sock" --json 2>/dev/null | grep -q '"state":"running"' &&
			"$FERRY" status "$d/dst.sock" >/dev/null 2>&1 &&
			{ [ "$what" != black-hole ] || [ -e "$d/hole.ready" ]; } && break
		sleep 0.05
	done
	"$FERRY" migrate "$d/src.sock" "tcp:127.0.0.1:$port" --downtime-ms 1 \
		--max-passes 100000 --max-bandwidth 20 --no-auto-converge \
		--stall-timeout-ms "$limit" --json >"$d/m.json" 2>"$d/m.log" &
	mig=$!
	for _ in $(seq 1 200); do
		grep -q "state precopy" "$d/m.log" 2>/dev/null && break
		sleep 0.05
	done
	sleep 0.5
	t0=$(date +%s%N)
	case $what in
	dst-stop) kill -STOP "$dst" ;;
	src-stop) kill -STOP "$src" ;;
	black-hole) touch "$d/hole" ;;
	esac
	if [ "$what" = src-stop ]; then
		for _ in $(seq 1 $((limit / 10 + 1000))); do
			grep -q "incoming migration failed" "$d/dst.log" && break
			sleep 0.01
		done
		t1=$(date +%s%N)
		grep -q "incoming migration failed" "$d/dst.log" || status="not detected"
		kill -CONT "$src"
		wait "$mig" || true
	else
		wait "$mig" && status="completed"
		t1=$(date +%s%N)
		[ "$what" = dst-stop ] && kill -CONT "$dst"
		det=$(python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(json.dumps(d.get("stall_detect_ms")))' "$d/m.json" 2>/dev/null || echo null)
	fi
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	wait "${pids[@]}" 2>/dev/null || true
	cat "$d"/*.log >>"$LOG"
	rm -rf "$d"
	echo "{\"status\": \"$status\", \"limit_ms\": $limit, \"case\": \"$what\", \"detected_ms\": $(((t1 - t0) / 1000000)), \"stall_detect_ms\": $det}"
}

echo "[b14] $N run(s) of ${CASES[*]} at limits ${LIMITS[*]} ms (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
meta load "$(cut -d' ' -f1-3 /proc/loadavg)"
for limit in "${LIMITS[@]}"; do
	for what in "${CASES[@]}"; do
		for i in $(seq 1 "$N"); do
			measure "$what" "$i" one "$limit" "$what"
		done
	done
done
python3 - "$JSONL" "$N" <<'PY'
import json, statistics, sys
rows = {}
load = "?"
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "meta" in r:
        load = r["meta"].get("load", load)
        continue
    x = r["r"] or {}
    rows.setdefault((x.get("limit_ms"), r["what"]), []).append(x)
print(f"Time to detect a stalled peer (median of {sys.argv[2]} run(s); load average at the start {load})")
print()
print("| limit ms | case | detected after ms | range | ratio | engine's stall_detect_ms | failed runs |")
print("| ---: | --- | ---: | --- | ---: | ---: | ---: |")
for (limit, what), rs in sorted(rows.items(), key=lambda k: (k[0][0] or 0, k[0][1])):
    ok = [x for x in rs if x.get("status") == "ok"]
    t = [x["detected_ms"] for x in ok]
    e = [x["stall_detect_ms"] for x in ok if x.get("stall_detect_ms")]
    med = statistics.median(t) if t else None
    print(f"| {limit} | {what} | {med if med is not None else '-'} | "
          f"{(str(min(t)) + '-' + str(max(t))) if t else '-'} | "
          f"{(f'{med / limit:.2f}') if med and limit else '-'} | "
          f"{(f'{statistics.median(e):.0f}') if e else '-'} | {len(rs) - len(ok)} |")
PY
echo "raw results: $JSONL, tool output: $LOG"
