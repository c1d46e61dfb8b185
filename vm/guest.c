// SPDX-License-Identifier: MIT
/*
 * guest.c - the guest of ferry-vm: RAM (a memfd, anonymous THP memory or
 * hugetlb pages, see --memory-backend), vCPU threads running a memory
 * workload, the pause handshake, and the checks that tell whether an image
 * of the guest is consistent.
 *
 * Every workload writes content a checker can recognise after a migration:
 *
 * - ab: each vCPU sweeps its share of pages in order. A page holds a counter
 *   at offset 0 and its own guest address at offset 8. Sweep s turns every
 *   counter from s into s + 1, so a consistent image has s + 1 before the
 *   vCPU's cursor and s from the cursor on.
 * - random: each vCPU rewrites random pages of its share. A written page
 *   carries a checksum, its address, a generation, the vCPU number and a
 *   body derived from (address, generation). A source starts with every
 *   page written once (generation 1), like a guest that has run a while.
 * - fill: the vCPUs fill their share once with pseudo-random data (a
 *   function of the page number), then only tick.
 * - text: like fill, but with text-like content (words of a small built-in
 *   vocabulary drawn with a PRNG seeded by the page number), which
 *   compresses about 2x with lz4 and 3x with zstd, as prose does.
 * - idle: the vCPUs only tick.
 *
 * A tick is one unit of progress: a page step, or a heartbeat (every 1 ms
 * while a paced workload runs, every IDLE_PERIOD_NS when there is nothing
 * to do, and when the vCPU is paused). The gap between the tick at a pause
 * and the first one after is how the guest itself sees the pause.
 *
 * Throttling (auto-converge) works like a hypervisor's: a throttled vCPU
 * runs a THROTTLE_SLICE_NS slice, then is held off for pct/(100-pct) of a
 * slice. A paced workload earns no write credit while held, so its dirty
 * rate drops to (100-pct)% of the configured one, as a CPU-bound guest's
 * would.
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "vm.h"

/* Random-workload page header: checksum, address, generation, vCPU, magic. */
#define RP_HDR 32u
#define RP_MAGIC 0x31475052u /* "RPG1" */
#define FILL_SEED 0x66696c6c5f763121ull
#define TEXT_SEED 0x746578745f763121ull
#define DIGEST_BLOCK (8ull << 20)
/* Unpaced workloads look at the pause flag after every step anyway; this
 * only bounds how long one period runs before the loop comes round. */
#define UNPACED_BATCH 64
#define PAUSE_SPIN_NS 300000ull
#define THROTTLE_SLICE_NS (10 * VM_NS_PER_MS)
/* An idle vCPU wakes this often, as an idle tickless guest's timers do
 * (its console writes a line every 100 ms). A pause wakes it at once, so
 * the stall it reports does not depend on this. Waking every millisecond
 * cost a migration on two cores about 4 % of its CPU time. */
#define IDLE_PERIOD_NS (10 * VM_NS_PER_MS)

/**
 * vm_now_ns() - CLOCK_MONOTONIC in nanoseconds.
 *
 * Return: the current time.
 */
uint64_t vm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const char *const wl_names[] = {
	[VM_WL_AB] = "ab",
	[VM_WL_RANDOM] = "random",
	[VM_WL_FILL] = "fill",
	[VM_WL_IDLE] = "idle",
	[VM_WL_TEXT] = "text",
	[VM_WL_KV] = "kv",
};

/**
 * vm_workload_name() - the command-line name of a workload.
 * @w: the workload.
 *
 * Return: a static string ("ab"), "unknown" for an invalid value.
 */
const char *vm_workload_name(enum vm_workload w)
{
	return vm_name_of(wl_names, sizeof(wl_names) / sizeof(wl_names[0]), w);
}

/**
 * vm_workload_parse() - parse a workload name.
 * @s: the name.
 * @out: receives the workload.
 *
 * Return: 0, or -EINVAL for an unknown name.
 */
int vm_workload_parse(const char *s, enum vm_workload *out)
{
	int v = vm_name_find(wl_names, sizeof(wl_names) / sizeof(wl_names[0]), s);

	if (v < 0)
		return v;
	*out = (enum vm_workload)v;
	return 0;
}

/* --- small helpers ------------------------------------------------------ */

static inline uint64_t wyrand(uint64_t *s)
{
	__uint128_t m;

	*s += 0xa0761d6478bd642full;
	m = (__uint128_t)*s * (*s ^ 0xe7037ed1a0b428dbull);
	return (uint64_t)(m >> 64) ^ (uint64_t)m;
}

/* splitmix64's finaliser: spreads nearby seeds far apart. */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static inline uint8_t *page_ptr(struct guest *g, uint64_t pg)
{
	return g->ram + pg * VM_PAGE_SIZE;
}

static void pattern_fill(uint8_t *dst, size_t len, uint64_t seed)
{
	uint64_t s = seed;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8)
		vm_put_le64(dst + i, wyrand(&s));
}

static bool pattern_check(const uint8_t *p, size_t len, uint64_t seed)
{
	uint64_t s = seed;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		if (vm_get_le64(p + i) != wyrand(&s))
			return false;
	}
	return true;
}

/* The text workload's vocabulary: common English words and some of this
 * project's, all lower case a-z. */
