/* SPDX-License-Identifier: MIT */
/*
 * wire.h - the byte layout of a ferry stream: stream header, record framing
 * and every message body. Pure code: no I/O, no allocation except where a
 * function says so. See docs/stream-format.md for the specification.
 *
 * Stream header (16 bytes, sent once by the source at the start of the main
 * connection):
 *   0  u8[8] magic "FERRYMIG"
 *   8  u16   format version (FY_FORMAT_VERSION)
 *  10  u16   flags (0)
 *  12  u32   xxh32 (seed 0) of bytes 0..11
 *
 * Record (every message in both directions):
 *   0  u32   type; bit 31 set = optional (an unknown optional record is
 *            skipped, an unknown mandatory one is an error)
 *   4  u32   length of the body in bytes (without padding)
 *   8  u32   seq: request sequence number; a response echoes its request's,
 *            data records carry 0
 *  12  u32   flags (FY_RF_*)
 *  16  body[length], then zero padding to a multiple of 8
 *  ..  u64   checksum: XXH3-64 (seed 0) over the 16 header bytes followed by
 *            the covered body bytes: the whole body, or only its first
 *            FY_MEM_HDR_SIZE bytes when FY_RF_CSUM_HEAD is set
 * Total on the wire: 16 + pad8(length) + 8.
 */
#ifndef FY_WIRE_H
#define FY_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FY_MAGIC "FERRYMIG"
#define FY_FORMAT_VERSION 1
#define FY_STREAM_HDR_SIZE 16
#define FY_REC_HDR_SIZE 16
#define FY_REC_TRAILER_SIZE 8
/* Largest body a reader accepts; bigger lengths are rejected unread. */
#define FY_REC_MAX_BODY (64u << 20)

/*
 * Protocol versions this build speaks. Version 1: one connection, raw
 * memory records, data-checksum. Version 2 adds extra data connections
 * (JOIN), zero-page maps and compressed memory records.
 */
#define FY_PROTO_VERSION_MIN 1
#define FY_PROTO_VERSION_MAX 2

/*
 * The capability bits a protocol version can carry at all. Version 2
 * carries postcopy (bit 5), local-fds (bit 6), keep-alive (bit 7),
 * device-fds (bit 8) and postcopy-keepalive (bit 9) too: an older version-2
 * peer never offers them, so the intersection drops them; postcopy needs
 * the data connections that only version 2 has.
 */
static inline uint64_t fy_version_caps(uint32_t version)
{
	return version >= 2 ? 0x3ffull : 0x1ull;
}

/*
 * The negotiated set as both sides use it: postcopy pushes memory over at
 * least one data connection, so without multi-channel (e.g. a destination
 * handed one connected socket) it is dropped as well.
 */
uint64_t fy_caps_settle(uint64_t caps);

#define FY_REC_OPTIONAL 0x80000000u

/*
 * Record numbers. Ranges are reserved up front:
 *   0x0000-0x00ff control requests (source -> destination)
 *   0x0100-0x01ff responses (destination -> source)
 *   0x0200-0x02ff memory data
 *   0x0300-0x03ff device state (issue 3: schemas and values)
 *   0x0400-0x04ff postcopy and recovery (only with the postcopy
 *                 capability; see the postcopy section below)
 *   0x0500-0x05ff external resources: MEMORY_FDS (only with the
 *                 local-fds capability, on a UNIX connection),
 *                 DEVICE_FDS (with device-fds too); the rest reserved
 *   0x0600-0x06ff snapshot files (optional)
 *   0x0700-0x07ff upkeep of a session, both directions, optional:
 *                 KEEPALIVE (sent only with the keep-alive capability;
 *                 every reader skips it)
 *   0x7000-0x7fff vendor/experimental
 */
enum fy_rec_type {
	FY_REC_HELLO = 0x0001,	    /* req: version range, capabilities */
	FY_REC_CONFIG = 0x0002,	    /* req: regions and page size */
	FY_REC_PASS_BEGIN = 0x0003, /* req: a memory pass starts */
	FY_REC_PASS_END = 0x0004,   /* req: barrier; counts of the pass */
	FY_REC_STATE = 0x0005,	    /* req: device-state section (state.h) */
	FY_REC_SWITCHOVER = 0x0006, /* req: source paused, all sent; reply OK =
				       "loaded, ready to run" */
	FY_REC_RELEASED = 0x0007,   /* req: point of no return; OK = "running" */
	FY_REC_ABORT = 0x0008,	    /* req: source gives up; code + message */
	FY_REC_JOIN = 0x0009,	    /* req, first on an extra data connection:
				       session id + token */

