/* SPDX-License-Identifier: MIT */
/*
 * reader.c - the destination-side visitor mode: load values written with
 * the SENDER's schema into an object described by the LOCAL visit function.
 *
 * The local visit function drives: each call names a field, and the reader
 * looks the name up among the sender's fields of the same struct. When a
 * struct opens, the reader walks the sender's encoded values once to learn
 * where each field's value starts (offs[]), so lookups are random access
 * whatever order either side declares its fields in. Then:
 *
 *   field in the stream, same type  -> its value (bounded by the local
 *                                      capacity: -ERANGE, never overflow)
 *   field in the stream, other type -> FERRY_EMISMATCH
 *   field not in the stream         -> the local default; a struct or
 *                                      array opens in "defaults" mode
 *   sender field never visited      -> ignored if skippable, else
 *                                      FERRY_EUNKNOWN when its struct closes
 *
 * The data are hostile: every value is re-checked here even though the
 * section walker validated the encoding, since this code writes into the
 * VMM's object.
 */
#include "state/visitor.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static int rd_bad(struct ferry_visitor *v, const struct fy_fval *fv)
{
	return fy_vfail(v, -EBADMSG, fv, NULL, "malformed value in the stream");
}

/* Find where each of the sender's fields of struct frame @f starts. */
static int rd_index(struct ferry_visitor *v, struct fy_frame *f,
		    size_t start)
{
	unsigned d = v->depth;
	uint32_t need = f->node->nkids + 1;
	struct fy_cur c;

	if (v->ocap[d] < need) {
		size_t *o = realloc(v->offs[d], need * sizeof(*o));
		uint8_t *u;

		if (o)
			v->offs[d] = o;
		u = o ? realloc(v->used[d], need) : NULL;
		if (!u)
			return fy_vfail(v, -ENOMEM, NULL, NULL,
					"out of memory");
		v->used[d] = u;
		v->ocap[d] = need;
	}
	memset(v->used[d], 0, need);
	fy_cur_init(&c, v->data + start, f->end - start);
	for (uint32_t i = 0; i < f->node->nkids; i++) {
		v->offs[d][i] = start + c.off;
		if (fy_value_skip(&f->node->kids[i], &c, d + 1))
			return rd_bad(v, NULL);
	}
	v->offs[d][f->node->nkids] = start + c.off;
	if (start + c.off != f->end)
		return rd_bad(v, NULL);
	return 0;
}

/* The sender's field of the open struct called @name, or -1. Fields are
 * usually visited in the sender's order, so the search starts after the
 * last match. */
static int rd_find(struct fy_frame *f, const char *name)
{
	uint32_t n = f->node->nkids;

	for (uint32_t k = 0; k < n; k++) {
		uint32_t i = f->hint + k < n ? f->hint + k : f->hint + k - n;

		if (!strcmp(f->node->kids[i].name, name)) {
			f->hint = i + 1 < n ? i + 1 : 0;
			return (int)i;
		}
	}
	return -1;
}

static int rd_type(struct ferry_visitor *v, const struct fy_fval *fv,
		   const struct fy_snode *n)
{
	struct fy_snode here = { .kind = fv->kind, .flags = fv->flags,
				 .size = fv->size };
	uint32_t sf = n->flags & FY_SF_FIXED, lf = fv->flags & FY_SF_FIXED;
	char sd[96], ld[96];

	if (n->kind == fv->kind && sf == lf && (!sf || n->size == fv->size))
		return 0;
	fy_snode_desc(n, sd, sizeof(sd));
	fy_snode_desc(&here, ld, sizeof(ld));
	return fy_vfail(v, FERRY_EMISMATCH, fv, NULL,
			"type changed: the stream has %s, this side expects %s",
			sd, ld);
}

/* ---- defaults ---- */

