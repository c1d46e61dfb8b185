// SPDX-License-Identifier: MIT
/*
 * hostile_strangers.c - strangers on the destination's port while a
 * migration runs on three connections (the main one and two data
 * connections). Between the first data connection's JOIN and the
 * second's, a stranger sends garbage, a JOIN that is corrupt, malformed,
 * unauthenticated or replayed, or nothing at all. Whatever it does, it is
 * dropped on its own connection (and the log says so), the second data
 * connection still joins at once, and the migration completes with every
 * page where the source put it (hostile.c checks the region and that the
 * guest ran once).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ferry.h"
#include "hostile_cases.h"
#include "hostile_peer.h"
#include "migrate/channels.h"

#ifdef FERRY_CAP_MULTI_CHANNEL

/* The source's connections: the main one and two data connections. */
#define CHANNELS 3

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A JOIN record with this session's credentials (token bit flipped by
 * @flip), after the stream header. */
static void b_join_as(struct fy_buf *b, const struct ctx *c, uint8_t flip,
		      uint32_t index, uint32_t channels)
{
	struct fy_join j = { .session_id = c->session_id, .index = index,
			     .channels = channels };
	uint8_t sh[FY_STREAM_HDR_SIZE];
	struct fy_buf body;

	memcpy(j.token, c->token, sizeof(j.token));
	j.token[3] ^= flip;
	fy_stream_hdr_encode(sh);
	fy_buf_put(b, sh, sizeof(sh));
	fy_buf_init(&body);
	fy_join_encode(&body, &j);
	b_body_rec(b, FY_REC_JOIN, 1, &body);
}

/* Data connection @index joins (within a second: nothing may hold it up). */
static struct ctx *join_as(struct ctx *c, uint32_t index)
{
	struct ctx *d = data_connect(c);
	uint64_t t0 = ms_now();
	struct fy_buf b;

	if (!d || d->failed) {
		data_close(c, d);
		return NULL;
	}
	fy_buf_init(&b);
	b_join_as(&b, c, 0, index, CHANNELS);
	put_buf(d, &b);
	fy_buf_free(&b);
	if (!expect_ok(d, 1, NULL, 0, NULL)) {
		data_close(c, d);
		return NULL;
	}
	/* A join held up behind a stranger would wait out FY_JOIN_WAIT_MS;
	 * the bound leaves room for a sanitizer build on a busy machine. */
	if (ms_now() - t0 > 3000)
		FAIL(c, "data connection %u took %llu ms to join", index,
		     (unsigned long long)(ms_now() - t0));
	return d;
}

/* @npages pages at @page on data connection @d; the region must hold them. */
static void data_mem(struct ctx *c, struct ctx *d, uint64_t page,
		     uint64_t npages, uint64_t tag)
{
	struct fy_buf b;

	fy_buf_init(&b);
	b_mem(&b, 0, 0, page * PAGE, npages * PAGE, npages * PAGE, tag, 0);
	put_buf(d, &b);
	fy_buf_free(&b);
	if (c->shadow)
		page_fill(c->shadow + page * PAGE, npages * PAGE, tag);
}

/* A pass on all three connections, pages from @page on: PASS_END counts
 * each, and the answer names none lost. */
static bool pass3(struct ctx *c, struct ctx *d1, struct ctx *d2, uint64_t page,
		  uint32_t final)
{
	struct fy_pass_conn e[CHANNELS] = { { 0, 1, PAGE }, { 1, 1, 2 * PAGE },
					    { 2, 1, 2 * PAGE } };
	uint8_t body[256];
	size_t n;

	if (!do_pass_begin(c, final))
		return false;
	do_mem(c, page, 1, 100 + page);
	data_mem(c, d1, page + 1, 2, 200 + page);
	data_mem(c, d2, page + 3, 2, 300 + page);
	put_pass_end_conns(c, e, CHANNELS);
	if (!expect_ok(c, c->seq, body, sizeof(body), &n))
		return false;
	if (n) {
		FAIL(c, "the answer to PASS_END names lost connections");
		return false;
	}
	return true;
}

