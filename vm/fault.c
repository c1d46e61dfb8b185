// SPDX-License-Identifier: MIT
/*
 * fault.c - FERRY_VM_FAULT, the test hooks: the one parser of all its
 * items (vm_fault_parse()), and the "at:MOMENT:ACTION" hooks, with which
 * the fault matrix (tests/faults/) kills, freezes or cuts a ferry-vm at a
 * named moment of a migration, found from what the VMM sees of it (the
 * engine's events and the VMM callbacks), so the library carries no code
 * of its own for tests.
 *
 * Moments, and where each is seen:
 *   negotiation     the state event NEGOTIATING (both sides)
 *   pass1           a progress event of pass 1 (source)
 *   passN           a progress event of pass 2 or later (source)
 *   stopped         the state event STOPPED (both sides)
 *   state           save_state (source), load_state (destination)
 *   before-ready    the state event SWITCHOVER: the source asks, the
 *                   destination has not answered "ready" yet (both)
 *   after-ready     release(): the source has "ready" and has not sent
 *                   "released" yet (source)
 *   after-released  acquire() on a destination: "released" has arrived
 *   postcopy        the state event POSTCOPY (both sides)
 *   handoff         the pause, once the network device's connections are
 *                   frozen (source, kv workload)
 *   pushing         a progress event of postcopy once pages were pushed,
 *                   before any recovery: the phase's threads serve and
 *                   push (source)
 *   repushing       the same after a recovery, from its first progress
 *                   event on (source)
 *   running         the running note: the destination's guest has run
 *                   (and its check ended), "running" is not sent yet
 *                   (destination)
 * Actions: kill (SIGKILL to itself), stop (SIGSTOP to itself: a frozen
 * process, which the harness also uses as a breakpoint), cut (shutdown of
 * the migration's TCP connections: those to the URI's port on a source,
 * those accepted on it on a destination).
 *
 * Each hook fires once, with a line on stderr giving the moment, the
 * action and the wall-clock time in ms, from which the harness measures
 * how long detection took. A cut adds "cut N connections" (N >= 1), or
 * "cut FAILED: why" when it found nothing to cut, which fails the cell.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vm.h"

static const char *const moment_names[] = {
	[VM_AT_NEGOTIATION] = "negotiation",
	[VM_AT_PASS1] = "pass1",
	[VM_AT_PASSN] = "passN",
	[VM_AT_STOPPED] = "stopped",
	[VM_AT_STATE] = "state",
	[VM_AT_BEFORE_READY] = "before-ready",
	[VM_AT_AFTER_READY] = "after-ready",
	[VM_AT_AFTER_RELEASED] = "after-released",
	[VM_AT_POSTCOPY] = "postcopy",
	[VM_AT_HANDOFF] = "handoff",
	[VM_AT_PUSHING] = "pushing",
	[VM_AT_REPUSHING] = "repushing",
	[VM_AT_RUNNING] = "running",
};
static_assert(sizeof(moment_names) / sizeof(moment_names[0]) == VM_AT_COUNT,
	      "every moment has a name");

static const char *const action_names[] = {
	[VM_FA_NONE] = "none",
	[VM_FA_KILL] = "kill",
	[VM_FA_STOP] = "stop",
	[VM_FA_CUT] = "cut",
};
static_assert(sizeof(action_names) / sizeof(action_names[0]) == VM_FA_COUNT,
	      "every action has a name");

static int lookup(const char *const *names, int n, const char *s, size_t len)
{
	for (int i = 0; i < n; i++)
		if (strlen(names[i]) == len && !strncmp(names[i], s, len))
			return i;
	return -1;
}

/* The hooks not tied to a moment: a name, or a name and ":MS". */
enum vm_fault_hook {
	VM_FH_LOSE_WRITES,
	VM_FH_CORRUPT_PAGE,
	VM_FH_ACQUIRE_FAIL,
	VM_FH_ACQUIRE_DIE,
	VM_FH_HOLD_ACCEPT,
	VM_FH_STALL_LOAD,
	VM_FH_STALL_PAUSE,
	VM_FH_COUNT,
};

