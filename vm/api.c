// SPDX-License-Identifier: MIT
/*
 * api.c - ferry-vm's API socket (docs/api-socket.md): JSON lines over a
 * UNIX stream socket, served by the main thread with poll().
 *
 * Output to a client is buffered per client and written without blocking,
 * so neither a slow reader nor one that vanished can stall the API thread
 * or the migration thread, which sends its events through api_send() from
 * the engine's callbacks. One lock (api.lock) protects the client list and
 * the output buffers; it is always the innermost lock. Clients are only
 * freed by the API thread, under that lock, and other threads refer to
 * them by id.
 *
 * Clients are few and local, but a leak of idle connections must not lock
 * the operator out: a newcomer always gets a slot (the client quiet
 * longest gives up its own), and a client quiet for the idle timeout is
 * dropped; the one following a running migration is exempt from both.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "migrate_args.h"
#include "net.h"
#include "vm.h"

#define API_LINE_MAX 65536u	 /* longest request line, newline included */
#define API_OUT_MAX (4u << 20)	 /* a client that lets more pile up is dropped */
#define API_MAX_CLIENTS 64u
#define API_QUIT_FLUSH_MS 500
#define API_IDLE_DEFAULT_S 60.0 /* FERRY_VM_API_IDLE_TIMEOUT overrides it */

struct api_client {
	int fd;
	uint64_t id;
	/* Set by the API thread without the lock (a read that ends) and by a
	 * migration thread with it (a reply queue overflowing): atomic, as
	 * ThreadSanitizer found when it was a plain bool. */
	atomic_bool dead;
	bool skipping;	    /* discarding the rest of an over-long line */
	uint64_t active_ns; /* last request taken or message queued */
	size_t in_len;
	char *in; /* API_LINE_MAX bytes */
	char *out;
	size_t out_len, out_cap;
};

struct vm_api {
	int listen_fd;
	int sig_fd;
	int wake_fd;
	bool bound; /* we created the socket file */
	bool quit;
	pthread_mutex_t lock;
	struct api_client *clients[API_MAX_CLIENTS];
	unsigned nclients;
	uint64_t next_id;
	uint64_t idle_ns; /* drop a client quiet for this long; 0: never */
	/* Events of a guest paused for a handover wait here, copied, and go
	 * out once it runs (api_event()); evq_lock nests outside lock. */
	pthread_mutex_t evq_lock;
	struct api_evq_entry *evq; /* API_EVQ_MAX */
	unsigned evq_n;
	uint64_t evq_since_ns;	   /* the oldest waits since */
};

/* A deferred event: what api_event() would have sent. */
#define API_EVQ_MAX 8
/* A deferred event goes out after this long even if the pause goes on
 * (a destination that stalls in load_state, say), from the API thread. */
#define API_EVQ_MAX_MS 20
struct api_evq_entry {
	uint64_t client;
	enum ferry_event_kind kind;
	enum ferry_state state;
	bool receiving;
	struct ferry_stats st;
	char err[512];
};

/* --- JSON helpers ------------------------------------------------------- */

/**
 * api_double() - a JSON number with at most three decimals (json-c would
 * print 17 significant digits).
 * @v: the value.
 *
 * Return: a new object, or NULL (JSON null) for NaN and infinities.
 */
json_object *api_double(double v)
{
	char buf[64];
	size_t n;

	if (!isfinite(v))
		return NULL;
	n = (size_t)snprintf(buf, sizeof(buf), "%.3f", v);
	while (n > 2 && buf[n - 1] == '0' && buf[n - 2] != '.')
		buf[--n] = '\0';
	return json_object_new_double_s(v, buf);
}

/**
 * api_copy() - deep copy of a JSON value.
 * @o: the value (NULL copies to NULL).
 *
 * Return: a new object, or NULL.
 */
json_object *api_copy(json_object *o)
{
	json_object *dst = NULL;

	if (!o || json_object_deep_copy(o, &dst, NULL) < 0)
		return NULL;
	return dst;
}

static json_object *jstr(const char *s)
{
	return json_object_new_string(s);
}

static json_object *ju64(uint64_t v)
{
	return json_object_new_int64(v > INT64_MAX ? INT64_MAX : (int64_t)v);
}

/* "what failed: detail", saying it once: a detail that already starts
 * with the code's text ("cancelled during a memory pass") stands alone. */
static const char *error_text(int code, const char *detail, char *buf,
			      size_t len)
{
	const char *what = ferry_strerror(code);

	if (!detail || !*detail)
		snprintf(buf, len, "%s", what);
	else if (!strncmp(detail, what, strlen(what)))
		snprintf(buf, len, "%s", detail);
	else
		snprintf(buf, len, "%s: %s", what, detail);
	return buf;
}

static json_object *error_string(int code, const char *detail)
{
	char buf[1024];

	return code ? jstr(error_text(code, detail, buf, sizeof(buf))) : NULL;
}

/* The negotiated capabilities by name, as the spec calls them. */
static json_object *caps_array(uint64_t caps)
{
	static const char *const names[] = { "data-checksum", "multi-channel",
					     "zero-pages", "lz4", "zstd",
					     "postcopy", "local-fds", "keepalive",
					     "device-fds", "postcopy-keepalive" };
	const unsigned n = sizeof(names) / sizeof(names[0]);
	json_object *a = json_object_new_array();

	static_assert((1ull << (sizeof(names) / sizeof(names[0]))) - 1 ==
			      FERRY_CAP_ALL,
		      "every capability bit has a name");
	for (unsigned i = 0; i < n; i++)
		if (caps & (1ull << i))
			json_object_array_add(a, json_object_new_string(names[i]));
	return a;
}

/* What the two sides agreed on, what crossed, and what the guest paid
 * for it in throttled CPU time: shared by status and report. */
static void add_link_fields(json_object *o, const struct ferry_stats *st)
{
	json_object_object_add(o, "connections", ju64(st->connections));
	json_object_object_add(o, "wire_bytes", ju64(st->wire_bytes));
	json_object_object_add(o, "protocol_version", ju64(st->version));
	json_object_object_add(o, "capabilities", caps_array(st->capabilities));
	json_object_object_add(o, "throttle_pct", ju64(st->throttle_pct));
	json_object_object_add(o, "throttle_peak_pct", ju64(st->throttle_peak_pct));
	json_object_object_add(o, "congestion_control",
			       st->congestion_control[0] ?
				       json_object_new_string(st->congestion_control) :
				       NULL);
	json_object_object_add(o, "dirty_mode",
			       st->dirty_mode[0] ? jstr(st->dirty_mode) : NULL);
	/* TLS: what the connections negotiated, null without TLS. */
	json_object_object_add(o, "tls_cipher",
			       st->tls_cipher[0] ? jstr(st->tls_cipher) : NULL);
	json_object_object_add(o, "tls_version",
			       st->tls_version[0] ? jstr(st->tls_version) : NULL);
	json_object_object_add(o, "tls_kx",
			       st->tls_kx[0] ? jstr(st->tls_kx) : NULL);
	/* ... and who sealed its records (ferry_config.tls_engine). */
	json_object_object_add(o, "tls_engine",
			       st->tls_engine[0] ? jstr(st->tls_engine) : NULL);
	/* Local migration: the memory went by fd; wire_bytes are records. */
	json_object_object_add(o, "local_fds",
			       json_object_new_boolean(st->local_fds));
	/* ... and the devices' descriptors (sockets) passed with it. */
	json_object_object_add(o, "device_fds",
			       json_object_new_int64(st->device_fds));
}

