# Shared helpers for the integration tests: real ferry-vm processes, real
# sockets, driven through the ferry command line like a user would.
# Each test sources this with FERRY and FERRY_VM set by Meson.
set -uo pipefail
# Run with standard input closed, not /dev/null: the first descriptor a
# program opens is then 0, and closing 0 by mistake (a zeroed fd field)
# breaks something a test sees.
exec 0<&-

: "${FERRY:?}" "${FERRY_VM:?}"
T=$(mktemp -d /tmp/ferry-it.XXXXXX)
PIDS=()

# The tests start python3 hundreds of times (every JSON field they read).
# When python3 on PATH is a wrapper such as a pyenv shim, each start costs
# about a second of the wrapper's own work; a link to the interpreter it
# runs, first on PATH, makes every later start (in this shell and in any
# program it runs) take the interpreter's own 0.1 s.
if py=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) && [ -x "$py" ]; then
	mkdir "$T/bin" && ln -s "$py" "$T/bin/python3" && PATH="$T/bin:$PATH"
fi
unset py

cleanup() {
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	wait 2>/dev/null
	if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	for f in "$T"/*.log; do
		[ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; } >&2
	done
	exit 1
}

pass() { echo "ok: $*"; }

# A free loopback TCP port.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_vm_nowait NAME ARGS... : start ferry-vm with an API socket
# $T/NAME.sock and wait until the socket answers (the guest may still be
# initializing); its first status is kept in $T/NAME.first.json
start_vm_nowait() {
	local name=$1; shift
	"$FERRY_VM" --api-socket "$T/$name.sock" "$@" <&- >"$T/$name.log" 2>&1 &
	PIDS+=($!)
	eval "PID_$name=$!"
	for _ in $(seq 1 200); do
		"$FERRY" status "$T/$name.sock" --json >"$T/$name.first.json" 2>/dev/null && return 0
		kill -0 "$!" 2>/dev/null || fail "$name exited at start"
		sleep 0.05
	done
	fail "$name did not answer on its API socket"
}

# guest_state NAME : the guest's state ("running", "initializing", ...)
guest_state() { status_field "$1" 'd["guest"]["state"]' | tr -d '"'; }

# start_vm NAME ARGS... : start ferry-vm and wait until its guest is ready:
# running, or on a destination listening for its guest ("incoming")
start_vm() {
	local name=$1 pid st
	start_vm_nowait "$@"
	pid=$(eval echo "\$PID_$name")
	for _ in $(seq 1 600); do
		st=$(guest_state "$name")
		case $st in
		initializing) ;;
		failed) fail "$name failed to initialize: $(status_field "$name" 'd["guest"]["error"]')" ;;
		?*) return 0 ;;
		esac
		kill -0 "$pid" 2>/dev/null || fail "$name exited while initializing"
		sleep 0.05
	done
	fail "$name did not finish initializing"
}

# status_field NAME EXPR : a field of the VM's status, via python's json
status_field() {
	"$FERRY" status "$T/$1.sock" --json 2>/dev/null |
		python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps($2))"
}

# json_field FILE EXPR : a field of the last JSON line of FILE
json_field() {
	tail -n 1 "$1" | python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps($2))"
}

# wait_until SECONDS CMD... : poll until CMD succeeds
wait_until() {
	local limit=$1; shift
	local end=$(( $(date +%s) + limit ))
	while [ "$(date +%s)" -le "$end" ]; do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}

# Guest progress (total steps), to show a guest really runs.
steps() { status_field "$1" 'd["guest"]["steps"]'; }

# guest_runs NAME : its step counter moves within a second (read every
# 0.05 s: a running guest shows it at the first or second read)
guest_runs() {
	local a b end
	a=$(steps "$1")
	[ -n "$a" ] || return 1
	end=$(( $(date +%s%N) + 1000000000 ))
	while :; do
		sleep 0.05
		b=$(steps "$1")
		[ -n "$b" ] && [ "$b" -gt "$a" ] && return 0
		[ "$(date +%s%N)" -lt "$end" ] || return 1
	done
}

# migrate_in_background SRC URI [OPTIONS...]: start a migration that will
# not converge on its own (1 ms limit, endless passes) and wait until its
# second pass, so a test can break it in the middle. Sets $MIG to the
# ferry pid.
migrate_in_background() {
	local src=$1 uri=$2
	shift 2
	"$FERRY" migrate "$T/$src.sock" "$uri" --downtime-ms 1 \
		--max-passes 100000 --json "$@" >"$T/m1.json" 2>"$T/m1.log" &
	MIG=$!
	wait_until 20 in_second_pass "$src" || fail "migration never reached its second pass"
}

in_second_pass() {
	[ "$(status_field "$1" 'd["migration"]["state"] == "precopy" and d["migration"]["pass"] >= 2')" = true ]
}

# stopped_at NAME MOMENT: NAME's FERRY_VM_FAULT hook at:MOMENT:stop fired
# (vm/fault.c) and NAME is stopped (T in /proc).
stopped_at() {
	local pid st
	pid=$(eval echo "\$PID_$1")
	grep -q "fault: at $2: stop" "$T/$1.log" || return 1
	st=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	st=${st##*) }
	[ "${st%% *}" = T ]
}

# The source's guest runs and found no bad page.
source_intact() {
	guest_runs "$1" || fail "$1 guest does not run"
	[ "$(status_field "$1" 'd["guest"]["check_errors"]')" = 0 ] || fail "$1 guest found bad pages"
}
