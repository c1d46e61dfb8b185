/* SPDX-License-Identifier: MIT */
/*
 * schema.c - schema trees of device types: names and kinds, encoding and
 * decoding of STATE_SCHEMA bodies, the limits every schema obeys, the
 * compatibility check of a sender's schema against the local one, and
 * skipping over encoded values.
 *
 * Decoding treats its input as hostile: every count and length is checked
 * against the limits of state.h before anything is allocated, recursion is
 * bounded by FY_STATE_MAX_DEPTH, and node counts are capped.
 */
#include "state/state.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/**
 * fy_state_msg() - format a message into @err (which may be NULL/0).
 * @err: the buffer.
 * @errlen: its size.
 * @fmt: printf format.
 */
void fy_state_msg(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- names and kinds ---- */

/* 1..63 bytes of [A-Za-z0-9_] and the characters in @extra. */
static bool name_chars_ok(const char *s, const char *extra)
{
	size_t i;

	if (!s || !s[0])
		return false;
	for (i = 0; s[i]; i++) {
		char c = s[i];

		if (i >= FY_STATE_NAME_MAX - 1)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || strchr(extra, c)))
			return false;
	}
	return true;
}

/**
 * fy_state_field_name_ok() - is @s a valid field name?
 * @s: the name.
 *
 * Field names are C-like identifiers so that paths ("uart.lsr") and JSON
 * keys never need quoting and a stream cannot smuggle control characters
 * into messages.
 *
 * Return: true for [A-Za-z_][A-Za-z0-9_]* of 1..63 bytes.
 */
bool fy_state_field_name_ok(const char *s)
{
	return name_chars_ok(s, "") && !(s[0] >= '0' && s[0] <= '9');
}

/**
 * fy_state_name_ok() - is @s a valid type or instance name?
 * @s: the name.
 *
 * Return: true for [A-Za-z0-9_.:-]{1,63}.
 */
bool fy_state_name_ok(const char *s)
{
	return name_chars_ok(s, ".:-");
}

static const char *const kind_names[] = {
	[FY_K_U8] = "u8",	  [FY_K_U16] = "u16",	 [FY_K_U32] = "u32",
	[FY_K_U64] = "u64",	  [FY_K_I8] = "i8",	 [FY_K_I16] = "i16",
	[FY_K_I32] = "i32",	  [FY_K_I64] = "i64",	 [FY_K_BOOL] = "bool",
	[FY_K_STRING] = "string", [FY_K_BYTES] = "bytes", [FY_K_ARRAY] = "array",
	[FY_K_STRUCT] = "struct",
};
static_assert(sizeof(kind_names) / sizeof(kind_names[0]) == FY_K_MAX + 1,
	      "every field kind has a name");

/**
 * fy_kind_name() - the name of a field kind ("u32"), "?" if unknown.
 * @kind: enum fy_kind.
 */
const char *fy_kind_name(uint32_t kind)
{
	if (kind == 0 || kind > FY_K_MAX)
		return "?";
	return kind_names[kind];
}

/**
 * fy_kind_width() - bytes of an integer or bool kind, 0 for the others.
 * @kind: enum fy_kind.
 */
unsigned fy_kind_width(uint32_t kind)
{
	switch (kind) {
	case FY_K_U8:
	case FY_K_I8:
	case FY_K_BOOL:
		return 1;
	case FY_K_U16:
	case FY_K_I16:
		return 2;
	case FY_K_U32:
	case FY_K_I32:
		return 4;
	case FY_K_U64:
	case FY_K_I64:
		return 8;
	}
	return 0;
}

/**
 * fy_kind_signed() - true for the signed integer kinds.
 * @kind: enum fy_kind.
 */
bool fy_kind_signed(uint32_t kind)
{
	return kind >= FY_K_I8 && kind <= FY_K_I64;
}

/**
 * fy_snode_desc() - describe a node's type for messages: "u32",
 * "bytes[16]", "bytes(<=16)", "array[4] of u8", "string(<=31)".
 * @n: the node.
 * @buf: receives the text.
 * @len: size of @buf.
 */
