// SPDX-License-Identifier: MIT
/*
 * hostile_framing.c - hostile cases about the bytes of records: the stream
 * header, memory ranges and lengths, truncated records, checksums,
 * padding, zero-page maps and compressed payloads. The protocol cases and
 * the table are in hostile_cases.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "ferry.h"
#include "hostile_cases.h"
#include "hostile_peer.h"
#include "memory/memory.h"

/* ---- cases: the stream header ---- */

static void stream_hdr_case(struct ctx *c, int field, int code)
{
	uint8_t sh[FY_STREAM_HDR_SIZE];

	if (!peer_connect(c))
		return;
	fy_stream_hdr_encode(sh);
	if (field == 0)
		sh[3] ^= 0x20; /* magic */
	if (field == 1)
		fy_put_u16(sh + 8, 2); /* version */
	if (field == 2)
		fy_put_u16(sh + 10, 1); /* flags */
	if (field != 3)
		fy_put_u32(sh + 12, XXH32(sh, 12, 0));
	else
		sh[12] ^= 1; /* checksum */
	put(c, sh, sizeof(sh));
	expect_error(c, 0, code, NULL);
}

void c_stream_magic(struct ctx *c)
{
	stream_hdr_case(c, 0, -EBADMSG);
}

void c_stream_version(struct ctx *c)
{
	stream_hdr_case(c, 1, FERRY_EVERSION);
}

void c_stream_flags(struct ctx *c)
{
	stream_hdr_case(c, 2, -EBADMSG);
}

void c_stream_checksum(struct ctx *c)
{
	stream_hdr_case(c, 3, -EBADMSG);
}

/* ---- cases: memory ranges ---- */

/* In a pass, a MEMORY record with header (@region, @mflags, @off, @len)
 * carrying @dlen data bytes: refused before any byte is written. */
static void mem_case(struct ctx *c, uint32_t region, uint32_t mflags,
		     uint64_t off, uint64_t len, size_t dlen, int code,
		     const char *text)
{
	struct fy_buf b;

	if (!in_pass(c))
		return;
	fy_buf_init(&b);
	b_mem(&b, region, mflags, off, len, dlen, 99, 0);
	hostile(c, &b, 0, code, text);
}

void c_mem_region_index(struct ctx *c)
{
	mem_case(c, 1, 0, 0, PAGE, PAGE, -ERANGE, "region 1");
}

void c_mem_region_huge(struct ctx *c)
{
	mem_case(c, UINT32_MAX, 0, 0, PAGE, PAGE, -ERANGE, "region");
}

void c_mem_offset_past_end(struct ctx *c)
{
	mem_case(c, 0, 0, c->size + PAGE, PAGE, PAGE, -ERANGE, "outside");
}

void c_mem_offset_at_end(struct ctx *c)
{
	mem_case(c, 0, 0, c->size, PAGE, PAGE, -ERANGE, "outside");
}

void c_mem_tail_past_end(struct ctx *c)
{
	mem_case(c, 0, 0, c->size - PAGE, 2 * PAGE, 2 * PAGE, -ERANGE,
		 "outside");
}

void c_mem_offset_wraps(struct ctx *c)
{
	/* offset + length overflows u64 to 0. */
	mem_case(c, 0, 0, UINT64_MAX - PAGE + 1, PAGE, PAGE, -ERANGE,
		 "outside");
}

void c_mem_length_wraps(struct ctx *c)
{
	/* offset + length overflows u64 to exactly the region end. */
	mem_case(c, 0, 0, 2 * PAGE, UINT64_MAX - PAGE + 1, PAGE, ANY_CODE,
		 NULL);
}

void c_mem_length_4gib(struct ctx *c)
{
	mem_case(c, 0, 0, 0, 4ull << 30, PAGE, ANY_CODE, NULL);
}

void c_mem_length_longer(struct ctx *c)
{
	mem_case(c, 0, 0, 0, 2 * PAGE, PAGE, -EBADMSG, NULL);
}

void c_mem_length_shorter(struct ctx *c)
{
	mem_case(c, 0, 0, 0, PAGE, 2 * PAGE, -EBADMSG, NULL);
}

