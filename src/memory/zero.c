// SPDX-License-Identifier: MIT
/*
 * zero.c - zero-page detection.
 *
 * A page that is all zero is sent as a page kind, not as 4 KiB of data.
 * The test runs on every page of every chunk the sender transmits, so it
 * must cost far less than sending the page: it reads the page with 16-byte
 * SSE2 loads (baseline on x86-64, no run-time dispatch needed),
 * OR-reduces 64 bytes at a time and leaves at the first non-zero block.
 * Guest pages that hold data are usually non-zero within their first
 * bytes, so the common non-zero case reads one cache line; a zero page is
 * read once at memory speed. There is no system call and no allocation.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "memory/memory.h"

#if defined(__SSE2__)
#include <emmintrin.h>

/* Whether the 64 bytes at @p are all zero. Unaligned loads: on current
 * cores they cost the same as aligned ones on aligned data, and callers
 * need not promise alignment. */
static inline bool block64_zero(const uint8_t *p)
{
	const __m128i *v = (const __m128i *)(const void *)p;
	__m128i a = _mm_or_si128(_mm_loadu_si128(v), _mm_loadu_si128(v + 1));
	__m128i b = _mm_or_si128(_mm_loadu_si128(v + 2), _mm_loadu_si128(v + 3));

	a = _mm_or_si128(a, b);
	return _mm_movemask_epi8(_mm_cmpeq_epi8(a, _mm_setzero_si128())) ==
	       0xffff;
}
#else
/* Portable fallback: eight 64-bit words, read through memcpy so that no
 * alignment or aliasing assumption is made; compilers turn it into loads. */
static inline bool block64_zero(const uint8_t *p)
{
	uint64_t w[8], acc = 0;
	unsigned int i;

	memcpy(w, p, sizeof(w));
	for (i = 0; i < 8; i++)
		acc |= w[i];
	return acc == 0;
}
#endif

/**
 * fy_page_is_zero() - whether one page is all zero bytes.
 * @page: FY_PAGE_SIZE readable bytes, any alignment
 *
 * Reads 64 bytes per step and stops at the first block with a set bit, so
 * a page with data costs one or two cache lines.
 *
 * Return: true if every byte of the page is zero.
 */
bool fy_page_is_zero(const void *page)
{
	const uint8_t *p = page;
	size_t off;

	for (off = 0; off < FY_PAGE_SIZE; off += 64) {
		if (!block64_zero(p + off))
			return false;
	}
	return true;
}

/**
 * fy_zero_scan() - find the all-zero pages of a run of pages.
 * @p:      @npages * FY_PAGE_SIZE readable bytes
 * @npages: pages to test
 * @bitmap: (@npages + 63) / 64 words, zeroed by the caller; bit i (bit
 *          i % 64 of word i / 64) is set when page i is all zero, other bits
 *          are left alone
 *
 * Return: the number of all-zero pages.
 */
size_t fy_zero_scan(const uint8_t *p, size_t npages, uint64_t *bitmap)
{
	size_t count = 0, i = 0;

	while (i < npages) {
		size_t end = i + 64 < npages ? i + 64 : npages;
		uint64_t word = 0;
		size_t base = i;

		/* Build one bitmap word locally and store it once. */
		for (; i < end; i++) {
			if (fy_page_is_zero(p + i * FY_PAGE_SIZE))
				word |= UINT64_C(1) << (i - base);
		}
		if (word) {
			bitmap[base / 64] |= word;
			count += (size_t)__builtin_popcountll(word);
		}
	}
	return count;
}
