/* SPDX-License-Identifier: MIT */
/*
 * channels.h - memory over several connections: the source's worker pool
 * fed by one shared bounded queue, and the destination's acceptor and
 * readers of extra data connections.
 */
#ifndef FY_CHANNELS_H
#define FY_CHANNELS_H

#include "migrate/engine.h"

/* Chunks queued ahead of the workers: enough to keep every connection
 * busy, small enough that a slow connection cannot hoard work. */
#define FY_QUEUE_LEN 64
/* How long a new data connection may take to present JOIN. */
#define FY_JOIN_WAIT_MS 5000

struct fy_job {
	const struct fy_region *reg;
	uint32_t region;
	uint64_t offset;
	uint64_t length;
};

struct fy_send_pool;
struct worker_arg {
	struct fy_send_pool *pool;
	unsigned idx;
};

struct fy_send_pool {
	ferry_session *s;
	struct fy_chan *chans[FY_MAX_CHANNELS]; /* [0] is the main one */
	bool started;
	unsigned n;
	pthread_t threads[FY_MAX_CHANNELS];
	struct worker_arg args[FY_MAX_CHANNELS];
	unsigned nthreads;
	pthread_mutex_t lock;
	pthread_cond_t more, space, idle;
	struct fy_job q[FY_QUEUE_LEN];
	unsigned head, count, active;
	bool closing;
	bool csum;
	int err;
	unsigned err_chan;
	uint64_t records, bytes;		/* this pass */
};

int fy_send_pool_start(struct fy_send_pool *p, ferry_session *s,
		       struct fy_chan *const *chans, unsigned n);
int fy_send_pool_pass(struct fy_send_pool *p, const struct fy_ranges *ranges,
		      uint32_t chunk, bool csum, uint64_t *records,
		      uint64_t *bytes, unsigned *chan);
void fy_send_pool_stop(struct fy_send_pool *p);

struct fy_recv_pool;
struct rx_chan {
	struct fy_chan ch;
	pthread_t thread;
	struct fy_recv_pool *pool;
	uint32_t index; /* from JOIN */
	atomic_bool done; /* the worker ended: the acceptor may reap it */
};

struct fy_recv_pool {
	ferry_session *s;
	int lfd;
	int main_fd;
	bool started;
	pthread_t acceptor;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	struct rx_chan *chans[FY_MAX_CHANNELS];
	unsigned n;
	unsigned joined_ended; /* joined connections already reaped */
	atomic_bool stop;
	atomic_bool in_pass;
	bool have_session;
	uint64_t session_id;
	uint8_t token[16];
	uint64_t records, bytes; /* this pass, extra connections only */
	int err;
	char errmsg[384];
};

int fy_recv_pool_start(struct fy_recv_pool *p, ferry_session *s, int lfd,
		       int main_fd);
void fy_recv_pool_set_session(struct fy_recv_pool *p, uint64_t id,
			      const uint8_t token[16]);
void fy_recv_pool_begin_pass(struct fy_recv_pool *p);
int fy_recv_pool_end_pass(struct fy_recv_pool *p, uint64_t records,
			  uint64_t bytes, char *err, size_t errlen);
int fy_recv_pool_error(struct fy_recv_pool *p, char *err, size_t errlen);
unsigned fy_recv_pool_channels(struct fy_recv_pool *p);
void fy_recv_pool_close_door(struct fy_recv_pool *p);
void fy_recv_pool_stop(struct fy_recv_pool *p);

#endif /* FY_CHANNELS_H */