void c_mem_unaligned_offset(struct ctx *c)
{
	mem_case(c, 0, 0, 100, PAGE, PAGE, -ERANGE, NULL);
}

void c_mem_unaligned_length(struct ctx *c)
{
	mem_case(c, 0, 0, 0, 104, 104, -ERANGE, NULL);
}

void c_mem_unknown_flags(struct ctx *c)
{
	/* Page kinds may claim low bits one day; the top bit is not one. */
	mem_case(c, 0, 0x80000000u, PAGE, PAGE, PAGE, ANY_CODE, NULL);
}

void c_mem_too_short(struct ctx *c)
{
	struct fy_buf b;
	uint8_t junk[8] = { 0 };

	if (!in_pass(c))
		return;
	fy_buf_init(&b);
	b_rec(&b, FY_REC_MEMORY, 0, 0, junk, sizeof(junk));
	hostile(c, &b, 0, -EBADMSG, "too short");
}

void c_rec_length_4gib(struct ctx *c)
{
	struct fy_buf b;

	if (!in_pass(c))
		return;
	fy_buf_init(&b);
	b_hdr(&b, FY_REC_MEMORY, UINT32_MAX, 0, 0);
	hostile(c, &b, 0, -EMSGSIZE, NULL);
}

void c_rec_length_over_max(struct ctx *c)
{
	struct fy_buf b;

	if (!configured(c))
		return;
	fy_buf_init(&b);
	b_hdr(&b, FY_REC_STATE, FY_REC_MAX_BODY + 1, ++c->seq, 0);
	hostile(c, &b, 0, -EMSGSIZE, NULL);
}

void c_rec_unknown_flag(struct ctx *c)
{
	struct fy_buf b;

	if (!start(c))
		return;
	fy_buf_init(&b);
	b_hello(&b, 1, 1, 1);
	fy_put_u32(b.data + 12, 0x2); /* flags */
	hostile(c, &b, 0, -EBADMSG, NULL);
}

void c_rec_csum_head_on_control(struct ctx *c)
{
	struct fy_buf b;

	if (!start(c))
		return;
	fy_buf_init(&b);
	b_hello(&b, 1, 1, 1);
	fy_put_u32(b.data + 12, FY_RF_CSUM_HEAD);
	hostile(c, &b, 0, -EBADMSG, NULL);
}

void c_rec_type_zero(struct ctx *c)
{
	struct fy_buf b;

	if (!start(c))
		return;
	fy_buf_init(&b);
	b_hdr(&b, 0, 0, 1, 0);
	hostile(c, &b, 0, -EBADMSG, NULL);
}

/* ---- cases: truncated streams (then EOF) ---- */

static void cut_at(struct ctx *c, struct fy_buf *b, size_t keep)
{
	if (keep < b->len)
		b->len = keep;
	put_buf(c, b);
	fy_buf_free(b);
	put_eof(c);
	expect_cut(c);
}

void c_cut_stream_header(struct ctx *c)
{
	uint8_t sh[FY_STREAM_HDR_SIZE];

	if (!peer_connect(c))
		return;
	fy_stream_hdr_encode(sh);
	put(c, sh, 9);
	put_eof(c);
	expect_cut(c);
}

static void cut_config(struct ctx *c, size_t keep)
{
	struct fy_buf b;

	if (!start(c) || !do_hello(c))
		return;
	fy_buf_init(&b);
	b_config(&b, ++c->seq, PAGE, 1, c->size);
	cut_at(c, &b, keep);
}

void c_cut_record_header(struct ctx *c)
{
	cut_config(c, 7);
}

void c_cut_control_body(struct ctx *c)
{
	cut_config(c, FY_REC_HDR_SIZE + 13);
}

void c_cut_before_trailer(struct ctx *c)
{
	/* CONFIG with one region "ram0": 8 + 16 + 4 + 4 = 32 body bytes. */
	cut_config(c, FY_REC_HDR_SIZE + 32);
}

