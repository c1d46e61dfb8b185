#!/usr/bin/env bash
# The kv workload serves Debian's redis-cli and redis-benchmark through
# ferry-vm's network device (pipelined, and 1,000 connections at once),
# and as a client keeps one connection to a real redis-server whose
# counter ends equal to the guest's count.
. "$(dirname "$0")/lib.sh"
for p in redis-cli redis-benchmark redis-server; do
	command -v "$p" >/dev/null || { echo "SKIP: $p is not installed (Debian: redis-tools, redis-server)"; exit 77; }
done

port=$(free_port)
start_vm kv --memory 64M --workload kv --listen "tcp:127.0.0.1:$port"
cli() { redis-cli -p "$port" "$@" 2>&1; }
[ "$(cli PING)" = PONG ] || fail "PING: $(cli PING)"
[ "$(cli SET greeting hello)" = OK ] || fail "SET"
[ "$(cli GET greeting)" = hello ] || fail "GET: $(cli GET greeting)"
[ "$(cli GET missing)" = "" ] || fail "GET of a missing key: $(cli GET missing)"
[ "$(cli INCR n)" = 1 ] && [ "$(cli INCR n)" = 2 ] || fail "INCR"
[ "$(cli INCR greeting)" = "ERR value is not an integer or out of range" ] || fail "INCR of text: $(cli INCR greeting)"
[ "$(cli EXISTS greeting n missing)" = 2 ] || fail "EXISTS: $(cli EXISTS greeting n missing)"
[ "$(cli DEL greeting missing)" = 1 ] || fail "DEL: $(cli DEL greeting missing)"
[ "$(cli EXISTS greeting)" = 0 ] || fail "EXISTS after DEL"
[ "$(cli ECHO hi)" = hi ] || fail "ECHO"
out=$(cli FLUSHALL)
[[ $out == "ERR unknown command"* ]] || fail "an unknown command: $out"
big=$(head -c 2000 /dev/zero | tr '\0' x)
out=$(cli SET big "$big")
[[ $out == *"value too large"* ]] || fail "a value over the limit: ${out:0:100}"
pass "redis-cli: PING SET GET INCR EXISTS DEL ECHO, errors for an unknown command and a large value"

bench() {
	redis-benchmark -p "$port" -t ping,set,get,incr "$@" -q >"$T/bench.out" 2>&1 ||
		fail "redis-benchmark $*: exit $?: $(tr '\r' '\n' < "$T/bench.out" | tail -n 5)"
	[ "$(tr '\r' '\n' < "$T/bench.out" | grep -ci error)" = 0 ] || fail "redis-benchmark $* saw errors: $(tr '\r' '\n' < "$T/bench.out" | grep -i error | head -n 3)"
	[ "$(tr '\r' '\n' < "$T/bench.out" | grep -c 'requests per second, p50')" -ge 4 ] ||
		fail "redis-benchmark $*: not every test finished: $(tr '\r' '\n' < "$T/bench.out" | tail -n 3)"
}
bench -n 20000 -c 50
bench -n 20000 -c 50 -P 16
pass "redis-benchmark -n 20000 -c 50, plain and -P 16: no error"
redis-cli -p "$port" DEL counter >/dev/null
redis-benchmark -p "$port" -n 20000 -c 1000 -q INCR counter >"$T/bench.out" 2>&1 || fail "redis-benchmark -c 1000: $(tail -c 300 "$T/bench.out")"
[ "$(cli GET counter)" = 20000 ] || fail "after 20000 INCRs from 1,000 connections the counter is $(cli GET counter)"
pass "1,000 connections: 20000 INCRs counted exactly"

# The guest as a client of a real redis-server.
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$T/redis.log" 2>&1 &
PIDS+=($!)
wait_until 10 redis-cli -p "$rport" PING >/dev/null 2>&1 || fail "redis-server did not start"
start_vm client --memory 64M --workload kv --connect "tcp:127.0.0.1:$rport" --connect-rate 500 --connect-count 600
answered() { [ "$(status_field client 'd["net"]["client"]["answered"]')" = 600 ]; }
wait_until 20 answered || fail "the guest's INCRs: $(status_field client 'd["net"]')"
[ "$(status_field client 'd["net"]["client"]["errors"]')" = 0 ] || fail "client errors: $(status_field client 'd["net"]')"
[ "$(redis-cli -p "$rport" GET ferry:counter)" = 600 ] || fail "the server's counter is $(redis-cli -p "$rport" GET ferry:counter), the guest sent 600"
pass "--connect: the server's counter equals the guest's 600 INCRs"
