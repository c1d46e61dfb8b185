// SPDX-License-Identifier: MIT
/*
 * tcprepair.c - freeze, dump, restore and thaw established TCP sockets with
 * the kernel's TCP_REPAIR mode (see tcprepair.h).
 *
 * A frozen socket is in repair mode, so it sends nothing, and carries a
 * socket filter that drops every segment addressed to it, so it accepts
 * nothing either: data the peer sends while the socket is frozen is neither
 * queued nor acknowledged, and the peer retransmits it to whichever socket
 * holds the connection once it is thawed. Without the filter the kernel
 * would still take in and acknowledge data after the dump, and a restored
 * copy would never see those bytes.
 *
 * The sequence numbers and queues, as the kernel shows them in repair mode:
 *
 *   send:     snd_una ........ snd_nxt ........ write_seq  (= snd_seq)
 *             |<- sent, unacked ->|<--- unsent --->|
 *   receive:  copied_seq ........ rcv_nxt                  (= rcv_seq)
 *             |<----- unread ----->|
 *
 * A restore sets each queue's sequence to where its saved bytes start and
 * writes them back, which moves the sequence to where it was. The sent part
 * of the send queue is written in repair mode, where the kernel takes it as
 * sent and retransmits it if the peer never acknowledges it. The unsent
 * part must stay unsent, or it would only reach the peer by retransmission
 * beyond the peer's window: tcpr_restore() keeps it aside and tcpr_thaw()
 * queues it normally once repair mode is off (CRIU and passt do the same).
 */

#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "errf.h"
#include "tcprepair.h"

/* Older C library headers lack some of these; the values are the
 * kernel's ABI (include/uapi/linux/tcp.h, sockios.h). */
#ifndef TCP_REPAIR_ON
#define TCP_REPAIR_ON 1
#endif
#ifndef TCP_REPAIR_OFF
#define TCP_REPAIR_OFF 0
#endif
#ifndef TCP_REPAIR_OFF_NO_WP
#define TCP_REPAIR_OFF_NO_WP -1
#endif
#ifndef TCPOPT_MAXSEG
#define TCPOPT_MAXSEG 2
#endif
#ifndef TCPOPT_WINDOW
#define TCPOPT_WINDOW 3
#endif
#ifndef TCPOPT_SACK_PERMITTED
#define TCPOPT_SACK_PERMITTED 4
#endif
#ifndef TCPOPT_TIMESTAMP
#define TCPOPT_TIMESTAMP 8
#endif

/* The repair queues (enum in the kernel's uapi header). */
enum { TCPR_NO_QUEUE = 0, TCPR_RECV_QUEUE = 1, TCPR_SEND_QUEUE = 2 };

/* TCP_REPAIR_OPTIONS takes an array of these. */
struct tcpr_opt {
	uint32_t code;
	uint32_t val;
};

/* The 20-byte TCP_REPAIR_WINDOW layout every kernel since 4.8 accepts. */
struct tcpr_wnd {
	uint32_t snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup;
};
_Static_assert(sizeof(struct tcpr_wnd) == 20, "TCP_REPAIR_WINDOW is 20 bytes");
_Static_assert(sizeof(int) == sizeof(int32_t), "family is visited as i32");

/* Queues are written back in chunks the kernel can allocate at once. */
#define TCPR_CHUNK (256u << 10)
#define TCPR_CHUNK_MIN 4096u
/* Largest queue tcpr_visit() carries (the state layer's field limit). */
#define TCPR_QUEUE_MAX (64u << 20)
/* How long tcpr_thaw() waits for room to queue the unsent bytes. */
#define TCPR_THAW_WAIT_MS 2000


static int sopt(int fd, int level, int name, int val)
{
	return setsockopt(fd, level, name, &val, sizeof(val)) ? -errno : 0;
}

static int gopt(int fd, int level, int name, int *val)
{
	socklen_t sl = sizeof(*val);

	*val = 0;
	return getsockopt(fd, level, name, val, &sl) ? -errno : 0;
}

/* ---- the drop-everything filter of a frozen socket ---- */

/*
 * One eBPF program "return 0" (drop), loaded once and attached to every
 * frozen socket: attaching a loaded program costs about a microsecond,
 * while a classic filter is translated and compiled for each socket
 * (over 100 us, which a thousand connections would add to the downtime).
 * The classic filter remains the fallback where bpf() is refused.
 */
static pthread_once_t drop_once = PTHREAD_ONCE_INIT;
static int drop_prog = -1;

static void drop_prog_load(void)
{
	struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	a.insns = (uintptr_t)insns;
	a.insn_cnt = 2;
	a.license = (uintptr_t)"MIT";
	drop_prog = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a));
}

/* tcpr_drop_filter() - see tcprepair.h. */
int tcpr_drop_filter(void)
{
	pthread_once(&drop_once, drop_prog_load);
	return drop_prog;
}

static int filter_attach(int fd)
{
	struct sock_filter drop[] = { BPF_STMT(BPF_RET | BPF_K, 0) };
	struct sock_fprog prog = { .len = 1, .filter = drop };

	if (tcpr_drop_filter() >= 0 &&
	    !setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF, &drop_prog,
			sizeof(drop_prog)))
		return 0;
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)))
		return -errno;
	return 0;
}

static int filter_detach(int fd)
{
	int dummy = 0;

	if (setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &dummy,
		       sizeof(dummy)) && errno != ENOENT)
		return -errno;
	return 0;
}

/* ---- the gate: one filter for all of a process's sockets ---- */

/*
 * The gate is an eBPF socket filter that drops everything while a
 * one-element array map holds 1 and lets everything through while it
 * holds 0. Attached to a socket ahead of the pause (a listener's accepted
 * sockets inherit it), it lets one map update shut every connection of
 * the process at the freeze and open them all again at the thaw, instead
 * of a filter attached to and detached from each socket in the pause
 * (about 2 us each, twice per connection).
 */
static pthread_once_t gate_once = PTHREAD_ONCE_INIT;
static int gate_map = -1, gate_prog = -1;

static void gate_load(void)
{
	union bpf_attr a;
	struct bpf_insn insns[] = {
		/* key = 0 on the stack; r0 = lookup(map, &key) */
		{ .code = BPF_ST | BPF_MEM | BPF_W, .dst_reg = BPF_REG_10, .off = -4 },
		{ .code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = BPF_REG_2, .src_reg = BPF_REG_10 },
		{ .code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = BPF_REG_2, .imm = -4 },
		{ .code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = BPF_REG_1,
		  .src_reg = BPF_PSEUDO_MAP_FD, .imm = 0 /* the map, below */ },
		{ 0 },
		{ .code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_map_lookup_elem },
		/* no value, or a closed gate: drop (insn 11) */
		{ .code = BPF_JMP | BPF_JEQ | BPF_K, .dst_reg = BPF_REG_0, .off = 4 },
		{ .code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = BPF_REG_0, .src_reg = BPF_REG_0 },
		{ .code = BPF_JMP | BPF_JNE | BPF_K, .dst_reg = BPF_REG_0, .off = 2 },
		/* open: keep the whole packet */
		{ .code = BPF_ALU | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = -1 },
		{ .code = BPF_JMP | BPF_EXIT },
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};

	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_ARRAY;
	a.key_size = a.value_size = sizeof(uint32_t);
	a.max_entries = 1;
	gate_map = (int)syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof(a));
	if (gate_map < 0)
		return;
	insns[3].imm = gate_map;
	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	a.insns = (uintptr_t)insns;
	a.insn_cnt = sizeof(insns) / sizeof(insns[0]);
	a.license = (uintptr_t)"MIT";
	gate_prog = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a));
	if (gate_prog < 0) {
		close(gate_map);
		gate_map = -1;
	}
}

