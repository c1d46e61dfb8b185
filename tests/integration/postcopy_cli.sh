#!/usr/bin/env bash
# What a user of postcopy meets before any postcopy runs: the commands
# and options refuse what they cannot do with the reason (and the
# documented exit codes), and the JSON fields are there, null, when a run
# did not switch. The end-to-end runs are postcopy.sh's.
. "$(dirname "$0")/lib.sh"

# expect CODE PATTERN CMD...: CMD exits with CODE and says PATTERN on stderr
expect() {
	local code=$1 pat=$2 rc
	shift 2
	"$@" >"$T/out.txt" 2>"$T/err.txt"
	rc=$?
	[ "$rc" = "$code" ] || fail "$* exited $rc, not $code: $(cat "$T/out.txt" "$T/err.txt")"
	grep -q -- "$pat" "$T/err.txt" || fail "$*: no '$pat' in: $(cat "$T/err.txt")"
}

port=$(free_port)
start_vm dst --memory 64M --incoming "tcp:127.0.0.1:$port"
start_vm src --memory 64M --workload ab
S=$T/src.sock D=$T/dst.sock

expect 1 "no migration is running" "$FERRY" postcopy "$S"
expect 1 "this VM is the destination" "$FERRY" postcopy "$D"
expect 2 "expected SOCKET" "$FERRY" postcopy
expect 2 "\-\-force is required" "$FERRY" resume "$S"
expect 1 "nothing to resume" "$FERRY" resume "$S" --force
[ -z "$(cat "$T/out.txt")" ] || fail "a refused resume printed: $(cat "$T/out.txt")"
expect 2 "not a file" "$FERRY" recover "$D" "file:$T/x"
expect 1 "is a source" "$FERRY" recover "$S" "tcp:127.0.0.1:0"
# The destination waits for its source: not paused, nothing to recover.
expect 1 "not in postcopy-paused" "$FERRY" recover "$D" "tcp:127.0.0.1:0"
pass "postcopy, resume and recover refuse with the reason"

M=("$FERRY" migrate "$S" "tcp:127.0.0.1:$port")
expect 2 "must be a whole number from 1" "${M[@]}" --postcopy-after-passes 0
# Above max_passes (30 by default): the library's own words.
expect 1 "postcopy_after_passes is 50: it must be from 1 to max_passes (30" \
	"${M[@]}" --postcopy-after-passes 50
expect 2 "give one of them" "${M[@]}" --postcopy --postcopy-after-passes 2
expect 2 "takes no other migration option" "${M[@]}" --resume --connections 2
expect 1 "nothing to recover" "${M[@]}" --resume
expect 2 "cancel, switchover or postcopy" "${M[@]}" --timeout-strategy never
expect 1 "cannot ask for pages" "$FERRY" migrate "$S" "file:$T/s.snap" --postcopy
[ ! -e "$T/s.snap" ] || fail "a refused snapshot wrote a file"
source_intact src
pass "migrate refuses bad postcopy options, the source runs on"

# The status carries the postcopy members, null when nothing switched.
fields='["postcopy_ms", "faults", "fault_p50_us", "fault_p99_us", "fault_max_us", "pages_requested", "pages_pushed", "pages_missing", "recoveries"]'
nulls() { # NAME|FILE EXPR: the members are there and null, postcopy false
	local j
	if [ -f "$1" ]; then j=$(json_field "$1" "[$2.get(k, 0) for k in $fields] + [$2.get('postcopy')]")
	else j=$(status_field "$1" "[$2.get(k, 0) for k in $fields] + [$2.get('postcopy')]"); fi
	[ "$j" = "[null, null, null, null, null, null, null, null, null, false]" ] ||
		fail "$1: postcopy members $j"
}
nulls src 'd["migration"]'
nulls dst 'd["migration"]'

# --postcopy with a guest that converges: it completes in precopy, and
# the report says it did not switch.
"${M[@]}" --postcopy --json >"$T/m.json" 2>"$T/m.log" || fail "migration failed: $(cat "$T/m.log")"
[ "$(json_field "$T/m.json" 'd["status"]')" = '"completed"' ] || fail "report: $(tail -n1 "$T/m.json")"
nulls "$T/m.json" d
nulls dst 'd["report"]'
nulls src 'd["migration"]'
# A migration that fails (nobody listens any more) says the same.
"$FERRY" migrate "$T/dst.sock" "tcp:127.0.0.1:$port" --json >"$T/m2.json" 2>/dev/null &&
	fail "a migration to a closed port completed"
nulls "$T/m2.json" d
# The report ferry makes itself when ferry-vm cannot be reached has them
# all, postcopy included, null (it knows nothing).
"$FERRY" migrate "$T/none.sock" "tcp:127.0.0.1:$port" --json >"$T/m3.json" 2>/dev/null
[ "$(json_field "$T/m3.json" "[d[k] for k in $fields + ['postcopy']]")" = \
	"[null, null, null, null, null, null, null, null, null, null]" ] ||
	fail "ferry's own report: $(tail -n1 "$T/m3.json")"
pass "status and reports carry the postcopy members, null without a switch"

# How ferry follows a postcopy, against a stand-in that speaks ferry-vm's
# API (docs/api-socket.md) and plays the events of one: the switch, a cut
# (migrate ends with exit 4 and how to go on), then --resume (recover,
# followed to DONE, whose postcopy lines the report prints).
cat >"$T/fake.py" <<'PY'
import json, os, socket, sys
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen(4)
st = {"state": "precopy", "owner": "source", "pass": 1, "bytes": 1 << 20,
      "ram_bytes": 64 << 20, "total_ms": 10.0, "postcopy": False}
