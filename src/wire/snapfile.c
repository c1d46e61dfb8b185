/* SPDX-License-Identifier: MIT */
/*
 * snapfile.c - the superblock and layout arithmetic of a mapped snapshot
 * file (snapfile.h has the layout).
 *
 * Pure code like wire.c: no I/O, no allocation, no logging. The decoder is
 * a fuzz target and treats its input as hostile: it recomputes the layout
 * from the regions and accepts only a superblock whose every offset is
 * exactly where the layout puts it, so a reader that trusts the decoded
 * offsets never reads outside the file or mistakes one part for another.
 */
#include "wire/snapfile.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include <xxhash.h>

#include "ferry.h"

/* Offsets stay below this so that they fit in an off_t. */
#define SNAP_OFF_MAX ((uint64_t)INT64_MAX)

/* Round @v up to @align (a power of two); false when it would pass
 * SNAP_OFF_MAX. */
static bool round_up(uint64_t v, uint64_t align, uint64_t *out)
{
	if (v > SNAP_OFF_MAX - (align - 1))
		return false;
	*out = (v + align - 1) & ~(align - 1);
	return true;
}

/* @a + @b into *out; false when it would pass SNAP_OFF_MAX. */
static bool add_off(uint64_t a, uint64_t b, uint64_t *out)
{
	if (a > SNAP_OFF_MAX || b > SNAP_OFF_MAX - a)
		return false;
	*out = a + b;
	return true;
}

/**
 * fy_snap_layout() - place every part of a snapshot file.
 * @sb: regions (gpa, size, name) and nregions set; receives version,
 *      flags, page_size, the regions' slot offsets, pages, table_offset,
 *      map_offset, state_offset and state_bytes.
 * @state_bytes: the size of the device-state section. It is only stored:
 *      no offset depends on it, so a writer may lay out the file before it
 *      has the state and call this again once it does.
 *
 * Return: 0, or -EINVAL (no region, too many, a size that is zero or not a
 * page multiple, an offset that would overflow).
 */
int fy_snap_layout(struct fy_snap_sb *sb, uint64_t state_bytes)
{
	uint64_t off = FY_SNAP_ALIGN, end = 0, pages = 0, at, table_end;

	if (sb->nregions == 0 || sb->nregions > FY_SNAP_MAX_REGIONS)
		return -EINVAL;
	for (uint32_t i = 0; i < sb->nregions; i++) {
		struct fy_snap_region *r = &sb->regions[i];

		if (r->size == 0 || r->size % FY_MEM_PAGE)
			return -EINVAL;
		if (i > 0 && !round_up(end, FY_SNAP_ALIGN, &off))
			return -EINVAL;
		if (!add_off(off, r->size, &end))
			return -EINVAL;
		r->slot_offset = off;
		pages += r->size / FY_MEM_PAGE;
	}
	if (!round_up(end, FY_SNAP_BLOCK, &sb->table_offset) ||
	    !add_off(sb->table_offset, fy_snap_table_bytes(pages), &table_end) ||
	    !round_up(table_end, FY_SNAP_BLOCK, &sb->map_offset) ||
	    !add_off(sb->map_offset, fy_snap_map_bytes(pages), &at) ||
	    !round_up(at, FY_SNAP_BLOCK, &sb->state_offset) ||
	    !add_off(sb->state_offset, state_bytes, &at))
		return -EINVAL;
	sb->version = FY_SNAP_VERSION;
	sb->flags = 0;
	sb->page_size = FY_MEM_PAGE;
	sb->pages = pages;
	sb->state_bytes = state_bytes;
	return 0;
}

/* Copy @src into the @n-byte field at @out, NUL-padded; a string that
 * fills the field is cut so that at least one NUL remains. */
static void put_name(uint8_t *out, const char *src, size_t n)
{
	size_t len = strnlen(src, n - 1);

	memset(out, 0, n);
	memcpy(out, src, len);
}