/* tcpr_gate_attach() - see tcprepair.h. */
int tcpr_gate_attach(int fd)
{
	pthread_once(&gate_once, gate_load);
	if (gate_prog < 0)
		return -EOPNOTSUPP;
	return setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF, &gate_prog,
			  sizeof(gate_prog)) ? -errno : 0;
}

/* tcpr_gate_set() - see tcprepair.h. */
int tcpr_gate_set(bool closed)
{
	uint32_t key = 0, val = closed;
	union bpf_attr a;

	pthread_once(&gate_once, gate_load);
	if (gate_map < 0)
		return -EOPNOTSUPP;
	memset(&a, 0, sizeof(a));
	a.map_fd = (uint32_t)gate_map;
	a.key = (uintptr_t)&key;
	a.value = (uintptr_t)&val;
	a.flags = BPF_ANY;
	return syscall(SYS_bpf, BPF_MAP_UPDATE_ELEM, &a, sizeof(a)) ? -errno : 0;
}

/* tcpr_gate_fds() - see tcprepair.h. */
int tcpr_gate_fds(int *map, int *prog)
{
	/* Loaded once, before any socket could have it (pthread_once). */
	if (gate_map < 0 || gate_prog < 0)
		return -ENOENT;
	*map = gate_map;
	*prog = gate_prog;
	return 0;
}

static int adopt_map = -1, adopt_prog = -1;

static void gate_adopted(void)
{
	gate_map = adopt_map;
	gate_prog = adopt_prog;
}

/* tcpr_gate_adopt() - see tcprepair.h. */
int tcpr_gate_adopt(int map, int prog)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	int old_map, old_prog;

	pthread_mutex_lock(&lock);
	adopt_map = map;
	adopt_prog = prog;
	pthread_once(&gate_once, gate_adopted);
	old_map = gate_map;
	old_prog = gate_prog;
	/* This process made a gate of its own (for its prepared sockets, or
	 * no eBPF): the passed one replaces it. Sockets that have the old
	 * one keep it through their filter's reference; none of them is
	 * handed off again (prepared sockets only serve this arrival). */
	gate_map = map;
	gate_prog = prog;
	pthread_mutex_unlock(&lock);
	if (old_map >= 0 && old_map != map)
		close(old_map);
	if (old_prog >= 0 && old_prog != prog)
		close(old_prog);
	return 0;
}

/* ---- unsent bytes of restored sockets, queued at thaw ---- */

struct pending {
	int fd;
	uint8_t *buf;
	uint32_t len;
};

static pthread_mutex_t pend_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pending *pend;
static size_t npend, cappend;

/* Take @fd's entry out of the table (buf NULL when there is none). */
static struct pending pend_take(int fd)
{
	struct pending p = { .fd = fd };

	pthread_mutex_lock(&pend_lock);
	for (size_t i = 0; i < npend; i++) {
		if (pend[i].fd != fd)
			continue;
		p = pend[i];
		pend[i] = pend[--npend];
		break;
	}
	pthread_mutex_unlock(&pend_lock);
	return p;
}

static int pend_put(int fd, const uint8_t *data, uint32_t len)
{
	struct pending p = { .fd = fd, .len = len };
	int rc = 0;

	free(pend_take(fd).buf); /* a stale entry of a reused number */
	p.buf = malloc(len);
	if (!p.buf)
		return -ENOMEM;
	memcpy(p.buf, data, len);
	pthread_mutex_lock(&pend_lock);
	if (npend == cappend) {
		size_t ncap = cappend ? 2 * cappend : 16;
		struct pending *np = realloc(pend, ncap * sizeof(*np));

		if (!np) {
			rc = -ENOMEM;
			goto out;
		}
		pend = np;
		cappend = ncap;
	}
	pend[npend++] = p;
	p.buf = NULL;
out:
	pthread_mutex_unlock(&pend_lock);
	free(p.buf);
	return rc;
}

/* ---- probe, freeze, thaw, discard ---- */

/**
 * tcpr_available() - can this process freeze and restore TCP sockets?
 * @err: receives the reason when not.
 * @len: size of @err.
 *
 * Tries repair mode on a fresh socket: it needs CAP_NET_ADMIN in the
 * current network namespace and a kernel built with TCP_REPAIR.
 *
 * Return: 0, or -EPERM / -ENOPROTOOPT / another -errno.
 */
int tcpr_available(char *err, size_t len)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
	int rc;

	if (fd < 0)
		return vm_errf(err, len, -errno, "TCP_REPAIR probe: socket");
	rc = sopt(fd, SOL_TCP, TCP_REPAIR, TCP_REPAIR_ON);
	if (rc == -EPERM)
		vm_errf(err, len, rc, "TCP_REPAIR needs CAP_NET_ADMIN "
		     "(run as root)");
	else if (rc)
		vm_errf(err, len, rc, "TCP_REPAIR not supported by the kernel");
	else if ((rc = filter_attach(fd)))
		vm_errf(err, len, rc, "TCP_REPAIR probe: SO_ATTACH_FILTER");
	close(fd);
	return rc;
}

/**
 * tcpr_freeze() - stop a connected socket: repair mode on (it sends
 * nothing) and a filter that drops what arrives (it accepts nothing).
 * @fd: an established TCP socket.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0, or -errno with the socket left as it was.
 */
/* tcpr_freeze_gated() - see tcprepair.h. */
int tcpr_freeze_gated(int fd, char *err, size_t len)
{
	int rc = sopt(fd, SOL_TCP, TCP_REPAIR, TCP_REPAIR_ON);

	return rc ? vm_errf(err, len, rc, "freeze: TCP_REPAIR on") : 0;
}

int tcpr_freeze(int fd, char *err, size_t len)
{
	int rc = filter_attach(fd);

	if (rc)
		return vm_errf(err, len, rc, "freeze: SO_ATTACH_FILTER");
	rc = sopt(fd, SOL_TCP, TCP_REPAIR, TCP_REPAIR_ON);
	if (rc) {
		filter_detach(fd);
		return vm_errf(err, len, rc, "freeze: TCP_REPAIR on");
	}
	return 0;
}

/* Queue bytes normally on a thawed socket, waiting a little for room. */
static int send_all(int fd, const uint8_t *p, uint32_t n)
{
	int waited = 0;

	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w > 0) {
			p += w;
			n -= (uint32_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN)
			return -errno;
		if (waited >= TCPR_THAW_WAIT_MS)
			return -ETIMEDOUT;
		poll(&(struct pollfd){ .fd = fd, .events = POLLOUT }, 1, 100);
		waited += 100;
	}
	return 0;
}

/**
 * tcpr_thaw() - let a frozen or restored socket run again.
 * @fd: the socket.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Leaving repair mode sends a window probe, so the peer learns the window
 * at once; then the unsent part of a restored send queue is queued like
 * any write. The peer saw a stall, nothing else.
 *
 * Return: 0 or -errno.
 */
int tcpr_thaw(int fd, char *err, size_t len)
{
	int rc = filter_detach(fd);

	if (rc)
		return vm_errf(err, len, rc, "thaw: SO_DETACH_FILTER");
	return tcpr_thaw_gated(fd, err, len);
}

/* Leave repair mode, with or without the window probe (kernels before
 * 4.14 know only the probe). */
