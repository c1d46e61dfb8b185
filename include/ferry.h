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

#include <stdbool.h>
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

#define FERRY_VERSION_STRING "0.2.0"

/* Errors specific to ferry (errno values are used where they fit). */
enum {
	FERRY_EPROTO = -1000,	 /* the peer broke the protocol */
	FERRY_ECHECKSUM = -1001, /* a record failed its checksum */
	FERRY_EVERSION = -1002,	 /* no common protocol version */
	FERRY_EMISMATCH = -1003, /* memory layout differs between the sides */
	FERRY_EPEER = -1004,	 /* the peer reported an error */
	FERRY_ECANCELED = -1005, /* cancelled by the user */
	FERRY_ETIMEOUT = -1006,	 /* a time limit ran out: convergence,
				    max_pause_ms, or stall_timeout_ms */
	FERRY_EVMM = -1007,	 /* a VMM callback failed */
	FERRY_EUNCONFIRMED = -1008, /* released, but the destination never
				       confirmed it runs: neither side runs
				       the guest until an operator decides */
	FERRY_EUNKNOWN = -1009,	    /* unknown mandatory record */
	FERRY_EPOSTCOPY = -1010,    /* postcopy ended after the transition
				       without completing: the guest may have
				       run at the destination (the message
				       says what is where, and what running
				       the source's copy risks) */
	FERRY_ELAST = FERRY_EPOSTCOPY, /* the lowest code above (not an
					  error of its own): a new code
					  moves it */
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
	FERRY_TIMEOUT_POSTCOPY = 2,   /* switch to postcopy (when the
					 destination offers it; else as
					 SWITCHOVER) */
};

/* When the source switches a precopy migration to postcopy: the guest
 * resumes at the destination before all of its memory is there, and the
 * rest follows on demand and in the background (docs/api-guide.md,
 * "Postcopy"). Needs a destination that offers it (FERRY_CAP_POSTCOPY);
 * with one that does not, the migration stays precopy and the log says
 * why. */
enum ferry_postcopy {
	FERRY_POSTCOPY_OFF = 0,	  /* never (ferry_session_postcopy() still
				     may, when both sides offer it) */
	FERRY_POSTCOPY_AUTO = 1,  /* when precopy cannot meet the downtime
				     limit: a second into pass 1 the guest
				     writes at half the link's rate or more
				     (the pass is cut there), two passes in
				     a row do not halve what is left, or
				     max_passes / max_precopy_ms reached */
	FERRY_POSTCOPY_AFTER = 2, /* after postcopy_after_passes passes */
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
	FERRY_STATE_POSTCOPY,	 /* the guest runs at the destination while
				    its memory still arrives on demand (a
				    lazy restore from a file; postcopy, on
				    both sides) */
	FERRY_STATE_POSTCOPY_PAUSED, /* postcopy, the link is gone: the
				    destination's vCPUs that need a missing
				    page wait, the source stays paused;
				    ferry_session_recover() goes on */
	FERRY_STATE_COUNT,	 /* how many states there are; not a state */
};

/**
 * ferry_state_name() - a short lowercase name for a state ("precopy").
 */
FERRY_API const char *ferry_state_name(enum ferry_state state);

/*
 * Who may run the guest (docs/api-guide.md, "Who owns the guest"). It
 * changes at one point only, the point of no return: the source's sending
 * of "released" (a snapshot's rename, when the file takes the guest over),
 * the destination's running of the guest. "destination" includes "may
 * have run there": a source that reports it must not resume the guest on
 * its own.
 */
enum ferry_owner {
	FERRY_OWNER_NONE = 0,	     /* this session knows of no guest: a
					destination before a source reached
					it, a restore before its file opened */
	FERRY_OWNER_SOURCE = 1,	     /* the source's copy is the guest */
	FERRY_OWNER_DESTINATION = 2, /* the destination's (or the snapshot
					file's) copy is the guest */
};

/**
 * ferry_owner_name() - "source", "destination" or "none" (also for a value
 * outside the enum): the names the JSON reports use.
 */
FERRY_API const char *ferry_owner_name(enum ferry_owner owner);

enum ferry_event_kind {
	FERRY_EVENT_STATE = 1, /* the state changed */
	FERRY_EVENT_PASS = 2,  /* a memory pass ended */
	FERRY_EVENT_PROGRESS = 3, /* periodic progress within a pass */
	FERRY_EVENT_THROTTLE = 4, /* auto-converge changed the vCPU throttle */
	FERRY_EVENT_LISTENING = 5, /* destination: listening, at
				      stats->listen_uri (the port chosen for
				      "tcp:HOST:0" included) */
	FERRY_EVENT_OWNER = 6,	   /* stats->owner changed within a run */
	/* New kinds may follow: ignore a kind you do not know. */
};

/* The longest TCP congestion control name the kernel keeps (it cuts a
 * longer one short): ferry_config.congestion_control is 1 to this many
 * bytes. */
#define FERRY_CONGESTION_CONTROL_MAX 15

/* The longest URI the library reports (ferry_stats.listen_uri), NUL
 * included. */
#define FERRY_URI_MAX 288

/*
 * Statistics of one session. All times are milliseconds.
 *
 * The struct grows: new members are added at its end, never in between.
 * The caller sets struct_size to sizeof(struct ferry_stats) as its header
 * knows it (FERRY_STATS_INIT does) before ferry_session_stats(), and the
 * library writes that much at most:
 * - a struct shorter than the library's (the program was built against an
 *   older header) receives its prefix: every member it has;
 * - a longer one (a newer header) receives the library's members, and the
 *   members after them are left as they were; struct_size then says where
 *   the library's end, so a program reads a member only when struct_size
 *   covers it;
 * - 0, a size that is not a multiple of 8 (the struct's alignment: no
 *   sizeof is), or one outside FERRY_STATS_MIN_SIZE..FERRY_STATS_MAX_SIZE
 *   is refused with -EINVAL and nothing is written.
 * On return struct_size holds the bytes written, so a struct that is
 * filled again keeps a valid size. ferry_event.stats points to the
 * library's own, whole struct: its struct_size is the library's size.
 */
