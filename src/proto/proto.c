/* SPDX-License-Identifier: MIT */
/*
 * proto.c - the sender and receiver protocol state machines.
 *
 * Both machines are tables plus a few rules that apply to every row (seq
 * numbers, responses, unknown records, ABORT). They only classify: the
 * engine performs the action and then commits or fails the step, so a
 * state never advances past an action that did not happen.
 */
#include "proto/proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ferry.h"
#include "wire/wire.h"

/* ---- receiver ---- */

/* The requests (and the one data record) the receiver accepts, per state.
 * ABORT is not listed: it is valid in every live state. */
static const struct recv_rule {
	enum fy_recv_state state;
	uint32_t type;
	enum fy_recv_action action;
	enum fy_recv_state next;
} recv_rules[] = {
	{ FY_RS_WAIT_HELLO, FY_REC_HELLO, FY_RA_HELLO, FY_RS_WAIT_CONFIG },
	{ FY_RS_WAIT_CONFIG, FY_REC_CONFIG, FY_RA_CONFIG, FY_RS_IDLE },
	{ FY_RS_IDLE, FY_REC_PASS_BEGIN, FY_RA_PASS_BEGIN, FY_RS_PASS },
	{ FY_RS_IDLE, FY_REC_STATE, FY_RA_STATE, FY_RS_LOADED },
	{ FY_RS_PASS, FY_REC_MEMORY, FY_RA_MEMORY, FY_RS_PASS },
	{ FY_RS_PASS, FY_REC_PASS_END, FY_RA_PASS_END, FY_RS_IDLE },
	{ FY_RS_LOADED, FY_REC_SWITCHOVER, FY_RA_SWITCHOVER, FY_RS_READY },
	{ FY_RS_READY, FY_REC_RELEASED, FY_RA_RELEASED, FY_RS_RUNNING },
	/* postcopy: reached only when the capability was negotiated */
	{ FY_RS_IDLE, FY_REC_DISCARD, FY_RA_DISCARD, FY_RS_PC_DISCARD },
	{ FY_RS_PC_DISCARD, FY_REC_DISCARD, FY_RA_DISCARD, FY_RS_PC_DISCARD },
	{ FY_RS_PC_DISCARD, FY_REC_STATE, FY_RA_STATE, FY_RS_PC_LOADED },
	{ FY_RS_PC_LOADED, FY_REC_POSTCOPY, FY_RA_POSTCOPY, FY_RS_POSTCOPY },
	{ FY_RS_POSTCOPY, FY_REC_MEMORY, FY_RA_MEMORY, FY_RS_POSTCOPY },
	{ FY_RS_POSTCOPY, FY_REC_POSTCOPY_END, FY_RA_POSTCOPY_END, FY_RS_RUNNING },
	{ FY_RS_WAIT_RESUME, FY_REC_RESUME, FY_RA_RESUME, FY_RS_POSTCOPY },
	/* local fds: reached only when the capability was negotiated */
	{ FY_RS_IDLE, FY_REC_MEMORY_FDS, FY_RA_MEMORY_FDS, FY_RS_MEMORY_FDS },
	{ FY_RS_MEMORY_FDS, FY_REC_STATE, FY_RA_STATE, FY_RS_LOADED },
	/* device fds: with local fds, when negotiated too */
	{ FY_RS_MEMORY_FDS, FY_REC_DEVICE_FDS, FY_RA_DEVICE_FDS, FY_RS_DEVICE_FDS },
	{ FY_RS_DEVICE_FDS, FY_REC_STATE, FY_RA_STATE, FY_RS_LOADED },
};

/**
 * fy_recv_sm_init() - a receiver waiting for HELLO, no request seen yet.
 * @sm: the machine.
 */
void fy_recv_sm_init(struct fy_recv_sm *sm)
{
	sm->state = FY_RS_WAIT_HELLO;
	sm->last_seq = 0;
	sm->postcopy = false;
	sm->local_fds = false;
	sm->device_fds = false;
}

/**
 * fy_recv_sm_init_resume() - a machine for a recovery connection of a
 * postcopy session: it waits for RESUME, seq numbers start again.
 * @sm: the machine.
 */
void fy_recv_sm_init_resume(struct fy_recv_sm *sm)
{
	sm->state = FY_RS_WAIT_RESUME;
	sm->last_seq = 0;
	sm->postcopy = true;
	sm->local_fds = false;
	sm->device_fds = false;
}

