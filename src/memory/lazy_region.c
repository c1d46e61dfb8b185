// SPDX-License-Identifier: MIT
/*
 * lazy_region.c - what the lazy loader does to a region before it
 * registers it: find its page size and kind, mark the units the caller
 * says are present, drop the others and check that they hold no page;
 * and opening the userfaultfd.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "memory/lazy_region.h"

/* fy_lazy_err() - format a message into @err (if any); return @code. */
int fy_lazy_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* fy_bits_count() - the number of set bits among bits [first, first + n). */
uint64_t fy_bits_count(const uint64_t *bits, uint64_t first, uint64_t n)
{
	uint64_t c = 0, end = first + n, w, lo, hi, mask;

	while (first < end) {
		w = first / 64;
		lo = first % 64;
		hi = end - w * 64 < 64 ? end - w * 64 : 64;
		mask = (hi == 64 ? ~UINT64_C(0) : (UINT64_C(1) << hi) - 1) &
		       ~((UINT64_C(1) << lo) - 1);
		c += (uint64_t)__builtin_popcountll(bits[w] & mask);
		first = w * 64 + hi;
	}
	return c;
}

/*
 * fy_lazy_region_probe() - read the page size and kind of the mapping
 * holding @r->host from /proc/self/smaps. The file is produced one
 * mapping at a time as it is read, so stopping at ours spares the walk
 * over the rest. Return: 0, or -EINVAL (not mapped) with @err.
 */
int fy_lazy_region_probe(struct lz_region *r, char *err, size_t errlen)
{
	uint64_t addr = (uintptr_t)r->host, lo, hi, kb;
	bool inside = false, found = false;
	char *line = NULL;
	size_t cap = 0;
	FILE *f;
	int n;

	f = fopen("/proc/self/smaps", "re");
	if (!f)
		return fy_lazy_err(err, errlen, -errno, "/proc/self/smaps: %s",
				   strerror(errno));
	while (getline(&line, &cap, f) > 0) {
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %n", &lo, &hi, &n) == 2 &&
		    n > 0) {
			if (found)
				break;
			inside = addr >= lo && addr < hi;
			continue;
		}
		if (!inside)
			continue;
		if (sscanf(line, "KernelPageSize: %" SCNu64 " kB", &kb) == 1) {
			r->unit = kb * 1024;
			found = true;
		} else if (!strncmp(line, "VmFlags:", 8)) {
			r->shared = strstr(line, " sh") != NULL;
			r->hugetlb = strstr(line, " ht") != NULL;
			break;
		}
	}
	free(line);
	fclose(f);
	if (!found)
		return fy_lazy_err(err, errlen, -EINVAL,
				   "region %s: %p is not mapped", r->name, (void *)r->host);
	if (r->unit < FY_PAGE_SIZE || r->unit & (r->unit - 1))
		return fy_lazy_err(err, errlen, -EINVAL, "region %s: page size %" PRIu64,
				   r->name, r->unit);
	return 0;
}

/*
 * A unit that is missing when the region is registered faults, so the
 * source is asked for it; one that is populated never faults, and the
 * guest would run on whatever it holds (zeros after a stray read mapped
 * the zero page, or a precopy page the source dirtied since). Check that
 * [start, start + len) of @r holds no page. A shmem file answers SEEK_DATA
 * from its page cache at once, whatever its size; other memory is asked
 * with mincore(2), which skips empty page tables (8 GiB of fresh anonymous
 * memory: about 2 ms).
 */
static int region_check_fresh(const struct lz_region *r,
			      const struct fy_region *in, uint64_t start,
			      uint64_t len, char *err, size_t errlen)
{
	unsigned char vec[4096];
	uint64_t off, n, i, end = start + len;
	off_t data;

	if (in->fd >= 0 && r->shared && !r->hugetlb) {
		data = lseek(in->fd, (off_t)(in->fd_offset + start), SEEK_DATA);
		if (data < 0 && errno == ENXIO)
			return 0;
		if (data >= 0 && (uint64_t)data - in->fd_offset >= end)
			return 0;
		if (data >= 0) {
			off = (uint64_t)data - in->fd_offset;
			goto populated;
		}
	}
	for (off = start; off < end; off += n * FY_PAGE_SIZE) {
		n = (end - off) / FY_PAGE_SIZE;
		if (n > sizeof(vec))
			n = sizeof(vec);
		if (mincore(r->host + off, n * FY_PAGE_SIZE, vec))
			return fy_lazy_err(err, errlen, -errno, "mincore region %s: %s",
					   r->name, strerror(errno));
		for (i = 0; i < n; i++)
			if (vec[i] & 1) {
				off += i * FY_PAGE_SIZE;
				goto populated;
			}
	}
	return 0;
populated:
	return fy_lazy_err(err, errlen, -EINVAL,
			   "region %s: the page at offset %#" PRIx64 " is already populated "
			   "(lazy loading needs memory never touched, dropped first, or "
			   "marked present)", r->name, off);
}

