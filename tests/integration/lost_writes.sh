#!/usr/bin/env bash
# Verification must be able to fail: with a VMM dirty log that loses every
# write (a test hook), the destination's digest and invariant checks catch
# it and the report says verified=false. The same guest verifies with the
# honest dirty log, so the check is not failing for another reason.
. "$(dirname "$0")/lib.sh"
port=$(free_port)
start_vm dst --memory 64M --workload ab --incoming "tcp:127.0.0.1:$port"
FERRY_VM_FAULT=lose-writes start_vm src --memory 64M --workload ab --dirty-rate 200
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --dirty-mode bitmap --json \
	>"$T/m.json" 2>"$T/m.log"
[ "$(json_field "$T/m.json" 'd["verified"]')" = false ] ||
	fail "lost writes were not detected: $(tail -n1 "$T/m.json")"
pass "lost writes detected: $(tail -n1 "$T/m.json")"
port=$(free_port)
start_vm dst2 --memory 64M --workload ab --incoming "tcp:127.0.0.1:$port"
start_vm src2 --memory 64M --workload ab --dirty-rate 200
"$FERRY" migrate "$T/src2.sock" "tcp:127.0.0.1:$port" --dirty-mode bitmap --json \
	>"$T/m2.json" 2>"$T/m2.log" || fail "honest bitmap migration failed: $(tail -n1 "$T/m2.json")"
[ "$(json_field "$T/m2.json" 'd["verified"]')" = true ] ||
	fail "honest bitmap migration not verified: $(tail -n1 "$T/m2.json")"
pass "honest bitmap log verifies: $(tail -n1 "$T/m2.json")"
