#!/usr/bin/env bash
# Cancel in the middle: the source keeps running and still verifies (it
# migrates successfully afterwards to the same destination).
. "$(dirname "$0")/lib.sh"
port=$(free_port)
start_vm dst --memory 256M --workload random --incoming "tcp:127.0.0.1:$port"
start_vm src --memory 256M --workload random --dirty-rate 400
migrate_in_background src "tcp:127.0.0.1:$port"
"$FERRY" cancel "$T/src.sock" || fail "cancel command failed"
wait $MIG && fail "ferry migrate exited 0 after cancel"
[ "$(json_field "$T/m1.json" 'd["status"]')" = '"cancelled"' ] || fail "report: $(tail -n1 "$T/m1.json")"
source_intact src
# The destination went back to listening; the real migration now works.
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --json >"$T/m2.json" 2>"$T/m2.log" ||
	fail "second migration failed: $(tail -n1 "$T/m2.json")"
[ "$(json_field "$T/m2.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m2.json")"
pass "cancelled, source ran on, then migrated: $(tail -n1 "$T/m2.json")"
