// SPDX-License-Identifier: MIT
/*
 * test_config.c - what a VMM is told when its configuration or a region is
 * refused: ferry_config_check() names the field and its range, and
 * ferry_session_new() says the same through the log callback; a role's
 * callbacks are asked for only when the session takes that role.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "ferry.h"

static int op_ok(void *o)
{
	(void)o;
	return 0;
}

static int op_save(void *o, struct ferry_buf *b)
{
	(void)o;
	(void)b;
	return 0;
}

static int op_load(void *o, const void *d, size_t n)
{
	(void)o;
	(void)d;
	(void)n;
	return 0;
}

static const struct ferry_vmm_ops all_ops = {
	FERRY_VMM_OPS_INIT,
	.pause = op_ok, .resume = op_ok, .save_state = op_save,
	.load_state = op_load,
};
/* What a destination-only VMM has. */
static const struct ferry_vmm_ops dest_ops = {
	FERRY_VMM_OPS_INIT,
	.resume = op_ok, .load_state = op_load,
};

static char logged[512];

static void on_log(void *o, int level, const char *msg)
{
	(void)o;
	if (level == 0)
		snprintf(logged, sizeof(logged), "%s", msg);
}

/* @set changes a default config; it must be refused with a message that
 * contains @want, both from ferry_config_check() and, through the log,
 * from ferry_session_new(). */
static void refused(void (*set)(struct ferry_config *), const char *want)
{
	struct ferry_config cfg;
	ferry_session *s = NULL;
	char err[256];

	ferry_config_init(&cfg);
	cfg.ops = &all_ops;
	cfg.on_log = on_log;
	set(&cfg);
	assert_int_equal(ferry_config_check(&cfg, err, sizeof(err)), -EINVAL);
	if (!strstr(err, want))
		fail_msg("message \"%s\" does not say \"%s\"", err, want);
	logged[0] = 0;
	assert_int_equal(ferry_session_new(&cfg, &s), -EINVAL);
	assert_null(s);
	assert_string_equal(logged, err);
}

