// SPDX-License-Identifier: MIT
/*
 * test_netaddr.c - vm/netaddr.c on a real link: in a network namespace of
 * the test's own, a veth pair (fyv0, fyv1); the guest's address is added
 * to and removed from fyv0 (getifaddrs() must agree), and its announcement
 * must arrive on fyv1, where a packet socket listens.
 *
 * Needs root (a network namespace, rtnetlink, packet sockets) and the ip
 * command to create the veth pair; skips with the reason otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/icmp6.h>
#include <netinet/ip6.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "unit.h"
#include "netaddr.h"

static char skip_reason[256];

static int group_setup(void **state)
{
	(void)state;
	if (geteuid() != 0)
		snprintf(skip_reason, sizeof(skip_reason),
			 "needs root (a network namespace and rtnetlink)");
	else if (unshare(CLONE_NEWNET))
		snprintf(skip_reason, sizeof(skip_reason),
			 "unshare(CLONE_NEWNET): %s", strerror(errno));
	else if (system("ip link add fyv0 type veth peer name fyv1 && "
			"ip link set fyv0 up && ip link set fyv1 up"))
		snprintf(skip_reason, sizeof(skip_reason),
			 "cannot create a veth pair with the ip command");
	if (skip_reason[0])
		printf("# SKIP test_netaddr: %s\n", skip_reason);
	return 0;
}

#define NEED_ENV()                  \
	do {                        \
		if (skip_reason[0]) \
			skip();     \
	} while (0)

static struct netaddr parse_ok(const char *s)
{
	struct netaddr a;
	char err[256] = "";

	if (netaddr_parse(s, &a, err, sizeof(err)))
		fail_msg("parse %s: %s", s, err);
	return a;
}

static void test_parse(void **state)
{
	struct netaddr a;
	char err[256] = "";

	(void)state;
	a = parse_ok("10.77.0.10/24");
	assert_int_equal(a.family, AF_INET);
	assert_int_equal(a.prefix, 24);
	assert_memory_equal(a.addr, "\x0a\x4d\x00\x0a", 4);
	a = parse_ok("10.77.0.10");
	assert_int_equal(a.prefix, 32);
	a = parse_ok("fd00::10/64");
	assert_int_equal(a.family, AF_INET6);
	assert_int_equal(a.prefix, 64);
	assert_int_equal(a.addr[15], 0x10);

	assert_int_equal(netaddr_parse("10.77.0.10/33", &a, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "out of range"));
	assert_int_equal(netaddr_parse("10.77.0.10/", &a, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(netaddr_parse("10.77.0/24", &a, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "neither IPv4 nor IPv6"));
	assert_int_equal(netaddr_parse("host/24", &a, err, sizeof(err)),
			 -EINVAL);
}

/* Is @a on @ifname with its prefix, as getifaddrs() sees it? */
static bool visible(const struct netaddr *a, const char *ifname)
{
	struct ifaddrs *ifs, *i;
	bool found = false;

	assert_int_equal(getifaddrs(&ifs), 0);
	for (i = ifs; i; i = i->ifa_next) {
		const void *p, *m;
		unsigned bits = 0;
		size_t n;

		if (!i->ifa_addr || strcmp(i->ifa_name, ifname) ||
		    i->ifa_addr->sa_family != a->family)
			continue;
		if (a->family == AF_INET) {
			p = &((struct sockaddr_in *)i->ifa_addr)->sin_addr;
			m = &((struct sockaddr_in *)i->ifa_netmask)->sin_addr;
			n = 4;
		} else {
			p = &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
			m = &((struct sockaddr_in6 *)i->ifa_netmask)->sin6_addr;
			n = 16;
		}
		for (size_t b = 0; b < n; b++)
			bits += (unsigned)__builtin_popcount(((const uint8_t *)m)[b]);
		if (!memcmp(p, a->addr, n) && bits == a->prefix)
			found = true;
	}
	freeifaddrs(ifs);
	return found;
}

static void add_del(const char *text)
{
	struct netaddr a = parse_ok(text);
	char err[256] = "";

	assert_false(visible(&a, "fyv0"));
	if (netaddr_add(&a, "fyv0", err, sizeof(err)))
		fail_msg("%s", err);
	assert_true(visible(&a, "fyv0"));
	assert_false(visible(&a, "fyv1"));
	/* Adding again (an acquire after a reacquire) is fine. */
	if (netaddr_add(&a, "fyv0", err, sizeof(err)))
		fail_msg("%s", err);
	if (netaddr_del(&a, "fyv0", err, sizeof(err)))
		fail_msg("%s", err);
	assert_false(visible(&a, "fyv0"));
	/* So is removing what is not there. */
	assert_int_equal(netaddr_del(&a, "fyv0", err, sizeof(err)), 0);
}

