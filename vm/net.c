// SPDX-License-Identifier: MIT
/*
 * net.c - ferry-vm's network device: host sockets (the --listen socket,
 * the connections accepted on it, the --connect client's connection), the
 * rings in guest RAM they feed (net.h), and the backend thread that moves
 * bytes between the two with epoll.
 *
 * The backend is edge-triggered: a socket that has more than the ring can
 * take is remembered (rx_full) and read again when the guest frees space
 * and kicks the device's eventfd; a socket whose send buffer filled
 * (tx_wait) is written again on EPOLLOUT. A kick makes the backend look at
 * every open slot, which for NET_SLOTS slots costs a few microseconds.
 *
 * The handoff of the connections to another ferry-vm (TCP_REPAIR) is
 * net_handoff.c's; this file owns the sockets while they run.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "net_int.h"

#define EV_LISTEN NET_EV_LISTEN
#define EV_KICK (NET_SLOTS + 1)
#define EV_CTL (NET_SLOTS + 2)
#define NET_BACKLOG 4096
#define NET_EVENTS 256

/**
 * net_region_size() - bytes of guest RAM the device takes at its end: a
 * header page, the control blocks, then two rings per slot.
 *
 * Return: the size, a multiple of the page size.
 */
uint64_t net_region_size(void)
{
	return 4096 + (((uint64_t)NET_SLOTS * sizeof(struct net_slot) + 4095) &
		       ~4095ull) +
	       (uint64_t)NET_SLOTS * 2 * NET_RING;
}

static_assert(sizeof(struct net_slot) == 64, "a control block is 64 bytes");
static_assert(sizeof(struct net_hdr) <= 4096, "the header fits its page");
static_assert((NET_RING & (NET_RING - 1)) == 0, "rings are a power of 2");

/**
 * net_parse_tcp() - parse "tcp:HOST:PORT" ("tcp:[V6]:PORT" for IPv6).
 * @spec: the text.
 * @ss: receives the address (a struct sockaddr_storage).
 * @sslen: receives its length.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0 or -EINVAL.
 */
int net_parse_tcp(const char *spec, void *ss, uint32_t *sslen, char *err,
		  size_t len)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV }, *ai = NULL;
	char host[256];
	const char *p, *port;
	size_t hl;
	int rc;

	if (strncmp(spec, "tcp:", 4))
		goto bad;
	p = spec + 4;
	if (*p == '[') {
		port = strchr(p, ']');
		if (!port || port[1] != ':')
			goto bad;
		hl = (size_t)(port - p - 1);
		p++;
		port += 2;
	} else {
		port = strrchr(p, ':');
		if (!port)
			goto bad;
		hl = (size_t)(port - p);
		port++;
	}
	if (!hl || hl >= sizeof(host) || !*port)
		goto bad;
	memcpy(host, p, hl);
	host[hl] = '\0';
	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc) {
		snprintf(err, len, "'%s': %s", spec, gai_strerror(rc));
		return -EINVAL;
	}
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*sslen = (uint32_t)ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
bad:
	snprintf(err, len, "'%s': need tcp:HOST:PORT", spec);
	return -EINVAL;
}

/* Offset of @p in guest RAM, for the dirty log and the verifier. */
static inline uint64_t ram_off(struct net *n, const void *p)
{
	return (uint64_t)((const uint8_t *)p - n->g->ram);
}

static void slot_write(struct net *n, struct net_slot *s)
{
	guest_write_begin(n->g, ram_off(n, s), sizeof(*s));
}

static void slot_written(struct net *n, struct net_slot *s)
{
	guest_write_end(n->g, ram_off(n, s), sizeof(*s));
}

