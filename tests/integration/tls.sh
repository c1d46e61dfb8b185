#!/usr/bin/env bash
# TLS on every connection of a migration between two ferry-vm processes:
#   1. x509 with mutual authentication (QEMU's tls-creds-x509 directory made
#      by `ferry tls-certs`), one connection, a running guest: completes
#      and verifies, and the destination's log shows the handshake.
#   2. the same over 4 connections, the destination accepting only the
#      source's certificate name (--tls-peer), the source only the
#      destination's: the extra connections join inside TLS.
#   3. PSK (identity:hexkey file), 2 connections.
#   4. `ferry demo --tls` with its throwaway CA.
# A TLS listener refuses plaintext (tls_refusals.sh), so a migration that
# completes went through TLS; the destination's log names each handshake.
. "$(dirname "$0")/lib.sh"
"$FERRY" tls-certs "$T/pki" >/dev/null || fail "tls-certs"
export FERRY_VM_LOG=3

# run TAG CONNECTIONS DST_TLS_ARGS -- SRC_TLS_ARGS
run() {
	local tag=$1 conns=$2 dst=() src=() port
	shift 2
	while [ "$1" != -- ]; do dst+=("$1"); shift; done
	shift
	src=("$@")
	port=$(free_port)
	start_vm "dst$tag" --memory 128M --incoming "tcp:127.0.0.1:$port" "${dst[@]}"
	start_vm "src$tag" --memory 128M --workload random --dirty-rate 50 "${src[@]}"
	"$FERRY" migrate "$T/src$tag.sock" "tcp:127.0.0.1:$port" --connections "$conns" \
		--json >"$T/m$tag.json" 2>"$T/m$tag.log" ||
		fail "$tag: migration failed: $(tail -n1 "$T/m$tag.json")"
	[ "$(json_field "$T/m$tag.json" 'd["verified"]')" = true ] || fail "$tag: not verified: $(tail -n1 "$T/m$tag.json")"
	[ "$(json_field "$T/m$tag.json" 'd["connections"]')" = "$conns" ] ||
		fail "$tag: connections: $(json_field "$T/m$tag.json" 'd["connections"]')"
	# Both reports name what was negotiated.
	local cipher dcipher
	cipher=$(json_field "$T/m$tag.json" 'd["tls_version"] + " " + d["tls_cipher"] + " " + d["tls_kx"]' | tr -d '"')
	case $cipher in "TLS1.3 "?*" ECDHE-"?*) ;; *) fail "$tag: the source's report says TLS is \"$cipher\"" ;; esac
	# By default a PSK session on a CPU with AES-NI takes AES-128-GCM, not
	# ChaCha20 (NORMAL's next choice, ten times slower there).
	if [ "$tag" = psk ] && grep -qw aes /proc/cpuinfo && grep -qw pclmulqdq /proc/cpuinfo; then
		[ "$cipher" = "TLS1.3 AES-128-GCM ECDHE-PSK" ] || fail "$tag: PSK took \"$cipher\", expected AES-128-GCM on this CPU"
	fi
	dcipher=$(status_field "dst$tag" 'd["migration"]["tls_version"] + " " + d["migration"]["tls_cipher"] + " " + d["migration"]["tls_kx"]' | tr -d '"')
	[ "$dcipher" = "$cipher" ] || fail "$tag: the destination's status says TLS is \"$dcipher\", the source's report \"$cipher\""
	local n
	n=$(grep -c "TLS: TLS1.3" "$T/dst$tag.log")
	[ "$n" -ge "$conns" ] || fail "$tag: $n TLS handshakes in the destination's log, expected $conns"
	guest_runs "dst$tag" || fail "$tag: destination guest does not run"
	pass "$tag: $conns connection(s), $cipher in both reports, $n handshakes; $(tail -n1 "$T/m$tag.json" | head -c 200)"
}

run x509 1 --tls-creds "$T/pki" -- --tls-creds "$T/pki"
run x509peers 4 --tls-creds "$T/pki" --tls-peer ferry-client -- --tls-creds "$T/pki" --tls-peer localhost
printf 'ferry:%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$T/keys.psk"
run psk 2 --tls-psk "$T/keys.psk" -- --tls-psk "$T/keys.psk"

# 4. ferry demo --tls: its own throwaway CA, removed afterwards.
mkdir "$T/demo-tmp"
TMPDIR="$T/demo-tmp" "$FERRY" demo --tls --memory 64M --json >"$T/demo.json" 2>"$T/demo.log" ||
	fail "ferry demo --tls: $(tail -n 3 "$T/demo.log")"
[ "$(json_field "$T/demo.json" 'd["verified"]')" = true ] || fail "demo not verified: $(tail -n1 "$T/demo.json")"
[ "$(json_field "$T/demo.json" 'd["tls_version"]')" = '"TLS1.3"' ] || fail "demo: tls_version: $(tail -n1 "$T/demo.json")"
[ -z "$(ls -A "$T/demo-tmp")" ] || fail "ferry demo --tls left files behind: $(ls -R "$T/demo-tmp")"
pass "ferry demo --tls: completed and verified, its CA removed"
