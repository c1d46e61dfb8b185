// SPDX-License-Identifier: MIT
/*
 * fuzz_snapfile.c - libFuzzer harness for the superblock decoder of the
 * mapped snapshot layout (fy_snap_sb_decode, src/wire/snapfile.c).
 *
 * The input is the first bytes of a snapshot file. It is decoded twice: as
 * it is, and with a placeholder checksum (bytes 4088..4095 all zero) filled
 * in, which lets mutations of the fields get past the checksum (the seeds
 * carry placeholders, see fuzz_common.h).
 *
 * Properties checked beyond "no crash, no sanitizer report":
 *  - every error is one of the documented codes and comes with a message;
 *  - an accepted superblock encodes back to exactly its bytes;
 *  - the file size the superblock implies is accepted and one byte less is
 *    not;
 *  - the decoded layout is one a reader can trust blindly: slots after the
 *    superblock, in order, not overlapping each other or the table; table,
 *    map and state in order with room for their sizes; the page numbering
 *    of fy_snap_find_page and fy_snap_global_page agree at every region's
 *    first and last page and end at the last.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "ferry.h"
#include "fuzz_common.h"
#include "wire/snapfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The page numbering agrees both ways at both ends of every region. */
static void numbering(const struct fy_snap_sb *sb)
{
	uint64_t first = 0, page;
	uint32_t region;

	for (uint32_t i = 0; i < sb->nregions; i++) {
		uint64_t n = sb->regions[i].size / FY_MEM_PAGE;
		uint64_t ends[2] = { first, first + n - 1 };

		for (int e = 0; e < 2; e++) {
			FZ_ASSERT(fy_snap_find_page(sb, ends[e], &region,
						    &page) == 0 &&
					  region == i &&
					  fy_snap_global_page(sb, region, page) ==
						  ends[e],
				  "global page %llu is not region %u's",
				  (unsigned long long)ends[e], i);
		}
		first += n;
	}
	FZ_ASSERT(first == sb->pages, "regions hold %llu pages, sb says %llu",
		  (unsigned long long)first, (unsigned long long)sb->pages);
	FZ_ASSERT(fy_snap_find_page(sb, first, &region, &page) == -ERANGE,
		  "a page past the last one was found");
}

/* The parts of the file are where a reader may read them blindly. */
static void placement(const struct fy_snap_sb *sb)
{
	uint64_t end = FY_SNAP_SB_SIZE, data = 0;

	for (uint32_t i = 0; i < sb->nregions; i++) {
		const struct fy_snap_region *r = &sb->regions[i];

		FZ_ASSERT(r->slot_offset >= end &&
				  r->slot_offset % FY_SNAP_ALIGN == 0,
			  "region %u's slots at %llu, previous part ends at %llu",
			  i, (unsigned long long)r->slot_offset,
			  (unsigned long long)end);
		end = r->slot_offset + r->size;
		FZ_ASSERT(end > r->slot_offset, "region %u's slots wrap", i);
		data += r->data_pages;
	}
	FZ_ASSERT(sb->table_offset >= end &&
			  sb->map_offset >= sb->table_offset +
						    fy_snap_table_bytes(sb->pages) &&
			  sb->state_offset >=
				  sb->map_offset + fy_snap_map_bytes(sb->pages) &&
			  sb->table_offset % FY_SNAP_BLOCK == 0 &&
			  sb->map_offset % FY_SNAP_BLOCK == 0 &&
			  sb->state_offset % FY_SNAP_BLOCK == 0,
		  "table, map and state misplaced");
	FZ_ASSERT(sb->state_bytes >= 1 && sb->state_bytes <= FY_REC_MAX_BODY,
		  "state_bytes %llu accepted",
		  (unsigned long long)sb->state_bytes);
	FZ_ASSERT(data == sb->data_pages && data <= sb->pages,
		  "data_pages %llu accepted, regions add up to %llu",
		  (unsigned long long)sb->data_pages, (unsigned long long)data);
}

static void decode(const uint8_t *p, size_t n)
{
	static struct fy_snap_sb sb, again;
	static uint8_t enc[FY_SNAP_SB_SIZE];
	char err[256];
	uint64_t size;
	int rc;

	rc = fy_snap_sb_decode(p, n, UINT64_MAX, &sb, err, sizeof(err));
	FZ_ASSERT(rc == 0 || rc == -EBADMSG || rc == FERRY_EVERSION ||
			  rc == FERRY_ECHECKSUM,
		  "decoder returned %d", rc);
	FZ_ASSERT(rc == 0 || (err[0] && memchr(err, 0, sizeof(err))),
		  "refusal %d without a message", rc);
	if (rc)
		return;
	fy_snap_sb_encode(enc, &sb);
	FZ_ASSERT(!memcmp(enc, p, FY_SNAP_SB_SIZE),
		  "accepted superblock does not encode back to its bytes");
	placement(&sb);
	numbering(&sb);
	size = fy_snap_file_size(&sb);
	FZ_ASSERT(fy_snap_sb_decode(p, n, size, &again, err, sizeof(err)) == 0,
		  "its own file size %llu refused: %s",
		  (unsigned long long)size, err);
	FZ_ASSERT(fy_snap_sb_decode(p, n, size - 1, &again, err,
				    sizeof(err)) == -EBADMSG,
		  "a file one byte short accepted");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy;

	decode(data, size);
	if (size < FY_SNAP_SB_SIZE)
		return 0;
	copy = malloc(size);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	if (fy_get_u64(copy + FY_SNAP_SB_SIZE - 8) == 0) {
		fy_put_u64(copy + FY_SNAP_SB_SIZE - 8,
			   XXH3_64bits(copy, FY_SNAP_SB_SIZE - 8));
		decode(copy, size);
	}
	free(copy);
	return 0;
}
