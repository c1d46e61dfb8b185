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
#include <sys/mman.h>

#include "memory/memory.h"

/* First allocation, in ranges; doubled from there. */
#define FY_RANGES_MIN_CAP 64
/* Lists from this size on are mapped with transparent huge pages. */
#define FY_HUGE_SIZE (2u << 20)
#define FY_HUGE_MIN (8u << 20)

/*
 * A dirty pass over a large guest can produce tens of millions of ranges
 * (hundreds of MiB). With 4 KiB pages, first-touching such a list costs a
 * fault per 170 ranges and walking it a TLB miss per page, both expensive
 * on a virtualised host. So a list from FY_HUGE_MIN bytes on lives in its
 * own anonymous mapping, advised to use transparent huge pages and grown
 * with mremap() (no copy). It cannot be malloc memory advised in place:
 * the advice splits the mapping and glibc's realloc() then falls back to
 * copying. Whether a list is mapped follows from its capacity alone.
 */
static bool ranges_mapped(size_t cap)
{
	return cap * sizeof(struct fy_range) >= FY_HUGE_MIN;
}

static size_t ranges_map_len(size_t cap)
{
	return (cap * sizeof(struct fy_range) + FY_HUGE_SIZE - 1) &
	       ~(size_t)(FY_HUGE_SIZE - 1);
}

static void ranges_release(struct fy_range *v, size_t cap)
{
	if (v && ranges_mapped(cap))
		munmap(v, ranges_map_len(cap));
	else
		free(v);
}

