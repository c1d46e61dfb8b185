// SPDX-License-Identifier: MIT
/*
 * fuzz_wire.c - libFuzzer harness for the record decoder and every message
 * decoder of src/wire, the postcopy ones (src/wire/postcopy.c) included.
 *
 * The input is read as a stream of records (after a stream header if it
 * starts with the magic), twice: as it is, which mostly exercises framing
 * and checksum rejection, and with placeholder checksums filled in
 * (fuzz_common.h), which lets mutations reach the body decoders. Each body
 * goes to the decoder its record type selects; bodies of unknown types go
 * to all of them.
 *
 * Properties checked beyond "no crash, no sanitizer report":
 *  - every decoder error is one of the documented codes, and the decoders
 *    that explain their refusals always do;
 *  - decoded page lists are sorted, disjoint and within their limits, and
 *    a decoded have-map's count agrees with its bits;
 *  - an accepted record re-encodes (fy_rec_encode) to exactly its bytes,
 *    and the incremental checksum equals the one-shot one;
 *  - an accepted body re-encodes to exactly its bytes: decoders accept
 *    only the canonical encoding, so two readers can never disagree about
 *    what a record said.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ferry.h"
#include "fuzz_common.h"
#include "transport/transport.h"
#include "wire/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The body re-encoded by @enc must be the bytes the decoder accepted. */
static void same_bytes(const char *what, const struct fy_buf *enc, int rc,
		       const uint8_t *p, size_t n)
{
	FZ_ASSERT(rc == 0, "%s: decoded body does not encode again (%d)", what,
		  rc);
	FZ_ASSERT(enc->len == n && (!n || !memcmp(enc->data, p, n)),
		  "%s: decoded body encodes to different bytes (%zu vs %zu)",
		  what, enc->len, n);
}

static void decoded_rc(const char *what, int rc)
{
	FZ_ASSERT(rc == 0 || rc == -EBADMSG, "%s decoder returned %d", what, rc);
}

static void try_hello(const uint8_t *p, size_t n, struct fy_buf *b)
{
	struct fy_hello m;
	int rc = fy_hello_decode(p, n, &m);

	decoded_rc("HELLO", rc);
	if (!rc)
		same_bytes("HELLO", b, fy_hello_encode(b, &m), p, n);
}

static void try_hello_reply(const uint8_t *p, size_t n, struct fy_buf *b)
{
	struct fy_hello_reply m;
	int rc = fy_hello_reply_decode(p, n, &m);

	decoded_rc("HELLO reply", rc);
	if (!rc)
		same_bytes("HELLO reply", b, fy_hello_reply_encode(b, &m), p, n);
}

static void try_config(const uint8_t *p, size_t n, struct fy_buf *b)
{
	static struct fy_config_msg m;
	int rc = fy_config_decode(p, n, &m);

	decoded_rc("CONFIG", rc);
	if (rc)
		return;
	FZ_ASSERT(m.nregions <= FY_MAX_REGIONS, "CONFIG: %u regions accepted",
		  m.nregions);
	for (uint32_t i = 0; i < m.nregions; i++) {
		const struct fy_region_desc *r = &m.regions[i];

		FZ_ASSERT(r->size && r->size % m.page_size == 0 &&
				  r->gpa % m.page_size == 0 &&
				  r->gpa + r->size >= r->gpa,
			  "CONFIG: invalid region %u accepted", i);
	}
	same_bytes("CONFIG", b, fy_config_encode(b, &m), p, n);
}

static void try_pass_begin(const uint8_t *p, size_t n, struct fy_buf *b)
{
	struct fy_pass_begin m;
	int rc = fy_pass_begin_decode(p, n, &m);

	decoded_rc("PASS_BEGIN", rc);
	if (!rc)
		same_bytes("PASS_BEGIN", b, fy_pass_begin_encode(b, &m), p, n);
}

static void try_pass_end(const uint8_t *p, size_t n, struct fy_buf *b)
{
	struct fy_pass_end m;
	int rc = fy_pass_end_decode(p, n, &m);

	decoded_rc("PASS_END", rc);
	if (!rc)
		same_bytes("PASS_END", b, fy_pass_end_encode(b, &m), p, n);
}

static void try_pass_ack(const uint8_t *p, size_t n, struct fy_buf *b)
{
	struct fy_pass_ack m;
	int rc = fy_pass_ack_decode(p, n, &m);

	decoded_rc("PASS_END answer", rc);
	if (!rc)
		same_bytes("PASS_END answer", b, fy_pass_ack_encode(b, &m), p, n);
}

