// SPDX-License-Identifier: MIT
/*
 * test_codec.c - per-chunk compression: round trips for every codec and
 * several levels, the "not smaller, send raw" answer, and decoding of
 * truncated, corrupted and mis-sized input (which must be refused without
 * writing past the announced size; run under ASan as well).
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

#define GUARD 64
#define GUARD_BYTE 0xa7

static const enum fy_codec_kind real_kinds[] = { FY_CODEC_LZ4, FY_CODEC_ZSTD };
#define NREAL (sizeof(real_kinds) / sizeof(real_kinds[0]))

static uint64_t rng(uint64_t *s)
{
	uint64_t x = (*s += 0x9e3779b97f4a7c15ull);

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Text-like bytes: words from a small vocabulary, numbers, line breaks. */
static void fill_text(uint8_t *p, size_t n, uint64_t seed)
{
	static const char *const words[] = {
		"the", "guest", "memory", "page", "dirty", "migration", "of",
		"a", "and", "to", "channel", "record", "state", "vcpu", "in",
		"region", "offset", "length", "zero", "compress", "is",
	};
	size_t nw = sizeof(words) / sizeof(words[0]), i = 0;
	uint64_t s = seed;

	while (i < n) {
		char tmp[32];
		uint64_t r = rng(&s);
		int len;

		if (r % 11 == 0)
			len = snprintf(tmp, sizeof(tmp), "%u ", (unsigned)(r >> 40) % 10000);
		else
			len = snprintf(tmp, sizeof(tmp), "%s%c", words[(r >> 8) % nw],
				       r % 13 == 0 ? '\n' : ' ');
		for (int k = 0; k < len && i < n; k++)
			p[i++] = (uint8_t)tmp[k];
	}
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t s = seed;
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(rng(&s) >> 32);
}

/* A buffer of @n bytes followed by GUARD guard bytes. */
static uint8_t *guarded(size_t n)
{
	uint8_t *p = malloc(n + GUARD);

	assert_non_null(p);
	memset(p + n, GUARD_BYTE, GUARD);
	return p;
}

static void assert_guard(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < GUARD; i++)
		assert_int_equal(p[n + i], GUARD_BYTE);
}

static struct fy_codec *codec(enum fy_codec_kind k, int level)
{
	struct fy_codec *c = NULL;

	assert_int_equal(fy_codec_new(k, level, &c), 0);
	assert_non_null(c);
	assert_int_equal(fy_codec_kind_of(c), k);
	return c;
}

/* Compress @src, check the size, decompress with a fresh default codec of
 * the same kind and compare. Returns the compressed size. */
static long round_trip(struct fy_codec *c, const uint8_t *src, size_t n)
{
	enum fy_codec_kind k = fy_codec_kind_of(c);
	struct fy_codec *d = codec(k, 0);
	uint8_t *z = guarded(n), *out = guarded(n);
	long zn = fy_codec_compress(c, src, n, z, n);

	assert_true(zn >= 0 && (size_t)zn < n);
	assert_guard(z, n);
	if (zn > 0) {
		assert_true((size_t)zn <= fy_codec_bound(k, n));
		assert_int_equal(fy_codec_decompress(d, z, (size_t)zn, out, n), 0);
		assert_memory_equal(out, src, n);
		assert_guard(out, n);
	}
	free(z);
	free(out);
	fy_codec_free(d);
	return zn;
}

static void test_names(void **state)
{
	enum fy_codec_kind k = FY_CODEC_NONE;

	assert_string_equal(fy_codec_name(FY_CODEC_NONE), "none");
	assert_string_equal(fy_codec_name(FY_CODEC_LZ4), "lz4");
	assert_string_equal(fy_codec_name(FY_CODEC_ZSTD), "zstd");
	assert_string_equal(fy_codec_name((enum fy_codec_kind)7), "unknown");
	assert_int_equal(fy_codec_parse("zstd", &k), 0);
	assert_int_equal(k, FY_CODEC_ZSTD);
	assert_int_equal(fy_codec_parse("lz4", &k), 0);
	assert_int_equal(k, FY_CODEC_LZ4);
	assert_int_equal(fy_codec_parse("none", &k), 0);
	assert_int_equal(k, FY_CODEC_NONE);
	assert_int_equal(fy_codec_parse("LZ4", &k), -EINVAL);
	assert_int_equal(fy_codec_parse("", &k), -EINVAL);
	assert_int_equal(fy_codec_parse(NULL, &k), -EINVAL);
	assert_int_equal(k, FY_CODEC_NONE);
}

