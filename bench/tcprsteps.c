// SPDX-License-Identifier: MIT
/*
 * tcprsteps.c - where the time of a TCP_REPAIR handoff of many connections
 * goes (issue 21's "1,000 connections add <= 20 ms"), measured at module
 * level in a network namespace of its own (root).
 *
 * usage: tcprsteps [-g] [-n CONNS] [-q BYTES] [-r ROUNDS] [-t THREADS (1 or 2)]
 *
 * -g: the module round freezes and thaws as the device does with the gate
 * (one eBPF filter for all sockets, inherited from the listener, shut and
 * opened by one map update) instead of a filter per socket.
 *
 * Round "syscalls": CONNS loopback connections, each with BYTES unread on
 * the device's side, go through the handoff's system calls by hand, one
 * step at a time over all connections, so each step's cost is its own
 * line (microseconds per connection, milliseconds for all).
 *
 * Round "module": a fresh set goes through vm/tcprepair.c as the device
 * uses it, split the way the migration splits it: what runs while the
 * guest still runs (tcpr_ident() when a connection comes, tcpr_read_ahead()
 * while precopy runs, the destination's tcpr_prepare()), what runs in the
 * pause (freeze, dump: the quick one for an idle connection, the full one
 * with -q BYTES unread), at the point of no return (close) and in the
 * switchover (restore, thaw), on one thread or two (-t 2, as the device
 * does from 256 connections on).
 *
 * Built with -DTCPRSTEPS_OLD against an older vm/tcprepair.c, only the
 * module round runs, with that module's calls (for a before/after comparison:
 * git show 4e2bd71:vm/tcprepair.c > /tmp/old.c; cc -O2 -DTCPRSTEPS_OLD
 * -Iinclude -Isrc -Ivm bench/tcprsteps.c /tmp/old.c vm/netaddr.c
 * build/src/libferry.a -lpthread).
 *
 * In both, every connection must carry one byte each way afterwards, and
 * the BYTES queued before must arrive; a failure exits 1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "tcprepair.h"


static int nconn = 1000, qbytes, rounds = 1;
static bool gated; /* -g: the device's gate instead of a filter per socket */
static int *peer, *dev;
static struct sockaddr_in where;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* CPU time of the whole process (both threads): on a loaded machine the
 * wall clock measures the other jobs as much as this one. */
static double cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char *what)
{
	fprintf(stderr, "tcprsteps: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void lo_up(void)
{
	struct ifreq ifr = { 0 };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr))
		die("lo");
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr))
		die("lo up");
	close(fd);
}

/* nconn connected pairs on one listening port; the listener closes, as a
 * source's does at release, before anything is restored. */
static void pairs(void)
{
	socklen_t sl = sizeof(where);
	char *q = qbytes ? malloc(qbytes) : NULL;
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	memset(&where, 0, sizeof(where));
	where.sin_family = AF_INET;
	where.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (q)
		memset(q, 'q', qbytes);
	/* The accepted sockets inherit the listener's gate. */
	if (gated && tcpr_gate_attach(l))
		die("the gate (eBPF)");
	if (l < 0 || bind(l, (void *)&where, sizeof(where)) || listen(l, 4096) ||
	    getsockname(l, (void *)&where, &sl))
		die("listener");
	for (int i = 0; i < nconn; i++) {
		peer[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (peer[i] < 0 || connect(peer[i], (void *)&where, sizeof(where)))
			die("connect");
		dev[i] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		if (dev[i] < 0)
			die("accept");
		/* TCPRSTEPS_EPOLL=1: in an epoll set, as the device's are
		 * (their close then takes them out of it). */
		if (getenv("TCPRSTEPS_EPOLL")) {
			static int ep = -1;
			struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT |
						  EPOLLRDHUP | EPOLLET };

			if (ep < 0)
				ep = epoll_create1(EPOLL_CLOEXEC);
			ev.data.u32 = i;
			if (epoll_ctl(ep, EPOLL_CTL_ADD, dev[i], &ev))
				die("epoll");
		}
		if (q && send(peer[i], q, qbytes, 0) != qbytes)
			die("queue");
	}
	close(l);
	free(q);
	usleep(50000);
}

