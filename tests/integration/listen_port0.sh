#!/usr/bin/env bash
# A destination started on "tcp:127.0.0.1:0" listens on a port the kernel
# picks and says which in `ferry status` ("listening"); a source migrates
# to that address, over two connections, and the guest arrives verified.
. "$(dirname "$0")/lib.sh"
start_vm dst --memory 64M --workload ab --incoming "tcp:127.0.0.1:0"
start_vm src --memory 64M --workload ab
listening() { status_field dst 'd.get("listening")'; }
wait_until 10 bash -c "[[ \$(\"$FERRY\" status '$T/dst.sock' --json) == *'\"listening\":\"tcp:127.0.0.1:'[1-9]* ]]" ||
	fail "the destination does not say where it listens: $(listening)"
uri=$(listening | tr -d '"')
[[ $uri =~ ^tcp:127\.0\.0\.1:[0-9]+$ ]] || fail "listening is '$uri'"
"$FERRY" migrate "$T/src.sock" "$uri" --connections 2 --json >"$T/m.json" 2>"$T/m.log" ||
	fail "migration to $uri: $(tail -n1 "$T/m.json") $(cat "$T/m.log")"
[ "$(json_field "$T/m.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m.json")"
[ "$(json_field "$T/m.json" 'd["connections"]')" = 2 ] || fail "not two connections: $(tail -n1 "$T/m.json")"
[ "$(listening)" = null ] || fail "still listening after the migration: $(listening)"
pass "destination listened on $uri; migrated there, verified"