#define REFUSED(name, body, want)                            \
	static void set_##name(struct ferry_config *c) { body; } \
	static void test_##name(void **state)                \
	{                                                    \
		(void)state;                                 \
		refused(set_##name, want);                   \
	}

REFUSED(no_ops, c->ops = NULL, "ops is NULL")
static const struct ferry_vmm_ops no_resume_ops = { FERRY_VMM_OPS_INIT,
						      .pause = op_ok };
REFUSED(no_resume, c->ops = &no_resume_ops, "no resume")
REFUSED(struct_size, c->struct_size -= 8, "ferry_config_init")
/* Callback tables whose struct_size is not a size: a VMM that did not set
 * it (0), a size that ends inside a callback, one that ends before the
 * resume every session needs, and one far past any table. */
static struct ferry_vmm_ops sized_ops = { .pause = op_ok, .resume = op_ok };
REFUSED(ops_size_zero, (sized_ops.struct_size = 0, c->ops = &sized_ops),
	"ops->struct_size is 0: set it to sizeof(struct ferry_vmm_ops)")
REFUSED(ops_size_inside, (sized_ops.struct_size = sizeof(sized_ops) - 3,
			  c->ops = &sized_ops),
	"not the size of any struct ferry_vmm_ops")
REFUSED(ops_size_before_resume,
	(sized_ops.struct_size = offsetof(struct ferry_vmm_ops, resume),
	 c->ops = &sized_ops),
	"not the size of any struct ferry_vmm_ops")
REFUSED(ops_size_huge, (sized_ops.struct_size = 0x5555a000u, c->ops = &sized_ops),
	"ops->struct_size is 1431674880: not the size")
REFUSED(connections_0, c->connections = 0,
	"connections is 0: it must be from 1 to 64")
REFUSED(connections_65, c->connections = 65,
	"connections is 65: it must be from 1 to 64")
REFUSED(window, c->window = 1000,
	"window (0: the default) is 1000: it must be from 0 to 64")
REFUSED(chunk_small, c->chunk_bytes = 512, "chunk_bytes is 512: it must be from 4096")
REFUSED(chunk_huge, c->chunk_bytes = 1u << 30, "chunk_bytes is 1073741824")
REFUSED(chunk_unaligned, c->chunk_bytes = 65536 + 512,
	"must be a multiple of 4096")
REFUSED(throttle_max, c->throttle_max_pct = 100,
	"throttle_max_pct is 100: it must be from 0 to 99")
REFUSED(throttle_initial, (c->throttle_max_pct = 50, c->throttle_initial_pct = 60),
	"throttle_initial_pct is 60: it must be from 0 to 50")
REFUSED(throttle_step, c->throttle_step_pct = 200,
	"throttle_step_pct is 200: it must be from 0 to 99")
REFUSED(compress, c->compress = (enum ferry_compress)7, "compress is 7")
REFUSED(compress_level_lz4, (c->compress = FERRY_COMPRESS_LZ4, c->compress_level = 99),
	"compress_level is 99: for lz4 it must be from")
REFUSED(compress_level_none, c->compress_level = 3,
	"compress_level is 3: for none it must be from 0 to 0")
REFUSED(version_max, c->version_max = 9, "version_max (0: the newest) is 9")
REFUSED(version_min, (c->version_max = 1, c->version_min = 2),
	"version_min (0: the oldest) is 2: it must be from 1 to 1")
REFUSED(capabilities, c->capabilities = 1ull << 40,
	"has bits this library does not know (it knows 0x3ff)")
REFUSED(timeout_strategy, c->timeout_strategy = (enum ferry_timeout_strategy)9,
	"timeout_strategy is 9")
REFUSED(dirty_mode, c->dirty_mode = (enum ferry_dirty_mode)5, "dirty_mode is 5")
REFUSED(bitmap_without_callback, c->dirty_mode = FERRY_DIRTY_BITMAP,
	"no get_dirty_bitmap")
REFUSED(congestion_control, c->congestion_control = "much-longer-than-sixteen",
	"a name of 1 to 15 characters")
REFUSED(stall_short, c->stall_timeout_ms = 499,
	"stall_timeout_ms is 499: it must be from 500 (0.5 s) to 3600000 (1 h), or 0 for the default (10000)")
REFUSED(stall_long, c->stall_timeout_ms = 3600001,
	"stall_timeout_ms is 3600001: it must be from 500")
REFUSED(lane_cpu_negative, c->lane_cpu = -2,
	"lane_cpu is -2: it must be 0 (auto), -1 (none) or a CPU's number plus one")
REFUSED(lane_cpu_large, c->lane_cpu = CPU_SETSIZE + 1,
	"lane_cpu is 1025")
REFUSED(lane_poll_long, c->lane_poll_us = FERRY_LANE_POLL_MAX_US + 1,
	"lane_poll_us is 10001: it must be from 0 (no polling) to 10000 (10 ms)")
REFUSED(lane_poll_huge, c->lane_poll_us = UINT32_MAX, "lane_poll_us is 4294967295")
REFUSED(tls_engine, c->tls_engine = 4,
	"tls_engine is 4: it must be FERRY_TLS_ENGINE_AUTO (0), FERRY_TLS_ENGINE_GNUTLS (1), FERRY_TLS_ENGINE_IPSEC_MB (2) or FERRY_TLS_ENGINE_KTLS (3)")
/* Past INT_MAX: not taken for a negative engine number on the way down. */
REFUSED(tls_engine_huge, c->tls_engine = UINT32_MAX, "tls_engine is 4294967295")

/* Every engine is a valid choice, with TLS or without: whether it can
 * run is found when a connection is secured. */
static void test_tls_engine_range(void **state)
{
	const uint32_t ok[] = { FERRY_TLS_ENGINE_AUTO, FERRY_TLS_ENGINE_GNUTLS,
				FERRY_TLS_ENGINE_IPSEC_MB, FERRY_TLS_ENGINE_KTLS };
	struct ferry_config cfg;
	char err[256];

	(void)state;
	ferry_config_init(&cfg);
	assert_int_equal(cfg.tls_engine, FERRY_TLS_ENGINE_AUTO);
	cfg.ops = &all_ops;
	for (int psk = 0; psk < 2; psk++) {
		cfg.tls_psk_file = psk ? "/nonexistent/keys.psk" : NULL;
		for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
			cfg.tls_engine = ok[i];
			assert_int_equal(ferry_config_check(&cfg, err, sizeof(err)), 0);
		}
	}
}

