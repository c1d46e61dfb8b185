/* SPDX-License-Identifier: MIT */
/*
 * postcopy.c - the bodies of the postcopy and recovery records (0x0400-0x04ff):
 * DISCARD, POSTCOPY, PAGE_REQ, POSTCOPY_END, RESUME and the have-map that
 * answers RESUME. docs/stream-format.md ("Postcopy") is the specification.
 *
 * Pure like wire.c: no I/O, no logging. The variable-length bodies (page
 * lists, the have-map) are validated whole and then read in place through
 * a view, so a decoder never allocates and never holds more than the
 * record's own bytes. Decoders that can fail for several reasons say which
 * in @err, because these records arrive after the guest may have run at
 * the destination, where a vague "malformed" is no help to an operator.
 */
#include "wire/wire.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "ferry.h"

/**
 * fy_caps_settle() - the negotiated capability set as both sides use it.
 * @caps: the intersection, already limited to the version's bits.
 *
 * Postcopy pushes the background pages over data connections, so it is
 * dropped when multi-channel is not in the set.
 *
 * Return: @caps, without FERRY_CAP_POSTCOPY when it cannot be used.
 */
uint64_t fy_caps_settle(uint64_t caps)
{
	if (!(caps & FERRY_CAP_MULTI_CHANNEL))
		caps &= ~FERRY_CAP_POSTCOPY;
	return caps;
}

__attribute__((format(printf, 3, 4)))
static int why(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

/* Encoders leave nothing behind on failure (as in wire.c). */
static int enc_finish(struct fy_buf *b, size_t start, int rc)
{
	if (rc)
		b->len = start;
	return rc;
}

/* ---- page lists: DISCARD and PAGE_REQ ---- */

/* Limits that differ between the two lists. */
struct list_rules {
	const char *what;
	uint32_t min_count;
	uint32_t max_count;
	uint64_t max_pages; /* per entry */
};

static const struct list_rules discard_rules = {
	"DISCARD", 0, FY_DISCARD_MAX, UINT64_MAX
};
static const struct list_rules page_req_rules = {
	"PAGE_REQ", 1, FY_PAGE_REQ_MAX, FY_PAGE_REQ_MAX_PAGES
};

/*
 * One rule set checks both directions: an encoder refuses what the decoder
 * would refuse, so ferry never sends a list its peer rejects.
 * @prev is the previous entry (NULL for the first).
 */
static int range_check(const struct list_rules *lr, uint32_t i,
		       const struct fy_page_range *r,
		       const struct fy_page_range *prev, char *err,
		       size_t errlen)
{
	if (r->pages == 0)
		return why(err, errlen, "%s entry %u: zero pages", lr->what, i);
	if (r->pages > lr->max_pages)
		return why(err, errlen,
			   "%s entry %u: %llu pages, more than %llu",
			   lr->what, i, (unsigned long long)r->pages,
			   (unsigned long long)lr->max_pages);
	if (r->first > UINT64_MAX - r->pages)
		return why(err, errlen, "%s entry %u: pages %llu+%llu wrap",
			   lr->what, i, (unsigned long long)r->first,
			   (unsigned long long)r->pages);
	if (prev && (r->region < prev->region ||
		     (r->region == prev->region &&
		      r->first < prev->first + prev->pages)))
		return why(err, errlen,
			   "%s entry %u (region %u, page %llu) is not after entry %u (region %u, pages %llu+%llu): entries must be sorted and must not overlap",
			   lr->what, i, r->region,
			   (unsigned long long)r->first, i - 1, prev->region,
			   (unsigned long long)prev->first,
			   (unsigned long long)prev->pages);
	return 0;
}

static int list_encode(const struct list_rules *lr, struct fy_buf *b,
		       const struct fy_page_range *r, uint32_t n)
{
	size_t start = b->len;
	uint64_t total = 0;
	int rc;

	if (n < lr->min_count || n > lr->max_count)
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++) {
		if (range_check(lr, i, &r[i], i ? &r[i - 1] : NULL, NULL, 0) ||
		    total > UINT64_MAX - r[i].pages)
			return -EINVAL;
		total += r[i].pages;
	}
	rc = fy_buf_reserve(b, FY_PAGE_LIST_HDR + (size_t)n * FY_PAGE_RANGE_SIZE);
	if (!rc)
		rc = fy_buf_put_u32(b, n);
	if (!rc)
		rc = fy_buf_put_u32(b, 0);
	for (uint32_t i = 0; !rc && i < n; i++) {
		rc = fy_buf_put_u32(b, r[i].region);
		if (!rc)
			rc = fy_buf_put_u32(b, 0);
		if (!rc)
			rc = fy_buf_put_u64(b, r[i].first);
		if (!rc)
			rc = fy_buf_put_u64(b, r[i].pages);
	}
	return enc_finish(b, start, rc);
}

