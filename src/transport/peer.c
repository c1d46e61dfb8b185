// SPDX-License-Identifier: MIT
/*
 * peer.c - what the kernel knows about the peer of a connected socket:
 * whether it closed its end, and how much of what this side wrote it
 * acknowledged. The sender asks both around RELEASED, the one message
 * after which the destination may run the guest: a destination that
 * closed its connection before RELEASED reached it cannot have read it.
 *
 * This file includes <linux/tcp.h> for the kernel's struct tcp_info
 * (glibc's lacks tcpi_bytes_acked), so it stays apart from the files that
 * use <netinet/tcp.h>.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/sockios.h>
#include <linux/tcp.h>

#include "transport/transport.h"

/**
 * fy_transport_peer_closed() - see transport.h.
 */
bool fy_transport_peer_closed(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLRDHUP };

	return fd >= 0 && poll(&p, 1, 0) == 1 &&
	       (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static int bytes_acked(int fd, uint64_t *acked)
{
	struct tcp_info ti = { 0 };
	socklen_t len = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len))
		return -errno;
	/* A kernel older than 4.1 fills less and has no such count. */
	if (len < offsetof(struct tcp_info, tcpi_bytes_acked) +
			  sizeof(ti.tcpi_bytes_acked))
		return -ENOTSUP;
	*acked = ti.tcpi_bytes_acked;
	return 0;
}

/**
 * fy_transport_sent_mark() - see transport.h.
 */
int fy_transport_sent_mark(int fd, uint64_t *mark)
{
	uint64_t acked;
	int queued, rc;

	/* The count first, then the queue: an acknowledgement between the
	 * two can only make the mark lower than the truth, never higher, so
	 * a lost RELEASED is never claimed where it arrived. */
	rc = bytes_acked(fd, &acked);
	if (rc)
		return rc;
	if (ioctl(fd, SIOCOUTQ, &queued) || queued < 0)
		return -errno ? -errno : -EIO;
	*mark = acked + (uint64_t)queued;
	return 0;
}

/**
 * fy_transport_acked_below() - see transport.h.
 */
bool fy_transport_acked_below(int fd, uint64_t mark)
{
	uint64_t acked;

	return fd >= 0 && !bytes_acked(fd, &acked) && acked < mark;
}
