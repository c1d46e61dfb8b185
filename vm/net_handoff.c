// SPDX-License-Identifier: MIT
/*
 * net_handoff.c - the network device's connections across a migration
 * (issue 21's handoff, passt's model): ownership of a TCP connection
 * passes at one point only.
 *
 *   source pause     the backend is quiesced, every connection frozen
 *                    (TCP_REPAIR: the kernel sends nothing for it)
 *   save_state       each frozen socket is dumped into the "net0" device
 *                    (tcpr_conn: addresses, sequences, queues, options),
 *                    with its slot; the listener's address; the client's
 *                    counters (informative: they live in guest RAM)
 *   resume (source)  before "released" failed: thaw, the backend runs again
 *   release          the point of no return: every frozen socket is closed
 *                    without FIN or RST, the listener closed, the guest's
 *                    address removed
 *   reacquire        "released" was refused: rebuild from the dumps, as
 *                    acquire does
 *   acquire (dest.)  the address added and announced, every connection
 *                    restored and thawed in its slot, the listener opened
 *   snapshot         connections are not carried: release resets them,
 *                    the restored guest sees them reset, reports count them
 *
 * The dumps are kept on the source after save_state (a reacquire needs
 * them) and on a destination from load_state to acquire.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net_int.h"
#include "netaddr.h"
#include "tcprepair.h"

/* Queues larger than this are refused on load (and cannot occur: a
 * socket's buffers are far smaller). */
#define NET_QUEUE_MAX (256u << 20)

static int net_state_visit(ferry_visitor *v, void *dev)
{
	struct net_state *s = dev;
	uint32_t n = s->nconns;

	ferry_visit_string(v, "listen", s->listen, sizeof(s->listen), "",
			   FERRY_FIELD_SKIPPABLE);
	ferry_visit_u32(v, "reset", &s->reset, 0, FERRY_FIELD_SKIPPABLE);
	if (ferry_visit_struct_begin(v, "client", FERRY_FIELD_SKIPPABLE) == 0) {
		ferry_visit_u64(v, "sent", &s->client_sent, 0, FERRY_FIELD_SKIPPABLE);
		ferry_visit_u64(v, "answered", &s->client_answered, 0,
				FERRY_FIELD_SKIPPABLE);
		ferry_visit_struct_end(v);
	}
	if (ferry_visit_array_begin(v, "connections", &n, NET_SLOTS,
				    FERRY_FIELD_MUST) == 0) {
		for (uint32_t i = 0; i < n; i++) {
			if (ferry_visit_struct_begin(v, NULL, 0))
				break;
			ferry_visit_u32(v, "slot", &s->conns[i].slot, 0,
					FERRY_FIELD_MUST);
			tcpr_visit(v, &s->conns[i].c);
			ferry_visit_struct_end(v);
			if (s->conns[i].slot >= NET_SLOTS)
				ferry_visit_fail(v, -ERANGE, "connection %u is in slot %u, "
						 "beyond the device's %u", i,
						 s->conns[i].slot, NET_SLOTS);
		}
		ferry_visit_array_end(v);
	}
	s->nconns = n;
	return ferry_visit_error(v);
}

const struct ferry_device_type net_state_type = {
	.name = "net", .version = 1,
	.size = sizeof(struct net_state), .visit = net_state_visit,
};

/**
 * net_state_clear() - free the queues of @s and forget its connections.
 * @s: a net0 state (NULL is harmless).
 */
void net_state_clear(struct net_state *s)
{
	if (!s)
		return;
	for (uint32_t i = 0; i < NET_SLOTS; i++)
		tcpr_conn_clear(&s->conns[i].c);
	s->nconns = 0;
}

/* A snapshot or a checkpoint: the connections stay out of the stream. */
static bool to_file(struct net *n)
{
	return !strncmp(n->vm->mig.uri, "file:", 5);
}

static bool handing_off(struct net *n)
{
	return !n->vm->opts.incoming || n->vm->mig.arrived ?
		       !to_file(n) && !n->vm->mig.keep_running : false;
}

/**
 * net_handoff_check() - before a migration starts: connections can move
 * only with TCP_REPAIR.
 * @n: the device (NULL: nothing to check).
 * @uri: where the guest goes.
 * @err: receives the reason.
 * @len: size of @err.
 *
 * Return: 0, or -EPERM when there are connections and TCP_REPAIR is not
 * available (the message names it).
 */
int net_handoff_check(struct net *n, const char *uri, char *err, size_t len)
{
	char why[200] = "";
	unsigned c = n ? atomic_load(&n->nconns) : 0;

	if (!c || !strncmp(uri, "file:", 5) || !tcpr_available(why, sizeof(why)))
		return 0;
	snprintf(err, len, "the guest has %u open TCP connection%s, which "
		 "migrate only with TCP_REPAIR: %s", c, c == 1 ? "" : "s", why);
	return -EPERM;
}

