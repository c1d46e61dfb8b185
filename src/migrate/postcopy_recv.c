// SPDX-License-Identifier: MIT
/*
 * postcopy_recv.c - the destination's postcopy: the pages DISCARD names,
 * the transition (POSTCOPY: register memory with userfaultfd, resume the
 * guest), the phase in which the guest runs here while its missing pages
 * arrive (asked for on faults with PAGE_REQ, pushed in the background),
 * POSTCOPY_END, and the pauses and recoveries after a cut.
 * docs/stream-format.md ("Postcopy") is the protocol.
 *
 * Threads: the main thread reads the main connection and answers on it;
 * the lazy loader's fault thread sends PAGE_REQ on the same connection
 * (pc.tx_lock guards the sending direction); the pool's readers place what
 * the data connections carry. Every page is verified in a staging buffer
 * and placed with fy_lazy_place(), never written into guest memory.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "memory/lazy.h"
#include "migrate/receive.h"

/* How long a recovery listener waits for the source's RESUME before the
 * destination pauses again, so that a wrong URI does not hold the session
 * (ferry_session_recover() may then be called again). */
#define FY_PC_RECOVER_WAIT_MS (10 * 60 * 1000)
/* A RESUME body is 32 bytes: a stranger announcing more is not read. */
#define FY_RESUME_MAX_BODY 256

/**
 * fy_pc_init() - a receiver's postcopy part, before anything is sent.
 * @x: the receiver.
 */
void fy_pc_init(struct receiver *x)
{
	pthread_mutex_init(&x->pc.tx_lock, NULL);
	fy_buf_init(&x->pc.req);
}

/**
 * fy_pc_free() - release the postcopy part at the end of a run. A loader
 * the session holds (s->lazy) stays: the guest ran on it.
 * @x: the receiver.
 */
void fy_pc_free(struct receiver *x)
{
	struct fy_pc_recv *pc = &x->pc;

	for (size_t i = 0; i < FY_MAX_REGIONS; i++)
		free(pc->missing[i]);
	fy_bulk_free(&pc->stage);
	if (pc->lazy && x->s->lazy != pc->lazy)
		fy_lazy_free(pc->lazy);
	pc->lazy = NULL;
	fy_buf_free(&pc->req);
	pthread_mutex_destroy(&pc->tx_lock);
}

/**
 * fy_pc_can_offer() - whether this destination can run postcopy: a
 * listener for the data connections (the pool runs) and a userfaultfd
 * (missing mode) here.
 * @x: the receiver.
 * @why: the reason when not.
 * @len: its size.
 *
 * Return: true when it can.
 */
