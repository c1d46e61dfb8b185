// SPDX-License-Identifier: MIT
/*
 * receive.c - the destination side: accept one migration, validate every
 * record against the protocol state machine and the configured regions,
 * receive memory straight into guest memory, load state, and run the guest
 * once the source has released it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "migrate/receive.h"
#include "migrate/snapfile.h"

/**
 * fy_recv_respond_ok() - answer request @seq with OK and body @b (may be
 * NULL). After the transition the fault thread sends PAGE_REQ on the same
 * connection, so every answer takes the sending direction's lock.
 */
int fy_recv_respond_ok(struct receiver *x, uint32_t seq, const struct fy_buf *b)
{
	int rc;

	pthread_mutex_lock(&x->pc.tx_lock);
	rc = fy_chan_send_rec(&x->ch, FY_REC_OK, seq, b ? b->data : NULL,
			      b ? b->len : 0);
	pthread_mutex_unlock(&x->pc.tx_lock);
	return rc;
}

/**
 * fy_recv_respond_error() - answer with ERROR; the caller then ends this
 * attempt (or, after the transition, pauses).
 */
void fy_recv_respond_error(struct receiver *x, uint32_t seq, int code,
			   const char *msg)
{
	/* Nothing follows an ERROR on the connection. */
	fy_keeper_stop(&x->keeper);
	fy_recv_pool_close_door(&x->pool);
	pthread_mutex_lock(&x->pc.tx_lock);
	fy_chan_send_error(&x->ch, FY_REC_ERROR, seq, code, msg);
	pthread_mutex_unlock(&x->pc.tx_lock);
}

#define respond_ok fy_recv_respond_ok
#define respond_error fy_recv_respond_error

static int on_hello(struct receiver *x, struct fy_buf *reply)
{
	ferry_session *s = x->s;
	struct fy_hello h;
	struct fy_hello_reply r = { 0 };
	char why[256];
	uint32_t ours = s->cfg.version_max ? s->cfg.version_max
					   : FY_PROTO_VERSION_MAX;
	uint32_t min = s->cfg.version_min ? s->cfg.version_min
					  : FY_PROTO_VERSION_MIN;

	if (fy_hello_decode(x->ch.rx.in.data, x->ch.rx.in.len, &h)) {
		snprintf(x->err, sizeof(x->err), "malformed HELLO");
		return -EBADMSG;
	}
	/* The highest version both sides speak. */
	r.version = h.version_max < ours ? h.version_max : ours;
	if (r.version < h.version_min || r.version < min) {
		snprintf(x->err, sizeof(x->err),
			 "no common protocol version: source speaks %u-%u, destination %u-%u",
			 h.version_min, h.version_max, min, ours);
		return FERRY_EVERSION;
	}
	r.capabilities = h.capabilities & s->cfg.capabilities &
			 fy_version_caps(r.version);
	/* Extra connections need a listener of our own to come through
	 * (not so with fd:N, or when the acceptor could not start). */
	if (!x->pool.started)
		r.capabilities &= ~FERRY_CAP_MULTI_CHANNEL;
	/* Descriptors pass over UNIX sockets only, and beside a TLS
	 * stream, not in it. */
	if ((r.capabilities & FERRY_CAP_LOCAL_FDS) &&
	    (x->ch.is_file || x->ch.tls || !fy_transport_is_unix(x->ch.fd)))
		r.capabilities &= ~FERRY_CAP_LOCAL_FDS;
	/* Device descriptors go the same way, to a VMM that takes them. */
	if (!(r.capabilities & FERRY_CAP_LOCAL_FDS) || !s->ops.load_fds)
		r.capabilities &= ~FERRY_CAP_DEVICE_FDS;
	if ((r.capabilities & FERRY_CAP_POSTCOPY) &&
	    !fy_pc_can_offer(x, why, sizeof(why))) {
		fy_session_log(s, 2, "postcopy not offered: %s", why);
		r.capabilities &= ~FERRY_CAP_POSTCOPY;
	}
	r.capabilities = fy_caps_settle(r.capabilities);
	if (getrandom(&r.session_id, sizeof(r.session_id), 0) < 0 ||
	    getrandom(r.token, sizeof(r.token), 0) < 0)
		return -errno;
	fy_read_boot_id(r.boot_id, sizeof(r.boot_id));
	snprintf(r.software, sizeof(r.software), "ferry %s",
		 FERRY_VERSION_STRING);
	if (x->pool.started)
		fy_recv_pool_set_session(&x->pool, r.session_id, r.token);
	/* The machine takes the postcopy records from now on (proto.h). */
	x->sm.postcopy = r.capabilities & FERRY_CAP_POSTCOPY;
	/* Keep-alives both ways once the answer is out (serve()). */
	x->keep = r.capabilities & FERRY_CAP_KEEPALIVE;
	fy_chan_peer_keeps(&x->ch, x->keep);
	/* A stream file has no reader to keep waiting. */
	if (x->ch.is_file)
		x->keep = false;
	/* Through postcopy too when the source knows to expect it (a source
	 * without the bit waits on TCP alone there). */
	x->pc.keep = x->keep &&
		     (r.capabilities & FERRY_CAP_POSTCOPY_KEEPALIVE);
	/* From the answer on, the source may attach its files. */
	x->sm.local_fds = r.capabilities & FERRY_CAP_LOCAL_FDS;
	x->sm.device_fds = r.capabilities & FERRY_CAP_DEVICE_FDS;
	x->ch.rx.take_fds = x->sm.local_fds;
	x->pc.session_id = r.session_id;
	memcpy(x->pc.token, r.token, sizeof(r.token));
	pthread_mutex_lock(&s->lock);
	s->stats.version = r.version;
	s->stats.capabilities = r.capabilities;
	pthread_mutex_unlock(&s->lock);
	fy_session_log(s, 2, "source is %s, protocol version %u", h.software,
		       r.version);
	return fy_hello_reply_encode(reply, &r);
}

