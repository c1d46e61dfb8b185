/* SPDX-License-Identifier: MIT */
/*
 * test_inspect.c - the stream inspector (ferry_inspect_fd): what a user of
 * `ferry inspect` sees for a good stream, and for each kind of damage the
 * first problem with the offset where it is.
 *
 * Streams are built with the wire encoders, record by record, remembering
 * where each record starts, so every expected offset is exact. Damage is
 * made either by building a stream with wrong content (the encoders then
 * give valid framing) or by changing bytes after the fact (framing and
 * checksums).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>
#include <xxhash.h>

#include "ferry.h"
#include "memory/memory.h"
#include "wire/snapfile.h"
#include "wire/wire.h"

#define PAGE FY_MEM_PAGE
#define REGION_SIZE (8u << 20)
#define MAX_RECS 64

/* ---- building streams ---- */

struct sb {
	struct fy_buf b;
	uint32_t seq;
	uint64_t off[MAX_RECS]; /* where each record starts */
	unsigned n;
	uint64_t pass_records, pass_bytes;
};

static void sb_rec(struct sb *s, uint32_t type, uint32_t flags,
		   const void *body, size_t len)
{
	uint32_t seq = type == FY_REC_MEMORY ? 0 : ++s->seq;

	assert_true(s->n < MAX_RECS);
	s->off[s->n++] = s->b.len;
	assert_int_equal(fy_rec_encode(&s->b, type, seq, flags, body, len), 0);
}

static void sb_start(struct sb *s)
{
	uint8_t h[FY_STREAM_HDR_SIZE];

	memset(s, 0, sizeof(*s));
	fy_buf_init(&s->b);
	fy_stream_hdr_encode(h);
	assert_int_equal(fy_buf_put(&s->b, h, sizeof(h)), 0);
}

static void sb_body(struct sb *s, uint32_t type, struct fy_buf *body)
{
	sb_rec(s, type, 0, body->data, body->len);
	fy_buf_free(body);
}

static void sb_hello(struct sb *s, uint64_t caps)
{
	struct fy_hello m = { .version_min = FY_PROTO_VERSION_MIN,
			      .version_max = FY_PROTO_VERSION_MAX,
			      .capabilities = caps,
			      .boot_id = "b00t", .software = "ferry test" };
	struct fy_buf b;

	fy_buf_init(&b);
	assert_int_equal(fy_hello_encode(&b, &m), 0);
	sb_body(s, FY_REC_HELLO, &b);
}

static void sb_config(struct sb *s)
{
	static struct fy_config_msg m;
	struct fy_buf b;

	memset(&m, 0, sizeof(m));
	m.page_size = PAGE;
	m.nregions = 2;
	m.regions[0] = (struct fy_region_desc){ 0, REGION_SIZE, "ram0" };
	m.regions[1] = (struct fy_region_desc){ 1ull << 32, REGION_SIZE,
						"ram1" };
	fy_buf_init(&b);
	assert_int_equal(fy_config_encode(&b, &m), 0);
	sb_body(s, FY_REC_CONFIG, &b);
}

static void sb_pass_begin(struct sb *s, uint32_t pass, bool final)
{
	struct fy_pass_begin m = { pass, final, 4 * PAGE };
	struct fy_buf b;

	fy_buf_init(&b);
	assert_int_equal(fy_pass_begin_encode(&b, &m), 0);
	sb_body(s, FY_REC_PASS_BEGIN, &b);
	s->pass_records = s->pass_bytes = 0;
}

static void sb_pass_end(struct sb *s, uint32_t pass)
{
	struct fy_pass_end m = { pass, 0, s->pass_records, s->pass_bytes };
	struct fy_buf b;

	fy_buf_init(&b);
	assert_int_equal(fy_pass_end_encode(&b, &m), 0);
	sb_body(s, FY_REC_PASS_END, &b);
}

/* A memory record of @npages pages of @region at @offset: the pages set in
 * @zeros are zero (sent as a map when @zeros is not 0), the others carry a
 * compressible pattern, raw or with @codec. */
static void sb_mem(struct sb *s, uint32_t region, uint64_t offset,
		   unsigned npages, uint64_t zeros, unsigned codec,
		   uint32_t rflags)
{
	struct fy_mem_hdr m = { region, 0, offset, (uint64_t)npages * PAGE };
	uint8_t hdr[FY_MEM_HDR_SIZE], word[8];
	struct fy_buf body, pages;
	unsigned nz = 0;

	fy_buf_init(&body);
	fy_buf_init(&pages);
	for (unsigned i = 0; i < npages; i++) {
		uint8_t pg[PAGE];

		if (zeros & (1ull << i))
			continue;
		memset(pg, 'a' + (int)(i % 26), sizeof(pg));
		fy_put_u64(pg, offset + i * PAGE);
		assert_int_equal(fy_buf_put(&pages, pg, sizeof(pg)), 0);
		nz++;
	}
	m.flags = (zeros ? FY_MEMF_ZMAP : 0) | codec << FY_MEMF_CODEC_SHIFT;
	fy_mem_hdr_encode(&m, hdr);
	assert_int_equal(fy_buf_put(&body, hdr, sizeof(hdr)), 0);
	if (zeros) {
		fy_put_u64(word, zeros);
		assert_int_equal(fy_buf_put(&body, word, 8), 0);
	}
	if (codec) {
		struct fy_codec *c;
		long n;

		assert_int_equal(fy_codec_new(codec, 0, &c), 0);
		assert_int_equal(fy_buf_reserve(&body, pages.len), 0);
		n = fy_codec_compress(c, pages.data, pages.len,
				      body.data + body.len, pages.len);
		assert_true(n > 0);
		body.len += (size_t)n;
		fy_codec_free(c);
	} else if (pages.len) {
		assert_int_equal(fy_buf_put(&body, pages.data, pages.len), 0);
	}
	sb_rec(s, FY_REC_MEMORY, rflags, body.data, body.len);
	s->pass_records++;
	s->pass_bytes += m.length;
	fy_buf_free(&body);
	fy_buf_free(&pages);
}

/* A tiny device, so STATE holds a real section. */
struct uart {
	uint8_t lsr;
	uint32_t count;
	uint8_t ring[8];
};

static int uart_visit(ferry_visitor *v, void *dev)
{
	struct uart *u = dev;

	ferry_visit_u8(v, "lsr", &u->lsr, 0x60, FERRY_FIELD_MUST);
	ferry_visit_u32(v, "count", &u->count, 0, FERRY_FIELD_SKIPPABLE);
	ferry_visit_bytes(v, "ring", u->ring, sizeof(u->ring),
			  FERRY_FIELD_MUST);
	return ferry_visit_error(v);
}

static const struct ferry_device_type uart_type = {
	.name = "uart", .version = 3, .size = sizeof(struct uart),
	.visit = uart_visit,
};

static void sb_state(struct sb *s, bool end)
{
	struct ferry_buf *sec = ferry_buf_new();
	struct uart u = { 0x21, 7, "hello" };
	const void *data;
	size_t len;

	assert_non_null(sec);
	assert_int_equal(ferry_state_save(sec, &uart_type, "com1", &u, NULL, 0),
			 0);
	if (end)
		assert_int_equal(ferry_state_end(sec), 0);
	data = ferry_buf_data(sec, &len);
	sb_rec(s, FY_REC_STATE, 0, data, len);
	ferry_buf_free(sec);
}

