// SPDX-License-Identifier: MIT
/*
 * lazy.c - guest memory filled on demand through userfaultfd (missing
 * mode). See lazy.h for the contract.
 *
 * Every region is cut into units, the page size of its mapping (4 KiB, or
 * the huge page of a hugetlb mapping, which the kernel places only whole).
 * A bitmap per region holds one bit per unit placed, set with an atomic OR
 * by the path whose UFFDIO_COPY or UFFDIO_ZEROPAGE placed the unit, after
 * the kernel did, so the bitmap only ever lags the page tables and never
 * claims a unit that is missing. It is what lets the paths skip work: the
 * fault thread wakes instead of asking for a unit already placed, and
 * background threads fetch only the runs of a batch still missing. Two
 * paths can still fetch the same unit when they race; the kernel then
 * places it once and answers the other with EEXIST, so a page is never
 * placed twice or torn. Units the caller marks present start with their
 * bit set.
 *
 * A fault the fault thread cannot answer at once becomes a waiter (region,
 * unit, the time it was read) in a list under wlock, and its unit gets a
 * pending bit; only the fault that sets the pending bit asks the source,
 * so a unit is asked for once however many threads wait for it. Every
 * placement ends with lz_release(): the waiters of the range whose unit
 * is now placed are counted (their wait ends there), their pending bits
 * cleared, and their units woken with UFFDIO_WAKE. The placements never
 * wake by themselves, so that a woken thread finds its fault counted, and
 * so that the background's placements skip the kernel's wake check, which
 * calls cond_resched() on every placement (a 256 MiB fill takes about 1.5x
 * as long with it). How a fault and a placement of its unit at the same
 * moment never lose the wake is told at lz_wait_add().
 *
 * The placed count rises when a bit goes from clear to set. Only the
 * placing path sets bits, after it has counted its zero and fault pages,
 * so when the last bit is set (the loader is complete) every count is in.
 * A path answered EEXIST leaves the bit to the placer: setting it could
 * complete the loader before the placer has counted. Every unit that is
 * not present has no page when the regions are registered (start drops
 * or refuses them), so every such unit has a placer.
 *
 * UFFDIO_COPY and UFFDIO_ZEROPAGE may place only part of a range: they
 * then fail (EAGAIN, or the error that stopped them) and report the bytes
 * placed in their result field. A placement resumes after those bytes,
 * steps over a unit that exists (EEXIST), and retries on EAGAIN (the
 * address space was changing, e.g. during a fork).
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "memory/lazy.h"
#include "memory/lazy_region.h"

/* Debian 12's kernel headers (6.1) have all of missing mode. */
#ifndef UFFD_FEATURE_MISSING_HUGETLBFS
#define UFFD_FEATURE_MISSING_HUGETLBFS (1 << 4)
#endif
#ifndef UFFD_FEATURE_MISSING_SHMEM
#define UFFD_FEATURE_MISSING_SHMEM (1 << 5)
#endif

#define LZ_DEFAULT_BATCH (2ull << 20)
#define LZ_MSGS 64 /* fault messages read at once */

/*
 * Wait-time histogram, log-linear over nanoseconds: values below 16 have a
 * bucket each, then 16 buckets per power of two (at most 6% wide).
 */
#define LZ_HIST_SUB 16
#define LZ_HIST_BUCKETS (61 * LZ_HIST_SUB)

/* A fault read and not yet answered: the thread that took it is blocked. */
struct lz_waiter {
	uint32_t region;
	uint32_t tid;	    /* the faulting thread (UFFD_FEATURE_THREAD_ID), 0
			       when the kernel does not say */
	uint64_t unit;
	uint64_t t0;	    /* when the fault thread read it */
};

/* A thread of the loader and its buffers. */
struct lz_worker {
	struct fy_lazy *l;
	pthread_t thread;
	bool started;
	uint8_t *buf;	    /* page aligned, mmap'd */
	uint64_t buflen;
	uint64_t *zero;	    /* buflen / 4 KiB bits */
	char err[256];	    /* the source's message */
};

struct fy_lazy {
	bool fault_urgent; /* fy_lazy_config.fault_urgent */
	int lane_cpu;	   /* fy_lazy_config.lane_cpu */
	struct fy_lane_keeper *keeper; /* fy_lazy_config.poll_us; NULL: none */
	_Atomic uint64_t keeper_cpu_ns, keeper_windows; /* once it stopped */
	struct lz_region *rg;
	size_t nrg;
	struct fy_lazy_source src;
	uint64_t batch;
	uint64_t max_unit;
	int uffd;
	int cancel_fd;	    /* eventfd: readable once the threads must stop */
	struct lz_worker *w; /* w[0] serves faults, the rest fill */
	size_t nw;
	uint8_t *zeros;	    /* read-only zeros for hugetlb zero units */
	uint64_t zeros_len;
	pthread_mutex_t bounce_lock; /* guards bounce */
	uint8_t *bounce;    /* fy_lazy_place()'s copy of one unit */
	uint64_t bounce_len;
	uint64_t nbatches;
	uint64_t pages;
	uint64_t present_pages; /* placed before start, by the caller */
	uint64_t t0_ns;
	bool finished;
	bool thread_id;	/* fault messages name the faulting thread */

	atomic_bool stop;
	_Atomic uint64_t next_batch;
	_Atomic uint64_t placed, faults, fault_pages, zero_pages;
	_Atomic uint64_t wait_max_ns;
	_Atomic uint64_t hist[LZ_HIST_BUCKETS];
	_Atomic uint64_t outstanding; /* units with their pending bit set */
	_Atomic uint64_t requests, request_errors, rerequests;
	_Atomic size_t nwaiting; /* a copy of nwt, read without wlock */
	_Atomic uint64_t fault_cpu_ns; /* the fault thread's CPU time, once
					  it ended */

	/* Guards the waiters and the pending bits' setting and clearing; no
	 * system call is made with it held. */
	pthread_mutex_t wlock;
	struct lz_waiter *wt;
	size_t nwt, capwt;

