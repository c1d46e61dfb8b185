// SPDX-License-Identifier: MIT
/*
 * ranges.c - coalesced lists of page ranges, and the conversion of page
 * bitmaps into such lists.
 *
 * Every producer of dirty information (PAGEMAP_SCAN, a VMM bitmap, "all of
 * memory") ends up here, so the chunker downstream only ever sees
 * (region, offset, length) runs in ascending order, already merged.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "memory/memory.h"

/* First allocation, in ranges; doubled from there. */
#define FY_RANGES_MIN_CAP 64

/**
 * fy_ranges_init() - make @r an empty list that owns no memory.
 * @r: list to initialise
 */
void fy_ranges_init(struct fy_ranges *r)
{
	memset(r, 0, sizeof(*r));
}

/**
 * fy_ranges_free() - release the list's memory and leave it empty.
 * @r: list, may be NULL
 */
void fy_ranges_free(struct fy_ranges *r)
{
	if (!r)
		return;
	free(r->v);
	fy_ranges_init(r);
}

/**
 * fy_ranges_clear() - empty the list but keep its allocation, so a list
 * reused for every dirty pass stops allocating once it is big enough.
 * @r: list
 */
void fy_ranges_clear(struct fy_ranges *r)
{
	r->n = 0;
	r->bytes = 0;
}

static int ranges_grow(struct fy_ranges *r)
{
	size_t cap = r->cap ? r->cap * 2 : FY_RANGES_MIN_CAP;
	struct fy_range *v;

	if (cap < r->cap || cap > SIZE_MAX / sizeof(*v))
		return -ENOMEM;
	v = realloc(r->v, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	r->v = v;
	r->cap = cap;
	return 0;
}

/**
 * fy_ranges_add() - append a range, merging it into the last one when it
 * is in the same region and starts exactly where the last one ends.
 * @r:      list
 * @region: region index
 * @offset: byte offset within the region
 * @length: bytes; an empty range is ignored
 *
 * Return: 0, or -ENOMEM (the list is then unchanged).
 */
int fy_ranges_add(struct fy_ranges *r, uint32_t region, uint64_t offset,
		  uint64_t length)
{
	struct fy_range *last;
	int rc;

	if (!length)
		return 0;
	if (r->n) {
		last = &r->v[r->n - 1];
		if (last->region == region &&
		    last->offset + last->length == offset) {
			last->length += length;
			r->bytes += length;
			return 0;
		}
	}
	if (r->n == r->cap) {
		rc = ranges_grow(r);
		if (rc)
			return rc;
	}
	r->v[r->n++] = (struct fy_range){
		.region = region, .offset = offset, .length = length,
	};
	r->bytes += length;
	return 0;
}

/**
 * fy_ranges_all() - append every region whole, one range per region.
 * @r:        list
 * @regions:  region table
 * @nregions: entries in @regions
 *
 * Return: 0 or -ENOMEM.
 */
int fy_ranges_all(struct fy_ranges *r, const struct fy_region *regions,
		  size_t nregions)
{
	size_t i;
	int rc;

	for (i = 0; i < nregions; i++) {
		rc = fy_ranges_add(r, (uint32_t)i, 0, regions[i].size);
		if (rc)
			return rc;
	}
	return 0;
}

static int add_pages(struct fy_ranges *r, uint32_t region, uint64_t first,
		     uint64_t count)
{
	return fy_ranges_add(r, region, first * FY_PAGE_SIZE,
			     count * FY_PAGE_SIZE);
}

/**
 * fy_bitmap_to_ranges() - append the set bits of a page bitmap as ranges.
 * @r:      list
 * @region: region index the bitmap describes
 * @bitmap: bit i (bit i % 64 of word i / 64) is page i
 * @pages:  number of meaningful bits; bits beyond it are ignored
 *
 * The scan looks for the next change of state (clear to set, set to clear)
 * with __builtin_ctzll, so its cost is proportional to the number of words
 * plus the number of runs, not to the number of set bits. Words with
 * nothing to report (all clear outside a run, all set inside one) are
 * skipped with a single comparison.
 *
 * Return: 0 or -ENOMEM.
 */
int fy_bitmap_to_ranges(struct fy_ranges *r, uint32_t region,
			const uint64_t *bitmap, size_t pages)
{
	size_t nwords = (pages + 63) / 64;
	unsigned int tail = pages % 64;
	uint64_t run_start = 0;
	bool in_run = false;
	size_t w;
	int rc;

	for (w = 0; w < nwords; w++) {
		uint64_t word = bitmap[w];
		uint64_t base = (uint64_t)w * 64;
		unsigned int pos = 0;

		/*
		 * Bits past @pages are forced clear, so a run reaching the
		 * end of the bitmap closes exactly at @pages below.
		 */
		if (tail && w == nwords - 1)
			word &= (UINT64_C(1) << tail) - 1;
		if (!in_run && !word)
			continue;
		if (in_run && word == ~UINT64_C(0))
			continue;

		for (;;) {
			/* Bits that differ from the current state. */
			uint64_t look = (in_run ? ~word : word) >> pos;
			unsigned int b;

			if (!look)
				break;
			b = pos + (unsigned int)__builtin_ctzll(look);
			if (in_run) {
				rc = add_pages(r, region, run_start,
					       base + b - run_start);
				if (rc)
					return rc;
			} else {
				run_start = base + b;
			}
			in_run = !in_run;
			pos = b;
		}
	}
	if (in_run)
		return add_pages(r, region, run_start, pages - run_start);
	return 0;
}

static int range_cmp(const void *a, const void *b)
{
	const struct fy_range *x = a, *y = b;

	if (x->region != y->region)
		return x->region < y->region ? -1 : 1;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	return 0;
}

/**
 * fy_ranges_normalize() - sort the list and merge overlapping or touching
 * ranges, so that a union of two dirty sets sends every page once.
 */
void fy_ranges_normalize(struct fy_ranges *r)
{
	size_t out = 0;

	if (r->n < 2)
		return;
	qsort(r->v, r->n, sizeof(r->v[0]), range_cmp);
	r->bytes = r->v[0].length;
	for (size_t i = 1; i < r->n; i++) {
		struct fy_range *last = &r->v[out];
		const struct fy_range *cur = &r->v[i];
		uint64_t end = last->offset + last->length;

		if (cur->region == last->region && cur->offset <= end) {
			uint64_t cend = cur->offset + cur->length;

			if (cend > end) {
				r->bytes += cend - end;
				last->length = cend - last->offset;
			}
			continue;
		}
		r->v[++out] = *cur;
		r->bytes += cur->length;
	}
	r->n = out + 1;
}
