// SPDX-License-Identifier: MIT
/*
 * mapped.c - ferry_inspect_fd() for a snapshot file in the mapped layout
 * (src/wire/snapfile.h): the superblock, one item per region, the device
 * state and a summary, and with FERRY_INSPECT_CHECK every byte of the file
 * against the hashes that cover it.
 *
 * The file is read by offset (pread), part by part, in the order a
 * restore trusts them: the superblock, the data map (which pages hold
 * data), the page table (what every page must hash to), then each
 * region's slots in large chunks against their table entries, then the
 * state. Problems name the part and the file offset where they are, e.g.
 * "offset 2170880: page 18 of region ram0 (global page 18): slot does not
 * match its checksum", so a damaged file can be looked at with a hex dump.
 */
#include "inspect/inspect.h"
#include "state/state.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <xxhash.h>

/* Slot bytes read at once when checking pages: large reads keep a disk
 * streaming, and 8 MiB is 2048 pages of table entries (16 KiB). */
#define CHUNK (8u << 20)
#define CHUNK_PAGES (CHUNK / FY_MEM_PAGE)

struct mapped {
	int fd;
	uint64_t base; /* file offset of the snapshot's first byte */
	unsigned flags;
	ferry_inspect_fn cb;
	void *opaque;
	struct fy_snap_sb sb;
	uint64_t *map;	/* the data map, host order */
	uint8_t *table; /* CHUNK_PAGES table entries */
	uint8_t *slots; /* CHUNK bytes of slots */
	struct fy_js js;

	/* The problem of the item being built (the first one wins). */
	int pcode;
	uint64_t poff;
	bool fatal; /* the rest of the file cannot be read */
	char problem[600];
};

static int mfail(struct mapped *m, uint64_t off, int code, const char *fmt,
		 ...) __attribute__((format(printf, 4, 5)));
static void note(struct mapped *m, int code, uint64_t off, const char *fmt,
		 ...) __attribute__((format(printf, 4, 5)));

/* The problem at file offset @off, as "offset N: ...". */
static void set_problem(struct mapped *m, int code, uint64_t off,
			const char *fmt, va_list ap)
{
	int n;

	m->pcode = code;
	m->poff = off;
	n = snprintf(m->problem, sizeof(m->problem), "offset %" PRIu64 ": ",
		     off);
	vsnprintf(m->problem + n, sizeof(m->problem) - (size_t)n, fmt, ap);
}

/* End the inspection with @code: the message becomes the problem. */
static int mfail(struct mapped *m, uint64_t off, int code, const char *fmt,
		 ...)
{
	va_list ap;

	va_start(ap, fmt);
	set_problem(m, code, off, fmt, ap);
	va_end(ap);
	m->fatal = true;
	return code;
}

/* Note a problem at file offset @off unless one is noted already. */
static void note(struct mapped *m, int code, uint64_t off, const char *fmt,
		 ...)
{
	va_list ap;

	if (m->pcode)
		return;
	va_start(ap, fmt);
	set_problem(m, code, off, fmt, ap);
	va_end(ap);
}

static bool checking(const struct mapped *m)
{
	return m->flags & FERRY_INSPECT_CHECK;
}

/*
 * Hand the item built in m->js to the caller with the problem noted for
 * it. A problem ends the inspection when checking, or when it is fatal;
 * otherwise it is forgotten once shown.
 */
static int deliver(struct mapped *m, struct ferry_inspect_item *it)
{
	int rc;

	it->json = fy_js_text(&m->js);
	if (!it->json)
		return mfail(m, it->offset, -ENOMEM, "out of memory");
	it->problem = m->pcode ? m->problem : NULL;
	if (m->cb) {
		rc = m->cb(m->opaque, it);
		if (rc)
			return mfail(m, it->offset, rc,
				     "stopped by the caller (%d)", rc);
	}
	if (m->pcode && (m->fatal || checking(m)))
		return m->pcode;
	m->pcode = 0;
	return 0;
}

