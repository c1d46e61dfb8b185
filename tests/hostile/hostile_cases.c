// SPDX-License-Identifier: MIT
/*
 * hostile_cases.c - the hostile cases about the protocol (data
 * connections, order, seq, unknown records) and the table of all cases
 * (the framing cases are in hostile_framing.c). Each case starts
 * with a well-formed prefix, then does one hostile thing, and checks the
 * destination's answer; hostile.c checks the rest (guest never resumed,
 * region as the well-formed part left it, a real migration afterwards).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferry.h"
#include "hostile_cases.h"
#include "hostile_peer.h"
#include "migrate/engine.h"

/* ---- cases: extra data connections (multi-channel) ---- */

#ifdef FERRY_CAP_MULTI_CHANNEL
/* A second connection to the same destination that has sent nothing. */
struct ctx *data_connect(struct ctx *c)
{
	struct ctx *d = calloc(1, sizeof(*d));

	if (!d) {
		FAIL(c, "out of memory");
		return NULL;
	}
	d->uri = c->uri;
	d->external = c->external;
	d->size = c->size;
	d->fd = -1;
	peer_connect(d);
	return d;
}

/* A second connection to the same destination, as a data connection:
 * connected, with the stream header sent. */
struct ctx *data_open(struct ctx *c)
{
	struct ctx *d = data_connect(c);
	uint8_t sh[FY_STREAM_HDR_SIZE];

	if (d && !d->failed) {
		fy_stream_hdr_encode(sh);
		put(d, sh, sizeof(sh));
	}
	return d;
}

/* Close the data connection; its failure is the case's failure. */
void data_close(struct ctx *c, struct ctx *d)
{
	if (!d)
		return;
	if (d->failed)
		FAIL(c, "on the data connection: %s", d->why);
	if (d->fd >= 0)
		close(d->fd);
	free(d);
}

static void b_join(struct fy_buf *b, const struct ctx *c, uint8_t flip,
		   uint32_t index)
{
	struct fy_join j = { .session_id = c->session_id, .index = index,
			     .channels = 2 };
	struct fy_buf body;

	memcpy(j.token, c->token, sizeof(j.token));
	j.token[7] ^= flip;
	fy_buf_init(&body);
	fy_join_encode(&body, &j);
	b_body_rec(b, FY_REC_JOIN, 1, &body);
}

/* Join with the right credentials; NULL (and the case failed) if refused. */
static struct ctx *data_join(struct ctx *c)
{
	struct ctx *d = data_open(c);
	struct fy_buf b;

	if (!d || d->failed) {
		data_close(c, d);
		return NULL;
	}
	fy_buf_init(&b);
	b_join(&b, c, 0, 1);
	put_buf(d, &b);
	fy_buf_free(&b);
	if (!expect_ok(d, 1, NULL, 0, NULL)) {
		data_close(c, d);
		return NULL;
	}
	return d;
}

/* The main connection ends the attempt with ABORT, answered OK. */
static void abort_main(struct ctx *c)
{
	struct fy_buf b;

	fy_buf_init(&b);
	b_abort(&b, ++c->seq, -ECANCELED, "end of test");
	put_buf(c, &b);
	fy_buf_free(&b);
	if (expect_ok(c, c->seq, NULL, 0, NULL))
		expect_eof(c);
}

/* A wrong token is refused on its own connection; the migration itself
 * goes on (and here ends with ABORT). */
static void join_refused(struct ctx *c, bool hello_first)
{
	struct ctx *d;
	struct fy_buf b;

	if (!start(c) || (hello_first && !do_hello(c)))
		return;
	d = data_open(c);
	if (!d || d->failed) {
		data_close(c, d);
		return;
	}
	fy_buf_init(&b);
	b_join(&b, c, hello_first ? 0x01 : 0x00, 1);
	put_buf(d, &b);
	fy_buf_free(&b);
	expect_error(d, 1, -EACCES, "refused");
	data_close(c, d);
	if (c->failed || (!hello_first && !do_hello(c)))
		return;
	if (do_config(c) && do_pass_begin(c, 0))
		abort_main(c);
}

static void c_join_wrong_token(struct ctx *c)
{
	join_refused(c, true);
}

