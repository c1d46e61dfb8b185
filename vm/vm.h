/* SPDX-License-Identifier: MIT */
/*
 * vm.h - the reference VMM's one VM object and what its files share.
 *
 * ferry-vm is split by subsystem: ram.c makes guest RAM; guest.c owns the
 * vCPU threads and their workloads (and the checks of what they wrote);
 * state.c owns the devices (vCPU registers, the machine, the console) as
 * libferry's self-describing state; main.c owns the command line and the
 * migration threads that drive libferry; api.c owns the API socket.
 * Everything mutable lives in one struct vm that is passed around; there
 * are no other globals.
 */
#ifndef FERRY_VM_H
#define FERRY_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <endian.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>

#include <json-c/json.h>

#include "ferry.h"

#define VM_PAGE_SIZE 4096u
#define VM_MAX_VCPUS 64u
#define VM_MAX_MEMORY (1ull << 40)
#define VM_NS_PER_MS 1000000ull

/* Explicit little-endian access, for the workloads' page headers. */
static inline uint64_t vm_get_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static inline uint32_t vm_get_le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static inline void vm_put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

static inline void vm_put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

enum vm_workload {
	VM_WL_AB = 0,
	VM_WL_RANDOM = 1,
	VM_WL_FILL = 2,
	VM_WL_IDLE = 3,
	VM_WL_TEXT = 4,
	VM_WL_KV = 5, /* a Redis-protocol service over the net device */
};

/* What guest RAM is made of (--memory-backend). */
enum vm_backend {
	VM_MEM_MEMFD = 0,   /* shared memfd, 4 KiB pages here */
	VM_MEM_ANON = 1,    /* private anonymous, MADV_HUGEPAGE; no fd (the
			       default: the fastest that needs no setup) */
	VM_MEM_HUGETLB = 2, /* memfd of 2 MiB hugetlb pages */
};

#define VM_HUGE_SIZE (2ull << 20)

/* Command-line names of an enum's values, indexed by value. */
static inline const char *vm_name_of(const char *const *names, size_t n,
				     unsigned v)
{
	return v < n && names[v] ? names[v] : "unknown";
}

/* The value whose name is @s, or -EINVAL. */
static inline int vm_name_find(const char *const *names, size_t n,
			       const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (names[i] && !strcmp(s, names[i]))
			return (int)i;
	return -EINVAL;
}

struct guest;

/*
 * One vCPU. The "registers" below are the workload's state: they are
 * touched by the vCPU thread while it runs and by other threads only while
 * it is parked (the park handshake under guest.lock orders the accesses).
 * Counters read while the vCPU runs are atomics.
 */
struct vcpu {
	struct guest *g;
	unsigned idx;
	pthread_t thread;
	bool started;
	uint64_t first; /* first page of this vCPU's share */
	uint64_t npages; /* pages in the share */

	/* Workload registers (migrated). */
	uint64_t cursor; /* ab: next page of the sweep (share-relative) */
	uint64_t sweep;	 /* ab: sweep number s; random: write generation */
	uint64_t prng;	 /* random: page-choice PRNG state */
	uint64_t fill_done; /* fill, text: pages of the share already filled */
	uint64_t last_tick_ns; /* CLOCK_MONOTONIC of the last progress tick */
	uint64_t max_gap_ns;   /* largest gap between consecutive ticks */
	atomic_uint_fast64_t steps; /* page steps done */

	/* Pacing (not migrated: restarts at every resume). */
	uint64_t next_ns;
	uint64_t pace_ns;
	double credit;
	uint64_t slice_end_ns; /* throttled: end of the running slice */

	/* Stall measurement across a pause: the last tick before it, and the
	 * first tick after the resume (0 until it happened). */
	uint64_t resume_from_ns;
	bool await_first;
	atomic_uint_fast64_t stall_ns;
	atomic_uint_fast64_t first_tick_ns;
	atomic_bool parked_now; /* in vcpu_park(), for a bounded pause */
};

/* How ferry-vm checks a migrated guest (--verify). */
enum vm_verify_mode {
	VM_VERIFY_OFF = 0,
	VM_VERIFY_BACKGROUND = 1, /* hashed after the pause (verify.c) */
	VM_VERIFY_STRICT = 2,	  /* hashed inside the pause */
};

