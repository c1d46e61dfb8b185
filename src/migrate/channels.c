// SPDX-License-Identifier: MIT
/*
 * channels.c - memory over several connections.
 *
 * Source: one shared, bounded queue of chunks feeds a worker thread per
 * connection, so a slow connection simply takes fewer chunks instead of
 * buffering a share of its own. Nothing waits per chunk: the only window is
 * the socket's send buffer, and the only barrier is PASS_END on the main
 * connection.
 *
 * Destination: the listener stays open after the main connection; extra
 * connections join with the session id and token from HELLO's answer and
 * then carry MEMORY records only, received straight into guest memory. The
 * main connection's PASS_END waits until all connections together have
 * delivered what the source says it sent in the pass.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migrate/channels.h"
#include "proto/proto.h"
#include "transport/transport.h"

/* ------------------------------------------------------------------ */
/* source                                                              */

static void *send_worker(void *arg)
{
	struct worker_arg *wa = arg;
	struct fy_send_pool *p = wa->pool;
	struct fy_chan *ch = p->chans[wa->idx];

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct fy_job job;
		int rc = 0;

		while (!p->count && !p->closing)
			pthread_cond_wait(&p->more, &p->lock);
		if (!p->count)
			break;
		job = p->q[p->head];
		p->head = (p->head + 1) % FY_QUEUE_LEN;
		p->count--;
		p->active++;
		pthread_cond_signal(&p->space);
		if (!p->err) {
			struct fy_mem_hdr m = { job.region, 0, job.offset,
						job.length };

			pthread_mutex_unlock(&p->lock);
			rc = fy_chan_send_mem(ch, job.reg, &m, p->csum);
			pthread_mutex_lock(&p->lock);
			if (rc && !p->err) {
				p->err = rc;
				p->err_chan = wa->idx;
			} else if (!rc) {
				p->records++;
				p->bytes += job.length;
				fy_session_count_bytes(p->s, job.length);
			}
		}
		p->active--;
		if (!p->count && !p->active)
			pthread_cond_broadcast(&p->idle);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/**
 * fy_send_pool_start() - start one worker per connection.
 * @chans: the connections; chans[0] is the main one, borrowed while a pass
 *         runs (the main thread only waits then).
 */
int fy_send_pool_start(struct fy_send_pool *p, ferry_session *s,
		       struct fy_chan *const *chans, unsigned n)
{
	memset(p, 0, sizeof(*p));
	p->s = s;
	memcpy(p->chans, chans, n * sizeof(chans[0]));
	p->n = n;
	p->started = true;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->more, NULL);
	pthread_cond_init(&p->space, NULL);
	pthread_cond_init(&p->idle, NULL);
	for (unsigned i = 0; i < n; i++) {
		p->args[i].pool = p;
		p->args[i].idx = i;
		if (pthread_create(&p->threads[i], NULL, send_worker,
				   &p->args[i])) {
			fy_send_pool_stop(p);
			return -EAGAIN;
		}
		p->nthreads++;
	}
	return 0;
}

/**
 * fy_send_pool_stop() - let the workers finish and join them.
 */
void fy_send_pool_stop(struct fy_send_pool *p)
{
	if (!p->started)
		return;
	pthread_mutex_lock(&p->lock);
	p->closing = true;
	pthread_cond_broadcast(&p->more);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_cond_destroy(&p->more);
	pthread_cond_destroy(&p->space);
	pthread_cond_destroy(&p->idle);
	pthread_mutex_destroy(&p->lock);
	p->started = false;
}

