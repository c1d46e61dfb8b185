// SPDX-License-Identifier: MIT
/*
 * verify.c - checking a migrated guest without lengthening the pause.
 *
 * The digest of guest RAM is per page: h[pg] = XXH3_64bits_withSeed(page,
 * 4096, pg), and the digest is XXH3_64bits over the little-endian h[]
 * array. Who hashes a page, and when, does not change the result, so the
 * work can leave the pause on both sides:
 *
 * - The destination arms a verification at resume, while its vCPUs are
 *   still parked: a state byte per page (untouched, being hashed, done), the
 *   hash array and a copy of the vCPU registers as loaded. Both arrays are
 *   anonymous mappings, zero pages until touched, so arming costs nothing
 *   proportional to RAM. Then the vCPUs run. Before a vCPU's
 *   first write to a page (guest.c, before_write()) it hashes the page and
 *   checks the workload invariant on it against the registers as loaded:
 *   software copy-on-write, as a VMM would do with userfaultfd
 *   write-protect faults. Walker threads, one per CPU, take every other
 *   page. When all pages are done the last walker computes the digest,
 *   disarms and publishes the result, which the running note carries to
 *   the source.
 * - The source hashes its RAM only after the point of no return, when its
 *   guest is frozen for good and the destination is done hashing, and
 *   compares the two digests (vm_verify_source()).
 *
 * - A snapshot restore compares its digest with the image digest of the
 *   file (the same per-page digest, computed by whoever wrote the file),
 *   so the check needs no source. A lazy restore arms it the same way:
 *   reading a page that is not in yet faults it in. Its walkers start once
 *   every page is in, so that the faults the restore counts are the
 *   guest's own.
 *
 * "strict" (--verify strict) keeps both in the pause, with the block
 * digest of guest_digest(), as do streams from a source that does not
 * offer the background check (and stream-format snapshots of older
 * versions).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "vm.h"

#define VFY_BLOCK_PAGES 512u	/* pages a walker takes at a time (2 MiB) */
#define VFY_MAX_WALKERS 8u
/* The running note waits for the check as long as it advances: a large
 * guest's check outlasts any fixed wait (16 GiB of 4 KiB pages took
 * 30 s at ~550 MB/s, more under load), and a report without the verdict
 * leaves the operator nothing to read. A check that hashed no page for
 * this long is given up on (the verdict stays pending, the status shows
 * it later). */
#define VFY_NOTE_STUCK_MS 30000
#define VFY_NOTE_STEP_MS 1000	/* how often the wait looks at the progress */
#define VFY_NOTE_SAY_MS 10000	/* how often it says so on stderr */

enum { PG_TODO = 0, PG_BUSY = 1, PG_DONE = 2 };

enum vfy_status { VFY_IDLE, VFY_RUNNING, VFY_DONE, VFY_CANCELLED };

/* The result of one background verification. */
struct vfy_result {
	uint64_t digest;
	bool invariant_ok;
	uint64_t pages;
	double ms;
};

/*
 * Allocated at the first arming and kept with the guest, so a vCPU that
 * saw "armed" late never touches freed memory; the per-page arrays live
 * only while a verification runs and are freed once no vCPU is inside
 * guest_verifier_page() (the inflight count, Dekker-style against armed).
 */
struct guest_verifier {
	_Atomic uint8_t *state;	/* per page: PG_* */
	uint64_t *hash;		/* per page, little-endian */
	struct guest_regs *regs; /* per vCPU, as loaded */
	uint64_t nblocks;
	atomic_uint_fast64_t next_block;
	atomic_uint_fast64_t done; /* pages hashed */
	atomic_uint inflight;	   /* vCPUs inside guest_verifier_page() */
	atomic_uint walkers_left;
	atomic_bool cancel;
	atomic_bool invariant_ok;
	atomic_bool reported;	/* the first bad page was printed */
	uint64_t t0;

	pthread_mutex_t join_lock; /* the walker threads' handles */
	pthread_t walkers[VFY_MAX_WALKERS];
	unsigned nwalkers;
	bool to_start;		/* armed, walkers not started yet */