static int repair_off(int fd, bool probe)
{
	int rc = -EINVAL;

	if (!probe)
		rc = sopt(fd, SOL_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
	if (rc == -EINVAL)
		rc = sopt(fd, SOL_TCP, TCP_REPAIR, TCP_REPAIR_OFF);
	return rc;
}

/* The thaw of a socket whose filter is out of the way. */
static int thaw_mode(int fd, bool probe, char *err, size_t len)
{
	struct pending p;
	int rc = repair_off(fd, probe);

	if (rc)
		return vm_errf(err, len, rc, "thaw: TCP_REPAIR off");
	/* Leaving repair mode clears the socket's address reuse, and a bound
	 * connection without it makes every later bind of its port fail: the
	 * next restored connection of a listener's port, or the listener
	 * itself. Turn it back on, as an accepted socket has it. */
	rc = sopt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
	if (rc)
		return vm_errf(err, len, rc, "thaw: SO_REUSEADDR");
	p = pend_take(fd);
	if (p.buf) {
		rc = send_all(fd, p.buf, p.len);
		free(p.buf);
		if (rc)
			return vm_errf(err, len, rc, "thaw: queueing the %u "
				    "unsent bytes", p.len);
	}
	return 0;
}

/* tcpr_thaw_gated() - see tcprepair.h. */
int tcpr_thaw_gated(int fd, char *err, size_t len)
{
	return thaw_mode(fd, true, err, len);
}

/**
 * tcpr_thaw_restored() - let a socket restored from @c run again, sending
 * the window probe only when it can matter.
 * @fd: the socket tcpr_restore() or tcpr_restore_prepared() made.
 * @c: its dump.
 * @gated: it has the gate (tcprepair.h) rather than a filter of its own.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * The probe (a segment below snd_una) makes the peer answer at once with
 * an ACK and its window. That acknowledges at once what the source had
 * sent and whose ACK the freeze dropped, and acknowledges for the peer
 * what the source had received without acknowledging yet (rcv_wup, the
 * last window sent, short of rcv_nxt), instead of each side waiting for
 * a retransmission. With nothing in either queue, nothing owed and an open
 * window, the restored window is the peer's last word and the probe would
 * only cost a round trip of the loopback's softirq in the thaw: about
 * 3 us per connection of the pause here.
 *
 * Return: 0 or -errno.
 */
int tcpr_thaw_restored(int fd, const struct tcpr_conn *c, bool gated,
		       char *err, size_t len)
{
	bool probe = c->sndq_len || c->rcvq_len || !c->win.snd_wnd ||
		     c->win.rcv_wup != c->rcv_seq;
	int rc;

	if (!gated && (rc = filter_detach(fd)))
		return vm_errf(err, len, rc, "thaw: SO_DETACH_FILTER");
	return thaw_mode(fd, probe, err, len);
}

/**
 * tcpr_discard() - close a frozen socket without a FIN or a RST: in repair
 * mode the kernel drops the connection silently.
 * @fd: the socket (negative: nothing to do).
 */
void tcpr_discard(int fd)
{
	if (fd < 0)
		return;
	free(pend_take(fd).buf);
	/* Repair mode is what makes close() silent; make sure it is on. */
	sopt(fd, SOL_TCP, TCP_REPAIR, TCP_REPAIR_ON);
	close(fd);
}

/**
 * tcpr_close_frozen() - tcpr_discard() of a socket known to be frozen:
 * one system call (the close) instead of two.
 * @fd: a socket tcpr_freeze() froze or tcpr_restore() made (negative:
 *      nothing to do).
 */
void tcpr_close_frozen(int fd)
{
	if (fd < 0)
		return;
	free(pend_take(fd).buf);
	close(fd);
}

/**
 * tcpr_unhash_frozen() - take a frozen socket's connection out of the
 * kernel's table of connections, without a packet: a disconnect
 * (connect() to AF_UNSPEC) in repair mode sends no RST and leaves the
 * socket closed, so its 4-tuple is free for the socket that takes the
 * connection over (in the same network namespace it could not connect
 * before). About a third of what the close costs (docs/benchmarks.md
 * section 11): the close, still silent, can wait until the pause ended.
 * @fd: a socket tcpr_freeze() froze or tcpr_restore() made.
 *
 * Return: 0, or -errno (the socket is as it was: close it instead).
 */
int tcpr_unhash_frozen(int fd)
{
	struct sockaddr un = { .sa_family = AF_UNSPEC };

	return connect(fd, &un, sizeof(un)) ? -errno : 0;
}

/**
 * tcpr_conn_clear() - free a dump's queues and zero it.
 * @c: the dump (may be NULL).
 */
void tcpr_conn_clear(struct tcpr_conn *c)
{
	if (!c)
		return;
	free(c->sndq);
	free(c->rcvq);
	memset(c, 0, sizeof(*c));
}

/* ---- dump ---- */

static int dump_addrs(int fd, struct tcpr_conn *c, char *err, size_t len)
{
	struct sockaddr_storage l, r;
	socklen_t ll = sizeof(l), rl = sizeof(r);

	if (getsockname(fd, (struct sockaddr *)&l, &ll) ||
	    getpeername(fd, (struct sockaddr *)&r, &rl))
		return vm_errf(err, len, -errno, "dump: socket addresses");
	c->family = l.ss_family;
	if (c->family == AF_INET) {
		const struct sockaddr_in *a = (void *)&l, *b = (void *)&r;

		memcpy(c->laddr, &a->sin_addr, 4);
		memcpy(c->raddr, &b->sin_addr, 4);
		c->lport = ntohs(a->sin_port);
		c->rport = ntohs(b->sin_port);
	} else if (c->family == AF_INET6) {
		const struct sockaddr_in6 *a = (void *)&l, *b = (void *)&r;

		memcpy(c->laddr, &a->sin6_addr, 16);
		memcpy(c->raddr, &b->sin6_addr, 16);
		c->lport = ntohs(a->sin6_port);
		c->rport = ntohs(b->sin6_port);
	} else {
		return vm_errf(err, len, -EAFNOSUPPORT, "dump: family %d",
			    c->family);
	}
	return 0;
}

/**
 * tcpr_ident() - record what does not change while a connection lives:
 * its addresses and socket options.
 * @fd: a connected TCP socket (frozen or not).
 * @c: receives family, addresses, ports, TCP_NODELAY and the buffer sizes;
 *     nothing else of it is touched.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * A device calls it when a connection enters its table, so that the pause
 * only reads what moves (tcpr_dump_live()): five system calls per
 * connection fewer in the downtime.
 *
 * Return: 0 or -errno.
 */
int tcpr_ident(int fd, struct tcpr_conn *c, char *err, size_t len)
{
	int v, rc;

	if ((rc = dump_addrs(fd, c, err, len)))
		return rc;
	if ((rc = gopt(fd, SOL_TCP, TCP_NODELAY, &v)))
		return vm_errf(err, len, rc, "dump: TCP_NODELAY");
	c->nodelay = v != 0;
	/* Informative (a restore sizes its buffers to the queues), so the
	 * values at the start are as good as any. */
	if ((rc = gopt(fd, SOL_SOCKET, SO_SNDBUF, &v)))
		return vm_errf(err, len, rc, "dump: SO_SNDBUF");
	c->sndbuf = (uint32_t)v;
	if ((rc = gopt(fd, SOL_SOCKET, SO_RCVBUF, &v)))
		return vm_errf(err, len, rc, "dump: SO_RCVBUF");
	c->rcvbuf = (uint32_t)v;
	return 0;
}

/* TCP_INFO as the kernel fills it (include/uapi/linux/tcp.h): the C
 * library's struct tcp_info stops before the byte counters. The kernel
 * only ever appends to it, copies what fits, and says how much. */
struct tcpr_info {
	struct tcp_info ti; /* up to tcpi_total_retrans */
	uint64_t pacing_rate, max_pacing_rate;
	uint64_t bytes_acked, bytes_received;
	uint32_t segs_out, segs_in;
	uint32_t notsent_bytes;
};
_Static_assert(offsetof(struct tcpr_info, bytes_acked) == 120 &&
		       offsetof(struct tcpr_info, notsent_bytes) == 144,
	       "struct tcpr_info follows the kernel's struct tcp_info");

/* Read TCP_INFO; *counters says whether the kernel filled the byte
 * counters (4.6 and later). */
static int get_info(int fd, struct tcpr_info *i, bool *counters)
{
	socklen_t sl = sizeof(*i);

	memset(i, 0, sizeof(*i));
	if (getsockopt(fd, SOL_TCP, TCP_INFO, i, &sl))
		return -errno;
	*counters = sl >= offsetof(struct tcpr_info, notsent_bytes) +
				 sizeof(i->notsent_bytes);
	return 0;
}

/* tcpr_clock_ms() - see tcprepair.h: the kernel's TCP timestamps count
 * milliseconds of CLOCK_MONOTONIC (tcp_clock_ns()). */
uint64_t tcpr_clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * The timestamp clock now, from a reference read ahead: never behind the
 * kernel's (the peer discards segments whose timestamp goes back, PAWS),
 * at most a few milliseconds ahead, which the peer takes as time passing.
 * ts_ref was read at a kernel time no earlier than ts_ms, and kernels from
 * 6.7 on clear its low bit in millisecond mode, so the clock was at most
 * ts_ref + 1 then; and the value goes back even, since setting it takes
 * the low bit as the microsecond flag.
 */
static uint32_t ts_estimate(const struct tcpr_ahead *a)
{
	uint32_t v = a->ts_ref + (uint32_t)(tcpr_clock_ms() - a->ts_ms) + 1;

	return (v + 1) & ~1u;
}

/* TCP_INFO: the state (only an established connection moves), the
 * options and window scales. */
static int dump_info(int fd, struct tcpr_conn *c, struct tcpr_info *i,
		     bool *counters, char *err, size_t len)
{
	int rc = get_info(fd, i, counters);

	if (rc)
		return vm_errf(err, len, rc, "dump: TCP_INFO");
	if (i->ti.tcpi_state != TCP_ESTABLISHED)
		return vm_errf(err, len, -ENOTCONN, "dump: TCP state %u, only "
			    "established connections are handed over",
			    i->ti.tcpi_state);
	c->sack = i->ti.tcpi_options & TCPI_OPT_SACK;
	c->tstamp = i->ti.tcpi_options & TCPI_OPT_TIMESTAMPS;
	c->wscale_ok = i->ti.tcpi_options & TCPI_OPT_WSCALE;
	c->snd_wscale = c->wscale_ok ? i->ti.tcpi_snd_wscale : 0;
	c->rcv_wscale = c->wscale_ok ? i->ti.tcpi_rcv_wscale : 0;
	return 0;
}

/* MSS clamp, timestamp (read ahead when they can be), window. */
static int dump_params(int fd, struct tcpr_conn *c, char *err, size_t len)
{
	struct tcpr_wnd w;
	socklen_t sl;
	int v, rc;

	/* In repair mode TCP_MAXSEG reads the MSS clamp, which is what
	 * TCP_REPAIR_OPTIONS sets back (outside it reads the current MSS).
	 * The clamp is settled by the handshake: tcpr_read_ahead() reads it
	 * in a moment of repair mode out of the pause. */
	if (c->ahead.mss) {
		c->mss = c->ahead.mss;
	} else {
		if ((rc = gopt(fd, SOL_TCP, TCP_MAXSEG, &v)))
			return vm_errf(err, len, rc, "dump: TCP_MAXSEG");
		c->mss = (uint32_t)v;
	}
	if (c->tstamp && c->ahead.ts_ok) {
		c->ts_val = ts_estimate(&c->ahead);
	} else if (c->tstamp) {
		if ((rc = gopt(fd, SOL_TCP, TCP_TIMESTAMP, &v)))
			return vm_errf(err, len, rc, "dump: TCP_TIMESTAMP");
		c->ts_val = (uint32_t)v;
	}
	sl = sizeof(w);
	if (getsockopt(fd, SOL_TCP, TCP_REPAIR_WINDOW, &w, &sl))
		return vm_errf(err, len, -errno, "dump: TCP_REPAIR_WINDOW");
	c->win.snd_wl1 = w.snd_wl1;
	c->win.snd_wnd = w.snd_wnd;
	c->win.max_window = w.max_window;
	c->win.rcv_wnd = w.rcv_wnd;
	c->win.rcv_wup = w.rcv_wup;
	return 0;
}

/* Select @queue, read its sequence, and peek its @n bytes (none read when
 * the queue is empty). */
static int dump_queue(int fd, int queue, uint32_t *seq, uint8_t **buf,
		      uint32_t n, char *err, size_t len)
{
	const char *what = queue == TCPR_SEND_QUEUE ? "send" : "receive";
	socklen_t sl = sizeof(*seq);
	ssize_t got;
	int rc;

	if ((rc = sopt(fd, SOL_TCP, TCP_REPAIR_QUEUE, queue)))
		return vm_errf(err, len, rc, "dump: selecting the %s queue", what);
	if (getsockopt(fd, SOL_TCP, TCP_QUEUE_SEQ, seq, &sl))
		return vm_errf(err, len, -errno, "dump: %s queue sequence", what);
	if (!n)
		return 0;
	if (n > TCPR_QUEUE_MAX)
		return vm_errf(err, len, -EFBIG, "dump: %s queue of %u bytes "
			    "(at most %u can be handed over)", what, n,
			    TCPR_QUEUE_MAX);
	*buf = malloc((size_t)n + 1);
	if (!*buf)
		return vm_errf(err, len, -ENOMEM, "dump: %s queue", what);
	/* One byte more than the kernel counted: a longer queue would
	 * mean the count and the bytes disagree. */
	got = recv(fd, *buf, (size_t)n + 1, MSG_PEEK | MSG_DONTWAIT);
	if (got < 0)
		return vm_errf(err, len, -errno, "dump: reading the %s queue",
			    what);
	if ((size_t)got != n)
		return vm_errf(err, len, -EIO, "dump: %s queue has %zd bytes, "
			    "the kernel counted %u", what, got, n);
	return 0;
}

/* The queue sizes, their sequences and bytes. Only what is needed runs:
 * an idle connection costs two ioctls and two selections with their
 * sequence reads. */
static int dump_queues(int fd, struct tcpr_conn *c, char *err, size_t len)
{
	int outq = 0, unsent = 0, inq = 0, peek_off = -1, rc;

	if (ioctl(fd, SIOCOUTQ, &outq) || ioctl(fd, SIOCINQ, &inq) ||
	    (outq > 0 && ioctl(fd, SIOCOUTQNSD, &unsent)))
		return vm_errf(err, len, -errno, "dump: queue sizes");
	if (outq < 0 || inq < 0 || unsent < 0 || unsent > outq)
		return vm_errf(err, len, -EIO, "dump: queue sizes %d/%d/%d make "
			    "no sense", outq, unsent, inq);
	c->sndq_len = (uint32_t)outq;
	c->sndq_unsent = (uint32_t)unsent;
	c->rcvq_len = (uint32_t)inq;
	if ((rc = dump_queue(fd, TCPR_SEND_QUEUE, &c->snd_seq, &c->sndq,
			     c->sndq_len, err, len)))
		return rc;
	/* A peek offset would make the receive queue read from the middle;
	 * the send queue's peek ignores it. */
	if (inq && !gopt(fd, SOL_SOCKET, SO_PEEK_OFF, &peek_off) &&
	    peek_off >= 0)
		sopt(fd, SOL_SOCKET, SO_PEEK_OFF, -1);
	rc = dump_queue(fd, TCPR_RECV_QUEUE, &c->rcv_seq, &c->rcvq,
			c->rcvq_len, err, len);
	if (peek_off >= 0)
		sopt(fd, SOL_SOCKET, SO_PEEK_OFF, peek_off);
	return rc;
}

/* A dump that failed leaves no queue selected and no queue behind. */
static int dump_failed(int fd, struct tcpr_conn *c, int rc)
{
	sopt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCPR_NO_QUEUE);
	free(c->sndq);
	free(c->rcvq);
	c->sndq = c->rcvq = NULL;
	c->sndq_len = c->rcvq_len = c->sndq_unsent = 0;
	return rc;
}

