// SPDX-License-Identifier: MIT
/*
 * send.c - the source side: precopy passes until the predicted downtime
 * fits the limit, then pause, final pass, state and the switchover
 * handshake. Any failure before "released" resumes the guest untouched.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "migrate/channels.h"
#include "migrate/engine.h"
#include "migrate/sender.h"
#include "migrate/snapfile.h"
#include "proto/proto.h"
#include "transport/transport.h"


/* The receiver may have explained a broken connection with an ERROR
 * record before closing: read it, briefly, to report its words. */
static void salvage_peer_error(struct sender *x)
{
	struct fy_rec_hdr h;
	struct fy_error_msg e;
	int skip = 4;

	/* Keep-alives the destination sent before its ERROR come first. */
	do {
		if (x->ch.fd < 0 || fy_chan_recv_hdr(&x->ch, &h, 500))
			return;
	} while (h.type == FY_REC_KEEPALIVE && !fy_chan_skip_body(&x->ch, &h) &&
		 --skip);
	if (fy_rec_number(h.type) != FY_REC_ERROR ||
	    fy_chan_recv_body(&x->ch, &h) ||
	    fy_error_decode(x->ch.rx.in.data, x->ch.rx.in.len, &e))
		return;
	fy_session_fail(x->s, FERRY_EPEER, "destination: %s (%s)", e.message,
			ferry_strerror(e.code));
}

/* Connection @c (the main one, or a data connection) timed out: the
 * destination stalled. */
int fy_snd_stall_fail(struct sender *x, struct fy_chan *c, const char *what)
{
	char why[160];
	uint64_t ns = fy_chan_stalled(c, "the destination", why, sizeof(why));

	return fy_session_stall_fail(x->s, ns, what, why);
}

int fy_snd_io_fail(struct sender *x, int rc, const char *what)
{
	if (rc == FERRY_ECANCELED)
		return fy_session_fail(x->s, rc, "cancelled during %s", what);
	/* A silent destination has no ERROR to salvage, and waiting for
	 * one would only hold the guest longer. */
	if (rc == -ETIMEDOUT)
		return fy_snd_stall_fail(x, &x->ch, what);
	salvage_peer_error(x);
	return fy_session_fail(x->s, rc, "%s: %s", what, ferry_strerror(rc));
}

/* Wait for the response to the outstanding request; body in x->ch.in. */
static int await_response(struct sender *x, const char *what)
{
	struct fy_rec_hdr h;
	struct fy_error_msg e;
	char name[32];
	int rc;

	for (;;) {
		rc = fy_chan_recv_hdr(&x->ch, &h, x->ch.answer_ms);
		if (!rc)
			rc = fy_chan_recv_body(&x->ch, &h);
		if (rc)
			return fy_snd_io_fail(x, rc, what);
		if (fy_rec_optional(h.type) &&
		    fy_rec_number(h.type) != FY_REC_OK &&
		    fy_rec_number(h.type) != FY_REC_ERROR)
			continue; /* an optional record we do not know */
		break;
	}
	rc = fy_send_sm_response(&x->sm, fy_rec_number(h.type), h.seq);
	if (rc == FERRY_EPEER) {
		if (fy_error_decode(x->ch.rx.in.data, x->ch.rx.in.len, &e))
			snprintf(e.message, sizeof(e.message), "(undecodable)");
		return fy_session_fail(x->s, FERRY_EPEER,
				       "destination refused %s: %s", what,
				       e.message);
	}
	if (rc)
		return fy_session_fail(x->s, FERRY_EPROTO,
				       "unexpected %s (seq %u) while waiting for the answer to %s",
				       fy_rec_name(h.type, name, sizeof(name)),
				       h.seq, what);
	return 0;
}

/*
 * Who may run the guest, seen from here: proto's rule (the destination
 * from the send of RELEASED on) with two facts its machine does not hold.
 * An ERROR answering RELEASED is the destination's word that it did not
 * run the guest, which gives the guest back (as an ERROR answering
 * POSTCOPY with not-run does in postcopy); and a snapshot's rename is a
 * file's RELEASED: the file, whoever restores it, has the guest.
 */
void fy_snd_sync_owner(struct sender *x)
{
	bool released = (x->sm.released || x->file_handed) &&
			!x->peer_refused && !x->released_lost;

	fy_session_set_owner(x->s, (enum ferry_owner)fy_send_owner(
					   x->sm.state, released,
					   x->sm.transitioned));
}

int fy_snd_request(struct sender *x, uint32_t type, const struct fy_buf *body,
		   const char *what)
{
	return fy_snd_request_fds(x, type, body, what, NULL, 0);
}

int fy_snd_request_fds(struct sender *x, uint32_t type,
		       const struct fy_buf *body, const char *what,
		       const int *fds, unsigned nfds)
{
	uint32_t seq;
	int rc = fy_send_sm_request(&x->sm, type, &seq);

	if (rc)
		return fy_session_fail(x->s, FERRY_EPROTO,
				       "internal: %s not valid in state %s", what,
				       fy_send_state_name(x->sm.state));
	/* RELEASED changes the owner as it is sent, not when answered: the
	 * destination may run the guest from the moment it reads it. */
	fy_snd_sync_owner(x);
	rc = nfds ? fy_chan_send_rec_fds(&x->ch, type, seq,
					 body ? body->data : NULL,
					 body ? body->len : 0, fds, nfds)
		  : fy_chan_send_rec(&x->ch, type, seq,
				     body ? body->data : NULL,
				     body ? body->len : 0);
	if (type == FY_REC_RELEASED && rc)
		x->released_unwritten = true;
	else if (type == FY_REC_RELEASED)
		x->released_marked = !fy_transport_sent_mark(x->ch.fd,
							     &x->released_mark);
	if (rc)
		return fy_snd_io_fail(x, rc, what);
	return await_response(x, what);
}

/*
 * The window made real: a data connection's send buffer holds the
 * window's chunks, so its sender blocks in sendmsg() once that many are in
 * flight, and waits for nothing else. The kernel stops growing a buffer
 * that was sized, so this (doubled for its bookkeeping) is also the most
 * it ever holds. Sized once the window is known, after HELLO.
 */
static void size_send_buffer(struct sender *x, int fd, unsigned idx)
{
	size_t want = (size_t)x->window *
		      fy_chunk_wire_size(x->s->cfg.chunk_bytes);
	int got = fy_transport_set_buffer(fd, true, want);
	char name[80];

	fy_transport_local_name(fd, name, sizeof(name));
	if (got < 0)
		fy_session_log(x->s, 2, "connection %u from %s: cannot size the send buffer: %s",
			       idx, name, ferry_strerror(got));
	else
		fy_session_log(x->s, 2, "connection %u from %s: send buffer %zu KiB for %s window of %u chunk%s (kernel: %d KiB)",
			       idx, name, want >> 10,
			       x->s->cfg.window ? "a" : "the automatic",
			       x->window, x->window == 1 ? "" : "s",
			       got >> 10);
}