/* Live states are those in which a connection carries records that may
 * lead on. PC_PAUSED has no connection: whatever arrives there is late. */
static bool recv_live(enum fy_recv_state s)
{
	switch (s) {
	case FY_RS_WAIT_HELLO:
	case FY_RS_WAIT_CONFIG:
	case FY_RS_IDLE:
	case FY_RS_PASS:
	case FY_RS_LOADED:
	case FY_RS_READY:
	case FY_RS_PC_DISCARD:
	case FY_RS_PC_LOADED:
	case FY_RS_POSTCOPY:
	case FY_RS_WAIT_RESUME:
	case FY_RS_MEMORY_FDS:
	case FY_RS_DEVICE_FDS:
		return true;
	case FY_RS_RUNNING:
	case FY_RS_ABORTED:
	case FY_RS_PC_PAUSED:
		break;
	}
	return false;
}

/* After the transition the guest may have run here: nothing may discard
 * it, and a failure pauses instead. */
static bool recv_transitioned(enum fy_recv_state s)
{
	return s == FY_RS_POSTCOPY || s == FY_RS_PC_PAUSED ||
	       s == FY_RS_WAIT_RESUME;
}

/* The postcopy records (0x0400-0x04ff that this version knows). */
static bool rec_postcopy(uint32_t type)
{
	return type == FY_REC_DISCARD || type == FY_REC_POSTCOPY ||
	       type == FY_REC_PAGE_REQ || type == FY_REC_POSTCOPY_END ||
	       type == FY_REC_RESUME;
}

/* Types with a meaning in this protocol version, by exact value. */
static bool rec_known(uint32_t type)
{
	switch (type) {
	case FY_REC_HELLO:
	case FY_REC_CONFIG:
	case FY_REC_PASS_BEGIN:
	case FY_REC_PASS_END:
	case FY_REC_STATE:
	case FY_REC_SWITCHOVER:
	case FY_REC_RELEASED:
	case FY_REC_ABORT:
	case FY_REC_JOIN:
	case FY_REC_OK:
	case FY_REC_ERROR:
	case FY_REC_MEMORY:
	case FY_REC_MEMORY_FDS:
	case FY_REC_DEVICE_FDS:
		return true;
	}
	return rec_postcopy(type);
}

/*
 * Fill @out as a rejection. Every REJECT is answered and ends the attempt,
 * so the message is what the source's operator will read: it names the
 * record and the state.
 */
__attribute__((format(printf, 3, 4)))
static void recv_reject(struct fy_recv_step *out, int code, const char *fmt,
			...)
{
	va_list ap;

	out->action = FY_RA_REJECT;
	out->next = FY_RS_ABORTED;
	out->respond = true;
	out->code = code;
	va_start(ap, fmt);
	vsnprintf(out->msg, sizeof(out->msg), fmt, ap);
	va_end(ap);
}

/* The table row for (@state, @type), with ABORT valid in any live state
 * before the transition (the caller refuses it after). */
static bool recv_lookup(enum fy_recv_state state, uint32_t type,
			struct fy_recv_step *out)
{
	if (type == FY_REC_ABORT && !recv_transitioned(state)) {
		out->action = FY_RA_ABORT;
		out->next = FY_RS_ABORTED;
		return true;
	}
	for (size_t i = 0; i < sizeof(recv_rules) / sizeof(recv_rules[0]); i++) {
		if (recv_rules[i].state == state && recv_rules[i].type == type) {
			out->action = recv_rules[i].action;
			out->next = recv_rules[i].next;
			return true;
		}
	}
	return false;
}

/* The seq rule of a record the table accepted: data carries 0, requests
 * strictly increase. */
static void recv_check_seq(const struct fy_recv_sm *sm, uint32_t type,
			   uint32_t seq, const char *name,
			   struct fy_recv_step *out)
{
	if (type == FY_REC_MEMORY && seq != 0) {
		recv_reject(out, FERRY_EPROTO,
			    "%s is data and must carry seq 0, not %u", name,
			    (unsigned)seq);
	} else if (type != FY_REC_MEMORY && seq <= sm->last_seq) {
		recv_reject(out, FERRY_EPROTO,
			    "%s seq %u is not greater than the last request seq %u",
			    name, (unsigned)seq, (unsigned)sm->last_seq);
	} else {
		out->respond = out->action != FY_RA_MEMORY;
	}
}

