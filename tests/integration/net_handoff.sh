#!/usr/bin/env bash
# The kv guest's TCP connections move with it (TCP_REPAIR), both ferry-vm
# processes in one network namespace (passt's local case: the destination
# binds the guest's address only after the source let go):
# - redis-benchmark running through a migration sees no error and no
#   reconnect, and the counter it incremented is exact;
# - the guest as a client of redis-server keeps its connection (the same
#   CLIENT LIST id) and the server's counter equals the guest's count;
# - a destination that refuses the state (after the source froze its
#   sockets) or is killed leaves the connections working on the source;
# - a snapshot does not carry connections: both reports count them reset;
# - megabytes queued in a connection (requests unread, replies unsent or
#   unacknowledged) arrive byte for byte after the migration;
# - idle connections are dumped from TCP_INFO and what was read ahead
#   (the quick dump), a busy one beside them takes the full
#   way, and the quick dumps equal the full ones (FERRY_VM_NET_VERIFY=1
#   dumps every connection both ways): all answer after two migrations.
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "SKIP: TCP_REPAIR needs root (CAP_NET_ADMIN)"; exit 77; }
for p in redis-cli redis-benchmark redis-server; do
	command -v "$p" >/dev/null || { echo "SKIP: $p is not installed (Debian: redis-tools, redis-server)"; exit 77; }
done

net() { status_field "$1" "d[\"net\"]$2"; }
has_client() { [ -n "$(client_id)" ]; }
is_running() { [ "$(guest_state "$1")" = running ]; }
bench_ok() {
	wait "$1"; local rc=$?
	[ "$rc" = 0 ] || fail "redis-benchmark exit $rc: $(tr '\r' '\n' < "$2" | grep . | tail -n 3)"
	[ "$(tr '\r' '\n' < "$2" | grep -ci error)" = 0 ] || fail "redis-benchmark saw errors: $(tr '\r' '\n' < "$2" | grep -i error | head -n 3)"
}

# 1. redis-benchmark through a migration.
port=$(free_port) mport=$(free_port)
start_vm src --memory 64M --workload kv --listen "tcp:127.0.0.1:$port"
start_vm dst --memory 64M --incoming "tcp:127.0.0.1:$mport" --listen "tcp:127.0.0.1:$port"
redis-cli -p "$port" SET counter 0 >/dev/null
a0=$(net src '["accepted"]')
redis-benchmark -p "$port" -n 100000 -c 50 INCR counter >"$T/b1.out" 2>&1 &
B=$!
sleep 0.5
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$mport" --json >"$T/m.json" 2>"$T/m.log" ||
	fail "migration: $(tail -n1 "$T/m.json")"
