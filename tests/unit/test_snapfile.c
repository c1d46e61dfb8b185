/* SPDX-License-Identifier: MIT */
/*
 * test_snapfile.c - the mapped snapshot layout (src/wire/snapfile.h): where
 * fy_snap_layout() puts every part, the superblock's bytes, and every
 * refusal of fy_snap_sb_decode().
 *
 * Expected offsets are worked out here from the rules in snapfile.h (slots
 * at 2 MiB boundaries, table, map and state at 4 KiB ones) and expected
 * bytes are read at the offsets the header documents, with XXH3 called
 * directly, so a test fails when the layout drifts even if the encoder and
 * decoder drift together. A refusal test changes one field of a good
 * superblock, reseals its checksum, and checks both the code and that the
 * message names the field.
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
#include <xxhash.h>

#include "ferry.h"
#include "wire/snapfile.h"

#define MIB (1ull << 20)
#define KIB 1024ull

/* Round @v up to @a. */
static uint64_t up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* A superblock of one 64 KiB region "ram0" at gpa 0, laid out. */
static void one_region(struct fy_snap_sb *sb)
{
	memset(sb, 0, sizeof(*sb));
	sb->nregions = 1;
	sb->regions[0].gpa = 0;
	sb->regions[0].size = 64 * KIB;
	strcpy(sb->regions[0].name, "ram0");
	assert_int_equal(fy_snap_layout(sb, 300), 0);
}

/*
 * Three regions whose sizes are not 2 MiB multiples, so that every
 * rounding rule is exercised: 1 MiB (256 pages), 3 MiB + 4 KiB (769 pages)
 * and 8 KiB (2 pages), 1027 pages in all, with some data pages.
 */
static void three_regions(struct fy_snap_sb *sb)
{
	static const uint64_t sizes[] = { 1 * MIB, 3 * MIB + 4 * KIB, 8 * KIB };
	static const uint64_t gpas[] = { 0, 4 * MIB, 1ull << 32 };

	memset(sb, 0, sizeof(*sb));
	sb->nregions = 3;
	for (int i = 0; i < 3; i++) {
		sb->regions[i].gpa = gpas[i];
		sb->regions[i].size = sizes[i];
		snprintf(sb->regions[i].name, sizeof(sb->regions[i].name),
			 "ram%d", i);
	}
	assert_int_equal(fy_snap_layout(sb, 5000), 0);
	sb->regions[0].data_pages = 10;
	sb->regions[1].data_pages = 769;
	sb->regions[2].data_pages = 0;
	sb->data_pages = 779;
	sb->table_hash = 0x1111222233334444ull;
	sb->map_hash = 0x5555666677778888ull;
	sb->state_hash = 0x99990000aaaabbbbull;
	sb->created_ns = 1765000000123456789ull;
	sb->passes = 4;
	strcpy(sb->software, "ferry 0.1.0");
}

/* Recompute the checksum of a superblock changed by a test. */
static void reseal(uint8_t *b)
{
	fy_put_u64(b + FY_SNAP_SB_SIZE - 8,
		   XXH3_64bits(b, FY_SNAP_SB_SIZE - 8));
}

/* The encoded three-region superblock, in a heap buffer of exactly the
 * superblock's size so that a sanitizer build catches reads past it. */
static uint8_t *good_bytes(struct fy_snap_sb *sb)
{
	uint8_t *b = malloc(FY_SNAP_SB_SIZE);

	assert_non_null(b);
	three_regions(sb);
	fy_snap_sb_encode(b, sb);
	return b;
}

/* Decode @b (with @file_size) and expect @code and @what in the message. */
static void expect_refused(const uint8_t *b, size_t len, uint64_t file_size,
			   int code, const char *what)
{
	struct fy_snap_sb out;
	char err[256];
	int rc = fy_snap_sb_decode(b, len, file_size, &out, err, sizeof(err));

	if (rc != code || !strstr(err, what))
		fail_msg("decode gave %d \"%s\"; expected %d with \"%s\"", rc,
			 err, code, what);
}

