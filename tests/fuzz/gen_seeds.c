// SPDX-License-Identifier: MIT
/*
 * gen_seeds.c - writes the committed seed corpora of the fuzz harnesses:
 * real streams and sections built with the src/wire and src/state
 * encoders, for a destination with one 64 KiB region (fuzz_receive's).
 *
 *   gen_seeds DIR      writes DIR/fuzz_wire, DIR/fuzz_receive, DIR/fuzz_state,
 *                      DIR/fuzz_snapfile, DIR/fuzz_proto
 *
 * (`ninja -C build fuzz-seeds` runs it on tests/fuzz/corpus.) The output is
 * deterministic. Most seeds carry placeholder checksums (eight zero bytes,
 * filled in by the harnesses, see fuzz_common.h) so that mutations of their
 * bodies still get past the checksum; a few carry the real ones.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ferry.h"
#include "memory/memory.h"
#include "wire/snapfile.h"
#include "wire/wire.h"
#include "proto_script.h"
#ifdef FZ_HAVE_STATE
#include "state/state.h"
#include "state_dev.h"
#endif

#define REGION (64u << 10)
#define PAGE 4096u
/* Everything one connection can use: maps and codecs reach their decoders. */
#ifdef FERRY_CAP_ALL
#define CAPS (FERRY_CAP_ALL & ~FERRY_CAP_MULTI_CHANNEL)
#else
#define CAPS FERRY_CAP_DATA_CHECKSUM
#endif

static const char *root;

static void die(const char *what)
{
	fprintf(stderr, "gen_seeds: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void check(int rc, const char *what)
{
	if (rc) {
		fprintf(stderr, "gen_seeds: %s failed: %d\n", what, rc);
		exit(1);
	}
}

/* Zero every record's checksum: the harnesses compute them again. */
static void placeholders(struct fy_buf *b, size_t off)
{
	while (b->len - off >= FY_REC_HDR_SIZE) {
		uint32_t len = fy_get_u32(b->data + off + 4);

		memset(b->data + off + FY_REC_HDR_SIZE + fy_pad8(len), 0,
		       FY_REC_TRAILER_SIZE);
		off += fy_rec_wire_size(len);
	}
}

static void write_seed(const char *harness, const char *name,
		       const struct fy_buf *b)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, harness);
	if (mkdir(path, 0755) && errno != EEXIST)
		die(path);
	snprintf(path, sizeof(path), "%s/%s/%s", root, harness, name);
	f = fopen(path, "wb");
	if (!f || fwrite(b->data, 1, b->len, f) != b->len || fclose(f))
		die(path);
}

/* ---- records ---- */

static void rec(struct fy_buf *out, uint32_t type, uint32_t seq,
		uint32_t flags, const struct fy_buf *body)
{
	check(fy_rec_encode(out, type, seq, flags, body ? body->data : NULL,
			    body ? body->len : 0),
	      "fy_rec_encode");
}

static void hello(struct fy_buf *out, uint32_t seq)
{
	struct fy_hello m = { FY_PROTO_VERSION_MIN, FY_PROTO_VERSION_MAX,
			      CAPS, "", "" };
	struct fy_buf b;

	snprintf(m.boot_id, sizeof(m.boot_id),
		 "0f3c2a9e-5d1b-4c7a-9e21-8b7f6d5c4b3a");
	snprintf(m.software, sizeof(m.software), "ferry %s",
		 FERRY_VERSION_STRING);
	fy_buf_init(&b);
	check(fy_hello_encode(&b, &m), "hello");
	rec(out, FY_REC_HELLO, seq, 0, &b);
	fy_buf_free(&b);
}

static void config(struct fy_buf *out, uint32_t seq)
{
	static struct fy_config_msg m = { .page_size = PAGE, .nregions = 1 };
	struct fy_buf b;

	m.regions[0].gpa = 0;
	m.regions[0].size = REGION;
	snprintf(m.regions[0].name, sizeof(m.regions[0].name), "ram0");
	fy_buf_init(&b);
	check(fy_config_encode(&b, &m), "config");
	rec(out, FY_REC_CONFIG, seq, 0, &b);
	fy_buf_free(&b);
}