/* Read exactly @n bytes at snapshot offset @off; a short read is fatal. */
static int mread(struct mapped *m, void *buf, size_t n, uint64_t off,
		 const char *what)
{
	size_t got;
	int rc = fy_pread_full(m->fd, buf, n, m->base + off, &got);

	if (rc)
		return mfail(m, off + got, rc, "cannot read %s: %s", what,
			     strerror(-rc));
	if (got < n)
		return mfail(m, off + got, -EBADMSG,
			     "the file ends inside %s (%zu of %zu bytes)", what,
			     got, n);
	return 0;
}

static bool map_bit(const struct mapped *m, uint64_t g)
{
	return (m->map[g / 64] >> (g % 64)) & 1;
}

/* Set bits of the map for global pages [@first, @first + @n). */
static uint64_t map_count(const struct mapped *m, uint64_t first, uint64_t n)
{
	uint64_t c = 0;

	for (uint64_t g = first; g < first + n;) {
		if (g % 64 == 0 && first + n - g >= 64) {
			c += (uint64_t)__builtin_popcountll(m->map[g / 64]);
			g += 64;
		} else {
			c += map_bit(m, g++);
		}
	}
	return c;
}

/* The data map: its hash, zero bits past the last page, its count. */
static int read_map(struct mapped *m)
{
	const struct fy_snap_sb *sb = &m->sb;
	uint64_t bytes = fy_snap_map_bytes(sb->pages), have, last, set;
	int rc;

	m->map = malloc(bytes);
	if (!m->map)
		return mfail(m, sb->map_offset, -ENOMEM,
			     "no memory for the %" PRIu64 "-byte data map", bytes);
	rc = mread(m, m->map, bytes, sb->map_offset, "the data map");
	if (rc)
		return rc;
	have = XXH3_64bits(m->map, bytes);
	if (have != sb->map_hash)
		note(m, FERRY_ECHECKSUM, sb->map_offset,
		     "data map: checksum 0x%016" PRIx64 " in the superblock, "
		     "its bytes hash to 0x%016" PRIx64, sb->map_hash, have);
	for (uint64_t w = 0; w < bytes / 8; w++)
		m->map[w] = fy_get_u64((const uint8_t *)&m->map[w]);
	last = m->map[bytes / 8 - 1];
	if (sb->pages % 64 && last >> (sb->pages % 64))
		note(m, -EBADMSG, sb->map_offset + bytes - 8,
		     "data map: bits past the last page (%" PRIu64 ") are set",
		     sb->pages - 1);
	set = map_count(m, 0, sb->pages);
	if (set != sb->data_pages)
		note(m, -EBADMSG, sb->map_offset,
		     "data map: %" PRIu64 " pages hold data, the superblock's "
		     "data_pages says %" PRIu64, set, sb->data_pages);
	return 0;
}

/* The page table's hash, read in chunks: it can be large. */
static int table_hash(struct mapped *m)
{
	const struct fy_snap_sb *sb = &m->sb;
	uint64_t bytes = fy_snap_table_bytes(sb->pages), have;
	XXH3_state_t *h = XXH3_createState();
	int rc = 0;

	if (!h)
		return mfail(m, sb->table_offset, -ENOMEM, "out of memory");
	XXH3_64bits_reset(h);
	for (uint64_t off = 0; off < bytes && !rc; off += CHUNK) {
		size_t n = bytes - off < CHUNK ? bytes - off : CHUNK;

		rc = mread(m, m->slots, n, sb->table_offset + off,
			   "the page table");
		if (!rc)
			XXH3_64bits_update(h, m->slots, n);
	}
	have = XXH3_64bits_digest(h);
	XXH3_freeState(h);
	if (!rc && have != sb->table_hash)
		note(m, FERRY_ECHECKSUM, sb->table_offset,
		     "page table: checksum 0x%016" PRIx64 " in the superblock "
		     "(the image digest), its bytes hash to 0x%016" PRIx64,
		     sb->table_hash, have);
	return rc;
}

static void js_hex(struct fy_js *j, const char *key, uint64_t v)
{
	char s[24];

	snprintf(s, sizeof(s), "0x%016" PRIx64, v);
	fy_js_cstr(j, key, s);
}

