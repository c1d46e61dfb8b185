#!/usr/bin/env bash
# A live update whose sockets go by fd (DEVICE_FDS) and fails before the
# new process runs the guest: the old one never stopped owning its
# sockets, so it resumes with them, and redis-benchmark running through it
# sees a stall only (no error, no reconnect, an exact counter):
# 1. the destination is killed at the switchover, before "ready" (it holds
#    duplicates of every socket; the kernel closes them, which sends
#    nothing while the source holds its own);
# 2. the destination refuses "released" (its acquire fails): the source
#    takes its sockets back without rebuilding anything;
# 3. then an update to a sound destination succeeds by fd, and the
#    counter is exact across all three.
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "SKIP: the kv guest's handoff tests need root (network namespaces, TCP_REPAIR)"; exit 77; }
for p in redis-cli redis-benchmark; do
	command -v "$p" >/dev/null || { echo "SKIP: $p is not installed (Debian: redis-tools)"; exit 77; }
done
net() { status_field "$1" "d[\"net\"]$2"; }
errors_in() { tr '\r' '\n' < "$1" | grep -ci error; }
port=$(free_port)
start_vm src --memory 64M --memory-backend memfd --workload kv --listen "tcp:127.0.0.1:$port"
redis-cli -p "$port" SET counter 0 >/dev/null
a0=$(net src '["accepted"]')
N=150000
redis-benchmark -p "$port" -n $N -c 50 INCR counter >"$T/b.out" 2>&1 &
B=$!
clients_open() { [ "$(net src '["connections"] >= 50')" = true ]; }
wait_until 20 clients_open || fail "redis-benchmark did not open its 50 clients: $(net src '["connections"]')"

# 1. Killed at the switchover, before "ready".
FERRY_VM_FAULT=at:before-ready:kill start_vm d1 --memory 64M --memory-backend memfd --local \
	--incoming "unix:$T/m1.sock" --listen "tcp:127.0.0.1:$port"
"$FERRY" migrate "$T/src.sock" "unix:$T/m1.sock" --local --json >"$T/m1.json" 2>"$T/m1.log" &&
	fail "a live update whose destination died before ready succeeded"
[ "$(json_field "$T/m1.json" 'd["device_fds"] >= 50')" = true ] || fail "the sockets did not go by fd before the failure: $(tail -n1 "$T/m1.json")"
[ "$(json_field "$T/m1.json" 'd["net"]["where"]')" = '"source"' ] || fail "after the destination died: $(json_field "$T/m1.json" 'd["net"]')"
[ "$(json_field "$T/m1.json" 'd["owner"]')" = '"source"' ] || fail "owner: $(json_field "$T/m1.json" 'd["owner"]')"
grep -q 'connections frozen' "$T/src.log" && fail "the source froze its connections on an fd handoff"
kill -0 "$B" 2>/dev/null || fail "redis-benchmark ended before the second failure: $(tr '\r' '\n' < "$T/b.out" | grep . | tail -n 2)"
pass "destination killed before ready: the source resumed with its $(json_field "$T/m1.json" 'd["device_fds"]') descriptors ($(json_field "$T/m1.json" 'd["error"]' | head -c 70)...)"

# 2. "released" refused.
FERRY_VM_FAULT=acquire-fail start_vm d2 --memory 64M --memory-backend memfd --local \
	--incoming "unix:$T/m2.sock" --listen "tcp:127.0.0.1:$port"
"$FERRY" migrate "$T/src.sock" "unix:$T/m2.sock" --local --json >"$T/m2.json" 2>"$T/m2.log" &&
	fail "a live update whose destination refused released succeeded"
grep -q 'acquire' "$T/m2.json" || fail "the failure does not say why: $(tail -n1 "$T/m2.json")"
[ "$(json_field "$T/m2.json" 'd["net"]["where"]')" = '"source"' ] || fail "after a refused release: $(json_field "$T/m2.json" 'd["net"]')"
[ "$(guest_state src)" = running ] || fail "the source guest: $(guest_state src)"
pass "released refused: the source took its sockets back as they were"
kill "$PID_d2" 2>/dev/null

# 3. A sound destination.
start_vm d3 --memory 64M --memory-backend memfd --local --incoming "unix:$T/m3.sock" \
	--listen "tcp:127.0.0.1:$port"
