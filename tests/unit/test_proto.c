/* SPDX-License-Identifier: MIT */
/*
 * test_proto.c - the sender and receiver state machines.
 *
 * The expected tables below are written out cell by cell from the tables in
 * proto.h, independently of the implementation's own tables, and every
 * (state, record) pair is checked against them.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ferry.h"
#include "proto/proto.h"
#include "wire/wire.h"

#define UNK_OPT (FY_REC_OPTIONAL | 0x7123u)
#define UNK_MAND 0x7123u

/* Record types fed to the receiver, in the column order of the table. */
static const uint32_t recv_types[] = {
	FY_REC_HELLO, FY_REC_CONFIG, FY_REC_PASS_BEGIN, FY_REC_PASS_END,
	FY_REC_STATE, FY_REC_SWITCHOVER, FY_REC_RELEASED, FY_REC_ABORT,
	FY_REC_MEMORY, FY_REC_OK, FY_REC_ERROR, UNK_OPT, UNK_MAND,
};
#define NTYPES (sizeof(recv_types) / sizeof(recv_types[0]))
#define NRSTATES 8

struct expect {
	enum fy_recv_action action;
	enum fy_recv_state next;
	bool respond;
};

#define X { FY_RA_REJECT, FY_RS_ABORTED, true }
/* A guest running here stays running whatever arrives. */
#define XR { FY_RA_REJECT, FY_RS_RUNNING, true }
#define AB { FY_RA_ABORT, FY_RS_ABORTED, true }
#define SK(st) { FY_RA_SKIP, FY_RS_##st, false }
#define GO(act, st) { FY_RA_##act, FY_RS_##st, true }
#define MEM { FY_RA_MEMORY, FY_RS_PASS, false }

/* clang-format off */
static const struct expect recv_table[NRSTATES][NTYPES] = {
	/* columns: HELLO CONFIG PASS_BEGIN PASS_END STATE SWITCHOVER RELEASED
	 *          ABORT MEMORY OK ERROR UNK_OPT UNK_MAND */
	[FY_RS_WAIT_HELLO]  = { GO(HELLO, WAIT_CONFIG), X, X, X, X, X, X, AB, X, X, X, SK(WAIT_HELLO), X },
	[FY_RS_WAIT_CONFIG] = { X, GO(CONFIG, IDLE), X, X, X, X, X, AB, X, X, X, SK(WAIT_CONFIG), X },
	[FY_RS_IDLE]        = { X, X, GO(PASS_BEGIN, PASS), X, GO(STATE, LOADED), X, X, AB, X, X, X, SK(IDLE), X },
	[FY_RS_PASS]        = { X, X, X, GO(PASS_END, IDLE), X, X, X, AB, MEM, X, X, SK(PASS), X },
	[FY_RS_LOADED]      = { X, X, X, X, X, GO(SWITCHOVER, READY), X, AB, X, X, X, SK(LOADED), X },
	[FY_RS_READY]       = { X, X, X, X, X, X, GO(RELEASED, RUNNING), AB, X, X, X, SK(READY), X },
	[FY_RS_RUNNING]     = { XR, XR, XR, XR, XR, XR, XR, XR, XR, XR, XR, XR, XR },
	[FY_RS_ABORTED]     = { X, X, X, X, X, X, X, X, X, X, X, X, X },
};
/* clang-format on */

static bool live(enum fy_recv_state s)
{
	return s != FY_RS_RUNNING && s != FY_RS_ABORTED;
}

static void test_recv_table(void **state)
{
	for (int s = 0; s < NRSTATES; s++) {
		for (size_t t = 0; t < NTYPES; t++) {
			const struct expect *e = &recv_table[s][t];
			uint32_t type = recv_types[t];
			uint32_t seq = type == FY_REC_MEMORY ? 0 : 11;
			struct fy_recv_sm sm = { (enum fy_recv_state)s, 10 };
			struct fy_recv_step st;
			char what[96];

			snprintf(what, sizeof(what), "state %d type 0x%x", s,
				 (unsigned)type);
			fy_recv_sm_step(&sm, type, seq, &st);
			if (st.action != e->action || st.next != e->next ||
			    st.respond != e->respond)
				fail_msg("%s: got action %d next %d respond %d, "
					 "want %d %d %d (%s)", what, st.action,
					 st.next, st.respond, e->action, e->next,
					 e->respond, st.msg);
			/* Classification never changes the machine. */
			assert_int_equal(sm.state, s);
			assert_int_equal(sm.last_seq, 10);
			if (e->action != FY_RA_REJECT) {
				assert_int_equal(st.code, 0);
				continue;
			}
			assert_int_equal(st.code,
					 live(s) && type == UNK_MAND ?
					 FERRY_EUNKNOWN : FERRY_EPROTO);
			assert_true(strlen(st.msg) > 0);
			/* The message names the state it was refused in. */
			if (type != FY_REC_OK && type != FY_REC_ERROR)
				assert_non_null(strstr(st.msg,
					fy_recv_state_name((enum fy_recv_state)s)));
		}
	}
}