static struct fy_range *ranges_resize(struct fy_range *old, size_t n,
				      size_t old_cap, size_t cap)
{
	void *p;

	if (!ranges_mapped(cap))
		return realloc(old, cap * sizeof(*old));
	if (ranges_mapped(old_cap)) {
		p = mremap(old, ranges_map_len(old_cap), ranges_map_len(cap),
			   MREMAP_MAYMOVE);
		return p == MAP_FAILED ? NULL : p;
	}
	p = mmap(NULL, ranges_map_len(cap), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* Only a hint: without THP the list simply uses small pages. */
	(void)madvise(p, ranges_map_len(cap), MADV_HUGEPAGE);
	if (n)
		memcpy(p, old, n * sizeof(*old));
	free(old);
	return p;
}

static int ranges_grow(struct fy_ranges *r)
{
	size_t cap = r->cap ? r->cap * 2 : FY_RANGES_MIN_CAP;
	struct fy_range *v;

	if (cap < r->cap || cap > SIZE_MAX / 2 / sizeof(*v))
		return -ENOMEM;
	v = ranges_resize(r->v, r->n, r->cap, cap);
	if (!v)
		return -ENOMEM;
	r->v = v;
	r->cap = cap;
	return 0;
}

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
	ranges_release(r->v, r->cap);
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
 * fy_ranges_add_all() - append every range of @src to @r (merging as
 * fy_ranges_add() does).
 *
 * Return: 0, or -ENOMEM (@r then holds part of @src).
 */
int fy_ranges_add_all(struct fy_ranges *r, const struct fy_ranges *src)
{
	for (size_t i = 0; i < src->n; i++) {
		const struct fy_range *x = &src->v[i];
		int rc = fy_ranges_add(r, x->region, x->offset, x->length);

		if (rc)
			return rc;
	}
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

/*
 * Bitmap scanning. The bitmap is read eight words at a time: a block with
 * nothing to report (all clear outside a run, all set inside one) is
 * skipped with one test, so clean stretches go at memory speed. Other
 * words are turned into "edges", the page numbers where the state
 * changes, without a data-dependent branch per bit or per run: the edges
 * of word x are the set bits of x ^ (x << 1 | carry), and the first four
 * are stored unconditionally (the buffer advances by their count), since
 * a sparse, spread-out bitmap makes every per-run branch a coin toss.
 * Edges alternate start, end, start...; pairs become ranges when the
 * buffer fills and at the end.
 */
#define SCAN_EDGES 2048u
#define SCAN_BLOCK 8u
/* Edges one block can add: 64 per word. */
#define SCAN_FLUSH (SCAN_EDGES - SCAN_BLOCK * 64u)

struct bscan {
	struct fy_ranges *r;
	uint32_t region;
	bool first;	/* the next range may merge with the list's last */
	uint64_t carry; /* 1 while inside a run (last bit seen was set) */
	size_t ne;
	uint64_t e[SCAN_EDGES];
};

/* Turn the complete (start, end) pairs of the edge buffer into ranges; an
 * unpaired start stays for the next flush. */
static int scan_flush(struct bscan *s)
{
	struct fy_ranges *r = s->r;
	size_t pairs = s->ne / 2, k = 0;
	uint64_t bytes = 0;
	int rc;

	if (pairs && s->first) {
		s->first = false;
		rc = fy_ranges_add(r, s->region, s->e[0] * FY_PAGE_SIZE,
				   (s->e[1] - s->e[0]) * FY_PAGE_SIZE);
		if (rc)
			return rc;
		k = 1;
	}
	/*
	 * Runs found by one scan are separated by a clear bit and never
	 * touch, so only the first may merge; the rest are stored as is.
	 */
	while (r->cap - r->n < pairs - k) {
		rc = ranges_grow(r);
		if (rc)
			return rc;
	}
	for (; k < pairs; k++) {
		uint64_t len = (s->e[2 * k + 1] - s->e[2 * k]) * FY_PAGE_SIZE;

		r->v[r->n++] = (struct fy_range){
			.region = s->region,
			.offset = s->e[2 * k] * FY_PAGE_SIZE,
			.length = len,
		};
		bytes += len;
	}
	r->bytes += bytes;
	if (s->ne % 2)
		s->e[0] = s->e[s->ne - 1];
	s->ne %= 2;
	return 0;
}

/* Append the edges of word @x, whose bit 0 is page @base. */
static inline __attribute__((always_inline)) void
scan_word(struct bscan *s, uint64_t x, uint64_t base)
{
	/* Bit 63 forced on only keeps ctz defined for an empty mask; those
	 * stores are beyond the count and overwritten later. */
	const uint64_t top = UINT64_C(1) << 63;
	uint64_t edges = x ^ (x << 1 | s->carry);
	unsigned int cnt = (unsigned int)__builtin_popcountll(edges);
	uint64_t *o = s->e + s->ne;

	s->carry = x >> 63;
	o[0] = base + (uint64_t)__builtin_ctzll(edges | top);
	edges &= edges - 1;
	o[1] = base + (uint64_t)__builtin_ctzll(edges | top);
	edges &= edges - 1;
	o[2] = base + (uint64_t)__builtin_ctzll(edges | top);
	edges &= edges - 1;
	o[3] = base + (uint64_t)__builtin_ctzll(edges | top);
	edges &= edges - 1;
	for (o += 4; edges; edges &= edges - 1)
		*o++ = base + (uint64_t)__builtin_ctzll(edges);
	s->ne += cnt;
}

static inline __attribute__((always_inline)) int
scan_body(struct bscan *s, const uint64_t *bm, size_t pages)
{
	size_t full = pages / 64, w = 0, k;
	unsigned int tail = pages % 64;
	int rc;

	while (w + SCAN_BLOCK <= full) {
		const uint64_t *b = bm + w;

		if (!s->carry) {
			if (!(b[0] | b[1] | b[2] | b[3] | b[4] | b[5] | b[6] | b[7])) {
				w += SCAN_BLOCK;
				continue;
			}
		} else if (!~(b[0] & b[1] & b[2] & b[3] & b[4] & b[5] & b[6] & b[7])) {
			w += SCAN_BLOCK;
			continue;
		}
		for (k = 0; k < SCAN_BLOCK; k++)
			scan_word(s, b[k], (uint64_t)(w + k) * 64);
		w += SCAN_BLOCK;
		if (s->ne > SCAN_FLUSH && (rc = scan_flush(s)))
			return rc;
	}
	for (; w < full; w++)
		scan_word(s, bm[w], (uint64_t)w * 64);
	/* Bits past @pages are forced clear, so a run reaching the end of
	 * the bitmap closes exactly at @pages. */
	if (tail)
		scan_word(s, bm[full] & ((UINT64_C(1) << tail) - 1),
			  (uint64_t)full * 64);
	else if (s->carry)
		s->e[s->ne++] = pages;
	return scan_flush(s);
}

#if defined(__x86_64__) && defined(__GNUC__)
/* The same scan with POPCNT and TZCNT, which x86-64's baseline lacks. */
__attribute__((target("popcnt,bmi"))) static int
scan_fast(struct bscan *s, const uint64_t *bm, size_t pages)
{
	return scan_body(s, bm, pages);
}
#endif

static int scan_generic(struct bscan *s, const uint64_t *bm, size_t pages)
{
	return scan_body(s, bm, pages);
}

/**
 * fy_bitmap_to_ranges() - append the set bits of a page bitmap as ranges.
 * @r:      list
 * @region: region index the bitmap describes
 * @bitmap: bit i (bit i % 64 of word i / 64) is page i
 * @pages:  number of meaningful bits; bits beyond it are ignored
 *
 * The cost is proportional to the number of words plus the number of
 * runs, not to the number of set bits; blocks of eight words with nothing
 * to report are skipped with one test (see above). The first range may
 * merge with the last one already in @r, as with fy_ranges_add().
 *
 * Return: 0 or -ENOMEM (some of the ranges may have been appended).
 */
int fy_bitmap_to_ranges(struct fy_ranges *r, uint32_t region,
			const uint64_t *bitmap, size_t pages)
{
	struct bscan s;

	s.r = r;
	s.region = region;
	s.first = true;
	s.carry = 0;
	s.ne = 0;
#if defined(__x86_64__) && defined(__GNUC__)
	if (__builtin_cpu_supports("popcnt") && __builtin_cpu_supports("bmi"))
		return scan_fast(&s, bitmap, pages);
#endif
	return scan_generic(&s, bitmap, pages);
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

/**
 * fy_ranges_next_chunk() - the next chunk of at most @chunk bytes.
 */
bool fy_ranges_next_chunk(const struct fy_ranges *r, struct fy_chunk_cursor *c,
			  uint64_t chunk, struct fy_range *out)
{
	while (c->i < r->n && c->off >= r->v[c->i].length) {
		c->i++;
		c->off = 0;
	}
	if (c->i >= r->n)
		return false;
	out->region = r->v[c->i].region;
	out->offset = r->v[c->i].offset + c->off;
	out->length = r->v[c->i].length - c->off < chunk
			      ? r->v[c->i].length - c->off : chunk;
	c->off += out->length;
	return true;
}
