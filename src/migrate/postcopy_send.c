// SPDX-License-Identifier: MIT
/*
 * postcopy_send.c - the source's postcopy: the switch (pause, DISCARD of
 * the pages the destination holds stale copies of, STATE, POSTCOPY: the
 * transition), then serving the destination's page requests on the main
 * connection while data connections push every other missing page, the
 * end (POSTCOPY_END), and, when a connection breaks, postcopy-paused
 * until an operator recovers the session or forces the source's copy to
 * run. docs/stream-format.md ("Postcopy") is the protocol.
 *
 * Threads in the postcopy phase: this one (progress, the end), one that
 * reads the main connection (page requests and the answer to
 * POSTCOPY_END) and answers requests on it, and one pusher per data
 * connection. The pages still to send are a bitmap per region, in the
 * destination's placement units; whoever sends a unit clears its bits
 * under the lock first, so the push and the answers rarely send a page
 * twice (it would be harmless: the destination places a page once).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "memory/lazy.h"
#include "migrate/sender.h"

/* Seconds of silence before TCP probes a postcopy connection's peer;
 * a dead one is seen within about three times that. */
#define FY_PC_WATCH_S 10

struct pc_src {
	struct sender *x;
	ferry_session *s;
	pthread_mutex_t lock; /* need, cursor, counts, main tx, sm */
	pthread_cond_t cv;
	uint64_t *need[FY_MAX_REGIONS]; /* bit = page still to send */
	uint64_t *answered_map[FY_MAX_REGIONS]; /* bit = answered in this
						   phase (per page) */
	uint64_t pages[FY_MAX_REGIONS];
	uint64_t unit[FY_MAX_REGIONS]; /* bytes */
	uint64_t left;			/* set bits in need */
	uint32_t at_region;		/* the push cursor */
	uint64_t at_page;
	uint64_t max_rec;		/* bytes of a record, at most: the
					   chunk, or a unit if larger */
	/* Since the OK of POSTCOPY or RESUME, over every connection: */
	uint64_t records, bytes;
	uint64_t req_pages, push_pages; /* the whole postcopy */
	int err;			/* the first failure: pause */
	char why[256];
	uint64_t stall_ns;		/* ... a stalled destination, silent
					   this long (stats.stall_detect_ms) */
	bool ended;			/* POSTCOPY_END sent: no more data */
	bool answered;			/* ... and answered */
	bool late_failed;		/* an answer after it failed: no more */
	uint64_t t_end;			/* when the answer came */
	unsigned pushing;		/* pushers still running */
	bool stop;
	pthread_t reader, pusher[FY_MAX_CHANNELS];
	bool reader_on;
	unsigned npushers;
	uint32_t generation;		/* of the last RESUME */
	int lane_cpu;			/* the reader's CPU (fy_lane_cpu) */
	/* The lane's keeper of the phase (ferry_config.lane_poll_us), or
	 * NULL, and over the whole postcopy, written by the reader or at
	 * its join: */
	struct fy_lane_keeper *keeper;
	uint64_t reader_cpu_ns;		/* the reader's CPU time */
	uint64_t nreq;			/* PAGE_REQs it read */
	uint64_t keeper_cpu_ns, keeper_windows;
	unsigned conns;			/* connections at the start, the main
					   one included: a recovery joins them
					   all again */
	uint64_t wire_base;		/* bytes of connections closed since */
	uint64_t t_switch;		/* POSTCOPY sent */
	uint64_t t_resumed;
};

