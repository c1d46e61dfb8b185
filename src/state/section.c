/* SPDX-License-Identifier: MIT */
/*
 * section.c - the records of a device-state section: saving instances
 * (with their type's schema once), closing the section, and walking one.
 *
 * The walker is the single parser of sections: it checks the framing of
 * every record, that schemas are valid, unique and come before the devices
 * that use them, that every device's values match its schema exactly, that
 * instance names are unique, and that the section ends with a STATE_END
 * whose counts agree. The loader (ferry_state_load) and the dumper
 * (ferry_state_dump_json) are callbacks of the walker, so `ferry inspect`
 * accepts exactly what a destination would.
 */
#include "state/state.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The public buffer type is the wire layer's growable buffer: the engine
 * defines struct ferry_buf as exactly this wrapper (src/migrate/engine.h;
 * wire.h documents the relation). It is repeated here, in this one file,
 * because the state layer sits below the engine and must not include its
 * headers. Both definitions must stay identical.
 */
struct ferry_buf {
	struct fy_buf b;
};

/* ---- buffers of the VMM's own ---- */

FERRY_API struct ferry_buf *ferry_buf_new(void)
{
	struct ferry_buf *b = malloc(sizeof(*b));

	if (b)
		fy_buf_init(&b->b);
	return b;
}

FERRY_API void ferry_buf_free(struct ferry_buf *buf)
{
	if (!buf)
		return;
	fy_buf_free(&buf->b);
	free(buf);
}

FERRY_API const void *ferry_buf_data(const struct ferry_buf *buf,
				     size_t *len)
{
	if (len)
		*len = buf ? buf->b.len : 0;
	return buf && buf->b.len ? buf->b.data : NULL;
}

/* ---- saving ---- */

/* What a section under construction already holds. */
struct scan {
	bool have_schema; /* an identical schema for the type */
	bool conflict;	  /* a different schema under the same name */
	bool dup;	  /* the instance name is taken */
	bool ended;	  /* STATE_END is there */
	bool bad;	  /* bytes that are not records */
	uint32_t nschemas;
	uint32_t ndevices;
};

/* Look at the records of @b without checksumming them (they are ours). */
static void section_scan(const struct fy_buf *b, const char *type,
			 const char *instance, const struct fy_buf *schema,
			 struct scan *r)
{
	char name[FY_STATE_NAME_MAX];
	size_t off = 0;

	memset(r, 0, sizeof(*r));
	while (off < b->len && !r->bad) {
		struct fy_rec_hdr h;
		struct fy_cur c;

		if (b->len - off < FY_REC_HDR_SIZE ||
		    fy_rec_hdr_decode(b->data + off, &h) ||
		    fy_rec_wire_size(h.length) > b->len - off) {
			r->bad = true;
			break;
		}
		fy_cur_init(&c, b->data + off + FY_REC_HDR_SIZE, h.length);
		if (h.type == FY_REC_STATE_SCHEMA) {
			r->nschemas++;
			if (!fy_cur_str(&c, name, sizeof(name)) &&
			    !strcmp(name, type ? type : "")) {
				bool same = schema && h.length == schema->len &&
					    !memcmp(c.p, schema->data,
						    schema->len);

				r->have_schema |= same;
				r->conflict |= !same;
			}
		} else if (h.type == FY_REC_STATE_DEVICE) {
			r->ndevices++;
			if (!fy_cur_str(&c, name, sizeof(name)) &&
			    !fy_cur_str(&c, name, sizeof(name)) &&
			    !strcmp(name, instance ? instance : ""))
				r->dup = true;
		} else if (h.type == FY_REC_STATE_END) {
			r->ended = true;
		}
		off += fy_rec_wire_size(h.length);
	}
}

static int save_check(const struct scan *r, const char *type,
		      const char *instance, char *err, size_t errlen)
{
	if (r->bad || r->ended) {
		fy_state_msg(err, errlen, "%s: the buffer %s", instance,
			     r->bad ? "holds bytes that are not state records"
				    : "is a section already ended");
		return -EINVAL;
	}
	if (r->dup) {
		fy_state_msg(err, errlen, "%s: instance saved twice", instance);
		return -EINVAL;
	}
	if (r->conflict) {
		fy_state_msg(err, errlen, "%s: type name '%s' already used with "
			     "another schema in this section", instance, type);
		return -EINVAL;
	}
	if (r->ndevices >= FY_STATE_MAX_DEVICES ||
	    (!r->have_schema && r->nschemas >= FY_STATE_MAX_TYPES)) {
		fy_state_msg(err, errlen, "%s: too many devices or types in "
			     "one section", instance);
		return -EINVAL;
	}
	return 0;
}