/*
 * Drop [off, off + len) of @r so that it faults. Private memory takes
 * MADV_DONTNEED. Shared memory (a memfd, hugetlb or not) takes
 * MADV_REMOVE, which the kernel turns into fallocate(PUNCH_HOLE |
 * KEEP_SIZE) on the mapping's own file at the mapping's own offset, and
 * which unmaps the range from every mapping of the file: the same as
 * punching through the region's descriptor, without trusting its
 * fd_offset, and for a shared mapping the VMM gave no descriptor for.
 * Units are whole huge pages on hugetlb, as its punch requires.
 */
static int region_drop(const struct lz_region *r, uint64_t off, uint64_t len,
		       char *err, size_t errlen)
{
	if (!madvise(r->host + off, len, r->shared ? MADV_REMOVE : MADV_DONTNEED))
		return 0;
	return fy_lazy_err(err, errlen, -errno,
			   "region %s: dropping %#" PRIx64 " bytes at offset %#" PRIx64
			   " with %s: %s", r->name, len, off,
			   r->shared ? "MADV_REMOVE" : "MADV_DONTNEED", strerror(errno));
}

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif
/* Runs dropped per system call: the kernel's limit on an iovec. */
#define FY_DROP_BATCH 1024

/*
 * Drop @n runs at once: process_madvise(2) on this process flushes the
 * TLB once per call instead of once per run. Postcopy's missing pages are
 * scattered (a guest writing at random leaves thousands of 4 KiB runs);
 * here, itself a guest whose TLB flushes are expensive, 13,655 runs in a
 * 512 MiB region took 180-220 ms with one madvise(2) each and 13-14 ms in
 * 14 calls. A kernel that refuses (before 6.13, or this advice) gets one
 * madvise(2) per run, as before; so does shared memory (MADV_REMOVE).
 */
static int drop_runs(const struct lz_region *r, const struct iovec *iov,
		     unsigned n, int *pidfd, char *err, size_t errlen)
{
	int advice = r->shared ? MADV_REMOVE : MADV_DONTNEED;
	size_t want = 0;
	long done;

	for (unsigned i = 0; i < n; i++)
		want += iov[i].iov_len;
	/* MADV_REMOVE through process_madvise() reports success here and
	 * leaves hugetlb pages mapped: shared memory is dropped run by run. */
	if (*pidfd == -1 && !r->shared)
		*pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (*pidfd >= 0) {
		done = syscall(SYS_process_madvise, *pidfd, iov, n, advice, 0);
		if (done == (long)want)
			return 0;
		if (done >= 0 || (errno != EINVAL && errno != ENOSYS &&
				  errno != EPERM))
			return fy_lazy_err(err, errlen, done < 0 ? -errno : -EIO,
					   "region %s: dropping %u runs with process_madvise: %s",
					   r->name, n, done < 0 ? strerror(errno)
							: "only part of them dropped");
		close(*pidfd);
		*pidfd = -2; /* refused: one madvise(2) per run from now on */
	}
	for (unsigned i = 0; i < n; i++) {
		int rc = region_drop(r, (uint64_t)((uint8_t *)iov[i].iov_base -
						   r->host),
				     iov[i].iov_len, err, errlen);

		if (rc)
			return rc;
	}
	return 0;
}