/* The records of a whole migration up to (not including) STATE. */
static void sb_memory_phase(struct sb *s)
{
	sb_hello(s, FERRY_CAP_ALL);
	sb_config(s);
	sb_pass_begin(s, 1, false);					/* 2 */
	sb_mem(s, 0, 0, 4, 0, 0, FY_RF_CSUM_HEAD);			/* 3 */
	sb_mem(s, 1, 8 * PAGE, 8, 0x0f, 0, FY_RF_CSUM_HEAD);	/* 4 */
	sb_mem(s, 0, 64 * PAGE, 4, 0, FY_CODEC_LZ4, FY_RF_CSUM_HEAD); /* 5 */
	sb_pass_end(s, 1);						/* 6 */
	sb_pass_begin(s, 2, true);					/* 7 */
	sb_mem(s, 0, 4 * PAGE, 2, 0, 0, 0);				/* 8 */
	sb_mem(s, 0, 16 * PAGE, 3, 0x2, FY_CODEC_ZSTD, 0);		/* 9 */
	sb_pass_end(s, 2);						/* 10 */
}

static void sb_good(struct sb *s)
{
	sb_start(s);
	sb_memory_phase(s);
	sb_state(s, true);						/* 11 */
	sb_rec(s, 0x80007001u, 0, "vendor", 6);				/* 12 */
	sb_rec(s, FY_REC_SWITCHOVER, 0, NULL, 0);			/* 13 */
	sb_rec(s, FY_REC_RELEASED, 0, NULL, 0);				/* 14 */
}

/* Recompute the checksum of the record at @off after changing it. */
static void resum(struct sb *s, uint64_t off)
{
	struct fy_rec_hdr h;
	uint8_t *p = s->b.data + off;

	assert_int_equal(fy_rec_hdr_decode(p, &h), 0);
	fy_put_u64(p + FY_REC_HDR_SIZE + fy_pad8(h.length),
		   fy_rec_csum(p, p + FY_REC_HDR_SIZE,
			       fy_rec_csum_len(&h, p + FY_REC_HDR_SIZE)));
}

/* ---- running the inspector ---- */

struct seen {
	unsigned headers, records, passes, summaries, problems, regions;
	char types[MAX_RECS][16];
	char *header_json;
	char *region_json[2];
	char *pass_json[4];
	char *state_json;
	char *summary_json;
	char first_problem[512];
};

static int collect(void *opaque, const struct ferry_inspect_item *it)
{
	struct seen *s = opaque;

	if (it->problem && !s->problems++)
		snprintf(s->first_problem, sizeof(s->first_problem), "%s",
			 it->problem);
	switch (it->what) {
	case FERRY_INSPECT_HEADER:
		s->headers++;
		free(s->header_json);
		s->header_json = strdup(it->json);
		break;
	case FERRY_INSPECT_REGION:
		if (s->regions < 2)
			s->region_json[s->regions] = strdup(it->json);
		s->regions++;
		break;
	case FERRY_INSPECT_RECORD:
		if (s->records < MAX_RECS)
			snprintf(s->types[s->records], 16, "%s", it->name);
		s->records++;
		if (it->type == FY_REC_STATE && !s->state_json)
			s->state_json = strdup(it->json);
		break;
	case FERRY_INSPECT_PASS:
		if (s->passes < 4)
			s->pass_json[s->passes] = strdup(it->json);
		s->passes++;
		break;
	case FERRY_INSPECT_SUMMARY:
		s->summaries++;
		s->summary_json = strdup(it->json);
		break;
	}
	return 0;
}

static void seen_free(struct seen *s)
{
	for (int i = 0; i < 4; i++)
		free(s->pass_json[i]);
	for (int i = 0; i < 2; i++)
		free(s->region_json[i]);
	free(s->header_json);
	free(s->state_json);
	free(s->summary_json);
}

/* Inspect @len bytes of @p from a memfd (a file). */
static int run(const void *p, size_t len, unsigned flags, struct seen *seen,
	       uint64_t *off, char *err, size_t errlen)
{
	int fd = memfd_create("stream", 0), rc;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, len), (ssize_t)len);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	if (seen)
		memset(seen, 0, sizeof(*seen));
	rc = ferry_inspect_fd(fd, flags, seen ? collect : NULL, seen, off, err,
			      errlen);
	close(fd);
	return rc;
}

static void assert_contains(const char *hay, const char *needle)
{
	if (!hay || !strstr(hay, needle))
		fail_msg("\"%s\" not found in: %s", needle, hay ? hay : "(null)");
}

/* Check @s; expect @code at offset @off and a message containing @what. */
static void expect_problem(struct sb *s, int code, uint64_t off,
			   const char *what)
{
	char err[640], want[64];
	uint64_t at = 12345;
	int rc = run(s->b.data, s->b.len, FERRY_INSPECT_CHECK, NULL, &at, err,
		     sizeof(err));

	if (rc != code || at != off)
		fail_msg("expected %d at %llu, got %d at %llu: %s", code,
			 (unsigned long long)off, rc, (unsigned long long)at,
			 err);
	snprintf(want, sizeof(want), "offset %llu: ", (unsigned long long)off);
	assert_contains(err, want);
	assert_contains(err, what);
	fy_buf_free(&s->b);
}

/* ---- a good stream ---- */

static void test_good_stream_passes_check(void **state)
{
	struct sb s;
	struct seen seen;
	char err[640];
	int rc;

	(void)state;
	sb_good(&s);
	rc = run(s.b.data, s.b.len, FERRY_INSPECT_CHECK, &seen, NULL, err,
		 sizeof(err));
	if (rc)
		fail_msg("%d: %s", rc, err);
	assert_int_equal(seen.headers, 1);
	assert_int_equal(seen.records, 15);
	assert_int_equal(seen.passes, 2);
	assert_int_equal(seen.summaries, 1);
	assert_int_equal(seen.problems, 0);
	assert_string_equal(seen.types[0], "HELLO");
	assert_string_equal(seen.types[3], "MEMORY");
	assert_string_equal(seen.types[12], "0x7001?");
	/* Pass 1: 3 records, 16 pages of which 4 zero, one compressed, in
	 * two regions with their first and last offsets. */
	assert_contains(seen.pass_json[0], "\"pass\":1,\"final\":false,"
			"\"records\":3,\"bytes\":65536,\"pages\":16,"
			"\"zero_pages\":4");
	assert_contains(seen.pass_json[0], "\"compressed_records\":1");
	assert_contains(seen.pass_json[0], "{\"region\":0,\"name\":\"ram0\","
			"\"records\":2,\"bytes\":32768,\"first\":0,"
			"\"last\":262144,\"end\":278528}");
	assert_contains(seen.pass_json[0], "{\"region\":1,\"name\":\"ram1\"");
	assert_contains(seen.pass_json[1], "\"pass\":2,\"final\":true,"
			"\"records\":2");
	/* STATE decoded field by field. */
	assert_contains(seen.state_json, "\"instance\":\"com1\"");
	assert_contains(seen.state_json, "\"lsr\":33,\"count\":7");
	assert_contains(seen.summary_json, "\"records\":15");
	assert_contains(seen.summary_json, "\"memory_records\":5");
	assert_contains(seen.summary_json, "\"final_state\":\"running\","
			"\"complete\":true");
	assert_contains(seen.summary_json,
			"\"stream_bytes\":");
	seen_free(&seen);
	fy_buf_free(&s.b);
}

