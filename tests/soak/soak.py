#!/usr/bin/env python3
"""Soak: many migrations in a ring of three ferry-vm processes, half of
them with a fault injected from outside, under a sanitizer build.

The guest goes A -> B -> C -> A ... Each hop is verified (the engine's
verdict in the report, and the guest's own check of every page it reads).
Every other attempt carries a fault: a proxy that cuts the connection at a
random byte count, a destination frozen by SIGSTOP while the source is
cancelled, a destination that refuses (the source speaks TLS to a
plaintext listener, or a stranger sends it garbage first), or `ferry
cancel` at a random moment. After every attempt exactly one process must
run the guest, and the ring goes on from it.

A ferry-vm serves one guest's life: once its guest has left it cannot
listen again (no API command makes a "migrated" VM a destination), so the
process that sent the guest away is stopped with SIGTERM (its sanitizer
leak check runs at that exit) and started again as a destination in the
same slot. docs/soak.md says what that means for the resource curves.

At every attempt the descriptors (/proc/PID/fd) and VmRSS of the three
processes go into a CSV; after each failed attempt every process must have
no more descriptors than when it entered its role (the windows below cannot
see a descriptor leaked per failed attempt: processes restart every hop or
two); at the end both must be flat (the last 10% of the run against the
10%-20% window, per role) and a summary is printed.
Exit status: 0 clean, 1 a failure or a sanitizer finding, 2 usage.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
from tcpproxy import TcpProxy  # noqa: E402 (tests/lib: the shared proxy)

SLOTS = ("A", "B", "C")
FAULTS = ("cut", "sigstop", "refuse", "cancel")
ACTIVE = ("connecting", "negotiating", "precopy", "stopped", "switchover")


def now():
    return time.monotonic()


class SoakError(Exception):
    """An invariant the soak checks was broken (counted as a failure)."""


# --- the API socket --------------------------------------------------------

def api(path, cmd="status", timeout=10.0):
    """One command on a ferry-vm API socket; returns the reply object."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        f = s.makefile("rwb")
        f.readline()  # the greeting
        f.write(json.dumps({"execute": cmd}).encode() + b"\n")
        f.flush()
        while True:
            line = f.readline()
            if not line:
                raise OSError("API socket closed")
            obj = json.loads(line)
            if "return" in obj or "error" in obj:
                return obj
    finally:
        s.close()


def status(path):
    r = api(path)
    if "return" not in r:
        raise OSError("status refused: %s" % r)
    return r["return"]


# --- the processes ---------------------------------------------------------