/* The stall limit in force and, when the run failed on a silent peer,
 * how long it had been silent when that was seen (else null). Shared by
 * status and report. */
static void add_stall_fields(json_object *o, const struct ferry_stats *st)
{
	json_object_object_add(o, "stall_timeout_ms",
			       st->stall_timeout_ms ? ju64(st->stall_timeout_ms)
						    : NULL);
	json_object_object_add(o, "stall_detect_ms",
			       st->stall_detect_ms > 0 ?
				       api_double(st->stall_detect_ms) : NULL);
}

/* A 64-bit digest as 16 hex digits (JSON numbers lose bits past 2^53),
 * null when there is none. */
static json_object *digest_json(uint64_t d)
{
	char hex[17];

	if (!d)
		return NULL;
	snprintf(hex, sizeof(hex), "%016" PRIx64, d);
	return jstr(hex);
}

/* Snapshot files: the image digest, and for a lazy restore how far it is
 * and how long the guest waited for pages (null when not lazy). Shared by
 * status and report. */
static void add_snapshot_fields(json_object *o, const struct ferry_stats *st,
				bool in)
{
	bool lazy = st->lazy_pages > 0;

	/* Which side of a snapshot file this VM was: it wrote it or read it. */
	json_object_object_add(o, "snapshot", !st->image_digest ? NULL :
			       jstr(in ? "read" : "written"));
	json_object_object_add(o, "image_digest", digest_json(st->image_digest));
	json_object_object_add(o, "lazy_pages", lazy ? ju64(st->lazy_pages) : NULL);
	json_object_object_add(o, "lazy_placed", lazy ? ju64(st->lazy_placed) : NULL);
	json_object_object_add(o, "page_faults", lazy ? ju64(st->page_faults) : NULL);
	json_object_object_add(o, "page_wait_p50_ms",
			       lazy ? api_double(st->page_wait_p50_ms) : NULL);
	json_object_object_add(o, "page_wait_p99_ms",
			       lazy ? api_double(st->page_wait_p99_ms) : NULL);
	json_object_object_add(o, "page_wait_max_ms",
			       lazy ? api_double(st->page_wait_max_ms) : NULL);
	json_object_object_add(o, "lazy_complete_ms",
			       lazy && st->lazy_complete_ms > 0 ?
				       api_double(st->lazy_complete_ms) : NULL);
}

/* Postcopy: whether the run switched, and then how long its memory took
 * to follow, how pages moved and how long vCPUs waited for them (faults
 * are the destination's; microseconds), null when it did not switch.
 * Shared by status and report. */
static void add_postcopy_fields(json_object *o, const struct ferry_stats *st,
				json_object *note)
{
	static const char *const waits[] = { "fault_p50_us", "fault_p99_us",
					     "fault_max_us" };
	const double ms[] = { st->page_wait_p50_ms, st->page_wait_p99_ms,
			      st->page_wait_max_ms };
	bool pc = st->postcopy, faults = pc && st->lazy_pages > 0;
	json_object *f = NULL;

	json_object_object_add(o, "postcopy", json_object_new_boolean(pc));
	json_object_object_add(o, "postcopy_ms",
			       pc && st->postcopy_ms > 0 ?
				       api_double(st->postcopy_ms) : NULL);
	/* A source knows the faults from the destination's note. */
	if (pc && !faults && note &&
	    json_object_object_get_ex(note, "postcopy_faults", &f) &&
	    json_object_is_type(f, json_type_array) &&
	    json_object_array_length(f) == 4) {
		json_object_object_add(o, "faults", api_copy(
				json_object_array_get_idx(f, 0)));
		for (unsigned i = 0; i < 3; i++)
			json_object_object_add(o, waits[i], api_copy(
					json_object_array_get_idx(f, i + 1)));
	} else {
		json_object_object_add(o, "faults",
				       faults ? ju64(st->page_faults) : NULL);
		for (unsigned i = 0; i < 3; i++)
			json_object_object_add(o, waits[i],
					       faults && st->page_faults ?
					       api_double(ms[i] * 1000) : NULL);
	}
	json_object_object_add(o, "pages_requested",
			       pc ? ju64(st->pages_requested) : NULL);
	json_object_object_add(o, "pages_pushed",
			       pc ? ju64(st->pages_pushed) : NULL);
	json_object_object_add(o, "pages_missing",
			       pc ? ju64(st->pages_missing) : NULL);
	json_object_object_add(o, "recoveries", pc ? ju64(st->recoveries) : NULL);
}

static json_object *stats_json(const struct ferry_stats *st, const char *err,
			       bool in)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "state", jstr(ferry_state_name(st->state)));
	json_object_object_add(o, "owner", jstr(ferry_owner_name(st->owner)));
	json_object_object_add(o, "pass", ju64(st->pass));
	json_object_object_add(o, "bytes", ju64(st->bytes));
	add_link_fields(o, st);
	json_object_object_add(o, "pass_bytes", ju64(st->pass_bytes));
	json_object_object_add(o, "pass_total", ju64(st->pass_total));
	json_object_object_add(o, "dirty_bytes", ju64(st->dirty_bytes));
	json_object_object_add(o, "ram_bytes", ju64(st->ram_bytes));
	json_object_object_add(o, "mb_per_s", api_double(st->mb_per_s));
	json_object_object_add(o, "dirty_mb_per_s", api_double(st->dirty_mb_per_s));
	json_object_object_add(o, "expected_downtime_ms",
			       api_double(st->expected_downtime_ms));
	json_object_object_add(o, "total_ms", api_double(st->total_ms));
	json_object_object_add(o, "downtime_ms", api_double(st->downtime_ms));
	json_object_object_add(o, "final_pass_ms", api_double(st->final_pass_ms));
	json_object_object_add(o, "state_ms", api_double(st->state_ms));
	json_object_object_add(o, "switchover_ms", api_double(st->switchover_ms));
	add_snapshot_fields(o, st, in);
	add_postcopy_fields(o, st, NULL);
	add_stall_fields(o, st);
	json_object_object_add(o, "error", error_string(st->error, err));
	return o;
}

/* A member of the destination's note, copied, or NULL. */
static json_object *note_get(json_object *note, const char *key,
			     enum json_type type)
{
	json_object *v;

	if (!note || !json_object_object_get_ex(note, key, &v) ||
	    !json_object_is_type(v, type))
		return NULL;
	if (type == json_type_double)
		return api_double(json_object_get_double(v));
	return api_copy(v);
}

/* The verdict: the destination's, and with the page digest in its note,
 * on the source its comparison of it (null until both are known). A
 * destination's own report gives its own verdict, as its status does. */
static json_object *report_verified(struct vm *vm, json_object *n)
{
	json_object *v = note_get(n, "verified", json_type_boolean), *d;
	int match;

	if (!v || !json_object_object_get_ex(n, "ram_digest", &d))
		return v;
	pthread_mutex_lock(&vm->mig.lock);
	match = vm->mig.src_ram_match;
	pthread_mutex_unlock(&vm->mig.lock);
	if (match == -2)
		return v;
	if (match < 0) {
		json_object_put(v);
		return NULL;
	}
	if (!match) {
		json_object_put(v);
		v = json_object_new_boolean(false);
	}
	return v;
}

/* The report's "verify": how the guest was checked and what it cost on
 * each side; *pause_ms receives the part spent inside the pause. */
