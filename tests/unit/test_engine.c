// SPDX-License-Identifier: MIT
/*
 * test_engine.c - the engine end to end inside one process: a source and a
 * destination session in two threads over a real UNIX socket, with a fake
 * VMM whose "vCPU" is a thread writing memory. Checks what a VMM would
 * notice: the destination's memory and state equal the source's at pause,
 * failures resume the source, the destination survives garbage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <endian.h>
#include <xxhash.h>

#include "ferry.h"

#define MEM (32u << 20)
#define PAGE 4096u

struct fake_vm {
	uint8_t *mem;
	size_t size;
	pthread_t writer;
	atomic_bool run_writer;	 /* the vCPU is allowed to run */
	atomic_bool writer_live; /* the thread exists */
	atomic_bool quit;
	atomic_ulong writes;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool parked;
	int pauses, resumes, releases, reacquires;
	atomic_uint throttle_peak; /* the highest throttle asked for, % */
	uint64_t state_token;	/* "device state" */
	int fail_load;		/* destination: load_state fails */
	int fail_resume;	/* destination: resume fails */
	bool loaded;
	char note[64];
	uint64_t *log;		/* dirty log for FERRY_DIRTY_BITMAP, or NULL */
	bool zeroing;		/* the writer also zeroes pages, in clusters */
	atomic_ulong zeroed;	/* pages it zeroed */
	char owners[128];	/* each FERRY_EVENT_OWNER's owner, in order */
	enum ferry_owner owner_after; /* restore_into(): the final owner */
};

