/* SPDX-License-Identifier: MIT */
/*
 * writer.c - the source-side visitor modes.
 *
 * Schema capture runs a type's visit function on a zeroed scratch object
 * and records every call as a node. Arrays get a count of 1 so that their
 * element is visited, and thereby described, exactly once, even for a
 * variable array that is empty in every real object.
 *
 * The writer runs the same function on the real object and appends the
 * values, in visit order, with no names or tags: each call is checked
 * against the captured schema node at the same position, so the values are
 * exactly what the schema record says they are. A visit function whose
 * fields depend on the object's contents is caught here, not on the
 * destination.
 */
#include "state/visitor.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- schema capture ---- */

/**
 * fy_cap_field() - schema mode: record the call @fv as a node of the open
 * struct (or as the element of the open array).
 * @v: the visitor.
 * @fv: the call.
 *
 * Return: 0 or the visitor's error.
 */
int fy_cap_field(struct ferry_visitor *v, struct fy_fval *fv)
{
	struct fy_frame *f = &v->f[v->depth], *nf;
	struct fy_snode *n;

	if (!fv->elem && fy_snode_find(f->build, fv->name))
		return fy_vfail(v, -EINVAL, fv, NULL,
				"field visited twice (names must be unique)");
	if (++v->schema->nnodes > FY_STATE_MAX_NODES)
		return fy_vfail(v, -EINVAL, fv, NULL,
				"more than %d schema nodes",
				FY_STATE_MAX_NODES);
	n = fy_snode_add(f->build);
	if (!n)
		return fy_vfail(v, -ENOMEM, fv, NULL, "out of memory");
	if (!fv->elem)
		memcpy(n->name, fv->name, strlen(fv->name) + 1);
	n->kind = fv->kind;
	n->flags = fv->flags;
	n->def = fv->def;
	n->size = fv->size;
	if (fv->kind == FY_K_STRING && fv->sdef[0]) {
		n->sdef = strdup(fv->sdef);
		if (!n->sdef)
			return fy_vfail(v, -ENOMEM, fv, NULL, "out of memory");
	}
	if (fv->kind != FY_K_STRUCT && fv->kind != FY_K_ARRAY)
		return 0;
	nf = fy_frame_push(v, fv);
	if (!nf)
		return v->err;
	nf->build = n;
	if (fv->kind == FY_K_ARRAY) {
		/* One sample element describes them all. */
		nf->count = 1;
		*fv->lenp = 1;
	}
	return 0;
}

/**
 * fy_cap_end() - schema mode: check the innermost open struct or array
 * before it closes (the caller pops it).
 * @v: the visitor.
 *
 * Return: 0 or the visitor's error.
 */
int fy_cap_end(struct ferry_visitor *v)
{
	struct fy_frame *f = &v->f[v->depth];

	if (f->kind == FY_K_ARRAY && f->index == 0)
		return fy_vfail(v, -EINVAL, NULL, NULL,
				"no element visited: loop over the count "
				"that array_begin gave");
	if (f->kind == FY_K_STRUCT && f->build->nkids == 0)
		return fy_vfail(v, -EINVAL, NULL, NULL,
				"struct without fields");
	return 0;
}

/**
 * fy_schema_capture() - describe a device type by running its visit
 * function on a zeroed object of t->size bytes.
 * @t: the type.
 * @out: receives the finished schema; free with fy_schema_free().
 * @err: receives a message naming the type and field on failure.
 * @errlen: size of @err.
 *
 * Return: 0, -EINVAL (a bad type or a visit function breaking the rules),
 * -ENOMEM, or the visit function's own error.
 */
int fy_schema_capture(const struct ferry_device_type *t,
		      struct fy_schema **out, char *err, size_t errlen)
{
	struct ferry_visitor v;
	struct fy_schema *s;
	void *scratch;
	int rc;

