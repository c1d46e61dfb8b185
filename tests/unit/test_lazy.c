// SPDX-License-Identifier: MIT
/*
 * test_lazy.c - the userfaultfd lazy loader on real memory with real
 * threads: anonymous memory with transparent huge pages, a memfd mapped
 * shared, and a hugetlb memfd (2 MiB units), each filled from a page
 * source that serves known content and counts what it is asked for.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ferry.h"
#include "memory/lazy.h"

#define PG FY_PAGE_SIZE
#define MIB (1024ull * 1024)
#define HUGE_SZ (2 * MIB)
#define NO_PAGE UINT64_MAX

enum backing { ANON, MEMFD, HUGETLB };

static const char *const backing_name[] = { "anon", "memfd", "hugetlb" };

struct mem {
	enum backing b;
	uint8_t *p;
	size_t size;
	int fd;
	uint64_t unit;
	long pool_added; /* huge pages we added to the pool */
};

/* ---------------------------------------------------------------------- */
/* content                                                                */
/* ---------------------------------------------------------------------- */

/* Some scattered zero pages and every fifth 2 MiB block whole. */
static bool page_is_zero(uint64_t pg)
{
	return pg % 7 == 3 || (pg / 512) % 5 == 2;
}

static void page_fill(uint8_t *dst, uint64_t pg)
{
	uint64_t *w = (uint64_t *)dst;
	size_t i;

	for (i = 0; i < PG / 8; i++)
		w[i] = (pg + 1) * 0x9E3779B97F4A7C15ull ^ i * 0x100000001b3ull;
}

static bool page_ok(const uint8_t *p, uint64_t pg)
{
	uint8_t want[PG];

	if (page_is_zero(pg))
		memset(want, 0, PG);
	else
		page_fill(want, pg);
	return !memcmp(p, want, PG);
}

static uint64_t expected_zero_pages(uint64_t pages)
{
	uint64_t pg, n = 0;

	for (pg = 0; pg < pages; pg++)
		n += page_is_zero(pg);
	return n;
}

/* The page source: known content, a fetch count per page, optional failure. */
struct tsrc {
	uint64_t pages;
	uint64_t fail_page;
	_Atomic uint32_t *count;
	atomic_bool bad; /* asked for something outside the contract */
};

static int tsrc_fetch(void *opaque, uint32_t region, uint64_t offset,
		      uint64_t len, void *buf, uint64_t *zero, char *err,
		      size_t errlen)
{
	struct tsrc *s = opaque;
	uint8_t *b = buf;
	uint64_t i, pg;

	if (region != 0 || offset % PG || len % PG || !len ||
	    offset / PG + len / PG > s->pages) {
		atomic_store(&s->bad, true);
		return -EINVAL;
	}
	for (i = 0; i < len / PG; i++) {
		pg = offset / PG + i;
		if (pg == s->fail_page) {
			snprintf(err, errlen, "page %llu: slot checksum mismatch",
				 (unsigned long long)pg);
			return -EIO;
		}
	}
	for (i = 0; i < len / PG; i++) {
		pg = offset / PG + i;
		atomic_fetch_add(&s->count[pg], 1);
		if (page_is_zero(pg)) {
			zero[i / 64] |= UINT64_C(1) << (i % 64);
			/* Unspecified bytes: the loader must not copy them. */
			memset(b + i * PG, 0xAA, PG);
		} else {
			page_fill(b + i * PG, pg);
		}
	}
	return 0;
}

static void tsrc_init(struct tsrc *s, uint64_t pages, uint64_t fail_page)
{
	s->pages = pages;
	s->fail_page = fail_page;
	s->count = calloc(pages, sizeof(*s->count));
	assert_non_null(s->count);
	atomic_store(&s->bad, false);
}

/* ---------------------------------------------------------------------- */
/* memory                                                                 */
/* ---------------------------------------------------------------------- */

static long read_long(const char *path)
{
	char buf[64] = "";
	long v = -1;
	FILE *f = fopen(path, "r");

	if (f) {
		if (fgets(buf, sizeof(buf), f))
			v = strtol(buf, NULL, 10);
		fclose(f);
	}
	return v;
}

static bool write_long(const char *path, long v)
{
	FILE *f = fopen(path, "w");
	bool ok;

	if (!f)
		return false;
	ok = fprintf(f, "%ld\n", v) > 0;
	return fclose(f) == 0 && ok;
}

#define NR_HUGE "/proc/sys/vm/nr_hugepages"
#define FREE_HUGE "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"

/* Huge pages this process added to the pool and has not given back (a
 * failed test leaves its own; the group teardown gives them back). */
static long pool_added_total;

/* Shrink the pool by what we added, leaving others' additions alone. */
static void huge_release(long added)
{
	long nr = read_long(NR_HUGE);

	if (added <= 0 || nr < 0)
		return;
	write_long(NR_HUGE, nr > added ? nr - added : 0);
	pool_added_total -= added;
}

/*
 * Make @need free 2 MiB pages, raising the pool by what is missing. The
 * pool shrinks back in mem_unmap(). Returns false with the reason printed.
 */
static bool huge_reserve(struct mem *m, long need)
{
	long nr = read_long(NR_HUGE), avail = read_long(FREE_HUGE);

	m->pool_added = 0;
	if (nr < 0 || avail < 0) {
		print_message("[ SKIP     ] hugetlb: no 2 MiB pool (%s)\n", FREE_HUGE);
		return false;
	}
	if (avail >= need)
		return true;
	if (!write_long(NR_HUGE, nr + need - avail)) {
		print_message("[ SKIP     ] hugetlb: cannot raise %s: %s\n", NR_HUGE,
			      strerror(errno));
		return false;
	}
	m->pool_added = need - avail;
	pool_added_total += m->pool_added;
	if (read_long(FREE_HUGE) < need) {
		print_message("[ SKIP     ] hugetlb: the kernel found only %ld of %ld "
			      "free huge pages\n", read_long(FREE_HUGE), need);
		huge_release(m->pool_added);
		m->pool_added = 0;
		return false;
	}
	return true;
}

/* Map fresh memory of @size; skips the test (reason printed) if it cannot. */
static void mem_map(struct mem *m, enum backing b, size_t size)
{
	memset(m, 0, sizeof(*m));
	m->b = b;
	m->fd = -1;
	m->size = size;
	m->unit = b == HUGETLB ? HUGE_SZ : PG;
	if (b == ANON) {
		m->p = mmap(NULL, size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		assert_true(m->p != MAP_FAILED);
		madvise(m->p, size, MADV_HUGEPAGE);
		return;
	}
	if (b == HUGETLB && !huge_reserve(m, (long)(size / HUGE_SZ)))
		skip();
	m->fd = memfd_create("test-lazy", MFD_CLOEXEC | (b == HUGETLB ? MFD_HUGETLB : 0));
	if (m->fd < 0 && b == HUGETLB) {
		print_message("[ SKIP     ] hugetlb memfd: %s\n", strerror(errno));
		huge_release(m->pool_added);
		skip();
	}
	assert_true(m->fd >= 0);
	assert_int_equal(ftruncate(m->fd, (off_t)size), 0);
	m->p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
	assert_true(m->p != MAP_FAILED);
}

static void mem_unmap(struct mem *m)
{
	munmap(m->p, m->size);
	if (m->fd >= 0)
		close(m->fd);
	huge_release(m->pool_added);
}

/* Give back the unit at @off: it reads as zeros afterwards. */
static void mem_drop(struct mem *m, uint64_t off)
{
	if (m->b == ANON)
		assert_int_equal(madvise(m->p + off, m->unit, MADV_DONTNEED), 0);
	else
		assert_int_equal(fallocate(m->fd, FALLOC_FL_PUNCH_HOLE |
					   FALLOC_FL_KEEP_SIZE, (off_t)off,
					   (off_t)m->unit), 0);
}

/* Whether the mapping at @p is registered for missing faults ("um"). */
static bool uffd_missing_armed(const void *p)
{
	char line[512];
	unsigned long lo, hi;
	bool inside = false, armed = false;
	FILE *f = fopen("/proc/self/smaps", "r");

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
			inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
			continue;
		}
		if (inside && !strncmp(line, "VmFlags:", 8)) {
			armed = strstr(line, " um") != NULL;
			break;
		}
	}
	fclose(f);
	return armed;
}

