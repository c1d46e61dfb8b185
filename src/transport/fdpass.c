// SPDX-License-Identifier: MIT
/*
 * fdpass.c - passing descriptors over UNIX stream sockets (SCM_RIGHTS),
 * for local migration: the memory's files, and the devices' descriptors.
 *
 * The receiving side's one rule: a descriptor the kernel installed in this
 * process is either kept in a stash, whose owner closes it, or closed at
 * once. recvmsg() is always given room for FY_FDS_PER_MSG descriptors (the
 * most one sendmsg() carries, and a stream recvmsg() never returns those
 * of two) and MSG_CMSG_CLOEXEC, so none escapes into a child; when more
 * arrive than the room holds, the kernel closes the rest itself and says
 * MSG_CTRUNC. The stash grows as descriptors come, up to FY_FDS_MAX.
 */
#include "transport/transport.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/**
 * fy_transport_is_unix() - whether @fd is a UNIX socket.
 * @fd: a descriptor.
 *
 * Return: true for AF_UNIX sockets.
 */
bool fy_transport_is_unix(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	memset(&ss, 0, sizeof(ss));
	return getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
	       ss.ss_family == AF_UNIX;
}

/**
 * fy_transport_sendmsg_fds() - send @iov with @fds attached.
 * @sock: a connected UNIX stream socket.
 * @iov: what to send (at least one byte).
 * @niov: its entries.
 * @fds: the descriptors, 1..FY_FDS_PER_MSG of them.
 * @nfds: how many.
 * @flags: sendmsg() flags.
 *
 * Return: the bytes sent, or -1 with errno set (EINVAL for a count out of
 * range).
 */
ssize_t fy_transport_sendmsg_fds(int sock, const struct iovec *iov, int niov,
				 const int *fds, unsigned nfds, int flags)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(FY_FDS_PER_MSG * sizeof(int))];
	} u;
	struct msghdr mh = {
		.msg_iov = (struct iovec *)iov,
		.msg_iovlen = (size_t)niov,
	};
	struct cmsghdr *cm;

	if (!nfds || nfds > FY_FDS_PER_MSG) {
		errno = EINVAL;
		return -1;
	}
	memset(&u, 0, sizeof(u));
	mh.msg_control = u.buf;
	mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
	memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	return sendmsg(sock, &mh, flags);
}

/* Room for one more descriptor in @st; false at FY_FDS_MAX or without
 * memory (the caller closes it then). */
static bool stash_room(struct fy_fd_stash *st)
{
	unsigned cap;
	int *p;

	if (st->n < st->cap)
		return true;
	if (st->cap >= FY_FDS_MAX)
		return false;
	cap = st->cap ? st->cap * 4 : 64;
	if (cap > FY_FDS_MAX)
		cap = FY_FDS_MAX;
	p = realloc(st->fd, cap * sizeof(*p));
	if (!p)
		return false;
	st->fd = p;
	st->cap = cap;
	return true;
}

/**
 * fy_fd_stash_take() - keep the descriptors a recvmsg() received.
 * @st: the stash.
 * @mh: the message header recvmsg() filled.
 *
 * Descriptors past FY_FDS_MAX (or that find no memory) are closed and
 * mark the stash overflowed, as does a truncated control buffer: a record
 * that then describes them cannot be trusted to be whole. Control
 * messages of other kinds carry no descriptors and are ignored.
 */
void fy_fd_stash_take(struct fy_fd_stash *st, const struct msghdr *mh)
{
	struct cmsghdr *cm;

	if (mh->msg_flags & MSG_CTRUNC)
		st->overflow = true;
	for (cm = CMSG_FIRSTHDR((struct msghdr *)mh); cm;
	     cm = CMSG_NXTHDR((struct msghdr *)mh, cm)) {
		size_t n;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
		    cm->cmsg_len < CMSG_LEN(0))
			continue;
		n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(fd));
			if (fd < 0)
				continue;
			if (stash_room(st)) {
				st->fd[st->n++] = fd;
			} else {
				close(fd);
				st->overflow = true;
			}
		}
	}
}

/**
 * fy_fd_stash_clear() - close every kept descriptor and free the array.
 * @st: the stash; empty afterwards.
 */
void fy_fd_stash_clear(struct fy_fd_stash *st)
{
	for (unsigned i = 0; i < st->n; i++)
		if (st->fd[i] >= 0)
			close(st->fd[i]);
	free(st->fd);
	st->fd = NULL;
	st->n = st->cap = 0;
	st->overflow = false;
}
