// SPDX-License-Identifier: MIT
/*
 * test_local.c - local migration by memory fds (ferry_config.local_fds)
 * end to end in one process: a source and a destination session in two
 * threads over a real UNIX socket, guest memory in memfds. Checks what a
 * VMM would notice: the destination maps the very same pages (nothing is
 * copied, a few KiB cross), its region's fd becomes the source's file,
 * and every refusal (a TCP URI, anonymous memory, a destination that does
 * not offer it, a destination that fails after mapping, a source that
 * fails after it, a hostile MEMORY_FDS) leaves the source running with its memory intact and the
 * destination with its own memory and no descriptor left open.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "ferry.h"
#include "transport/transport.h"
#include "wire/wire.h"

#define MEM (8u << 20)
#define PAGE 4096u

struct vm {
	int fd;		/* memfd, or -1 (anonymous) */
	uint8_t *mem;
	size_t size;
	int pauses, resumes, fail_load, fail_resume, fail_save;
	uint64_t token;
	bool loaded;
	/* Device descriptors: a source's to hand over, a destination's
	 * received (owned by the test once load_fds took them). */
	int dev[512];
	size_t ndev;
	int fail_load_fds;
};

static void vm_init(struct vm *vm, bool memfd, uint8_t fill)
{
	memset(vm, 0, sizeof(*vm));
	vm->size = MEM;
	vm->fd = memfd ? memfd_create("test-guest", MFD_CLOEXEC) : -1;
	if (memfd) {
		assert_true(vm->fd >= 0);
		assert_int_equal(ftruncate(vm->fd, MEM), 0);
	}
	vm->mem = mmap(NULL, MEM, PROT_READ | PROT_WRITE,
		       memfd ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS,
		       vm->fd, 0);
	assert_true(vm->mem != MAP_FAILED);
	memset(vm->mem, fill, MEM);
	vm->token = fill ? 0xfeedull : 0;
}

static void vm_free(struct vm *vm)
{
	munmap(vm->mem, vm->size);
	if (vm->fd >= 0)
		close(vm->fd);
}

static int op_pause(void *o)
{
	((struct vm *)o)->pauses++;
	return 0;
}

static int op_resume(void *o)
{
	struct vm *vm = o;

	if (vm->fail_resume)
		return -EIO;
	vm->resumes++;
	return 0;
}

static int op_save(void *o, struct ferry_buf *out)
{
	struct vm *vm = o;

	if (vm->fail_save)
		return -EIO;
	return ferry_buf_append(out, &vm->token, 8);
}

static int op_load(void *o, const void *data, size_t len)
{
	struct vm *vm = o;

	if (vm->fail_load || len != 8)
		return -EINVAL;
	memcpy(&vm->token, data, 8);
	vm->loaded = true;
	return 0;
}

static int op_save_fds(void *o, int *fds, size_t max, size_t *n)
{
	struct vm *vm = o;

	if (vm->ndev > max)
		return -ENOSPC;
	memcpy(fds, vm->dev, vm->ndev * sizeof(int));
	*n = vm->ndev;
	return 0;
}

static int op_load_fds(void *o, const int *fds, size_t n)
{
	struct vm *vm = o;

	if (vm->fail_load_fds || n > sizeof(vm->dev) / sizeof(vm->dev[0]))
		return -EIO;
	memcpy(vm->dev, fds, n * sizeof(int));
	vm->ndev = n;
	return 0;
}

static const struct ferry_vmm_ops ops = {
	FERRY_VMM_OPS_INIT,
	.pause = op_pause,
	.resume = op_resume,
	.save_state = op_save,
	.load_state = op_load,
	.save_fds = op_save_fds,
	.load_fds = op_load_fds,
};