/* Record the first failure of the phase; wakes the main thread. Locked. */
static void pc_fail_locked(struct pc_src *p, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void pc_fail_locked(struct pc_src *p, int rc, const char *fmt, ...)
{
	va_list ap;

	if (!p->err) {
		p->err = rc ? rc : -EIO;
		va_start(ap, fmt);
		vsnprintf(p->why, sizeof(p->why), fmt, ap);
		va_end(ap);
	}
	pthread_cond_broadcast(&p->cv);
}

/*
 * Connection @c of the phase gave up on a silent destination (-ETIMEDOUT:
 * the stall limit on a read or a write, or the kernel's
 * TCP_USER_TIMEOUT): the phase fails saying so and for how long. Locked.
 */
static void pc_stall_locked(struct pc_src *p, struct fy_chan *c,
			    const char *what)
{
	char why[200];
	uint64_t ns = fy_chan_stalled(c, "the destination", why, sizeof(why));

	if (!p->err)
		p->stall_ns = ns;
	pc_fail_locked(p, FERRY_ETIMEOUT, "%s stalled: %s", what, why);
}

/* ---- the pages still to send ---- */

static void need_set(struct pc_src *p, uint32_t r, uint64_t first,
		     uint64_t n)
{
	for (uint64_t pg = first; pg < first + n; pg++) {
		uint64_t bit = 1ull << (pg % 64);

		if (!(p->need[r][pg / 64] & bit)) {
			p->need[r][pg / 64] |= bit;
			p->left++;
		}
	}
}

/* Clear pages [first, first + n) of region @r; returns how many were set. */
static uint64_t need_clear(struct pc_src *p, uint32_t r, uint64_t first,
			   uint64_t n)
{
	uint64_t was = 0;

	for (uint64_t pg = first; pg < first + n; pg++) {
		uint64_t bit = 1ull << (pg % 64);

		if (p->need[r][pg / 64] & bit) {
			p->need[r][pg / 64] &= ~bit;
			was++;
		}
	}
	p->left -= was;
	return was;
}

/* Widen [first, first + n) of region @r to whole units. */
static void widen(const struct pc_src *p, uint32_t r, uint64_t *first,
		  uint64_t *n)
{
	uint64_t up = p->unit[r] / FY_PAGE_SIZE;
	uint64_t end = *first + *n;

	*first -= *first % up;
	end = (end + up - 1) / up * up;
	if (end > p->pages[r])
		end = p->pages[r];
	*n = end - *first;
}

static int need_alloc(struct pc_src *p)
{
	ferry_session *s = p->s;

	for (size_t r = 0; r < s->nregions; r++) {
		p->pages[r] = s->regions[r].size / FY_PAGE_SIZE;
		p->need[r] = calloc((p->pages[r] + 63) / 64, 8);
		p->answered_map[r] = calloc((p->pages[r] + 63) / 64, 8);
		if (!p->need[r] || !p->answered_map[r])
			return -ENOMEM;
	}
	return 0;
}

/* The discard set, widened to units, is what the destination misses. */
static void need_from_ranges(struct pc_src *p, const struct fy_ranges *rg)
{
	for (size_t i = 0; i < rg->n; i++) {
		uint64_t first = rg->v[i].offset / FY_PAGE_SIZE;
		uint64_t n = rg->v[i].length / FY_PAGE_SIZE;

		widen(p, rg->v[i].region, &first, &n);
		need_set(p, rg->v[i].region, first, n);
	}
}

/* The first set bit at or after @pg, or @pages: a word at a time. */
static uint64_t next_set(const uint64_t *bits, uint64_t pg, uint64_t pages)
{
	uint64_t w;

	if (pg >= pages)
		return pages;
	w = bits[pg / 64] & (~0ull << (pg % 64));
	while (!w) {
		pg = (pg / 64 + 1) * 64;
		if (pg >= pages)
			return pages;
		w = bits[pg / 64];
	}
	pg = pg / 64 * 64 + (uint64_t)__builtin_ctzll(w);
	return pg < pages ? pg : pages;
}

/*
 * The next run of needed pages from the cursor on, whole units, at most
 * max_rec bytes, wrapping around once; its bits are cleared. Locked.
 */
static bool take_run(struct pc_src *p, struct fy_range *out)
{
	ferry_session *s = p->s;

	for (size_t k = 0; k <= s->nregions && p->left; k++) {
		uint32_t r = p->at_region;
		uint64_t up = p->unit[r] / FY_PAGE_SIZE, pg = p->at_page;
		uint64_t limit = p->max_rec / FY_PAGE_SIZE, n = 0;

		pg = next_set(p->need[r], pg, p->pages[r]);
		if (pg >= p->pages[r]) {
			p->at_region = (r + 1) % s->nregions;
			p->at_page = 0;
			continue;
		}
		pg -= pg % up;
		while (pg + n < p->pages[r] && n < limit &&
		       (p->need[r][(pg + n) / 64] >> ((pg + n) % 64) & 1))
			n += up;
		if (pg + n > p->pages[r])
			n = p->pages[r] - pg;
		if (!n)
			n = up < p->pages[r] - pg ? up : p->pages[r] - pg;
		need_clear(p, r, pg, n);
		p->at_page = pg + n;
		*out = (struct fy_range){ r, pg * FY_PAGE_SIZE,
					  n * FY_PAGE_SIZE };
		return true;
	}
	return false;
}

/* ---- sending ---- */

/* One record of @rg on @c, counted. Called locked (main connection) or
 * not (a pusher's own connection); the counts take the lock. */
static int send_run(struct pc_src *p, struct fy_chan *c,
		    const struct fy_range *rg, bool locked)
{
	struct fy_mem_hdr m = { rg->region, 0, rg->offset, rg->length };
	int rc = fy_chan_send_mem(c, &p->s->regions[rg->region], &m, true);

	if (rc)
		return rc;
	if (!locked)
		pthread_mutex_lock(&p->lock);
	p->records++;
	p->bytes += rg->length;
	if (!locked)
		pthread_mutex_unlock(&p->lock);
	fy_session_count_bytes(p->s, rg->length);
	return 0;
}

struct pusher_arg {
	struct pc_src *p;
	struct fy_chan *c;
	unsigned idx;
};

static void *pusher(void *arg)
{
	struct pusher_arg *a = arg;
	struct pc_src *p = a->p;
	struct fy_range rg;
	int rc = 0;

	pthread_mutex_lock(&p->lock);
	while (!p->stop && !p->err && take_run(p, &rg)) {
		p->push_pages += rg.length / FY_PAGE_SIZE;
		pthread_mutex_unlock(&p->lock);
		rc = send_run(p, a->c, &rg, false);
		pthread_mutex_lock(&p->lock);
		if (rc) {
			/* Not sent: the destination may lack it. */
			need_set(p, rg.region, rg.offset / FY_PAGE_SIZE,
				 rg.length / FY_PAGE_SIZE);
			break;
		}
	}
	pthread_mutex_unlock(&p->lock);
	if (!rc)
		rc = fy_chan_flush(a->c);
	pthread_mutex_lock(&p->lock);
	if (rc == -ETIMEDOUT) {
		char what[32];

		snprintf(what, sizeof(what), "data connection %u", a->idx);
		pc_stall_locked(p, a->c, what);
	} else if (rc) {
		pc_fail_locked(p, rc, "data connection %u: %s", a->idx,
			       ferry_strerror(rc));
	}
	p->pushing--;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->lock);
	free(a);
	return NULL;
}

/*
 * Send the units of [first, first + n) (whole units) of region @r that
 * were not answered in this phase, in records of at most max_rec. Each
 * unit goes once per phase on the main connection, which is ordered: a
 * second request for it is already answered. This also bounds what a
 * destination can make the source send by asking again and again (the
 * answers go before the bandwidth cap) to one guest's memory. Locked.
 */