static const struct {
	const char *name;
	bool timed; /* takes ":MS" */
} hooks[] = {
	[VM_FH_LOSE_WRITES] = { "lose-writes", false },
	[VM_FH_CORRUPT_PAGE] = { "corrupt-page", false },
	[VM_FH_ACQUIRE_FAIL] = { "acquire-fail", false },
	[VM_FH_ACQUIRE_DIE] = { "acquire-die", false },
	[VM_FH_HOLD_ACCEPT] = { "hold-accept", false },
	[VM_FH_STALL_LOAD] = { "stall-load", true },
	[VM_FH_STALL_PAUSE] = { "stall-pause", true },
};
static_assert(sizeof(hooks) / sizeof(hooks[0]) == VM_FH_COUNT,
	      "every hook has a name");
static_assert(VM_FH_COUNT + VM_AT_COUNT <= 32, "one bit each in a seen mask");

/* The longest stall a hook may ask for: 10 minutes (usleep's range is
 * far wider), longer than any test waits. */
#define VM_FAULT_MAX_MS 600000u

#define FAULT_HELP \
	"need at:MOMENT:ACTION (MOMENT one of negotiation, pass1, passN, " \
	"stopped, state, before-ready, after-ready, after-released, " \
	"postcopy, handoff, pushing, repushing, running; ACTION kill, " \
	"stop or cut), or one of " \
	"lose-writes, corrupt-page, acquire-fail, acquire-die, hold-accept, " \
	"stall-load:MS, stall-pause:MS (MS from 1 to 600000)"

/* "MS" of a timed hook: digits only, 1 to VM_FAULT_MAX_MS. */
static int parse_ms(const char *s, size_t len, unsigned *ms)
{
	unsigned long v = 0;

	if (!len || len > 6 || strspn(s, "0123456789") < len)
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		v = v * 10 + (unsigned long)(s[i] - '0');
	if (!v || v > VM_FAULT_MAX_MS)
		return -EINVAL;
	*ms = (unsigned)v;
	return 0;
}

/* Arm hook @h (with @ms for a timed one). */
static void arm_hook(struct vm *vm, enum vm_fault_hook h, unsigned ms)
{
	switch (h) {
	case VM_FH_LOSE_WRITES: vm->fault_lose_writes = true; break;
	case VM_FH_CORRUPT_PAGE: vm->fault_corrupt_page = true; break;
	case VM_FH_ACQUIRE_FAIL: vm->fault_acquire_fail = true; break;
	case VM_FH_ACQUIRE_DIE: vm->fault_acquire_die = true; break;
	case VM_FH_HOLD_ACCEPT: vm->fault_hold_accept = true; break;
	case VM_FH_STALL_LOAD: vm->fault_stall_load_ms = ms; break;
	case VM_FH_STALL_PAUSE: vm->fault_stall_pause_ms = ms; break;
	case VM_FH_COUNT: break;
	}
}

/*
 * One item of @len bytes: its bit in the seen mask (a moment's, or
 * VM_AT_COUNT + a hook's) into @bit, the hook armed in @vm. Return: 0, or
 * -EINVAL with @err set.
 */
static int parse_item(struct vm *vm, const char *p, size_t len,
		      unsigned *bit, char *err, size_t errlen)
{
	const char *end = p + len, *m = p + 3, *a, *colon;
	unsigned ms = 0;
	int mi, ai;

	if (len >= 3 && !strncmp(p, "at:", 3)) {
		a = memchr(m, ':', (size_t)(end - m));
		mi = a ? lookup(moment_names, VM_AT_COUNT, m, (size_t)(a - m)) : -1;
		ai = a ? lookup(action_names, VM_FA_COUNT, a + 1,
				(size_t)(end - a - 1)) : -1;
		if (mi < 0 || ai <= VM_FA_NONE)
			goto unknown;
		vm->fault_at[mi] = (unsigned char)ai;
		*bit = (unsigned)mi;
		return 0;
	}
	colon = memchr(p, ':', len);
	for (int h = 0; h < VM_FH_COUNT; h++) {
		size_t n = strlen(hooks[h].name);

		if ((colon ? (size_t)(colon - p) : len) != n ||
		    strncmp(p, hooks[h].name, n))
			continue;
		if (hooks[h].timed &&
		    (!colon || parse_ms(colon + 1, (size_t)(end - colon - 1), &ms))) {
			snprintf(err, errlen, "FERRY_VM_FAULT item '%.*s': %s "
				 "needs :MS, a whole number of milliseconds from "
				 "1 to %u", (int)len, p, hooks[h].name,
				 VM_FAULT_MAX_MS);
			return -EINVAL;
		}
		if (!hooks[h].timed && colon) {
			snprintf(err, errlen, "FERRY_VM_FAULT item '%.*s': %s "
				 "takes no value", (int)len, p, hooks[h].name);
			return -EINVAL;
		}
		arm_hook(vm, (enum vm_fault_hook)h, ms);
		*bit = VM_AT_COUNT + (unsigned)h;
		return 0;
	}
unknown:
	snprintf(err, errlen, "FERRY_VM_FAULT item '%.*s' is unknown: " FAULT_HELP,
		 (int)len, p);
	return -EINVAL;
}

