/* SPDX-License-Identifier: MIT */
/*
 * sender.h - the source's state, shared by send.c (precopy, switchover)
 * and postcopy_send.c (the switch to postcopy, serving pages, recovery).
 */
#ifndef FY_SENDER_H
#define FY_SENDER_H

#include "migrate/channels.h"
#include "migrate/engine.h"
#include "migrate/snapfile.h"
#include "proto/proto.h"
#include "transport/transport.h"

struct sender {
	ferry_session *s;
	struct fy_chan ch; /* the main connection: control and data */
	struct fy_keeper keeper; /* KEEPALIVE on ch while this side works */
	struct fy_chan extra[FY_MAX_CHANNELS - 1]; /* data only */
	unsigned nextra;
	struct fy_send_pool pool; /* when there are extra connections */
	struct fy_send_sm sm;
	struct fy_dirty dirty;
	bool tracking;
	struct fy_ranges ranges;
	struct fy_ranges carry; /* lost with a broken connection: send again */
	struct fy_hello_reply peer;
	bool same_host;
	uint32_t window;      /* chunks in flight per connection (HELLO) */
	bool csum_data;	      /* negotiated: final pass checksums page data */
	bool paused;
	bool released_ok;     /* VMM's release() succeeded */
	bool peer_refused;    /* the destination said it will not run */
	bool released_lost;   /* RELEASED provably never reached the
				 destination (send.c: released_lost()) */
	bool released_unwritten; /* RELEASED's write failed */
	bool released_marked; /* released_mark is known (TCP) */
	uint64_t released_mark; /* the stream's end, RELEASED included */
	bool file_handed;     /* a snapshot's rename gave the file the guest */
	uint32_t throttle;    /* auto-converge: vCPU throttle applied, % */
	uint32_t slow_passes; /* consecutive passes that did not halve */
	double bw;	      /* bytes per second, last pass */
	uint64_t rtt_ns;      /* control round trip on an idle channel */
	uint64_t t_collect;   /* time of the last dirty collect */
	uint64_t t_pause;
	uint64_t t_resumed;   /* destination resumed (its clock if shared) */
	uint64_t state_bytes; /* size of the state blob, once known */
	uint64_t last_pass_bytes; /* memory bytes of the last pass */
	bool to_file;	      /* a snapshot: memory goes into page slots */
	struct fy_snapw *snap; /* the snapshot file being written */
	/* Postcopy (postcopy_send.c). */
	bool pc_usable;	      /* negotiated, with a data connection */
	bool pc_go;	      /* precopy ended to switch to postcopy */
	struct fy_uri uri;    /* where the destination is (recovery JOINs) */
	struct fy_units units; /* the destination's, from DISCARD's answer */
	uint64_t t_pass;      /* the current pass began */
	bool hold_logged;     /* "passes cannot converge" was logged */
	bool pc_probed;	      /* auto: the dirty rate was sampled in pass 1 */
	bool pc_cut;	      /* a pass ended early to switch */
	bool pc_dead_logged;  /* "no data connection left" was logged */
	struct fy_ranges early; /* pages found dirty during a pass */
	/* Local migration by fds (local.c). */
	bool local;	      /* cfg.local_fds, checked: no pass runs */
	struct fy_memory_fds lfds; /* the regions' files, as MEMORY_FDS says */
	int *devfds;	      /* device fds negotiated: save_fds's room */
	uint32_t *devkind;    /* and their kinds (FY_DEVFDS_MAX each) */
};

/* send.c, for postcopy_send.c */
int fy_snd_request(struct sender *x, uint32_t type, const struct fy_buf *body,
		   const char *what);
/* As fy_snd_request(), with @fds (1..FY_FDS_MAX) attached (SCM_RIGHTS). */
int fy_snd_request_fds(struct sender *x, uint32_t type,
		       const struct fy_buf *body, const char *what,
		       const int *fds, unsigned nfds);
int fy_snd_io_fail(struct sender *x, int rc, const char *what);
/* Connection @c timed out: FERRY_ETIMEOUT naming the destination's silence. */
int fy_snd_stall_fail(struct sender *x, struct fy_chan *c, const char *what);
int fy_snd_pause(struct sender *x);
void fy_snd_lift_throttle(struct sender *x);
int fy_snd_collect(struct sender *x, bool keep);
int fy_snd_state(struct sender *x);
void fy_snd_sync_owner(struct sender *x);
int fy_snd_connect(ferry_session *s, const struct fy_uri *u, int *fd,
		   char *err, size_t errlen);
void fy_snd_setup_socket(struct sender *x, int fd, unsigned idx);
int fy_snd_encoding(struct sender *x, struct fy_chan *c);
int fy_snd_join(struct sender *x, const struct fy_uri *u, unsigned idx,
		unsigned total, char *why, size_t len);

/* local.c */
/* Before connecting: a unix: URI and a file behind every region. */
int fy_local_check(struct sender *x, const struct fy_uri *u);
/* After HELLO, guest running: MEMORY_FDS with the files attached. */
int fy_local_send(struct sender *x);
/* Paused, device fds negotiated: save_fds, then DEVICE_FDS. */
int fy_local_send_devices(struct sender *x);
void fy_local_free(struct sender *x);

/* postcopy_send.c */
/* fy_send_pool_pass()'s stop: end this pass now to switch? */
bool fy_pc_cut(void *opaque, uint64_t sent);
/* Whether precopy should end now to switch to postcopy (after pass @pass,
 * with @expect ms predicted); logs why. */
bool fy_pc_want(struct sender *x, uint32_t pass, double expect,
		bool at_limit);
/*
 * The switch and the postcopy phase, to the end: 0 when the destination
 * has every page; FERRY_EPOSTCOPY when an operator forced the source's
 * copy to run (resumed here, the message says what that risks). Any
 * other code: a failure before the transition (the caller unwinds:
 * the source resumes its guest), or the destination refused POSTCOPY
 * with not-run (likewise).
 */
int fy_pc_send(struct sender *x);

#endif /* FY_SENDER_H */
