#!/usr/bin/env bash
# Peer baseline for postcopy (issue 20, benchmark 1): QEMU (TCG, no KVM
# needed) migrates a running guest over loopback at a capped bandwidth, by
# precopy alone, with auto-converge, or switching to postcopy-ram after its
# second dirty sync (migrate-start-postcopy), with postcopy-blocktime on so
# the destination reports how long its vCPUs waited for pages.
#
# The guest is bench/ab-guest.S (a copy of the project's shared
# /work/shared/bench/ab-guest.S, kept here so the benchmark runs from a
# checkout): a boot sector that increments a byte in every 4 KiB page from
# 1 MiB to half of RAM forever, at whatever rate TCG runs it.
#
# usage: qemu-postcopy.sh [RAM_MIB=1024] [precopy|autoconverge|postcopy]
#                         [BANDWIDTH_MB_S=100] [PORT=4472] [LIMIT_S=120]
# prints one JSON line: {"peer": "qemu-tcg-ab", "mode", "ram_mib",
#   "bandwidth_mb_s", "status", "total_ms", "downtime_ms", "passes",
#   "transferred_mb", "throttle_pct", "switch_ms" (postcopy: when
#   migrate-start-postcopy was sent), "blocktime_ms" (postcopy: the
#   destination's postcopy-blocktime, the total time vCPUs waited)}
# needs: qemu-system-x86 (Debian package), gcc with -m32, ld, python3;
# installs qemu if root.
set -euo pipefail
RAM=${1:-1024}; MODE=${2:-postcopy}; BW=${3:-100}; PORT=${4:-4472}; LIMIT=${5:-120}
case $MODE in precopy | autoconverge | postcopy) ;; *)
	echo "qemu-postcopy.sh: mode must be precopy, autoconverge or postcopy, not '$MODE'" >&2
	exit 2
	;;
esac
here=$(cd "$(dirname "$0")" && pwd)
d=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$d"' EXIT
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
	[ "$(id -u)" = 0 ] || { echo "install the Debian package qemu-system-x86" >&2; exit 2; }
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >/dev/null
fi
gcc -c -m32 -DEND="$(printf '0x%x' $((RAM << 19)))" -o "$d/ab.o" "$here/ab-guest.S"
ld -m elf_i386 -Ttext 0x7c00 --oformat binary "$d/ab.o" -o "$d/ab.bin"
python3 - "$d" "$RAM" "$MODE" "$BW" "$PORT" "$LIMIT" <<'PY'
import json, socket, subprocess, sys, time
d, ram, mode, bw, port, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], \
    int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
common = ["qemu-system-x86_64", "-M", "pc", "-accel", "tcg", "-m", f"{ram}M",
          "-display", "none", "-nodefaults",
          "-drive", f"file={d}/ab.bin,format=raw,if=ide,snapshot=on"]
src = subprocess.Popen(common + ["-qmp", f"unix:{d}/src.sock,server=on,wait=off"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
dst = subprocess.Popen(common + ["-qmp", f"unix:{d}/dst.sock,server=on,wait=off",
                                 "-incoming", "defer"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class QMP:
    def __init__(self, path):
        for _ in range(200):
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        self.f = self.s.makefile("rw")
        self.f.readline()
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise SystemExit(f"{name}: {r['error']}")


S, D = QMP(f"{d}/src.sock"), QMP(f"{d}/dst.sock")
time.sleep(2)  # let the guest run and dirty its memory first
caps = {"precopy": [], "autoconverge": ["auto-converge"],
        "postcopy": ["postcopy-ram", "postcopy-blocktime"]}[mode]
for q in (S, D):
    if caps:
        q.cmd("migrate-set-capabilities",
              capabilities=[{"capability": c, "state": True} for c in caps])
S.cmd("migrate-set-parameters", **{"max-bandwidth": bw * 1_000_000})
D.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
S.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
t0, st, switch_ms, throttle = time.time(), {}, None, 0
while time.time() - t0 < limit:
    st = S.cmd("query-migrate")
    throttle = max(throttle, st.get("cpu-throttle-percentage") or 0)
    if st.get("status") in ("completed", "failed"):
        break
    if mode == "postcopy" and switch_ms is None and \
            (st.get("ram", {}).get("dirty-sync-count") or 0) >= 2:
        S.cmd("migrate-start-postcopy")
        switch_ms = round((time.time() - t0) * 1e3)
    time.sleep(0.05)
r = st.get("ram", {})
blocktime = None
if mode == "postcopy" and st.get("status") == "completed":
    blocktime = D.cmd("query-migrate").get("postcopy-blocktime")
print(json.dumps({"peer": "qemu-tcg-ab", "mode": mode, "ram_mib": ram, "bandwidth_mb_s": bw,
                  "status": st.get("status") if st.get("status") in ("completed", "failed")
                  else "timeout", "total_ms": st.get("total-time"),
                  "downtime_ms": st.get("downtime"), "passes": r.get("dirty-sync-count"),
                  "transferred_mb": int(r.get("transferred", 0) / 1e6),
                  "throttle_pct": throttle, "switch_ms": switch_ms,
                  "blocktime_ms": blocktime}))
src.kill()
dst.kill()
PY
