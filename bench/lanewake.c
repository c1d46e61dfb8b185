// SPDX-License-Identifier: MIT
/*
 * lanewake - what one hop of postcopy's urgent lane costs on this host:
 * a loopback TCP round trip between two threads (64 bytes out, 4 KiB
 * back, as a page request and its answer), with a pause between
 * requests, the two threads kept to one CPU, to two, or left to the
 * scheduler. On a virtual machine, waking a thread whose CPU went idle
 * makes the host run that vCPU again, which costs more than the hop.
 *
 * usage: lanewake [-n ROUNDS] [-g GAP_US,...]
 * Prints one line per gap and placement: p50, p90, p99 in microseconds.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REQ 64
#define ANS 4096

struct pair {
	int fd[2];	/* [0] the asking thread's, [1] the answering one's */
	int cpu_answer; /* -1: anywhere */
};

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int keep_to(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return 0;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static int full(int fd, char *buf, size_t len, int out)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = out ? write(fd, buf + done, len - done)
				: read(fd, buf + done, len - done);

		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

static void *answer(void *arg)
{
	struct pair *p = arg;
	static char buf[ANS];

	keep_to(p->cpu_answer);
	while (!full(p->fd[1], buf, REQ, 0) && !full(p->fd[1], buf, ANS, 1))
		;
	return NULL;
}

static int connect_pair(int fd[2])
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	fd[0] = fd[1] = -1;
	if (l < 0 || bind(l, (void *)&a, sizeof(a)) || listen(l, 1) ||
	    getsockname(l, (void *)&a, &al))
		goto fail;
	fd[0] = socket(AF_INET, SOCK_STREAM, 0);
	if (fd[0] < 0 || connect(fd[0], (void *)&a, sizeof(a)))
		goto fail;
	fd[1] = accept(l, NULL, NULL);
	if (fd[1] < 0)
		goto fail;
	setsockopt(fd[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	close(l);
	return 0;
fail:
	fprintf(stderr, "lanewake: loopback connection: %s\n", strerror(errno));
	if (l >= 0)
		close(l);
	return -1;
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* One row: @rounds requests @gap_us apart, the asking thread on
 * @cpu_ask, the answering one on @cpu_answer (-1: anywhere). */
static int row(int rounds, int gap_us, int cpu_ask, int cpu_answer,
	       const char *what)
{
	struct pair p = { .cpu_answer = cpu_answer };
	uint64_t *t = calloc((size_t)rounds, sizeof(*t));
	static char buf[ANS];
	pthread_t th;
	int rc = -1;

	if (!t || connect_pair(p.fd))
		goto out;
	if (pthread_create(&th, NULL, answer, &p))
		goto out;
	keep_to(cpu_ask);
	usleep(10000);
	for (int i = 0; i < rounds; i++) {
		uint64_t t0;

		if (gap_us)
			usleep((useconds_t)gap_us);
		t0 = now_ns();
		if (full(p.fd[0], buf, REQ, 1) || full(p.fd[0], buf, ANS, 0))
			break;
		t[i] = now_ns() - t0;
	}
	shutdown(p.fd[0], SHUT_RDWR);
	pthread_join(th, NULL);
	keep_to(-1);
	qsort(t, (size_t)rounds, sizeof(*t), cmp);
	printf("gap %5d us  %-22s p50 %7.1f  p90 %7.1f  p99 %7.1f us\n", gap_us,
	       what, t[rounds / 2] / 1e3, t[rounds * 9 / 10] / 1e3,
	       t[rounds * 99 / 100] / 1e3);
	rc = 0;
out:
	if (p.fd[0] >= 0)
		close(p.fd[0]);
	if (p.fd[1] >= 0)
		close(p.fd[1]);
	free(t);
	return rc;
}

int main(int argc, char **argv)
{
	char gaps[256] = "0,100,1000,3000", *g, *save = NULL;
	int rounds = 400, opt, ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);

	while ((opt = getopt(argc, argv, "n:g:h")) != -1) {
		if (opt == 'n' && atoi(optarg) >= 10) {
			rounds = atoi(optarg);
		} else if (opt == 'g' && strlen(optarg) < sizeof(gaps)) {
			snprintf(gaps, sizeof(gaps), "%s", optarg);
		} else {
			fprintf(stderr, "usage: lanewake [-n ROUNDS (>= 10)] [-g GAP_US,...]\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	for (g = strtok_r(gaps, ",", &save); g; g = strtok_r(NULL, ",", &save)) {
		int gap = atoi(g);

		if (row(rounds, gap, -1, -1, "scheduler's choice") ||
		    row(rounds, gap, 0, 0, "one CPU") ||
		    (ncpu > 1 && row(rounds, gap, 0, 1, "two CPUs")))
			return 1;
	}
	return 0;
}
