#!/usr/bin/env bash
# A destination that stalls while the source's guest is paused (its state
# load takes 4 s: FERRY_VM_FAULT=stall-load) does not hold that guest
# paused: past --max-pause-ms the source gives up, resumes its guest, says
# why and reports how long the guest was paused; the destination never
# runs it. The source then migrates to a good destination and verifies.
. "$(dirname "$0")/lib.sh"
port=$(free_port)
FERRY_VM_FAULT=stall-load:4000 start_vm dst --memory 64M --workload ab \
	--incoming "tcp:127.0.0.1:$port"
start_vm src --memory 64M --workload ab
t0=$(date +%s%N)
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --max-pause-ms 600 --json \
	>"$T/m1.json" 2>"$T/m1.log" && fail "migration completed although the destination stalled"
took=$((($(date +%s%N) - t0) / 1000000))
[ "$(json_field "$T/m1.json" 'd["status"]')" = '"failed"' ] || fail "report: $(tail -n1 "$T/m1.json")"
json_field "$T/m1.json" 'd["error"]' | grep -q "max_pause_ms" ||
	fail "the error does not say why: $(tail -n1 "$T/m1.json")"
[ "$(json_field "$T/m1.json" 'd["owner"]')" = '"source"' ] || fail "owner: $(tail -n1 "$T/m1.json")"
down=$(json_field "$T/m1.json" 'int(d["downtime_ms"])')
[ "$down" -ge 600 ] && [ "$down" -lt 3000 ] ||
	fail "the report says the guest was paused $down ms (max 600)"
[ "$took" -lt 3800 ] || fail "the source waited $took ms for a stalled destination"
source_intact src
sleep 4
[ "$(status_field dst 'd["guest"]["state"]')" != '"running"' ] ||
	fail "the stalled destination runs the guest too"
port2=$(free_port)
start_vm dst2 --memory 64M --workload ab --incoming "tcp:127.0.0.1:$port2"
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port2" --json >"$T/m2.json" 2>"$T/m2.log" ||
	fail "migration to a good destination failed: $(tail -n1 "$T/m2.json")"
[ "$(json_field "$T/m2.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m2.json")"
pass "stalled destination: the source resumed after ${down} ms of pause (limit 600), then migrated and verified"