static void test_add_del_v4(void **state)
{
	(void)state;
	NEED_ENV();
	add_del("10.77.0.10/24");
}

static void test_add_del_v6(void **state)
{
	(void)state;
	NEED_ENV();
	add_del("fd00:77::10/64");
}

static void test_no_such_interface(void **state)
{
	struct netaddr a = parse_ok("10.77.0.10/24");
	char err[256] = "";

	(void)state;
	NEED_ENV();
	assert_int_equal(netaddr_add(&a, "fy-nonesuch", err, sizeof(err)),
			 -ENODEV);
	assert_non_null(strstr(err, "fy-nonesuch"));
	assert_int_equal(netaddr_announce(&a, "fy-nonesuch", err,
					  sizeof(err)), -ENODEV);
	/* Loopback has no Ethernet address to announce. */
	assert_int_equal(netaddr_announce(&a, "lo", err, sizeof(err)),
			 -EOPNOTSUPP);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void if_mac(const char *ifname, uint8_t mac[6])
{
	struct ifreq ifr = { 0 };
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	assert_int_equal(ioctl(fd, SIOCGIFHWADDR, &ifr), 0);
	memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
	close(fd);
}

/* Frames of @proto arriving on fyv1 within 1.5 s that @match accepts,
 * and the time between the first and the last. */
static int listen_count(uint16_t proto,
			bool (*match)(const uint8_t *f, size_t n,
				      const struct netaddr *a,
				      const uint8_t mac[6]),
			const struct netaddr *a, const char *ifname,
			double *spread)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET,
				   .sll_protocol = htons(proto),
				   .sll_ifindex = (int)if_nametoindex("fyv1") };
	uint8_t mac[6], f[2048];
	char err[256] = "";
	double end, first = 0, last = 0;
	int fd = socket(AF_PACKET, SOCK_RAW, htons(proto)), n = 0;

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (void *)&sll, sizeof(sll)), 0);
	if_mac(ifname, mac);
	if (netaddr_announce(a, ifname, err, sizeof(err)))
		fail_msg("%s", err);
	end = now_s() + 1.5;
	while (now_s() < end) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (poll(&p, 1, 50) <= 0)
			continue;
		r = recv(fd, f, sizeof(f), 0);
		if (r > 0 && match(f, (size_t)r, a, mac)) {
			last = now_s();
			if (!n++)
				first = last;
		}
	}
	close(fd);
	*spread = last - first;
	return n;
}

/* Ethernet broadcast from @mac, a gratuitous ARP for the address. */
static bool garp(const uint8_t *f, size_t n, const struct netaddr *a,
		 const uint8_t mac[6])
{
	const struct arphdr *h = (const void *)(f + 14);
	const uint8_t *p = f + 14 + sizeof(*h);

	return n >= 42 && !memcmp(f, "\xff\xff\xff\xff\xff\xff", 6) &&
	       !memcmp(f + 6, mac, 6) && f[12] == 0x08 && f[13] == 0x06 &&
	       ntohs(h->ar_op) == ARPOP_REQUEST && !memcmp(p, mac, 6) &&
	       !memcmp(p + 6, a->addr, 4) && !memcmp(p + 16, a->addr, 4);
}

/* An unsolicited neighbour advertisement of the address, override set. */
static bool una(const uint8_t *f, size_t n, const struct netaddr *a,
		const uint8_t mac[6])
{
	const struct ip6_hdr *ip = (const void *)(f + 14);
	const struct nd_neighbor_advert *na = (const void *)(ip + 1);

	return n >= 14 + sizeof(*ip) + sizeof(*na) + 8 &&
	       !memcmp(f + 6, mac, 6) && ip->ip6_nxt == IPPROTO_ICMPV6 &&
	       ip->ip6_hlim == 255 && na->nd_na_type == ND_NEIGHBOR_ADVERT &&
	       (na->nd_na_flags_reserved & ND_NA_FLAG_OVERRIDE) &&
	       !memcmp(&na->nd_na_target, a->addr, 16) &&
	       !memcmp((const uint8_t *)(na + 1) + 2, mac, 6);
}

