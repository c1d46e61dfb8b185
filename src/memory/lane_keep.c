// SPDX-License-Identifier: MIT
/*
 * lane_keep.c - keep postcopy's lane CPU from halting between the events
 * of a page request (ferry_config.lane_poll_us).
 *
 * On a virtual machine a halted vCPU is the host's to run again, and on
 * a quiet machine that wake-up, not the work, is most of a sparse
 * fault's wait (docs/design-notes.md, "Postcopy's urgent lane,
 * measured"). The keeper is a thread of the idle class (SCHED_IDLE) kept
 * to the lane's CPU that runs a busy loop for a window after each event
 * and sleeps on a futex otherwise. It runs only when nothing else wants
 * the CPU, and any woken thread of the ordinary class preempts it at
 * once, so it delays no thread: the lane's own threads keep their
 * blocking waits and their wake-up preemption, and a wake-up on that CPU
 * finds it running instead of halted. Polling in the lane's threads
 * instead was measured and dropped (design-notes): a polling thread is
 * runnable, not woken, so it loses the preemption its short slice buys.
 */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "memory/lazy.h"

struct fy_lane_keeper {
	pthread_t thread;
	int cpu;		 /* -1: any */
	uint64_t window_ns;
	_Atomic uint64_t last_ns; /* the last event */
	_Atomic uint32_t asleep;  /* futex word: 1 while the keeper sleeps */
	atomic_bool stop;
	uint64_t cpu_ns;	 /* its CPU time, written when it ends */
	uint64_t windows;	 /* times it woke to keep the CPU */
};

static uint64_t keep_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void keep_wait(_Atomic uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0);
}

static void keep_wake(_Atomic uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Whether the window after the last event is still open. */
static bool keep_open(struct fy_lane_keeper *k)
{
	return keep_now() < atomic_load(&k->last_ns) + k->window_ns;
}

static void *keep_main(void *arg)
{
	struct fy_lane_keeper *k = arg;
	struct sched_param sp = { 0 };
	cpu_set_t one;

	if (k->cpu >= 0 && k->cpu < CPU_SETSIZE) {
		CPU_ZERO(&one);
		CPU_SET(k->cpu, &one);
		sched_setaffinity(0, sizeof(one), &one);
	}
	/* Lowering the class needs no privilege; if it fails, the keeper
	 * would take CPU time from others: it does not run at all. */
	if (sched_setscheduler(0, SCHED_IDLE, &sp))
		return NULL;
	while (!atomic_load(&k->stop)) {
		if (keep_open(k))
			continue; /* the busy loop: the CPU stays awake */
		/* The note stores the time, then reads asleep; this stores
		 * asleep, then reads the time: one sees the other. */
		atomic_store(&k->asleep, 1);
		if (keep_open(k) || atomic_load(&k->stop)) {
			atomic_store(&k->asleep, 0);
			continue;
		}
		keep_wait(&k->asleep);
		atomic_store(&k->asleep, 0);
		k->windows += !atomic_load(&k->stop);
	}
	k->cpu_ns = fy_thread_cpu_ns();
	return NULL;
}

/**
 * fy_lane_keeper_start() - see lazy.h.
 */
int fy_lane_keeper_start(struct fy_lane_keeper **out, int cpu,
			 uint64_t window_ns)
{
	struct fy_lane_keeper *k;

	*out = NULL;
	if (!window_ns)
		return 0;
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->cpu = cpu;
	k->window_ns = window_ns;
	if (pthread_create(&k->thread, NULL, keep_main, k)) {
		free(k);
		return -EAGAIN;
	}
	*out = k;
	return 0;
}

/**
 * fy_lane_keeper_note() - see lazy.h.
 */
void fy_lane_keeper_note(struct fy_lane_keeper *k)
{
	if (!k)
		return;
	atomic_store(&k->last_ns, keep_now());
	if (atomic_exchange(&k->asleep, 0))
		keep_wake(&k->asleep);
}

/**
 * fy_lane_keeper_stop() - see lazy.h.
 */
void fy_lane_keeper_stop(struct fy_lane_keeper *k, uint64_t *cpu_ns,
			 uint64_t *windows)
{
	if (!k)
		return;
	atomic_store(&k->stop, true);
	atomic_store(&k->asleep, 0);
	keep_wake(&k->asleep);
	pthread_join(k->thread, NULL);
	if (cpu_ns)
		*cpu_ns += k->cpu_ns;
	if (windows)
		*windows += k->windows;
	free(k);
}
