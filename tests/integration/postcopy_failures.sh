#!/usr/bin/env bash
# Postcopy that goes wrong, with real processes (issue 20, "Failure and
# recovery"). A 64 MiB guest writing 50 MB/s migrates over a 20 MB/s cap
# with --postcopy-after-passes 1: its first pass takes about 3.5 s and its
# postcopy phase about 3 s on a quiet machine. The cuts do not race that:
# the source stops itself (FERRY_VM_FAULT=at:pushing:stop, vm/fault.c)
# while its postcopy phase serves and pushes pages, the test cuts while it
# is frozen and then lets it go on (a slow poll on a loaded machine saw
# postcopy end before it could break it). CASE is one of:
#   cut          the kernel destroys every TCP connection of the migration
#                (ss -K) during postcopy: both sides say postcopy-paused and
#                owner destination, the destination's guest stays up;
#                `ferry recover DST URI2` + `ferry migrate SRC URI2 --resume`
#                completes and verifies (recoveries 1)
#   cut-twice    the same, and the recovered link is cut again during its
#                postcopy: recovered a second time (recoveries 2)
#   kill-destination  the destination dies during postcopy: the source
#                stays paused and says owner destination; `ferry resume SRC
#                --force` runs its copy and warns what that risks
#   kill-source  the source dies during postcopy: the destination stays
#                postcopy-paused with pages_missing > 0 and never says
#                completed
#   cancel       `ferry cancel` during postcopy is refused on both sides,
#                with the reason, and the migration completes
#   stall-destination  the destination freezes (SIGSTOP) during postcopy,
#                a small guest over 4 connections: what is left to push
#                fits in the socket buffers and the frozen kernel still
#                acknowledges, so TCP never tells; the source, whose
#                stall limit is 2 s, pauses anyway (the destination's
#                keep-alives stopped) and says it stalled and for how
#                long; the thawed destination pauses too, and a
#                recovery completes and verifies
#   stranger     two migrations are cut; the destination of the first
#                listens again, and the source of the second tries to
#                resume there: refused (another session's token); the
#                right source then completes
. "$(dirname "$0")/lib.sh"
CASE=${1:?case: cut, cut-twice, kill-destination, kill-source, cancel, stall-destination or stranger}
# shellcheck source=tests/integration/postcopy_lib.sh
. "$(dirname "$0")/postcopy_lib.sh"
skip_unless_postcopy
command -v ss >/dev/null || { echo "skip: ss (iproute2) is not installed"; exit 77; }
export FERRY_VM_LOG=2
MEM=64M
# Set by start_pair, recover_start and lib.sh's start_vm (through eval).
MIG_src="" PORT_src="" PORT_src2="" RES="" RPORT="" PID_src="" PID_dst=""

# start_pair SRC DST [FAULT]: two VMs and a postcopy migration from SRC to
# DST in the background; SRC runs with FERRY_VM_FAULT=FAULT if given. Sets
# PORT_<SRC> and MIG_<SRC> (the ferry migrate pid, its report in
# $T/SRC.m.json). With FAULT, DST's stall limit is a minute: a source
# frozen by FAULT is the test's doing, and the cut, not DST's silence
# detection, must end its postcopy.
start_pair() {
	local src=$1 dst=$2 port stall=()
	port=$(listen_port)
	[ -z "${3:-}" ] || stall=(--stall-timeout-ms 60000)
	start_vm "$dst" --memory $MEM --incoming "tcp:127.0.0.1:$port" "${stall[@]}"
	FERRY_VM_FAULT=${3:-} start_vm "$src" --memory $MEM --workload random --dirty-rate 50
	"$FERRY" migrate "$T/$src.sock" "tcp:127.0.0.1:$port" --postcopy-after-passes 1 \
		--max-bandwidth 20 --json >"$T/$src.m.json" 2>"$T/$src.m.log" &
	eval "MIG_$src=$! PORT_$src=$port"
}

# in_postcopy SRC DST: wait until both sides are in postcopy, then a
# moment more, so pages are being requested and pushed.
in_postcopy() {
	wait_until 40 state_is "$1" postcopy ||
		fail "$1 never switched to postcopy: $(status_field "$1" 'd["migration"]')"
	wait_until 10 state_is "$2" postcopy ||
		fail "$2 never ran in postcopy: $(status_field "$2" 'd["migration"]')"
	sleep 0.5
	state_is "$1" postcopy || fail "postcopy of $1 ended too soon to break it: $(status_field "$1" 'd["migration"]')"
}

