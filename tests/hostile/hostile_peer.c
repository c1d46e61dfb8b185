// SPDX-License-Identifier: MIT
/*
 * hostile_peer.c - the connection helpers of hostile_peer.h.
 */
#include "hostile_peer.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ferry.h"
#include "transport/transport.h"

/* ---- the connection ---- */

void fail_at(struct ctx *c, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (c->failed)
		return;
	c->failed = true;
	n = snprintf(c->why, sizeof(c->why), "line %d: ", line);
	va_start(ap, fmt);
	vsnprintf(c->why + n, sizeof(c->why) - (size_t)n, fmt, ap);
	va_end(ap);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Connect, retrying while the destination is not listening (yet/again). */
bool peer_connect(struct ctx *c)
{
	struct fy_uri u;
	char err[256];
	uint64_t end = now_ms() + IO_TIMEOUT_MS;
	int rc;

	if (fy_uri_parse(c->uri, &u, err, sizeof(err))) {
		FAIL(c, "bad uri %s: %s", c->uri, err);
		return false;
	}
	for (;;) {
		rc = fy_transport_connect(&u, NULL, &c->fd, err, sizeof(err));
		if (!rc)
			return true;
		if ((rc != -ECONNREFUSED && rc != -ENOENT &&
		     rc != -ECONNRESET) || now_ms() > end)
			break;
		usleep(2000);
	}
	c->fd = -1;
	FAIL(c, "cannot connect: %s", err);
	return false;
}

/* Send bytes; a destination that already closed is not an error here (the
 * response that explains why is read afterwards). */
void put(struct ctx *c, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n && !c->hup) {
		ssize_t w = send(c->fd, b, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			if (errno == EPIPE || errno == ECONNRESET)
				c->hup = true;
			else
				FAIL(c, "send: %s", strerror(errno));
			return;
		}
		b += w;
		n -= (size_t)w;
	}
}

void put_buf(struct ctx *c, struct fy_buf *b)
{
	put(c, b->data, b->len);
	fy_buf_reset(b);
}

/* Stop sending: the destination sees EOF. */
void put_eof(struct ctx *c)
{
	shutdown(c->fd, SHUT_WR);
}

/*
 * Read the next record the destination sends. Return: 0, -ECONNRESET on
 * a clean EOF, -ETIMEDOUT, or another negative code for a malformed or cut
 * record (which is a failure of the destination: its responses are
 * records like any other).
 */
int next_rec_within(struct ctx *c, struct fy_rec_hdr *h, uint8_t *body,
		    size_t cap, size_t *blen, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		const uint8_t *b;
		size_t used;
		int rc = fy_rec_decode(c->rbuf, c->rlen, h, &b, &used);

		if (rc == 0) {
			bool keepalive = h->type == FY_REC_KEEPALIVE;

			*blen = h->length < cap ? h->length : cap;
			memcpy(body, b, *blen);
			memmove(c->rbuf, c->rbuf + used, c->rlen - used);
			c->rlen -= used;
			/* Skipped, as a source skips them. */
			if (keepalive)
				continue;
			return 0;
		}
		if (rc != -EAGAIN)
			return rc;
		if (c->rlen == sizeof(c->rbuf))
			return -EMSGSIZE;

		struct pollfd pf = { .fd = c->fd, .events = POLLIN };
		uint64_t t = now_ms();

		if (t >= end)
			return -ETIMEDOUT;
		rc = poll(&pf, 1, (int)(end - t));
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			return rc ? -errno : -ETIMEDOUT;
		ssize_t r = recv(c->fd, c->rbuf + c->rlen,
				 sizeof(c->rbuf) - c->rlen, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno != ECONNRESET)
			return -errno;
		if (r <= 0)
			return c->rlen ? -EPIPE : -ECONNRESET;
		c->rlen += (size_t)r;
	}
}

int next_rec(struct ctx *c, struct fy_rec_hdr *h, uint8_t *body, size_t cap,
	     size_t *blen)
{
	return next_rec_within(c, h, body, cap, blen, IO_TIMEOUT_MS);
}

const char *rc_name(int rc)
{
	static char buf[64];

	snprintf(buf, sizeof(buf), "%d (%s)", rc, ferry_strerror(rc));
	return buf;
}

/* The destination closes the connection (nothing more is sent). */
bool expect_eof(struct ctx *c)
{
	struct fy_rec_hdr h;
	uint8_t body[512];
	size_t n;
	int rc = next_rec_within(c, &h, body, sizeof(body), &n, EOF_TIMEOUT_MS);

	if (rc == -ECONNRESET)
		return true;
	if (rc == 0)
		FAIL(c, "expected the connection to close, got record 0x%x seq %u",
		     h.type, h.seq);
	else
		FAIL(c, "expected the connection to close: %s", rc_name(rc));
	return false;
}

