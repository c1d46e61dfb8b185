#!/bin/bash
# netns_lib.sh builds the two-host topology of issue 21 and always tears it
# down: hosts reach each other across the bridge, the guest's address
# answers where it is put, and a test that fails leaves no namespace behind.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netns_lib.sh"

netns_setup
for ns in "$NS_SRC" "$NS_DST" "$NS_CLI" "$NS_SW"; do
	ip netns list | grep -qw "$ns" || fail "namespace $ns missing"
done
netns_ping cli "$ADDR_SRC" "$ADDR_DST" || fail "client cannot reach src and dst"
netns_ping src "$ADDR_DST" || fail "src cannot reach dst"
pass "src, dst and client reach each other over the bridge"

# The guest's address answers only once it is put on a host, from there.
NETNS_PING_TRIES=2 netns_ping cli "$GUEST_ADDR" 2>/dev/null &&
	fail "guest address answers before it is on any host"
in_ns src ip addr add "$GUEST_CIDR" dev "$NET_DEV" || fail "add guest address"
netns_ping cli "$GUEST_ADDR" || fail "guest address on src unreachable"
[ "$(netns_neigh cli "$GUEST_ADDR")" = "$(netns_mac src)" ] ||
	fail "client's neighbour entry is not src's MAC"
pass "guest address $GUEST_CIDR answers from src"

# A test that fails still tears its namespaces down (trap on exit).
here=$(cd "$(dirname "$0")" && pwd)
bash -c '. "$1/lib.sh"; . "$1/netns_lib.sh"; netns_setup; echo "$$"; fail "deliberate failure"' \
	_ "$here" >"$T/child.out" 2>&1 && fail "the failing child passed"
child=$(head -n 1 "$T/child.out")
[[ $child =~ ^[0-9]+$ ]] || fail "child printed no PID: $(cat "$T/child.out")"
ip netns list | grep -q -- "-$child\b" && fail "namespaces of failed test $child left behind"
pass "a failing test leaves no namespace behind"
