/* SPDX-License-Identifier: MIT */
/*
 * tcprepair.h - freeze, dump, restore and thaw established TCP sockets with
 * the kernel's TCP_REPAIR mode, so a device can hand its live connections
 * to another process (same or another network namespace) without the peer
 * seeing anything but a stall.
 *
 * Life of a connection across a migration:
 *   source:      (tcpr_ident() and tcpr_read_ahead() while it runs)
 *                tcpr_freeze() -> tcpr_dump_quick() or tcpr_dump()
 *                              -> (failure: tcpr_thaw())
 *                              -> (release: tcpr_discard(), or
 *                                  tcpr_unhash_frozen() and, after the
 *                                  pause, tcpr_close_frozen())
 *   destination: (tcpr_prepare() while it waits)
 *                tcpr_restore_stage() (while the source releases)
 *                -> tcpr_restore_finish() -> tcpr_thaw_restored()
 *                (or tcpr_restore() -> tcpr_thaw() in one go)
 *
 * Needs CAP_NET_ADMIN in the socket's network namespace (tcpr_available()
 * says whether it is there). Listening sockets are not frozen: the device
 * records their address and re-creates them.
 *
 * A frozen socket sends nothing (repair mode) and takes nothing in (a
 * socket filter drops what arrives, so no byte is acknowledged after the
 * dump; the peer retransmits it after the thaw, to whichever socket then
 * holds the connection). tcpr_restore() returns a non-blocking socket and
 * keeps the never-sent tail of the send queue aside, keyed by the fd:
 * tcpr_thaw() queues it, tcpr_discard() drops it, so call one of the two
 * on every restored fd (not plain close()). A thawed socket has
 * SO_REUSEADDR on (leaving repair mode clears it, which would keep the
 * port's listener and the next restored connection from binding). The
 * functions are thread-safe for different fds.
 */
#ifndef FY_VM_TCPREPAIR_H
#define FY_VM_TCPREPAIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "ferry.h"

/* Newer than some distributions' headers (Debian 12's among them). */
#ifndef TCP_REPAIR_WINDOW
#define TCP_REPAIR_WINDOW 29
#endif
#ifndef SIOCOUTQNSD
#define SIOCOUTQNSD 0x894B
#endif
#ifndef SO_PEEK_OFF
#define SO_PEEK_OFF 42
#endif

/*
 * What a device can learn of a connection ahead of the pause, so that the
 * pause reads as little as possible (tcpr_dump_quick()). Host-local: it
 * describes this host's socket and is never part of the state.
 *
 * The kernel counts the bytes a connection ever had acknowledged and ever
 * received (TCP_INFO's tcpi_bytes_acked, tcpi_bytes_received) and moves
 * snd_una and rcv_nxt by exactly as much, so snd_una - bytes_acked and
 * rcv_nxt - bytes_received stay what they were when the connection was
 * established (modulo 2^32). Read once, they turn one TCP_INFO in the
 * pause into both sequence numbers of a connection with empty queues.
 */
struct tcpr_ahead {
	bool seq_ok;            /* snd_base and rcv_base hold */
	uint32_t snd_base;      /* snd_una - tcpi_bytes_acked */
	uint32_t rcv_base;      /* rcv_nxt - tcpi_bytes_received */
	uint32_t mss;           /* the MSS clamp (never changes); 0: unknown */
	bool ts_ok;             /* ts_ref and ts_ms hold (a millisecond clock) */
	uint32_t ts_ref;        /* TCP_TIMESTAMP no earlier than ts_ms */
	uint64_t ts_ms;         /* CLOCK_MONOTONIC in ms (the kernel's TCP clock) */
};

struct tcpr_conn {              /* one established TCP socket, frozen */
	int family;                 /* AF_INET or AF_INET6 */
	uint8_t laddr[16], raddr[16];   /* network byte order; v4 in the first 4 */
	uint16_t lport, rport;      /* host byte order */
	uint32_t snd_seq, rcv_seq;  /* TCP_QUEUE_SEQ of each queue */
	uint8_t *sndq; uint32_t sndq_len;   /* whole send queue (unacked + unsent), malloc'd */
	uint32_t sndq_unsent;       /* of which not yet sent (SIOCOUTQNSD) */
	uint8_t *rcvq; uint32_t rcvq_len;   /* unread receive queue, malloc'd */
	uint32_t mss, snd_wscale, rcv_wscale;
	bool sack, tstamp, wscale_ok;
	uint32_t ts_val;            /* TCP_TIMESTAMP at dump */
	struct { uint32_t snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup; } win;
	bool nodelay;               /* and any other socket option worth keeping */
	uint32_t sndbuf, rcvbuf;    /* SO_SNDBUF/SO_RCVBUF at dump (informative: a
				       restore grows its buffers only to fit the queues) */
	struct tcpr_ahead ahead;    /* this host's read-ahead (not in the state) */
};