static void test_recv_messages(void **state)
{
	struct fy_recv_sm sm = { FY_RS_IDLE, 3 };
	struct fy_recv_step st;

	fy_recv_sm_step(&sm, FY_REC_PASS_END, 4, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_string_equal(st.msg, "PASS_END is not valid in state idle");

	fy_recv_sm_step(&sm, UNK_MAND, 4, &st);
	assert_int_equal(st.code, FERRY_EUNKNOWN);
	assert_non_null(strstr(st.msg, "0x7123"));

	fy_recv_sm_step(&sm, FY_REC_OK, 4, &st);
	assert_int_equal(st.code, FERRY_EPROTO);
	assert_non_null(strstr(st.msg, "OK"));
	assert_non_null(strstr(st.msg, "response"));

	/* A known number with the optional bit is not that known type. */
	fy_recv_sm_step(&sm, FY_REC_PASS_BEGIN | FY_REC_OPTIONAL, 4, &st);
	assert_int_equal(st.action, FY_RA_SKIP);
	assert_int_equal(st.next, FY_RS_IDLE);
}

/* KEEPALIVE is skipped in every live state of both machines, with or
 * without postcopy, and never moves a machine or its seq. */
static void test_keepalive_skipped(void **state)
{
	(void)state;
	for (int st = FY_RS_WAIT_HELLO; st < FY_RS_COUNT; st++) {
		struct fy_recv_sm sm = { (enum fy_recv_state)st, 5 };
		struct fy_recv_step step;

		/* Not live: no connection reads anything there. */
		if (st == FY_RS_ABORTED || st == FY_RS_RUNNING ||
		    st == FY_RS_PC_PAUSED)
			continue;
		for (int pc = 0; pc < 2; pc++) {
			sm.postcopy = pc;
			fy_recv_sm_step(&sm, FY_REC_KEEPALIVE, 0, &step);
			assert_int_equal(step.action, FY_RA_SKIP);
			assert_int_equal(step.next, st);
			assert_false(step.respond);
		}
	}
	for (int st = FY_SS_START; st < FY_SS_COUNT; st++) {
		struct fy_send_sm sm;

		fy_send_sm_init(&sm);
		sm.state = (enum fy_send_state)st;
		assert_int_equal(fy_send_sm_input(&sm, FY_REC_KEEPALIVE, 0, NULL, 0),
				 FY_SI_SKIP);
	}
}

static void test_recv_seq(void **state)
{
	struct fy_recv_sm sm;
	struct fy_recv_step st;

	fy_recv_sm_init(&sm);
	assert_int_equal(sm.state, FY_RS_WAIT_HELLO);
	assert_int_equal(sm.last_seq, 0);

	/* A request must carry seq > 0 even first. */
	fy_recv_sm_step(&sm, FY_REC_HELLO, 0, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_int_equal(st.code, FERRY_EPROTO);
	assert_non_null(strstr(st.msg, "seq"));

	/* Gaps are fine; only increase matters. */
	fy_recv_sm_step(&sm, FY_REC_HELLO, 5, &st);
	assert_int_equal(st.action, FY_RA_HELLO);
	fy_recv_sm_commit(&sm, &st, 5);
	assert_int_equal(sm.state, FY_RS_WAIT_CONFIG);
	assert_int_equal(sm.last_seq, 5);

	/* Equal (a duplicate) and lower (a replay) are refused. */
	fy_recv_sm_step(&sm, FY_REC_CONFIG, 5, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_non_null(strstr(st.msg, "seq"));
	fy_recv_sm_step(&sm, FY_REC_CONFIG, 4, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	fy_recv_sm_step(&sm, FY_REC_ABORT, 5, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	fy_recv_sm_step(&sm, FY_REC_CONFIG, 6, &st);
	assert_int_equal(st.action, FY_RA_CONFIG);
	fy_recv_sm_commit(&sm, &st, 6);

	fy_recv_sm_step(&sm, FY_REC_PASS_BEGIN, 7, &st);
	fy_recv_sm_commit(&sm, &st, 7);
	assert_int_equal(sm.state, FY_RS_PASS);

	/* Data carries seq 0 and does not move last_seq. */
	fy_recv_sm_step(&sm, FY_REC_MEMORY, 0, &st);
	assert_int_equal(st.action, FY_RA_MEMORY);
	assert_false(st.respond);
	fy_recv_sm_commit(&sm, &st, 0);
	assert_int_equal(sm.last_seq, 7);
	fy_recv_sm_step(&sm, FY_REC_MEMORY, 8, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_true(st.respond);
	assert_non_null(strstr(st.msg, "seq 0"));

	/* A skipped record's seq never lowers the bar. */
	fy_recv_sm_step(&sm, UNK_OPT, 2, &st);
	assert_int_equal(st.action, FY_RA_SKIP);
	fy_recv_sm_commit(&sm, &st, 2);
	assert_int_equal(sm.last_seq, 7);
	assert_int_equal(sm.state, FY_RS_PASS);
	fy_recv_sm_step(&sm, FY_REC_PASS_END, 7, &st);
	assert_int_equal(st.action, FY_RA_REJECT);

	/* The largest seq is a valid request seq. */
	fy_recv_sm_step(&sm, FY_REC_PASS_END, UINT32_MAX, &st);
	assert_int_equal(st.action, FY_RA_PASS_END);
	fy_recv_sm_commit(&sm, &st, UINT32_MAX);
	assert_int_equal(sm.last_seq, UINT32_MAX);
	fy_recv_sm_step(&sm, FY_REC_ABORT, UINT32_MAX, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
}

/* Step and commit one record, asserting the action. */
static void feed(struct fy_recv_sm *sm, uint32_t type, uint32_t seq,
		 enum fy_recv_action want)
{
	struct fy_recv_step st;

	fy_recv_sm_step(sm, type, seq, &st);
	if (st.action != want)
		fail_msg("type 0x%x seq %u in %s: action %d, want %d (%s)",
			 (unsigned)type, (unsigned)seq,
			 fy_recv_state_name(sm->state), st.action, want, st.msg);
	fy_recv_sm_commit(sm, &st, seq);
}

static void test_recv_happy_path(void **state)
{
	struct fy_recv_sm sm;
	struct fy_recv_step st;
	uint32_t seq = 0;

	fy_recv_sm_init(&sm);
	feed(&sm, FY_REC_HELLO, ++seq, FY_RA_HELLO);
	feed(&sm, UNK_OPT, 0, FY_RA_SKIP);
	feed(&sm, FY_REC_CONFIG, ++seq, FY_RA_CONFIG);
	assert_int_equal(sm.state, FY_RS_IDLE);
	for (int pass = 0; pass < 3; pass++) {
		feed(&sm, FY_REC_PASS_BEGIN, ++seq, FY_RA_PASS_BEGIN);
		for (int i = 0; i < 5 - pass; i++)
			feed(&sm, FY_REC_MEMORY, 0, FY_RA_MEMORY);
		feed(&sm, UNK_OPT, 0, FY_RA_SKIP);
		feed(&sm, FY_REC_PASS_END, ++seq, FY_RA_PASS_END);
		assert_int_equal(sm.state, FY_RS_IDLE);
	}
	/* An empty pass is allowed. */
	feed(&sm, FY_REC_PASS_BEGIN, ++seq, FY_RA_PASS_BEGIN);
	feed(&sm, FY_REC_PASS_END, ++seq, FY_RA_PASS_END);
	feed(&sm, FY_REC_STATE, ++seq, FY_RA_STATE);
	assert_int_equal(sm.state, FY_RS_LOADED);
	feed(&sm, FY_REC_SWITCHOVER, ++seq, FY_RA_SWITCHOVER);
	assert_int_equal(sm.state, FY_RS_READY);
	feed(&sm, FY_REC_RELEASED, ++seq, FY_RA_RELEASED);
	assert_int_equal(sm.state, FY_RS_RUNNING);
	assert_int_equal(sm.last_seq, seq);

	/* Once running, nothing more is accepted, not even ABORT. */
	fy_recv_sm_step(&sm, FY_REC_ABORT, ++seq, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	fy_recv_sm_step(&sm, UNK_OPT, 0, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
}

static void test_recv_abort_and_fail(void **state)
{
	struct fy_recv_sm sm;
	struct fy_recv_step st;

	/* ABORT mid-pass ends the attempt; then everything is refused. */
	fy_recv_sm_init(&sm);
	feed(&sm, FY_REC_HELLO, 1, FY_RA_HELLO);
	feed(&sm, FY_REC_CONFIG, 2, FY_RA_CONFIG);
	feed(&sm, FY_REC_PASS_BEGIN, 3, FY_RA_PASS_BEGIN);
	feed(&sm, FY_REC_ABORT, 4, FY_RA_ABORT);
	assert_int_equal(sm.state, FY_RS_ABORTED);
	fy_recv_sm_step(&sm, FY_REC_HELLO, 5, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_true(st.respond);

	/* A failed action aborts from any state but RUNNING: a guest that
	 * runs here is not handed back by a broken connection. */
	for (int s = 0; s < NRSTATES; s++) {
		sm.state = (enum fy_recv_state)s;
		fy_recv_sm_fail(&sm);
		assert_int_equal(sm.state, s == FY_RS_RUNNING ? FY_RS_RUNNING
							     : FY_RS_ABORTED);
	}

	/* Committing a REJECT lands in ABORTED too. */
	fy_recv_sm_init(&sm);
	fy_recv_sm_step(&sm, FY_REC_CONFIG, 1, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	fy_recv_sm_commit(&sm, &st, 1);
	assert_int_equal(sm.state, FY_RS_ABORTED);
}

static void test_state_names(void **state)
{
	const char *seen[16];
	int n = 0;

	for (int s = 0; s < NRSTATES; s++) {
		const char *name = fy_recv_state_name((enum fy_recv_state)s);

		assert_non_null(name);
		assert_true(strlen(name) > 0);
		for (int i = 0; i < n; i++)
			assert_string_not_equal(seen[i], name);
		seen[n++] = name;
	}
	assert_string_equal(fy_recv_state_name(FY_RS_IDLE), "idle");
	assert_non_null(fy_recv_state_name((enum fy_recv_state)99));

	n = 0;
	for (int s = 0; s <= FY_SS_FAILED; s++) {
		const char *name = fy_send_state_name((enum fy_send_state)s);

		assert_non_null(name);
		assert_true(strlen(name) > 0);
		for (int i = 0; i < n; i++)
			assert_string_not_equal(seen[i], name);
		seen[n++] = name;
	}
	assert_non_null(fy_send_state_name((enum fy_send_state)99));
}

/* ---- sender ---- */

static const uint32_t send_types[] = {
	FY_REC_HELLO, FY_REC_CONFIG, FY_REC_PASS_BEGIN, FY_REC_PASS_END,
	FY_REC_STATE, FY_REC_SWITCHOVER, FY_REC_RELEASED, FY_REC_ABORT,
	FY_REC_MEMORY, FY_REC_OK, FY_REC_ERROR, UNK_OPT, UNK_MAND,
};
#define NSTYPES (sizeof(send_types) / sizeof(send_types[0]))
#define NSSTATES (FY_SS_FAILED + 1)

/*
 * For each state and request type: -1 when the request is refused, else the
 * state an OK to it leads to.
 */
#define NO (-1)
/* clang-format off */
static const int send_table[NSSTATES][NSTYPES] = {
	/* columns as in recv_table */
	[FY_SS_START]      = { FY_SS_NEGOTIATED, NO, NO, NO, NO, NO, NO, FY_SS_FAILED, NO, NO, NO, NO, NO },
	[FY_SS_NEGOTIATED] = { NO, FY_SS_CONFIGURED, NO, NO, NO, NO, NO, FY_SS_FAILED, NO, NO, NO, NO, NO },
	[FY_SS_CONFIGURED] = { NO, NO, FY_SS_IN_PASS, NO, FY_SS_STATE_SENT, NO, NO, FY_SS_FAILED, NO, NO, NO, NO, NO },
	[FY_SS_IN_PASS]    = { NO, NO, NO, FY_SS_CONFIGURED, NO, NO, NO, FY_SS_FAILED, NO, NO, NO, NO, NO },
	[FY_SS_STATE_SENT] = { NO, NO, NO, NO, NO, FY_SS_READY, NO, FY_SS_FAILED, NO, NO, NO, NO, NO },
	[FY_SS_READY]      = { NO, NO, NO, NO, NO, NO, FY_SS_DONE, FY_SS_FAILED, NO, NO, NO, NO, NO },
	[FY_SS_RELEASED]   = { NO, NO, NO, NO, NO, NO, NO, FY_SS_FAILED, NO, NO, NO, NO, NO },
	[FY_SS_DONE]       = { NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO },
	[FY_SS_FAILED]     = { NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO },
};
/* clang-format on */

static struct fy_send_sm sender_in(enum fy_send_state s, bool released)
{
	struct fy_send_sm sm;

	fy_send_sm_init(&sm);
	sm.state = s;
	sm.next_seq = 40;
	sm.released = released;
	return sm;
}

/* Field by field: the struct has padding after @released. */
static void assert_sender_equal(const struct fy_send_sm *a,
				const struct fy_send_sm *b)
{
	assert_int_equal(a->state, b->state);
	assert_int_equal(a->next_seq, b->next_seq);
	assert_int_equal(a->pending_type, b->pending_type);
	assert_int_equal(a->pending_seq, b->pending_seq);
	assert_int_equal(a->released, b->released);
}

static void test_send_table(void **state)
{
	for (int s = 0; s < (int)NSSTATES; s++) {
		for (size_t t = 0; t < NSTYPES; t++) {
			bool rel = s == FY_SS_RELEASED;
			struct fy_send_sm sm = sender_in((enum fy_send_state)s, rel);
			struct fy_send_sm before = sm;
			int want = send_table[s][t];
			uint32_t seq = 0;
			int rc;

			rc = fy_send_sm_request(&sm, send_types[t], &seq);
			if (want == NO) {
				if (rc != -EPROTO)
					fail_msg("state %s type 0x%x: rc %d, want -EPROTO",
						 fy_send_state_name(s),
						 (unsigned)send_types[t], rc);
				assert_sender_equal(&sm, &before);
				continue;
			}
			if (rc != 0)
				fail_msg("state %s type 0x%x: rc %d, want 0",
					 fy_send_state_name(s),
					 (unsigned)send_types[t], rc);
			assert_int_equal(seq, 40);
			assert_int_equal(sm.next_seq, 41);
			assert_int_equal(sm.pending_type, send_types[t]);
			assert_int_equal(sm.pending_seq, 40);
			if (send_types[t] == FY_REC_RELEASED) {
				/* The send itself is the point of no return. */
				assert_int_equal(sm.state, FY_SS_RELEASED);
				assert_true(sm.released);
				assert_true(fy_send_sm_past_release(&sm));
			} else {
				assert_int_equal(sm.state, s);
				assert_int_equal(sm.released, rel);
			}
			/* The matching OK lands where the table says. */
			assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, 40), 0);
			assert_int_equal(sm.state, want);
			assert_int_equal(sm.pending_type, 0);
		}
	}
}

static void test_send_one_outstanding(void **state)
{
	struct fy_send_sm sm;
	uint32_t seq;

	fy_send_sm_init(&sm);
	assert_int_equal(sm.next_seq, 1);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_HELLO, &seq), 0);
	assert_int_equal(seq, 1);
	/* Not even the same request again while one is outstanding. */
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_HELLO, &seq), -EPROTO);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_CONFIG, &seq), -EPROTO);
	assert_int_equal(sm.pending_seq, 1);
	assert_int_equal(sm.next_seq, 2);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, 1), 0);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_CONFIG, NULL), 0);
	assert_int_equal(sm.pending_seq, 2);
}

