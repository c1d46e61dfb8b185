#!/usr/bin/env python3
"""The fault matrix of issue 22: every fault at every moment of a migration,
with real ferry-vm processes driven by the ferry command line.

A cell is (fault, moment, connections). The fault lands at the moment
through ferry-vm's FERRY_VM_FAULT=at:MOMENT:ACTION hooks (vm/fault.c): on
the side that sees the moment, either the fault itself (kill, stop, cut)
or a breakpoint (stop) while the harness kills or freezes the other side
or black-holes the link (a proxy). Then it records which side runs the
guest, both sides' owner, whether each live side answers `ferry status
--json`, whether the survivor migrates again to a fresh destination and
verifies, and how long detection took (ms from the fault to the failure
reported: the source's `ferry migrate` ending, the destination's status
showing the failed attempt).

Usage: matrix.py [--ferry PATH --ferry-vm PATH] [--subset fast|full]
                 [--only FAULT[:MOMENT[:CONNS]][,...]] [--stall-ms MS]
                 [--markdown FILE] [--keep]
(FERRY and FERRY_VM in the environment stand for the first two.)
--only picks cells (several, comma-separated); --stall-ms is the stall
limit of both sides in every cell (default 2000), which the stall cells
detect.
Exit status: 0 every cell passed or was skipped, 1 a cell failed, 77 all
skipped.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
from tcpproxy import TcpProxy  # noqa: E402 (tests/lib: the shared proxy)

MOMENTS = ['negotiation', 'pass1', 'passN', 'stopped', 'state',
           'before-ready', 'after-ready', 'after-released', 'postcopy',
           'handoff', 'pushing', 'repushing']
FAULTS = ['kill-src', 'kill-dst', 'cut', 'stall-src', 'stall-dst',
          'stall-link', 'enospc']
# The sides that see each moment (vm/fault.c), the preferred one first.
SEEN = {
    'negotiation': ('src', 'dst'), 'pass1': ('src',), 'passN': ('src',),
    'stopped': ('src', 'dst'), 'state': ('src', 'dst'),
    'before-ready': ('src', 'dst'), 'after-ready': ('src',),
    'after-released': ('dst',), 'postcopy': ('src', 'dst'),
    'handoff': ('src',), 'pushing': ('src',), 'repushing': ('src',),
}
# The moments after the switch to postcopy: the destination runs the
# guest while its memory still arrives. pushing and repushing are inside
# the source's postcopy phase (its threads serve and push), before and
# after a recovery; the harness reaches repushing by cutting at pushing
# (FERRY_VM_FAULT=at:pushing:cut) and recovering.
POSTCOPY = ('postcopy', 'pushing', 'repushing')
FAST = [('kill-dst', 'after-ready', 1), ('cut', 'pass1', 1),
        ('kill-src', 'state', 1), ('kill-dst', 'after-released', 1),
        ('kill-src', 'pushing', 1)]
# A snapshot's moments: it has no switchover, no postcopy, no handoff.
# (A snapshot of this guest is written in one pass while it runs, 80 ms
# here, and --max-bandwidth does not slow a file: no later pass to hit.)
SNAPSHOT_MOMENTS = ('pass1', 'stopped', 'state')
STALL_MS = 2000  # --stall-ms
MEM = '64M'


def now_ms():
    return time.time() * 1000.0


def free_port():
    lo = int(open('/proc/sys/net/ipv4/ip_local_port_range').read().split()[0])
    for _ in range(500):
        p = random.randrange(10000, max(lo, 10001))
        s = socket.socket()
        try:
            s.bind(('127.0.0.1', p))
        except OSError:
            continue
        finally:
            s.close()
        return p
    raise RuntimeError('no free port')


def expected(fault, moment):
    """Who must run the guest after the fault, and why."""
    released = moment == 'after-released' or moment in POSTCOPY
    if fault == 'enospc':
        return 'src', 'the snapshot fails, the source runs on'
    if fault == 'kill-src':
        if moment == 'after-released':
            return 'dst', 'the destination had "released": it runs'
        if moment in POSTCOPY:
            return 'none', ('the destination waits on pages that never '
                            'come and says how many are missing')
        return 'none', ('the guest died with its source; the destination '
                        'must not run a partial copy')
    if fault == 'kill-dst':
        if moment == 'after-released':
            return 'none', ('"released" was sent and may have been read: '
                            'the source says unconfirmed')
        if moment in POSTCOPY:
            return 'none', ('the guest may have run at the destination: '
                            'the source stays paused')
        return 'src', 'before the point of no return the source resumes'
    # cut and the stalls: both processes live on.
    if fault == 'stall-dst' and moment == 'after-ready':
        return 'dst', ('"released" lands in the frozen destination\'s socket: '
                       'the source says unconfirmed (owner destination), '
                       'the thawed destination reads it and runs')
    if fault == 'stall-link' and moment == 'after-ready':
        return 'src|none', ('the proxy took "released" and kept it: the '
                            'source resumes, or says unconfirmed')
    if moment == 'negotiation':
        return 'src|dst', ('the source resumes, or connects again to the '
                           'destination listening again and completes')
    if released:
        return 'dst', 'the destination had "released": it owns the guest'
    return 'src', 'before the point of no return the source resumes'


class Cell:
    def __init__(self, h, fault, moment, conns):
        self.h, self.fault, self.moment, self.conns = h, fault, moment, conns
        self.dir = tempfile.mkdtemp(prefix='ferry-fault.')
        self.procs = {}
        self.row = {'fault': fault, 'moment': moment, 'conns': conns,
                    'runs_src': '-', 'runs_dst': '-', 'owner': '-',
                    'again': '-', 'detect': '-', 'result': 'FAIL',
                    'why': ''}
        self.problems = []
        self.proxy = None
        self.client = None

    # --- processes -------------------------------------------------------
    def sock(self, name):
        return os.path.join(self.dir, name + '.sock')

    def log(self, name):
        return os.path.join(self.dir, name + '.log')

    def start_vm(self, name, args, fault=None, wrap=None):
        env = dict(os.environ)
        env.pop('FERRY_VM_FAULT', None)
        if fault:
            env['FERRY_VM_FAULT'] = fault
        cmd = [self.h.ferry_vm, '--api-socket', self.sock(name)] + args
        if wrap:
            cmd = wrap + cmd
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                             stdout=open(self.log(name), 'w'),
                             stderr=subprocess.STDOUT, env=env)
        self.procs[name] = p
        end = time.time() + 30
        while time.time() < end:
            st = self.status(name)
            if st and st['guest']['state'] not in ('initializing',):
                return p
            if p.poll() is not None:
                raise RuntimeError('%s exited at start: %s' %
                                   (name, self.tail(name)))
            time.sleep(0.05)
        raise RuntimeError('%s did not start' % name)

    def tail(self, name, n=5):
        try:
            return ' | '.join(open(self.log(name)).read().splitlines()[-n:])
        except OSError:
            return ''

    def alive(self, name):
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def stopped(self, name):
        p = self.procs.get(name)
        try:
            st = open('/proc/%d/stat' % p.pid).read()
            return st[st.rindex(')') + 2] == 'T'
        except (OSError, ValueError, AttributeError):
            return False

    def status(self, name, timeout=2.0):
        """The status over the API socket directly (cheap to poll)."""
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(timeout)
            s.connect(self.sock(name))
            f = s.makefile('rwb')
            f.readline()
            f.write(b'{"execute":"status"}\n')
            f.flush()
            r = json.loads(f.readline())
            s.close()
            return r.get('return')
        except (OSError, ValueError):
            return None

    def cli_status(self, name):
        """`ferry status --json`: what the matrix records as manageable."""
        try:
            r = subprocess.run([self.h.ferry, 'status', self.sock(name),
                                '--json'], capture_output=True, timeout=10)
            return json.loads(r.stdout) if r.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError):
            return None

    def runs(self, name):
        if not self.alive(name) or self.stopped(name):
            return False
        a = self.status(name)
        if not a or a['guest']['state'] != 'running':
            return False
        # A destination paused in postcopy runs the guest: its vCPUs that
        # need a page not there yet wait for the recovery.
        if a['migration']['state'] == 'postcopy-paused':
            return 'paused'
        if a['guest']['workload'] == 'kv':
            return self.kv_answers(name, a)
        # A vCPU thread may wait for a CPU a while on a loaded machine:
        # the guest runs if its steps grow within 5 s.
        end = time.time() + 5
        while time.time() < end:
            time.sleep(0.1)
            b = self.status(name)
            if b and b['guest']['steps'] > a['guest']['steps']:
                return True
        return False

    def accepted(self, st):
        """The kv guest's count of connections it ever accepted (kept in
        the guest's own memory, so each process counts its own)."""
        return ((st or {}).get('net') or {}).get('accepted')

    def kv_answers(self, name, a):
        """The kv guest of @name answers PING on a new connection (its
        vCPUs step only when there are requests). Both processes listen
        on the same port in turn, so an answer alone does not say which
        one gave it: @name's own accepted count must grow too."""
        before = self.accepted(a)
        if before is None:
            return False
        try:
            with socket.create_connection(('127.0.0.1', self.kvport), 2) as c:
                c.settimeout(5)
                c.sendall(b'PING\r\n')
                if not c.recv(64).startswith(b'+PONG'):
                    return False
        except OSError:
            return False
        end = time.time() + 5
        while time.time() < end:
            n = self.accepted(self.status(name))
            if n is not None and n > before:
                return True
            time.sleep(0.1)
        return False

    def migrate(self, src, port, extra, out):
        cmd = [self.h.ferry, 'migrate', self.sock(src),
               'tcp:127.0.0.1:%d' % port, '--json'] + extra
        return subprocess.Popen(cmd, stdout=open(out, 'w'),
                                stderr=open(out + '.log', 'w'),
                                stdin=subprocess.DEVNULL)

    def cleanup(self):
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                    p.kill()
                except OSError:
                    pass
                p.wait()
        if self.proxy:
            self.proxy.close()
        if self.h.keep:
            print('  logs kept in', self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- the fault ---------------------------------------------------------
    def plan(self):
        """(hook side, FERRY_VM_FAULT action, what the harness does)."""
        victim = {'kill-src': 'src', 'kill-dst': 'dst', 'stall-src': 'src',
                  'stall-dst': 'dst', 'enospc': 'src'}.get(self.fault)
        seen = SEEN[self.moment]
        side = victim if victim in seen else seen[0]
        if self.fault.startswith('kill') and side == victim:
            return side, 'kill', None
        if self.fault in ('stall-src', 'stall-dst') and side == victim:
            return side, 'stop', None
        if self.fault == 'cut':
            return side, 'cut', None
        return side, 'stop', self.fault

    def fault_time(self, side):
        """The hook's own clock: 't=MS' on the cell's moment's line."""
        at = 'fault: at %s: ' % self.moment
        try:
            for line in open(self.log(side)):
                if at in line and 't=' in line:
                    return float(line.rsplit('t=', 1)[1].split()[0])
        except OSError:
            pass
        return None

    def run(self):
        try:
            self._run()
        except Exception as e:  # a harness error fails the cell
            self.problems.append('harness: %s' % e)
        finally:
            self.cleanup()
        if self.row['result'] != 'SKIP':
            self.row['result'] = 'FAIL' if self.problems else 'PASS'
            self.row['why'] = '; '.join(self.problems) or self.row['why']
        return self.row

    def skip(self, why):
        self.row['result'] = 'SKIP'
        self.row['why'] = why

    def _run(self):
        if self.fault.startswith('stall') and not self.h.stall:
            return self.skip('needs stall detection (h/stall)')
        if self.fault == 'enospc':
            return self.run_enospc()
        if self.moment in POSTCOPY and not self.h.postcopy:
            return self.skip('postcopy needs root (userfaultfd)')
        if self.moment == 'handoff' and os.geteuid() != 0:
            return self.skip('handoff needs root (TCP_REPAIR)')
        side, action, then = self.plan()
        hook = 'at:%s:%s' % (self.moment, action)
        if self.moment == 'repushing':
            hook = 'at:pushing:cut,' + hook
        mport = free_port()
        kv = []
        if self.moment == 'handoff':
            self.kvport = free_port()
            kv = ['--listen', 'tcp:127.0.0.1:%d' % self.kvport]
        vst = ['--stall-timeout-ms', str(STALL_MS)] if self.h.vm_stall else []
        self.start_vm('dst', ['--memory', MEM, '--incoming',
                              'tcp:127.0.0.1:%d' % mport] + kv + vst,
                      fault=hook if side == 'dst' else None)
        # Inside postcopy's phase: a guest that dirties more over a
        # slower link leaves more to push after the switch (about 3 s
        # of it, as in tests/integration/postcopy_failures.sh), so the
        # phase is still under way when the fault lands, also after a
        # recovery (repushing).
        inside = self.moment in ('pushing', 'repushing')
        rate, bw = ('50', '20') if inside else ('10', '40')
        wl = ['--workload', 'kv'] if kv else ['--workload', 'random',
                                              '--dirty-rate', rate]
        self.start_vm('src', ['--memory', MEM] + wl + kv,
                      fault=hook if side == 'src' else None)
        client = None
        if kv:
            client = socket.create_connection(('127.0.0.1', self.kvport))
            client.settimeout(5)
            client.sendall(b'PING\r\n')
            client.recv(64)
        port = mport
        if self.fault == 'stall-link' and self.moment != 'repushing':
            self.proxy = TcpProxy(mport)
            port = self.proxy.port
        extra = ['--connections', str(self.conns), '--max-bandwidth', bw,
                 '--max-passes', '8', '--timeout-strategy', 'switchover']
        if self.moment in POSTCOPY:
            extra += ['--postcopy-after-passes', '1']
        if self.h.stall:
            extra += ['--stall-timeout-ms', str(STALL_MS)]
        first = 'm0' if self.moment == 'repushing' else 'm1'
        mig = self.migrate('src', port, extra,
                           os.path.join(self.dir, first + '.json'))
        if self.moment == 'repushing':
            mig = self.recovered(mig)
            if mig is None:
                return
        t0 = self.reach(side, action, mig)
        if t0 is None:
            return
        if then:
            t0 = self.apply(then, side)
        self.client = client
        self.hook = (side, action)
        self.observe(t0, mig)

    def recovered(self, mig):
        """repushing: the first postcopy phase was cut at pushing; once
        both sides say postcopy-paused the destination listens again
        (`ferry recover`) and the source resumes there (through the
        proxy in a stall-link cell). The resumed `ferry migrate` (its
        report m1, the one the cell judges), or None."""
        end = time.time() + 60
        while time.time() < end:
            a, b = self.status('src', 0.5), self.status('dst', 0.5)
            if mig.poll() is not None and a and b and all(
                    x['migration']['state'] == 'postcopy-paused'
                    for x in (a, b)):
                break
            if not (self.alive('src') and self.alive('dst')):
                end = 0
            time.sleep(0.05)
        else:
            self.problems.append('the cut at pushing did not pause both '
                                 'sides: src %s, dst %s' % (
                                     self.report('m0').get('status'),
                                     ((self.status('dst') or {}).get(
                                         'migration') or {}).get('state')))
            return None
        rport = free_port()
        r = subprocess.run([self.h.ferry, 'recover', self.sock('dst'),
                            'tcp:127.0.0.1:%d' % rport],
                           capture_output=True, text=True, timeout=30)
        if r.returncode:
            self.problems.append('ferry recover: %s' %
                                 (r.stdout + r.stderr).strip()[:200])
            return None
        port = rport
        if self.fault == 'stall-link':
            self.proxy = TcpProxy(rport)
            port = self.proxy.port
        return self.migrate('src', port, ['--resume'],
                            os.path.join(self.dir, 'm1.json'))

    def client_kept(self, client):
        """The kv client's connection answers on whichever side runs the
        guest (the handoff's point); a guest lost with its source loses it."""
        try:
            client.sendall(b'PING\r\n')
            kept = client.recv(64).startswith(b'+PONG')
        except OSError:
            kept = False
        client.close()
        self.row['why'] += '; kv client %s' % ('kept' if kept else 'lost')
        if not kept and 'yes' in (self.row['runs_src'], self.row['runs_dst']):
            self.problems.append('the kv client lost its connection although the guest runs')

    def reach(self, side, action, mig):
        """Wait for the hook to fire; the fault's time in ms."""
        end = time.time() + 60
        while time.time() < end:
            t = self.fault_time(side)
            if t is not None:
                if action == 'stop':
                    while not self.stopped(side) and time.time() < end:
                        time.sleep(0.005)
                    if not self.stopped(side):
                        self.problems.append('the hook said stop but %s '
                                             'did not stop' % side)
                return t
            # A cut can end the migration within a millisecond of the
            # hook's line: look once more before saying it never fired.
            if mig.poll() is not None and self.fault_time(side) is None:
                self.problems.append('the migration ended (%s) before the '
                                     'moment was reached' % self.report('m1').get('status'))
                return None
            time.sleep(0.005)
        self.problems.append('the moment was not reached in 60 s')
        return None

    def fired(self):
        """The fault did what it says (after the point of no return a
        fault that did nothing has the no-fault outcome, so the outcome
        alone cannot tell): the hook's line is there and a cut cut at
        least one connection."""
        side, action = self.hook
        try:
            lines = open(self.log(side)).read().splitlines()
        except OSError:
            lines = []
        at = 'fault: at %s: %s ' % (self.moment, action)
        if not any(at in ln for ln in lines):
            self.problems.append('the hook did not fire (no "%s" line in '
                                 'the %s log)' % (at.strip(), side))
            return
        if action != 'cut':
            return
        # The cut's own line follows its moment's (a repushing cell
        # cut at pushing before).
        first = next(i for i, ln in enumerate(lines) if at in ln)
        cut = [ln for ln in lines[first:] if 'fault: cut ' in ln]
        n = 0
        if cut and cut[0].split('fault: cut ', 1)[1].split()[0].isdigit():
            n = int(cut[0].split('fault: cut ', 1)[1].split()[0])
        if n < 1:
            self.problems.append('the cut did nothing: %s' %
                                 (cut[0].split('ferry-vm: ', 1)[-1]
                                  if cut else 'no "cut N connections" line'))

    def apply(self, what, side):
        t = now_ms()
        # The victim is gone (its sockets closed) or frozen before the
        # side at the breakpoint goes on: the fault is then before the
        # moment's next step, not racing with it. (A destination that
        # dies while "released" is on its way is a cell of its own: its
        # TCP may take the record and reset; unconfirmed is then right.)
        if what in ('kill-src', 'kill-dst'):
            self.procs[what[5:]].kill()
            self.procs[what[5:]].wait()
        elif what in ('stall-src', 'stall-dst'):
            os.kill(self.procs[what[6:]].pid, signal.SIGSTOP)
            while not self.stopped(what[6:]):
                time.sleep(0.002)
        elif what == 'stall-link':
            self.proxy.blackhole()
        if what != 'stall-' + side:
            os.kill(self.procs[side].pid, signal.SIGCONT)
        return t

    def report(self, name):
        try:
            lines = open(os.path.join(self.dir, name + '.json')).read().splitlines()
            return json.loads(lines[-1]) if lines else {}
        except (OSError, ValueError):
            return {}

    def settled_dst(self, st):
        if not st:
            return False
        m = st.get('migration') or {}
        # Inside postcopy's phase the destination runs the guest (and a
        # repushing cell's has the first cut's failure) all along: it has
        # seen the fault when it pauses or ends.
        if self.moment in ('pushing', 'repushing'):
            return m.get('state') in ('postcopy-paused', 'completed', 'failed')
        return bool(m.get('last_failure')) or \
            m.get('state') in ('postcopy-paused', 'completed', 'failed') or \
            st['guest']['state'] in ('running', 'failed')

    def observe(self, t0, mig):
        """Wait for both sides to report; then what runs, owners, again."""
        det = {}
        window = (max(40, 30 + 3 * STALL_MS / 1000)
                  if self.fault.startswith('stall') else 30)
        end = time.time() + window
        need = []
        while time.time() < end:
            if 'src' not in det and mig.poll() is not None and \
               self.alive('src'):
                det['src'] = now_ms() - t0
            if 'dst' not in det and self.alive('dst') and \
               not self.stopped('dst') and self.settled_dst(self.status('dst', 0.5)):
                det['dst'] = now_ms() - t0
            need = [s for s in ('src', 'dst')
                    if self.alive(s) and not self.stopped(s)]
            # The client follows the source: a frozen source holds it.
            if all(s in det for s in need) and \
               (mig.poll() is not None or self.stopped('src')):
                break
            time.sleep(0.02)
        # A live side that never reported is a fault not detected (the
        # harness ends it below: the proxy closes, a frozen side goes on).
        for s in need:
            if s not in det:
                self.problems.append('%s did not report the fault within '
                                     '%.0f s (stall limit %d ms)' %
                                     (s, window, STALL_MS))
        # A frozen side goes on now (the stall is over): what it does
        # then must not make a second copy run.
        thawed = [s for s in ('src', 'dst') if self.alive(s) and self.stopped(s)]
        if self.proxy:
            self.proxy.cut()
        for s in thawed:
            os.kill(self.procs[s].pid, signal.SIGCONT)
        try:
            mig.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.problems.append('ferry migrate did not end')
            mig.kill()
        # A destination that was frozen in postcopy finds out only now
        # that its link is gone.
        end = time.time() + 10
        while 'dst' in thawed and time.time() < end:
            st = self.status('dst', 0.5)
            if not st or st['migration']['state'] != 'postcopy':
                break
            time.sleep(0.05)
        time.sleep(0.3)
        self.row['detect'] = ' '.join('%s %d' % (s, det[s]) for s in ('src', 'dst') if s in det) or '-'
        self.judge(det)

    def judge(self, det):
        want, why = expected(self.fault, self.moment)
        runs = {s: self.runs(s) for s in ('src', 'dst')}
        self.row['runs_src'] = 'yes' if runs['src'] else 'no'
        self.row['runs_dst'] = {True: 'yes', False: 'no'}.get(runs['dst'], 'paused')
        # A destination paused in postcopy has the guest while its source
        # lives to recover it; without one it waits for pages for good.
        if runs['dst'] == 'paused':
            runs['dst'] = self.alive('src')
        st = {}
        owners = []
        for s in ('src', 'dst'):
            if self.alive(s):
                st[s] = self.cli_status(s)
                if st[s] is None:
                    self.problems.append('%s: ferry status --json does not answer' % s)
                owners.append((st[s] or {}).get('migration', {}).get('owner', '?'))
            else:
                owners.append('dead')
        self.row['owner'] = '/'.join(owners)
        got = 'src' if runs['src'] else 'dst' if runs['dst'] else 'none'
        if runs['src'] and runs['dst']:
            self.problems.append('both sides run the guest')
        elif got not in want.split('|'):
            self.problems.append('expected %s to run (%s), got %s' % (want, why, got))
        self.row['why'] = why
        self.fired()
        rep = self.report('m1')
        # The migration failed (or is unconfirmed) in these cells: a source
        # that says completed means the fault missed it.
        # Also where the destination runs only because the stall held its
        # confirmation past the limit (without the fault: completed).
        # Inside postcopy's phase every fault breaks it: a source that
        # says completed was hit after the phase had ended.
        if ('dst' not in want.split('|') or
                (self.fault, self.moment) == ('stall-dst', 'after-ready') or
                self.moment in ('pushing', 'repushing')) and \
                rep.get('status') == 'completed':
            self.problems.append('the source says completed, expected the '
                                 'migration to fail (%s)' % why)
        if self.moment in POSTCOPY:
            self.paused_reasons(st, rep)
        if want == 'none':
            self.check_reasons(st, rep)
            # A source that does not run its guest must not claim it.
            if got == 'none' and st.get('src') and \
               st['src']['migration']['owner'] == 'source':
                self.problems.append('the source does not run the guest but says owner source')
        if got == 'dst' and 'src' in want.split('|') and rep.get('status') != 'completed':
            self.problems.append('the destination runs but the source says %s' % rep.get('status'))
        if got == 'src' and st.get('src') and st['src']['migration']['owner'] != 'source':
            self.problems.append('the source runs but says owner %s' % st['src']['migration']['owner'])
        if got == 'dst' and st.get('dst') and st['dst']['migration']['owner'] != 'destination':
            self.problems.append('the destination runs but says owner %s' % st['dst']['migration']['owner'])
        if self.client:
            self.client_kept(self.client)
        self.again(got, st, rep)

    def paused_reasons(self, st, rep):
        """A side paused in postcopy says why: the source in its report
        (what `ferry migrate` prints), the destination in its status."""
        src = ((st.get('src') or {}).get('migration') or {})
        if src.get('state') == 'postcopy-paused' and not rep.get('error'):
            self.problems.append('the source is postcopy-paused but its '
                                 'report gives no reason')
        dst = ((st.get('dst') or {}).get('migration') or {})
        if dst.get('state') == 'postcopy-paused' and \
                not (dst.get('last_failure') or dst.get('error')):
            self.problems.append('the destination is postcopy-paused but '
                                 'its status gives no reason')

    def check_reasons(self, st, rep):
        """None runs: every live side says why."""
        if self.alive('src'):
            if not rep.get('error'):
                self.problems.append('the source does not say why no side runs: %s' % rep.get('status'))
        if self.alive('dst') and st.get('dst'):
            m = st['dst']['migration']
            if not (m.get('last_failure') or m.get('error') or
                    st['dst']['guest'].get('error')):
                self.problems.append('the destination does not say why it does not run')
            if m.get('state') == 'completed':
                self.problems.append('the destination says completed')

    def fresh_dst(self, name):
        port = free_port()
        self.start_vm(name, ['--memory', MEM, '--incoming',
                             'tcp:127.0.0.1:%d' % port])
        return port

    def migrate_ok(self, src, port, out, extra=()):
        p = self.migrate(src, port, list(extra), os.path.join(self.dir, out + '.json'))
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
        r = self.report(out)
        return r.get('status') == 'completed' and r.get('verified') is True, r

    def again(self, got, st, rep):
        """The survivor migrates again to a fresh destination and
        verifies (after a postcopy cut: recovers and completes)."""
        if got == 'dst' and self.moment in POSTCOPY and \
           (st.get('src') or {}).get('migration', {}).get('state') == 'postcopy-paused':
            rport = free_port()
            subprocess.run([self.h.ferry, 'recover', self.sock('dst'),
                            'tcp:127.0.0.1:%d' % rport], capture_output=True)
            ok, r = self.migrate_ok('src', rport, 'rec', ['--resume'])
            self.row['again'] = 'recovered+verified' if ok else 'recovery failed'
            if not ok:
                self.problems.append('recovery: %s %s' % (r.get('status'), r.get('error')))
            return
        if got in ('src', 'dst'):
            port = self.fresh_dst('dst2')
            ok, r = self.migrate_ok(got, port, 'm2')
            self.row['again'] = 'yes+verified' if ok else 'no'
            if not ok:
                self.problems.append('%s cannot migrate again: %s %s' % (got, r.get('status'), r.get('error')))
            return
        if self.alive('src') and st.get('src'):
            # The operator's way out: run the source's copy anyway.
            r = subprocess.run([self.h.ferry, 'resume', self.sock('src'),
                                '--force'], capture_output=True, text=True)
            if r.returncode != 0:
                self.row['again'] = 'resume --force refused'
                self.problems.append('ferry resume --force: %s' % (r.stdout + r.stderr).strip()[:200])
                return
            port = self.fresh_dst('dst2')
            ok, r = self.migrate_ok('src', port, 'm2')
            self.row['again'] = 'resume --force, then yes+verified' if ok else 'resume --force, then no'
            if not ok:
                self.problems.append('after resume --force: %s %s' % (r.get('status'), r.get('error')))
            return
        if self.alive('dst') and self.moment not in POSTCOPY:
            # No guest anywhere: the destination receives a fresh one.
            m = (st.get('dst') or {}).get('migration', {})
            lst = (st.get('dst') or {}).get('listening')
            if not lst:
                self.row['again'] = 'dst does not listen'
                self.problems.append('the destination does not listen again')
                return
            self.start_vm('src2', ['--memory', MEM, '--workload', 'ab'])
            ok, r = self.migrate_ok('src2', int(lst.rsplit(':', 1)[1]), 'm2')
            self.row['again'] = 'dst receives again+verified' if ok else 'dst receives: no'
            if not ok:
                self.problems.append('the destination cannot receive again: %s %s' % (r.get('status'), r.get('error')))
            del m
            return
        if self.alive('dst'):
            m = (st.get('dst') or {}).get('migration', {})
            self.row['again'] = 'n/a (guest lost with its source)'
            if not m.get('pages_missing'):
                self.problems.append('the destination does not say pages are missing: %s' % m.get('state'))

    # --- ENOSPC --------------------------------------------------------------
    def run_enospc(self):
        if self.moment == 'passN':
            return self.skip('a snapshot of 64 MiB is written in one pass '
                             'and the final one (80 ms): no later pass')
        if self.moment not in SNAPSHOT_MOMENTS:
            return self.skip('a snapshot has no such moment')
        if self.conns != 1:
            return self.skip('a snapshot is written by io threads, not connections')
        if os.geteuid() != 0 or not shutil.which('unshare'):
            return self.skip('needs root and unshare(1) for a private tmpfs')
        mnt = os.path.join(self.dir, 'disk')
        os.mkdir(mnt)
        # pass1: a disk smaller than the guest fills in pass 1; later
        # moments: the harness fills the disk at a breakpoint.
        size = '16m' if self.moment == 'pass1' else '96m'
        wrap = ['unshare', '-m', '--propagation', 'private', 'sh', '-c',
                'mount -t tmpfs -o size=%s ferry-faults "$0" && exec "$@"' % size,
                mnt]
        hook = None if self.moment == 'pass1' else 'at:%s:stop' % self.moment
        self.start_vm('src', ['--memory', MEM, '--workload', 'random',
                              '--dirty-rate', '10'], fault=hook, wrap=wrap)
        path = os.path.join(mnt, 'snap.ferry')
        mig = subprocess.Popen([self.h.ferry, 'migrate', self.sock('src'),
                                'file:' + path, '--json', '--max-bandwidth', '40',
                                '--max-passes', '8', '--timeout-strategy', 'switchover'],
                               stdout=open(os.path.join(self.dir, 'm1.json'), 'w'),
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        if hook:
            t0 = self.reach('src', 'stop', mig)
            if t0 is None:
                return
            inside = '/proc/%d/root%s' % (self.procs['src'].pid, mnt)
            with open(os.path.join(inside, 'filler'), 'wb') as f:
                try:
                    while True:
                        f.write(b'\xa5' * (1 << 20))
                        f.flush()
                except OSError:
                    pass
            t0 = now_ms()
            os.kill(self.procs['src'].pid, signal.SIGCONT)
        else:
            t0 = now_ms()
        try:
            mig.wait(timeout=60)
        except subprocess.TimeoutExpired:
            mig.kill()
            self.problems.append('the snapshot did not end')
        self.row['detect'] = 'src %d' % (now_ms() - t0)
        rep = self.report('m1')
        inside = '/proc/%d/root%s' % (self.procs['src'].pid, mnt)
        left = sorted(os.listdir(inside)) if os.path.isdir(inside) else []
        runs = self.runs('src')
        self.row['runs_src'] = 'yes' if runs else 'no'
        self.row['runs_dst'] = 'n/a'
        st = self.cli_status('src')
        self.row['owner'] = (st or {}).get('migration', {}).get('owner', '?') + '/-'
        self.row['why'] = 'the snapshot fails, the source runs on'
        if rep.get('status') == 'completed':
            self.problems.append('the snapshot completed: the disk did not fill')
        elif 'No space' not in str(rep.get('error')) and 'ENOSPC' not in str(rep.get('error')):
            self.problems.append('the error does not say the disk is full: %s' % rep.get('error'))
        if 'snap.ferry' in left:
            self.problems.append('a failed snapshot left %s' % path)
        if not runs:
            self.problems.append('the source does not run after the failed snapshot')
        if st is None:
            self.problems.append('src: ferry status --json does not answer')
        if runs:
            port = self.fresh_dst('dst2')
            ok, r = self.migrate_ok('src', port, 'm2')
            self.row['again'] = 'yes+verified' if ok else 'no'
            if not ok:
                self.problems.append('cannot migrate again: %s %s' % (r.get('status'), r.get('error')))


class Harness:
    def __init__(self, a):
        self.ferry, self.ferry_vm, self.keep = a.ferry, a.ferry_vm, a.keep
        h = subprocess.run([a.ferry, 'migrate', '--help'], capture_output=True, text=True)
        self.stall = 'stall-timeout' in h.stdout + h.stderr
        self.postcopy = '--postcopy' in h.stdout + h.stderr and os.geteuid() == 0
        h = subprocess.run([a.ferry_vm, '--help'], capture_output=True, text=True)
        # The destination's own limit, when ferry-vm has the option.
        self.vm_stall = 'stall-timeout' in h.stdout + h.stderr


def cells(subset, only):
    if subset == 'fast':
        out = list(FAST)
    else:
        out = [(f, m, c) for f in FAULTS for m in MOMENTS for c in (1, 4)]
    if only:
        picks = [p.split(':') for p in only.split(',')]
        out = [x for x in out if any(
            x[0] == parts[0] and (len(parts) < 2 or x[1] == parts[1]) and
            (len(parts) < 3 or x[2] == int(parts[2])) for parts in picks)]
    return out


COLS = [('fault', 'fault'), ('moment', 'moment'), ('conns', 'conns'),
        ('runs_src', 'runs after: src'), ('runs_dst', 'dst'),
        ('owner', 'owner src/dst'), ('again', 'survivor migrates again'),
        ('detect', 'detection ms'), ('result', 'result'), ('why', 'expected / reason')]


def print_row(r):
    print('%-10s %-14s %-5s %-4s %-4s %-24s %-30s %-18s %-5s %s' % tuple(
        str(r[k]) for k, _ in COLS), flush=True)


BEGIN = '<!-- matrix: written by make faults, from here -->'
END = '<!-- matrix: to here -->'


def markdown(rows, path, cmd, secs):
    """The table into @path between BEGIN and END (the text around it
    is kept), or a whole new file."""
    import io
    f = io.StringIO()
    table(f, rows, cmd, secs)
    try:
        old = open(path).read()
    except OSError:
        old = ''
    if BEGIN in old and END in old:
        new = old.split(BEGIN)[0] + BEGIN + '\n' + f.getvalue() + END + old.split(END, 1)[1]
    else:
        new = '# The fault matrix\n\n' + BEGIN + '\n' + f.getvalue() + END + '\n'
    with open(path, 'w') as out:
        out.write(new)


def table(f, rows, cmd, secs):
    load = open('/proc/loadavg').read().split()[:3]
    n = {k: sum(1 for r in rows if r['result'] == k)
         for k in ('PASS', 'FAIL', 'SKIP')}
    f.write('- command: `%s`\n- date: %s\n- load average (1, 5, 15 min): '
            '%s\n- duration: %.0f s\n- stall limit: %d ms\n\n' %
            (cmd, time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
             ' '.join(load), secs, STALL_MS))
    f.write('%d passed, %d failed, %d skipped.\n\n' %
            (n['PASS'], n['FAIL'], n['SKIP']))
    f.write('| ' + ' | '.join(t for _, t in COLS) + ' |\n')
    f.write('|' + ' --- |' * len(COLS) + '\n')
    for r in rows:
        f.write('| ' + ' | '.join(str(r[k]).replace('|', '/')
                                  for k, _ in COLS) + ' |\n')


def main():
    global STALL_MS
    ap = argparse.ArgumentParser()
    ap.add_argument('--ferry', default=os.environ.get('FERRY'))
    ap.add_argument('--ferry-vm', default=os.environ.get('FERRY_VM'))
    ap.add_argument('--subset', choices=('fast', 'full'), default='full')
    ap.add_argument('--only')
    ap.add_argument('--markdown')
    ap.add_argument('--keep', action='store_true')
    ap.add_argument('--stall-ms', type=int, default=STALL_MS,
                    help='stall limit of both sides (--stall-timeout-ms)')
    a = ap.parse_args()
    if not 500 <= a.stall_ms <= 3600000:
        ap.error('--stall-ms must be from 500 to 3600000')
    STALL_MS = a.stall_ms
    if not a.ferry or not a.ferry_vm:
        ap.error('--ferry and --ferry-vm (or FERRY and FERRY_VM) are needed')
    h = Harness(a)
    t = time.time()
    rows = []
    print('%-10s %-14s %-5s %-4s %-4s %-24s %-30s %-18s %-5s %s' % tuple(
        k for k, _ in COLS))
    for f, m, c in cells(a.subset, a.only):
        r = Cell(h, f, m, c).run()
        rows.append(r)
        print_row(r)
    secs = time.time() - t
    n = {k: sum(1 for r in rows if r['result'] == k) for k in ('PASS', 'FAIL', 'SKIP')}
    print('%d passed, %d failed, %d skipped in %.0f s' % (n['PASS'], n['FAIL'], n['SKIP'], secs))
    if a.markdown:
        whole = a.subset == 'full' and not a.only and STALL_MS == 2000
        markdown(rows, a.markdown, 'make faults' if whole else ' '.join(sys.argv), secs)
    if n['FAIL']:
        return 1
    return 77 if not n['PASS'] else 0


if __name__ == '__main__':
    sys.exit(main())
