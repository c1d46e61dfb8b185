// SPDX-License-Identifier: MIT
/*
 * test_zero.c - zero-page detection against a byte-at-a-time reference.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "memory/memory.h"

#define PG FY_PAGE_SIZE

static uint64_t rng(uint64_t *s)
{
	uint64_t x = (*s += 0x9e3779b97f4a7c15ull);

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static bool naive_zero(const uint8_t *p)
{
	size_t i;

	for (i = 0; i < PG; i++) {
		if (p[i])
			return false;
	}
	return true;
}

static uint8_t *page_alloc(size_t npages)
{
	void *p = NULL;

	assert_int_equal(posix_memalign(&p, PG, npages * PG + PG), 0);
	memset(p, 0, npages * PG + PG);
	return p;
}

static void test_zero_page(void **state)
{
	uint8_t *p = page_alloc(1);

	assert_true(fy_page_is_zero(p));
	free(p);
}

/*
 * One non-zero byte at every offset of the page, so that every 16-byte
 * vector, every 64-byte lane, the first and the last byte are covered,
 * with a low bit, a high bit and all bits; on aligned and unaligned pages.
 */
static void test_single_byte_every_offset(void **state)
{
	static const uint8_t vals[] = { 0x01, 0x80, 0xff };
	static const size_t shifts[] = { 0, 1, 8, 15, 63 };
	uint8_t *buf = page_alloc(1);
	size_t s, v, off;

	for (s = 0; s < sizeof(shifts) / sizeof(shifts[0]); s++) {
		uint8_t *p = buf + shifts[s];

		for (v = 0; v < sizeof(vals); v++) {
			for (off = 0; off < PG; off++) {
				p[off] = vals[v];
				assert_false(fy_page_is_zero(p));
				assert_false(naive_zero(p));
				p[off] = 0;
			}
		}
		assert_true(fy_page_is_zero(p));
	}
	free(buf);
}

/* Bytes just outside the page must not count. */
static void test_neighbours_ignored(void **state)
{
	uint8_t *buf = page_alloc(3);

	memset(buf, 0xff, 3 * PG);
	memset(buf + PG, 0, PG);
	assert_true(fy_page_is_zero(buf + PG));
	buf[2 * PG - 1] = 1;
	assert_false(fy_page_is_zero(buf + PG));
	free(buf);
}

/* Pages with 0, 1 or a few random non-zero bytes, or random content. */
static void test_random_pages(void **state)
{
	uint8_t *p = page_alloc(1);
	uint64_t s = 42;
	int iter, k, nz;

	for (iter = 0; iter < 20000; iter++) {
		memset(p, 0, PG);
		nz = (int)(rng(&s) % 5);
		if (nz == 4) {
			for (k = 0; k < (int)PG; k += 8) {
				uint64_t w = rng(&s);

				memcpy(p + k, &w, 8);
			}
		} else {
			for (k = 0; k < nz; k++)
				p[rng(&s) % PG] = (uint8_t)(rng(&s) | 1);
		}
		assert_int_equal(fy_page_is_zero(p), naive_zero(p));
	}
	free(p);
}

static void check_scan(size_t npages, uint64_t seed)
{
	size_t words = (npages + 63) / 64 + 1, i, expect = 0, got;
	uint8_t *p = page_alloc(npages ? npages : 1);
	uint64_t *bm = calloc(words, sizeof(*bm));
	uint64_t s = seed;

	assert_non_null(bm);
	for (i = 0; i < npages; i++) {
		uint64_t r = rng(&s) % 3;

		/* One third zero, the rest with one byte set somewhere. */
		if (r)
			p[i * PG + rng(&s) % PG] = (uint8_t)r;
	}
	/* The word past the bitmap is a sentinel; so are the bits past
	 * npages in the last word. */
	bm[words - 1] = 0xa5a5a5a5a5a5a5a5ull;
	got = fy_zero_scan(p, npages, bm);
	for (i = 0; i < npages; i++) {
		bool z = naive_zero(p + i * PG);

		expect += z;
		assert_int_equal(!!(bm[i / 64] & (UINT64_C(1) << (i % 64))), z);
	}
	for (i = npages; i % 64; i++)
		assert_false(bm[i / 64] & (UINT64_C(1) << (i % 64)));
	assert_int_equal(bm[words - 1], 0xa5a5a5a5a5a5a5a5ull);
	assert_int_equal(got, expect);
	free(bm);
	free(p);
}

static void test_scan_awkward_counts(void **state)
{
	static const size_t counts[] = { 0,  1,	  2,   63,  64,	 65,
					 127, 128, 129, 191, 200, 1000 };
	size_t i;

	for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
		check_scan(counts[i], 7 + i);
}

static void test_scan_all_zero_and_none(void **state)
{
	size_t n = 130, i;
	uint8_t *p = page_alloc(n);
	uint64_t bm[3] = { 0 };

	assert_int_equal(fy_zero_scan(p, n, bm), n);
	assert_int_equal(bm[0], ~UINT64_C(0));
	assert_int_equal(bm[1], ~UINT64_C(0));
	assert_int_equal(bm[2], 3);
	for (i = 0; i < n; i++)
		p[i * PG + PG - 1] = 1;
	memset(bm, 0, sizeof(bm));
	assert_int_equal(fy_zero_scan(p, n, bm), 0);
	assert_int_equal(bm[0] | bm[1] | bm[2], 0);
	free(p);
}

/* Bits already set by the caller stay set (the scan only ORs). */
static void test_scan_keeps_caller_bits(void **state)
{
	uint8_t *p = page_alloc(64);
	uint64_t bm = 0;
	size_t i;

	for (i = 0; i < 64; i++)
		p[i * PG] = 1;
	memset(p + 5 * PG, 0, PG);
	bm = UINT64_C(1) << 40;
	assert_int_equal(fy_zero_scan(p, 64, &bm), 1);
	assert_int_equal(bm, (UINT64_C(1) << 40) | (UINT64_C(1) << 5));
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_zero_page),
		cmocka_unit_test(test_single_byte_every_offset),
		cmocka_unit_test(test_neighbours_ignored),
		cmocka_unit_test(test_random_pages),
		cmocka_unit_test(test_scan_awkward_counts),
		cmocka_unit_test(test_scan_all_zero_and_none),
		cmocka_unit_test(test_scan_keeps_caller_bits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
