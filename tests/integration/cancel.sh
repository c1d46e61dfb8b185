#!/usr/bin/env bash
# Cancel in the middle, over one connection and over four: the source
# keeps running and still verifies (it migrates successfully afterwards to
# the same destination). Each cancelled migration cannot converge (1 ms
# limit, endless passes: migrate_in_background) and is cancelled in its
# second pass, so a neighbour's load cannot make it end first.
. "$(dirname "$0")/lib.sh"
port=$(free_port)
start_vm dst --memory 256M --workload random --incoming "tcp:127.0.0.1:$port"
start_vm src --memory 256M --workload random --dirty-rate 400
for conns in 1 4; do
	migrate_in_background src "tcp:127.0.0.1:$port" --connections "$conns"
	"$FERRY" cancel "$T/src.sock" || fail "cancel command failed ($conns connections)"
	wait $MIG && fail "ferry migrate exited 0 after cancel ($conns connections)"
	[ "$(json_field "$T/m1.json" 'd["status"]')" = '"cancelled"' ] ||
		fail "report ($conns connections): $(tail -n1 "$T/m1.json")"
	source_intact src
done
# The destination went back to listening; the real migration now works.
# A guest writing 400 MB/s may not converge in 30 passes while a
# neighbour's load slows the link: the passes' limit then switches over
# (the migration completes, paused longer) instead of cancelling.
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --timeout-strategy switchover --json \
	>"$T/m2.json" 2>"$T/m2.log" ||
	fail "second migration failed: $(tail -n1 "$T/m2.json")"
[ "$(json_field "$T/m2.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m2.json")"
pass "cancelled, source ran on, then migrated: $(tail -n1 "$T/m2.json")"
