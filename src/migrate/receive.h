/* SPDX-License-Identifier: MIT */
/*
 * receive.h - the destination's run, shared by receive.c (connection,
 * negotiation, precopy passes, switchover) and postcopy_recv.c (the
 * postcopy phase after the transition, its pauses and its recoveries).
 */
#ifndef FY_RECEIVE_H
#define FY_RECEIVE_H

#include "migrate/channels.h"
#include "migrate/engine.h"
#include "proto/proto.h"
#include "transport/transport.h"

struct fy_lazy;

/* Postcopy's part of a receiver (postcopy_recv.c). */
struct fy_pc_recv {
	bool full_pass;	/* a pass that planned all of RAM has ended */
	/* Pages the DISCARDs named, one bit per 4 KiB page per region. */
	uint64_t *missing[FY_MAX_REGIONS];
	uint64_t nmissing; /* distinct pages named */
	struct fy_lazy *lazy;
	uint64_t units[FY_MAX_REGIONS]; /* per region, from the loader */
	struct fy_bulk stage;	/* the main connection's staging buffer */
	size_t stage_size;	/* every connection's, in bytes */
	/* The main connection's sending direction is shared by the fault
	 * thread (PAGE_REQ) and the main thread (answers) after the
	 * transition: tx_lock guards it, and what follows. */
	pthread_mutex_t tx_lock;
	bool req_open;		/* PAGE_REQ may go out (after the OK) */
	/* HELLO negotiated keep-alives: the keeper runs through each
	 * phase, and the source takes silence for a stall. */
	bool keep;
	struct fy_buf req;	/* a PAGE_REQ, encoded */
	_Atomic uint64_t pages_requested;
	/* MEMORY records and bytes the main connection placed since the
	 * last OK of POSTCOPY or RESUME. */
	uint64_t records, bytes;
	/* Credentials from HELLO's answer, for RESUME. */
	uint64_t session_id;
	uint8_t token[16];
	uint32_t generation; /* the highest RESUME generation accepted */
	uint32_t channels;   /* connections the source uses (from JOIN) */
	uint32_t recoveries;
	bool acquired;	     /* the VMM took the external resources */
	bool resumed;	     /* the guest's vCPUs were resumed here */
	uint64_t t_lazy_ns, t_resume_ns;
	/* The listener the current connections came through, when it is
	 * ours: its UNIX socket file goes with it. */
	struct fy_uri where;
	bool where_ours;
};

/* Local migration by fds (local.c): the source's files, mapped over the
 * regions from MEMORY_FDS until RELEASED (or the failure that unmaps
 * them). */
struct fy_local_recv {
	int fd[FY_MAX_REGIONS];	/* received, -1 when closed */
	uint64_t fd_offset[FY_MAX_REGIONS];
	unsigned n;		/* descriptors held */
	unsigned mapped;	/* regions 0..mapped-1 map the source's files */
};

struct receiver {
	ferry_session *s;
	struct fy_chan ch;
	struct fy_recv_pool pool; /* extra data connections */
	struct fy_recv_sm sm;
	struct fy_pass_begin pass;
	uint64_t pass_records;
	uint64_t pass_bytes;
	uint64_t t_final; /* final pass began: the source is paused */
	bool final_done;  /* a final pass completed: STATE may follow */
	bool resumed;
	uint64_t stall_ns; /* the pass barrier waited this long for data */
	bool link_timeout; /* a read of the main connection timed out (the
			      kernel's TCP_USER_TIMEOUT, say): a stall too */
	bool keep;	   /* HELLO negotiated keep-alives: start the keeper */
	struct fy_keeper keeper; /* KEEPALIVE on ch while this side works */
	struct fy_pc_recv pc;
	struct fy_local_recv local;
	char err[384];
};

/* receive.c */
/* OK / ERROR on the main connection (under pc.tx_lock). */
int fy_recv_respond_ok(struct receiver *x, uint32_t seq, const struct fy_buf *b);
void fy_recv_respond_error(struct receiver *x, uint32_t seq, int code,
			   const char *msg);
/* Listen on @u (tcp: or unix: only, never a borrowed fd), sized for the
 * session's window and announced as accept_one does. 0 and *@lfd, or a
 * negative code with @err set. */
int fy_recv_listen(ferry_session *s, const struct fy_uri *u, int *lfd,
		   char *err, size_t errlen);

/* local.c */
void fy_local_init(struct receiver *x);
/* MEMORY_FDS: check and map the received files (x->err on failure). */
int fy_local_on_fds(struct receiver *x);
/* DEVICE_FDS: check the received descriptors, hand them to load_fds. */
int fy_local_on_device_fds(struct receiver *x);
/* RELEASED: the files back the regions' fds; the received ones close. */
void fy_local_commit(struct receiver *x);
/* A failure before the guest ran here: own memory back, files closed. */
void fy_local_undo(struct receiver *x);

/* postcopy_recv.c */
void fy_pc_init(struct receiver *x);
void fy_pc_free(struct receiver *x);
/* At HELLO: may this destination offer postcopy? (@why: if not). */
bool fy_pc_can_offer(struct receiver *x, char *why, size_t len);
int fy_pc_discard(struct receiver *x, struct fy_buf *reply);
/* POSTCOPY: count check, register memory, the transition, resume; fills
 * @reply with the OK's body. Before the transition a failure leaves
 * the machine in PC_LOADED (the caller answers not-run). */
int fy_pc_postcopy(struct receiver *x, struct fy_buf *reply);
/*
 * The postcopy phase after the OK of POSTCOPY, with pauses and
 * recoveries, until every page is placed and POSTCOPY_END is answered.
 * @rc: 0, or the failure that already ended the transition's connection.
 * Return: 0 (completed); it does not return while paused.
 */
int fy_pc_run(struct receiver *x, int rc);

#endif /* FY_RECEIVE_H */