static void header_json(struct mapped *m)
{
	const struct fy_snap_sb *sb = &m->sb;
	struct fy_js *j = &m->js;
	time_t t = (time_t)(sb->created_ns / 1000000000u);
	char when[64] = "";
	struct tm tm;

	if (gmtime_r(&t, &tm))
		snprintf(when + strftime(when, 32, "%Y-%m-%dT%H:%M:%S", &tm),
			 32, ".%09" PRIu64 "Z", sb->created_ns % 1000000000u);
	fy_js_reset(j);
	fy_js_open(j, '{');
	fy_js_cstr(j, "magic", FY_SNAP_MAGIC);
	fy_js_u64(j, "format_version", sb->version);
	fy_js_u64(j, "flags", sb->flags);
	fy_js_u64(j, "page_size", sb->page_size);
	fy_js_u64(j, "regions", sb->nregions);
	fy_js_u64(j, "pages", sb->pages);
	fy_js_u64(j, "data_pages", sb->data_pages);
	fy_js_u64(j, "table_offset", sb->table_offset);
	fy_js_u64(j, "map_offset", sb->map_offset);
	fy_js_u64(j, "state_offset", sb->state_offset);
	fy_js_u64(j, "state_bytes", sb->state_bytes);
	fy_js_u64(j, "file_bytes", fy_snap_file_size(sb));
	js_hex(j, "table_hash", sb->table_hash);
	js_hex(j, "map_hash", sb->map_hash);
	js_hex(j, "state_hash", sb->state_hash);
	fy_js_u64(j, "passes", sb->passes);
	fy_js_cstr(j, "software", sb->software);
	fy_js_u64(j, "created_ns", sb->created_ns);
	fy_js_cstr(j, "created", when);
	fy_js_close(j, '}');
}

/* The superblock's item, after the checks of the whole file's size, the
 * map and the table hash (the superblock holds their hashes). */
static int header(struct mapped *m, uint64_t size)
{
	struct ferry_inspect_item it = { .what = FERRY_INSPECT_HEADER,
					 .name = "" };
	uint64_t want = fy_snap_file_size(&m->sb);
	int rc = 0;

	if (size != want)
		mfail(m, size < want ? size : want, -EBADMSG,
		      "the file is %" PRIu64 " bytes, its layout needs %" PRIu64
		      "%s", size, want,
		      size < want ? " (truncated)" : " (bytes after the state)");
	else if (!(rc = read_map(m)))
		rc = table_hash(m);
	if (rc)
		return rc;
	header_json(m);
	return deliver(m, &it);
}

/* Compare chunk [@c, @c + @k) of region @i's pages with the table. */
static int check_chunk(struct mapped *m, uint32_t i, uint64_t c, uint64_t k)
{
	static const uint8_t zero[FY_MEM_PAGE];
	const struct fy_snap_region *r = &m->sb.regions[i];
	uint64_t g0 = fy_snap_global_page(&m->sb, i, c), g;
	uint64_t toff = m->sb.table_offset + g0 * 8;
	int rc = mread(m, m->table, k * 8, toff, "the page table");

	if (!rc && map_count(m, g0, k))
		rc = mread(m, m->slots, k * FY_MEM_PAGE,
			   r->slot_offset + c * FY_MEM_PAGE, "the slots");
	for (uint64_t p = 0; p < k && !rc; p++) {
		uint64_t want = fy_get_u64(m->table + p * 8);

		g = g0 + p;
		if (map_bit(m, g) &&
		    fy_snap_page_hash(m->slots + p * FY_MEM_PAGE, g) != want) {
			note(m, FERRY_ECHECKSUM,
			     r->slot_offset + (c + p) * FY_MEM_PAGE,
			     "page %" PRIu64 " of region %s (global page %" PRIu64
			     "): slot does not match its checksum (the table "
			     "entry at offset %" PRIu64 ")",
			     c + p, r->name, g, toff + p * 8);
			return 0;
		}
		if (!map_bit(m, g) && fy_snap_page_hash(zero, g) != want) {
			note(m, FERRY_ECHECKSUM, toff + p * 8,
			     "page %" PRIu64 " of region %s (global page %" PRIu64
			     "): the table entry of a zero page (map bit clear) "
			     "is not the hash of a zero page",
			     c + p, r->name, g);
			return 0;
		}
	}
	return rc;
}