/* Result of checking a loaded image (destination). */
struct guest_verify {
	bool done;	   /* a check ran on the last loaded state */
	bool digest_match; /* memory digest equal to the source's */
	bool invariant_ok; /* the workload invariant held on every page */
	uint64_t pages_checked;
	double verify_ms;
	bool in_pause;	   /* the check ran inside the pause */
	bool background;   /* armed at resume; done once every page is hashed */
	bool pending;	   /* loaded: to be armed at the next resume */
	bool state_ok;	   /* device-state digest equal to the source's */
	bool state_done;   /* state_ok is known (background: after resume) */
	bool ram_at_source; /* the source compares ram_digest (after release) */
	bool ram_vs_image;  /* a snapshot restore: ram_digest is compared with
			       the image digest of the file, here */
	uint64_t ram_digest; /* this side's page digest (ram_at_source,
				ram_vs_image) */
	double wait_ms;	     /* the running note waited this long for it */
};

/* A vCPU's workload registers as the invariant needs them. */
struct guest_regs {
	uint64_t cursor, sweep, fill_done;
};

struct guest_verifier;

struct guest {
	uint64_t mem_size;
	uint64_t npages;
	unsigned nvcpus;
	enum vm_workload workload;
	double dirty_rate; /* MB/s (10^6 B/s) for the whole guest; 0 = no cap */
	double pages_per_ns; /* the same, per vCPU, in pages per nanosecond */

	enum vm_backend backend;
	int memfd; /* -1 for anon */
	uint8_t *ram;
	uint64_t huge_added; /* hugetlb pages this guest added to the pool */
	atomic_uint_fast64_t populated; /* bytes of RAM populated so far */
	atomic_bool ram_released; /* guest_ram_release(): nothing may read it */

	/* One bit per page, set after every store to the page; handed to the
	 * engine (and cleared) by guest_dirty_bitmap(). */
	atomic_uint_fast64_t *dirty;
	size_t dirty_words;

	struct vcpu *vcpus;

	/* Pause handshake. pause_word is a futex word: 1 asks every vCPU to
	 * park; vCPUs sleep on it between paced steps so a pause wakes them. */
	int pause_word;
	pthread_mutex_t lock;
	pthread_cond_t parked_cond; /* a vCPU parked (to the pauser) */
	pthread_cond_t run_cond;    /* resume or stop (to the vCPUs) */
	unsigned parked;
	bool stop;
	atomic_bool running;
	atomic_uint throttle_pct; /* auto-converge: % of time vCPUs are held */

	atomic_uint_fast64_t check_errors;
	atomic_uint fill_pending; /* vCPUs whose fill is not complete */
	atomic_uint stuck; /* vCPUs a bounded pause left unparked (blocked
			      for good on a page a lazy restore never
			      placed): they are never joined */

	/* Background verification (verify.c): while armed, a vCPU hands every
	 * page to the verifier before its first write to it. */
	atomic_bool verify_armed;
	struct guest_verifier *verifier; /* or NULL; lives with the guest */

	/* Called by vCPU 0 after each period while it runs (the console
	 * prints through it); set between guest_init() and guest_start(). */
	void (*tick_hook)(void *opaque, const struct vcpu *c, uint64_t now);
	void *tick_opaque;

	/* The kv workload: vCPU 0 calls serve() every period; it returns how
	 * many requests it handled, and sets *next_ns to when it wants to run
	 * again if nothing wakes it. Between periods the vCPU sleeps on the
	 * doorbell, a futex word the device and a pause bump. Set before
	 * guest_start(). */
	uint64_t (*serve)(void *opaque, struct vcpu *c, uint64_t now,
			  uint64_t *next_ns);
	void *serve_opaque;
	int doorbell;
};

/* The engine session currently driven by a migration thread, and the
 * results of the last one. Protected by mig.lock. */
/* TLS settings (tls.c): the options as given, and the files of a role. */
struct vm_tls {
	char dir[4096];	  /* --tls-creds DIR, or "" */
	char psk[4096];	  /* --tls-psk FILE, or "" */
	char peers[1024]; /* --tls-peer NAMEs, comma-separated */
	char prio[256];	  /* --tls-priority, or "" */
	int engine;	  /* --tls-engine: FERRY_TLS_ENGINE_* (0: auto) */
	char ca[4112], cert[4112], key[4112], crl[4112]; /* vm_tls_apply() */
};
int vm_tls_set(struct vm_tls *t, const char *key, const char *arg, char *err,
	       size_t errlen);
