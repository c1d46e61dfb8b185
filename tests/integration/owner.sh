#!/usr/bin/env bash
# Who owns the guest, as both ferry-vm processes say in `ferry status
# --json` and the reports: before anything, after a migration the
# destination refused (its memory is twice the source's), and after one
# that completed; then a checkpoint and a handover to a file.
. "$(dirname "$0")/lib.sh"

# owner NAME [MEMBER]: migration.owner (or another member's owner) of NAME
owner() { status_field "$1" "d${2:-[\"migration\"]}[\"owner\"]" | tr -d '"'; }
owner_none() { [ "$(owner "$1")" = none ]; }

port=$(free_port)
start_vm dst --memory 128M --incoming "tcp:127.0.0.1:$port"
start_vm src --memory 64M --workload random
[ "$(owner src)" = source ] || fail "source before any migration: $(owner src)"
[ "$(owner dst)" = none ] || fail "destination before any migration: $(owner dst)"

# Refused: both sides say the source still owns the guest, which runs.
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --json >"$T/m1.json" 2>"$T/m1.log" &&
	fail "a migration to a destination of another size completed"
[ "$(json_field "$T/m1.json" 'd["owner"]')" = '"source"' ] ||
	fail "refused: the report's owner: $(tail -n1 "$T/m1.json")"
[ "$(owner src)" = source ] || fail "refused: the source's status says $(owner src)"
source_intact src
has_failure() { [ "$(status_field dst 'd["migration"]["last_failure"] is not None')" = true ]; }
wait_until 20 has_failure || fail "the refusal never showed in the destination's status"
[ "$(owner dst '["migration"]["last_failure"]["report"]')" = source ] ||
	fail "refused: the destination's report: $(status_field dst 'd["migration"]["last_failure"]')"
# Listening again (at once: the refusal is no listening error), it knows
# of no guest.
wait_until 10 owner_none dst || fail "refused: the destination listening again says $(owner dst)"
pass "refused: source says source, destination's report says source, listening again none"

# Completed: both say destination, and the human report says it in a line.
start_vm src2 --memory 128M --workload random
"$FERRY" migrate "$T/src2.sock" "tcp:127.0.0.1:$port" >"$T/m2.txt" 2>"$T/m2.log" ||
	fail "migration failed: $(cat "$T/m2.txt")"
grep -q "^owner         destination: only the destination may run the guest$" "$T/m2.txt" ||
	fail "no owner line in the report: $(cat "$T/m2.txt")"
grep -q "owner destination$" "$T/m2.log" || fail "no owner change in the progress: $(cat "$T/m2.log")"
[ "$(owner src2)" = destination ] || fail "completed: the source's status says $(owner src2)"
[ "$(owner src2 '["report"]')" = destination ] || fail "completed: the source's report says $(owner src2 '["report"]')"
[ "$(guest_state src2)" = migrated ] || fail "source guest: $(guest_state src2)"
[ "$(owner dst)" = destination ] || fail "completed: the destination's status says $(owner dst)"
[ "$(owner dst '["report"]')" = destination ] || fail "completed: the destination's report says $(owner dst '["report"]')"
guest_runs dst || fail "the destination's guest does not run"
pass "completed: both statuses and reports say destination"

# The arrived guest migrates on into files: a checkpoint leaves it the
# source's, a handover gives it to the file.
"$FERRY" snapshot "$T/dst.sock" "$T/ck.snap" --json >"$T/s1.json" 2>"$T/s1.log" ||
	fail "checkpoint failed: $(tail -n1 "$T/s1.json")"
[ "$(json_field "$T/s1.json" 'd["owner"]')" = '"source"' ] || fail "checkpoint: $(tail -n1 "$T/s1.json")"
"$FERRY" migrate "$T/dst.sock" "file:$T/ho.snap" --json >"$T/s2.json" 2>"$T/s2.log" ||
	fail "handover failed: $(tail -n1 "$T/s2.json")"
[ "$(json_field "$T/s2.json" 'd["owner"]')" = '"destination"' ] || fail "handover: $(tail -n1 "$T/s2.json")"
[ "$(owner dst)" = destination ] || fail "handover: the status says $(owner dst)"
pass "checkpoint: source; handover to a file: destination"
