#!/usr/bin/env bash
# Run the Meson test suite and print one closing line "N passed, M failed",
# taken from Meson's own summary.
set -uo pipefail
build=${1:-build}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
meson test -C "$build" --print-errorlogs --num-processes 2 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
num() { sed -n "s/^$1:[[:space:]]*\([0-9][0-9]*\)[[:space:]]*\$/\1/p" "$log" | tail -n1; }
ok=$(num Ok); fail=$(num Fail); xfail=$(num "Expected Fail")
unexp=$(num "Unexpected Pass"); skip=$(num Skipped); tmo=$(num Timeout)
passed=$(( ${ok:-0} + ${xfail:-0} ))
failed=$(( ${fail:-0} + ${unexp:-0} + ${tmo:-0} ))
if [ -z "$ok" ] && [ "$rc" -ne 0 ]; then failed=$(( failed > 0 ? failed : 1 )); fi
echo
echo "${passed} passed, ${failed} failed, ${skip:-0} skipped"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