	pthread_mutex_t lock;	/* status and result */
	pthread_cond_t cond;	/* status left VFY_RUNNING */
	enum vfy_status status;
	struct vfy_result res;
};

static const char *const mode_names[] = {
	[VM_VERIFY_OFF] = "off",
	[VM_VERIFY_BACKGROUND] = "background",
	[VM_VERIFY_STRICT] = "strict",
};

/**
 * vm_verify_mode_name() - the command-line name of a verification mode.
 * @m: the mode.
 *
 * Return: a static string.
 */
const char *vm_verify_mode_name(enum vm_verify_mode m)
{
	return vm_name_of(mode_names, sizeof(mode_names) / sizeof(mode_names[0]),
			  m);
}

/**
 * vm_verify_mode_parse() - parse "background", "strict" or "off".
 * @s: the name.
 * @out: receives the mode.
 *
 * Return: 0, or -EINVAL.
 */
int vm_verify_mode_parse(const char *s, enum vm_verify_mode *out)
{
	int v = vm_name_find(mode_names,
			     sizeof(mode_names) / sizeof(mode_names[0]), s);

	if (v < 0)
		return v;
	*out = (enum vm_verify_mode)v;
	return 0;
}

static inline uint64_t page_hash(const struct guest *g, uint64_t pg)
{
	return htole64(XXH3_64bits_withSeed(g->ram + pg * VM_PAGE_SIZE,
					    VM_PAGE_SIZE, pg));
}

/* --- the whole-RAM page digest (source, strict destination) ------------- */

struct pd_ctx {
	struct guest *g;
	uint64_t *hash;
};

static void pd_block(void *arg, size_t b)
{
	struct pd_ctx *c = arg;
	uint64_t pg = (uint64_t)b * VFY_BLOCK_PAGES, end = pg + VFY_BLOCK_PAGES;

	if (end > c->g->npages)
		end = c->g->npages;
	for (; pg < end; pg++)
		c->hash[pg] = page_hash(c->g, pg);
}

/**
 * guest_page_digest() - the per-page digest of all of guest RAM, on every
 * CPU. Guest paused (or frozen after a migration).
 * @g: the guest.
 *
 * Return: the digest, or 0 if memory for the page hashes ran out.
 */
uint64_t guest_page_digest(struct guest *g)
{
	struct pd_ctx c = { .g = g };
	uint64_t d;

	c.hash = malloc(g->npages * sizeof(uint64_t));
	if (!c.hash)
		return 0;
	vm_par_run((size_t)((g->npages + VFY_BLOCK_PAGES - 1) / VFY_BLOCK_PAGES),
		   pd_block, &c);
	d = XXH3_64bits(c.hash, g->npages * sizeof(uint64_t));
	free(c.hash);
	return d;
}

/* --- the background verifier -------------------------------------------- */

/* Hash one page that this thread claimed and check its invariant. */
static void process_page(struct guest *g, struct guest_verifier *v,
			 uint64_t pg)
{
	unsigned vcpu = guest_page_vcpu(g, pg);
	const char *what = "";

	v->hash[pg] = page_hash(g, pg);
	if (!guest_page_ok(g, &v->regs[vcpu], pg, &what)) {
		atomic_store(&v->invariant_ok, false);
		if (!atomic_exchange(&v->reported, true))
			guest_page_report(g, vcpu, pg, what);
	}
}

/* Claim @pg if nobody did: true when this thread hashed it. */
static bool try_page(struct guest *g, struct guest_verifier *v, uint64_t pg)
{
	uint8_t s = PG_TODO;

	if (atomic_load_explicit(&v->state[pg], memory_order_acquire) != PG_TODO ||
	    !atomic_compare_exchange_strong_explicit(&v->state[pg], &s, PG_BUSY,
						     memory_order_acquire,
						     memory_order_acquire))
		return false;
	process_page(g, v, pg);
	atomic_store_explicit(&v->state[pg], PG_DONE, memory_order_release);
	return true;
}

/**
 * guest_verifier_page() - a vCPU is about to write @pg: make sure the page
 * as it arrived was hashed and checked first (by this thread, or wait for
 * the walker that holds it). vCPU threads, while g->verify_armed.
 * @g: the guest.
 * @pg: the page.
 */
