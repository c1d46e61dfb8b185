/* SPDX-License-Identifier: MIT */
/*
 * lazy_region.h - internal to the lazy loader (lazy.c, lazy_region.c): a
 * region as the loader sees it, and what fy_lazy_start() does to one
 * before registering it.
 */
#ifndef FY_LAZY_REGION_H
#define FY_LAZY_REGION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memory/memory.h"

struct lz_region {
	uint8_t *host;
	uint64_t size;
	uint64_t unit;	    /* bytes, the mapping's page size */
	uint64_t units;
	bool hugetlb;
	bool shared;
	bool zeropage;	    /* UFFDIO_ZEROPAGE allowed on it */
	uint64_t batch0;    /* its first batch in the background walk */
	_Atomic uint64_t *placed; /* bit per unit */
	_Atomic uint64_t *pending; /* bit per unit: a fault waits for it */
	char name[64];
};

static inline bool unit_placed(const struct lz_region *r, uint64_t u)
{
	return atomic_load_explicit(&r->placed[u / 64], memory_order_acquire) &
	       (UINT64_C(1) << (u % 64));
}

/* fy_bits_count() - the number of set bits among bits [first, first + n). */
uint64_t fy_bits_count(const uint64_t *bits, uint64_t first, uint64_t n);

/* fy_lazy_err() - format a message into @err (if any); return @code. */
__attribute__((format(printf, 4, 5)))
int fy_lazy_err(char *err, size_t errlen, int code, const char *fmt, ...);

int fy_lazy_region_probe(struct lz_region *r, char *err, size_t errlen);
uint64_t fy_lazy_region_mark(struct lz_region *r, const uint64_t *present);
int fy_lazy_region_prepare(const struct lz_region *r, const struct fy_region *in,
			   bool drop, char *err, size_t errlen);
int fy_lazy_uffd_open(char *err, size_t errlen);

#endif /* FY_LAZY_REGION_H */
