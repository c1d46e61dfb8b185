// SPDX-License-Identifier: MIT
/*
 * test_ranges.c - range lists and bitmap conversion.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "memory/memory.h"

#define PG FY_PAGE_SIZE

static void assert_range(const struct fy_ranges *r, size_t i, uint32_t region,
			 uint64_t offset, uint64_t length)
{
	assert_true(i < r->n);
	assert_int_equal(r->v[i].region, region);
	assert_int_equal(r->v[i].offset, offset);
	assert_int_equal(r->v[i].length, length);
}

static uint64_t sum_lengths(const struct fy_ranges *r)
{
	uint64_t s = 0;
	size_t i;

	for (i = 0; i < r->n; i++)
		s += r->v[i].length;
	return s;
}

static void test_add_coalesces_contiguous(void **state)
{
	struct fy_ranges r;

	fy_ranges_init(&r);
	assert_int_equal(fy_ranges_add(&r, 0, 0, PG), 0);
	assert_int_equal(fy_ranges_add(&r, 0, PG, 3 * PG), 0);
	assert_int_equal(fy_ranges_add(&r, 0, 4 * PG, PG), 0);
	assert_int_equal(r.n, 1);
	assert_range(&r, 0, 0, 0, 5 * PG);
	assert_int_equal(r.bytes, 5 * PG);
	fy_ranges_free(&r);
	assert_null(r.v);
	assert_int_equal(r.n, 0);
	fy_ranges_free(&r); /* twice is harmless */
}

/* Appending a list: the first range joins the last one where they touch,
 * the rest keep their gaps, and the source is left as it was. */
static void test_add_all_appends_a_list(void **state)
{
	struct fy_ranges r, src;

	fy_ranges_init(&r);
	fy_ranges_init(&src);
	assert_int_equal(fy_ranges_add(&r, 0, 0, PG), 0);
	assert_int_equal(fy_ranges_add(&src, 0, PG, PG), 0);
	assert_int_equal(fy_ranges_add(&src, 0, 4 * PG, 2 * PG), 0);
	assert_int_equal(fy_ranges_add(&src, 1, 0, PG), 0);
	assert_int_equal(fy_ranges_add_all(&r, &src), 0);
	assert_int_equal(r.n, 3);
	assert_range(&r, 0, 0, 0, 2 * PG);
	assert_range(&r, 1, 0, 4 * PG, 2 * PG);
	assert_range(&r, 2, 1, 0, PG);
	assert_int_equal(r.bytes, 5 * PG);
	assert_int_equal(src.n, 3);
	assert_int_equal(src.bytes, 4 * PG);
	fy_ranges_free(&r);
	fy_ranges_free(&src);
}

static void test_add_keeps_gaps(void **state)
{
	struct fy_ranges r;

	fy_ranges_init(&r);
	assert_int_equal(fy_ranges_add(&r, 0, 0, PG), 0);
	assert_int_equal(fy_ranges_add(&r, 0, 2 * PG, PG), 0);
	assert_int_equal(fy_ranges_add(&r, 0, 3 * PG, 2 * PG), 0);
	assert_int_equal(fy_ranges_add(&r, 0, 10 * PG, PG), 0);
	assert_int_equal(r.n, 3);
	assert_range(&r, 0, 0, 0, PG);
	assert_range(&r, 1, 0, 2 * PG, 3 * PG);
	assert_range(&r, 2, 0, 10 * PG, PG);
	assert_int_equal(r.bytes, 5 * PG);
	/* An empty range adds nothing. */
	assert_int_equal(fy_ranges_add(&r, 0, 20 * PG, 0), 0);
	assert_int_equal(r.n, 3);
	fy_ranges_free(&r);
}

static void test_add_never_merges_across_regions(void **state)
{
	struct fy_ranges r;

	fy_ranges_init(&r);
	/* Region 0 ends at 4 pages, region 1 starts at offset 4 pages:
	 * contiguous offsets but different regions. */
	assert_int_equal(fy_ranges_add(&r, 0, 0, 4 * PG), 0);
	assert_int_equal(fy_ranges_add(&r, 1, 4 * PG, PG), 0);
	assert_int_equal(fy_ranges_add(&r, 1, 5 * PG, PG), 0);
	assert_int_equal(fy_ranges_add(&r, 0, 4 * PG, PG), 0);
	assert_int_equal(r.n, 3);
	assert_range(&r, 0, 0, 0, 4 * PG);
	assert_range(&r, 1, 1, 4 * PG, 2 * PG);
	assert_range(&r, 2, 0, 4 * PG, PG);
	assert_int_equal(r.bytes, 7 * PG);
	fy_ranges_free(&r);
}

