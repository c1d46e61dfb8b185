/* SPDX-License-Identifier: MIT */
/*
 * unit.h - small helpers the unit tests share. Include after <cmocka.h>.
 */
#ifndef FY_TEST_UNIT_H
#define FY_TEST_UNIT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A heap copy of exactly @n bytes of @p (a valid pointer even when n is
 * 0), so that AddressSanitizer catches a decoder reading one byte past
 * the body it was given. */
static inline uint8_t *dup_exact(const void *p, size_t n)
{
	uint8_t *q = malloc(n ? n : 1);

	assert_non_null(q);
	if (n)
		memcpy(q, p, n);
	return q;
}

#endif /* FY_TEST_UNIT_H */
