#!/usr/bin/env bash
# What `ferry migrate` shows: the final pass's progress line gives that
# pass's own figures (not the previous pass's again), and the report, human
# and --json, gives the downtime limit, the dirty tracking used and the
# negotiated protocol version and capabilities.
. "$(dirname "$0")/lib.sh"

# migrate_pair NAME DST_ARGS -- MIGRATE_ARGS: a fresh pair of 64M VMs and
# one migration between them; progress in $T/NAME.log, the human report in
# $T/NAME.txt, the JSON one (from the source's status) in $T/NAME.json.
migrate_pair() {
	local name=$1 port dst_args=() arg
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do dst_args+=("$1"); shift; done
	shift
	port=$(free_port)
	start_vm "${name}_dst" --memory 64M --workload ab "${dst_args[@]}" \
		--incoming "tcp:127.0.0.1:$port"
	start_vm "${name}_src" --memory 64M --workload ab --dirty-rate 100
	"$FERRY" migrate "$T/${name}_src.sock" "tcp:127.0.0.1:$port" "$@" \
		>"$T/$name.txt" 2>"$T/$name.log" || fail "$name: migration failed: $(cat "$T/$name.txt")"
	status_field "${name}_src" 'd["report"]' >"$T/$name.json"
}

migrate_pair plain -- --downtime-ms 250
# The final pass is the one after "state stopped".
final=$(sed -n '/state stopped/,$p' "$T/plain.log" | grep -m1 ' pass [0-9]* done')
grep -q "done (final, guest paused): .* in [0-9.]* ms, .* moved" <<<"$final" ||
	fail "final pass line: '$final' in $(cat "$T/plain.log")"
grep -q "expected downtime\|dirty (" <<<"$final" &&
	fail "the final pass line repeats the last precopy pass's rates: $final"
grep -q "^downtime      [0-9.]* ms, limit 250 ms (final pass" "$T/plain.txt" ||
	fail "no downtime limit in the report: $(cat "$T/plain.txt")"
grep -q "^protocol      version 2, capabilities data-checksum, multi-channel, zero-pages" "$T/plain.txt" ||
	fail "no protocol in the report: $(cat "$T/plain.txt")"
grep -q "^dirty pages   the VMM's dirty log (bitmap)" "$T/plain.txt" ||
	fail "no dirty tracking in the report: $(cat "$T/plain.txt")"
for check in 'd["downtime_limit_ms"] == 250' 'd["dirty_mode"] == "bitmap"' \
	'd["protocol_version"] == 2' '"zero-pages" in d["capabilities"]'; do
	[ "$(json_field "$T/plain.json" "$check")" = true ] ||
		fail "report JSON, $check: $(cat "$T/plain.json")"
done
pass "final pass: '$final'; report: limit, protocol, bitmap"

# A destination that speaks only version 1 without zstd, and userfaultfd
# tracking: the report says what was negotiated and used.
if [ "$(id -u)" != 0 ] && [ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null)" != 1 ]; then
	echo "SKIP (part): userfaultfd needs root or vm.unprivileged_userfaultfd=1"
	exit 0
fi
migrate_pair v1 --proto-version-max 1 --disable-cap zstd -- --dirty-mode uffd --json
for check in 'd["dirty_mode"] == "uffd"' 'd["protocol_version"] == 1' \
	'"zstd" not in d["capabilities"]' 'd["downtime_limit_ms"] == 300'; do
	[ "$(json_field "$T/v1.txt" "$check")" = true ] ||
		fail "report JSON, $check: $(cat "$T/v1.txt")"
done
pass "version 1 without zstd, uffd: $(tail -n1 "$T/v1.txt")"
