// SPDX-License-Identifier: MIT
/*
 * session.c - the session object: configuration, regions, statistics,
 * events, errors. Everything here is safe to call from any thread where the
 * header says so.
 */
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include "memory/lazy.h"
#include "migrate/engine.h"
#include "proto/proto.h"
#include "transport/transport.h"

/**
 * fy_now_ns() - CLOCK_MONOTONIC in nanoseconds.
 */
uint64_t fy_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/**
 * fy_read_boot_id() - /proc/sys/kernel/random/boot_id without the newline.
 */
void fy_read_boot_id(char *out, size_t len)
{
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	ssize_t n = -1;

	out[0] = 0;
	if (fd >= 0) {
		n = read(fd, out, len - 1);
		close(fd);
	}
	if (n > 0) {
		out[n] = 0;
		out[strcspn(out, "\n")] = 0;
	}
}

/* The text of each ferry code, by its distance from FERRY_EPROTO. */
static const char *const error_texts[] = {
	[FERRY_EPROTO - FERRY_EPROTO] = "protocol violation by the peer",
	[FERRY_EPROTO - FERRY_ECHECKSUM] = "record checksum mismatch",
	[FERRY_EPROTO - FERRY_EVERSION] = "no common protocol version",
	[FERRY_EPROTO - FERRY_EMISMATCH] =
		"memory layout differs between source and destination",
	[FERRY_EPROTO - FERRY_EPEER] = "the peer reported an error",
	[FERRY_EPROTO - FERRY_ECANCELED] = "cancelled",
	[FERRY_EPROTO - FERRY_ETIMEOUT] =
		"a time limit ran out (convergence, pause, or a silent peer)",
	[FERRY_EPROTO - FERRY_EVMM] = "a VMM callback failed",
	[FERRY_EPROTO - FERRY_EUNCONFIRMED] =
		"released, but the destination did not confirm it runs",
	[FERRY_EPROTO - FERRY_EUNKNOWN] = "unknown mandatory record",
	[FERRY_EPROTO - FERRY_EPOSTCOPY] =
		"postcopy did not complete; the guest may have run at the destination",
};
static_assert(sizeof(error_texts) / sizeof(error_texts[0]) ==
		      FERRY_EPROTO - FERRY_ELAST + 1,
	      "every ferry error code has a text");

FERRY_API const char *ferry_strerror(int err)
{
	if (err == 0)
		return "success";
	if (err <= FERRY_EPROTO && err >= FERRY_ELAST)
		return error_texts[FERRY_EPROTO - err];
	if (err < 0 && err > -4096)
		return strerror(-err);
	return "unknown error";
}

FERRY_API const char *ferry_state_name(enum ferry_state state)
{
	static const char *const names[] = {
		[FERRY_STATE_NONE] = "none",
		[FERRY_STATE_CONNECTING] = "connecting",
		[FERRY_STATE_NEGOTIATING] = "negotiating",
		[FERRY_STATE_PRECOPY] = "precopy",
		[FERRY_STATE_STOPPED] = "stopped",
		[FERRY_STATE_SWITCHOVER] = "switchover",
		[FERRY_STATE_COMPLETED] = "completed",
		[FERRY_STATE_FAILED] = "failed",
		[FERRY_STATE_CANCELLED] = "cancelled",
		[FERRY_STATE_POSTCOPY] = "postcopy",
		[FERRY_STATE_POSTCOPY_PAUSED] = "postcopy-paused",
	};
	static_assert(sizeof(names) / sizeof(names[0]) == FERRY_STATE_COUNT,
		      "every state has a name");

	if ((unsigned)state < sizeof(names) / sizeof(names[0]))
		return names[state];
	return "unknown";
}

/* One definition of the owners, proto's: the public enum is the same. */
static_assert((int)FERRY_OWNER_NONE == (int)FY_OWNER_NONE &&
		      (int)FERRY_OWNER_SOURCE == (int)FY_OWNER_SOURCE &&
		      (int)FERRY_OWNER_DESTINATION == (int)FY_OWNER_DESTINATION,
	      "enum ferry_owner is enum fy_owner");

FERRY_API const char *ferry_owner_name(enum ferry_owner owner)
{
	return fy_owner_name((enum fy_owner)owner);
}