struct ferry_stats {
	/* sizeof(struct ferry_stats) of the caller's header; required */
	uint32_t struct_size;
	enum ferry_state state;
	/* Who may run the guest, as this side knows it: see enum
	 * ferry_owner and docs/api-guide.md for every outcome. */
	enum ferry_owner owner;
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
	double total_ms;	  /* start to completion (or now); after a
				     postcopy, completion is the destination's
				     last page placed */
	double downtime_ms;	  /* pause to resume, see docs/stream-format.md, "Downtime" */
	double final_pass_ms;	  /* the part of downtime spent on the last pass */
	double state_ms;	  /* ... saving, sending and loading state */
	double switchover_ms;	  /* ... the ready/released/running handshake */
	uint32_t version;	  /* negotiated protocol version */
	uint64_t capabilities;	  /* negotiated capabilities */
	char peer_note[256];	  /* destination's note sent with "running" */
	uint32_t connections;	  /* data connections in use */
	uint32_t throttle_pct;	  /* vCPU throttle now applied (auto-converge) */
	uint32_t throttle_peak_pct; /* highest throttle of the session */
	/* source: TCP congestion control of the connections ("" for UNIX
	 * sockets) */
	char congestion_control[FERRY_CONGESTION_CONTROL_MAX + 1];
	/* destination: where it listens for this run ("tcp:127.0.0.1:40123",
	 * "unix:PATH", "fd:N"), set before FERRY_EVENT_LISTENING; "" before
	 * that, and for a connected fd: or a file: */
	char listen_uri[FERRY_URI_MAX];
	/* source: how dirty pages were tracked: "bitmap" (the VMM's log),
	 * "uffd" (userfaultfd write-protect + PAGEMAP_SCAN), "none"
	 * (stop-and-copy), or "" before tracking started */
	char dirty_mode[16];
	/* Snapshot files: XXH3-64 over the per-page hashes of the image
	 * (docs/stream-format.md, "Snapshot files"): what the source wrote,
	 * what the destination read. 0 when there is none. */
	uint64_t image_digest;
	/* Destination, lazy restore: pages to place, pages placed, faults a
	 * vCPU waited on, how long it waited (from the fault being read to
	 * the page placed), and the time from resume to the last page. */
	uint64_t lazy_pages;
	uint64_t lazy_placed;
	uint64_t page_faults;
	double page_wait_p50_ms;
	double page_wait_p99_ms;
	double page_wait_max_ms;
	double lazy_complete_ms;
	/* Postcopy (both sides): whether this run switched; switch (the
	 * source's POSTCOPY) to the last page placed; 4 KiB pages the
	 * destination asked for (faults) and pages the source pushed in the
	 * background; pages not at the destination yet (what a dead source
	 * leaves); recoveries after a cut. The faults and their waits are
	 * page_faults and page_wait_* above (destination). */
	bool postcopy;
	double postcopy_ms;
	uint64_t pages_requested;
	uint64_t pages_pushed;
	uint64_t pages_missing;
	uint32_t recoveries;
	/* Local migration (both sides): the memory went by fd (MEMORY_FDS);
	 * bytes and wire_bytes then count the state and the records only. */
	bool local_fds;
	/* TLS (both sides): what the connections negotiated, as GnuTLS names
	 * it: the cipher ("AES-128-GCM"), the protocol ("TLS1.3") and the
	 * key exchange ("ECDHE-RSA", "ECDHE-PSK"); "" without TLS. */
	char tls_cipher[32];
	char tls_version[16];
	char tls_kx[16];
	/* Both sides: the stall limit in force (ferry_config.stall_timeout_ms
	 * with the default applied); when the run failed because the peer
	 * fell silent, how long it had been silent when that was detected
	 * (else 0). */
	uint32_t stall_timeout_ms;
	double stall_detect_ms;
	/* Local migration (both sides): the descriptors the VMM's devices
	 * handed over by fd (DEVICE_FDS: save_fds / load_fds), e.g. the
	 * sockets of live connections; 0 when none went that way. */
	uint32_t device_fds;
	/* TLS (both sides): who sealed and opened the records of the first
	 * secured connection (ferry_config.tls_engine): "ipsec-mb 1.3.0
	 * (AVX512, VAES), ferry's records", "GnuTLS 3.7.9, ferry's
	 * records", or "GnuTLS 3.7.9, GnuTLS's records" (TLS 1.2: GnuTLS's
	 * record layer); "" without TLS. */
	char tls_engine[64];
	/* New members go here, at the end. */
};

/* Sets struct_size in an initialiser:
 * struct ferry_stats st = { FERRY_STATS_INIT }; */
#define FERRY_STATS_INIT .struct_size = sizeof(struct ferry_stats)
/* The smallest struct_size taken (struct_size, state, owner and error)
 * and the largest: anything outside is not a size. */
#define FERRY_STATS_MIN_SIZE 16
#define FERRY_STATS_MAX_SIZE 4096

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
 *
 * The table grows: new callbacks are added at its end, never in between.
 * The VMM sets struct_size to sizeof(struct ferry_vmm_ops) as its header
 * knows it (FERRY_VMM_OPS_INIT does), and the library copies that much:
 * - a table shorter than the library's (the VMM was built against an older
 *   header) is taken, and the callbacks it does not have are NULL;
 * - a longer one (a newer header) is taken when every callback this
 *   library does not know is NULL, and refused otherwise, naming the
 *   slot: the VMM asks for something this library cannot do;
 * - 0, a size that ends inside a callback, one that ends before resume
 *   (the callback every session needs), or one over
 *   FERRY_VMM_OPS_MAX_SIZE is refused by ferry_config_check() and
 *   ferry_session_new() with a message that says to set it.
 * A zero size is refused rather than read as "the oldest layout", because
 * a table with a callback the library knows but cannot see (its size says
 * it ends earlier) would silently never be called, and because a binary
 * built before the field existed has its pause pointer where the size is:
 * refusing 0 and sizes outside the range turns that into a clear error
 * instead of calls through the wrong slots.
 */
struct ferry_vmm_ops {
	/* sizeof(struct ferry_vmm_ops) of the VMM's header; required */
	uint32_t struct_size;
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
	/* Optional: the detail of the last failure of save_state or
	 * load_state, asked right after it failed; it is added to the
	 * session's message and, on a destination, to the ERROR the source
	 * receives. */
	void (*errmsg)(void *opaque, char *buf, size_t len);
	/* Source, optional, for auto-converge: hold every vCPU off the CPU
	 * for @percent (0..99) of its time until the next call; 0 lifts the
	 * throttle. The library always lifts a throttle it set before the
	 * session ends (after pausing the guest when it hands it over). */
	int (*throttle)(void *opaque, uint32_t percent);
	/* Source, optional, local migration only (docs/api-guide.md,
	 * "Device descriptors"): right after pause, before save_state, on a
	 * session whose memory goes by fd (stats.local_fds) and whose
	 * destination offers FERRY_CAP_DEVICE_FDS (stats.capabilities; both
	 * are known when pause is called, so the VMM can tell there whether
	 * this is such a handoff). Fill @fds with at most @max
	 * (FERRY_DEVICE_FDS_MAX) descriptors and set *@n; they travel over
	 * the UNIX connection (SCM_RIGHTS) and the destination's load_fds
	 * receives duplicates of them, in the same order. The VMM keeps
	 * owning its descriptors (the library never closes them) and must
	 * not read or write them until it resumes here (a failure) or for
	 * good: after the migration succeeded, the destination owns what
	 * they refer to. *@n = 0 is allowed. */
	int (*save_fds)(void *opaque, int *fds, size_t max, size_t *n);
	/* Destination, optional (offering FERRY_CAP_DEVICE_FDS needs it):
	 * the source's descriptors, in its order, before load_state. On
	 * success the VMM owns them (@fds itself is the library's, valid
	 * during the call); on failure the library closes them. An attempt
	 * that fails later leaves them with the VMM, which closes its
	 * copies: closing a duplicate changes nothing for the source. */
	int (*load_fds)(void *opaque, const int *fds, size_t n);
	/* New callbacks go here, at the end. */
};

/* Sets struct_size in an initialiser:
 * static const struct ferry_vmm_ops ops = { FERRY_VMM_OPS_INIT, .pause = ... }; */
#define FERRY_VMM_OPS_INIT .struct_size = sizeof(struct ferry_vmm_ops)
/* The largest struct_size taken: anything above is not a size. */
#define FERRY_VMM_OPS_MAX_SIZE 4096

/* Compression of memory records; used only when both sides offer it. */
enum ferry_compress {
	FERRY_COMPRESS_NONE = 0,
	FERRY_COMPRESS_LZ4 = 1,
	FERRY_COMPRESS_ZSTD = 2,
};

enum ferry_dirty_mode {
	FERRY_DIRTY_AUTO = 0,	/* the VMM's bitmap if it has one, else
				   userfaultfd, else stop-and-copy */
	FERRY_DIRTY_UFFD = 1,	/* userfaultfd write-protect + PAGEMAP_SCAN */
	FERRY_DIRTY_BITMAP = 2, /* the VMM's get_dirty_bitmap() */
};

typedef void (*ferry_event_fn)(void *opaque, const struct ferry_event *ev);
typedef void (*ferry_log_fn)(void *opaque, int level, const char *msg);

