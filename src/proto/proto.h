/* SPDX-License-Identifier: MIT */
/*
 * proto.h - the sender and receiver protocol state machines.
 *
 * Pure transitions: (state, record type) -> (action, next state). No I/O, no
 * threads, no allocation. The engine (src/migrate) reads a record header,
 * asks the machine what it means here, performs the action (reading the
 * payload, calling the VMM), then commits the step or fails it.
 *
 * Receiver (destination), one request -> exactly one response:
 *
 *   state        | accepts             | action        | next
 *   -------------+---------------------+---------------+------------
 *   WAIT_HELLO   | HELLO               | HELLO         | WAIT_CONFIG
 *   WAIT_CONFIG  | CONFIG              | CONFIG        | IDLE
 *   IDLE         | PASS_BEGIN          | PASS_BEGIN    | PASS
 *   IDLE         | STATE               | STATE         | LOADED
 *   PASS         | MEMORY (data)       | MEMORY        | PASS
 *   PASS         | PASS_END            | PASS_END      | IDLE
 *   LOADED       | SWITCHOVER          | SWITCHOVER    | READY
 *   READY        | RELEASED            | RELEASED      | RUNNING
 *   postcopy only (capability negotiated, sm->postcopy):
 *   IDLE, PC_DISCARD | DISCARD         | DISCARD       | PC_DISCARD
 *   PC_DISCARD   | STATE               | STATE         | PC_LOADED
 *   PC_LOADED    | POSTCOPY            | POSTCOPY      | POSTCOPY *
 *   POSTCOPY     | MEMORY (data)       | MEMORY        | POSTCOPY
 *   POSTCOPY     | POSTCOPY_END        | POSTCOPY_END  | RUNNING
 *   WAIT_RESUME  | RESUME              | RESUME        | POSTCOPY
 *   local fds only (capability negotiated, sm->local_fds):
 *   IDLE         | MEMORY_FDS          | MEMORY_FDS    | MEMORY_FDS
 *   MEMORY_FDS   | STATE               | STATE         | LOADED
 *   device fds too (sm->device_fds):
 *   MEMORY_FDS   | DEVICE_FDS          | DEVICE_FDS    | DEVICE_FDS
 *   DEVICE_FDS   | STATE               | STATE         | LOADED
 *   live, not *  | ABORT               | ABORT         | ABORTED
 *   any live     | unknown optional    | SKIP          | (same)
 *   any          | anything else       | REJECT        | ABORTED / PC_PAUSED
 *
 * Every REJECT is answered with an ERROR response naming the record and the
 * state, the payload is consumed or the connection closed, and the
 * destination discards the attempt (its guest never runs) -- except after
 * the transition (*: POSTCOPY, PC_PAUSED, WAIT_RESUME), where the guest may
 * have run here and its missing memory is at the source. There nothing
 * the source sends, ABORT included, and no failure discards the guest: a
 * REJECT or fy_recv_sm_fail() leads to PC_PAUSED, and a recovery
 * connection starts a machine in WAIT_RESUME (fy_recv_sm_init_resume()).
 * The destination sends PAGE_REQ (one-way) only in POSTCOPY.
 */
#ifndef FY_PROTO_H
#define FY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum fy_recv_state {
	FY_RS_WAIT_HELLO = 0,
	FY_RS_WAIT_CONFIG,
	FY_RS_IDLE,
	FY_RS_PASS,
	FY_RS_LOADED,
	FY_RS_READY,
	FY_RS_RUNNING,
	FY_RS_ABORTED,
	/* postcopy, appended so the values above keep their meaning */
	FY_RS_PC_DISCARD,  /* DISCARD(s) applied: committed to postcopy */
	FY_RS_PC_LOADED,   /* state loaded, memory registered, not running */
	FY_RS_POSTCOPY,	   /* after the transition: the guest runs here */
	FY_RS_PC_PAUSED,   /* the link is gone; the guest waits for pages */
	FY_RS_WAIT_RESUME, /* a recovery connection, before its RESUME */
	/* local fds, appended likewise */
	FY_RS_MEMORY_FDS,  /* every region maps the source's file: the
			      memory is complete, the state follows */
	FY_RS_DEVICE_FDS,  /* the source paused and its devices'
			      descriptors are the VMM's here; the state
			      follows */
};
#define FY_RS_COUNT (FY_RS_DEVICE_FDS + 1)

