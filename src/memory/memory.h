/* SPDX-License-Identifier: MIT */
/*
 * memory.h - guest memory regions, coalesced range lists and dirty
 * tracking. No sockets here.
 */
#ifndef FY_MEMORY_H
#define FY_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FY_PAGE_SIZE 4096u

/*
 * A source reads guest memory while the guest's vCPUs write it: that race
 * is what dirty tracking is for (a page written while it is read is dirty
 * and goes again in the next pass), so it is not a bug. The code that
 * reads guest pages on a source (zero test, compression, checksum, the
 * send itself) runs between these two marks, ThreadSanitizer's own
 * annotations: the thread's memory accesses between them, its system
 * calls' buffers and what libraries it calls read, are not checked;
 * its locks still are. Everything else stays checked.
 */
#if defined(__SANITIZE_THREAD__)
#define FY_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FY_TSAN 1
#endif
#endif
#ifdef FY_TSAN
__attribute__((visibility("default"))) void AnnotateIgnoreReadsBegin(const char *file, int line);
__attribute__((visibility("default"))) void AnnotateIgnoreReadsEnd(const char *file, int line);
#define FY_GUEST_READS_BEGIN() AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define FY_GUEST_READS_END() AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
#else
#define FY_GUEST_READS_BEGIN() ((void)0)
#define FY_GUEST_READS_END() ((void)0)
#endif

struct fy_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *host;
	int fd;
	uint64_t fd_offset;
	char name[64];
};

/* A run of bytes within one region; offset and length are page multiples. */
struct fy_range {
	uint32_t region;
	uint64_t offset;
	uint64_t length;
};

/*
 * A growable list of ranges. fy_ranges_add() merges a range that starts
 * where the last one ends in the same region, so callers that add pages in
 * ascending order get a coalesced list for free.
 */
struct fy_ranges {
	struct fy_range *v;
	size_t n;
	size_t cap;
	uint64_t bytes; /* sum of lengths */
};
void fy_ranges_init(struct fy_ranges *r);
void fy_ranges_free(struct fy_ranges *r);
void fy_ranges_clear(struct fy_ranges *r); /* keeps the allocation */
int fy_ranges_add(struct fy_ranges *r, uint32_t region, uint64_t offset,
		  uint64_t length); /* 0 or -ENOMEM */
/* Append every range of @src. */
int fy_ranges_add_all(struct fy_ranges *r, const struct fy_ranges *src); /* 0 or -ENOMEM */
/*
 * A walk over a range list in chunks of at most @chunk bytes: start with a
 * zeroed cursor; each call fills @out with the next chunk and returns
 * false at the end.
 */
struct fy_chunk_cursor {
	size_t i;     /* range */
	uint64_t off; /* within it */
};
bool fy_ranges_next_chunk(const struct fy_ranges *r, struct fy_chunk_cursor *c,
			  uint64_t chunk, struct fy_range *out);

/* Sort and merge overlapping or adjacent ranges; recomputes bytes. */
void fy_ranges_normalize(struct fy_ranges *r);
/* All of every region, one range each. */
int fy_ranges_all(struct fy_ranges *r, const struct fy_region *regions,
		  size_t nregions);

/*
 * fy_bitmap_to_ranges() - append the set bits of a page bitmap as coalesced
 * ranges, scanning a 64-bit word at a time and skipping zero words.
 * @bitmap: bit i = page i of @region; @pages bits are meaningful.
 */
int fy_bitmap_to_ranges(struct fy_ranges *r, uint32_t region,
			const uint64_t *bitmap, size_t pages);

/*
 * Dirty tracking. Two back ends behind one interface:
 *  - uffd: userfaultfd write-protect in async mode; PAGEMAP_SCAN reports
 *    the written pages and write-protects them again in one ioctl.
 *  - bitmap: the VMM's get_dirty_bitmap callback, scanned a word at a time.
 */
typedef int (*fy_bitmap_fn)(void *opaque, uint32_t region, uint64_t *bitmap,
			    size_t pages);

enum fy_dirty_kind {
	FY_DIRTY_UFFD = 1,
	FY_DIRTY_BITMAP = 2,
};

struct fy_dirty {
	enum fy_dirty_kind kind;
	const struct fy_region *regions;
	size_t nregions;
	int uffd;		/* uffd back end */
	int pagemap_fd;		/* /proc/self/pagemap */
	void *scan_buf;		/* struct page_region[] for PAGEMAP_SCAN */
	size_t scan_cap;
	fy_bitmap_fn bitmap_fn; /* bitmap back end */
	void *bitmap_opaque;
	uint64_t *bitmap;	/* scratch, sized for the largest region */
	size_t bitmap_words;
	char err[160];		/* detail of the last failure */
};

/*
 * fy_dirty_probe_uffd() - can this process use the uffd back end?
 * Return: 0, or a negative code with a reason in @why.
 */
int fy_dirty_probe_uffd(char *why, size_t len);

/* A non-blocking, close-on-exec userfaultfd (src/memory/uffd.c); with
 * @user_mode_only it may be one that sees user-mode faults only. Return:
 * the descriptor, or a negative code with the reason in @why. */
int fy_uffd_open(bool user_mode_only, char *why, size_t len);

/*
 * fy_dirty_start() - begin tracking: after it returns, every write to the
 * regions is reported by the next fy_dirty_collect().
 * @kind: FY_DIRTY_UFFD or FY_DIRTY_BITMAP.
 * Return: 0 or negative code (detail in d->err).
 */