void fy_snode_desc(const struct fy_snode *n, char *buf, size_t len)
{
	bool fixed = n->flags & FY_SF_FIXED;

	switch (n->kind) {
	case FY_K_STRING:
		snprintf(buf, len, "string(<=%" PRIu32 ")", n->size);
		break;
	case FY_K_BYTES:
		snprintf(buf, len, fixed ? "bytes[%" PRIu32 "]" :
			 "bytes(<=%" PRIu32 ")", n->size);
		break;
	case FY_K_ARRAY:
		snprintf(buf, len, fixed ? "array[%" PRIu32 "]%s%s" :
			 "array(<=%" PRIu32 ")%s%s", n->size,
			 n->nkids ? " of " : "",
			 n->nkids ? fy_kind_name(n->kids[0].kind) : "");
		break;
	default:
		snprintf(buf, len, "%s", fy_kind_name(n->kind));
	}
}

/* ---- trees ---- */

/**
 * fy_schema_new() - an empty schema (a root struct without fields).
 * @type: the type name (copied; truncated names are the caller's bug).
 * @version: the type's version.
 *
 * Return: the schema, or NULL on -ENOMEM.
 */
struct fy_schema *fy_schema_new(const char *type, uint32_t version)
{
	struct fy_schema *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	snprintf(s->type, sizeof(s->type), "%s", type ? type : "");
	s->version = version;
	s->root.kind = FY_K_STRUCT;
	s->nnodes = 1;
	return s;
}

/* Depth is bounded: trees are built with at most FY_STATE_MAX_DEPTH
 * levels below the root by every constructor. */
static void snode_free(struct fy_snode *n)
{
	for (uint32_t i = 0; i < n->nkids; i++)
		snode_free(&n->kids[i]);
	free(n->kids);
	free(n->sdef);
	n->kids = NULL;
	n->sdef = NULL;
	n->nkids = n->capkids = 0;
}

/**
 * fy_schema_free() - free a schema. NULL is harmless.
 * @s: the schema.
 */
void fy_schema_free(struct fy_schema *s)
{
	if (!s)
		return;
	snode_free(&s->root);
	free(s);
}

/**
 * fy_snode_add() - append a zeroed child to @parent.
 * @parent: a struct or array node.
 *
 * Reallocates @parent's children: pointers to them are invalidated, pointers
 * to @parent and its ancestors are not.
 *
 * Return: the new child, or NULL on -ENOMEM.
 */
struct fy_snode *fy_snode_add(struct fy_snode *parent)
{
	struct fy_snode *k;

	if (parent->nkids == parent->capkids) {
		uint32_t cap = parent->capkids ? parent->capkids * 2 : 4;

		k = realloc(parent->kids, cap * sizeof(*k));
		if (!k)
			return NULL;
		parent->kids = k;
		parent->capkids = cap;
	}
	k = &parent->kids[parent->nkids++];
	memset(k, 0, sizeof(*k));
	return k;
}

/**
 * fy_snode_find() - the field of @parent called @name, or NULL.
 * @parent: a struct node.
 * @name: the field name.
 */
const struct fy_snode *fy_snode_find(const struct fy_snode *parent,
				     const char *name)
{
	for (uint32_t i = 0; i < parent->nkids; i++)
		if (strcmp(parent->kids[i].name, name) == 0)
			return &parent->kids[i];
	return NULL;
}

/* ---- limits and sizes ---- */

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
	return b && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

/* Defaults must be representable in the field's own type. */
static bool def_ok(const struct fy_snode *n)
{
	unsigned w = fy_kind_width(n->kind);
	int64_t s = (int64_t)n->def;

	if (n->kind == FY_K_BOOL)
		return n->def <= 1;
	if (w == 8)
		return true;
	if (fy_kind_signed(n->kind))
		return s >= -(INT64_C(1) << (8 * w - 1)) &&
		       s < (INT64_C(1) << (8 * w - 1));
	return n->def < (UINT64_C(1) << (8 * w));
}