static void entry_at(const uint8_t *e, struct fy_page_range *r)
{
	r->region = fy_get_u32(e);
	r->first = fy_get_u64(e + 8);
	r->pages = fy_get_u64(e + 16);
}

static int list_decode(const struct list_rules *lr, const uint8_t *p,
		       size_t n, struct fy_page_list *l, char *err,
		       size_t errlen)
{
	struct fy_page_range prev = { 0 }, cur;
	uint32_t count;

	l->entries = NULL;
	l->count = 0;
	l->pages = 0;
	if (n < FY_PAGE_LIST_HDR)
		return why(err, errlen, "%s body of %zu bytes is shorter than its header",
			   lr->what, n);
	count = fy_get_u32(p);
	if (fy_get_u32(p + 4) != 0)
		return why(err, errlen, "%s reserved field is not 0", lr->what);
	if (count < lr->min_count || count > lr->max_count)
		return why(err, errlen, "%s count %u outside %u..%u", lr->what,
			   count, lr->min_count, lr->max_count);
	/* count is bounded above, so the product cannot overflow. */
	if (n - FY_PAGE_LIST_HDR != (size_t)count * FY_PAGE_RANGE_SIZE)
		return why(err, errlen,
			   "%s of %u entries must be %zu bytes, not %zu",
			   lr->what, count,
			   FY_PAGE_LIST_HDR + (size_t)count * FY_PAGE_RANGE_SIZE,
			   n);
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *e = p + FY_PAGE_LIST_HDR +
				   (size_t)i * FY_PAGE_RANGE_SIZE;
		int rc;

		if (fy_get_u32(e + 4) != 0)
			return why(err, errlen,
				   "%s entry %u: reserved field is not 0",
				   lr->what, i);
		entry_at(e, &cur);
		rc = range_check(lr, i, &cur, i ? &prev : NULL, err, errlen);
		if (rc)
			return rc;
		/* Sorted, disjoint ranges of a u64 page space: the sum of
		 * one region's ranges cannot overflow, but 2^32 regions'
		 * could. */
		if (l->pages > UINT64_MAX - cur.pages)
			return why(err, errlen, "%s: page total overflows",
				   lr->what);
		l->pages += cur.pages;
		prev = cur;
	}
	l->entries = p + FY_PAGE_LIST_HDR;
	l->count = count;
	return 0;
}

/**
 * fy_discard_encode() - append a DISCARD body.
 * @b: the buffer.
 * @r: the ranges, sorted by (region, first page), not overlapping.
 * @n: how many (0..FY_DISCARD_MAX; 0 is a valid, empty DISCARD).
 *
 * Return: 0, -ENOMEM, or -EINVAL (a list the decoder would refuse).
 */
int fy_discard_encode(struct fy_buf *b, const struct fy_page_range *r,
		      uint32_t n)
{
	return list_encode(&discard_rules, b, r, n);
}

/**
 * fy_discard_decode() - validate a DISCARD body and view its ranges.
 * @p: the body.
 * @n: its length.
 * @l: receives the view (into @p) and the page total.
 * @err: receives the reason on failure; may be NULL.
 * @errlen: size of @err.
 *
 * Return: 0, or -EBADMSG (trailing or missing bytes, a reserved field not
 * 0, an empty, wrapping, unsorted or overlapping range).
 */
int fy_discard_decode(const uint8_t *p, size_t n, struct fy_page_list *l,
		      char *err, size_t errlen)
{
	return list_decode(&discard_rules, p, n, l, err, errlen);
}

