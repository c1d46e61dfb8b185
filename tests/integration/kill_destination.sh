#!/usr/bin/env bash
# Killing the destination mid-migration leaves the source running and
# intact: it then migrates to a new destination and verifies.
. "$(dirname "$0")/lib.sh"
port=$(free_port)
start_vm dst --memory 256M --workload ab --incoming "tcp:127.0.0.1:$port"
start_vm src --memory 256M --workload ab --dirty-rate 400
migrate_in_background src "tcp:127.0.0.1:$port"
kill -9 "$PID_dst"
wait $MIG && fail "ferry migrate exited 0 although the destination died"
[ "$(json_field "$T/m1.json" 'd["status"]')" = '"failed"' ] || fail "report: $(tail -n1 "$T/m1.json")"
source_intact src
port2=$(free_port)
start_vm dst2 --memory 256M --workload ab --incoming "tcp:127.0.0.1:$port2"
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port2" --json >"$T/m2.json" 2>"$T/m2.log" ||
	fail "migration to a new destination failed: $(tail -n1 "$T/m2.json")"
[ "$(json_field "$T/m2.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m2.json")"
pass "destination killed, source ran on, then migrated: $(tail -n1 "$T/m2.json")"
