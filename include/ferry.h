/* SPDX-License-Identifier: MIT */
/*
 * ferry.h - the public interface of libferry, a live-migration engine.
 *
 * This header is the specification of the library: what is not declared
 * here is not API. A VMM embeds libferry by describing its guest memory as
 * regions, handing over a table of callbacks (pause, resume, save and load
 * device state, ...) and calling ferry_session_send() on the source or
 * ferry_session_receive() on the destination.
 *
 * Conventions
 * - Every function that can fail returns int: 0 on success, a negative
 *   errno-style code on failure (-EINVAL, -ECONNRESET, ...) or one of the
 *   FERRY_E* codes below. ferry_strerror() names any of them and
 *   ferry_session_errmsg() gives the detail of the last failure.
 * - The library never exits, aborts or prints. Diagnostics go to the log
 *   callback of the config, if one is set.
 * - Ownership: the session copies everything passed in a config or region
 *   description except the memory itself, which stays owned by the VMM and
 *   must stay mapped until the session is destroyed.
 * - Thread safety: a session is driven by one thread (the one calling
 *   send/receive). ferry_session_cancel(), ferry_session_stats() and
 *   ferry_session_errmsg() may be called from any thread at any time.
 */
#ifndef FERRY_H
#define FERRY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define FERRY_API __attribute__((visibility("default")))
#else
#define FERRY_API
#endif

#define FERRY_VERSION_STRING "0.1.0"

/* Errors specific to ferry (errno values are used where they fit). */
enum {
	FERRY_EPROTO = -1000,	 /* the peer broke the protocol */
	FERRY_ECHECKSUM = -1001, /* a record failed its checksum */
	FERRY_EVERSION = -1002,	 /* no common protocol version */
	FERRY_EMISMATCH = -1003, /* memory layout differs between the sides */
	FERRY_EPEER = -1004,	 /* the peer reported an error */
	FERRY_ECANCELED = -1005, /* cancelled by the user */
	FERRY_ETIMEOUT = -1006,	 /* did not converge within its limits */
	FERRY_EVMM = -1007,	 /* a VMM callback failed */
	FERRY_EUNCONFIRMED = -1008, /* released, but the destination never
				       confirmed it runs: neither side runs
				       the guest until an operator decides */
	FERRY_EUNKNOWN = -1009,	    /* unknown mandatory record */
};

/**
 * ferry_strerror() - name an error code.
 * @err: a negative code returned by any ferry function.
 *
 * Return: a static string; never NULL.
 */
FERRY_API const char *ferry_strerror(int err);

/* What happens when precopy does not converge within its limits. */
enum ferry_timeout_strategy {
	FERRY_TIMEOUT_CANCEL = 0,     /* give up; the source keeps running */
	FERRY_TIMEOUT_SWITCHOVER = 1, /* pause anyway and finish */
};

/* Where a migration is, as reported by events and statistics. */
enum ferry_state {
	FERRY_STATE_NONE = 0,
	FERRY_STATE_CONNECTING,	 /* opening the connection / waiting for one */
	FERRY_STATE_NEGOTIATING, /* hello and configuration */
	FERRY_STATE_PRECOPY,	 /* memory passes while the guest runs */
	FERRY_STATE_STOPPED,	 /* guest paused: final pass and state */
	FERRY_STATE_SWITCHOVER,	 /* ready/released/running handshake */
	FERRY_STATE_COMPLETED,	 /* the destination runs the guest */
	FERRY_STATE_FAILED,	 /* failed; see the error */
	FERRY_STATE_CANCELLED,	 /* cancelled; the source runs the guest */
};

/**
 * ferry_state_name() - a short lowercase name for a state ("precopy").
 */
FERRY_API const char *ferry_state_name(enum ferry_state state);

enum ferry_event_kind {
	FERRY_EVENT_STATE = 1, /* the state changed */
	FERRY_EVENT_PASS = 2,  /* a memory pass ended */
	FERRY_EVENT_PROGRESS = 3, /* periodic progress within a pass */
};