	pthread_mutex_t lock; /* guards what follows */
	pthread_cond_t cond;
	bool complete;
	double complete_ms;
	int error;
	char errmsg[256];
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Wake the threads' poll and make every loop stop at its next check. */
static void lz_signal_stop(struct fy_lazy *l)
{
	uint64_t one = 1;

	atomic_store(&l->stop, true);
	if (l->cancel_fd >= 0 && write(l->cancel_fd, &one, sizeof(one)) < 0) {
		/* The counter cannot overflow from a handful of writes; a
		 * failed write leaves the stop flag, which loops check. */
	}
}

/*
 * Stop the loader on its first error: later errors are consequences. The
 * message is kept verbatim, since it is the source's (naming the page).
 */
static int lz_fail(struct fy_lazy *l, int code, const char *msg)
{
	pthread_mutex_lock(&l->lock);
	if (!l->error) {
		l->error = code;
		snprintf(l->errmsg, sizeof(l->errmsg), "%s", msg);
	}
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	lz_signal_stop(l);
	return code;
}

/* The error that stopped the loader, or 0. */
static int lz_error(struct fy_lazy *l)
{
	int rc;

	pthread_mutex_lock(&l->lock);
	rc = l->error;
	pthread_mutex_unlock(&l->lock);
	return rc;
}

__attribute__((format(printf, 3, 4)))
static int lz_failf(struct fy_lazy *l, int code, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return lz_fail(l, code, msg);
}

/* ---------------------------------------------------------------------- */
/* bits                                                                   */
/* ---------------------------------------------------------------------- */

static bool unit_pending(const struct lz_region *r, uint64_t u)
{
	return atomic_load(&r->pending[u / 64]) & (UINT64_C(1) << (u % 64));
}

static void lz_complete(struct fy_lazy *l)
{
	pthread_mutex_lock(&l->lock);
	if (!l->complete) {
		l->complete = true;
		l->complete_ms = (double)(now_ns() - l->t0_ns) / 1e6;
	}
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
}

/*
 * We placed units [off, off + len) of @r: count their zero pages (bits of
 * @zero from page @zp) and fault pages (a fault waits for the unit,
 * whichever path placed it); then set their bits and count the ones that
 * were clear. A unit placed again after the VMM dropped it already has
 * its bit and was counted the first time.
 */
static void lz_done(struct fy_lazy *l, struct lz_region *r, uint64_t off,
		    uint64_t len, const uint64_t *zero, uint64_t zp)
{
	uint64_t u, first = off / r->unit, end = (off + len) / r->unit;
	uint64_t per = r->unit / FY_PAGE_SIZE, fresh = 0, zeros = 0, total;
	uint64_t asked = 0;

	/* Two paths can finish the same unit (one placed it, the other got
	 * EEXIST): only the one that sets its bit counts it. */
	for (u = first; u < end; u++) {
		uint64_t bit = UINT64_C(1) << (u % 64);

		if (atomic_fetch_or(&r->placed[u / 64], bit) & bit)
			continue;
		if (zero)
			zeros += fy_bits_count(zero, zp + (u - first) * per, per);
		asked += unit_pending(r, u);
		fresh++;
	}
	if (zeros)
		atomic_fetch_add(&l->zero_pages, zeros);
	if (asked)
		atomic_fetch_add(&l->fault_pages, asked * per);
	if (!fresh)
		return;
	total = atomic_fetch_add(&l->placed, fresh * per) + fresh * per;
	if (total == l->pages)
		lz_complete(l);
}

/* ---------------------------------------------------------------------- */
/* placement                                                              */
/* ---------------------------------------------------------------------- */

static int lz_release(struct fy_lazy *l, struct lz_region *r, uint64_t off,
		      uint64_t len);

/* What one placement ioctl works on: a run of units of one kind. */
struct lz_run {
	struct lz_region *r;
	uint64_t off, len;
	const uint8_t *src; /* NULL: UFFDIO_ZEROPAGE */
	const uint64_t *zero;
	uint64_t zp;	    /* page of @zero at @off */
};

/* One UFFDIO_COPY or UFFDIO_ZEROPAGE: bytes placed, and errno if short. */
static uint64_t lz_ioctl(struct fy_lazy *l, const struct lz_run *run, int *err)
{
	uint64_t dst = (uintptr_t)run->r->host + run->off;

	*err = 0;
	if (run->src) {
		struct uffdio_copy c = {
			.dst = dst, .src = (uintptr_t)run->src, .len = run->len,
			.mode = UFFDIO_COPY_MODE_DONTWAKE,
		};

		if (!ioctl(l->uffd, UFFDIO_COPY, &c))
			return run->len;
		*err = errno;
		return c.copy > 0 ? (uint64_t)c.copy : 0;
	} else {
		struct uffdio_zeropage z = {
			.range = { .start = dst, .len = run->len },
			.mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE,
		};

		if (!ioctl(l->uffd, UFFDIO_ZEROPAGE, &z))
			return run->len;
		*err = errno;
		return z.zeropage > 0 ? (uint64_t)z.zeropage : 0;
	}
}

/*
 * Place a run, resuming after partial placements, stepping over units
 * that exist and retrying when the address space was changing.
 */
static int lz_place_run(struct fy_lazy *l, struct lz_run *run)
{
	struct lz_region *r = run->r;
	uint64_t n, step;
	int err;

	while (run->len) {
		n = lz_ioctl(l, run, &err);
		step = n;
		if (n) {
			lz_done(l, r, run->off, n, run->zero, run->zp);
		} else if (err == EEXIST) {
			step = r->unit;
		} else if (err == EAGAIN) {
			if (atomic_load(&l->stop))
				return -ECANCELED;
			continue;
		} else {
			return lz_failf(l, -err, "%s region %s offset %#" PRIx64 ": %s",
					run->src ? "UFFDIO_COPY" : "UFFDIO_ZEROPAGE",
					r->name, run->off, strerror(err));
		}
		run->off += step;
		run->len -= step;
		run->zp += step / FY_PAGE_SIZE;
		if (run->src)
			run->src += step;
	}
	return 0;
}

enum lz_kind { LZ_DATA, LZ_ZERO, LZ_ZERO_COPY };

static enum lz_kind unit_kind(const struct lz_region *r, const uint64_t *zero,
			      uint64_t zp)
{
	uint64_t per = r->unit / FY_PAGE_SIZE;

	if (!zero || fy_bits_count(zero, zp, per) != per)
		return LZ_DATA;
	return r->zeropage ? LZ_ZERO : LZ_ZERO_COPY;
}

/* Place a run of one kind; zero copies come from l->zeros in pieces. */
static int lz_place_kind(struct fy_lazy *l, struct lz_run *run,
			 enum lz_kind kind, const uint8_t *buf)
{
	uint64_t total = run->len, piece;
	int rc = 0;

