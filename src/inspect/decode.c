// SPDX-License-Identifier: MIT
/*
 * decode.c - the bodies of control records as JSON, with the checks a
 * destination would make on them, and the snapshot index and footer
 * (docs/stream-format.md).
 */
#include "inspect/inspect.h"
#include "state/state.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

static const char *const cap_names[] = {
	"data-checksum", "multi-channel", "zero-pages", "lz4", "zstd",
	"postcopy", "local-fds", "keepalive", "device-fds",
	"postcopy-keepalive",
};
static_assert((1ull << (sizeof(cap_names) / sizeof(cap_names[0]))) - 1 ==
		      FERRY_CAP_ALL,
	      "every capability bit has a name");

/**
 * fy_insp_caps() - a member listing capability bits by name ("bit 9" for
 * one this build does not know).
 * @j: the writer.
 * @key: the member name.
 * @caps: the bits.
 */
void fy_insp_caps(struct fy_js *j, const char *key, uint64_t caps)
{
	char other[16];

	fy_js_key(j, key);
	fy_js_open(j, '[');
	for (unsigned i = 0; i < 64; i++) {
		if (!(caps & (1ull << i)))
			continue;
		if (i < sizeof(cap_names) / sizeof(cap_names[0])) {
			fy_js_cstr(j, NULL, cap_names[i]);
		} else {
			snprintf(other, sizeof(other), "bit %u", i);
			fy_js_cstr(j, NULL, other);
		}
	}
	fy_js_close(j, ']');
}

static void malformed(struct fy_insp *x, const char *what)
{
	fy_insp_problem(x, FY_P_CONTENT, -EBADMSG, "malformed %s body%s%s",
			fy_insp_rec_name(x->h.type, NULL, 0), what ? ": " : "",
			what ? what : "");
}

static void hello_json(struct fy_insp *x, struct fy_js *j)
{
	struct fy_hello m;

	if (fy_hello_decode(x->body.data, x->body.len, &m))
		return malformed(x, NULL);
	fy_js_u64(j, "version_min", m.version_min);
	fy_js_u64(j, "version_max", m.version_max);
	fy_insp_caps(j, "capabilities", m.capabilities);
	fy_js_u64(j, "capability_bits", m.capabilities);
	fy_js_cstr(j, "boot_id", m.boot_id);
	fy_js_cstr(j, "software", m.software);
	x->hello = m;
	x->have_hello = true;
	/* A capture holds the source's HELLO only, not the answer: the
	 * records after it may use postcopy when the source offered it (a
	 * source sends them only after the destination accepted the bit),
	 * as its highest version and the rule of multi-channel allow. */
	x->sm.postcopy = (fy_caps_settle(m.capabilities &
					 fy_version_caps(m.version_max)) &
			  FERRY_CAP_POSTCOPY) != 0;
	x->sm.local_fds = (m.capabilities & fy_version_caps(m.version_max) &
			   FERRY_CAP_LOCAL_FDS) != 0;
	x->sm.device_fds = x->sm.local_fds &&
			   (m.capabilities & FERRY_CAP_DEVICE_FDS) != 0;
	if (m.version_min == 0 || m.version_min > m.version_max)
		fy_insp_problem(x, FY_P_CONTENT, FERRY_EVERSION,
				"version range %u..%u is empty or starts at 0",
				m.version_min, m.version_max);
	else if (m.version_max < FY_PROTO_VERSION_MIN ||
		 m.version_min > FY_PROTO_VERSION_MAX)
		fy_insp_problem(x, FY_P_CONTENT, FERRY_EVERSION,
				"offers versions %u..%u; this inspector knows %d..%d",
				m.version_min, m.version_max,
				FY_PROTO_VERSION_MIN, FY_PROTO_VERSION_MAX);
}

static void config_json(struct fy_insp *x, struct fy_js *j)
{
	struct fy_config_msg *m = &x->cfg;

	if (fy_config_decode(x->body.data, x->body.len, m)) {
		x->have_config = false;
		return malformed(x, "the page size must be a power of two from "
				 "4 KiB to 1 GiB, at most 64 regions, each "
				 "non-empty, page aligned and not wrapping");
	}
	x->have_config = true;
	fy_js_u64(j, "page_size", m->page_size);
	fy_js_key(j, "regions");
	fy_js_open(j, '[');
	for (uint32_t i = 0; i < m->nregions; i++) {
		fy_js_key(j, NULL);
		fy_js_open(j, '{');
		fy_js_u64(j, "index", i);
		fy_js_cstr(j, "name", m->regions[i].name);
		fy_js_u64(j, "gpa", m->regions[i].gpa);
		fy_js_u64(j, "size", m->regions[i].size);
		fy_js_close(j, '}');
	}
	fy_js_close(j, ']');
}