static void c_join_before_hello(struct ctx *c)
{
	join_refused(c, false);
}

/* A second source knocking while a migration runs is told the
 * destination is busy; the running migration goes on. */
static void c_hello_on_busy_listener(struct ctx *c)
{
	struct ctx *d;
	struct fy_buf b;

	if (!configured(c))
		return;
	d = data_open(c);
	if (!d || d->failed) {
		data_close(c, d);
		return;
	}
	fy_buf_init(&b);
	b_hello(&b, 1, 1, FY_PROTO_VERSION_MAX);
	put_buf(d, &b);
	fy_buf_free(&b);
	expect_error(d, 1, -EBUSY, "busy");
	data_close(c, d);
	if (!c->failed && do_pass_begin(c, 0))
		abort_main(c);
}

/*
 * Connections refused for a wrong token must not use up the session's
 * room for data connections: after more strangers than a session may have
 * channels (each refused, then gone), the source's own one still joins.
 */
static void c_join_after_strangers(struct ctx *c)
{
	struct ctx *d;
	struct fy_buf b;
	int refused = 0;

	if (!configured(c))
		return;
	fy_buf_init(&b);
	for (int i = 0; i < FY_MAX_CHANNELS + 1 && !c->failed; i++) {
		struct fy_rec_hdr h;
		uint8_t body[512];
		size_t n;

		d = data_open(c);
		if (!d || d->failed) {
			data_close(c, d);
			break;
		}
		b_join(&b, c, 0x10, 1);
		put_buf(d, &b);
		if (!next_rec(d, &h, body, sizeof(body), &n) &&
		    h.type == FY_REC_ERROR)
			refused++;
		data_close(c, d);
	}
	fy_buf_free(&b);
	if (c->failed)
		return;
	d = data_join(c);
	if (!d) {
		snprintf(c->why, sizeof(c->why),
			 "after %d connections with a wrong token (%d refused "
			 "with ERROR, the others closed unanswered), the "
			 "source's own data connection is not accepted",
			 FY_MAX_CHANNELS + 1, refused);
		return;
	}
	/* End the session first: how it takes its data connection's
	 * close is not what this case is about. */
	abort_main(c);
	data_close(c, d);
}

/* A joined data connection misbehaves: it is refused or dropped, and the
 * main connection answers with the reason and ends the attempt. */
static void data_case(struct ctx *c, bool pass, struct fy_buf *b, int code,
		      const char *text)
{
	struct ctx *d;

	if (!configured(c) || (pass && !do_pass_begin(c, 0)))
		return;
	d = data_join(c);
	if (!d)
		return;
	put_buf(d, b);
	fy_buf_free(b);
	expect_error(c, 0, code, text);
	data_close(c, d);
}

static void c_data_memory_outside_region(struct ctx *c)
{
	struct fy_buf b;

	fy_buf_init(&b);
	b_mem(&b, 0, 0, c->size - PAGE, 2 * PAGE, 2 * PAGE, 31, 0);
	data_case(c, true, &b, -ERANGE, "data connection");
}

static void c_data_memory_outside_pass(struct ctx *c)
{
	struct fy_buf b;

	fy_buf_init(&b);
	b_mem(&b, 0, 0, 0, PAGE, PAGE, 32, 0);
	data_case(c, false, &b, FERRY_EPROTO, "outside a pass");
}

static void c_data_control_record(struct ctx *c)
{
	struct fy_buf b;

	fy_buf_init(&b);
	b_pass_end(&b, 2, 1, 0, 0);
	data_case(c, true, &b, FERRY_EPROTO, "data connection");
}

static void c_data_join_twice(struct ctx *c)
{
	struct fy_buf b;

	fy_buf_init(&b);
	b_join(&b, c, 0, 1);
	data_case(c, true, &b, FERRY_EPROTO, "data connection");
}

/* PASS_END with counts per connection; the totals are their sums. */
void b_pass_end_conns(struct fy_buf *b, uint32_t seq, uint32_t pass,
		      const struct fy_pass_conn *e, uint32_t n)
{
	struct fy_pass_end m = { .pass = pass, .nconn = n };
	struct fy_buf body;

	for (uint32_t i = 0; i < n; i++) {
		m.conn[i] = e[i];
		m.records += e[i].records;
		m.bytes += e[i].bytes;
	}
	fy_buf_init(&body);
	fy_pass_end_encode(&body, &m);
	b_body_rec(b, FY_REC_PASS_END, seq, &body);
}

