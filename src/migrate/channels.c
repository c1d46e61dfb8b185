// SPDX-License-Identifier: MIT
/*
 * channels.c - memory over several connections.
 *
 * Source: one shared, bounded queue of chunks (window x connections deep)
 * feeds a worker thread per connection, so a slow connection simply takes
 * fewer chunks instead of buffering a share of its own. Nothing waits per
 * chunk: the window is the socket's send buffer, sized to the window's
 * chunks, and the only barrier is PASS_END on the main connection. An
 * extra connection that breaks is given up and every chunk it took in the
 * pass goes again over the others.
 *
 * Destination: the listener stays open after the main connection; extra
 * connections join with the session id and token from HELLO's answer and
 * then carry MEMORY records only, received straight into guest memory. The
 * main connection's PASS_END waits until each connection has delivered
 * what the source says it handed to it in the pass, and until connections
 * the source gave up have ended; one that broke short of its share is
 * named in the answer, and the source sends that share again.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "memory/lazy.h"
#include "migrate/channels.h"
#include "proto/proto.h"
#include "transport/transport.h"

/* Names a worker "fy-send/2" and the like, for top -H, ps and perf. */
static void name_thread(pthread_t t, const char *role, unsigned idx)
{
	char name[32];

	snprintf(name, sizeof(name), "%s/%u", role, idx);
	name[15] = '\0';	/* the kernel's limit */
	pthread_setname_np(t, name);
}

/* Wait on @cv (default clock) for at most @ms. */
static void cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *lock, long ms)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += ms * 1000000L;
	until.tv_sec += until.tv_nsec / 1000000000L;
	until.tv_nsec %= 1000000000L;
	pthread_cond_timedwait(cv, lock, &until);
}

/* ------------------------------------------------------------------ */
/* source                                                              */

/* Work left for the workers: chunks to send again, or the pass's own. */
static bool have_work(const struct fy_send_pool *p)
{
	return p->redo_left || p->ranges;
}

/*
 * The next piece of the pass, those of a broken connection first: the
 * pass's ranges, read through one shared cursor, are the work queue.
 * Locked.
 */
static bool take_one(struct fy_send_pool *p, struct fy_range *r)
{
	if (p->redo_left) {
		if (fy_ranges_next_chunk(&p->redo, &p->redo_at, p->chunk, r)) {
			p->redo_left -= r->length < p->redo_left ? r->length
								  : p->redo_left;
			return true;
		}
		p->redo_left = 0; /* cannot happen: the walk ends with it */
	}
	if (!p->ranges)
		return false;
	if (!fy_ranges_next_chunk(p->ranges, &p->at, p->chunk, r)) {
		p->ranges = NULL; /* the pass is all taken */
		return false;
	}
	return true;
}

/* Take pieces up to a chunk's worth (a whole chunk is one). Locked. */
static bool take(struct fy_send_pool *p, struct fy_job *job)
{
	job->n = 0;
	job->bytes = 0;
	while (job->n < FY_JOB_PIECES && job->bytes < p->chunk &&
	       take_one(p, &job->piece[job->n]))
		job->bytes += job->piece[job->n++].length;
	return job->n > 0;
}

/*
 * Stop using extra connection @idx: it takes no more chunks, and every
 * chunk it took in this pass is added to @again, since the destination
 * may hold all, some or none of them. Shutting the socket down tells the
 * destination, which then stops applying what the connection still had
 * buffered before it answers this pass's PASS_END. Locked.
 *
 * Return: 0, or -ENOMEM (the connection is then still in use).
 */
static int give_up(struct fy_send_pool *p, unsigned idx, int why,
		   struct fy_ranges *again)
{
	struct fy_send_conn *c = &p->conn[idx];
	int rc = fy_ranges_add_all(again, &c->taken);

	if (rc)
		return rc;
	c->dead = true;
	c->why = why;
	c->records = 0;
	c->bytes = 0;
	fy_ranges_clear(&c->taken);
	p->alive--;
	shutdown(p->chans[idx]->fd, SHUT_RDWR);
	pthread_mutex_lock(&p->s->lock);
	p->s->stats.connections = p->alive;
	pthread_mutex_unlock(&p->s->lock);
	pthread_cond_broadcast(&p->more); /* its worker leaves */
	return 0;
}

/* End the pass with @rc (the first error counts): nothing more is taken.
 * Locked. */
static void pass_fail(struct fy_send_pool *p, int rc, unsigned idx)
{
	if (!p->err) {
		p->err = rc;
		p->err_chan = idx;
	}
	p->ranges = NULL;
	p->redo_left = 0;
}

/*
 * A worker's send failed. An extra connection that broke costs only
 * itself: its chunks of the pass go to the connections left (the main one
 * always stays). Anything else, or a broken main connection, ends the
 * pass with the error. Locked.
 */
static void send_failed(struct fy_send_pool *p, unsigned idx, int rc)
{
	if (idx && fy_conn_broke(rc) && !p->err && !fy_cancelled(p->s)) {
		uint64_t before = p->redo.bytes;

		rc = give_up(p, idx, rc, &p->redo);
		p->redo_left += p->redo.bytes - before;
		if (!rc)
			return;
	}
	pass_fail(p, rc, idx);
}

