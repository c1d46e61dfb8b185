/* SPDX-License-Identifier: MIT */
/*
 * engine.h - internals shared by the engine's files: the session object,
 * channels (record I/O on one connection) and the helpers the sender and
 * receiver both use.
 */
#ifndef FY_ENGINE_H
#define FY_ENGINE_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "ferry.h"
#include "memory/memory.h"
#include "transport/transport.h"
#include "transport/tls.h"
#include "wire/wire.h"

/* The public buffer type is the wire layer's growable buffer. */
struct ferry_buf {
	struct fy_buf b;
};

/* How often blocked socket calls come back to look at the cancel flag. */
#define FY_TICK_MS 100
/* How long the source tries to tell a failing destination why (ABORT). */
#define FY_ABORT_WAIT_MS 1000
/* Most data connections of one session. */
#define FY_MAX_CHANNELS 64
/* Chunks in flight per connection (ferry_config.window): the default, the
 * default when both ends share the host, and the most a config may ask
 * for. The defaults are measured, see docs/design-notes.md ("The window,
 * measured"). */
#define FY_DEFAULT_WINDOW 2
#define FY_LOCAL_WINDOW 1
#define FY_MAX_WINDOW 64

struct ferry_session {
	struct ferry_config cfg;
	struct ferry_vmm_ops ops;
	struct fy_region regions[FY_MAX_REGIONS];
	size_t nregions;
	uint64_t ram_bytes;

	atomic_bool cancel;
	atomic_bool busy; /* a send or receive is running */

	pthread_mutex_t lock; /* protects stats and errmsg */
	struct ferry_stats stats;
	char errmsg[512];
	char record_path[4096]; /* cfg.record_stream, copied */
	/* cfg.congestion_control, copied */
	char cc_name[FERRY_CONGESTION_CONTROL_MAX + 1];
	/* Bulk buffers mapped in this run, by kind, for the debug log. */
	atomic_uint bulk_count[FY_BULK_KINDS];
	atomic_ullong bulk_bytes;
	uint64_t t_start_ns;
	uint64_t t_progress_ns; /* last progress event */
	bool total_fixed;	/* stats.total_ms is final (postcopy: to the
				   destination's last page), under lock */
	uint64_t pace_next_ns;	/* cfg.max_bandwidth: when the link is free */
	/* A lazy restore stopped on a damaged page: kept so that vCPUs
	 * blocked on missing pages stay blocked; freed with the session. */
	struct fy_lazy *lazy;

	/* Postcopy, driven from other threads (ferry_session_postcopy(),
	 * _recover(), _force_resume(), _cancel()); see fy_session_pc_*(). */
	atomic_bool pc_source;	   /* a send runs (may be asked to switch) */
	atomic_int pc_avail;	   /* after HELLO: 1 usable, -1 not, 0 unknown */
	atomic_bool pc_now;	   /* switch now: cut the running pass */
	atomic_bool pc_stopped;	   /* the source paused for its switchover */
	atomic_bool transitioned;  /* past POSTCOPY: cancel is ignored */
	atomic_bool released;	   /* RELEASED goes out: cancel is ignored */
	pthread_cond_t pc_cv;	   /* with lock: a recover or force arrived */
	bool pc_paused;		   /* a run waits in postcopy-paused */
	bool pc_force;		   /* ferry_session_force_resume() */
	char pc_uri[FERRY_URI_MAX]; /* ferry_session_recover()'s, "" = none */
	char pc_why[128];	   /* why postcopy is not usable (pc_avail -1) */