static void test_add_many_and_clear(void **state)
{
	struct fy_ranges r;
	struct fy_range *v;
	size_t i, cap;

	fy_ranges_init(&r);
	for (i = 0; i < 100000; i++)
		assert_int_equal(fy_ranges_add(&r, (uint32_t)(i % 3), i * 2 * PG, PG), 0);
	assert_int_equal(r.n, 100000);
	assert_int_equal(r.bytes, 100000ull * PG);
	assert_int_equal(sum_lengths(&r), r.bytes);
	for (i = 0; i < r.n; i += 9973)
		assert_range(&r, i, (uint32_t)(i % 3), i * 2 * PG, PG);

	/* Clear keeps the memory so a reused list stops allocating. */
	v = r.v;
	cap = r.cap;
	fy_ranges_clear(&r);
	assert_int_equal(r.n, 0);
	assert_int_equal(r.bytes, 0);
	assert_ptr_equal(r.v, v);
	assert_int_equal(r.cap, cap);
	assert_int_equal(fy_ranges_add(&r, 2, 0, PG), 0);
	assert_int_equal(r.n, 1);
	assert_range(&r, 0, 2, 0, PG);
	fy_ranges_free(&r);
}

static void test_all_one_range_per_region(void **state)
{
	struct fy_region rg[3] = {
		{ .gpa = 0, .size = 64 * PG },
		{ .gpa = 64 * PG, .size = PG },
		{ .gpa = 1ull << 32, .size = 1ull << 30 },
	};
	struct fy_ranges r;

	fy_ranges_init(&r);
	assert_int_equal(fy_ranges_all(&r, rg, 3), 0);
	assert_int_equal(r.n, 3);
	assert_range(&r, 0, 0, 0, 64 * PG);
	assert_range(&r, 1, 1, 0, PG);
	assert_range(&r, 2, 2, 0, 1ull << 30);
	assert_int_equal(r.bytes, 65 * PG + (1ull << 30));
	fy_ranges_free(&r);
}

/* ---- bitmaps ---- */

static void set_bit(uint64_t *bm, size_t i)
{
	bm[i / 64] |= UINT64_C(1) << (i % 64);
}

/* The obvious bit-at-a-time conversion the fast one must agree with. */
static void naive_ranges(struct fy_ranges *r, uint32_t region,
			 const uint64_t *bm, size_t pages)
{
	size_t i;

	for (i = 0; i < pages; i++)
		if (bm[i / 64] >> (i % 64) & 1)
			assert_int_equal(fy_ranges_add(r, region, i * PG, PG), 0);
}

static void assert_same_ranges(const struct fy_ranges *a, const struct fy_ranges *b)
{
	size_t i;

	assert_int_equal(a->n, b->n);
	assert_int_equal(a->bytes, b->bytes);
	for (i = 0; i < a->n; i++) {
		assert_int_equal(a->v[i].region, b->v[i].region);
		assert_int_equal(a->v[i].offset, b->v[i].offset);
		assert_int_equal(a->v[i].length, b->v[i].length);
	}
}

/*
 * Compare against the naive conversion. Bits beyond @pages are set on
 * purpose: they must be ignored.
 */
static void check_bitmap(uint64_t *bm, size_t pages)
{
	struct fy_ranges fast, ref;
	size_t words = (pages + 63) / 64;

	if (pages % 64)
		bm[words - 1] |= ~UINT64_C(0) << (pages % 64);
	fy_ranges_init(&fast);
	fy_ranges_init(&ref);
	assert_int_equal(fy_bitmap_to_ranges(&fast, 7, bm, pages), 0);
	naive_ranges(&ref, 7, bm, pages);
	assert_same_ranges(&fast, &ref);
	fy_ranges_free(&fast);
	fy_ranges_free(&ref);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	/* xorshift64*: reproducible across runs. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static void test_bitmap_random_awkward_sizes(void **state)
{
	static const size_t sizes[] = { 1, 2, 63, 64, 65, 127, 128, 129, 1000, 4096, 100003 };
	size_t s, iter, w;

	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t pages = sizes[s], words = (pages + 63) / 64;
		uint64_t *bm = calloc(words, sizeof(*bm));

		assert_non_null(bm);
		for (iter = 0; iter < 200; iter++) {
			/*
			 * Vary the density so that both long runs and isolated
			 * bits, and whole zero and one words, appear.
			 */
			unsigned int mode = (unsigned int)(iter % 5);

			for (w = 0; w < words; w++) {
				uint64_t a = rnd(), b = rnd();

				switch (mode) {
				case 0: bm[w] = a; break;
				case 1: bm[w] = a & b; break;
				case 2: bm[w] = a | b; break;
				case 3: bm[w] = (a % 4 == 0) ? 0 : (a % 4 == 1) ? ~0ull : b; break;
				default: bm[w] = (a & b & rnd()) | ((b % 7 == 0) ? ~0ull : 0); break;
				}
			}
			check_bitmap(bm, pages);
		}
		free(bm);
	}
}