/**
 * fy_snap_sb_encode() - the superblock's bytes.
 * @out: FY_SNAP_SB_SIZE bytes; every unused byte is written as zero.
 * @sb: the fields, as fy_snap_layout() and the writer filled them. The
 *      version and flags are written as they are, so a test can produce a
 *      superblock that a reader must refuse.
 */
void fy_snap_sb_encode(uint8_t *out, const struct fy_snap_sb *sb)
{
	uint32_t n = sb->nregions;

	if (n > FY_SNAP_MAX_REGIONS)
		n = FY_SNAP_MAX_REGIONS;
	memset(out, 0, FY_SNAP_SB_SIZE);
	memcpy(out, FY_SNAP_MAGIC, 8);
	fy_put_u16(out + 8, sb->version);
	fy_put_u16(out + 10, sb->flags);
	fy_put_u32(out + 12, sb->page_size);
	fy_put_u32(out + 16, sb->nregions);
	fy_put_u64(out + 24, sb->pages);
	fy_put_u64(out + 32, sb->data_pages);
	fy_put_u64(out + 40, sb->table_offset);
	fy_put_u64(out + 48, sb->map_offset);
	fy_put_u64(out + 56, sb->state_offset);
	fy_put_u64(out + 64, sb->state_bytes);
	fy_put_u64(out + 72, sb->table_hash);
	fy_put_u64(out + 80, sb->map_hash);
	fy_put_u64(out + 88, sb->state_hash);
	fy_put_u64(out + 96, sb->created_ns);
	fy_put_u32(out + 104, sb->passes);
	put_name(out + 112, sb->software, sizeof(sb->software));
	for (uint32_t i = 0; i < n; i++) {
		const struct fy_snap_region *r = &sb->regions[i];
		uint8_t *p = out + FY_SNAP_REGIONS_AT + i * FY_SNAP_REGION_SIZE;

		fy_put_u64(p, r->gpa);
		fy_put_u64(p + 8, r->size);
		fy_put_u64(p + 16, r->slot_offset);
		fy_put_u64(p + 24, r->data_pages);
		put_name(p + 32, r->name, sizeof(r->name));
	}
	fy_put_u64(out + FY_SNAP_SB_SIZE - 8,
		   XXH3_64bits(out, FY_SNAP_SB_SIZE - 8));
}

/* Whether the @n bytes at @p are all zero. */
static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/*
 * Copy the NUL-padded string field of @n bytes at @in into @out. False
 * when it has no NUL or has non-zero bytes after its first NUL (the
 * padding is part of "unused bytes zero").
 */
static bool get_name(const uint8_t *in, size_t n, char *out)
{
	size_t len = strnlen((const char *)in, n);

	if (len == n || !all_zero(in + len, n - len))
		return false;
	memcpy(out, in, n);
	return true;
}

#define FAIL(...)                                                 \
	do {                                                      \
		if (errlen)                                       \
			snprintf(err, errlen, __VA_ARGS__);       \
		return -EBADMSG;                                  \
	} while (0)

/* Reserved bytes, the software string, and the bytes after the last
 * region (@sb->nregions is checked already). */
static int check_reserved(const uint8_t *in, struct fy_snap_sb *sb,
			  char *err, size_t errlen)
{
	uint64_t end;

	if (fy_get_u32(in + 20))
		FAIL("reserved bytes 20..23 are not zero");
	if (fy_get_u32(in + 108))
		FAIL("reserved bytes 108..111 are not zero");
	if (!all_zero(in + 144, 48))
		FAIL("reserved bytes 144..191 are not zero");
	if (!get_name(in + 112, sizeof(sb->software), sb->software))
		FAIL("software: not NUL-terminated and NUL-padded");
	end = FY_SNAP_REGIONS_AT + (uint64_t)sb->nregions * FY_SNAP_REGION_SIZE;
	if (!all_zero(in + end, FY_SNAP_SB_SIZE - 8 - end))
		FAIL("reserved bytes %" PRIu64 "..%u after region %u are not "
		     "zero", end, FY_SNAP_SB_SIZE - 9, sb->nregions - 1);
	return 0;
}