void vm_tls_apply(struct vm_tls *t, struct ferry_config *cfg, bool server);
void vm_tls_describe(const struct vm_tls *t, char *buf, size_t len);

struct vm_mig {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* stop or cancel requested, or init done (wakes
				the receive back-off and a wait for init) */
	ferry_session *session; /* live, or NULL */
	bool active;		/* a send or receive thread runs */
	bool joinable;
	atomic_bool cancel_requested; /* applied when the session exists */
	bool stopping; /* the process is exiting */
	bool migrated; /* source: the destination owns the guest now */
	bool arrived;  /* destination: the guest arrived; now it is an
			  ordinary VM that may migrate on */
	pthread_t thread;
	/* API client that follows it (0 = none): the one that started it, or
	 * on a source the one that recovered it last. Read by the migration
	 * thread without mig.lock. */
	_Atomic uint64_t client;

	/* Arguments of the running migration. */
	char uri[4096];
	struct ferry_config cfg;

	struct ferry_stats last; /* stats when no session is live */
	bool have_last;
	char last_err[512];
	json_object *report; /* the last report, owned */
	json_object *last_failure; /* destination: the last failed or cancelled
				      attempt (state, error, at, report), owned */
	int verified;	     /* -1 unknown (null), 0 false, 1 true */
	struct guest_verify check; /* destination: last load check */
	char note[256];		   /* destination: the note we sent */
	char vmm_err[256];	   /* why our last callback failed */
	struct devices *loaded;	   /* destination: the state as loaded, for a
				      state digest compared after resume */
	double src_digest_ms;	   /* source: hashing RAM inside the pause */
	double src_verify_ms;	   /* source: hashing RAM after release */
	int src_ram_match;	   /* source: -1 not compared, 0, 1; -2 on a
				      destination (its source compares),
				      and on a local source (the
				      destination's verdict stands) */
	char record[4096];	   /* source: --record-stream path, or "" */
	bool keep_running;	   /* source: the running send is a checkpoint */
	bool receiving;		   /* the live or last session is a receive */
	char lost[512];		   /* destination: why a lazy restore stopped
				      the guest for good, or "" */
	atomic_bool lazy_ran;	   /* a lazy restore resumed the guest */
	bool lazy_done;		   /* a lazy restore placed every page (lock) */
	ferry_session *kept;	   /* that restore's session, never destroyed:
				      its userfaultfd keeps the vCPUs that wait
				      for a page blocked */
	char cc[16];		   /* source: congestion control, or "" */
	atomic_uint listens;	   /* LISTENING events of the sessions */
	atomic_uint paused_at;	   /* listens when postcopy last paused: a
				      later one is a recovery's listener */
	bool abandoned;		   /* exiting with a run in postcopy: its
				      thread is never joined (postcopy.c) */
	struct vm_tls tls; /* the running migration's TLS files */
};

struct vm_api;
struct vm_console;
struct devices;

/* Arguments of the migrate command; negative numbers mean "not given". */
struct vm_migrate_args {
	const char *uri;
	int64_t downtime_ms;
	int64_t max_passes;
	int64_t max_precopy_ms;
	int timeout_strategy; /* enum ferry_timeout_strategy, or -1 */
	int dirty_mode;	      /* enum ferry_dirty_mode, or -1 */
	int64_t connections;  /* data connections, or -1 */
	int compress;	      /* enum ferry_compress, or -1 */
	const char *record_stream; /* or NULL */
	int64_t compress_level; /* or -1 */
	int64_t window;		/* chunks in flight per connection, or -1 */
	int64_t chunk_bytes;	/* memory record size, or -1 */
	int64_t max_bandwidth;	/* bytes per second, 0 = none, or -1 */
	int auto_converge;	/* 0 or 1, or -1 */
	const char *congestion_control; /* or NULL: automatic */
	int keep_running;	/* file: only; 0 or 1, or -1 */
	int64_t io_threads;	/* file: only; or -1 */
	int postcopy;		/* enum ferry_postcopy, or -1 */
	int64_t postcopy_after_passes; /* or -1 */
	int64_t max_pause_ms;	/* 0 = the library's choice, or -1 */
	int64_t stall_timeout_ms; /* the stall limit, or -1 (the VM's own) */
	int local;		/* by memory fds (unix: only); 0 or 1, or -1 */
	/* TLS for this migration, each NULL when not given: the VM's own
	 * --tls-* settings apply then. */
	const char *tls_creds, *tls_psk, *tls_peer, *tls_priority;
	int tls_engine;		/* FERRY_TLS_ENGINE_*, or -1 */
};