static const char *const text_words[] = {
	"the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as",
	"was", "with", "be", "by", "on", "not", "he", "this", "are", "or",
	"his", "from", "at", "which", "but", "have", "an", "had", "they",
	"you", "were", "their", "one", "all", "we", "can", "her", "has",
	"there", "been", "if", "more", "when", "will", "would", "who", "so",
	"no", "memory", "page", "guest", "host", "migration", "state",
	"device", "pass", "dirty", "copy", "stream", "network", "socket",
	"kernel", "thread", "buffer", "region", "record", "checksum",
	"version", "source", "destination", "pause", "resume", "running",
	"machine", "virtual", "engine", "transfer", "bandwidth", "downtime",
	"time", "people", "year", "way", "day", "thing", "man", "world",
	"life", "hand", "part", "child", "eye", "woman", "place", "work",
	"week", "case", "point", "number", "group", "problem", "fact",
	"about", "into", "over", "after", "other", "than", "then", "them",
	"these", "some", "could", "only", "its", "also", "like", "just",
	"first", "new", "because", "any", "most", "even", "through", "what",
	"where", "while", "should",
};
#define TEXT_NWORDS (sizeof(text_words) / sizeof(text_words[0]))

/* Text from @seed: sentences of 4 to 19 words, capitalised, ending with a
 * full stop and a space or (one in eight) a newline. The last word is cut
 * at the end of @dst. */
static void text_fill(uint8_t *dst, size_t len, uint64_t seed)
{
	uint64_t s = seed, r;
	unsigned left = 0; /* words left in the sentence */
	const char *w;
	char word[24];
	size_t i = 0, n;

	while (i < len) {
		r = wyrand(&s);
		w = text_words[(r & 0xffff) % TEXT_NWORDS];
		n = strlen(w);
		memcpy(word, w, n);
		if (!left) {
			word[0] = (char)(word[0] - 'a' + 'A');
			left = 4 + (unsigned)((r >> 16) % 16);
		}
		if (--left) {
			word[n++] = ' ';
		} else {
			word[n++] = '.';
			word[n++] = (r >> 32) % 8 ? ' ' : '\n';
		}
		if (n > len - i)
			n = len - i;
		memcpy(dst + i, word, n);
		i += n;
	}
}

static bool text_check(const uint8_t *p, size_t len, uint64_t seed)
{
	uint8_t want[VM_PAGE_SIZE];

	if (len > sizeof(want))
		return false;
	text_fill(want, len, seed);
	return !memcmp(p, want, len);
}

static bool all_zero(const uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		if (vm_get_le64(p + i))
			return false;
	}
	return true;
}

static inline bool pause_requested(struct guest *g)
{
	return __atomic_load_n(&g->pause_word, __ATOMIC_RELAXED) != 0;
}

