/* SPDX-License-Identifier: MIT */
/*
 * snapfile.h - the layout of a ferry snapshot file ("mapped" layout): one
 * fixed slot per guest page, so a live snapshot can write pages while the
 * guest runs and overwrite them in place in later passes, and a restore
 * can read any page with one pread. Pure code, no I/O: the engine
 * (src/migrate/snapfile.c) writes and reads files, ferry inspect checks
 * them. The specification is docs/stream-format.md, "Snapshot files".
 *
 * File (all integers little-endian; offsets from the start of the file):
 *
 *   0                superblock, FY_SNAP_SB_SIZE bytes (below)
 *   slot_offset[i]   region i's slots: region size bytes, page p of the
 *                    region at slot_offset[i] + p * page_size. A zero page
 *                    is a hole (or stale bytes the map says to ignore).
 *                    slot_offset[0] = FY_SNAP_ALIGN; each next region
 *                    starts at the previous end rounded up to FY_SNAP_ALIGN.
 *   table_offset     page table: one u64 per page of every region, regions
 *                    in order: XXH3-64 of the page's bytes seeded with its
 *                    global page number (pages of earlier regions count
 *                    first), for data and zero pages alike (a zero page's
 *                    entry is the hash of 4096 zero bytes with its seed).
 *                    Starts at the end of the last region's slots rounded
 *                    up to FY_SNAP_BLOCK.
 *   map_offset       data map: one bit per page (bit p%64 of u64 word
 *                    p/64, global page numbers), set = the slot holds the
 *                    page's bytes, clear = the page is all zero. Bits past
 *                    the last page are 0. At table_offset + table_bytes
 *                    rounded up to FY_SNAP_BLOCK.
 *   state_offset     the device-state section (docs/state-format.md), as
 *                    a STATE record carries it. At map_offset + map_bytes
 *                    rounded up to FY_SNAP_BLOCK.
 *   file size        state_offset + state_bytes (no padding after it).
 *
 * Superblock (FY_SNAP_SB_SIZE = 4096 bytes, unused bytes zero):
 *    0  u8[8]  magic "FERRYSNP"
 *    8  u16    format version (FY_SNAP_VERSION)
 *   10  u16    flags (0; any other value is refused)
 *   12  u32    page size (4096)
 *   16  u32    nregions (1..FY_MAX_REGIONS)
 *   20  u32    reserved (0)
 *   24  u64    pages: total pages of every region (sum of size/page)
 *   32  u64    data_pages: set bits in the data map
 *   40  u64    table_offset
 *   48  u64    map_offset
 *   56  u64    state_offset
 *   64  u64    state_bytes (1..FY_REC_MAX_BODY)
 *   72  u64    table_hash: XXH3-64 (seed 0) of the page table's bytes; it
 *              is also the image digest (ferry_stats.image_digest)
 *   80  u64    map_hash: XXH3-64 (seed 0) of the data map's bytes
 *   88  u64    state_hash: XXH3-64 (seed 0) of the state section
 *   96  u64    created: CLOCK_REALTIME nanoseconds when it was completed
 *  104  u32    passes: memory passes written (1 = stop-and-copy)
 *  108  u32    reserved (0)
 *  112  u8[32] software, NUL-padded ("ferry 0.1.0")
 *  144  u8[48] reserved (0)
 *  192  regions, FY_SNAP_REGION_SIZE (96) bytes each:
 *         0 u64 gpa, 8 u64 size, 16 u64 slot_offset,
 *        24 u64 data_pages (of this region), 32 u8[64] name (NUL-padded,
 *        at least one NUL)
 * 4088  u64    XXH3-64 (seed 0) of bytes 0..4087
 *
 * 64 regions end at 192 + 64 * 96 = 6336 > 4088, so a file holds at most
 * FY_SNAP_MAX_REGIONS (40) regions.
 *
 * The writer creates PATH.partial, writes slots while the guest runs, then
 * the table, map and state, syncs, writes the superblock last, syncs, and
 * renames to PATH: a file with a valid superblock at PATH is complete.
 */
#ifndef FY_SNAPFILE_H
#define FY_SNAPFILE_H

#include <stddef.h>
#include <stdint.h>

#include "wire/wire.h"

#define FY_SNAP_MAGIC "FERRYSNP"
#define FY_SNAP_VERSION 1
#define FY_SNAP_SB_SIZE 4096u
#define FY_SNAP_REGION_SIZE 96u
#define FY_SNAP_REGIONS_AT 192u
#define FY_SNAP_MAX_REGIONS 40u
/* Slot areas start on this boundary: large aligned I/O, O_DIRECT, and
 * whole 2 MiB huge pages per read. */
