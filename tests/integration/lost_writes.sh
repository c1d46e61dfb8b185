#!/usr/bin/env bash
# Verification must be able to fail: with a VMM dirty log that loses every
# write (a test hook), the default (background) verification catches it
# for every workload that writes during the migration (ab, random, and a
# fill still running, paced by --dirty-rate), and the report says
# verified=false. The same guests verify with the honest dirty log, so the
# check is not failing for another reason.
. "$(dirname "$0")/lib.sh"

# case_run NAME VERIFIED SRC-ENV WORKLOAD SRC-ARGS... : migrate with the
# source's dirty log and expect the report's verdict VERIFIED.
case_run() {
	local name=$1 want=$2 env=$3 w=$4; shift 4
	local port src got; port=$(free_port)
	start_vm "d$name" --memory 128M --workload "$w" --incoming "tcp:127.0.0.1:$port"
	env $env "$FERRY_VM" --api-socket "$T/s$name.sock" --memory 128M \
		--workload "$w" "$@" >"$T/s$name.log" 2>&1 &
	src=$!
	PIDS+=($src)
	wait_until 10 "$FERRY" status "$T/s$name.sock" --json >/dev/null 2>&1 ||
		fail "source $name did not answer"
	# A fill must still be running when the migration starts.
	if [ "$w" = fill ]; then
		"$FERRY" status "$T/s$name.sock" --json | grep -q '"settled": *false' ||
			fail "$name: the fill ended before the migration started"
	fi
	"$FERRY" migrate "$T/s$name.sock" "tcp:127.0.0.1:$port" --dirty-mode bitmap \
		--json >"$T/$name.json" 2>"$T/$name.log"
	got=$(json_field "$T/$name.json" '[d["status"], d["verified"], d["verify"]["method"]]')
	[ "$got" = "[\"completed\", $want, \"background\"]" ] ||
		fail "$name: expected verified=$want: $(tail -n1 "$T/$name.json")"
	# Idle VMs left running would slow the next cases down.
	eval "kill -9 $src \$PID_d$name" 2>/dev/null
}

for w in ab random fill; do
	# 10 MB/s fills 128M in 13 s: the fill still runs during the migration.
	rate=200
	[ "$w" = fill ] && rate=10
	case_run "lost$w" false FERRY_VM_FAULT=lose-writes "$w" --dirty-rate "$rate"
	pass "$w: lost writes detected"
	case_run "ok$w" true "" "$w" --dirty-rate "$rate"
	pass "$w: the honest dirty log verifies"
done