static int negotiate(struct sender *x)
{
	ferry_session *s = x->s;
	struct fy_hello hello = { 0 };
	struct fy_config_msg cm = { 0 };
	struct fy_buf b;
	char mine[40];
	int rc;

	fy_buf_init(&b);
	hello.version_min = s->cfg.version_min ? s->cfg.version_min
					       : FY_PROTO_VERSION_MIN;
	hello.version_max = s->cfg.version_max ? s->cfg.version_max
					       : FY_PROTO_VERSION_MAX;
	hello.capabilities = s->cfg.capabilities;
	fy_read_boot_id(hello.boot_id, sizeof(hello.boot_id));
	snprintf(hello.software, sizeof(hello.software), "ferry %s",
		 FERRY_VERSION_STRING);
	snprintf(mine, sizeof(mine), "%s", hello.boot_id);
	rc = fy_hello_encode(&b, &hello);
	if (!rc)
		rc = fy_snd_request(x, FY_REC_HELLO, &b, "HELLO");
	if (rc)
		goto out;
	rc = fy_hello_reply_decode(x->ch.rx.in.data, x->ch.rx.in.len, &x->peer);
	x->peer.capabilities = fy_caps_settle(x->peer.capabilities &
					      fy_version_caps(x->peer.version));
	if (rc || x->peer.version < hello.version_min ||
	    x->peer.version > hello.version_max ||
	    (x->peer.capabilities & ~hello.capabilities)) {
		rc = fy_session_fail(s, FERRY_EPROTO,
				     "bad HELLO answer (version %u, capabilities 0x%llx)",
				     x->peer.version,
				     (unsigned long long)x->peer.capabilities);
		goto out;
	}
	x->same_host = mine[0] && !strcmp(mine, x->peer.boot_id);
	/* From here a busy moment on either side is filled with keep-alives,
	 * or, with an older destination, its answers may take longer. */
	fy_chan_peer_keeps(&x->ch, x->peer.capabilities & FERRY_CAP_KEEPALIVE);
	if (x->peer.capabilities & FERRY_CAP_KEEPALIVE)
		fy_keeper_start(&x->keeper, &x->ch);
	/* Within the host there is no round trip to cover, and fewer bytes
	 * queued stay in the caches the two ends share (see design-notes). */
	x->window = s->cfg.window ? s->cfg.window
		    : x->same_host ? FY_LOCAL_WINDOW : FY_DEFAULT_WINDOW;
	size_send_buffer(x, x->ch.fd, 0);
	x->csum_data = x->peer.capabilities & FERRY_CAP_DATA_CHECKSUM;
	x->sm.postcopy = x->peer.capabilities & FERRY_CAP_POSTCOPY;
	pthread_mutex_lock(&s->lock);
	s->stats.version = x->peer.version;
	s->stats.capabilities = x->peer.capabilities;
	pthread_mutex_unlock(&s->lock);

	cm.page_size = FY_PAGE_SIZE;
	cm.nregions = (uint32_t)s->nregions;
	for (size_t i = 0; i < s->nregions; i++) {
		cm.regions[i].gpa = s->regions[i].gpa;
		cm.regions[i].size = s->regions[i].size;
		snprintf(cm.regions[i].name, sizeof(cm.regions[i].name), "%s",
			 s->regions[i].name);
	}
	fy_buf_reset(&b);
	rc = fy_config_encode(&b, &cm);
	if (!rc)
		rc = fy_snd_request(x, FY_REC_CONFIG, &b, "CONFIG");
out:
	fy_buf_free(&b);
	return rc;
}

/* Bytes on the wire over every connection; read while no worker runs. */
static uint64_t wire_total(const struct sender *x)
{
	uint64_t n = fy_chan_wire_bytes(&x->ch);

	for (unsigned i = 0; i < x->nextra; i++)
		n += fy_chan_wire_bytes(&x->extra[i]);
	return n;
}

static int send_ranges(struct sender *x, uint64_t *records)
{
	ferry_session *s = x->s;
	struct fy_chunk_cursor cur = { 0 };
	struct fy_range r;
	int rc;

	while (fy_ranges_next_chunk(&x->ranges, &cur, s->cfg.chunk_bytes, &r)) {
		struct fy_mem_hdr m = { r.region, 0, r.offset, r.length };

		if (fy_cancelled(s))
			return fy_session_fail(s, FERRY_ECANCELED,
					       "cancelled during a memory pass");
		rc = fy_send_sm_data(&x->sm);
		if (!rc)
			rc = fy_chan_send_mem(&x->ch, &s->regions[r.region], &m,
					      x->paused && x->csum_data);
		if (rc)
			return fy_snd_io_fail(x, rc, "sending memory");
		(*records)++;
		fy_session_count_bytes(s, m.length);
		fy_session_progress(s);
	}
	return 0;
}

/*
 * The answer to PASS_END names the extra connections that broke before
 * delivering their part of the pass, after this side handed it to their
 * sockets: give them up, and carry what they took into the next pass.
 */
static int take_lost(struct sender *x, uint32_t pass)
{
	struct fy_pass_ack ack;
	int rc;

	if (fy_pass_ack_decode(x->ch.rx.in.data, x->ch.rx.in.len, &ack))
		return fy_session_fail(x->s, FERRY_EPROTO,
				       "malformed answer to PASS_END");
	for (uint32_t i = 0; i < ack.nlost; i++) {
		rc = fy_send_pool_lost(&x->pool, ack.lost[i], &x->carry);
		if (rc == FERRY_EPROTO)
			return fy_session_fail(x->s, rc,
					       "destination lost data connection %u, which carried nothing in pass %u",
					       ack.lost[i], pass);
		if (rc)
			return fy_session_fail(x->s, rc, "out of memory");
		fy_session_log(x->s, 1,
			       "data connection %u broke with part of pass %u; sending that part again",
			       ack.lost[i], pass);
	}
	return 0;
}

/* Publish the start of pass @pass. */
static void pass_starts(struct sender *x, uint32_t pass)
{
	ferry_session *s = x->s;

	pthread_mutex_lock(&s->lock);
	s->stats.pass = pass;
	s->stats.pass_bytes = 0;
	s->stats.pass_total = x->ranges.bytes;
	pthread_mutex_unlock(&s->lock);
}

/* One pass into a snapshot file: every page of x->ranges into its slot.
 * The bandwidth is the file's, measured over the pass. */