static void test_send_response_matching(void **state)
{
	static const struct {
		uint32_t type;
		uint32_t seq;	/* 0: send seq 0; else the pending seq + delta */
		int32_t delta;
		int rc;
	} cases[] = {
		{ FY_REC_OK, 1, 0, 0 },
		{ FY_REC_OK, 1, 1, FERRY_EPROTO },   /* answers nothing */
		{ FY_REC_OK, 1, -1, FERRY_EPROTO },  /* a stale answer */
		{ FY_REC_OK, 0, 0, FERRY_EPROTO },   /* seq 0 answers nothing */
		{ FY_REC_ERROR, 1, 0, FERRY_EPEER },
		{ FY_REC_ERROR, 0, 0, FERRY_EPEER }, /* refused data record */
		{ FY_REC_ERROR, 1, 1, FERRY_EPROTO },
		{ FY_REC_HELLO, 1, 0, FERRY_EPROTO },
		{ FY_REC_MEMORY, 1, 0, FERRY_EPROTO },
		{ FY_REC_OK | FY_REC_OPTIONAL, 1, 0, FERRY_EPROTO },
		{ UNK_MAND, 1, 0, FERRY_EPROTO },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fy_send_sm sm = sender_in(FY_SS_CONFIGURED, false);
		uint32_t seq, rseq;
		int rc;

		assert_int_equal(fy_send_sm_request(&sm, FY_REC_PASS_BEGIN, &seq), 0);
		rseq = cases[i].seq ? seq + (uint32_t)cases[i].delta : 0;
		rc = fy_send_sm_response(&sm, cases[i].type, rseq);
		if (rc != cases[i].rc)
			fail_msg("case %zu: rc %d, want %d", i, rc, cases[i].rc);
		assert_int_equal(sm.state, rc ? FY_SS_FAILED : FY_SS_IN_PASS);
		assert_int_equal(sm.pending_type, 0);
		assert_false(sm.released);
	}

	/* Nothing outstanding: any OK is a protocol error. */
	struct fy_send_sm sm = sender_in(FY_SS_IN_PASS, false);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, 39), FERRY_EPROTO);
	assert_int_equal(sm.state, FY_SS_FAILED);
	/* ... and a response after the end is too. */
	sm = sender_in(FY_SS_DONE, true);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, 39), FERRY_EPROTO);
	assert_true(fy_send_sm_past_release(&sm));
}

static void test_send_abort_while_pending(void **state)
{
	struct fy_send_sm sm = sender_in(FY_SS_IN_PASS, false);
	uint32_t end_seq, abort_seq;

	assert_int_equal(fy_send_sm_request(&sm, FY_REC_PASS_END, &end_seq), 0);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_ABORT, &abort_seq), 0);
	assert_int_equal(abort_seq, end_seq + 1);
	assert_int_equal(sm.pending_type, FY_REC_ABORT);
	assert_int_equal(sm.pending_seq, abort_seq);
	/* Only one ABORT after another... still allowed, it replaces. */
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_ABORT, &abort_seq), 0);
	assert_int_equal(abort_seq, end_seq + 2);
	/* The OK to the abort ends the session as failed (cancelled). */
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, abort_seq), 0);
	assert_int_equal(sm.state, FY_SS_FAILED);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_ABORT, NULL), -EPROTO);

	/* The answer to the replaced request no longer matches anything. */
	sm = sender_in(FY_SS_IN_PASS, false);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_PASS_END, &end_seq), 0);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_ABORT, &abort_seq), 0);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, end_seq),
			 FERRY_EPROTO);
	assert_int_equal(sm.state, FY_SS_FAILED);

	/* An ERROR to the abort is still the peer's error. */
	sm = sender_in(FY_SS_START, false);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_ABORT, &abort_seq), 0);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_ERROR, abort_seq),
			 FERRY_EPEER);
	assert_int_equal(sm.state, FY_SS_FAILED);
}

static void test_send_released_sticky(void **state)
{
	struct fy_send_sm sm = sender_in(FY_SS_READY, false);
	uint32_t seq;

	assert_false(fy_send_sm_past_release(&sm));
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_RELEASED, &seq), 0);
	assert_true(fy_send_sm_past_release(&sm));
	assert_int_equal(sm.state, FY_SS_RELEASED);
	/* The destination's refusal does not undo the release. */
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_ERROR, seq), FERRY_EPEER);
	assert_int_equal(sm.state, FY_SS_FAILED);
	assert_true(fy_send_sm_past_release(&sm));
	fy_send_sm_fail(&sm);
	assert_true(fy_send_sm_past_release(&sm));

	/* Nor does a broken connection, nor an abort after it. */
	sm = sender_in(FY_SS_READY, false);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_RELEASED, &seq), 0);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_ABORT, &seq), 0);
	assert_true(fy_send_sm_past_release(&sm));
	fy_send_sm_fail(&sm);
	assert_int_equal(sm.state, FY_SS_FAILED);
	assert_int_equal(sm.pending_type, 0);
	assert_true(fy_send_sm_past_release(&sm));

	/* Failing before the release leaves the source free to resume. */
	sm = sender_in(FY_SS_STATE_SENT, false);
	fy_send_sm_fail(&sm);
	assert_false(fy_send_sm_past_release(&sm));
}

static void test_send_data(void **state)
{
	for (int s = 0; s < (int)NSSTATES; s++) {
		struct fy_send_sm sm = sender_in((enum fy_send_state)s, false);

		assert_int_equal(fy_send_sm_data(&sm),
				 s == FY_SS_IN_PASS ? 0 : -EPROTO);
	}
	/* Not before PASS_BEGIN is acknowledged, not after PASS_END is sent. */
	struct fy_send_sm sm = sender_in(FY_SS_CONFIGURED, false);
	uint32_t seq;

	assert_int_equal(fy_send_sm_request(&sm, FY_REC_PASS_BEGIN, &seq), 0);
	assert_int_equal(fy_send_sm_data(&sm), -EPROTO);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, seq), 0);
	assert_int_equal(fy_send_sm_data(&sm), 0);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_PASS_END, &seq), 0);
	assert_int_equal(fy_send_sm_data(&sm), -EPROTO);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, seq), 0);
	assert_int_equal(fy_send_sm_data(&sm), -EPROTO);
}