/* Session configuration. Always initialise with ferry_config_init(). */
struct ferry_config {
	uint32_t struct_size;	     /* set by ferry_config_init() */
	const struct ferry_vmm_ops *ops; /* required; copied (its
					    struct_size bytes) */
	void *opaque;		     /* passed to every callback */
	ferry_event_fn on_event;     /* optional */
	ferry_log_fn on_log;	     /* optional; level 0 error .. 3 debug */
	uint32_t downtime_limit_ms;  /* default 300; 0 = never predicted to
					fit: passes go on to max_passes or
					max_precopy_ms */
	uint32_t max_passes;	     /* default 30 (precopy passes); 0 = 30 */
	uint32_t max_precopy_ms;     /* default 0 = no time limit */
	enum ferry_timeout_strategy timeout_strategy; /* default CANCEL */
	enum ferry_dirty_mode dirty_mode;	      /* default AUTO */
	uint32_t chunk_bytes;	     /* memory record size, default 1 MiB;
					4 KiB .. 64 MiB - 4 KiB, a multiple
					of 4 KiB */
	uint32_t version_min;	     /* refuse older peers (0 = the oldest
					this library speaks) */
	uint32_t version_max;	     /* cap the protocol version (0 = the
					newest); both within the library's
					range, min <= max */
	uint64_t capabilities;	     /* FERRY_CAP_* masks offered, default
					all; unknown bits are refused */
	uint32_t progress_ms;	     /* progress event period, default 200;
					0 = 200 */
	uint32_t connections;	     /* connections, 1..64, default 1 (the
					main one; more add data connections);
					0 is refused */
	const char *record_stream;   /* source: also write the main connection's
					bytes to this file (copied); forces a
					single connection */
	enum ferry_compress compress; /* default none; a chunk that does not
					 shrink is sent raw */
	int compress_level;	     /* 0 = the codec's default; else lz4
					-65537..12, zstd its min..max level;
					with no compression only 0 */
	uint32_t window;	     /* chunks in flight per connection
					(socket buffering and queue depth),
					0..64; 0 = the measured default: 1
					when both ends share the host, else
					2 */
	uint64_t max_bandwidth;	     /* source: cap on bytes per second sent,
					all connections together and every
					pass, the final one included (models
					a slower link); 0 = no cap */
	bool auto_converge;	     /* default true: when passes stop shrinking,
					throttle the vCPUs through
					ops->throttle (if the VMM has one) */
	uint32_t throttle_initial_pct; /* first throttle, default 20; at most
					  throttle_max_pct */
	uint32_t throttle_step_pct;  /* added at each step, default 10; at
					most throttle_max_pct */
	uint32_t throttle_max_pct;   /* ceiling, default 99 (at most 99) */
	const char *congestion_control; /* source: TCP congestion control of
					   every connection ("cubic", "bbr",
					   ...; copied). NULL: automatic, a
					   pacing algorithm (BBR) is replaced
					   on connections within the host and
					   the system's default kept
					   elsewhere. A name the kernel
					   refuses fails the migration before
					   it starts. */
	bool keep_running;	     /* source, "file:" only: resume the guest
					once its last pages and state are
					written (a checkpoint: the file is a
					copy). Default false: the file takes
					the guest over and the source stays
					paused, as after a migration. */
	uint32_t io_threads;	     /* "file:" only: threads reading or
					writing the file, 1..64; 0 = 4 */
	enum ferry_postcopy postcopy; /* source: default OFF */
	uint32_t postcopy_after_passes; /* FERRY_POSTCOPY_AFTER: precopy
					   passes before the switch, 1..
					   max_passes; 0 = 1 */
	bool lazy;		     /* destination, "file:" only: run the
					guest as soon as its state is loaded
					and place memory on demand through
					userfaultfd while a background reader
					fills the rest (needs ops->pause: a
					damaged page stops the guest). The
					receive returns once every page is
					in. */
	uint32_t max_pause_ms;	     /* source: the longest the guest stays
					paused before the destination says
					it is ready to run it (the answer to
					SWITCHOVER; before postcopy, to
					POSTCOPY's discard); past it the
					source aborts and resumes its guest
					(FERRY_ETIMEOUT). 0 = 4 x
					downtime_limit_ms, at least 2,000,
					and at least 3 x the pause predicted
					when it began (a switchover forced by
					the timeout strategy; logged); else
					at least downtime_limit_ms.
					Not for "file:" (a snapshot's disk
					may be slow), and not after
					release(): the guest may run at the
					destination from there on. A VMM
					callback that never returns (a
					save_state that hangs) is not
					interrupted: the limit takes effect
					when it returns. */
	/* Source: local migration by memory fds (docs/api-guide.md, "Local
	 * migration"). Instead of copying guest memory, the source passes
	 * each region's backing descriptor (FERRY_REGION_FD, every region
	 * needs one: a memfd or a hugetlb memfd) over the UNIX connection
	 * (SCM_RIGHTS), and the destination maps the same pages: no pass
	 * runs, no dirty tracking starts, the guest pauses for the state
	 * and the handshake only. Only with "unix:" URIs (and "fd:" UNIX
	 * sockets) and a destination that offers FERRY_CAP_LOCAL_FDS; else
	 * the send fails before anything is sent, with a message that
	 * says why. Not with postcopy (ferry_config_check() refuses the
	 * pair); extra connections are not opened (the log says so).
	 * Default false.
	 * A destination ignores it: it takes memory the way the source
	 * sends it. */
	bool local_fds;
	/* New members go here, at the end. */
	/* TLS (GnuTLS) on every connection of a migration when credentials
	 * are given: the main one, the extra data connections and
	 * postcopy's recovery connections; never a "file:" snapshot. Both
	 * sides authenticate: with x509 the destination (the side that
	 * accepts) requires the source's certificate, and each checks the
	 * other's against its CA file; with PSK both hold one key. Files
	 * are read when a run starts; a missing one fails the run with its
	 * path. Strings are copied. See docs/api-guide.md, "TLS". */
	const char *tls_ca_file;     /* x509: CA certificates (PEM) */
	const char *tls_cert_file;   /* x509: own certificate (PEM): the
					destination's server certificate,
					the source's client certificate */
	const char *tls_key_file;    /* x509: its private key (PEM) */
	const char *tls_crl_file;    /* x509, optional: revocation list */
	const char *tls_peer_names;  /* x509, optional: comma-separated
					names; the peer's certificate must
					carry one (SAN DNS name or address,
					or CN). NULL: any certificate of the
					CA */
	const char *tls_psk_file;    /* PSK instead of x509: lines of
					"identity:hexkey" (QEMU's
					tls-creds-psk) */
	const char *tls_psk_identity; /* source, PSK: the identity to use
					 (NULL: the file's first) */
	const char *tls_priority;    /* GnuTLS priority string (ciphers,
					versions); NULL: "NORMAL" */
	/* Both roles: the stall limit. A peer that sends nothing, or takes
	 * nothing, for this long (its process frozen, the link black-holed)
	 * fails the migration with FERRY_ETIMEOUT, as any failure does: a
	 * source before its point of no return resumes its guest, a
	 * destination gives the attempt up. TCP connections also get it as
	 * TCP_USER_TIMEOUT, with keepalive probes within it. A peer that is
	 * busy but alive (loading a large state, scanning a dirty log,
	 * held back by max_bandwidth) sends keep-alive records meanwhile
	 * (FERRY_CAP_KEEPALIVE); against a peer without them, silence
	 * while it answers a request is allowed up to 60 s, or this limit
	 * if longer. Not for "file:" runs, and after postcopy's transition
	 * a stall pauses postcopy instead. FERRY_STALL_TIMEOUT_MS (10 s)
	 * when 0; else FERRY_STALL_TIMEOUT_MIN_MS (500 ms) to
	 * FERRY_STALL_TIMEOUT_MAX_MS (1 h). */
	uint32_t stall_timeout_ms;
	/* Both roles, postcopy: the CPU that the urgent lane's threads (the
	 * ones a vCPU waiting for a page depends on: the source's request
	 * reader, the destination's fault thread and its reader of the
	 * answers) keep to while postcopy runs. One CPU for all of them
	 * makes each hop a wake-up on the CPU it runs on, which on a
	 * virtual host costs far less than waking another, idle CPU.
	 * FERRY_LANE_CPU_AUTO (0, the default): the last CPU the session's
	 * thread may run on (two processes on one host pick the same);
	 * FERRY_LANE_CPU_NONE (-1): wherever the scheduler puts them;
	 * N > 0: CPU N - 1 (ignored if the thread may not run there). */
	int32_t lane_cpu;
	/* Both roles, postcopy: microseconds that the lane's CPU is kept
	 * from halting after each event of a page request (the
	 * destination: a fault read, a page placed that a vCPU waited for;
	 * the source: a request answered). On a virtual host a halted CPU
	 * is the host's to run again, which on a quiet machine is most of
	 * a sparse fault's wait. Each side then runs a keeper: a thread of
	 * the idle class (SCHED_IDLE) kept to lane_cpu, in a busy loop until
	 * the window after the last event runs out, asleep otherwise. It
	 * runs only when no other thread wants that CPU and is preempted by
	 * any that wakes, so it takes no time from the guest; it costs the
	 * host's CPU time while it spins. 0: no keeper (the default,
	 * FERRY_LANE_POLL_US: no gain was measured on a loaded host); at
	 * most FERRY_LANE_POLL_MAX_US. */
	uint32_t lane_poll_us;
	/* Both roles, TLS 1.3: what seals and opens the records of the
	 * migration's data (GnuTLS does the handshake, certificates and
	 * keys either way, and the records on the wire are the same; each
	 * side picks its own, so the two sides need not agree).
	 * FERRY_TLS_ENGINE_AUTO (0, the default): Intel's ipsec-mb, the
	 * faster (AES-GCM stitched over scattered pages, VAES/AVX-512 where
	 * the CPU has them), where the library was built with it and the
	 * CPU has AES-NI, else GnuTLS. FERRY_TLS_ENGINE_GNUTLS: GnuTLS's
	 * AEAD always, e.g. where a policy allows only GnuTLS's (a
	 * certified module's) crypto, or to compare.
	 * FERRY_TLS_ENGINE_IPSEC_MB: ipsec-mb or a failed
	 * connection saying why (a build without it, a CPU without AES-NI,
	 * TLS 1.2 or a cipher it does not do).
	 * FERRY_TLS_ENGINE_KTLS: the kernel's TLS (kTLS, Linux) seals and
	 * opens the records on the keys GnuTLS negotiated, which saves the
	 * copy of sealed records into the socket and of received ones out
	 * of it; or a failed connection saying why (a kernel without kTLS,
	 * TLS 1.2, a cipher other than AES-GCM or ChaCha20-Poly1305, a
	 * connection that is not TCP). Only by name: AUTO never picks it,
	 * as this project's machines have no kTLS to test it on. Without
	 * the kernel's TLS 1.3 rekey (Linux 6.14) a connection cannot take
	 * the peer's KeyUpdate and fails on it, and one that sends with
	 * AES-GCM fails before its 2^24.5th record (about 380 GiB, RFC 8446
	 * 5.5). ferry_stats.tls_engine says which sealed the records.
	 * Ignored without TLS. */
	uint32_t tls_engine;
};