	*out = NULL;
	rc = fy_device_type_check(t, err, errlen);
	if (rc)
		return rc;
	scratch = calloc(1, t->size);
	s = fy_schema_new(t->name, t->version);
	if (!scratch || !s) {
		free(scratch);
		fy_schema_free(s);
		fy_state_msg(err, errlen, "%s: out of memory", t->name);
		return -ENOMEM;
	}
	fy_visitor_init(&v, FY_V_SCHEMA, t->name);
	v.schema = s;
	v.f[0].build = &s->root;
	rc = fy_visitor_run(&v, t, scratch, err, errlen);
	if (!rc)
		rc = fy_schema_finish(s, err, errlen);
	fy_visitor_fini(&v);
	free(scratch);
	if (rc) {
		fy_schema_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

/* ---- writer ---- */

static int wr_put(struct ferry_visitor *v, const struct fy_fval *fv,
		  const void *p, size_t n)
{
	if (fy_buf_put(v->out, p, n))
		return fy_vfail(v, -ENOMEM, fv, NULL, "out of memory");
	return 0;
}

static int wr_u32(struct ferry_visitor *v, const struct fy_fval *fv,
		  uint32_t x)
{
	uint8_t b[4];

	fy_put_u32(b, x);
	return wr_put(v, fv, b, 4);
}

static int wr_scalar(struct ferry_visitor *v, const struct fy_fval *fv)
{
	unsigned w = fy_kind_width(fv->kind);
	uint64_t x;
	uint8_t b[8];

	if (fv->kind == FY_K_BOOL)
		x = *(const bool *)fv->ptr ? 1 : 0;
	else
		x = fy_int_load(fv->ptr, w);
	fy_put_u64(b, x); /* little-endian: the first w bytes are the value */
	return wr_put(v, fv, b, w);
}

static int wr_sized(struct ferry_visitor *v, const struct fy_fval *fv)
{
	const void *data = fv->ptr;
	uint32_t len;

	if (fv->kind == FY_K_STRING) {
		len = (uint32_t)strnlen(fv->ptr, (size_t)fv->size + 1);
		if (len > fv->size)
			return fy_vfail(v, -EINVAL, fv, NULL,
					"string not terminated within its "
					"capacity");
	} else if (fv->flags & FY_SF_FIXED) {
		return wr_put(v, fv, fv->ptr, fv->size);
	} else {
		len = *fv->lenp;
		if (len > fv->size)
			return fy_vfail(v, -EINVAL, fv, NULL,
					"length %" PRIu32 " exceeds the "
					"capacity %" PRIu32, len, fv->size);
	}
	if (fv->alloc) {
		data = *(void *const *)fv->ptr;
		if (len && !data)
			return fy_vfail(v, -EINVAL, fv, NULL,
					"length %" PRIu32 " but no buffer",
					len);
	}
	if (wr_u32(v, fv, len))
		return v->err;
	return wr_put(v, fv, data, len);
}

static int wr_open(struct ferry_visitor *v, const struct fy_fval *fv,
		   const struct fy_snode *n)
{
	struct fy_frame *nf;
	uint32_t count = 0;

	if (fv->kind == FY_K_ARRAY && (fv->flags & FY_SF_FIXED)) {
		count = fv->size;
		*fv->lenp = count;
	} else if (fv->kind == FY_K_ARRAY) {
		count = *fv->lenp;
		if (count > fv->size)
			return fy_vfail(v, -EINVAL, fv, NULL,
					"count %" PRIu32 " exceeds the maximum "
					"%" PRIu32, count, fv->size);
		if (wr_u32(v, fv, count))
			return v->err;
	}
	nf = fy_frame_push(v, fv);
	if (!nf)
		return v->err;
	nf->node = n;
	nf->count = count;
	return 0;
}

/* The call must be the one the schema capture saw at this position. */
static const struct fy_snode *wr_expect(struct ferry_visitor *v,
					const struct fy_fval *fv)
{
	struct fy_frame *f = &v->f[v->depth];
	const struct fy_snode *n;

	if (fv->elem) {
		n = &f->node->kids[0];
	} else if (f->index < f->node->nkids &&
		   !strcmp(f->node->kids[f->index].name, fv->name)) {
		n = &f->node->kids[f->index++];
	} else {
		fy_vfail(v, -EINVAL, fv, NULL,
			 "visited where the schema capture saw %s%s%s: a "
			 "visit function must not depend on the object",
			 f->index < f->node->nkids ? "'" : "the end",
			 f->index < f->node->nkids ?
				 f->node->kids[f->index].name : "",
			 f->index < f->node->nkids ? "'" : "");
		return NULL;
	}
	if (n->kind != fv->kind || n->flags != fv->flags ||
	    n->size != fv->size ||
	    (fy_kind_width(n->kind) && n->def != fv->def) ||
	    (n->kind == FY_K_STRING && strcmp(n->sdef ? n->sdef : "",
					      fv->sdef))) {
		fy_vfail(v, -EINVAL, fv, NULL,
			 "type, size, flag or default differs from the schema "
			 "capture: they must not depend on the object");
		return NULL;
	}
	return n;
}

/**
 * fy_wr_field() - writer mode: append the value of the call @fv.
 * @v: the visitor.
 * @fv: the call.
 *
 * Return: 0 or the visitor's error.
 */
int fy_wr_field(struct ferry_visitor *v, struct fy_fval *fv)
{
	const struct fy_snode *n = wr_expect(v, fv);

	if (!n)
		return v->err;
	switch (fv->kind) {
	case FY_K_STRING:
	case FY_K_BYTES:
		return wr_sized(v, fv);
	case FY_K_STRUCT:
	case FY_K_ARRAY:
		return wr_open(v, fv, n);
	}
	return wr_scalar(v, fv);
}

/**
 * fy_wr_end() - writer mode: check that the innermost open struct (or the
 * device) or array was visited completely. The caller pops it.
 * @v: the visitor.
 *
 * Return: 0 or the visitor's error.
 */
int fy_wr_end(struct ferry_visitor *v)
{
	struct fy_frame *f = &v->f[v->depth];

	if (f->kind == FY_K_ARRAY && f->index != f->count)
		return fy_vfail(v, -EINVAL, NULL, NULL,
				"%" PRIu32 " of %" PRIu32 " elements visited",
				f->index, f->count);
	if (f->kind == FY_K_STRUCT && f->index != f->node->nkids)
		return fy_vfail(v, -EINVAL, NULL, f->node->kids[f->index].name,
				"not visited, but the schema capture saw it: "
				"a visit function must not depend on the "
				"object");
	return 0;
}

/**
 * fy_visit_write() - append the values of @dev, as described by @s.
 * @t: the device type.
 * @s: its schema, captured by fy_schema_capture().
 * @dev: the object; only read.
 * @label: the instance name, for messages.
 * @out: receives the values; cut back to its length on failure.
 * @err: receives a message naming the device and field on failure.
 * @errlen: size of @err.
 *
 * Return: 0, -EINVAL, -ENOMEM, or the visit function's own error.
 */
int fy_visit_write(const struct ferry_device_type *t,
		   const struct fy_schema *s, void *dev, const char *label,
		   struct fy_buf *out, char *err, size_t errlen)
{
	struct ferry_visitor v;
	size_t start = out->len;
	int rc;

	fy_visitor_init(&v, FY_V_WRITE, label);
	v.follow = s;
	v.out = out;
	v.f[0].node = &s->root;
	rc = fy_visitor_run(&v, t, dev, err, errlen);
	fy_visitor_fini(&v);
	if (rc)
		out->len = start;
	return rc;
}
