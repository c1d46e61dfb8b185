#!/usr/bin/env bash
# The failure points after "ready" for the kv guest's connections, and a
# source without CAP_NET_ADMIN:
# - the destination refuses "released" (its acquire fails): the source
#   rebuilds the connections from its dumps (reacquire) and resumes;
#   redis-benchmark sees no error, no reconnect, and the counter is exact;
# - the destination dies after "released": the connections are lost with
#   it, the source's report says "lost", a client's next request is reset;
# - without CAP_NET_ADMIN a migration with open connections is refused
#   before the pause, naming TCP_REPAIR, and the connections go on;
# - a half-closed connection is left behind, the live one moves;
# - a connection still in the listener's queue at the pause is accepted
#   there and moves too (its client sees no reset).
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "SKIP: TCP_REPAIR needs root (CAP_NET_ADMIN)"; exit 77; }
for p in redis-cli redis-benchmark setpriv; do
	command -v "$p" >/dev/null || { echo "SKIP: $p is not installed (Debian: redis-tools, util-linux)"; exit 77; }
done
net() { status_field "$1" "d[\"net\"]$2"; }
errors_in() { tr '\r' '\n' < "$1" | grep -ci error; }

# 1. Refused after "released": reacquire.
port=$(free_port) mport=$(free_port)
start_vm src --memory 64M --workload kv --listen "tcp:127.0.0.1:$port"
FERRY_VM_FAULT=acquire-fail start_vm dst --memory 64M --incoming "tcp:127.0.0.1:$mport" --listen "tcp:127.0.0.1:$port"
redis-cli -p "$port" SET counter 0 >/dev/null
a0=$(net src '["accepted"]')
redis-benchmark -p "$port" -n 100000 -c 50 INCR counter >"$T/b1.out" 2>&1 &
B=$!
sleep 0.5
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$mport" --json >"$T/m.json" 2>"$T/m.log" &&
	fail "a migration to a destination whose acquire fails succeeded"
grep -q 'acquire' "$T/m.json" || fail "the failure does not say why: $(tail -n1 "$T/m.json")"
[ "$(json_field "$T/m.json" 'd["net"]["where"]')" = '"source"' ] || fail "after a refused release: $(json_field "$T/m.json" 'd["net"]')"
[ "$(json_field "$T/m.json" 'd["net"]["handed"]')" -ge 50 ] || fail "connections rebuilt: $(json_field "$T/m.json" 'd["net"]')"
wait "$B" || fail "redis-benchmark exit $?: $(tr '\r' '\n' < "$T/b1.out" | grep . | tail -n 3)"
[ "$(errors_in "$T/b1.out")" = 0 ] || fail "redis-benchmark saw errors: $(tr '\r' '\n' < "$T/b1.out" | grep -i error | head -n 3)"
[ "$(net src '["accepted"]')" = $((a0 + 51)) ] || fail "a reconnect: $(( $(net src '["accepted"]') - a0 )) connections for 50 clients and CONFIG GET"
[ "$(redis-cli -p "$port" GET counter)" = 100000 ] || fail "counter after 100000 INCRs: $(redis-cli -p "$port" GET counter)"
pass "acquire refused after released: the source rebuilt $(json_field "$T/m.json" 'd["net"]["handed"]') connections from its dumps; no error, no reconnect, counter exact"
kill "$PID_dst"

# 2. The destination dies after "released": the connections are lost.
mkfifo "$T/go"
exec 7<>"$T/go"
python3 -c '
import socket, sys, time
ss = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(3)]
for s in ss:
    s.sendall(b"PING\r\n"); s.recv(100)
print("open", flush=True)
sys.stdin.readline()
for s in ss:
    s.settimeout(10)
    try:
        s.sendall(b"PING\r\n")
        print("answered" if s.recv(100) else "eof", flush=True)
    except OSError as e:
        print("reset" if isinstance(e, ConnectionResetError) else "error %s" % e, flush=True)
' "$port" <"$T/go" >"$T/idle.out" 2>&1 &
wait_until 10 grep -q open "$T/idle.out" || fail "idle clients: $(cat "$T/idle.out")"
mport=$(free_port)
FERRY_VM_FAULT=acquire-die start_vm dying --memory 64M --incoming "tcp:127.0.0.1:$mport" --listen "tcp:127.0.0.1:$port"
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$mport" --json >"$T/d.json" 2>"$T/d.log" &&
	fail "a migration whose destination died after released succeeded"
[ "$(json_field "$T/d.json" 'd["net"]["where"]')" = '"lost"' ] || fail "after the destination died: $(json_field "$T/d.json" 'd["net"]')"
echo go >&7
lost() { [ "$(grep -c reset "$T/idle.out")" = 3 ]; }
wait_until 15 lost || fail "the clients of lost connections saw: $(cat "$T/idle.out")"
pass "destination died after released: the source reports the connections lost ($(json_field "$T/d.json" 'd["error"]' | head -c 80)...), their clients see a reset"
kill "$PID_src"

# 3. Without CAP_NET_ADMIN: refused before the pause.
printf '#!/bin/sh\nexec setpriv --inh-caps=-net_admin --bounding-set=-net_admin "%s" "$@"\n' "$FERRY_VM" >"$T/nocap"
chmod +x "$T/nocap"
port=$(free_port) mport=$(free_port)
FERRY_VM="$T/nocap" start_vm nocap --memory 64M --workload kv --listen "tcp:127.0.0.1:$port"
start_vm dst2 --memory 64M --incoming "tcp:127.0.0.1:$mport" --listen "tcp:127.0.0.1:$port"
exec 8<>/dev/tcp/127.0.0.1/"$port"
printf 'PING\r\n' >&8
read -r -t 5 reply <&8
[ "${reply%$'\r'}" = +PONG ] || fail "a connection to the unprivileged guest: '$reply'"
"$FERRY" migrate "$T/nocap.sock" "tcp:127.0.0.1:$mport" --json >"$T/n.json" 2>"$T/n.log" &&
	fail "a migration with an open connection and no CAP_NET_ADMIN succeeded"