/**
 * fy_recv_sm_step() - classify one incoming record.
 * @sm: the machine (not modified).
 * @type: the record type as on the wire (with the optional bit).
 * @seq: its seq.
 * @out: receives the action, the next state, whether the action is
 *       answered, and for REJECT the code and message.
 *
 * Checks run from the most general to the most specific: a finished
 * session accepts nothing; responses never travel towards the receiver;
 * unknown records are skipped or rejected by their optional bit; a known
 * record must be valid in the state (postcopy records only when the
 * capability was negotiated, PAGE_REQ never in this direction, ABORT never
 * after the transition); only then is its seq checked (data carries 0,
 * requests strictly increase, so a replayed or duplicated request cannot
 * be acted on twice). After the transition a rejection leads to
 * PC_PAUSED: the guest stays, the connection goes.
 */
void fy_recv_sm_step(const struct fy_recv_sm *sm, uint32_t type, uint32_t seq,
		     struct fy_recv_step *out)
{
	const char *st = fy_recv_state_name(sm->state);
	char nbuf[16];
	const char *name = fy_rec_name(type, nbuf, sizeof(nbuf));

	memset(out, 0, sizeof(*out));
	out->next = sm->state;
	if (!recv_live(sm->state)) {
		recv_reject(out, FERRY_EPROTO, "%s is not valid in state %s",
			    name, st);
	} else if (type == FY_REC_OK || type == FY_REC_ERROR) {
		recv_reject(out, FERRY_EPROTO,
			    "%s is a response; the destination accepts only requests",
			    name);
	} else if (!rec_known(type) && fy_rec_optional(type)) {
		out->action = FY_RA_SKIP;
	} else if (!rec_known(type)) {
		recv_reject(out, FERRY_EUNKNOWN,
			    "unknown mandatory record %s in state %s", name, st);
	} else if (rec_postcopy(type) && !sm->postcopy) {
		recv_reject(out, FERRY_EPROTO,
			    "%s needs the postcopy capability, which this session did not negotiate",
			    name);
	} else if (type == FY_REC_MEMORY_FDS && !sm->local_fds) {
		recv_reject(out, FERRY_EPROTO,
			    "%s needs the local-fds capability, which this session did not negotiate",
			    name);
	} else if (type == FY_REC_DEVICE_FDS && !sm->device_fds) {
		recv_reject(out, FERRY_EPROTO,
			    "%s needs the device-fds capability, which this session did not negotiate",
			    name);
	} else if (type == FY_REC_PAGE_REQ) {
		recv_reject(out, FERRY_EPROTO,
			    "%s travels from the destination to the source", name);
	} else if (type == FY_REC_ABORT && recv_transitioned(sm->state)) {
		recv_reject(out, FERRY_EPROTO,
			    "ABORT after POSTCOPY: the guest may have run here and its missing memory is at the source; the destination keeps it (state %s)",
			    st);
	} else if (!recv_lookup(sm->state, type, out)) {
		recv_reject(out, FERRY_EPROTO, "%s is not valid in state %s",
			    name, st);
	} else {
		recv_check_seq(sm, type, seq, name, out);
	}
	/* After the transition a rejection ends the connection, not the
	 * guest; a guest running here after the end stays running. */
	if (out->action == FY_RA_REJECT && recv_transitioned(sm->state))
		out->next = FY_RS_PC_PAUSED;
	else if (out->action == FY_RA_REJECT && sm->state == FY_RS_RUNNING)
		out->next = FY_RS_RUNNING;
	/* A POSTCOPY refused before the transition: the guest never ran
	 * here, and only this code lets the source take it back. */
	else if (out->action == FY_RA_REJECT && type == FY_REC_POSTCOPY)
		out->code = FY_ERR_NOT_RUN;
}

/**
 * fy_recv_sm_commit() - the action of @step succeeded: move to its next
 * state and remember the request's seq.
 * @sm: the machine.
 * @step: the step fy_recv_sm_step() returned for this record.
 * @seq: the record's seq.
 *
 * last_seq only ever grows: a skipped optional record had its seq
 * unchecked, and must not lower the bar for the requests after it.
 */
