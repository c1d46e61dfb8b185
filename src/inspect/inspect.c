// SPDX-License-Identifier: MIT
/*
 * inspect.c - ferry_inspect_fd(): read a stream front to back, frame and
 * checksum every record as it streams past, follow the protocol with the
 * receiver's own state machine, and hand each header, record, pass summary
 * and the final summary to the caller as JSON.
 *
 * A one-way capture holds only what the source sent: requests and data.
 * The order check is therefore exactly the destination's (fy_recv_sm_*),
 * which is what a capture must satisfy to be a valid migration. A stream
 * whose first record is JOIN is an extra data connection and follows the
 * data-connection machine instead.
 */
#include "inspect/inspect.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#define IN_BUF_SIZE (1u << 20)

/* Why the inspection stopped: where, and what. */
struct fail {
	uint64_t offset;
	char msg[640];
};

static int fail(struct fail *f, uint64_t off, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(struct fail *f, uint64_t off, int code, const char *fmt, ...)
{
	va_list ap;
	int n;

	f->offset = off;
	n = snprintf(f->msg, sizeof(f->msg), "offset %" PRIu64 ": ", off);
	va_start(ap, fmt);
	vsnprintf(f->msg + n, sizeof(f->msg) - (size_t)n, fmt, ap);
	va_end(ap);
	return code;
}

/**
 * fy_insp_problem() - note a problem of the record being read.
 * @x: the inspector.
 * @rank: how fundamental it is; a more fundamental one replaces a lesser
 *        one, the first of a rank stays.
 * @code: the error code it stands for.
 * @fmt: the message, printf style.
 */
void fy_insp_problem(struct fy_insp *x, enum fy_prank rank, int code,
		     const char *fmt, ...)
{
	va_list ap;

	if (x->prank != FY_P_NONE && x->prank <= rank)
		return;
	x->prank = rank;
	x->pcode = code;
	va_start(ap, fmt);
	vsnprintf(x->problem, sizeof(x->problem), fmt, ap);
	va_end(ap);
}

/**
 * fy_insp_checking() - whether the caller asked for every check.
 * @x: the inspector.
 *
 * Return: true with FERRY_INSPECT_CHECK.
 */
bool fy_insp_checking(const struct fy_insp *x)
{
	return x->flags & FERRY_INSPECT_CHECK;
}

/**
 * fy_insp_body() - read body bytes of the current record.
 * @x: the inspector.
 * @dst: where to copy them, or NULL to drop them after checksumming.
 * @n: how many.
 * @covered: body bytes still covered by the checksum; the first of the
 *           @n bytes up to it are hashed, and it is decreased.
 *
 * Return: 0, -EBADMSG when the stream ends first, or a read error.
 */
int fy_insp_body(struct fy_insp *x, void *dst, size_t n, size_t *covered)
{
	uint8_t *d = dst;
	const uint8_t *p;
	size_t k, h;
	int rc;

	while (n) {
		rc = fy_in_peek(&x->in, &p, n, &k);
		if (rc)
			return rc;
		if (!k)
			return -EBADMSG;
		h = k < *covered ? k : *covered;
		if (h)
			fy_csum_update(&x->csum, p, h);
		*covered -= h;
		if (d) {
			memcpy(d, p, k);
			d += k;
		}
		n -= k;
	}
	return 0;
}

static int deliver(struct fy_insp *x, struct ferry_inspect_item *it,
		   struct fail *f)
{
	int rc;

	if (!it->json)
		return fail(f, it->offset, -ENOMEM, "out of memory");
	if (!x->cb)
		return 0;
	rc = x->cb(x->opaque, it);
	if (rc)
		return fail(f, it->offset, rc, "stopped by the caller (%d)", rc);
	return 0;
}

/* ---- stream header ---- */

static int read_stream_header(struct fy_insp *x, struct fail *f)
{
	uint8_t h[FY_STREAM_HDR_SIZE];
	struct ferry_inspect_item it = { .what = FERRY_INSPECT_HEADER,
					 .name = "" };
	uint16_t version;
	size_t got;
	int rc = fy_in_read(&x->in, h, sizeof(h), &got);

	if (rc)
		return fail(f, 0, rc, "cannot read: %s", strerror(-rc));
	if (fy_snap_is_mapped(h, got))
		return fail(f, 0, -EBADMSG,
			    "a mapped snapshot file (magic " FY_SNAP_MAGIC
			    ") is read by offset: inspect the file itself, "
			    "not a pipe or socket");
	if (got < sizeof(h))
		return fail(f, 0, -EBADMSG,
			    "stream header truncated: %zu of %d bytes", got,
			    FY_STREAM_HDR_SIZE);
	if (memcmp(h, FY_MAGIC, 8))
		return fail(f, 0, -EBADMSG,
			    "not a ferry stream (the magic is not " FY_MAGIC ")");
	if (fy_get_u32(h + 12) != XXH32(h, 12, 0))
		return fail(f, 12, -EBADMSG, "stream header checksum mismatch");
	rc = fy_stream_hdr_decode(h, &version);
	if (rc == FERRY_EVERSION)
		return fail(f, 8, rc, "format version %u; this inspector reads version %d",
			    version, FY_FORMAT_VERSION);
	if (rc)
		return fail(f, 10, rc, "stream header flags 0x%x (must be 0)",
			    fy_get_u16(h + 10));
	fy_js_reset(&x->js);
	fy_js_open(&x->js, '{');
	fy_js_cstr(&x->js, "magic", FY_MAGIC);
	fy_js_u64(&x->js, "format_version", version);
	fy_js_u64(&x->js, "flags", 0);
	fy_js_close(&x->js, '}');
	it.json = fy_js_text(&x->js);
	return deliver(x, &it, f);
}

/* ---- records ---- */

static int record_header(struct fy_insp *x, struct fail *f)
{
	struct fy_rec_hdr *h = &x->h;
	char nb[32];
	size_t got;
	int rc = fy_in_read(&x->in, x->hdr, sizeof(x->hdr), &got);

	if (rc)
		return fail(f, x->rec_off, rc, "cannot read: %s", strerror(-rc));
	if (got < sizeof(x->hdr))
		return fail(f, x->rec_off, -EBADMSG,
			    "record header truncated: %zu of %d bytes", got,
			    FY_REC_HDR_SIZE);
	rc = fy_rec_hdr_decode(x->hdr, h);
	if (!rc)
		return 0;
	if (fy_rec_number(h->type) == 0)
		return fail(f, x->rec_off, rc, "record type 0x%08x is invalid",
			    h->type);
	if (h->length > FY_REC_MAX_BODY)
		return fail(f, x->rec_off + 4, rc,
			    "%s record of %u bytes exceeds the %u-byte limit",
			    fy_insp_rec_name(h->type, nb, sizeof(nb)), h->length,
			    FY_REC_MAX_BODY);
	if (h->flags & ~FY_RF_CSUM_HEAD)
		return fail(f, x->rec_off + 12, rc,
			    "%s record with unknown flags 0x%x",
			    fy_insp_rec_name(h->type, nb, sizeof(nb)), h->flags);
	return fail(f, x->rec_off + 12, rc,
		    "CSUM_HEAD on a %s record (only MEMORY records may carry it)",
		    fy_insp_rec_name(h->type, nb, sizeof(nb)));
}

/* The records only snapshot files have, after the migration's last. */
static bool file_record(uint32_t type)
{
#ifdef FY_INDEX_HDR_SIZE
	return type == FY_REC_INDEX || type == FY_REC_FOOTER;
#else
	(void)type;
	return false;
#endif
}

/**
 * fy_insp_rec_name() - fy_rec_name(), knowing the snapshot records too.
 * @type: the record type.
 * @buf: room for the name of an unknown type (may be NULL).
 * @len: its size.
 *
 * Return: the name.
 */
const char *fy_insp_rec_name(uint32_t type, char *buf, size_t len)
{
#ifdef FY_INDEX_HDR_SIZE
	if (type == FY_REC_INDEX)
		return "INDEX";
	if (type == FY_REC_FOOTER)
		return "FOOTER";
#endif
	return fy_rec_name(type, buf, len);
}

/* Ask the protocol machine what the record means here. A snapshot's
 * INDEX and FOOTER follow RELEASED, where a live stream has nothing. */
static void classify(struct fy_insp *x, struct fy_recv_step *st)
{
	if (x->records == 0 && x->h.type == FY_REC_JOIN)
		x->data_conn = true;
	/* A postcopy recovery connection starts with RESUME. */
	if (x->records == 0 && x->h.type == FY_REC_RESUME)
		fy_recv_sm_init_resume(&x->sm);
	if (x->data_conn) {
		fy_data_sm_step(x->ds, x->h.type, x->h.seq, st);
	} else if (file_record(x->h.type) && x->sm.state == FY_RS_RUNNING) {
		memset(st, 0, sizeof(*st));
		st->action = FY_RA_SKIP;
		st->next = FY_RS_RUNNING;
	} else {
		fy_recv_sm_step(&x->sm, x->h.type, x->h.seq, st);
	}
	if (x->have_footer)
		fy_insp_problem(x, FY_P_ORDER, FERRY_EPROTO,
				"a record after the snapshot footer (it ends "
				"the file)");
	else if (st->action == FY_RA_REJECT)
		fy_insp_problem(x, FY_P_ORDER, st->code, "%s", st->msg);
}

static void commit(struct fy_insp *x, const struct fy_recv_step *st)
{
	if (x->prank == FY_P_ORDER || st->action == FY_RA_REJECT)
		return;
	if (x->data_conn)
		x->ds = FY_DS_JOINED;
	else
		fy_recv_sm_commit(&x->sm, st, x->h.seq);
}

/* Padding and checksum, after the body. */
static int record_tail(struct fy_insp *x, struct fail *f)
{
	uint8_t pad[8], sum[8];
	size_t npad = fy_pad8(x->h.length) - x->h.length, got;
	uint64_t want, have;
	int rc = fy_in_read(&x->in, pad, npad, &got);

	if (!rc && got == npad)
		rc = fy_in_read(&x->in, sum, sizeof(sum), &got);
	else if (!rc)
		got = 0;
	if (rc)
		return fail(f, x->in.off, rc, "cannot read: %s", strerror(-rc));
	if (got < sizeof(sum))
		return fail(f, x->in.off, -EBADMSG,
			    "the stream ends inside a record (its padding or checksum)");
	for (size_t i = 0; i < npad; i++)
		if (pad[i])
			fy_insp_problem(x, FY_P_FRAME, -EBADMSG,
					"padding byte %zu is 0x%02x, not 0", i,
					pad[i]);
	want = fy_get_u64(sum);
	have = fy_csum_digest(&x->csum);
	if (want != have)
		fy_insp_problem(x, FY_P_FRAME, FERRY_ECHECKSUM,
				"checksum mismatch: the record says 0x%016" PRIx64
				", its %s hash to 0x%016" PRIx64,
				want, x->h.flags & FY_RF_CSUM_HEAD ?
				"header and memory meta" : "header and body",
				have);
	return 0;
}

/* Everything between the header and the padding. */
static int record_body(struct fy_insp *x, const struct fy_recv_step *st,
		       struct fail *f)
{
	char nb[32];
	int rc;

	fy_csum_reset(&x->csum, x->hdr);
	if (x->h.type == FY_REC_MEMORY)
		rc = fy_insp_memory(x, x->in_pass && st->action == FY_RA_MEMORY);
	else
		rc = fy_insp_control(x);
	if (rc == -EBADMSG)
		return fail(f, x->in.off, rc, "stream ends inside a %s record",
			    fy_insp_rec_name(x->h.type, nb, sizeof(nb)));
	if (rc == -ENOMEM)
		return fail(f, x->rec_off, rc, "out of memory");
	if (rc)
		return fail(f, x->in.off, rc, "cannot read: %s", strerror(-rc));
	return 0;
}

static int emit_pass(struct fy_insp *x, bool ended, struct fail *f)
{
	struct ferry_inspect_item it = { .what = FERRY_INSPECT_PASS,
					 .offset = x->pass.offset,
					 .name = "" };

	fy_js_reset(&x->js);
	fy_insp_pass_json(x, &x->js, ended);
	it.json = fy_js_text(&x->js);
	x->in_pass = false;
	return deliver(x, &it, f);
}

/* Passes open at a committed PASS_BEGIN and close at PASS_END; the item
 * of the record comes first, then the pass's summary. */
static int pass_bookkeeping(struct fy_insp *x, const struct fy_recv_step *st,
			    struct fail *f)
{
	if (st->action == FY_RA_PASS_END && x->in_pass)
		return emit_pass(x, true, f);
	return 0;
}

static void pass_open(struct fy_insp *x, const struct fy_recv_step *st)
{
	struct fy_pass_begin b;

	if (st->action != FY_RA_PASS_BEGIN || x->prank == FY_P_ORDER ||
	    fy_pass_begin_decode(x->body.data, x->body.len, &b))
		return;
	memset(&x->pass, 0, sizeof(x->pass));
	x->pass.begin = b;
	x->pass.offset = x->rec_off;
	x->in_pass = true;
	x->passes++;
}

static int read_record(struct fy_insp *x, struct fail *f)
{
	struct ferry_inspect_item it = { .what = FERRY_INSPECT_RECORD };
	struct fy_recv_step st;
	char nb[32];
	int rc;

	x->rec_off = x->in.off;
	x->prank = FY_P_NONE;
	x->problem[0] = '\0';
	fy_js_reset(&x->js);
	rc = record_header(x, f);
	if (!rc) {
		classify(x, &st);
		rc = record_body(x, &st, f);
	}
	if (!rc)
		rc = record_tail(x, f);
	if (rc)
		return rc;
	x->records++;
	commit(x, &st);
	pass_open(x, &st);
	it.offset = x->rec_off;
	it.type = x->h.type;
	it.name = fy_insp_rec_name(x->h.type, nb, sizeof(nb));
	it.flags = x->h.flags;
	it.seq = x->h.seq;
	it.length = x->h.length;
	it.json = fy_js_text(&x->js);
	it.problem = x->prank ? x->problem : NULL;
	rc = deliver(x, &it, f);
	if (!rc && x->prank && fy_insp_checking(x))
		return fail(f, x->rec_off, x->pcode, "%s: %s", it.name,
			    x->problem);
	if (!rc)
		rc = pass_bookkeeping(x, &st, f);
	return rc;
}

/* ---- the end ---- */

static const char *final_state(const struct fy_insp *x, bool *complete)
{
	if (x->data_conn) {
		*complete = x->ds == FY_DS_JOINED;
		return x->ds == FY_DS_JOINED ? "joined" : "wait_join";
	}
	switch (x->sm.state) {
	case FY_RS_LOADED: /* a snapshot: memory and state, nobody to run */
	case FY_RS_READY:
	case FY_RS_RUNNING:
	case FY_RS_ABORTED:
		*complete = true;
		break;
	default:
		*complete = false;
	}
	return fy_recv_state_name(x->sm.state);
}

static void summary_json(struct fy_insp *x, const char *state, bool complete)
{
	struct fy_js *j = &x->js;

	fy_js_reset(j);
	fy_js_open(j, '{');
	fy_js_u64(j, "records", x->records);
	fy_js_u64(j, "stream_bytes", x->in.off);
	fy_js_u64(j, "memory_records", x->mem_records);
	fy_js_u64(j, "memory_bytes", x->mem_bytes);
	fy_js_u64(j, "passes", x->passes);
	fy_js_u64(j, "state_bytes", x->state_bytes);
	fy_js_u64(j, "skipped", x->skipped);
	fy_js_cstr(j, "final_state", state);
	fy_js_bool(j, "complete", complete);
	fy_js_close(j, '}');
}

static int finish(struct fy_insp *x, struct fail *f)
{
	struct ferry_inspect_item it = { .what = FERRY_INSPECT_SUMMARY,
					 .name = "" };
	bool complete, open_pass = x->in_pass;
	uint32_t pass = x->pass.begin.pass;
	const char *state = final_state(x, &complete);
	int rc = 0;

	if (x->in.err)
		return fail(f, x->in.off, x->in.err, "cannot read: %s",
			    strerror(-x->in.err));
	if (open_pass)
		rc = emit_pass(x, false, f);
	if (rc)
		return rc;
	summary_json(x, state, complete);
	it.offset = x->in.off;
	it.json = fy_js_text(&x->js);
	if (!complete)
		it.problem = x->records ? "the stream ends before the migration did" :
					  "the stream holds no record";
	rc = deliver(x, &it, f);
	if (rc || complete || !fy_insp_checking(x))
		return rc;
	if (open_pass)
		return fail(f, x->in.off, FERRY_EPROTO,
			    "the stream ends inside pass %u (no PASS_END)", pass);
	if (!x->records)
		return fail(f, x->in.off, FERRY_EPROTO, "%s", it.problem);
	return fail(f, x->in.off, FERRY_EPROTO,
		    "the stream ends in state %s, before the migration ended "
		    "(a snapshot ends after STATE, a migration after RELEASED "
		    "or ABORT)", state);
}

static int insp_new(struct fy_insp **out, int fd, unsigned flags)
{
	struct fy_insp *x = calloc(1, sizeof(*x));

	*out = x;
	if (!x)
		return -ENOMEM;
	x->flags = flags;
	fy_buf_init(&x->body);
	fy_buf_init(&x->packed);
	fy_buf_init(&x->unpacked);
	fy_recv_sm_init(&x->sm);
	x->index_hash = XXH3_createState();
	if (fy_in_init(&x->in, fd, IN_BUF_SIZE) || fy_csum_init(&x->csum) ||
	    !x->index_hash)
		return -ENOMEM;
	XXH3_64bits_reset(x->index_hash);
	return 0;
}

static void insp_free(struct fy_insp *x)
{
	if (!x)
		return;
	fy_in_free(&x->in);
	fy_csum_free(&x->csum);
	fy_buf_free(&x->body);
	fy_js_free(&x->js);
	fy_insp_mem_free(x);
	XXH3_freeState(x->index_hash);
	free(x);
}

/*
 * Whether @fd is seekable and holds a mapped snapshot at its position
 * (*@base). pread leaves the position alone, so a stream file is then
 * read from where it was.
 */
static bool mapped_at(int fd, uint64_t *base)
{
	off_t at = lseek(fd, 0, SEEK_CUR);
	uint8_t magic[8];
	size_t got;

	if (at < 0 || fy_pread_full(fd, magic, sizeof(magic), (uint64_t)at,
				    &got))
		return false;
	*base = (uint64_t)at;
	return fy_snap_is_mapped(magic, got);
}

FERRY_API int ferry_inspect_fd(int fd, unsigned flags, ferry_inspect_fn cb,
			       void *opaque, uint64_t *err_offset, char *err,
			       size_t errlen)
{
	struct fy_insp *x;
	struct fail f = { 0 };
	uint64_t base;
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (err_offset)
		*err_offset = 0;
	if (fd < 0 || (flags & ~FERRY_INSPECT_CHECK))
		return -EINVAL;
	if (mapped_at(fd, &base))
		return fy_insp_mapped(fd, base, flags, cb, opaque, err_offset,
				      err, errlen);
	rc = insp_new(&x, fd, flags);
	if (rc) {
		fail(&f, 0, rc, "out of memory");
	} else {
		x->cb = cb;
		x->opaque = opaque;
		rc = read_stream_header(x, &f);
		while (!rc && !fy_in_at_end(&x->in))
			rc = read_record(x, &f);
		if (!rc)
			rc = finish(x, &f);
	}
	insp_free(x);
	if (rc && err && errlen)
		snprintf(err, errlen, "%s", f.msg);
	if (rc && err_offset)
		*err_offset = f.offset;
	return rc;
}
