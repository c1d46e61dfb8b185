/* SPDX-License-Identifier: MIT */
/*
 * visit.c - the public ferry_visit_* functions. Each one checks what does
 * not depend on the mode (arguments, names, flags, array element counts),
 * describes the call as a struct fy_fval and hands it to the mode: schema
 * capture or writer (writer.c), reader (reader.c). Also the frames of open
 * structs and arrays, the error paths ("console0.uart.lsr: ...") and the
 * driver that runs a device type's visit function.
 *
 * Errors are sticky: the first one is kept, and every later call returns it
 * without doing anything, so a visit function that ignores return values is
 * still safe, and a failing save never modifies the VMM's object.
 */
#include "state/visitor.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- setup and errors ---- */

/**
 * fy_visitor_init() - prepare a visitor on the caller's stack.
 * @v: the visitor.
 * @mode: what the visit calls do.
 * @label: prefix of error messages (instance or type name); must outlive
 *	   the visitor.
 */
void fy_visitor_init(struct ferry_visitor *v, enum fy_vmode mode,
		     const char *label)
{
	memset(v, 0, sizeof(*v));
	v->mode = mode;
	v->label = label ? label : "";
	v->f[0].kind = FY_K_STRUCT;
}

/**
 * fy_visitor_fini() - free what the visitor allocated (not the schema).
 * @v: the visitor.
 */
void fy_visitor_fini(struct ferry_visitor *v)
{
	for (unsigned d = 0; d <= FY_STATE_MAX_DEPTH; d++) {
		free(v->offs[d]);
		free(v->used[d]);
		v->offs[d] = NULL;
		v->used[d] = NULL;
		v->ocap[d] = 0;
	}
}

static size_t path_add(char *buf, size_t len, size_t at, const char *fmt,
		       ...) __attribute__((format(printf, 4, 5)));

static size_t path_add(char *buf, size_t len, size_t at, const char *fmt,
		       ...)
{
	va_list ap;
	int n;

	if (at >= len)
		return at;
	va_start(ap, fmt);
	n = vsnprintf(buf + at, len - at, fmt, ap);
	va_end(ap);
	return n < 0 ? at : at + (size_t)n;
}

/* "<label>.uart.fifo[3].lsr": the open frames, then the leaf. Returns
 * where the text ends (maybe past @len when truncated). */
static size_t vpath(const struct ferry_visitor *v, const struct fy_fval *fv,
		    const char *leaf, char *buf, size_t len)
{
	size_t at = path_add(buf, len, 0, "%s", v->label);
	const struct fy_frame *top = &v->f[v->depth];

	for (unsigned d = 1; d <= v->depth; d++) {
		const struct fy_frame *up = &v->f[d - 1];

		if (up->kind == FY_K_ARRAY)
			at = path_add(buf, len, at, "[%" PRIu32 "]",
				      up->index ? up->index - 1 : 0);
		else
			at = path_add(buf, len, at, ".%.63s",
				      v->f[d].name ? v->f[d].name : "?");
	}
	if (leaf)
		return path_add(buf, len, at, ".%.63s", leaf);
	if (fv && fv->elem)
		return path_add(buf, len, at, "[%" PRIu32 "]",
				top->index ? top->index - 1 : 0);
	if (fv)
		return path_add(buf, len, at, ".%.63s",
				fv->name ? fv->name : "?");
	return at;
}

static int vfail_va(struct ferry_visitor *v, int code,
		    const struct fy_fval *fv, const char *leaf,
		    const char *fmt, va_list ap)
{
	size_t at;

	if (v->err)
		return v->err;
	v->err = code < 0 ? code : -EINVAL;
	at = vpath(v, fv, leaf, v->msg, sizeof(v->msg));
	at = path_add(v->msg, sizeof(v->msg), at, ": ");
	if (at < sizeof(v->msg))
		vsnprintf(v->msg + at, sizeof(v->msg) - at, fmt, ap);
	return v->err;
}