/**
 * fy_page_req_encode() - append a PAGE_REQ body.
 * @b: the buffer.
 * @r: the ranges, sorted and not overlapping, each at most
 *     FY_PAGE_REQ_MAX_PAGES pages.
 * @n: how many (1..FY_PAGE_REQ_MAX).
 *
 * Return: 0, -ENOMEM, or -EINVAL.
 */
int fy_page_req_encode(struct fy_buf *b, const struct fy_page_range *r,
		       uint32_t n)
{
	return list_encode(&page_req_rules, b, r, n);
}

/**
 * fy_page_req_decode() - validate a PAGE_REQ body and view its ranges.
 * @p: the body.
 * @n: its length.
 * @l: receives the view.
 * @err: receives the reason on failure; may be NULL.
 * @errlen: size of @err.
 *
 * Return: 0, or -EBADMSG (as fy_discard_decode(), and also an empty
 * request, more than FY_PAGE_REQ_MAX entries or an entry over
 * FY_PAGE_REQ_MAX_PAGES).
 */
int fy_page_req_decode(const uint8_t *p, size_t n, struct fy_page_list *l,
		       char *err, size_t errlen)
{
	return list_decode(&page_req_rules, p, n, l, err, errlen);
}

/**
 * fy_page_list_get() - entry @i of a decoded list.
 * @l: the view from a decoder.
 * @i: index, below l->count.
 * @r: receives the entry.
 */
void fy_page_list_get(const struct fy_page_list *l, uint32_t i,
		      struct fy_page_range *r)
{
	entry_at(l->entries + (size_t)i * FY_PAGE_RANGE_SIZE, r);
}

/**
 * fy_page_list_check() - do all ranges lie inside the receiver's regions?
 * @l: a decoded list.
 * @region_pages: the 4 KiB pages of each configured region.
 * @nregions: how many regions.
 * @err: receives the reason on failure; may be NULL.
 * @errlen: size of @err.
 *
 * The decoder cannot know the regions; the receiver checks against its
 * own, never against anything the peer said.
 *
 * Return: 0, or -ERANGE.
 */
int fy_page_list_check(const struct fy_page_list *l,
		       const uint64_t *region_pages, uint32_t nregions,
		       char *err, size_t errlen)
{
	struct fy_page_range r;

	for (uint32_t i = 0; i < l->count; i++) {
		fy_page_list_get(l, i, &r);
		if (r.region >= nregions) {
			why(err, errlen, "entry %u: region %u, there are %u",
			    i, r.region, nregions);
			return -ERANGE;
		}
		if (r.first + r.pages > region_pages[r.region]) {
			why(err, errlen,
			    "entry %u: pages %llu+%llu beyond region %u's %llu pages",
			    i, (unsigned long long)r.first,
			    (unsigned long long)r.pages, r.region,
			    (unsigned long long)region_pages[r.region]);
			return -ERANGE;
		}
	}
	return 0;
}

/* ---- the answer to DISCARD: placement units ---- */

static bool unit_ok(uint64_t u)
{
	return u >= FY_MEM_PAGE && u <= FY_UNIT_MAX && !(u & (u - 1));
}

/**
 * fy_units_encode() - append the body of the OK answering DISCARD.
 * @b: the buffer.
 * @m: the units; nregions 1..FY_MAX_REGIONS, each a power of two from
 *     4096 to FY_UNIT_MAX.
 *
 * Return: 0, -ENOMEM, or -EINVAL (nothing appended).
 */
int fy_units_encode(struct fy_buf *b, const struct fy_units *m)
{
	size_t start = b->len;
	int rc;

	if (!m->nregions || m->nregions > FY_MAX_REGIONS)
		return -EINVAL;
	for (uint32_t i = 0; i < m->nregions; i++)
		if (!unit_ok(m->unit[i]))
			return -EINVAL;
	rc = fy_buf_put_u32(b, m->nregions);
	if (!rc)
		rc = fy_buf_put_u32(b, 0);
	for (uint32_t i = 0; i < m->nregions && !rc; i++)
		rc = fy_buf_put_u64(b, m->unit[i]);
	return enc_finish(b, start, rc);
}