	FY_REC_OK = 0x0100,    /* resp: seq echoes the request; body per req */
	FY_REC_ERROR = 0x0101, /* resp: code + message; connection closes */

	FY_REC_MEMORY = 0x0200, /* data: a range of guest memory */

	FY_REC_DISCARD = 0x0400,  /* req: pages the destination must drop */
	FY_REC_POSTCOPY = 0x0401, /* req: the transition; OK = "running" */
	FY_REC_PAGE_REQ = 0x0402, /* data, destination -> source: pages a
				     vCPU waits for; unanswered */
	FY_REC_POSTCOPY_END = 0x0403, /* req: every missing page was sent;
					 OK = all placed, complete */
	FY_REC_RESUME = 0x0404,	  /* req, first on a recovery connection:
				     credentials + generation; OK = have-map */

	FY_REC_MEMORY_FDS = 0x0500, /* req: the regions' backing files, their
				       descriptors attached (SCM_RIGHTS) */
	FY_REC_DEVICE_FDS = 0x0501, /* req, source paused: the devices'
				       descriptors (sockets), attached */

	/* Snapshot files (0x0600-0x06ff), optional: a live receiver skips
	 * them. */
	FY_REC_INDEX = 0x80000600u,  /* where each memory record and the state
					are in the file */
	FY_REC_FOOTER = 0x80000601u, /* last 40 bytes: where the index is */

	/* Optional, on the main connection, both ways: "alive, busy". */
	FY_REC_KEEPALIVE = 0x80000700u,
};

/* INDEX body: u32 count, u32 reserved, u64 state record offset, then per
 * memory record: u32 region, u32 reserved, u64 offset, u64 length, u64 file
 * offset of the record. FOOTER body: u64 index offset, u64 index size. */
#define FY_INDEX_HDR_SIZE 16
#define FY_INDEX_ENTRY_SIZE 32
#define FY_FOOTER_BODY_SIZE 16

/* Record flags. */
#define FY_RF_CSUM_HEAD 0x1u /* checksum covers only the memory header */

/*
 * Memory record body: a fixed header, then (FY_MEMF_ZMAP) a map of the zero
 * pages, one bit per page of the range in u64 words, set = the page is all
 * zero and carries no data; then the payload: the non-zero pages in order,
 * raw, or compressed with the codec in bits 8-11 of the flags.
 * The header and the map are the record's "meta": with FY_RF_CSUM_HEAD the
 * checksum covers exactly the meta.
 */
#define FY_MEM_HDR_SIZE 24
#define FY_MEMF_ZMAP 0x1u
#define FY_MEMF_CODEC_SHIFT 8
#define FY_MEMF_CODEC_MASK 0xf00u /* 0 raw, 1 lz4, 2 zstd */
#define FY_MEMF_KNOWN (FY_MEMF_ZMAP | FY_MEMF_CODEC_MASK)
#define FY_MEM_PAGE 4096u /* page size of memory records, protocol v1 */
struct fy_mem_hdr {
	uint32_t region; /* index into the configured regions */
	uint32_t flags;	 /* FY_MEMF_* */
	uint64_t offset; /* byte offset within the region, page aligned */
	uint64_t length; /* bytes of page data that follow, page multiple */
};

/* Little-endian helpers: the only way integers touch a buffer. */
static inline void fy_put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void fy_put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void fy_put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t fy_get_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t fy_get_u32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}
static inline uint64_t fy_get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static inline size_t fy_pad8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

/*
 * A growable byte buffer for encoding (also the implementation behind the
 * public struct ferry_buf).
 */