static void pass_begin(struct fy_buf *out, uint32_t seq, uint32_t pass,
		       uint32_t final, uint64_t planned)
{
	struct fy_pass_begin m = { pass, final, planned };
	struct fy_buf b;

	fy_buf_init(&b);
	check(fy_pass_begin_encode(&b, &m), "pass_begin");
	rec(out, FY_REC_PASS_BEGIN, seq, 0, &b);
	fy_buf_free(&b);
}

static void pass_end(struct fy_buf *out, uint32_t seq, uint32_t pass,
		     uint64_t records, uint64_t bytes)
{
	struct fy_pass_end m = { pass, 0, records, bytes };
	struct fy_buf b;

	fy_buf_init(&b);
	check(fy_pass_end_encode(&b, &m), "pass_end");
	rec(out, FY_REC_PASS_END, seq, 0, &b);
	fy_buf_free(&b);
}

/* Pages of a recognisable pattern (mostly small values: cheap to mutate
 * into zero pages and back). */
static void memory(struct fy_buf *out, uint64_t page, uint64_t npages,
		   bool csum_head)
{
	struct fy_mem_hdr m = { 0, 0, page * PAGE, npages * PAGE };
	struct fy_buf b;

	fy_buf_init(&b);
	check(fy_buf_reserve(&b, FY_MEM_HDR_SIZE + m.length), "reserve");
	fy_mem_hdr_encode(&m, b.data);
	for (uint64_t i = 0; i < m.length; i++)
		b.data[FY_MEM_HDR_SIZE + i] = (uint8_t)((page * PAGE + i) / 64);
	b.len = FY_MEM_HDR_SIZE + m.length;
	rec(out, FY_REC_MEMORY, 0, csum_head ? FY_RF_CSUM_HEAD : 0, &b);
	fy_buf_free(&b);
}

/* Two pages at @page: the first zero (by the map), the second data. */
static void memory_zmap(struct fy_buf *out, uint64_t page)
{
	struct fy_mem_hdr m = { 0, FY_MEMF_ZMAP, page * PAGE, 2 * PAGE };
	struct fy_buf b;

	fy_buf_init(&b);
	check(fy_buf_reserve(&b, FY_MEM_HDR_SIZE + 8 + PAGE), "reserve");
	fy_mem_hdr_encode(&m, b.data);
	fy_put_u64(b.data + FY_MEM_HDR_SIZE, 1);
	memset(b.data + FY_MEM_HDR_SIZE + 8, 0x5a, PAGE);
	b.len = FY_MEM_HDR_SIZE + 8 + PAGE;
	rec(out, FY_REC_MEMORY, 0, FY_RF_CSUM_HEAD, &b);
	fy_buf_free(&b);
}

/* @npages all-zero pages at @page: a map and no payload, so a seed can
 * cover any range (the region's edges included) in a few bytes. */
static void memory_zeros(struct fy_buf *out, uint64_t page, uint64_t npages)
{
	struct fy_mem_hdr m = { 0, FY_MEMF_ZMAP, page * PAGE, npages * PAGE };
	size_t words = (size_t)(npages + 63) / 64;
	struct fy_buf b;

	fy_buf_init(&b);
	check(fy_buf_reserve(&b, FY_MEM_HDR_SIZE + words * 8), "reserve");
	fy_mem_hdr_encode(&m, b.data);
	for (size_t w = 0; w < words; w++) {
		uint64_t left = npages - w * 64;

		fy_put_u64(b.data + FY_MEM_HDR_SIZE + w * 8,
			   left >= 64 ? UINT64_MAX : (1ull << left) - 1);
	}
	b.len = FY_MEM_HDR_SIZE + words * 8;
	rec(out, FY_REC_MEMORY, 0, 0, &b);
	fy_buf_free(&b);
}