static uint8_t *region_at(uint8_t *b, int i)
{
	return b + FY_SNAP_REGIONS_AT + i * FY_SNAP_REGION_SIZE;
}

/* ---- layout ---- */

static void test_layout_one_region(void **st)
{
	struct fy_snap_sb sb;

	(void)st;
	one_region(&sb);
	assert_int_equal(sb.version, FY_SNAP_VERSION);
	assert_int_equal(sb.flags, 0);
	assert_int_equal(sb.page_size, 4096);
	assert_int_equal(sb.pages, 16);
	assert_int_equal(sb.regions[0].slot_offset, 2 * MIB);
	/* Slots end at 2 MiB + 64 KiB, already 4 KiB aligned. */
	assert_int_equal(sb.table_offset, 2 * MIB + 64 * KIB);
	/* 16 entries of 8 bytes, rounded up to 4 KiB. */
	assert_int_equal(sb.map_offset, sb.table_offset + 4096);
	/* One u64 map word, rounded up to 4 KiB. */
	assert_int_equal(sb.state_offset, sb.map_offset + 4096);
	assert_int_equal(sb.state_bytes, 300);
	assert_int_equal(fy_snap_file_size(&sb), sb.state_offset + 300);
	assert_int_equal(fy_snap_table_bytes(16), 128);
	assert_int_equal(fy_snap_map_bytes(16), 8);
	assert_int_equal(fy_snap_map_bytes(64), 8);
	assert_int_equal(fy_snap_map_bytes(65), 16);
}

static void test_layout_three_regions(void **st)
{
	struct fy_snap_sb sb;
	uint64_t end2, table_end, map_end;

	(void)st;
	three_regions(&sb);
	assert_int_equal(sb.pages, 256 + 769 + 2);
	assert_int_equal(sb.regions[0].slot_offset, 2 * MIB);
	/* Region 0 ends at 3 MiB: region 1 starts at the next 2 MiB. */
	assert_int_equal(sb.regions[1].slot_offset, 4 * MIB);
	/* Region 1 ends at 7 MiB + 4 KiB: region 2 starts at 8 MiB. */
	assert_int_equal(sb.regions[2].slot_offset, 8 * MIB);
	end2 = 8 * MIB + 8 * KIB;
	assert_int_equal(sb.table_offset, end2);
	table_end = end2 + 1027 * 8;
	assert_int_equal(sb.map_offset, up(table_end, 4096));
	/* 1027 bits are 17 u64 words. */
	map_end = sb.map_offset + 17 * 8;
	assert_int_equal(sb.state_offset, up(map_end, 4096));
	assert_int_equal(fy_snap_file_size(&sb), sb.state_offset + 5000);
}

static void test_layout_refuses(void **st)
{
	struct fy_snap_sb sb;

	(void)st;
	one_region(&sb);
	sb.nregions = 0;
	assert_int_equal(fy_snap_layout(&sb, 1), -EINVAL);
	sb.nregions = FY_SNAP_MAX_REGIONS + 1;
	assert_int_equal(fy_snap_layout(&sb, 1), -EINVAL);
	sb.nregions = 1;
	sb.regions[0].size = 0;
	assert_int_equal(fy_snap_layout(&sb, 1), -EINVAL);
	sb.regions[0].size = 4095;
	assert_int_equal(fy_snap_layout(&sb, 1), -EINVAL);
	sb.regions[0].size = 4096 + 2048;
	assert_int_equal(fy_snap_layout(&sb, 1), -EINVAL);
	/* Slots that would pass INT64_MAX do not fit in an off_t. */
	sb.regions[0].size = (uint64_t)INT64_MAX & ~4095ull;
	assert_int_equal(fy_snap_layout(&sb, 1), -EINVAL);
	sb.regions[0].size = 4096;
	assert_int_equal(fy_snap_layout(&sb, UINT64_MAX), -EINVAL);
	/* The largest count of regions lays out. */
	sb.nregions = FY_SNAP_MAX_REGIONS;
	for (uint32_t i = 0; i < FY_SNAP_MAX_REGIONS; i++) {
		sb.regions[i].gpa = i * MIB;
		sb.regions[i].size = 4096;
		snprintf(sb.regions[i].name, 64, "r%u", i);
	}
	assert_int_equal(fy_snap_layout(&sb, 1), 0);
	assert_int_equal(sb.regions[39].slot_offset, 40 * 2 * MIB);
}