/* The stall limit's ends and 0 (the default) are taken. */
static void test_stall_range(void **state)
{
	const uint32_t ok[] = { 0, FERRY_STALL_TIMEOUT_MIN_MS, 2000,
				FERRY_STALL_TIMEOUT_MAX_MS };
	struct ferry_config cfg;
	char err[256];

	(void)state;
	ferry_config_init(&cfg);
	assert_int_equal(cfg.stall_timeout_ms, 0);
	cfg.ops = &all_ops;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		cfg.stall_timeout_ms = ok[i];
		assert_int_equal(ferry_config_check(&cfg, err, sizeof(err)), 0);
	}
}

/* The lane's keeper: the default, off (0), and the longest are taken. */
static void test_lane_poll_range(void **state)
{
	const uint32_t ok[] = { FERRY_LANE_POLL_US, 0, 1, 1000, FERRY_LANE_POLL_MAX_US };
	struct ferry_config cfg;
	char err[256];

	(void)state;
	ferry_config_init(&cfg);
	assert_int_equal(cfg.lane_poll_us, FERRY_LANE_POLL_US);
	cfg.ops = &all_ops;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		cfg.lane_poll_us = ok[i];
		assert_int_equal(ferry_config_check(&cfg, err, sizeof(err)), 0);
	}
}

