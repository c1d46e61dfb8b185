/* SPDX-License-Identifier: MIT */
/*
 * net_int.h - what net.c, net_handoff.c and kv.c share about the device:
 * its host side. The guest side (the rings) is net.h's.
 */
#ifndef FERRY_VM_NET_INT_H
#define FERRY_VM_NET_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "net.h"
#include "net_fdpass.h"
#include "netaddr.h"
#include "tcprepair.h"
#include "vm.h"

/* Where the guest's connections are, as the report says. */
enum net_where {
	NET_WHERE_HERE = 0, /* this VM owns them (or has none) */
	NET_WHERE_AWAY = 1, /* a source: handed to the destination */
	NET_WHERE_LOST = 2, /* released, and the destination never ran */
};

/* How the last handoff moved the connections, as the report says. */
enum net_handoff {
	NET_HANDOFF_NONE = 0,
	NET_HANDOFF_REPAIR = 1, /* frozen, dumped, re-created (TCP_REPAIR) */
	NET_HANDOFF_FDS = 2,	/* the sockets themselves, by fd */
};

/* The epoll tag of the listener (net.c's EV_LISTEN). */
#define NET_EV_LISTEN NET_SLOTS

/* The helper threads of the handoff's per-connection steps (net_par.c):
 * from NET_PAR_MIN connections on, at most NET_PAR_MAX threads with the
 * caller's. Below NET_PAR_MIN the steps take a few milliseconds of CPU at
 * most, and on a busy host waking a helper can cost more than that. */
#define NET_PAR_MIN 256
#define NET_PAR_MAX 4

struct net;

struct net_par {
	pthread_t thread[NET_PAR_MAX - 1];
	uint32_t nthreads;
	bool started, stop;
	bool posted; /* a job is under way (the caller's thread only) */
	bool more;   /* the job's: another follows at once, stay awake */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a job, or stop */
	/* The job (set under lock; gen counts them). */
	uint32_t gen, count;
	void (*fn)(struct net *n, void *arg, uint32_t k);
	void *arg;
	_Atomic uint64_t next;	/* gen << 32 | the next item to claim */
	atomic_uint done;	/* items done */
	_Atomic uint64_t spent_ns; /* the helpers' CPU time on them */
};

void net_par_start(struct net *n);
void net_par_stop(struct net *n);
uint64_t net_par_run(struct net *n, uint32_t count,
		     void (*fn)(struct net *n, void *arg, uint32_t k),
		     void *arg, bool more);
bool net_par_post(struct net *n, uint32_t count,
		  void (*fn)(struct net *n, void *arg, uint32_t k), void *arg);
void net_par_finish(struct net *n);
void net_par_wake(struct net *n);
uint64_t net_cpu_ns(void);

/* The "net0" device state: the connections handed over, each with the
 * slot its rings are in. */
struct net_saved {
	uint32_t slot;
	struct tcpr_conn c;
};

struct net_state {
	char listen[128];  /* --listen as given (informative) */
	uint32_t reset;	   /* connections not carried (a snapshot) */
	uint64_t client_sent, client_answered; /* informative: in guest RAM */
	uint32_t nconns;
	struct net_saved conns[NET_SLOTS];
};

extern const struct ferry_device_type net_state_type;

/* The host side of one slot. */
struct net_conn {
	int fd;	      /* the connection's socket, or -1 */
	bool rx_full; /* the ring filled before the socket was drained: read
			 again when the guest makes room */
	bool tx_wait; /* the send buffer is full: write again on EPOLLOUT */
	bool frozen;  /* in TCP_REPAIR mode (a handoff is under way) */
	bool carried; /* dumped into the state: it moves at release */
	bool id_ok;   /* id holds the connection's tcpr_ident() */
	bool gated;   /* the socket has the process's gate filter (tcprepair.h) */
	struct tcpr_conn id; /* what never changes (addresses, options),
				read when the connection came, so that the
				pause reads only what moves; and id.ahead,
				read once it lived 250 ms or when a
				migration starts (net_read_ahead_due()) */
	uint64_t rx_read;    /* bytes the backend read from fd: all it
				received, when TCP_INFO counts as many */
	uint8_t ahead_tries; /* tcpr_read_ahead() attempts traffic foiled */
	uint64_t born_ms;    /* tcpr_clock_ms() when it came */
};