[ "$(json_field "$T/m.json" 'd["net"]["where"]')" = '"destination"' ] || fail "source report: $(json_field "$T/m.json" 'd["net"]')"
handed=$(json_field "$T/m.json" 'd["net"]["handed"]')
[ "$handed" -ge 50 ] || fail "connections handed over: $handed"
[ "$(json_field "$T/m.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m.json")"
bench_ok "$B" "$T/b1.out"
# 50 clients and the connection redis-benchmark asks CONFIG GET on.
[ "$(net dst '["accepted"]')" = $((a0 + 51)) ] || fail "the guest accepted $(( $(net dst '["accepted"]') - a0 )) connections for 50 clients and CONFIG GET: a reconnect"
[ "$(redis-cli -p "$port" GET counter)" = 100000 ] || fail "counter after 100000 INCRs: $(redis-cli -p "$port" GET counter)"
pass "redis-benchmark -c 50 through a migration: no error, no reconnect, counter 100000 exact; $handed connections handed over, downtime $(json_field "$T/m.json" 'd["downtime_ms"]') ms"
kill "$PID_src" "$PID_dst"

# 2. The guest as a client of redis-server.
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$T/redis.log" 2>&1 &
PIDS+=($!)
wait_until 10 redis-cli -p "$rport" PING >/dev/null 2>&1 || fail "redis-server did not start"
mport=$(free_port)
start_vm csrc --memory 64M --workload kv --connect "tcp:127.0.0.1:$rport" --connect-rate 1000 --connect-count 1500
start_vm cdst --memory 64M --incoming "tcp:127.0.0.1:$mport"
client_id() { redis-cli -p "$rport" CLIENT LIST | grep 'cmd=incr' | sed 's/^id=\([0-9]*\) .*/\1/'; }
wait_until 10 has_client || fail "the guest's client is not on the server"
id0=$(client_id)
"$FERRY" migrate "$T/csrc.sock" "tcp:127.0.0.1:$mport" --json >"$T/c.json" 2>"$T/c.log" ||
	fail "migration of the client: $(tail -n1 "$T/c.json")"
done_1500() { [ "$(net cdst '["client"]["answered"]')" = 1500 ]; }
wait_until 20 done_1500 || fail "the migrated client: $(net cdst '')"
[ "$(net cdst '["client"]["errors"]')" = 0 ] || fail "client errors: $(net cdst '')"
[ "$(redis-cli -p "$rport" GET ferry:counter)" = 1500 ] || fail "server counter $(redis-cli -p "$rport" GET ferry:counter), guest 1500"
[ "$(client_id)" = "$id0" ] || fail "CLIENT LIST id $id0 before, $(client_id) after"
pass "guest as client: the same connection (CLIENT LIST id $id0) across the migration, server counter 1500 = the guest's"
kill "$PID_csrc" "$PID_cdst"

# 3. Failures before "ready": the connections stay on the source.
port=$(free_port) mport=$(free_port)
start_vm src --memory 64M --workload kv --listen "tcp:127.0.0.1:$port"
# A destination with another vCPU count refuses the state after the
# source paused and froze its sockets.
start_vm bad --memory 64M --vcpus 1 --incoming "tcp:127.0.0.1:$mport" --listen "tcp:127.0.0.1:$port"
redis-cli -p "$port" SET counter 0 >/dev/null
a0=$(net src '["accepted"]')
# Long enough to outlast the half second before the migration on a quiet
# machine (50,000 took 0.4 s at 130,000 requests/s: the clients were gone
# before the refused state, and the check below found no connection).
redis-benchmark -p "$port" -n 300000 -c 50 INCR counter >"$T/b3.out" 2>&1 &
B=$!
sleep 0.5
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$mport" --json >"$T/f.json" 2>"$T/f.log" &&
	fail "a migration to a 1-vCPU destination succeeded"
grep -q 'vcpus' "$T/f.json" || fail "the failure does not say why: $(tail -n1 "$T/f.json")"
[ "$(json_field "$T/f.json" 'd["net"]["where"]')" = '"source"' ] || fail "after a refused state: $(json_field "$T/f.json" 'd["net"]')"
[ "$(json_field "$T/f.json" 'd["net"]["connections"]')" -ge 50 ] || fail "the source's connections after a refused state: $(json_field "$T/f.json" 'd["net"]')"
bench_ok "$B" "$T/b3.out"
[ "$(net src '["accepted"]')" = $((a0 + 51)) ] || fail "a reconnect on the source: $(( $(net src '["accepted"]') - a0 )) connections"
[ "$(redis-cli -p "$port" GET counter)" = 300000 ] || fail "counter after 300000 INCRs: $(redis-cli -p "$port" GET counter)"
# Killed during precopy.
kill "$PID_bad"
start_vm dead --memory 64M --incoming "tcp:127.0.0.1:$mport" --listen "tcp:127.0.0.1:$port"
redis-benchmark -p "$port" -n 100000 -c 50 INCR counter >"$T/b4.out" 2>&1 &
B=$!
sleep 0.5
migrate_in_background src "tcp:127.0.0.1:$mport" --max-bandwidth 200000000
kill -9 "$PID_dead"
wait "$MIG"
mig_over() { [ "$(status_field src 'd["migration"]["state"]')" = '"failed"' ]; }
wait_until 5 mig_over || fail "the migration to a killed destination: $(status_field src 'd["migration"]')"
a1=$(net src '["accepted"]')
# The connections stayed on the source: "source" while any is open,
# "none" (never "destination" or "lost") if the benchmark has ended on a
# quick machine.
st=$(net src '')
where=$(echo "$st" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("source" if d["connections"] else "none", d["where"], d["connections"])')
read -r want got conns <<<"$where"
[ "$want" = "$got" ] || fail "after a killed destination: $st"
# redis-benchmark closes its clients only once it has sent its last
# requests: a counter read after the status that is 100 short of the end
# means all 50 clients were open when the status was read.
c=$(redis-cli -p "$port" GET counter)
a1=$((a1 + 1)) # that GET's connection
if kill -0 "$B" 2>/dev/null && [ "$c" -le 149900 ]; then
	[ "$conns" -ge 50 ] || fail "the source kept $conns of the 50 connections after a killed destination: $st"
fi
bench_ok "$B" "$T/b4.out"
[ "$(net src '["accepted"]')" = "$a1" ] || fail "a reconnect on the source after a killed destination"
[ "$(redis-cli -p "$port" GET counter)" = 400000 ] || fail "counter after 400000 INCRs: $(redis-cli -p "$port" GET counter)"
pass "a refused state (sockets frozen, then thawed) and a killed destination: the benchmarks never saw an error, counter 400000 exact on the source"

# 4. A snapshot does not carry connections.
python3 -c '
import socket, sys, time
ss = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(3)]
for s in ss:
    s.sendall(b"PING\r\n"); s.recv(100)
print("open", flush=True)
for s in ss:
    s.settimeout(20)
    try:
        print("eof" if s.recv(100) == b"" else "data", flush=True)
    except OSError as e:
        print("reset" if isinstance(e, ConnectionResetError) else "error %s" % e, flush=True)
' "$port" >"$T/idle.out" 2>&1 &
IDLE=$!
wait_until 10 grep -q open "$T/idle.out" || fail "idle clients: $(cat "$T/idle.out")"
redis-cli -p "$port" SET kept yes >/dev/null
"$FERRY" migrate "$T/src.sock" "file:$T/snap" --json >"$T/s.json" 2>"$T/s.log" || fail "snapshot: $(tail -n1 "$T/s.json")"
[ "$(json_field "$T/s.json" 'd["net"]["reset"]')" = 3 ] || fail "snapshot report: $(json_field "$T/s.json" 'd["net"]')"
wait "$IDLE"
[ "$(grep -c reset "$T/idle.out")" = 3 ] || fail "the idle clients saw: $(cat "$T/idle.out")"
kill "$PID_src"
wait "$PID_src" 2>/dev/null
start_vm restored --incoming "file:$T/snap" --listen "tcp:127.0.0.1:$port"
wait_until 10 is_running restored || fail "the snapshot did not restore"
[ "$(net restored '["reset"]')" = 3 ] || fail "the restored guest: $(net restored '')"
[ "$(redis-cli -p "$port" GET kept)" = yes ] || fail "the restored guest's data: $(redis-cli -p "$port" GET kept)"
pass "a snapshot: 3 connections reset (the clients saw it), reported by both sides; the restored guest serves its data"

# 5. Queued bytes move with the connection: a client sends 20000 GETs of
# a 1000-byte value and reads nothing, so megabytes of replies wait in
# the guest's send queue and requests in its receive queue; after the
# migration it reads every reply, byte for byte.
port=$(free_port) mport=$(free_port)
start_vm qsrc --memory 64M --workload kv --listen "tcp:127.0.0.1:$port"
start_vm qdst --memory 64M --incoming "tcp:127.0.0.1:$mport" --listen "tcp:127.0.0.1:$port"
mkfifo "$T/qgo"
exec 9<>"$T/qgo"
cat >"$T/q.py" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: no autotuning
s.connect(("127.0.0.1", int(sys.argv[1])))
val, n = (b"0123456789abcdef" * 64)[:1000], 20000
s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\n" + val + b"\r\n" + b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" * n)
print("sent", flush=True)
sys.stdin.readline()
want = b"+OK\r\n" + (b"$1000\r\n" + val + b"\r\n") * n
got = bytearray()
s.settimeout(30)
while len(got) < len(want):
    b = s.recv(1 << 20)
    if not b:
        break
    got += b