static int answer_range(struct pc_src *p, uint32_t r, uint64_t first,
			uint64_t n)
{
	uint64_t up = p->unit[r] / FY_PAGE_SIZE, end = first + n, run = 0;
	uint64_t at = first, pg = first, limit = p->max_rec / FY_PAGE_SIZE;
	int rc = 0;

	while (pg < end && !rc) {
		uint64_t len = end - pg < up ? end - pg : up;

		if (p->answered_map[r][pg / 64] >> (pg % 64) & 1) {
			pg += len; /* answered before: ends the record */
		} else {
			if (!run)
				at = pg;
			for (uint64_t k = pg; k < pg + len; k++)
				p->answered_map[r][k / 64] |= 1ull << (k % 64);
			run += len;
			pg += len;
			if (run < limit && pg < end)
				continue;
		}
		if (run) {
			struct fy_range rg = { r, at * FY_PAGE_SIZE,
					       run * FY_PAGE_SIZE };

			rc = send_run(p, &p->x->ch, &rg, true);
			p->req_pages += run;
			run = 0;
		}
	}
	return rc;
}

/*
 * Answer one PAGE_REQ: every requested unit, on the main connection, now
 * (the destination's vCPU waits for it), whether or not the push sent it
 * already; the push then goes on from there, near the fault. Locked.
 * Also after POSTCOPY_END, until its answer: the unit may be in flight in
 * a data connection's tail, and the answer overtakes it (the destination
 * places it without counting it).
 */
static int answer(struct pc_src *p, const struct fy_page_list *l)
{
	int rc = 0;

	for (uint32_t i = 0; i < l->count && !rc; i++) {
		struct fy_page_range pr;
		uint64_t first, n;

		fy_page_list_get(l, i, &pr);
		first = pr.first;
		n = pr.pages;
		widen(p, pr.region, &first, &n);
		need_clear(p, pr.region, first, n);
		rc = answer_range(p, pr.region, first, n);
		p->at_region = pr.region;
		p->at_page = first + n;
	}
	if (!rc)
		rc = fy_chan_flush(&p->x->ch);
	return rc;
}

/* A PAGE_REQ arrived (its body is in the main connection's buffer). */
static int on_page_req(struct pc_src *p)
{
	struct sender *x = p->x;
	struct fy_page_list l;
	char err[160];
	int rc = fy_page_req_decode(x->ch.rx.in.data, x->ch.rx.in.len, &l, err,
				    sizeof(err));

	if (!rc)
		rc = fy_page_list_check(&l, p->pages, (uint32_t)p->s->nregions,
					err, sizeof(err));
	pthread_mutex_lock(&p->lock);
	if (rc)
		pc_fail_locked(p, FERRY_EPROTO, "bad PAGE_REQ: %s", err);
	else if (!p->answered && !p->late_failed)
		rc = answer(p, &l); /* also after POSTCOPY_END: see answer() */
	if (rc && p->ended && !p->err) {
		/* Every page went out before POSTCOPY_END: a late answer
		 * that fails loses nothing, and the destination's answer to
		 * POSTCOPY_END may be waiting to be read. */
		p->late_failed = true;
		rc = 0;
	}
	if (rc == -ETIMEDOUT && !p->err)
		pc_stall_locked(p, &x->ch, "answering a page request: main connection");
	else if (rc && !p->err)
		pc_fail_locked(p, rc, "answering a page request: %s",
			       ferry_strerror(rc));
	pthread_mutex_unlock(&p->lock);
	return rc;
}

/* The answer to POSTCOPY_END (its body in the main connection's buffer). */
static void on_answer(struct pc_src *p, uint32_t type, uint32_t seq)
{
	struct sender *x = p->x;
	struct fy_error_msg e;
	int rc;

	pthread_mutex_lock(&p->lock);
	rc = fy_send_sm_response(&x->sm, type, seq);
	if (rc == FERRY_EPEER) {
		if (fy_error_decode(x->ch.rx.in.data, x->ch.rx.in.len, &e))
			snprintf(e.message, sizeof(e.message), "(undecodable)");
		pc_fail_locked(p, FERRY_EPEER,
			       "destination refused POSTCOPY_END: %s",
			       e.message);
	} else if (rc) {
		pc_fail_locked(p, FERRY_EPROTO,
			       "an answer (seq %u) that answers nothing", seq);
	} else {
		p->answered = true;
		p->t_end = fy_now_ns();
	}
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->lock);
}

/*
 * The main connection's reader: requests in, answers out. A destination
 * with the keepalive and postcopy-keepalive capabilities writes
 * KEEPALIVE there whenever it wrote nothing else for a while (its keeper
 * runs through its postcopy phase),
 * so silence for the stall limit is a stalled destination: frozen, or
 * behind a link that stopped forwarding, which TCP does not see as long
 * as the frozen kernel, or a proxy, acknowledges. An older destination
 * is silent while its guest faults on nothing: no limit then, and a dead
 * link is TCP's to see (fy_transport_watch).
 */
static void *reader(void *arg)
{
	struct pc_src *p = arg;
	struct sender *x = p->x;
	const uint64_t both = FERRY_CAP_KEEPALIVE | FERRY_CAP_POSTCOPY_KEEPALIVE;
	int idle = (x->peer.capabilities & both) == both ? x->ch.idle_ms : 0;
	char msg[160];
	struct fy_prio prio;
	uint64_t cpu0 = fy_thread_cpu_ns();

	/* The urgent lane: a vCPU at the destination waits for each answer. */
	fy_thread_urgent(&prio, p->lane_cpu);

	for (;;) {
		struct fy_rec_hdr h;
		enum fy_send_input in;
		bool over;
		int rc;

		rc = fy_chan_recv_hdr(&x->ch, &h, idle);
		if (!rc)
			rc = fy_chan_recv_body(&x->ch, &h);
		pthread_mutex_lock(&p->lock);
		if (p->stop || p->answered) {
			pthread_mutex_unlock(&p->lock);
			break;
		}
		if (rc == -ETIMEDOUT) {
			pc_stall_locked(p, &x->ch, "main connection");
			pthread_mutex_unlock(&p->lock);
			break;
		}
		if (rc) {
			pc_fail_locked(p, rc, "main connection: %s",
				       ferry_strerror(rc));
			pthread_mutex_unlock(&p->lock);
			break;
		}
		in = fy_send_sm_input(&x->sm, h.type, h.seq, msg, sizeof(msg));
		pthread_mutex_unlock(&p->lock);
		switch (in) {
		case FY_SI_PAGE_REQ:
			rc = on_page_req(p);
			fy_lane_keeper_note(p->keeper);
			p->nreq++;
			break;
		case FY_SI_RESPONSE:
			on_answer(p, fy_rec_number(h.type), h.seq);
			break;
		case FY_SI_SKIP:
			break;
		default:
			pthread_mutex_lock(&p->lock);
			pc_fail_locked(p, FERRY_EPROTO, "%s", msg);
			pthread_mutex_unlock(&p->lock);
			rc = FERRY_EPROTO;
		}
		pthread_mutex_lock(&p->lock);
		over = p->answered || p->err;
		pthread_mutex_unlock(&p->lock);
		if (rc || over)
			break;
	}
	p->reader_cpu_ns += fy_thread_cpu_ns() - cpu0;
	return NULL;
}