bool fy_pc_can_offer(struct receiver *x, char *why, size_t len)
{
	int fd;

	if (!x->pool.started) {
		snprintf(why, len,
			 "no listener of its own for the data connections");
		return false;
	}
	fd = fy_uffd_open(false, why, len);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* Set pages [@first, @first + @n) in @bits; the number that were clear. */
static uint64_t bits_set(uint64_t *bits, uint64_t first, uint64_t n)
{
	uint64_t added = 0;

	while (n) {
		uint64_t b = first % 64, take = 64 - b < n ? 64 - b : n;
		uint64_t mask = (take == 64 ? ~0ull : (1ull << take) - 1) << b;

		added += (uint64_t)__builtin_popcountll(mask & ~bits[first / 64]);
		bits[first / 64] |= mask;
		first += take;
		n -= take;
	}
	return added;
}

static uint64_t region_pages(const ferry_session *s, size_t i)
{
	return s->regions[i].size / FY_PAGE_SIZE;
}

/**
 * fy_pc_discard() - DISCARD: the pages whose copy here is stale. Valid only
 * once every page arrived at least once (a whole first pass); each entry
 * is checked against the regions, and a page named twice counts once.
 * @x: the receiver, the body in x->ch.rx.in.
 * @reply: receives the OK's body: the placement unit of every region.
 *
 * Return: 0, or a negative code with x->err set.
 */
int fy_pc_discard(struct receiver *x, struct fy_buf *reply)
{
	struct fy_units un = { .nregions = (uint32_t)x->s->nregions };
	ferry_session *s = x->s;
	struct fy_page_list l;
	struct fy_page_range r;
	uint64_t pages[FY_MAX_REGIONS];
	int rc;

	if (!x->pc.full_pass) {
		snprintf(x->err, sizeof(x->err),
			 "postcopy needs a complete first pass: no pass over all of the guest's memory has ended here");
		return FERRY_EPROTO;
	}
	rc = fy_discard_decode(x->ch.rx.in.data, x->ch.rx.in.len, &l, x->err,
			       sizeof(x->err));
	if (rc)
		return rc;
	for (size_t i = 0; i < s->nregions; i++)
		pages[i] = region_pages(s, i);
	rc = fy_page_list_check(&l, pages, (uint32_t)s->nregions, x->err,
				sizeof(x->err));
	if (rc)
		return rc;
	for (size_t i = 0; i < s->nregions; i++) {
		char why[256];

		if (!x->pc.missing[i])
			x->pc.missing[i] = calloc((pages[i] + 63) / 64,
						  sizeof(uint64_t));
		if (!x->pc.missing[i]) {
			snprintf(x->err, sizeof(x->err), "out of memory");
			return -ENOMEM;
		}
		/* What the loader will place at once in the region: the
		 * source sends whole units from the switch on. */
		rc = x->pc.units[i] ? 0
				    : fy_lazy_unit_of(&s->regions[i],
						      &x->pc.units[i], why,
						      sizeof(why));
		if (rc) {
			snprintf(x->err, sizeof(x->err), "%s", why);
			return rc;
		}
	}
	for (uint32_t e = 0; e < l.count; e++) {
		fy_page_list_get(&l, e, &r);
		x->pc.nmissing += bits_set(x->pc.missing[r.region], r.first,
					   r.pages);
	}
	fy_session_log(s, 2, "DISCARD of %u ranges: %llu pages missing here",
		       l.count, (unsigned long long)x->pc.nmissing);
	memcpy(un.unit, x->pc.units, sizeof(un.unit));
	return fy_units_encode(reply, &un);
}

/*
 * PAGE_REQ for one fault unit, from the lazy loader's fault thread (or
 * the thread asking again after a recovery). Refused while the request
 * lane is closed (before the OK, or paused): the unit stays outstanding
 * and fy_lazy_rerequest() asks again when the lane opens.
 */
static int lazy_request(void *opaque, uint32_t region, uint64_t offset,
			uint64_t len)
{
	struct receiver *x = opaque;
	struct fy_page_range r = {
		.region = region,
		.first = offset / FY_PAGE_SIZE,
		.pages = len / FY_PAGE_SIZE,
	};
	int rc = -ENOTCONN;

	pthread_mutex_lock(&x->pc.tx_lock);
	if (x->pc.req_open) {
		fy_buf_reset(&x->pc.req);
		rc = fy_page_req_encode(&x->pc.req, &r, 1);
		if (!rc)
			rc = fy_chan_send_rec(&x->ch, FY_REC_PAGE_REQ, 0,
					      x->pc.req.data, x->pc.req.len);
	}
	pthread_mutex_unlock(&x->pc.tx_lock);
	if (!rc)
		atomic_fetch_add(&x->pc.pages_requested, r.pages);
	return rc;
}

/* fy_stage.place for the lazy loader. */
static int place_lazy(void *opaque, uint32_t region, uint64_t offset,
		      uint64_t len, const void *buf, const uint64_t *zero)
{
	return fy_lazy_place(opaque, region, offset, len, buf, zero);
}

/* Register guest memory with a loader whose present pages are all but
 * the discarded ones; they are dropped, so touching one faults. */
static int start_loader(struct receiver *x)
{
	ferry_session *s = x->s;
	const uint64_t *present[FY_MAX_REGIONS] = { 0 };
	uint64_t *bits[FY_MAX_REGIONS] = { 0 };
	struct fy_lazy_config lc = {
		.regions = s->regions,
		.nregions = s->nregions,
		.source = { .request = lazy_request, .opaque = x },
		.background_threads = 0,
		.fault_urgent = true,
		.lane_cpu = fy_lane_cpu(s->cfg.lane_cpu),
		.poll_us = s->cfg.lane_poll_us,
		.present = present,
	};
	char why[256] = "";
	int rc = 0;

	for (size_t i = 0; i < s->nregions && !rc; i++) {
		uint64_t pages = region_pages(s, i), words = (pages + 63) / 64;

		bits[i] = malloc(words * sizeof(uint64_t));
		if (!bits[i]) {
			rc = -ENOMEM;
			break;
		}
		for (uint64_t w = 0; w < words; w++)
			bits[i][w] = x->pc.missing[i] ? ~x->pc.missing[i][w]
						      : ~0ull;
		if (pages % 64)
			bits[i][words - 1] &= (1ull << (pages % 64)) - 1;
		present[i] = bits[i];
	}
	if (!rc) {
		x->pc.t_lazy_ns = fy_now_ns();
		rc = fy_lazy_start(&x->pc.lazy, &lc, why, sizeof(why));
	}
	if (rc)
		snprintf(x->err, sizeof(x->err),
			 "registering guest memory with userfaultfd: %s",
			 why[0] ? why : ferry_strerror(rc));
	for (size_t i = 0; i < s->nregions; i++)
		free(bits[i]);
	return rc;
}

/*
 * One staging buffer per connection holds a whole record, verified
 * before any of it is placed. The source's chunk size is not on the wire,
 * so the buffer holds the largest record a connection accepts at all (its
 * zero map bounds it to FY_REC_MAX_BODY bytes of memory), or the largest
 * region, whole units; it is mapped on transparent huge pages or plain
 * ones, never from the hugetlb pool: only what records use becomes
 * resident.
 */
static int prepare_stage(struct receiver *x)
{
	ferry_session *s = x->s;
	uint64_t want = 0;
	int rc;

	for (size_t i = 0; i < s->nregions; i++) {
		x->pc.units[i] = fy_lazy_unit(x->pc.lazy, (uint32_t)i);
		if (s->regions[i].size > want)
			want = s->regions[i].size;
	}
	if (want > FY_REC_MAX_BODY)
		want = FY_REC_MAX_BODY;
	for (size_t i = 0; i < s->nregions; i++)
		if (x->pc.units[i] > want)
			want = x->pc.units[i];
	want = (want + FY_HUGE_PAGE_SIZE - 1) / FY_HUGE_PAGE_SIZE *
	       FY_HUGE_PAGE_SIZE;
	x->pc.stage_size = want;
	rc = fy_stage_alloc(&x->pc.stage, want);
	if (rc)
		snprintf(x->err, sizeof(x->err),
			 "no staging buffer of %llu bytes",
			 (unsigned long long)want);
	return rc;
}

/* Acquire the external resources and run the vCPUs, once each. */
static int resume_guest(struct receiver *x)
{
	ferry_session *s = x->s;
	int rc = 0;

	if (!x->pc.acquired && s->ops.acquire)
		rc = s->ops.acquire(s->cfg.opaque);
	if (rc) {
		snprintf(x->err, sizeof(x->err), "acquire failed: %s",
			 ferry_strerror(rc));
		return FERRY_EVMM;
	}
	x->pc.acquired = true;
	if (x->pc.resumed)
		return 0;
	rc = s->ops.resume(s->cfg.opaque);
	if (rc) {
		snprintf(x->err, sizeof(x->err), "resume failed: %s",
			 ferry_strerror(rc));
		return FERRY_EVMM;
	}
	x->pc.resumed = true;
	x->pc.t_resume_ns = fy_now_ns();
	return 0;
}

/**
 * fy_pc_postcopy() - POSTCOPY: see receive.h.
 * @x: the receiver, the body in x->ch.rx.in.
 * @reply: receives the OK's body (struct fy_running).
 *
 * Return: 0, or a negative code with x->err set.
 */
int fy_pc_postcopy(struct receiver *x, struct fy_buf *reply)
{
	ferry_session *s = x->s;
	struct fy_postcopy m;
	struct fy_running run = { 0 };
	int rc;

	if (fy_postcopy_decode(x->ch.rx.in.data, x->ch.rx.in.len, &m)) {
		snprintf(x->err, sizeof(x->err), "malformed POSTCOPY");
		return -EBADMSG;
	}
	if (m.discarded != x->pc.nmissing) {
		snprintf(x->err, sizeof(x->err),
			 "POSTCOPY counts %llu discarded pages, the DISCARD records named %llu",
			 (unsigned long long)m.discarded,
			 (unsigned long long)x->pc.nmissing);
		return FERRY_EPROTO;
	}
	rc = start_loader(x);
	if (!rc)
		rc = prepare_stage(x);
	if (rc || fy_recv_sm_transition(&x->sm)) {
		fy_lazy_free(x->pc.lazy);
		x->pc.lazy = NULL;
		return rc ? rc : -EPROTO;
	}
	/* From here on the guest may run here: no failure discards it, and
	 * the session keeps the registration whatever happens. */
	fy_session_pc_transitioned(s);
	s->lazy = x->pc.lazy;
	fy_recv_pool_postcopy(&x->pool, x->pc.lazy, x->pc.units,
			      x->pc.stage_size, 0);
	x->pc.records = 0;
	x->pc.bytes = 0;
	fy_session_set_owner(s, (enum ferry_owner)fy_recv_owner(FY_RS_POSTCOPY));
	rc = resume_guest(x);
	if (rc)
		return rc;
	pthread_mutex_lock(&s->lock);
	s->stats.postcopy = true;
	pthread_mutex_unlock(&s->lock);
	fy_session_set_state(s, FERRY_STATE_POSTCOPY);
	fy_session_log(s, 2, "postcopy: guest resumed with %llu pages missing",
		       (unsigned long long)x->pc.nmissing);
	/* Not running_note(): the guest's memory is not all here yet. */
	run.resumed_ns = x->pc.t_resume_ns;
	return fy_running_encode(reply, &run);
}

/* The loader's figures and postcopy's counters, in the statistics. */
static void publish(struct receiver *x)
{
	ferry_session *s = x->s;
	struct fy_lazy_stats ls;
	double ms = 0;

	fy_lazy_stats(x->pc.lazy, &ls);
	if (ls.complete_ms > 0)
		ms = ls.complete_ms -
		     fy_ms(x->pc.t_resume_ns - x->pc.t_lazy_ns);
	else if (x->pc.resumed)
		ms = fy_ms(fy_now_ns() - x->pc.t_resume_ns);
	pthread_mutex_lock(&s->lock);
	s->stats.lazy_pages = ls.pages;
	s->stats.lazy_placed = ls.placed;
	s->stats.page_faults = ls.faults;
	s->stats.page_wait_p50_ms = ls.wait_p50_us / 1e3;
	s->stats.page_wait_p99_ms = ls.wait_p99_us / 1e3;
	s->stats.page_wait_max_ms = ls.wait_max_us / 1e3;
	s->stats.lazy_complete_ms = ls.complete_ms;
	s->stats.pages_requested = atomic_load(&x->pc.pages_requested);
	s->stats.pages_missing = ls.missing;
	s->stats.recoveries = x->pc.recoveries;
	s->stats.postcopy_ms = ms > 0 ? ms : 0;
	pthread_mutex_unlock(&s->lock);
}

/* Open the request lane after the OK of POSTCOPY or RESUME; faults that
 * came before it were refused, and the source forgot requests of an
 * earlier connection: ask for every unit a vCPU waits for again. */
static void open_requests(struct receiver *x)
{
	int n;

	/* A quiet lane is normal (no fault); a dead source is TCP's to see
	 * (the data connections' silence is pc_idle()'s). */
	fy_transport_watch(x->ch.fd, 10);
	/* The source reads this connection throughout the phase: with the
	 * capability, keep-alives fill the lane's silences, and a source
	 * that hears nothing for its stall limit knows this side stalled
	 * (frozen, or cut off by a link that still acknowledges). Started
	 * before the lane opens: no PAGE_REQ is being written yet. */
	if (x->pc.keep) {
		int rc;

		fy_keeper_hold(&x->keeper, false);
		rc = fy_keeper_start(&x->keeper, &x->ch);
		if (rc)
			fy_session_log(x->s, 0,
				       "postcopy: no keep-alive thread (%s): while no vCPU faults, the source may take this side for a stalled one after its stall limit and pause (recoverable)",
				       ferry_strerror(rc));
	}
	pthread_mutex_lock(&x->pc.tx_lock);
	x->pc.req_open = true;
	pthread_mutex_unlock(&x->pc.tx_lock);
	n = fy_lazy_rerequest(x->pc.lazy);
	if (n > 0)
		fy_session_log(x->s, 2, "asked again for %d pages vCPUs wait for",
			       n);
}

/*
 * Wait up to @ms for the main connection to have a record's first byte,
 * so that the phase can publish its figures between records without
 * cutting a header in two. 1 when there is something to read, 0 when
 * not, or a negative code. The socket's low-water mark, raised for large
 * reads, is lowered first: poll() honours it.
 */
static int wait_readable(struct fy_chan *c, int ms)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
	int one = 1, n;

	if (c->rx.rlen > c->rx.rpos)
		return 1;
	if (c->rx.lowat && !setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &one,
				       sizeof(one)))
		c->rx.lowat = 0;
	n = poll(&pfd, 1, ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	return n;
}

