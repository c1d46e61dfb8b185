/* SPDX-License-Identifier: MIT */
/*
 * net_fdpass.h - the network device's sockets passed by fd on a live
 * update (net_fdpass.c).
 */
#ifndef FERRY_VM_NET_FDPASS_H
#define FERRY_VM_NET_FDPASS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry.h"
#include "net.h"

struct net;
struct net_state;

/* The "net0fds" device state: descriptor k is connection k's socket for
 * k < nconns; the listener and the gate's map and program are at their
 * indices (0xffffffff: none). */
struct net_fds_conn {
	uint32_t slot;
	bool gated; /* its filter is the gate (passed along with it) */
};
struct net_fds_state {
	bool present;	/* visited: saved, or found in the stream */
	uint32_t count; /* descriptors in DEVICE_FDS */
	uint32_t listener, gate_map, gate_prog;
	bool listen_gated;
	uint32_t nconns;
	struct net_fds_conn conns[NET_SLOTS];
};

extern const struct ferry_device_type net_fds_type;

/* The device's side of an fd handoff. */
struct net_fdp {
	bool active;   /* source: this handoff passes the sockets by fd */
	bool received; /* destination: load_fds kept fds[] */
	bool bound;    /* destination: load_state said what they are */
	int *fds;      /* destination: the source's descriptors, owned */
	uint32_t nfds;
	struct net_fds_state st; /* source: saved; destination: loaded */
};

bool net_fdpass_want(struct net *n, ferry_session *s);
int net_fdpass_save(struct net *n, int *fds, size_t max, size_t *count);
void net_fdpass_fill(struct net *n, struct net_state *s);
void net_fdpass_release(struct net *n);
void net_fdpass_back(struct net *n);
void net_fdpass_outcome(struct net *n, int rc);
int net_fdpass_load(struct net *n, const int *fds, size_t count, char *err,
		    size_t len);
int net_fdpass_bind(struct net *n, const struct net_fds_state *s, char *err,
		    size_t len);
int net_fdpass_acquire(struct net *n);
void net_fdpass_discard(struct net *n);
bool net_fdpass_pending(const struct net *n);
bool net_fdpass_active(const struct net *n);
void net_note_repair(struct net *n);
void net_fdpass_arrived(struct net *n);

#endif /* FERRY_VM_NET_FDPASS_H */