/* ---- the phase ---- */

static void wait_tick(struct pc_src *p)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_nsec += FY_POOL_TICK_MS * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&p->cv, &p->lock, &ts);
}

/* Statistics and progress, from the thread that drives the session. */
/* Bytes on the wire in all, the connections of earlier attempts too. */
static uint64_t wire(const struct pc_src *p)
{
	const struct sender *x = p->x;
	uint64_t n = p->wire_base + fy_chan_wire_bytes(&x->ch);

	for (unsigned i = 0; i < x->nextra; i++)
		n += fy_chan_wire_bytes(&x->extra[i]);
	return n;
}

static void publish(struct pc_src *p, bool done)
{
	ferry_session *s = p->s;
	uint64_t req, push, left, now = fy_now_ns(), bytes = wire(p);

	pthread_mutex_lock(&p->lock);
	req = p->req_pages;
	push = p->push_pages;
	left = p->left;
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_lock(&s->lock);
	s->stats.postcopy = true;
	s->stats.pages_requested = req;
	s->stats.pages_pushed = push;
	s->stats.pages_missing = done ? 0 : left;
	s->stats.postcopy_ms = fy_ms(now - p->t_switch);
	s->stats.wire_bytes = bytes;
	pthread_mutex_unlock(&s->lock);
	fy_session_progress(s);
}

/* Every page went out: count and send POSTCOPY_END. Locked. */
static int send_end(struct pc_src *p)
{
	struct sender *x = p->x;
	struct fy_postcopy_end e = { p->records, p->bytes };
	struct fy_buf b;
	uint32_t seq;
	int rc;

	fy_buf_init(&b);
	rc = fy_postcopy_end_encode(&b, &e);
	if (!rc)
		rc = fy_send_sm_request(&x->sm, FY_REC_POSTCOPY_END, &seq)
			     ? FERRY_EPROTO : 0;
	if (!rc)
		rc = fy_chan_send_rec(&x->ch, FY_REC_POSTCOPY_END, seq, b.data,
				      b.len);
	fy_buf_free(&b);
	p->ended = true;
	return rc;
}

static int start_threads(struct pc_src *p)
{
	struct sender *x = p->x;

	p->stop = false;
	p->err = 0;
	p->why[0] = 0;
	p->stall_ns = 0;
	p->ended = false;
	p->answered = false;
	p->late_failed = false;
	/* A new phase's destination asks again for what its vCPUs wait on
	 * (the old connection's answers may be lost). */
	for (size_t r = 0; r < p->s->nregions; r++)
		memset(p->answered_map[r], 0, (p->pages[r] + 63) / 64 * 8);
	p->records = 0;
	p->bytes = 0;
	p->npushers = 0;
	p->pushing = 0;
	/* Chosen on the session's thread, whose CPUs auto mode looks at. */
	p->lane_cpu = fy_lane_cpu(p->s->cfg.lane_cpu);
	/* Answers to page requests go before the push on a capped link. */
	x->ch.tx.urgent = true;
	/* TCP probes a dead peer; a frozen one, whose kernel still
	 * acknowledges, is the stall limit's (reader()). */
	fy_transport_watch(x->ch.fd, FY_PC_WATCH_S);
	for (unsigned i = 0; i < x->nextra; i++)
		fy_transport_watch(x->extra[i].fd, FY_PC_WATCH_S);
	/* Between requests the reader sleeps: its CPU is kept awake for a
	 * while after each, for the next of a burst. */
	if (fy_lane_keeper_start(&p->keeper, p->lane_cpu,
				 (uint64_t)p->s->cfg.lane_poll_us * 1000))
		return -EAGAIN;
	if (pthread_create(&p->reader, NULL, reader, p))
		return -EAGAIN;
	p->reader_on = true;
	for (unsigned i = 0; i < x->nextra; i++) {
		struct pusher_arg *a = malloc(sizeof(*a));

		if (!a)
			return -ENOMEM;
		*a = (struct pusher_arg){ p, &x->extra[i], i + 1 };
		pthread_mutex_lock(&p->lock);
		p->pushing++;
		pthread_mutex_unlock(&p->lock);
		if (pthread_create(&p->pusher[i], NULL, pusher, a)) {
			pthread_mutex_lock(&p->lock);
			p->pushing--;
			pthread_mutex_unlock(&p->lock);
			free(a);
			return -EAGAIN;
		}
		p->npushers++;
	}
	return 0;
}

/* Stop every thread of the phase; on a failure the sockets are shut
 * down first, so that none stays blocked on a dead link. */