static void try_error(const uint8_t *p, size_t n, struct fy_buf *b)
{
	struct fy_error_msg m;
	int rc = fy_error_decode(p, n, &m);

	decoded_rc("ERROR/ABORT", rc);
	if (!rc)
		same_bytes("ERROR/ABORT", b, fy_error_encode(b, &m), p, n);
}

static void try_running(const uint8_t *p, size_t n, struct fy_buf *b)
{
	struct fy_running m;
	int rc = fy_running_decode(p, n, &m);

	decoded_rc("RELEASED reply", rc);
	if (!rc)
		same_bytes("RELEASED reply", b, fy_running_encode(b, &m), p, n);
}

static void try_join(const uint8_t *p, size_t n, struct fy_buf *b)
{
	struct fy_join m;
	int rc = fy_join_decode(p, n, &m);

	decoded_rc("JOIN", rc);
	if (rc)
		return;
	FZ_ASSERT(m.index > 0 && m.index < m.channels && m.channels <= 64,
		  "JOIN: index %u of %u channels accepted", m.index,
		  m.channels);
	same_bytes("JOIN", b, fy_join_encode(b, &m), p, n);
}

static void try_mem_hdr(const uint8_t *p, size_t n)
{
	struct fy_mem_hdr m;
	uint8_t again[FY_MEM_HDR_SIZE];

	if (n < FY_MEM_HDR_SIZE)
		return;
	fy_mem_hdr_decode(p, &m);
	fy_mem_meta_len(&m);
	fy_mem_hdr_encode(&m, again);
	FZ_ASSERT(!memcmp(again, p, FY_MEM_HDR_SIZE),
		  "MEMORY header does not encode back to its bytes");
}

/* A decoder that explains a refusal must explain every one. */
static void refused_with_reason(const char *what, int rc, const char *err)
{
	FZ_ASSERT(rc == 0 || rc == -EBADMSG, "%s decoder returned %d", what, rc);
	FZ_ASSERT(rc == 0 || err[0], "%s refused without a reason", what);
}

/* A decoded page list is what its decoder promised: sorted, disjoint,
 * non-empty ranges within the limits, summing to l->pages. */
static void check_list(const char *what, const struct fy_page_list *l,
		       uint32_t max_count, uint64_t max_pages, size_t n)
{
	struct fy_page_range r, prev = { 0 };
	uint64_t sum = 0;

	FZ_ASSERT(l->count <= max_count, "%s: %u entries", what, l->count);
	FZ_ASSERT(n == FY_PAGE_LIST_HDR + (size_t)l->count * FY_PAGE_RANGE_SIZE,
		  "%s: %u entries in %zu bytes", what, l->count, n);
	for (uint32_t i = 0; i < l->count; i++) {
		fy_page_list_get(l, i, &r);
		FZ_ASSERT(r.pages && r.pages <= max_pages &&
				  r.first <= UINT64_MAX - r.pages,
			  "%s: entry %u accepted with %llu+%llu", what, i,
			  (unsigned long long)r.first,
			  (unsigned long long)r.pages);
		FZ_ASSERT(!i || r.region > prev.region ||
				  (r.region == prev.region &&
				   r.first >= prev.first + prev.pages),
			  "%s: entry %u out of order accepted", what, i);
		sum += r.pages;
		prev = r;
	}
	FZ_ASSERT(sum == l->pages, "%s: total %llu, entries sum to %llu", what,
		  (unsigned long long)l->pages, (unsigned long long)sum);
}

/* Decode, check, encode again from the entries: the same bytes. */
static void try_list(const char *what, bool req, const uint8_t *p, size_t n,
		     struct fy_buf *b)
{
	struct fy_page_range *r;
	struct fy_page_list l;
	char err[256] = "";
	int rc = req ? fy_page_req_decode(p, n, &l, err, sizeof(err))
		     : fy_discard_decode(p, n, &l, err, sizeof(err));

	refused_with_reason(what, rc, err);
	if (rc)
		return;
	check_list(what, &l, req ? FY_PAGE_REQ_MAX : FY_DISCARD_MAX,
		   req ? FY_PAGE_REQ_MAX_PAGES : UINT64_MAX, n);
	/* Bounded by the body: 24 bytes per entry. */
	r = calloc(l.count ? l.count : 1, sizeof(*r));
	if (!r)
		return;
	for (uint32_t i = 0; i < l.count; i++)
		fy_page_list_get(&l, i, &r[i]);
	same_bytes(what, b, req ? fy_page_req_encode(b, r, l.count)
				: fy_discard_encode(b, r, l.count), p, n);
	free(r);
}

