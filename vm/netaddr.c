// SPDX-License-Identifier: MIT
/*
 * netaddr.c - the guest's address on a host interface (see netaddr.h):
 * parsed from ADDR/PREFIX, added and removed with rtnetlink, and announced
 * so that neighbours' caches follow it when it moves to another host.
 *
 * The announcement is what QEMU's announce-self does after a migration:
 * a few unsolicited packets, spaced out, so that one lost packet or a
 * switch that learns late does not leave a neighbour on the old host.
 * IPv4 sends gratuitous ARP requests (sender and target address both the
 * guest's); IPv6 sends unsolicited neighbour advertisements with the
 * override flag to all nodes. The first packet goes out before
 * netaddr_announce() returns (so its errors are reported); the later
 * rounds go out from a detached thread, which keeps the caller's downtime
 * free of the spacing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "errf.h"
#include "netaddr.h"

/* QEMU's announce-self defaults: 5 rounds, the first gap 50 ms, each gap
 * 100 ms longer than the one before. */
#define ANNOUNCE_ROUNDS 5
#define ANNOUNCE_FIRST_MS 50
#define ANNOUNCE_STEP_MS 100


static size_t addr_len(const struct netaddr *a)
{
	return a->family == AF_INET ? 4 : 16;
}

/**
 * netaddr_parse() - parse ADDR/PREFIX (IPv4 or IPv6; without /PREFIX the
 * address alone: /32 or /128).
 * @s: the text.
 * @a: receives the address.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0 or -EINVAL.
 */
int netaddr_parse(const char *s, struct netaddr *a, char *err, size_t len)
{
	char buf[INET6_ADDRSTRLEN + 8], *slash, *end;
	unsigned long prefix;

	memset(a, 0, sizeof(*a));
	if (!s || strlen(s) >= sizeof(buf))
		return vm_errf(err, len, -EINVAL, "address '%s'", s ? s : "");
	strcpy(buf, s);
	slash = strchr(buf, '/');
	if (slash)
		*slash++ = '\0';
	if (inet_pton(AF_INET, buf, a->addr) == 1)
		a->family = AF_INET;
	else if (inet_pton(AF_INET6, buf, a->addr) == 1)
		a->family = AF_INET6;
	else
		return vm_errf(err, len, -EINVAL, "address '%s' is neither IPv4 "
			    "nor IPv6 (want ADDR/PREFIX)", s);
	a->prefix = (uint8_t)(addr_len(a) * 8);
	if (!slash)
		return 0;
	errno = 0;
	prefix = strtoul(slash, &end, 10);
	if (!*slash || *end || errno || prefix < 1 ||
	    prefix > addr_len(a) * 8)
		return vm_errf(err, len, -EINVAL, "prefix '/%s' of '%s' out of "
			    "range (1..%zu)", slash, s, addr_len(a) * 8);
	a->prefix = (uint8_t)prefix;
	return 0;
}

/* ---- rtnetlink ---- */

struct addr_req {
	struct nlmsghdr nh;
	struct ifaddrmsg ifa;
	char attrs[128];
};

static void rta_add(struct addr_req *r, unsigned short type,
		    const void *data, size_t n)
{
	struct rtattr *rta = (struct rtattr *)((char *)r +
					       NLMSG_ALIGN(r->nh.nlmsg_len));

	rta->rta_type = type;
	rta->rta_len = (unsigned short)RTA_LENGTH(n);
	memcpy(RTA_DATA(rta), data, n);
	r->nh.nlmsg_len = NLMSG_ALIGN(r->nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

/* Send one request and wait for the kernel's answer (an error or ack). */
static int nl_talk(struct nlmsghdr *nh)
{
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	struct timeval tv = { .tv_sec = 2 };
	char buf[4096];
	ssize_t n;
	int fd, rc;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	nh->nlmsg_seq = 1;
	if (sendto(fd, nh, nh->nlmsg_len, 0, (struct sockaddr *)&kernel,
		   sizeof(kernel)) < 0) {
		rc = -errno;
		goto out;
	}
	for (;;) {
		n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0) {
			rc = errno == EAGAIN ? -ETIMEDOUT : -errno;
			goto out;
		}
		for (struct nlmsghdr *h = (void *)buf; NLMSG_OK(h, (size_t)n);
		     h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != nh->nlmsg_seq)
				continue;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				rc = e->error;
				goto out;
			}
		}
	}
out:
	close(fd);
	return rc;
}

