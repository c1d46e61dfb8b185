#!/usr/bin/env python3
"""One restore of a snapshot file, timed from the start of the process.

Starts `ferry-vm --api-socket SOCK --incoming file:PATH [--lazy]` and asks
its API socket for `status` every millisecond: the time to its first
answer, to the first status whose guest runs, and (lazy) to the first whose
migration says every page is in; then it waits for the guest's verdict and
ends the VM. Prints one JSON line: {"status", "mode", "first_answer_ms",
"running_ms", "all_in_ms", "file_bytes", "restore_mb_per_s" (file bytes
over the time to all pages in, from the process start), "verified",
"check_errors", "migration": the engine's figures from `ferry status`
(total_ms, mb_per_s, lazy_pages, lazy_placed, page_faults,
page_wait_p50_ms, page_wait_p99_ms, page_wait_max_ms, lazy_complete_ms, as
the VM names them), and those lazy figures copied to the top level}.

usage: restore.py FERRY_VM SOCK FILE eager|lazy [TIMEOUT_S=600] [-- FERRY_VM_ARGS...]
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

LAZY_KEYS = ("lazy_pages", "lazy_placed", "page_faults", "page_wait_p50_ms",
             "page_wait_p99_ms", "page_wait_max_ms", "lazy_complete_ms")


def status(sock):
    """The VM's status, or None while it does not answer."""
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sock)
        f = s.makefile("rwb")
        f.readline()  # the greeting
        f.write(b'{"execute": "status"}\n')
        f.flush()
        return json.loads(f.readline())["return"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        s.close()


def all_in(m, mode):
    """Whether every page of the file is in guest memory."""
    if mode == "eager":
        return True  # an eager restore runs the guest only then
    if m.get("lazy_complete_ms"):
        return True
    pages = m.get("lazy_pages")
    return bool(pages) and m.get("lazy_placed") == pages


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    vm, sock, path, mode = sys.argv[1:5]
    args = sys.argv[5:]
    extra = args[args.index("--") + 1:] if "--" in args else []
    args = args[:args.index("--")] if "--" in args else args
    limit = float(args[0]) if args else 600.0
    cmd = [vm, "--api-socket", sock, "--incoming", "file:" + path]
    if mode == "lazy":
        cmd.append("--lazy")
    cmd += extra
    out = {"status": "ok", "mode": mode, "first_answer_ms": None, "running_ms": None,
           "all_in_ms": None, "verified": None}
    try:
        os.unlink(sock)
    except FileNotFoundError:
        pass
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=sys.stderr)
    ms = lambda: round((time.monotonic() - t0) * 1e3, 1)
    st = None
    while True:
        if p.poll() is not None:
            out["status"] = f"ferry-vm exited {p.returncode}"
            break
        if time.monotonic() - t0 > limit:
            out["status"] = "timeout"
            break
        st = status(sock)
        if st is None:
            time.sleep(0.001)
            continue
        now = ms()
        if out["first_answer_ms"] is None:
            out["first_answer_ms"] = now
        g, m = st.get("guest") or {}, st.get("migration") or {}
        if g.get("state") == "failed" or m.get("state") in ("failed", "cancelled"):
            out["status"] = f"restore failed: {g.get('error') or m.get('error')}"
            break
        if out["running_ms"] is None and g.get("state") == "running":
            out["running_ms"] = now
        if out["running_ms"] is not None and all_in(m, mode):
            out["all_in_ms"] = now
            break
        # Fast while the start is timed, gentler while pages stream in.
        time.sleep(0.001 if out["running_ms"] is None else 0.005)
    # The verdict comes once the guest has been checked.
    while out["status"] == "ok" and time.monotonic() - t0 < limit:
        st = status(sock) or st
        if st and st.get("verified") is not None:
            break
        if p.poll() is not None:
            break
        time.sleep(0.05)
    if st:
        m = st.get("migration") or {}
        out["migration"] = m
        out["verified"] = st.get("verified")
        out["check_errors"] = (st.get("guest") or {}).get("check_errors")
        for k in LAZY_KEYS:
            out[k] = m.get(k)
    try:
        out["file_bytes"] = os.path.getsize(path)
    except OSError:
        out["file_bytes"] = None
    if out["file_bytes"] and out["all_in_ms"]:
        out["restore_mb_per_s"] = round(out["file_bytes"] / (out["all_in_ms"] / 1e3) / 1e6, 1)
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if out["status"] == "ok" and out["verified"] is False:
        out["status"] = "not verified"
    out["status"] = "completed" if out["status"] == "ok" else out["status"]
    print(json.dumps(out))
    sys.exit(0 if out["status"] == "completed" else 1)


if __name__ == "__main__":
    main()