void fy_recv_sm_commit(struct fy_recv_sm *sm, const struct fy_recv_step *step,
		       uint32_t seq)
{
	sm->state = step->next;
	if (seq > sm->last_seq)
		sm->last_seq = seq;
}

/**
 * fy_recv_sm_fail() - the action failed or the connection broke: the
 * attempt is over (ABORTED is terminal) -- unless the transition happened,
 * in which case the guest stays here, paused on its missing pages, and
 * the session waits for a recovery connection (PC_PAUSED), or the guest
 * already runs here (RUNNING stays: a late broken connection or a junk
 * record cannot hand a running guest back to the source).
 * @sm: the machine.
 */
void fy_recv_sm_fail(struct fy_recv_sm *sm)
{
	if (sm->state == FY_RS_RUNNING)
		return; /* the guest runs here: nothing after can undo that */
	sm->state = recv_transitioned(sm->state) ? FY_RS_PC_PAUSED
						 : FY_RS_ABORTED;
}

/**
 * fy_recv_sm_transition() - see proto.h.
 * @sm: the machine.
 *
 * Return: 0, or -EPROTO outside PC_LOADED.
 */
int fy_recv_sm_transition(struct fy_recv_sm *sm)
{
	if (sm->state != FY_RS_PC_LOADED)
		return -EPROTO;
	sm->state = FY_RS_POSTCOPY;
	return 0;
}

/**
 * fy_recv_sm_may_request() - may the destination send PAGE_REQ now?
 * @sm: the machine.
 *
 * Only in POSTCOPY: before the OK of POSTCOPY the source does not serve
 * requests yet, and while paused there is no connection to send on.
 *
 * Return: true in POSTCOPY.
 */
bool fy_recv_sm_may_request(const struct fy_recv_sm *sm)
{
	return sm->state == FY_RS_POSTCOPY;
}

/**
 * fy_recv_state_name() - a short lowercase name for a receiver state.
 * @s: the state.
 *
 * Return: a static string; "unknown" for a value outside the enum.
 */
const char *fy_recv_state_name(enum fy_recv_state s)
{
	switch (s) {
	case FY_RS_WAIT_HELLO:	return "wait_hello";
	case FY_RS_WAIT_CONFIG:	return "wait_config";
	case FY_RS_IDLE:	return "idle";
	case FY_RS_PASS:	return "pass";
	case FY_RS_LOADED:	return "loaded";
	case FY_RS_READY:	return "ready";
	case FY_RS_RUNNING:	return "running";
	case FY_RS_ABORTED:	return "aborted";
	case FY_RS_PC_DISCARD:	return "postcopy_discard";
	case FY_RS_PC_LOADED:	return "postcopy_loaded";
	case FY_RS_POSTCOPY:	return "postcopy";
	case FY_RS_PC_PAUSED:	return "postcopy_paused";
	case FY_RS_WAIT_RESUME:	return "wait_resume";
	case FY_RS_MEMORY_FDS:	return "memory_fds";
	case FY_RS_DEVICE_FDS:	return "device_fds";
	}
	return "unknown";
}

/* ---- sender ---- */

/* The requests the sender may make, per state (ABORT aside). */
static const struct send_rule {
	enum fy_send_state state;
	uint32_t type;
} send_rules[] = {
	{ FY_SS_START, FY_REC_HELLO },
	{ FY_SS_NEGOTIATED, FY_REC_CONFIG },
	{ FY_SS_CONFIGURED, FY_REC_PASS_BEGIN },
	{ FY_SS_CONFIGURED, FY_REC_STATE },
	{ FY_SS_IN_PASS, FY_REC_PASS_END },
	{ FY_SS_STATE_SENT, FY_REC_SWITCHOVER },
	{ FY_SS_READY, FY_REC_RELEASED },
	/* postcopy: only when negotiated (send_allowed) */
	{ FY_SS_CONFIGURED, FY_REC_DISCARD },
	{ FY_SS_PC_DISCARD, FY_REC_DISCARD },
	{ FY_SS_PC_DISCARD, FY_REC_STATE },
	{ FY_SS_PC_LOADED, FY_REC_POSTCOPY },
	{ FY_SS_POSTCOPY, FY_REC_POSTCOPY_END },
	{ FY_SS_PC_PAUSED, FY_REC_RESUME },
	/* local fds: only when negotiated (send_allowed) */
	{ FY_SS_CONFIGURED, FY_REC_MEMORY_FDS },
	{ FY_SS_FDS_SENT, FY_REC_STATE },
	{ FY_SS_FDS_SENT, FY_REC_DEVICE_FDS },
	{ FY_SS_DEVFDS_SENT, FY_REC_STATE },
};

