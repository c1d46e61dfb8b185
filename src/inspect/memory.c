// SPDX-License-Identifier: MIT
/*
 * memory.c - memory records in the inspector: the same validation a
 * destination makes before writing a byte (docs/stream-format.md, "MEMORY
 * body"), without a guest to write to. The payload streams past: raw pages
 * are only checksummed; compressed ones, when checking, are decompressed
 * into a scratch buffer (one record's worth, at most 64 MiB) to prove they
 * stand for exactly the pages the zero map leaves. Nothing is kept.
 */
#include "inspect/inspect.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#define ZMAP_WORDS (sizeof(((struct fy_insp *)0)->zmap) / 8)

/* What one record says about itself. */
struct mrec {
	struct fy_mem_hdr m;
	size_t covered; /* body bytes still covered by the checksum */
	size_t meta, payload;
	uint64_t pages, zeros;
	unsigned codec;
};

/* Flags, sizes and encodings: false when the rest of the record cannot
 * be interpreted (it is then only checksummed). */
static bool check_shape(struct fy_insp *x, const struct mrec *r)
{
	const struct fy_mem_hdr *m = &r->m;
	uint64_t caps = x->hello.capabilities;

	if ((m->flags & ~FY_MEMF_KNOWN) || r->codec > FY_CODEC_ZSTD) {
		fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
				"memory record with unknown flags 0x%x", m->flags);
		return false;
	}
	if (m->length / FY_MEM_PAGE > ZMAP_WORDS * 64 || r->meta > x->h.length) {
		fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
				"memory record of %u bytes cannot describe %" PRIu64
				" bytes of memory", x->h.length, m->length);
		return false;
	}
	if (x->have_hello && (m->flags & FY_MEMF_ZMAP) &&
	    !(caps & FERRY_CAP_ZERO_PAGES))
		fy_insp_problem(x, FY_P_CONTENT, FERRY_EPROTO,
				"a zero map, but HELLO did not offer zero-pages");
	else if (x->have_hello && r->codec &&
		 !(caps & (r->codec == FY_CODEC_LZ4 ? FERRY_CAP_LZ4 :
						      FERRY_CAP_ZSTD)))
		fy_insp_problem(x, FY_P_CONTENT, FERRY_EPROTO,
				"%s-compressed, but HELLO did not offer %s",
				fy_codec_name(r->codec), fy_codec_name(r->codec));
	return true;
}

/* The range against the configured regions (without CONFIG the order
 * check already objects). */
static void check_range(struct fy_insp *x, const struct fy_mem_hdr *m)
{
	const struct fy_region_desc *reg;

	if (!x->have_config)
		return;
	if (m->region >= x->cfg.nregions) {
		fy_insp_problem(x, FY_P_CONTENT, -ERANGE,
				"memory record for region %u, only %u configured",
				m->region, x->cfg.nregions);
		return;
	}
	reg = &x->cfg.regions[m->region];
	if (m->offset % FY_MEM_PAGE || m->length % FY_MEM_PAGE ||
	    m->offset > reg->size || m->length > reg->size - m->offset)
		fy_insp_problem(x, FY_P_CONTENT, -ERANGE,
				"memory record [0x%" PRIx64 ", +0x%" PRIx64
				") outside region %s (0x%" PRIx64 " bytes)",
				m->offset, m->length, reg->name, reg->size);
}

/* Read the zero map and count the zero pages it marks. */
static int read_zmap(struct fy_insp *x, struct mrec *r)
{
	size_t words = (size_t)(r->pages + 63) / 64;
	int rc;

	r->zeros = 0;
	if (!(r->m.flags & FY_MEMF_ZMAP))
		return 0;
	rc = fy_insp_body(x, x->zmap, words * 8, &r->covered);
	if (rc)
		return rc;
	for (size_t w = 0; w < words; w++) {
		x->zmap[w] = le64toh(x->zmap[w]);
		r->zeros += (uint64_t)__builtin_popcountll(x->zmap[w]);
	}
	if (r->pages % 64 && x->zmap[words - 1] >> (r->pages % 64))
		fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
				"the zero map marks pages past the range's %" PRIu64,
				r->pages);
	return 0;
}