/**
 * fy_vfail() - record the visitor's first error.
 * @v: the visitor.
 * @code: negative error code.
 * @fv: the visit call at fault, or NULL (the error is about the innermost
 *	open struct or array).
 * @leaf: a field name to name instead of @fv's (a sender field), or NULL.
 * @fmt: printf format of the explanation.
 *
 * Return: the visitor's first error (@code unless one was recorded before).
 */
int fy_vfail(struct ferry_visitor *v, int code, const struct fy_fval *fv,
	     const char *leaf, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vfail_va(v, code, fv, leaf, fmt, ap);
	va_end(ap);
	return rc;
}

/**
 * fy_frame_push() - open a struct or array frame for the call @fv.
 * @v: the visitor.
 * @fv: the struct_begin/array_begin call.
 *
 * Return: the new frame (zeroed but for kind and name), or NULL with the
 * visitor failed when nesting would exceed FY_STATE_MAX_DEPTH.
 */
struct fy_frame *fy_frame_push(struct ferry_visitor *v,
			       const struct fy_fval *fv)
{
	struct fy_frame *f;

	if (v->depth >= FY_STATE_MAX_DEPTH) {
		fy_vfail(v, -EINVAL, fv, NULL, "nested deeper than %d levels",
			 FY_STATE_MAX_DEPTH);
		return NULL;
	}
	f = &v->f[++v->depth];
	memset(f, 0, sizeof(*f));
	f->kind = fv->kind;
	f->name = fv->name;
	return f;
}

/**
 * fy_int_store() - store the low @width bytes of @val as an integer of
 * that width at @p (any alignment).
 * @p: where.
 * @width: 1, 2, 4 or 8.
 * @val: the value (two's complement for signed fields).
 */
void fy_int_store(void *p, unsigned width, uint64_t val)
{
	uint8_t a = (uint8_t)val;
	uint16_t b = (uint16_t)val;
	uint32_t c = (uint32_t)val;

	switch (width) {
	case 1:
		memcpy(p, &a, 1);
		break;
	case 2:
		memcpy(p, &b, 2);
		break;
	case 4:
		memcpy(p, &c, 4);
		break;
	default:
		memcpy(p, &val, 8);
	}
}

/**
 * fy_int_load() - load an integer of @width bytes from @p, zero-extended.
 * @p: where.
 * @width: 1, 2, 4 or 8.
 *
 * Return: the value.
 */
uint64_t fy_int_load(const void *p, unsigned width)
{
	uint8_t a;
	uint16_t b;
	uint32_t c;
	uint64_t d;

	switch (width) {
	case 1:
		memcpy(&a, p, 1);
		return a;
	case 2:
		memcpy(&b, p, 2);
		return b;
	case 4:
		memcpy(&c, p, 4);
		return c;
	}
	memcpy(&d, p, 8);
	return d;
}

/* ---- the common path of every visit call ---- */

/* Turn the caller's sizes into the schema's and check them. */
static int fval_sizes(struct ferry_visitor *v, struct fy_fval *fv,
		      size_t raw)
{
	switch (fv->kind) {
	case FY_K_STRING:
		if (raw == 0 || raw - 1 > FY_STATE_MAX_BYTES)
			return fy_vfail(v, -EINVAL, fv, NULL,
					"string capacity %zu out of range",
					raw);
		fv->size = (uint32_t)(raw - 1);
		if (strlen(fv->sdef) > fv->size)
			return fy_vfail(v, -EINVAL, fv, NULL,
					"default longer than the capacity");
		break;
	case FY_K_BYTES:
		if (raw == 0 || raw > FY_STATE_MAX_BYTES)
			return fy_vfail(v, -EINVAL, fv, NULL,
					"bytes size %zu out of range", raw);
		fv->size = (uint32_t)raw;
		break;
	case FY_K_ARRAY:
		if (raw == 0 || raw > FY_STATE_MAX_COUNT)
			return fy_vfail(v, -EINVAL, fv, NULL,
					"array size %zu out of range", raw);
		fv->size = (uint32_t)raw;
		break;
	}
	return 0;
}