/*
 * The destination answers ERROR (seq @seq unless ANY_SEQ, code @code
 * unless ANY_CODE, message containing @text unless NULL), then closes.
 */
bool expect_error(struct ctx *c, uint32_t seq, int code,
		  const char *text)
{
	struct fy_rec_hdr h;
	struct fy_error_msg e;
	uint8_t body[1024];
	size_t n;
	int rc = next_rec(c, &h, body, sizeof(body), &n);

	if (rc) {
		FAIL(c, "expected ERROR, got no record: %s", rc_name(rc));
		return false;
	}
	if (h.type != FY_REC_ERROR) {
		FAIL(c, "expected ERROR, got record 0x%x seq %u", h.type, h.seq);
		return false;
	}
	if (fy_error_decode(body, n, &e)) {
		FAIL(c, "malformed ERROR body");
		return false;
	}
	if (getenv("HOSTILE_VERBOSE"))
		printf("#   ERROR seq %u %s: %s\n", h.seq, rc_name(e.code),
		       e.message);
	if (seq != ANY_SEQ && h.seq != seq) {
		FAIL(c, "ERROR has seq %u, expected %u (\"%s\")", h.seq, seq,
		     e.message);
		return false;
	}
	if (e.code >= 0 || (code != ANY_CODE && e.code != code)) {
		FAIL(c, "ERROR code %s, expected %d: \"%s\"", rc_name(e.code),
		     code, e.message);
		return false;
	}
	if (text && !strstr(e.message, text)) {
		FAIL(c, "ERROR message \"%s\" does not mention \"%s\"",
		     e.message, text);
		return false;
	}
	return expect_eof(c);
}

/* After a cut stream: at most an ERROR (never an OK), then the close. */
bool expect_cut(struct ctx *c)
{
	struct fy_rec_hdr h;
	uint8_t body[512];
	size_t n;
	int rc = next_rec(c, &h, body, sizeof(body), &n);

	if (rc == -ECONNRESET)
		return true;
	if (rc) {
		FAIL(c, "after a cut stream: %s", rc_name(rc));
		return false;
	}
	if (h.type != FY_REC_ERROR) {
		FAIL(c, "a cut request was answered with record 0x%x", h.type);
		return false;
	}
	return expect_eof(c);
}

/* The destination answers OK to @seq; its body goes to @body if given. */
bool expect_ok(struct ctx *c, uint32_t seq, uint8_t *body, size_t cap,
	       size_t *blen)
{
	struct fy_rec_hdr h;
	uint8_t tmp[1024];
	size_t n;
	int rc = next_rec(c, &h, body ? body : tmp, body ? cap : sizeof(tmp),
			  &n);

	if (rc) {
		FAIL(c, "expected OK for seq %u: %s", seq, rc_name(rc));
		return false;
	}
	if (h.type == FY_REC_ERROR) {
		struct fy_error_msg e;

		fy_error_decode(body ? body : tmp, n, &e);
		FAIL(c, "expected OK for seq %u, got ERROR %s: %s", seq,
		     rc_name(e.code), e.message);
		return false;
	}
	if (h.type != FY_REC_OK || h.seq != seq) {
		FAIL(c, "expected OK for seq %u, got 0x%x seq %u", seq, h.type,
		     h.seq);
		return false;
	}
	if (blen)
		*blen = n;
	return true;
}

/* ---- encoders of the well-formed parts ---- */

void b_rec(struct fy_buf *b, uint32_t type, uint32_t seq,
	   uint32_t flags, const void *body, size_t len)
{
	if (fy_rec_encode(b, type, seq, flags, body, len)) {
		fprintf(stderr, "internal: cannot encode record 0x%x\n", type);
		exit(99);
	}
}

void b_body_rec(struct fy_buf *b, uint32_t type, uint32_t seq,
		struct fy_buf *body)
{
	b_rec(b, type, seq, 0, body->data, body->len);
	fy_buf_free(body);
}

void b_hello(struct fy_buf *b, uint32_t seq, uint32_t vmin,
	     uint32_t vmax)
{
	struct fy_hello m = { .version_min = vmin, .version_max = vmax,
			      .capabilities = HOSTILE_CAPS };
	struct fy_buf body;

	snprintf(m.software, sizeof(m.software), "hostile sender");
	fy_buf_init(&body);
	fy_hello_encode(&body, &m);
	b_body_rec(b, FY_REC_HELLO, seq, &body);
}

