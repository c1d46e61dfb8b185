// SPDX-License-Identifier: MIT
/*
 * snapinfo.c - reading a mapped snapshot file by offset: positioned reads,
 * the superblock, and ferry_snapshot_describe(), which tells a VMM what
 * guest a snapshot holds (regions, device state) before it restores it.
 *
 * Unlike the stream inspector, everything here uses pread on a regular
 * file: the mapped layout (src/wire/snapfile.h) puts each part at an offset
 * the superblock gives, so a reader goes straight to it.
 */
#include "inspect/inspect.h"
#include "transport/transport.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

/**
 * fy_snap_read_sb() - read and decode the superblock of a mapped file.
 * @fd: the file.
 * @base: the file offset where the snapshot starts (0 for a file of its
 *        own).
 * @size: the snapshot's size in bytes (from @base to the end of the file),
 *        or UINT64_MAX to skip the size check.
 * @sb: receives the superblock.
 * @err: receives what is wrong, without an offset.
 * @errlen: size of @err.
 *
 * A stream-format file (magic FERRYMIG) is refused with a message saying
 * what it is: an older ferry's snapshot, restored only with the VM's own
 * options, since a stream does not describe the VM before its records.
 *
 * Return: 0, -EBADMSG, FERRY_EVERSION, FERRY_ECHECKSUM or a read error.
 */
int fy_snap_read_sb(int fd, uint64_t base, uint64_t size,
		    struct fy_snap_sb *sb, char *err, size_t errlen)
{
	uint8_t *b = malloc(FY_SNAP_SB_SIZE);
	size_t got;
	int rc;

	if (!b)
		return -ENOMEM;
	rc = fy_pread_full(fd, b, FY_SNAP_SB_SIZE, base, &got);
	if (rc) {
		snprintf(err, errlen, "cannot read the superblock: %s",
			 strerror(-rc));
	} else if (got >= 8 && !memcmp(b, FY_MAGIC, 8)) {
		snprintf(err, errlen,
			 "a stream-format snapshot (magic " FY_MAGIC ", written "
			 "by an older ferry): it does not describe the VM; "
			 "restore it with the VM's options (its memory regions "
			 "and devices)");
		rc = -EBADMSG;
	} else if (got < FY_SNAP_SB_SIZE && !fy_snap_is_mapped(b, got)) {
		snprintf(err, errlen, "not a ferry snapshot file (%zu bytes, "
			 "no magic " FY_SNAP_MAGIC ")", got);
		rc = -EBADMSG;
	} else if (got < FY_SNAP_SB_SIZE) {
		snprintf(err, errlen, "the file is %zu bytes, shorter than "
			 "its %u-byte superblock (truncated)", got,
			 FY_SNAP_SB_SIZE);
		rc = -EBADMSG;
	} else {
		rc = fy_snap_sb_decode(b, got, size, sb, err, errlen);
	}
	free(b);
	return rc;
}

/* Copy what a VMM needs to know from @sb into @info. */
static void fill_info(const struct fy_snap_sb *sb,
		      struct ferry_snapshot_info *info)
{
	static_assert(FERRY_SNAPSHOT_MAX_REGIONS == FY_SNAP_MAX_REGIONS,
		      "ferry_snapshot_info holds every region of a file");
	static_assert(sizeof(info->regions[0].name) ==
			      sizeof(sb->regions[0].name),
		      "region names have one size");

	memset(info, 0, sizeof(*info));
	info->format_version = sb->version;
	info->page_size = sb->page_size;
	info->nregions = sb->nregions;
	for (uint32_t i = 0; i < sb->nregions; i++) {
		info->regions[i].gpa = sb->regions[i].gpa;
		info->regions[i].size = sb->regions[i].size;
		info->regions[i].data_pages = sb->regions[i].data_pages;
		memcpy(info->regions[i].name, sb->regions[i].name,
		       sizeof(info->regions[i].name));
	}
	info->pages = sb->pages;
	info->data_pages = sb->data_pages;
	info->file_bytes = fy_snap_file_size(sb);
	info->image_digest = sb->table_hash;
	info->created_ns = sb->created_ns;
	info->passes = sb->passes;
	memcpy(info->software, sb->software, sizeof(info->software));
}

/*
 * Read the state section of @sb into a malloc()ed buffer and check it
 * against the superblock's hash. 0, -ENOMEM, FERRY_ECHECKSUM, -EBADMSG
 * (the file ends first) or a read error.
 */
static int read_state(int fd, const struct fy_snap_sb *sb, uint8_t **out,
		      char *err, size_t errlen)
{
	uint8_t *st = malloc(sb->state_bytes);
	uint64_t have;
	size_t got;
	int rc;

	*out = NULL;
	if (!st) {
		snprintf(err, errlen, "no memory for the %" PRIu64
			 "-byte state section", sb->state_bytes);
		return -ENOMEM;
	}
	rc = fy_pread_full(fd, st, sb->state_bytes, sb->state_offset, &got);
	if (!rc && got < sb->state_bytes)
		rc = -EBADMSG;
	if (rc) {
		snprintf(err, errlen, "offset %" PRIu64 ": cannot read the "
			 "state section: %s", sb->state_offset + got,
			 rc == -EBADMSG ? "the file ends" : strerror(-rc));
		free(st);
		return rc;
	}
	have = XXH3_64bits(st, sb->state_bytes);
	if (have != sb->state_hash) {
		snprintf(err, errlen, "offset %" PRIu64 ": state section: "
			 "checksum 0x%016" PRIx64 " in the superblock, its "
			 "bytes hash to 0x%016" PRIx64, sb->state_offset,
			 sb->state_hash, have);
		free(st);
		return FERRY_ECHECKSUM;
	}
	*out = st;
	return 0;
}

FERRY_API int ferry_snapshot_describe(const char *path,
				      struct ferry_snapshot_info *info,
				      void **state, size_t *state_len,
				      char *err, size_t errlen)
{
	struct fy_snap_sb *sb = NULL;
	char why[512] = "";
	uint8_t *st = NULL;
	struct stat s;
	int fd = -1, rc;

	if (err && errlen)
		err[0] = '\0';
	if (state)
		*state = NULL;
	if (state_len)
		*state_len = 0;
	if (!path || !info || !state != !state_len) {
		snprintf(why, sizeof(why), "a path and info are needed, and "
			 "state with state_len");
		rc = -EINVAL;
		goto out;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &s)) {
		rc = -errno;
		snprintf(why, sizeof(why), "cannot open: %s", strerror(errno));
		goto out;
	}
	sb = malloc(sizeof(*sb));
	if (!sb) {
		rc = -ENOMEM;
		snprintf(why, sizeof(why), "out of memory");
		goto out;
	}
	rc = fy_snap_read_sb(fd, 0, (uint64_t)s.st_size, sb, why, sizeof(why));
	if (!rc)
		rc = read_state(fd, sb, &st, why, sizeof(why));
	if (rc)
		goto out;
	fill_info(sb, info);
	if (state) {
		*state = st;
		*state_len = sb->state_bytes;
		st = NULL;
	}
out:
	if (rc && err && errlen)
		snprintf(err, errlen, "%s: %s", path ? path : "(null)", why);
	free(st);
	free(sb);
	if (fd >= 0)
		close(fd);
	return rc;
}