static ferry_session *session(struct vm *vm, bool local, uint64_t caps)
{
	struct ferry_config cfg;
	struct ferry_region r = { .gpa = 0, .size = vm->size, .host = vm->mem,
				  .fd = vm->fd, .name = "ram0",
				  .flags = vm->fd >= 0 ? FERRY_REGION_FD : 0 };
	ferry_session *s;

	ferry_config_init(&cfg);
	cfg.ops = &ops;
	cfg.opaque = vm;
	cfg.local_fds = local;
	cfg.capabilities = caps;
	assert_int_equal(ferry_session_new(&cfg, &s), 0);
	assert_int_equal(ferry_session_add_region(s, &r), 0);
	return s;
}

struct job {
	ferry_session *s;
	char uri[128];
	int rc;
	pthread_t t;
};

static void *recv_main(void *arg)
{
	struct job *j = arg;

	j->rc = ferry_session_receive(j->s, j->uri);
	return NULL;
}

static void recv_start(struct job *j, ferry_session *s, const char *tag)
{
	j->s = s;
	snprintf(j->uri, sizeof(j->uri), "unix:/tmp/ferry-local-%d-%s.sock",
		 getpid(), tag);
	unlink(j->uri + 5);
	pthread_create(&j->t, NULL, recv_main, j);
	for (int i = 0; i < 500 && access(j->uri + 5, F_OK); i++)
		usleep(2000);
}

/* Descriptors this process has open. */
static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the directory's own */
}

static const char *errmsg(ferry_session *s)
{
	static char buf[512];

	return ferry_session_errmsg(s, buf, sizeof(buf));
}

/* The same pages on both sides: what one writes, the other reads. */
static void assert_shared(struct vm *a, struct vm *b)
{
	a->mem[12345] = 0x5a;
	assert_int_equal(b->mem[12345], 0x5a);
	b->mem[MEM - 1] = 0xa5;
	assert_int_equal(a->mem[MEM - 1], 0xa5);
}

/* The pages are not shared: a write on one side stays there. */
static void assert_private(struct vm *a, struct vm *b)
{
	uint8_t old = b->mem[777];

	a->mem[777] = (uint8_t)(old + 1);
	assert_int_equal(b->mem[777], old);
	a->mem[777] = old;
}

