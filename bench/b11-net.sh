#!/usr/bin/env bash
# Benchmark 11: a kv guest's live TCP connections through a migration
# (issue 21, measurements 1-3). Needs root (TCP_REPAIR, namespaces),
# redis-tools and redis-server.
#
#   1 redis-benchmark (50 clients, SET/GET/INCR, plain and -P 16) against
#     a kv guest while it migrates, in one namespace and between two
#     namespace "hosts" (the address moves): errors, reconnects (the
#     guest's accepted connections against a run without migration), the
#     longest reply (max latency) against the engine's downtime, and the
#     INCR counter (exact or not).
#   2 the guest as a client of redis-server: CLIENT LIST id and age
#     before and after, the server's counter against the guest's count.
#   3 downtime against open connections (1, 100, 1,000 idle ones) and
#     with one client that sent 16 MiB the guest has not read.
#   4 a live update: the same redis-benchmark against a memfd kv guest of
#     B11_LOCAL_SIZE (full: 8G, --quick: 512M) taken over by a new
#     ferry-vm process in the same namespace (`ferry migrate --local`:
#     memory by fd, the sockets by fd too: DEVICE_FDS; "repair" in the
#     row when they went by TCP_REPAIR). Target: pause <= 5 ms, no error.
#
# usage: bench/b11-net.sh [--quick] [--build DIR] [--runs N]
#   --quick: 1 run of each row and 50000 requests per test, otherwise 3
#   runs and 200000. Prints markdown tables; the
#   raw reports stay in the temporary directory it names (KEEP=1).
#   B11_SECTIONS="3 4" runs some of the four sections (default all).
#   B11_CASES="1 1000" runs some of section 3's rows (connections; "1q":
#   the queued one), so that an A/B can alternate trees run by run.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD:-build} RUNS= QUICK=0
while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1 ;;
	--build) BUILD=$2; shift ;;
	--runs) RUNS=$2; shift ;;
	-h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
	*) echo "b11: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
RUNS=${RUNS:-$([ "$QUICK" = 1 ] && echo 1 || echo 3)}
LOCAL_SIZE=${B11_LOCAL_SIZE:-$([ "$QUICK" = 1 ] && echo 512M || echo 8G)}
N=$([ "$QUICK" = 1 ] && echo 50000 || echo 200000)
# Pipelined clients go about ten times faster: ten times the requests keep
# the benchmark running through the migration.
nreq() { if [ "$1" = 16 ]; then echo $((N * 10)); else echo "$N"; fi; }
export FERRY=$PWD/$BUILD/tools/ferry FERRY_VM=$PWD/$BUILD/vm/ferry-vm
export KEEP=${KEEP:-1}
[ "$(id -u)" = 0 ] || { echo "b11: needs root (TCP_REPAIR, network namespaces)"; exit 2; }
for p in redis-cli redis-benchmark redis-server; do
	command -v "$p" >/dev/null || { echo "b11: $p is missing (Debian: redis-tools, redis-server)"; exit 2; }
done
# shellcheck source=tests/integration/lib.sh
. "$HERE/../tests/integration/lib.sh"
# shellcheck source=tests/integration/netns_lib.sh
. "$HERE/../tests/integration/netns_lib.sh"
# A directory of its own (cleanup removes $T, or keeps it with KEEP=1).
rmdir "$T"
T=$(mktemp -d /tmp/ferry-b11.XXXXXX)
netns_setup

