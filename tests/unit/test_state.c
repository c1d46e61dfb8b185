/* SPDX-License-Identifier: MIT */
/*
 * test_state.c - self-describing device state: what a VMM notices when it
 * saves and loads devices across versions of their description.
 *
 * Loading rules are tested the way they happen in practice: two visit
 * functions for the same device type name, one for the source's version
 * and one for the destination's, and the outcome (values, error code, and a
 * message naming device and field) checked exactly. Sections given to the
 * loader and the dumper are copied into exactly-sized heap buffers so that
 * a sanitizer build catches any read past the end.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "unit.h"

#include "ferry.h"
#include "state/state.h"
#include "wire/wire.h"

/* The engine's definition (src/migrate/engine.h), repeated for the tests
 * of the public ferry_state_save(). */
struct ferry_buf {
	struct fy_buf b;
};

#define MUST FERRY_FIELD_MUST
#define SKIP FERRY_FIELD_SKIPPABLE

/* ---- helpers ---- */

static int load_exact(const struct fy_buf *sec, size_t len,
		      const struct ferry_state_binding *b, size_t n,
		      char *err, size_t errlen)
{
	uint8_t *q = dup_exact(sec->data, len);
	int rc = ferry_state_load(q, len, b, n, err, errlen);

	free(q);
	return rc;
}

static void save_ok(struct fy_buf *sec, const struct ferry_device_type *t,
		    const char *inst, void *dev)
{
	char err[512] = "";
	int rc = ferry_state_save((struct ferry_buf *)sec, t, inst, dev, err,
				  sizeof(err));

	if (rc)
		fail_msg("save %s: %d %s", inst, rc, err);
}

static void end_ok(struct fy_buf *sec)
{
	assert_int_equal(ferry_state_end((struct ferry_buf *)sec), 0);
}

static unsigned count_records(const struct fy_buf *sec, uint32_t type)
{
	size_t off = 0;
	unsigned n = 0;

	while (off < sec->len) {
		struct fy_rec_hdr h;
		const uint8_t *body;
		size_t used;

		assert_int_equal(fy_rec_decode(sec->data + off, sec->len - off,
					       &h, &body, &used), 0);
		n += h.type == type;
		off += used;
	}
	return n;
}

#define assert_contains(hay, needle)                                        \
	do {                                                                \
		if (!strstr((hay), (needle)))                               \
			fail_msg("'%s' not in '%s'", (needle), (hay));      \
	} while (0)

/* ---- a device with every kind of field ---- */

struct qent {
	uint64_t addr;
	uint32_t len;
	bool busy;
	char tag[8];
};

struct full {
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	uint64_t u64;
	int8_t i8;
	int16_t i16;
	int32_t i32;
	int64_t i64;
	bool flag;
	char name[16];
	uint8_t ring[32];
	uint8_t blob[24];
	uint32_t blob_len;
	uint32_t regs[4];
	struct qent q[3];
	uint32_t nq;
	struct {
		uint8_t lsr;
		uint16_t dll;
		int8_t tweak;
	} uart;
	int16_t matrix[2][3];
	uint64_t big[5];
	uint32_t nbig;
};

static void visit_qent(ferry_visitor *v, struct qent *e)
{
	if (ferry_visit_struct_begin(v, NULL, 0))
		return;
	ferry_visit_u64(v, "addr", &e->addr, 0, MUST);
	ferry_visit_u32(v, "len", &e->len, 0, MUST);
	ferry_visit_bool(v, "busy", &e->busy, false, SKIP);
	ferry_visit_string(v, "tag", e->tag, sizeof(e->tag), "", SKIP);
	ferry_visit_struct_end(v);
}

static void visit_matrix(ferry_visitor *v, struct full *f)
{
	uint32_t rows, cols;

	if (ferry_visit_array_fixed_begin(v, "matrix", &rows, 2, MUST))
		return;
	for (uint32_t r = 0; r < rows; r++) {
		if (ferry_visit_array_fixed_begin(v, NULL, &cols, 3, 0))
			return;
		for (uint32_t c = 0; c < cols; c++)
			ferry_visit_i16(v, NULL, &f->matrix[r][c], -1, 0);
		ferry_visit_array_end(v);
	}
	ferry_visit_array_end(v);
}

static int full_visit(ferry_visitor *v, void *dev)
{
	struct full *f = dev;
	uint32_t n;

	ferry_visit_u8(v, "u8", &f->u8, 1, MUST);
	ferry_visit_u16(v, "u16", &f->u16, 2, MUST);
	ferry_visit_u32(v, "u32", &f->u32, 3, MUST);
	ferry_visit_u64(v, "u64", &f->u64, 4, MUST);
	ferry_visit_i8(v, "i8", &f->i8, -1, MUST);
	ferry_visit_i16(v, "i16", &f->i16, -2, MUST);
	ferry_visit_i32(v, "i32", &f->i32, -3, MUST);
	ferry_visit_i64(v, "i64", &f->i64, -4, MUST);
	ferry_visit_bool(v, "flag", &f->flag, true, SKIP);
	ferry_visit_string(v, "name", f->name, sizeof(f->name), "none", MUST);
	ferry_visit_bytes(v, "ring", f->ring, sizeof(f->ring), MUST);
	ferry_visit_bytes_var(v, "blob", f->blob, &f->blob_len,
			      sizeof(f->blob), MUST);
	if (ferry_visit_array_fixed_begin(v, "regs", &n, 4, MUST) == 0) {
		for (uint32_t i = 0; i < n; i++)
			ferry_visit_u32(v, NULL, &f->regs[i], 0, 0);
		ferry_visit_array_end(v);
	}
	if (ferry_visit_array_begin(v, "q", &f->nq, 3, MUST) == 0) {
		for (uint32_t i = 0; i < f->nq; i++)
			visit_qent(v, &f->q[i]);
		ferry_visit_array_end(v);
	}
	if (ferry_visit_struct_begin(v, "uart", MUST) == 0) {
		ferry_visit_u8(v, "lsr", &f->uart.lsr, 0x60, MUST);
		ferry_visit_u16(v, "dll", &f->uart.dll, 12, MUST);
		ferry_visit_i8(v, "tweak", &f->uart.tweak, 0, SKIP);
		ferry_visit_struct_end(v);
	}
	visit_matrix(v, f);
	if (ferry_visit_array_begin(v, "big", &f->nbig, 5, SKIP) == 0) {
		for (uint32_t i = 0; i < f->nbig; i++)
			ferry_visit_u64(v, NULL, &f->big[i], 0, 0);
		ferry_visit_array_end(v);
	}
	return ferry_visit_error(v);
}

static const struct ferry_device_type full_type = {
	.name = "full", .version = 1, .size = sizeof(struct full),
	.visit = full_visit,
};