/* @npages pages at @page compressed with @kind. */
static void memory_packed(struct fy_buf *out, uint64_t page, uint64_t npages,
			  enum fy_codec_kind kind)
{
	struct fy_mem_hdr m = { 0, (uint32_t)kind << FY_MEMF_CODEC_SHIFT,
				page * PAGE, npages * PAGE };
	static uint8_t raw[4 * PAGE], packed[4 * PAGE];
	struct fy_codec *cd;
	struct fy_buf b;
	long n;

	for (size_t i = 0; i < m.length; i++)
		raw[i] = (uint8_t)(i / 512 + kind);
	check(fy_codec_new(kind, 0, &cd), "codec");
	n = fy_codec_compress(cd, raw, m.length, packed, sizeof(packed));
	fy_codec_free(cd);
	check(n <= 0, "compress");
	fy_buf_init(&b);
	check(fy_buf_reserve(&b, FY_MEM_HDR_SIZE + (size_t)n), "reserve");
	fy_mem_hdr_encode(&m, b.data);
	memcpy(b.data + FY_MEM_HDR_SIZE, packed, (size_t)n);
	b.len = FY_MEM_HDR_SIZE + (size_t)n;
	rec(out, FY_REC_MEMORY, 0, 0, &b);
	fy_buf_free(&b);
}

static void state(struct fy_buf *out, uint32_t seq)
{
	struct fy_buf b;

	fy_buf_init(&b);
	check(fy_buf_put(&b, "vcpu0:rip=0x1000;", 17), "state");
	rec(out, FY_REC_STATE, seq, 0, &b);
	fy_buf_free(&b);
}

static void error_like(struct fy_buf *out, uint32_t type, uint32_t seq,
		       int code, const char *msg)
{
	struct fy_error_msg m = { .code = code };
	struct fy_buf b;

	snprintf(m.message, sizeof(m.message), "%s", msg);
	fy_buf_init(&b);
	check(fy_error_encode(&b, &m), "error");
	rec(out, type, seq, 0, &b);
	fy_buf_free(&b);
}

static void optional(struct fy_buf *out, uint32_t num, size_t len)
{
	struct fy_buf b;

	fy_buf_init(&b);
	for (size_t i = 0; i < len; i++)
		check(fy_buf_put(&b, "x", 1), "optional");
	rec(out, FY_REC_OPTIONAL | num, 0, 0, &b);
	fy_buf_free(&b);
}

/* A whole migration: two passes, state, switchover, released. */
static void migration(struct fy_buf *out, bool with_optional)
{
	uint8_t sh[FY_STREAM_HDR_SIZE];
	uint32_t seq = 0;

	fy_stream_hdr_encode(sh);
	check(fy_buf_put(out, sh, sizeof(sh)), "header");
	hello(out, ++seq);
	if (with_optional)
		optional(out, 0x7123, 5);
	config(out, ++seq);
	pass_begin(out, ++seq, 1, 0, 9 * PAGE);
	memory(out, 0, 1, true);
	if (with_optional)
		optional(out, 0x0400, 16);
	memory(out, 5, 2, true);
	memory_zmap(out, 8);
	memory_packed(out, 10, 2, FY_CODEC_LZ4);
	memory_packed(out, 12, 2, FY_CODEC_ZSTD);
	pass_end(out, ++seq, 1, 5, 9 * PAGE);
	pass_begin(out, ++seq, 2, 1, PAGE);
	memory(out, 15, 1, false);
	pass_end(out, ++seq, 2, 1, PAGE);
	state(out, ++seq);
	rec(out, FY_REC_SWITCHOVER, ++seq, 0, NULL);
	rec(out, FY_REC_RELEASED, ++seq, 0, NULL);
}