/* Why a command could not be carried out (maps to the API error class). */
enum vm_err {
	VM_OK = 0,
	VM_ERR_STATE,	/* InvalidState */
	VM_ERR_GENERIC, /* GenericError */
	VM_ERR_ARG,	/* InvalidArgument */
};

struct vm_opts {
	uint64_t mem_size;
	enum vm_backend backend;
	unsigned nvcpus;
	enum vm_workload workload;
	bool workload_given; /* --workload was on the command line */
	bool memory_given, vcpus_given, backend_given; /* the same */
	const char *memory_arg; /* --memory as given, for messages */
	double dirty_rate; /* < 0: workload default */
	bool lazy;	   /* --lazy: restore the snapshot on demand */
	bool local;	   /* --local: the memory comes by fd (incoming) */
	const char *api_path;
	const char *incoming;
	uint32_t downtime_ms;
	uint32_t stall_timeout_ms; /* 0 = the library's default */
	int32_t lane_cpu;	   /* ferry_config.lane_cpu (0: auto) */
	int32_t lane_poll_us;	   /* ferry_config.lane_poll_us (-1: the
				      library's default) */
	uint32_t version_min;	 /* protocol versions: 0 = the library's */
	uint32_t version_max;
	uint64_t disabled_caps;	 /* capabilities not offered */
	enum vm_verify_mode verify;
	bool self_test;
	struct vm_tls tls; /* --tls-*: this VM's own TLS settings */
	/* The network device (net.c): --listen, --connect, --connect-rate,
	 * --connect-count, --net-address, --net-dev (NULL when not given),
	 * --net-prepare. */
	const char *listen;
	const char *connect;
	uint64_t connect_rate;
	uint64_t connect_count;
	const char *net_address;
	const char *net_dev;
	uint64_t net_prepare; /* --net-prepare: sockets made ahead (default 64) */
};

/* Where the VM is in its start-up (main.c): the API answers from the
 * start, RAM is populated and the vCPUs started by the init thread. */
enum vm_init_state {
	VM_INIT_RUNNING = 0, /* populating RAM, starting vCPUs */
	VM_INIT_DONE = 1,    /* the guest exists (running or waiting) */
	VM_INIT_FAILED = 2,  /* see vm_init.err; the process exits */
};

struct vm_init {
	pthread_t thread;
	bool joinable;
	atomic_int state;    /* enum vm_init_state; err is set before FAILED */
	atomic_bool abort;   /* the process is exiting: stop populating */
	char err[256];	     /* why initialisation failed */
};

/* What the snapshot file of --incoming file:PATH says (snapshot.c). */
struct vm_snap {
	bool mapped;	       /* described: a mapped snapshot file */
	uint64_t image_digest; /* its RAM's page digest */
	uint64_t file_bytes;
	uint32_t passes;
};

/* FERRY_VM_FAULT's "at:MOMENT:ACTION" hooks (fault.c, tests only; fault.c
 * parses every item of the variable). */
enum vm_fault_moment {
	VM_AT_NEGOTIATION,
	VM_AT_PASS1,
	VM_AT_PASSN,
	VM_AT_STOPPED,
	VM_AT_STATE,
	VM_AT_BEFORE_READY,
	VM_AT_AFTER_READY,
	VM_AT_AFTER_RELEASED,
	VM_AT_POSTCOPY,
	VM_AT_HANDOFF,
	VM_AT_PUSHING,
	VM_AT_REPUSHING,
	VM_AT_RUNNING,
	VM_AT_COUNT,
};

enum vm_fault_action {
	VM_FA_NONE,
	VM_FA_KILL, /* SIGKILL to itself */
	VM_FA_STOP, /* SIGSTOP to itself */
	VM_FA_CUT,  /* shut the migration's TCP connections down */
	VM_FA_COUNT,
};

