// SPDX-License-Identifier: MIT
/*
 * netaddr.c - the guest's address on a host interface (see netaddr.h). The
 * implementation follows in the next commits.
 */
#include <errno.h>
#include <stdio.h>

#include "netaddr.h"

int netaddr_parse(const char *s, struct netaddr *a, char *err, size_t len)
{
	(void)s;
	(void)a;
	snprintf(err, len, "address moves are not built yet");
	return -ENOSYS;
}

int netaddr_add(const struct netaddr *a, const char *ifname, char *err,
		size_t len)
{
	(void)ifname;
	return netaddr_parse(NULL, (struct netaddr *)a, err, len);
}

int netaddr_del(const struct netaddr *a, const char *ifname, char *err,
		size_t len)
{
	(void)ifname;
	return netaddr_parse(NULL, (struct netaddr *)a, err, len);
}

int netaddr_announce(const struct netaddr *a, const char *ifname, char *err,
		     size_t len)
{
	(void)ifname;
	return netaddr_parse(NULL, (struct netaddr *)a, err, len);
}