print("replies ok" if bytes(got) == want else "replies WRONG: %d of %d bytes" % (len(got), len(want)), flush=True)
PY
python3 "$T/q.py" "$port" <&9 >"$T/q.out" 2>&1 &
wait_until 20 grep -q sent "$T/q.out" || fail "the queueing client: $(cat "$T/q.out")"
sleep 0.5
"$FERRY" migrate "$T/qsrc.sock" "tcp:127.0.0.1:$mport" --json >"$T/q.json" 2>"$T/q.log" ||
	fail "migration with queued bytes: $(tail -n1 "$T/q.json")"
[ "$(json_field "$T/q.json" 'd["net"]["handed"]')" = 1 ] || fail "handed: $(json_field "$T/q.json" 'd["net"]')"
echo go >&9
replied() { grep -q replies "$T/q.out"; }
wait_until 40 replied || fail "the client's replies: $(cat "$T/q.out")"
grep -q "replies ok" "$T/q.out" || fail "after the migration: $(cat "$T/q.out")"
pass "queued requests and replies (megabytes) moved with the connection: 20000 replies byte for byte; downtime $(json_field "$T/q.json" 'd["downtime_ms"]') ms"
kill "$PID_qsrc" "$PID_qdst"

# 6. The quick dump. 40 idle connections (each answered a PING) and one
# with megabytes queued; both ferry-vm check each quick dump against the
# full one of the same socket. Then the destination hands them on to a
# third process: restored sockets know their read-ahead without reading
# (the second destination stages their restores: 32 connections or more).
export FERRY_VM_NET_VERIFY=1
port=$(free_port) mport=$(free_port) mport2=$(free_port)
start_vm isrc --memory 64M --workload kv --listen "tcp:127.0.0.1:$port"
start_vm idst --memory 64M --incoming "tcp:127.0.0.1:$mport" --listen "tcp:127.0.0.1:$port"
start_vm idst2 --memory 64M --incoming "tcp:127.0.0.1:$mport2" --listen "tcp:127.0.0.1:$port"
unset FERRY_VM_NET_VERIFY
mkfifo "$T/igo"
exec 8<>"$T/igo"
cat >"$T/idle.py" <<'PY'
import socket, sys
port = int(sys.argv[1])
idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
def ping_all(tag):
    for s in idle:
        s.sendall(b"PING\r\n")
        if s.recv(100) != b"+PONG\r\n":
            print("idle WRONG", tag, flush=True)
            sys.exit(1)
