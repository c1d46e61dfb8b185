// SPDX-License-Identifier: MIT
/*
 * test_postcopy.c - postcopy end to end inside one process: a source and a
 * destination session in two threads, over real sockets, with a fake VMM
 * whose vCPU is a thread. On the source it writes pages; on the
 * destination, once resumed, it reads pages in a random order, so it
 * faults on the ones that are not there yet. The connections may go
 * through a proxy the test can cut. Checks what a VMM would notice: the
 * destination's memory equals the source's at the switch, the guest ran
 * before all of it arrived, both sides say who owns the guest, a cut pauses
 * both sides and a recovery completes, a refused switch gives the guest
 * back to the source.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ferry.h"

#define MEM (64u << 20)
#define PAGE 4096u

struct vm {
	uint8_t *mem;
	bool source;
	pthread_t cpu;
	atomic_bool live, run, quit;
	atomic_bool busy;	/* source: the vCPU may be writing a page */
	atomic_ulong touched;	/* destination: pages the vCPU read */
	atomic_int pauses, resumes;
	uint64_t token;		/* "device state" */
	bool fail_load;
	char owners[64];	/* FERRY_EVENT_OWNER's owners, in order */
	atomic_int state;	/* last state seen in an event */
};

/* The vCPU: on a source it writes random pages, on a destination it
 * reads every page once, in a scattered order (each read of a missing
 * page waits for it). */
static void *cpu_main(void *arg)
{
	struct vm *vm = arg;
	uint64_t seed = vm->source ? 88172645463325252ull : 0x2545f4914f6cdd1dull;
	size_t pages = MEM / PAGE, next = 0;
	volatile uint64_t sink = 0;

	while (!atomic_load(&vm->quit)) {
		if (!atomic_load(&vm->run)) {
			usleep(200);
			continue;
		}
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		if (vm->source) {
			uint64_t *p = (uint64_t *)(vm->mem + seed % pages * PAGE);

			/* "busy" before the look at "run", op_pause() the
			 * other way round: one of them sees the other, so no
			 * write follows a pause (sequentially consistent). */
			atomic_store(&vm->busy, true);
			if (atomic_load(&vm->run)) {
				p[0]++;
				p[1] = seed;
			}
			atomic_store(&vm->busy, false);
			if (seed % 64 == 0)
				usleep(50);
		} else if (next < pages) {
			/* a stride that visits every page once */
			sink += vm->mem[(next * 7919) % pages * PAGE];
			next++;
			atomic_fetch_add(&vm->touched, 1);
		} else {
			usleep(1000);
		}
	}
	(void)sink;
	return NULL;
}