	if (kind != LZ_ZERO_COPY) {
		run->src = kind == LZ_DATA ? buf : NULL;
		return lz_place_run(l, run);
	}
	while (total && !rc) {
		piece = total < l->zeros_len ? total : l->zeros_len;
		run->src = l->zeros;
		run->len = piece;
		rc = lz_place_run(l, run);
		total -= piece;
	}
	return rc;
}

/*
 * Place the units of [off, off + len) of region @r that the bitmap says
 * are missing or that a fault waits for (a unit the VMM dropped after it
 * was placed), from @buf (bytes of the range; the bytes of a zero page
 * need not be zero unless the unit is also data, see lz_scrub) and @zero
 * (bit i = page i of the range is zero). Consecutive units of one kind go
 * in one ioctl. The ioctls do not wake: the faults waiting in the range
 * are counted, then woken, by lz_release().
 */
static int lz_place_range(struct fy_lazy *l, struct lz_region *r, uint64_t off,
			  uint64_t len, const uint8_t *buf, const uint64_t *zero)
{
	struct lz_run run = { .r = r, .zero = zero };
	uint64_t u, end = (off + len) / r->unit, first = 0, pos;
	enum lz_kind kind = LZ_DATA, k;
	bool open = false;
	int rc = 0;

	for (u = off / r->unit; u <= end && !rc; u++) {
		bool missing = u < end && (!unit_placed(r, u) || unit_pending(r, u));

		pos = u * r->unit - off;
		k = missing ? unit_kind(r, zero, pos / FY_PAGE_SIZE) : kind;
		if (open && (!missing || k != kind)) {
			run.off = off + first;
			run.len = pos - first;
			run.zp = first / FY_PAGE_SIZE;
			rc = lz_place_kind(l, &run, kind, buf + first);
			open = false;
		}
		if (missing && !open) {
			open = true;
			first = pos;
			kind = k;
		}
	}
	if (!rc && atomic_load(&l->nwaiting))
		rc = lz_release(l, r, off, len);
	return rc;
}

/*
 * A hugetlb unit is placed whole, so one with both zero and data pages is
 * copied as data: give its zero pages zero bytes (the source left them
 * unspecified).
 */
static void lz_scrub(const struct lz_region *r, uint8_t *buf, uint64_t len,
		     const uint64_t *zero)
{
	uint64_t per = r->unit / FY_PAGE_SIZE, p, u, n;

	if (r->unit == FY_PAGE_SIZE || !zero)
		return;
	for (u = 0; u < len / r->unit; u++) {
		n = fy_bits_count(zero, u * per, per);
		if (!n || n == per)
			continue;
		for (p = u * per; p < (u + 1) * per; p++)
			if (zero[p / 64] & (UINT64_C(1) << (p % 64)))
				memset(buf + p * FY_PAGE_SIZE, 0, FY_PAGE_SIZE);
	}
}

/* Ask the source for [off, off + len) of region @ri into @w's buffer. */
static int lz_fetch(struct fy_lazy *l, struct lz_worker *w, uint32_t ri,
		    uint64_t off, uint64_t len)
{
	struct lz_region *r = &l->rg[ri];
	int rc;

	memset(w->zero, 0, (len / FY_PAGE_SIZE + 63) / 64 * sizeof(uint64_t));
	w->err[0] = '\0';
	rc = l->src.fetch(l->src.opaque, ri, off, len, w->buf, w->zero, w->err,
			  sizeof(w->err));
	if (rc < 0) {
		if (!w->err[0])
			snprintf(w->err, sizeof(w->err),
				 "page source failed at region %s offset %#" PRIx64 ": %s",
				 r->name, off, strerror(-rc));
		return lz_fail(l, rc, w->err);
	}
	if (rc > 0)
		return lz_failf(l, -EINVAL, "page source returned %d", rc);
	lz_scrub(r, w->buf, len, w->zero);
	return 0;
}

/* ---------------------------------------------------------------------- */
/* threads                                                                */
/* ---------------------------------------------------------------------- */

static void lz_hist_add(struct fy_lazy *l, uint64_t ns)
{
	uint64_t max = atomic_load(&l->wait_max_ns);
	unsigned idx, e;

	if (ns < LZ_HIST_SUB) {
		idx = (unsigned)ns;
	} else {
		e = 63u - (unsigned)__builtin_clzll(ns);
		idx = (e - 3) * LZ_HIST_SUB +
		      (unsigned)((ns >> (e - 4)) & (LZ_HIST_SUB - 1));
	}
	if (idx >= LZ_HIST_BUCKETS)
		idx = LZ_HIST_BUCKETS - 1;
	atomic_fetch_add_explicit(&l->hist[idx], 1, memory_order_relaxed);
	while (ns > max &&
	       !atomic_compare_exchange_weak(&l->wait_max_ns, &max, ns))
		;
}

/* The middle of bucket @idx, in nanoseconds. */
static double lz_hist_value(unsigned idx)
{
	unsigned e, sub;

	if (idx < LZ_HIST_SUB)
		return idx;
	e = idx / LZ_HIST_SUB + 3;
	sub = idx % LZ_HIST_SUB;
	return (double)((uint64_t)(LZ_HIST_SUB + sub) << (e - 4)) +
	       (double)(UINT64_C(1) << (e - 4)) / 2;
}

static struct lz_region *lz_region_of(struct fy_lazy *l, uint64_t addr,
				      uint32_t *ri)
{
	size_t i;

	for (i = 0; i < l->nrg; i++) {
		uint64_t base = (uintptr_t)l->rg[i].host;

		if (addr >= base && addr - base < l->rg[i].size) {
			*ri = (uint32_t)i;
			return &l->rg[i];
		}
	}
	return NULL;
}

static int lz_wake(struct fy_lazy *l, struct lz_region *r, uint64_t off)
{
	struct uffdio_range range = {
		.start = (uintptr_t)r->host + off, .len = r->unit,
	};
	int err;

	if (!ioctl(l->uffd, UFFDIO_WAKE, &range))
		return 0;
	err = errno;
	return lz_failf(l, -err, "UFFDIO_WAKE region %s offset %#" PRIx64 ": %s",
			r->name, off, strerror(err));
}

/*
 * Whether the page at @addr is in memory. A unit whose bit is set is,
 * unless the VMM dropped it since (MADV_DONTNEED, a punched hole): its
 * next touch faults again, and waking alone would only repeat the fault.
 */
static bool lz_resident(uint64_t addr)
{
	unsigned char v = 0;

	if (mincore((void *)(uintptr_t)(addr / FY_PAGE_SIZE * FY_PAGE_SIZE),
		    FY_PAGE_SIZE, &v))
		return false; /* placing again is safe: EEXIST if present */
	return v & 1;
}

static void lz_fault_done(struct fy_lazy *l, uint64_t t0)
{
	atomic_fetch_add(&l->faults, 1);
	lz_hist_add(l, now_ns() - t0);
}

/*
 * Count and wake the faults waiting in [off, off + len) of @r whose unit
 * is placed: the caller placed the range, or found its units there
 * (EEXIST), and it holds no lock. A woken unit's pending bit is cleared.
 * The counts come before the wake, so that a woken thread finds its fault
 * in the statistics. Waking is per unit, since a wake over the range
 * would also wake threads whose units are still missing (and they would
 * fault again, counted twice).
 */
static int lz_release(struct fy_lazy *l, struct lz_region *r, uint64_t off,
		      uint64_t len)
{
	uint32_t ri = (uint32_t)(r - l->rg);
	uint64_t first = off / r->unit, end = (off + len) / r->unit, now, bit;
	uint64_t wake[64];
	size_t i, n, k;
	bool full;
	int rc = 0;

	do {
		n = 0;
		full = false;
		now = now_ns();
		pthread_mutex_lock(&l->wlock);
		for (i = 0; i < l->nwt && !full;) {
			struct lz_waiter *w = &l->wt[i];

			if (w->region != ri || w->unit < first || w->unit >= end ||
			    !unit_placed(r, w->unit)) {
				i++;
				continue;
			}
			for (k = 0; k < n && wake[k] != w->unit; k++)
				;
			if (k == n) {
				if (n == sizeof(wake) / sizeof(wake[0])) {
					full = true;
					break;
				}
				wake[n++] = w->unit;
			}
			bit = UINT64_C(1) << (w->unit % 64);
			if (atomic_fetch_and(&r->pending[w->unit / 64], ~bit) & bit)
				atomic_fetch_sub(&l->outstanding, 1);
			atomic_fetch_add(&l->faults, 1);
			lz_hist_add(l, now - w->t0);
			*w = l->wt[--l->nwt];
		}
		atomic_store(&l->nwaiting, l->nwt);
		pthread_mutex_unlock(&l->wlock);
		/* A vCPU runs again and may fault soon. */
		if (n)
			fy_lane_keeper_note(l->keeper);
		for (k = 0; k < n && !rc; k++)
			rc = lz_wake(l, r, wake[k] * r->unit);
	} while (full && !rc);
	return rc;
}

/*
 * Record a fault on unit @u of region @ri read at @t0, unless the unit
 * was placed meanwhile (@was: its bit when the caller looked). A placer
 * sets the unit's bit, then reads nwaiting, and takes wlock to release
 * waiters only if some are there; this adds the waiter and publishes
 * nwaiting, then reads the bit again. Both orders are sequentially
 * consistent, so at least one of the two sees the other's write, and
 * under wlock exactly one of them takes the waiter: no wake is lost.
 * Return: 1 if the unit must be asked for (no fault waited for it yet),
 * 0 if it is already asked for, 2 if it is there (wake now), or -ENOMEM.
 */
static int lz_wait_add(struct fy_lazy *l, uint32_t ri, uint64_t u, uint32_t tid,
		       uint64_t t0, bool was)
{
	struct lz_region *r = &l->rg[ri];
	uint64_t bit = UINT64_C(1) << (u % 64);
	struct lz_waiter *nw;
	size_t i;
	int rc = 0;

	pthread_mutex_lock(&l->wlock);
	/* A thread that a signal took out of its wait (a VMM kicking its
	 * vCPU) faults again on the same unit: it still waits since its
	 * first fault, and is one waiter, however long the unit takes. */
	for (i = 0; tid && i < l->nwt; i++)
		if (l->wt[i].tid == tid && l->wt[i].unit == u &&
		    l->wt[i].region == ri)
			break;
	if (tid && i < l->nwt)
		goto out; /* whoever places the unit releases that waiter and
			     wakes the unit, this thread's new wait with it */
	if (l->nwt == l->capwt) {
		nw = realloc(l->wt, (l->capwt ? 2 * l->capwt : 64) * sizeof(*nw));
		if (!nw) {
			rc = -ENOMEM;
			goto out;
		}
		l->wt = nw;
		l->capwt = l->capwt ? 2 * l->capwt : 64;
	}
	l->wt[l->nwt++] = (struct lz_waiter){ .region = ri, .tid = tid, .unit = u,
					      .t0 = t0 };
	atomic_store(&l->nwaiting, l->nwt);
	if (!was && (atomic_load(&r->placed[u / 64]) & bit)) {
		atomic_store(&l->nwaiting, --l->nwt);
		rc = 2;
		goto out;
	}
	if (!(atomic_fetch_or(&r->pending[u / 64], bit) & bit)) {
		atomic_fetch_add(&l->outstanding, 1);
		rc = 1;
	}
out:
	pthread_mutex_unlock(&l->wlock);
	return rc;
}

/*
 * Ask the source for unit @off of region @ri. An asynchronous source only
 * sends a request: its failure (the link is down) leaves the unit pending
 * for fy_lazy_rerequest(). A fetching source reads the unit here, and the
 * placement releases the faults waiting for it.
 */
static int lz_ask(struct fy_lazy *l, struct lz_worker *w, uint32_t ri,
		  uint64_t off)
{
	struct lz_region *r = &l->rg[ri];
	int rc;

	atomic_fetch_add(&l->requests, 1);
	if (l->src.request) {
		if (l->src.request(l->src.opaque, ri, off, r->unit) < 0)
			atomic_fetch_add(&l->request_errors, 1);
		return 0;
	}
	rc = lz_fetch(l, w, ri, off, r->unit);
	if (!rc)
		rc = lz_place_range(l, r, off, r->unit, w->buf, w->zero);
	return rc;
}

/*
 * Serve one fault read at @t0: wake at once if its unit is there, else
 * record it as a waiter and ask for the unit unless a fault already did.
 * The placement of the unit, by whichever path, wakes it (lz_release).
 */
static int lz_serve(struct fy_lazy *l, struct lz_worker *w, uint64_t addr,
		    uint32_t tid, uint64_t t0)
{
	struct lz_region *r;
	uint64_t off;
	uint32_t ri;
	bool was;
	int rc;

	r = lz_region_of(l, addr, &ri);
	if (!r)
		return lz_failf(l, -EFAULT, "fault at %#" PRIx64 " outside every region",
				addr);
	off = (addr - (uintptr_t)r->host) / r->unit * r->unit;
	was = unit_placed(r, off / r->unit);
	if (was && lz_resident(addr)) {
		lz_fault_done(l, t0);
		return lz_wake(l, r, off);
	}
	rc = lz_wait_add(l, ri, off / r->unit, tid, t0, was);
	if (rc == 2) {
		lz_fault_done(l, t0);
		return lz_wake(l, r, off);
	}
	if (rc < 0)
		return lz_fail(l, rc, "out of memory recording a fault");
	return rc ? lz_ask(l, w, ri, off) : 0;
}

/* sched_setattr(2)'s argument (Debian 12's glibc has no wrapper). */
struct fy_sched_attr {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t priority;
	uint64_t runtime, deadline, period;
};

static int set_fair(pid_t tid, int nice, uint64_t slice_ns, uint64_t flags)
{
	struct fy_sched_attr a = {
		.size = sizeof(a), .policy = SCHED_OTHER, .nice = nice,
		.runtime = slice_ns, .flags = flags,
	};

	return (int)syscall(SYS_sched_setattr, tid, &a, 0);
}

/* sched_setattr(2)'s flag that a thread may carry and set back. */
#define FY_SCHED_RESET_ON_FORK 0x01ull

/**
 * fy_lane_cpu() - see lazy.h.
 */
int fy_lane_cpu(int32_t setting)
{
	cpu_set_t set;
	int cpu;

	if (setting > 0)
		return setting - 1;
	if (setting < 0 || sched_getaffinity(0, sizeof(set), &set) ||
	    CPU_COUNT(&set) < 2)
		return -1;
	for (cpu = CPU_SETSIZE - 1; cpu >= 0 && !CPU_ISSET(cpu, &set); cpu--)
		;
	return cpu;
}

/* Keep the calling thread @tid to @cpu, remembering where it could run. */
static void lane_pin(pid_t tid, int cpu, struct fy_prio *old)
{
	cpu_set_t one;

	if (cpu < 0 || cpu >= CPU_SETSIZE ||
	    sched_getaffinity(tid, sizeof(old->cpus), &old->cpus) ||
	    !CPU_ISSET(cpu, &old->cpus))
		return;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	old->pinned = !sched_setaffinity(tid, sizeof(one), &one);
}

/**
 * fy_thread_urgent() - see lazy.h.
 */
void fy_thread_urgent(struct fy_prio *old, int cpu)
{
	pid_t tid = (pid_t)syscall(SYS_gettid);
	struct fy_sched_attr a = { .size = sizeof(a) };

	*old = (struct fy_prio){ 0 };
	/* Only an ordinary thread: a VMM's real-time, batch or idle thread
	 * keeps the class it was given. */
	if (syscall(SYS_sched_getattr, tid, &a, sizeof(a), 0) ||
	    a.policy != SCHED_OTHER)
		return;
	lane_pin(tid, cpu, old);
	old->nice = a.nice;
	old->slice_ns = a.runtime;
	old->flags = a.flags & FY_SCHED_RESET_ON_FORK;
	/* Both where allowed; the short slice needs no privilege, the
	 * negative nice needs CAP_SYS_NICE; a kernel before 6.12 takes
	 * the slice and ignores it. */
	if (!set_fair(tid, FY_URGENT_NICE, FY_URGENT_SLICE_NS, old->flags) ||
	    !set_fair(tid, a.nice, FY_URGENT_SLICE_NS, old->flags) ||
	    !setpriority(PRIO_PROCESS, (id_t)tid, FY_URGENT_NICE))
		old->set = true;
}

/**
 * fy_thread_restore() - see lazy.h.
 */
void fy_thread_restore(const struct fy_prio *old)
{
	pid_t tid = (pid_t)syscall(SYS_gettid);

	if (old->set &&
	    set_fair(tid, old->nice, old->slice_ns, old->flags))
		setpriority(PRIO_PROCESS, (id_t)tid, old->nice);
	if (old->pinned)
		sched_setaffinity(tid, sizeof(old->cpus), &old->cpus);
}

/**
 * fy_thread_cpu_ns() - see lazy.h.
 */
uint64_t fy_thread_cpu_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts))
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *lz_fault_main(void *arg)
{
	struct lz_worker *w = arg;
	struct fy_lazy *l = w->l;
	struct uffd_msg msg[LZ_MSGS];
	struct pollfd pfd[2] = {
		{ .fd = l->uffd, .events = POLLIN },
		{ .fd = l->cancel_fd, .events = POLLIN },
	};
	struct fy_prio prio;
	ssize_t n, i;
	uint64_t t0;
	int err;

	if (l->fault_urgent)
		fy_thread_urgent(&prio, l->lane_cpu);
	while (!atomic_load(&l->stop)) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			err = errno;
			lz_failf(l, -err, "poll on the userfaultfd: %s", strerror(err));
			break;
		}
		if (pfd[1].revents || atomic_load(&l->stop))
			break;
		if (pfd[0].revents & (POLLERR | POLLNVAL)) {
			lz_failf(l, -EIO, "the userfaultfd reports an error");
			break;
		}
		n = read(l->uffd, msg, sizeof(msg));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			err = errno;
			lz_failf(l, -err, "reading the userfaultfd: %s", strerror(err));
			break;
		}
		t0 = now_ns();
		fy_lane_keeper_note(l->keeper);
		for (i = 0; i < n / (ssize_t)sizeof(msg[0]); i++) {
			if (atomic_load(&l->stop))
				break;
			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			if (lz_serve(l, w, msg[i].arg.pagefault.address,
				     l->thread_id ? msg[i].arg.pagefault.feat.ptid : 0,
				     t0))
				break;
		}
	}
	atomic_store(&l->fault_cpu_ns, fy_thread_cpu_ns());
	return NULL;
}

