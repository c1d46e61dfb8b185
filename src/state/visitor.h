/* SPDX-License-Identifier: MIT */
/*
 * visitor.h - the inside of ferry_visitor, shared by visit.c (entry points,
 * frames, errors), writer.c (schema capture and writer) and reader.c
 * (loader). Not API: a VMM only ever holds a pointer to one, during a
 * ferry_state_* call.
 */
#ifndef FY_STATE_VISITOR_H
#define FY_STATE_VISITOR_H

#include "state/state.h"

enum fy_vmode {
	FY_V_SCHEMA = 1, /* record the field tree */
	FY_V_WRITE = 2,	 /* append values, following the captured schema */
	FY_V_READ = 3,	 /* load values, following the sender's schema */
};

/* One visit call, normalised by visit.c before a mode sees it. */
struct fy_fval {
	uint32_t kind;	  /* enum fy_kind */
	const char *name; /* NULL for array elements */
	bool elem;	  /* visited inside an array */
	uint32_t flags;	  /* FY_SF_*: MUST (never on elements), FIXED */
	void *ptr;	  /* the value: integer, bool, char[], bytes */
	uint64_t def;	  /* integer/bool default (two's complement) */
	const char *sdef; /* string default, never NULL */
	uint32_t size;	  /* string: max bytes; bytes: size/capacity;
			     array: count/max */
	uint32_t *lenp;	  /* variable bytes: length; arrays: count */
	bool alloc;	  /* bytes: ptr is a void ** to a malloc()ed buffer
			     the reader replaces (ferry_visit_bytes_alloc) */
};

/*
 * An open struct or array. Frame 0 is the device itself (a struct).
 * Which members matter depends on the mode.
 */
struct fy_frame {
	uint32_t kind;	    /* FY_K_STRUCT or FY_K_ARRAY */
	const char *name;   /* the local name it was opened with (paths) */
	const struct fy_snode *node; /* WRITE: the captured node; READ: the
					sender's (NULL for defaults) */
	struct fy_snode *build;	     /* SCHEMA: the node being built */
	uint32_t index;	    /* arrays: elements begun; WRITE structs: next
			       field of the schema */
	uint32_t count;	    /* arrays: elements to visit */
	bool defaults;	    /* READ: absent from the stream */
	uint32_t hint;	    /* READ structs: where the next name likely is */
	size_t pos;	    /* READ arrays: offset of the next element */
	size_t end;	    /* READ: end of this value in the data */
};

struct ferry_visitor {
	enum fy_vmode mode;
	int err;
	char msg[FY_STATE_MSG_MAX];
	const char *label; /* message prefix: instance or type name */
	unsigned depth;
	struct fy_frame f[FY_STATE_MAX_DEPTH + 1];

	struct fy_schema *schema;	/* SCHEMA: being built */
	const struct fy_schema *follow; /* WRITE: the captured schema */
	struct fy_buf *out;		/* WRITE */
	const struct fy_schema *sender; /* READ */
	const uint8_t *data;		/* READ: the values */
	size_t len;
	/* READ: per depth, where each sender field's value starts (nkids+1
	 * entries) and whether the local side visited it. */
	size_t *offs[FY_STATE_MAX_DEPTH + 1];
	uint8_t *used[FY_STATE_MAX_DEPTH + 1];
	uint32_t ocap[FY_STATE_MAX_DEPTH + 1];
};

/* visit.c */
void fy_visitor_init(struct ferry_visitor *v, enum fy_vmode mode,
		     const char *label);
void fy_visitor_fini(struct ferry_visitor *v);
int fy_visitor_run(struct ferry_visitor *v, const struct ferry_device_type *t,
		   void *dev, char *err, size_t errlen);
/* Record the first error: "<label><path>[leaf]: <text>". @fv names the
 * leaf (its name, or [i] for an element); @leaf, when not NULL, is a field
 * name used instead. Returns v->err. */
int fy_vfail(struct ferry_visitor *v, int code, const struct fy_fval *fv,
	     const char *leaf, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/* Open a frame of @kind; -EINVAL past FY_STATE_MAX_DEPTH. */
struct fy_frame *fy_frame_push(struct ferry_visitor *v,
			       const struct fy_fval *fv);
void fy_int_store(void *p, unsigned width, uint64_t val);
uint64_t fy_int_load(const void *p, unsigned width);

/* writer.c */
int fy_cap_field(struct ferry_visitor *v, struct fy_fval *fv);
int fy_cap_end(struct ferry_visitor *v);
int fy_wr_field(struct ferry_visitor *v, struct fy_fval *fv);
int fy_wr_end(struct ferry_visitor *v);

/* reader.c */
int fy_rd_field(struct ferry_visitor *v, struct fy_fval *fv);
int fy_rd_end(struct ferry_visitor *v);
int fy_rd_root(struct ferry_visitor *v);

#endif /* FY_STATE_VISITOR_H */