/* ---- superblock bytes ---- */

static void test_encode_bytes(void **st)
{
	struct fy_snap_sb sb;
	uint8_t *b = good_bytes(&sb);
	uint8_t *r1 = region_at(b, 1);

	(void)st;
	assert_memory_equal(b, "FERRYSNP", 8);
	assert_int_equal(fy_get_u16(b + 8), 1);
	assert_int_equal(fy_get_u16(b + 10), 0);
	assert_int_equal(fy_get_u32(b + 12), 4096);
	assert_int_equal(fy_get_u32(b + 16), 3);
	assert_int_equal(fy_get_u64(b + 24), 1027);
	assert_int_equal(fy_get_u64(b + 32), 779);
	assert_int_equal(fy_get_u64(b + 40), sb.table_offset);
	assert_int_equal(fy_get_u64(b + 48), sb.map_offset);
	assert_int_equal(fy_get_u64(b + 56), sb.state_offset);
	assert_int_equal(fy_get_u64(b + 64), 5000);
	assert_int_equal(fy_get_u64(b + 72), 0x1111222233334444ull);
	assert_int_equal(fy_get_u64(b + 80), 0x5555666677778888ull);
	assert_int_equal(fy_get_u64(b + 88), 0x99990000aaaabbbbull);
	assert_int_equal(fy_get_u64(b + 96), 1765000000123456789ull);
	assert_int_equal(fy_get_u32(b + 104), 4);
	assert_string_equal((char *)b + 112, "ferry 0.1.0");
	assert_int_equal(fy_get_u64(r1), 4 * MIB);
	assert_int_equal(fy_get_u64(r1 + 8), 3 * MIB + 4 * KIB);
	assert_int_equal(fy_get_u64(r1 + 16), 4 * MIB);
	assert_int_equal(fy_get_u64(r1 + 24), 769);
	assert_string_equal((char *)r1 + 32, "ram1");
	/* Unused bytes are zero: after region 2 up to the checksum. */
	for (size_t i = FY_SNAP_REGIONS_AT + 3 * FY_SNAP_REGION_SIZE;
	     i < FY_SNAP_SB_SIZE - 8; i++)
		assert_int_equal(b[i], 0);
	assert_int_equal(fy_get_u64(b + 4088), XXH3_64bits(b, 4088));
	free(b);
}

