#!/usr/bin/env bash
# A live update of the VMM (issue 21): a new ferry-vm process takes over a
# running kv guest with its connections, its memory by fd (`ferry migrate
# --local`, memfd backing) and its TCP connections by TCP_REPAIR in the
# same network namespace. redis-benchmark running through it sees no
# error and no reconnect, its counter is exact, a redis-cli connection
# opened before goes on answering on the new process, and no page of
# memory crossed the socket.
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "SKIP: TCP_REPAIR needs root (CAP_NET_ADMIN)"; exit 77; }
for p in redis-cli redis-benchmark python3; do
	command -v "$p" >/dev/null || { echo "SKIP: $p is not installed (Debian: redis-tools)"; exit 77; }
done

net() { status_field "$1" "d[\"net\"]$2"; }
port=$(free_port)
start_vm src --memory 64M --memory-backend memfd --workload kv --listen "tcp:127.0.0.1:$port"
start_vm dst --memory 64M --memory-backend memfd --local --incoming "unix:$T/mig.sock" \
	--listen "tcp:127.0.0.1:$port"
redis-cli -p "$port" SET counter 0 >/dev/null
redis-cli -p "$port" SET kept before >/dev/null
# One connection that lives through the update: a request before, one
# after, on the same socket.
python3 - "$port" "$T/held" >"$T/held.out" 2>&1 <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(10)
s.sendall(b"GET kept\r\n")
assert s.recv(100) == b"$6\r\nbefore\r\n"
open(sys.argv[2], "w").write("1")
end = time.time() + 30
while open(sys.argv[2]).read().strip() != "go" and time.time() < end:
    time.sleep(0.05)
s.sendall(b"INCR held\r\n")
print("held:", s.recv(100))
PY
H=$!
wait_until 10 test -s "$T/held" || fail "the held connection did not start: $(cat "$T/held.out")"
a0=$(net src '["accepted"]')
# Enough requests that the benchmark still runs when the update comes, on
# an idle host as under load; the update waits for its 20 clients (and
# the held connection) to be open.
N=200000
redis-benchmark -p "$port" -n $N -c 20 INCR counter >"$T/b.out" 2>&1 &
B=$!
clients_open() { [ "$(net src '["connections"] >= 21')" = true ]; }
wait_until 20 clients_open ||
	fail "redis-benchmark did not open its 20 clients: $(net src '["connections"]') connections; $(tr '\r' '\n' < "$T/b.out" | grep . | tail -n 2)"
kill -0 "$B" 2>/dev/null || fail "redis-benchmark ended before the update: $(tr '\r' '\n' < "$T/b.out" | grep . | tail -n 2)"
"$FERRY" migrate "$T/src.sock" "unix:$T/mig.sock" --local --json >"$T/m.json" 2>"$T/m.log" ||
	fail "local migration: $(tail -n1 "$T/m.json")"
r=$T/m.json
[ "$(json_field "$r" 'd["local_fds"]')" = true ] || fail "not a local migration: $(tail -n1 "$r")"
[ "$(json_field "$r" 'd["bytes"] < 65536')" = true ] || fail "memory went over the wire: $(json_field "$r" 'd["bytes"]')"
[ "$(json_field "$r" 'd["net"]["where"]')" = '"destination"' ] || fail "source report: $(json_field "$r" 'd["net"]')"
handed=$(json_field "$r" 'd["net"]["handed"]')
[ "$handed" -ge 21 ] || fail "connections handed over: $handed (20 clients and the held one)"
printf go >"$T/held"
wait "$H" || fail "the held connection: $(cat "$T/held.out")"
grep -q "held: b':1" "$T/held.out" || fail "the held connection after the update: $(cat "$T/held.out")"
wait "$B"; rc=$?
[ "$rc" = 0 ] || fail "redis-benchmark exit $rc: $(tr '\r' '\n' < "$T/b.out" | grep . | tail -n 3)"
[ "$(tr '\r' '\n' < "$T/b.out" | grep -ci error)" = 0 ] || fail "redis-benchmark saw errors: $(tr '\r' '\n' < "$T/b.out" | grep -i error | head -n 3)"
# 20 clients and the connection redis-benchmark asks CONFIG GET on.
[ "$(net dst '["accepted"]')" = $((a0 + 21)) ] || fail "the guest accepted $(( $(net dst '["accepted"]') - a0 )) connections for 20 clients and CONFIG GET: a reconnect"
[ "$(redis-cli -p "$port" GET counter)" = $N ] || fail "counter after $N INCRs: $(redis-cli -p "$port" GET counter)"
[ "$(redis-cli -p "$port" GET kept)" = before ] || fail "a key set before the update: $(redis-cli -p "$port" GET kept)"
grep -q 'guest RAM unmapped' "$T/src.log" || fail "the source did not give its RAM up"
pass "live update (--local, memfd) with $handed connections: redis-benchmark ($(tr '\r' '\n' < "$T/b.out" | grep -m1 'requests per second' | tr -s ' ')) no error, no reconnect, counter $N exact, a held connection answers; downtime $(json_field "$r" 'd["downtime_ms"]') ms, $(json_field "$r" 'd["bytes"]') bytes"
