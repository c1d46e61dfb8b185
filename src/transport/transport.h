/* SPDX-License-Identifier: MIT */
/*
 * transport.h - opening the byte streams a migration runs over. Knows URIs
 * and sockets, nothing about the protocol.
 *
 * URIs: "tcp:HOST:PORT" (HOST may be a name, an IPv4 address or an IPv6
 * address in brackets; PORT 0 on a listener picks a free one), "unix:PATH",
 * "file:PATH" and "fd:N" (a socket the caller already opened).
 */
#ifndef FY_TRANSPORT_H
#define FY_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

enum fy_uri_kind {
	FY_URI_TCP = 1,
	FY_URI_UNIX = 2,
	FY_URI_FILE = 3, /* a snapshot: written by a source, read by restore */
	FY_URI_FD = 4,	 /* a descriptor the caller owns */
};

struct fy_uri {
	enum fy_uri_kind kind;
	char host[256];
	char port[16];
	char path[108]; /* sizeof(sun_path) */
	int fd;		/* FY_URI_FD */
};

/* Parse @s ("tcp:HOST:PORT", "unix:PATH", "file:PATH", "fd:N"). Return 0
 * or -EINVAL with a reason in @err. */
int fy_uri_parse(const char *s, struct fy_uri *u, char *err, size_t errlen);

/* Connect; *fd is a blocking socket. A TCP socket gets the congestion
 * control @cc (NULL: the system's default) before it connects; a name the
 * kernel refuses is an error that says what it offers. 0 or negative errno
 * with @err set. */
int fy_transport_connect(const struct fy_uri *u, const char *cc, int *fd,
			 char *err, size_t errlen);

/* Listen (a stale UNIX socket file is replaced). */
int fy_transport_listen(const struct fy_uri *u, int *fd, char *err,
			size_t errlen);

/*
 * fy_transport_accept() - wait up to @timeout_ms for a connection.
 * Return: 0 with *fd set, -ETIMEDOUT, or another negative errno.
 */
int fy_transport_accept(int lfd, int *fd, int timeout_ms);

/*
 * fy_transport_tune() - settings every migration socket gets: no Nagle
 * delay for the small control records, and send/receive timeouts of
 * @tick_ms so a blocked call returns regularly to check for cancellation.
 */
void fy_transport_tune(int fd, int tick_ms);
/*
 * fy_transport_stall_opts() - TCP_USER_TIMEOUT of @limit_ms and keepalive
 * probes within it. Return: 0, 1 for a socket that is not TCP (skipped),
 * or a negative errno with the option refused in *@failed.
 */
int fy_transport_stall_opts(int fd, uint32_t limit_ms, const char **failed);
/* Keepalive and TCP_USER_TIMEOUT: a dead peer within about @idle_s * 3. */
void fy_transport_watch(int fd, int idle_s);

/*
 * fy_transport_set_buffer() - size the send (@send) or receive buffer of
 * @fd for @bytes of data, past the unprivileged limit when permitted.
 * Return: the size the kernel reports, or a negative errno.
 */
int fy_transport_set_buffer(int fd, bool send, size_t bytes);

/*
 * fy_transport_congestion() - the congestion control of a connected socket:
 * with @automatic (no name was configured), the system's default, except
 * that a pacing one (BBR) gives way to cubic, or reno, on a connection
 * within the host (see docs/design-notes.md); never fails, the default
 * stays if the kernel refuses. @used receives the algorithm the socket
 * then uses ("" for UNIX sockets).
 */
void fy_transport_congestion(int fd, bool automatic, char *used,
			     size_t usedlen);

/* "ADDR:PORT" of the socket's own end (logs); "unix" or "?" otherwise. */
void fy_transport_local_name(int fd, char *buf, size_t len);

/* The kernel's ceiling for receive buffers it sizes itself (tcp_rmem). */
size_t fy_transport_rcvbuf_ceiling(void);