grep -q 'TCP_REPAIR' "$T/n.log" "$T/n.json" || fail "the refusal does not name TCP_REPAIR: $(cat "$T/n.log") $(tail -n1 "$T/n.json")"
printf 'INCR x\r\n' >&8
read -r -t 5 reply <&8
[ "${reply%$'\r'}" = :1 ] || fail "the connection after the refusal: '$reply'"
[ "$(guest_state nocap)" = running ] || fail "the unprivileged guest: $(guest_state nocap)"
pass "no CAP_NET_ADMIN: the migration is refused ($(grep -h -o 'TCP_REPAIR[^"]*' "$T/n.log" "$T/n.json" | head -n1)); the connection goes on"

# 4. A connection its client is closing (CLOSE_WAIT, replies unread) is
# not handed over; the migration completes with the others.
port=$(free_port) mport=$(free_port)
start_vm hsrc --memory 64M --workload kv --listen "tcp:127.0.0.1:$port"
start_vm hdst --memory 64M --incoming "tcp:127.0.0.1:$mport" --listen "tcp:127.0.0.1:$port"
python3 -c '
import socket, sys, time
port = int(sys.argv[1])
live = socket.create_connection(("127.0.0.1", port))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: no autotuning
s.connect(("127.0.0.1", port))
s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nv\r\n$1000\r\n" + b"x" * 1000 + b"\r\n")
s.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\nv\r\n" * 3000)   # 3 MB of replies it never reads
s.shutdown(socket.SHUT_WR)
print("ready", flush=True)
sys.stdin.readline()
live.sendall(b"PING\r\n")
print(live.recv(100).decode().strip(), flush=True)
' "$port" <"$T/go" >"$T/half.out" 2>&1 &
wait_until 10 grep -q ready "$T/half.out" || fail "half-closed client: $(cat "$T/half.out")"
sleep 0.5
"$FERRY" migrate "$T/hsrc.sock" "tcp:127.0.0.1:$mport" --json >"$T/h.json" 2>"$T/h.log" ||
	fail "migration with a half-closed connection: $(tail -n1 "$T/h.json")"
[ "$(json_field "$T/h.json" 'd["net"]["handed"]')" = 1 ] && [ "$(json_field "$T/h.json" 'd["net"]["reset"]')" = 1 ] ||
	fail "handed/reset: $(json_field "$T/h.json" 'd["net"]')"
echo go >&7
ponged() { grep -q PONG "$T/half.out"; }
wait_until 10 ponged || fail "the live connection after the migration: $(cat "$T/half.out")"
pass "a half-closed connection at the pause is left behind (reset), the live one moves and answers"

# 5. A connection whose handshake completed just before the pause, still
# in the listener's queue (FERRY_VM_FAULT=hold-accept: the source's
# device accepts nothing, so the queue is deterministic): the pause
# accepts it and it moves with the others. Its request, sent before the
# migration, is answered by the destination, and nothing is reset (the
# kernel resets whatever is still queued when the listener closes).
port=$(free_port) mport=$(free_port)
FERRY_VM_FAULT=hold-accept start_vm qsrc --memory 64M --workload kv --listen "tcp:127.0.0.1:$port"
start_vm qdst --memory 64M --incoming "tcp:127.0.0.1:$mport" --listen "tcp:127.0.0.1:$port"
python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"INCR q\r\n")
print("queued", flush=True)
sys.stdin.readline()
s.settimeout(10)
try:
    print("reply1 " + s.recv(100).decode().strip(), flush=True)
    s.sendall(b"INCR q\r\n")
    print("reply2 " + s.recv(100).decode().strip(), flush=True)
except OSError as e:
    print("reset" if isinstance(e, ConnectionResetError) else "error %s" % e, flush=True)
' "$port" <"$T/go" >"$T/queued.out" 2>&1 &
wait_until 10 grep -q queued "$T/queued.out" || fail "queued client: $(cat "$T/queued.out")"
[ "$(status_field qsrc 'd["net"]["accepted"]')" = 0 ] || fail "the held source accepted: $(status_field qsrc 'd["net"]')"
"$FERRY" migrate "$T/qsrc.sock" "tcp:127.0.0.1:$mport" --json >"$T/q.json" 2>"$T/q.log" ||
	fail "migration with a queued connection: $(tail -n1 "$T/q.json")"
echo go >&7
[ "$(json_field "$T/q.json" 'd["net"]["handed"]')" = 1 ] || fail "handed: $(json_field "$T/q.json" 'd["net"]')"
answered() { grep -q reply2 "$T/queued.out" || grep -q -e reset -e error "$T/queued.out"; }
wait_until 15 answered || fail "the queued client after the migration: $(cat "$T/queued.out")"
grep -q '^reply1 :1' "$T/queued.out" && grep -q '^reply2 :2' "$T/queued.out" ||
	fail "the queued client saw: $(cat "$T/queued.out")"
grep -q "accepted from the listener's queue" "$T/qsrc.log" || fail "the source's log does not say it accepted in the pause: $(tail -n 5 "$T/qsrc.log")"
pass "a connection waiting in the listener's queue at the pause is accepted there and handed over: its request answered by the destination (:1, then :2), no reset"