net() { status_field "$1" "d[\"net\"]$2"; }
rep() { json_field "$T/$1.json" "$2"; }
# start_in NS NAME ARGS... (NS "-" for this namespace)
start_in() {
	local ns=$1 name=$2; shift 2
	if [ "$ns" = - ]; then start_vm "$name" "$@"; return; fi
	# ip execs ferry-vm: $! is the VM's pid (in_ns, a function, would
	# put a subshell in between).
	ip netns exec "$(ns_name "$ns")" "$FERRY_VM" --api-socket "$T/$name.sock" "$@" <&- >"$T/$name.log" 2>&1 &
	PIDS+=($!)
	eval "PID_$name=$!"
	for _ in $(seq 1 200); do
		[ "$(guest_state "$name" 2>/dev/null)" = running ] ||
			[ "$(guest_state "$name" 2>/dev/null)" = incoming ] && return 0
		sleep 0.05
	done
	fail "$name did not start"
}
run_cli() { if [ "$1" = - ]; then shift; "$@"; else local ns=$1; shift; in_ns "$ns" "$@"; fi; }
max_latency() { tr '\r' '\n' < "$1" | awk '/latency summary/ { getline; getline; if ($6 > m) m = $6 } END { print m + 0 }'; }
errors_in() { tr '\r' '\n' < "$1" | grep -ci error; }

# one_bench TOPO PIPELINE MIGRATE: one redis-benchmark run, as a table row
one_bench() {
	local topo=$1 pipe=$2 mig=$3 host port=6379 mhost srcns=- dstns=- clins=- extra=()
	local mem=(--memory 256M) incoming murl mopt=()
	if [ "$topo" = local ]; then
		host=127.0.0.1 port=$(free_port)
		mem=(--memory "$LOCAL_SIZE" --memory-backend memfd)
		incoming=(--local --incoming "unix:$T/mig.sock") murl=unix:$T/mig.sock mopt=(--local)
		rm -f "$T/mig.sock"
	elif [ "$topo" = two ]; then
		host=$GUEST_ADDR mhost=$ADDR_DST srcns=src dstns=dst clins=cli
		extra=(--net-address "$GUEST_CIDR" --net-dev "$NET_DEV")
	else
		host=127.0.0.1 mhost=127.0.0.1 port=$(free_port)
	fi
	local mport=$(free_port)
	[ "$topo" = local ] || incoming=(--incoming "tcp:$mhost:$mport") murl=tcp:$mhost:$mport
	start_in "$srcns" bs "${mem[@]}" --workload kv --listen "tcp:$host:$port" "${extra[@]}"
	[ "$mig" = yes ] && start_in "$dstns" bd "${mem[@]}" "${incoming[@]}" --listen "tcp:$host:$port" "${extra[@]}"
	run_cli "$clins" redis-cli -h "$host" -p "$port" DEL counter:__rand_int__ >/dev/null
	local a0; a0=$(net bs '["accepted"]')
	run_cli "$clins" redis-benchmark -h "$host" -p "$port" -t set,get,incr -n "$(nreq "$pipe")" -c 50 \
		$([ "$pipe" = 16 ] && echo -P 16) >"$T/bench.out" 2>&1 &
	local b=$!
	sleep 0.5
	local down=- owner=bs
	if [ "$mig" = yes ]; then
		"$FERRY" migrate "$T/bs.sock" "$murl" "${mopt[@]}" --json >"$T/m.json" 2>>"$T/m.log"
		down=$(json_field "$T/m.json" 'd["downtime_ms"]')
		[ "$topo" = local ] && down="$down ($(json_field "$T/m.json" 'd["net"]["handed"]') conns $(json_field "$T/m.json" 'd["net"].get("handoff", "repair")' | tr -d '"'), $(json_field "$T/m.json" 'd["bytes"]') B)"
		owner=bd
	fi
	wait "$b"
	local acc=$(( $(net "$owner" '["accepted"]') - a0 ))
	local ctr; ctr=$(run_cli "$clins" redis-cli -h "$host" -p "$port" GET counter:__rand_int__)
	echo "$acc $(errors_in "$T/bench.out") $(max_latency "$T/bench.out") $ctr $down"
	kill "$(eval echo "\$PID_bs")" 2>/dev/null
	[ "$mig" = yes ] && kill "$(eval echo "\$PID_bd")" 2>/dev/null
	# The next run's VMs take the same names (and the guest's port).
	wait "$(eval echo "\$PID_bs")" 2>/dev/null
	[ "$mig" = yes ] && wait "$(eval echo "\$PID_bd")" 2>/dev/null
	# A killed VM leaves the guest's address where it was.
	if [ "$topo" = two ]; then
		in_ns src ip addr del "$GUEST_CIDR" dev "$NET_DEV" 2>/dev/null
		in_ns dst ip addr del "$GUEST_CIDR" dev "$NET_DEV" 2>/dev/null
	fi
	return 0
}