static void test_local_migration(void **state)
{
	struct vm src, dst;
	struct ferry_stats st = { FERRY_STATS_INIT }, dt = { FERRY_STATS_INIT };
	struct stat a, b;
	struct job j;
	ferry_session *ss, *ds;
	int dst_fd;

	(void)state;
	vm_init(&src, true, 0x11);
	vm_init(&dst, true, 0);
	dst_fd = dst.fd;
	ss = session(&src, true, FERRY_CAP_ALL);
	ds = session(&dst, false, FERRY_CAP_ALL);
	recv_start(&j, ds, "ok");
	if (ferry_session_send(ss, j.uri))
		fail_msg("send: %s", errmsg(ss));
	pthread_join(j.t, NULL);
	assert_int_equal(j.rc, 0);
	assert_true(dst.loaded);
	assert_int_equal(dst.token, 0xfeed);
	assert_int_equal(src.pauses, 1);
	assert_int_equal(src.resumes, 0);
	assert_int_equal(dst.resumes, 1);
	/* Nothing was copied: the destination maps the source's pages. */
	assert_int_equal(dst.mem[0], 0x11);
	assert_shared(&src, &dst);
	/* Its region's fd is now the source's file, at the same number. */
	assert_int_equal(dst.fd, dst_fd);
	assert_int_equal(fstat(src.fd, &a), 0);
	assert_int_equal(fstat(dst.fd, &b), 0);
	assert_true(a.st_ino == b.st_ino && a.st_dev == b.st_dev);
	assert_true(fcntl(dst.fd, F_GETFD) & FD_CLOEXEC);
	ferry_session_stats(ss, &st);
	ferry_session_stats(ds, &dt);
	assert_true(st.local_fds && dt.local_fds);
	assert_true(st.capabilities & FERRY_CAP_LOCAL_FDS);
	assert_int_equal(st.pass, 0);
	assert_true(st.wire_bytes > 0 && st.wire_bytes < 16384);
	assert_true(dt.wire_bytes > 0 && dt.wire_bytes < 16384);
	assert_true(st.bytes < 4096); /* the state only */
	assert_int_equal(st.owner, FERRY_OWNER_DESTINATION);
	assert_true(st.downtime_ms > 0);
	assert_string_equal(st.dirty_mode, "");
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

/* Device descriptors (DEVICE_FDS): 300 sockets and a pipe, more than one
 * sendmsg() carries, reach the destination's VMM in order as the same
 * open files; both sides count them. Without the capability at the
 * destination none travel and save_fds is not called. */
static void test_device_fds(void **state)
{
	struct vm src, dst;
	struct ferry_stats st = { FERRY_STATS_INIT }, dt = { FERRY_STATS_INIT };
	struct stat a, b;
	struct job j;
	ferry_session *ss, *ds;
	int pipefd[2];

	(void)state;
	vm_init(&src, true, 0x21);
	vm_init(&dst, true, 0);
	for (unsigned i = 0; i < 300; i += 2)
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
					    &src.dev[i]), 0);
	assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
	src.dev[300] = pipefd[0];
	src.ndev = 301;
	ss = session(&src, true, FERRY_CAP_ALL);
	ds = session(&dst, false, FERRY_CAP_ALL);
	recv_start(&j, ds, "dev");
	if (ferry_session_send(ss, j.uri))
		fail_msg("send: %s", errmsg(ss));
	pthread_join(j.t, NULL);
	assert_int_equal(j.rc, 0);
	assert_int_equal(dst.ndev, 301);
	for (unsigned i = 0; i < 301; i++) {
		assert_int_not_equal(dst.dev[i], src.dev[i]);
		assert_int_equal(fstat(src.dev[i], &a), 0);
		assert_int_equal(fstat(dst.dev[i], &b), 0);
		if (a.st_ino != b.st_ino || a.st_dev != b.st_dev)
			fail_msg("descriptor %u is another file", i);
		assert_true(fcntl(dst.dev[i], F_GETFD) & FD_CLOEXEC);
	}
	/* The same socket: what one side's copy of a pair end writes, the
	 * other end reads. */
	assert_int_equal(write(dst.dev[0], "x", 1), 1);
	assert_int_equal(read(src.dev[1], &a, 1), 1);
	ferry_session_stats(ss, &st);
	ferry_session_stats(ds, &dt);
	assert_int_equal(st.device_fds, 301);
	assert_int_equal(dt.device_fds, 301);
	assert_true(st.capabilities & FERRY_CAP_DEVICE_FDS);
	for (unsigned i = 0; i < 301; i++) {
		close(dst.dev[i]);
		close(src.dev[i]);
	}
	close(pipefd[1]);
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);

	/* A destination that does not offer it: no DEVICE_FDS. */
	vm_init(&src, true, 0x22);
	vm_init(&dst, true, 0);
	src.ndev = 1;
	src.dev[0] = -1; /* save_fds would fail on it */
	ss = session(&src, true, FERRY_CAP_ALL);
	ds = session(&dst, false, FERRY_CAP_ALL & ~FERRY_CAP_DEVICE_FDS);
	recv_start(&j, ds, "nodev");
	if (ferry_session_send(ss, j.uri))
		fail_msg("send: %s", errmsg(ss));
	pthread_join(j.t, NULL);
	assert_int_equal(j.rc, 0);
	assert_int_equal(dst.ndev, 0);
	ferry_session_stats(ss, &st);
	assert_int_equal(st.device_fds, 0);
	assert_false(st.capabilities & FERRY_CAP_DEVICE_FDS);
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

/* Refused before anything is sent: a TCP address, anonymous memory, and
 * postcopy (by the config check). The source never paused. */