/* MEMORY on the main connection (answers to PAGE_REQ, or pushed). */
static int pc_memory(struct receiver *x, const struct fy_rec_hdr *h,
		     bool counted)
{
	ferry_session *s = x->s;
	struct fy_stage st = {
		.buf = x->pc.stage.data,
		.size = x->pc.stage_size,
		.place = place_lazy,
		.opaque = x->pc.lazy,
		.units = x->pc.units,
	};
	struct fy_mem_hdr m;
	int rc = fy_chan_recv_staged(&x->ch, h, s->regions, s->nregions, &st,
				     &m, x->err, sizeof(x->err));

	if (rc) {
		if (!x->err[0])
			snprintf(x->err, sizeof(x->err),
				 "receiving memory on the main connection: %s",
				 ferry_strerror(rc));
		return rc;
	}
	if (counted) {
		x->pc.records++;
		x->pc.bytes += m.length;
	}
	fy_session_count_bytes(s, m.length);
	return 0;
}

/* Records and bytes placed over every connection since the last OK of
 * POSTCOPY or RESUME; a data connection's failure. */
/* Progress, for the stall limit: records placed and bytes read on the
 * data connections (a record still on its way on a slow link counts;
 * the main connection's bytes do not: keep-alives are no memory). */
static uint64_t pc_moved(struct receiver *x, uint64_t records)
{
	return records + fy_recv_pool_wire(&x->pool);
}