/* Batch @idx of the background walk: region and byte range. */
static struct lz_region *lz_batch(struct fy_lazy *l, uint64_t idx, uint32_t *ri,
				  uint64_t *off, uint64_t *len)
{
	size_t i = l->nrg;

	while (i-- > 0)
		if (idx >= l->rg[i].batch0)
			break;
	*ri = (uint32_t)i;
	*off = (idx - l->rg[i].batch0) * l->batch;
	*len = l->rg[i].size - *off < l->batch ? l->rg[i].size - *off : l->batch;
	return &l->rg[i];
}

/* Fetch and place each run of missing units of one batch. */
static int lz_fill_batch(struct fy_lazy *l, struct lz_worker *w, uint64_t idx)
{
	uint64_t off, len, u, end, first;
	struct lz_region *r;
	uint32_t ri;
	int rc;

	r = lz_batch(l, idx, &ri, &off, &len);
	end = (off + len) / r->unit;
	for (u = off / r->unit; u < end; u++) {
		if (atomic_load(&l->stop))
			return -ECANCELED;
		if (unit_placed(r, u))
			continue;
		first = u;
		while (u + 1 < end && !unit_placed(r, u + 1))
			u++;
		rc = lz_fetch(l, w, ri, first * r->unit, (u + 1 - first) * r->unit);
		if (rc)
			return rc;
		rc = lz_place_range(l, r, first * r->unit, (u + 1 - first) * r->unit,
				    w->buf, w->zero);
		if (rc)
			return rc;
	}
	return 0;
}