/* Queue one chunk, waiting for room; stops early once a worker failed. */
static int push(struct fy_send_pool *p, const struct fy_job *job)
{
	int rc;

	pthread_mutex_lock(&p->lock);
	while (p->count == FY_QUEUE_LEN && !p->err)
		pthread_cond_wait(&p->space, &p->lock);
	rc = p->err;
	if (!rc) {
		p->q[(p->head + p->count) % FY_QUEUE_LEN] = *job;
		p->count++;
		pthread_cond_signal(&p->more);
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

/**
 * fy_send_pool_pass() - send every range in chunks over all connections and
 * wait until the workers have handed all of them to their sockets.
 * @csum: checksums cover page data (guest paused).
 * @records, @bytes: what was sent, for PASS_END.
 *
 * Return: 0, or the first worker's error (*chan says which connection).
 */
int fy_send_pool_pass(struct fy_send_pool *p, const struct fy_ranges *ranges,
		      uint32_t chunk, bool csum, uint64_t *records,
		      uint64_t *bytes, unsigned *chan)
{
	ferry_session *s = p->s;
	int rc = 0;

	pthread_mutex_lock(&p->lock);
	p->csum = csum;
	p->records = 0;
	p->bytes = 0;
	pthread_mutex_unlock(&p->lock);
	struct fy_chunk_cursor cur = { 0 };
	struct fy_range r;

	while (!rc && fy_ranges_next_chunk(ranges, &cur, chunk, &r)) {
		struct fy_job job = { &s->regions[r.region], r.region, r.offset,
				      r.length };

		rc = fy_cancelled(s) ? FERRY_ECANCELED : push(p, &job);
		fy_session_progress(s);
	}
	pthread_mutex_lock(&p->lock);
	if (rc && !p->err) {
		p->err = rc;
		p->err_chan = 0;
	}
	while (p->count || p->active)
		pthread_cond_wait(&p->idle, &p->lock);
	rc = p->err;
	*chan = p->err_chan;
	*records = p->records;
	*bytes = p->bytes;
	p->err = 0;
	pthread_mutex_unlock(&p->lock);
	return rc;
}

/* ------------------------------------------------------------------ */
/* destination                                                         */

static void pool_fail(struct fy_recv_pool *p, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The first failure of any data connection ends the attempt: record it
 * and wake the main connection's reader so it can answer with ERROR. */
static void pool_fail(struct fy_recv_pool *p, int code, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&p->lock);
	if (!p->err && !atomic_load(&p->stop)) {
		p->err = code;
		va_start(ap, fmt);
		vsnprintf(p->errmsg, sizeof(p->errmsg), fmt, ap);
		va_end(ap);
		shutdown(p->main_fd, SHUT_RD);
	}
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->lock);
}

/* JOIN: the credentials must be this session's, compared in constant time. */
static int on_join(struct fy_recv_pool *p, struct rx_chan *rc_,
		   const struct fy_rec_hdr *h)
{
	struct fy_chan *ch = &rc_->ch;
	struct fy_join j;
	unsigned diff = 0;
	int rc = fy_chan_recv_body(ch, h);

	if (rc)
		return rc;
	if (fy_join_decode(ch->in.data, ch->in.len, &j)) {
		fy_chan_send_error(ch, FY_REC_ERROR, h->seq, -EBADMSG, "malformed JOIN");
		return -EBADMSG;
	}
	for (size_t i = 0; i < sizeof(j.token); i++)
		diff |= j.token[i] ^ p->token[i];
	if (diff || j.session_id != p->session_id || !p->have_session) {
		fy_chan_send_error(ch, FY_REC_ERROR, h->seq, -EACCES,
		       "data connection refused: wrong session or token");
		return -EACCES;
	}
	pthread_mutex_lock(&p->lock);
	rc_->index = j.index;
	pthread_mutex_unlock(&p->lock);
	return fy_chan_send_rec(ch, FY_REC_OK, h->seq, NULL, 0);
}

static int on_data(struct fy_recv_pool *p, struct rx_chan *c,
		   const struct fy_rec_hdr *h)
{
	struct fy_mem_hdr m;
	char err[256] = "";
	int rc;

	if (!atomic_load(&p->in_pass)) {
		pool_fail(p, FERRY_EPROTO,
			  "memory on data connection %u outside a pass",
			  c->index);
		return FERRY_EPROTO;
	}
	rc = fy_chan_recv_mem(&c->ch, h, p->s->regions, p->s->nregions, &m,
			      err, sizeof(err));
	if (rc) {
		pool_fail(p, rc, "data connection %u: %s", c->index,
			  err[0] ? err : ferry_strerror(rc));
		return rc;
	}
	pthread_mutex_lock(&p->lock);
	p->records++;
	p->bytes += m.length;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->lock);
	fy_session_count_bytes(p->s, m.length);
	return 0;
}

