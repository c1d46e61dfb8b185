// SPDX-License-Identifier: MIT
/*
 * reader.c - forward-only buffered reading of a stream from an fd (file,
 * pipe, socket). The inspector never seeks, so stdin works, and never
 * holds more than one buffer of it.
 */
#include "inspect/inspect.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/**
 * fy_in_init() - set up a reader of @fd with a @cap-byte buffer.
 * @in: the reader.
 * @fd: the stream, positioned at its first byte.
 * @cap: buffer size (> 0).
 *
 * Return: 0 or -ENOMEM.
 */
int fy_in_init(struct fy_in *in, int fd, size_t cap)
{
	memset(in, 0, sizeof(*in));
	in->fd = fd;
	in->cap = cap;
	in->buf = malloc(cap);
	return in->buf ? 0 : -ENOMEM;
}

/**
 * fy_in_free() - release the buffer (the fd stays open).
 * @in: the reader.
 */
void fy_in_free(struct fy_in *in)
{
	free(in->buf);
	in->buf = NULL;
}

/* Refill an empty buffer; 0 (maybe at EOF) or a negative errno. */
static int fill(struct fy_in *in)
{
	ssize_t r;

	if (in->err)
		return in->err;
	if (in->pos < in->len || in->eof)
		return 0;
	in->pos = in->len = 0;
	for (;;) {
		r = read(in->fd, in->buf, in->cap);
		if (r >= 0)
			break;
		if (errno != EINTR) {
			in->err = -errno;
			return in->err;
		}
	}
	if (r == 0)
		in->eof = true;
	in->len = (size_t)r;
	return 0;
}

/**
 * fy_in_peek() - borrow buffered bytes, refilling when empty.
 * @in: the reader.
 * @p: receives a pointer into the buffer, valid until the next call.
 * @max: most bytes wanted.
 * @got: receives how many are available (0 only at the end).
 *
 * The bytes count as read.
 *
 * Return: 0 or a negative errno from read(2).
 */
int fy_in_peek(struct fy_in *in, const uint8_t **p, size_t max, size_t *got)
{
	size_t n;
	int rc = fill(in);

	*got = 0;
	if (rc)
		return rc;
	n = in->len - in->pos;
	if (n > max)
		n = max;
	*p = in->buf + in->pos;
	in->pos += n;
	in->off += n;
	*got = n;
	return 0;
}

/**
 * fy_in_read() - read @n bytes, fewer only at the end of the stream.
 * @in: the reader.
 * @dst: where to copy them, or NULL to drop them.
 * @n: bytes wanted.
 * @got: receives how many were read.
 *
 * Return: 0 or a negative errno from read(2).
 */
int fy_in_read(struct fy_in *in, void *dst, size_t n, size_t *got)
{
	uint8_t *d = dst;
	const uint8_t *p;
	size_t k;
	int rc;

	*got = 0;
	while (*got < n) {
		rc = fy_in_peek(in, &p, n - *got, &k);
		if (rc)
			return rc;
		if (!k)
			break;
		if (d)
			memcpy(d + *got, p, k);
		*got += k;
	}
	return 0;
}

/**
 * fy_in_at_end() - whether the stream has no byte left.
 * @in: the reader.
 *
 * Return: true at the end (or after a read error, which the next read
 * reports).
 */
bool fy_in_at_end(struct fy_in *in)
{
	if (fill(in))
		return false;
	return in->pos == in->len && in->eof;
}