static int fval_check(struct ferry_visitor *v, struct fy_fval *fv,
		      unsigned uflags, size_t raw)
{
	bool needs_ptr = fv->kind != FY_K_STRUCT && fv->kind != FY_K_ARRAY;
	bool needs_len = fv->kind == FY_K_ARRAY ||
			 (fv->kind == FY_K_BYTES && !(fv->flags & FY_SF_FIXED));

	if (!fv->elem) {
		if (!fy_state_field_name_ok(fv->name))
			return fy_vfail(v, -EINVAL, fv, NULL,
					"invalid field name (want "
					"[A-Za-z_][A-Za-z0-9_]*, < 64 bytes)");
		if (uflags != FERRY_FIELD_MUST &&
		    uflags != FERRY_FIELD_SKIPPABLE)
			return fy_vfail(v, -EINVAL, fv, NULL,
					"flags must be FERRY_FIELD_MUST or "
					"FERRY_FIELD_SKIPPABLE");
		if (uflags == FERRY_FIELD_MUST)
			fv->flags |= FY_SF_MUST;
	}
	if (needs_ptr && !fv->ptr && v->mode != FY_V_SCHEMA)
		return fy_vfail(v, -EINVAL, fv, NULL, "NULL value pointer");
	if (needs_len && !fv->lenp)
		return fy_vfail(v, -EINVAL, fv, NULL, "NULL count pointer");
	return fval_sizes(v, fv, raw);
}

static int visit(struct ferry_visitor *v, struct fy_fval *fv,
		 unsigned uflags, size_t raw)
{
	struct fy_frame *f;

	if (!v)
		return -EINVAL;
	if (v->err)
		return v->err;
	f = &v->f[v->depth];
	if (!fv->sdef)
		fv->sdef = "";
	if (f->kind == FY_K_ARRAY) {
		/* Elements carry neither a name nor a flag. */
		fv->elem = true;
		fv->name = NULL;
		if (++f->index > f->count)
			return fy_vfail(v, -EINVAL, fv, NULL,
					"more elements visited than the count "
					"array_begin gave (%" PRIu32 ")",
					f->count);
	}
	if (fval_check(v, fv, uflags, raw))
		return v->err;
	switch (v->mode) {
	case FY_V_SCHEMA:
		return fy_cap_field(v, fv);
	case FY_V_WRITE:
		return fy_wr_field(v, fv);
	case FY_V_READ:
		return fy_rd_field(v, fv);
	}
	return fy_vfail(v, -EINVAL, fv, NULL, "visitor not in use");
}

static int visit_end(struct ferry_visitor *v, uint32_t kind)
{
	int rc = 0;

	if (!v)
		return -EINVAL;
	if (v->err)
		return v->err;
	if (v->depth == 0 || v->f[v->depth].kind != kind)
		return fy_vfail(v, -EINVAL, NULL, NULL,
				"%s_end without a matching begin",
				kind == FY_K_ARRAY ? "array" : "struct");
	switch (v->mode) {
	case FY_V_SCHEMA:
		rc = fy_cap_end(v);
		break;
	case FY_V_WRITE:
		rc = fy_wr_end(v);
		break;
	case FY_V_READ:
		rc = fy_rd_end(v);
		break;
	}
	if (!rc)
		v->depth--;
	return rc;
}

static int visit_int(ferry_visitor *v, const char *name, void *val,
		     uint32_t kind, uint64_t def, unsigned flags)
{
	struct fy_fval fv = { .kind = kind, .name = name, .ptr = val,
			      .def = def };

	return visit(v, &fv, flags, 0);
}

/* ---- public entry points ---- */

FERRY_API int ferry_visit_u8(ferry_visitor *v, const char *name,
			     uint8_t *val, uint8_t def, unsigned flags)
{
	return visit_int(v, name, val, FY_K_U8, def, flags);
}