/* Copy the config's TLS strings into the session: s->tls points there. */
static int tls_copy(ferry_session *s)
{
	const char **f[] = { &s->tls.ca_file,	  &s->tls.cert_file,
			     &s->tls.key_file,	  &s->tls.crl_file,
			     &s->tls.peer_names,  &s->tls.psk_file,
			     &s->tls.psk_identity, &s->tls.priority };

	static_assert(sizeof(f) / sizeof(f[0]) ==
		      sizeof(s->tls_str) / sizeof(s->tls_str[0]),
		      "one copy per TLS string");
	fy_tls_config_from(&s->tls, &s->cfg);
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		if (!*f[i])
			continue;
		s->tls_str[i] = strdup(*f[i]);
		if (!s->tls_str[i])
			return -ENOMEM;
		*f[i] = s->tls_str[i];
	}
	/* The config's own pointers are the caller's: not kept. */
	s->cfg.tls_ca_file = s->tls.ca_file;
	s->cfg.tls_cert_file = s->tls.cert_file;
	s->cfg.tls_key_file = s->tls.key_file;
	s->cfg.tls_crl_file = s->tls.crl_file;
	s->cfg.tls_peer_names = s->tls.peer_names;
	s->cfg.tls_psk_file = s->tls.psk_file;
	s->cfg.tls_psk_identity = s->tls.psk_identity;
	s->cfg.tls_priority = s->tls.priority;
	return 0;
}

/* Drop the credentials read for a run. */
static void tls_creds_drop(ferry_session *s)
{
	for (int i = 0; i < 2; i++) {
		fy_tls_creds_free(s->tls_creds[i]);
		s->tls_creds[i] = NULL;
	}
}

static void tls_free(ferry_session *s)
{
	tls_creds_drop(s);
	for (size_t i = 0; i < sizeof(s->tls_str) / sizeof(s->tls_str[0]); i++) {
		if (s->tls_str[i])
			explicit_bzero(s->tls_str[i], strlen(s->tls_str[i]));
		free(s->tls_str[i]);
		s->tls_str[i] = NULL;
	}
}

/**
 * fy_session_tls_creds() - see engine.h. Read at the first connection of
 * a run that needs them, so a run sees the files as they are when it
 * starts; every later connection of the run shares them.
 */
int fy_session_tls_creds(ferry_session *s, bool server,
			 struct fy_tls_creds **out, char *err, size_t len)
{
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	if (!s->tls_creds[server])
		rc = fy_tls_creds_load(&s->tls, server, &s->tls_creds[server],
				       err, len);
	*out = s->tls_creds[server];
	pthread_mutex_unlock(&s->lock);
	return rc;
}

