#!/usr/bin/env bash
# Benchmark 7: how soon a new ferry-vm answers on its API socket.
#
# Starts ferry-vm (default options, ab workload, --api-socket) and measures
# from the start of the process to the first answer to `status` on its API
# socket, then to the first status that says the guest runs (RAM
# populated, vCPUs started), for guests of 256 MiB, 2 GiB and 8 GiB. Target
# (issue 18): the first answer within 100 ms for every size. A VM that
# predates the "state" field answers only once it runs, so both figures
# are the same for it.
#
# usage: bench/b7-startup.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 5 runs of each size; --quick: 3 runs of 256M, 1G and 2G.
#   FERRY_BACKEND=memfd|hugetlb changes the guest's memory (default:
#   ferry-vm's own default).
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b7 "$@"

N=${RUNS:-$(pick 3 5)}
read -r -a SIZES <<<"$(pick "256M 1G 2G" "256M 2G 8G")"
BACKEND=${FERRY_BACKEND:-}
need_memory $(( $(pick 2048 8192) + 1024 ))

# first_answer SIZE: one start-up, as a JSON line {"status", "ms",
# "running_ms"}.
first_answer() {
	local sock
	sock=$(mktemp -u /tmp/ferry-b7.XXXXXX.sock)
	python3 - "$FERRY_VM" "$sock" "$1" "$BACKEND" 2>>"$LOG" <<'PY'
import json, os, signal, socket, subprocess, sys, time
vm, sock, size, backend = sys.argv[1:5]
cmd = [vm, "--api-socket", sock, "--memory", size]
if backend:
    cmd += ["--memory-backend", backend]
t0 = time.monotonic()
p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=sys.stderr)
first = running = None
status = "ok"
while running is None:
    if p.poll() is not None:
        status = f"ferry-vm exited {p.returncode}"
        break
    if time.monotonic() - t0 > 120:
        status = "timeout"
        break
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
    except OSError:
        s.close()
        time.sleep(0.001)
        continue
    f = s.makefile("rwb")
    f.readline()  # the greeting
    f.write(b'{"execute": "status"}\n')
    f.flush()
    line = f.readline()
    now = time.monotonic()
    s.close()
    try:
        g = json.loads(line)["return"]["guest"]
    except (ValueError, KeyError, TypeError):
        status = "bad status reply"
        break
    if first is None:
        first = now - t0
    state = g.get("state", "running" if g.get("running") else "paused")
    if state == "running":
        running = now - t0
    elif state == "failed":
        status = "initialisation failed"
        break
    else:
        time.sleep(0.005)
p.send_signal(signal.SIGTERM)
try:
    p.wait(timeout=30)
except subprocess.TimeoutExpired:
    p.kill()
    p.wait()
ms = lambda t: None if t is None else round(t * 1e3, 1)
print(json.dumps({"status": status, "ms": ms(first), "running_ms": ms(running)}))
PY
	rm -f "$sock"
}

echo "[b7] $N start-ups of each of ${SIZES[*]} (${BACKEND:-default backing})" >&2
for size in "${SIZES[@]}"; do
	for i in $(seq 1 "$N"); do
		measure "$size" "$i" first_answer "$size"
	done
done
python3 - "$JSONL" "$N" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault(r["what"], []).append(r["r"] or {})
def cell(v):
    v = [x for x in v if x is not None]
    if not v:
        return "-", "-"
    return f"{statistics.median(v):.1f}", f"{min(v):.1f}-{max(v):.1f}"
print(f"Time to the API's first answer (median and range of {sys.argv[2]} runs; target < 100 ms)")
print()
print("| memory | first answer ms | range | guest running ms | range | failed runs |")
print("| --- | ---: | --- | ---: | --- | ---: |")
for size, rs in rows.items():
    a, ar = cell([r.get("ms") for r in rs])
    b, br = cell([r.get("running_ms") for r in rs])
    bad = sum(r.get("status") != "ok" for r in rs)
    print(f"| {size} | {a} | {ar} | {b} | {br} | {bad} |")
PY
echo "raw results: $JSONL, tool output: $LOG"