struct pipe_job {
	int fd;
	const uint8_t *p;
	size_t len;
};

static void *pipe_writer(void *arg)
{
	struct pipe_job *j = arg;
	size_t done = 0;

	while (done < j->len) {
		ssize_t w = write(j->fd, j->p + done, j->len - done);

		if (w <= 0)
			break;
		done += (size_t)w;
	}
	close(j->fd);
	return NULL;
}

/* A pipe (stdin) works: nothing is seeked, and a stream far larger than
 * the reader's buffer streams through. */
static void test_reads_from_a_pipe(void **state)
{
	struct pipe_job job;
	struct seen seen;
	struct sb s;
	pthread_t t;
	char err[640];
	int fds[2], rc;

	(void)state;
	signal(SIGPIPE, SIG_IGN);
	sb_start(&s);
	sb_hello(&s, FERRY_CAP_ALL);
	sb_config(&s);
	sb_pass_begin(&s, 1, true);
	for (unsigned i = 0; i < 16; i++)
		sb_mem(&s, 0, (uint64_t)i * 64 * PAGE, 64, 0, 0, 0);
	sb_pass_end(&s, 1);
	sb_state(&s, true);
	assert_true(s.b.len > 4u << 20);
	assert_int_equal(pipe(fds), 0);
	job = (struct pipe_job){ fds[1], s.b.data, s.b.len };
	assert_int_equal(pthread_create(&t, NULL, pipe_writer, &job), 0);
	memset(&seen, 0, sizeof(seen));
	rc = ferry_inspect_fd(fds[0], FERRY_INSPECT_CHECK, collect, &seen,
			      NULL, err, sizeof(err));
	close(fds[0]); /* a writer still blocked gets EPIPE */
	pthread_join(t, NULL);
	if (rc)
		fail_msg("%d: %s", rc, err);
	assert_int_equal(seen.records, 21);
	assert_contains(seen.summary_json, "\"memory_bytes\":4194304");
	assert_contains(seen.summary_json, "\"final_state\":\"loaded\"");
	seen_free(&seen);
	fy_buf_free(&s.b);
}

/* ---- damage, each found with its offset ---- */

static void test_bad_stream_header(void **state)
{
	struct sb s;

	(void)state;
	sb_good(&s);
	s.b.data[0] = 'X';
	expect_problem(&s, -EBADMSG, 0, "not a ferry stream");
	sb_good(&s);
	s.b.data[13] ^= 1;
	expect_problem(&s, -EBADMSG, 12, "stream header checksum");
	sb_good(&s);
	s.b.len = 10;
	expect_problem(&s, -EBADMSG, 0, "truncated");
}

static void test_checksum_mismatch(void **state)
{
	struct sb s;
	uint64_t at;

	(void)state;
	/* A control body. */
	sb_good(&s);
	at = s.off[1];
	s.b.data[at + FY_REC_HDR_SIZE + 2] ^= 0x40;
	expect_problem(&s, FERRY_ECHECKSUM, at, "CONFIG: checksum mismatch");
	/* Page data of a record whose checksum covers it (final pass). */
	sb_good(&s);
	at = s.off[8];
	s.b.data[at + FY_REC_HDR_SIZE + FY_MEM_HDR_SIZE + 100] ^= 1;
	expect_problem(&s, FERRY_ECHECKSUM, at, "MEMORY: checksum mismatch");
	/* The memory meta of a CSUM_HEAD record. */
	sb_good(&s);
	at = s.off[4];
	s.b.data[at + FY_REC_HDR_SIZE + FY_MEM_HDR_SIZE + 1] ^= 0x10;
	expect_problem(&s, FERRY_ECHECKSUM, at, "header and memory meta");
	/* A header field. */
	sb_good(&s);
	at = s.off[11];
	s.b.data[at + 8] ^= 0x01; /* seq */
	expect_problem(&s, FERRY_ECHECKSUM, at, "STATE: checksum mismatch");
}

/* CSUM_HEAD: page data of a live pass is not covered, by design. */
static void test_csum_head_does_not_cover_data(void **state)
{
	struct sb s;
	char err[640];

	(void)state;
	sb_good(&s);
	s.b.data[s.off[3] + FY_REC_HDR_SIZE + FY_MEM_HDR_SIZE + 5000] ^= 0xff;
	assert_int_equal(run(s.b.data, s.b.len, FERRY_INSPECT_CHECK, NULL,
			     NULL, err, sizeof(err)), 0);
	fy_buf_free(&s.b);
}

static void test_bad_padding_and_framing(void **state)
{
	struct sb s;
	uint64_t at;

	(void)state;
	sb_good(&s);
	at = s.off[0]; /* HELLO: 4+4+8+(4+4)+(4+10) = 38 bytes, 2 padding */
	s.b.data[at + FY_REC_HDR_SIZE + 39] = 7;
	expect_problem(&s, -EBADMSG, at, "padding byte 1 is 0x07");
	sb_good(&s);
	at = s.off[2];
	s.b.data[at + 12] = 0x1; /* CSUM_HEAD on PASS_BEGIN */
	expect_problem(&s, -EBADMSG, at + 12, "CSUM_HEAD on a PASS_BEGIN");
	sb_good(&s);
	at = s.off[2];
	fy_put_u32(s.b.data + at + 4, FY_REC_MAX_BODY + 1);
	expect_problem(&s, -EMSGSIZE, at + 4, "exceeds");
	sb_good(&s);
	at = s.off[9];
	s.b.len = at + 40;
	expect_problem(&s, -EBADMSG, at + 40, "ends inside a MEMORY record");
	sb_good(&s);
	s.b.len = s.off[14] + 8;
	expect_problem(&s, -EBADMSG, s.off[14], "record header truncated");
}

static void test_records_out_of_order(void **state)
{
	struct sb s;

	(void)state;
	/* Memory before any pass. */
	sb_start(&s);
	sb_hello(&s, FERRY_CAP_ALL);
	sb_config(&s);
	sb_mem(&s, 0, 0, 1, 0, 0, 0);
	expect_problem(&s, FERRY_EPROTO, s.off[2],
		       "MEMORY is not valid in state idle");
	/* CONFIG before HELLO. */
	sb_start(&s);
	sb_config(&s);
	expect_problem(&s, FERRY_EPROTO, s.off[0],
		       "CONFIG is not valid in state wait_hello");
	/* A repeated seq. */
	sb_start(&s);
	sb_hello(&s, FERRY_CAP_ALL);
	s.seq--;
	sb_config(&s);
	expect_problem(&s, FERRY_EPROTO, s.off[1], "seq 1 is not greater");
	/* An unknown mandatory record. */
	sb_start(&s);
	sb_hello(&s, FERRY_CAP_ALL);
	sb_rec(&s, 0x7001, 0, "x", 1);
	expect_problem(&s, FERRY_EUNKNOWN, s.off[1],
		       "unknown mandatory record 0x7001");
	/* A response in a source's stream. */
	sb_start(&s);
	sb_hello(&s, FERRY_CAP_ALL);
	sb_rec(&s, FY_REC_OK, 0, NULL, 0);
	expect_problem(&s, FERRY_EPROTO, s.off[1], "is a response");
}