static void *writer_main(void *arg)
{
	struct fake_vm *vm = arg;
	uint64_t seed = 88172645463325252ull;

	while (!atomic_load(&vm->quit)) {
		pthread_mutex_lock(&vm->lock);
		while (!atomic_load(&vm->run_writer) && !atomic_load(&vm->quit)) {
			vm->parked = true;
			pthread_cond_broadcast(&vm->cond);
			pthread_cond_wait(&vm->cond, &vm->lock);
		}
		vm->parked = false;
		pthread_mutex_unlock(&vm->lock);
		for (int i = 0; i < 64; i++) {
			seed ^= seed << 13;
			seed ^= seed >> 7;
			seed ^= seed << 17;
			size_t page = (size_t)(seed % (vm->size / PAGE));
			uint64_t *p = (uint64_t *)(vm->mem + page * PAGE);

			if (vm->zeroing && page + 8 <= vm->size / PAGE) {
				/* A few neighbours, some freed to zero: small
				 * ranges that mix zero and data pages. */
				for (size_t k = 0; k < 1 + seed % 8; k++) {
					uint64_t *q = p + k * (PAGE / 8);

					if ((seed >> (8 + k)) & 1) {
						memset(q, 0, PAGE);
						atomic_fetch_add(&vm->zeroed, 1);
					} else {
						q[0]++;
						q[1] = seed;
					}
				}
				atomic_fetch_add(&vm->writes, 1);
				continue;
			}
			p[0]++;
			p[1] = seed;
			if (vm->log)
				__atomic_fetch_or(&vm->log[page / 64],
						  1ull << (page % 64),
						  __ATOMIC_RELAXED);
			atomic_fetch_add(&vm->writes, 1);
		}
		struct timespec ts = { 0, 100000 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* Start the guest's vCPU: it writes pages until paused. */
static void start_writer(struct fake_vm *vm)
{
	atomic_store(&vm->run_writer, true);
	atomic_store(&vm->writer_live, true);
	pthread_create(&vm->writer, NULL, writer_main, vm);
}

static void vm_init(struct fake_vm *vm, size_t size, bool fill, bool writer)
{
	memset(vm, 0, sizeof(*vm));
	vm->size = size;
	vm->mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(vm->mem != MAP_FAILED);
	if (fill)
		for (size_t i = 0; i < size; i += 8)
			*(uint64_t *)(vm->mem + i) = i * 0x9e3779b97f4a7c15ull;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	vm->state_token = fill ? 0x1234abcdull : 0;
	if (writer)
		start_writer(vm);
}

static void vm_free(struct fake_vm *vm)
{
	if (atomic_load(&vm->writer_live)) {
		pthread_mutex_lock(&vm->lock);
		atomic_store(&vm->quit, true);
		pthread_cond_broadcast(&vm->cond);
		pthread_mutex_unlock(&vm->lock);
		pthread_join(vm->writer, NULL);
	}
	munmap(vm->mem, vm->size);
}

static int op_pause(void *o)
{
	struct fake_vm *vm = o;

	pthread_mutex_lock(&vm->lock);
	vm->pauses++;
	atomic_store(&vm->run_writer, false);
	while (atomic_load(&vm->writer_live) && !vm->parked)
		pthread_cond_wait(&vm->cond, &vm->lock);
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

static int op_resume(void *o)
{
	struct fake_vm *vm = o;

	if (vm->fail_resume)
		return -EIO;
	pthread_mutex_lock(&vm->lock);
	vm->resumes++;
	atomic_store(&vm->run_writer, true);
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

static int op_save(void *o, struct ferry_buf *out)
{
	struct fake_vm *vm = o;

	return ferry_buf_append(out, &vm->state_token, sizeof(vm->state_token));
}

static int op_load(void *o, const void *data, size_t len)
{
	struct fake_vm *vm = o;

	if (vm->fail_load || len != sizeof(vm->state_token))
		return -EINVAL;
	memcpy(&vm->state_token, data, len);
	vm->loaded = true;
	return 0;
}

static int op_release(void *o)
{
	((struct fake_vm *)o)->releases++;
	return 0;
}

static int op_reacquire(void *o)
{
	((struct fake_vm *)o)->reacquires++;
	return 0;
}

/* Hand over the log and clear it, like KVM_GET_DIRTY_LOG. */
static int op_bitmap(void *o, uint32_t region, uint64_t *bitmap, size_t pages)
{
	struct fake_vm *vm = o;

	if (region != 0 || pages != vm->size / PAGE)
		return -EINVAL;
	for (size_t w = 0; w < (pages + 63) / 64; w++)
		bitmap[w] = __atomic_exchange_n(&vm->log[w], 0, __ATOMIC_RELAXED);
	return 0;
}

static void op_note(void *o, char *note, size_t len)
{
	snprintf(note, len, "{\"verified\":true}");
}

static int op_throttle(void *o, uint32_t pct)
{
	struct fake_vm *vm = o;

	if (pct > atomic_load(&vm->throttle_peak))
		atomic_store(&vm->throttle_peak, pct);
	return 0;
}

/* The same VMM, able to throttle its vCPU (auto-converge). */
static const struct ferry_vmm_ops ops_throttle = {
	FERRY_VMM_OPS_INIT,
	.pause = op_pause,
	.resume = op_resume,
	.save_state = op_save,
	.load_state = op_load,
	.release = op_release,
	.reacquire = op_reacquire,
	.running_note = op_note,
	.throttle = op_throttle,
};

static const struct ferry_vmm_ops ops = {
	FERRY_VMM_OPS_INIT,
	.pause = op_pause,
	.resume = op_resume,
	.save_state = op_save,
	.load_state = op_load,
	.release = op_release,
	.reacquire = op_reacquire,
	.running_note = op_note,
};

/* The same VMM with its own dirty log, for FERRY_DIRTY_BITMAP. */
static const struct ferry_vmm_ops ops_bitmap = {
	FERRY_VMM_OPS_INIT,
	.pause = op_pause,
	.resume = op_resume,
	.save_state = op_save,
	.load_state = op_load,
	.release = op_release,
	.reacquire = op_reacquire,
	.running_note = op_note,
	.get_dirty_bitmap = op_bitmap,
};

/* Every owner change the session announces, in the VM's owners log (the
 * thread that drives the session writes it; tests read it after). */
static void note_owner(void *opaque, const struct ferry_event *ev)
{
	struct fake_vm *vm = opaque;
	size_t n = strlen(vm->owners);

	if (ev->kind == FERRY_EVENT_OWNER)
		snprintf(vm->owners + n, sizeof(vm->owners) - n, "%s ",
			 ferry_owner_name(ev->stats->owner));
}

/* Who a session says may run the guest now. */
static enum ferry_owner owner_of(ferry_session *s)
{
	struct ferry_stats st = { FERRY_STATS_INIT };

	assert_int_equal(ferry_session_stats(s, &st), 0);
	return st.owner;
}

/* The config every test starts from. These tests are about what arrives,
 * not about convergence, which depends on how loaded the machine is: they
 * switch over rather than time out. */
static void base_config(struct ferry_config *cfg, struct fake_vm *vm)
{
	ferry_config_init(cfg);
	cfg->ops = &ops;
	cfg->opaque = vm;
	cfg->on_event = note_owner;
	cfg->timeout_strategy = FERRY_TIMEOUT_SWITCHOVER;
}

static ferry_session *session_with(struct fake_vm *vm,
				   const struct ferry_config *cfg)
{
	struct ferry_region r = { .gpa = 0, .size = vm->size, .host = vm->mem,
				  .fd = -1, .name = "ram0" };
	ferry_session *s;

	assert_int_equal(ferry_session_new(cfg, &s), 0);
	assert_int_equal(ferry_session_add_region(s, &r), 0);
	return s;
}

static ferry_session *session_for(struct fake_vm *vm, uint32_t downtime_ms)
{
	struct ferry_config cfg;

	base_config(&cfg, vm);
	cfg.downtime_limit_ms = downtime_ms;
	/* A zero limit (the cancel test) never converges nor switches. */
	if (!downtime_ms)
		cfg.max_passes = 1000000;
	return session_with(vm, &cfg);
}

struct recv_job {
	ferry_session *s;
	char uri[100];
	int rc;
	pthread_t t;
};

static void *recv_main(void *arg)
{
	struct recv_job *j = arg;

	j->rc = ferry_session_receive(j->s, j->uri);
	return NULL;
}

static void uri_for(char *uri, size_t len, const char *tag)
{
	snprintf(uri, len, "unix:/tmp/ferry-test-%d-%s.sock", getpid(), tag);
}

/* Start the receiver and wait until its socket exists. */
static void recv_start(struct recv_job *j, ferry_session *s, const char *tag)
{
	j->s = s;
	uri_for(j->uri, sizeof(j->uri), tag);
	unlink(j->uri + 5);
	pthread_create(&j->t, NULL, recv_main, j);
	for (int i = 0; i < 500 && access(j->uri + 5, F_OK); i++)
		usleep(2000);
}

/* Send, printing the session's message when the result is unexpected. */
static int send_verbose(ferry_session *s, const char *uri, int expect)
{
	char msg[512];
	int rc = ferry_session_send(s, uri);

	if (rc != expect)
		print_message("send returned %d (%s): %s\n", rc,
			      ferry_strerror(rc),
			      ferry_session_errmsg(s, msg, sizeof(msg)));
	return rc;
}

/*
 * Migrate @ss into @ds, expecting both sides to succeed; @dst's memory
 * must then equal @src's. A running guest first gets a moment to dirty
 * pages.
 */
static void migrate_equal(ferry_session *ss, ferry_session *ds,
			  const char *tag, const struct fake_vm *src,
			  const struct fake_vm *dst)
{
	struct recv_job j;

	if (atomic_load(&src->writer_live))
		usleep(20000);
	recv_start(&j, ds, tag);
	assert_int_equal(send_verbose(ss, j.uri, 0), 0);
	pthread_join(j.t, NULL);
	assert_int_equal(j.rc, 0);
	assert_memory_equal(src->mem, dst->mem, src->size);
}

static void end_pair(ferry_session *ss, ferry_session *ds,
		     struct fake_vm *src, struct fake_vm *dst)
{
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(src);
	vm_free(dst);
}

/* The config refuses names the kernel would cut short (16 bytes or more)
 * or that are empty; over a UNIX socket, which has no congestion control,
 * a named one is not applied and none is reported. */
static void test_congestion_control_config(void **state)
{
	static const char *const bad[] = { "", "sixteen-chars-xx",
					   "much-longer-than-sixteen" };
	struct ferry_config cfg;
	struct ferry_stats st = { FERRY_STATS_INIT };
	struct fake_vm src, dst;
	ferry_session *ss, *ds;

	(void)state;
	vm_init(&src, MEM, true, false);
	vm_init(&dst, MEM, false, false);
	base_config(&cfg, &src);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cfg.congestion_control = bad[i];
		assert_int_equal(ferry_session_new(&cfg, &ss), -EINVAL);
	}
	cfg.congestion_control = "reno";
	ss = session_with(&src, &cfg);
	ds = session_for(&dst, 300);
	migrate_equal(ss, ds, "cc", &src, &dst);
	ferry_session_stats(ss, &st);
	assert_string_equal(st.congestion_control, "");
	end_pair(ss, ds, &src, &dst);
}

static void test_idle_guest_migrates(void **state)
{
	struct fake_vm src, dst;
	struct ferry_stats st = { FERRY_STATS_INIT };

	vm_init(&src, MEM, true, false);
	vm_init(&dst, MEM, false, false);
	ferry_session *ss = session_for(&src, 300), *ds = session_for(&dst, 300);

	migrate_equal(ss, ds, "idle", &src, &dst);
	assert_true(dst.loaded);
	assert_int_equal(dst.state_token, 0x1234abcdull);
	assert_int_equal(dst.resumes, 1);
	assert_int_equal(src.pauses, 1);
	assert_int_equal(src.resumes, 0); /* handed over: stays paused */
	assert_int_equal(src.releases, 1);
	ferry_session_stats(ss, &st);
	assert_int_equal(st.state, FERRY_STATE_COMPLETED);
	assert_true(st.pass >= 2); /* full pass + final pass */
	assert_true(st.bytes >= MEM);
	assert_string_equal(st.peer_note, "{\"verified\":true}");
	assert_true(st.downtime_ms > 0);
	/* Both sides say the destination runs the guest, and each said so
	 * once: the source when it sent "released", the destination when
	 * it ran the guest (after the source's, from HELLO on). */
	assert_int_equal(st.owner, FERRY_OWNER_DESTINATION);
	assert_int_equal(owner_of(ds), FERRY_OWNER_DESTINATION);
	assert_string_equal(src.owners, "destination ");
	assert_string_equal(dst.owners, "source destination ");
	end_pair(ss, ds, &src, &dst);
}

/* PASS events the source sent (test_held_idle_guest_paces_passes). */
static atomic_uint pass_events;

static void count_passes(void *opaque, const struct ferry_event *ev)
{
	if (ev->kind == FERRY_EVENT_PASS)
		atomic_fetch_add(&pass_events, 1);
	note_owner(opaque, ev);
}

/*
 * An idle guest with a downtime limit no pause can meet (0: never
 * predicted to fit) stays in precopy until max_precopy_ms, then switches
 * over as its timeout strategy says. Nothing is dirty after the first
 * pass: the passes of that second must be few (at most one per 50 ms),
 * not bare round trips back to back (thousands, each a PASS event, that
 * flooded ferry-vm's event client), and the migration still completes.
 */
static void test_held_idle_guest_paces_passes(void **state)
{
	struct fake_vm src, dst;
	struct ferry_stats st = { FERRY_STATS_INIT };
	struct ferry_config cfg;

	vm_init(&src, MEM, true, false);
	vm_init(&dst, MEM, false, false);
	base_config(&cfg, &src);
	cfg.downtime_limit_ms = 0;
	cfg.max_passes = 1000000;
	cfg.max_precopy_ms = 1000;
	cfg.on_event = count_passes;
	atomic_store(&pass_events, 0);
	ferry_session *ss = session_with(&src, &cfg), *ds = session_for(&dst, 300);

	migrate_equal(ss, ds, "held", &src, &dst);
	ferry_session_stats(ss, &st);
	assert_int_equal(st.state, FERRY_STATE_COMPLETED);
	assert_true(st.total_ms >= 1000);
	/* 1 s of precopy: 20 paced passes, the first and the final one,
	 * and room for a late timer. */
	if (st.pass > 40 || atomic_load(&pass_events) > 40)
		print_message("%u passes, %u PASS events in %.0f ms\n", st.pass,
			      atomic_load(&pass_events), st.total_ms);
	assert_true(st.pass <= 40);
	assert_true(atomic_load(&pass_events) <= 40);
	end_pair(ss, ds, &src, &dst);
}

/*
 * A writing guest under a downtime limit that even a pause with nothing
 * dirty cannot meet (0) is not throttled: auto-converge cannot bring the
 * pause under that limit, so taking the vCPU's time would only slow the
 * guest. The passes are held, and the migration completes at
 * max_precopy_ms as its timeout strategy says.
 */
static void test_unreachable_limit_does_not_throttle(void **state)
{
	struct fake_vm src, dst;
	struct ferry_stats st = { FERRY_STATS_INIT };
	struct ferry_config cfg;

	(void)state;
	vm_init(&src, MEM, true, true);
	vm_init(&dst, MEM, false, false);
	base_config(&cfg, &src);
	cfg.ops = &ops_throttle;
	cfg.auto_converge = true;
	cfg.downtime_limit_ms = 0;
	cfg.max_passes = 1000000;
	cfg.max_precopy_ms = 1000;
	ferry_session *ss = session_with(&src, &cfg), *ds = session_for(&dst, 300);

	migrate_equal(ss, ds, "unreachable", &src, &dst);
	ferry_session_stats(ss, &st);
	assert_int_equal(st.state, FERRY_STATE_COMPLETED);
	assert_true(st.pass >= 2);
	assert_true(atomic_load(&src.writes) > 0);
	assert_int_equal(atomic_load(&src.throttle_peak), 0);
	assert_int_equal(st.throttle_peak_pct, 0);
	end_pair(ss, ds, &src, &dst);
}

/* What the log heard last at level 0. */
static char last_error_log[512];

static void log_errors(void *opaque, int level, const char *msg)
{
	(void)opaque;
	if (!level)
		snprintf(last_error_log, sizeof(last_error_log), "%s", msg);
}

/* Is every byte of @p, @n long, @v? */
static bool all_bytes(const void *p, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (((const uint8_t *)p)[i] != v)
			return false;
	return true;
}

/*
 * struct ferry_stats by its size: an older header's shorter struct gets
 * its prefix and not a byte more, a newer header's longer one the
 * library's members with its own left alone and struct_size saying
 * where they end, and a size that cannot be one is refused with nothing
 * written and the reason logged.
 */
static void test_stats_struct_size(void **state)
{
	static const uint32_t bad[] = { 0, 8, 20, FERRY_STATS_MAX_SIZE + 8,
					0xdeadbeefu };
	const size_t older = offsetof(struct ferry_stats, wire_bytes);
	struct ferry_stats full = { FERRY_STATS_INIT }, part;
	struct {
		struct ferry_stats known;
		uint64_t newer[4];
	} big;
	struct fake_vm src, dst;
	struct ferry_config cfg;
	ferry_session *ss, *ds;

	(void)state;
	vm_init(&src, MEM, true, false);
	vm_init(&dst, MEM, false, false);
	base_config(&cfg, &src);
	cfg.on_log = log_errors;
	ss = session_with(&src, &cfg);
	ds = session_for(&dst, 300);
	migrate_equal(ss, ds, "statsize", &src, &dst);
	assert_int_equal(ferry_session_stats(ss, &full), 0);
	assert_int_equal(full.struct_size, sizeof(full));
	assert_int_equal(full.state, FERRY_STATE_COMPLETED);
	assert_true(full.bytes >= MEM);

	memset(&part, 0xa5, sizeof(part));
	part.struct_size = older;
	assert_int_equal(ferry_session_stats(ss, &part), 0);
	assert_int_equal(part.struct_size, older);
	assert_int_equal(part.state, FERRY_STATE_COMPLETED);
	assert_int_equal(part.bytes, full.bytes);
	assert_true(all_bytes((uint8_t *)&part + older, sizeof(part) - older,
			      0xa5));

	memset(&big, 0x5a, sizeof(big));
	big.known.struct_size = sizeof(big);
	assert_int_equal(ferry_session_stats(ss, &big.known), 0);
	assert_int_equal(big.known.struct_size, sizeof(struct ferry_stats));
	assert_int_equal(big.known.bytes, full.bytes);
	assert_true(all_bytes(big.newer, sizeof(big.newer), 0x5a));

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char want[64];

		memset(&part, 0xa5, sizeof(part));
		part.struct_size = bad[i];
		last_error_log[0] = 0;
		assert_int_equal(ferry_session_stats(ss, &part), -EINVAL);
		assert_int_equal(part.struct_size, bad[i]);
		assert_true(all_bytes((uint8_t *)&part + sizeof(part.struct_size),
				      sizeof(part) - sizeof(part.struct_size),
				      0xa5));
		snprintf(want, sizeof(want), "struct_size is %u,", bad[i]);
		assert_non_null(strstr(last_error_log, want));
	}
	assert_int_equal(ferry_session_stats(NULL, &full), -EINVAL);
	assert_int_equal(ferry_session_stats(ss, NULL), -EINVAL);
	end_pair(ss, ds, &src, &dst);
}

static void test_running_guest_converges(void **state)
{
	struct fake_vm src, dst;

	vm_init(&src, MEM, true, true);
	vm_init(&dst, MEM, false, false);
	ferry_session *ss = session_for(&src, 50), *ds = session_for(&dst, 50);

	/* The source's writer is parked since the pause: the images are
	 * identical, including pages written during precopy. */
	migrate_equal(ss, ds, "dirty", &src, &dst);
	assert_true(atomic_load(&src.writes) > 0);
	end_pair(ss, ds, &src, &dst);
}

static void test_vmm_bitmap_mode_converges(void **state)
{
	struct fake_vm src, dst;
	struct ferry_config cfg;
	ferry_session *ss, *ds;

	vm_init(&src, MEM, true, false);
	src.log = calloc(MEM / PAGE / 64, sizeof(uint64_t));
	start_writer(&src);
	vm_init(&dst, MEM, false, false);
	base_config(&cfg, &src);
	cfg.ops = &ops_bitmap;
	cfg.dirty_mode = FERRY_DIRTY_BITMAP;
	cfg.downtime_limit_ms = 50;
	ss = session_with(&src, &cfg);
	ds = session_for(&dst, 50);

	migrate_equal(ss, ds, "bitmap", &src, &dst);
	assert_true(atomic_load(&src.writes) > 0);
	end_pair(ss, ds, &src, &dst);
	free(src.log);
}

static ferry_session *session_conns(struct fake_vm *vm, uint32_t conns,
				     uint64_t caps)
{
	struct ferry_config cfg;

	base_config(&cfg, vm);
	cfg.downtime_limit_ms = 50;
	cfg.connections = conns;
	cfg.capabilities = caps;
	return session_with(vm, &cfg);
}

static void test_four_connections_converge(void **state)
{
	struct fake_vm src, dst;
	struct ferry_stats ss_st = { FERRY_STATS_INIT }, ds_st = { FERRY_STATS_INIT };

	vm_init(&src, MEM, true, true);
	vm_init(&dst, MEM, false, false);
	ferry_session *ss = session_conns(&src, 4, FERRY_CAP_ALL);
	ferry_session *ds = session_conns(&dst, 1, FERRY_CAP_ALL);

	migrate_equal(ss, ds, "conns", &src, &dst);
	ferry_session_stats(ss, &ss_st);
	ferry_session_stats(ds, &ds_st);
	assert_int_equal(ss_st.connections, 4);
	assert_int_equal(ds_st.connections, 4);
	assert_true(ss_st.bytes >= MEM);
	end_pair(ss, ds, &src, &dst);
}

/* Passes of small ranges that mix freed (zero) pages with data, over four
 * connections: such records travel in batches with a zero map each, and
 * the destination must clear pages it holds data for. */
static void test_zeroed_pages_in_small_records(void **state)
{
	struct fake_vm src, dst;

	vm_init(&src, MEM, true, false);
	src.zeroing = true;
	start_writer(&src);
	vm_init(&dst, MEM, false, false);
	ferry_session *ss = session_conns(&src, 4, FERRY_CAP_ALL);
	ferry_session *ds = session_conns(&dst, 1, FERRY_CAP_ALL);

	migrate_equal(ss, ds, "zeroing", &src, &dst);
	assert_true(atomic_load(&src.zeroed) > 0);
	end_pair(ss, ds, &src, &dst);
}

/* A destination that does not offer extra connections: the source says
 * so and migrates over the one it has. */
static void test_extra_connections_declined(void **state)
{
	struct fake_vm src, dst;
	struct ferry_stats st = { FERRY_STATS_INIT };

	vm_init(&src, MEM, true, false);
	vm_init(&dst, MEM, false, false);
	ferry_session *ss = session_conns(&src, 4, FERRY_CAP_ALL);
	ferry_session *ds = session_conns(&dst, 1, FERRY_CAP_DATA_CHECKSUM);

	migrate_equal(ss, ds, "declined", &src, &dst);
	ferry_session_stats(ss, &st);
	assert_int_equal(st.connections, 1);
	assert_int_equal(st.capabilities, FERRY_CAP_DATA_CHECKSUM);
	end_pair(ss, ds, &src, &dst);
}

/* A third of the pages zero, a third text-like, a third random; the
 * destination starts full of garbage so zero pages must really be
 * written there. */
static void fill_mixed(struct fake_vm *src, struct fake_vm *dst)
{
	static const char words[] = "the quick brown fox jumps over the lazy dog ";
	uint64_t x = 0x2545f4914f6cdd1dull;

	for (size_t pg = 0; pg < src->size / PAGE; pg++) {
		uint8_t *p = src->mem + pg * PAGE;

		if (pg % 3 == 0)
			memset(p, 0, PAGE);
		else if (pg % 3 == 1)
			for (size_t k = 0; k < PAGE; k++)
				p[k] = (uint8_t)words[(k + pg) % (sizeof(words) - 1)];
		else
			for (size_t k = 0; k < PAGE; k += 8) {
				x ^= x << 13, x ^= x >> 7, x ^= x << 17;
				memcpy(p + k, &x, 8);
			}
	}
	memset(dst->mem, 0xaa, dst->size);
}

static void migrate_mixed(enum ferry_compress codec, uint64_t *wire)
{
	struct fake_vm src, dst;
	struct ferry_config cfg;
	struct ferry_stats st = { FERRY_STATS_INIT };
	ferry_session *ss, *ds;

	vm_init(&src, MEM, false, false);
	vm_init(&dst, MEM, false, false);
	fill_mixed(&src, &dst);
	base_config(&cfg, &src);
	cfg.compress = codec;
	ss = session_with(&src, &cfg);
	ds = session_for(&dst, 300);
	migrate_equal(ss, ds, "mixed", &src, &dst);
	ferry_session_stats(ss, &st);
	assert_true(st.bytes >= MEM); /* guest bytes covered */
	*wire = st.wire_bytes;
	end_pair(ss, ds, &src, &dst);
}

static void test_zero_pages_and_codecs(void **state)
{
	uint64_t raw, lz4, zstd;

	migrate_mixed(FERRY_COMPRESS_NONE, &raw);
	migrate_mixed(FERRY_COMPRESS_LZ4, &lz4);
	migrate_mixed(FERRY_COMPRESS_ZSTD, &zstd);
	print_message("wire bytes for %u MiB (1/3 zero): raw %llu, lz4 %llu, zstd %llu\n",
		      MEM >> 20, (unsigned long long)raw,
		      (unsigned long long)lz4, (unsigned long long)zstd);
	/* Zero pages carry no data: about two thirds of the memory. */
	assert_true(raw < MEM * 3 / 4);
	/* Text compresses; random pages are sent raw. */
	assert_true(lz4 < raw * 3 / 4);
	assert_true(zstd < raw * 3 / 4);
}

static ferry_session *session_ver(struct fake_vm *vm, uint32_t vmin,
				   uint32_t vmax, const char *record)
{
	struct ferry_config cfg;

	base_config(&cfg, vm);
	cfg.version_min = vmin;
	cfg.version_max = vmax;
	cfg.connections = 4;
	cfg.compress = FERRY_COMPRESS_LZ4;
	cfg.record_stream = record;
	return session_with(vm, &cfg);
}

/* The image digest of @size bytes at @mem, as a snapshot file's page
 * table defines it: XXH3-64 of each page seeded with its number, then
 * XXH3-64 over those (little-endian). */
static uint64_t image_digest(const uint8_t *mem, size_t size)
{
	size_t n = size / PAGE;
	uint64_t *h = malloc(n * sizeof(*h)), d;

	assert_non_null(h);
	for (size_t i = 0; i < n; i++)
		h[i] = htole64(XXH3_64bits_withSeed(mem + i * PAGE, PAGE, i));
	d = XXH3_64bits(h, n * sizeof(*h));
	free(h);
	return d;
}

static ferry_session *session_file(struct fake_vm *vm, bool keep_running,
				   bool lazy)
{
	struct ferry_config cfg;

	base_config(&cfg, vm);
	cfg.keep_running = keep_running;
	cfg.lazy = lazy;
	return session_with(vm, &cfg);
}

/* Restore @uri into a fresh guest; its result, memory kept in @dst. */
static int restore_into(struct fake_vm *dst, const char *uri, bool lazy,
			char *msg, size_t len)
{
	ferry_session *ds;
	int rc;

	vm_init(dst, MEM, false, false);
	ds = session_file(dst, false, lazy);
	rc = ferry_session_receive(ds, uri);
	ferry_session_errmsg(ds, msg, len);
	dst->owner_after = owner_of(ds);
	ferry_session_destroy(ds);
	return rc;
}

/* Flip one byte at @off of a copy of @from. */
static void damage_copy(const char *from, const char *to, off_t off)
{
	char cmd[512];
	int fd;
	uint8_t b;

	snprintf(cmd, sizeof(cmd), "cp --sparse=always %s %s", from, to);
	assert_int_equal(system(cmd), 0);
	fd = open(to, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, off), 1);
	b ^= 0x40;
	assert_int_equal(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

/* Where the page table of snapshot file @path starts (superblock byte 40,
 * little-endian; docs/stream-format.md, "Snapshot files"). */
static uint64_t table_offset(const char *path)
{
	uint8_t b[8];
	uint64_t v = 0;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, b, 8, 40), 8);
	close(fd);
	for (int i = 7; i >= 0; i--)
		v = v << 8 | b[i];
	return v;
}

/* After the first pass of a snapshot, the guest frees the upper half of
 * its memory to zeros (as a guest's balloon or allocator does). */
static void zero_upper_half(void *opaque, const struct ferry_event *ev)
{
	struct fake_vm *vm = opaque;

	if (ev->kind == FERRY_EVENT_PASS && ev->stats->pass == 1)
		memset(vm->mem + vm->size / 2, 0, vm->size / 2);
}

/*
 * A page whose slot got data in one pass and that is zero at a later one
 * gives its disk blocks back: the file allocates about the half of RAM
 * that still holds data, and restores to the guest's memory at the pause.
 */
static void test_snapshot_frees_pages_turned_zero(void **state)
{
	struct fake_vm src, dst;
	struct ferry_config cfg;
	struct ferry_stats st = { FERRY_STATS_INIT };
	char path[128], uri[160], msg[512];
	struct stat sb;
	ferry_session *ss;

	(void)state;
	snprintf(path, sizeof(path), "/tmp/ferry-test-%d-zero.snap", getpid());
	snprintf(uri, sizeof(uri), "file:%s", path);
	unlink(path);
	vm_init(&src, MEM, true, false);
	base_config(&cfg, &src);
	cfg.on_event = zero_upper_half;
	ss = session_with(&src, &cfg);
	assert_int_equal(send_verbose(ss, uri, 0), 0);
	assert_int_equal(ferry_session_stats(ss, &st), 0);
	assert_int_equal(stat(path, &sb), 0);
	print_message("pass 1 wrote every page, then half turned zero: %u passes, file %lld bytes, %lld allocated\n",
		      st.pass, (long long)sb.st_size,
		      (long long)sb.st_blocks * 512);
	assert_true(st.pass >= 2);
	assert_true((uint64_t)sb.st_blocks * 512 <= MEM / 2 + MEM / 20);
	assert_int_equal(restore_into(&dst, uri, false, msg, sizeof(msg)), 0);
	assert_memory_equal(src.mem, dst.mem, MEM);
	vm_free(&dst);
	ferry_session_destroy(ss);
	vm_free(&src);
	unlink(path);
}

/*
 * A snapshot of a running guest is a live migration into a file: passes
 * while the guest writes, and the restored memory is the source's at the
 * pause. Handed over, the source stays paused; as a checkpoint it runs on,
 * and the file's digest is the restored memory's. A damaged slot or a cut
 * file restores nothing, eagerly or lazily.
 */
static void test_snapshot_and_restore(void **state)
{
	struct fake_vm src, dst, bad;
	struct ferry_stats st = { FERRY_STATS_INIT }, rst = { FERRY_STATS_INIT };
	char path[128], uri[160], bpath[160], buri[200], msg[512];
	struct stat sb;
	ferry_session *ss;
	bool lazy_ok = true;

	snprintf(path, sizeof(path), "/tmp/ferry-test-%d.snap", getpid());
	snprintf(uri, sizeof(uri), "file:%s", path);
	snprintf(bpath, sizeof(bpath), "%s.bad", path);
	snprintf(buri, sizeof(buri), "file:%s", bpath);
	unlink(path);

	/* Handover: the source stays paused, the file owns the guest. */
	vm_init(&src, MEM, true, true);
	ss = session_file(&src, false, false);
	assert_int_equal(send_verbose(ss, uri, 0), 0);
	ferry_session_stats(ss, &st);
	assert_int_equal(src.pauses, 1);
	assert_int_equal(src.resumes, 0);
	assert_int_equal(stat(path, &sb), 0);
	if (strcmp(st.dirty_mode, "none"))
		assert_true(st.pass >= 2); /* live passes, then the final one */
	assert_int_equal((uint64_t)sb.st_size, st.wire_bytes);
	assert_true((uint64_t)sb.st_size < MEM + MEM / 20 + (4u << 20));
	assert_int_equal(st.image_digest, image_digest(src.mem, MEM));
	/* Renamed into place, the file holds the guest: the paused source
	 * must not run it, and says so. */
	assert_int_equal(st.owner, FERRY_OWNER_DESTINATION);
	assert_string_equal(src.owners, "destination ");
	assert_int_equal(restore_into(&dst, uri, false, msg, sizeof(msg)), 0);
	assert_memory_equal(src.mem, dst.mem, MEM);
	assert_int_equal(dst.state_token, src.state_token);
	assert_int_equal(dst.resumes, 1);
	/* A restore: the file's until the guest runs here. */
	assert_int_equal(dst.owner_after, FERRY_OWNER_DESTINATION);
	assert_string_equal(dst.owners, "source destination ");
	vm_free(&dst);
	ferry_session_destroy(ss);

	/* Lazily: the same image, placed through userfaultfd. */
	if (restore_into(&dst, uri, true, msg, sizeof(msg))) {
		print_message("lazy restore unavailable here: %s\n", msg);
		assert_non_null(strstr(msg, "userfaultfd"));
		lazy_ok = false;
	} else {
		assert_memory_equal(src.mem, dst.mem, MEM);
		assert_int_equal(dst.resumes, 1);
		assert_int_equal(dst.owner_after, FERRY_OWNER_DESTINATION);
		assert_string_equal(dst.owners, "source destination ");
	}
	vm_free(&dst);
	/* No file, no guest. */
	assert_int_equal(restore_into(&bad, "file:/nonexistent/ferry.snap",
				      false, msg, sizeof(msg)), -ENOENT);
	assert_int_equal(bad.owner_after, FERRY_OWNER_NONE);
	vm_free(&bad);

	/* A damaged data slot (the source filled every page). */
	damage_copy(path, bpath, (2 << 20) + 5 * PAGE + 100);
	assert_int_equal(restore_into(&bad, buri, false, msg, sizeof(msg)),
			 FERRY_ECHECKSUM);
	assert_non_null(strstr(msg, "page 5 of region ram0"));
	assert_int_equal(bad.resumes, 0);
	/* It never ran here: the file still holds the guest. */
	assert_int_equal(bad.owner_after, FERRY_OWNER_SOURCE);
	vm_free(&bad);
	if (lazy_ok) {
		assert_int_equal(restore_into(&bad, buri, true, msg,
					      sizeof(msg)),
				 FERRY_ECHECKSUM);
		assert_non_null(strstr(msg, "page 5 of region ram0"));
		assert_int_equal(bad.pauses, 1);
		/* It ran here and stays stopped here. */
		assert_int_equal(bad.owner_after, FERRY_OWNER_DESTINATION);
		vm_free(&bad);
	}
	/* A damaged page table, read in pieces by several threads: nothing
	 * is trusted, neither eagerly nor lazily, and the guest never runs. */
	damage_copy(path, bpath, table_offset(path) + MEM / PAGE * 8 - 1000);
	assert_int_equal(restore_into(&bad, buri, false, msg, sizeof(msg)),
			 FERRY_ECHECKSUM);
	assert_non_null(strstr(msg, "page table"));
	assert_int_equal(bad.resumes, 0);
	vm_free(&bad);
	if (lazy_ok) {
		assert_int_equal(restore_into(&bad, buri, true, msg,
					      sizeof(msg)),
				 FERRY_ECHECKSUM);
		assert_non_null(strstr(msg, "page table"));
		assert_int_equal(bad.resumes, 0);
		vm_free(&bad);
	}
	/* Cut in the middle of its memory. */
	assert_int_equal(truncate(bpath, sb.st_size / 2), 0);
	assert_true(restore_into(&bad, buri, false, msg, sizeof(msg)) < 0);
	assert_true(msg[0] != 0);
	assert_int_equal(bad.resumes, 0);
	vm_free(&bad);
	vm_free(&src);

	/* Zero pages take no room: a guest half of zeros makes a file that
	 * allocates about half its RAM, and whose size is its RAM plus the
	 * fixed parts (the slots' 2 MiB alignment, 8 bytes a page of table,
	 * a bit a page of map, the state). */
	vm_init(&src, MEM, true, false);
	memset(src.mem + MEM / 2, 0, MEM / 2);
	ss = session_file(&src, false, false);
	assert_int_equal(send_verbose(ss, uri, 0), 0);
	assert_int_equal(stat(path, &sb), 0);
	print_message("half-zero guest of %u MiB: file %lld bytes, %lld allocated\n",
		      MEM >> 20, (long long)sb.st_size,
		      (long long)sb.st_blocks * 512);
	assert_true((uint64_t)sb.st_blocks * 512 <= MEM / 2 + MEM / 20);
	assert_true((uint64_t)sb.st_size <=
		    MEM + (2u << 20) + MEM / PAGE * 8 + MEM / PAGE / 8 + 3 * PAGE);
	assert_int_equal(restore_into(&dst, uri, false, msg, sizeof(msg)), 0);
	assert_memory_equal(src.mem, dst.mem, MEM);
	vm_free(&dst);
	ferry_session_destroy(ss);
	vm_free(&src);

	/* Checkpoint: the guest runs on after a short pause. */
	vm_init(&src, MEM, true, true);
	ss = session_file(&src, true, false);
	assert_int_equal(send_verbose(ss, uri, 0), 0);
	ferry_session_stats(ss, &st);
	assert_int_equal(src.pauses, 1);
	assert_int_equal(src.resumes, 1);
	assert_true(atomic_load(&src.run_writer));
	/* The file is a copy: the guest stays the source's throughout. */
	assert_int_equal(st.owner, FERRY_OWNER_SOURCE);
	assert_string_equal(src.owners, "");
	assert_int_equal(restore_into(&dst, uri, false, msg, sizeof(msg)), 0);
	assert_int_equal(image_digest(dst.mem, MEM), st.image_digest);
	vm_free(&dst);
	ferry_session_destroy(ss);
	vm_free(&src);
	(void)rst;
	unlink(path);
	unlink(bpath);
}

/* A destination capped at version 1 still takes a migration from a source
 * that wants four connections and lz4: without them. A source that needs
 * version 2 is refused with a clear message. A recording captures the
 * main connection. */
static void test_version_negotiation_and_recording(void **state)
{
	struct fake_vm src, dst;
	struct recv_job j;
	struct ferry_stats st = { FERRY_STATS_INIT };
	char rec[128], msg[512], magic[8];
	FILE *f;

	snprintf(rec, sizeof(rec), "/tmp/ferry-test-%d.rec", getpid());
	vm_init(&src, MEM, true, true);
	vm_init(&dst, MEM, false, false);
	ferry_session *ss = session_ver(&src, 0, 0, rec);
	ferry_session *ds = session_ver(&dst, 0, 1, NULL);

	recv_start(&j, ds, "v1");
	assert_int_equal(send_verbose(ss, j.uri, 0), 0);
	pthread_join(j.t, NULL);
	assert_int_equal(j.rc, 0);
	assert_memory_equal(src.mem, dst.mem, MEM);
	ferry_session_stats(ss, &st);
	assert_int_equal(st.version, 1);
	assert_int_equal(st.capabilities, FERRY_CAP_DATA_CHECKSUM);
	assert_int_equal(st.connections, 1);
	f = fopen(rec, "rb");
	assert_non_null(f);
	assert_int_equal(fread(magic, 1, 8, f), 8);
	assert_memory_equal(magic, "FERRYMIG", 8);
	fseek(f, 0, SEEK_END);
	assert_true(ftell(f) > (long)MEM); /* all of memory went through it */
	fclose(f);
	unlink(rec);
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);

	/* A source that insists on version 2 meets the version-1 peer. (The
	 * first source handed its guest over; run it again for this.) */
	op_resume(&src);
	vm_free(&dst);
	vm_init(&dst, MEM, false, false);
	ss = session_ver(&src, 2, 0, NULL);
	ds = session_ver(&dst, 0, 1, NULL);
	recv_start(&j, ds, "v1b");
	assert_int_equal(send_verbose(ss, j.uri, FERRY_EPEER), FERRY_EPEER);
	pthread_join(j.t, NULL);
	assert_int_equal(j.rc, FERRY_EVERSION);
	ferry_session_errmsg(ss, msg, sizeof(msg));
	assert_non_null(strstr(msg, "no common protocol version"));
	assert_true(atomic_load(&src.run_writer)); /* the source runs on */
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

static void test_mismatch_is_refused_and_source_runs(void **state)
{
	struct fake_vm src, dst;
	struct recv_job j;
	char msg[512];

	vm_init(&src, MEM, true, true);
	vm_init(&dst, MEM / 2, false, false);
	ferry_session *ss = session_for(&src, 300), *ds = session_for(&dst, 300);

	recv_start(&j, ds, "mismatch");
	assert_int_equal(send_verbose(ss, j.uri, FERRY_EPEER), FERRY_EPEER);
	pthread_join(j.t, NULL);
	assert_int_equal(j.rc, FERRY_EMISMATCH);
	ferry_session_errmsg(ss, msg, sizeof(msg));
	assert_non_null(strstr(msg, "ram0"));
	assert_int_equal(src.pauses, 0);
	assert_true(atomic_load(&src.run_writer));
	assert_int_equal(dst.resumes, 0);
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

static void test_load_failure_resumes_source(void **state)
{
	struct fake_vm src, dst;
	struct recv_job j;

	vm_init(&src, MEM, true, true);
	vm_init(&dst, MEM, false, false);
	dst.fail_load = 1;
	ferry_session *ss = session_for(&src, 300), *ds = session_for(&dst, 300);

	recv_start(&j, ds, "loadfail");
	assert_int_equal(send_verbose(ss, j.uri, FERRY_EPEER), FERRY_EPEER);
	pthread_join(j.t, NULL);
	assert_int_equal(j.rc, FERRY_EVMM);
	assert_int_equal(src.pauses, 1);
	assert_int_equal(src.resumes, 1);
	assert_int_equal(src.releases, 0);
	assert_true(atomic_load(&src.run_writer));
	assert_int_equal(dst.resumes, 0);
	/* Before the point of no return the guest never left the source,
	 * and the destination says so too. */
	assert_int_equal(owner_of(ss), FERRY_OWNER_SOURCE);
	assert_int_equal(owner_of(ds), FERRY_OWNER_SOURCE);
	assert_string_equal(src.owners, "");
	assert_string_equal(dst.owners, "source ");
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

static void test_refused_release_reacquires(void **state)
{
	struct fake_vm src, dst;
	struct recv_job j;

	vm_init(&src, MEM, true, false);
	vm_init(&dst, MEM, false, false);
	dst.fail_resume = 1;
	ferry_session *ss = session_for(&src, 300), *ds = session_for(&dst, 300);

	recv_start(&j, ds, "refuse");
	/* The destination answers RELEASED with an error: positive
	 * confirmation that it does not run the guest, so the source may. */
	assert_int_equal(send_verbose(ss, j.uri, FERRY_EPEER), FERRY_EPEER);
	pthread_join(j.t, NULL);
	assert_int_equal(j.rc, FERRY_EVMM);
	assert_int_equal(src.releases, 1);
	assert_int_equal(src.reacquires, 1);
	assert_int_equal(src.resumes, 1);
	/* "released" made the destination the owner; its refusal gave the
	 * guest back before the source resumed it. */
	assert_int_equal(owner_of(ss), FERRY_OWNER_SOURCE);
	assert_int_equal(owner_of(ds), FERRY_OWNER_SOURCE);
	assert_string_equal(src.owners, "destination source ");
	assert_string_equal(dst.owners, "source ");
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

static void *cancel_main(void *arg)
{
	ferry_session *s = arg;
	struct ferry_stats st = { FERRY_STATS_INIT };

	/* Wait until memory is moving, then cancel from another thread. */
	for (int i = 0; i < 5000; i++) {
		ferry_session_stats(s, &st);
		if (st.state == FERRY_STATE_PRECOPY && st.pass >= 2)
			break;
		usleep(1000);
	}
	ferry_session_cancel(s);
	return NULL;
}

static void test_cancel_resumes_source(void **state)
{
	struct fake_vm src, dst;
	struct recv_job j;
	struct ferry_stats st = { FERRY_STATS_INIT };
	pthread_t t;
	char msg[512];

	vm_init(&src, MEM, true, true);
	vm_init(&dst, MEM, false, false);
	/* A zero downtime limit never converges; the cancel ends it. */
	ferry_session *ss = session_for(&src, 0), *ds = session_for(&dst, 300);

	recv_start(&j, ds, "cancel");
	pthread_create(&t, NULL, cancel_main, ss);
	assert_int_equal(send_verbose(ss, j.uri, FERRY_ECANCELED), FERRY_ECANCELED);
	pthread_join(t, NULL);
	pthread_join(j.t, NULL);
	ferry_session_stats(ss, &st);
	assert_int_equal(st.state, FERRY_STATE_CANCELLED);
	/* The guest never stopped, or was resumed: it runs, and it is the
	 * source's on both sides. */
	assert_int_equal(src.pauses, src.resumes);
	assert_true(atomic_load(&src.run_writer));
	assert_int_equal(st.owner, FERRY_OWNER_SOURCE);
	assert_int_equal(owner_of(ds), FERRY_OWNER_SOURCE);
	assert_string_equal(src.owners, "");
	/* The destination was told why and never ran the guest. */
	assert_int_equal(j.rc, FERRY_EPEER);
	ferry_session_errmsg(ds, msg, sizeof(msg));
	assert_non_null(strstr(msg, "cancel"));
	assert_int_equal(dst.resumes, 0);
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

/* What the destination's LISTENING event said, for the thread that waits
 * for it instead of sleeping. */
static pthread_mutex_t heard_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t heard_cond = PTHREAD_COND_INITIALIZER;
static char heard_uri[FERRY_URI_MAX];

static void on_listening(void *opaque, const struct ferry_event *ev)
{
	(void)opaque;
	if (ev->kind != FERRY_EVENT_LISTENING)
		return;
	pthread_mutex_lock(&heard_lock);
	snprintf(heard_uri, sizeof(heard_uri), "%s", ev->stats->listen_uri);
	pthread_cond_broadcast(&heard_cond);
	pthread_mutex_unlock(&heard_lock);
}

/* A destination that announces where it listens. */
static ferry_session *listening_dst(struct fake_vm *vm)
{
	struct ferry_config cfg;

	base_config(&cfg, vm);
	cfg.on_event = on_listening;
	return session_with(vm, &cfg);
}

/* Start receiving on @uri and wait for the LISTENING event (10 s at most);
 * the URI it gave is copied to @where. */
static void recv_listening(struct recv_job *j, ferry_session *ds,
			   const char *uri, char *where, size_t len)
{
	struct timespec until;

	pthread_mutex_lock(&heard_lock);
	heard_uri[0] = 0;
	pthread_mutex_unlock(&heard_lock);
	j->s = ds;
	snprintf(j->uri, sizeof(j->uri), "%s", uri);
	pthread_create(&j->t, NULL, recv_main, j);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&heard_lock);
	while (!heard_uri[0] &&
	       !pthread_cond_timedwait(&heard_cond, &heard_lock, &until))
		;
	snprintf(where, len, "%s", heard_uri);
	pthread_mutex_unlock(&heard_lock);
}

/* Send @ss to @uri while @j receives: both succeed, memory arrives. */
static void send_joined(ferry_session *ss, const char *uri, struct recv_job *j,
			const struct fake_vm *src, const struct fake_vm *dst)
{
	assert_int_equal(send_verbose(ss, uri, 0), 0);
	pthread_join(j->t, NULL);
	assert_int_equal(j->rc, 0);
	assert_memory_equal(src->mem, dst->mem, src->size);
}

/*
 * "tcp:127.0.0.1:0": the destination listens on a port the kernel picks,
 * says which in the LISTENING event and the stats, and the source (with
 * extra connections, which come through the same port) migrates to it.
 */
static void test_tcp_port_0_is_reported(void **state)
{
	struct fake_vm src, dst;
	struct ferry_stats st = { FERRY_STATS_INIT };
	struct recv_job j;
	char where[FERRY_URI_MAX];
	unsigned port = 0;

	(void)state;
	vm_init(&src, MEM, true, false);
	vm_init(&dst, MEM, false, false);
	ferry_session *ss = session_conns(&src, 3, FERRY_CAP_ALL);
	ferry_session *ds = listening_dst(&dst);

	recv_listening(&j, ds, "tcp:127.0.0.1:0", where, sizeof(where));
	assert_int_equal(sscanf(where, "tcp:127.0.0.1:%u", &port), 1);
	assert_true(port > 0 && port < 65536);
	ferry_session_stats(ds, &st);
	assert_string_equal(st.listen_uri, where);
	send_joined(ss, where, &j, &src, &dst);
	ferry_session_stats(ds, &st);
	assert_int_equal(st.connections, 3);
	end_pair(ss, ds, &src, &dst);
}

/* Whether @fd is still an open descriptor. */
static bool still_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/*
 * "fd:N" with sockets the VMM opened itself: a connected pair (the source
 * sends on one end, the destination receives on the other, over one
 * connection whatever the config asks), and a listening socket (the
 * main connection is accepted on it; extra ones are not, since the VMM
 * may accept there too). The library uses duplicates: the VMM's
 * descriptors stay open, and its listener still listens afterwards.
 */
static void test_fd_uris(void **state)
{
	struct fake_vm src, dst;
	struct ferry_stats st = { FERRY_STATS_INIT };
	struct recv_job j;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	char uri[64], where[FERRY_URI_MAX], msg[512];
	int sp[2], lfd, c;

	(void)state;
	vm_init(&src, MEM, true, false);
	vm_init(&dst, MEM, false, false);
	ferry_session *ss = session_conns(&src, 4, FERRY_CAP_ALL);
	ferry_session *ds = listening_dst(&dst);

	/* A connected pair. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	snprintf(j.uri, sizeof(j.uri), "fd:%d", sp[1]);
	j.s = ds;
	pthread_create(&j.t, NULL, recv_main, &j);
	snprintf(uri, sizeof(uri), "fd:%d", sp[0]);
	send_joined(ss, uri, &j, &src, &dst);
	ferry_session_stats(ss, &st);
	assert_int_equal(st.connections, 1);
	assert_true(still_open(sp[0]) && still_open(sp[1]));
	close(sp[0]);
	close(sp[1]);

	/* A listening socket of the VMM's. */
	memset(src.mem, 0x5a, PAGE * 7);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 16), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	snprintf(uri, sizeof(uri), "fd:%d", lfd);
	recv_listening(&j, ds, uri, where, sizeof(where));
	assert_string_equal(where, uri);
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%u", ntohs(sa.sin_port));
	send_joined(ss, uri, &j, &src, &dst);
	ferry_session_stats(ds, &st);
	assert_int_equal(st.connections, 1);
	/* The VMM's listener still takes connections. */
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(c);
	close(lfd);

	/* Not a descriptor, not a socket, not a number. */
	assert_int_equal(ferry_session_receive(ds, "fd:9999"), -EBADF);
	ferry_session_errmsg(ds, msg, sizeof(msg));
	assert_non_null(strstr(msg, "fd:9999 is not an open descriptor"));
	assert_int_equal(ferry_session_send(ss, "fd:0x1"), -EINVAL);
	ferry_session_errmsg(ss, msg, sizeof(msg));
	assert_non_null(strstr(msg, "expected fd:N"));
	end_pair(ss, ds, &src, &dst);
}

/* Whether descriptor 0 is still the pipe end with inode @ino. */
static bool fd0_is(ino_t ino)
{
	struct stat st;

	return fstat(0, &st) == 0 && st.st_ino == ino;
}

/*
 * Migrations that fail before they connect (a bad URI, nobody listening, a
 * missing directory, a cancel while waiting) must close only what they
 * opened. Descriptor 0 is the VMM's (here a pipe standing in for, say, an
 * API client accepted on it): it must still be open and the same after
 * each failure.
 */
static void test_early_failures_leave_fd0_alone(void **state)
{
	static const char *const send_uris[] = {
		"bogus:nothing", "tcp:127.0.0.1:1",
		"file:/nonexistent-ferry-dir/snap", "unix:/nonexistent-ferry-dir/s",
	};
	static const char *const recv_uris[] = {
		"bogus:nothing", "file:/nonexistent-ferry-dir/snap",
		"unix:/nonexistent-ferry-dir/s",
	};
	struct fake_vm vm;
	ferry_session *s;
	struct stat st;
	int p[2], saved = dup(0);

	(void)state;
	assert_true(saved >= 0);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(dup2(p[0], 0), 0);
	assert_int_equal(fstat(0, &st), 0);
	vm_init(&vm, MEM, false, false);
	s = session_for(&vm, 300);
	for (size_t i = 0; i < sizeof(send_uris) / sizeof(send_uris[0]); i++) {
		/* A cancel before the run stops it while it waits to connect. */
		if (i == 1) {
			ferry_session_cancel(s);
			assert_int_equal(ferry_session_send(s, send_uris[i]),
					 FERRY_ECANCELED);
		} else {
			assert_true(ferry_session_send(s, send_uris[i]) < 0);
		}
		assert_true(fd0_is(st.st_ino));
	}
	for (size_t i = 0; i < sizeof(recv_uris) / sizeof(recv_uris[0]); i++) {
		assert_true(ferry_session_receive(s, recv_uris[i]) < 0);
		assert_true(fd0_is(st.st_ino));
	}
	/* A destination cancelled while it waits for the source. */
	ferry_session_cancel(s);
	assert_int_equal(ferry_session_receive(s, "tcp:127.0.0.1:0"),
			 FERRY_ECANCELED);
	assert_true(fd0_is(st.st_ino));
	ferry_session_destroy(s);
	vm_free(&vm);
	dup2(saved, 0);
	close(saved);
	close(p[0]);
	close(p[1]);
}

static void test_garbage_then_real_migration(void **state)
{
	struct fake_vm src, dst;
	struct recv_job j;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char reply[256];
	int fd;

	vm_init(&src, MEM, true, false);
	vm_init(&dst, MEM, false, false);
	ferry_session *ss = session_for(&src, 300), *ds = session_for(&dst, 300);

	recv_start(&j, ds, "garbage");
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", j.uri + 5);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(write(fd, "GET / HTTP/1.0\r\n\r\n", 18), 18);
	/* The destination answers with an error record, then closes. */
	ssize_t n = read(fd, reply, sizeof(reply));
	assert_true(n >= 16);
	assert_int_equal(reply[0], 0x01); /* ERROR = 0x0101, little-endian */
	assert_int_equal(reply[1], 0x01);
	close(fd);
	pthread_join(j.t, NULL);
	assert_true(j.rc < 0);
	assert_int_equal(dst.resumes, 0);

	/* The same session receives a real migration afterwards. */
	recv_start(&j, ds, "garbage");
	assert_int_equal(send_verbose(ss, j.uri, 0), 0);
	pthread_join(j.t, NULL);
	assert_int_equal(j.rc, 0);
	assert_memory_equal(src.mem, dst.mem, MEM);
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

/* The destination's receiving thread, in its first progress event during
 * memory: it stops reading for a while, so that the source fills the
 * connection and blocks handing it pages, then cancels its session. */
static ferry_session *stalled_dst;
static atomic_bool stalled;

static void stall_then_cancel(void *opaque, const struct ferry_event *ev)
{
	(void)opaque;
	if (ev->kind != FERRY_EVENT_PROGRESS || ev->stats->bytes < (1u << 20) ||
	    atomic_exchange(&stalled, true))
		return;
	usleep(300000);
	ferry_session_cancel(stalled_dst);
}

/*
 * Over one connection the source hands large runs of pages to the socket
 * by reference with splice(), which raises SIGPIPE when the peer has gone
 * (it has no MSG_NOSIGNAL). A VMM that leaves SIGPIPE at its default must
 * not be killed by a destination that goes away mid-pass: the migration
 * fails, the guest runs on, and no SIGPIPE is left pending.
 */
static void test_destination_gone_while_splicing(void **state)
{
	struct fake_vm src, dst;
	struct ferry_config cfg;
	struct recv_job j = { 0 };
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	sigset_t pending;
	void (*was)(int) = signal(SIGPIPE, SIG_DFL);
	int fd, rc;

	vm_init(&src, MEM, true, true);
	vm_init(&dst, MEM, false, false);
	base_config(&cfg, &dst);
	cfg.on_event = stall_then_cancel;
	cfg.progress_ms = 1;
	ferry_session *ss = session_for(&src, 300), *ds = session_with(&dst, &cfg);

	/* TCP: a UNIX socket takes spliced pages without waiting. */
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	close(fd);
	snprintf(j.uri, sizeof(j.uri), "tcp:127.0.0.1:%u", ntohs(sa.sin_port));
	j.s = ds;
	stalled_dst = ds;
	pthread_create(&j.t, NULL, recv_main, &j);
	rc = send_verbose(ss, j.uri, FERRY_EPEER);
	pthread_join(j.t, NULL);
	assert_true(atomic_load(&stalled));
	assert_true(rc < 0);
	assert_int_equal(j.rc, FERRY_ECANCELED);
	assert_int_equal(src.pauses, src.resumes);
	assert_true(atomic_load(&src.run_writer));
	assert_int_equal(dst.resumes, 0);
	assert_int_equal(sigpending(&pending), 0);
	assert_false(sigismember(&pending, SIGPIPE));
	signal(SIGPIPE, was);
	end_pair(ss, ds, &src, &dst);
}

/*
 * splice() and vmsplice() for the engine, passed to the kernel unless a
 * test makes them refuse. The engine copies instead where the kernel will
 * not splice, a path no socket on a Linux host of today takes, so it is
 * reached here by answering for the kernel.
 */
enum refusal {
	REFUSE_NONE,
	REFUSE_VMSPLICE,      /* the pages cannot go into a pipe */
	REFUSE_SPLICE_MIDWAY, /* the socket takes 5000 bytes, then no more */
};
static atomic_int refusal;
static atomic_uint vmsplice_calls, splice_calls;

ssize_t vmsplice(int fd, const struct iovec *iov, size_t n, unsigned int flags)
{
	atomic_fetch_add(&vmsplice_calls, 1);
	if (atomic_load(&refusal) == REFUSE_VMSPLICE) {
		errno = EINVAL;
		return -1;
	}
	return syscall(SYS_vmsplice, fd, iov, n, flags);
}

ssize_t splice(int in, loff_t *in_off, int out, loff_t *out_off, size_t len,
	       unsigned int flags)
{
	unsigned int call = atomic_fetch_add(&splice_calls, 1);

	if (atomic_load(&refusal) == REFUSE_SPLICE_MIDWAY) {
		if (call > 0) {
			errno = EINVAL;
			return -1;
		}
		if (len > 5000)
			len = 5000;
	}
	return syscall(SYS_splice, in, in_off, out, out_off, len, flags);
}

/*
 * Where the kernel refuses to splice, the source copies instead, from
 * where the socket stopped, and the migration completes with identical
 * memory: once when vmsplice() refuses the guest's pages, once when the
 * socket takes part of a pipe's worth (5000 bytes, not a page boundary)
 * and then refuses. A connection that was refused does not try again.
 */
static void migrate_refused(enum refusal how, const char *tag)
{
	struct fake_vm src, dst;

	vm_init(&src, MEM, true, false);
	vm_init(&dst, MEM, false, false);
	ferry_session *ss = session_for(&src, 300), *ds = session_for(&dst, 300);

	atomic_store(&vmsplice_calls, 0);
	atomic_store(&splice_calls, 0);
	atomic_store(&refusal, how);
	migrate_equal(ss, ds, tag, &src, &dst);
	atomic_store(&refusal, REFUSE_NONE);
	assert_int_equal(atomic_load(&vmsplice_calls), 1);
	assert_int_equal(atomic_load(&splice_calls),
			 how == REFUSE_VMSPLICE ? 0 : 2);
	assert_int_equal(dst.resumes, 1);
	assert_int_equal(src.resumes, 0);
	end_pair(ss, ds, &src, &dst);
}

static void test_splice_refused_copies(void **state)
{
	(void)state;
	migrate_refused(REFUSE_VMSPLICE, "novmsplice");
	migrate_refused(REFUSE_SPLICE_MIDWAY, "nosplice");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_idle_guest_migrates),
		cmocka_unit_test(test_held_idle_guest_paces_passes),
		cmocka_unit_test(test_unreachable_limit_does_not_throttle),
		cmocka_unit_test(test_stats_struct_size),
		cmocka_unit_test(test_congestion_control_config),
		cmocka_unit_test(test_running_guest_converges),
		cmocka_unit_test(test_vmm_bitmap_mode_converges),
		cmocka_unit_test(test_four_connections_converge),
		cmocka_unit_test(test_zeroed_pages_in_small_records),
		cmocka_unit_test(test_extra_connections_declined),
		cmocka_unit_test(test_zero_pages_and_codecs),
		cmocka_unit_test(test_snapshot_and_restore),
		cmocka_unit_test(test_snapshot_frees_pages_turned_zero),
		cmocka_unit_test(test_version_negotiation_and_recording),
		cmocka_unit_test(test_mismatch_is_refused_and_source_runs),
		cmocka_unit_test(test_load_failure_resumes_source),
		cmocka_unit_test(test_refused_release_reacquires),
		cmocka_unit_test(test_cancel_resumes_source),
		cmocka_unit_test(test_garbage_then_real_migration),
		cmocka_unit_test(test_early_failures_leave_fd0_alone),
		cmocka_unit_test(test_tcp_port_0_is_reported),
		cmocka_unit_test(test_fd_uris),
		cmocka_unit_test(test_destination_gone_while_splicing),
		cmocka_unit_test(test_splice_refused_copies),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
