/* SPDX-License-Identifier: MIT */
/*
 * channels.h - memory over several connections: the source's worker pool
 * fed by one shared bounded queue, and the destination's acceptor and
 * readers of extra data connections.
 */
#ifndef FY_CHANNELS_H
#define FY_CHANNELS_H

#include "migrate/engine.h"

struct fy_lazy;

/* How often the thread driving a pass reports progress while the
 * workers send. */
#define FY_POOL_TICK_MS 50
/* How long a new connection may take, in all, to present JOIN. */
#define FY_JOIN_WAIT_MS 5000
/* Connections that have not joined yet, at most, at once: a flood of
 * strangers evicts its own oldest instead of keeping the source out. */
#define FY_MAX_PENDING 16
/* Room for every joined connection, the pending ones, and evicted ones
 * whose reader has not ended yet. */
#define FY_RECV_SLOTS (FY_MAX_CHANNELS + 2 * FY_MAX_PENDING)
/* Dropped strangers the log hears about in detail, between two reads. */
#define FY_STRANGER_NOTES 8

/* Most pieces one connection takes at once: a pass of scattered pages is
 * taken many pages per lock round trip, and they leave in one batch. */
#define FY_JOB_PIECES 64

/* A connection's next piece of work: one whole chunk, or up to a chunk's
 * worth of smaller ranges. */
struct fy_job {
	unsigned n;
	uint64_t bytes;
	struct fy_range piece[FY_JOB_PIECES];
};

struct fy_send_pool;
struct worker_arg {
	struct fy_send_pool *pool;
	unsigned idx;
};

/* One connection's part of the current pass, on the source. */
struct fy_send_conn {
	bool dead;		/* broke: takes no more chunks */
	bool logged;		/* its end was reported to the log */
	int why;		/* the error it broke with */
	uint64_t records, bytes; /* handed to its socket in this pass */
	struct fy_ranges taken;	/* every chunk it took in this pass */
};

struct fy_send_pool {
	ferry_session *s;
	struct fy_chan *chans[FY_MAX_CHANNELS]; /* [i] joined as index i */
	struct fy_send_conn conn[FY_MAX_CHANNELS];
	bool started;
	unsigned n, alive;
	pthread_t threads[FY_MAX_CHANNELS];
	struct worker_arg args[FY_MAX_CHANNELS];
	unsigned nthreads;
	pthread_mutex_t lock;
	pthread_cond_t more, idle;
	/* The work queue: the pass's ranges, taken a chunk at a time by the
	 * workers through one cursor (NULL: all taken, or between passes). */
	const struct fy_ranges *ranges;
	struct fy_chunk_cursor at;
	unsigned active;	/* workers sending a chunk */
	/* Chunks of connections that broke in this pass, sent again first. */
	struct fy_ranges redo;
	struct fy_chunk_cursor redo_at;
	uint64_t redo_left;	/* bytes of redo not taken yet */
	uint32_t chunk;
	bool closing;
	bool csum;
	int err;
	unsigned err_chan;
};

int fy_send_pool_start(struct fy_send_pool *p, ferry_session *s,
		       struct fy_chan *const *chans, unsigned n);
/* A pass that may end early: now() sees the bytes sent so far in it. */
struct fy_pass_stop {
	bool (*now)(void *opaque, uint64_t sent);
	void *opaque;
	struct fy_ranges *rest; /* receives what was not sent */
};
int fy_send_pool_pass(struct fy_send_pool *p, const struct fy_ranges *ranges,
		      uint32_t chunk, bool csum, struct fy_pass_end *pe,
		      unsigned *chan, const struct fy_pass_stop *stop);
int fy_send_pool_lost(struct fy_send_pool *p, uint32_t index,
		      struct fy_ranges *again);
void fy_send_pool_stop(struct fy_send_pool *p);