static void test_announce_v4(void **state)
{
	struct netaddr a = parse_ok("10.77.0.10/24");
	char err[256] = "";
	double spread;
	int n;

	(void)state;
	NEED_ENV();
	if (netaddr_add(&a, "fyv0", err, sizeof(err)))
		fail_msg("%s", err);
	n = listen_count(ETH_P_ARP, garp, &a, "fyv0", &spread);
	/* Five rounds, spread over 50+150+250+350 ms. */
	assert_int_equal(n, 5);
	assert_true(spread > 0.7 && spread < 1.4);
	netaddr_del(&a, "fyv0", err, sizeof(err));
}

static void test_announce_v6(void **state)
{
	struct netaddr a = parse_ok("fd00:77::10/64");
	char err[256] = "";
	double spread;
	int n;

	(void)state;
	NEED_ENV();
	if (netaddr_add(&a, "fyv0", err, sizeof(err)))
		fail_msg("%s", err);
	n = listen_count(ETH_P_IPV6, una, &a, "fyv0", &spread);
	assert_int_equal(n, 5);
	netaddr_del(&a, "fyv0", err, sizeof(err));
}

/* Run @cmd (through the shell: test setup only); fail the test on error. */
static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd))
		fail_msg("%s failed", cmd);
}

/* The neighbour's side, in a namespace of its own: fyv1 with 10.77.0.3,
 * a stale entry for the guest's address at an old MAC; after the
 * announcement it must hold @want. Exits 0 when it does. */
static int neighbour(int ready, int go, const char *want)
{
	char c, line[256] = "";
	double end;

	if (unshare(CLONE_NEWNET) || write(ready, "1", 1) != 1 ||
	    read(go, &c, 1) != 1)
		return 2;
	if (system("ip link set fyv1 up && ip addr add 10.77.0.3/24 dev fyv1 "
		   "&& ip neigh replace 10.77.0.10 lladdr 02:00:00:00:00:01 "
		   "dev fyv1 nud stale") || write(ready, "2", 1) != 1 ||
	    read(go, &c, 1) != 1)
		return 3;
	for (end = now_s() + 1.5; now_s() < end; usleep(20000)) {
		FILE *f = popen("ip neigh show 10.77.0.10 dev fyv1", "r");

		if (!f)
			return 4;
		if (!fgets(line, sizeof(line), f))
			line[0] = '\0';
		pclose(f);
		if (strstr(line, want))
			return 0;
	}
	fprintf(stderr, "neighbour entry after the announcement: %s\n", line);
	return 1;
}

/* What the announcement is for: a neighbour that knew the address at the
 * old host's MAC now sends to the new one. Moves fyv1 away (the pair is
 * gone afterwards), so it runs last. */
static void test_announce_updates_neighbour(void **state)
{
	struct netaddr a = parse_ok("10.77.0.10/24");
	char err[256] = "", want[32], c;
	uint8_t mac[6];
	int up[2], down[2], st;
	pid_t pid;

	(void)state;
	NEED_ENV();
	if_mac("fyv0", mac);
	snprintf(want, sizeof(want), "%02x:%02x:%02x:%02x:%02x:%02x", mac[0],
		 mac[1], mac[2], mac[3], mac[4], mac[5]);
	assert_int_equal(pipe(up), 0);
	assert_int_equal(pipe(down), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(neighbour(up[1], down[0], want));
	assert_int_equal(read(up[0], &c, 1), 1);
	sh("ip link set fyv1 netns %d", (int)pid);
	assert_int_equal(write(down[1], "g", 1), 1);
	assert_int_equal(read(up[0], &c, 1), 1);
	if (netaddr_add(&a, "fyv0", err, sizeof(err)) ||
	    netaddr_announce(&a, "fyv0", err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(write(down[1], "g", 1), 1);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	for (int i = 0; i < 2; i++) {
		close(up[i]);
		close(down[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_add_del_v4),
		cmocka_unit_test(test_add_del_v6),
		cmocka_unit_test(test_no_such_interface),
		cmocka_unit_test(test_announce_v4),
		cmocka_unit_test(test_announce_v6),
		cmocka_unit_test(test_announce_updates_neighbour),
	};

	return cmocka_run_group_tests(tests, group_setup, NULL);
}
