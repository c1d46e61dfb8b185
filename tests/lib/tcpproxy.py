#!/usr/bin/env python3
"""A TCP proxy for tests and benchmarks that break a migration's link.

It listens on 127.0.0.1 and forwards each connection it accepts to
127.0.0.1:TARGET, one thread per direction. On top of forwarding it can:

- black-hole: blackhole() stops forwarding, in both directions, and keeps
  every connection open (the proxy no longer reads, so both ends' buffers
  fill): what a silent partition looks like to both ends. From the command
  line the trigger is a file that appears (HOLE_FILE).
- cut: cut() closes every connection open now, by FIN or, with rst, by
  RST (SO_LINGER 0); connections accepted later are forwarded again.
- cut after N bytes: with cut_after, once N bytes went from the connecting
  side to the target (all connections together) every connection is cut,
  and so is every connection accepted later.

Used by tests/faults/matrix.py, tests/soak/soak.py, the integration test
stall-detect and bench/b14-stall.sh. From the command line:

  tcpproxy.py LISTEN_PORT TARGET_PORT [HOLE_FILE] [--cut-after BYTES] [--rst]

listens on LISTEN_PORT (0: any; the port chosen is printed), writes
HOLE_FILE.ready once it listens and black-holes from the moment HOLE_FILE
exists; it runs until it is killed.
"""
import argparse
import os
import socket
import sys
import threading
import time

# SO_LINGER on, 0 s: close() then sends a reset and drops unsent data.
_LINGER_RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"


class TcpProxy:
    """See the module's docstring. port is the port it listens on."""

    def __init__(self, target_port, listen_port=0, cut_after=None, rst=False):
        self.target = ("127.0.0.1", target_port)
        self.cut_after = cut_after
        self.rst = rst
        self.sent = 0
        self.exhausted = False
        self.closed = False
        self.lock = threading.Lock()
        self.socks = []
        # Set while data flows; cleared by blackhole(), which parks every
        # pump before its next recv() or send.
        self.flowing = threading.Event()
        self.flowing.set()
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", listen_port))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks += [c, u]
                if self.exhausted:
                    self._kill([c, u])
                    continue
            pair = {"open": 2}
            threading.Thread(target=self._pump, args=(c, u, True, pair),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, False, pair),
                             daemon=True).start()

    def _kill(self, socks):
        # shutdown() first: it wakes a pump blocked in recv() on the socket
        # (close() alone would not, and the connection would stay open
        # while it waits). Called with the lock held.
        for s in socks:
            try:
                if self.rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
            if s in self.socks:
                self.socks.remove(s)

    def _room(self, data):
        """The part of data that fits under cut_after (None: cut now)."""
        with self.lock:
            room = self.cut_after - self.sent
            if room <= 0 or self.exhausted:
                self.exhausted = True
                self._kill(list(self.socks))
                return None
            data = data[:room]
            self.sent += len(data)
            return data

    def _pump(self, a, b, forward, pair):
        try:
            while True:
                self.flowing.wait()
                data = a.recv(1 << 20)
                if not data:
                    b.shutdown(socket.SHUT_WR)
                    return
                if self.exhausted:
                    return
                if forward and self.cut_after is not None:
                    data = self._room(data)
                    if data is None:
                        return
                self.flowing.wait()
                b.sendall(data)
        except OSError:
            return
        finally:
            # The second pump of a pair to end closes both sockets.
            with self.lock:
                pair["open"] -= 1
                if pair["open"] == 0:
                    for s in (a, b):
                        if s in self.socks:
                            self.socks.remove(s)
                            s.close()

    def blackhole(self):
        """Stop forwarding in both directions; keep the connections open."""
        self.flowing.clear()

    def cut(self):
        """Close every connection open now (and forward again)."""
        with self.lock:
            self._kill(list(self.socks))
        self.flowing.set()

    def close(self):
        """Stop accepting and close every connection."""
        self.closed = True
        self.cut()
        self.ls.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("listen_port", type=int)
    ap.add_argument("target_port", type=int)
    ap.add_argument("hole_file", nargs="?",
                    help="black-hole from the moment this file exists "
                         "(HOLE_FILE.ready is written once the proxy listens)")
    ap.add_argument("--cut-after", type=int, metavar="BYTES",
                    help="cut every connection once BYTES went to the target")
    ap.add_argument("--rst", action="store_true",
                    help="cut by RST rather than FIN")
    a = ap.parse_args()
    p = TcpProxy(a.target_port, a.listen_port, a.cut_after, a.rst)
    print(p.port, flush=True)
    if a.hole_file:
        open(a.hole_file + ".ready", "w").close()
    while True:
        if a.hole_file and os.path.exists(a.hole_file):
            p.blackhole()
        time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
