// SPDX-License-Identifier: MIT
/*
 * rawcopy - the ceiling for moving memory over loopback: a plain C program
 * that sends one region and receives it into another over N TCP sockets
 * with nothing but send()/recv(). ferry's throughput is reported next to it.
 * Each socket has its own sender and receiver thread and carries one
 * contiguous slice of the region; the time runs from the first send() to
 * the last byte received (connections are set up before, the regions are
 * populated before, the final comparison is after).
 *
 * With --processes 2 the receiving threads and their region live in a
 * second process, as a migration's destination does: the copy then
 * crosses address spaces, and the two ends' threads share the CPUs as two
 * VMM processes on one machine do. The comparison is then of a checksum.
 *
 * --rcvlowat BYTES makes each receiving recv() wait for that many bytes
 * (SO_RCVLOWAT, dropped for the tail), as ferry's receiver does, instead
 * of waking for every arriving segment.
 *
 * --congestion-control NAME sets the sockets' TCP congestion control (both
 * ends); without it they keep the system's default. The one in use is
 * reported, so a comparison can show both sides ran under the same.
 *
 * usage: rawcopy [--size MiB] [--sockets N] [--backing anon|thp|memfd]
 *                [--processes 1|2] [--congestion-control NAME]
 *                [--rcvlowat BYTES]
 * prints one JSON line: {"tool":"rawcopy","bytes":..,"sockets":..,
 *   "processes":..,"backing":..,"congestion_control":..,"ms":..,
 *   "mb_per_s":..}
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1u << 20)

struct part {
	uint8_t *src, *dst;
	size_t len;
	int sfd, rfd;
	int lowat; /* SO_RCVLOWAT for the receiver, 0 = the kernel's 1 */
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint8_t *map(size_t size, const char *backing)
{
	void *p;

	if (!strcmp(backing, "memfd")) {
		int fd = memfd_create("rawcopy", MFD_CLOEXEC);

		if (fd < 0 || ftruncate(fd, (off_t)size))
			return NULL;
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		close(fd);
	} else {
		p = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p != MAP_FAILED && !strcmp(backing, "thp"))
			madvise(p, size, MADV_HUGEPAGE);
	}
	return p == MAP_FAILED ? NULL : p;
}

static void *sender(void *arg)
{
	struct part *p = arg;

	for (size_t off = 0; off < p->len;) {
		size_t n = p->len - off < CHUNK ? p->len - off : CHUNK;
		ssize_t w = send(p->sfd, p->src + off, n, 0);

		if (w <= 0) {
			perror("send");
			exit(1);
		}
		off += (size_t)w;
	}
	return NULL;
}

static void *receiver(void *arg)
{
	struct part *p = arg;
	int lowat = 0;

	for (size_t off = 0; off < p->len;) {
		size_t left = p->len - off;
		/* The kernel wakes a reader when the mark is queued, not
		 * counting what that reader already took: the tail would
		 * wait for bytes that never come unless the mark is at most
		 * half of what is left. */
		int want = (size_t)p->lowat <= left / 2 ? p->lowat : 1;

		if (want != lowat && p->lowat) {
			setsockopt(p->rfd, SOL_SOCKET, SO_RCVLOWAT, &want,
				   sizeof(want));
			lowat = want;
		}
		ssize_t r = recv(p->rfd, p->dst + off, p->len - off, 0);

		if (r <= 0) {
			perror("recv");
			exit(1);
		}
		off += (size_t)r;
	}
	return NULL;
}

static void set_cc(int fd, const char *cc)
{
	if (cc && setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, strlen(cc))) {
		fprintf(stderr, "rawcopy: congestion control '%s': %s\n", cc,
			strerror(errno));
		exit(1);
	}
}

static void connect_pair(int lfd, struct sockaddr_in *sa, int *s, int *r,
			 const char *cc)
{
	*s = socket(AF_INET, SOCK_STREAM, 0);
	if (*s < 0 || connect(*s, (struct sockaddr *)sa, sizeof(*sa)) < 0) {
		perror("rawcopy: connect");
		exit(1);
	}
	*r = accept(lfd, NULL, NULL);
	if (*r < 0) {
		perror("rawcopy: accept");
		exit(1);
	}
	set_cc(*s, cc);
	set_cc(*r, cc);
}

static int usage(void)
{
	fprintf(stderr, "usage: rawcopy [--size MiB] [--sockets N (1-64)] [--backing anon|thp|memfd] [--processes 1|2] [--congestion-control NAME] [--rcvlowat BYTES]\n");
	return 2;
}

/* A 64-bit digest of @p (FNV-1a over words), to compare two processes'
 * copies. */
static uint64_t digest(const uint8_t *p, size_t size)
{
	uint64_t h = 0xcbf29ce484222325ull, w;

	for (size_t i = 0; i < size; i += 8) {
		memcpy(&w, p + i, 8);
		h = (h ^ w) * 0x100000001b3ull;
	}
	return h;
}

static void xfer(int fd, void *buf, size_t n, bool out)
{
	ssize_t r = out ? write(fd, buf, n) : read(fd, buf, n);

	if (r != (ssize_t)n) {
		fprintf(stderr, "rawcopy: pipe to the other process broke\n");
		exit(1);
	}
}

/*
 * The receiving end in a child process: its own region, populated before
 * the start, then the receiver threads. Reports "done" as soon as the
 * last byte is in, then the digest.
 */