static void full_fill(struct full *f)
{
	memset(f, 0, sizeof(*f));
	f->u8 = 0xfe;
	f->u16 = 0xbeef;
	f->u32 = 0xdeadbeef;
	f->u64 = UINT64_MAX;
	f->i8 = -128;
	f->i16 = -12345;
	f->i32 = INT32_MIN;
	f->i64 = INT64_MIN + 1;
	f->flag = false;
	strcpy(f->name, "say \"hi\"\n");
	for (int i = 0; i < 32; i++)
		f->ring[i] = (uint8_t)(i * 7);
	f->blob_len = 5;
	memcpy(f->blob, "\x00\x01\xff\x10\x20", 5);
	for (int i = 0; i < 4; i++)
		f->regs[i] = 0x1000u + (uint32_t)i;
	f->nq = 2;
	f->q[0].addr = 0x1000;
	f->q[0].len = 64;
	f->q[0].busy = true;
	strcpy(f->q[0].tag, "rx");
	f->q[1].addr = 0x2000;
	f->q[1].len = 128;
	strcpy(f->q[1].tag, "tx");
	f->uart.lsr = 0x61;
	f->uart.dll = 3;
	f->uart.tweak = -7;
	for (int r = 0; r < 2; r++)
		for (int c = 0; c < 3; c++)
			f->matrix[r][c] = (int16_t)(r * 10 - c);
	f->nbig = 0; /* an empty variable array still has a schema */
}