#define FY_SNAP_ALIGN (2u << 20)
/* Table, map and state start on this boundary (O_DIRECT's block). */
#define FY_SNAP_BLOCK 4096u

struct fy_snap_region {
	uint64_t gpa;
	uint64_t size;
	uint64_t slot_offset;
	uint64_t data_pages;
	char name[64];
};

struct fy_snap_sb {
	uint16_t version;
	uint16_t flags;
	uint32_t page_size;
	uint32_t nregions;
	uint64_t pages;
	uint64_t data_pages;
	uint64_t table_offset;
	uint64_t map_offset;
	uint64_t state_offset;
	uint64_t state_bytes;
	uint64_t table_hash;
	uint64_t map_hash;
	uint64_t state_hash;
	uint64_t created_ns;
	uint32_t passes;
	char software[32];
	struct fy_snap_region regions[FY_SNAP_MAX_REGIONS];
};

/*
 * fy_snap_layout() - fill in every offset of @sb from its regions (gpa,
 * size, name set; nregions set) and @state_bytes: slot offsets, pages,
 * table_offset, map_offset, state_offset, state_bytes.
 *
 * Return: 0, or -EINVAL (no region, too many, a size that is zero or not a
 * page multiple, an offset that would overflow).
 */
int fy_snap_layout(struct fy_snap_sb *sb, uint64_t state_bytes);

/* Bytes of the page table and the data map for @pages pages. */
static inline uint64_t fy_snap_table_bytes(uint64_t pages)
{
	return pages * 8;
}

static inline uint64_t fy_snap_map_bytes(uint64_t pages)
{
	return (pages + 63) / 64 * 8;
}

/* The size of a complete file: state_offset + state_bytes. */
static inline uint64_t fy_snap_file_size(const struct fy_snap_sb *sb)
{
	return sb->state_offset + sb->state_bytes;
}

/* Encode @sb into FY_SNAP_SB_SIZE bytes at @out (checksum included). */
void fy_snap_sb_encode(uint8_t *out, const struct fy_snap_sb *sb);

/*
 * fy_snap_sb_decode() - decode and check a superblock.
 * @in, @len: the first bytes of the file (at least FY_SNAP_SB_SIZE).
 * @file_size: the file's size, or UINT64_MAX when unknown.
 * @sb: receives the fields.
 * @err, @errlen: what is wrong, naming the field ("region 1 (ram1): slot
 *      offset 4096 overlaps the superblock").
 *
 * Checks: magic, version, flags, the checksum, page size, nregions, every
 * region (size a non-zero page multiple, gpa page aligned and not
 * wrapping, regions not overlapping in guest addresses, name terminated and
 * non-empty), that every offset is where fy_snap_layout() puts it, pages
 * and data_pages consistent (data_pages <= pages, the regions' data_pages
 * add up), state_bytes in 1..FY_REC_MAX_BODY, reserved bytes zero, the
 * software string terminated, and that the file is exactly as large as
 * the layout says (when @file_size is known).
 *
 * Return: 0; FERRY_EVERSION (another magic "FERRYSNP" version);
 * FERRY_ECHECKSUM (the checksum); -EBADMSG (anything else, or @len short).
 * A stream file (magic "FERRYMIG") is -EBADMSG too: fy_snap_is_mapped()
 * tells the two apart first.
 */
int fy_snap_sb_decode(const uint8_t *in, size_t len, uint64_t file_size,
		      struct fy_snap_sb *sb, char *err, size_t errlen);

/* Whether @in (at least 8 bytes) starts with the mapped layout's magic. */
static inline int fy_snap_is_mapped(const uint8_t *in, size_t len)
{
	return len >= 8 && memcmp(in, FY_SNAP_MAGIC, 8) == 0;
}

/* The page hash the table holds for page @global_page: XXH3-64 of the
 * page seeded with its global page number. */
uint64_t fy_snap_page_hash(const void *page, uint64_t global_page);

/*
 * fy_snap_find_page() - which region and page a global page number is.
 * Return: 0 and *@region and *@page set, or -ERANGE.
 */
int fy_snap_find_page(const struct fy_snap_sb *sb, uint64_t global_page,
		      uint32_t *region, uint64_t *page);

/* The global page number of page @page of region @region. */
uint64_t fy_snap_global_page(const struct fy_snap_sb *sb, uint32_t region,
			     uint64_t page);

#endif /* FY_SNAPFILE_H */
