// SPDX-License-Identifier: MIT
/*
 * config.c - a session's configuration: its defaults, and the check that
 * says, in words, why a config is refused (there is no session yet to hold
 * the message, so it goes to the caller's buffer and the log callback).
 */
#include <assert.h>
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "memory/memory.h"
#include "migrate/engine.h"
#include "transport/tls_aead.h"
#include "wire/wire.h"

/* ferry.h's engine numbers are the transport's, passed through as they are. */
static_assert(FERRY_TLS_ENGINE_AUTO == FY_AEAD_AUTO &&
		      FERRY_TLS_ENGINE_GNUTLS == FY_AEAD_GNUTLS &&
		      FERRY_TLS_ENGINE_IPSEC_MB == FY_AEAD_IPSEC_MB &&
		      FERRY_TLS_ENGINE_KTLS == FY_AEAD_KTLS,
	      "one numbering of the TLS engines");

/**
 * fy_tls_config_from() - the TLS part of @cfg, as the transport layer
 * takes it (the pointers are @cfg's).
 */
void fy_tls_config_from(struct fy_tls_config *t, const struct ferry_config *cfg)
{
	*t = (struct fy_tls_config){
		.ca_file = cfg->tls_ca_file,
		.cert_file = cfg->tls_cert_file,
		.key_file = cfg->tls_key_file,
		.crl_file = cfg->tls_crl_file,
		.peer_names = cfg->tls_peer_names,
		.psk_file = cfg->tls_psk_file,
		.psk_identity = cfg->tls_psk_identity,
		.priority = cfg->tls_priority,
		.engine = (int)cfg->tls_engine,
	};
}

FERRY_API void ferry_config_init(struct ferry_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->struct_size = sizeof(*cfg);
	cfg->downtime_limit_ms = 300;
	cfg->max_passes = 30;
	cfg->timeout_strategy = FERRY_TIMEOUT_CANCEL;
	cfg->dirty_mode = FERRY_DIRTY_AUTO;
	cfg->chunk_bytes = 1u << 20;
	cfg->capabilities = FERRY_CAP_ALL;
	cfg->progress_ms = 200;
	cfg->connections = 1;
	cfg->auto_converge = true;
	cfg->throttle_initial_pct = 20;
	cfg->throttle_step_pct = 10;
	cfg->throttle_max_pct = 99;
	cfg->lane_poll_us = FERRY_LANE_POLL_US;
}