/* No unit of @r that is not placed holds a page: one mincore(2) pass. */
static int check_dropped(const struct lz_region *r, char *err, size_t errlen)
{
	unsigned char vec[4096];
	uint64_t off, n, i, ask, per = r->unit / FY_PAGE_SIZE;
	/* A unit larger than the vector (1 GiB) is there or not as a
	 * whole: its first page answers for it. */
	bool big = per > sizeof(vec);

	for (off = 0; off < r->size; off += n * FY_PAGE_SIZE) {
		n = (r->size - off) / FY_PAGE_SIZE;
		if (n > sizeof(vec) / per * per)
			n = big ? per : sizeof(vec) / per * per;
		ask = big ? 1 : n;
		if (mincore(r->host + off, ask * FY_PAGE_SIZE, vec))
			return fy_lazy_err(err, errlen, -errno, "mincore region %s: %s",
					   r->name, strerror(errno));
		for (i = 0; i < ask; i++)
			if ((vec[i] & 1) &&
			    !unit_placed(r, (off / FY_PAGE_SIZE + i) / per))
				return fy_lazy_err(err, errlen, -EINVAL,
						   "region %s: the page at offset %#" PRIx64 " is already populated, "
						   "also after its drop (a private mapping of a file keeps the file's pages)",
						   r->name, off + i * FY_PAGE_SIZE);
	}
	return 0;
}

/* Drop every run of units that are not placed, then check they are gone. */
static int drop_missing(const struct lz_region *r, char *err, size_t errlen)
{
	struct iovec iov[FY_DROP_BATCH];
	uint64_t u = 0, first;
	unsigned n = 0;
	int pidfd = -1, rc = 0;

	while (u < r->units && !rc) {
		if (unit_placed(r, u)) {
			u++;
			continue;
		}
		first = u;
		while (u < r->units && !unit_placed(r, u))
			u++;
		iov[n].iov_base = r->host + first * r->unit;
		iov[n].iov_len = (u - first) * r->unit;
		if (++n == FY_DROP_BATCH) {
			rc = drop_runs(r, iov, n, &pidfd, err, errlen);
			n = 0;
		}
	}
	if (!rc && n)
		rc = drop_runs(r, iov, n, &pidfd, err, errlen);
	if (pidfd >= 0)
		close(pidfd);
	return rc ? rc : check_dropped(r, err, errlen);
}

/*
 * fy_lazy_region_mark() - mark the units of @r whose every 4 KiB page is
 * set in @present as placed (a hugetlb unit with one page missing is
 * missing whole: the kernel places it only whole).
 * Return: the pages marked.
 */
uint64_t fy_lazy_region_mark(struct lz_region *r, const uint64_t *present)
{
	uint64_t per = r->unit / FY_PAGE_SIZE, u, n = 0;

	for (u = 0; present && u < r->units; u++) {
		if (fy_bits_count(present, u * per, per) != per)
			continue;
		atomic_fetch_or(&r->placed[u / 64], UINT64_C(1) << (u % 64));
		n += per;
	}
	return n;
}

/*
 * fy_lazy_region_prepare() - make every missing unit of @r fault. With
 * @drop (the caller gave a present bitmap), the runs of missing units are
 * dropped first (they may hold stale bytes, say precopy pages the source
 * dirtied since); then each run must hold no page (a drop that did not
 * take, e.g. on a private mapping of a file, is refused). Without it,
 * nothing is dropped and a populated page is refused: a file restore's
 * memory is fresh, and a page in it means the VMM touched guest memory
 * it did not mean to, which is better said than silently discarded.
 */
int fy_lazy_region_prepare(const struct lz_region *r,
			   const struct fy_region *in, bool drop, char *err,
			   size_t errlen)
{
	uint64_t u = 0, first;
	int rc;

	if (drop)
		return drop_missing(r, err, errlen);
	while (u < r->units) {
		if (unit_placed(r, u)) {
			u++;
			continue;
		}
		first = u;
		while (u < r->units && !unit_placed(r, u))
			u++;
		rc = region_check_fresh(r, in, first * r->unit,
					(u - first) * r->unit, err, errlen);
		if (rc)
			return rc;
	}
	return 0;
}

/*
 * fy_lazy_uffd_open() - open a userfaultfd that also serves faults taken
 * in the kernel (a read(2) into guest memory, KVM's accesses):
 * UFFD_USER_MODE_ONLY would turn those into EFAULT, so it is not a
 * fallback here. Return: the descriptor, or a negative code.
 */
int fy_lazy_uffd_open(char *err, size_t errlen)
{
	int fd = fy_uffd_open(false, err, errlen);

	if (fd == -EPERM)
		fy_lazy_err(err, errlen, -EPERM,
			    "userfaultfd: %s (lazy loading serves kernel faults too: needs root, "
			    "vm.unprivileged_userfaultfd=1 or access to /dev/userfaultfd)",
			    strerror(EPERM));
	return fd;
}
