// SPDX-License-Identifier: MIT
/*
 * net_fdpass.c - the network device's connections on a live update (a
 * local migration whose destination takes descriptors: libferry's
 * DEVICE_FDS): the very sockets, listener included, pass to the new
 * process by fd instead of being frozen, dumped and re-created with
 * TCP_REPAIR (net_handoff.c, which every other migration still uses).
 *
 *   pause (source)   the backend is parked and touches no socket; nothing
 *                    is frozen: what arrives waits in the kernel's queues,
 *                    which belong to the socket and so move with it
 *   save_fds         every connection's socket, the listener and the gate
 *                    (tcprepair.h: its map and program) are named, in slot
 *                    order; the state ("net0fds") says which slot each is
 *   load_fds (dest.) the duplicates are kept, unused
 *   load_state       the state is checked against them (count, stream
 *                    sockets, a listening listener)
 *   release          nothing: both processes hold the same sockets, the
 *                    source parked, the destination not running yet
 *   acquire (dest.)  each socket joins the epoll set in its slot, the
 *                    listener becomes this process's, the gate too
 *   outcome (source) the migration succeeded: the source closes its
 *                    copies (the destination holds the sockets, so the
 *                    kernel sends nothing) and never touches them again
 *
 * A failure before the destination runs leaves the source with sockets
 * it never stopped owning: it resumes and reads what queued meanwhile.
 * The destination closes its duplicates (net_fdpass_discard()), which
 * changes nothing for them while the source holds them. Only the owner of
 * the guest reads or writes a socket; the other holds it parked.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net_fdpass.h"
#include "net_int.h"
#include "tcprepair.h"

/* An index that names no descriptor (no listener, no gate). */
#define FDP_NONE 0xffffffffu

static int net_fds_visit(ferry_visitor *v, void *dev)
{
	struct net_fds_state *s = dev;
	uint32_t n = s->nconns;

	s->present = true;
	ferry_visit_u32(v, "count", &s->count, 0, FERRY_FIELD_MUST);
	ferry_visit_u32(v, "listener", &s->listener, FDP_NONE, FERRY_FIELD_MUST);
	ferry_visit_u32(v, "gate_map", &s->gate_map, FDP_NONE,
			FERRY_FIELD_SKIPPABLE);
	ferry_visit_u32(v, "gate_prog", &s->gate_prog, FDP_NONE,
			FERRY_FIELD_SKIPPABLE);
	ferry_visit_bool(v, "listen_gated", &s->listen_gated, false,
			 FERRY_FIELD_SKIPPABLE);
	if (ferry_visit_array_begin(v, "connections", &n, NET_SLOTS,
				    FERRY_FIELD_MUST) == 0) {
		for (uint32_t i = 0; i < n; i++) {
			if (ferry_visit_struct_begin(v, NULL, 0))
				break;
			ferry_visit_u32(v, "slot", &s->conns[i].slot, 0,
					FERRY_FIELD_MUST);
			ferry_visit_bool(v, "gated", &s->conns[i].gated, false,
					 FERRY_FIELD_SKIPPABLE);
			ferry_visit_struct_end(v);
			if (s->conns[i].slot >= NET_SLOTS)
				ferry_visit_fail(v, -ERANGE, "connection %u is in slot %u, beyond the device's %u",
						 i, s->conns[i].slot, NET_SLOTS);
		}
		ferry_visit_array_end(v);
	}
	s->nconns = n;
	return ferry_visit_error(v);
}

/* Connection k is descriptor k; the listener and the gate follow. */
const struct ferry_device_type net_fds_type = {
	.name = "netfds", .version = 1,
	.size = sizeof(struct net_fds_state), .visit = net_fds_visit,
};

/**
 * net_fdpass_want() - at the pause: does this migration pass the sockets
 * by fd? libferry calls save_fds exactly when the session is local
 * (memory by fd) and the destination offered device fds; both are known
 * when the guest pauses.
 * @n: the device.
 * @s: the session, or NULL.
 *
 * Return: true when the handoff goes by fd (n->fdp.active is set).
 */
bool net_fdpass_want(struct net *n, ferry_session *s)
{
	struct ferry_stats st = { FERRY_STATS_INIT };

	if (!n || !s || ferry_session_stats(s, &st))
		return false;
	n->fdp.active = st.local_fds && (st.capabilities & FERRY_CAP_DEVICE_FDS);
	return n->fdp.active;
}

/* Add @fd as descriptor *@k, and its index into @idx; false when full. */
static bool put(int *fds, size_t max, size_t *k, int fd, uint32_t *idx)
{
	if (*k >= max)
		return false;
	*idx = (uint32_t)*k;
	fds[(*k)++] = fd;
	return true;
}

