#!/usr/bin/env bash
# ferry-vm's API socket under load: 70 idle connections do not lock out
# `ferry status` or `ferry cancel` (the quietest idle client is evicted,
# never the one following the migration); a quiet client is dropped after
# the idle timeout while a busy one stays; an over-long line gets an error
# reply and the connection goes on; an argument out of its range gets one
# message whichever side it misses, from ferry-vm and from the CLI.
. "$(dirname "$0")/lib.sh"
port=$(free_port)
start_vm dst --memory 64M --workload random --incoming "tcp:127.0.0.1:$port"
start_vm src --memory 64M --workload random --dirty-rate 400
# Capped, so that it is still running when `ferry cancel` comes.
migrate_in_background src "tcp:127.0.0.1:$port" --max-bandwidth 50

python3 - "$T/src.sock" "$FERRY" <<'PY' || fail "flood of idle clients"
import json, select, socket, subprocess, sys, time
path, ferry = sys.argv[1], sys.argv[2]
conns = []
for i in range(70):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(5)
    conns.append(s)
    assert b"ferry-vm" in s.recv(4096), f"connection {i}: no greeting"
for cmd in ("status", "cancel"):
    t = time.monotonic()
    r = subprocess.run([ferry, cmd, path], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, f"ferry {cmd} with 70 idle clients: {r.returncode} {r.stderr}"
    print(f"ferry {cmd} answered in {time.monotonic() - t:.3f} s")
# Every eviction has happened by now: read each CLOSED that came, waiting
# 0.5 s for more after the last one (all at once, not 0.2 s per client).
evicted = 0
pending = set(conns)
while pending:
    ready = select.select(list(pending), [], [], 0.5)[0]
    if not ready:
        break
    for s in ready:
        pending.discard(s)
        data = s.recv(4096)
        if not data:
            continue
        ev = json.loads(data.split(b"\n")[0])
        assert ev["event"] == "CLOSED" and ev["data"]["reason"] == "evicted", ev
        evicted += 1
# 70 idle clients, the migration's owner and `ferry status` through 64
# slots (`ferry cancel` may take the slot `ferry status` left).
assert evicted >= 70 + 1 + 1 - 64, f"only {evicted} evicted"
print(f"{evicted} idle clients evicted")
PY
wait $MIG && fail "ferry migrate exited 0 after cancel"
[ "$(json_field "$T/m1.json" 'd["status"]')" = '"cancelled"' ] ||
	fail "the migration's own client lost its report: $(tail -n1 "$T/m1.json")"
source_intact src
pass "70 idle clients: status and cancel answered, the migration's client got its report"

# A VM whose API drops clients quiet for 1 s.
FERRY_VM_API_IDLE_TIMEOUT=1 start_vm idle --memory 16M --workload idle
python3 - "$T/idle.sock" <<'PY' || fail "idle timeout or over-long line"
import json, select, socket, sys, time
path = sys.argv[1]
def connect():
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(5)
    f = s.makefile("rb")
    assert b"ferry-vm" in f.readline()
    return s, f
def request(s, f, line):
    s.sendall(line + b"\n")
    return json.loads(f.readline())

quiet, qf = connect()
busy, bf = connect()
t0 = time.monotonic()
waited = None
while waited is None and time.monotonic() - t0 < 4:
    # A request every 0.25 s keeps the busy client.
    assert "return" in request(busy, bf, b'{"execute":"status"}')
    if select.select([quiet], [], [], 0.25)[0]:
        waited = time.monotonic() - t0
assert waited is not None, "the quiet client was not dropped within 4 s"
ev = json.loads(qf.readline())
assert ev["event"] == "CLOSED" and ev["data"]["reason"] == "idle", ev
assert waited >= 0.9, f"dropped after {waited:.2f} s, before its 1 s"
assert qf.readline() == b"", "still open after CLOSED"
assert "return" in request(busy, bf, b'{"execute":"status"}'), "busy client dropped"
print(f"quiet client dropped after {waited:.2f} s, busy one kept")

# The longest line taken is 65536 bytes, newline included.
s, f = connect()
pad = 65535 - len(b'{"execute":"status","id":""}')
r = request(s, f, b'{"execute":"status","id":"' + b"a" * pad + b'"}')
assert "return" in r and len(r["id"]) == pad, "a 65536-byte line was refused"
r = request(s, f, b"x" * 70000)
assert r == {"error": {"class": "GenericError",
                       "desc": "command line longer than 65536 bytes"}}, r
r = request(s, f, b'{"execute":"status","id":7}')
assert "return" in r and r["id"] == 7, f"no resync after the long line: {r}"
print("over-long line: error reply, then the next request answered")

# A value below its range and one above it get the same message.
for key, low, high, text in (
        ("connections", 0, 1000, "a whole number from 1 to 64"),
        ("window", 0, 65, "a whole number from 1 to 64"),
        ("max_passes", 0, 10**7, "a whole number from 1 to 1000000"),
        ("downtime_ms", 0, 10**8, "a whole number from 1 to 3600000 ms"),
        ("chunk_bytes", 4095, 1 << 25,
         "a multiple of 4096 from 4096 to 16777216 bytes")):
    for v in (low, high, "x"):
        r = request(s, f, json.dumps({"execute": "migrate", "arguments":
                                      {"uri": "tcp:127.0.0.1:1", key: v}}).encode())
        assert r["error"]["desc"] == f"'{key}' must be {text}", r
print("range errors: one message per argument")
PY
# The command line says the same for its options, on both sides of a range.
for v in 0 1000; do
	out=$("$FERRY" migrate "$T/idle.sock" tcp:127.0.0.1:1 --connections "$v" 2>&1) &&
		fail "--connections $v accepted"
	grep -q -- "--connections must be a whole number from 1 to 64, not '$v'" <<<"$out" ||
		fail "--connections $v: $out"
done
pass "idle client dropped, busy client kept, over-long line answered, one range message"
