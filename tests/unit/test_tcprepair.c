// SPDX-License-Identifier: MIT
/*
 * test_tcprepair.c - vm/tcprepair.c on real sockets: a TCP connection over
 * loopback, in a network namespace of the test's own, with unread data in
 * both directions and a send queue the peer has no room for, is frozen,
 * dumped, dropped and re-created, and both directions go on with every
 * byte exactly once; the peer never sees an end of stream or a reset.
 *
 * Needs root (CAP_NET_ADMIN for TCP_REPAIR and the namespace); skips with
 * the reason otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/sockios.h>

#include <cmocka.h>

#include "unit.h"
#include "netaddr.h"
#include "tcprepair.h"

static char skip_reason[256];

/* ---- environment ---- */

static int lo_up(void)
{
	struct ifreq ifr = { 0 };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int rc = -1;

	if (fd < 0)
		return -1;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		rc = ioctl(fd, SIOCSIFFLAGS, &ifr);
	}
	close(fd);
	return rc;
}

static int group_setup(void **state)
{
	char err[256] = "";

	(void)state;
	if (geteuid() != 0) {
		snprintf(skip_reason, sizeof(skip_reason),
			 "needs root (TCP_REPAIR and a network namespace)");
	} else if (unshare(CLONE_NEWNET)) {
		snprintf(skip_reason, sizeof(skip_reason),
			 "unshare(CLONE_NEWNET): %s", strerror(errno));
	} else if (lo_up()) {
		snprintf(skip_reason, sizeof(skip_reason),
			 "bringing lo up: %s", strerror(errno));
	} else if (tcpr_available(err, sizeof(err))) {
		snprintf(skip_reason, sizeof(skip_reason), "%s", err);
	}
	if (skip_reason[0])
		printf("# SKIP test_tcprepair: %s\n", skip_reason);
	return 0;
}

#define NEED_ENV()                    \
	do {                          \
		if (skip_reason[0])   \
			skip();       \
	} while (0)

/* ---- a connection and its byte streams ---- */

/* Byte @i of a stream: any lost, repeated or reordered run of bytes shifts
 * the offsets and is caught. */
static uint8_t pat(uint64_t i, uint8_t seed)
{
	return (uint8_t)(i ^ (i >> 8) ^ (i >> 17) ^ seed);
}

struct stream {
	int wfd, rfd;	     /* writer and reader socket */
	uint8_t seed;
	uint64_t written;    /* bytes the writer put into its socket */
	uint64_t read;	     /* bytes the reader took out, all checked */
	uint64_t target;     /* write until this many */
	bool bad;
	char why[128];
};

static void set_nonblock(int fd)
{
	int one = 1;

	assert_int_equal(ioctl(fd, FIONBIO, &one), 0);
}

/* make_pair() gives its listener the gate (so the accepted socket
 * inherits it). */
static bool pair_gated;

/* A connected pair over loopback: *@peer connected to *@dev (accepted). */
static void make_pair(int family, int *peer, int *dev)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t sl;
	int l = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(l >= 0);
	if (family == AF_INET) {
		struct sockaddr_in *a = (void *)&ss;

		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (void *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		sl = sizeof(*a);
	}
	if (pair_gated)
		assert_int_equal(tcpr_gate_attach(l), 0);
	assert_int_equal(bind(l, (void *)&ss, sl), 0);
	assert_int_equal(listen(l, 4), 0);
	assert_int_equal(getsockname(l, (void *)&ss, &sl), 0);
	*peer = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(*peer >= 0);
	assert_int_equal(connect(*peer, (void *)&ss, sl), 0);
	*dev = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(*dev >= 0);
	close(l);
	set_nonblock(*peer);
	set_nonblock(*dev);
}

/* Write the next bytes of @s, as many as the socket takes. */
static void stream_write(struct stream *s, uint64_t upto)
{
	uint8_t buf[65536];

	while (s->written < upto) {
		size_t n = sizeof(buf);
		ssize_t w;

		if (upto - s->written < n)
			n = (size_t)(upto - s->written);
		for (size_t i = 0; i < n; i++)
			buf[i] = pat(s->written + i, s->seed);
		w = send(s->wfd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w <= 0) {
			if (w < 0 && errno != EAGAIN) {
				s->bad = true;
				snprintf(s->why, sizeof(s->why),
					 "send: %s", strerror(errno));
			}
			return;
		}
		s->written += (uint64_t)w;
	}
}

