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
 *   any live     | ABORT               | ABORT         | ABORTED
 *   any live     | unknown optional    | SKIP          | (same)
 *   any          | anything else       | REJECT        | ABORTED
 *
 * Every REJECT is answered with an ERROR response naming the record and the
 * state, the payload is consumed or the connection closed, and the
 * destination discards the attempt (its guest never runs).
 */
#ifndef FY_PROTO_H
#define FY_PROTO_H

#include <stdbool.h>
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
};

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
};

struct fy_recv_sm {
	enum fy_recv_state state;
	uint32_t last_seq; /* last request seq seen; requests must increase */
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
/* The action failed or the connection broke: ABORTED (terminal). */
void fy_recv_sm_fail(struct fy_recv_sm *sm);
const char *fy_recv_state_name(enum fy_recv_state s);

/*
 * Sender (source). The engine decides what to send; the machine checks
 * that the request is valid now and that each response answers the
 * outstanding request.
 *
 *   state       | may send            | on OK         | on ERROR
 *   ------------+---------------------+---------------+---------
 *   START       | HELLO               | NEGOTIATED    | FAILED
 *   NEGOTIATED  | CONFIG              | CONFIGURED    | FAILED
 *   CONFIGURED  | PASS_BEGIN, STATE   | IN_PASS/STATE_SENT | FAILED
 *   IN_PASS     | MEMORY (data), PASS_END | CONFIGURED | FAILED
 *   STATE_SENT  | SWITCHOVER          | READY         | FAILED
 *   READY       | RELEASED            | DONE          | FAILED
 *   any live    | ABORT               | FAILED        | FAILED
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
};

struct fy_send_sm {
	enum fy_send_state state;
	uint32_t next_seq;	/* seq of the next request (starts at 1) */
	uint32_t pending_type;	/* request awaiting its response, or 0 */
	uint32_t pending_seq;
	bool released;		/* RELEASED was sent (sticky, even if FAILED) */
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
const char *fy_send_state_name(enum fy_send_state s);

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