void c_cut_in_trailer(struct ctx *c)
{
	cut_config(c, FY_REC_HDR_SIZE + 32 + 3);
}

static void cut_mem(struct ctx *c, size_t keep, uint64_t page)
{
	struct fy_buf b;

	if (!in_pass(c))
		return;
	fy_buf_init(&b);
	b_mem(&b, 0, 0, page * PAGE, PAGE, PAGE, 42, 0);
	/* Page data goes straight into guest memory: a cut record may
	 * leave part of its (validated, in-range) page written. */
	c->dontcare[page] = true;
	cut_at(c, &b, keep);
}

void c_cut_mem_header(struct ctx *c)
{
	cut_mem(c, FY_REC_HDR_SIZE + 10, 3);
}

void c_cut_mem_data(struct ctx *c)
{
	cut_mem(c, FY_REC_HDR_SIZE + FY_MEM_HDR_SIZE + PAGE / 2, 3);
}

void c_cut_mem_trailer(struct ctx *c)
{
	cut_mem(c, FY_REC_HDR_SIZE + FY_MEM_HDR_SIZE + PAGE, 3);
}

/* ---- cases: checksums and padding ---- */

void c_csum_header(struct ctx *c)
{
	struct fy_buf b;

	if (!start(c))
		return;
	fy_buf_init(&b);
	b_hello(&b, 1, 1, 1);
	fy_put_u32(b.data + 8, 2); /* seq changed after the checksum */
	hostile(c, &b, 2, FERRY_ECHECKSUM, NULL);
}

void c_csum_body(struct ctx *c)
{
	struct fy_buf b;
	size_t r;

	if (!start(c) || !do_hello(c))
		return;
	fy_buf_init(&b);
	b_config(&b, ++c->seq, PAGE, 1, c->size);
	r = last_rec(&b, 32);
	b.data[r + FY_REC_HDR_SIZE + 31] ^= 0x01; /* "ram0" -> "ram1" */
	hostile(c, &b, c->seq, FERRY_ECHECKSUM, NULL);
}

void c_csum_trailer(struct ctx *c)
{
	struct fy_buf b;

	if (!configured(c))
		return;
	fy_buf_init(&b);
	b_pass_begin(&b, ++c->seq, 1, 0);
	b.data[b.len - 1] ^= 0x80;
	hostile(c, &b, c->seq, FERRY_ECHECKSUM, NULL);
}

void c_csum_mem_header(struct ctx *c)
{
	struct fy_buf b;

	if (!in_pass(c))
		return;
	fy_buf_init(&b);
	b_mem(&b, 0, 0, PAGE, PAGE, PAGE, 5, FY_RF_CSUM_HEAD);
	/* Offset changed from page 1 to page 2 after the checksum. */
	fy_put_u64(b.data + FY_REC_HDR_SIZE + 8, 2 * PAGE);
	c->dontcare[2] = true;
	hostile(c, &b, 0, FERRY_ECHECKSUM, NULL);
}

void c_csum_mem_data(struct ctx *c)
{
	struct fy_buf b;

	if (!in_pass(c))
		return;
	fy_buf_init(&b);
	b_mem(&b, 0, 0, 4 * PAGE, PAGE, PAGE, 5, 0);
	b.data[FY_REC_HDR_SIZE + FY_MEM_HDR_SIZE + 100] ^= 0x10;
	c->dontcare[4] = true;
	hostile(c, &b, 0, FERRY_ECHECKSUM, NULL);
}

void c_csum_mem_trailer(struct ctx *c)
{
	struct fy_buf b;

	if (!in_pass(c))
		return;
	fy_buf_init(&b);
	b_mem(&b, 0, 0, 4 * PAGE, PAGE, PAGE, 5, FY_RF_CSUM_HEAD);
	b.data[b.len - 8] ^= 0x01;
	c->dontcare[4] = true;
	hostile(c, &b, 0, FERRY_ECHECKSUM, NULL);
}

