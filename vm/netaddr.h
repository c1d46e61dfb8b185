/* SPDX-License-Identifier: MIT */
/*
 * netaddr.h - the guest's address on a host interface: parse it, add and
 * remove it with rtnetlink, and announce it (gratuitous ARP over AF_PACKET,
 * like QEMU's announce-self) so neighbours' caches follow it to its new
 * host. Adding and removing need CAP_NET_ADMIN, announcing CAP_NET_RAW.
 */
#ifndef FY_VM_NETADDR_H
#define FY_VM_NETADDR_H

#include <stddef.h>
#include <stdint.h>

struct netaddr {
	int family;		/* AF_INET or AF_INET6 */
	uint8_t addr[16];	/* network byte order; v4 in the first 4 */
	uint8_t prefix;		/* prefix length in bits */
};

/* All return 0 or -errno and write a one-line reason into err. */
int netaddr_parse(const char *s, struct netaddr *a, char *err, size_t len); /* ADDR/PREFIX, v4 (v6 optional) */
int netaddr_add(const struct netaddr *a, const char *ifname, char *err, size_t len);  /* rtnetlink RTM_NEWADDR */
int netaddr_del(const struct netaddr *a, const char *ifname, char *err, size_t len);  /* RTM_DELADDR */
int netaddr_announce(const struct netaddr *a, const char *ifname, char *err, size_t len);
				/* gratuitous ARP (AF_PACKET), a few times, like QEMU's announce-self */

#endif /* FY_VM_NETADDR_H */
