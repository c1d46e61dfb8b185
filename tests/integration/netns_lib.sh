# Two "hosts" and a client as network namespaces on one bridge, for the
# tests of a guest address that moves (issue 21). Source after lib.sh:
#
#   . "$(dirname "$0")/lib.sh"
#   . "$(dirname "$0")/netns_lib.sh"
#   netns_setup                 # skips (exit 77) when it cannot be built
#   in_ns src "$FERRY_VM" ... --net-address "$GUEST_CIDR" --net-dev "$NET_DEV" &
#   in_ns cli redis-cli -h "$GUEST_ADDR" ...
#
# Topology (names carry the test's PID, so parallel tests never collide):
#
#   fy-src-$$  eth0 10.77.0.1/24 --+
#   fy-dst-$$  eth0 10.77.0.2/24 --+-- br0 in fy-sw-$$ (the switch)
#   fy-cli-$$  eth0 10.77.0.3/24 --+
#
# The guest's address, 10.77.0.10/24, is on no interface at first: the VM
# that owns the guest adds it to its host's eth0 and announces it.
# Everything is torn down on exit, by trap, whether the test passes or not
# (lib.sh's cleanup runs first, so the processes are gone by then).

NS_SRC=fy-src-$$
NS_DST=fy-dst-$$
NS_CLI=fy-cli-$$
NS_SW=fy-sw-$$
ADDR_SRC=10.77.0.1
ADDR_DST=10.77.0.2
ADDR_CLI=10.77.0.3
GUEST_ADDR=10.77.0.10
GUEST_PREFIX=24
GUEST_CIDR=$GUEST_ADDR/$GUEST_PREFIX
NET_DEV=eth0
NETNS_MADE=()

# ns_name NAME : the namespace of src, dst, cli or sw (full names pass)
ns_name() {
	case $1 in
	src) echo "$NS_SRC" ;;
	dst) echo "$NS_DST" ;;
	cli) echo "$NS_CLI" ;;
	sw) echo "$NS_SW" ;;
	*) echo "$1" ;;
	esac
}

# in_ns NAME CMD... : run CMD in namespace NAME (src, dst, cli, sw)
in_ns() {
	local ns
	ns=$(ns_name "$1"); shift
	ip netns exec "$ns" "$@"
}

# netns_teardown : kill what still runs in the namespaces, delete them
netns_teardown() {
	local ns p
	for ns in "${NETNS_MADE[@]}"; do
		for p in $(ip netns pids "$ns" 2>/dev/null); do
			kill -9 "$p" 2>/dev/null
		done
		ip netns del "$ns" 2>/dev/null
	done
	NETNS_MADE=()
}

netns_skip() { echo "SKIP: $*"; exit 77; }

# netns_setup : build the topology; exit 77 with the reason when this
# machine cannot (not root, no ip netns, no bridge or veth support)
netns_setup() {
	local h ns addr
	[ "$(id -u)" = 0 ] || netns_skip "network namespaces need root"
	command -v ip >/dev/null || netns_skip "the ip command (iproute2) is not installed"
	trap 'cleanup; netns_teardown' EXIT
	trap 'exit 130' INT TERM
	ip netns add "$NS_SW" 2>"$T/netns.err" ||
		netns_skip "ip netns add failed: $(cat "$T/netns.err")"
	NETNS_MADE+=("$NS_SW")
	ip -n "$NS_SW" link add br0 type bridge 2>"$T/netns.err" ||
		netns_skip "no bridge support: $(cat "$T/netns.err")"
	ip -n "$NS_SW" link set lo up
	ip -n "$NS_SW" link set br0 up
	for h in src dst cli; do
		ns=$(ns_name "$h")
		case $h in src) addr=$ADDR_SRC ;; dst) addr=$ADDR_DST ;; cli) addr=$ADDR_CLI ;; esac
		ip netns add "$ns" || fail "ip netns add $ns"
		NETNS_MADE+=("$ns")
		ip -n "$NS_SW" link add "$h" type veth peer name "$NET_DEV" netns "$ns" \
			2>"$T/netns.err" || netns_skip "no veth support: $(cat "$T/netns.err")"
		ip -n "$NS_SW" link set "$h" master br0 up || fail "bridge port $h"
		ip -n "$ns" link set lo up
		ip -n "$ns" addr add "$addr/$GUEST_PREFIX" dev "$NET_DEV" || fail "address of $h"
		ip -n "$ns" link set "$NET_DEV" up || fail "link of $h"
	done
}

# netns_ping FROM ADDR... : each ADDR answers an ICMP echo from namespace
# FROM within NETNS_PING_TRIES x 0.2 s (default 25); no ping package needed
netns_ping() {
	local from=$1; shift
	in_ns "$from" python3 - "${NETNS_PING_TRIES:-25}" "$@" <<'EOF'
import os, socket, struct, sys, time
tries, addrs = int(sys.argv[1]), sys.argv[2:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(0.2)
def csum(b):
    n = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    n = (n >> 16) + (n & 0xffff); n += n >> 16
    return ~n & 0xffff
def ping(addr, ident):
    for seq in range(tries):
        body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"ferry!"
        body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
        s.sendto(body, (addr, 0))
        end = time.time() + 0.2
        while time.time() < end:
            try:
                pkt, src = s.recvfrom(1500)
            except socket.timeout:
                break
            icmp = pkt[(pkt[0] & 15) * 4:]
            if src[0] == addr and icmp[0] == 0 and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
                return True
    print("no answer from %s" % addr, file=sys.stderr)
    return False
ok = all([ping(a, (os.getpid() + i) & 0xffff) for i, a in enumerate(addrs)])
sys.exit(0 if ok else 1)
EOF
}

# netns_neigh NS ADDR : the MAC NS's neighbour table holds for ADDR ("" if none)
netns_neigh() {
	in_ns "$1" ip neigh show "$2" dev "$NET_DEV" | awk '{for (i=1;i<NF;i++) if ($i=="lladdr") print $(i+1)}'
}

# netns_mac NS : the MAC of NS's eth0
netns_mac() { in_ns "$1" cat "/sys/class/net/$NET_DEV/address"; }
