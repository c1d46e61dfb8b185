// SPDX-License-Identifier: MIT
/*
 * snapfile.c - writing a snapshot file in the mapped layout while the
 * guest runs (src/wire/snapfile.h has the layout).
 *
 * Every guest page has a slot at a fixed offset, so a pass writes the
 * pages it was given straight into their slots, and a later pass
 * overwrites what the guest wrote since. Several threads take chunks of
 * the pass's ranges from one cursor; each finds the zero pages of its
 * chunk (a hole: nothing is written, and a slot that held data before is
 * punched), hashes every page into the page table, and writes each run of
 * data pages with one large aligned write, from guest memory, with direct
 * I/O where the file system allows it (no copy through the page cache).
 *
 * A page's hash and its bytes in the slot are read at slightly different
 * moments while the guest runs; a page written between the two is dirty,
 * so a later pass (the final one runs with the guest paused) writes and
 * hashes it again. The table therefore matches the slots once the final
 * pass is done, the same argument that lets live stream passes checksum
 * their framing only.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "migrate/snapfile.h"
#include "transport/transport.h"

struct fy_snapw {
	ferry_session *s;
	int dfd;	  /* O_DIRECT, or -1 where the file system refuses it */
	int bfd;	  /* buffered: the tail, the superblock, fallbacks */
	char path[4096];
	char tmp[4200];	  /* PATH.partial until renamed, then "" */
	struct fy_snap_sb sb;
	struct fy_snap_sb check;	    /* sb as a reader decodes it */
	uint64_t base[FY_SNAP_MAX_REGIONS]; /* first global page of each */
	uint64_t *table;		    /* mapped, table bytes */
	_Atomic uint64_t *map;		    /* mapped, map bytes */
	size_t table_len, map_len;
	unsigned nthreads;
	/* The pass being written. */
	pthread_mutex_t lock;
	pthread_cond_t done_cond;
	unsigned running;
	const struct fy_ranges *ranges;
	struct fy_chunk_cursor cur;
	int err;
	char errmsg[320];
};