/* Hand what connection @idx batched to its socket, before the pass can
 * end: the worker counts as busy meanwhile. Locked. */
static void flush_batch(struct fy_send_pool *p, unsigned idx)
{
	int rc;

	p->active++;
	pthread_mutex_unlock(&p->lock);
	rc = fy_chan_flush(p->chans[idx]);
	pthread_mutex_lock(&p->lock);
	p->active--;
	if (rc)
		send_failed(p, idx, rc);
}

static void *send_worker(void *arg)
{
	struct worker_arg *wa = arg;
	struct fy_send_pool *p = wa->pool;
	struct fy_send_conn *me = &p->conn[wa->idx];
	struct fy_chan *ch = p->chans[wa->idx];

	pthread_mutex_lock(&p->lock);
	while (!me->dead) {
		struct fy_job job;
		int rc = 0;

		while (!have_work(p) && !p->closing && !me->dead)
			pthread_cond_wait(&p->more, &p->lock);
		if (me->dead || !have_work(p))
			break; /* given up, or the pool closes */
		if (fy_cancelled(p->s))
			pass_fail(p, FERRY_ECANCELED, 0);
		if (!take(p, &job)) {
			/* Another connection took the last chunk. */
			flush_batch(p, wa->idx);
			if (!have_work(p) && !p->active)
				pthread_cond_broadcast(&p->idle);
			continue;
		}
		p->active++;
		/* Noted before sending: a connection that breaks in the
		 * middle of a record must have that chunk sent again. */
		for (unsigned i = 0; i < job.n && !rc; i++)
			rc = fy_ranges_add(&me->taken, job.piece[i].region,
					   job.piece[i].offset,
					   job.piece[i].length);
		if (!rc) {
			pthread_mutex_unlock(&p->lock);
			for (unsigned i = 0; i < job.n && !rc; i++) {
				const struct fy_range *r = &job.piece[i];
				struct fy_mem_hdr m = { r->region, 0, r->offset,
							r->length };

				rc = fy_chan_send_mem(ch, &p->s->regions[r->region],
						      &m, p->csum);
			}
			pthread_mutex_lock(&p->lock);
		}
		if (rc)
			send_failed(p, wa->idx, rc);
		else if (!me->dead) {
			me->records += job.n;
			me->bytes += job.bytes;
			fy_session_count_bytes(p->s, job.bytes);
		}
		p->active--;
		/* Nothing left to take: what was batched goes out now. */
		if (!have_work(p) && !me->dead)
			flush_batch(p, wa->idx);
		if (!have_work(p) && !p->active)
			pthread_cond_broadcast(&p->idle);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/**
 * fy_send_pool_start() - start one worker per connection.
 * @chans: the connections; chans[0] is the main one, borrowed while a pass
 *         runs (the main thread only waits then), chans[i] the one that
 *         joined with index i.
 */
int fy_send_pool_start(struct fy_send_pool *p, ferry_session *s,
		       struct fy_chan *const *chans, unsigned n)
{
	memset(p, 0, sizeof(*p));
	p->s = s;
	memcpy(p->chans, chans, n * sizeof(chans[0]));
	p->n = n;
	p->alive = n;
	fy_ranges_init(&p->redo);
	for (unsigned i = 0; i < n; i++)
		fy_ranges_init(&p->conn[i].taken);
	p->started = true;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->more, NULL);
	pthread_cond_init(&p->idle, NULL);
	for (unsigned i = 0; i < n; i++) {
		p->args[i].pool = p;
		p->args[i].idx = i;
		if (pthread_create(&p->threads[i], NULL, send_worker,
				   &p->args[i])) {
			fy_send_pool_stop(p);
			return -EAGAIN;
		}
		name_thread(p->threads[i], "fy-send", i);
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
	pthread_cond_destroy(&p->idle);
	pthread_mutex_destroy(&p->lock);
	for (unsigned i = 0; i < p->n; i++)
		fy_ranges_free(&p->conn[i].taken);
	fy_ranges_free(&p->redo);
	p->started = false;
}

/* A new pass: nothing taken, nothing to send again. Locked. */
static void pass_reset(struct fy_send_pool *p, uint32_t chunk, bool csum)
{
	p->csum = csum;
	p->chunk = chunk;
	fy_ranges_clear(&p->redo);
	p->redo_at = (struct fy_chunk_cursor){ 0 };
	p->redo_left = 0;
	for (unsigned i = 0; i < p->n; i++) {
		p->conn[i].records = 0;
		p->conn[i].bytes = 0;
		fy_ranges_clear(&p->conn[i].taken);
	}
}

/* PASS_END's counts: one entry per connection still in use. Locked. */
static void pass_counts(const struct fy_send_pool *p, struct fy_pass_end *pe)
{
	pe->nconn = 0;
	pe->records = 0;
	pe->bytes = 0;
	for (unsigned i = 0; i < p->n; i++) {
		const struct fy_send_conn *c = &p->conn[i];

		if (c->dead)
			continue;
		pe->conn[pe->nconn++] = (struct fy_pass_conn){ i, c->records,
							       c->bytes };
		pe->records += c->records;
		pe->bytes += c->bytes;
	}
}

/* Tell the log about connections given up since it last heard (here, on
 * the thread that drives the session, as callbacks must be). */
static void log_drops(struct fy_send_pool *p)
{
	unsigned idx[FY_MAX_CHANNELS], k = 0, alive;
	int why[FY_MAX_CHANNELS];

	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < p->n; i++) {
		struct fy_send_conn *c = &p->conn[i];

		if (c->dead && !c->logged) {
			c->logged = true;
			idx[k] = i;
			why[k++] = c->why;
		}
	}
	alive = p->alive;
	pthread_mutex_unlock(&p->lock);
	for (unsigned j = 0; j < k; j++)
		fy_session_log(p->s, 1,
			       "data connection %u broke (%s); its chunks of this pass went again over the %u connection%s left",
			       idx[j], ferry_strerror(why[j]), alive,
			       alive == 1 ? "" : "s");
}

/* Bytes handed to the sockets in this pass so far. Locked. */
static uint64_t sent_locked(const struct fy_send_pool *p)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < p->n; i++)
		n += p->conn[i].dead ? 0 : p->conn[i].bytes;
	return n;
}

