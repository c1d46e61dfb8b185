/* SPDX-License-Identifier: MIT */
/*
 * hostile_peer.h - the hostile source's side of one migration connection:
 * connecting, sending records built with the src/wire encoders (and
 * corrupted by hand), reading and checking what the destination answers,
 * and the well-formed steps every case starts with.
 */
#ifndef FERRY_TEST_HOSTILE_PEER_H
#define FERRY_TEST_HOSTILE_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fake_vmm.h"
#include "ferry.h"
#include "wire/wire.h"

/* The in-process destination's region (an external one says its size). */
#define REGION_SIZE (64u << 10)
#define PAGE FAKE_PAGE
/* What the hostile source offers in HELLO: everything a destination may
 * accept on one connection (zero-page maps and codecs included, so that
 * their decoders are reached). */
#ifdef FERRY_CAP_ALL
#define HOSTILE_CAPS (FERRY_CAP_ALL & ~FERRY_CAP_MULTI_CHANNEL)
#else
#define HOSTILE_CAPS FERRY_CAP_DATA_CHECKSUM
#endif
/* Longest wait for any answer or close from the destination. */
#define IO_TIMEOUT_MS 10000
/* Longest wait for the close that follows an ERROR (it is immediate). */
#define EOF_TIMEOUT_MS 3000

/* One case: its connection, its expectations, and how it failed. */
struct ctx {
	const char *uri;
	bool external;
	uint64_t size; /* of the destination's one region */
	int fd;
	bool hup; /* a write failed: the destination closed on us */
	uint32_t seq;
	uint32_t pass;
	uint64_t pass_records, pass_bytes;
	/* From the answer to HELLO: what an extra data connection presents. */
	uint64_t session_id;
	uint8_t token[16];
	/* In-process only: what the region must hold afterwards, and the
	 * destination's VMM (its log). */
	uint8_t *shadow;
	struct fake_vmm *dst;
	bool dontcare[REGION_SIZE / PAGE];
	bool failed;
	char why[1024];
	uint8_t rbuf[1 << 16];
	size_t rlen;
};

#define FAIL(c, ...) fail_at(c, __LINE__, __VA_ARGS__)
/* Check inside a case: on failure record why and leave the case. */
#define CHECK(c, cond, ...)                          \
	do {                                         \
		if (!(cond)) {                       \
			fail_at(c, __LINE__, __VA_ARGS__); \
			return;                      \
		}                                    \
	} while (0)

#define ANY_SEQ UINT32_MAX
#define ANY_CODE 0

/* Connection: connect (retrying while the destination is not listening),
 * send, half-close. fail_at() keeps the first failure of a case. */
__attribute__((format(printf, 3, 4)))
void fail_at(struct ctx *c, int line, const char *fmt, ...);
bool peer_connect(struct ctx *c);
void put(struct ctx *c, const void *p, size_t n);
void put_buf(struct ctx *c, struct fy_buf *b);
void put_eof(struct ctx *c);
const char *rc_name(int rc);

/* What the destination answers. Each records a failure and returns false
 * when the answer is not the expected one. */
/* The next record from the destination: 0, -ECONNRESET at a clean close,
 * -ETIMEDOUT, or another negative code for a malformed or cut record. */
int next_rec(struct ctx *c, struct fy_rec_hdr *h, uint8_t *body, size_t cap,
	     size_t *blen);
int next_rec_within(struct ctx *c, struct fy_rec_hdr *h, uint8_t *body,
		    size_t cap, size_t *blen, int timeout_ms);
bool expect_eof(struct ctx *c);
bool expect_error(struct ctx *c, uint32_t seq, int code, const char *text);
bool expect_cut(struct ctx *c);
bool expect_ok(struct ctx *c, uint32_t seq, uint8_t *body, size_t cap,
	       size_t *blen);

/* Encoders: whole records appended to a buffer. b_mem() writes the memory
 * header as given, whatever the data length; b_hdr() only a header;
 * last_rec() is the offset of the last record of @body_len body bytes. */
void b_rec(struct fy_buf *b, uint32_t type, uint32_t seq, uint32_t flags,
	   const void *body, size_t len);
void b_body_rec(struct fy_buf *b, uint32_t type, uint32_t seq,
		struct fy_buf *body);
void b_hello(struct fy_buf *b, uint32_t seq, uint32_t vmin, uint32_t vmax);
void b_config(struct fy_buf *b, uint32_t seq, uint32_t page_size,
	      uint32_t nregions, uint64_t size);
void b_pass_begin(struct fy_buf *b, uint32_t seq, uint32_t pass,
		  uint32_t final);
void b_pass_end(struct fy_buf *b, uint32_t seq, uint32_t pass, uint64_t records,
		uint64_t bytes);
void b_abort(struct fy_buf *b, uint32_t seq, int code, const char *msg);
void page_fill(uint8_t *p, size_t len, uint64_t tag);
void b_mem(struct fy_buf *b, uint32_t region, uint32_t mflags, uint64_t offset,
	   uint64_t length, size_t dlen, uint64_t tag, uint32_t rflags);
void b_hdr(struct fy_buf *b, uint32_t type, uint32_t length, uint32_t seq,
	   uint32_t flags);
size_t last_rec(const struct fy_buf *b, size_t body_len);
/* A MEMORY record: header @m, then @n bytes of @rest (map and payload). */
void b_mem_body(struct fy_buf *b, const struct fy_mem_hdr *m,
		const void *rest, size_t n, uint32_t rflags);
/* Compressible page contents (page_fill()'s are not). */
void page_pattern(uint8_t *p, size_t len, uint64_t tag);

/* Well-formed steps (each checks the OK it gets) and the common prefixes:
 * configured = stream header, HELLO, CONFIG; in_pass = configured,
 * PASS_BEGIN and page 0; loaded = a final pass and STATE. hostile() sends
 * the hostile part and expects ERROR then the close. */
bool start(struct ctx *c);
bool request(struct ctx *c, struct fy_buf *b);
bool do_hello(struct ctx *c);
bool do_config(struct ctx *c);
bool do_pass_begin(struct ctx *c, uint32_t final);
void do_mem(struct ctx *c, uint64_t page, uint64_t npages, uint64_t tag);
bool do_pass_end(struct ctx *c);
bool do_simple(struct ctx *c, uint32_t type, const void *body, size_t len);
bool do_released(struct ctx *c);
bool configured(struct ctx *c);
bool in_pass(struct ctx *c);
bool loaded(struct ctx *c);
void hostile(struct ctx *c, struct fy_buf *b, uint32_t seq, int code,
	     const char *text);

#endif /* FERRY_TEST_HOSTILE_PEER_H */
