// SPDX-License-Identifier: MIT
/*
 * fuzz_common.c - placeholder checksums and failure reports for the
 * harnesses (fuzz_common.h).
 */
#include "fuzz_common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "wire/wire.h"

static bool all_zero(const uint8_t *p, size_t n)
{
	while (n--)
		if (*p++)
			return false;
	return true;
}

void fz_fix_checksums(uint8_t *p, size_t n, bool stream)
{
	size_t off = 0;

	if (!stream && n >= 8 && !memcmp(p, FY_MAGIC, 8))
		stream = true;
	if (stream) {
		if (n < FY_STREAM_HDR_SIZE)
			return;
		if (all_zero(p + 12, 4))
			fy_put_u32(p + 12, XXH32(p, 12, 0));
		off = FY_STREAM_HDR_SIZE;
	}
	while (n - off >= FY_REC_HDR_SIZE) {
		uint8_t *raw = p + off, *body = raw + FY_REC_HDR_SIZE;
		struct fy_rec_hdr h;
		uint8_t *trailer;

		/* Fields only: a header the reader refuses still has a
		 * checksum a mutation may want to get right. */
		fy_rec_hdr_decode(raw, &h);
		if (fy_pad8(h.length) + FY_REC_TRAILER_SIZE >
		    n - off - FY_REC_HDR_SIZE)
			return;
		trailer = body + fy_pad8(h.length);
		/* What the checksum covers is the wire layer's decision
		 * (the memory meta with FY_RF_CSUM_HEAD). */
		if (all_zero(trailer, FY_REC_TRAILER_SIZE))
			fy_put_u64(trailer, fy_rec_csum(raw, body,
							fy_rec_csum_len(&h, body)));
		off += fy_rec_wire_size(h.length);
	}
}

void fz_fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\n==== property broken: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}
