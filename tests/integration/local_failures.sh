#!/usr/bin/env bash
# Local migration by fds, what is refused and what fails: anonymous RAM
# is refused with a message naming --memory-backend memfd or hugetlb; a
# tcp: URI is refused; a destination that does not offer local-fds is
# named; and a destination killed (kill -9) after it mapped the source's
# memory but before "ready" leaves the source running with its memory
# intact (still mapped, the guest's invariant holds on every page it
# checks), after which a local migration to a new destination verifies.
. "$(dirname "$0")/lib.sh"
start_vm anon --memory 64M --workload random
"$FERRY" migrate "$T/anon.sock" "unix:$T/nobody.sock" --local --json >"$T/a.json" 2>"$T/a.log" &&
	fail "a local migration of anonymous RAM completed"
grep -q -- '--memory-backend memfd or hugetlb' "$T/a.json" ||
	fail "refusal does not name the backing: $(tail -n1 "$T/a.json")"
source_intact anon
pass "anonymous RAM refused: $(json_field "$T/a.json" 'd["error"]')"

start_vm src --memory 64M --memory-backend memfd --workload random --dirty-rate 50
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$(free_port)" --local >"$T/t.out" 2>"$T/t.log" &&
	fail "a local migration to a tcp: URI was accepted"
grep -q 'unix:PATH' "$T/t.log" || fail "tcp refusal does not say unix:PATH: $(cat "$T/t.log")"
pass "tcp: refused: $(tail -n1 "$T/t.log")"

start_vm nocap --memory 64M --memory-backend memfd --disable-cap local-fds \
	--incoming "unix:$T/nocap-mig.sock"
"$FERRY" migrate "$T/src.sock" "unix:$T/nocap-mig.sock" --local --json >"$T/n.json" 2>"$T/n.log" &&
	fail "migrated to a destination without local-fds"
grep -q 'does not offer local migration' "$T/n.json" || fail "no reason: $(tail -n1 "$T/n.json")"
source_intact src
pass "destination without the capability: $(json_field "$T/n.json" 'd["error"]')"

# The source stays paused 3 s before its state: the destination has
# mapped its memory (MEMORY_FDS goes before the pause) and dies there.
kill -9 "$PID_src"
FERRY_VM_FAULT=stall-pause:3000 start_vm src2 --memory 64M --memory-backend memfd \
	--workload random --dirty-rate 50
start_vm dst --memory 64M --memory-backend memfd --local --incoming "unix:$T/mig.sock"
"$FERRY" migrate "$T/src2.sock" "unix:$T/mig.sock" --local --json >"$T/k.json" 2>"$T/k.log" &
mig=$!
wait_until 10 grep -q 'fault: paused, stalling' "$T/src2.log" || fail "the source never paused"
grep -q 'memfd:ferry-guest' "/proc/$PID_dst/maps" || fail "the destination had not mapped the memory"
kill -9 "$PID_dst"
wait $mig && fail "ferry migrate exited 0 although the destination died"
[ "$(json_field "$T/k.json" 'd["status"]')" = '"failed"' ] || fail "report: $(tail -n1 "$T/k.json")"
[ "$(json_field "$T/k.json" 'd["owner"]')" = '"source"' ] || fail "owner: $(tail -n1 "$T/k.json")"
source_intact src2
grep -q 'memfd:ferry-guest' "/proc/$PID_src2/maps" || fail "the source lost its memory mapping"
pass "destination killed before ready: source runs, $(status_field src2 'd["guest"]["check_errors"]') bad pages"
# Its memory is whole: a new destination maps it and checks every page.
start_vm dst2 --memory 64M --memory-backend memfd --local --incoming "unix:$T/mig2.sock"
"$FERRY" migrate "$T/src2.sock" "unix:$T/mig2.sock" --local --json >"$T/k2.json" 2>"$T/k2.log" ||
	fail "local migration after the failure failed: $(tail -n1 "$T/k2.json")"
[ "$(json_field "$T/k2.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/k2.json")"
pass "then migrated locally and verified: $(tail -n1 "$T/k2.json" | head -c 160)"
