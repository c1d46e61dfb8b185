// SPDX-License-Identifier: MIT
/*
 * restore.c - the destination of a snapshot file in the mapped layout
 * (src/wire/snapfile.h). The superblock, the page table, the data map and
 * the state are read and checked first; then memory comes in one of two
 * ways:
 *
 * - eager: threads read the data pages of each chunk straight into guest
 *   memory with large reads and check every page against its hash before
 *   the guest runs;
 * - lazy (ferry_config.lazy): the guest runs as soon as its state is
 *   loaded; its memory is registered with userfaultfd (src/memory/lazy.c)
 *   and every page, touched or read by the background, is fetched from its
 *   slot, checked, and placed atomically. A page that fails its check is
 *   never placed: the guest is paused and the run fails naming the page.
 *
 * Either way nothing of the file is trusted before its checksum passed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "memory/lazy.h"
#include "migrate/snapfile.h"
#include "proto/proto.h"
#include "transport/transport.h"

struct restorer {
	ferry_session *s;
	const char *path;
	int dfd, bfd;
	struct fy_snap_sb sb;
	uint64_t base[FY_SNAP_MAX_REGIONS];
	uint64_t *table;
	uint64_t *map;
	size_t table_len, map_len;
	uint8_t *state;
	/* eager reading */
	pthread_mutex_t lock;
	uint32_t next_region;
	uint64_t next_off;
	int err;
	char errmsg[320];
};

/* @len bytes at @off: -ENODATA when the file ends first. */
static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
	size_t got;
	int rc = fy_pread_full(fd, buf, len, off, &got);

	return rc ? rc : got < len ? -ENODATA : 0;
}

static bool map_bit(const uint64_t *map, uint64_t g)
{
	return (map[g / 64] >> (g % 64)) & 1;
}

/* The file's regions must be this guest's, as CONFIG's must. */
static int check_regions(struct restorer *x)
{
	ferry_session *s = x->s;
	uint64_t g = 0;

	if (x->sb.nregions != s->nregions)
		return fy_session_fail(s, FERRY_EMISMATCH,
				       "%s holds %u memory regions, this guest has %zu",
				       x->path, x->sb.nregions, s->nregions);
	for (uint32_t i = 0; i < x->sb.nregions; i++) {
		const struct fy_snap_region *f = &x->sb.regions[i];
		const struct fy_region *r = &s->regions[i];

		if (f->gpa != r->gpa || f->size != r->size)
			return fy_session_fail(s, FERRY_EMISMATCH,
					       "region %u (%s): the file has %llu bytes at 0x%llx, this guest %llu bytes at 0x%llx",
					       i, r->name,
					       (unsigned long long)f->size,
					       (unsigned long long)f->gpa,
					       (unsigned long long)r->size,
					       (unsigned long long)r->gpa);
		x->base[i] = g;
		g += f->size / FY_PAGE_SIZE;
	}
	return 0;
}

static int read_slots(struct restorer *x, uint8_t *dst, size_t len,
		      uint64_t off);

/*
 * A large part of the file read by several threads with direct I/O: the
 * page table of an 8 GiB guest is 16 MiB, and one buffered read of it from
 * a cold cache took 60-115 ms of a lazy restore's start (the kernel's
 * readahead fetches 128 KiB at a time); read this way, with huge pages
 * under it, 5-17 ms.
 */
struct part_read {
	struct restorer *x;
	uint8_t *buf;
	uint64_t off, len, next, piece;
	pthread_mutex_t lock;
	int err;
};

#define PART_MIN (32u << 10)
#define PART_MAX (1u << 20)
#define PART_THREADS 8

static void *part_worker(void *arg)
{
	struct part_read *pr = arg;

	for (;;) {
		uint64_t at, n;
		int rc;

		pthread_mutex_lock(&pr->lock);
		at = pr->next;
		n = pr->len - at < pr->piece ? pr->len - at : pr->piece;
		pr->next += n;
		rc = pr->err;
		pthread_mutex_unlock(&pr->lock);
		if (!n || rc)
			return NULL;
		rc = read_slots(pr->x, pr->buf + at, n, pr->off + at);
		if (rc) {
			pthread_mutex_lock(&pr->lock);
			if (!pr->err)
				pr->err = rc;
			pthread_mutex_unlock(&pr->lock);
		}
	}
}