static int on_config(struct receiver *x)
{
	ferry_session *s = x->s;
	struct fy_config_msg m;

	if (fy_config_decode(x->ch.rx.in.data, x->ch.rx.in.len, &m)) {
		snprintf(x->err, sizeof(x->err), "malformed CONFIG");
		return -EBADMSG;
	}
	if (m.page_size != FY_PAGE_SIZE) {
		snprintf(x->err, sizeof(x->err),
			 "source uses %u-byte pages, destination %u",
			 m.page_size, FY_PAGE_SIZE);
		return FERRY_EMISMATCH;
	}
	if (m.nregions != s->nregions) {
		snprintf(x->err, sizeof(x->err),
			 "source has %u memory regions, destination %zu",
			 m.nregions, s->nregions);
		return FERRY_EMISMATCH;
	}
	for (uint32_t i = 0; i < m.nregions; i++) {
		const struct fy_region *r = &s->regions[i];

		if (m.regions[i].gpa != r->gpa || m.regions[i].size != r->size) {
			snprintf(x->err, sizeof(x->err),
				 "region %u (%s): source has %llu bytes at 0x%llx, destination %llu bytes at 0x%llx",
				 i, r->name,
				 (unsigned long long)m.regions[i].size,
				 (unsigned long long)m.regions[i].gpa,
				 (unsigned long long)r->size,
				 (unsigned long long)r->gpa);
			return FERRY_EMISMATCH;
		}
	}
	fy_session_set_state(s, FERRY_STATE_PRECOPY);
	return 0;
}