static void pass_begin_json(struct fy_insp *x, struct fy_js *j)
{
	struct fy_pass_begin m;

	if (fy_pass_begin_decode(x->body.data, x->body.len, &m))
		return malformed(x, NULL);
	fy_js_u64(j, "pass", m.pass);
	fy_js_bool(j, "final", m.final != 0);
	fy_js_u64(j, "planned", m.planned);
	if (m.pass == 0)
		fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
				"pass number 0 (passes count from 1)");
	else if (m.final > 1)
		fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
				"final is %u (must be 0 or 1)", m.final);
}

/**
 * fy_insp_pass_end() - check PASS_END's counts against what the pass
 * carried (as the destination's barrier does).
 * @x: the inspector.
 * @e: the decoded PASS_END.
 */
void fy_insp_pass_end(struct fy_insp *x, const struct fy_pass_end *e)
{
	const struct fy_pass_sum *p = &x->pass;

	if (!x->in_pass)
		return; /* the order check reports it */
	if (e->pass != p->begin.pass)
		fy_insp_problem(x, FY_P_CONTENT, FERRY_EPROTO,
				"PASS_END of pass %u ends pass %u", e->pass,
				p->begin.pass);
	else if (e->records != p->records || e->bytes != p->bytes)
		fy_insp_problem(x, FY_P_CONTENT, FERRY_EPROTO,
				"pass %u: PASS_END counts %" PRIu64
				" records / %" PRIu64 " bytes, the stream "
				"carried %" PRIu64 " / %" PRIu64,
				e->pass, e->records, e->bytes, p->records,
				p->bytes);
}

static void pass_end_json(struct fy_insp *x, struct fy_js *j)
{
	struct fy_pass_end m;

	if (fy_pass_end_decode(x->body.data, x->body.len, &m))
		return malformed(x, NULL);
	fy_js_u64(j, "pass", m.pass);
	fy_js_u64(j, "records", m.records);
	fy_js_u64(j, "bytes", m.bytes);
	/* What each connection carried, when the source listed it. */
	fy_js_key(j, "connections");
	fy_js_open(j, '[');
	for (uint32_t i = 0; i < m.nconn; i++) {
		fy_js_open(j, '{');
		fy_js_u64(j, "index", m.conn[i].index);
		fy_js_u64(j, "records", m.conn[i].records);
		fy_js_u64(j, "bytes", m.conn[i].bytes);
		fy_js_close(j, '}');
	}
	fy_js_close(j, ']');
	fy_insp_pass_end(x, &m);
}

static void state_json(struct fy_insp *x, struct fy_js *j)
{
	char err[FY_STATE_MSG_MAX], *dump = NULL;
	int rc;

	x->state_bytes += x->body.len;
	x->state_off = x->rec_off;
	x->have_state = true;
	fy_js_u64(j, "bytes", x->body.len);
	rc = ferry_state_dump_json(x->body.data, x->body.len, &dump, err,
				   sizeof(err));
	if (rc == -ENOMEM) {
		j->err = -ENOMEM;
	} else if (rc) {
		fy_js_cstr(j, "error", err);
		fy_insp_problem(x, FY_P_CONTENT, rc, "state section: %s", err);
	} else {
		fy_js_json(j, "section", dump, strlen(dump));
	}
	free(dump);
}

static void error_json(struct fy_insp *x, struct fy_js *j)
{
	struct fy_error_msg m;

	if (fy_error_decode(x->body.data, x->body.len, &m))
		return malformed(x, NULL);
	fy_js_i64(j, "code", m.code);
	fy_js_cstr(j, "error", ferry_strerror(m.code));
	fy_js_cstr(j, "message", m.message);
}

static void join_json(struct fy_insp *x, struct fy_js *j)
{
	struct fy_join m;

	if (fy_join_decode(x->body.data, x->body.len, &m))
		return malformed(x, NULL);
	fy_js_u64(j, "session_id", m.session_id);
	fy_js_hex(j, "token", m.token, sizeof(m.token));
	fy_js_u64(j, "index", m.index);
	fy_js_u64(j, "channels", m.channels);
}

/**
 * fy_insp_index_add() - feed the snapshot index entry that a memory
 * record calls for (the index lists every memory record, in stream order).
 * @x: the inspector.
 * @m: the record's memory header.
 * @off: the stream offset of the record.
 */
void fy_insp_index_add(struct fy_insp *x, const struct fy_mem_hdr *m,
		       uint64_t off)
{
#ifdef FY_INDEX_ENTRY_SIZE
	uint8_t e[FY_INDEX_ENTRY_SIZE] = { 0 };

	fy_put_u32(e, m->region);
	fy_put_u64(e + 8, m->offset);
	fy_put_u64(e + 16, m->length);
	fy_put_u64(e + 24, off);
	XXH3_64bits_update(x->index_hash, e, sizeof(e));
#else
	(void)x;
	(void)m;
	(void)off;
#endif
}