static void test_memory_outside_regions(void **state)
{
	struct sb s;

	(void)state;
	sb_start(&s);
	sb_memory_phase(&s);
	s.b.len = s.off[8];
	s.n = 8;
	sb_mem(&s, 0, REGION_SIZE - PAGE, 2, 0, 0, 0);
	expect_problem(&s, -ERANGE, s.off[8], "outside region ram0");
	sb_start(&s);
	sb_memory_phase(&s);
	s.b.len = s.off[8];
	s.n = 8;
	sb_mem(&s, 2, 0, 1, 0, 0, 0);
	expect_problem(&s, -ERANGE, s.off[8], "region 2, only 2 configured");
	sb_start(&s);
	sb_memory_phase(&s);
	s.b.len = s.off[8];
	s.n = 8;
	sb_mem(&s, 0, 100, 1, 0, 0, 0);
	expect_problem(&s, -ERANGE, s.off[8], "outside region");
}

/* Change the memory body at @at (after its record header) and fix the
 * checksum, so only the content is wrong. */
static void poke_mem(struct sb *s, uint64_t at, size_t pos, uint8_t v)
{
	s->b.data[at + FY_REC_HDR_SIZE + pos] = v;
	resum(s, at);
}

static void test_zero_maps_and_sizes(void **state)
{
	struct sb s;
	uint64_t at;

	(void)state;
	/* A map bit past the 8 pages of the range. */
	sb_good(&s);
	at = s.off[4];
	poke_mem(&s, at, FY_MEM_HDR_SIZE + 1, 0x01);
	expect_problem(&s, -EBADMSG, at, "zero map marks pages past");
	/* One zero bit more: the payload no longer matches the pages. */
	sb_good(&s);
	at = s.off[4];
	poke_mem(&s, at, FY_MEM_HDR_SIZE, 0x1f);
	expect_problem(&s, -EBADMSG, at, "carries 16384 bytes for 3 non-zero");
	/* Unknown memory flags. */
	sb_good(&s);
	at = s.off[3];
	poke_mem(&s, at, 5, 0x10);
	expect_problem(&s, -EBADMSG, at, "unknown flags 0x1000");
	/* A corrupt compressed payload, its checksum fixed. */
	sb_good(&s);
	at = s.off[9];
	poke_mem(&s, at, FY_MEM_HDR_SIZE + 8 + 3, 0xee);
	expect_problem(&s, -EBADMSG, at, "does not decompress");
	/* A zero map although HELLO did not offer zero-pages. */
	sb_start(&s);
	sb_hello(&s, FERRY_CAP_DATA_CHECKSUM);
	sb_config(&s);
	sb_pass_begin(&s, 1, false);
	sb_mem(&s, 0, 0, 2, 1, 0, 0);
	expect_problem(&s, FERRY_EPROTO, s.off[3], "did not offer zero-pages");
}

static void test_pass_end_counts(void **state)
{
	struct sb s;

	(void)state;
	sb_start(&s);
	sb_memory_phase(&s);
	s.b.len = s.off[10];
	s.n = 10;
	s.pass_records++;
	sb_pass_end(&s, 2);
	expect_problem(&s, FERRY_EPROTO, s.off[10],
		       "pass 2: PASS_END counts 3 records / 20480 bytes, the "
		       "stream carried 2 / 20480");
	sb_start(&s);
	sb_memory_phase(&s);
	s.b.len = s.off[10];
	s.n = 10;
	sb_pass_end(&s, 7);
	expect_problem(&s, FERRY_EPROTO, s.off[10], "PASS_END of pass 7");
}

static void test_state_must_decode(void **state)
{
	struct sb s;

	(void)state;
	sb_start(&s);
	sb_memory_phase(&s);
	sb_state(&s, false); /* no STATE_END: truncated */
	expect_problem(&s, -EBADMSG, s.off[11], "STATE: state section:");
}

/* A stream that stops at a record boundary but before the migration
 * ended is incomplete. */
static void test_incomplete_stream(void **state)
{
	struct sb s;

	(void)state;
	sb_good(&s);
	s.b.len = s.off[5];
	expect_problem(&s, FERRY_EPROTO, s.off[5],
		       "ends inside pass 1 (no PASS_END)");
	sb_good(&s);
	s.b.len = s.off[7];
	expect_problem(&s, FERRY_EPROTO, s.off[7], "ends in state idle");
	sb_good(&s);
	s.b.len = FY_STREAM_HDR_SIZE;
	expect_problem(&s, FERRY_EPROTO, FY_STREAM_HDR_SIZE, "holds no record");
}

/* Without --check, problems are shown on their items and reading goes on
 * to the end. */
static void test_without_check_problems_are_items(void **state)
{
	struct seen seen;
	struct sb s;
	char err[640];

	(void)state;
	sb_good(&s);
	s.b.data[s.off[1] + FY_REC_HDR_SIZE + 2] ^= 0x40;
	assert_int_equal(run(s.b.data, s.b.len, 0, &seen, NULL, err,
			     sizeof(err)), 0);
	assert_int_equal(seen.records, 15);
	assert_int_equal(seen.problems, 1);
	assert_contains(seen.first_problem, "checksum mismatch");
	seen_free(&seen);
	fy_buf_free(&s.b);
}

static int stop_at_pass(void *opaque, const struct ferry_inspect_item *it)
{
	(void)opaque;
	return it->what == FERRY_INSPECT_PASS ? -EINTR : 0;
}

static void test_callback_stops(void **state)
{
	struct sb s;
	char err[640];
	uint64_t at;
	int fd;

	(void)state;
	sb_good(&s);
	fd = memfd_create("stream", 0);
	assert_int_equal(write(fd, s.b.data, s.b.len), (ssize_t)s.b.len);
	lseek(fd, 0, SEEK_SET);
	assert_int_equal(ferry_inspect_fd(fd, 0, stop_at_pass, NULL, &at, err,
					  sizeof(err)), -EINTR);
	assert_int_equal(at, s.off[2]);
	assert_int_equal(ferry_inspect_fd(-1, 0, NULL, NULL, NULL, NULL, 0),
			 -EINVAL);
	assert_int_equal(ferry_inspect_fd(fd, 0x80, NULL, NULL, NULL, NULL, 0),
			 -EINVAL);
	close(fd);
	fy_buf_free(&s.b);
}