static json_object *verify_json(struct vm *vm, json_object *n,
				double *pause_ms)
{
	json_object *o = json_object_new_object(), *m;
	json_object *dst = note_get(n, "verify_ms", json_type_double);
	const char *method = "off";
	double src_pause, src_after;
	bool in_pause;

	pthread_mutex_lock(&vm->mig.lock);
	src_pause = vm->mig.src_digest_ms;
	src_after = vm->mig.src_verify_ms;
	pthread_mutex_unlock(&vm->mig.lock);
	if (n && json_object_object_get_ex(n, "verify_method", &m) &&
	    json_object_is_type(m, json_type_string))
		method = json_object_get_string(m);
	else if (dst) /* a destination that names no method checks in load */
		method = "in-pause";
	in_pause = !strcmp(method, "in-pause");
	json_object_object_add(o, "method", jstr(method));
	json_object_object_add(o, "destination_ms", dst);
	json_object_object_add(o, "source_ms", strcmp(method, "off") ?
				  api_double(src_pause + src_after) : NULL);
	json_object_object_add(o, "in_pause", json_object_new_boolean(in_pause));
	/* How long the destination held its "running" answer back for the
	 * check; the engine's total includes it, the report's does not. */
	json_object_object_add(o, "wait_ms", note_get(n, "wait_ms", json_type_double));
	*pause_ms = src_pause + (in_pause && dst ? json_object_get_double(dst) : 0);
	return o;
}

/* The report's "verify" of a snapshot written by this VM: its frozen RAM
 * against the image digest of the file (after the pause), or nothing for
 * a checkpoint, whose guest runs on. */
static json_object *snapshot_verify_json(struct vm *vm, double *pause_ms)
{
	json_object *o = json_object_new_object();
	double in_pause, after;
	int match;

	pthread_mutex_lock(&vm->mig.lock);
	in_pause = vm->mig.src_digest_ms;
	after = vm->mig.src_verify_ms;
	match = vm->mig.src_ram_match;
	pthread_mutex_unlock(&vm->mig.lock);
	json_object_object_add(o, "method", jstr(match >= 0 ? "image" : "off"));
	json_object_object_add(o, "destination_ms", NULL);
	json_object_object_add(o, "source_ms", match >= 0 || in_pause > 0 ?
				  api_double(in_pause + after) : NULL);
	json_object_object_add(o, "in_pause", json_object_new_boolean(in_pause > 0));
	json_object_object_add(o, "wait_ms", NULL);
	if (vm->mig.keep_running)
		json_object_object_add(o, "note", jstr(
			"checkpoint: the guest ran on, so its RAM is not compared "
			"with the image; restoring the file verifies it"));
	*pause_ms = in_pause;
	return o;
}

/* A snapshot writer's verdict: its RAM against the image (null when not
 * compared). */
static json_object *snapshot_verified(struct vm *vm)
{
	int match;

	pthread_mutex_lock(&vm->mig.lock);
	match = vm->mig.src_ram_match;
	pthread_mutex_unlock(&vm->mig.lock);
	return match < 0 ? NULL : json_object_new_boolean(match);
}

static const char *report_status(int rc, const struct ferry_stats *st)
{
	if (!rc)
		return "completed";
	if (st->state == FERRY_STATE_CANCELLED ||
	    (rc == FERRY_ECANCELED && st->state != FERRY_STATE_FAILED))
		return "cancelled";
	return "failed";
}

/* A local migration's unconfirmed end: the guest's memory (and sockets)
 * are still held here and shared with the destination process; whether
 * it still exists says what a forced resume risks. */
static json_object *local_unconfirmed_json(void)
{
	json_object *o = json_object_new_object();
	char risk[400];
	pid_t pid;
	int alive = vm_peer_state(&pid, 0);

	vm_local_risk(alive, pid, risk, sizeof(risk));
	json_object_object_add(o, "held_here", json_object_new_boolean(true));
	json_object_object_add(o, "destination_pid", pid ? ju64((uint64_t)pid) : NULL);
	json_object_object_add(o, "destination", jstr(alive > 0 ? "exists" :
						      alive == 0 ? "exited" : "unknown"));
	json_object_object_add(o, "resume_force_risk", jstr(risk));
	return o;
}

/**
 * api_report() - build a migration report (docs/api-socket.md, "Report").
 * @vm: the VM.
 * @rc: what send/receive returned.
 * @st: the session's final statistics.
 * @errmsg: the session's error detail ("" if none).
 * @note: the destination's note (a JSON object, may be empty).
 *
 * Return: a new object owned by the caller.
 */
json_object *api_report(struct vm *vm, int rc, const struct ferry_stats *st,
			const char *errmsg, const char *note)
{
	json_object *o = json_object_new_object();
	json_object *n = note && *note ? json_tokener_parse(note) : NULL;
	json_object *stall, *verify, *wait;
	double pause_ms = 0, total_ms = st->total_ms;
	bool snap_out = !strncmp(vm->mig.uri, "file:", 5) &&
			!strcmp(vm_role(vm), "source");

	if (n && !json_object_is_type(n, json_type_object)) {
		json_object_put(n);
		n = NULL;
	}
	/* json-c types 12.0 as double but 12 as int: accept either. */
	/* total_ms ends when the destination runs the guest, not when its
	 * background check let it answer. */
	wait = note_get(n, "wait_ms", json_type_double);
	if (!rc && wait && json_object_get_double(wait) < total_ms)
		total_ms -= json_object_get_double(wait);
	json_object_put(wait);
	stall = note_get(n, "guest_stall_ms", json_type_double);
	if (!stall)
		stall = note_get(n, "guest_stall_ms", json_type_int);
	json_object_object_add(o, "status", jstr(report_status(rc, st)));
	json_object_object_add(o, "error", rc ? error_string(rc, errmsg) : NULL);
	json_object_object_add(o, "owner", jstr(ferry_owner_name(st->owner)));
	json_object_object_add(o, "workload", jstr(vm_workload_name(vm->guest.workload)));
	json_object_object_add(o, "ram_bytes", ju64(st->ram_bytes ? st->ram_bytes :
						     vm->guest.mem_size));
	json_object_object_add(o, "total_ms", api_double(total_ms));
	json_object_object_add(o, "downtime_ms", api_double(st->downtime_ms));
	/* The limit is the source's: a destination does not know it. */
	json_object_object_add(o, "downtime_limit_ms",
			       vm->opts.incoming ? NULL :
			       ju64(vm->mig.cfg.downtime_limit_ms));
	json_object_object_add(o, "guest_stall_ms", rc ? NULL : stall);
	json_object_object_add(o, "bytes", ju64(st->bytes));
	json_object_object_add(o, "passes", ju64(st->pass));
	add_link_fields(o, st);
	/* The average over the whole migration, what a user compares. */
	json_object_object_add(o, "mb_per_s",
			       api_double(total_ms > 0
						  ? (double)st->bytes / total_ms / 1e3
						  : 0));
	json_object_object_add(o, "verified", rc ? NULL : snap_out ?
			       snapshot_verified(vm) : report_verified(vm, n));
	json_object_object_add(o, "final_pass_ms", api_double(st->final_pass_ms));
	json_object_object_add(o, "state_ms", api_double(st->state_ms));
	json_object_object_add(o, "switchover_ms", api_double(st->switchover_ms));
	/* verify_ms: the part of the pause spent verifying, both sides. */
	verify = rc ? NULL : snap_out ? snapshot_verify_json(vm, &pause_ms) :
		     verify_json(vm, n, &pause_ms);
	json_object_object_add(o, "verify_ms", verify ? api_double(pause_ms) : NULL);
	if (verify && st->local_fds)
		json_object_object_add(verify, "note", jstr(
			"local migration: both sides map the same memory, so "
			"the source's copy is never hashed after the handover; "
			"the destination checked what it loaded (every page "
			"against the workload, the device state, and with "
			"--verify strict the digests in the pause)"));
	json_object_object_add(o, "verify", verify);
	json_object_object_add(o, "keep_running", snap_out ?
			       json_object_new_boolean(vm->mig.keep_running) : NULL);
	add_snapshot_fields(o, st, !snap_out);
	add_postcopy_fields(o, st, n);
	add_stall_fields(o, st);
	json_object_object_add(o, "net", net_json(vm));
	if (rc == FERRY_EUNCONFIRMED && st->local_fds)
		json_object_object_add(o, "unconfirmed", local_unconfirmed_json());
	if (rc)
		json_object_put(stall);
	json_object_put(n);
	return o;
}

