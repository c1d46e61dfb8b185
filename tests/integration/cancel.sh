#!/usr/bin/env bash
# Cancel in the middle: the source keeps running and still verifies (it
# migrates successfully afterwards to the same destination).
. "$(dirname "$0")/lib.sh"
port=$(free_port)
start_vm dst --memory 256M --workload random --incoming "tcp:127.0.0.1:$port"
start_vm src --memory 256M --workload random --dirty-rate 400
# A 1 ms downtime limit with many passes keeps it in precopy until cancelled.
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --downtime-ms 1 \
	--max-passes 100000 --json >"$T/m1.json" 2>"$T/m1.log" &
M=$!
wait_until 20 sh -c "[ \"\$($FERRY status $T/src.sock --json | python3 -c 'import json,sys; m=json.load(sys.stdin)[\"migration\"]; print(m[\"state\"]==\"precopy\" and m[\"pass\"]>=2)')\" = True ]" ||
	fail "migration never reached its second pass"
"$FERRY" cancel "$T/src.sock" || fail "cancel command failed"
wait $M && fail "ferry migrate exited 0 after cancel"
[ "$(json_field "$T/m1.json" 'd["status"]')" = '"cancelled"' ] || fail "report: $(tail -n1 "$T/m1.json")"
guest_runs src || fail "source guest does not run after cancel"
[ "$(status_field src 'd["guest"]["check_errors"]')" = 0 ] || fail "source guest found bad pages"
# The destination went back to listening; the real migration now works.
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --json >"$T/m2.json" 2>"$T/m2.log" ||
	fail "second migration failed: $(tail -n1 "$T/m2.json")"
[ "$(json_field "$T/m2.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m2.json")"
pass "cancelled, source ran on, then migrated: $(tail -n1 "$T/m2.json")"