FERRY_API int ferry_visit_u16(ferry_visitor *v, const char *name,
			      uint16_t *val, uint16_t def, unsigned flags)
{
	return visit_int(v, name, val, FY_K_U16, def, flags);
}

FERRY_API int ferry_visit_u32(ferry_visitor *v, const char *name,
			      uint32_t *val, uint32_t def, unsigned flags)
{
	return visit_int(v, name, val, FY_K_U32, def, flags);
}

FERRY_API int ferry_visit_u64(ferry_visitor *v, const char *name,
			      uint64_t *val, uint64_t def, unsigned flags)
{
	return visit_int(v, name, val, FY_K_U64, def, flags);
}

/* Signed defaults travel as the 64-bit two's complement, sign-extended. */
FERRY_API int ferry_visit_i8(ferry_visitor *v, const char *name,
			     int8_t *val, int8_t def, unsigned flags)
{
	return visit_int(v, name, val, FY_K_I8, (uint64_t)(int64_t)def, flags);
}

FERRY_API int ferry_visit_i16(ferry_visitor *v, const char *name,
			      int16_t *val, int16_t def, unsigned flags)
{
	return visit_int(v, name, val, FY_K_I16, (uint64_t)(int64_t)def,
			 flags);
}

FERRY_API int ferry_visit_i32(ferry_visitor *v, const char *name,
			      int32_t *val, int32_t def, unsigned flags)
{
	return visit_int(v, name, val, FY_K_I32, (uint64_t)(int64_t)def,
			 flags);
}

FERRY_API int ferry_visit_i64(ferry_visitor *v, const char *name,
			      int64_t *val, int64_t def, unsigned flags)
{
	return visit_int(v, name, val, FY_K_I64, (uint64_t)def, flags);
}

FERRY_API int ferry_visit_bool(ferry_visitor *v, const char *name,
			       bool *val, bool def, unsigned flags)
{
	return visit_int(v, name, val, FY_K_BOOL, def ? 1 : 0, flags);
}

FERRY_API int ferry_visit_string(ferry_visitor *v, const char *name,
				 char *buf, size_t cap, const char *def,
				 unsigned flags)
{
	struct fy_fval fv = { .kind = FY_K_STRING, .name = name, .ptr = buf,
			      .sdef = def };

	return visit(v, &fv, flags, cap);
}

FERRY_API int ferry_visit_bytes(ferry_visitor *v, const char *name,
				void *buf, size_t size, unsigned flags)
{
	struct fy_fval fv = { .kind = FY_K_BYTES, .name = name, .ptr = buf,
			      .flags = FY_SF_FIXED };

	return visit(v, &fv, flags, size);
}

FERRY_API int ferry_visit_bytes_var(ferry_visitor *v, const char *name,
				    void *buf, uint32_t *len, size_t cap,
				    unsigned flags)
{
	struct fy_fval fv = { .kind = FY_K_BYTES, .name = name, .ptr = buf,
			      .lenp = len };

	return visit(v, &fv, flags, cap);
}

FERRY_API int ferry_visit_bytes_alloc(ferry_visitor *v, const char *name,
				      void **buf, uint32_t *len, size_t max,
				      unsigned flags)
{
	struct fy_fval fv = { .kind = FY_K_BYTES, .name = name, .ptr = buf,
			      .lenp = len, .alloc = true };

	return visit(v, &fv, flags, max);
}

FERRY_API int ferry_visit_struct_begin(ferry_visitor *v, const char *name,
				       unsigned flags)
{
	struct fy_fval fv = { .kind = FY_K_STRUCT, .name = name };

	return visit(v, &fv, flags, 0);
}

FERRY_API int ferry_visit_struct_end(ferry_visitor *v)
{
	return visit_end(v, FY_K_STRUCT);
}