/* A postcopy destination's faults, as the source's report shows them:
 * [faults, p50, p99, max] (microseconds), or NULL. */
static json_object *note_faults(const struct ferry_stats *pc)
{
	json_object *a;

	if (!pc || !pc->postcopy || !pc->lazy_pages)
		return NULL;
	a = json_object_new_array();
	json_object_array_add(a, ju64(pc->page_faults));
	json_object_array_add(a, api_double(pc->page_wait_p50_ms * 1000));
	json_object_array_add(a, api_double(pc->page_wait_p99_ms * 1000));
	json_object_array_add(a, api_double(pc->page_wait_max_ms * 1000));
	return a;
}

/**
 * api_note() - the destination's running note: a JSON object with the
 * verification result and the stall the guest saw, and after a postcopy
 * the vCPUs' faults when the note has room for them.
 * @verified: -1 (not checked), 0 or 1.
 * @stall_ms: the guest's stall across the migration.
 * @v: the check of the loaded image.
 * @pc: the receive's statistics (postcopy faults), or NULL.
 * @note: receives the NUL-terminated JSON text ("" if it does not fit).
 * @len: size of @note.
 */
void api_note(int verified, double stall_ms, const struct guest_verify *v,
	      const struct ferry_stats *pc, char *note, size_t len)
{
	json_object *o = json_object_new_object(), *f = note_faults(pc);
	char hex[17];
	const char *s;

	json_object_object_add(o, "verified",
			       verified < 0 ? NULL : json_object_new_boolean(verified));
	json_object_object_add(o, "guest_stall_ms", api_double(stall_ms));
	json_object_object_add(o, "verify_method",
			       jstr(v->background ? "background" :
				    v->in_pause ? "in-pause" : "off"));
	json_object_object_add(o, "verify_ms", v->done ? api_double(v->verify_ms) : NULL);
	/* With ram_digest the source compares; otherwise this side did. */
	if (v->done && v->ram_at_source) {
		snprintf(hex, sizeof(hex), "%016" PRIx64, v->ram_digest);
		json_object_object_add(o, "ram_digest", jstr(hex));
	} else {
		json_object_object_add(o, "digest_match",
				       v->done ? json_object_new_boolean(v->digest_match) : NULL);
	}
	json_object_object_add(o, "invariant_ok",
			       v->done ? json_object_new_boolean(v->invariant_ok) : NULL);
	json_object_object_add(o, "pages_checked", ju64(v->pages_checked));
	if (v->background)
		json_object_object_add(o, "wait_ms", api_double(v->wait_ms));
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	if (len && strlen(s) < len)
		memcpy(note, s, strlen(s) + 1);
	else if (len)
		note[0] = '\0';
	/* The faults are a figure for the source's report; the verdict
	 * must never give way to them. */
	if (f && len && note[0]) {
		json_object_object_add(o, "postcopy_faults", f);
		s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
		if (strlen(s) < len)
			memcpy(note, s, strlen(s) + 1);
	} else {
		json_object_put(f);
	}
	json_object_put(o);
}

/**
 * api_log_result() - the one stderr line that tells how a migration ended.
 * @what: "migration" or "incoming migration".
 * @rc: what send/receive returned.
 * @st: the session's final statistics.
 * @errmsg: the error detail when it failed.
 * @report: the report (api_report()) when it completed; else unused.
 */
void api_log_result(const char *what, int rc, const struct ferry_stats *st,
		    const char *errmsg, json_object *report)
{
	json_object *v;
	char buf[1024], stall[48] = "";

	if (rc) {
		fprintf(stderr, "ferry-vm: %s %s: %s\n", what,
			st->state == FERRY_STATE_CANCELLED ? "cancelled" : "failed",
			error_text(rc, errmsg, buf, sizeof(buf)));
		return;
	}
	if (json_object_object_get_ex(report, "guest_stall_ms", &v) && v)
		snprintf(stall, sizeof(stall), "guest stall %.1f ms, ",
			 json_object_get_double(v));
	json_object_object_get_ex(report, "verified", &v);
	fprintf(stderr,
		"ferry-vm: %s completed: %.1f ms total, downtime %.1f ms, %s%" PRIu64 " bytes in %u passes, verified %s\n",
		what, st->total_ms, st->downtime_ms, stall, st->bytes, st->pass,
		v ? (json_object_get_boolean(v) ? "true" : "false") : "null");
	if (st->postcopy)
		fprintf(stderr, "ferry-vm: postcopy: all memory in %.1f ms after the switch, %" PRIu64 " pages requested, %" PRIu64 " pushed, %" PRIu64 " faults here (p99 %.0f us), %u recoveries\n",
			st->postcopy_ms, st->pages_requested, st->pages_pushed,
			st->page_faults, st->page_wait_p99_ms * 1000,
			st->recoveries);
}

/* The migration member of the status: the live session, else the last;
 * on a destination also its last failed attempt. */
static json_object *migration_json(struct vm *vm)
{
	struct ferry_stats st;
	char err[512] = "";
	json_object *o, *failure;
	bool in;

	memset(&st, 0, sizeof(st));
	st.struct_size = sizeof(st);
	pthread_mutex_lock(&vm->mig.lock);
	failure = api_copy(vm->mig.last_failure);
	in = vm->mig.receiving;
	if (vm->mig.session) {
		ferry_session_stats(vm->mig.session, &st);
		if (st.error)
			ferry_session_errmsg(vm->mig.session, err, sizeof(err));
	} else if (vm->mig.have_last) {
		st = vm->mig.last;
		snprintf(err, sizeof(err), "%s", vm->mig.last_err);
	} else {
		st.state = FERRY_STATE_NONE;
		st.ram_bytes = vm->guest.mem_size;
		/* Before any migration a VM owns the guest it runs; a
		 * destination waiting for its guest knows of none. */
		st.owner = vm->opts.incoming ? FERRY_OWNER_NONE
					     : FERRY_OWNER_SOURCE;
	}
	pthread_mutex_unlock(&vm->mig.lock);
	o = stats_json(&st, err, in);
	json_object_object_add(o, "last_failure", failure);
	return o;
}

/* A destination waiting for its source: where it listens (the port the
 * kernel chose for --incoming tcp:HOST:0 included), or where a postcopy
 * paused since the last pause was told to listen ("recover"), else null. */