/* A compressed payload must decompress to exactly the non-zero pages. */
static int unpack(struct fy_insp *x, struct mrec *r)
{
	size_t raw = (size_t)(r->pages - r->zeros) * FY_MEM_PAGE;
	struct fy_codec **c = &x->codec[r->codec];
	int rc;

	fy_buf_reset(&x->packed);
	fy_buf_reset(&x->unpacked);
	if (fy_buf_reserve(&x->packed, r->payload) ||
	    fy_buf_reserve(&x->unpacked, raw))
		return -ENOMEM;
	rc = fy_insp_body(x, x->packed.data, r->payload, &r->covered);
	if (rc)
		return rc;
	if (!*c && fy_codec_new(r->codec, 0, c))
		return -ENOMEM;
	if (fy_codec_decompress(*c, x->packed.data, r->payload,
				x->unpacked.data, raw))
		fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
				"%s payload of %zu bytes does not decompress "
				"to the %zu bytes of its non-zero pages",
				fy_codec_name(r->codec), r->payload, raw);
	return 0;
}

/* The payload: its size against the pages, then read it past. */
static int payload(struct fy_insp *x, struct mrec *r)
{
	uint64_t raw = (r->pages - r->zeros) * FY_MEM_PAGE;

	r->payload = x->h.length - r->meta;
	if (!r->codec && r->payload != raw) {
		fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
				"memory record carries %zu bytes for %" PRIu64
				" non-zero pages", r->payload, r->pages - r->zeros);
	} else if (r->codec && (!r->payload || r->payload >= raw)) {
		fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
				"%s payload of %zu bytes for %" PRIu64 " bytes of "
				"pages (compression that does not shrink is sent raw)",
				fy_codec_name(r->codec), r->payload, raw);
	} else if (r->codec && fy_insp_checking(x)) {
		return unpack(x, r);
	}
	return fy_insp_body(x, NULL, r->payload, &r->covered);
}

static void account(struct fy_insp *x, const struct mrec *r, bool in_pass)
{
	struct fy_pass_sum *p = &x->pass;
	struct fy_region_sum *s;
	const struct fy_mem_hdr *m = &r->m;

	x->mem_bytes += m->length;
	if (!in_pass)
		return;
	p->records++;
	p->bytes += m->length;
	p->pages += r->pages;
	p->zero_pages += r->zeros;
	p->payload += r->payload;
	if (r->codec) {
		p->packed_records++;
		p->packed_bytes += r->payload;
	}
	if (m->region >= FY_MAX_REGIONS)
		return;
	s = &p->regions[m->region];
	if (!s->records || m->offset < s->first)
		s->first = m->offset;
	if (!s->records || m->offset > s->last)
		s->last = m->offset;
	if (m->offset + m->length > s->end)
		s->end = m->offset + m->length;
	s->records++;
	s->bytes += m->length;
}

static void record_json(struct fy_insp *x, const struct mrec *r)
{
	struct fy_js *j = &x->js;
	const struct fy_mem_hdr *m = &r->m;

	fy_js_open(j, '{');
	fy_js_u64(j, "region", m->region);
	if (x->have_config && m->region < x->cfg.nregions)
		fy_js_cstr(j, "name", x->cfg.regions[m->region].name);
	fy_js_u64(j, "offset", m->offset);
	fy_js_u64(j, "length", m->length);
	fy_js_u64(j, "pages", r->pages);
	fy_js_u64(j, "zero_pages", r->zeros);
	fy_js_cstr(j, "codec", r->codec <= FY_CODEC_ZSTD ?
			       fy_codec_name(r->codec) : "unknown");
	fy_js_u64(j, "payload", r->payload);
	fy_js_close(j, '}');
}

/* A body too short for the memory header: only its checksum is left. */
static int too_short(struct fy_insp *x)
{
	size_t covered = x->h.length;

	fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
			"memory record of %u bytes is too short (its header "
			"alone is %d)", x->h.length, FY_MEM_HDR_SIZE);
	fy_js_open(&x->js, '{');
	fy_js_u64(&x->js, "bytes", x->h.length);
	fy_js_close(&x->js, '}');
	return fy_insp_body(x, NULL, x->h.length, &covered);
}

/**
 * fy_insp_memory() - read, check and describe the body of a MEMORY record.
 * @x: the inspector, its record header read.
 * @in_pass: the record belongs to the open pass (its counts include it).
 *
 * Return: 0, -ENOMEM, -EBADMSG (the stream ends inside the record) or a
 * read error. Problems with the record are noted, not returned.
 */