/* The rest of a migration: the final pass, state, switchover, release. */
static void finish(struct ctx *c, struct ctx *d1, struct ctx *d2)
{
	static const char blob[] = "state-despite-strangers";

	if (pass3(c, d1, d2, 8, 1) &&
	    do_simple(c, FY_REC_STATE, blob, sizeof(blob) - 1) &&
	    do_simple(c, FY_REC_SWITCHOVER, NULL, 0))
		do_released(c);
}

/* The stranger's connection ends within @ms; an ERROR before the close
 * carries @code unless ANY_CODE. */
static void dropped_within(struct ctx *c, struct ctx *x, int code, int ms)
{
	struct fy_rec_hdr h;
	struct fy_error_msg e;
	uint8_t body[512];
	size_t n;
	int rc;

	while (!(rc = next_rec_within(x, &h, body, sizeof(body), &n, ms))) {
		CHECK(c, h.type == FY_REC_ERROR,
		      "the stranger got record 0x%x, not ERROR", h.type);
		CHECK(c, !fy_error_decode(body, n, &e) &&
			 (code == ANY_CODE || e.code == code),
		      "the stranger was refused with %s, expected %s",
		      rc_name(e.code), rc_name(code));
	}
	CHECK(c, rc == -ECONNRESET,
	      "the stranger's connection was not closed within %d ms: %s", ms,
	      rc_name(rc));
}

/*
 * One stranger: what it sends (@act, or else a JOIN with this session's
 * credentials but for the bits in @flip, @index and @channels), how it is
 * refused (@code: the ERROR's code, ANY_CODE when it may simply be
 * closed), whether it is checked only after the pass (@late: silent ones,
 * closed after FY_JOIN_WAIT_MS), and what the destination's log says.
 */
struct stranger {
	struct ctx *(*act)(struct ctx *c);
	uint8_t flip;
	uint32_t index, channels;
	int code;
	bool late;
	const char *logged;
};

/* A stranger that sends @b, and is dropped (ERROR @code first, if any). */
static struct ctx *send_and_drop(struct ctx *c, struct fy_buf *b, int code)
{
	struct ctx *x = data_connect(c);

	if (x && !x->failed) {
		put_buf(x, b);
		dropped_within(c, x, code, IO_TIMEOUT_MS);
	}
	fy_buf_free(b);
	return x;
}

/* The stranger's JOIN, as @s describes it. */
static struct ctx *join_stranger(struct ctx *c, const struct stranger *s)
{
	struct fy_buf b;

	fy_buf_init(&b);
	b_join_as(&b, c, s->flip, s->index, s->channels);
	return send_and_drop(c, &b, s->code);
}

/*
 * The frame of every case: a migration on three connections with the
 * stranger @s acting between the first data connection's JOIN and the
 * second's, in the middle of pass 1.
 */
static void with_stranger(struct ctx *c, const struct stranger *s)
{
	struct ctx *d1 = NULL, *d2 = NULL, *x = NULL;
	/* The second data connection joined late: it carried nothing. */
	struct fy_pass_conn e[CHANNELS] = { { 0, 1, PAGE }, { 1, 1, 2 * PAGE },
					    { 2, 0, 0 } };
	uint8_t body[256];
	size_t n;

	if (!configured(c) || !(d1 = join_as(c, 1)) || !do_pass_begin(c, 0))
		goto out;
	do_mem(c, 0, 1, 50);
	data_mem(c, d1, 1, 2, 51);
	x = s->act ? s->act(c) : join_stranger(c, s);
	if (c->failed || !(d2 = join_as(c, 2)))
		goto out;
	put_pass_end_conns(c, e, CHANNELS);
	if (!expect_ok(c, c->seq, body, sizeof(body), &n))
		goto out;
	CHECK(c, n == 0, "the answer to PASS_END names lost connections");
	if (s->late && x)
		dropped_within(c, x, ANY_CODE, FY_JOIN_WAIT_MS + 3000);
	if (!c->failed && pass3(c, d1, d2, 3, 0))
		finish(c, d1, d2);
	if (!c->failed && c->dst)
		CHECK(c, fake_vmm_logged(c->dst, s->logged),
		      "the destination's log does not mention \"%s\"",
		      s->logged);
out:
	data_close(c, x);
	data_close(c, d1);
	data_close(c, d2);
}