static void *map_zeroed(size_t len)
{
	void *p = mmap(NULL, len ? len : 1, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* Set the file's layout from the session's regions. */
static int layout(struct fy_snapw *w)
{
	ferry_session *s = w->s;
	uint64_t g = 0;

	if (s->nregions > FY_SNAP_MAX_REGIONS)
		return fy_session_fail(s, -EINVAL,
				       "a snapshot file holds at most %u memory regions; this guest has %zu",
				       FY_SNAP_MAX_REGIONS, s->nregions);
	w->sb.version = FY_SNAP_VERSION;
	w->sb.page_size = FY_PAGE_SIZE;
	w->sb.nregions = (uint32_t)s->nregions;
	for (size_t i = 0; i < s->nregions; i++) {
		w->sb.regions[i].gpa = s->regions[i].gpa;
		w->sb.regions[i].size = s->regions[i].size;
		/* A file names every region (its reader refuses an empty
		 * name); the session allows one. */
		if (s->regions[i].name[0])
			snprintf(w->sb.regions[i].name,
				 sizeof(w->sb.regions[i].name), "%s",
				 s->regions[i].name);
		else
			snprintf(w->sb.regions[i].name,
				 sizeof(w->sb.regions[i].name), "region%zu", i);
		w->base[i] = g;
		g += s->regions[i].size / FY_PAGE_SIZE;
	}
	if (fy_snap_layout(&w->sb, 1))
		return fy_session_fail(s, -EINVAL,
				       "the guest's memory regions do not fit a snapshot file");
	snprintf(w->sb.software, sizeof(w->sb.software), "ferry %s",
		 FERRY_VERSION_STRING);
	return 0;
}

/**
 * fy_snapw_open() - see snapfile.h.
 */
int fy_snapw_open(ferry_session *s, const char *path, struct fy_snapw **out)
{
	struct fy_snapw *w = calloc(1, sizeof(*w));
	int rc;

	*out = NULL;
	if (!w)
		return fy_session_fail(s, -ENOMEM, "out of memory");
	w->s = s;
	w->dfd = w->bfd = -1;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->done_cond, NULL);
	*out = w;
	w->nthreads = s->cfg.io_threads ? s->cfg.io_threads : FY_SNAP_THREADS;
	snprintf(w->path, sizeof(w->path), "%s", path);
	rc = layout(w);
	if (rc)
		return rc;
	w->table_len = fy_snap_table_bytes(w->sb.pages);
	w->map_len = fy_snap_map_bytes(w->sb.pages);
	w->table = map_zeroed(w->table_len);
	w->map = map_zeroed(w->map_len);
	if (!w->table || !w->map)
		return fy_session_fail(s, -ENOMEM,
				       "out of memory for the page table of %llu pages",
				       (unsigned long long)w->sb.pages);
	snprintf(w->tmp, sizeof(w->tmp), "%s.partial", path);
	w->bfd = open(w->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (w->bfd < 0) {
		rc = -errno;
		w->tmp[0] = 0;
		return fy_session_fail(s, rc, "cannot create %s: %s", path,
				       ferry_strerror(rc));
	}
	/* Sparse: slots nobody writes (zero pages) take no space. */
	if (ftruncate(w->bfd, (off_t)w->sb.state_offset)) {
		rc = -errno;
		return fy_session_fail(s, rc, "cannot size %s: %s", w->tmp,
				       ferry_strerror(rc));
	}
	w->dfd = open(w->tmp, O_RDWR | O_DIRECT | O_CLOEXEC);
	fy_session_log(s, 2, "snapshot %s: %llu pages, %u I/O threads, %s I/O",
		       path, (unsigned long long)w->sb.pages, w->nthreads,
		       w->dfd >= 0 ? "direct" : "buffered");
	return 0;
}

/*
 * Runs shorter than this go through the page cache: a direct write is a
 * synchronous trip to the device (about 40 us for 4 KiB here), a cached
 * one a copy (a few us), and the scattered pages of late passes, the
 * final one inside the pause, are mostly single pages. fdatasync() at the
 * end writes them out: after the guest runs again for a checkpoint, inside
 * the pause that then never ends for a handover.
 */
#define FY_SNAP_DIRECT_MIN (256u << 10)

/* Write @len bytes at @off, from guest memory: large runs direct. */
static int write_at(struct fy_snapw *w, const void *buf, size_t len,
		    uint64_t off)
{
	int rc;

	if (w->dfd < 0 || len < FY_SNAP_DIRECT_MIN)
		return fy_pwrite_full(w->bfd, buf, len, off);
	rc = fy_pwrite_full(w->dfd, buf, len, off);
	/* An alignment the device does not take: the same bytes, cached. */
	return rc == -EINVAL ? fy_pwrite_full(w->bfd, buf, len, off) : rc;
}

static void fail_pass(struct fy_snapw *w, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The first failure of a pass wins; the other threads stop. */
static void fail_pass(struct fy_snapw *w, int rc, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&w->lock);
	if (!w->err) {
		w->err = rc;
		va_start(ap, fmt);
		vsnprintf(w->errmsg, sizeof(w->errmsg), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&w->lock);
}

/* Pages that held data and are zero now: their slots become a hole.
 * Space only: the cleared map bits are what make them zero pages. */
static void drop_slots(struct fy_snapw *w, uint64_t off, uint64_t pages)
{
	if (pages)
		(void)fallocate(w->bfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)off, (off_t)(pages * FY_PAGE_SIZE));
}

/* Write pages [run, run + n) of range @r, whose host bytes start at @base. */
static int write_run(struct fy_snapw *w, const struct fy_range *r,
		     const uint8_t *base, uint64_t run, uint64_t n)
{
	uint64_t off = w->sb.regions[r->region].slot_offset + r->offset +
		       run * FY_PAGE_SIZE;
	int rc = 0;

	/* The guest may be writing these pages (FY_GUEST_READS_BEGIN). */
	FY_GUEST_READS_BEGIN();
	if (n)
		rc = write_at(w, base + run * FY_PAGE_SIZE, n * FY_PAGE_SIZE, off);
	FY_GUEST_READS_END();

	if (rc)
		fail_pass(w, rc, "writing %llu pages of %s at file offset %llu: %s",
			  (unsigned long long)n, w->s->regions[r->region].name,
			  (unsigned long long)off, ferry_strerror(rc));
	return rc;
}

/* Write one chunk: hashes, map bits, runs of data pages with one write
 * each, runs of pages that turned zero with one punch each. */
static int write_range(struct fy_snapw *w, const struct fy_range *r)
{
	const uint8_t *base = w->s->regions[r->region].host + r->offset;
	uint64_t npages = r->length / FY_PAGE_SIZE;
	uint64_t g0 = w->base[r->region] + r->offset / FY_PAGE_SIZE;
	uint64_t file0 = w->sb.regions[r->region].slot_offset + r->offset;
	uint64_t run = 0, runlen = 0, hole = 0, holelen = 0;
	int rc;

	for (uint64_t p = 0; p < npages; p++) {
		const uint8_t *pg = base + p * FY_PAGE_SIZE;
		uint64_t g = g0 + p, bit = 1ull << (g % 64);
		bool zero;

		FY_GUEST_READS_BEGIN();
		w->table[g] = fy_snap_page_hash(pg, g);
		zero = fy_page_is_zero(pg);
		FY_GUEST_READS_END();
		if (!zero) {
			if (!runlen)
				run = p;
			runlen++;
			atomic_fetch_or_explicit(&w->map[g / 64], bit,
						 memory_order_relaxed);
			continue;
		}
		rc = write_run(w, r, base, run, runlen);
		if (rc)
			return rc;
		runlen = 0;
		if (!(atomic_fetch_and_explicit(&w->map[g / 64], ~bit,
						memory_order_relaxed) & bit))
			continue;
		if (holelen && hole + holelen != p) {
			drop_slots(w, file0 + hole * FY_PAGE_SIZE, holelen);
			holelen = 0;
		}
		if (!holelen)
			hole = p;
		holelen++;
	}
	drop_slots(w, file0 + hole * FY_PAGE_SIZE, holelen);
	return write_run(w, r, base, run, runlen);
}

static void *pass_worker(void *arg)
{
	struct fy_snapw *w = arg;
	struct fy_range r;

	for (;;) {
		bool more;

		pthread_mutex_lock(&w->lock);
		more = !w->err && fy_ranges_next_chunk(w->ranges, &w->cur,
						       FY_SNAP_CHUNK, &r);
		pthread_mutex_unlock(&w->lock);
		if (!more)
			break;
		if (fy_cancelled(w->s)) {
			fail_pass(w, FERRY_ECANCELED,
				  "cancelled during a memory pass");
			break;
		}
		if (write_range(w, &r))
			break;
		fy_session_count_bytes(w->s, r.length);
	}
	pthread_mutex_lock(&w->lock);
	w->running--;
	pthread_cond_signal(&w->done_cond);
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/**
 * fy_snapw_pass() - see snapfile.h.
 */
int fy_snapw_pass(struct fy_snapw *w, const struct fy_ranges *ranges,
		  double *secs)
{
	pthread_t t[FY_MAX_CHANNELS];
	unsigned n = 0;
	uint64_t t0 = fy_now_ns();
	int rc;

	w->ranges = ranges;
	memset(&w->cur, 0, sizeof(w->cur));
	w->err = 0;
	w->errmsg[0] = 0;
	pthread_mutex_lock(&w->lock);
	for (; n < w->nthreads; n++) {
		w->running++;
		if (pthread_create(&t[n], NULL, pass_worker, w)) {
			w->running--;
			break;
		}
	}
	/* Progress while the threads write; they stop on a cancel. */
	while (w->running) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&w->done_cond, &w->lock, &ts);
		pthread_mutex_unlock(&w->lock);
		fy_session_progress(w->s);
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	for (unsigned i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	*secs = (double)(fy_now_ns() - t0) / 1e9;
	if (!n)
		return fy_session_fail(w->s, -EAGAIN,
				       "cannot start the file's I/O threads");
	w->sb.passes++;
	rc = w->err;
	if (rc)
		return fy_session_fail(w->s, rc, "%s", w->errmsg);
	return 0;
}

/* Count the map's bits per region and in all. */
static void count_data(struct fy_snapw *w)
{
	const uint64_t *map = (const uint64_t *)w->map;

	w->sb.data_pages = 0;
	for (uint32_t i = 0; i < w->sb.nregions; i++) {
		uint64_t first = w->base[i];
		uint64_t end = first + w->sb.regions[i].size / FY_PAGE_SIZE;
		uint64_t n = 0;

		for (uint64_t g = first; g < end;) {
			if (g % 64 == 0 && g + 64 <= end) {
				n += (uint64_t)__builtin_popcountll(map[g / 64]);
				g += 64;
			} else {
				n += (map[g / 64] >> (g % 64)) & 1;
				g++;
			}
		}
		w->sb.regions[i].data_pages = n;
		w->sb.data_pages += n;
	}
}

/* The directory entry of the rename must reach the disk too. */
static int sync_dir(const char *path)
{
	char copy[4096];
	int fd, rc = 0;

	snprintf(copy, sizeof(copy), "%s", path);
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd))
		rc = -errno;
	close(fd);
	return rc;
}

/**
 * fy_snapw_finish() - see snapfile.h.
 */
int fy_snapw_finish(struct fy_snapw *w, const void *state, size_t len)
{
	uint8_t sb[FY_SNAP_SB_SIZE];
	char why[256];
	struct timespec now;
	int rc;

	if (len == 0 || len > FY_REC_MAX_BODY)
		return fy_session_fail(w->s, -EMSGSIZE,
				       "device state of %zu bytes: a snapshot holds 1 to %u",
				       len, FY_REC_MAX_BODY);
	if (fy_snap_layout(&w->sb, len))
		return fy_session_fail(w->s, -EINVAL, "snapshot layout");
	count_data(w);
	w->sb.table_hash = XXH3_64bits(w->table, w->table_len);
	w->sb.map_hash = XXH3_64bits((const void *)w->map, w->map_len);
	w->sb.state_hash = XXH3_64bits(state, len);
	clock_gettime(CLOCK_REALTIME, &now);
	w->sb.created_ns = (uint64_t)now.tv_sec * 1000000000ull +
			   (uint64_t)now.tv_nsec;
	rc = fy_pwrite_full(w->bfd, w->table, w->table_len,
			    w->sb.table_offset);
	if (!rc)
		rc = fy_pwrite_full(w->bfd, (const void *)w->map, w->map_len,
				    w->sb.map_offset);
	if (!rc)
		rc = fy_pwrite_full(w->bfd, state, len, w->sb.state_offset);
	/* Everything else is on disk before the superblock that makes the
	 * file valid, and the superblock before the name. */
	if (!rc && fdatasync(w->bfd))
		rc = -errno;
	fy_snap_sb_encode(sb, &w->sb);
	/* What a reader will check, checked before the file can exist: a
	 * writer bug fails the snapshot while the guest can still resume. */
	if (!rc && fy_snap_sb_decode(sb, sizeof(sb), fy_snap_file_size(&w->sb),
				     &w->check, why, sizeof(why)))
		return fy_session_fail(w->s, -EINVAL,
				       "internal: the snapshot's superblock does not check: %s",
				       why);
	if (!rc)
		rc = fy_pwrite_full(w->bfd, sb, sizeof(sb), 0);
	if (!rc && fdatasync(w->bfd))
		rc = -errno;
	if (!rc && rename(w->tmp, w->path))
		rc = -errno;
	if (rc)
		return fy_session_fail(w->s, rc, "writing %s: %s", w->path,
				       ferry_strerror(rc));
	w->tmp[0] = 0;
	rc = sync_dir(w->path);
	if (rc)
		fy_session_log(w->s, 0,
			       "%s is complete, but syncing its directory failed (%s): a crash now may lose its name",
			       w->path, ferry_strerror(rc));
	return 0;
}

uint64_t fy_snapw_size(const struct fy_snapw *w)
{
	return w ? fy_snap_file_size(&w->sb) : 0;
}

uint64_t fy_snapw_digest(const struct fy_snapw *w)
{
	return w ? w->sb.table_hash : 0;
}

/**
 * fy_snapw_free() - see snapfile.h.
 */
void fy_snapw_free(struct fy_snapw *w)
{
	if (!w)
		return;
	if (w->dfd >= 0)
		close(w->dfd);
	if (w->bfd >= 0)
		close(w->bfd);
	if (w->tmp[0])
		unlink(w->tmp); /* an incomplete snapshot is no snapshot */
	if (w->table)
		munmap(w->table, w->table_len ? w->table_len : 1);
	if (w->map)
		munmap((void *)w->map, w->map_len ? w->map_len : 1);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->done_cond);
	free(w);
}