/* An extra data connection: JOIN, then memory only. */
static void test_data_connection(void **state)
{
	struct fy_join j = { 42, "0123456789abcde", 1, 2 };
	struct seen seen;
	struct fy_buf b;
	struct sb s;
	char err[640];
	int rc;

	(void)state;
	sb_start(&s);
	fy_buf_init(&b);
	assert_int_equal(fy_join_encode(&b, &j), 0);
	sb_body(&s, FY_REC_JOIN, &b);
	sb_mem(&s, 0, 0, 2, 0, 0, 0);
	rc = run(s.b.data, s.b.len, FERRY_INSPECT_CHECK, &seen, NULL, err,
		 sizeof(err));
	if (rc)
		fail_msg("%d: %s", rc, err);
	assert_contains(seen.summary_json, "\"final_state\":\"joined\"");
	seen_free(&seen);
	sb_rec(&s, FY_REC_STATE, 0, NULL, 0);
	expect_problem(&s, FERRY_EPROTO, s.off[2], "STATE");
}

/* A snapshot file: after RELEASED, an INDEX of every memory record and the
 * state, and a FOOTER pointing at it. */
static void sb_snapshot_tail(struct sb *s, int64_t skew_entry,
			     int64_t skew_footer)
{
	struct fy_buf idx;
	uint8_t e[FY_INDEX_ENTRY_SIZE], foot[FY_FOOTER_BODY_SIZE];
	unsigned mem = 0;
	uint64_t at, state_off = 0;

	fy_buf_init(&idx);
	for (unsigned i = 0; i < s->n; i++) {
		struct fy_rec_hdr h;
		struct fy_mem_hdr m;
		const uint8_t *p = s->b.data + s->off[i];

		assert_int_equal(fy_rec_hdr_decode(p, &h), 0);
		if (h.type == FY_REC_STATE)
			state_off = s->off[i];
		if (h.type != FY_REC_MEMORY)
			continue;
		fy_mem_hdr_decode(p + FY_REC_HDR_SIZE, &m);
		memset(e, 0, sizeof(e));
		fy_put_u32(e, m.region);
		fy_put_u64(e + 8, m.offset);
		fy_put_u64(e + 16, m.length);
		fy_put_u64(e + 24, s->off[i] + (mem == 2 ? skew_entry : 0));
		assert_int_equal(fy_buf_put(&idx, e, sizeof(e)), 0);
		mem++;
	}
	memset(e, 0, FY_INDEX_HDR_SIZE);
	fy_put_u32(e, mem);
	fy_put_u64(e + 8, state_off);
	{
		struct fy_buf body;

		fy_buf_init(&body);
		assert_int_equal(fy_buf_put(&body, e, FY_INDEX_HDR_SIZE), 0);
		assert_int_equal(fy_buf_put(&body, idx.data, idx.len), 0);
		at = s->b.len;
		sb_rec(s, FY_REC_INDEX, 0, body.data, body.len);
		fy_buf_free(&body);
	}
	fy_put_u64(foot, at + (uint64_t)skew_footer);
	fy_put_u64(foot + 8, s->b.len - at);
	sb_rec(s, FY_REC_FOOTER, 0, foot, sizeof(foot));
	fy_buf_free(&idx);
}

static void test_snapshot_index_and_footer(void **state)
{
	struct seen seen;
	struct sb s;
	char err[640];
	int rc;

	(void)state;
	sb_good(&s);
	sb_snapshot_tail(&s, 0, 0);
	rc = run(s.b.data, s.b.len, FERRY_INSPECT_CHECK, &seen, NULL, err,
		 sizeof(err));
	if (rc)
		fail_msg("%d: %s", rc, err);
	assert_string_equal(seen.types[15], "INDEX");
	assert_string_equal(seen.types[16], "FOOTER");
	assert_contains(seen.summary_json, "\"final_state\":\"running\"");
	seen_free(&seen);
	/* Anything after the footer. */
	sb_rec(&s, 0x80007002u, 0, NULL, 0);
	expect_problem(&s, FERRY_EPROTO, s.off[17], "after the snapshot footer");
	/* An index entry that points elsewhere. */
	sb_good(&s);
	sb_snapshot_tail(&s, 8, 0);
	expect_problem(&s, -EBADMSG, s.off[15],
		       "does not list the memory records where they are");
	/* A footer that points elsewhere. */
	sb_good(&s);
	sb_snapshot_tail(&s, 0, -8);
	expect_problem(&s, -EBADMSG, s.off[16], "the footer puts the index at");
}

/* A cancelled migration's recording ends with ABORT: complete, decoded. */
static void test_abort_ends_the_stream(void **state)
{
	struct fy_error_msg m = { .code = FERRY_ECANCELED,
				  .message = "cancelled by the user" };
	struct seen seen;
	struct fy_buf b;
	struct sb s;
	char err[640];
	int rc;

	(void)state;
	sb_start(&s);
	sb_hello(&s, FERRY_CAP_ALL);
	sb_config(&s);
	sb_pass_begin(&s, 1, false);
	sb_mem(&s, 0, 0, 1, 0, 0, FY_RF_CSUM_HEAD);
	fy_buf_init(&b);
	assert_int_equal(fy_error_encode(&b, &m), 0);
	sb_body(&s, FY_REC_ABORT, &b);
	rc = run(s.b.data, s.b.len, FERRY_INSPECT_CHECK, &seen, NULL, err,
		 sizeof(err));
	if (rc)
		fail_msg("%d: %s", rc, err);
	assert_int_equal(seen.passes, 1);
	assert_contains(seen.pass_json[0], "\"ended\":false");
	assert_contains(seen.summary_json, "\"final_state\":\"aborted\","
			"\"complete\":true");
	seen_free(&seen);
	sb_rec(&s, FY_REC_SWITCHOVER, 0, NULL, 0);
	expect_problem(&s, FERRY_EPROTO, s.off[5],
		       "SWITCHOVER is not valid in state aborted");
}

/* ---- mapped snapshot files ---- */

/*
 * A mapped snapshot file written the way snapfile.h describes, with the
 * layout and superblock from the codec and every hash computed here with
 * XXH3: ram0, 32 pages at gpa 0 (every fourth page, 3, 7, ..., is zero),
 * and ram1, 8 pages at 4 GiB (pages 0-3 data, 4-7 zero); the uart's state
 * section. Page bytes depend on the global page number, so no two data
 * pages are alike.
 */
#define SNAP_RAM0 32u
#define SNAP_RAM1 8u

struct snapf {
	struct fy_snap_sb sb;
	uint8_t *f;
	size_t len;
};

static bool snap_data_page(uint64_t g)
{
	return g < SNAP_RAM0 ? g % 4 != 3 : g - SNAP_RAM0 < 4;
}

/* Encode the superblock of @s again, after a test changed a field. */
static void snap_seal(struct snapf *s)
{
	fy_snap_sb_encode(s->f, &s->sb);
}

/* Recompute the map and table hashes (after a test changed them). */
static void snap_rehash(struct snapf *s)
{
	s->sb.table_hash = XXH3_64bits(s->f + s->sb.table_offset,
				       fy_snap_table_bytes(s->sb.pages));
	s->sb.map_hash = XXH3_64bits(s->f + s->sb.map_offset,
				     fy_snap_map_bytes(s->sb.pages));
	s->sb.state_hash = XXH3_64bits(s->f + s->sb.state_offset,
				       s->sb.state_bytes);
	snap_seal(s);
}

