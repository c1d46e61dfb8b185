/* SPDX-License-Identifier: MIT */
/*
 * test_wire.c - the stream format: helpers, message bodies, record framing
 * and the stream header.
 *
 * Expected bytes and checksums are computed here from the layout documented
 * in wire.h (and XXH3/XXH32 called directly), not from the encoders, so a
 * test fails when the layout drifts even if encoder and decoder drift
 * together. Inputs for decoders are copied into exactly-sized heap buffers
 * so that a sanitizer build catches any read past the end.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "unit.h"
#include <xxhash.h>

#include "ferry.h"
#include "wire/wire.h"

/* ---- helpers ---- */

static void fill_str(char *s, size_t n, char c)
{
	memset(s, c, n);
	s[n] = '\0';
}

typedef int (*decode_fn)(const uint8_t *p, size_t n);

static int dec_hello(const uint8_t *p, size_t n)
{
	struct fy_hello m;

	return fy_hello_decode(p, n, &m);
}

static int dec_hello_reply(const uint8_t *p, size_t n)
{
	struct fy_hello_reply m;

	return fy_hello_reply_decode(p, n, &m);
}

static int dec_config(const uint8_t *p, size_t n)
{
	static struct fy_config_msg m; /* large; test-local, not shared */

	return fy_config_decode(p, n, &m);
}

static int dec_pass_begin(const uint8_t *p, size_t n)
{
	struct fy_pass_begin m;

	return fy_pass_begin_decode(p, n, &m);
}

static int dec_pass_end(const uint8_t *p, size_t n)
{
	struct fy_pass_end m;

	return fy_pass_end_decode(p, n, &m);
}

static int dec_error(const uint8_t *p, size_t n)
{
	struct fy_error_msg m;

	return fy_error_decode(p, n, &m);
}

static int dec_running(const uint8_t *p, size_t n)
{
	struct fy_running m;

	return fy_running_decode(p, n, &m);
}

/*
 * A valid body must decode; every strict prefix of it and the body with
 * trailing bytes must be rejected with -EBADMSG.
 */
static void check_strict(decode_fn dec, const uint8_t *body, size_t len)
{
	uint8_t *q;

	q = dup_exact(body, len);
	assert_int_equal(dec(q, len), 0);
	free(q);
	for (size_t n = 0; n < len; n++) {
		q = dup_exact(body, n);
		assert_int_equal(dec(q, n), -EBADMSG);
		free(q);
	}
	for (size_t extra = 1; extra <= 9; extra++) {
		q = calloc(1, len + extra);
		assert_non_null(q);
		memcpy(q, body, len);
		assert_int_equal(dec(q, len + extra), -EBADMSG);
		free(q);
	}
}

/* ---- little-endian helpers ---- */

static void test_le_helpers(void **state)
{
	uint8_t b[8];

	fy_put_u16(b, 0x1234);
	assert_int_equal(b[0], 0x34);
	assert_int_equal(b[1], 0x12);
	assert_int_equal(fy_get_u16(b), 0x1234);
	fy_put_u32(b, 0xa1b2c3d4u);
	assert_memory_equal(b, "\xd4\xc3\xb2\xa1", 4);
	assert_int_equal(fy_get_u32(b), 0xa1b2c3d4u);
	fy_put_u64(b, 0x0102030405060708ull);
	assert_memory_equal(b, "\x08\x07\x06\x05\x04\x03\x02\x01", 8);
	assert_true(fy_get_u64(b) == 0x0102030405060708ull);
	fy_put_u64(b, UINT64_MAX);
	assert_true(fy_get_u64(b) == UINT64_MAX);
	assert_int_equal(fy_pad8(0), 0);
	assert_int_equal(fy_pad8(1), 8);
	assert_int_equal(fy_pad8(8), 8);
	assert_int_equal(fy_pad8(9), 16);
}

/* ---- fy_buf ---- */

static void test_buf(void **state)
{
	struct fy_buf b;
	size_t cap;

	fy_buf_init(&b);
	assert_int_equal(b.len, 0);
	for (uint32_t i = 0; i < 10000; i++)
		assert_int_equal(fy_buf_put_u32(&b, i), 0);
	assert_int_equal(b.len, 40000);
	assert_true(b.cap >= b.len);
	for (uint32_t i = 0; i < 10000; i++)
		assert_int_equal(fy_get_u32(b.data + 4 * i), i);

	cap = b.cap;
	fy_buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, cap); /* memory kept for reuse */

	assert_int_equal(fy_buf_put_str(&b, "abc"), 0);
	assert_int_equal(fy_buf_put_str(&b, ""), 0);
	assert_int_equal(fy_buf_put_str(&b, NULL), 0);
	assert_int_equal(fy_buf_put_u64(&b, 0x1122334455667788ull), 0);
	assert_int_equal(fy_buf_put(&b, NULL, 0), 0);
	assert_int_equal(b.len, 7 + 4 + 4 + 8);
	assert_memory_equal(b.data, "\x03\0\0\0abc\0\0\0\0\0\0\0\0"
			    "\x88\x77\x66\x55\x44\x33\x22\x11", b.len);

	/* Impossible sizes fail cleanly instead of wrapping. */
	assert_int_equal(fy_buf_reserve(&b, SIZE_MAX), -ENOMEM);
	assert_int_equal(b.len, 23);

	fy_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
	fy_buf_free(&b); /* twice is harmless */
}

/* ---- fy_cur ---- */