static json_object *listening_json(struct vm *vm)
{
	struct ferry_stats st = { FERRY_STATS_INIT };
	bool waiting = false;

	pthread_mutex_lock(&vm->mig.lock);
	if (vm->mig.session) {
		ferry_session_stats(vm->mig.session, &st);
		waiting = st.listen_uri[0] &&
			  (st.state == FERRY_STATE_CONNECTING ||
			   (st.state == FERRY_STATE_POSTCOPY_PAUSED &&
			    atomic_load(&vm->mig.listens) >
				    atomic_load(&vm->mig.paused_at)));
	}
	pthread_mutex_unlock(&vm->mig.lock);
	return waiting ? jstr(st.listen_uri) : NULL;
}

static json_object *status_json(struct vm *vm)
{
	struct guest *g = &vm->guest;
	json_object *o = json_object_new_object();
	json_object *gj = json_object_new_object(), *report = NULL;
	int verified = vm_verified(vm), vpct;
	char err[256];
	unsigned pct;
	const char *state = vm_guest_state(vm, &pct, err, sizeof(err));

	json_object_object_add(gj, "state", jstr(state));
	json_object_object_add(gj, "populated_pct", ju64(pct));
	json_object_object_add(gj, "error", err[0] ? jstr(err) : NULL);
	json_object_object_add(gj, "running", json_object_new_boolean(guest_running(g)));
	json_object_object_add(gj, "workload", jstr(vm_workload_name(g->workload)));
	json_object_object_add(gj, "memory", ju64(g->mem_size));
	json_object_object_add(gj, "vcpus", ju64(g->nvcpus));
	json_object_object_add(gj, "steps", ju64(guest_steps(g)));
	json_object_object_add(gj, "check_errors", ju64(guest_check_errors(g)));
	/* A large guest's check runs on long after the resume: how far. */
	vpct = vm_verify_pct(vm);
	json_object_object_add(gj, "verify_pct", vpct < 0 ? NULL : ju64((unsigned)vpct));
	json_object_object_add(gj, "throttle_pct", ju64(atomic_load(&g->throttle_pct)));
	json_object_object_add(gj, "settled", json_object_new_boolean(guest_settled(g)));

	json_object_object_add(o, "role", jstr(vm_role(vm)));
	json_object_object_add(o, "net", net_json(vm));
	if (vm->opts.incoming)
		json_object_object_add(o, "listening", listening_json(vm));
	json_object_object_add(o, "guest", gj);
	json_object_object_add(o, "migration", migration_json(vm));
	json_object_object_add(o, "verified",
			       verified < 0 ? NULL : json_object_new_boolean(verified));
	pthread_mutex_lock(&vm->mig.lock);
	if (vm->mig.report)
		report = api_copy(vm->mig.report);
	pthread_mutex_unlock(&vm->mig.lock);
	json_object_object_add(o, "report", report);
	return o;
}

/* --- client output ------------------------------------------------------ */

static void wake_loop(struct vm_api *api)
{
	uint64_t one = 1;
	ssize_t n = write(api->wake_fd, &one, sizeof(one));

	(void)n; /* a full counter already means "wake up" */
}

/**
 * api_wake() - wake the API loop so it looks at the VM again (it exits
 * when initialisation failed). Any thread; nothing before api_open().
 * @vm: the VM.
 */
void api_wake(struct vm *vm)
{
	if (vm->api)
		wake_loop(vm->api);
}

/* Write what the socket takes now. Caller holds api->lock. */
static void client_flush(struct api_client *c)
{
	ssize_t n;

	while (c->out_len && !c->dead) {
		n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			memmove(c->out, c->out + n, c->out_len - (size_t)n);
			c->out_len -= (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			break;
		} else {
			c->dead = true;
		}
	}
}

/* Queue one line. Caller holds api->lock. */
static void client_queue(struct api_client *c, const char *s, size_t len)
{
	size_t need = c->out_len + len + 1, cap;
	char *p;

	if (c->dead)
		return;
	if (need > API_OUT_MAX) {
		c->dead = true; /* not reading its replies: drop it */
		return;
	}
	if (need > c->out_cap) {
		cap = c->out_cap ? c->out_cap : 4096;
		while (cap < need)
			cap *= 2;
		p = realloc(c->out, cap);
		if (!p) {
			c->dead = true;
			return;
		}
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, s, len);
	c->out[c->out_len + len] = '\n';
	c->out_len += len + 1;
	c->active_ns = vm_now_ns();
	client_flush(c);
}

static struct api_client *client_find(struct vm_api *api, uint64_t id)
{
	unsigned i;

	for (i = 0; i < api->nclients; i++) {
		if (api->clients[i]->id == id)
			return api->clients[i];
	}
	return NULL;
}

/**
 * api_send() - send one JSON message to a client, if still connected.
 * Any thread; never blocks on the socket.
 * @vm: the VM.
 * @client: the client id (0: nobody).
 * @msg: the message; not consumed.
 */
void api_send(struct vm *vm, uint64_t client, json_object *msg)
{
	struct vm_api *api;
	struct api_client *c;
	const char *s;
	size_t len;

	if (!client)
		return; /* before any client could exist, vm->api may be unset */
	api = vm->api;
	s = json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN |
							JSON_C_TO_STRING_NOSLASHESCAPE);
	len = strlen(s);
	pthread_mutex_lock(&api->lock);
	c = client_find(api, client);
	if (c) {
		client_queue(c, s, len);
		if (c->out_len || c->dead)
			wake_loop(api);
	}
	pthread_mutex_unlock(&api->lock);
}

/* The events a client hears, by their names in the protocol. */
static const char *const event_names[] = {
	[FERRY_EVENT_STATE] = "STATE",
	[FERRY_EVENT_PASS] = "PASS",
	[FERRY_EVENT_PROGRESS] = "PROGRESS",
	[FERRY_EVENT_THROTTLE] = "THROTTLE",
	[FERRY_EVENT_OWNER] = "OWNER",
};

/* Build and send one event's message. */
static void event_send(struct vm *vm, uint64_t client, enum ferry_event_kind kind,
		       enum ferry_state state, const struct ferry_stats *st,
		       const char *err, bool receiving)
{
	json_object *msg, *data;

	msg = json_object_new_object();
	data = json_object_new_object();
	if (kind == FERRY_EVENT_STATE)
		json_object_object_add(data, "state", jstr(ferry_state_name(state)));
	if (kind == FERRY_EVENT_OWNER)
		json_object_object_add(data, "owner",
				       jstr(ferry_owner_name(st->owner)));
	json_object_object_add(data, "stats", stats_json(st, err, receiving));
	json_object_object_add(msg, "event", jstr(event_names[kind]));
	json_object_object_add(msg, "data", data);
	api_send(vm, client, msg);
	json_object_put(msg);
}

/* Send the deferred events, oldest first; under evq_lock. */
static void evq_flush_locked(struct vm *vm)
{
	struct vm_api *api = vm->api;

	for (unsigned i = 0; i < api->evq_n; i++) {
		const struct api_evq_entry *e = &api->evq[i];

		event_send(vm, e->client, e->kind, e->state, &e->st, e->err,
			   e->receiving);
	}
	api->evq_n = 0;
}

/**
 * api_events_flush() - send the events deferred while the guest was
 * paused (before a DONE, or when a run ends). Any thread.
 * @vm: the VM.
 */
void api_events_flush(struct vm *vm)
{
	struct vm_api *api = vm->api;

	if (!api || !api->evq)
		return;
	pthread_mutex_lock(&api->evq_lock);
	evq_flush_locked(vm);
	pthread_mutex_unlock(&api->evq_lock);
}

/* Keep @ev for later while the guest is paused for a handover: building
 * the JSON of the whole stats and waking the API thread cost the pause
 * 0.1-0.25 ms of CPU per event on this host (three or four per pause).
 * False when it must go now (not paused, or the queue is full). */
