#!/usr/bin/env bash
# The window (chunks in flight per connection), as the source's sockets
# show it: each data connection's send buffer holds the window's chunks
# (the kernel reports twice what was asked: tb in ss -m).
#   - Left to ferry, a destination on this host gets a window of one
#     chunk (fewer bytes in flight stay in the shared caches).
#   - A window that is asked for is used as it is, on this host too.
# The source stops itself in its second pass (FERRY_VM_FAULT=at:passN:stop,
# vm/fault.c) while ss looks, so a neighbour's load cannot make the
# migration end before ss has seen both connections.
. "$(dirname "$0")/lib.sh"
command -v ss >/dev/null || { echo "SKIP: ss (iproute2) is not installed"; exit 77; }

# both_connections PORT FILE: ss shows the source's two connections to
# :PORT, with their socket memory, in FILE. The second one opens after
# HELLO, so the main one's buffer is final by then.
both_connections() {
	ss -tmi "( dport = :$1 )" >"$2"
	[ "$(grep -c ESTAB "$2")" = 2 ] && [ "$(grep -o 'tb[0-9]*' "$2" | wc -l)" = 2 ]
}

# send_buffers NAME LO HI [OPTIONS...]: migrate VM NAME_src to NAME_dst
# over two connections (the migration cannot converge at 1 ms; it switches
# over after 1.5 s); while the source is stopped in its second pass, check
# that both send buffers are LO to HI KiB, then let it finish.
send_buffers() {
	local name=$1 lo=$2 hi=$3 port kib n=0
	shift 3
	port=$(free_port)
	# The destination waits a minute for the source the test holds still.
	start_vm "${name}_dst" --memory 128M --workload random --incoming "tcp:127.0.0.1:$port" \
		--stall-timeout-ms 60000
	FERRY_VM_FAULT=at:passN:stop start_vm "${name}_src" --memory 128M --workload random --dirty-rate 50
	"$FERRY" migrate "$T/${name}_src.sock" "tcp:127.0.0.1:$port" --connections 2 \
		--downtime-ms 1 --max-passes 100000 --max-precopy-ms 1500 \
		--timeout-strategy switchover "$@" --json >"$T/$name.json" 2>"$T/$name.log" &
	MIG=$!
	wait_until 60 stopped_at "${name}_src" passN ||
		fail "$name: the source never stopped in its second pass: $(grep 'fault:' "$T/${name}_src.log")"
	# Only ss while it is stopped: the ferry migrate that follows the
	# source gives up on a ferry-vm silent for about 11 s.
	both_connections "$port" "$T/$name.ss"
	kill -CONT "$(eval echo "\$PID_${name}_src")"
	[ "$(grep -c ESTAB "$T/$name.ss")" = 2 ] ||
		fail "$name: ss does not show the two connections: $(cat "$T/$name.ss")"
	wait $MIG || fail "$name: migration failed: $(tail -n1 "$T/$name.json")"
	[ "$(json_field "$T/$name.json" 'd["verified"]')" = true ] ||
		fail "$name: not verified: $(tail -n1 "$T/$name.json")"
	for kib in $(grep -o 'tb[0-9]*' "$T/$name.ss" | sed 's/tb//'); do
		kib=$((kib / 1024))
		[ "$kib" -ge "$lo" ] && [ "$kib" -le "$hi" ] ||
			fail "$name: send buffer $kib KiB, expected $lo to $hi KiB: $(cat "$T/$name.ss")"
		n=$((n + 1))
	done
	[ "$n" = 2 ] || fail "$name: expected 2 connections, ss shows: $(cat "$T/$name.ss")"
	pass "$name: both send buffers within $lo to $hi KiB"
}

# One 1 MiB chunk and its framing, doubled by the kernel: about 2 MiB.
send_buffers default 2048 2200
send_buffers window4 8192 8800 --window 4
