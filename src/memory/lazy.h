/* SPDX-License-Identifier: MIT */
/*
 * lazy.h - guest memory filled on demand through userfaultfd (missing
 * mode): the engine component behind a lazy restore from a snapshot file
 * and behind postcopy, where only the page source differs (a file's
 * slots, or the network).
 *
 * The regions must be mapped when fy_lazy_start() registers them. Without
 * a present bitmap they must also be unpopulated (fresh anonymous memory,
 * a fresh memfd or hugetlb memfd, or MADV_DONTNEED'd / punched), which a
 * lazy restore from a file guarantees. With one (postcopy: precopy left
 * most pages in place), the pages it marks count as placed and keep their
 * bytes, and every other page is dropped so that it faults (see
 * fy_lazy_config.present). From then on a thread that touches a missing
 * page blocks in the kernel until the page is placed. The fault thread
 * reads each fault and asks the source for the page's unit (one page, or
 * the whole huge page of a hugetlb mapping), once however many faults
 * wait for it. A fetching source (a file) is read there and then; an
 * asynchronous one (postcopy's network) only sends a request, and the
 * unit arrives later through fy_lazy_place() from another thread, while
 * the fault thread goes on serving other faults. Units are placed
 * atomically with UFFDIO_COPY (UFFDIO_ZEROPAGE for a zero unit where the
 * kernel allows it, a copy of zeros on hugetlb). Background threads (with
 * a fetching source) walk every unit not yet placed, in large batches,
 * and place them the same way; a unit placed by one path is never placed
 * again (the kernel answers EEXIST, which counts as done), so a page is
 * never placed twice or torn. Whichever path places a unit, or finds it
 * placed, counts the faults waiting for it and wakes their threads
 * (UFFDIO_WAKE on the unit: the placement itself does not wake).
 *
 * Postcopy's destination uses it so: fy_lazy_start() with the pages
 * precopy delivered as present, a request() that queues a page request
 * on the return path, and background_threads = 0; every page that
 * arrives (an answer, or the background push) is checked against its
 * checksum in a staging buffer, then given to fy_lazy_place(). When the
 * link breaks, requests fail or are lost, faulting vCPUs stay blocked and
 * their units stay outstanding (stats.outstanding); after reconnecting,
 * the engine sends fy_lazy_have_bitmap() to the source and calls
 * fy_lazy_rerequest(). If the source is gone for good, stats.missing is
 * what can no longer come.
 *
 * A source error (a slot that failed its checksum) stops the loader: the
 * failing unit is never placed, so any thread touching it stays blocked
 * for as long as the loader exists, and fy_lazy_wait() returns the error
 * with the source's message. The VMM stops its guest; only fy_lazy_free()
 * releases the registration (a blocked thread would then see zeros, so a
 * VMM frees it only when its vCPUs are gone for good).
 *
 * Thread safety: start/wait/finish/stop/free from one thread;
 * fy_lazy_place(), fy_lazy_has(), fy_lazy_have_bitmap(),
 * fy_lazy_rerequest(), fy_lazy_stats() and fy_lazy_cancel() from any
 * thread, concurrently with each other and with the loader's threads,
 * but not with fy_lazy_finish() or fy_lazy_free(): the engine stops the
 * threads that place pages (its receivers) before it calls those.
 * Placement takes no lock (the kernel serialises the page tables, the
 * per-unit bits are atomic); a short mutex guards the list of waiting
 * faults and is never held across a system call or a source callback,
 * and fy_lazy_place()'s copy buffer is only ever try-locked.
 */
#ifndef FY_LAZY_H
#define FY_LAZY_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memory/memory.h"

struct fy_lazy;

/*
 * Where pages come from: exactly one of fetch and request.
 *
 * fetch() fills @buf with @len bytes of region @region starting at
 * @offset (both multiples of the region's unit; @len at most the config's
 * batch) and sets bit i of @zero (ceil(len/4096/64) words, zeroed by the
 * caller) for each 4 KiB page i that is all zero, whose bytes in @buf are
 * then unspecified. It is called concurrently from the fault thread and
 * every background thread. Return 0, or a negative code with a message in
 * @err naming the page (the loader stops).
 *
 * request() asks for the unit of @len bytes at @offset of @region and
 * returns without waiting for it: it must not block for long (queue the
 * request, or a short non-blocking send), since the fault thread serves
 * every other fault only after it returns. The unit comes back through
 * fy_lazy_place(), from any thread. A unit is requested once while
 * faults wait for it, however many; again only by fy_lazy_rerequest(),
 * or when a fault hits it after the VMM dropped it. A negative return
 * (the link is down) is counted in request_errors and leaves the unit
 * outstanding: the loader goes on, the faulting threads stay blocked
 * until fy_lazy_rerequest() asks again. Called from the fault thread and
 * from the thread calling fy_lazy_rerequest(), possibly at once.
 */