static void thaw_all(struct net *n)
{
	char err[200];

	for (uint32_t i = 0; i < NET_SLOTS; i++) {
		struct net_conn *c = &n->conns[i];

		if (c->fd < 0 || !c->frozen)
			continue;
		if (tcpr_thaw(c->fd, err, sizeof(err))) {
			fprintf(stderr, "ferry-vm: net: slot %u: %s; the guest "
				"sees it reset\n", i, err);
			net_slot_reset(n, i, true);
			atomic_fetch_add(&n->reset, 1);
		}
		c->frozen = false;
	}
}

/**
 * net_freeze() - the pause's device part, after net_pause(): on a live
 * migration every connection enters repair mode.
 * @n: the device (NULL: nothing).
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0, or a negative errno with every socket thawed again.
 */
int net_freeze(struct net *n, char *err, size_t len)
{
	int rc;

	if (!n || !handing_off(n))
		return 0;
	for (uint32_t i = 0; i < NET_SLOTS; i++) {
		struct net_conn *c = &n->conns[i];

		if (c->fd < 0)
			continue;
		rc = tcpr_freeze(c->fd, err, len);
		if (rc) {
			thaw_all(n);
			return rc;
		}
		c->frozen = true;
	}
	return 0;
}

/**
 * net_save() - fill the net0 state of the paused source: the dumps of
 * the frozen connections (kept for a reacquire), or on a snapshot the
 * number of connections it does not carry.
 * @n: the device.
 * @s: the state to fill (cleared first).
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0 (a connection that cannot be dumped is not handed over).
 */
int net_save(struct net *n, struct net_state *s, char *err, size_t len)
{
	char why[200] = "";
	unsigned skipped = 0;

	net_state_clear(s);
	snprintf(s->listen, sizeof(s->listen), "%s",
		 n->vm->opts.listen ? n->vm->opts.listen : "");
	s->client_sent = n->hdr->client_sent;
	s->client_answered = n->hdr->client_answered;
	s->reset = 0;
	for (uint32_t i = 0; i < NET_SLOTS; i++) {
		struct net_conn *c = &n->conns[i];

		if (c->fd < 0)
			continue;
		c->carried = false;
		if (!c->frozen) {
			s->reset++;
			continue;
		}
		s->conns[s->nconns].slot = i;
		/* A connection its peer is closing (CLOSE_WAIT, say) is not
		 * handed over: it ends at release, and the guest that
		 * arrives sees it reset. The others still move. */
		if (tcpr_dump(c->fd, &s->conns[s->nconns].c, why, sizeof(why))) {
			tcpr_conn_clear(&s->conns[s->nconns].c);
			skipped++;
			s->reset++;
			continue;
		}
		c->carried = true;
		s->nconns++;
	}
	if (skipped)
		fprintf(stderr, "ferry-vm: net: %u connection%s not handed over "
			"(the last: %s)\n", skipped, skipped == 1 ? "" : "s", why);
	(void)err;
	(void)len;
	return 0;
}

static void address_del(struct net *n)
{
	char err[200];

	if (n->has_addr && netaddr_del(&n->addr, n->vm->opts.net_dev, err,
				       sizeof(err)))
		fprintf(stderr, "ferry-vm: net: %s\n", err);
}

/**
 * net_address_add() - give the guest's address to --net-dev and announce
 * it, so that the clients' neighbour caches follow it here.
 * @n: the device.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0 (also without --net-address) or a negative errno.
 */
int net_address_add(struct net *n, char *err, size_t len)
{
	int rc;

	if (!n->has_addr)
		return 0;
	rc = netaddr_add(&n->addr, n->vm->opts.net_dev, err, len);
	if (rc == -EEXIST)
		rc = 0;
	if (!rc)
		rc = netaddr_announce(&n->addr, n->vm->opts.net_dev, err, len);
	return rc;
}

/**
 * net_release() - the source's point of no return: close every frozen
 * socket without a FIN or RST, stop listening, give the address up. A
 * snapshot resets its connections instead (they do not outlive it).
 * @n: the device (NULL: nothing).
 */
void net_release(struct net *n)
{
	struct linger lg = { 1, 0 };
	unsigned moved = 0, reset = 0;
	char err[200];
	int one = 1;

	if (!n)
		return;
	for (uint32_t i = 0; i < NET_SLOTS; i++) {
		struct net_conn *c = &n->conns[i];

		if (c->fd < 0)
			continue;
		if (c->frozen && c->carried) {
			tcpr_discard(c->fd);
			net_conn_drop(n, i, false);
			moved++;
		} else if (c->frozen) {
			/* Not in the state: it ends here, normally (the kernel
			 * still sends what is queued). Leaving repair mode
			 * cleared its address reuse, which the listener the
			 * destination opens on this port needs. */
			tcpr_thaw(c->fd, err, sizeof(err));
			setsockopt(c->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			net_conn_drop(n, i, true);
			reset++;
		} else {
			setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			net_conn_drop(n, i, true);
			reset++;
		}
		c->frozen = c->carried = false;
	}
	net_listen_close(n);
	address_del(n);
	atomic_store(&n->handed, moved);
	atomic_fetch_add(&n->reset, reset);
	atomic_store(&n->where, NET_WHERE_AWAY);
}

/* An acquire that fails hands the connections back as a release does:
 * frozen and closed without a FIN or RST, for the source to restore. */
static void give_back(struct net *n)
{
	char err[200];

	for (uint32_t i = 0; i < NET_SLOTS; i++) {
		int fd = n->conns[i].fd;

		if (fd < 0)
			continue;
		if (tcpr_freeze(fd, err, sizeof(err)))
			fprintf(stderr, "ferry-vm: net: slot %u: %s\n", i, err);
		net_conn_drop(n, i, false);
		tcpr_discard(fd);
	}
}

/* Put @fd, restored and thawed, into slot @i (open in guest RAM). */
static int attach(struct net *n, uint32_t i, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP |
					    EPOLLET, .data.u32 = i };

	if (n->conns[i].fd >= 0 || epoll_ctl(n->epfd, EPOLL_CTL_ADD, fd, &ev))
		return -EBUSY;
	n->conns[i] = (struct net_conn){ .fd = fd, .rx_full = true };
	atomic_fetch_add(&n->nconns, 1);
	return 0;
}