/* Add what a cursor has not reached in @r to @out. */
static int untaken(const struct fy_ranges *r, const struct fy_chunk_cursor *at,
		   struct fy_ranges *out)
{
	int rc = 0;

	for (size_t i = at->i; i < r->n && !rc; i++) {
		uint64_t skip = i == at->i ? at->off : 0;

		if (skip < r->v[i].length)
			rc = fy_ranges_add(out, r->v[i].region,
					   r->v[i].offset + skip,
					   r->v[i].length - skip);
	}
	return rc;
}

/*
 * Stop the pass where it is: what no worker has taken yet goes to @rest,
 * and nothing more is taken. The chunks in flight finish, and PASS_END
 * counts what went. Locked.
 */
static int rest_of(struct fy_send_pool *p, struct fy_ranges *rest)
{
	int rc = 0;

	if (p->redo_left)
		rc = untaken(&p->redo, &p->redo_at, rest);
	if (!rc && p->ranges)
		rc = untaken(p->ranges, &p->at, rest);
	if (rc)
		return rc;
	p->ranges = NULL;
	p->redo_left = 0;
	return 0;
}

/**
 * fy_send_pool_pass() - send every range in chunks over all connections and
 * wait until the workers have handed all of them to their sockets.
 * @csum: checksums cover page data (guest paused).
 * @pe: receives the counts for PASS_END, per connection still in use.
 *
 * An extra connection that breaks meanwhile is given up and its chunks of
 * the pass are sent again over the others. With @stop, the driving thread
 * asks stop->now() at every tick whether to end the pass early (to switch
 * to postcopy); if it says so, what no worker took yet is added to
 * stop->rest and the pass ends with what went (a cut is asked for once).
 *
 * Return: 0, or the first worker's error (*chan says which connection).
 */
int fy_send_pool_pass(struct fy_send_pool *p, const struct fy_ranges *ranges,
		      uint32_t chunk, bool csum, struct fy_pass_end *pe,
		      unsigned *chan, const struct fy_pass_stop *stop)
{
	ferry_session *s = p->s;
	bool cut = false;
	int rc;

	pthread_mutex_lock(&p->lock);
	pass_reset(p, chunk, csum);
	p->ranges = ranges->n ? ranges : NULL;
	p->at = (struct fy_chunk_cursor){ 0 };
	pthread_cond_broadcast(&p->more);
	/* The workers take the chunks themselves; this thread only reports
	 * progress (callbacks belong to it) until they are done. */
	while (have_work(p) || p->active) {
		bool ask;
		uint64_t done;

		cond_wait_ms(&p->idle, &p->lock, FY_POOL_TICK_MS);
		ask = stop && !cut && have_work(p);
		done = sent_locked(p);
		pthread_mutex_unlock(&p->lock);
		fy_session_progress(s);
		/* Asked unlocked: it may take a while (a dirty scan). */
		cut = ask && stop->now(stop->opaque, done);
		pthread_mutex_lock(&p->lock);
		if (fy_cancelled(s))
			pass_fail(p, FERRY_ECANCELED, 0);
		if (cut && !p->err && rest_of(p, stop->rest))
			pass_fail(p, -ENOMEM, 0);
	}
	rc = p->err;
	*chan = p->err_chan;
	p->err = 0;
	p->ranges = NULL;
	pass_counts(p, pe);
	pthread_mutex_unlock(&p->lock);
	log_drops(p);
	return rc;
}

/**
 * fy_send_pool_lost() - the destination says extra connection @index broke
 * before delivering its part of the pass just ended (after the source had
 * handed it to the socket). Give the connection up and add every chunk it
 * took in that pass to @again, to be sent in a later pass.
 *
 * Return: 0, FERRY_EPROTO when @index was not in the pass's PASS_END, or
 * -ENOMEM.
 */
int fy_send_pool_lost(struct fy_send_pool *p, uint32_t index,
		      struct fy_ranges *again)
{
	int rc = FERRY_EPROTO;