enum fy_recv_action {
	FY_RA_REJECT = 0, /* answer ERROR (code/msg in the step), abort */
	FY_RA_SKIP,	  /* unknown optional record: consume, no answer */
	FY_RA_HELLO,
	FY_RA_CONFIG,
	FY_RA_PASS_BEGIN,
	FY_RA_MEMORY, /* data record: no response on success */
	FY_RA_PASS_END,
	FY_RA_STATE,
	FY_RA_SWITCHOVER,
	FY_RA_RELEASED,
	FY_RA_ABORT,
	FY_RA_JOIN, /* data connection: credentials of an extra channel */
	FY_RA_DISCARD,
	FY_RA_POSTCOPY,	    /* the transition: load, register, resume */
	FY_RA_POSTCOPY_END,
	FY_RA_RESUME,	    /* recovery: check credentials, send the have-map */
	FY_RA_MEMORY_FDS,   /* check the received fds, map them */
	FY_RA_DEVICE_FDS,   /* check the received fds, hand them to the VMM */
};

struct fy_recv_sm {
	enum fy_recv_state state;
	uint32_t last_seq; /* last request seq seen; requests must increase */
	bool postcopy;	   /* FERRY_CAP_POSTCOPY negotiated (set after HELLO) */
	bool local_fds;	   /* FERRY_CAP_LOCAL_FDS negotiated (after HELLO) */
	bool device_fds;   /* FERRY_CAP_DEVICE_FDS negotiated (after HELLO) */
};

struct fy_recv_step {
	enum fy_recv_action action;
	enum fy_recv_state next;
	bool respond;	/* the action is answered (OK on success) */
	int code;	/* for REJECT */
	char msg[160];	/* for REJECT: "PASS_END not valid in state idle" */
};

void fy_recv_sm_init(struct fy_recv_sm *sm);
/*
 * fy_recv_sm_step() - classify one incoming record.
 * @type: the record type as on the wire (with the optional bit).
 * @seq: its seq; requests must carry a seq greater than the last one, data
 *       records 0.
 * Never fails: an invalid record yields FY_RA_REJECT.
 */
void fy_recv_sm_step(const struct fy_recv_sm *sm, uint32_t type, uint32_t seq,
		     struct fy_recv_step *out);
/* The action succeeded: move to step->next and remember the seq. */
void fy_recv_sm_commit(struct fy_recv_sm *sm, const struct fy_recv_step *step,
		       uint32_t seq);
/* The action failed or the connection broke: ABORTED (terminal), or
 * PC_PAUSED after the transition. */
void fy_recv_sm_fail(struct fy_recv_sm *sm);
/*
 * fy_recv_sm_transition() - the engine is about to run the guest on a
 * POSTCOPY it accepted: from now on the guest may have run here, so a
 * failure before the commit (answering OK, say) leads to PC_PAUSED, not
 * ABORTED. Call it before the first vCPU runs. Return: 0, or -EPROTO when
 * the machine is not in PC_LOADED (nothing changes).
 */
int fy_recv_sm_transition(struct fy_recv_sm *sm);
/* A machine for a recovery connection of a postcopy session: WAIT_RESUME. */
void fy_recv_sm_init_resume(struct fy_recv_sm *sm);
/* May the destination send PAGE_REQ now? (only in POSTCOPY) */
bool fy_recv_sm_may_request(const struct fy_recv_sm *sm);
const char *fy_recv_state_name(enum fy_recv_state s);