/**
 * vm_fault_parse() - read FERRY_VM_FAULT, every item of it, and arm its
 * hooks in @vm: the one parser of the variable, so that nothing in it is
 * ignored.
 * @vm: the VM whose hooks are armed.
 * @spec: the variable's value, or NULL; items are comma-separated:
 *        at:MOMENT:ACTION, or one of the hooks not tied to a moment
 *        (lose-writes, corrupt-page, acquire-fail, acquire-die,
 *        hold-accept, stall-load:MS, stall-pause:MS). An unknown item, a bad or
 *        missing MS, an empty item, or a hook or moment given twice is a
 *        mistake, refused rather than ignored, so a mistyped hook cannot
 *        pass for a fault that was survived.
 * @err: receives what is wrong, naming the item.
 * @errlen: size of @err.
 *
 * Return: 0, or -EINVAL with @err set (some hooks may be armed then: the
 * caller exits).
 */
int vm_fault_parse(struct vm *vm, const char *spec, char *err, size_t errlen)
{
	const char *p = spec, *end;
	unsigned seen = 0, bit;
	int rc;

	while (p && *p) {
		end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		if (end == p) {
			snprintf(err, errlen, "FERRY_VM_FAULT '%s' has an empty "
				 "item (two commas, or one at an end)", spec);
			return -EINVAL;
		}
		rc = parse_item(vm, p, (size_t)(end - p), &bit, err, errlen);
		if (rc)
			return rc;
		if (seen & (1u << bit)) {
			snprintf(err, errlen, "FERRY_VM_FAULT item '%.*s': %s "
				 "'%s' is given twice", (int)(end - p), p,
				 bit < VM_AT_COUNT ? "the moment" : "the hook",
				 bit < VM_AT_COUNT ? moment_names[bit]
						   : hooks[bit - VM_AT_COUNT].name);
			return -EINVAL;
		}
		seen |= 1u << bit;
		if (!*end)
			break;
		p = end + 1;
		if (!*p) {
			snprintf(err, errlen, "FERRY_VM_FAULT '%s' has an empty "
				 "item (two commas, or one at an end)", spec);
			return -EINVAL;
		}
	}
	return 0;
}

/* The TCP port of "tcp:HOST:PORT", or 0. */
static unsigned uri_port(const char *uri)
{
	const char *c = strrchr(uri, ':');

	if (strncmp(uri, "tcp:", 4) || !c)
		return 0;
	return (unsigned)strtoul(c + 1, NULL, 10);
}

static unsigned sa_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return 0;
}

/* Whether @fd is a connected TCP socket of the migration: to @port on a
 * source, accepted on @port on a destination. */
static bool migration_socket(int fd, unsigned port, bool incoming)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int type = 0, listening = 0;
	socklen_t il = sizeof(int);
	struct stat st;

	if (fstat(fd, &st) || !S_ISSOCK(st.st_mode))
		return false;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &il) ||
	    type != SOCK_STREAM)
		return false;
	il = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &il) ||
	    listening)
		return false;
	if (incoming ? getsockname(fd, (struct sockaddr *)&ss, &len) :
		       getpeername(fd, (struct sockaddr *)&ss, &len))
		return false;
	return sa_port(&ss) == port;
}

/*
 * Where the destination listens, as the engine last reported it: the
 * events carry stats.listen_uri (with the port actually bound, also for
 * "--incoming tcp:HOST:0"), the VMM callbacks (load_state, acquire) do
 * not, so the hooks fired from them use this copy. One VM per process.
 */
static char bound_uri[FERRY_URI_MAX];
/* Events come from the channels' threads too, the callbacks from others. */
static pthread_mutex_t bound_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned bound_port(void)
{
	unsigned port;

	pthread_mutex_lock(&bound_lock);
	port = uri_port(bound_uri);
	pthread_mutex_unlock(&bound_lock);
	return port;
}

