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
#   5. What seals the records (--tls-engine), named in both sides'
#      reports: by default (auto), ipsec-mb where ferry was built with it
#      and the CPU has AES-NI, else GnuTLS; GnuTLS when asked for (ferry-vm
#      on both sides; ferry demo, whose text report says "sealed by");
#      ipsec-mb when ferry migrate asks for it over the source VM's own
#      gnutls, or, where it cannot run, a refusal saying why; the kernel's
#      TLS (ktls, opt-in) where the kernel offers kTLS, else a refusal
#      naming kTLS and what the probe found; an unknown engine refused by
#      ferry-vm, its API and the CLI, naming the accepted ones.
# A TLS listener refuses plaintext (tls_refusals.sh), so a migration that
# completes went through TLS; the destination's log names each handshake.
. "$(dirname "$0")/lib.sh"
: "${FERRY_IPSEC_MB:?1 when ferry was built with ipsec-mb, else 0 (set by meson)}"
"$FERRY" tls-certs "$T/pki" >/dev/null || fail "tls-certs"
export FERRY_VM_LOG=3

# Who seals TLS 1.3 records by default: ipsec-mb where the build has it
# and the CPU has AES-NI (CI's x86-64 with libipsec-mb-dev), else GnuTLS.
if [ "$FERRY_IPSEC_MB" = 1 ] && grep -qw aes /proc/cpuinfo; then
	auto_engine="ipsec-mb "
else
	auto_engine="GnuTLS "
fi
# What run() expects in both sides' tls_engine (it starts with this, and
# ends with want_tail), and the guests' size.
want_engine=$auto_engine
want_tail=", ferry's records"
mem=128M

# run TAG CONNECTIONS DST_TLS_ARGS -- SRC_TLS_ARGS [-- MIGRATE_ARGS]
run() {
	local tag=$1 conns=$2 dst=() src=() mig=() port
	shift 2
	while [ "$1" != -- ]; do dst+=("$1"); shift; done
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do src+=("$1"); shift; done
	[ $# -gt 0 ] && shift
	mig=("$@")
	port=$(free_port)
	start_vm "dst$tag" --memory "$mem" --incoming "tcp:127.0.0.1:$port" "${dst[@]}"
	start_vm "src$tag" --memory "$mem" --workload random --dirty-rate 50 "${src[@]}"
	"$FERRY" migrate "$T/src$tag.sock" "tcp:127.0.0.1:$port" --connections "$conns" \
		"${mig[@]}" --json >"$T/m$tag.json" 2>"$T/m$tag.log" ||
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
	# Both name who sealed their records, in ferry's record layer.
	local eng deng
	eng=$(json_field "$T/m$tag.json" 'd["tls_engine"]' | tr -d '"')
	deng=$(status_field "dst$tag" 'd["migration"]["tls_engine"]' | tr -d '"')
	case $eng in
	"$want_engine"*"$want_tail") ;;
	*) fail "$tag: the source's records were sealed by \"$eng\", expected $want_engine..." ;;
	esac
	case $deng in
	"$want_engine"*"$want_tail") ;;
	*) fail "$tag: the destination's records were sealed by \"$deng\", expected $want_engine..." ;;
	esac
	local n
	n=$(grep -c "TLS: TLS1.3" "$T/dst$tag.log")
	[ "$n" -ge "$conns" ] || fail "$tag: $n TLS handshakes in the destination's log, expected $conns"
	guest_runs "dst$tag" || fail "$tag: destination guest does not run"
	pass "$tag: $conns connection(s), $cipher in both reports, sealed by $eng / $deng, $n handshakes; $(tail -n1 "$T/m$tag.json" | head -c 200)"
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
case $(json_field "$T/demo.json" 'd["tls_engine"]') in "\"$auto_engine"*) ;; *) fail "demo: tls_engine: $(tail -n1 "$T/demo.json")" ;; esac
[ -z "$(ls -A "$T/demo-tmp")" ] || fail "ferry demo --tls left files behind: $(ls -R "$T/demo-tmp")"
pass "ferry demo --tls: completed and verified, its CA removed"

# 5. The AEAD engine. GnuTLS's when asked for, on both sides (ferry-vm's
# --tls-engine), and through ferry demo (both VMs).
want_engine="GnuTLS " mem=64M
run gnutls 1 --tls-creds "$T/pki" --tls-engine gnutls -- --tls-creds "$T/pki" --tls-engine gnutls
# Exit status 0: completed and verified. The human report's encryption
# line says who sealed the source's records, the destination's log its own.
mkdir "$T/demo-gnutls"
TMPDIR="$T/demo-gnutls" "$FERRY" demo --tls-psk "$T/keys.psk" --tls-engine gnutls --memory 64M \
	--keep-logs >"$T/demo-gnutls.txt" 2>"$T/demo-gnutls.log" ||
	fail "ferry demo --tls-engine gnutls: $(tail -n 3 "$T/demo-gnutls.log")"
enc=$(grep "^encryption " "$T/demo-gnutls.txt")
grep -q "^encryption    TLS1.3 [A-Z0-9-]*, key exchange ECDHE-PSK, sealed by GnuTLS [0-9.]*$" <<<"$enc" ||
	fail "demo --tls-engine gnutls: $(cat "$T/demo-gnutls.txt")"
