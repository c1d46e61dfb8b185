// SPDX-License-Identifier: MIT
/*
 * fuzz_memfds.c - libFuzzer harness for MEMORY_FDS and DEVICE_FDS
 * (src/wire/memfds.c), the records of a local migration that tell a
 * destination which file backs each region before it maps them over its
 * own memory, and what the devices' descriptors are before its VMM takes
 * them.
 *
 * The input is a body (tried as both), or a whole record when it starts
 * with 0x0500 or 0x0501 as its type (its checksum filled in when it is a
 * placeholder, fuzz_common.h), so mutations reach the decoders both ways.
 * DEVICE_FDS: the decoder fails only with -EBADMSG and a reason; an
 * accepted body has at most 4096 entries, each of kind 1 or 2, encodes
 * again to exactly its bytes, and one byte more or less is refused.
 *
 * Properties checked beyond "no crash, no sanitizer report":
 *  - the decoder fails only with -EBADMSG, and always says why;
 *  - an accepted body keeps every rule the destination relies on before
 *    it maps anything: 1..64 entries, regions strictly increasing and
 *    below 64, page sizes powers of two from 4 KiB to 1 GiB, sizes and
 *    offsets positive multiples of them, offset + size without wrap;
 *  - an accepted body encodes again to exactly its bytes (one canonical
 *    encoding), and one byte more or less is refused.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ferry.h"
#include "fuzz_common.h"
#include "wire/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_entries(const struct fy_memory_fds *m)
{
	FZ_ASSERT(m->count >= 1 && m->count <= FY_MAX_REGIONS,
		  "accepted %u entries", m->count);
	for (uint32_t i = 0; i < m->count; i++) {
		const struct fy_memfd_entry *e = &m->e[i];

		FZ_ASSERT(e->region < FY_MAX_REGIONS &&
				  (!i || e->region > m->e[i - 1].region),
			  "entry %u: region %u out of order", i, e->region);
		FZ_ASSERT(e->page_size >= 4096 && e->page_size <= (1u << 30) &&
				  !(e->page_size & (e->page_size - 1)),
			  "entry %u: page size %u", i, e->page_size);
		FZ_ASSERT(e->size && !(e->size % e->page_size) &&
				  !(e->fd_offset % e->page_size),
			  "entry %u: size %llu offset %llu in %u pages", i,
			  (unsigned long long)e->size,
			  (unsigned long long)e->fd_offset, e->page_size);
		FZ_ASSERT(e->fd_offset + e->size > e->fd_offset,
			  "entry %u: offset + size wraps", i);
	}
}

static void try_body(const uint8_t *p, size_t n)
{
	struct fy_memory_fds m;
	struct fy_buf b;
	char err[160] = "";
	uint8_t *copy = malloc(n + 1);
	int rc;

	if (!copy)
		return;
	/* An exact-size heap copy: reading past the body is caught. */
	memcpy(copy, p, n);
	rc = fy_memory_fds_decode(copy, n, &m, err, sizeof(err));
	FZ_ASSERT(rc == 0 || rc == -EBADMSG, "decoder returned %d", rc);
	FZ_ASSERT(rc == 0 || err[0], "refused without a reason");
	if (!rc) {
		check_entries(&m);
		fy_buf_init(&b);
		rc = fy_memory_fds_encode(&b, &m);
		FZ_ASSERT(!rc && b.len == n && !memcmp(b.data, copy, n),
			  "accepted body encodes to other bytes (%d, %zu vs %zu)",
			  rc, b.len, n);
		fy_buf_free(&b);
		FZ_ASSERT(fy_memory_fds_decode(copy, n - 1, &m, NULL, 0) ==
				  -EBADMSG,
			  "a body one byte short is accepted");
		copy[n] = 0;
		FZ_ASSERT(fy_memory_fds_decode(copy, n + 1, &m, NULL, 0) ==
				  -EBADMSG,
			  "a body one byte long is accepted");
	}
	free(copy);
}

static void try_devices(const uint8_t *p, size_t n)
{
	static uint32_t kind[FY_DEVFDS_MAX];
	struct fy_device_fds m = { .kind = kind };
	struct fy_buf b;
	char err[160] = "";
	uint8_t *copy = malloc(n + 1);
	int rc;

	if (!copy)
		return;
	memcpy(copy, p, n);
	rc = fy_device_fds_decode(copy, n, &m, err, sizeof(err));
	FZ_ASSERT(rc == 0 || rc == -EBADMSG, "DEVICE_FDS decoder returned %d", rc);
	FZ_ASSERT(rc == 0 || err[0], "DEVICE_FDS refused without a reason");
	if (!rc) {
		FZ_ASSERT(m.count <= FY_DEVFDS_MAX, "accepted %u descriptors",
			  m.count);
		for (uint32_t i = 0; i < m.count; i++)
			FZ_ASSERT(kind[i] == FY_DEVFD_SOCKET ||
					  kind[i] == FY_DEVFD_OTHER,
				  "entry %u: kind %u", i, kind[i]);
		fy_buf_init(&b);
		rc = fy_device_fds_encode(&b, &m);
		FZ_ASSERT(!rc && b.len == n && !memcmp(b.data, copy, n),
			  "accepted DEVICE_FDS encodes to other bytes (%d, %zu vs %zu)",
			  rc, b.len, n);
		fy_buf_free(&b);
		FZ_ASSERT(fy_device_fds_decode(copy, n - 1, &m, NULL, 0) ==
				  -EBADMSG,
			  "a DEVICE_FDS one byte short is accepted");
		copy[n] = 0;
		FZ_ASSERT(fy_device_fds_decode(copy, n + 1, &m, NULL, 0) ==
				  -EBADMSG,
			  "a DEVICE_FDS one byte long is accepted");
	}
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fy_rec_hdr h;
	const uint8_t *body;
	size_t used;
	uint8_t *rec;

	try_body(data, size);
	try_devices(data, size);
	if (size < FY_REC_HDR_SIZE || (fy_get_u32(data) != FY_REC_MEMORY_FDS &&
				       fy_get_u32(data) != FY_REC_DEVICE_FDS))
		return 0;
	rec = malloc(size);
	if (!rec)
		return 0;
	memcpy(rec, data, size);
	fz_fix_checksums(rec, size, false);
	if (!fy_rec_decode(rec, size, &h, &body, &used)) {
		if (h.type == FY_REC_MEMORY_FDS)
			try_body(body, h.length);
		else
			try_devices(body, h.length);
	}
	free(rec);
	return 0;
}