static void stop_threads(struct pc_src *p, bool failed)
{
	struct sender *x = p->x;

	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->lock);
	if (failed) {
		if (x->ch.fd >= 0)
			shutdown(x->ch.fd, SHUT_RDWR);
		for (unsigned i = 0; i < x->nextra; i++)
			if (x->extra[i].fd >= 0)
				shutdown(x->extra[i].fd, SHUT_RDWR);
	}
	if (p->reader_on)
		pthread_join(p->reader, NULL);
	p->reader_on = false;
	for (unsigned i = 0; i < p->npushers; i++)
		pthread_join(p->pusher[i], NULL);
	p->npushers = 0;
	fy_lane_keeper_stop(p->keeper, &p->keeper_cpu_ns, &p->keeper_windows);
	p->keeper = NULL;
}

/*
 * Serve requests and push until the destination confirms every page, or
 * a failure: 0, or the failure (p->why says it).
 */
static int phase(struct pc_src *p)
{
	int rc = start_threads(p);

	pthread_mutex_lock(&p->lock);
	if (rc)
		pc_fail_locked(p, rc, "cannot start the postcopy threads");
	while (!p->err && !p->answered) {
		if (!p->ended && !p->pushing && !p->left) {
			rc = send_end(p);
			if (rc)
				pc_fail_locked(p, rc, "sending POSTCOPY_END: %s",
					       ferry_strerror(rc));
		}
		wait_tick(p);
		pthread_mutex_unlock(&p->lock);
		publish(p, false);
		pthread_mutex_lock(&p->lock);
	}
	rc = p->err;
	pthread_mutex_unlock(&p->lock);
	stop_threads(p, rc != 0);
	return rc;
}

/* ---- the switch ---- */

/* DISCARD the stale pages (x->ranges), in records of at most @max
 * entries; the answers give the destination's units. */
static int send_discards(struct pc_src *p, uint32_t max)
{
	struct sender *x = p->x;
	ferry_session *s = p->s;
	size_t n = x->ranges.n, at = 0;
	struct fy_page_range *e = calloc(n ? (n < max ? n : max) : 1,
					 sizeof(*e));
	struct fy_buf b;
	int rc = 0;

	if (!e)
		return fy_session_fail(s, -ENOMEM, "out of memory");
	fy_buf_init(&b);
	do {
		uint32_t k = 0;

		for (; at < n && k < max; at++, k++)
			e[k] = (struct fy_page_range){
				x->ranges.v[at].region,
				x->ranges.v[at].offset / FY_PAGE_SIZE,
				x->ranges.v[at].length / FY_PAGE_SIZE
			};
		fy_buf_reset(&b);
		rc = fy_discard_encode(&b, e, k);
		if (rc)
			rc = fy_session_fail(s, rc, "encoding DISCARD: %s",
					     ferry_strerror(rc));
		if (!rc)
			rc = fy_snd_request(x, FY_REC_DISCARD, &b, "DISCARD");
		if (!rc && (fy_units_decode(x->ch.rx.in.data, x->ch.rx.in.len,
					    &x->units) ||
			    x->units.nregions != s->nregions))
			rc = fy_session_fail(s, FERRY_EPROTO,
					     "the answer to DISCARD does not give the destination's page units for its %zu regions",
					     s->nregions);
	} while (!rc && at < n);
	fy_buf_free(&b);
	free(e);
	return rc;
}

/* STATE, then POSTCOPY: the transition. Fills the downtime figures. */
static int transition(struct pc_src *p, uint64_t discarded)
{
	struct sender *x = p->x;
	ferry_session *s = p->s;
	struct fy_postcopy pc = { discarded };
	struct fy_running run;
	struct fy_buf b;
	uint64_t t1 = fy_now_ns();
	int rc = fy_snd_state(x);

	if (rc)
		return rc;
	/* From release() on the pause is not bounded any more. */
	if (fy_session_pause_disarm(s))
		return FERRY_ETIMEOUT;
	/* The external resources (connections, leases) go with the guest,
	 * as before RELEASED; a not-run answer takes them back (unwind). */
	if (s->ops.release) {
		rc = s->ops.release(s->cfg.opaque);
		if (rc)
			return fy_session_vmm_fail(s, rc, "release");
		x->released_ok = true;
	}
	/* From here the destination may run the guest: a cancel would
	 * lose it, so cancels are ignored. */
	fy_session_pc_transitioned(s);
	p->t_switch = fy_now_ns();
	fy_buf_init(&b);
	rc = fy_postcopy_encode(&b, &pc);
	if (!rc)
		rc = fy_snd_request(x, FY_REC_POSTCOPY, &b, "POSTCOPY");
	fy_buf_free(&b);
	if (rc)
		return rc;
	if (fy_running_decode(x->ch.rx.in.data, x->ch.rx.in.len, &run))
		memset(&run, 0, sizeof(run));
	p->t_resumed = x->same_host && run.resumed_ns > x->t_pause
			       ? run.resumed_ns : fy_now_ns();
	pthread_mutex_lock(&s->lock);
	s->stats.postcopy = true;
	s->stats.downtime_ms = fy_ms(p->t_resumed - x->t_pause);
	s->stats.final_pass_ms = fy_ms(t1 - x->t_pause);
	s->stats.state_ms = fy_ms(p->t_switch - t1);
	s->stats.switchover_ms = fy_ms(p->t_resumed - p->t_switch);
	pthread_mutex_unlock(&s->lock);
	fy_session_set_state(s, FERRY_STATE_POSTCOPY);
	return 0;
}

/* Did the ERROR that just answered POSTCOPY say "not run"? Then the
 * guest is the source's again (the caller resumes it). */
static bool refused_not_run(struct sender *x)
{
	struct fy_error_msg e;

	return x->sm.refused_type == FY_REC_POSTCOPY &&
	       !fy_error_decode(x->ch.rx.in.data, x->ch.rx.in.len, &e) &&
	       e.code == FY_ERR_NOT_RUN && !fy_send_sm_not_run(&x->sm);
}

/* ---- paused, recovery, force ---- */