static int on_pass_begin(struct receiver *x)
{
	ferry_session *s = x->s;

	if (fy_pass_begin_decode(x->ch.rx.in.data, x->ch.rx.in.len, &x->pass)) {
		snprintf(x->err, sizeof(x->err), "malformed PASS_BEGIN");
		return -EBADMSG;
	}
	x->pass_records = 0;
	x->pass_bytes = 0;
	if (x->pool.started)
		fy_recv_pool_begin_pass(&x->pool);
	if (x->pass.final && !x->t_final) {
		x->t_final = fy_now_ns();
		fy_session_set_state(s, FERRY_STATE_STOPPED);
	}
	pthread_mutex_lock(&s->lock);
	s->stats.pass = x->pass.pass;
	s->stats.pass_bytes = 0;
	s->stats.pass_total = x->pass.planned;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int on_memory(struct receiver *x, const struct fy_rec_hdr *h)
{
	ferry_session *s = x->s;
	struct fy_mem_hdr m;
	int rc = fy_chan_recv_mem(&x->ch, h, s->regions, s->nregions, &m,
				  x->err, sizeof(x->err));

	if (rc) {
		if (!x->err[0])
			snprintf(x->err, sizeof(x->err),
				 "receiving memory: %s", ferry_strerror(rc));
		return rc;
	}
	x->pass_records++;
	x->pass_bytes += m.length;
	pthread_mutex_lock(&s->lock);
	s->stats.bytes += m.length;
	s->stats.pass_bytes += m.length;
	s->stats.wire_bytes = fy_chan_wire_bytes(&x->ch);
	pthread_mutex_unlock(&s->lock);
	fy_session_progress(s);
	return 0;
}

/*
 * PASS_END with the source's counts per connection: the main connection's
 * must match what it carried here, the extra ones' are the pool's barrier.
 * A listed connection that broke short of its count lost part of the
 * pass: @ack names it, and the pass does not complete the memory.
 */
static int pass_end_conns(struct receiver *x, const struct fy_pass_end *e,
			  struct fy_pass_ack *ack)
{
	/* Entries go by increasing index: the main one's (0) is first. */
	const struct fy_pass_conn *m = e->conn[0].index ? NULL : &e->conn[0];
	uint64_t records = m ? m->records : 0, bytes = m ? m->bytes : 0;

	if (records != x->pass_records || bytes != x->pass_bytes) {
		snprintf(x->err, sizeof(x->err),
			 "pass %u: source sent %llu records / %llu bytes on the main connection, destination received %llu / %llu",
			 e->pass, (unsigned long long)records,
			 (unsigned long long)bytes,
			 (unsigned long long)x->pass_records,
			 (unsigned long long)x->pass_bytes);
		return FERRY_EPROTO;
	}
	int rc = fy_recv_pool_end_pass_conns(&x->pool, e, ack, x->err,
					     sizeof(x->err));

	if (rc == -ETIMEDOUT)
		x->stall_ns = (uint64_t)fy_stall_ms(x->s) * 1000000ull;
	return rc;
}

static int on_pass_end(struct receiver *x, struct fy_buf *reply)
{
	struct fy_pass_end e;
	struct fy_pass_ack ack = { 0 };
	int rc;

	if (fy_pass_end_decode(x->ch.rx.in.data, x->ch.rx.in.len, &e)) {
		snprintf(x->err, sizeof(x->err), "malformed PASS_END");
		return -EBADMSG;
	}
	/* With extra connections, PASS_END counts what each one carried. */
	if (e.nconn && e.pass == x->pass.pass) {
		rc = pass_end_conns(x, &e, &ack);
		if (rc)
			return rc;
		for (uint32_t i = 0; i < ack.nlost; i++)
			fy_session_log(x->s, 1,
				       "data connection %u broke with part of pass %u; the source sends that part again",
				       ack.lost[i], e.pass);
		x->pass_records = e.records;
		x->pass_bytes = e.bytes;
	}
	if (e.pass != x->pass.pass || e.records != x->pass_records ||
	    e.bytes != x->pass_bytes) {
		snprintf(x->err, sizeof(x->err),
			 "pass %u: source sent %llu records / %llu bytes, destination received %llu / %llu in pass %u",
			 e.pass, (unsigned long long)e.records,
			 (unsigned long long)e.bytes,
			 (unsigned long long)x->pass_records,
			 (unsigned long long)x->pass_bytes, x->pass.pass);
		return FERRY_EPROTO;
	}
	/* A final pass with a lost part is followed by another one. */
	x->final_done = x->pass.final && !ack.nlost;
	/* Postcopy may follow only a pass over all of RAM (the source's
	 * first): what it did not deliver, cut short or lost with a
	 * connection, the source names in its DISCARDs. */
	if (x->pass.planned == x->s->ram_bytes)
		x->pc.full_pass = true;
	if (x->final_done)
		fy_recv_pool_data_done(&x->pool);
	fy_session_event(x->s, FERRY_EVENT_PASS);
	return fy_pass_ack_encode(reply, &ack);
}

static int on_state(struct receiver *x)
{
	ferry_session *s = x->s;
	int rc;

	/* Without a complete final pass, memory may be missing: a guest
	 * loaded now could run on a partial image. After DISCARD the
	 * missing pages are known and follow in postcopy. */
	if (!x->final_done && x->sm.state != FY_RS_PC_DISCARD &&
	    x->sm.state != FY_RS_MEMORY_FDS &&
	    x->sm.state != FY_RS_DEVICE_FDS) {
		snprintf(x->err, sizeof(x->err),
			 "STATE before a complete final memory pass");
		return FERRY_EPROTO;
	}
	rc = s->ops.load_state(s->cfg.opaque, x->ch.rx.in.data, x->ch.rx.in.len);
	if (rc) {
		char why[256] = "";

		if (s->ops.errmsg)
			s->ops.errmsg(s->cfg.opaque, why, sizeof(why));
		why[sizeof(why) - 1] = 0;
		snprintf(x->err, sizeof(x->err), "load_state failed: %s%s%s",
			 ferry_strerror(rc), why[0] ? ": " : "", why);
		return FERRY_EVMM;
	}
	/* A local source sends its state right after it paused: the pause
	 * as this side sees it starts here. */
	if (x->sm.state == FY_RS_MEMORY_FDS && !x->t_final)
		x->t_final = fy_now_ns();
	pthread_mutex_lock(&s->lock);
	s->stats.bytes += x->ch.rx.in.len;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* The point of no return has passed on the source: take over and run. */
static int on_released(struct receiver *x, struct fy_buf *reply)
{
	ferry_session *s = x->s;
	struct fy_running run = { 0 };
	int rc = 0;

	if (s->ops.acquire)
		rc = s->ops.acquire(s->cfg.opaque);
	if (rc) {
		snprintf(x->err, sizeof(x->err), "acquire failed: %s",
			 ferry_strerror(rc));
		return FERRY_EVMM;
	}
	rc = s->ops.resume(s->cfg.opaque);
	if (rc) {
		snprintf(x->err, sizeof(x->err), "resume failed: %s",
			 ferry_strerror(rc));
		return FERRY_EVMM;
	}
	x->resumed = true;
	/* The guest runs here: the source's files are this side's now (a
	 * resume that failed left them to be unmapped, as the source
	 * resumes its guest on the ERROR). */
	fy_local_commit(x);
	/* The guest runs here from now on, before the machine commits
	 * RUNNING after the answer: the owner says so at once. */
	fy_session_set_owner(s, (enum ferry_owner)fy_recv_owner(FY_RS_RUNNING));
	run.resumed_ns = fy_now_ns();
	pthread_mutex_lock(&s->lock);
	if (x->t_final)
		s->stats.downtime_ms = fy_ms(run.resumed_ns - x->t_final);
	pthread_mutex_unlock(&s->lock);
	if (s->ops.running_note)
		s->ops.running_note(s->cfg.opaque, run.note, sizeof(run.note));
	run.note[sizeof(run.note) - 1] = 0;
	return fy_running_encode(reply, &run);
}

/* Who may run the guest, from the receiver's state (proto's rule): none
 * before HELLO, the source until RELEASED, this side after it. */
static void sync_owner(struct receiver *x)
{
	fy_session_set_owner(x->s,
			     (enum ferry_owner)fy_recv_owner(x->sm.state));
}

/* Perform one classified record; fills @reply for requests answered OK. */
static int dispatch(struct receiver *x, const struct fy_rec_hdr *h,
		    const struct fy_recv_step *st, struct fy_buf *reply)
{
	struct fy_error_msg e;
	int rc;

	if (st->action == FY_RA_MEMORY)
		return on_memory(x, h);
	rc = fy_chan_recv_body(&x->ch, h);
	if (rc) {
		x->link_timeout = rc == -ETIMEDOUT;
		snprintf(x->err, sizeof(x->err), "reading %s body: %s",
			 fy_rec_name(h->type, (char[32]){ 0 }, 32),
			 ferry_strerror(rc));
		return rc;
	}
	switch (st->action) {
	case FY_RA_SKIP:
		return 0;
	case FY_RA_HELLO:
		return on_hello(x, reply);
	case FY_RA_CONFIG:
		return on_config(x);
	case FY_RA_PASS_BEGIN:
		return on_pass_begin(x);
	case FY_RA_PASS_END:
		return on_pass_end(x, reply);
	case FY_RA_STATE:
		return on_state(x);
	case FY_RA_SWITCHOVER:
		fy_session_set_state(x->s, FERRY_STATE_SWITCHOVER);
		return 0;
	case FY_RA_RELEASED:
		return on_released(x, reply);
	case FY_RA_DISCARD:
		/* Keep-alives go on (held between answers, see serve()):
		 * the source reads DISCARD's answer with await_response(),
		 * which skips them, as its postcopy reader does later. */
		return fy_pc_discard(x, reply);
	case FY_RA_POSTCOPY:
		/* The keeper goes on through acquire and resume (the source
		 * waits for the answer, and its await skips keep-alives) and
		 * stops once the OK is out (serve()'s caller); the source's
		 * postcopy reader skips any that crossed it. */
		return fy_pc_postcopy(x, reply);
	case FY_RA_MEMORY_FDS:
		return fy_local_on_fds(x);
	case FY_RA_DEVICE_FDS:
		return fy_local_on_device_fds(x);
	case FY_RA_ABORT:
		if (fy_error_decode(x->ch.rx.in.data, x->ch.rx.in.len, &e))
			snprintf(e.message, sizeof(e.message), "(no reason)");
		snprintf(x->err, sizeof(x->err), "source aborted: %s",
			 e.message);
		return FERRY_EPEER;
	default:
		snprintf(x->err, sizeof(x->err), "internal: action %d",
			 st->action);
		return -EINVAL;
	}
}

/* The wire code of an ERROR answering @st's request with @rc: a POSTCOPY
 * that failed before the transition says the guest never ran here, the
 * only answer that gives it back to the source. */
static int wire_code(const struct receiver *x, const struct fy_recv_step *st,
		     int rc)
{
	if (st->action == FY_RA_POSTCOPY && x->sm.state == FY_RS_PC_LOADED)
		return FY_ERR_NOT_RUN;
	return rc;
}

/*
 * Whether an -ETIMEDOUT is the source's silence (a read or write that
 * gave up, the kernel's timeout on a read, a silent data connection or
 * pass barrier) rather than, say, a VMM callback's own timeout, whose
 * message then stands.
 */
static bool is_stall(const struct receiver *x)
{
	return x->stall_ns || x->ch.rx.stall_ns || x->ch.tx.stall_ns ||
	       x->link_timeout;
}

/*
 * The attempt ended on a silent source: its main connection (a read that
 * gave up, or TCP that did), or the data connections in the pass
 * barrier, whose own message then stands. FERRY_ETIMEOUT.
 */
static int stalled(struct receiver *x)
{
	uint64_t ns = x->stall_ns;

	if (!ns)
		ns = fy_chan_stalled(&x->ch, "the source", x->err,
				     sizeof(x->err));
	return fy_session_stall_fail(x->s, ns, "giving the attempt up", x->err);
}

/* Serve records until the guest runs here (completely, or in postcopy)
 * or the attempt fails. */
static int serve(struct receiver *x)
{
	struct fy_buf reply;
	int rc = 0;

	fy_buf_init(&reply);
	while (x->sm.state != FY_RS_RUNNING && x->sm.state != FY_RS_POSTCOPY) {
		struct fy_rec_hdr h;
		struct fy_recv_step st;
		bool moved;

		/* A cancel is seen between records, not only once the
		 * stream goes quiet. */
		rc = fy_cancelled(x->s)
			     ? FERRY_ECANCELED
			     : fy_chan_recv_hdr(&x->ch, &h, x->ch.answer_ms);
		if (rc) {
			int prc = fy_recv_pool_error(&x->pool, x->err,
						     sizeof(x->err));

			/* A failed data connection shut our reading side to
			 * get here: answer with its reason (which stands,
			 * a stall included: see stalled()). */
			if (prc == -ETIMEDOUT && !x->stall_ns)
				x->stall_ns = (uint64_t)fy_stall_ms(x->s) *
					      1000000ull;
			if (prc) {
				rc = prc;
				respond_error(x, 0, rc, x->err);
				break;
			}
			x->link_timeout = rc == -ETIMEDOUT;
			snprintf(x->err, sizeof(x->err), "%s",
				 rc == -EBADMSG || rc == -EMSGSIZE
					 ? "malformed record header"
					 : ferry_strerror(rc));
			/* Tell the source why, unless the connection went. */
			if (rc == -EBADMSG || rc == -EMSGSIZE ||
			    rc == FERRY_ECANCELED)
				respond_error(x, 0, rc, x->err);
			break;
		}
		fy_recv_pool_log(&x->pool);
		fy_recv_sm_step(&x->sm, h.type, h.seq, &st);
		if (st.action == FY_RA_REJECT) {
			snprintf(x->err, sizeof(x->err), "%s", st.msg);
			respond_error(x, h.seq, st.code, st.msg);
			rc = st.code;
			break;
		}
		fy_buf_reset(&reply);
		x->err[0] = 0;
		/*
		 * Keep-alives go out only while the source waits for an
		 * answer: it reads the main connection only then. Sent
		 * during a pass (while it writes pages and reads nothing)
		 * they would pile up in its receive buffer until its window
		 * closes, and a zero window held longer than
		 * TCP_USER_TIMEOUT aborts the connection (Linux >= 5.11).
		 * Holding the keeper here is simpler than making the source
		 * drain them between chunks, and every record but MEMORY is
		 * a request the source waits on.
		 */
		if (st.respond)
			fy_keeper_hold(&x->keeper, false);
		rc = dispatch(x, &h, &st, &reply);
		if (rc) {
			if (st.action == FY_RA_ABORT)
				respond_ok(x, h.seq, NULL);
			else if (rc != -ECONNRESET && rc != FERRY_ECANCELED)
				respond_error(x, st.respond ? h.seq : 0,
					      wire_code(x, &st, rc),
					      x->err[0] ? x->err
							: ferry_strerror(rc));
			break;
		}
		if (st.respond) {
			rc = respond_ok(x, h.seq, &reply);
			/* Once resumed, the guest runs here whether or not
			 * the source hears "running". */
			if (rc && x->resumed) {
				fy_session_log(x->s, 0,
					       "guest runs here, but the source did not get the confirmation: %s",
					       ferry_strerror(rc));
				rc = 0;
			}
			/* Past the transition the postcopy phase finds the
			 * broken connection and pauses. */
			if (rc && x->sm.state == FY_RS_POSTCOPY)
				rc = 0;
			if (rc) {
				snprintf(x->err, sizeof(x->err),
					 "answering: %s", ferry_strerror(rc));
				break;
			}
		}
		if (x->keep) {
			x->keep = false;
			fy_keeper_hold(&x->keeper, true);
			fy_keeper_start(&x->keeper, &x->ch);
		}
		fy_keeper_hold(&x->keeper, true);
		moved = st.next != x->sm.state;
		fy_recv_sm_commit(&x->sm, &st, h.seq);
		if (moved)
			sync_owner(x);
	}
	fy_buf_free(&reply);
	if (rc) {
		fy_recv_sm_fail(&x->sm);
		sync_owner(x);
	}
	return rc;
}

/*
 * Receive buffers: the kernel grows a TCP receive buffer to what the
 * sender keeps in flight, up to net.ipv4.tcp_rmem's ceiling, and a sized
 * buffer stops that growth, so it is sized only when this side's window
 * (the same default as a source's) needs more than the ceiling. Set on the
 * listener, so the connections accepted from it inherit it and announce a
 * window scale to match.
 */
static void size_rcvbuf(ferry_session *s, int lfd)
{
	size_t want = (size_t)(s->cfg.window ? s->cfg.window
					      : FY_DEFAULT_WINDOW) *
		      fy_chunk_wire_size(s->cfg.chunk_bytes);

	if (want > fy_transport_rcvbuf_ceiling())
		fy_transport_set_buffer(lfd, false, want);
}

/* Tell the log, the stats and the event callback where this run listens
 * (with the port the kernel chose for "tcp:HOST:0"), so that an embedder
 * need not guess when to connect. */
static void announce(ferry_session *s, const struct fy_uri *u, int lfd)
{
	char where[FERRY_URI_MAX];

	fy_transport_listen_uri(u, lfd, where, sizeof(where));
	pthread_mutex_lock(&s->lock);
	memcpy(s->stats.listen_uri, where, sizeof(where));
	pthread_mutex_unlock(&s->lock);
	fy_session_log(s, 2, "listening on %s", where);
	fy_session_event(s, FERRY_EVENT_LISTENING);
}

/*
 * The listener: our own for tcp: and unix:, or a duplicate of the caller's
 * for "fd:N" (*@borrowed: it must not be shut down). A connected fd:N is
 * the main connection itself: *@fd is set and *@lfd stays -1.
 */
static int open_listener(ferry_session *s, const struct fy_uri *u, int *lfd,
			 int *fd, bool *borrowed)
{
	char err[256];
	bool listening = true;
	int dfd, rc;

	if (u->kind != FY_URI_FD) {
		rc = fy_transport_listen(u, lfd, err, sizeof(err));
		return rc ? fy_session_fail(s, rc, "%s", err) : 0;
	}
	rc = fy_transport_borrow(u, &dfd, &listening, err, sizeof(err));
	if (rc)
		return fy_session_fail(s, rc, "%s", err);
	*borrowed = listening;
	if (listening)
		*lfd = dfd;
	else
		*fd = dfd;
	return 0;
}

/**
 * fy_recv_listen() - a listener of our own on @u for a postcopy recovery:
 * the source's recovery connection and its data connections come through
 * it, so a connected or borrowed descriptor (fd:N) cannot serve.
 */
int fy_recv_listen(ferry_session *s, const struct fy_uri *u, int *lfd,
		   char *err, size_t errlen)
{
	int rc;

	if (u->kind != FY_URI_TCP && u->kind != FY_URI_UNIX) {
		snprintf(err, errlen,
			 "postcopy recovers on a tcp: or unix: listener of its own, for the recovery connection and the data connections");
		return -EINVAL;
	}
	rc = fy_transport_listen(u, lfd, err, errlen);
	if (rc)
		return rc;
	size_rcvbuf(s, *lfd);
	announce(s, u, *lfd);
	return 0;
}

/* Whether the file at @fd is in the mapped layout (a newer snapshot) rather
 * than a stream; reads its first bytes and rewinds. */
static bool is_mapped(int fd)
{
	uint8_t m[8];
	bool yes = pread(fd, m, sizeof(m), 0) == (ssize_t)sizeof(m) &&
		   fy_snap_is_mapped(m, sizeof(m));

	return yes;
}

/* Accept the main connection; the listener stays open for extra ones. */
static int accept_one(ferry_session *s, const struct fy_uri *u, int *lfd,
		      int *fd, bool *borrowed)
{
	int rc;

	rc = open_listener(s, u, lfd, fd, borrowed);
	if (rc || *lfd < 0)
		return rc;
	/* A borrowed listener is the caller's socket: its options stay. */
	if (!*borrowed)
		size_rcvbuf(s, *lfd);
	announce(s, u, *lfd);
	do {
		rc = fy_transport_accept(*lfd, fd, FY_TICK_MS);
		if (rc == -ETIMEDOUT && fy_cancelled(s))
			rc = FERRY_ECANCELED;
	} while (rc == -ETIMEDOUT);
	if (rc) {
		close(*lfd);
		*lfd = -1;
		return fy_session_fail(s, rc, "accepting a migration: %s",
				       ferry_strerror(rc));
	}
	return 0;
}

FERRY_API int ferry_session_receive(ferry_session *s, const char *uri)
{
	struct receiver x = { .s = s };
	uint8_t sh[FY_STREAM_HDR_SIZE];
	struct fy_uri u;
	uint16_t ver;
	int fd = -1, lfd = -1, rc;
	bool borrowed = false;

	if (!s || !uri)
		return -EINVAL;
	fy_chan_clear(&x.ch);
	x.pool.lfd = -1;
	x.pool.main_fd = -1;
	rc = fy_session_begin(s, FERRY_STATE_CONNECTING, FERRY_OWNER_NONE);
	if (rc)
		return rc;
	fy_pc_init(&x);
	fy_local_init(&x);
	fy_recv_sm_init(&x.sm);
	rc = fy_session_check_role(s, false);
	if (rc)
		goto done;
	rc = fy_uri_parse(uri, &u, x.err, sizeof(x.err));
	if (rc) {
		fy_session_fail(s, rc, "%s", x.err);
		goto done;
	}
	if (s->cfg.lazy && u.kind != FY_URI_FILE) {
		rc = fy_session_fail(s, -EINVAL,
				     "lazy loading is for file: snapshots (%s is a migration)",
				     uri);
		goto done;
	}
	if (u.kind == FY_URI_FILE) {
		fd = open(u.path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			rc = fy_session_fail(s, -errno, "cannot open %s: %s",
					     u.path, strerror(errno));
			goto done;
		}
		if (is_mapped(fd)) {
			close(fd);
			fd = -1;
			rc = fy_snap_restore(s, u.path);
			goto done;
		}
		if (s->cfg.lazy) {
			close(fd);
			fd = -1;
			rc = fy_session_fail(s, -EINVAL,
					     "%s is a stream-format snapshot of an older ferry: it restores only eagerly (without lazy)",
					     u.path);
			goto done;
		}
	} else {
		rc = accept_one(s, &u, &lfd, &fd, &borrowed);
		if (rc)
			goto done;
		fy_transport_tune(fd, FY_TICK_MS);
		/* Extra connections come through our own listener. Not a
		 * borrowed one: the caller may accept on it too, and an
		 * acceptor blocked in accept() there would never wake. */
		if (lfd >= 0 && (borrowed ||
				 !(s->cfg.capabilities & FERRY_CAP_MULTI_CHANNEL) ||
				 fy_recv_pool_start(&x.pool, s, lfd, fd)))
			close(lfd);
	}
	rc = fy_chan_init(&x.ch, s, fd);
	if (rc) {
		close(fd);
		x.ch.fd = -1;
		fy_session_fail(s, rc, "out of memory");
		goto done;
	}
	x.ch.is_file = u.kind == FY_URI_FILE;
	fy_chan_log_watch(&x.ch, "main connection");
	rc = fy_chan_secure(&x.ch, true, x.err, sizeof(x.err));
	if (rc) {
		fy_session_fail(s, rc, "%s", x.err);
		goto done;
	}
	fy_session_set_state(s, FERRY_STATE_NEGOTIATING);
	rc = fy_chan_read_full(&x.ch, sh, sizeof(sh));
	if (!rc)
		rc = fy_stream_hdr_decode(sh, &ver);
	if (rc) {
		/* Under TLS the session may know more than the code (the
		 * source refused after the handshake, with an alert). */
		const char *why = x.ch.tls ? fy_tls_rx_error(x.ch.tls) : NULL;

		fy_session_fail(s, rc, "not a ferry stream: %s",
				why ? why : ferry_strerror(rc));
		respond_error(&x, 0, rc, "not a ferry stream");
		goto done;
	}
	x.pc.where = u;
	x.pc.where_ours = lfd >= 0;
	rc = serve(&x);
	fy_keeper_stop(&x.keeper);
	/* The source may resume its guest: this side lets go of its
	 * memory before anything here could write into it. */
	if (rc && !x.resumed)
		fy_local_undo(&x);
	/* Past the transition the guest may run here: postcopy goes on,
	 * or pauses, and never gives the guest up. */
	if (x.sm.state == FY_RS_POSTCOPY || x.sm.state == FY_RS_PC_PAUSED)
		rc = fy_pc_run(&x, rc);
	else if (rc == -ETIMEDOUT && is_stall(&x))
		rc = stalled(&x);
	else if (rc)
		fy_session_fail(s, rc, "%s", x.err[0] ? x.err : ferry_strerror(rc));
done:
	pthread_mutex_lock(&s->lock);
	s->stats.connections = 1 + fy_recv_pool_channels(&x.pool);
	pthread_mutex_unlock(&s->lock);
	fy_keeper_stop(&x.keeper);
	fy_recv_pool_stop(&x.pool);
	if (x.local.n)
		fy_local_undo(&x);
	fy_chan_close(&x.ch);
	if (x.pc.where_ours)
		fy_transport_unlink(&x.pc.where);
	else if (lfd >= 0 && !x.pc.where.kind)
		fy_transport_unlink(&u);
	fy_pc_free(&x);
	return fy_session_end(s, rc);
}
