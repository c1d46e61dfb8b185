/* SPDX-License-Identifier: MIT */
/*
 * inspect.h - the internal interface of src/inspect, the offline reader
 * behind ferry_inspect_fd() and `ferry inspect`.
 *
 * The inspector reads a stream once, front to back, through a bounded
 * buffer (reader.c). Every record is framed and checksummed as it streams
 * past (inspect.c); control bodies are read whole (they are at most
 * FY_REC_MAX_BODY) and decoded to JSON (decode.c); memory records are
 * validated and summarised without keeping their payload (memory.c).
 *
 * Problems have a rank, so that the one reported for a record is the most
 * fundamental: a bad checksum makes everything read from the record
 * suspect, a record out of order makes its content moot.
 *
 * Files:
 *   reader.c   buffered reading from an fd, offsets, EOF at a boundary
 *   inspect.c  the public entry point, framing, order, passes, summary
 *   decode.c   control message bodies, snapshot index and footer
 *   memory.c   memory records: ranges, zero maps, payload sizes, codecs
 *   json.c     a small JSON writer on top of fy_buf
 *   snapinfo.c positioned reads, the superblock of a mapped snapshot file,
 *              ferry_snapshot_describe()
 *   mapped.c   inspecting and checking a mapped snapshot file
 */
#ifndef FY_INSPECT_H
#define FY_INSPECT_H

#include "transport/transport.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry.h"
#include "memory/memory.h"
#include "proto/proto.h"
#include "wire/snapfile.h"
#include "wire/wire.h"

/* ---- reader.c ---- */

/* A forward-only buffered reader; @off is the stream offset of the next
 * byte a read returns. */
struct fy_in {
	int fd;
	uint8_t *buf;
	size_t cap, pos, len;
	uint64_t off;
	bool eof;
	int err; /* sticky read error (negative errno) */
};

int fy_in_init(struct fy_in *in, int fd, size_t cap);
void fy_in_free(struct fy_in *in);
/* Read exactly @n bytes unless the stream ends first; *got says how many
 * were read. 0, or a negative errno from read(2). */
int fy_in_read(struct fy_in *in, void *dst, size_t n, size_t *got);
/* Borrow up to @max buffered bytes (refilling when empty): *p points into
 * the buffer, valid until the next call. 0 with *got = 0 at the end. */
int fy_in_peek(struct fy_in *in, const uint8_t **p, size_t max, size_t *got);
/* True when no byte is left (at a record boundary: a clean end). */
bool fy_in_at_end(struct fy_in *in);

/* ---- json.c ---- */

/* A JSON text under construction, with a sticky -ENOMEM. */
struct fy_js {
	struct fy_buf b;
	int err;
	bool first; /* no member written yet in the open object/array */
};

void fy_js_reset(struct fy_js *j);
void fy_js_free(struct fy_js *j);
void fy_js_raw(struct fy_js *j, const char *s, size_t n);
void fy_js_open(struct fy_js *j, char c);  /* '{' or '[' */
void fy_js_close(struct fy_js *j, char c); /* '}' or ']' */
void fy_js_key(struct fy_js *j, const char *key);
void fy_js_u64(struct fy_js *j, const char *key, uint64_t v);
void fy_js_i64(struct fy_js *j, const char *key, int64_t v);
void fy_js_bool(struct fy_js *j, const char *key, bool v);
void fy_js_str(struct fy_js *j, const char *key, const void *s, size_t n);
void fy_js_cstr(struct fy_js *j, const char *key, const char *s);
void fy_js_hex(struct fy_js *j, const char *key, const uint8_t *p, size_t n);
/* A member whose value is @json, already valid JSON text. */
void fy_js_json(struct fy_js *j, const char *key, const char *json,
		size_t n);
/* NUL-terminate; the text, or NULL after an error. */
const char *fy_js_text(struct fy_js *j);

/* ---- the inspector (inspect.c) ---- */

/* Problem ranks, most fundamental first. */
enum fy_prank {
	FY_P_NONE = 0,
	FY_P_FRAME,   /* padding, checksum */
	FY_P_ORDER,   /* not valid here (the receiver state machine) */
	FY_P_CONTENT, /* the body itself */
};