static int region(struct mapped *m, uint32_t i)
{
	const struct fy_snap_region *r = &m->sb.regions[i];
	struct ferry_inspect_item it = { .what = FERRY_INSPECT_REGION,
					 .offset = r->slot_offset,
					 .name = r->name };
	uint64_t n = r->size / FY_MEM_PAGE;
	uint64_t set = map_count(m, fy_snap_global_page(&m->sb, i, 0), n);
	struct fy_js *j = &m->js;
	int rc = 0;

	if (set != r->data_pages)
		note(m, -EBADMSG,
		     FY_SNAP_REGIONS_AT + i * FY_SNAP_REGION_SIZE + 24,
		     "region %u (%s): data_pages %" PRIu64 " in the superblock, "
		     "the data map sets %" PRIu64 " of its pages",
		     i, r->name, r->data_pages, set);
	for (uint64_t c = 0; c < n && checking(m) && !m->pcode && !rc;
	     c += CHUNK_PAGES)
		rc = check_chunk(m, i, c, n - c < CHUNK_PAGES ? n - c : CHUNK_PAGES);
	if (rc)
		return rc;
	fy_js_reset(j);
	fy_js_open(j, '{');
	fy_js_u64(j, "index", i);
	fy_js_cstr(j, "name", r->name);
	fy_js_u64(j, "gpa", r->gpa);
	fy_js_u64(j, "size", r->size);
	fy_js_u64(j, "pages", n);
	fy_js_u64(j, "first_page", fy_snap_global_page(&m->sb, i, 0));
	fy_js_u64(j, "slot_offset", r->slot_offset);
	fy_js_u64(j, "data_pages", r->data_pages);
	fy_js_u64(j, "zero_pages", n - (set < n ? set : n));
	fy_js_bool(j, "checked", checking(m));
	fy_js_close(j, '}');
	return deliver(m, &it);
}

/* The state section as a STATE record shows it: its hash, then decoded. */
static int state(struct mapped *m)
{
	const struct fy_snap_sb *sb = &m->sb;
	struct ferry_inspect_item it = { .what = FERRY_INSPECT_RECORD,
					 .offset = sb->state_offset,
					 .type = FY_REC_STATE, .name = "STATE",
					 .length = (uint32_t)sb->state_bytes };
	char err[FY_STATE_MSG_MAX], *dump = NULL;
	uint8_t *st = malloc(sb->state_bytes);
	uint64_t have;
	int rc;

	if (!st)
		return mfail(m, sb->state_offset, -ENOMEM, "out of memory");
	rc = mread(m, st, sb->state_bytes, sb->state_offset,
		   "the state section");
	if (rc)
		goto out;
	have = XXH3_64bits(st, sb->state_bytes);
	if (have != sb->state_hash)
		note(m, FERRY_ECHECKSUM, sb->state_offset,
		     "state section: checksum 0x%016" PRIx64 " in the "
		     "superblock, its bytes hash to 0x%016" PRIx64,
		     sb->state_hash, have);
	fy_js_reset(&m->js);
	fy_js_open(&m->js, '{');
	fy_js_u64(&m->js, "bytes", sb->state_bytes);
	rc = ferry_state_dump_json(st, sb->state_bytes, &dump, err, sizeof(err));
	if (rc == -ENOMEM) {
		rc = mfail(m, sb->state_offset, rc, "out of memory");
		goto out;
	} else if (rc) {
		fy_js_cstr(&m->js, "error", err);
		note(m, rc, sb->state_offset, "state section: %s", err);
	} else {
		fy_js_json(&m->js, "section", dump, strlen(dump));
	}
	fy_js_close(&m->js, '}');
	rc = deliver(m, &it);
out:
	free(dump);
	free(st);
	return rc;
}