static void test_round_trip(void **st)
{
	struct fy_snap_sb sb, out;
	uint8_t *b = good_bytes(&sb);
	char err[256];

	(void)st;
	assert_int_equal(fy_snap_sb_decode(b, FY_SNAP_SB_SIZE,
					   fy_snap_file_size(&sb), &out, err,
					   sizeof(err)),
			 0);
	assert_int_equal(out.version, sb.version);
	assert_int_equal(out.flags, 0);
	assert_int_equal(out.page_size, 4096);
	assert_int_equal(out.nregions, 3);
	assert_int_equal(out.pages, sb.pages);
	assert_int_equal(out.data_pages, sb.data_pages);
	assert_int_equal(out.table_offset, sb.table_offset);
	assert_int_equal(out.map_offset, sb.map_offset);
	assert_int_equal(out.state_offset, sb.state_offset);
	assert_int_equal(out.state_bytes, sb.state_bytes);
	assert_int_equal(out.table_hash, sb.table_hash);
	assert_int_equal(out.map_hash, sb.map_hash);
	assert_int_equal(out.state_hash, sb.state_hash);
	assert_int_equal(out.created_ns, sb.created_ns);
	assert_int_equal(out.passes, sb.passes);
	assert_string_equal(out.software, sb.software);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(out.regions[i].gpa, sb.regions[i].gpa);
		assert_int_equal(out.regions[i].size, sb.regions[i].size);
		assert_int_equal(out.regions[i].slot_offset,
				 sb.regions[i].slot_offset);
		assert_int_equal(out.regions[i].data_pages,
				 sb.regions[i].data_pages);
		assert_string_equal(out.regions[i].name, sb.regions[i].name);
	}
	/* An unknown file size skips only the size check; a longer input
	 * (the first bytes of a file) is fine. */
	assert_int_equal(fy_snap_sb_decode(b, FY_SNAP_SB_SIZE, UINT64_MAX, &out,
					   err, sizeof(err)),
			 0);
	assert_true(fy_snap_is_mapped(b, 8));
	assert_false(fy_snap_is_mapped(b, 7));
	assert_false(fy_snap_is_mapped((const uint8_t *)"FERRYMIG", 8));
	free(b);
}

static void test_encode_cuts_long_name(void **st)
{
	struct fy_snap_sb sb, out;
	uint8_t *b = malloc(FY_SNAP_SB_SIZE);

	(void)st;
	assert_non_null(b);
	three_regions(&sb);
	memset(sb.regions[0].name, 'x', sizeof(sb.regions[0].name));
	fy_snap_sb_encode(b, &sb);
	assert_int_equal(fy_snap_sb_decode(b, FY_SNAP_SB_SIZE, UINT64_MAX, &out,
					   NULL, 0),
			 0);
	assert_int_equal(strlen(out.regions[0].name), 63);
	free(b);
}

/* ---- refusals ---- */

static void test_refuses_short_and_magic(void **st)
{
	struct fy_snap_sb sb;
	uint8_t *b = good_bytes(&sb);
	uint8_t *shorter = malloc(FY_SNAP_SB_SIZE - 1);

	(void)st;
	assert_non_null(shorter);
	memcpy(shorter, b, FY_SNAP_SB_SIZE - 1);
	expect_refused(shorter, FY_SNAP_SB_SIZE - 1, UINT64_MAX, -EBADMSG,
		       "4095 bytes");
	expect_refused(b, 0, UINT64_MAX, -EBADMSG, "0 bytes");
	memcpy(b, "FERRYMIG", 8);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "stream-format");
	memcpy(b, "FERRYSNQ", 8);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG, "magic");
	free(shorter);
	free(b);
}

static void test_refuses_version_flags_checksum(void **st)
{
	struct fy_snap_sb sb;
	uint8_t *b = good_bytes(&sb);

	(void)st;
	fy_put_u16(b + 8, 2);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, FERRY_EVERSION,
		       "version 2");
	fy_put_u16(b + 8, 1);
	fy_put_u16(b + 10, 0x8);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG, "flags 0x8");
	fy_put_u16(b + 10, 0);
	reseal(b);
	/* Any flipped bit, in a field or in the checksum itself. */
	b[100] ^= 0x10;
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, FERRY_ECHECKSUM,
		       "checksum");
	b[100] ^= 0x10;
	b[4095] ^= 1;
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, FERRY_ECHECKSUM,
		       "checksum");
	b[4095] ^= 1;
	b[3000] = 1;
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, FERRY_ECHECKSUM,
		       "checksum");
	free(b);
}

