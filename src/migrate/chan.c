// SPDX-License-Identifier: MIT
/*
 * chan.c - records over one connection: framing, checksums, and moving page
 * data between the socket and guest memory without a bounce buffer.
 *
 * Sockets are blocking with short send/receive timeouts (FY_TICK_MS), so a
 * stalled call comes back regularly to check the session's cancel flag and
 * the peer's idle limit without a poll() per record on the hot path.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migrate/engine.h"

static const uint8_t zeros[8];

/**
 * fy_chan_init() - wrap a connected socket.
 */
int fy_chan_init(struct fy_chan *c, ferry_session *s, int fd)
{
	memset(c, 0, sizeof(*c));
	c->s = s;
	c->fd = fd;
	fy_buf_init(&c->out);
	fy_buf_init(&c->in);
	c->last_rx_ns = fy_now_ns();
	return fy_csum_init(&c->csum);
}

/**
 * fy_chan_close() - close the socket and free the buffers. Idempotent.
 */
void fy_chan_close(struct fy_chan *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	fy_csum_free(&c->csum);
	fy_buf_free(&c->out);
	fy_buf_free(&c->in);
}

/* A blocked call timed out: decide whether to keep waiting. */
static int tick(struct fy_chan *c, uint64_t since_ns, int limit_ms)
{
	if (fy_cancelled(c->s))
		return FERRY_ECANCELED;
	if (limit_ms > 0 && fy_now_ns() - since_ns > (uint64_t)limit_ms * 1000000)
		return -ETIMEDOUT;
	return 0;
}

/**
 * fy_chan_write_all() - write every byte of @iov (which it consumes).
 */
