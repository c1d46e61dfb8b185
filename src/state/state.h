/* SPDX-License-Identifier: MIT */
/*
 * state.h - self-describing device state: the internal interface of
 * src/state. Pure code: no I/O, no global state, allocation bounded by the
 * limits below. docs/state-format.md is the specification of the bytes.
 *
 * A state section is a sequence of wire records (src/wire framing: header,
 * body padded to 8, checksum), carried as the body of the engine's STATE
 * record:
 *
 *   STATE_SCHEMA  once per device type: type name, version, field tree
 *   STATE_DEVICE  once per instance: type name, instance name, flags, then
 *                 the values of the fields, in schema order, without names
 *   STATE_END     last record: counts of the two above
 *
 * Files:
 *   schema.c   schema trees: encode, decode and validate, compatibility of a
 *              sender's schema with the local one, skipping encoded values
 *   visit.c    the public ferry_visit_* entry points, frames, error paths
 *   writer.c   the source-side visitor modes: schema capture and writer
 *   reader.c   the destination-side visitor mode: load by field name
 *   section.c  records of a section: save, end, load, and the walker that
 *              the loader and the dumper share
 *   json.c     JSON text of values (inspect, print) and JSON Schema export
 */
#ifndef FY_STATE_H
#define FY_STATE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry.h"
#include "wire/wire.h"

/* Record numbers of a state section (range 0x0300-0x03ff of wire.h). */
enum fy_state_rec {
	FY_REC_STATE_SCHEMA = 0x0300,
	FY_REC_STATE_DEVICE = 0x0301,
	FY_REC_STATE_END = 0x0302,
};

/*
 * Limits. Everything a stream says is checked against them before it is
 * used, so that a hostile section costs bounded memory and time.
 */
#define FY_STATE_NAME_MAX 64	    /* names: at most 63 bytes */
#define FY_STATE_MAX_DEPTH 16	    /* struct/array nesting below the root */
#define FY_STATE_MAX_FIELDS 1024    /* fields of one struct */
#define FY_STATE_MAX_NODES 4096	    /* nodes of one schema */
#define FY_STATE_MAX_TYPES 256	    /* schemas in one section */
#define FY_STATE_MAX_SECTION_NODES 65536 /* nodes of all schemas together */
#define FY_STATE_MAX_DEVICES 65536  /* device records in one section */
#define FY_STATE_MAX_COUNT (1u << 24) /* elements of one array */
#define FY_STATE_MAX_BYTES FY_REC_MAX_BODY /* bytes of a string/bytes field */
#define FY_STATE_MSG_MAX 512	    /* error messages */

/* Field kinds, as numbered on the wire. */
enum fy_kind {
	FY_K_U8 = 1,
	FY_K_U16 = 2,
	FY_K_U32 = 3,
	FY_K_U64 = 4,
	FY_K_I8 = 5,
	FY_K_I16 = 6,
	FY_K_I32 = 7,
	FY_K_I64 = 8,
	FY_K_BOOL = 9,
	FY_K_STRING = 10,
	FY_K_BYTES = 11,
	FY_K_ARRAY = 12,
	FY_K_STRUCT = 13,
};
#define FY_K_MAX FY_K_STRUCT

/* Schema field flags, as on the wire. */
#define FY_SF_MUST 0x1u	 /* must-understand (else skippable) */
#define FY_SF_FIXED 0x2u /* bytes/array: exactly size bytes/elements */
#define FY_SF_ALL (FY_SF_MUST | FY_SF_FIXED)

/* DEVICE record flags. */
#define FY_DEV_OPTIONAL 0x1u /* a destination without it may drop it */

/*
 * One node of a schema tree: a field, an array's element, or the root.
 * Struct nodes own an array of their fields; array nodes own exactly one
 * child, the element.
 */
struct fy_snode {
	char name[FY_STATE_NAME_MAX]; /* "" for the root and array elements */
	uint32_t kind;		      /* enum fy_kind */
	uint32_t flags;		      /* FY_SF_* */
	uint64_t def;		      /* integer/bool default; signed kinds
					 hold the two's complement */
	char *sdef;		      /* string default (owned), NULL = "" */
	uint32_t size;		      /* string: max bytes; bytes: size or
					 capacity; array: count or max */
	uint32_t nkids;
	uint32_t capkids;
	struct fy_snode *kids;
	uint64_t minsize;  /* fewest bytes a value can encode to */
	uint64_t fixsize;  /* bytes every value encodes to, 0 if it varies */
	bool plain;	   /* fixsize and no byte needs checking (no bool):
			      skipping is one bounds check */
};