struct fy_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};
void fy_buf_init(struct fy_buf *b);
void fy_buf_free(struct fy_buf *b);
void fy_buf_reset(struct fy_buf *b);
int fy_buf_reserve(struct fy_buf *b, size_t extra); /* 0 or -ENOMEM */
int fy_buf_put(struct fy_buf *b, const void *p, size_t n);
int fy_buf_put_u32(struct fy_buf *b, uint32_t v);
int fy_buf_put_u64(struct fy_buf *b, uint64_t v);
int fy_buf_put_str(struct fy_buf *b, const char *s); /* u32 len + bytes */

/*
 * A bounds-checked cursor for decoding a body. Every getter returns 0 or
 * -EBADMSG when the body is too short; once a getter fails the cursor stays
 * failed, so callers may check once at the end (fy_cur_done).
 */
struct fy_cur {
	const uint8_t *p;
	size_t len;
	size_t off;
	bool bad;
};
void fy_cur_init(struct fy_cur *c, const void *p, size_t len);
int fy_cur_u32(struct fy_cur *c, uint32_t *v);
int fy_cur_u64(struct fy_cur *c, uint64_t *v);
int fy_cur_i32(struct fy_cur *c, int32_t *v);
/* A string (u32 length + bytes) copied NUL-terminated into @out; longer
 * strings than @cap-1 are an error. */
int fy_cur_str(struct fy_cur *c, char *out, size_t cap);
/* A byte run of @n bytes; *out points into the body. */
int fy_cur_bytes(struct fy_cur *c, const uint8_t **out, size_t n);
/* 0 when every byte was consumed and nothing failed, else -EBADMSG. */
int fy_cur_done(const struct fy_cur *c);

/* ---- stream header ---- */
void fy_stream_hdr_encode(uint8_t out[FY_STREAM_HDR_SIZE]);
/* 0, -EBADMSG (bad magic or checksum), FERRY_EVERSION (format version). */
int fy_stream_hdr_decode(const uint8_t in[FY_STREAM_HDR_SIZE],
			 uint16_t *version);

/* ---- record framing ---- */
struct fy_rec_hdr {
	uint32_t type; /* including FY_REC_OPTIONAL */
	uint32_t length;
	uint32_t seq;
	uint32_t flags;
};
void fy_rec_hdr_encode(const struct fy_rec_hdr *h,
		       uint8_t out[FY_REC_HDR_SIZE]);
/* Decodes and validates: length <= FY_REC_MAX_BODY, known flag bits only,
 * FY_RF_CSUM_HEAD only on memory records. 0 or -EBADMSG/-EMSGSIZE. */
int fy_rec_hdr_decode(const uint8_t in[FY_REC_HDR_SIZE],
		      struct fy_rec_hdr *h);
static inline bool fy_rec_optional(uint32_t type)
{
	return (type & FY_REC_OPTIONAL) != 0;
}
static inline uint32_t fy_rec_number(uint32_t type)
{
	return type & ~FY_REC_OPTIONAL;
}
/* Size on the wire of a record with a body of @length bytes. */
static inline size_t fy_rec_wire_size(uint32_t length)
{
	return FY_REC_HDR_SIZE + fy_pad8(length) + FY_REC_TRAILER_SIZE;
}
/* Bytes of the body the checksum covers: the whole body, or for
 * FY_RF_CSUM_HEAD the memory meta, which needs the body's first bytes
 * (@body may be NULL when the record is not FY_RF_CSUM_HEAD). */
size_t fy_rec_csum_len(const struct fy_rec_hdr *h, const uint8_t *body);

/*
 * Checksum of a record, computed incrementally so that a body received in
 * pieces (straight into guest memory) never needs to be contiguous.
 */
struct fy_csum {
	void *state; /* XXH3_state_t, allocated by fy_csum_init */
};
int fy_csum_init(struct fy_csum *c); /* 0 or -ENOMEM */
void fy_csum_free(struct fy_csum *c);
void fy_csum_reset(struct fy_csum *c, const uint8_t hdr[FY_REC_HDR_SIZE]);
void fy_csum_update(struct fy_csum *c, const void *p, size_t n);
uint64_t fy_csum_digest(struct fy_csum *c);
/* One-shot: checksum over header + body[0..covered). */
uint64_t fy_rec_csum(const uint8_t hdr[FY_REC_HDR_SIZE], const void *body,
		     size_t covered);