void c_csum_optional(struct ctx *c)
{
	struct fy_buf b;
	uint8_t junk[40] = { 1, 2, 3 };

	if (!configured(c))
		return;
	fy_buf_init(&b);
	b_rec(&b, FY_REC_OPTIONAL | 0x7123, ++c->seq, 0, junk, sizeof(junk));
	b.data[b.len - 3] ^= 0x01;
	hostile(c, &b, ANY_SEQ, FERRY_ECHECKSUM, NULL);
}

void c_padding_control(struct ctx *c)
{
	struct fy_buf b;

	if (!start(c))
		return;
	fy_buf_init(&b);
	b_hello(&b, 1, 1, 1);
	/* HELLO body: 16 + 4 + 0 + 4 + 14 = 38 bytes, 2 of padding. */
	b.data[FY_REC_HDR_SIZE + 39] = 0x5a;
	hostile(c, &b, ANY_SEQ, -EBADMSG, NULL);
}

void c_padding_optional(struct ctx *c)
{
	struct fy_buf b;
	uint8_t junk[5] = { 1, 2, 3, 4, 5 };

	if (!configured(c))
		return;
	fy_buf_init(&b);
	b_rec(&b, FY_REC_OPTIONAL | 0x7123, 0, 0, junk, sizeof(junk));
	b.data[FY_REC_HDR_SIZE + 6] = 0xff;
	hostile(c, &b, ANY_SEQ, -EBADMSG, NULL);
}

/* ---- cases: zero-page maps and compressed payloads ---- */

/* A valid record of two pages at @page: the first zero by the map, the
 * second carried raw. */
static void do_zmap(struct ctx *c, uint64_t page, uint64_t tag)
{
	struct fy_mem_hdr m = { 0, FY_MEMF_ZMAP, page * PAGE, 2 * PAGE };
	uint8_t rest[8 + PAGE];
	struct fy_buf b;

	fy_put_u64(rest, 1);
	page_fill(rest + 8, PAGE, tag);
	fy_buf_init(&b);
	b_mem_body(&b, &m, rest, sizeof(rest), 0);
	put_buf(c, &b);
	fy_buf_free(&b);
	if (c->shadow) {
		memset(c->shadow + page * PAGE, 0, PAGE);
		memcpy(c->shadow + (page + 1) * PAGE, rest + 8, PAGE);
	}
	c->pass_records++;
	c->pass_bytes += 2 * PAGE;
}

/* In a pass, a MEMORY record with header @m and @n bytes after it. */
static void mem_body_case(struct ctx *c, const struct fy_mem_hdr *m,
			  const void *rest, size_t n, int code)
{
	struct fy_buf b;

	if (!in_pass(c))
		return;
	fy_buf_init(&b);
	b_mem_body(&b, m, rest, n, 0);
	hostile(c, &b, 0, code, NULL);
}

void c_zmap_bits_past_range(struct ctx *c)
{
	struct fy_mem_hdr m = { 0, FY_MEMF_ZMAP, PAGE, PAGE };
	static uint8_t rest[8 + PAGE];

	fy_put_u64(rest, 0x2); /* page 1 of a one-page range */
	mem_body_case(c, &m, rest, sizeof(rest), -EBADMSG);
}

void c_zmap_payload_mismatch(struct ctx *c)
{
	struct fy_mem_hdr m = { 0, FY_MEMF_ZMAP, PAGE, 2 * PAGE };
	static uint8_t rest[8 + 2 * PAGE];

	fy_put_u64(rest, 0x1); /* one zero page, yet two pages of data */
	mem_body_case(c, &m, rest, sizeof(rest), -EBADMSG);
}

void c_zmap_missing(struct ctx *c)
{
	/* The flag says a map follows the header; the record ends there. */
	struct fy_mem_hdr m = { 0, FY_MEMF_ZMAP, PAGE, PAGE };

	mem_body_case(c, &m, NULL, 0, -EBADMSG);
}

void c_zmap_valid_then_error(struct ctx *c)
{
	struct fy_buf b;

	if (!in_pass(c))
		return;
	do_zmap(c, 2, 21);
	fy_buf_init(&b);
	b_config(&b, ++c->seq, PAGE, 1, c->size);
	hostile(c, &b, c->seq, FERRY_EPROTO, NULL);
}