static void test_bitmap_all_ones(void **state)
{
	static const size_t sizes[] = { 1, 63, 64, 65, 1000, 262144 };
	size_t s;

	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t pages = sizes[s], words = (pages + 63) / 64;
		uint64_t *bm = malloc(words * sizeof(*bm));
		struct fy_ranges r;

		assert_non_null(bm);
		memset(bm, 0xff, words * sizeof(*bm));
		fy_ranges_init(&r);
		assert_int_equal(fy_bitmap_to_ranges(&r, 2, bm, pages), 0);
		assert_int_equal(r.n, 1);
		assert_range(&r, 0, 2, 0, pages * PG);
		assert_int_equal(r.bytes, pages * PG);
		fy_ranges_free(&r);
		free(bm);
	}
}

static void test_bitmap_all_zero(void **state)
{
	static const size_t sizes[] = { 0, 1, 63, 64, 65, 1000, 262144 };
	size_t s;

	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t pages = sizes[s], words = (pages + 63) / 64;
		uint64_t *bm = calloc(words + 1, sizeof(*bm));
		struct fy_ranges r;

		assert_non_null(bm);
		/* Garbage past the last page must not show up. */
		if (pages % 64)
			bm[words - 1] = ~UINT64_C(0) << (pages % 64);
		fy_ranges_init(&r);
		assert_int_equal(fy_bitmap_to_ranges(&r, 0, bm, pages), 0);
		assert_int_equal(r.n, 0);
		assert_int_equal(r.bytes, 0);
		fy_ranges_free(&r);
		free(bm);
	}
}

static void test_bitmap_runs_across_words(void **state)
{
	uint64_t bm[5] = { 0 };
	struct fy_ranges r;
	size_t i;

	/* 60..131: starts in word 0, covers word 1 whole, ends in word 2. */
	for (i = 60; i < 132; i++)
		set_bit(bm, i);
	/* 191..192: exactly across the word 2 / word 3 boundary. */
	set_bit(bm, 191);
	set_bit(bm, 192);
	/* 255..299 (the end): from the last bit of word 3 to @pages. */
	for (i = 255; i < 300; i++)
		set_bit(bm, i);

	fy_ranges_init(&r);
	assert_int_equal(fy_bitmap_to_ranges(&r, 3, bm, 300), 0);
	assert_int_equal(r.n, 3);
	assert_range(&r, 0, 3, 60 * PG, 72 * PG);
	assert_range(&r, 1, 3, 191 * PG, 2 * PG);
	assert_range(&r, 2, 3, 255 * PG, 45 * PG);
	assert_int_equal(r.bytes, 119 * PG);
	check_bitmap(bm, 300);

	/* A single set bit at each position of a word, and at the ends. */
	fy_ranges_clear(&r);
	memset(bm, 0, sizeof(bm));
	set_bit(bm, 0);
	set_bit(bm, 63);
	set_bit(bm, 64);
	set_bit(bm, 127);
	set_bit(bm, 319);
	assert_int_equal(fy_bitmap_to_ranges(&r, 0, bm, 320), 0);
	assert_int_equal(r.n, 4);
	assert_range(&r, 0, 0, 0, PG);
	assert_range(&r, 1, 0, 63 * PG, 2 * PG);
	assert_range(&r, 2, 0, 127 * PG, PG);
	assert_range(&r, 3, 0, 319 * PG, PG);
	fy_ranges_free(&r);
}

static void test_bitmap_appends_and_coalesces(void **state)
{
	uint64_t bm[2] = { 0xf0ull, 0 };
	struct fy_ranges r;

	/* A conversion appends; a first run contiguous with the list's last
	 * range in the same region merges into it. */
	fy_ranges_init(&r);
	assert_int_equal(fy_ranges_add(&r, 1, 0, 4 * PG), 0);
	assert_int_equal(fy_bitmap_to_ranges(&r, 1, bm, 128), 0);
	assert_int_equal(r.n, 1);
	assert_range(&r, 0, 1, 0, 8 * PG);
	assert_int_equal(fy_bitmap_to_ranges(&r, 2, bm, 128), 0);
	assert_int_equal(r.n, 2);
	assert_range(&r, 1, 2, 4 * PG, 4 * PG);
	assert_int_equal(r.bytes, 12 * PG);
	fy_ranges_free(&r);
}

