/* SPDX-License-Identifier: MIT */
/*
 * json.c - JSON text of device state: the values of a section or of one
 * object (for `ferry inspect` and ferry_state_print_json), and JSON Schema
 * (draft 2020-12) of a device type (for `ferry schema`).
 *
 * Values are always printed from an encoding and its schema, never from a
 * C object, so a VMM's printout and an inspector's dump of the same state
 * are the same text. No JSON library: the output is simple enough to
 * produce directly, and strings are escaped so that any bytes a stream
 * holds give valid JSON (invalid UTF-8 becomes U+FFFD).
 *
 * Value mapping: integers as JSON numbers (exact decimal, 64-bit values
 * included), bools as true/false, strings as strings, bytes as lowercase
 * hex strings, arrays as arrays, structs as objects in schema order.
 */
#include "state/state.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A JSON writer with a sticky error, like the cursor. */
struct js {
	struct fy_buf *b;
	int err;
};

static void js_put(struct js *j, const void *p, size_t n)
{
	if (!j->err && fy_buf_put(j->b, p, n))
		j->err = -ENOMEM;
}

static void js_lit(struct js *j, const char *s)
{
	js_put(j, s, strlen(s));
}

static void js_fmt(struct js *j, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void js_fmt(struct js *j, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		js_put(j, tmp, (size_t)n < sizeof(tmp) ? (size_t)n
						       : sizeof(tmp) - 1);
}

/* Length of the valid UTF-8 sequence at @p (1..4), or 0. */
static size_t utf8_len(const uint8_t *p, size_t n)
{
	uint8_t c = p[0], lo = 0x80, hi = 0xbf;
	size_t len;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	/* The second byte's range excludes overlong forms, surrogates and
	 * code points past U+10FFFF. */
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

static void js_str(struct js *j, const void *s, size_t n)
{
	const uint8_t *p = s;
	size_t i = 0;

	js_lit(j, "\"");
	while (i < n && !j->err) {
		uint8_t c = p[i];
		size_t len = utf8_len(p + i, n - i);

		if (len == 0) {
			js_lit(j, "\\ufffd");
			len = 1;
		} else if (c == '"' || c == '\\') {
			js_put(j, "\\", 1);
			js_put(j, &c, 1);
		} else if (c == '\n') {
			js_lit(j, "\\n");
		} else if (c == '\t') {
			js_lit(j, "\\t");
		} else if (c == '\r') {
			js_lit(j, "\\r");
		} else if (c < 0x20) {
			js_fmt(j, "\\u%04x", c);
		} else {
			js_put(j, p + i, len);
		}
		i += len;
	}
	js_lit(j, "\"");
}

/**
 * fy_json_put_str() - append @n bytes of any content to @out as a JSON
 * string, escaped as the values of a dump are (invalid UTF-8 becomes
 * U+FFFD), for other layers that print what a stream holds.
 * @out: the buffer.
 * @s: the bytes.
 * @n: their count.
 *
 * Return: 0 or -ENOMEM.
 */
int fy_json_put_str(struct fy_buf *out, const void *s, size_t n)
{
	struct js j = { .b = out, .err = 0 };

	js_str(&j, s, n);
	return j.err;
}

static void js_hex(struct js *j, const uint8_t *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	char tmp[128];
	size_t k = 0;

	js_lit(j, "\"");
	for (size_t i = 0; i < n; i++) {
		tmp[k++] = digits[p[i] >> 4];
		tmp[k++] = digits[p[i] & 15];
		if (k == sizeof(tmp)) {
			js_put(j, tmp, k);
			k = 0;
		}
	}
	js_put(j, tmp, k);
	js_lit(j, "\"");
}

/* ---- values ---- */

static int64_t sign_extend(uint64_t x, unsigned width)
{
	if (width < 8 && (x >> (8 * width - 1)) & 1)
		x |= ~UINT64_C(0) << (8 * width);
	return (int64_t)x;
}

static void js_int(struct js *j, uint32_t kind, uint64_t x)
{
	if (fy_kind_signed(kind))
		js_fmt(j, "%" PRId64, sign_extend(x, fy_kind_width(kind)));
	else
		js_fmt(j, "%" PRIu64, x);
}

static int jv_value(struct js *j, const struct fy_snode *n, struct fy_cur *c,
		    unsigned depth);

static int jv_aggregate(struct js *j, const struct fy_snode *n,
			struct fy_cur *c, unsigned depth)
{
	uint32_t count = n->size;

	if (n->kind == FY_K_STRUCT) {
		js_lit(j, "{");
		for (uint32_t i = 0; i < n->nkids; i++) {
			js_lit(j, i ? "," : "");
			js_str(j, n->kids[i].name, strlen(n->kids[i].name));
			js_lit(j, ":");
			if (jv_value(j, &n->kids[i], c, depth + 1))
				return -EBADMSG;
		}
		js_lit(j, "}");
		return 0;
	}
	if (!(n->flags & FY_SF_FIXED) &&
	    (fy_cur_u32(c, &count) || count > n->size))
		return -EBADMSG;
	js_lit(j, "[");
	for (uint32_t i = 0; i < count && !j->err; i++) {
		js_lit(j, i ? "," : "");
		if (jv_value(j, &n->kids[0], c, depth + 1))
			return -EBADMSG;
	}
	js_lit(j, "]");
	return 0;
}

static int jv_value(struct js *j, const struct fy_snode *n, struct fy_cur *c,
		    unsigned depth)
{
	unsigned w = fy_kind_width(n->kind);
	const uint8_t *p;
	uint8_t b[8] = { 0 };
	uint32_t len = n->size;

	if (depth > FY_STATE_MAX_DEPTH + 1 || j->err)
		return -EBADMSG;
	if (n->kind == FY_K_STRUCT || n->kind == FY_K_ARRAY)
		return jv_aggregate(j, n, c, depth);
	if (w) {
		if (fy_cur_bytes(c, &p, w))
			return -EBADMSG;
		memcpy(b, p, w);
		if (n->kind == FY_K_BOOL)
			js_lit(j, b[0] ? "true" : "false");
		else
			js_int(j, n->kind, fy_get_u64(b));
		return 0;
	}
	if (!(n->kind == FY_K_BYTES && (n->flags & FY_SF_FIXED)) &&
	    (fy_cur_u32(c, &len) || len > n->size))
		return -EBADMSG;
	if (fy_cur_bytes(c, &p, len))
		return -EBADMSG;
	if (n->kind == FY_K_STRING)
		js_str(j, p, len);
	else
		js_hex(j, p, len);
	return 0;
}

/**
 * fy_state_values_json() - append the values of one device, encoded with
 * schema @s, as a JSON object.
 * @s: the schema.
 * @vals: the encoded values.
 * @n: their length.
 * @out: receives the text.
 *
 * Return: 0, -EBADMSG (the values do not match the schema), -ENOMEM.
 */
int fy_state_values_json(const struct fy_schema *s, const uint8_t *vals,
			 size_t n, struct fy_buf *out)
{
	struct js j = { out, 0 };
	struct fy_cur c;
	int rc;

	fy_cur_init(&c, vals, n);
	rc = jv_value(&j, &s->root, &c, 0);
	if (!rc && fy_cur_done(&c))
		rc = -EBADMSG;
	return j.err ? j.err : rc;
}

/* ---- JSON Schema ---- */

static void jschema_node(struct js *j, const struct fy_snode *n);

static void jschema_int(struct js *j, const struct fy_snode *n)
{
	unsigned w = fy_kind_width(n->kind);

	js_lit(j, "\"type\":\"integer\",\"minimum\":");
	if (fy_kind_signed(n->kind)) {
		int64_t max = (int64_t)(~UINT64_C(0) >> (65 - 8 * w));

		js_fmt(j, "%" PRId64 ",\"maximum\":%" PRId64, -max - 1, max);
	} else {
		js_fmt(j, "0,\"maximum\":%" PRIu64, ~UINT64_C(0) >> (64 - 8 * w));
	}
	js_lit(j, ",\"default\":");
	js_int(j, n->kind, n->def);
}

static void jschema_struct(struct js *j, const struct fy_snode *n)
{
	js_lit(j, "\"type\":\"object\",\"properties\":{");
	for (uint32_t i = 0; i < n->nkids; i++) {
		js_lit(j, i ? "," : "");
		js_str(j, n->kids[i].name, strlen(n->kids[i].name));
		js_lit(j, ":");
		jschema_node(j, &n->kids[i]);
	}
	js_lit(j, "},\"required\":[");
	for (uint32_t i = 0; i < n->nkids; i++) {
		js_lit(j, i ? "," : "");
		js_str(j, n->kids[i].name, strlen(n->kids[i].name));
	}
	js_lit(j, "],\"additionalProperties\":false");
}

static void jschema_body(struct js *j, const struct fy_snode *n)
{
	bool fixed = n->flags & FY_SF_FIXED;
	const char *sdef = n->sdef ? n->sdef : "";

	switch (n->kind) {
	case FY_K_BOOL:
		js_fmt(j, "\"type\":\"boolean\",\"default\":%s",
		       n->def ? "true" : "false");
		break;
	case FY_K_STRING:
		js_fmt(j, "\"type\":\"string\",\"maxLength\":%" PRIu32
		       ",\"default\":", n->size);
		js_str(j, sdef, strlen(sdef));
		break;
	case FY_K_BYTES:
		js_lit(j, "\"type\":\"string\",\"contentEncoding\":\"base16\","
		       "\"pattern\":\"^([0-9a-f]{2})*$\",");
		if (fixed)
			js_fmt(j, "\"minLength\":%" PRIu64 ",", 2 * (uint64_t)n->size);
		js_fmt(j, "\"maxLength\":%" PRIu64, 2 * (uint64_t)n->size);
		break;
	case FY_K_ARRAY:
		js_lit(j, "\"type\":\"array\",\"items\":");
		jschema_node(j, &n->kids[0]);
		if (fixed)
			js_fmt(j, ",\"minItems\":%" PRIu32, n->size);
		js_fmt(j, ",\"maxItems\":%" PRIu32, n->size);
		break;
	case FY_K_STRUCT:
		jschema_struct(j, n);
		break;
	default:
		jschema_int(j, n);
	}
}

/* Recursion is bounded: the schema was checked by fy_schema_finish(). */
static void jschema_node(struct js *j, const struct fy_snode *n)
{
	char desc[96];

	fy_snode_desc(n, desc, sizeof(desc));
	js_lit(j, "{");
	jschema_body(j, n);
	js_lit(j, ",\"x-ferry-type\":");
	js_str(j, desc, strlen(desc));
	if (n->name[0])
		js_fmt(j, ",\"x-ferry-must-understand\":%s",
		       (n->flags & FY_SF_MUST) ? "true" : "false");
	js_lit(j, "}");
}

/**
 * fy_schema_to_json() - append @s as a JSON Schema (draft 2020-12) of the
 * object fy_state_values_json() prints for it.
 * @s: the schema.
 * @out: receives the text.
 *
 * Return: 0, or -ENOMEM.
 */
int fy_schema_to_json(const struct fy_schema *s, struct fy_buf *out)
{
	struct js j = { out, 0 };

	js_lit(&j, "{\"$schema\":\"https://json-schema.org/draft/2020-12/"
		   "schema\",\"title\":");
	js_str(&j, s->type, strlen(s->type));
	js_fmt(&j, ",\"description\":\"ferry device state: %s version %"
	       PRIu32 "\",\"x-ferry-version\":%" PRIu32 ",", s->type,
	       s->version, s->version);
	jschema_struct(&j, &s->root);
	js_lit(&j, "}");
	return j.err;
}

static int schema_json(const struct ferry_device_type *t, struct fy_buf *out,
		       char *err, size_t errlen)
{
	struct fy_schema *s;
	int rc = fy_schema_capture(t, &s, err, errlen);

	if (rc)
		return rc;
	rc = fy_schema_to_json(s, out);
	fy_schema_free(s);
	return rc;
}

/**
 * fy_state_schema_json() - append the JSON Schema of device type @t.
 * @t: the type.
 * @out: receives the text.
 *
 * Return: 0, -EINVAL (a bad type or visit function), -ENOMEM.
 */
int fy_state_schema_json(const struct ferry_device_type *t,
			 struct fy_buf *out)
{
	return schema_json(t, out, NULL, 0);
}

/* ---- sections ---- */

struct dump {
	struct js types, devices, skipped;
	struct fy_buf tb, db, sb;
	uint32_t ntypes, ndevices, nskipped;
};

static int dump_schema(void *ctx, const struct fy_schema *s, char *err,
		       size_t errlen)
{
	struct dump *d = ctx;

	js_lit(&d->types, d->ntypes++ ? ",{\"name\":" : "{\"name\":");
	js_str(&d->types, s->type, strlen(s->type));
	js_fmt(&d->types, ",\"version\":%" PRIu32 ",\"fields\":%" PRIu32 "}",
	       s->version, s->root.nkids);
	return d->types.err;
}

static int dump_device(void *ctx, const struct fy_schema *s,
		       const char *instance, uint32_t flags,
		       const uint8_t *vals, size_t n, char *err, size_t errlen)
{
	struct dump *d = ctx;
	struct js *j = &d->devices;
	int rc;

	js_lit(j, d->ndevices++ ? ",{\"instance\":" : "{\"instance\":");
	js_str(j, instance, strlen(instance));
	js_lit(j, ",\"type\":");
	js_str(j, s->type, strlen(s->type));
	js_fmt(j, ",\"version\":%" PRIu32 ",\"optional\":%s,\"state\":",
	       s->version, (flags & FY_DEV_OPTIONAL) ? "true" : "false");
	if (j->err)
		return j->err;
	rc = fy_state_values_json(s, vals, n, j->b);
	if (rc) {
		fy_state_msg(err, errlen, "device %s: %s", instance,
			     rc == -ENOMEM ? "out of memory"
					   : "values do not match the schema");
		return rc;
	}
	js_lit(j, "}");
	return j->err;
}

static int dump_skipped(void *ctx, uint32_t type, uint32_t length,
			char *err, size_t errlen)
{
	struct dump *d = ctx;

	js_fmt(&d->skipped, "%s{\"record\":\"0x%08" PRIx32 "\",\"length\":%"
	       PRIu32 "}", d->nskipped++ ? "," : "", type, length);
	return d->skipped.err;
}

/**
 * fy_state_dump_json() - check a section and append its content as JSON.
 * @data: the section.
 * @len: its length.
 * @out: receives {"types":[...],"devices":[...],"skipped":[...]}; on
 *	 failure it is left as it was.
 * @err: receives a message on failure (may be NULL).
 * @errlen: size of @err.
 *
 * Needs no local device types: the schemas come from the stream.
 *
 * Return: 0, or the errors of fy_state_walk().
 */
int fy_state_dump_json(const void *data, size_t len, struct fy_buf *out,
		       char *err, size_t errlen)
{
	struct dump d = { .ntypes = 0 };
	struct fy_state_walk_ops ops = { &d, dump_schema, dump_device,
					 dump_skipped };
	int rc;

	fy_buf_init(&d.tb);
	fy_buf_init(&d.db);
	fy_buf_init(&d.sb);
	d.types.b = &d.tb;
	d.devices.b = &d.db;
	d.skipped.b = &d.sb;
	rc = fy_state_walk(data, len, &ops, err, errlen);
	if (!rc) {
		struct js j = { out, 0 };
		size_t start = out->len;

		js_lit(&j, "{\"types\":[");
		js_put(&j, d.tb.data, d.tb.len);
		js_lit(&j, "],\"devices\":[");
		js_put(&j, d.db.data, d.db.len);
		js_lit(&j, "],\"skipped\":[");
		js_put(&j, d.sb.data, d.sb.len);
		js_lit(&j, "]}");
		rc = j.err;
		if (rc)
			out->len = start;
	}
	fy_buf_free(&d.tb);
	fy_buf_free(&d.db);
	fy_buf_free(&d.sb);
	return rc;
}

struct dump_schemas {
	struct js j;
	uint32_t n;
};

static int dump_one_schema(void *ctx, const struct fy_schema *s, char *err,
			   size_t errlen)
{
	struct dump_schemas *d = ctx;

	js_lit(&d->j, d->n++ ? "," : "");
	js_str(&d->j, s->type, strlen(s->type));
	js_lit(&d->j, ":");
	if (!d->j.err)
		d->j.err = fy_schema_to_json(s, d->j.b);
	return d->j.err;
}

/**
 * fy_state_dump_schemas_json() - check a section and append the schemas it
 * carries as {"type name": JSON Schema, ...}.
 * @data: the section.
 * @len: its length.
 * @out: receives the text; on failure it is left as it was.
 * @err: receives a message on failure (may be NULL).
 * @errlen: size of @err.
 *
 * Return: 0, or the errors of fy_state_walk().
 */
int fy_state_dump_schemas_json(const void *data, size_t len,
			       struct fy_buf *out, char *err, size_t errlen)
{
	struct dump_schemas d = { { out, 0 }, 0 };
	struct fy_state_walk_ops ops = { .ctx = &d, .schema = dump_one_schema };
	size_t start = out->len;
	int rc;

	js_lit(&d.j, "{");
	rc = d.j.err ? d.j.err : fy_state_walk(data, len, &ops, err, errlen);
	js_lit(&d.j, "}");
	if (!rc)
		rc = d.j.err;
	if (rc)
		out->len = start;
	return rc;
}

/* ---- public wrappers: results as malloc'd strings ---- */

static int to_string(struct fy_buf *b, int rc, char **json)
{
	if (!rc && fy_buf_put(b, "", 1))
		rc = -ENOMEM;
	if (rc) {
		fy_buf_free(b);
		return rc;
	}
	*json = (char *)b->data;
	return 0;
}

FERRY_API int ferry_state_schema_json(const struct ferry_device_type *type,
				      char **json, char *err, size_t errlen)
{
	struct fy_buf b;

	if (!json)
		return -EINVAL;
	*json = NULL;
	fy_buf_init(&b);
	return to_string(&b, schema_json(type, &b, err, errlen), json);
}

FERRY_API int ferry_state_print_json(const struct ferry_device_type *type,
				     void *dev, char **json, char *err,
				     size_t errlen)
{
	struct fy_schema *s = NULL;
	struct fy_buf vals, b;
	int rc;

	if (!json || !dev)
		return -EINVAL;
	*json = NULL;
	fy_buf_init(&vals);
	fy_buf_init(&b);
	rc = fy_schema_capture(type, &s, err, errlen);
	if (!rc)
		rc = fy_visit_write(type, s, dev, type->name, &vals, err,
				    errlen);
	if (!rc)
		rc = fy_state_values_json(s, vals.data, vals.len, &b);
	fy_schema_free(s);
	fy_buf_free(&vals);
	return to_string(&b, rc, json);
}

FERRY_API int ferry_state_dump_json(const void *data, size_t len,
				    char **json, char *err, size_t errlen)
{
	struct fy_buf b;

	if (!json)
		return -EINVAL;
	*json = NULL;
	fy_buf_init(&b);
	return to_string(&b, fy_state_dump_json(data, len, &b, err, errlen),
			 json);
}

FERRY_API int ferry_state_dump_schemas_json(const void *data, size_t len,
					    char **json, char *err,
					    size_t errlen)
{
	struct fy_buf b;

	if (!json)
		return -EINVAL;
	*json = NULL;
	fy_buf_init(&b);
	return to_string(&b, fy_state_dump_schemas_json(data, len, &b, err,
							errlen),
			 json);
}
