#!/usr/bin/env bash
# A peer that stops answering is noticed within the stall limit
# (--stall-timeout-ms 2000 here) and the migration fails like any other
# failure, on both sides:
#   a) the destination is frozen (SIGSTOP) during precopy: the source fails
#      with a message naming the destination's silence and the option, its
#      guest runs on, and its status says failed;
#   b) a proxy between them stops forwarding (a black hole): the same; the
#      source then migrates to a good destination and verifies;
#   c) the source is frozen: the destination gives the attempt up within the
#      limit, says so in its status, and listens again; the thawed source
#      runs on;
#   d) with a long limit (60 s), 'ferry cancel' ends a migration stalled on a
#      frozen destination at once;
#   e) a destination that is busy, not stalled (its state load takes 2.5 s,
#      FERRY_VM_FAULT=stall-load), sends keep-alives: a source with a 1 s
#      limit waits for it, and the guest that survived a-d arrives verified.
. "$(dirname "$0")/lib.sh"
LIMIT=2000

# A TCP proxy that forwards until the file $T/blackhole exists, then
# forwards nothing more, in either direction, and keeps the connections
# open: what a silent partition looks like to both ends.
PROXY=$(dirname "$0")/../lib/tcpproxy.py

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# migrate_capped SRC PORT [OPTIONS...]: a migration that stays in precopy
# for seconds (its link capped at 20 MB/s, under the guest's 40 MB/s of
# writes, never throttled, a 1 ms downtime limit). Returns once memory
# moves; $MIG is the ferry pid.
migrate_capped() {
	local src=$1 port=$2
	shift 2
	"$FERRY" migrate "$T/$src.sock" "tcp:127.0.0.1:$port" --downtime-ms 1 \
		--max-passes 100000 --max-bandwidth 20 --no-auto-converge \
		--json "$@" >"$T/m1.json" 2>"$T/m1.log" &
	MIG=$!
	wait_until 10 grep -q "state precopy" "$T/m1.log" ||
		fail "migration to $port never started its passes"
	sleep 0.3
}

# check_report CASE PYTHON-CONDITION: the last report (d) satisfies it.
check_report() {
	python3 - "$T/m1.json" "$2" <<'PY' || fail "$1: report: $(tail -n1 "$T/m1.json")"
import json, sys
d = json.loads(open(sys.argv[1]).read().splitlines()[-1])
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)
PY
}
STALL_RE='the destination [a-z ]* nothing for [0-9.]* s (.*the stall limit, --stall-timeout-ms '"$LIMIT"')'

pa=$(free_port); pb=$(free_port); pbd=$(free_port); pc=$(free_port); pd=$(free_port)
start_vm src --memory 64M --workload random --dirty-rate 40
start_vm dsta --memory 64M --incoming "tcp:127.0.0.1:$pa"
start_vm dstb --memory 64M --incoming "tcp:127.0.0.1:$pbd"
start_vm dstc --memory 64M --incoming "tcp:127.0.0.1:$pc" --stall-timeout-ms $LIMIT
start_vm dstd --memory 64M --incoming "tcp:127.0.0.1:$pd"
pe=$(free_port)
FERRY_VM_FAULT=stall-load:2500 start_vm dste --memory 64M --incoming "tcp:127.0.0.1:$pe"

# a) SIGSTOP of the destination.
migrate_capped src "$pa" --stall-timeout-ms $LIMIT
t0=$(date +%s%N)
kill -STOP "$PID_dsta"
wait $MIG && fail "a: the migration completed with a frozen destination"
took=$(ms_since "$t0")
# The status says so as soon as ferry migrate has its report.
st=$(status_field src 'd["migration"]["state"]')
kill -CONT "$PID_dsta"
[ "$took" -lt 5000 ] || fail "a: the source took $took ms to notice (limit $LIMIT)"
[ "$st" = '"failed"' ] || fail "a: the status says $st"
check_report a "d['status'] == 'failed' and d['owner'] == 'source' and
  d['stall_timeout_ms'] == $LIMIT and 0.9 * $LIMIT <= d['stall_detect_ms'] < 4000"
err=$(json_field "$T/m1.json" 'd["error"]')
grep -q "$STALL_RE" <<<"$err" || fail "a: the error does not say why: $err"
guest_runs src || fail "a: the source's guest does not run"
pass "a: frozen destination noticed after $took ms: $err"

# b) A proxy that stops forwarding.
python3 "$PROXY" "$pb" "$pbd" "$T/blackhole" >"$T/proxy.log" 2>&1 &
PIDS+=($!)
wait_until 15 test -e "$T/blackhole.ready" || fail "b: the proxy does not listen"
migrate_capped src "$pb" --stall-timeout-ms $LIMIT
t0=$(date +%s%N)
touch "$T/blackhole"
wait $MIG && fail "b: the migration completed through a black hole"
took=$(ms_since "$t0")
[ "$took" -lt 5000 ] || fail "b: the source took $took ms to notice (limit $LIMIT)"
err=$(json_field "$T/m1.json" 'd["error"]')
grep -q "$STALL_RE" <<<"$err" || fail "b: the error does not say why: $err"
guest_runs src || fail "b: the source's guest does not run"
pass "b: black-holed link noticed after $took ms: $err"

# c) SIGSTOP of the source: the destination (--stall-timeout-ms) gives up.
migrate_capped src "$pc"
t0=$(date +%s%N)
kill -STOP "$PID_src"
wait_until 6 grep -q "incoming migration failed" "$T/dstc.log" ||
	{ kill -CONT "$PID_src"; fail "c: the destination did not give up"; }
took=$(ms_since "$t0")
kill -CONT "$PID_src"
[ "$took" -lt 5000 ] || fail "c: the destination took $took ms to notice (limit $LIMIT)"
derr=$(status_field dstc 'd["migration"]["last_failure"]["error"]')
grep -q "the source sent nothing for [0-9.]* s (the stall limit, --stall-timeout-ms $LIMIT)" <<<"$derr" ||
	fail "c: the destination's error: $derr"
[ "$(guest_state dstc)" = incoming ] || fail "c: the destination does not listen again: $(guest_state dstc)"
wait $MIG && fail "c: the source's migration completed"
guest_runs src || fail "c: the source's guest does not run"
pass "c: frozen source noticed by the destination after $took ms: $derr"

# d) cancel while stalled, with a long limit.
migrate_capped src "$pd" --stall-timeout-ms 60000
kill -STOP "$PID_dstd"
sleep 1
t0=$(date +%s%N)
"$FERRY" cancel "$T/src.sock" >/dev/null || { kill -CONT "$PID_dstd"; fail "d: cancel refused"; }
wait $MIG
took=$(ms_since "$t0")
kill -CONT "$PID_dstd"
[ "$took" -lt 2500 ] || fail "d: cancel took $took ms"
check_report d "d['status'] == 'cancelled' and d['owner'] == 'source'"
source_intact src

pass "d: cancel of a stalled migration took $took ms"

# e) A busy destination is not a stalled one.
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$pe" --stall-timeout-ms 1000 \
	--max-pause-ms 10000 --json >"$T/m2.json" 2>"$T/m2.log" ||
	fail "e: migration to a busy destination failed: $(tail -n1 "$T/m2.json")"
[ "$(json_field "$T/m2.json" 'd["verified"] == True and "keepalive" in d["capabilities"] and d["state_ms"] >= 2500')" = true ] ||
	fail "e: report: $(tail -n1 "$T/m2.json")"
pass "e: a destination busy for 2.5 s kept a 1 s limit at bay with keep-alives; migrated and verified"