static void *recv_worker(void *arg)
{
	struct rx_chan *c = arg;
	struct fy_recv_pool *p = c->pool;
	enum fy_data_state st = FY_DS_WAIT_JOIN;
	uint8_t sh[FY_STREAM_HDR_SIZE];
	uint16_t ver;
	int rc;

	/* A stranger gets a few seconds to show its credentials. */
	rc = fy_chan_read_within(&c->ch, sh, sizeof(sh), FY_JOIN_WAIT_MS);
	if (!rc) {
		rc = fy_stream_hdr_decode(sh, &ver);
		if (rc)
			fy_chan_send_error(&c->ch, FY_REC_ERROR, 0, rc, "not a ferry stream");
	}
	while (!rc && !atomic_load(&p->stop)) {
		struct fy_rec_hdr h;
		struct fy_recv_step step;

		rc = fy_chan_recv_hdr(&c->ch, &h, st == FY_DS_JOINED
						  ? FY_IDLE_TIMEOUT_MS : FY_JOIN_WAIT_MS);
		if (rc == -EBADMSG || rc == -EMSGSIZE)
			fy_chan_send_error(&c->ch, FY_REC_ERROR, 0, rc, "malformed record header");
		if (rc)
			break;
		fy_data_sm_step(st, h.type, h.seq, &step);
		switch (step.action) {
		case FY_RA_JOIN:
			rc = on_join(p, c, &h);
			st = FY_DS_JOINED;
			break;
		case FY_RA_MEMORY:
			rc = on_data(p, c, &h);
			break;
		case FY_RA_SKIP:
			rc = fy_chan_skip_body(&c->ch, &h);
			break;
		default:
			/* A new source knocking while this session runs. */
			if (st == FY_DS_WAIT_JOIN && h.type == FY_REC_HELLO) {
				fy_chan_send_error(&c->ch, FY_REC_ERROR, h.seq, -EBUSY,
				       "destination is busy with another migration");
				rc = -EBUSY;
				break;
			}
			fy_chan_send_error(&c->ch, FY_REC_ERROR, h.seq, step.code, step.msg);
			if (st == FY_DS_JOINED)
				pool_fail(p, step.code, "data connection %u: %s",
					  c->index, step.msg);
			rc = step.code;
		}
	}
	/* A joined connection that breaks mid-migration loses data; one that
	 * never joined is just a refused stranger. */
	if (rc && st == FY_DS_JOINED && rc != -EACCES)
		pool_fail(p, rc, "data connection %u failed: %s", c->index,
			  ferry_strerror(rc));
	/* Done with this connection: let the peer see it close now, not
	 * when the session ends (the descriptor is freed then). */
	shutdown(c->ch.fd, SHUT_RDWR);
	atomic_store(&c->done, true);
	return NULL;
}

/* Free the slots of connections whose worker ended (refused strangers,
 * closed channels), so they cannot use up the session's channels. */
static void reap(struct fy_recv_pool *p)
{
	unsigned keep = 0;

	for (unsigned i = 0; i < p->n; i++) {
		struct rx_chan *c = p->chans[i];

		if (!atomic_load(&c->done)) {
			p->chans[keep++] = c;
			continue;
		}
		pthread_join(c->thread, NULL);
		if (c->index)
			p->joined_ended++;
		fy_chan_close(&c->ch);
		free(c);
	}
	p->n = keep;
}

static void *acceptor(void *arg)
{
	struct fy_recv_pool *p = arg;

	while (!atomic_load(&p->stop)) {
		struct rx_chan *c;
		int fd, rc = fy_transport_accept(p->lfd, &fd, FY_TICK_MS);

		if (rc == -ETIMEDOUT)
			continue;
		if (rc)
			break;
		pthread_mutex_lock(&p->lock);
		reap(p);
		if (p->n >= FY_MAX_CHANNELS - 1 || atomic_load(&p->stop)) {
			pthread_mutex_unlock(&p->lock);
			close(fd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c || fy_chan_init(&c->ch, p->s, fd)) {
			pthread_mutex_unlock(&p->lock);
			free(c);
			close(fd);
			continue;
		}
		fy_transport_tune(fd, FY_TICK_MS);
		c->pool = p;
		if (pthread_create(&c->thread, NULL, recv_worker, c)) {
			pthread_mutex_unlock(&p->lock);
			fy_chan_close(&c->ch);
			free(c);
			continue;
		}
		p->chans[p->n++] = c;
		pthread_mutex_unlock(&p->lock);
	}
	return NULL;
}

/**
 * fy_recv_pool_start() - keep accepting extra data connections on @lfd
 * (which the pool now owns) for the session whose main connection is
 * @main_fd.
 */
int fy_recv_pool_start(struct fy_recv_pool *p, ferry_session *s, int lfd,
		       int main_fd)
{
	memset(p, 0, sizeof(*p));
	p->s = s;
	p->lfd = lfd;
	p->main_fd = main_fd;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cv, NULL);
	if (pthread_create(&p->acceptor, NULL, acceptor, p)) {
		close(lfd);
		p->lfd = -1;
		return -EAGAIN;
	}
	p->started = true;
	return 0;
}

/**
 * fy_recv_pool_set_session() - the credentials extra connections must show.
 */
void fy_recv_pool_set_session(struct fy_recv_pool *p, uint64_t id,
			      const uint8_t token[16])
{
	pthread_mutex_lock(&p->lock);
	p->session_id = id;
	memcpy(p->token, token, sizeof(p->token));
	p->have_session = true;
	pthread_mutex_unlock(&p->lock);
}