/* DEVICE body: str type, str instance, u32 flags, then the values. */
static int device_body(struct fy_buf *db, const struct ferry_device_type *t,
		       const struct fy_schema *s, const char *instance,
		       void *dev, char *err, size_t errlen)
{
	uint32_t flags = (t->flags & FERRY_DEVICE_OPTIONAL) ? FY_DEV_OPTIONAL
							     : 0;
	int rc = fy_buf_put_str(db, t->name);

	if (!rc)
		rc = fy_buf_put_str(db, instance);
	if (!rc)
		rc = fy_buf_put_u32(db, flags);
	if (rc) {
		fy_state_msg(err, errlen, "%s: out of memory", instance);
		return rc;
	}
	return fy_visit_write(t, s, dev, instance, db, err, errlen);
}

/**
 * fy_state_save() - append an instance (and its type's schema, once per
 * section) to the section in @out.
 * @out: the section under construction; holds only state records.
 * @t: the device type.
 * @instance: the instance name, unique in the section.
 * @dev: the object; only read.
 * @err: receives a message on failure (may be NULL).
 * @errlen: size of @err.
 *
 * Nothing is appended unless everything succeeded.
 *
 * Return: 0, -EINVAL, -ENOMEM, -EMSGSIZE (a record over 64 MiB), or the
 * visit function's error.
 */
int fy_state_save(struct fy_buf *out, const struct ferry_device_type *t,
		  const char *instance, void *dev, char *err, size_t errlen)
{
	struct fy_schema *s = NULL;
	struct fy_buf sb, db;
	struct scan r = { .bad = false };
	size_t start;
	int rc;

	if (!out || !dev || !fy_state_name_ok(instance)) {
		fy_state_msg(err, errlen, "bad buffer, object or instance name "
			     "([A-Za-z0-9_.:-], < 64 bytes)");
		return -EINVAL;
	}
	fy_buf_init(&sb);
	fy_buf_init(&db);
	start = out->len;
	rc = fy_schema_capture(t, &s, err, errlen);
	if (!rc && fy_schema_encode(s, &sb))
		rc = -ENOMEM;
	if (!rc) {
		section_scan(out, t->name, instance, &sb, &r);
		rc = save_check(&r, t->name, instance, err, errlen);
	}
	if (!rc)
		rc = device_body(&db, t, s, instance, dev, err, errlen);
	if (!rc && !r.have_schema)
		rc = fy_rec_encode(out, FY_REC_STATE_SCHEMA, 0, 0, sb.data,
				   sb.len);
	if (!rc)
		rc = fy_rec_encode(out, FY_REC_STATE_DEVICE, 0, 0, db.data,
				   db.len);
	if (rc == -ENOMEM || rc == -EMSGSIZE)
		fy_state_msg(err, errlen, "%s: %s", instance,
			     rc == -ENOMEM ? "out of memory"
					   : "state larger than a record");
	if (rc)
		out->len = start;
	fy_schema_free(s);
	fy_buf_free(&sb);
	fy_buf_free(&db);
	return rc;
}

/**
 * fy_state_end() - close the section in @out with STATE_END.
 * @out: the section.
 * @err: receives a message on failure (may be NULL).
 * @errlen: size of @err.
 *
 * END body: u32 number of SCHEMA records, u32 number of DEVICE records.
 *
 * Return: 0, -EINVAL (not a section, or already ended), -ENOMEM.
 */
int fy_state_end(struct fy_buf *out, char *err, size_t errlen)
{
	uint8_t body[8];
	struct scan r;

	if (!out)
		return -EINVAL;
	section_scan(out, NULL, NULL, NULL, &r);
	if (r.bad || r.ended) {
		fy_state_msg(err, errlen, "the buffer %s",
			     r.bad ? "holds bytes that are not state records"
				   : "is a section already ended");
		return -EINVAL;
	}
	fy_put_u32(body, r.nschemas);
	fy_put_u32(body + 4, r.ndevices);
	return fy_rec_encode(out, FY_REC_STATE_END, 0, 0, body, sizeof(body));
}

/* ---- walking ---- */