static int summary(struct mapped *m)
{
	const struct fy_snap_sb *sb = &m->sb;
	struct ferry_inspect_item it = { .what = FERRY_INSPECT_SUMMARY,
					 .offset = fy_snap_file_size(sb),
					 .name = "" };
	struct fy_js *j = &m->js;

	fy_js_reset(j);
	fy_js_open(j, '{');
	fy_js_cstr(j, "format", "mapped");
	fy_js_u64(j, "regions", sb->nregions);
	fy_js_u64(j, "pages", sb->pages);
	fy_js_u64(j, "data_pages", sb->data_pages);
	fy_js_u64(j, "zero_pages", sb->pages - sb->data_pages);
	fy_js_u64(j, "memory_bytes", sb->pages * FY_MEM_PAGE);
	fy_js_u64(j, "file_bytes", fy_snap_file_size(sb));
	fy_js_u64(j, "state_bytes", sb->state_bytes);
	fy_js_u64(j, "passes", sb->passes);
	js_hex(j, "image_digest", sb->table_hash);
	fy_js_bool(j, "pages_checked", checking(m));
	fy_js_bool(j, "complete", true);
	fy_js_close(j, '}');
	return deliver(m, &it);
}

static int run(struct mapped *m)
{
	char why[512] = "";
	struct stat st;
	uint64_t size;
	int rc;

	if (fstat(m->fd, &st))
		return mfail(m, 0, -errno, "cannot stat: %s", strerror(errno));
	size = (uint64_t)st.st_size > m->base ? (uint64_t)st.st_size - m->base : 0;
	rc = fy_snap_read_sb(m->fd, m->base, UINT64_MAX, &m->sb, why,
			     sizeof(why));
	if (rc)
		return mfail(m, 0, rc, "superblock: %s", why);
	m->table = malloc(CHUNK_PAGES * 8);
	m->slots = malloc(CHUNK);
	if (!m->table || !m->slots)
		return mfail(m, 0, -ENOMEM, "out of memory");
	rc = header(m, size);
	for (uint32_t i = 0; i < m->sb.nregions && !rc; i++)
		rc = region(m, i);
	if (!rc)
		rc = state(m);
	if (!rc)
		rc = summary(m);
	return rc;
}

/**
 * fy_insp_mapped() - inspect a mapped snapshot file.
 * @fd: the file; read with pread only, its position is left alone.
 * @base: the file offset of the snapshot's superblock.
 * @flags: FERRY_INSPECT_CHECK or 0.
 * @cb: called for every item: HEADER, one REGION per region, the STATE
 *      record, SUMMARY; may be NULL.
 * @opaque: passed to @cb.
 * @err_offset: receives the offset of the problem that ended it (or NULL).
 * @err: receives "offset N: what is wrong" (or NULL with @errlen 0).
 * @errlen: size of @err.
 *
 * Without FERRY_INSPECT_CHECK the superblock, the file size, the data map
 * and the hashes of the map, the table and the state are checked, and a
 * problem other than an unreadable file is shown with its item; with it,
 * every page is checked too and the first problem ends the inspection.
 *
 * Return: as ferry_inspect_fd().
 */
int fy_insp_mapped(int fd, uint64_t base, unsigned flags, ferry_inspect_fn cb,
		   void *opaque, uint64_t *err_offset, char *err,
		   size_t errlen)
{
	struct mapped *m = calloc(1, sizeof(*m));
	int rc;

	if (!m) {
		if (err && errlen)
			snprintf(err, errlen, "offset 0: out of memory");
		return -ENOMEM;
	}
	m->fd = fd;
	m->base = base;
	m->flags = flags;
	m->cb = cb;
	m->opaque = opaque;
	rc = run(m);
	if (rc && err && errlen)
		snprintf(err, errlen, "%s", m->problem);
	if (rc && err_offset)
		*err_offset = m->poff;
	free(m->map);
	free(m->table);
	free(m->slots);
	fy_js_free(&m->js);
	free(m);
	return rc;
}
