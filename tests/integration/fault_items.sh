#!/usr/bin/env bash
# FERRY_VM_FAULT (the test hooks, vm/fault.c) has one parser: every item
# is checked at start-up, and a bad one (an unknown name, a bad or
# missing MS, a value on a hook that takes none, an empty item, a hook
# or moment given twice) makes ferry-vm exit with status 2 and a message
# naming the item, before it listens. Items combine: a destination with
# stall-load:400,corrupt-page stalls its state load and damages a page.
. "$(dirname "$0")/lib.sh"

# refused VALUE TEXT: ferry-vm refuses VALUE at start, saying TEXT.
refused() {
	local rc=0
	FERRY_VM_FAULT=$1 timeout 10 "$FERRY_VM" --api-socket "$T/bad.sock" \
		--memory 16M >"$T/bad.out" 2>&1 <&- || rc=$?
	[ "$rc" = 2 ] || fail "FERRY_VM_FAULT='$1': exit status $rc, not 2: $(cat "$T/bad.out")"
	grep -qF -- "$2" "$T/bad.out" || fail "FERRY_VM_FAULT='$1': unclear message: $(cat "$T/bad.out")"
	[ -e "$T/bad.sock" ] && fail "FERRY_VM_FAULT='$1': the API socket exists"
	pass "'$1' refused: $(head -n1 "$T/bad.out")"
}
refused stall-load:abc "item 'stall-load:abc': stall-load needs :MS, a whole number of milliseconds from 1 to 600000"
refused stall-pause: "item 'stall-pause:': stall-pause needs :MS"
refused stall-load:99999999999 "item 'stall-load:99999999999': stall-load needs :MS"
refused stall-pause:0 "item 'stall-pause:0': stall-pause needs :MS"
refused lose-writes:1 "item 'lose-writes:1': lose-writes takes no value"
refused acquire-dies "item 'acquire-dies' is unknown"
refused at:pass1:kil "item 'at:pass1:kil' is unknown"
refused corrupt-page,stall-load:5x "item 'stall-load:5x'"
refused at:state:kill,at:state:stop "item 'at:state:stop': the moment 'state' is given twice"
# postcopy's moments under way (known names: the second item is the one
# refused, for being given twice, not the first for being unknown)
refused at:pushing:stop,at:pushing:kill "item 'at:pushing:kill': the moment 'pushing' is given twice"
refused at:repushing:stop,at:repushing:cut "item 'at:repushing:cut': the moment 'repushing' is given twice"
refused stall-load:10,stall-load:20 "item 'stall-load:20': the hook 'stall-load' is given twice"
refused corrupt-page, "has an empty item"

# Two hooks at once both take effect.
port=$(free_port)
FERRY_VM_FAULT=stall-load:400,corrupt-page start_vm dst --memory 16M --workload idle \
	--incoming "tcp:127.0.0.1:$port"
start_vm src --memory 16M --workload idle
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --json >"$T/m.json" 2>"$T/m.log"
got=$(json_field "$T/m.json" '[d["status"], d["verified"], d["downtime_ms"] >= 400]')
[ "$got" = '["completed", false, true]' ] ||
	fail "stall-load:400,corrupt-page: expected a pause of 400 ms or more and a failed verification: $(tail -n1 "$T/m.json")"
pass "stall-load:400,corrupt-page: both hooks fired: $(json_field "$T/m.json" '[d["downtime_ms"], d["verified"]]')"