/*
 * @len bytes at @off into @buf: in pieces of an eighth (32 KiB to 1 MiB)
 * read by up to 8 threads, when the part has two pieces or more and the
 * file takes direct I/O.
 */
static int read_big(struct restorer *x, void *buf, uint64_t len, uint64_t off)
{
	struct part_read pr = { .x = x, .buf = buf, .off = off, .len = len };
	pthread_t t[PART_THREADS - 1];
	unsigned n = 0;

	if (len < 2 * PART_MIN || x->dfd < 0 || off % FY_PAGE_SIZE)
		return read_at(x->bfd, buf, len, off);
	pr.piece = (len / PART_THREADS + FY_PAGE_SIZE - 1) / FY_PAGE_SIZE *
		   FY_PAGE_SIZE;
	pr.piece = pr.piece < PART_MIN ? PART_MIN
		 : pr.piece > PART_MAX ? PART_MAX : pr.piece;
	pthread_mutex_init(&pr.lock, NULL);
	for (; n < PART_THREADS - 1 && (n + 1) * pr.piece < len; n++)
		if (pthread_create(&t[n], NULL, part_worker, &pr))
			break;
	part_worker(&pr);
	for (unsigned i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	pthread_mutex_destroy(&pr.lock);
	return pr.err;
}

/* Read @len bytes at @off into a fresh mapping and check its hash. */
static int read_part(struct restorer *x, const char *what, uint64_t off,
		     size_t len, uint64_t hash, void **out)
{
	void *p = mmap(NULL, len ? len : 1, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int rc;

	*out = NULL;
	if (p == MAP_FAILED)
		return fy_session_fail(x->s, -ENOMEM, "out of memory for the %s",
				       what);
	*out = p;
	/* Fresh memory costs a fault a page (on a guest like this machine,
	 * a host fault too): huge pages take 512 times fewer. */
	if (len >= (2u << 20))
		madvise(p, len, MADV_HUGEPAGE);
	rc = read_big(x, p, len, off);
	if (rc)
		return fy_session_fail(x->s, rc == -ENODATA ? -EBADMSG : rc,
				       "%s: reading the %s (%zu bytes at offset %llu): %s",
				       x->path, what, len,
				       (unsigned long long)off,
				       rc == -ENODATA ? "the file ends first"
						      : ferry_strerror(rc));
	if (XXH3_64bits(p, len) != hash)
		return fy_session_fail(x->s, FERRY_ECHECKSUM,
				       "%s: the %s (offset %llu) does not match its checksum",
				       x->path, what, (unsigned long long)off);
	return 0;
}

/* Superblock, regions, table, map and state: everything but the pages. */
static int open_file(struct restorer *x)
{
	uint8_t sb[FY_SNAP_SB_SIZE];
	char why[256];
	struct stat st;
	int rc;

	x->bfd = open(x->path, O_RDONLY | O_CLOEXEC);
	if (x->bfd < 0 || fstat(x->bfd, &st)) {
		rc = -errno;
		return fy_session_fail(x->s, rc, "cannot open %s: %s", x->path,
				       ferry_strerror(rc));
	}
	x->dfd = open(x->path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	rc = read_at(x->bfd, sb, sizeof(sb), 0);
	if (rc == -ENODATA)
		return fy_session_fail(x->s, -EBADMSG,
				       "%s: %lld bytes, shorter than a snapshot's superblock",
				       x->path, (long long)st.st_size);
	if (rc)
		return fy_session_fail(x->s, rc, "reading %s: %s", x->path,
				       ferry_strerror(rc));
	rc = fy_snap_sb_decode(sb, sizeof(sb), (uint64_t)st.st_size, &x->sb,
			       why, sizeof(why));
	if (rc)
		return fy_session_fail(x->s, rc, "%s: %s", x->path, why);
	rc = check_regions(x);
	if (!rc)
		rc = read_part(x, "page table", x->sb.table_offset,
			       fy_snap_table_bytes(x->sb.pages),
			       x->sb.table_hash, (void **)&x->table);
	x->table_len = fy_snap_table_bytes(x->sb.pages);
	if (!rc)
		rc = read_part(x, "data map", x->sb.map_offset,
			       fy_snap_map_bytes(x->sb.pages), x->sb.map_hash,
			       (void **)&x->map);
	x->map_len = fy_snap_map_bytes(x->sb.pages);
	if (!rc)
		rc = read_part(x, "device state", x->sb.state_offset,
			       x->sb.state_bytes, x->sb.state_hash,
			       (void **)&x->state);
	pthread_mutex_lock(&x->s->lock);
	x->s->stats.image_digest = x->sb.table_hash;
	x->s->stats.wire_bytes = (uint64_t)st.st_size;
	pthread_mutex_unlock(&x->s->lock);
	return rc;
}

/* Check pages [p, p + n) of region @ri, just read into @buf. */
static int check_pages(struct restorer *x, uint32_t ri, uint64_t p, uint64_t n,
		       const uint8_t *buf, char *err, size_t errlen)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t g = x->base[ri] + p + i;

		if (fy_snap_page_hash(buf + i * FY_PAGE_SIZE, g) != x->table[g]) {
			snprintf(err, errlen,
				 "page %llu of region %s (gpa 0x%llx, file offset %llu): the slot does not match its checksum",
				 (unsigned long long)(p + i),
				 x->s->regions[ri].name,
				 (unsigned long long)(x->sb.regions[ri].gpa +
						      (p + i) * FY_PAGE_SIZE),
				 (unsigned long long)(x->sb.regions[ri].slot_offset +
						      (p + i) * FY_PAGE_SIZE));
			return FERRY_ECHECKSUM;
		}
	}
	return 0;
}

/* Read a run of data slots into @dst: direct where it takes it. */
static int read_slots(struct restorer *x, uint8_t *dst, size_t len,
		      uint64_t off)
{
	if (x->dfd >= 0) {
		int rc = read_at(x->dfd, dst, len, off);

		if (rc != -EINVAL)
			return rc;
	}
	return read_at(x->bfd, dst, len, off);
}

static void eager_fail(struct restorer *x, int rc, const char *msg)
{
	pthread_mutex_lock(&x->lock);
	if (!x->err) {
		x->err = rc;
		snprintf(x->errmsg, sizeof(x->errmsg), "%s", msg);
	}
	pthread_mutex_unlock(&x->lock);
}

/* One chunk of a region: data runs read and checked, zero pages zeroed. */
static int eager_chunk(struct restorer *x, uint32_t ri, uint64_t off,
		       uint64_t len)
{
	const struct fy_region *r = &x->s->regions[ri];
	uint64_t p0 = off / FY_PAGE_SIZE, np = len / FY_PAGE_SIZE;
	uint64_t slot = x->sb.regions[ri].slot_offset;
	char msg[320];
	int rc;

	for (uint64_t p = p0; p < p0 + np;) {
		uint64_t q = p;
		bool data = map_bit(x->map, x->base[ri] + p);

		while (q < p0 + np && map_bit(x->map, x->base[ri] + q) == data)
			q++;
		if (!data) {
			for (uint64_t i = p; i < q; i++) {
				uint8_t *pg = r->host + i * FY_PAGE_SIZE;

				if (!fy_page_is_zero(pg))
					memset(pg, 0, FY_PAGE_SIZE);
			}
			p = q;
			continue;
		}
		rc = read_slots(x, r->host + p * FY_PAGE_SIZE,
				(q - p) * FY_PAGE_SIZE, slot + p * FY_PAGE_SIZE);
		if (rc) {
			snprintf(msg, sizeof(msg),
				 "%s: reading pages %llu-%llu of region %s at offset %llu: %s",
				 x->path, (unsigned long long)p,
				 (unsigned long long)(q - 1), r->name,
				 (unsigned long long)(slot + p * FY_PAGE_SIZE),
				 rc == -ENODATA ? "the file ends first"
						: ferry_strerror(rc));
			eager_fail(x, rc == -ENODATA ? -EBADMSG : rc, msg);
			return rc;
		}
		rc = check_pages(x, ri, p, q - p, r->host + p * FY_PAGE_SIZE,
				 msg, sizeof(msg));
		if (rc) {
			eager_fail(x, rc, msg);
			return rc;
		}
		p = q;
	}
	fy_session_count_bytes(x->s, len);
	return 0;
}

static void *eager_worker(void *arg)
{
	struct restorer *x = arg;

	for (;;) {
		uint32_t ri;
		uint64_t off, len;

		pthread_mutex_lock(&x->lock);
		while (x->next_region < x->sb.nregions &&
		       x->next_off >= x->sb.regions[x->next_region].size) {
			x->next_region++;
			x->next_off = 0;
		}
		if (x->err || x->next_region >= x->sb.nregions) {
			pthread_mutex_unlock(&x->lock);
			return NULL;
		}
		ri = x->next_region;
		off = x->next_off;
		len = x->sb.regions[ri].size - off;
		if (len > FY_SNAP_CHUNK)
			len = FY_SNAP_CHUNK;
		x->next_off += len;
		pthread_mutex_unlock(&x->lock);
		if (fy_cancelled(x->s)) {
			eager_fail(x, FERRY_ECANCELED, "cancelled while reading memory");
			return NULL;
		}
		if (eager_chunk(x, ri, off, len))
			return NULL;
	}
}

/* Every page into guest memory, checked, with the configured threads. */
static int read_memory(struct restorer *x)
{
	ferry_session *s = x->s;
	unsigned want = s->cfg.io_threads ? s->cfg.io_threads : FY_SNAP_THREADS;
	pthread_t t[FY_MAX_CHANNELS];
	unsigned n = 0;
	uint64_t t0 = fy_now_ns();
	double secs;

	pthread_mutex_lock(&s->lock);
	s->stats.pass = 1;
	s->stats.pass_total = s->ram_bytes;
	pthread_mutex_unlock(&s->lock);
	for (; n < want; n++)
		if (pthread_create(&t[n], NULL, eager_worker, x))
			break;
	if (!n)
		eager_worker(x);
	/* Progress while they read: the last worker ends the wait. */
	for (;;) {
		bool done;

		pthread_mutex_lock(&x->lock);
		done = x->err || x->next_region >= x->sb.nregions;
		pthread_mutex_unlock(&x->lock);
		if (done)
			break;
		fy_session_progress(s);
		usleep(2000); /* short: the restore ends at the next look */
	}
	for (unsigned i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	if (x->err)
		return fy_session_fail(s, x->err, "%s", x->errmsg);
	secs = (double)(fy_now_ns() - t0) / 1e9;
	pthread_mutex_lock(&s->lock);
	s->stats.mb_per_s = secs > 0 ? (double)s->ram_bytes / secs / 1e6 : 0;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* Load the state the file carries into the VMM. */
static int load_state(struct restorer *x)
{
	ferry_session *s = x->s;
	int rc = s->ops.load_state(s->cfg.opaque, x->state, x->sb.state_bytes);

	if (rc)
		return fy_session_vmm_fail(s, rc, "load_state");
	pthread_mutex_lock(&s->lock);
	s->stats.bytes += x->sb.state_bytes;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* Take over external resources and run the guest. */
static int run_guest(struct restorer *x)
{
	ferry_session *s = x->s;
	int rc = s->ops.acquire ? s->ops.acquire(s->cfg.opaque) : 0;

	if (rc)
		return fy_session_fail(s, FERRY_EVMM, "acquire failed: %s",
				       ferry_strerror(rc));
	rc = s->ops.resume(s->cfg.opaque);
	if (rc)
		return fy_session_fail(s, FERRY_EVMM, "resume failed: %s",
				       ferry_strerror(rc));
	return 0;
}

static int restore_lazy(struct restorer *x);

/*
 * The owner of a restore, by proto's rule for a destination in the
 * receiver state the restore is like: none until the file proves to be a
 * snapshot; then the file, this restore's source, until the guest runs
 * here (a failure leaves it there: the guest never ran here, and the file
 * restores again); this side once it runs, lazily too, and also when a
 * damaged page stopped it after it ran.
 */
static void restore_owner(ferry_session *s, enum fy_recv_state like)
{
	fy_session_set_owner(s, (enum ferry_owner)fy_recv_owner(like));
}

/**
 * fy_snap_restore() - see snapfile.h.
 */
int fy_snap_restore(ferry_session *s, const char *path)
{
	struct restorer x = { .s = s, .path = path, .dfd = -1, .bfd = -1 };
	int rc;

	pthread_mutex_init(&x.lock, NULL);
	fy_session_set_state(s, FERRY_STATE_NEGOTIATING);
	rc = open_file(&x);
	if (!rc)
		restore_owner(s, FY_RS_IDLE);
	if (!rc && s->cfg.lazy) {
		rc = restore_lazy(&x);
		goto out;
	}
	if (!rc) {
		fy_session_set_state(s, FERRY_STATE_PRECOPY);
		rc = read_memory(&x);
	}
	if (!rc) {
		fy_session_set_state(s, FERRY_STATE_SWITCHOVER);
		rc = load_state(&x);
	}
	if (!rc)
		rc = run_guest(&x);
	if (!rc)
		restore_owner(s, FY_RS_RUNNING);
out:
	if (x.dfd >= 0)
		close(x.dfd);
	if (x.bfd >= 0)
		close(x.bfd);
	if (x.table)
		munmap(x.table, x.table_len ? x.table_len : 1);
	if (x.map)
		munmap(x.map, x.map_len ? x.map_len : 1);
	if (x.state)
		munmap(x.state, x.sb.state_bytes ? x.sb.state_bytes : 1);
	pthread_mutex_destroy(&x.lock);
	return rc;
}

/*
 * The lazy loader's page source: the slots of @len bytes at @offset of
 * @region, zero pages marked in @zero, each data page checked against its
 * hash before the loader may place it.
 */
static int lazy_fetch(void *opaque, uint32_t region, uint64_t offset,
		      uint64_t len, void *buf, uint64_t *zero, char *err,
		      size_t errlen)
{
	struct restorer *x = opaque;
	uint64_t p0 = offset / FY_PAGE_SIZE, np = len / FY_PAGE_SIZE;
	uint64_t g0 = x->base[region] + p0;
	uint64_t slot = x->sb.regions[region].slot_offset + offset;
	uint8_t *b = buf;
	int rc;

	for (uint64_t p = 0; p < np;) {
		bool data = map_bit(x->map, g0 + p);
		uint64_t q = p + 1;

		while (q < np && map_bit(x->map, g0 + q) == data)
			q++;
		if (!data) {
			for (uint64_t i = p; i < q; i++)
				zero[i / 64] |= 1ull << (i % 64);
			p = q;
			continue;
		}
		/* A fault's page comes through the page cache, so its
		 * neighbours are read ahead; batches go direct. */
		rc = (q - p) * FY_PAGE_SIZE >= (64u << 10)
			     ? read_slots(x, b + p * FY_PAGE_SIZE,
					  (q - p) * FY_PAGE_SIZE,
					  slot + p * FY_PAGE_SIZE)
			     : read_at(x->bfd, b + p * FY_PAGE_SIZE,
				       (q - p) * FY_PAGE_SIZE,
				       slot + p * FY_PAGE_SIZE);
		if (rc) {
			snprintf(err, errlen,
				 "%s: reading page %llu of region %s at offset %llu: %s",
				 x->path, (unsigned long long)(p0 + p),
				 x->s->regions[region].name,
				 (unsigned long long)(slot + p * FY_PAGE_SIZE),
				 rc == -ENODATA ? "the file ends first"
						: ferry_strerror(rc));
			return rc == -ENODATA ? -EBADMSG : rc;
		}
		rc = check_pages(x, region, p0 + p, q - p,
				 b + p * FY_PAGE_SIZE, err, errlen);
		if (rc)
			return rc;
		p = q;
	}
	return 0;
}

/* What the loader did, in the session's statistics. */
static void publish_lazy(ferry_session *s, struct fy_lazy *l,
			 struct fy_lazy_stats *ls)
{
	fy_lazy_stats(l, ls);
	pthread_mutex_lock(&s->lock);
	s->stats.lazy_pages = ls->pages;
	s->stats.lazy_placed = ls->placed;
	s->stats.page_faults = ls->faults;
	s->stats.page_wait_p50_ms = ls->wait_p50_us / 1e3;
	s->stats.page_wait_p99_ms = ls->wait_p99_us / 1e3;
	s->stats.page_wait_max_ms = ls->wait_max_us / 1e3;
	s->stats.lazy_complete_ms = ls->complete_ms;
	s->stats.pass_bytes = ls->placed * FY_PAGE_SIZE;
	if (ls->complete_ms > 0)
		s->stats.mb_per_s = (double)ls->pages * FY_PAGE_SIZE /
				    ls->complete_ms / 1e3;
	pthread_mutex_unlock(&s->lock);
}

/*
 * The guest runs; wait for the loader to place every page. A cancel
 * cannot take back a guest that runs on part of its memory, so it is
 * only logged.
 */
static int wait_loaded(ferry_session *s, struct fy_lazy *l,
		       struct fy_lazy_stats *ls)
{
	bool told = false;
	int rc;

	for (;;) {
		rc = fy_lazy_wait(l, 100);
		publish_lazy(s, l, ls);
		if (rc != -ETIMEDOUT)
			return rc;
		fy_session_progress(s);
		if (fy_cancelled(s) && !told) {
			fy_session_log(s, 1,
				       "the guest already runs on a partly loaded memory: a lazy restore cannot be cancelled, loading goes on");
			told = true;
		}
	}
}

/*
 * Lazy: register memory with the loader, load the state, run the guest,
 * and let faults and the background fill memory. A damaged page stops
 * the loader; the guest is paused and the loader kept, so vCPUs blocked on
 * missing pages stay blocked until the session is destroyed.
 */
static int restore_lazy(struct restorer *x)
{
	ferry_session *s = x->s;
	struct fy_lazy_config lc = {
		.regions = s->regions,
		.nregions = s->nregions,
		.source = { lazy_fetch, x },
		.background_threads = 2,
	};
	struct fy_lazy_stats ls;
	struct fy_lazy *l = NULL;
	char why[256] = "";
	int rc;

	if (!s->ops.pause)
		return fy_session_fail(s, -EINVAL,
				       "a lazy restore needs the VMM's pause callback: a damaged page must stop the guest");
	if (s->lazy)
		return fy_session_fail(s, -EBUSY,
				       "this session holds a guest stopped by an earlier lazy restore");
	rc = fy_lazy_start(&l, &lc, why, sizeof(why));
	if (rc)
		return fy_session_fail(s, rc, "lazy restore: %s", why);
	fy_session_set_state(s, FERRY_STATE_SWITCHOVER);
	rc = load_state(x);
	if (!rc)
		rc = run_guest(x);
	if (rc) {
		/* The guest never ran here: nothing waits on a page. */
		fy_lazy_free(l);
		return rc;
	}
	restore_owner(s, FY_RS_POSTCOPY);
	fy_session_set_state(s, FERRY_STATE_POSTCOPY);
	rc = wait_loaded(s, l, &ls);
	if (!rc) {
		rc = fy_lazy_finish(l);
		fy_lazy_free(l);
		if (rc)
			return fy_session_fail(s, rc, "releasing userfaultfd: %s",
					       ferry_strerror(rc));
		return 0;
	}
	/* The file goes away with this run: no thread may read it later. */
	fy_lazy_stop(l);
	s->lazy = l;
	if (s->ops.pause(s->cfg.opaque))
		return fy_session_fail(s, rc,
				       "%s; pausing the guest failed: its vCPUs that touch a missing page stay blocked",
				       ls.errmsg[0] ? ls.errmsg
						    : ferry_strerror(rc));
	return fy_session_fail(s, rc, "%s; the guest is stopped",
			       ls.errmsg[0] ? ls.errmsg : ferry_strerror(rc));
}