/**
 * fy_units_decode() - decode the body of the OK answering DISCARD.
 * @p: the body.
 * @n: its length.
 * @m: receives the units.
 *
 * Return: 0, or -EBADMSG (a count, reserved field or unit out of range).
 */
int fy_units_decode(const uint8_t *p, size_t n, struct fy_units *m)
{
	struct fy_cur c;
	uint32_t reserved = 0;

	memset(m, 0, sizeof(*m));
	fy_cur_init(&c, p, n);
	fy_cur_u32(&c, &m->nregions);
	if (fy_cur_u32(&c, &reserved) || reserved || !m->nregions ||
	    m->nregions > FY_MAX_REGIONS || n != 8 + 8 * (size_t)m->nregions)
		return -EBADMSG;
	for (uint32_t i = 0; i < m->nregions; i++) {
		fy_cur_u64(&c, &m->unit[i]);
		if (!unit_ok(m->unit[i]))
			return -EBADMSG;
	}
	return fy_cur_done(&c);
}

/* ---- fixed bodies: POSTCOPY, POSTCOPY_END, RESUME ---- */

/**
 * fy_postcopy_encode() - append a POSTCOPY body.
 * @b: the buffer.
 * @m: the message.
 *
 * Return: 0, or -ENOMEM.
 */
int fy_postcopy_encode(struct fy_buf *b, const struct fy_postcopy *m)
{
	return fy_buf_put_u64(b, m->discarded);
}

/**
 * fy_postcopy_decode() - decode a POSTCOPY body.
 * @p: the body.
 * @n: its length.
 * @m: receives the message.
 *
 * Return: 0, or -EBADMSG.
 */
int fy_postcopy_decode(const uint8_t *p, size_t n, struct fy_postcopy *m)
{
	struct fy_cur c;

	fy_cur_init(&c, p, n);
	m->discarded = 0;
	fy_cur_u64(&c, &m->discarded);
	return fy_cur_done(&c);
}

/**
 * fy_postcopy_end_encode() - append a POSTCOPY_END body.
 * @b: the buffer.
 * @m: the counts; bytes a multiple of 4096.
 *
 * Return: 0, -ENOMEM, or -EINVAL.
 */
int fy_postcopy_end_encode(struct fy_buf *b, const struct fy_postcopy_end *m)
{
	size_t start = b->len;
	int rc;

	if (m->bytes % FY_MEM_PAGE)
		return -EINVAL;
	rc = fy_buf_put_u64(b, m->records);
	if (!rc)
		rc = fy_buf_put_u64(b, m->bytes);
	return enc_finish(b, start, rc);
}

/**
 * fy_postcopy_end_decode() - decode a POSTCOPY_END body.
 * @p: the body.
 * @n: its length.
 * @m: receives the counts.
 *
 * Return: 0, or -EBADMSG (also for bytes that are not whole pages).
 */
int fy_postcopy_end_decode(const uint8_t *p, size_t n,
			   struct fy_postcopy_end *m)
{
	struct fy_cur c;

	memset(m, 0, sizeof(*m));
	fy_cur_init(&c, p, n);
	fy_cur_u64(&c, &m->records);
	fy_cur_u64(&c, &m->bytes);
	if (fy_cur_done(&c) || m->bytes % FY_MEM_PAGE)
		return -EBADMSG;
	return 0;
}

/**
 * fy_resume_encode() - append a RESUME body.
 * @b: the buffer.
 * @m: the message; generation >= 1.
 *
 * Return: 0, -ENOMEM, or -EINVAL (generation 0).
 */
int fy_resume_encode(struct fy_buf *b, const struct fy_resume *m)
{
	size_t start = b->len;
	int rc;

	if (m->generation == 0)
		return -EINVAL;
	rc = fy_buf_put_u64(b, m->session_id);
	if (!rc)
		rc = fy_buf_put(b, m->token, sizeof(m->token));
	if (!rc)
		rc = fy_buf_put_u32(b, m->generation);
	if (!rc)
		rc = fy_buf_put_u32(b, 0);
	return enc_finish(b, start, rc);
}

