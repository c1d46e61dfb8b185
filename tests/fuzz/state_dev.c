// SPDX-License-Identifier: MIT
/*
 * state_dev.c - the device types of state_dev.h.
 */
#include "state_dev.h"

#include <stdio.h>
#include <string.h>

#include "fuzz_common.h"

#define MUST FERRY_FIELD_MUST
#define SKIP FERRY_FIELD_SKIPPABLE

static void visit_entry(ferry_visitor *v, struct fz_entry *e)
{
	if (ferry_visit_struct_begin(v, NULL, 0))
		return;
	ferry_visit_u16(v, "id", &e->id, 0, MUST);
	ferry_visit_string(v, "tag", e->tag, sizeof(e->tag), "none", SKIP);
	ferry_visit_i32(v, "delta", &e->delta, -1, MUST);
	ferry_visit_struct_end(v);
}

/* The fields every version has, in version @ver's order and flags. */
static int visit_dev(ferry_visitor *v, struct fz_dev *d, int ver)
{
	uint32_t n;

	ferry_visit_u8(v, "u8", &d->u8, 1, MUST);
	ferry_visit_u16(v, "u16", &d->u16, 2, MUST);
	ferry_visit_u32(v, "u32", &d->u32, 3, SKIP);
	if (ver >= 1)
		ferry_visit_u64(v, "u64", &d->u64, 4, MUST);
	ferry_visit_i8(v, "i8", &d->i8, -1, MUST);
	ferry_visit_i16(v, "i16", &d->i16, -2, SKIP);
	ferry_visit_i32(v, "i32", &d->i32, -3, MUST);
	ferry_visit_i64(v, "i64", &d->i64, -4, MUST);
	ferry_visit_bool(v, "flag", &d->flag, true, SKIP);
	ferry_visit_string(v, "name", d->name, sizeof(d->name), "dev", MUST);
	ferry_visit_bytes(v, "key", d->key, sizeof(d->key), MUST);
	if (ver >= 1)
		ferry_visit_bytes_var(v, "blob", d->blob, &d->blob_len,
				      sizeof(d->blob), SKIP);
	if (ferry_visit_struct_begin(v, "uart", MUST) == 0) {
		ferry_visit_u8(v, "lsr", &d->uart.lsr, 0x60, MUST);
		if (ver >= 1)
			ferry_visit_u8(v, "ier", &d->uart.ier, 0, SKIP);
		ferry_visit_struct_end(v);
	}
	n = d->nregs;
	if (ferry_visit_array_begin(v, "regs", &n, FZ_REGS, MUST) == 0) {
		FZ_ASSERT(n <= FZ_REGS, "array_begin gave %u elements, max %u",
			  n, FZ_REGS);
		for (uint32_t i = 0; i < n; i++)
			ferry_visit_u32(v, NULL, &d->regs[i], 0, 0);
		ferry_visit_array_end(v);
		d->nregs = n;
	}
	if (ferry_visit_array_fixed_begin(v, "fixed", &n, FZ_FIXED, SKIP) == 0) {
		FZ_ASSERT(n <= FZ_FIXED, "fixed array_begin gave %u elements",
			  n);
		for (uint32_t i = 0; i < n; i++)
			ferry_visit_u32(v, NULL, &d->fixed[i], 7, 0);
		ferry_visit_array_end(v);
	}
	n = d->nents;
	if (ferry_visit_array_begin(v, "ents", &n, FZ_ENTS, MUST) == 0) {
		FZ_ASSERT(n <= FZ_ENTS, "array_begin gave %u elements, max %u",
			  n, FZ_ENTS);
		for (uint32_t i = 0; i < n; i++)
			visit_entry(v, &d->ents[i]);
		ferry_visit_array_end(v);
		d->nents = n;
	}
	if (ver == 2)
		ferry_visit_u64(v, "extra", &d->extra, 0, SKIP);
	if (ver == 3)
		ferry_visit_u64(v, "extra", &d->extra, 0, MUST);
	return ferry_visit_error(v);
}

static int visit_v0(ferry_visitor *v, void *d)
{
	return visit_dev(v, d, 0);
}