	/* The bounded pause (fy_session_pause_arm()): a watchdog thread,
	 * started before the pause and kept to the end of the run. */
	pthread_mutex_t pw_lock;
	pthread_cond_t pw_cv;	   /* CLOCK_MONOTONIC */
	pthread_t pw_thread;
	bool pw_running, pw_quit;  /* the thread exists; it must end */
	bool pw_armed, pw_expired;
	/* An expiry is failing the session (pause_expired()): a disarm waits
	 * for it, so that the run's message is set before anyone reads it. */
	bool pw_firing;
	uint64_t pw_deadline_ns;
	uint32_t pw_ms;
	/* TLS: the config's strings, copied (tls.* point into tls_str),
	 * and the credentials of each role, read once per run (under lock). */
	struct fy_tls_config tls;
	char *tls_str[8];
	struct fy_tls_creds *tls_creds[2]; /* [0] client, [1] server */
};

/* cfg.max_pause_ms as it applies: 0 is 4 x the downtime limit, at least
 * 2 s, and at least 3 x @expect_ms, the pause predicted when it began (a
 * switchover forced by the timeout strategy predicts more than the
 * limit, and the operator asked for it). */
uint32_t fy_max_pause_ms(const struct ferry_config *cfg, double expect_ms);
/*
 * The guest was paused for a handover: unless disarmed within
 * fy_max_pause_ms(), the session fails with FERRY_ETIMEOUT (saying how
 * long the guest was paused and where the run was) and is cancelled, so
 * that the source unwinds and resumes its guest. Armed at most once per
 * run; a failure to start the watchdog leaves the pause unbounded (and is
 * logged).
 */
void fy_session_pause_arm(ferry_session *s);
/* Stop the watchdog (nothing if not armed); it does not wait for the
 * thread. Return: true if the pause had already expired (the session
 * failed; the caller must not go on). */
bool fy_session_pause_disarm(ferry_session *s);
/* Start the watchdog's thread ahead of the pause (a run that may pause
 * calls it while the guest still runs), so that arming and disarming it
 * in the pause are a signal each, not a thread's creation and join. A
 * failure is left to fy_session_pause_arm(), which tries again. */
void fy_session_pause_prepare(ferry_session *s);
/* Disarm and end the thread (the run is over). */
void fy_session_pause_retire(ferry_session *s);

/* Words of a zero map for the largest record body. */
#define FY_ZMAP_WORDS ((FY_REC_MAX_BODY / 4096 + 63) / 64)

/* The sending direction of a connection: touched only by the thread that
 * sends on it. */
struct fy_chan_tx {
	struct fy_csum csum;
	struct fy_buf out;	/* a control record, encoded */
	_Atomic uint64_t wire_bytes; /* written; read by any thread */
	int tee_fd;	/* --record-stream: a copy of what is sent, or -1 */
	/* Memory encoding: set after negotiation, before the first send. */
	bool zero_pages;	    /* send zero pages as a map */
	struct fy_codec *codec;	    /* compress with it, or NULL */
	/* Scratch of a chunk's size, mapped once (on huge pages if any): */
	struct fy_bulk gather;	    /* non-zero pages, contiguous */
	struct fy_bulk packed;	    /* compressed payload */
	uint64_t zmap[FY_ZMAP_WORDS];
	/* Small memory records not handed to the socket yet. */
	struct fy_batch *batch;
	/* Large runs of guest pages are spliced to the socket, by reference,
	 * through this pipe (opened on first use, else -1) while splice is
	 * set, unless the kernel refused once (splice_failed). */
	int pipe[2];
	bool splice, splice_failed;
	/* Postcopy's urgent lane: its bytes go before what other
	 * connections booked on a capped link (fy_session_pace_urgent). */
	bool urgent;
	/* How long a write may wait for room, in ms; 0 = the stall limit. */
	int limit_ms;
	/* The last write that made progress (any thread reads it), and how
	 * long the peer had taken nothing when a write gave up. */
	_Atomic uint64_t last_tx_ns;
	_Atomic uint64_t stall_ns; /* the keeper's writes may set it too */
};