static void receive_seeds(void)
{
	uint8_t sh[FY_STREAM_HDR_SIZE];
	struct fy_buf b;

	fy_buf_init(&b);
	migration(&b, false);
	write_seed("fuzz_receive", "migration-real-checksums", &b);
	placeholders(&b, FY_STREAM_HDR_SIZE);
	write_seed("fuzz_receive", "migration", &b);

	fy_buf_reset(&b);
	migration(&b, true);
	placeholders(&b, FY_STREAM_HDR_SIZE);
	write_seed("fuzz_receive", "migration-optional-records", &b);

	fy_buf_reset(&b);
	fy_stream_hdr_encode(sh);
	check(fy_buf_put(&b, sh, sizeof(sh)), "header");
	hello(&b, 1);
	config(&b, 2);
	pass_begin(&b, 3, 1, 0, 0);
	memory(&b, 1, 1, false);
	error_like(&b, FY_REC_ABORT, 4, -ECANCELED, "cancelled by the user");
	placeholders(&b, FY_STREAM_HDR_SIZE);
	write_seed("fuzz_receive", "abort-in-pass", &b);

	/* Small records over the whole region and its last pages. */
	fy_buf_reset(&b);
	check(fy_buf_put(&b, sh, sizeof(sh)), "header");
	hello(&b, 1);
	config(&b, 2);
	pass_begin(&b, 3, 1, 1, REGION);
	memory_zeros(&b, 0, REGION / PAGE);
	memory_zeros(&b, REGION / PAGE - 2, 2);
	memory_zeros(&b, REGION / PAGE - 1, 1);
	pass_end(&b, 4, 1, 3, REGION + 3 * PAGE);
	state(&b, 5);
	rec(&b, FY_REC_SWITCHOVER, 6, 0, NULL);
	rec(&b, FY_REC_RELEASED, 7, 0, NULL);
	placeholders(&b, FY_STREAM_HDR_SIZE);
	write_seed("fuzz_receive", "zero-pages", &b);

	fy_buf_reset(&b);
	check(fy_buf_put(&b, sh, sizeof(sh)), "header");
	hello(&b, 1);
	config(&b, 2);
	state(&b, 3);
	rec(&b, FY_REC_SWITCHOVER, 4, 0, NULL);
	rec(&b, FY_REC_RELEASED, 5, 0, NULL);
	placeholders(&b, FY_STREAM_HDR_SIZE);
	write_seed("fuzz_receive", "no-memory", &b);
	fy_buf_free(&b);
}

static void wire_seeds(void)
{
	struct fy_hello_reply hr = { 1, FERRY_CAP_DATA_CHECKSUM, 42,
				     { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
				       13, 14, 15, 16 },
				     "", "ferry 0.1.0" };
	struct fy_running run = { 123456789, "{\"verified\":true}" };
	struct fy_join join = { 42, { 16, 15, 14 }, 1, 4 };
	struct fy_buf b, body;

	fy_buf_init(&b);
	fy_buf_init(&body);
	migration(&b, true);
	write_seed("fuzz_wire", "stream-real-checksums", &b);

#define ONE(name, stmt)                       \
	do {                                  \
		fy_buf_reset(&b);             \
		stmt;                         \
		placeholders(&b, 0);          \
		write_seed("fuzz_wire", name, &b); \
	} while (0)
	ONE("hello", hello(&b, 1));
	ONE("config", config(&b, 2));
	ONE("pass-begin", pass_begin(&b, 3, 1, 1, 65536));
	ONE("pass-end", pass_end(&b, 4, 1, 16, 65536));
	ONE("memory", memory(&b, 3, 1, false));
	ONE("memory-csum-head", memory(&b, 4, 1, true));
	ONE("memory-zero-map", memory_zmap(&b, 2));
	ONE("memory-lz4", memory_packed(&b, 4, 2, FY_CODEC_LZ4));
	ONE("memory-zstd", memory_packed(&b, 6, 2, FY_CODEC_ZSTD));
	ONE("state", state(&b, 5));
	ONE("switchover", rec(&b, FY_REC_SWITCHOVER, 6, 0, NULL));
	ONE("released", rec(&b, FY_REC_RELEASED, 7, 0, NULL));
	ONE("abort", error_like(&b, FY_REC_ABORT, 8, -ECANCELED, "cancel"));
	ONE("error", error_like(&b, FY_REC_ERROR, 2, FERRY_EMISMATCH,
				"region 0 (ram0): sizes differ"));
	ONE("optional", optional(&b, 0x7123, 13));
	check(fy_hello_reply_encode(&body, &hr), "hello reply");
	ONE("ok-hello", rec(&b, FY_REC_OK, 1, 0, &body));
	fy_buf_reset(&body);
	check(fy_running_encode(&body, &run), "running");
	ONE("ok-running", rec(&b, FY_REC_OK, 7, 0, &body));
	fy_buf_reset(&body);
	check(fy_join_encode(&body, &join), "join");
	ONE("join", rec(&b, FY_REC_JOIN, 1, 0, &body));
#undef ONE
	fy_buf_free(&body);
	fy_buf_free(&b);
}