struct walk {
	const struct fy_state_walk_ops *ops;
	struct fy_schema *schemas[FY_STATE_MAX_TYPES];
	uint32_t nschemas;
	uint32_t nnodes;
	/* Instance names, to refuse duplicates; bounded by the number of
	 * device records, hence by the section's length. */
	char (*names)[FY_STATE_NAME_MAX];
	uint32_t ndevices;
	uint32_t capnames;
	char *err;
	size_t errlen;
};

static const struct fy_schema *walk_find(const struct walk *w,
					 const char *type)
{
	for (uint32_t i = 0; i < w->nschemas; i++)
		if (!strcmp(w->schemas[i]->type, type))
			return w->schemas[i];
	return NULL;
}

static int walk_schema(struct walk *w, const uint8_t *p, size_t n)
{
	struct fy_schema *s;
	int rc;

	if (w->nschemas >= FY_STATE_MAX_TYPES) {
		fy_state_msg(w->err, w->errlen, "more than %d schemas",
			     FY_STATE_MAX_TYPES);
		return -EBADMSG;
	}
	rc = fy_schema_decode(p, n, &s, w->err, w->errlen);
	if (rc)
		return rc;
	if (walk_find(w, s->type) ||
	    w->nnodes + s->nnodes > FY_STATE_MAX_SECTION_NODES) {
		fy_state_msg(w->err, w->errlen, "schema '%s': %s", s->type,
			     walk_find(w, s->type) ? "defined twice"
						   : "too many schema nodes");
		fy_schema_free(s);
		return -EBADMSG;
	}
	w->schemas[w->nschemas++] = s;
	w->nnodes += s->nnodes;
	if (w->ops->schema)
		return w->ops->schema(w->ops->ctx, s, w->err, w->errlen);
	return 0;
}

static int walk_name(struct walk *w, const char *instance)
{
	if (w->ndevices >= FY_STATE_MAX_DEVICES) {
		fy_state_msg(w->err, w->errlen, "more than %d devices",
			     FY_STATE_MAX_DEVICES);
		return -EBADMSG;
	}
	if (w->ndevices == w->capnames) {
		uint32_t cap = w->capnames ? w->capnames * 2 : 16;
		void *p = realloc(w->names, cap * sizeof(*w->names));

		if (!p) {
			fy_state_msg(w->err, w->errlen, "out of memory");
			return -ENOMEM;
		}
		w->names = p;
		w->capnames = cap;
	}
	memcpy(w->names[w->ndevices++], instance, FY_STATE_NAME_MAX);
	return 0;
}

