/* SPDX-License-Identifier: MIT */
/*
 * pc_gate.h - where the source's postcopy push gives way to the answers
 * of page requests (pc_gate.c).
 */
#ifndef FY_PC_GATE_H
#define FY_PC_GATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* How long one wait of the push lasts at most. */
#define FY_PC_GATE_MAX_WAIT_NS 1000000ull
/* How long the push keeps waiting after an answer went out: the
 * destination reads and places it meanwhile, on the lane's CPU. */
#define FY_PC_GATE_GRACE_NS 100000ull
/* The push waits at most this share of its time (1/8): it keeps 7/8 of
 * its speed whatever the guest asks for. */
#define FY_PC_GATE_SHARE 8

/**
 * struct fy_pc_gate - the gate. The request reader calls
 * fy_pc_gate_enter() when a request arrives and fy_pc_gate_leave() once
 * it is answered; each pusher calls fy_pc_gate_pass() before a record.
 * Thread-safe; one reader and any number of pushers.
 */
struct fy_pc_gate {
	pthread_mutex_t lock;
	pthread_cond_t cv;	/* CLOCK_MONOTONIC */
	atomic_uint urgent;	/* requests read, not yet answered */
	atomic_ullong clear_at; /* ns: the last answer's grace ends */
	atomic_bool open;	/* the phase ends: nobody waits */
	uint64_t max_wait_ns, grace_ns;
	unsigned share;
	atomic_ullong waits, waited_ns; /* over every pusher */
};

/**
 * struct fy_pc_pass - one pusher's account at the gate.
 * @t_start: its first pass (ns, CLOCK_MONOTONIC), 0 before.
 * @waited_ns: what it waited in all.
 */
struct fy_pc_pass {
	uint64_t t_start, waited_ns;
};

void fy_pc_gate_init(struct fy_pc_gate *g, uint64_t max_wait_ns,
		     uint64_t grace_ns, unsigned share);
void fy_pc_gate_destroy(struct fy_pc_gate *g);
void fy_pc_gate_reset(struct fy_pc_gate *g);
void fy_pc_gate_enter(struct fy_pc_gate *g);
void fy_pc_gate_leave(struct fy_pc_gate *g);
void fy_pc_gate_open(struct fy_pc_gate *g);
uint64_t fy_pc_gate_pass(struct fy_pc_gate *g, struct fy_pc_pass *ps);

#endif
