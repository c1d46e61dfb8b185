/* SPDX-License-Identifier: MIT */
/*
 * migrate_args.h - the numeric arguments of ferry-vm's migrate command
 * (docs/api-socket.md) and their ranges, and the names of its choices
 * that ferry-vm's options share, declared once. ferry-vm checks
 * requests against this table and the ferry command line checks its
 * options against it, and both say what is allowed with the same words,
 * whichever side of the range a value misses.
 */
#ifndef FERRY_VM_MIGRATE_ARGS_H
#define FERRY_VM_MIGRATE_ARGS_H

#include <assert.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>

#include "ferry.h"

/*
 * X(id, JSON key, CLI option, min, max, step, unit): a value must be a
 * multiple of step from min to max; unit ("" for counts) follows the
 * range in messages.
 */
#define VM_MIGRATE_ARGS(X)                                                     \
	X(DOWNTIME, "downtime_ms", "--downtime-ms", 1, 3600000, 1, " ms")       \
	X(MAX_PASSES, "max_passes", "--max-passes", 1, 1000000, 1, "")          \
	X(MAX_PRECOPY, "max_precopy_ms", "--max-precopy-ms", 0, UINT32_MAX, 1,  \
	  " ms")                                                               \
	X(CONNECTIONS, "connections", "--connections", 1, 64, 1, "")            \
	X(COMPRESS_LEVEL, "compress_level", "--compress-level", 0, 22, 1, "")   \
	X(WINDOW, "window", "--window", 1, 64, 1, "")                           \
	X(CHUNK, "chunk_bytes", "--chunk-size", 4096, 16u << 20, 4096,          \
	  " bytes")                                                            \
	X(MAX_BANDWIDTH, "max_bandwidth", "--max-bandwidth", 0, INT64_MAX, 1,   \
	  " bytes/s")                                                          \
	X(IO_THREADS, "io_threads", "--io-threads", 1, 64, 1, "")               \
	X(POSTCOPY_AFTER, "postcopy_after_passes", "--postcopy-after-passes",   \
	  1, 1000000, 1, "")                                                   \
	X(MAX_PAUSE, "max_pause_ms", "--max-pause-ms", 0, UINT32_MAX, 1, " ms") \
	X(STALL_TIMEOUT, "stall_timeout_ms", "--stall-timeout-ms", 500, 3600000,  \
	  1, " ms")

#define VM_ARG_ENUM(id, key, opt, lo, hi, step, unit) VM_ARG_##id,
enum vm_arg_id { VM_MIGRATE_ARGS(VM_ARG_ENUM) VM_ARG_COUNT };
#undef VM_ARG_ENUM

struct vm_arg_range {
	const char *key;    /* the migrate command's JSON member */
	const char *option; /* the ferry command line's option */
	int64_t min, max, step;
	const char *unit;
};

#define VM_ARG_ROW(id, k, opt, lo, hi, st, u) \
	[VM_ARG_##id] = { .key = k, .option = opt, .min = lo, .max = hi, \
			  .step = st, .unit = u },
static const struct vm_arg_range vm_arg_ranges[] = { VM_MIGRATE_ARGS(VM_ARG_ROW) };
#undef VM_ARG_ROW
static_assert(sizeof(vm_arg_ranges) / sizeof(vm_arg_ranges[0]) == VM_ARG_COUNT,
	      "one range per migrate argument");

/* Is @v allowed for @id? */
static inline int vm_arg_ok(enum vm_arg_id id, int64_t v)
{
	const struct vm_arg_range *r = &vm_arg_ranges[id];

	return v >= r->min && v <= r->max && v % r->step == 0;
}

/* What @id allows, as the end of "X must be ...": "a whole number from 1
 * to 64". */
static inline const char *vm_arg_range_text(enum vm_arg_id id, char *buf,
					    size_t len)
{
	const struct vm_arg_range *r = &vm_arg_ranges[id];

	if (r->step > 1)
		snprintf(buf, len, "a multiple of %" PRId64 " from %" PRId64
			 " to %" PRId64 "%s", r->step, r->min, r->max, r->unit);
	else
		snprintf(buf, len, "a whole number from %" PRId64 " to %" PRId64
			 "%s", r->min, r->max, r->unit);
	return buf;
}

/* ferry_config.tls_engine's values by name, in order, NULL-terminated:
 * ferry-vm's --tls-engine, the migrate command's tls_engine and the ferry
 * command line's --tls-engine take these. */
static const char *const vm_tls_engines[] = {
	[FERRY_TLS_ENGINE_AUTO] = "auto",
	[FERRY_TLS_ENGINE_GNUTLS] = "gnutls",
	[FERRY_TLS_ENGINE_IPSEC_MB] = "ipsec-mb",
	[FERRY_TLS_ENGINE_KTLS] = "ktls",
	NULL,
};
static_assert(sizeof(vm_tls_engines) / sizeof(vm_tls_engines[0]) ==
		      FERRY_TLS_ENGINE_KTLS + 2,
	      "every TLS engine has a name");

#endif /* FERRY_VM_MIGRATE_ARGS_H */