/*
 * fy_transport_borrow() - a descriptor of our own for the caller's socket
 * @u->fd ("fd:N"), to use and close without closing the caller's: a
 * duplicate (close-on-exec). *@listening says whether it is a listening
 * socket. 0, or a negative errno with @err set (not open, not a stream
 * socket).
 */
int fy_transport_borrow(const struct fy_uri *u, int *fd, bool *listening,
			char *err, size_t errlen);

/* The URI a listener @lfd of @u can be reached at, with the port the
 * kernel chose for "tcp:HOST:0" ("tcp:127.0.0.1:40123", "unix:PATH",
 * "fd:N"). */
void fy_transport_listen_uri(const struct fy_uri *u, int lfd, char *buf,
			     size_t len);

/* Remove the socket file of a UNIX listener. */
void fy_transport_unlink(const struct fy_uri *u);

/* What the kernel knows of a connected socket's peer (peer.c). Its end
 * is closed (shut down for writing, or gone): a FIN or a reset arrived. */
bool fy_transport_peer_closed(int fd);
/* TCP: everything written so far, as the peer's acknowledgements count
 * it (the bytes acknowledged plus those queued); -ENOTSUP for a socket
 * that does not count acknowledgements (UNIX). */
int fy_transport_sent_mark(int fd, uint64_t *mark);
/* TCP: the peer never acknowledged everything up to @mark (it still
 * counts after a reset); false when that is not known. */
bool fy_transport_acked_below(int fd, uint64_t mark);
/*
 * ---- descriptors over UNIX sockets (fdpass.c) ----
 *
 * A local migration passes the guest memory's files (SCM_RIGHTS). The
 * descriptors ride on the first byte of one sendmsg(); the receiver takes
 * them from whichever recvmsg() returns that byte, into a stash that the
 * record which describes them empties. Every descriptor the kernel hands
 * over is either in the stash or closed: nothing leaks, whatever arrives.
 */
#define FY_FDS_PER_MSG 253 /* the kernel's SCM_MAX_FD: one sendmsg()'s most */
#define FY_FDS_MAX 4098	   /* a stash's most: FY_DEVFDS_MAX and a margin */
struct fy_fd_stash {
	int *fd;       /* allocated as descriptors arrive; freed by clear */
	unsigned n, cap;
	bool overflow; /* more arrived than fit (or no memory for them), or
			  the kernel truncated: the extra ones are closed */
};
/* Room for a control message carrying FY_FDS_PER_MSG descriptors: one
 * recvmsg() returns the descriptors of one sendmsg() at most. */
#define FY_FDS_CMSG_SPACE (64 + FY_FDS_PER_MSG * sizeof(int))

/* Is @fd a UNIX socket (the only kind that carries descriptors)? */
bool fy_transport_is_unix(int fd);
/*
 * fy_transport_sendmsg_fds() - one sendmsg() of @iov with @fds (1..
 * FY_FDS_PER_MSG) attached. Return: the bytes sent, or -1 with errno (as
 * sendmsg). The descriptors went with the first byte when it returns > 0.
 */
ssize_t fy_transport_sendmsg_fds(int sock, const struct iovec *iov, int niov,
				 const int *fds, unsigned nfds, int flags);
/* After a recvmsg() whose msg_control had FY_FDS_CMSG_SPACE bytes: move
 * the descriptors it carried into @st (closing what does not fit). */
void fy_fd_stash_take(struct fy_fd_stash *st, const struct msghdr *mh);
/* Close every descriptor in @st, empty it and free its array. */
void fy_fd_stash_clear(struct fy_fd_stash *st);

/* Files read and written by offset (snapshots): whole buffers, EINTR
 * retried. fy_pread_full() stops early only at the end of the file
 * (*got < n). */
int fy_pread_full(int fd, void *buf, size_t n, uint64_t off, size_t *got);
int fy_pwrite_full(int fd, const void *buf, size_t n, uint64_t off);

#endif /* FY_TRANSPORT_H */