void b_config(struct fy_buf *b, uint32_t seq, uint32_t page_size,
	      uint32_t nregions, uint64_t size)
{
	static struct fy_config_msg m;
	struct fy_buf body;

	memset(&m, 0, sizeof(m));
	m.page_size = page_size;
	m.nregions = nregions;
	for (uint32_t i = 0; i < nregions && i < FY_MAX_REGIONS; i++) {
		m.regions[i].gpa = i * size;
		m.regions[i].size = size;
		snprintf(m.regions[i].name, sizeof(m.regions[i].name), "ram%u",
			 i);
	}
	fy_buf_init(&body);
	if (nregions > FY_MAX_REGIONS) {
		/* Beyond what the encoder allows: write it by hand. */
		fy_buf_put_u32(&body, page_size);
		fy_buf_put_u32(&body, nregions);
		for (uint32_t i = 0; i < nregions; i++) {
			fy_buf_put_u64(&body, (uint64_t)i * size);
			fy_buf_put_u64(&body, size);
			fy_buf_put_str(&body, "ram");
		}
	} else {
		fy_config_encode(&body, &m);
	}
	b_body_rec(b, FY_REC_CONFIG, seq, &body);
}

void b_pass_begin(struct fy_buf *b, uint32_t seq, uint32_t pass,
		  uint32_t final)
{
	struct fy_pass_begin m = { pass, final, 0 };
	struct fy_buf body;

	fy_buf_init(&body);
	fy_pass_begin_encode(&body, &m);
	b_body_rec(b, FY_REC_PASS_BEGIN, seq, &body);
}

void b_pass_end(struct fy_buf *b, uint32_t seq, uint32_t pass,
		uint64_t records, uint64_t bytes)
{
	struct fy_pass_end m = { pass, 0, records, bytes };
	struct fy_buf body;

	fy_buf_init(&body);
	fy_pass_end_encode(&body, &m);
	b_body_rec(b, FY_REC_PASS_END, seq, &body);
}

void b_abort(struct fy_buf *b, uint32_t seq, int code, const char *msg)
{
	struct fy_error_msg m = { .code = code };
	struct fy_buf body;

	snprintf(m.message, sizeof(m.message), "%s", msg);
	fy_buf_init(&body);
	fy_error_encode(&body, &m);
	b_body_rec(b, FY_REC_ABORT, seq, &body);
}

/* Deterministic page contents: @tag tells cases (and pages) apart. */
void page_fill(uint8_t *p, size_t len, uint64_t tag)
{
	uint64_t x = tag * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i + 8 <= len; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		fy_put_u64(p + i, x);
	}
}

/* A MEMORY record whose header says (@region, @mflags, @offset, @length)
 * and whose body carries @dlen bytes of data. */
void b_mem(struct fy_buf *b, uint32_t region, uint32_t mflags,
	   uint64_t offset, uint64_t length, size_t dlen, uint64_t tag,
	   uint32_t rflags)
{
	struct fy_mem_hdr m = { region, mflags, offset, length };
	uint8_t *body = calloc(1, FY_MEM_HDR_SIZE + dlen);

	if (!body)
		exit(99);
	fy_mem_hdr_encode(&m, body);
	page_fill(body + FY_MEM_HDR_SIZE, dlen, tag);
	b_rec(b, FY_REC_MEMORY, 0, rflags, body, FY_MEM_HDR_SIZE + dlen);
	free(body);
}

void b_mem_body(struct fy_buf *b, const struct fy_mem_hdr *m,
		const void *rest, size_t n, uint32_t rflags)
{
	uint8_t *body = malloc(FY_MEM_HDR_SIZE + n);

	if (!body)
		exit(99);
	fy_mem_hdr_encode(m, body);
	if (n)
		memcpy(body + FY_MEM_HDR_SIZE, rest, n);
	b_rec(b, FY_REC_MEMORY, 0, rflags, body, FY_MEM_HDR_SIZE + n);
	free(body);
}

void page_pattern(uint8_t *p, size_t len, uint64_t tag)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(tag + i / 64);
}

/* Only a record header, for records the destination must refuse before
 * reading any body. */
void b_hdr(struct fy_buf *b, uint32_t type, uint32_t length,
	   uint32_t seq, uint32_t flags)
{
	struct fy_rec_hdr h = { type, length, seq, flags };

	fy_buf_reserve(b, FY_REC_HDR_SIZE);
	fy_rec_hdr_encode(&h, b->data + b->len);
	b->len += FY_REC_HDR_SIZE;
}

/* Offsets inside the last record appended to @b (of @len body bytes). */
size_t last_rec(const struct fy_buf *b, size_t body_len)
{
	return b->len - fy_rec_wire_size((uint32_t)body_len);
}

/* ---- well-formed steps ---- */