static bool evq_defer(struct vm *vm, uint64_t client,
		      const struct ferry_event *ev, const char *err)
{
	struct vm_api *api = vm->api;
	struct api_evq_entry *e;
	size_t size = ev->stats->struct_size;

	if (!api || !api->evq ||
	    (ev->stats->state != FERRY_STATE_STOPPED &&
	     ev->stats->state != FERRY_STATE_SWITCHOVER))
		return false;
	pthread_mutex_lock(&api->evq_lock);
	if (api->evq_n == API_EVQ_MAX) {
		pthread_mutex_unlock(&api->evq_lock);
		return false;
	}
	if (!api->evq_n)
		api->evq_since_ns = vm_now_ns();
	e = &api->evq[api->evq_n++];
	e->client = client;
	e->kind = ev->kind;
	e->state = ev->state;
	e->receiving = vm->mig.receiving;
	memset(&e->st, 0, sizeof(e->st));
	memcpy(&e->st, ev->stats, size < sizeof(e->st) ? size : sizeof(e->st));
	e->st.struct_size = sizeof(e->st);
	snprintf(e->err, sizeof(e->err), "%s", err);
	pthread_mutex_unlock(&api->evq_lock);
	return true;
}

/* The API thread: deferred events that waited API_EVQ_MAX_MS go now. The
 * poll() timeout until they are due, or -1. */
static int evq_tick(struct vm *vm)
{
	struct vm_api *api = vm->api;
	uint64_t now, due;
	int ms = -1;

	if (!api->evq)
		return -1;
	pthread_mutex_lock(&api->evq_lock);
	if (api->evq_n) {
		now = vm_now_ns();
		due = api->evq_since_ns + API_EVQ_MAX_MS * VM_NS_PER_MS;
		if (now >= due)
			evq_flush_locked(vm);
		else
			ms = (int)((due - now) / VM_NS_PER_MS) + 1;
	}
	pthread_mutex_unlock(&api->evq_lock);
	return ms;
}

/**
 * api_event() - forward an engine event to the client that started the
 * migration (the on_event callback). Migration thread.
 * @vm: the VM.
 * @client: the client id (0: nobody).
 * @ev: the event.
 *
 * While the guest is paused for a handover the event waits, copied, and
 * goes out after the pause (evq_defer()).
 */
void api_event(struct vm *vm, uint64_t client, const struct ferry_event *ev)
{
	char err[512] = "";

	if (!client || !ev || !ev->stats ||
	    (unsigned)ev->kind >= sizeof(event_names) / sizeof(event_names[0]) ||
	    !event_names[ev->kind])
		return;
	/* Events come from the thread that drives the session, the only one
	 * that sets mig.session: it can be read here without the lock (and
	 * no lock of ours but the event queue's is taken inside an engine
	 * callback). */
	if (ev->stats->error && vm->mig.session)
		ferry_session_errmsg(vm->mig.session, err, sizeof(err));
	if (evq_defer(vm, client, ev, err))
		return;
	/* In order: what waited goes first. */
	api_events_flush(vm);
	event_send(vm, client, ev->kind, ev->state, ev->stats, err,
		   vm->mig.receiving);
}

/* Reply to a client from the API thread. Consumes @msg. */
static void reply(struct vm *vm, struct api_client *c, json_object *msg)
{
	api_send(vm, c->id, msg);
	json_object_put(msg);
}

/* --- commands ----------------------------------------------------------- */

static json_object *make_return(json_object *ret)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "return", ret ? ret : json_object_new_object());
	return o;
}

static json_object *make_error(const char *cls, const char *desc)
{
	json_object *o = json_object_new_object(), *e = json_object_new_object();

	json_object_object_add(e, "class", jstr(cls));
	json_object_object_add(e, "desc", jstr(desc));
	json_object_object_add(o, "error", e);
	return o;
}

static const char *err_class(enum vm_err e)
{
	return e == VM_ERR_STATE ? "InvalidState" :
	       e == VM_ERR_ARG ? "InvalidArgument" : "GenericError";
}

static json_object *cmd_migrate(struct vm *vm, struct api_client *c,
				json_object *args)
{
	struct vm_migrate_args a;
	char err[512];
	enum vm_err e;

	if (!args) {
		return make_error("InvalidArgument",
				  "'uri' (a string like tcp:HOST:PORT) is required");
	}
	if (api_migrate_args(args, &a, err, sizeof(err)))
		return make_error("InvalidArgument", err);
	e = vm_migrate_start(vm, &a, c->id, err, sizeof(err));
	if (e)
		return make_error(err_class(e), err);
	return make_return(NULL);
}

/* Run one parsed request and return its reply. */
static json_object *dispatch(struct vm *vm, struct api_client *c,
			     json_object *req)
{
	json_object *cmd, *args = NULL;
	const char *name;
	char err[512];
	enum vm_err e;

	if (!json_object_object_get_ex(req, "execute", &cmd) ||
	    !json_object_is_type(cmd, json_type_string))
		return make_error("GenericError", "'execute' (a command name string) is required");
	if (json_object_object_get_ex(req, "arguments", &args) && args &&
	    !json_object_is_type(args, json_type_object))
		return make_error("InvalidArgument", "'arguments' must be an object");
	name = json_object_get_string(cmd);
	if (!strcmp(name, "migrate"))
		return cmd_migrate(vm, c, args);
	if (!strcmp(name, "status"))
		return make_return(status_json(vm));
	if (!strcmp(name, "quit")) {
		vm->api->quit = true;
		return make_return(NULL);
	}
	if (!strcmp(name, "cancel")) {
		e = vm_migrate_cancel(vm, err, sizeof(err));
	} else if (!strcmp(name, "postcopy")) {
		e = vm_postcopy_switch(vm, args, err, sizeof(err));
	} else if (!strcmp(name, "recover")) {
		e = vm_postcopy_recover(vm, args, c->id, err, sizeof(err));
	} else if (!strcmp(name, "resume")) {
		e = vm_postcopy_resume(vm, args, err, sizeof(err));
	} else {
		snprintf(err, sizeof(err), "unknown command '%.64s'", name);
		return make_error("CommandNotFound", err);
	}
	return e ? make_error(err_class(e), err) : make_return(NULL);
}

static void handle_line(struct vm *vm, struct api_client *c, char *line,
			size_t len)
{
	json_tokener *tok;
	json_object *req = NULL;
	bool ok;

	while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' ||
		       line[len - 1] == '\t'))
		len--;
	while (len && (*line == ' ' || *line == '\t')) {
		line++;
		len--;
	}
	if (!len)
		return; /* blank lines are not requests */
	tok = json_tokener_new_ex(32);
	if (tok && !memchr(line, '\0', len)) {
		json_tokener_set_flags(tok, JSON_TOKENER_STRICT |
						    JSON_TOKENER_VALIDATE_UTF8);
		req = json_tokener_parse_ex(tok, line, (int)len);
	}
	ok = req && json_tokener_get_error(tok) == json_tokener_success &&
	     json_tokener_get_parse_end(tok) == len &&
	     json_object_is_type(req, json_type_object);
	if (tok)
		json_tokener_free(tok);
	if (!ok) {
		reply(vm, c, make_error("ParseError", "not a JSON object"));
	} else {
		json_object *r = dispatch(vm, c, req), *id;

		/* The id comes back as given, null included. */
		if (json_object_object_get_ex(req, "id", &id))
			json_object_object_add(r, "id", json_object_get(id));
		reply(vm, c, r);
	}
	json_object_put(req);
}

