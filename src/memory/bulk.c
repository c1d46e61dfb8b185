// SPDX-License-Identifier: MIT
/*
 * bulk.c - large engine buffers on huge pages.
 *
 * The sender gathers and compresses whole chunks, the receiver unpacks
 * them: each pass touches every byte of these buffers once per chunk. On
 * 4 KiB pages a 1 MiB buffer spans 256 TLB entries; on one 2 MiB page it
 * spans one. They are mapped once per connection at their largest size and
 * kept for the session, so the hot path never allocates.
 *
 * The order of preference: pages from the hugetlb pool (reserved at mmap
 * time, so a mapping that succeeds never faults for lack of them), then
 * transparent huge pages by madvise (the kernel may still use small pages
 * when it cannot find free 2 MiB blocks), then plain pages.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "memory/memory.h"

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif

static size_t round_up(size_t n, size_t to)
{
	return (n + to - 1) / to * to;
}

/* 2 MiB pages from the pool, asked for by size so that a system whose
 * default huge page is 1 GiB does not hand out one of those. */
static void *map_hugetlb(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB,
		       -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/*
 * A 2 MiB-aligned mapping advised for transparent huge pages. mmap only
 * promises page alignment, so map one huge page more and trim the ends:
 * an unaligned buffer would have small pages at both ends.
 */
static void *map_thp(size_t len)
{
	size_t over = len + FY_HUGE_PAGE_SIZE, head;
	uint8_t *p = mmap(NULL, over, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	head = round_up((uintptr_t)p, FY_HUGE_PAGE_SIZE) - (uintptr_t)p;
	if (head)
		munmap(p, head);
	if (over - head > len)
		munmap(p + head + len, over - head - len);
	p += head;
	if (madvise(p, len, MADV_HUGEPAGE)) {
		/* THP disabled ("never") or not built in. */
		munmap(p, len);
		return NULL;
	}
	return p;
}

static void *map_plain(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/**
 * fy_bulk_alloc_as() - map at least @want bytes of one kind.
 * @b: receives the buffer (zeroed on failure).
 * @want: bytes needed.
 * @kind: FY_BULK_HUGETLB or FY_BULK_THP (the size is rounded up to 2 MiB),
 *        or FY_BULK_PLAIN (rounded up to 4 KiB).
 *
 * Return: 0, -EINVAL for a zero size or an unknown kind, -ENOMEM when the
 * kind is not available (an empty hugetlb pool, THP disabled) or memory
 * is short.
 */
int fy_bulk_alloc_as(struct fy_bulk *b, size_t want, enum fy_bulk_kind kind)
{
	size_t len;
	void *p;

	memset(b, 0, sizeof(*b));
	if (!want || want > SIZE_MAX / 2)
		return -EINVAL;
	switch (kind) {
	case FY_BULK_HUGETLB:
		len = round_up(want, FY_HUGE_PAGE_SIZE);
		p = map_hugetlb(len);
		break;
	case FY_BULK_THP:
		len = round_up(want, FY_HUGE_PAGE_SIZE);
		p = map_thp(len);
		break;
	case FY_BULK_PLAIN:
		len = round_up(want, FY_PAGE_SIZE);
		p = map_plain(len);
		break;
	default:
		return -EINVAL;
	}
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->size = len;
	b->kind = kind;
	return 0;
}

/**
 * fy_bulk_alloc() - map at least @want bytes on the best pages available.
 * @b: receives the buffer; b->kind says which pages back it.
 * @want: bytes needed.
 *
 * Return: 0, -EINVAL (@want is 0) or -ENOMEM.
 */
int fy_bulk_alloc(struct fy_bulk *b, size_t want)
{
	if (want >= FY_HUGE_PAGE_SIZE / 2) {
		if (!fy_bulk_alloc_as(b, want, FY_BULK_HUGETLB) ||
		    !fy_bulk_alloc_as(b, want, FY_BULK_THP))
			return 0;
	}
	return fy_bulk_alloc_as(b, want, FY_BULK_PLAIN);
}

/**
 * fy_bulk_free() - unmap a buffer. Idempotent.
 */
void fy_bulk_free(struct fy_bulk *b)
{
	if (b->data)
		munmap(b->data, b->size);
	memset(b, 0, sizeof(*b));
}

/**
 * fy_bulk_kind_name() - a short name for logs and reports.
 */
const char *fy_bulk_kind_name(enum fy_bulk_kind kind)
{
	switch (kind) {
	case FY_BULK_HUGETLB:
		return "hugetlb";
	case FY_BULK_THP:
		return "thp";
	case FY_BULK_PLAIN:
		return "plain";
	default:
		return "none";
	}
}
