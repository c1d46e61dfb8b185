#!/usr/bin/env bash
# TLS refusals between real ferry-vm processes, each with the message that
# names its cause, on the refusing side and on the refused one; after
# every refusal the source's guest still runs and the destination listens
# again, and at the end it takes a good migration that verifies.
#   no client certificate (gnutls-cli without one), a client certificate
#   of another CA, an expired client certificate, a destination name the
#   source does not accept (--tls-peer), a plaintext source to a TLS
#   listener and a TLS source to a plaintext listener, a PSK mismatch.
# gnutls-cli is also the real TLS peer that completes the handshake with
# the right client certificate.
. "$(dirname "$0")/lib.sh"
command -v gnutls-cli >/dev/null || { echo "skip: gnutls-cli (gnutls-bin) is not installed"; exit 77; }
for d in pki other exp; do mkdir -p "$T/$d"; done
"$FERRY" tls-certs "$T/pki" >/dev/null && "$FERRY" tls-certs "$T/other" >/dev/null &&
	"$FERRY" tls-certs --expired "$T/exp" >/dev/null || fail "tls-certs"
# The destination trusts two CAs: the expired certificate's one too, so
# that its refusal is for the date.
mkdir "$T/dst-pki"
cp "$T/pki/server-cert.pem" "$T/pki/server-key.pem" "$T/dst-pki/"
cat "$T/pki/ca-cert.pem" "$T/exp/ca-cert.pem" >"$T/dst-pki/ca-cert.pem"
# mixed NAME DIR: trusts the destination's CA, presents DIR's client pair.
mixed() {
	mkdir "$T/$1"
	cp "$T/pki/ca-cert.pem" "$T/$1/"
	cp "$T/$2/client-cert.pem" "$T/$2/client-key.pem" "$T/$1/"
}
mixed src-other other
mixed src-exp exp

port=$(free_port)
start_vm dst --memory 64M --incoming "tcp:127.0.0.1:$port" --tls-creds "$T/dst-pki"
start_vm src --memory 64M --workload random --dirty-rate 20
uri="tcp:127.0.0.1:$port"
n=0

# dst_refused WHAT: the destination's last failure names WHAT, and it
# listens again.
dst_refused() {
	local what=$1
	has() { status_field dst 'd["migration"]["last_failure"]["error"] or ""' | grep -qF -- "$what"; }
	wait_until 20 has || fail "the destination's last failure does not say '$what': $(status_field dst 'd["migration"]["last_failure"]')"
	wait_until 20 sh -c "[ \"\$('$FERRY' status '$T/dst.sock' --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"guest\"][\"state\"])')\" = incoming ]" ||
		fail "the destination does not listen again after: $what"
}

# refused TAG SRC_MSG DST_MSG MIGRATE_OPTIONS...: ferry migrate fails
# saying SRC_MSG, the destination's failure says DST_MSG ("" = not
# checked), the source's guest runs on.
refused() {
	local tag=$1 smsg=$2 dmsg=$3
	shift 3
	n=$((n + 1))
	"$FERRY" migrate "$T/src.sock" "$uri" --json "$@" >"$T/r$n.json" 2>"$T/r$n.log" &&
		fail "$tag: the migration completed"
	grep -qF -- "$smsg" "$T/r$n.json" "$T/r$n.log" || fail "$tag: the source does not say '$smsg': $(tail -n1 "$T/r$n.json")"
	[ -z "$dmsg" ] || dst_refused "$dmsg"
	[ "$(guest_state src)" = running ] || fail "$tag: the source's guest is $(guest_state src)"
	source_intact src
	pass "$tag: refused; source: $(grep -ohF -- "$smsg" "$T/r$n.json" | head -n1)${dmsg:+; destination: $dmsg}"
}

# An engine the session cannot run, found after the handshake (ktls over
# TLS 1.2, refused on every kernel): the source says why and sends a
# fatal alert, which the destination names instead of "not a ferry
# stream" alone.
refused "an engine that cannot run the session (ktls over TLS 1.2)" \
	"tls_engine ktls cannot run this session: the session negotiated TLS1.2" \
	'Handshake failed' --tls-creds "$T/pki" \
	--tls-priority "NORMAL:-VERS-ALL:+VERS-TLS1.2" --tls-engine ktls