static void test_new_rejects_bad_arguments(void **state)
{
	struct fy_codec *c = (struct fy_codec *)&c;

	assert_int_equal(fy_codec_new((enum fy_codec_kind)3, 0, &c), -EINVAL);
	assert_null(c);
	assert_int_equal(fy_codec_new(FY_CODEC_LZ4, 13, &c), -EINVAL);
	assert_int_equal(fy_codec_new(FY_CODEC_ZSTD, 1000, &c), -EINVAL);
	assert_int_equal(fy_codec_new(FY_CODEC_ZSTD, -1000000000, &c), -EINVAL);
	fy_codec_free(NULL);
}

static void test_round_trip_text(void **state)
{
	static const int lz4_levels[] = { 0, 1, -1, -20, 3, 9, 12 };
	static const int zstd_levels[] = { 0, 1, -1, -5, 3, 9, 19 };
	static const size_t sizes[] = { 4096, 12345, 256 << 10 };
	size_t si, li;

	for (si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		size_t n = sizes[si];
		uint8_t *src = malloc(n);

		assert_non_null(src);
		fill_text(src, n, si + 1);
		for (li = 0; li < sizeof(lz4_levels) / sizeof(int); li++) {
			struct fy_codec *c = codec(FY_CODEC_LZ4, lz4_levels[li]);
			long zn = round_trip(c, src, n);

			/* Fast negative levels trade ratio for speed. */
			assert_true(zn > 0);
			assert_true(lz4_levels[li] < 0 || (size_t)zn < n * 3 / 4);
			fy_codec_free(c);
		}
		for (li = 0; li < sizeof(zstd_levels) / sizeof(int); li++) {
			struct fy_codec *c = codec(FY_CODEC_ZSTD, zstd_levels[li]);
			long zn = round_trip(c, src, n);

			assert_true(zn > 0 && (size_t)zn < n * 3 / 4);
			fy_codec_free(c);
		}
		free(src);
	}
}

/* One codec reused for many chunks gives the same bytes as a fresh one. */
static void test_context_reuse(void **state)
{
	size_t n = 64 << 10, k;
	uint8_t *src = malloc(n), *a = malloc(n), *b = malloc(n);

	assert_true(src && a && b);
	for (k = 0; k < NREAL; k++) {
		struct fy_codec *c = codec(real_kinds[k], 1);

		for (int i = 0; i < 8; i++) {
			struct fy_codec *f = codec(real_kinds[k], 1);
			long x, y;

			if (i % 3 == 2)
				fill_random(src, n, (uint64_t)i);
			else
				fill_text(src, n, (uint64_t)i);
			x = fy_codec_compress(c, src, n, a, n);
			y = fy_codec_compress(f, src, n, b, n);
			assert_int_equal(x, y);
			assert_memory_equal(a, b, (size_t)(x > 0 ? x : 0));
			if (x > 0) {
				assert_int_equal(fy_codec_decompress(c, a, (size_t)x, b, n), 0);
				assert_memory_equal(b, src, n);
			}
			fy_codec_free(f);
		}
		fy_codec_free(c);
	}
	free(src);
	free(a);
	free(b);
}

/* Random data does not shrink: compress says "send raw". */
static void test_random_is_not_compressed(void **state)
{
	size_t n = 1 << 20, k;
	uint8_t *src = malloc(n), *dst = guarded(n);

	assert_non_null(src);
	fill_random(src, n, 99);
	for (k = 0; k < NREAL; k++) {
		struct fy_codec *c = codec(real_kinds[k], 1);

		assert_int_equal(fy_codec_compress(c, src, n, dst, n), 0);
		assert_int_equal(fy_codec_compress(c, src, 4096, dst, 4096), 0);
		assert_guard(dst, n);
		fy_codec_free(c);
	}
	free(src);
	free(dst);
}

static void test_zero_data(void **state)
{
	size_t n = 1 << 20, k;
	uint8_t *src = calloc(1, n);

	assert_non_null(src);
	for (k = 0; k < NREAL; k++) {
		struct fy_codec *c = codec(real_kinds[k], 1);
		long zn = round_trip(c, src, n);

		assert_true(zn > 0 && zn < (long)(n / 200));
		fy_codec_free(c);
	}
	free(src);
}