int fy_insp_memory(struct fy_insp *x, bool in_pass)
{
	uint8_t raw[FY_MEM_HDR_SIZE];
	struct mrec r = { .covered = FY_MEM_HDR_SIZE };
	int rc;

	x->mem_records++;
	if (x->h.length < FY_MEM_HDR_SIZE)
		return too_short(x);
	rc = fy_insp_body(x, raw, sizeof(raw), &r.covered);
	if (rc)
		return rc;
	fy_mem_hdr_decode(raw, &r.m);
	fy_insp_index_add(x, &r.m, x->rec_off);
	/* After the transition the destination places only what it could
	 * verify first: a record whose checksum leaves its pages out is
	 * refused there. */
	if ((x->h.flags & FY_RF_CSUM_HEAD) && x->sm.state == FY_RS_POSTCOPY)
		fy_insp_problem(x, FY_P_CONTENT, FERRY_EPROTO,
				"a postcopy MEMORY record with CSUM_HEAD: its "
				"checksum must cover its pages");
	r.covered = fy_rec_csum_len(&x->h, raw) - FY_MEM_HDR_SIZE;
	r.meta = fy_mem_meta_len(&r.m);
	r.codec = (r.m.flags & FY_MEMF_CODEC_MASK) >> FY_MEMF_CODEC_SHIFT;
	if (!check_shape(x, &r)) {
		r.payload = x->h.length - FY_MEM_HDR_SIZE;
		rc = fy_insp_body(x, NULL, r.payload, &r.covered);
		record_json(x, &r);
		return rc ? rc : x->js.err;
	}
	check_range(x, &r.m);
	r.pages = r.m.length / FY_MEM_PAGE;
	rc = read_zmap(x, &r);
	if (!rc)
		rc = payload(x, &r);
	if (rc)
		return rc;
	account(x, &r, in_pass);
	record_json(x, &r);
	return x->js.err;
}

/**
 * fy_insp_pass_json() - the summary of the open pass.
 * @x: the inspector.
 * @j: the writer (reset).
 * @ended: the pass ended with its PASS_END (else the stream ended).
 */
void fy_insp_pass_json(struct fy_insp *x, struct fy_js *j, bool ended)
{
	const struct fy_pass_sum *p = &x->pass;

	fy_js_open(j, '{');
	fy_js_u64(j, "pass", p->begin.pass);
	fy_js_bool(j, "final", p->begin.final != 0);
	fy_js_u64(j, "records", p->records);
	fy_js_u64(j, "bytes", p->bytes);
	fy_js_u64(j, "pages", p->pages);
	fy_js_u64(j, "zero_pages", p->zero_pages);
	fy_js_u64(j, "payload_bytes", p->payload);
	fy_js_u64(j, "compressed_records", p->packed_records);
	fy_js_u64(j, "compressed_bytes", p->packed_bytes);
	fy_js_bool(j, "ended", ended);
	fy_js_key(j, "regions");
	fy_js_open(j, '[');
	for (unsigned i = 0; i < FY_MAX_REGIONS; i++) {
		const struct fy_region_sum *s = &p->regions[i];

		if (!s->records)
			continue;
		fy_js_key(j, NULL);
		fy_js_open(j, '{');
		fy_js_u64(j, "region", i);
		if (x->have_config && i < x->cfg.nregions)
			fy_js_cstr(j, "name", x->cfg.regions[i].name);
		fy_js_u64(j, "records", s->records);
		fy_js_u64(j, "bytes", s->bytes);
		fy_js_u64(j, "first", s->first);
		fy_js_u64(j, "last", s->last);
		fy_js_u64(j, "end", s->end);
		fy_js_close(j, '}');
	}
	fy_js_close(j, ']');
	fy_js_close(j, '}');
}

/**
 * fy_insp_mem_free() - release the scratch buffers and codecs.
 * @x: the inspector.
 */
void fy_insp_mem_free(struct fy_insp *x)
{
	fy_buf_free(&x->packed);
	fy_buf_free(&x->unpacked);
	for (size_t i = 0; i < sizeof(x->codec) / sizeof(x->codec[0]); i++)
		fy_codec_free(x->codec[i]);
}