/*
 * Sender (source). The engine decides what to send; the machine checks
 * that the request is valid now and that each response answers the
 * outstanding request.
 *
 *   state       | may send                | on OK         | on ERROR
 *   ------------+-------------------------+---------------+---------
 *   START       | HELLO                   | NEGOTIATED    | FAILED
 *   NEGOTIATED  | CONFIG                  | CONFIGURED    | FAILED
 *   CONFIGURED  | PASS_BEGIN, STATE       | IN_PASS/STATE_SENT | FAILED
 *   IN_PASS     | MEMORY (data), PASS_END | CONFIGURED    | FAILED
 *   STATE_SENT  | SWITCHOVER              | READY         | FAILED
 *   READY       | RELEASED                | DONE          | FAILED
 *   postcopy only (sm->postcopy):
 *   CONFIGURED, PC_DISCARD | DISCARD      | PC_DISCARD    | FAILED
 *   PC_DISCARD  | STATE                   | PC_LOADED     | FAILED
 *   PC_LOADED   | POSTCOPY -> POSTCOPY *  | POSTCOPY      | PC_PAUSED
 *   POSTCOPY    | MEMORY (data), POSTCOPY_END | DONE      | PC_PAUSED
 *   PC_PAUSED   | RESUME -> PC_RESUMING   | POSTCOPY      | PC_PAUSED
 *   local fds only (sm->local_fds):
 *   CONFIGURED  | MEMORY_FDS              | FDS_SENT      | FAILED
 *   FDS_SENT    | STATE                   | STATE_SENT    | FAILED
 *   device fds too (sm->device_fds), paused:
 *   FDS_SENT    | DEVICE_FDS              | DEVFDS_SENT   | FAILED
 *   DEVFDS_SENT | STATE                   | STATE_SENT    | FAILED
 *   live, not * | ABORT                   | FAILED        | FAILED
 *
 * *: sending POSTCOPY is the transition (Xen's postcopy_transitioned):
 * recorded before the answer and never forgotten, except by an ERROR
 * with FY_ERR_NOT_RUN answering POSTCOPY itself (fy_send_sm_not_run()).
 * After it, every failure leads to PC_PAUSED, never to FAILED, and ABORT
 * is refused. PAGE_REQ arrives (fy_send_sm_input()) only in POSTCOPY
 * after the OK; MEMORY answers it, unacknowledged, like the push.
 */
enum fy_send_state {
	FY_SS_START = 0,
	FY_SS_NEGOTIATED,
	FY_SS_CONFIGURED,
	FY_SS_IN_PASS,
	FY_SS_STATE_SENT,
	FY_SS_READY,
	FY_SS_RELEASED, /* RELEASED sent: the point of no return */
	FY_SS_DONE,
	FY_SS_FAILED,
	/* postcopy, appended so the values above keep their meaning */
	FY_SS_PC_DISCARD,  /* DISCARD answered: committed to postcopy */
	FY_SS_PC_LOADED,   /* STATE answered after DISCARD */
	FY_SS_POSTCOPY,	   /* POSTCOPY sent: the transition */
	FY_SS_PC_PAUSED,   /* a failure after the transition */
	FY_SS_PC_RESUMING, /* RESUME sent on a recovery connection */
	/* local fds, appended likewise */
	FY_SS_FDS_SENT,	   /* MEMORY_FDS answered: the destination maps
			      the memory; no pass may follow */
	FY_SS_DEVFDS_SENT, /* DEVICE_FDS answered: the destination's VMM
			      holds the devices' descriptors too */
};
#define FY_SS_COUNT (FY_SS_DEVFDS_SENT + 1)