void guest_verifier_page(struct guest *g, uint64_t pg)
{
	struct guest_verifier *v = g->verifier;

	atomic_fetch_add(&v->inflight, 1);
	if (atomic_load(&g->verify_armed)) {
		if (try_page(g, v, pg))
			atomic_fetch_add_explicit(&v->done, 1,
						  memory_order_acq_rel);
		/* A cancelled verification may have left the page to a
		 * walker blocked for good (a lazy restore that failed): the
		 * vCPU then goes on to its write, which blocks it the same
		 * way, instead of spinning. */
		while (atomic_load_explicit(&v->state[pg], memory_order_acquire) !=
		       PG_DONE && !atomic_load(&v->cancel))
			sched_yield();
	}
	atomic_fetch_sub_explicit(&v->inflight, 1, memory_order_release);
}

/*
 * Zeroed memory that costs nothing until touched: an anonymous mapping of
 * its own. calloc maps a block of its own only while the block is above
 * malloc's mmap threshold, which rises as large blocks are freed; below
 * it, calloc clears heap memory (4 MiB for a 2 GiB guest's hashes).
 */
static void *lazy_zalloc(size_t len)
{
	void *p = mmap(NULL, len ? len : 1, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void lazy_free(void *p, size_t len)
{
	if (p)
		munmap(p, len ? len : 1);
}

/* Free the per-page arrays; no vCPU may be inside guest_verifier_page(). */
static void arrays_free(struct guest *g, struct guest_verifier *v)
{
	lazy_free((void *)v->state, g->npages * sizeof(*v->state));
	lazy_free(v->hash, g->npages * sizeof(*v->hash));
	free(v->regs);
	v->state = NULL;
	v->hash = NULL;
	v->regs = NULL;
}

static void publish(struct guest_verifier *v, enum vfy_status st,
		    const struct vfy_result *r)
{
	pthread_mutex_lock(&v->lock);
	v->status = st;
	if (r)
		v->res = *r;
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
}

/* The last walker: wait for pages vCPUs still hold, digest, disarm. */
static void finish(struct guest *g, struct guest_verifier *v)
{
	struct vfy_result r;

	while (atomic_load_explicit(&v->done, memory_order_acquire) < g->npages) {
		if (atomic_load(&v->cancel))
			return;
		sched_yield();
	}
	r.digest = XXH3_64bits(v->hash, g->npages * sizeof(uint64_t));
	r.invariant_ok = atomic_load(&v->invariant_ok);
	r.pages = g->npages;
	atomic_store(&g->verify_armed, false);
	while (atomic_load(&v->inflight))
		sched_yield();
	arrays_free(g, v);
	r.ms = (double)(vm_now_ns() - v->t0) / 1e6;
	publish(v, VFY_DONE, &r);
}

/* Take blocks of pages until none is left, hashing those nobody did. */
static void walk(struct guest *g, struct guest_verifier *v)
{
	uint64_t b, pg, end, n;

	while (!atomic_load_explicit(&v->cancel, memory_order_relaxed) &&
	       (b = atomic_fetch_add(&v->next_block, 1)) < v->nblocks) {
		pg = b * VFY_BLOCK_PAGES;
		end = pg + VFY_BLOCK_PAGES < g->npages ? pg + VFY_BLOCK_PAGES :
							 g->npages;
		for (n = 0; pg < end; pg++)
			n += try_page(g, v, pg);
		atomic_fetch_add_explicit(&v->done, n, memory_order_acq_rel);
	}
}

static void *walker_main(void *arg)
{
	struct guest *g = arg;
	struct guest_verifier *v = g->verifier;

	walk(g, v);
	if (atomic_fetch_sub(&v->walkers_left, 1) == 1)
		finish(g, v);
	return NULL;
}

/* Join the walkers of the last verification, if any. */
static void walkers_join(struct guest_verifier *v)
{
	pthread_mutex_lock(&v->join_lock);
	for (unsigned i = 0; i < v->nwalkers; i++)
		pthread_join(v->walkers[i], NULL);
	v->nwalkers = 0;
	pthread_mutex_unlock(&v->join_lock);
}

static struct guest_verifier *verifier_get(struct guest *g)
{
	struct guest_verifier *v = g->verifier;
	pthread_condattr_t ca;

	if (v)
		return v;
	v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	pthread_mutex_init(&v->lock, NULL);
	pthread_mutex_init(&v->join_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&v->cond, &ca);
	pthread_condattr_destroy(&ca);
	g->verifier = v;
	return v;
}

/*
 * Arm a verification of the paused guest with its registers as loaded.
 * Nothing here is proportional to RAM: the arrays are mapped lazily.
 */
static int verifier_arm(struct guest *g)
{
	struct guest_verifier *v = verifier_get(g);

	if (!v)
		return -ENOMEM;
	walkers_join(v);
	v->state = lazy_zalloc(g->npages * sizeof(*v->state));
	v->hash = lazy_zalloc(g->npages * sizeof(*v->hash));
	v->regs = calloc(g->nvcpus, sizeof(*v->regs));
	if (!v->state || !v->hash || !v->regs) {
		arrays_free(g, v);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < g->nvcpus; i++)
		v->regs[i] = (struct guest_regs){ g->vcpus[i].cursor,
						  g->vcpus[i].sweep,
						  g->vcpus[i].fill_done };
	v->nblocks = (g->npages + VFY_BLOCK_PAGES - 1) / VFY_BLOCK_PAGES;
	atomic_store(&v->next_block, 0);
	atomic_store(&v->done, 0);
	atomic_store(&v->cancel, false);
	atomic_store(&v->invariant_ok, true);
	atomic_store(&v->reported, false);
	v->t0 = vm_now_ns();
	pthread_mutex_lock(&v->join_lock);
	v->to_start = true;
	pthread_mutex_unlock(&v->join_lock);
	publish(v, VFY_RUNNING, NULL);
	atomic_store(&g->verify_armed, true);
	return 0;
}

/* Start the walkers of an armed verification, once (the guest runs). */
static void verifier_start(struct guest *g)
{
	struct guest_verifier *v = g->verifier;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned want = cpus > 1 ? (unsigned)cpus : 1, i;
	char name[16];

	if (!v)
		return;
	if (want > VFY_MAX_WALKERS)
		want = VFY_MAX_WALKERS;
	pthread_mutex_lock(&v->join_lock);
	if (!v->to_start) {
		pthread_mutex_unlock(&v->join_lock);
		return;
	}
	v->to_start = false;
	atomic_store(&v->walkers_left, want);
	for (i = 0; i < want; i++) {
		if (pthread_create(&v->walkers[i], NULL, walker_main, g))
			break;
		snprintf(name, sizeof(name), "verify/%u", i);
		pthread_setname_np(v->walkers[i], name);
	}
	v->nwalkers = i;
	/* Walkers that did not start count as finished. If that makes this
	 * thread the last one, it walks what is left and finishes. */
	if (i < want && atomic_fetch_sub(&v->walkers_left, want - i) == want - i) {
		walk(g, v);
		finish(g, v);
	}
	pthread_mutex_unlock(&v->join_lock);
}

/*
 * Wait up to @timeout_ms for the running verification. Return: 0 with
 * @r filled, -ETIMEDOUT, or -ENOENT when none ran or it was cancelled.
 */
static int verifier_wait(struct guest *g, int timeout_ms, struct vfy_result *r)
{
	struct guest_verifier *v = g->verifier;
	uint64_t dl = vm_now_ns() + (uint64_t)timeout_ms * VM_NS_PER_MS;
	struct timespec ts = { (time_t)(dl / 1000000000ull),
			       (long)(dl % 1000000000ull) };
	enum vfy_status st;

	if (!v)
		return -ENOENT;
	pthread_mutex_lock(&v->lock);
	while (v->status == VFY_RUNNING &&
	       pthread_cond_timedwait(&v->cond, &v->lock, &ts) == 0)
		;
	st = v->status;
	*r = v->res;
	pthread_mutex_unlock(&v->lock);
	if (st == VFY_DONE)
		walkers_join(v);
	return st == VFY_DONE ? 0 : st == VFY_RUNNING ? -ETIMEDOUT : -ENOENT;
}

/* Pages the running check has hashed, or -1 when none runs. The
 * verifier lives as long as the guest, so any thread may look. */
static int64_t verifier_progress(struct guest *g)
{
	struct guest_verifier *v = g->verifier;
	bool running;

	if (!v)
		return -1;
	pthread_mutex_lock(&v->lock);
	running = v->status == VFY_RUNNING;
	pthread_mutex_unlock(&v->lock);
	return running ? (int64_t)atomic_load(&v->done) : -1;
}

/* Cancel a running verification. The vCPUs are parked or stopped. */
static void verifier_cancel(struct guest *g)
{
	struct guest_verifier *v = g->verifier;
	bool running;

	if (!v)
		return;
	atomic_store(&v->cancel, true);
	pthread_mutex_lock(&v->join_lock);
	v->to_start = false;
	pthread_mutex_unlock(&v->join_lock);
	walkers_join(v);
	pthread_mutex_lock(&v->lock);
	running = v->status == VFY_RUNNING;
	pthread_mutex_unlock(&v->lock);
	if (!running)
		return;
	atomic_store(&g->verify_armed, false);
	arrays_free(g, v);
	publish(v, VFY_CANCELLED, NULL);
}

/**
 * guest_verifier_stop() - cancel any background verification and free the
 * verifier. After guest_stop(): no vCPU runs.
 * @g: the guest.
 */
void guest_verifier_stop(struct guest *g)
{
	struct guest_verifier *v = g->verifier;

	if (!v)
		return;
	verifier_cancel(g);
	pthread_cond_destroy(&v->cond);
	pthread_mutex_destroy(&v->lock);
	pthread_mutex_destroy(&v->join_lock);
	free(v);
	g->verifier = NULL;
}

/* --- ferry-vm's side of it ---------------------------------------------- */

/**
 * vm_verify_loaded_page_fault() - the corrupt-page test hook: flip one byte
 * of the middle page of a just loaded guest, so verification must fail
 * whatever the workload (an idle guest writes nothing to lose).
 * @vm: the VM, paused, its state just loaded.
 */
void vm_verify_loaded_page_fault(struct vm *vm)
{
	struct guest *g = &vm->guest;

	if (!vm->fault_corrupt_page)
		return;
	g->ram[g->npages / 2 * VM_PAGE_SIZE + 100] ^= 0x5a;
	fprintf(stderr, "ferry-vm: fault: corrupted a byte of page 0x%llx\n",
		(unsigned long long)(g->npages / 2 * VM_PAGE_SIZE));
}

/* The destination's verdict once both halves of a background check are
 * known, whichever thread learns the second. Under mig.lock. */
static void settle(struct vm *vm)
{
	struct guest_verify *v = &vm->mig.check;

	if (v->background && v->done && v->state_done)
		vm->mig.verified = v->state_ok && v->invariant_ok &&
				   (!v->ram_vs_image || v->digest_match) &&
				   guest_check_errors(&vm->guest) == 0;
}

/* A snapshot restore's RAM digest against the file's image digest. */
static bool image_match(struct vm *vm, uint64_t digest)
{
	if (digest == vm->snap.image_digest)
		return true;
	fprintf(stderr, "ferry-vm: memory digest %016" PRIx64 " differs from "
		"the snapshot's image digest %016" PRIx64 "\n", digest,
		vm->snap.image_digest);
	return false;
}

/* Take the background results into the VM's check: the state digest
 * deferred from the load, then the pages, waiting up to @timeout_ms. */
static void collect(struct vm *vm, int timeout_ms)
{
	struct vfy_result r;
	bool want;
	int st;

	pthread_mutex_lock(&vm->mig.lock);
	if (!vm->mig.check.background || vm->mig.check.pending) {
		pthread_mutex_unlock(&vm->mig.lock);
		return;
	}
	st = vm_state_check_loaded(vm);
	if (st >= 0) {
		vm->mig.check.state_ok = st;
		vm->mig.check.state_done = true;
		settle(vm);
	}
	want = vm->mig.check.background && !vm->mig.check.done;
	pthread_mutex_unlock(&vm->mig.lock);
	if (!want || verifier_wait(&vm->guest, timeout_ms, &r))
		return;
	pthread_mutex_lock(&vm->mig.lock);
	if (vm->mig.check.background && !vm->mig.check.done) {
		struct guest_verify *v = &vm->mig.check;

		v->done = true;
		v->invariant_ok = r.invariant_ok;
		v->pages_checked = r.pages;
		v->verify_ms = r.ms;
		v->ram_digest = r.digest;
		if (v->ram_vs_image)
			v->digest_match = image_match(vm, r.digest);
		settle(vm);
	}
	pthread_mutex_unlock(&vm->mig.lock);
}

/**
 * vm_verify_resume() - the resume callback's verification part: arm the
 * background check of a just loaded guest while it is still paused, then
 * resume the guest. The walkers start with the running note, once the
 * vCPUs ran: started here, they would compete with the vCPUs and with
 * this thread for the CPUs just when the engine takes the resume time.
 * Without a check pending, only resumes.
 * @vm: the VM.
 */
void vm_verify_resume(struct vm *vm)
{
	struct guest *g = &vm->guest;
	bool arm;
	int rc;

	pthread_mutex_lock(&vm->mig.lock);
	arm = vm->mig.check.pending;
	pthread_mutex_unlock(&vm->mig.lock);
	if (arm) {
		/* Only once it is armed (g->verifier set) may another thread
		 * wait for the result: "pending" says not yet. */
		rc = verifier_arm(g);
		if (rc)
			fprintf(stderr, "ferry-vm: no memory for the background verification; the verdict stays null\n");
		pthread_mutex_lock(&vm->mig.lock);
		vm->mig.check.pending = false;
		if (rc)
			vm->mig.check.background = false;
		pthread_mutex_unlock(&vm->mig.lock);
	}
	guest_resume(g);
}

/**
 * vm_verify_pause() - the pause callback's verification part: a guest
 * that pauses again (to migrate on) must not be hashed while it is
 * saved, so a background check still running is cancelled; its verdict
 * stays null. Guest paused.
 * @vm: the VM.
 */
void vm_verify_pause(struct vm *vm)
{
	collect(vm, 0);
	pthread_mutex_lock(&vm->mig.lock);
	if (!vm->mig.check.background || vm->mig.check.done) {
		pthread_mutex_unlock(&vm->mig.lock);
		return;
	}
	vm->mig.check.background = false;
	pthread_mutex_unlock(&vm->mig.lock);
	verifier_cancel(&vm->guest);
	fprintf(stderr, "ferry-vm: background verification cancelled: the guest paused before it finished\n");
}

/*
 * Wait for the background result while it advances (VFY_NOTE_STUCK_MS
 * without a page hashed ends the wait), saying how far it got every
 * VFY_NOTE_SAY_MS. Returns how long the last page took to come, in ms:
 * 0 unless the wait gave up.
 */
static uint64_t collect_following(struct vm *vm)
{
	uint64_t t0 = vm_now_ns(), last = t0, said = t0, now;
	int64_t seen = -1, p;
	bool over;

	for (;;) {
		collect(vm, VFY_NOTE_STEP_MS);
		pthread_mutex_lock(&vm->mig.lock);
		over = !vm->mig.check.background || vm->mig.check.done;
		pthread_mutex_unlock(&vm->mig.lock);
		p = verifier_progress(&vm->guest);
		if (over || p < 0)
			return 0;
		now = vm_now_ns();
		if (p > seen) {
			seen = p;
			last = now;
		} else if (now - last >= VFY_NOTE_STUCK_MS * VM_NS_PER_MS) {
			return (now - last) / VM_NS_PER_MS;
		}
		if (now - said >= VFY_NOTE_SAY_MS * VM_NS_PER_MS) {
			fprintf(stderr, "ferry-vm: background verification: %" PRId64
				" of %" PRIu64 " pages checked after %.0f s\n", p,
				vm->guest.npages, (double)(now - t0) / 1e9);
			said = now;
		}
	}
}

/**
 * vm_verify_pct() - how far the background check has got, for the status.
 * @vm: the VM.
 *
 * Return: 0-99 while one runs, -1 otherwise.
 */
int vm_verify_pct(struct vm *vm)
{
	int64_t p = verifier_progress(&vm->guest);

	if (p < 0 || !vm->guest.npages)
		return -1;
	p = p * 100 / (int64_t)vm->guest.npages;
	return p > 99 ? 99 : (int)p;
}

/**
 * vm_verify_poll() - take a background result that finished since the
 * running note (which gives up on a check that stopped advancing). Any
 * thread.
 * @vm: the VM.
 */
void vm_verify_poll(struct vm *vm)
{
	collect(vm, 0);
}

/**
 * vm_verify_note() - the destination's running note: wait until the vCPUs
 * ran, then for the background verification (bounded), and describe both.
 * @vm: the VM, resumed.
 * @note: receives the note.
 * @len: its size.
 */
void vm_verify_note(struct vm *vm, char *note, size_t len)
{
	struct ferry_stats pc = { FERRY_STATS_INIT };
	struct guest_verify v;
	double stall = 0;
	uint64_t t0, stuck;
	int verified;

	/* A snapshot restore has nobody to tell: vm_verify_restored() takes
	 * the verdict once the receive returns. A lazy one starts no walker
	 * before every page is in, so that the page faults counted are the
	 * guest's own. */
	if (vm_restoring_file(vm)) {
		if (!vm->opts.lazy)
			verifier_start(&vm->guest);
		if (len)
			note[0] = '\0';
		return;
	}
	guest_wait_first_ticks(&vm->guest, 1000, &stall);
	verifier_start(&vm->guest);
	t0 = vm_now_ns();
	stuck = collect_following(vm);
	verified = vm_verified(vm);
	pthread_mutex_lock(&vm->mig.lock);
	vm->mig.check.wait_ms = (double)(vm_now_ns() - t0) / 1e6;
	v = vm->mig.check;
	pthread_mutex_unlock(&vm->mig.lock);
	if (v.background && !v.done)
		fprintf(stderr, "ferry-vm: background verification checked no page for %" PRIu64 " ms; the verdict is pending\n",
			stuck);
	/* The callback runs on the thread that drives the session. */
	if (!vm->mig.session || ferry_session_stats(vm->mig.session, &pc))
		pc.postcopy = false;
	api_note(verified, stall, &v, &pc, note, len);
	pthread_mutex_lock(&vm->mig.lock);
	snprintf(vm->mig.note, sizeof(vm->mig.note), "%s", len ? note : "");
	pthread_mutex_unlock(&vm->mig.lock);
}

/* The destination's page digest from its note, if it sent one. */
static bool note_digest(const char *note, uint64_t *out)
{
	json_object *n = note && *note ? json_tokener_parse(note) : NULL, *d;
	const char *s;
	char *end;
	bool ok = false;

	if (n && json_object_object_get_ex(n, "ram_digest", &d) &&
	    json_object_is_type(d, json_type_string)) {
		s = json_object_get_string(d);
		errno = 0;
		*out = strtoull(s, &end, 16);
		ok = *s && !*end && !errno;
	}
	json_object_put(n);
	return ok;
}

/* The digest this frozen source's RAM is compared with: the
 * destination's from its note, or for a snapshot that took the guest
 * over the image digest of the file written. A checkpoint's guest runs
 * on and writes its RAM again: nothing to compare. */
static bool source_expects(struct vm *vm, const struct ferry_stats *st,
			   uint64_t *out)
{
	bool file = !strncmp(vm->mig.uri, "file:", 5);

	if (!file)
		return note_digest(st->peer_note, out);
	if (vm->mig.keep_running || !st->image_digest)
		return false;
	*out = st->image_digest;
	return true;
}

/**
 * vm_verify_source() - after a migration from this VM: when the
 * destination's note carries its page digest, or a snapshot that took the
 * guest over says what it wrote, hash this (now frozen) guest's RAM the
 * same way and compare. Outside the pause: the guest stays paused here
 * for good. A checkpoint (keep_running) compares nothing. Migration
 * thread.
 * @vm: the VM (a source).
 * @rc: what the send returned; only 0 compares.
 * @st: the send's statistics (the destination's note, the image digest).
 */
void vm_verify_source(struct vm *vm, int rc, const struct ferry_stats *st)
{
	uint64_t theirs, mine, t0;
	int match = -1;
	double ms = 0;

	/* A local migration's destination maps this guest's pages and runs
	 * it: there is no frozen copy here to hash (it is unmapped), and
	 * the destination's check of what it loaded is the verdict. */
	if (!rc && st->local_fds) {
		pthread_mutex_lock(&vm->mig.lock);
		vm->mig.src_ram_match = -2;
		vm->mig.src_verify_ms = 0;
		pthread_mutex_unlock(&vm->mig.lock);
		return;
	}
	if (!rc && vm->opts.verify && source_expects(vm, st, &theirs)) {
		t0 = vm_now_ns();
		mine = guest_page_digest(&vm->guest);
		ms = (double)(vm_now_ns() - t0) / 1e6;
		match = mine == theirs;
		if (!mine) /* no memory for the page hashes: not compared */
			fprintf(stderr, "ferry-vm: cannot hash RAM to compare with "
				"the %s: %s\n", st->image_digest ? "snapshot" :
				"destination", strerror(ENOMEM));
		if (!mine)
			match = -1;
		else if (!match)
			fprintf(stderr, "ferry-vm: memory digest %016" PRIx64
				" differs from the %s's %016" PRIx64 "\n",
				mine, st->image_digest ? "snapshot" :
				"destination", theirs);
	}
	pthread_mutex_lock(&vm->mig.lock);
	vm->mig.src_ram_match = match;
	vm->mig.src_verify_ms = ms;
	pthread_mutex_unlock(&vm->mig.lock);
}

/**
 * vm_verify_abandon() - a lazy restore stopped the guest for good: cancel
 * the background verification without waiting for its threads, which may
 * be blocked on pages that never come (they are never joined, and what
 * they use is never freed). The verdict stays as it is.
 * @vm: the VM, its guest stopped.
 */
void vm_verify_abandon(struct vm *vm)
{
	struct guest_verifier *v = vm->guest.verifier;

	pthread_mutex_lock(&vm->mig.lock);
	vm->mig.check.background = false;
	vm->mig.check.pending = false;
	pthread_mutex_unlock(&vm->mig.lock);
	if (!v)
		return;
	atomic_store(&v->cancel, true);
	atomic_store(&vm->guest.verify_armed, false);
}

/**
 * vm_verify_restored() - after a snapshot restore completed (every page
 * in): start the background check if nothing did, wait for it (bounded),
 * and keep the note the report is built from. The RAM digest is compared
 * with the file's image digest, which the engine read too. Migration
 * thread.
 * @vm: the VM, its guest running.
 * @st: the receive's statistics.
 */
void vm_verify_restored(struct vm *vm, const struct ferry_stats *st)
{
	struct guest_verify v;
	char note[sizeof(vm->mig.note)];
	uint64_t stuck;
	int verified;

	if (vm->snap.mapped && st->image_digest != vm->snap.image_digest) {
		fprintf(stderr, "ferry-vm: the engine read image digest %016"
			PRIx64 ", the file's description says %016" PRIx64 "\n",
			st->image_digest, vm->snap.image_digest);
		pthread_mutex_lock(&vm->mig.lock);
		vm->snap.image_digest = 0; /* no digest can match now */
		vm->mig.check.digest_match = false;
		settle(vm);
		pthread_mutex_unlock(&vm->mig.lock);
	}
	verifier_start(&vm->guest);
	stuck = collect_following(vm);
	verified = vm_verified(vm);
	pthread_mutex_lock(&vm->mig.lock);
	v = vm->mig.check;
	pthread_mutex_unlock(&vm->mig.lock);
	if (v.background && !v.done)
		fprintf(stderr, "ferry-vm: background verification checked no page for %" PRIu64 " ms; the verdict is pending\n",
			stuck);
	/* The guest's stall across a snapshot spans the time the file lay
	 * on disk: not a figure of the restore. */
	api_note(verified, NAN, &v, NULL, note, sizeof(note));
	pthread_mutex_lock(&vm->mig.lock);
	snprintf(vm->mig.note, sizeof(vm->mig.note), "%s", note);
	pthread_mutex_unlock(&vm->mig.lock);
}