static void test_refuses_counts(void **st)
{
	struct fy_snap_sb sb;
	uint8_t *b = good_bytes(&sb);

	(void)st;
	fy_put_u32(b + 12, 8192);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "page size 8192");
	fy_put_u32(b + 12, 4096);
	fy_put_u32(b + 16, 0);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG, "nregions 0");
	fy_put_u32(b + 16, 41);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG, "nregions 41");
	fy_put_u32(b + 16, 3);
	fy_put_u64(b + 24, 1028);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG, "pages 1028");
	fy_put_u64(b + 24, 1027);
	fy_put_u64(b + 32, 1028);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "data_pages 1028 > pages");
	fy_put_u64(b + 32, 778);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "add up to 779");
	fy_put_u64(b + 32, 779);
	fy_put_u64(region_at(b, 2) + 24, 3);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "region 2 (ram2): data_pages 3");
	fy_put_u64(region_at(b, 2) + 24, 0);
	fy_put_u64(b + 64, 0);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "state_bytes 0");
	fy_put_u64(b + 64, FY_REC_MAX_BODY + 1ull);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "state_bytes 67108865");
	free(b);
}

static void test_refuses_regions(void **st)
{
	struct fy_snap_sb sb;
	uint8_t *b = good_bytes(&sb);
	uint8_t *r1 = region_at(b, 1);

	(void)st;
	/* Region 1 moved into region 0's guest addresses. */
	fy_put_u64(r1, 1 * MIB - 4096);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "region 1 (ram1): guest addresses 0xff000..");
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "overlap region 0 (ram0)");
	fy_put_u64(r1, 4 * MIB + 1);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "region 1 (ram1): gpa 0x400001 is not page aligned");
	fy_put_u64(r1, UINT64_MAX - 4095);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG, "wraps");
	fy_put_u64(r1, 4 * MIB);
	fy_put_u64(r1 + 8, 0);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "region 1 (ram1): size 0");
	fy_put_u64(r1 + 8, 3 * MIB + 100);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "region 1 (ram1): size 3145828");
	free(b);
}

static void test_refuses_names(void **st)
{
	struct fy_snap_sb sb;
	uint8_t *b = good_bytes(&sb);
	uint8_t *name = region_at(b, 1) + 32;

	(void)st;
	memset(name, 'a', 64);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "region 1: name not NUL-terminated");
	memset(name, 0, 64);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "region 1: empty name");
	strcpy((char *)name, "ram1");
	name[10] = 'z';
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "region 1: name not NUL-terminated and NUL-padded");
	name[10] = 0;
	memset(b + 112, 'f', 32);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG, "software");
	free(b);
}

static void test_refuses_reserved(void **st)
{
	static const size_t at[] = { 20, 23, 108, 111, 144, 191,
				     FY_SNAP_REGIONS_AT + 3 * FY_SNAP_REGION_SIZE,
				     4000, 4087 };
	struct fy_snap_sb sb;
	uint8_t *b = good_bytes(&sb);

	(void)st;
	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		b[at[i]] = 0x40;
		reseal(b);
		expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
			       "reserved bytes");
		b[at[i]] = 0;
	}
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, 0, "");
	free(b);
}

static void test_refuses_offsets(void **st)
{
	struct fy_snap_sb sb;
	uint8_t *b = good_bytes(&sb);
	uint8_t *r1 = region_at(b, 1);

	(void)st;
	fy_put_u64(region_at(b, 0) + 16, 2048);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "region 0 (ram0): slot offset 2048 overlaps the "
		       "superblock");
	fy_put_u64(region_at(b, 0) + 16, 4096);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "region 0 (ram0): slot offset 4096 (the layout puts it "
		       "at 2097152)");
	fy_put_u64(region_at(b, 0) + 16, 2 * MIB);
	fy_put_u64(r1 + 16, 2 * MIB + 512 * KIB);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "region 1 (ram1): slot offset 2621440 overlaps the "
		       "slots of region 0 (ram0)");
	fy_put_u64(r1 + 16, 6 * MIB);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "region 1 (ram1): slot offset 6291456 (the layout puts "
		       "it at 4194304)");
	fy_put_u64(r1 + 16, 4 * MIB);
	fy_put_u64(b + 40, sb.table_offset + 4096);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "table_offset");
	fy_put_u64(b + 40, sb.table_offset);
	fy_put_u64(b + 48, sb.table_offset);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG, "map_offset");
	fy_put_u64(b + 48, sb.map_offset);
	fy_put_u64(b + 56, sb.state_offset - 1);
	reseal(b);
	expect_refused(b, FY_SNAP_SB_SIZE, UINT64_MAX, -EBADMSG,
		       "state_offset");
	free(b);
}

