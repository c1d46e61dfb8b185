// SPDX-License-Identifier: MIT
/*
 * tcprepair.c - TCP_REPAIR freeze/dump/restore/thaw of established TCP
 * sockets (see tcprepair.h). The implementation follows in the next commits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tcprepair.h"

int tcpr_available(char *err, size_t len)
{
	snprintf(err, len, "TCP_REPAIR support is not built yet");
	return -ENOSYS;
}

int tcpr_freeze(int fd, char *err, size_t len)
{
	(void)fd;
	return tcpr_available(err, len);
}

int tcpr_thaw(int fd, char *err, size_t len)
{
	(void)fd;
	return tcpr_available(err, len);
}

int tcpr_dump(int fd, struct tcpr_conn *c, char *err, size_t len)
{
	(void)fd;
	(void)c;
	return tcpr_available(err, len);
}

int tcpr_restore(const struct tcpr_conn *c, int *fd, char *err, size_t len)
{
	(void)c;
	*fd = -1;
	return tcpr_available(err, len);
}

void tcpr_discard(int fd)
{
	if (fd >= 0)
		close(fd);
}

void tcpr_conn_clear(struct tcpr_conn *c)
{
	free(c->sndq);
	free(c->rcvq);
	memset(c, 0, sizeof(*c));
}

void tcpr_visit(ferry_visitor *v, struct tcpr_conn *c)
{
	(void)c;
	ferry_visit_fail(v, -ENOSYS, "TCP_REPAIR support is not built yet");
}