/* ferry_config.tls_engine's values. */
#define FERRY_TLS_ENGINE_AUTO 0
#define FERRY_TLS_ENGINE_GNUTLS 1
#define FERRY_TLS_ENGINE_IPSEC_MB 2
#define FERRY_TLS_ENGINE_KTLS 3

/* ferry_config.lane_cpu's special values. */
#define FERRY_LANE_CPU_AUTO 0
#define FERRY_LANE_CPU_NONE (-1)

/* ferry_config.lane_poll_us: the default and the largest. */
#define FERRY_LANE_POLL_US 0
#define FERRY_LANE_POLL_MAX_US 10000

/* ferry_config.stall_timeout_ms: the default and the range. */
#define FERRY_STALL_TIMEOUT_MS 10000
#define FERRY_STALL_TIMEOUT_MIN_MS 500
#define FERRY_STALL_TIMEOUT_MAX_MS 3600000

/**
 * ferry_config_init() - fill a config with defaults.
 */
FERRY_API void ferry_config_init(struct ferry_config *cfg);

typedef struct ferry_session ferry_session;

/**
 * ferry_config_check() - whether ferry_session_new() would take @cfg, and
 * if not, why.
 * @cfg: the configuration.
 * @err: receives the reason ("connections is 0: it must be from 1 to
 *       64"), NUL-terminated, or "" when the config is good; may be NULL.
 * @errlen: size of @err.
 *
 * Checks every field against its documented range and what it needs from
 * @cfg->ops, whose struct_size must be one this library takes (see struct
 * ferry_vmm_ops). Only what both roles need is required here (ops and its
 * resume); the callbacks of one role (pause and save_state for a source,
 * load_state for a destination) are checked when the session is used in
 * that role, and ferry_session_send()/ferry_session_receive() then fail
 * with -EINVAL and the missing callback named in the session's message.
 * Any thread; no side effects.
 *
 * Return: 0, or -EINVAL.
 */
FERRY_API int ferry_config_check(const struct ferry_config *cfg, char *err,
				 size_t errlen);

/**
 * ferry_session_new() - create a session.
 * @cfg: the configuration; copied.
 * @out: receives the session.
 *
 * A refused config (ferry_config_check()) is explained through
 * @cfg->on_log (level 0) when it has one, since there is no session yet
 * to hold the message; call ferry_config_check() to get it in a buffer.
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
	/* Backing fd (memfd, hugetlbfs) and the region's offset in it, for
	 * local migration by fd passing (ferry_config.local_fds). Read only
	 * when flags has FERRY_REGION_FD, so a region that leaves both zero
	 * does not name descriptor 0; set fd to -1 when there is none.
	 * A source passes the file (SCM_RIGHTS) and never closes it. On a
	 * destination that received its memory by fd, the received file
	 * replaces the region's own once the guest runs here (dup3() onto
	 * the same descriptor number, close-on-exec as it was), when the
	 * region has FERRY_REGION_FD and the same fd_offset as the
	 * source's: the fd then backs the region again, so it can be passed
	 * on. Otherwise the library never uses or closes it. */
	int fd;
	uint64_t fd_offset;
	const char *name; /* copied; shown in errors ("ram0") */
	uint32_t flags;	  /* FERRY_REGION_* */
};

/* ferry_region.fd is meaningful: an open descriptor backing the region. */
#define FERRY_REGION_FD 0x1u

/**
 * ferry_session_add_region() - describe one region of guest memory.
 *
 * Regions must be added before send/receive, in the same order and with the
 * same sizes on both sides. With FERRY_REGION_FD in @r->flags, @r->fd must
 * be an open descriptor (checked with fcntl); without it, fd is ignored.
 * The session's message says why a region is refused.
 *
 * Return: 0, -EINVAL (unaligned, overlapping, too many, unknown flags, a
 * closed fd), -EBUSY (a migration runs), -ENOMEM.
 */
FERRY_API int ferry_session_add_region(ferry_session *s,
				       const struct ferry_region *r);

/**
 * ferry_session_send() - migrate the guest to @uri ("tcp:HOST:PORT",
 * "unix:PATH"), or snapshot it to "file:PATH": a live migration into a
 * file (passes write pages into fixed slots while the guest runs; it
 * pauses for the last pages and the state), renamed into place only when
 * complete. The file then owns the guest and the source stays paused,
 * unless cfg.keep_running made it a checkpoint (the guest resumes once its
 * last pages and state are written). Blocks until the migration ends.
 *
 * Return: 0 when the destination runs the guest. On any failure before
 * the destination acknowledged "released" the source guest has been resumed
 * with its state intact; FERRY_EUNCONFIRMED is the one failure after it.
 */
FERRY_API int ferry_session_send(ferry_session *s, const char *uri);

/**
 * ferry_session_receive() - listen on @uri, accept one migration and run
 * the guest when it completes, or restore from "file:PATH" (a snapshot
 * written by ferry_session_send). Blocks until then.
 *
 * Return: 0 when the guest runs here; on failure the guest never ran
 * here, except after a lazy restore (ferry_config.lazy) that found a
 * damaged page once the guest ran: the guest is then paused and stays
 * stopped (the session refuses further runs until it is destroyed).
 */
FERRY_API int ferry_session_receive(ferry_session *s, const char *uri);

