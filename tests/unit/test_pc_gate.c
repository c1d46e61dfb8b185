// SPDX-License-Identifier: MIT
/*
 * test_pc_gate.c - the gate where the source's postcopy push gives way to
 * the answers of page requests (src/migrate/pc_gate.c): a pusher passes
 * at once when nothing is outstanding, waits while a request is answered
 * and for the grace after, and still goes on: one wait is bounded, the
 * share of its time spent waiting is bounded, and the end of the phase
 * releases it at once. Real threads and clocks; the bounds leave room for
 * a loaded machine.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "migrate/pc_gate.h"

#define MS 1000000ull

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* A pusher that pushed for a while already (its share of waiting is
 * counted from its first pass). */
static void pushed_for(struct fy_pc_gate *g, struct fy_pc_pass *ps,
		       unsigned ms)
{
	assert_int_equal(fy_pc_gate_pass(g, ps), 0);
	sleep_ms(ms);
}

static void test_clear_gate_passes(void **state)
{
	struct fy_pc_gate g;
	struct fy_pc_pass ps = { 0 };

	(void)state;
	fy_pc_gate_init(&g, 100 * MS, 10 * MS, 2);
	pushed_for(&g, &ps, 50);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(fy_pc_gate_pass(&g, &ps), 0);
	/* A request answered long ago holds nobody. */
	fy_pc_gate_enter(&g);
	fy_pc_gate_leave(&g);
	sleep_ms(20);
	assert_int_equal(fy_pc_gate_pass(&g, &ps), 0);
	assert_int_equal(ps.waited_ns, 0);
	fy_pc_gate_destroy(&g);
}

struct answerer {
	struct fy_pc_gate *g;
	unsigned after_ms;
	bool open; /* end the phase instead of answering */
	atomic_ullong t_done;
};

static void *answer_later(void *arg)
{
	struct answerer *a = arg;

	sleep_ms(a->after_ms);
	atomic_store(&a->t_done, now_ns());
	if (a->open)
		fy_pc_gate_open(a->g);
	else
		fy_pc_gate_leave(a->g);
	return NULL;
}

/* The push waits while a request is outstanding, and for the grace after
 * its answer; then it goes on. */
static void test_push_waits_for_the_answer(void **state)
{
	const uint64_t grace = 20 * MS;
	struct fy_pc_gate g;
	struct fy_pc_pass ps = { 0 };
	struct answerer a = { .g = &g, .after_ms = 50 };
	pthread_t t;
	uint64_t waited, t_back;

	(void)state;
	fy_pc_gate_init(&g, 10000 * MS, grace, 2);
	pushed_for(&g, &ps, 1000); /* a budget of 500 ms */
	fy_pc_gate_enter(&g);
	assert_int_equal(pthread_create(&t, NULL, answer_later, &a), 0);
	waited = fy_pc_gate_pass(&g, &ps);
	t_back = now_ns();
	pthread_join(t, NULL);
	/* Not before the answer and its grace. */
	assert_true(atomic_load(&a.t_done) != 0);
	assert_true(t_back >= atomic_load(&a.t_done) + grace);
	assert_true(waited >= 50 * MS);
	assert_true(waited < 500 * MS + 50 * MS);
	assert_int_equal(atomic_load(&g.waits), 1);
	/* Clear again: no wait. */
	assert_int_equal(fy_pc_gate_pass(&g, &ps), 0);
	fy_pc_gate_destroy(&g);
}

/* A request never answered (a stuck reader) holds the push for one
 * max_wait at most. */
static void test_one_wait_is_bounded(void **state)
{
	struct fy_pc_gate g;
	struct fy_pc_pass ps = { 0 };
	uint64_t waited;

	(void)state;
	fy_pc_gate_init(&g, 40 * MS, 1 * MS, 2);
	pushed_for(&g, &ps, 400);
	fy_pc_gate_enter(&g);
	waited = fy_pc_gate_pass(&g, &ps);
	assert_true(waited >= 40 * MS);
	assert_true(waited < 2000 * MS);
	fy_pc_gate_destroy(&g);
}

/* Requests without end (a guest that faults all the time): the push
 * still makes progress and waits no more than its share of the time. */
static void test_push_keeps_its_share(void **state)
{
	const unsigned share = 4;
	struct fy_pc_gate g;
	struct fy_pc_pass ps = { 0 };
	uint64_t t0, elapsed;
	unsigned records = 0;

	(void)state;
	fy_pc_gate_init(&g, 20 * MS, 1 * MS, share);
	t0 = now_ns();
	fy_pc_gate_enter(&g); /* outstanding from the start, for good */
	while (now_ns() - t0 < 1000 * MS) {
		fy_pc_gate_pass(&g, &ps);
		records++;
		sleep_ms(1); /* one record's write */
	}
	elapsed = now_ns() - t0;
	assert_true(ps.waited_ns > 0);
	/* Waited / elapsed <= 1 / share, give or take one late wake-up. */
	assert_true(ps.waited_ns <= elapsed / share + 50 * MS);
	assert_true(records >= 100);
	fy_pc_gate_destroy(&g);
}

/* The phase ends (POSTCOPY_END answered, a failure): a waiting pusher
 * is released at once, and none waits after. */
static void test_open_releases_the_push(void **state)
{
	struct fy_pc_gate g;
	struct fy_pc_pass ps = { 0 };
	struct answerer a = { .g = &g, .after_ms = 30, .open = true };
	pthread_t t;
	uint64_t waited;

	(void)state;
	fy_pc_gate_init(&g, 10000 * MS, 1 * MS, 2);
	pushed_for(&g, &ps, 1000);
	fy_pc_gate_enter(&g);
	assert_int_equal(pthread_create(&t, NULL, answer_later, &a), 0);
	waited = fy_pc_gate_pass(&g, &ps);
	pthread_join(t, NULL);
	assert_true(waited >= 30 * MS);
	assert_true(waited < 450 * MS);
	assert_int_equal(fy_pc_gate_pass(&g, &ps), 0);
	/* A new phase: the gate works again. */
	fy_pc_gate_reset(&g);
	fy_pc_gate_enter(&g);
	assert_true(fy_pc_gate_pass(&g, &ps) > 0);
	fy_pc_gate_destroy(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clear_gate_passes),
		cmocka_unit_test(test_push_waits_for_the_answer),
		cmocka_unit_test(test_one_wait_is_bounded),
		cmocka_unit_test(test_push_keeps_its_share),
		cmocka_unit_test(test_open_releases_the_push),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