static int addr_msg(const struct netaddr *a, const char *ifname, int type,
		    int flags, char *err, size_t len)
{
	const char *what = type == RTM_NEWADDR ? "add" : "remove";
	struct addr_req r;
	char text[INET6_ADDRSTRLEN] = "?";
	unsigned idx;
	uint32_t ifa_flags = IFA_F_NODAD;
	int rc;

	inet_ntop(a->family, a->addr, text, sizeof(text));
	if (a->family != AF_INET && a->family != AF_INET6)
		return vm_errf(err, len, -EAFNOSUPPORT, "%s address: family %d",
			    what, a->family);
	idx = if_nametoindex(ifname ? ifname : "");
	if (!idx)
		return vm_errf(err, len, -ENODEV, "%s %s/%u: interface '%s'",
			    what, text, a->prefix, ifname ? ifname : "");
	memset(&r, 0, sizeof(r));
	r.nh.nlmsg_len = NLMSG_LENGTH(sizeof(r.ifa));
	r.nh.nlmsg_type = (unsigned short)type;
	r.nh.nlmsg_flags = (unsigned short)(NLM_F_REQUEST | NLM_F_ACK | flags);
	r.ifa.ifa_family = (unsigned char)a->family;
	r.ifa.ifa_prefixlen = a->prefix;
	r.ifa.ifa_scope = RT_SCOPE_UNIVERSE;
	r.ifa.ifa_index = idx;
	rta_add(&r, IFA_LOCAL, a->addr, addr_len(a));
	rta_add(&r, IFA_ADDRESS, a->addr, addr_len(a));
	/* No duplicate address detection: the address has just left the
	 * other host, and a tentative address could not be bound. */
	if (type == RTM_NEWADDR)
		rta_add(&r, IFA_FLAGS, &ifa_flags, sizeof(ifa_flags));
	rc = nl_talk(&r.nh);
	if (rc)
		return vm_errf(err, len, rc, "%s %s/%u on %s", what, text,
			    a->prefix, ifname);
	return 0;
}

/**
 * netaddr_add() - put the address on an interface (RTM_NEWADDR, without
 * duplicate address detection). An address that is already there is
 * replaced, so adding twice is not an error.
 * @a: the address.
 * @ifname: the interface.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0, -ENODEV, -EPERM (no CAP_NET_ADMIN), or another -errno.
 */
int netaddr_add(const struct netaddr *a, const char *ifname, char *err,
		size_t len)
{
	return addr_msg(a, ifname, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE,
			err, len);
}

/**
 * netaddr_del() - take the address off an interface (RTM_DELADDR). An
 * address that is not there is not an error: the goal is its absence.
 * @a: the address.
 * @ifname: the interface.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * Return: 0, -ENODEV, -EPERM, or another -errno.
 */
int netaddr_del(const struct netaddr *a, const char *ifname, char *err,
		size_t len)
{
	int rc = addr_msg(a, ifname, RTM_DELADDR, 0, err, len);

	if (rc == -EADDRNOTAVAIL) {
		if (err && len)
			err[0] = '\0';
		return 0;
	}
	return rc;
}

/* ---- announcements ---- */

struct announce {
	int fd;
	int family;
	struct sockaddr_storage to;
	socklen_t tolen;
	uint8_t pkt[128];
	size_t n;
};

/* A gratuitous ARP request: "who has ADDR? tell ADDR at MAC". */
static void arp_build(struct announce *an, const struct netaddr *a,
		      const uint8_t mac[ETH_ALEN], unsigned idx)
{
	struct sockaddr_ll *to = (struct sockaddr_ll *)&an->to;
	struct arphdr *h = (struct arphdr *)an->pkt;
	uint8_t *p = an->pkt + sizeof(*h);

	h->ar_hrd = htons(ARPHRD_ETHER);
	h->ar_pro = htons(ETH_P_IP);
	h->ar_hln = ETH_ALEN;
	h->ar_pln = 4;
	h->ar_op = htons(ARPOP_REQUEST);
	memcpy(p, mac, ETH_ALEN);
	memcpy(p + ETH_ALEN, a->addr, 4);
	memset(p + ETH_ALEN + 4, 0, ETH_ALEN);
	memcpy(p + 2 * ETH_ALEN + 4, a->addr, 4);
	an->n = sizeof(*h) + 2 * ETH_ALEN + 8;
	to->sll_family = AF_PACKET;
	to->sll_protocol = htons(ETH_P_ARP);
	to->sll_ifindex = (int)idx;
	to->sll_halen = ETH_ALEN;
	memset(to->sll_addr, 0xff, ETH_ALEN);
	an->tolen = sizeof(*to);
}

/* An unsolicited neighbour advertisement (RFC 4861 7.2.6) to ff02::1;
 * the kernel fills in the checksum of an ICMPv6 raw socket. */