static void *lz_fill_main(void *arg)
{
	struct lz_worker *w = arg;
	struct fy_lazy *l = w->l;
	uint64_t idx;

	while (!atomic_load(&l->stop)) {
		idx = atomic_fetch_add(&l->next_batch, 1);
		if (idx >= l->nbatches || lz_fill_batch(l, w, idx))
			break;
	}
	return NULL;
}

/* ---------------------------------------------------------------------- */
/* start                                                                  */
/* ---------------------------------------------------------------------- */

/*
 * A present unit that is not in memory (never written: it reads as
 * zeros) would fault once registered and be asked for although its bytes
 * are known: place zeros there before anything runs. mincore(2) finds
 * them; a unit that is there answers EEXIST, so a race is harmless.
 */
static int lz_zero_absent(struct fy_lazy *l, struct lz_region *r)
{
	unsigned char vec[4096];
	uint64_t off, n, i, per = r->unit / FY_PAGE_SIZE, first = 0;
	/* Pages a mincore() call looks at: a vector's worth, or one page of
	 * a unit larger than that (a 1 GiB page is present or not as a
	 * whole), so that every chunk holds whole units. */
	bool big = per > sizeof(vec);
	uint64_t chunk = big ? per : sizeof(vec);
	struct lz_run run = { .r = r };
	bool open = false;
	int rc = 0;

	for (off = 0; off < r->size && !rc; off += n * FY_PAGE_SIZE) {
		n = (r->size - off) / FY_PAGE_SIZE;
		if (n > chunk)
			n = chunk;
		if (mincore(r->host + off, (big ? 1 : n) * FY_PAGE_SIZE, vec))
			return lz_failf(l, -errno, "mincore region %s: %s", r->name,
					strerror(errno));
		/* A run ends at the end of each chunk at the latest. */
		for (i = 0; i <= n && !rc; i += per) {
			bool absent = i < n && unit_placed(r, (off / FY_PAGE_SIZE + i) / per) &&
				      !(vec[big ? 0 : i] & 1);

			if (absent && !open) {
				open = true;
				first = off + i * FY_PAGE_SIZE;
			} else if (!absent && open) {
				open = false;
				run.off = first;
				run.len = off + i * FY_PAGE_SIZE - first;
				rc = lz_place_kind(l, &run, r->zeropage ? LZ_ZERO :
						   LZ_ZERO_COPY, NULL);
			}
		}
	}
	return rc;
}

/*
 * Open l->uffd with the features the regions need. UFFDIO_API may be
 * issued once per descriptor and fails outright on an unknown feature, so
 * the available set is read on a throwaway descriptor first, which lets
 * the error name the feature.
 */
static int lz_uffd_setup(struct fy_lazy *l, char *err, size_t errlen)
{
	struct uffdio_api api = { .api = UFFD_API };
	uint64_t need = 0;
	size_t i;
	int fd, e;

	for (i = 0; i < l->nrg; i++) {
		if (l->rg[i].hugetlb)
			need |= UFFD_FEATURE_MISSING_HUGETLBFS;
		else if (l->rg[i].shared)
			need |= UFFD_FEATURE_MISSING_SHMEM;
	}
	fd = fy_lazy_uffd_open(err, errlen);
	if (fd < 0)
		return fd;
	if (ioctl(fd, UFFDIO_API, &api)) {
		e = errno;
		close(fd);
		return fy_lazy_err(err, errlen, -e, "UFFDIO_API: %s", strerror(e));
	}
	close(fd);
	if (need & ~api.features & UFFD_FEATURE_MISSING_HUGETLBFS)
		return fy_lazy_err(err, errlen, -EINVAL,
				   "userfaultfd: no UFFD_FEATURE_MISSING_HUGETLBFS (hugetlb backing)");
	if (need & ~api.features & UFFD_FEATURE_MISSING_SHMEM)
		return fy_lazy_err(err, errlen, -EINVAL,
				   "userfaultfd: no UFFD_FEATURE_MISSING_SHMEM (shared memory backing)");

	l->uffd = fy_lazy_uffd_open(err, errlen);
	if (l->uffd < 0)
		return l->uffd;
	/* Optional: with the faulting thread's id a fault repeated after a
	 * signal is recognised (lz_wait_add()). */
	l->thread_id = api.features & UFFD_FEATURE_THREAD_ID;
	if (l->thread_id)
		need |= UFFD_FEATURE_THREAD_ID;
	api = (struct uffdio_api){ .api = UFFD_API, .features = need };
	if (ioctl(l->uffd, UFFDIO_API, &api)) {
		e = errno;
		return fy_lazy_err(err, errlen, -e, "UFFDIO_API (features %#" PRIx64 "): %s",
				   need, strerror(e));
	}
	return 0;
}

