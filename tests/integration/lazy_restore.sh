#!/usr/bin/env bash
# ferry-vm --incoming file:PATH --lazy on a BACKING (anon, memfd, hugetlb):
# the guest runs while its memory is placed on demand through userfaultfd,
# is verified against the file's image digest once every page is in, and
# the status shows how long it waited for pages. With "damaged", a data
# slot of the file is flipped: the guest stops for good with an error
# naming the page and does not run on.
. "$(dirname "$0")/lib.sh"
backing=${1:?backing: anon, memfd, hugetlb or damaged}
[ "$(id -u)" = 0 ] || { echo "skip: a lazy restore needs userfaultfd to serve faults taken in the kernel too, which needs root (or /dev/userfaultfd access) here"; exit 77; }
mem=64M
be=$backing
[ "$backing" = damaged ] && be=anon
if [ "$be" = hugetlb ]; then
	"$FERRY_VM" --memory 4M --memory-backend hugetlb --self-test >/dev/null 2>&1 ||
		{ echo "skip: no hugetlb pages can be had on this host"; exit 77; }
fi

snap="$T/guest.snap"
start_vm src --memory "$mem" --memory-backend "$be" --workload random --dirty-rate 20
"$FERRY" snapshot "$T/src.sock" "$snap" --json >"$T/s.json" 2>"$T/s.log" ||
	fail "snapshot failed: $(tail -n1 "$T/s.json")"
digest=$(json_field "$T/s.json" 'd["image_digest"]')

if [ "$backing" = damaged ]; then
	# Page 8192 of 16384 sits in its slot at 2 MiB + 8192 * 4096; the
	# random workload gave every page data.
	printf '\x5a' | dd of="$snap" bs=1 seek=$(( (2 << 20) + 8192 * 4096 + 100 )) \
		conv=notrunc status=none
	# The background fill can reach the page before start_vm sees the
	# guest run, and start_vm fails on a failed guest: wait for that here.
	start_vm_nowait dst --incoming "file:$snap" --lazy
	wait_until 30 sh -c "[ \"\$($FERRY status $T/dst.sock --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"guest\"][\"state\"])')\" = failed ]" ||
		fail "damaged page did not stop the guest: $("$FERRY" status "$T/dst.sock" --json)"
	err=$(status_field dst 'd["guest"]["error"]')
	grep -qi "page" <<<"$err" || fail "the error names no page: $err"
	grep -q "8192\|0x2000000\|2000000" <<<"$err" || fail "the error does not name page 8192: $err"
	[ "$(status_field dst 'd["migration"]["state"]')" = '"failed"' ] ||
		fail "migration not failed: $(status_field dst 'd["migration"]')"
	[ "$(status_field dst 'd["verified"]')" != true ] || fail "a damaged restore verified"
	guest_runs dst && fail "the guest runs on after a damaged page"
	kill -0 "$PID_dst" || fail "ferry-vm exited instead of keeping the stopped guest"
	# A vCPU blocked on the page for good must not hang the exit.
	python3 - "$T/dst.sock" <<'PY' || fail "quit refused"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(5)
f = s.makefile("rb")
f.readline()
s.sendall(b'{"execute":"quit"}\n')
assert b"return" in f.readline()
PY
	wait_until 10 sh -c "! kill -0 $PID_dst 2>/dev/null" || fail "ferry-vm hangs at exit"
	pass "damaged slot stopped the guest: $err; it exits when told"
	exit 0
fi

start_vm dst --incoming "file:$snap" --lazy
# While pages still arrive there is no source to go back to: a cancel is
# refused (unless every page is in already, when nothing runs to cancel).
# Only once the guest runs: before, the restore can still be cancelled.
wait_until 10 guest_runs dst || fail "the lazily restored guest does not run"
out=$("$FERRY" cancel "$T/dst.sock" 2>&1) && fail "cancel accepted during a lazy restore: $out"
grep -q "cancelling would stop it for good\|no migration is running" <<<"$out" || fail "cancel: $out"
wait_until 30 sh -c "[ \"\$($FERRY status $T/dst.sock --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"verified\"])')\" = True ]" ||
	fail "lazily restored guest not verified: $("$FERRY" status "$T/dst.sock" --json)"
"$FERRY" status "$T/dst.sock" --json >"$T/st.json"
check() { [ "$(json_field "$T/st.json" "$1")" = true ] || fail "$2: $(cat "$T/st.json")"; }
check 'd["migration"]["lazy_pages"] == 16384 and d["migration"]["lazy_placed"] == 16384' "pages placed"
check 'd["migration"]["page_faults"] >= 1' "no page fault counted"
check 'd["migration"]["page_wait_p50_ms"] is not None and d["migration"]["page_wait_p50_ms"] <= d["migration"]["page_wait_p99_ms"] <= d["migration"]["page_wait_max_ms"]' "page waits"
check 'd["migration"]["lazy_complete_ms"] > 0' "lazy_complete_ms"
check 'd["migration"]["image_digest"] == '"$digest" "image digest"
check 'd["guest"]["populated_pct"] == 100' "populated_pct"
"$FERRY" status "$T/dst.sock" >"$T/st.txt"
grep -q "lazy restore  16384 of 16384 pages placed, .* page wait p50 .* ms, p99 .* ms, max .* ms, all in after" "$T/st.txt" ||
	fail "ferry status shows no page waits: $(cat "$T/st.txt")"
guest_runs dst || fail "lazily restored guest does not run"
[ "$(status_field dst 'd["guest"]["check_errors"]')" = 0 ] || fail "the restored guest found bad pages"
pass "$be: lazy restore verified; $(grep 'lazy restore' "$T/st.txt")"