static int file_pass(struct sender *x, uint32_t pass)
{
	ferry_session *s = x->s;
	double secs;
	int rc;

	pass_starts(x, pass);
	rc = fy_snapw_pass(x->snap, &x->ranges, &secs);
	if (rc)
		return rc;
	x->last_pass_bytes = x->ranges.bytes;
	if ((x->ranges.bytes >= (4u << 20) || x->bw == 0) && secs > 0 &&
	    x->ranges.bytes)
		x->bw = (double)x->ranges.bytes / secs;
	pthread_mutex_lock(&s->lock);
	s->stats.mb_per_s = x->bw / 1e6;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* One pass over x->ranges, framed by the PASS_BEGIN/PASS_END barrier. */
static int send_pass(struct sender *x, uint32_t pass)
{
	ferry_session *s = x->s;
	struct fy_pass_begin pb = { pass, x->paused, x->ranges.bytes };
	struct fy_pass_end pe = { .pass = pass };
	struct fy_buf b;
	uint64_t t0, t1, t2;
	int rc;

	if (x->snap)
		return file_pass(x, pass);
	pass_starts(x, pass);

	fy_buf_init(&b);
	t0 = fy_now_ns();
	rc = fy_pass_begin_encode(&b, &pb);
	if (!rc)
		rc = fy_snd_request(x, FY_REC_PASS_BEGIN, &b, "PASS_BEGIN");
	if (rc)
		goto out;
	t1 = fy_now_ns();
	x->rtt_ns = t1 - t0; /* the channel was idle: a clean round trip */
	x->t_pass = t1;
	if (x->nextra) {
		struct fy_pass_stop stop = { fy_pc_cut, x, &x->carry };
		unsigned chan;

		/* A pass of a running guest may end early to switch to
		 * postcopy: what it did not send goes with the next set. */
		rc = fy_send_pool_pass(&x->pool, &x->ranges, s->cfg.chunk_bytes,
				       x->paused && x->csum_data, &pe, &chan,
				       x->pc_usable && !x->paused ? &stop
								  : NULL);
		if (rc && chan && rc == -ETIMEDOUT && chan <= x->nextra) {
			char what[48];

			snprintf(what, sizeof(what), "data connection %u", chan);
			rc = fy_snd_stall_fail(x, &x->extra[chan - 1], what);
			goto out;
		}
		if (rc) {
			rc = chan ? fy_session_fail(s, rc,
						    "data connection %u: %s",
						    chan, ferry_strerror(rc))
				  : fy_snd_io_fail(x, rc, "sending memory");
			goto out;
		}
	} else {
		rc = send_ranges(x, &pe.records);
		if (rc)
			goto out;
		pe.bytes = x->ranges.bytes;
	}
	x->last_pass_bytes = x->ranges.bytes;
	fy_buf_reset(&b);
	rc = fy_pass_end_encode(&b, &pe);
	if (!rc)
		rc = fy_snd_request(x, FY_REC_PASS_END, &b, "PASS_END");
	if (!rc && x->nextra)
		rc = take_lost(x, pass);
	if (rc)
		goto out;
	t2 = fy_now_ns();
	/* Bandwidth over the whole barrier: what the destination confirmed
	 * having, not what sat in socket buffers. */
	if (pe.bytes >= (4u << 20) || x->bw == 0)
		x->bw = pe.bytes ? (double)pe.bytes * 1e9 / (double)(t2 - t1)
				 : x->bw;
	pthread_mutex_lock(&s->lock);
	s->stats.mb_per_s = x->bw / 1e6;
	s->stats.wire_bytes = wire_total(x);
	pthread_mutex_unlock(&s->lock);
out:
	fy_buf_free(&b);
	return rc;
}

/*
 * Collect the pages written since the last collect into x->ranges. With
 * @keep the new pages are added to the ranges still unsent (the last
 * precopy pass's dirty set, before the final pass), else they replace them.
 */
static int collect_dirty(struct sender *x, bool keep)
{
	uint64_t now;
	int rc;

	if (!keep)
		fy_ranges_clear(&x->ranges);
	if (!x->tracking)
		return fy_ranges_all(&x->ranges, x->s->regions,
				     x->s->nregions);
	rc = fy_dirty_collect(&x->dirty, &x->ranges);
	if (rc)
		return fy_session_fail(x->s, rc, "dirty tracking: %s",
				       x->dirty.err);
	/* Pages a sample during the pass took out of the tracker. */
	if (x->early.n) {
		rc = fy_ranges_add_all(&x->ranges, &x->early);
		if (rc)
			return fy_session_fail(x->s, rc, "out of memory");
		fy_ranges_normalize(&x->ranges);
		fy_ranges_clear(&x->early);
	}
	if (keep) {
		/* A union of two sets says nothing about the dirty rate. */
		fy_ranges_normalize(&x->ranges);
		return 0;
	}
	now = fy_now_ns();
	pthread_mutex_lock(&x->s->lock);
	x->s->stats.dirty_bytes = x->ranges.bytes;
	x->s->stats.dirty_mb_per_s =
		(double)x->ranges.bytes * 1e3 / (double)(now - x->t_collect);
	pthread_mutex_unlock(&x->s->lock);
	x->t_collect = now;
	return 0;
}

/* Move what broken connections took along into x->ranges. */
static int take_carry(struct sender *x)
{
	int rc = fy_ranges_add_all(&x->ranges, &x->carry);

	if (rc)
		return fy_session_fail(x->s, rc, "out of memory");
	fy_ranges_normalize(&x->ranges);
	fy_ranges_clear(&x->carry);
	return 0;
}

/* The next pass's ranges: the dirty pages, and whatever a connection that
 * broke may not have delivered (no write marked those pages dirty). */
int fy_snd_collect(struct sender *x, bool keep)
{
	int rc = collect_dirty(x, keep);

	if (!rc && x->carry.n)
		rc = take_carry(x);
	return rc;
}

/*
 * Predicted downtime if we paused now: the dirty bytes and the state over
 * the measured bandwidth, plus the switchover itself: five control round
 * trips (final pass barrier, state, switchover, released) and a
 * millisecond for pausing and resuming vCPUs.
 */
static double predict_ms_of(const struct sender *x, uint64_t dirty)
{
	double bytes = (double)dirty +
		       (double)(x->state_bytes ? x->state_bytes : 65536);
	double xfer = x->bw > 0 ? bytes / x->bw * 1e3 : 1e9;

	return xfer + 5.0 * fy_ms(x->rtt_ns) + 1.0;
}

static double predict_ms(const struct sender *x)
{
	return predict_ms_of(x, x->ranges.bytes);
}

/*
 * How memory travels on a connection, from what both sides offered: zero
 * pages as a map, and the configured codec if the destination has it.
 */
static int choose_encoding(struct sender *x, struct fy_chan *c)
{
	ferry_session *s = x->s;
	static const uint64_t cap_of[] = {
		[FY_CODEC_NONE] = 0,
		[FY_CODEC_LZ4] = FERRY_CAP_LZ4,
		[FY_CODEC_ZSTD] = FERRY_CAP_ZSTD,
	};
	/* The config's compress values are the codec kinds. */
	static_assert(sizeof(cap_of) / sizeof(cap_of[0]) == FY_CODEC_KINDS &&
			      (int)FERRY_COMPRESS_LZ4 == (int)FY_CODEC_LZ4 &&
			      (int)FERRY_COMPRESS_ZSTD == (int)FY_CODEC_ZSTD,
		      "a capability for every codec kind");
	enum ferry_compress want = s->cfg.compress;
	int rc;

	c->tx.zero_pages = x->peer.capabilities & FERRY_CAP_ZERO_PAGES;
	if (want == FERRY_COMPRESS_NONE || c->tx.codec)
		return 0;
	if (!(x->peer.capabilities & cap_of[want])) {
		if (c == &x->ch)
			fy_session_log(s, 1,
				       "destination does not take %s; sending memory uncompressed",
				       fy_codec_name((enum fy_codec_kind)want));
		return 0;
	}
	rc = fy_codec_new((enum fy_codec_kind)want, s->cfg.compress_level,
			  &c->tx.codec);
	if (rc)
		return fy_session_fail(s, rc, "cannot set up %s level %d: %s",
				       fy_codec_name((enum fy_codec_kind)want),
				       s->cfg.compress_level, ferry_strerror(rc));
	return 0;
}

/* The encoding of @c, and the buffers it needs, mapped before any pass. */
int fy_snd_encoding(struct sender *x, struct fy_chan *c)
{
	int rc = choose_encoding(x, c);

	if (!rc && fy_chan_prepare(c))
		rc = fy_session_fail(x->s, -ENOMEM,
				     "out of memory for the connection's buffers");
	return rc;
}

/*
 * Settings of a new connection (@idx 0 is the main one): the common ones
 * and the automatic congestion control (a configured one was set before it
 * connected). Its send buffer waits for the window (size_send_buffer()).
 */
void fy_snd_setup_socket(struct sender *x, int fd, unsigned idx)
{
	ferry_session *s = x->s;
	char cc[sizeof(s->stats.congestion_control)];

	fy_transport_tune(fd, FY_TICK_MS);
	fy_transport_congestion(fd, !s->cfg.congestion_control, cc, sizeof(cc));
	if (idx == 0) {
		pthread_mutex_lock(&s->lock);
		memcpy(s->stats.congestion_control, cc, sizeof(cc));
		pthread_mutex_unlock(&s->lock);
	}
	fy_session_log(s, 2, "connection %u: congestion control %s%s", idx,
		       cc[0] ? cc : "none (not TCP)",
		       s->cfg.congestion_control ? "" : " (automatic)");
}

/* Read the answer to JOIN on an extra connection, within a few seconds:
 * a destination that accepts the connection but never answers is one that
 * does not take extra connections. */
static int join_answer(struct fy_chan *c, uint32_t seq, char *why, size_t len)
{
	struct fy_rec_hdr h;
	struct fy_error_msg e;
	int rc = fy_chan_recv_hdr(c, &h, 5000);

	if (!rc)
		rc = fy_chan_recv_body(c, &h);
	if (rc) {
		snprintf(why, len, "no answer to JOIN: %s", ferry_strerror(rc));
		return rc;
	}
	if (fy_rec_number(h.type) == FY_REC_OK && h.seq == seq)
		return 0;
	if (fy_rec_number(h.type) == FY_REC_ERROR &&
	    !fy_error_decode(c->rx.in.data, c->rx.in.len, &e))
		snprintf(why, len, "%s", e.message);
	else
		snprintf(why, len, "unexpected answer to JOIN");
	return FERRY_EPEER;
}

int fy_snd_join(struct sender *x, const struct fy_uri *u, unsigned idx,
		    unsigned total, char *why, size_t len)
{
	struct fy_chan *c = &x->extra[x->nextra];
	struct fy_join j = { x->peer.session_id, { 0 }, idx, total };
	uint8_t sh[FY_STREAM_HDR_SIZE];
	struct iovec iov = { sh, sizeof(sh) };
	struct fy_buf b;
	int fd, rc;

	rc = fy_transport_connect(u, x->s->cfg.congestion_control, &fd, why,
				  len);
	if (rc)
		return rc;
	fy_snd_setup_socket(x, fd, idx);
	size_send_buffer(x, fd, idx);
	rc = fy_chan_init(c, x->s, fd);
	if (!rc)
		rc = fy_chan_secure(c, false, why, len);
	if (rc) {
		fy_chan_close(c);
		return rc;
	}
	memcpy(j.token, x->peer.token, sizeof(j.token));
	fy_stream_hdr_encode(sh);
	fy_buf_init(&b);
	rc = fy_chan_write_all(c, &iov, 1);
	if (!rc)
		rc = fy_join_encode(&b, &j);
	if (!rc)
		rc = fy_chan_send_rec(c, FY_REC_JOIN, 1, b.data, b.len);
	if (rc)
		snprintf(why, len, "sending JOIN: %s", ferry_strerror(rc));
	else
		rc = join_answer(c, 1, why, len);
	fy_buf_free(&b);
	if (rc) {
		fy_chan_close(c);
		return rc == FERRY_EPEER || rc == -ETIMEDOUT ? FERRY_EPEER : rc;
	}
	x->nextra++;
	return fy_snd_encoding(x, c);
}

/*
 * Open the extra data connections the config asks for. A connection that
 * cannot be opened leaves the migration on fewer (and says so); one the
 * destination refuses after accepting it means the two sides disagree, and
 * that fails the migration.
 */
static int open_extra(struct sender *x, const struct fy_uri *u)
{
	ferry_session *s = x->s;
	unsigned want = s->cfg.connections;
	struct fy_chan *all[FY_MAX_CHANNELS];
	char why[256];
	int rc;

	/* Postcopy pushes over data connections: a session that may switch
	 * has at least one. */
	if (s->cfg.postcopy != FERRY_POSTCOPY_OFF && x->sm.postcopy &&
	    want < 2)
		want = 2;

	if (want > 1 && u->kind == FY_URI_FD) {
		fy_session_log(s, 1,
			       "fd:%d is one connection and there is no address to open more; using one",
			       u->fd);
		want = 1;
	}
	if (want > 1 && !(x->peer.capabilities & FERRY_CAP_MULTI_CHANNEL)) {
		fy_session_log(s, 1,
			       "destination takes no extra connections; using one");
		want = 1;
	}
	for (unsigned i = 1; i < want; i++) {
		rc = fy_snd_join(x, u, i, want, why, sizeof(why));
		if (rc == FERRY_EPEER)
			return fy_session_fail(s, FERRY_EPEER,
					       "destination refused data connection %u of %u: %s",
					       i + 1, want, why);
		if (rc) {
			fy_session_log(s, 1,
				       "opened %u of %u connections (%s); continuing with them",
				       i, want, why);
			break;
		}
	}
	pthread_mutex_lock(&s->lock);
	s->stats.connections = 1 + x->nextra;
	pthread_mutex_unlock(&s->lock);
	if (!x->nextra)
		return 0;
	all[0] = &x->ch;
	for (unsigned i = 0; i < x->nextra; i++)
		all[i + 1] = &x->extra[i];
	rc = fy_send_pool_start(&x->pool, s, all, 1 + x->nextra);
	if (rc)
		return fy_session_fail(s, rc, "cannot start sender threads");
	return 0;
}

/* Say in the statistics how dirty pages are tracked. */
static void set_dirty_mode(ferry_session *s, const char *mode)
{
	pthread_mutex_lock(&s->lock);
	snprintf(s->stats.dirty_mode, sizeof(s->stats.dirty_mode), "%s", mode);
	pthread_mutex_unlock(&s->lock);
}

static int start_tracking(struct sender *x)
{
	ferry_session *s = x->s;
	enum ferry_dirty_mode mode = s->cfg.dirty_mode;
	char why[160] = "";
	int rc;

	/* A VMM that keeps its own dirty log knows best: on this kind of
	 * host every first write to a write-protected page costs the guest
	 * 13-63 us, a log bit costs it nothing (docs/memory-backends.md). */
	if (mode == FERRY_DIRTY_AUTO && s->ops.get_dirty_bitmap)
		mode = FERRY_DIRTY_BITMAP;
	if (mode != FERRY_DIRTY_BITMAP) {
		rc = fy_dirty_start(&x->dirty, FY_DIRTY_UFFD, s->regions,
				    s->nregions, NULL, NULL);
		if (!rc)
			goto ok;
		snprintf(why, sizeof(why), "%s", x->dirty.err);
		fy_dirty_stop(&x->dirty);
		if (mode == FERRY_DIRTY_UFFD)
			return fy_session_fail(s, rc, "dirty tracking: %s", why);
	}
	if (s->ops.get_dirty_bitmap) {
		rc = fy_dirty_start(&x->dirty, FY_DIRTY_BITMAP, s->regions,
				    s->nregions, s->ops.get_dirty_bitmap,
				    s->cfg.opaque);
		if (rc)
			return fy_session_fail(s, rc, "dirty bitmap: %s",
					       x->dirty.err);
		goto ok;
	}
	/* Nothing can track writes: stop and copy. */
	fy_session_log(s, 1,
		       "no dirty tracking (%s); pausing for a stop-and-copy",
		       why);
	set_dirty_mode(s, "none");
	return 0;
ok:
	x->tracking = true;
	x->t_collect = fy_now_ns();
	set_dirty_mode(s, x->dirty.kind == FY_DIRTY_UFFD ? "uffd" : "bitmap");
	return 0;
}

int fy_snd_pause(struct sender *x)
{
	ferry_session *s = x->s;
	int rc = s->ops.pause(s->cfg.opaque);

	if (rc)
		return fy_session_fail(s, FERRY_EVMM, "pause failed: %s",
				       ferry_strerror(rc));
	x->paused = true;
	x->t_pause = fy_now_ns();
	/* A snapshot's disk may be slow, and the file takes the guest
	 * whenever it is written: only a migration bounds its pause. */
	if (!x->to_file)
		fy_session_pause_arm(s);
	atomic_store(&s->pc_stopped, true);
	fy_session_set_state(s, FERRY_STATE_STOPPED);
	return 0;
}

/*
 * Once the rest fits the limit, one more pass is still worth it while
 * passes shrink what is left by a quarter or more: each costs the guest
 * nothing but time, and shortens the pause as much. It stops when the
 * prediction is already below FY_DOWNTIME_FLOOR_MS or the dirty rate
 * nearly keeps up with the link. (Halving was the first rule; passes of
 * scattered pages here shrink by 40-60 %, so half of them stopped a pass
 * early, with a pause twice as long as the next pass would have left.)
 */
#define FY_DOWNTIME_FLOOR_MS 5.0

static bool worth_another_pass(const struct sender *x, double expect,
			       uint32_t pass)
{
	return pass < x->s->cfg.max_passes && expect > FY_DOWNTIME_FLOOR_MS &&
	       x->ranges.bytes * 4 < x->last_pass_bytes * 3;
}

/* Ask the VMM for a vCPU throttle of @pct and publish it. */
static int set_throttle(struct sender *x, uint32_t pct)
{
	ferry_session *s = x->s;
	int rc = s->ops.throttle(s->cfg.opaque, pct);

	if (rc)
		return fy_session_fail(s, FERRY_EVMM,
				       "throttling the vCPUs to %u%% failed: %s",
				       pct, ferry_strerror(rc));
	x->throttle = pct;
	pthread_mutex_lock(&s->lock);
	s->stats.throttle_pct = pct;
	if (pct > s->stats.throttle_peak_pct)
		s->stats.throttle_peak_pct = pct;
	pthread_mutex_unlock(&s->lock);
	fy_session_event(s, FERRY_EVENT_THROTTLE);
	return 0;
}

/* Give the vCPUs their full time back (guest paused, or migration over). */
void fy_snd_lift_throttle(struct sender *x)
{
	if (x->throttle && set_throttle(x, 0))
		fy_session_log(x->s, 0, "could not lift the vCPU throttle");
}

/*
 * Auto-converge. Passes that do not halve what is left mean the guest
 * dirties memory about as fast as the link carries it: more passes alone
 * will not get the pause under the limit. Take CPU time from the vCPUs
 * then, as QEMU's cpu-throttle does: the first step after two such passes
 * in a row (one can be a hiccup, and throttling costs the guest), then a
 * step per such pass. A pass that halves the rest is given its chance.
 */
static int auto_converge(struct sender *x)
{
	const struct ferry_config *c = &x->s->cfg;
	uint32_t next;

	if (x->ranges.bytes * 2 <= x->last_pass_bytes) {
		x->slow_passes = 0;
		return 0;
	}
	x->slow_passes++;
	if (!c->auto_converge || !x->s->ops.throttle ||
	    (!x->throttle && x->slow_passes < 2) ||
	    x->throttle >= c->throttle_max_pct)
		return 0;
	next = x->throttle ? x->throttle + c->throttle_step_pct
			   : c->throttle_initial_pct;
	if (next > c->throttle_max_pct || next <= x->throttle)
		next = c->throttle_max_pct;
	fy_session_log(x->s, 1,
		       "auto-converge: throttling the vCPUs to %u%% (%.1f MiB left of a %.1f MiB pass, link %.1f MB/s)",
		       next, (double)x->ranges.bytes / (1 << 20),
		       (double)x->last_pass_bytes / (1 << 20), x->bw / 1e6);
	return set_throttle(x, next);
}

/*
 * Whether this run can switch to postcopy, for ferry_session_postcopy()
 * and the precopy loop: the destination offered it, a data connection
 * carries the push, and writes are tracked (else there are no passes).
 */
static void postcopy_usable(struct sender *x)
{
	const char *why = NULL;

	if (x->to_file)
		why = "a snapshot file is not a destination that runs the guest";
	else if (x->local)
		why = "a local migration passes the memory by fd: nothing is left to follow";
	else if (!(x->peer.capabilities & FERRY_CAP_POSTCOPY))
		why = "the destination does not offer it (an older ferry, no userfaultfd there, or a single connection)";
	else if (!x->nextra)
		why = "the session has one connection, and postcopy pushes pages over a data connection: set connections to 2 or more, or a postcopy mode";
	else if (!x->tracking)
		why = "writes are not tracked here, so there is no precopy to switch from";
	x->pc_usable = !why;
	fy_session_pc_avail(x->s, !why, why);
	/* A ferry_session_postcopy() that came before this was known. */
	if (why && (x->s->cfg.postcopy != FERRY_POSTCOPY_OFF ||
		    atomic_exchange(&x->s->pc_now, false)))
		fy_session_log(x->s, 1, "postcopy is not possible: %s; migrating with precopy", why);
}

/*
 * How soon a pass may follow the one before when no pass can meet the
 * downtime limit. An idle guest then has nothing to send, and passes
 * back to back are bare round trips: 17,500 in 3 s were measured, each
 * a PASS event, enough to flood a VMM's event client. At this interval
 * a pass still re-measures the link and keeps the destination current,
 * 20 times a second.
 */
#define FY_HOLD_PASS_MS 50

/*
 * Wait before the next pass while the pause predicted with nothing
 * dirty (the state and the switchover's round trips) exceeds the
 * downtime limit: more passes cannot converge then (limit 0, or one
 * below the switchover's own cost), and precopy ends only at
 * max_passes or max_precopy_ms, by a switch to postcopy or by a cancel.
 * The next pass starts FY_HOLD_PASS_MS after the last one began; a
 * cancel or a postcopy request ends the wait at once. Auto-converge
 * stays off meanwhile: a throttle cannot lower that floor, it would only
 * take the guest's CPU for nothing.
 */
static int hold_passes(struct sender *x, double floor)
{
	ferry_session *s = x->s;
	const struct ferry_config *c = &s->cfg;
	uint64_t until = x->t_pass + FY_HOLD_PASS_MS * 1000000ull;
	struct timespec ts = { 0, 5 * 1000000L };

	if (!x->hold_logged) {
		x->hold_logged = true;
		fy_session_log(s, 1,
			       "the downtime limit (%u ms) is below the pause predicted with nothing dirty (%.1f ms): passes cannot converge and a vCPU throttle cannot help, so the guest is not throttled and passes run every %d ms until max passes or max precopy time",
			       c->downtime_limit_ms, floor, FY_HOLD_PASS_MS);
	}
	if (c->max_precopy_ms &&
	    s->t_start_ns + c->max_precopy_ms * 1000000ull < until)
		until = s->t_start_ns + c->max_precopy_ms * 1000000ull;
	while (fy_now_ns() < until) {
		if (fy_cancelled(s))
			return fy_session_fail(s, FERRY_ECANCELED,
					       "cancelled during a memory pass");
		if (atomic_load(&s->pc_now))
			break;
		nanosleep(&ts, NULL);
	}
	return 0;
}

/* Passes while the guest runs, until the rest fits the downtime limit. */
static int precopy(struct sender *x, uint32_t *pass)
{
	ferry_session *s = x->s;
	const struct ferry_config *c = &s->cfg;
	int rc;

	fy_session_set_state(s, FERRY_STATE_PRECOPY);
	rc = fy_ranges_all(&x->ranges, s->regions, s->nregions);
	if (rc)
		return fy_session_fail(s, rc, "out of memory");
	for (;;) {
		double expect, elapsed, floor;
		bool at_limit;

		rc = send_pass(x, ++*pass);
		if (!rc)
			rc = fy_snd_collect(x, false);
		if (rc)
			return rc;
		expect = predict_ms(x);
		elapsed = fy_ms(fy_now_ns() - s->t_start_ns);
		pthread_mutex_lock(&s->lock);
		s->stats.expected_downtime_ms = expect;
		pthread_mutex_unlock(&s->lock);
		/* After the scan, so the event carries what this pass left. */
		fy_session_event(s, FERRY_EVENT_PASS);
		/* A switch asked for (by hand, or after N passes) comes
		 * first: the caller chose postcopy over a last precopy pause;
		 * auto switches only when precopy cannot meet the limit. */
		at_limit = *pass >= c->max_passes ||
			   (c->max_precopy_ms && elapsed >= c->max_precopy_ms);
		if (fy_pc_want(x, *pass, expect, at_limit)) {
			x->pc_go = true;
			return 0;
		}
		if (expect <= c->downtime_limit_ms &&
		    !worth_another_pass(x, expect, *pass))
			return 0;
		if (expect <= c->downtime_limit_ms)
			continue;
		/* With nothing dirty the pause would still exceed the limit:
		 * no throttle can help then, so the guest keeps its CPU. */
		floor = predict_ms_of(x, 0);
		if (floor <= c->downtime_limit_ms)
			rc = auto_converge(x);
		else if (!at_limit)
			rc = hold_passes(x, floor);
		if (rc)
			return rc;
		if (!at_limit)
			continue;
		if (c->timeout_strategy != FERRY_TIMEOUT_CANCEL) {
			fy_session_log(s, 1,
				       "not converged after %u passes (expected downtime %.1f ms); switching over anyway",
				       *pass, expect);
			return 0;
		}
		return fy_session_fail(s, FERRY_ETIMEOUT,
				       "did not converge after %u passes in %.0f ms: expected downtime %.1f ms > limit %u ms (dirty %.1f MB/s, link %.1f MB/s)",
				       *pass, elapsed, expect, c->downtime_limit_ms,
				       s->stats.dirty_mb_per_s, x->bw / 1e6);
	}
}

/* The VMM's state of the paused guest, into @st (initialised). */
static int save_state(struct sender *x, struct ferry_buf *st)
{
	ferry_session *s = x->s;
	int rc = s->ops.save_state(s->cfg.opaque, st);

	if (rc)
		return fy_session_vmm_fail(s, rc, "save_state");
	if (st->b.len > FY_REC_MAX_BODY)
		return fy_session_fail(s, -EMSGSIZE,
				       "device state of %zu bytes exceeds the %u byte record limit",
				       st->b.len, FY_REC_MAX_BODY);
	x->state_bytes = st->b.len;
	pthread_mutex_lock(&s->lock);
	s->stats.bytes += st->b.len;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int fy_snd_state(struct sender *x)
{
	struct ferry_buf st;
	int rc;

	/* A local session may pass the devices' descriptors first: the VMM
	 * then saves a state that refers to them. */
	rc = x->sm.device_fds ? fy_local_send_devices(x) : 0;
	fy_buf_init(&st.b);
	if (!rc)
		rc = save_state(x, &st);
	if (!rc)
		rc = fy_snd_request(x, FY_REC_STATE, &st.b, "STATE");
	fy_buf_free(&st.b);
	return rc;
}

/*
 * The end of a snapshot, the guest paused and its last pages written:
 * save the state; a checkpoint (keep_running) resumes the guest right
 * away, since nothing more is read from its memory; then the file's table,
 * map, state and superblock, and the rename that makes it valid. Without
 * keep_running the file takes the guest over once renamed, and the pause
 * is reported up to then.
 */
static int file_end(struct sender *x, uint64_t t1)
{
	ferry_session *s = x->s;
	struct ferry_buf st;
	uint64_t t2, t_run = 0;
	int rc;

	fy_buf_init(&st.b);
	rc = save_state(x, &st);
	t2 = fy_now_ns();
	if (!rc && s->cfg.keep_running) {
		/* Nothing more is read from its memory: the guest's writes
		 * need not be tracked (and slowed) any longer. */
		fy_dirty_stop(&x->dirty);
		x->tracking = false;
		rc = s->ops.resume(s->cfg.opaque);
		if (rc)
			rc = fy_session_fail(s, FERRY_EVMM, "resume failed: %s",
					     ferry_strerror(rc));
		else
			x->paused = false;
		t_run = fy_now_ns();
	}
	/* A handover gives the external resources up with the guest, as a
	 * migration does before its point of no return; a failure before the
	 * rename takes them back (unwind()). */
	if (!rc && !s->cfg.keep_running && s->ops.release) {
		rc = s->ops.release(s->cfg.opaque);
		if (rc)
			rc = fy_session_fail(s, FERRY_EVMM, "release failed: %s",
					     ferry_strerror(rc));
		else
			x->released_ok = true;
	}
	if (!rc)
		rc = fy_snapw_finish(x->snap, st.b.data, st.b.len);
	fy_buf_free(&st.b);
	/* Renamed into place, a handover's file holds the guest. */
	if (!rc && !s->cfg.keep_running) {
		x->file_handed = true;
		fy_snd_sync_owner(x);
	}
	if (!t_run)
		t_run = fy_now_ns();
	pthread_mutex_lock(&s->lock);
	s->stats.final_pass_ms = fy_ms(t1 - x->t_pause);
	s->stats.state_ms = fy_ms(t2 - t1);
	s->stats.switchover_ms = 0;
	if (!rc) {
		s->stats.downtime_ms = fy_ms(t_run - x->t_pause);
		s->stats.wire_bytes = fy_snapw_size(x->snap);
		s->stats.image_digest = fy_snapw_digest(x->snap);
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/*
 * RELEASED went unanswered: did it provably never reach the destination?
 * Only when the record was not even written whole (no destination can
 * read a part of one); over TCP, when the destination closed its end (its
 * FIN: the stream format forbids a destination to shut its sending side
 * before it answers RELEASED) and its TCP never acknowledged the record's
 * last byte; over a UNIX socket, when the destination closed with the
 * record unread. A silent link (a timeout) proves nothing: the record may
 * still arrive.
 */
static bool released_lost(struct sender *x, int rc)
{
	if (x->released_unwritten)
		return true;
	/* TCP: the destination's FIN acknowledges everything it received
	 * before it closed; data after it is answered with a reset that
	 * acknowledges nothing. A reset alone proves nothing (a rebooted
	 * host, a firewall): RELEASED may have been read before it. */
	if (x->released_marked)
		return (x->ch.rx.eof || rc == -EPIPE) &&
		       fy_transport_acked_below(x->ch.fd, x->released_mark);
	/* UNIX: a peer that closes with bytes unread resets the
	 * connection, and RELEASED, the last bytes sent, is among them; a
	 * plain end of stream means it read everything. */
	return rc == -ECONNRESET && !x->ch.rx.eof &&
	       fy_transport_is_unix(x->ch.fd);
}

/* ready -> released -> running. */
static int handshake(struct sender *x)
{
	ferry_session *s = x->s;
	struct fy_running run;
	int rc;

	fy_session_set_state(s, FERRY_STATE_SWITCHOVER);
	rc = fy_snd_request(x, FY_REC_SWITCHOVER, NULL, "SWITCHOVER");
	if (rc)
		return rc;
	/* Ready: from release() on the pause is not bounded any more (the
	 * guest may run at the destination), unless it ran out already. */
	if (fy_session_pause_disarm(s))
		return FERRY_ETIMEOUT;
	if (s->ops.release) {
		rc = s->ops.release(s->cfg.opaque);
		if (rc)
			return fy_session_fail(s, FERRY_EVMM,
					       "release failed: %s",
					       ferry_strerror(rc));
		x->released_ok = true;
	}
	/* Gone since it said "ready" (killed, say): RELEASED would go
	 * nowhere, and the guest is still ours to run. */
	if (fy_transport_peer_closed(x->ch.fd))
		return fy_session_fail(s, -ECONNRESET,
				       "the destination closed its connection after it was ready, before RELEASED: it cannot have run the guest");
	/* RELEASED must be the last bytes this side sends: released_lost()
	 * reasons from that (a UNIX reset with it unread, a TCP mark at its
	 * end). The keeper goes quiet first: from here this side only waits
	 * for the answer, and the destination, which keeps sending its own
	 * keep-alives while it resumes, needs to hear nothing more from it.
	 * Its thread is joined after the answer (the caller's
	 * fy_keeper_stop()), out of the pause. */
	fy_keeper_quiet(&x->keeper);
	/* A cancel that came before this point still stops the run (the
	 * guest resumes here); from here on, cancels are ignored. */
	if (fy_cancelled(s))
		return fy_session_fail(s, FERRY_ECANCELED,
				       "cancelled before RELEASED was sent");
	fy_session_releasing(s);
	rc = fy_snd_request(x, FY_REC_RELEASED, NULL, "RELEASED");
	if (rc) {
		/* An ERROR answer is positive confirmation that the
		 * destination did not start the guest. */
		x->peer_refused = x->sm.state == FY_SS_FAILED &&
				  s->stats.error == FERRY_EPEER;
		x->released_lost = !x->peer_refused && released_lost(x, rc);
		return rc;
	}
	if (fy_running_decode(x->ch.rx.in.data, x->ch.rx.in.len, &run))
		memset(&run, 0, sizeof(run));
	x->t_resumed = x->same_host && run.resumed_ns > x->t_pause
			       ? run.resumed_ns : fy_now_ns();
	pthread_mutex_lock(&s->lock);
	s->stats.downtime_ms = fy_ms(x->t_resumed - x->t_pause);
	snprintf(s->stats.peer_note, sizeof(s->stats.peer_note), "%s",
		 run.note);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int stop_and_switch(struct sender *x, uint32_t pass)
{
	ferry_session *s = x->s;
	uint64_t t1, t2;
	int rc = fy_snd_pause(x);

	/* Paused, the throttle has no more work; a resume after a failure
	 * must find the vCPUs at full speed. */
	if (!rc)
		fy_snd_lift_throttle(x);
	/* The last precopy pass's dirty set is still unsent: add to it. A
	 * local migration has no pass: the destination maps the memory. */
	if (!rc && !x->local)
		rc = fy_snd_collect(x, true);
	if (!rc && !x->local)
		rc = send_pass(x, ++pass);
	/* A connection broke with part of the final pass: another final
	 * pass sends that part. Each such pass gives one connection up, so
	 * this ends. */
	while (!rc && !x->local && x->carry.n) {
		fy_ranges_clear(&x->ranges);
		rc = take_carry(x);
		if (!rc)
			rc = send_pass(x, ++pass);
	}
	if (rc)
		return rc;
	if (!x->local)
		fy_session_event(s, FERRY_EVENT_PASS);
	t1 = fy_now_ns();
	if (x->snap)
		return file_end(x, t1);
	rc = fy_snd_state(x);
	if (rc)
		return rc;
	t2 = fy_now_ns();
	rc = handshake(x);
	pthread_mutex_lock(&s->lock);
	s->stats.final_pass_ms = fy_ms(t1 - x->t_pause);
	s->stats.state_ms = fy_ms(t2 - t1);
	s->stats.switchover_ms = x->t_resumed > t2 ? fy_ms(x->t_resumed - t2) : 0;
	/* Without passes nothing else counts the bytes a local run sent. */
	if (x->local)
		s->stats.wire_bytes = wire_total(x);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* Tell the destination why we stop, without waiting long for it. */
static void send_abort(struct sender *x, int code)
{
	char msg[FY_MSG_MAX];
	uint32_t seq;

	/* A destination that took nothing for the stall limit takes no
	 * ABORT either: trying would hold the guest paused a second more. */
	if (x->ch.fd < 0 || x->ch.tx.stall_ns ||
	    fy_send_sm_request(&x->sm, FY_REC_ABORT, &seq))
		return;
	ferry_session_errmsg(x->s, msg, sizeof(msg));
	/* A destination that stopped reading would hold the source here
	 * for another idle limit while its guest waits to run again. */
	x->ch.tx.limit_ms = FY_ABORT_WAIT_MS;
	fy_chan_send_error(&x->ch, FY_REC_ABORT, seq, code, msg);
}

/*
 * Undo what a failed attempt did to the source. Before the point of no
 * return the guest runs again here; after it, only a refusal from the
 * destination allows that.
 */
static int unwind(struct sender *x, int rc)
{
	ferry_session *s = x->s;
	/* A snapshot file never passes "released": until its rename, a failure
	 * resumes the guest here like any failure before the point of no
	 * return. */
	bool past = fy_send_sm_past_release(&x->sm);

	fy_session_pause_disarm(s);
	if (!past)
		send_abort(x, rc);
	if (past && x->released_lost) {
		char why[256];

		ferry_session_errmsg(s, why, sizeof(why));
		pthread_mutex_lock(&s->lock);
		snprintf(s->errmsg, sizeof(s->errmsg),
			 "%s; RELEASED never reached the destination (it closed its connection first and never acknowledged it): the guest runs here again",
			 why);
		pthread_mutex_unlock(&s->lock);
	}
	if (past && !x->peer_refused && !x->released_lost) {
		char why[256], msg[sizeof(s->errmsg)];

		/* This outcome replaces whatever broke the connection: it is
		 * what the operator must act on. */
		ferry_session_errmsg(s, why, sizeof(why));
		/* ferry_strerror() already says "released, but ...": the
		 * message gives what it does not. */
		pthread_mutex_lock(&s->lock);
		s->stats.error = FERRY_EUNCONFIRMED;
		snprintf(s->errmsg, sizeof(s->errmsg),
			 "no answer to RELEASED (%s); the guest stays paused here until an operator decides which side runs it",
			 why);
		memcpy(msg, s->errmsg, sizeof(msg));
		/* So far: the guest stays paused. */
		s->stats.downtime_ms = fy_ms(fy_now_ns() - x->t_pause);
		pthread_mutex_unlock(&s->lock);
		fy_session_log(s, 0, "%s", msg);
		fy_snd_sync_owner(x);
		return FERRY_EUNCONFIRMED;
	}
	/* The guest is the source's again (it always was before RELEASED)
	 * before it runs here. */
	fy_snd_sync_owner(x);
	fy_snd_lift_throttle(x);
	if (x->released_ok && s->ops.reacquire &&
	    s->ops.reacquire(s->cfg.opaque))
		fy_session_log(s, 0, "reacquire failed after a failed handover");
	if (x->paused) {
		int r2 = s->ops.resume(s->cfg.opaque);

		if (r2)
			fy_session_log(s, 0, "resume failed: %s",
				       ferry_strerror(r2));
		else
			x->paused = false;
		/* The pause a failed handover cost the guest. */
		pthread_mutex_lock(&s->lock);
		s->stats.downtime_ms = fy_ms(fy_now_ns() - x->t_pause);
		pthread_mutex_unlock(&s->lock);
	}
	return rc;
}

/*
 * A destination that is still starting refuses connections for a moment;
 * retry those briefly instead of failing a migration that would work. An
 * "fd:N" URI is the caller's connected socket, used through a duplicate
 * (the caller's descriptor stays open).
 */
#define FY_CONNECT_PATIENCE_MS 3000

int fy_snd_connect(ferry_session *s, const struct fy_uri *u, int *fd,
			     char *err, size_t errlen)
{
	uint64_t until = fy_now_ns() + FY_CONNECT_PATIENCE_MS * 1000000ull;
	int rc;

	if (u->kind == FY_URI_FD) {
		bool listening;

		rc = fy_transport_borrow(u, fd, &listening, err, errlen);
		if (!rc && listening) {
			close(*fd);
			*fd = -1;
			snprintf(err, errlen,
				 "fd:%d is a listening socket; a source needs a connected one",
				 u->fd);
			rc = -EINVAL;
		}
		return rc;
	}
	for (;;) {
		rc = fy_transport_connect(u, s->cfg.congestion_control, fd, err,
					  errlen);
		if ((rc != -ECONNREFUSED && rc != -ENOENT) ||
		    fy_now_ns() > until)
			return rc;
		if (fy_cancelled(s)) {
			snprintf(err, errlen, "cancelled while connecting");
			return FERRY_ECANCELED;
		}
		usleep(50 * 1000);
	}
}

/* Connect, send the stream header and negotiate, once. */
static int open_main_once(struct sender *x, const struct fy_uri *u)
{
	uint8_t sh[FY_STREAM_HDR_SIZE];
	struct iovec iov = { sh, sizeof(sh) };
	char err[256];
	int fd, rc;

	rc = fy_snd_connect(x->s, u, &fd, err, sizeof(err));
	if (rc)
		return fy_session_fail(x->s, rc, "%s", err);
	fy_snd_setup_socket(x, fd, 0);
	rc = fy_chan_init(&x->ch, x->s, fd);
	if (!rc && x->s->cfg.record_stream) {
		x->ch.tx.tee_fd = open(x->s->cfg.record_stream,
				    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
				    0644);
		if (x->ch.tx.tee_fd < 0)
			return fy_session_fail(x->s, -errno,
					       "cannot create %s: %s",
					       x->s->cfg.record_stream,
					       strerror(errno));
	}
	if (rc) {
		fy_chan_close(&x->ch);
		return fy_session_fail(x->s, rc, "out of memory");
	}
	fy_chan_log_watch(&x->ch, "main connection");
	rc = fy_chan_secure(&x->ch, false, err, sizeof(err));
	if (rc)
		return fy_session_fail(x->s, rc, "%s", err);
	fy_session_set_state(x->s, FERRY_STATE_NEGOTIATING);
	fy_stream_hdr_encode(sh);
	rc = fy_chan_write_all(&x->ch, &iov, 1);
	if (rc)
		return fy_snd_io_fail(x, rc, "stream header");
	return negotiate(x);
}

/* A snapshot file: pages go into slots, nothing is negotiated. */
static int open_file(struct sender *x, const struct fy_uri *u)
{
	ferry_session *s = x->s;

	if (s->cfg.record_stream)
		fy_session_log(s, 1,
			       "a snapshot file is not a stream: nothing is recorded to %s",
			       s->cfg.record_stream);
	fy_session_set_state(s, FERRY_STATE_NEGOTIATING);
	pthread_mutex_lock(&s->lock);
	s->stats.connections = 1;
	pthread_mutex_unlock(&s->lock);
	return fy_snapw_open(s, u->path, &x->snap);
}

/*
 * A destination that is restarting its listener (after a failed attempt)
 * may accept a connection and reset it before reading a byte. Nothing has
 * been transferred until HELLO is answered, so such a reset is retried
 * within the connect patience; any other failure is final.
 */
static int open_main(struct sender *x, const struct fy_uri *u)
{
	uint64_t until = fy_now_ns() + FY_CONNECT_PATIENCE_MS * 1000000ull;
	char first[256] = "";
	int rc, first_rc = 0;

	for (;;) {
		rc = open_main_once(x, u);
		/* The caller's own socket (fd:N) cannot be opened again. */
		if (!rc || (rc != -EPIPE && rc != -ECONNRESET) ||
		    u->kind == FY_URI_FD ||
		    x->sm.state != FY_SS_START || fy_now_ns() > until ||
		    fy_cancelled(x->s))
			break;
		/* The retries end in their own error (a destination that
		 * died refuses the next connect): the reset that started
		 * them is the reason to report (fault matrix row "kill-dst
		 * at negotiation"). */
		if (!first[0]) {
			ferry_session_errmsg(x->s, first, sizeof(first));
			first_rc = rc;
		}
		fy_session_log(x->s, 2, "connection reset before HELLO was answered; retrying");
		if (x->ch.tx.tee_fd >= 0)
			close(x->ch.tx.tee_fd);
		fy_chan_close(&x->ch);
		x->ch.tx.tee_fd = -1;
		fy_send_sm_init(&x->sm);
		fy_session_clear_error(x->s);
		usleep(50 * 1000);
	}
	/* Only a refusal (the destination died and nothing listens, or its
	 * socket file is gone) is explained better by the reset; a cancel,
	 * or a new listener's own answer (a TLS refusal, a version
	 * mismatch), is the news. */
	if ((rc == -ECONNREFUSED || rc == -ENOENT) && first[0] &&
	    !fy_cancelled(x->s)) {
		char last[sizeof(x->s->errmsg)];

		ferry_session_errmsg(x->s, last, sizeof(last));
		pthread_mutex_lock(&x->s->lock);
		snprintf(x->s->errmsg, sizeof(x->s->errmsg),
			 "%s (before HELLO was answered; connecting again for %d s: %.200s)",
			 first, FY_CONNECT_PATIENCE_MS / 1000, last);
		x->s->stats.error = first_rc;
		pthread_mutex_unlock(&x->s->lock);
		rc = first_rc;
	}
	return rc;
}

/* A sender with every descriptor -1. It is large (a channel per possible
 * connection, about 160 KiB), so it lives on the heap, not on the stack
 * of whichever thread the VMM runs the migration on. */
static struct sender *sender_new(ferry_session *s)
{
	struct sender *x = calloc(1, sizeof(*x));

	if (!x)
		return NULL;
	x->s = s;
	fy_chan_clear(&x->ch);
	for (unsigned i = 0; i < FY_MAX_CHANNELS - 1; i++)
		fy_chan_clear(&x->extra[i]);
	x->dirty.uffd = -1;
	x->dirty.pagemap_fd = -1;
	fy_send_sm_init(&x->sm);
	fy_ranges_init(&x->ranges);
	fy_ranges_init(&x->carry);
	fy_ranges_init(&x->early);
	return x;
}

static void sender_free(struct sender *x)
{
	fy_keeper_stop(&x->keeper);
	fy_send_pool_stop(&x->pool);
	for (unsigned i = 0; i < x->nextra; i++)
		fy_chan_close(&x->extra[i]);
	fy_dirty_stop(&x->dirty);
	fy_ranges_free(&x->ranges);
	fy_ranges_free(&x->carry);
	fy_ranges_free(&x->early);
	fy_snapw_free(x->snap);
	fy_local_free(x);
	if (x->ch.tx.tee_fd >= 0)
		close(x->ch.tx.tee_fd);
	fy_chan_close(&x->ch);
	free(x);
}

FERRY_API int ferry_session_send(ferry_session *s, const char *uri)
{
	struct sender *x;
	struct fy_uri u;
	uint32_t pass = 0;
	char err[256];
	int rc;

	if (!s || !uri)
		return -EINVAL;
	rc = fy_session_begin(s, FERRY_STATE_CONNECTING, FERRY_OWNER_SOURCE);
	if (rc)
		return rc;
	rc = fy_session_check_role(s, true);
	if (rc)
		return fy_session_end(s, rc);
	x = sender_new(s);
	if (!x) {
		rc = fy_session_fail(s, -ENOMEM, "out of memory");
		return fy_session_end(s, rc);
	}
	rc = fy_uri_parse(uri, &u, err, sizeof(err));
	if (rc) {
		fy_session_fail(s, rc, "%s", err);
		goto done;
	}
	x->to_file = u.kind == FY_URI_FILE;
	if (s->cfg.keep_running && !x->to_file) {
		rc = fy_session_fail(s, -EINVAL,
				     "keep_running is for file: snapshots; a migration hands the guest over");
		goto done;
	}
	x->uri = u;
	/* Refused before anything is sent: the URI and every region. */
	if (s->cfg.local_fds) {
		rc = fy_local_check(x, &u);
		if (rc)
			goto done;
	}
	atomic_store(&s->pc_source, true);
	rc = x->to_file ? open_file(x, &u) : open_main(x, &u);
	if (!rc && !x->to_file)
		rc = fy_snd_encoding(x, &x->ch);
	/* The pause's watchdog waits, idle, from now on: arming it is then
	 * a signal, not a thread to create in the pause. */
	if (!rc && !x->to_file)
		fy_session_pause_prepare(s);
	/* A recording holds one connection's bytes: keep it complete. */
	if (!rc && !x->to_file && !s->cfg.record_stream && !x->local)
		rc = open_extra(x, &u);
	/* Over one connection the pages go by reference (see chan.c). */
	x->ch.tx.splice = !x->nextra;
	if (!rc && !x->local)
		rc = start_tracking(x);
	if (!rc)
		postcopy_usable(x);
	if (!rc && x->local)
		rc = fy_local_send(x);
	if (!rc && x->tracking)
		rc = precopy(x, &pass);
	/* Postcopy has deadlines of its own and a reader that other records
	 * must not reach: the keep-alives end before its first DISCARD. */
	if (!rc && x->pc_go)
		fy_keeper_stop(&x->keeper);
	if (!rc && x->pc_go)
		rc = fy_pc_send(x);
	else if (!rc)
		rc = stop_and_switch(x, pass);
	fy_keeper_stop(&x->keeper);
	/* A forced end of postcopy has resumed the guest already. */
	if (rc && rc != FERRY_EPOSTCOPY)
		rc = unwind(x, rc);
done:
	sender_free(x);
	return fy_session_end(s, rc);
}