static void test_refused_before_sending(void **state)
{
	struct ferry_config cfg;
	struct vm src, anon;
	ferry_session *ss;
	char err[256];

	(void)state;
	vm_init(&src, true, 1);
	ss = session(&src, true, FERRY_CAP_ALL);
	assert_int_equal(ferry_session_send(ss, "tcp:127.0.0.1:1"), -EINVAL);
	assert_non_null(strstr(errmsg(ss), "unix:"));
	assert_int_equal(ferry_session_send(ss, "file:/tmp/x"), -EINVAL);
	assert_int_equal(src.pauses, 0);
	ferry_session_destroy(ss);

	vm_init(&anon, false, 1);
	ss = session(&anon, true, FERRY_CAP_ALL);
	assert_int_equal(ferry_session_send(ss, "unix:/nonexistent/s"), -EINVAL);
	assert_non_null(strstr(errmsg(ss), "--memory-backend memfd or hugetlb"));
	assert_non_null(strstr(errmsg(ss), "ram0"));
	assert_int_equal(anon.pauses, 0);
	ferry_session_destroy(ss);

	ferry_config_init(&cfg);
	cfg.ops = &ops;
	cfg.local_fds = true;
	cfg.postcopy = FERRY_POSTCOPY_AUTO;
	assert_int_equal(ferry_config_check(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "local_fds"));
	vm_free(&src);
	vm_free(&anon);
}

/* A destination that does not offer local fds: the source says so and
 * keeps its guest; the destination's memory is its own. */