struct fy_lazy_source {
	int (*fetch)(void *opaque, uint32_t region, uint64_t offset,
		     uint64_t len, void *buf, uint64_t *zero, char *err,
		     size_t errlen);
	void *opaque;
	int (*request)(void *opaque, uint32_t region, uint64_t offset,
		       uint64_t len);
};

struct fy_lazy_config {
	const struct fy_region *regions; /* host, size; read at start */
	size_t nregions;
	struct fy_lazy_source source;
	/* Threads filling what was not asked for, 0 = none (postcopy pushes
	 * from the outside with fy_lazy_place()); default for a file: 2.
	 * They need a fetching source. */
	unsigned background_threads;
	/* Bytes a background thread fetches at once (a multiple of every
	 * unit; 0 = 2 MiB, or the largest unit if that is larger). */
	uint64_t batch_bytes;
	/*
	 * Pages already in place, NULL = none (a restore from a file):
	 * present[i] is region i's bitmap (NULL = none of it), bit p = its
	 * 4 KiB page p, whatever the backing, read at start only. A unit is
	 * present when all its pages are (a hugetlb unit with one page
	 * missing is missing whole). Present units count as placed and are
	 * never asked for; a present unit that is not in memory reads as
	 * zeros, so zeros are placed there at start. Every other unit is
	 * dropped right after registration (a region the kernel will not
	 * register loses nothing, and a page touched after its drop
	 * faults), whatever it holds (private memory:
	 * MADV_DONTNEED; shared memory, memfd or hugetlb: MADV_REMOVE, i.e. a
	 * punched hole in its file), and start fails if a page stays
	 * populated after that (a private mapping of a file, say).
	 */
	const uint64_t *const *present;
	/* Run the fault thread (it serves vCPUs that wait) as an urgent
	 * thread (fy_thread_urgent()), kept to CPU lane_cpu (-1: any).
	 * Postcopy sets them. */
	bool fault_urgent;
	int lane_cpu;
	/* Keep CPU lane_cpu from halting for this long after a fault is
	 * read and after a unit that a fault waited for is placed (the
	 * lane's keeper, fy_lane_keeper_start()); 0: no keeper. */
	uint32_t poll_us;
};

/*
 * Postcopy's urgent lane: the threads a vCPU waits for (the source's
 * request reader, the destination's fault thread, and its session thread
 * while it reads the lane) stay ordinary fair-class threads with a short
 * time slice and a high weight. On a core that the guest's vCPUs and the
 * push keep busy, the scheduler (EEVDF, Linux 6.6+) lets a woken thread
 * preempt only when its slice is shorter than the running one's
 * (PREEMPT_SHORT, 6.12+): with the default slice a woken lane thread
 * waited for the running one's slice, milliseconds, even at nice -15.
 * A real-time class would preempt at once, but it gives up the wake-up
 * on the waker's core that a socket's synchronous wake-up asks for, and
 * on one host each hop of the lane then crosses cores (docs/design-notes.md,
 * "Postcopy's urgent lane, measured", has the figures).
 */
#define FY_URGENT_NICE (-15)
#define FY_URGENT_SLICE_NS (100 * 1000ull) /* the kernel's minimum */

/* What fy_thread_urgent() changed, for fy_thread_restore(): the thread's
 * own nice value, slice (0: the default) and reset-on-fork flag, and the
 * CPUs it could run on. */
struct fy_prio {
	bool set;
	int nice;
	uint64_t slice_ns;
	uint64_t flags;
	bool pinned;
	cpu_set_t cpus;
};

/*
 * The lane's threads also keep to one CPU, the same one in both
 * processes of a migration on one host: every hop of a page request then
 * wakes a thread on the CPU it runs on. A wake-up on another, idle CPU
 * costs more than the hop's work on a virtual machine (the host has to
 * run that vCPU again: 150-200 us for a loopback round trip with 1 ms
 * pauses between, against 15-25 us on one CPU), and sparse faults pay it
 * twice. fy_lane_cpu() turns ferry_config.lane_cpu into the CPU: for
 * FERRY_LANE_CPU_AUTO the last one the calling thread may run on (both
 * processes of a pair started alike pick the same), -1 for none or when
 * the thread may run on one CPU only (nothing to choose).
 */