static int walk_device(struct walk *w, const uint8_t *p, size_t n)
{
	char type[FY_STATE_NAME_MAX], inst[FY_STATE_NAME_MAX];
	const struct fy_schema *s;
	struct fy_cur c;
	size_t vals;
	uint32_t flags;
	int rc;

	fy_cur_init(&c, p, n);
	if (fy_cur_str(&c, type, sizeof(type)) ||
	    fy_cur_str(&c, inst, sizeof(inst)) || fy_cur_u32(&c, &flags) ||
	    !fy_state_name_ok(type) || !fy_state_name_ok(inst) ||
	    (flags & ~FY_DEV_OPTIONAL)) {
		fy_state_msg(w->err, w->errlen, "malformed device record");
		return -EBADMSG;
	}
	s = walk_find(w, type);
	if (!s) {
		fy_state_msg(w->err, w->errlen, "device %s: type '%s' has no "
			     "schema before it", inst, type);
		return -EBADMSG;
	}
	vals = c.off;
	if (fy_value_skip(&s->root, &c, 0) || fy_cur_done(&c)) {
		fy_state_msg(w->err, w->errlen, "device %s: values do not "
			     "match the schema of %s v%" PRIu32, inst, type,
			     s->version);
		return -EBADMSG;
	}
	rc = walk_name(w, inst);
	if (!rc && w->ops->device)
		rc = w->ops->device(w->ops->ctx, s, inst, flags, p + vals,
				    n - vals, w->err, w->errlen);
	return rc;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static int walk_end(struct walk *w, const uint8_t *p, size_t n)
{
	if (n != 8 || fy_get_u32(p) != w->nschemas ||
	    fy_get_u32(p + 4) != w->ndevices) {
		fy_state_msg(w->err, w->errlen, "STATE_END does not match the "
			     "section (%" PRIu32 " schemas, %" PRIu32
			     " devices)", w->nschemas, w->ndevices);
		return -EBADMSG;
	}
	if (w->ndevices > 1)
		qsort(w->names, w->ndevices, sizeof(*w->names), name_cmp);
	for (uint32_t i = 1; i < w->ndevices; i++) {
		if (!strcmp(w->names[i - 1], w->names[i])) {
			fy_state_msg(w->err, w->errlen, "device %s appears "
				     "twice", w->names[i]);
			return -EBADMSG;
		}
	}
	return 0;
}

static int walk_record(struct walk *w, const struct fy_rec_hdr *h,
		       const uint8_t *body, bool *ended)
{
	switch (h->type) {
	case FY_REC_STATE_SCHEMA:
		return walk_schema(w, body, h->length);
	case FY_REC_STATE_DEVICE:
		return walk_device(w, body, h->length);
	case FY_REC_STATE_END:
		*ended = true;
		return walk_end(w, body, h->length);
	}
	if (fy_rec_optional(h->type)) {
		if (w->ops->skipped)
			return w->ops->skipped(w->ops->ctx, h->type, h->length,
					       w->err, w->errlen);
		return 0;
	}
	fy_state_msg(w->err, w->errlen, "unknown mandatory record 0x%04" PRIx32
		     " in the device-state section", h->type);
	return FERRY_EUNKNOWN;
}

static int walk_frame(struct walk *w, const uint8_t *p, size_t len,
		      size_t off, struct fy_rec_hdr *h, const uint8_t **body,
		      size_t *used)
{
	int rc = fy_rec_decode(p + off, len - off, h, body, used);

	if (rc) {
		fy_state_msg(w->err, w->errlen, "record at offset %zu: %s", off,
			     rc == -EAGAIN ? "truncated"
			     : rc == FERRY_ECHECKSUM ? "checksum mismatch"
						     : "malformed header");
		return rc == -EAGAIN ? -EBADMSG : rc;
	}
	if (h->seq || h->flags) {
		fy_state_msg(w->err, w->errlen, "record at offset %zu: seq and "
			     "flags must be 0 in a state section", off);
		return -EBADMSG;
	}
	return 0;
}

/**
 * fy_state_walk() - check a whole section and report its records.
 * @data: the section.
 * @len: its length.
 * @ops: callbacks (each optional) and their context.
 * @err: receives a message on failure (may be NULL).
 * @errlen: size of @err.
 *
 * Callbacks see a schema once it is valid, and a device once its values
 * are known to match its schema; a callback's error stops the walk.
 *
 * Return: 0, -EBADMSG, -EMSGSIZE, FERRY_ECHECKSUM, FERRY_EUNKNOWN (unknown
 * mandatory record), -ENOMEM, or a callback's error.
 */
int fy_state_walk(const void *data, size_t len,
		  const struct fy_state_walk_ops *ops, char *err,
		  size_t errlen)
{
	static const struct fy_state_walk_ops none;
	struct walk *w = calloc(1, sizeof(*w));
	const uint8_t *p = data;
	bool ended = false;
	size_t off = 0;
	int rc = 0;

	if (!w)
		return -ENOMEM;
	w->ops = ops ? ops : &none;
	w->err = err;
	w->errlen = errlen;
	if (!data && len)
		rc = -EINVAL;
	while (!rc && off < len) {
		struct fy_rec_hdr h;
		const uint8_t *body;
		size_t used;

		if (ended) {
			fy_state_msg(err, errlen, "bytes after STATE_END at "
				     "offset %zu", off);
			rc = -EBADMSG;
			break;
		}
		rc = walk_frame(w, p, len, off, &h, &body, &used);
		if (!rc)
			rc = walk_record(w, &h, body, &ended);
		off += used;
	}
	if (!rc && !ended) {
		fy_state_msg(err, errlen, "no STATE_END record: the section is "
			     "truncated");
		rc = -EBADMSG;
	}
	for (uint32_t i = 0; i < w->nschemas; i++)
		fy_schema_free(w->schemas[i]);
	free(w->names);
	free(w);
	return rc;
}

/* ---- loading ---- */

struct load {
	const struct ferry_state_binding *b;
	size_t n;
	uint8_t *loaded;
	struct fy_schema **local; /* captured lazily, per binding */
};

static int bindings_check(const struct ferry_state_binding *b, size_t n,
			  char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		int rc = fy_device_type_check(b[i].type, err, errlen);

		if (rc)
			return rc;
		if (!b[i].dev || !fy_state_name_ok(b[i].instance) ||
		    (b[i].flags & ~FERRY_BINDING_OPTIONAL)) {
			fy_state_msg(err, errlen, "binding %zu: bad object, "
				     "instance name or flags", i);
			return -EINVAL;
		}
		for (size_t j = 0; j < i; j++) {
			if (!strcmp(b[j].instance, b[i].instance)) {
				fy_state_msg(err, errlen, "instance %s bound "
					     "twice", b[i].instance);
				return -EINVAL;
			}
		}
	}
	return 0;
}