static int pc_counts(struct receiver *x, uint64_t *records, uint64_t *bytes)
{
	int rc = fy_recv_pool_pc_counts(&x->pool, records, bytes, x->err,
					sizeof(x->err));

	*records += x->pc.records;
	*bytes += x->pc.bytes;
	return rc;
}

static int pc_next(struct receiver *x, struct fy_rec_hdr *h);

/*
 * A record on the main connection after POSTCOPY_END: the source answers
 * page requests until it has the answer to it, so a vCPU need not wait
 * for the tail of the push. Such a record is placed, not counted
 * (POSTCOPY_END counts what came before it). Return: 1, or an error.
 */
static int pc_late(struct receiver *x)
{
	struct fy_rec_hdr h;
	int rc = pc_next(x, &h);

	if (rc)
		return rc;
	if (fy_rec_number(h.type) != FY_REC_MEMORY || h.seq) {
		snprintf(x->err, sizeof(x->err),
			 "%s after POSTCOPY_END: only answers to page requests may follow it",
			 fy_rec_name(h.type, (char[32]){ 0 }, 32));
		return FERRY_EPROTO;
	}
	/* Not one of POSTCOPY_END's. */
	rc = pc_memory(x, &h, false);
	return rc ? rc : 1;
}

/* After POSTCOPY_END: wait until every record it counts has arrived,
 * while the data connections make progress. */
static int pc_drain(struct receiver *x, const struct fy_postcopy_end *e)
{
	uint64_t records, bytes, last = UINT64_MAX, quiet = fy_now_ns();
	int rc;

	for (;;) {
		rc = pc_counts(x, &records, &bytes);
		if (rc)
			return rc;
		if (records > e->records || bytes > e->bytes ||
		    (records == e->records && bytes != e->bytes)) {
			snprintf(x->err, sizeof(x->err),
				 "POSTCOPY_END counts %llu records / %llu bytes, the destination received %llu / %llu",
				 (unsigned long long)e->records,
				 (unsigned long long)e->bytes,
				 (unsigned long long)records,
				 (unsigned long long)bytes);
			return FERRY_EPROTO;
		}
		if (records == e->records)
			return 0;
		if (pc_moved(x, records) != last) {
			last = pc_moved(x, records);
			quiet = fy_now_ns();
		} else if (fy_now_ns() - quiet >
			   (uint64_t)fy_stall_ms(x->s) * 1000000ull) {
			snprintf(x->err, sizeof(x->err),
				 "data connections stalled after POSTCOPY_END: %llu of %llu records arrived",
				 (unsigned long long)records,
				 (unsigned long long)e->records);
			return -ETIMEDOUT;
		}
		publish(x);
		fy_session_progress(x->s);
		/* A vCPU may still wait for a page that is in flight on a
		 * data connection: its answer comes on the main one. */
		rc = wait_readable(&x->ch, 1);
		if (rc > 0)
			rc = pc_late(x);
		if (rc < 0)
			return rc;
		if (!rc)
			fy_recv_pool_wait(&x->pool, 1);
	}
}

