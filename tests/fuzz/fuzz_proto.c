// SPDX-License-Identifier: MIT
/*
 * fuzz_proto.c - libFuzzer harness for the protocol state machines of
 * src/proto, postcopy and recovery included.
 *
 * The input is a script. Byte 0 sets the negotiated capabilities (bit 0:
 * postcopy at the receiver, bit 1: at the sender; bit 2: local fds on
 * both, bit 3: device fds on both). Then each event is three bytes, op, type,
 * seq:
 *   op % 8 (enum fz_proto_op in proto_script.h): 0 the receiver classifies a record and the engine applies the
 *           step (commit, which also moves a REJECT to its next state);
 *           1 the receiver's connection fails; 2 a recovery connection
 *           replaces it (fy_recv_sm_init_resume, as the engine does only
 *           while paused); 3 the sender asks to send a request; 4 a
 *           response arrives at the sender (ERROR when the type is ERROR,
 *           else OK); 5 the sender fails; 6 the ERROR just received carried
 *           FY_ERR_NOT_RUN; 7 a record arrives at the sender (input
 *           classification) and, if it is a response, is applied.
 *   type:   an index into fz_proto_types (modulo its size): the known
 *           record types, then unknown optional and mandatory ones.
 *   seq:    0 = 0, 1 = the next expected, 2 = the last one again, else
 *           the byte itself.
 *
 * Properties beyond "no crash":
 *  - after the transition (receiver in POSTCOPY, PC_PAUSED or
 *    WAIT_RESUME; sender transitioned) nothing leads to ABORTED or FAILED,
 *    and the owner stays the destination; only fy_send_sm_not_run(),
 *    right after an ERROR that answered POSTCOPY, gives the guest back;
 *  - without the capability no postcopy state is ever entered, and
 *    without device fds no DEVICE_FDS state;
 *  - a REJECT always has a message and an answer, data never has one;
 *  - the seq numbers the sender hands out strictly increase on a
 *    connection, and a RESUME starts a new one at 1;
 *  - data may be sent only in a pass or in postcopy; every reachable
 *    state has a name.
 * FUZZ_VERBOSE=1 prints where each run left both machines.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry.h"
#include "fuzz_common.h"
#include "proto/proto.h"
#include "proto_script.h"
#include "wire/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


struct run {
	struct fy_recv_sm rx;
	struct fy_send_sm tx;
	bool rx_cap, tx_cap;
	uint32_t tx_last_seq;	 /* last seq the sender handed out */
	bool tx_peer_error;	 /* the last response was an ERROR */
	uint32_t tx_error_answered; /* ... answering this request type */
};

static uint32_t pick_seq(uint8_t b, uint32_t last)
{
	switch (b) {
	case FZ_SEQ_ZERO: return 0;
	case FZ_SEQ_NEXT: return last + 1;
	case FZ_SEQ_LAST: return last;
	}
	return b;
}

static bool recv_after(enum fy_recv_state s)
{
	return s == FY_RS_POSTCOPY || s == FY_RS_PC_PAUSED ||
	       s == FY_RS_WAIT_RESUME;
}

static bool recv_pc_state(enum fy_recv_state s)
{
	return s >= FY_RS_PC_DISCARD && s <= FY_RS_WAIT_RESUME;
}

static bool send_pc_state(enum fy_send_state s)
{
	return s >= FY_SS_PC_DISCARD && s <= FY_SS_PC_RESUMING;
}

static void recv_event(struct run *r, uint8_t op, uint32_t type, uint32_t seq)
{
	enum fy_recv_state before = r->rx.state;
	struct fy_recv_step st;

	if (op == FZ_RX_FAIL) {
		fy_recv_sm_fail(&r->rx);
	} else if (op == FZ_RX_RECONNECT) {
		if (before != FY_RS_PC_PAUSED)
			return;
		fy_recv_sm_init_resume(&r->rx);
	} else {
		/* The engine stops serving at ABORTED; a record that
		 * reaches a running destination must leave it running. */
		if (before == FY_RS_ABORTED)
			return;
		fy_recv_sm_step(&r->rx, type, seq, &st);
		FZ_ASSERT(st.action != FY_RA_REJECT || (st.msg[0] && st.respond),
			  "REJECT without message or answer");
		FZ_ASSERT((st.action != FY_RA_MEMORY &&
			   st.action != FY_RA_SKIP) || !st.respond,
			  "data or a skipped record is answered");
		fy_recv_sm_commit(&r->rx, &st, seq);
	}
	FZ_ASSERT(!recv_after(before) || recv_after(r->rx.state) ||
			  r->rx.state == FY_RS_RUNNING,
		  "receiver left the transition: %s -> %s",
		  fy_recv_state_name(before), fy_recv_state_name(r->rx.state));
	FZ_ASSERT(r->rx_cap || !recv_pc_state(r->rx.state),
		  "receiver in %s without the capability",
		  fy_recv_state_name(r->rx.state));
	FZ_ASSERT(!recv_after(before) ||
			  fy_recv_owner(r->rx.state) == FY_OWNER_DESTINATION,
		  "destination gave up a guest it may have run");
	FZ_ASSERT(before != FY_RS_RUNNING || r->rx.state == FY_RS_RUNNING,
		  "a guest running here went back to %s",
		  fy_recv_state_name(r->rx.state));
	FZ_ASSERT(strcmp(fy_recv_state_name(r->rx.state), "unknown"),
		  "receiver state %d has no name", (int)r->rx.state);
}

