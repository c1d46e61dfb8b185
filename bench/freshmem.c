// SPDX-License-Identifier: MIT
/*
 * freshmem - what a restore pays before it reads a byte: getting guest-sized
 * memory it has never touched. This machine is itself a guest whose kernel
 * hands freed memory back to its host (free page reporting), so memory a
 * process touches for the first time after a few idle seconds costs a host
 * fault per page: about 1 GB/s here, against 10-30 GB/s for memory the host
 * still backs. `dd iflag=direct` reads into one small buffer and never pays
 * it; a restore must. Benchmark 9 times this beside dd and the restore, in
 * the same state of the host, so the table can say which bound a restore
 * meets.
 *
 * The memory is what ferry-vm gives a guest by default: private anonymous,
 * 2 MiB aligned, MADV_HUGEPAGE. With --read FILE the threads read the file
 * into it with direct I/O in 8 MiB pieces (a restore's reads, with no
 * checking and no guest): the ceiling of an eager restore on this machine.
 * Without it they populate it (MADV_POPULATE_WRITE): the cost of the memory
 * alone.
 *
 * usage: freshmem --size MiB [--threads N] [--read FILE]
 * prints one JSON line: {"tool":"freshmem","mode":"populate"|"read",
 *   "bytes":..,"threads":..,"total_ms":..,"mb_per_s":..}
 */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define PIECE (8u << 20)

struct job {
	uint8_t *mem;
	uint64_t len, next;
	int fd;
	int err;
	pthread_mutex_t lock;
};

static double now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* Take the next piece; 0 when none is left. */
static uint64_t take(struct job *j, uint64_t *at)
{
	uint64_t n;

	pthread_mutex_lock(&j->lock);
	*at = j->next;
	n = j->len - j->next < PIECE ? j->len - j->next : PIECE;
	j->next += n;
	pthread_mutex_unlock(&j->lock);
	return n;
}

static void *worker(void *arg)
{
	struct job *j = arg;
	uint64_t at, n;

	while ((n = take(j, &at))) {
		if (j->fd < 0) {
			if (madvise(j->mem + at, n, MADV_POPULATE_WRITE))
				j->err = errno;
			continue;
		}
		for (uint64_t done = 0; done < n;) {
			ssize_t r = pread(j->fd, j->mem + at + done, n - done,
					  (off_t)(at + done));

			if (r <= 0) {
				j->err = r < 0 ? errno : EIO;
				return NULL;
			}
			done += (uint64_t)r;
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct job j = { .fd = -1 };
	unsigned threads = 4;
	const char *file = NULL;
	uint64_t mib = 0;
	pthread_t t[64];
	double t0, ms;
	uint8_t *p;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--size") && i + 1 < argc)
			mib = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			threads = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--read") && i + 1 < argc)
			file = argv[++i];
		else {
			fprintf(stderr, "usage: freshmem --size MiB [--threads N] [--read FILE]\n");
			return 2;
		}
	}
	if (!mib || !threads || threads > 64) {
		fprintf(stderr, "freshmem: --size MiB (> 0) and 1..64 threads\n");
		return 2;
	}
	j.len = mib << 20;
	if (file) {
		j.fd = open(file, O_RDONLY | O_DIRECT);
		if (j.fd < 0) {
			fprintf(stderr, "freshmem: %s: %s\n", file, strerror(errno));
			return 1;
		}
	}
	p = mmap(NULL, j.len + (2u << 20), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "freshmem: mmap: %s\n", strerror(errno));
		return 1;
	}
	j.mem = (uint8_t *)(((uintptr_t)p + (2u << 20) - 1) & ~(uintptr_t)((2u << 20) - 1));
	madvise(j.mem, j.len, MADV_HUGEPAGE);
	pthread_mutex_init(&j.lock, NULL);
	t0 = now_ms();
	for (unsigned i = 0; i < threads; i++)
		if (pthread_create(&t[i], NULL, worker, &j)) {
			fprintf(stderr, "freshmem: cannot start a thread\n");
			return 1;
		}
	for (unsigned i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	ms = now_ms() - t0;
	if (j.err) {
		fprintf(stderr, "freshmem: %s\n", strerror(j.err));
		return 1;
	}
	printf("{\"tool\":\"freshmem\",\"status\":\"completed\",\"mode\":\"%s\",\"bytes\":%llu,\"threads\":%u,\"total_ms\":%.1f,\"mb_per_s\":%.1f}\n",
	       file ? "read" : "populate", (unsigned long long)j.len, threads, ms,
	       ms > 0 ? j.len / ms / 1e3 : 0.0);
	return 0;
}