/**
 * net_fdpass_save() - the save_fds callback's device part: every open
 * connection's socket in slot order, then the listener and the gate.
 * @n: the device (NULL, or no fd handoff: none).
 * @fds: receives the descriptors (still this process's).
 * @max: room in @fds.
 * @count: receives how many.
 *
 * Return: 0, or -ENOSPC when they do not fit.
 */
int net_fdpass_save(struct net *n, int *fds, size_t max, size_t *count)
{
	struct net_fds_state *s;
	size_t k = 0;
	int map, prog;

	*count = 0;
	if (!n || !n->fdp.active)
		return 0;
	s = &n->fdp.st;
	memset(s, 0, offsetof(struct net_fds_state, conns));
	s->present = true;
	s->listener = s->gate_map = s->gate_prog = FDP_NONE;
	for (uint32_t i = 0; i < NET_SLOTS; i++) {
		uint32_t idx;

		if (n->conns[i].fd < 0)
			continue;
		if (!put(fds, max, &k, n->conns[i].fd, &idx))
			return -ENOSPC;
		s->conns[s->nconns].slot = i;
		s->conns[s->nconns++].gated = n->conns[i].gated;
	}
	if (n->listen_fd >= 0 &&
	    !put(fds, max, &k, n->listen_fd, &s->listener))
		return -ENOSPC;
	s->listen_gated = n->listen_gated;
	/* The sockets' filters refer to this process's gate: passed along,
	 * it can go on shutting them for a TCP_REPAIR handoff later. */
	if (!tcpr_gate_fds(&map, &prog) &&
	    (!put(fds, max, &k, map, &s->gate_map) ||
	     !put(fds, max, &k, prog, &s->gate_prog)))
		return -ENOSPC;
	s->count = (uint32_t)k;
	*count = k;
	return 0;
}

/**
 * net_fdpass_fill() - the "net0" state of an fd handoff: no dumps, the
 * listen address and the client's counters as net_save() gives them.
 * @n: the device.
 * @s: the state (cleared first).
 */
void net_fdpass_fill(struct net *n, struct net_state *s)
{
	net_state_clear(s);
	snprintf(s->listen, sizeof(s->listen), "%s",
		 n->vm->opts.listen ? n->vm->opts.listen : "");
	s->client_sent = n->hdr->client_sent;
	s->client_answered = n->hdr->client_answered;
	s->reset = 0;
}

/**
 * net_fdpass_release() - the source's point of no return: nothing to do
 * to the sockets (the destination holds them too); they are the
 * destination's from here, and close here once it runs.
 * @n: the device.
 */
void net_fdpass_release(struct net *n)
{
	atomic_store(&n->handed, n->fdp.st.nconns);
	atomic_store(&n->handoff, NET_HANDOFF_FDS);
	atomic_store(&n->where, NET_WHERE_AWAY);
}

/**
 * net_fdpass_back() - the source keeps its guest (a failure before the
 * destination ran it, "released" refused included): its sockets never
 * left, and the backend uses them again when it resumes.
 * @n: the device (NULL: nothing).
 */
void net_fdpass_back(struct net *n)
{
	if (!n || !n->fdp.active)
		return;
	n->fdp.active = false;
	atomic_store(&n->where, NET_WHERE_HERE);
}

/**
 * net_fdpass_outcome() - a source's migration ended. On success the
 * destination runs with the sockets: this side closes its copies, which
 * sends nothing while the destination holds them. Otherwise they stay:
 * the guest resumed here, or, released but unconfirmed, it stays paused
 * for an operator, and the connections are here, held and parked, not
 * lost (as they are after a TCP_REPAIR release): a forced resume serves
 * them again, this process's exit ends them.
 * @n: the device (NULL: nothing).
 * @rc: the migration's result.
 */
void net_fdpass_outcome(struct net *n, int rc)
{
	const struct net_fds_state *s;

	if (!n || !n->fdp.active)
		return;
	if (rc) {
		atomic_store(&n->where, NET_WHERE_HERE);
		fprintf(stderr, "ferry-vm: net: %u connection%s held here by fd "
			"and parked while the guest's owner is not confirmed: "
			"their clients wait, nothing is answered or reset until "
			"the guest runs here again ('ferry resume --force') or "
			"this process exits\n", atomic_load(&n->nconns),
			atomic_load(&n->nconns) == 1 ? "" : "s");
		return;
	}
	s = &n->fdp.st;
	for (uint32_t k = 0; k < s->nconns; k++)
		net_conn_drop(n, s->conns[k].slot, true);
	if (s->listener != FDP_NONE)
		net_listen_close(n);
	n->fdp.active = false;
	fprintf(stderr, "ferry-vm: net: %u connection%s and %s passed by fd; "
		"this side's copies are closed\n", s->nconns,
		s->nconns == 1 ? "" : "s",
		s->listener != FDP_NONE ? "the listener" : "no listener");
}