/**
 * fy_send_sm_init() - a sender that has sent nothing.
 * @sm: the machine.
 */
void fy_send_sm_init(struct fy_send_sm *sm)
{
	sm->state = FY_SS_START;
	sm->next_seq = 1;
	sm->pending_type = 0;
	sm->pending_seq = 0;
	sm->released = false;
	sm->postcopy = false;
	sm->local_fds = false;
	sm->device_fds = false;
	sm->transitioned = false;
	sm->refused_type = 0;
}

static bool send_allowed(const struct fy_send_sm *sm, uint32_t type)
{
	if (rec_postcopy(type) && !sm->postcopy)
		return false;
	if (type == FY_REC_MEMORY_FDS && !sm->local_fds)
		return false;
	if (type == FY_REC_DEVICE_FDS && !sm->device_fds)
		return false;
	for (size_t i = 0; i < sizeof(send_rules) / sizeof(send_rules[0]); i++)
		if (send_rules[i].state == sm->state &&
		    send_rules[i].type == type)
			return true;
	return false;
}

/* States in which the sender waits for nothing but the operator (DONE,
 * FAILED) or for a recovery connection (PC_PAUSED, where only RESUME is
 * allowed, by the table). */
static bool send_over(const struct fy_send_sm *sm)
{
	return sm->state == FY_SS_DONE || sm->state == FY_SS_FAILED;
}

/**
 * fy_send_sm_request() - the engine wants to send a request of @type.
 * @sm: the machine.
 * @type: the request type.
 * @seq: receives the seq to put in the record; may be NULL.
 *
 * One request is outstanding at a time, except that ABORT may replace any
 * pending request: giving up must not wait for an answer that may never
 * come -- but not after the transition, when the guest may run at the
 * destination. Sending RELEASED is the point of no return, and sending
 * POSTCOPY the transition: the machine records them here, before any
 * answer. A RESUME restarts the seq numbers (it is the first request of a
 * recovery connection).
 *
 * Return: 0, or -EPROTO (not valid in this state, another request is
 * outstanding, the session is over, or the seq space is exhausted). The
 * machine is unchanged on failure.
 */
int fy_send_sm_request(struct fy_send_sm *sm, uint32_t type, uint32_t *seq)
{
	if (send_over(sm))
		return -EPROTO;
	if (type == FY_REC_ABORT ? sm->transitioned
				 : (sm->pending_type != 0 ||
				    !send_allowed(sm, type)))
		return -EPROTO;
	/* A RESUME opens a new connection, whose requests count from 1. */
	if (type == FY_REC_RESUME)
		sm->next_seq = 1;
	/* seq 0 means "data"; after 2^32 - 1 requests there is no valid one
	 * left. */
	if (sm->next_seq == 0)
		return -EPROTO;
	sm->pending_type = type;
	sm->pending_seq = sm->next_seq++;
	sm->refused_type = 0;
	if (seq)
		*seq = sm->pending_seq;
	if (type == FY_REC_RELEASED) {
		sm->state = FY_SS_RELEASED;
		sm->released = true;
	} else if (type == FY_REC_POSTCOPY) {
		sm->state = FY_SS_POSTCOPY;
		sm->transitioned = true;
	} else if (type == FY_REC_RESUME) {
		sm->state = FY_SS_PC_RESUMING;
	}
	return 0;
}

/**
 * fy_send_sm_data() - may a memory record be sent now?
 * @sm: the machine.
 *
 * Only inside a pass whose PASS_BEGIN was acknowledged and whose PASS_END
 * has not been sent: data after the barrier would not be counted in it.
 * In postcopy, between the OK of POSTCOPY (or RESUME) and POSTCOPY_END,
 * whose counts must include every record.
 *
 * Return: 0, or -EPROTO.
 */
int fy_send_sm_data(const struct fy_send_sm *sm)
{
	return (sm->state == FY_SS_IN_PASS || sm->state == FY_SS_POSTCOPY) &&
			       sm->pending_type == 0
		       ? 0
		       : -EPROTO;
}

