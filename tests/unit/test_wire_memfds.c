// SPDX-License-Identifier: MIT
/*
 * test_wire_memfds.c - the body of MEMORY_FDS (src/wire/memfds.c): what
 * is encoded decodes to the same entries and bytes, and every body that
 * breaks a rule of docs/stream-format.md ("Local migration") is refused
 * with a reason, never read past its end.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ferry.h"
#include "wire/wire.h"

/* Two regions: 4 KiB pages at offset 0, 2 MiB pages at offset 1 GiB. */
static struct fy_memory_fds two(void)
{
	struct fy_memory_fds m = { .count = 2 };

	m.e[0] = (struct fy_memfd_entry){ 0, 4096, 64u << 20, 0 };
	m.e[1] = (struct fy_memfd_entry){ 1, 2u << 20, 256u << 20, 1ull << 30 };
	return m;
}

static void test_round_trip(void **state)
{
	struct fy_memory_fds m = two(), d;
	struct fy_buf b, again;
	char err[160] = "";

	(void)state;
	fy_buf_init(&b);
	fy_buf_init(&again);
	assert_int_equal(fy_memory_fds_encode(&b, &m), 0);
	assert_int_equal(b.len, FY_FDS_HDR_SIZE + 2 * FY_FDS_ENTRY_SIZE);
	/* Little-endian, at the documented offsets. */
	assert_int_equal(fy_get_u32(b.data), 2);
	assert_int_equal(fy_get_u32(b.data + 4), 0);
	assert_int_equal(fy_get_u32(b.data + 8 + 24), 1);
	assert_int_equal(fy_get_u32(b.data + 8 + 24 + 4), 2u << 20);
	assert_int_equal(fy_get_u64(b.data + 8 + 24 + 16), 1ull << 30);
	assert_int_equal(fy_memory_fds_decode(b.data, b.len, &d, err, sizeof(err)), 0);
	assert_int_equal(d.count, 2);
	assert_memory_equal(d.e, m.e, 2 * sizeof(m.e[0]));
	assert_int_equal(fy_memory_fds_encode(&again, &d), 0);
	assert_int_equal(again.len, b.len);
	assert_memory_equal(again.data, b.data, b.len);
	/* Framed as a record, it keeps its name and survives the checksum. */
	{
		struct fy_buf rec;
		struct fy_rec_hdr h;
		const uint8_t *body;
		size_t used;
		char nb[16];

		fy_buf_init(&rec);
		assert_int_equal(fy_rec_encode(&rec, FY_REC_MEMORY_FDS, 3, 0,
					       b.data, b.len), 0);
		assert_int_equal(fy_rec_decode(rec.data, rec.len, &h, &body,
					       &used), 0);
		assert_int_equal(h.type, FY_REC_MEMORY_FDS);
		assert_false(fy_rec_optional(h.type));
		assert_string_equal(fy_rec_name(h.type, nb, sizeof(nb)),
				    "MEMORY_FDS");
		fy_buf_free(&rec);
	}
	fy_buf_free(&b);
	fy_buf_free(&again);
}

/* Encode @m, apply @poke to the bytes, expect a refusal that says @why. */
static void refused(const struct fy_memory_fds *m, size_t at, uint32_t v,
		    size_t len_delta, const char *why)
{
	struct fy_memory_fds d;
	struct fy_buf b;
	char err[160] = "";
	uint8_t *copy;
	size_t n;

	fy_buf_init(&b);
	assert_int_equal(fy_memory_fds_encode(&b, m), 0);
	n = b.len + len_delta;
	copy = calloc(1, n + 1);
	memcpy(copy, b.data, n < b.len ? n : b.len);
	if (at != SIZE_MAX)
		fy_put_u32(copy + at, v);
	assert_int_equal(fy_memory_fds_decode(copy, n, &d, err, sizeof(err)),
			 -EBADMSG);
	if (!strstr(err, why))
		fail_msg("refusal \"%s\" does not say \"%s\"", err, why);
	free(copy);
	fy_buf_free(&b);
}

static void test_refusals(void **state)
{
	struct fy_memory_fds m = two();

	(void)state;
	refused(&m, 0, 0, 0, "0 entries");
	refused(&m, 0, 65, 0, "65 entries");
	refused(&m, 0, 3, 0, "for 3 entries");
	refused(&m, 4, 1, 0, "reserved");
	refused(&m, SIZE_MAX, 0, 8, "for 2 entries");
	refused(&m, SIZE_MAX, 0, (size_t)-4, "for 2 entries");
	refused(&m, 8 + 24, 0, 0, "does not follow");	   /* region 1 -> 0 */
	refused(&m, 8, 64, 0, "beyond");		   /* region 64 */
	refused(&m, 8 + 4, 8192 + 4096, 0, "power of two");
	refused(&m, 8 + 4, 2048, 0, "power of two");
	refused(&m, 8 + 24 + 4, 1u << 31, 0, "power of two");
	refused(&m, 8 + 8, 4097, 0, "multiple");	   /* size */
	refused(&m, 8 + 8, 0, 0, "positive");		   /* size 0 */
	refused(&m, 8 + 24 + 16, 4096, 0, "multiple");	   /* offset */
	/* An offset whose end wraps (2 MiB aligned, so only the sum is
	 * wrong): written by hand, since the encoder refuses it. */
	{
		struct fy_memory_fds d;
		struct fy_buf b;
		char err[160] = "";

		fy_buf_init(&b);
		assert_int_equal(fy_memory_fds_encode(&b, &m), 0);
		fy_put_u64(b.data + 8 + 24 + 16, 0xffffffffffe00000ull);
		assert_int_equal(fy_memory_fds_decode(b.data, b.len, &d, err,
						      sizeof(err)), -EBADMSG);
		assert_non_null(strstr(err, "wraps"));
		fy_buf_free(&b);
	}
	/* Too short for even the header. */
	{
		struct fy_memory_fds d;
		char err[160] = "";

		assert_int_equal(fy_memory_fds_decode((const uint8_t *)"abc", 3,
						      &d, err, sizeof(err)),
				 -EBADMSG);
		assert_non_null(strstr(err, "shorter"));
		assert_int_equal(fy_memory_fds_decode(NULL, 0, &d, NULL, 0),
				 -EBADMSG);
	}
}