kill -0 "$B" 2>/dev/null || echo "note: redis-benchmark ended before the last update"
"$FERRY" migrate "$T/src.sock" "unix:$T/m3.sock" --local --json >"$T/m3.json" 2>"$T/m3.log" ||
	fail "the update after two failures: $(tail -n1 "$T/m3.json")"
[ "$(json_field "$T/m3.json" 'd["net"]["handoff"]')" = '"fds"' ] || fail "the last update: $(json_field "$T/m3.json" 'd["net"]')"
wait "$B" || fail "redis-benchmark exit $?: $(tr '\r' '\n' < "$T/b.out" | grep . | tail -n 3)"
[ "$(errors_in "$T/b.out")" = 0 ] || fail "redis-benchmark saw errors: $(tr '\r' '\n' < "$T/b.out" | grep -i error | head -n 3)"
[ "$(net d3 '["accepted"]')" = $((a0 + 51)) ] || fail "a reconnect: $(( $(net d3 '["accepted"]') - a0 )) connections for 50 clients and CONFIG GET"
[ "$(redis-cli -p "$port" GET counter)" = $N ] || fail "counter after $N INCRs: $(redis-cli -p "$port" GET counter)"
pass "two failed live updates and one that worked under redis-benchmark (50 clients): no error, no reconnect, counter $N exact; downtimes $(json_field "$T/m1.json" 'd["downtime_ms"]'), $(json_field "$T/m2.json" 'd["downtime_ms"]'), $(json_field "$T/m3.json" 'd["downtime_ms"]') ms"

# 4. Without CAP_NET_ADMIN there is no TCP_REPAIR: a migration to another
# host is refused before it starts, naming it, while a live update needs
# none (the sockets go by fd) and still works.
command -v setpriv >/dev/null || { echo "SKIP: setpriv is not installed (Debian: util-linux)"; exit 77; }
cat >"$T/noadmin" <<WRAP
#!/bin/sh
exec setpriv --bounding-set -net_admin "$FERRY_VM" "\$@"
WRAP
chmod +x "$T/noadmin"
port4=$(free_port)
FERRY_VM="$T/noadmin" start_vm s4 --memory 64M --memory-backend memfd --workload kv \
	--listen "tcp:127.0.0.1:$port4"
redis-benchmark -p "$port4" -n 100000 -c 10 INCR counter4 >"$T/b4.out" 2>&1 &
B4=$!
wait_until 20 eval '[ "$(net s4 "[\"connections\"] >= 10")" = true ]' ||
	fail "redis-benchmark did not open its 10 clients on s4"
"$FERRY" migrate "$T/s4.sock" "tcp:127.0.0.1:$(free_port)" --json >"$T/m4t.json" 2>"$T/m4t.log" &&
	fail "a tcp: migration with open connections and no TCP_REPAIR was accepted"
grep -q "CAP_NET_ADMIN" "$T/m4t.json" "$T/m4t.log" ||
	fail "the refusal does not name CAP_NET_ADMIN: $(cat "$T/m4t.log") $(tail -n1 "$T/m4t.json")"
FERRY_VM="$T/noadmin" start_vm d4 --memory 64M --memory-backend memfd --local \
	--incoming "unix:$T/m4.sock" --listen "tcp:127.0.0.1:$port4"
"$FERRY" migrate "$T/s4.sock" "unix:$T/m4.sock" --local --json >"$T/m4.json" 2>"$T/m4.log" ||
	fail "a live update without CAP_NET_ADMIN: $(tail -n1 "$T/m4.json") $(cat "$T/m4.log")"
[ "$(json_field "$T/m4.json" 'd["net"]["handoff"]')" = '"fds"' ] || fail "without CAP_NET_ADMIN: $(json_field "$T/m4.json" 'd["net"]')"
wait "$B4" || fail "redis-benchmark (s4) exit $?: $(tr '\r' '\n' < "$T/b4.out" | grep . | tail -n 3)"
[ "$(errors_in "$T/b4.out")" = 0 ] || fail "redis-benchmark (s4) saw errors"
[ "$(redis-cli -p "$port4" GET counter4)" = 100000 ] || fail "counter4: $(redis-cli -p "$port4" GET counter4)"
pass "without CAP_NET_ADMIN: tcp: refused ($(grep -ho 'TCP_REPAIR needs CAP_NET_ADMIN' "$T/m4t.json" "$T/m4t.log" | head -n1)); the live update went by fd, 0 errors, counter exact"