/* What one pass's memory records added up to. */
struct fy_pass_sum {
	struct fy_pass_begin begin;
	uint64_t offset; /* of its PASS_BEGIN */
	uint64_t records, bytes, pages, zero_pages, payload;
	uint64_t packed_records, packed_bytes;
	struct fy_region_sum {
		uint64_t records, bytes, first, last, end;
	} regions[FY_MAX_REGIONS];
};

struct fy_insp {
	struct fy_in in;
	unsigned flags;
	ferry_inspect_fn cb;
	void *opaque;

	/* The record being read. */
	struct fy_rec_hdr h;
	uint8_t hdr[FY_REC_HDR_SIZE];
	uint64_t rec_off;
	struct fy_csum csum;
	struct fy_buf body;	  /* control bodies */
	struct fy_js js;	  /* the item's JSON */
	enum fy_prank prank;	  /* rank of the record's problem */
	int pcode;		  /* its code */
	char problem[512];

	/* Protocol. */
	struct fy_recv_sm sm;
	bool data_conn; /* the stream is an extra data connection */
	enum fy_data_state ds;
	bool have_hello, have_config;
	struct fy_hello hello;
	struct fy_config_msg cfg;
	bool in_pass;
	struct fy_pass_sum pass;

	/* Memory checking. */
	uint64_t zmap[(FY_REC_MAX_BODY / FY_MEM_PAGE + 63) / 64];
	struct fy_buf packed, unpacked;
	struct fy_codec *codec[3];

	/* Snapshot index: a running hash of the entries the memory records
	 * seen so far call for, and where the state and the index were. */
	void *index_hash; /* XXH3_state_t */
	uint64_t state_off, index_off, index_size;
	bool have_state, have_index, have_footer;

	/* Totals. */
	uint64_t records, mem_records, mem_bytes, passes, state_bytes;
	uint64_t skipped;
};

/* Note a problem of rank @rank with the record being read (the first of
 * the most fundamental rank wins). */
void fy_insp_problem(struct fy_insp *x, enum fy_prank rank, int code,
		     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Read @n body bytes into @dst (NULL: drop them), feeding the first
 * *@covered of them to the checksum (and decreasing it). 0, -EBADMSG
 * (truncated, message in @err) or a read error. */
int fy_insp_body(struct fy_insp *x, void *dst, size_t n, size_t *covered);
bool fy_insp_checking(const struct fy_insp *x);
const char *fy_insp_rec_name(uint32_t type, char *buf, size_t len);

/* ---- decode.c ---- */

/* Read and decode a control record's body into x->js; problems noted. */
int fy_insp_control(struct fy_insp *x);
/* Check PASS_END against the pass (content problems). */
void fy_insp_pass_end(struct fy_insp *x, const struct fy_pass_end *e);
/* The capability names of @caps as a JSON array member. */
void fy_insp_caps(struct fy_js *j, const char *key, uint64_t caps);
/* Feed the index entry a memory record at @off calls for. */
void fy_insp_index_add(struct fy_insp *x, const struct fy_mem_hdr *m,
		       uint64_t off);

/* ---- memory.c ---- */

/* Read, check and describe a MEMORY record (body, not padding). */
int fy_insp_memory(struct fy_insp *x, bool in_pass);
void fy_insp_pass_json(struct fy_insp *x, struct fy_js *j, bool ended);
void fy_insp_mem_free(struct fy_insp *x);

/* ---- snapinfo.c ---- */

/* pread until @n bytes or the end of the file; *got says how many. 0 or a
 * negative errno. */
/* Read and decode the superblock at @base of @fd; @size is the bytes from
 * @base to the end of the file (UINT64_MAX: unchecked). A stream-format
 * file is refused saying so. 0, -EBADMSG, FERRY_EVERSION, FERRY_ECHECKSUM,
 * -ENOMEM or a read error, with @err set. */
int fy_snap_read_sb(int fd, uint64_t base, uint64_t size,
		    struct fy_snap_sb *sb, char *err, size_t errlen);

/* ---- mapped.c ---- */

/* ferry_inspect_fd() for a mapped snapshot file starting at offset @base
 * of the seekable @fd (offsets in items and messages count from @base). */
int fy_insp_mapped(int fd, uint64_t base, unsigned flags, ferry_inspect_fn cb,
		   void *opaque, uint64_t *err_offset, char *err,
		   size_t errlen);

#endif /* FY_INSPECT_H */
