// SPDX-License-Identifier: MIT
/*
 * chan.c - records over one connection: framing, checksums, and moving page
 * data between the socket and guest memory without a bounce buffer.
 *
 * Sockets are blocking with short send/receive timeouts (FY_TICK_MS), so a
 * stalled call comes back regularly to check the session's cancel flag and
 * the peer's idle limit without a poll() per record on the hot path.
 *
 * The two directions of a connection keep apart everything they change
 * (c->tx: checksum, encoding scratch, batch, splice pipe; c->rx: checksum,
 * read-ahead, unpacking scratch, zero map), so that one thread may send
 * while another receives, as a return path needs: the destination asks
 * for pages while the source's pages arrive. Two senders, or two
 * receivers, on one connection at once are not allowed.
 */
#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "migrate/engine.h"

static const uint8_t zero_pad[8];

/* Most iovecs of one memory record before its pages are gathered. */
#define FY_MAX_IOV 64

/*
 * Read ahead. Each read asks the kernel for more than it needs, so the
 * small pieces that follow (a trailer, the next record's headers, whole
 * small records) come from memory rather than from a system call each.
 * After a large read (page data, received straight into guest memory)
 * only a little is read ahead: enough for the trailer and the next
 * headers, without copying much of the next payload twice. A read is
 * large by what it asks for as a whole, so the last pieces of one do not
 * read ahead fully either. The framing between two records' pages (the
 * trailer, the next record header, memory header and zero map) is read
 * from the socket after a large read with only what that framing needs
 * ahead, since what follows it is most likely the next record's pages.
 * This holds until a read of anything else, or until a record with no
 * pages (all zero), whose framing is followed by more framing. All other
 * small reads read fully ahead, so the runs of a record whose pages
 * alternate with zero pages are read as before. (Over one connection
 * with 1 MiB records, the page data that went through this buffer and
 * was copied twice: 5.5 % before these rules, up to 0.5 % while a
 * trailer read still read fully ahead, 0.03 % now.)
 */
#define FY_RBUF_SIZE (64 * 1024)
#define FY_RBUF_BULK (16 * 1024)	/* a read this large is "large" */
#define FY_RBUF_AFTER_BULK 256
#define FY_RBUF_AFTER_HEADERS 1024 /* headers, a full zero map, a trailer */

/*
 * Wake-ups. A reader blocked in recvmsg() is woken, by default, by every
 * segment that arrives: on loopback that is every 64 KiB, and between two
 * processes each wake-up is a cross-CPU interrupt and a switch of address
 * space. While a large read waits for page data, the socket's low-water
 * mark (SO_RCVLOWAT) holds the wake-up back until this much has arrived;
 * for the small reads between it is lowered again.
 *
 * The mark is at most half of what the read still needs. A recvmsg()
 * that took part of what it needs and waits for the rest is woken only
 * once a whole mark's worth more has arrived, and it waits only while it
 * has taken less than the mark: so with a mark of up to half, what is
 * still to come always reaches the mark, and a read never waits for
 * bytes the peer has no reason to send yet.
 */
#define FY_RCVLOWAT_BULK (256 * 1024)

/*
 * Batches. Small memory records (a dirty page or a few) are gathered and
 * handed to the socket several per sendmsg(): a pass of scattered 4 KiB
 * pages otherwise costs a system call per page on the sender and a
 * wake-up per page on the receiver. The wire format is unchanged.
 */
#define FY_BATCH_RECS 64		/* records in a batch, at most */
#define FY_BATCH_BYTES (256 * 1024)	/* sent once it holds this much */
#define FY_BATCH_REC_MAX (64 * 1024)	/* larger records go alone */
/* iovecs one small record may need: head, map, a run per two pages, tail,
 * and the margin fy_chan_send_mem() keeps before it would gather (which a
 * batched record must never do: the gather buffer is reused) */
#define FY_BATCH_REC_IOV (4 + FY_BATCH_REC_MAX / FY_PAGE_SIZE / 2)
#define FY_BATCH_IOV (FY_BATCH_RECS * 4)

/*
 * Splicing. A large record's pages go to the socket by reference:
 * vmsplice() puts the guest's pages into a pipe and splice() hands them on
 * to the socket, whose buffers hold the pages until the receiver copies
 * them out. The sender copies nothing; between two processes on one
 * machine the receiver's copy is then the only one.
 *
 * The receiver gets a page as it is when the receiver copies it, which
 * may be newer than when it was handed over. That is sound: a guest write
 * after the dirty log was read is logged and sent again in the next pass,
 * and payloads are checksummed (csum_data) only while the guest is paused.
 * Small records, compressed ones and gathered ones (their buffers are
 * reused) are copied as before, and so is everything written to a file.
 *
 * The sender splices only while one connection carries the pass
 * (c->tx.splice): there its thread is the bottleneck and splicing lifts a
 * 2 GiB migration by about 30 %, while over several connections the
 * receiving side's CPU time doubled (docs/design-notes.md).
 */
#define FY_SPLICE_MIN (64 * 1024)

/* A record's own bytes around its pages: headers and trailer. */
struct fy_rec_meta {
	uint8_t head[FY_REC_HDR_SIZE + FY_MEM_HDR_SIZE];
	uint8_t tail[16];
	uint64_t zmap; /* a batched record's pages fit one map word */
};

struct fy_batch {
	struct iovec iov[FY_BATCH_IOV];
	int niov;
	unsigned nrec;
	size_t bytes;
	struct fy_rec_meta rec[FY_BATCH_RECS];
};

static void pipe_close(struct fy_chan *c)
{
	for (int i = 0; i < 2; i++) {
		if (c->tx.pipe[i] >= 0)
			close(c->tx.pipe[i]);
		c->tx.pipe[i] = -1;
	}
}

/*
 * Open the splicing pipe, a chunk's worth of pages if the kernel allows
 * (an unprivileged process is held to fs.pipe-max-size, 1 MiB by
 * default), else 1 MiB, else the default; a smaller pipe takes a chunk in
 * rounds.
 */
static bool pipe_open(struct fy_chan *c)
{
	if (c->tx.pipe[0] >= 0)
		return true;
	if (pipe2(c->tx.pipe, O_CLOEXEC)) {
		c->tx.splice_failed = true;
		return false;
	}
	if (fcntl(c->tx.pipe[1], F_SETPIPE_SZ, (int)c->s->cfg.chunk_bytes) < 0)
		fcntl(c->tx.pipe[1], F_SETPIPE_SZ, 1 << 20);
	return true;
}

/**
 * fy_chan_clear() - make @c an unopened channel: every descriptor -1,
 * nothing allocated, so that fy_chan_close() on it closes nothing (a
 * zeroed one would close descriptor 0).
 */
void fy_chan_clear(struct fy_chan *c)
{
	memset(c, 0, sizeof(*c));
	c->tx_mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
	c->fd = -1;
	c->tx.tee_fd = -1;
	c->tx.pipe[0] = c->tx.pipe[1] = -1;
}

/**
 * fy_chan_init() - wrap a connected socket: both directions idle, each
 * with its own checksum state and buffers.
 */
int fy_chan_init(struct fy_chan *c, ferry_session *s, int fd)
{
	int rc;

	fy_chan_clear(c);
	c->s = s;
	c->fd = fd;
	fy_buf_init(&c->tx.out);
	fy_buf_init(&c->rx.in);
	c->rx.last_rx_ns = fy_now_ns();
	atomic_store(&c->tx.last_tx_ns, c->rx.last_rx_ns);
	c->idle_ms = fy_stall_ms(s);
	c->answer_ms = c->idle_ms;
	/* Every connection of a session comes through here (main, data,
	 * postcopy's recovery): TCP watches each one within the limit. */
	c->watch_rc = fd >= 0 ? fy_transport_stall_opts(fd, (uint32_t)c->idle_ms,
							&c->watch_failed)
			      : 1;
	c->rx.rbuf = malloc(FY_RBUF_SIZE);
	if (!c->rx.rbuf)
		return -ENOMEM;
	rc = fy_csum_init(&c->tx.csum);
	return rc ? rc : fy_csum_init(&c->rx.csum);
}

/* Free what one direction holds; both sides have scratch and a codec. */
static void dir_free(struct fy_csum *csum, struct fy_bulk *gather,
		     struct fy_bulk *packed)
{
	fy_csum_free(csum);
	fy_bulk_free(gather);
	fy_bulk_free(packed);
}