/* The port whose connections a cut shuts down, or 0 when none is known. */
static unsigned cut_port(struct vm *vm, const char *listen_uri, bool incoming)
{
	unsigned port;

	if (!incoming)
		return uri_port(vm->mig.uri);
	if (listen_uri && *listen_uri && (port = uri_port(listen_uri)))
		return port;
	if ((port = bound_port()))
		return port;
	/* "--incoming tcp:HOST:0" before any report: not a port to match. */
	return uri_port(vm->mig.uri);
}

/*
 * Shut down every connection of the migration; returns how many, or -1
 * when the port is unknown. The caller says so loudly: a cut that cuts
 * nothing must not pass for a fault that was survived.
 */
static int cut_connections(struct vm *vm, const char *listen_uri)
{
	bool incoming = vm->opts.incoming && !vm->mig.arrived;
	unsigned port = cut_port(vm, listen_uri, incoming);
	struct dirent *e;
	DIR *d;
	int n = 0, fd;

	if (!port)
		return -1;
	d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		fd = atoi(e->d_name);
		if (e->d_name[0] < '0' || e->d_name[0] > '9' || fd == dirfd(d))
			continue;
		if (migration_socket(fd, port, incoming) &&
		    !shutdown(fd, SHUT_RDWR))
			n++;
	}
	closedir(d);
	return n;
}

static void fire(struct vm *vm, enum vm_fault_moment m, const char *listen_uri)
{
	int a = vm->fault_at[m], n;
	struct timespec now;
	long long ms;

	if (!a || atomic_exchange(&vm->fault_fired[m], true))
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	fprintf(stderr, "ferry-vm: fault: at %s: %s (pid %d, t=%lld ms)\n",
		moment_names[m], action_names[a], (int)getpid(), ms);
	fflush(stderr);
	switch (a) {
	case VM_FA_KILL:
		raise(SIGKILL);
		break;
	case VM_FA_STOP:
		raise(SIGSTOP);
		break;
	case VM_FA_CUT:
		n = cut_connections(vm, listen_uri);
		if (n > 0)
			fprintf(stderr, "ferry-vm: fault: cut %d connections\n", n);
		else
			fprintf(stderr, "ferry-vm: fault: cut FAILED: %s\n",
				n < 0 ? "the migration's port is unknown" :
				"no connection of the migration was found");
		break;
	default:
		break;
	}
}

/**
 * vm_fault_at() - reach a moment seen in a VMM callback: the hook armed
 * for it, if any, fires (once).
 * @vm: the VM.
 * @m: the moment.
 */
void vm_fault_at(struct vm *vm, enum vm_fault_moment m)
{
	fire(vm, m, NULL);
}

/**
 * vm_fault_event() - the moments the engine's events mark.
 * @vm: the VM.
 * @ev: the event, as the engine gave it to the VMM.
 */
void vm_fault_event(struct vm *vm, const struct ferry_event *ev)
{
	const struct ferry_stats *st = ev->stats;
	const char *lu = st ? st->listen_uri : NULL;

	if (lu && *lu && uri_port(lu)) {
		pthread_mutex_lock(&bound_lock);
		snprintf(bound_uri, sizeof(bound_uri), "%s", lu);
		pthread_mutex_unlock(&bound_lock);
	}
	if (ev->kind == FERRY_EVENT_STATE) {
		switch (ev->state) {
		case FERRY_STATE_NEGOTIATING:
			fire(vm, VM_AT_NEGOTIATION, lu);
			break;
		case FERRY_STATE_STOPPED:
			fire(vm, VM_AT_STOPPED, lu);
			break;
		case FERRY_STATE_SWITCHOVER:
			fire(vm, VM_AT_BEFORE_READY, lu);
			break;
		case FERRY_STATE_POSTCOPY:
			fire(vm, VM_AT_POSTCOPY, lu);
			break;
		default:
			break;
		}
		return;
	}
	if (ev->kind != FERRY_EVENT_PROGRESS || !st)
		return;
	/* Postcopy's progress comes from the loop that drives its phase,
	 * once its threads run (and once more as it pauses, which the
	 * fired flag of an earlier hook makes harmless). A test that must
	 * break a postcopy under way stops the source here, however fast
	 * the rest of the phase would go. */
	if (ev->state == FERRY_STATE_POSTCOPY) {
		if (st->recoveries)
			fire(vm, VM_AT_REPUSHING, lu);
		else if (st->pages_pushed)
			fire(vm, VM_AT_PUSHING, lu);
		return;
	}
	if (ev->state != FERRY_STATE_PRECOPY || !st->pass_bytes)
		return;
	fire(vm, st->pass >= 2 ? VM_AT_PASSN : VM_AT_PASS1, lu);
}