static void test_send_happy_path(void **state)
{
	struct fy_send_sm sm;
	uint32_t seq, expect = 0;

#define REQ_OK(type, after)                                                  \
	do {                                                                 \
		assert_int_equal(fy_send_sm_request(&sm, type, &seq), 0);    \
		assert_int_equal(seq, ++expect);                             \
		assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, seq), 0); \
		assert_int_equal(sm.state, after);                           \
	} while (0)

	fy_send_sm_init(&sm);
	REQ_OK(FY_REC_HELLO, FY_SS_NEGOTIATED);
	REQ_OK(FY_REC_CONFIG, FY_SS_CONFIGURED);
	for (int pass = 0; pass < 3; pass++) {
		REQ_OK(FY_REC_PASS_BEGIN, FY_SS_IN_PASS);
		assert_int_equal(fy_send_sm_data(&sm), 0);
		REQ_OK(FY_REC_PASS_END, FY_SS_CONFIGURED);
	}
	REQ_OK(FY_REC_STATE, FY_SS_STATE_SENT);
	REQ_OK(FY_REC_SWITCHOVER, FY_SS_READY);
	assert_false(fy_send_sm_past_release(&sm));
	REQ_OK(FY_REC_RELEASED, FY_SS_DONE);
	assert_true(fy_send_sm_past_release(&sm));
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_ABORT, &seq), -EPROTO);
#undef REQ_OK
}

/* The two machines agree: every request the sender may make in the happy
 * path is accepted by the receiver with the seq the sender assigned. */
static void test_both_sides(void **state)
{
	static const uint32_t script[] = {
		FY_REC_HELLO, FY_REC_CONFIG, FY_REC_PASS_BEGIN, FY_REC_MEMORY,
		FY_REC_MEMORY, FY_REC_PASS_END, FY_REC_PASS_BEGIN, FY_REC_MEMORY,
		FY_REC_PASS_END, FY_REC_STATE, FY_REC_SWITCHOVER, FY_REC_RELEASED,
	};
	struct fy_send_sm tx;
	struct fy_recv_sm rx;

	fy_send_sm_init(&tx);
	fy_recv_sm_init(&rx);
	for (size_t i = 0; i < sizeof(script) / sizeof(script[0]); i++) {
		struct fy_recv_step st;
		uint32_t seq = 0;

		if (script[i] == FY_REC_MEMORY)
			assert_int_equal(fy_send_sm_data(&tx), 0);
		else
			assert_int_equal(fy_send_sm_request(&tx, script[i], &seq), 0);
		fy_recv_sm_step(&rx, script[i], seq, &st);
		assert_int_not_equal(st.action, FY_RA_REJECT);
		fy_recv_sm_commit(&rx, &st, seq);
		if (st.respond)
			assert_int_equal(fy_send_sm_response(&tx, FY_REC_OK, seq), 0);
	}
	assert_int_equal(tx.state, FY_SS_DONE);
	assert_int_equal(rx.state, FY_RS_RUNNING);
}

static void test_send_seq_exhausted(void **state)
{
	struct fy_send_sm sm = sender_in(FY_SS_START, false);
	uint32_t seq;

	sm.next_seq = UINT32_MAX;
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_HELLO, &seq), 0);
	assert_int_equal(seq, UINT32_MAX);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, seq), 0);
	/* seq 0 is reserved for data: no request can be numbered now. */
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_CONFIG, &seq), -EPROTO);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_ABORT, &seq), -EPROTO);
	assert_int_equal(sm.state, FY_SS_NEGOTIATED);
}