/**
 * fy_chan_close() - close the socket and free the buffers of both
 * directions. Idempotent. Neither direction may be in use: the threads
 * that send and receive on @c have stopped.
 */
void fy_chan_close(struct fy_chan *c)
{
	fy_tls_free(c->tls);
	c->tls = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	pipe_close(c);
	dir_free(&c->tx.csum, &c->tx.gather, &c->tx.packed);
	dir_free(&c->rx.csum, &c->rx.gather, &c->rx.packed);
	fy_buf_free(&c->tx.out);
	fy_buf_free(&c->rx.in);
	free(c->rx.rbuf);
	c->rx.rbuf = NULL;
	fy_fd_stash_clear(&c->rx.fds);
	c->rx.take_fds = false;
	c->rx.rpos = c->rx.rlen = 0;
	free(c->tx.batch);
	c->tx.batch = NULL;
	fy_codec_free(c->tx.codec);
	c->tx.codec = NULL;
	for (int i = 0; i < 3; i++) {
		fy_codec_free(c->rx.dcodec[i]);
		c->rx.dcodec[i] = NULL;
	}
}

/*
 * Make @b hold at least @n bytes. The first call maps it at the size of a
 * whole chunk (the most a record of ours needs), so on the sender this
 * happens once per connection, before the first pass; a receiver maps it
 * when the first compressed record arrives, and again only if a peer
 * with larger chunks sends a record that does not fit.
 */
static int bulk_fit(struct fy_chan *c, struct fy_bulk *b, size_t n)
{
	size_t want = n > c->s->cfg.chunk_bytes ? n : c->s->cfg.chunk_bytes;
	int rc;

	if (b->size >= n)
		return 0;
	fy_bulk_free(b);
	rc = fy_bulk_alloc(b, want);
	if (rc)
		return rc;
	atomic_fetch_add(&c->s->bulk_count[b->kind], 1);
	atomic_fetch_add(&c->s->bulk_bytes, b->size);
	return 0;
}

/**
 * fy_chan_prepare() - map the sender's scratch buffers for the encoding
 * set on @c: a gather buffer when zero maps or a codec may need one, a
 * payload buffer for a codec (each holds one chunk), and the batch of
 * small records on a connection (a file takes each record as it comes,
 * so that its index can give every record's offset).
 */
int fy_chan_prepare(struct fy_chan *c)
{
	size_t chunk = c->s->cfg.chunk_bytes;
	int rc = 0;

	if (c->tx.zero_pages || c->tx.codec)
		rc = bulk_fit(c, &c->tx.gather, chunk);
	if (!rc && c->tx.codec)
		rc = bulk_fit(c, &c->tx.packed, chunk);
	if (!rc && !c->is_file && !c->tx.batch) {
		c->tx.batch = calloc(1, sizeof(*c->tx.batch));
		if (!c->tx.batch)
			rc = -ENOMEM;
	}
	return rc;
}

/* A blocked call timed out: decide whether to keep waiting. A stall
 * (@limit_ms of silence since @since_ns) is measured into *@silent. */
static int tick(struct fy_chan *c, uint64_t since_ns, int limit_ms,
		_Atomic uint64_t *silent)
{
	uint64_t now;

	if (fy_cancelled(c->s))
		return FERRY_ECANCELED;
	now = fy_now_ns();
	if (limit_ms > 0 && now - since_ns > (uint64_t)limit_ms * 1000000) {
		*silent = now - since_ns;
		return -ETIMEDOUT;
	}
	return 0;
}

/* The keeper's own bound on its writes: per thread, so that it never
 * changes the channel's limit under the owner (who may set or read it at
 * the same time, outside tx_mu). */
static _Thread_local int keeper_limit_ms;

/* The write limit: a bounded one (ABORT's), else the stall limit. */
static int tx_limit(const struct fy_chan *c)
{
	if (keeper_limit_ms)
		return keeper_limit_ms;
	return c->tx.limit_ms ? c->tx.limit_ms : c->idle_ms;
}

/* Write a copy of @iov (not consumed) to @fd. */
static int tee_all(int fd, const struct iovec *iov, int n)
{
	for (int i = 0; i < n; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t left = iov[i].iov_len;

		while (left) {
			ssize_t w = write(fd, p, left);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return -1;
			p += w;
			left -= (size_t)w;
		}
	}
	return 0;
}

/*
 * Set (per thread) while the bytes going out may include guest pages: a
 * memory record, or a batch of them. Only those reads are hidden from
 * ThreadSanitizer (FY_GUEST_READS_*), so that a race on the channel's
 * own buffers in a control record or a keep-alive is still reported.
 */
static _Thread_local int guest_iov;

#define GUEST_READS_BEGIN()                    \
	do {                                   \
		if (guest_iov)                 \
			FY_GUEST_READS_BEGIN(); \
	} while (0)
#define GUEST_READS_END()                    \
	do {                                 \
		if (guest_iov)               \
			FY_GUEST_READS_END(); \
	} while (0)

/* Before bytes go out: wait for the bandwidth cap, copy to the recording. */
static int write_prepare(struct fy_chan *c, const struct iovec *iov, int n)
{
	uint64_t total = 0;
	int rc;

	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	if (c->tx.urgent)
		fy_session_pace_urgent(c->s, total);
	rc = c->tx.urgent ? 0 : fy_session_pace(c->s, total);
	if (rc)
		return rc;
	/* The recording is what the connection carries; for page data of a
	 * running guest it may differ from the socket's copy in bytes that no
	 * checksum covers (see docs/stream-format.md). */
	if (c->tx.tee_fd >= 0) {
		GUEST_READS_BEGIN(); /* pages the guest may be writing */
		rc = tee_all(c->tx.tee_fd, iov, n);
		GUEST_READS_END();
		if (rc)
			return -EIO;
	}
	return 0;
}

/*
 * What a write that returned @w means: 1 when it wrote (counted, and the
 * idle clock restarts at @since), 0 to try again (interrupted, or no room
 * yet and the peer not overdue), else the error.
 */
static int wrote(struct fy_chan *c, ssize_t w, uint64_t *since)
{
	if (w >= 0) {
		*since = fy_now_ns();
		atomic_store_explicit(&c->tx.last_tx_ns, *since,
				      memory_order_relaxed);
		fy_chan_count(&c->tx.wire_bytes, (uint64_t)w);
		return 1;
	}
	if (errno == EINTR)
		return 0;
	if (errno != EAGAIN && errno != EWOULDBLOCK)
		return -errno;
	return tick(c, *since, tx_limit(c), &c->tx.stall_ns);
}

/* Through TLS: records gathered from @iov (the session keeps a partial
 * record back while @more). */
static int send_tls(struct fy_chan *c, const struct iovec *iov, int n,
		    bool more)
{
	uint64_t total = 0;
	int rc;

	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	rc = fy_tls_send(c->tls, iov, n, more);
	if (!rc) {
		atomic_store_explicit(&c->tx.last_tx_ns, fy_now_ns(),
				      memory_order_relaxed);
		fy_chan_count(&c->tx.wire_bytes, total);
	} else if (rc == -EOVERFLOW) {
		/* The kernel's TLS (ktls) cannot take a new key and the
		 * key's records ran out: the code alone says too little. */
		fy_session_log(c->s, 1, "%s", fy_tls_last_error(c->tls));
	}
	return rc;
}

/* Copy every byte of @iov (which it consumes) to the connection; @more:
 * more of the record follows (MSG_MORE). */