static int lz_register(struct fy_lazy *l, struct lz_region *r, char *err,
		       size_t errlen)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)r->host, .len = r->size },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	int e;

	if (ioctl(l->uffd, UFFDIO_REGISTER, &reg)) {
		e = errno;
		return fy_lazy_err(err, errlen, -e, "UFFDIO_REGISTER region %s: %s%s",
				   r->name, strerror(e),
				   e == EINVAL ? " (missing mode takes anonymous, shmem or "
						 "hugetlb memory only)" : "");
	}
	if (!(reg.ioctls & (UINT64_C(1) << _UFFDIO_COPY)))
		return fy_lazy_err(err, errlen, -EINVAL,
				   "region %s: UFFDIO_COPY not available on this memory",
				   r->name);
	r->zeropage = reg.ioctls & (UINT64_C(1) << _UFFDIO_ZEROPAGE);
	return 0;
}

/* Copy and check the regions; size the batch, the bitmaps and the walk. */
static int lz_regions(struct fy_lazy *l, const struct fy_lazy_config *cfg,
		      char *err, size_t errlen)
{
	uint64_t present;
	size_t i;
	int rc;

	l->rg = calloc(cfg->nregions ? cfg->nregions : 1, sizeof(*l->rg));
	if (!l->rg)
		return fy_lazy_err(err, errlen, -ENOMEM, "out of memory");
	l->nrg = cfg->nregions;
	for (i = 0; i < l->nrg; i++) {
		struct lz_region *r = &l->rg[i];

		r->host = cfg->regions[i].host;
		r->size = cfg->regions[i].size;
		snprintf(r->name, sizeof(r->name), "%s", cfg->regions[i].name[0] ?
			 cfg->regions[i].name : "?");
		if (!r->host || !r->size)
			return fy_lazy_err(err, errlen, -EINVAL, "region %zu (%s) is empty",
					   i, r->name);
		rc = fy_lazy_region_probe(r, err, errlen);
		if (rc)
			return rc;
		if ((uintptr_t)r->host % r->unit || r->size % r->unit)
			return fy_lazy_err(err, errlen, -EINVAL,
					   "region %s: not aligned to its %" PRIu64 "-byte pages",
					   r->name, r->unit);
		r->units = r->size / r->unit;
		r->placed = calloc((r->units + 63) / 64, sizeof(uint64_t));
		r->pending = calloc((r->units + 63) / 64, sizeof(uint64_t));
		if (!r->placed || !r->pending)
			return fy_lazy_err(err, errlen, -ENOMEM, "out of memory");
		present = fy_lazy_region_mark(r, cfg->present ? cfg->present[i] : NULL);
		l->present_pages += present;
		if (r->unit > l->max_unit)
			l->max_unit = r->unit;
		l->pages += r->size / FY_PAGE_SIZE;
	}
	/* The default batch grows to a unit larger than itself (1 GiB
	 * pages); a batch the caller sets must hold whole units. */
	l->fault_urgent = cfg->fault_urgent;
	l->lane_cpu = cfg->fault_urgent ? cfg->lane_cpu : -1;
	l->batch = cfg->batch_bytes ? cfg->batch_bytes :
		   (LZ_DEFAULT_BATCH > l->max_unit ? LZ_DEFAULT_BATCH : l->max_unit);
	for (i = 0; i < l->nrg; i++) {
		if (l->batch % l->rg[i].unit)
			return fy_lazy_err(err, errlen, -EINVAL,
					   "batch %" PRIu64 " is not a multiple of region %s's "
					   "%" PRIu64 "-byte pages", l->batch, l->rg[i].name,
					   l->rg[i].unit);
		l->rg[i].batch0 = l->nbatches;
		l->nbatches += (l->rg[i].size + l->batch - 1) / l->batch;
	}
	return 0;
}

static void *lz_map(uint64_t len, int prot, int flags)
{
	void *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* Buffers of the fault thread (one unit) and the fillers (one batch). */
static int lz_workers(struct fy_lazy *l, unsigned fillers, char *err,
		      size_t errlen)
{
	size_t i;

	l->nw = 1 + fillers;
	l->w = calloc(l->nw, sizeof(*l->w));
	if (!l->w)
		return fy_lazy_err(err, errlen, -ENOMEM, "out of memory");
	for (i = 0; i < l->nw; i++) {
		struct lz_worker *w = &l->w[i];

		w->l = l;
		w->buflen = i ? l->batch : l->max_unit;
		/* Populated now, so that the first faults, the ones a lazy
		 * restore's first vCPU waits for, do not fault on it. */
		w->buf = lz_map(w->buflen, PROT_READ | PROT_WRITE, MAP_POPULATE);
		w->zero = calloc((w->buflen / FY_PAGE_SIZE + 63) / 64, sizeof(uint64_t));
		if (!w->buf || !w->zero)
			return fy_lazy_err(err, errlen, -ENOMEM, "out of memory");
	}
	/* Populated now: a fresh mapping would cost a page fault per 4 KiB
	 * page at every use (a 2 MiB unit: about 16 ms on this project's
	 * virtualised machines). */
	l->bounce_len = l->max_unit;
	l->bounce = lz_map(l->bounce_len, PROT_READ | PROT_WRITE, MAP_POPULATE);
	if (!l->bounce)
		return fy_lazy_err(err, errlen, -ENOMEM, "out of memory");
	/* Never written, so it costs no memory: reads map the zero page. */
	l->zeros_len = l->batch;
	l->zeros = lz_map(l->zeros_len, PROT_READ, 0);
	if (!l->zeros)
		return fy_lazy_err(err, errlen, -ENOMEM, "out of memory");
	return 0;
}

static int lz_threads(struct fy_lazy *l, char *err, size_t errlen)
{
	size_t i;
	int e;

	for (i = 0; i < l->nw; i++) {
		e = pthread_create(&l->w[i].thread, NULL,
				   i ? lz_fill_main : lz_fault_main, &l->w[i]);
		if (e)
			return fy_lazy_err(err, errlen, -e, "starting a loader thread: %s",
					   strerror(e));
		l->w[i].started = true;
	}
	return 0;
}

/*
 * fy_lazy_start() - register the regions in missing mode and start the
 * fault thread and the background threads (see lazy.h).
 */
int fy_lazy_start(struct fy_lazy **out, const struct fy_lazy_config *cfg,
		  char *err, size_t errlen)
{
	pthread_condattr_t ca;
	struct fy_lazy *l;
	size_t i;
	int rc;

	if (err && errlen)
		err[0] = '\0';
	*out = NULL;
	if (!cfg || (cfg->nregions && !cfg->regions) ||
	    !cfg->source.fetch == !cfg->source.request)
		return fy_lazy_err(err, errlen, -EINVAL,
				   "lazy loader: no regions, or not exactly one of fetch and request");
	if (cfg->background_threads && !cfg->source.fetch)
		return fy_lazy_err(err, errlen, -EINVAL,
				   "lazy loader: background threads need a fetching source");
	if (sysconf(_SC_PAGESIZE) != FY_PAGE_SIZE)
		return fy_lazy_err(err, errlen, -EINVAL, "page size %ld is not %u",
				   sysconf(_SC_PAGESIZE), FY_PAGE_SIZE);
	l = calloc(1, sizeof(*l));
	if (!l)
		return fy_lazy_err(err, errlen, -ENOMEM, "out of memory");
	l->uffd = -1;
	l->cancel_fd = -1;
	l->src = cfg->source;
	l->t0_ns = now_ns();
	pthread_mutex_init(&l->lock, NULL);
	pthread_mutex_init(&l->wlock, NULL);
	pthread_mutex_init(&l->bounce_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cond, &ca);
	pthread_condattr_destroy(&ca);

	rc = lz_regions(l, cfg, err, errlen);
	if (!rc)
		rc = lz_workers(l, cfg->background_threads, err, errlen);
	if (rc)
		goto fail;
	l->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->cancel_fd < 0) {
		rc = fy_lazy_err(err, errlen, -errno, "eventfd: %s", strerror(errno));
		goto fail;
	}
	rc = lz_uffd_setup(l, err, errlen);
	for (i = 0; !rc && i < l->nrg; i++)
		rc = lz_register(l, &l->rg[i], err, errlen);
	/* Drop what is not present only once every region is registered:
	 * a region the kernel refuses (a shared mapping of an ordinary
	 * file) loses nothing, and a page touched after its drop faults
	 * instead of coming back behind the loader's back. */
	for (i = 0; !rc && i < l->nrg; i++)
		rc = fy_lazy_region_prepare(&l->rg[i], &cfg->regions[i],
					    cfg->present != NULL, err, errlen);
	for (i = 0; !rc && cfg->present && i < l->nrg; i++) {
		rc = lz_zero_absent(l, &l->rg[i]);
		if (rc)
			fy_lazy_err(err, errlen, rc, "%s", l->errmsg);
	}
	atomic_store(&l->placed, l->present_pages);
	if (!rc && l->placed == l->pages)
		lz_complete(l);
	/* The keeper first: the fault thread reads l->keeper, which must
	 * be set before that thread exists (ThreadSanitizer saw the write
	 * race the thread's first read when it came second). */
	if (!rc) {
		rc = fy_lane_keeper_start(&l->keeper, l->lane_cpu,
					  (uint64_t)cfg->poll_us * 1000);
		if (rc)
			fy_lazy_err(err, errlen, rc,
				    "lazy loader: cannot start the lane's keeper thread");
	}
	if (!rc)
		rc = lz_threads(l, err, errlen);
	if (rc)
		goto fail;
	*out = l;
	return 0;
fail:
	fy_lazy_free(l);
	return rc;
}

