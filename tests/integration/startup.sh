#!/usr/bin/env bash
# ferry-vm answers on its API socket before guest RAM is populated: the
# first status of a large guest says "initializing", a later one
# "running" (bench/b7-startup.sh measures how soon it answers). A migrate sent while the source initializes waits for it and
# then completes, verified.
. "$(dirname "$0")/lib.sh"
avail=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
[ "$avail" -ge 3072 ] || { echo "SKIP: needs 3 GiB of available memory, the host has ${avail} MiB"; exit 77; }
first_state() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["guest"]["state"])' "$T/$1.first.json"; }

# A random guest writes all of its RAM before it runs: that takes far
# longer than the first answer.
start_vm_nowait big --memory 1G --workload random
[ "$(first_state big)" = initializing ] || fail "first status of a 1 GiB guest: $(cat "$T/big.first.json")"
is_state() { [ "$(guest_state "$1")" = "$2" ]; }
wait_until 120 is_state big running || fail "the 1 GiB guest never ran: $(status_field big 'd["guest"]')"
guest_runs big || fail "the 1 GiB guest does not run"
kill "$PID_big"
wait "$PID_big" 2>/dev/null

# Migrate such a guest at once.
port=$(free_port)
start_vm dst --memory 1G --incoming "tcp:127.0.0.1:$port"
start_vm_nowait src --memory 1G --workload random
[ "$(first_state src)" = initializing ] || fail "first status of the source: $(cat "$T/src.first.json")"
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --json >"$T/m.json" 2>"$T/m.log" ||
	fail "migrate during initialization failed: $(tail -n1 "$T/m.json")"
[ "$(json_field "$T/m.json" 'd["status"]')" = '"completed"' ] || fail "report: $(tail -n1 "$T/m.json")"
[ "$(json_field "$T/m.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m.json")"
[ "$(guest_state src)" = migrated ] || fail "source state after migrating: $(guest_state src)"
[ "$(guest_state dst)" = running ] || fail "destination state: $(guest_state dst)"
pass "initializing, then running; migrate during init: $(tail -n1 "$T/m.json")"