#ifdef FY_INDEX_HDR_SIZE
static void index_json(struct fy_insp *x, struct fy_js *j)
{
	const uint8_t *p = x->body.data;
	uint64_t count, state_off;

	if (x->body.len < FY_INDEX_HDR_SIZE)
		return malformed(x, "shorter than its header");
	count = fy_get_u32(p);
	state_off = fy_get_u64(p + 8);
	fy_js_u64(j, "entries", count);
	fy_js_u64(j, "state_offset", state_off);
	x->have_index = true;
	x->index_off = x->rec_off;
	x->index_size = fy_rec_wire_size(x->h.length);
	if (x->body.len != FY_INDEX_HDR_SIZE + count * FY_INDEX_ENTRY_SIZE)
		return malformed(x, "its size does not match its count");
	if (count != x->mem_records)
		fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
				"the index lists %" PRIu64 " memory records, "
				"the snapshot holds %" PRIu64, count,
				x->mem_records);
	else if (XXH3_64bits(p + FY_INDEX_HDR_SIZE,
			     x->body.len - FY_INDEX_HDR_SIZE) !=
		 XXH3_64bits_digest(x->index_hash))
		fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
				"the index does not list the memory records "
				"where they are");
	else if (x->have_state && state_off != x->state_off)
		fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
				"the index puts STATE at offset %" PRIu64
				", it is at %" PRIu64, state_off, x->state_off);
}

static void footer_json(struct fy_insp *x, struct fy_js *j)
{
	const uint8_t *p = x->body.data;
	uint64_t at, size;

	if (x->body.len != FY_FOOTER_BODY_SIZE)
		return malformed(x, NULL);
	at = fy_get_u64(p);
	size = fy_get_u64(p + 8);
	fy_js_u64(j, "index_offset", at);
	fy_js_u64(j, "index_size", size);
	x->have_footer = true;
	if (!x->have_index)
		fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
				"a footer without an index");
	else if (at != x->index_off || size != x->index_size)
		fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
				"the footer puts the index at %" PRIu64 " (%" PRIu64
				" bytes), it is at %" PRIu64 " (%" PRIu64 " bytes)",
				at, size, x->index_off, x->index_size);
}
#endif

/* DISCARD: how many ranges and pages, each within CONFIG's regions. */
static void discard_json(struct fy_insp *x, struct fy_js *j)
{
	uint64_t pages[FY_MAX_REGIONS];
	struct fy_page_list l;
	char err[160];

	if (fy_discard_decode(x->body.data, x->body.len, &l, err, sizeof(err)))
		return malformed(x, err);
	fy_js_u64(j, "entries", l.count);
	fy_js_u64(j, "pages", l.pages);
	if (!x->have_config)
		return;
	for (uint32_t i = 0; i < x->cfg.nregions; i++)
		pages[i] = x->cfg.regions[i].size / FY_MEM_PAGE;
	if (fy_page_list_check(&l, pages, x->cfg.nregions, err, sizeof(err)))
		fy_insp_problem(x, FY_P_CONTENT, -ERANGE, "%s", err);
}

/* POSTCOPY, POSTCOPY_END and RESUME: their few numbers. */
static void postcopy_json(struct fy_insp *x, struct fy_js *j)
{
	struct fy_postcopy_end e;
	struct fy_postcopy p;
	struct fy_resume r;

	switch (x->h.type) {
	case FY_REC_POSTCOPY:
		if (fy_postcopy_decode(x->body.data, x->body.len, &p))
			return malformed(x, NULL);
		return fy_js_u64(j, "discarded", p.discarded);
	case FY_REC_POSTCOPY_END:
		if (fy_postcopy_end_decode(x->body.data, x->body.len, &e))
			return malformed(x, NULL);
		fy_js_u64(j, "records", e.records);
		return fy_js_u64(j, "bytes", e.bytes);
	default:
		if (fy_resume_decode(x->body.data, x->body.len, &r))
			return malformed(x, NULL);
		fy_js_u64(j, "session_id", r.session_id);
		fy_js_hex(j, "token", r.token, sizeof(r.token));
		return fy_js_u64(j, "generation", r.generation);
	}
}

/* DEVICE_FDS: the kinds of the devices' descriptors (the descriptors
 * themselves are not in a capture). */
static void device_fds_json(struct fy_insp *x, struct fy_js *j)
{
	uint32_t *kind = calloc(FY_DEVFDS_MAX, sizeof(*kind));
	struct fy_device_fds m = { .kind = kind };
	uint32_t sockets = 0;
	char err[160];

	if (!kind)
		return malformed(x, "out of memory");
	if (fy_device_fds_decode(x->body.data, x->body.len, &m, err,
				 sizeof(err))) {
		free(kind);
		return malformed(x, err);
	}
	for (uint32_t i = 0; i < m.count; i++)
		sockets += kind[i] == FY_DEVFD_SOCKET;
	fy_js_u64(j, "descriptors", m.count);
	fy_js_u64(j, "sockets", sockets);
	free(kind);
}