/**
 * fy_recv_pool_begin_pass() - a pass starts: count from zero, accept data.
 */
void fy_recv_pool_begin_pass(struct fy_recv_pool *p)
{
	pthread_mutex_lock(&p->lock);
	p->records = 0;
	p->bytes = 0;
	atomic_store(&p->in_pass, true);
	pthread_mutex_unlock(&p->lock);
}

/**
 * fy_recv_pool_end_pass() - the barrier: wait until the extra connections
 * delivered @records/@bytes (what the source sent there), a connection
 * failed, the session was cancelled, or nothing arrived for the idle limit.
 *
 * Return: 0, or a negative code with the reason in @err.
 */
int fy_recv_pool_end_pass(struct fy_recv_pool *p, uint64_t records,
			  uint64_t bytes, char *err, size_t errlen)
{
	uint64_t seen = 0, quiet_since = fy_now_ns();
	int rc = 0;

	pthread_mutex_lock(&p->lock);
	while (!p->err && (p->records < records || p->bytes < bytes)) {
		struct timespec ts;

		if (p->records != seen) {
			seen = p->records;
			quiet_since = fy_now_ns();
		}
		if (fy_cancelled(p->s)) {
			rc = FERRY_ECANCELED;
			break;
		}
		if (fy_now_ns() - quiet_since > FY_IDLE_TIMEOUT_MS * 1000000ull) {
			rc = -ETIMEDOUT;
			break;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += FY_TICK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&p->cv, &p->lock, &ts);
	}
	if (p->err) {
		rc = p->err;
		snprintf(err, errlen, "%s", p->errmsg);
	} else if (!rc && (p->records != records || p->bytes != bytes)) {
		rc = FERRY_EPROTO;
	}
	if (rc == FERRY_EPROTO && !p->err)
		snprintf(err, errlen,
			 "data connections delivered %llu records / %llu bytes, source says %llu / %llu",
			 (unsigned long long)p->records,
			 (unsigned long long)p->bytes,
			 (unsigned long long)records, (unsigned long long)bytes);
	else if (rc == -ETIMEDOUT)
		snprintf(err, errlen, "data connections stalled in the pass barrier");
	atomic_store(&p->in_pass, false);
	pthread_mutex_unlock(&p->lock);
	return rc;
}

/**
 * fy_recv_pool_error() - the first data connection failure, if any.
 */
int fy_recv_pool_error(struct fy_recv_pool *p, char *err, size_t errlen)
{
	int rc;

	if (!p->started)
		return 0;
	pthread_mutex_lock(&p->lock);
	rc = p->err;
	if (rc)
		snprintf(err, errlen, "%s", p->errmsg);
	pthread_mutex_unlock(&p->lock);
	return rc;
}

/**
 * fy_recv_pool_channels() - how many data connections joined.
 */
unsigned fy_recv_pool_channels(struct fy_recv_pool *p)
{
	unsigned n;

	if (!p->started)
		return 0;
	pthread_mutex_lock(&p->lock);
	n = p->joined_ended;
	for (unsigned i = 0; i < p->n; i++)
		n += p->chans[i]->index != 0;
	pthread_mutex_unlock(&p->lock);
	return n;
}

/**
 * fy_recv_pool_close_door() - accept no more connections, at once. Called
 * before a failing session answers with ERROR, so that a source reacting
 * to that answer finds the listener closed (and retries) rather than
 * joining the dying session.
 */
void fy_recv_pool_close_door(struct fy_recv_pool *p)
{
	if (!p->started || atomic_exchange(&p->stop, true))
		return;
	shutdown(p->lfd, SHUT_RDWR);
}

/**
 * fy_recv_pool_stop() - stop accepting, close every data connection, join
 * the threads and close the listener. Safe on a pool that never started.
 */
void fy_recv_pool_stop(struct fy_recv_pool *p)
{
	if (!p->started)
		return;
	fy_recv_pool_close_door(p);
	pthread_join(p->acceptor, NULL);
	/* No new channels now; wake the readers by shutting their sockets. */
	for (unsigned i = 0; i < p->n; i++)
		shutdown(p->chans[i]->ch.fd, SHUT_RDWR);
	for (unsigned i = 0; i < p->n; i++) {
		pthread_join(p->chans[i]->thread, NULL);
		fy_chan_close(&p->chans[i]->ch);
		free(p->chans[i]);
	}
	close(p->lfd);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->lock);
	p->started = false;
}
