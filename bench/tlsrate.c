// SPDX-License-Identifier: MIT
/*
 * tlsrate.c - the CPU time ferry's TLS layer (src/transport/tls*.c) takes
 * per GiB on each side, without a VM: a PSK session over a socketpair,
 * one thread sending runs of 64 pages behind a 40-byte header (as memory
 * records go), the other receiving 256 KiB at a time. Prints wall MB/s
 * and each thread's CPU seconds per GiB (docs/benchmarks.md, bench 13).
 *
 * usage: tlsrate MIB [PRIORITY]   e.g. tlsrate 512 NORMAL:-CIPHER-ALL:+AES-128-GCM
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "transport/tls.h"

#define RUN (40 + 64 * 4096)

static size_t total;
static const char *prio;
static char psk[64];
static int sv[2];
static double rx_cpu;

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
	struct fy_tls_config c = { .psk_file = psk, .priority = prio };
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
	fy_tls_free(t);
	fy_tls_creds_free(cr);
	free(buf);
	return NULL;
}

int main(int argc, char **argv)
{
	struct timeval tv = { 0, 100 * 1000 };
	size_t mem = 64 << 20, off = 0;
	struct fy_tls_creds *cr;
	uint8_t hdr[40], *src;
	struct fy_tls *t;
	double t0, c0, tx_cpu, gib;
	char what[128];
	pthread_t th;
	FILE *f;

	if (argc < 2) {
		fprintf(stderr, "usage: tlsrate MIB [PRIORITY]\n");
		return 2;
	}
	total = (size_t)atoi(argv[1]) * 4 * RUN;
	prio = argc > 2 ? argv[2] : NULL;
	snprintf(psk, sizeof(psk), "/tmp/tlsrate-%d.psk", (int)getpid());
	f = fopen(psk, "w");
	if (!f)
		return 1;
	fprintf(f, "rate:00112233445566778899aabbccddeeff\n");
	fclose(f);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return 1;
	for (int i = 0; i < 2; i++) {
		setsockopt(sv[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(sv[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	pthread_create(&th, NULL, receiver, NULL);
	t = start(false, &cr);
	unlink(psk);
	fy_tls_describe(t, what, sizeof(what));
	src = malloc(mem);
	for (size_t i = 0; i < mem; i++)
		src[i] = (uint8_t)(i * 131 + (i >> 12));
	memset(hdr, 1, sizeof(hdr));
	t0 = clock_s(CLOCK_MONOTONIC);
	c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
	for (size_t sent = 0; sent < total; sent += RUN) {
		struct iovec v[65] = { { hdr, sizeof(hdr) } };

		for (int k = 1; k < 65; k++) {
			v[k] = (struct iovec){ src + off, 4096 };
			off = (off + 4096) % mem;
		}
		if (fy_tls_send(t, v, 65, false)) {
			fprintf(stderr, "tlsrate: send failed\n");
			return 1;
		}
	}
	tx_cpu = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
	pthread_join(th, NULL);
	gib = (double)total / (1 << 30);
	printf("%s: %.0f MB/s, sender %.2f s/GiB, receiver %.2f s/GiB\n", what,
	       (double)total / (clock_s(CLOCK_MONOTONIC) - t0) / 1e6,
	       tx_cpu / gib, rx_cpu / gib);
	fy_tls_free(t);
	fy_tls_creds_free(cr);
	free(src);
	return 0;
}