static int send_iov(struct fy_chan *c, struct iovec *iov, int n, bool more)
{
	uint64_t since = fy_now_ns();
	int rc, flags = MSG_NOSIGNAL | (more ? MSG_MORE : 0);

	/* @iov may point into pages the guest is writing (memory.h). */
	if (c->tls) {
		GUEST_READS_BEGIN();
		rc = send_tls(c, iov, n, more);
		GUEST_READS_END();
		return rc;
	}
	while (n > 0) {
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
		ssize_t w;

		GUEST_READS_BEGIN();
		w = c->is_file ? writev(c->fd, iov, n) : sendmsg(c->fd, &mh, flags);
		GUEST_READS_END();
		rc = wrote(c, w, &since);
		if (rc < 0)
			return rc;
		if (!rc)
			continue;
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* A record's bytes go out whole: a keep-alive writer waits its turn. */
static void tx_lock(struct fy_chan *c)
{
	if (c->tx_shared)
		pthread_mutex_lock(&c->tx_mu);
}

static void tx_unlock(struct fy_chan *c)
{
	if (c->tx_shared)
		pthread_mutex_unlock(&c->tx_mu);
}

/* Write every byte of @iov (which it consumes). */
static int write_iov(struct fy_chan *c, struct iovec *iov, int n)
{
	int rc = write_prepare(c, iov, n);

	if (rc)
		return rc;
	tx_lock(c);
	rc = send_iov(c, iov, n, false);
	tx_unlock(c);
	return rc;
}

/* Move @len bytes from the pipe to the socket (the record's trailer
 * follows); @sent counts what the socket took. */
static int pipe_drain(struct fy_chan *c, size_t len, size_t *sent)
{
	uint64_t since = fy_now_ns();

	while (len) {
		ssize_t w = splice(c->tx.pipe[0], NULL, c->fd, NULL, len,
				   SPLICE_F_MORE);
		int rc = wrote(c, w, &since);

		if (rc < 0)
			return rc;
		if (!rc)
			continue;
		*sent += (size_t)w;
		len -= (size_t)w;
	}
	return 0;
}

/* Drop the first @len bytes of @iov (@n entries); returns what is left. */
static int iov_skip(struct iovec **iov, int n, size_t len)
{
	while (n > 0 && len >= (*iov)->iov_len) {
		len -= (*iov)->iov_len;
		(*iov)++;
		n--;
	}
	if (n > 0) {
		(*iov)->iov_base = (uint8_t *)(*iov)->iov_base + len;
		(*iov)->iov_len -= len;
	}
	return n;
}

/*
 * Splice the guest pages of @iov (which it consumes) to the socket, a
 * pipe's worth at a time. Where the kernel cannot splice (no pipe, memory
 * vmsplice() refuses, a socket that takes no pages), this connection
 * stops trying and what is left is copied instead.
 */
static int splice_pages(struct fy_chan *c, struct iovec *iov, int n)
{
	while (n > 0) {
		size_t sent = 0;
		ssize_t v;
		int rc;

		/* Pages for TLS are encrypted by the sender: nothing to
		 * hand over by reference. */
		if (c->tx.splice_failed || c->tls || !pipe_open(c))
			return send_iov(c, iov, n, true);
		v = vmsplice(c->tx.pipe[1], iov, (unsigned long)n, 0);
		if (v <= 0) {
			if (v < 0 && errno == EINTR)
				continue;
			pipe_close(c); /* still empty, and not needed again */
			c->tx.splice_failed = true;
			continue;
		}
		rc = pipe_drain(c, (size_t)v, &sent);
		if (rc == -EINVAL || rc == -EOPNOTSUPP) {
			/* The socket takes no pages: copy what the pipe
			 * held from where the socket stopped. */
			pipe_close(c);
			c->tx.splice_failed = true;
			n = iov_skip(&iov, n, sent);
			continue;
		}
		if (rc) {
			pipe_close(c); /* it may still hold pages */
			return rc;
		}
		n = iov_skip(&iov, n, (size_t)v);
	}
	return 0;
}

/*
 * splice() to a socket whose peer is gone raises SIGPIPE (it has no
 * MSG_NOSIGNAL). The signal is held back while this thread splices and
 * taken if splicing raised it, so the VMM's process is not killed and
 * its own handling of SIGPIPE is left as it was. A SIGPIPE pending before
 * is never taken: one can be pending here only if the thread already
 * blocked SIGPIPE, and then the signal is left alone. (Two calls per
 * record, about 2 us here; asking for the pending set cost a third.)
 */
static int splice_quietly(struct fy_chan *c, struct iovec *iov, int n)
{
	sigset_t pipe_set, old;
	int rc;

	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	rc = splice_pages(c, iov, n);
	if (rc == -EPIPE && !sigismember(&old, SIGPIPE)) {
		struct timespec none = { 0, 0 };

		sigtimedwait(&pipe_set, NULL, &none);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

/* Send a memory record whose payload, iovecs [@first, @end) of @iov, is
 * guest memory: the headers copied, the pages spliced, the rest copied. */
static int send_spliced(struct fy_chan *c, struct iovec *iov, int n,
			int first, int end)
{
	int rc = fy_chan_flush(c);

	if (!rc)
		rc = write_prepare(c, iov, n);
	if (rc)
		return rc;
	tx_lock(c);
	rc = send_iov(c, iov, first, true);
	if (!rc)
		rc = splice_quietly(c, iov + first, end - first);
	if (!rc)
		rc = send_iov(c, iov + end, n - end, false);
	tx_unlock(c);
	return rc;
}

static void batch_empty(struct fy_batch *b)
{
	b->niov = 0;
	b->nrec = 0;
	b->bytes = 0;
}

/**
 * fy_chan_flush() - hand the batched small records to the socket.
 */
int fy_chan_flush(struct fy_chan *c)
{
	int rc;

	if (!c->tx.batch || !c->tx.batch->nrec)
		return 0;
	guest_iov++; /* batched memory records */
	rc = write_iov(c, c->tx.batch->iov, c->tx.batch->niov);
	guest_iov--;
	batch_empty(c->tx.batch);
	return rc;
}

/**
 * fy_chan_write_all() - write every byte of @iov (which it consumes),
 * after the batched records, so the stream keeps its order.
 */
int fy_chan_write_all(struct fy_chan *c, struct iovec *iov, int n)
{
	int rc = fy_chan_flush(c);

	return rc ? rc : write_iov(c, iov, n);
}

/* Set the socket's low-water mark for a read that still needs @n bytes
 * (see FY_RCVLOWAT_BULK); a system call only when the mark must change. */
static void set_lowat(struct fy_chan *c, size_t n)
{
	size_t half = n / 2;
	int want = n < FY_RBUF_BULK ? 0
		   : half < FY_RCVLOWAT_BULK ? (int)half : FY_RCVLOWAT_BULK;
	int v = want ? want : 1;
	/* Above half of @n the read could stall; a mark merely lower than
	 * it could be costs only a few more wake-ups, so it is raised only
	 * when that doubles it. */
	bool too_high = (size_t)c->rx.lowat > half;
	bool worth_raising = want && want >= 2 * c->rx.lowat;

	if (!too_high && !worth_raising)
		return;
	if (!setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v)))
		c->rx.lowat = want;
}

/* Move up to @have bytes read ahead into *@p (at most *@n), advancing
 * both. */
static void take_ahead(struct fy_chan *c, uint8_t **p, size_t *n, size_t have)
{
	if (have > *n)
		have = *n;
	memcpy(*p, c->rx.rbuf + c->rx.rpos, have);
	c->rx.rpos += (uint32_t)have;
	*p += have;
	*n -= have;
}

/* A small read under TLS asks for one record at most: a record is
 * decrypted whole, and what the caller does not take of it is copied
 * once more, so the read-ahead takes no records that a following large
 * read could have had straight. */
#define FY_TLS_AHEAD (FY_TLS_RECORD + 256)
static_assert(FY_TLS_AHEAD <= FY_RBUF_SIZE, "the read-ahead holds a record");

/*
 * read_full() through TLS. A large read takes the records' plaintext
 * straight into @buf; small ones fill the read-ahead. When it ends with
 * the read-ahead empty, what the TLS session still holds decrypted moves
 * there: nothing waits unseen inside the session while a caller polls
 * the socket for the next record (postcopy does).
 */
static int tls_read_full(struct fy_chan *c, void *buf, size_t n, int limit_ms,
			 bool cold)
{
	uint8_t *p = buf;

	c->tls_rx_limit_ms = limit_ms;
	while (n) {
		size_t have = c->rx.rlen - c->rx.rpos;
		bool direct = n >= FY_RBUF_BULK;
		ssize_t r;

		if (have) {
			take_ahead(c, &p, &n, have);
			continue;
		}
		c->rx.rpos = c->rx.rlen = 0;
		r = !direct ? fy_tls_recv(c->tls, c->rx.rbuf, FY_TLS_AHEAD)
		    : cold  ? fy_tls_recv_cold(c->tls, p, n)
			    : fy_tls_recv(c->tls, p, n);
		if (r == 0) {
			c->rx.eof = true;
			return -ECONNRESET;
		}
		if (r < 0) {
			/* A record that is no TLS, altered or cut: say
			 * which in the log (the code alone says "bad
			 * message"). */
			if (r == -EBADMSG || r == -EPROTO)
				fy_session_log(c->s, 1, "%s",
					       fy_tls_last_error(c->tls));
			return (int)r;
		}
		c->rx.last_rx_ns = fy_now_ns();
		fy_chan_count(&c->rx.wire_bytes, (uint64_t)r);
		if (!direct) {
			c->rx.rlen = (uint32_t)r;
			continue;
		}
		p += r;
		n -= (size_t)r;
	}
	while (c->rx.rpos == c->rx.rlen && fy_tls_pending(c->tls)) {
		ssize_t r = fy_tls_recv(c->tls, c->rx.rbuf, FY_TLS_AHEAD);

		c->rx.rpos = 0;
		c->rx.rlen = r > 0 ? (uint32_t)r : 0;
		if (r <= 0)
			break; /* the next read meets it again */
		fy_chan_count(&c->rx.wire_bytes, (uint64_t)r);
	}
	return 0;
}

/* Read exactly @n bytes, or fail; @limit_ms bounds silence from the peer.
 * What was read ahead goes first, then the socket, asked for a little more
 * each time (see FY_RBUF_SIZE). @framing: @buf is framing between records'
 * pages (a trailer or headers). */
static int read_full(struct fy_chan *c, void *buf, size_t n, int limit_ms,
		     bool framing)
{
	uint8_t *p = buf;
	bool bulk = n >= FY_RBUF_BULK;

	if (c->tls)
		return tls_read_full(c, buf, n, limit_ms, false);
	while (n) {
		size_t have = c->rx.rlen - c->rx.rpos;
		size_t ahead = bulk ? FY_RBUF_AFTER_BULK
			       : framing && c->rx.after_bulk ? FY_RBUF_AFTER_HEADERS
							 : FY_RBUF_SIZE;
		struct iovec iov[2] = {
			{ p, n },
			{ c->rx.rbuf, ahead },
		};
		union {
			struct cmsghdr align;
			char buf[FY_FDS_CMSG_SPACE];
		} cm;
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
		ssize_t r;

		if (have) {
			take_ahead(c, &p, &n, have);
			continue;
		}
		c->rx.rpos = c->rx.rlen = 0;
		if (!c->is_file)
			set_lowat(c, n);
		if (c->rx.take_fds) {
			mh.msg_control = cm.buf;
			mh.msg_controllen = sizeof(cm.buf);
		}
		r = c->is_file ? readv(c->fd, iov, 2)
			       : recvmsg(c->fd, &mh,
					 c->rx.take_fds ? MSG_CMSG_CLOEXEC : 0);
		/* Descriptors come with the bytes they ride on, also with
		 * a read that ends the connection: keep them to close. */
		if (r >= 0 && c->rx.take_fds)
			fy_fd_stash_take(&c->rx.fds, &mh);

		if (r == 0) {
			c->rx.eof = !c->is_file;
			return c->is_file ? -ENODATA : -ECONNRESET;
		}
		if (r < 0) {
			int rc;

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -errno;
			rc = tick(c, c->rx.last_rx_ns, limit_ms,
				  &c->rx.stall_ns);
			if (rc)
				return rc;
			continue;
		}
		c->rx.last_rx_ns = fy_now_ns();
		fy_chan_count(&c->rx.wire_bytes, (uint64_t)r);
		c->rx.after_bulk = bulk || (framing && c->rx.after_bulk);
		if ((size_t)r > n) {
			c->rx.rlen = (uint32_t)((size_t)r - n);
			r = (ssize_t)n;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* TLS found the socket silent for a tick: the channel's rules decide
 * (cancel; the idle limit of the running read, or of a send). */
static int tls_idle(void *opaque, bool sending, uint64_t since_ns)
{
	struct fy_chan *c = opaque;

	if (sending)
		return tick(c, since_ns, tx_limit(c), &c->tx.stall_ns);
	if (c->rx.last_rx_ns > since_ns)
		since_ns = c->rx.last_rx_ns;
	return tick(c, since_ns, c->tls_rx_limit_ms, &c->rx.stall_ns);
}

/*
 * A ferry source without TLS reads this ERROR as any refusal. What it
 * sent is still unread here, and a socket closed with unread bytes resets
 * the connection, which would discard the ERROR at the source: so this
 * side stops writing and reads until the source closes (up to a second).
 */
static void refuse_plaintext(struct fy_chan *c)
{
	uint64_t until = fy_now_ns() + 1000ull * 1000000;
	char sink[4096];

	fy_chan_send_error(c, FY_REC_ERROR, 0, FERRY_EPEER,
			   "this destination requires TLS: give the source TLS credentials");
	if (shutdown(c->fd, SHUT_WR))
		return;
	while (fy_now_ns() < until) {
		ssize_t r = recv(c->fd, sink, sizeof(sink), 0);

		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR &&
			       errno != EWOULDBLOCK))
			return;
	}
}

/* The session's stats name what the first secured connection
 * negotiated and who seals its records (every connection of a run uses
 * the same priorities and engine). */
static void tls_note_stats(struct fy_chan *c)
{
	struct ferry_stats *st = &c->s->stats;

	pthread_mutex_lock(&c->s->lock);
	if (!st->tls_cipher[0]) {
		fy_tls_names(c->tls, st->tls_version, sizeof(st->tls_version),
			     st->tls_cipher, sizeof(st->tls_cipher),
			     st->tls_kx, sizeof(st->tls_kx));
		fy_tls_engine(c->tls, st->tls_engine, sizeof(st->tls_engine));
	}
	pthread_mutex_unlock(&c->s->lock);
}

/**
 * fy_chan_secure() - see engine.h.
 */
int fy_chan_secure(struct fy_chan *c, bool server, char *err, size_t len)
{
	struct fy_tls_creds *cr;
	char what[96];
	int rc;

	if (c->is_file || c->tls || !fy_tls_config_on(&c->s->tls))
		return 0;
	rc = fy_session_tls_creds(c->s, server, &cr, err, len);
	if (rc)
		return rc;
	c->tls_rx_limit_ms = FY_TLS_HANDSHAKE_MS;
	rc = fy_tls_start(cr, c->fd, FY_TLS_HANDSHAKE_MS, tls_idle, c, &c->tls,
			  err, len);
	if (rc == -EPROTONOSUPPORT && server)
		refuse_plaintext(c);
	if (rc) {
		/* Heard even where the caller keeps another message (a
		 * stranger's connection, a recovery attempt). */
		fy_session_log(c->s, 1, "%s", err);
		return rc;
	}
	fy_tls_describe(c->tls, what, sizeof(what));
	fy_session_log(c->s, 3, "TLS: %s", what);
	tls_note_stats(c);
	return 0;
}

/**
 * fy_chan_log_watch() - see engine.h. A UNIX socket needs no watch (it
 * ends with its process) and is only noted at debug level.
 */
void fy_chan_log_watch(struct fy_chan *c, const char *what)
{
	if (c->is_file || c->fd < 0)
		return;
	if (c->watch_rc == 1)
		fy_session_log(c->s, 3, "%s: not TCP, no keepalive or TCP_USER_TIMEOUT (the stall limit of %d ms still holds)",
			       what, c->idle_ms);
	else if (c->watch_rc)
		fy_session_log(c->s, 1, "%s: the kernel refused %s (%s): a dead link is noticed by the stall limit of %d ms alone",
			       what, c->watch_failed ? c->watch_failed : "?",
			       strerror(-c->watch_rc), c->idle_ms);
	else
		fy_session_log(c->s, 3, "%s: TCP_USER_TIMEOUT and keepalive within %d ms",
			       what, c->idle_ms);
}

/**
 * fy_chan_stalled() - see engine.h. A read or write that gave up says how
 * long it waited; a connection the kernel ended (TCP_USER_TIMEOUT, or
 * keepalive probes unanswered) is measured from the last bytes that
 * moved either way.
 */
uint64_t fy_chan_stalled(struct fy_chan *c, const char *peer, char *buf,
			 size_t len)
{
	uint64_t now = fy_now_ns(), last, ns;
	const char *how = "sent nothing";

	if (c->rx.stall_ns) {
		ns = c->rx.stall_ns;
	} else if (c->tx.stall_ns) {
		ns = c->tx.stall_ns;
		how = "took nothing";
	} else {
		last = atomic_load(&c->tx.last_tx_ns);
		if (c->rx.last_rx_ns > last)
			last = c->rx.last_rx_ns;
		ns = now > last ? now - last : 0;
		how = "acknowledged nothing";
	}
	snprintf(buf, len, "%s %s for %.1f s (%sthe stall limit, --stall-timeout-ms %d)",
		 peer, how, (double)ns / 1e9,
		 c->rx.stall_ns || c->tx.stall_ns ? "" : "TCP_USER_TIMEOUT: ",
		 c->idle_ms);
	return ns;
}

/**
 * fy_chan_read_full() - read exactly @n bytes within the idle limit.
 */
int fy_chan_read_full(struct fy_chan *c, void *buf, size_t n)
{
	return read_full(c, buf, n, c->idle_ms, false);
}

/**
 * fy_chan_read_within() - read exactly @n bytes, allowing @idle_ms of
 * silence (for peers that must speak promptly, like a joining connection).
 */
int fy_chan_read_within(struct fy_chan *c, void *buf, size_t n, int idle_ms)
{
	c->rx.last_rx_ns = fy_now_ns();
	return read_full(c, buf, n, idle_ms, false);
}

/**
 * fy_chan_send_rec() - send one control record.
 */
int fy_chan_send_rec(struct fy_chan *c, uint32_t type, uint32_t seq,
		     const void *body, size_t len)
{
	struct iovec iov;
	int rc;

	/* Restoring from a file: the answers have nobody to go to. */
	if (c->is_file && (type == FY_REC_OK || type == FY_REC_ERROR))
		return 0;

	fy_buf_reset(&c->tx.out);
	rc = fy_rec_encode(&c->tx.out, type, seq, 0, body, len);
	if (rc)
		return rc;
	iov.iov_base = c->tx.out.data;
	iov.iov_len = c->tx.out.len;
	return fy_chan_write_all(c, &iov, 1);
}

/* One segment of a record with @fds (1..FY_FDS_PER_MSG) on its first
 * byte; the rest of the segment follows without them if the sendmsg()
 * took only part of it. Under tx_lock. */
static int send_segment(struct fy_chan *c, struct iovec *iov, const int *fds,
			unsigned nfds)
{
	uint64_t since = fy_now_ns();
	ssize_t w;
	int rc = 0;

	while (!rc) {
		w = fy_transport_sendmsg_fds(c->fd, iov, 1, fds, nfds,
					     MSG_NOSIGNAL);
		rc = wrote(c, w, &since);
		if (rc > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
			return iov->iov_len ? send_iov(c, iov, 1, false) : 0;
		}
	}
	return rc;
}

/**
 * fy_chan_send_rec_fds() - send one control record with @fds attached
 * (SCM_RIGHTS): at most FY_FDS_PER_MSG ride on the first byte of each of
 * consecutive segments of the record, in order, so that a receiver that
 * reads the whole record has them all, in order.
 */
int fy_chan_send_rec_fds(struct fy_chan *c, uint32_t type, uint32_t seq,
			 const void *body, size_t len, const int *fds,
			 unsigned nfds)
{
	unsigned segs = (nfds + FY_FDS_PER_MSG - 1) / FY_FDS_PER_MSG;
	struct iovec iov;
	size_t total;
	int rc;

	/* Descriptors pass beside the stream: never under TLS (the config
	 * check and HELLO keep the two apart). */
	if (c->tls || c->is_file || !nfds)
		return -EINVAL;
	rc = fy_chan_flush(c);
	fy_buf_reset(&c->tx.out);
	if (!rc)
		rc = fy_rec_encode(&c->tx.out, type, seq, 0, body, len);
	total = c->tx.out.len;
	/* Every segment needs a byte to carry its descriptors. */
	if (!rc && segs > total)
		rc = -EINVAL;
	iov.iov_base = c->tx.out.data;
	iov.iov_len = total;
	if (!rc)
		rc = write_prepare(c, &iov, 1);
	if (rc)
		return rc;
	tx_lock(c);
	for (unsigned k = 0; !rc && k < segs; k++) {
		size_t a = total * k / segs, b = total * (k + 1) / segs;
		unsigned f = k * FY_FDS_PER_MSG;

		iov.iov_base = c->tx.out.data + a;
		iov.iov_len = b - a;
		rc = send_segment(c, &iov, fds + f,
				  nfds - f < FY_FDS_PER_MSG ? nfds - f
							    : FY_FDS_PER_MSG);
	}
	tx_unlock(c);
	return rc;
}

/**
 * fy_chan_peer_keeps() - see engine.h.
 */
void fy_chan_peer_keeps(struct fy_chan *c, bool keeps)
{
	c->answer_ms = keeps || c->idle_ms >= FY_QUIET_PEER_MS
			       ? c->idle_ms : FY_QUIET_PEER_MS;
}

/**
 * fy_chan_share_tx() - see engine.h.
 */
void fy_chan_share_tx(struct fy_chan *c)
{
	c->tx_shared = true;
}

/**
 * fy_chan_send_keepalive() - see engine.h. The owner's records are
 * written whole under tx_mu, so this one goes between two of them; if
 * the lock is taken, a record is going out and the peer hears from this
 * side anyway. The recording (record_stream) leaves it out: the owner
 * writes there outside the lock, and a reader skips the record anyway.
 * @held is read under the lock, so that fy_keeper_quiet() can end the
 * keep-alives without waiting for the keeper's thread.
 */
int fy_chan_send_keepalive(struct fy_chan *c, const struct fy_buf *rec,
			   const atomic_bool *held)
{
	struct iovec iov = { rec->data, rec->len };
	struct pollfd pf = { .fd = c->fd, .events = POLLOUT };
	uint64_t before;
	int rc;

	if (pthread_mutex_trylock(&c->tx_mu))
		return 0;
	if (atomic_load(held)) {
		pthread_mutex_unlock(&c->tx_mu);
		return 0;
	}
	/* A socket with no room holds bytes the peer has not taken: it is
	 * not starved of them, and a keep-alive would only wait there,
	 * holding up the next record. */
	if (poll(&pf, 1, 0) != 1 || !(pf.revents & POLLOUT)) {
		pthread_mutex_unlock(&c->tx_mu);
		return 0;
	}
	keeper_limit_ms = FY_ABORT_WAIT_MS;
	before = atomic_load(&c->tx.wire_bytes);
	rc = send_iov(c, &iov, 1, false);
	keeper_limit_ms = 0;
	/* Part of a record would garble whatever follows it. */
	if (rc && atomic_load(&c->tx.wire_bytes) != before)
		shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_unlock(&c->tx_mu);
	return rc;
}

/* Is page @i marked zero in the map? */
static inline bool zbit(const uint64_t *zmap, size_t i)
{
	return (zmap[i / 64] >> (i % 64)) & 1;
}

/*
 * Append the runs of non-zero pages of @data as iovecs (straight from guest
 * memory), or, with @dst, copy them there. Returns the iovecs used.
 */
static int nonzero_runs(const uint8_t *data, size_t pages, const uint64_t *zmap,
			struct iovec *iov, int max, uint8_t *dst)
{
	int n = 0;

	for (size_t i = 0; i < pages;) {
		size_t j = i;

		if (zbit(zmap, i)) {
			i++;
			continue;
		}
		while (j < pages && !zbit(zmap, j))
			j++;
		if (dst) {
			FY_GUEST_READS_BEGIN();
			memcpy(dst, data + i * FY_PAGE_SIZE, (j - i) * FY_PAGE_SIZE);
			FY_GUEST_READS_END();
			dst += (j - i) * FY_PAGE_SIZE;
		} else if (n < max) {
			iov[n].iov_base = (void *)(data + i * FY_PAGE_SIZE);
			iov[n].iov_len = (j - i) * FY_PAGE_SIZE;
		}
		n++;
		i = j;
	}
	return n;
}

/* Compress the non-zero pages into c->tx.packed; 0 when it does not pay. */
static long pack(struct fy_chan *c, const uint8_t *data, size_t pages,
		 size_t nonzero, bool zmap)
{
	size_t raw = nonzero * FY_PAGE_SIZE;
	const uint8_t *src = data;
	long n;

	if (zmap) {
		if (bulk_fit(c, &c->tx.gather, raw))
			return 0;
		nonzero_runs(data, pages, c->tx.zmap, NULL, 0, c->tx.gather.data);
		src = c->tx.gather.data;
	}
	if (bulk_fit(c, &c->tx.packed, raw))
		return 0;
	n = fy_codec_compress(c->tx.codec, src, raw, c->tx.packed.data, raw);
	return n > 0 ? n : 0;
}

/*
 * Where a record's metadata and iovecs go: for a small record, the next
 * slot of the batch (sent later, with others); else @meta and @iov on the
 * caller's stack (sent now). Makes room in a full batch first.
 */
static int record_place(struct fy_chan *c, bool small, struct fy_rec_meta **meta,
			struct iovec **iov, int *max)
{
	struct fy_batch *b = c->tx.batch;
	int rc;

	if (!small || !b)
		return 0;
	if (b->nrec == FY_BATCH_RECS ||
	    b->niov + FY_BATCH_REC_IOV > FY_BATCH_IOV) {
		rc = fy_chan_flush(c);
		if (rc)
			return rc;
	}
	*meta = &b->rec[b->nrec];
	*iov = b->iov + b->niov;
	*max = FY_BATCH_IOV - b->niov;
	return 1;
}

/* fy_chan_send_mem()'s work; its caller marks the guest pages. */
static int send_mem(struct fy_chan *c, const struct fy_region *r,
		    const struct fy_mem_hdr *m_in, bool csum_data)
{
	struct fy_rec_meta own, *meta = &own;
	struct fy_mem_hdr m = *m_in;
	const uint8_t *data = r->host + m.offset;
	size_t pages = m.length / FY_PAGE_SIZE, words = (pages + 63) / 64;
	size_t zeros = 0, meta_len, payload, body, pad;
	struct iovec own_iov[FY_MAX_IOV], *iov = own_iov;
	uint64_t *zmap = c->tx.zmap;
	long packed = 0;
	int n = 0, first, runs, max = FY_MAX_IOV, batched;
	bool from_guest = true; /* the payload iovecs point at guest pages */

	m.flags = 0;
	FY_GUEST_READS_BEGIN();
	if (c->tx.zero_pages) {
		memset(c->tx.zmap, 0, words * 8);
		zeros = fy_zero_scan(data, pages, c->tx.zmap);
		if (zeros)
			m.flags |= FY_MEMF_ZMAP;
	}
	if (c->tx.codec && zeros < pages)
		packed = pack(c, data, pages, pages - zeros, zeros);
	FY_GUEST_READS_END();
	if (packed)
		m.flags |= (uint32_t)fy_codec_kind_of(c->tx.codec)
			   << FY_MEMF_CODEC_SHIFT;
	batched = record_place(c, !packed && m.length <= FY_BATCH_REC_MAX,
			       &meta, &iov, &max);
	if (batched < 0)
		return batched;
	if (batched) {
		meta->zmap = c->tx.zmap[0]; /* one word: at most 16 pages */
		zmap = &meta->zmap;
	}
	meta_len = fy_mem_meta_len(&m);
	payload = packed ? (size_t)packed : (pages - zeros) * FY_PAGE_SIZE;
	body = meta_len + payload;
	pad = fy_pad8(body) - body;

	struct fy_rec_hdr h = { FY_REC_MEMORY, (uint32_t)body, 0,
				csum_data ? 0 : FY_RF_CSUM_HEAD };

	fy_rec_hdr_encode(&h, meta->head);
	fy_mem_hdr_encode(&m, meta->head + FY_REC_HDR_SIZE);
	iov[n++] = (struct iovec){ meta->head, sizeof(meta->head) };
	if (zeros)
		iov[n++] = (struct iovec){ zmap, words * 8 };
	first = n; /* payload iovecs from here */
	if (packed) {
		iov[n++] = (struct iovec){ c->tx.packed.data, (size_t)packed };
		from_guest = false;
	} else if (!zeros)
		iov[n++] = (struct iovec){ (void *)data, m.length };
	else if ((runs = nonzero_runs(data, pages, c->tx.zmap, iov + n,
				      max - 4, NULL)) <= max - 4)
		n += runs;
	else {
		/* Too fragmented for one sendmsg: gather instead. */
		from_guest = false;
		if (bulk_fit(c, &c->tx.gather, payload))
			return -ENOMEM;
		nonzero_runs(data, pages, c->tx.zmap, NULL, 0, c->tx.gather.data);
		iov[n++] = (struct iovec){ c->tx.gather.data, payload };
	}
	/* The map goes little-endian on the wire (runs are computed). */
	for (size_t w = 0; zeros && w < words; w++)
		zmap[w] = htole64(zmap[w]);

	fy_csum_reset(&c->tx.csum, meta->head);
	fy_csum_update(&c->tx.csum, meta->head + FY_REC_HDR_SIZE, FY_MEM_HDR_SIZE);
	if (zeros)
		fy_csum_update(&c->tx.csum, zmap, words * 8);
	FY_GUEST_READS_BEGIN();
	for (int i = first; csum_data && i < n; i++)
		fy_csum_update(&c->tx.csum, iov[i].iov_base, iov[i].iov_len);
	FY_GUEST_READS_END();
	memset(meta->tail, 0, sizeof(meta->tail));
	fy_put_u64(meta->tail + pad, fy_csum_digest(&c->tx.csum));
	iov[n++] = (struct iovec){ meta->tail, pad + FY_REC_TRAILER_SIZE };
	if (!batched && from_guest && c->tx.splice && !c->tx.splice_failed &&
	    payload >= FY_SPLICE_MIN)
		return send_spliced(c, iov, n, first, n - 1);
	if (!batched)
		return fy_chan_write_all(c, iov, n);
	c->tx.batch->nrec++;
	c->tx.batch->niov += n;
	c->tx.batch->bytes += FY_REC_HDR_SIZE + body + pad + FY_REC_TRAILER_SIZE;
	return c->tx.batch->bytes >= FY_BATCH_BYTES ? fy_chan_flush(c) : 0;
}

/**
 * fy_chan_send_mem() - send one memory record, from guest memory.
 * @csum_data: the checksum covers the payload too. Only sound while the
 * guest is paused: a running guest may change a page between hashing and
 * sending, and such a page is sent again in the next pass anyway.
 *
 * Zero pages (when c->tx.zero_pages) travel as bits of a map; the other pages
 * go raw, straight from guest memory with no copy, or compressed when
 * c->tx.codec is set and compression shrinks them. A small raw record may
 * wait in the connection's batch until fy_chan_flush() or the next write.
 */
int fy_chan_send_mem(struct fy_chan *c, const struct fy_region *r,
		     const struct fy_mem_hdr *m_in, bool csum_data)
{
	int rc;

	guest_iov++;
	rc = send_mem(c, r, m_in, csum_data);
	guest_iov--;
	return rc;
}

/**
 * fy_chan_recv_hdr() - wait up to @idle_ms of silence (0: no limit, only
 * the cancel flag) for a record header.
 */
int fy_chan_recv_hdr(struct fy_chan *c, struct fy_rec_hdr *h, int idle_ms)
{
	uint8_t raw[FY_REC_HDR_SIZE];
	int rc;

	c->rx.last_rx_ns = fy_now_ns();
	rc = read_full(c, raw, sizeof(raw), idle_ms, true);
	if (rc)
		return rc;
	rc = fy_rec_hdr_decode(raw, h);
	if (rc)
		return rc;
	fy_csum_reset(&c->rx.csum, raw);
	return 0;
}

/* Read padding and trailer after @body_len body bytes; check both. */
static int finish_record(struct fy_chan *c, size_t body_len)
{
	uint8_t tail[16];
	size_t pad = fy_pad8(body_len) - body_len;
	int rc = read_full(c, tail, pad + FY_REC_TRAILER_SIZE,
			   c->idle_ms, true);

	if (rc)
		return rc;
	if (memcmp(tail, zero_pad, pad))
		return -EBADMSG;
	if (fy_get_u64(tail + pad) != fy_csum_digest(&c->rx.csum))
		return FERRY_ECHECKSUM;
	return 0;
}

/**
 * fy_chan_recv_body() - read a control record's body into c->rx.in.
 */
int fy_chan_recv_body(struct fy_chan *c, const struct fy_rec_hdr *h)
{
	int rc;

	fy_buf_reset(&c->rx.in);
	rc = fy_buf_reserve(&c->rx.in, h->length);
	if (rc)
		return rc;
	rc = fy_chan_read_full(c, c->rx.in.data, h->length);
	if (rc)
		return rc;
	c->rx.in.len = h->length;
	fy_csum_update(&c->rx.csum, c->rx.in.data, fy_rec_csum_len(h, c->rx.in.data));
	return finish_record(c, h->length);
}

/**
 * fy_chan_send_error() - send ERROR (an answer) or ABORT (the source's
 * request) with a code and a message. Best effort: it precedes a close.
 */
void fy_chan_send_error(struct fy_chan *c, uint32_t type, uint32_t seq,
			int code, const char *msg)
{
	struct fy_error_msg e = { .code = code };
	struct fy_buf body;

	/* Records still batched would only delay the news. */
	if (c->tx.batch)
		batch_empty(c->tx.batch);
	snprintf(e.message, sizeof(e.message), "%s", msg);
	/* Encoded aside: the receiving direction's buffers belong to the
	 * thread that receives, which may be in the middle of a record. */
	fy_buf_init(&body);
	if (!fy_error_encode(&body, &e))
		fy_chan_send_rec(c, type, seq, body.data, body.len);
	fy_buf_free(&body);
}

/**
 * fy_chan_skip_body() - consume a record nobody will look at (an unknown
 * optional record), still checking its checksum.
 */
int fy_chan_skip_body(struct fy_chan *c, const struct fy_rec_hdr *h)
{
	return fy_chan_recv_body(c, h);
}

static int check_range(const struct fy_rec_hdr *h, const struct fy_mem_hdr *m,
		       const struct fy_region *regions, size_t nregions,
		       char *err, size_t errlen)
{
	const struct fy_region *r;
	unsigned codec = (m->flags & FY_MEMF_CODEC_MASK) >> FY_MEMF_CODEC_SHIFT;

	if (m->flags & ~FY_MEMF_KNOWN || codec > FY_CODEC_ZSTD) {
		snprintf(err, errlen, "memory record with unknown flags 0x%x",
			 m->flags);
		return -EBADMSG;
	}
	if (m->region >= nregions) {
		snprintf(err, errlen, "memory record for region %u, only %zu configured",
			 m->region, nregions);
		return -ERANGE;
	}
	r = &regions[m->region];
	if (m->offset % FY_PAGE_SIZE || m->length % FY_PAGE_SIZE ||
	    m->offset > r->size || m->length > r->size - m->offset) {
		snprintf(err, errlen,
			 "memory record [0x%llx, +0x%llx) outside region %s (0x%llx bytes)",
			 (unsigned long long)m->offset,
			 (unsigned long long)m->length, r->name,
			 (unsigned long long)r->size);
		return -ERANGE;
	}
	if (fy_mem_meta_len(m) > h->length ||
	    (m->length / FY_PAGE_SIZE + 63) / 64 > sizeof(((struct fy_chan *)0)->rx.zmap) / 8) {
		snprintf(err, errlen,
			 "memory record of %u bytes cannot describe %llu bytes of memory",
			 h->length, (unsigned long long)m->length);
		return -EBADMSG;
	}
	return 0;
}

/* Count the zero pages of a received map, rejecting bits past the end. */
static int zmap_count(const uint64_t *zmap, size_t pages, size_t *zeros)
{
	size_t words = (pages + 63) / 64, n = 0;

	for (size_t w = 0; w < words; w++)
		n += (size_t)__builtin_popcountll(zmap[w]);
	if (pages % 64 && zmap[words - 1] >> (pages % 64))
		return -EBADMSG;
	*zeros = n;
	return 0;
}

/* Read @n bytes of pages into guest memory that nothing reads again
 * soon: under TLS the plaintext goes there by non-temporal stores
 * (fy_tls_recv_cold()). */
static int read_pages_cold(struct fy_chan *c, void *buf, size_t n)
{
	if (c->tls)
		return tls_read_full(c, buf, n, c->idle_ms, true);
	return fy_chan_read_full(c, buf, n);
}

/* Receive raw non-zero pages straight into guest memory, run by run. */
static int recv_runs(struct fy_chan *c, uint8_t *dst, size_t pages, bool map,
		     bool hash)
{
	for (size_t i = 0; i < pages;) {
		size_t j = i;

		if (map && zbit(c->rx.zmap, i)) {
			i++;
			continue;
		}
		while (j < pages && !(map && zbit(c->rx.zmap, j)))
			j++;
		/* Hashed, in pieces as they arrive, while they are in
		 * cache; else the whole run in one read. */
		for (size_t p = i; p < j;) {
			size_t k = hash && j - p > 64 ? 64 : j - p;
			uint8_t *at = dst + p * FY_PAGE_SIZE;
			/* Hashed pages are read again at once: cached. */
			int rc = hash ? fy_chan_read_full(c, at, k * FY_PAGE_SIZE)
				      : read_pages_cold(c, at, k * FY_PAGE_SIZE);

			if (rc)
				return rc;
			if (hash)
				fy_csum_update(&c->rx.csum, at, k * FY_PAGE_SIZE);
			p += k;
		}
		i = j;
	}
	return 0;
}

/* What the framing of a memory record says about its payload. */
struct mem_meta {
	size_t pages, zeros, payload;
	unsigned kind;	/* codec: 0 raw */
	bool map;	/* rx.zmap holds its zero map, in host order */
	bool hash;	/* the checksum covers the payload */
};

/*
 * Read a memory record's header and zero map, validate them against
 * @regions and the record's length, and describe its payload in @mm.
 * Nothing is written outside the connection's own state.
 */
static int recv_mem_meta(struct fy_chan *c, const struct fy_rec_hdr *h,
			 const struct fy_region *regions, size_t nregions,
			 struct fy_mem_hdr *m, struct mem_meta *mm, char *err,
			 size_t errlen)
{
	uint8_t raw[FY_MEM_HDR_SIZE];
	size_t words;
	int rc;

	memset(mm, 0, sizeof(*mm));
	mm->hash = !(h->flags & FY_RF_CSUM_HEAD);
	if (h->length < FY_MEM_HDR_SIZE) {
		snprintf(err, errlen, "memory record of %u bytes is too short",
			 h->length);
		return -EBADMSG;
	}
	rc = read_full(c, raw, sizeof(raw), c->idle_ms, true);
	if (rc)
		return rc;
	fy_csum_update(&c->rx.csum, raw, sizeof(raw));
	fy_mem_hdr_decode(raw, m);
	rc = check_range(h, m, regions, nregions, err, errlen);
	if (rc)
		return rc;
	mm->pages = m->length / FY_PAGE_SIZE;
	words = (mm->pages + 63) / 64;
	mm->map = m->flags & FY_MEMF_ZMAP;
	mm->kind = (m->flags & FY_MEMF_CODEC_MASK) >> FY_MEMF_CODEC_SHIFT;
	if (mm->map) {
		rc = read_full(c, c->rx.zmap, words * 8, c->idle_ms, true);
		if (rc)
			return rc;
		fy_csum_update(&c->rx.csum, c->rx.zmap, words * 8);
		for (size_t w = 0; w < words; w++)
			c->rx.zmap[w] = le64toh(c->rx.zmap[w]);
		if (zmap_count(c->rx.zmap, mm->pages, &mm->zeros)) {
			snprintf(err, errlen, "zero map marks pages past the range");
			return -EBADMSG;
		}
	}
	mm->payload = h->length - fy_mem_meta_len(m);
	/* No pages follow: what does is framing again, read fully ahead. */
	if (!mm->payload)
		c->rx.after_bulk = false;
	if (!mm->kind && mm->payload != (mm->pages - mm->zeros) * FY_PAGE_SIZE) {
		snprintf(err, errlen,
			 "memory record carries %zu bytes for %zu non-zero pages",
			 mm->payload, mm->pages - mm->zeros);
		return -EBADMSG;
	}
	return 0;
}

/* Read a compressed payload into rx.packed, hashed if the checksum
 * covers it. */
static int recv_packed(struct fy_chan *c, const struct mem_meta *mm)
{
	size_t raw = (mm->pages - mm->zeros) * FY_PAGE_SIZE, n = mm->payload;
	int rc;

	/* Compression that does not shrink is never sent. */
	if (!n || n >= raw)
		return -EBADMSG;
	if (!c->rx.dcodec[mm->kind] &&
	    fy_codec_new(mm->kind, 0, &c->rx.dcodec[mm->kind]))
		return -ENOMEM;
	if (bulk_fit(c, &c->rx.packed, n))
		return -ENOMEM;
	rc = fy_chan_read_full(c, c->rx.packed.data, n);
	if (!rc && mm->hash)
		fy_csum_update(&c->rx.csum, c->rx.packed.data, n);
	return rc;
}

/*
 * Unpack rx.packed's pages to their places in @dst. With @aside, or when
 * zero pages sit between them, through rx.gather: a corrupt payload found
 * halfway must leave guest memory holding only what was validly sent.
 * The copy runs at memcpy speed, several times faster than the decoder.
 */
static int unpack(struct fy_chan *c, const struct mem_meta *mm, uint8_t *dst,
		  bool aside)
{
	size_t raw = (mm->pages - mm->zeros) * FY_PAGE_SIZE, at = 0;
	struct fy_codec *codec = c->rx.dcodec[mm->kind];
	int rc;

	if (!aside && !mm->map)
		return fy_codec_decompress(codec, c->rx.packed.data,
					   mm->payload, dst, raw);
	if (bulk_fit(c, &c->rx.gather, raw))
		return -ENOMEM;
	rc = fy_codec_decompress(codec, c->rx.packed.data, mm->payload,
				 c->rx.gather.data, raw);
	if (rc)
		return rc;
	for (size_t i = 0; i < mm->pages; i++) {
		if (mm->map && zbit(c->rx.zmap, i))
			continue;
		memcpy(dst + i * FY_PAGE_SIZE, c->rx.gather.data + at, FY_PAGE_SIZE);
		at += FY_PAGE_SIZE;
	}
	return 0;
}

/* Name the record whose compressed payload did not decode. */
static int say_corrupt(int rc, const struct fy_region *r,
		   const struct fy_mem_hdr *m, char *err, size_t errlen)
{
	if (rc == -EBADMSG)
		snprintf(err, errlen, "corrupt compressed memory at %s+0x%llx",
			 r->name, (unsigned long long)m->offset);
	return rc;
}

/**
 * fy_chan_recv_mem() - receive one memory record into guest memory. The
 * range, the flags and the sizes are validated before a single byte is
 * written, so a hostile sender can never write outside the configured
 * regions. Raw pages are received straight into guest memory; zero pages
 * are written only where the destination's page is not already zero.
 *
 * The checksum is checked after the pages are written: this is the fast
 * path for a guest that cannot run (precopy, the destination paused). A
 * running guest needs fy_chan_recv_staged().
 */
int fy_chan_recv_mem(struct fy_chan *c, const struct fy_rec_hdr *h,
		     const struct fy_region *regions, size_t nregions,
		     struct fy_mem_hdr *m, char *err, size_t errlen)
{
	struct mem_meta mm;
	uint8_t *dst;
	int rc;

	rc = recv_mem_meta(c, h, regions, nregions, m, &mm, err, errlen);
	if (rc)
		return rc;
	dst = regions[m->region].host + m->offset;
	if (mm.kind) {
		rc = recv_packed(c, &mm);
		if (!rc)
			rc = unpack(c, &mm, dst, true);
	} else {
		rc = recv_runs(c, dst, mm.pages, mm.map, mm.hash);
	}
	if (rc)
		return say_corrupt(rc, &regions[m->region], m, err, errlen);
	for (size_t i = 0; mm.map && i < mm.pages; i++)
		if (zbit(c->rx.zmap, i) && !fy_page_is_zero(dst + i * FY_PAGE_SIZE))
			memset(dst + i * FY_PAGE_SIZE, 0, FY_PAGE_SIZE);
	rc = finish_record(c, h->length);
	if (rc == FERRY_ECHECKSUM)
		snprintf(err, errlen, "checksum mismatch in memory record at %s+0x%llx",
			 regions[m->region].name, (unsigned long long)m->offset);
	return rc;
}

/* Refuse a staging buffer that UFFDIO_COPY could not take, or a record
 * it cannot verify or hold, before any payload byte is read. */
static int stage_check(const struct fy_stage *st, const struct fy_rec_hdr *h,
		       const struct fy_mem_hdr *m, const struct fy_region *r,
		       char *err, size_t errlen)
{
	if (!st->buf || !st->place || (uintptr_t)st->buf % FY_PAGE_SIZE ||
	    st->size % FY_PAGE_SIZE) {
		snprintf(err, errlen,
			 "staging buffer must be page-aligned, a whole number of pages, with a place callback");
		return -EINVAL;
	}
	if (h->flags & FY_RF_CSUM_HEAD) {
		snprintf(err, errlen,
			 "memory record at %s+0x%llx has a checksum over its header only: its pages cannot be verified before they are placed",
			 r->name, (unsigned long long)m->offset);
		return FERRY_EPROTO;
	}
	if (st->units && (m->offset % st->units[m->region] ||
			  m->length % st->units[m->region])) {
		snprintf(err, errlen,
			 "memory record at %s+0x%llx (0x%llx bytes) does not cover whole 0x%llx-byte pages of its region: it cannot be placed atomically",
			 r->name, (unsigned long long)m->offset,
			 (unsigned long long)m->length,
			 (unsigned long long)st->units[m->region]);
		return FERRY_EPROTO;
	}
	if (m->length > st->size) {
		snprintf(err, errlen,
			 "memory record at %s+0x%llx carries 0x%llx bytes of memory, more than the staging buffer's 0x%zx: a record is verified whole before any of it is placed",
			 r->name, (unsigned long long)m->offset,
			 (unsigned long long)m->length, st->size);
		return -EMSGSIZE;
	}
	return 0;
}

/**
 * fy_chan_recv_staged() - receive one memory record for a guest that may
 * be running: its pages go to @st->buf (page i of the record at byte
 * i * 4096; a zero page's bytes are left as they were), the record's
 * checksum is verified, and only then @st->place() gets the record's
 * range, the buffer and its zero map (bit i set: page i is zero), to
 * place it atomically. Guest memory is never written here.
 *
 * A record whose checksum fails, or whose payload is corrupt, is never
 * handed to @st->place(): FERRY_ECHECKSUM (or -EBADMSG) with the record
 * named in @err. A record whose checksum covers only its header
 * (FY_RF_CSUM_HEAD) cannot be verified and is refused (FERRY_EPROTO), and
 * so is one larger than the buffer (-EMSGSIZE): a record is verified
 * whole, so it cannot be placed in pieces. On those two refusals and on a
 * bad @st (-EINVAL) the record is left half read: the connection cannot
 * go on. A failure of @st->place() is returned as it is, after the whole
 * record was read.
 *
 * Return: 0, or a negative code with @err set for anything but I/O.
 */
int fy_chan_recv_staged(struct fy_chan *c, const struct fy_rec_hdr *h,
			const struct fy_region *regions, size_t nregions,
			const struct fy_stage *st, struct fy_mem_hdr *m,
			char *err, size_t errlen)
{
	struct mem_meta mm;
	const struct fy_region *r;
	int rc;

	rc = recv_mem_meta(c, h, regions, nregions, m, &mm, err, errlen);
	if (rc)
		return rc;
	r = &regions[m->region];
	rc = stage_check(st, h, m, r, err, errlen);
	if (rc)
		return rc;
	/* Raw pages land in the buffer as they arrive; a compressed payload
	 * is verified before it is decoded. */
	rc = mm.kind ? recv_packed(c, &mm)
		     : recv_runs(c, st->buf, mm.pages, mm.map, true);
	if (rc)
		return say_corrupt(rc, r, m, err, errlen);
	rc = finish_record(c, h->length);
	if (rc == FERRY_ECHECKSUM)
		snprintf(err, errlen,
			 "checksum mismatch in memory record at %s+0x%llx (0x%llx bytes): nothing placed",
			 r->name, (unsigned long long)m->offset,
			 (unsigned long long)m->length);
	else if (rc == -EBADMSG)
		snprintf(err, errlen,
			 "memory record at %s+0x%llx has padding that is not zero: nothing placed",
			 r->name, (unsigned long long)m->offset);
	if (!rc && mm.kind)
		rc = say_corrupt(unpack(c, &mm, st->buf, false), r, m, err, errlen);
	if (rc)
		return rc;
	if (!mm.map)
		memset(c->rx.zmap, 0, (mm.pages + 63) / 64 * 8);
	return st->place(st->opaque, m->region, m->offset, m->length, st->buf,
			 c->rx.zmap);
}