static void try_discard(const uint8_t *p, size_t n, struct fy_buf *b)
{
	try_list("DISCARD", false, p, n, b);
}

static void try_page_req(const uint8_t *p, size_t n, struct fy_buf *b)
{
	try_list("PAGE_REQ", true, p, n, b);
}

static void try_postcopy(const uint8_t *p, size_t n, struct fy_buf *b)
{
	struct fy_postcopy m;
	int rc = fy_postcopy_decode(p, n, &m);

	decoded_rc("POSTCOPY", rc);
	if (!rc)
		same_bytes("POSTCOPY", b, fy_postcopy_encode(b, &m), p, n);
}

static void try_postcopy_end(const uint8_t *p, size_t n, struct fy_buf *b)
{
	struct fy_postcopy_end m;
	int rc = fy_postcopy_end_decode(p, n, &m);

	decoded_rc("POSTCOPY_END", rc);
	if (!rc)
		same_bytes("POSTCOPY_END", b, fy_postcopy_end_encode(b, &m), p,
			   n);
}

static void try_resume(const uint8_t *p, size_t n, struct fy_buf *b)
{
	struct fy_resume m;
	int rc = fy_resume_decode(p, n, &m);

	decoded_rc("RESUME", rc);
	if (rc)
		return;
	FZ_ASSERT(m.generation > 0, "RESUME: generation 0 accepted");
	same_bytes("RESUME", b, fy_resume_encode(b, &m), p, n);
}

/* The have-map: its count agrees with its bits, its bits stay within the
 * regions, and it encodes back from host-order copies of its words. */
static void try_have_map(const uint8_t *p, size_t n, struct fy_buf *b)
{
	static struct fy_have_map m, again;
	uint64_t total = 0;
	uint64_t *words[FY_MAX_REGIONS] = { 0 };
	char err[256] = "";
	int rc = fy_have_map_decode(p, n, &m, err, sizeof(err));

	refused_with_reason("RESUME answer", rc, err);
	if (rc)
		return;
	FZ_ASSERT(m.nregions >= 1 && m.nregions <= FY_MAX_REGIONS,
		  "have-map: %u regions accepted", m.nregions);
	again = m;
	for (uint32_t r = 0; r < m.nregions; r++) {
		uint64_t nw = (m.pages[r] + 63) / 64;

		total += m.pages[r];
		/* Bounded by the body: the words are in it. */
		words[r] = malloc(nw * 8);
		if (!words[r])
			goto out;
		for (uint64_t w = 0; w < nw; w++)
			words[r][w] = fy_get_u64(m.words[r] + w * 8);
		for (uint64_t pg = 0; pg < m.pages[r] && pg < 256; pg++)
			FZ_ASSERT(fy_have_map_test(&m, r, pg) ==
					  (bool)((words[r][pg / 64] >> (pg % 64)) & 1),
				  "have-map: page %llu of region %u tests wrong",
				  (unsigned long long)pg, r);
		FZ_ASSERT(!fy_have_map_test(&m, r, m.pages[r]),
			  "have-map: a page past region %u is placed", r);
		again.bits[r] = words[r];
	}
	FZ_ASSERT(total <= FY_HAVE_MAX_PAGES && m.missing <= total,
		  "have-map: %llu missing of %llu pages",
		  (unsigned long long)m.missing, (unsigned long long)total);
	same_bytes("RESUME answer", b, fy_have_map_encode(b, &again), p, n);
out:
	for (uint32_t r = 0; r < FY_MAX_REGIONS; r++)
		free(words[r]);
}

static void try_memory_fds(const uint8_t *p, size_t n, struct fy_buf *b)
{
	struct fy_memory_fds m;
	char err[160] = "";
	int rc = fy_memory_fds_decode(p, n, &m, err, sizeof(err));

	refused_with_reason("MEMORY_FDS", rc, err);
	if (!rc)
		same_bytes("MEMORY_FDS", b, fy_memory_fds_encode(b, &m), p, n);
}