static void futex_wake_all(int *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Sleep until @deadline_ns (CLOCK_MONOTONIC) or until *word != 0. */
static void futex_sleep_until(int *word, uint64_t deadline_ns)
{
	struct timespec ts = {
		.tv_sec = (time_t)(deadline_ns / 1000000000ull),
		.tv_nsec = (long)(deadline_ns % 1000000000ull),
	};

	syscall(SYS_futex, word, FUTEX_WAIT_BITSET_PRIVATE, 0, &ts, NULL,
		FUTEX_BITSET_MATCH_ANY);
}

/* Sleep until @deadline_ns or until *word != @val (or a wake-up). */
static void futex_wait_until(int *word, int val, uint64_t deadline_ns)
{
	struct timespec ts = {
		.tv_sec = (time_t)(deadline_ns / 1000000000ull),
		.tv_nsec = (long)(deadline_ns % 1000000000ull),
	};

	syscall(SYS_futex, word, FUTEX_WAIT_BITSET_PRIVATE, val, &ts, NULL,
		FUTEX_BITSET_MATCH_ANY);
}

/**
 * guest_doorbell() - wake a vCPU that sleeps on the doorbell (the kv
 * workload's): the device has work for it, or a pause wants it parked.
 * @g: the guest.
 */
void guest_doorbell(struct guest *g)
{
	__atomic_add_fetch(&g->doorbell, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, &g->doorbell, FUTEX_WAKE_PRIVATE, INT_MAX, NULL,
		NULL, 0);
}

static inline void mark_dirty(struct guest *g, uint64_t pg)
{
	/* After the store: a scan that clears the bit before this point
	 * will see it set again, so no write is lost. */
	atomic_fetch_or_explicit(&g->dirty[pg >> 6], 1ull << (pg & 63),
				 memory_order_release);
}

/* Before the first write to a page after a migration, while background
 * verification runs: the page as it arrived is hashed and checked first.
 * Otherwise one load: acquire, so that a vCPU that sees the verifier
 * disarmed also sees it done reading every page (on x86 as cheap as a
 * relaxed load). */
static inline void before_write(struct guest *g, uint64_t pg)
{
	if (atomic_load_explicit(&g->verify_armed, memory_order_acquire))
		guest_verifier_page(g, pg);
}

/**
 * guest_write_begin() - before a device or the kv workload writes
 * [@off, @off + @len) of guest RAM: a background verification hashes each
 * page as it arrived first.
 * @g: the guest.
 * @off: the first byte.
 * @len: bytes, at least 1.
 */
void guest_write_begin(struct guest *g, uint64_t off, uint64_t len)
{
	if (!atomic_load_explicit(&g->verify_armed, memory_order_acquire))
		return;
	for (uint64_t pg = off / VM_PAGE_SIZE; pg <= (off + len - 1) / VM_PAGE_SIZE;
	     pg++)
		guest_verifier_page(g, pg);
}

/**
 * guest_write_end() - after writing [@off, @off + @len) of guest RAM: the
 * pages are dirty for the VMM's bitmap.
 * @g: the guest.
 * @off: the first byte.
 * @len: bytes, at least 1.
 */
void guest_write_end(struct guest *g, uint64_t off, uint64_t len)
{
	for (uint64_t pg = off / VM_PAGE_SIZE; pg <= (off + len - 1) / VM_PAGE_SIZE;
	     pg++)
		mark_dirty(g, pg);
}

static inline void check_error(struct guest *g)
{
	atomic_fetch_add_explicit(&g->check_errors, 1, memory_order_relaxed);
}

/* --- page formats ------------------------------------------------------- */

static inline uint64_t fill_seed(uint64_t pg)
{
	return mix64(FILL_SEED ^ pg);
}

static inline uint64_t text_seed(uint64_t pg)
{
	return mix64(TEXT_SEED ^ pg);
}

/* fill and text write every page of the share once, then idle. */
static inline bool fills_once(enum vm_workload w)
{
	return w == VM_WL_FILL || w == VM_WL_TEXT;
}

static void random_page_write(uint8_t *p, uint64_t gpa, uint64_t gen,
			      unsigned vcpu)
{
	vm_put_le64(p + 8, gpa);
	vm_put_le64(p + 16, gen);
	vm_put_le32(p + 24, vcpu);
	vm_put_le32(p + 28, RP_MAGIC);
	pattern_fill(p + RP_HDR, VM_PAGE_SIZE - RP_HDR, mix64(gpa ^ mix64(gen)));
	vm_put_le64(p, XXH3_64bits(p + 8, VM_PAGE_SIZE - 8));
}

/* 0: never written (zero header), 1: valid, -1: bad. */
static int random_page_check(const uint8_t *p, uint64_t gpa, unsigned vcpu,
			     uint64_t max_gen)
{
	uint64_t gen;

	if (all_zero(p, RP_HDR))
		return 0;
	if (vm_get_le64(p + 8) != gpa || vm_get_le32(p + 24) != vcpu ||
	    vm_get_le32(p + 28) != RP_MAGIC)
		return -1;
	gen = vm_get_le64(p + 16);
	if (!gen || gen > max_gen)
		return -1;
	if (vm_get_le64(p) != XXH3_64bits(p + 8, VM_PAGE_SIZE - 8))
		return -1;
	return 1;
}

static bool ab_page_ok(const uint8_t *p, uint64_t gpa, uint64_t expect)
{
	uint64_t cnt = vm_get_le64(p), addr = vm_get_le64(p + 8);

	if (cnt != expect)
		return false;
	return addr == gpa || (cnt == 0 && addr == 0);
}

/* --- workload steps ----------------------------------------------------- */

static void ab_step(struct vcpu *c)
{
	struct guest *g = c->g;
	uint64_t pg = c->first + c->cursor;
	uint8_t *p = page_ptr(g, pg);

	before_write(g, pg);
	if (!ab_page_ok(p, pg * VM_PAGE_SIZE, c->sweep))
		check_error(g);
	vm_put_le64(p, c->sweep + 1);
	vm_put_le64(p + 8, pg * VM_PAGE_SIZE);
	mark_dirty(g, pg);
	if (++c->cursor == c->npages) {
		c->cursor = 0;
		c->sweep++;
	}
}

static void random_step(struct vcpu *c)
{
	struct guest *g = c->g;
	uint64_t pg = c->first +
		      (uint64_t)(((__uint128_t)wyrand(&c->prng) * c->npages) >> 64);
	uint8_t *p = page_ptr(g, pg);

	before_write(g, pg);
	if (random_page_check(p, pg * VM_PAGE_SIZE, c->idx, c->sweep) < 0)
		check_error(g);
	c->sweep++;
	random_page_write(p, pg * VM_PAGE_SIZE, c->sweep, c->idx);
	mark_dirty(g, pg);
}

static void fill_step(struct vcpu *c)
{
	struct guest *g = c->g;
	uint64_t pg = c->first + c->fill_done;

	before_write(g, pg);
	if (g->workload == VM_WL_TEXT)
		text_fill(page_ptr(g, pg), VM_PAGE_SIZE, text_seed(pg));
	else
		pattern_fill(page_ptr(g, pg), VM_PAGE_SIZE, fill_seed(pg));
	mark_dirty(g, pg);
	if (++c->fill_done == c->npages)
		atomic_fetch_sub(&g->fill_pending, 1);
}

static bool vcpu_has_work(const struct vcpu *c)
{
	switch (c->g->workload) {
	case VM_WL_AB:
	case VM_WL_RANDOM:
		return true;
	case VM_WL_FILL:
	case VM_WL_TEXT:
		return c->fill_done < c->npages;
	default:
		return false;
	}
}

static void vcpu_step(struct vcpu *c)
{
	switch (c->g->workload) {
	case VM_WL_AB:
		ab_step(c);
		break;
	case VM_WL_RANDOM:
		random_step(c);
		break;
	case VM_WL_FILL:
	case VM_WL_TEXT:
		fill_step(c);
		break;
	default:
		return;
	}
	atomic_fetch_add_explicit(&c->steps, 1, memory_order_relaxed);
}

/* --- the vCPU thread ---------------------------------------------------- */

static inline void vcpu_tick(struct vcpu *c, uint64_t now)
{
	if (c->last_tick_ns && now > c->last_tick_ns &&
	    now - c->last_tick_ns > c->max_gap_ns)
		c->max_gap_ns = now - c->last_tick_ns;
	c->last_tick_ns = now;
	if (c->await_first) {
		c->await_first = false;
		atomic_store_explicit(&c->stall_ns,
				      c->resume_from_ns && now > c->resume_from_ns ?
					      now - c->resume_from_ns : 0,
				      memory_order_relaxed);
		atomic_store_explicit(&c->first_tick_ns, now,
				      memory_order_release);
	}
}

/* Park until resumed. Returns false when the guest is being stopped. */
static bool vcpu_park(struct vcpu *c)
{
	struct guest *g = c->g;
	uint64_t now;
	bool stop;

	/* The vCPU could run until now, an idle one only waiting for its
	 * next timer: the stall it reports starts here. */
	vcpu_tick(c, vm_now_ns());
	pthread_mutex_lock(&g->lock);
	__atomic_add_fetch(&g->parked, 1, __ATOMIC_RELEASE);
	atomic_store(&c->parked_now, true);
	pthread_cond_broadcast(&g->parked_cond);
	while (__atomic_load_n(&g->pause_word, __ATOMIC_ACQUIRE) && !g->stop)
		pthread_cond_wait(&g->run_cond, &g->lock);
	__atomic_sub_fetch(&g->parked, 1, __ATOMIC_RELAXED);
	atomic_store(&c->parked_now, false);
	stop = g->stop;
	pthread_mutex_unlock(&g->lock);
	if (stop)
		return false;

	/* The last tick before the pause may come from a loaded state: the
	 * stall then spans the whole migration, on one monotonic clock. */
	now = vm_now_ns();
	c->resume_from_ns = c->last_tick_ns;
	c->await_first = true;
	c->next_ns = now;
	c->pace_ns = now;
	c->credit = 0;
	return true;
}

/* Page steps due now under the --dirty-rate pacing. */
static uint64_t vcpu_budget(struct vcpu *c, uint64_t now)
{
	double rate = c->g->pages_per_ns, cap = rate * 4e6 + 1;
	uint64_t n;

	if (now > c->pace_ns)
		c->credit += (double)(now - c->pace_ns) * rate;
	c->pace_ns = now;
	if (c->credit > cap)
		c->credit = cap; /* after a stall, do not burst */
	n = (uint64_t)c->credit;
	c->credit -= (double)n;
	return n;
}

/* Sleep until @period after the last wake-up, or until paused. */
static void vcpu_sleep(struct vcpu *c, uint64_t now, uint64_t period)
{
	c->next_ns += period;
	if (c->next_ns <= now)
		c->next_ns = now + period;
	futex_sleep_until(&c->g->pause_word, c->next_ns);
}

/* The kv workload's vCPU: serve what the device brought, then sleep on
 * the doorbell until the device rings it, a pause does, or the service
 * wants to run again. The doorbell is read before the rings are looked
 * at, so a ring in between makes the wait return at once. */
static void serve_period(struct vcpu *c, uint64_t now)
{
	struct guest *g = c->g;
	int bell = __atomic_load_n(&g->doorbell, __ATOMIC_ACQUIRE);
	uint64_t next = now + IDLE_PERIOD_NS, n;

	n = g->serve(g->serve_opaque, c, now, &next);
	vcpu_tick(c, vm_now_ns());
	if (n) {
		atomic_fetch_add_explicit(&c->steps, n, memory_order_relaxed);
		return;
	}
	if (next > now + IDLE_PERIOD_NS)
		next = now + IDLE_PERIOD_NS;
	if (!pause_requested(g))
		futex_wait_until(&g->doorbell, bell, next);
}

/* One period: the steps that are due (each a tick), or a heartbeat tick,
 * then sleep until the next period. Unpaced work does not sleep. */
static void vcpu_period(struct vcpu *c)
{
	struct guest *g = c->g;
	uint64_t now = vm_now_ns(), n;

	if (g->workload == VM_WL_KV && c->idx == 0 && g->serve) {
		serve_period(c, now);
		return;
	}
	if (!vcpu_has_work(c)) {
		vcpu_tick(c, now);
		vcpu_sleep(c, now, IDLE_PERIOD_NS);
		return;
	}
	if (g->pages_per_ns <= 0) {
		for (n = 0; n < UNPACED_BATCH && vcpu_has_work(c) &&
			    !pause_requested(g); n++) {
			vcpu_step(c);
			vcpu_tick(c, vm_now_ns());
		}
		c->next_ns = vm_now_ns();
		return;
	}
	n = vcpu_budget(c, now);
	if (!n)
		vcpu_tick(c, now);
	while (n-- && !pause_requested(g)) {
		vcpu_step(c);
		vcpu_tick(c, vm_now_ns());
	}
	vcpu_sleep(c, now, VM_NS_PER_MS);
}

/* Hold the vCPU off the CPU once its slice is used up, if throttled. */
static void vcpu_throttle(struct vcpu *c)
{
	unsigned pct = atomic_load_explicit(&c->g->throttle_pct,
					    memory_order_relaxed);
	uint64_t now, until;

	if (!pct) {
		c->slice_end_ns = 0;
		return;
	}
	now = vm_now_ns();
	if (!c->slice_end_ns)
		c->slice_end_ns = now + THROTTLE_SLICE_NS;
	if (now < c->slice_end_ns)
		return;
	until = now + THROTTLE_SLICE_NS * pct / (100 - pct);
	while (now < until && !pause_requested(c->g)) {
		futex_sleep_until(&c->g->pause_word, until);
		now = vm_now_ns();
	}
	/* Held time earns no credit: the work it would have done is lost. */
	c->pace_ns = c->next_ns = now;
	c->slice_end_ns = now + THROTTLE_SLICE_NS;
}

static void *vcpu_main(void *arg)
{
	struct vcpu *c = arg;

	c->next_ns = c->pace_ns = vm_now_ns();
	for (;;) {
		if (pause_requested(c->g)) {
			if (!vcpu_park(c))
				break;
			continue;
		}
		vcpu_throttle(c);
		vcpu_period(c);
		if (c->idx == 0 && c->g->tick_hook)
			c->g->tick_hook(c->g->tick_opaque, c, c->last_tick_ns);
	}
	return NULL;
}

static void random_prefill(struct guest *g);

/* --- lifecycle ---------------------------------------------------------- */

static void shares_init(struct guest *g)
{
	uint64_t base = g->npages / g->nvcpus, rem = g->npages % g->nvcpus;
	unsigned i;

	for (i = 0; i < g->nvcpus; i++) {
		struct vcpu *c = &g->vcpus[i];

		c->g = g;
		c->idx = i;
		c->npages = base + (i < rem);
		c->first = i * base + (i < rem ? i : rem);
		c->prng = mix64(0x72616e646f6dull + i);
	}
}

/**
 * guest_default_rate() - the dirty rate a workload runs at unless told.
 * @w: the workload.
 *
 * Return: MB/s (10^6 B/s) for the whole guest; 0 for an unpaced one.
 */
double guest_default_rate(enum vm_workload w)
{
	return w == VM_WL_AB ? 50 : w == VM_WL_RANDOM ? 100 : 0;
}

/**
 * guest_set_workload() - set what the guest runs and how fast, and the
 * pacing that follows. Before guest_start(), or with the guest paused
 * (a destination adopting the stream's workload); guest_reset_derived()
 * then recomputes the pending fills.
 * @g: the guest, nvcpus set.
 * @w: the workload.
 * @rate: MB/s for the whole guest, 0 = unpaced, < 0 = the workload's
 *        default.
 */
void guest_set_workload(struct guest *g, enum vm_workload w, double rate)
{
	if (rate < 0)
		rate = guest_default_rate(w);
	g->workload = w;
	g->dirty_rate = rate;
	/* fill and text write their RAM once, unpaced unless a rate is
	 * given. */
	g->pages_per_ns = rate * 1e6 / VM_PAGE_SIZE / g->nvcpus / 1e9;
}

/**
 * guest_init() - create guest RAM (mapped; guest_ram_populate() allocates
 * it) and the (not yet started) vCPUs.
 * @g: the guest, zeroed or not; everything is initialised here.
 * @o: the options (memory size, vCPUs, workload, dirty rate).
 *
 * Return: 0, or a negative errno. On failure guest_fini() cleans up.
 */
int guest_init(struct guest *g, const struct vm_opts *o)
{
	pthread_condattr_t ca;

	memset(g, 0, sizeof(*g));
	g->memfd = -1;
	g->backend = o->backend;
	g->mem_size = o->mem_size;
	g->npages = o->mem_size / VM_PAGE_SIZE;
	g->nvcpus = o->nvcpus;
	guest_set_workload(g, o->workload, o->dirty_rate);
	pthread_mutex_init(&g->lock, NULL);
	/* guest_pause_bounded() waits on it against CLOCK_MONOTONIC. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g->parked_cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&g->run_cond, NULL);
	atomic_init(&g->fill_pending, fills_once(o->workload) ? g->nvcpus : 0);

	g->dirty_words = (g->npages + 63) / 64;
	g->dirty = calloc(g->dirty_words, sizeof(*g->dirty));
	g->vcpus = calloc(g->nvcpus, sizeof(*g->vcpus));
	if (!g->dirty || !g->vcpus)
		return -ENOMEM;
	shares_init(g);
	return guest_ram_map(g);
}

/**
 * guest_start() - start the vCPU threads.
 * @g: an initialised guest.
 * @parked: start paused (a destination waits for its state).
 *
 * Return: 0, or a negative errno (threads already started are stopped).
 */
int guest_start(struct guest *g, bool parked)
{
	char name[16];
	unsigned i;
	int rc;

	/* A source's random guest starts with all of RAM holding data, as a
	 * guest that has run for a while does; a destination's RAM comes
	 * from the migration. */
	if (!parked && g->workload == VM_WL_RANDOM)
		random_prefill(g);
	__atomic_store_n(&g->pause_word, parked ? 1 : 0, __ATOMIC_SEQ_CST);
	atomic_store(&g->running, !parked);
	for (i = 0; i < g->nvcpus; i++) {
		rc = pthread_create(&g->vcpus[i].thread, NULL, vcpu_main,
				    &g->vcpus[i]);
		if (rc) {
			guest_stop(g);
			return -rc;
		}
		snprintf(name, sizeof(name), "vcpu/%u", i);
		pthread_setname_np(g->vcpus[i].thread, name);
		g->vcpus[i].started = true;
	}
	if (parked) {
		pthread_mutex_lock(&g->lock);
		while (g->parked < g->nvcpus)
			pthread_cond_wait(&g->parked_cond, &g->lock);
		pthread_mutex_unlock(&g->lock);
	}
	return 0;
}

static unsigned started_vcpus(struct guest *g)
{
	unsigned i, n = 0;

	for (i = 0; i < g->nvcpus; i++)
		n += g->vcpus[i].started;
	return n;
}

/**
 * guest_pause() - park every vCPU. When it returns no vCPU touches guest
 * memory or its registers until guest_resume(). Idempotent.
 * @g: the guest.
 */
void guest_pause(struct guest *g)
{
	unsigned n = started_vcpus(g);
	uint64_t spin_until;

	pthread_mutex_lock(&g->lock);
	__atomic_store_n(&g->pause_word, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&g->lock);
	futex_wake_all(&g->pause_word);
	guest_doorbell(g);
	/* Parking takes tens of microseconds; sleeping on the condition
	 * variable would add a second wake-up to the downtime, so spin a
	 * little first. */
	spin_until = vm_now_ns() + PAUSE_SPIN_NS;
	while (__atomic_load_n(&g->parked, __ATOMIC_ACQUIRE) < n &&
	       vm_now_ns() < spin_until)
		sched_yield();
	pthread_mutex_lock(&g->lock);
	while (g->parked < n && !g->stop)
		pthread_cond_wait(&g->parked_cond, &g->lock);
	atomic_store(&g->running, false);
	pthread_mutex_unlock(&g->lock);
}

/**
 * guest_pause_bounded() - park every vCPU, waiting at most @timeout_ms for
 * them. A vCPU of a lazy restore can be blocked in a page fault that is
 * never served (its page failed its checksum): it cannot park, and it
 * cannot run on either, so the guest counts as stopped when the others
 * parked. Those that did not are marked stuck for good (never joined).
 * @g: the guest.
 * @timeout_ms: how long to wait for the last vCPU.
 * @stuck: receives the vCPUs that did not park ("vcpu1, vcpu3"), or "".
 * @len: size of @stuck.
 *
 * Return: 0 when every vCPU parked, -ETIMEDOUT otherwise.
 */
int guest_pause_bounded(struct guest *g, int timeout_ms, char *stuck,
			size_t len)
{
	unsigned n = started_vcpus(g), i, left;
	uint64_t dl = vm_now_ns() + (uint64_t)timeout_ms * VM_NS_PER_MS;
	struct timespec ts = { (time_t)(dl / 1000000000ull),
			       (long)(dl % 1000000000ull) };
	size_t at = 0;

	stuck[0] = '\0';
	pthread_mutex_lock(&g->lock);
	__atomic_store_n(&g->pause_word, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&g->lock);
	futex_wake_all(&g->pause_word);
	guest_doorbell(g);
	pthread_mutex_lock(&g->lock);
	while (g->parked < n && !g->stop &&
	       pthread_cond_timedwait(&g->parked_cond, &g->lock, &ts) == 0)
		;
	left = n > g->parked ? n - g->parked : 0;
	atomic_store(&g->running, false);
	pthread_mutex_unlock(&g->lock);
	if (!left)
		return 0;
	for (i = 0; i < g->nvcpus; i++) {
		if (!g->vcpus[i].started || atomic_load(&g->vcpus[i].parked_now))
			continue;
		if (at < len)
			at += (size_t)snprintf(stuck + at, len - at, "%svcpu%u",
					       at ? ", " : "", i);
	}
	atomic_store(&g->stuck, left);
	return -ETIMEDOUT;
}

/**
 * guest_is_stuck() - whether a bounded pause left vCPUs unparked: the
 * guest can then never be resumed, stopped or freed.
 * @g: the guest.
 *
 * Return: true if so.
 */
bool guest_is_stuck(struct guest *g)
{
	return atomic_load(&g->stuck) != 0;
}

/**
 * guest_resume() - let the vCPUs run again. Does nothing while running.
 * @g: the guest.
 */
void guest_resume(struct guest *g)
{
	unsigned i;

	pthread_mutex_lock(&g->lock);
	if (__atomic_load_n(&g->pause_word, __ATOMIC_RELAXED) && !g->stop) {
		for (i = 0; i < g->nvcpus; i++)
			atomic_store(&g->vcpus[i].first_tick_ns, 0);
		__atomic_store_n(&g->pause_word, 0, __ATOMIC_SEQ_CST);
		atomic_store(&g->running, true);
		pthread_cond_broadcast(&g->run_cond);
	}
	pthread_mutex_unlock(&g->lock);
}

/**
 * guest_stop() - stop and join every vCPU thread. Safe to call twice.
 * @g: the guest.
 */
void guest_stop(struct guest *g)
{
	unsigned i;

	if (!g->vcpus)
		return;
	pthread_mutex_lock(&g->lock);
	g->stop = true;
	__atomic_store_n(&g->pause_word, 1, __ATOMIC_SEQ_CST);
	futex_wake_all(&g->pause_word);
	guest_doorbell(g);
	pthread_cond_broadcast(&g->run_cond);
	pthread_cond_broadcast(&g->parked_cond);
	pthread_mutex_unlock(&g->lock);
	for (i = 0; i < g->nvcpus; i++) {
		if (g->vcpus[i].started)
			pthread_join(g->vcpus[i].thread, NULL);
		g->vcpus[i].started = false;
	}
	atomic_store(&g->running, false);
}

/**
 * guest_fini() - free guest RAM and the vCPUs (after guest_stop()).
 * @g: the guest.
 */
void guest_fini(struct guest *g)
{
	guest_stop(g);
	guest_verifier_stop(g);
	if (g->ram)
		munmap(g->ram, g->mem_size);
	if (g->memfd >= 0)
		close(g->memfd);
	guest_ram_unpool(g);
	free(g->dirty);
	free(g->vcpus);
	g->ram = NULL;
	g->memfd = -1;
	g->dirty = NULL;
	g->vcpus = NULL;
	pthread_cond_destroy(&g->run_cond);
	pthread_cond_destroy(&g->parked_cond);
	pthread_mutex_destroy(&g->lock);
}

/* --- accessors ---------------------------------------------------------- */

/**
 * guest_throttle() - hold every vCPU off the CPU for @pct (0..99) percent
 * of its time from now on; 0 lifts it. Any thread.
 */
void guest_throttle(struct guest *g, unsigned pct)
{
	atomic_store_explicit(&g->throttle_pct, pct > 99 ? 99 : pct,
			      memory_order_relaxed);
}

/**
 * guest_running() - whether the vCPUs run (not paused). Any thread.
 * @g: the guest.
 *
 * Return: true while running.
 */
bool guest_running(struct guest *g)
{
	return atomic_load(&g->running);
}

/**
 * guest_settled() - whether the workload reached its steady state (the
 * fill is complete); always true for the other workloads. Any thread.
 * @g: the guest.
 *
 * Return: true once settled.
 */
bool guest_settled(struct guest *g)
{
	return atomic_load(&g->fill_pending) == 0;
}

/**
 * guest_steps() - page steps done by all vCPUs so far. Any thread.
 * @g: the guest.
 *
 * Return: the sum of the vCPUs' step counters.
 */
uint64_t guest_steps(struct guest *g)
{
	uint64_t n = 0;
	unsigned i;

	for (i = 0; i < g->nvcpus; i++)
		n += atomic_load_explicit(&g->vcpus[i].steps,
					  memory_order_relaxed);
	return n;
}

/**
 * guest_check_errors() - pages the running guest found inconsistent.
 * @g: the guest.
 *
 * Return: the count, including the source's when the state was loaded.
 */
uint64_t guest_check_errors(struct guest *g)
{
	return atomic_load_explicit(&g->check_errors, memory_order_relaxed);
}

/**
 * guest_reset_derived() - recompute what follows from the vCPU registers
 * after they were loaded (the pending fills). Guest paused.
 * @g: the guest.
 */
void guest_reset_derived(struct guest *g)
{
	unsigned i, pending = 0;

	if (fills_once(g->workload)) {
		for (i = 0; i < g->nvcpus; i++)
			pending += g->vcpus[i].fill_done < g->vcpus[i].npages;
	}
	atomic_store(&g->fill_pending, pending);
}

/**
 * guest_dirty_bitmap() - hand the pages written since the last call to the
 * engine and clear the log (the get_dirty_bitmap callback).
 * @g: the guest.
 * @bitmap: one bit per page, zeroed by the caller.
 * @pages: pages in the region; must match guest RAM.
 *
 * Return: 0, or -EINVAL for a size mismatch.
 */
int guest_dirty_bitmap(struct guest *g, uint64_t *bitmap, size_t pages)
{
	size_t i;

	if (pages != g->npages)
		return -EINVAL;
	for (i = 0; i < g->dirty_words; i++)
		bitmap[i] = atomic_exchange_explicit(&g->dirty[i], 0,
						     memory_order_acquire);
	return 0;
}

/**
 * guest_wait_first_ticks() - after a resume, wait until every vCPU ticked
 * once and measure the stall the guest saw.
 * @g: the guest, just resumed.
 * @timeout_ms: how long to wait at most.
 * @stall_ms: receives max over vCPUs of (first tick after the resume - last
 *            tick before the pause).
 *
 * Return: 0, or -ETIMEDOUT if some vCPU did not tick in time (the stall is
 * then over the vCPUs that did).
 */
int guest_wait_first_ticks(struct guest *g, int timeout_ms, double *stall_ms)
{
	uint64_t deadline = vm_now_ns() + (uint64_t)timeout_ms * VM_NS_PER_MS;
	uint64_t worst = 0;
	unsigned i, ticked;
	struct timespec nap = { 0, 100000 };

	for (;;) {
		ticked = 0;
		for (i = 0; i < g->nvcpus; i++)
			ticked += atomic_load_explicit(&g->vcpus[i].first_tick_ns,
						       memory_order_acquire) != 0;
		if (ticked == g->nvcpus || vm_now_ns() >= deadline)
			break;
		nanosleep(&nap, NULL);
	}
	for (i = 0; i < g->nvcpus; i++) {
		struct vcpu *c = &g->vcpus[i];

		if (atomic_load_explicit(&c->first_tick_ns, memory_order_acquire) &&
		    atomic_load(&c->stall_ns) > worst)
			worst = atomic_load(&c->stall_ns);
	}
	*stall_ms = (double)worst / 1e6;
	return ticked == g->nvcpus ? 0 : -ETIMEDOUT;
}

/* --- whole-image checks (guest paused) ---------------------------------- */

/* Run fn(ctx, i) for i in [0, n) on a few threads: checks that run while
 * the guest is paused are part of the downtime, so every core helps. */
struct par {
	void (*fn)(void *ctx, size_t i);
	void *ctx;
	size_t n;
	atomic_size_t next;
};

static void *par_worker(void *arg)
{
	struct par *p = arg;
	size_t i;

	while ((i = atomic_fetch_add(&p->next, 1)) < p->n)
		p->fn(p->ctx, i);
	return NULL;
}

/**
 * vm_par_run() - run fn(ctx, i) for every i in [0, n) on up to one thread
 * per online CPU (at most 8), the caller's included.
 * @n: the number of items.
 * @fn: the work on one item; called from several threads at once.
 * @ctx: passed to @fn.
 */
void vm_par_run(size_t n, void (*fn)(void *, size_t), void *ctx)
{
	struct par p = { .fn = fn, .ctx = ctx, .n = n };
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	pthread_t th[7];
	size_t want, started = 0, i;

	atomic_init(&p.next, 0);
	want = cpus > 1 ? (size_t)cpus : 1;
	if (want > n)
		want = n;
	if (want > 8)
		want = 8;
	for (i = 1; i < want; i++) {
		if (pthread_create(&th[started], NULL, par_worker, &p))
			break;
		started++;
	}
	par_worker(&p);
	for (i = 0; i < started; i++)
		pthread_join(th[i], NULL);
}

struct digest_ctx {
	struct guest *g;
	uint64_t *hashes;
};

static void prefill_block(void *arg, size_t i)
{
	struct guest *g = arg;
	uint64_t per = DIGEST_BLOCK / VM_PAGE_SIZE;
	uint64_t lo = i * per, hi = lo + per;

	if (hi > g->npages)
		hi = g->npages;
	for (unsigned v = 0; v < g->nvcpus; v++) {
		const struct vcpu *c = &g->vcpus[v];
		uint64_t a = lo > c->first ? lo : c->first;
		uint64_t b = hi < c->first + c->npages ? hi : c->first + c->npages;

		for (uint64_t pg = a; pg < b; pg++)
			random_page_write(page_ptr(g, pg), pg * VM_PAGE_SIZE, 1, v);
	}
}

/* Write every page of a random guest once (generation 1), in parallel. */
static void random_prefill(struct guest *g)
{
	vm_par_run((size_t)((g->mem_size + DIGEST_BLOCK - 1) / DIGEST_BLOCK),
		prefill_block, g);
	for (unsigned v = 0; v < g->nvcpus; v++)
		g->vcpus[v].sweep = 1;
}

static void digest_block(void *arg, size_t i)
{
	struct digest_ctx *d = arg;
	uint64_t off = i * DIGEST_BLOCK, len = d->g->mem_size - off;

	if (len > DIGEST_BLOCK)
		len = DIGEST_BLOCK;
	d->hashes[i] = XXH3_64bits(d->g->ram + off, len);
}

/**
 * guest_digest() - digest of all of guest RAM: XXH3_64bits over the
 * little-endian XXH3_64bits of each 8 MiB block, so blocks hash in
 * parallel. Guest paused.
 * @g: the guest.
 *
 * Return: the digest (0 if memory for the block hashes ran out).
 */
uint64_t guest_digest(struct guest *g)
{
	size_t n = (g->mem_size + DIGEST_BLOCK - 1) / DIGEST_BLOCK, i;
	struct digest_ctx d = { .g = g };
	uint8_t *le;
	uint64_t h;

	d.hashes = calloc(n, sizeof(uint64_t));
	le = calloc(n, sizeof(uint64_t));
	if (!d.hashes || !le) {
		free(d.hashes);
		free(le);
		return 0;
	}
	vm_par_run(n, digest_block, &d);
	for (i = 0; i < n; i++)
		vm_put_le64(le + i * 8, d.hashes[i]);
	h = XXH3_64bits(le, n * 8);
	free(d.hashes);
	free(le);
	return h;
}

struct inv_ctx {
	struct guest *g;
	atomic_bool ok;
	atomic_uint_fast64_t pages;
};

/**
 * guest_page_report() - say on stderr which page broke the invariant.
 * @g: the guest.
 * @vcpu: the vCPU whose share holds the page.
 * @pg: the page number.
 * @what: what was wrong.
 */
void guest_page_report(struct guest *g, unsigned vcpu, uint64_t pg,
		       const char *what)
{
	const uint8_t *p = page_ptr(g, pg);

	fprintf(stderr,
		"ferry-vm: invariant: vcpu %u page 0x%llx: %s (words %016llx %016llx %016llx)\n",
		vcpu, (unsigned long long)(pg * VM_PAGE_SIZE), what,
		(unsigned long long)vm_get_le64(p),
		(unsigned long long)vm_get_le64(p + 8),
		(unsigned long long)vm_get_le64(p + 16));
}

/**
 * guest_page_vcpu() - the vCPU whose share holds a page.
 * @g: the guest.
 * @pg: a page number below g->npages.
 *
 * Return: the vCPU's index (shares_init(): the first npages % nvcpus
 * shares have one page more).
 */
unsigned guest_page_vcpu(const struct guest *g, uint64_t pg)
{
	uint64_t base = g->npages / g->nvcpus, rem = g->npages % g->nvcpus;

	if (pg < rem * (base + 1))
		return (unsigned)(pg / (base + 1));
	return (unsigned)(rem + (pg - rem * (base + 1)) / base);
}

/**
 * guest_page_ok() - check one page against the workload's invariant.
 * @g: the guest.
 * @r: the registers of the vCPU whose share holds @pg, as they were when
 *     the page was last written.
 * @pg: the page number.
 * @what: receives what was checked, for a report.
 *
 * Return: true if the page is consistent with @r (always for idle).
 */
bool guest_page_ok(struct guest *g, const struct guest_regs *r, uint64_t pg,
		   const char **what)
{
	unsigned v = guest_page_vcpu(g, pg);
	uint64_t i = pg - g->vcpus[v].first;
	const uint8_t *p = page_ptr(g, pg);

	switch (g->workload) {
	case VM_WL_AB:
		*what = "ab counter or address";
		return ab_page_ok(p, pg * VM_PAGE_SIZE,
				  i < r->cursor ? r->sweep + 1 : r->sweep);
	case VM_WL_RANDOM:
		*what = "random page header or checksum";
		return random_page_check(p, pg * VM_PAGE_SIZE, v, r->sweep) >= 0;
	case VM_WL_FILL:
		*what = i < r->fill_done ? "fill pattern" : "unfilled page not zero";
		return i < r->fill_done ?
			       pattern_check(p, VM_PAGE_SIZE, fill_seed(pg)) :
			       all_zero(p, VM_PAGE_SIZE);
	case VM_WL_TEXT:
		*what = i < r->fill_done ? "text content" : "unfilled page not zero";
		return i < r->fill_done ?
			       text_check(p, VM_PAGE_SIZE, text_seed(pg)) :
			       all_zero(p, VM_PAGE_SIZE);
	default:
		*what = "";
		return true;
	}
}

/* Check one vCPU's share; returns the first bad page or UINT64_MAX. */
static uint64_t inv_share(struct vcpu *c, const char **what)
{
	struct guest_regs r = { c->cursor, c->sweep, c->fill_done };
	uint64_t i;

	for (i = 0; i < c->npages; i++)
		if (!guest_page_ok(c->g, &r, c->first + i, what))
			return c->first + i;
	return UINT64_MAX;
}

static void inv_vcpu(void *arg, size_t i)
{
	struct inv_ctx *x = arg;
	struct vcpu *c = &x->g->vcpus[i];
	const char *what = "";
	uint64_t bad = inv_share(c, &what);

	if (bad != UINT64_MAX) {
		atomic_store(&x->ok, false);
		guest_page_report(c->g, c->idx, bad, what);
	}
	atomic_fetch_add(&x->pages, bad == UINT64_MAX ? c->npages : bad - c->first + 1);
}

/**
 * guest_check_invariant() - check the workload's invariant on every page
 * against the vCPU registers (ab: s + 1 before the cursor, s after, right
 * addresses; random: every page unwritten or valid with a generation the
 * vCPU reached; fill and text: the filled prefix regenerates, the rest is
 * zero; idle: nothing to check). Guest paused. Reports the first bad page
 * of each vCPU on stderr.
 * @g: the guest.
 * @pages_checked: receives the number of pages looked at.
 *
 * Return: true if the invariant held on every page.
 */
bool guest_check_invariant(struct guest *g, uint64_t *pages_checked)
{
	struct inv_ctx x = { .g = g };

	atomic_init(&x.ok, true);
	atomic_init(&x.pages, 0);
	if (g->workload != VM_WL_IDLE)
		vm_par_run(g->nvcpus, inv_vcpu, &x);
	*pages_checked = atomic_load(&x.pages);
	return atomic_load(&x.ok);
}
