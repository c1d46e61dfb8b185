#!/usr/bin/env bash
# A live update of the VMM (issue 21): a new ferry-vm process takes over a
# running kv guest with its connections, its memory by fd (`ferry migrate
# --local`, memfd backing) and its sockets by fd too (DEVICE_FDS: the very
# sockets, listener included, no TCP_REPAIR), in the same network
# namespace. redis-benchmark running through it sees no error and no
# reconnect, its counter is exact, a redis-cli connection opened before
# goes on answering on the new process, and no page of memory crossed the
# socket. Then the old process exits: no connection notices, and the
# adopted listener takes new ones. Then the new process hands the guest on
# by TCP_REPAIR (a copying migration): its sockets' filters are the first
# process's gate, which it adopted, and the held connection still answers.
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
# One connection that lives through both updates: a request before, one
# after each, on the same socket.
python3 - "$port" "$T/held" >"$T/held.out" 2>&1 <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(10)
s.sendall(b"GET kept\r\n")
assert s.recv(100) == b"$6\r\nbefore\r\n"
open(sys.argv[2], "w").write("1")
for step in ("go1", "go2"):
    end = time.time() + 60
    while open(sys.argv[2]).read().strip() != step and time.time() < end:
        time.sleep(0.05)
    s.sendall(b"INCR held\r\n")
    print(step, s.recv(100), flush=True)
PY
H=$!
wait_until 10 test -s "$T/held" || fail "the held connection did not start: $(cat "$T/held.out")"
a0=$(net src '["accepted"]')
# Enough requests that the benchmark still runs when the update comes and
# when the old process exits; the update waits for its 20 clients (and
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
[ "$(json_field "$r" 'd["net"]["handoff"]')" = '"fds"' ] || fail "the sockets did not go by fd: $(json_field "$r" 'd["net"]')"
handed=$(json_field "$r" 'd["net"]["handed"]')
[ "$handed" -ge 21 ] || fail "connections handed over: $handed (20 clients and the held one)"
# Every connection, the listener, and the gate's two descriptors if any.
[ "$(json_field "$r" "d[\"device_fds\"] >= $handed + 1")" = true ] ||
	fail "descriptors passed: $(json_field "$r" 'd["device_fds"]') for $handed connections and the listener"
[ "$(net dst '["handoff"]')" = '"fds"' ] || fail "destination: $(net dst '')"
grep -q 'taken over by fd' "$T/dst.log" || fail "the destination does not say it took the sockets over by fd"
grep -q 'connections frozen' "$T/src.log" && fail "the source froze its connections (TCP_REPAIR) on an fd handoff"
# The old process goes while the benchmark runs: closing its copies of
# the sockets, and exiting, resets nothing (the new process holds them).
kill -0 "$B" 2>/dev/null || echo "note: redis-benchmark ended before the old process exited"
kill -TERM "$PID_src"
wait_until 10 bash -c "! kill -0 $PID_src 2>/dev/null" || kill -9 "$PID_src"
printf go1 >"$T/held"
wait_until 10 grep -q go1 "$T/held.out" || fail "the held connection after the update: $(cat "$T/held.out")"
grep -q "go1 b':1" "$T/held.out" || fail "the held connection after the update: $(cat "$T/held.out")"
[ "$(redis-cli -p "$port" PING)" = PONG ] || fail "a new connection after the old process exited (the adopted listener)"
wait "$B"; rc=$?
[ "$rc" = 0 ] || fail "redis-benchmark exit $rc: $(tr '\r' '\n' < "$T/b.out" | grep . | tail -n 3)"
[ "$(tr '\r' '\n' < "$T/b.out" | grep -ci error)" = 0 ] || fail "redis-benchmark saw errors: $(tr '\r' '\n' < "$T/b.out" | grep -i error | head -n 3)"
# 20 clients and the connection redis-benchmark asks CONFIG GET on, and
# the PING above.
[ "$(net dst '["accepted"]')" = $((a0 + 22)) ] || fail "the guest accepted $(( $(net dst '["accepted"]') - a0 )) connections for 20 clients, CONFIG GET and a PING: a reconnect"
[ "$(redis-cli -p "$port" GET counter)" = $N ] || fail "counter after $N INCRs: $(redis-cli -p "$port" GET counter)"
[ "$(redis-cli -p "$port" GET kept)" = before ] || fail "a key set before the update: $(redis-cli -p "$port" GET kept)"
grep -q 'guest RAM unmapped' "$T/src.log" || fail "the source did not give its RAM up"
pass "live update (--local, memfd, sockets by fd) with $handed connections: redis-benchmark ($(tr '\r' '\n' < "$T/b.out" | grep -m1 'requests per second' | tr -s ' ')) no error, no reconnect, counter $N exact, a held connection answers after the old process exited; downtime $(json_field "$r" 'd["downtime_ms"]') ms, $(json_field "$r" 'd["device_fds"]') descriptors, $(json_field "$r" 'd["bytes"]') bytes"

# The new process hands the guest on by TCP_REPAIR (memory copied): the
# gate it adopted shuts the sockets for the freeze.
start_vm dst2 --memory 64M --incoming "unix:$T/mig2.sock" --listen "tcp:127.0.0.1:$port"
"$FERRY" migrate "$T/dst.sock" "unix:$T/mig2.sock" --json >"$T/m2.json" 2>"$T/m2.log" ||
	fail "the second migration: $(tail -n1 "$T/m2.json")"
[ "$(json_field "$T/m2.json" 'd["net"]["handoff"]')" = '"repair"' ] || fail "second hop: $(json_field "$T/m2.json" 'd["net"]')"
[ "$(json_field "$T/m2.json" 'd["net"]["handed"]')" -ge 1 ] || fail "second hop handed: $(json_field "$T/m2.json" 'd["net"]')"
if grep -q 'gate adopted' "$T/dst.log"; then gate=adopted; else gate="none (no eBPF)"; fi
printf go2 >"$T/held"
wait "$H" || fail "the held connection: $(cat "$T/held.out")"
grep -q "go2 b':2" "$T/held.out" || fail "the held connection after the second hop: $(cat "$T/held.out")"
[ "$(redis-cli -p "$port" GET counter)" = $N ] || fail "counter after the second hop: $(redis-cli -p "$port" GET counter)"
pass "then by TCP_REPAIR from the new process (gate $gate): the held connection answers on the third process, counter $N"
