// SPDX-License-Identifier: MIT
/*
 * dirty.c - dirty page tracking over the VMM's regions.
 *
 * Two back ends behind fy_dirty_start()/fy_dirty_collect():
 *
 * uffd: every region is registered with a userfaultfd in write-protect
 * mode with UFFD_FEATURE_WP_ASYNC, and write-protected once at start. In
 * async mode a write to a protected page never blocks and never produces a
 * message: the kernel simply clears the page's uffd-wp bit, which from then
 * on reads as PAGE_IS_WRITTEN in /proc/self/pagemap. One PAGEMAP_SCAN ioctl
 * per region (more only if the output vector fills) returns the written
 * pages as runs of addresses and, with PM_SCAN_WP_MATCHING, write-protects
 * them again under the page-table lock, so a write racing with the scan is
 * either reported now or by the next scan, never lost. The cost is
 * proportional to the page tables walked, not to the pages of guest memory
 * touched, and there is no per-page system call.
 *
 * What the uffd back end does not see, because write-protection lives in
 * this process's page tables and not in the memory itself (checked on
 * 6.18): writes to a memfd through another mapping, another process or
 * pwrite(2) on the fd; and memory freed by FALLOC_FL_PUNCH_HOLE on a memfd
 * (it reads back as zeroes but is not reported). MADV_DONTNEED on
 * anonymous memory is reported. Anonymous transparent huge pages are split
 * by their first write, which is reported as one 4 KiB page.
 *
 * bitmap: the VMM keeps its own dirty log (a hypervisor's KVM dirty
 * bitmap, say) and hands it over through a callback; we scan it a word at
 * a time with fy_bitmap_to_ranges().
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/userfaultfd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "memory/memory.h"

/*
 * Debian 12's kernel headers (6.1) predate WP_ASYNC and PAGEMAP_SCAN
 * (Linux 6.7). The values below are the kernel's UAPI ones
 * (include/uapi/linux/userfaultfd.h and include/uapi/linux/fs.h); the
 * running kernel decides at run time whether they are understood.
 */
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

#ifndef PAGEMAP_SCAN
struct page_region {
	__u64 start;
	__u64 end; /* exclusive */
	__u64 categories;
};

struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif
#ifndef PAGE_IS_WPALLOWED
#define PAGE_IS_WPALLOWED (1 << 0)
#endif
#ifndef PAGE_IS_WRITTEN
#define PAGE_IS_WRITTEN (1 << 1)
#endif
#ifndef PAGE_IS_FILE
#define PAGE_IS_FILE (1 << 2)
#endif
#ifndef PAGE_IS_PRESENT
#define PAGE_IS_PRESENT (1 << 3)
#endif
#ifndef PM_SCAN_WP_MATCHING
#define PM_SCAN_WP_MATCHING (1 << 0)
#endif
#ifndef PM_SCAN_CHECK_WPASYNC
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#endif

_Static_assert(sizeof(struct pm_scan_arg) == 96, "pm_scan_arg layout");
_Static_assert(sizeof(struct page_region) == 24, "page_region layout");

/*
 * Entries of the PAGEMAP_SCAN output vector (24 bytes each). One ioctl
 * reports up to this many runs; more runs just mean another ioctl from
 * where the last one stopped.
 */
#define FY_DIRTY_SCAN_VEC 8192

__attribute__((format(printf, 3, 4)))
static int dirty_fail(struct fy_dirty *d, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(d->err, sizeof(d->err), fmt, ap);
	va_end(ap);
	return code;
}

/* ---------------------------------------------------------------------- */
/* uffd back end                                                          */
/* ---------------------------------------------------------------------- */

/*
 * Open a userfaultfd. User-mode-only is enough here: async write-protect
 * faults are resolved by the kernel without ever reaching the uffd, so
 * kernel-mode writes (read(2) into guest memory) are still tracked.
 */
static int uffd_open(struct fy_dirty *d)
{
	char why[192];
	int fd = fy_uffd_open(true, why, sizeof(why));

	return fd >= 0 ? fd : dirty_fail(d, fd, "%s", why);
}

/*
 * UFFDIO_API may be issued only once per descriptor and fails outright if
 * a requested feature is unknown, so the available set is read on a
 * throwaway descriptor first.
 */
static int uffd_available(struct fy_dirty *d, uint64_t *features)
{
	struct uffdio_api api = { .api = UFFD_API };
	int fd = uffd_open(d);
	int err;

	if (fd < 0)
		return fd;
	if (ioctl(fd, UFFDIO_API, &api)) {
		err = errno;
		close(fd);
		return dirty_fail(d, -err, "UFFDIO_API: %s", strerror(err));
	}
	close(fd);
	*features = api.features;
	return 0;
}