static void run_receiver(struct part *parts, size_t n, size_t size,
			 size_t per, const char *backing, int up, int down)
{
	uint8_t *b = map(size, backing);
	pthread_t tr[64];
	uint64_t d;
	char c = 'r';

	if (!b) {
		perror("rawcopy: mmap in the receiver");
		exit(1);
	}
	memset(b, 0, size);
	for (size_t i = 0; i < n; i++) {
		parts[i].dst = b + i * per;
		close(parts[i].sfd);
	}
	xfer(up, &c, 1, true);	 /* ready */
	xfer(down, &c, 1, false); /* go */
	for (size_t i = 0; i < n; i++)
		if (pthread_create(&tr[i], NULL, receiver, &parts[i]))
			exit(1);
	for (size_t i = 0; i < n; i++)
		pthread_join(tr[i], NULL);
	c = 'd';
	xfer(up, &c, 1, true);
	d = digest(b, size);
	xfer(up, &d, sizeof(d), true);
	_exit(0);
}

/* Both ends in this process; returns the milliseconds. */
static double run_one(struct part *parts, size_t n, size_t size,
		      const uint8_t *a, const uint8_t *b)
{
	pthread_t ts[64], tr[64];
	double t0 = now_ms(), ms;

	for (size_t i = 0; i < n; i++) {
		if (pthread_create(&tr[i], NULL, receiver, &parts[i]) ||
		    pthread_create(&ts[i], NULL, sender, &parts[i])) {
			fprintf(stderr, "rawcopy: cannot start threads\n");
			exit(1);
		}
	}
	for (size_t i = 0; i < n; i++) {
		pthread_join(ts[i], NULL);
		pthread_join(tr[i], NULL);
	}
	ms = now_ms() - t0;
	if (memcmp(a, b, size)) {
		fprintf(stderr, "rawcopy: copy differs\n");
		exit(1);
	}
	return ms;
}

/* The sending end of --processes 2; returns the milliseconds. */
static double run_two(struct part *parts, size_t n, size_t size, size_t per,
		      const char *backing, uint8_t *a, uint8_t *b)
{
	int up[2], down[2];
	pthread_t ts[64];
	uint64_t d;
	double t0, ms;
	char c;
	pid_t pid;
	int st;

	if (pipe(up) || pipe(down)) {
		perror("rawcopy: pipe");
		exit(1);
	}
	munmap(b, size); /* the receiver maps its own */
	pid = fork();
	if (pid < 0) {
		perror("rawcopy: fork");
		exit(1);
	}
	if (pid == 0) {
		munmap(a, size);
		run_receiver(parts, n, size, per, backing, up[1], down[0]);
	}
	for (size_t i = 0; i < n; i++)
		close(parts[i].rfd);
	xfer(up[0], &c, 1, false); /* ready */
	t0 = now_ms();
	xfer(down[1], &c, 1, true);
	for (size_t i = 0; i < n; i++)
		if (pthread_create(&ts[i], NULL, sender, &parts[i]))
			exit(1);
	for (size_t i = 0; i < n; i++)
		pthread_join(ts[i], NULL);
	xfer(up[0], &c, 1, false); /* done */
	ms = now_ms() - t0;
	xfer(up[0], &d, sizeof(d), false);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) ||
	    d != digest(a, size)) {
		fprintf(stderr, "rawcopy: copy differs\n");
		exit(1);
	}
	return ms;
}

int main(int argc, char **argv)
{
	size_t mib = 2048, n = 1, procs = 1, lowat = 0;
	const char *backing = "memfd", *cc = NULL;
	char used[16] = "";
	socklen_t ul = sizeof(used) - 1;

	for (int i = 1; i < argc; i += 2) {
		if (i + 1 == argc)
			return usage();
		if (!strcmp(argv[i], "--size"))
			mib = strtoul(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--sockets"))
			n = strtoul(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--backing"))
			backing = argv[i + 1];
		else if (!strcmp(argv[i], "--processes"))
			procs = strtoul(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--rcvlowat"))
			lowat = strtoul(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--congestion-control"))
			cc = argv[i + 1];
		else
			return usage();
	}
	if (!mib || !n || n > 64 || lowat > (64u << 20) || (procs != 1 && procs != 2) ||
	    (strcmp(backing, "anon") && strcmp(backing, "thp") &&
	     strcmp(backing, "memfd")))
		return usage();
	size_t size = mib << 20;
	uint8_t *a = map(size, backing), *b = map(size, backing);

	if (!a || !b) {
		perror("mmap");
		return 1;
	}
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < size; i += 8) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		memcpy(a + i, &x, 8);
	}
	memset(b, 0, size); /* both sides populated, like a prepared VM */

	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);

	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(lfd, 64) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0) {
		perror("rawcopy: listen on 127.0.0.1");
		return 1;
	}

	struct part parts[64];
	size_t per = (size / n) & ~(size_t)4095;

	for (size_t i = 0; i < n; i++) {
		parts[i].src = a + i * per;
		parts[i].dst = b + i * per;
		parts[i].len = i + 1 == n ? size - i * per : per;
		parts[i].lowat = (int)lowat;
		connect_pair(lfd, &sa, &parts[i].sfd, &parts[i].rfd, cc);
	}
	getsockopt(parts[0].sfd, IPPROTO_TCP, TCP_CONGESTION, used, &ul);
	double ms = procs == 2 ? run_two(parts, n, size, per, backing, a, b)
			       : run_one(parts, n, size, a, b);

	printf("{\"tool\":\"rawcopy\",\"bytes\":%zu,\"sockets\":%zu,\"processes\":%zu,\"backing\":\"%s\",\"congestion_control\":\"%s\",\"rcvlowat\":%zu,\"ms\":%.1f,\"mb_per_s\":%.0f}\n",
	       size, n, procs, backing, used, lowat, ms, size / ms / 1e3);
	return 0;
}
