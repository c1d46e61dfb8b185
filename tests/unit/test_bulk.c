// SPDX-License-Identifier: MIT
/*
 * test_bulk.c - the engine's bulk buffers: every kind of backing maps the
 * size asked for, rounded to its page size, aligned, zeroed and usable to
 * the last byte.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "memory/memory.h"

#define MIB (1u << 20)

/* Free 2 MiB pages in the hugetlb pool (0 when there is no pool). */
static long hugetlb_free(void)
{
	FILE *f = fopen("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "r");
	long n = 0;

	if (f) {
		if (fscanf(f, "%ld", &n) != 1)
			n = 0;
		fclose(f);
	}
	return n;
}

/* Whether madvise(MADV_HUGEPAGE) can work: THP not set to "never". */
static bool thp_possible(void)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	char line[128] = "";
	bool ok;

	if (!f)
		return false;
	ok = fgets(line, sizeof(line), f) && !strstr(line, "[never]");
	fclose(f);
	return ok;
}

/* New memory reads as zero, then holds a pattern in every byte. */
static void check_usable(const struct fy_bulk *b)
{
	for (size_t i = 0; i < b->size; i += FY_PAGE_SIZE)
		assert_int_equal(b->data[i], 0);
	assert_int_equal(b->data[b->size - 1], 0);
	for (size_t i = 0; i < b->size; i++)
		b->data[i] = (uint8_t)(i * 131 + 7);
	for (size_t i = 0; i < b->size; i++)
		if (b->data[i] != (uint8_t)(i * 131 + 7))
			fail_msg("byte %zu of %zu lost its value", i, b->size);
}

static void check_kind(enum fy_bulk_kind kind, size_t want, size_t unit)
{
	struct fy_bulk b;

	assert_int_equal(fy_bulk_alloc_as(&b, want, kind), 0);
	assert_int_equal(b.kind, kind);
	assert_true(b.size >= want);
	assert_true(b.size - want < unit);
	assert_int_equal(b.size % unit, 0);
	assert_int_equal((uintptr_t)b.data % unit, 0);
	check_usable(&b);
	fy_bulk_free(&b);
	assert_null(b.data);
	assert_int_equal(b.size, 0);
	assert_int_equal(b.kind, FY_BULK_NONE);
	fy_bulk_free(&b); /* a second free is harmless */
}

static void test_plain_rounding(void **state)
{
	static const size_t sizes[] = { 1, 4095, 4096, 4097, 3 * MIB + 1 };

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		check_kind(FY_BULK_PLAIN, sizes[i], FY_PAGE_SIZE);
}

static void test_thp(void **state)
{
	struct fy_bulk b;

	(void)state;
	if (!thp_possible()) {
		assert_int_equal(fy_bulk_alloc_as(&b, MIB, FY_BULK_THP), -ENOMEM);
		skip();
	}
	check_kind(FY_BULK_THP, 1, FY_HUGE_PAGE_SIZE);
	check_kind(FY_BULK_THP, FY_HUGE_PAGE_SIZE, FY_HUGE_PAGE_SIZE);
	check_kind(FY_BULK_THP, 5 * MIB, FY_HUGE_PAGE_SIZE);
}

/* The pool is the administrator's: with too few free pages the kind is
 * refused at once (never a SIGBUS later), with enough it is used. */
static void test_hugetlb(void **state)
{
	struct fy_bulk b;
	long free_pages = hugetlb_free();

	(void)state;
	if (free_pages < 2) {
		assert_int_equal(fy_bulk_alloc_as(&b, 4 * MIB, FY_BULK_HUGETLB),
				 -ENOMEM);
		assert_null(b.data);
		skip();
	}
	check_kind(FY_BULK_HUGETLB, 1, FY_HUGE_PAGE_SIZE);
	check_kind(FY_BULK_HUGETLB, 3 * MIB, FY_HUGE_PAGE_SIZE);
	/* More than the pool holds is refused, not faulted on later. */
	assert_int_equal(fy_bulk_alloc_as(&b, (size_t)(free_pages + 1) *
					  FY_HUGE_PAGE_SIZE, FY_BULK_HUGETLB),
			 -ENOMEM);
}

/* The best kind available: huge pages for buffers of half a huge page or
 * more, small pages below that. */
static void test_best_kind(void **state)
{
	struct fy_bulk b;

	(void)state;
	assert_int_equal(fy_bulk_alloc(&b, 64 * 1024), 0);
	assert_int_equal(b.kind, FY_BULK_PLAIN);
	assert_int_equal(b.size, 64 * 1024);
	check_usable(&b);
	fy_bulk_free(&b);

	assert_int_equal(fy_bulk_alloc(&b, MIB), 0);
	if (hugetlb_free() >= 1)
		assert_int_equal(b.kind, FY_BULK_HUGETLB);
	else if (thp_possible())
		assert_int_equal(b.kind, FY_BULK_THP);
	else
		assert_int_equal(b.kind, FY_BULK_PLAIN);
	assert_true(b.size >= MIB);
	check_usable(&b);
	printf("# a 1 MiB buffer is backed by %s pages\n",
	       fy_bulk_kind_name(b.kind));
	fy_bulk_free(&b);
}

static void test_invalid(void **state)
{
	struct fy_bulk b;

	(void)state;
	assert_int_equal(fy_bulk_alloc(&b, 0), -EINVAL);
	assert_null(b.data);
	assert_int_equal(fy_bulk_alloc_as(&b, 4096, FY_BULK_NONE), -EINVAL);
	assert_int_equal(fy_bulk_alloc_as(&b, SIZE_MAX, FY_BULK_PLAIN), -EINVAL);
	assert_string_equal(fy_bulk_kind_name(FY_BULK_HUGETLB), "hugetlb");
	assert_string_equal(fy_bulk_kind_name(FY_BULK_THP), "thp");
	assert_string_equal(fy_bulk_kind_name(FY_BULK_PLAIN), "plain");
	assert_string_equal(fy_bulk_kind_name(FY_BULK_NONE), "none");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_rounding),
		cmocka_unit_test(test_thp),
		cmocka_unit_test(test_hugetlb),
		cmocka_unit_test(test_best_kind),
		cmocka_unit_test(test_invalid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