static int uffd_setup(struct fy_dirty *d, uint64_t *features)
{
	struct uffdio_api api = { .api = UFFD_API };
	uint64_t avail = 0;
	int rc, err;

	rc = uffd_available(d, &avail);
	if (rc)
		return rc;
	if (!(avail & UFFD_FEATURE_WP_ASYNC))
		return dirty_fail(d, -EOPNOTSUPP,
				  "userfaultfd: no UFFD_FEATURE_WP_ASYNC (needs Linux 6.7+)");
	/*
	 * WP_UNPOPULATED makes write-protection stick to pages that are
	 * not populated yet (anonymous memory never touched). Without it
	 * only populated pages are protected; a page populated later comes
	 * in unprotected and is reported as written, which over-reports but
	 * never misses a write.
	 */
	api.features = UFFD_FEATURE_WP_ASYNC |
		       (avail & (UFFD_FEATURE_WP_UNPOPULATED |
				 UFFD_FEATURE_WP_HUGETLBFS_SHMEM));

	rc = uffd_open(d);
	if (rc < 0)
		return rc;
	d->uffd = rc;
	if (ioctl(d->uffd, UFFDIO_API, &api)) {
		err = errno;
		return dirty_fail(d, -err, "UFFDIO_API (features %#llx): %s",
				  (unsigned long long)api.features, strerror(err));
	}
	*features = api.features;
	return 0;
}

static int uffd_register(struct fy_dirty *d, size_t i, uint64_t features)
{
	const struct fy_region *rg = &d->regions[i];
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)rg->host, .len = rg->size },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	int err;

	if (ioctl(d->uffd, UFFDIO_REGISTER, &reg)) {
		err = errno;
		return dirty_fail(d, -err, "UFFDIO_REGISTER region %zu (%s): %s%s",
				  i, rg->name, strerror(err),
				  (err == EINVAL &&
				   !(features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM)) ?
				  " (shared memory needs UFFD_FEATURE_WP_HUGETLBFS_SHMEM)" : "");
	}
	if (!(reg.ioctls & (UINT64_C(1) << _UFFDIO_WRITEPROTECT)))
		return dirty_fail(d, -EOPNOTSUPP,
				  "region %zu (%s): write-protect not supported for this memory",
				  i, rg->name);
	return 0;
}

static int uffd_protect(struct fy_dirty *d, size_t i)
{
	const struct fy_region *rg = &d->regions[i];
	struct uffdio_writeprotect wp = {
		.range = { .start = (uintptr_t)rg->host, .len = rg->size },
		.mode = UFFDIO_WRITEPROTECT_MODE_WP,
	};
	int err;

	if (ioctl(d->uffd, UFFDIO_WRITEPROTECT, &wp)) {
		err = errno;
		return dirty_fail(d, -err, "UFFDIO_WRITEPROTECT region %zu (%s): %s",
				  i, rg->name, strerror(err));
	}
	return 0;
}

/*
 * A one-page PAGEMAP_SCAN with PM_SCAN_CHECK_WPASYNC: fails with ENOTTY or
 * EINVAL on kernels without the ioctl, and with EPERM if the region is not
 * under async write-protect, so collect cannot fail for these reasons
 * later.
 */
static int pagemap_check(struct fy_dirty *d, size_t i)
{
	const struct fy_region *rg = &d->regions[i];
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.flags = PM_SCAN_CHECK_WPASYNC,
		.start = (uintptr_t)rg->host,
		.end = (uintptr_t)rg->host + FY_PAGE_SIZE,
		.vec = (uintptr_t)d->scan_buf,
		.vec_len = 1,
		.category_mask = PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_WRITTEN,
	};
	int err;

	if (ioctl(d->pagemap_fd, PAGEMAP_SCAN, &arg) < 0) {
		err = errno;
		if (err == ENOTTY || err == EINVAL)
			return dirty_fail(d, -EOPNOTSUPP,
					  "PAGEMAP_SCAN: %s (needs Linux 6.7+)",
					  strerror(err));
		return dirty_fail(d, -err, "PAGEMAP_SCAN region %zu (%s): %s",
				  i, rg->name, strerror(err));
	}
	return 0;
}

