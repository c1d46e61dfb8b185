// SPDX-License-Identifier: MIT
/*
 * keepalive.c - the keeper: while its side works on something long (a
 * VMM callback, a dirty scan, a wait for the bandwidth cap, a pass
 * barrier), a thread writes KEEPALIVE records on the main connection
 * whenever nothing else went out there for FY_KEEP_EVERY_MS.
 * The peer's limit on silence then only ever catches a peer that cannot
 * write at all (frozen, or cut off), never a busy one. Negotiated
 * (FERRY_CAP_KEEPALIVE); see docs/stream-format.md, "KEEPALIVE".
 *
 * The keeper never calls into the VMM (no log callback either: those
 * belong to the session's thread); a write that fails ends it quietly and
 * the session's own reads and writes find the broken connection.
 */
#include <errno.h>
#include <time.h>

#include "migrate/engine.h"

/*
 * The period: a quarter of the shortest stall limit any peer may have.
 * The limit that matters is the peer's, which this side does not know:
 * at this period every peer hears from it at least four times within its
 * limit, leaving room for a late timer or a busy CPU. It costs 24 bytes
 * per period, and only while nothing else is written.
 */
#define FY_KEEP_EVERY_MS (FERRY_STALL_TIMEOUT_MIN_MS / 4)

static void *keeper_main(void *arg)
{
	struct fy_keeper *k = arg;
	uint64_t every = (uint64_t)k->every_ms * 1000000ull;

	pthread_mutex_lock(&k->lock);
	while (!k->stop) {
		uint64_t now = fy_now_ns(),
			 last = atomic_load(&k->c->tx.last_tx_ns), next;
		struct timespec ts;

		atomic_fetch_add_explicit(&k->rounds, 1, memory_order_relaxed);

		if (now > last && now - last >= every &&
		    !atomic_load_explicit(&k->held, memory_order_relaxed)) {
			int rc;

			pthread_mutex_unlock(&k->lock);
			rc = fy_chan_send_keepalive(k->c, &k->rec, &k->held);
			pthread_mutex_lock(&k->lock);
			if (rc)
				break;
			last = atomic_load(&k->c->tx.last_tx_ns);
			if (last < now)
				last = now; /* a record is going out: later */
		}
		next = last + every;
		/* Held, it writes nothing however old the last write is:
		 * look again a period from now, rather than wait for a
		 * deadline already past, which returns at once (a loop that
		 * took a quarter of a core all through a destination's
		 * passes, when the keeper is held). */
		if (next <= now)
			next = now + every;
		ts.tv_sec = (time_t)(next / 1000000000ull);
		ts.tv_nsec = (long)(next % 1000000000ull);
		if (!k->stop)
			pthread_cond_timedwait(&k->cv, &k->lock, &ts);
	}
	pthread_mutex_unlock(&k->lock);
	return NULL;
}

/**
 * fy_keeper_start() - see engine.h.
 */
int fy_keeper_start(struct fy_keeper *k, struct fy_chan *c)
{
	pthread_condattr_t ca;
	int rc;

	if (k->running)
		return 0;
	k->c = c;
	k->stop = false;
	k->every_ms = FY_KEEP_EVERY_MS;
	fy_buf_init(&k->rec);
	{
		struct fy_buf body;

		fy_buf_init(&body);
		rc = fy_keepalive_encode(&body, k->every_ms);
		if (!rc)
			rc = fy_rec_encode(&k->rec, FY_REC_KEEPALIVE, 0, 0,
					   body.data, body.len);
		fy_buf_free(&body);
	}
	if (rc)
		goto fail;
	pthread_mutex_init(&k->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&k->cv, &ca);
	pthread_condattr_destroy(&ca);
	fy_chan_share_tx(c);
	rc = -pthread_create(&k->thread, NULL, keeper_main, k);
	if (rc) {
		pthread_cond_destroy(&k->cv);
		pthread_mutex_destroy(&k->lock);
		goto fail;
	}
	k->running = true;
	fy_session_log(c->s, 3, "keep-alive every %u ms on the main connection",
		       k->every_ms);
	return 0;
fail:
	fy_buf_free(&k->rec);
	fy_session_log(c->s, 1, "no keep-alive records (%s): a busy moment here may look like a stall to the peer",
		       ferry_strerror(rc));
	return rc;
}

/**
 * fy_keeper_quiet() - see engine.h. A keep-alive is written under the
 * connection's tx_mu, and fy_chan_send_keepalive() reads the hold under
 * it: once this side has had the lock after setting the hold, every
 * keep-alive is either out or never goes.
 */
void fy_keeper_quiet(struct fy_keeper *k)
{
	if (!k->running)
		return;
	atomic_store(&k->held, true);
	pthread_mutex_lock(&k->c->tx_mu);
	pthread_mutex_unlock(&k->c->tx_mu);
}

/**
 * fy_keeper_stop() - see engine.h.
 */
void fy_keeper_stop(struct fy_keeper *k)
{
	if (!k->running)
		return;
	pthread_mutex_lock(&k->lock);
	k->stop = true;
	pthread_cond_broadcast(&k->cv);
	pthread_mutex_unlock(&k->lock);
	pthread_join(k->thread, NULL);
	pthread_cond_destroy(&k->cv);
	pthread_mutex_destroy(&k->lock);
	fy_buf_free(&k->rec);
	k->running = false;
}
