#!/usr/bin/env bash
# Benchmark 13: migration under TLS (issue 22).
#
# A 2 GiB `fill` guest (random data, idle once filled) migrated by
# `ferry demo` with 1, 2 and 4 connections: plaintext, then TLS with
# mutual x509 authentication (a throwaway CA made by `ferry tls-certs`)
# restricted to AES-128-GCM, then to CHACHA20-POLY1305 (--tls-priority).
# Rows run as a user types them (ferry-vm's default memory backing,
# verification on), interleaved round by round so the machine's noise is
# shared. Beside them: the cipher's own single-core speed from
# `gnutls-cli --benchmark-ciphers` (16 KiB payloads), and QEMU's TLS
# migration (tls-creds-x509 with verify-peer, through bench/qemu-peer.sh
# with QEMU_TLS_DIR) with 1 channel and with 4 multifd channels, in the
# first round. Targets: each TLS row's best connection count >= 0.6 x the
# cipher's single-core speed, and >= 10 x QEMU's best TLS row.
# ferry seals its TLS 1.3 records with Intel's ipsec-mb where built in
# (src/transport/tls_aead.h): the table also gives that engine's own
# single-core speed (bench/aeadrate, measured as gnutls-cli measures
# GnuTLS's), and an AES-128-GCM row with --tls-engine gnutls, GnuTLS's
# AEAD, for comparison (B13_GNUTLS_ROW=0 leaves it out).
# kTLS: the table says whether the kernel offers it (this engine does not
# use it; see docs/api-guide.md, "TLS").
#
# usage: bench/b13-tls.sh [--quick] [--build DIR] [--runs N] [--out DIR]
#   full: 3 rounds of 2048 MiB; --quick: 1 round of 256 MiB.
#   QEMU_PEER=0 leaves QEMU out.
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_init b13 "$@"
need_cmd gnutls-cli "the Debian package gnutls-bin"

MIB=$(pick 256 2048)
N=${RUNS:-$(pick 1 3)}
need_memory $((MIB * 2 + 512))
PKI=$OUT/b13-pki
mkdir -p "$PKI"
"$FERRY" tls-certs "$PKI" >/dev/null || die "ferry tls-certs failed"
AES="NORMAL:-CIPHER-ALL:+AES-128-GCM"
CHACHA="NORMAL:-CIPHER-ALL:+CHACHA20-POLY1305"

# The cipher's own speed, once: one JSON line for measure().
cipher_speed() {
	gnutls-cli --benchmark-ciphers 2>&1 | python3 -c '
import json, re, sys
out = {}
for line in sys.stdin:
    m = re.match(r"\s*(AES-128-GCM|CHACHA20-POLY1305) ([0-9.]+) (GB|MB)/sec", line)
    if m and m.group(1) not in out:
        out[m.group(1)] = float(m.group(2)) * (1000 if m.group(3) == "GB" else 1)
print(json.dumps({"status": "completed", "mb_per_s_by_cipher": out}))'
}
ktls() {
	python3 -c '
import json
ulp = open("/proc/sys/net/ipv4/tcp_available_ulp").read().split()
print(json.dumps({"status": "completed", "ulp": ulp, "ktls": "tls" in ulp}))'
}
measure ciphers 1 cipher_speed
measure ktls 1 ktls
AEADRATE="$BUILD/bench/aeadrate"
[ -x "$AEADRATE" ] && measure engines 1 "$AEADRATE" 1

demo=("$FERRY" demo --memory "${MIB}M" --workload fill --json)
row() { # ROW ROUND CONNECTIONS
	case $1 in
	plain) measure "plain-$3" "$2" "${demo[@]}" --connections "$3" ;;
	aes) measure "aes-$3" "$2" "${demo[@]}" --connections "$3" --tls-creds "$PKI" --tls-priority "$AES" ;;
	chacha) measure "chacha-$3" "$2" "${demo[@]}" --connections "$3" --tls-creds "$PKI" --tls-priority "$CHACHA" ;;
	aesg) measure "aesg-$3" "$2" "${demo[@]}" --connections "$3" --tls-creds "$PKI" --tls-priority "$AES" --tls-engine gnutls ;;
	esac
}
for i in $(seq 1 "$N"); do
	for c in 1 2 4; do
		for r in plain aes chacha; do row "$r" "$i" "$c"; done
		[ "${B13_GNUTLS_ROW:-1}" != 0 ] && row aesg "$i" "$c"
	done
	if [ "$i" = 1 ] && [ "${QEMU_PEER:-1}" != 0 ]; then
		for ch in 1 4; do
			QEMU_TLS_DIR=$(realpath "$PKI") measure "qemu-tls-$ch" 1 \
				"$BENCH_DIR/qemu-peer.sh" "$MIB" "$ch" "$(free_port)"
		done
	fi
