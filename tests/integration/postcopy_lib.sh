# shellcheck shell=bash
# Shared by postcopy.sh and postcopy_failures.sh (sourced after lib.sh):
# checks that read a VM's status once and test many of its fields in one
# python process (on two loaded cores a python start costs up to a second,
# and these tests read dozens of fields).

# skip_unless_postcopy: exit 77 with the reason unless this build and host
# can run postcopy.
skip_unless_postcopy() {
	"$FERRY" migrate --help 2>&1 | grep -q -- '--postcopy' ||
		{ echo "skip: this ferry migrate has no --postcopy (the postcopy engine and CLI are not in this build)"; exit 77; }
	[ "$(id -u)" = 0 ] ||
		{ echo "skip: postcopy needs userfaultfd to serve faults taken in the kernel too, which needs root (or /dev/userfaultfd access) here"; exit 77; }
}

# state_is NAME STATE: NAME's migration.state is STATE (ferry-vm writes its
# status compactly, migration's state first).
state_is() {
	"$FERRY" status "$T/$1.sock" --json 2>/dev/null | grep -q "\"migration\":{\"state\":\"$2\""
}

# snap NAME: NAME's status now, in $T/NAME.now.json.
snap() { "$FERRY" status "$T/$1.sock" --json >"$T/$1.now.json" 2>/dev/null; }

# assert_json FILE TAG EXPR...: every EXPR (python, d = the last JSON line
# of FILE, m = its "migration" member) holds; else fail with TAG, the first
# EXPR that does not, and the JSON.
assert_json() {
	local file=$1 tag=$2 bad
	shift 2
	bad=$(tail -n 1 "$file" | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    print("(no JSON)")
    sys.exit()
m = d.get("migration") or {}
for e in sys.argv[1:]:
    try:
        ok = eval(e)
    except Exception as x:
        ok = False
    if not ok:
        print(e)
        break' "$@")
	[ -z "$bad" ] || fail "$tag: not true: $bad: $(tail -n 1 "$file")"
}

# status_is NAME TAG EXPR...: assert_json on NAME's status now.
status_is() {
	local name=$1
	shift
	snap "$name"
	assert_json "$T/$name.now.json" "$@"
}

# listen_port: a free loopback TCP port below the kernel's ephemeral range.
# ss -K picks a migration's connections by the port they meet at; a port
# from the ephemeral range (lib.sh's free_port) can come back, once its
# listener closed, as the local port of another migration's connection,
# which a cut would then break too.
listen_port() {
	python3 - <<'PY'
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    p = random.randrange(10000, max(lo, 10001))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    print(p)
    break
PY
}
