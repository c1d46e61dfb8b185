#!/usr/bin/env bash
# Peer baseline for snapshots: QEMU (TCG, no KVM needed) saves a guest to a
# file with its own migration, as `savevm`-style tools do it: the guest is
# paused (-S), its RAM incompressible random data (a file image mapped
# private, as bench/qemu-peer.sh does), and `migrate "exec:cat > FILE"`
# writes the whole stream into FILE.
#
# usage: qemu-snapshot.sh probe
#          prints what this QEMU offers for files: its version, whether
#          the migration capability mapped-ram exists (QEMU 9.0 and later;
#          from query-migrate-capabilities) and whether `migrate` takes a
#          file: URI (QEMU 8.2 and later; tried on a 16 MiB guest)
#        qemu-snapshot.sh save RAM_MIB FILE [MODE] [IMAGE]
#          MODE exec (default): migrate "exec:cat > FILE"
#          MODE background-snapshot: the same with QEMU's capability
#            background-snapshot on (QEMU 6.0 and later, its live
#            snapshot: the guest runs while userfaultfd write-protection
#            saves each page before its first write). The guest runs
#            here (QEMU 7.2 aborts a background snapshot of a guest never
#            started, "invalid runstate transition: 'prelaunch' ->
#            'paused'"): its firmware finds nothing to boot and halts, so
#            it writes almost nothing while it is saved.
#          MODE mapped-ram: capability mapped-ram on, migrate "file:FILE"
#            (status "unsupported" when this QEMU lacks either)
#          IMAGE: a file of RAM_MIB MiB of random data to use as guest RAM
#            (default: one made in /dev/shm for this run and removed)
# prints one JSON line. save: {"peer": "qemu", "mode", "ram_mib",
#   "status", "total_ms" (QEMU's total-time), "downtime_ms", "file_bytes",
#   "mb_per_s" (file bytes / total), "sync_ms" (a `sync FILE` after it:
#   QEMU does not flush the file), "error"}
# needs: qemu-system-x86 (Debian package) and python3; installs qemu if root.
set -euo pipefail
what=${1:-}
case $what in
probe) ;;
save) RAM=${2:?RAM_MIB}; FILE=${3:?FILE}; MODE=${4:-exec}; IMAGE=${5:-} ;;
*) echo "usage: qemu-snapshot.sh probe | save RAM_MIB FILE [exec|background-snapshot|mapped-ram] [IMAGE]" >&2; exit 2 ;;
esac
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
	[ "$(id -u)" = 0 ] || { echo "install the Debian package qemu-system-x86" >&2; exit 2; }
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >/dev/null
fi
dir=$(mktemp -d /tmp/qemu-snapshot.XXXXXX)
QEMU=''
own_image=''
cleanup() {
	if [ -n "$QEMU" ]; then
		kill "$QEMU" 2>/dev/null || true
		wait "$QEMU" 2>/dev/null || true
	fi
	rm -rf "$dir"
	[ -z "$own_image" ] || rm -f "$own_image"
}
trap cleanup EXIT

common=(-M q35 -accel tcg -nographic -nodefaults -display none)
[ "${MODE:-}" = background-snapshot ] || common+=(-S)
if [ "$what" = probe ]; then
	qemu-system-x86_64 "${common[@]}" -m 16M \
		-qmp unix:"$dir/qmp.sock",server=on,wait=off >"$dir/qemu.log" 2>&1 &
	QEMU=$!
else
	if [ -z "$IMAGE" ]; then
		own_image=/dev/shm/qemu-snapshot-ram-$$.bin
		IMAGE=$own_image
		head -c "$((RAM << 20))" /dev/urandom >"$IMAGE"
	fi
	qemu-system-x86_64 "${common[@]}" -m "${RAM}M" \
		-object "memory-backend-file,id=mem,size=${RAM}M,mem-path=$IMAGE,share=off,prealloc=on" \
		-machine memory-backend=mem \
		-qmp unix:"$dir/qmp.sock",server=on,wait=off >"$dir/qemu.log" 2>&1 &
	QEMU=$!
	rm -f "$FILE"
fi
python3 - "$what" "$dir" "${RAM:-16}" "${FILE:-}" "${MODE:-}" <<'PY'
import json, os, socket, subprocess, sys, time
what, d, ram, path, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]


class QMP:
    def __init__(self, sock):
        for _ in range(600):
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(sock)
                break
            except OSError:
                self.s.close()
                time.sleep(0.05)
        else:
            raise SystemExit("QEMU's QMP socket never answered (see its log)")
        self.f = self.s.makefile("rw")
        self.greeting = json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        """(return, None) or (None, error description)."""
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r:
                return r["return"], None
            if "error" in r:
                return None, r["error"].get("desc", str(r["error"]))


def finish(q, limit_s=1800):
    st = {}
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        st, _ = q.cmd("query-migrate")
        if st.get("status") in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.02)
    return st


q = QMP(d + "/qmp.sock")
v = q.greeting.get("QMP", {}).get("version", {}).get("qemu", {})
version = f"{v.get('major')}.{v.get('minor')}.{v.get('micro')}"
caps, _ = q.cmd("query-migrate-capabilities")
names = [c["capability"] for c in caps or []]
mapped = "mapped-ram" in names
if what == "probe":
    probe = d + "/probe.img"
    _, err = q.cmd("migrate", uri="file:" + probe)
    if err is None:
        finish(q, 60)
    print(json.dumps({"peer": "qemu", "status": "completed", "qemu_version": version,
                      "mapped_ram": mapped, "file_uri": err is None,
                      "file_uri_error": err, "capabilities": names}))
    sys.exit(0)

out = {"peer": "qemu", "mode": mode, "ram_mib": ram, "qemu_version": version}
q.cmd("migrate-set-parameters", **{"max-bandwidth": 100_000_000_000})
if mode == "mapped-ram":
    if not mapped:
        out.update(status="unsupported",
                   error=f"QEMU {version} has no mapped-ram capability (added in 9.0)")
        print(json.dumps(out))
        sys.exit(0)
    _, err = q.cmd("migrate-set-capabilities",
                   capabilities=[{"capability": "mapped-ram", "state": True}])
    uri = "file:" + path
elif mode == "background-snapshot":
    _, err = q.cmd("migrate-set-capabilities",
                   capabilities=[{"capability": "background-snapshot", "state": True}])
    uri = "exec:cat > '" + path.replace("'", "'\\''") + "'"
else:
    err = None
    uri = "exec:cat > '" + path.replace("'", "'\\''") + "'"
if err is None:
    _, err = q.cmd("migrate", uri=uri)
if err is not None:
    out.update(status="unsupported" if mode == "mapped-ram" else "failed", error=err)
    print(json.dumps(out))
    sys.exit(0 if mode == "mapped-ram" else 1)
st = finish(q)
total = st.get("total-time")
size = os.path.getsize(path) if os.path.exists(path) else None
t0 = time.monotonic()
subprocess.run(["sync", path], check=False)
out.update(status=st.get("status"), total_ms=total, downtime_ms=st.get("downtime"),
           file_bytes=size,
           mb_per_s=round(size / (total / 1e3) / 1e6, 1) if total and size else None,
           sync_ms=round((time.monotonic() - t0) * 1e3, 1), error=st.get("error-desc"))
print(json.dumps(out))
sys.exit(0 if out["status"] == "completed" else 1)
PY