/*
 * After the answer to POSTCOPY_END: the source may still be writing a
 * late answer to a page request. Closing now would turn it into a reset
 * that can reach the source before it reads the answer, and the source
 * would take a complete migration for a cut. So the sending side is shut
 * first, and what still arrives is read and dropped until the source
 * closes (it does once it has the answer), for a second at most.
 */
#define FY_LINGER_MS 1000

static void linger(struct receiver *x)
{
	uint64_t until = fy_now_ns() + FY_LINGER_MS * 1000000ull;
	char sink[16384];

	if (shutdown(x->ch.fd, SHUT_WR))
		return;
	while (fy_now_ns() < until) {
		struct pollfd pfd = { .fd = x->ch.fd, .events = POLLIN };
		ssize_t n;

		if (x->ch.rx.rlen > x->ch.rx.rpos) {
			x->ch.rx.rpos = x->ch.rx.rlen; /* read ahead: dropped */
			continue;
		}
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		n = recv(x->ch.fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return;
	}
}

/*
 * POSTCOPY_END: everything the source sent has arrived; every page must
 * be placed now. Then the memory is plain memory again and the answer is
 * "running", with the VMM's note.
 */
static int pc_end(struct receiver *x, uint32_t seq)
{
	ferry_session *s = x->s;
	struct fy_postcopy_end e;
	struct fy_running run = { 0 };
	struct fy_lazy_stats ls;
	struct fy_buf reply;
	int rc;

	if (fy_postcopy_end_decode(x->ch.rx.in.data, x->ch.rx.in.len, &e)) {
		snprintf(x->err, sizeof(x->err), "malformed POSTCOPY_END");
		return -EBADMSG;
	}
	rc = pc_drain(x, &e);
	if (rc)
		return rc;
	rc = fy_lazy_wait(x->pc.lazy, 1000);
	publish(x);
	if (rc) {
		fy_lazy_stats(x->pc.lazy, &ls);
		snprintf(x->err, sizeof(x->err),
			 "%llu pages still missing after POSTCOPY_END%s%s",
			 (unsigned long long)ls.missing,
			 ls.errmsg[0] ? ": " : "", ls.errmsg);
		return FERRY_EPROTO;
	}
	rc = fy_lazy_finish(x->pc.lazy);
	if (rc) {
		snprintf(x->err, sizeof(x->err),
			 "every page is placed but a vCPU still waits on one: %s",
			 ferry_strerror(rc));
		return rc;
	}
	/* When the last page was placed (this host's monotonic clock): the
	 * source's postcopy_ms ends there, not after the VMM's note. */
	fy_lazy_stats(x->pc.lazy, &ls);
	fy_session_log(s, 2,
		       "postcopy lane: the fault thread used %.1f ms of CPU in %.0f ms for %llu faults; its CPU's keeper %.1f ms in %llu windows",
		       (double)ls.fault_cpu_ns / 1e6, ls.complete_ms,
		       (unsigned long long)ls.faults,
		       (double)ls.keeper_cpu_ns / 1e6,
		       (unsigned long long)ls.keeper_windows);
	run.resumed_ns = ls.complete_ms > 0
				 ? x->pc.t_lazy_ns +
					   (uint64_t)(ls.complete_ms * 1e6)
				 : fy_now_ns();
	if (s->ops.running_note)
		s->ops.running_note(s->cfg.opaque, run.note, sizeof(run.note));
	run.note[sizeof(run.note) - 1] = 0;
	/* The answer is the last record: the source reads nothing after. */
	fy_keeper_stop(&x->keeper);
	fy_buf_init(&reply);
	rc = fy_running_encode(&reply, &run);
	if (!rc)
		rc = fy_recv_respond_ok(x, seq, &reply);
	fy_buf_free(&reply);
	/* Every page is here and the guest runs: done, whether or not the
	 * source hears it. */
	if (rc)
		fy_session_log(s, 0,
			       "postcopy complete, but the source did not get the confirmation: %s",
			       ferry_strerror(rc));
	else
		linger(x);
	return 0;
}

/* Perform one record the machine accepted in the postcopy phase. */
static int pc_dispatch(struct receiver *x, const struct fy_rec_hdr *h,
		       const struct fy_recv_step *st)
{
	int rc;

	if (st->action == FY_RA_MEMORY)
		return pc_memory(x, h, true);
	if (st->action == FY_RA_SKIP)
		return fy_chan_skip_body(&x->ch, h);
	rc = fy_chan_recv_body(&x->ch, h);
	if (rc) {
		snprintf(x->err, sizeof(x->err), "reading %s body: %s",
			 fy_rec_name(h->type, (char[32]){ 0 }, 32),
			 ferry_strerror(rc));
		return rc;
	}
	if (st->action == FY_RA_POSTCOPY_END)
		return pc_end(x, h->seq);
	snprintf(x->err, sizeof(x->err), "internal: action %d in postcopy",
		 st->action);
	return -EINVAL;
}

/* Nothing arrived on any connection for the idle limit: the link is as
 * good as cut. */
static int pc_idle(struct receiver *x, uint64_t *last, uint64_t *quiet)
{
	uint64_t records, bytes, now = fy_now_ns();
	int rc = pc_counts(x, &records, &bytes);

	if (rc)
		return rc;
	if (pc_moved(x, records) != *last) {
		*last = pc_moved(x, records);
		*quiet = now;
	} else if (now - *quiet > (uint64_t)fy_stall_ms(x->s) * 1000000ull) {
		snprintf(x->err, sizeof(x->err),
			 "no memory arrived for %.1f s", fy_stall_ms(x->s) / 1e3);
		return -ETIMEDOUT;
	}
	return 0;
}

/* Read the next record header on the main connection; a failure there
 * caused by a data connection (it shut our reading side) says so. */
static int pc_next(struct receiver *x, struct fy_rec_hdr *h)
{
	int rc = fy_chan_recv_hdr(&x->ch, h, x->ch.idle_ms);
	uint64_t r, b;
	int prc;

	if (!rc)
		return 0;
	prc = pc_counts(x, &r, &b);
	if (prc)
		return prc;
	snprintf(x->err, sizeof(x->err), "main connection: %s",
		 rc == -EBADMSG || rc == -EMSGSIZE ? "malformed record header"
						   : ferry_strerror(rc));
	if (rc == -EBADMSG || rc == -EMSGSIZE)
		fy_recv_respond_error(x, 0, rc, x->err);
	return rc;
}

/*
 * The postcopy phase on one set of connections: requests go out from the
 * fault thread, answers and pushed memory come in on every connection,
 * until POSTCOPY_END is answered. Return: 0 (complete), or the failure
 * (x->err says it) after which the run pauses.
 */
static int phase_run(struct receiver *x)
{
	uint64_t last = UINT64_MAX, quiet = fy_now_ns();
	struct fy_rec_hdr h;
	struct fy_recv_step st;
	int rc;

	open_requests(x);
	for (;;) {
		publish(x);
		fy_session_progress(x->s);
		rc = pc_idle(x, &last, &quiet);
		if (!rc)
			rc = wait_readable(&x->ch, FY_TICK_MS);
		if (rc == 0)
			continue;
		if (rc < 0)
			return rc;
		rc = pc_next(x, &h);
		if (rc)
			return rc;
		fy_recv_sm_step(&x->sm, h.type, h.seq, &st);
		if (st.action == FY_RA_REJECT) {
			snprintf(x->err, sizeof(x->err), "%s", st.msg);
			fy_recv_respond_error(x, h.seq, st.code, st.msg);
			return st.code;
		}
		x->err[0] = 0;
		rc = pc_dispatch(x, &h, &st);
		if (rc) {
			if (!fy_conn_broke(rc))
				fy_recv_respond_error(x, st.respond ? h.seq : 0,
						      rc, x->err[0] ? x->err
							: ferry_strerror(rc));
			return rc;
		}
		fy_recv_sm_commit(&x->sm, &st, h.seq);
		if (x->sm.state == FY_RS_RUNNING)
			return 0;
	}
}

/*
 * The session's thread reads the main connection, the urgent lane, in
 * this phase: it runs at the lane's priority meanwhile (where the system
 * allows it), and at the VMM's again after.
 */
static int phase(struct receiver *x)
{
	struct fy_prio old;
	int rc;

	fy_thread_urgent(&old, fy_lane_cpu(x->s->cfg.lane_cpu));
	rc = phase_run(x);
	fy_thread_restore(&old);
	return rc;
}

/*
 * Postcopy-paused: close every connection of the session (nothing of
 * this generation survives), keep the loader (vCPUs that touch a missing
 * page wait, the others run), and say why and what is missing.
 */
static void pause_run(struct receiver *x, int rc)
{
	ferry_session *s = x->s;
	struct fy_lazy_stats ls;

	/* A PAGE_REQ (or a keep-alive) stuck on a dead link lets go of
	 * the lane first. */
	if (x->ch.fd >= 0)
		shutdown(x->ch.fd, SHUT_RDWR);
	fy_keeper_stop(&x->keeper);
	pthread_mutex_lock(&x->pc.tx_lock);
	x->pc.req_open = false;
	pthread_mutex_unlock(&x->pc.tx_lock);
	if (x->pool.channels)
		x->pc.channels = x->pool.channels;
	fy_recv_pool_stop(&x->pool);
	fy_chan_close(&x->ch);
	if (x->pc.where_ours) {
		fy_transport_unlink(&x->pc.where);
		x->pc.where_ours = false;
	}
	fy_recv_sm_fail(&x->sm);
	publish(x);
	fy_lazy_stats(x->pc.lazy, &ls);
	/* The latest reason is the one an operator needs: why the last
	 * phase or recovery ended. */
	fy_session_clear_error(s);
	fy_session_fail(s, rc,
			"postcopy paused: %s; %llu pages are missing here, vCPUs that touch one wait for a recovery (ferry_session_recover())",
			x->err[0] ? x->err : ferry_strerror(rc),
			(unsigned long long)ls.missing);
}

/* Read a recovery connection's stream header and RESUME and check its
 * credentials and generation (an ERROR answers a refusal). */
/*
 * A connection to the recovery listener has @ms in all to deliver the
 * stream header and a whole RESUME record: one that trickles its bytes
 * would otherwise hold the only acceptor for as long as it likes (the
 * reads' limits are on silence) while the real source times out. Other
 * records than RESUME are refused on their header, so waiting for the
 * length of a RESUME is enough.
 */
static int wait_resume(int fd, int ms)
{
	struct fy_resume dummy = { .generation = 1 };
	uint64_t end = fy_now_ns() + (uint64_t)ms * 1000000ull;
	struct fy_buf b;
	size_t want;
	int avail;

	fy_buf_init(&b);
	if (fy_resume_encode(&b, &dummy)) {
		fy_buf_free(&b);
		return -ENOMEM;
	}
	want = FY_STREAM_HDR_SIZE + FY_REC_HDR_SIZE + fy_pad8(b.len) +
	       FY_REC_TRAILER_SIZE;
	fy_buf_free(&b);
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;
		char c;

		if (!ioctl(fd, FIONREAD, &avail) && avail >= 0 &&
		    (size_t)avail >= want)
			return 0;
		if (fy_now_ns() >= end)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, 10) <= 0)
			continue;
		/* Readable but short: the peer closed, or more is coming. */
		n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		usleep(10 * 1000);
	}
}