/**
 * tcpr_dump_live() - record what moves of a frozen socket whose
 * tcpr_ident() fields @c already holds: state, options, MSS, window,
 * timestamp, sequences and queues.
 * @fd: a socket tcpr_freeze() froze; it stays frozen and unchanged (a
 *      repair queue stays selected, which only repair mode looks at and
 *      the next freeze resets).
 * @c: the dump to complete (its queues malloc()ed; tcpr_conn_clear()
 *     frees them).
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0, or -errno with @c's queues freed (its identity kept).
 */
int tcpr_dump_live(int fd, struct tcpr_conn *c, char *err, size_t len)
{
	struct tcpr_info i;
	bool counters;
	int rc;

	c->sndq = c->rcvq = NULL;
	c->sndq_len = c->rcvq_len = c->sndq_unsent = 0;
	if ((rc = dump_info(fd, c, &i, &counters, err, len)) ||
	    (rc = dump_params(fd, c, err, len)) ||
	    (rc = dump_queues(fd, c, err, len)))
		return dump_failed(fd, c, rc);
	return 0;
}

/* The sequences of a connection whose queues are empty, from the byte
 * counters and the bases read ahead. False when the window the kernel
 * reports does not fit them: then the queues are read as usual. */
static bool quick_seqs(struct tcpr_conn *c, const struct tcpr_info *i)
{
	c->snd_seq = c->ahead.snd_base + (uint32_t)i->bytes_acked;
	c->rcv_seq = c->ahead.rcv_base + (uint32_t)i->bytes_received;
	/* rcv_wup (rcv_nxt when the last window went out) is at most
	 * rcv_nxt, which is at most about a window beyond it (a segment may
	 * straddle the edge), and a restore refuses snd_wl1 beyond rcv_nxt
	 * + rcv_wnd: a wrong base would pass both only by chance. */
	return c->rcv_seq - c->win.rcv_wup <= c->win.rcv_wnd + 65535u &&
	       (int32_t)(c->win.snd_wl1 - (c->rcv_seq + c->win.rcv_wnd)) <= 0;
}