/* Send the next PASS_END of this pass with counts per connection. */
void put_pass_end_conns(struct ctx *c, const struct fy_pass_conn *e,
			uint32_t n)
{
	struct fy_buf b;

	fy_buf_init(&b);
	b_pass_end_conns(&b, ++c->seq, c->pass, e, n);
	put_buf(c, &b);
	fy_buf_free(&b);
}

/* In pass 1 with page 0 on the main connection and a joined data
 * connection that sent @npages pages at page 1 as one record. */
static struct ctx *data_in_pass(struct ctx *c, uint64_t npages, uint64_t tag)
{
	struct ctx *d;
	struct fy_buf b;

	if (!in_pass(c))
		return NULL;
	d = data_join(c);
	if (!d)
		return NULL;
	fy_buf_init(&b);
	b_mem(&b, 0, 0, PAGE, npages * PAGE, npages * PAGE, tag, 0);
	put_buf(d, &b);
	fy_buf_free(&b);
	if (c->shadow)
		page_fill(c->shadow + PAGE, npages * PAGE, tag);
	return d;
}

/*
 * A data connection breaks after the source handed it more than arrived:
 * the pass completes, and the answer to PASS_END names the connection so
 * that the source sends its part again. What it did deliver stays.
 */
static void c_data_lost_in_pass(struct ctx *c)
{
	struct fy_pass_conn e[2] = { { 0, 1, PAGE }, { 1, 2, 2 * PAGE } };
	struct fy_pass_ack ack;
	struct ctx *d = data_in_pass(c, 1, 41);
	uint8_t body[256];
	size_t n;

	if (!d)
		return;
	close(d->fd); /* one record arrived, the second never will */
	d->fd = -1;
	data_close(c, d);
	put_pass_end_conns(c, e, 2);
	if (!expect_ok(c, c->seq, body, sizeof(body), &n))
		return;
	CHECK(c, !fy_pass_ack_decode(body, n, &ack) && ack.nlost == 1 &&
		 ack.lost[0] == 1,
	      "the answer to PASS_END does not name the broken connection (%zu bytes)",
	      n);
	abort_main(c);
}

/*
 * A joined connection that PASS_END does not list was given up by the
 * source: the destination ends it (whatever it still sends must not land
 * after the pass) and answers without waiting for it.
 */
static void c_data_unlisted_is_ended(struct ctx *c)
{
	struct fy_pass_conn e[1] = { { 0, 1, PAGE } };
	struct ctx *d = data_in_pass(c, 1, 42);
	uint8_t body[256];
	size_t n;

	if (!d)
		return;
	/* Whether its record lands before the end is up to the scheduler. */
	if (c->shadow)
		c->dontcare[1] = true;
	put_pass_end_conns(c, e, 1);
	if (expect_ok(c, c->seq, body, sizeof(body), &n)) {
		CHECK(c, n == 0, "the answer to PASS_END names lost connections");
		if (expect_eof(d))
			abort_main(c);
	}
	data_close(c, d);
}

/* PASS_END counts a connection that never joined. */
static void c_pass_end_counts_stranger(struct ctx *c)
{
	struct fy_pass_conn e[2] = { { 0, 1, PAGE }, { 5, 0, 0 } };
	struct fy_buf b;

	if (!in_pass(c))
		return;
	fy_buf_init(&b);
	b_pass_end_conns(&b, ++c->seq, c->pass, e, 2);
	hostile(c, &b, c->seq, FERRY_EPROTO, "joined");
}

/* A data connection delivered other bytes than PASS_END says it did. */
static void c_pass_end_conn_bytes(struct ctx *c)
{
	struct fy_pass_conn e[2] = { { 0, 1, PAGE }, { 1, 1, PAGE } };
	struct ctx *d = data_in_pass(c, 2, 43);
	struct fy_buf b;

	if (!d)
		return;
	fy_buf_init(&b);
	b_pass_end_conns(&b, ++c->seq, c->pass, e, 2);
	hostile(c, &b, c->seq, FERRY_EPROTO, "delivered");
	data_close(c, d);
}
#endif