/* The state an OK to a request of @type leads to. */
static enum fy_send_state send_ok_next(uint32_t type)
{
	switch (type) {
	case FY_REC_HELLO:	return FY_SS_NEGOTIATED;
	case FY_REC_CONFIG:	return FY_SS_CONFIGURED;
	case FY_REC_PASS_BEGIN:	return FY_SS_IN_PASS;
	case FY_REC_PASS_END:	return FY_SS_CONFIGURED;
	case FY_REC_STATE:	return FY_SS_STATE_SENT;
	case FY_REC_SWITCHOVER:	return FY_SS_READY;
	case FY_REC_RELEASED:	return FY_SS_DONE;
	case FY_REC_DISCARD:	return FY_SS_PC_DISCARD;
	case FY_REC_POSTCOPY:	return FY_SS_POSTCOPY;
	case FY_REC_POSTCOPY_END: return FY_SS_DONE;
	case FY_REC_RESUME:	return FY_SS_POSTCOPY;
	case FY_REC_MEMORY_FDS:	return FY_SS_FDS_SENT;
	case FY_REC_DEVICE_FDS:	return FY_SS_DEVFDS_SENT;
	}
	return FY_SS_FAILED; /* ABORT, and anything that cannot be pending */
}

/**
 * fy_send_sm_response() - a response record arrived.
 * @sm: the machine.
 * @type: its type.
 * @seq: its seq.
 *
 * An ERROR with seq 0 is the receiver rejecting a data record (which has
 * no request to echo); it is reported like any other ERROR so that the
 * peer's message reaches the user.
 *
 * Return: 0 for OK answering the pending request (state advanced),
 * FERRY_EPEER for ERROR (state FAILED), FERRY_EPROTO for anything that does
 * not answer the pending request (state FAILED).
 */
int fy_send_sm_response(struct fy_send_sm *sm, uint32_t type, uint32_t seq)
{
	bool answers = sm->pending_type != 0 && seq == sm->pending_seq;
	uint32_t pending = sm->pending_type;

	if (type == FY_REC_ERROR && (answers || seq == 0)) {
		fy_send_sm_fail(sm);
		if (answers)
			sm->refused_type = pending;
		return FERRY_EPEER;
	}
	if (type != FY_REC_OK || !answers) {
		fy_send_sm_fail(sm);
		return FERRY_EPROTO;
	}
	sm->pending_type = 0;
	sm->pending_seq = 0;
	/* STATE after DISCARD is the postcopy flavour of STATE_SENT. */
	if (pending == FY_REC_STATE && sm->state == FY_SS_PC_DISCARD)
		sm->state = FY_SS_PC_LOADED;
	else
		sm->state = send_ok_next(pending);
	return 0;
}

/**
 * fy_send_sm_fail() - any fatal failure: FAILED, or PC_PAUSED after the
 * transition (the guest may run at the destination; only a recovery or an
 * operator leads on). The released and transitioned flags are kept:
 * whether the source may resume its guest depends on them.
 * @sm: the machine.
 */
void fy_send_sm_fail(struct fy_send_sm *sm)
{
	sm->state = sm->transitioned ? FY_SS_PC_PAUSED : FY_SS_FAILED;
	sm->pending_type = 0;
	sm->pending_seq = 0;
	sm->refused_type = 0;
}

/**
 * fy_send_sm_not_run() - the destination answered POSTCOPY with ERROR
 * FY_ERR_NOT_RUN: it positively did not run the guest and dropped it.
 * @sm: the machine, right after fy_send_sm_response() returned
 *      FERRY_EPEER for that ERROR.
 *
 * Only this answer, on the connection that carried POSTCOPY, undoes the
 * transition: the source owns its guest again and may resume it. The
 * same code in answer to anything else (RESUME included) proves nothing.
 *
 * Return: 0 (state FAILED, transitioned cleared), or -EPROTO (machine
 * unchanged).
 */
int fy_send_sm_not_run(struct fy_send_sm *sm)
{
	if (sm->refused_type != FY_REC_POSTCOPY || !sm->transitioned)
		return -EPROTO;
	sm->transitioned = false;
	sm->refused_type = 0;
	sm->state = FY_SS_FAILED;
	return 0;
}