/* Extra data connections: JOIN first (seq 1), then memory only. */
static void test_data_connection(void **state)
{
	struct fy_recv_step st;

	(void)state;
	fy_data_sm_step(FY_DS_WAIT_JOIN, FY_REC_JOIN, 1, &st);
	assert_int_equal(st.action, FY_RA_JOIN);
	assert_true(st.respond);
	/* memory before JOIN, JOIN with another seq, a second JOIN */
	fy_data_sm_step(FY_DS_WAIT_JOIN, FY_REC_MEMORY, 0, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_int_equal(st.code, FERRY_EPROTO);
	assert_non_null(strstr(st.msg, "before JOIN"));
	fy_data_sm_step(FY_DS_WAIT_JOIN, FY_REC_JOIN, 2, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	fy_data_sm_step(FY_DS_JOINED, FY_REC_JOIN, 1, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	/* after JOIN: memory (seq 0) only; control belongs on main */
	fy_data_sm_step(FY_DS_JOINED, FY_REC_MEMORY, 0, &st);
	assert_int_equal(st.action, FY_RA_MEMORY);
	assert_false(st.respond);
	fy_data_sm_step(FY_DS_JOINED, FY_REC_MEMORY, 3, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	fy_data_sm_step(FY_DS_JOINED, FY_REC_PASS_END, 2, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_non_null(strstr(st.msg, "PASS_END"));
	fy_data_sm_step(FY_DS_JOINED, 0x80007777u, 0, &st);
	assert_int_equal(st.action, FY_RA_SKIP);
	fy_data_sm_step(FY_DS_JOINED, 0x7777u, 0, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_int_equal(st.code, FERRY_EUNKNOWN);
	/* and JOIN on the main connection is a protocol error there */
	struct fy_recv_sm sm;

	fy_recv_sm_init(&sm);
	fy_recv_sm_step(&sm, FY_REC_JOIN, 1, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_int_equal(st.code, FERRY_EPROTO);
}

/* ---- postcopy ---- */

/* Every record a postcopy session can see, old and new, in column order. */
static const uint32_t pc_types[] = {
	FY_REC_HELLO, FY_REC_CONFIG, FY_REC_PASS_BEGIN, FY_REC_PASS_END,
	FY_REC_STATE, FY_REC_SWITCHOVER, FY_REC_RELEASED, FY_REC_ABORT,
	FY_REC_MEMORY, FY_REC_OK, FY_REC_ERROR, UNK_OPT, UNK_MAND,
	FY_REC_DISCARD, FY_REC_POSTCOPY, FY_REC_PAGE_REQ, FY_REC_POSTCOPY_END,
	FY_REC_RESUME,
};
#define NPCTYPES (sizeof(pc_types) / sizeof(pc_types[0]))

#define P { FY_RA_REJECT, FY_RS_PC_PAUSED, true }
#define PMEM { FY_RA_MEMORY, FY_RS_POSTCOPY, false }

/* clang-format off */
/* The receiver with the capability negotiated, written from proto.h. */
static const struct expect pc_recv_table[FY_RS_COUNT][NPCTYPES] = {
	/* columns: HELLO CONFIG PASS_BEGIN PASS_END STATE SWITCHOVER RELEASED
	 *          ABORT MEMORY OK ERROR UNK_OPT UNK_MAND
	 *          DISCARD POSTCOPY PAGE_REQ POSTCOPY_END RESUME */
	[FY_RS_WAIT_HELLO]  = { GO(HELLO, WAIT_CONFIG), X, X, X, X, X, X, AB, X, X, X, SK(WAIT_HELLO), X, X, X, X, X, X },
	[FY_RS_WAIT_CONFIG] = { X, GO(CONFIG, IDLE), X, X, X, X, X, AB, X, X, X, SK(WAIT_CONFIG), X, X, X, X, X, X },
	[FY_RS_IDLE]        = { X, X, GO(PASS_BEGIN, PASS), X, GO(STATE, LOADED), X, X, AB, X, X, X, SK(IDLE), X, GO(DISCARD, PC_DISCARD), X, X, X, X },
	[FY_RS_PASS]        = { X, X, X, GO(PASS_END, IDLE), X, X, X, AB, MEM, X, X, SK(PASS), X, X, X, X, X, X },
	[FY_RS_LOADED]      = { X, X, X, X, X, GO(SWITCHOVER, READY), X, AB, X, X, X, SK(LOADED), X, X, X, X, X, X },
	[FY_RS_READY]       = { X, X, X, X, X, X, GO(RELEASED, RUNNING), AB, X, X, X, SK(READY), X, X, X, X, X, X },
	[FY_RS_RUNNING]     = { XR, XR, XR, XR, XR, XR, XR, XR, XR, XR, XR, XR, XR, XR, XR, XR, XR, XR },
	[FY_RS_ABORTED]     = { X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X },
	[FY_RS_PC_DISCARD]  = { X, X, X, X, GO(STATE, PC_LOADED), X, X, AB, X, X, X, SK(PC_DISCARD), X, GO(DISCARD, PC_DISCARD), X, X, X, X },
	[FY_RS_PC_LOADED]   = { X, X, X, X, X, X, X, AB, X, X, X, SK(PC_LOADED), X, X, GO(POSTCOPY, POSTCOPY), X, X, X },
	[FY_RS_POSTCOPY]    = { P, P, P, P, P, P, P, P, PMEM, P, P, SK(POSTCOPY), P, P, P, P, GO(POSTCOPY_END, RUNNING), P },
	[FY_RS_PC_PAUSED]   = { P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P },
	[FY_RS_WAIT_RESUME] = { P, P, P, P, P, P, P, P, P, P, P, SK(WAIT_RESUME), P, P, P, P, P, GO(RESUME, POSTCOPY) },
	[FY_RS_MEMORY_FDS]  = { X, X, X, X, GO(STATE, LOADED), X, X, AB, X, X, X, SK(MEMORY_FDS), X, X, X, X, X, X },
	[FY_RS_DEVICE_FDS]  = { X, X, X, X, GO(STATE, LOADED), X, X, AB, X, X, X, SK(DEVICE_FDS), X, X, X, X, X, X },
};
/* clang-format on */

static void test_pc_recv_table(void **state)
{
	(void)state;
	for (int s = 0; s < FY_RS_COUNT; s++) {
		for (size_t t = 0; t < NPCTYPES; t++) {
			const struct expect *e = &pc_recv_table[s][t];
			uint32_t type = pc_types[t];
			bool data = type == FY_REC_MEMORY ||
				    type == FY_REC_PAGE_REQ;
			uint32_t seq = data ? 0 : 11;
			struct fy_recv_sm sm = { (enum fy_recv_state)s, 10, true };
			struct fy_recv_step st;

			fy_recv_sm_step(&sm, type, seq, &st);
			if (st.action != e->action || st.next != e->next ||
			    st.respond != e->respond)
				fail_msg("state %s type 0x%x: action %d next %s respond %d, want %d %s %d",
					 fy_recv_state_name(s), (unsigned)type,
					 st.action, fy_recv_state_name(st.next),
					 st.respond, e->action,
					 fy_recv_state_name(e->next), e->respond);
			if (st.action == FY_RA_REJECT)
				assert_true(st.msg[0] != 0);
		}
	}
}

/* Without the capability, postcopy records are refused in every state
 * as before, and the old records keep the old table. */
static void test_pc_recv_not_negotiated(void **state)
{
	static const uint32_t pc_only[] = {
		FY_REC_DISCARD, FY_REC_POSTCOPY, FY_REC_PAGE_REQ,
		FY_REC_POSTCOPY_END, FY_REC_RESUME,
	};

	(void)state;
	for (int s = 0; s <= FY_RS_READY; s++) {
		for (size_t t = 0; t < sizeof(pc_only) / sizeof(pc_only[0]); t++) {
			struct fy_recv_sm sm = { (enum fy_recv_state)s, 10, false };
			struct fy_recv_step st;

			fy_recv_sm_step(&sm, pc_only[t], 11, &st);
			assert_int_equal(st.action, FY_RA_REJECT);
			assert_int_equal(st.next, FY_RS_ABORTED);
			/* A refused POSTCOPY also says the guest never ran. */
			assert_int_equal(st.code, pc_only[t] == FY_REC_POSTCOPY
							  ? FY_ERR_NOT_RUN
							  : FERRY_EPROTO);
			assert_non_null(strstr(st.msg, "did not negotiate"));
		}
		for (size_t t = 0; t < NTYPES; t++) {
			struct fy_recv_sm on = { (enum fy_recv_state)s, 10, true };
			struct fy_recv_step a, b;
			uint32_t seq = recv_types[t] == FY_REC_MEMORY ? 0 : 11;

			fy_recv_sm_step(&on, recv_types[t], seq, &a);
			assert_int_equal(a.action, recv_table[s][t].action);
			assert_int_equal(a.next, recv_table[s][t].next);
			on.postcopy = false;
			fy_recv_sm_step(&on, recv_types[t], seq, &b);
			assert_int_equal(b.action, a.action);
		}
	}
}

static void test_pc_recv_messages(void **state)
{
	struct fy_recv_sm sm = { FY_RS_POSTCOPY, 5, true };
	struct fy_recv_step st;

	(void)state;
	fy_recv_sm_step(&sm, FY_REC_ABORT, 6, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_int_equal(st.next, FY_RS_PC_PAUSED);
	assert_non_null(strstr(st.msg, "ABORT after POSTCOPY"));
	assert_non_null(strstr(st.msg, "the destination keeps it"));
	fy_recv_sm_step(&sm, FY_REC_PAGE_REQ, 0, &st);
	assert_string_equal(st.msg,
			    "PAGE_REQ travels from the destination to the source");
	/* Data carries seq 0, requests increase, also after the switch. */
	fy_recv_sm_step(&sm, FY_REC_MEMORY, 6, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_int_equal(st.next, FY_RS_PC_PAUSED);
	fy_recv_sm_step(&sm, FY_REC_POSTCOPY_END, 5, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_non_null(strstr(st.msg, "not greater"));
	/* Before the switch the same ABORT ends the attempt. */
	sm.state = FY_RS_PC_LOADED;
	fy_recv_sm_step(&sm, FY_REC_ABORT, 6, &st);
	assert_int_equal(st.action, FY_RA_ABORT);
	assert_int_equal(st.next, FY_RS_ABORTED);
}

/*
 * The engine commits the transition before the guest runs: a failure
 * while it answers POSTCOPY then pauses (the guest may run here) instead
 * of aborting. A POSTCOPY refused before that (a replayed seq) says the
 * guest never ran.
 */
static void test_pc_recv_transition(void **state)
{
	struct fy_recv_sm sm = { FY_RS_PC_LOADED, 10, true };
	struct fy_recv_step st;

	(void)state;
	fy_recv_sm_step(&sm, FY_REC_POSTCOPY, 10, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_int_equal(st.code, FY_ERR_NOT_RUN);
	assert_int_equal(st.next, FY_RS_ABORTED);

	fy_recv_sm_step(&sm, FY_REC_POSTCOPY, 11, &st);
	assert_int_equal(st.action, FY_RA_POSTCOPY);
	assert_int_equal(fy_recv_sm_transition(&sm), 0);
	assert_int_equal(fy_recv_owner(sm.state), FY_OWNER_DESTINATION);
	fy_recv_sm_fail(&sm); /* answering OK failed after the resume */
	assert_int_equal(sm.state, FY_RS_PC_PAUSED);
	assert_int_equal(fy_recv_owner(sm.state), FY_OWNER_DESTINATION);

	/* Only from PC_LOADED. */
	for (int s = 0; s < FY_RS_COUNT; s++) {
		sm = (struct fy_recv_sm){ (enum fy_recv_state)s, 10, true };
		if (s == FY_RS_PC_LOADED)
			continue;
		assert_int_equal(fy_recv_sm_transition(&sm), -EPROTO);
		assert_int_equal(sm.state, s);
	}
}

static void test_pc_recv_fail_and_resume(void **state)
{
	struct fy_recv_sm sm;

	(void)state;
	for (int s = 0; s < FY_RS_COUNT; s++) {
		bool after = s == FY_RS_POSTCOPY || s == FY_RS_PC_PAUSED ||
			     s == FY_RS_WAIT_RESUME;

		sm = (struct fy_recv_sm){ (enum fy_recv_state)s, 3, true };
		assert_int_equal(fy_recv_sm_may_request(&sm), s == FY_RS_POSTCOPY);
		fy_recv_sm_fail(&sm);
		assert_int_equal(sm.state,
				 after ? FY_RS_PC_PAUSED
				 : s == FY_RS_RUNNING ? FY_RS_RUNNING : FY_RS_ABORTED);
		assert_false(fy_recv_sm_may_request(&sm));
	}
	fy_recv_sm_init_resume(&sm);
	assert_int_equal(sm.state, FY_RS_WAIT_RESUME);
	assert_int_equal(sm.last_seq, 0);
	assert_true(sm.postcopy);
	assert_int_equal(fy_recv_owner(sm.state), FY_OWNER_DESTINATION);
}

/* A whole postcopy migration through both machines, with two cuts: one
 * during the postcopy phase, one during the recovery handshake. */
static void test_pc_both_sides(void **state)
{
	struct fy_send_sm tx;
	struct fy_recv_sm rx, rx2;
	struct fy_recv_step st;
	uint32_t seq;

	(void)state;
	fy_send_sm_init(&tx);
	fy_recv_sm_init(&rx);
	tx.postcopy = rx.postcopy = true;
#define SEND(sm_rx, type, want_next)                                        \
	do {                                                                \
		assert_int_equal(fy_send_sm_request(&tx, type, &seq), 0);   \
		fy_recv_sm_step(&(sm_rx), type, seq, &st);                   \
		assert_int_not_equal(st.action, FY_RA_REJECT);              \
		fy_recv_sm_commit(&(sm_rx), &st, seq);                       \
		assert_int_equal((sm_rx).state, want_next);                  \
		assert_int_equal(fy_send_sm_response(&tx, FY_REC_OK, seq), 0); \
	} while (0)
#define DATA(sm_rx)                                                         \
	do {                                                                \
		assert_int_equal(fy_send_sm_data(&tx), 0);                  \
		fy_recv_sm_step(&(sm_rx), FY_REC_MEMORY, 0, &st);            \
		assert_int_equal(st.action, FY_RA_MEMORY);                  \
		assert_false(st.respond);                                   \
		fy_recv_sm_commit(&(sm_rx), &st, 0);                         \
	} while (0)
	SEND(rx, FY_REC_HELLO, FY_RS_WAIT_CONFIG);
	SEND(rx, FY_REC_CONFIG, FY_RS_IDLE);
	SEND(rx, FY_REC_PASS_BEGIN, FY_RS_PASS);
	DATA(rx);
	SEND(rx, FY_REC_PASS_END, FY_RS_IDLE);
	SEND(rx, FY_REC_DISCARD, FY_RS_PC_DISCARD);
	assert_int_equal(tx.state, FY_SS_PC_DISCARD);
	SEND(rx, FY_REC_DISCARD, FY_RS_PC_DISCARD);
	/* Committed to postcopy: no final pass, no SWITCHOVER now. */
	assert_int_equal(fy_send_sm_request(&tx, FY_REC_PASS_BEGIN, &seq), -EPROTO);
	SEND(rx, FY_REC_STATE, FY_RS_PC_LOADED);
	assert_int_equal(tx.state, FY_SS_PC_LOADED);
	assert_int_equal(fy_send_sm_request(&tx, FY_REC_SWITCHOVER, &seq), -EPROTO);
	assert_int_equal(fy_send_sm_owner(&tx), FY_OWNER_SOURCE);
	assert_int_equal(fy_recv_owner(rx.state), FY_OWNER_SOURCE);
	SEND(rx, FY_REC_POSTCOPY, FY_RS_POSTCOPY);
	assert_int_equal(fy_send_sm_owner(&tx), FY_OWNER_DESTINATION);
	assert_int_equal(fy_recv_owner(rx.state), FY_OWNER_DESTINATION);
	assert_true(fy_recv_sm_may_request(&rx));
	assert_int_equal(fy_send_sm_input(&tx, FY_REC_PAGE_REQ, 0, NULL, 0),
			 FY_SI_PAGE_REQ);
	DATA(rx);
	/* Cut: both pause; the source may not give up. */
	fy_send_sm_fail(&tx);
	fy_recv_sm_fail(&rx);
	assert_int_equal(tx.state, FY_SS_PC_PAUSED);
	assert_int_equal(rx.state, FY_RS_PC_PAUSED);
	assert_int_equal(fy_send_sm_request(&tx, FY_REC_ABORT, &seq), -EPROTO);
	assert_int_equal(fy_send_sm_data(&tx), -EPROTO);
	/* Recovery attempt 1 is cut during its handshake. */
	fy_recv_sm_init_resume(&rx2);
	assert_int_equal(fy_send_sm_request(&tx, FY_REC_RESUME, &seq), 0);
	assert_int_equal(seq, 1);
	assert_int_equal(tx.state, FY_SS_PC_RESUMING);
	fy_send_sm_fail(&tx);
	fy_recv_sm_fail(&rx2);
	assert_int_equal(tx.state, FY_SS_PC_PAUSED);
	assert_int_equal(rx2.state, FY_RS_PC_PAUSED);
	/* Attempt 2 is refused (say, a stale generation): still paused. */
	assert_int_equal(fy_send_sm_request(&tx, FY_REC_RESUME, &seq), 0);
	assert_int_equal(fy_send_sm_response(&tx, FY_REC_ERROR, seq), FERRY_EPEER);
	assert_int_equal(tx.state, FY_SS_PC_PAUSED);
	assert_int_equal(fy_send_sm_not_run(&tx), -EPROTO);
	assert_int_equal(fy_send_sm_owner(&tx), FY_OWNER_DESTINATION);
	/* Attempt 3 succeeds; seq numbers start again on its connection. */
	fy_recv_sm_init_resume(&rx2);
	SEND(rx2, FY_REC_RESUME, FY_RS_POSTCOPY);
	assert_int_equal(seq, 1);
	assert_int_equal(tx.state, FY_SS_POSTCOPY);
	DATA(rx2);
	SEND(rx2, FY_REC_POSTCOPY_END, FY_RS_RUNNING);
	assert_int_equal(tx.state, FY_SS_DONE);
	assert_int_equal(fy_send_sm_owner(&tx), FY_OWNER_DESTINATION);
	assert_int_equal(fy_recv_owner(rx2.state), FY_OWNER_DESTINATION);
#undef SEND
#undef DATA
}

/* The sender with the capability: every (state, request) pair. -1 refused,
 * else the state after OK. */
/* clang-format off */
static const int pc_send_table[FY_SS_COUNT][NPCTYPES] = {
	/* columns as in pc_recv_table (MEMORY..UNK_MAND and PAGE_REQ are
	 * never requests) */
	[FY_SS_START]       = { FY_SS_NEGOTIATED, NO, NO, NO, NO, NO, NO, FY_SS_FAILED, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO },
	[FY_SS_NEGOTIATED]  = { NO, FY_SS_CONFIGURED, NO, NO, NO, NO, NO, FY_SS_FAILED, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO },
	[FY_SS_CONFIGURED]  = { NO, NO, FY_SS_IN_PASS, NO, FY_SS_STATE_SENT, NO, NO, FY_SS_FAILED, NO, NO, NO, NO, NO, FY_SS_PC_DISCARD, NO, NO, NO, NO },
	[FY_SS_IN_PASS]     = { NO, NO, NO, FY_SS_CONFIGURED, NO, NO, NO, FY_SS_FAILED, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO },
	[FY_SS_STATE_SENT]  = { NO, NO, NO, NO, NO, FY_SS_READY, NO, FY_SS_FAILED, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO },
	[FY_SS_READY]       = { NO, NO, NO, NO, NO, NO, FY_SS_DONE, FY_SS_FAILED, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO },
	[FY_SS_RELEASED]    = { NO, NO, NO, NO, NO, NO, NO, FY_SS_FAILED, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO },
	[FY_SS_DONE]        = { NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO },
	[FY_SS_FAILED]      = { NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO },
	[FY_SS_PC_DISCARD]  = { NO, NO, NO, NO, FY_SS_PC_LOADED, NO, NO, FY_SS_FAILED, NO, NO, NO, NO, NO, FY_SS_PC_DISCARD, NO, NO, NO, NO },
	[FY_SS_PC_LOADED]   = { NO, NO, NO, NO, NO, NO, NO, FY_SS_FAILED, NO, NO, NO, NO, NO, NO, FY_SS_POSTCOPY, NO, NO, NO },
	[FY_SS_POSTCOPY]    = { NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, FY_SS_DONE, NO },
	[FY_SS_PC_PAUSED]   = { NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, FY_SS_POSTCOPY },
	[FY_SS_PC_RESUMING] = { NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO },
	[FY_SS_FDS_SENT]    = { NO, NO, NO, NO, FY_SS_STATE_SENT, NO, NO, FY_SS_FAILED, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO },
	[FY_SS_DEVFDS_SENT] = { NO, NO, NO, NO, FY_SS_STATE_SENT, NO, NO, FY_SS_FAILED, NO, NO, NO, NO, NO, NO, NO, NO, NO, NO },
};
/* clang-format on */

static bool pc_transitioned(int s)
{
	return s == FY_SS_POSTCOPY || s == FY_SS_PC_PAUSED ||
	       s == FY_SS_PC_RESUMING;
}

static void test_pc_send_table(void **state)
{
	(void)state;
	for (int s = 0; s < FY_SS_COUNT; s++) {
		for (size_t t = 0; t < NPCTYPES; t++) {
			struct fy_send_sm sm = sender_in((enum fy_send_state)s,
							 s == FY_SS_RELEASED);
			uint32_t type = pc_types[t], seq = 0;
			int want = pc_send_table[s][t], rc;

			sm.postcopy = true;
			sm.transitioned = pc_transitioned(s);
			rc = fy_send_sm_request(&sm, type, &seq);
			if (want == NO) {
				if (rc != -EPROTO)
					fail_msg("state %s type 0x%x: rc %d, want -EPROTO",
						 fy_send_state_name(s),
						 (unsigned)type, rc);
				assert_int_equal(sm.state, s);
				assert_int_equal(sm.next_seq, 40);
				continue;
			}
			assert_int_equal(rc, 0);
			assert_int_equal(seq, type == FY_REC_RESUME ? 1 : 40);
			if (type == FY_REC_POSTCOPY)
				assert_true(sm.transitioned);
			assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, seq), 0);
			if ((int)sm.state != want)
				fail_msg("state %s type 0x%x: OK leads to %s, want %s",
					 fy_send_state_name(s), (unsigned)type,
					 fy_send_state_name(sm.state),
					 fy_send_state_name(want));
		}
	}
	/* Without the capability none of the postcopy requests is valid. */
	for (int s = 0; s < FY_SS_COUNT; s++) {
		struct fy_send_sm sm = sender_in((enum fy_send_state)s, false);
		uint32_t seq;

		assert_int_equal(fy_send_sm_request(&sm, FY_REC_DISCARD, &seq),
				 -EPROTO);
		assert_int_equal(fy_send_sm_request(&sm, FY_REC_RESUME, &seq),
				 -EPROTO);
	}
}

/* Only an ERROR answering POSTCOPY itself can give the guest back. */
static void test_pc_not_run(void **state)
{
	struct fy_send_sm sm;
	uint32_t seq;

	(void)state;
	sm = sender_in(FY_SS_PC_LOADED, false);
	sm.postcopy = true;
	assert_false(fy_send_sm_past_release(&sm));
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_POSTCOPY, &seq), 0);
	assert_int_equal(sm.state, FY_SS_POSTCOPY);
	assert_int_equal(fy_send_sm_owner(&sm), FY_OWNER_DESTINATION);
	/* The engine's unwind asks this one question: it must not resume. */
	assert_true(fy_send_sm_past_release(&sm));
	/* No data and no PAGE_REQ before the OK. */
	assert_int_equal(fy_send_sm_data(&sm), -EPROTO);
	assert_int_equal(fy_send_sm_input(&sm, FY_REC_PAGE_REQ, 0, NULL, 0),
			 FY_SI_REJECT);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_ERROR, seq), FERRY_EPEER);
	/* Any ERROR alone leaves the guest to the destination, paused. */
	assert_int_equal(sm.state, FY_SS_PC_PAUSED);
	assert_int_equal(fy_send_sm_owner(&sm), FY_OWNER_DESTINATION);
	assert_true(fy_send_sm_past_release(&sm));
	assert_int_equal(fy_send_sm_not_run(&sm), 0);
	assert_int_equal(sm.state, FY_SS_FAILED);
	assert_false(sm.transitioned);
	assert_false(fy_send_sm_past_release(&sm));
	assert_int_equal(fy_send_sm_owner(&sm), FY_OWNER_SOURCE);
	assert_int_equal(fy_send_sm_not_run(&sm), -EPROTO);

	/* A cut after POSTCOPY was sent: no answer, nothing to undo it. */
	sm = sender_in(FY_SS_PC_LOADED, false);
	sm.postcopy = true;
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_POSTCOPY, &seq), 0);
	fy_send_sm_fail(&sm);
	assert_int_equal(fy_send_sm_not_run(&sm), -EPROTO);
	assert_int_equal(fy_send_sm_owner(&sm), FY_OWNER_DESTINATION);
	/* An ERROR to POSTCOPY_END is no "not run" either. */
	sm = sender_in(FY_SS_POSTCOPY, false);
	sm.postcopy = sm.transitioned = true;
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_POSTCOPY_END, &seq), 0);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_ERROR, seq), FERRY_EPEER);
	assert_int_equal(sm.state, FY_SS_PC_PAUSED);
	assert_int_equal(fy_send_sm_not_run(&sm), -EPROTO);
	/* Nor an ERROR to a request before the transition. */
	sm = sender_in(FY_SS_PC_DISCARD, false);
	sm.postcopy = true;
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_STATE, &seq), 0);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_ERROR, seq), FERRY_EPEER);
	assert_int_equal(sm.state, FY_SS_FAILED);
	assert_int_equal(fy_send_sm_not_run(&sm), -EPROTO);
	assert_int_equal(fy_send_sm_owner(&sm), FY_OWNER_SOURCE);
}