static void test_refuses_file_size(void **st)
{
	struct fy_snap_sb sb, out;
	uint8_t *b = good_bytes(&sb);
	uint64_t size = fy_snap_file_size(&sb);
	char want[128];

	(void)st;
	snprintf(want, sizeof(want), "file size %llu bytes, the layout needs "
		 "%llu (truncated)", (unsigned long long)(size - 1),
		 (unsigned long long)size);
	expect_refused(b, FY_SNAP_SB_SIZE, size - 1, -EBADMSG, want);
	expect_refused(b, FY_SNAP_SB_SIZE, size + 1, -EBADMSG, "file size");
	expect_refused(b, FY_SNAP_SB_SIZE, FY_SNAP_SB_SIZE, -EBADMSG,
		       "file size 4096");
	assert_int_equal(fy_snap_sb_decode(b, FY_SNAP_SB_SIZE, size, &out, NULL,
					   0),
			 0);
	free(b);
}

/* ---- pages ---- */

static void test_find_page(void **st)
{
	static const struct {
		uint64_t global;
		uint32_t region;
		uint64_t page;
	} cases[] = {
		{ 0, 0, 0 },	  { 255, 0, 255 }, { 256, 1, 0 },
		{ 1024, 1, 768 }, { 1025, 2, 0 },  { 1026, 2, 1 },
	};
	struct fy_snap_sb sb;
	uint32_t region;
	uint64_t page;

	(void)st;
	three_regions(&sb);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(fy_snap_find_page(&sb, cases[i].global,
						   &region, &page),
				 0);
		assert_int_equal(region, cases[i].region);
		assert_int_equal(page, cases[i].page);
		assert_int_equal(fy_snap_global_page(&sb, region, page),
				 cases[i].global);
	}
	assert_int_equal(fy_snap_find_page(&sb, 1027, &region, &page), -ERANGE);
	assert_int_equal(fy_snap_find_page(&sb, UINT64_MAX, &region, &page),
			 -ERANGE);
}

static void test_page_hash(void **st)
{
	static uint8_t page[4096], zero[4096];

	(void)st;
	for (int i = 0; i < 4096; i++)
		page[i] = (uint8_t)(i * 7);
	assert_int_equal(fy_snap_page_hash(page, 18),
			 XXH3_64bits_withSeed(page, 4096, 18));
	/* The seed makes equal pages at different places differ. */
	assert_int_not_equal(fy_snap_page_hash(zero, 5),
			     fy_snap_page_hash(zero, 6));
	assert_int_equal(fy_snap_page_hash(zero, 5),
			 XXH3_64bits_withSeed(zero, 4096, 5));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout_one_region),
		cmocka_unit_test(test_layout_three_regions),
		cmocka_unit_test(test_layout_refuses),
		cmocka_unit_test(test_encode_bytes),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_encode_cuts_long_name),
		cmocka_unit_test(test_refuses_short_and_magic),
		cmocka_unit_test(test_refuses_version_flags_checksum),
		cmocka_unit_test(test_refuses_counts),
		cmocka_unit_test(test_refuses_regions),
		cmocka_unit_test(test_refuses_names),
		cmocka_unit_test(test_refuses_reserved),
		cmocka_unit_test(test_refuses_offsets),
		cmocka_unit_test(test_refuses_file_size),
		cmocka_unit_test(test_find_page),
		cmocka_unit_test(test_page_hash),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