refused "client certificate of another CA" "did not accept our certificate" \
	"the peer's certificate is not signed by the CA in $T/dst-pki/ca-cert.pem" --tls-creds "$T/src-other"
refused "expired client certificate" "did not accept our certificate" \
	"the peer's certificate expired on" --tls-creds "$T/src-exp"
refused "destination name not accepted" \
	"the peer's certificate (CN=localhost) names none of the accepted peers (dst.example)" \
	"" --tls-creds "$T/pki" --tls-peer dst.example
refused "plaintext source to a TLS listener" "this destination requires TLS" \
	"the peer sent a plaintext ferry stream"

# gnutls-cli: without a certificate it is refused; with the client
# certificate its handshake completes and it hears the verdict byte.
(sleep 1) | gnutls-cli --x509cafile "$T/pki/ca-cert.pem" -p "$port" localhost >"$T/cli0.log" 2>&1
dst_refused "the peer presented no certificate"
grep -aq "Received alert.*Certificate is required" "$T/cli0.log" || fail "gnutls-cli without a certificate heard no refusal: $(tail -n 5 "$T/cli0.log")"
pass "gnutls-cli without a certificate: refused ($(grep -a -m1 "Received alert" "$T/cli0.log"))"
(sleep 1) | gnutls-cli --x509cafile "$T/pki/ca-cert.pem" --x509certfile "$T/pki/client-cert.pem" \
	--x509keyfile "$T/pki/client-key.pem" -p "$port" localhost >"$T/cli1.log" 2>&1
grep -aq "Handshake was completed" "$T/cli1.log" || fail "gnutls-cli with the client certificate: $(tail -n 8 "$T/cli1.log")"
grep -aqi "fatal\|alert" "$T/cli1.log" && fail "gnutls-cli with the client certificate was refused: $(tail -n 8 "$T/cli1.log")"
# It then sends no ferry stream: the destination says so and listens again.
dst_refused "not a ferry stream"
pass "gnutls-cli with the client certificate: handshake completed ($(grep -a -m1 "Description" "$T/cli1.log"))"

# A TLS source to a plaintext listener, and a PSK mismatch.
port2=$(free_port)
start_vm plain --memory 64M --incoming "tcp:127.0.0.1:$port2"
uri="tcp:127.0.0.1:$port2"
refused "TLS source to a plaintext listener" "does not use TLS" "" --tls-creds "$T/pki"
[ "$(guest_state plain)" = incoming ] || fail "the plaintext listener is $(guest_state plain)"
printf 'ferry:00112233445566778899aabbccddeeff\n' >"$T/a.psk"
printf 'ferry:ffeeddccbbaa99887766554433221100\n' >"$T/b.psk"
port3=$(free_port)
start_vm pskdst --memory 64M --incoming "tcp:127.0.0.1:$port3" --tls-psk "$T/a.psk"
uri="tcp:127.0.0.1:$port3"
refused "PSK mismatch" "our pre-shared keys differ" "" --tls-psk "$T/b.psk"
has_psk_failure() { status_field pskdst 'd["migration"]["last_failure"]["error"] or ""' | grep -q "pre-shared key differs"; }
wait_until 20 has_psk_failure || fail "the PSK destination's failure: $(status_field pskdst 'd["migration"]["last_failure"]')"

# After all of that, the TLS destination takes a good migration.
uri="tcp:127.0.0.1:$port"
"$FERRY" migrate "$T/src.sock" "$uri" --tls-creds "$T/pki" --tls-peer localhost --json >"$T/good.json" 2>"$T/good.log" ||
	fail "the good migration failed: $(tail -n1 "$T/good.json")"
[ "$(json_field "$T/good.json" 'd["verified"]')" = true ] || fail "not verified: $(tail -n1 "$T/good.json")"
guest_runs dst || fail "destination guest does not run"
pass "then a good migration over TLS: $(tail -n1 "$T/good.json" | head -c 160)"
