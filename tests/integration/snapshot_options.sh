#!/usr/bin/env bash
# What a snapshot restore and a live snapshot accept: --lazy needs a
# snapshot file, keep_running and io_threads need a file: URI, and the
# command line checks ferry snapshot's options against ferry-vm's ranges.
. "$(dirname "$0")/lib.sh"

# --lazy without a file to restore is refused before anything starts.
for inc in "" "--incoming tcp:127.0.0.1:0"; do
	# shellcheck disable=SC2086
	out=$("$FERRY_VM" --memory 16M --lazy $inc 2>&1) && fail "--lazy $inc accepted"
	grep -q -- "--lazy restores a snapshot file: it needs --incoming file:PATH" <<<"$out" ||
		fail "--lazy $inc: $out"
done
pass "--lazy refused without --incoming file:PATH"

start_vm src --memory 16M --workload idle
python3 - "$T/src.sock" <<'PY' || fail "keep_running/io_threads with a stream URI"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(5)
f = s.makefile("rb")
assert b"ferry-vm" in f.readline()
def request(args):
    s.sendall(json.dumps({"execute": "migrate", "arguments": args}).encode() + b"\n")
    return json.loads(f.readline())
for key, v in (("keep_running", True), ("io_threads", 2)):
    r = request({"uri": "tcp:127.0.0.1:1", key: v})
    assert r["error"]["desc"] == f"'{key}' applies to a snapshot (a file:PATH uri) only", r
for v in (0, 65, "x"):
    r = request({"uri": "file:/nonexistent/x", "io_threads": v})
    assert r["error"]["desc"] == "'io_threads' must be a whole number from 1 to 64", r
r = request({"uri": "file:/nonexistent/x", "keep_running": 1})
assert r["error"]["desc"] == "'keep_running' must be true or false", r
PY
for v in 0 65; do
	out=$("$FERRY" snapshot "$T/src.sock" "$T/x.snap" --io-threads "$v" 2>&1) &&
		fail "--io-threads $v accepted"
	grep -q -- "--io-threads must be a whole number from 1 to 64, not '$v'" <<<"$out" ||
		fail "--io-threads $v: $out"
done
out=$("$FERRY" snapshot "$T/src.sock" 2>&1); [ $? = 2 ] || fail "snapshot without PATH: $out"
[ ! -e "$T/x.snap" ] || fail "a refused snapshot wrote a file"
pass "keep_running and io_threads only for file:, --io-threads range checked"

# A stream-format file (here a recorded migration stream, which is what
# older ferry versions wrote as snapshots) does not describe its guest:
# it restores with the options, as before, and says they are needed.
start_vm rsrc --memory 16M --workload random
start_vm rdst --memory 16M --incoming "unix:$T/r.mig"
"$FERRY" migrate "$T/rsrc.sock" "unix:$T/r.mig" --record-stream "$T/old.ferry" \
	>"$T/r.txt" 2>&1 || fail "recording failed: $(cat "$T/r.txt")"
start_vm old --incoming "file:$T/old.ferry"
wait_until 20 sh -c "$FERRY status $T/old.sock --json | grep -q '\"state\": *\"failed\"'" ||
	fail "a stream restored without its options: $("$FERRY" status "$T/old.sock" --json)"
grep -q "note: .*stream-format snapshot.*restoring it as a stream, with --memory, --vcpus and --memory-backend as given" "$T/old.log" ||
	fail "no note that the options are needed: $(cat "$T/old.log")"
start_vm old16 --memory 16M --incoming "file:$T/old.ferry"
wait_until 20 sh -c "[ \"\$($FERRY status $T/old16.sock --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"verified\"])')\" = True ]" ||
	fail "a stream with its options not restored: $("$FERRY" status "$T/old16.sock" --json)"
out=$("$FERRY_VM" --incoming "file:$T/old.ferry" --memory 16M --lazy 2>&1) && fail "--lazy with a stream file accepted"
grep -q -- "--lazy restores a mapped snapshot file: .*stream-format" <<<"$out" || fail "--lazy with a stream: $out"
pass "a stream-format file restores with its options, says they are needed; --lazy refuses it"