/* ---- cases: the protocol ---- */

static void pass_end_case(struct ctx *c, uint32_t pass, uint64_t records,
			  uint64_t bytes)
{
	struct fy_buf b;

	if (!in_pass(c))
		return;
	do_mem(c, 1, 2, 2);
	fy_buf_init(&b);
	b_pass_end(&b, ++c->seq, pass, records, bytes);
	hostile(c, &b, c->seq, FERRY_EPROTO, "pass");
}

static void c_pass_end_records(struct ctx *c)
{
	pass_end_case(c, 1, 3, 3 * PAGE);
}

static void c_pass_end_bytes(struct ctx *c)
{
	pass_end_case(c, 1, 2, 2 * PAGE);
}

static void c_pass_end_pass(struct ctx *c)
{
	pass_end_case(c, 2, 2, 3 * PAGE);
}

/* After the prefix @setup, the request @type is invalid. */
static void order_case(struct ctx *c, bool (*setup)(struct ctx *),
		       uint32_t type, const char *text)
{
	struct fy_buf b;

	if (!setup(c))
		return;
	fy_buf_init(&b);
	switch (type) {
	case FY_REC_HELLO:
		b_hello(&b, ++c->seq, 1, 1);
		break;
	case FY_REC_CONFIG:
		b_config(&b, ++c->seq, PAGE, 1, c->size);
		break;
	case FY_REC_PASS_BEGIN:
		b_pass_begin(&b, ++c->seq, c->pass + 1, 0);
		break;
	case FY_REC_PASS_END:
		b_pass_end(&b, ++c->seq, c->pass, 0, 0);
		break;
	case FY_REC_MEMORY:
		b_mem(&b, 0, 0, 5 * PAGE, PAGE, PAGE, 55, 0);
		break;
	default:
		b_rec(&b, type, ++c->seq, 0, "xyz", type == FY_REC_STATE ? 3 : 0);
		break;
	}
	hostile(c, &b, type == FY_REC_MEMORY ? 0 : c->seq, FERRY_EPROTO, text);
}

static bool after_header(struct ctx *c)
{
	return start(c);
}

static bool after_hello(struct ctx *c)
{
	return start(c) && do_hello(c);
}

static bool after_pass(struct ctx *c)
{
	return in_pass(c) && do_pass_end(c);
}

static bool after_switchover(struct ctx *c)
{
	return loaded(c) && do_simple(c, FY_REC_SWITCHOVER, NULL, 0);
}

static void c_mem_before_hello(struct ctx *c)
{
	order_case(c, after_header, FY_REC_MEMORY, "MEMORY is not valid");
}

static void c_mem_outside_pass(struct ctx *c)
{
	order_case(c, configured, FY_REC_MEMORY, "idle");
}

static void c_mem_after_pass_end(struct ctx *c)
{
	order_case(c, after_pass, FY_REC_MEMORY, "idle");
}

static void c_config_before_hello(struct ctx *c)
{
	order_case(c, after_header, FY_REC_CONFIG, NULL);
}

static void c_hello_twice(struct ctx *c)
{
	order_case(c, after_hello, FY_REC_HELLO, NULL);
}

static void c_config_twice(struct ctx *c)
{
	order_case(c, configured, FY_REC_CONFIG, NULL);
}

static void c_hello_after_config(struct ctx *c)
{
	order_case(c, configured, FY_REC_HELLO, NULL);
}

static void c_pass_begin_in_pass(struct ctx *c)
{
	order_case(c, in_pass, FY_REC_PASS_BEGIN, NULL);
}

static void c_pass_end_in_idle(struct ctx *c)
{
	order_case(c, after_pass, FY_REC_PASS_END, "idle");
}

static void c_state_in_pass(struct ctx *c)
{
	order_case(c, in_pass, FY_REC_STATE, NULL);
}

static void c_switchover_before_state(struct ctx *c)
{
	order_case(c, after_pass, FY_REC_SWITCHOVER, NULL);
}

static void c_released_in_idle(struct ctx *c)
{
	order_case(c, after_pass, FY_REC_RELEASED, NULL);
}