static int uffd_start(struct fy_dirty *d)
{
	uint64_t features = 0;
	size_t i;
	int rc, err;

	if (sysconf(_SC_PAGESIZE) != FY_PAGE_SIZE)
		return dirty_fail(d, -EOPNOTSUPP, "page size %ld is not %u",
				  sysconf(_SC_PAGESIZE), FY_PAGE_SIZE);
	for (i = 0; i < d->nregions; i++) {
		const struct fy_region *rg = &d->regions[i];

		if (!rg->host || (uintptr_t)rg->host % FY_PAGE_SIZE)
			return dirty_fail(d, -EINVAL,
					  "region %zu (%s): host address not page aligned",
					  i, rg->name);
	}

	d->scan_cap = FY_DIRTY_SCAN_VEC;
	d->scan_buf = calloc(d->scan_cap, sizeof(struct page_region));
	if (!d->scan_buf)
		return dirty_fail(d, -ENOMEM, "out of memory");
	d->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (d->pagemap_fd < 0) {
		err = errno;
		return dirty_fail(d, -err, "/proc/self/pagemap: %s", strerror(err));
	}

	rc = uffd_setup(d, &features);
	if (rc)
		return rc;
	for (i = 0; i < d->nregions; i++) {
		rc = uffd_register(d, i, features);
		if (rc)
			return rc;
	}
	/* Registered everywhere before protecting anywhere: see uffd_stop. */
	for (i = 0; i < d->nregions; i++) {
		rc = uffd_protect(d, i);
		if (rc)
			return rc;
		rc = pagemap_check(d, i);
		if (rc)
			return rc;
	}
	return 0;
}

static int uffd_collect_region(struct fy_dirty *d, size_t i,
			       struct fy_ranges *out)
{
	const struct fy_region *rg = &d->regions[i];
	const struct page_region *vec = d->scan_buf;
	uint64_t base = (uintptr_t)rg->host;
	uint64_t end = base + rg->size;
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
		.start = base,
		.end = end,
		.vec = (uintptr_t)d->scan_buf,
		.vec_len = d->scan_cap,
		.category_mask = PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_WRITTEN,
	};
	uint64_t next;
	long n, k;
	int rc, err;

	for (;;) {
		n = ioctl(d->pagemap_fd, PAGEMAP_SCAN, &arg);
		if (n < 0) {
			err = errno;
			return dirty_fail(d, -err, "PAGEMAP_SCAN region %zu (%s): %s%s",
					  i, rg->name, strerror(err),
					  err == EPERM ?
					  " (region no longer write-protect tracked: remapped?)" : "");
		}
		for (k = 0; k < n; k++) {
			rc = fy_ranges_add(out, (uint32_t)i, vec[k].start - base,
					   vec[k].end - vec[k].start);
			if (rc)
				return dirty_fail(d, rc, "out of memory");
		}
		/*
		 * The walk stops early only when the vector is full. Do not
		 * trust walk_end otherwise: when the kernel's internal
		 * buffer was flushed during a walk that then completed,
		 * walk_end still holds the flush point (seen on 6.18).
		 */
		if ((size_t)n < d->scan_cap)
			return 0;
		/*
		 * Full: pages past walk_end were neither reported nor
		 * protected again. Everything before the last reported run
		 * was scanned, so resuming at the later of the two is safe
		 * and always makes progress.
		 */
		next = arg.walk_end;
		if (next < vec[n - 1].end)
			next = vec[n - 1].end;
		if (next >= end)
			return 0;
		arg.start = next;
	}
}

static void uffd_stop(struct fy_dirty *d)
{
	size_t i;

	/*
	 * Closing the descriptor would unregister too, but not if a forked
	 * child still holds a copy of it.
	 */
	if (d->uffd >= 0) {
		for (i = 0; i < d->nregions; i++) {
			struct uffdio_range range = {
				.start = (uintptr_t)d->regions[i].host,
				.len = d->regions[i].size,
			};

			ioctl(d->uffd, UFFDIO_UNREGISTER, &range);
		}
		close(d->uffd);
	}
	if (d->pagemap_fd >= 0)
		close(d->pagemap_fd);
	free(d->scan_buf);
}

/* ---------------------------------------------------------------------- */
/* bitmap back end                                                        */
/* ---------------------------------------------------------------------- */