FERRY_API int ferry_session_new(const struct ferry_config *cfg,
				ferry_session **out)
{
	ferry_session *s;
	int rc;

	char err[256];

	if (!cfg || !out)
		return -EINVAL;
	rc = ferry_config_check(cfg, err, sizeof(err));
	if (rc) {
		/* There is no session to keep the message: the log hears it. */
		if (cfg->struct_size >= offsetof(struct ferry_config, on_log) +
					       sizeof(cfg->on_log) &&
		    cfg->on_log)
			cfg->on_log(cfg->opaque, 0, err);
		return rc;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->cfg = *cfg;
	/* ferry_config_check() took the table: this copy cannot fail. */
	fy_ops_copy(&s->ops, cfg->ops, NULL, 0);
	s->cfg.ops = &s->ops;
	if (!s->cfg.max_passes)
		s->cfg.max_passes = 30;
	if (!s->cfg.progress_ms)
		s->cfg.progress_ms = 200;
	if (cfg->record_stream) {
		snprintf(s->record_path, sizeof(s->record_path), "%s",
			 cfg->record_stream);
		s->cfg.record_stream = s->record_path;
	}
	if (cfg->congestion_control) {
		snprintf(s->cc_name, sizeof(s->cc_name), "%s",
			 cfg->congestion_control);
		s->cfg.congestion_control = s->cc_name;
	}
	if (tls_copy(s)) {
		tls_free(s);
		free(s);
		return -ENOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->pc_cv, NULL);
	pthread_mutex_init(&s->pw_lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&s->pw_cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	*out = s;
	return 0;
}

FERRY_API void ferry_session_destroy(ferry_session *s)
{
	if (!s)
		return;
	fy_lazy_free(s->lazy);
	fy_session_pause_retire(s);
	pthread_cond_destroy(&s->pw_cv);
	pthread_mutex_destroy(&s->pw_lock);
	tls_free(s);
	pthread_cond_destroy(&s->pc_cv);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static int refuse_call(ferry_session *s, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A call refused outside a run: the session's message says why (the
 * error of the last run is not touched), and the log hears it. */
static int refuse_call(ferry_session *s, int code, const char *fmt, ...)
{
	char msg[sizeof(s->errmsg)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&s->lock);
	memcpy(s->errmsg, msg, sizeof(msg));
	pthread_mutex_unlock(&s->lock);
	fy_session_log(s, 0, "%s", msg);
	return code;
}

/* Why region @r cannot join the session's regions, or NULL. */
static const char *region_problem(const ferry_session *s,
				  const struct ferry_region *r)
{
	if (!r->host || !r->size)
		return "it has no host mapping or no size";
	if (s->nregions >= FY_MAX_REGIONS)
		return "the session has its maximum of regions";
	if (r->size % FY_PAGE_SIZE || r->gpa % FY_PAGE_SIZE ||
	    (uintptr_t)r->host % FY_PAGE_SIZE)
		return "its gpa, size and host address must be page multiples";
	if (r->gpa + r->size < r->gpa)
		return "it wraps around the guest-physical address space";
	if (r->flags & ~FERRY_REGION_FD)
		return "its flags have bits this library does not know";
	if ((r->flags & FERRY_REGION_FD) &&
	    (r->fd < 0 || fcntl(r->fd, F_GETFD) < 0))
		return "FERRY_REGION_FD is set, but fd is not an open descriptor";
	for (size_t i = 0; i < s->nregions; i++) {
		const struct fy_region *o = &s->regions[i];

		if (r->gpa < o->gpa + o->size && o->gpa < r->gpa + r->size)
			return "it overlaps a region added before";
	}
	return NULL;
}

FERRY_API int ferry_session_add_region(ferry_session *s,
				       const struct ferry_region *r)
{
	struct fy_region *d;
	const char *why;

	if (!s || !r)
		return -EINVAL;
	/* Only logged: the session's message belongs to the running
	 * migration. */
	if (atomic_load(&s->busy)) {
		fy_session_log(s, 0, "region %s: regions cannot change while a migration runs",
			       r->name ? r->name : "");
		return -EBUSY;
	}
	why = region_problem(s, r);
	if (why)
		return refuse_call(s, -EINVAL, "region %s refused: %s",
				   r->name ? r->name : "(unnamed)", why);
	d = &s->regions[s->nregions];
	memset(d, 0, sizeof(*d));
	d->gpa = r->gpa;
	d->size = r->size;
	d->host = r->host;
	d->fd = r->flags & FERRY_REGION_FD ? r->fd : -1;
	d->fd_offset = r->flags & FERRY_REGION_FD ? r->fd_offset : 0;
	snprintf(d->name, sizeof(d->name), "%s",
		 r->name ? r->name : "region");
	s->nregions++;
	s->ram_bytes += r->size;
	return 0;
}

FERRY_API void ferry_session_cancel(ferry_session *s)
{
	/* Past the transition, or once RELEASED goes out, stopping would
	 * lose the guest (or leave the source unsure who runs it): the flag
	 * is not set. Atomics only: this runs in signal handlers. */
	if (!s)
		return;
	if (atomic_load(&s->transitioned) || atomic_load(&s->released))
		return;
	atomic_store(&s->cancel, true);
}

FERRY_API int ferry_session_postcopy(ferry_session *s)
{
	char why[sizeof(s->pc_why)];
	int avail;

	if (!s || !atomic_load(&s->pc_source))
		return -EINVAL;
	if (atomic_load(&s->transitioned))
		return 0;
	if (atomic_load(&s->pc_stopped))
		return refuse_call(s, -EALREADY,
				   "the source is already in its switchover: too late for postcopy");
	avail = atomic_load(&s->pc_avail);
	if (avail < 0) {
		pthread_mutex_lock(&s->lock);
		memcpy(why, s->pc_why, sizeof(why));
		pthread_mutex_unlock(&s->lock);
		return refuse_call(s, -ENOTSUP, "postcopy is not possible: %s",
				   why);
	}
	atomic_store(&s->pc_now, true);
	fy_session_log(s, 1, "postcopy requested: the running pass is cut short to switch");
	return 0;
}

/* Hand @uri or a force to the run waiting in postcopy-paused. */
static int pc_command(ferry_session *s, const char *uri)
{
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	if (!s->pc_paused || s->pc_uri[0] || s->pc_force)
		rc = -EBUSY;
	else if (uri)
		snprintf(s->pc_uri, sizeof(s->pc_uri), "%s", uri);
	else
		s->pc_force = true;
	pthread_cond_broadcast(&s->pc_cv);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

FERRY_API int ferry_session_recover(ferry_session *s, const char *uri)
{
	struct fy_uri u;
	char err[256];
	int rc;

	if (!s || !uri)
		return -EINVAL;
	if (strlen(uri) >= FERRY_URI_MAX)
		return refuse_call(s, -EINVAL,
				   "recovery URI of %zu bytes: at most %d",
				   strlen(uri), FERRY_URI_MAX - 1);
	rc = fy_uri_parse(uri, &u, err, sizeof(err));
	if (!rc && u.kind == FY_URI_FILE) {
		snprintf(err, sizeof(err),
			 "%s: postcopy recovers over a connection, not a file",
			 uri);
		rc = -EINVAL;
	}
	if (rc)
		return refuse_call(s, rc, "%s", err);
	rc = pc_command(s, uri);
	if (rc)
		return refuse_call(s, rc,
				   "nothing to recover: the session is not in postcopy-paused, or a recovery already runs");
	return 0;
}

FERRY_API int ferry_session_force_resume(ferry_session *s)
{
	int rc;

	if (!s)
		return -EINVAL;
	rc = atomic_load(&s->pc_source) ? pc_command(s, NULL) : -EBUSY;
	if (rc)
		return refuse_call(s, rc,
				   "not a source in postcopy-paused (or a recovery runs)");
	return 0;
}

/**
 * fy_session_pc_wait() - see engine.h.
 */
int fy_session_pc_wait(ferry_session *s, char *uri, size_t len,
		       void (*tick)(void *opaque), void *opaque)
{
	struct timespec ts;
	int rc;

	pthread_mutex_lock(&s->lock);
	s->pc_paused = true;
	s->pc_uri[0] = 0;
	s->pc_force = false;
	pthread_mutex_unlock(&s->lock);
	fy_session_set_state(s, FERRY_STATE_POSTCOPY_PAUSED);
	pthread_mutex_lock(&s->lock);
	while (!s->pc_uri[0] && !s->pc_force) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		if (pthread_cond_timedwait(&s->pc_cv, &s->lock, &ts) &&
		    tick) {
			/* The statistics go on while paused (a vCPU that
			 * faults meanwhile is a fault). */
			pthread_mutex_unlock(&s->lock);
			tick(opaque);
			pthread_mutex_lock(&s->lock);
		}
	}
	rc = s->pc_force ? FERRY_EPOSTCOPY : 0;
	snprintf(uri, len, "%s", s->pc_uri);
	s->pc_paused = false;
	s->pc_uri[0] = 0;
	s->pc_force = false;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/**
 * fy_session_pc_transitioned() - see engine.h.
 */
void fy_session_pc_transitioned(ferry_session *s)
{
	/* Said before the first byte of POSTCOPY leaves (or the destination
	 * resumes): a VMM that reads the statistics meanwhile must already
	 * refuse what would lose the guest. */
	pthread_mutex_lock(&s->lock);
	s->stats.postcopy = true;
	pthread_mutex_unlock(&s->lock);
	atomic_store(&s->transitioned, true);
	if (atomic_exchange(&s->cancel, false))
		fy_session_log(s, 1, "a cancel that came during the switch to postcopy is ignored: the guest may run at the destination now");
}

/**
 * fy_session_releasing() - see engine.h.
 */
void fy_session_releasing(ferry_session *s)
{
	atomic_store(&s->released, true);
	if (atomic_exchange(&s->cancel, false))
		fy_session_log(s, 1, "a cancel that came as RELEASED was being sent is ignored: the destination may run the guest now, so this side waits for its answer");
}

/**
 * fy_session_pc_avail() - see engine.h.
 */
void fy_session_pc_avail(ferry_session *s, bool yes, const char *why)
{
	pthread_mutex_lock(&s->lock);
	snprintf(s->pc_why, sizeof(s->pc_why), "%s", yes ? "" : why);
	pthread_mutex_unlock(&s->lock);
	atomic_store(&s->pc_avail, yes ? 1 : -1);
}

/* Every member is whole in a size that is a multiple of the struct's
 * alignment, and every sizeof of the struct is one. */
static_assert(sizeof(struct ferry_stats) % 8 == 0 &&
		      sizeof(struct ferry_stats) <= FERRY_STATS_MAX_SIZE &&
		      offsetof(struct ferry_stats, error) + sizeof(int) <=
			      FERRY_STATS_MIN_SIZE,
	      "struct ferry_stats sizes are multiples of 8 within the range");

FERRY_API int ferry_session_stats(ferry_session *s, struct ferry_stats *out)
{
	struct ferry_stats now;
	size_t size;

	if (!s || !out)
		return -EINVAL;
	/* Writing past a struct the caller forgot to size would corrupt
	 * its memory; refusing what no sizeof can be catches most of it. */
	size = out->struct_size;
	if (size < FERRY_STATS_MIN_SIZE || size > FERRY_STATS_MAX_SIZE ||
	    size % 8) {
		fy_session_log(s, 0,
			       "ferry_session_stats: struct_size is %zu, not the size of any struct ferry_stats (a multiple of 8 from %d to %d); set it to sizeof(struct ferry_stats) (FERRY_STATS_INIT in an initialiser)",
			       size, FERRY_STATS_MIN_SIZE, FERRY_STATS_MAX_SIZE);
		return -EINVAL;
	}
	pthread_mutex_lock(&s->lock);
	now = s->stats;
	if (atomic_load(&s->busy) && s->t_start_ns && !s->total_fixed)
		now.total_ms = fy_ms(fy_now_ns() - s->t_start_ns);
	pthread_mutex_unlock(&s->lock);
	if (size > sizeof(now))
		size = sizeof(now);
	memcpy(out, &now, size);
	out->struct_size = (uint32_t)size;
	return 0;
}

FERRY_API const char *ferry_session_errmsg(ferry_session *s, char *buf,
					   size_t len)
{
	if (!buf || !len)
		return "";
	buf[0] = 0;
	if (!s)
		return buf;
	pthread_mutex_lock(&s->lock);
	snprintf(buf, len, "%s", s->errmsg);
	pthread_mutex_unlock(&s->lock);
	return buf;
}

FERRY_API int ferry_buf_append(struct ferry_buf *buf, const void *data,
			       size_t len)
{
	if (!buf || (!data && len))
		return -EINVAL;
	return fy_buf_put(&buf->b, data, len);
}

/* Credit the pacer keeps across idle time and sleep overshoots. */
#define FY_PACE_SLACK_NS (2 * 1000000ull)

/*
 * Book @bytes on the capped link's clock at @now: returns when they may
 * start (@now when there is no cap). A sleep overshoots by the timer
 * slack; a little credit (bounded, so no burst exceeds the cap by more
 * than FY_PACE_SLACK_NS of bytes) gives that back instead of losing it on
 * every small record.
 */
static uint64_t book(ferry_session *s, uint64_t bytes, uint64_t now)
{
	uint64_t rate = s->cfg.max_bandwidth, start;

	if (!rate || !bytes)
		return now;
	pthread_mutex_lock(&s->lock);
	if (s->pace_next_ns + FY_PACE_SLACK_NS < now)
		s->pace_next_ns = now - FY_PACE_SLACK_NS;
	start = s->pace_next_ns;
	s->pace_next_ns += (uint64_t)((double)bytes * 1e9 / (double)rate);
	pthread_mutex_unlock(&s->lock);
	return start;
}

/**
 * fy_session_pace_urgent() - book @bytes on the capped link without
 * waiting: they go before everything booked and not yet sent (postcopy's
 * answers to page requests, which a vCPU waits for), and the senders
 * that booked before wait that much longer, so the cap holds over time.
 * @s: the session.
 * @bytes: what the caller is about to write.
 */
void fy_session_pace_urgent(ferry_session *s, uint64_t bytes)
{
	book(s, bytes, fy_now_ns());
}

/**
 * fy_session_pace() - hold a sender until the capped link has room.
 * @s: the session; its cfg.max_bandwidth is the cap (0: none).
 * @bytes: what the caller is about to write.
 *
 * The link is a virtual clock shared by every connection: each write
 * books the interval its bytes take at the cap, starting when the link
 * is next free, and waits for that start. Idle time earns at most
 * FY_PACE_SLACK_NS of credit.
 *
 * Return: 0, or FERRY_ECANCELED if the session was cancelled meanwhile.
 */
int fy_session_pace(ferry_session *s, uint64_t bytes)
{
	uint64_t now = fy_now_ns(), start = book(s, bytes, now);

	while (now < start) {
		uint64_t ns = start - now;
		struct timespec ts;

		if (fy_cancelled(s))
			return FERRY_ECANCELED;
		if (ns > FY_TICK_MS * 1000000ull)
			ns = FY_TICK_MS * 1000000ull;
		ts.tv_sec = (time_t)(ns / 1000000000ull);
		ts.tv_nsec = (long)(ns % 1000000000ull);
		nanosleep(&ts, NULL);
		now = fy_now_ns();
	}
	return 0;
}

/**
 * fy_session_begin() - reset per-migration state; refuses a second
 * concurrent run on the same session.
 * @s: the session.
 * @first: the state the run starts in.
 * @owner: who owns the guest as the run starts (a source its own guest,
 *	a destination none yet); set before the first event, silently.
 *
 * Return: 0, -EBUSY, -EINVAL.
 */
int fy_session_begin(ferry_session *s, enum ferry_state first,
		     enum ferry_owner owner)
{
	bool expected = false;

	if (!atomic_compare_exchange_strong(&s->busy, &expected, true))
		return -EBUSY;
	if (s->lazy) {
		/* Its memory is still registered for a load that stopped:
		 * anything touching a missing page would block for ever. */
		refuse_call(s, -EBUSY,
			    "this session's guest was stopped by a failed lazy restore; its memory stays registered until the session is destroyed");
		atomic_store(&s->busy, false);
		return -EBUSY;
	}
	if (!s->nregions) {
		/* The message is set while the session is still ours. */
		refuse_call(s, -EINVAL,
			    "no memory regions: add them with ferry_session_add_region()");
		atomic_store(&s->busy, false);
		return -EINVAL;
	}
	pthread_mutex_lock(&s->lock);
	tls_creds_drop(s); /* a run reads the files afresh */
	memset(&s->stats, 0, sizeof(s->stats));
	s->stats.owner = owner;
	s->stats.ram_bytes = s->ram_bytes;
	s->stats.connections = 1;
	s->stats.stall_timeout_ms = (uint32_t)fy_stall_ms(s);
	s->errmsg[0] = 0;
	s->t_start_ns = fy_now_ns();
	s->total_fixed = false;
	s->t_progress_ns = s->t_start_ns;
	s->pace_next_ns = 0;
	pthread_mutex_unlock(&s->lock);
	for (int k = 0; k < FY_BULK_KINDS; k++)
		atomic_store(&s->bulk_count[k], 0);
	atomic_store(&s->bulk_bytes, 0);
	fy_session_set_state(s, first);
	return 0;
}

/* Which pages backed the run's bulk buffers (huge pages are a request
 * the system may refuse): the debug log says. */
static void log_bulk(ferry_session *s)
{
	unsigned n[FY_BULK_KINDS];

	for (int k = 0; k < FY_BULK_KINDS; k++)
		n[k] = atomic_load(&s->bulk_count[k]);
	if (!n[FY_BULK_HUGETLB] && !n[FY_BULK_THP] && !n[FY_BULK_PLAIN])
		return;
	fy_session_log(s, 3,
		       "engine buffers: %u on hugetlb pages, %u on transparent huge pages, %u on 4 KiB pages (%llu KiB)",
		       n[FY_BULK_HUGETLB], n[FY_BULK_THP], n[FY_BULK_PLAIN],
		       (unsigned long long)atomic_load(&s->bulk_bytes) >> 10);
}

/**
 * fy_session_end() - finish a run: settle the error, report the final
 * state, and make the session ready for another run. A cancel is kept
 * until here, so one that arrives before a run starts still stops it.
 *
 * Return: the session's error (0 when completed).
 */
int fy_session_end(ferry_session *s, int rc)
{
	fy_session_pause_retire(s);
	log_bulk(s);
	pthread_mutex_lock(&s->lock);
	if (rc && !s->stats.error)
		s->stats.error = rc;
	rc = s->stats.error;
	pthread_mutex_unlock(&s->lock);
	fy_session_set_state(s, !rc ? FERRY_STATE_COMPLETED
			     : rc == FERRY_ECANCELED ? FERRY_STATE_CANCELLED
						     : FERRY_STATE_FAILED);
	atomic_store(&s->pc_source, false);
	atomic_store(&s->pc_avail, 0);
	atomic_store(&s->pc_now, false);
	atomic_store(&s->pc_stopped, false);
	atomic_store(&s->transitioned, false);
	atomic_store(&s->released, false);
	atomic_store(&s->cancel, false);
	atomic_store(&s->busy, false);
	return rc;
}

/**
 * fy_session_vmm_fail() - see engine.h.
 */
int fy_session_vmm_fail(ferry_session *s, int rc, const char *what)
{
	char why[256] = "";

	if (s->ops.errmsg)
		s->ops.errmsg(s->cfg.opaque, why, sizeof(why));
	why[sizeof(why) - 1] = 0;
	return fy_session_fail(s, FERRY_EVMM, "%s failed: %s%s%s", what,
			       ferry_strerror(rc), why[0] ? ": " : "", why);
}

/**
 * fy_session_set_state() - change the reported state and tell the VMM.
 */
void fy_session_set_state(ferry_session *s, enum ferry_state st)
{
	pthread_mutex_lock(&s->lock);
	s->stats.state = st;
	if (!s->total_fixed)
		s->stats.total_ms = fy_ms(fy_now_ns() - s->t_start_ns);
	pthread_mutex_unlock(&s->lock);
	fy_session_event(s, FERRY_EVENT_STATE);
}

/**
 * fy_session_set_owner() - record who may run the guest now; a change is
 * logged as "old -> new" and announced with FERRY_EVENT_OWNER.
 * @s: the session.
 * @owner: the owner, from fy_send_owner() or fy_recv_owner().
 */
void fy_session_set_owner(ferry_session *s, enum ferry_owner owner)
{
	enum ferry_owner was;

	pthread_mutex_lock(&s->lock);
	was = s->stats.owner;
	s->stats.owner = owner;
	pthread_mutex_unlock(&s->lock);
	if (was == owner)
		return;
	fy_session_log(s, 3, "owner: %s -> %s", ferry_owner_name(was),
		       ferry_owner_name(owner));
	fy_session_event(s, FERRY_EVENT_OWNER);
}

/**
 * fy_session_fail() - remember why the session failed. The first error
 * wins: later ones are usually consequences of it.
 */
int fy_session_fail(ferry_session *s, int code, const char *fmt, ...)
{
	char msg[sizeof(s->errmsg)];
	bool first = false;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&s->lock);
	if (!s->stats.error) {
		s->stats.error = code;
		memcpy(s->errmsg, msg, sizeof(msg));
		first = true;
	}
	pthread_mutex_unlock(&s->lock);
	/* A later failure is usually a consequence: the log hears it as
	 * such, and the first one is not repeated. */
	if (first)
		fy_session_log(s, 0, "%s", msg);
	else
		fy_session_log(s, 2, "then: %s", msg);
	return code;
}

/**
 * fy_session_stall_fail() - see engine.h. The detection time goes into
 * the statistics only when this is the run's first failure: a stall that
 * follows another failure is its consequence.
 */
int fy_session_stall_fail(ferry_session *s, uint64_t silent_ns,
			  const char *what, const char *why)
{
	bool first;

	pthread_mutex_lock(&s->lock);
	first = !s->stats.error;
	if (first)
		s->stats.stall_detect_ms = fy_ms(silent_ns);
	pthread_mutex_unlock(&s->lock);
	return fy_session_fail(s, FERRY_ETIMEOUT, "%s: %s", what, why);
}

/**
 * fy_session_clear_error() - forget a failure that is being retried.
 */
void fy_session_clear_error(ferry_session *s)
{
	pthread_mutex_lock(&s->lock);
	s->stats.error = 0;
	s->errmsg[0] = 0;
	pthread_mutex_unlock(&s->lock);
}

/**
 * fy_session_log() - format a message for the VMM's log callback, if any.
 */
void fy_session_log(ferry_session *s, int level, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (!s->cfg.on_log)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	s->cfg.on_log(s->cfg.opaque, level, msg);
}

/**
 * fy_session_event() - deliver an event with a snapshot of the stats.
 */
void fy_session_event(ferry_session *s, enum ferry_event_kind kind)
{
	struct ferry_stats st = { FERRY_STATS_INIT };
	struct ferry_event ev;

	if (!s->cfg.on_event)
		return;
	ferry_session_stats(s, &st);
	ev.kind = kind;
	ev.state = st.state;
	ev.stats = &st;
	s->cfg.on_event(s->cfg.opaque, &ev);
}

/**
 * fy_session_count_bytes() - account memory bytes moved; called per chunk
 * by whichever thread moved them.
 */
void fy_session_count_bytes(ferry_session *s, uint64_t n)
{
	pthread_mutex_lock(&s->lock);
	s->stats.bytes += n;
	s->stats.pass_bytes += n;
	pthread_mutex_unlock(&s->lock);
}

/**
 * fy_session_progress() - periodic progress event, at most once per
 * configured period; cheap to call per chunk.
 */
void fy_session_progress(ferry_session *s)
{
	uint64_t now = fy_now_ns();

	if (now - s->t_progress_ns < (uint64_t)s->cfg.progress_ms * 1000000)
		return;
	s->t_progress_ns = now;
	fy_session_event(s, FERRY_EVENT_PROGRESS);
}

/* ---- the bounded pause ---- */

/**
 * fy_max_pause_ms() - see engine.h.
 */
uint32_t fy_max_pause_ms(const struct ferry_config *cfg, double expect_ms)
{
	double auto_ms = 4.0 * cfg->downtime_limit_ms;

	if (cfg->max_pause_ms)
		return cfg->max_pause_ms;
	if (auto_ms < 2000)
		auto_ms = 2000;
	if (auto_ms < 3 * expect_ms)
		auto_ms = 3 * expect_ms;
	return auto_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)auto_ms;
}

/* What an expired pause does: fail the run and cancel it, so that the
 * source unwinds and resumes its guest. */
static void pause_expired(ferry_session *s)
{
	char state[32];

	pthread_mutex_lock(&s->lock);
	snprintf(state, sizeof(state), "%s",
		 ferry_state_name(s->stats.state));
	pthread_mutex_unlock(&s->lock);
	/* The first failure is what the run reports: the cancel that
	 * follows only stops it. Stopped: the final pass or the state was
	 * still going (either side may be slow); later, the destination's
	 * answer was. */
	fy_session_fail(s, FERRY_ETIMEOUT,
			"the guest was paused for %u ms (max_pause_ms) and the destination was not ready to run it yet (%s): the migration stops and the guest resumes here",
			s->pw_ms,
			!strcmp(state, "stopped") ? "the final pass or the device state was still on its way"
						  : "no answer to the switchover yet");
	atomic_store(&s->cancel, true);
}

/* The watchdog: idle until armed, then waits for the deadline or the
 * disarm, until told to quit. */
static void *pause_watch(void *arg)
{
	ferry_session *s = arg;

	pthread_mutex_lock(&s->pw_lock);
	while (!s->pw_quit) {
		struct timespec ts;

		if (!s->pw_armed) {
			pthread_cond_wait(&s->pw_cv, &s->pw_lock);
			continue;
		}
		ts.tv_sec = (time_t)(s->pw_deadline_ns / 1000000000ull);
		ts.tv_nsec = (long)(s->pw_deadline_ns % 1000000000ull);
		if (pthread_cond_timedwait(&s->pw_cv, &s->pw_lock, &ts) !=
			    ETIMEDOUT ||
		    !s->pw_armed || s->pw_quit)
			continue;
		s->pw_armed = false;
		s->pw_firing = true;
		pthread_mutex_unlock(&s->pw_lock);
		pause_expired(s);
		pthread_mutex_lock(&s->pw_lock);
		s->pw_firing = false;
		s->pw_expired = true;
		pthread_cond_broadcast(&s->pw_cv);
	}
	pthread_mutex_unlock(&s->pw_lock);
	return NULL;
}

/* Start the thread; under pw_lock. Returns pthread_create()'s code. */
static int pause_start(ferry_session *s)
{
	int rc = 0;

	if (!s->pw_running) {
		s->pw_quit = false;
		rc = pthread_create(&s->pw_thread, NULL, pause_watch, s);
		s->pw_running = !rc;
	}
	return rc;
}

/**
 * fy_session_pause_prepare() - see engine.h.
 */
void fy_session_pause_prepare(ferry_session *s)
{
	pthread_mutex_lock(&s->pw_lock);
	(void)pause_start(s);
	pthread_mutex_unlock(&s->pw_lock);
}

/**
 * fy_session_pause_arm() - see engine.h.
 */
void fy_session_pause_arm(ferry_session *s)
{
	double expect;
	int rc;

	pthread_mutex_lock(&s->pw_lock);
	if (s->pw_armed) {
		pthread_mutex_unlock(&s->pw_lock);
		return;
	}
	pthread_mutex_lock(&s->lock);
	expect = s->stats.expected_downtime_ms;
	pthread_mutex_unlock(&s->lock);
	s->pw_ms = fy_max_pause_ms(&s->cfg, expect);
	s->pw_deadline_ns = fy_now_ns() + (uint64_t)s->pw_ms * 1000000ull;
	s->pw_expired = false;
	rc = pause_start(s);
	s->pw_armed = !rc;
	if (!rc)
		pthread_cond_signal(&s->pw_cv);
	pthread_mutex_unlock(&s->pw_lock);
	if (rc)
		fy_session_log(s, 0, "cannot start the pause's watchdog (%s): this pause is not bounded",
			       strerror(rc));
	else if (!s->cfg.max_pause_ms &&
		 s->pw_ms > 4ull * s->cfg.downtime_limit_ms && s->pw_ms > 2000)
		fy_session_log(s, 1, "the pause may last up to %u ms: 3 x the %.0f ms predicted for it, above the %u ms downtime limit",
			       s->pw_ms, expect, s->cfg.downtime_limit_ms);
}

/**
 * fy_session_pause_disarm() - see engine.h.
 */
bool fy_session_pause_disarm(ferry_session *s)
{
	bool expired;

	pthread_mutex_lock(&s->pw_lock);
	/* An expiry under way is waited for: the caller then unwinds (and
	 * sends ABORT) with the run's failure and its message already set. */
	while (s->pw_firing)
		pthread_cond_wait(&s->pw_cv, &s->pw_lock);
	expired = s->pw_expired;
	s->pw_expired = false;
	if (s->pw_armed) {
		s->pw_armed = false;
		pthread_cond_signal(&s->pw_cv);
	}
	pthread_mutex_unlock(&s->pw_lock);
	return expired;
}

/**
 * fy_session_pause_retire() - see engine.h.
 */
void fy_session_pause_retire(ferry_session *s)
{
	bool running;

	pthread_mutex_lock(&s->pw_lock);
	s->pw_armed = false;
	s->pw_expired = false;
	s->pw_quit = true;
	running = s->pw_running;
	s->pw_running = false;
	pthread_cond_signal(&s->pw_cv);
	pthread_mutex_unlock(&s->pw_lock);
	if (running)
		pthread_join(s->pw_thread, NULL);
}