static void try_device_fds(const uint8_t *p, size_t n, struct fy_buf *b)
{
	static uint32_t kind[FY_DEVFDS_MAX];
	struct fy_device_fds m = { .kind = kind };
	char err[160] = "";
	int rc = fy_device_fds_decode(p, n, &m, err, sizeof(err));

	refused_with_reason("DEVICE_FDS", rc, err);
	if (!rc)
		same_bytes("DEVICE_FDS", b, fy_device_fds_encode(b, &m), p, n);
}

static void try_units(const uint8_t *p, size_t n, struct fy_buf *b)
{
	struct fy_units m;
	int rc = fy_units_decode(p, n, &m);

	decoded_rc("DISCARD answer", rc);
	if (rc)
		return;
	for (uint32_t i = 0; i < m.nregions; i++)
		FZ_ASSERT(m.unit[i] >= 4096 && m.unit[i] <= FY_UNIT_MAX &&
				  !(m.unit[i] & (m.unit[i] - 1)),
			  "units: region %u has unit %llu", i,
			  (unsigned long long)m.unit[i]);
	same_bytes("DISCARD answer", b, fy_units_encode(b, &m), p, n);
}

/* KEEPALIVE: a body of exactly 8 bytes encodes back to itself; a longer
 * one is read for its first 8. */
static void try_keepalive(const uint8_t *p, size_t n, struct fy_buf *b)
{
	uint32_t every;
	int rc = fy_keepalive_decode(p, n, &every);

	decoded_rc("KEEPALIVE", rc);
	if (rc)
		return;
	FZ_ASSERT(every > 0 && n >= FY_KEEPALIVE_BODY_SIZE,
		  "KEEPALIVE: interval %u from %zu bytes", every, n);
	if (n == FY_KEEPALIVE_BODY_SIZE && !fy_get_u32(p + 4))
		same_bytes("KEEPALIVE", b, fy_keepalive_encode(b, every), p, n);
}

typedef void (*try_fn)(const uint8_t *p, size_t n, struct fy_buf *b);

static void body(uint32_t type, const uint8_t *p, size_t n)
{
	static const try_fn all[] = {
		try_hello, try_hello_reply, try_config, try_pass_begin,
		try_pass_end, try_pass_ack, try_error, try_running, try_join,
		try_discard, try_page_req, try_postcopy, try_postcopy_end,
		try_resume, try_have_map, try_units, try_memory_fds,
		try_keepalive,
	};
	struct fy_buf b;

	fy_buf_init(&b);
	switch (type) {
	case FY_REC_HELLO:
		try_hello(p, n, &b);
		break;
	case FY_REC_CONFIG:
		try_config(p, n, &b);
		break;
	case FY_REC_PASS_BEGIN:
		try_pass_begin(p, n, &b);
		break;
	case FY_REC_PASS_END:
		try_pass_end(p, n, &b);
		break;
	case FY_REC_ABORT:
	case FY_REC_ERROR:
		try_error(p, n, &b);
		break;
	case FY_REC_JOIN:
		try_join(p, n, &b);
		break;
	case FY_REC_OK:
		try_hello_reply(p, n, &b);
		fy_buf_reset(&b);
		try_running(p, n, &b);
		fy_buf_reset(&b);
		try_pass_ack(p, n, &b);
		fy_buf_reset(&b);
		try_have_map(p, n, &b);
		fy_buf_reset(&b);
		try_units(p, n, &b);
		break;
	case FY_REC_MEMORY_FDS:
		try_memory_fds(p, n, &b);
		break;
	case FY_REC_DEVICE_FDS:
		try_device_fds(p, n, &b);
		break;
	case FY_REC_KEEPALIVE:
		try_keepalive(p, n, &b);
		break;
	case FY_REC_DISCARD:
		try_discard(p, n, &b);
		break;
	case FY_REC_PAGE_REQ:
		try_page_req(p, n, &b);
		break;
	case FY_REC_POSTCOPY:
		try_postcopy(p, n, &b);
		break;
	case FY_REC_POSTCOPY_END:
		try_postcopy_end(p, n, &b);
		break;
	case FY_REC_RESUME:
		try_resume(p, n, &b);
		break;
	case FY_REC_MEMORY:
		try_mem_hdr(p, n);
		break;
	case FY_REC_STATE:
	case FY_REC_SWITCHOVER:
	case FY_REC_RELEASED:
		break;
	default:
		for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
			fy_buf_reset(&b);
			all[i](p, n, &b);
		}
		try_mem_hdr(p, n);
		break;
	}
	fy_buf_free(&b);
}

