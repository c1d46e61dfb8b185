/* SPDX-License-Identifier: MIT */
/*
 * state_dev.h - device types for the state-reader harness and its seeds:
 * one type with a field of every kind (integers of each width and sign,
 * bool, string, fixed and variable bytes, a struct, fixed and variable
 * arrays, an array of structs) in three versions, and a small optional
 * type. Objects are allocated at their exact size so that AddressSanitizer
 * sees any write past them.
 */
#ifndef FERRY_FUZZ_STATE_DEV_H
#define FERRY_FUZZ_STATE_DEV_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry.h"

#define FZ_REGS 4
#define FZ_FIXED 3
#define FZ_ENTS 3

struct fz_entry {
	uint16_t id;
	char tag[8];
	int32_t delta;
};

struct fz_dev {
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
	uint8_t key[8];
	uint8_t blob[32];
	uint32_t blob_len;
	struct {
		uint8_t lsr;
		uint8_t ier;
	} uart;
	uint32_t nregs;
	uint32_t regs[FZ_REGS];
	uint32_t fixed[FZ_FIXED];
	uint32_t nents;
	struct fz_entry ents[FZ_ENTS];
	uint64_t extra; /* only in version 2 (skippable) and 3 (must) */
};

struct fz_small {
	uint32_t mode;
	char label[12];
};

/* fz.dev version 1 (what the harness loads into), version 0 (fewer
 * fields), 2 (an extra skippable field), 3 (an extra must-understand
 * field); fz.small (an optional device type). */
extern const struct ferry_device_type fz_dev_v1, fz_dev_v0, fz_dev_v2,
	fz_dev_v3, fz_small_type;

/* Fill @d with values derived from @seed, within every capacity. */
void fz_dev_fill(struct fz_dev *d, uint32_t seed);

/* Abort if a loaded object breaks a capacity (counts, lengths, strings). */
void fz_dev_check(const struct fz_dev *d);
void fz_small_check(const struct fz_small *s);

#endif /* FERRY_FUZZ_STATE_DEV_H */
