// SPDX-License-Identifier: MIT
/*
 * fake_vmm.c - the guarded-region VMM of fake_vmm.h.
 */
#include "fake_vmm.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CANARY 0xcb

int fake_vmm_init(struct fake_vmm *vm, size_t size)
{
	memset(vm, 0, sizeof(*vm));
	if (!size || size % FAKE_PAGE)
		return -EINVAL;
	vm->map_len = size + 4 * FAKE_PAGE;
	vm->map = mmap(NULL, vm->map_len, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (vm->map == MAP_FAILED) {
		vm->map = NULL;
		return -errno;
	}
	vm->mem = vm->map + 2 * FAKE_PAGE;
	vm->size = size;
	pthread_mutex_init(&vm->log_lock, NULL);
	if (mprotect(vm->mem - FAKE_PAGE, size + 2 * FAKE_PAGE,
		     PROT_READ | PROT_WRITE)) {
		int rc = -errno;

		munmap(vm->map, vm->map_len);
		vm->map = NULL;
		return rc;
	}
	fake_vmm_canaries_rearm(vm);
	return 0;
}

void fake_vmm_canaries_rearm(struct fake_vmm *vm)
{
	memset(vm->mem - FAKE_PAGE, CANARY, FAKE_PAGE);
	memset(vm->mem + vm->size, CANARY, FAKE_PAGE);
}

/* The first byte of @p (@n bytes) that is not the canary, or -1. */
static long changed(const uint8_t *p, size_t n)
{
	static uint8_t pattern[FAKE_PAGE];

	if (!pattern[0])
		memset(pattern, CANARY, sizeof(pattern));
	if (!memcmp(p, pattern, n))
		return -1;
	for (size_t i = 0; i < n; i++)
		if (p[i] != CANARY)
			return (long)i;
	return -1;
}

bool fake_vmm_canaries_ok(const struct fake_vmm *vm, long *where)
{
	long at = changed(vm->mem - FAKE_PAGE, FAKE_PAGE);

	if (at >= 0) {
		if (where)
			*where = at - (long)FAKE_PAGE;
		return false;
	}
	at = changed(vm->mem + vm->size, FAKE_PAGE);
	if (at >= 0) {
		if (where)
			*where = (long)vm->size + at;
		return false;
	}
	return true;
}

void fake_vmm_free(struct fake_vmm *vm)
{
	if (vm->map)
		munmap(vm->map, vm->map_len);
	vm->map = NULL;
	vm->mem = NULL;
}

void fake_vmm_reset_counters(struct fake_vmm *vm)
{
	atomic_store(&vm->pauses, 0);
	atomic_store(&vm->resumes, 0);
	atomic_store(&vm->loads, 0);
	atomic_store(&vm->acquires, 0);
	atomic_store(&vm->releases, 0);
	atomic_store(&vm->reacquires, 0);
	pthread_mutex_lock(&vm->log_lock);
	vm->log_len = 0;
	vm->log[0] = 0;
	pthread_mutex_unlock(&vm->log_lock);
}

static void op_log(void *o, int level, const char *msg)
{
	struct fake_vmm *vm = o;
	size_t n = strlen(msg) + 1;

	(void)level;
	if (n >= sizeof(vm->log))
		return;
	pthread_mutex_lock(&vm->log_lock);
	if (vm->log_len + n >= sizeof(vm->log))
		vm->log_len = 0;
	memcpy(vm->log + vm->log_len, msg, n - 1);
	vm->log[vm->log_len + n - 1] = '\n';
	vm->log_len += n;
	vm->log[vm->log_len] = 0;
	pthread_mutex_unlock(&vm->log_lock);
}

bool fake_vmm_logged(struct fake_vmm *vm, const char *text)
{
	bool found;

	pthread_mutex_lock(&vm->log_lock);
	found = strstr(vm->log, text) != NULL;
	pthread_mutex_unlock(&vm->log_lock);
	return found;
}

static int op_pause(void *o)
{
	atomic_fetch_add(&((struct fake_vmm *)o)->pauses, 1);
	return 0;
}

static int op_resume(void *o)
{
	atomic_fetch_add(&((struct fake_vmm *)o)->resumes, 1);
	return 0;
}

static int op_save(void *o, struct ferry_buf *out)
{
	struct fake_vmm *vm = o;

	return ferry_buf_append(out, vm->state, vm->state_len);
}

static int op_load(void *o, const void *data, size_t len)
{
	struct fake_vmm *vm = o;

	if (len > sizeof(vm->state))
		return -EINVAL;
	memcpy(vm->state, data, len);
	vm->state_len = len;
	atomic_fetch_add(&vm->loads, 1);
	return 0;
}

static int op_release(void *o)
{
	atomic_fetch_add(&((struct fake_vmm *)o)->releases, 1);
	return 0;
}

static int op_reacquire(void *o)
{
	atomic_fetch_add(&((struct fake_vmm *)o)->reacquires, 1);
	return 0;
}

static int op_acquire(void *o)
{
	atomic_fetch_add(&((struct fake_vmm *)o)->acquires, 1);
	return 0;
}

/* The source's guest never runs: nothing is ever dirty after pass 1. */
static int op_bitmap(void *o, uint32_t region, uint64_t *bitmap, size_t pages)
{
	return 0;
}

static const struct ferry_vmm_ops fake_ops = {
	FERRY_VMM_OPS_INIT,
	.pause = op_pause,
	.resume = op_resume,
	.save_state = op_save,
	.load_state = op_load,
	.release = op_release,
	.reacquire = op_reacquire,
	.acquire = op_acquire,
	.get_dirty_bitmap = op_bitmap,
};

ferry_session *fake_vmm_session(struct fake_vmm *vm, bool source, bool multi)
{
	struct ferry_config cfg;
	struct ferry_region r = { .gpa = 0, .size = vm->size, .host = vm->mem,
				  .fd = -1, .name = "ram0" };
	ferry_session *s;

	ferry_config_init(&cfg);
	cfg.ops = &fake_ops;
	cfg.opaque = vm;
	cfg.on_log = op_log;
	if (source)
		cfg.dirty_mode = FERRY_DIRTY_BITMAP;
#ifdef FERRY_CAP_MULTI_CHANNEL
	if (!multi)
		cfg.capabilities &= ~FERRY_CAP_MULTI_CHANNEL;
#endif
	if (ferry_session_new(&cfg, &s))
		return NULL;
	if (ferry_session_add_region(s, &r)) {
		ferry_session_destroy(s);
		return NULL;
	}
	return s;
}

/* ---- guard page reports ---- */

#define MAX_TRAPPED 4
static struct fake_vmm *trapped[MAX_TRAPPED];
static const char *volatile trap_what = "";

static void put_str(const char *s)
{
	ssize_t n = write(STDERR_FILENO, s, strlen(s));

	(void)n;
}

/* Only async-signal-safe calls: format the offset by hand. */
static void on_segv(int sig, siginfo_t *si, void *uc)
{
	uint8_t *a = si->si_addr;
	char num[32];
	int i = (int)sizeof(num) - 1;

	for (int k = 0; k < MAX_TRAPPED; k++) {
		struct fake_vmm *vm = trapped[k];
		unsigned long off;
		bool before;

		if (!vm || a < vm->map || a >= vm->map + vm->map_len ||
		    (a >= vm->mem && a < vm->mem + vm->size))
			continue;
		before = a < vm->mem;
		off = before ? (unsigned long)(vm->mem - a)
			     : (unsigned long)(a - (vm->mem + vm->size));
		num[i] = 0;
		do {
			num[--i] = (char)('0' + off % 10);
			off /= 10;
		} while (off && i > 0);
		put_str("FAIL: ");
		put_str((const char *)trap_what);
		put_str(": access outside the guest region, ");
		put_str(num + i);
		put_str(before ? " bytes before its start\n"
			       : " bytes after its end\n");
		_exit(3);
	}
	/* Not ours: die the usual way. */
	signal(sig, SIG_DFL);
	raise(sig);
}

void fake_vmm_trap_guards(struct fake_vmm *vm, const char *what)
{
	static bool installed;

	trap_what = what;
	for (int k = 0; vm && k < MAX_TRAPPED; k++) {
		if (trapped[k] == vm)
			break;
		if (!trapped[k]) {
			trapped[k] = vm;
			break;
		}
	}
	if (!installed) {
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = on_segv;
		sa.sa_flags = SA_SIGINFO | SA_NODEFER;
		sigaction(SIGSEGV, &sa, NULL);
		sigaction(SIGBUS, &sa, NULL);
		installed = true;
	}
}