/* Read and check what is there; an end of stream or error is fatal. */
static void stream_read(struct stream *s)
{
	uint8_t buf[65536];

	for (;;) {
		ssize_t r = recv(s->rfd, buf, sizeof(buf), MSG_DONTWAIT);

		if (r < 0 && errno == EAGAIN)
			return;
		if (r <= 0) {
			s->bad = true;
			snprintf(s->why, sizeof(s->why), "recv: %s",
				 r ? strerror(errno) : "end of stream");
			return;
		}
		for (ssize_t i = 0; i < r; i++) {
			if (buf[i] != pat(s->read + (uint64_t)i, s->seed)) {
				s->bad = true;
				snprintf(s->why, sizeof(s->why),
					 "byte %llu differs",
					 (unsigned long long)(s->read + i));
				return;
			}
		}
		s->read += (uint64_t)r;
	}
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Run both streams until each reader has every byte up to its target. */
static void pump(struct stream *a, struct stream *b, double limit_s)
{
	double end = now_s() + limit_s;

	while (a->read < a->target || b->read < b->target) {
		struct pollfd p[2] = { { .fd = a->rfd, .events = POLLIN },
				       { .fd = b->rfd, .events = POLLIN } };

		stream_write(a, a->target);
		stream_write(b, b->target);
		poll(p, 2, 20);
		stream_read(a);
		stream_read(b);
		if (a->bad || b->bad)
			fail_msg("stream broke: %s%s", a->why, b->why);
		if (now_s() > end)
			fail_msg("stalled: %llu/%llu and %llu/%llu bytes after "
				 "%.0f s",
				 (unsigned long long)a->read,
				 (unsigned long long)a->target,
				 (unsigned long long)b->read,
				 (unsigned long long)b->target, limit_s);
	}
}

/* The peer has seen neither a FIN nor a RST, nor an error. */
static void assert_peer_unharmed(int peer)
{
	struct pollfd p = { .fd = peer, .events = POLLRDHUP };
	int soerr = -1;
	socklen_t sl = sizeof(soerr);

	assert_int_equal(poll(&p, 1, 0), 0);
	assert_int_equal(getsockopt(peer, SOL_SOCKET, SO_ERROR, &soerr, &sl),
			 0);
	assert_int_equal(soerr, 0);
}

/*
 * Load the pair so the device socket has: unread bytes from the peer (its
 * receive queue) and, because the peer reads nothing, a send queue part
 * of which the peer's window has no room for (unsent).
 */
static void load_queues(struct stream *up, struct stream *down)
{
	int inq = 0, unsent = 0;

	/* peer -> device: 100 000 bytes the device does not read */
	stream_write(up, 100000);
	assert_int_equal(up->written, 100000);
	/* device -> peer: until the device's socket takes no more */
	for (int i = 0; i < 50; i++) {
		stream_write(down, down->written + (8u << 20));
		usleep(10000);
	}
	assert_false(up->bad || down->bad);
	usleep(50000);
	assert_int_equal(ioctl(down->wfd, SIOCINQ, &inq), 0);
	assert_int_equal(inq, 100000);
	assert_int_equal(ioctl(down->wfd, SIOCOUTQNSD, &unsent), 0);
	assert_true(unsent > 0);
}

/* ---- the tests ---- */

static void freeze_dump(int fd, struct tcpr_conn *c)
{
	char err[256] = "";

	if (tcpr_freeze(fd, err, sizeof(err)) ||
	    tcpr_dump(fd, c, err, sizeof(err)))
		fail_msg("%s", err);
}

static void restore_thaw(const struct tcpr_conn *c, int *fd)
{
	char err[256] = "";

	if (tcpr_restore(c, fd, err, sizeof(err)) ||
	    tcpr_thaw(*fd, err, sizeof(err)))
		fail_msg("%s", err);
}

/* Dump, drop, re-create: every byte arrives exactly once, both ways. */
static void handoff(int family)
{
	struct stream up = { .seed = 0x5a }, down = { .seed = 0xa5 };
	struct tcpr_conn c;
	int peer, dev, dev2;
	double t0;

	make_pair(family, &peer, &dev);
	up = (struct stream){ .wfd = peer, .rfd = dev, .seed = 0x5a };
	down = (struct stream){ .wfd = dev, .rfd = peer, .seed = 0xa5 };
	load_queues(&up, &down);

	freeze_dump(dev, &c);
	assert_int_equal(c.family, family);
	assert_int_equal(c.rcvq_len, 100000);
	for (uint32_t i = 0; i < c.rcvq_len; i++)
		if (c.rcvq[i] != pat(i, up.seed))
			fail_msg("receive queue byte %u", i);
	assert_true(c.sndq_unsent > 0 && c.sndq_unsent <= c.sndq_len);
	/* The send queue is the tail of what the device wrote. */
	for (uint32_t i = 0; i < c.sndq_len; i++)
		if (c.sndq[i] != pat(down.written - c.sndq_len + i, down.seed))
			fail_msg("send queue byte %u", i);
	assert_true(c.mss > 0);
	print_message("# %s: send queue %u bytes (%u unsent), receive queue "
		      "%u, mss %u, wscale %u/%u, sack %d, timestamps %d\n",
		      family == AF_INET ? "IPv4" : "IPv6", c.sndq_len,
		      c.sndq_unsent, c.rcvq_len, c.mss, c.snd_wscale,
		      c.rcv_wscale, c.sack, c.tstamp);

	tcpr_discard(dev);
	usleep(20000);
	assert_peer_unharmed(peer);
	restore_thaw(&c, &dev2);
	tcpr_conn_clear(&c);

	/* Everything written before, then 1 MiB more each way. */
	up.rfd = dev2;
	down.wfd = dev2;
	up.target = up.written + (1u << 20);
	down.target = down.written + (1u << 20);
	t0 = now_s();
	pump(&up, &down, 30);
	print_message("# queues and 1 MiB each way after the restore in %.0f "
		      "ms\n", (now_s() - t0) * 1000);
	assert_int_equal(up.read, up.target);
	assert_int_equal(down.read, down.target);
	assert_peer_unharmed(peer);
	close(peer);
	close(dev2);
}

static void test_handoff_v4(void **state)
{
	(void)state;
	NEED_ENV();
	handoff(AF_INET);
}

static void test_handoff_v6(void **state)
{
	(void)state;
	NEED_ENV();
	handoff(AF_INET6);
}

/* Freeze and thaw with nothing in between: the peer notices nothing. */
static void test_freeze_thaw_invisible(void **state)
{
	struct stream up, down;
	char err[256] = "";
	int peer, dev;

	(void)state;
	NEED_ENV();
	make_pair(AF_INET, &peer, &dev);
	up = (struct stream){ .wfd = peer, .rfd = dev, .seed = 1 };
	down = (struct stream){ .wfd = dev, .rfd = peer, .seed = 2 };
	up.target = down.target = 200000;
	pump(&up, &down, 10);

	if (tcpr_freeze(dev, err, sizeof(err)))
		fail_msg("%s", err);
	/* While frozen the device neither sends nor takes anything in. */
	stream_write(&up, up.written + 50000);
	usleep(100000);
	{
		int inq = -1;

		assert_int_equal(ioctl(dev, SIOCINQ, &inq), 0);
		assert_int_equal(inq, 0);
	}
	assert_peer_unharmed(peer);
	if (tcpr_thaw(dev, err, sizeof(err)))
		fail_msg("%s", err);

	up.target = up.written + (1u << 20);
	down.target = down.written + (1u << 20);
	pump(&up, &down, 30);
	assert_peer_unharmed(peer);
	close(peer);
	close(dev);
}

/* The gate: a socket accepted from a listener that has it is frozen by
 * shutting the gate and TCP_REPAIR alone, takes nothing in while frozen,
 * and after the thaw and the gate's opening carries a megabyte each way
 * with the peer unharmed. */
static void test_gate_freeze_thaw(void **state)
{
	struct stream up, down;
	char err[256] = "";
	int peer, dev, inq = -1;

	(void)state;
	NEED_ENV();
	if (tcpr_gate_set(false) == -EOPNOTSUPP)
		skip(); /* no eBPF here: the device attaches a filter per socket */
	pair_gated = true;
	make_pair(AF_INET, &peer, &dev);
	pair_gated = false;
	up = (struct stream){ .wfd = peer, .rfd = dev, .seed = 3 };
	down = (struct stream){ .wfd = dev, .rfd = peer, .seed = 4 };
	up.target = down.target = 100000;
	pump(&up, &down, 10);

	assert_int_equal(tcpr_gate_set(true), 0);
	if (tcpr_freeze_gated(dev, err, sizeof(err)))
		fail_msg("%s", err);
	stream_write(&up, up.written + 50000);
	usleep(100000);
	assert_int_equal(ioctl(dev, SIOCINQ, &inq), 0);
	assert_int_equal(inq, 0);
	assert_peer_unharmed(peer);
	if (tcpr_thaw_gated(dev, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(tcpr_gate_set(false), 0);

	up.target = up.written + (1u << 20);
	down.target = down.written + (1u << 20);
	pump(&up, &down, 30);
	assert_peer_unharmed(peer);
	close(peer);
	close(dev);
}

/* ---- the quick dump: sequences from TCP_INFO and what was read ahead ---- */

/* How long the call that took the last reference of the timestamp ran
 * (a read-ahead or a restore): the reference's clock was read at its
 * start and the kernel's value somewhere inside, so a preempted call
 * leaves the estimate that much ahead (ahead is safe: never behind). */
static uint64_t ref_took_ms;

/* tcpr_read_ahead(), timed for ref_took_ms. */
static void read_ahead(int fd, struct tcpr_conn *id)
{
	uint64_t t0 = tcpr_clock_ms();
	char err[256] = "";

	if (tcpr_read_ahead(fd, id, err, sizeof(err)))
		fail_msg("%s", err);
	ref_took_ms = tcpr_clock_ms() - t0;
}

/* Freeze @fd and dump it both ways: the quick dump (which must take the
 * way @want_quick says) into @q, and the full one into @f. The socket is
 * frozen and takes nothing in between, so both describe the same moment. */
static void dump_both(int fd, const struct tcpr_ahead *ahead, uint64_t rx_read,
		      bool want_quick, struct tcpr_conn *q, struct tcpr_conn *f)
{
	char err[256] = "";
	bool quick = !want_quick;
	uint64_t t0, t1;

	memset(q, 0, sizeof(*q));
	memset(f, 0, sizeof(*f));
	if (tcpr_freeze(fd, err, sizeof(err)) ||
	    tcpr_ident(fd, q, err, sizeof(err)) ||
	    tcpr_ident(fd, f, err, sizeof(err)))
		fail_msg("%s", err);
	q->ahead = *ahead;
	t0 = tcpr_clock_ms();
	if (tcpr_dump_live(fd, f, err, sizeof(err)) ||
	    tcpr_dump_quick(fd, q, rx_read, &quick, err, sizeof(err)))
		fail_msg("%s", err);
	t1 = tcpr_clock_ms();
	assert_int_equal(quick, want_quick);
	/* What a restore takes: the same, but for the timestamp, which the
	 * quick dump estimates: never behind the kernel's clock (the peer
	 * would drop the segments), a few milliseconds ahead at most (here
	 * plus the time between the two dumps, which read the queues, and
	 * the time the reference took: ref_took_ms). */
	assert_int_equal(q->snd_seq, f->snd_seq);
	assert_int_equal(q->rcv_seq, f->rcv_seq);
	assert_int_equal(q->mss, f->mss);
	assert_int_equal(q->snd_wscale, f->snd_wscale);
	assert_int_equal(q->rcv_wscale, f->rcv_wscale);
	assert_int_equal(q->sack, f->sack);
	assert_int_equal(q->tstamp, f->tstamp);
	assert_memory_equal(&q->win, &f->win, sizeof(q->win));
	assert_int_equal(q->sndq_len, f->sndq_len);
	assert_int_equal(q->sndq_unsent, f->sndq_unsent);
	assert_int_equal(q->rcvq_len, f->rcvq_len);
	if (q->sndq_len)
		assert_memory_equal(q->sndq, f->sndq, q->sndq_len);
	if (q->rcvq_len)
		assert_memory_equal(q->rcvq, f->rcvq, q->rcvq_len);
	if (f->tstamp) {
		int32_t ahead_by = (int32_t)(q->ts_val - f->ts_val);

		if (ahead_by < 0 ||
		    ahead_by > (int32_t)(t1 - t0 + ref_took_ms) + 5)
			fail_msg("timestamp %u, %d ms from the kernel's %u read "
				 "up to %d ms before, its reference taken in %d ms",
				 q->ts_val, ahead_by, f->ts_val, (int)(t1 - t0),
				 (int)ref_took_ms);
		assert_int_equal(q->ts_val & 1, 0);
	}
}

/* Restore @c (taking its read-ahead as a device does), thaw, and give the
 * socket to both streams. */
static int restore_quick(struct tcpr_conn *c, struct tcpr_ahead *ahead)
{
	uint64_t before = tcpr_clock_ms();
	char err[256] = "";
	int fd;

	if (tcpr_restore(c, &fd, err, sizeof(err)) ||
	    tcpr_thaw_restored(fd, c, false, err, sizeof(err)))
		fail_msg("%s", err);
	tcpr_ahead_restored(c, before, ahead);
	ref_took_ms = tcpr_clock_ms() - before;
	return fd;
}

/* An idle connection, read ahead while it ran, is dumped from TCP_INFO
 * alone, and the sequences are the kernel's; then once more from its
 * restored copy, whose read-ahead costs nothing; every byte arrives. */
static void test_quick_dump(void **state)
{
	struct stream up, down;
	struct tcpr_conn q, f;
	struct tcpr_ahead ahead = { 0 };
	struct tcpr_conn id = { 0 };
	uint64_t base;
	int peer, dev;

	(void)state;
	NEED_ENV();
	make_pair(AF_INET, &peer, &dev);
	up = (struct stream){ .wfd = peer, .rfd = dev, .seed = 7 };
	down = (struct stream){ .wfd = dev, .rfd = peer, .seed = 8 };
	up.target = down.target = 100000;
	pump(&up, &down, 10);
	usleep(20000);
	read_ahead(dev, &id);
	assert_true(id.ahead.seq_ok && id.ahead.mss > 0);
	ahead = id.ahead;
	/* The bases hold whatever flows afterwards. */
	up.target = up.written + 300000;
	down.target = down.written + 500000;
	pump(&up, &down, 10);
	usleep(50000);
	dump_both(dev, &ahead, up.read, true, &q, &f);
	tcpr_conn_clear(&f);
	tcpr_discard(dev);
	dev = restore_quick(&q, &ahead);
	base = up.read;
	up.rfd = down.wfd = dev;
	up.target = up.written + (1u << 20);
	down.target = down.written + (1u << 20);
	pump(&up, &down, 30);
	tcpr_conn_clear(&q);
	usleep(50000);
	/* The restored socket: its bytes counted from the restore. */
	dump_both(dev, &ahead, up.read - base, true, &q, &f);
	tcpr_conn_clear(&f);
	tcpr_discard(dev);
	dev = restore_quick(&q, &ahead);
	tcpr_conn_clear(&q);
	up.rfd = down.wfd = dev;
	up.target = up.written + (1u << 20);
	down.target = down.written + (1u << 20);
	pump(&up, &down, 30);
	assert_peer_unharmed(peer);
	close(peer);
	close(dev);
}

/* Bytes unread, unsent and unacknowledged: the quick dump takes the full
 * way and every byte arrives once; the copy restored with those queues
 * then dumps quickly once they are gone (its read-ahead counts the
 * receive queue it was given). A reader that says it read less than it
 * did gets the full way too. */
static void test_quick_dump_full_way(void **state)
{
	struct stream up, down;
	struct tcpr_conn q, f, id = { 0 };
	struct tcpr_ahead ahead;
	char err[256] = "";
	uint64_t base;
	int peer, dev;

	(void)state;
	NEED_ENV();
	make_pair(AF_INET, &peer, &dev);
	up = (struct stream){ .wfd = peer, .rfd = dev, .seed = 9 };
	down = (struct stream){ .wfd = dev, .rfd = peer, .seed = 10 };
	usleep(20000);
	read_ahead(dev, &id);
	ahead = id.ahead;
	load_queues(&up, &down);
	dump_both(dev, &ahead, up.read, false, &q, &f);
	assert_int_equal(q.rcvq_len, 100000);
	assert_true(q.sndq_len > 0 && q.sndq_unsent > 0);
	tcpr_conn_clear(&f);
	tcpr_discard(dev);
	dev = restore_quick(&q, &ahead);
	tcpr_conn_clear(&q);
	base = up.read;
	up.rfd = down.wfd = dev;
	up.target = up.written + (1u << 20);
	down.target = down.written + (1u << 20);
	pump(&up, &down, 30);
	usleep(50000);
	/* rx_read one short: a byte could be unread. */
	dump_both(dev, &ahead, up.read - base - 1, false, &q, &f);
	tcpr_conn_clear(&q);
	tcpr_conn_clear(&f);
	if (tcpr_thaw(dev, err, sizeof(err)))
		fail_msg("%s", err);
	dump_both(dev, &ahead, up.read - base, true, &q, &f);
	tcpr_conn_clear(&f);
	tcpr_discard(dev);
	dev = restore_quick(&q, &ahead);
	tcpr_conn_clear(&q);
	up.rfd = down.wfd = dev;
	up.target = up.written + (1u << 20);
	down.target = down.written + (1u << 20);
	pump(&up, &down, 30);
	assert_peer_unharmed(peer);
	close(peer);
	close(dev);
}

/* Reading ahead refuses a connection with bytes in flight (its moment in
 * repair mode would take the device's writes as repair data, and the
 * sequences would not be one moment's) and leaves it as it was. */
static void test_read_ahead_refuses_traffic(void **state)
{
	struct stream up, down;
	struct tcpr_conn id = { 0 };
	char err[256] = "";
	int peer, dev, reuse = 0;
	socklen_t sl = sizeof(reuse);

	(void)state;
	NEED_ENV();
	make_pair(AF_INET, &peer, &dev);
	up = (struct stream){ .wfd = peer, .rfd = dev, .seed = 11 };
	down = (struct stream){ .wfd = dev, .rfd = peer, .seed = 12 };
	load_queues(&up, &down);
	assert_int_equal(tcpr_read_ahead(dev, &id, err, sizeof(err)), -EAGAIN);
	assert_false(id.ahead.seq_ok);
	/* An idle one: read ahead, and out of repair mode with its reuse. */
	close(peer);
	close(dev);
	make_pair(AF_INET, &peer, &dev);
	assert_int_equal(setsockopt(dev, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 },
				    sizeof(int)), 0);
	usleep(20000);
	if (tcpr_read_ahead(dev, &id, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(getsockopt(dev, SOL_TCP, TCP_REPAIR, &reuse, &sl), 0);
	assert_int_equal(reuse, 0);
	assert_int_equal(getsockopt(dev, SOL_SOCKET, SO_REUSEADDR, &reuse, &sl),
			 0);
	assert_int_equal(reuse, 1);
	up = (struct stream){ .wfd = peer, .rfd = dev, .seed = 13 };
	down = (struct stream){ .wfd = dev, .rfd = peer, .seed = 14 };
	up.target = down.target = 1u << 20;
	pump(&up, &down, 30);
	assert_peer_unharmed(peer);
	close(peer);
	close(dev);
}

/* ---- through libferry's state layer ---- */

static int conn_visit(ferry_visitor *v, void *dev)
{
	tcpr_visit(v, dev);
	return ferry_visit_error(v);
}

static const struct ferry_device_type conn_type = {
	.name = "tcpconn", .version = 1, .size = sizeof(struct tcpr_conn),
	.visit = conn_visit,
};

static void state_round_trip(struct tcpr_conn *c, struct tcpr_conn *d)
{
	struct ferry_buf *b = ferry_buf_new();
	struct ferry_state_binding bind = { &conn_type, "c0", d, 0 };
	char err[512] = "";
	const void *data;
	size_t len;

	assert_non_null(b);
	if (ferry_state_save(b, &conn_type, "c0", c, err, sizeof(err)))
		fail_msg("save: %s", err);
	assert_int_equal(ferry_state_end(b), 0);
	data = ferry_buf_data(b, &len);
	assert_true(len > c->sndq_len + c->rcvq_len);
	memset(d, 0, sizeof(*d));
	if (ferry_state_load(data, len, &bind, 1, err, sizeof(err)))
		fail_msg("load: %s", err);
	ferry_buf_free(b);
}

/* Every field and queue byte survives the state writer and reader, and
 * the loaded copy is good enough to carry the connection on. */
static void test_visit_round_trip(void **state)
{
	struct stream up, down;
	struct tcpr_conn c, d;
	int peer, dev, dev2;

	(void)state;
	NEED_ENV();
	make_pair(AF_INET, &peer, &dev);
	up = (struct stream){ .wfd = peer, .rfd = dev, .seed = 3 };
	down = (struct stream){ .wfd = dev, .rfd = peer, .seed = 4 };
	load_queues(&up, &down);
	freeze_dump(dev, &c);
	state_round_trip(&c, &d);

	/* Fields: the struct minus its two queue pointers. */
	assert_int_equal(d.family, c.family);
	assert_memory_equal(d.laddr, c.laddr, 16);
	assert_memory_equal(d.raddr, c.raddr, 16);
	assert_int_equal(d.lport, c.lport);
	assert_int_equal(d.rport, c.rport);
	assert_int_equal(d.snd_seq, c.snd_seq);
	assert_int_equal(d.rcv_seq, c.rcv_seq);
	assert_int_equal(d.sndq_len, c.sndq_len);
	assert_int_equal(d.sndq_unsent, c.sndq_unsent);
	assert_int_equal(d.rcvq_len, c.rcvq_len);
	assert_int_equal(d.mss, c.mss);
	assert_int_equal(d.snd_wscale, c.snd_wscale);
	assert_int_equal(d.rcv_wscale, c.rcv_wscale);
	assert_int_equal(d.sack, c.sack);
	assert_int_equal(d.tstamp, c.tstamp);
	assert_int_equal(d.wscale_ok, c.wscale_ok);
	assert_int_equal(d.ts_val, c.ts_val);
	assert_memory_equal(&d.win, &c.win, sizeof(c.win));
	assert_int_equal(d.nodelay, c.nodelay);
	assert_int_equal(d.sndbuf, c.sndbuf);
	assert_int_equal(d.rcvbuf, c.rcvbuf);
	assert_true(d.sndq != c.sndq && d.rcvq != c.rcvq);
	assert_memory_equal(d.sndq, c.sndq, c.sndq_len);
	assert_memory_equal(d.rcvq, c.rcvq, c.rcvq_len);
	tcpr_conn_clear(&c);

	tcpr_discard(dev);
	restore_thaw(&d, &dev2);
	tcpr_conn_clear(&d);
	up.rfd = dev2;
	down.wfd = dev2;
	up.target = up.written + (1u << 20);
	down.target = down.written + (1u << 20);
	pump(&up, &down, 30);
	assert_peer_unharmed(peer);
	close(peer);
	close(dev2);
}

/* Bytes sent but never acknowledged: the peer lost them (it was frozen,
 * so it dropped them), the restored socket must send them again. */
static void test_unacked_resent(void **state)
{
	struct stream up, down;
	struct tcpr_conn c;
	char err[256] = "";
	int peer, dev, dev2;
	double t0;

	(void)state;
	NEED_ENV();
	make_pair(AF_INET, &peer, &dev);
	up = (struct stream){ .wfd = peer, .rfd = dev, .seed = 5 };
	down = (struct stream){ .wfd = dev, .rfd = peer, .seed = 6 };
	if (tcpr_freeze(peer, err, sizeof(err)))
		fail_msg("%s", err);
	stream_write(&down, 30000);
	assert_int_equal(down.written, 30000);
	usleep(50000);
	freeze_dump(dev, &c);
	assert_int_equal(c.sndq_len, 30000);
	assert_int_equal(c.sndq_unsent, 0);
	if (tcpr_thaw(peer, err, sizeof(err)))
		fail_msg("%s", err);
	tcpr_discard(dev);
	restore_thaw(&c, &dev2);
	tcpr_conn_clear(&c);
	up.rfd = dev2;
	down.wfd = dev2;
	up.target = 1u << 20;
	down.target = down.written + (1u << 20);
	t0 = now_s();
	pump(&up, &down, 30);
	print_message("# unacked bytes resent and 1 MiB each way in %.0f ms\n",
		      (now_s() - t0) * 1000);
	assert_peer_unharmed(peer);
	close(peer);
	close(dev2);
}

/* A discarded frozen socket leaves no trace on the wire: the peer's next
 * segments meet no socket, and it is a restore that answers them. A peer
 * of a socket that is merely closed would see a FIN: the test would fail
 * without repair mode. */
static void test_discard_is_silent(void **state)
{
	struct tcpr_conn c;
	char buf[16];
	int peer, dev;

	(void)state;
	NEED_ENV();
	make_pair(AF_INET, &peer, &dev);
	freeze_dump(dev, &c);
	tcpr_discard(dev);
	usleep(50000);
	assert_peer_unharmed(peer);
	assert_int_equal(recv(peer, buf, sizeof(buf), MSG_DONTWAIT), -1);
	assert_int_equal(errno, EAGAIN);
	tcpr_conn_clear(&c);
	close(peer);
}

/* The release's disconnect (tcpr_unhash_frozen()): the peer sees nothing,
 * and the connection's 4-tuple is free for a restore in the same
 * namespace while the old socket is still open (it is not before the
 * disconnect); the old socket's close later is silent too. */
static void test_unhash_frees_the_tuple(void **state)
{
	struct stream up, down;
	struct tcpr_conn c;
	char err[256] = "";
	int peer, dev, dev2 = -1;

	(void)state;
	NEED_ENV();
	make_pair(AF_INET, &peer, &dev);
	up = (struct stream){ .wfd = peer, .rfd = dev, .seed = 0x11 };
	down = (struct stream){ .wfd = dev, .rfd = peer, .seed = 0x22 };
	stream_write(&up, 5000);
	stream_write(&down, 7000);
	usleep(20000);
	freeze_dump(dev, &c);
	assert_int_not_equal(tcpr_restore(&c, &dev2, err, sizeof(err)), 0);
	assert_int_equal(dev2, -1);
	assert_int_equal(tcpr_unhash_frozen(dev), 0);
	usleep(50000);
	assert_peer_unharmed(peer);
	restore_thaw(&c, &dev2);
	tcpr_conn_clear(&c);
	tcpr_close_frozen(dev);
	up.rfd = dev2;
	down.wfd = dev2;
	up.target = up.written + (256u << 10);
	down.target = down.written + (256u << 10);
	pump(&up, &down, 30);
	assert_int_equal(up.read, up.target);
	assert_int_equal(down.read, down.target);
	usleep(20000);
	assert_peer_unharmed(peer);
	close(peer);
	close(dev2);
}

/* A dump that makes no sense is refused with a reason, nothing created. */
static void test_restore_rejects_bad_dump(void **state)
{
	struct tcpr_conn c = { .family = AF_INET, .lport = 1, .rport = 2,
			       .mss = 1460, .sndq_len = 4, .sndq_unsent = 9 };
	uint8_t q[4] = { 0 };
	char err[256] = "";
	int fd = 123;

	(void)state;
	c.sndq = q;
	assert_int_equal(tcpr_restore(&c, &fd, err, sizeof(err)), -EINVAL);
	assert_int_equal(fd, -1);
	assert_non_null(strstr(err, "inconsistent queues"));
	c.sndq_unsent = 0;
	c.family = 12345;
	assert_int_equal(tcpr_restore(&c, &fd, err, sizeof(err)),
			 -EAFNOSUPPORT);
}

/* Many connections of one listener's port at once, as a device holds
 * them: restored one after the other, each carries one request and one
 * answer after the handoff, and the listener can be bound again. Prints
 * the cost per connection of each step (the handoff's share of the
 * downtime). */
#define MANY 256

static void test_many_connections(void **state)
{
	static int peer[MANY], dev[MANY];
	static struct tcpr_conn c[MANY];
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	double t[5];
	char err[256] = "", b;
	int l;

	(void)state;
	NEED_ENV();
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(l, (void *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, MANY), 0);
	assert_int_equal(getsockname(l, (void *)&sa, &sl), 0);
	for (int i = 0; i < MANY; i++) {
		peer[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_int_equal(connect(peer[i], (void *)&sa, sizeof(sa)), 0);
		dev[i] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		assert_true(dev[i] >= 0);
		assert_int_equal(send(peer[i], "q", 1, 0), 1);
	}
	close(l);
	usleep(20000);
	t[0] = now_s();
	for (int i = 0; i < MANY; i++)
		if (tcpr_freeze(dev[i], err, sizeof(err)))
			fail_msg("%s", err);
	t[1] = now_s();
	for (int i = 0; i < MANY; i++)
		if (tcpr_dump(dev[i], &c[i], err, sizeof(err)))
			fail_msg("%s", err);
	t[2] = now_s();
	for (int i = 0; i < MANY; i++)
		tcpr_discard(dev[i]);
	t[3] = now_s();
	for (int i = 0; i < MANY; i++)
		if (tcpr_restore(&c[i], &dev[i], err, sizeof(err)) ||
		    tcpr_thaw(dev[i], err, sizeof(err)))
			fail_msg("%s", err);
	t[4] = now_s();
	print_message("# %d connections, per connection: freeze %.1f us, dump "
		      "%.1f us, discard %.1f us, restore+thaw %.1f us\n", MANY,
		      (t[1] - t[0]) * 1e6 / MANY, (t[2] - t[1]) * 1e6 / MANY,
		      (t[3] - t[2]) * 1e6 / MANY, (t[4] - t[3]) * 1e6 / MANY);
	/* The device re-creates its listener on the connections' port. */
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 },
				    sizeof(int)), 0);
	assert_int_equal(bind(l, (void *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 1), 0);
	{
		int p2 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), d2;

		assert_int_equal(connect(p2, (void *)&sa, sizeof(sa)), 0);
		d2 = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		assert_true(d2 >= 0);
		close(d2);
		close(p2);
		close(l);
	}
	for (int i = 0; i < MANY; i++) {
		struct pollfd p = { .fd = dev[i], .events = POLLIN };

		assert_int_equal(c[i].rcvq_len, 1);
		tcpr_conn_clear(&c[i]);
		assert_int_equal(poll(&p, 1, 5000), 1);
		assert_int_equal(recv(dev[i], &b, 1, 0), 1);
		assert_int_equal(b, 'q');
		assert_int_equal(send(dev[i], "a", 1, MSG_NOSIGNAL), 1);
		assert_int_equal(recv(peer[i], &b, 1, 0), 1);
		assert_int_equal(b, 'a');
		assert_peer_unharmed(peer[i]);
		close(peer[i]);
		close(dev[i]);
	}
}

/* ---- the other topology: the address moves to another host ---- */

/* A network namespace kept by an fd: a child creates it and waits until
 * its interfaces are moved in, then exits. */
struct host {
	pid_t pid;
	int nsfd;
	int go;	/* the child exits when a byte arrives */
};

static void host_new(struct host *h)
{
	int ready[2], go[2];
	char path[64], c;

	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	h->pid = fork();
	assert_true(h->pid >= 0);
	if (h->pid == 0) {
		close(go[1]);
		if (unshare(CLONE_NEWNET) || write(ready[1], "r", 1) != 1)
			_exit(1);
		_exit(read(go[0], &c, 1) < 0);
	}
	close(ready[1]);
	close(go[0]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)h->pid);
	h->nsfd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(h->nsfd >= 0);
	h->go = go[1];
}

static void host_release(struct host *h)
{
	int st;

	/* A byte, not the close: the other host's child holds a copy. */
	assert_int_equal(write(h->go, "x", 1), 1);
	close(h->go);
	assert_int_equal(waitpid(h->pid, &st, 0), h->pid);
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd))
		fail_msg("%s failed", cmd);
}