/* The receiving direction: touched only by the thread that receives. */
struct fy_chan_rx {
	struct fy_csum csum;
	struct fy_buf in;	/* received control bodies */
	_Atomic uint64_t wire_bytes; /* read; read by any thread */
	uint64_t last_rx_ns;
	_Atomic uint64_t stall_ns; /* silence when a read gave up (-ETIMEDOUT);
				      atomic for tick()'s sake */
	bool eof;		/* the peer ended its stream (a FIN, not a reset) */
	struct fy_codec *dcodec[3]; /* one per kind, on demand */
	struct fy_bulk gather;	    /* unpacked pages */
	struct fy_bulk packed;	    /* compressed payload */
	uint64_t zmap[FY_ZMAP_WORDS];
	/* Read ahead: bytes received past what a read asked for. */
	uint8_t *rbuf;
	uint32_t rpos, rlen;
	bool after_bulk; /* the socket was last read for page data, or for
			  * framing since then */
	int lowat;	/* SO_RCVLOWAT as last set (0: the default, 1) */
	/* A destination's UNIX main connection where local-fds may come:
	 * reads take descriptors into @fds (SCM_RIGHTS); elsewhere the
	 * kernel drops any that arrive. fy_chan_close() closes those left. */
	bool take_fds;
	struct fy_fd_stash fds;
};

/*
 * A connection carrying records. Each direction has its own state
 * (checksum, buffers, read-ahead, byte count), so one thread may send on
 * it while another receives: at most one sender and one receiver at a
 * time. The socket and the session are shared; the kernel takes a send
 * and a receive on one socket at once, and what the session is asked
 * (pacing, the cancel flag, buffer counts) is safe from any thread.
 * Opening, fy_chan_prepare() and fy_chan_close() need both directions
 * idle. A failure in one direction leaves the other's state as it was:
 * after a send failed, the receiving side can still read the peer's
 * ERROR that explains it.
 */
struct fy_chan {
	ferry_session *s;
	int fd;
	bool is_file;	/* a snapshot file: plain read/write, no answers */
	struct fy_chan_tx tx;
	struct fy_chan_rx rx;
	/* TLS on this connection (fy_chan_secure()), or NULL: every byte
	 * goes through it. */
	struct fy_tls *tls;
	int tls_rx_limit_ms; /* the running read's idle limit */
	/* The stall limit on this connection (ms): the session's. */
	int idle_ms;
	/* How long a wait for the peer's next record (an answer, the next
	 * request) may last: idle_ms, or, once HELLO showed that the peer
	 * sends no keep-alives, FY_QUIET_PEER_MS if that is longer. */
	int answer_ms;
	/* A keep-alive writer shares the sending direction: each record is
	 * written under tx_mu (fy_chan_share_tx()). */
	pthread_mutex_t tx_mu;
	bool tx_shared;
	/* TCP_USER_TIMEOUT and keepalive, set by fy_chan_init(): 0, 1 when
	 * the socket is not TCP, or the setsockopt() error and the option
	 * it refused (fy_chan_log_watch() tells the log). */
	int watch_rc;
	const char *watch_failed;
};