/*
 * Encode a whole small record (control messages) into @out: header, body,
 * padding and checksum. The body is copied. 0 or -ENOMEM/-EMSGSIZE.
 */
int fy_rec_encode(struct fy_buf *out, uint32_t type, uint32_t seq,
		  uint32_t flags, const void *body, size_t len);

/*
 * Decode a whole record from a contiguous buffer (used by tests, fuzzers
 * and file readers). On success *consumed is the wire size and *body points
 * into @in. Errors: -EAGAIN (need more bytes), -EBADMSG, -EMSGSIZE,
 * FERRY_ECHECKSUM.
 */
int fy_rec_decode(const uint8_t *in, size_t len, struct fy_rec_hdr *h,
		  const uint8_t **body, size_t *consumed);

/* ---- message bodies ---- */
#define FY_NAME_MAX 64
#define FY_MSG_MAX 256
#define FY_MAX_REGIONS 64

struct fy_hello {
	uint32_t version_min;
	uint32_t version_max;
	uint64_t capabilities;
	char boot_id[40];  /* /proc/sys/kernel/random/boot_id, or "" */
	char software[FY_NAME_MAX]; /* "ferry 0.1.0" */
};
/* Reply to HELLO (body of OK). */
struct fy_hello_reply {
	uint32_t version; /* chosen: highest common */
	uint64_t capabilities; /* intersection */
	uint64_t session_id;
	uint8_t token[16]; /* for extra channels (issue 4) */
	char boot_id[40];
	char software[FY_NAME_MAX];
};
struct fy_region_desc {
	uint64_t gpa;
	uint64_t size;
	char name[FY_NAME_MAX];
};
struct fy_config_msg {
	uint32_t page_size;
	uint32_t nregions; /* <= FY_MAX_REGIONS */
	struct fy_region_desc regions[FY_MAX_REGIONS];
};
struct fy_pass_begin {
	uint32_t pass;	     /* 1-based */
	uint32_t final;	     /* 1 when the guest is paused */
	uint64_t planned;    /* memory bytes the sender intends to send */
};
/*
 * PASS_END. With extra data connections the body goes on with one entry
 * per connection the source still uses: what it handed to that connection
 * in the pass. The totals are then the sums of the entries, and a
 * connection without an entry carried nothing the destination may wait
 * for (the source gave up on it and sent its chunks again elsewhere).
 */
#define FY_PASS_MAX_CONN 64
struct fy_pass_conn {
	uint32_t index;	  /* 0 the main connection, else its JOIN index */
	uint64_t records;
	uint64_t bytes;
};
struct fy_pass_end {
	uint32_t pass;
	uint32_t nconn;	  /* entries in conn[]; 0 = the totals only */
	uint64_t records; /* memory records sent in this pass */
	uint64_t bytes;	  /* page bytes sent in this pass */
	struct fy_pass_conn conn[FY_PASS_MAX_CONN]; /* by increasing index */
};
/*
 * OK body answering PASS_END (empty when nothing was lost): the data
 * connections listed in PASS_END that broke before delivering their
 * share. The source sends what it gave them in the pass again, later.
 */
struct fy_pass_ack {
	uint32_t nlost;
	uint32_t lost[FY_PASS_MAX_CONN - 1]; /* JOIN indices, increasing */
};
/* STATE body: a device-state section, records 0x0300-0x0302 of
 * src/state (docs/state-format.md), produced by the VMM's save_state. */
struct fy_error_msg {
	int32_t code; /* negative ferry/errno code */
	char message[FY_MSG_MAX];
};
/* JOIN: an extra data connection presents the session's credentials. */
struct fy_join {
	uint64_t session_id;
	uint8_t token[16];
	uint32_t index; /* 1..channels-1 (0 is the main connection) */
	uint32_t channels;
};
/* OK body for RELEASED: the destination's resume time and its note. */
struct fy_running {
	uint64_t resumed_ns; /* CLOCK_MONOTONIC of the destination */
	char note[256];
};