static int node_limits(const struct fy_snode *n, bool root, bool elem)
{
	uint32_t want_kids = 0;

	if (n->kind == 0 || n->kind > FY_K_MAX || (n->flags & ~FY_SF_ALL))
		return -1;
	if ((n->flags & FY_SF_FIXED) && n->kind != FY_K_BYTES &&
	    n->kind != FY_K_ARRAY)
		return -1;
	if (elem && (n->flags & FY_SF_MUST))
		return -1;
	if (fy_kind_width(n->kind) && !def_ok(n))
		return -1;
	if (n->kind != FY_K_STRING && n->sdef)
		return -1;
	switch (n->kind) {
	case FY_K_STRING:
		if (n->size > FY_STATE_MAX_BYTES ||
		    (n->sdef && strlen(n->sdef) > n->size))
			return -1;
		break;
	case FY_K_BYTES:
		if (n->size == 0 || n->size > FY_STATE_MAX_BYTES)
			return -1;
		break;
	case FY_K_ARRAY:
		if (n->size == 0 || n->size > FY_STATE_MAX_COUNT)
			return -1;
		want_kids = 1;
		break;
	case FY_K_STRUCT:
		/* Empty structs could repeat without consuming bytes; only
		 * the root (a device without state) may be empty. */
		if ((!root && n->nkids == 0) || n->nkids > FY_STATE_MAX_FIELDS)
			return -1;
		return 0;
	}
	return n->nkids == want_kids ? 0 : -1;
}

static uint64_t scalar_size(const struct fy_snode *n)
{
	bool fixed = n->flags & FY_SF_FIXED;

	if (fy_kind_width(n->kind))
		return fy_kind_width(n->kind);
	if (n->kind == FY_K_BYTES && fixed)
		return n->size;
	return 0; /* strings and variable bytes: 4 + length */
}

static void struct_sizes(struct fy_snode *n)
{
	bool fixed = true, plain = true;

	n->minsize = 0;
	for (uint32_t i = 0; i < n->nkids; i++) {
		n->minsize = sat_add(n->minsize, n->kids[i].minsize);
		fixed = fixed && n->kids[i].fixsize;
		plain = plain && n->kids[i].plain;
	}
	n->fixsize = fixed ? n->minsize : 0;
	n->plain = fixed && plain;
}

static void array_sizes(struct fy_snode *n)
{
	const struct fy_snode *e = &n->kids[0];

	if (n->flags & FY_SF_FIXED) {
		n->minsize = sat_mul(n->size, e->minsize);
		n->fixsize = e->fixsize ? n->minsize : 0;
		n->plain = e->plain;
	} else {
		n->minsize = 4;
		n->fixsize = 0;
		n->plain = false;
	}
}

/*
 * Check @n and compute its sizes; recursion bounded by @depth. On failure
 * @path holds the dotted path of the offending node.
 */
static int node_finish(struct fy_snode *n, unsigned depth, bool root,
		       bool elem, char *path, size_t plen)
{
	size_t at = strlen(path);

	if (elem)
		snprintf(path + at, plen - at, "[]");
	else if (!root)
		snprintf(path + at, plen - at, "%s%s", at ? "." : "", n->name);
	if (depth > FY_STATE_MAX_DEPTH + 1 || node_limits(n, root, elem) ||
	    (depth > FY_STATE_MAX_DEPTH &&
	     (n->kind == FY_K_STRUCT || n->kind == FY_K_ARRAY)))
		return -1;
	for (uint32_t i = 0; i < n->nkids; i++)
		if (node_finish(&n->kids[i], depth + 1, false,
				n->kind == FY_K_ARRAY, path, plen))
			return -1;
	if (n->kind == FY_K_STRUCT) {
		struct_sizes(n);
	} else if (n->kind == FY_K_ARRAY) {
		array_sizes(n);
	} else {
		n->fixsize = scalar_size(n);
		n->minsize = n->fixsize ? n->fixsize : 4;
		n->plain = n->fixsize && n->kind != FY_K_BOOL;
	}
	if (n->minsize > FY_STATE_MAX_BYTES)
		return -1;
	path[at] = '\0';
	return 0;
}