/* ---- postcopy records (fuzz_wire) ---- */

static void page_list(struct fy_buf *out, uint32_t type, bool req)
{
	static const struct fy_page_range r[] = {
		{ 0, 0, 1 }, { 0, 3, 2 }, { 0, 9, 7 },
	};
	struct fy_buf b;

	fy_buf_init(&b);
	check(req ? fy_page_req_encode(&b, r, 2)
		  : fy_discard_encode(&b, r, 3), "page list");
	rec(out, type, req ? 0 : 9, 0, &b);
	fy_buf_free(&b);
}

static void have_map(struct fy_buf *out, uint32_t seq)
{
	static uint64_t w0[1] = { 0xfff0ull }, w1[2] = { ~0ull, 0x3ull };
	struct fy_have_map m = { .flags = FY_HAVE_RAN | FY_HAVE_RUNNING,
				 .nregions = 2 };
	struct fy_buf b;

	m.pages[0] = REGION / PAGE;
	m.bits[0] = w0;
	m.pages[1] = 66;
	m.bits[1] = w1;
	fy_buf_init(&b);
	check(fy_have_map_encode(&b, &m), "have-map");
	rec(out, FY_REC_OK, seq, 0, &b);
	fy_buf_free(&b);
}

static void postcopy_wire_seeds(void)
{
	struct fy_postcopy pc = { 6 };
	struct fy_postcopy_end end = { 3, 5 * PAGE };
	struct fy_resume rs = { 42, { 16, 15, 14 }, 2 };
	struct fy_running run = { 123456789, "" };
	struct fy_buf b, body;

	fy_buf_init(&b);
	fy_buf_init(&body);
#define ONE(name, stmt)                                    \
	do {                                               \
		fy_buf_reset(&b);                          \
		fy_buf_reset(&body);                       \
		stmt;                                      \
		placeholders(&b, 0);                       \
		write_seed("fuzz_wire", name, &b);         \
	} while (0)
	ONE("discard", page_list(&b, FY_REC_DISCARD, false));
	ONE("keepalive", check(fy_keepalive_encode(&body, 2500), "keepalive");
	    rec(&b, FY_REC_KEEPALIVE, 0, 0, &body));
	ONE("discard-empty", check(fy_discard_encode(&body, NULL, 0), "discard");
	    rec(&b, FY_REC_DISCARD, 9, 0, &body));
	ONE("page-req", page_list(&b, FY_REC_PAGE_REQ, true));
	ONE("postcopy", check(fy_postcopy_encode(&body, &pc), "postcopy");
	    rec(&b, FY_REC_POSTCOPY, 11, 0, &body));
	ONE("postcopy-end", check(fy_postcopy_end_encode(&body, &end), "end");
	    rec(&b, FY_REC_POSTCOPY_END, 12, 0, &body));
	ONE("resume", check(fy_resume_encode(&body, &rs), "resume");
	    rec(&b, FY_REC_RESUME, 1, 0, &body));
	ONE("ok-have-map", have_map(&b, 1));
	/* The main connection of a postcopy switch, both directions in one
	 * stream: DISCARD, STATE, POSTCOPY, its OK, a request, the page. */
	ONE("stream-postcopy",
	    page_list(&b, FY_REC_DISCARD, false); state(&b, 10);
	    check(fy_postcopy_encode(&body, &pc), "postcopy");
	    rec(&b, FY_REC_POSTCOPY, 11, 0, &body); fy_buf_reset(&body);
	    check(fy_running_encode(&body, &run), "running");
	    rec(&b, FY_REC_OK, 11, 0, &body);
	    page_list(&b, FY_REC_PAGE_REQ, true); memory(&b, 3, 2, false);
	    fy_buf_reset(&body);
	    check(fy_postcopy_end_encode(&body, &end), "end");
	    rec(&b, FY_REC_POSTCOPY_END, 12, 0, &body));
#undef ONE
	fy_buf_free(&body);
	fy_buf_free(&b);
}

