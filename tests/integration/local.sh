#!/usr/bin/env bash
# Local migration by memory fds on BACKING (memfd or hugetlb): `ferry
# migrate --local` passes the guest RAM's memfd over the UNIX socket, the
# destination (ferry-vm --local, which neither populates nor reserves RAM of
# its own) maps the same pages and runs the guest, which verifies. Nothing
# of the memory crosses the socket (a few KiB of records), the pause is
# short, the source's RAM is unmapped afterwards (no memfd mapping left in
# its /proc/PID/maps, and it exits cleanly without touching it), and the
# destination can hand the guest on locally again (its RAM's fd is now the
# source's file).
. "$(dirname "$0")/lib.sh"
backing=${1:?backing: memfd or hugetlb}
if [ "$backing" = hugetlb ]; then
	"$FERRY_VM" --memory 4M --memory-backend hugetlb --self-test >/dev/null 2>&1 ||
		{ echo "skip: no hugetlb pages can be had on this host (the pool cannot be grown)"; exit 77; }
fi
mem=128M
start_vm dst --memory $mem --memory-backend "$backing" --local \
	--incoming "unix:$T/mig.sock"
start_vm src --memory $mem --memory-backend "$backing" --workload random \
	--dirty-rate 100
grep -q 'memfd:ferry-guest' "/proc/$PID_src/maps" || fail "the source has no memfd mapping to begin with"
"$FERRY" migrate "$T/src.sock" "unix:$T/mig.sock" --local --record-stream "$T/rec.ferry" \
	--json >"$T/m.json" 2>"$T/m.log" ||
	fail "local migration failed: $(tail -n1 "$T/m.json")"
r=$T/m.json
[ "$(json_field "$r" 'd["status"]')" = '"completed"' ] || fail "report: $(tail -n1 "$r")"
[ "$(json_field "$r" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$r")"
[ "$(json_field "$r" 'd["local_fds"]')" = true ] || fail "report does not say local_fds: $(tail -n1 "$r")"
[ "$(json_field "$r" 'd["passes"]')" = 0 ] || fail "memory passes ran: $(tail -n1 "$r")"
[ "$(json_field "$r" '"local-fds" in d["capabilities"]')" = true ] || fail "capability not negotiated"
# ~no bytes for memory: the records (HELLO ... RELEASED) and the state.
[ "$(json_field "$r" 'd["wire_bytes"] < 65536 and d["bytes"] < 65536')" = true ] ||
	fail "memory went over the wire: $(json_field "$r" '[d["wire_bytes"], d["bytes"]]')"
# A short pause: no final pass; generous for a loaded 2-core machine.
[ "$(json_field "$r" 'd["downtime_ms"] < 100')" = true ] ||
	fail "pause $(json_field "$r" 'd["downtime_ms"]') ms"
wait_until 10 guest_runs dst || fail "the destination's guest does not run"
[ "$(status_field dst 'd["guest"]["check_errors"]')" = 0 ] || fail "the destination's guest found bad pages"
# The source holds nothing of the guest's memory: the memfd mapping is
# gone (an inaccessible range keeps its place), its fd closed.
grep -q 'memfd:ferry-guest' "/proc/$PID_src/maps" && fail "the source still maps the guest's memfd"
ls -l "/proc/$PID_src/fd" | grep -q 'memfd:ferry-guest' && fail "the source still holds the memfd"
grep -q 'guest RAM unmapped' "$T/src.log" || fail "the source did not say it unmapped its RAM"
# The destination maps it, and holds one descriptor of it: its own
# placeholder was replaced by the source's file.
grep -q 'memfd:ferry-guest' "/proc/$PID_dst/maps" || fail "the destination does not map the memfd"
[ "$(ls -l "/proc/$PID_dst/fd" | grep -c 'memfd:ferry-guest')" = 1 ] ||
	fail "the destination holds $(ls -l "/proc/$PID_dst/fd" | grep -c 'memfd:ferry-guest') memfds"
# The recorded stream checks, and holds no memory: MEMORY_FDS, then STATE.
"$FERRY" inspect --check "$T/rec.ferry" >"$T/inspect.txt" 2>&1 || fail "inspect: $(tail -n 3 "$T/inspect.txt")"
grep -q 'MEMORY_FDS .* 1 file passed' "$T/inspect.txt" || fail "no MEMORY_FDS in the recording"
grep -q '^ok: .* 0 passes with 0 memory records.* ends in state running' "$T/inspect.txt" ||
	fail "recording: $(tail -n 1 "$T/inspect.txt")"
pass "$backing local migration: $(json_field "$r" '"downtime %.1f ms, %d wire bytes, verified %s" % (d["downtime_ms"], d["wire_bytes"], d["verified"])')"

# The source exits cleanly: nothing touches the unmapped range on the way.
kill -TERM "$PID_src"
wait "$PID_src"
rc=$?
[ "$rc" = 0 ] || fail "the source exited with $rc after the handover"

# Live update again: the destination hands the guest to a new process.
start_vm dst2 --memory $mem --memory-backend "$backing" --local \
	--incoming "unix:$T/mig2.sock"
"$FERRY" migrate "$T/dst.sock" "unix:$T/mig2.sock" --local --json >"$T/m2.json" 2>"$T/m2.log" ||
	fail "second local migration failed: $(tail -n1 "$T/m2.json")"
[ "$(json_field "$T/m2.json" 'd["verified"]')" = true ] || fail "second hop not verified: $(tail -n1 "$T/m2.json")"
wait_until 10 guest_runs dst2 || fail "the second destination's guest does not run"
grep -q 'memfd:ferry-guest' "/proc/$PID_dst/maps" && fail "the first destination still maps the memfd"
pass "second hop: $(json_field "$T/m2.json" '"downtime %.1f ms, %d wire bytes" % (d["downtime_ms"], d["wire_bytes"])')"