int fy_hello_encode(struct fy_buf *b, const struct fy_hello *m);
int fy_hello_decode(const uint8_t *p, size_t n, struct fy_hello *m);
int fy_hello_reply_encode(struct fy_buf *b, const struct fy_hello_reply *m);
int fy_hello_reply_decode(const uint8_t *p, size_t n,
			  struct fy_hello_reply *m);
int fy_config_encode(struct fy_buf *b, const struct fy_config_msg *m);
int fy_config_decode(const uint8_t *p, size_t n, struct fy_config_msg *m);
int fy_pass_begin_encode(struct fy_buf *b, const struct fy_pass_begin *m);
int fy_pass_begin_decode(const uint8_t *p, size_t n,
			 struct fy_pass_begin *m);
int fy_pass_end_encode(struct fy_buf *b, const struct fy_pass_end *m);
int fy_pass_end_decode(const uint8_t *p, size_t n, struct fy_pass_end *m);
int fy_pass_ack_encode(struct fy_buf *b, const struct fy_pass_ack *m);
int fy_pass_ack_decode(const uint8_t *p, size_t n, struct fy_pass_ack *m);
int fy_error_encode(struct fy_buf *b, const struct fy_error_msg *m);
int fy_error_decode(const uint8_t *p, size_t n, struct fy_error_msg *m);
int fy_join_encode(struct fy_buf *b, const struct fy_join *m);
/*
 * KEEPALIVE body (8 bytes; a longer one is read for its first 8): u32
 * interval_ms, how often the sender promises a record while it has
 * nothing else to send; u32 reserved, 0. Decode: 0 or -EBADMSG (short,
 * or an interval of 0).
 */
#define FY_KEEPALIVE_BODY_SIZE 8
int fy_keepalive_encode(struct fy_buf *b, uint32_t interval_ms);
int fy_keepalive_decode(const uint8_t *p, size_t n, uint32_t *interval_ms);
int fy_join_decode(const uint8_t *p, size_t n, struct fy_join *m);
int fy_running_encode(struct fy_buf *b, const struct fy_running *m);
int fy_running_decode(const uint8_t *p, size_t n, struct fy_running *m);
void fy_mem_hdr_encode(const struct fy_mem_hdr *m,
		       uint8_t out[FY_MEM_HDR_SIZE]);
void fy_mem_hdr_decode(const uint8_t in[FY_MEM_HDR_SIZE],
		       struct fy_mem_hdr *m);
/* Bytes of the meta (header and zero map) of a record with header @m. */
size_t fy_mem_meta_len(const struct fy_mem_hdr *m);

/*
 * ---- postcopy (src/wire/postcopy.c; docs/stream-format.md, "Postcopy") ----
 *
 * DISCARD and PAGE_REQ carry a list of page ranges in 4 KiB protocol pages:
 *   0  u32 count, 4 u32 reserved (0), then count entries of 24 bytes:
 *   0  u32 region, 4 u32 reserved (0), 8 u64 first page, 16 u64 pages
 * Entries are sorted by (region, first page), do not overlap (touching is
 * allowed), have pages >= 1 and do not wrap. DISCARD may be empty; a
 * PAGE_REQ has 1..FY_PAGE_REQ_MAX entries of at most FY_PAGE_REQ_MAX_PAGES
 * pages each. Decoders validate the whole list and then return a view
 * into the body: nothing is copied or allocated.
 */
#define FY_PAGE_RANGE_SIZE 24
#define FY_PAGE_LIST_HDR 8
#define FY_DISCARD_MAX ((FY_REC_MAX_BODY - FY_PAGE_LIST_HDR) / FY_PAGE_RANGE_SIZE)
#define FY_PAGE_REQ_MAX 1024u
#define FY_PAGE_REQ_MAX_PAGES (1u << 18) /* 1 GiB, the largest huge page */
struct fy_page_range {
	uint32_t region;
	uint64_t first; /* page number within the region (offset / 4096) */
	uint64_t pages;
};
struct fy_page_list {
	const uint8_t *entries; /* into the decoded body */
	uint32_t count;
	uint64_t pages; /* sum over the entries */
};
int fy_discard_encode(struct fy_buf *b, const struct fy_page_range *r,
		      uint32_t n);
int fy_discard_decode(const uint8_t *p, size_t n, struct fy_page_list *l,
		      char *err, size_t errlen);