static void test_roundtrip_every_kind(void **state)
{
	struct full a, b;
	struct fy_buf sec;
	char err[512] = "";
	struct ferry_state_binding bind = { &full_type, "dev0", &b, 0 };

	full_fill(&a);
	memset(&b, 0x5a, sizeof(b));
	fy_buf_init(&sec);
	save_ok(&sec, &full_type, "dev0", &a);
	end_ok(&sec);
	assert_int_equal(count_records(&sec, FY_REC_STATE_SCHEMA), 1);
	assert_int_equal(count_records(&sec, FY_REC_STATE_DEVICE), 1);
	assert_int_equal(count_records(&sec, FY_REC_STATE_END), 1);
	memset(&b, 0, sizeof(b));
	assert_int_equal(load_exact(&sec, sec.len, &bind, 1, err,
				    sizeof(err)), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	fy_buf_free(&sec);
}

/* Values are compact: no names or tags per value, so the device record is
 * barely bigger than the values themselves. */
static void test_values_are_compact(void **state)
{
	struct full a;
	struct fy_buf sec;
	size_t off = 0, device_len = 0;

	full_fill(&a);
	fy_buf_init(&sec);
	save_ok(&sec, &full_type, "dev0", &a);
	while (off < sec.len) {
		struct fy_rec_hdr h;
		const uint8_t *body;
		size_t used;

		assert_int_equal(fy_rec_decode(sec.data + off, sec.len - off,
					       &h, &body, &used), 0);
		if (h.type == FY_REC_STATE_DEVICE)
			device_len = h.length;
		off += used;
	}
	/* 30 B of integers, 1 bool, 4+9 name, 32 ring, 4+5 blob, 16 regs,
	 * 4 + 2 * (8+4+1+4+2) queue, 1+2+1 uart, 12 matrix, 4 big = 163 B of
	 * values, plus the header: str "full", str "dev0", u32 flags. */
	assert_int_equal(device_len, 163 + 8 + 8 + 4);
	fy_buf_free(&sec);
}

static void test_schema_sent_once_per_type(void **state)
{
	struct full a[4];
	struct full b[4];
	struct fy_buf sec;
	struct ferry_state_binding bind[4];
	char names[4][8];
	char err[512] = "";

	fy_buf_init(&sec);
	for (int i = 0; i < 4; i++) {
		full_fill(&a[i]);
		a[i].u32 = (uint32_t)i;
		a[i].nbig = (uint32_t)i;
		for (int k = 0; k < i; k++)
			a[i].big[k] = (uint64_t)k << 40;
		snprintf(names[i], sizeof(names[i]), "cpu%d", i);
		save_ok(&sec, &full_type, names[i], &a[i]);
	}
	end_ok(&sec);
	assert_int_equal(count_records(&sec, FY_REC_STATE_SCHEMA), 1);
	assert_int_equal(count_records(&sec, FY_REC_STATE_DEVICE), 4);
	/* Bindings in another order than the stream's. */
	memset(b, 0, sizeof(b));
	for (int i = 0; i < 4; i++)
		bind[i] = (struct ferry_state_binding){ &full_type,
							names[3 - i],
							&b[3 - i], 0 };
	assert_int_equal(load_exact(&sec, sec.len, bind, 4, err, sizeof(err)),
			 0);
	assert_memory_equal(a, b, sizeof(a));
	fy_buf_free(&sec);
}

/* ---- the console, in several versions ---- */

struct con {
	uint32_t head;
	uint64_t head64;
	uint8_t ring[16];
	uint8_t ring32[32];
	bool echo;
	uint32_t debug;
	uint32_t mode;
	uint32_t baud;
	char motd[16];
	int16_t trim;
	uint8_t fifo[4];
	uint8_t irq_line;
	uint32_t pending[4];
	uint32_t npending;
	uint8_t lsr;
	uint16_t lsr16;
};

static void con_uart(ferry_visitor *v, struct con *c, bool wide)
{
	if (ferry_visit_struct_begin(v, "uart", MUST))
		return;
	if (wide)
		ferry_visit_u16(v, "lsr", &c->lsr16, 0, MUST);
	else
		ferry_visit_u8(v, "lsr", &c->lsr, 0x60, MUST);
	ferry_visit_struct_end(v);
}

/* v1: what the source runs in most tests. */
static int con_v1(ferry_visitor *v, void *dev)
{
	struct con *c = dev;

	ferry_visit_u32(v, "head", &c->head, 0, MUST);
	ferry_visit_bytes(v, "ring", c->ring, sizeof(c->ring), MUST);
	ferry_visit_bool(v, "echo", &c->echo, false, SKIP);
	con_uart(v, c, false);
	return ferry_visit_error(v);
}

/* v2 sender with an extra skippable field. */
static int con_v2_debug(ferry_visitor *v, void *dev)
{
	struct con *c = dev;

	con_v1(v, dev);
	ferry_visit_u32(v, "debug", &c->debug, 0, SKIP);
	return ferry_visit_error(v);
}

/* v2 sender with an extra must-understand field. */
static int con_v2_mode(ferry_visitor *v, void *dev)
{
	struct con *c = dev;

	ferry_visit_u32(v, "mode", &c->mode, 0, MUST);
	con_v1(v, dev);
	return ferry_visit_error(v);
}

/* v2 receiver: fields v1 lacks (each kind of default), its own fields in
 * another order, and without "echo" (removed in v2). */
static int con_v2_new(ferry_visitor *v, void *dev)
{
	struct con *c = dev;
	uint32_t n;

	con_uart(v, c, false);
	ferry_visit_u32(v, "baud", &c->baud, 115200, SKIP);
	ferry_visit_string(v, "motd", c->motd, sizeof(c->motd), "welcome",
			   SKIP);
	ferry_visit_i16(v, "trim", &c->trim, -5, SKIP);
	if (ferry_visit_array_fixed_begin(v, "fifo", &n, 4, SKIP) == 0) {
		for (uint32_t i = 0; i < n; i++)
			ferry_visit_u8(v, NULL, &c->fifo[i], 7, 0);
		ferry_visit_array_end(v);
	}
	if (ferry_visit_struct_begin(v, "irq", SKIP) == 0) {
		ferry_visit_u8(v, "line", &c->irq_line, 4, MUST);
		ferry_visit_struct_end(v);
	}
	if (ferry_visit_array_begin(v, "pending", &c->npending, 4, SKIP) == 0) {
		for (uint32_t i = 0; i < c->npending; i++)
			ferry_visit_u32(v, NULL, &c->pending[i], 0, 0);
		ferry_visit_array_end(v);
	}
	ferry_visit_bytes(v, "ring", c->ring, sizeof(c->ring), MUST);
	ferry_visit_u32(v, "head", &c->head, 0, MUST);
	return ferry_visit_error(v);
}

/* v2 receiver where "head" became a u64. */
static int con_v2_head64(ferry_visitor *v, void *dev)
{
	struct con *c = dev;

	ferry_visit_u64(v, "head", &c->head64, 0, MUST);
	ferry_visit_bytes(v, "ring", c->ring, sizeof(c->ring), MUST);
	con_uart(v, c, false);
	return ferry_visit_error(v);
}

/* v2 receiver where uart.lsr became a u16. */
static int con_v2_lsr16(ferry_visitor *v, void *dev)
{
	struct con *c = dev;

	ferry_visit_u32(v, "head", &c->head, 0, MUST);
	ferry_visit_bytes(v, "ring", c->ring, sizeof(c->ring), MUST);
	con_uart(v, c, true);
	return ferry_visit_error(v);
}

/* v2 receiver with a bigger fixed ring. */
static int con_v2_ring32(ferry_visitor *v, void *dev)
{
	struct con *c = dev;

	ferry_visit_u32(v, "head", &c->head, 0, MUST);
	ferry_visit_bytes(v, "ring", c->ring32, sizeof(c->ring32), MUST);
	con_uart(v, c, false);
	return ferry_visit_error(v);
}

/* v2 receiver that validates what it loaded. */
static int con_v2_checked(ferry_visitor *v, void *dev)
{
	struct con *c = dev;

	con_v1(v, dev);
	if (!ferry_visit_error(v) && c->head >= sizeof(c->ring))
		return ferry_visit_fail(v, -ERANGE, "head %u outside the ring",
					c->head);
	return ferry_visit_error(v);
}

#define CON_TYPE(fn, ver)                                                  \
	{ .name = "console", .version = (ver), .size = sizeof(struct con), \
	  .visit = (fn) }

static const struct ferry_device_type con1 = CON_TYPE(con_v1, 1);

static void con_fill(struct con *c)
{
	memset(c, 0, sizeof(*c));
	c->head = 9;
	for (int i = 0; i < 16; i++)
		c->ring[i] = (uint8_t)('a' + i);
	c->echo = true;
	c->debug = 77;
	c->mode = 3;
	c->lsr = 0x21;
}

/* Save @c with @sender as "console0", load it with @receiver into @out. */
static int con_migrate(const struct ferry_device_type *sender,
		       const struct ferry_device_type *receiver,
		       const struct con *c, struct con *out, char *err,
		       size_t errlen)
{
	struct ferry_state_binding b = { receiver, "console0", out, 0 };
	struct fy_buf sec;
	struct con src = *c;
	int rc;

	fy_buf_init(&sec);
	save_ok(&sec, sender, "console0", &src);
	end_ok(&sec);
	rc = load_exact(&sec, sec.len, &b, 1, err, errlen);
	fy_buf_free(&sec);
	return rc;
}

static void test_rule_extra_skippable_ignored(void **state)
{
	static const struct ferry_device_type tx = CON_TYPE(con_v2_debug, 2);
	struct con c, d;
	char err[512] = "";

	con_fill(&c);
	memset(&d, 0, sizeof(d));
	assert_int_equal(con_migrate(&tx, &con1, &c, &d, err, sizeof(err)), 0);
	assert_int_equal(d.head, 9);
	assert_memory_equal(d.ring, c.ring, 16);
	assert_true(d.echo);
	assert_int_equal(d.lsr, 0x21);
	assert_int_equal(d.debug, 0); /* never touched */
}

static void test_rule_extra_must_fails(void **state)
{
	static const struct ferry_device_type tx = CON_TYPE(con_v2_mode, 2);
	struct con c, d;
	char err[512] = "";

	con_fill(&c);
	memset(&d, 0, sizeof(d));
	assert_int_equal(con_migrate(&tx, &con1, &c, &d, err, sizeof(err)),
			 FERRY_EUNKNOWN);
	assert_contains(err, "console0.mode");
	assert_contains(err, "must-understand");
	assert_contains(err, "stream v2, here v1");
}

static void test_rule_missing_gets_default(void **state)
{
	static const struct ferry_device_type rx = CON_TYPE(con_v2_new, 2);
	struct con c, d;
	char err[512] = "";

	con_fill(&c);
	memset(&d, 0xee, sizeof(d));
	d.npending = 3;
	assert_int_equal(con_migrate(&con1, &rx, &c, &d, err, sizeof(err)), 0);
	/* present in the stream: loaded, whatever the order */
	assert_int_equal(d.head, 9);
	assert_memory_equal(d.ring, c.ring, 16);
	assert_int_equal(d.lsr, 0x21);
	/* absent: the receiver's defaults */
	assert_int_equal(d.baud, 115200);
	assert_string_equal(d.motd, "welcome");
	assert_int_equal(d.trim, -5);
	assert_memory_equal(d.fifo, "\x07\x07\x07\x07", 4);
	assert_int_equal(d.irq_line, 4);
	assert_int_equal(d.npending, 0);
}

static void test_rule_removed_skippable_field(void **state)
{
	static const struct ferry_device_type rx = CON_TYPE(con_v2_new, 2);
	struct con c, d;
	char err[512] = "";

	/* "echo" is skippable in v1 and gone in v2: ignored. */
	con_fill(&c);
	memset(&d, 0, sizeof(d));
	assert_int_equal(con_migrate(&con1, &rx, &c, &d, err, sizeof(err)), 0);
	assert_false(d.echo);
}

static void test_rule_type_changed_fails(void **state)
{
	static const struct ferry_device_type rx = CON_TYPE(con_v2_head64, 2);
	static const struct ferry_device_type rx2 = CON_TYPE(con_v2_lsr16, 2);
	static const struct ferry_device_type rx3 = CON_TYPE(con_v2_ring32, 2);
	struct con c, d;
	char err[512] = "";

	con_fill(&c);
	assert_int_equal(con_migrate(&con1, &rx, &c, &d, err, sizeof(err)),
			 FERRY_EMISMATCH);
	assert_contains(err, "console0.head: type changed");
	assert_contains(err, "the stream has u32, this side expects u64");
	assert_int_equal(con_migrate(&con1, &rx2, &c, &d, err, sizeof(err)),
			 FERRY_EMISMATCH);
	assert_contains(err, "console0.uart.lsr: type changed");
	assert_int_equal(con_migrate(&con1, &rx3, &c, &d, err, sizeof(err)),
			 FERRY_EMISMATCH);
	assert_contains(err, "console0.ring");
	assert_contains(err, "bytes[16]");
	assert_contains(err, "bytes[32]");
}

static void test_vmm_validation_error(void **state)
{
	static const struct ferry_device_type rx = CON_TYPE(con_v2_checked, 2);
	struct con c, d;
	char err[512] = "";

	con_fill(&c);
	c.head = 99;
	assert_int_equal(con_migrate(&con1, &rx, &c, &d, err, sizeof(err)),
			 -ERANGE);
	assert_contains(err, "console0: head 99 outside the ring");
}

/* ---- bounds: a value longer than the receiver's capacity ---- */

struct txt {
	char s[64];
	uint8_t b[64];
	uint32_t blen;
	uint32_t a[16];
	uint32_t n;
};

static int txt_visit(ferry_visitor *v, void *dev, size_t cap)
{
	struct txt *t = dev;

	ferry_visit_string(v, "s", t->s, cap, NULL, MUST);
	ferry_visit_bytes_var(v, "b", t->b, &t->blen, cap, MUST);
	if (ferry_visit_array_begin(v, "a", &t->n, (uint32_t)cap / 4, MUST) ==
	    0) {
		for (uint32_t i = 0; i < t->n; i++)
			ferry_visit_u32(v, NULL, &t->a[i], 0, 0);
		ferry_visit_array_end(v);
	}
	return ferry_visit_error(v);
}

static int txt_big(ferry_visitor *v, void *dev)
{
	return txt_visit(v, dev, 64);
}

static int txt_small(ferry_visitor *v, void *dev)
{
	return txt_visit(v, dev, 8);
}

static const struct ferry_device_type txt64 = {
	.name = "txt", .version = 1, .size = sizeof(struct txt),
	.visit = txt_big,
};
static const struct ferry_device_type txt8 = {
	.name = "txt", .version = 2, .size = sizeof(struct txt),
	.visit = txt_small,
};

static int txt_migrate(const struct txt *src, struct txt *dst, char *err,
		       size_t errlen)
{
	struct ferry_state_binding b = { &txt8, "t0", dst, 0 };
	struct fy_buf sec;
	struct txt s = *src;
	int rc;

	fy_buf_init(&sec);
	save_ok(&sec, &txt64, "t0", &s);
	end_ok(&sec);
	memset(dst, 0x77, sizeof(*dst));
	rc = load_exact(&sec, sec.len, &b, 1, err, errlen);
	fy_buf_free(&sec);
	return rc;
}

static void test_capacity_exceeded_is_erange(void **state)
{
	struct txt a = { .s = "short", .blen = 3, .n = 2 }, d;
	char err[512] = "";

	/* Different capacities are fine while the values fit. */
	assert_int_equal(txt_migrate(&a, &d, err, sizeof(err)), 0);
	assert_string_equal(d.s, "short");
	assert_int_equal(d.blen, 3);
	assert_int_equal(d.n, 2);
	assert_int_equal(d.s[6], 0x77); /* nothing past the string */

	strcpy(a.s, "longer than seven");
	assert_int_equal(txt_migrate(&a, &d, err, sizeof(err)), -ERANGE);
	assert_contains(err, "t0.s: 17 bytes in the stream");
	assert_int_equal((uint8_t)d.s[0], 0x77);

	strcpy(a.s, "ok");
	a.blen = 9;
	assert_int_equal(txt_migrate(&a, &d, err, sizeof(err)), -ERANGE);
	assert_contains(err, "t0.b: 9 bytes");
	assert_int_equal(d.b[0], 0x77);

	a.blen = 1;
	a.n = 3;
	assert_int_equal(txt_migrate(&a, &d, err, sizeof(err)), -ERANGE);
	assert_contains(err, "t0.a: 3 elements");
}

/* ---- variable byte fields allocated on load ---- */

struct blob {
	uint8_t *q;
	uint32_t qlen;
	uint32_t tail;
};

static int blob_visit_max(ferry_visitor *v, struct blob *b, size_t max)
{
	ferry_visit_bytes_alloc(v, "q", (void **)&b->q, &b->qlen, max, MUST);
	ferry_visit_u32(v, "tail", &b->tail, 0, MUST);
	return ferry_visit_error(v);
}

static int blob_visit(ferry_visitor *v, void *dev)
{
	return blob_visit_max(v, dev, 8u << 20);
}

static int blob_visit_small(ferry_visitor *v, void *dev)
{
	return blob_visit_max(v, dev, 1000);
}

/* The same field as a fixed-capacity variable byte field. */
static int blob_visit_var(ferry_visitor *v, void *dev)
{
	struct txt *t = dev;

	ferry_visit_bytes_var(v, "q", t->b, &t->blen, sizeof(t->b), MUST);
	ferry_visit_u32(v, "tail", &t->n, 0, MUST);
	return ferry_visit_error(v);
}

/* An older sender whose device has no "q" field. */
static int blob_visit_old(ferry_visitor *v, void *dev)
{
	struct blob *b = dev;

	ferry_visit_u32(v, "tail", &b->tail, 0, MUST);
	return ferry_visit_error(v);
}

static const struct ferry_device_type blob1 = {
	.name = "blob", .version = 1, .size = sizeof(struct blob),
	.visit = blob_visit,
};
static const struct ferry_device_type blob_small = {
	.name = "blob", .version = 1, .size = sizeof(struct blob),
	.visit = blob_visit_small,
};
static const struct ferry_device_type blob_var = {
	.name = "blob", .version = 1, .size = sizeof(struct txt),
	.visit = blob_visit_var,
};
static const struct ferry_device_type blob_old = {
	.name = "blob", .version = 1, .size = sizeof(struct blob),
	.visit = blob_visit_old,
};

static int blob_migrate(const struct ferry_device_type *st, void *src,
			const struct ferry_device_type *dt, void *dst,
			char *err, size_t errlen)
{
	struct ferry_state_binding b = { dt, "b0", dst, 0 };
	struct fy_buf sec;
	int rc;

	fy_buf_init(&sec);
	save_ok(&sec, st, "b0", src);
	end_ok(&sec);
	rc = load_exact(&sec, sec.len, &b, 1, err, errlen);
	fy_buf_free(&sec);
	return rc;
}

static void test_bytes_alloc_round_trip(void **state)
{
	struct blob a = { .qlen = 3u << 20, .tail = 7 }, d = { 0 };
	char err[512] = "";

	/* MiBs: far more than any fixed buffer a device would embed. */
	a.q = malloc(a.qlen);
	assert_non_null(a.q);
	for (uint32_t i = 0; i < a.qlen; i++)
		a.q[i] = (uint8_t)(i * 7 + (i >> 12));
	d.q = malloc(5); /* replaced, not leaked (ASan would say) */
	assert_int_equal(blob_migrate(&blob1, &a, &blob1, &d, err,
				      sizeof(err)), 0);
	assert_int_equal(d.qlen, a.qlen);
	assert_int_equal(d.tail, 7);
	assert_memory_equal(d.q, a.q, a.qlen);
	free(d.q);

	/* Empty: no buffer at all. */
	d.q = malloc(5);
	a.qlen = 0;
	assert_int_equal(blob_migrate(&blob1, &a, &blob1, &d, err,
				      sizeof(err)), 0);
	assert_null(d.q);
	assert_int_equal(d.qlen, 0);

	/* A saved length without a buffer is the VMM's bug, not a crash. */
	free(a.q);
	a.q = NULL;
	a.qlen = 4;
	{
		struct fy_buf sec;

		fy_buf_init(&sec);
		assert_int_equal(ferry_state_save((struct ferry_buf *)&sec,
						  &blob1, "b0", &a, err,
						  sizeof(err)),
				 -EINVAL);
		assert_contains(err, "b0.q: length 4 but no buffer");
		fy_buf_free(&sec);
	}
	(void)state;
}

static void test_bytes_alloc_limits_and_compat(void **state)
{
	struct blob a = { .qlen = 1500, .tail = 1 }, d = { 0 };
	struct txt t = { .blen = 5, .n = 9 };
	char err[512] = "";

	a.q = calloc(1, a.qlen);
	assert_non_null(a.q);
	/* Longer than this side's maximum: refused, nothing allocated. */
	assert_int_equal(blob_migrate(&blob1, &a, &blob_small, &d, err,
				      sizeof(err)), -ERANGE);
	assert_contains(err, "b0.q: 1500 bytes in the stream");
	assert_null(d.q);
	free(a.q);

	/* The wire field is the same as ferry_visit_bytes_var()'s. */
	memcpy(t.b, "abcde", 5);
	assert_int_equal(blob_migrate(&blob_var, &t, &blob1, &d, err,
				      sizeof(err)), 0);
	assert_int_equal(d.qlen, 5);
	assert_memory_equal(d.q, "abcde", 5);
	assert_int_equal(d.tail, 9);

	/* Absent from the stream: the default, length 0 and no buffer. */
	a = (struct blob){ .tail = 3 };
	assert_int_equal(blob_migrate(&blob_old, &a, &blob1, &d, err,
				      sizeof(err)), 0);
	assert_null(d.q);
	assert_int_equal(d.qlen, 0);
	assert_int_equal(d.tail, 3);
	(void)state;
}

/* ---- records and instances ---- */

static void build_con_section(struct fy_buf *sec, uint32_t extra_type)
{
	struct con c;
	uint8_t body[12] = "hello world";

	con_fill(&c);
	fy_buf_init(sec);
	save_ok(sec, &con1, "console0", &c);
	if (extra_type)
		assert_int_equal(fy_rec_encode(sec, extra_type, 0, 0, body,
					       sizeof(body)), 0);
	end_ok(sec);
}

static void test_unknown_optional_record_skipped(void **state)
{
	struct con d;
	struct ferry_state_binding b = { &con1, "console0", &d, 0 };
	struct fy_buf sec;
	char err[512] = "";

	build_con_section(&sec, FY_REC_OPTIONAL | 0x0350);
	memset(&d, 0, sizeof(d));
	assert_int_equal(load_exact(&sec, sec.len, &b, 1, err, sizeof(err)),
			 0);
	assert_int_equal(d.head, 9);
	fy_buf_free(&sec);
}

static void test_unknown_mandatory_record_fails(void **state)
{
	struct con d;
	struct ferry_state_binding b = { &con1, "console0", &d, 0 };
	struct fy_buf sec;
	char err[512] = "";

	build_con_section(&sec, 0x0350);
	assert_int_equal(load_exact(&sec, sec.len, &b, 1, err, sizeof(err)),
			 FERRY_EUNKNOWN);
	assert_contains(err, "unknown mandatory record 0x0350");
	fy_buf_free(&sec);
	/* The optional bit is part of the type: 0x80000301 is not DEVICE,
	 * and a known number without it is not optional. */
	build_con_section(&sec, FY_REC_OPTIONAL | FY_REC_STATE_DEVICE);
	assert_int_equal(load_exact(&sec, sec.len, &b, 1, err, sizeof(err)),
			 0);
	fy_buf_free(&sec);
}

static int uart_visit(ferry_visitor *v, void *dev)
{
	return ferry_visit_u8(v, "lsr", dev, 0, MUST);
}

static void test_instances_expected_and_unknown(void **state)
{
	static const struct ferry_device_type uart = {
		.name = "uart16550", .version = 1, .size = 1,
		.visit = uart_visit,
	};
	static const struct ferry_device_type uart_opt = {
		.name = "uart16550", .version = 1, .size = 1,
		.visit = uart_visit, .flags = FERRY_DEVICE_OPTIONAL,
	};
	static const struct ferry_device_type serial = {
		.name = "serial", .version = 1, .size = sizeof(struct con),
		.visit = con_v1,
	};
	struct con c, d;
	uint8_t lsr = 5, lsr2 = 0;
	struct ferry_state_binding b[2] = {
		{ &con1, "console0", &d, 0 },
		{ &con1, "console1", &c, 0 },
	};
	struct fy_buf sec, sec2;
	char err[512] = "";

	con_fill(&c);
	fy_buf_init(&sec);
	fy_buf_init(&sec2);
	save_ok(&sec, &con1, "console0", &c);
	save_ok(&sec2, &con1, "console0", &c);
	save_ok(&sec, &uart, "uart1", &lsr);
	save_ok(&sec2, &uart_opt, "uart1", &lsr);
	end_ok(&sec);
	end_ok(&sec2);

	assert_int_equal(load_exact(&sec, sec.len, b, 1, err, sizeof(err)),
			 FERRY_EUNKNOWN);
	assert_contains(err, "uart1");
	assert_contains(err, "not known here");
	/* The uart loads when bound. */
	b[0] = (struct ferry_state_binding){ &uart, "uart1", &lsr2, 0 };
	b[1] = (struct ferry_state_binding){ &con1, "console0", &d, 0 };
	assert_int_equal(load_exact(&sec, sec.len, b, 2, err, sizeof(err)), 0);
	assert_int_equal(lsr2, 5);
	b[0] = (struct ferry_state_binding){ &con1, "console0", &d, 0 };
	b[1] = (struct ferry_state_binding){ &con1, "console1", &c, 0 };
	/* An optional device the destination lacks is dropped. */
	assert_int_equal(load_exact(&sec2, sec2.len, b, 1, err, sizeof(err)),
			 0);
	/* Every expected instance must be there, unless optional. */
	assert_int_equal(load_exact(&sec2, sec2.len, b, 2, err, sizeof(err)),
			 FERRY_EMISMATCH);
	assert_contains(err, "console1");
	assert_contains(err, "missing");
	c.head = 1234;
	b[1].flags = FERRY_BINDING_OPTIONAL;
	assert_int_equal(load_exact(&sec2, sec2.len, b, 2, err, sizeof(err)),
			 0);
	assert_int_equal(c.head, 1234); /* left untouched */
	/* The same instance name with another type. */
	b[0].type = &serial;
	assert_int_equal(load_exact(&sec2, sec2.len, b, 1, err, sizeof(err)),
			 FERRY_EMISMATCH);
	assert_contains(err, "console0 is a console in the stream but a "
			     "serial here");
	fy_buf_free(&sec);
	fy_buf_free(&sec2);
}

static void test_section_structure(void **state)
{
	struct con c, d;
	struct ferry_state_binding b = { &con1, "console0", &d, 0 };
	static const struct ferry_device_type other = CON_TYPE(con_v2_debug, 2);
	struct fy_buf sec;
	size_t len;
	char err[512] = "";

	con_fill(&c);
	fy_buf_init(&sec);
	save_ok(&sec, &con1, "console0", &c);
	len = sec.len;
	/* The same instance twice, or a type name with another schema. */
	assert_int_equal(ferry_state_save((struct ferry_buf *)&sec, &con1,
					  "console0", &c, err, sizeof(err)),
			 -EINVAL);
	assert_contains(err, "saved twice");
	assert_int_equal(ferry_state_save((struct ferry_buf *)&sec, &other,
					  "console1", &c, err, sizeof(err)),
			 -EINVAL);
	assert_contains(err, "another schema");
	assert_int_equal(sec.len, len); /* failures append nothing */
	/* Without END the section is truncated. */
	assert_int_equal(load_exact(&sec, sec.len, &b, 1, err, sizeof(err)),
			 -EBADMSG);
	assert_contains(err, "truncated");
	end_ok(&sec);
	assert_int_equal(ferry_state_end((struct ferry_buf *)&sec), -EINVAL);
	assert_int_equal(ferry_state_save((struct ferry_buf *)&sec, &con1,
					  "console2", &c, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(load_exact(&sec, sec.len, &b, 1, err, sizeof(err)),
			 0);
	/* Bytes after END. */
	assert_int_equal(fy_buf_put_u64(&sec, 0), 0);
	assert_int_equal(load_exact(&sec, sec.len, &b, 1, err, sizeof(err)),
			 -EBADMSG);
	fy_buf_free(&sec);
	/* An empty section (no devices) is valid. */
	fy_buf_init(&sec);
	end_ok(&sec);
	assert_int_equal(load_exact(&sec, sec.len, NULL, 0, err, sizeof(err)),
			 0);
	fy_buf_free(&sec);
}

/* ---- visit functions that break the rules ---- */

struct bad {
	uint32_t x;
	uint32_t y;
	bool extra;
	char s[4];
	uint32_t arr[4];
	uint32_t n;
};

static int bad_dependent(ferry_visitor *v, void *dev)
{
	struct bad *b = dev;

	ferry_visit_u32(v, "x", &b->x, 0, MUST);
	if (b->extra)
		ferry_visit_u32(v, "y", &b->y, 0, MUST);
	return ferry_visit_error(v);
}

static int bad_loop(ferry_visitor *v, void *dev)
{
	struct bad *b = dev;
	uint32_t n = 4;

	if (ferry_visit_array_begin(v, "arr", &b->n, 4, MUST) == 0) {
		for (uint32_t i = 0; i < n; i++) /* ignores the count */
			ferry_visit_u32(v, NULL, &b->arr[i], 0, 0);
		ferry_visit_array_end(v);
	}
	return ferry_visit_error(v);
}

static int bad_count(ferry_visitor *v, void *dev)
{
	struct bad *b = dev;

	if (ferry_visit_array_begin(v, "arr", &b->n, 4, MUST) == 0) {
		for (uint32_t i = 0; i < b->n && i < 4; i++)
			ferry_visit_u32(v, NULL, &b->arr[i], 0, 0);
		ferry_visit_array_end(v);
	}
	return ferry_visit_error(v);
}

static int bad_dup(ferry_visitor *v, void *dev)
{
	struct bad *b = dev;

	ferry_visit_u32(v, "x", &b->x, 0, MUST);
	ferry_visit_u32(v, "x", &b->y, 0, MUST);
	return ferry_visit_error(v);
}

static int bad_flags(ferry_visitor *v, void *dev)
{
	struct bad *b = dev;

	ferry_visit_u32(v, "x", &b->x, 0, 0);
	return ferry_visit_error(v);
}

static int bad_string(ferry_visitor *v, void *dev)
{
	struct bad *b = dev;

	ferry_visit_string(v, "s", b->s, sizeof(b->s), "", MUST);
	return ferry_visit_error(v);
}

static int bad_open(ferry_visitor *v, void *dev)
{
	struct bad *b = dev;

	ferry_visit_struct_begin(v, "inner", MUST);
	ferry_visit_u32(v, "x", &b->x, 0, MUST);
	return ferry_visit_error(v);
}

static int bad_deep(ferry_visitor *v, void *dev)
{
	struct bad *b = dev;
	int depth = 0;

	while (depth < 17 && ferry_visit_struct_begin(v, "s", MUST) == 0)
		depth++;
	ferry_visit_u32(v, "x", &b->x, 0, MUST);
	while (depth-- > 0)
		ferry_visit_struct_end(v);
	return ferry_visit_error(v);
}

static int ok_deep(ferry_visitor *v, void *dev)
{
	struct bad *b = dev;
	int depth = 0;

	while (depth < 16 && ferry_visit_struct_begin(v, "s", MUST) == 0)
		depth++;
	ferry_visit_u32(v, "x", &b->x, 0, MUST);
	while (depth-- > 0)
		ferry_visit_struct_end(v);
	return ferry_visit_error(v);
}

static int save_bad(int (*fn)(ferry_visitor *, void *), struct bad *b,
		    char *err, size_t errlen)
{
	const struct ferry_device_type t = {
		.name = "bad", .version = 1, .size = sizeof(struct bad),
		.visit = fn,
	};
	struct fy_buf sec;
	int rc;

	fy_buf_init(&sec);
	rc = ferry_state_save((struct ferry_buf *)&sec, &t, "bad0", b, err,
			      errlen);
	if (rc)
		assert_int_equal(sec.len, 0);
	fy_buf_free(&sec);
	return rc;
}

static void test_visit_rules_enforced(void **state)
{
	struct bad b = { .x = 1, .extra = true, .n = 1 };
	char err[512] = "";

	assert_int_equal(save_bad(bad_dependent, &b, err, sizeof(err)),
			 -EINVAL);
	assert_contains(err, "bad0");
	assert_contains(err, "must not depend on the object");
	assert_int_equal(save_bad(bad_loop, &b, err, sizeof(err)), -EINVAL);
	assert_contains(err, "bad.arr[1]: more elements visited");
	assert_int_equal(save_bad(bad_dup, &b, err, sizeof(err)), -EINVAL);
	assert_contains(err, "bad.x: field visited twice");
	assert_int_equal(save_bad(bad_flags, &b, err, sizeof(err)), -EINVAL);
	assert_contains(err, "FERRY_FIELD_MUST");
	memcpy(b.s, "abcd", 4); /* no terminator within the capacity */
	assert_int_equal(save_bad(bad_string, &b, err, sizeof(err)), -EINVAL);
	assert_contains(err, "bad0.s: string not terminated");
	assert_int_equal(save_bad(bad_open, &b, err, sizeof(err)), -EINVAL);
	assert_contains(err, "still open");
	assert_int_equal(save_bad(bad_deep, &b, err, sizeof(err)), -EINVAL);
	assert_contains(err, "deeper than 16");
	assert_int_equal(save_bad(ok_deep, &b, err, sizeof(err)), 0);
	/* A failed save never writes into the object. */
	b.n = 9;
	assert_int_equal(save_bad(bad_count, &b, err, sizeof(err)), -EINVAL);
	assert_contains(err, "bad0.arr: count 9 exceeds the maximum 4");
	assert_int_equal(b.n, 9);
}

/* ---- hostile sections ---- */

static void big_section(struct fy_buf *sec)
{
	struct full a;
	struct con c;

	full_fill(&a);
	a.nbig = 3;
	con_fill(&c);
	fy_buf_init(sec);
	save_ok(sec, &full_type, "dev0", &a);
	save_ok(sec, &con1, "console0", &c);
	assert_int_equal(fy_rec_encode(sec, FY_REC_OPTIONAL | 0x0399, 0, 0,
				       "xyz", 3), 0);
	end_ok(sec);
}

static int load_and_dump(const uint8_t *p, size_t len)
{
	struct full a;
	struct con c;
	struct ferry_state_binding b[2] = {
		{ &full_type, "dev0", &a, 0 },
		{ &con1, "console0", &c, 0 },
	};
	char err[512];
	uint8_t *q = dup_exact(p, len);
	struct fy_buf out;
	int rc, rc2;

	fy_buf_init(&out);
	rc = ferry_state_load(q, len, b, 2, err, sizeof(err));
	rc2 = fy_state_dump_json(q, len, &out, err, sizeof(err));
	/* The loader and the dumper accept exactly the same sections,
	 * except for what only a loader checks (its bindings, capacities). */
	if (rc == 0)
		assert_int_equal(rc2, 0);
	free(q);
	fy_buf_free(&out);
	return rc2;
}

static void test_truncated_at_every_length(void **state)
{
	struct fy_buf sec;

	big_section(&sec);
	assert_int_equal(load_and_dump(sec.data, sec.len), 0);
	for (size_t n = 0; n < sec.len; n++)
		assert_int_not_equal(load_and_dump(sec.data, n), 0);
	fy_buf_free(&sec);
}

/* Rebuild @sec with record @idx's body replaced by @body/@blen (and a
 * valid checksum), so the bytes reach the parsers behind the framing. */
static void rebuild(const struct fy_buf *sec, unsigned idx,
		    const uint8_t *body, size_t blen, struct fy_buf *out)
{
	size_t off = 0;
	unsigned i = 0;

	fy_buf_reset(out);
	while (off < sec->len) {
		struct fy_rec_hdr h;
		const uint8_t *b;
		size_t used;

		assert_int_equal(fy_rec_decode(sec->data + off, sec->len - off,
					       &h, &b, &used), 0);
		if (i++ == idx)
			assert_int_equal(fy_rec_encode(out, h.type, 0, 0, body,
						       blen), 0);
		else
			assert_int_equal(fy_rec_encode(out, h.type, 0, 0, b,
						       h.length), 0);
		off += used;
	}
}

static void record_body(const struct fy_buf *sec, unsigned idx,
			const uint8_t **body, size_t *len)
{
	size_t off = 0;

	for (unsigned i = 0; off < sec->len; i++) {
		struct fy_rec_hdr h;
		size_t used;

		assert_int_equal(fy_rec_decode(sec->data + off, sec->len - off,
					       &h, body, &used), 0);
		*len = h.length;
		if (i == idx)
			return;
		off += used;
	}
	fail();
}

static void test_corrupt_bodies_fail_cleanly(void **state)
{
	struct fy_buf sec, out;
	unsigned nrec = 6; /* schema, dev, schema, dev, optional, end */

	big_section(&sec);
	fy_buf_init(&out);
	assert_int_equal(count_records(&sec, FY_REC_STATE_END), 1);
	for (unsigned r = 0; r < nrec; r++) {
		const uint8_t *body;
		size_t len;
		uint8_t *copy;

		record_body(&sec, r, &body, &len);
		copy = dup_exact(body, len);
		/* every shorter body is an error (the optional record's
		 * content is nobody's business) */
		for (size_t n = 0; n < len; n++) {
			rebuild(&sec, r, copy, n, &out);
			if (r != 4)
				assert_int_not_equal(
					load_and_dump(out.data, out.len), 0);
			else
				load_and_dump(out.data, out.len);
		}
		/* every byte changed: must not crash, whatever the verdict */
		for (size_t i = 0; i < len; i++) {
			static const uint8_t vals[] = { 0x00, 0x01, 0x7f, 0x80,
							0xff };

			for (size_t k = 0; k < sizeof(vals); k++) {
				uint8_t keep = copy[i];

				copy[i] = vals[k] == keep ? keep ^ 0x40
							  : vals[k];
				rebuild(&sec, r, copy, len, &out);
				load_and_dump(out.data, out.len);
				copy[i] = keep;
			}
		}
		free(copy);
	}
	fy_buf_free(&out);
	fy_buf_free(&sec);
}

static void test_random_mutations(void **state)
{
	struct fy_buf sec, out;
	uint64_t x = 0x9e3779b97f4a7c15ull;

	big_section(&sec);
	fy_buf_init(&out);
	for (int iter = 0; iter < 20000; iter++) {
		unsigned r = (unsigned)(x % 4);
		const uint8_t *body;
		size_t len;
		uint8_t *copy;

		record_body(&sec, r, &body, &len);
		copy = dup_exact(body, len);
		for (int k = 0; k < 1 + (int)(x >> 60) % 4; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			copy[x % len] = (uint8_t)(x >> 32);
		}
		rebuild(&sec, r, copy, len, &out);
		load_and_dump(out.data, out.len);
		free(copy);
	}
	fy_buf_free(&out);
	fy_buf_free(&sec);
}

/* A section with one hand-made schema and one device record. */
static int handmade(const struct fy_buf *schema, const void *vals,
		    size_t vlen)
{
	struct fy_buf sec, dev;
	uint8_t end[8];
	int rc;

	fy_buf_init(&sec);
	fy_buf_init(&dev);
	assert_int_equal(fy_buf_put_str(&dev, "h"), 0);
	assert_int_equal(fy_buf_put_str(&dev, "h0"), 0);
	assert_int_equal(fy_buf_put_u32(&dev, 0), 0);
	assert_int_equal(fy_buf_put(&dev, vals, vlen), 0);
	assert_int_equal(fy_rec_encode(&sec, FY_REC_STATE_SCHEMA, 0, 0,
				       schema->data, schema->len), 0);
	assert_int_equal(fy_rec_encode(&sec, FY_REC_STATE_DEVICE, 0, 0,
				       dev.data, dev.len), 0);
	fy_put_u32(end, 1);
	fy_put_u32(end + 4, 1);
	assert_int_equal(fy_rec_encode(&sec, FY_REC_STATE_END, 0, 0, end, 8),
			 0);
	rc = load_and_dump(sec.data, sec.len);
	fy_buf_free(&sec);
	fy_buf_free(&dev);
	return rc;
}

static void put_field(struct fy_buf *b, const char *name, uint32_t kind,
		      uint32_t flags)
{
	assert_int_equal(fy_buf_put_str(b, name), 0);
	assert_int_equal(fy_buf_put_u32(b, kind), 0);
	assert_int_equal(fy_buf_put_u32(b, flags), 0);
}

static void test_hostile_schemas(void **state)
{
	struct fy_buf s;
	uint8_t vals[16] = { 0 };

	/* An array claiming 2^24 elements with 4 bytes of data. */
	fy_buf_init(&s);
	fy_buf_put_str(&s, "h");
	fy_buf_put_u32(&s, 1);
	fy_buf_put_u32(&s, 0);
	fy_buf_put_u32(&s, 1);
	put_field(&s, "a", FY_K_ARRAY, FY_SF_MUST);
	fy_buf_put_u32(&s, FY_STATE_MAX_COUNT);
	put_field(&s, "", FY_K_U8, 0);
	fy_buf_put_u64(&s, 0);
	fy_put_u32(vals, FY_STATE_MAX_COUNT);
	assert_int_equal(handmade(&s, vals, 4), -EBADMSG);
	fy_put_u32(vals, 3);
	assert_int_equal(handmade(&s, vals, 7), 0);
	/* Structs nested 17 deep. */
	fy_buf_reset(&s);
	fy_buf_put_str(&s, "h");
	fy_buf_put_u32(&s, 1);
	fy_buf_put_u32(&s, 0);
	fy_buf_put_u32(&s, 1);
	for (int i = 0; i < 17; i++) {
		put_field(&s, "s", FY_K_STRUCT, FY_SF_MUST);
		fy_buf_put_u32(&s, 1);
	}
	put_field(&s, "x", FY_K_U8, FY_SF_MUST);
	fy_buf_put_u64(&s, 0);
	assert_int_equal(handmade(&s, vals, 1), -EBADMSG);
	/* A default that does not fit its type, a duplicate name. */
	fy_buf_reset(&s);
	fy_buf_put_str(&s, "h");
	fy_buf_put_u32(&s, 1);
	fy_buf_put_u32(&s, 0);
	fy_buf_put_u32(&s, 1);
	put_field(&s, "x", FY_K_U8, FY_SF_MUST);
	fy_buf_put_u64(&s, 256);
	assert_int_equal(handmade(&s, vals, 1), -EBADMSG);
	fy_buf_reset(&s);
	fy_buf_put_str(&s, "h");
	fy_buf_put_u32(&s, 1);
	fy_buf_put_u32(&s, 0);
	fy_buf_put_u32(&s, 2);
	put_field(&s, "x", FY_K_U8, FY_SF_MUST);
	fy_buf_put_u64(&s, 0);
	put_field(&s, "x", FY_K_U8, FY_SF_MUST);
	fy_buf_put_u64(&s, 0);
	assert_int_equal(handmade(&s, vals, 2), -EBADMSG);
	fy_buf_free(&s);
}

/* ---- JSON ---- */

static void maybe_write(const char *name, const char *text)
{
	const char *dir = getenv("FERRY_STATE_JSON_DIR");
	char path[512];
	FILE *f;

	if (!dir)
		return;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_dump_json(void **state)
{
	struct fy_buf sec;
	char *json = NULL, err[512] = "";

	big_section(&sec);
	assert_int_equal(ferry_state_dump_json(sec.data, sec.len, &json, err,
					       sizeof(err)), 0);
	maybe_write("dump.json", json);
	assert_contains(json, "{\"types\":[{\"name\":\"full\",\"version\":1,");
	assert_contains(json, "{\"instance\":\"console0\",\"type\":\"console\","
			      "\"version\":1,\"optional\":false,\"state\":"
			      "{\"head\":9,\"ring\":\"6162636465666768696a6b"
			      "6c6d6e6f70\",\"echo\":true,\"uart\":"
			      "{\"lsr\":33}}}");
	assert_contains(json, "\"u64\":18446744073709551615");
	assert_contains(json, "\"i64\":-9223372036854775807");
	assert_contains(json, "\"i8\":-128");
	assert_contains(json, "\"name\":\"say \\\"hi\\\"\\n\"");
	assert_contains(json, "\"blob\":\"0001ff1020\"");
	assert_contains(json, "\"q\":[{\"addr\":4096,\"len\":64,\"busy\":true,"
			      "\"tag\":\"rx\"},{\"addr\":8192");
	assert_contains(json, "\"matrix\":[[0,-1,-2],[10,9,8]]");
	assert_contains(json, "\"skipped\":[{\"record\":\"0x80000399\","
			      "\"length\":3}]");
	free(json);
	/* A broken section: an error, no output. */
	assert_int_equal(ferry_state_dump_json(sec.data, sec.len - 1, &json,
					       err, sizeof(err)), -EBADMSG);
	assert_null(json);
	fy_buf_free(&sec);
}

struct esc {
	char s[32];
};

static int esc_visit(ferry_visitor *v, void *dev)
{
	struct esc *e = dev;

	return ferry_visit_string(v, "s", e->s, sizeof(e->s), "\x01", MUST);
}

static void test_print_json_escapes(void **state)
{
	static const struct ferry_device_type t = {
		.name = "esc", .version = 3, .size = sizeof(struct esc),
		.visit = esc_visit,
	};
	struct esc e = { "q\"b\\t\t\x02\xc3\xa9\xff\xe2\x82" };
	char *json = NULL, err[512] = "";

	assert_int_equal(ferry_state_print_json(&t, &e, &json, err,
						sizeof(err)), 0);
	maybe_write("print.json", json);
	assert_string_equal(json, "{\"s\":\"q\\\"b\\\\t\\t\\u0002\xc3\xa9"
				  "\\ufffd\\ufffd\\ufffd\"}");
	free(json);
	assert_int_equal(ferry_state_schema_json(&t, &json, err, sizeof(err)),
			 0);
	assert_contains(json, "\"default\":\"\\u0001\"");
	free(json);
}

static void test_schema_json(void **state)
{
	char *json = NULL, err[512] = "";
	struct fy_buf sec;

	assert_int_equal(ferry_state_schema_json(&full_type, &json, err,
						 sizeof(err)), 0);
	maybe_write("schema.json", json);
	assert_contains(json, "{\"$schema\":\"https://json-schema.org/draft/"
			      "2020-12/schema\",\"title\":\"full\"");
	assert_contains(json, "\"x-ferry-version\":1");
	assert_contains(json, "\"u16\":{\"type\":\"integer\",\"minimum\":0,"
			      "\"maximum\":65535,\"default\":2,"
			      "\"x-ferry-type\":\"u16\","
			      "\"x-ferry-must-understand\":true}");
	assert_contains(json, "\"i8\":{\"type\":\"integer\",\"minimum\":-128,"
			      "\"maximum\":127,\"default\":-1");
	assert_contains(json, "\"flag\":{\"type\":\"boolean\",\"default\":true,"
			      "\"x-ferry-type\":\"bool\","
			      "\"x-ferry-must-understand\":false}");
	assert_contains(json, "\"ring\":{\"type\":\"string\","
			      "\"contentEncoding\":\"base16\"");
	assert_contains(json, "\"minLength\":64,\"maxLength\":64");
	assert_contains(json, "\"q\":{\"type\":\"array\",\"items\":{\"type\":"
			      "\"object\",\"properties\":{\"addr\":");
	assert_contains(json, "\"maxItems\":3");
	assert_contains(json, "\"required\":[\"u8\",\"u16\"");
	free(json);
	/* The schemas a stream carries, without local types. */
	big_section(&sec);
	assert_int_equal(ferry_state_dump_schemas_json(sec.data, sec.len, &json,
						       err, sizeof(err)), 0);
	maybe_write("stream-schemas.json", json);
	assert_contains(json, "{\"full\":{\"$schema\":");
	assert_contains(json, ",\"console\":{\"$schema\":");
	free(json);
	fy_buf_free(&sec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_every_kind),
		cmocka_unit_test(test_values_are_compact),
		cmocka_unit_test(test_schema_sent_once_per_type),
		cmocka_unit_test(test_rule_extra_skippable_ignored),
		cmocka_unit_test(test_rule_extra_must_fails),
		cmocka_unit_test(test_rule_missing_gets_default),
		cmocka_unit_test(test_rule_removed_skippable_field),
		cmocka_unit_test(test_rule_type_changed_fails),
		cmocka_unit_test(test_vmm_validation_error),
		cmocka_unit_test(test_capacity_exceeded_is_erange),
		cmocka_unit_test(test_bytes_alloc_round_trip),
		cmocka_unit_test(test_bytes_alloc_limits_and_compat),
		cmocka_unit_test(test_unknown_optional_record_skipped),
		cmocka_unit_test(test_unknown_mandatory_record_fails),
		cmocka_unit_test(test_instances_expected_and_unknown),
		cmocka_unit_test(test_section_structure),
		cmocka_unit_test(test_visit_rules_enforced),
		cmocka_unit_test(test_truncated_at_every_length),
		cmocka_unit_test(test_corrupt_bodies_fail_cleanly),
		cmocka_unit_test(test_random_mutations),
		cmocka_unit_test(test_hostile_schemas),
		cmocka_unit_test(test_dump_json),
		cmocka_unit_test(test_print_json_escapes),
		cmocka_unit_test(test_schema_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
