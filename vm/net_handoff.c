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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "errf.h"
#include "net_int.h"
#include "netaddr.h"
#include "tcprepair.h"

/* From this many connections on, a destination stages their restores
 * (net_stage_start()). */
#define NET_STAGE_MIN 32
/* The events a connection's socket is registered for, with its slot. */
#define CONN_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

/* The slots with a socket, in order; returns how many. */
static uint32_t open_slots(struct net *n, uint32_t *idx)
{
	uint32_t m = 0;

	for (uint32_t i = 0; i < NET_SLOTS; i++)
		if (n->conns[i].fd >= 0)
			idx[m++] = i;
	return m;
}

/* The first of the connections before @i that is in @slot. */
static uint32_t first_in(const struct net_state *s, uint32_t i, uint32_t slot)
{
	uint32_t k = 0;

	while (k < i && s->conns[k].slot != slot)
		k++;
	return k;
}

static int net_state_visit(ferry_visitor *v, void *dev)
{
	struct net_state *s = dev;
	uint64_t seen[(NET_SLOTS + 63) / 64] = { 0 };
	uint32_t n = s->nconns, slot;

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
			slot = s->conns[i].slot;
			/* Two connections in one slot would be restored at
			 * once on two threads, both into the same slot. */
			if (slot >= NET_SLOTS)
				ferry_visit_fail(v, -ERANGE, "connection %u is in slot %u, "
						 "beyond the device's %u", i,
						 slot, NET_SLOTS);
			else if (seen[slot / 64] & (1ull << (slot % 64)))
				ferry_visit_fail(v, -EINVAL, "connection %u is in slot %u, "
						 "which connection %u before it has too",
						 i, slot, first_in(s, i, slot));
			else
				seen[slot / 64] |= 1ull << (slot % 64);
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
	/* Only the first nconns entries ever hold a dump (the save compacts
	 * them, the load fills them in order): clearing all 1,040 wrote 170
	 * KB, page faults included, into both sides' pause (0.5 ms here). */
	for (uint32_t i = 0; i < s->nconns && i < NET_SLOTS; i++)
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

/* ---- read ahead of the pause ---- */

/* A connection foiled by its own traffic this many times is left to the
 * pause (it would have queues to read there anyway). */
#define AHEAD_TRIES 4

/**
 * net_read_ahead() - read ahead, for slot @i's connection, what its dump
 * would read in the pause (tcpr_read_ahead()). The backend's: the socket
 * spends a moment in repair mode, where a write of the backend's would
 * be taken as repair data.
 * @n: the device.
 * @i: an open slot.
 *
 * Return: true when traffic got in the way and it is worth another try.
 */
bool net_read_ahead(struct net *n, uint32_t i)
{
	struct net_conn *c = &n->conns[i];
	int rc;

	if (c->fd < 0 || !c->id_ok || c->id.ahead.seq_ok ||
	    c->ahead_tries >= AHEAD_TRIES)
		return false;
	rc = tcpr_read_ahead(c->fd, &c->id, NULL, 0);
	if (rc == -EAGAIN && ++c->ahead_tries < AHEAD_TRIES)
		return true;
	if (rc)
		c->ahead_tries = AHEAD_TRIES;
	return false;
}

/**
 * net_read_ahead_all() - net_read_ahead() for every connection that lacks
 * it, until a pause asks for the backend: passt's lesson from vhost-user,
 * collect the device state when the migration starts, not in its pause
 * (most connections were read ahead once they had lived 250 ms,
 * net_read_ahead_due(); this is for the younger ones).
 * @n: the device.
 */
void net_read_ahead_all(struct net *n)
{
	unsigned gen = atomic_load(&n->ahead_gen);

	/* Another migration: the connections traffic foiled may be idle
	 * now. */
	if (gen != n->ahead_gen_seen) {
		n->ahead_gen_seen = gen;
		for (uint32_t i = 0; i < NET_SLOTS; i++)
			n->conns[i].ahead_tries = 0;
	}
	for (uint32_t i = 0; i < NET_SLOTS; i++) {
		/* A pause waits for the backend: at most one connection's
		 * moment (a dozen system calls) stands between them. */
		if (__atomic_load_n(&n->pause_req, __ATOMIC_ACQUIRE)) {
			atomic_store(&n->ahead_scan, true);
			return;
		}
		if (net_read_ahead(n, i))
			atomic_store(&n->ahead_scan, true);
	}
}

/* A connection that has lived this long is likely to live on: it is
 * read ahead then, so that the shortest-lived (a request each) never pay
 * for it. */
#define AHEAD_AGE_MS 250
/* How often the backend looks, and how many it reads ahead at once
 * (about 16 us each: a look delays the backend's traffic by 2 ms at
 * most). */
#define AHEAD_EVERY_MS 50
#define AHEAD_BATCH 128

/**
 * net_read_ahead_due() - read ahead the connections that have lived
 * AHEAD_AGE_MS, a batch at a time, so that a migration finds them ready
 * however short its precopy. The backend's, between its events.
 * @n: the device.
 */
void net_read_ahead_due(struct net *n)
{
	uint64_t now = tcpr_clock_ms();
	unsigned done = 0;

	if (now < n->ahead_next_ms)
		return;
	n->ahead_next_ms = now + AHEAD_EVERY_MS;
	n->ahead_more = false;
	for (uint32_t i = 0; i < NET_SLOTS; i++) {
		struct net_conn *c = &n->conns[i];

		if (c->fd < 0 || !c->id_ok || c->id.ahead.seq_ok ||
		    c->ahead_tries >= AHEAD_TRIES ||
		    now - c->born_ms < AHEAD_AGE_MS)
			continue;
		if (done++ == AHEAD_BATCH ||
		    __atomic_load_n(&n->pause_req, __ATOMIC_ACQUIRE)) {
			n->ahead_more = true;
			return;
		}
		net_read_ahead(n, i);
	}
}

/* A migration starts: the backend reads ahead from now on. */
static void read_ahead_start(struct net *n)
{
	uint64_t one = 1;

	atomic_fetch_add(&n->ahead_gen, 1);
	atomic_store(&n->ahead_want, true);
	atomic_store(&n->ahead_scan, true);
	if (write(n->ctl_fd, &one, sizeof(one)) < 0) {
		/* A full counter: the backend is being woken already. */
	}
}

/**
 * net_handoff_check() - before a migration starts: connections can move
 * only with TCP_REPAIR, or on a local migration by fd. With TCP_REPAIR
 * the backend starts reading ahead what their dumps need
 * (net_read_ahead_all()) while precopy runs.
 * @n: the device (NULL: nothing to check).
 * @uri: where the guest goes.
 * @local: a local migration (memory by fd): the sockets go by fd when the
 *         destination takes them (net_fdpass.c), which needs neither
 *         TCP_REPAIR nor a read-ahead; a destination that does not take
 *         them makes the pause dump them, and a pause that cannot freeze
 *         them fails with the guest running on here.
 * @err: receives the reason.
 * @len: size of @err.
 *
 * Return: 0, or -EPERM when there are connections and TCP_REPAIR is not
 * available (the message names it).
 */
int net_handoff_check(struct net *n, const char *uri, bool local, char *err,
		      size_t len)
{
	char why[200] = "";
	unsigned c = n ? atomic_load(&n->nconns) : 0;

	if (!c || !strncmp(uri, "file:", 5) || local)
		return 0;
	if (!tcpr_available(why, sizeof(why))) {
		read_ahead_start(n);
		/* The pause's helpers, made now rather than in it. */
		net_par_start(n);
		return 0;
	}
	snprintf(err, len, "the guest has %u open TCP connection%s, which "
		 "migrate only with TCP_REPAIR: %s", c, c == 1 ? "" : "s", why);
	return -EPERM;
}

/* Thaw one socket: a gated one keeps its filter (the gate opens for all
 * of them at once afterwards). */
static int thaw_fd(struct net_conn *c, char *err, size_t len)
{
	return c->gated ? tcpr_thaw_gated(c->fd, err, len)
			: tcpr_thaw(c->fd, err, len);
}

static void gate_open(struct net *n)
{
	if (n->gate_closed && tcpr_gate_set(false))
		fprintf(stderr, "ferry-vm: net: cannot open the gate: every "
			"socket of this process stays deaf\n");
	else
		n->gate_closed = false;
}

static void thaw_all(struct net *n)
{
	char err[200];

	for (uint32_t i = 0; i < NET_SLOTS; i++) {
		struct net_conn *c = &n->conns[i];

		if (c->fd < 0 || !c->frozen)
			continue;
		if (thaw_fd(c, err, sizeof(err))) {
			fprintf(stderr, "ferry-vm: net: slot %u: %s; the guest "
				"sees it reset\n", i, err);
			net_slot_reset(n, i, true);
			atomic_fetch_add(&n->reset, 1);
		}
		c->frozen = false;
	}
	gate_open(n);
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
struct freeze_job {
	const uint32_t *idx;
	atomic_int rc;
	char err[200]; /* the first failure's, written by its thread alone */
};

static void freeze_one(struct net *n, void *arg, uint32_t k)
{
	struct freeze_job *j = arg;
	struct net_conn *c = &n->conns[j->idx[k]];
	char err[200] = "";
	int rc, none = 0;

	if (atomic_load(&j->rc))
		return; /* one failed: the others are thawed anyway */
	if (c->gated && n->gate_closed) {
		rc = tcpr_freeze_gated(c->fd, err, sizeof(err));
	} else {
		/* A filter of its own replaces the gate, if it had it. */
		rc = tcpr_freeze(c->fd, err, sizeof(err));
		c->gated = false;
	}
	if (!rc)
		c->frozen = true;
	else if (atomic_compare_exchange_strong(&j->rc, &none, rc))
		memcpy(j->err, err, sizeof(err));
}

int net_freeze(struct net *n, char *err, size_t len)
{
	struct freeze_job j = { 0 };
	uint32_t *idx;
	uint64_t t0 = vm_now_ns();
	unsigned queued;
	int rc;

	if (!n || !handing_off(n))
		return 0;
	idx = n->pause_idx;
	j.idx = idx;
	atomic_init(&j.rc, 0);
	/* One map update shuts every gated socket (the listener too: a
	 * handshake that comes now waits for the resume, or for the
	 * destination's listener, instead of being queued here and reset
	 * when the listener closes at release). */
	if (!tcpr_gate_set(true))
		n->gate_closed = true;
	/* What completed its handshake before the gate shut waits in the
	 * listener's queue, and the kernel resets it when the listener
	 * closes at release: it is a connection like the others, so it is
	 * taken now (the backend is parked) and handed over with them. */
	queued = net_accept_queued(n);
	if (queued)
		fprintf(stderr, "ferry-vm: net: %u connection%s accepted from "
			"the listener's queue in the pause\n", queued,
			queued == 1 ? "" : "s");
	n->freeze_cpu_ns = net_par_run(n, open_slots(n, idx), freeze_one, &j,
					 true);
	n->freeze_ns = vm_now_ns() - t0;
	rc = atomic_load(&j.rc);
	if (rc) {
		snprintf(err, len, "%s", j.err);
		thaw_all(n);
	}
	return rc;
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
struct dump_job {
	struct net_state *s;
	int rc[NET_SLOTS];
	atomic_bool why_set; /* why holds the first failure's reason */
	char why[200];
	atomic_uint quick;    /* dumps that took tcpr_dump_quick()'s two calls */
	bool verify;	      /* FERRY_VM_NET_VERIFY=1 */
	atomic_uint differ;   /* quick dumps the full one contradicts */
	char differ_why[200];
};

/* 0 when the quick dump @q restores what @f, the full one of the same
 * frozen socket read at most @ms_apart before, does; else -EPROTO and
 * why. The timestamp of @q may be ahead of @f's by the time between them
 * (and the estimate's few ms), never behind. */
static int dump_cmp(const struct tcpr_conn *q, const struct tcpr_conn *f,
		  uint32_t ms_apart, char *why, size_t len)
{
	int32_t ts = (int32_t)(q->ts_val - f->ts_val);

	if (q->snd_seq != f->snd_seq || q->rcv_seq != f->rcv_seq)
		return vm_errf(why, len, -EPROTO, "port %u: sequences %u/%u, "
			    "the kernel's %u/%u", q->rport, q->snd_seq,
			    q->rcv_seq, f->snd_seq, f->rcv_seq);
	if (q->sndq_len != f->sndq_len || q->rcvq_len != f->rcvq_len ||
	    q->sndq_unsent != f->sndq_unsent)
		return vm_errf(why, len, -EPROTO, "port %u: queues %u/%u, the "
			    "kernel's %u/%u", q->rport, q->sndq_len,
			    q->rcvq_len, f->sndq_len, f->rcvq_len);
	if (q->mss != f->mss || q->snd_wscale != f->snd_wscale ||
	    q->rcv_wscale != f->rcv_wscale || q->sack != f->sack ||
	    q->tstamp != f->tstamp || q->wscale_ok != f->wscale_ok ||
	    memcmp(&q->win, &f->win, sizeof(q->win)))
		return vm_errf(why, len, -EPROTO, "port %u: MSS %u, options or "
			    "window differ from the kernel's (MSS %u)",
			    q->rport, q->mss, f->mss);
	if (f->tstamp && (ts < 0 || ts > (int32_t)ms_apart + 4))
		return vm_errf(why, len, -EPROTO, "port %u: timestamp %u, %d ms "
			    "from the kernel's %u", q->rport, q->ts_val, ts,
			    f->ts_val);
	return 0;
}

/* FERRY_VM_NET_VERIFY=1 (tests): each quick dump is checked against the
 * full one of the same frozen socket, read just before it (@f, read at
 * @full_ms); the quick one is what moves, as without the check. */
static void dump_verify(struct dump_job *j, const struct tcpr_conn *q,
			const struct tcpr_conn *f, uint64_t full_ms)
{
	char why[200] = "";

	if (dump_cmp(q, f, (uint32_t)(tcpr_clock_ms() - full_ms), why,
			  sizeof(why)) &&
	    atomic_fetch_add(&j->differ, 1) == 0)
		snprintf(j->differ_why, sizeof(j->differ_why), "%s", why);
}

/* Dump slot s->conns[k].slot: only what moves when its identity was read
 * as it came, and, with nothing in flight, from TCP_INFO and what was read
 * ahead. */
static void dump_one(struct net *n, void *arg, uint32_t k)
{
	struct dump_job *j = arg;
	struct net_saved *d = &j->s->conns[k];
	struct net_conn *c = &n->conns[d->slot];
	char why[200] = "";
	struct tcpr_conn f = c->id;
	uint64_t t = 0;
	bool quick = false, full = false;

	if (!c->id_ok) {
		j->rc[k] = tcpr_dump(c->fd, &d->c, why, sizeof(why));
		goto out;
	}
	if (j->verify) {
		t = tcpr_clock_ms();
		full = !tcpr_dump_live(c->fd, &f, why, sizeof(why));
	}
	d->c = c->id;
	j->rc[k] = tcpr_dump_quick(c->fd, &d->c, c->rx_read, &quick, why,
				   sizeof(why));
	if (!j->rc[k] && quick) {
		atomic_fetch_add(&j->quick, 1);
		if (full)
			dump_verify(j, &d->c, &f, t);
	}
	if (full)
		tcpr_conn_clear(&f);
out:
	if (j->rc[k] && !atomic_exchange(&j->why_set, true))
		memcpy(j->why, why, sizeof(why));
}

int net_save(struct net *n, struct net_state *s, char *err, size_t len)
{
	static struct dump_job j;
	uint64_t t0 = vm_now_ns();
	unsigned skipped = 0;
	uint64_t dump_cpu;
	uint32_t m = 0;

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
		if (!c->frozen)
			s->reset++;
		else
			s->conns[m++].slot = i;
	}
	j.s = s;
	j.why[0] = 0;
	atomic_init(&j.why_set, false);
	atomic_init(&j.quick, 0);
	atomic_init(&j.differ, 0);
	j.verify = getenv("FERRY_VM_NET_VERIFY") &&
		   !strcmp(getenv("FERRY_VM_NET_VERIFY"), "1");
	dump_cpu = net_par_run(n, m, dump_one, &j, false);
	/* A connection its peer is closing (CLOSE_WAIT, say) is not handed
	 * over: it ends at release, and the guest that arrives sees it
	 * reset. The others still move. */
	for (uint32_t k = 0; k < m; k++) {
		if (j.rc[k]) {
			tcpr_conn_clear(&s->conns[k].c);
			skipped++;
			s->reset++;
			continue;
		}
		n->conns[s->conns[k].slot].carried = true;
		if (s->nconns != k) {
			s->conns[s->nconns] = s->conns[k];
			memset(&s->conns[k].c, 0, sizeof(s->conns[k].c));
		}
		s->nconns++;
	}
	if (skipped)
		fprintf(stderr, "ferry-vm: net: %u connection%s not handed over "
			"(one: %s)\n", skipped, skipped == 1 ? "" : "s",
			j.why);
	if (m)
		fprintf(stderr, "ferry-vm: net: %u connections frozen in %.1f ms, "
			"dumped in %.1f ms (CPU time of all threads: freeze "
			"%.1f ms, dump %.1f ms; %u from what was read ahead)\n",
			s->nconns, (double)n->freeze_ns / 1e6,
			(double)(vm_now_ns() - t0) / 1e6,
			(double)n->freeze_cpu_ns / 1e6,
			(double)dump_cpu / 1e6, atomic_load(&j.quick));
	if (j.verify)
		fprintf(stderr, "ferry-vm: net: verify: %u quick dumps, %u "
			"differ from the full one%s%s\n", atomic_load(&j.quick),
			atomic_load(&j.differ), j.differ_why[0] ? ": " : "",
			j.differ_why);
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

/* A frozen socket leaves the kernel's table of connections (its 4-tuple
 * is the destination's from here) but stays open until the pause is over
 * (net_release_close()): the disconnect is a third of what the close
 * costs, and the close also takes it out of the epoll set. A socket that
 * cannot be disconnected is closed now. */
static void close_one(struct net *n, void *arg, uint32_t k)
{
	struct net_conn *c = &n->conns[((const uint32_t *)arg)[k]];

	if (tcpr_unhash_frozen(c->fd)) {
		tcpr_close_frozen(c->fd);
		n->gone_fd[k] = -1;
	} else {
		n->gone_fd[k] = c->fd;
	}
	c->fd = -1;
	c->frozen = c->carried = false;
}

/**
 * net_release_close() - close the sockets the release disconnected (they
 * are silent: closed and frozen). Before the source's backend runs again
 * (a reacquire, a resume) and once the migration ended, out of its pause.
 * @n: the device (NULL: nothing).
 */
void net_release_close(struct net *n)
{
	if (!n)
		return;
	for (uint32_t k = 0; k < n->ngone; k++)
		tcpr_close_frozen(n->gone_fd[k]);
	n->ngone = 0;
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
	uint64_t t0 = vm_now_ns(), cpu;
	uint32_t *idx;
	char err[200];
	int one = 1;

	if (!n)
		return;
	idx = n->pause_idx;
	net_release_close(n);
	for (uint32_t i = 0; i < NET_SLOTS; i++)
		if (n->conns[i].fd >= 0 && n->conns[i].frozen &&
		    n->conns[i].carried)
			idx[moved++] = i;
	cpu = net_par_run(n, moved, close_one, idx, false);
	n->ngone = moved;
	atomic_fetch_sub(&n->nconns, moved);
	for (uint32_t i = 0; i < NET_SLOTS; i++) {
		struct net_conn *c = &n->conns[i];

		if (c->fd < 0)
			continue;
		if (c->frozen) {
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
	if (moved)
		fprintf(stderr, "ferry-vm: net: %u connections released in %.1f "
			"ms (CPU time of all threads: %.1f ms)\n", moved,
			(double)(vm_now_ns() - t0) / 1e6, (double)cpu / 1e6);
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

/* Put @fd, restored and still frozen, into slot @i (open in guest RAM),
 * with the identity of its dump; @in_ep: staging registered it for the
 * slot already. */
static int attach(struct net *n, uint32_t i, int fd, const struct tcpr_conn *d,
		  bool gated, bool in_ep, uint64_t before_ms)
{
	struct epoll_event ev = { .events = CONN_EVENTS, .data.u32 = i };

	if (n->conns[i].fd >= 0 ||
	    (!in_ep && epoll_ctl(n->epfd, EPOLL_CTL_ADD, fd, &ev)))
		return -EBUSY;
	n->conns[i] = (struct net_conn){ .fd = fd, .rx_full = true,
					 .id_ok = true, .id = *d,
					 .gated = gated };
	n->conns[i].id.sndq = n->conns[i].id.rcvq = NULL;
	n->conns[i].id.sndq_len = n->conns[i].id.rcvq_len = 0;
	n->conns[i].id.sndq_unsent = 0;
	/* What the next handoff would read ahead, it knows already. */
	tcpr_ahead_restored(d, before_ms, &n->conns[i].id.ahead);
	atomic_fetch_add(&n->nconns, 1);
	return 0;
}

/* ---- sockets made ahead (--net-prepare) ---- */

/* The listen address is one a connection's local end can be: not a
 * wildcard, whose connections each have their own local address. */
static bool listen_specific(const struct net *n)
{
	const struct sockaddr_in *a = (const void *)&n->listen_addr;
	const struct sockaddr_in6 *b = (const void *)&n->listen_addr;

	if (n->listen_addr.ss_family == AF_INET)
		return a->sin_addr.s_addr != htonl(INADDR_ANY);
	return n->listen_addr.ss_family == AF_INET6 &&
	       !IN6_IS_ADDR_UNSPECIFIED(&b->sin6_addr);
}

/* Does the dump's local end equal the listen address (a prepared socket
 * is bound there)? */
static bool local_is_listen(const struct net *n, const struct tcpr_conn *c)
{
	const struct sockaddr_in *a = (const void *)&n->listen_addr;
	const struct sockaddr_in6 *b = (const void *)&n->listen_addr;

	if (c->family != n->listen_addr.ss_family)
		return false;
	if (c->family == AF_INET)
		return ntohs(a->sin_port) == c->lport &&
		       !memcmp(&a->sin_addr, c->laddr, 4);
	return ntohs(b->sin6_port) == c->lport &&
	       !memcmp(&b->sin6_addr, c->laddr, 16);
}

/* Room for the sockets made ahead: each takes an fd until a connection
 * takes it over or the takeover closes it, and the destination needs
 * fds of its own meanwhile (the migration's, the listener, fresh sockets
 * for connections on other addresses). */
#define POOL_FD_RESERVE 256

/* How many sockets to make: --net-prepare (every slot by default), as
 * far as the fd limit leaves room. */
static uint32_t pool_size(const struct net *n)
{
	uint32_t want = (uint32_t)n->vm->opts.net_prepare;
	struct rlimit r;

	if (!getrlimit(RLIMIT_NOFILE, &r) && r.rlim_cur != RLIM_INFINITY &&
	    r.rlim_cur < (rlim_t)want + POOL_FD_RESERVE)
		want = r.rlim_cur > POOL_FD_RESERVE
			       ? (uint32_t)(r.rlim_cur - POOL_FD_RESERVE)
			       : 0;
	return want;
}

static void *pool_main(void *arg)
{
	struct net *n = arg;
	uint32_t want = pool_size(n);
	uint64_t t0 = vm_now_ns(), c0 = net_cpu_ns();
	char err[200] = "";
	uint32_t k;
	int fd;

	for (k = 0; k < want && !atomic_load(&n->pool_stop); k++) {
		if (tcpr_prepare_gated(n->listen_addr.ss_family,
				       (const struct sockaddr *)&n->listen_addr,
				       n->listen_len, n->pool_gated, &fd, err,
				       sizeof(err))) {
			fprintf(stderr, "ferry-vm: net: %u of %u sockets made "
				"ahead: %s\n", k, want, err);
			break;
		}
		pthread_mutex_lock(&n->pool_lock);
		n->pool[n->npool++] = fd;
		pthread_mutex_unlock(&n->pool_lock);
	}
	if (getenv("FERRY_VM_TRACE") && !strcmp(getenv("FERRY_VM_TRACE"), "1"))
		fprintf(stderr, "ferry-vm: net: %u of %u sockets made ahead in "
			"%.1f ms (CPU %.1f ms)\n", k, want,
			(double)(vm_now_ns() - t0) / 1e6,
			(double)(net_cpu_ns() - c0) / 1e6);
	return NULL;
}

/**
 * net_pool_start() - on a destination that will listen on an address,
 * make --net-prepare sockets (by default one per slot) for the
 * connections that may come, in a thread of their own while the VM waits:
 * socket, gate, repair mode, the receive queue's selection, TCP_NODELAY
 * and bind are then out of the pause, and a takeover only sets the
 * sequences, connects and restores the options, queues and window. The
 * source needs nothing of it: repair mode forces address reuse, so the
 * binds succeed while the source still listens and owns the connections
 * in the same namespace, and a socket that never connects sends nothing.
 * Each socket costs about 12 us of CPU and an fd (about 1,040 fds and
 * 12 ms for the default, measured in docs/benchmarks.md section 11).
 * @n: the device.
 */
void net_pool_start(struct net *n)
{
	const struct vm_opts *o = &n->vm->opts;

	/* A local destination (--local) takes the source's own sockets by
	 * fd (vm/net_fdpass.c): it would close a prepared pool unused. */
	if (!o->incoming || !strncmp(o->incoming, "file:", 5) || !o->listen ||
	    o->local || !o->net_prepare || !listen_specific(n) || tcpr_available(NULL, 0))
		return;
	n->pool = calloc(o->net_prepare, sizeof(*n->pool));
	if (!n->pool)
		return;
	/* The prepared sockets get the gate (open: they take nothing in
	 * before they connect, and acquire closes it before that), so that
	 * the thaw need not detach a filter from each. */
	n->pool_gated = !tcpr_gate_set(false);
	n->pool_started = !pthread_create(&n->pool_thread, NULL, pool_main, n);
}

/* Stop making the pool and wait for its thread (long done unless the
 * migration came at once: then the connections beyond what it made get
 * fresh sockets, which is cheaper than waiting in the pause). */
static void pool_join(struct net *n)
{
	if (n->pool_started) {
		/* What is made is used; the rest get fresh sockets. */
		atomic_store(&n->pool_stop, true);
		pthread_join(n->pool_thread, NULL);
		n->pool_started = false;
	}
}

/* A prepared socket bound to @c's local end, or -1. */
static int pool_take(struct net *n, const struct tcpr_conn *c)
{
	int fd = -1;

	if (!local_is_listen(n, c))
		return -1;
	pthread_mutex_lock(&n->pool_lock);
	if (n->npool)
		fd = n->pool[--n->npool];
	pthread_mutex_unlock(&n->pool_lock);
	return fd;
}

static void *close_all(void *arg)
{
	int *fds = arg;

	for (int k = 0; fds[k] >= 0; k++)
		close(fds[k]);
	free(fds);
	return NULL;
}

/* The sockets no connection took are closed by a thread of their own, out
 * of the pause (they never connected: closing sends nothing). */
static void pool_leftovers(struct net *n)
{
	pthread_attr_t at;
	pthread_t t;
	int *fds;

	pthread_mutex_lock(&n->pool_lock);
	fds = n->npool ? malloc((n->npool + 1) * sizeof(int)) : NULL;
	if (fds) {
		memcpy(fds, n->pool, n->npool * sizeof(int));
		fds[n->npool] = -1;
		n->npool = 0;
	}
	pthread_mutex_unlock(&n->pool_lock);
	if (!fds)
		return;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &at, close_all, fds))
		close_all(fds);
	pthread_attr_destroy(&at);
}

/**
 * net_pool_stop() - close what is left of the prepared sockets.
 * @n: the device.
 */
void net_pool_stop(struct net *n)
{
	net_stage_stop(n);
	pool_join(n);
	pthread_mutex_lock(&n->pool_lock);
	while (n->npool)
		close(n->pool[--n->npool]);
	pthread_mutex_unlock(&n->pool_lock);
	free(n->pool);
	n->pool = NULL;
}

/* ---- restores staged before the takeover ---- */

static void stage_one(struct net *n, void *arg, uint32_t k)
{
	const struct net_state *s = arg;
	const struct net_saved *d = &s->conns[k];
	struct epoll_event ev = { .events = CONN_EVENTS, .data.u32 = d->slot };
	uint64_t before;
	int fd;

	if (atomic_load(&n->stage_stop) || (fd = pool_take(n, &d->c)) < 0)
		return;
	before = tcpr_clock_ms();
	/* A socket that cannot be staged is gone; the takeover makes the
	 * connection a fresh one. */
	if (tcpr_restore_stage(fd, &d->c, NULL, 0))
		return;
	/* Its slot's epoll entry too, one system call less in the takeover.
	 * The backend stays parked until the resume, and when it runs, its
	 * epoll_wait() reports the socket as it is then (connected), not as
	 * it was here; a staged socket closed unused leaves the set. */
	n->stage_ep[k] = !epoll_ctl(n->epfd, EPOLL_CTL_ADD, fd, &ev);
	n->stage_ms[k] = before;
	n->stage_fd[k] = fd;
}

/**
 * net_stage_start() - a destination has the dumps (load_state): while it
 * says "ready" and the source lets the connections go, a helper thread
 * (net_par.c) sets on the prepared sockets what needs neither the
 * 4-tuple nor the peer (the queues' sequences and the timestamp clock:
 * four system calls of the eight a takeover makes per connection) and
 * registers them in the epoll set, so that acquire connects and sets
 * only options and window. Nothing is sent: the staged sockets are not
 * connected. The helper was made before the pause; a thread made here
 * would cost its creation in it.
 * @n: the device (NULL: nothing).
 */
void net_stage_start(struct net *n)
{
	uint32_t m = n && n->saved ? n->saved->nconns : 0;

	/* A few connections are restored in less time than a helper takes
	 * to wake. */
	if (m < NET_STAGE_MIN || !n->pool)
		return;
	for (uint32_t k = 0; k < m; k++) {
		n->stage_fd[k] = -1;
		n->stage_ep[k] = false;
	}
	n->stage_n = m;
	atomic_store(&n->stage_stop, false);
	if (!net_par_post(n, m, stage_one, n->saved))
		n->stage_n = 0;
}

/* The takeover: the staging ends where it is (a connection it did not
 * reach is restored the whole way). */
static void stage_join(struct net *n)
{
	atomic_store(&n->stage_stop, true);
	net_par_finish(n);
}

/* Connection @k's staged socket, when its clock was set and whether it is
 * in the epoll set, or -1. */
static int stage_take(struct net *n, uint32_t k, uint64_t *ms, bool *in_ep)
{
	int fd;

	if (k >= n->stage_n || n->stage_fd[k] < 0)
		return -1;
	fd = n->stage_fd[k];
	n->stage_fd[k] = -1;
	*ms = n->stage_ms[k];
	*in_ep = n->stage_ep[k];
	return fd;
}

/**
 * net_stage_stop() - drop what was staged (new dumps are coming, or the
 * device goes): the sockets were never connected, closing them is silent.
 * @n: the device (NULL: nothing).
 */
void net_stage_stop(struct net *n)
{
	if (!n)
		return;
	stage_join(n);
	for (uint32_t k = 0; k < n->stage_n; k++)
		if (n->stage_fd[k] >= 0)
			tcpr_discard(n->stage_fd[k]);
	n->stage_n = 0;
}

/**
 * net_stage_expect() - a destination is about to load dumps (load_state):
 * what was staged from older ones goes (net_stage_stop()), and with
 * enough prepared sockets to stage on, a helper is woken now, while the
 * dumps decode, so that it stages at once when they are in.
 * @n: the device (NULL: nothing).
 */
void net_stage_expect(struct net *n)
{
	net_stage_stop(n);
	if (n && n->pool)
		net_par_wake(n);
}

struct acquire_job {
	const struct net_state *s;
	atomic_uint ok;
	atomic_uint staged; /* restores that found their socket staged */
};

static void restore_one(struct net *n, void *arg, uint32_t k)
{
	struct acquire_job *j = arg;
	const struct net_saved *d = &j->s->conns[k];
	char err[256] = "";
	uint64_t before = tcpr_clock_ms();
	int fd = -1, rc;
	bool gated, in_ep = false;

	if ((fd = stage_take(n, k, &before, &in_ep)) >= 0) {
		atomic_fetch_add(&j->staged, 1);
		gated = n->pool_gated;
		rc = tcpr_restore_finish(fd, &d->c, &fd, err, sizeof(err));
	} else if ((fd = pool_take(n, &d->c)) >= 0) {
		gated = n->pool_gated;
		rc = tcpr_restore_prepared(fd, &d->c, &fd, err, sizeof(err));
	} else {
		gated = false;
		rc = tcpr_restore(&d->c, &fd, err, sizeof(err));
	}
	if (!rc && (rc = attach(n, d->slot, fd, &d->c, gated, in_ep, before)))
		snprintf(err, sizeof(err), "slot %u is taken", d->slot);
	if (rc) {
		if (fd >= 0)
			tcpr_discard(fd);
		fprintf(stderr, "ferry-vm: net: slot %u not restored: %s\n",
			d->slot, err);
		/* net_resume() resets it for the guest */
	}
}

/* Restore connection @k into its slot, then thaw it (a listener is open
 * already, so nothing waits for the others). */
static void takeover_one(struct net *n, void *arg, uint32_t k)
{
	struct acquire_job *j = arg;
	uint32_t i = j->s->conns[k].slot;
	char err[256] = "";
	int fd;

	restore_one(n, arg, k);
	if ((fd = n->conns[i].fd) < 0)
		return;
	/* tcpr_thaw() also gives the socket its address reuse back (an
	 * accepted socket had it from its listener); without it the next
	 * connection on the same local port could not bind. The window probe
	 * goes out only where it can matter (tcpr_thaw_restored()). The gate
	 * keeps the socket deaf until every connection is thawed. */
	if (tcpr_thaw_restored(fd, &j->s->conns[k].c, n->conns[i].gated, err,
			       sizeof(err))) {
		fprintf(stderr, "ferry-vm: net: slot %u not restored: %s\n", i,
			err);
		net_conn_drop(n, i, false);
		tcpr_discard(fd);
	} else {
		atomic_fetch_add(&j->ok, 1);
	}
}

/**
 * net_acquire() - take the connections over from the saved dumps (a
 * destination's acquire, a source's reacquire): the address, then the
 * listener, then each connection restored in repair mode in its slot and
 * thawed, the gate opened once all are. A connection that cannot be
 * restored is reset for the guest (and said on stderr); the guest runs
 * anyway. With many connections the helper threads share them.
 * @n: the device (NULL: nothing).
 *
 * Return: 0, or a negative errno when the listener cannot be opened.
 */
int net_acquire(struct net *n)
{
	const struct net_state *s = n ? n->saved : NULL;
	struct acquire_job j = { .s = s };
	uint32_t count = s ? s->nconns : 0;
	uint64_t t0 = vm_now_ns(), t1, cpu;
	char err[256] = "";
	int rc;

	if (!n)
		return 0;
	/* A source taking its connections back: the sockets it let go of
	 * are closed first (their epoll entries point at the slots). */
	net_release_close(n);
	atomic_init(&j.ok, 0);
	atomic_init(&j.staged, 0);
	stage_join(n);
	pool_join(n);
	/* Connected, a prepared socket must take nothing in until it is
	 * thawed: the gate shuts them all (a source that takes its
	 * connections back has it shut since the freeze). */
	if (count && n->pool_gated && !n->gate_closed && !tcpr_gate_set(true))
		n->gate_closed = true;
	if (net_address_add(n, err, sizeof(err)))
		fprintf(stderr, "ferry-vm: net: %s\n", err);
	/* The listener first: a listener that cannot open leaves every
	 * connection to the source (none restored here, none took a byte).
	 * It binds beside the prepared sockets (repair mode forces address
	 * reuse at their binds), and a connection restored on a fresh socket
	 * binds beside it the same way. With the gate shut it drops what
	 * comes for a connection not restored yet, where no socket at all
	 * would answer with a RST. */
	rc = net_listen_open(n, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "ferry-vm: net: %s; the connections go back\n",
			err);
		give_back(n);
		/* The prepared sockets are bound to the guest's port too:
		 * the source that takes the connections back needs it. */
		pool_leftovers(n);
		address_del(n);
		gate_open(n);
		return rc;
	}
	t1 = vm_now_ns();
	/* Each connection restored and thawed in one go: one pass over
	 * them, one wait for the helpers. */
	cpu = net_par_run(n, count, takeover_one, &j, false);
	gate_open(n);
	pool_leftovers(n);
	atomic_store(&n->handed, atomic_load(&j.ok));
	atomic_store(&n->where, NET_WHERE_HERE);
	if (count)
		fprintf(stderr, "ferry-vm: net: %u of %u connections taken over in "
			"%.1f ms (listener %.1f ms, restore and thaw %.1f ms; CPU "
			"time of all threads: %.1f ms; %u staged before)\n",
			atomic_load(&j.ok), count,
			(double)(vm_now_ns() - t0) / 1e6, (double)(t1 - t0) / 1e6,
			(double)(vm_now_ns() - t1) / 1e6, (double)cpu / 1e6,
			atomic_load(&j.staged));
	return 0;
}

/**
 * net_resume_frozen() - a source resumes after a failure before
 * "released": its sockets leave repair mode (the peers saw a stall).
 * @n: the device (NULL: nothing).
 */
void net_resume_frozen(struct net *n)
{
	net_release_close(n);
	if (n)
		thaw_all(n);
}

/**
 * net_outcome() - a source's migration ended: the sockets the release
 * disconnected are closed, new connections are no longer read ahead, and
 * connections released to a destination that never confirmed it runs
 * are lost.
 * @n: the device (NULL: nothing).
 * @rc: the migration's result.
 */
void net_outcome(struct net *n, int rc)
{
	net_release_close(n);
	if (n)
		atomic_store(&n->ahead_want, false);
	if (n && rc && atomic_load(&n->where) == NET_WHERE_AWAY)
		atomic_store(&n->where, NET_WHERE_LOST);
}