static int visit_v1(ferry_visitor *v, void *d)
{
	return visit_dev(v, d, 1);
}

static int visit_v2(ferry_visitor *v, void *d)
{
	return visit_dev(v, d, 2);
}

static int visit_v3(ferry_visitor *v, void *d)
{
	return visit_dev(v, d, 3);
}

static int visit_small(ferry_visitor *v, void *p)
{
	struct fz_small *s = p;

	ferry_visit_u32(v, "mode", &s->mode, 0, MUST);
	ferry_visit_string(v, "label", s->label, sizeof(s->label), NULL, SKIP);
	return ferry_visit_error(v);
}

const struct ferry_device_type fz_dev_v0 = { "fz.dev", 0, sizeof(struct fz_dev),
					     visit_v0, 0 };
const struct ferry_device_type fz_dev_v1 = { "fz.dev", 1, sizeof(struct fz_dev),
					     visit_v1, 0 };
const struct ferry_device_type fz_dev_v2 = { "fz.dev", 2, sizeof(struct fz_dev),
					     visit_v2, 0 };
const struct ferry_device_type fz_dev_v3 = { "fz.dev", 3, sizeof(struct fz_dev),
					     visit_v3, 0 };
const struct ferry_device_type fz_small_type = { "fz.small", 1,
						 sizeof(struct fz_small),
						 visit_small,
						 FERRY_DEVICE_OPTIONAL };

void fz_dev_fill(struct fz_dev *d, uint32_t seed)
{
	memset(d, 0, sizeof(*d));
	d->u8 = (uint8_t)(seed * 3);
	d->u16 = (uint16_t)(seed * 1000 + 7);
	d->u32 = seed * 0x01000193u;
	d->u64 = (uint64_t)seed << 40 | 0x1234;
	d->i8 = (int8_t)-(int)(seed % 100);
	d->i16 = (int16_t)(-300 * (int)(seed % 50));
	d->i32 = -(int32_t)seed * 77;
	d->i64 = -(int64_t)seed << 33;
	d->flag = seed & 1;
	snprintf(d->name, sizeof(d->name), "dev-%u", seed);
	for (size_t i = 0; i < sizeof(d->key); i++)
		d->key[i] = (uint8_t)(seed + i);
	d->blob_len = seed % (sizeof(d->blob) + 1);
	for (uint32_t i = 0; i < d->blob_len; i++)
		d->blob[i] = (uint8_t)(0xa0 + i);
	d->uart.lsr = 0x60;
	d->uart.ier = (uint8_t)seed;
	d->nregs = seed % (FZ_REGS + 1);
	for (uint32_t i = 0; i < d->nregs; i++)
		d->regs[i] = seed + i;
	for (uint32_t i = 0; i < FZ_FIXED; i++)
		d->fixed[i] = 100 * i + seed;
	d->nents = seed % (FZ_ENTS + 1);
	for (uint32_t i = 0; i < d->nents; i++) {
		d->ents[i].id = (uint16_t)(i + 1);
		snprintf(d->ents[i].tag, sizeof(d->ents[i].tag), "e%u", i);
		d->ents[i].delta = -(int32_t)i;
	}
	d->extra = seed;
}

void fz_dev_check(const struct fz_dev *d)
{
	FZ_ASSERT(memchr(d->name, 0, sizeof(d->name)), "name not terminated");
	FZ_ASSERT(d->blob_len <= sizeof(d->blob), "blob_len %u", d->blob_len);
	FZ_ASSERT(d->nregs <= FZ_REGS, "nregs %u", d->nregs);
	FZ_ASSERT(d->nents <= FZ_ENTS, "nents %u", d->nents);
	for (uint32_t i = 0; i < d->nents; i++)
		FZ_ASSERT(memchr(d->ents[i].tag, 0, sizeof(d->ents[i].tag)),
			  "entry tag not terminated");
}

void fz_small_check(const struct fz_small *s)
{
	FZ_ASSERT(memchr(s->label, 0, sizeof(s->label)), "label not terminated");
}