ping_all("before")
busy = socket.socket()
busy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
busy.connect(("127.0.0.1", port))
val, n = (b"fedcba9876543210" * 64)[:1000], 20000
busy.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\n" + val + b"\r\n" + b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" * n)
print("ready", flush=True)
sys.stdin.readline()
ping_all("after one")
want = b"+OK\r\n" + (b"$1000\r\n" + val + b"\r\n") * n
got = bytearray()
busy.settimeout(30)
while len(got) < len(want):
    b = busy.recv(1 << 20)
    if not b:
        break
    got += b
print("busy ok" if bytes(got) == want else "busy WRONG: %d of %d bytes" % (len(got), len(want)), flush=True)
sys.stdin.readline()
ping_all("after two")
busy.sendall(b"PING\r\n")
print("all ok" if busy.recv(100) == b"+PONG\r\n" else "busy WRONG after two", flush=True)
PY
python3 "$T/idle.py" "$port" <&8 >"$T/idle6.out" 2>&1 &
wait_until 20 grep -q ready "$T/idle6.out" || fail "the clients: $(cat "$T/idle6.out")"
sleep 0.5
"$FERRY" migrate "$T/isrc.sock" "tcp:127.0.0.1:$mport" --json >"$T/i.json" 2>"$T/i.log" ||
	fail "migration with idle and busy connections: $(tail -n1 "$T/i.json")"
[ "$(json_field "$T/i.json" 'd["net"]["handed"]')" = 41 ] || fail "handed: $(json_field "$T/i.json" 'd["net"]')"
v1=$(grep 'verify:' "$T/isrc.log")
# The 40 idle ones, read ahead; the busy one had bytes queued.
[[ $v1 == *": 40 quick dumps, 0 differ"* ]] || fail "the source's quick dumps: ${v1:-none} ($(grep 'net:' "$T/isrc.log"))"
# The destination staged restores before the takeover (all of them, or
# as many as it reached before acquire).
staged=$(sed -n 's/.* \([0-9]*\) staged before.*/\1/p' "$T/idst.log")
[ "${staged:-0}" -gt 0 ] || fail "no restore staged: $(grep 'net:' "$T/idst.log")"
echo go >&8
busy_done() { grep -q "busy" "$T/idle6.out"; }
wait_until 40 busy_done || fail "after the migration: $(cat "$T/idle6.out")"
grep -q "busy ok" "$T/idle6.out" || fail "after the migration: $(cat "$T/idle6.out")"
"$FERRY" migrate "$T/idst.sock" "tcp:127.0.0.1:$mport2" --json >"$T/i2.json" 2>"$T/i2.log" ||
	fail "the second migration: $(tail -n1 "$T/i2.json")"
v2=$(grep 'verify:' "$T/idst.log")
# Every one of them quick now: the busy one's queues are gone, and the
# read-ahead of restored sockets comes with the restore.
[[ $v2 == *": 41 quick dumps, 0 differ"* ]] || fail "the second source's quick dumps: ${v2:-none} ($(grep 'net:' "$T/idst.log"))"
echo go >&8
all_done() { grep -q "all ok\|WRONG" "$T/idle6.out"; }
wait_until 20 all_done || fail "after the second migration: $(cat "$T/idle6.out")"
grep -q "all ok" "$T/idle6.out" || fail "after the second migration: $(cat "$T/idle6.out")"
pass "quick dumps: 40 idle connections from TCP_INFO and the read-ahead (equal to the full dumps), the busy one the full way, 20000 replies byte for byte; all 41 quick the second time (restores staged), and all answer"