int fy_page_req_encode(struct fy_buf *b, const struct fy_page_range *r,
		       uint32_t n);
int fy_page_req_decode(const uint8_t *p, size_t n, struct fy_page_list *l,
		       char *err, size_t errlen);
/* Entry @i (< l->count) of a decoded list. */
void fy_page_list_get(const struct fy_page_list *l, uint32_t i,
		      struct fy_page_range *r);
/* Every entry inside the regions of @region_pages (pages per region):
 * 0, or -ERANGE naming the first entry that is not. */
int fy_page_list_check(const struct fy_page_list *l,
		       const uint64_t *region_pages, uint32_t nregions,
		       char *err, size_t errlen);

/*
 * OK body answering DISCARD: the destination's placement unit per region,
 * the bytes it places at once (4096, or the huge page size of a hugetlb
 * mapping): 0 u32 nregions (1..64), 4 u32 reserved (0), then nregions u64
 * units, each a power of two from 4096 to 1 GiB. The source pushes and
 * answers in whole units of the destination: a unit the destination
 * misses is dropped whole, so a record covering part of it could never
 * be placed.
 */
#define FY_UNIT_MAX (1ull << 30)
struct fy_units {
	uint32_t nregions;
	uint64_t unit[FY_MAX_REGIONS];
};
int fy_units_encode(struct fy_buf *b, const struct fy_units *m);
int fy_units_decode(const uint8_t *p, size_t n, struct fy_units *m);

/* POSTCOPY: u64 discarded = distinct pages the DISCARD records named (the
 * destination checks its own count against it). OK body: struct
 * fy_running, as for RELEASED. */
struct fy_postcopy {
	uint64_t discarded;
};
/* POSTCOPY_END: MEMORY records and page bytes sent since the OK of
 * POSTCOPY or of the last RESUME, over every connection. */
struct fy_postcopy_end {
	uint64_t records;
	uint64_t bytes; /* a multiple of 4096 */
};
/* RESUME: the session's credentials (as JOIN) and the attempt number. */
struct fy_resume {
	uint64_t session_id;
	uint8_t token[16];
	uint32_t generation; /* >= 1, greater than any accepted before */
};
/*
 * OK body answering RESUME: the destination's state and the pages it has.
 *   0 u32 flags (FY_HAVE_*), 4 u32 nregions (1..64), 8 u64 missing (the
 *   clear bits of all regions), then per region: u64 pages (1..), then
 *   ceil(pages / 64) u64 words, bit i of word w = page 64w + i is placed;
 *   bits past the last page are 0. The total is at most FY_HAVE_MAX_PAGES
 *   (2 TiB less 256 MiB of 4 KiB pages) so that the body stays under
 *   FY_REC_MAX_BODY; a source does not offer postcopy for a larger guest.
 */
#define FY_HAVE_RAN 0x1u     /* the guest has run at the destination */
#define FY_HAVE_RUNNING 0x2u /* its vCPUs run now (but those on a fault) */
#define FY_HAVE_KNOWN (FY_HAVE_RAN | FY_HAVE_RUNNING)
#define FY_HAVE_MAX_PAGES ((1ull << 29) - (1ull << 16))
struct fy_have_map {
	uint32_t flags;
	uint32_t nregions;
	uint64_t missing;
	uint64_t pages[FY_MAX_REGIONS];
	/* Encoding: host-order words per region. Decoding: unused. */
	const uint64_t *bits[FY_MAX_REGIONS];
	/* Decoding: each region's little-endian words within the body. */
	const uint8_t *words[FY_MAX_REGIONS];
};
/*
 * The code of an ERROR that says positively "the guest did not run here
 * and the destination has dropped it": only an ERROR answering POSTCOPY on
 * the session's own main connection, with this code, gives the guest back
 * to the source (the message carries the cause). Not a ferry_* code: the
 * engine maps it.
 */
#define FY_ERR_NOT_RUN (-1100)

int fy_postcopy_encode(struct fy_buf *b, const struct fy_postcopy *m);
int fy_postcopy_decode(const uint8_t *p, size_t n, struct fy_postcopy *m);
int fy_postcopy_end_encode(struct fy_buf *b, const struct fy_postcopy_end *m);
int fy_postcopy_end_decode(const uint8_t *p, size_t n,
			   struct fy_postcopy_end *m);