/**
 * tcpr_dump_quick() - tcpr_dump_live(), with the sequences of a
 * connection whose queues are empty taken from TCP_INFO.
 * @fd: a socket tcpr_freeze() froze; it stays frozen and unchanged.
 * @c: the dump to complete; c->ahead as tcpr_read_ahead() or
 *     tcpr_ahead_restored() left it (zeroed: the full dump).
 * @rx_read: the bytes the socket's owner ever read from it (since the
 *           accept, connect or restore): every byte it received is read
 *           when this equals tcpi_bytes_received.
 * @quick: receives whether the two calls sufficed.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * TCP_INFO says whether anything is in flight (tcpi_unacked,
 * tcpi_notsent_bytes) and what was ever acknowledged and received; with
 * nothing in flight and everything read, write_seq is snd_una and
 * copied_seq is rcv_nxt, which the bases turn into sequence numbers.
 * Then TCP_REPAIR_WINDOW is the only other call: MSS clamp and timestamp
 * come from the read-ahead. Anything else (a byte in flight, unread, a
 * counter or window that does not fit) takes tcpr_dump_live()'s way:
 * both queues selected, their sequences and bytes read.
 *
 * Return: 0, or -errno with @c's queues freed.
 */
int tcpr_dump_quick(int fd, struct tcpr_conn *c, uint64_t rx_read,
		    bool *quick, char *err, size_t len)
{
	struct tcpr_info i;
	bool counters;
	int rc;

	*quick = false;
	c->sndq = c->rcvq = NULL;
	c->sndq_len = c->rcvq_len = c->sndq_unsent = 0;
	if ((rc = dump_info(fd, c, &i, &counters, err, len)) ||
	    (rc = dump_params(fd, c, err, len)))
		return dump_failed(fd, c, rc);
	if (counters && c->ahead.seq_ok && !i.ti.tcpi_unacked &&
	    !i.notsent_bytes && i.bytes_received == rx_read &&
	    quick_seqs(c, &i)) {
		*quick = true;
		return 0;
	}
	if ((rc = dump_queues(fd, c, err, len)))
		return dump_failed(fd, c, rc);
	return 0;
}

/* Select @queue and read its sequence. */
static int queue_seq(int fd, int queue, uint32_t *seq)
{
	socklen_t sl = sizeof(*seq);
	int rc = sopt(fd, SOL_TCP, TCP_REPAIR_QUEUE, queue);

	if (!rc && getsockopt(fd, SOL_TCP, TCP_QUEUE_SEQ, seq, &sl))
		rc = -errno;
	return rc;
}

/* In repair mode: both queues' sequences, the MSS clamp, the timestamp. */
static int ahead_in_repair(int fd, bool tstamp, struct tcpr_ahead *a,
			   uint32_t *wseq, uint32_t *rseq)
{
	int v, rc;

	if ((rc = queue_seq(fd, TCPR_SEND_QUEUE, wseq)) ||
	    (rc = queue_seq(fd, TCPR_RECV_QUEUE, rseq)) ||
	    (rc = gopt(fd, SOL_TCP, TCP_MAXSEG, &v)))
		return rc;
	a->mss = (uint32_t)v;
	if (!tstamp)
		return 0;
	a->ts_ms = tcpr_clock_ms();
	if ((rc = gopt(fd, SOL_TCP, TCP_TIMESTAMP, &v)))
		return rc;
	a->ts_ref = (uint32_t)v;
	/* An odd value is a microsecond clock (6.7 and later, a route's
	 * choice), which ts_estimate() does not model: the pause reads it. */
	a->ts_ok = !(v & 1);
	return 0;
}

/**
 * tcpr_read_ahead() - read, while a connection runs, what tcpr_dump_quick()
 * needs: the sequence bases, the MSS clamp and a timestamp reference.
 * @fd: an established socket, not frozen, with nothing in flight; its
 *      owner writes nothing to it meanwhile (the moment in repair mode
 *      takes writes as repair data).
 * @c: its ->ahead is filled on success, untouched otherwise.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * The sequences and the clamp are readable only in repair mode, so the
 * socket enters it for five calls and leaves it without a window probe
 * (the peer has nothing to learn), with its address reuse as before.
 * Nothing is sent meanwhile (there is nothing to send) and segments that
 * arrive are taken in as usual: the two TCP_INFO around the moment show
 * whether one moved the counters, and then the bases are not trusted.
 *
 * Return: 0, -EAGAIN (bytes in flight or arriving: try again later),
 * -EOPNOTSUPP (no byte counters in TCP_INFO), or another -errno.
 */