/* The fixed fields before the regions: magic, version, flags, checksum,
 * page size, nregions, reserved bytes, software. */
static int decode_fixed(const uint8_t *in, size_t len, struct fy_snap_sb *sb,
			char *err, size_t errlen)
{
	uint64_t want, have;
	int rc;

	if (len < FY_SNAP_SB_SIZE)
		FAIL("superblock: %zu bytes, a superblock is %u", len,
		     FY_SNAP_SB_SIZE);
	if (memcmp(in, FY_MAGIC, 8) == 0)
		FAIL("magic FERRYMIG: a stream-format file, not a mapped "
		     "snapshot");
	if (!fy_snap_is_mapped(in, len))
		FAIL("magic: not a ferry snapshot file (no FERRYSNP)");
	sb->version = fy_get_u16(in + 8);
	if (sb->version != FY_SNAP_VERSION) {
		if (errlen)
			snprintf(err, errlen,
				 "format version %u: this ferry reads "
				 "version %u",
				 sb->version, FY_SNAP_VERSION);
		return FERRY_EVERSION;
	}
	sb->flags = fy_get_u16(in + 10);
	if (sb->flags)
		FAIL("flags 0x%x: unknown flags (must be 0)", sb->flags);
	want = fy_get_u64(in + FY_SNAP_SB_SIZE - 8);
	have = XXH3_64bits(in, FY_SNAP_SB_SIZE - 8);
	if (want != have) {
		if (errlen)
			snprintf(err, errlen,
				 "superblock checksum 0x%016" PRIx64
				 " does not match its bytes (0x%016" PRIx64 ")",
				 want, have);
		return FERRY_ECHECKSUM;
	}
	sb->page_size = fy_get_u32(in + 12);
	if (sb->page_size != FY_MEM_PAGE)
		FAIL("page size %u (must be %u)", sb->page_size, FY_MEM_PAGE);
	sb->nregions = fy_get_u32(in + 16);
	if (sb->nregions == 0 || sb->nregions > FY_SNAP_MAX_REGIONS)
		FAIL("nregions %u (must be 1..%u)", sb->nregions,
		     FY_SNAP_MAX_REGIONS);
	rc = check_reserved(in, sb, err, errlen);
	if (rc)
		return rc;
	sb->pages = fy_get_u64(in + 24);
	sb->data_pages = fy_get_u64(in + 32);
	sb->table_offset = fy_get_u64(in + 40);
	sb->map_offset = fy_get_u64(in + 48);
	sb->state_offset = fy_get_u64(in + 56);
	sb->state_bytes = fy_get_u64(in + 64);
	sb->table_hash = fy_get_u64(in + 72);
	sb->map_hash = fy_get_u64(in + 80);
	sb->state_hash = fy_get_u64(in + 88);
	sb->created_ns = fy_get_u64(in + 96);
	sb->passes = fy_get_u32(in + 104);
	return 0;
}