static int refuse(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Say why in @err; -EINVAL. */
static int refuse(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* A value of @name outside @lo..@hi. */
#define OUT_OF(name, v, lo, hi)                                              \
	refuse(err, errlen, "%s is %lld: it must be from %lld to %lld", name, \
	       (long long)(v), (long long)(lo), (long long)(hi))

/* The numbers: each within its range. */
static int check_numbers(const struct ferry_config *cfg, char *err,
			 size_t errlen)
{
	const uint32_t chunk_max = (FY_REC_MAX_BODY - FY_MEM_HDR_SIZE) &
				   ~(FY_PAGE_SIZE - 1);

	if (cfg->chunk_bytes < FY_PAGE_SIZE || cfg->chunk_bytes > chunk_max)
		return OUT_OF("chunk_bytes", cfg->chunk_bytes, FY_PAGE_SIZE,
			      chunk_max);
	if (cfg->chunk_bytes % FY_PAGE_SIZE)
		return refuse(err, errlen,
			      "chunk_bytes is %u: it must be a multiple of %u",
			      cfg->chunk_bytes, FY_PAGE_SIZE);
	if (cfg->connections < 1 || cfg->connections > FY_MAX_CHANNELS)
		return OUT_OF("connections", cfg->connections, 1,
			      FY_MAX_CHANNELS);
	if (cfg->io_threads > FY_MAX_CHANNELS)
		return OUT_OF("io_threads (0: the default)", cfg->io_threads,
			      0, FY_MAX_CHANNELS);
	if (cfg->window > FY_MAX_WINDOW)
		return OUT_OF("window (0: the default)", cfg->window, 0,
			      FY_MAX_WINDOW);
	if (cfg->throttle_max_pct > 99)
		return OUT_OF("throttle_max_pct", cfg->throttle_max_pct, 0, 99);
	if (cfg->throttle_initial_pct > cfg->throttle_max_pct)
		return OUT_OF("throttle_initial_pct", cfg->throttle_initial_pct,
			      0, cfg->throttle_max_pct);
	if (cfg->throttle_step_pct > cfg->throttle_max_pct)
		return OUT_OF("throttle_step_pct", cfg->throttle_step_pct, 0,
			      cfg->throttle_max_pct);
	if (cfg->stall_timeout_ms &&
	    (cfg->stall_timeout_ms < FERRY_STALL_TIMEOUT_MIN_MS ||
	     cfg->stall_timeout_ms > FERRY_STALL_TIMEOUT_MAX_MS))
		return refuse(err, errlen,
			      "stall_timeout_ms is %u: it must be from %d (0.5 s) to %d (1 h), or 0 for the default (%d)",
			      cfg->stall_timeout_ms, FERRY_STALL_TIMEOUT_MIN_MS,
			      FERRY_STALL_TIMEOUT_MAX_MS, FERRY_STALL_TIMEOUT_MS);
	if (cfg->lane_cpu < FERRY_LANE_CPU_NONE || cfg->lane_cpu > CPU_SETSIZE)
		return refuse(err, errlen,
			      "lane_cpu is %d: it must be %d (auto), %d (none) or a CPU's number plus one, up to %d",
			      cfg->lane_cpu, FERRY_LANE_CPU_AUTO,
			      FERRY_LANE_CPU_NONE, CPU_SETSIZE);
	if (cfg->lane_poll_us > FERRY_LANE_POLL_MAX_US)
		return refuse(err, errlen,
			      "lane_poll_us is %u: it must be from 0 (no polling) to %d (10 ms)",
			      cfg->lane_poll_us, FERRY_LANE_POLL_MAX_US);
	if (cfg->version_max &&
	    (cfg->version_max < FY_PROTO_VERSION_MIN ||
	     cfg->version_max > FY_PROTO_VERSION_MAX))
		return OUT_OF("version_max (0: the newest)", cfg->version_max,
			      FY_PROTO_VERSION_MIN, FY_PROTO_VERSION_MAX);
	if (cfg->version_min &&
	    (cfg->version_min < FY_PROTO_VERSION_MIN ||
	     cfg->version_min > (cfg->version_max ? cfg->version_max
						  : FY_PROTO_VERSION_MAX)))
		return OUT_OF("version_min (0: the oldest)", cfg->version_min,
			      FY_PROTO_VERSION_MIN,
			      cfg->version_max ? cfg->version_max
					       : FY_PROTO_VERSION_MAX);
	return 0;
}

/* Every member after struct_size is one callback slot of the same size,
 * so a size is valid when it ends on a slot boundary. */
static_assert((sizeof(struct ferry_vmm_ops) -
	       offsetof(struct ferry_vmm_ops, pause)) %
			      sizeof(((struct ferry_vmm_ops *)0)->pause) == 0,
	      "ferry_vmm_ops is struct_size and whole callback slots");

/**
 * fy_ops_copy() - copy the VMM's callback table into @dst by its
 * struct_size: a shorter (older) table leaves the callbacks it lacks
 * NULL; a longer (newer) one is taken only when every slot this library
 * does not know is NULL. @dst->struct_size becomes the library's size.
 *
 * Return: 0, or -EINVAL with the reason in @err.
 */
int fy_ops_copy(struct ferry_vmm_ops *dst, const struct ferry_vmm_ops *src,
		char *err, size_t errlen)
{
	const size_t slot = sizeof(src->pause);
	const size_t first = offsetof(struct ferry_vmm_ops, pause);
	const size_t least = offsetof(struct ferry_vmm_ops, resume) + slot;
	const uint8_t *raw = (const uint8_t *)src;
	size_t size = src->struct_size;

	memset(dst, 0, sizeof(*dst));
	if (!size)
		return refuse(err, errlen,
			      "ops->struct_size is 0: set it to sizeof(struct ferry_vmm_ops) (FERRY_VMM_OPS_INIT in an initialiser)");
	if (size < least || size > FERRY_VMM_OPS_MAX_SIZE ||
	    (size - first) % slot)
		return refuse(err, errlen,
			      "ops->struct_size is %zu: not the size of any struct ferry_vmm_ops (%zu to %d bytes, whole callbacks up to resume at least); set it to sizeof(struct ferry_vmm_ops)",
			      size, least, FERRY_VMM_OPS_MAX_SIZE);
	/* A newer VMM's callback that this library would never call is a
	 * request it cannot honour, not something to ignore. */
	for (size_t at = sizeof(*dst); at < size; at += slot)
		for (size_t b = 0; b < slot; b++)
			if (raw[at + b])
				return refuse(err, errlen,
					      "ops sets callback slot %zu (pause is 0; byte %zu of %zu), which this library (%zu bytes, ferry %s) does not know",
					      (at - first) / slot, at, size,
					      sizeof(*dst), FERRY_VERSION_STRING);
	memcpy(dst, src, size < sizeof(*dst) ? size : sizeof(*dst));
	dst->struct_size = sizeof(*dst);
	return 0;
}

/* The choices: known values, and what they need. */
static int check_choices(const struct ferry_config *cfg,
			 const struct ferry_vmm_ops *ops, char *err,
			 size_t errlen)
{
	int lo, hi;

	if ((unsigned)cfg->timeout_strategy > FERRY_TIMEOUT_POSTCOPY)
		return OUT_OF("timeout_strategy", cfg->timeout_strategy,
			      FERRY_TIMEOUT_CANCEL, FERRY_TIMEOUT_POSTCOPY);
	if ((unsigned)cfg->postcopy > FERRY_POSTCOPY_AFTER)
		return OUT_OF("postcopy", cfg->postcopy, FERRY_POSTCOPY_OFF,
			      FERRY_POSTCOPY_AFTER);
	if (cfg->postcopy_after_passes &&
	    cfg->postcopy_after_passes > (cfg->max_passes ? cfg->max_passes : 30))
		return refuse(err, errlen,
			      "postcopy_after_passes is %u: it must be from 1 to max_passes (%u; 0 = 1)",
			      cfg->postcopy_after_passes,
			      cfg->max_passes ? cfg->max_passes : 30);
	if (cfg->max_pause_ms && cfg->max_pause_ms < cfg->downtime_limit_ms)
		return refuse(err, errlen,
			      "max_pause_ms is %u: it must be at least downtime_limit_ms (%u), or 0 for 4 x that (at least 2,000)",
			      cfg->max_pause_ms, cfg->downtime_limit_ms);
	if (cfg->local_fds && (cfg->tls_ca_file || cfg->tls_cert_file ||
			       cfg->tls_psk_file))
		return refuse(err, errlen,
			      "local_fds with TLS: a local migration passes the memory's descriptors beside the stream, between processes of one host, which TLS does not protect; drop one of the two");
	if (cfg->local_fds && cfg->postcopy != FERRY_POSTCOPY_OFF)
		return refuse(err, errlen,
			      "local_fds with postcopy: a local migration passes the memory itself, so nothing is left to follow after the switch");
	if (cfg->tls_engine > FERRY_TLS_ENGINE_KTLS)
		return refuse(err, errlen,
			      "tls_engine is %u: it must be FERRY_TLS_ENGINE_AUTO (0), FERRY_TLS_ENGINE_GNUTLS (1), FERRY_TLS_ENGINE_IPSEC_MB (2) or FERRY_TLS_ENGINE_KTLS (3)",
			      cfg->tls_engine);
	if ((unsigned)cfg->dirty_mode > FERRY_DIRTY_BITMAP)
		return OUT_OF("dirty_mode", cfg->dirty_mode, FERRY_DIRTY_AUTO,
			      FERRY_DIRTY_BITMAP);
	if (cfg->dirty_mode == FERRY_DIRTY_BITMAP && !ops->get_dirty_bitmap)
		return refuse(err, errlen,
			      "dirty_mode is FERRY_DIRTY_BITMAP, but ops has no get_dirty_bitmap");
	if ((unsigned)cfg->compress > FERRY_COMPRESS_ZSTD)
		return OUT_OF("compress", cfg->compress, FERRY_COMPRESS_NONE,
			      FERRY_COMPRESS_ZSTD);
	fy_codec_levels((enum fy_codec_kind)cfg->compress, &lo, &hi);
	if (cfg->compress_level &&
	    (cfg->compress_level < lo || cfg->compress_level > hi))
		return refuse(err, errlen,
			      "compress_level is %d: for %s it must be from %d to %d (0: the default)",
			      cfg->compress_level,
			      fy_codec_name((enum fy_codec_kind)cfg->compress),
			      lo, hi);
	if (cfg->capabilities & ~FERRY_CAP_ALL)
		return refuse(err, errlen,
			      "capabilities 0x%llx has bits this library does not know (it knows 0x%llx)",
			      (unsigned long long)cfg->capabilities,
			      (unsigned long long)FERRY_CAP_ALL);
	/* The kernel judges the name, but cuts one of 16 or more bytes short
	 * without a word. */
	if (cfg->congestion_control &&
	    (!cfg->congestion_control[0] ||
	     strlen(cfg->congestion_control) > FERRY_CONGESTION_CONTROL_MAX))
		return refuse(err, errlen,
			      "congestion_control \"%.40s\": a name of 1 to %d characters, or NULL",
			      cfg->congestion_control,
			      FERRY_CONGESTION_CONTROL_MAX);
	return 0;
}

FERRY_API int ferry_config_check(const struct ferry_config *cfg, char *err,
				 size_t errlen)
{
	struct ferry_vmm_ops ops;
	int rc;

	if (err && errlen)
		err[0] = 0;
	if (!cfg)
		return refuse(err, errlen, "no config");
	if (cfg->struct_size != sizeof(*cfg))
		return refuse(err, errlen,
			      "struct_size is %u, this library's ferry_config has %zu: initialise it with ferry_config_init()",
			      cfg->struct_size, sizeof(*cfg));
	if (!cfg->ops)
		return refuse(err, errlen, "ops is NULL: the VMM's callbacks are required");
	rc = fy_ops_copy(&ops, cfg->ops, err, errlen);
	if (rc)
		return rc;
	if (!ops.resume)
		return refuse(err, errlen,
			      "ops has no resume: both a source and a destination need it");
	rc = check_numbers(cfg, err, errlen);
	if (!rc)
		rc = check_choices(cfg, &ops, err, errlen);
	if (!rc) {
		struct fy_tls_config tls;

		fy_tls_config_from(&tls, cfg);
		rc = fy_tls_config_check(&tls, err, errlen);
	}
	return rc;
}

/**
 * fy_session_check_role() - the callbacks a role needs: a source pauses
 * and saves state, a destination loads it. Fails the session with the
 * missing one named.
 *
 * Return: 0, or -EINVAL.
 */
int fy_session_check_role(ferry_session *s, bool source)
{
	const struct ferry_vmm_ops *o = &s->ops;
	const char *missing = NULL;

	if (source)
		missing = !o->pause ? "pause" : !o->save_state ? "save_state" : NULL;
	else
		missing = !o->load_state ? "load_state" : NULL;
	if (!missing)
		return 0;
	return fy_session_fail(s, -EINVAL, "ops has no %s: a %s needs it",
			       missing, source ? "source" : "destination");
}