static void test_pc_send_input(void **state)
{
	struct fy_send_sm sm = sender_in(FY_SS_POSTCOPY, false);
	char msg[200];
	uint32_t seq;

	(void)state;
	sm.postcopy = sm.transitioned = true;
	assert_int_equal(fy_send_sm_input(&sm, FY_REC_PAGE_REQ, 0, msg,
					  sizeof(msg)), FY_SI_PAGE_REQ);
	assert_int_equal(fy_send_sm_input(&sm, FY_REC_PAGE_REQ, 3, msg,
					  sizeof(msg)), FY_SI_REJECT);
	assert_non_null(strstr(msg, "seq 3"));
	assert_int_equal(fy_send_sm_input(&sm, FY_REC_OK, 9, msg, sizeof(msg)),
			 FY_SI_RESPONSE);
	assert_int_equal(fy_send_sm_input(&sm, FY_REC_ERROR, 0, msg, sizeof(msg)),
			 FY_SI_RESPONSE);
	assert_int_equal(fy_send_sm_input(&sm, UNK_OPT, 0, msg, sizeof(msg)),
			 FY_SI_SKIP);
	assert_int_equal(fy_send_sm_input(&sm, UNK_MAND, 0, msg, sizeof(msg)),
			 FY_SI_REJECT);
	/* Requests never travel towards the source. */
	assert_int_equal(fy_send_sm_input(&sm, FY_REC_POSTCOPY_END, 4, msg,
					  sizeof(msg)), FY_SI_REJECT);
	assert_non_null(strstr(msg, "POSTCOPY_END is not valid towards the source"));
	/* A request crossing POSTCOPY_END is answered (its page may be in
	 * flight on a data connection), not an error. */
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_POSTCOPY_END, &seq), 0);
	assert_int_equal(fy_send_sm_input(&sm, FY_REC_PAGE_REQ, 0, msg,
					  sizeof(msg)), FY_SI_PAGE_REQ);
	/* Anywhere else, PAGE_REQ is a protocol error. */
	for (int s = 0; s < FY_SS_COUNT; s++) {
		struct fy_send_sm o = sender_in((enum fy_send_state)s, false);

		o.postcopy = true;
		if (s == FY_SS_POSTCOPY)
			continue;
		assert_int_equal(fy_send_sm_input(&o, FY_REC_PAGE_REQ, 0, NULL, 0),
				 FY_SI_REJECT);
	}
	sm.postcopy = false;
	sm.pending_type = 0;
	assert_int_equal(fy_send_sm_input(&sm, FY_REC_PAGE_REQ, 0, NULL, 0),
			 FY_SI_REJECT);
}