/* An accepted record is canonical: it encodes back to its own bytes. */
static void record(const uint8_t *rec, const struct fy_rec_hdr *h,
		   const uint8_t *b, size_t used)
{
	struct fy_buf again;
	struct fy_csum cs;
	char name[16];
	int rc;

	FZ_ASSERT(used == fy_rec_wire_size(h->length),
		  "record of %u body bytes consumed %zu", h->length, used);
	fy_buf_init(&again);
	rc = fy_rec_encode(&again, h->type, h->seq, h->flags, b, h->length);
	FZ_ASSERT(rc == 0 && again.len == used && !memcmp(again.data, rec, used),
		  "accepted record 0x%x does not encode back to its bytes",
		  h->type);
	fy_buf_free(&again);
	if (!fy_csum_init(&cs)) {
		size_t covered = fy_rec_csum_len(h, b);

		FZ_ASSERT(covered <= h->length, "checksum covers %zu of %u bytes",
			  covered, h->length);
		fy_csum_reset(&cs, rec);
		fy_csum_update(&cs, b, covered / 2);
		fy_csum_update(&cs, b + covered / 2, covered - covered / 2);
		FZ_ASSERT(fy_csum_digest(&cs) == fy_get_u64(b + fy_pad8(h->length)),
			  "incremental and one-shot checksums differ");
		fy_csum_free(&cs);
	}
	/* Names of any type, into buffers of any size, stay in bounds. */
	for (size_t len = 0; len <= sizeof(name); len += 5)
		fy_rec_name(h->type, len ? name : NULL, len);
	body(h->type, b, h->length);
}

static void walk(const uint8_t *p, size_t n)
{
	size_t off = 0;

	if (n >= FY_STREAM_HDR_SIZE && !memcmp(p, FY_MAGIC, 8)) {
		uint16_t version;
		int rc = fy_stream_hdr_decode(p, &version);

		FZ_ASSERT(rc == 0 || rc == -EBADMSG || rc == FERRY_EVERSION,
			  "stream header decoder returned %d", rc);
		if (rc == 0) {
			uint8_t again[FY_STREAM_HDR_SIZE];

			fy_stream_hdr_encode(again);
			FZ_ASSERT(!memcmp(again, p, sizeof(again)),
				  "accepted stream header is not canonical");
		}
		off = FY_STREAM_HDR_SIZE;
	}
	while (off < n) {
		struct fy_rec_hdr h;
		const uint8_t *b;
		size_t used;
		int rc = fy_rec_decode(p + off, n - off, &h, &b, &used);

		if (rc) {
			FZ_ASSERT(rc == -EAGAIN || rc == -EBADMSG ||
					  rc == -EMSGSIZE || rc == FERRY_ECHECKSUM,
				  "fy_rec_decode returned %d", rc);
			FZ_ASSERT(b == NULL && used == 0,
				  "fy_rec_decode failed but reported a body");
			return;
		}
		record(p + off, &h, b, used);
		off += used;
	}
}

/*
 * The input as a migration URI (up to its first NUL): parsed or refused
 * with a reason, and a parsed one has a kind and its parts in bounds.
 */
static void try_uri(const uint8_t *data, size_t size)
{
	char s[600], err[256] = "";
	struct fy_uri u;
	size_t n = size < sizeof(s) - 1 ? size : sizeof(s) - 1;
	int rc;

	memcpy(s, data, n);
	s[n] = 0;
	rc = fy_uri_parse(s, &u, err, sizeof(err));
	FZ_ASSERT(rc == 0 || (rc == -EINVAL && err[0]),
		  "URI parser returned %d (\"%s\")", rc, err);
	if (rc)
		return;
	FZ_ASSERT(u.kind >= FY_URI_TCP && u.kind <= FY_URI_FD,
		  "URI parsed to kind %d", (int)u.kind);
	FZ_ASSERT(memchr(u.host, 0, sizeof(u.host)) &&
		  memchr(u.port, 0, sizeof(u.port)) &&
		  memchr(u.path, 0, sizeof(u.path)),
		  "URI part not terminated");
	FZ_ASSERT(u.kind != FY_URI_FD || u.fd >= 0, "fd:%d parsed", u.fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy;

	try_uri(data, size);
	walk(data, size);
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	fz_fix_checksums(copy, size, false);
	walk(copy, size);
	free(copy);
	return 0;
}