struct vm {
	struct vm_opts opts;
	struct vm_snap snap;
	struct guest guest;
	struct vm_init init;
	struct vm_mig mig;
	struct vm_api *api;
	struct vm_console *console; /* state.c */
	struct net *net; /* net.c: the network device, or NULL */
	struct kv *kv;	 /* kv.c: the kv workload's service, or NULL */
	struct ferry_vmm_ops ops;
	int log_level; /* engine log messages up to this level go to stderr */
	bool fault_lose_writes; /* test hook: the dirty bitmap reports nothing */
	bool fault_corrupt_page; /* test hook: a loaded page is damaged */
	unsigned fault_stall_load_ms; /* test hook: load_state stalls */
	unsigned fault_stall_pause_ms; /* test hook: the pause takes this long */
	bool fault_acquire_fail; /* test hook: a destination's acquire fails */
	bool fault_acquire_die;	 /* test hook: a destination dies in acquire */
	bool fault_hold_accept;	 /* test hook: the net backend accepts nothing
				    (handshakes wait in the listener's queue,
				    as one just before a pause does) */
	unsigned char fault_at[VM_AT_COUNT]; /* enum vm_fault_action per moment */
	atomic_bool fault_fired[VM_AT_COUNT]; /* each hook fires once */
};

/* snapshot.c */
int vm_snapshot_options(struct vm_opts *o, struct vm_snap *snap);
bool vm_restoring_file(const struct vm *vm);

/* ram.c */
int guest_ram_map(struct guest *g);
/* The next guest_ram_map() makes RAM for a local destination: the memfd
 * without population, hugetlb without reserving huge pages. */
void guest_ram_by_fd(void);
/* ferry_session_add_region()'s description of guest RAM (with its memfd,
 * FERRY_REGION_FD, when it has one). */
void guest_ram_region(const struct guest *g, struct ferry_region *r);
/* After a completed local migration: unmap guest RAM (an inaccessible
 * range stays in its place) and close the memfd. */
void guest_ram_release(struct guest *g);
int guest_ram_populate(struct guest *g, const atomic_bool *abort);
void guest_ram_unpool(struct guest *g);

/* guest.c */
int guest_init(struct guest *g, const struct vm_opts *o);
int guest_start(struct guest *g, bool parked);
void guest_pause(struct guest *g);
int guest_pause_bounded(struct guest *g, int timeout_ms, char *stuck,
			size_t len);
bool guest_is_stuck(struct guest *g);
void guest_resume(struct guest *g);
void guest_stop(struct guest *g);
void guest_fini(struct guest *g);
bool guest_running(struct guest *g);
void guest_throttle(struct guest *g, unsigned pct);
bool guest_settled(struct guest *g);
uint64_t guest_steps(struct guest *g);
uint64_t guest_check_errors(struct guest *g);
void guest_reset_derived(struct guest *g);
double guest_default_rate(enum vm_workload w);
void guest_set_workload(struct guest *g, enum vm_workload w, double rate);
int guest_dirty_bitmap(struct guest *g, uint64_t *bitmap, size_t pages);
uint64_t guest_digest(struct guest *g);
bool guest_check_invariant(struct guest *g, uint64_t *pages_checked);
unsigned guest_page_vcpu(const struct guest *g, uint64_t pg);
bool guest_page_ok(struct guest *g, const struct guest_regs *r, uint64_t pg,
		   const char **what);
void guest_page_report(struct guest *g, unsigned vcpu, uint64_t pg,
		       const char *what);
void guest_write_begin(struct guest *g, uint64_t off, uint64_t len);
void guest_write_end(struct guest *g, uint64_t off, uint64_t len);
void guest_doorbell(struct guest *g);
void vm_par_run(size_t n, void (*fn)(void *, size_t), void *ctx);
int guest_wait_first_ticks(struct guest *g, int timeout_ms, double *stall_ms);
uint64_t vm_now_ns(void);
const char *vm_workload_name(enum vm_workload w);
int vm_workload_parse(const char *s, enum vm_workload *out);
const char *vm_backend_name(enum vm_backend b);
int vm_backend_parse(const char *s, enum vm_backend *out);