FERRY_API int ferry_visit_array_begin(ferry_visitor *v, const char *name,
				      uint32_t *count, uint32_t max,
				      unsigned flags)
{
	struct fy_fval fv = { .kind = FY_K_ARRAY, .name = name,
			      .lenp = count };
	int rc = visit(v, &fv, flags, max);

	/* Never touch the count of a failed save: it may be the VMM's own. */
	if (rc && count && v && v->mode != FY_V_WRITE)
		*count = 0;
	return rc;
}

FERRY_API int ferry_visit_array_fixed_begin(ferry_visitor *v,
					    const char *name, uint32_t *count,
					    uint32_t n, unsigned flags)
{
	struct fy_fval fv = { .kind = FY_K_ARRAY, .name = name,
			      .flags = FY_SF_FIXED, .lenp = count };
	int rc = visit(v, &fv, flags, n);

	if (rc && count)
		*count = 0;
	return rc;
}

FERRY_API int ferry_visit_array_end(ferry_visitor *v)
{
	return visit_end(v, FY_K_ARRAY);
}

FERRY_API int ferry_visit_fail(ferry_visitor *v, int err, const char *fmt,
			       ...)
{
	va_list ap;
	int rc;

	if (!v)
		return -EINVAL;
	va_start(ap, fmt);
	rc = vfail_va(v, err < 0 ? err : -EINVAL, NULL, NULL,
		      fmt ? fmt : "failed", ap);
	va_end(ap);
	return rc;
}

FERRY_API int ferry_visit_error(const ferry_visitor *v)
{
	return v ? v->err : -EINVAL;
}

FERRY_API const char *ferry_visitor_errmsg(const ferry_visitor *v)
{
	return v ? v->msg : "";
}

/* ---- running a visit function ---- */

/**
 * fy_device_type_check() - is @t usable: a valid name, a size and a visit
 * function?
 * @t: the type.
 * @err: receives a message.
 * @errlen: size of @err.
 *
 * Return: 0, or -EINVAL.
 */
int fy_device_type_check(const struct ferry_device_type *t, char *err,
			 size_t errlen)
{
	if (!t || !t->visit || !fy_state_name_ok(t->name)) {
		fy_state_msg(err, errlen, "device type without a valid name "
			     "([A-Za-z0-9_.:-], < 64 bytes) or visit function");
		return -EINVAL;
	}
	if (t->size == 0 || t->size > ((size_t)1 << 30)) {
		fy_state_msg(err, errlen, "device type %s: size %zu out of "
			     "range (1 B .. 1 GiB)", t->name, t->size);
		return -EINVAL;
	}
	if (t->flags & ~FERRY_DEVICE_OPTIONAL) {
		fy_state_msg(err, errlen, "device type %s: unknown flags",
			     t->name);
		return -EINVAL;
	}
	return 0;
}

/**
 * fy_visitor_run() - run @t's visit function on @dev and close the root.
 * @v: a visitor prepared for its mode (frame 0 set up by the mode).
 * @t: the device type.
 * @dev: the object.
 * @err: receives the message on failure.
 * @errlen: size of @err.
 *
 * Catches visit functions that fail without telling the visitor, and ones
 * that return with a struct or array still open.
 *
 * Return: 0, or the visitor's first error.
 */
int fy_visitor_run(struct ferry_visitor *v, const struct ferry_device_type *t,
		   void *dev, char *err, size_t errlen)
{
	int rc = t->visit(v, dev);

	if (!v->err && rc)
		fy_vfail(v, rc < 0 ? rc : -EINVAL, NULL, NULL,
			 "the visit function failed (%d)", rc);
	if (!v->err && v->depth)
		fy_vfail(v, -EINVAL, NULL, NULL,
			 "the visit function returned with this still open");
	if (!v->err) {
		if (v->mode == FY_V_WRITE)
			fy_wr_end(v);
		else if (v->mode == FY_V_READ)
			fy_rd_end(v);
	}
	if (v->err)
		fy_state_msg(err, errlen, "%s", v->msg);
	return v->err;
}