/* MEMORY_FDS: the regions' files as the source described them (the
 * descriptors themselves are not in a capture), each against CONFIG. */
static void memory_fds_json(struct fy_insp *x, struct fy_js *j)
{
	struct fy_memory_fds m;
	char err[160];

	if (fy_memory_fds_decode(x->body.data, x->body.len, &m, err,
				 sizeof(err)))
		return malformed(x, err);
	fy_js_key(j, "regions");
	fy_js_open(j, '[');
	for (uint32_t i = 0; i < m.count; i++) {
		fy_js_open(j, '{');
		fy_js_u64(j, "index", m.e[i].region);
		fy_js_u64(j, "page_size", m.e[i].page_size);
		fy_js_u64(j, "size", m.e[i].size);
		fy_js_u64(j, "fd_offset", m.e[i].fd_offset);
		fy_js_close(j, '}');
	}
	fy_js_close(j, ']');
	if (!x->have_config)
		return;
	if (m.count != x->cfg.nregions)
		return fy_insp_problem(x, FY_P_CONTENT, -ERANGE,
				       "%u files for %u regions", m.count,
				       x->cfg.nregions);
	for (uint32_t i = 0; i < m.count; i++)
		if (m.e[i].region != i || m.e[i].size != x->cfg.regions[i].size)
			return fy_insp_problem(x, FY_P_CONTENT, -ERANGE,
					       "entry %u (region %u, %" PRIu64 " bytes) does not match CONFIG's region %u (%" PRIu64 " bytes)",
					       i, m.e[i].region, m.e[i].size, i,
					       x->cfg.regions[i].size);
}

static void empty_json(struct fy_insp *x)
{
	if (x->body.len)
		fy_insp_problem(x, FY_P_CONTENT, -EBADMSG,
				"a %u-byte body; %s has none", x->h.length,
				fy_insp_rec_name(x->h.type, NULL, 0));
}

static void other_json(struct fy_insp *x, struct fy_js *j)
{
	switch (x->h.type) {
#ifdef FY_INDEX_HDR_SIZE
	case FY_REC_INDEX:
		return index_json(x, j);
	case FY_REC_FOOTER:
		return footer_json(x, j);
#endif
	case FY_REC_OK:
		return fy_js_u64(j, "bytes", x->body.len);
	default:
		break;
	}
	if (fy_rec_optional(x->h.type)) {
		x->skipped++;
		fy_js_bool(j, "skipped", true);
	} else {
		fy_js_bool(j, "unknown", true);
	}
}

/**
 * fy_insp_control() - read a non-memory record's body and describe it.
 * @x: the inspector, its record header read.
 *
 * The body is read whole (at most FY_REC_MAX_BODY bytes) and checksummed.
 *
 * Return: 0, -ENOMEM, -EBADMSG (the stream ends inside the body) or a
 * read error.
 */
int fy_insp_control(struct fy_insp *x)
{
	struct fy_js *j = &x->js;
	size_t covered = x->h.length;
	int rc;

	fy_buf_reset(&x->body);
	if (fy_buf_reserve(&x->body, x->h.length))
		return -ENOMEM;
	rc = fy_insp_body(x, x->body.data, x->h.length, &covered);
	if (rc)
		return rc;
	x->body.len = x->h.length;
	fy_js_open(j, '{');
	switch (x->h.type) {
	case FY_REC_HELLO: hello_json(x, j); break;
	case FY_REC_CONFIG: config_json(x, j); break;
	case FY_REC_PASS_BEGIN: pass_begin_json(x, j); break;
	case FY_REC_PASS_END: pass_end_json(x, j); break;
	case FY_REC_STATE: state_json(x, j); break;
	case FY_REC_ABORT:
	case FY_REC_ERROR: error_json(x, j); break;
	case FY_REC_JOIN: join_json(x, j); break;
	case FY_REC_SWITCHOVER:
	case FY_REC_RELEASED: empty_json(x); break;
	case FY_REC_DISCARD: discard_json(x, j); break;
	case FY_REC_POSTCOPY:
	case FY_REC_POSTCOPY_END:
	case FY_REC_RESUME: postcopy_json(x, j); break;
	case FY_REC_MEMORY_FDS: memory_fds_json(x, j); break;
	case FY_REC_DEVICE_FDS: device_fds_json(x, j); break;
	default: other_json(x, j); break;
	}
	fy_js_close(j, '}');
	return j->err;
}