static int bitmap_start(struct fy_dirty *d)
{
	size_t i, words = 0;

	if (!d->bitmap_fn)
		return dirty_fail(d, -EINVAL, "bitmap tracking needs a callback");
	for (i = 0; i < d->nregions; i++) {
		size_t w = (size_t)((d->regions[i].size / FY_PAGE_SIZE + 63) / 64);

		if (w > words)
			words = w;
	}
	d->bitmap_words = words;
	d->bitmap = calloc(words ? words : 1, sizeof(uint64_t));
	if (!d->bitmap)
		return dirty_fail(d, -ENOMEM, "out of memory");
	/* Tracking starts now: what the log holds from before (every write
	 * since the VMM started, say) is covered by the first full pass. */
	for (i = 0; i < d->nregions; i++) {
		size_t pages = (size_t)(d->regions[i].size / FY_PAGE_SIZE);
		int rc;

		memset(d->bitmap, 0, (pages + 63) / 64 * sizeof(uint64_t));
		rc = d->bitmap_fn(d->bitmap_opaque, (uint32_t)i, d->bitmap, pages);
		if (rc < 0)
			return dirty_fail(d, rc, "dirty bitmap of region %zu (%s): %s",
					  i, d->regions[i].name, strerror(-rc));
	}
	return 0;
}

static int bitmap_collect(struct fy_dirty *d, struct fy_ranges *out)
{
	size_t i;
	int rc;

	for (i = 0; i < d->nregions; i++) {
		size_t pages = (size_t)(d->regions[i].size / FY_PAGE_SIZE);

		memset(d->bitmap, 0, (pages + 63) / 64 * sizeof(uint64_t));
		rc = d->bitmap_fn(d->bitmap_opaque, (uint32_t)i, d->bitmap, pages);
		if (rc < 0)
			return dirty_fail(d, rc, "dirty bitmap of region %zu (%s): %s",
					  i, d->regions[i].name, strerror(-rc));
		rc = fy_bitmap_to_ranges(out, (uint32_t)i, d->bitmap, pages);
		if (rc)
			return dirty_fail(d, rc, "out of memory");
	}
	return 0;
}

/* ---------------------------------------------------------------------- */
/* interface                                                              */
/* ---------------------------------------------------------------------- */

static void dirty_release(struct fy_dirty *d)
{
	if (d->kind == FY_DIRTY_UFFD)
		uffd_stop(d);
	free(d->bitmap);
	d->kind = 0;
	d->regions = NULL;
	d->nregions = 0;
	d->uffd = -1;
	d->pagemap_fd = -1;
	d->scan_buf = NULL;
	d->scan_cap = 0;
	d->bitmap_fn = NULL;
	d->bitmap_opaque = NULL;
	d->bitmap = NULL;
	d->bitmap_words = 0;
}

/**
 * fy_dirty_start() - begin tracking writes to @regions.
 * @d:        tracker; its previous contents are ignored (stop it first)
 * @kind:     FY_DIRTY_UFFD or FY_DIRTY_BITMAP
 * @regions:  region table, borrowed until fy_dirty_stop(); page-multiple
 *            sizes, and for uffd page-aligned host mappings
 * @nregions: entries in @regions
 * @fn:       dirty-bitmap callback (bitmap back end only)
 * @opaque:   passed to @fn
 *
 * After it returns, every write to the regions, from any thread or from
 * the kernel on the process's behalf, is reported by the next
 * fy_dirty_collect(). On failure nothing stays registered and d->err says
 * why; fy_dirty_stop() is still harmless.
 *
 * Return: 0 or a negative errno code.
 */
int fy_dirty_start(struct fy_dirty *d, enum fy_dirty_kind kind,
		   const struct fy_region *regions, size_t nregions,
		   fy_bitmap_fn fn, void *opaque)
{
	size_t i;
	int rc;

	memset(d, 0, sizeof(*d));
	d->uffd = -1;
	d->pagemap_fd = -1;
	d->regions = regions;
	d->nregions = nregions;
	d->bitmap_fn = fn;
	d->bitmap_opaque = opaque;

	for (i = 0; i < nregions; i++) {
		if (!regions[i].size || regions[i].size % FY_PAGE_SIZE ||
		    regions[i].size / FY_PAGE_SIZE > SIZE_MAX - 63) {
			rc = dirty_fail(d, -EINVAL,
					"region %zu (%s): size %llu is not a page multiple",
					i, regions[i].name,
					(unsigned long long)regions[i].size);
			goto fail;
		}
	}

	switch (kind) {
	case FY_DIRTY_UFFD:
		d->kind = kind;
		rc = uffd_start(d);
		break;
	case FY_DIRTY_BITMAP:
		d->kind = kind;
		rc = bitmap_start(d);
		break;
	default:
		rc = dirty_fail(d, -EINVAL, "unknown dirty tracking kind %d", kind);
		break;
	}
	if (rc)
		goto fail;
	return 0;

fail:
	dirty_release(d);
	return rc;
}