static void c_released_before_switchover(struct ctx *c)
{
	order_case(c, loaded, FY_REC_RELEASED, NULL);
}

static void c_state_twice(struct ctx *c)
{
	order_case(c, loaded, FY_REC_STATE, NULL);
}

static void c_switchover_twice(struct ctx *c)
{
	order_case(c, after_switchover, FY_REC_SWITCHOVER, NULL);
}

static void c_pass_after_state(struct ctx *c)
{
	order_case(c, loaded, FY_REC_PASS_BEGIN, NULL);
}

/*
 * STATE right after CONFIG: no memory pass, final or otherwise, has been
 * received, so a destination that accepts it can be driven to run a guest
 * whose memory it never got.
 */
static void c_state_before_any_pass(struct ctx *c)
{
	static const char blob[] = "state-without-memory";
	struct fy_buf b;

	if (!configured(c))
		return;
	fy_buf_init(&b);
	b_rec(&b, FY_REC_STATE, ++c->seq, 0, blob, sizeof(blob) - 1);
	hostile(c, &b, c->seq, ANY_CODE, NULL);
}

static void c_state_after_live_pass_only(struct ctx *c)
{
	static const char blob[] = "state-without-final-pass";
	struct fy_buf b;

	if (!after_pass(c))
		return;
	fy_buf_init(&b);
	b_rec(&b, FY_REC_STATE, ++c->seq, 0, blob, sizeof(blob) - 1);
	hostile(c, &b, c->seq, ANY_CODE, NULL);
}

static void seq_case(struct ctx *c, uint32_t hello_seq, uint32_t config_seq)
{
	struct fy_buf b;

	if (!start(c))
		return;
	fy_buf_init(&b);
	if (hello_seq) {
		b_hello(&b, hello_seq, 1, 1);
		put_buf(c, &b);
		if (!expect_ok(c, hello_seq, NULL, 0, NULL))
			return;
		b_config(&b, config_seq, PAGE, 1, c->size);
	} else {
		b_hello(&b, config_seq, 1, 1);
	}
	hostile(c, &b, config_seq, FERRY_EPROTO, "seq");
}

static void c_seq_backwards(struct ctx *c)
{
	seq_case(c, 5, 3);
}

static void c_seq_repeated(struct ctx *c)
{
	seq_case(c, 5, 5);
}

static void c_seq_zero(struct ctx *c)
{
	seq_case(c, 0, 0);
}

static void c_seq_replayed_pass(struct ctx *c)
{
	/* A whole PASS_BEGIN replayed with the seq it had before. */
	struct fy_buf b;
	uint32_t old;

	if (!after_pass(c))
		return;
	old = c->seq - 1;
	fy_buf_init(&b);
	b_pass_begin(&b, old, 1, 0);
	hostile(c, &b, old, FERRY_EPROTO, "seq");
}

static void c_mem_with_seq(struct ctx *c)
{
	struct fy_buf b;
	uint8_t body[FY_MEM_HDR_SIZE + PAGE];
	struct fy_mem_hdr m = { 0, 0, PAGE, PAGE };

	if (!in_pass(c))
		return;
	fy_mem_hdr_encode(&m, body);
	memset(body + FY_MEM_HDR_SIZE, 0x77, PAGE);
	fy_buf_init(&b);
	b_rec(&b, FY_REC_MEMORY, 9, 0, body, sizeof(body));
	hostile(c, &b, ANY_SEQ, FERRY_EPROTO, "seq 0");
}

static void c_unknown_mandatory(struct ctx *c)
{
	struct fy_buf b;

	if (!configured(c))
		return;
	fy_buf_init(&b);
	b_hdr(&b, 0x7123, 4096, ++c->seq, 0);
	hostile(c, &b, c->seq, FERRY_EUNKNOWN, "0x7123");
}

static void c_unknown_mandatory_in_pass(struct ctx *c)
{
	struct fy_buf b;

	if (!in_pass(c))
		return;
	fy_buf_init(&b);
	b_hdr(&b, 0x00ff, 0, ++c->seq, 0);
	hostile(c, &b, c->seq, FERRY_EUNKNOWN, "0xff");
}

