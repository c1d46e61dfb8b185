// SPDX-License-Identifier: MIT
/*
 * hostile_local.c - hostile MEMORY_FDS records (local migration by fds):
 * each is refused with ERROR before the destination maps anything, and
 * the descriptors that came with it are not kept (the in-process run's
 * descriptor count is checked by hostile.c's leak check where it has one;
 * here the refusal and its words are). Against a TCP destination
 * (ferry-vm in hostile_vm.sh) the refusal is the missing capability.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "hostile_cases.h"
#include "hostile_peer.h"
#include "transport/transport.h"

/* A MEMORY_FDS record for one region of @size bytes in 4 KiB pages. */
static void b_memory_fds(struct fy_buf *b, uint32_t seq, uint64_t size)
{
	struct fy_memory_fds m = { .count = 1 };
	struct fy_buf body;

	m.e[0] = (struct fy_memfd_entry){ 0, 4096, size, 0 };
	fy_buf_init(&body);
	fy_memory_fds_encode(&body, &m);
	b_body_rec(b, FY_REC_MEMORY_FDS, seq, &body);
	fy_buf_free(&body);
}

/*
 * Over TCP (a ferry-vm destination listening on tcp:) the capability is
 * never offered: every MEMORY_FDS is refused for that, whatever it says,
 * and carries no descriptor (TCP cannot).
 */
static bool tcp_refusal(struct ctx *c, int *code, const char **text)
{
	if (fy_transport_is_unix(c->fd))
		return false;
	*code = FERRY_EPROTO;
	*text = "local-fds capability";
	return true;
}

/* Send @b with @fd attached (SCM_RIGHTS), then expect the refusal. */
static void hostile_fd(struct ctx *c, struct fy_buf *b, int fd, int code,
		       const char *text)
{
	struct iovec iov = { b->data, b->len };
	ssize_t w;

	if (tcp_refusal(c, &code, &text)) {
		close(fd);
		hostile(c, b, c->seq, code, text);
		return;
	}
	w = fy_transport_sendmsg_fds(c->fd, &iov, 1, &fd, 1, MSG_NOSIGNAL);
	close(fd);
	if (w != (ssize_t)b->len) {
		fy_buf_free(b);
		FAIL(c, "sendmsg with a descriptor: %zd (%s)", w, strerror(errno));
		return;
	}
	fy_buf_free(b);
	expect_error(c, c->seq, code, text);
}

/* A memfd of @size bytes, or -1. */
static int memfd_of(uint64_t size)
{
	int fd = memfd_create("hostile", MFD_CLOEXEC);

	if (fd >= 0 && ftruncate(fd, (off_t)size)) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* No descriptor comes with the record. */
void c_memory_fds_without_fds(struct ctx *c)
{
	const char *text = "descriptors came with it";
	int code = FERRY_EPROTO;
	struct fy_buf b;

	if (!configured(c))
		return;
	fy_buf_init(&b);
	tcp_refusal(c, &code, &text);
	b_memory_fds(&b, ++c->seq, c->size);
	hostile(c, &b, c->seq, code, text);
}

/* A pipe is no file to map. */
void c_memory_fds_pipe(struct ctx *c)
{
	struct fy_buf b;
	int p[2];

	if (!configured(c))
		return;
	CHECK(c, !pipe2(p, O_CLOEXEC), "pipe: %s", strerror(errno));
	close(p[1]);
	fy_buf_init(&b);
	b_memory_fds(&b, ++c->seq, c->size);
	hostile_fd(c, &b, p[0], -EINVAL, "not a file");
}

/* The file is shorter than the region. */
void c_memory_fds_short_file(struct ctx *c)
{
	struct fy_buf b;
	int fd = memfd_of(c->size / 2);

	if (fd < 0 || !configured(c)) {
		if (fd < 0)
			FAIL(c, "memfd: %s", strerror(errno));
		else
			close(fd);
		return;
	}
	fy_buf_init(&b);
	b_memory_fds(&b, ++c->seq, c->size);
	hostile_fd(c, &b, fd, FERRY_EMISMATCH, "ram0");
}

/* The entry's size is not the region's. */
void c_memory_fds_other_size(struct ctx *c)
{
	struct fy_buf b;
	int fd = memfd_of(c->size * 2);

	if (fd < 0 || !configured(c)) {
		if (fd < 0)
			FAIL(c, "memfd: %s", strerror(errno));
		else
			close(fd);
		return;
	}
	fy_buf_init(&b);
	b_memory_fds(&b, ++c->seq, c->size * 2);
	hostile_fd(c, &b, fd, FERRY_EMISMATCH, "ram0");
}

/* A truncated body: refused as malformed, the descriptor not kept. */
void c_memory_fds_short_body(struct ctx *c)
{
	struct fy_buf b;
	int fd = memfd_of(c->size);

	if (fd < 0 || !configured(c)) {
		if (fd < 0)
			FAIL(c, "memfd: %s", strerror(errno));
		else
			close(fd);
		return;
	}
	fy_buf_init(&b);
	b_rec(&b, FY_REC_MEMORY_FDS, ++c->seq, 0, "\x01\0\0\0\0\0\0\0\0", 9);
	hostile_fd(c, &b, fd, -EBADMSG, "MEMORY_FDS");
}

/* In a pass: a local migration copies nothing, and a pass is copying. */
void c_memory_fds_in_pass(struct ctx *c)
{
	const char *text = "not valid in state pass";
	int code = FERRY_EPROTO;
	struct fy_buf b;

	if (!in_pass(c))
		return;
	fy_buf_init(&b);
	tcp_refusal(c, &code, &text);
	b_memory_fds(&b, ++c->seq, c->size);
	hostile(c, &b, c->seq, code, text);
}