/* Who owns the guest in every state, on both sides. */
static void test_owner(void **state)
{
	static const enum fy_owner recv_owner[FY_RS_COUNT] = {
		[FY_RS_WAIT_HELLO] = FY_OWNER_NONE,
		[FY_RS_WAIT_CONFIG] = FY_OWNER_SOURCE,
		[FY_RS_IDLE] = FY_OWNER_SOURCE,
		[FY_RS_PASS] = FY_OWNER_SOURCE,
		[FY_RS_LOADED] = FY_OWNER_SOURCE,
		[FY_RS_READY] = FY_OWNER_SOURCE,
		[FY_RS_RUNNING] = FY_OWNER_DESTINATION,
		[FY_RS_ABORTED] = FY_OWNER_SOURCE,
		[FY_RS_PC_DISCARD] = FY_OWNER_SOURCE,
		[FY_RS_PC_LOADED] = FY_OWNER_SOURCE,
		[FY_RS_POSTCOPY] = FY_OWNER_DESTINATION,
		[FY_RS_PC_PAUSED] = FY_OWNER_DESTINATION,
		[FY_RS_WAIT_RESUME] = FY_OWNER_DESTINATION,
		[FY_RS_MEMORY_FDS] = FY_OWNER_SOURCE,
		[FY_RS_DEVICE_FDS] = FY_OWNER_SOURCE,
	};

	(void)state;
	assert_string_equal(fy_owner_name(FY_OWNER_SOURCE), "source");
	assert_string_equal(fy_owner_name(FY_OWNER_DESTINATION), "destination");
	assert_string_equal(fy_owner_name(FY_OWNER_NONE), "none");
	assert_string_equal(fy_owner_name((enum fy_owner)42), "none");
	for (int s = 0; s < FY_RS_COUNT; s++)
		if (fy_recv_owner((enum fy_recv_state)s) != recv_owner[s])
			fail_msg("receiver %s: owner %s, want %s",
				 fy_recv_state_name(s),
				 fy_owner_name(fy_recv_owner(s)),
				 fy_owner_name(recv_owner[s]));
	assert_int_equal(fy_recv_owner((enum fy_recv_state)99), FY_OWNER_NONE);
	/* The source: whatever the state, the flags decide -- RELEASED or
	 * POSTCOPY sent, and the destination owns it, DONE and FAILED
	 * included. */
	for (int s = 0; s < FY_SS_COUNT; s++) {
		for (int f = 0; f < 4; f++) {
			bool rel = f & 1, tr = f & 2;
			enum fy_owner want = rel || tr ? FY_OWNER_DESTINATION
						       : FY_OWNER_SOURCE;

			assert_int_equal(fy_send_owner(s, rel, tr), want);
		}
	}
	assert_int_equal(fy_send_owner((enum fy_send_state)99, true, true),
			 FY_OWNER_NONE);
	/* And walking the machine, the owner changes at the send of
	 * RELEASED, not at its answer. */
	struct fy_send_sm sm = sender_in(FY_SS_READY, false);
	uint32_t seq;

	assert_int_equal(fy_send_sm_owner(&sm), FY_OWNER_SOURCE);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_RELEASED, &seq), 0);
	assert_int_equal(fy_send_sm_owner(&sm), FY_OWNER_DESTINATION);
	fy_send_sm_fail(&sm);
	assert_int_equal(sm.state, FY_SS_FAILED);
	assert_int_equal(fy_send_sm_owner(&sm), FY_OWNER_DESTINATION);
}

static void test_pc_state_names(void **state)
{
	const char *seen[32];
	int n = 0;

	(void)state;
	for (int s = 0; s < FY_RS_COUNT; s++) {
		const char *name = fy_recv_state_name((enum fy_recv_state)s);

		assert_string_not_equal(name, "unknown");
		for (int i = 0; i < n; i++)
			assert_string_not_equal(seen[i], name);
		seen[n++] = name;
	}
	assert_string_equal(fy_recv_state_name(FY_RS_PC_PAUSED), "postcopy_paused");
	n = 0;
	for (int s = 0; s < FY_SS_COUNT; s++) {
		const char *name = fy_send_state_name((enum fy_send_state)s);

		assert_string_not_equal(name, "unknown");
		for (int i = 0; i < n; i++)
			assert_string_not_equal(seen[i], name);
		seen[n++] = name;
	}
	assert_string_equal(fy_send_state_name(FY_SS_PC_PAUSED), "postcopy_paused");
}

/* ---- local migration by fds ---- */

/* MEMORY_FDS in every receiver state, with the capability negotiated:
 * only IDLE takes it (before any pass or after one), and the state it
 * leads to takes STATE and nothing that carries memory. */
