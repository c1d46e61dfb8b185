// SPDX-License-Identifier: MIT
/*
 * net_par.c - the helper threads that share the handoff's per-connection
 * work (freeze, dump, release, restore, thaw: a few system calls each,
 * and with a thousand connections they are the downtime).
 *
 * The threads are made before the pause (net_par_start(): when a source's
 * migration starts, when a destination starts waiting), one per online
 * CPU beside the caller's, and then wait on a condition variable: a
 * thread made in the pause cost a create and a join per step, which
 * under load took milliseconds.
 *
 * The caller works on the items too, and takes them a chunk at a time
 * from a counter the helpers share: a helper that the scheduler wakes
 * late finds the work done instead of being waited for, so a busy host
 * costs at most one chunk's wait.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "net_int.h"

/* Items a thread takes at once: a few tens of microseconds of system
 * calls, so that a late helper delays the caller by that much at most. */
#define PAR_CHUNK 16

/**
 * net_cpu_ns() - this thread's CPU time: under load the wall clock of a
 * step says more about the other jobs on the host than about the step.
 * Read once per thread and step, not per item: the clock is a system call
 * (not in the vDSO).
 *
 * Return: the calling thread's CPU time in ns.
 */
uint64_t net_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Claim the next chunk of job @gen: its first item, or -1 when the job is
 * done or another one replaced it. The claim counter carries the job's
 * generation in its high half, so a helper that slept through a job never
 * takes an item of the next one with the old one's function. */
static int64_t par_claim(struct net_par *p, uint32_t gen, uint32_t count)
{
	uint64_t v = atomic_load(&p->next);

	for (;;) {
		uint32_t k = (uint32_t)v;

		if ((uint32_t)(v >> 32) != gen || k >= count)
			return -1;
		if (atomic_compare_exchange_weak(&p->next, &v, v + PAR_CHUNK))
			return k;
	}
}

/* Work on job @gen until no chunk is left. A helper (@helper) adds its
 * CPU time to the job's chunk by chunk, before the chunk counts as done:
 * the caller, which returns once every item is done, then has it all. */
static void par_work(struct net_par *p, struct net *n, uint32_t gen,
		     void (*fn)(struct net *, void *, uint32_t), void *arg,
		     uint32_t count, bool helper)
{
	uint64_t t = helper ? net_cpu_ns() : 0, now;
	int64_t k;

	while ((k = par_claim(p, gen, count)) >= 0) {
		uint32_t end = (uint32_t)k + PAR_CHUNK;

		if (end > count)
			end = count;
		for (uint32_t i = (uint32_t)k; i < end; i++)
			fn(n, arg, i);
		if (helper) {
			now = net_cpu_ns();
			atomic_fetch_add(&p->spent_ns, now - t);
			t = now;
		}
		atomic_fetch_add(&p->done, end - (uint32_t)k);
	}
}

/* After a job that another follows at once (the freeze, then the dump;
 * a wake, then the staging) a helper stays awake this long before it
 * sleeps: one that sleeps is woken a hundred microseconds or more later
 * (a halted CPU, on a guest host). It yields meanwhile, so that any
 * other thread of the host runs first; after other jobs it sleeps at
 * once, since the other process of a pair on one host may want the CPU
 * (the destination decoding, the source releasing). */
#define PAR_SPIN_NS 300000ull

/* Called and returns with p->lock held. */
static void par_spin(struct net_par *p, uint32_t seen)
{
	uint64_t end = vm_now_ns() + PAR_SPIN_NS;

	pthread_mutex_unlock(&p->lock);
	while (__atomic_load_n(&p->gen, __ATOMIC_ACQUIRE) == seen &&
	       !__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE) &&
	       vm_now_ns() < end)
		sched_yield();
	pthread_mutex_lock(&p->lock);
}