/* state.c */
int vm_state_init(struct vm *vm);
void vm_state_fini(struct vm *vm);
int vm_state_save(void *opaque, struct ferry_buf *out);
int vm_state_load(void *opaque, const void *data, size_t len);
int vm_state_print_schemas(void);
int vm_state_check_loaded(struct vm *vm);

/* verify.c */
void guest_verifier_page(struct guest *g, uint64_t pg);
void guest_verifier_stop(struct guest *g);
uint64_t guest_page_digest(struct guest *g);
int vm_verify_mode_parse(const char *s, enum vm_verify_mode *out);
const char *vm_verify_mode_name(enum vm_verify_mode m);
void vm_verify_loaded_page_fault(struct vm *vm);
void vm_verify_resume(struct vm *vm);
void vm_verify_pause(struct vm *vm);
void vm_verify_note(struct vm *vm, char *note, size_t len);
void vm_verify_poll(struct vm *vm);
int vm_verify_pct(struct vm *vm);
void vm_verify_source(struct vm *vm, int rc, const struct ferry_stats *st);
void vm_verify_abandon(struct vm *vm);
void vm_verify_restored(struct vm *vm, const struct ferry_stats *st);

/* local_peer.c */
/* How long an unconfirmed local end waits for a destination whose
 * connection just reset to be reported exited (local_peer.c). */
#define PEER_EXIT_WAIT_MS 500
void vm_peer_track(struct vm *vm);
int vm_peer_state(pid_t *pid, int wait_ms);
void vm_peer_forget(void);
void vm_local_risk(int alive, pid_t pid, char *buf, size_t len);

/* main.c */
enum vm_err vm_migrate_start(struct vm *vm, const struct vm_migrate_args *a,
			     uint64_t client, char *err, size_t errlen);
enum vm_err vm_migrate_cancel(struct vm *vm, char *err, size_t errlen);
int vm_verified(struct vm *vm);
const char *vm_role(struct vm *vm);
const char *vm_guest_state(struct vm *vm, unsigned *populated_pct,
			   char *err, size_t errlen);

/* postcopy.c */
enum vm_err vm_postcopy_switch(struct vm *vm, json_object *args, char *err,
			       size_t errlen);
enum vm_err vm_postcopy_recover(struct vm *vm, json_object *args,
				uint64_t client, char *err, size_t errlen);
enum vm_err vm_postcopy_resume(struct vm *vm, json_object *args, char *err,
			       size_t errlen);
bool vm_postcopy_refuse_cancel(struct vm *vm, char *err, size_t errlen);
bool vm_postcopy_live(struct vm *vm, struct ferry_stats *st);
bool vm_postcopy_abandon(struct vm *vm);

/* api_args.c */
int api_migrate_args(json_object *args, struct vm_migrate_args *a, char *err,
		     size_t errlen);
int api_arg_bool(json_object *args, const char *key, int *out, char *err,
		 size_t errlen);
int api_arg_known(json_object *args, const char *const *known, size_t n,
		  char *err, size_t errlen);
int api_arg_uri(json_object *args, const char *key, const char **out,
		char *err, size_t errlen);

/* api.c */
int api_open(struct vm *vm);
int api_run(struct vm *vm);
void api_close(struct vm *vm);
void api_abandon(struct vm *vm);
void api_wake(struct vm *vm);
void api_send(struct vm *vm, uint64_t client, json_object *msg);
void api_event(struct vm *vm, uint64_t client, const struct ferry_event *ev);
void api_events_flush(struct vm *vm);
json_object *api_report(struct vm *vm, int rc, const struct ferry_stats *st,
			const char *errmsg, const char *note);
json_object *api_double(double v);
json_object *api_copy(json_object *o);
void api_log_result(const char *what, int rc, const struct ferry_stats *st,
		    const char *errmsg, json_object *report);
void api_note(int verified, double stall_ms, const struct guest_verify *v,
	      const struct ferry_stats *pc, char *note, size_t len);

int vm_fault_parse(struct vm *vm, const char *spec, char *err, size_t errlen);
void vm_fault_at(struct vm *vm, enum vm_fault_moment m);
void vm_fault_event(struct vm *vm, const struct ferry_event *ev);

#endif /* FERRY_VM_H */
