// SPDX-License-Identifier: MIT
/*
 * tlsrate.c - the CPU time ferry's TLS layer (src/transport/tls*.c) takes
 * per GiB on each side, without a VM: a PSK session over a socketpair,
 * one thread sending runs of 64 pages behind a 40-byte header (as memory
 * records go), the other receiving 256 KiB at a time. Prints wall MB/s
 * and each thread's CPU seconds per GiB (docs/benchmarks.md, bench 13).
 * With "tcp" the two ends talk over loopback TCP, as a migration on one
 * host does (TCP_NODELAY and the 100 ms socket timeouts of ferry's
 * transport), instead of a UNIX socketpair ("unix"). PAGES sets the
 * pages of a run (64; ferry's default chunk of 1 MiB is 256).
 *
 * ENGINE seals and opens the records (src/transport/tls_aead.h): auto (the
 * default: ipsec-mb where built in), gnutls or ipsec-mb.
 *
 * usage: tlsrate MIB [PRIORITY [tcp|unix [PAGES [ENGINE]]]]
 *   e.g. tlsrate 512 NORMAL:-CIPHER-ALL:+AES-128-GCM tcp 256 gnutls
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "transport/tls.h"
#include "transport/tls_aead.h"


static size_t total, pages = 64;
static const char *prio;
static int engine;
static char psk[64];
static int sv[2];
static double rx_cpu;
static long rx_sw, tx_sw;

/* This thread's voluntary context switches: how often it slept. */
static long sleeps(void)
{
	struct rusage u;

	getrusage(RUSAGE_THREAD, &u);
	return u.ru_nvcsw;
}

static int idle(void *o, bool sending, uint64_t since)
{
	(void)o;
	(void)sending;
	(void)since;
	return 0;
}

static double clock_s(clockid_t id)
{
	struct timespec t;

	clock_gettime(id, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static struct fy_tls *start(bool server, struct fy_tls_creds **cr)
{
	struct fy_tls_config c = { .psk_file = psk, .priority = prio,
				   .engine = engine };
	struct fy_tls *t = NULL;
	char err[256];

	if (fy_tls_creds_load(&c, server, cr, err, sizeof(err)) ||
	    fy_tls_start(*cr, sv[server], 5000, idle, NULL, &t, err,
			 sizeof(err))) {
		fprintf(stderr, "tlsrate: %s\n", err);
		exit(1);
	}
	return t;
}

static void *receiver(void *arg)
{
	struct fy_tls_creds *cr;
	struct fy_tls *t = start(true, &cr);
	uint8_t *buf = malloc(1 << 18);
	double c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
	long sw0 = sleeps();
	size_t got = 0;

	(void)arg;
	while (got < total) {
		size_t want = total - got < (1 << 18) ? total - got : (1 << 18);
		ssize_t r = fy_tls_recv(t, buf, want);

		if (r <= 0) {
			fprintf(stderr, "tlsrate: receive: %s\n", fy_tls_last_error(t));
			exit(1);
		}
		got += (size_t)r;
	}
	rx_cpu = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
	rx_sw = sleeps() - sw0;
	fy_tls_free(t);
	fy_tls_creds_free(cr);
	free(buf);
	return NULL;
}

/* A connected loopback TCP pair in @sv, or -1. */
static int tcp_pair(int fd[2])
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int one = 1, l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &alen))
		return -1;
	fd[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd[0] < 0 || connect(fd[0], (struct sockaddr *)&a, sizeof(a)))
		return -1;
	fd[1] = accept(l, NULL, NULL);
	close(l);
	for (int i = 0; i < 2; i++)
		setsockopt(fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd[1] < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
	struct timeval tv = { 0, 100 * 1000 };
	size_t mem = 64 << 20, off = 0, run;
	struct fy_tls_creds *cr;
	uint8_t hdr[40], *src;
	struct fy_tls *t;
	double t0, c0, tx_cpu, gib;
	char what[128];
	pthread_t th;
	FILE *f;

	if (argc < 2) {
		fprintf(stderr, "usage: tlsrate MIB [PRIORITY [tcp|unix [PAGES [ENGINE]]]]\n");
		return 2;
	}
	if (argc > 4)
		pages = (size_t)atoi(argv[4]);
	if (pages < 1 || pages > 1024) {
		fprintf(stderr, "tlsrate: PAGES is 1 to 1024\n");
		return 2;
	}
	run = 40 + pages * 4096;
	total = (size_t)atoi(argv[1]) * 256 / pages * run;
	prio = argc > 2 && argv[2][0] ? argv[2] : NULL;
	if (argc > 5)
		engine = !strcmp(argv[5], "gnutls")	? FY_AEAD_GNUTLS
			 : !strcmp(argv[5], "ipsec-mb") ? FY_AEAD_IPSEC_MB
							: FY_AEAD_AUTO;
	snprintf(psk, sizeof(psk), "/tmp/tlsrate-%d.psk", (int)getpid());
	f = fopen(psk, "w");
	if (!f)
		return 1;
	fprintf(f, "rate:00112233445566778899aabbccddeeff\n");
	fclose(f);
	if (argc > 3 && !strcmp(argv[3], "tcp") ? tcp_pair(sv)
	    : socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return 1;
	for (int i = 0; i < 2; i++) {
		setsockopt(sv[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(sv[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	pthread_create(&th, NULL, receiver, NULL);
	t = start(false, &cr);
	unlink(psk);
	fy_tls_describe(t, what, sizeof(what));
	/* Backed as ferry-vm backs a guest by default (transparent huge
	 * pages), so that reading it costs what reading a guest does. */
	src = mmap(NULL, mem, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED)
		return 1;
	(void)madvise(src, mem, MADV_HUGEPAGE);
	for (size_t i = 0; i < mem; i++)
		src[i] = (uint8_t)(i * 131 + (i >> 12));
	memset(hdr, 1, sizeof(hdr));
	t0 = clock_s(CLOCK_MONOTONIC);
	c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
	tx_sw = sleeps();
	for (size_t sent = 0; sent < total; sent += run) {
		/* Pages contiguous within a run, as a chunk of guest memory. */
		struct iovec v[2] = { { hdr, sizeof(hdr) },
				      { src + off, pages * 4096 } };

		off += pages * 4096;
		if (off + pages * 4096 > mem)
			off = 0;
		if (fy_tls_send(t, v, 2, false)) {
			fprintf(stderr, "tlsrate: send failed\n");
			return 1;
		}
	}
	tx_cpu = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
	tx_sw = sleeps() - tx_sw;
	pthread_join(th, NULL);
	gib = (double)total / (1 << 30);
	printf("%s: %.0f MB/s, sender %.2f s/GiB, receiver %.2f s/GiB; sleeps per GiB: sender %.0f, receiver %.0f\n",
	       what, (double)total / (clock_s(CLOCK_MONOTONIC) - t0) / 1e6,
	       tx_cpu / gib, rx_cpu / gib, (double)tx_sw / gib,
	       (double)rx_sw / gib);
	fy_tls_free(t);
	fy_tls_creds_free(cr);
	munmap(src, mem);
	return 0;
}