/* Two dirty sets appended out of order merge into a union that sends
 * every page exactly once. */
static void test_normalize_unions_overlaps(void **state)
{
	struct fy_ranges r;
	const uint64_t P = FY_PAGE_SIZE;

	(void)state;
	fy_ranges_init(&r);
	/* first set: pages 10-11 and 20 of region 0, page 0 of region 1 */
	assert_int_equal(fy_ranges_add(&r, 0, 10 * P, 2 * P), 0);
	assert_int_equal(fy_ranges_add(&r, 0, 20 * P, P), 0);
	assert_int_equal(fy_ranges_add(&r, 1, 0, P), 0);
	/* second set: pages 5, 11-13 (overlaps), 21 (touches) of region 0 */
	assert_int_equal(fy_ranges_add(&r, 0, 5 * P, P), 0);
	assert_int_equal(fy_ranges_add(&r, 0, 11 * P, 3 * P), 0);
	assert_int_equal(fy_ranges_add(&r, 0, 21 * P, P), 0);
	fy_ranges_normalize(&r);
	assert_int_equal(r.n, 4);
	assert_int_equal(r.v[0].region, 0);
	assert_int_equal(r.v[0].offset, 5 * P);
	assert_int_equal(r.v[0].length, P);
	assert_int_equal(r.v[1].offset, 10 * P);
	assert_int_equal(r.v[1].length, 4 * P);
	assert_int_equal(r.v[2].offset, 20 * P);
	assert_int_equal(r.v[2].length, 2 * P);
	assert_int_equal(r.v[3].region, 1);
	assert_int_equal(r.v[3].offset, 0);
	assert_int_equal(r.bytes, 8 * P);
	/* a range wholly inside another adds nothing */
	assert_int_equal(fy_ranges_add(&r, 0, 11 * P, P), 0);
	fy_ranges_normalize(&r);
	assert_int_equal(r.n, 4);
	assert_int_equal(r.bytes, 8 * P);
	fy_ranges_free(&r);
}

/* Chunks cover every byte once, never cross a range, never exceed the
 * chunk size. */
static void test_next_chunk(void **state)
{
	struct fy_ranges r;
	struct fy_chunk_cursor cur = { 0 };
	struct fy_range c;
	const uint64_t P = FY_PAGE_SIZE;
	uint64_t total = 0;
	size_t n = 0;

	(void)state;
	fy_ranges_init(&r);
	assert_int_equal(fy_ranges_add(&r, 0, 0, 5 * P), 0);
	assert_int_equal(fy_ranges_add(&r, 0, 10 * P, 2 * P), 0);
	assert_int_equal(fy_ranges_add(&r, 1, 0, P), 0);
	while (fy_ranges_next_chunk(&r, &cur, 2 * P, &c)) {
		assert_true(c.length > 0 && c.length <= 2 * P);
		total += c.length;
		n++;
	}
	/* 5 pages -> 2+2+1, 2 pages -> 2, 1 page -> 1 */
	assert_int_equal(n, 5);
	assert_int_equal(total, r.bytes);
	assert_int_equal(c.region, 1);
	/* an empty list yields nothing */
	fy_ranges_clear(&r);
	memset(&cur, 0, sizeof(cur));
	assert_false(fy_ranges_next_chunk(&r, &cur, 2 * P, &c));
	fy_ranges_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_add_coalesces_contiguous),
		cmocka_unit_test(test_add_all_appends_a_list),
		cmocka_unit_test(test_add_keeps_gaps),
		cmocka_unit_test(test_add_never_merges_across_regions),
		cmocka_unit_test(test_add_many_and_clear),
		cmocka_unit_test(test_all_one_range_per_region),
		cmocka_unit_test(test_bitmap_random_awkward_sizes),
		cmocka_unit_test(test_bitmap_all_ones),
		cmocka_unit_test(test_bitmap_all_zero),
		cmocka_unit_test(test_bitmap_runs_across_words),
		cmocka_unit_test(test_bitmap_appends_and_coalesces),
		cmocka_unit_test(test_normalize_unions_overlaps),
		cmocka_unit_test(test_next_chunk),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
