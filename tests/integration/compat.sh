#!/usr/bin/env bash
# Compatibility by configuration: a destination made older (protocol
# version 1, or without a capability) still takes a migration from a
# source that asks for more; disjoint versions are refused clearly and the
# source runs on. Prints the matrix: case, expected, observed.
. "$(dirname "$0")/lib.sh"
row() { printf '%-44s | %-34s | %s\n' "$1" "$2" "$3"; }
report() { tail -n1 "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["status"], "v%s" % d["protocol_version"], ",".join(d["capabilities"] or []), "conns=%s" % d["connections"], "verified=%s" % d["verified"], d["error"] or "")'; }
case_run() { # NAME DST-FLAGS -- SRC-FLAGS -- MIGRATE-FLAGS
	local name=$1; shift
	local dst=() src=() mig=()
	while [ "$1" != -- ]; do dst+=("$1"); shift; done; shift
	while [ "$1" != -- ]; do src+=("$1"); shift; done; shift
	mig=("$@")
	local port; port=$(free_port)
	start_vm "d$name" --memory 64M --workload ab --incoming "tcp:127.0.0.1:$port" "${dst[@]}"
	start_vm "s$name" --memory 64M --workload ab "${src[@]}"
	"$FERRY" migrate "$T/s$name.sock" "tcp:127.0.0.1:$port" --json "${mig[@]}" \
		>"$T/$name.json" 2>"$T/$name.log"
	OBS=$(report "$T/$name.json")
}
row "case" "expected" "observed"
case_run v1dst --proto-version-max 1 -- -- --connections 4 --compress lz4
row "dst v1, src v2 asks 4 conns + lz4" "completed v1, 1 conn, no lz4" "$OBS"
[[ $OBS == "completed v1 data-checksum conns=1 verified=True"* ]] || fail "v1 destination: $OBS"
case_run nolz4 --disable-cap lz4 -- -- --compress lz4 --connections 2
row "dst without lz4, src asks lz4 + 2 conns" "completed v2, 2 conns, no lz4" "$OBS"
[[ $OBS == completed\ v2*conns=2\ verified=True* && $OBS != *lz4* ]] || fail "no-lz4 destination: $OBS"
case_run nomulti --disable-cap multi-channel -- -- --connections 4
row "dst without multi-channel, src asks 4" "completed, 1 conn" "$OBS"
[[ $OBS == completed*conns=1\ verified=True* ]] || fail "no-multi destination: $OBS"
case_run refuse --proto-version-max 1 -- --proto-version-min 2 --
row "dst v1 only, src v2 only" "failed: no common version; src runs" "$OBS"
[[ $OBS == failed*"no common protocol version"* ]] || fail "disjoint versions: $OBS"
source_intact srefuse
case_run v1src -- --proto-version-max 1 -- --connections 2 --compress zstd
row "src capped at v1, dst v2" "completed v1, 1 conn" "$OBS"
[[ $OBS == "completed v1 data-checksum conns=1 verified=True"* ]] || fail "v1 source: $OBS"
pass "compatibility matrix as expected"