void c_codec_unknown(struct ctx *c)
{
	struct fy_mem_hdr m = { 0, 0xfu << FY_MEMF_CODEC_SHIFT, PAGE, PAGE };
	static uint8_t rest[100];

	mem_body_case(c, &m, rest, sizeof(rest), -EBADMSG);
}

/* @pages pages of compressible data packed with @kind into @out (which
 * holds @cap bytes); returns the packed size. */
static size_t pack(struct ctx *c, enum fy_codec_kind kind, size_t pages,
		   uint64_t tag, uint8_t *out, size_t cap)
{
	struct fy_codec *cd;
	uint8_t *raw = malloc(pages * PAGE);
	long n = 0;

	if (raw && !fy_codec_new(kind, 0, &cd)) {
		page_pattern(raw, pages * PAGE, tag);
		n = fy_codec_compress(cd, raw, pages * PAGE, out, cap);
		fy_codec_free(cd);
	}
	free(raw);
	if (n <= 0)
		FAIL(c, "cannot compress test data with %s", fy_codec_name(kind));
	return n > 0 ? (size_t)n : 0;
}

/* A compressed record for the last page of the region whose payload
 * unpacks to @pages pages: anything but one page must be refused without
 * a byte written past the region. */
static void packed_case(struct ctx *c, enum fy_codec_kind kind, size_t pages,
			bool half)
{
	struct fy_mem_hdr m = { 0, (uint32_t)kind << FY_MEMF_CODEC_SHIFT,
				c->size - PAGE, PAGE };
	static uint8_t out[4 * PAGE];
	size_t n = pack(c, kind, pages, 9, out, sizeof(out));

	if (half) /* a payload cut in the middle */
		n /= 2;
	if (n)
		mem_body_case(c, &m, out, n, ANY_CODE);
}

void c_lz4_garbage(struct ctx *c)
{
	struct fy_mem_hdr m = { 0, FY_CODEC_LZ4 << FY_MEMF_CODEC_SHIFT, PAGE,
				PAGE };
	uint8_t rest[100];

	page_fill(rest, sizeof(rest), 3);
	mem_body_case(c, &m, rest, sizeof(rest), ANY_CODE);
}

void c_lz4_unpacks_too_long(struct ctx *c)
{
	packed_case(c, FY_CODEC_LZ4, 3, false);
}

void c_lz4_cut_payload(struct ctx *c)
{
	packed_case(c, FY_CODEC_LZ4, 1, true);
}

void c_zstd_unpacks_too_long(struct ctx *c)
{
	packed_case(c, FY_CODEC_ZSTD, 3, false);
}

void c_zstd_cut_payload(struct ctx *c)
{
	packed_case(c, FY_CODEC_ZSTD, 1, true);
}

void c_packed_not_smaller(struct ctx *c)
{
	struct fy_mem_hdr m = { 0, FY_CODEC_ZSTD << FY_MEMF_CODEC_SHIFT, PAGE,
				PAGE };
	static uint8_t rest[PAGE];

	mem_body_case(c, &m, rest, sizeof(rest), -EBADMSG);
}

void c_zstd_valid_then_error(struct ctx *c)
{
	struct fy_mem_hdr m = { 0, FY_CODEC_ZSTD << FY_MEMF_CODEC_SHIFT,
				8 * PAGE, 2 * PAGE };
	static uint8_t out[2 * PAGE];
	struct fy_buf b;
	size_t n;

	if (!in_pass(c))
		return;
	n = pack(c, FY_CODEC_ZSTD, 2, 17, out, sizeof(out));
	if (!n)
		return;
	fy_buf_init(&b);
	b_mem_body(&b, &m, out, n, 0);
	if (c->shadow)
		page_pattern(c->shadow + 8 * PAGE, 2 * PAGE, 17);
	c->pass_records++;
	c->pass_bytes += 2 * PAGE;
	b_pass_end(&b, ++c->seq, c->pass, c->pass_records + 1,
		   c->pass_bytes);
	hostile(c, &b, c->seq, FERRY_EPROTO, NULL);
}