/* Every connection carries its queued bytes and one byte each way. */
static void check(void)
{
	char b[65536];

	for (int i = 0; i < nconn; i++) {
		int want = qbytes + 1, got = 0;

		if (send(peer[i], "p", 1, MSG_NOSIGNAL) != 1)
			die("peer send");
		while (got < want) {
			struct pollfd p = { .fd = dev[i], .events = POLLIN };
			ssize_t r;

			if (poll(&p, 1, 5000) != 1)
				die("restored socket: nothing arrives");
			r = recv(dev[i], b, sizeof(b), MSG_DONTWAIT);
			if (r <= 0 && !(r < 0 && errno == EAGAIN))
				die("restored socket recv");
			got += r > 0 ? (int)r : 0;
		}
		if (got != want || b[(got - 1) % sizeof(b)] != 'p')
			die("restored socket: wrong bytes");
		if (send(dev[i], "a", 1, MSG_NOSIGNAL) != 1 ||
		    recv(peer[i], b, 1, 0) != 1 || b[0] != 'a')
			die("peer recv");
		close(peer[i]);
		close(dev[i]);
	}
}

static void line(const char *what, double ms, double cpu)
{
	printf("| %-44s | %8.2f | %7.1f | %8.2f | %7.1f |\n", what,
	       ms * 1e3 / nconn, ms, cpu * 1e3 / nconn, cpu);
}

/* ---- round "syscalls" ---- */

static int sopt(int fd, int lvl, int name, int v)
{
	return setsockopt(fd, lvl, name, &v, sizeof(v));
}

#define STEP(name, ...)                                     \
	do {                                               \
		double t0_ = now_ms(), c0_ = cpu_ms();     \
		for (int i = 0; i < nconn; i++) {          \
			__VA_ARGS__;                       \
		}                                          \
		line(name, now_ms() - t0_, cpu_ms() - c0_); \
	} while (0)

struct raw {
	struct sockaddr_in l, r;
	uint32_t sseq, rseq, mss, ts;
	struct tcp_info ti;
	uint32_t win[5];
	int outq, unsent, inq;
	char *rq;
};