/* Add which versions met to a device's error message. */
static void load_note(char *err, size_t errlen, const struct fy_schema *s,
		      const struct ferry_device_type *t)
{
	char msg[FY_STATE_MSG_MAX];

	if (!err || !errlen)
		return;
	snprintf(msg, sizeof(msg), "%s", err);
	snprintf(err, errlen, "%s (type %s: stream v%" PRIu32 ", here v%"
		 PRIu32 ")", msg, s->type, s->version, t->version);
}

static int load_device(void *ctx, const struct fy_schema *s,
		       const char *instance, uint32_t flags,
		       const uint8_t *vals, size_t n, char *err,
		       size_t errlen)
{
	struct load *l = ctx;
	const struct ferry_device_type *t;
	size_t i;
	int rc;

	for (i = 0; i < l->n; i++)
		if (!strcmp(l->b[i].instance, instance))
			break;
	if (i == l->n) {
		if (flags & FY_DEV_OPTIONAL)
			return 0;
		fy_state_msg(err, errlen, "device %s (type %s v%" PRIu32 ") is "
			     "in the stream but not known here", instance,
			     s->type, s->version);
		return FERRY_EUNKNOWN;
	}
	t = l->b[i].type;
	if (l->loaded[i]) {
		fy_state_msg(err, errlen, "device %s appears twice", instance);
		return -EBADMSG;
	}
	if (strcmp(t->name, s->type)) {
		fy_state_msg(err, errlen, "device %s is a %s in the stream but "
			     "a %s here", instance, s->type, t->name);
		return FERRY_EMISMATCH;
	}
	rc = l->local[i] ? 0 : fy_schema_capture(t, &l->local[i], err, errlen);
	if (!rc)
		rc = fy_schema_compat(s, l->local[i], instance, err, errlen);
	if (!rc)
		rc = fy_visit_read(t, s, l->b[i].dev, instance, vals, n, err,
				   errlen);
	if (rc) {
		load_note(err, errlen, s, t);
		return rc;
	}
	l->loaded[i] = 1;
	return 0;
}

static int load_missing(const struct load *l, char *err, size_t errlen)
{
	for (size_t i = 0; i < l->n; i++) {
		if (!l->loaded[i] &&
		    !(l->b[i].flags & FERRY_BINDING_OPTIONAL)) {
			fy_state_msg(err, errlen, "device %s (type %s) is "
				     "missing from the stream",
				     l->b[i].instance, l->b[i].type->name);
			return FERRY_EMISMATCH;
		}
	}
	return 0;
}

FERRY_API int ferry_state_load(const void *data, size_t len,
			       const struct ferry_state_binding *bindings,
			       size_t n, char *err, size_t errlen)
{
	struct load l = { bindings, n, NULL, NULL };
	struct fy_state_walk_ops ops = { .ctx = &l, .device = load_device };
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (n && !bindings)
		return -EINVAL;
	rc = bindings_check(bindings, n, err, errlen);
	if (rc)
		return rc;
	l.loaded = calloc(n ? n : 1, 1);
	l.local = calloc(n ? n : 1, sizeof(*l.local));
	if (!l.loaded || !l.local)
		rc = -ENOMEM;
	if (!rc)
		rc = fy_state_walk(data, len, &ops, err, errlen);
	if (!rc)
		rc = load_missing(&l, err, errlen);
	for (size_t i = 0; l.local && i < n; i++)
		fy_schema_free(l.local[i]);
	free(l.local);
	free(l.loaded);
	return rc;
}

/* ---- public saving ---- */

FERRY_API int ferry_state_save(struct ferry_buf *out,
			       const struct ferry_device_type *type,
			       const char *instance, void *dev, char *err,
			       size_t errlen)
{
	if (err && errlen)
		err[0] = '\0';
	if (!out)
		return -EINVAL;
	return fy_state_save(&out->b, type, instance, dev, err, errlen);
}

FERRY_API int ferry_state_end(struct ferry_buf *out)
{
	return out ? fy_state_end(&out->b, NULL, 0) : -EINVAL;
}