	pthread_mutex_lock(&p->lock);
	if (index && index < p->n && !p->conn[index].dead) {
		rc = give_up(p, index, -ECONNRESET, again);
		p->conn[index].logged = true; /* the caller says it */
	}
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

/* A JOIN body is 32 bytes: a longer one announced is not read in. */
#define FY_JOIN_MAX_BODY 64

/*
 * Whether @j lets @c join: this session's credentials (compared in
 * constant time), an index no other connection holds, and the number of
 * connections the first JOIN gave. 0, or a negative code with the reason
 * in *@why. Locked.
 */
static int join_check(const struct fy_recv_pool *p, const struct rx_chan *c,
		      const struct fy_join *j, const char **why)
{
	unsigned diff = j->session_id != p->session_id;

	for (size_t i = 0; i < sizeof(j->token); i++)
		diff |= j->token[i] ^ p->token[i];
	if (diff || !p->have_session) {
		*why = "data connection refused: wrong session or token";
		return -EACCES;
	}
	if (c->evicted) {
		*why = "data connection refused: JOIN came too late";
		return -ETIMEDOUT;
	}
	if (p->channels && j->channels != p->channels) {
		*why = "data connection refused: another number of connections than the first JOIN's";
		return -ERANGE;
	}
	/* PASS_END counts by index: one connection per index. */
	for (unsigned i = 0; i < p->n; i++)
		if (p->chans[i] != c && p->chans[i]->index == j->index) {
			*why = "data connection index already joined";
			return -EEXIST;
		}
	return 0;
}

/* JOIN: a connection becomes one of the session's data connections, or is
 * refused on its own (the session goes on). */
static int on_join(struct fy_recv_pool *p, struct rx_chan *c,
		   const struct fy_rec_hdr *h)
{
	struct fy_chan *ch = &c->ch;
	struct fy_join j;
	int rc;

	c->why = "malformed JOIN";
	if (h->length > FY_JOIN_MAX_BODY) {
		rc = -EBADMSG;
		goto refuse;
	}
	rc = fy_chan_recv_body(ch, h);
	if (rc) {
		c->why = "JOIN unreadable";
		return rc;
	}
	rc = -EBADMSG;
	if (fy_join_decode(ch->rx.in.data, ch->rx.in.len, &j))
		goto refuse;
	pthread_mutex_lock(&p->lock);
	rc = join_check(p, c, &j, &c->why);
	if (!rc) {
		c->index = j.index;
		p->channels = j.channels;
	}
	pthread_mutex_unlock(&p->lock);
	if (rc)
		goto refuse;
	c->why = NULL;
	/* After a recovery: ready before the source may send. */
	if (atomic_load(&p->staged) && !c->stage.data)
		fy_stage_alloc(&c->stage, p->stage_size);
	return fy_chan_send_rec(ch, FY_REC_OK, h->seq, NULL, 0);
refuse:
	fy_chan_send_error(ch, FY_REC_ERROR, h->seq, rc, c->why);
	return rc;
}

/* fy_stage.place for the lazy loader. */
static int place_lazy(void *opaque, uint32_t region, uint64_t offset,
		      uint64_t len, const void *buf, const uint64_t *zero)
{
	return fy_lazy_place(opaque, region, offset, len, buf, zero);
}

/*
 * Postcopy: the guest runs, so a record is received into the
 * connection's own staging buffer, verified whole, and only then placed
 * atomically. Any failure, a broken connection included, fails the pool:
 * the engine pauses and recovers every connection at once.
 */
static int on_staged(struct fy_recv_pool *p, struct rx_chan *c,
		     const struct fy_rec_hdr *h, struct fy_mem_hdr *m)
{
	struct fy_stage st = { 0 };
	char err[256] = "";
	int rc = 0;

	if (!c->stage.data)
		rc = fy_stage_alloc(&c->stage, p->stage_size);
	if (rc) {
		pool_fail(p, rc, "data connection %u: no staging buffer of %zu bytes",
			  c->index, p->stage_size);
		return rc;
	}
	st.buf = c->stage.data;
	st.size = p->stage_size;
	st.place = place_lazy;
	st.opaque = p->lazy;
	st.units = p->units;
	rc = fy_chan_recv_staged(&c->ch, h, p->s->regions, p->s->nregions, &st,
				 m, err, sizeof(err));
	if (rc)
		pool_fail(p, rc, "data connection %u: %s", c->index,
			  err[0] ? err : ferry_strerror(rc));
	return rc;
}

static int on_data(struct fy_recv_pool *p, struct rx_chan *c,
		   const struct fy_rec_hdr *h)
{
	struct fy_mem_hdr m;
	char err[256] = "";
	bool staged = atomic_load(&p->staged);
	int rc;

	if (!staged && !atomic_load(&p->in_pass)) {
		pool_fail(p, FERRY_EPROTO,
			  "memory on data connection %u outside a pass",
			  c->index);
		return FERRY_EPROTO;
	}
	if (staged) {
		rc = on_staged(p, c, h, &m);
		if (rc)
			return rc;
	} else {
		rc = fy_chan_recv_mem(&c->ch, h, p->s->regions,
				      p->s->nregions, &m, err, sizeof(err));
	}
	if (rc) {
		/* A broken connection costs only itself (recv_worker); bad
		 * bytes on it are the sender's fault and end the attempt. */
		if (!fy_conn_broke(rc))
			pool_fail(p, rc, "data connection %u: %s", c->index,
				  err[0] ? err : ferry_strerror(rc));
		return rc;
	}
	pthread_mutex_lock(&p->lock);
	c->records++;
	c->bytes += m.length;
	p->records++;
	p->bytes += m.length;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->lock);
	fy_session_count_bytes(p->s, m.length);
	return 0;
}