/**
 * fy_send_sm_input() - classify a record that arrived at the source.
 * @sm: the machine (not modified).
 * @type: the record type as on the wire.
 * @seq: its seq.
 * @msg: receives the reason for FY_SI_REJECT and FY_SI_SKIP; may be NULL.
 * @len: size of @msg.
 *
 * Responses go on to fy_send_sm_response(). PAGE_REQ is data (seq 0) and
 * valid only in POSTCOPY once its OK arrived, until POSTCOPY_END is
 * answered (one that crosses POSTCOPY_END is answered too: the page may
 * still be in flight on a data connection).
 * Requests never travel towards the source.
 *
 * Return: what to do with the record.
 */
enum fy_send_input fy_send_sm_input(const struct fy_send_sm *sm,
				    uint32_t type, uint32_t seq, char *msg,
				    size_t len)
{
	char nbuf[16];
	const char *name = fy_rec_name(type, nbuf, sizeof(nbuf));
	const char *st = fy_send_state_name(sm->state);
	char dummy[1];

	if (!msg || !len) {
		msg = dummy;
		len = sizeof(dummy);
	}
	msg[0] = 0;
	if (type == FY_REC_OK || type == FY_REC_ERROR)
		return FY_SI_RESPONSE;
	if (!rec_known(type) && fy_rec_optional(type)) {
		snprintf(msg, len, "unknown optional record %s skipped", name);
		return FY_SI_SKIP;
	}
	if (type != FY_REC_PAGE_REQ) {
		snprintf(msg, len, "%s is not valid towards the source (state %s)",
			 name, st);
		return FY_SI_REJECT;
	}
	if (!sm->postcopy || sm->state != FY_SS_POSTCOPY ||
	    sm->pending_type == FY_REC_POSTCOPY || seq != 0) {
		snprintf(msg, len,
			 "PAGE_REQ (seq %u) is valid only as data in state postcopy after the OK of POSTCOPY, not in state %s",
			 (unsigned)seq, st);
		return FY_SI_REJECT;
	}
	/* Also while POSTCOPY_END waits for its answer: the page may be in
	 * the push's tail, and the answer overtakes it. */
	return FY_SI_PAGE_REQ;
}

/**
 * fy_send_sm_past_release() - may the source no longer resume its guest on
 * its own?
 * @sm: the machine.
 *
 * Return: true once RELEASED or POSTCOPY was sent, whatever happened
 * after (but for a not-run answer to POSTCOPY, which clears the
 * transition): the destination may run the guest, so a failure must not
 * resume the source (FERRY_EUNCONFIRMED; after POSTCOPY the session
 * pauses for recovery).
 */
bool fy_send_sm_past_release(const struct fy_send_sm *sm)
{
	return sm->released || sm->transitioned;
}

/**
 * fy_send_state_name() - a short lowercase name for a sender state.
 * @s: the state.
 *
 * Return: a static string; "unknown" for a value outside the enum.
 */
const char *fy_send_state_name(enum fy_send_state s)
{
	switch (s) {
	case FY_SS_START:	return "start";
	case FY_SS_NEGOTIATED:	return "negotiated";
	case FY_SS_CONFIGURED:	return "configured";
	case FY_SS_IN_PASS:	return "in_pass";
	case FY_SS_STATE_SENT:	return "state_sent";
	case FY_SS_READY:	return "ready";
	case FY_SS_RELEASED:	return "released";
	case FY_SS_DONE:	return "done";
	case FY_SS_FAILED:	return "failed";
	case FY_SS_PC_DISCARD:	return "postcopy_discard";
	case FY_SS_PC_LOADED:	return "postcopy_loaded";
	case FY_SS_POSTCOPY:	return "postcopy";
	case FY_SS_PC_PAUSED:	return "postcopy_paused";
	case FY_SS_PC_RESUMING:	return "postcopy_resuming";
	case FY_SS_FDS_SENT:	return "fds_sent";
	case FY_SS_DEVFDS_SENT:	return "device_fds_sent";
	}
	return "unknown";
}

/* ---- ownership ---- */

/**
 * fy_owner_name() - the name reports and JSON use for an owner.
 * @o: the owner.
 *
 * Return: "source", "destination" or "none" (also for a value outside the
 * enum).
 */