/* The encoder refuses what the decoder would, and leaves @b as it was. */
static void test_encoder_refuses(void **state)
{
	struct fy_memory_fds m = two();
	struct fy_buf b;

	(void)state;
	fy_buf_init(&b);
	assert_int_equal(fy_buf_put_u32(&b, 7), 0);
	m.e[1].region = 0;
	assert_int_equal(fy_memory_fds_encode(&b, &m), -EINVAL);
	m = two();
	m.count = 0;
	assert_int_equal(fy_memory_fds_encode(&b, &m), -EINVAL);
	m = two();
	m.e[0].page_size = 3000;
	assert_int_equal(fy_memory_fds_encode(&b, &m), -EINVAL);
	assert_int_equal(b.len, 4);
	/* 64 regions, the most a session has, are fine. */
	m.count = FY_MAX_REGIONS;
	for (uint32_t i = 0; i < m.count; i++)
		m.e[i] = (struct fy_memfd_entry){ i, 4096, 4096, i * 4096ull };
	assert_int_equal(fy_memory_fds_encode(&b, &m), 0);
	fy_buf_free(&b);
}

/* DEVICE_FDS: what is encoded decodes to the same kinds and bytes, at
 * the documented offsets; counts, kinds, reserved words and lengths out of
 * the rules are refused with a reason; the encoder refuses what the
 * decoder would. */
static void test_device_fds(void **state)
{
	static uint32_t kinds[FY_DEVFDS_MAX + 1], got[FY_DEVFDS_MAX];
	struct fy_device_fds m = { .count = 3, .kind = kinds }, d = { .kind = got };
	struct fy_buf b, again;
	char err[160] = "";

	(void)state;
	kinds[0] = FY_DEVFD_SOCKET;
	kinds[1] = FY_DEVFD_OTHER;
	kinds[2] = FY_DEVFD_SOCKET;
	fy_buf_init(&b);
	fy_buf_init(&again);
	assert_int_equal(fy_device_fds_encode(&b, &m), 0);
	assert_int_equal(b.len, FY_DEVFDS_HDR_SIZE + 3 * FY_DEVFDS_ENTRY_SIZE);
	assert_int_equal(fy_get_u32(b.data), 3);
	assert_int_equal(fy_get_u32(b.data + 4), 0);
	assert_int_equal(fy_get_u32(b.data + 8 + 8), FY_DEVFD_OTHER);
	assert_int_equal(fy_device_fds_decode(b.data, b.len, &d, err, sizeof(err)), 0);
	assert_int_equal(d.count, 3);
	assert_memory_equal(got, kinds, 3 * sizeof(kinds[0]));
	assert_int_equal(fy_device_fds_encode(&again, &d), 0);
	assert_memory_equal(again.data, b.data, b.len);
	/* One byte short or long, a reserved word, an unknown kind. */
	assert_int_equal(fy_device_fds_decode(b.data, b.len - 1, &d, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "expected"));
	fy_put_u32(b.data + 4, 1);
	assert_int_equal(fy_device_fds_decode(b.data, b.len, &d, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "reserved"));
	fy_put_u32(b.data + 4, 0);
	fy_put_u32(b.data + 8 + 16, 3);
	assert_int_equal(fy_device_fds_decode(b.data, b.len, &d, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "entry 2"));
	fy_put_u32(b.data + 8 + 16, FY_DEVFD_SOCKET);
	fy_put_u32(b.data + 8 + 20, 7);
	assert_int_equal(fy_device_fds_decode(b.data, b.len, &d, err, sizeof(err)), -EBADMSG);
	/* A count over the limit is refused before any entry is read. */
	fy_put_u32(b.data, FY_DEVFDS_MAX + 1);
	assert_int_equal(fy_device_fds_decode(b.data, b.len, &d, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "4097 entries: it must be 0 to 4096"));
	assert_int_equal(fy_device_fds_decode(b.data, 7, &d, err, sizeof(err)), -EBADMSG);
	/* None is a valid message (a VMM with nothing to hand over). */
	fy_buf_reset(&b);
	m.count = 0;
	assert_int_equal(fy_device_fds_encode(&b, &m), 0);
	assert_int_equal(fy_device_fds_decode(b.data, b.len, &d, err, sizeof(err)), 0);
	assert_int_equal(d.count, 0);
	/* The encoder: too many, an unknown kind. */
	for (unsigned i = 0; i <= FY_DEVFDS_MAX; i++)
		kinds[i] = FY_DEVFD_SOCKET;
	m.count = FY_DEVFDS_MAX + 1;
	assert_int_equal(fy_device_fds_encode(&b, &m), -EINVAL);
	m.count = FY_DEVFDS_MAX;
	fy_buf_reset(&b);
	assert_int_equal(fy_device_fds_encode(&b, &m), 0);
	assert_int_equal(fy_device_fds_decode(b.data, b.len, &d, err, sizeof(err)), 0);
	assert_int_equal(d.count, FY_DEVFDS_MAX);
	kinds[5] = 0;
	assert_int_equal(fy_device_fds_encode(&b, &m), -EINVAL);
	fy_buf_free(&b);
	fy_buf_free(&again);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_encoder_refuses),
		cmocka_unit_test(test_device_fds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
