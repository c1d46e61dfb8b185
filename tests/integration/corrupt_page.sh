#!/usr/bin/env bash
# A destination that damages one byte of one page right after loading the
# state (FERRY_VM_FAULT=corrupt-page) must fail verification whatever the
# workload, idle included (which writes nothing a lost dirty log could
# lose), both with the default background check and with --verify strict.
. "$(dirname "$0")/lib.sh"
for w in idle ab random fill text; do
	for mode in background strict; do
		[ "$mode" = strict ] && [ "$w" != idle ] && [ "$w" != random ] && continue
		name=$w$mode
		port=$(free_port)
		FERRY_VM_FAULT=corrupt-page start_vm "d$name" --memory 64M --workload "$w" \
			--verify "$mode" --incoming "tcp:127.0.0.1:$port"
		start_vm "s$name" --memory 64M --workload "$w" --verify "$mode"
		out="$T/$name.json"
		"$FERRY" migrate "$T/s$name.sock" "tcp:127.0.0.1:$port" --json \
			>"$out" 2>"$T/$name.log"
		method=background
		[ "$mode" = strict ] && method=in-pause
		got=$(json_field "$out" '[d["status"], d["verified"], d["verify"]["method"]]')
		[ "$got" = "[\"completed\", false, \"$method\"]" ] ||
			fail "$w $mode: a corrupted page was not reported: $(tail -n1 "$out")"
		pass "$w $mode: corrupted page detected"
		# Idle VMs left running would slow the next cases down.
		eval "kill -9 \$PID_d$name \$PID_s$name" 2>/dev/null
	done
done
