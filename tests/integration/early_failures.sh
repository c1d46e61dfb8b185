#!/usr/bin/env bash
# Migrations that fail before they connect (a bad URI, a refused port, a
# missing directory) each report their own reason, and leave the VM's
# descriptors alone: ferry-vm runs with standard input closed (lib.sh), so
# descriptor 0 is one of its own, and the API client that asks for the next
# migration is not cut off. A real migration then completes, verified.
. "$(dirname "$0")/lib.sh"
start_vm src --memory 64M --workload ab
refused=$(free_port)
for uri in "bogus:nowhere" "file:$T/no-such-dir/snap" "tcp:127.0.0.1:$refused" \
	"bogus:again"; do
	"$FERRY" migrate "$T/src.sock" "$uri" >"$T/f.out" 2>&1 &&
		fail "migration to $uri succeeded"
	grep -qi "closed the API connection\|lost track" "$T/f.out" &&
		fail "migration to $uri: the API connection was cut: $(cat "$T/f.out")"
	"$FERRY" status "$T/src.sock" --json >/dev/null || fail "status after $uri"
done
guest_runs src || fail "guest stopped after the failed migrations"
port=$(free_port)
start_vm dst --memory 64M --workload ab --incoming "tcp:127.0.0.1:$port"
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --json >"$T/m.json" 2>"$T/m.log" ||
	fail "real migration after failures: $(tail -n1 "$T/m.json") $(cat "$T/m.log")"
[ "$(json_field "$T/m.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m.json")"
pass "four early failures, each with its reason; then migrated and verified"