/* Keep a line for the log about a connection dropped before it joined
 * (the log hears it on the session's thread). Locked. */
static void note_stranger(struct fy_recv_pool *p, const struct rx_chan *c,
			  int rc)
{
	unsigned k = atomic_load(&p->nnotes);

	if (k == FY_STRANGER_NOTES) {
		p->notes_lost++;
		return;
	}
	snprintf(p->notes[k], sizeof(p->notes[k]),
		 "dropped a connection that did not join the session: %s%s%s",
		 c->why ? c->why : c->evicted ? "no JOIN in time" : "no JOIN",
		 rc ? ": " : "", rc ? ferry_strerror(rc) : "");
	atomic_store(&p->nnotes, k + 1);
}

static void *recv_worker(void *arg)
{
	struct rx_chan *c = arg;
	struct fy_recv_pool *p = c->pool;
	enum fy_data_state st = FY_DS_WAIT_JOIN;
	uint8_t sh[FY_STREAM_HDR_SIZE];
	uint16_t ver;
	int rc;

	/* A stranger gets a few seconds to show its credentials: TLS's,
	 * then the session's token. */
	rc = fy_chan_secure(&c->ch, true, c->tls_err, sizeof(c->tls_err));
	if (rc)
		c->why = c->tls_err;
	else
		rc = fy_chan_read_within(&c->ch, sh, sizeof(sh),
					 FY_JOIN_WAIT_MS);
	if (!rc) {
		rc = fy_stream_hdr_decode(sh, &ver);
		if (rc) {
			c->why = "not a ferry stream";
			fy_chan_send_error(&c->ch, FY_REC_ERROR, 0, rc, c->why);
		}
	}
	while (!rc && !atomic_load(&p->stop)) {
		struct fy_rec_hdr h;
		struct fy_recv_step step;

		/* A joined connection may rightly idle for long (passes of a
		 * few chunks need not reach every connection): the main
		 * connection and the pass barrier watch for a silent source,
		 * and a record once begun must still arrive in time. */
		rc = fy_chan_recv_hdr(&c->ch, &h, st == FY_DS_JOINED
						  ? 0 : FY_JOIN_WAIT_MS);
		if (rc == -EBADMSG || rc == -EMSGSIZE)
			fy_chan_send_error(&c->ch, FY_REC_ERROR, 0, rc, "malformed record header");
		if (rc)
			break;
		fy_data_sm_step(st, h.type, h.seq, &step);
		switch (step.action) {
		case FY_RA_JOIN:
			rc = on_join(p, c, &h);
			if (!rc)
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
				c->why = "destination is busy with another migration";
				fy_chan_send_error(&c->ch, FY_REC_ERROR, h.seq,
						   -EBUSY, c->why);
				rc = -EBUSY;
				break;
			}
			c->why = "a record other than JOIN";
			fy_chan_send_error(&c->ch, FY_REC_ERROR, h.seq, step.code, step.msg);
			if (st == FY_DS_JOINED)
				pool_fail(p, step.code, "data connection %u: %s",
					  c->index, step.msg);
			rc = step.code;
		}
	}
	/* A joined connection that breaks is given up: the source sends
	 * what it carried again, and PASS_END says what to wait for. Bad
	 * records on it end the attempt. A connection that never joined is a
	 * stranger: it is dropped and logged, and the session goes on. */
	if (rc && st == FY_DS_JOINED &&
	    (!fy_conn_broke(rc) || atomic_load(&p->staged)))
		pool_fail(p, rc, "data connection %u failed: %s", c->index,
			  ferry_strerror(rc));
	/* Done with this connection: let the peer see it close now, not
	 * when the session ends (the descriptor is freed then). */
	shutdown(c->ch.fd, SHUT_RDWR);
	pthread_mutex_lock(&p->lock);
	if (rc && c->index && fy_conn_broke(rc)) {
		c->broke = rc;
		if (!p->data_done && !atomic_load(&p->stop))
			p->dropped++;
	}
	if (st != FY_DS_JOINED && !atomic_load(&p->stop))
		note_stranger(p, c, rc);
	atomic_store(&c->done, true);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* Free the slots of strangers whose reader ended, so they cannot use up
 * the session's room. Joined connections stay to the end of the session,
 * ended or not: PASS_END accounts for them by index. Locked. */
static void reap(struct fy_recv_pool *p)
{
	unsigned keep = 0;

	for (unsigned i = 0; i < p->n; i++) {
		struct rx_chan *c = p->chans[i];

		if (!atomic_load(&c->done) || c->index) {
			p->chans[keep++] = c;
			continue;
		}
		pthread_join(c->thread, NULL);
		fy_chan_close(&c->ch);
		fy_bulk_free(&c->stage);
		free(c);
	}
	p->n = keep;
}

/* End a connection that has not joined: its reader sees the socket shut. */
static void evict(struct rx_chan *c)
{
	c->evicted = true;
	shutdown(c->ch.fd, SHUT_RDWR);
}