int fy_dirty_start(struct fy_dirty *d, enum fy_dirty_kind kind,
		   const struct fy_region *regions, size_t nregions,
		   fy_bitmap_fn fn, void *opaque);
/*
 * fy_dirty_collect() - append the pages written since the last collect (or
 * start) to @out as coalesced ranges, and start tracking anew.
 */
int fy_dirty_collect(struct fy_dirty *d, struct fy_ranges *out);
/* Stop tracking and release everything. Safe on a zeroed struct. */
void fy_dirty_stop(struct fy_dirty *d);

/*
 * Zero pages (zero.c). A zero page travels as a page kind, not as data.
 */
/* Whether the FY_PAGE_SIZE bytes at @page (any alignment) are all zero. */
bool fy_page_is_zero(const void *page);
/*
 * Set bit i of @bitmap ((@npages + 63) / 64 words, zeroed by the caller)
 * for every all-zero page i of @p; returns the number of zero pages.
 */
size_t fy_zero_scan(const uint8_t *p, size_t npages, uint64_t *bitmap);

/*
 * Per-chunk compression (codec.c) with liblz4 and libzstd. A struct
 * fy_codec holds the library contexts and is reused across calls; it is
 * not thread-safe, so each worker owns one. (The enum is fy_codec_kind
 * because C puts struct and enum tags in one namespace.)
 *
 * Levels (0 = the codec's default):
 *  lz4:  1 (default) .. 2 fast; -N = fast with acceleration N + 1 (faster,
 *        larger); 3 .. 12 = LZ4 HC (slow to compress, same decoder).
 *  zstd: 1 (default) .. ZSTD_maxCLevel(); negative levels are faster.
 */
enum fy_codec_kind {
	FY_CODEC_NONE = 0,
	FY_CODEC_LZ4 = 1,
	FY_CODEC_ZSTD = 2,
	FY_CODEC_KINDS, /* how many kinds there are */
};
struct fy_codec;

/* Create a codec; 0, -EINVAL (kind or level) or -ENOMEM. */
int fy_codec_new(enum fy_codec_kind kind, int level, struct fy_codec **out);
void fy_codec_free(struct fy_codec *c); /* NULL is harmless */
enum fy_codec_kind fy_codec_kind_of(const struct fy_codec *c);
/* Worst-case compressed size of @n bytes (0 if @n is too large). */
size_t fy_codec_bound(enum fy_codec_kind kind, size_t n);
/*
 * Compress @n bytes into @dst. Returns the compressed size, 0 when the
 * result would not be smaller than @n or does not fit in @cap (send the
 * chunk raw), or a negative errno. A @cap of @n is always enough.
 */
long fy_codec_compress(struct fy_codec *c, const void *src, size_t n,
		       void *dst, size_t cap);
/*
 * Decompress untrusted @src into exactly @expect bytes at @dst. Returns 0,
 * or -EBADMSG for corrupt, short or long input; never writes past
 * @dst + @expect.
 */
int fy_codec_decompress(struct fy_codec *c, const void *src, size_t n,
			void *dst, size_t expect);
const char *fy_codec_name(enum fy_codec_kind kind); /* "none", "lz4", "zstd" */
/* The levels @kind takes (0, the default, aside); 0..0 for none. */
void fy_codec_levels(enum fy_codec_kind kind, int *min, int *max);
int fy_codec_parse(const char *name, enum fy_codec_kind *out); /* 0 or -EINVAL */

/*
 * Bulk buffers (bulk.c): the large scratch buffers of the engine's hot
 * path (gathering non-zero pages, compressed payloads), allocated once at
 * their largest size and backed by huge pages when the system has them,
 * so the copy and codec loops over them take few TLB misses. Buffers of
 * less than half a huge page use 4 KiB pages: a huge page would waste
 * more memory than it saves misses.
 */
enum fy_bulk_kind {
	FY_BULK_NONE = 0,    /* not allocated */
	FY_BULK_HUGETLB = 1, /* MAP_HUGETLB, from the reserved 2 MiB pool */
	FY_BULK_THP = 2,     /* madvise(MADV_HUGEPAGE): transparent huge pages */
	FY_BULK_PLAIN = 3,   /* 4 KiB pages */
};
#define FY_BULK_KINDS 4
#define FY_HUGE_PAGE_SIZE (2u << 20)

struct fy_bulk {
	uint8_t *data;
	size_t size; /* usable bytes: at least what was asked, rounded up */
	enum fy_bulk_kind kind;
};

/*
 * fy_bulk_alloc() - map at least @want bytes: hugetlb pages when the pool
 * has enough free, else memory advised for transparent huge pages, else
 * plain pages. Return: 0, -EINVAL (@want is 0) or -ENOMEM.
 */
int fy_bulk_alloc(struct fy_bulk *b, size_t want);
/* The same with one kind only (tests, and callers that must know). */
int fy_bulk_alloc_as(struct fy_bulk *b, size_t want, enum fy_bulk_kind kind);
/* Unmap; safe on a zeroed or already freed buffer. */
void fy_bulk_free(struct fy_bulk *b);
/* "hugetlb", "thp", "plain" or "none". */
const char *fy_bulk_kind_name(enum fy_bulk_kind kind);

#endif /* FY_MEMORY_H */