static void test_cur_sticky(void **state)
{
	const uint8_t body[6] = { 1, 0, 0, 0, 2, 0 };
	struct fy_cur c;
	uint32_t v;
	uint64_t w;

	fy_cur_init(&c, body, sizeof(body));
	assert_int_equal(fy_cur_u32(&c, &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(fy_cur_done(&c), -EBADMSG); /* 2 bytes left */
	assert_int_equal(fy_cur_u64(&c, &w), -EBADMSG);
	assert_true(c.bad);
	/* Two bytes would have been enough for nothing, but even a zero-byte
	 * read must keep failing once the cursor went bad. */
	const uint8_t *p;
	assert_int_equal(fy_cur_bytes(&c, &p, 0), -EBADMSG);
	assert_null(p);
	assert_int_equal(fy_cur_done(&c), -EBADMSG);

	fy_cur_init(&c, body, sizeof(body));
	assert_int_equal(fy_cur_bytes(&c, &p, 6), 0);
	assert_ptr_equal(p, body);
	assert_int_equal(fy_cur_done(&c), 0);

	fy_cur_init(&c, NULL, 0);
	assert_int_equal(fy_cur_done(&c), 0);
	assert_int_equal(fy_cur_u32(&c, &v), -EBADMSG);
	assert_int_equal(fy_cur_done(&c), -EBADMSG);
}

static void test_cur_i32(void **state)
{
	static const struct {
		uint32_t raw;
		int32_t val;
	} cases[] = {
		{ 0, 0 }, { 1, 1 }, { 0x7fffffffu, INT32_MAX },
		{ 0x80000000u, INT32_MIN }, { 0xffffffffu, -1 },
		{ 0xfffffc18u, -1000 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t b[4];
		struct fy_cur c;
		int32_t v;

		fy_put_u32(b, cases[i].raw);
		fy_cur_init(&c, b, 4);
		assert_int_equal(fy_cur_i32(&c, &v), 0);
		assert_int_equal(v, cases[i].val);
		assert_int_equal(fy_cur_done(&c), 0);
	}
}

/* Decode one string field from an encoded length + bytes. */
static int decode_one_str(uint32_t declared, const char *bytes, size_t n,
			  char *out, size_t cap)
{
	struct fy_buf b;
	struct fy_cur c;
	uint8_t *q;
	int rc;

	fy_buf_init(&b);
	assert_int_equal(fy_buf_put_u32(&b, declared), 0);
	assert_int_equal(fy_buf_put(&b, bytes, n), 0);
	q = dup_exact(b.data, b.len);
	fy_cur_init(&c, q, b.len);
	rc = fy_cur_str(&c, out, cap);
	if (rc == 0)
		rc = fy_cur_done(&c);
	free(q);
	fy_buf_free(&b);
	return rc;
}

static void test_cur_str(void **state)
{
	char s[64], out[8];

	fill_str(s, 7, 'x');
	assert_int_equal(decode_one_str(7, s, 7, out, sizeof(out)), 0);
	assert_string_equal(out, "xxxxxxx");
	assert_int_equal(decode_one_str(0, "", 0, out, sizeof(out)), 0);
	assert_string_equal(out, "");
	/* One byte more than the destination holds. */
	fill_str(s, 8, 'y');
	assert_int_equal(decode_one_str(8, s, 8, out, sizeof(out)), -EBADMSG);
	assert_string_equal(out, "");
	/* A length that runs past the body, and a huge one. */
	assert_int_equal(decode_one_str(5, "abcd", 4, out, sizeof(out)), -EBADMSG);
	assert_int_equal(decode_one_str(UINT32_MAX, "abcd", 4, s, sizeof(s)),
			 -EBADMSG);
	/* An embedded NUL would silently shorten the string. */
	assert_int_equal(decode_one_str(3, "a\0b", 3, out, sizeof(out)), -EBADMSG);
	/* No room even for the terminator. */
	assert_int_equal(decode_one_str(0, "", 0, out, 0), -EBADMSG);
	assert_int_equal(decode_one_str(0, "", 0, out, 1), 0);
	assert_int_equal(decode_one_str(1, "a", 1, out, 1), -EBADMSG);
}

/* ---- message bodies ---- */

static void test_hello_roundtrip(void **state)
{
	struct fy_hello in, out;
	struct fy_buf b;

	fy_buf_init(&b);
	/* Boundary values, longest strings. */
	memset(&in, 0, sizeof(in));
	in.version_min = 0;
	in.version_max = UINT32_MAX;
	in.capabilities = UINT64_MAX;
	fill_str(in.boot_id, sizeof(in.boot_id) - 1, 'b');
	fill_str(in.software, sizeof(in.software) - 1, 's');
	assert_int_equal(fy_hello_encode(&b, &in), 0);
	assert_int_equal(b.len, 4 + 4 + 8 + 4 + 39 + 4 + 63);
	assert_int_equal(fy_get_u32(b.data), 0);
	assert_int_equal(fy_get_u32(b.data + 4), UINT32_MAX);
	assert_true(fy_get_u64(b.data + 8) == UINT64_MAX);
	assert_int_equal(fy_get_u32(b.data + 16), 39);
	assert_int_equal(fy_hello_decode(b.data, b.len, &out), 0);
	assert_memory_equal(&in, &out, sizeof(in));
	check_strict(dec_hello, b.data, b.len);

	/* Typical values, empty strings. */
	fy_buf_reset(&b);
	memset(&in, 0, sizeof(in));
	in.version_min = 1;
	in.version_max = 1;
	in.capabilities = FERRY_CAP_DATA_CHECKSUM;
	assert_int_equal(fy_hello_encode(&b, &in), 0);
	assert_int_equal(b.len, 24);
	assert_int_equal(fy_hello_decode(b.data, b.len, &out), 0);
	assert_memory_equal(&in, &out, sizeof(in));
	check_strict(dec_hello, b.data, b.len);

	/* An unterminated array cannot be encoded; nothing is appended. */
	memset(in.software, 'z', sizeof(in.software));
	fy_buf_reset(&b);
	assert_int_equal(fy_buf_put_u32(&b, 0xdeadbeef), 0);
	assert_int_equal(fy_hello_encode(&b, &in), -EINVAL);
	assert_int_equal(b.len, 4);
	fy_buf_free(&b);
}

static void test_hello_long_strings(void **state)
{
	char s[80];
	struct fy_hello out;
	struct fy_buf b;

	/* boot_id of 40 bytes does not fit boot_id[40]. */
	fy_buf_init(&b);
	fill_str(s, 40, 'b');
	fy_buf_put_u32(&b, 1);
	fy_buf_put_u32(&b, 1);
	fy_buf_put_u64(&b, 0);
	fy_buf_put_str(&b, s);
	fy_buf_put_str(&b, "ferry");
	assert_int_equal(fy_hello_decode(b.data, b.len, &out), -EBADMSG);

	/* software of 64 bytes does not fit software[64]. */
	fy_buf_reset(&b);
	fill_str(s, 64, 's');
	fy_buf_put_u32(&b, 1);
	fy_buf_put_u32(&b, 1);
	fy_buf_put_u64(&b, 0);
	fy_buf_put_str(&b, "");
	fy_buf_put_str(&b, s);
	assert_int_equal(fy_hello_decode(b.data, b.len, &out), -EBADMSG);
	fy_buf_free(&b);
}

/* Field by field: the struct has padding after @version. */
static void assert_reply_equal(const struct fy_hello_reply *a,
			       const struct fy_hello_reply *b)
{
	assert_int_equal(a->version, b->version);
	assert_true(a->capabilities == b->capabilities);
	assert_true(a->session_id == b->session_id);
	assert_memory_equal(a->token, b->token, sizeof(a->token));
	assert_string_equal(a->boot_id, b->boot_id);
	assert_string_equal(a->software, b->software);
}

static void test_hello_reply_roundtrip(void **state)
{
	struct fy_hello_reply in, out;
	struct fy_buf b;

	fy_buf_init(&b);
	memset(&in, 0, sizeof(in));
	in.version = UINT32_MAX;
	in.capabilities = 0x8000000000000001ull;
	in.session_id = UINT64_MAX;
	for (int i = 0; i < 16; i++)
		in.token[i] = (uint8_t)(0xf0 + i);
	in.token[3] = 0; /* raw bytes, NULs included */
	fill_str(in.boot_id, sizeof(in.boot_id) - 1, 'B');
	fill_str(in.software, sizeof(in.software) - 1, 'S');
	assert_int_equal(fy_hello_reply_encode(&b, &in), 0);
	assert_int_equal(b.len, 4 + 8 + 8 + 16 + 4 + 39 + 4 + 63);
	assert_memory_equal(b.data + 20, in.token, 16);
	assert_int_equal(fy_hello_reply_decode(b.data, b.len, &out), 0);
	assert_reply_equal(&in, &out);
	check_strict(dec_hello_reply, b.data, b.len);

	fy_buf_reset(&b);
	memset(&in, 0, sizeof(in));
	assert_int_equal(fy_hello_reply_encode(&b, &in), 0);
	assert_int_equal(b.len, 44);
	assert_int_equal(fy_hello_reply_decode(b.data, b.len, &out), 0);
	assert_reply_equal(&in, &out);
	check_strict(dec_hello_reply, b.data, b.len);
	fy_buf_free(&b);
}

static void test_config_roundtrip(void **state)
{
	static struct fy_config_msg in, out;
	struct fy_buf b;
	size_t expect;

	fy_buf_init(&b);
	memset(&in, 0, sizeof(in));
	in.page_size = 4096;
	in.nregions = FY_MAX_REGIONS;
	expect = 8;
	for (uint32_t i = 0; i < in.nregions; i++) {
		in.regions[i].gpa = (uint64_t)i << 32;
		in.regions[i].size = (uint64_t)(i + 1) * 4096;
		fill_str(in.regions[i].name, sizeof(in.regions[i].name) - 1,
			 (char)('a' + i % 26));
		expect += 8 + 8 + 4 + 63;
	}
	/* The last region ends exactly one page below 2^64. */
	in.regions[63].gpa = UINT64_MAX - 2 * 4096 + 1;
	in.regions[63].size = 4096;
	assert_int_equal(fy_config_encode(&b, &in), 0);
	assert_int_equal(b.len, expect);
	assert_int_equal(fy_get_u32(b.data), 4096);
	assert_int_equal(fy_get_u32(b.data + 4), 64);
	assert_int_equal(fy_config_decode(b.data, b.len, &out), 0);
	assert_memory_equal(&in, &out, sizeof(in));
	check_strict(dec_config, b.data, b.len);

	/* Largest page size, no name; and no regions at all. */
	memset(&in, 0, sizeof(in));
	in.page_size = 1u << 30;
	in.nregions = 1;
	in.regions[0].gpa = 1ull << 30;
	in.regions[0].size = 3ull << 30;
	fy_buf_reset(&b);
	assert_int_equal(fy_config_encode(&b, &in), 0);
	assert_int_equal(fy_config_decode(b.data, b.len, &out), 0);
	assert_memory_equal(&in, &out, sizeof(in));
	check_strict(dec_config, b.data, b.len);

	in.nregions = 0;
	fy_buf_reset(&b);
	assert_int_equal(fy_config_encode(&b, &in), 0);
	assert_int_equal(b.len, 8);
	assert_int_equal(fy_config_decode(b.data, b.len, &out), 0);
	assert_int_equal(out.nregions, 0);

	in.nregions = FY_MAX_REGIONS + 1;
	fy_buf_reset(&b);
	assert_int_equal(fy_config_encode(&b, &in), -EINVAL);
	assert_int_equal(b.len, 0);
	fy_buf_free(&b);
}

/* Encode a CONFIG body by hand, so that invalid ones can be built. */
static int config_raw(uint32_t page_size, uint32_t nregions, uint64_t gpa,
		      uint64_t size, const char *name)
{
	static struct fy_config_msg out;
	struct fy_buf b;
	int rc;

	fy_buf_init(&b);
	fy_buf_put_u32(&b, page_size);
	fy_buf_put_u32(&b, nregions);
	/* At most 100 regions are written: a larger count must be refused
	 * before the decoder looks for them. */
	for (uint32_t i = 0; i < nregions && i < 100; i++) {
		fy_buf_put_u64(&b, gpa + i * size);
		fy_buf_put_u64(&b, size);
		fy_buf_put_str(&b, name);
	}
	rc = fy_config_decode(b.data, b.len, &out);
	fy_buf_free(&b);
	return rc;
}

static void test_config_rejects(void **state)
{
	static const uint32_t bad_ps[] = {
		0, 1, 2048, 4095, 4097, 6144, 3u << 12, (1u << 30) + 4096,
		1u << 31, UINT32_MAX,
	};
	char name[80];

	/* Sanity: the helper builds valid bodies. */
	assert_int_equal(config_raw(4096, 1, 0, 4096, "ram"), 0);
	assert_int_equal(config_raw(8192, 3, 8192, 8192, "ram"), 0);
	assert_int_equal(config_raw(2u << 20, 1, 0, 2u << 20, ""), 0);
	assert_int_equal(config_raw(4096, FY_MAX_REGIONS, 0, 4096, "r"), 0);

	for (size_t i = 0; i < sizeof(bad_ps) / sizeof(bad_ps[0]); i++)
		assert_int_equal(config_raw(bad_ps[i], 1, 0, 1ull << 31, "r"),
				 -EBADMSG);
	assert_int_equal(config_raw(4096, FY_MAX_REGIONS + 1, 0, 4096, "r"),
			 -EBADMSG);
	/* A huge count with no regions behind it must not be trusted. */
	assert_int_equal(config_raw(4096, UINT32_MAX, 0, 0, ""), -EBADMSG);
	assert_int_equal(config_raw(4096, 1, 0, 0, "r"), -EBADMSG);
	assert_int_equal(config_raw(4096, 1, 0, 4096 + 512, "r"), -EBADMSG);
	assert_int_equal(config_raw(8192, 1, 0, 4096, "r"), -EBADMSG);
	assert_int_equal(config_raw(4096, 1, 512, 4096, "r"), -EBADMSG);
	assert_int_equal(config_raw(8192, 1, 4096, 8192, "r"), -EBADMSG);
	/* gpa + size wraps past 2^64 (ends exactly at 2^64, and beyond). */
	assert_int_equal(config_raw(4096, 1, UINT64_MAX - 4095, 4096, "r"),
			 -EBADMSG);
	assert_int_equal(config_raw(4096, 1, UINT64_MAX - 4095, 8192, "r"),
			 -EBADMSG);
	assert_int_equal(config_raw(4096, 1, 4096, UINT64_MAX - 4095, "r"),
			 -EBADMSG);
	assert_int_equal(config_raw(4096, 1, UINT64_MAX - 8191, 4096, "r"), 0);
	/* Longest name fits, one more does not. */
	fill_str(name, FY_NAME_MAX - 1, 'n');
	assert_int_equal(config_raw(4096, 2, 0, 4096, name), 0);
	fill_str(name, FY_NAME_MAX, 'n');
	assert_int_equal(config_raw(4096, 2, 0, 4096, name), -EBADMSG);
}

static void test_pass_roundtrip(void **state)
{
	static const uint64_t vals[] = { 0, 1, UINT32_MAX, UINT64_MAX };
	struct fy_buf b;

	fy_buf_init(&b);
	for (size_t i = 0; i < 4; i++) {
		struct fy_pass_begin pb = { (uint32_t)vals[i], (uint32_t)vals[3 - i],
					    vals[i] };
		struct fy_pass_end pe = { (uint32_t)vals[3 - i], 0, vals[i],
					  vals[3 - i] };
		struct fy_pass_begin pb2;
		struct fy_pass_end pe2;

		fy_buf_reset(&b);
		assert_int_equal(fy_pass_begin_encode(&b, &pb), 0);
		assert_int_equal(b.len, 16);
		assert_int_equal(fy_pass_begin_decode(b.data, b.len, &pb2), 0);
		assert_memory_equal(&pb, &pb2, sizeof(pb));
		check_strict(dec_pass_begin, b.data, b.len);

		fy_buf_reset(&b);
		assert_int_equal(fy_pass_end_encode(&b, &pe), 0);
		assert_int_equal(b.len, 24);
		assert_int_equal(fy_pass_end_decode(b.data, b.len, &pe2), 0);
		assert_memory_equal(&pe, &pe2, sizeof(pe));
		check_strict(dec_pass_end, b.data, b.len);
	}

	/* The exact layout of PASS_END, byte by byte. */
	struct fy_pass_end pe = { 7, 0, 0x0102030405060708ull, 0x1122334455667788ull };
	fy_buf_reset(&b);
	assert_int_equal(fy_pass_end_encode(&b, &pe), 0);
	assert_memory_equal(b.data,
			    "\x07\0\0\0" "\0\0\0\0"
			    "\x08\x07\x06\x05\x04\x03\x02\x01"
			    "\x88\x77\x66\x55\x44\x33\x22\x11", 24);
	struct fy_pass_begin pb = { 3, 1, 0xabcdefull };
	fy_buf_reset(&b);
	assert_int_equal(fy_pass_begin_encode(&b, &pb), 0);
	assert_memory_equal(b.data, "\x03\0\0\0" "\x01\0\0\0"
			    "\xef\xcd\xab\0\0\0\0\0", 16);
	fy_buf_free(&b);
}

/* A PASS_END body written field by field, entries as (index, reserved,
 * records, bytes) quadruples. */
static void pass_end_raw(struct fy_buf *b, uint32_t nconn, uint64_t records,
			 uint64_t bytes, const uint64_t (*e)[4], size_t ne)
{
	fy_buf_reset(b);
	fy_buf_put_u32(b, 9);
	fy_buf_put_u32(b, nconn);
	fy_buf_put_u64(b, records);
	fy_buf_put_u64(b, bytes);
	for (size_t i = 0; i < ne; i++) {
		fy_buf_put_u32(b, (uint32_t)e[i][0]);
		fy_buf_put_u32(b, (uint32_t)e[i][1]);
		fy_buf_put_u64(b, e[i][2]);
		fy_buf_put_u64(b, e[i][3]);
	}
}

static int pass_end_raw_rc(uint32_t nconn, uint64_t records, uint64_t bytes,
			   const uint64_t (*e)[4], size_t ne)
{
	struct fy_buf b;
	uint8_t *q;
	int rc;

	fy_buf_init(&b);
	pass_end_raw(&b, nconn, records, bytes, e, ne);
	q = dup_exact(b.data, b.len);
	rc = dec_pass_end(q, b.len);
	free(q);
	fy_buf_free(&b);
	return rc;
}

/* PASS_END with the counts per connection: the layout, and every way the
 * entries can be inconsistent. */
static void test_pass_end_conns(void **state)
{
	struct fy_pass_end pe = { 4, 3, 8, 8 * 4096 }, pe2;
	struct fy_buf b;

	pe.conn[0] = (struct fy_pass_conn){ 0, 5, 5 * 4096 };
	pe.conn[1] = (struct fy_pass_conn){ 2, 3, 3 * 4096 };
	pe.conn[2] = (struct fy_pass_conn){ 63, 0, 0 };
	fy_buf_init(&b);
	assert_int_equal(fy_pass_end_encode(&b, &pe), 0);
	assert_int_equal(b.len, 24 + 3 * 24);
	assert_memory_equal(b.data + 24 + 24,
			    "\x02\0\0\0" "\0\0\0\0"
			    "\x03\0\0\0\0\0\0\0"
			    "\0\x30\0\0\0\0\0\0", 24);
	assert_int_equal(fy_pass_end_decode(b.data, b.len, &pe2), 0);
	assert_memory_equal(&pe, &pe2, sizeof(pe));
	check_strict(dec_pass_end, b.data, b.len);

	/* All 64 connections fit; one more does not encode. */
	memset(&pe, 0, sizeof(pe));
	pe.nconn = FY_PASS_MAX_CONN;
	for (uint32_t i = 0; i < FY_PASS_MAX_CONN; i++) {
		pe.conn[i] = (struct fy_pass_conn){ i, i, i * 4096ull };
		pe.records += i;
		pe.bytes += i * 4096ull;
	}
	fy_buf_reset(&b);
	assert_int_equal(fy_pass_end_encode(&b, &pe), 0);
	assert_int_equal(fy_pass_end_decode(b.data, b.len, &pe2), 0);
	assert_memory_equal(&pe, &pe2, sizeof(pe));
	pe.nconn = FY_PASS_MAX_CONN + 1;
	fy_buf_reset(&b);
	assert_int_equal(fy_pass_end_encode(&b, &pe), -EINVAL);
	assert_int_equal(b.len, 0);
	fy_buf_free(&b);

	static const uint64_t ok[2][4] = { { 0, 0, 1, 4096 }, { 1, 0, 2, 8192 } };
	static const uint64_t swapped[2][4] = { { 1, 0, 2, 8192 }, { 0, 0, 1, 4096 } };
	static const uint64_t twice[2][4] = { { 1, 0, 1, 4096 }, { 1, 0, 2, 8192 } };
	static const uint64_t past[2][4] = { { 0, 0, 1, 4096 }, { 64, 0, 2, 8192 } };
	static const uint64_t rsvd[2][4] = { { 0, 1, 1, 4096 }, { 1, 0, 2, 8192 } };
	static const uint64_t wrap[2][4] = { { 0, 0, UINT64_MAX, 0 }, { 1, 0, 2, 0 } };

	assert_int_equal(pass_end_raw_rc(2, 3, 3 * 4096, ok, 2), 0);
	assert_int_equal(pass_end_raw_rc(2, 3, 3 * 4096, swapped, 2), -EBADMSG);
	assert_int_equal(pass_end_raw_rc(2, 3, 3 * 4096, twice, 2), -EBADMSG);
	assert_int_equal(pass_end_raw_rc(2, 3, 3 * 4096, past, 2), -EBADMSG);
	assert_int_equal(pass_end_raw_rc(2, 3, 3 * 4096, rsvd, 2), -EBADMSG);
	assert_int_equal(pass_end_raw_rc(2, 1, 0, wrap, 2), -EBADMSG);
	/* Entries that do not add up to the totals. */
	assert_int_equal(pass_end_raw_rc(2, 4, 3 * 4096, ok, 2), -EBADMSG);
	assert_int_equal(pass_end_raw_rc(2, 3, 4 * 4096, ok, 2), -EBADMSG);
	/* A count the body does not hold, either way. */
	assert_int_equal(pass_end_raw_rc(1, 3, 3 * 4096, ok, 2), -EBADMSG);
	assert_int_equal(pass_end_raw_rc(3, 3, 3 * 4096, ok, 2), -EBADMSG);
	assert_int_equal(pass_end_raw_rc(FY_PASS_MAX_CONN + 1, 0, 0, NULL, 0),
			 -EBADMSG);
	/* Totals only (no entries) are what a single connection sends. */
	assert_int_equal(pass_end_raw_rc(0, 3, 3 * 4096, NULL, 0), 0);
}

static int ack_rc(const uint8_t *p, size_t n)
{
	struct fy_pass_ack m;
	uint8_t *q = dup_exact(p, n);
	int rc = fy_pass_ack_decode(q, n, &m);

	free(q);
	return rc;
}

/* The answer to PASS_END: empty when nothing was lost, else the lost
 * connections' indices. */
static void test_pass_ack(void **state)
{
	struct fy_pass_ack a = { 3, { 1, 7, 63 } }, a2;
	struct fy_buf b;

	fy_buf_init(&b);
	assert_int_equal(fy_pass_ack_encode(&b, &a), 0);
	assert_int_equal(b.len, 16);
	assert_memory_equal(b.data, "\x03\0\0\0" "\x01\0\0\0" "\x07\0\0\0"
			    "\x3f\0\0\0", 16);
	assert_int_equal(fy_pass_ack_decode(b.data, b.len, &a2), 0);
	assert_memory_equal(&a, &a2, sizeof(a));
	/* Every non-empty prefix and any trailing byte is refused. */
	for (size_t n = 1; n < b.len; n++)
		assert_int_equal(ack_rc(b.data, n), -EBADMSG);
	fy_buf_put_u32(&b, 0);
	assert_int_equal(ack_rc(b.data, b.len), -EBADMSG);

	/* Nothing lost: an empty body, both ways. */
	memset(&a, 0, sizeof(a));
	fy_buf_reset(&b);
	assert_int_equal(fy_pass_ack_encode(&b, &a), 0);
	assert_int_equal(b.len, 0);
	a2.nlost = 5;
	assert_int_equal(fy_pass_ack_decode(b.data, 0, &a2), 0);
	assert_int_equal(a2.nlost, 0);

	static const uint32_t bad[][3] = {
		{ 0, 0, 0 },  /* a count of 0 is written as an empty body */
		{ 1, 0, 0 },  /* the main connection cannot be lost */
		{ 1, 64, 0 }, /* past the last connection */
		{ 2, 5, 5 },  /* twice */
		{ 2, 6, 5 },  /* out of order */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fy_buf_reset(&b);
		for (uint32_t k = 0; k <= bad[i][0] && k < 3; k++)
			fy_buf_put_u32(&b, bad[i][k]);
		assert_int_equal(ack_rc(b.data, b.len), -EBADMSG);
	}
	fy_buf_reset(&b);
	fy_buf_put_u32(&b, FY_PASS_MAX_CONN);
	assert_int_equal(ack_rc(b.data, b.len), -EBADMSG);
	a.nlost = FY_PASS_MAX_CONN;
	assert_int_equal(fy_pass_ack_encode(&b, &a), -EINVAL);
	fy_buf_free(&b);
}

static void test_error_roundtrip(void **state)
{
	static const int32_t codes[] = {
		0, -1, INT32_MIN, INT32_MAX, FERRY_EPROTO, FERRY_EUNKNOWN, -EBADMSG,
	};
	struct fy_error_msg in, out;
	struct fy_buf b;

	fy_buf_init(&b);
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		memset(&in, 0, sizeof(in));
		in.code = codes[i];
		if (i % 2)
			fill_str(in.message, sizeof(in.message) - 1, 'm');
		else
			strcpy(in.message, "PASS_END is not valid in state idle");
		fy_buf_reset(&b);
		assert_int_equal(fy_error_encode(&b, &in), 0);
		assert_int_equal(fy_get_u32(b.data), (uint32_t)codes[i]);
		assert_int_equal(b.len, 8 + strlen(in.message));
		assert_int_equal(fy_error_decode(b.data, b.len, &out), 0);
		assert_int_equal(out.code, codes[i]);
		assert_string_equal(out.message, in.message);
		assert_memory_equal(&in, &out, sizeof(in));
		check_strict(dec_error, b.data, b.len);
	}

	/* A message of FY_MSG_MAX bytes does not fit. */
	char big[FY_MSG_MAX + 1];
	fill_str(big, FY_MSG_MAX, 'x');
	fy_buf_reset(&b);
	fy_buf_put_u32(&b, (uint32_t)-5);
	fy_buf_put_str(&b, big);
	assert_int_equal(fy_error_decode(b.data, b.len, &out), -EBADMSG);
	fy_buf_free(&b);
}

static void test_running_roundtrip(void **state)
{
	struct fy_running in, out;
	struct fy_buf b;

	fy_buf_init(&b);
	memset(&in, 0, sizeof(in));
	in.resumed_ns = UINT64_MAX;
	fill_str(in.note, sizeof(in.note) - 1, 'n');
	assert_int_equal(fy_running_encode(&b, &in), 0);
	assert_int_equal(b.len, 8 + 4 + 255);
	assert_int_equal(fy_running_decode(b.data, b.len, &out), 0);
	assert_memory_equal(&in, &out, sizeof(in));
	check_strict(dec_running, b.data, b.len);

	memset(&in, 0, sizeof(in));
	strcpy(in.note, "digest ok");
	fy_buf_reset(&b);
	assert_int_equal(fy_running_encode(&b, &in), 0);
	assert_int_equal(fy_running_decode(b.data, b.len, &out), 0);
	assert_memory_equal(&in, &out, sizeof(in));
	check_strict(dec_running, b.data, b.len);

	char big[300];
	fill_str(big, sizeof(in.note), 'x');
	fy_buf_reset(&b);
	fy_buf_put_u64(&b, 1);
	fy_buf_put_str(&b, big);
	assert_int_equal(fy_running_decode(b.data, b.len, &out), -EBADMSG);
	fy_buf_free(&b);
}

static void test_mem_hdr(void **state)
{
	struct fy_mem_hdr in = { 0xa1b2c3d4u, 5, UINT64_MAX - 4095, 1ull << 20 };
	struct fy_mem_hdr out;
	uint8_t b[FY_MEM_HDR_SIZE];

	fy_mem_hdr_encode(&in, b);
	assert_int_equal(fy_get_u32(b), in.region);
	assert_int_equal(fy_get_u32(b + 4), in.flags);
	assert_true(fy_get_u64(b + 8) == in.offset);
	assert_true(fy_get_u64(b + 16) == in.length);
	fy_mem_hdr_decode(b, &out);
	assert_memory_equal(&in, &out, sizeof(in));
}

/* ---- record framing ---- */

/* The checksum as wire.h defines it, computed without the library. */
static uint64_t ref_csum(const uint8_t *rec, size_t covered)
{
	return XXH3_64bits(rec, FY_REC_HDR_SIZE + covered);
}

static void test_rec_framing(void **state)
{
	uint8_t body[64];
	struct fy_buf b;

	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(0x5a ^ (i * 37));
	fy_buf_init(&b);
	for (uint32_t len = 0; len <= sizeof(body); len++) {
		size_t padded = (len + 7) / 8 * 8;
		struct fy_rec_hdr h;
		const uint8_t *pb;
		size_t used;

		fy_buf_reset(&b);
		assert_int_equal(fy_rec_encode(&b, FY_REC_STATE, 1000 + len, 0,
					       body, len), 0);
		assert_int_equal(fy_rec_wire_size(len), 16 + padded + 8);
		assert_int_equal(b.len, 16 + padded + 8);
		/* Header fields at their documented offsets. */
		assert_int_equal(fy_get_u32(b.data), FY_REC_STATE);
		assert_int_equal(fy_get_u32(b.data + 4), len);
		assert_int_equal(fy_get_u32(b.data + 8), 1000 + len);
		assert_int_equal(fy_get_u32(b.data + 12), 0);
		assert_memory_equal(b.data + 16, body, len);
		for (size_t i = len; i < padded; i++)
			assert_int_equal(b.data[16 + i], 0);
		assert_true(fy_get_u64(b.data + 16 + padded) ==
			    ref_csum(b.data, len));

		assert_int_equal(fy_rec_decode(b.data, b.len, &h, &pb, &used), 0);
		assert_int_equal(h.type, FY_REC_STATE);
		assert_int_equal(h.length, len);
		assert_int_equal(h.seq, 1000 + len);
		assert_int_equal(h.flags, 0);
		assert_ptr_equal(pb, b.data + 16);
		assert_int_equal(used, b.len);
	}
	fy_buf_free(&b);
}

static void test_rec_append_and_sequence(void **state)
{
	struct fy_buf b;
	struct fy_rec_hdr h;
	const uint8_t *pb;
	size_t used, off = 0;

	fy_buf_init(&b);
	assert_int_equal(fy_buf_put(&b, "xx", 2), 0); /* encoders append */
	assert_int_equal(fy_rec_encode(&b, FY_REC_HELLO, 1, 0, "abc", 3), 0);
	assert_int_equal(fy_rec_encode(&b, FY_REC_OK, 1, 0, NULL, 0), 0);
	assert_int_equal(fy_rec_encode(&b, 0x80007123u, 0, 0, "12345678", 8), 0);
	assert_memory_equal(b.data, "xx", 2);
	off = 2;
	assert_int_equal(fy_rec_decode(b.data + off, b.len - off, &h, &pb, &used), 0);
	assert_int_equal(h.type, FY_REC_HELLO);
	assert_memory_equal(pb, "abc", 3);
	off += used;
	assert_int_equal(fy_rec_decode(b.data + off, b.len - off, &h, &pb, &used), 0);
	assert_int_equal(h.type, FY_REC_OK);
	assert_int_equal(h.length, 0);
	assert_int_equal(used, 24);
	off += used;
	assert_int_equal(fy_rec_decode(b.data + off, b.len - off, &h, &pb, &used), 0);
	assert_int_equal(h.type, 0x80007123u);
	assert_true(fy_rec_optional(h.type));
	assert_int_equal(fy_rec_number(h.type), 0x7123);
	off += used;
	assert_int_equal(off, b.len);
	fy_buf_free(&b);
}

/* Flip every bit of a record; every flip must be caught, and flips in the
 * body or trailer must be caught by the checksum itself. */
static void check_bit_flips(uint32_t type, uint32_t len)
{
	uint8_t body[40];
	struct fy_buf b;
	size_t padded = fy_pad8(len);

	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(i * 7 + 1);
	fy_buf_init(&b);
	assert_int_equal(fy_rec_encode(&b, type, 9, 0, body, len), 0);
	for (size_t byte = 0; byte < b.len; byte++) {
		for (int bit = 0; bit < 8; bit++) {
			uint8_t *q = dup_exact(b.data, b.len);
			struct fy_rec_hdr h;
			const uint8_t *pb;
			size_t used;
			int rc;

			q[byte] ^= (uint8_t)(1u << bit);
			rc = fy_rec_decode(q, b.len, &h, &pb, &used);
			assert_int_not_equal(rc, 0);
			assert_null(pb);
			if (byte >= 16 + len && byte < 16 + padded)
				assert_int_equal(rc, -EBADMSG); /* padding */
			else if (byte >= 16)
				assert_int_equal(rc, FERRY_ECHECKSUM);
			free(q);
		}
	}
	fy_buf_free(&b);
}

static void test_rec_bit_flips(void **state)
{
	check_bit_flips(FY_REC_HELLO, 0);
	check_bit_flips(FY_REC_CONFIG, 8);
	check_bit_flips(FY_REC_ERROR, 13);
	check_bit_flips(FY_REC_MEMORY, 40);
}

static void test_rec_csum_head(void **state)
{
	const size_t data = 4096;
	struct fy_mem_hdr mh = { 2, 0, 8192, 4096 };
	uint8_t *body = malloc(FY_MEM_HDR_SIZE + data);
	struct fy_rec_hdr h;
	const uint8_t *pb;
	struct fy_buf b;
	size_t used;

	assert_non_null(body);
	fy_mem_hdr_encode(&mh, body);
	for (size_t i = 0; i < data; i++)
		body[FY_MEM_HDR_SIZE + i] = (uint8_t)i;
	fy_buf_init(&b);
	assert_int_equal(fy_rec_encode(&b, FY_REC_MEMORY, 0, FY_RF_CSUM_HEAD,
				       body, FY_MEM_HDR_SIZE + data), 0);
	assert_int_equal(b.len, fy_rec_wire_size(FY_MEM_HDR_SIZE + data));
	/* The trailer covers the record header and the memory header only. */
	assert_true(fy_get_u64(b.data + b.len - 8) ==
		    ref_csum(b.data, FY_MEM_HDR_SIZE));
	assert_int_equal(fy_rec_decode(b.data, b.len, &h, &pb, &used), 0);
	assert_int_equal(h.flags, FY_RF_CSUM_HEAD);
	assert_int_equal(fy_rec_csum_len(&h, pb), FY_MEM_HDR_SIZE);

	/* Page data is not covered: a changed byte passes... */
	for (size_t i = FY_MEM_HDR_SIZE; i < FY_MEM_HDR_SIZE + data; i += 511) {
		b.data[16 + i] ^= 0x40;
		assert_int_equal(fy_rec_decode(b.data, b.len, &h, &pb, &used), 0);
		b.data[16 + i] ^= 0x40;
	}
	/* ...but the memory header and the record header are. */
	for (size_t i = 0; i < 16 + FY_MEM_HDR_SIZE; i++) {
		b.data[i] ^= 0x01;
		assert_int_not_equal(fy_rec_decode(b.data, b.len, &h, &pb, &used), 0);
		if (i >= 16)
			assert_int_equal(fy_rec_decode(b.data, b.len, &h, &pb, &used),
					 FERRY_ECHECKSUM);
		b.data[i] ^= 0x01;
	}
	/* Without the flag the whole body is covered. */
	fy_buf_reset(&b);
	assert_int_equal(fy_rec_encode(&b, FY_REC_MEMORY, 0, 0, body,
				       FY_MEM_HDR_SIZE + data), 0);
	b.data[16 + 100] ^= 0x40;
	assert_int_equal(fy_rec_decode(b.data, b.len, &h, &pb, &used),
			 FERRY_ECHECKSUM);

	/* csum_len for short bodies and for the flag's absence. */
	uint8_t zh[FY_MEM_HDR_SIZE + 8];
	struct fy_mem_hdr zm = { 0, 0, 0, 8 * FY_MEM_PAGE };

	fy_mem_hdr_encode(&zm, zh);
	h.type = FY_REC_MEMORY;
	h.flags = FY_RF_CSUM_HEAD;
	h.length = 10;
	assert_int_equal(fy_rec_csum_len(&h, zh), 10);
	h.length = FY_MEM_HDR_SIZE;
	assert_int_equal(fy_rec_csum_len(&h, zh), FY_MEM_HDR_SIZE);
	h.length = 1000;
	assert_int_equal(fy_rec_csum_len(&h, zh), FY_MEM_HDR_SIZE);
	/* with a zero map, the map is part of the covered meta */
	zm.flags = FY_MEMF_ZMAP;
	fy_mem_hdr_encode(&zm, zh);
	assert_int_equal(fy_mem_meta_len(&zm), FY_MEM_HDR_SIZE + 8);
	assert_int_equal(fy_rec_csum_len(&h, zh), FY_MEM_HDR_SIZE + 8);
	zm.length = 65 * FY_MEM_PAGE;
	assert_int_equal(fy_mem_meta_len(&zm), FY_MEM_HDR_SIZE + 16);
	zm.length = UINT64_MAX;
	assert_true(fy_mem_meta_len(&zm) > FY_REC_MAX_BODY);
	h.flags = 0;
	assert_int_equal(fy_rec_csum_len(&h, NULL), 1000);

	/* The flag is refused on anything but memory records. */
	fy_buf_reset(&b);
	assert_int_equal(fy_rec_encode(&b, FY_REC_STATE, 1, FY_RF_CSUM_HEAD,
				       body, 100), -EINVAL);
	assert_int_equal(b.len, 0);
	fy_buf_free(&b);
	free(body);
}

static void test_rec_truncated(void **state)
{
	uint8_t body[37];
	struct fy_buf b;

	memset(body, 0xee, sizeof(body));
	fy_buf_init(&b);
	assert_int_equal(fy_rec_encode(&b, FY_REC_CONFIG, 2, 0, body,
				       sizeof(body)), 0);
	for (size_t n = 0; n < b.len; n++) {
		uint8_t *q = dup_exact(b.data, n);
		struct fy_rec_hdr h;
		const uint8_t *pb = (const uint8_t *)1;
		size_t used = 1;

		assert_int_equal(fy_rec_decode(q, n, &h, &pb, &used), -EAGAIN);
		assert_null(pb);
		assert_int_equal(used, 0);
		free(q);
	}
	fy_buf_free(&b);
}

static void make_hdr(uint8_t out[16], uint32_t type, uint32_t len,
		     uint32_t seq, uint32_t flags)
{
	fy_put_u32(out, type);
	fy_put_u32(out + 4, len);
	fy_put_u32(out + 8, seq);
	fy_put_u32(out + 12, flags);
}

static void test_rec_hdr_rules(void **state)
{
	struct fy_rec_hdr h;
	const uint8_t *pb;
	uint8_t raw[16];
	struct fy_buf b;
	size_t used;

	make_hdr(raw, FY_REC_MEMORY, FY_REC_MAX_BODY, 0, FY_RF_CSUM_HEAD);
	assert_int_equal(fy_rec_hdr_decode(raw, &h), 0);
	assert_int_equal(h.length, FY_REC_MAX_BODY);
	/* A complete but oversize header is refused before waiting for the
	 * body: a reader must never wait for (or allocate) 4 GiB. */
	make_hdr(raw, FY_REC_MEMORY, FY_REC_MAX_BODY + 1, 0, 0);
	assert_int_equal(fy_rec_hdr_decode(raw, &h), -EMSGSIZE);
	assert_int_equal(fy_rec_decode(raw, 16, &h, &pb, &used), -EMSGSIZE);
	make_hdr(raw, FY_REC_STATE, UINT32_MAX, 1, 0);
	assert_int_equal(fy_rec_decode(raw, 16, &h, &pb, &used), -EMSGSIZE);
	fy_buf_init(&b);
	assert_int_equal(fy_rec_encode(&b, FY_REC_STATE, 1, 0, NULL,
				       (size_t)FY_REC_MAX_BODY + 1), -EMSGSIZE);

	make_hdr(raw, 0, 0, 1, 0);
	assert_int_equal(fy_rec_hdr_decode(raw, &h), -EBADMSG);
	make_hdr(raw, FY_REC_OPTIONAL, 0, 1, 0);
	assert_int_equal(fy_rec_hdr_decode(raw, &h), -EBADMSG);
	assert_int_equal(fy_rec_encode(&b, 0, 1, 0, NULL, 0), -EINVAL);
	for (int bit = 1; bit < 32; bit++) {
		make_hdr(raw, FY_REC_MEMORY, 24, 0, 1u << bit);
		assert_int_equal(fy_rec_hdr_decode(raw, &h), -EBADMSG);
		assert_int_equal(fy_rec_encode(&b, FY_REC_MEMORY, 0, 1u << bit,
					       NULL, 0), -EINVAL);
	}
	make_hdr(raw, FY_REC_HELLO, 24, 1, FY_RF_CSUM_HEAD);
	assert_int_equal(fy_rec_hdr_decode(raw, &h), -EBADMSG);
	make_hdr(raw, FY_REC_MEMORY | FY_REC_OPTIONAL, 24, 0, FY_RF_CSUM_HEAD);
	assert_int_equal(fy_rec_hdr_decode(raw, &h), -EBADMSG);
	/* Unknown types are framed fine; deciding about them is the
	 * protocol's job. */
	make_hdr(raw, 0x7123, 24, 1, 0);
	assert_int_equal(fy_rec_hdr_decode(raw, &h), 0);
	assert_int_equal(b.len, 0);
	fy_buf_free(&b);

	struct fy_rec_hdr in = { 0x80000005u, 77, 0xfffffffeu, FY_RF_CSUM_HEAD };
	fy_rec_hdr_encode(&in, raw);
	assert_memory_equal(raw, "\x05\0\0\x80" "\x4d\0\0\0" "\xfe\xff\xff\xff"
			    "\x01\0\0\0", 16);
}

static void test_csum_incremental(void **state)
{
	uint8_t rec[16 + 1000];
	struct fy_csum c;

	for (size_t i = 0; i < sizeof(rec); i++)
		rec[i] = (uint8_t)(i * 131);
	assert_int_equal(fy_csum_init(&c), 0);
	for (size_t covered = 0; covered <= 1000; covered += 97) {
		uint64_t want = XXH3_64bits(rec, 16 + covered);

		assert_true(fy_rec_csum(rec, rec + 16, covered) == want);
		/* Pieces of every size give the same digest. */
		for (size_t piece = 1; piece <= 300; piece += 149) {
			fy_csum_reset(&c, rec);
			for (size_t off = 0; off < covered; off += piece) {
				size_t n = covered - off < piece ? covered - off : piece;
				fy_csum_update(&c, rec + 16 + off, n);
			}
			assert_true(fy_csum_digest(&c) == want);
		}
	}
	fy_csum_free(&c);
	assert_null(c.state);
	fy_csum_free(&c);
}

/* ---- stream header ---- */

static void test_stream_hdr(void **state)
{
	uint8_t h[FY_STREAM_HDR_SIZE], bad[FY_STREAM_HDR_SIZE];
	uint16_t ver = 0;

	fy_stream_hdr_encode(h);
	assert_memory_equal(h, "FERRYMIG\x01\0\0\0", 12);
	assert_int_equal(fy_get_u32(h + 12), XXH32(h, 12, 0));
	assert_int_equal(fy_stream_hdr_decode(h, &ver), 0);
	assert_int_equal(ver, FY_FORMAT_VERSION);

	/* Any flipped bit anywhere is refused. */
	for (size_t byte = 0; byte < sizeof(h); byte++) {
		for (int bit = 0; bit < 8; bit++) {
			memcpy(bad, h, sizeof(h));
			bad[byte] ^= (uint8_t)(1u << bit);
			assert_int_equal(fy_stream_hdr_decode(bad, &ver), -EBADMSG);
		}
	}
	/* Bad magic with a consistent checksum. */
	memcpy(bad, h, sizeof(h));
	memcpy(bad, "FERRYMIH", 8);
	fy_put_u32(bad + 12, XXH32(bad, 12, 0));
	assert_int_equal(fy_stream_hdr_decode(bad, &ver), -EBADMSG);
	/* Another format version, correctly checksummed. */
	memcpy(bad, h, sizeof(h));
	fy_put_u16(bad + 8, 2);
	fy_put_u32(bad + 12, XXH32(bad, 12, 0));
	assert_int_equal(fy_stream_hdr_decode(bad, &ver), FERRY_EVERSION);
	assert_int_equal(ver, 2);
	fy_put_u16(bad + 8, 0);
	fy_put_u32(bad + 12, XXH32(bad, 12, 0));
	assert_int_equal(fy_stream_hdr_decode(bad, &ver), FERRY_EVERSION);
	/* Flags are all reserved. */
	memcpy(bad, h, sizeof(h));
	fy_put_u16(bad + 10, 1);
	fy_put_u32(bad + 12, XXH32(bad, 12, 0));
	assert_int_equal(fy_stream_hdr_decode(bad, &ver), -EBADMSG);
}

/* ---- names ---- */

static void test_rec_name(void **state)
{
	static const struct {
		uint32_t type;
		const char *name;
	} known[] = {
		{ FY_REC_HELLO, "HELLO" }, { FY_REC_CONFIG, "CONFIG" },
		{ FY_REC_PASS_BEGIN, "PASS_BEGIN" }, { FY_REC_PASS_END, "PASS_END" },
		{ FY_REC_STATE, "STATE" }, { FY_REC_SWITCHOVER, "SWITCHOVER" },
		{ FY_REC_RELEASED, "RELEASED" }, { FY_REC_ABORT, "ABORT" },
		{ FY_REC_OK, "OK" }, { FY_REC_ERROR, "ERROR" },
		{ FY_REC_MEMORY, "MEMORY" },
	};
	char buf[32];

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		assert_string_equal(fy_rec_name(known[i].type, buf, sizeof(buf)),
				    known[i].name);
		assert_string_equal(fy_rec_name(known[i].type, NULL, 0),
				    known[i].name);
	}
	assert_string_equal(fy_rec_name(0x7123, buf, sizeof(buf)), "0x7123");
	assert_string_equal(fy_rec_name(0x80007123u, buf, sizeof(buf)), "0x7123?");
	assert_string_equal(fy_rec_name(0, buf, sizeof(buf)), "0x0");
	assert_string_equal(fy_rec_name(0xffffffffu, buf, sizeof(buf)),
			    "0x7fffffff?");
	/* A known number with the optional bit is a different, unknown type. */
	assert_string_equal(fy_rec_name(FY_REC_HELLO | FY_REC_OPTIONAL, buf,
					sizeof(buf)), "0x1?");
	/* Short or missing buffers still give a string. */
	assert_string_equal(fy_rec_name(0x7123, buf, 4), "0x7");
	assert_non_null(fy_rec_name(0x7123, NULL, 0));
	assert_non_null(fy_rec_name(0x7123, buf, 0));
}

/* KEEPALIVE: 8 bytes that decode to the period; shorter or a period of 0
 * is refused; a longer (later) body is read for its first 8 bytes; the
 * record is optional, so any reader may skip it, and it has a name. */
static void test_keepalive_round_trip(void **state)
{
	struct fy_buf b;
	uint32_t every = 0;
	char name[16];

	(void)state;
	fy_buf_init(&b);
	assert_int_equal(fy_keepalive_encode(&b, 2500), 0);
	assert_int_equal(b.len, FY_KEEPALIVE_BODY_SIZE);
	assert_int_equal(fy_keepalive_decode(b.data, b.len, &every), 0);
	assert_int_equal(every, 2500);
	for (size_t n = 0; n < b.len; n++)
		assert_int_equal(fy_keepalive_decode(b.data, n, &every), -EBADMSG);
	assert_int_equal(fy_buf_put_u32(&b, 77), 0);
	assert_int_equal(fy_keepalive_decode(b.data, b.len, &every), 0);
	assert_int_equal(every, 2500);
	fy_put_u32(b.data, 0);
	assert_int_equal(fy_keepalive_decode(b.data, b.len, &every), -EBADMSG);
	assert_true(fy_rec_optional(FY_REC_KEEPALIVE));
	assert_string_equal(fy_rec_name(FY_REC_KEEPALIVE, name, sizeof(name)),
			    "KEEPALIVE");
	fy_buf_free(&b);
}

static void test_join_round_trip(void **state)
{
	struct fy_join in = { 0x1122334455667788ull, { 0 }, 3, 4 }, out;
	struct fy_buf b;

	(void)state;
	for (int i = 0; i < 16; i++)
		in.token[i] = (uint8_t)(0xa0 + i);
	fy_buf_init(&b);
	assert_int_equal(fy_join_encode(&b, &in), 0);
	assert_int_equal(b.len, 8 + 16 + 4 + 4);
	assert_int_equal(fy_join_decode(b.data, b.len, &out), 0);
	assert_int_equal(out.session_id, in.session_id);
	assert_memory_equal(out.token, in.token, 16);
	assert_int_equal(out.index, 3);
	assert_int_equal(out.channels, 4);
	for (size_t n = 0; n < b.len; n++)
		assert_int_equal(fy_join_decode(b.data, n, &out), -EBADMSG);
	/* index 0 is the main connection; index must be below channels */
	fy_put_u32(b.data + 24, 0);
	assert_int_equal(fy_join_decode(b.data, b.len, &out), -EBADMSG);
	fy_put_u32(b.data + 24, 4);
	assert_int_equal(fy_join_decode(b.data, b.len, &out), -EBADMSG);
	fy_put_u32(b.data + 24, 1);
	fy_put_u32(b.data + 28, 65);
	assert_int_equal(fy_join_decode(b.data, b.len, &out), -EBADMSG);
	fy_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_le_helpers),
		cmocka_unit_test(test_buf),
		cmocka_unit_test(test_cur_sticky),
		cmocka_unit_test(test_cur_i32),
		cmocka_unit_test(test_cur_str),
		cmocka_unit_test(test_hello_roundtrip),
		cmocka_unit_test(test_hello_long_strings),
		cmocka_unit_test(test_hello_reply_roundtrip),
		cmocka_unit_test(test_config_roundtrip),
		cmocka_unit_test(test_config_rejects),
		cmocka_unit_test(test_pass_roundtrip),
		cmocka_unit_test(test_pass_end_conns),
		cmocka_unit_test(test_pass_ack),
		cmocka_unit_test(test_error_roundtrip),
		cmocka_unit_test(test_running_roundtrip),
		cmocka_unit_test(test_mem_hdr),
		cmocka_unit_test(test_rec_framing),
		cmocka_unit_test(test_rec_append_and_sequence),
		cmocka_unit_test(test_rec_bit_flips),
		cmocka_unit_test(test_rec_csum_head),
		cmocka_unit_test(test_rec_truncated),
		cmocka_unit_test(test_rec_hdr_rules),
		cmocka_unit_test(test_csum_incremental),
		cmocka_unit_test(test_stream_hdr),
		cmocka_unit_test(test_rec_name),
		cmocka_unit_test(test_join_round_trip),
		cmocka_unit_test(test_keepalive_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