/* All return 0 or -errno and write a one-line reason into err. */
int  tcpr_available(char *err, size_t len);      /* CAP_NET_ADMIN + kernel support probe */
int  tcpr_freeze(int fd, char *err, size_t len); /* TCP_REPAIR on (no packets sent while on) */
int  tcpr_thaw(int fd, char *err, size_t len);   /* TCP_REPAIR off: back to normal, peer saw a stall only */
int  tcpr_dump(int fd, struct tcpr_conn *c, char *err, size_t len);   /* fd frozen */
int  tcpr_ident(int fd, struct tcpr_conn *c, char *err, size_t len);  /* what never changes:
				   addresses, ports, options; read ahead of the pause */
int  tcpr_dump_live(int fd, struct tcpr_conn *c, char *err, size_t len);
				/* fd frozen, c holds tcpr_ident()'s fields: the rest of tcpr_dump() */
int  tcpr_read_ahead(int fd, struct tcpr_conn *c, char *err, size_t len);
				/* fd established, not frozen, nothing in flight, and
				   nobody writes to it meanwhile: fills c->ahead (repair
				   mode for a moment); -EAGAIN when traffic got in the way */
int  tcpr_dump_quick(int fd, struct tcpr_conn *c, uint64_t rx_read, bool *quick,
		     char *err, size_t len);
				/* tcpr_dump_live(), but a connection with empty queues
				   costs two calls (TCP_INFO, TCP_REPAIR_WINDOW) when
				   c->ahead holds; rx_read: the bytes its owner ever read
				   from fd. *quick says which way it went */
void tcpr_ahead_restored(const struct tcpr_conn *c, uint64_t before_ms,
			 struct tcpr_ahead *a);
				/* the read-ahead of a socket restored from c: nothing to
				   read (before_ms: CLOCK_MONOTONIC ms before the restore) */
uint64_t tcpr_clock_ms(void);   /* the clock of before_ms and ts_ms */
int  tcpr_restore(const struct tcpr_conn *c, int *fd, char *err, size_t len);
				/* new socket, repair mode, bound+connected, queues and options
				   restored; still FROZEN: call tcpr_thaw() to let it run */
int  tcpr_prepare(int family, const struct sockaddr *local, socklen_t llen, int *fd,
		  char *err, size_t len);
				/* ahead of the pause: socket, repair mode, filter, bound to
				   local (IP_FREEBIND); for tcpr_restore_prepared() */
int  tcpr_restore_prepared(int s, const struct tcpr_conn *c, int *fd, char *err, size_t len);
				/* tcpr_restore() onto a prepared socket bound to c's local
				   address; s is used up either way */
int  tcpr_restore_stage(int s, const struct tcpr_conn *c, char *err, size_t len);
int  tcpr_restore_finish(int s, const struct tcpr_conn *c, int *fd, char *err,
			 size_t len);
				/* tcpr_restore_prepared() in two: what needs neither the
				   4-tuple nor the peer (buffers, sequences, timestamp),
				   then the rest (connect, options, queues, window) */
int  tcpr_drop_filter(void); /* the shared eBPF "drop" program (loaded once), or -1 */
/* The gate: one eBPF filter for all of the process's sockets, which drops
 * everything while closed (tcpr_gate_set(true)) and nothing while open (the
 * start). A socket that has it (attached, or inherited from a listener that
 * has it) is frozen by tcpr_freeze_gated() with the gate closed and thawed
 * by tcpr_thaw_gated(), one system call less each than tcpr_freeze() and
 * tcpr_thaw(), which attach and detach a filter of the socket's own. */
int  tcpr_gate_attach(int fd);  /* 0, -EOPNOTSUPP (no eBPF here) or -errno */
int  tcpr_gate_set(bool closed);
/* This process's gate (its eBPF map and program), to pass to a process
 * that takes its sockets over: 0, or -ENOENT when none was made. */
int  tcpr_gate_fds(int *map, int *prog);
/* Make a passed gate this process's (it owns @map and @prog from then
 * on): tcpr_gate_set() then shuts and opens the sockets whose filter is
 * the passed program. Returns 0. */
int  tcpr_gate_adopt(int map, int prog);
int  tcpr_freeze_gated(int fd, char *err, size_t len); /* TCP_REPAIR on only */
int  tcpr_thaw_gated(int fd, char *err, size_t len);   /* tcpr_thaw() but the filter stays */
int  tcpr_thaw_restored(int fd, const struct tcpr_conn *c, bool gated, char *err,
			size_t len);
				/* tcpr_thaw() or tcpr_thaw_gated() of a socket restored
				   from c: without the window probe when c had nothing in
				   flight, nothing owed an ACK and an open window */
int  tcpr_prepare_gated(int family, const struct sockaddr *local, socklen_t llen,
			bool gated, int *fd, char *err, size_t len);
				/* tcpr_prepare() with the gate instead of a filter of its own */
void tcpr_discard(int fd);      /* close a frozen socket: no FIN, no RST ever */
void tcpr_close_frozen(int fd); /* the same for a socket known to be frozen (one syscall) */
int  tcpr_unhash_frozen(int fd); /* a frozen socket's 4-tuple freed, silently; the
				   socket stays open (tcpr_close_frozen() it later) */
void tcpr_conn_clear(struct tcpr_conn *c);       /* frees the queues */
void tcpr_visit(ferry_visitor *v, struct tcpr_conn *c); /* its fields for the state layer,
				   schema'd (queues as variable byte fields of any size) */

#endif /* FY_VM_TCPREPAIR_H */