/**
 * fy_resume_decode() - decode a RESUME body.
 * @p: the body.
 * @n: its length.
 * @m: receives the message.
 *
 * Whether the credentials and the generation are acceptable is the
 * destination's decision (constant-time token compare, generation above
 * every accepted one); only the layout is judged here.
 *
 * Return: 0, or -EBADMSG (also generation 0, reserved field not 0).
 */
int fy_resume_decode(const uint8_t *p, size_t n, struct fy_resume *m)
{
	const uint8_t *tok;
	uint32_t reserved = 1;
	struct fy_cur c;

	memset(m, 0, sizeof(*m));
	fy_cur_init(&c, p, n);
	fy_cur_u64(&c, &m->session_id);
	if (!fy_cur_bytes(&c, &tok, sizeof(m->token)))
		memcpy(m->token, tok, sizeof(m->token));
	fy_cur_u32(&c, &m->generation);
	fy_cur_u32(&c, &reserved);
	if (fy_cur_done(&c) || m->generation == 0 || reserved != 0)
		return -EBADMSG;
	return 0;
}

/* ---- the have-map answering RESUME ---- */

#define HAVE_HDR 16

/* Mask of the valid bits of a region's last word. */
static uint64_t last_word_mask(uint64_t pages)
{
	unsigned int tail = (unsigned int)(pages % 64);

	return tail ? (1ull << tail) - 1 : UINT64_MAX;
}

/* The checks the encoder applies before writing a byte; 0 or -EINVAL/
 * -EMSGSIZE. Every count is checked before any bitmap word is read, so a
 * wrong count cannot send the encoder past a caller's array. *placed
 * receives the set bits of every region. */
static int have_map_check_enc(const struct fy_have_map *m, uint64_t *placed)
{
	uint64_t total = 0;

	*placed = 0;
	if (m->nregions == 0 || m->nregions > FY_MAX_REGIONS ||
	    (m->flags & ~FY_HAVE_KNOWN))
		return -EINVAL;
	for (uint32_t r = 0; r < m->nregions; r++) {
		if (m->pages[r] == 0 || !m->bits[r])
			return -EINVAL;
		if (m->pages[r] > FY_HAVE_MAX_PAGES - total)
			return -EMSGSIZE;
		total += m->pages[r];
	}
	for (uint32_t r = 0; r < m->nregions; r++) {
		uint64_t pages = m->pages[r], words = (pages + 63) / 64;

		if (m->bits[r][words - 1] & ~last_word_mask(pages))
			return -EINVAL;
		for (uint64_t w = 0; w < words; w++)
			*placed += (uint64_t)__builtin_popcountll(m->bits[r][w]);
	}
	return 0;
}

/**
 * fy_have_map_encode() - append the body of the OK answering RESUME.
 * @b: the buffer.
 * @m: flags, nregions, and per region its page count and its bitmap in
 *     host-order u64 words (bit i of word w = page 64w + i is placed).
 *
 * "missing" is computed from the bitmaps, so the count and the map can
 * never disagree on the wire.
 *
 * Return: 0, -ENOMEM, -EINVAL (no or too many regions, an empty region,
 * an unknown flag, a bit past a region's last page), or -EMSGSIZE (more
 * than FY_HAVE_MAX_PAGES pages).
 */
int fy_have_map_encode(struct fy_buf *b, const struct fy_have_map *m)
{
	size_t start = b->len, size = HAVE_HDR;
	uint64_t placed, total = 0;
	int rc = have_map_check_enc(m, &placed);

	if (rc)
		return rc;
	for (uint32_t r = 0; r < m->nregions; r++) {
		total += m->pages[r];
		size += 8 + (size_t)(m->pages[r] + 63) / 64 * 8;
	}
	rc = fy_buf_reserve(b, size);
	if (!rc)
		rc = fy_buf_put_u32(b, m->flags);
	if (!rc)
		rc = fy_buf_put_u32(b, m->nregions);
	if (!rc)
		rc = fy_buf_put_u64(b, total - placed);
	for (uint32_t r = 0; !rc && r < m->nregions; r++) {
		uint64_t words = (m->pages[r] + 63) / 64;

		rc = fy_buf_put_u64(b, m->pages[r]);
		for (uint64_t w = 0; !rc && w < words; w++)
			rc = fy_buf_put_u64(b, m->bits[r][w]);
	}
	return enc_finish(b, start, rc);
}