static void close_all(struct pc_src *p)
{
	struct sender *x = p->x;

	p->wire_base = wire(p);
	for (unsigned i = 0; i < x->nextra; i++)
		fy_chan_close(&x->extra[i]);
	x->nextra = 0;
	fy_chan_close(&x->ch);
}

/* Wait in postcopy-paused for an operator: 0 and @uri, or
 * FERRY_EPOSTCOPY (forced). */
static int pause_run(struct pc_src *p, int err, const char *why, char *uri,
		     size_t len)
{
	struct sender *x = p->x;
	ferry_session *s = p->s;
	uint64_t left;

	close_all(p);
	if (x->sm.state != FY_SS_PC_PAUSED)
		fy_send_sm_fail(&x->sm);
	fy_snd_sync_owner(x);
	pthread_mutex_lock(&p->lock);
	left = p->left;
	pthread_mutex_unlock(&p->lock);
	publish(p, false);
	pthread_mutex_lock(&s->lock);
	/* The report says why it paused: a failure of the phase's threads
	 * is theirs (p->err), not yet the session's. */
	if (!s->stats.error)
		s->stats.error = err ? err : -EIO;
	snprintf(s->errmsg, sizeof(s->errmsg),
		 "postcopy paused: %s; the guest may run at the destination, which misses at least %llu pages: recover (ferry_session_recover) or force (ferry_session_force_resume)",
		 why, (unsigned long long)left);
	pthread_mutex_unlock(&s->lock);
	fy_session_log(s, 0,
		       "postcopy paused: %s; at least %llu pages not at the destination yet; the source stays paused until an operator recovers the session or forces this copy to run",
		       why, (unsigned long long)left);
	return fy_session_pc_wait(s, uri, len, NULL, NULL);
}

/* An operator forced the source's copy to run: resume it and say what
 * that risks. */
static int force(struct pc_src *p)
{
	struct sender *x = p->x;
	ferry_session *s = p->s;
	double since = fy_ms(fy_now_ns() - p->t_switch) / 1e3;
	int rc;

	if (x->released_ok && s->ops.reacquire &&
	    s->ops.reacquire(s->cfg.opaque))
		fy_session_log(s, 0, "forced resume: reacquire failed");
	rc = s->ops.resume(s->cfg.opaque);

	if (rc) {
		fy_session_log(s, 0, "forced resume: resume failed: %s",
			       ferry_strerror(rc));
	} else {
		x->paused = false;
		fy_session_set_owner(s, FERRY_OWNER_SOURCE);
	}
	pthread_mutex_lock(&s->lock);
	s->stats.error = FERRY_EPOSTCOPY;
	snprintf(s->errmsg, sizeof(s->errmsg),
		 "postcopy given up by an operator%s: the source's copy of the guest %s, as it was at the switch %.1f s ago. The destination's copy may have run since and may still run: two copies of one guest (the same addresses, disks and connections) must not both run, and whatever the destination's copy did since the switch is lost here",
		 "", rc ? "could not be resumed" : "runs again", since);
	pthread_mutex_unlock(&s->lock);
	fy_session_log(s, 0, "%s", s->errmsg);
	return FERRY_EPOSTCOPY;
}