int tcpr_read_ahead(int fd, struct tcpr_conn *c, char *err, size_t len)
{
	struct tcpr_ahead a = { 0 };
	struct tcpr_info i, j;
	uint32_t wseq = 0, rseq = 0;
	bool counters;
	int reuse, rc, off;

	if ((rc = get_info(fd, &i, &counters)))
		return vm_errf(err, len, rc, "read ahead: TCP_INFO");
	if (!counters)
		return vm_errf(err, len, -EOPNOTSUPP, "read ahead: TCP_INFO has "
			    "no byte counters (kernel before 4.6)");
	if (i.ti.tcpi_state != TCP_ESTABLISHED)
		return vm_errf(err, len, -ENOTCONN, "read ahead: TCP state %u",
			    i.ti.tcpi_state);
	if (i.ti.tcpi_unacked || i.notsent_bytes)
		return vm_errf(err, len, -EAGAIN, "read ahead: bytes in flight");
	if ((rc = gopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse)))
		return vm_errf(err, len, rc, "read ahead: SO_REUSEADDR");
	if ((rc = sopt(fd, SOL_TCP, TCP_REPAIR, TCP_REPAIR_ON)))
		return vm_errf(err, len, rc, "read ahead: TCP_REPAIR on");
	rc = ahead_in_repair(fd, i.ti.tcpi_options & TCPI_OPT_TIMESTAMPS, &a,
			     &wseq, &rseq);
	/* Leaving repair mode drops the reuse an accepted socket had from
	 * its listener (the port's next listener needs it). */
	off = repair_off(fd, false);
	if (!off && reuse)
		off = sopt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
	if (rc || off)
		return vm_errf(err, len, rc ? rc : off, "read ahead: %s",
			    rc ? "in repair mode" : "leaving repair mode");
	if ((rc = get_info(fd, &j, &counters)))
		return vm_errf(err, len, rc, "read ahead: TCP_INFO");
	if (j.bytes_acked != i.bytes_acked ||
	    j.bytes_received != i.bytes_received || j.ti.tcpi_unacked ||
	    j.notsent_bytes)
		return vm_errf(err, len, -EAGAIN, "read ahead: traffic meanwhile");
	/* Nothing in flight: write_seq is snd_una. */
	a.snd_base = wseq - (uint32_t)i.bytes_acked;
	a.rcv_base = rseq - (uint32_t)i.bytes_received;
	a.seq_ok = true;
	c->ahead = a;
	return 0;
}

/**
 * tcpr_ahead_restored() - the read-ahead of a socket restored from @c, at
 * no cost: the restore set write_seq where the send queue starts (the
 * connect makes it snd_una) and rcv_nxt where the receive queue starts,
 * with both byte counters at 0, and writing the receive queue back counts
 * its bytes as received.
 * @c: the dump it was restored from.
 * @before_ms: tcpr_clock_ms() before the restore set the timestamp.
 * @a: receives the read-ahead.
 */
void tcpr_ahead_restored(const struct tcpr_conn *c, uint64_t before_ms,
			 struct tcpr_ahead *a)
{
	*a = (struct tcpr_ahead){
		.seq_ok = true,
		.snd_base = c->snd_seq - c->sndq_len,
		.rcv_base = c->rcv_seq - c->rcvq_len,
		.mss = c->mss,
		.ts_ok = c->tstamp && !(c->ts_val & 1),
		.ts_ref = c->ts_val,
		.ts_ms = before_ms,
	};
}

/**
 * tcpr_dump() - record everything a restore needs of a frozen socket:
 * tcpr_ident() and tcpr_dump_live() in one.
 * @fd: a socket tcpr_freeze() froze; it stays frozen and unchanged.
 * @c: receives the dump (queues malloc()ed; tcpr_conn_clear() frees them).
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0, or -errno with @c cleared.
 */
int tcpr_dump(int fd, struct tcpr_conn *c, char *err, size_t len)
{
	int rc;

	memset(c, 0, sizeof(*c));
	if ((rc = tcpr_ident(fd, c, err, len)) ||
	    (rc = tcpr_dump_live(fd, c, err, len)))
		tcpr_conn_clear(c);
	return rc;
}

/* ---- restore ---- */

static socklen_t conn_sockaddr(const struct tcpr_conn *c, bool local,
			       struct sockaddr_storage *ss)
{
	const uint8_t *addr = local ? c->laddr : c->raddr;
	uint16_t port = htons(local ? c->lport : c->rport);

	memset(ss, 0, sizeof(*ss));
	if (c->family == AF_INET) {
		struct sockaddr_in *a = (void *)ss;

		a->sin_family = AF_INET;
		a->sin_port = port;
		memcpy(&a->sin_addr, addr, 4);
		return sizeof(*a);
	}
	struct sockaddr_in6 *a = (void *)ss;

	a->sin6_family = AF_INET6;
	a->sin6_port = port;
	memcpy(&a->sin6_addr, addr, 16);
	return sizeof(*a);
}

static int conn_check(const struct tcpr_conn *c, char *err, size_t len)
{
	if (c->family != AF_INET && c->family != AF_INET6)
		return vm_errf(err, len, -EAFNOSUPPORT, "restore: family %d",
			    c->family);
	if (!c->lport || !c->rport)
		return vm_errf(err, len, -EINVAL, "restore: port 0");
	if ((c->sndq_len && !c->sndq) || (c->rcvq_len && !c->rcvq) ||
	    c->sndq_unsent > c->sndq_len || c->sndq_len > TCPR_QUEUE_MAX ||
	    c->rcvq_len > TCPR_QUEUE_MAX)
		return vm_errf(err, len, -EINVAL, "restore: inconsistent queues "
			    "(send %u, unsent %u, receive %u)", c->sndq_len,
			    c->sndq_unsent, c->rcvq_len);
	if (c->snd_wscale > 14 || c->rcv_wscale > 14 || !c->mss ||
	    c->mss > 65535)
		return vm_errf(err, len, -EINVAL, "restore: window scales %u/%u "
			    "or MSS %u out of range", c->snd_wscale,
			    c->rcv_wscale, c->mss);
	return 0;
}

/* Make room for the queues: a frozen socket never frees any, so writes
 * that do not fit would fail. Only grows, so autotuning stays on for the
 * common case of small queues. */
static int grow_buf(int fd, int opt, int force, uint32_t need)
{
	int cur;

	if (!need || gopt(fd, SOL_SOCKET, opt, &cur) || cur < 0 ||
	    (uint64_t)cur >= 2ull * need + 65536)
		return 0;
	/* The kernel doubles the value it is given. */
	return sopt(fd, SOL_SOCKET, force, (int)(need + 32768));
}

/* The drop filter, repair mode, and the bind to @local when given (what a
 * restore can do before the dump is known). */