grep -q "TLS: TLS1.3 .*, GnuTLS [0-9.]*, ferry's records" "$T"/demo-gnutls/*/dst.log ||
	fail "demo --tls-engine gnutls: the destination's log: $(grep "TLS" "$T"/demo-gnutls/*/dst.log)"
pass "ferry demo --tls-engine gnutls: completed, verified; $enc"

# ipsec-mb asked for: the destination by ferry-vm's option, the source by
# ferry migrate's (the migrate command's tls_engine, in place of the
# source VM's own gnutls). Where it cannot run, the migration is refused
# saying why, and the source keeps its guest.
if [ "$auto_engine" = "ipsec-mb " ]; then
	want_engine="ipsec-mb "
	run ipsecmb 2 --tls-psk "$T/keys.psk" --tls-engine ipsec-mb -- \
		--tls-psk "$T/keys.psk" --tls-engine gnutls -- --tls-engine ipsec-mb
else
	if [ "$FERRY_IPSEC_MB" = 1 ]; then why="the CPU has no AES-NI"; else why="ferry was built without ipsec-mb"; fi
	port=$(free_port)
	start_vm dstno --memory 64M --incoming "tcp:127.0.0.1:$port" --tls-psk "$T/keys.psk" --tls-engine ipsec-mb
	start_vm srcno --memory 64M --workload random --tls-psk "$T/keys.psk"
	"$FERRY" migrate "$T/srcno.sock" "tcp:127.0.0.1:$port" --tls-engine ipsec-mb --json \
		>"$T/mno.json" 2>"$T/mno.log" && fail "ipsec-mb asked for without it: the migration completed"
	grep -q "TLS: tls_engine ipsec-mb: .*$why" "$T/mno.json" ||
		fail "ipsec-mb asked for without it: the refusal does not say \"$why\": $(tail -n1 "$T/mno.json")"
	source_intact srcno
	pass "ipsec-mb asked for where it cannot run: refused ($why), the source runs its guest"
fi

# The kernel's TLS (ktls), asked for by name on both sides: where the
# kernel offers kTLS the migration completes with both sides' records
# sealed by the kernel; elsewhere (this project's machines) it is refused
# naming kTLS and what the probe found, and the source keeps its guest.
ktls_why=$(python3 - <<'PY'
import errno, socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.setsockopt(socket.IPPROTO_TCP, 31, b"tls")   # TCP_ULP
    print("")
except OSError as e:
    # ENOTCONN: the module is there, the socket merely unconnected.
    print("" if e.errno == errno.ENOTCONN else "no kTLS")
PY
)
if [ -z "$ktls_why" ]; then
	want_engine="kernel kTLS " want_tail=", ferry's keys" mem=64M
	run ktls 1 --tls-psk "$T/keys.psk" --tls-engine ktls -- \
		--tls-psk "$T/keys.psk" --tls-engine ktls
	want_tail=", ferry's records"
else
	port=$(free_port)
	start_vm dstk --memory 64M --incoming "tcp:127.0.0.1:$port" --tls-psk "$T/keys.psk" --tls-engine ktls
	start_vm srck --memory 64M --workload random --tls-psk "$T/keys.psk"
	"$FERRY" migrate "$T/srck.sock" "tcp:127.0.0.1:$port" --tls-engine ktls --json \
		>"$T/mk.json" 2>"$T/mk.log" && fail "ktls asked for without kTLS: the migration completed"
	grep -q "TLS: tls_engine ktls cannot run this session: the kernel offers no kTLS: tcp_available_ulp lists" "$T/mk.json" ||
		fail "ktls asked for without kTLS: the refusal does not name kTLS and the probe's finding: $(tail -n1 "$T/mk.json")"
	source_intact srck
	pass "ktls asked for without kTLS: refused ($(json_field "$T/mk.json" 'd["error"]')), the source runs its guest"
fi

# An unknown engine: ferry-vm, its API and the command line refuse it,
# naming the accepted ones.
out=$("$FERRY_VM" --memory 16M --tls-engine aesni 2>&1) && fail "ferry-vm --tls-engine aesni accepted"
grep -q -- "--tls-engine 'aesni': need auto, gnutls, ipsec-mb or ktls" <<<"$out" || fail "ferry-vm --tls-engine aesni: $out"
out=$("$FERRY" migrate "$T/srcgnutls.sock" tcp:127.0.0.1:1 --tls-engine aesni 2>&1); rc=$?
[ $rc = 2 ] || fail "ferry migrate --tls-engine aesni: exit $rc: $out"
grep -q -- "--tls-engine is auto, gnutls, ipsec-mb or ktls, not 'aesni'" <<<"$out" || fail "ferry migrate --tls-engine aesni: $out"
python3 - "$T/srcgnutls.sock" <<'PY' || fail "the migrate command took an unknown tls_engine"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(5)
f = s.makefile("rb")
assert b"ferry-vm" in f.readline()
for v in ("aesni", 1, ""):
    s.sendall(json.dumps({"execute": "migrate", "arguments":
                          {"uri": "tcp:127.0.0.1:1", "tls_engine": v}}).encode() + b"\n")
    r = json.loads(f.readline())
    assert r["error"]["desc"] == "'tls_engine' must be one of: auto, gnutls, ipsec-mb, ktls", r
PY
pass "an unknown engine refused by ferry-vm, its migrate command and ferry migrate, naming auto, gnutls, ipsec-mb, ktls"