# frozen SRC DST MOMENT: SRC stopped itself at MOMENT (pushing or
# repushing: its postcopy phase runs and has pushed pages), so this
# postcopy cannot end before the test breaks it, however slowly the test
# runs; DST is in postcopy meanwhile (paused checks after the cut that
# its guest runs and misses pages). The caller cuts, then lets SRC go on
# (thaw) at once: the ferry migrate that follows SRC gives up on a
# ferry-vm silent for 11 s (1 s without events, then a status request's
# 10 s), so nothing slow (a python start: up to seconds on a loaded
# machine) runs while SRC is frozen.
frozen() {
	wait_until 60 stopped_at "$1" "$3" ||
		fail "$1 never stopped at the moment $3: $(grep 'fault:' "$T/$1.log"; status_field "$1" 'd["migration"]')"
	wait_until 10 state_is "$2" postcopy ||
		{ thaw "$1"; fail "$2 never ran in postcopy: $(status_field "$2" 'd["migration"]')"; }
}

# thaw SRC: SRC, stopped by its hook, goes on (and finds its connections
# cut).
thaw() { kill -CONT "$(eval echo "\$PID_$1")"; }

# start_postcopy SRC DST: both, for one pair.
start_postcopy() {
	start_pair "$1" "$2"
	in_postcopy "$1" "$2"
}

# cut PORT: the kernel destroys every TCP connection to or from PORT on
# both ends, as a broken link would. It lists the sockets it destroyed:
# at least one; a destroyed socket resets its peer, and a side that sees
# one of its connections fail closes the others, so fewer may be left to
# list than there were.
cut() {
	local killed
	killed=$(ss -K -tn "( sport = :$1 or dport = :$1 )" 2>&1)
	echo "$killed" >>"$T/ss.log"
	[ "$(grep -c ESTAB <<<"$killed")" -ge 1 ] || fail "ss -K destroyed no connection on port $1: $killed"
}

# paused SRC DST: both sides say postcopy-paused and owner destination,
# the source with its reason;
# the destination's guest is still up (vCPUs that need a missing page
# wait, which with this workload may soon be all of them).
paused() {
	wait_until 20 state_is "$1" postcopy-paused || fail "$1 not paused: $(status_field "$1" 'd["migration"]')"
	wait_until 20 state_is "$2" postcopy-paused || fail "$2 not paused: $(status_field "$2" 'd["migration"]')"
	status_is "$1" "$1 paused" 'm["owner"] == "destination"' 'd["guest"]["state"] != "running"' \
		'"postcopy paused" in (m["error"] or "")'
	status_is "$2" "$2 paused" 'm["owner"] == "destination"' 'd["guest"]["state"] == "running"' \
		'm["pages_missing"] > 0'
}

# recover SRC DST N: the destination listens again at a new port and the
# source resumes there; the migration completes and verifies, with N
# recoveries. The resuming ferry migrate runs in the background (RES, its
# report in $T/SRC.rN.json) so that a caller can break it again.
recover_start() {
	local port
	port=$(listen_port)
	"$FERRY" recover "$T/$2.sock" "tcp:127.0.0.1:$port" >"$T/$2.rec$3.log" 2>&1 ||
		fail "ferry recover $2 refused: $(cat "$T/$2.rec$3.log")"
	grep -q "listening at tcp:127.0.0.1:$port" "$T/$2.rec$3.log" ||
		fail "ferry recover did not say where it listens: $(cat "$T/$2.rec$3.log")"
	"$FERRY" migrate "$T/$1.sock" "tcp:127.0.0.1:$port" --resume --json \
		>"$T/$1.r$3.json" 2>"$T/$1.r$3.log" &
	RES=$! RPORT=$port
}

# completed SRC DST REPORT N: REPORT says completed, verified, postcopy, N
# recoveries; both statuses agree; the destination's guest runs clean.
completed() {
	assert_json "$3" "report" 'd["status"] == "completed"' 'd["verified"] is True' \
		'd["postcopy"] is True' "d['recoveries'] == $4" 'd["owner"] == "destination"'
	status_is "$1" "$1" 'm["state"] == "completed"' 'm["owner"] == "destination"' \
		'd["guest"]["state"] == "migrated"'
	wait_until 20 state_is "$2" completed || fail "$2: $(cat "$T/$2.now.json")"
	status_is "$2" "$2" 'm["owner"] == "destination"' 'm["pages_missing"] == 0' \
		"m['recoveries'] == $4" 'd["guest"]["check_errors"] == 0'
	guest_runs "$2" || fail "$2's guest does not run"
}

brief() { json_field "$1" '{k: d.get(k) for k in ("status", "total_ms", "postcopy_ms", "pages_requested", "pages_pushed", "recoveries")}'; }