/**
 * ferry_session_cancel() - ask the running send or receive to stop; a
 * cancel made before it starts stops it as soon as it does. The request is
 * cleared when the run ends. Safe from any thread and from signal
 * handlers. The source resumes its guest unless the point of no return was
 * passed. From the moment a source sends "released" a cancel is ignored
 * (the destination may run the guest: the source waits for its answer),
 * and so it is after the switch to postcopy:
 * neither side holds the whole guest any more, so stopping would lose it;
 * see ferry_session_force_resume().
 */
FERRY_API void ferry_session_cancel(ferry_session *s);

/**
 * ferry_session_postcopy() - switch the running precopy migration of this
 * source to postcopy now (QEMU's migrate-start-postcopy): the running pass
 * is cut within 50 ms, and what it did not send follows in postcopy. Any
 * thread.
 *
 * Return: 0 (the switch will happen, or postcopy already runs);
 * -EINVAL (not a running source), -ENOTSUP (the destination does not
 * offer postcopy: the message says why), -EALREADY (past the switchover:
 * too late).
 */
FERRY_API int ferry_session_postcopy(ferry_session *s);

/**
 * ferry_session_recover() - go on with a postcopy whose link broke
 * (state FERRY_STATE_POSTCOPY_PAUSED). Any thread; the send or receive
 * that is paused does the work.
 * @uri: on the destination, where to listen for the source's recovery
 *	 connection ("tcp:HOST:PORT", "unix:PATH"; the port chosen for
 *	 port 0 is reported as stats.listen_uri with FERRY_EVENT_LISTENING);
 *	 on the source, where to connect.
 *
 * The source authenticates with the session's token and a generation
 * that grows with every attempt; the destination says which pages it has
 * and the source sends the rest. A cut during recovery pauses again, and
 * another call tries again. A destination refuses connections that do
 * not present the session's RESUME and goes on listening, up to 10
 * minutes; then it pauses again (a URI it cannot listen on, or an fd:
 * one, pauses at once), and the error and log say why.
 *
 * Return: 0 (taken), -EINVAL (bad URI), -EBUSY (not paused: nothing to
 * recover, or a recovery already runs).
 */
FERRY_API int ferry_session_recover(ferry_session *s, const char *uri);

/**
 * ferry_session_force_resume() - on a source whose postcopy is paused,
 * give up the migration and run the source's copy of the guest: for an
 * operator who knows the destination is gone for good. The guest may have
 * run at the destination since the switch: if that copy still exists,
 * two copies now run (with the same identity, disks, and connections), and
 * whatever the destination's copy did since the switch is lost. The send
 * returns FERRY_EPOSTCOPY with a message that says so. Any thread.
 *
 * Return: 0 (taken), -EBUSY (not a paused postcopy source).
 */
FERRY_API int ferry_session_force_resume(ferry_session *s);

/**
 * ferry_session_stats() - copy the current statistics. Any thread.
 * @s: the session.
 * @out: receives them; its struct_size must be set (FERRY_STATS_INIT),
 *	and at most that many bytes are written (see struct ferry_stats).
 *
 * Return: 0; -EINVAL when @s or @out is NULL or @out->struct_size is not
 * a size (0, not a multiple of 8, outside FERRY_STATS_MIN_SIZE..
 * FERRY_STATS_MAX_SIZE), with nothing written and the reason logged
 * (level 0).
 */
FERRY_API int ferry_session_stats(ferry_session *s, struct ferry_stats *out);

/**
 * ferry_session_errmsg() - the detail of the session's last error, or "".
 * Copies into @buf (NUL-terminated) and returns @buf. Any thread.
 */
FERRY_API const char *ferry_session_errmsg(ferry_session *s, char *buf,
					   size_t len);

/* Capabilities: masks, or-ed into ferry_config.capabilities (bit n of
 * the wire's u64 is 1ull << n; docs/stream-format.md lists them). */
#define FERRY_CAP_DATA_CHECKSUM (1ull << 0) /* checksums cover page data */
#define FERRY_CAP_MULTI_CHANNEL (1ull << 1) /* extra data connections */
#define FERRY_CAP_ZERO_PAGES (1ull << 2)    /* zero pages travel as a map */
#define FERRY_CAP_LZ4 (1ull << 3)	    /* lz4-compressed memory */
#define FERRY_CAP_ZSTD (1ull << 4)	    /* zstd-compressed memory */
/* Postcopy records (0x0400-0x0404) and recovery; needs multi-channel.
 * A destination offers it only when it can run it: a listener for the
 * data connections and a working userfaultfd (missing mode); a source
 * uses it only when ferry_config.postcopy or ferry_session_postcopy()
 * asks. */
#define FERRY_CAP_POSTCOPY (1ull << 5)
/* Local migration by memory fds (MEMORY_FDS, 0x0500; ferry_config.
 * local_fds): a destination offers it only on a UNIX connection (unix:
 * listeners, and fd: sockets that are AF_UNIX); a source uses it only when
 * local_fds asks. */
#define FERRY_CAP_LOCAL_FDS (1ull << 6)
/* Either side, while busy (loading a state, scanning a dirty log, held
 * back by max_bandwidth), sends a KEEPALIVE record on the main connection
 * when it has written nothing there for a quarter of the shortest stall
 * limit (125 ms): a silent peer is then a stalled one (ferry_config.
 * stall_timeout_ms). Offered by this library; a peer that does not take
 * it is allowed its old silence while it answers (60 s). */
#define FERRY_CAP_KEEPALIVE (1ull << 7)
/* Device descriptors by fd (DEVICE_FDS, 0x0501): with local-fds, the
 * source's VMM hands descriptors (its live sockets, say) to the
 * destination's through ops->save_fds / ops->load_fds. A destination
 * offers it only with local-fds and a load_fds callback; a source uses it
 * only with a save_fds callback. */
#define FERRY_CAP_DEVICE_FDS (1ull << 8)
/* With keepalive: the destination's keep-alives go on through postcopy
 * (its guest may fault on nothing for long), so the source takes a
 * silent destination in postcopy for a stalled one after its stall
 * limit. Without it, a source in postcopy waits on TCP alone, as
 * destinations that keep quiet there need. */
#define FERRY_CAP_POSTCOPY_KEEPALIVE (1ull << 9)
#define FERRY_CAP_ALL                                                  \
	(FERRY_CAP_DATA_CHECKSUM | FERRY_CAP_MULTI_CHANNEL |            \
	 FERRY_CAP_ZERO_PAGES | FERRY_CAP_LZ4 | FERRY_CAP_ZSTD |         \
	 FERRY_CAP_POSTCOPY | FERRY_CAP_LOCAL_FDS | FERRY_CAP_KEEPALIVE | \
	 FERRY_CAP_DEVICE_FDS | FERRY_CAP_POSTCOPY_KEEPALIVE)
/* The most descriptors one migration's devices hand over (save_fds). */
#define FERRY_DEVICE_FDS_MAX 4096

/* ---- snapshot files ---- */

/* Most memory regions a snapshot file holds. */
#define FERRY_SNAPSHOT_MAX_REGIONS 40

/* What a snapshot file says about the guest it holds. */
struct ferry_snapshot_info {
	uint32_t format_version; /* of the mapped layout */
	uint32_t page_size;
	uint32_t nregions;
	struct {
		uint64_t gpa;
		uint64_t size;
		uint64_t data_pages; /* pages with data; the rest are zero */
		char name[64];
	} regions[FERRY_SNAPSHOT_MAX_REGIONS];
	uint64_t pages;		/* of every region */
	uint64_t data_pages;
	uint64_t file_bytes;
	uint64_t image_digest;	/* see ferry_stats.image_digest */
	uint64_t created_ns;	/* CLOCK_REALTIME when completed */
	uint32_t passes;	/* memory passes written (1: stop-and-copy) */
	char software[32];	/* "ferry 0.1.0" */
};