/* Region @i alone: name, size, gpa, data_pages against its own pages. */
static int decode_region(const uint8_t *in, uint32_t i, struct fy_snap_sb *sb,
			 char *err, size_t errlen)
{
	const uint8_t *p = in + FY_SNAP_REGIONS_AT + i * FY_SNAP_REGION_SIZE;
	struct fy_snap_region *r = &sb->regions[i];

	if (!get_name(p + 32, sizeof(r->name), r->name))
		FAIL("region %u: name not NUL-terminated and NUL-padded", i);
	if (!r->name[0])
		FAIL("region %u: empty name", i);
	r->gpa = fy_get_u64(p);
	r->size = fy_get_u64(p + 8);
	r->slot_offset = fy_get_u64(p + 16);
	r->data_pages = fy_get_u64(p + 24);
	if (r->size == 0 || r->size % FY_MEM_PAGE)
		FAIL("region %u (%s): size %" PRIu64
		     " is not a non-zero multiple of %u",
		     i, r->name, r->size, FY_MEM_PAGE);
	if (r->gpa % FY_MEM_PAGE)
		FAIL("region %u (%s): gpa 0x%" PRIx64 " is not page aligned",
		     i, r->name, r->gpa);
	if (r->gpa > UINT64_MAX - r->size)
		FAIL("region %u (%s): gpa 0x%" PRIx64 " + size %" PRIu64
		     " wraps around", i, r->name, r->gpa, r->size);
	if (r->data_pages > r->size / FY_MEM_PAGE)
		FAIL("region %u (%s): data_pages %" PRIu64 " > its %" PRIu64
		     " pages", i, r->name, r->data_pages,
		     r->size / FY_MEM_PAGE);
	for (uint32_t j = 0; j < i; j++) {
		const struct fy_snap_region *q = &sb->regions[j];

		if (r->gpa < q->gpa + q->size && q->gpa < r->gpa + r->size)
			FAIL("region %u (%s): guest addresses 0x%" PRIx64
			     "..0x%" PRIx64 " overlap region %u (%s)",
			     i, r->name, r->gpa, r->gpa + r->size - 1, j,
			     q->name);
	}
	return 0;
}

/* One region's slot offset against the layout's @want. */
static int check_slot(const struct fy_snap_sb *sb, uint32_t i, uint64_t want,
		      char *err, size_t errlen)
{
	const struct fy_snap_region *r = &sb->regions[i];

	if (r->slot_offset == want)
		return 0;
	if (r->slot_offset < FY_SNAP_SB_SIZE)
		FAIL("region %u (%s): slot offset %" PRIu64
		     " overlaps the superblock", i, r->name, r->slot_offset);
	if (i > 0 && r->slot_offset < sb->regions[i - 1].slot_offset +
					     sb->regions[i - 1].size)
		FAIL("region %u (%s): slot offset %" PRIu64
		     " overlaps the slots of region %u (%s)",
		     i, r->name, r->slot_offset, i - 1, sb->regions[i - 1].name);
	FAIL("region %u (%s): slot offset %" PRIu64 " (the layout puts it at %"
	     PRIu64 ")", i, r->name, r->slot_offset, want);
}

/* An offset field against the layout. */
static int check_off(const char *field, uint64_t have, uint64_t want,
		     char *err, size_t errlen)
{
	if (have != want)
		FAIL("%s %" PRIu64 " (the layout puts it at %" PRIu64 ")",
		     field, have, want);
	return 0;
}

/* Every offset and count against the layout computed from the regions. */
static int check_layout(const struct fy_snap_sb *sb, uint64_t file_size,
			char *err, size_t errlen)
{
	struct fy_snap_sb want = *sb;
	uint64_t sum = 0;
	int rc;

	if (fy_snap_layout(&want, sb->state_bytes))
		FAIL("regions: their slots do not fit in a file");
	for (uint32_t i = 0; i < sb->nregions; i++) {
		rc = check_slot(sb, i, want.regions[i].slot_offset, err, errlen);
		if (rc)
			return rc;
		sum += sb->regions[i].data_pages;
	}
	if (sb->pages != want.pages)
		FAIL("pages %" PRIu64 " (the regions hold %" PRIu64 ")",
		     sb->pages, want.pages);
	if (sb->data_pages > sb->pages)
		FAIL("data_pages %" PRIu64 " > pages %" PRIu64, sb->data_pages,
		     sb->pages);
	if (sb->data_pages != sum)
		FAIL("data_pages %" PRIu64 " (the regions' data_pages add up "
		     "to %" PRIu64 ")", sb->data_pages, sum);
	if ((rc = check_off("table_offset", sb->table_offset, want.table_offset,
			    err, errlen)) ||
	    (rc = check_off("map_offset", sb->map_offset, want.map_offset, err,
			    errlen)) ||
	    (rc = check_off("state_offset", sb->state_offset,
			    want.state_offset, err, errlen)))
		return rc;
	if (sb->state_bytes == 0 || sb->state_bytes > FY_REC_MAX_BODY)
		FAIL("state_bytes %" PRIu64 " (must be 1..%u)", sb->state_bytes,
		     FY_REC_MAX_BODY);
	if (file_size != UINT64_MAX && file_size != fy_snap_file_size(sb))
		FAIL("file size %" PRIu64 " bytes, the layout needs %" PRIu64
		     "%s", file_size, fy_snap_file_size(sb),
		     file_size < fy_snap_file_size(sb) ? " (truncated)" : "");
	return 0;
}