/* A new connection in a free slot; returns the slot or -ENOSPC. */
int net_slot_open(struct net *n, int fd, uint32_t kind)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP |
					    EPOLLET };
	uint32_t i, k;

	for (k = 0; k < NET_SLOTS; k++) {
		i = (n->free_hint + k) % NET_SLOTS;
		if (n->conns[i].fd < 0 &&
		    __atomic_load_n(&n->slots[i].state, __ATOMIC_ACQUIRE) ==
			    NET_SLOT_FREE)
			break;
	}
	if (k == NET_SLOTS)
		return -ENOSPC;
	n->free_hint = i + 1;
	ev.data.u32 = i;
	if (epoll_ctl(n->epfd, EPOLL_CTL_ADD, fd, &ev))
		return -errno;
	/* An accepted socket inherits its listener's filter; the client's
	 * gets the gate now, out of any pause. */
	n->conns[i] = (struct net_conn){ .fd = fd, .rx_full = true,
					 .gated = kind == NET_KIND_SERVER
							  ? n->listen_gated
							  : !tcpr_gate_attach(fd) };
	/* Read now, while the guest runs, what a handoff needs and what
	 * never changes: the pause then reads only what moves. */
	n->conns[i].id_ok = !tcpr_ident(fd, &n->conns[i].id, NULL, 0);
	n->conns[i].born_ms = tcpr_clock_ms();
	if (atomic_load(&n->ahead_want))
		net_read_ahead(n, i);
	slot_write(n, &n->slots[i]);
	n->slots[i].kind = kind;
	n->slots[i].bflags = 0;
	n->slots[i].gflags = 0;
	n->slots[i].rx_head = n->slots[i].rx_tail = 0;
	n->slots[i].tx_head = n->slots[i].tx_tail = 0;
	guest_write_begin(n->g, ram_off(n, n->hdr), sizeof(*n->hdr));
	/* The status reads the count from the API thread (net_json()). */
	n->slots[i].serial = __atomic_add_fetch(&n->hdr->accepted, 1,
						__ATOMIC_RELAXED);
	guest_write_end(n->g, ram_off(n, n->hdr), sizeof(*n->hdr));
	__atomic_store_n(&n->slots[i].state, NET_SLOT_OPEN, __ATOMIC_RELEASE);
	slot_written(n, &n->slots[i]);
	atomic_fetch_add(&n->nconns, 1);
	return (int)i;
}