struct fy_schema {
	char type[FY_STATE_NAME_MAX];
	uint32_t version;
	uint32_t nnodes; /* including the root */
	struct fy_snode root; /* kind FY_K_STRUCT */
};

/* ---- names and kinds (schema.c) ---- */
bool fy_state_field_name_ok(const char *s);
bool fy_state_name_ok(const char *s);
const char *fy_kind_name(uint32_t kind);
/* Integer kinds: width in bytes (0 for others) and signedness. */
unsigned fy_kind_width(uint32_t kind);
bool fy_kind_signed(uint32_t kind);
/* "bytes[16]", "array(<=8)", "u32": for messages. */
void fy_snode_desc(const struct fy_snode *n, char *buf, size_t len);

/* ---- schema trees (schema.c) ---- */
struct fy_schema *fy_schema_new(const char *type, uint32_t version);
void fy_schema_free(struct fy_schema *s);
/* Append a zeroed child to @parent; NULL on -ENOMEM. */
struct fy_snode *fy_snode_add(struct fy_snode *parent);
const struct fy_snode *fy_snode_find(const struct fy_snode *parent,
				     const char *name);
/* Check limits and compute minsize/fixsize of every node. */
int fy_schema_finish(struct fy_schema *s, char *err, size_t errlen);
int fy_schema_encode(const struct fy_schema *s, struct fy_buf *out);
int fy_schema_decode(const uint8_t *p, size_t n, struct fy_schema **out,
		     char *err, size_t errlen);
int fy_schema_compat(const struct fy_schema *sender,
		     const struct fy_schema *local, const char *label,
		     char *err, size_t errlen);
/* Skip one encoded value of node @n at the cursor; -EBADMSG if malformed. */
int fy_value_skip(const struct fy_snode *n, struct fy_cur *c,
		  unsigned depth);

/* ---- visitors (visit.c, writer.c, reader.c) ---- */
int fy_schema_capture(const struct ferry_device_type *t,
		      struct fy_schema **out, char *err, size_t errlen);
int fy_visit_write(const struct ferry_device_type *t,
		   const struct fy_schema *s, void *dev, const char *label,
		   struct fy_buf *out, char *err, size_t errlen);
int fy_visit_read(const struct ferry_device_type *t,
		  const struct fy_schema *sender, void *dev, const char *label,
		  const uint8_t *vals, size_t n, char *err, size_t errlen);
/* Validate a device type description (name, size, visit). */
int fy_device_type_check(const struct ferry_device_type *t, char *err,
			 size_t errlen);

/* ---- sections (section.c) ---- */
int fy_state_save(struct fy_buf *out, const struct ferry_device_type *t,
		  const char *instance, void *dev, char *err, size_t errlen);
int fy_state_end(struct fy_buf *out, char *err, size_t errlen);

/*
 * The walker: checks a whole section (framing, record order, schemas,
 * value encodings, the END record) and reports what it holds. The loader
 * and the dumper are both walkers, so they accept exactly the same streams.
 * Callbacks return 0 or a negative code with a message in @err.
 */
struct fy_state_walk_ops {
	void *ctx;
	int (*schema)(void *ctx, const struct fy_schema *s, char *err,
		      size_t errlen);
	int (*device)(void *ctx, const struct fy_schema *s,
		      const char *instance, uint32_t flags,
		      const uint8_t *vals, size_t n, char *err,
		      size_t errlen);
	int (*skipped)(void *ctx, uint32_t type, uint32_t length, char *err,
		       size_t errlen);
};
int fy_state_walk(const void *data, size_t len,
		  const struct fy_state_walk_ops *ops, char *err,
		  size_t errlen);

/* ---- JSON (json.c) ---- */
int fy_state_dump_json(const void *data, size_t len, struct fy_buf *out,
		       char *err, size_t errlen);
int fy_state_dump_schemas_json(const void *data, size_t len,
			       struct fy_buf *out, char *err, size_t errlen);
int fy_state_schema_json(const struct ferry_device_type *t,
			 struct fy_buf *out);
int fy_state_values_json(const struct fy_schema *s, const uint8_t *vals,
			 size_t n, struct fy_buf *out);
int fy_schema_to_json(const struct fy_schema *s, struct fy_buf *out);

/* Any bytes as a JSON string (for src/inspect). 0 or -ENOMEM. */
int fy_json_put_str(struct fy_buf *out, const void *s, size_t n);

/* ---- messages ---- */
void fy_state_msg(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif /* FY_STATE_H */