static void na_build(struct announce *an, const struct netaddr *a,
		     const uint8_t mac[ETH_ALEN], unsigned idx)
{
	struct sockaddr_in6 *to = (struct sockaddr_in6 *)&an->to;
	struct nd_neighbor_advert *na = (void *)an->pkt;
	struct nd_opt_hdr *o = (void *)(an->pkt + sizeof(*na));

	memset(na, 0, sizeof(*na));
	na->nd_na_type = ND_NEIGHBOR_ADVERT;
	na->nd_na_flags_reserved = ND_NA_FLAG_OVERRIDE;
	memcpy(&na->nd_na_target, a->addr, 16);
	o->nd_opt_type = ND_OPT_TARGET_LINKADDR;
	o->nd_opt_len = 1; /* in units of 8 bytes */
	memcpy(o + 1, mac, ETH_ALEN);
	an->n = sizeof(*na) + 8;
	to->sin6_family = AF_INET6;
	inet_pton(AF_INET6, "ff02::1", &to->sin6_addr);
	to->sin6_scope_id = idx;
	an->tolen = sizeof(*to);
}

static int announce_socket(const struct netaddr *a, const char *ifname)
{
	int hops = 255, fd;

	if (a->family == AF_INET)
		return socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC,
			      htons(ETH_P_ARP));
	fd = socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMPV6);
	if (fd < 0)
		return -1;
	/* Neighbour discovery packets must arrive with hop limit 255. */
	if (setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops,
		       sizeof(hops)) ||
	    setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname,
		       (socklen_t)strlen(ifname))) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int announce_send(const struct announce *an)
{
	if (sendto(an->fd, an->pkt, an->n, 0, (const struct sockaddr *)&an->to,
		   an->tolen) < 0)
		return -errno;
	return 0;
}

static void *announce_rounds(void *arg)
{
	struct announce *an = arg;
	unsigned gap = ANNOUNCE_FIRST_MS;

	for (int i = 1; i < ANNOUNCE_ROUNDS; i++) {
		struct timespec ts = { .tv_sec = gap / 1000,
				       .tv_nsec = (long)(gap % 1000) * 1000000 };

		nanosleep(&ts, NULL);
		announce_send(an);
		gap += ANNOUNCE_STEP_MS;
	}
	close(an->fd);
	free(an);
	return NULL;
}

/* The interface's Ethernet address, or -EOPNOTSUPP for other links. */
static int if_mac(const char *ifname, uint8_t mac[ETH_ALEN])
{
	struct ifreq ifr = { 0 };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), rc = 0;

	if (fd < 0)
		return -errno;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(fd, SIOCGIFHWADDR, &ifr))
		rc = -errno;
	else if (ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER)
		rc = -EOPNOTSUPP;
	else
		memcpy(mac, ifr.ifr_hwaddr.sa_data, ETH_ALEN);
	close(fd);
	return rc;
}

/**
 * netaddr_announce() - tell the link the address now lives here: gratuitous
 * ARP (IPv4) or unsolicited neighbour advertisements (IPv6), five rounds
 * spaced like QEMU's announce-self (gaps of 50, 150, 250, 350 ms).
 * @a: the address (already on @ifname).
 * @ifname: an Ethernet interface.
 * @err: receives the reason on failure.
 * @len: size of @err.
 *
 * The first packet is sent before the return; the rest follow from a
 * detached thread.
 *
 * Return: 0, -ENODEV, -EOPNOTSUPP (not Ethernet), -EPERM (no CAP_NET_RAW),
 * or another -errno.
 */
int netaddr_announce(const struct netaddr *a, const char *ifname, char *err,
		     size_t len)
{
	struct announce *an;
	uint8_t mac[ETH_ALEN];
	pthread_t t;
	unsigned idx = if_nametoindex(ifname ? ifname : "");
	int rc;

	if (!idx)
		return vm_errf(err, len, -ENODEV, "announce: interface '%s'",
			    ifname ? ifname : "");
	if (a->family != AF_INET && a->family != AF_INET6)
		return vm_errf(err, len, -EAFNOSUPPORT, "announce: family %d",
			    a->family);
	if ((rc = if_mac(ifname, mac)))
		return vm_errf(err, len, rc, "announce: %s is not an Ethernet "
			    "interface", ifname);
	an = calloc(1, sizeof(*an));
	if (!an)
		return vm_errf(err, len, -ENOMEM, "announce");
	an->family = a->family;
	if (a->family == AF_INET)
		arp_build(an, a, mac, idx);
	else
		na_build(an, a, mac, idx);
	an->fd = announce_socket(a, ifname);
	if (an->fd < 0) {
		rc = vm_errf(err, len, -errno, "announce: socket on %s", ifname);
		free(an);
		return rc;
	}
	if ((rc = announce_send(an))) {
		vm_errf(err, len, rc, "announce: sending on %s", ifname);
		goto fail;
	}
	if ((rc = pthread_create(&t, NULL, announce_rounds, an))) {
		vm_errf(err, len, -rc, "announce: thread");
		rc = -rc;
		goto fail;
	}
	pthread_detach(t);
	return 0;
fail:
	close(an->fd);
	free(an);
	return rc;
}
