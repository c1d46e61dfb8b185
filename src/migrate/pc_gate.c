// SPDX-License-Identifier: MIT
/*
 * pc_gate.c - the source's postcopy push gives way to the answers of page
 * requests. A vCPU at the destination waits for each answer, and on a
 * host with few cores the push's threads and the lane's share a CPU: a
 * lane thread woken while a pusher is inside a long write waits until
 * the write returns (a kernel without preemption inside system calls).
 * So while a request is being answered, and for a short grace after
 * (the destination reads and places the answer meanwhile), a pusher
 * starts no record. Each wait is bounded, and so is the share of its
 * time a pusher spends waiting: the push always finishes, at worst a
 * fixed fraction later (docs/design-notes.md, "Postcopy's urgent lane,
 * measured").
 */
#include <errno.h>
#include <time.h>

#include "migrate/pc_gate.h"

static uint64_t gate_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/**
 * fy_pc_gate_init() - an open gate with nothing outstanding.
 * @g: the gate.
 * @max_wait_ns: one wait lasts at most this long.
 * @grace_ns: how long after an answer the push still waits.
 * @share: a pusher waits at most 1/@share of its time (>= 2).
 */
void fy_pc_gate_init(struct fy_pc_gate *g, uint64_t max_wait_ns,
		     uint64_t grace_ns, unsigned share)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&g->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g->cv, &ca);
	pthread_condattr_destroy(&ca);
	atomic_init(&g->urgent, 0);
	atomic_init(&g->clear_at, 0);
	atomic_init(&g->open, false);
	atomic_init(&g->waits, 0);
	atomic_init(&g->waited_ns, 0);
	g->max_wait_ns = max_wait_ns;
	g->grace_ns = grace_ns;
	g->share = share < 2 ? 2 : share;
}

/**
 * fy_pc_gate_destroy() - release the gate; nobody may wait at it.
 * @g: the gate.
 */
void fy_pc_gate_destroy(struct fy_pc_gate *g)
{
	pthread_cond_destroy(&g->cv);
	pthread_mutex_destroy(&g->lock);
}

/**
 * fy_pc_gate_reset() - a new phase (after a recovery): nothing is
 * outstanding, the gate works again after fy_pc_gate_open(). Only while
 * no thread uses the gate.
 * @g: the gate.
 */
void fy_pc_gate_reset(struct fy_pc_gate *g)
{
	atomic_store(&g->urgent, 0);
	atomic_store(&g->clear_at, 0);
	atomic_store(&g->open, false);
}

/**
 * fy_pc_gate_enter() - a request arrived: pushers wait from their next
 * record on. Lock-free: the reader must not wait for a pusher.
 * @g: the gate.
 */
void fy_pc_gate_enter(struct fy_pc_gate *g)
{
	atomic_fetch_add(&g->urgent, 1);
}

/**
 * fy_pc_gate_leave() - the request that fy_pc_gate_enter() announced is
 * answered; the grace starts. Waiting pushers are woken when it ends
 * (they time their wait), not here: waking them now would put them on
 * the CPU the answer's reader needs.
 * @g: the gate.
 */
void fy_pc_gate_leave(struct fy_pc_gate *g)
{
	atomic_store(&g->clear_at, gate_now() + g->grace_ns);
	atomic_fetch_sub(&g->urgent, 1);
}

/**
 * fy_pc_gate_open() - the phase ends or fails: every wait ends now and
 * no new one starts until fy_pc_gate_init().
 * @g: the gate.
 */
void fy_pc_gate_open(struct fy_pc_gate *g)
{
	pthread_mutex_lock(&g->lock);
	atomic_store(&g->open, true);
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->lock);
}

/* When the push may go on: never while a request is outstanding, else
 * at the end of the last answer's grace. */
static bool gate_clear(struct fy_pc_gate *g, uint64_t now, uint64_t *until)
{
	*until = atomic_load(&g->clear_at);
	return !atomic_load(&g->urgent) && now >= *until;
}

/**
 * fy_pc_gate_pass() - a pusher is about to send a record: return at once
 * when no request is outstanding and the last answer's grace is over,
 * else wait until then, but no longer than max_wait_ns and only while
 * this pusher's waits stay within 1/share of its time since its first
 * pass.
 * @g: the gate.
 * @ps: the pusher's account (zeroed before its first pass).
 *
 * Return: the nanoseconds waited (0 when the gate was clear).
 */
uint64_t fy_pc_gate_pass(struct fy_pc_gate *g, struct fy_pc_pass *ps)
{
	uint64_t now = gate_now(), until, deadline, budget, t0;
	struct timespec ts;

	if (!ps->t_start)
		ps->t_start = now;
	if (gate_clear(g, now, &until) || atomic_load(&g->open))
		return 0;
	/* Waited / elapsed <= 1 / share, counting this wait. */
	budget = (now - ps->t_start) / g->share;
	if (budget <= ps->waited_ns)
		return 0;
	budget -= ps->waited_ns;
	deadline = now + (budget < g->max_wait_ns ? budget : g->max_wait_ns);
	t0 = now;
	pthread_mutex_lock(&g->lock);
	while (!atomic_load(&g->open) && !gate_clear(g, now, &until) &&
	       now < deadline) {
		uint64_t wake = deadline;

		/* A grace ends on its own; an outstanding request is
		 * checked again within 50 us (its answer wakes nobody). */
		if (!atomic_load(&g->urgent) && until < wake)
			wake = until;
		else if (now + 50000 < wake)
			wake = now + 50000;
		ts.tv_sec = (time_t)(wake / 1000000000ull);
		ts.tv_nsec = (long)(wake % 1000000000ull);
		pthread_cond_timedwait(&g->cv, &g->lock, &ts);
		now = gate_now();
	}
	pthread_mutex_unlock(&g->lock);
	ps->waited_ns += now - t0;
	atomic_fetch_add(&g->waits, 1);
	atomic_fetch_add(&g->waited_ns, now - t0);
	return now - t0;
}