class Vm:
    """One slot of the ring: the current ferry-vm process in it."""

    def __init__(self, soak, slot):
        self.soak = soak
        self.slot = slot
        self.sock = os.path.join(soak.out, slot + ".sock")
        self.proc = None
        self.incarnation = 0
        self.log = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else 0

    def start(self, incoming):
        s = self.soak
        self.incarnation += 1
        self.log = os.path.join(s.logs, "%s-%d.log" % (self.slot, self.incarnation))
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        args = [s.ferry_vm, "--api-socket", self.sock, "--memory", s.memory,
                "--vcpus", "1"]
        if incoming:
            args += ["--incoming", "tcp:127.0.0.1:0"]
        else:
            args += ["--workload", "random"]
        with open(self.log, "wb") as lf:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=lf, stderr=lf, env=s.env)
        end = now() + 60
        while now() < end:
            if self.proc.poll() is not None:
                raise SoakError("%s exited at start (%d): %s" %
                                (self.slot, self.proc.returncode, self.tail()))
            try:
                st = status(self.sock)
                g = st["guest"]["state"]
                if (incoming and g == "incoming" and st.get("listening")) or \
                        (not incoming and g == "running"):
                    s.entered(self, g)
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise SoakError("%s did not become ready" % self.slot)

    def stop(self, why, any_exit=False):
        """SIGTERM and wait: a clean exit (0) runs LeakSanitizer's check."""
        if not self.proc:
            return
        p = self.proc
        self.proc = None
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise SoakError("%s (%s) did not exit on SIGTERM within 30 s" %
                                (self.slot, why))
        if p.returncode != 0 and not (any_exit and p.returncode == 1):
            raise SoakError("%s (%s) exited with %d: %s" %
                            (self.slot, why, p.returncode, self.tail()))
        if not self.soak.keep_logs:
            try:
                os.unlink(self.log)
            except OSError:
                pass

    def tail(self, n=15):
        try:
            with open(self.log, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def resources(self):
        """(descriptors, VmRSS in KiB) of the process, or (-1, -1)."""
        try:
            fds = len(os.listdir("/proc/%d/fd" % self.pid))
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return fds, int(line.split()[1])
        except OSError:
            pass
        return -1, -1

    def state(self):
        try:
            st = status(self.sock)
            return st["guest"]["state"], st
        except (OSError, ValueError, KeyError):
            return "unreachable", None


# --- the soak ----------------------------------------------------------------

class Soak:
    def __init__(self, a):
        self.n = a.n
        self.memory = a.memory
        self.rng = random.Random(a.seed)
        self.seed = a.seed
        self.out = a.out
        self.keep_logs = a.keep_logs
        self.ferry = os.path.join(a.build, "tools", "ferry")
        self.ferry_vm = os.path.join(a.build, "vm", "ferry-vm")
        shutil.rmtree(self.out, ignore_errors=True)
        self.logs = os.path.join(self.out, "logs")
        self.san = os.path.join(self.out, "sanitizer")
        os.makedirs(self.logs)
        os.makedirs(self.san)
        self.env = dict(os.environ)
        # halt_on_error: a finding ends the process (the soak sees it and
        # stops); detect_leaks: LeakSanitizer runs at every clean exit.
        self.env["ASAN_OPTIONS"] = ("detect_leaks=1:halt_on_error=1:exitcode=23:"
                                    "log_path=%s/asan" % self.san)
        self.env["UBSAN_OPTIONS"] = ("halt_on_error=1:print_stacktrace=1:"
                                     "log_path=%s/ubsan" % self.san)
        self.env["LSAN_OPTIONS"] = "exitcode=23"
        self.psk = os.path.join(self.out, "psk.txt")
        with open(self.psk, "w") as f:
            f.write("soak:%s\n" % os.urandom(32).hex())
        self.vms = [Vm(self, s) for s in SLOTS]
        self.owner = 0
        self.csv = open(os.path.join(self.out, "resources.csv"), "w")
        self.csv.write("hop,fault,outcome,hop_ms,slot,pid,incarnation,state,fds,rss_kb\n")
        self.hop_t0 = now()
        self.rows = []  # (hop, slot, state, fds, rss)
        self.counts = {}
        self.failures = []
        self.restarts = 0
        # (slot, incarnation, role) -> descriptors when that process
        # entered that role; a failed attempt must not leave it more.
        self.fd_entry = {}
        self.fd_checks = 0

    def count(self, key):
        self.counts[key] = self.counts.get(key, 0) + 1

    def run_cli(self, args, timeout):
        return subprocess.run([self.ferry] + args, stdin=subprocess.DEVNULL,
                              capture_output=True, env=self.env, timeout=timeout)

    def migrate_popen(self, src, uri, extra=()):
        return subprocess.Popen([self.ferry, "migrate", src.sock, uri, "--json"]
                                + list(extra), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=self.env)

    def wait_migrate(self, p, src, timeout=120):
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.run_cli(["cancel", src.sock], 10)
            try:
                out, err = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                raise SoakError("ferry migrate did not end %d s after a cancel" % (timeout + 30))
        report = None
        for line in out.decode(errors="replace").splitlines()[::-1]:
            try:
                report = json.loads(line)
                break
            except ValueError:
                continue
        return p.returncode, report, err.decode(errors="replace")

    def listening_port(self, vm):
        st = status(vm.sock)
        uri = st.get("listening") or ""
        return int(uri.rsplit(":", 1)[1]) if uri.startswith("tcp:") else 0

    # --- one attempt --------------------------------------------------------

    def attempt(self, hop, fault):
        src = self.vms[self.owner]
        dst = self.vms[(self.owner + 1) % 3]
        port = self.listening_port(dst)
        if not port:
            raise SoakError("%s does not listen" % dst.slot)
        uri = "tcp:127.0.0.1:%d" % port
        kind = fault
        if fault == "none":
            rc, rep, err = self.wait_migrate(self.migrate_popen(src, uri), src)
        elif fault == "cut":
            mem = parse_size(self.memory)
            # Cut once a random byte count went to the destination, by
            # FIN or by RST at random.
            proxy = TcpProxy(port, cut_after=self.rng.randint(0, mem + mem // 4),
                             rst=self.rng.random() < 0.5)
            kind += "-rst" if proxy.rst else "-fin"
            try:
                rc, rep, err = self.wait_migrate(
                    self.migrate_popen(src, "tcp:127.0.0.1:%d" % proxy.port), src)
            finally:
                proxy.close()
        elif fault == "sigstop":
            p = self.migrate_popen(src, uri)
            self.wait_started(src, p)
            time.sleep(self.rng.uniform(0.0, 0.6))
            os.kill(dst.pid, signal.SIGSTOP)
            try:
                time.sleep(0.2)
                self.run_cli(["cancel", src.sock], 10)
                rc, rep, err = self.wait_migrate(p, src, timeout=60)
            finally:
                os.kill(dst.pid, signal.SIGCONT)
        elif fault == "refuse":
            if self.rng.random() < 0.5:
                kind += "-tls"
                rc, rep, err = self.wait_migrate(
                    self.migrate_popen(src, uri, ["--tls-psk", self.psk]), src)
            else:
                kind += "-garbage"
                self.stranger(port)
                # Listening on port 0, it chose a new port to listen again.
                self.wait_listening(dst, old=uri)
                uri = "tcp:127.0.0.1:%d" % self.listening_port(dst)
                rc, rep, err = self.wait_migrate(self.migrate_popen(src, uri), src)
        elif fault == "cancel":
            p = self.migrate_popen(src, uri)
            self.wait_started(src, p)
            time.sleep(self.rng.uniform(0.0, 0.5))
            self.run_cli(["cancel", src.sock], 10)
            rc, rep, err = self.wait_migrate(p, src)
        else:
            raise ValueError(fault)
        outcome = (rep or {}).get("status", "no-report")
        self.count("fault:" + kind)
        self.count("fault:%s:%s" % (kind, outcome))
        self.settle(hop, kind, src, dst, rc, rep, err)
        return kind, outcome

    def wait_started(self, src, p, limit=20):
        """Until the source runs the migration (or it ended already): a
        cancel that came before the migrate command would find nothing
        to cancel, and a frozen destination would then hold the source
        for its whole idle limit."""
        end = now() + limit
        while now() < end and p.poll() is None:
            try:
                if status(src.sock)["migration"]["state"] in ACTIVE:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)

    def stranger(self, port):
        """Garbage at the destination's listener: it must refuse it."""
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(os.urandom(self.rng.randint(1, 65536)))
            while s.recv(65536):
                pass
        except OSError:
            pass
        finally:
            s.close()

    def wait_listening(self, vm, limit=20, old=None):
        end = now() + limit
        while now() < end:
            try:
                st = status(vm.sock)
                if st["guest"]["state"] == "incoming" and st.get("listening") and \
                        st["listening"] != old:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise SoakError("%s does not listen again within %d s" % (vm.slot, limit))

    def settle(self, hop, kind, src, dst, rc, rep, err):
        """Exactly one process runs the guest; the ring goes on from it."""
        end = now() + 30
        while True:
            ss, sst = src.state()
            ds, dst_st = dst.state()
            # A source left unconfirmed stays paused for an operator.
            gone = ("migrated", "paused") if (rep or {}).get("owner") == "destination" \
                else ("migrated",)
            settled = (ss == "running" or ss in gone) and ds in ("running", "incoming")
            if settled and ds == "incoming" and not dst_st.get("listening"):
                settled = False
            if settled or now() > end:
                break
            time.sleep(0.05)
        running = [v for v in self.vms if v.state()[0] == "running"]
        if len(running) != 1:
            raise SoakError("after %s: %d processes run the guest (%s: %s, %s: %s); "
                            "migrate exit %s, report %s, stderr %s" %
                            (kind, len(running), src.slot, ss, dst.slot, ds, rc,
                             json.dumps(rep), err.strip()[-400:]))
        owner = running[0]
        unconfirmed = False
        if owner is dst and rep and rep.get("status") != "completed" and \
                rep.get("owner") == "destination" and "RELEASED" in rep.get("error", ""):
            # A cancel (or a cut) that came after RELEASED left: the source
            # no longer waited for the destination's answer, so it cannot
            # know that the guest runs there and stays paused for an
            # operator. Exactly one side runs the guest; the soak plays
            # the operator (the paused source is stopped) and counts it.
            unconfirmed = True
            self.count("unconfirmed")
            self.count("unconfirmed:%s" % kind)
            self.count("fault:%s:unconfirmed" % kind)
        elif owner is dst:
            if not rep or rep.get("status") != "completed" or rc != 0:
                raise SoakError("%s runs the guest but the migration says %s (exit %s)"
                                % (dst.slot, json.dumps(rep), rc))
            if rep.get("verified") is not True:
                raise SoakError("hop not verified: %s" % json.dumps(rep))
            if ss != "migrated":
                raise SoakError("%s is %s after its guest left" % (src.slot, ss))
        elif owner is src:
            if rep and rep.get("status") == "completed":
                raise SoakError("the migration completed but %s still runs the guest"
                                % src.slot)
            if rc == 0:
                raise SoakError("ferry migrate exited 0 but the guest stayed")
        else:
            raise SoakError("%s, neither source nor destination, runs the guest"
                            % owner.slot)
        self.check_guest(owner)
        self.record(hop, kind, rep)
        if owner is src:
            self.check_fds(kind)
        if owner is dst:
            self.count("moved" if unconfirmed else "completed")
            src.stop("sent its guest away", any_exit=unconfirmed)
            src.start(incoming=True)
            self.restarts += 1
            self.owner = (self.owner + 1) % 3
            self.entered(dst, "running")
        else:
            self.count("kept")

    def entered(self, vm, role):
        """The descriptors of @vm as it enters @role (started, or the
        guest arrived): what its failed attempts are measured against."""
        self.fd_entry[(vm.slot, vm.incarnation, role)] = vm.resources()[0]

    def check_fds(self, kind):
        """After a failed attempt each process has no more descriptors
        than when it entered its role (plus FD_SLACK, see there): a
        descriptor leaked per failed attempt shows at once, although the
        processes restart every hop or two. Sockets may still be closing
        as the report arrives, so a count above is measured again for 2 s
        before it counts as a leak."""
        for v in self.vms:
            role = v.state()[0]
            base = self.fd_entry.get((v.slot, v.incarnation, role))
            if base is None or base < 0:
                continue
            limit = base + FD_SLACK.get(role, 0)
            end = now() + 2
            fds = v.resources()[0]
            while fds > limit and now() < end:
                time.sleep(0.1)
                fds = v.resources()[0]
            self.fd_checks += 1
            if fds > limit:
                raise SoakError("%s (pid %d, %s) has %d descriptors after a failed "
                                "attempt (%s), %d when it entered that role (+%d allowed): "
                                "a leak per failed attempt; open: %s" %
                                (v.slot, v.pid, role, fds, kind, base,
                                 FD_SLACK.get(role, 0), fd_list(v.pid)))

    def check_guest(self, vm):
        """The guest's own check: it runs and found no bad page."""
        a = status(vm.sock)["guest"]
        end = now() + 5  # a vCPU thread may wait for a CPU a while here
        while True:
            time.sleep(0.1)
            b = status(vm.sock)["guest"]
            if b["steps"] > a["steps"] or now() > end:
                break
        if b["check_errors"]:
            raise SoakError("%s's guest found %d bad pages" % (vm.slot, b["check_errors"]))
        if not b["steps"] > a["steps"]:
            raise SoakError("%s's guest does not run (steps %d -> %d)" %
                            (vm.slot, a["steps"], b["steps"]))

    def record(self, hop, kind, rep):
        outcome = (rep or {}).get("status", "none")
        for v in self.vms:
            fds, rss = v.resources()
            st = v.state()[0]
            self.csv.write("%d,%s,%s,%.0f,%s,%d,%d,%s,%d,%d\n" % (
                hop, kind, outcome, (now() - self.hop_t0) * 1000, v.slot, v.pid,
                v.incarnation, st, fds, rss))
            self.rows.append((hop, v.slot, st, fds, rss))
        self.csv.flush()

    def sanitizer_findings(self):
        return sorted(os.listdir(self.san))

    # --- the run --------------------------------------------------------------

    def run(self):
        t0 = now()
        self.vms[0].start(incoming=False)
        self.vms[1].start(incoming=True)
        self.vms[2].start(incoming=True)
        faults = ["none"] * (self.n - self.n // 2) + \
                 [FAULTS[i % len(FAULTS)] for i in range(self.n // 2)]
        self.rng.shuffle(faults)
        hop = 0
        for hop in range(1, self.n + 1):
            self.hop_t0 = now()
            try:
                self.attempt(hop, faults[hop - 1])
            except (SoakError, OSError, subprocess.SubprocessError) as e:
                self.failures.append("hop %d (%s): %s" % (hop, faults[hop - 1], e))
                print("FAIL hop %d (%s): %s" % (hop, faults[hop - 1], e), flush=True)
                self.keep_logs = True
                break
            found = self.sanitizer_findings()
            if found:
                self.failures.append("hop %d: sanitizer report(s) %s" % (hop, found))
                break
            if hop % 50 == 0:
                self.progress(hop, t0)
        self.attempted = hop
        for v in self.vms:
            try:
                v.stop("end of the soak")
            except SoakError as e:
                self.failures.append(str(e))
        self.elapsed = now() - t0
        return self.summary()

    def progress(self, hop, t0):
        res = " ".join("%s %d fds %d MiB" % (v.slot, *self.fd_rss_mib(v))
                       for v in self.vms)
        print("hop %4d/%d  %6.0f s  completed %d  faults %d  failures %d  %s" % (
            hop, self.n, now() - t0, self.counts.get("completed", 0),
            sum(c for k, c in self.counts.items()
                if k.count(":") == 1 and k.startswith("fault:") and k != "fault:none"),
            len(self.failures), res), flush=True)

    @staticmethod
    def fd_rss_mib(v):
        fds, rss = v.resources()
        return fds, rss // 1024

    # --- the verdict ----------------------------------------------------------

    def flat(self):
        """Per role (the state at the record), the last 10% of the hops
        against the 10%-20% window: the same descriptor counts, and the
        median RSS within RSS_TOL."""
        lines, ok = [], True
        n = self.attempted
        if n < 20:
            return ["too few hops (%d) to compare windows" % n], True
        w1 = (n // 10, n // 5)
        w2 = (n - n // 10, n + 1)
        for role in ("running", "incoming", "migrated"):
            a = [r for r in self.rows if r[2] == role and w1[0] < r[0] <= w1[1]]
            b = [r for r in self.rows if r[2] == role and w2[0] < r[0] <= w2[1]]
            if not a or not b:
                continue
            fa, fb = sorted({r[3] for r in a}), sorted({r[3] for r in b})
            ra, rb = statistics.median(r[4] for r in a), statistics.median(r[4] for r in b)
            drift = (rb - ra) / ra
            f_ok = max(fb) <= max(fa)
            r_ok = drift <= RSS_TOL
            ok = ok and f_ok and r_ok
            lines.append("%-9s fds %s -> %s %s; RSS median %.1f -> %.1f MiB (%+.1f%%, limit +%d%%) %s" % (
                role, fa, fb, "flat" if f_ok else "GREW", ra / 1024, rb / 1024,
                drift * 100, RSS_TOL * 100, "flat" if r_ok else "GREW"))
        return lines, ok

    def summary(self):
        print()
        print("soak: %d attempts of %d in %.0f s (%.1f min), seed %d, guests %s random, ASan+UBSan"
              % (self.attempted, self.n, self.elapsed, self.elapsed / 60, self.seed, self.memory))
        print("migrations completed: %d; attempts that left the guest at its source: %d; "
              "processes restarted: %d" % (self.counts.get("completed", 0),
                                           self.counts.get("kept", 0), self.restarts))
        print("faults (outcomes as the source's report says):")
        for k in sorted(k for k in self.counts if k.startswith("fault:") and k.count(":") == 1):
            outs = ", ".join("%s %d" % (o.split(":")[2], c) for o, c in sorted(self.counts.items())
                             if o.startswith(k + ":"))
            print("  %-16s %4d  (%s)" % (k[6:], self.counts[k], outs))
        found = self.sanitizer_findings()
        print("sanitizer findings: %d%s" % (len(found), (" " + " ".join(found)) if found else ""))
        for f in found[:3]:
            with open(os.path.join(self.san, f), errors="replace") as fh:
                print("--- %s\n%s" % (f, "".join(fh.readlines()[:40])))
        print("failures: %d" % len(self.failures))
        for f in self.failures:
            print("  " + f)
        print("resources per slot over the run (fds / RSS MiB: first min max last):")
        for s in SLOTS:
            r = [x for x in self.rows if x[1] == s and x[3] >= 0]
            if not r:
                continue
            f = [x[3] for x in r]
            m = [x[4] // 1024 for x in r]
            print("  %s  fds %d %d %d %d   RSS %d %d %d %d   (%d processes)" % (
                s, f[0], min(f), max(f), f[-1], m[0], min(m), max(m), m[-1],
                self.vms[SLOTS.index(s)].incarnation))
        print("descriptors after each failed attempt, against each process's own count "
              "when it entered its role: %d checks, %s" %
              (self.fd_checks, "none grew" if not any("descriptors after a failed" in f
                                                       for f in self.failures) else "a LEAK"))
        lines, ok = self.flat()
        print("flatness (per role, hops %d%%-%d%% against the last 10%%):" % (10, 20))
        for l in lines:
            print("  " + l)
        print("CSV: %s" % os.path.join(self.out, "resources.csv"))
        bad = bool(self.failures or found or not ok)
        print("soak: %s" % ("FAILED" if bad else "clean"))
        return 1 if bad else 0


RSS_TOL = 0.10
# Descriptors a process may hold after a failed attempt beyond its count
# when it entered the role (see check_fds; docs/soak.md says why).
FD_SLACK = {"running": 0, "incoming": 0}


def fd_list(pid):
    """What the process's descriptors point at, for a leak's message."""
    out = []
    try:
        for fd in sorted(os.listdir("/proc/%d/fd" % pid), key=int):
            try:
                out.append("%s->%s" % (fd, os.readlink("/proc/%d/fd/%s" % (pid, fd))))
            except OSError:
                pass
    except OSError:
        pass
    return " ".join(out)


def report(path, step):
    """Re-read a soak's CSV (also of a run stopped early): outcomes by
    fault, and every STEP hops the descriptors and median RSS per role."""
    import csv
    rows = list(csv.DictReader(open(path)))
    hops = {}
    for r in rows:
        hops[int(r["hop"])] = (r["fault"], r["outcome"])
    counts = {}
    for f, o in hops.values():
        counts.setdefault(f, {}).setdefault(o, 0)
        counts[f][o] += 1
    print("%d attempts; faults and outcomes:" % len(hops))
    for f in sorted(counts):
        print("  %-16s %4d  (%s)" % (f, sum(counts[f].values()),
                                     ", ".join("%s %d" % kv for kv in sorted(counts[f].items()))))
    print("| hops | running fds | running RSS MiB | incoming fds | incoming RSS MiB | migrated fds | migrated RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    last = max(hops)
    for lo in range(0, last, step):
        cells = []
        for role in ("running", "incoming", "migrated"):
            sel = [r for r in rows if r["state"] == role and lo < int(r["hop"]) <= lo + step]
            if not sel:
                cells += ["-", "-"]
                continue
            f = sorted({int(r["fds"]) for r in sel})
            m = statistics.median(int(r["rss_kb"]) for r in sel) / 1024
            cells += ["%d-%d" % (f[0], f[-1]) if len(f) > 1 else str(f[0]), "%.1f" % m]
        print("| %d-%d | %s |" % (lo + 1, min(lo + step, last), " | ".join(cells)))
    ms = sorted(float(r["hop_ms"]) for r in rows)
    print("attempt time: median %.1f s, max %.1f s" % (ms[len(ms) // 2] / 1000, ms[-1] / 1000))


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", help="build directory (sanitized); required to run")
    p.add_argument("-n", type=int, default=1000, help="migration attempts (default 1000)")
    p.add_argument("--memory", default="32M", help="guest memory (default 32M)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    p.add_argument("--out", default=None, help="output directory (default BUILD/soak)")
    p.add_argument("--keep-logs", action="store_true", help="keep every process's log")
    p.add_argument("--report", metavar="CSV", help="only summarise an earlier run's CSV")
    p.add_argument("--step", type=int, default=100, help="--report: rows of STEP hops")
    a = p.parse_args()
    if a.report:
        report(a.report, a.step)
        return
    if not a.build:
        p.error("--build is required")
    if a.seed is None:
        a.seed = int(time.time())
    if a.out is None:
        a.out = os.path.join(a.build, "soak")
    if a.n < 1:
        p.error("-n must be at least 1")
    sys.exit(Soak(a).run())


if __name__ == "__main__":
    main()