/**
 * fy_schema_finish() - check a schema against the limits and compute the
 * encoded sizes of its nodes.
 * @s: the schema.
 * @err: receives a message naming the offending field.
 * @errlen: size of @err.
 *
 * Rules: kinds known, flags known (FIXED only on bytes and arrays, MUST
 * never on array elements), defaults representable, sizes of bytes and
 * arrays in 1..limit, every struct but the root has fields, nesting within
 * FY_STATE_MAX_DEPTH, node and field counts within their limits, names
 * valid and unique, and no value with a minimal encoding bigger than a
 * record. Empty structs being refused means every non-root value encodes to
 * at least one byte, so walking values costs at most their length.
 *
 * Return: 0, or -EINVAL.
 */
int fy_schema_finish(struct fy_schema *s, char *err, size_t errlen)
{
	char path[FY_STATE_MSG_MAX] = "";

	if (!fy_state_name_ok(s->type)) {
		fy_state_msg(err, errlen, "invalid type name");
		return -EINVAL;
	}
	if (s->nnodes > FY_STATE_MAX_NODES) {
		fy_state_msg(err, errlen, "%s: more than %d schema nodes",
			     s->type, FY_STATE_MAX_NODES);
		return -EINVAL;
	}
	if (node_finish(&s->root, 0, true, false, path, sizeof(path))) {
		fy_state_msg(err, errlen,
			     "%s: field '%s' breaks the schema rules (kind, "
			     "flags, default, size, nesting or emptiness)",
			     s->type, path);
		return -EINVAL;
	}
	return 0;
}

/* ---- encoding ---- */

static int node_encode(const struct fy_snode *n, struct fy_buf *b)
{
	int rc = fy_buf_put_str(b, n->name);

	if (!rc)
		rc = fy_buf_put_u32(b, n->kind);
	if (!rc)
		rc = fy_buf_put_u32(b, n->flags);
	if (rc)
		return rc;
	if (fy_kind_width(n->kind))
		return fy_buf_put_u64(b, n->def);
	switch (n->kind) {
	case FY_K_STRING:
		rc = fy_buf_put_u32(b, n->size);
		return rc ? rc : fy_buf_put_str(b, n->sdef ? n->sdef : "");
	case FY_K_BYTES:
		return fy_buf_put_u32(b, n->size);
	case FY_K_ARRAY:
		rc = fy_buf_put_u32(b, n->size);
		return rc ? rc : node_encode(&n->kids[0], b);
	}
	rc = fy_buf_put_u32(b, n->nkids);
	for (uint32_t i = 0; !rc && i < n->nkids; i++)
		rc = node_encode(&n->kids[i], b);
	return rc;
}

/**
 * fy_schema_encode() - append the STATE_SCHEMA body of @s to @out.
 * @s: a finished schema.
 * @out: the buffer; on failure it is cut back to where it was.
 *
 * Body: str type, u32 version, u32 flags (0), u32 nfields, then the fields
 * (docs/state-format.md).
 *
 * Return: 0, or -ENOMEM.
 */
int fy_schema_encode(const struct fy_schema *s, struct fy_buf *out)
{
	size_t start = out->len;
	int rc = fy_buf_put_str(out, s->type);

	if (!rc)
		rc = fy_buf_put_u32(out, s->version);
	if (!rc)
		rc = fy_buf_put_u32(out, 0);
	if (!rc)
		rc = fy_buf_put_u32(out, s->root.nkids);
	for (uint32_t i = 0; !rc && i < s->root.nkids; i++)
		rc = node_encode(&s->root.kids[i], out);
	if (rc)
		out->len = start;
	return rc;
}

/* ---- decoding ---- */