static int restore_prep(int s, const struct sockaddr *local, socklen_t llen,
			bool gated, char *err, size_t len)
{
	int rc;

	if ((rc = gated ? tcpr_gate_attach(s) : filter_attach(s)))
		return vm_errf(err, len, rc, "restore: SO_ATTACH_FILTER");
	/* Repair mode also forces address reuse at bind, which skips the
	 * check against every socket already bound to the port (a listener's
	 * port holds all its connections): SO_REUSEADDR here would replace
	 * the forced reuse with the ordinary one. tcpr_thaw() sets it. */
	if ((rc = sopt(s, SOL_TCP, TCP_REPAIR, TCP_REPAIR_ON)))
		return vm_errf(err, len, rc, "restore: TCP_REPAIR on");
	/* Two calls the takeover need not make: the receive queue selected
	 * for its sequence (a selection lasts until changed), and
	 * TCP_NODELAY on, as servers' connections mostly have it (a restore
	 * turns it off for one that had it off). */
	if ((rc = sopt(s, SOL_TCP, TCP_REPAIR_QUEUE, TCPR_RECV_QUEUE)))
		return vm_errf(err, len, rc, "restore: TCP_REPAIR_QUEUE");
	if ((rc = sopt(s, SOL_TCP, TCP_NODELAY, 1)))
		return vm_errf(err, len, rc, "restore: TCP_NODELAY");
	if (local && bind(s, local, llen))
		return vm_errf(err, len, -errno, "restore: bind to the local "
			       "address");
	return 0;
}

/* What a restore can set before the connect: buffers, the queues'
 * sequences, the timestamp clock. */
static int restore_seqs(int s, const struct tcpr_conn *c, char *err,
			size_t len)
{
	uint32_t seq;
	int rc;

	if ((rc = grow_buf(s, SO_SNDBUF, SO_SNDBUFFORCE, c->sndq_len)) ||
	    (rc = grow_buf(s, SO_RCVBUF, SO_RCVBUFFORCE, c->rcvq_len)))
		return vm_errf(err, len, rc, "restore: growing the buffers");
	/* restore_prep() selected the receive queue. */
	seq = c->rcv_seq - c->rcvq_len;
	if (setsockopt(s, SOL_TCP, TCP_QUEUE_SEQ, &seq, sizeof(seq)))
		return vm_errf(err, len, -errno, "restore: receive sequence");
	seq = c->snd_seq - c->sndq_len;
	if ((rc = sopt(s, SOL_TCP, TCP_REPAIR_QUEUE, TCPR_SEND_QUEUE)) ||
	    setsockopt(s, SOL_TCP, TCP_QUEUE_SEQ, &seq, sizeof(seq)))
		return vm_errf(err, len, rc ? rc : -errno,
			    "restore: send sequence");
	/* The clock runs from here: a connect in repair mode keeps the
	 * offset, and a restore staged early only moves it on by the wait,
	 * as if the pause had been that much longer. */
	if (c->tstamp &&
	    (rc = sopt(s, SOL_TCP, TCP_TIMESTAMP, (int)c->ts_val)))
		return vm_errf(err, len, rc, "restore: TCP_TIMESTAMP");
	return 0;
}

/* The connect (no SYN in repair mode), on a socket restore_prep() bound
 * to the dump's local address. */
static int restore_connect(int s, const struct tcpr_conn *c, char *err,
			   size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = conn_sockaddr(c, false, &ss);

	if (connect(s, (struct sockaddr *)&ss, sl))
		return vm_errf(err, len, -errno, "restore: connect to the peer "
			    "port %u", c->rport);
	return 0;
}

static int restore_options(int s, const struct tcpr_conn *c, char *err,
			   size_t len)
{
	struct tcpr_opt o[4];
	unsigned n = 0;

	o[n++] = (struct tcpr_opt){ TCPOPT_MAXSEG, c->mss };
	if (c->wscale_ok)
		o[n++] = (struct tcpr_opt){ TCPOPT_WINDOW,
					    c->snd_wscale |
						    (c->rcv_wscale << 16) };
	if (c->sack)
		o[n++] = (struct tcpr_opt){ TCPOPT_SACK_PERMITTED, 0 };
	if (c->tstamp)
		o[n++] = (struct tcpr_opt){ TCPOPT_TIMESTAMP, 0 };
	if (setsockopt(s, SOL_TCP, TCP_REPAIR_OPTIONS, o, n * sizeof(o[0])))
		return vm_errf(err, len, -errno, "restore: TCP_REPAIR_OPTIONS");
	return 0;
}

/* Write @n bytes into the selected repair queue, halving the chunk when
 * the kernel cannot allocate one that large. */
static int queue_write(int s, const uint8_t *p, uint32_t n)
{
	uint32_t chunk = TCPR_CHUNK;

	while (n) {
		ssize_t w = send(s, p, n < chunk ? n : chunk, MSG_NOSIGNAL);

		if (w > 0) {
			p += w;
			n -= (uint32_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == ENOMEM || errno == ENOBUFS) &&
		    chunk > TCPR_CHUNK_MIN) {
			chunk /= 2;
			continue;
		}
		return w < 0 ? -errno : -EIO;
	}
	return 0;
}

/* The send queue is still selected from restore_connect(); an empty
 * queue costs nothing, and no selection is undone (only repair mode looks
 * at it). */
static int restore_queues(int s, const struct tcpr_conn *c, char *err,
			  size_t len)
{
	uint32_t sent = c->sndq_len - c->sndq_unsent;
	int rc;

	if (sent && (rc = queue_write(s, c->sndq, sent)))
		return vm_errf(err, len, rc, "restore: %u sent bytes of the send "
			    "queue", sent);
	if (c->rcvq_len &&
	    ((rc = sopt(s, SOL_TCP, TCP_REPAIR_QUEUE, TCPR_RECV_QUEUE)) ||
	     (rc = queue_write(s, c->rcvq, c->rcvq_len))))
		return vm_errf(err, len, rc, "restore: %u bytes of the receive "
			    "queue", c->rcvq_len);
	return 0;
}

/* The window goes after the queues: the kernel checks it against rcv_nxt,
 * which only reaches its dumped value once the receive queue is back. */
static int restore_window(int s, const struct tcpr_conn *c, char *err,
			  size_t len)
{
	struct tcpr_wnd w = {
		.snd_wl1 = c->win.snd_wl1, .snd_wnd = c->win.snd_wnd,
		.max_window = c->win.max_window, .rcv_wnd = c->win.rcv_wnd,
		.rcv_wup = c->win.rcv_wup,
	};
	int rc;

	if (setsockopt(s, SOL_TCP, TCP_REPAIR_WINDOW, &w, sizeof(w)))
		return vm_errf(err, len, -errno, "restore: TCP_REPAIR_WINDOW");
	if (!c->nodelay && (rc = sopt(s, SOL_TCP, TCP_NODELAY, 0)))
		return vm_errf(err, len, rc, "restore: TCP_NODELAY");
	return 0;
}

/**
 * tcpr_restore() - re-create a dumped connection, frozen.
 * @c: the dump.
 * @fd: receives the new socket (non-blocking, close-on-exec), or -1.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * The socket is bound and connected to the dump's addresses without a
 * packet on the wire; its sequences, options, window, timestamp clock and
 * queues are the dump's. It stays frozen until tcpr_thaw(), which also
 * queues the send queue's unsent part; tcpr_discard() drops it silently.
 * The 4-tuple must be free: the source has discarded its socket, or lives
 * in another network namespace.
 *
 * Return: 0, or -errno with nothing left behind.
 */
int tcpr_restore(const struct tcpr_conn *c, int *fd, char *err, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int s, rc;

	*fd = -1;
	if ((rc = conn_check(c, err, len)))
		return rc;
	s = socket(c->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		   IPPROTO_TCP);
	if (s < 0)
		return vm_errf(err, len, -errno, "restore: socket");
	sl = conn_sockaddr(c, true, &ss);
	rc = restore_prep(s, (struct sockaddr *)&ss, sl, false, err, len);
	if (rc) {
		tcpr_discard(s);
		return rc;
	}
	return tcpr_restore_prepared(s, c, fd, err, len);
}