/* Start a loader on @m from @src; @present as in fy_lazy_config. */
static struct fy_lazy *start_with(struct mem *m, struct fy_lazy_source src,
				  unsigned threads, const uint64_t *present)
{
	struct fy_region rg = { .host = m->p, .size = m->size, .fd = m->fd };
	const uint64_t *const maps[1] = { present };
	struct fy_lazy_config cfg = {
		.regions = &rg,
		.nregions = 1,
		.source = src,
		.background_threads = threads,
		.present = present ? maps : NULL,
	};
	struct fy_lazy *l = NULL;
	char err[256] = "";
	int rc;

	snprintf(rg.name, sizeof(rg.name), "%s", backing_name[m->b]);
	rc = fy_lazy_start(&l, &cfg, err, sizeof(err));
	if (rc == -EPERM || rc == -ENOSYS) {
		print_message("[ SKIP     ] userfaultfd: %s\n", err);
		mem_unmap(m);
		skip();
	}
	if (rc)
		print_message("fy_lazy_start: %s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(l);
	return l;
}

static struct fy_lazy *start(struct mem *m, struct tsrc *s, unsigned threads)
{
	return start_with(m, (struct fy_lazy_source){ .fetch = tsrc_fetch, .opaque = s },
			  threads, NULL);
}

/* ---------------------------------------------------------------------- */
/* threads touching guest memory                                          */
/* ---------------------------------------------------------------------- */

struct reader {
	pthread_t t;
	const struct mem *m;
	unsigned seed;
	unsigned reads;
	uint64_t stride, first; /* touch units first, first + stride, ... */
	unsigned wrong;
};

/* Read random pages and check their bytes, while the background fills. */
static void *reader_random(void *arg)
{
	struct reader *r = arg;
	uint64_t pages = r->m->size / PG, pg;
	unsigned i;

	for (i = 0; i < r->reads; i++) {
		pg = (uint64_t)rand_r(&r->seed) % pages;
		r->wrong += !page_ok(r->m->p + pg * PG, pg);
	}
	return NULL;
}

/* Touch one page in the middle of each of a fixed set of units. */
static void *reader_units(void *arg)
{
	struct reader *r = arg;
	uint64_t per = r->m->unit / PG, units = r->m->size / r->m->unit, u, pg;

	for (u = r->first; u < units; u += r->stride) {
		pg = u * per + per / 2;
		r->wrong += !page_ok(r->m->p + pg * PG, pg);
	}
	return NULL;
}

/* Read the middle page of unit @u in a thread and check it, failing if
 * that takes 5 s. */
static void reader_touch(const struct mem *m, uint64_t u)
{
	struct reader r = { .m = m, .first = u, .stride = m->size };
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 5;
	assert_int_equal(pthread_create(&r.t, NULL, reader_units, &r), 0);
	assert_int_equal(pthread_timedjoin_np(r.t, NULL, &ts), 0);
	assert_int_equal(r.wrong, 0);
}

struct toucher {
	pthread_t t;
	volatile uint8_t *p;
	atomic_bool done;
	uint8_t seen;
};

static void *touch_main(void *arg)
{
	struct toucher *t = arg;

	t->seen = *t->p;
	atomic_store(&t->done, true);
	return NULL;
}

/* Whether @t's thread is still blocked @ms from now. */
static bool still_blocked(struct toucher *t, int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	if (pthread_timedjoin_np(t->t, NULL, &ts) == 0)
		return false;
	return !atomic_load(&t->done);
}

/* ---------------------------------------------------------------------- */
/* checks                                                                 */
/* ---------------------------------------------------------------------- */

static void check_all_pages(const struct mem *m)
{
	uint64_t pg, wrong = 0;

	for (pg = 0; pg < m->size / PG; pg++)
		wrong += !page_ok(m->p + pg * PG, pg);
	assert_int_equal(wrong, 0);
}

static void check_complete_stats(struct fy_lazy *l, const struct mem *m)
{
	struct fy_lazy_stats st;

	fy_lazy_stats(l, &st);
	assert_int_equal(st.pages, m->size / PG);
	assert_int_equal(st.placed, st.pages);
	assert_int_equal(st.zero_pages, expected_zero_pages(st.pages));
	assert_int_equal(st.error, 0);
	assert_true(st.complete_ms > 0);
	assert_true(st.fault_pages <= st.pages);
}

/* finish leaves plain memory: no longer registered, a dropped unit reads 0. */
static void check_finish(struct fy_lazy *l, struct mem *m)
{
	assert_true(uffd_missing_armed(m->p));
	assert_int_equal(fy_lazy_finish(l), 0);
	assert_false(uffd_missing_armed(m->p));
	mem_drop(m, m->size - m->unit);
	assert_int_equal(m->p[m->size - 1], 0);
	m->p[m->size - 1] = 7;
	assert_int_equal(m->p[m->size - 1], 7);
}

/* ---------------------------------------------------------------------- */
/* tests                                                                  */
/* ---------------------------------------------------------------------- */

/*
 * Readers touch random pages while two background threads fill: every
 * read sees the right bytes, every page ends correct, each page is
 * fetched once or twice (a fault racing with the background), never more.
 */
static void test_fill(void **state)
{
	enum backing b = *(enum backing *)*state;
	struct fy_lazy_stats st;
	struct reader rd[4];
	struct tsrc s;
	struct mem m;
	struct fy_lazy *l;
	uint64_t pg, units;
	unsigned i, wrong = 0;

	mem_map(&m, b, b == HUGETLB ? 16 * MIB : 32 * MIB);
	tsrc_init(&s, m.size / PG, NO_PAGE);
	l = start(&m, &s, 2);
	for (i = 0; i < 4; i++) {
		rd[i] = (struct reader){ .m = &m, .seed = 17 + i, .reads = 300 };
		assert_int_equal(pthread_create(&rd[i].t, NULL, reader_random, &rd[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(rd[i].t, NULL);
		wrong += rd[i].wrong;
	}
	assert_int_equal(wrong, 0);
	assert_int_equal(fy_lazy_wait(l, 20000), 0);
	check_all_pages(&m);
	check_complete_stats(l, &m);
	fy_lazy_stats(l, &st);
	print_message("[ INFO     ] %s with 2 background threads: %llu faults, wait p50 %.1f us "
		      "p99 %.1f us max %.1f us, complete in %.1f ms\n", backing_name[b],
		      (unsigned long long)st.faults, st.wait_p50_us, st.wait_p99_us,
		      st.wait_max_us, st.complete_ms);
	assert_false(atomic_load(&s.bad));
	for (pg = 0; pg < s.pages; pg++) {
		assert_true(s.count[pg] >= 1);
		assert_true(s.count[pg] <= 2);
	}
	units = m.size / m.unit;
	for (pg = 0; pg < units; pg++)
		assert_true(fy_lazy_has(l, 0, pg * m.unit));
	check_finish(l, &m);
	fy_lazy_free(l);
	free(s.count);
	mem_unmap(&m);
}

/* Place the whole region from outside in 1 MiB (or unit) pieces, some
 * from buffers that are not page aligned. */
static void place_all(struct fy_lazy *l, const struct mem *m, struct tsrc *s)
{
	uint64_t piece = m->unit > MIB ? m->unit : MIB, off;
	uint8_t *buf = mmap(NULL, piece + PG, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t zero[MIB / PG / 64 * 2];
	struct tsrc remote = *s;
	_Atomic uint32_t *count = calloc(s->pages, sizeof(*count));
	char err[128];
	uint8_t *at;

	assert_true(buf != MAP_FAILED);
	assert_non_null(count);
	remote.count = count; /* the caller's counts are the loader's fetches */
	for (off = 0; off < m->size; off += piece) {
		at = (off / piece) % 2 ? buf + 8 : buf;
		memset(zero, 0, sizeof(zero));
		assert_int_equal(tsrc_fetch(&remote, 0, off, piece, at, zero, err,
					    sizeof(err)), 0);
		assert_int_equal(fy_lazy_place(l, 0, off, piece, at, zero), 0);
	}
	munmap(buf, piece + PG);
	free(count);
}

/*
 * No background: threads that touch pages fault, and exactly their units
 * are fetched and placed by the fault path; the rest arrives through
 * fy_lazy_place() (postcopy's background stream).
 */
static void test_faults_then_place(void **state)
{
	enum backing b = *(enum backing *)*state;
	uint64_t per, units, u, touched = 0, stride = 64;
	struct fy_lazy_stats st, st2;
	struct reader rd[4];
	struct tsrc s;
	struct mem m;
	struct fy_lazy *l;
	unsigned i, wrong = 0;
	uint8_t page[PG];
	int pfd[2];

	mem_map(&m, b, b == HUGETLB ? 16 * MIB : 32 * MIB);
	per = m.unit / PG;
	units = m.size / m.unit;
	tsrc_init(&s, m.size / PG, NO_PAGE);
	l = start(&m, &s, 0);
	/* A fault taken in the kernel (write(2) reading guest memory, as a
	 * VMM's I/O or KVM does) is served too: unit 0's middle page. */
	assert_int_equal(pipe(pfd), 0);
	assert_int_equal(write(pfd[1], m.p + per / 2 * PG, PG), PG);
	assert_int_equal(read(pfd[0], page, PG), PG);
	assert_true(page_ok(page, per / 2));
	close(pfd[0]);
	close(pfd[1]);
	for (i = 0; i < 4; i++) {
		rd[i] = (struct reader){ .m = &m, .first = i, .stride = stride };
		assert_int_equal(pthread_create(&rd[i].t, NULL, reader_units, &rd[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(rd[i].t, NULL);
		wrong += rd[i].wrong;
	}
	assert_int_equal(wrong, 0);
	for (u = 0; u < units; u++) {
		bool t = u % stride < 4;

		touched += t;
		assert_int_equal(fy_lazy_has(l, 0, u * m.unit), t);
		assert_int_equal(s.count[u * per], t); /* fetched once, or never */
	}
	fy_lazy_stats(l, &st);
	assert_true(st.faults >= touched);
	assert_int_equal(st.fault_pages, touched * per);
	assert_int_equal(st.placed, touched * per);
	assert_true(st.wait_p50_us > 0);
	assert_true(st.wait_p50_us <= st.wait_p99_us);
	assert_true(st.wait_p99_us <= st.wait_max_us);
	assert_true(st.complete_ms == 0);
	print_message("[ INFO     ] %s: %llu faults, wait p50 %.1f us p99 %.1f us max %.1f us\n",
		      backing_name[b], (unsigned long long)st.faults, st.wait_p50_us,
		      st.wait_p99_us, st.wait_max_us);
	assert_int_equal(fy_lazy_wait(l, 50), -ETIMEDOUT);
	assert_int_equal(fy_lazy_finish(l), -EBUSY);

	/* A unit the VMM drops after it was placed is fetched again on its
	 * next touch (not woken in a loop); counts stay as they were. */
	mem_drop(&m, 0);
	reader_touch(&m, 0);
	assert_int_equal(s.count[0], 2);
	fy_lazy_stats(l, &st2);
	assert_int_equal(st2.faults, st.faults + 1);
	assert_int_equal(st2.fault_pages, st.fault_pages);
	assert_int_equal(st2.placed, st.placed);
	assert_int_equal(st2.zero_pages, st.zero_pages);

	/* Misplaced ranges are refused. */
	assert_int_equal(fy_lazy_place(l, 1, 0, m.unit, m.p, NULL), -EINVAL);
	assert_int_equal(fy_lazy_place(l, 0, m.unit / 2, m.unit, m.p, NULL), -EINVAL);
	assert_int_equal(fy_lazy_place(l, 0, m.size, m.unit, m.p, NULL), -EINVAL);

	/* The rest arrives while readers fault on random pages. */
	for (i = 0; i < 4; i++) {
		rd[i] = (struct reader){ .m = &m, .seed = 31 + i, .reads = 200 };
		assert_int_equal(pthread_create(&rd[i].t, NULL, reader_random, &rd[i]), 0);
	}
	place_all(l, &m, &s);
	for (i = 0; i < 4; i++) {
		pthread_join(rd[i].t, NULL);
		wrong += rd[i].wrong;
	}
	assert_int_equal(wrong, 0);
	assert_int_equal(fy_lazy_wait(l, 5000), 0);
	check_all_pages(&m);
	check_complete_stats(l, &m);
	/* Placing again is harmless and changes nothing. */
	place_all(l, &m, &s);
	check_all_pages(&m);
	check_finish(l, &m);
	fy_lazy_free(l);
	free(s.count);
	mem_unmap(&m);
}

/*
 * A source that fails for one page stops the loader with its error and
 * message; the page is never placed, a thread touching it stays blocked
 * until fy_lazy_free().
 */
static void test_source_error(void **state)
{
	enum backing b = *(enum backing *)*state;
	const uint64_t bad = 3000; /* in the sixth 2 MiB block */
	struct fy_lazy_stats st;
	struct toucher t = { 0 };
	struct tsrc s;
	struct mem m;
	struct fy_lazy *l;

	mem_map(&m, b, 16 * MIB);
	tsrc_init(&s, m.size / PG, bad);
	l = start(&m, &s, 2);
	t.p = m.p + bad * PG + 100;
	assert_int_equal(pthread_create(&t.t, NULL, touch_main, &t), 0);
	assert_int_equal(fy_lazy_wait(l, 20000), -EIO);
	fy_lazy_stats(l, &st);
	assert_int_equal(st.error, -EIO);
	assert_string_equal(st.errmsg, "page 3000: slot checksum mismatch");
	assert_true(st.placed < st.pages);
	assert_false(fy_lazy_has(l, 0, bad * PG));
	assert_true(still_blocked(&t, 200));
	assert_int_equal(fy_lazy_place(l, 0, 0, m.unit, m.p, NULL), -EIO);
	assert_int_equal(fy_lazy_finish(l), -EBUSY);
	assert_true(still_blocked(&t, 10));
	fy_lazy_free(l);
	assert_int_equal(pthread_join(t.t, NULL), 0);
	assert_true(atomic_load(&t.done));
	free(s.count);
	mem_unmap(&m);
}

/* Cancel stops serving faults: wait reports it, a toucher stays blocked
 * until fy_lazy_free(). */
static void test_cancel(void **state)
{
	struct toucher t = { 0 };
	struct fy_lazy_stats st;
	struct tsrc s;
	struct mem m;
	struct fy_lazy *l;

	(void)state;
	mem_map(&m, ANON, 4 * MIB);
	tsrc_init(&s, m.size / PG, NO_PAGE);
	l = start(&m, &s, 0);
	fy_lazy_cancel(l);
	assert_int_equal(fy_lazy_wait(l, 1000), -ECANCELED);
	t.p = m.p + 5 * PG;
	assert_int_equal(pthread_create(&t.t, NULL, touch_main, &t), 0);
	assert_true(still_blocked(&t, 100));
	fy_lazy_stats(l, &st);
	assert_int_equal(st.faults, 0);
	assert_int_equal(st.error, -ECANCELED);
	fy_lazy_free(l);
	assert_int_equal(pthread_join(t.t, NULL), 0);
	assert_int_equal(t.seen, 0);
	free(s.count);
	mem_unmap(&m);
}

static int net_request(void *opaque, uint32_t region, uint64_t offset,
		       uint64_t len);

/* Bad configurations are refused with a message, nothing registered. */
static void test_rejects(void **state)
{
	struct tsrc s;
	struct mem m;
	struct fy_region rg;
	struct fy_lazy_config cfg = { .regions = &rg, .nregions = 1 };
	struct fy_lazy *l = (struct fy_lazy *)&cfg;
	uint64_t bm[4 * MIB / PG / 64];
	const uint64_t *const maps[1] = { bm };
	char err[256];

	(void)state;
	mem_map(&m, ANON, 4 * MIB);
	tsrc_init(&s, m.size / PG, NO_PAGE);
	rg = (struct fy_region){ .host = m.p, .size = m.size, .fd = -1, .name = "r" };
	assert_int_equal(fy_lazy_start(&l, &cfg, err, sizeof(err)), -EINVAL);
	assert_null(l);
	cfg.source = (struct fy_lazy_source){ .fetch = tsrc_fetch, .request = net_request };
	assert_int_equal(fy_lazy_start(&l, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "exactly one of fetch and request"));
	cfg.source = (struct fy_lazy_source){ .request = net_request };
	cfg.background_threads = 1;
	assert_int_equal(fy_lazy_start(&l, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "background threads need a fetching source"));
	cfg.background_threads = 0;
	cfg.source = (struct fy_lazy_source){ .fetch = tsrc_fetch, .opaque = &s };
	rg.size = m.size - 100;
	assert_int_equal(fy_lazy_start(&l, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "aligned"));
	rg.size = m.size;
	cfg.batch_bytes = 6000;
	assert_int_equal(fy_lazy_start(&l, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "batch"));
	cfg.batch_bytes = 0;
	/* A page already there would never be asked for: refused (a read
	 * maps the zero page, or with THP the huge zero page: offset 0). */
	assert_int_equal(m.p[5 * PG + 1], 0);
	assert_int_equal(fy_lazy_start(&l, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "is already populated"));
	assert_int_equal(madvise(m.p, m.size, MADV_DONTNEED), 0);
	assert_false(uffd_missing_armed(m.p));
	mem_unmap(&m);

	mem_map(&m, MEMFD, 4 * MIB);
	rg = (struct fy_region){ .host = m.p, .size = m.size, .fd = m.fd, .name = "r" };
	assert_int_equal(pwrite(m.fd, "x", 1, 9 * PG), 1);
	assert_int_equal(fy_lazy_start(&l, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "offset 0x9000 is already populated"));
	assert_false(uffd_missing_armed(m.p));

	/* With a present bitmap the other pages are dropped, but a private
	 * mapping of a file cannot drop the file's pages: still refused. */
	munmap(m.p, m.size);
	m.p = mmap(NULL, m.size, PROT_READ | PROT_WRITE, MAP_PRIVATE, m.fd, 0);
	assert_true(m.p != MAP_FAILED);
	rg.host = m.p;
	memset(bm, 0, sizeof(bm));
	bm[0] = 0xff; /* pages 0-7 present */
	cfg.present = maps;
	assert_int_equal(fy_lazy_start(&l, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "offset 0x9000 is already populated"));
	assert_false(uffd_missing_armed(m.p));
	fy_lazy_free(NULL);
	mem_unmap(&m);

	/* A shared mapping of an ordinary file cannot be registered: it is
	 * refused before a page it holds is dropped, so the file keeps its
	 * data. */
	{
		char path[] = "ferry-lazy-file-XXXXXX";
		int fd = mkstemp(path);
		uint8_t *p, b = 0;

		assert_true(fd >= 0);
		unlink(path);
		assert_int_equal(ftruncate(fd, 4 * MIB), 0);
		p = mmap(NULL, 4 * MIB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		assert_true(p != MAP_FAILED);
		memset(p, 0x5a, 4 * MIB);
		rg = (struct fy_region){ .host = p, .size = 4 * MIB, .fd = fd,
					 .name = "file" };
		assert_true(fy_lazy_start(&l, &cfg, err, sizeof(err)) < 0);
		print_message("ordinary shared file: %s\n", err);
		assert_int_equal(p[9 * PG], 0x5a);
		assert_int_equal(pread(fd, &b, 1, 9 * PG), 1);
		assert_int_equal(b, 0x5a);
		munmap(p, 4 * MIB);
		close(fd);
	}
	free(s.count);
}

/* A source as cheap as a memcpy: what the loader itself costs. */
static int fast_fetch(void *opaque, uint32_t region, uint64_t offset,
		      uint64_t len, void *buf, uint64_t *zero, char *err,
		      size_t errlen)
{
	memset(buf, (int)(offset / MIB) | 1, len);
	return 0;
}

/* 256 MiB of anonymous memory through the background path (printed). */
static void test_fill_throughput(void **state)
{
	struct fy_region rg = { .size = 256 * MIB, .fd = -1, .name = "big" };
	struct fy_lazy_config cfg = {
		.regions = &rg, .nregions = 1,
		.source = { .fetch = fast_fetch },
	};
	struct fy_lazy_stats st;
	struct fy_lazy *l;
	char err[256];
	unsigned threads;
	uint64_t off;

	(void)state;
	for (threads = 1; threads <= 2; threads++) {
		rg.host = mmap(NULL, rg.size, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		assert_true(rg.host != MAP_FAILED);
		madvise(rg.host, rg.size, MADV_HUGEPAGE);
		cfg.background_threads = threads;
		if (fy_lazy_start(&l, &cfg, err, sizeof(err))) {
			print_message("[ SKIP     ] %s\n", err);
			munmap(rg.host, rg.size);
			skip();
		}
		assert_int_equal(fy_lazy_wait(l, 30000), 0);
		fy_lazy_stats(l, &st);
		print_message("[ INFO     ] fill 256 MiB anon, %u background thread%s: "
			      "%.1f ms, %.0f MiB/s\n", threads, threads > 1 ? "s" : "",
			      st.complete_ms, 256 / (st.complete_ms / 1000));
		for (off = 0; off < rg.size; off += MIB)
			assert_int_equal(rg.host[off + 4095], (int)(off / MIB) | 1);
		assert_int_equal(fy_lazy_finish(l), 0);
		fy_lazy_free(l);
		munmap(rg.host, rg.size);
	}
}

/* ---------------------------------------------------------------------- */
/* memory partly present (postcopy's destination at the switch)           */
/* ---------------------------------------------------------------------- */

/*
 * Which units the caller marks present: runs of three pages on, three off
 * on 4 KiB pages; every other unit on hugetlb.
 */
static bool unit_is_present(const struct mem *m, uint64_t u)
{
	return m->unit == PG ? (u / 3) % 2 == 0 : u % 2 == 0;
}

/*
 * Postcopy's destination at the switch: every page holds stale bytes
 * (0xEE), present units then get their right bytes, and present zero
 * units are dropped (never written, as a receiver that skips zero pages
 * leaves them). Fills @bm (one bit per 4 KiB page): the present units,
 * plus on hugetlb all but the last page of unit 1, which stays missing
 * because a huge page is present only whole. Returns the present pages.
 */
static uint64_t stage_present(struct mem *m, uint64_t *bm)
{
	uint64_t per = m->unit / PG, units = m->size / m->unit, u, pg, n = 0;
	bool zero;

	memset(m->p, 0xEE, m->size);
	for (u = 0; u < units; u++) {
		if (!unit_is_present(m, u))
			continue;
		zero = true;
		for (pg = u * per; pg < (u + 1) * per; pg++) {
			bm[pg / 64] |= UINT64_C(1) << (pg % 64);
			zero &= page_is_zero(pg);
			if (page_is_zero(pg))
				memset(m->p + pg * PG, 0, PG);
			else
				page_fill(m->p + pg * PG, pg);
		}
		if (zero)
			mem_drop(m, u * m->unit);
		n += per;
	}
	if (per > 1)
		for (pg = per; pg < 2 * per - 1; pg++)
			bm[pg / 64] |= UINT64_C(1) << (pg % 64);
	return n;
}

/* Read every page in a thread, failing if that takes 10 s. */
static void *reader_all(void *arg)
{
	struct reader *r = arg;
	uint64_t pg;

	for (pg = 0; pg < r->m->size / PG; pg++)
		r->wrong += !page_ok(r->m->p + pg * PG, pg);
	return NULL;
}

static void read_all_in_thread(const struct mem *m)
{
	struct reader r = { .m = m };
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	assert_int_equal(pthread_create(&r.t, NULL, reader_all, &r), 0);
	assert_int_equal(pthread_timedjoin_np(r.t, NULL, &ts), 0);
	assert_int_equal(r.wrong, 0);
}

/*
 * Start on memory that is half present with a file-like source and no
 * background: present pages keep their bytes and are never fetched (the
 * dropped zero ones read as zeros), missing ones lose their stale bytes
 * and are fetched exactly once, on their fault.
 */
static void test_present_fetch(void **state)
{
	enum backing b = *(enum backing *)*state;
	uint64_t bm[8 * MIB / PG / 64] = { 0 };
	uint64_t per, units, u, pg, present, missing_zero = 0;
	struct fy_lazy_stats st;
	struct tsrc s;
	struct mem m;
	struct fy_lazy *l;

	mem_map(&m, b, 8 * MIB);
	per = m.unit / PG;
	units = m.size / m.unit;
	tsrc_init(&s, m.size / PG, NO_PAGE);
	present = stage_present(&m, bm);
	l = start_with(&m, (struct fy_lazy_source){ .fetch = tsrc_fetch, .opaque = &s },
		       0, bm);
	fy_lazy_stats(l, &st);
	assert_int_equal(st.present, present);
	assert_int_equal(st.placed, present);
	for (u = 0; u < units; u++)
		assert_int_equal(fy_lazy_has(l, 0, u * m.unit), unit_is_present(&m, u));
	/* Present pages read in this thread: a fault would be served too,
	 * but it would count a fetch. */
	for (pg = 0; pg < m.size / PG; pg++)
		if (unit_is_present(&m, pg / per))
			assert_true(page_ok(m.p + pg * PG, pg));
	read_all_in_thread(&m);
	for (pg = 0; pg < m.size / PG; pg++) {
		bool here = unit_is_present(&m, pg / per);

		assert_int_equal(s.count[pg], !here);
		missing_zero += !here && page_is_zero(pg);
	}
	assert_int_equal(fy_lazy_wait(l, 5000), 0);
	fy_lazy_stats(l, &st);
	assert_int_equal(st.placed, st.pages);
	assert_int_equal(st.fault_pages, st.pages - present);
	assert_int_equal(st.zero_pages, missing_zero);
	assert_int_equal(st.faults, (st.pages - present) / per);
	check_all_pages(&m);
	check_finish(l, &m);
	fy_lazy_free(l);
	free(s.count);
	mem_unmap(&m);
}

/* Everything present: complete at start, nothing fetched, nothing lost. */
static void test_all_present(void **state)
{
	uint64_t bm[4 * MIB / PG / 64];
	struct fy_lazy_stats st;
	struct tsrc s;
	struct mem m;
	struct fy_lazy *l;

	(void)state;
	mem_map(&m, MEMFD, 4 * MIB);
	tsrc_init(&s, m.size / PG, NO_PAGE);
	memset(bm, 0xff, sizeof(bm));
	memset(m.p, 0x5A, m.size);
	l = start_with(&m, (struct fy_lazy_source){ .fetch = tsrc_fetch, .opaque = &s },
		       2, bm);
	assert_int_equal(fy_lazy_wait(l, 1000), 0);
	fy_lazy_stats(l, &st);
	assert_int_equal(st.placed, st.pages);
	assert_int_equal(st.present, st.pages);
	assert_int_equal(m.p[12345], 0x5A);
	assert_int_equal(s.count[3], 0);
	assert_int_equal(fy_lazy_finish(l), 0);
	fy_lazy_free(l);
	free(s.count);
	mem_unmap(&m);
}

/* ---------------------------------------------------------------------- */
/* an asynchronous source: postcopy's network, in the process             */
/* ---------------------------------------------------------------------- */

/*
 * Requests queue up; a "network" thread answers each after @delay_ms by
 * placing the unit with fy_lazy_place(), as the engine does when a page
 * arrives. While @hold, answers wait; while @cut, requests are lost (the
 * source believes it sent them) or, with @refuse, fail.
 */
struct net {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct { uint32_t region; uint64_t off, len; } q[4096];
	size_t nq;
	bool hold, cut, refuse, stop;
	bool clean_zero;	/* zero pages' bytes are zeros (else 0xAA) */
	int delay_ms;
	struct fy_lazy *l;
	struct tsrc remote;	/* the content, counted apart */
	_Atomic uint32_t *asked; /* requests per page */
	atomic_uint place_errors;
	_Atomic uint64_t fill_ns, place_ns, placed; /* time making and placing answers */
	uint8_t *buf;
	uint64_t buflen;
	pthread_t t;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int net_request(void *opaque, uint32_t region, uint64_t offset,
		       uint64_t len)
{
	struct net *n = opaque;
	uint64_t pg;
	int rc = 0;

	pthread_mutex_lock(&n->mu);
	for (pg = offset / PG; pg < (offset + len) / PG; pg++)
		atomic_fetch_add(&n->asked[pg], 1);
	if (n->cut)
		rc = n->refuse ? -ENOTCONN : 0;
	else if (n->nq < sizeof(n->q) / sizeof(n->q[0]))
		n->q[n->nq++] = (typeof(n->q[0])){ region, offset, len };
	else
		rc = -ENOBUFS;
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mu);
	return rc;
}

static void *net_main(void *arg)
{
	struct net *n = arg;
	uint64_t zero[HUGE_SZ / PG / 64];
	uint32_t region;
	uint64_t off, len, t0, t1, pg;
	char err[128];

	pthread_mutex_lock(&n->mu);
	for (;;) {
		while (!n->stop && (!n->nq || n->hold || !n->l))
			pthread_cond_wait(&n->cv, &n->mu);
		if (n->stop)
			break;
		region = n->q[0].region;
		off = n->q[0].off;
		len = n->q[0].len;
		memmove(&n->q[0], &n->q[1], --n->nq * sizeof(n->q[0]));
		pthread_mutex_unlock(&n->mu);
		if (n->delay_ms)
			usleep((useconds_t)n->delay_ms * 1000);
		memset(zero, 0, sizeof(zero));
		t0 = mono_ns();
		if (len > n->buflen ||
		    tsrc_fetch(&n->remote, region, off, len, n->buf, zero, err,
			       sizeof(err)))
			atomic_fetch_add(&n->place_errors, 1);
		for (pg = 0; n->clean_zero && pg < len / PG; pg++)
			if (zero[pg / 64] & (UINT64_C(1) << (pg % 64)))
				memset(n->buf + pg * PG, 0, PG);
		t1 = mono_ns();
		if (fy_lazy_place(n->l, region, off, len, n->buf, zero))
			atomic_fetch_add(&n->place_errors, 1);
		atomic_fetch_add(&n->fill_ns, t1 - t0);
		atomic_fetch_add(&n->place_ns, mono_ns() - t1);
		atomic_fetch_add(&n->placed, 1);
		pthread_mutex_lock(&n->mu);
	}
	pthread_mutex_unlock(&n->mu);
	return NULL;
}

static void net_init(struct net *n, const struct mem *m)
{
	memset(n, 0, sizeof(*n));
	pthread_mutex_init(&n->mu, NULL);
	pthread_cond_init(&n->cv, NULL);
	tsrc_init(&n->remote, m->size / PG, NO_PAGE);
	n->asked = calloc(m->size / PG, sizeof(*n->asked));
	assert_non_null(n->asked);
	n->buflen = m->unit;
	n->buf = mmap(NULL, n->buflen, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(n->buf != MAP_FAILED);
	assert_int_equal(pthread_create(&n->t, NULL, net_main, n), 0);
}

/* Change the network's behaviour under its lock. */
#define NET_SET(n, field, value)                                            \
	do {                                                                \
		pthread_mutex_lock(&(n)->mu);                               \
		(n)->field = (value);                                       \
		pthread_cond_broadcast(&(n)->cv);                           \
		pthread_mutex_unlock(&(n)->mu);                             \
	} while (0)

static void net_free(struct net *n)
{
	NET_SET(n, stop, true);
	pthread_join(n->t, NULL);
	assert_int_equal(atomic_load(&n->place_errors), 0);
	munmap(n->buf, n->buflen);
	free(n->remote.count);
	free(n->asked);
	pthread_cond_destroy(&n->cv);
	pthread_mutex_destroy(&n->mu);
}

static struct fy_lazy *start_net(struct mem *m, struct net *n,
				 const uint64_t *present)
{
	struct fy_lazy *l;

	l = start_with(m, (struct fy_lazy_source){ .request = net_request,
						   .opaque = n }, 0, present);
	NET_SET(n, l, l);
	return l;
}

/* A thread reading one page and checking it, timed. */
struct vcpu {
	pthread_t t;
	const struct mem *m;
	uint64_t pg;
	atomic_bool done;
	bool ok;
	uint64_t ns;
};

static void *vcpu_main(void *arg)
{
	struct vcpu *v = arg;
	uint64_t t0 = mono_ns();

	v->ok = page_ok(v->m->p + v->pg * PG, v->pg);
	v->ns = mono_ns() - t0;
	atomic_store(&v->done, true);
	return NULL;
}

static void vcpu_start(struct vcpu *v, const struct mem *m, uint64_t pg)
{
	memset(v, 0, sizeof(*v));
	v->m = m;
	v->pg = pg;
	assert_int_equal(pthread_create(&v->t, NULL, vcpu_main, v), 0);
}

/* Join @v within 5 s; it must have read the right bytes. */
static void vcpu_join(struct vcpu *v)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 5;
	assert_int_equal(pthread_timedjoin_np(v->t, NULL, &ts), 0);
	assert_true(v->ok);
}

/* Wait up to 5 s until @n faults wait in the loader. */
static void wait_waiting(struct fy_lazy *l, uint64_t n)
{
	struct fy_lazy_stats st;
	int i;

	for (i = 0; i < 5000; i++) {
		fy_lazy_stats(l, &st);
		if (st.waiting == n)
			return;
		usleep(1000);
	}
	fail_msg("%llu faults wait, not %llu", (unsigned long long)st.waiting,
		 (unsigned long long)n);
}

/* The first unit that is not present, and its middle page. */
static uint64_t first_missing(const struct mem *m, uint64_t from)
{
	uint64_t u = from;

	while (unit_is_present(m, u))
		u++;
	return u;
}

/*
 * Postcopy's destination: half present, an asynchronous source, no
 * background. Present pages read without a request; a missing one costs
 * exactly one request, and reads the bytes the network thread placed, not
 * the stale ones; at the end every missing unit was asked once.
 */
static void test_present_async(void **state)
{
	enum backing b = *(enum backing *)*state;
	uint64_t bm[8 * MIB / PG / 64] = { 0 };
	uint64_t per, pg, u, present;
	struct fy_lazy_stats st;
	struct vcpu v;
	struct net n;
	struct mem m;
	struct fy_lazy *l;

	mem_map(&m, b, 8 * MIB);
	per = m.unit / PG;
	net_init(&n, &m);
	present = stage_present(&m, bm);
	l = start_net(&m, &n, bm);
	for (pg = 0; pg < m.size / PG; pg++)
		if (unit_is_present(&m, pg / per))
			assert_true(page_ok(m.p + pg * PG, pg));
	fy_lazy_stats(l, &st);
	assert_int_equal(st.requests, 0);
	assert_int_equal(st.faults, 0);
	assert_int_equal(st.missing, st.pages - present);

	u = first_missing(&m, 0);
	vcpu_start(&v, &m, u * per + per / 2);
	vcpu_join(&v);
	fy_lazy_stats(l, &st);
	assert_int_equal(st.requests, 1);
	assert_int_equal(st.faults, 1);
	assert_int_equal(st.outstanding, 0);
	assert_int_equal(st.waiting, 0);
	assert_int_equal(st.fault_pages, per);
	assert_int_equal(st.missing, st.pages - present - per);
	for (pg = 0; pg < m.size / PG; pg++)
		assert_int_equal(n.asked[pg], pg / per == u);

	read_all_in_thread(&m);
	for (pg = 0; pg < m.size / PG; pg++)
		assert_int_equal(n.asked[pg], !unit_is_present(&m, pg / per));
	assert_int_equal(fy_lazy_wait(l, 5000), 0);
	fy_lazy_stats(l, &st);
	assert_int_equal(st.missing, 0);
	assert_int_equal(st.requests, (st.pages - present) / per);
	assert_int_equal(st.request_errors, 0);
	assert_int_equal(st.outstanding, 0);
	check_all_pages(&m);
	net_free(&n); /* no fy_lazy_place() may run during finish or free */
	check_finish(l, &m);
	fy_lazy_free(l);
	mem_unmap(&m);
}

/*
 * An answer that takes 50 ms: the wait statistics show it. Then two
 * threads fault on one unit while the network holds its answer: one
 * request, two waiting faults; one answer wakes both, each wait counted.
 */
static void test_shared_fault_and_delay(void **state)
{
	enum backing b = *(enum backing *)*state;
	uint64_t per, u, pg;
	struct fy_lazy_stats st;
	struct vcpu v[2];
	struct net n;
	struct mem m;
	struct fy_lazy *l;

	mem_map(&m, b, 8 * MIB);
	per = m.unit / PG;
	net_init(&n, &m);
	l = start_net(&m, &n, NULL);

	/* The only fault so far: the loader's wait is this thread's. */
	NET_SET(&n, delay_ms, 50);
	vcpu_start(&v[0], &m, 3 * per);
	vcpu_join(&v[0]);
	fy_lazy_stats(l, &st);
	assert_int_equal(st.faults, 1);
	assert_true(v[0].ns >= 50000000);
	assert_true(st.wait_max_us >= 50000);
	assert_true(st.wait_max_us * 1000 <= (double)v[0].ns);
	assert_true(st.wait_p50_us >= 45000); /* one bucket is 6% wide */
	print_message("[ INFO     ] %s: a 50 ms answer: the thread waited %.1f ms, "
		      "the loader counted %.1f ms\n", backing_name[b],
		      (double)v[0].ns / 1e6, st.wait_max_us / 1e3);

	NET_SET(&n, delay_ms, 0);
	NET_SET(&n, hold, true);
	u = 1;
	vcpu_start(&v[0], &m, u * per);
	vcpu_start(&v[1], &m, u * per + per - 1);
	wait_waiting(l, 2);
	fy_lazy_stats(l, &st);
	assert_int_equal(st.requests, 2);
	assert_int_equal(st.outstanding, 1);
	assert_int_equal(st.faults, 1);
	assert_false(atomic_load(&v[0].done) || atomic_load(&v[1].done));
	NET_SET(&n, hold, false);
	vcpu_join(&v[0]);
	vcpu_join(&v[1]);
	fy_lazy_stats(l, &st);
	assert_int_equal(st.faults, 3);
	assert_int_equal(st.requests, 2);
	assert_int_equal(st.outstanding, 0);
	assert_int_equal(st.waiting, 0);
	for (pg = u * per; pg < (u + 1) * per; pg++)
		assert_int_equal(n.asked[pg], 1);
	net_free(&n);
	fy_lazy_free(l);
	mem_unmap(&m);
}

/*
 * The round trip of one fault through an in-process network (request
 * queued, a thread woken, the page placed, the faulting thread woken):
 * measured and printed, not asserted. The answers' zero pages hold zeros,
 * as a receiver's staging buffer would: placed without a copy.
 */
/* The loader's have-bitmap must be exactly the pages of units @has says. */
static void check_have(struct fy_lazy *l, const struct mem *m,
		       bool (*has)(const struct mem *, uint64_t, const void *),
		       const void *arg)
{
	uint64_t bits[16 * MIB / PG / 64], pg, per = m->unit / PG;

	assert_true(m->size <= 16 * MIB);
	assert_int_equal(fy_lazy_have_bitmap(l, 0, bits, m->size / PG), 0);
	for (pg = 0; pg < m->size / PG; pg++)
		assert_int_equal(!!(bits[pg / 64] & (UINT64_C(1) << (pg % 64))),
				 has(m, pg / per, arg));
	assert_int_equal(fy_lazy_have_bitmap(l, 0, bits, m->size / PG - 1), -EINVAL);
	assert_int_equal(fy_lazy_have_bitmap(l, 1, bits, m->size / PG), -EINVAL);
}

/* Present at start, or one of the units in @arg (UINT64_MAX-terminated). */
static bool has_present_or(const struct mem *m, uint64_t u, const void *arg)
{
	const uint64_t *v = arg;

	for (; v && *v != UINT64_MAX; v++)
		if (*v == u)
			return true;
	return unit_is_present(m, u);
}

/*
 * The link breaks: two requests are lost on the way, a third is refused.
 * The three threads stay blocked, nothing is placed, the loader keeps the
 * three units outstanding; the have-bitmap is what was present. The link
 * comes back: fy_lazy_rerequest() asks for the three again, the threads
 * complete with the right bytes, the have-bitmap gains their units.
 */
static void test_link_cut(void **state)
{
	enum backing b = *(enum backing *)*state;
	uint64_t bm[16 * MIB / PG / 64] = { 0 };
	uint64_t per, u[4], pg, present, i;
	struct fy_lazy_stats st;
	struct vcpu v[3];
	struct net n;
	struct mem m;
	struct fy_lazy *l;

	mem_map(&m, b, b == HUGETLB ? 16 * MIB : 8 * MIB); /* 4 units missing */
	per = m.unit / PG;
	net_init(&n, &m);
	present = stage_present(&m, bm);
	NET_SET(&n, cut, true);
	l = start_net(&m, &n, bm);
	check_have(l, &m, has_present_or, NULL);
	u[0] = first_missing(&m, 0);
	u[1] = first_missing(&m, u[0] + 1);
	u[2] = first_missing(&m, u[1] + 1);
	u[3] = UINT64_MAX;
	vcpu_start(&v[0], &m, u[0] * per);
	vcpu_start(&v[1], &m, u[1] * per + per - 1);
	wait_waiting(l, 2);
	NET_SET(&n, refuse, true);
	vcpu_start(&v[2], &m, u[2] * per);
	wait_waiting(l, 3);
	usleep(100000);
	fy_lazy_stats(l, &st);
	assert_int_equal(st.requests, 3);
	assert_int_equal(st.request_errors, 1);
	assert_int_equal(st.outstanding, 3);
	assert_int_equal(st.waiting, 3);
	assert_int_equal(st.faults, 0);
	assert_int_equal(st.missing, st.pages - present);
	for (i = 0; i < 3; i++)
		assert_false(atomic_load(&v[i].done));
	check_have(l, &m, has_present_or, NULL);

	NET_SET(&n, cut, false);
	assert_int_equal(fy_lazy_rerequest(l), 3);
	for (i = 0; i < 3; i++)
		vcpu_join(&v[i]);
	fy_lazy_stats(l, &st);
	assert_int_equal(st.rerequests, 3);
	assert_int_equal(st.request_errors, 1);
	assert_int_equal(st.outstanding, 0);
	assert_int_equal(st.waiting, 0);
	assert_int_equal(st.faults, 3);
	assert_int_equal(st.missing, st.pages - present - 3 * per);
	for (pg = 0; pg < m.size / PG; pg++)
		assert_int_equal(n.asked[pg], has_present_or(&m, pg / per, u) &&
					      !unit_is_present(&m, pg / per) ? 2 : 0);
	check_have(l, &m, has_present_or, u);
	/* Nothing waits: nothing to ask again. */
	assert_int_equal(fy_lazy_rerequest(l), 0);
	net_free(&n);
	fy_lazy_free(l);
	mem_unmap(&m);
}

static void on_kick(int sig)
{
	(void)sig;
}

/*
 * A VMM kicks its vCPU threads with signals; a thread blocked on a missing
 * page then leaves its wait, runs the handler and faults again on the same
 * page. It is one waiter and one fault however often that happens (the
 * kernel names the faulting thread), and a late answer still wakes it.
 */
static void test_signal_refault(void **state)
{
	enum backing b = *(enum backing *)*state;
	uint64_t bm[16 * MIB / PG / 64] = { 0 };
	struct sigaction sa = { .sa_handler = on_kick }, old;
	struct fy_lazy_stats st;
	struct vcpu v;
	struct net n;
	struct mem m;
	struct fy_lazy *l;
	uint64_t per, u;
	int i;

	mem_map(&m, b, b == HUGETLB ? 16 * MIB : 8 * MIB);
	per = m.unit / PG;
	net_init(&n, &m);
	stage_present(&m, bm);
	NET_SET(&n, cut, true);
	l = start_net(&m, &n, bm);
	u = first_missing(&m, 0);
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
	vcpu_start(&v, &m, u * per);
	wait_waiting(l, 1);
	for (i = 0; i < 50; i++) {
		pthread_kill(v.t, SIGUSR1);
		usleep(2000);
	}
	fy_lazy_stats(l, &st);
	print_message("50 signals to a thread waiting for a page: %llu waiting, %llu requests\n",
		      (unsigned long long)st.waiting, (unsigned long long)st.requests);
	assert_false(atomic_load(&v.done));
	assert_int_equal(st.requests, 1);
	assert_int_equal(st.waiting, 1);
	NET_SET(&n, cut, false);
	assert_int_equal(fy_lazy_rerequest(l), 1);
	vcpu_join(&v);
	fy_lazy_stats(l, &st);
	assert_int_equal(st.waiting, 0);
	assert_int_equal(st.faults, 1);
	assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
	net_free(&n);
	fy_lazy_free(l);
	mem_unmap(&m);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void qsort_u64(uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
}

static void test_roundtrip(void **state)
{
	enum backing b = *(enum backing *)*state;
	uint64_t ns[256], i, per;
	struct fy_lazy_stats st;
	struct vcpu v;
	struct net n;
	struct mem m;
	struct fy_lazy *l;

	mem_map(&m, b, b == HUGETLB ? 32 * MIB : 4 * MIB);
	per = m.unit / PG;
	net_init(&n, &m);
	NET_SET(&n, clean_zero, true);
	l = start_net(&m, &n, NULL);
	for (i = 0; i < m.size / m.unit && i < 256; i++) {
		vcpu_start(&v, &m, i * per);
		vcpu_join(&v);
		ns[i] = v.ns;
	}
	fy_lazy_stats(l, &st);
	qsort_u64(ns, i);
	print_message("[ INFO     ] %s round trip of one fault over an in-process network, "
		      "%llu faults: thread-side p50 %.1f us p99 %.1f us max %.1f us; "
		      "loader-side p50 %.1f us p99 %.1f us; per answer %.1f us making "
		      "the unit, %.1f us in fy_lazy_place\n", backing_name[b],
		      (unsigned long long)i, (double)ns[i / 2] / 1e3,
		      (double)ns[i - 1 - i / 100] / 1e3, (double)ns[i - 1] / 1e3,
		      st.wait_p50_us, st.wait_p99_us,
		      (double)n.fill_ns / (double)n.placed / 1e3,
		      (double)n.place_ns / (double)n.placed / 1e3);
	assert_int_equal(st.faults, i);
	net_free(&n);
	fy_lazy_free(l);
	mem_unmap(&m);
}

static int group_teardown(void **state)
{
	(void)state;
	huge_release(pool_added_total);
	return 0;
}

static enum backing anon = ANON, memfd = MEMFD, hugetlb = HUGETLB;

#define ALL_BACKINGS(fn) \
	cmocka_unit_test_prestate(fn, &anon), \
	cmocka_unit_test_prestate(fn, &memfd), \
	cmocka_unit_test_prestate(fn, &hugetlb)

static int ignore_request(void *opaque, uint32_t region, uint64_t offset,
			  uint64_t len)
{
	(void)opaque;
	(void)region;
	(void)offset;
	(void)len;
	return 0;
}

/*
 * More than 2 GiB missing at once (a postcopy switched early in its
 * first pass): the kernel drops at most 2 GiB per process_madvise()
 * call, so the loader drops in smaller batches. 3 GiB of reserved, never
 * touched memory with one page present: the start succeeds, that page
 * keeps its bytes, every other page is missing.
 */
static void test_present_over_2g(void **state)
{
	uint64_t size = 3ull << 30, pages = size / PG;
	uint64_t *bm = calloc((pages + 63) / 64, 8);
	const uint64_t *maps[1] = { bm };
	struct fy_region rg = { 0 };
	struct fy_lazy_config cfg = { 0 };
	struct fy_lazy_stats st;
	struct fy_lazy *l = NULL;
	char err[256] = "";
	uint8_t *p;

	(void)state;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	assert_true(p != MAP_FAILED && bm);
	memset(p + 5 * PG, 0x5a, PG);
	bm[0] = 1ull << 5;
	rg.host = p;
	rg.size = size;
	snprintf(rg.name, sizeof(rg.name), "big");
	cfg.regions = &rg;
	cfg.nregions = 1;
	cfg.source = (struct fy_lazy_source){ .request = ignore_request };
	cfg.present = maps;
	if (fy_lazy_start(&l, &cfg, err, sizeof(err)))
		fail_msg("fy_lazy_start: %s", err);
	fy_lazy_stats(l, &st);
	assert_int_equal(st.present, 1);
	assert_int_equal(st.missing, pages - 1);
	assert_int_equal(p[5 * PG + 100], 0x5a);
	fy_lazy_free(l);
	munmap(p, size);
	free(bm);
}

/* sched_getattr(2)'s answer, as far as this test reads it. */
struct sched_attr_view {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t priority;
	uint64_t runtime, deadline, period;
};

static uint64_t my_slice(int *nice)
{
	struct sched_attr_view a = { 0 };

	assert_int_equal(syscall(SYS_sched_getattr, 0, &a, sizeof(a), 0), 0);
	*nice = a.nice;
	return a.runtime;
}

/*
 * A thread made urgent runs with the short slice (a kernel with custom
 * slices reports it) and, as root, at FY_URGENT_NICE; restored, it has
 * its own nice value and the default slice again (the destination's
 * session thread goes back to the VMM's priority after the phase).
 */
static void test_urgent_thread(void **state)
{
	uint64_t before, during, after;
	struct fy_prio old;
	int nice0, nice1, nice2;

	(void)state;
	before = my_slice(&nice0);
	fy_thread_urgent(&old, -1);
	during = my_slice(&nice1);
	if (!old.set) {
		printf("# neither a custom slice nor a nice value could be set here\n");
		return;
	}
	if (during == FY_URGENT_SLICE_NS)
		assert_true(before != during);
	else
		printf("# this kernel keeps no custom slice (%llu ns)\n",
		       (unsigned long long)during);
	if (geteuid() == 0)
		assert_int_equal(nice1, FY_URGENT_NICE);
	fy_thread_restore(&old);
	after = my_slice(&nice2);
	assert_int_equal(nice2, nice0);
	assert_true(after == before);

	/* A thread of another class (a VMM's batch or real-time thread)
	 * keeps it. */
	struct sched_param sp = { 0 };

	assert_int_equal(sched_setscheduler(0, SCHED_BATCH, &sp), 0);
	fy_thread_urgent(&old, -1);
	assert_false(old.set);
	assert_int_equal(sched_getscheduler(0), SCHED_BATCH);
	fy_thread_restore(&old);
	assert_int_equal(sched_getscheduler(0), SCHED_BATCH);
	assert_int_equal(sched_setscheduler(0, SCHED_OTHER, &sp), 0);
}

/* The scheduling policy (stat's field 41) of thread @tid, or -1. */
static int task_policy(const char *tid)
{
	char path[64], buf[1024], *p;
	int policy = -1;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%s/stat", tid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strrchr(buf, ')');
	/* Field 3 (state) follows the name; field 41 is 38 further on. */
	for (int i = 0; p && i < 39; i++)
		p = strchr(p + 1, ' ');
	if (p)
		policy = atoi(p + 1);
	return policy;
}

/* The thread of this process in the idle class, or 0 when none is. */
static pid_t idle_thread(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	pid_t tid = 0;

	while (d && !tid && (e = readdir(d)))
		if (e->d_name[0] != '.' && task_policy(e->d_name) == SCHED_IDLE)
			tid = atoi(e->d_name);
	if (d)
		closedir(d);
	return tid;
}

/*
 * The lane's keeper: none for a window of 0 (and NULL is harmless
 * everywhere); otherwise a thread of the idle class, which takes no CPU
 * time that another thread wants, kept to the lane's CPU.
 */
static void test_lane_keeper(void **state)
{
	struct fy_lane_keeper *k = (void *)1;
	uint64_t cpu_ns = 0, windows = 0;
	cpu_set_t all, on;
	pid_t tid = 0;
	int cpu;

	(void)state;
	assert_int_equal(fy_lane_keeper_start(&k, 0, 0), 0);
	assert_null(k);
	fy_lane_keeper_note(NULL);
	fy_lane_keeper_stop(NULL, &cpu_ns, &windows);

	assert_int_equal(sched_getaffinity(0, sizeof(all), &all), 0);
	cpu = fy_lane_cpu(FERRY_LANE_CPU_AUTO);
	assert_int_equal(fy_lane_keeper_start(&k, cpu, 1000 * 1000), 0);
	assert_non_null(k);
	fy_lane_keeper_note(k);
	/* The keeper lowers its own class as it starts: wait for it. */
	for (int i = 0; i < 10000 && !tid; i++) {
		tid = idle_thread();
		if (!tid)
			usleep(1000);
	}
	assert_int_not_equal(tid, 0);
	if (cpu >= 0) {
		assert_int_equal(sched_getaffinity(tid, sizeof(on), &on), 0);
		assert_int_equal(CPU_COUNT(&on), 1);
		assert_true(CPU_ISSET(cpu, &on));
	}
	fy_lane_keeper_note(k);
	fy_lane_keeper_stop(k, &cpu_ns, &windows);
	assert_int_equal(idle_thread(), 0);
}

/*
 * The lane's CPU: auto picks the last CPU the caller may run on, so two
 * processes started alike meet there; an urgent thread keeps to it and
 * gets all its CPUs back when restored. A CPU the thread may not use
 * leaves it where it was.
 */
static void test_lane_cpu(void **state)
{
	cpu_set_t all, now;
	struct fy_prio old;
	int cpu, last = -1;

	(void)state;
	assert_int_equal(fy_lane_cpu(FERRY_LANE_CPU_NONE), -1);
	assert_int_equal(fy_lane_cpu(3), 2);
	assert_int_equal(sched_getaffinity(0, sizeof(all), &all), 0);
	for (int i = 0; i < CPU_SETSIZE; i++)
		if (CPU_ISSET(i, &all))
			last = i;
	cpu = fy_lane_cpu(FERRY_LANE_CPU_AUTO);
	if (CPU_COUNT(&all) < 2) {
		assert_int_equal(cpu, -1);
		printf("# one CPU allowed here: no lane CPU to pick\n");
		return;
	}
	assert_int_equal(cpu, last);
	fy_thread_urgent(&old, cpu);
	assert_true(old.pinned);
	assert_int_equal(sched_getaffinity(0, sizeof(now), &now), 0);
	assert_int_equal(CPU_COUNT(&now), 1);
	assert_true(CPU_ISSET(cpu, &now));
	fy_thread_restore(&old);
	assert_int_equal(sched_getaffinity(0, sizeof(now), &now), 0);
	assert_true(CPU_EQUAL(&now, &all));

	/* Not allowed: a CPU beyond the set. */
	fy_thread_urgent(&old, CPU_SETSIZE - 1 > last ? CPU_SETSIZE - 1 : -1);
	assert_false(old.pinned);
	assert_int_equal(sched_getaffinity(0, sizeof(now), &now), 0);
	assert_true(CPU_EQUAL(&now, &all));
	fy_thread_restore(&old);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		ALL_BACKINGS(test_fill),
		ALL_BACKINGS(test_faults_then_place),
		ALL_BACKINGS(test_source_error),
		ALL_BACKINGS(test_present_fetch),
		cmocka_unit_test(test_all_present),
		ALL_BACKINGS(test_present_async),
		ALL_BACKINGS(test_shared_fault_and_delay),
		ALL_BACKINGS(test_link_cut),
		ALL_BACKINGS(test_signal_refault),
		ALL_BACKINGS(test_roundtrip),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_rejects),
		cmocka_unit_test(test_present_over_2g),
		cmocka_unit_test(test_fill_throughput),
		cmocka_unit_test(test_urgent_thread),
		cmocka_unit_test(test_lane_cpu),
		cmocka_unit_test(test_lane_keeper),
	};

	return cmocka_run_group_tests(tests, NULL, group_teardown);
}