/* ---------------------------------------------------------------------- */
/* the rest of the interface                                              */
/* ---------------------------------------------------------------------- */

/*
 * Whether @buf can be placed as it is. UFFDIO_COPY reads from page-aligned
 * addresses only, and a hugetlb unit with both zero and data pages is
 * copied whole, so its zero pages must read as zeros. Reading them costs
 * far less than a copy, and a receiver that zero-fills its staging buffer
 * passes.
 */
static bool lz_place_direct(const struct lz_region *r, const uint8_t *buf,
			    uint64_t len, const uint64_t *zero)
{
	uint64_t per = r->unit / FY_PAGE_SIZE, u, p, n;

	if ((uintptr_t)buf % FY_PAGE_SIZE)
		return false;
	for (u = 0; zero && per > 1 && u < len / r->unit; u++) {
		n = fy_bits_count(zero, u * per, per);
		if (!n || n == per)
			continue;
		for (p = u * per; p < (u + 1) * per; p++)
			if ((zero[p / 64] >> (p % 64) & 1) &&
			    !fy_page_is_zero(buf + p * FY_PAGE_SIZE))
				return false;
	}
	return true;
}

/*
 * fy_lazy_place() - place pages that arrived from elsewhere (see lazy.h);
 * a buffer that cannot be placed as it is goes through a copy.
 */
int fy_lazy_place(struct fy_lazy *l, uint32_t region, uint64_t offset,
		  uint64_t len, const void *buf, const uint64_t *zero)
{
	struct lz_region *r;
	uint8_t *bounce = NULL;
	bool own = false;
	int rc;

	if (!l || region >= l->nrg)
		return -EINVAL;
	r = &l->rg[region];
	if (offset % r->unit || len % r->unit || offset > r->size ||
	    len > r->size - offset || (!buf && len))
		return -EINVAL;
	rc = lz_error(l);
	if (rc)
		return rc;
	if (!lz_place_direct(r, buf, len, zero)) {
		/* The loader's own buffer holds a unit (a request's answer);
		 * a larger range, or a concurrent call, maps one. */
		if (len <= l->bounce_len && !pthread_mutex_trylock(&l->bounce_lock)) {
			bounce = l->bounce;
		} else {
			bounce = lz_map(len, PROT_READ | PROT_WRITE, 0);
			if (!bounce)
				return -ENOMEM;
			own = true;
		}
		memcpy(bounce, buf, len);
		lz_scrub(r, bounce, len, zero);
		buf = bounce;
	}
	rc = lz_place_range(l, r, offset, len, buf, zero);
	if (own)
		munmap(bounce, len);
	else if (bounce)
		pthread_mutex_unlock(&l->bounce_lock);
	return rc;
}

/* fy_lazy_unit() - the placement unit of @region (see lazy.h). */
uint64_t fy_lazy_unit(struct fy_lazy *l, uint32_t region)
{
	return l && region < l->nrg ? l->rg[region].unit : 0;
}

/* fy_lazy_unit_of() - a region's unit before a loader starts (lazy.h). */
int fy_lazy_unit_of(const struct fy_region *r, uint64_t *unit, char *err,
		    size_t errlen)
{
	struct lz_region z = { .host = r->host, .size = r->size };
	int rc;

	snprintf(z.name, sizeof(z.name), "%s", r->name);
	rc = fy_lazy_region_probe(&z, err, errlen);
	if (!rc)
		*unit = z.unit;
	return rc;
}

/* fy_lazy_has() - whether the unit holding @offset of @region is placed. */
bool fy_lazy_has(struct fy_lazy *l, uint32_t region, uint64_t offset)
{
	struct lz_region *r;

	if (!l || region >= l->nrg || offset >= l->rg[region].size)
		return false;
	r = &l->rg[region];
	return unit_placed(r, offset / r->unit);
}

/*
 * fy_lazy_have_bitmap() - the pages placed in @region, one bit per 4 KiB
 * page (see lazy.h). The bitmap lags the page tables, so a bit set here
 * is a page in place.
 */
int fy_lazy_have_bitmap(struct fy_lazy *l, uint32_t region, uint64_t *bits,
			size_t pages)
{
	struct lz_region *r;
	uint64_t per, p;

	if (!l || region >= l->nrg || !bits ||
	    pages != l->rg[region].size / FY_PAGE_SIZE)
		return -EINVAL;
	r = &l->rg[region];
	per = r->unit / FY_PAGE_SIZE;
	if (per == 1) {
		for (p = 0; p < (pages + 63) / 64; p++)
			bits[p] = atomic_load_explicit(&r->placed[p], memory_order_acquire);
		return 0;
	}
	memset(bits, 0, (pages + 63) / 64 * sizeof(uint64_t));
	for (p = 0; p < pages; p++)
		if (unit_placed(r, p / per))
			bits[p / 64] |= UINT64_C(1) << (p % 64);
	return 0;
}

/*
 * fy_lazy_rerequest() - ask the source again for every unit a fault waits
 * for (see lazy.h). The units are copied out under wlock and asked for
 * without it, since a request may take a while.
 */
int fy_lazy_rerequest(struct fy_lazy *l)
{
	struct lz_unit { uint32_t region; uint64_t unit; } *v = NULL;
	size_t i, n = 0;
	int rc;

	if (!l || !l->src.request)
		return -EINVAL;
	rc = lz_error(l);
	if (rc)
		return rc;
	pthread_mutex_lock(&l->wlock);
	if (l->nwt)
		v = malloc(l->nwt * sizeof(*v));
	for (i = 0; v && i < l->nwt; i++) {
		struct lz_waiter *w = &l->wt[i];
		uint64_t bit = UINT64_C(1) << (w->unit % 64);
		size_t k;

		if (!(atomic_load(&l->rg[w->region].pending[w->unit / 64]) & bit))
			continue;
		for (k = 0; k < n && (v[k].region != w->region || v[k].unit != w->unit); k++)
			;
		if (k == n)
			v[n++] = (struct lz_unit){ w->region, w->unit };
	}
	rc = l->nwt && !v ? -ENOMEM : 0;
	pthread_mutex_unlock(&l->wlock);
	for (i = 0; i < n; i++) {
		struct lz_region *r = &l->rg[v[i].region];

		atomic_fetch_add(&l->rerequests, 1);
		if (l->src.request(l->src.opaque, v[i].region, v[i].unit * r->unit,
				   r->unit) < 0)
			atomic_fetch_add(&l->request_errors, 1);
	}
	free(v);
	return rc ? rc : (int)(n < INT32_MAX ? n : INT32_MAX);
}