/**
 * ferry_snapshot_describe() - read a snapshot file's description and its
 * device state, so a VMM can be set up from the file alone.
 * @path: the file.
 * @info: receives the description.
 * @state, @state_len: receive a malloc()ed copy of the device-state
 *	section (free() it; ferry_state_dump_json() decodes it without
 *	device types), checked against its checksum; may be NULL.
 * @err, @errlen: what is wrong.
 *
 * Return: 0; -ENOENT and other -errno of opening or reading; -EBADMSG
 * (not a snapshot file, or a damaged description; a stream-format
 * snapshot of an older ferry says so), FERRY_ECHECKSUM, FERRY_EVERSION,
 * -ENOMEM, -EINVAL.
 */
FERRY_API int ferry_snapshot_describe(const char *path,
				      struct ferry_snapshot_info *info,
				      void **state, size_t *state_len,
				      char *err, size_t errlen);

/* ---- device state (src/state) ---- */
/*
 * Self-describing device state (docs/state-format.md).
 *
 * A VMM describes each device type once, as a visit function that names
 * every field of the device with one ferry_visit_*() call. The same function
 * captures the type's schema, saves an instance, loads one (by field name,
 * from whatever version the source ran) and prints one as JSON:
 *
 *	static int console_visit(ferry_visitor *v, void *dev)
 *	{
 *		struct console *c = dev;
 *		uint32_t n = c->nregs;
 *
 *		ferry_visit_u32(v, "head", &c->head, 0, FERRY_FIELD_MUST);
 *		ferry_visit_bytes(v, "ring", c->ring, sizeof(c->ring),
 *				  FERRY_FIELD_MUST);
 *		ferry_visit_bool(v, "echo", &c->echo, false,
 *				 FERRY_FIELD_SKIPPABLE);
 *		if (ferry_visit_struct_begin(v, "uart", FERRY_FIELD_MUST) == 0) {
 *			ferry_visit_u8(v, "lsr", &c->uart.lsr, 0x60,
 *				       FERRY_FIELD_MUST);
 *			ferry_visit_struct_end(v);
 *		}
 *		if (ferry_visit_array_begin(v, "regs", &n, 8,
 *					    FERRY_FIELD_MUST) == 0) {
 *			for (uint32_t i = 0; i < n; i++)
 *				ferry_visit_u32(v, NULL, &c->regs[i], 0, 0);
 *			ferry_visit_array_end(v);
 *		}
 *		c->nregs = n;
 *		return ferry_visit_error(v);
 *	}
 *
 * Rules for a visit function:
 * - It must visit the same fields, in the same order, with the same sizes
 *   whatever the object holds: the schema is captured by running it on a
 *   zeroed object of ferry_device_type.size bytes (so it must not follow
 *   pointers stored in the object), and saving checks every visit against
 *   that capture. Only array counts and lengths may vary.
 * - Array elements are visited in a loop bounded by the count that
 *   *_array_begin() left in *count (it is 1 during schema capture, the
 *   stream's count when loading). Elements take no name (NULL) and no flag.
 * - Named fields take a name ([A-Za-z_][A-Za-z0-9_]*, at most 63 bytes,
 *   unique within its struct) and exactly one of FERRY_FIELD_MUST or
 *   FERRY_FIELD_SKIPPABLE.
 * - The default is what a field gets when loading a stream whose schema
 *   lacks it. Bytes default to zeros (variable ones to length 0), variable
 *   arrays to no elements, fixed arrays to elements visited in default mode.
 * - Errors are sticky: after the first one every visit does nothing and
 *   returns it, so a function may check once, at the end, by returning
 *   ferry_visit_error(). Calling an _end() after a failed _begin() is
 *   harmless. Apart from the *count of fixed arrays, the visitor only
 *   writes through the pointers it is given while loading.
 *
 * Loading rules (the sender's schema travels in the stream; fields match by
 * name, at every nesting level):
 * - a field only the stream has: ignored if skippable; FERRY_EUNKNOWN if
 *   must-understand, naming device and field;
 * - a field only this side has: its default;
 * - a field whose type differs (kind, integer width or signedness, fixed vs
 *   variable, fixed size): FERRY_EMISMATCH naming device and field;
 * - a string, bytes or array value longer than this side's capacity:
 *   -ERANGE; nothing is ever written past a capacity.
 * Versions in ferry_device_type are informational (shown in messages and
 * exports): any version of a type with the same name loads by these rules.
 *
 * Thread safety: no global state; every function may run concurrently on
 * different objects. A visitor exists only during one call and belongs to
 * the thread that made it.
 */
#include <stdbool.h>

#if defined(__GNUC__)
#define FERRY_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define FERRY_PRINTF(fmt, args)
#endif

typedef struct ferry_visitor ferry_visitor;

/* Field flags: exactly one of the two for every named field. */
#define FERRY_FIELD_MUST 0x1u	   /* a reader that lacks it must fail */
#define FERRY_FIELD_SKIPPABLE 0x2u /* a reader that lacks it ignores it */

/* Device type flags. */
#define FERRY_DEVICE_OPTIONAL 0x1u /* a destination that has no such
				      instance drops it instead of failing */

/* A device type. Everything it points to must outlive the calls using it. */
struct ferry_device_type {
	const char *name;   /* type name, [A-Za-z0-9_.:-]{1,63} */
	uint32_t version;   /* informational, see above */
	size_t size;	    /* sizeof the object visit() receives (> 0) */
	int (*visit)(ferry_visitor *v, void *dev);
	uint32_t flags;	    /* FERRY_DEVICE_* */
};

/*
 * Visit one field. @name: the field name (NULL for array elements). @val:
 * the field in the object. @def: its default. @flags: FERRY_FIELD_*.
 * Return: 0 or the visitor's first error (negative).
 */
FERRY_API int ferry_visit_u8(ferry_visitor *v, const char *name,
			     uint8_t *val, uint8_t def, unsigned flags);
FERRY_API int ferry_visit_u16(ferry_visitor *v, const char *name,
			      uint16_t *val, uint16_t def, unsigned flags);
FERRY_API int ferry_visit_u32(ferry_visitor *v, const char *name,
			      uint32_t *val, uint32_t def, unsigned flags);
FERRY_API int ferry_visit_u64(ferry_visitor *v, const char *name,
			      uint64_t *val, uint64_t def, unsigned flags);
FERRY_API int ferry_visit_i8(ferry_visitor *v, const char *name,
			     int8_t *val, int8_t def, unsigned flags);
FERRY_API int ferry_visit_i16(ferry_visitor *v, const char *name,
			      int16_t *val, int16_t def, unsigned flags);
FERRY_API int ferry_visit_i32(ferry_visitor *v, const char *name,
			      int32_t *val, int32_t def, unsigned flags);
FERRY_API int ferry_visit_i64(ferry_visitor *v, const char *name,
			      int64_t *val, int64_t def, unsigned flags);
FERRY_API int ferry_visit_bool(ferry_visitor *v, const char *name,
			       bool *val, bool def, unsigned flags);

/**
 * ferry_visit_string() - a NUL-terminated string in a @cap-byte buffer
 * (at most @cap - 1 bytes of text). @def may be NULL ("").
 */
FERRY_API int ferry_visit_string(ferry_visitor *v, const char *name,
				 char *buf, size_t cap, const char *def,
				 unsigned flags);

/**
 * ferry_visit_bytes() - exactly @size bytes at @buf (default: zeros).
 */
FERRY_API int ferry_visit_bytes(ferry_visitor *v, const char *name,
				void *buf, size_t size, unsigned flags);

/**
 * ferry_visit_bytes_var() - *@len bytes at @buf, at most @cap (default:
 * length 0). Saving reads *@len; loading sets it.
 */
FERRY_API int ferry_visit_bytes_var(ferry_visitor *v, const char *name,
				    void *buf, uint32_t *len, size_t cap,
				    unsigned flags);

/**
 * ferry_visit_bytes_alloc() - *@len bytes at *@buf, at most @max (default:
 * length 0, *@buf NULL): a variable byte field whose buffer is allocated
 * on load, for contents of any size up to @max (network queues of MiBs).
 * Saving reads *@len bytes from *@buf. Loading frees *@buf, which must be
 * NULL or a malloc()ed buffer, and stores a new malloc()ed one of exactly
 * the stream's length (NULL when it is 0); the caller frees it. On the
 * wire it is the same variable bytes field as ferry_visit_bytes_var()'s.
 */