/* The host side of slot @i goes: its socket closes (or was handed on). */
void net_conn_drop(struct net *n, uint32_t i, bool do_close)
{
	struct net_conn *c = &n->conns[i];

	if (c->fd < 0)
		return;
	epoll_ctl(n->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	if (do_close)
		close(c->fd);
	c->fd = -1;
	atomic_fetch_sub(&n->nconns, 1);
}

/* The guest let go of slot @i: free it for the next connection. */
static void slot_free(struct net *n, uint32_t i)
{
	struct net_slot *s = &n->slots[i];

	net_conn_drop(n, i, true);
	slot_write(n, s);
	memset(s, 0, sizeof(*s));
	slot_written(n, s);
}

/* The connection of slot @i is gone: the guest sees it reset. */
void net_slot_reset(struct net *n, uint32_t i, bool count)
{
	struct net_slot *s = &n->slots[i];

	net_conn_drop(n, i, true);
	slot_write(n, s);
	__atomic_store_n(&s->bflags, s->bflags | NET_B_RESET, __ATOMIC_RELEASE);
	slot_written(n, s);
	if (count) {
		guest_write_begin(n->g, ram_off(n, n->hdr), sizeof(*n->hdr));
		n->hdr->resets++;
		guest_write_end(n->g, ram_off(n, n->hdr), sizeof(*n->hdr));
	}
}

static void set_eof(struct net *n, uint32_t i)
{
	struct net_slot *s = &n->slots[i];

	slot_write(n, s);
	__atomic_store_n(&s->bflags, s->bflags | NET_B_EOF, __ATOMIC_RELEASE);
	slot_written(n, s);
}

/* Read what the socket has into the rx ring, until it would block or
 * the ring is full. Returns true if the guest got bytes or news. */
static bool do_rx(struct net *n, uint32_t i)
{
	struct net_slot *s = &n->slots[i];
	struct net_conn *c = &n->conns[i];
	uint8_t *ring = net_ring_of(n->g->ram, n->g->mem_size, i);
	bool news = false;

	while (c->fd >= 0 && !(s->bflags & (NET_B_EOF | NET_B_RESET))) {
		uint32_t head = s->rx_head;
		uint32_t tail = __atomic_load_n(&s->rx_tail, __ATOMIC_ACQUIRE);
		uint32_t space = NET_RING - (head - tail), off = head & (NET_RING - 1);
		struct iovec iov[2];
		ssize_t r;

		/* The indexes live in guest RAM (and arrive with a
		 * migration): ones that cannot be take the slot down. */
		if (head - tail > NET_RING) {
			net_slot_reset(n, i, false);
			return true;
		}
		if (!space) {
			c->rx_full = true;
			return news;
		}
		iov[0].iov_base = ring + off;
		iov[0].iov_len = space < NET_RING - off ? space : NET_RING - off;
		iov[1].iov_base = ring;
		iov[1].iov_len = space - iov[0].iov_len;
		guest_write_begin(n->g, ram_off(n, ring), NET_RING);
		r = readv(c->fd, iov, iov[1].iov_len ? 2 : 1);
		if (r > 0) {
			c->rx_read += (uint64_t)r;
			guest_write_end(n->g, ram_off(n, ring), NET_RING);
			slot_write(n, s);
			__atomic_store_n(&s->rx_head, head + (uint32_t)r,
					 __ATOMIC_RELEASE);
			slot_written(n, s);
			news = true;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->rx_full = false;
			return news;
		}
		if (r == 0)
			set_eof(n, i);
		else
			net_slot_reset(n, i, false);
		return true;
	}
	return news;
}

/* Send what the guest put into the tx ring. Returns true if space was
 * freed or the connection broke (news for the guest). */
static bool do_tx(struct net *n, uint32_t i)
{
	struct net_slot *s = &n->slots[i];
	struct net_conn *c = &n->conns[i];
	uint8_t *ring = net_ring_of(n->g->ram, n->g->mem_size, i) + NET_RING;
	bool news = false;

	while (c->fd >= 0 && !c->tx_wait) {
		uint32_t head = __atomic_load_n(&s->tx_head, __ATOMIC_ACQUIRE);
		uint32_t tail = s->tx_tail, len = head - tail;
		uint32_t off = tail & (NET_RING - 1);
		struct iovec iov[2];
		ssize_t r;

		if (!len || len > NET_RING)
			return news;
		iov[0].iov_base = ring + off;
		iov[0].iov_len = len < NET_RING - off ? len : NET_RING - off;
		iov[1].iov_base = ring;
		iov[1].iov_len = len - iov[0].iov_len;
		r = writev(c->fd, iov, iov[1].iov_len ? 2 : 1);
		if (r > 0) {
			slot_write(n, s);
			__atomic_store_n(&s->tx_tail, tail + (uint32_t)r,
					 __ATOMIC_RELEASE);
			slot_written(n, s);
			news = true;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->tx_wait = true;
			return news;
		}
		net_slot_reset(n, i, false);
		return true;
	}
	return news;
}

/**
 * net_accept_queued() - give a slot to every connection waiting in the
 * listener's queue. The backend calls it when the listener is readable;
 * a pause calls it with the backend parked, so that a handshake that
 * completed just before is handed over with the rest instead of being
 * reset when the listener closes at release.
 * @n: the device.
 *
 * Return: how many were accepted.
 */
unsigned net_accept_queued(struct net *n)
{
	unsigned got = 0;
	int fd, one = 1;

	while (n->listen_fd >= 0) {
		fd = accept4(n->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* No slot: the client sees the connection reset at once. */
		if (net_slot_open(n, fd, NET_KIND_SERVER) < 0)
			close(fd);
		else
			got++;
	}
	return got;
}

/* Every open slot: send, read where the guest made room, and free the
 * slots the guest let go of. */
static bool scan_all(struct net *n)
{
	bool news = false;

	for (uint32_t i = 0; i < NET_SLOTS; i++) {
		struct net_slot *s = &n->slots[i];
		struct net_conn *c = &n->conns[i];
		uint32_t gf;

		if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != NET_SLOT_OPEN)
			continue;
		gf = __atomic_load_n(&s->gflags, __ATOMIC_ACQUIRE);
		if (c->fd >= 0) {
			news |= do_tx(n, i);
			if (c->rx_full)
				news |= do_rx(n, i);
		}
		if ((gf & NET_G_CLOSE) &&
		    (c->fd < 0 || __atomic_load_n(&s->tx_head, __ATOMIC_ACQUIRE) ==
					  s->tx_tail))
			slot_free(n, i);
	}
	return news;
}

/* Park while a pause holds the backend; false when stopping. */
static bool backend_park(struct net *n)
{
	bool stop;

	pthread_mutex_lock(&n->lock);
	if (n->pause_req && !n->stop) {
		n->parked = true;
		pthread_cond_broadcast(&n->cond);
		while (n->pause_req && !n->stop)
			pthread_cond_wait(&n->cond, &n->lock);
		n->parked = false;
		/* Whatever happened meanwhile: look at every socket again. */
		n->rescan = true;
	}
	stop = n->stop;
	pthread_mutex_unlock(&n->lock);
	return !stop;
}

static void drain_fd(int fd)
{
	uint64_t v;

	while (read(fd, &v, sizeof(v)) == sizeof(v))
		;
}

static void backend_events(struct net *n, struct epoll_event *ev, int k,
			   bool *news)
{
	for (int e = 0; e < k; e++) {
		uint32_t i = ev[e].data.u32;

		if (i == EV_LISTEN) {
			net_accept_queued(n);
		} else if (i == EV_KICK || i == EV_CTL) {
			drain_fd(i == EV_KICK ? n->kick_fd : n->ctl_fd);
			n->rescan = true;
		} else if (i < NET_SLOTS && n->conns[i].fd >= 0) {
			if (ev[e].events & EPOLLOUT) {
				n->conns[i].tx_wait = false;
				*news |= do_tx(n, i);
			}
			if (ev[e].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
				*news |= do_rx(n, i);
		}
	}
}

static void *backend_main(void *arg)
{
	struct net *n = arg;
	struct epoll_event ev[NET_EVENTS];
	int k;

	n->rescan = true;
	while (backend_park(n)) {
		bool news = false, all = n->rescan;

		if (all) {
			for (uint32_t i = 0; i < NET_SLOTS; i++)
				if (n->conns[i].fd >= 0)
					n->conns[i].rx_full = true;
		}
		k = epoll_wait(n->epfd, ev, NET_EVENTS,
			       all ? 0 : n->ahead_more ? 10 : 1000);
		if (k < 0)
			k = 0;
		/* A pause may have come while it waited: touch nothing. */
		pthread_mutex_lock(&n->lock);
		if (n->pause_req || n->stop) {
			pthread_mutex_unlock(&n->lock);
			/* The events are read again after the resume. */
			n->rescan = true;
			continue;
		}
		pthread_mutex_unlock(&n->lock);
		n->rescan = false;
		backend_events(n, ev, k, &news);
		if (all || n->rescan) {
			n->rescan = false;
			news |= scan_all(n);
		}
		if (news)
			guest_doorbell(n->g);
		/* After the traffic: what a handoff would read in its pause. */
		if (atomic_exchange(&n->ahead_scan, false))
			net_read_ahead_all(n);
		else
			net_read_ahead_due(n);
	}
	return NULL;
}

/**
 * net_kick() - the guest has new tx bytes, freed rx space or closed a
 * slot: wake the backend.
 * @n: the device.
 */
void net_kick(struct net *n)
{
	uint64_t one = 1;

	if (write(n->kick_fd, &one, sizeof(one)) < 0)
		return; /* the counter is full: the backend is awake anyway */
}

static int backend_thread(struct net *n);

static int add_ctl(struct net *n, int fd, uint32_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = tag };

	return epoll_ctl(n->epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

/* Every slot's socket, and on a destination as many made ahead
 * (--net-prepare), need more fds than the soft limit many systems start
 * processes with (1,024, kept low for select()'s sake; the device uses
 * epoll): raise it to what the device may use, as far as the hard limit
 * allows. */
static void raise_fd_limit(void)
{
	const rlim_t want = 2 * (rlim_t)NET_SLOTS + 512;
	struct rlimit r;

	if (getrlimit(RLIMIT_NOFILE, &r) || r.rlim_cur >= want)
		return;
	r.rlim_cur = r.rlim_max == RLIM_INFINITY || r.rlim_max > want
			     ? want : r.rlim_max;
	setrlimit(RLIMIT_NOFILE, &r);
}

/**
 * net_create() - the device of @vm, with its options parsed; it binds,
 * connects and runs nothing yet (net_start()).
 * @vm: the VM, its guest initialised (RAM mapped).
 * @out: receives the device.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0, -EINVAL (an option) or a negative errno.
 */
int net_create(struct vm *vm, struct net **out, char *err, size_t len)
{
	struct net *n = calloc(1, sizeof(*n));
	int rc = -ENOMEM;

	if (!n) {
		snprintf(err, len, "out of memory");
		return rc;
	}
	n->vm = vm;
	n->g = &vm->guest;
	n->epfd = n->kick_fd = n->ctl_fd = n->listen_fd = -1;
	for (uint32_t i = 0; i < NET_SLOTS; i++)
		n->conns[i].fd = -1;
	pthread_mutex_init(&n->lock, NULL);
	pthread_cond_init(&n->cond, NULL);
	pthread_mutex_init(&n->pool_lock, NULL);
	atomic_init(&n->nconns, 0);
	if (vm->opts.listen &&
	    (rc = net_parse_tcp(vm->opts.listen, &n->listen_addr, &n->listen_len,
				err, len)))
		goto fail;
	if (vm->opts.connect &&
	    (rc = net_parse_tcp(vm->opts.connect, &n->connect_addr,
				&n->connect_len, err, len)))
		goto fail;
	if (vm->opts.net_address) {
		rc = netaddr_parse(vm->opts.net_address, &n->addr, err, len);
		if (rc)
			goto fail;
		n->has_addr = true;
	}
	rc = -ENOMEM;
	n->saved = calloc(1, sizeof(*n->saved));
	if (!n->saved) {
		snprintf(err, len, "out of memory");
		goto fail;
	}
	n->epfd = epoll_create1(EPOLL_CLOEXEC);
	n->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	n->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	rc = n->epfd < 0 || n->kick_fd < 0 || n->ctl_fd < 0 ? -errno : 0;
	if (!rc)
		rc = add_ctl(n, n->kick_fd, EV_KICK);
	if (!rc)
		rc = add_ctl(n, n->ctl_fd, EV_CTL);
	if (rc) {
		snprintf(err, len, "cannot create the device's event fds: %s",
			 strerror(-rc));
		goto fail;
	}
	n->hdr = net_hdr_of(n->g->ram, n->g->mem_size);
	n->slots = net_slots_of(n->g->ram, n->g->mem_size);
	raise_fd_limit();
	net_pool_start(n);
	/* A destination's takeover helpers wait from now on (a local one
	 * takes the sockets by fd: no takeover to share). */
	if (vm->opts.incoming && strncmp(vm->opts.incoming, "file:", 5) &&
	    !vm->opts.local)
		net_par_start(n);
	/* A destination's backend waits parked from now on: the resume that
	 * ends the pause then wakes it instead of creating it. */
	if (vm->opts.incoming) {
		n->pause_req = true;
		if (backend_thread(n))
			n->pause_req = false; /* net_resume() tries again */
	}
	*out = n;
	return 0;
fail:
	net_destroy(n);
	return rc;
}

/**
 * net_listen_open() - bind and listen on --listen's address (again, on a
 * destination or after a failed handoff).
 * @n: the device.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0 (also without --listen) or a negative errno.
 */
int net_listen_open(struct net *n, char *err, size_t len)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = EV_LISTEN };
	int fd, one = 1, rc;

	if (!n->vm->opts.listen || n->listen_fd >= 0)
		return 0;
	fd = socket(n->listen_addr.ss_family,
		    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		goto fail;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* Its accepted sockets inherit the gate: none of them needs a filter
	 * attached in the pause. Without eBPF they get one each there. */
	n->listen_gated = !tcpr_gate_attach(fd);
	/* FERRY_VM_FAULT=hold-accept: the backend never hears of a
	 * handshake; only a pause accepts what waits. */
	if (bind(fd, (struct sockaddr *)&n->listen_addr, n->listen_len) ||
	    listen(fd, NET_BACKLOG) ||
	    (!n->vm->fault_hold_accept &&
	     epoll_ctl(n->epfd, EPOLL_CTL_ADD, fd, &ev))) {
		rc = -errno;
		close(fd);
		goto fail;
	}
	/* The status reads it from the API thread (net_counts()). */
	__atomic_store_n(&n->listen_fd, fd, __ATOMIC_RELAXED);
	return 0;
fail:
	snprintf(err, len, "cannot listen on %s: %s", n->vm->opts.listen,
		 strerror(-rc));
	return rc;
}

/**
 * net_listen_close() - stop listening (the address moves on).
 * @n: the device.
 */
void net_listen_close(struct net *n)
{
	if (n->listen_fd < 0)
		return;
	epoll_ctl(n->epfd, EPOLL_CTL_DEL, n->listen_fd, NULL);
	close(n->listen_fd);
	__atomic_store_n(&n->listen_fd, -1, __ATOMIC_RELAXED);
}

static int client_connect(struct net *n, char *err, size_t len)
{
	int fd, one = 1, rc, i;

	fd = socket(n->connect_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&n->connect_addr,
			      n->connect_len)) {
		rc = -errno;
		goto fail;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	i = net_slot_open(n, fd, NET_KIND_CLIENT);
	if (i < 0) {
		rc = i;
		goto fail;
	}
	guest_write_begin(n->g, ram_off(n, n->hdr), sizeof(*n->hdr));
	n->hdr->client_slot = (uint32_t)i;
	guest_write_end(n->g, ram_off(n, n->hdr), sizeof(*n->hdr));
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	snprintf(err, len, "cannot connect to %s: %s", n->vm->opts.connect,
		 strerror(-rc));
	return rc;
}

static int backend_thread(struct net *n)
{
	int rc;

	if (n->thread_started)
		return 0;
	rc = pthread_create(&n->thread, NULL, backend_main, n);
	if (rc)
		return -rc;
	pthread_setname_np(n->thread, "net");
	n->thread_started = true;
	return 0;
}

/**
 * net_start() - a source's device comes up before its guest runs: the
 * header of the net region, the listener, the client's connection, the
 * backend thread.
 * @n: the device.
 * @connect: also connect --connect's client (false on a guest that
 *           arrived with its connection).
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0 or a negative errno.
 */
int net_start(struct net *n, bool connect, char *err, size_t len)
{
	const struct vm_opts *o = &n->vm->opts;
	int rc;

	guest_write_begin(n->g, ram_off(n, n->hdr), sizeof(*n->hdr));
	__atomic_store_n(&n->hdr->magic, NET_HDR_MAGIC, __ATOMIC_RELEASE);
	n->hdr->nslots = NET_SLOTS;
	n->hdr->ring = NET_RING;
	n->hdr->client_slot = NET_NO_SLOT;
	n->hdr->client_rate = o->connect_rate;
	n->hdr->client_limit = o->connect_count;
	guest_write_end(n->g, ram_off(n, n->hdr), sizeof(*n->hdr));
	rc = net_address_add(n, err, len);
	if (!rc)
		rc = net_listen_open(n, err, len);
	if (!rc && connect && o->connect)
		rc = client_connect(n, err, len);
	if (!rc)
		rc = backend_thread(n);
	if (rc && !err[0])
		snprintf(err, len, "cannot start the device: %s", strerror(-rc));
	return rc;
}

/**
 * net_pause() - quiesce the backend: when it returns the backend touches
 * neither guest RAM nor a socket until net_resume().
 * @n: the device (NULL: nothing to do).
 */
void net_pause(struct net *n)
{
	uint64_t one = 1;

	if (!n || !n->thread_started)
		return;
	pthread_mutex_lock(&n->lock);
	n->pause_req = true;
	if (write(n->ctl_fd, &one, sizeof(one)) < 0) {
		/* Full counter: the backend is being woken already. */
	}
	while (!n->parked && !n->stop)
		pthread_cond_wait(&n->cond, &n->lock);
	pthread_mutex_unlock(&n->lock);
}

/**
 * net_resume() - let the backend run again (start it on a destination).
 * @n: the device (NULL: nothing to do).
 */
void net_resume(struct net *n)
{
	unsigned lost = 0;

	if (!n)
		return;
	/* A slot open in guest RAM without a socket here came in RAM whose
	 * connection did not come along (a snapshot, or a guest that arrived
	 * without a handoff): the guest sees it reset. */
	for (uint32_t i = 0; n->hdr->magic == NET_HDR_MAGIC && i < NET_SLOTS; i++) {
		struct net_slot *s = &n->slots[i];

		if (s->state == NET_SLOT_OPEN && n->conns[i].fd < 0 &&
		    !(s->bflags & NET_B_RESET) && !(s->gflags & NET_G_CLOSE)) {
			net_slot_reset(n, i, true);
			lost++;
		}
	}
	if (lost) {
		atomic_fetch_add(&n->reset, lost);
		fprintf(stderr, "ferry-vm: net: %u connection%s of the guest did "
			"not come with it: the guest sees %s reset\n", lost,
			lost == 1 ? "" : "s", lost == 1 ? "it" : "them");
	}
	pthread_mutex_lock(&n->lock);
	n->pause_req = false;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
	if (backend_thread(n))
		fprintf(stderr, "ferry-vm: net: cannot start the backend thread\n");
}

/**
 * net_counts() - open connections and listening sockets now.
 * @n: the device (NULL: none).
 * @conns: receives the connections.
 * @listeners: receives the listeners.
 */
void net_counts(struct net *n, unsigned *conns, unsigned *listeners)
{
	*conns = n ? atomic_load(&n->nconns) : 0;
	*listeners = n && __atomic_load_n(&n->listen_fd, __ATOMIC_RELAXED) >= 0;
}

/**
 * net_json() - the device as status and reports show it: "connections"
 * and "listeners" open here, "where" the guest's connections are
 * ("source", "destination", "lost" or "none"), "reset" (connections a
 * snapshot did not carry), and the guest's client counters.
 * @vm: the VM.
 *
 * Return: a new object, or NULL (JSON null) without a device.
 */
struct json_object *net_json(struct vm *vm)
{
	struct net *n = vm->net;
	json_object *o, *c;
	unsigned conns, listeners;
	const char *where;
	bool dest = vm->opts.incoming != NULL;

	if (!n || vm->guest.workload != VM_WL_KV)
		return NULL;
	net_counts(n, &conns, &listeners);
	switch (atomic_load(&n->where)) {
	case NET_WHERE_AWAY:
		where = "destination";
		break;
	case NET_WHERE_LOST:
		where = "lost";
		break;
	default:
		where = !conns ? "none" : dest ? "destination" : "source";
	}
	o = json_object_new_object();
	json_object_object_add(o, "connections", json_object_new_int64(conns));
	json_object_object_add(o, "listeners", json_object_new_int64(listeners));
	json_object_object_add(o, "where", json_object_new_string(where));
	json_object_object_add(o, "reset", json_object_new_int64(atomic_load(&n->reset)));
	json_object_object_add(o, "handed", json_object_new_int64(atomic_load(&n->handed)));
	json_object_object_add(o, "handoff", json_object_new_string(
		atomic_load(&n->handoff) == NET_HANDOFF_FDS ? "fds" :
		atomic_load(&n->handoff) == NET_HANDOFF_REPAIR ? "repair" : "none"));
	/* After a local migration the RAM with the guest's counters is the
	 * destination's (unmapped here): they are reported there. */
	if (atomic_load(&n->g->ram_released))
		return o;
	if (__atomic_load_n(&n->hdr->magic, __ATOMIC_ACQUIRE) == NET_HDR_MAGIC &&
	    n->hdr->client_slot != NET_NO_SLOT) {
		c = json_object_new_object();
		json_object_object_add(c, "sent", json_object_new_int64((int64_t)n->hdr->client_sent));
		json_object_object_add(c, "answered", json_object_new_int64((int64_t)n->hdr->client_answered));
		json_object_object_add(c, "errors", json_object_new_int64((int64_t)n->hdr->client_errors));
		json_object_object_add(c, "base", json_object_new_int64((int64_t)n->hdr->client_base));
		json_object_object_add(c, "last", json_object_new_int64((int64_t)n->hdr->client_last));
		json_object_object_add(o, "client", c);
	}
	json_object_object_add(o, "keys", json_object_new_int64((int64_t)n->hdr->kv_used));
	/* Connections the guest ever accepted or opened: a client that had
	 * to reconnect shows here. */
	json_object_object_add(o, "accepted", json_object_new_int64((int64_t)
		__atomic_load_n(&n->hdr->accepted, __ATOMIC_RELAXED)));
	return o;
}

/**
 * net_kick_fd() - the eventfd the guest writes to wake the backend.
 * @n: the device.
 *
 * Return: the fd.
 */
int net_kick_fd(struct net *n)
{
	return n->kick_fd;
}

/**
 * net_destroy() - stop the backend, close every socket. The guest is
 * stopped.
 * @n: the device (NULL is harmless).
 */
void net_destroy(struct net *n)
{
	if (!n)
		return;
	net_pool_stop(n);
	net_par_stop(n);
	if (n->thread_started) {
		pthread_mutex_lock(&n->lock);
		n->stop = true;
		pthread_cond_broadcast(&n->cond);
		pthread_mutex_unlock(&n->lock);
		net_kick(n);
		pthread_join(n->thread, NULL);
	}
	net_release_close(n);
	for (uint32_t i = 0; i < NET_SLOTS; i++)
		if (n->conns[i].fd >= 0)
			close(n->conns[i].fd);
	if (n->listen_fd >= 0)
		close(n->listen_fd);
	if (n->epfd >= 0)
		close(n->epfd);
	if (n->kick_fd >= 0)
		close(n->kick_fd);
	if (n->ctl_fd >= 0)
		close(n->ctl_fd);
	pthread_mutex_destroy(&n->lock);
	pthread_cond_destroy(&n->cond);
	pthread_mutex_destroy(&n->pool_lock);
	net_state_clear(n->saved);
	free(n->saved);
	net_fdpass_discard(n);
	free(n);
}
