// SPDX-License-Identifier: MIT
/*
 * fuzz_receive.c - libFuzzer harness for the destination's whole receive
 * path: the input is the byte stream a source sends, and it goes through
 * the real engine (ferry_session_receive() over a UNIX socket, state
 * machine, record I/O, memory straight into guest memory, the VMM
 * callbacks), not a model of it.
 *
 * The destination's one region is 64 KiB of a fake VMM (tests/hostile/
 * fake_vmm.h): canary pages beside it, PROT_NONE guard pages beyond, so a
 * write outside the region is caught where it happens or right after the
 * run. Placeholder checksums in the input are filled in (fuzz_common.h)
 * so that mutations get past the framing. A receiver thread runs one
 * receive per input; the harness connects, writes the input while reading
 * the answers, half-closes, and reads until the destination closes, so a
 * run ends as soon as the destination has seen the whole input.
 *
 * Properties checked beyond "no crash, no sanitizer report":
 *  - nothing outside the region is written (canaries, guard pages, and
 *    no receive ever fails with EFAULT);
 *  - a failed receive never resumed the guest or acquired its resources;
 *    a successful one resumed it exactly once;
 *  - everything the destination sends is a well-formed OK or ERROR record,
 *    and nothing follows an ERROR.
 *
 * Extra data connections (multi-channel) are not offered here: the
 * harness drives the main connection only.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fake_vmm.h"
#include "ferry.h"
#include "fuzz_common.h"
#include "wire/wire.h"

#define REGION (64u << 10)
/* A destination silent for this long while input is pending is hung. */
#define HANG_MS 20000

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fake_vmm vm;
static ferry_session *dst;
static struct sockaddr_un addr;
static char uri[sizeof(addr.sun_path) + 8];
static sem_t go, done;
static int recv_rc;
static bool verbose; /* FUZZ_VERBOSE=1: print how each run ended */

/* libFuzzer's timers interrupt waits with signals: wait again. */
static void wait_for(sem_t *sem)
{
	while (sem_wait(sem) && errno == EINTR)
		;
}

static void *receiver(void *arg)
{
	for (;;) {
		wait_for(&go);
		recv_rc = ferry_session_receive(dst, uri);
		sem_post(&done);
	}
	return NULL;
}

static void cleanup(void)
{
	unlink(addr.sun_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	pthread_t t;

	signal(SIGPIPE, SIG_IGN);
	verbose = getenv("FUZZ_VERBOSE") != NULL;
	if (fake_vmm_init(&vm, REGION))
		fz_fail("cannot map the guest region");
	dst = fake_vmm_session(&vm, false, false);
	if (!dst)
		fz_fail("cannot create the destination session");
	addr.sun_family = AF_UNIX;
	/* A socket file is created per run: tmpfs makes that cheap. */
	snprintf(addr.sun_path, sizeof(addr.sun_path),
		 "%s/ferry-fuzz-receive-%d.sock",
		 access("/dev/shm", W_OK) ? "/tmp" : "/dev/shm", (int)getpid());
	snprintf(uri, sizeof(uri), "unix:%s", addr.sun_path);
	sem_init(&go, 0, 0);
	sem_init(&done, 0, 0);
	if (pthread_create(&t, NULL, receiver, NULL))
		fz_fail("cannot start the receiver thread");
	pthread_detach(t);
	atexit(cleanup);
	return 0;
}

/* The receiver listens a moment after it is told to: retry until then. */
static int connect_dst(void)
{
	for (unsigned tries = 0;; tries++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0)
			fz_fail("socket: %s", strerror(errno));
		if (!connect(fd, (struct sockaddr *)&addr, sizeof(addr)))
			return fd;
		if (errno != ENOENT && errno != ECONNREFUSED && errno != EINTR)
			fz_fail("connect: %s", strerror(errno));
		close(fd);
		if (tries > 200000)
			fz_fail("the destination never listened");
		if (tries > 100)
			usleep(50);
		else
			sched_yield();
	}
}

struct answers {
	uint8_t *p;
	size_t len, cap;
};

