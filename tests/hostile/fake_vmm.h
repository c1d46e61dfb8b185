/* SPDX-License-Identifier: MIT */
/*
 * fake_vmm.h - a VMM for tests that attack the destination: one region of
 * guest memory with a canary page on each side (a write just outside the
 * region lands there and is found by fake_vmm_canaries_ok(); a receive
 * into it by the kernel would not fault) and PROT_NONE guard pages beyond
 * the canaries (a write further out faults at the point of the write),
 * and callbacks that count what the engine asked the VMM to do (a hostile
 * stream must never make the destination resume its guest).
 *
 * Shared by tests/hostile (hostile senders) and tests/fuzz (the receiver
 * harness).
 */
#ifndef FERRY_TEST_FAKE_VMM_H
#define FERRY_TEST_FAKE_VMM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry.h"

#define FAKE_PAGE 4096u
#define FAKE_STATE_MAX 4096u

struct fake_vmm {
	uint8_t *map;	/* guard, canary, region, canary, guard pages */
	size_t map_len;
	uint8_t *mem;	/* the region */
	size_t size;
	atomic_int pauses, resumes, loads, acquires, releases, reacquires;
	uint8_t state[FAKE_STATE_MAX]; /* what save_state sends / load got */
	size_t state_len;
	/* What the session said through its log callback since the last
	 * reset (when it fills, it starts over with the new line). */
	pthread_mutex_t log_lock;
	char log[8192];
	size_t log_len;
};

/* Map a @size-byte region (page multiple) between canary and guard
 * pages. 0 or -errno. */
int fake_vmm_init(struct fake_vmm *vm, size_t size);
void fake_vmm_free(struct fake_vmm *vm);
/* Zero the counters and forget the log. */
void fake_vmm_reset_counters(struct fake_vmm *vm);
/* Whether a line of the session's log contains @text. Any thread. */
bool fake_vmm_logged(struct fake_vmm *vm, const char *text);
/*
 * Whether both canary pages still hold their pattern; if not, *@where
 * (when given) is the offset of the first changed byte from the region's
 * start (negative: before it) .
 */
bool fake_vmm_canaries_ok(const struct fake_vmm *vm, long *where);
/* Write the canary pattern again (after a reported overwrite). */
void fake_vmm_canaries_rearm(struct fake_vmm *vm);

/*
 * A session on @vm with one region "ram0" at gpa 0. @source selects a
 * dirty-bitmap source whose guest never writes (deterministic passes).
 * @multi keeps FERRY_CAP_MULTI_CHANNEL offered (when this build has it).
 * Returns NULL on failure.
 */
ferry_session *fake_vmm_session(struct fake_vmm *vm, bool source, bool multi);

/*
 * Report accesses to the guard pages of @vm (and of any fake VMM
 * registered here) as "write outside the region" with @what naming the
 * running test, then exit. Idempotent; @what may change between calls.
 */
void fake_vmm_trap_guards(struct fake_vmm *vm, const char *what);

#endif /* FERRY_TEST_FAKE_VMM_H */
