#!/usr/bin/env bash
# Postcopy under TLS (x509, mutual): the return path, the data connections
# and the recovery connection are all TLS. A 64 MiB guest writing 50 MB/s
# over a 20 MB/s cap switches to postcopy after one pass (2 connections);
# the kernel then destroys every connection (ss -K), both sides pause, and
# `ferry recover` + `ferry migrate --resume` complete it over new TLS
# connections: verified, one recovery, and the destination's log shows
# the handshakes of the recovery. The cut does not race the end of
# postcopy: the source stops itself while its postcopy phase pushes pages
# (FERRY_VM_FAULT=at:pushing:stop, vm/fault.c), is cut while frozen, then
# goes on (the destination's stall limit, a minute, outlasts the freeze).
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integration/postcopy_lib.sh
. "$(dirname "$0")/postcopy_lib.sh"
skip_unless_postcopy
command -v ss >/dev/null || { echo "skip: ss (iproute2) is not installed"; exit 77; }
export FERRY_VM_LOG=3
"$FERRY" tls-certs "$T/pki" >/dev/null || fail "tls-certs"
tls=(--tls-creds "$T/pki")

port=$(listen_port)
start_vm dst --memory 64M --incoming "tcp:127.0.0.1:$port" --stall-timeout-ms 60000 "${tls[@]}"
FERRY_VM_FAULT=at:pushing:stop start_vm src --memory 64M --workload random --dirty-rate 50 "${tls[@]}"
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --postcopy-after-passes 1 \
	--max-bandwidth 20 --connections 2 --json >"$T/m.json" 2>"$T/m.log" &
MIG=$!
# The source is frozen once its hook fired and it shows stopped (T).
wait_until 60 stopped_at src pushing || fail "the source never stopped while pushing in postcopy: $(grep 'fault:' "$T/src.log"; status_field src 'd["migration"]')"
# Nothing slow while the source is frozen: the ferry migrate following it
# gives up on a ferry-vm silent for 11 s.
wait_until 10 state_is dst postcopy ||
	{ kill -CONT "$PID_src"; fail "destination never in postcopy: $(status_field dst 'd["migration"]')"; }
ss -K -tn "( sport = :$port or dport = :$port )" >"$T/ss.log" 2>&1
kill -CONT "$PID_src"
grep -q ESTAB "$T/ss.log" || fail "ss -K destroyed no connection: $(cat "$T/ss.log")"
before=$(grep -c "TLS: TLS1.3" "$T/dst.log")
[ "$before" -ge 2 ] || fail "$before TLS handshakes before the cut, expected 2"
wait_until 20 state_is src postcopy-paused || fail "source not paused: $(status_field src 'd["migration"]')"
wait_until 20 state_is dst postcopy-paused || fail "destination not paused: $(status_field dst 'd["migration"]')"
status_is dst "the destination after the cut" 'm["pages_missing"] > 0' 'd["guest"]["state"] == "running"'
wait "$MIG"
rport=$(listen_port)
"$FERRY" recover "$T/dst.sock" "tcp:127.0.0.1:$rport" >"$T/rec.log" 2>&1 ||
	fail "ferry recover refused: $(cat "$T/rec.log")"
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$rport" --resume --json >"$T/r.json" 2>"$T/r.log" ||
	fail "resume failed: $(tail -n1 "$T/r.json")"
assert_json "$T/r.json" "report" 'd["status"] == "completed"' 'd["verified"] is True' \
	'd["postcopy"] is True' 'd["recoveries"] == 1'
wait_until 20 state_is dst completed || fail "destination: $(status_field dst 'd["migration"]')"
after=$(grep -c "TLS: TLS1.3" "$T/dst.log")
[ "$after" -ge $((before + 2)) ] || fail "$after TLS handshakes after the recovery (before: $before), expected 2 more"
guest_runs dst || fail "destination guest does not run"
pass "postcopy over TLS, cut and recovered: $((after - before)) new handshakes; $(json_field "$T/r.json" '{k: d.get(k) for k in ("status", "total_ms", "postcopy_ms", "pages_requested", "recoveries")}')"