struct fy_recv_pool;
struct rx_chan {
	struct fy_chan ch;
	pthread_t thread;
	struct fy_recv_pool *pool;
	uint32_t index; /* from JOIN, 0 until then */
	uint64_t since_ns; /* accepted at: JOIN is due FY_JOIN_WAIT_MS later */
	bool evicted;	/* not joined in time, or pushed out by newer ones */
	const char *why; /* why its JOIN was refused, for the log */
	uint64_t records, bytes; /* applied in this pass */
	int broke;	/* the connection broke (an fy_conn_broke() code) */
	bool logged;	/* its end was reported to the log */
	atomic_bool done; /* the worker ended: applies nothing any more */
	struct fy_bulk stage; /* postcopy: where a record is verified */
	char tls_err[256];    /* why its TLS handshake failed */
};

struct fy_recv_pool {
	ferry_session *s;
	int lfd;
	int main_fd;
	bool started;
	pthread_t acceptor;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	struct rx_chan *chans[FY_RECV_SLOTS];
	unsigned n;
	uint32_t channels; /* from the first JOIN: the source's connections */
	/* Connections dropped before joining, for the log (flushed on the
	 * session's thread by fy_recv_pool_log()). */
	atomic_uint nnotes;
	unsigned notes_lost;
	char notes[FY_STRANGER_NOTES][160];
	unsigned dropped; /* joined connections that broke mid-migration */
	bool data_done;	  /* the final pass is complete: drops no longer count */
	atomic_bool stop;
	atomic_bool in_pass;
	bool have_session;
	uint64_t session_id;
	uint8_t token[16];
	uint64_t records, bytes; /* this pass, extra connections only */
	/* Postcopy (fy_recv_pool_postcopy()): MEMORY is staged, verified
	 * and placed through the lazy loader; records and bytes count since
	 * the switch, and every connection is essential. */
	atomic_bool staged;
	struct fy_lazy *lazy;
	const uint64_t *units; /* per region, as fy_stage.units */
	size_t stage_size;
	int err;
	char errmsg[384];
};

int fy_recv_pool_start(struct fy_recv_pool *p, ferry_session *s, int lfd,
		       int main_fd);
void fy_recv_pool_set_session(struct fy_recv_pool *p, uint64_t id,
			      const uint8_t token[16]);
void fy_recv_pool_begin_pass(struct fy_recv_pool *p);
int fy_recv_pool_end_pass_conns(struct fy_recv_pool *p,
				const struct fy_pass_end *e,
				struct fy_pass_ack *ack, char *err,
				size_t errlen);
void fy_recv_pool_data_done(struct fy_recv_pool *p);
void fy_recv_pool_log(struct fy_recv_pool *p);
int fy_recv_pool_error(struct fy_recv_pool *p, char *err, size_t errlen);
unsigned fy_recv_pool_channels(struct fy_recv_pool *p);
void fy_recv_pool_close_door(struct fy_recv_pool *p);
/* A postcopy staging buffer of @size bytes: transparent huge pages, or
 * plain ones (never the hugetlb pool: it is sized for the largest record
 * and only its first 4 MiB, and what larger records use, are resident). */
int fy_stage_alloc(struct fy_bulk *b, size_t size);
/*
 * fy_recv_pool_postcopy() - from now on MEMORY on the data connections is
 * received staged (a buffer of @stage_size bytes per connection, verified
 * whole) and placed with fy_lazy_place() on @l, whole @units; counts
 * start again at zero; a connection that breaks fails the pool (in
 * postcopy every connection is essential). @channels: the number of
 * connections a JOIN must name (0: the first JOIN's, as at the start).
 */
void fy_recv_pool_postcopy(struct fy_recv_pool *p, struct fy_lazy *l,
			   const uint64_t *units, size_t stage_size,
			   uint32_t channels);
/* Records and page bytes the data connections placed since the switch;
 * the first failure (0 if none, message in @err). */
/* Bytes the data connections have read so far (any thread). */
uint64_t fy_recv_pool_wire(struct fy_recv_pool *p);
int fy_recv_pool_pc_counts(struct fy_recv_pool *p, uint64_t *records,
			   uint64_t *bytes, char *err, size_t errlen);
/* Sleep until a data connection makes progress or fails, at most @ms. */
void fy_recv_pool_wait(struct fy_recv_pool *p, int ms);
void fy_recv_pool_stop(struct fy_recv_pool *p);

#endif /* FY_CHANNELS_H */