struct sdec {
	struct fy_cur c;
	uint32_t nodes;
	const char *why; /* first problem, for the message */
};

static int sdec_bad(struct sdec *d, const char *why)
{
	if (!d->why)
		d->why = why;
	d->c.bad = true;
	return -EBADMSG;
}

/* A string of at most @max bytes into a fresh allocation (NUL-free). */
static int sdec_alloc_str(struct sdec *d, uint32_t max, char **out)
{
	const uint8_t *p;
	uint32_t n;

	*out = NULL;
	if (fy_cur_u32(&d->c, &n) || n > max || fy_cur_bytes(&d->c, &p, n))
		return sdec_bad(d, "bad string default");
	if (memchr(p, 0, n))
		return sdec_bad(d, "NUL in string default");
	*out = malloc((size_t)n + 1);
	if (!*out)
		return -ENOMEM;
	memcpy(*out, p, n);
	(*out)[n] = '\0';
	return 0;
}

static int node_decode(struct sdec *d, struct fy_snode *n, unsigned depth,
		       bool elem);

static int struct_decode(struct sdec *d, struct fy_snode *n, unsigned depth)
{
	uint32_t nf;
	int rc;

	if (fy_cur_u32(&d->c, &nf))
		return sdec_bad(d, "truncated");
	/* Each field needs at least 16 bytes: refuse counts the body cannot
	 * hold before allocating for them. */
	if (nf > FY_STATE_MAX_FIELDS || nf > (d->c.len - d->c.off) / 16)
		return sdec_bad(d, "field count");
	if (nf) {
		n->kids = calloc(nf, sizeof(*n->kids));
		if (!n->kids)
			return -ENOMEM;
		n->capkids = nf;
	}
	for (uint32_t i = 0; i < nf; i++) {
		n->nkids++;
		rc = node_decode(d, &n->kids[i], depth + 1, false);
		if (rc)
			return rc;
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(n->kids[j].name, n->kids[i].name))
				return sdec_bad(d, "duplicate field name");
	}
	return 0;
}

static int node_payload(struct sdec *d, struct fy_snode *n, unsigned depth)
{
	if (fy_kind_width(n->kind))
		return fy_cur_u64(&d->c, &n->def) ? sdec_bad(d, "truncated")
						  : 0;
	switch (n->kind) {
	case FY_K_STRING:
		if (fy_cur_u32(&d->c, &n->size) ||
		    n->size > FY_STATE_MAX_BYTES)
			return sdec_bad(d, "string size");
		return sdec_alloc_str(d, n->size, &n->sdef);
	case FY_K_BYTES:
		return fy_cur_u32(&d->c, &n->size) ? sdec_bad(d, "truncated")
						   : 0;
	case FY_K_ARRAY:
		if (fy_cur_u32(&d->c, &n->size))
			return sdec_bad(d, "truncated");
		n->kids = calloc(1, sizeof(*n->kids));
		if (!n->kids)
			return -ENOMEM;
		n->capkids = n->nkids = 1;
		return node_decode(d, &n->kids[0], depth + 1, true);
	case FY_K_STRUCT:
		return struct_decode(d, n, depth);
	}
	return sdec_bad(d, "unknown field kind");
}

static int node_decode(struct sdec *d, struct fy_snode *n, unsigned depth,
		       bool elem)
{
	if (depth > FY_STATE_MAX_DEPTH + 1)
		return sdec_bad(d, "nesting too deep");
	if (++d->nodes > FY_STATE_MAX_NODES)
		return sdec_bad(d, "too many nodes");
	if (fy_cur_str(&d->c, n->name, sizeof(n->name)))
		return sdec_bad(d, "bad field name");
	if (elem ? n->name[0] != '\0' : !fy_state_field_name_ok(n->name))
		return sdec_bad(d, "bad field name");
	if (fy_cur_u32(&d->c, &n->kind) || fy_cur_u32(&d->c, &n->flags))
		return sdec_bad(d, "truncated");
	if (n->kind == 0 || n->kind > FY_K_MAX)
		return sdec_bad(d, "unknown field kind");
	/* Structs and arrays nest at most FY_STATE_MAX_DEPTH deep; their
	 * fields and elements sit one level below. */
	if ((n->kind == FY_K_STRUCT || n->kind == FY_K_ARRAY) &&
	    depth > FY_STATE_MAX_DEPTH)
		return sdec_bad(d, "nesting too deep");
	return node_payload(d, n, depth);
}

