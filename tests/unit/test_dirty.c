// SPDX-License-Identifier: MIT
/*
 * test_dirty.c - dirty tracking on real memory: the uffd back end over
 * anonymous memory and over a memfd mapped shared (what ferry-vm uses), and
 * the bitmap back end over a fake VMM.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "memory/memory.h"

#define PG FY_PAGE_SIZE
#define MIB (1024ull * 1024)

enum backing { ANON, MEMFD };

struct mem {
	uint8_t *p;
	size_t size;
	int fd;
};

static void mem_map(struct mem *m, enum backing b, size_t size)
{
	m->size = size;
	m->fd = -1;
	if (b == ANON) {
		m->p = mmap(NULL, size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	} else {
		m->fd = memfd_create("test-dirty", MFD_CLOEXEC);
		assert_true(m->fd >= 0);
		assert_int_equal(ftruncate(m->fd, (off_t)size), 0);
		m->p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
	}
	assert_true(m->p != MAP_FAILED);
}

static void mem_unmap(struct mem *m)
{
	munmap(m->p, m->size);
	if (m->fd >= 0)
		close(m->fd);
}

static void region_of(struct fy_region *rg, const struct mem *m, const char *name)
{
	memset(rg, 0, sizeof(*rg));
	rg->host = m->p;
	rg->size = m->size;
	rg->fd = m->fd;
	snprintf(rg->name, sizeof(rg->name), "%s", name);
}

/* Skip (with the reason printed) where the kernel or privileges say no. */
static void need_uffd(void)
{
	char why[160];

	if (fy_dirty_probe_uffd(why, sizeof(why))) {
		print_message("uffd dirty tracking unavailable: %s\n", why);
		skip();
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* @got must be exactly @pages (any order, duplicates allowed) of @region. */
static void assert_pages(const struct fy_ranges *got, uint32_t region,
			 const uint64_t *pages, size_t n)
{
	uint64_t *sorted = malloc((n ? n : 1) * sizeof(*sorted));
	struct fy_ranges want;
	size_t i;

	assert_non_null(sorted);
	if (n)
		memcpy(sorted, pages, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), cmp_u64);
	fy_ranges_init(&want);
	for (i = 0; i < n; i++)
		if (i == 0 || sorted[i] != sorted[i - 1])
			assert_int_equal(fy_ranges_add(&want, region, sorted[i] * PG, PG), 0);

	for (i = 0; i < got->n && i < want.n; i++) {
		if (got->v[i].region != want.v[i].region ||
		    got->v[i].offset != want.v[i].offset ||
		    got->v[i].length != want.v[i].length)
			break;
	}
	if (got->n != want.n || i != want.n) {
		print_message("range %zu differs: got %zu ranges, want %zu\n", i, got->n, want.n);
		if (i < got->n)
			print_message("  got  r%u +%#llx len %#llx\n", got->v[i].region,
				      (unsigned long long)got->v[i].offset,
				      (unsigned long long)got->v[i].length);
		if (i < want.n)
			print_message("  want r%u +%#llx len %#llx\n", want.v[i].region,
				      (unsigned long long)want.v[i].offset,
				      (unsigned long long)want.v[i].length);
		fail();
	}
	assert_int_equal(got->bytes, want.bytes);
	fy_ranges_free(&want);
	free(sorted);
}

static void collect_expect(struct fy_dirty *d, uint32_t region,
			   const uint64_t *pages, size_t n)
{
	struct fy_ranges got;
	int rc;

	fy_ranges_init(&got);
	rc = fy_dirty_collect(d, &got);
	if (rc)
		print_message("collect: %s\n", d->err);
	assert_int_equal(rc, 0);
	assert_pages(&got, region, pages, n);
	fy_ranges_free(&got);
}

static void collect_expect_nothing(struct fy_dirty *d)
{
	collect_expect(d, 0, NULL, 0);
}

static void poke(uint8_t *base, uint64_t page)
{
	/* Vary the byte within the page: any write must count. */
	((volatile uint8_t *)base)[page * PG + (page * 37) % PG] += 1;
}

struct poker {
	uint8_t *base;
	const uint64_t *pages;
	size_t n;
};

static void *poke_thread(void *arg)
{
	struct poker *pk = arg;
	size_t i;

	for (i = 0; i < pk->n; i++)
		poke(pk->base, pk->pages[i]);
	return NULL;
}

static void start_uffd(struct fy_dirty *d, const struct fy_region *rg, size_t n)
{
	int rc = fy_dirty_start(d, FY_DIRTY_UFFD, rg, n, NULL, NULL);

	if (rc)
		print_message("start: %s\n", d->err);
	assert_int_equal(rc, 0);
}

#define REGION_64M (64 * MIB)
#define NPAGES_64M (REGION_64M / PG)

/*
 * The main scenario a migration goes through, on 64 MiB. Half the region
 * is populated before tracking starts, half is untouched, so both kinds of
 * page are covered.
 */
static void test_uffd_scattered_writes(void **state)
{
	enum backing b = *(enum backing *)*state;
	static const uint64_t main_pages[] = {
		0, 1, 2, 63, 64, 65, 511, 512, 1000, 4095, 4096, 8191, 8192,
		10000, 10001, 10002, 10003, 10004, 10005, 10006, 10007,
		NPAGES_64M - 1,
	};
	static const uint64_t thread_pages[] = {
		3, 700, 8193, 12000, 12001, 12345, NPAGES_64M - 2,
	};
	static const uint64_t later_pages[] = { 5, 6, 9000, 16000 };
	uint64_t both[sizeof(main_pages) / 8 + sizeof(thread_pages) / 8];
	struct poker pk = { .pages = thread_pages,
			    .n = sizeof(thread_pages) / sizeof(thread_pages[0]) };
	struct fy_region rg;
	struct fy_dirty d;
	struct mem m;
	pthread_t t;
	volatile uint64_t sum = 0;
	size_t i, nmain = sizeof(main_pages) / sizeof(main_pages[0]);

	need_uffd();
	mem_map(&m, b, REGION_64M);
	memset(m.p, 0xa5, m.size / 2);
	region_of(&rg, &m, b == ANON ? "anon" : "memfd");
	start_uffd(&d, &rg, 1);

	/* Nothing written yet: nothing reported. */
	collect_expect_nothing(&d);

	/* Writes from this thread and from another are all reported,
	 * coalesced (2 and 3, and the last two pages, come from different
	 * threads). */
	for (i = 0; i < nmain; i++)
		poke(m.p, main_pages[i]);
	pk.base = m.p;
	assert_int_equal(pthread_create(&t, NULL, poke_thread, &pk), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	memcpy(both, main_pages, sizeof(main_pages));
	memcpy(both + nmain, thread_pages, sizeof(thread_pages));
	collect_expect(&d, 0, both, sizeof(both) / sizeof(both[0]));

	/* Each write is reported once. */
	collect_expect_nothing(&d);

	/* Writes after a collect (to pages reported before, too) are
	 * reported by the next one. */
	for (i = 0; i < sizeof(later_pages) / sizeof(later_pages[0]); i++)
		poke(m.p, later_pages[i]);
	poke(m.p, 0);
	poke(m.p, 0);
	{
		uint64_t want[] = { 5, 6, 9000, 16000, 0 };

		collect_expect(&d, 0, want, 5);
	}

	/* Reads, of populated and never-touched pages alike, do not count. */
	for (i = 0; i < m.size; i += PG)
		sum += m.p[i];
	(void)sum;
	collect_expect_nothing(&d);

	fy_dirty_stop(&d);
	/* After stop the memory is ordinary memory again. */
	memset(m.p, 1, m.size);
	mem_unmap(&m);
}

/* Writing every page reports the region as one range. */
static void test_uffd_every_page(void **state)
{
	enum backing b = *(enum backing *)*state;
	struct fy_ranges got;
	struct fy_region rg;
	struct fy_dirty d;
	struct mem m;
	size_t i;

	need_uffd();
	mem_map(&m, b, REGION_64M);
	region_of(&rg, &m, "all");
	start_uffd(&d, &rg, 1);
	for (i = 0; i < NPAGES_64M; i++)
		poke(m.p, i);
	fy_ranges_init(&got);
	assert_int_equal(fy_dirty_collect(&d, &got), 0);
	assert_int_equal(got.n, 1);
	assert_int_equal(got.v[0].region, 0);
	assert_int_equal(got.v[0].offset, 0);
	assert_int_equal(got.v[0].length, REGION_64M);
	assert_int_equal(got.bytes, REGION_64M);
	fy_ranges_free(&got);
	collect_expect_nothing(&d);
	fy_dirty_stop(&d);
	mem_unmap(&m);
}

/*
 * More separate runs than one PAGEMAP_SCAN output vector holds (8192):
 * every other page of 128 MiB is 16384 runs, so the scan has to resume
 * where it stopped, without losing or repeating a page.
 */
static void test_uffd_many_runs(void **state)
{
	enum backing b = *(enum backing *)*state;
	const size_t npages = 2 * NPAGES_64M;
	size_t n = 0, i;
	uint64_t *pages = malloc(npages / 2 * sizeof(*pages));
	struct fy_region rg;
	struct fy_dirty d;
	struct mem m;

	need_uffd();
	assert_non_null(pages);
	mem_map(&m, b, npages * PG);
	region_of(&rg, &m, "runs");
	start_uffd(&d, &rg, 1);
	for (i = 1; i < npages; i += 2) {
		poke(m.p, i);
		pages[n++] = i;
	}
	collect_expect(&d, 0, pages, n);
	collect_expect_nothing(&d);
	fy_dirty_stop(&d);
	mem_unmap(&m);
	free(pages);
}

/*
 * Anonymous memory backed by transparent huge pages (what the design asks
 * for where the backing allows): a one-byte write must not cost more than
 * its huge page, and is reported once.
 */
static void test_uffd_thp_anon(void **state)
{
	const size_t huge = 2 * MIB;
	struct fy_ranges got;
	struct fy_region rg;
	struct fy_dirty d;
	uint8_t *raw, *h;

	need_uffd();
	raw = mmap(NULL, 3 * huge, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(raw != MAP_FAILED);
	h = (uint8_t *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
	if (madvise(h, 2 * huge, MADV_HUGEPAGE))
		print_message("[ INFO     ] no MADV_HUGEPAGE: %s\n", strerror(errno));
	memset(h, 1, 2 * huge);
	memset(&rg, 0, sizeof(rg));
	rg.host = h;
	rg.size = 2 * huge;
	start_uffd(&d, &rg, 1);
	collect_expect_nothing(&d);

	h[7 * PG + 1] = 2;
	fy_ranges_init(&got);
	assert_int_equal(fy_dirty_collect(&d, &got), 0);
	assert_true(got.n >= 1);
	assert_true(got.v[0].offset <= 7 * PG);
	assert_true(got.v[0].offset + got.v[0].length > 7 * PG);
	assert_true(got.bytes <= huge);
	if (got.bytes != PG)
		print_message("[ INFO     ] THP write reported as %llu bytes\n",
			      (unsigned long long)got.bytes);
	fy_ranges_free(&got);
	collect_expect_nothing(&d);
	fy_dirty_stop(&d);
	munmap(raw, 3 * huge);
}

/* Writes made by the kernel on our behalf (read(2) into guest memory). */
static void test_uffd_kernel_writes(void **state)
{
	enum backing b = *(enum backing *)*state;
	static const uint64_t pages[] = { 7, 300 };
	struct fy_region rg;
	struct fy_dirty d;
	struct mem m;
	char buf[100];
	int p[2];
	size_t i;

	need_uffd();
	mem_map(&m, b, 4 * MIB);
	memset(m.p, 0, 2 * MIB); /* page 7 populated, page 300 not */
	region_of(&rg, &m, "kernel");
	start_uffd(&d, &rg, 1);
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(pipe(p), 0);
	for (i = 0; i < 2; i++) {
		assert_int_equal(write(p[1], buf, sizeof(buf)), sizeof(buf));
		assert_int_equal(read(p[0], m.p + pages[i] * PG + 5, sizeof(buf)),
				 sizeof(buf));
	}
	close(p[0]);
	close(p[1]);
	collect_expect(&d, 0, pages, 2);
	fy_dirty_stop(&d);
	mem_unmap(&m);
}

/* Two regions of different backings in one tracker. */
static void test_uffd_two_regions(void **state)
{
	struct fy_region rg[2];
	struct fy_ranges got;
	struct fy_dirty d;
	struct mem a, s;

	need_uffd();
	mem_map(&a, ANON, 8 * MIB);
	mem_map(&s, MEMFD, 8 * MIB);
	region_of(&rg[0], &a, "low");
	region_of(&rg[1], &s, "high");
	rg[1].gpa = 1ull << 32;
	start_uffd(&d, rg, 2);
	collect_expect_nothing(&d);

	poke(a.p, 10);
	poke(a.p, 11);
	poke(s.p, 0);
	poke(s.p, 2047);
	fy_ranges_init(&got);
	assert_int_equal(fy_dirty_collect(&d, &got), 0);
	assert_int_equal(got.n, 3);
	assert_int_equal(got.v[0].region, 0);
	assert_int_equal(got.v[0].offset, 10 * PG);
	assert_int_equal(got.v[0].length, 2 * PG);
	assert_int_equal(got.v[1].region, 1);
	assert_int_equal(got.v[1].offset, 0);
	assert_int_equal(got.v[1].length, PG);
	assert_int_equal(got.v[2].region, 1);
	assert_int_equal(got.v[2].offset, 2047 * PG);
	assert_int_equal(got.v[2].length, PG);
	assert_int_equal(got.bytes, 4 * PG);
	fy_ranges_free(&got);
	fy_dirty_stop(&d);
	mem_unmap(&a);
	mem_unmap(&s);
}

/*
 * What a migration needs, under a concurrent writer: a copy refreshed
 * with every collected range ends up identical to the source once the
 * writer stops and a last collect is applied. A lost write would leave a
 * stale page in the copy.
 */
struct writer {
	uint8_t *base;
	size_t pages;
	atomic_int stop;	/* a volatile int raced (ThreadSanitizer) */
	uint64_t seed;
	uint64_t writes;
};

static void *writer_thread(void *arg)
{
	struct writer *w = arg;
	uint64_t x = w->seed;

	while (!atomic_load(&w->stop)) {
		uint64_t page;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		/* A quarter of the region gets the writes. */
		page = (x >> 8) % (w->pages / 4) * 4 + (x & 3 ? 0 : 1);
		((volatile uint64_t *)(w->base + page * PG))[(x >> 40) % (PG / 8)] = x;
		w->writes++;
	}
	return NULL;
}

static void apply(uint8_t *copy, const uint8_t *src, const struct fy_ranges *r)
{
	size_t i;

	/* The writer runs meanwhile: the race dirty tracking is for. */
	FY_GUEST_READS_BEGIN();
	for (i = 0; i < r->n; i++)
		memcpy(copy + r->v[i].offset, src + r->v[i].offset, r->v[i].length);
	FY_GUEST_READS_END();
}

static void test_uffd_concurrent_writer_copy_converges(void **state)
{
	enum backing b = *(enum backing *)*state;
	struct writer w = { .seed = 88172645463325252ull };
	struct fy_ranges got;
	struct fy_region rg;
	struct fy_dirty d;
	struct mem m;
	uint8_t *copy;
	pthread_t t;
	int pass, rc;

	need_uffd();
	mem_map(&m, b, REGION_64M);
	copy = malloc(m.size);
	assert_non_null(copy);
	region_of(&rg, &m, "race");
	w.base = m.p;
	w.pages = NPAGES_64M;
	fy_ranges_init(&got);

	start_uffd(&d, &rg, 1);
	assert_int_equal(pthread_create(&t, NULL, writer_thread, &w), 0);
	/* First pass: everything, copied after tracking started. */
	FY_GUEST_READS_BEGIN();
	memcpy(copy, m.p, m.size);
	FY_GUEST_READS_END();
	for (pass = 0; pass < 50; pass++) {
		fy_ranges_clear(&got);
		rc = fy_dirty_collect(&d, &got);
		if (rc)
			print_message("collect: %s\n", d.err);
		assert_int_equal(rc, 0);
		apply(copy, m.p, &got);
	}
	atomic_store(&w.stop, 1);
	assert_int_equal(pthread_join(t, NULL), 0);
	fy_ranges_clear(&got);
	assert_int_equal(fy_dirty_collect(&d, &got), 0);
	apply(copy, m.p, &got);
	assert_true(w.writes > 0);
	assert_memory_equal(copy, m.p, m.size);

	fy_ranges_free(&got);
	fy_dirty_stop(&d);
	free(copy);
	mem_unmap(&m);
}

static void test_uffd_rejects_bad_regions(void **state)
{
	struct fy_region rg;
	struct fy_dirty d;
	struct mem m;

	mem_map(&m, ANON, 1 * MIB);
	region_of(&rg, &m, "bad");
	rg.size = 1000;
	assert_int_equal(fy_dirty_start(&d, FY_DIRTY_UFFD, &rg, 1, NULL, NULL), -EINVAL);
	assert_true(strlen(d.err) > 0);
	region_of(&rg, &m, "bad");
	rg.host += 100;
	rg.size = 64 * PG;
	assert_int_equal(fy_dirty_start(&d, FY_DIRTY_UFFD, &rg, 1, NULL, NULL), -EINVAL);
	assert_non_null(strstr(d.err, "aligned"));
	fy_dirty_stop(&d);
	mem_unmap(&m);
}

static void test_stop_is_harmless(void **state)
{
	struct fy_dirty d;
	struct fy_ranges r;

	memset(&d, 0, sizeof(d));
	fy_dirty_stop(&d);
	fy_dirty_stop(&d);
	fy_dirty_stop(NULL);
	fy_ranges_init(&r);
	assert_true(fy_dirty_collect(&d, &r) < 0);
	fy_ranges_free(&r);
}

static void test_probe(void **state)
{
	char why[160];
	int rc = fy_dirty_probe_uffd(why, sizeof(why));

	/* Either it works, or it says why. */
	if (rc) {
		assert_true(strlen(why) > 0);
		print_message("probe: %s\n", why);
		skip();
	}
	assert_int_equal(fy_dirty_probe_uffd(NULL, 0), 0);
}

/* ---- bitmap back end ---- */

struct fake_vmm {
	size_t calls;
	int fail_with;
	/* Pages each region reports on the next call. */
	const uint64_t *pages[2];
	size_t npages[2];
	size_t expect_pages[2];
};

static int fake_bitmap(void *opaque, uint32_t region, uint64_t *bitmap, size_t pages)
{
	struct fake_vmm *v = opaque;
	size_t i;

	v->calls++;
	assert_true(region < 2);
	assert_int_equal(pages, v->expect_pages[region]);
	/* The scratch bitmap comes zeroed, even after a bigger region. */
	for (i = 0; i < (pages + 63) / 64; i++)
		assert_int_equal(bitmap[i], 0);
	if (v->fail_with)
		return v->fail_with;
	for (i = 0; i < v->npages[region]; i++)
		bitmap[v->pages[region][i] / 64] |= 1ull << (v->pages[region][i] % 64);
	return 0;
}

static void test_bitmap_backend(void **state)
{
	static const uint64_t big[] = { 0, 1, 2, 64, 65, 999 };
	static const uint64_t small[] = { 4, 5, 6 };
	struct fy_region rg[2] = {
		{ .size = 1000 * PG, .name = "big" },   /* 1000 pages: partial word */
		{ .size = 7 * PG, .name = "small" },
	};
	struct fake_vmm v = {
		.pages = { big, small }, .npages = { 6, 3 },
		.expect_pages = { 1000, 7 },
	};
	struct fy_ranges got;
	struct fy_dirty d;

	assert_int_equal(fy_dirty_start(&d, FY_DIRTY_BITMAP, rg, 2, NULL, NULL), -EINVAL);
	assert_int_equal(fy_dirty_start(&d, FY_DIRTY_BITMAP, rg, 2, fake_bitmap, &v), 0);
	/* Start drains the VMM's log once per region: writes from before
	 * tracking began are covered by the first full pass. */
	assert_int_equal(v.calls, 2);
	fy_ranges_init(&got);
	assert_int_equal(fy_dirty_collect(&d, &got), 0);
	assert_int_equal(v.calls, 4);
	assert_int_equal(got.n, 4);
	assert_int_equal(got.v[0].region, 0);
	assert_int_equal(got.v[0].offset, 0);
	assert_int_equal(got.v[0].length, 3 * PG);
	assert_int_equal(got.v[1].offset, 64 * PG);
	assert_int_equal(got.v[1].length, 2 * PG);
	assert_int_equal(got.v[2].offset, 999 * PG);
	assert_int_equal(got.v[2].length, PG);
	assert_int_equal(got.v[3].region, 1);
	assert_int_equal(got.v[3].offset, 4 * PG);
	assert_int_equal(got.v[3].length, 3 * PG);
	assert_int_equal(got.bytes, 9 * PG);

	/* Nothing dirty: nothing reported. */
	v.npages[0] = v.npages[1] = 0;
	fy_ranges_clear(&got);
	assert_int_equal(fy_dirty_collect(&d, &got), 0);
	assert_int_equal(got.n, 0);

	/* The VMM's error reaches the caller, with detail. */
	v.fail_with = -EIO;
	assert_int_equal(fy_dirty_collect(&d, &got), -EIO);
	assert_non_null(strstr(d.err, "big"));

	fy_ranges_free(&got);
	fy_dirty_stop(&d);
	fy_dirty_stop(&d);
}

/* ---- timing (informational) ---- */

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void time_collects(enum backing b)
{
	const size_t size = 1024 * MIB, pages = size / PG;
	double t0, clean = 1e9, dirty;
	struct fy_ranges got;
	struct fy_region rg;
	struct fy_dirty d;
	struct mem m;
	uint64_t x = 2463534242ull, n = 0;
	uint8_t *seen;
	int i;

	mem_map(&m, b, size);
	memset(m.p, 1, size); /* a guest that has touched all its RAM */
	region_of(&rg, &m, "1g");
	seen = calloc(pages, 1);
	assert_non_null(seen);
	fy_ranges_init(&got);
	start_uffd(&d, &rg, 1);

	for (i = 0; i < 5; i++) {
		fy_ranges_clear(&got);
		t0 = now_ms();
		assert_int_equal(fy_dirty_collect(&d, &got), 0);
		t0 = now_ms() - t0;
		if (t0 < clean)
			clean = t0;
		assert_int_equal(got.n, 0);
	}
	/* 10% of the pages, at random. */
	while (n < pages / 10) {
		uint64_t p;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p = x % pages;
		if (!seen[p]) {
			seen[p] = 1;
			n++;
			poke(m.p, p);
		}
	}
	fy_ranges_clear(&got);
	t0 = now_ms();
	assert_int_equal(fy_dirty_collect(&d, &got), 0);
	dirty = now_ms() - t0;
	assert_int_equal(got.bytes, n * PG);
	print_message("[ INFO     ] collect on 1 GiB %s: clean %.3f ms, 10%% dirty "
		      "(%llu pages in %zu ranges) %.3f ms\n",
		      b == ANON ? "anonymous" : "memfd shared", clean,
		      (unsigned long long)n, got.n, dirty);

	fy_ranges_free(&got);
	fy_dirty_stop(&d);
	free(seen);
	mem_unmap(&m);
}

static void test_uffd_collect_timing(void **state)
{
	need_uffd();
	time_collects(ANON);
	time_collects(MEMFD);
}

static enum backing anon = ANON, shm = MEMFD;

#define BOTH(fn) \
	cmocka_unit_test_prestate(fn, &anon), \
	cmocka_unit_test_prestate(fn, &shm)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_probe),
		BOTH(test_uffd_scattered_writes),
		BOTH(test_uffd_every_page),
		BOTH(test_uffd_many_runs),
		BOTH(test_uffd_kernel_writes),
		BOTH(test_uffd_concurrent_writer_copy_converges),
		cmocka_unit_test(test_uffd_thp_anon),
		cmocka_unit_test(test_uffd_two_regions),
		cmocka_unit_test(test_uffd_rejects_bad_regions),
		cmocka_unit_test(test_stop_is_harmless),
		cmocka_unit_test(test_bitmap_backend),
		cmocka_unit_test(test_uffd_collect_timing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