static void c_unknown_mandatory_with_body(struct ctx *c)
{
	/* The whole body arrives too (over a UNIX socket the destination
	 * may close with it unread). */
	static uint8_t body[1 << 20];
	struct fy_buf b;

	if (!configured(c))
		return;
	fy_buf_init(&b);
	b_rec(&b, 0x7001, ++c->seq, 0, body, sizeof(body));
	hostile(c, &b, c->seq, FERRY_EUNKNOWN, "0x7001");
}

static void c_response_ok(struct ctx *c)
{
	order_case(c, configured, FY_REC_OK, "response");
}

static void c_response_error(struct ctx *c)
{
	struct fy_buf b, body;
	struct fy_error_msg e = { .code = -EIO, .message = "fake" };

	if (!in_pass(c))
		return;
	fy_buf_init(&b);
	fy_buf_init(&body);
	fy_error_encode(&body, &e);
	b_body_rec(&b, FY_REC_ERROR, ++c->seq, &body);
	hostile(c, &b, c->seq, FERRY_EPROTO, "response");
}

static void c_hello_no_common_version(struct ctx *c)
{
	struct fy_buf b;

	if (!start(c))
		return;
	fy_buf_init(&b);
	b_hello(&b, ++c->seq, FY_PROTO_VERSION_MAX + 1,
		FY_PROTO_VERSION_MAX + 8);
	hostile(c, &b, c->seq, FERRY_EVERSION, NULL);
}

static void c_hello_trailing_bytes(struct ctx *c)
{
	struct fy_hello m = { .version_min = 1, .version_max = 1 };
	struct fy_buf b, body;

	if (!start(c))
		return;
	fy_buf_init(&b);
	fy_buf_init(&body);
	fy_hello_encode(&body, &m);
	fy_buf_put_u32(&body, 0);
	b_body_rec(&b, FY_REC_HELLO, ++c->seq, &body);
	hostile(c, &b, c->seq, -EBADMSG, "HELLO");
}

static void c_config_size_mismatch(struct ctx *c)
{
	struct fy_buf b;

	if (!start(c) || !do_hello(c))
		return;
	fy_buf_init(&b);
	b_config(&b, ++c->seq, PAGE, 1, c->size * 2);
	hostile(c, &b, c->seq, FERRY_EMISMATCH, "ram0");
}

static void c_config_two_regions(struct ctx *c)
{
	struct fy_buf b;

	if (!start(c) || !do_hello(c))
		return;
	fy_buf_init(&b);
	b_config(&b, ++c->seq, PAGE, 2, c->size);
	hostile(c, &b, c->seq, FERRY_EMISMATCH, NULL);
}

static void c_config_65_regions(struct ctx *c)
{
	struct fy_buf b;

	if (!start(c) || !do_hello(c))
		return;
	fy_buf_init(&b);
	b_config(&b, ++c->seq, PAGE, FY_MAX_REGIONS + 1, PAGE);
	hostile(c, &b, c->seq, -EBADMSG, NULL);
}

static void c_config_page_size(struct ctx *c)
{
	struct fy_buf b;

	if (!start(c) || !do_hello(c))
		return;
	fy_buf_init(&b);
	b_config(&b, ++c->seq, 3000, 1, c->size);
	hostile(c, &b, c->seq, -EBADMSG, NULL);
}

/* A rejected request ends the attempt: what follows it is never acted
 * on, even when it is already in the destination's socket buffer. */
static void c_nothing_after_error(struct ctx *c)
{
	struct fy_buf b;

	if (!in_pass(c))
		return;
	fy_buf_init(&b);
	b_config(&b, ++c->seq, PAGE, 1, c->size);
	b_mem(&b, 0, 0, 6 * PAGE, PAGE, PAGE, 66, 0); /* must not land */
	hostile(c, &b, c->seq, FERRY_EPROTO, NULL);
}

static void c_abort_is_answered(struct ctx *c)
{
	struct fy_buf b;

	if (!in_pass(c))
		return;
	fy_buf_init(&b);
	b_abort(&b, ++c->seq, -EIO, "source gives up");
	put_buf(c, &b);
	fy_buf_free(&b);
	if (expect_ok(c, c->seq, NULL, 0, NULL))
		expect_eof(c);
}