static int check_resume(struct receiver *x, struct fy_recv_step *st,
			uint32_t *seq)
{
	uint8_t sh[FY_STREAM_HDR_SIZE];
	struct fy_rec_hdr h;
	struct fy_resume r;
	unsigned diff;
	uint16_t ver;
	int rc;

	fy_recv_sm_init_resume(&x->sm);
	rc = wait_resume(x->ch.fd, FY_JOIN_WAIT_MS);
	if (!rc)
		rc = fy_chan_read_within(&x->ch, sh, sizeof(sh), FY_JOIN_WAIT_MS);
	if (!rc)
		rc = fy_stream_hdr_decode(sh, &ver);
	if (!rc)
		rc = fy_chan_recv_hdr(&x->ch, &h, FY_JOIN_WAIT_MS);
	if (rc) {
		snprintf(x->err, sizeof(x->err),
			 "no ferry stream header and RESUME: %s",
			 ferry_strerror(rc));
		return rc;
	}
	fy_recv_sm_step(&x->sm, h.type, h.seq, st);
	if (st->action == FY_RA_REJECT) {
		snprintf(x->err, sizeof(x->err), "%s", st->msg);
		fy_recv_respond_error(x, h.seq, st->code, st->msg);
		return st->code;
	}
	if (h.length > FY_RESUME_MAX_BODY) {
		snprintf(x->err, sizeof(x->err), "RESUME of %u bytes",
			 h.length);
		fy_recv_respond_error(x, h.seq, -EBADMSG, x->err);
		return -EBADMSG;
	}
	rc = fy_chan_recv_body(&x->ch, &h);
	if (rc) {
		snprintf(x->err, sizeof(x->err), "reading RESUME: %s",
			 ferry_strerror(rc));
		return rc;
	}
	if (fy_resume_decode(x->ch.rx.in.data, x->ch.rx.in.len, &r)) {
		rc = -EBADMSG;
		snprintf(x->err, sizeof(x->err), "malformed RESUME");
	}
	if (!rc) {
		/* Constant time, as JOIN: the token is the only secret. */
		diff = r.session_id != x->pc.session_id;
		for (size_t i = 0; i < sizeof(r.token); i++)
			diff |= r.token[i] ^ x->pc.token[i];
		if (diff) {
			rc = -EACCES;
			snprintf(x->err, sizeof(x->err),
				 "RESUME refused: wrong session or token");
		} else if (r.generation <= x->pc.generation) {
			rc = -ESTALE;
			snprintf(x->err, sizeof(x->err),
				 "RESUME generation %u is not above %u, the last accepted: a connection of an earlier attempt",
				 r.generation, x->pc.generation);
		}
	}
	if (rc) {
		fy_recv_respond_error(x, h.seq, rc, x->err);
		return rc;
	}
	x->pc.generation = r.generation;
	*seq = h.seq;
	return 0;
}