/*
 * Make room for a new connection: end the ones that have not joined
 * within FY_JOIN_WAIT_MS of being accepted, however they trickle bytes,
 * and the oldest waiting one when FY_MAX_PENDING wait. Whether the new one
 * fits. Locked.
 */
static bool make_room(struct fy_recv_pool *p)
{
	uint64_t now = fy_now_ns();
	struct rx_chan *oldest = NULL;
	unsigned pending = 0, joined = 0;

	reap(p);
	for (unsigned i = 0; i < p->n; i++) {
		struct rx_chan *c = p->chans[i];

		if (c->index) {
			joined++;
			continue;
		}
		if (c->evicted || atomic_load(&c->done))
			continue;
		if (now - c->since_ns > FY_JOIN_WAIT_MS * 1000000ull) {
			evict(c);
			continue;
		}
		pending++;
		if (!oldest)
			oldest = c;
	}
	if (pending >= FY_MAX_PENDING)
		evict(oldest);
	return joined < FY_MAX_CHANNELS - 1 && p->n < FY_RECV_SLOTS;
}

/* Take connection @fd as a candidate data connection, with a reader of
 * its own. Locked. */
static void admit(struct fy_recv_pool *p, int fd)
{
	struct rx_chan *c = calloc(1, sizeof(*c));

	if (!c || fy_chan_init(&c->ch, p->s, fd)) {
		free(c);
		close(fd);
		return;
	}
	fy_transport_tune(fd, FY_TICK_MS);
	c->pool = p;
	c->since_ns = fy_now_ns();
	if (pthread_create(&c->thread, NULL, recv_worker, c)) {
		fy_chan_close(&c->ch);
		free(c);
		return;
	}
	/* Numbered by slot; the main connection is 0. */
	name_thread(c->thread, "fy-recv", p->n + 1);
	p->chans[p->n++] = c;
}

static void *acceptor(void *arg)
{
	struct fy_recv_pool *p = arg;

	while (!atomic_load(&p->stop)) {
		int fd = -1, rc = fy_transport_accept(p->lfd, &fd, FY_TICK_MS);

		if (rc && rc != -ETIMEDOUT)
			break;
		pthread_mutex_lock(&p->lock);
		/* Every tick, so that a silent stranger's time runs out
		 * even when nobody else connects. */
		if (!make_room(p) || atomic_load(&p->stop)) {
			if (fd >= 0)
				close(fd);
		} else if (fd >= 0) {
			admit(p, fd);
		}
		pthread_mutex_unlock(&p->lock);
	}
	return NULL;
}

/**
 * fy_recv_pool_start() - keep accepting extra data connections on @lfd
 * for the session whose main connection is @main_fd. On success the pool
 * owns @lfd (fy_recv_pool_stop() closes it); on failure the caller still
 * does. @lfd is the session's own listener, never the caller's: the
 * pool shuts it down to stop.
 *
 * Return: 0, or -EAGAIN when the acceptor thread cannot start.
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
		pthread_cond_destroy(&p->cv);
		pthread_mutex_destroy(&p->lock);
		p->lfd = -1;
		return -EAGAIN;
	}
	pthread_setname_np(p->acceptor, "fy-accept");
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
	for (unsigned i = 0; i < p->n; i++) {
		p->chans[i]->records = 0;
		p->chans[i]->bytes = 0;
	}
	atomic_store(&p->in_pass, true);
	pthread_mutex_unlock(&p->lock);
}

/* Sleep until a connection reports progress, or a tick. Locked. */
static void wait_tick(struct fy_recv_pool *p)
{
	cond_wait_ms(&p->cv, &p->lock, FY_TICK_MS);
}

/* The joined connection with JOIN index @index, or NULL. Locked. */
static struct rx_chan *by_index(struct fy_recv_pool *p, uint32_t index)
{
	for (unsigned i = 0; i < p->n; i++)
		if (index && p->chans[i]->index == index)
			return p->chans[i];
	return NULL;
}

/* PASS_END's entry for @index, or NULL. */
static const struct fy_pass_conn *entry(const struct fy_pass_end *e,
					uint32_t index)
{
	for (uint32_t i = 0; i < e->nconn; i++)
		if (e->conn[i].index == index)
			return &e->conn[i];
	return NULL;
}

/*
 * Where the barrier stands. 1: still waiting; 0: every listed connection
 * applied its count or ended short of it, and every joined connection the
 * source no longer lists has ended; negative: a connection applied more
 * than the source says it sent. Locked.
 */
static int barrier(struct fy_recv_pool *p, const struct fy_pass_end *e,
		   char *err, size_t errlen)
{
	int wait = 0;

	for (unsigned i = 0; i < p->n; i++) {
		const struct rx_chan *c = p->chans[i];
		const struct fy_pass_conn *want = entry(e, c->index);
		bool done = atomic_load(&c->done);

		if (!c->index)
			continue;
		if (!want) {
			wait |= !done;
			continue;
		}
		if (c->records > want->records || c->bytes > want->bytes ||
		    (c->records == want->records && c->bytes != want->bytes)) {
			snprintf(err, errlen,
				 "data connection %u delivered %llu records / %llu bytes in the pass, source says %llu / %llu",
				 c->index, (unsigned long long)c->records,
				 (unsigned long long)c->bytes,
				 (unsigned long long)want->records,
				 (unsigned long long)want->bytes);
			return FERRY_EPROTO;
		}
		wait |= c->records < want->records && !done;
	}
	return wait;
}