const char *fy_owner_name(enum fy_owner o)
{
	switch (o) {
	case FY_OWNER_SOURCE:	   return "source";
	case FY_OWNER_DESTINATION: return "destination";
	case FY_OWNER_NONE:	   break;
	}
	return "none";
}

/**
 * fy_send_owner() - who may run the guest, seen from the source.
 * @state: the sender state.
 * @released: RELEASED was sent.
 * @transitioned: POSTCOPY was sent and not answered with FY_ERR_NOT_RUN.
 *
 * The owner changes at one point only: the sending of RELEASED or of
 * POSTCOPY. From then on the destination owns the guest whatever the state
 * says, FAILED and DONE included: it may have run there, and the source
 * must not resume it on its own. The state matters only for values outside
 * the enum, which own nothing.
 *
 * Return: the owner.
 */
enum fy_owner fy_send_owner(enum fy_send_state state, bool released,
			    bool transitioned)
{
	if ((unsigned)state >= FY_SS_COUNT)
		return FY_OWNER_NONE;
	return released || transitioned ? FY_OWNER_DESTINATION
					: FY_OWNER_SOURCE;
}

/**
 * fy_send_sm_owner() - fy_send_owner() of a machine.
 * @sm: the machine.
 *
 * Return: the owner.
 */
enum fy_owner fy_send_sm_owner(const struct fy_send_sm *sm)
{
	return fy_send_owner(sm->state, sm->released, sm->transitioned);
}

/**
 * fy_recv_owner() - who may run the guest, seen from the destination.
 * @state: the receiver state.
 *
 * Before HELLO the destination knows of no guest (none). Until it commits
 * RELEASED or POSTCOPY the source owns it, also when the attempt aborted
 * (the destination never ran it). RUNNING and the states after the
 * transition are the destination's, paused or not.
 *
 * Return: the owner.
 */
enum fy_owner fy_recv_owner(enum fy_recv_state state)
{
	switch (state) {
	case FY_RS_WAIT_HELLO:
		return FY_OWNER_NONE;
	case FY_RS_WAIT_CONFIG:
	case FY_RS_IDLE:
	case FY_RS_PASS:
	case FY_RS_LOADED:
	case FY_RS_READY:
	case FY_RS_ABORTED:
	case FY_RS_PC_DISCARD:
	case FY_RS_PC_LOADED:
	case FY_RS_MEMORY_FDS:
	case FY_RS_DEVICE_FDS:
		return FY_OWNER_SOURCE;
	case FY_RS_RUNNING:
	case FY_RS_POSTCOPY:
	case FY_RS_PC_PAUSED:
	case FY_RS_WAIT_RESUME:
		return FY_OWNER_DESTINATION;
	}
	return FY_OWNER_NONE;
}

/**
 * fy_data_sm_step() - classify a record on an extra data connection.
 * @state: the connection's state; JOINED after an accepted JOIN.
 * @type: the record type as on the wire.
 * @seq: its seq.
 * @out: receives the action (JOIN, MEMORY, SKIP or REJECT) and, for
 *       REJECT, the code and message.
 *
 * An extra connection carries one JOIN request (seq 1) and then memory
 * data only; everything else belongs on the main connection.
 */
void fy_data_sm_step(enum fy_data_state state, uint32_t type, uint32_t seq,
		     struct fy_recv_step *out)
{
	char nbuf[16];
	const char *name = fy_rec_name(type, nbuf, sizeof(nbuf));

	memset(out, 0, sizeof(*out));
	out->next = FY_RS_IDLE; /* unused on data connections */
	if (state == FY_DS_WAIT_JOIN && type == FY_REC_JOIN && seq == 1) {
		out->action = FY_RA_JOIN;
		out->respond = true;
		return;
	}
	if (state == FY_DS_JOINED && type == FY_REC_MEMORY && seq == 0) {
		out->action = FY_RA_MEMORY;
		return;
	}
	if (state == FY_DS_JOINED && fy_rec_optional(type) && !rec_known(type)) {
		out->action = FY_RA_SKIP;
		return;
	}
	recv_reject(out, rec_known(type) ? FERRY_EPROTO : FERRY_EUNKNOWN,
		    "%s (seq %u) is not valid on a data connection %s", name,
		    seq, state == FY_DS_WAIT_JOIN ? "before JOIN" : "after JOIN");
}