/* --- connections -------------------------------------------------------- */

static void client_greet(struct vm *vm, struct api_client *c)
{
	json_object *o = json_object_new_object(), *g = json_object_new_object();

	json_object_object_add(g, "version", jstr(FERRY_VERSION_STRING));
	json_object_object_add(g, "role", jstr(vm_role(vm)));
	json_object_object_add(g, "pid", json_object_new_int((int)getpid()));
	json_object_object_add(o, "ferry-vm", g);
	reply(vm, c, o);
}

/* The client that started the running migration, or 0: it follows the
 * events until DONE, however long the migration takes, so it is never
 * idle and never evicted. */
static uint64_t migration_owner(struct vm *vm)
{
	uint64_t id;

	pthread_mutex_lock(&vm->mig.lock);
	id = vm->mig.active ? vm->mig.client : 0;
	pthread_mutex_unlock(&vm->mig.lock);
	return id;
}

/* Tell a client why it is dropped, then drop it. It is an event, not an
 * error reply, because it answers no request. Caller holds api->lock. */
static void client_bye(struct api_client *c, const char *reason,
		       const char *desc)
{
	json_object *o = json_object_new_object(), *d = json_object_new_object();
	const char *s;

	json_object_object_add(d, "reason", jstr(reason));
	json_object_object_add(d, "desc", jstr(desc));
	json_object_object_add(o, "event", jstr("CLOSED"));
	json_object_object_add(o, "data", d);
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	client_queue(c, s, strlen(s));
	json_object_put(o);
	c->dead = true;
}

static void client_free(struct api_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
}

/* Free dead clients. API thread only, and never while a poll array from
 * poll_setup() is still in use. */
static void clients_reap(struct vm_api *api)
{
	unsigned i = 0;

	pthread_mutex_lock(&api->lock);
	while (i < api->nclients) {
		struct api_client *c = api->clients[i];

		if (!c->dead) {
			i++;
			continue;
		}
		client_free(c);
		api->clients[i] = api->clients[--api->nclients];
	}
	pthread_mutex_unlock(&api->lock);
}

/* The table is full: drop the client that has been quiet longest, other
 * than the one following a migration, so a newcomer (a `cancel`, say)
 * always gets in. Caller holds api->lock. */
static void client_evict(struct vm_api *api, uint64_t owner)
{
	struct api_client *victim = NULL, *c;
	char desc[128];
	unsigned i;

	for (i = 0; i < api->nclients; i++) {
		c = api->clients[i];
		if (c->dead)
			return; /* a slot frees up anyway */
		if (c->id != owner && (!victim || c->active_ns < victim->active_ns))
			victim = c;
	}
	if (!victim)
		return;
	snprintf(desc, sizeof(desc),
		 "%u clients are connected; a new one takes the slot of the one quiet longest",
		 API_MAX_CLIENTS);
	client_bye(victim, "evicted", desc);
}