static int rd_default(struct ferry_visitor *v, struct fy_fval *fv)
{
	struct fy_frame *nf;
	uint32_t count = 0;

	switch (fv->kind) {
	case FY_K_ARRAY:
		count = (fv->flags & FY_SF_FIXED) ? fv->size : 0;
		*fv->lenp = count;
		/* fall through */
	case FY_K_STRUCT:
		nf = fy_frame_push(v, fv);
		if (!nf)
			return v->err;
		nf->defaults = true;
		nf->count = count;
		return 0;
	case FY_K_STRING:
		memcpy(fv->ptr, fv->sdef, strlen(fv->sdef) + 1);
		return 0;
	case FY_K_BYTES:
		if (fv->flags & FY_SF_FIXED)
			memset(fv->ptr, 0, fv->size);
		else
			*fv->lenp = 0;
		if (fv->alloc) {
			free(*(void **)fv->ptr);
			*(void **)fv->ptr = NULL;
		}
		return 0;
	case FY_K_BOOL:
		*(bool *)fv->ptr = fv->def != 0;
		return 0;
	}
	fy_int_store(fv->ptr, fy_kind_width(fv->kind), fv->def);
	return 0;
}

/* ---- values ---- */

/* ferry_visit_bytes_alloc(): a buffer of exactly the stream's length
 * replaces the caller's (NULL for none). */
static int rd_alloc(struct ferry_visitor *v, const struct fy_fval *fv,
		    const uint8_t *p, uint32_t len)
{
	void **bufp = fv->ptr;
	void *b = NULL;

	if (len) {
		b = malloc(len);
		if (!b)
			return fy_vfail(v, -ENOMEM, fv, NULL,
					"%" PRIu32 " bytes", len);
		memcpy(b, p, len);
	}
	free(*bufp);
	*bufp = b;
	*fv->lenp = len;
	return 0;
}

static int rd_sized(struct ferry_visitor *v, const struct fy_fval *fv,
		    const struct fy_snode *n, struct fy_cur *c)
{
	const uint8_t *p;
	uint32_t len = n->size;

	if (!(n->flags & FY_SF_FIXED) && fy_cur_u32(c, &len))
		return rd_bad(v, fv);
	if (len > n->size)
		return rd_bad(v, fv);
	if (len > fv->size)
		return fy_vfail(v, -ERANGE, fv, NULL,
				"%" PRIu32 " bytes in the stream, this side "
				"holds at most %" PRIu32, len, fv->size);
	if (fy_cur_bytes(c, &p, len))
		return rd_bad(v, fv);
	if (fv->kind == FY_K_STRING) {
		if (memchr(p, 0, len))
			return rd_bad(v, fv);
		memcpy(fv->ptr, p, len);
		((char *)fv->ptr)[len] = '\0';
		return 0;
	}
	if (fv->alloc)
		return rd_alloc(v, fv, p, len);
	memcpy(fv->ptr, p, len);
	if (!(fv->flags & FY_SF_FIXED))
		*fv->lenp = len;
	return 0;
}

static int rd_scalar(struct ferry_visitor *v, const struct fy_fval *fv,
		     struct fy_cur *c)
{
	unsigned w = fy_kind_width(fv->kind);
	uint8_t b[8] = { 0 };
	const uint8_t *p;

	if (fy_cur_bytes(c, &p, w))
		return rd_bad(v, fv);
	if (fv->kind == FY_K_BOOL) {
		if (p[0] > 1)
			return rd_bad(v, fv);
		*(bool *)fv->ptr = p[0] == 1;
		return 0;
	}
	memcpy(b, p, w);
	fy_int_store(fv->ptr, w, fy_get_u64(b));
	return 0;
}

static int rd_open(struct ferry_visitor *v, const struct fy_fval *fv,
		   const struct fy_snode *n, struct fy_cur *c, size_t at,
		   size_t end)
{
	struct fy_frame *nf;
	uint32_t count = n->size;

	if (fv->kind == FY_K_ARRAY) {
		if (!(n->flags & FY_SF_FIXED) && fy_cur_u32(c, &count))
			return rd_bad(v, fv);
		if (count > n->size)
			return rd_bad(v, fv);
		if (count > fv->size)
			return fy_vfail(v, -ERANGE, fv, NULL,
					"%" PRIu32 " elements in the stream, "
					"this side holds at most %" PRIu32,
					count, fv->size);
		*fv->lenp = count;
	}
	nf = fy_frame_push(v, fv);
	if (!nf)
		return v->err;
	nf->node = n;
	nf->end = end;
	if (fv->kind == FY_K_ARRAY) {
		nf->count = count;
		nf->pos = at + c->off;
		return 0;
	}
	return rd_index(v, nf, at);
}