FERRY_API int ferry_visit_bytes_alloc(ferry_visitor *v, const char *name,
				      void **buf, uint32_t *len, size_t max,
				      unsigned flags);

/**
 * ferry_visit_struct_begin() - open a nested struct; its fields follow,
 * then ferry_visit_struct_end(). Inside an array it is an element (NULL
 * name).
 */
FERRY_API int ferry_visit_struct_begin(ferry_visitor *v, const char *name,
				       unsigned flags);
FERRY_API int ferry_visit_struct_end(ferry_visitor *v);

/**
 * ferry_visit_array_begin() - open a variable array of at most @max
 * elements. Saving: *@count is the number of elements (<= @max) and is not
 * changed. Loading: *@count is set to the stream's count. Schema capture:
 * set to 1. Visit exactly *@count elements, then ferry_visit_array_end().
 */
FERRY_API int ferry_visit_array_begin(ferry_visitor *v, const char *name,
				      uint32_t *count, uint32_t max,
				      unsigned flags);

/**
 * ferry_visit_array_fixed_begin() - open an array of exactly @n elements.
 * *@count is set to the number of elements to visit: @n, or 1 during schema
 * capture.
 */
FERRY_API int ferry_visit_array_fixed_begin(ferry_visitor *v,
					    const char *name, uint32_t *count,
					    uint32_t n, unsigned flags);
FERRY_API int ferry_visit_array_end(ferry_visitor *v);

/**
 * ferry_visit_fail() - record a VMM-detected error (e.g. a loaded value the
 * device cannot accept). The message is prefixed with the device and the
 * current path. @err must be negative (else -EINVAL is recorded).
 *
 * Return: the visitor's first error.
 */
FERRY_API int ferry_visit_fail(ferry_visitor *v, int err, const char *fmt,
			       ...) FERRY_PRINTF(3, 4);

/**
 * ferry_visit_error() - the first error of the visitor, or 0.
 */
FERRY_API int ferry_visit_error(const ferry_visitor *v);

/**
 * ferry_visitor_errmsg() - the message of the first error, naming the
 * device and the field path ("console0.uart.lsr: ..."), or "". Valid until
 * the visitor goes away (the end of the ferry_state_* call).
 */
FERRY_API const char *ferry_visitor_errmsg(const ferry_visitor *v);

/**
 * ferry_buf_new() - a buffer of the caller's own, for building a state
 * section outside a migration (a self-test, a VMM's own snapshot). Inside
 * save_state() use the buffer the engine passes instead.
 *
 * Return: an empty buffer to release with ferry_buf_free(), or NULL
 * (out of memory).
 */
FERRY_API struct ferry_buf *ferry_buf_new(void);

/**
 * ferry_buf_free() - release a buffer from ferry_buf_new(). NULL is
 * harmless. Never call it on the buffer of save_state().
 */
FERRY_API void ferry_buf_free(struct ferry_buf *buf);

/**
 * ferry_buf_data() - the bytes a buffer holds.
 * @buf: the buffer.
 * @len: receives their count.
 *
 * Return: a pointer valid until the buffer changes or is freed (NULL when
 * empty).
 */
FERRY_API const void *ferry_buf_data(const struct ferry_buf *buf,
				     size_t *len);

/**
 * ferry_state_save() - append one device instance to a state section.
 * @out: the buffer of save_state(); it must hold only state records.
 * @type: the device type.
 * @instance: the instance name, unique in the section ([A-Za-z0-9_.:-]).
 * @dev: the object; only read.
 * @err, @errlen: receives a message naming the device and field on
 * failure (may be NULL/0).
 *
 * The first instance of a type in @out also appends the type's schema.
 * After the last instance, call ferry_state_end(). On failure @out is left
 * as it was.
 *
 * Return: 0, -EINVAL (bad arguments, a visit function breaking the rules,
 * an instance saved twice, a type name reused with another schema, a
 * section already ended), -ENOMEM, or the visit function's error.
 */
FERRY_API int ferry_state_save(struct ferry_buf *out,
			       const struct ferry_device_type *type,
			       const char *instance, void *dev, char *err,
			       size_t errlen);

/**
 * ferry_state_end() - close the section in @out (appends the END record;
 * a section without one is rejected as truncated).
 *
 * Return: 0, -EINVAL (not a section, or already ended), -ENOMEM.
 */
FERRY_API int ferry_state_end(struct ferry_buf *out);

/* Binding flags. */
#define FERRY_BINDING_OPTIONAL 0x1u /* may be absent from the stream; the
				       object is then left untouched */

/* A device instance the destination expects, and where to load it. */
struct ferry_state_binding {
	const struct ferry_device_type *type;
	const char *instance;
	void *dev;
	uint32_t flags; /* FERRY_BINDING_* */
};

/**
 * ferry_state_load() - load a state section into the bound objects.
 * @data, @len: the section (the load_state() arguments).
 * @bindings, @n: the instances this side has; instance names unique.
 * @err, @errlen: receives a message naming the device and field on failure
 * (may be NULL/0).
 *
 * Every non-optional binding must be in the stream; every instance in the
 * stream must be bound unless its type is FERRY_DEVICE_OPTIONAL on the
 * source. On failure some objects may be partly loaded: the destination
 * must not run the guest (the engine guarantees it; the source resumes).
 *
 * Return: 0, -EBADMSG/FERRY_ECHECKSUM/-EMSGSIZE (malformed or truncated),
 * FERRY_EUNKNOWN (unknown mandatory record, unknown instance, unknown
 * must-understand field), FERRY_EMISMATCH (type changed, instance of
 * another type, expected instance missing), -ERANGE (value exceeds a
 * capacity here), -EINVAL (bad bindings), -ENOMEM, or a visit function's
 * own error.
 */
FERRY_API int ferry_state_load(const void *data, size_t len,
			       const struct ferry_state_binding *bindings,
			       size_t n, char *err, size_t errlen);

/**
 * ferry_state_print_json() - the values of @dev as a JSON object, field
 * names as keys (bytes as lowercase hex strings). *@json receives a
 * NUL-terminated string to free(). @err, @errlen as ferry_state_save().
 *
 * Return: 0, -EINVAL, -ENOMEM, or the visit function's error.
 */
FERRY_API int ferry_state_print_json(const struct ferry_device_type *type,
				     void *dev, char **json, char *err,
				     size_t errlen);

/**
 * ferry_state_schema_json() - the schema of @type as JSON Schema (draft
 * 2020-12) describing what ferry_state_print_json() prints. *@json
 * receives a NUL-terminated string to free(). @err, @errlen as
 * ferry_state_save().
 *
 * Return: 0, -EINVAL, -ENOMEM.
 */
FERRY_API int ferry_state_schema_json(const struct ferry_device_type *type,
				      char **json, char *err, size_t errlen);

/**
 * ferry_state_dump_json() - decode and check a state section without any
 * local device types (the schemas come from the stream), e.g. the body of
 * a STATE record found by an inspector. *@json receives a NUL-terminated
 * string to free(): {"types": [...], "devices": [...], "skipped": [...]}.
 *
 * Return: 0, or the errors of ferry_state_load() for malformed sections
 * (with a message in @err).
 */
FERRY_API int ferry_state_dump_json(const void *data, size_t len,
				    char **json, char *err, size_t errlen);

/**
 * ferry_state_dump_schemas_json() - the schemas a state section carries,
 * as a JSON object mapping each type name to its JSON Schema.
 *
 * Return: as ferry_state_dump_json().
 */
FERRY_API int ferry_state_dump_schemas_json(const void *data, size_t len,
					    char **json, char *err,
					    size_t errlen);
/* ---- end device state ---- */

