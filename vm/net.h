/* SPDX-License-Identifier: MIT */
/*
 * net.h - ferry-vm's network device, in the spirit of passt: the guest's
 * TCP endpoints are host sockets owned by the device, and the guest
 * exchanges byte streams with the device through rings in guest RAM.
 *
 * The device's part of guest RAM (the "net region", at its end) holds a
 * header page, one control block per connection slot and, per slot, a
 * receive ring (host to guest) and a transmit ring (guest to host). Every
 * index lives there too, so the bytes inside the guest and the rings'
 * positions migrate as memory. Each field of a control block has one
 * writer: the backend (a host thread) or the guest (the kv workload on
 * vCPU 0). Indices run freely and wrap at 2^32; a ring holds
 * head - tail bytes.
 *
 * The backend thread moves bytes between sockets and rings (epoll), the
 * guest tells it about new transmit bytes or freed receive space through
 * an eventfd, and it wakes the guest through the guest's doorbell.
 */
#ifndef FERRY_VM_NET_H
#define FERRY_VM_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NET_SLOTS 1040u	     /* connections at once: 1,000 clients and room */
#define NET_RING 8192u	     /* bytes per direction per slot, a power of 2 */
#define NET_HDR_MAGIC 0x3054454eu /* "NET0" */
#define NET_NO_SLOT 0xffffffffu

/* Slot states (backend-written). */
enum net_slot_state {
	NET_SLOT_FREE = 0,
	NET_SLOT_OPEN = 1,
};

/* What a slot's connection is (backend-written). */
enum net_slot_kind {
	NET_KIND_SERVER = 0, /* accepted on the --listen socket */
	NET_KIND_CLIENT = 1, /* the --connect connection */
};

/* bflags: the backend tells the guest. */
#define NET_B_EOF 0x1u	 /* the peer closed its side; no more rx bytes */
#define NET_B_RESET 0x2u /* the connection is gone (reset, or not carried) */
/* gflags: the guest tells the backend. */
#define NET_G_CLOSE 0x1u /* close once the tx ring is sent; the guest no
			    longer looks at this slot */

/* One slot's control block in guest RAM (64 bytes). */
struct net_slot {
	uint32_t state;	  /* backend */
	uint32_t kind;	  /* backend */
	uint32_t bflags;  /* backend */
	uint32_t gflags;  /* guest */
	uint32_t rx_head; /* backend: bytes put into the rx ring */
	uint32_t rx_tail; /* guest: bytes taken out of it */
	uint32_t tx_head; /* guest: bytes put into the tx ring */
	uint32_t tx_tail; /* backend: bytes sent from it */
	uint64_t serial;  /* backend: the connection's number, from 1 */
	uint8_t pad[24];
};

/* The header page of the net region in guest RAM. The client's fields
 * (the guest as a client of a Redis server) are the guest's, except the
 * configuration, which the backend writes before the guest runs. */
struct net_hdr {
	uint32_t magic;
	uint32_t nslots;
	uint32_t ring;
	uint32_t client_slot;	/* backend: the client's slot or NET_NO_SLOT */
	uint64_t client_rate;	/* INCRs per second (configuration) */
	uint64_t client_limit;	/* stop after this many (0 = never) */
	uint64_t client_sent;	/* guest: INCRs sent */
	uint64_t client_answered; /* guest: integer replies received */
	uint64_t client_errors;	/* guest: replies that were not the count */
	uint64_t client_base;	/* guest: the counter before our first INCR */
	uint64_t client_last;	/* guest: the last value the server said */
	uint64_t kv_used;	/* guest: keys in the kv store */
	uint64_t kv_cap;	/* guest: entries of the kv table */
	uint64_t accepted;	/* backend: connections ever opened */
	uint64_t resets;	/* backend: connections the guest saw reset */
};

struct net;
struct guest;
struct vm;

/* Bytes of guest RAM the device takes (at the end of RAM). */
uint64_t net_region_size(void);

int net_parse_tcp(const char *spec, void *ss, uint32_t *sslen, char *err,
		  size_t len);
int net_create(struct vm *vm, struct net **out, char *err, size_t len);
int net_start(struct net *n, bool connect, char *err, size_t len);
void net_destroy(struct net *n);
void net_pause(struct net *n);
void net_resume(struct net *n);
void net_kick(struct net *n);
void net_counts(struct net *n, unsigned *conns, unsigned *listeners);
struct json_object *net_json(struct vm *vm);

/* net_handoff.c */
struct net_state;
int net_handoff_check(struct net *n, const char *uri, bool local, char *err,
		      size_t len);
int net_freeze(struct net *n, char *err, size_t len);
int net_save(struct net *n, struct net_state *s, char *err, size_t len);
void net_release(struct net *n);
int net_acquire(struct net *n);
void net_resume_frozen(struct net *n);
void net_outcome(struct net *n, int rc);
int net_address_add(struct net *n, char *err, size_t len);
void net_stage_start(struct net *n);
void net_stage_stop(struct net *n);
void net_stage_expect(struct net *n);

static inline struct net_hdr *net_hdr_of(uint8_t *ram, uint64_t mem_size)
{
	return (struct net_hdr *)(void *)(ram + mem_size - net_region_size());
}

static inline struct net_slot *net_slots_of(uint8_t *ram, uint64_t mem_size)
{
	return (struct net_slot *)(void *)((uint8_t *)net_hdr_of(ram, mem_size) +
					   4096);
}

/* Slot @i's rx ring; its tx ring follows it. */
static inline uint8_t *net_ring_of(uint8_t *ram, uint64_t mem_size, uint32_t i)
{
	return (uint8_t *)net_hdr_of(ram, mem_size) + 4096 +
	       (((uint64_t)NET_SLOTS * sizeof(struct net_slot) + 4095) & ~4095ull) +
	       (uint64_t)i * 2 * NET_RING;
}

#endif /* FERRY_VM_NET_H */