static void test_destination_without_capability(void **state)
{
	struct vm src, dst;
	struct job j;
	ferry_session *ss, *ds;

	(void)state;
	vm_init(&src, true, 0x22);
	vm_init(&dst, true, 0);
	ss = session(&src, true, FERRY_CAP_ALL);
	ds = session(&dst, false, FERRY_CAP_ALL & ~FERRY_CAP_LOCAL_FDS);
	recv_start(&j, ds, "nocap");
	assert_int_equal(ferry_session_send(ss, j.uri), -ENOTSUP);
	assert_non_null(strstr(errmsg(ss), "does not offer local migration"));
	pthread_join(j.t, NULL);
	assert_true(j.rc != 0);
	assert_int_equal(src.pauses, 0);
	assert_int_equal(dst.mem[0], 0);
	assert_private(&src, &dst);
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

/* The destination maps the files, then fails to load the state: the
 * source resumes with its memory as it was, and the destination has let
 * go of the source's pages (its own memory is back) and holds no
 * received descriptor. */
static void test_load_failure_unmaps(void **state)
{
	struct vm src, dst;
	struct job j;
	ferry_session *ss, *ds;
	int before;

	(void)state;
	vm_init(&src, true, 0x33);
	vm_init(&dst, true, 0x44);
	dst.fail_load = 1;
	ss = session(&src, true, FERRY_CAP_ALL);
	ds = session(&dst, false, FERRY_CAP_ALL);
	before = open_fds();
	recv_start(&j, ds, "loadfail");
	assert_int_equal(ferry_session_send(ss, j.uri), FERRY_EPEER);
	pthread_join(j.t, NULL);
	assert_int_equal(j.rc, FERRY_EVMM);
	assert_int_equal(src.pauses, 1);
	assert_int_equal(src.resumes, 1);
	assert_int_equal(dst.resumes, 0);
	assert_int_equal(src.mem[0], 0x33);
	assert_int_equal(dst.mem[0], 0x44); /* its own memfd again */
	assert_private(&src, &dst);
	assert_int_equal(open_fds(), before);
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

/* The source fails after the destination mapped its memory (its state
 * cannot be saved): it sends ABORT and resumes; the destination, told
 * so, unmaps the source's pages. */
static void test_source_failure_aborts(void **state)
{
	struct vm src, dst;
	struct job j;
	ferry_session *ss, *ds;

	(void)state;
	vm_init(&src, true, 0x12);
	vm_init(&dst, true, 0x34);
	src.fail_save = 1;
	ss = session(&src, true, FERRY_CAP_ALL);
	ds = session(&dst, false, FERRY_CAP_ALL);
	recv_start(&j, ds, "savefail");
	assert_int_equal(ferry_session_send(ss, j.uri), FERRY_EVMM);
	pthread_join(j.t, NULL);
	assert_int_equal(j.rc, FERRY_EPEER);
	assert_int_equal(src.pauses, 1);
	assert_int_equal(src.resumes, 1);
	assert_int_equal(dst.resumes, 0);
	assert_int_equal(dst.mem[0], 0x34);
	assert_private(&src, &dst);
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

/* The destination cannot resume the guest after RELEASED: it answers
 * ERROR, so the source takes its guest back and resumes it; the
 * destination has let go of the source's pages and its region's fd is
 * still its own file. */
static void test_resume_failure_unmaps(void **state)
{
	struct vm src, dst;
	struct stat a, b;
	struct job j;
	ferry_session *ss, *ds;

	(void)state;
	vm_init(&src, true, 0x55);
	vm_init(&dst, true, 0x77);
	dst.fail_resume = 1;
	ss = session(&src, true, FERRY_CAP_ALL);
	ds = session(&dst, false, FERRY_CAP_ALL);
	recv_start(&j, ds, "resumefail");
	assert_int_equal(ferry_session_send(ss, j.uri), FERRY_EPEER);
	pthread_join(j.t, NULL);
	assert_int_equal(j.rc, FERRY_EVMM);
	assert_int_equal(src.resumes, 1);
	assert_int_equal(src.mem[0], 0x55);
	assert_int_equal(dst.mem[0], 0x77);
	assert_private(&src, &dst);
	assert_int_equal(fstat(src.fd, &a), 0);
	assert_int_equal(fstat(dst.fd, &b), 0);
	assert_false(a.st_ino == b.st_ino && a.st_dev == b.st_dev);
	ferry_session_destroy(ss);
	ferry_session_destroy(ds);
	vm_free(&src);
	vm_free(&dst);
}

/* A raw client: stream header, HELLO offering local-fds, CONFIG of one
 * region; returns the connected socket after both OKs. */
static int hostile_open(const char *path, uint64_t size)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct fy_hello h = { .version_min = 2, .version_max = 2,
			      .capabilities = FERRY_CAP_ALL };
	struct fy_config_msg c = { .page_size = 4096, .nregions = 1 };
	uint8_t sh[FY_STREAM_HDR_SIZE], in[4096];
	struct fy_buf b, rec;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	for (int i = 0; i < 200 && connect(fd, (void *)&sa, sizeof(sa)); i++)
		usleep(5000);
	fy_stream_hdr_encode(sh);
	assert_int_equal(write(fd, sh, sizeof(sh)), (ssize_t)sizeof(sh));
	fy_buf_init(&b);
	fy_buf_init(&rec);
	assert_int_equal(fy_hello_encode(&b, &h), 0);
	assert_int_equal(fy_rec_encode(&rec, FY_REC_HELLO, 1, 0, b.data, b.len), 0);
	c.regions[0].size = size;
	snprintf(c.regions[0].name, sizeof(c.regions[0].name), "ram0");
	fy_buf_reset(&b);
	assert_int_equal(fy_config_encode(&b, &c), 0);
	assert_int_equal(fy_rec_encode(&rec, FY_REC_CONFIG, 2, 0, b.data, b.len), 0);
	assert_int_equal(write(fd, rec.data, rec.len), (ssize_t)rec.len);
	/* Two OKs; their sizes do not matter, only that they came. */
	usleep(50000);
	assert_true(recv(fd, in, sizeof(in), 0) > 0);
	fy_buf_free(&b);
	fy_buf_free(&rec);
	return fd;
}

/* Send a record of @type with @body and @fds attached (@nfds may be 0). */
static void hostile_send_rec(int sock, uint32_t type, uint32_t seq,
			     const struct fy_buf *body, const int *fds,
			     unsigned nfds)
{
	struct fy_buf rec;
	struct iovec iov;

	fy_buf_init(&rec);
	assert_int_equal(fy_rec_encode(&rec, type, seq, 0, body->data,
				       body->len), 0);
	iov.iov_base = rec.data;
	iov.iov_len = rec.len;
	if (nfds)
		assert_int_equal(fy_transport_sendmsg_fds(sock, &iov, 1, fds,
							  nfds, 0),
				 (ssize_t)rec.len);
	else
		assert_int_equal(write(sock, rec.data, rec.len), (ssize_t)rec.len);
	fy_buf_free(&rec);
}

/* Send MEMORY_FDS with @body and @fds attached (@nfds may be 0). */
static void hostile_send(int sock, const struct fy_buf *body, const int *fds,
			 unsigned nfds)
{
	hostile_send_rec(sock, FY_REC_MEMORY_FDS, 3, body, fds, nfds);
}

/*
 * Hostile senders: each MEMORY_FDS below is refused with ERROR, the
 * destination's memory stays its own, and every descriptor that came
 * with it is closed (the process has as many open as before).
 */
static void test_hostile_memory_fds(void **state)
{
	struct fy_memory_fds good = { .count = 1 };
	struct vm dst;
	int pipefd[2], small, other;
	struct {
		const char *what;
		uint32_t size_fix; /* 0: the region's size */
		unsigned nfds;	   /* 0..3: which of fds[] go */
		int fds[3];
	} cases[5];
	unsigned n = 0;

	(void)state;
	vm_init(&dst, true, 0x66);
	assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
	small = memfd_create("small", MFD_CLOEXEC);
	assert_int_equal(ftruncate(small, MEM / 2), 0);
	other = memfd_create("other", MFD_CLOEXEC);
	assert_int_equal(ftruncate(other, MEM), 0);
	good.e[0] = (struct fy_memfd_entry){ 0, 4096, MEM, 0 };
	cases[n++] = (typeof(cases[0])){ "no descriptor", 0, 0, { -1 } };
	cases[n++] = (typeof(cases[0])){ "two for one", 0, 2, { other, other } };
	cases[n++] = (typeof(cases[0])){ "a pipe", 0, 1, { pipefd[0] } };
	cases[n++] = (typeof(cases[0])){ "a short file", 0, 1, { small } };
	cases[n++] = (typeof(cases[0])){ "another size", MEM / 2, 1, { other } };
	for (unsigned i = 0; i < n; i++) {
		ferry_session *ds = session(&dst, false, FERRY_CAP_ALL);
		struct fy_memory_fds m = good;
		struct fy_buf body;
		struct job j;
		int before = open_fds(), sock;
		uint8_t junk[512];

		if (cases[i].size_fix)
			m.e[0].size = cases[i].size_fix;
		recv_start(&j, ds, "hostile");
		sock = hostile_open(j.uri + 5, MEM);
		fy_buf_init(&body);
		assert_int_equal(fy_memory_fds_encode(&body, &m), 0);
		hostile_send(sock, &body, cases[i].fds, cases[i].nfds);
		fy_buf_free(&body);
		pthread_join(j.t, NULL);
		if (j.rc == 0)
			fail_msg("%s: accepted", cases[i].what);
		/* The answer is an ERROR, then the connection closes. */
		assert_true(read(sock, junk, sizeof(junk)) > 0);
		close(sock);
		assert_int_equal(dst.mem[0], 0x66);
		assert_false(dst.loaded);
		/* The listener socket went with the run. */
		if (open_fds() != before)
			fail_msg("%s: %d descriptors open, %d before",
				 cases[i].what, open_fds(), before);
		ferry_session_destroy(ds);
	}
	close(pipefd[0]);
	close(pipefd[1]);
	close(small);
	close(other);
	vm_free(&dst);
}

/*
 * Hostile DEVICE_FDS after a sound MEMORY_FDS: fewer or more descriptors
 * than the body says, one of another kind, and a VMM that refuses them.
 * Each is answered with ERROR, the destination's memory is its own again,
 * the VMM holds nothing, and every descriptor that came is closed.
 */
static void test_hostile_device_fds(void **state)
{
	struct fy_memory_fds good = { .count = 1 };
	uint32_t kinds[2] = { FY_DEVFD_SOCKET, FY_DEVFD_SOCKET };
	struct vm dst;
	int pipefd[2], sp[2], file;
	struct {
		const char *what;
		uint32_t count;	 /* what the body says */
		unsigned nfds;	 /* what comes */
		int fds[2];
		int fail_load;
	} cases[] = {
		{ "one missing", 2, 1, { 0 }, 0 },
		{ "one too many", 1, 2, { 0 }, 0 },
		{ "none for two", 2, 0, { 0 }, 0 },
		{ "a pipe for a socket", 1, 1, { 0 }, 0 },
		{ "the VMM refuses", 2, 2, { 0 }, 1 },
	};

	(void)state;
	vm_init(&dst, true, 0x66);
	assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	cases[0].fds[0] = sp[0];
	cases[1].fds[0] = sp[0];
	cases[1].fds[1] = sp[1];
	cases[3].fds[0] = pipefd[0];
	cases[4].fds[0] = sp[0];
	cases[4].fds[1] = sp[1];
	file = memfd_create("other", MFD_CLOEXEC);
	assert_int_equal(ftruncate(file, MEM), 0);
	good.e[0] = (struct fy_memfd_entry){ 0, 4096, MEM, 0 };
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ferry_session *ds = session(&dst, false, FERRY_CAP_ALL);
		struct fy_device_fds d = { .count = cases[i].count, .kind = kinds };
		struct fy_buf body;
		struct job j;
		int before = open_fds(), sock;
		uint8_t junk[512];

		dst.fail_load_fds = cases[i].fail_load;
		dst.ndev = 0;
		recv_start(&j, ds, "hostile-dev");
		sock = hostile_open(j.uri + 5, MEM);
		fy_buf_init(&body);
		assert_int_equal(fy_memory_fds_encode(&body, &good), 0);
		hostile_send(sock, &body, &file, 1);
		usleep(50000);
		assert_true(recv(sock, junk, sizeof(junk), 0) > 0); /* its OK */
		fy_buf_reset(&body);
		assert_int_equal(fy_device_fds_encode(&body, &d), 0);
		hostile_send_rec(sock, FY_REC_DEVICE_FDS, 4, &body, cases[i].fds,
				 cases[i].nfds);
		fy_buf_free(&body);
		pthread_join(j.t, NULL);
		if (j.rc == 0)
			fail_msg("%s: accepted", cases[i].what);
		assert_true(read(sock, junk, sizeof(junk)) > 0);
		close(sock);
		assert_int_equal(dst.mem[0], 0x66);
		assert_false(dst.loaded);
		assert_int_equal(dst.ndev, 0);
		if (open_fds() != before)
			fail_msg("%s: %d descriptors open, %d before",
				 cases[i].what, open_fds(), before);
		ferry_session_destroy(ds);
	}
	close(pipefd[0]);
	close(pipefd[1]);
	close(sp[0]);
	close(sp[1]);
	close(file);
	vm_free(&dst);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_local_migration),
		cmocka_unit_test(test_refused_before_sending),
		cmocka_unit_test(test_destination_without_capability),
		cmocka_unit_test(test_load_failure_unmaps),
		cmocka_unit_test(test_resume_failure_unmaps),
		cmocka_unit_test(test_source_failure_aborts),
		cmocka_unit_test(test_hostile_memory_fds),
		cmocka_unit_test(test_device_fds),
		cmocka_unit_test(test_hostile_device_fds),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