/* One region of a have-map at @p + *off; advances *off. */
static int have_region_decode(const uint8_t *p, size_t n, size_t *off,
			      uint32_t r, struct fy_have_map *m,
			      uint64_t *total, uint64_t *placed, char *err,
			      size_t errlen)
{
	uint64_t pages, words;

	if (n - *off < 8)
		return why(err, errlen, "have-map: region %u is cut short", r);
	pages = fy_get_u64(p + *off);
	*off += 8;
	if (pages == 0)
		return why(err, errlen, "have-map: region %u has no pages", r);
	if (pages > FY_HAVE_MAX_PAGES - *total)
		return why(err, errlen,
			   "have-map: more than %llu pages in all",
			   (unsigned long long)FY_HAVE_MAX_PAGES);
	*total += pages;
	words = (pages + 63) / 64;
	if ((n - *off) / 8 < words)
		return why(err, errlen,
			   "have-map: region %u of %llu pages needs %llu words, the body has %zu bytes left",
			   r, (unsigned long long)pages,
			   (unsigned long long)words, n - *off);
	m->pages[r] = pages;
	m->words[r] = p + *off;
	for (uint64_t w = 0; w < words; w++)
		*placed += (uint64_t)__builtin_popcountll(
			fy_get_u64(p + *off + w * 8));
	if (fy_get_u64(p + *off + (words - 1) * 8) & ~last_word_mask(pages))
		return why(err, errlen,
			   "have-map: region %u has bits set past its last page",
			   r);
	*off += words * 8;
	return 0;
}

/**
 * fy_have_map_decode() - validate the OK body answering RESUME and view
 * its bitmaps.
 * @p: the body.
 * @n: its length.
 * @m: receives flags, nregions, missing, and per region its page count
 *     and words (pointers into @p; bits[] is cleared).
 * @err: receives the reason on failure; may be NULL.
 * @errlen: size of @err.
 *
 * The region page counts are the destination's; the source compares them
 * with its own regions.
 *
 * Return: 0, or -EBADMSG.
 */
int fy_have_map_decode(const uint8_t *p, size_t n, struct fy_have_map *m,
		       char *err, size_t errlen)
{
	uint64_t total = 0, placed = 0;
	size_t off = HAVE_HDR;
	int rc;

	memset(m, 0, sizeof(*m));
	if (n < HAVE_HDR)
		return why(err, errlen, "have-map of %zu bytes is shorter than its header",
			   n);
	m->flags = fy_get_u32(p);
	m->nregions = fy_get_u32(p + 4);
	m->missing = fy_get_u64(p + 8);
	if (m->flags & ~FY_HAVE_KNOWN)
		return why(err, errlen, "have-map: unknown flags 0x%x",
			   m->flags & ~FY_HAVE_KNOWN);
	if (m->nregions == 0 || m->nregions > FY_MAX_REGIONS)
		return why(err, errlen, "have-map: %u regions, not 1..%u",
			   m->nregions, FY_MAX_REGIONS);
	for (uint32_t r = 0; r < m->nregions; r++) {
		rc = have_region_decode(p, n, &off, r, m, &total, &placed, err,
					errlen);
		if (rc)
			return rc;
	}
	if (off != n)
		return why(err, errlen, "have-map: %zu bytes after the last region",
			   n - off);
	if (m->missing != total - placed)
		return why(err, errlen,
			   "have-map: says %llu pages are missing, its bits say %llu",
			   (unsigned long long)m->missing,
			   (unsigned long long)(total - placed));
	return 0;
}

/**
 * fy_have_map_test() - is a page placed, according to a decoded map?
 * @m: the map from fy_have_map_decode().
 * @region: the region index.
 * @page: the page within the region.
 *
 * Return: true when its bit is set; false when clear or out of range.
 */
bool fy_have_map_test(const struct fy_have_map *m, uint32_t region,
		      uint64_t page)
{
	if (region >= m->nregions || page >= m->pages[region] ||
	    !m->words[region])
		return false;
	return (fy_get_u64(m->words[region] + page / 64 * 8) >> (page % 64)) & 1;
}