/* Accept on @lfd until a connection presents a valid RESUME (strangers
 * and stale attempts are refused one by one), or the wait runs out. */
static int accept_resume(struct receiver *x, int lfd, struct fy_recv_step *st,
			 uint32_t *seq)
{
	uint64_t end = fy_now_ns() + FY_PC_RECOVER_WAIT_MS * 1000000ull;
	int fd, rc;

	while (fy_now_ns() < end) {
		fd = -1;
		rc = fy_transport_accept(lfd, &fd, FY_TICK_MS);
		if (rc == -ETIMEDOUT)
			continue;
		if (rc) {
			snprintf(x->err, sizeof(x->err),
				 "accepting the recovery connection: %s",
				 ferry_strerror(rc));
			return rc;
		}
		fy_transport_tune(fd, FY_TICK_MS);
		fy_chan_clear(&x->ch);
		rc = fy_chan_init(&x->ch, x->s, fd);
		if (rc) {
			close(fd);
			x->ch.fd = -1;
			snprintf(x->err, sizeof(x->err), "out of memory");
			return rc;
		}
		rc = fy_chan_secure(&x->ch, true, x->err, sizeof(x->err));
		if (!rc)
			rc = check_resume(x, st, seq);
		if (!rc)
			return 0;
		fy_session_log(x->s, 1, "recovery: dropped a connection: %s",
			       x->err);
		fy_chan_close(&x->ch);
	}
	snprintf(x->err, sizeof(x->err),
		 "no source resumed within %d s", FY_PC_RECOVER_WAIT_MS / 1000);
	return -ETIMEDOUT;
}

