#!/usr/bin/env bash
# The hostile cases against a real destination process: ferry-vm
# --incoming. Every case gets an ERROR (or, for a cut stream, the close);
# afterwards the same process, which listens again after each failed
# attempt, has never run its guest and receives a real migration that
# verifies.
. "$(dirname "$0")/../integration/lib.sh"
: "${HOSTILE:?}"
port=$(free_port)
start_vm dst --memory 64M --workload idle --incoming "tcp:127.0.0.1:$port"
start_vm src --memory 64M --workload idle
"$HOSTILE" --target "tcp:127.0.0.1:$port" --region-size $((64 << 20)) \
	>"$T/hostile.tap" 2>"$T/hostile.log"
rc=$?
cat "$T/hostile.tap"
[ "$rc" -eq 0 ] || fail "hostile cases failed against ferry-vm (exit $rc)"
kill -0 "$PID_dst" 2>/dev/null || fail "the destination died"
[ "$(status_field dst 'd["guest"]["running"]')" = false ] ||
	fail "the destination's guest runs after hostile streams"
[ "$(steps dst)" = 0 ] || fail "the destination's guest made progress: $(steps dst) steps"
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --json >"$T/m.json" 2>"$T/m.log" ||
	fail "real migration after the hostile cases failed: $(tail -n1 "$T/m.json")"
[ "$(json_field "$T/m.json" 'd["verified"]')" = true ] ||
	fail "not verified: $(tail -n1 "$T/m.json")"
pass "$(grep '^ok' "$T/hostile.tap" | grep -vc SKIP) hostile cases refused; then migrated: $(tail -n1 "$T/m.json")"
