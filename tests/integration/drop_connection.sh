#!/usr/bin/env bash
# A migration of a busy guest over 4 connections loses one of them in the
# middle: the kernel destroys the socket (ss -K, as a crashed middlebox or
# a reset would), so both ends see the connection die.
#   extra: an extra data connection dies. The migration goes on over the
#          three left, completes and verifies, and reports 3 connections.
#   main:  the main connection dies. The migration fails cleanly, the
#          source's guest runs on intact, and migrates again afterwards.
. "$(dirname "$0")/lib.sh"
WHICH=${1:?extra or main}
command -v ss >/dev/null || { echo "SKIP: ss (iproute2) is not installed"; exit 77; }
# The engine's messages go to the VMs' logs: they name each connection's
# local address, and the source warns when it gives one up.
export FERRY_VM_LOG=2

port=$(free_port)
start_vm dst --memory 512M --workload random --incoming "tcp:127.0.0.1:$port"
start_vm src --memory 512M --workload random --dirty-rate 200
# It never converges (1 ms): it makes passes for 10 s, then switches over.
# The connection dies once the second pass runs, seconds before that.
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --connections 4 \
	--downtime-ms 1 --max-passes 100000 --max-precopy-ms 10000 \
	--timeout-strategy switchover --json >"$T/m.json" 2>"$T/m.log" &
MIG=$!
wait_until 20 in_second_pass src || fail "migration never reached its second pass"

# The source's log names every connection's address: "connection N from
# 127.0.0.1:PORT: send buffer ...". Connection 0 is the main one.
if [ "$WHICH" = main ]; then idx=0; else idx=2; fi
addr=$(sed -n "s/.*engine: connection $idx from \([0-9.]*:[0-9]*\):.*/\1/p" "$T/src.log" | tail -n 1)
[ -n "$addr" ] || fail "the source's log does not name connection $idx"
lport=${addr##*:}
killed=$(ss -K -tn "( sport = :$lport or dport = :$lport )" 2>&1)
echo "$killed" >"$T/ss.log"
echo "killed at: $(status_field src 'd["migration"]')" >>"$T/ss.log"
n=$(grep -c ESTAB <<<"$killed")
[ "$n" -ge 1 ] || fail "ss -K destroyed no socket of connection $idx ($addr): $killed"

if [ "$WHICH" = main ]; then
	wait $MIG && fail "ferry migrate exited 0 although the main connection died"
	[ "$(json_field "$T/m.json" 'd["status"]')" = '"failed"' ] ||
		fail "report: $(tail -n1 "$T/m.json")"
	source_intact src
	port2=$(free_port)
	start_vm dst2 --memory 512M --workload random --incoming "tcp:127.0.0.1:$port2"
	"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port2" --connections 4 \
		--max-passes 12 --timeout-strategy switchover \
		--json >"$T/m2.json" 2>"$T/m2.log" ||
		fail "migration to a new destination failed: $(tail -n1 "$T/m2.json")"
	[ "$(json_field "$T/m2.json" 'd["verified"]')" = true ] ||
		fail "not verified: $(tail -n1 "$T/m2.json")"
	pass "main connection killed ($n sockets): failed cleanly, source ran on and migrated: $(tail -n1 "$T/m2.json")"
	exit 0
fi

wait $MIG || fail "migration failed after losing data connection $idx: $(tail -n1 "$T/m.json")"
[ "$(json_field "$T/m.json" 'd["status"]')" = '"completed"' ] || fail "status: $(tail -n1 "$T/m.json")"
[ "$(json_field "$T/m.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m.json")"
[ "$(json_field "$T/m.json" 'd["connections"]')" = 3 ] ||
	fail "connections after the drop: $(tail -n1 "$T/m.json")"
grep -q "data connection $idx broke" "$T/src.log" ||
	fail "the source did not warn that data connection $idx broke"
guest_runs dst || fail "destination guest does not run"
[ "$(status_field dst 'd["guest"]["check_errors"]')" = 0 ] || fail "destination guest found bad pages"
pass "data connection $idx killed ($n sockets), migration completed on 3: $(tail -n1 "$T/m.json")"