static void *par_main(void *arg)
{
	struct net *n = arg;
	struct net_par *p = &n->par;
	uint32_t seen = 0;
	bool more = false;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		void (*fn)(struct net *, void *, uint32_t);
		uint32_t gen, count;
		void *fa;

		if (more && !p->stop && p->gen == seen)
			par_spin(p, seen);
		while (!p->stop && p->gen == seen)
			pthread_cond_wait(&p->cond, &p->lock);
		if (p->stop)
			break;
		seen = gen = p->gen;
		fn = p->fn;
		fa = p->arg;
		count = p->count;
		more = p->more;
		pthread_mutex_unlock(&p->lock);
		par_work(p, n, gen, fn, fa, count, true);
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/**
 * net_par_start() - make the helper threads, ahead of any pause: one per
 * online CPU beside the caller's (NET_PAR_MAX in all at most); none on a
 * single CPU. Idempotent; a thread that cannot be made leaves fewer.
 * @n: the device (NULL: nothing).
 */
void net_par_start(struct net *n)
{
	struct net_par *p = n ? &n->par : NULL;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	if (!p || p->started)
		return;
	p->started = true;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	if (cpus > NET_PAR_MAX)
		cpus = NET_PAR_MAX;
	for (long i = 1; i < cpus; i++) {
		if (pthread_create(&p->thread[p->nthreads], NULL, par_main, n))
			break;
		p->nthreads++;
	}
}

/**
 * net_par_stop() - end the helper threads (the device goes).
 * @n: the device (NULL: nothing).
 */
void net_par_stop(struct net *n)
{
	struct net_par *p = n ? &n->par : NULL;

	if (!p || !p->started)
		return;
	pthread_mutex_lock(&p->lock);
	__atomic_store_n(&p->stop, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (uint32_t i = 0; i < p->nthreads; i++)
		pthread_join(p->thread[i], NULL);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	p->nthreads = 0;
	p->started = false;
}

/* Post a job: the helpers start on it. */
static void par_post(struct net_par *p, uint32_t count,
		     void (*fn)(struct net *n, void *arg, uint32_t k),
		     void *arg, bool more)
{
	pthread_mutex_lock(&p->lock);
	p->more = more;
	p->fn = fn;
	p->arg = arg;
	p->count = count;
	atomic_store(&p->done, 0);
	atomic_store(&p->spent_ns, 0);
	atomic_store(&p->next, (uint64_t)(p->gen + 1) << 32);
	/* Last: a spinning helper reads it without the lock. */
	__atomic_store_n(&p->gen, p->gen + 1, __ATOMIC_RELEASE);
	p->posted = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

/* The caller takes what is left of the posted job, waits for the chunks
 * the helpers have in hand, and returns their CPU time. */
static uint64_t par_finish(struct net *n)
{
	struct net_par *p = &n->par;

	par_work(p, n, p->gen, p->fn, p->arg, p->count, false);
	while (atomic_load(&p->done) < p->count)
		sched_yield();
	p->posted = false;
	return atomic_load(&p->spent_ns);
}

/**
 * net_par_run() - @fn on items [0, @count), shared with the helper threads
 * from NET_PAR_MIN items on. @fn must be safe on different items at once
 * (each works on its own slot and socket). The caller's thread only.
 * @n: the device.
 * @count: how many items.
 * @fn: the work of one item.
 * @arg: passed to @fn.
 * @more: another step follows at once (the helpers stay awake a moment).
 *
 * Return: the CPU time all threads spent on the items.
 */
uint64_t net_par_run(struct net *n, uint32_t count,
		     void (*fn)(struct net *n, void *arg, uint32_t k),
		     void *arg, bool more)
{
	struct net_par *p = &n->par;
	uint64_t t = net_cpu_ns(), helpers;

	/* A background job still under way ends first (its items are
	 * never dropped: its owner stops them with its own flag). */
	net_par_finish(n);
	if (count < NET_PAR_MIN || !p->nthreads) {
		for (uint32_t k = 0; k < count; k++)
			fn(n, arg, k);
		return net_cpu_ns() - t;
	}
	par_post(p, count, fn, arg, more);
	helpers = par_finish(n);
	return net_cpu_ns() - t + helpers;
}

/**
 * net_par_post() - give the helper threads @fn on items [0, @count) and
 * return at once: work in the background (a destination's staging, while
 * it says "ready"), which net_par_finish() ends. @fn must be safe on
 * different items at once, and should return at once when told to stop
 * (the caller's own flag), since the caller finishes the items no helper
 * took.
 * @n: the device.
 * @count: how many items.
 * @fn: the work of one item.
 * @arg: passed to @fn.
 *
 * Return: true when posted; false without helper threads (nothing done).
 */
bool net_par_post(struct net *n, uint32_t count,
		  void (*fn)(struct net *n, void *arg, uint32_t k), void *arg)
{
	struct net_par *p = &n->par;

	if (!p->nthreads || !count)
		return false;
	par_post(p, count, fn, arg, false);
	return true;
}

/* A job with no item: wakes the helpers, which find nothing to do. */
static void par_none(struct net *n, void *arg, uint32_t k)
{
	(void)n;
	(void)arg;
	(void)k;
}

/**
 * net_par_wake() - wake the helper threads ahead of work that is coming
 * (a destination about to decode the dumps it will stage): they find
 * nothing to do and stay awake PAR_SPIN_NS, so that the work starts at
 * once instead of after a wake-up, which under load took longer than
 * the source's release of a few dozen connections (nothing was staged).
 * @n: the device (NULL: nothing).
 */
void net_par_wake(struct net *n)
{
	if (!n || !n->par.nthreads || n->par.posted)
		return;
	par_post(&n->par, 0, par_none, NULL, true);
	n->par.posted = false; /* nothing to finish */
}

/**
 * net_par_finish() - end the job net_par_post() gave the helpers: the
 * caller works on the items no helper took (stop them first if they are
 * not wanted any more) and waits for the chunks the helpers have in hand.
 * Nothing when no job is under way.
 * @n: the device.
 */
void net_par_finish(struct net *n)
{
	if (n->par.posted)
		par_finish(n);
}