/* ---- local migration (fuzz_memfds, fuzz_wire) ---- */

static void memfds_seeds(void)
{
	struct fy_memory_fds m = { .count = 2 };
	struct fy_buf b, body;

	m.e[0] = (struct fy_memfd_entry){ 0, PAGE, 64ull << 20, 0 };
	m.e[1] = (struct fy_memfd_entry){ 3, 2u << 20, 1ull << 30, 1ull << 30 };
	fy_buf_init(&b);
	fy_buf_init(&body);
	check(fy_memory_fds_encode(&body, &m), "memory fds");
	write_seed("fuzz_memfds", "body-two", &body);
	rec(&b, FY_REC_MEMORY_FDS, 3, 0, &body);
	placeholders(&b, 0);
	write_seed("fuzz_memfds", "record-two", &b);
	write_seed("fuzz_wire", "memory-fds", &b);
	m.count = 1;
	m.e[0].page_size = 1u << 30;
	m.e[0].size = 1ull << 30;
	fy_buf_reset(&body);
	check(fy_memory_fds_encode(&body, &m), "memory fds");
	write_seed("fuzz_memfds", "body-one-1g", &body);
	{
		uint32_t kind[3] = { FY_DEVFD_SOCKET, FY_DEVFD_SOCKET,
				     FY_DEVFD_OTHER };
		struct fy_device_fds d = { .count = 3, .kind = kind };

		fy_buf_reset(&body);
		fy_buf_reset(&b);
		check(fy_device_fds_encode(&body, &d), "device fds");
		write_seed("fuzz_memfds", "devices-body-three", &body);
		rec(&b, FY_REC_DEVICE_FDS, 4, 0, &body);
		placeholders(&b, 0);
		write_seed("fuzz_memfds", "devices-record-three", &b);
		write_seed("fuzz_wire", "device-fds", &b);
	}
	fy_buf_free(&body);
	fy_buf_free(&b);
}

/* ---- protocol scripts (fuzz_proto, proto_script.h) ---- */

static void ev(struct fy_buf *b, enum fz_proto_op op, uint32_t type,
	       uint8_t seq)
{
	uint8_t e[3] = { (uint8_t)op, 0, seq };

	for (size_t i = 0; i < FZ_PROTO_NTYPES; i++)
		if (fz_proto_types[i] == type)
			e[1] = (uint8_t)i;
	check(fy_buf_put(b, e, sizeof(e)), "event");
}

/* A request both machines see, answered OK (or ERROR). */
static void exchange(struct fy_buf *b, uint32_t type, bool error)
{
	ev(b, FZ_TX_REQUEST, type, 0);
	ev(b, FZ_RX_RECORD, type, FZ_SEQ_NEXT);
	ev(b, FZ_TX_RESPONSE, error ? FY_REC_ERROR : FY_REC_OK, FZ_SEQ_LAST);
}

static void to_postcopy_loaded(struct fy_buf *b)
{
	exchange(b, FY_REC_HELLO, false);
	exchange(b, FY_REC_CONFIG, false);
	exchange(b, FY_REC_PASS_BEGIN, false);
	ev(b, FZ_RX_RECORD, FY_REC_MEMORY, FZ_SEQ_ZERO);
	exchange(b, FY_REC_PASS_END, false);
	exchange(b, FY_REC_DISCARD, false);
	exchange(b, FY_REC_DISCARD, false);
	exchange(b, FY_REC_STATE, false);
}