/* Count @n more bytes on a direction: one writer, readers anywhere. */
static inline void fy_chan_count(_Atomic uint64_t *at, uint64_t n)
{
	atomic_store_explicit(at,
			      atomic_load_explicit(at, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

/* Bytes the connection carried, both directions (any thread). */
static inline uint64_t fy_chan_wire_bytes(const struct fy_chan *c)
{
	return atomic_load_explicit(&c->tx.wire_bytes, memory_order_relaxed) +
	       atomic_load_explicit(&c->rx.wire_bytes, memory_order_relaxed);
}

/* Bytes one memory record of @chunk page bytes takes on the wire at most:
 * headers, a full zero map, padding and trailer. */
static inline size_t fy_chunk_wire_size(uint32_t chunk)
{
	return FY_REC_HDR_SIZE + FY_MEM_HDR_SIZE +
	       (chunk / FY_PAGE_SIZE + 63) / 64 * 8 + chunk +
	       FY_REC_TRAILER_SIZE;
}

/*
 * Did an I/O error end the connection itself (the peer went away, the
 * link broke or stayed silent too long), rather than the bytes on it? On
 * an extra data connection such an error costs only that connection.
 */
static inline bool fy_conn_broke(int rc)
{
	switch (rc) {
	case -ECONNRESET:
	case -ECONNABORTED:
	case -EPIPE:
	case -ETIMEDOUT:
	case -ENOTCONN:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
	case -ENETDOWN:
	case -EHOSTDOWN:
		return true;
	default:
		return false;
	}
}

/* The stall limit in force: cfg.stall_timeout_ms with its default. */
static inline int fy_stall_ms(const ferry_session *s)
{
	return s->cfg.stall_timeout_ms ? (int)s->cfg.stall_timeout_ms
				       : FERRY_STALL_TIMEOUT_MS;
}

uint64_t fy_now_ns(void);
/* This boot's id, "" if unknown: equal ids mean a shared monotonic clock. */
void fy_read_boot_id(char *out, size_t len);
static inline double fy_ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

/* session.c */
int fy_session_begin(ferry_session *s, enum ferry_state first,
		     enum ferry_owner owner);
int fy_session_end(ferry_session *s, int rc);
void fy_session_set_state(ferry_session *s, enum ferry_state st);
/* Who may run the guest now (enum fy_owner's values): stats and, when it
 * changes, FERRY_EVENT_OWNER. */
void fy_session_set_owner(ferry_session *s, enum ferry_owner owner);
/* Record the first error (later ones keep the first message). Returns
 * @code for convenience. printf-style message. */
int fy_session_check_role(ferry_session *s, bool source);
int fy_ops_copy(struct ferry_vmm_ops *dst, const struct ferry_vmm_ops *src,
		char *err, size_t errlen);
int fy_session_fail(ferry_session *s, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void fy_session_clear_error(ferry_session *s);
/* A VMM callback (@what, "save_state") failed with @rc: FERRY_EVMM, with
 * the VMM's own detail (ops->errmsg) in the message. */
int fy_session_vmm_fail(ferry_session *s, int rc, const char *what);
void fy_session_log(ferry_session *s, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void fy_session_event(ferry_session *s, enum ferry_event_kind kind);
/* Add memory bytes moved (any thread). */
void fy_session_count_bytes(ferry_session *s, uint64_t n);
/* Wait until @bytes may go out under cfg.max_bandwidth (any thread). */
int fy_session_pace(ferry_session *s, uint64_t bytes);
/* Book @bytes without waiting: they go first (any thread). */
void fy_session_pace_urgent(ferry_session *s, uint64_t bytes);
/* Emit a progress event if the period has passed. */
void fy_session_progress(ferry_session *s);
/*
 * Postcopy-paused: publish the state, then wait until an operator calls
 * ferry_session_recover() (0, its URI in @uri) or, on a source,
 * ferry_session_force_resume() (FERRY_EPOSTCOPY). There is no timeout:
 * the guest's memory is split between the two sides and only an operator
 * may decide. A cancel does not end the wait. @tick (may be NULL) runs
 * about once a second meanwhile, without the session's lock.
 */
int fy_session_pc_wait(ferry_session *s, char *uri, size_t len,
		       void (*tick)(void *opaque), void *opaque);
/* The run has passed the transition: cancels are ignored from now on. */
void fy_session_pc_transitioned(ferry_session *s);
/*
 * A source is about to write RELEASED: from here the destination may run
 * the guest, so cancels are ignored (one that already came is dropped,
 * with a log line), and the wait for its answer is not cut short.
 */
void fy_session_releasing(ferry_session *s);
/* After HELLO on a source: whether postcopy can be used (@why: if not). */
void fy_session_pc_avail(ferry_session *s, bool yes, const char *why);
static inline bool fy_cancelled(ferry_session *s)
{
	/* A cancel that slipped in while RELEASED was being marked (see
	 * ferry_session_cancel()) must not cut the wait for the answer. */
	return atomic_load_explicit(&s->cancel, memory_order_relaxed) &&
	       !atomic_load_explicit(&s->released, memory_order_relaxed);
}

/* config.c */
void fy_tls_config_from(struct fy_tls_config *t, const struct ferry_config *cfg);

/* How long a TLS handshake (with the peer's checks) may take. */
#define FY_TLS_HANDSHAKE_MS 10000
/* The run's credentials for one role, read on first use. 0 or a
 * negative code with the path and reason in @err. */
int fy_session_tls_creds(ferry_session *s, bool server,
			 struct fy_tls_creds **out, char *err, size_t len);

/* chan.c */
void fy_chan_clear(struct fy_chan *c);
/*
 * fy_chan_secure() - when the session has TLS credentials, run the
 * handshake on @c (@server: the accepting side) before anything else is
 * read or written on it; a plaintext ferry peer hears why in an ERROR
 * record. 0 (also without TLS, and for files), or a negative code with
 * the cause in @err.
 */
int fy_chan_secure(struct fy_chan *c, bool server, char *err, size_t len);
int fy_chan_init(struct fy_chan *c, ferry_session *s, int fd);
/* Sender, after the encoding is set: map the scratch buffers it needs, at
 * their full size, so that no chunk allocates. */
int fy_chan_prepare(struct fy_chan *c);
void fy_chan_close(struct fy_chan *c);
int fy_chan_write_all(struct fy_chan *c, struct iovec *iov, int n);
int fy_chan_flush(struct fy_chan *c);
int fy_chan_read_full(struct fy_chan *c, void *buf, size_t n);
int fy_chan_read_within(struct fy_chan *c, void *buf, size_t n, int idle_ms);
int fy_chan_send_rec(struct fy_chan *c, uint32_t type, uint32_t seq,
		     const void *body, size_t len);
/* A control record with @fds (1..FY_DEVFDS_MAX + a few) attached, at
 * most FY_FDS_PER_MSG per segment of it; the connection must be a UNIX
 * socket. The caller keeps its fds. */
int fy_chan_send_rec_fds(struct fy_chan *c, uint32_t type, uint32_t seq,
			 const void *body, size_t len, const int *fds,
			 unsigned nfds);
int fy_chan_send_mem(struct fy_chan *c, const struct fy_region *r,
		     const struct fy_mem_hdr *m, bool csum_data);
int fy_chan_recv_hdr(struct fy_chan *c, struct fy_rec_hdr *h, int idle_ms);
/* Read a control body into c->rx.in (bounded), padding and trailer, and
 * verify the checksum. */
int fy_chan_recv_body(struct fy_chan *c, const struct fy_rec_hdr *h);
/* Read a memory record body straight into guest memory after validating
 * the range against @regions. @m receives the header. */
int fy_chan_recv_mem(struct fy_chan *c, const struct fy_rec_hdr *h,
		     const struct fy_region *regions, size_t nregions,
		     struct fy_mem_hdr *m, char *err, size_t errlen);
/* Where a staged memory record goes (fy_chan_recv_staged()): @buf is
 * page-aligned and @size a page multiple, at least the largest record's
 * memory; place() gets a verified record's pages, as fy_lazy_place()
 * takes them, and returns 0 or a negative code. */
struct fy_stage {
	uint8_t *buf;
	size_t size;
	int (*place)(void *opaque, uint32_t region, uint64_t offset,
		     uint64_t len, const void *buf, const uint64_t *zero);
	void *opaque;
	/* Bytes placed at once in each region (2 MiB on hugetlb), or NULL
	 * for 4 KiB everywhere: a record that covers part of one cannot be
	 * placed atomically and is refused before it is read. */
	const uint64_t *units;
};
/* Receive a memory record into @st->buf, verify its checksum, and only
 * then hand its pages to @st->place(); guest memory is not written. */
int fy_chan_recv_staged(struct fy_chan *c, const struct fy_rec_hdr *h,
			const struct fy_region *regions, size_t nregions,
			const struct fy_stage *st, struct fy_mem_hdr *m,
			char *err, size_t errlen);
int fy_chan_skip_body(struct fy_chan *c, const struct fy_rec_hdr *h);
/* A peer without FERRY_CAP_KEEPALIVE may be silent this long while it
 * works on an answer (the fixed limit of older versions). */
#define FY_QUIET_PEER_MS 60000
/* After HELLO: does the peer send KEEPALIVE while busy? Sets answer_ms. */
void fy_chan_peer_keeps(struct fy_chan *c, bool keeps);
/* From now on a keep-alive writer may write between this connection's
 * records (the owner's writes take tx_mu). Call while no write runs. */
void fy_chan_share_tx(struct fy_chan *c);
/* Write the encoded KEEPALIVE record @rec unless a record is being
 * written (then it is not needed) or @held is set. 0, or the write's
 * error (a record written in part has the connection shut down). Any
 * thread. */
int fy_chan_send_keepalive(struct fy_chan *c, const struct fy_buf *rec,
			   const atomic_bool *held);

/* keepalive.c: a thread that keeps the main connection from falling
 * silent while its side is busy (FERRY_CAP_KEEPALIVE). */
struct fy_keeper {
	struct fy_chan *c;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cv; /* CLOCK_MONOTONIC */
	bool running, stop;
	atomic_bool held;  /* send nothing: the peer is not listening */
	uint32_t every_ms;
	_Atomic uint64_t rounds; /* times its thread woke (tests) */
	struct fy_buf rec;
};
/* Start sending KEEPALIVE on @c whenever it wrote nothing for a quarter
 * of the shortest stall limit (125 ms). 0, or a negative errno (logged; the run goes on
 * without: only the peer's patience is at stake). Session thread. */
int fy_keeper_start(struct fy_keeper *k, struct fy_chan *c);
/* Stop it and wait until it has (nothing when not running). */
void fy_keeper_stop(struct fy_keeper *k);
/* Hold it for good and return once no keep-alive can go out any more (one
 * being written has gone out whole), without waiting for its thread to
 * run: the sender's last record must be the last bytes it sends, and
 * waking the thread to join it cost milliseconds of the pause on a busy
 * host. fy_keeper_stop() still ends the thread. Session thread. */
void fy_keeper_quiet(struct fy_keeper *k);
/*
 * Hold the keeper (@held: it sends nothing) or let it go on; it keeps
 * running. Set before fy_keeper_start() to start it held. Any thread; a
 * keep-alive being written as the hold comes still goes out whole.
 */
static inline void fy_keeper_hold(struct fy_keeper *k, bool held)
{
	atomic_store_explicit(&k->held, held, memory_order_relaxed);
}

/* Log, on the session's thread, what fy_chan_init() could not set on a
 * TCP connection (TCP_USER_TIMEOUT, keepalive); @what names it. */
void fy_chan_log_watch(struct fy_chan *c, const char *what);
/*
 * fy_chan_stalled() - after a read or write on @c failed with -ETIMEDOUT,
 * say how long the peer (@peer, "the destination") had been silent, or
 * had taken nothing, in @buf: "the destination sent nothing for 10.0 s
 * (the stall limit, --stall-timeout-ms 10000)". Return: the silence in ns.
 */
uint64_t fy_chan_stalled(struct fy_chan *c, const char *peer, char *buf,
			 size_t len);
/* Fail the session with FERRY_ETIMEOUT for a stall of @silent_ns
 * (stats.stall_detect_ms), the message "@what: @why". */
int fy_session_stall_fail(ferry_session *s, uint64_t silent_ns,
			  const char *what, const char *why);
/* Send an ERROR (or ABORT) record carrying @code and @msg; best effort. */
void fy_chan_send_error(struct fy_chan *c, uint32_t type, uint32_t seq,
			int code, const char *msg);

#endif /* FY_ENGINE_H */