/**
 * fy_dirty_collect() - append the pages written since the last collect (or
 * since start) to @out, and track anew from here.
 * @d:   started tracker; one caller at a time
 * @out: list appended to (not cleared); region indexes are those of the
 *       table given to fy_dirty_start(), offsets relative to the region
 *
 * Writes that race with the collect are reported by this one or by the
 * next, never lost. The uffd back end makes one ioctl per region (more
 * only when a region has more than 8192 separate runs) and allocates
 * nothing except to grow @out.
 *
 * Return: 0 or a negative errno code (detail in d->err). After a failure
 * the pages of the failed region not yet reported may be lost to
 * tracking: the caller should treat everything as dirty.
 */
int fy_dirty_collect(struct fy_dirty *d, struct fy_ranges *out)
{
	size_t i;
	int rc;

	switch (d->kind) {
	case FY_DIRTY_UFFD:
		for (i = 0; i < d->nregions; i++) {
			rc = uffd_collect_region(d, i, out);
			if (rc)
				return rc;
		}
		return 0;
	case FY_DIRTY_BITMAP:
		return bitmap_collect(d, out);
	default:
		return dirty_fail(d, -EINVAL, "dirty tracking not started");
	}
}

/**
 * fy_dirty_stop() - stop tracking and release everything; the regions are
 * left writable and unregistered. Harmless on a zeroed or stopped tracker.
 * d->err is kept.
 * @d: tracker
 */
void fy_dirty_stop(struct fy_dirty *d)
{
	if (!d)
		return;
	dirty_release(d);
}

/* ---------------------------------------------------------------------- */
/* probe                                                                  */
/* ---------------------------------------------------------------------- */

#define PROBE_PAGES 16

static int probe_run(struct fy_region *rg, size_t n, char *why, size_t len)
{
	struct fy_dirty d;
	struct fy_ranges got;
	size_t i;
	int rc;

	fy_ranges_init(&got);
	rc = fy_dirty_start(&d, FY_DIRTY_UFFD, rg, n, NULL, NULL);
	if (rc) {
		snprintf(why, len, "%s", d.err);
		return rc;
	}
	/* Page 3 of every region, and nothing else, must come back. */
	for (i = 0; i < n; i++)
		rg[i].host[3 * FY_PAGE_SIZE] = 1;
	rc = fy_dirty_collect(&d, &got);
	if (rc) {
		snprintf(why, len, "%s", d.err);
		goto out;
	}
	for (i = 0; i < n && got.n == n; i++) {
		if (got.v[i].region != i || got.v[i].offset != 3 * FY_PAGE_SIZE ||
		    got.v[i].length != FY_PAGE_SIZE)
			break;
	}
	if (got.n != n || i != n) {
		snprintf(why, len, "PAGEMAP_SCAN did not report exactly the written pages");
		rc = -EIO;
	}
out:
	fy_ranges_free(&got);
	fy_dirty_stop(&d);
	return rc;
}

/**
 * fy_dirty_probe_uffd() - check that the uffd back end works here, end to
 * end, on a small anonymous mapping and a small memfd mapped shared (the
 * two kinds of guest RAM a VMM uses).
 * @why: receives the reason on failure ("" on success); may be NULL
 * @len: size of @why
 *
 * Return: 0, or the negative code fy_dirty_start() or collect would give.
 */
int fy_dirty_probe_uffd(char *why, size_t len)
{
	size_t size = PROBE_PAGES * FY_PAGE_SIZE;
	struct fy_region rg[2];
	char scratch[160];
	size_t n = 0;
	int memfd = -1;
	void *p;
	int rc, err;

	if (!why || !len) {
		why = scratch;
		len = sizeof(scratch);
	}
	why[0] = '\0';
	memset(rg, 0, sizeof(rg));

	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		 -1, 0);
	if (p == MAP_FAILED) {
		err = errno;
		snprintf(why, len, "mmap: %s", strerror(err));
		return -err;
	}
	rg[n] = (struct fy_region){ .host = p, .size = size, .fd = -1,
				    .name = "probe-anon" };
	n++;

	memfd = memfd_create("ferry-probe", MFD_CLOEXEC);
	if (memfd >= 0 && ftruncate(memfd, (off_t)size) == 0) {
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
		if (p != MAP_FAILED) {
			rg[n] = (struct fy_region){ .host = p, .size = size,
						    .fd = memfd, .name = "probe-memfd" };
			n++;
		}
	}

	rc = probe_run(rg, n, why, len);

	while (n--)
		munmap(rg[n].host, size);
	if (memfd >= 0)
		close(memfd);
	return rc;
}