static void snap_build(struct snapf *s)
{
	static const uint8_t zero[PAGE];
	struct ferry_buf *sec = ferry_buf_new();
	struct uart u = { 0x21, 7, "hello" };
	struct fy_snap_sb *sb = &s->sb;
	const void *state;
	size_t slen;

	memset(s, 0, sizeof(*s));
	assert_non_null(sec);
	assert_int_equal(ferry_state_save(sec, &uart_type, "com1", &u, NULL, 0),
			 0);
	assert_int_equal(ferry_state_end(sec), 0);
	state = ferry_buf_data(sec, &slen);
	sb->nregions = 2;
	sb->regions[0] = (struct fy_snap_region){ .gpa = 0,
						  .size = SNAP_RAM0 * PAGE,
						  .name = "ram0" };
	sb->regions[1] = (struct fy_snap_region){ .gpa = 1ull << 32,
						  .size = SNAP_RAM1 * PAGE,
						  .name = "ram1" };
	assert_int_equal(fy_snap_layout(sb, slen), 0);
	s->len = fy_snap_file_size(sb);
	s->f = calloc(1, s->len);
	assert_non_null(s->f);
	for (uint64_t g = 0; g < sb->pages; g++) {
		uint32_t r = g < SNAP_RAM0 ? 0 : 1;
		uint64_t p = r ? g - SNAP_RAM0 : g;
		uint8_t *slot = s->f + sb->regions[r].slot_offset + p * PAGE;
		const uint8_t *bytes = zero;

		if (snap_data_page(g)) {
			for (unsigned i = 0; i < PAGE; i++)
				slot[i] = (uint8_t)(g * 31 + i * 7 + 1);
			bytes = slot;
			s->f[sb->map_offset + g / 8] |= (uint8_t)(1u << (g % 8));
			sb->regions[r].data_pages++;
			sb->data_pages++;
		}
		fy_put_u64(s->f + sb->table_offset + g * 8,
			   XXH3_64bits_withSeed(bytes, PAGE, g));
	}
	memcpy(s->f + sb->state_offset, state, slen);
	sb->created_ns = 1765000000000000000ull;
	sb->passes = 3;
	strcpy(sb->software, "ferry test");
	snap_rehash(s);
	ferry_buf_free(sec);
}

/* Inspect @s (its first @len bytes) from a memfd, like run(). */
static int snap_run(struct snapf *s, size_t len, unsigned flags,
		    struct seen *seen, uint64_t *off, char *err, size_t errlen)
{
	return run(s->f, len, flags, seen, off, err, errlen);
}

/* Check @s and expect @code at @off with @what in the message. */
static void snap_expect(struct snapf *s, size_t len, int code, uint64_t off,
			const char *what)
{
	char err[640], want[64];
	uint64_t at = 12345;
	int rc = snap_run(s, len, FERRY_INSPECT_CHECK, NULL, &at, err,
			  sizeof(err));

	if (rc != code || at != off)
		fail_msg("expected %d at %llu, got %d at %llu: %s", code,
			 (unsigned long long)off, rc, (unsigned long long)at,
			 err);
	snprintf(want, sizeof(want), "offset %llu: ", (unsigned long long)off);
	assert_contains(err, want);
	assert_contains(err, what);
}

static void test_mapped_good_file(void **state)
{
	struct seen seen;
	struct snapf s;
	char err[640];
	int rc;

	(void)state;
	snap_build(&s);
	for (int check = 0; check < 2; check++) {
		rc = snap_run(&s, s.len, check ? FERRY_INSPECT_CHECK : 0, &seen,
			      NULL, err, sizeof(err));
		if (rc)
			fail_msg("%d: %s", rc, err);
		assert_int_equal(seen.problems, 0);
		assert_int_equal(seen.headers, 1);
		assert_contains(seen.header_json, "\"magic\":\"FERRYSNP\"");
		assert_contains(seen.header_json, "\"regions\":2,\"pages\":40,"
				"\"data_pages\":28");
		assert_contains(seen.header_json, "\"passes\":3,\"software\":"
				"\"ferry test\"");
		assert_contains(seen.header_json,
				"\"created\":\"2025-12-06T05:46:40.000000000Z\"");
		assert_int_equal(seen.regions, 2);
		assert_contains(seen.region_json[0], "\"name\":\"ram0\"");
		assert_contains(seen.region_json[0], "\"pages\":32,"
				"\"first_page\":0,\"slot_offset\":2097152,"
				"\"data_pages\":24,\"zero_pages\":8");
		assert_contains(seen.region_json[1], "\"gpa\":4294967296");
		assert_contains(seen.region_json[1], "\"first_page\":32,"
				"\"slot_offset\":4194304,\"data_pages\":4,"
				"\"zero_pages\":4");
		assert_int_equal(seen.records, 1);
		assert_string_equal(seen.types[0], "STATE");
		assert_contains(seen.state_json, "\"com1\"");
		assert_contains(seen.summary_json, check ?
				"\"pages_checked\":true" :
				"\"pages_checked\":false");
		seen_free(&seen);
	}
	free(s.f);
}

/* A flipped byte in a data slot: only --check reads the slots. */
static void test_mapped_bad_slot(void **state)
{
	struct snapf s;
	uint64_t at;

	(void)state;
	snap_build(&s);
	at = s.sb.regions[0].slot_offset + 18 * PAGE + 100;
	s.f[at] ^= 0x01;
	assert_int_equal(snap_run(&s, s.len, 0, NULL, NULL, NULL, 0), 0);
	snap_expect(&s, s.len, FERRY_ECHECKSUM, 2170880,
		    "page 18 of region ram0 (global page 18): slot does not "
		    "match its checksum");
	s.f[at] ^= 0x01;
	/* In the second region the global page counts the first's. */
	s.f[s.sb.regions[1].slot_offset + 1 * PAGE] ^= 0x80;
	snap_expect(&s, s.len, FERRY_ECHECKSUM, 4194304 + PAGE,
		    "page 1 of region ram1 (global page 33): slot does not "
		    "match");
	free(s.f);
}

static void test_mapped_bad_table(void **state)
{
	struct snapf s;
	uint64_t entry;

	(void)state;
	snap_build(&s);
	entry = s.sb.table_offset + 5 * 8;
	s.f[entry] ^= 0x04;
	snap_expect(&s, s.len, FERRY_ECHECKSUM, s.sb.table_offset,
		    "page table: checksum");
	/* The same entry with the table's hash made to match: the page
	 * check finds the slot that no longer matches its entry. */
	snap_rehash(&s);
	snap_expect(&s, s.len, FERRY_ECHECKSUM,
		    s.sb.regions[0].slot_offset + 5 * PAGE,
		    "page 5 of region ram0 (global page 5): slot does not "
		    "match its checksum");
	s.f[entry] ^= 0x04;
	/* A zero page's entry (ram1 page 6) that is not a zero page's. */
	entry = s.sb.table_offset + 38 * 8;
	s.f[entry + 7] ^= 0x40;
	snap_rehash(&s);
	snap_expect(&s, s.len, FERRY_ECHECKSUM, entry,
		    "page 6 of region ram1 (global page 38): the table entry "
		    "of a zero page");
	free(s.f);
}