struct fy_send_sm {
	enum fy_send_state state;
	uint32_t next_seq;	/* seq of the next request (starts at 1) */
	uint32_t pending_type;	/* request awaiting its response, or 0 */
	uint32_t pending_seq;
	bool released;		/* RELEASED was sent (sticky, even if FAILED) */
	bool postcopy;		/* FERRY_CAP_POSTCOPY negotiated */
	bool local_fds;		/* FERRY_CAP_LOCAL_FDS negotiated */
	bool device_fds;	/* FERRY_CAP_DEVICE_FDS negotiated */
	bool transitioned;	/* POSTCOPY was sent (sticky but for NOT_RUN) */
	uint32_t refused_type;	/* request an ERROR just answered, or 0 */
};

void fy_send_sm_init(struct fy_send_sm *sm);
/*
 * fy_send_sm_request() - the engine wants to send a request of @type.
 * Return: 0 with *seq set, or -EPROTO when not valid in this state or while
 * another request is outstanding.
 */
int fy_send_sm_request(struct fy_send_sm *sm, uint32_t type, uint32_t *seq);
/* May a data record be sent now? 0 or -EPROTO. */
int fy_send_sm_data(const struct fy_send_sm *sm);
/*
 * fy_send_sm_response() - a response record arrived.
 * Return: 0 for OK answering the pending request (state advanced),
 * FERRY_EPEER for ERROR (state FAILED), FERRY_EPROTO for anything that does
 * not answer the pending request (state FAILED).
 */
int fy_send_sm_response(struct fy_send_sm *sm, uint32_t type, uint32_t seq);
/* Any fatal failure: FAILED. */
void fy_send_sm_fail(struct fy_send_sm *sm);
/* True once RELEASED has been sent: failures no longer resume the source. */
bool fy_send_sm_past_release(const struct fy_send_sm *sm);
/*
 * fy_send_sm_not_run() - the ERROR that just answered POSTCOPY carries
 * FY_ERR_NOT_RUN: the destination positively did not run the guest. Clears
 * the transition (the source owns its guest again) and leaves FAILED.
 * Return: 0, or -EPROTO when the last answer was not an ERROR to POSTCOPY
 * (an answer to RESUME never gives the guest back: see stream-format.md).
 */
int fy_send_sm_not_run(struct fy_send_sm *sm);

/* What a record arriving at the source means. */
enum fy_send_input {
	FY_SI_REJECT = 0, /* a protocol error: fail (PC_PAUSED after *) */
	FY_SI_RESPONSE,	  /* OK or ERROR: pass to fy_send_sm_response() */
	FY_SI_PAGE_REQ,	  /* serve the pages on this connection */
	FY_SI_SKIP,	  /* consume, nothing to do */
};
enum fy_send_input fy_send_sm_input(const struct fy_send_sm *sm,
				    uint32_t type, uint32_t seq, char *msg,
				    size_t len);
const char *fy_send_state_name(enum fy_send_state s);

/*
 * Who may run the guest. One definition for the engine, the statistics
 * and the JSON reports of both sides.
 */
enum fy_owner {
	FY_OWNER_NONE = 0,    /* no guest in the session's care yet */
	FY_OWNER_SOURCE,
	FY_OWNER_DESTINATION, /* including "may have run there": unknown */
};
const char *fy_owner_name(enum fy_owner o);
enum fy_owner fy_send_owner(enum fy_send_state state, bool released,
			    bool transitioned);
enum fy_owner fy_send_sm_owner(const struct fy_send_sm *sm);
enum fy_owner fy_recv_owner(enum fy_recv_state state);

/*
 * Extra data connections (issue 4): the first record must be JOIN (seq 1)
 * with the session id and token from HELLO's answer; after an OK only
 * MEMORY data (and unknown optional records) may follow. Anything else is
 * answered with ERROR and the connection closed.
 */
enum fy_data_state {
	FY_DS_WAIT_JOIN = 0,
	FY_DS_JOINED,
};
void fy_data_sm_step(enum fy_data_state state, uint32_t type, uint32_t seq,
		     struct fy_recv_step *out);

#endif /* FY_PROTO_H */