def stats(**kw):
    d = dict(st); d.update(kw); return d
pc = dict(postcopy=True, pages_requested=120, pages_pushed=16000,
          pages_missing=300, recoveries=0, postcopy_ms=None, faults=None)
def serve(f, req, send, polls):
    x = req["execute"]
    if x == "migrate":
        send({"event": "STATE", "data": {"state": "precopy", "stats": stats()}})
        send({"event": "STATE", "data": {"state": "postcopy", "stats": stats(state="postcopy", owner="destination", **pc)}})
        send({"event": "PROGRESS", "data": {"stats": stats(state="postcopy", owner="destination", **pc)}})
        send({"event": "STATE", "data": {"state": "postcopy-paused", "stats": stats(state="postcopy-paused", owner="destination", error=None, **pc)}})
    elif x == "recover" and req["arguments"] == {"uri": "tcp:127.0.0.1:9"}:
        send({"event": "STATE", "data": {"state": "postcopy", "stats": stats(state="postcopy", owner="destination", **pc)}})
        rep = stats(status="completed", error=None, owner="destination", passes=1, downtime_ms=5.0,
                    **dict(pc, pages_missing=0, recoveries=1, postcopy_ms=812.5, faults=120,
                           fault_p50_us=85, fault_p99_us=640, fault_max_us=2100))
        send({"event": "DONE", "data": rep})
    elif x == "status":  # a destination told to recover, then a forced source
        polls.append(1)
        return {"listening": "tcp:127.0.0.1:4242" if len(polls) > 1 else None,
                "guest": {"state": "running"},
                "migration": stats(state="postcopy-paused" if len(polls) < 3 else "failed",
                                   owner="destination" if len(polls) < 3 else "source",
                                   error=None if len(polls) < 3 else "postcopy did not complete")}
    else:
        assert x in ("recover", "resume"), req
    return {}
roles = ["source", "source", "destination", "source"]
for role in roles:
    c, _a = srv.accept(); f = c.makefile("rw"); polls = []
    def send(o): f.write(json.dumps(o) + "\n"); f.flush()
    send({"ferry-vm": {"version": "0.2.0", "role": role, "pid": os.getpid()}})
    for line in f:
        req = json.loads(line)
        if req["execute"] == "status":
            send({"return": serve(f, req, send, polls), "id": req["id"]})
        else:  # the reply, then the events
            send({"return": {}, "id": req["id"]})
            serve(f, req, send, polls)
PY
python3 "$T/fake.py" "$T/fake.sock" & PIDS+=($!)
wait_until 5 test -S "$T/fake.sock" || fail "the stand-in did not listen"
"$FERRY" migrate "$T/fake.sock" tcp:127.0.0.1:9 --postcopy >"$T/f1.txt" 2>"$T/f1.err"
rc=$?
[ "$rc" = 4 ] || fail "a paused postcopy: migrate exited $rc: $(cat "$T/f1.txt" "$T/f1.err")"
grep -q "status        postcopy-paused" "$T/f1.txt" || fail "paused report: $(cat "$T/f1.txt")"
grep -q "ferry recover DST_SOCKET URI" "$T/f1.err" || fail "no way out said: $(cat "$T/f1.err")"
grep -q "postcopy: .* 120 pages requested, 16000 pushed, 300 missing" "$T/f1.err" ||
	fail "no postcopy progress line: $(cat "$T/f1.err")"
"$FERRY" migrate "$T/fake.sock" tcp:127.0.0.1:9 --resume >"$T/f2.txt" 2>"$T/f2.err" ||
	fail "resume: $(cat "$T/f2.txt" "$T/f2.err")"
grep -q "^postcopy      all memory in 812.5 ms after the switch; 120 pages requested, 16000 pushed, 0 missing, 1 recovery$" "$T/f2.txt" &&
	grep -q "^page faults   120, vCPU wait p50 85 µs, p99 640 µs, max 2100 µs$" "$T/f2.txt" &&
	grep -q "^owner         destination" "$T/f2.txt" ||
	fail "report after --resume: $(cat "$T/f2.txt")"
"$FERRY" recover "$T/fake.sock" tcp:127.0.0.1:0 >"$T/f3.txt" 2>"$T/f3.err" ||
	fail "recover: $(cat "$T/f3.txt" "$T/f3.err")"
[ "$(cat "$T/f3.txt")" = "listening at tcp:127.0.0.1:4242" ] || fail "recover said: $(cat "$T/f3.txt")"
grep -q "ferry migrate SRC_SOCKET tcp:127.0.0.1:4242 --resume" "$T/f3.err" || fail "recover: $(cat "$T/f3.err")"
"$FERRY" resume "$T/fake.sock" --force >"$T/f4.txt" 2>"$T/f4.err" ||
	fail "resume: $(cat "$T/f4.txt" "$T/f4.err")"
grep -q "two copies of the guest now run" "$T/f4.err" || fail "no warning: $(cat "$T/f4.err")"
grep -q "runs again (owner source)" "$T/f4.txt" || fail "resume said: $(cat "$T/f4.txt")"
pass "migrate stops at a postcopy pause (exit 4), --resume recovers and reports postcopy; recover says where it listens; resume --force warns"