/*
 * Unknown optional records in every state, with odd bodies and seqs, are
 * skipped: in-process the migration then completes; against an external
 * destination (whose state blob this program cannot make) it ends with
 * ABORT, answered OK.
 */
static void optional_rec(struct ctx *c, uint32_t num, uint32_t seq,
			 size_t len)
{
	static uint8_t junk[PAGE + 5];
	struct fy_buf b;

	fy_buf_init(&b);
	memset(junk, 0xa5, sizeof(junk));
	b_rec(&b, FY_REC_OPTIONAL | num, seq, 0, junk, len);
	put_buf(c, &b);
	fy_buf_free(&b);
}

static void c_unknown_optional_skipped(struct ctx *c)
{
	static const char blob[] = "state-after-optional-records";
	struct fy_buf b;

	if (!start(c))
		return;
	/* 0x80000001 is not HELLO. An optional record may be a request of
	 * a newer version: it takes a seq of its own, or 0. */
	optional_rec(c, FY_REC_HELLO, ++c->seq, 0);
	optional_rec(c, 0x7123, 0, 5);
	if (!do_hello(c))
		return;
	optional_rec(c, 0x0555, ++c->seq, PAGE + 5);
	if (!do_config(c))
		return;
	optional_rec(c, 0x0400, 0, 8);
	if (!do_pass_begin(c, 0))
		return;
	do_mem(c, 0, 4, 11);
	optional_rec(c, FY_REC_MEMORY, 0, 24);
	do_mem(c, 4, 4, 12);
	if (!do_pass_end(c))
		return;
	if (c->external) {
		fy_buf_init(&b);
		b_abort(&b, ++c->seq, -ECANCELED, "end of test");
		put_buf(c, &b);
		fy_buf_free(&b);
		if (expect_ok(c, c->seq, NULL, 0, NULL))
			expect_eof(c);
		return;
	}
	if (!do_pass_begin(c, 1))
		return;
	do_mem(c, 8, 8, 13);
	optional_rec(c, 0x7fff, ++c->seq, 1);
	if (!do_pass_end(c) ||
	    !do_simple(c, FY_REC_STATE, blob, sizeof(blob) - 1))
		return;
	optional_rec(c, 0x0300, 0, 16);
	if (!do_simple(c, FY_REC_SWITCHOVER, NULL, 0))
		return;
	optional_rec(c, 0x0001, 0, 3);
	do_released(c);
}

/* ---- the table ---- */