static void client_accept(struct vm *vm)
{
	struct vm_api *api = vm->api;
	uint64_t owner = migration_owner(vm);
	struct api_client *c;
	int fd = -1;

	fd = accept4(api->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	c = calloc(1, sizeof(*c));
	if (!c || !(c->in = malloc(API_LINE_MAX))) {
		free(c);
		close(fd);
		return;
	}
	c->fd = fd;
	pthread_mutex_lock(&api->lock);
	if (api->nclients == API_MAX_CLIENTS)
		client_evict(api, owner);
	pthread_mutex_unlock(&api->lock);
	clients_reap(api);
	pthread_mutex_lock(&api->lock);
	if (api->nclients == API_MAX_CLIENTS) {
		pthread_mutex_unlock(&api->lock);
		client_free(c); /* only if nobody could be evicted */
		return;
	}
	c->id = ++api->next_id;
	c->active_ns = vm_now_ns();
	api->clients[api->nclients++] = c;
	pthread_mutex_unlock(&api->lock);
	client_greet(vm, c);
}

/* Drop the clients quiet for longer than the idle timeout (with a CLOSED
 * event saying so). Returns the poll() timeout until the next one could
 * expire, -1 for none. API thread only. */
static int clients_expire(struct vm *vm)
{
	struct vm_api *api = vm->api;
	uint64_t owner, now, end, next = UINT64_MAX;
	char desc[96];
	unsigned i;

	if (!api->idle_ns)
		return -1;
	owner = migration_owner(vm);
	now = vm_now_ns();
	snprintf(desc, sizeof(desc), "no command for %g s",
		 (double)api->idle_ns / 1e9);
	pthread_mutex_lock(&api->lock);
	for (i = 0; i < api->nclients; i++) {
		struct api_client *c = api->clients[i];

		if (c->dead || c->id == owner)
			continue;
		end = c->active_ns + api->idle_ns;
		if (end <= now)
			client_bye(c, "idle", desc);
		else if (end < next)
			next = end;
	}
	pthread_mutex_unlock(&api->lock);
	if (next == UINT64_MAX)
		return -1;
	next = (next - now + VM_NS_PER_MS - 1) / VM_NS_PER_MS;
	return next > INT32_MAX ? INT32_MAX : (int)next;
}

/* Discard input through the end of an over-long line. Returns true when
 * the line ended and what follows may be read as requests. */
static bool client_skip(struct api_client *c)
{
	char *nl = memchr(c->in, '\n', c->in_len);
	size_t used;

	if (!nl) {
		c->in_len = 0;
		return false;
	}
	used = (size_t)(nl - c->in) + 1;
	memmove(c->in, nl + 1, c->in_len - used);
	c->in_len -= used;
	c->skipping = false;
	return true;
}

/* Read what is there and run every complete line. A line longer than
 * API_LINE_MAX gets an error reply and is skipped to its newline, so the
 * connection stays usable. */
static void client_read(struct vm *vm, struct api_client *c)
{
	char *nl, *start, err[96];
	ssize_t n;
	size_t used;

	n = read(c->fd, c->in + c->in_len, API_LINE_MAX - c->in_len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		c->dead = true; /* EOF or error: a partial line is dropped */
		return;
	}
	c->in_len += (size_t)n;
	if (c->skipping && !client_skip(c))
		return;
	start = c->in;
	while (!c->dead && !vm->api->quit &&
	       (nl = memchr(start, '\n', c->in_len - (size_t)(start - c->in)))) {
		*nl = '\0';
		handle_line(vm, c, start, (size_t)(nl - start));
		start = nl + 1;
	}
	used = (size_t)(start - c->in);
	memmove(c->in, start, c->in_len - used);
	c->in_len -= used;
	if (c->in_len == API_LINE_MAX) {
		snprintf(err, sizeof(err), "command line longer than %u bytes",
			 API_LINE_MAX);
		reply(vm, c, make_error("GenericError", err));
		c->in_len = 0;
		c->skipping = true;
	}
}

/* Fixed slots in the poll array before the clients. */
enum { PFD_SIG, PFD_WAKE, PFD_LISTEN, PFD_CLIENTS };

static nfds_t poll_setup(struct vm_api *api, struct pollfd *p,
			 struct api_client **who)
{
	nfds_t n = PFD_CLIENTS;
	unsigned i;

	p[PFD_SIG] = (struct pollfd){ .fd = api->sig_fd, .events = POLLIN };
	p[PFD_WAKE] = (struct pollfd){ .fd = api->wake_fd, .events = POLLIN };
	p[PFD_LISTEN] = (struct pollfd){ .fd = api->listen_fd, .events = POLLIN };
	pthread_mutex_lock(&api->lock);
	for (i = 0; i < api->nclients; i++, n++) {
		who[n] = api->clients[i];
		p[n] = (struct pollfd){ .fd = who[n]->fd, .events = POLLIN };
		if (who[n]->out_len)
			p[n].events |= POLLOUT;
	}
	pthread_mutex_unlock(&api->lock);
	return n;
}

static void poll_clients(struct vm *vm, struct pollfd *p, nfds_t n,
			 struct api_client **who)
{
	struct vm_api *api = vm->api;
	nfds_t i;

	for (i = PFD_CLIENTS; i < n; i++) {
		if (p[i].revents & POLLOUT) {
			pthread_mutex_lock(&api->lock);
			client_flush(who[i]);
			pthread_mutex_unlock(&api->lock);
		}
		if (p[i].revents & (POLLIN | POLLHUP | POLLERR) && !api->quit)
			client_read(vm, who[i]);
		else if (p[i].revents & (POLLHUP | POLLERR))
			who[i]->dead = true;
	}
}

/* After quit: give the replies a moment to leave. */
static void flush_before_exit(struct vm_api *api)
{
	uint64_t deadline = vm_now_ns() + API_QUIT_FLUSH_MS * VM_NS_PER_MS;
	struct pollfd p[API_MAX_CLIENTS];
	unsigned i, n;

	for (;;) {
		n = 0;
		pthread_mutex_lock(&api->lock);
		for (i = 0; i < api->nclients; i++) {
			client_flush(api->clients[i]);
			if (api->clients[i]->out_len && !api->clients[i]->dead)
				p[n++] = (struct pollfd){ .fd = api->clients[i]->fd,
							  .events = POLLOUT };
		}
		pthread_mutex_unlock(&api->lock);
		if (!n || vm_now_ns() >= deadline)
			return;
		poll(p, n, 20);
	}
}

/**
 * api_run() - serve the API socket (if any) until quit or SIGINT/SIGTERM.
 * Runs on the main thread.
 * @vm: the VM, after api_open().
 *
 * Return: 0 on a requested exit, -errno if polling failed.
 */
int api_run(struct vm *vm)
{
	struct vm_api *api = vm->api;
	struct pollfd p[PFD_CLIENTS + API_MAX_CLIENTS];
	struct api_client *who[PFD_CLIENTS + API_MAX_CLIENTS];
	struct signalfd_siginfo si;
	uint64_t cnt;
	nfds_t n;
	int timeout;

	while (!api->quit) {
		int due;

		timeout = clients_expire(vm);
		due = evq_tick(vm);
		if (due >= 0 && (timeout < 0 || due < timeout))
			timeout = due;
		clients_reap(api);
		n = poll_setup(api, p, who);
		if (poll(p, n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if ((p[PFD_SIG].revents & POLLIN) &&
		    read(api->sig_fd, &si, sizeof(si)) == sizeof(si)) {
			fprintf(stderr, "ferry-vm: %s, exiting\n", strsignal((int)si.ssi_signo));
			api->quit = true;
		}
		if ((p[PFD_WAKE].revents & POLLIN) &&
		    read(api->wake_fd, &cnt, sizeof(cnt)) < 0)
			cnt = 0;
		poll_clients(vm, p, n, who);
		/* A guest that cannot start ends the process (main.c). */
		if (atomic_load(&vm->init.state) == VM_INIT_FAILED)
			api->quit = true;
		/* Last: accepting may evict and free a client in who[]. */
		if (p[PFD_LISTEN].revents & POLLIN)
			client_accept(vm);
	}
	flush_before_exit(api);
	return 0;
}

static int listen_socket(struct vm *vm, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat stb;
	int fd, probe;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	/* A socket file nobody listens on is a leftover: replace it. One
	 * somebody answers on belongs to a running VM: refuse. */
	if (lstat(path, &stb) == 0 && S_ISSOCK(stb.st_mode)) {
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			fprintf(stderr, "ferry-vm: %s: in use by another process\n", path);
			return -EADDRINUSE;
		}
		if (probe >= 0)
			close(probe);
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
		int err = errno;

		fprintf(stderr, "ferry-vm: %s: %s\n", path, strerror(err));
		close(fd);
		return -err;
	}
	vm->api->bound = true;
	vm->api->listen_fd = fd;
	return 0;
}

/* FERRY_VM_API_IDLE_TIMEOUT: seconds (fractions allowed, 0 = never) a
 * client may stay quiet before it is dropped. */
static int idle_timeout(uint64_t *ns)
{
	const char *env = getenv("FERRY_VM_API_IDLE_TIMEOUT");
	double s = API_IDLE_DEFAULT_S;
	char *end;

	if (env && *env) {
		errno = 0;
		s = strtod(env, &end);
		if (errno || *end || !(s >= 0 && s <= 1e6)) {
			fprintf(stderr, "ferry-vm: FERRY_VM_API_IDLE_TIMEOUT='%s': need seconds from 0 (never) to 1000000\n",
				env);
			return -1;
		}
	}
	*ns = (uint64_t)(s * 1e9);
	return 0;
}

/**
 * api_open() - set up the main loop: the signal fd, the wake-up fd and, with
 * --api-socket, the listening socket. Signals must already be blocked.
 * @vm: the VM.
 *
 * Return: 0, or a negative errno (a message was printed).
 */
int api_open(struct vm *vm)
{
	struct vm_api *api = calloc(1, sizeof(*api));
	sigset_t sigs;

	if (!api)
		return -ENOMEM;
	vm->api = api;
	pthread_mutex_init(&api->lock, NULL);
	pthread_mutex_init(&api->evq_lock, NULL);
	/* Without it events go out at once, as before. */
	api->evq = calloc(API_EVQ_MAX, sizeof(*api->evq));
	api->listen_fd = api->sig_fd = api->wake_fd = -1;
	if (idle_timeout(&api->idle_ns))
		return -EINVAL;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	api->sig_fd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
	api->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (api->sig_fd < 0 || api->wake_fd < 0) {
		fprintf(stderr, "ferry-vm: cannot set up the main loop: %s\n",
			strerror(errno));
		return -errno;
	}
	if (vm->opts.api_path)
		return listen_socket(vm, vm->opts.api_path);
	return 0;
}

/**
 * api_abandon() - the process exits while a migration thread may still
 * send events: stop listening and remove the socket file, but free
 * nothing that thread could use (the process ends with it).
 * @vm: the VM.
 */
void api_abandon(struct vm *vm)
{
	struct vm_api *api = vm->api;

	if (!api)
		return;
	if (api->listen_fd >= 0)
		close(api->listen_fd);
	api->listen_fd = -1;
	if (api->bound)
		unlink(vm->opts.api_path);
	api->bound = false;
}

/**
 * api_close() - close every connection and remove the socket file. Call
 * after the migration threads are joined.
 * @vm: the VM.
 */
void api_close(struct vm *vm)
{
	struct vm_api *api = vm->api;
	unsigned i;

	if (!api)
		return;
	for (i = 0; i < api->nclients; i++)
		client_free(api->clients[i]);
	if (api->listen_fd >= 0)
		close(api->listen_fd);
	if (api->bound)
		unlink(vm->opts.api_path);
	if (api->sig_fd >= 0)
		close(api->sig_fd);
	if (api->wake_fd >= 0)
		close(api->wake_fd);
	pthread_mutex_destroy(&api->lock);
	pthread_mutex_destroy(&api->evq_lock);
	free(api->evq);
	free(api);
	vm->api = NULL;
}