/* The defaults pass, and the message is empty. */
static void test_defaults_pass(void **state)
{
	struct ferry_config cfg;
	char err[64] = "junk";

	(void)state;
	ferry_config_init(&cfg);
	cfg.ops = &all_ops;
	assert_int_equal(ferry_config_check(&cfg, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_int_equal(ferry_config_check(NULL, NULL, 0), -EINVAL);
}

/* A session with @ops and the default config. */
static ferry_session *session_of(const struct ferry_vmm_ops *ops)
{
	struct ferry_config cfg;
	ferry_session *s = NULL;

	ferry_config_init(&cfg);
	cfg.ops = ops;
	assert_int_equal(ferry_session_new(&cfg, &s), 0);
	return s;
}

/* A destination-only VMM (no pause, no save_state) gets a session and
 * may receive; sending with it fails with the missing callback named. */
static void test_destination_needs_no_source_callbacks(void **state)
{
	ferry_session *s;
	char msg[256];
	size_t size = 1u << 20;
	void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct ferry_region r = { .size = size, .host = mem, .fd = -1,
				  .name = "ram0" };

	(void)state;
	s = session_of(&dest_ops);
	assert_int_equal(ferry_session_add_region(s, &r), 0);
	assert_int_equal(ferry_session_send(s, "unix:/nonexistent/x"), -EINVAL);
	ferry_session_errmsg(s, msg, sizeof(msg));
	assert_non_null(strstr(msg, "ops has no pause: a source needs it"));
	/* Receiving gets past the check: it fails on the missing directory. */
	assert_true(ferry_session_receive(s, "unix:/nonexistent-ferry/x") < 0);
	ferry_session_errmsg(s, msg, sizeof(msg));
	assert_null(strstr(msg, "ops has no"));
	ferry_session_destroy(s);
	munmap(mem, size);
}

static int op_never(void *o)
{
	(void)o;
	fail_msg("a callback past the table's struct_size was called");
	return -1;
}

static int op_never_bitmap(void *o, uint32_t r, uint64_t *b, size_t n)
{
	(void)o, (void)r, (void)b, (void)n;
	fail_msg("a callback past the table's struct_size was called");
	return -1;
}

/* A VMM built against an older header has a shorter table: what follows
 * it in memory (here: callbacks that must never be called) is not read,
 * and the callbacks it lacks are NULL, so asking for them is refused as
 * for a table that leaves them out. */
static void test_older_ops_table(void **state)
{
	struct ferry_vmm_ops mem = {
		.pause = op_ok, .resume = op_ok, .save_state = op_save,
		.load_state = op_load, .release = op_never,
		.reacquire = op_never, .acquire = op_never,
		.get_dirty_bitmap = op_never_bitmap,
	};
	struct ferry_config cfg;
	ferry_session *s = NULL;
	char err[256];

	(void)state;
	/* The table as it ended after load_state. */
	mem.struct_size = offsetof(struct ferry_vmm_ops, release);
	ferry_config_init(&cfg);
	cfg.ops = &mem;
	assert_int_equal(ferry_config_check(&cfg, err, sizeof(err)), 0);
	cfg.dirty_mode = FERRY_DIRTY_BITMAP;
	assert_int_equal(ferry_config_check(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "no get_dirty_bitmap"));
	cfg.dirty_mode = FERRY_DIRTY_AUTO;
	assert_int_equal(ferry_session_new(&cfg, &s), 0);
	ferry_session_destroy(s);

	/* Shorter still, up to resume: a source is told save_state is missing
	 * although the memory after the table holds one. */
	mem.struct_size = offsetof(struct ferry_vmm_ops, save_state);
	s = session_of(&mem);
	{
		size_t size = 1u << 20;
		void *ram = mmap(NULL, size, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		struct ferry_region r = { .size = size, .host = ram, .fd = -1,
					  .name = "ram0" };

		assert_int_equal(ferry_session_add_region(s, &r), 0);
		assert_int_equal(ferry_session_send(s, "unix:/nonexistent/x"),
				 -EINVAL);
		ferry_session_errmsg(s, err, sizeof(err));
		assert_non_null(strstr(err, "ops has no save_state: a source needs it"));
		ferry_session_destroy(s);
		munmap(ram, size);
	}
}

/* A VMM built against a newer header has a longer table: taken while the
 * callbacks this library does not know are NULL, refused with the slot
 * named once one is set (the VMM asks for something it cannot get). */
static void test_newer_ops_table(void **state)
{
	struct {
		struct ferry_vmm_ops known;
		int (*future[2])(void *);
	} newer = { .known = { .pause = op_ok, .resume = op_ok } };
	const size_t slots = (sizeof(struct ferry_vmm_ops) -
			      offsetof(struct ferry_vmm_ops, pause)) /
			     sizeof(newer.future[0]);
	struct ferry_config cfg;
	char err[256], want[64];

	(void)state;
	newer.known.struct_size = sizeof(newer);
	ferry_config_init(&cfg);
	cfg.ops = &newer.known;
	assert_int_equal(ferry_config_check(&cfg, err, sizeof(err)), 0);
	newer.future[1] = op_ok;
	assert_int_equal(ferry_config_check(&cfg, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "ops sets callback slot %zu", slots + 1);
	if (!strstr(err, want))
		fail_msg("message \"%s\" does not say \"%s\"", err, want);
	assert_non_null(strstr(err, "does not know"));
}

/* Regions: each refusal says why; an fd is read only with
 * FERRY_REGION_FD, and then must be open. */
static void test_region_refusals(void **state)
{
	static const struct {
		struct ferry_region r;
		const char *want;
	} bad[] = {
		{ { .gpa = 0, .size = 4096 * 3 + 1 }, "page multiples" },
		{ { .gpa = 1u << 20, .size = 4096 }, "overlaps" },
		{ { .gpa = 8u << 20, .size = 4096, .flags = 0x80 }, "flags" },
		{ { .gpa = 8u << 20, .size = 4096, .fd = -1,
		    .flags = FERRY_REGION_FD }, "not an open descriptor" },
		{ { .gpa = 8u << 20, .size = 4096, .fd = 9999,
		    .flags = FERRY_REGION_FD }, "not an open descriptor" },
	};
	ferry_session *s;
	char msg[256];
	size_t size = 2u << 20;
	uint8_t *mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct ferry_region ok = { .gpa = 1u << 20, .size = 1u << 20,
				   .host = mem, .name = "low" };

	(void)state;
	s = session_of(&all_ops);
	/* fd left 0 without the flag: accepted, and not taken as fd 0. */
	assert_int_equal(ferry_session_add_region(s, &ok), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ferry_region r = bad[i].r;

		r.host = mem + (1u << 20);
		r.name = "bad";
		assert_int_equal(ferry_session_add_region(s, &r), -EINVAL);
		ferry_session_errmsg(s, msg, sizeof(msg));
		if (!strstr(msg, bad[i].want))
			fail_msg("region %zu: \"%s\" does not say \"%s\"", i,
				 msg, bad[i].want);
	}
	/* With the flag and an open descriptor, it is taken. */
	ok.gpa = 16u << 20;
	ok.host = mem + (1u << 20);
	ok.fd = 1;
	ok.flags = FERRY_REGION_FD;
	assert_int_equal(ferry_session_add_region(s, &ok), 0);
	ferry_session_destroy(s);
	munmap(mem, size);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_pass),
		cmocka_unit_test(test_no_ops),
		cmocka_unit_test(test_no_resume),
		cmocka_unit_test(test_struct_size),
		cmocka_unit_test(test_ops_size_zero),
		cmocka_unit_test(test_ops_size_inside),
		cmocka_unit_test(test_ops_size_before_resume),
		cmocka_unit_test(test_ops_size_huge),
		cmocka_unit_test(test_older_ops_table),
		cmocka_unit_test(test_newer_ops_table),
		cmocka_unit_test(test_connections_0),
		cmocka_unit_test(test_connections_65),
		cmocka_unit_test(test_window),
		cmocka_unit_test(test_chunk_small),
		cmocka_unit_test(test_chunk_huge),
		cmocka_unit_test(test_chunk_unaligned),
		cmocka_unit_test(test_throttle_max),
		cmocka_unit_test(test_throttle_initial),
		cmocka_unit_test(test_throttle_step),
		cmocka_unit_test(test_compress),
		cmocka_unit_test(test_compress_level_lz4),
		cmocka_unit_test(test_compress_level_none),
		cmocka_unit_test(test_version_max),
		cmocka_unit_test(test_version_min),
		cmocka_unit_test(test_capabilities),
		cmocka_unit_test(test_timeout_strategy),
		cmocka_unit_test(test_dirty_mode),
		cmocka_unit_test(test_bitmap_without_callback),
		cmocka_unit_test(test_congestion_control),
		cmocka_unit_test(test_stall_short),
		cmocka_unit_test(test_stall_long),
		cmocka_unit_test(test_lane_cpu_negative),
		cmocka_unit_test(test_lane_cpu_large),
		cmocka_unit_test(test_lane_poll_long),
		cmocka_unit_test(test_lane_poll_huge),
		cmocka_unit_test(test_lane_poll_range),
		cmocka_unit_test(test_stall_range),
		cmocka_unit_test(test_tls_engine),
		cmocka_unit_test(test_tls_engine_huge),
		cmocka_unit_test(test_tls_engine_range),
		cmocka_unit_test(test_destination_needs_no_source_callbacks),
		cmocka_unit_test(test_region_refusals),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