static void proto_seeds(void)
{
	const uint8_t both = 3, none = 0;
	struct fy_buf b;

	fy_buf_init(&b);
	check(fy_buf_put(&b, &both, 1), "caps");
	to_postcopy_loaded(&b);
	exchange(&b, FY_REC_POSTCOPY, false);
	ev(&b, FZ_TX_INPUT, FY_REC_PAGE_REQ, FZ_SEQ_ZERO);
	ev(&b, FZ_RX_RECORD, FY_REC_MEMORY, FZ_SEQ_ZERO);
	ev(&b, FZ_TX_FAIL, 0, 0);
	ev(&b, FZ_RX_FAIL, 0, 0);
	ev(&b, FZ_RX_RECONNECT, 0, 0);
	ev(&b, FZ_TX_REQUEST, FY_REC_RESUME, 0);
	ev(&b, FZ_TX_FAIL, 0, 0);
	ev(&b, FZ_RX_FAIL, 0, 0);
	ev(&b, FZ_RX_RECONNECT, 0, 0);
	exchange(&b, FY_REC_RESUME, false);
	ev(&b, FZ_RX_RECORD, FY_REC_MEMORY, FZ_SEQ_ZERO);
	exchange(&b, FY_REC_POSTCOPY_END, false);
	write_seed("fuzz_proto", "postcopy-two-cuts", &b);

	fy_buf_reset(&b);
	check(fy_buf_put(&b, &both, 1), "caps");
	to_postcopy_loaded(&b);
	/* The destination fails before it commits the transition, and says
	 * so: the source has its guest back. */
	ev(&b, FZ_TX_REQUEST, FY_REC_POSTCOPY, 0);
	ev(&b, FZ_RX_FAIL, 0, 0);
	ev(&b, FZ_TX_RESPONSE, FY_REC_ERROR, FZ_SEQ_LAST);
	ev(&b, FZ_TX_NOT_RUN, 0, 0);
	write_seed("fuzz_proto", "postcopy-not-run", &b);

	fy_buf_reset(&b);
	check(fy_buf_put(&b, &both, 1), "caps");
	to_postcopy_loaded(&b);
	exchange(&b, FY_REC_POSTCOPY, false);
	exchange(&b, FY_REC_ABORT, false);
	ev(&b, FZ_RX_RECONNECT, 0, 0);
	ev(&b, FZ_RX_RECORD, FY_REC_HELLO, FZ_SEQ_NEXT);
	write_seed("fuzz_proto", "postcopy-abort-refused", &b);

	fy_buf_reset(&b);
	check(fy_buf_put(&b, &none, 1), "caps");
	exchange(&b, FY_REC_HELLO, false);
	exchange(&b, FY_REC_CONFIG, false);
	exchange(&b, FY_REC_PASS_BEGIN, false);
	ev(&b, FZ_RX_RECORD, FY_REC_MEMORY, FZ_SEQ_ZERO);
	exchange(&b, FY_REC_PASS_END, false);
	exchange(&b, FY_REC_STATE, false);
	exchange(&b, FY_REC_SWITCHOVER, false);
	exchange(&b, FY_REC_RELEASED, false);
	/* Without the capability a DISCARD is refused on both sides. */
	exchange(&b, FY_REC_DISCARD, false);
	write_seed("fuzz_proto", "precopy", &b);

	/* A live update: memory and then the devices' descriptors by fd,
	 * the state, the switchover; a second DEVICE_FDS is refused. */
	fy_buf_reset(&b);
	{
		const uint8_t fds = 12;

		check(fy_buf_put(&b, &fds, 1), "caps");
	}
	exchange(&b, FY_REC_HELLO, false);
	exchange(&b, FY_REC_CONFIG, false);
	exchange(&b, FY_REC_MEMORY_FDS, false);
	exchange(&b, FY_REC_DEVICE_FDS, false);
	exchange(&b, FY_REC_DEVICE_FDS, false);
	exchange(&b, FY_REC_STATE, false);
	exchange(&b, FY_REC_SWITCHOVER, false);
	exchange(&b, FY_REC_RELEASED, false);
	write_seed("fuzz_proto", "local-device-fds", &b);
	fy_buf_free(&b);
}