static void keep(struct answers *a, const uint8_t *p, size_t n)
{
	if (a->len + n > a->cap) {
		size_t cap = (a->len + n) * 2;
		uint8_t *q = realloc(a->p, cap);

		if (!q)
			fz_fail("out of memory");
		a->p = q;
		a->cap = cap;
	}
	memcpy(a->p + a->len, p, n);
	a->len += n;
}

/* Write @n bytes while reading answers, then read until the close. */
static void exchange(int fd, const uint8_t *p, size_t n, struct answers *a)
{
	size_t off = 0;
	bool sending = true;
	uint8_t buf[16384];

	fcntl(fd, F_SETFL, O_NONBLOCK);
	if (!n) {
		shutdown(fd, SHUT_WR);
		sending = false;
	}
	for (;;) {
		struct pollfd pf = { .fd = fd,
				     .events = POLLIN | (sending ? POLLOUT : 0) };
		int r = poll(&pf, 1, HANG_MS);

		if (r < 0 && errno == EINTR)
			continue;
		FZ_ASSERT(r > 0, "the destination hung (%s)",
			  sending ? "not reading" : "not closing");
		if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t got = recv(fd, buf, sizeof(buf), 0);

			if (got == 0 || (got < 0 && errno == ECONNRESET))
				return;
			if (got > 0)
				keep(a, buf, (size_t)got);
			else if (errno != EAGAIN && errno != EINTR)
				fz_fail("recv: %s", strerror(errno));
		}
		if (sending && (pf.revents & POLLOUT)) {
			ssize_t w = send(fd, p + off, n - off, MSG_NOSIGNAL);

			if (w > 0)
				off += (size_t)w;
			else if (w < 0 && errno != EAGAIN && errno != EINTR)
				sending = false; /* closed on us: read why */
			if (off == n) {
				shutdown(fd, SHUT_WR);
				sending = false;
			}
		}
	}
}

/* Answers are whole OK/ERROR records, and an ERROR is the last one. */
static void check_answers(const struct answers *a)
{
	size_t off = 0;
	bool error = false;

	while (off < a->len) {
		struct fy_rec_hdr h;
		const uint8_t *b;
		size_t used;
		int rc = fy_rec_decode(a->p + off, a->len - off, &h, &b, &used);

		FZ_ASSERT(rc == 0, "the destination sent a bad record (%d)", rc);
		FZ_ASSERT(!error, "the destination answered after an ERROR");
		FZ_ASSERT(h.type == FY_REC_OK || h.type == FY_REC_ERROR,
			  "the destination sent record 0x%x", h.type);
		if (h.type == FY_REC_ERROR) {
			struct fy_error_msg e;

			FZ_ASSERT(!fy_error_decode(b, h.length, &e) && e.code < 0,
				  "malformed ERROR from the destination");
			error = true;
		}
		off += used;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct answers a = { 0 };
	uint8_t *in = malloc(size ? size : 1);
	long at;
	int fd;

	if (!in)
		return 0;
	memcpy(in, data, size);
	fz_fix_checksums(in, size, true);
	fake_vmm_reset_counters(&vm);

	sem_post(&go);
	fd = connect_dst();
	exchange(fd, in, size, &a);
	close(fd);
	wait_for(&done);

	if (verbose) {
		char msg[512];

		fprintf(stderr, "receive: %d (%s) %s; resumed %d\n", recv_rc,
			ferry_strerror(recv_rc),
			ferry_session_errmsg(dst, msg, sizeof(msg)),
			atomic_load(&vm.resumes));
	}
	check_answers(&a);
	FZ_ASSERT(fake_vmm_canaries_ok(&vm, &at),
		  "the destination wrote outside its region, at offset %ld", at);
	FZ_ASSERT(recv_rc != -EFAULT,
		  "the destination tried to receive outside its region");
	if (recv_rc)
		FZ_ASSERT(!atomic_load(&vm.resumes) && !atomic_load(&vm.acquires),
			  "failed receive (%d) but the guest was resumed", recv_rc);
	else
		FZ_ASSERT(atomic_load(&vm.resumes) == 1,
			  "completed receive resumed the guest %d times",
			  atomic_load(&vm.resumes));
	free(a.p);
	free(in);
	return 0;
}