static void test_local_recv(void **state)
{
	(void)state;
	for (int s = 0; s < FY_RS_COUNT; s++) {
		struct fy_recv_sm sm = { (enum fy_recv_state)s, 10, false, true };
		struct fy_recv_step st;

		fy_recv_sm_step(&sm, FY_REC_MEMORY_FDS, 11, &st);
		if (s == FY_RS_IDLE) {
			assert_int_equal(st.action, FY_RA_MEMORY_FDS);
			assert_int_equal(st.next, FY_RS_MEMORY_FDS);
			assert_true(st.respond);
		} else if (st.action != FY_RA_REJECT) {
			fail_msg("state %s takes MEMORY_FDS", fy_recv_state_name(s));
		}
	}
	struct fy_recv_sm sm = { FY_RS_MEMORY_FDS, 10, false, true };
	struct fy_recv_step st;
	const uint32_t no[] = { FY_REC_PASS_BEGIN, FY_REC_MEMORY_FDS,
				FY_REC_SWITCHOVER, FY_REC_RELEASED };

	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		fy_recv_sm_step(&sm, no[i], 11, &st);
		assert_int_equal(st.action, FY_RA_REJECT);
		assert_int_equal(st.next, FY_RS_ABORTED);
	}
	fy_recv_sm_step(&sm, FY_REC_MEMORY, 0, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	fy_recv_sm_step(&sm, FY_REC_STATE, 11, &st);
	assert_int_equal(st.action, FY_RA_STATE);
	assert_int_equal(st.next, FY_RS_LOADED);
	/* Without the capability it is refused, saying so. */
	sm.state = FY_RS_IDLE;
	sm.local_fds = false;
	fy_recv_sm_step(&sm, FY_REC_MEMORY_FDS, 11, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_int_equal(st.code, FERRY_EPROTO);
	assert_non_null(strstr(st.msg, "local-fds"));
	assert_string_equal(fy_recv_state_name(FY_RS_MEMORY_FDS), "memory_fds");
}

/* The sender: MEMORY_FDS from CONFIGURED only, and then STATE, never a
 * pass; without the capability never. */
static void test_local_send(void **state)
{
	(void)state;
	for (int s = 0; s < FY_SS_COUNT; s++) {
		struct fy_send_sm sm = sender_in((enum fy_send_state)s, false);
		uint32_t seq;
		int rc;

		sm.local_fds = true;
		rc = fy_send_sm_request(&sm, FY_REC_MEMORY_FDS, &seq);
		assert_int_equal(rc, s == FY_SS_CONFIGURED ? 0 : -EPROTO);
		sm = sender_in((enum fy_send_state)s, false);
		assert_int_equal(fy_send_sm_request(&sm, FY_REC_MEMORY_FDS, &seq),
				 -EPROTO);
	}
	struct fy_send_sm sm = sender_in(FY_SS_CONFIGURED, false);
	uint32_t seq;

	sm.local_fds = true;
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_MEMORY_FDS, &seq), 0);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, seq), 0);
	assert_int_equal(sm.state, FY_SS_FDS_SENT);
	assert_int_equal(fy_send_sm_data(&sm), -EPROTO);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_PASS_BEGIN, &seq), -EPROTO);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_STATE, &seq), 0);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, seq), 0);
	assert_int_equal(sm.state, FY_SS_STATE_SENT);
	assert_int_equal(fy_send_owner(FY_SS_FDS_SENT, false, false),
			 FY_OWNER_SOURCE);
	assert_string_equal(fy_send_state_name(FY_SS_FDS_SENT), "fds_sent");
}

/* DEVICE_FDS in every receiver state, with local and device fds
 * negotiated: only MEMORY_FDS takes it (the memory is the source's files,
 * the guest paused), and the state it leads to takes STATE only; without
 * the device-fds capability it is refused, saying so. */
static void test_device_fds_recv(void **state)
{
	(void)state;
	for (int s = 0; s < FY_RS_COUNT; s++) {
		struct fy_recv_sm sm = { (enum fy_recv_state)s, 10, false, true,
					 true };
		struct fy_recv_step st;

		fy_recv_sm_step(&sm, FY_REC_DEVICE_FDS, 11, &st);
		if (s == FY_RS_MEMORY_FDS) {
			assert_int_equal(st.action, FY_RA_DEVICE_FDS);
			assert_int_equal(st.next, FY_RS_DEVICE_FDS);
			assert_true(st.respond);
		} else if (st.action != FY_RA_REJECT) {
			fail_msg("state %s takes DEVICE_FDS", fy_recv_state_name(s));
		}
	}
	struct fy_recv_sm sm = { FY_RS_DEVICE_FDS, 10, false, true, true };
	struct fy_recv_step st;
	const uint32_t no[] = { FY_REC_PASS_BEGIN, FY_REC_MEMORY_FDS,
				FY_REC_DEVICE_FDS, FY_REC_SWITCHOVER,
				FY_REC_RELEASED };

	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		fy_recv_sm_step(&sm, no[i], 11, &st);
		assert_int_equal(st.action, FY_RA_REJECT);
		assert_int_equal(st.next, FY_RS_ABORTED);
	}
	fy_recv_sm_step(&sm, FY_REC_STATE, 11, &st);
	assert_int_equal(st.action, FY_RA_STATE);
	assert_int_equal(st.next, FY_RS_LOADED);
	assert_int_equal(fy_recv_owner(FY_RS_DEVICE_FDS), FY_OWNER_SOURCE);
	sm.state = FY_RS_MEMORY_FDS;
	sm.device_fds = false;
	fy_recv_sm_step(&sm, FY_REC_DEVICE_FDS, 11, &st);
	assert_int_equal(st.action, FY_RA_REJECT);
	assert_int_equal(st.code, FERRY_EPROTO);
	assert_non_null(strstr(st.msg, "device-fds"));
	assert_string_equal(fy_recv_state_name(FY_RS_DEVICE_FDS), "device_fds");
}

/* The sender: DEVICE_FDS after MEMORY_FDS's answer only, then STATE; not
 * without the capability. */
static void test_device_fds_send(void **state)
{
	(void)state;
	for (int s = 0; s < FY_SS_COUNT; s++) {
		struct fy_send_sm sm = sender_in((enum fy_send_state)s, false);
		uint32_t seq;

		sm.local_fds = sm.device_fds = true;
		assert_int_equal(fy_send_sm_request(&sm, FY_REC_DEVICE_FDS, &seq),
				 s == FY_SS_FDS_SENT ? 0 : -EPROTO);
	}
	struct fy_send_sm sm = sender_in(FY_SS_FDS_SENT, false);
	uint32_t seq;

	sm.local_fds = true;
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_DEVICE_FDS, &seq), -EPROTO);
	sm.device_fds = true;
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_DEVICE_FDS, &seq), 0);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, seq), 0);
	assert_int_equal(sm.state, FY_SS_DEVFDS_SENT);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_DEVICE_FDS, &seq), -EPROTO);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_SWITCHOVER, &seq), -EPROTO);
	assert_int_equal(fy_send_sm_request(&sm, FY_REC_STATE, &seq), 0);
	assert_int_equal(fy_send_sm_response(&sm, FY_REC_OK, seq), 0);
	assert_int_equal(sm.state, FY_SS_STATE_SENT);
	assert_int_equal(fy_send_owner(FY_SS_DEVFDS_SENT, false, false),
			 FY_OWNER_SOURCE);
	assert_string_equal(fy_send_state_name(FY_SS_DEVFDS_SENT),
			    "device_fds_sent");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_recv_table),
		cmocka_unit_test(test_recv_messages),
		cmocka_unit_test(test_recv_seq),
		cmocka_unit_test(test_keepalive_skipped),
		cmocka_unit_test(test_recv_happy_path),
		cmocka_unit_test(test_recv_abort_and_fail),
		cmocka_unit_test(test_state_names),
		cmocka_unit_test(test_send_table),
		cmocka_unit_test(test_send_one_outstanding),
		cmocka_unit_test(test_send_response_matching),
		cmocka_unit_test(test_send_abort_while_pending),
		cmocka_unit_test(test_send_released_sticky),
		cmocka_unit_test(test_send_data),
		cmocka_unit_test(test_send_happy_path),
		cmocka_unit_test(test_both_sides),
		cmocka_unit_test(test_send_seq_exhausted),
		cmocka_unit_test(test_data_connection),
		cmocka_unit_test(test_pc_recv_table),
		cmocka_unit_test(test_pc_recv_not_negotiated),
		cmocka_unit_test(test_pc_recv_messages),
		cmocka_unit_test(test_pc_recv_transition),
		cmocka_unit_test(test_pc_recv_fail_and_resume),
		cmocka_unit_test(test_pc_both_sides),
		cmocka_unit_test(test_pc_send_table),
		cmocka_unit_test(test_pc_not_run),
		cmocka_unit_test(test_pc_send_input),
		cmocka_unit_test(test_owner),
		cmocka_unit_test(test_pc_state_names),
		cmocka_unit_test(test_local_recv),
		cmocka_unit_test(test_local_send),
		cmocka_unit_test(test_device_fds_recv),
		cmocka_unit_test(test_device_fds_send),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