# B11_SECTIONS="3 4" runs some of the four sections (default all).
SECTIONS=${B11_SECTIONS:-1 2 3 4}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
touch "$T/handoff-steps.log"

if want 1; then
	echo "## 1. redis-benchmark -t set,get,incr -n $N (-P 16: $(nreq 16)) -c 50 through a migration ($RUNS runs each)"
	echo
	echo "| topology | pipeline | errors | reconnects | longest reply ms | downtime ms | INCR counter |"
	echo "| --- | --- | --- | --- | --- | --- | --- |"
	for topo in one two; do
		for pipe in 1 16; do
			read -r base _ <<<"$(one_bench "$topo" "$pipe" no)"
			errs=() recon=() lat=() down=() ctrs=()
			for _ in $(seq 1 "$RUNS"); do
				read -r acc e l c d <<<"$(one_bench "$topo" "$pipe" yes)"
				errs+=("$e") recon+=("$((acc - base))") lat+=("$l") down+=("$d") ctrs+=("$c")
			done
			echo "| $([ $topo = one ] && echo "one namespace" || echo "two hosts") | $pipe | ${errs[*]} | ${recon[*]} | ${lat[*]} | ${down[*]} | ${ctrs[*]} (of $(nreq "$pipe")) |"
		done
	done
fi
if want 2; then
	echo
	echo "## 2. The guest as a client of redis-server (INCR at 200/s, 1000 in all)"
	echo
	rport=$(free_port)
	redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$T/redis.log" 2>&1 &
	PIDS+=($!)
	sleep 0.5
	echo "| run | id before | id after | age before s | age after s | server counter | guest answered | errors |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
	cl() { redis-cli -p "$rport" CLIENT LIST | grep 'cmd=incr'; }
	for r in $(seq 1 "$RUNS"); do
		redis-cli -p "$rport" DEL ferry:counter >/dev/null
		mport=$(free_port)
		start_vm cs --memory 64M --workload kv --connect "tcp:127.0.0.1:$rport" --connect-rate 200 --connect-count 1000
		start_vm cd --memory 64M --incoming "tcp:127.0.0.1:$mport"
		sleep 2
		before=$(cl)
		"$FERRY" migrate "$T/cs.sock" "tcp:127.0.0.1:$mport" --json >"$T/c.json" 2>>"$T/m.log"
		sleep 1.5
		after=$(cl)
		for _ in $(seq 1 100); do [ "$(net cd '["client"]["answered"]')" = 1000 ] && break; sleep 0.1; done
		id() { sed 's/^id=\([0-9]*\) .*/\1/'; }
		age() { sed 's/.* age=\([0-9]*\) .*/\1/'; }
		echo "| $r | $(id <<<"$before") | $(id <<<"$after") | $(age <<<"$before") | $(age <<<"$after") | $(redis-cli -p "$rport" GET ferry:counter) | $(net cd '["client"]["answered"]') | $(net cd '["client"]["errors"]') |"
		kill "$PID_cs" "$PID_cd"
		wait "$PID_cs" "$PID_cd" 2>/dev/null
	done
