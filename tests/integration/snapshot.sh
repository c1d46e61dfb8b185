#!/usr/bin/env bash
# A running guest is snapshotted to a file and restored by a new ferry-vm,
# which verifies it like a live migration. A damaged snapshot is refused.
. "$(dirname "$0")/lib.sh"
snap="$T/guest.snap"
start_vm src --memory 128M --workload random --dirty-rate 50
"$FERRY" migrate "$T/src.sock" "file:$snap" --json >"$T/m.json" 2>"$T/m.log" ||
	fail "snapshot failed: $(tail -n1 "$T/m.json")"
[ -s "$snap" ] || fail "no snapshot file"
[ ! -e "$snap.partial" ] || fail "partial file left behind"
start_vm dst --memory 128M --workload random --incoming "file:$snap"
wait_until 30 sh -c "[ \"\$($FERRY status $T/dst.sock --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"verified\"])')\" = True ]" ||
	fail "restored guest not verified: $("$FERRY" status "$T/dst.sock" --json)"
guest_runs dst || fail "restored guest does not run"
pass "snapshot of $(stat -c %s "$snap") bytes restored and verified"
# Flip one byte in the middle of the memory: the restore must refuse it.
bad="$T/bad.snap"
cp "$snap" "$bad"
size=$(stat -c %s "$bad")
printf '\xff' | dd of="$bad" bs=1 seek=$((size / 2)) conv=notrunc status=none
start_vm bad --memory 128M --workload random --incoming "file:$bad"
wait_until 30 sh -c "$FERRY status $T/bad.sock --json | grep -q '\"state\": *\"failed\"'" ||
	fail "damaged snapshot not refused: $("$FERRY" status "$T/bad.sock" --json)"
guest_runs bad && fail "a guest runs from a damaged snapshot"
pass "damaged snapshot refused: $("$FERRY" status "$T/bad.sock" --json | head -c 300)"