static int rd_value(struct ferry_visitor *v, const struct fy_fval *fv,
		    const struct fy_snode *n, size_t at, size_t end)
{
	struct fy_cur c;
	int rc;

	fy_cur_init(&c, v->data + at, end - at);
	switch (fv->kind) {
	case FY_K_STRUCT:
	case FY_K_ARRAY:
		return rd_open(v, fv, n, &c, at, end);
	case FY_K_STRING:
	case FY_K_BYTES:
		rc = rd_sized(v, fv, n, &c);
		break;
	default:
		rc = rd_scalar(v, fv, &c);
	}
	if (!rc && fy_cur_done(&c))
		return rd_bad(v, fv);
	return rc;
}

/**
 * fy_rd_field() - reader mode: load the field of the call @fv.
 * @v: the visitor.
 * @fv: the call.
 *
 * Return: 0 or the visitor's error.
 */
int fy_rd_field(struct ferry_visitor *v, struct fy_fval *fv)
{
	struct fy_frame *f = &v->f[v->depth];
	const struct fy_snode *n;
	size_t at, end;
	int i;

	if (f->defaults)
		return rd_default(v, fv);
	if (fv->elem) {
		struct fy_cur c;

		n = &f->node->kids[0];
		at = f->pos;
		fy_cur_init(&c, v->data + at, f->end - at);
		if (fy_value_skip(n, &c, v->depth + 1))
			return rd_bad(v, fv);
		end = at + c.off;
		f->pos = end;
	} else {
		i = rd_find(f, fv->name);
		if (i < 0)
			return rd_default(v, fv);
		if (v->used[v->depth][i])
			return fy_vfail(v, -EINVAL, fv, NULL,
					"field visited twice");
		v->used[v->depth][i] = 1;
		n = &f->node->kids[i];
		at = v->offs[v->depth][i];
		end = v->offs[v->depth][i + 1];
	}
	if (rd_type(v, fv, n))
		return v->err;
	return rd_value(v, fv, n, at, end);
}

/**
 * fy_rd_end() - reader mode: check the innermost open struct (or the
 * device) or array before it closes (the caller pops it): every element
 * visited, every must-understand sender field understood.
 * @v: the visitor.
 *
 * Return: 0 or the visitor's error.
 */
int fy_rd_end(struct ferry_visitor *v)
{
	struct fy_frame *f = &v->f[v->depth];
	const uint8_t *used = v->used[v->depth];

	if (f->kind == FY_K_ARRAY) {
		if (f->index != f->count)
			return fy_vfail(v, -EINVAL, NULL, NULL,
					"%" PRIu32 " of %" PRIu32
					" elements visited",
					f->index, f->count);
		if (!f->defaults && f->pos != f->end)
			return rd_bad(v, NULL);
		return 0;
	}
	if (f->defaults)
		return 0;
	for (uint32_t i = 0; i < f->node->nkids; i++) {
		const struct fy_snode *k = &f->node->kids[i];

		if (!used[i] && (k->flags & FY_SF_MUST))
			return fy_vfail(v, FERRY_EUNKNOWN, NULL, k->name,
					"field unknown here but marked "
					"must-understand by the sender");
	}
	return 0;
}

/**
 * fy_visit_read() - load @dev from values encoded with @sender's schema.
 * @t: the local device type.
 * @sender: the schema from the stream.
 * @dev: the object to load.
 * @label: the instance name, for messages.
 * @vals: the encoded values (the rest of a DEVICE record).
 * @n: their length.
 * @err: receives a message naming the device and field on failure.
 * @errlen: size of @err.
 *
 * Return: 0, -EBADMSG, FERRY_EMISMATCH, FERRY_EUNKNOWN, -ERANGE, -EINVAL,
 * -ENOMEM, or the visit function's own error.
 */
int fy_visit_read(const struct ferry_device_type *t,
		  const struct fy_schema *sender, void *dev, const char *label,
		  const uint8_t *vals, size_t n, char *err, size_t errlen)
{
	struct ferry_visitor v;
	int rc;

	fy_visitor_init(&v, FY_V_READ, label);
	v.sender = sender;
	v.data = vals;
	v.len = n;
	v.f[0].node = &sender->root;
	v.f[0].end = n;
	rc = rd_index(&v, &v.f[0], 0);
	if (rc)
		fy_state_msg(err, errlen, "%s", v.msg);
	else
		rc = fy_visitor_run(&v, t, dev, err, errlen);
	fy_visitor_fini(&v);
	return rc;
}