static void vm_init(struct vm *vm, bool source)
{
	memset(vm, 0, sizeof(*vm));
	vm->source = source;
	vm->mem = mmap(NULL, MEM, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(vm->mem != MAP_FAILED);
	if (source) {
		for (size_t i = 0; i < MEM; i += 8)
			*(uint64_t *)(vm->mem + i) = i * 0x9e3779b97f4a7c15ull;
		/* some zero pages too */
		memset(vm->mem + MEM / 2, 0, MEM / 8);
		vm->token = 0x5eed;
		atomic_store(&vm->run, true);
	}
	atomic_store(&vm->live, true);
	pthread_create(&vm->cpu, NULL, cpu_main, vm);
}

static void vm_free(struct vm *vm)
{
	atomic_store(&vm->quit, true);
	if (atomic_load(&vm->live))
		pthread_join(vm->cpu, NULL);
	munmap(vm->mem, MEM);
}

static int op_pause(void *o)
{
	struct vm *vm = o;

	atomic_store(&vm->run, false);
	/* A write in progress finishes before the pause does (it was
	 * only a 2 ms sleep, which ThreadSanitizer rightly flagged). */
	while (atomic_load(&vm->busy))
		usleep(50);
	atomic_fetch_add(&vm->pauses, 1);
	return 0;
}

static int op_resume(void *o)
{
	struct vm *vm = o;

	atomic_store(&vm->run, true);
	atomic_fetch_add(&vm->resumes, 1);
	return 0;
}

static int op_save(void *o, struct ferry_buf *out)
{
	struct vm *vm = o;

	return ferry_buf_append(out, &vm->token, sizeof(vm->token));
}

static int op_load(void *o, const void *data, size_t len)
{
	struct vm *vm = o;

	if (vm->fail_load || len != sizeof(vm->token))
		return -EINVAL;
	memcpy(&vm->token, data, len);
	return 0;
}

static const struct ferry_vmm_ops ops = {
	FERRY_VMM_OPS_INIT,
	.pause = op_pause,
	.resume = op_resume,
	.save_state = op_save,
	.load_state = op_load,
};

static void on_event(void *opaque, const struct ferry_event *ev)
{
	struct vm *vm = opaque;
	size_t n = strlen(vm->owners);

	atomic_store(&vm->state, ev->stats->state);
	if (ev->kind == FERRY_EVENT_OWNER && n + 2 < sizeof(vm->owners)) {
		vm->owners[n] = ferry_owner_name(ev->stats->owner)[0];
		vm->owners[n + 1] = 0;
	}
}

static ferry_session *session(struct vm *vm, enum ferry_postcopy mode,
			      uint64_t bw)
{
	struct ferry_config cfg;
	struct ferry_region r = { 0, MEM, vm->mem, -1, 0, "ram0", 0 };
	ferry_session *s;

	ferry_config_init(&cfg);
	cfg.ops = &ops;
	cfg.opaque = vm;
	cfg.on_event = on_event;
	cfg.postcopy = mode;
	cfg.postcopy_after_passes = 1;
	cfg.max_bandwidth = bw;
	cfg.chunk_bytes = 256 << 10;
	assert_int_equal(ferry_session_new(&cfg, &s), 0);
	assert_int_equal(ferry_session_add_region(s, &r), 0);
	return s;
}

struct job {
	ferry_session *s;
	char uri[128];
	bool send;
	int rc;
	pthread_t t;
};

static void *job_main(void *arg)
{
	struct job *j = arg;

	j->rc = j->send ? ferry_session_send(j->s, j->uri)
			: ferry_session_receive(j->s, j->uri);
	return NULL;
}

static void job_start(struct job *j, ferry_session *s, const char *uri,
		      bool send)
{
	j->s = s;
	j->send = send;
	snprintf(j->uri, sizeof(j->uri), "%s", uri);
	pthread_create(&j->t, NULL, job_main, j);
}

static struct ferry_stats stats_of(ferry_session *s)
{
	struct ferry_stats st = { FERRY_STATS_INIT };

	ferry_session_stats(s, &st);
	return st;
}

/* Wait up to @ms for @s to reach @state. */
static bool wait_state(ferry_session *s, enum ferry_state state, int ms)
{
	for (int i = 0; i < ms / 5; i++) {
		if (stats_of(s).state == state)
			return true;
		usleep(5000);
	}
	return stats_of(s).state == state;
}

static void unix_uri(char *out, size_t len, const char *tag)
{
	snprintf(out, len, "unix:/tmp/ferry-test-pc-%d-%s.sock", getpid(), tag);
}

/* A postcopy after one pass completes; the guest ran at the destination
 * before all of its memory was there, and the memory is the source's. */
static void test_postcopy_completes(void **state)
{
	struct vm src, dst;
	ferry_session *ss, *ds;
	struct job rj, sj;
	struct ferry_stats a, b;
	char uri[128];

	(void)state;
	vm_init(&src, true);
	vm_init(&dst, false);
	ss = session(&src, FERRY_POSTCOPY_AFTER, 40u << 20);
	ds = session(&dst, FERRY_POSTCOPY_OFF, 0);
	unix_uri(uri, sizeof(uri), "done");
	job_start(&rj, ds, uri, false);
	job_start(&sj, ss, uri, true);
	pthread_join(sj.t, NULL);
	pthread_join(rj.t, NULL);
	a = stats_of(ss);
	b = stats_of(ds);
	if (sj.rc || rj.rc) {
		char e1[512], e2[512];

		fail_msg("source %d (%s), destination %d (%s)", sj.rc,
			 ferry_session_errmsg(ss, e1, sizeof(e1)), rj.rc,
			 ferry_session_errmsg(ds, e2, sizeof(e2)));
	}
	assert_true(a.postcopy);
	assert_true(b.postcopy);
	assert_int_equal(a.owner, FERRY_OWNER_DESTINATION);
	assert_int_equal(b.owner, FERRY_OWNER_DESTINATION);
	assert_string_equal(src.owners, "d");
	assert_true(a.pages_pushed > 0);
	/* The guest ran before its memory was all there: it faulted, the
	 * source answered, and each wait was measured. */
	assert_true(b.page_faults > 0);
	assert_true(a.pages_requested > 0);
	assert_true(b.page_wait_max_ms > 0);
	assert_int_equal(b.pages_missing, 0);
	assert_int_equal(dst.token, 0x5eed);
	/* The source stays paused for good; its memory is the guest's. */
	assert_false(atomic_load(&src.run));
	assert_int_equal(atomic_load(&src.resumes), 0);
	assert_true(atomic_load(&dst.touched) > 0);
	assert_memory_equal(dst.mem, src.mem, MEM);
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

/* A destination that cannot load the state answers POSTCOPY with
 * not-run: the source owns its guest again and runs it. */
static void test_refused_switch_gives_guest_back(void **state)
{
	struct vm src, dst;
	ferry_session *ss, *ds;
	struct job rj, sj;
	char uri[128];

	(void)state;
	vm_init(&src, true);
	vm_init(&dst, false);
	dst.fail_load = true;
	ss = session(&src, FERRY_POSTCOPY_AFTER, 0);
	ds = session(&dst, FERRY_POSTCOPY_OFF, 0);
	unix_uri(uri, sizeof(uri), "refused");
	job_start(&rj, ds, uri, false);
	job_start(&sj, ss, uri, true);
	pthread_join(sj.t, NULL);
	pthread_join(rj.t, NULL);
	assert_int_not_equal(sj.rc, 0);
	assert_int_not_equal(rj.rc, 0);
	assert_int_equal(stats_of(ss).owner, FERRY_OWNER_SOURCE);
	assert_true(atomic_load(&src.run));
	assert_int_equal(atomic_load(&dst.resumes), 0);
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

/* ---- a proxy the test can cut ---- */

struct proxy {
	int lfd;
	char to[128]; /* unix path of the destination */
	pthread_t acceptor;
	pthread_mutex_t lock;
	int fds[64];
	unsigned nfds;
	atomic_bool quit;
};

struct pipe_arg {
	int from, to;
};

static void *pump(void *arg)
{
	struct pipe_arg *pa = arg;
	char buf[65536];
	ssize_t n;

	while ((n = read(pa->from, buf, sizeof(buf))) > 0)
		if (write(pa->to, buf, (size_t)n) != n)
			break;
	shutdown(pa->to, SHUT_RDWR);
	shutdown(pa->from, SHUT_RDWR);
	free(pa);
	return NULL;
}

static int unix_connect(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%.100s", path);
	for (int i = 0; i < 200; i++) {
		if (!connect(fd, (struct sockaddr *)&a, sizeof(a)))
			return fd;
		usleep(10000);
	}
	close(fd);
	return -1;
}

static void *proxy_main(void *arg)
{
	struct proxy *px = arg;

	while (!atomic_load(&px->quit)) {
		int c = accept(px->lfd, NULL, NULL), d;
		pthread_t t;

		if (c < 0)
			break;
		d = unix_connect(px->to);
		if (d < 0) {
			close(c);
			continue;
		}
		pthread_mutex_lock(&px->lock);
		if (px->nfds + 2 <= 64) {
			px->fds[px->nfds++] = c;
			px->fds[px->nfds++] = d;
		}
		pthread_mutex_unlock(&px->lock);
		struct pipe_arg *up = malloc(sizeof(*up)), *down = malloc(sizeof(*down));

		*up = (struct pipe_arg){ c, d };
		*down = (struct pipe_arg){ d, c };
		pthread_create(&t, NULL, pump, up);
		pthread_detach(t);
		pthread_create(&t, NULL, pump, down);
		pthread_detach(t);
	}
	return NULL;
}

static void proxy_start(struct proxy *px, const char *at, const char *to)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	memset(px, 0, sizeof(*px));
	pthread_mutex_init(&px->lock, NULL);
	snprintf(px->to, sizeof(px->to), "%s", to);
	snprintf(a.sun_path, sizeof(a.sun_path), "%.100s", at);
	unlink(at);
	px->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(px->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(px->lfd, 16), 0);
	pthread_create(&px->acceptor, NULL, proxy_main, px);
}

/* The link breaks: every connection through the proxy is shut down. */
static void proxy_cut(struct proxy *px)
{
	pthread_mutex_lock(&px->lock);
	for (unsigned i = 0; i < px->nfds; i++)
		shutdown(px->fds[i], SHUT_RDWR);
	px->nfds = 0;
	pthread_mutex_unlock(&px->lock);
}

static void proxy_stop(struct proxy *px)
{
	atomic_store(&px->quit, true);
	proxy_cut(px);
	shutdown(px->lfd, SHUT_RDWR);
	pthread_join(px->acceptor, NULL);
	close(px->lfd);
}

/*
 * The link is cut during postcopy: both sides pause, the destination's
 * guest keeps its memory, owner stays the destination; the destination
 * listens again, the source resumes there, and the migration completes
 * with the source's memory. A second cut, during the second attempt's
 * postcopy, is recovered the same way.
 */
static void test_cut_pauses_and_recovers(void **state)
{
	struct vm src, dst;
	ferry_session *ss, *ds;
	struct job rj, sj;
	struct proxy px;
	char duri[128], puri[128], ruri[128];
	struct ferry_stats a, b;

	(void)state;
	vm_init(&src, true);
	vm_init(&dst, false);
	/* slow enough that postcopy lasts a few seconds */
	ss = session(&src, FERRY_POSTCOPY_AFTER, 16u << 20);
	ds = session(&dst, FERRY_POSTCOPY_OFF, 0);
	unix_uri(duri, sizeof(duri), "cut-dst");
	unix_uri(puri, sizeof(puri), "cut-proxy");
	job_start(&rj, ds, duri, false);
	proxy_start(&px, puri + 5, duri + 5);
	job_start(&sj, ss, puri, true);
	for (int round = 1; round <= 2; round++) {
		assert_true(wait_state(ds, FERRY_STATE_POSTCOPY, 20000));
		usleep(300 * 1000);
		proxy_cut(&px);
		assert_true(wait_state(ss, FERRY_STATE_POSTCOPY_PAUSED, 10000));
		assert_true(wait_state(ds, FERRY_STATE_POSTCOPY_PAUSED, 10000));
		a = stats_of(ss);
		b = stats_of(ds);
		assert_int_equal(a.owner, FERRY_OWNER_DESTINATION);
		assert_int_equal(b.owner, FERRY_OWNER_DESTINATION);
		assert_true(b.pages_missing > 0);
		/* a cancel changes nothing now */
		ferry_session_cancel(ss);
		ferry_session_cancel(ds);
		/* the destination listens again; the source goes there
		 * (directly: the proxy's listener is for the first attempt) */
		snprintf(ruri, sizeof(ruri), "unix:/tmp/ferry-test-pc-%d-r%d.sock",
			 getpid(), round);
		assert_int_equal(ferry_session_recover(ds, ruri), 0);
		if (round == 1) {
			/* the second attempt goes through a proxy again */
			proxy_stop(&px);
			proxy_start(&px, puri + 5, ruri + 5);
			assert_int_equal(ferry_session_recover(ss, puri), 0);
		} else {
			assert_int_equal(ferry_session_recover(ss, ruri), 0);
		}
	}
	pthread_join(sj.t, NULL);
	pthread_join(rj.t, NULL);
	proxy_stop(&px);
	a = stats_of(ss);
	b = stats_of(ds);
	assert_int_equal(sj.rc, 0);
	assert_int_equal(rj.rc, 0);
	assert_int_equal(a.recoveries, 2);
	assert_int_equal(b.recoveries, 2);
	assert_int_equal(a.owner, FERRY_OWNER_DESTINATION);
	assert_memory_equal(dst.mem, src.mem, MEM);
	assert_int_equal(atomic_load(&src.resumes), 0);
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

/* The destination is gone for good: the source stays paused until an
 * operator forces its copy to run, and then says what that risks. */
static void test_force_resume(void **state)
{
	struct vm src, dst;
	ferry_session *ss, *ds;
	struct job rj, sj;
	struct proxy px;
	char duri[128], puri[128], msg[1024];

	(void)state;
	vm_init(&src, true);
	vm_init(&dst, false);
	ss = session(&src, FERRY_POSTCOPY_AFTER, 16u << 20);
	ds = session(&dst, FERRY_POSTCOPY_OFF, 0);
	unix_uri(duri, sizeof(duri), "force-dst");
	unix_uri(puri, sizeof(puri), "force-proxy");
	job_start(&rj, ds, duri, false);
	proxy_start(&px, puri + 5, duri + 5);
	job_start(&sj, ss, puri, true);
	assert_true(wait_state(ss, FERRY_STATE_POSTCOPY, 20000));
	assert_int_equal(ferry_session_force_resume(ss), -EBUSY);
	proxy_cut(&px);
	assert_true(wait_state(ss, FERRY_STATE_POSTCOPY_PAUSED, 10000));
	usleep(200 * 1000);
	assert_false(atomic_load(&src.run));
	assert_int_equal(ferry_session_force_resume(ss), 0);
	pthread_join(sj.t, NULL);
	assert_int_equal(sj.rc, FERRY_EPOSTCOPY);
	assert_true(atomic_load(&src.run));
	assert_int_equal(stats_of(ss).owner, FERRY_OWNER_SOURCE);
	ferry_session_errmsg(ss, msg, sizeof(msg));
	assert_non_null(strstr(msg, "two copies"));
	/* The destination stays paused: it never says it completed. */
	assert_true(wait_state(ds, FERRY_STATE_POSTCOPY_PAUSED, 10000));
	usleep(300 * 1000);
	assert_int_equal(stats_of(ds).state, FERRY_STATE_POSTCOPY_PAUSED);
	assert_true(stats_of(ds).pages_missing > 0);
	proxy_stop(&px);
	/* Let the destination's receive end so the test can: force is a
	 * source's call, so it recovers to nowhere... the process ends; the
	 * session is left (its vCPU may wait on a page for ever). */
	vm_free(&src);
	ferry_session_destroy(ss);
	(void)ds;
}

/* Postcopy needs userfaultfd at the destination. */
static bool have_uffd(void)
{
	long fd = syscall(SYS_userfaultfd, 0);

	if (fd < 0)
		return false;
	close((int)fd);
	return true;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_postcopy_completes),
		cmocka_unit_test(test_refused_switch_gives_guest_back),
		cmocka_unit_test(test_cut_pauses_and_recovers),
		cmocka_unit_test(test_force_resume),
	};

	signal(SIGPIPE, SIG_IGN);
	if (!have_uffd()) {
		printf("skipped: userfaultfd is not available to this user (postcopy needs it at the destination)\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