case $CASE in
cut | cut-twice)
	fault=at:pushing:stop
	[ "$CASE" = cut ] || fault=$fault,at:repushing:stop
	start_pair src dst "$fault"
	frozen src dst pushing
	cut "$PORT_src"
	thaw src
	paused src dst
	# The ferry migrate that followed the run ends and says it paused.
	wait_until 20 sh -c "! kill -0 $MIG_src 2>/dev/null" || fail "ferry migrate still runs after the cut"
	wait "$MIG_src"
	rc=$?
	[ "$rc" != 0 ] || fail "ferry migrate exited 0 on a paused migration: $(tail -n1 "$T/src.m.json")"
	assert_json "$T/src.m.json" "the paused run's report" 'd["status"] != "completed"'
	grep -q "ferry recover" "$T/src.m.log" || fail "ferry migrate did not say how to go on: $(tail -n 5 "$T/src.m.log")"
	steps0=$(steps dst)
	recover_start src dst 1
	if [ "$CASE" = cut-twice ]; then
		frozen src dst repushing
		cut "$RPORT"
		thaw src
		paused src dst
		wait "$RES" && fail "ferry migrate --resume exited 0 although its link was cut"
		recover_start src dst 2
		n=2
	else
		n=1
	fi
	wait "$RES" || fail "ferry migrate --resume failed: $(tail -n1 "$T/src.r$n.json"; tail -n 5 "$T/src.r$n.log")"
	completed src dst "$T/src.r$n.json" "$n"
	[ "$(steps dst)" -gt "$steps0" ] || fail "the destination's guest made no progress"
	pass "$CASE: paused on both sides (owner destination), recovered $n time(s), completed and verified: $(brief "$T/src.r$n.json")"
	;;
kill-destination)
	start_postcopy src dst
	kill -9 "$PID_dst"
	wait_until 20 state_is src postcopy-paused || fail "source not paused: $(status_field src 'd["migration"]')"
	status_is src "source paused" 'm["owner"] == "destination"'
	sleep 1
	guest_runs src && fail "the source's guest runs on its own after the switch"
	state_is src postcopy-paused || fail "the source left the pause by itself: $(status_field src 'd["migration"]')"
	"$FERRY" resume "$T/src.sock" >"$T/res0.log" 2>&1 && fail "ferry resume without --force ran the source"
	"$FERRY" resume "$T/src.sock" --force >"$T/res.log" 2>&1 || fail "ferry resume --force: $(cat "$T/res.log")"
	grep -q "may have run at the destination" "$T/res.log" || fail "no warning: $(cat "$T/res.log")"
	grep -q "two copies" "$T/res.log" || fail "the warning does not say what it risks: $(cat "$T/res.log")"
	guest_runs src || fail "the source's guest does not run after ferry resume --force"
	status_is src "after the forced resume" 'm["owner"] == "source"' 'd["guest"]["check_errors"] == 0' \
		'd["report"]["status"] != "completed"' \
		'"two copies" in d["report"]["error"] or "may have run" in d["report"]["error"]'
	pass "destination killed: source paused (owner destination) until ferry resume --force, which warned: $(json_field "$T/src.now.json" 'd["report"]["error"]')"
	;;
kill-source)
	start_postcopy src dst
	kill -9 "$PID_src"
	wait_until 20 state_is dst postcopy-paused || fail "destination not paused: $(status_field dst 'd["migration"]')"
	status_is dst "destination paused" 'm["owner"] == "destination"' 'm["pages_missing"] > 0'
	missing=$(json_field "$T/dst.now.json" 'd["migration"]["pages_missing"]')
	sleep 3
	status_is dst "destination 3 s later" 'm["state"] == "postcopy-paused"' \
		"m['pages_missing'] == $missing" 'd["verified"] is not True' \
		'(d["report"] or {}).get("status") != "completed"'
	"$FERRY" status "$T/dst.sock" >"$T/dst.st.txt" 2>&1
	grep -q "$missing" "$T/dst.st.txt" || fail "ferry status does not show the missing pages: $(cat "$T/dst.st.txt")"
	kill -0 "$PID_dst" || fail "the destination exited"
	pass "source killed: destination postcopy-paused, owner destination, $missing pages missing, not completed"
	;;
cancel)
	start_postcopy src dst
	for side in src dst; do
		out=$("$FERRY" cancel "$T/$side.sock" 2>&1) && fail "ferry cancel accepted on $side during postcopy: $out"
		grep -qi "postcopy" <<<"$out" || fail "ferry cancel on $side gives no reason: $out"
	done
	wait "$MIG_src" || fail "the migration failed after the refused cancels: $(tail -n1 "$T/src.m.json")"
	completed src dst "$T/src.m.json" 0
	pass "cancel refused on both sides during postcopy ($out); the migration completed: $(brief "$T/src.m.json")"
	;;