/* RESUME's answer: the guest's state here and a bit per placed page. */
static int have_map(struct receiver *x, struct fy_buf *out)
{
	ferry_session *s = x->s;
	struct fy_have_map hm = { .nregions = (uint32_t)s->nregions };
	uint64_t *bits[FY_MAX_REGIONS] = { 0 };
	int rc = 0;

	if (x->pc.resumed)
		hm.flags = FY_HAVE_RAN | FY_HAVE_RUNNING;
	for (size_t i = 0; i < s->nregions && !rc; i++) {
		hm.pages[i] = region_pages(s, i);
		bits[i] = calloc((hm.pages[i] + 63) / 64, sizeof(uint64_t));
		rc = bits[i] ? fy_lazy_have_bitmap(x->pc.lazy, (uint32_t)i,
						   bits[i], hm.pages[i])
			     : -ENOMEM;
		hm.bits[i] = bits[i];
	}
	if (!rc)
		rc = fy_have_map_encode(out, &hm);
	if (rc)
		snprintf(x->err, sizeof(x->err), "the have-map: %s",
			 ferry_strerror(rc));
	for (size_t i = 0; i < s->nregions; i++)
		free(bits[i]);
	return rc;
}

/* After an accepted RESUME: the data connections may join again on the
 * same listener (the pool owns it from here), then the have-map. */
static int rejoin(struct receiver *x, int lfd, const struct fy_recv_step *st,
		  uint32_t seq)
{
	ferry_session *s = x->s;
	struct fy_buf reply;
	int rc;

	rc = fy_recv_pool_start(&x->pool, s, lfd, x->ch.fd);
	if (rc) {
		close(lfd);
		snprintf(x->err, sizeof(x->err),
			 "cannot accept the data connections: %s",
			 ferry_strerror(rc));
		return rc;
	}
	fy_recv_pool_set_session(&x->pool, x->pc.session_id, x->pc.token);
	fy_recv_pool_postcopy(&x->pool, x->pc.lazy, x->pc.units,
			      x->pc.stage_size, x->pc.channels);
	x->pc.records = 0;
	x->pc.bytes = 0;
	rc = resume_guest(x);
	fy_buf_init(&reply);
	if (!rc)
		rc = have_map(x, &reply);
	if (!rc) {
		rc = fy_recv_respond_ok(x, seq, &reply);
		if (rc)
			snprintf(x->err, sizeof(x->err), "answering RESUME: %s",
				 ferry_strerror(rc));
	} else {
		fy_recv_respond_error(x, seq, rc, x->err);
	}
	fy_buf_free(&reply);
	if (rc)
		return rc;
	fy_recv_sm_commit(&x->sm, st, seq);
	return 0;
}

/* Recovery on @uri: listen, take the source's RESUME, answer with the
 * have-map, and let the data connections join again. */
static int recover(struct receiver *x, const char *uri)
{
	ferry_session *s = x->s;
	struct fy_recv_step st;
	struct fy_uri u;
	uint32_t seq = 0;
	int lfd = -1, rc;

	x->err[0] = 0;
	rc = fy_uri_parse(uri, &u, x->err, sizeof(x->err));
	if (!rc)
		rc = fy_recv_listen(s, &u, &lfd, x->err, sizeof(x->err));
	if (rc)
		return rc;
	x->pc.where = u;
	x->pc.where_ours = true;
	fy_session_log(s, 1, "postcopy: waiting on %s for the source to resume",
		       uri);
	rc = accept_resume(x, lfd, &st, &seq);
	if (rc) {
		close(lfd);
		return rc;
	}
	rc = rejoin(x, lfd, &st, seq);
	if (rc)
		return rc;
	x->pc.recoveries++;
	fy_session_clear_error(s);
	fy_session_set_state(s, FERRY_STATE_POSTCOPY);
	fy_session_log(s, 1, "postcopy recovered (generation %u)",
		       x->pc.generation);
	return 0;
}

/* Every page is placed and the loader unregistered: the memory is the
 * guest's plain memory, and the session holds nothing any more. */
static int complete(struct receiver *x)
{
	ferry_session *s = x->s;

	publish(x);
	pthread_mutex_lock(&s->lock);
	s->stats.pages_missing = 0;
	pthread_mutex_unlock(&s->lock);
	s->lazy = NULL;
	fy_lazy_free(x->pc.lazy);
	x->pc.lazy = NULL;
	fy_session_set_owner(s, (enum ferry_owner)fy_recv_owner(FY_RS_RUNNING));
	return 0;
}

/* While paused: the loader's figures keep coming. */
static void pc_tick(void *opaque)
{
	publish(opaque);
}

/**
 * fy_pc_run() - see receive.h.
 * @x: the receiver, past the transition.
 * @rc: 0, or the failure that already ended the first phase.
 *
 * Return: 0; a paused run waits for ferry_session_recover() as long as it
 * takes (the source may be gone for good: the guest keeps what it has).
 */
int fy_pc_run(struct receiver *x, int rc)
{
	char uri[FERRY_URI_MAX];

	for (;;) {
		if (!rc)
			rc = phase(x);
		if (!rc)
			return complete(x);
		pause_run(x, rc);
		while (fy_session_pc_wait(x->s, uri, sizeof(uri), pc_tick, x))
			;
		rc = recover(x, uri);
	}
}