static void send_request(struct run *r, uint32_t type)
{
	struct fy_send_sm before = r->tx;
	uint32_t seq = 0;
	int rc = fy_send_sm_request(&r->tx, type, &seq);

	if (rc) {
		FZ_ASSERT(rc == -EPROTO, "request returned %d", rc);
		FZ_ASSERT(r->tx.state == before.state &&
				  r->tx.next_seq == before.next_seq &&
				  r->tx.pending_type == before.pending_type,
			  "a refused request changed the sender");
		FZ_ASSERT(type != FY_REC_ABORT || before.transitioned ||
				  before.state == FY_SS_DONE ||
				  before.state == FY_SS_FAILED ||
				  before.next_seq == 0,
			  "ABORT refused before the transition");
		return;
	}
	FZ_ASSERT(type != FY_REC_ABORT || !before.transitioned,
		  "ABORT sent after the transition");
	if (type == FY_REC_RESUME)
		FZ_ASSERT(seq == 1, "RESUME carries seq %u", seq);
	else
		FZ_ASSERT(seq > r->tx_last_seq, "seq %u after %u", seq,
			  r->tx_last_seq);
	r->tx_last_seq = seq;
	r->tx_peer_error = false;
}

static void send_response(struct run *r, uint32_t type, uint32_t seq)
{
	uint32_t pending = r->tx.pending_type;
	int rc = fy_send_sm_response(&r->tx, type, seq);

	FZ_ASSERT(rc == 0 || rc == FERRY_EPEER || rc == FERRY_EPROTO,
		  "response returned %d", rc);
	r->tx_peer_error = rc == FERRY_EPEER && pending &&
			   seq == r->tx_last_seq;
	r->tx_error_answered = r->tx_peer_error ? pending : 0;
}

static void send_event(struct run *r, uint8_t op, uint32_t type, uint32_t seq)
{
	struct fy_send_sm before = r->tx;
	char msg[200];
	int rc;

	switch (op) {
	case FZ_TX_REQUEST:
		send_request(r, type);
		break;
	case FZ_TX_RESPONSE:
		send_response(r, type == FY_REC_ERROR ? FY_REC_ERROR : FY_REC_OK,
			      seq);
		break;
	case FZ_TX_FAIL:
		fy_send_sm_fail(&r->tx);
		r->tx_peer_error = false;
		break;
	case FZ_TX_NOT_RUN:
		rc = fy_send_sm_not_run(&r->tx);
		FZ_ASSERT(rc == 0 || rc == -EPROTO, "not_run returned %d", rc);
		FZ_ASSERT(rc != 0 || (r->tx_peer_error &&
				      r->tx_error_answered == FY_REC_POSTCOPY),
			  "not_run accepted without an ERROR to POSTCOPY");
		r->tx_peer_error = false;
		break;
	default:
		if (fy_send_sm_input(&r->tx, type, seq, msg, sizeof(msg)) ==
		    FY_SI_RESPONSE)
			send_response(r, type, seq);
		break;
	}
	if (fy_send_sm_owner(&before) == FY_OWNER_DESTINATION &&
	    fy_send_sm_owner(&r->tx) != FY_OWNER_DESTINATION)
		FZ_ASSERT(op == FZ_TX_NOT_RUN, "the source took its guest back (%s -> %s)",
			  fy_send_state_name(before.state),
			  fy_send_state_name(r->tx.state));
	FZ_ASSERT(!r->tx.transitioned || r->tx.state != FY_SS_FAILED,
		  "sender FAILED after the transition");
	FZ_ASSERT(r->tx_cap || !send_pc_state(r->tx.state),
		  "sender in %s without the capability",
		  fy_send_state_name(r->tx.state));
	FZ_ASSERT(fy_send_sm_data(&r->tx) != 0 || r->tx.state == FY_SS_IN_PASS ||
			  r->tx.state == FY_SS_POSTCOPY,
		  "data allowed in state %s", fy_send_state_name(r->tx.state));
	FZ_ASSERT(strcmp(fy_send_state_name(r->tx.state), "unknown"),
		  "sender state %d has no name", (int)r->tx.state);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run r;

	if (size < 1)
		return 0;
	memset(&r, 0, sizeof(r));
	fy_recv_sm_init(&r.rx);
	fy_send_sm_init(&r.tx);
	r.rx_cap = r.rx.postcopy = data[0] & 1;
	r.tx_cap = r.tx.postcopy = (data[0] >> 1) & 1;
	r.rx.local_fds = r.tx.local_fds = (data[0] >> 2) & 1;
	r.rx.device_fds = r.tx.device_fds = (data[0] >> 3) & 1;
	for (size_t i = 1; i + 3 <= size; i += 3) {
		uint8_t op = data[i] % 8;
		uint32_t type = fz_proto_types[data[i + 1] % FZ_PROTO_NTYPES];
		bool rx = op <= FZ_RX_RECONNECT;
		uint32_t last = rx ? r.rx.last_seq : r.tx_last_seq;
		uint32_t seq = pick_seq(data[i + 2], last);

		if (rx)
			recv_event(&r, op, type, seq);
		else
			send_event(&r, op, type, seq);
		FZ_ASSERT(r.rx.device_fds || r.rx.state != FY_RS_DEVICE_FDS,
			  "receiver in device_fds without the capability");
		FZ_ASSERT(r.tx.device_fds || r.tx.state != FY_SS_DEVFDS_SENT,
			  "sender in device_fds_sent without the capability");
	}
	if (getenv("FUZZ_VERBOSE"))
		fprintf(stderr, "receiver %s (owner %s), sender %s (owner %s)\n",
			fy_recv_state_name(r.rx.state),
			fy_owner_name(fy_recv_owner(r.rx.state)),
			fy_send_state_name(r.tx.state),
			fy_owner_name(fy_send_sm_owner(&r.tx)));
	return 0;
}