struct net {
	struct vm *vm;
	struct guest *g;
	struct net_hdr *hdr;	/* in guest RAM */
	struct net_slot *slots; /* in guest RAM */
	int epfd, kick_fd, ctl_fd, listen_fd;
	struct sockaddr_storage listen_addr, connect_addr;
	uint32_t listen_len, connect_len;

	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* parked, or the pause ended */
	bool pause_req, parked, stop;
	bool rescan; /* backend only: look at every slot */
	uint32_t free_hint;
	/* The slots a step of the pause works on (freeze, release), split
	 * over its threads; one handoff at a time. */
	uint32_t pause_idx[NET_SLOTS];
	/* The sockets the release disconnected, still open until
	 * net_release_close() (-1: closed already); ngone of them. */
	int gone_fd[NET_SLOTS];
	uint32_t ngone;
	atomic_uint nconns;
	atomic_int where;     /* enum net_where */
	atomic_uint handed;   /* connections handed over (or lost) last time */
	atomic_uint reset;    /* connections a snapshot or a loss reset */
	struct net_conn conns[NET_SLOTS];
	bool has_addr;	       /* --net-address */
	struct netaddr addr;
	struct net_state *saved; /* the dumps: a source's since save_state, a
				    destination's from load_state */
	uint64_t freeze_ns;	 /* the last freeze took this long */
	uint64_t freeze_cpu_ns;	 /* and this much CPU time */
	/* A destination's sockets made ahead of the pause (--net-prepare):
	 * repair mode, bound to the listen address; taken by restores. */
	pthread_mutex_t pool_lock;
	int *pool;
	uint32_t npool;
	pthread_t pool_thread;
	bool pool_started;
	/* The gate (tcprepair.h): the listener has it, so every accepted
	 * socket does; the prepared sockets have it; it is closed from the
	 * freeze (or a destination's acquire) to the end of the thaw. */
	bool listen_gated, pool_gated, gate_closed;
	atomic_bool pool_stop; /* the takeover needs the pool now */
	/* A destination's restores staged between load_state and acquire
	 * (tcpr_restore_stage()): stage_fd[k] is connection k's socket, its
	 * sequences and clock set at stage_ms[k], or -1; k < stage_n. */
	int stage_fd[NET_SLOTS];
	uint64_t stage_ms[NET_SLOTS];
	uint32_t stage_n;
	bool stage_ep[NET_SLOTS]; /* stage_fd[k] is in the epoll set */
	atomic_bool stage_stop;
	/* The backend reads ahead (tcpr_read_ahead()) what the pause would
	 * otherwise read: for a connection that has lived 250 ms, and while
	 * a migration is under way (ahead_want) for every connection it has
	 * (ahead_scan: look at all of them again) and each new one. */
	atomic_bool ahead_want, ahead_scan;
	atomic_uint ahead_gen;	 /* migrations that wanted it */
	unsigned ahead_gen_seen; /* backend only: the last one it served */
	uint64_t ahead_next_ms;	 /* backend only: the next look for
				    connections old enough to read ahead */
	bool ahead_more;	 /* backend only: that look left some over */
	atomic_int handoff;   /* enum net_handoff, of the last handoff */
	struct net_fdp fdp;   /* a live update's sockets by fd */
	struct net_par par;   /* the handoff's helper threads */
};

int net_slot_open(struct net *n, int fd, uint32_t kind);
unsigned net_accept_queued(struct net *n);
void net_conn_drop(struct net *n, uint32_t i, bool do_close);
void net_slot_reset(struct net *n, uint32_t i, bool count);
int net_listen_open(struct net *n, char *err, size_t len);
void net_listen_close(struct net *n);
int net_kick_fd(struct net *n);
void net_state_clear(struct net_state *s);
void net_pool_start(struct net *n);
void net_pool_stop(struct net *n);
bool net_read_ahead(struct net *n, uint32_t i);
void net_read_ahead_all(struct net *n);
void net_read_ahead_due(struct net *n);
void net_release_close(struct net *n);

#endif /* FERRY_VM_NET_INT_H */
