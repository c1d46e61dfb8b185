#!/usr/bin/env bash
# The offline tools on real streams: ferry schema lists ferry-vm's devices
# as JSON Schema; a live migration recorded with --record-stream and a
# snapshot file both pass ferry inspect --check, show the device state
# field by field, and a damaged recording is refused with its offset.
. "$(dirname "$0")/lib.sh"

# ferry schema --json: one JSON object, every device type of ferry-vm.
"$FERRY" schema --json >"$T/schema.json" 2>"$T/schema.log" ||
	fail "ferry schema --json exited $?"
python3 - "$T/schema.json" <<'EOF' || fail "schema: $(head -c 300 "$T/schema.json")"
import json, sys
d = json.load(open(sys.argv[1]))
for t in ("machine", "vcpu", "console"):
    assert t in d, t
c = d["console"]
assert c["$schema"].startswith("https://json-schema.org/draft/2020-12"), c["$schema"]
assert c["properties"]["uart"]["properties"]["lsr"]["x-ferry-type"] == "u8"
assert c["properties"]["lines"]["items"]["type"] == "object"
EOF
"$FERRY" schema | grep -q '^console  version 1' || fail "ferry schema text"
pass "ferry schema: machine, vcpu, console"

# A live migration, recorded.
port=$(free_port)
start_vm dst --memory 64M --workload random --dirty-rate 20 --incoming "tcp:127.0.0.1:$port"
start_vm src --memory 64M --workload random --dirty-rate 20
sleep 0.5 # the console prints a few lines
rec="$T/migration.ferry"
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --record-stream "$rec" \
	--compress lz4 --json >"$T/m.json" 2>"$T/m.log" ||
	fail "migration failed: $(tail -n1 "$T/m.json")"
[ "$(json_field "$T/m.json" 'd["verified"]')" = true ] ||
	fail "not verified: $(tail -n1 "$T/m.json")"
"$FERRY" inspect --check "$rec" >"$T/inspect.txt" 2>"$T/inspect.log" ||
	fail "inspect --check of the recording: $(cat "$T/inspect.log")"
grep -q '^ok: .* ends in state running$' "$T/inspect.txt" ||
	fail "no ok line: $(tail -n 3 "$T/inspect.txt")"
grep -q '"instance": "console0"' "$T/inspect.txt" || fail "console not decoded"
grep -q '"lsr": 96' "$T/inspect.txt" || fail "uart registers not decoded"
# The same from a pipe, as JSON lines: the STATE record carries the
# console, and its lines are the guest's.
"$FERRY" inspect --check --json - <"$rec" >"$T/inspect.jsonl" ||
	fail "inspect --json from stdin"
python3 - "$T/inspect.jsonl" <<'EOF' || fail "inspect --json: $(tail -n 2 "$T/inspect.jsonl")"
import json, sys
items = [json.loads(l) for l in open(sys.argv[1])]
assert items[0]["what"] == "header"
state = [i for i in items if i.get("type") == "STATE"][0]
devs = {d["instance"]: d for d in state["body"]["section"]["devices"]}
con = devs["console0"]["state"]
assert con["printed"] > 0 and con["lines"], con["lines"]
ring = bytes.fromhex(con["ring"])
assert b"vcpu0:" in ring, ring[:100]
assert devs["machine"]["state"]["vcpus"] == 2
passes = [i for i in items if i["what"] == "pass"]
assert passes and passes[-1]["data"]["final"], passes
assert items[-1]["what"] == "summary" and items[-1]["data"]["complete"]
EOF
pass "recording of $(stat -c %s "$rec") bytes: $(tail -n 1 "$T/inspect.txt")"

# One flipped byte in a control record's body is found, with its offset.
bad="$T/bad.ferry"
cp "$rec" "$bad"
printf '\x01' | dd of="$bad" bs=1 seek=40 conv=notrunc status=none
if "$FERRY" inspect --check "$bad" >/dev/null 2>"$T/bad.log"; then
	fail "a damaged recording passed --check"
fi
grep -q 'offset 16: HELLO: checksum mismatch' "$T/bad.log" ||
	fail "damage not located: $(cat "$T/bad.log")"
pass "damaged recording: $(cat "$T/bad.log")"

# A snapshot file (the mapped layout): superblock, regions, every page
# checked against its table entry; a flipped byte in a page slot and a cut
# file are named with their offset.
start_vm snap --memory 64M --workload ab --dirty-rate 20
sleep 0.3
"$FERRY" migrate "$T/snap.sock" "file:$T/guest.snap" --json >"$T/s.json" 2>"$T/s.log" ||
	fail "snapshot failed: $(tail -n1 "$T/s.json")"
"$FERRY" inspect --check "$T/guest.snap" >"$T/snap.txt" 2>"$T/snap.log" ||
	fail "inspect --check of the snapshot: $(cat "$T/snap.log")"
grep -q 'snapshot file (mapped layout)' "$T/snap.txt" &&
	grep -q 'every page checked' "$T/snap.txt" ||
	fail "not checked as a mapped snapshot: $(tail -n 3 "$T/snap.txt")"
pass "snapshot: $(tail -n 1 "$T/snap.txt")"
# The ab workload writes the first pages of each vCPU's share: page 1 has
# data. Its slot starts at 2 MiB + 4 KiB.
cp "$T/guest.snap" "$T/flip.snap"
printf '\x7f' | dd of="$T/flip.snap" bs=1 seek=$((2 * 1048576 + 4096 + 9)) conv=notrunc status=none
if "$FERRY" inspect --check "$T/flip.snap" >/dev/null 2>"$T/flip.log"; then
	fail "a damaged page slot passed --check"
fi
grep -q 'offset 2101248: page 1 of region ram0' "$T/flip.log" ||
	fail "damaged page not located: $(cat "$T/flip.log")"
pass "damaged snapshot: $(cat "$T/flip.log")"
truncate -s 30000000 "$T/flip.snap"
if "$FERRY" inspect --check "$T/flip.snap" >/dev/null 2>"$T/cut.log"; then
	fail "a cut snapshot passed --check"
fi
grep -q 'offset 30000000: the file is 30000000 bytes' "$T/cut.log" ||
	fail "cut snapshot not located: $(cat "$T/cut.log")"
pass "cut snapshot: $(cat "$T/cut.log")"
