/* SPDX-License-Identifier: MIT */
/*
 * memfds.c - the bodies of MEMORY_FDS (0x0500) and DEVICE_FDS (0x0501),
 * the records of a local migration. MEMORY_FDS says which file backs each memory region, at which offset and in
 * which page size. The descriptors themselves travel beside the bytes
 * (SCM_RIGHTS on the UNIX connection, src/transport); this body says what
 * each one is, so the destination can check it before it maps anything.
 * docs/stream-format.md ("Local migration") is the specification.
 *
 * Pure like wire.c: no I/O. The decoder accepts only the canonical
 * encoding and says why it refuses a body, since a refusal ends the
 * migration and its message is what the operator reads.
 */
#include "wire/wire.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

__attribute__((format(printf, 3, 4)))
static int refuse(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

/* Is @v a page size a backing may have? */
static bool page_size_ok(uint32_t v)
{
	return v >= FY_FDS_PAGE_MIN && v <= FY_FDS_PAGE_MAX && !(v & (v - 1));
}

/* The rules of one entry, after the one before it (@prev, or NULL). */
static int entry_check(const struct fy_memfd_entry *e,
		       const struct fy_memfd_entry *prev, uint32_t i,
		       char *err, size_t errlen)
{
	if (e->region >= FY_MAX_REGIONS)
		return refuse(err, errlen, "entry %u: region %u is beyond the %u a session has",
			      i, e->region, FY_MAX_REGIONS);
	if (prev && e->region <= prev->region)
		return refuse(err, errlen, "entry %u: region %u does not follow region %u",
			      i, e->region, prev->region);
	if (!page_size_ok(e->page_size))
		return refuse(err, errlen, "entry %u: page size %u is not a power of two from 4 KiB to 1 GiB",
			      i, e->page_size);
	if (!e->size || e->size % e->page_size || e->fd_offset % e->page_size)
		return refuse(err, errlen, "entry %u: size %llu or offset %llu is not a positive multiple of its %u-byte pages",
			      i, (unsigned long long)e->size,
			      (unsigned long long)e->fd_offset, e->page_size);
	if (e->fd_offset + e->size < e->fd_offset)
		return refuse(err, errlen, "entry %u: offset %llu + size %llu wraps",
			      i, (unsigned long long)e->fd_offset,
			      (unsigned long long)e->size);
	return 0;
}

/**
 * fy_memory_fds_encode() - append the body of MEMORY_FDS.
 * @b: the buffer.
 * @m: the entries; checked by the decoder's rules.
 *
 * Return: 0, -EINVAL (an entry the decoder would refuse), -ENOMEM.
 */
int fy_memory_fds_encode(struct fy_buf *b, const struct fy_memory_fds *m)
{
	size_t start = b->len;
	int rc = 0;

	if (!m->count || m->count > FY_MAX_REGIONS)
		return -EINVAL;
	for (uint32_t i = 0; i < m->count; i++)
		if (entry_check(&m->e[i], i ? &m->e[i - 1] : NULL, i, NULL, 0))
			return -EINVAL;
	rc = fy_buf_put_u32(b, m->count);
	if (!rc)
		rc = fy_buf_put_u32(b, 0);
	for (uint32_t i = 0; !rc && i < m->count; i++) {
		rc = fy_buf_put_u32(b, m->e[i].region);
		if (!rc)
			rc = fy_buf_put_u32(b, m->e[i].page_size);
		if (!rc)
			rc = fy_buf_put_u64(b, m->e[i].size);
		if (!rc)
			rc = fy_buf_put_u64(b, m->e[i].fd_offset);
	}
	if (rc)
		b->len = start;
	return rc;
}

/*
 * The header both bodies share (a count, a reserved word) and the length
 * it implies: the count must lie in @min..@max and the body hold exactly
 * that many @entry-byte entries. Leaves @c at the first entry.
 */
static_assert(FY_DEVFDS_HDR_SIZE == FY_FDS_HDR_SIZE,
	      "MEMORY_FDS and DEVICE_FDS share their header");

static int fds_header(struct fy_cur *c, const uint8_t *p, size_t n,
		      size_t entry, uint32_t min, uint32_t max,
		      uint32_t *count, char *err, size_t errlen)
{
	uint32_t k = 0, reserved = 0;

	*count = 0;
	if (n < FY_FDS_HDR_SIZE)
		return refuse(err, errlen, "%zu bytes, shorter than its 8-byte header", n);
	fy_cur_init(c, p, n);
	fy_cur_u32(c, &k);
	fy_cur_u32(c, &reserved);
	if (reserved)
		return refuse(err, errlen, "reserved word is 0x%x, not 0", reserved);
	if (k < min || k > max)
		return refuse(err, errlen, "%u entries: it must be %u to %u", k,
			      min, max);
	if (n != FY_FDS_HDR_SIZE + (size_t)k * entry)
		return refuse(err, errlen, "%zu bytes for %u entries (%zu expected)",
			      n, k, FY_FDS_HDR_SIZE + (size_t)k * entry);
	*count = k;
	return 0;
}

/**
 * fy_memory_fds_decode() - decode and check the body of MEMORY_FDS.
 * @p: the body.
 * @n: its length.
 * @m: receives the entries.
 * @err: receives why a body is refused (may be NULL).
 * @errlen: size of @err.
 *
 * Return: 0, or -EBADMSG (short, long, a reserved word not zero, a count
 * or an entry out of its rules).
 */
int fy_memory_fds_decode(const uint8_t *p, size_t n, struct fy_memory_fds *m,
			 char *err, size_t errlen)
{
	struct fy_cur c;
	int rc;

	memset(m, 0, sizeof(*m));
	rc = fds_header(&c, p, n, FY_FDS_ENTRY_SIZE, 1, FY_MAX_REGIONS,
			&m->count, err, errlen);
	if (rc)
		return rc;
	for (uint32_t i = 0; i < m->count; i++) {
		struct fy_memfd_entry *e = &m->e[i];

		fy_cur_u32(&c, &e->region);
		fy_cur_u32(&c, &e->page_size);
		fy_cur_u64(&c, &e->size);
		fy_cur_u64(&c, &e->fd_offset);
		rc = entry_check(e, i ? &m->e[i - 1] : NULL, i, err, errlen);
		if (rc)
			return rc;
	}
	return fy_cur_done(&c) ? refuse(err, errlen, "malformed") : 0;
}

/* Is @k a descriptor kind this version knows? */
static bool devfd_kind_ok(uint32_t k)
{
	return k == FY_DEVFD_SOCKET || k == FY_DEVFD_OTHER;
}

/**
 * fy_device_fds_encode() - append the body of DEVICE_FDS.
 * @b: the buffer.
 * @m: the kinds of the descriptors, in the order they travel.
 *
 * Return: 0, -EINVAL (a count over FY_DEVFDS_MAX or an unknown kind),
 * -ENOMEM.
 */
int fy_device_fds_encode(struct fy_buf *b, const struct fy_device_fds *m)
{
	size_t start = b->len;
	int rc;

	if (m->count > FY_DEVFDS_MAX)
		return -EINVAL;
	for (uint32_t i = 0; i < m->count; i++)
		if (!devfd_kind_ok(m->kind[i]))
			return -EINVAL;
	rc = fy_buf_put_u32(b, m->count);
	if (!rc)
		rc = fy_buf_put_u32(b, 0);
	for (uint32_t i = 0; !rc && i < m->count; i++) {
		rc = fy_buf_put_u32(b, m->kind[i]);
		if (!rc)
			rc = fy_buf_put_u32(b, 0);
	}
	if (rc)
		b->len = start;
	return rc;
}

/**
 * fy_device_fds_decode() - decode and check the body of DEVICE_FDS.
 * @p: the body.
 * @n: its length.
 * @m: receives the count; m->kind (room for FY_DEVFDS_MAX) the kinds.
 * @err: receives why a body is refused (may be NULL).
 * @errlen: size of @err.
 *
 * Return: 0, or -EBADMSG (short, long, a reserved word not zero, a count
 * over FY_DEVFDS_MAX, an unknown kind).
 */
int fy_device_fds_decode(const uint8_t *p, size_t n, struct fy_device_fds *m,
			 char *err, size_t errlen)
{
	struct fy_cur c;
	uint32_t reserved = 0;
	int rc;

	rc = fds_header(&c, p, n, FY_DEVFDS_ENTRY_SIZE, 0, FY_DEVFDS_MAX,
			&m->count, err, errlen);
	if (rc)
		return rc;
	for (uint32_t i = 0; i < m->count; i++) {
		fy_cur_u32(&c, &m->kind[i]);
		fy_cur_u32(&c, &reserved);
		if (!devfd_kind_ok(m->kind[i]) || reserved)
			return refuse(err, errlen, "entry %u: kind %u (reserved 0x%x): a kind is 1 (socket) or 2 (other), the reserved word 0",
				      i, m->kind[i], reserved);
	}
	return fy_cur_done(&c) ? refuse(err, errlen, "malformed") : 0;
}