/* Log connections that ended since the log last heard, on the session's
 * thread (the caller's), as callbacks must be. */
static void log_closed(struct fy_recv_pool *p)
{
	uint32_t idx[FY_MAX_CHANNELS];
	int why[FY_MAX_CHANNELS];
	unsigned k = 0;

	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < p->n; i++) {
		struct rx_chan *c = p->chans[i];

		if (c->broke && !c->logged) {
			c->logged = true;
			idx[k] = c->index;
			why[k++] = c->broke;
		}
	}
	pthread_mutex_unlock(&p->lock);
	for (unsigned j = 0; j < k; j++)
		fy_session_log(p->s, 1,
			       "data connection %u closed (%s); continuing without it",
			       idx[j], ferry_strerror(why[j]));
}

/**
 * fy_recv_pool_end_pass_conns() - the barrier with the source's counts per
 * connection (@e, main connection checked by the caller): wait until each
 * listed extra connection applied exactly its count, or ended short of it
 * (lost: its index goes into @ack, and the source sends its part again),
 * and until each joined connection the source no longer lists has ended.
 * The source gave those up and sent their chunks again on the others: an
 * older copy they still had buffered must not land after this pass.
 *
 * Return: 0, or a negative code with the reason in @err.
 */
int fy_recv_pool_end_pass_conns(struct fy_recv_pool *p,
				const struct fy_pass_end *e,
				struct fy_pass_ack *ack, char *err,
				size_t errlen)
{
	uint64_t progress = UINT64_MAX, quiet_since = fy_now_ns();
	int rc = 0;

	memset(ack, 0, sizeof(*ack));
	if (!p->started) {
		for (uint32_t i = 0; i < e->nconn; i++)
			if (e->conn[i].index) {
				snprintf(err, errlen,
					 "PASS_END counts data connection %u, but none joined",
					 e->conn[i].index);
				return FERRY_EPROTO;
			}
		return 0;
	}
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < e->nconn && !rc; i++)
		if (e->conn[i].index && !by_index(p, e->conn[i].index)) {
			snprintf(err, errlen,
				 "PASS_END counts data connection %u, which never joined",
				 e->conn[i].index);
			rc = FERRY_EPROTO;
		}
	/* Connections the source gave up: end them, should it not have. */
	for (unsigned i = 0; i < p->n && !rc; i++)
		if (p->chans[i]->index && !entry(e, p->chans[i]->index))
			shutdown(p->chans[i]->ch.fd, SHUT_RDWR);
	while (!rc && !p->err) {
		uint64_t now = p->records;

		rc = barrier(p, e, err, errlen);
		if (rc <= 0)
			break;
		rc = 0;
		/* Progress is any byte arriving, not only whole records: on
		 * a link capped so low that one chunk takes longer than the
		 * stall limit, a healthy connection is still busy. */
		for (unsigned i = 0; i < p->n; i++)
			now += atomic_load(&p->chans[i]->done) +
			       atomic_load(&p->chans[i]->ch.rx.wire_bytes);
		if (now != progress) {
			progress = now;
			quiet_since = fy_now_ns();
		}
		if (fy_cancelled(p->s)) {
			rc = FERRY_ECANCELED;
			snprintf(err, errlen, "cancelled in the pass barrier");
		} else if (fy_now_ns() - quiet_since >
			   (uint64_t)fy_stall_ms(p->s) * 1000000ull) {
			rc = -ETIMEDOUT;
			snprintf(err, errlen,
				 "the source's data connections brought nothing for %.1f s in the pass barrier (the stall limit, --stall-timeout-ms %d)",
				 (double)(fy_now_ns() - quiet_since) / 1e9,
				 fy_stall_ms(p->s));
		} else {
			wait_tick(p);
		}
	}
	if (p->err) {
		rc = p->err;
		snprintf(err, errlen, "%s", p->errmsg);
	}
	for (uint32_t i = 0; !rc && i < e->nconn; i++) {
		const struct rx_chan *c = by_index(p, e->conn[i].index);

		if (c && c->records < e->conn[i].records)
			ack->lost[ack->nlost++] = c->index;
	}
	atomic_store(&p->in_pass, false);
	pthread_mutex_unlock(&p->lock);
	log_closed(p);
	fy_recv_pool_log(p);
	return rc;
}

/**
 * fy_recv_pool_log() - tell the log about connections dropped before they
 * joined, on the session's thread (the caller's), as callbacks must be.
 * Cheap when there is nothing to say: called between records.
 */
void fy_recv_pool_log(struct fy_recv_pool *p)
{
	char notes[FY_STRANGER_NOTES][160];
	unsigned k, lost;

	if (!p->started || !atomic_load(&p->nnotes))
		return;
	pthread_mutex_lock(&p->lock);
	k = atomic_load(&p->nnotes);
	memcpy(notes, p->notes, sizeof(notes));
	lost = p->notes_lost;
	p->notes_lost = 0;
	atomic_store(&p->nnotes, 0);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < k; i++)
		fy_session_log(p->s, 1, "%s", notes[i]);
	if (lost)
		fy_session_log(p->s, 1,
			       "dropped %u more connections that did not join the session",
			       lost);
}