/**
 * fy_schema_decode() - decode and validate a STATE_SCHEMA body.
 * @p: the body.
 * @n: its length.
 * @out: receives the schema (NULL on failure); free with fy_schema_free().
 * @err: receives a message on failure.
 * @errlen: size of @err.
 *
 * Return: 0, -EBADMSG (malformed, or breaking the rules of
 * fy_schema_finish()), -ENOMEM.
 */
int fy_schema_decode(const uint8_t *p, size_t n, struct fy_schema **out,
		     char *err, size_t errlen)
{
	struct sdec d = { .why = NULL };
	struct fy_schema *s;
	uint32_t flags;
	int rc;

	*out = NULL;
	s = fy_schema_new("", 0);
	if (!s)
		return -ENOMEM;
	fy_cur_init(&d.c, p, n);
	if (fy_cur_str(&d.c, s->type, sizeof(s->type)) ||
	    !fy_state_name_ok(s->type))
		rc = sdec_bad(&d, "bad type name");
	else if (fy_cur_u32(&d.c, &s->version) || fy_cur_u32(&d.c, &flags) ||
		 flags != 0)
		rc = sdec_bad(&d, "bad header");
	else
		rc = struct_decode(&d, &s->root, 0);
	if (!rc && fy_cur_done(&d.c))
		rc = sdec_bad(&d, "trailing bytes");
	s->nnodes = d.nodes + 1;
	if (rc == -ENOMEM)
		fy_state_msg(err, errlen, "schema: out of memory");
	else if (rc)
		fy_state_msg(err, errlen, "schema '%s': malformed (%s)",
			     fy_state_name_ok(s->type) ? s->type : "?",
			     d.why ? d.why : "truncated");
	else if (fy_schema_finish(s, err, errlen))
		rc = -EBADMSG;
	if (rc) {
		fy_schema_free(s);
		return rc == -ENOMEM ? rc : -EBADMSG;
	}
	*out = s;
	return 0;
}

/* ---- compatibility ---- */

struct compat {
	const struct fy_schema *sender;
	const char *label;
	char *err;
	size_t errlen;
	char path[FY_STATE_MSG_MAX];
};

