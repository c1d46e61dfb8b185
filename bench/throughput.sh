#!/usr/bin/env bash
# Single-run throughput comparison: ferry migrating an incompressible
# `fill` guest over loopback, next to plain C send()/recv() of the same
# bytes between two regions (bench/rawcopy), all in one run so the
# machine's noise is shared.
#
# usage: bench/throughput.sh [BUILD=build] [MIB=2048] [RUNS=3]
set -euo pipefail
B=${1:-build}; MIB=${2:-2048}; RUNS=${3:-3}
FERRY=$B/tools/ferry; RAW=$B/bench/rawcopy
[ -x "$FERRY" ] && [ -x "$RAW" ] || { echo "build first: make build" >&2; exit 2; }
out=$(mktemp); trap 'rm -f "$out"' EXIT

field() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(d$2)" "$1"; }

for i in $(seq 1 "$RUNS"); do
	r=$("$FERRY" demo --memory "${MIB}M" --workload fill --json 2>/dev/null | tail -n 1)
	echo "ferry $(field "$r" '["mb_per_s"]') $(field "$r" '["total_ms"]') $(field "$r" '["verified"]')" >>"$out"
	for backing in memfd thp; do
		r=$("$RAW" --size "$MIB" --sockets 1 --backing $backing)
		echo "raw-$backing $(field "$r" '["mb_per_s"]') $(field "$r" '["ms"]') -" >>"$out"
	done
done
python3 - "$out" "$MIB" <<'PY'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    k, rate, ms, ver = line.split()
    rows.setdefault(k, []).append((float(rate), float(ms), ver))
print(f"single connection, {sys.argv[2]} MiB incompressible, loopback, {len(rows['ferry'])} runs")
print(f"{'what':<34}{'MB/s median':>12}{'range':>16}{'ms median':>11}")
names = {"ferry": "ferry (fill guest, memfd, 1 conn)",
         "raw-memfd": "send/recv, memfd 4 KiB pages",
         "raw-thp": "send/recv, anon THP"}
for k in ("ferry", "raw-memfd", "raw-thp"):
    v = rows[k]; r = [x[0] for x in v]
    print(f"{names[k]:<34}{st.median(r):>12.0f}{min(r):>8.0f}-{max(r):<7.0f}{st.median([x[1] for x in v]):>11.0f}")
f = st.median(x[0] for x in rows["ferry"])
for k in ("raw-memfd", "raw-thp"):
    print(f"ferry / {k}: {f / st.median(x[0] for x in rows[k]):.2f}")
print("ferry verified:", all(x[2] == "True" for x in rows["ferry"]))
PY