/**
 * tcpr_prepare() - make a socket for a later restore ahead of the pause:
 * repair mode, the drop filter, and bound to @local (with IP_FREEBIND, as
 * the address may arrive on this host only at the takeover). Repair mode
 * forces address reuse, so the bind succeeds even while another socket
 * (the source's, in the same namespace) listens or is connected there.
 * @family: AF_INET or AF_INET6.
 * @local: the local address and port of the connections it will take.
 * @llen: size of @local.
 * @fd: receives the socket, or -1.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0 or -errno.
 */
int tcpr_prepare(int family, const struct sockaddr *local, socklen_t llen,
		 int *fd, char *err, size_t len)
{
	return tcpr_prepare_gated(family, local, llen, false, fd, err, len);
}

/* tcpr_prepare_gated() - see tcprepair.h. */
int tcpr_prepare_gated(int family, const struct sockaddr *local,
		       socklen_t llen, bool gated, int *fd, char *err,
		       size_t len)
{
	int s, rc;

	*fd = -1;
	s = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		   IPPROTO_TCP);
	if (s < 0)
		return vm_errf(err, len, -errno, "prepare: socket");
	if ((rc = sopt(s, SOL_IP, IP_FREEBIND, 1))) {
		close(s);
		return vm_errf(err, len, rc, "prepare: IP_FREEBIND");
	}
	rc = restore_prep(s, local, llen, gated, err, len);
	if (rc) {
		tcpr_discard(s);
		return rc;
	}
	*fd = s;
	return 0;
}

/**
 * tcpr_restore_stage() - the part of tcpr_restore_prepared() that needs
 * neither the 4-tuple free nor the peer: the buffers, the queues'
 * sequences and the timestamp clock, on a socket tcpr_prepare() made. A
 * destination does it while the source still owns the connections.
 * @s: the prepared socket; discarded on failure.
 * @c: the dump.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0, or -errno with @s discarded.
 */
int tcpr_restore_stage(int s, const struct tcpr_conn *c, char *err,
		       size_t len)
{
	int rc;

	if ((rc = conn_check(c, err, len)) ||
	    (rc = restore_seqs(s, c, err, len)))
		tcpr_discard(s);
	return rc;
}

/**
 * tcpr_restore_finish() - the rest of tcpr_restore_prepared() on a socket
 * tcpr_restore_stage() staged: the connect, the options, the queues and
 * the window.
 * @s: the staged socket; it becomes the connection (in *@fd) or is
 *     discarded.
 * @c: the dump it was staged from.
 * @fd: receives @s restored, or -1.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0, or -errno with @s discarded.
 */
int tcpr_restore_finish(int s, const struct tcpr_conn *c, int *fd,
			char *err, size_t len)
{
	uint32_t sent;
	int rc;

	*fd = -1;
	if ((rc = restore_connect(s, c, err, len)) ||
	    (rc = restore_options(s, c, err, len)) ||
	    (rc = restore_queues(s, c, err, len)) ||
	    (rc = restore_window(s, c, err, len)))
		goto fail;
	sent = c->sndq_len - c->sndq_unsent;
	if (c->sndq_unsent &&
	    (rc = pend_put(s, c->sndq + sent, c->sndq_unsent))) {
		vm_errf(err, len, rc, "restore: keeping the unsent bytes");
		goto fail;
	}
	*fd = s;
	return 0;
fail:
	tcpr_discard(s);
	return rc;
}

/**
 * tcpr_restore_prepared() - tcpr_restore() onto a socket tcpr_prepare()
 * made, bound to the dump's local address: what is left at the takeover
 * is the sequences, the connect, the options, the queues and the window
 * (tcpr_restore_stage(), then tcpr_restore_finish()).
 * @s: the prepared socket; it becomes the connection (in *@fd) or is
 *     discarded.
 * @c: the dump.
 * @fd: receives @s restored, or -1.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0, or -errno with @s discarded.
 */
int tcpr_restore_prepared(int s, const struct tcpr_conn *c, int *fd,
			  char *err, size_t len)
{
	int rc;

	*fd = -1;
	if ((rc = tcpr_restore_stage(s, c, err, len)))
		return rc;
	return tcpr_restore_finish(s, c, fd, err, len);
}

/* ---- state ---- */

/**
 * tcpr_visit() - the dump's fields, for a device's visit function. The
 * queues are variable byte fields allocated on load (free them with
 * tcpr_conn_clear()).
 * @v: the visitor.
 * @c: the dump: saved, or loaded into (queues NULL or malloc()ed).
 */
void tcpr_visit(ferry_visitor *v, struct tcpr_conn *c)
{
	const unsigned MUST = FERRY_FIELD_MUST, SKIP = FERRY_FIELD_SKIPPABLE;

	ferry_visit_i32(v, "family", (int32_t *)&c->family, 0, MUST);
	ferry_visit_bytes(v, "laddr", c->laddr, sizeof(c->laddr), MUST);
	ferry_visit_bytes(v, "raddr", c->raddr, sizeof(c->raddr), MUST);
	ferry_visit_u16(v, "lport", &c->lport, 0, MUST);
	ferry_visit_u16(v, "rport", &c->rport, 0, MUST);
	ferry_visit_u32(v, "snd_seq", &c->snd_seq, 0, MUST);
	ferry_visit_u32(v, "rcv_seq", &c->rcv_seq, 0, MUST);
	ferry_visit_bytes_alloc(v, "sndq", (void **)&c->sndq, &c->sndq_len,
				TCPR_QUEUE_MAX, MUST);
	ferry_visit_u32(v, "sndq_unsent", &c->sndq_unsent, 0, MUST);
	ferry_visit_bytes_alloc(v, "rcvq", (void **)&c->rcvq, &c->rcvq_len,
				TCPR_QUEUE_MAX, MUST);
	ferry_visit_u32(v, "mss", &c->mss, 0, MUST);
	ferry_visit_u32(v, "snd_wscale", &c->snd_wscale, 0, MUST);
	ferry_visit_u32(v, "rcv_wscale", &c->rcv_wscale, 0, MUST);
	ferry_visit_bool(v, "sack", &c->sack, false, MUST);
	ferry_visit_bool(v, "tstamp", &c->tstamp, false, MUST);
	ferry_visit_bool(v, "wscale_ok", &c->wscale_ok, false, MUST);
	ferry_visit_u32(v, "ts_val", &c->ts_val, 0, MUST);
	if (ferry_visit_struct_begin(v, "win", MUST) == 0) {
		ferry_visit_u32(v, "snd_wl1", &c->win.snd_wl1, 0, MUST);
		ferry_visit_u32(v, "snd_wnd", &c->win.snd_wnd, 0, MUST);
		ferry_visit_u32(v, "max_window", &c->win.max_window, 0, MUST);
		ferry_visit_u32(v, "rcv_wnd", &c->win.rcv_wnd, 0, MUST);
		ferry_visit_u32(v, "rcv_wup", &c->win.rcv_wup, 0, MUST);
		ferry_visit_struct_end(v);
	}
	ferry_visit_bool(v, "nodelay", &c->nodelay, false, SKIP);
	ferry_visit_u32(v, "sndbuf", &c->sndbuf, 0, SKIP);
	ferry_visit_u32(v, "rcvbuf", &c->rcvbuf, 0, SKIP);
	/* A zeroed dump (schema capture) passes; restore checks the rest. */
	if (c->sndq_unsent > c->sndq_len ||
	    (c->family && c->family != AF_INET && c->family != AF_INET6))
		ferry_visit_fail(v, -EINVAL, "family %d, unsent %u of a %u-byte "
				 "send queue", c->family, c->sndq_unsent,
				 c->sndq_len);
}
