#!/usr/bin/env bash
# Garbage sent to an incoming ferry-vm gets an error record, no crash, and
# the VM still receives a real migration afterwards.
. "$(dirname "$0")/lib.sh"
port=$(free_port)
start_vm dst --memory 64M --workload idle --incoming "tcp:127.0.0.1:$port"
start_vm src --memory 64M --workload idle
python3 - "$port" <<'PY' || fail "garbage exchange"
import socket, struct, sys, time
port = int(sys.argv[1])
def attempt(payload):
    for _ in range(100):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5); break
        except OSError:
            time.sleep(0.05)
    s.sendall(payload)
    data = b""
    try:
        while len(data) < 16:
            chunk = s.recv(4096)
            if not chunk: break
            data += chunk
    except OSError:
        pass
    s.close()
    return data
# 1: not a ferry stream at all
r = attempt(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 64)
assert len(r) >= 16 and struct.unpack_from("<I", r, 0)[0] == 0x101, r[:32]
M = 0xffffffff
P1, P2, P3, P4, P5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
def rotl(x, r): return ((x << r) | (x >> (32 - r))) & M
def xxh32_short(data, seed=0):  # XXH32 for inputs under 16 bytes
    h = (seed + P5 + len(data)) & M; i = 0
    while i + 4 <= len(data):
        h = (h + struct.unpack_from("<I", data, i)[0] * P3) & M
        h = rotl(h, 17) * P4 & M; i += 4
    while i < len(data):
        h = (h + data[i] * P5) & M; h = rotl(h, 11) * P1 & M; i += 1
    h ^= h >> 15; h = h * P2 & M; h ^= h >> 13; h = h * P3 & M; h ^= h >> 16
    return h
head = b"FERRYMIG" + struct.pack("<HH", 1, 0)
stream = head + struct.pack("<I", xxh32_short(head))
# 2: a valid stream header, then a record claiming a 4 GiB body
r = attempt(stream + struct.pack("<IIII", 1, 0xffffffff, 1, 0))
assert len(r) >= 16 and struct.unpack_from("<I", r, 0)[0] == 0x101, r[:32]
# 3: a HELLO record whose checksum is wrong
r = attempt(stream + struct.pack("<IIII", 1, 0, 1, 0) + b"\xde\xad" * 4)
assert len(r) >= 16 and struct.unpack_from("<I", r, 0)[0] == 0x101, r[:32]
# 4: memory before hello (a protocol violation)
r = attempt(stream + struct.pack("<IIII", 0x200, 24, 0, 1) + b"\0" * 32)
assert len(r) >= 16 and struct.unpack_from("<I", r, 0)[0] == 0x101, r[:32]
print("garbage refused with ERROR records")
PY
kill -0 "$PID_dst" || fail "destination died on garbage"
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --json >"$T/m.json" 2>"$T/m.log" ||
	fail "real migration after garbage failed: $(tail -n1 "$T/m.json")"
[ "$(json_field "$T/m.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m.json")"
pass "garbage refused; then migrated: $(tail -n1 "$T/m.json")"