/* ---- destination ---- */

/**
 * net_fdpass_load() - the load_fds callback's device part: keep the
 * source's descriptors until the state says what they are.
 * @n: the device (NULL: only none is taken).
 * @fds: the descriptors, owned by this process from a 0 return.
 * @count: how many.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0, or -EINVAL / -ENOMEM (the library closes them then).
 */
int net_fdpass_load(struct net *n, const int *fds, size_t count, char *err,
		    size_t len)
{
	if (!n) {
		if (!count)
			return 0;
		snprintf(err, len, "%zu descriptors for a VM without a network device",
			 count);
		return -EINVAL;
	}
	net_fdpass_discard(n);
	if (count) {
		n->fdp.fds = malloc(count * sizeof(*fds));
		if (!n->fdp.fds) {
			snprintf(err, len, "out of memory");
			return -ENOMEM;
		}
		memcpy(n->fdp.fds, fds, count * sizeof(*fds));
	}
	n->fdp.nfds = (uint32_t)count;
	n->fdp.received = true;
	return 0;
}

/* Is @fd a socket of @type, listening or not as @listening says? */
static bool sock_is(int fd, int type, int listening)
{
	int v = 0;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l) || v != type)
		return false;
	l = sizeof(v);
	return !getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) &&
	       !!v == !!listening;
}

/**
 * net_fdpass_bind() - load_state: the "net0fds" state @s against the
 * descriptors load_fds kept. On success it is the device's.
 * @n: the device.
 * @s: the loaded state, or NULL when the stream had none.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0 (also without either), or -EINVAL when they do not match.
 */
int net_fdpass_bind(struct net *n, const struct net_fds_state *s, char *err,
		    size_t len)
{
	if (s && !s->present)
		s = NULL;
	/* A source without connections to pass (another workload) sends
	 * none and says nothing. */
	if (!s && (!n->fdp.received || !n->fdp.nfds)) {
		n->fdp.received = false;
		return 0;
	}
	if (!s || !n->fdp.received) {
		snprintf(err, len, s ? "the source passed its connections by fd, but no descriptor came"
				     : "%u descriptors came, but the state does not say what they are",
			 n->fdp.nfds);
		return -EINVAL;
	}
	if (s->count != n->fdp.nfds || s->nconns > s->count) {
		snprintf(err, len, "the state names %u descriptors (%u connections), %u came",
			 s->count, s->nconns, n->fdp.nfds);
		return -EINVAL;
	}
	for (uint32_t k = 0; k < s->nconns; k++)
		if (!sock_is(n->fdp.fds[k], SOCK_STREAM, 0)) {
			snprintf(err, len, "descriptor %u (slot %u) is not a connected stream socket",
				 k, s->conns[k].slot);
			return -EINVAL;
		}
	if (s->listener != FDP_NONE &&
	    (s->listener >= s->count ||
	     !sock_is(n->fdp.fds[s->listener], SOCK_STREAM, 1))) {
		snprintf(err, len, "descriptor %u is not a listening socket",
			 s->listener);
		return -EINVAL;
	}
	if ((s->gate_map != FDP_NONE) != (s->gate_prog != FDP_NONE) ||
	    (s->gate_map != FDP_NONE &&
	     (s->gate_map >= s->count || s->gate_prog >= s->count))) {
		snprintf(err, len, "the gate's descriptors %u and %u are not both there",
			 s->gate_map, s->gate_prog);
		return -EINVAL;
	}
	n->fdp.st = *s;
	n->fdp.bound = true;
	return 0;
}

/* Slot @i takes socket @fd, as net_slot_open() would but for the slot the
 * source had and the guest still has open. */
static int adopt_conn(struct net *n, uint32_t i, int fd, bool gated)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP |
					    EPOLLET, .data.u32 = i };

	if (n->conns[i].fd >= 0 || epoll_ctl(n->epfd, EPOLL_CTL_ADD, fd, &ev))
		return -EBUSY;
	/* The kernel reports what queued while nobody read at this ADD
	 * (edge-triggered, it checks readiness once now); rx_full reads
	 * anyway. The identity is read again if a TCP_REPAIR handoff ever
	 * needs it. */
	n->conns[i] = (struct net_conn){ .fd = fd, .rx_full = true,
					 .gated = gated };
	atomic_fetch_add(&n->nconns, 1);
	return 0;
}