int fy_resume_encode(struct fy_buf *b, const struct fy_resume *m);
int fy_resume_decode(const uint8_t *p, size_t n, struct fy_resume *m);
/* Encodes from m->bits and computes "missing" itself (m->missing is
 * ignored). 0, -ENOMEM, -EINVAL (a count or flag out of range, a bit past
 * a region's last page), -EMSGSIZE (over FY_HAVE_MAX_PAGES). */
int fy_have_map_encode(struct fy_buf *b, const struct fy_have_map *m);
int fy_have_map_decode(const uint8_t *p, size_t n, struct fy_have_map *m,
		       char *err, size_t errlen);
/* Is page @page of region @region placed, in a decoded map? (false when
 * out of range). */
bool fy_have_map_test(const struct fy_have_map *m, uint32_t region,
		      uint64_t page);

/*
 * ---- local migration by fds (src/wire/memfds.c; docs/stream-format.md,
 * "Local migration") ----
 *
 * MEMORY_FDS body: 0 u32 count (1..FY_MAX_REGIONS), 4 u32 reserved (0),
 * then count entries of 24 bytes:
 *   0 u32 region (strictly increasing), 4 u32 page size of the backing
 *   (a power of two, 4096 .. 1 GiB), 8 u64 size of the region (its
 *   CONFIG size: a multiple of the page size, > 0), 16 u64 offset of the
 *   region in its file (a multiple of the page size; offset + size does
 *   not wrap).
 * Entry i's descriptor is the i-th of the SCM_RIGHTS message that carries
 * the record's first byte: exactly count of them.
 */
#define FY_FDS_HDR_SIZE 8
#define FY_FDS_ENTRY_SIZE 24
#define FY_FDS_PAGE_MIN 4096u
#define FY_FDS_PAGE_MAX (1u << 30)
struct fy_memfd_entry {
	uint32_t region;
	uint32_t page_size;
	uint64_t size;
	uint64_t fd_offset;
};
struct fy_memory_fds {
	uint32_t count;
	struct fy_memfd_entry e[FY_MAX_REGIONS];
};
int fy_memory_fds_encode(struct fy_buf *b, const struct fy_memory_fds *m);
/* 0, or -EBADMSG with the reason in @err (may be NULL). */
int fy_memory_fds_decode(const uint8_t *p, size_t n, struct fy_memory_fds *m,
			 char *err, size_t errlen);

/*
 * DEVICE_FDS body (src/wire/memfds.c; docs/stream-format.md, "Device
 * descriptors"): 0 u32 count (0..FY_DEVFDS_MAX), 4 u32 reserved (0), then
 * count entries of 8 bytes: 0 u32 kind (FY_DEVFD_SOCKET or FY_DEVFD_OTHER,
 * what fstat() says of the descriptor at the source), 4 u32 reserved (0).
 * The descriptors ride on the record's bytes in order, at most
 * FY_FDS_PER_MSG per sendmsg(): exactly count of them.
 */
#define FY_DEVFDS_HDR_SIZE 8
#define FY_DEVFDS_ENTRY_SIZE 8
#define FY_DEVFDS_MAX 4096u /* FERRY_DEVICE_FDS_MAX */
enum fy_devfd_kind {
	FY_DEVFD_SOCKET = 1,
	FY_DEVFD_OTHER = 2,
};
struct fy_device_fds {
	uint32_t count;
	uint32_t *kind; /* count entries; the caller's array */
};
int fy_device_fds_encode(struct fy_buf *b, const struct fy_device_fds *m);
/* 0, or -EBADMSG with the reason in @err (may be NULL). @kind must have
 * room for FY_DEVFDS_MAX entries. */
int fy_device_fds_decode(const uint8_t *p, size_t n, struct fy_device_fds *m,
			 char *err, size_t errlen);

/* A short name for a record type ("HELLO", "MEMORY", "0x7123?"). Static
 * storage for known types; @buf for unknown ones. */
const char *fy_rec_name(uint32_t type, char *buf, size_t len);

#endif /* FY_WIRE_H */
