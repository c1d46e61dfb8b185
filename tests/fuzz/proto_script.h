/* SPDX-License-Identifier: MIT */
/*
 * proto_script.h - the record types a fuzz_proto script names by index,
 * shared by the harness and the seed generator so that the committed
 * scripts mean what they were written to mean.
 */
#ifndef FERRY_FUZZ_PROTO_SCRIPT_H
#define FERRY_FUZZ_PROTO_SCRIPT_H

#include <stdint.h>

#include "wire/wire.h"

static const uint32_t fz_proto_types[] = {
	FY_REC_HELLO, FY_REC_CONFIG, FY_REC_PASS_BEGIN, FY_REC_PASS_END,
	FY_REC_STATE, FY_REC_SWITCHOVER, FY_REC_RELEASED, FY_REC_ABORT,
	FY_REC_JOIN, FY_REC_OK, FY_REC_ERROR, FY_REC_MEMORY,
	FY_REC_DISCARD, FY_REC_POSTCOPY, FY_REC_PAGE_REQ, FY_REC_POSTCOPY_END,
	FY_REC_RESUME, FY_REC_OPTIONAL | 0x7123u, 0x7123u,
	FY_REC_OPTIONAL | FY_REC_DISCARD,
	FY_REC_MEMORY_FDS, FY_REC_DEVICE_FDS,
};
#define FZ_PROTO_NTYPES (sizeof(fz_proto_types) / sizeof(fz_proto_types[0]))

/* Script events (op byte % 8). */
enum fz_proto_op {
	FZ_RX_RECORD = 0,
	FZ_RX_FAIL,
	FZ_RX_RECONNECT,
	FZ_TX_REQUEST,
	FZ_TX_RESPONSE, /* ERROR when the type is ERROR, else OK */
	FZ_TX_FAIL,
	FZ_TX_NOT_RUN,
	FZ_TX_INPUT,
};
/* Seq bytes: 0 = 0, 1 = next, 2 = last again, else the byte. */
enum { FZ_SEQ_ZERO = 0, FZ_SEQ_NEXT, FZ_SEQ_LAST };

#endif /* FERRY_FUZZ_PROTO_SCRIPT_H */
