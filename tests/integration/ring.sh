#!/usr/bin/env bash
# A guest that arrived by migration migrates on: A -> B -> C -> D -> E -> F,
# each hop to a fresh destination started with --incoming (default
# workload: it takes the guest's from the stream), each hop verified; the
# guest runs at the end without a bad page.
. "$(dirname "$0")/lib.sh"
start_vm v0 --memory 64M --workload random
for i in 1 2 3 4 5; do
	prev=v$((i - 1)) cur=v$i
	port=$(free_port)
	start_vm "$cur" --memory 64M --incoming "tcp:127.0.0.1:$port"
	[ "$(status_field "$prev" 'd["role"]')" = '"source"' ] ||
		fail "hop $i: $prev says it is a $(status_field "$prev" 'd["role"]')"
	"$FERRY" migrate "$T/$prev.sock" "tcp:127.0.0.1:$port" --json >"$T/hop$i.json" 2>"$T/hop$i.log" ||
		fail "hop $i ($prev -> $cur) failed: $(tail -n1 "$T/hop$i.json")"
	[ "$(json_field "$T/hop$i.json" 'd["status"]')" = '"completed"' ] || fail "hop $i: $(tail -n1 "$T/hop$i.json")"
	[ "$(json_field "$T/hop$i.json" 'd["verified"]')" = true ] || fail "hop $i not verified: $(tail -n1 "$T/hop$i.json")"
	[ "$(guest_state "$prev")" = migrated ] || fail "hop $i: $prev is $(guest_state "$prev")"
	kill "$(eval echo "\$PID_$prev")"
done
[ "$(status_field v5 'd["guest"]["workload"]')" = '"random"' ] || fail "v5 runs $(status_field v5 'd["guest"]["workload"]')"
source_intact v5
pass "five hops, each verified; the guest runs on v5"