static void mac_of(const char *ifname, char *buf, size_t len)
{
	struct ifreq ifr = { 0 };
	const uint8_t *m = (const uint8_t *)ifr.ifr_hwaddr.sa_data;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	assert_int_equal(ioctl(fd, SIOCGIFHWADDR, &ifr), 0);
	close(fd);
	snprintf(buf, len, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2],
		 m[3], m[4], m[5]);
}

static void enter(int nsfd)
{
	assert_int_equal(setns(nsfd, CLONE_NEWNET), 0);
}

/*
 * Two hosts A and B (namespaces) and the client (the test's namespace) on
 * a bridge. The guest's address 10.77.0.10 is on A, where the connection
 * is accepted; the connection is frozen and dumped, A lets go of the
 * address, B takes it, announces it and restores the connection. The
 * client goes on as if nothing happened; without the announcement its
 * ARP entry would still point at A.
 */
static void test_move_to_other_host(void **state)
{
	struct stream up, down;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct netaddr guest;
	struct host a, b;
	struct tcpr_conn c;
	socklen_t sl = sizeof(sa);
	char err[256] = "", client_mac[32];
	int client_ns, l, peer, dev, dev2;
	double t0;

	(void)state;
	NEED_ENV();
	if (system("ip -V >/dev/null 2>&1"))
		skip();
	client_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	assert_true(client_ns >= 0);
	host_new(&a);
	host_new(&b);
	sh("ip link add br0 type bridge && ip link set br0 up && "
	   "ip addr add 10.77.0.3/24 dev br0 && "
	   "ip link add vA type veth peer name eth0 netns %d && "
	   "ip link add vB type veth peer name eth0 netns %d && "
	   "ip link set vA master br0 up && ip link set vB master br0 up",
	   (int)a.pid, (int)b.pid);
	host_release(&a);
	host_release(&b);
	mac_of("br0", client_mac, sizeof(client_mac));
	enter(a.nsfd);
	sh("ip link set lo up && ip link set eth0 up && "
	   "ip addr add 10.77.0.1/24 dev eth0");
	assert_int_equal(netaddr_parse("10.77.0.10/24", &guest, err,
				       sizeof(err)), 0);
	if (netaddr_add(&guest, "eth0", err, sizeof(err)))
		fail_msg("%s", err);
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memcpy(&sa.sin_addr, guest.addr, 4);
	assert_int_equal(bind(l, (void *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (void *)&sa, &sl), 0);
	enter(b.nsfd);
	sh("ip link set lo up && ip link set eth0 up && "
	   "ip addr add 10.77.0.2/24 dev eth0");
	/* B knows the client already, as a host that talked to it would:
	 * it sends no ARP request of its own that would tell the client
	 * where the address went, only the announcement does. */
	sh("ip neigh replace 10.77.0.3 lladdr %s dev eth0 nud permanent",
	   client_mac);
	enter(client_ns);
	peer = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(peer, (void *)&sa, sizeof(sa)), 0);
	dev = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(dev >= 0);
	close(l);
	set_nonblock(peer);
	set_nonblock(dev);
	up = (struct stream){ .wfd = peer, .rfd = dev, .seed = 7 };
	down = (struct stream){ .wfd = dev, .rfd = peer, .seed = 8 };
	load_queues(&up, &down);

	/* Release on A, acquire on B: the order of issue 21's handoff. */
	t0 = now_s();
	freeze_dump(dev, &c);
	tcpr_discard(dev);
	enter(a.nsfd);
	if (netaddr_del(&guest, "eth0", err, sizeof(err)))
		fail_msg("%s", err);
	enter(b.nsfd);
	if (netaddr_add(&guest, "eth0", err, sizeof(err)) ||
	    netaddr_announce(&guest, "eth0", err, sizeof(err)))
		fail_msg("%s", err);
	restore_thaw(&c, &dev2);
	tcpr_conn_clear(&c);
	enter(client_ns);
	print_message("# moved to host B in %.1f ms\n", (now_s() - t0) * 1000);

	up.rfd = dev2;
	down.wfd = dev2;
	up.target = up.written + (1u << 20);
	down.target = down.written + (1u << 20);
	t0 = now_s();
	pump(&up, &down, 30);
	print_message("# queues and 1 MiB each way from host B in %.0f ms\n",
		      (now_s() - t0) * 1000);
	assert_peer_unharmed(peer);
	close(peer);
	close(dev2);
	close(a.nsfd);
	close(b.nsfd);
	close(client_ns);
	sh("ip link del br0");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handoff_v4),
		cmocka_unit_test(test_handoff_v6),
		cmocka_unit_test(test_freeze_thaw_invisible),
		cmocka_unit_test(test_gate_freeze_thaw),
		cmocka_unit_test(test_quick_dump),
		cmocka_unit_test(test_quick_dump_full_way),
		cmocka_unit_test(test_read_ahead_refuses_traffic),
		cmocka_unit_test(test_visit_round_trip),
		cmocka_unit_test(test_unacked_resent),
		cmocka_unit_test(test_discard_is_silent),
		cmocka_unit_test(test_unhash_frees_the_tuple),
		cmocka_unit_test(test_restore_rejects_bad_dump),
		cmocka_unit_test(test_many_connections),
		cmocka_unit_test(test_move_to_other_host),
	};

	return cmocka_run_group_tests(tests, group_setup, NULL);
}
