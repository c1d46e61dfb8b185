#!/usr/bin/env bash
# The TCP congestion control of a migration's connections.
#   - A name the kernel does not offer fails the migration before it
#     starts, with a message naming what the host offers; the source's
#     guest runs on intact.
#   - A name it offers is what the source's sockets use, as the kernel
#     shows them to ss, and what the report says.
#   - Without a name, a pacing default (BBR) gives way to cubic on a
#     loopback connection; any other default is kept.
# As root the test runs in a network namespace of its own whose default is
# BBR (where the kernel has it), so the automatic choice is tested whatever
# the host's default is.
if [ "$(id -u)" = 0 ] && [ -z "${FERRY_CC_NETNS:-}" ] &&
	command -v unshare >/dev/null && command -v ip >/dev/null; then
	export FERRY_CC_NETNS=1
	exec unshare -n bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
fi
. "$(dirname "$0")/lib.sh"
command -v ss >/dev/null || { echo "SKIP: ss (iproute2) is not installed"; exit 77; }

sysctl_cc=/proc/sys/net/ipv4/tcp_congestion_control
if [ -n "${FERRY_CC_NETNS:-}" ]; then
	modprobe -q tcp_bbr 2>/dev/null
	if echo bbr >"$sysctl_cc" 2>/dev/null; then
		echo "in a network namespace whose default congestion control is bbr"
	else
		echo "note: bbr is not available here; the automatic choice is tested against the default $(cat "$sysctl_cc")"
	fi
else
	echo "note: not root, so the host's default $(cat "$sysctl_cc") is the one tested"
fi
default=$(cat "$sysctl_cc")
case $default in bbr*) auto=cubic ;; *) auto=$default ;; esac

# 1. Refused before anything moved; the guest runs on.
port=$(free_port)
start_vm dst --memory 128M --workload random --incoming "tcp:127.0.0.1:$port"
start_vm src --memory 128M --workload random --dirty-rate 50
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --congestion-control nosuch \
	--json >"$T/bad.json" 2>"$T/bad.log" &&
	fail "a migration with an unknown congestion control succeeded"
err=$(json_field "$T/bad.json" 'd["error"]')
grep -q "congestion control 'nosuch' is not available on this host (it offers: " <<<"$err" ||
	fail "unclear error: $err"
grep -q "$default" <<<"$err" || fail "the error does not list what the host offers: $err"
grep -q "incoming migration failed" "$T/dst.log" &&
	fail "the refused name reached the destination: $(cat "$T/dst.log")"
source_intact src
pass "unknown name refused: $err"

# A name longer than any the kernel keeps (it would cut it short) is a
# clear API error, nothing started.
out=$("$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" \
	--congestion-control much-longer-than-sixteen 2>&1) && fail "an overlong name was accepted"
grep -q "congestion_control' must be the name of a kernel algorithm (1 to 15 characters)" <<<"$out" ||
	fail "unclear error for an overlong name: $out"
pass "overlong name refused by the API"

# 2. reno, which every kernel has: seen by ss on the source's sockets
# while the migration runs (it cannot converge at 1 ms and switches over
# after 3 s of passes), then in the report.
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --congestion-control reno \
	--connections 2 --downtime-ms 1 --max-passes 100000 --max-precopy-ms 3000 \
	--timeout-strategy switchover --json >"$T/reno.json" 2>"$T/reno.log" &
MIG=$!
wait_until 20 in_second_pass src || fail "migration never reached its second pass"
# Sockets whose far end is the destination's port: the source's.
ss -tni "( dport = :$port )" >"$T/ss.txt"
n=$(grep -c ESTAB "$T/ss.txt")
[ "$n" = 2 ] || fail "expected 2 connections to :$port, ss shows $n: $(cat "$T/ss.txt")"
[ "$(grep -cw reno "$T/ss.txt")" = 2 ] || fail "sockets not on reno: $(cat "$T/ss.txt")"
wait $MIG || fail "migration with reno failed: $(tail -n1 "$T/reno.json")"
[ "$(json_field "$T/reno.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/reno.json")"
[ "$(json_field "$T/reno.json" 'd["congestion_control"]')" = '"reno"' ] ||
	fail "report: $(tail -n1 "$T/reno.json")"
# A plaintext migration names no TLS.
[ "$(json_field "$T/reno.json" '[d["tls_cipher"], d["tls_version"], d["tls_kx"]]')" = '[null, null, null]' ] ||
	fail "a plaintext report names TLS: $(tail -n1 "$T/reno.json")"
guest_runs dst || fail "destination guest does not run"
pass "reno on both connections (ss), migration verified"

# 3. The automatic choice, between two new VMs.
port2=$(free_port)
start_vm dst2 --memory 128M --workload random --incoming "tcp:127.0.0.1:$port2"
start_vm src2 --memory 128M --workload random --dirty-rate 50
"$FERRY" migrate "$T/src2.sock" "tcp:127.0.0.1:$port2" --max-passes 12 \
	--timeout-strategy switchover --json >"$T/auto.json" 2>"$T/auto.log" ||
	fail "migration with the automatic choice failed: $(tail -n1 "$T/auto.json")"
[ "$(json_field "$T/auto.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/auto.json")"
got=$(json_field "$T/auto.json" 'd["congestion_control"]')
[ "$got" = "\"$auto\"" ] ||
	fail "default $default on loopback: expected $auto, the report says $got"
pass "automatic choice under default $default on loopback: $auto"