fi
if want 3; then
	echo
	echo "## 3. Downtime against open connections and queued bytes (one namespace, idle guest otherwise)"
	echo
	echo "| case | downtime ms (each run) | state_ms | switchover_ms | handed |"
	echo "| --- | --- | --- | --- | --- |"
	hold() { # hold PORT N [QUEUE_BYTES]: N idle connections, or one that sends Q bytes unread
		python3 - "$@" <<'PY' &
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
q = int(sys.argv[3]) if len(sys.argv) > 3 else 0
ss = [socket.create_connection(("127.0.0.1", port)) for _ in range(n - (1 if q else 0))]
if q:
    # GETs of a 1000-byte value whose replies it never reads (a small
    # receive buffer, set before connect): the guest stops reading once
    # its replies cannot go out, and the rest waits in the queues.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    ss.append(s)
    s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\n" + b"x" * 1000 + b"\r\n")
    s.setblocking(False)
    cmd = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    data = cmd * (q // len(cmd) + 1)
    sent, end = 0, time.time() + 10
    while sent < q and time.time() < end:
        try:
            sent += s.send(data[sent:sent + 65536])
        except BlockingIOError:
            time.sleep(0.01)
    print("sent", sent, flush=True)
print("ready", flush=True)
time.sleep(600)
PY
		HOLD=$!
	}
	cases=()
	for c in ${B11_CASES:-1 100 1000 1q}; do
		if [ "$c" = 1q ]; then cases+=("1 16777216"); else cases+=("$c"); fi
	done
	for c in "${cases[@]}"; do
		downs=() sm=() sw=() hd=()
		for _ in $(seq 1 "$RUNS"); do
			port=$(free_port) mport=$(free_port)
			start_vm hs --memory 128M --workload kv --listen "tcp:127.0.0.1:$port"
			# The destination as it starts by default: a socket made
			# ahead for each of its 1,040 slots.
			start_vm hd --memory 128M --incoming "tcp:127.0.0.1:$mport" --listen "tcp:127.0.0.1:$port"
			hold "$port" $c >"$T/hold.out"
			# Every connection open (under load, 1,000 take seconds), then
			# a moment for the guest to accept the last ones.
			for _ in $(seq 1 600); do grep -q ready "$T/hold.out" && break; sleep 0.1; done
			sleep 1
			"$FERRY" migrate "$T/hs.sock" "tcp:127.0.0.1:$mport" --json >"$T/h.json" 2>>"$T/m.log"
			grep -h 'net:.*connections' "$T/hs.log" "$T/hd.log" >>"$T/handoff-steps.log"
			downs+=("$(rep h 'd["downtime_ms"]')") sm+=("$(rep h 'd["state_ms"]')") sw+=("$(rep h 'd["switchover_ms"]')") hd+=("$(rep h 'd["net"]["handed"]')")
			kill "$HOLD" "$PID_hs" "$PID_hd" 2>/dev/null
			wait "$HOLD" "$PID_hs" "$PID_hd" 2>/dev/null
		done
		read -r n q <<<"$c"
		echo "| $n connection(s)${q:+, one sent $(awk '/sent/ { printf "%.1f", $2 / 1048576 }' "$T/hold.out") MiB of GETs, replies unread} | ${downs[*]} | ${sm[*]} | ${sw[*]} | ${hd[*]} |"
	done
fi
if want 4; then
	echo
	echo "## 4. A live update: redis-benchmark -t set,get,incr -n $N (-P 16: $(nreq 16)) -c 50 while a new ferry-vm takes a $LOCAL_SIZE memfd kv guest over (--local, one namespace; $RUNS runs each)"
	echo
	echo "| pipeline | errors | reconnects | longest reply ms | downtime ms (connections handed and how, bytes sent) | INCR counter |"
	echo "| --- | --- | --- | --- | --- | --- |"
	for pipe in 1 16; do
		read -r base _ <<<"$(one_bench local "$pipe" no)"
		errs=() recon=() lat=() down=() ctrs=()
		for _ in $(seq 1 "$RUNS"); do
			read -r acc e l c d <<<"$(one_bench local "$pipe" yes)"
			errs+=("$e") recon+=("$((acc - base))") lat+=("$l") down+=("$d") ctrs+=("$c")
		done
		echo "| $pipe | ${errs[*]} | ${recon[*]} | ${lat[*]} | ${down[*]} | ${ctrs[*]} (of $(nreq "$pipe")) |"
	done
fi
echo
echo "The handoff's steps as ferry-vm logged them (section 3, in order):"
echo
sed 's/^/    /' "$T/handoff-steps.log"
echo
echo "raw reports and logs: $T"