#define STRANGER(name, ...)                                         \
	void c_stranger_##name(struct ctx *c)                       \
	{                                                           \
		static const struct stranger s = { __VA_ARGS__ };   \
		with_stranger(c, &s);                               \
	}

static struct ctx *s_garbage(struct ctx *c)
{
	struct fy_buf b;
	uint8_t junk[333];

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 37 + 11);
	fy_buf_init(&b);
	fy_buf_put(&b, junk, sizeof(junk));
	return send_and_drop(c, &b, ANY_CODE);
}
STRANGER(garbage, .act = s_garbage, .logged = "not a ferry stream")

/* A JOIN that would be valid (index 2, the right token) but for its
 * checksum: were it believed, it would take the second connection's
 * place. */
static struct ctx *s_bad_checksum(struct ctx *c)
{
	struct fy_buf b;

	fy_buf_init(&b);
	b_join_as(&b, c, 0, 2, CHANNELS);
	b.data[b.len - 1] ^= 0x40;
	return send_and_drop(c, &b, ANY_CODE);
}
STRANGER(join_bad_checksum, .act = s_bad_checksum,
	 .logged = "JOIN unreadable")

/* The right credentials throughout, so that nothing but the checked
 * field can be why the JOIN is refused. */
STRANGER(join_index_0, .index = 0, .channels = CHANNELS, .code = -EBADMSG,
	 .logged = "malformed JOIN")
STRANGER(join_index_out_of_range, .index = CHANNELS, .channels = CHANNELS,
	 .code = -EBADMSG, .logged = "malformed JOIN")
/* Another number of connections than the source's own JOIN gave. */
STRANGER(join_other_channel_count, .index = 5, .channels = 8,
	 .code = -ERANGE, .logged = "number of connections")
STRANGER(join_wrong_token, .flip = 0x20, .index = 2, .channels = CHANNELS,
	 .code = -EACCES, .logged = "wrong session or token")
/* The very bytes the first data connection opened with, sent again: a
 * replay, and a JOIN for an index already taken. */
STRANGER(join_replayed, .index = 1, .channels = CHANNELS, .code = -EEXIST,
	 .logged = "already joined")

/* A JOIN header announcing a megabyte of body, then nothing: the
 * destination must not wait for (or make room for) the body. */
static struct ctx *s_long_body(struct ctx *c)
{
	uint8_t sh[FY_STREAM_HDR_SIZE];
	struct fy_buf b;

	fy_buf_init(&b);
	fy_stream_hdr_encode(sh);
	fy_buf_put(&b, sh, sizeof(sh));
	b_hdr(&b, FY_REC_JOIN, 1u << 20, 1, 0);
	return send_and_drop(c, &b, -EBADMSG);
}
STRANGER(join_long_body, .act = s_long_body, .logged = "malformed JOIN")

/* Connects and says nothing: the second data connection still joins at
 * once, and the stranger is closed within FY_JOIN_WAIT_MS. */
STRANGER(silent, .act = data_connect, .late = true, .logged = "no JOIN")

/* More silent strangers than may wait at once: the oldest make room, and
 * the source's own connection still joins at once. */
static struct ctx *s_silent_flood(struct ctx *c)
{
	struct ctx *x[FY_MAX_PENDING + 4];
	size_t n = sizeof(x) / sizeof(x[0]);

	for (size_t i = 0; i < n; i++)
		x[i] = data_connect(c);
	/* The first ones are closed to make room for the later ones. */
	dropped_within(c, x[0], ANY_CODE, IO_TIMEOUT_MS);
	for (size_t i = 0; i + 1 < n; i++)
		data_close(c, x[i]);
	return x[n - 1];
}
STRANGER(silent_flood, .act = s_silent_flood, .late = true,
	 .logged = "no JOIN")

#endif /* FERRY_CAP_MULTI_CHANNEL */