#ifdef FZ_HAVE_STATE
static void save(struct fy_buf *b, const struct ferry_device_type *t,
		 const char *instance, void *dev)
{
	char err[FY_STATE_MSG_MAX];

	if (fy_state_save(b, t, instance, dev, err, sizeof(err))) {
		fprintf(stderr, "gen_seeds: saving %s: %s\n", instance, err);
		exit(1);
	}
}

static void end(struct fy_buf *b, bool real)
{
	char err[FY_STATE_MSG_MAX];

	check(fy_state_end(b, err, sizeof(err)), "state end");
	if (!real)
		placeholders(b, 0);
}

static void state_seeds(void)
{
	struct fz_dev d0, d1;
	struct fz_small s0 = { 3, "console" };
	struct fy_buf b;

	fy_buf_init(&b);
	fz_dev_fill(&d0, 1);
	fz_dev_fill(&d1, 35); /* full arrays and blob */
	save(&b, &fz_dev_v1, "dev0", &d0);
	save(&b, &fz_dev_v1, "dev1", &d1);
	save(&b, &fz_small_type, "small0", &s0);
	end(&b, true);
	write_seed("fuzz_state", "section-real-checksums", &b);
	placeholders(&b, 0);
	write_seed("fuzz_state", "section", &b);

	const struct ferry_device_type *versions[] = { &fz_dev_v0, &fz_dev_v2,
						       &fz_dev_v3 };
	const char *names[] = { "older-version", "newer-skippable",
				"newer-must" };
	for (int i = 0; i < 3; i++) {
		fy_buf_reset(&b);
		fz_dev_fill(&d0, (uint32_t)(7 * i + 2));
		save(&b, versions[i], "dev0", &d0);
		end(&b, false);
		write_seed("fuzz_state", names[i], &b);
	}

	fy_buf_reset(&b);
	end(&b, false);
	write_seed("fuzz_state", "empty", &b);
	fy_buf_free(&b);
}
#endif

/* ---- snapshot superblocks ---- */

/* A laid-out superblock of @n regions of @pages pages each, every other
 * page data, written with a placeholder checksum unless @real. */
static void snap_seed(const char *name, uint32_t n, uint64_t pages, bool real)
{
	static struct fy_snap_sb sb;
	struct fy_buf b;

	memset(&sb, 0, sizeof(sb));
	sb.nregions = n;
	for (uint32_t i = 0; i < n; i++) {
		sb.regions[i].gpa = (uint64_t)i << 32;
		sb.regions[i].size = pages * PAGE;
		sb.regions[i].data_pages = pages / 2;
		snprintf(sb.regions[i].name, sizeof(sb.regions[i].name),
			 "ram%u", i);
		sb.data_pages += pages / 2;
	}
	check(fy_snap_layout(&sb, 4096), "fy_snap_layout");
	sb.table_hash = 0x0123456789abcdefull;
	sb.map_hash = 0xfedcba9876543210ull;
	sb.state_hash = 0x1122334455667788ull;
	sb.created_ns = 1765000000000000000ull;
	sb.passes = 3;
	strcpy(sb.software, "ferry 0.1.0");
	fy_buf_init(&b);
	check(fy_buf_reserve(&b, FY_SNAP_SB_SIZE), "fy_buf_reserve");
	fy_snap_sb_encode(b.data, &sb);
	b.len = FY_SNAP_SB_SIZE;
	if (!real)
		memset(b.data + FY_SNAP_SB_SIZE - 8, 0, 8);
	write_seed("fuzz_snapfile", name, &b);
	fy_buf_free(&b);
}

static void snap_seeds(void)
{
	snap_seed("one-region-real-checksum", 1, 16, true);
	snap_seed("one-region", 1, 16, false);
	snap_seed("three-regions", 3, 513, false);
	snap_seed("most-regions", FY_SNAP_MAX_REGIONS, 1, false);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen_seeds DIR\n");
		return 2;
	}
	root = argv[1];
	if (mkdir(root, 0755) && errno != EEXIST)
		die(root);
	receive_seeds();
	wire_seeds();
	postcopy_wire_seeds();
	memfds_seeds();
	proto_seeds();
	snap_seeds();
#ifdef FZ_HAVE_STATE
	state_seeds();
#endif
	return 0;
}
