#!/usr/bin/env bash
# Benchmark 6: turning a dirty bitmap into ranges.
#
# bench/dirtyscan: a 384 MiB bitmap (a 12 TiB guest at 4 KiB pages)
# scanned by fy_bitmap_to_ranges() into a reused range list, clean and
# with 0.1%, 1% and 5% of the pages dirty, spread (independent bits) or
# clustered (runs of 64-512 pages); the clean and 1% cases also bit by bit
# for contrast. Printed next to the reference: a Rust VMM reported 16 ms
# for the clean bitmap and about 380 ms at 1%. No defaults or best rows:
# this micro-benchmark calls one library function, with no setting a user
# chooses.
#
# usage: bench/b6-dirtyscan.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 7 runs per case, 3 for the bit-by-bit loop; --quick: 3 runs, no
#   bit-by-bit loop.
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b6 "$@"

N=${RUNS:-$(pick 3 7)}
need_memory 1024
args=(--runs "$N")
[ "$QUICK" = 1 ] && args+=(--no-naive)
echo "[b6] dirtyscan, $N runs per case" >&2
cmd=("$BUILD/bench/dirtyscan" "${args[@]}")
printf '$ %s\n' "${cmd[*]}" >>"$LOG"
"${cmd[@]}" >"$OUT/b6.out" 2>>"$LOG" || die "dirtyscan failed (see $LOG)"
python3 - "${cmd[*]}" "$OUT/b6.out" >>"$JSONL" <<'PY'
import json, sys
for line in open(sys.argv[2]):
    if line.startswith("{"):
        print(json.dumps({"what": "dirtyscan", "round": 1, "cmd": sys.argv[1], "rc": 0,
                          "r": json.loads(line)}))
PY
report