done

python3 - "$JSONL" "$MIB" <<'PY'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
mib = sys.argv[2]
def rs(what):
    return [r for r in recs if r.get("what") == what and r.get("r") and r["r"].get("status") == "completed"]
def rates(what):
    return [r["r"]["mb_per_s"] for r in rs(what) if r["r"].get("mb_per_s")]
def fmt(v):
    if not v: return "-"
    m = statistics.median(v)
    return f"{m:,.0f}" + (f" ({min(v):,.0f}-{max(v):,.0f})" if len(v) > 1 else "")
c = (rs("ciphers") or [{"r": {"mb_per_s_by_cipher": {}}}])[0]["r"]["mb_per_s_by_cipher"]
k = (rs("ktls") or [{"r": {"ulp": [], "ktls": False}}])[0]["r"]
eng = (rs("engines") or [{"r": {"engines": {}}}])[0]["r"]["engines"]
print(f"\nBenchmark 13: {mib} MiB fill guest, ferry demo (defaults, verification on), MB/s median (range)")
print(f"kTLS: {'offered' if k['ktls'] else 'not offered'} by the kernel (tcp_available_ulp: {' '.join(k['ulp']) or '-'})")
for e, by in eng.items():
    print(f"AEAD engine {e}, 1 core (bench/aeadrate, 16 KiB): " + ", ".join(f"{c} {v:,.0f} MB/s" for c, v in by.items()))
print(f"{'row':<22}{'1 conn':>22}{'2 conns':>22}{'4 conns':>22}{'cipher 1 core':>16}{'best/cipher':>13}")
qbest = max([statistics.median(rates(f"qemu-tls-{ch}")) for ch in (1, 4) if rates(f"qemu-tls-{ch}")] or [0])
for key, name, cipher in (("plain", "plaintext", None), ("aes", "TLS AES-128-GCM", "AES-128-GCM"),
                          ("chacha", "TLS CHACHA20-POLY1305", "CHACHA20-POLY1305"),
                          ("aesg", "TLS AES-128-GCM gnutls", "AES-128-GCM")):
    if key == "aesg" and not any(rs(f"aesg-{n}") for n in (1, 2, 4)):
        continue
    cells = [fmt(rates(f"{key}-{n}")) for n in (1, 2, 4)]
    best = max([statistics.median(rates(f"{key}-{n}")) for n in (1, 2, 4) if rates(f"{key}-{n}")] or [0])
    cs = c.get(cipher) if cipher else None
    print(f"{name:<22}{cells[0]:>22}{cells[1]:>22}{cells[2]:>22}{(f'{cs:,.0f}' if cs else '-'):>16}"
          f"{(f'{best / cs:.2f}' if cs and best else '-'):>13}")
    # What the reports say was negotiated (tls_version, tls_cipher).
    seen = sorted({" ".join(x for x in (r["r"].get("tls_version"), r["r"].get("tls_cipher")) if x) or "none"
                   for n in (1, 2, 4) for r in rs(f"{key}-{n}")})
    if seen:
        ok = seen == ([f"TLS1.3 {cipher}"] if cipher else ["none"])
        print(f"  negotiated (reports): {', '.join(seen)}{'' if ok else '  <- not what the row asked for'}")
    sealed = sorted({r["r"].get("tls_engine") or "?" for n in (1, 2, 4) for r in rs(f"{key}-{n}")})
    if cipher and sealed:
        print(f"  sealed by (reports): {', '.join(sealed)}")
        own = [by.get(cipher) for e, by in eng.items() if any(e.split(",")[0] in x for x in sealed)]
        if own and own[0] and best:
            print(f"  best / that engine's own 1-core speed ({own[0]:,.0f} MB/s): {best / own[0]:.2f}")
    if cipher and best:
        t1 = cs and best >= 0.6 * cs
        t2 = qbest and best >= 10 * qbest
        print(f"  target >= 0.6 x cipher: {'met' if t1 else 'NOT met'}; >= 10 x QEMU TLS ({qbest:,.0f} MB/s): "
              f"{'met' if t2 else ('NOT met' if qbest else 'no QEMU row')}"
              + (f" ({best / qbest:.1f} x)" if qbest else ""))
for ch in (1, 4):
    v = rates(f"qemu-tls-{ch}")
    print(f"{'QEMU TLS ' + ('1 channel' if ch == 1 else '4 multifd'):<22}{fmt(v):>22}")
bad = [r for r in recs if "what" in r and r.get("rc")]
if bad:
    print(f"{len(bad)} run(s) failed: " + ", ".join(f"{r['what']} #{r['round']}" for r in bad))
PY