/**
 * fy_recv_pool_data_done() - the final pass is complete: a data connection
 * that closes from now on lost nothing and is not counted as dropped.
 */
void fy_recv_pool_data_done(struct fy_recv_pool *p)
{
	if (!p->started)
		return;
	pthread_mutex_lock(&p->lock);
	p->data_done = true;
	pthread_mutex_unlock(&p->lock);
}

/* The pool's first failure and its message, or 0. Locked. */
static int pool_err_locked(const struct fy_recv_pool *p, char *err,
			   size_t errlen)
{
	if (p->err)
		snprintf(err, errlen, "%s", p->errmsg);
	return p->err;
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
	rc = pool_err_locked(p, err, errlen);
	pthread_mutex_unlock(&p->lock);
	return rc;
}

/**
 * fy_recv_pool_channels() - how many extra data connections joined and did
 * not break before the final pass was complete.
 */
unsigned fy_recv_pool_channels(struct fy_recv_pool *p)
{
	unsigned n = 0;

	if (!p->started)
		return 0;
	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < p->n; i++)
		n += p->chans[i]->index != 0;
	n -= p->dropped < n ? p->dropped : n;
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
	/* The acceptor sees the stop flag within a tick either way. */
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
		fy_bulk_free(&p->chans[i]->stage);
		free(p->chans[i]);
	}
	fy_recv_pool_log(p);
	close(p->lfd);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->lock);
	p->started = false;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
/* What a staging buffer has resident from the start: the records of a
 * default chunk, so that the first records after the switch do not wait
 * for the kernel to find (and perhaps compact) huge pages. */
#define FY_STAGE_RESIDENT (4u << 20)

/**
 * fy_stage_alloc() - a postcopy staging buffer (see channels.h).
 */
int fy_stage_alloc(struct fy_bulk *b, size_t size)
{
	size_t warm = size < FY_STAGE_RESIDENT ? size : FY_STAGE_RESIDENT;

	if (fy_bulk_alloc_as(b, size, FY_BULK_THP) &&
	    fy_bulk_alloc_as(b, size, FY_BULK_PLAIN))
		return -ENOMEM;
	if (madvise(b->data, warm, MADV_POPULATE_WRITE))
		for (size_t i = 0; i < warm; i += FY_PAGE_SIZE)
			b->data[i] = 0;
	return 0;
}

/**
 * fy_recv_pool_postcopy() - receive staged from now on (see channels.h).
 * Called before the answer that lets the source send postcopy memory, so
 * no record of the new phase arrives before the switch.
 */
void fy_recv_pool_postcopy(struct fy_recv_pool *p, struct fy_lazy *l,
			   const uint64_t *units, size_t stage_size,
			   uint32_t channels)
{
	if (!p->started)
		return;
	pthread_mutex_lock(&p->lock);
	p->lazy = l;
	p->units = units;
	p->stage_size = stage_size;
	if (channels)
		p->channels = channels;
	p->records = 0;
	p->bytes = 0;
	for (unsigned i = 0; i < p->n; i++) {
		struct rx_chan *c = p->chans[i];

		c->records = 0;
		c->bytes = 0;
		/* Its reader waits for a record between passes, so the
		 * buffer is ready before the first one (else on_staged()
		 * maps it). */
		if (c->index && !atomic_load(&c->done) && !c->stage.data)
			fy_stage_alloc(&c->stage, stage_size);
	}
	/* Connections that end from now on are not "dropped": the pool
	 * fails and the engine pauses. */
	p->data_done = true;
	atomic_store(&p->in_pass, false);
	atomic_store(&p->staged, true);
	pthread_mutex_unlock(&p->lock);
}

/**
 * fy_recv_pool_pc_counts() - what the data connections placed since the
 * switch to postcopy, and the first failure of any of them.
 */
int fy_recv_pool_pc_counts(struct fy_recv_pool *p, uint64_t *records,
			   uint64_t *bytes, char *err, size_t errlen)
{
	int rc;

	*records = 0;
	*bytes = 0;
	if (!p->started)
		return 0;
	pthread_mutex_lock(&p->lock);
	*records = p->records;
	*bytes = p->bytes;
	rc = pool_err_locked(p, err, errlen);
	pthread_mutex_unlock(&p->lock);
	fy_recv_pool_log(p);
	return rc;
}

/**
 * fy_recv_pool_wire() - the bytes the data connections have read so far
 * (any thread): progress that a record still on its way shows too.
 */
uint64_t fy_recv_pool_wire(struct fy_recv_pool *p)
{
	uint64_t n = 0;

	if (!p->started)
		return 0;
	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < p->n; i++)
		n += atomic_load(&p->chans[i]->ch.rx.wire_bytes);
	pthread_mutex_unlock(&p->lock);
	return n;
}

/**
 * fy_recv_pool_wait() - sleep until a data connection reports progress or
 * a failure, or @ms pass.
 */
void fy_recv_pool_wait(struct fy_recv_pool *p, int ms)
{
	if (!p->started) {
		struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

		nanosleep(&ts, NULL);
		return;
	}
	pthread_mutex_lock(&p->lock);
	cond_wait_ms(&p->cv, &p->lock, ms);
	pthread_mutex_unlock(&p->lock);
}