/* Statistics of one session. All times are milliseconds. */
struct ferry_stats {
	enum ferry_state state;
	int error;		  /* 0, or the code the session ended with */
	uint32_t pass;		  /* current or last pass, 1-based */
	uint64_t bytes;		  /* payload bytes moved so far (memory+state) */
	uint64_t wire_bytes;	  /* bytes on the wire including framing */
	uint64_t pass_bytes;	  /* memory bytes sent in the current pass */
	uint64_t pass_total;	  /* memory bytes planned for the current pass */
	uint64_t dirty_bytes;	  /* dirty bytes found at the last scan */
	uint64_t ram_bytes;	  /* total guest memory */
	double mb_per_s;	  /* measured rate of the last pass (10^6 B/s) */
	double dirty_mb_per_s;	  /* measured dirty rate (10^6 B/s) */
	double expected_downtime_ms; /* prediction at the last decision */
	double total_ms;	  /* start to completion (or now) */
	double downtime_ms;	  /* pause to resume, see docs/protocol.md */
	double final_pass_ms;	  /* the part of downtime spent on the last pass */
	double state_ms;	  /* ... saving, sending and loading state */
	double switchover_ms;	  /* ... the ready/released/running handshake */
	uint32_t version;	  /* negotiated protocol version */
	uint64_t capabilities;	  /* negotiated capabilities */
	char peer_note[256];	  /* destination's note sent with "running" */
};

struct ferry_event {
	enum ferry_event_kind kind;
	enum ferry_state state;
	const struct ferry_stats *stats; /* valid during the call only */
};

/* A buffer the library owns and the VMM fills in save_state(). */
struct ferry_buf;

/**
 * ferry_buf_append() - append bytes to a library-owned buffer.
 *
 * Return: 0, or -ENOMEM.
 */
FERRY_API int ferry_buf_append(struct ferry_buf *buf, const void *data,
			       size_t len);

/*
 * Callbacks the VMM provides. Each returns 0 or a negative code; a failing
 * callback ends the migration with FERRY_EVMM and its code in the message.
 * All are called from the thread that runs send/receive. @opaque is the
 * pointer given in the config.
 */
struct ferry_vmm_ops {
	/* Source: stop every vCPU; memory must not change after it returns. */
	int (*pause)(void *opaque);
	/* Source after a failure before "released", destination after
	 * "released": let the vCPUs run. */
	int (*resume)(void *opaque);
	/* Source, guest paused: serialise vCPU and device state into @out. */
	int (*save_state)(void *opaque, struct ferry_buf *out);
	/* Destination, all memory received: load the state. */
	int (*load_state)(void *opaque, const void *data, size_t len);
	/* Source, optional: give up external resources (TCP connections,
	 * leases) just before the point of no return. */
	int (*release)(void *opaque);
	/* Source, optional: take them back if the handover failed. */
	int (*reacquire)(void *opaque);
	/* Destination, optional: take over external resources before
	 * resume. */
	int (*acquire)(void *opaque);
	/* Optional, for FERRY_DIRTY_BITMAP: fill @bitmap (one bit per page
	 * of @region, bit set = written since the last call) and clear the
	 * VMM's log. @bitmap holds ceil(pages/64) words, zeroed by the
	 * library. */
	int (*get_dirty_bitmap)(void *opaque, uint32_t region,
				uint64_t *bitmap, size_t pages);
	/* Destination, optional: after resume, write a short note (e.g. a
	 * verification result) that travels back to the source with the
	 * "running" message and appears in its stats as peer_note. */
	void (*running_note)(void *opaque, char *note, size_t len);
};

enum ferry_dirty_mode {
	FERRY_DIRTY_AUTO = 0,	/* userfaultfd if it works, else bitmap */
	FERRY_DIRTY_UFFD = 1,	/* userfaultfd write-protect + PAGEMAP_SCAN */
	FERRY_DIRTY_BITMAP = 2, /* the VMM's get_dirty_bitmap() */
};

typedef void (*ferry_event_fn)(void *opaque, const struct ferry_event *ev);
typedef void (*ferry_log_fn)(void *opaque, int level, const char *msg);

