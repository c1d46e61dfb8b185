#!/usr/bin/env bash
# Postcopy between two ferry-vm processes on a BACKING (anon, memfd,
# hugetlb): the destination runs the guest after one precopy pass and its
# memory follows on demand and in the background; the migration completes
# and verifies, and both sides say it was postcopy and that the
# destination owns the guest.
#   1. --postcopy-after-passes 1 on a busy guest.
#   2. `ferry postcopy SRC` switches a running precopy that cannot
#      converge (a 1 ms downtime limit, a 20 MB/s cap) in its second pass.
. "$(dirname "$0")/lib.sh"
backing=${1:?backing: anon, memfd or hugetlb}
"$FERRY" migrate --help 2>&1 | grep -q -- '--postcopy' ||
	{ echo "skip: this ferry migrate has no --postcopy (the postcopy engine and CLI are not in this build)"; exit 77; }
[ "$(id -u)" = 0 ] || { echo "skip: postcopy needs userfaultfd to serve faults taken in the kernel too, which needs root (or /dev/userfaultfd access) here"; exit 77; }
if [ "$backing" = hugetlb ]; then
	"$FERRY_VM" --memory 4M --memory-backend hugetlb --self-test >/dev/null 2>&1 ||
		{ echo "skip: no hugetlb pages can be had on this host (the pool cannot be grown)"; exit 77; }
fi
export FERRY_VM_LOG=2
vm=(--memory 128M --memory-backend "$backing")

# state_is NAME STATE: NAME's migration.state is STATE
state_is() { [ "$(status_field "$1" 'd["migration"]["state"]')" = "\"$2\"" ]; }
# st EXPR: a field of the status saved in $ST
st() { json_field "$ST" "$1"; }

# check_both TAG MIGRATION_JSON SRC DST: the report says completed, postcopy,
# verified, owner destination; each side's status agrees; the destination
# guest runs and found no bad page.
check_both() {
	local tag=$1 m=$2
	[ "$(json_field "$m" 'd["status"]')" = '"completed"' ] || fail "$tag: status: $(tail -n1 "$m")"
	[ "$(json_field "$m" 'd["postcopy"]')" = true ] || fail "$tag: not postcopy: $(tail -n1 "$m")"
	[ "$(json_field "$m" 'd["owner"]')" = '"destination"' ] || fail "$tag: owner: $(tail -n1 "$m")"
	[ "$(json_field "$m" 'd["verified"]')" = true ] || fail "$tag: not verified: $(tail -n1 "$m")"
	[ "$(status_field "$3" 'd["migration"]["state"]')" = '"completed"' ] ||
		fail "$tag: source state: $(status_field "$3" 'd["migration"]')"
	[ "$(status_field "$3" 'd["migration"]["owner"]')" = '"destination"' ] ||
		fail "$tag: source owner: $(status_field "$3" 'd["migration"]')"
	[ "$(guest_state "$3")" = migrated ] || fail "$tag: source guest: $(guest_state "$3")"
	wait_until 10 state_is "$4" completed || fail "$tag: destination state: $(status_field "$4" 'd["migration"]')"
	"$FERRY" status "$T/$4.sock" --json >"$T/$4.st.json"
	ST=$T/$4.st.json
	[ "$(st 'd["migration"]["owner"]')" = '"destination"' ] ||
		fail "$tag: destination owner: $(cat "$ST")"
	[ "$(st 'd["migration"]["postcopy"]')" = true ] || fail "$tag: destination: not postcopy: $(cat "$ST")"
	[ "$(st 'd["migration"]["pages_missing"]')" = 0 ] ||
		fail "$tag: destination pages_missing: $(cat "$ST")"
	[ "$(st 'd["migration"]["postcopy_ms"] > 0')" = true ] ||
		fail "$tag: destination postcopy_ms: $(cat "$ST")"
	[ "$(st 'd["migration"]["faults"] >= 0 and (d["migration"]["faults"] == 0 or d["migration"]["fault_p50_us"] <= d["migration"]["fault_p99_us"] <= d["migration"]["fault_max_us"]))')" = true ] ||
		fail "$tag: destination fault figures: $(cat "$ST")"
	guest_runs "$4" || fail "$tag: destination guest does not run"
	[ "$(status_field "$4" 'd["guest"]["check_errors"]')" = 0 ] || fail "$tag: destination guest found bad pages"
}

# 1. After one pass.
port=$(free_port)
start_vm dst "${vm[@]}" --incoming "tcp:127.0.0.1:$port"
start_vm src "${vm[@]}" --workload random --dirty-rate 100
"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --postcopy-after-passes 1 \
	--json >"$T/m1.json" 2>"$T/m1.log" || fail "postcopy after one pass failed: $(tail -n1 "$T/m1.json")"
[ "$(json_field "$T/m1.json" 'd["passes"]')" = 1 ] || fail "passes before the switch: $(tail -n1 "$T/m1.json")"
check_both "after 1 pass" "$T/m1.json" src dst
pass "$backing: postcopy after 1 pass: $(json_field "$T/m1.json" '{k: d.get(k) for k in ("total_ms", "postcopy_ms", "pages_requested", "pages_pushed")}')"

# 2. Switched by hand. A precopy that cannot converge (1 ms) and whose
# passes last seconds (20 MB/s) is in its second pass when it is told. No
# postcopy mode, so the session needs a data connection for the pushes
# (--connections 2); with one it refuses and says so.
"$FERRY" postcopy "$T/dst.sock" >"$T/p0.log" 2>&1 && fail "ferry postcopy accepted on a VM that runs no migration"
port2=$(free_port)
start_vm dst2 "${vm[@]}" --incoming "tcp:127.0.0.1:$port2"
start_vm src2 "${vm[@]}" --workload random --dirty-rate 50
"$FERRY" migrate "$T/src2.sock" "tcp:127.0.0.1:$port2" --downtime-ms 1 --max-passes 100000 \
	--max-bandwidth 20 --connections 2 --json >"$T/m2.json" 2>"$T/m2.log" &
MIG=$!
wait_until 30 in_second_pass src2 || fail "migration never reached its second pass"
"$FERRY" postcopy "$T/src2.sock" >"$T/p1.log" 2>&1 || fail "ferry postcopy refused: $(cat "$T/p1.log")"
wait $MIG || fail "migration switched by ferry postcopy failed: $(tail -n1 "$T/m2.json")"
[ "$(json_field "$T/m2.json" 'd["passes"] >= 2')" = true ] || fail "passes: $(tail -n1 "$T/m2.json")"
check_both "ferry postcopy" "$T/m2.json" src2 dst2
pass "$backing: ferry postcopy switched a running precopy: $(json_field "$T/m2.json" '{k: d.get(k) for k in ("total_ms", "passes", "postcopy_ms", "pages_requested", "pages_pushed")}')"