static int compat_fail(struct compat *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int compat_fail(struct compat *c, int code, const char *fmt, ...)
{
	char what[FY_STATE_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	fy_state_msg(c->err, c->errlen, "%s%s: %s", c->label, c->path, what);
	return code;
}

static int compat_struct(struct compat *c, const struct fy_snode *s,
			 const struct fy_snode *l);

static int compat_node(struct compat *c, const struct fy_snode *s,
		       const struct fy_snode *l)
{
	char sd[96], ld[96];
	uint32_t sf = s->flags & FY_SF_FIXED, lf = l->flags & FY_SF_FIXED;

	fy_snode_desc(s, sd, sizeof(sd));
	fy_snode_desc(l, ld, sizeof(ld));
	if (s->kind != l->kind || sf != lf || (sf && s->size != l->size))
		return compat_fail(c, FERRY_EMISMATCH,
				   "type changed: the stream has %s, this side "
				   "expects %s", sd, ld);
	if (s->kind == FY_K_STRUCT)
		return compat_struct(c, s, l);
	if (s->kind == FY_K_ARRAY) {
		size_t at = strlen(c->path);
		int rc;

		snprintf(c->path + at, sizeof(c->path) - at, "[]");
		rc = compat_node(c, &s->kids[0], &l->kids[0]);
		c->path[at] = '\0';
		return rc;
	}
	return 0;
}

static int compat_struct(struct compat *c, const struct fy_snode *s,
			 const struct fy_snode *l)
{
	size_t at = strlen(c->path);

	for (uint32_t i = 0; i < s->nkids; i++) {
		const struct fy_snode *sk = &s->kids[i];
		const struct fy_snode *lk = fy_snode_find(l, sk->name);
		int rc = 0;

		snprintf(c->path + at, sizeof(c->path) - at, ".%s", sk->name);
		if (!lk && (sk->flags & FY_SF_MUST))
			rc = compat_fail(c, FERRY_EUNKNOWN,
					 "field unknown here but marked "
					 "must-understand by the sender "
					 "(type %s v%" PRIu32 ")",
					 c->sender->type, c->sender->version);
		else if (lk)
			rc = compat_node(c, sk, lk);
		c->path[at] = '\0';
		if (rc)
			return rc;
	}
	return 0;
}

/**
 * fy_schema_compat() - can values of @sender's schema load into @local?
 * @sender: the schema from the stream.
 * @local: the schema captured from the local visit function.
 * @label: prefix of messages (the instance name).
 * @err: receives a message naming the field ("console0.uart.lsr: ...").
 * @errlen: size of @err.
 *
 * Fields match by name at every level. Checked before any value is read,
 * so the answer does not depend on what the arrays hold: a sender field
 * this side lacks must be skippable, and a field both have must have the
 * same type (kind, fixedness, fixed size; capacities may differ, values are
 * checked against them when loaded). Fields only this side has are fine.
 *
 * Return: 0, FERRY_EUNKNOWN, or FERRY_EMISMATCH.
 */
int fy_schema_compat(const struct fy_schema *sender,
		     const struct fy_schema *local, const char *label,
		     char *err, size_t errlen)
{
	struct compat c = { sender, label, err, errlen, "" };

	return compat_struct(&c, &sender->root, &local->root);
}

/* ---- values ---- */

/**
 * fy_value_skip() - move @c past one encoded value of node @n.
 * @n: the node (from a finished schema).
 * @c: the cursor.
 * @depth: current nesting; recursion stops at FY_STATE_MAX_DEPTH.
 *
 * Also checks what the encoding itself promises: bools are 0 or 1, lengths
 * and counts within the node's declared capacities, strings free of NUL.
 * Counts are checked against the bytes left before any loop, and every
 * element takes at least one byte, so the cost is bounded by the length.
 *
 * Return: 0, or -EBADMSG (the cursor is then failed).
 */
int fy_value_skip(const struct fy_snode *n, struct fy_cur *c, unsigned depth)
{
	const uint8_t *p;
	uint32_t len;

	if (depth > FY_STATE_MAX_DEPTH + 1)
		goto bad;
	if (n->plain)
		return fy_cur_bytes(c, &p, n->fixsize);
	switch (n->kind) {
	case FY_K_BOOL:
		if (fy_cur_bytes(c, &p, 1) || p[0] > 1)
			goto bad;
		return 0;
	case FY_K_STRING:
	case FY_K_BYTES:
		if (fy_cur_u32(c, &len) || len > n->size ||
		    fy_cur_bytes(c, &p, len))
			goto bad;
		if (n->kind == FY_K_STRING && memchr(p, 0, len))
			goto bad;
		return 0;
	case FY_K_ARRAY:
		len = n->size;
		if (!(n->flags & FY_SF_FIXED) &&
		    (fy_cur_u32(c, &len) || len > n->size))
			goto bad;
		if (sat_mul(len, n->kids[0].minsize) > c->len - c->off)
			goto bad;
		for (uint32_t i = 0; i < len; i++)
			if (fy_value_skip(&n->kids[0], c, depth + 1))
				goto bad;
		return 0;
	case FY_K_STRUCT:
		for (uint32_t i = 0; i < n->nkids; i++)
			if (fy_value_skip(&n->kids[i], c, depth + 1))
				goto bad;
		return 0;
	}
bad:
	c->bad = true;
	return -EBADMSG;
}