int fy_lane_cpu(int32_t setting);

/* Make the calling thread urgent where the system allows it: the short
 * slice (no privilege needed) and nice FY_URGENT_NICE (CAP_SYS_NICE);
 * a kernel without custom slices gets the nice value only. A thread of
 * another class than SCHED_OTHER (a VMM's real-time one) is left alone.
 * With @cpu >= 0 (fy_lane_cpu()), it also keeps to that CPU, if allowed. */
void fy_thread_urgent(struct fy_prio *old, int cpu);
/* Give it back what it had. */
void fy_thread_restore(const struct fy_prio *old);

/*
 * The lane's keeper (lane_keep.c): an idle-class thread kept to @cpu (-1:
 * any) that runs a busy loop for @window_ns after each
 * fy_lane_keeper_note() and sleeps otherwise, so that the CPU does not
 * halt between the events of a page request; it takes only time that no
 * other thread wants. fy_lane_keeper_start() with @window_ns 0 starts
 * nothing (*@out NULL; every call takes NULL). Return: 0, -ENOMEM, -EAGAIN.
 * fy_lane_keeper_note(): an event now (any thread, cheap: a futex wake
 * only when the keeper sleeps). fy_lane_keeper_stop(): end and free it,
 * adding its CPU time and the windows it kept to @cpu_ns and @windows
 * (either may be NULL).
 */
struct fy_lane_keeper;

int fy_lane_keeper_start(struct fy_lane_keeper **out, int cpu,
			 uint64_t window_ns);
void fy_lane_keeper_note(struct fy_lane_keeper *k);
void fy_lane_keeper_stop(struct fy_lane_keeper *k, uint64_t *cpu_ns,
			 uint64_t *windows);

/* The calling thread's CPU time in nanoseconds (0 if unknown). */
uint64_t fy_thread_cpu_ns(void);

/* What the loader did so far, readable from any thread while it runs.
 * Wait times are per fault, from the moment the fault thread read it to
 * the moment its unit was found placed (the thread is woken then), in
 * microseconds; two faults on one unit are two waits. */
struct fy_lazy_stats {
	uint64_t pages;	       /* 4 KiB pages of the regions, in all */
	uint64_t present;      /* of them, present at start */
	uint64_t placed;       /* of them, placed (present, or by any path) */
	uint64_t missing;      /* pages - placed: what a dead source leaves */
	uint64_t faults;       /* faults served (a vCPU waited) */
	uint64_t fault_pages;  /* pages placed while a fault waited for them */
	uint64_t requests;     /* units asked of the source for faults */
	uint64_t request_errors; /* requests the source could not send */
	uint64_t rerequests;   /* units asked for again by fy_lazy_rerequest */
	uint64_t outstanding;  /* units asked for (by faults), not yet placed */
	uint64_t waiting;      /* faults waiting now: blocked threads (a fault
				  repeated after a signal is the same one
				  where the kernel names the thread) */
	uint64_t zero_pages;   /* pages placed as zeros */
	double wait_p50_us, wait_p99_us, wait_max_us;
	double complete_ms;    /* start to the last page placed, or 0 */
	uint64_t fault_cpu_ns; /* the fault thread's CPU time, once it
				  ended (fy_lazy_finish(), fy_lazy_stop());
				  0 while it runs */
	uint64_t keeper_cpu_ns; /* the keeper's, once the loader stopped */
	uint64_t keeper_windows; /* times the keeper woke to keep its CPU */
	int error;	       /* the error that stopped it, or 0 */
	char errmsg[256];
};

/*
 * fy_lazy_start() - register @cfg's regions with a new userfaultfd in
 * missing mode and start the fault thread and background threads. The
 * unit of each region is its mapping's page size (read from
 * /proc/self/smaps: 2 MiB on hugetlb, else 4 KiB).
 *
 * Return: 0 and *@out; -ENOSYS/-EPERM/-EINVAL when userfaultfd or a
 * feature the backing needs is missing (shmem, hugetlb), -EINVAL also for
 * a region not aligned to its pages or with a page already populated
 * that is not marked present (it would never be fetched), an error of
 * dropping the missing pages, -ENOMEM; @err says which.
 */
int fy_lazy_start(struct fy_lazy **out, const struct fy_lazy_config *cfg,
		  char *err, size_t errlen);