static void test_mapped_bad_map(void **state)
{
	struct snapf s;
	uint64_t map;

	(void)state;
	snap_build(&s);
	map = s.sb.map_offset;
	s.f[map + 1] ^= 0x02;
	snap_expect(&s, s.len, FERRY_ECHECKSUM, map, "data map: checksum");
	/* With the hash made to match, the counts no longer do. */
	snap_rehash(&s);
	snap_expect(&s, s.len, -EBADMSG, map,
		    "data map: 27 pages hold data, the superblock's data_pages "
		    "says 28");
	s.f[map + 1] ^= 0x02;
	/* A bit moved from ram0 (page 0) to ram1 (page 4): the total holds,
	 * each region's count does not. */
	s.f[map] &= (uint8_t)~1u;
	s.f[map + 4] |= 0x10;
	snap_rehash(&s);
	snap_expect(&s, s.len, -EBADMSG,
		    FY_SNAP_REGIONS_AT + 24,
		    "region 0 (ram0): data_pages 24 in the superblock, the "
		    "data map sets 23");
	s.f[map] |= 1;
	s.f[map + 4] &= (uint8_t)~0x10u;
	/* Bit 45 is past the 40 pages. */
	s.f[map + 5] |= 0x20;
	snap_rehash(&s);
	snap_expect(&s, s.len, -EBADMSG, map, "bits past the last page (39)");
	free(s.f);
}

static void test_mapped_bad_state(void **state)
{
	char err[640], why[512], msg[600], *dump = NULL;
	struct seen seen;
	struct snapf s;
	uint64_t st;
	int code;

	(void)state;
	snap_build(&s);
	st = s.sb.state_offset;
	s.f[st + 20] ^= 0x10;
	snap_expect(&s, s.len, FERRY_ECHECKSUM, st, "state section: checksum");
	/* Without --check the problem is shown with the STATE item. */
	assert_int_equal(snap_run(&s, s.len, 0, &seen, NULL, err, sizeof(err)),
			 0);
	assert_int_equal(seen.problems, 1);
	assert_contains(seen.first_problem, "state section: checksum");
	assert_int_equal(seen.summaries, 1);
	seen_free(&seen);
	/* A section that matches its hash but does not decode fails with
	 * the state decoder's code and message. */
	memset(s.f + st, 0xee, s.sb.state_bytes);
	snap_rehash(&s);
	code = ferry_state_dump_json(s.f + st, s.sb.state_bytes, &dump, why,
				     sizeof(why));
	assert_true(code < 0);
	snprintf(msg, sizeof(msg), "state section: %s", why);
	snap_expect(&s, s.len, code, st, msg);
	free(s.f);
}

static void test_mapped_truncated_and_superblock(void **state)
{
	struct seen seen;
	struct snapf s;
	char err[640], want[128];

	(void)state;
	snap_build(&s);
	snprintf(want, sizeof(want), "the file is %zu bytes, its layout needs "
		 "%zu (truncated)", s.len - 100, s.len);
	snap_expect(&s, s.len - 100, -EBADMSG, s.len - 100, want);
	/* Truncation ends it without --check too, after the header. */
	assert_int_equal(snap_run(&s, s.len - 100, 0, &seen, NULL, err,
				  sizeof(err)),
			 -EBADMSG);
	assert_int_equal(seen.headers, 1);
	assert_int_equal(seen.regions, 0);
	seen_free(&seen);
	snap_expect(&s, 4000, -EBADMSG, 0, "shorter than its 4096-byte "
		    "superblock");
	/* A damaged superblock. */
	s.f[30] ^= 1;
	snap_expect(&s, s.len, FERRY_ECHECKSUM, 0, "superblock: superblock "
		    "checksum");
	s.f[30] ^= 1;
	s.sb.passes = 7;
	s.f[200] ^= 1;
	snap_expect(&s, s.len, FERRY_ECHECKSUM, 0, "checksum");
	free(s.f);
}

static void *snap_pipe_writer(void *arg)
{
	int *fds = arg;

	(void)!write(fds[1], "FERRYSNP", 8);
	close(fds[1]);
	return NULL;
}

/* From a pipe a mapped file cannot be read by offset: a clear refusal. */
static void test_mapped_from_a_pipe(void **state)
{
	pthread_t t;
	char err[640];
	int fds[2];

	(void)state;
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(pthread_create(&t, NULL, snap_pipe_writer, fds), 0);
	assert_int_equal(ferry_inspect_fd(fds[0], 0, NULL, NULL, NULL, err,
					  sizeof(err)),
			 -EBADMSG);
	assert_contains(err, "mapped snapshot file (magic FERRYSNP) is read by "
			"offset");
	pthread_join(t, NULL);
	close(fds[0]);
}

/* ---- ferry_snapshot_describe ---- */

/* Write @n bytes of @p to a new temporary file; its path into @path. */
static void temp_file(char *path, size_t cap, const void *p, size_t n)
{
	const char *dir = getenv("TMPDIR");
	int fd;

	snprintf(path, cap, "%s/ferry-test-XXXXXX", dir ? dir : "/tmp");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	close(fd);
}

static void test_describe(void **state)
{
	struct ferry_snapshot_info info;
	struct snapf s;
	char path[256], err[600];
	void *st = NULL;
	size_t slen = 0;
	int rc;

	(void)state;
	snap_build(&s);
	temp_file(path, sizeof(path), s.f, s.len);
	rc = ferry_snapshot_describe(path, &info, &st, &slen, err, sizeof(err));
	if (rc)
		fail_msg("%d: %s", rc, err);
	assert_int_equal(info.format_version, 1);
	assert_int_equal(info.page_size, PAGE);
	assert_int_equal(info.nregions, 2);
	assert_string_equal(info.regions[0].name, "ram0");
	assert_int_equal(info.regions[0].size, SNAP_RAM0 * PAGE);
	assert_int_equal(info.regions[0].data_pages, 24);
	assert_string_equal(info.regions[1].name, "ram1");
	assert_int_equal(info.regions[1].gpa, 1ull << 32);
	assert_int_equal(info.regions[1].data_pages, 4);
	assert_int_equal(info.pages, 40);
	assert_int_equal(info.data_pages, 28);
	assert_int_equal(info.file_bytes, s.len);
	assert_int_equal(info.image_digest,
			 XXH3_64bits(s.f + s.sb.table_offset, 40 * 8));
	assert_int_equal(info.created_ns, s.sb.created_ns);
	assert_int_equal(info.passes, 3);
	assert_string_equal(info.software, "ferry test");
	assert_int_equal(slen, s.sb.state_bytes);
	assert_memory_equal(st, s.f + s.sb.state_offset, slen);
	free(st);
	/* The state is optional. */
	assert_int_equal(ferry_snapshot_describe(path, &info, NULL, NULL, err,
						 sizeof(err)),
			 0);
	/* A damaged state section is refused even when not asked for. */
	s.f[s.sb.state_offset + 3] ^= 1;
	unlink(path);
	temp_file(path, sizeof(path), s.f, s.len);
	assert_int_equal(ferry_snapshot_describe(path, &info, &st, &slen, err,
						 sizeof(err)),
			 FERRY_ECHECKSUM);
	assert_contains(err, "state section: checksum");
	assert_null(st);
	assert_int_equal(slen, 0);
	/* A truncated file. */
	unlink(path);
	temp_file(path, sizeof(path), s.f, s.len - 1);
	assert_int_equal(ferry_snapshot_describe(path, &info, NULL, NULL, err,
						 sizeof(err)),
			 -EBADMSG);
	assert_contains(err, "(truncated)");
	unlink(path);
	free(s.f);
	assert_int_equal(ferry_snapshot_describe(path, &info, NULL, NULL, err,
						 sizeof(err)),
			 -ENOENT);
	assert_contains(err, path);
	assert_int_equal(ferry_snapshot_describe(path, &info, &st, NULL, err,
						 sizeof(err)),
			 -EINVAL);
}