static int adopt_listener(struct net *n, int fd, bool gated)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = NET_EV_LISTEN };

	if (n->listen_fd >= 0 || epoll_ctl(n->epfd, EPOLL_CTL_ADD, fd, &ev))
		return -EBUSY;
	n->listen_fd = fd;
	n->listen_gated = gated;
	return 0;
}

/**
 * net_fdpass_acquire() - the destination's acquire on an fd handoff: the
 * gate becomes this process's, each socket joins its slot, the listener
 * becomes the device's. Nothing is created and nothing frozen.
 * @n: the device.
 *
 * Return: 0 (a socket whose slot is taken is closed and said on stderr:
 * the guest sees it reset).
 */
int net_fdpass_acquire(struct net *n)
{
	const struct net_fds_state *s = &n->fdp.st;
	uint64_t t0 = vm_now_ns();
	bool gate = false;
	uint32_t ok = 0;

	if (s->gate_map != FDP_NONE) {
		gate = !tcpr_gate_adopt(n->fdp.fds[s->gate_map],
					n->fdp.fds[s->gate_prog]);
		if (!gate) {
			close(n->fdp.fds[s->gate_map]);
			close(n->fdp.fds[s->gate_prog]);
		}
	}
	for (uint32_t k = 0; k < s->nconns; k++) {
		int fd = n->fdp.fds[k];

		/* Without the source's gate, a gated socket's filter still
		 * points at it (open: it passes everything); a TCP_REPAIR
		 * handoff then gives it a filter of its own. */
		if (adopt_conn(n, s->conns[k].slot, fd, gate && s->conns[k].gated)) {
			fprintf(stderr, "ferry-vm: net: slot %u is taken here; "
				"its connection is closed\n", s->conns[k].slot);
			close(fd);
			continue;
		}
		ok++;
	}
	if (s->listener != FDP_NONE &&
	    adopt_listener(n, n->fdp.fds[s->listener], gate && s->listen_gated)) {
		fprintf(stderr, "ferry-vm: net: a listener is open here already; "
			"the source's is closed\n");
		close(n->fdp.fds[s->listener]);
	}
	free(n->fdp.fds);
	n->fdp.fds = NULL;
	n->fdp.nfds = 0;
	n->fdp.received = n->fdp.bound = false;
	atomic_store(&n->handed, ok);
	atomic_store(&n->handoff, NET_HANDOFF_FDS);
	atomic_store(&n->where, NET_WHERE_HERE);
	fprintf(stderr, "ferry-vm: net: %u of %u connections taken over by fd "
		"in %.3f ms (%s, gate %s)\n", ok, s->nconns,
		(double)(vm_now_ns() - t0) / 1e6,
		s->listener != FDP_NONE ? "and the listener" : "no listener",
		gate ? "adopted" : s->gate_map != FDP_NONE ? "not adopted" : "none");
	return 0;
}

/**
 * net_fdpass_discard() - an attempt failed before the guest ran here:
 * close the descriptors the source passed (it still holds its own, so the
 * connections notice nothing).
 * @n: the device (NULL: nothing).
 */
void net_fdpass_discard(struct net *n)
{
	if (!n)
		return;
	for (uint32_t k = 0; k < n->fdp.nfds; k++)
		close(n->fdp.fds[k]);
	free(n->fdp.fds);
	n->fdp.fds = NULL;
	n->fdp.nfds = 0;
	n->fdp.received = n->fdp.bound = false;
}

/**
 * net_fdpass_pending() - does the destination's acquire go by fd?
 * @n: the device (NULL: no).
 *
 * Return: true once load_state bound the passed descriptors.
 */
bool net_fdpass_pending(const struct net *n)
{
	return n && n->fdp.bound;
}

/**
 * net_fdpass_active() - is the source's handoff under way by fd?
 * @n: the device (NULL: no).
 *
 * Return: true from a pause that chose it to the end of the migration.
 */
bool net_fdpass_active(const struct net *n)
{
	return n && n->fdp.active;
}

/**
 * net_note_repair() - the last handoff went by TCP_REPAIR (the report's
 * "handoff").
 * @n: the device (NULL: nothing).
 */
void net_note_repair(struct net *n)
{
	if (n)
		atomic_store(&n->handoff, NET_HANDOFF_REPAIR);
}

/**
 * net_fdpass_arrived() - the guest runs here after an fd handoff: the
 * sockets made ahead for a TCP_REPAIR one (--net-prepare) are not needed,
 * and close now, out of the pause.
 * @n: the device (NULL: nothing).
 */
void net_fdpass_arrived(struct net *n)
{
	if (n && atomic_load(&n->handoff) == NET_HANDOFF_FDS)
		net_pool_stop(n);
}