bool start(struct ctx *c)
{
	uint8_t sh[FY_STREAM_HDR_SIZE];

	if (!peer_connect(c))
		return false;
	fy_stream_hdr_encode(sh);
	put(c, sh, sizeof(sh));
	return !c->failed;
}

bool request(struct ctx *c, struct fy_buf *b)
{
	put_buf(c, b);
	return expect_ok(c, c->seq, NULL, 0, NULL);
}

bool do_hello(struct ctx *c)
{
	struct fy_buf b;
	struct fy_hello_reply r;
	uint8_t body[512];
	size_t n;

	fy_buf_init(&b);
	b_hello(&b, ++c->seq, 1, FY_PROTO_VERSION_MAX);
	put_buf(c, &b);
	fy_buf_free(&b);
	if (!expect_ok(c, c->seq, body, sizeof(body), &n))
		return false;
	if (fy_hello_reply_decode(body, n, &r)) {
		FAIL(c, "malformed answer to HELLO");
		return false;
	}
	c->session_id = r.session_id;
	memcpy(c->token, r.token, sizeof(c->token));
	return true;
}

bool do_config(struct ctx *c)
{
	struct fy_buf b;
	bool ok;

	fy_buf_init(&b);
	b_config(&b, ++c->seq, PAGE, 1, c->size);
	ok = request(c, &b);
	fy_buf_free(&b);
	return ok;
}

bool do_pass_begin(struct ctx *c, uint32_t final)
{
	struct fy_buf b;
	bool ok;

	fy_buf_init(&b);
	b_pass_begin(&b, ++c->seq, ++c->pass, final);
	c->pass_records = 0;
	c->pass_bytes = 0;
	ok = request(c, &b);
	fy_buf_free(&b);
	return ok;
}

/* Valid page data at @page: what the region must hold afterwards. */
void do_mem(struct ctx *c, uint64_t page, uint64_t npages, uint64_t tag)
{
	struct fy_buf b;
	size_t len = (size_t)(npages * PAGE);

	fy_buf_init(&b);
	b_mem(&b, 0, 0, page * PAGE, len, len, tag, 0);
	put_buf(c, &b);
	fy_buf_free(&b);
	if (c->shadow && (page + npages) * PAGE <= REGION_SIZE)
		page_fill(c->shadow + page * PAGE, len, tag);
	c->pass_records++;
	c->pass_bytes += len;
}

bool do_pass_end(struct ctx *c)
{
	struct fy_buf b;
	bool ok;

	fy_buf_init(&b);
	b_pass_end(&b, ++c->seq, c->pass, c->pass_records, c->pass_bytes);
	ok = request(c, &b);
	fy_buf_free(&b);
	return ok;
}

bool do_simple(struct ctx *c, uint32_t type, const void *body,
	       size_t len)
{
	struct fy_buf b;
	bool ok;

	fy_buf_init(&b);
	b_rec(&b, type, ++c->seq, 0, body, len);
	ok = request(c, &b);
	fy_buf_free(&b);
	return ok;
}

bool configured(struct ctx *c)
{
	return start(c) && do_hello(c) && do_config(c);
}

/* In pass 1, with page 0 already received. */
bool in_pass(struct ctx *c)
{
	if (!configured(c) || !do_pass_begin(c, 0))
		return false;
	do_mem(c, 0, 1, 1);
	return !c->failed;
}

/* A complete final pass and the state: the destination is "loaded". */
bool loaded(struct ctx *c)
{
	static const char blob[] = "hostile-state";

	if (!configured(c) || !do_pass_begin(c, 1))
		return false;
	do_mem(c, 2, 2, 7);
	return do_pass_end(c) &&
	       do_simple(c, FY_REC_STATE, blob, sizeof(blob) - 1);
}

/* RELEASED, answered OK with a valid "running" body, then the close. */
bool do_released(struct ctx *c)
{
	struct fy_buf b;
	uint8_t body[512];
	size_t n;
	struct fy_running run;

	fy_buf_init(&b);
	b_rec(&b, FY_REC_RELEASED, ++c->seq, 0, NULL, 0);
	put_buf(c, &b);
	fy_buf_free(&b);
	if (!expect_ok(c, c->seq, body, sizeof(body), &n))
		return false;
	if (fy_running_decode(body, n, &run)) {
		FAIL(c, "malformed answer to RELEASED");
		return false;
	}
	return expect_eof(c);
}

/* Send @b (the hostile part) and expect ERROR. */
void hostile(struct ctx *c, struct fy_buf *b, uint32_t seq, int code,
	     const char *text)
{
	put_buf(c, b);
	fy_buf_free(b);
	expect_error(c, seq, code, text);
}