#define CASE(n, f) { #n, c_##n, f, NULL }
const struct hcase hostile_cases[] = {
	CASE(stream_magic, 0),
	CASE(stream_version, 0),
	CASE(stream_flags, 0),
	CASE(stream_checksum, 0),
	CASE(mem_region_index, 0),
	CASE(mem_region_huge, 0),
	CASE(mem_offset_past_end, 0),
	CASE(mem_offset_at_end, 0),
	CASE(mem_tail_past_end, 0),
	CASE(mem_offset_wraps, 0),
	CASE(mem_length_wraps, 0),
	CASE(mem_length_4gib, 0),
	CASE(mem_length_longer, 0),
	CASE(mem_length_shorter, 0),
	CASE(mem_unaligned_offset, 0),
	CASE(mem_unaligned_length, 0),
	CASE(mem_unknown_flags, 0),
	CASE(mem_too_short, 0),
	CASE(rec_length_4gib, 0),
	CASE(rec_length_over_max, 0),
	CASE(rec_unknown_flag, 0),
	CASE(rec_csum_head_on_control, 0),
	CASE(rec_type_zero, 0),
	CASE(cut_stream_header, 0),
	CASE(cut_record_header, 0),
	CASE(cut_control_body, 0),
	CASE(cut_before_trailer, 0),
	CASE(cut_in_trailer, 0),
	CASE(cut_mem_header, 0),
	CASE(cut_mem_data, 0),
	CASE(cut_mem_trailer, 0),
	CASE(csum_header, 0),
	CASE(csum_body, 0),
	CASE(csum_trailer, 0),
	CASE(csum_mem_header, 0),
	CASE(csum_mem_data, 0),
	CASE(csum_mem_trailer, 0),
	CASE(csum_optional, 0),
	CASE(padding_control, 0),
	CASE(padding_optional, 0),
	CASE(zmap_bits_past_range, 0),
	CASE(zmap_payload_mismatch, 0),
	CASE(zmap_missing, 0),
	CASE(zmap_valid_then_error, 0),
	CASE(codec_unknown, 0),
	CASE(lz4_garbage, 0),
	CASE(lz4_unpacks_too_long, 0),
	CASE(lz4_cut_payload, 0),
	CASE(zstd_unpacks_too_long, 0),
	CASE(zstd_cut_payload, 0),
	CASE(packed_not_smaller, 0),
	CASE(zstd_valid_then_error, 0),
#ifdef FERRY_CAP_MULTI_CHANNEL
	CASE(join_wrong_token, 0),
	CASE(join_before_hello, 0),
	CASE(join_after_strangers, 0),
	CASE(hello_on_busy_listener, 0),
	CASE(data_memory_outside_region, 0),
	CASE(data_memory_outside_pass, 0),
	CASE(data_control_record, 0),
	CASE(data_join_twice, 0),
	CASE(data_lost_in_pass, 0),
	CASE(data_unlisted_is_ended, 0),
	CASE(pass_end_counts_stranger, 0),
	CASE(pass_end_conn_bytes, 0),
	CASE(stranger_garbage, INPROC | SUCCEEDS),
	CASE(stranger_join_bad_checksum, INPROC | SUCCEEDS),
	CASE(stranger_join_index_0, INPROC | SUCCEEDS),
	CASE(stranger_join_index_out_of_range, INPROC | SUCCEEDS),
	CASE(stranger_join_other_channel_count, INPROC | SUCCEEDS),
	CASE(stranger_join_wrong_token, INPROC | SUCCEEDS),
	CASE(stranger_join_replayed, INPROC | SUCCEEDS),
	CASE(stranger_join_long_body, INPROC | SUCCEEDS),
	CASE(stranger_silent, INPROC | SUCCEEDS),
	CASE(stranger_silent_flood, INPROC | SUCCEEDS),
#endif
	CASE(pass_end_records, 0),
	CASE(pass_end_bytes, 0),
	CASE(pass_end_pass, 0),
	CASE(mem_before_hello, 0),
	CASE(mem_outside_pass, 0),
	CASE(mem_after_pass_end, 0),
	CASE(config_before_hello, 0),
	CASE(hello_twice, 0),
	CASE(config_twice, 0),
	CASE(hello_after_config, 0),
	CASE(pass_begin_in_pass, 0),
	CASE(pass_end_in_idle, 0),
	CASE(state_in_pass, 0),
	CASE(switchover_before_state, 0),
	CASE(released_in_idle, 0),
	CASE(released_before_switchover, INPROC),
	CASE(state_twice, INPROC),
	CASE(switchover_twice, INPROC),
	CASE(pass_after_state, INPROC),
	CASE(state_before_any_pass, INPROC),
	CASE(state_after_live_pass_only, INPROC),
	CASE(seq_backwards, 0),
	CASE(seq_repeated, 0),
	CASE(seq_zero, 0),
	CASE(seq_replayed_pass, 0),
	CASE(mem_with_seq, 0),
	CASE(unknown_mandatory, 0),
	CASE(unknown_mandatory_in_pass, 0),
	CASE(unknown_mandatory_with_body, INPROC),
	CASE(response_ok, 0),
	CASE(response_error, 0),
	CASE(hello_no_common_version, 0),
	CASE(hello_trailing_bytes, 0),
	CASE(config_size_mismatch, 0),
	CASE(config_two_regions, 0),
	CASE(config_65_regions, 0),
	CASE(config_page_size, 0),
	CASE(nothing_after_error, INPROC),
	CASE(abort_is_answered, 0),
	CASE(unknown_optional_skipped, SUCCEEDS),
#ifdef FERRY_CAP_LOCAL_FDS
	CASE(memory_fds_without_fds, 0),
	CASE(memory_fds_pipe, 0),
	CASE(memory_fds_short_file, 0),
	CASE(memory_fds_other_size, 0),
	CASE(memory_fds_short_body, 0),
	CASE(memory_fds_in_pass, 0),
#endif
};
const size_t hostile_ncases = sizeof(hostile_cases) / sizeof(hostile_cases[0]);
