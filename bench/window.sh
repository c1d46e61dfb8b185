#!/usr/bin/env bash
# The window sweep behind FY_DEFAULT_WINDOW and the default chunk size
# (docs/design-notes.md, "The window, measured"): an incompressible `fill`
# guest migrated over loopback for every combination of connections,
# window and chunk size, RUNS times each. The runs of one combination are
# spread over the sweep (all combinations once, then again), so slow
# phases of a shared machine hit all of them alike; before each run the
# script waits until no other ferry-vm runs.
#
# usage: bench/window.sh [BUILD=build] [RUNS=3] [MIB=2048] [RAW=window.raw]
# CONNS, WINDOWS and CHUNKS (space-separated) narrow the sweep, e.g.
# CONNS="1 2" WINDOWS="1 2 4" bench/window.sh build 5.
# Prints a Markdown table of the median mb_per_s (and the range), then one
# of the median total_ms; raw results go to RAW, one run a line.
set -uo pipefail
B=${1:-build}; RUNS=${2:-3}; MIB=${3:-2048}; RAW=${4:-window.raw}
FERRY=$B/tools/ferry
[ -x "$FERRY" ] || { echo "build first: make build" >&2; exit 2; }
read -ra CONNS <<<"${CONNS:-1 2 4}"
read -ra WINDOWS <<<"${WINDOWS:-1 2 4 8 16}"
read -ra CHUNKS <<<"${CHUNKS:-256K 1M 4M}"

quiet() {
	for _ in $(seq 1 600); do
		pgrep -x ferry-vm >/dev/null || return 0
		sleep 0.5
	done
}

: >"$RAW"
for run in $(seq 1 "$RUNS"); do
	for c in "${CHUNKS[@]}"; do
		for n in "${CONNS[@]}"; do
			for w in "${WINDOWS[@]}"; do
				quiet
				r=$("$FERRY" demo --memory "${MIB}M" --workload fill \
					--memory-backend anon --no-verify --connections "$n" \
					--window "$w" --chunk-size "$c" --json 2>/dev/null | tail -n 1)
				echo "$c $n $w $r" >>"$RAW"
			done
		done
	done
done
python3 - "$RAW" <<'PY'
import json, sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    c, n, w, js = line.split(" ", 3)
    try:
        d = json.loads(js)
    except ValueError:
        continue
    if d.get("status") != "completed":
        continue
    rows.setdefault((c, int(n), int(w)), []).append((d["mb_per_s"], d["total_ms"]))
chunks = sorted({k[0] for k in rows}, key=lambda c: int(c[:-1]) * (1024 if c[-1] == "M" else 1))
conns = sorted({k[1] for k in rows}); wins = sorted({k[2] for k in rows})
for what, i, fmt in (("mb_per_s, median (min-max)", 0, "{:.0f} ({:.0f}-{:.0f})"),
                     ("total_ms, median", 1, "{:.0f}")):
    print(f"\n{what}\n")
    print("| chunk | conns | " + " | ".join(f"window {w}" for w in wins) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in wins) + " |")
    for c in chunks:
        for n in conns:
            cells = []
            for w in wins:
                v = [x[i] for x in rows.get((c, n, w), [])]
                if not v:
                    cells.append("-")
                elif i == 0:
                    cells.append(fmt.format(st.median(v), min(v), max(v)))
                else:
                    cells.append(fmt.format(st.median(v)))
            print(f"| {c} | {n} | " + " | ".join(cells) + " |")
PY