/* NONE never compresses, and only "decodes" input of the right size. */
static void test_none(void **state)
{
	struct fy_codec *c = codec(FY_CODEC_NONE, 0);
	uint8_t src[100], out[100 + GUARD];

	memset(src, 0, sizeof(src));
	memset(out + 100, GUARD_BYTE, GUARD);
	assert_int_equal(fy_codec_compress(c, src, sizeof(src), out, 100), 0);
	assert_int_equal(fy_codec_bound(FY_CODEC_NONE, 100), 100);
	fill_random(src, sizeof(src), 3);
	assert_int_equal(fy_codec_decompress(c, src, 100, out, 100), 0);
	assert_memory_equal(out, src, 100);
	assert_int_equal(fy_codec_decompress(c, src, 99, out, 100), -EBADMSG);
	assert_int_equal(fy_codec_decompress(c, src, 100, out, 99), -EBADMSG);
	assert_guard(out, 100);
	fy_codec_free(c);
}

/* A capacity below the compressed size gives 0 and writes nothing past it;
 * empty input gives 0. */
static void test_small_capacity(void **state)
{
	size_t n = 64 << 10, k;
	uint8_t *src = malloc(n), *dst;

	assert_non_null(src);
	fill_text(src, n, 5);
	for (k = 0; k < NREAL; k++) {
		struct fy_codec *c = codec(real_kinds[k], 1);
		long zn;

		dst = guarded(n);
		zn = fy_codec_compress(c, src, n, dst, n);
		assert_true(zn > 10);
		free(dst);
		dst = guarded((size_t)zn - 1);
		assert_int_equal(fy_codec_compress(c, src, n, dst, (size_t)zn - 1), 0);
		assert_guard(dst, (size_t)zn - 1);
		free(dst);
		/* zstd wants a few bytes of headroom beyond its output. */
		dst = guarded((size_t)zn + 16);
		assert_int_equal(fy_codec_compress(c, src, n, dst, (size_t)zn + 16), zn);
		assert_guard(dst, (size_t)zn + 16);
		assert_int_equal(fy_codec_compress(c, src, 0, dst, (size_t)zn), 0);
		free(dst);
		fy_codec_free(c);
	}
	free(src);
}

static void test_bound(void **state)
{
	for (size_t k = 0; k < NREAL; k++) {
		assert_true(fy_codec_bound(real_kinds[k], 1 << 20) > 1 << 20);
		assert_true(fy_codec_bound(real_kinds[k], 0) > 0);
	}
	assert_int_equal(fy_codec_bound(FY_CODEC_LZ4, (size_t)1 << 40), 0);
	assert_int_equal(fy_codec_bound((enum fy_codec_kind)9, 10), 0);
}

/* Decode @z (@zn bytes) into exactly @expect bytes followed by a guard. */
static int decode(struct fy_codec *c, const uint8_t *z, size_t zn,
		  size_t expect)
{
	uint8_t *out = guarded(expect);
	int rc = fy_codec_decompress(c, z, zn, out, expect);

	assert_guard(out, expect);
	free(out);
	assert_true(rc == 0 || rc == -EBADMSG);
	return rc;
}

/* Compress text of @n bytes; the caller frees *z. */
static size_t compressed_text(enum fy_codec_kind k, size_t n, uint8_t **z)
{
	struct fy_codec *c = codec(k, 1);
	uint8_t *src = malloc(n);
	long zn;

	*z = malloc(n);
	assert_true(src && *z);
	fill_text(src, n, 11);
	zn = fy_codec_compress(c, src, n, *z, n);
	assert_true(zn > 0);
	free(src);
	fy_codec_free(c);
	return (size_t)zn;
}

static void test_reject_truncated(void **state)
{
	size_t n = 16 << 10;

	for (size_t k = 0; k < NREAL; k++) {
		struct fy_codec *c = codec(real_kinds[k], 0);
		uint8_t *z;
		size_t zn = compressed_text(real_kinds[k], n, &z), cut;

		assert_int_equal(decode(c, z, zn, n), 0);
		for (cut = 0; cut < zn; cut++) {
			/* ASan sees reads past a truncated input, too. */
			uint8_t *t = malloc(cut ? cut : 1);

			memcpy(t, z, cut);
			assert_int_equal(decode(c, t, cut, n), -EBADMSG);
			free(t);
		}
		free(z);
		fy_codec_free(c);
	}
}