static void round_syscalls(void)
{
	struct raw *c = calloc(nconn, sizeof(*c));
	int prog = tcpr_drop_filter(), v, d = 0;
	socklen_t sl;

	if (prog < 0)
		die("bpf");
	pairs();
	printf("\n### system calls, one step at a time (%d connections, %d bytes "
	       "queued each)\n\n| step | us/conn | ms all | CPU us/conn | CPU ms all |\n| --- | ---: | ---: | ---: | ---: |\n",
	       nconn, qbytes);
	STEP("src: SO_ATTACH_BPF (drop filter)",
	     if (setsockopt(dev[i], SOL_SOCKET, SO_ATTACH_BPF, &prog, sizeof(prog))) die("attach"));
	STEP("src: TCP_REPAIR on",
	     if (sopt(dev[i], SOL_TCP, TCP_REPAIR, 1)) die("repair"));
	STEP("src: getsockname + getpeername",
	     sl = sizeof(c[i].l); getsockname(dev[i], (void *)&c[i].l, &sl);
	     sl = sizeof(c[i].r); getpeername(dev[i], (void *)&c[i].r, &sl));
	STEP("src: TCP_INFO",
	     sl = sizeof(c[i].ti); getsockopt(dev[i], SOL_TCP, TCP_INFO, &c[i].ti, &sl));
	STEP("src: TCP_MAXSEG",
	     sl = 4; getsockopt(dev[i], SOL_TCP, TCP_MAXSEG, &c[i].mss, &sl));
	STEP("src: TCP_TIMESTAMP",
	     sl = 4; getsockopt(dev[i], SOL_TCP, TCP_TIMESTAMP, &c[i].ts, &sl));
	STEP("src: TCP_REPAIR_WINDOW",
	     sl = 20; getsockopt(dev[i], SOL_TCP, TCP_REPAIR_WINDOW, c[i].win, &sl));
	STEP("src: TCP_NODELAY + SO_SNDBUF + SO_RCVBUF",
	     sl = 4; getsockopt(dev[i], SOL_TCP, TCP_NODELAY, &v, &sl);
	     getsockopt(dev[i], SOL_SOCKET, SO_SNDBUF, &v, &sl);
	     getsockopt(dev[i], SOL_SOCKET, SO_RCVBUF, &v, &sl));
	STEP("src: SO_PEEK_OFF",
	     sl = 4; getsockopt(dev[i], SOL_SOCKET, SO_PEEK_OFF, &v, &sl));
	STEP("src: SIOCOUTQ + SIOCOUTQNSD + SIOCINQ",
	     ioctl(dev[i], SIOCOUTQ, &c[i].outq); ioctl(dev[i], SIOCOUTQNSD, &c[i].unsent);
	     ioctl(dev[i], SIOCINQ, &c[i].inq));
	STEP("src: send queue: select + TCP_QUEUE_SEQ",
	     sopt(dev[i], SOL_TCP, TCP_REPAIR_QUEUE, 2); sl = 4;
	     getsockopt(dev[i], SOL_TCP, TCP_QUEUE_SEQ, &c[i].sseq, &sl));
	STEP("src: recv queue: select + TCP_QUEUE_SEQ",
	     sopt(dev[i], SOL_TCP, TCP_REPAIR_QUEUE, 1); sl = 4;
	     getsockopt(dev[i], SOL_TCP, TCP_QUEUE_SEQ, &c[i].rseq, &sl));
	STEP("src: recv queue: MSG_PEEK (when not empty)",
	     if (c[i].inq) { c[i].rq = malloc(c[i].inq);
	     if (recv(dev[i], c[i].rq, c[i].inq, MSG_PEEK | MSG_DONTWAIT) != c[i].inq) die("peek"); });
	STEP("src: TCP_REPAIR_QUEUE none",
	     sopt(dev[i], SOL_TCP, TCP_REPAIR_QUEUE, 0));
	if (getenv("TCPRSTEPS_DISCONNECT")) {
		struct sockaddr un = { .sa_family = AF_UNSPEC };

		STEP("release: connect(AF_UNSPEC) (TCPRSTEPS_DISCONNECT=1)",
		     if (connect(dev[i], &un, sizeof(un))) die("disconnect"));
		STEP("release: close after it", close(dev[i]));
	} else {
		STEP("release: close (repair mode: silent)", close(dev[i]));
	}
	STEP("dst: socket()",
	     dev[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
	STEP("dst: SO_ATTACH_BPF",
	     setsockopt(dev[i], SOL_SOCKET, SO_ATTACH_BPF, &prog, sizeof(prog)));
	STEP("dst: TCP_REPAIR on", sopt(dev[i], SOL_TCP, TCP_REPAIR, 1));
	STEP("dst: SO_REUSEADDR before bind (TCPRSTEPS_REUSE=1)",
	     if (getenv("TCPRSTEPS_REUSE")) sopt(dev[i], SOL_SOCKET, SO_REUSEADDR, 1));
	STEP("dst: bind",
	     if (bind(dev[i], (void *)&c[i].l, sizeof(c[i].l))) die("bind"));
	STEP("dst: recv queue: select + TCP_QUEUE_SEQ",
	     uint32_t s = c[i].rseq - c[i].inq; sopt(dev[i], SOL_TCP, TCP_REPAIR_QUEUE, 1);
	     if (setsockopt(dev[i], SOL_TCP, TCP_QUEUE_SEQ, &s, 4)) die("rseq"));
	STEP("dst: send queue: select + TCP_QUEUE_SEQ",
	     uint32_t s = c[i].sseq; sopt(dev[i], SOL_TCP, TCP_REPAIR_QUEUE, 2);
	     if (setsockopt(dev[i], SOL_TCP, TCP_QUEUE_SEQ, &s, 4)) die("sseq"));
	STEP("dst: connect",
	     if (connect(dev[i], (void *)&c[i].r, sizeof(c[i].r))) die("connect"));
	STEP("dst: TCP_REPAIR_OPTIONS", {
		uint32_t o[8] = { 2, c[i].mss, 3, c[i].ti.tcpi_snd_wscale | (c[i].ti.tcpi_rcv_wscale << 16),
				  4, 0, 8, 0 };
		if (setsockopt(dev[i], SOL_TCP, TCP_REPAIR_OPTIONS, o, sizeof(o))) die("options");
	});
	STEP("dst: recv queue: select + write (when not empty)",
	     if (c[i].inq) { sopt(dev[i], SOL_TCP, TCP_REPAIR_QUEUE, 1);
	     if (send(dev[i], c[i].rq, c[i].inq, 0) != c[i].inq) die("rq"); free(c[i].rq); });
	STEP("dst: TCP_REPAIR_QUEUE none", sopt(dev[i], SOL_TCP, TCP_REPAIR_QUEUE, 0));
	STEP("dst: TCP_REPAIR_WINDOW",
	     if (setsockopt(dev[i], SOL_TCP, TCP_REPAIR_WINDOW, c[i].win, 20)) die("window"));
	STEP("dst: TCP_TIMESTAMP", sopt(dev[i], SOL_TCP, TCP_TIMESTAMP, (int)c[i].ts));
	STEP("dst: TCP_NODELAY", sopt(dev[i], SOL_TCP, TCP_NODELAY, 0));
	STEP("dst: SO_DETACH_FILTER", setsockopt(dev[i], SOL_SOCKET, SO_DETACH_FILTER, &d, 4));
	STEP("dst: TCP_REPAIR off", if (sopt(dev[i], SOL_TCP, TCP_REPAIR, 0)) die("off"));
	STEP("dst: TCP_REPAIR on again", if (sopt(dev[i], SOL_TCP, TCP_REPAIR, 1)) die("on"));
	STEP("dst: TCP_REPAIR off, no window probe",
	     if (sopt(dev[i], SOL_TCP, TCP_REPAIR, -1)) die("off, no probe"));
	STEP("dst: SO_REUSEADDR", sopt(dev[i], SOL_SOCKET, SO_REUSEADDR, 1));
	check();
	close(prog);
	free(c);
}

/* ---- round "module" ---- */

static struct tcpr_conn *mc;
static int nthreads = 1;

static int *pre;

enum phase { P_IDENT, P_AHEAD, P_PREPARE, P_FREEZE, P_DUMP, P_STAGE, P_DISCARD, P_RESTORE, P_THAW, P_CLOSE };

static int *old; /* the source's sockets, disconnected at release */

static atomic_uint quick_dumps;
static uint64_t *stage_ms;

struct worker {
	enum phase ph;
	int first;
	pthread_t t;
};

static void *phase_main(void *arg)
{
	struct worker *w = arg;
	char err[256];
	int rc = 0;

	for (int i = w->first; i < nconn; i += nthreads) {
#ifdef TCPRSTEPS_OLD
		/* The base's module (4e2bd71): no identity read ahead, no
		 * prepared sockets, tcpr_discard() at release. */
		switch (w->ph) {
		case P_IDENT: case P_AHEAD: case P_PREPARE: case P_STAGE: break;
		case P_FREEZE: rc = tcpr_freeze(dev[i], err, sizeof(err)); break;
		case P_DUMP: rc = tcpr_dump(dev[i], &mc[i], err, sizeof(err)); break;
		case P_DISCARD: tcpr_discard(dev[i]); break;
		case P_RESTORE: rc = tcpr_restore(&mc[i], &dev[i], err, sizeof(err)); break;
		case P_THAW: rc = tcpr_thaw(dev[i], err, sizeof(err)); break;
		}
#else
		bool quick = false;

		switch (w->ph) {
		case P_IDENT: rc = tcpr_ident(dev[i], &mc[i], err, sizeof(err)); break;
		case P_AHEAD: rc = tcpr_read_ahead(dev[i], &mc[i], err, sizeof(err)); break;
		case P_PREPARE: rc = tcpr_prepare_gated(AF_INET, (void *)&where, sizeof(where), gated, &pre[i], err, sizeof(err)); break;
		case P_FREEZE: rc = gated ? tcpr_freeze_gated(dev[i], err, sizeof(err)) : tcpr_freeze(dev[i], err, sizeof(err)); break;
		/* Nothing was read from the device's sockets: the queued
		 * bytes (-q) are unread, and take the full way. */
		case P_DUMP:
			rc = tcpr_dump_quick(dev[i], &mc[i], 0, &quick, err, sizeof(err));
			if (quick)
				atomic_fetch_add(&quick_dumps, 1);
			break;
		case P_STAGE:
			stage_ms[i] = tcpr_clock_ms();
			rc = tcpr_restore_stage(pre[i], &mc[i], err, sizeof(err));
			break;
		case P_DISCARD:
			/* The device's release: the 4-tuple freed, the close
			 * after the pause (P_CLOSE). */
			old[i] = dev[i];
			if (tcpr_unhash_frozen(dev[i])) {
				snprintf(err, sizeof(err), "disconnect: %s", strerror(errno));
				rc = -1;
			}
			break;
		case P_CLOSE: tcpr_close_frozen(old[i]); break;
		case P_RESTORE:
			rc = tcpr_restore_finish(pre[i], &mc[i], &dev[i], err, sizeof(err));
			if (!rc)
				tcpr_ahead_restored(&mc[i], stage_ms[i], &mc[i].ahead);
			break;
		case P_THAW: rc = tcpr_thaw_restored(dev[i], &mc[i], gated, err, sizeof(err)); break;
		}
#endif
		if (rc) {
			fprintf(stderr, "tcprsteps: %s\n", err);
			exit(1);
		}
	}
	return NULL;
}

static void phase(const char *name, enum phase ph)
{
	struct worker w[2] = { { ph, 0 }, { ph, 1 } };
	double t = now_ms(), c = cpu_ms();

	/* With the gate, one map update shuts (freeze) and opens (thaw)
	 * every socket: it counts in the phase. */
	if (gated && ph == P_FREEZE && tcpr_gate_set(true))
		die("closing the gate");
	if (nthreads > 1 && pthread_create(&w[1].t, NULL, phase_main, &w[1]))
		die("pthread_create");
	phase_main(&w[0]);
	if (nthreads > 1)
		pthread_join(w[1].t, NULL);
	if (gated && ph == P_THAW && tcpr_gate_set(false))
		die("opening the gate");
	line(name, now_ms() - t, cpu_ms() - c);
}

/* The dumps as the net0 device carries them: an array of connections,
 * each its slot and tcpr_visit()'s fields. */
struct dumps {
	uint32_t n;
	struct tcpr_conn *c;
};

static int dumps_visit(ferry_visitor *v, void *obj)
{
	static struct tcpr_conn scratch; /* the schema's capture has no array */
	struct dumps *d = obj;
	uint32_t n = d->n, slot;

	if (ferry_visit_array_begin(v, "connections", &n, (uint32_t)nconn,
				    FERRY_FIELD_MUST) == 0) {
		for (uint32_t i = 0; i < n; i++) {
			if (ferry_visit_struct_begin(v, NULL, 0))
				break;
			slot = i;
			ferry_visit_u32(v, "slot", &slot, 0, FERRY_FIELD_MUST);
			tcpr_visit(v, d->c ? &d->c[i] : &scratch);
			ferry_visit_struct_end(v);
		}
		ferry_visit_array_end(v);
	}
	d->n = n;
	return ferry_visit_error(v);
}

static const struct ferry_device_type dumps_type = {
	.name = "net", .version = 1, .size = sizeof(struct dumps),
	.visit = dumps_visit,
};

/* The state's part of the pause: every dump encoded (source), then
 * decoded (destination) into the dumps the restore uses, as ferry-vm's
 * save_state and load_state do with the net0 device. */
static void state_round_trip(void)
{
	struct dumps out = { (uint32_t)nconn, mc }, in = { 0, NULL };
	struct ferry_state_binding b = { &dumps_type, "net0", &in, 0 };
	struct ferry_buf *buf = ferry_buf_new();
	const void *data;
	char err[256] = "";
	double t = now_ms(), c = cpu_ms();
	size_t len;

	if (!buf ||
	    ferry_state_save(buf, &dumps_type, "net0", &out, err, sizeof(err)) ||
	    ferry_state_end(buf)) {
		fprintf(stderr, "tcprsteps: state save: %s\n", err);
		exit(1);
	}
	line("state: encode (save_state)", now_ms() - t, cpu_ms() - c);
	data = ferry_buf_data(buf, &len);
	in.c = calloc(nconn, sizeof(*in.c));
	t = now_ms(), c = cpu_ms();
	if (ferry_state_load(data, len, &b, 1, err, sizeof(err)) ||
	    in.n != (uint32_t)nconn) {
		fprintf(stderr, "tcprsteps: state load: %s\n", err);
		exit(1);
	}
	line("state: decode (load_state)", now_ms() - t, cpu_ms() - c);
	printf("\n(state: %zu bytes, %.0f per connection)\n\n", len,
	       (double)len / nconn);
	for (int i = 0; i < nconn; i++)
		tcpr_conn_clear(&mc[i]);
	free(mc);
	mc = in.c;
	ferry_buf_free(buf);
}

static void round_module(void)
{
	mc = calloc(nconn, sizeof(*mc));
	pre = calloc(nconn, sizeof(*pre));
	stage_ms = calloc(nconn, sizeof(*stage_ms));
	pairs();
	printf("\n### vm/tcprepair.c as the device calls it (%d connections, "
	       "%d bytes queued each, %d thread%s)\n\n| phase | us/conn | ms all | CPU us/conn | CPU ms all |\n"
	       "| --- | ---: | ---: | ---: | ---: |\n", nconn, qbytes, nthreads,
	       nthreads > 1 ? (gated ? "s, the gate" : "s") : (gated ? ", the gate" : ""));
	phase("precopy: tcpr_ident (at accept)", P_IDENT);
	phase("precopy: tcpr_read_ahead (source)", P_AHEAD);
	phase("precopy: tcpr_prepare (destination)", P_PREPARE);
	phase("pause: tcpr_freeze", P_FREEZE);
	phase("pause: tcpr_dump_quick", P_DUMP);
	state_round_trip();
	phase("before release: tcpr_restore_stage (dest.)", P_STAGE);
#ifdef TCPRSTEPS_OLD
	phase("release: tcpr_discard", P_DISCARD);
#else
	old = calloc(nconn, sizeof(*old));
	phase("release: tcpr_unhash_frozen", P_DISCARD);
#endif
	phase("switchover: tcpr_restore_finish", P_RESTORE);
	phase("switchover: tcpr_thaw_restored", P_THAW);
#ifndef TCPRSTEPS_OLD
	phase("after the pause: tcpr_close_frozen (source)", P_CLOSE);
	free(old);
#endif
#ifndef TCPRSTEPS_OLD
	printf("\n(%u of %d dumps quick: TCP_INFO and TCP_REPAIR_WINDOW)\n",
	       atomic_exchange(&quick_dumps, 0), nconn);
#endif
	for (int i = 0; i < nconn; i++)
		tcpr_conn_clear(&mc[i]);
	check();
	free(mc);
	free(pre);
	free(stage_ms);
}

int main(int argc, char **argv)
{
	int o;

	while ((o = getopt(argc, argv, "gn:q:r:t:")) != -1) {
		if (o == 'n')
			nconn = atoi(optarg);
		else if (o == 'q')
			qbytes = atoi(optarg);
		else if (o == 'r')
			rounds = atoi(optarg);
		else if (o == 't')
			nthreads = atoi(optarg) > 1 ? 2 : 1;
		else if (o == 'g')
			gated = true;
		else
			return fprintf(stderr, "usage: tcprsteps [-g] [-n CONNS] [-q "
				       "BYTES] [-r ROUNDS] [-t 1|2]\n"), 2;
	}
	if (nconn < 1 || qbytes < 0 || qbytes > 65536 || rounds < 1)
		return fprintf(stderr, "tcprsteps: bad arguments\n"), 2;
	if (geteuid() != 0)
		return printf("tcprsteps: needs root (TCP_REPAIR, a network "
			      "namespace)\n"), 77;
	if (unshare(CLONE_NEWNET))
		die("unshare(CLONE_NEWNET)");
	lo_up();
	peer = calloc(nconn, sizeof(int));
	dev = calloc(nconn, sizeof(int));
	for (int r = 0; r < rounds; r++) {
#ifndef TCPRSTEPS_OLD
		round_syscalls(); /* its filter is the module's own */
#endif
		round_module();
	}
	return 0;
}