/**
 * fy_snap_sb_decode() - decode and check a superblock.
 * @in: the first bytes of the file.
 * @len: how many (at least FY_SNAP_SB_SIZE).
 * @file_size: the file's size, or UINT64_MAX when unknown.
 * @sb: receives the fields (zeroed first; regions past nregions stay zero).
 * @err: receives what is wrong, naming the field; may be NULL with @errlen 0.
 * @errlen: size of @err.
 *
 * Return: 0; FERRY_EVERSION (another magic "FERRYSNP" version);
 * FERRY_ECHECKSUM (the checksum); -EBADMSG (anything else, or @len short).
 */
int fy_snap_sb_decode(const uint8_t *in, size_t len, uint64_t file_size,
		      struct fy_snap_sb *sb, char *err, size_t errlen)
{
	int rc;

	memset(sb, 0, sizeof(*sb));
	if (errlen)
		err[0] = '\0';
	rc = decode_fixed(in, len, sb, err, errlen);
	if (rc)
		return rc;
	for (uint32_t i = 0; i < sb->nregions; i++) {
		rc = decode_region(in, i, sb, err, errlen);
		if (rc)
			return rc;
	}
	return check_layout(sb, file_size, err, errlen);
}

/**
 * fy_snap_page_hash() - the page table's entry for a page.
 * @page: FY_MEM_PAGE bytes.
 * @global_page: the page's global number, the hash's seed, so that two
 *      pages with the same bytes have different entries and a slot written
 *      at the wrong place does not match.
 *
 * Return: XXH3-64 of the page seeded with @global_page.
 */
uint64_t fy_snap_page_hash(const void *page, uint64_t global_page)
{
	return XXH3_64bits_withSeed(page, FY_MEM_PAGE, global_page);
}

/**
 * fy_snap_find_page() - which region and page a global page number is.
 * @sb: a laid out or decoded superblock.
 * @global_page: the page's number counting every region in order.
 * @region: receives the region's index.
 * @page: receives the page's index within the region.
 *
 * Return: 0, or -ERANGE when @global_page is past the last region.
 */
int fy_snap_find_page(const struct fy_snap_sb *sb, uint64_t global_page,
		      uint32_t *region, uint64_t *page)
{
	uint64_t first = 0;

	for (uint32_t i = 0; i < sb->nregions && i < FY_SNAP_MAX_REGIONS; i++) {
		uint64_t n = sb->regions[i].size / FY_MEM_PAGE;

		/* global_page >= first holds: earlier regions returned. */
		if (global_page - first < n) {
			*region = i;
			*page = global_page - first;
			return 0;
		}
		first += n;
	}
	return -ERANGE;
}

/**
 * fy_snap_global_page() - the global number of a region's page.
 * @sb: a laid out or decoded superblock.
 * @region: the region's index (< nregions).
 * @page: the page's index within the region.
 *
 * Return: the pages of the regions before @region, plus @page.
 */
uint64_t fy_snap_global_page(const struct fy_snap_sb *sb, uint32_t region,
			     uint64_t page)
{
	uint64_t first = 0;

	for (uint32_t i = 0; i < region && i < FY_SNAP_MAX_REGIONS; i++)
		first += sb->regions[i].size / FY_MEM_PAGE;
	return first + page;
}