/* ---- stream inspection ---- */
/*
 * Decoding and checking a ferry stream offline (docs/stream-format.md): the
 * capture of a migration's main connection (ferry_config.record_stream), a
 * snapshot file, or a data connection (one that starts with JOIN). This is
 * what `ferry inspect` prints.
 *
 * The stream is read once, front to back, through a bounded buffer: memory
 * payloads are checksummed (and, when checking, decompressed) and dropped,
 * never kept, so a capture of any size can be inspected, from a pipe too.
 *
 * For each thing found, the callback receives a ferry_inspect_item whose
 * @json is a JSON object describing it:
 *
 *   HEADER   {"magic": "FERRYMIG", "format_version": 1, "flags": 0}
 *   RECORD   the decoded body: HELLO {"version_min", "version_max",
 *            "capabilities": ["zero-pages", ...], "capability_bits",
 *            "boot_id", "software"}; CONFIG {"page_size", "regions":
 *            [{"index", "name", "gpa", "size"}]}; PASS_BEGIN {"pass",
 *            "final", "planned"}; PASS_END {"pass", "records", "bytes"};
 *            MEMORY {"region", "name" (with CONFIG), "offset", "length",
 *            "pages", "zero_pages", "codec", "payload"}; STATE {"bytes",
 *            "section": the ferry_state_dump_json() object, or "error"
 *            when it does not decode}; ABORT and ERROR {"code", "error",
 *            "message"}; JOIN {"session_id", "token", "index",
 *            "channels"}; postcopy's DISCARD {"entries", "pages"},
 *            POSTCOPY {"discarded"}, POSTCOPY_END {"records", "bytes"},
 *            RESUME {"session_id", "token", "generation"} (a stream
 *            that starts with RESUME is a recovery connection); a local
 *            migration's MEMORY_FDS {"regions": [{"index", "page_size",
 *            "size", "fd_offset"}]} (the files themselves are not in a
 *            capture); snapshot INDEX {"entries", "state_offset"} and
 *            FOOTER {"index_offset", "index_size"}; an unknown optional
 *            record {"skipped": true}, an unknown mandatory one
 *            {"unknown": true}; empty bodies {}
 *   PASS     after a pass's PASS_END (or at the end of the stream inside
 *            a pass): {"pass", "final", "records", "bytes", "pages",
 *            "zero_pages", "payload_bytes", "compressed_records",
 *            "compressed_bytes", "ended", "regions": [{"region", "name",
 *            "records", "bytes", "first", "last", "end"}]}
 *   SUMMARY  last: {"records", "stream_bytes", "memory_records",
 *            "memory_bytes", "passes", "state_bytes", "skipped",
 *            "final_state", "complete"}
 *
 * A snapshot file in the mapped layout (magic "FERRYSNP", the one
 * ferry_session_send writes to "file:PATH") is read by offset instead, so
 * @fd must then be a regular file; its items are:
 *
 *   HEADER   the superblock: {"magic", "format_version", "flags",
 *            "page_size", "regions" (how many), "pages", "data_pages",
 *            "table_offset", "map_offset", "state_offset", "state_bytes",
 *            "file_bytes", "table_hash", "map_hash", "state_hash" (hex
 *            strings; table_hash is the image digest), "passes",
 *            "software", "created_ns", "created" (UTC, ISO 8601)}
 *   REGION   one per region, @name its name, @offset its first slot:
 *            {"index", "name", "gpa", "size", "pages", "first_page",
 *            "slot_offset", "data_pages", "zero_pages", "checked"}
 *   RECORD   STATE at the state section's offset, as a STATE record
 *   SUMMARY  {"format": "mapped", "regions", "pages", "data_pages",
 *            "zero_pages", "memory_bytes", "file_bytes", "state_bytes",
 *            "passes", "image_digest", "pages_checked", "complete"}
 *
 * Its checks: the superblock (every field, its checksum), the file's size,
 * the data map's hash and its bits past the last page, the data_pages
 * counts against the map, the page table's hash, the state's hash and that
 * it decodes; with FERRY_INSPECT_CHECK also every page: a data page's slot
 * against its table entry, a zero page's entry against the hash of a zero
 * page. Problems name the part and the file offset ("offset 2170880: page
 * 18 of region ram0 (global page 18): slot does not match its checksum").
 *
 * Checks (all of them when FERRY_INSPECT_CHECK is set): the stream header;
 * record framing, flags and every checksum (with the CSUM_HEAD rule);
 * zero padding; the record order against the receiver's state machine;
 * HELLO's version range and CONFIG's regions; every memory range within a
 * configured region, its flags, zero map and payload size (compressed
 * payloads must decompress to exactly the pages they stand for) and its
 * encodings among those HELLO offered; PASS_END's counts against the
 * records of the pass; the STATE section decodes; a snapshot's index and
 * footer point where they should; the stream ends in a final state
 * (state loaded, running, or aborted) at a record boundary.
 *
 * Without the flag, a problem that does not stop decoding is reported in
 * the item's @problem and inspection goes on; with it, the first problem
 * ends the inspection. Problems that make the rest unreadable (bad stream
 * header, malformed record header, truncation) always end it.
 *
 * Thread safety: no global state; concurrent calls on different fds are
 * fine.
 */
#define FERRY_INSPECT_CHECK 0x1u /* stop at the first problem */

enum ferry_inspect_what {
	FERRY_INSPECT_HEADER = 1,  /* the stream header */
	FERRY_INSPECT_RECORD = 2,  /* one record */
	FERRY_INSPECT_PASS = 3,	   /* summary of one memory pass */
	FERRY_INSPECT_SUMMARY = 4, /* totals; the last item of a whole read */
	FERRY_INSPECT_REGION = 5,  /* a mapped snapshot's memory region */
};

/* One thing found in the stream. Everything it points to is valid only
 * during the callback. */
struct ferry_inspect_item {
	enum ferry_inspect_what what;
	uint64_t offset;  /* stream offset: the header, the record, the
			     pass's PASS_BEGIN, or (SUMMARY) the end */
	uint32_t type;	  /* RECORD: the type as on the wire */
	const char *name; /* RECORD: "HELLO", "MEMORY", "0x7123?" (an
			     unknown type; '?' = optional); REGION: the
			     region's name; else "" */
	uint32_t flags;	  /* RECORD: the record flags */
	uint32_t seq;	  /* RECORD: the seq */
	uint32_t length;  /* RECORD: body bytes, without padding */
	const char *json; /* a JSON object, never NULL (see above) */
	const char *problem; /* what is wrong with it, or NULL */
};

/* Return 0 to go on; anything else ends the inspection with that code. */
typedef int (*ferry_inspect_fn)(void *opaque,
				const struct ferry_inspect_item *item);

/**
 * ferry_inspect_fd() - decode (and check) the stream read from @fd.
 * @fd: a file, pipe or socket positioned at the stream header; read to
 *      its end, never seeked, not closed. A mapped snapshot file (magic
 *      "FERRYSNP" at the position) is read with pread, its position left
 *      alone; from a pipe or socket it is refused (-EBADMSG).
 * @flags: FERRY_INSPECT_CHECK or 0.
 * @cb: called for every item, in stream order; may be NULL.
 * @opaque: passed to @cb.
 * @err_offset: receives the stream offset of the problem that ended the
 *              inspection (may be NULL).
 * @err: receives "offset N: what is wrong" on failure (may be NULL/0).
 * @errlen: size of @err.
 *
 * Return: 0 when the whole stream was decoded (and, with
 * FERRY_INSPECT_CHECK, passed every check); -EBADMSG (malformed or
 * truncated), FERRY_ECHECKSUM, FERRY_EVERSION (a format this library does
 * not know), FERRY_EPROTO (records out of order, counts that do not
 * match), FERRY_EUNKNOWN (unknown mandatory record), -ERANGE (memory
 * outside the configured regions), -EMSGSIZE, -EIO or another -errno from
 * reading, -ENOMEM, -EINVAL (bad arguments), or the callback's code.
 */
FERRY_API int ferry_inspect_fd(int fd, unsigned flags, ferry_inspect_fn cb,
			       void *opaque, uint64_t *err_offset, char *err,
			       size_t errlen);
/* ---- end stream inspection ---- */

#ifdef __cplusplus
}
#endif
#endif /* FERRY_H */