/*
 * fy_lazy_place() - place pages that arrived from elsewhere (the answer
 * to a request, or postcopy's background stream): @len bytes at @offset
 * of @region, @zero as in fetch(). Units already placed are skipped
 * (unless a fault waits for a unit the VMM dropped: it is placed again);
 * the faults waiting for units of the range are counted and woken. A
 * @buf that is not page aligned (UFFDIO_COPY needs it) costs a copy.
 *
 * The bytes are taken as they are: checking them (postcopy's engine
 * verifies each page's checksum in a staging buffer) is the caller's job,
 * before this call. A unit is placed whole or not at all, never torn,
 * and never twice: when another path (a background thread, a second
 * answer to one request, a concurrent call) placed it first, the kernel
 * answers EEXIST, which counts as done, and the faults waiting for it
 * are woken all the same. After an error, the units before the failing
 * one are placed. Any thread, concurrently.
 * Return: 0, or a negative code (the loader has stopped, or a range that
 * is not unit-aligned or outside the region: -EINVAL).
 */
int fy_lazy_place(struct fy_lazy *l, uint32_t region, uint64_t offset,
		  uint64_t len, const void *buf, const uint64_t *zero);

/* Bytes placed at once in @region (its mapping's page size: 4 KiB, or
 * 2 MiB on hugetlb), 0 for a region it does not have. Any thread. */
uint64_t fy_lazy_unit(struct fy_lazy *l, uint32_t region);

/* The unit a loader would use for @r (its mapping's page size), before
 * one starts: 0 and *@unit, or -EINVAL (not mapped) with @err. */
int fy_lazy_unit_of(const struct fy_region *r, uint64_t *unit, char *err,
		    size_t errlen);

/* Whether the unit holding byte @offset of @region is placed. */
bool fy_lazy_has(struct fy_lazy *l, uint32_t region, uint64_t offset);

/*
 * fy_lazy_have_bitmap() - which pages are in place: bit p of @bits
 * ((@pages + 63) / 64 words) = 4 KiB page p of @region, set when its
 * unit was present at start or placed since. @pages must be the region's
 * size in 4 KiB pages. A page placed while this runs may be missing from
 * it, never the reverse, so a source that skips the pages set here skips
 * only pages the destination has: what postcopy's destination sends at
 * recovery. Any thread.
 * Return: 0, or -EINVAL.
 */
int fy_lazy_have_bitmap(struct fy_lazy *l, uint32_t region, uint64_t *bits,
			size_t pages);

/*
 * fy_lazy_rerequest() - with an asynchronous source, ask again for every
 * unit that faults wait for (postcopy recovery: requests sent before the
 * link broke, or refused while it was down, may never be answered). The
 * loader keeps no timer: while the link is down it goes on recording
 * faults and asking (the source may refuse, the units stay outstanding),
 * the faulting threads stay blocked, nothing is lost; once the link is
 * back the engine calls this, then sends the have-bitmap. A unit answered
 * twice is placed once. Any thread (request() may then run on two threads
 * at once).
 * Return: the number of units asked for again, -EINVAL (a fetching
 * source), -ENOMEM, or the error that stopped the loader.
 */
int fy_lazy_rerequest(struct fy_lazy *l);

/*
 * fy_lazy_wait() - wait until every page is placed, the loader stopped
 * on an error, or @timeout_ms passed (-1: no limit).
 * Return: 0 (complete), -ETIMEDOUT, or the error that stopped it.
 */
int fy_lazy_wait(struct fy_lazy *l, int timeout_ms);

/* Stop serving faults and filling (threads exit); the registration
 * stays, so touched missing pages keep their threads blocked. Before
 * completion this stops the loader with -ECANCELED (what wait returns).
 * Any thread. */
void fy_lazy_cancel(struct fy_lazy *l);

/* fy_lazy_cancel(), then wait until no thread of the loader runs, so the
 * page source may go away while the registration stays. From the thread
 * that started it. */
void fy_lazy_stop(struct fy_lazy *l);

void fy_lazy_stats(struct fy_lazy *l, struct fy_lazy_stats *out);

/*
 * fy_lazy_finish() - after a complete load: stop the threads, unregister
 * the regions and close the userfaultfd; the memory is then plain memory.
 * Return: 0, or -EBUSY when not every page is placed, or a fault still
 * waits a second later (a page dropped after its placement and asked for
 * again); nothing changes then.
 */
int fy_lazy_finish(struct fy_lazy *l);

/* Stop the threads and release everything (see the header comment). NULL
 * is harmless. */
void fy_lazy_free(struct fy_lazy *l);

#endif /* FY_LAZY_H */