/*
 * fy_lazy_wait() - wait for completion, an error or @timeout_ms.
 * Return: 0, -ETIMEDOUT, or the error that stopped the loader.
 */
int fy_lazy_wait(struct fy_lazy *l, int timeout_ms)
{
	struct timespec ts;
	int rc = 0;

	if (!l)
		return -EINVAL;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (timeout_ms > 0) {
		ts.tv_sec += timeout_ms / 1000;
		ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
	}
	pthread_mutex_lock(&l->lock);
	while (!l->complete && !l->error && rc != ETIMEDOUT) {
		if (timeout_ms < 0)
			pthread_cond_wait(&l->cond, &l->lock);
		else
			rc = pthread_cond_timedwait(&l->cond, &l->lock, &ts);
	}
	rc = l->complete ? 0 : l->error ? l->error : -ETIMEDOUT;
	pthread_mutex_unlock(&l->lock);
	return rc;
}

/*
 * fy_lazy_cancel() - stop serving faults and filling; the registration
 * stays. A loader cancelled before it completed reports -ECANCELED.
 */
void fy_lazy_cancel(struct fy_lazy *l)
{
	bool complete;

	if (!l)
		return;
	pthread_mutex_lock(&l->lock);
	complete = l->complete;
	pthread_mutex_unlock(&l->lock);
	if (complete)
		lz_signal_stop(l);
	else
		lz_fail(l, -ECANCELED, "lazy loading cancelled");
}

/* fy_lazy_stats() - what the loader did so far (see lazy.h). */
void fy_lazy_stats(struct fy_lazy *l, struct fy_lazy_stats *out)
{
	uint64_t h[LZ_HIST_BUCKETS], n = 0, c, q50, q99;
	double max;
	unsigned i;

	memset(out, 0, sizeof(*out));
	if (!l)
		return;
	out->pages = l->pages;
	out->present = l->present_pages;
	out->placed = atomic_load(&l->placed);
	out->faults = atomic_load(&l->faults);
	out->fault_pages = atomic_load(&l->fault_pages);
	out->missing = out->pages - out->placed;
	out->requests = atomic_load(&l->requests);
	out->request_errors = atomic_load(&l->request_errors);
	out->rerequests = atomic_load(&l->rerequests);
	out->outstanding = atomic_load(&l->outstanding);
	out->waiting = atomic_load(&l->nwaiting);
	out->zero_pages = atomic_load(&l->zero_pages);
	out->fault_cpu_ns = atomic_load(&l->fault_cpu_ns);
	out->keeper_cpu_ns = atomic_load(&l->keeper_cpu_ns);
	out->keeper_windows = atomic_load(&l->keeper_windows);
	for (i = 0; i < LZ_HIST_BUCKETS; i++) {
		h[i] = atomic_load_explicit(&l->hist[i], memory_order_relaxed);
		n += h[i];
	}
	max = (double)atomic_load(&l->wait_max_ns);
	out->wait_max_us = max / 1e3;
	q50 = (n + 1) / 2;
	q99 = n - n / 100;
	for (i = 0, c = 0; n && i < LZ_HIST_BUCKETS; i++) {
		if (c < q50 && c + h[i] >= q50)
			out->wait_p50_us = (lz_hist_value(i) < max ?
					    lz_hist_value(i) : max) / 1e3;
		if (c < q99 && c + h[i] >= q99)
			out->wait_p99_us = (lz_hist_value(i) < max ?
					    lz_hist_value(i) : max) / 1e3;
		c += h[i];
	}
	pthread_mutex_lock(&l->lock);
	out->complete_ms = l->complete ? l->complete_ms : 0;
	out->error = l->error;
	snprintf(out->errmsg, sizeof(out->errmsg), "%s", l->errmsg);
	pthread_mutex_unlock(&l->lock);
}

static void lz_join(struct fy_lazy *l)
{
	size_t i;

	lz_signal_stop(l);
	for (i = 0; l->w && i < l->nw; i++) {
		if (l->w[i].started)
			pthread_join(l->w[i].thread, NULL);
		l->w[i].started = false;
	}
	if (l->keeper) {
		uint64_t cpu = 0, windows = 0;

		fy_lane_keeper_stop(l->keeper, &cpu, &windows);
		l->keeper = NULL;
		atomic_fetch_add(&l->keeper_cpu_ns, cpu);
		atomic_fetch_add(&l->keeper_windows, windows);
	}
}

/* fy_lazy_stop() - cancel, and join the loader's threads (see lazy.h). */
void fy_lazy_stop(struct fy_lazy *l)
{
	if (!l)
		return;
	fy_lazy_cancel(l);
	lz_join(l);
}

/*
 * fy_lazy_finish() - after a complete load: stop the threads, unregister
 * and close the userfaultfd. Return: 0, or -EBUSY when incomplete.
 */
int fy_lazy_finish(struct fy_lazy *l)
{
	size_t i;

	if (!l)
		return -EINVAL;
	if (l->finished)
		return 0;
	if (atomic_load(&l->placed) != l->pages)
		return -EBUSY;
	/* Every page placed is not enough while a fault still waits: a page
	 * the VMM dropped after its placement faults again, and unregistering
	 * now would let that thread read zeros instead of the source's page.
	 * A placer releases the waiters of its unit right after setting its
	 * bit, so give those a moment. */
	for (i = 0; atomic_load(&l->nwaiting) || atomic_load(&l->outstanding);
	     i++) {
		if (i == 1000)
			return -EBUSY;
		usleep(1000);
	}
	lz_join(l);
	/* Closing would unregister too, but not while a forked child holds
	 * a copy of the descriptor. */
	for (i = 0; i < l->nrg; i++) {
		struct uffdio_range range = {
			.start = (uintptr_t)l->rg[i].host, .len = l->rg[i].size,
		};

		ioctl(l->uffd, UFFDIO_UNREGISTER, &range);
	}
	close(l->uffd);
	l->uffd = -1;
	l->finished = true;
	return 0;
}

/*
 * fy_lazy_free() - stop the threads and release everything. Closing the
 * userfaultfd releases the registration: a thread blocked on a missing
 * page retries its fault on plain memory.
 */
void fy_lazy_free(struct fy_lazy *l)
{
	size_t i;

	if (!l)
		return;
	lz_join(l);
	if (l->uffd >= 0)
		close(l->uffd);
	if (l->cancel_fd >= 0)
		close(l->cancel_fd);
	for (i = 0; l->w && i < l->nw; i++) {
		if (l->w[i].buf)
			munmap(l->w[i].buf, l->w[i].buflen);
		free(l->w[i].zero);
	}
	free(l->w);
	if (l->zeros)
		munmap(l->zeros, l->zeros_len);
	if (l->bounce)
		munmap(l->bounce, l->bounce_len);
	pthread_mutex_destroy(&l->bounce_lock);
	for (i = 0; l->rg && i < l->nrg; i++) {
		free(l->rg[i].placed);
		free(l->rg[i].pending);
	}
	free(l->rg);
	free(l->wt);
	pthread_mutex_destroy(&l->wlock);
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->lock);
	free(l);
}
