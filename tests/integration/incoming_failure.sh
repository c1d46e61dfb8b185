#!/usr/bin/env bash
# A destination's failed incoming migration shows in its status (state,
# error, time, report) while it listens again; the next migration to it
# then completes and verifies.
. "$(dirname "$0")/lib.sh"
port=$(free_port)
start_vm dst --memory 64M --incoming "tcp:127.0.0.1:$port"
start_vm src --memory 64M --workload random --dirty-rate 400
[ "$(status_field dst 'd["migration"]["last_failure"]')" = null ] || fail "a failure before any attempt"
migrate_in_background src "tcp:127.0.0.1:$port"
kill -9 "$PID_src"
wait $MIG
has_failure() { [ "$(status_field dst 'd["migration"]["last_failure"] is not None')" = true ]; }
wait_until 20 has_failure || fail "the failure never showed in the destination's status: $(status_field dst 'd["migration"]')"
[ "$(status_field dst 'd["migration"]["last_failure"]["state"]')" = '"failed"' ] ||
	fail "last_failure: $(status_field dst 'd["migration"]["last_failure"]')"
err=$(status_field dst 'd["migration"]["last_failure"]["error"]')
[ "$err" != null ] && [ -n "$err" ] || fail "no error in last_failure"
[ "$(status_field dst 'd["migration"]["last_failure"]["at"].endswith("Z")')" = true ] || fail "no time in last_failure"
[ "$(status_field dst 'd["report"]["status"]')" = '"failed"' ] || fail "report: $(status_field dst 'd["report"]')"
[ "$(guest_state dst)" = incoming ] || fail "destination state after the failure: $(guest_state dst)"
start_vm src2 --memory 64M --workload random
"$FERRY" migrate "$T/src2.sock" "tcp:127.0.0.1:$port" --json >"$T/m2.json" 2>"$T/m2.log" ||
	fail "migration after the failure failed: $(tail -n1 "$T/m2.json")"
[ "$(json_field "$T/m2.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m2.json")"
[ "$(status_field dst 'd["migration"]["state"]')" = '"completed"' ] || fail "destination: $(status_field dst 'd["migration"]')"
pass "failure shown ($err), then migrated: $(tail -n1 "$T/m2.json")"