int fy_chan_write_all(struct fy_chan *c, struct iovec *iov, int n)
{
	uint64_t since = fy_now_ns();

	while (n > 0) {
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
		ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);

		if (w < 0) {
			int rc;

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -errno;
			rc = tick(c, since, FY_IDLE_TIMEOUT_MS);
			if (rc)
				return rc;
			continue;
		}
		since = fy_now_ns();
		c->wire_bytes += (uint64_t)w;
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

/* Read exactly @n bytes, or fail; @limit_ms bounds silence from the peer. */
static int read_full(struct fy_chan *c, void *buf, size_t n, int limit_ms)
{
	uint8_t *p = buf;

	while (n) {
		ssize_t r = recv(c->fd, p, n, 0);

		if (r == 0)
			return -ECONNRESET;
		if (r < 0) {
			int rc;

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -errno;
			rc = tick(c, c->last_rx_ns, limit_ms);
			if (rc)
				return rc;
			continue;
		}
		c->last_rx_ns = fy_now_ns();
		c->wire_bytes += (uint64_t)r;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/**
 * fy_chan_read_full() - read exactly @n bytes within the idle limit.
 */
int fy_chan_read_full(struct fy_chan *c, void *buf, size_t n)
{
	return read_full(c, buf, n, FY_IDLE_TIMEOUT_MS);
}

/**
 * fy_chan_send_rec() - send one control record.
 */
int fy_chan_send_rec(struct fy_chan *c, uint32_t type, uint32_t seq,
		     const void *body, size_t len)
{
	struct iovec iov;
	int rc;

	fy_buf_reset(&c->out);
	rc = fy_rec_encode(&c->out, type, seq, 0, body, len);
	if (rc)
		return rc;
	iov.iov_base = c->out.data;
	iov.iov_len = c->out.len;
	return fy_chan_write_all(c, &iov, 1);
}

/**
 * fy_chan_send_mem() - send one memory record straight from guest memory.
 * @csum_data: the checksum covers the page bytes too. Only sound while the
 * guest is paused: a running guest may change a page between hashing and
 * sending, and such a page is sent again in the next pass anyway.
 */
int fy_chan_send_mem(struct fy_chan *c, const struct fy_region *r,
		     const struct fy_mem_hdr *m, bool csum_data)
{
	uint8_t head[FY_REC_HDR_SIZE + FY_MEM_HDR_SIZE], tail[16];
	size_t body = FY_MEM_HDR_SIZE + m->length;
	size_t pad = fy_pad8(body) - body;
	struct fy_rec_hdr h = {
		.type = FY_REC_MEMORY,
		.length = (uint32_t)body,
		.seq = 0,
		.flags = csum_data ? 0 : FY_RF_CSUM_HEAD,
	};
	struct iovec iov[3];
	uint8_t *data = r->host + m->offset;

	fy_rec_hdr_encode(&h, head);
	fy_mem_hdr_encode(m, head + FY_REC_HDR_SIZE);
	fy_csum_reset(&c->csum, head);
	fy_csum_update(&c->csum, head + FY_REC_HDR_SIZE, FY_MEM_HDR_SIZE);
	if (csum_data)
		fy_csum_update(&c->csum, data, m->length);
	memset(tail, 0, sizeof(tail));
	fy_put_u64(tail + pad, fy_csum_digest(&c->csum));

	iov[0] = (struct iovec){ head, sizeof(head) };
	iov[1] = (struct iovec){ data, m->length };
	iov[2] = (struct iovec){ tail, pad + FY_REC_TRAILER_SIZE };
	return fy_chan_write_all(c, iov, 3);
}

/**
 * fy_chan_recv_hdr() - wait up to @idle_ms of silence for a record header.
 */
int fy_chan_recv_hdr(struct fy_chan *c, struct fy_rec_hdr *h, int idle_ms)
{
	uint8_t raw[FY_REC_HDR_SIZE];
	int rc;

	c->last_rx_ns = fy_now_ns();
	rc = read_full(c, raw, sizeof(raw), idle_ms);
	if (rc)
		return rc;
	rc = fy_rec_hdr_decode(raw, h);
	if (rc)
		return rc;
	fy_csum_reset(&c->csum, raw);
	return 0;
}

/* Read padding and trailer after @body_len body bytes; check both. */
static int finish_record(struct fy_chan *c, size_t body_len)
{
	uint8_t tail[16];
	size_t pad = fy_pad8(body_len) - body_len;
	int rc = fy_chan_read_full(c, tail, pad + FY_REC_TRAILER_SIZE);

	if (rc)
		return rc;
	if (memcmp(tail, zeros, pad))
		return -EBADMSG;
	if (fy_get_u64(tail + pad) != fy_csum_digest(&c->csum))
		return FERRY_ECHECKSUM;
	return 0;
}

/**
 * fy_chan_recv_body() - read a control record's body into c->in.
 */
int fy_chan_recv_body(struct fy_chan *c, const struct fy_rec_hdr *h)
{
	int rc;

	fy_buf_reset(&c->in);
	rc = fy_buf_reserve(&c->in, h->length);
	if (rc)
		return rc;
	rc = fy_chan_read_full(c, c->in.data, h->length);
	if (rc)
		return rc;
	c->in.len = h->length;
	fy_csum_update(&c->csum, c->in.data, fy_rec_csum_len(h));
	return finish_record(c, h->length);
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

	if (h->length < FY_MEM_HDR_SIZE ||
	    m->length != h->length - FY_MEM_HDR_SIZE) {
		snprintf(err, errlen,
			 "memory record length %u does not match its range of %llu bytes",
			 h->length, (unsigned long long)m->length);
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
	if (m->flags) {
		snprintf(err, errlen, "memory record with unknown flags 0x%x",
			 m->flags);
		return -EBADMSG;
	}
	return 0;
}

/**
 * fy_chan_recv_mem() - receive one memory record directly into guest
 * memory. The range is validated before a single byte is written, so a
 * hostile sender can never write outside the configured regions.
 */
int fy_chan_recv_mem(struct fy_chan *c, const struct fy_rec_hdr *h,
		     const struct fy_region *regions, size_t nregions,
		     struct fy_mem_hdr *m, char *err, size_t errlen)
{
	uint8_t raw[FY_MEM_HDR_SIZE];
	uint8_t *dst;
	size_t left;
	int rc;

	if (h->length < FY_MEM_HDR_SIZE) {
		snprintf(err, errlen, "memory record of %u bytes is too short",
			 h->length);
		return -EBADMSG;
	}
	rc = fy_chan_read_full(c, raw, sizeof(raw));
	if (rc)
		return rc;
	fy_csum_update(&c->csum, raw, sizeof(raw));
	fy_mem_hdr_decode(raw, m);
	rc = check_range(h, m, regions, nregions, err, errlen);
	if (rc)
		return rc;

	dst = regions[m->region].host + m->offset;
	left = m->length;
	/* Hash in pieces as they arrive, while they are still in cache. */
	while (left) {
		size_t n = left < (256u << 10) ? left : (256u << 10);

		rc = fy_chan_read_full(c, dst, n);
		if (rc)
			return rc;
		if (!(h->flags & FY_RF_CSUM_HEAD))
			fy_csum_update(&c->csum, dst, n);
		dst += n;
		left -= n;
	}
	rc = finish_record(c, h->length);
	if (rc == FERRY_ECHECKSUM)
		snprintf(err, errlen, "checksum mismatch in memory record at %s+0x%llx",
			 regions[m->region].name, (unsigned long long)m->offset);
	return rc;
}
