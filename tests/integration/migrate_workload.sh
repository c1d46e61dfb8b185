#!/usr/bin/env bash
# A running guest with WORKLOAD migrates between two ferry-vm processes and
# verifies: digests equal, invariant on every page, guest continues. The
# check runs after the pause by default, inside it with --verify strict.
. "$(dirname "$0")/lib.sh"
W=${1:?workload}
shift
out="$T/report.json"
"$FERRY" demo --memory 256M --workload "$W" "$@" --json >"$out" 2>"$T/demo.log" ||
	fail "demo exited $? for $W: $(tail -n 3 "$out")"
[ "$(json_field "$out" 'd["status"]')" = '"completed"' ] || fail "status: $(tail -n1 "$out")"
[ "$(json_field "$out" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$out")"
[ "$(json_field "$out" 'd["passes"] >= 2')" = true ] || fail "passes: $(tail -n1 "$out")"
method='["background", false, 0.0]'
[[ " $* " == *" --verify strict "* ]] && method='["in-pause", true, true]'
[ "$(json_field "$out" '[d["verify"]["method"], d["verify"]["in_pause"], d["verify_ms"] if d["verify_ms"] == 0 else d["verify_ms"] > 0]')" = "$method" ] ||
	fail "verification method: $(tail -n1 "$out")"
[ "$(json_field "$out" 'd["bytes"] >= 256<<20')" = true ] || fail "bytes: $(tail -n1 "$out")"
# An idle guest crosses once: nothing it wrote before the migration may be
# sent a second time.
[ "$W" != idle ] || [ "$(json_field "$out" 'd["bytes"] <= (256<<20) * 1.02')" = true ] ||
	fail "idle guest sent more than once: $(tail -n1 "$out")"
if [ $# -gt 0 ]; then
	want=$(printf '%s\n' "$@" | sed -n '/^--connections$/{n;p}')
	[ -z "$want" ] || [ "$(json_field "$out" 'd["connections"]')" = "$want" ] ||
		fail "connections: $(tail -n1 "$out")"
fi
pass "$W $*: $(tail -n 1 "$out")"
