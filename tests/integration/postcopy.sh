#!/usr/bin/env bash
# Postcopy between two ferry-vm processes on a BACKING (anon, memfd,
# hugetlb): the destination runs the guest after one precopy pass and its
# memory follows on demand and in the background; the migration completes
# and verifies, and both sides say it was postcopy and that the
# destination owns the guest.
#   1. --postcopy-after-passes 1 on a busy guest.
#   2. `ferry postcopy SRC` switches a running precopy that cannot
#      converge (a 1 ms downtime limit, a 20 MB/s cap, two connections)
#      in its second pass.
. "$(dirname "$0")/lib.sh"
backing=${1:?backing: anon, memfd or hugetlb}
# shellcheck source=tests/integration/postcopy_lib.sh
. "$(dirname "$0")/postcopy_lib.sh"
skip_unless_postcopy
if [ "$backing" = hugetlb ]; then
	"$FERRY_VM" --memory 4M --memory-backend hugetlb --self-test >/dev/null 2>&1 ||
		{ echo "skip: no hugetlb pages can be had on this host (the pool cannot be grown)"; exit 77; }
fi
export FERRY_VM_LOG=2
vm=(--memory 128M --memory-backend "$backing")

# check_both TAG MIGRATION_JSON SRC DST: the report says completed,
# postcopy, verified, owner destination; each side's status agrees (the
# destination's with every page in and its fault figures in order); the
# destination guest runs and found no bad page.
check_both() {
	local tag=$1 m=$2 src=$3 dst=$4
	assert_json "$m" "$tag: report" 'd["status"] == "completed"' 'd["postcopy"] is True' \
		'd["owner"] == "destination"' 'd["verified"] is True'
	status_is "$src" "$tag: source" 'm["state"] == "completed"' 'm["owner"] == "destination"' \
		'd["guest"]["state"] == "migrated"' 'm["postcopy"] is True'
	wait_until 20 state_is "$dst" completed || fail "$tag: destination: $(cat "$T/$dst.now.json")"
	status_is "$dst" "$tag: destination" 'm["owner"] == "destination"' 'm["postcopy"] is True' \
		'm["pages_missing"] == 0' 'm["postcopy_ms"] > 0' 'd["guest"]["check_errors"] == 0' \
		'm["faults"] == 0 or m["fault_p50_us"] <= m["fault_p99_us"] <= m["fault_max_us"]'
	guest_runs "$dst" || fail "$tag: destination guest does not run"
}

# 1. After one pass: the switch comes although the rest of pass 1 (a few
# MiB on loopback) would fit the default 300 ms downtime limit.
port=$(free_port)
start_vm dst "${vm[@]}" --incoming "tcp:127.0.0.1:$port"
start_vm src "${vm[@]}" --workload random --dirty-rate 100
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --postcopy-after-passes 1 \
	--json >"$T/m1.json" 2>"$T/m1.log" || fail "postcopy after one pass failed: $(tail -n1 "$T/m1.json")"
assert_json "$T/m1.json" "after 1 pass" 'd["passes"] == 1'
check_both "after 1 pass" "$T/m1.json" src dst
pass "$backing: postcopy after 1 pass: $(json_field "$T/m1.json" '{k: d.get(k) for k in ("total_ms", "postcopy_ms", "pages_requested", "pages_pushed")}')"

# 2. Switched by hand. A precopy that cannot converge (1 ms) and whose
# passes last seconds (64 MiB at 20 MB/s) is in its second pass when it is
# told. No
# postcopy mode, so the session needs a data connection for the pushes
# (--connections 2); with one it refuses and says so.
"$FERRY" postcopy "$T/dst.sock" >"$T/p0.log" 2>&1 && fail "ferry postcopy accepted on a VM that runs no migration"
port2=$(free_port)
vm=(--memory 64M --memory-backend "$backing")
start_vm dst2 "${vm[@]}" --incoming "tcp:127.0.0.1:$port2"
start_vm src2 "${vm[@]}" --workload random --dirty-rate 50
"$FERRY" migrate "$T/src2.sock" "tcp:127.0.0.1:$port2" --downtime-ms 1 --max-passes 100000 \
	--max-bandwidth 20 --connections 2 --json >"$T/m2.json" 2>"$T/m2.log" &
MIG=$!
wait_until 30 in_second_pass src2 || fail "migration never reached its second pass"
"$FERRY" postcopy "$T/src2.sock" >"$T/p1.log" 2>&1 || fail "ferry postcopy refused: $(cat "$T/p1.log")"
wait $MIG || fail "migration switched by ferry postcopy failed: $(tail -n1 "$T/m2.json")"
assert_json "$T/m2.json" "ferry postcopy" 'd["passes"] >= 2'
check_both "ferry postcopy" "$T/m2.json" src2 dst2
pass "$backing: ferry postcopy switched a running precopy: $(json_field "$T/m2.json" '{k: d.get(k) for k in ("total_ms", "passes", "postcopy_ms", "pages_requested", "pages_pushed")}')"