stall-destination)
	port=$(listen_port)
	start_vm dst --memory 16M --incoming "tcp:127.0.0.1:$port"
	FERRY_VM_FAULT=at:pushing:stop start_vm src --memory 16M --workload random --dirty-rate 50
	"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --postcopy-after-passes 1 \
		--max-bandwidth 20 --connections 4 --stall-timeout-ms 2000 --json \
		>"$T/src.m.json" 2>"$T/src.m.log" &
	MIG_src=$!
	frozen src dst pushing
	kill -STOP "$PID_dst"
	thaw src
	# No timed assertion: the source must pause at all (without the
	# destination's keep-alives and the limit on their silence it waits
	# for as long as the frozen kernel acknowledges) and say why.
	wait_until 60 state_is src postcopy-paused ||
		{ kill -CONT "$PID_dst"; fail "the source did not notice the frozen destination: $(status_field src 'd["migration"]')"; }
	snap src
	kill -CONT "$PID_dst"
	assert_json "$T/src.now.json" "source paused on a stall" 'm["owner"] == "destination"' \
		'd["guest"]["state"] != "running"' '"postcopy paused" in (m["error"] or "")' \
		'" stalled: the destination " in m["error"]' \
		'"--stall-timeout-ms 2000)" in m["error"]' 'm["stall_detect_ms"] >= 2000'
	why=$(json_field "$T/src.now.json" 'd["migration"]["error"]')
	wait_until 20 state_is dst postcopy-paused || fail "the thawed destination is not paused: $(status_field dst 'd["migration"]')"
	wait "$MIG_src" && fail "ferry migrate exited 0 on a paused migration"
	recover_start src dst 1
	wait "$RES" || fail "ferry migrate --resume failed: $(tail -n1 "$T/src.r1.json"; tail -n 5 "$T/src.r1.log")"
	completed src dst "$T/src.r1.json" 1
	pass "stall-destination: the source paused on its own (owner destination): $why; recovered and verified: $(brief "$T/src.r1.json")"
	;;
stranger)
	# Both postcopy phases must overlap: the pairs run side by side, and
	# each source stops itself in postcopy until it is cut (so the
	# second's postcopy cannot end while the first is cut).
	start_pair src dst at:pushing:stop
	start_pair src2 dst2 at:pushing:stop
	frozen src dst pushing
	cut "$PORT_src"
	thaw src
	frozen src2 dst2 pushing
	cut "$PORT_src2"
	thaw src2
	paused src dst
	paused src2 dst2
	port=$(listen_port)
	"$FERRY" recover "$T/dst.sock" "tcp:127.0.0.1:$port" >"$T/rec.log" 2>&1 ||
		fail "ferry recover refused: $(cat "$T/rec.log")"
	# The other session's source knocks at the recovery address.
	timeout 60 "$FERRY" migrate "$T/src2.sock" "tcp:127.0.0.1:$port" --resume --json \
		>"$T/x.json" 2>"$T/x.log" && fail "a stranger resumed the session: $(tail -n1 "$T/x.json")"
	grep -q "wrong session or token" "$T/x.log" ||
		fail "the stranger was not refused for its token: $(tail -n 3 "$T/x.log")"
	status_is dst "after the stranger" 'm["pages_missing"] > 0' 'm["state"] != "completed"' \
		'not m["recoveries"]' 'm["owner"] == "destination"'
	status_is src2 "the stranger" 'm["state"] == "postcopy-paused"'
	# The right source: at the same address if the destination still
	# listens there, else after another recover.
	if [ "$(json_field "$T/dst.now.json" 'd.get("listening")')" != "\"tcp:127.0.0.1:$port\"" ]; then
		wait_until 10 state_is dst postcopy-paused || fail "destination after the stranger: $(status_field dst 'd["migration"]')"
		port=$(listen_port)
		"$FERRY" recover "$T/dst.sock" "tcp:127.0.0.1:$port" >"$T/rec2.log" 2>&1 ||
			fail "ferry recover after the stranger refused: $(cat "$T/rec2.log")"
	fi
	"$FERRY" migrate "$T/src.sock" "tcp:127.0.0.1:$port" --resume --json >"$T/r.json" 2>"$T/r.log" ||
		fail "the right source could not resume: $(tail -n1 "$T/r.json"; tail -n 5 "$T/r.log")"
	completed src dst "$T/r.json" 1
	pass "stranger refused ($(tail -n 1 "$T/x.log")); the session's own source recovered: $(brief "$T/r.json")"
	;;
*) fail "unknown case '$CASE'" ;;
esac
