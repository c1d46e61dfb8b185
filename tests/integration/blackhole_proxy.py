#!/usr/bin/env python3
# A TCP proxy for tests and benchmarks of stall detection:
#   blackhole_proxy.py LISTEN_PORT DEST_PORT HOLE_FILE
# listens on 127.0.0.1:LISTEN_PORT, forwards each connection to
# 127.0.0.1:DEST_PORT, and writes HOLE_FILE.ready once it listens. From the
# moment HOLE_FILE exists it forwards nothing more, in either direction,
# and keeps every connection open: what a silent partition looks like to
# both ends.
import os, selectors, socket, sys
lport, dport, hole = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", lport)); ls.listen(16)
open(hole + ".ready", "w").close()
sel = selectors.DefaultSelector(); sel.register(ls, selectors.EVENT_READ)
peer = {}
while True:
    for key, _ in sel.select(0.02):
        s = key.fileobj
        if s is ls:
            a, _ = ls.accept(); b = socket.create_connection(("127.0.0.1", dport))
            peer[a], peer[b] = b, a
            sel.register(a, selectors.EVENT_READ); sel.register(b, selectors.EVENT_READ)
            continue
        if os.path.exists(hole):
            continue
        try:
            d = s.recv(1 << 20)
        except OSError:
            d = b""
        if not d:
            for x in (s, peer.pop(s)):
                sel.unregister(x); x.close(); peer.pop(x, None)
            continue
        peer[s].sendall(d)
    if os.path.exists(hole):
        for s in list(peer):
            try: sel.unregister(s)
            except (KeyError, ValueError): pass