/* An older ferry's snapshot is a stream: describe says what it is. */
static void test_describe_stream_snapshot(void **state)
{
	struct ferry_snapshot_info info;
	char path[256], err[600];
	struct sb s;

	(void)state;
	sb_good(&s);
	sb_snapshot_tail(&s, 0, 0);
	temp_file(path, sizeof(path), s.b.data, s.b.len);
	assert_int_equal(ferry_snapshot_describe(path, &info, NULL, NULL, err,
						 sizeof(err)),
			 -EBADMSG);
	assert_contains(err, "stream-format snapshot");
	assert_contains(err, "VM's options");
	unlink(path);
	fy_buf_free(&s.b);
}

/* The JSON of every postcopy record, one after the other. */
static int collect_postcopy(void *opaque, const struct ferry_inspect_item *it)
{
	char *out = opaque;
	size_t n = strlen(out);

	if (it->what == FERRY_INSPECT_RECORD &&
	    (it->type == FY_REC_DISCARD || it->type == FY_REC_POSTCOPY ||
	     it->type == FY_REC_POSTCOPY_END || it->type == FY_REC_RESUME ||
	     it->type == FY_REC_HELLO))
		snprintf(out + n, 2048 - n, "%s %s\n", it->name, it->json);
	return 0;
}

/* DISCARD, STATE, POSTCOPY, one pushed MEMORY record (with @mem_flags)
 * and POSTCOPY_END. */
static void sb_postcopy_tail(struct sb *s, uint32_t mem_flags)
{
	struct fy_page_range r[2] = { { 0, 4, 2 }, { 1, 0, 3 } };
	struct fy_postcopy p = { 5 };
	struct fy_postcopy_end e = { 1, 2 * PAGE };
	struct fy_buf b;

	fy_buf_init(&b);
	assert_int_equal(fy_discard_encode(&b, r, 2), 0);
	sb_body(s, FY_REC_DISCARD, &b);
	sb_state(s, true);
	fy_buf_init(&b);
	assert_int_equal(fy_postcopy_encode(&b, &p), 0);
	sb_body(s, FY_REC_POSTCOPY, &b);
	sb_mem(s, 0, 4 * PAGE, 2, 0, 0, mem_flags);
	fy_buf_init(&b);
	assert_int_equal(fy_postcopy_end_encode(&b, &e), 0);
	sb_body(s, FY_REC_POSTCOPY_END, &b);
}

/*
 * A capture of a postcopy migration decodes and passes every check when
 * the source's HELLO offered the bit (with multi-channel, which it
 * needs): DISCARD, POSTCOPY and POSTCOPY_END show their numbers, and the
 * stream ends with the guest running. Without the bit the same records
 * are out of order, as a destination would find them.
 */
static void test_postcopy_stream(void **state)
{
	char err[640], seen[2048] = "";
	struct sb s;
	uint64_t off;
	int rc;

	(void)state;
	sb_start(&s);
	sb_hello(&s, FERRY_CAP_ALL | FERRY_CAP_POSTCOPY);
	sb_config(&s);
	sb_pass_begin(&s, 1, false);
	sb_mem(&s, 0, 0, 4, 0, 0, FY_RF_CSUM_HEAD);
	sb_pass_end(&s, 1);
	sb_postcopy_tail(&s, 0);
	{
		int fd = memfd_create("stream", 0);

		assert_true(fd >= 0);
		assert_int_equal(write(fd, s.b.data, s.b.len), (ssize_t)s.b.len);
		assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
		rc = ferry_inspect_fd(fd, FERRY_INSPECT_CHECK, collect_postcopy,
				      seen, &off, err, sizeof(err));
		close(fd);
	}
	if (rc)
		fail_msg("%d: %s", rc, err);
	assert_contains(seen, "\"postcopy\",\"local-fds\",\"keepalive\",\"device-fds\",\"postcopy-keepalive\"]");
	assert_contains(seen, "DISCARD {\"entries\":2,\"pages\":5}");
	assert_contains(seen, "POSTCOPY {\"discarded\":5}");
	assert_contains(seen, "POSTCOPY_END {\"records\":1,\"bytes\":8192}");
	fy_buf_free(&s.b);

	/* The same without the bit: DISCARD is refused where it stands. */
	sb_start(&s);
	sb_hello(&s, FERRY_CAP_ALL & ~FERRY_CAP_POSTCOPY);
	sb_config(&s);
	sb_pass_begin(&s, 1, false);
	sb_mem(&s, 0, 0, 4, 0, 0, FY_RF_CSUM_HEAD);
	sb_pass_end(&s, 1);
	sb_postcopy_tail(&s, 0);
	expect_problem(&s, FERRY_EPROTO, s.off[5],
		       "DISCARD needs the postcopy capability");

	/* After POSTCOPY a record's checksum must cover its pages. */
	sb_start(&s);
	sb_hello(&s, FERRY_CAP_ALL | FERRY_CAP_POSTCOPY);
	sb_config(&s);
	sb_postcopy_tail(&s, FY_RF_CSUM_HEAD);
	expect_problem(&s, FERRY_EPROTO, s.off[5], "with CSUM_HEAD");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_stream_passes_check),
		cmocka_unit_test(test_reads_from_a_pipe),
		cmocka_unit_test(test_bad_stream_header),
		cmocka_unit_test(test_checksum_mismatch),
		cmocka_unit_test(test_csum_head_does_not_cover_data),
		cmocka_unit_test(test_bad_padding_and_framing),
		cmocka_unit_test(test_records_out_of_order),
		cmocka_unit_test(test_memory_outside_regions),
		cmocka_unit_test(test_zero_maps_and_sizes),
		cmocka_unit_test(test_pass_end_counts),
		cmocka_unit_test(test_state_must_decode),
		cmocka_unit_test(test_incomplete_stream),
		cmocka_unit_test(test_without_check_problems_are_items),
		cmocka_unit_test(test_callback_stops),
		cmocka_unit_test(test_data_connection),
		cmocka_unit_test(test_snapshot_index_and_footer),
		cmocka_unit_test(test_abort_ends_the_stream),
		cmocka_unit_test(test_postcopy_stream),
		cmocka_unit_test(test_mapped_good_file),
		cmocka_unit_test(test_mapped_bad_slot),
		cmocka_unit_test(test_mapped_bad_table),
		cmocka_unit_test(test_mapped_bad_map),
		cmocka_unit_test(test_mapped_bad_state),
		cmocka_unit_test(test_mapped_truncated_and_superblock),
		cmocka_unit_test(test_mapped_from_a_pipe),
		cmocka_unit_test(test_describe),
		cmocka_unit_test(test_describe_stream_snapshot),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
