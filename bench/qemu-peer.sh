#!/usr/bin/env bash
# Peer baseline: QEMU's own live migration of a paused guest whose RAM is
# incompressible random data, source -> destination over loopback TCP.
# Run it in the same session as ferry's own benchmark and compare ratios.
# (A copy of the project's shared /work/shared/bench/qemu-peer.sh, kept in
# the repository so that bench/b1-throughput.sh runs from a checkout.)
#
# usage: qemu-peer.sh [RAM_MIB=2048] [CHANNELS=1] [PORT=4444]
# prints one JSON line: {"peer":"qemu","ram_mib":..,"channels":..,"status":..,
#   "total_ms":..,"downtime_ms":..,"transferred":..,"mb_per_s":..}
# needs: qemu-system-x86 (Debian package) and python3; installs qemu if root.
# QEMU_TLS_DIR=DIR: migrate over TLS with QEMU's tls-creds-x509 (DIR holds
# ca-cert.pem, server-*.pem, client-*.pem; the server certificate must
# name 127.0.0.1), verify-peer on both ends; the JSON then says "tls".
set -euo pipefail
RAM=${1:-2048}; CH=${2:-1}; PORT=${3:-4444}
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
	[ "$(id -u)" = 0 ] || { echo "install the Debian package qemu-system-x86" >&2; exit 2; }
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >/dev/null
fi
dir=$(mktemp -d); img=/dev/shm/qemu-peer-ram-$$.bin
cleanup() { kill "${SRC:-}" "${DST:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir" "$img"; }
trap cleanup EXIT
head -c "$((RAM << 20))" /dev/urandom >"$img"
common=(-M q35 -accel tcg -m "${RAM}M" -nographic -nodefaults -display none -S)
tls_src=() tls_dst=()
if [ -n "${QEMU_TLS_DIR:-}" ]; then
	tls_src=(-object "tls-creds-x509,id=tls0,dir=$QEMU_TLS_DIR,endpoint=client,verify-peer=on")
	tls_dst=(-object "tls-creds-x509,id=tls0,dir=$QEMU_TLS_DIR,endpoint=server,verify-peer=on")
fi
qemu-system-x86_64 "${common[@]}" "${tls_src[@]}" \
	-object memory-backend-file,id=mem,size="${RAM}M",mem-path="$img",share=off,prealloc=on \
	-machine memory-backend=mem -qmp unix:"$dir/src.sock",server=on,wait=off >"$dir/src.log" 2>&1 &
SRC=$!
qemu-system-x86_64 "${common[@]}" "${tls_dst[@]}" \
	-object memory-backend-ram,id=mem,size="${RAM}M" -machine memory-backend=mem \
	-qmp unix:"$dir/dst.sock",server=on,wait=off -incoming defer >"$dir/dst.log" 2>&1 &
DST=$!
python3 - "$dir" "$RAM" "$CH" "$PORT" "${QEMU_TLS_DIR:+tls}" <<'PY'
import json, socket, sys, time
d, ram, ch, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tls = sys.argv[5] == "tls"
class QMP:
    def __init__(self, path):
        for _ in range(200):
            try:
                self.s = socket.socket(socket.AF_UNIX); self.s.connect(path); break
            except OSError:
                time.sleep(0.05)
        self.f = self.s.makefile("rw"); json.loads(self.f.readline())
        self.cmd("qmp_capabilities")
    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n"); self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r: return r["return"]
            if "error" in r: raise SystemExit(f"{name}: {r['error']}")
src, dst = QMP(d + "/src.sock"), QMP(d + "/dst.sock")
for q in (src, dst):
    if ch > 1:
        q.cmd("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": True}])
        q.cmd("migrate-set-parameters", **{"multifd-channels": ch})
    q.cmd("migrate-set-parameters", **{"max-bandwidth": 100_000_000_000})
    if tls:
        q.cmd("migrate-set-parameters", **{"tls-creds": "tls0"})
dst.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
src.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
st = {}
for _ in range(6000):
    st = src.cmd("query-migrate")
    if st.get("status") in ("completed", "failed", "cancelled"): break
    time.sleep(0.05)
ram_st = st.get("ram", {}); total = st.get("total-time") or 0
print(json.dumps({"peer": "qemu", "ram_mib": ram, "channels": ch, "tls": tls, "status": st.get("status"),
    "total_ms": total, "downtime_ms": st.get("downtime"), "transferred": ram_st.get("transferred"),
    "mb_per_s": int(ram_st.get("transferred", 0) / (total / 1000) / 1e6) if total else None,
    "error": st.get("error-desc")}))
PY