/* The pages the have-map lacks, in units, become the need set. */
static int need_from_have(struct pc_src *p, const struct fy_have_map *m)
{
	ferry_session *s = p->s;

	if (m->nregions != s->nregions)
		return -EINVAL;
	for (uint32_t r = 0; r < m->nregions; r++)
		if (m->pages[r] != p->pages[r])
			return -EINVAL;
	pthread_mutex_lock(&p->lock);
	p->left = 0;
	for (uint32_t r = 0; r < m->nregions; r++) {
		memset(p->need[r], 0, (p->pages[r] + 63) / 64 * 8);
		for (uint64_t pg = 0; pg < p->pages[r]; pg++) {
			uint64_t first = pg, n = 1;

			if (fy_have_map_test(m, r, pg))
				continue;
			widen(p, r, &first, &n);
			need_set(p, r, first, n);
			pg = first + n - 1;
		}
	}
	p->at_region = 0;
	p->at_page = 0;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

/* Connect to @uri_s and RESUME; then the data connections JOIN again. */
static int recover(struct pc_src *p, const char *uri_s, unsigned conns,
		   char *why, size_t len)
{
	struct sender *x = p->x;
	ferry_session *s = p->s;
	uint8_t sh[FY_STREAM_HDR_SIZE];
	struct iovec iov = { sh, sizeof(sh) };
	struct fy_resume r = { x->peer.session_id, { 0 }, ++p->generation };
	struct fy_have_map m;
	struct fy_uri u;
	struct fy_buf b;
	int fd = -1, rc;

	rc = fy_uri_parse(uri_s, &u, why, len);
	if (!rc)
		rc = fy_snd_connect(s, &u, &fd, why, len);
	if (rc)
		return rc;
	fy_snd_setup_socket(x, fd, 0);
	rc = fy_chan_init(&x->ch, s, fd);
	if (rc) {
		close(fd);
		x->ch.fd = -1;
		snprintf(why, len, "out of memory");
		return rc;
	}
	fy_stream_hdr_encode(sh);
	memcpy(r.token, x->peer.token, sizeof(r.token));
	fy_buf_init(&b);
	rc = fy_chan_secure(&x->ch, false, why, len);
	if (!rc)
		rc = fy_chan_write_all(&x->ch, &iov, 1);
	if (!rc)
		rc = fy_snd_encoding(x, &x->ch);
	if (!rc)
		rc = fy_resume_encode(&b, &r);
	if (!rc)
		rc = fy_snd_request(x, FY_REC_RESUME, &b, "RESUME");
	fy_buf_free(&b);
	if (!rc && (fy_have_map_decode(x->ch.rx.in.data, x->ch.rx.in.len, &m,
				       why, len) ||
		    need_from_have(p, &m)))
		rc = FERRY_EPROTO;
	if (rc) {
		if (!why[0] || rc != FERRY_EPROTO)
			ferry_session_errmsg(s, why, len);
		return rc;
	}
	fy_session_log(s, 1,
		       "postcopy: the destination is back (generation %u) and misses %llu pages",
		       p->generation, (unsigned long long)m.missing);
	for (unsigned i = 1; i < conns && !rc; i++)
		rc = fy_snd_join(x, &u, i, conns, why, len);
	return rc;
}

/*
 * After the transition: serve and push until done; on a failure, pause
 * and wait for an operator, recover and go on, as often as it takes.
 */
static int postcopy_loop(struct pc_src *p, int rc)
{
	struct sender *x = p->x;
	ferry_session *s = p->s;
	unsigned conns = p->conns;
	char why[256], uri[FERRY_URI_MAX];

	if (rc)
		ferry_session_errmsg(s, why, sizeof(why));
	for (;;) {
		if (!rc) {
			rc = phase(p);
			if (!rc)
				return 0;
			snprintf(why, sizeof(why), "%s", p->why);
			if (p->stall_ns) {
				pthread_mutex_lock(&s->lock);
				s->stats.stall_detect_ms = fy_ms(p->stall_ns);
				pthread_mutex_unlock(&s->lock);
			}
		}
		rc = pause_run(p, rc, why, uri, sizeof(uri));
		if (rc == FERRY_EPOSTCOPY)
			return force(p);
		/* The pause's reason gives way to this attempt's: a refused
		 * recovery must say why it was refused (fy_session_fail()
		 * keeps only a run's first failure). */
		fy_session_clear_error(s);
		why[0] = 0;
		rc = recover(p, uri, conns, why, sizeof(why));
		if (rc) {
			fy_session_log(s, 0, "postcopy recovery through %s failed: %s",
				       uri, why[0] ? why : ferry_strerror(rc));
			continue;
		}
		fy_session_clear_error(s);
		pthread_mutex_lock(&s->lock);
		s->stats.recoveries++;
		pthread_mutex_unlock(&s->lock);
		fy_snd_sync_owner(x);
		fy_session_set_state(s, FERRY_STATE_POSTCOPY);
	}
}

/* The end: what the destination says in its answer to POSTCOPY_END. */
static void finish(struct pc_src *p)
{
	struct sender *x = p->x;
	ferry_session *s = p->s;
	struct fy_running run;

	uint64_t done_ns;

	if (fy_running_decode(x->ch.rx.in.data, x->ch.rx.in.len, &run))
		memset(&run, 0, sizeof(run));
	publish(p, true);
	/* The destination says when its last page was placed; on one host
	 * its clock is ours. Elsewhere the answer's arrival bounds it. */
	done_ns = x->same_host && run.resumed_ns > p->t_switch
			  ? run.resumed_ns : p->t_end;
	pthread_mutex_lock(&s->lock);
	snprintf(s->stats.peer_note, sizeof(s->stats.peer_note), "%s",
		 run.note);
	s->stats.postcopy_ms = fy_ms(done_ns - p->t_switch);
	/* The migration is complete when the destination has every page:
	 * what follows (the VMM's note) is not the migration's time. */
	s->stats.total_ms = fy_ms(done_ns - s->t_start_ns);
	s->total_fixed = true;
	pthread_mutex_unlock(&s->lock);
	fy_snd_sync_owner(x);
	fy_session_log(s, 2,
		       "postcopy complete in %.0f ms: %llu pages asked for, %llu pushed",
		       fy_ms(fy_now_ns() - p->t_switch),
		       (unsigned long long)p->req_pages,
		       (unsigned long long)p->push_pages);
	fy_session_log(s, 2,
		       "postcopy lane: the request reader used %.1f ms of CPU for %llu requests; its CPU's keeper %.1f ms in %llu windows",
		       (double)p->reader_cpu_ns / 1e6,
		       (unsigned long long)p->nreq,
		       (double)p->keeper_cpu_ns / 1e6,
		       (unsigned long long)p->keeper_windows);
}

static void pc_free(struct pc_src *p)
{
	for (size_t r = 0; r < FY_MAX_REGIONS; r++) {
		free(p->need[r]);
		free(p->answered_map[r]);
	}
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static struct pc_src *pc_new(struct sender *x)
{
	struct pc_src *p = calloc(1, sizeof(*p));
	pthread_condattr_t ca;

	if (!p)
		return NULL;
	p->x = x;
	p->s = x->s;
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (need_alloc(p)) {
		pc_free(p);
		return NULL;
	}
	return p;
}

/*
 * Data connections that broke during precopy were given up by the pool
 * (it went on without them); the push runs only on the others. Their
 * indices stay taken: a recovery joins every index again.
 */
static void keep_alive(struct sender *x)
{
	unsigned k = 0;

	for (unsigned i = 0; i < x->nextra; i++) {
		if (x->pool.started && x->pool.conn[i + 1].dead) {
			fy_chan_close(&x->extra[i]);
			continue;
		}
		if (k != i) {
			x->extra[k] = x->extra[i];
			fy_chan_clear(&x->extra[i]);
		}
		k++;
	}
	x->nextra = k;
}

/**
 * fy_pc_send() - see sender.h.
 */
int fy_pc_send(struct sender *x)
{
	ferry_session *s = x->s;
	struct pc_src *p = pc_new(x);
	uint64_t discarded, unit = 0;
	int rc;

	if (!p)
		return fy_session_fail(s, -ENOMEM, "out of memory");
	/* The send pool's workers are idle between passes; the phase has
	 * threads of its own on the same connections. */
	p->conns = 1 + x->nextra;
	keep_alive(x);
	fy_send_pool_stop(&x->pool);
	if (!x->nextra) {
		rc = fy_session_fail(s, -ENOTCONN,
				     "every data connection broke during precopy: postcopy has none left to push over");
		goto out;
	}
	rc = fy_snd_pause(x);
	if (!rc)
		fy_snd_lift_throttle(x);
	if (!rc)
		rc = fy_snd_collect(x, true);
	if (rc)
		goto out;
	fy_ranges_normalize(&x->ranges);
	discarded = x->ranges.bytes / FY_PAGE_SIZE;
	fy_session_log(s, 2, "switching to postcopy: %llu pages are stale at the destination",
		       (unsigned long long)discarded);
	rc = send_discards(p, FY_DISCARD_MAX < (1u << 20) ? FY_DISCARD_MAX
							  : 1u << 20);
	if (rc)
		goto out;
	for (size_t r = 0; r < s->nregions; r++) {
		p->unit[r] = x->units.unit[r];
		if (p->unit[r] > unit)
			unit = p->unit[r];
	}
	/* Whole units in every record: units are powers of two, so a
	 * multiple of the largest is one of every other. */
	p->max_rec = s->cfg.chunk_bytes / unit * unit;
	if (!p->max_rec)
		p->max_rec = unit;
	pthread_mutex_lock(&p->lock);
	need_from_ranges(p, &x->ranges);
	pthread_mutex_unlock(&p->lock);
	rc = transition(p, discarded);
	if (rc && !x->sm.transitioned)
		goto out; /* before the transition: the caller resumes */
	if (rc && refused_not_run(x)) {
		pthread_mutex_lock(&s->lock);
		s->stats.postcopy = false; /* it never ran there */
		pthread_mutex_unlock(&s->lock);
		fy_snd_sync_owner(x);
		fy_session_log(s, 1, "the destination did not run the guest: it is the source's again");
		goto out;
	}
	rc = postcopy_loop(p, rc);
	if (!rc)
		finish(p);
out:
	pc_free(p);
	return rc;
}

/* Is a data connection left for the push? (Read between the pool's
 * chunks: a connection that breaks right after only fails the switch
 * before the transition, and the source resumes.) */
static bool data_alive(struct sender *x)
{
	unsigned alive;

	pthread_mutex_lock(&x->pool.lock);
	alive = x->pool.alive;
	pthread_mutex_unlock(&x->pool.lock);
	if (alive < 2 && !x->pc_dead_logged) {
		x->pc_dead_logged = true;
		fy_session_log(x->s, 1, "postcopy is not possible any more: every data connection broke");
	}
	return alive >= 2;
}

/*
 * Auto mode, in the first pass: once it has run FY_PC_SAMPLE_MS, sample
 * the dirty rate (the pages taken out of the tracker are kept for the
 * next set). A guest that writes at half the link's rate or more never
 * lets a pass halve what is left: precopy cannot converge, and every
 * page it sends now is likely sent again. Switching at once sends each
 * page about once.
 */
#define FY_PC_SAMPLE_MS 1000

static bool auto_cut(struct sender *x, uint64_t sent)
{
	ferry_session *s = x->s;
	uint64_t now = fy_now_ns();
	double secs = (double)(now - x->t_pass) / 1e9, bw, dirty;

	if (s->cfg.postcopy != FERRY_POSTCOPY_AUTO || x->pc_probed ||
	    secs * 1e3 < FY_PC_SAMPLE_MS || !sent)
		return false;
	x->pc_probed = true;
	if (fy_dirty_collect(&x->dirty, &x->early))
		return false; /* the pass-end collect reports it */
	bw = (double)sent / secs;
	dirty = (double)x->early.bytes * 1e9 / (double)(now - x->t_collect);
	/* A guest whose whole memory crosses the link within the limit
	 * converges whatever it writes. */
	if (dirty * 2 < bw ||
	    (double)s->ram_bytes / bw * 1e3 <= s->cfg.downtime_limit_ms)
		return false;
	fy_session_log(s, 1,
		       "switching to postcopy during pass 1: the guest writes %.1f MB/s, the link carries %.1f MB/s, so precopy cannot converge",
		       dirty / 1e6, bw / 1e6);
	return true;
}

/**
 * fy_pc_cut() - see sender.h.
 */
bool fy_pc_cut(void *opaque, uint64_t sent)
{
	struct sender *x = opaque;

	if (!x->pc_usable || !data_alive(x))
		return false;
	if (atomic_load(&x->s->pc_now) || auto_cut(x, sent)) {
		x->pc_cut = true;
		return true;
	}
	return false;
}

/**
 * fy_pc_want() - see sender.h.
 */
bool fy_pc_want(struct sender *x, uint32_t pass, double expect, bool at_limit)
{
	ferry_session *s = x->s;
	const struct ferry_config *c = &s->cfg;
	bool slow = x->ranges.bytes * 2 > x->last_pass_bytes;
	const char *why = NULL;

	if (!x->pc_usable || !data_alive(x))
		return false;
	if (atomic_exchange(&s->pc_now, false))
		why = "asked for";
	else if (x->pc_cut)
		why = "the pass was cut short to switch";
	else if (c->postcopy == FERRY_POSTCOPY_AFTER &&
		 pass >= (c->postcopy_after_passes ? c->postcopy_after_passes : 1))
		why = "the passes before postcopy are done";
	else if (c->postcopy == FERRY_POSTCOPY_AUTO &&
		 expect > c->downtime_limit_ms && (at_limit ||
						   (slow && x->slow_passes)))
		why = at_limit ? "precopy reached its limits"
			       : "two passes in a row did not halve what is left";
	else if (c->timeout_strategy == FERRY_TIMEOUT_POSTCOPY && at_limit &&
		 expect > c->downtime_limit_ms)
		why = "precopy reached its limits (timeout strategy postcopy)";
	if (why)
		fy_session_log(s, 1,
			       "switching to postcopy after pass %u: %s (%.1f MiB left, expected downtime %.1f ms)",
			       pass, why, (double)x->ranges.bytes / (1 << 20),
			       expect);
	return why != NULL;
}