/* Session configuration. Always initialise with ferry_config_init(). */
struct ferry_config {
	uint32_t struct_size;	     /* set by ferry_config_init() */
	const struct ferry_vmm_ops *ops; /* required; copied */
	void *opaque;		     /* passed to every callback */
	ferry_event_fn on_event;     /* optional */
	ferry_log_fn on_log;	     /* optional; level 0 error .. 3 debug */
	uint32_t downtime_limit_ms;  /* default 300 */
	uint32_t max_passes;	     /* default 30 (precopy passes) */
	uint32_t max_precopy_ms;     /* default 0 = no time limit */
	enum ferry_timeout_strategy timeout_strategy; /* default CANCEL */
	enum ferry_dirty_mode dirty_mode;	      /* default AUTO */
	uint32_t chunk_bytes;	     /* memory record size, default 1 MiB */
	uint32_t version_max;	     /* cap the protocol version (0 = ours) */
	uint64_t capabilities;	     /* capabilities offered, default all */
	uint32_t progress_ms;	     /* progress event period, default 200 */
};

/**
 * ferry_config_init() - fill a config with defaults.
 */
FERRY_API void ferry_config_init(struct ferry_config *cfg);

typedef struct ferry_session ferry_session;

/**
 * ferry_session_new() - create a session.
 * @cfg: the configuration; copied.
 * @out: receives the session.
 *
 * Return: 0, -EINVAL for a bad config, -ENOMEM.
 */
FERRY_API int ferry_session_new(const struct ferry_config *cfg,
				ferry_session **out);

/**
 * ferry_session_destroy() - free a session. NULL is harmless. Must not race
 * with send/receive still running on it.
 */
FERRY_API void ferry_session_destroy(ferry_session *s);

/* A region of guest memory, owned and mapped by the VMM. */
struct ferry_region {
	uint64_t gpa;	/* guest-physical address */
	uint64_t size;	/* bytes, a multiple of the page size */
	void *host;	/* where the VMM maps it */
	int fd;		/* backing fd (memfd, hugetlbfs) or -1 */
	uint64_t fd_offset;
	const char *name; /* copied; shown in errors ("ram0") */
};

/**
 * ferry_session_add_region() - describe one region of guest memory.
 *
 * Regions must be added before send/receive, in the same order and with the
 * same sizes on both sides.
 *
 * Return: 0, -EINVAL (unaligned, overlapping, too many), -ENOMEM.
 */
FERRY_API int ferry_session_add_region(ferry_session *s,
				       const struct ferry_region *r);

/**
 * ferry_session_send() - migrate the guest to @uri ("tcp:HOST:PORT",
 * "unix:PATH"). Blocks until the migration ends.
 *
 * Return: 0 when the destination runs the guest. On any failure before
 * the destination acknowledged "released" the source guest has been resumed
 * with its state intact; FERRY_EUNCONFIRMED is the one failure after it.
 */
FERRY_API int ferry_session_send(ferry_session *s, const char *uri);

/**
 * ferry_session_receive() - listen on @uri, accept one migration and run
 * the guest when it completes. Blocks until then.
 *
 * Return: 0 when the guest runs here; on failure the guest never ran here.
 */
FERRY_API int ferry_session_receive(ferry_session *s, const char *uri);

/**
 * ferry_session_cancel() - ask the running send or receive to stop; a
 * cancel made before it starts stops it as soon as it does. The request is
 * cleared when the run ends. Safe from any thread and from signal
 * handlers. The source resumes its guest unless the point of no return was
 * passed.
 */
FERRY_API void ferry_session_cancel(ferry_session *s);

/**
 * ferry_session_stats() - copy the current statistics. Any thread.
 */
FERRY_API void ferry_session_stats(ferry_session *s, struct ferry_stats *out);

/**
 * ferry_session_errmsg() - the detail of the session's last error, or "".
 * Copies into @buf (NUL-terminated) and returns @buf. Any thread.
 */
FERRY_API const char *ferry_session_errmsg(ferry_session *s, char *buf,
					   size_t len);

/* Capabilities (bit numbers in ferry_config.capabilities). */
#define FERRY_CAP_DATA_CHECKSUM (1ull << 0) /* checksums cover page data */

#ifdef __cplusplus
}
#endif
#endif /* FERRY_H */
