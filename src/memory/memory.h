/* SPDX-License-Identifier: MIT */
/*
 * memory.h - guest memory regions, coalesced range lists and dirty
 * tracking. No sockets here.
 */
#ifndef FY_MEMORY_H
#define FY_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FY_PAGE_SIZE 4096u

struct fy_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *host;
	int fd;
	uint64_t fd_offset;
	char name[64];
};

/* A run of bytes within one region; offset and length are page multiples. */
struct fy_range {
	uint32_t region;
	uint64_t offset;
	uint64_t length;
};

/*
 * A growable list of ranges. fy_ranges_add() merges a range that starts
 * where the last one ends in the same region, so callers that add pages in
 * ascending order get a coalesced list for free.
 */
struct fy_ranges {
	struct fy_range *v;
	size_t n;
	size_t cap;
	uint64_t bytes; /* sum of lengths */
};
void fy_ranges_init(struct fy_ranges *r);
void fy_ranges_free(struct fy_ranges *r);
void fy_ranges_clear(struct fy_ranges *r); /* keeps the allocation */
int fy_ranges_add(struct fy_ranges *r, uint32_t region, uint64_t offset,
		  uint64_t length); /* 0 or -ENOMEM */
/* Sort and merge overlapping or adjacent ranges; recomputes bytes. */
void fy_ranges_normalize(struct fy_ranges *r);
/* All of every region, one range each. */
int fy_ranges_all(struct fy_ranges *r, const struct fy_region *regions,
		  size_t nregions);

/*
 * fy_bitmap_to_ranges() - append the set bits of a page bitmap as coalesced
 * ranges, scanning a 64-bit word at a time and skipping zero words.
 * @bitmap: bit i = page i of @region; @pages bits are meaningful.
 */
int fy_bitmap_to_ranges(struct fy_ranges *r, uint32_t region,
			const uint64_t *bitmap, size_t pages);

/*
 * Dirty tracking. Two back ends behind one interface:
 *  - uffd: userfaultfd write-protect in async mode; PAGEMAP_SCAN reports
 *    the written pages and write-protects them again in one ioctl.
 *  - bitmap: the VMM's get_dirty_bitmap callback, scanned a word at a time.
 */
typedef int (*fy_bitmap_fn)(void *opaque, uint32_t region, uint64_t *bitmap,
			    size_t pages);

enum fy_dirty_kind {
	FY_DIRTY_UFFD = 1,
	FY_DIRTY_BITMAP = 2,
};

struct fy_dirty {
	enum fy_dirty_kind kind;
	const struct fy_region *regions;
	size_t nregions;
	int uffd;		/* uffd back end */
	int pagemap_fd;		/* /proc/self/pagemap */
	void *scan_buf;		/* struct page_region[] for PAGEMAP_SCAN */
	size_t scan_cap;
	fy_bitmap_fn bitmap_fn; /* bitmap back end */
	void *bitmap_opaque;
	uint64_t *bitmap;	/* scratch, sized for the largest region */
	size_t bitmap_words;
	char err[160];		/* detail of the last failure */
};

/*
 * fy_dirty_probe_uffd() - can this process use the uffd back end?
 * Return: 0, or a negative code with a reason in @why.
 */
int fy_dirty_probe_uffd(char *why, size_t len);

/*
 * fy_dirty_start() - begin tracking: after it returns, every write to the
 * regions is reported by the next fy_dirty_collect().
 * @kind: FY_DIRTY_UFFD or FY_DIRTY_BITMAP.
 * Return: 0 or negative code (detail in d->err).
 */
int fy_dirty_start(struct fy_dirty *d, enum fy_dirty_kind kind,
		   const struct fy_region *regions, size_t nregions,
		   fy_bitmap_fn fn, void *opaque);
/*
 * fy_dirty_collect() - append the pages written since the last collect (or
 * start) to @out as coalesced ranges, and start tracking anew.
 */
int fy_dirty_collect(struct fy_dirty *d, struct fy_ranges *out);
/* Stop tracking and release everything. Safe on a zeroed struct. */
void fy_dirty_stop(struct fy_dirty *d);

#endif /* FY_MEMORY_H */