/**
 * net_acquire() - take the connections over from the saved dumps (a
 * destination's acquire, a source's reacquire): the address, then each connection
 * restored in repair mode in its slot, then the listener, then each
 * connection thawed. A
 * connection that cannot be restored is reset for the guest (and said
 * on stderr); the guest runs anyway.
 * @n: the device (NULL: nothing).
 *
 * Return: 0, or a negative errno when the listener cannot be opened.
 */
int net_acquire(struct net *n)
{
	const struct net_state *s = n ? n->saved : NULL;
	char err[256] = "";
	unsigned ok = 0;
	int fd, rc, one = 1;
	uint64_t t0 = vm_now_ns(), t_restore = 0, t_thaw = 0, t;

	if (!n)
		return 0;
	if (net_address_add(n, err, sizeof(err)))
		fprintf(stderr, "ferry-vm: net: %s\n", err);
	/* Every connection restored, still frozen: a listener that then
	 * cannot open gives them back before any of them took a byte. */
	for (uint32_t k = 0; s && k < s->nconns; k++) {
		uint32_t i = s->conns[k].slot;

		fd = -1;
		t = vm_now_ns();
		rc = tcpr_restore(&s->conns[k].c, &fd, err, sizeof(err));
		t_restore += vm_now_ns() - t;
		if (!rc && (rc = attach(n, i, fd)))
			snprintf(err, sizeof(err), "slot %u is taken", i);
		if (rc) {
			if (fd >= 0)
				tcpr_discard(fd);
			fprintf(stderr, "ferry-vm: net: slot %u not restored: %s\n",
				i, err);
			continue; /* net_resume() resets it for the guest */
		}
	}
	/* The listener after them: a restored connection cannot bind its
	 * local port while a socket listens on it (frozen ones keep their
	 * address reuse, so the listener can). */
	rc = net_listen_open(n, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "ferry-vm: net: %s; the connections go back\n",
			err);
		give_back(n);
		address_del(n);
		return rc;
	}
	for (uint32_t k = 0; s && k < s->nconns; k++) {
		uint32_t i = s->conns[k].slot;

		fd = n->conns[i].fd;
		if (fd < 0)
			continue;
		t = vm_now_ns();
		rc = tcpr_thaw(fd, err, sizeof(err));
		t_thaw += vm_now_ns() - t;
		/* Leaving repair mode clears the socket's address reuse; an
		 * accepted socket had it from its listener, and without it
		 * the next connection on the same local port could not
		 * bind. */
		if (!rc && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
				      sizeof(one)))
			rc = -errno;
		if (rc) {
			fprintf(stderr, "ferry-vm: net: slot %u not restored: %s\n",
				i, err);
			net_conn_drop(n, i, false);
			tcpr_discard(fd);
			continue;
		}
		ok++;
	}
	atomic_store(&n->handed, ok);
	atomic_store(&n->where, NET_WHERE_HERE);
	if (s && s->nconns)
		fprintf(stderr, "ferry-vm: net: %u of %u connections taken over in "
			"%.1f ms (restore %.1f ms, thaw %.1f ms)\n", ok, s->nconns,
			(double)(vm_now_ns() - t0) / 1e6, (double)t_restore / 1e6,
			(double)t_thaw / 1e6);
	return 0;
}

/**
 * net_resume_frozen() - a source resumes after a failure before
 * "released": its sockets leave repair mode (the peers saw a stall).
 * @n: the device (NULL: nothing).
 */
void net_resume_frozen(struct net *n)
{
	if (n)
		thaw_all(n);
}

/**
 * net_outcome() - a source's migration ended: connections released to a
 * destination that never confirmed it runs are lost.
 * @n: the device (NULL: nothing).
 * @rc: the migration's result.
 */
void net_outcome(struct net *n, int rc)
{
	if (n && rc && atomic_load(&n->where) == NET_WHERE_AWAY)
		atomic_store(&n->where, NET_WHERE_LOST);
}