static void test_reject_wrong_expect(void **state)
{
	size_t n = 16 << 10;
	static const size_t deltas[] = { 1, 2, 7, 4096 };

	for (size_t k = 0; k < NREAL; k++) {
		struct fy_codec *c = codec(real_kinds[k], 0);
		uint8_t *z;
		size_t zn = compressed_text(real_kinds[k], n, &z);

		for (size_t i = 0; i < sizeof(deltas) / sizeof(deltas[0]); i++) {
			assert_int_equal(decode(c, z, zn, n - deltas[i]), -EBADMSG);
			assert_int_equal(decode(c, z, zn, n + deltas[i]), -EBADMSG);
		}
		assert_int_equal(decode(c, z, zn, 0), -EBADMSG);
		assert_int_equal(decode(c, z, zn, n), 0);
		free(z);
		fy_codec_free(c);
	}
}

/*
 * Corruption. Neither format carries a checksum here (the record does), so
 * a flipped literal byte can decode to the right size with wrong content:
 * what must hold is that decoding never crashes, never writes past the
 * announced size, and refuses corrupted headers and garbage.
 */
static void test_reject_corrupted(void **state)
{
	size_t n = 16 << 10;
	uint64_t s = 1234;

	for (size_t k = 0; k < NREAL; k++) {
		struct fy_codec *c = codec(real_kinds[k], 0);
		uint8_t *z, *t;
		size_t zn = compressed_text(real_kinds[k], n, &z), i;
		int refused = 0;

		t = malloc(zn);
		for (i = 0; i < 3000; i++) {
			memcpy(t, z, zn);
			t[rng(&s) % zn] ^= (uint8_t)(1u << (rng(&s) % 8));
			if (i % 2)
				t[rng(&s) % zn] = (uint8_t)rng(&s);
			refused += decode(c, t, zn, n) == -EBADMSG;
		}
		/* Most single corruptions break the structure. */
		assert_true(refused > 300);
		/* Every byte 0xff: endless length extensions. */
		memset(t, 0xff, zn);
		assert_int_equal(decode(c, t, zn, n), -EBADMSG);
		/* Pure garbage of several sizes. */
		for (i = 1; i < zn; i = i * 2 + 1) {
			fill_random(t, i, i);
			assert_int_equal(decode(c, t, i, n), -EBADMSG);
		}
		free(t);
		free(z);
		fy_codec_free(c);
	}
}

/* An LZ4 match that points before the start of the output, LZ4 literals
 * missing from the input and a zstd frame with a broken magic number are
 * refused. */
static void test_reject_crafted(void **state)
{
	/* LZ4 block: token 0x10 = 1 literal, then a match; offset 0x0100
	 * reaches 255 bytes before the output start. */
	static const uint8_t lz4_bad_offset[] = { 0x10, 'a', 0x00, 0x01, 0x00 };
	/* LZ4 block whose one sequence produces 15 + 255 + 1 literals but
	 * carries only 3. */
	static const uint8_t lz4_short_lits[] = { 0xf0, 0xff, 0x01, 'a', 'b', 'c' };
	struct fy_codec *l = codec(FY_CODEC_LZ4, 0), *zs = codec(FY_CODEC_ZSTD, 0);
	uint8_t *z;
	size_t zn;

	assert_int_equal(decode(l, lz4_bad_offset, sizeof(lz4_bad_offset), 300),
			 -EBADMSG);
	assert_int_equal(decode(l, lz4_short_lits, sizeof(lz4_short_lits), 271),
			 -EBADMSG);
	zn = compressed_text(FY_CODEC_ZSTD, 4096, &z);
	z[0] ^= 1; /* magic */
	assert_int_equal(decode(zs, z, zn, 4096), -EBADMSG);
	free(z);
	fy_codec_free(l);
	fy_codec_free(zs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_new_rejects_bad_arguments),
		cmocka_unit_test(test_round_trip_text),
		cmocka_unit_test(test_context_reuse),
		cmocka_unit_test(test_random_is_not_compressed),
		cmocka_unit_test(test_zero_data),
		cmocka_unit_test(test_none),
		cmocka_unit_test(test_small_capacity),
		cmocka_unit_test(test_bound),
		cmocka_unit_test(test_reject_truncated),
		cmocka_unit_test(test_reject_wrong_expect),
		cmocka_unit_test(test_reject_corrupted),
		cmocka_unit_test(test_reject_crafted),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
