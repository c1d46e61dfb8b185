#!/usr/bin/env bash
# A guest that dirties memory faster than a capped link carries it: without
# auto-converge precopy never fits the downtime limit and gives up (the
# source runs on); with it the vCPUs are throttled step by step until the
# migration converges, the throttle is lifted afterwards, and the cap holds.
. "$(dirname "$0")/lib.sh"
CAP=40 # MB/s, against a guest dirtying 200 MB/s
port=$(free_port)
start_vm dst --memory 32M --workload random --incoming "tcp:127.0.0.1:$port"
start_vm src --memory 32M --workload random --dirty-rate 200
uri="tcp:127.0.0.1:$port"
common=(--max-bandwidth "$CAP" --downtime-ms 50 --json)

# 1. Auto-converge throttles, but three passes are not enough: the failure
#    must leave the guest running at full speed again.
"$FERRY" migrate "$T/src.sock" "$uri" "${common[@]}" --max-passes 3 \
	>"$T/m1.json" 2>"$T/m1.log" && fail "converged in 3 passes at $CAP MB/s: $(tail -n1 "$T/m1.json")"
[ "$(json_field "$T/m1.json" 'd["status"]')" = '"failed"' ] || fail "run 1: $(tail -n1 "$T/m1.json")"
[ "$(json_field "$T/m1.json" 'd["throttle_peak_pct"] >= 20')" = true ] ||
	fail "run 1 never throttled: $(tail -n1 "$T/m1.json")"
[ "$(status_field src 'd["guest"]["throttle_pct"]')" = 0 ] || fail "throttle not lifted after failure"
source_intact src

# 2. Without auto-converge it does not converge at all.
"$FERRY" migrate "$T/src.sock" "$uri" "${common[@]}" --max-passes 5 --no-auto-converge \
	>"$T/m2.json" 2>"$T/m2.log" && fail "converged without auto-converge: $(tail -n1 "$T/m2.json")"
grep -q "did not converge" "$T/m2.json" || fail "run 2: $(tail -n1 "$T/m2.json")"
[ "$(json_field "$T/m2.json" 'd["throttle_peak_pct"]')" = 0 ] || fail "run 2 throttled anyway"
source_intact src

# 3. With it, the migration completes and verifies within the cap.
"$FERRY" migrate "$T/src.sock" "$uri" "${common[@]}" >"$T/m3.json" 2>"$T/m3.log" ||
	fail "auto-converge did not converge: $(tail -n1 "$T/m3.json")"
[ "$(json_field "$T/m3.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/m3.json")"
[ "$(json_field "$T/m3.json" 'd["throttle_peak_pct"] >= 20')" = true ] || fail "no throttle: $(tail -n1 "$T/m3.json")"
grep -q "throttled to" "$T/m3.log" || fail "no throttle progress line"
[ "$(json_field "$T/m3.json" "d['wire_bytes'] / d['total_ms'] / 1e3 <= $CAP * 1.1")" = true ] ||
	fail "the link cap was exceeded: $(tail -n1 "$T/m3.json")"
pass "auto-converge: $(json_field "$T/m3.json" '[d["throttle_peak_pct"], d["passes"], d["downtime_ms"], d["total_ms"]]') (peak %, passes, downtime ms, total ms)"
