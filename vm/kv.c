// SPDX-License-Identifier: MIT
/*
 * kv.c - the kv workload: vCPU 0 serves the Redis protocol (RESP) on the
 * net device's rings, with its keys and values in a hash table in guest
 * RAM, and, with --connect, is itself a client of a Redis server that it
 * sends INCR at a set rate.
 *
 * Commands: PING, ECHO, SET key value, GET, INCR, DEL, EXISTS, CONFIG GET
 * (what redis-benchmark asks at start: "save" and "appendonly" answered,
 * other parameters an empty list); anything else gets -ERR. Requests are
 * RESP arrays or inline lines, pipelined: every complete request in the
 * ring is answered while the tx ring has room for the reply, the rest
 * waits for the backend to send.
 *
 * The table (struct kv_entry slots, linear probing with backward-shift
 * deletion, so no tombstones) fills guest RAM below the net region; an
 * empty entry is all zeros, so a fresh guest needs no set-up. It refuses
 * a key over KV_KEY_MAX bytes, a value over KV_VAL_MAX bytes and a new key
 * once it is 7/8 full, each with its own error reply.
 *
 * As a client, the guest counts INCRs sent and integer replies; every
 * reply must be the counter before its first INCR plus the replies so far
 * (the guest is the only writer of its key), or it counts an error.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "kv.h"
#include "net_int.h"

#define KV_KEY_MAX 128u
#define KV_VAL_MAX 1024u
#define KV_MAX_ARGS 64u
#define KV_CLIENT_KEY "ferry:counter"
#define KV_CLIENT_WINDOW 64u /* INCRs in flight at most */

struct kv_entry {
	uint32_t used;
	uint32_t klen;
	uint32_t vlen;
	uint32_t pad;
	uint8_t key[KV_KEY_MAX];
	uint8_t val[KV_VAL_MAX];
};

struct kv_arg {
	const uint8_t *p;
	uint32_t len;
};

struct kv {
	struct guest *g;
	struct net *net;
	struct net_hdr *hdr;
	struct net_slot *slots;
	struct kv_entry *table;
	uint64_t cap;
	uint64_t client_next_ns; /* not migrated: pacing restarts */
	uint8_t in[NET_RING];	 /* one slot's pending requests, unwrapped */
	uint8_t out[NET_RING];	 /* one reply */
};

/* --- guest RAM writes --------------------------------------------------- */

static void ram_begin(struct kv *k, const void *p, size_t len)
{
	guest_write_begin(k->g, (uint64_t)((const uint8_t *)p - k->g->ram), len);
}

static void ram_end(struct kv *k, const void *p, size_t len)
{
	guest_write_end(k->g, (uint64_t)((const uint8_t *)p - k->g->ram), len);
}

static void hdr_add(struct kv *k, uint64_t *field, uint64_t v)
{
	ram_begin(k, field, sizeof(*field));
	*field += v;
	ram_end(k, field, sizeof(*field));
}

/* --- the table ---------------------------------------------------------- */

static uint64_t home_of(struct kv *k, const uint8_t *key, uint32_t klen)
{
	return XXH3_64bits(key, klen) % k->cap;
}

/* The entry of @key, or NULL; *@at receives where it is or would go. */
static struct kv_entry *kv_find(struct kv *k, const struct kv_arg *key,
				uint64_t *at)
{
	uint64_t i = home_of(k, key->p, key->len);

	for (uint64_t probes = 0; probes < k->cap; probes++) {
		struct kv_entry *e = &k->table[i];

		if (!e->used) {
			*at = i;
			return NULL;
		}
		if (e->klen == key->len && !memcmp(e->key, key->p, key->len)) {
			*at = i;
			return e;
		}
		i = i + 1 == k->cap ? 0 : i + 1;
	}
	*at = UINT64_MAX;
	return NULL;
}

static void entry_put(struct kv *k, struct kv_entry *e, const struct kv_arg *key,
		      const uint8_t *val, uint32_t vlen)
{
	ram_begin(k, e, sizeof(*e));
	if (!e->used) {
		memcpy(e->key, key->p, key->len);
		e->klen = key->len;
		e->used = 1;
	}
	memcpy(e->val, val, vlen);
	e->vlen = vlen;
	ram_end(k, e, sizeof(*e));
}

/* Remove the entry at @i; later entries of its run move back so that a
 * lookup never stops early at the hole. */
static void kv_remove(struct kv *k, uint64_t i)
{
	uint64_t j = i, h;

	for (;;) {
		j = j + 1 == k->cap ? 0 : j + 1;
		if (!k->table[j].used)
			break;
		h = home_of(k, k->table[j].key, k->table[j].klen);
		/* Entry j may fill the hole at i unless its home lies
		 * cyclically in (i, j]. */
		if (i <= j ? (h > i && h <= j) : (h > i || h <= j))
			continue;
		ram_begin(k, &k->table[i], sizeof(k->table[i]));
		memcpy(&k->table[i], &k->table[j], sizeof(k->table[i]));
		ram_end(k, &k->table[i], sizeof(k->table[i]));
		i = j;
	}
	ram_begin(k, &k->table[i], sizeof(k->table[i]));
	memset(&k->table[i], 0, sizeof(k->table[i]));
	ram_end(k, &k->table[i], sizeof(k->table[i]));
	hdr_add(k, &k->hdr->kv_used, (uint64_t)-1);
}

/* --- replies ------------------------------------------------------------ */

static size_t rep_str(struct kv *k, const char *s)
{
	size_t n = strlen(s);

	memcpy(k->out, s, n);
	return n;
}

static size_t rep_int(struct kv *k, int64_t v)
{
	return (size_t)snprintf((char *)k->out, sizeof(k->out), ":%" PRId64 "\r\n", v);
}

static size_t rep_bulk(struct kv *k, const uint8_t *p, uint32_t len)
{
	int h = snprintf((char *)k->out, sizeof(k->out), "$%u\r\n", len);

	if ((size_t)h + len + 2 > sizeof(k->out))
		return rep_str(k, "-ERR reply too large\r\n");
	memcpy(k->out + h, p, len);
	memcpy(k->out + h + len, "\r\n", 2);
	return (size_t)h + len + 2;
}

static bool arg_is(const struct kv_arg *a, const char *name)
{
	size_t n = strlen(name);

	return a->len == n && !strncasecmp((const char *)a->p, name, n);
}

/* A decimal integer (Redis's range: int64). */
static bool parse_i64(const uint8_t *p, uint32_t len, int64_t *out)
{
	char buf[24], *end;
	long long v;

	if (!len || len >= sizeof(buf))
		return false;
	memcpy(buf, p, len);
	buf[len] = '\0';
	errno = 0;
	v = strtoll(buf, &end, 10);
	if (errno || *end || (buf[0] != '-' && (buf[0] < '0' || buf[0] > '9')))
		return false;
	*out = v;
	return true;
}

/* --- commands ----------------------------------------------------------- */

static size_t cmd_set(struct kv *k, struct kv_arg *a)
{
	struct kv_entry *e;
	uint64_t at;

	if (a[1].len > KV_KEY_MAX)
		return rep_str(k, "-ERR key too large (kv keeps keys up to 128 bytes)\r\n");
	if (a[2].len > KV_VAL_MAX)
		return rep_str(k, "-ERR value too large (kv keeps values up to 1024 bytes)\r\n");
	e = kv_find(k, &a[1], &at);
	if (!e) {
		if (at == UINT64_MAX || k->hdr->kv_used >= k->cap / 8 * 7)
			return rep_str(k, "-ERR kv store full\r\n");
		e = &k->table[at];
		hdr_add(k, &k->hdr->kv_used, 1);
	}
	entry_put(k, e, &a[1], a[2].p, a[2].len);
	return rep_str(k, "+OK\r\n");
}

static size_t cmd_incr(struct kv *k, struct kv_arg *a)
{
	struct kv_entry *e;
	uint64_t at;
	int64_t v = 0;
	char num[24];
	int n;

	if (a[1].len > KV_KEY_MAX)
		return rep_str(k, "-ERR key too large (kv keeps keys up to 128 bytes)\r\n");
	e = kv_find(k, &a[1], &at);
	if (e && !parse_i64(e->val, e->vlen, &v))
		return rep_str(k, "-ERR value is not an integer or out of range\r\n");
	if (v == INT64_MAX)
		return rep_str(k, "-ERR increment or decrement would overflow\r\n");
	if (!e) {
		if (at == UINT64_MAX || k->hdr->kv_used >= k->cap / 8 * 7)
			return rep_str(k, "-ERR kv store full\r\n");
		e = &k->table[at];
		hdr_add(k, &k->hdr->kv_used, 1);
	}
	n = snprintf(num, sizeof(num), "%" PRId64, ++v);
	entry_put(k, e, &a[1], (const uint8_t *)num, (uint32_t)n);
	return rep_int(k, v);
}

/* DEL or EXISTS over every key given. */
static size_t cmd_keys(struct kv *k, struct kv_arg *a, uint32_t argc, bool del)
{
	int64_t count = 0;
	uint64_t at;

	for (uint32_t i = 1; i < argc; i++) {
		if (!kv_find(k, &a[i], &at))
			continue;
		count++;
		if (del)
			kv_remove(k, at);
	}
	return rep_int(k, count);
}

static size_t cmd_config(struct kv *k, struct kv_arg *a, uint32_t argc)
{
	static const char *const params[][2] = { { "save", "" },
						 { "appendonly", "no" } };
	int h;

	if (argc != 3 || !arg_is(&a[1], "get"))
		return rep_str(k, "-ERR kv answers CONFIG GET only\r\n");
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
		if (!arg_is(&a[2], params[i][0]))
			continue;
		h = snprintf((char *)k->out, sizeof(k->out),
			     "*2\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n",
			     strlen(params[i][0]), params[i][0],
			     strlen(params[i][1]), params[i][1]);
		return (size_t)h;
	}
	return rep_str(k, "*0\r\n");
}

static size_t kv_exec(struct kv *k, struct kv_arg *a, uint32_t argc)
{
	struct kv_entry *e;
	uint64_t at;
	int h;

	if (arg_is(&a[0], "ping") && argc <= 2)
		return argc == 2 ? rep_bulk(k, a[1].p, a[1].len) :
				   rep_str(k, "+PONG\r\n");
	if (arg_is(&a[0], "echo") && argc == 2)
		return rep_bulk(k, a[1].p, a[1].len);
	if (arg_is(&a[0], "set") && argc == 3)
		return cmd_set(k, a);
	if (arg_is(&a[0], "get") && argc == 2) {
		e = kv_find(k, &a[1], &at);
		return e ? rep_bulk(k, e->val, e->vlen) : rep_str(k, "$-1\r\n");
	}
	if (arg_is(&a[0], "incr") && argc == 2)
		return cmd_incr(k, a);
	if ((arg_is(&a[0], "del") || arg_is(&a[0], "exists")) && argc >= 2)
		return cmd_keys(k, a, argc, arg_is(&a[0], "del"));
	if (arg_is(&a[0], "config"))
		return cmd_config(k, a, argc);
	h = snprintf((char *)k->out, sizeof(k->out),
		     "-ERR unknown command or wrong number of arguments for '%.*s'\r\n",
		     (int)(a[0].len > 32 ? 32 : a[0].len), (const char *)a[0].p);
	return (size_t)h;
}

/* --- parsing ------------------------------------------------------------ */

/* The line at @p (up to CRLF, or LF for inline requests): its length
 * without the terminator, or -1 when not complete. */
static long line_len(const uint8_t *p, size_t len)
{
	const uint8_t *nl = memchr(p, '\n', len);

	if (!nl)
		return -1;
	return nl > p && nl[-1] == '\r' ? nl - p - 1 : nl - p;
}

/* One RESP array request at @p: bytes used, 0 when incomplete, -1 when
 * malformed or too large. */
static long parse_array(const uint8_t *p, size_t len, struct kv_arg *a,
			uint32_t *argc)
{
	size_t pos = 0;
	int64_t n, blen;
	long l = line_len(p, len);

	if (l < 0)
		return 0;
	if (!parse_i64(p + 1, (uint32_t)l - 1, &n) || n < 1 || n > KV_MAX_ARGS)
		return -1;
	pos = (size_t)l + 2;
	for (int64_t i = 0; i < n; i++) {
		if (pos >= len)
			return 0;
		l = line_len(p + pos, len - pos);
		if (l < 0)
			return 0;
		if (p[pos] != '$' || !parse_i64(p + pos + 1, (uint32_t)l - 1, &blen) ||
		    blen < 0 || blen > NET_RING)
			return -1;
		pos += (size_t)l + 2;
		if (pos + (size_t)blen + 2 > len)
			return 0;
		a[i] = (struct kv_arg){ p + pos, (uint32_t)blen };
		pos += (size_t)blen + 2;
	}
	*argc = (uint32_t)n;
	return (long)pos;
}

/* An inline request: words separated by spaces on one line. */
static long parse_inline(const uint8_t *p, size_t len, struct kv_arg *a,
			 uint32_t *argc)
{
	long l = line_len(p, len), i = 0;
	const uint8_t *nl;

	if (l < 0)
		return 0;
	nl = memchr(p, '\n', len);
	*argc = 0;
	while (i < l) {
		while (i < l && p[i] == ' ')
			i++;
		if (i == l)
			break;
		if (*argc == KV_MAX_ARGS)
			return -1;
		a[*argc].p = p + i;
		while (i < l && p[i] != ' ')
			i++;
		a[*argc].len = (uint32_t)(p + i - a[*argc].p);
		(*argc)++;
	}
	return nl - p + 1;
}

/* --- rings -------------------------------------------------------------- */

static uint8_t *rx_ring(struct kv *k, uint32_t i)
{
	return net_ring_of(k->g->ram, k->g->mem_size, i);
}

/* Copy the rx ring's @avail bytes from @tail into k->in. */
static void ring_copy_in(struct kv *k, uint32_t i, uint32_t tail, uint32_t avail)
{
	const uint8_t *ring = rx_ring(k, i);
	uint32_t off = tail & (NET_RING - 1), first = NET_RING - off;

	if (first > avail)
		first = avail;
	memcpy(k->in, ring + off, first);
	memcpy(k->in + first, ring, avail - first);
}

/* Append @len bytes of k->out to the tx ring at @head. */
static void ring_put(struct kv *k, uint32_t i, uint32_t head, const uint8_t *src,
		     size_t len)
{
	uint8_t *ring = rx_ring(k, i) + NET_RING;
	uint32_t off = head & (NET_RING - 1), first = NET_RING - off;

	if (first > len)
		first = (uint32_t)len;
	ram_begin(k, ring, NET_RING);
	memcpy(ring + off, src, first);
	memcpy(ring, src + first, len - first);
	ram_end(k, ring, NET_RING);
}

static void slot_store(struct kv *k, uint32_t *field, uint32_t v)
{
	ram_begin(k, field, sizeof(*field));
	__atomic_store_n(field, v, __ATOMIC_RELEASE);
	ram_end(k, field, sizeof(*field));
}

/* Answer every complete request of slot @i that fits; returns how many. */
static uint64_t serve_slot(struct kv *k, uint32_t i, bool *kick)
{
	struct net_slot *s = &k->slots[i];
	uint32_t tail = s->rx_tail, head = __atomic_load_n(&s->rx_head, __ATOMIC_ACQUIRE);
	uint32_t th = s->tx_head, tt = __atomic_load_n(&s->tx_tail, __ATOMIC_ACQUIRE);
	uint32_t avail = head - tail, argc = 0;
	struct kv_arg a[KV_MAX_ARGS];
	size_t pos = 0, rl;
	uint64_t done = 0;
	long used;

	if (!avail || avail > NET_RING)
		return 0;
	ring_copy_in(k, i, tail, avail);
	while (pos < avail) {
		used = k->in[pos] == '*' ?
			       parse_array(k->in + pos, avail - pos, a, &argc) :
			       parse_inline(k->in + pos, avail - pos, a, &argc);
		if (!used && avail == NET_RING && !pos)
			used = -1; /* a request larger than the ring */
		if (!used)
			break;
		if (used < 0) {
			rl = rep_str(k, "-ERR Protocol error\r\n");
			if (NET_RING - (th - tt) >= rl) {
				ring_put(k, i, th, k->out, rl);
				th += (uint32_t)rl;
			}
			/* The indexes first: the backend frees the slot once
			 * it sees CLOSE, and the reply must be in it. */
			slot_store(k, &s->tx_head, th);
			slot_store(k, &s->rx_tail, tail + (uint32_t)avail);
			slot_store(k, &s->gflags, NET_G_CLOSE);
			*kick = true;
			return done;
		}
		rl = argc ? kv_exec(k, a, argc) : 0;
		if (NET_RING - (th - tt) < rl)
			break; /* the reply waits for the backend to send */
		if (rl)
			ring_put(k, i, th, k->out, rl);
		th += (uint32_t)rl;
		pos += (size_t)used;
		done++;
	}
	if (pos) {
		slot_store(k, &s->tx_head, th);
		slot_store(k, &s->rx_tail, tail + (uint32_t)pos);
		*kick = true;
	}
	return done;
}

/* --- the client --------------------------------------------------------- */

/* Take the integer replies of the client's slot. */
static uint64_t client_replies(struct kv *k, uint32_t i, bool *kick)
{
	struct net_slot *s = &k->slots[i];
	struct net_hdr *h = k->hdr;
	uint32_t tail = s->rx_tail, head = __atomic_load_n(&s->rx_head, __ATOMIC_ACQUIRE);
	uint32_t avail = head - tail;
	size_t pos = 0;
	uint64_t done = 0;
	int64_t v;
	long l;

	if (!avail || avail > NET_RING)
		return 0;
	ring_copy_in(k, i, tail, avail);
	while (pos < avail && (l = line_len(k->in + pos, avail - pos)) >= 0) {
		ram_begin(k, h, sizeof(*h));
		h->client_answered++;
		if (k->in[pos] == ':' && parse_i64(k->in + pos + 1, (uint32_t)l - 1, &v)) {
			if (h->client_answered == 1)
				h->client_base = (uint64_t)v - 1;
			else if ((uint64_t)v != h->client_base + h->client_answered)
				h->client_errors++;
			h->client_last = (uint64_t)v;
		} else {
			h->client_errors++;
		}
		ram_end(k, h, sizeof(*h));
		pos += (size_t)l + 2;
		done++;
	}
	if (pos) {
		slot_store(k, &s->rx_tail, tail + (uint32_t)pos);
		*kick = true;
	}
	return done;
}

/* Send the INCRs that are due; *@next_ns receives when the next one is. */
static void client_send(struct kv *k, uint32_t i, uint64_t now, uint64_t *next_ns,
			bool *kick)
{
	static const char cmd[] = "*2\r\n$4\r\nINCR\r\n$13\r\n" KV_CLIENT_KEY "\r\n";
	struct net_slot *s = &k->slots[i];
	struct net_hdr *h = k->hdr;
	uint64_t period = h->client_rate ? 1000000000ull / h->client_rate : 0;
	uint32_t th = s->tx_head, tt = __atomic_load_n(&s->tx_tail, __ATOMIC_ACQUIRE);

	static_assert(sizeof(KV_CLIENT_KEY) - 1 == 13, "the key's length is in cmd");
	if (!period)
		return;
	/* After a pause the pacing restarts: no burst of the missed ones. */
	if (!k->client_next_ns || now > k->client_next_ns + 100 * period ||
	    now + 1000000000ull < k->client_next_ns)
		k->client_next_ns = now;
	while (now >= k->client_next_ns &&
	       (!h->client_limit || h->client_sent < h->client_limit) &&
	       h->client_sent - h->client_answered < KV_CLIENT_WINDOW &&
	       NET_RING - (th - tt) >= sizeof(cmd) - 1) {
		ring_put(k, i, th, (const uint8_t *)cmd, sizeof(cmd) - 1);
		th += sizeof(cmd) - 1;
		hdr_add(k, &h->client_sent, 1);
		k->client_next_ns += period;
		*kick = true;
	}
	if (*kick)
		slot_store(k, &s->tx_head, th);
	if (!h->client_limit || h->client_sent < h->client_limit)
		*next_ns = k->client_next_ns;
}

/* --- the vCPU's period -------------------------------------------------- */

/* A slot the backend says is over (reset, or ended and read): let go. */
static bool slot_done(struct kv *k, uint32_t i)
{
	struct net_slot *s = &k->slots[i];
	uint32_t bf = __atomic_load_n(&s->bflags, __ATOMIC_ACQUIRE);

	if ((bf & NET_B_RESET) ||
	    ((bf & NET_B_EOF) && __atomic_load_n(&s->rx_head, __ATOMIC_ACQUIRE) ==
					 s->rx_tail)) {
		slot_store(k, &s->gflags, NET_G_CLOSE);
		return true;
	}
	return false;
}

/**
 * kv_serve() - one period of the kv workload on vCPU 0 (guest->serve).
 * @opaque: the kv.
 * @c: the vCPU.
 * @now: CLOCK_MONOTONIC.
 * @next_ns: receives when the client sends next, if it does.
 *
 * Return: requests answered and replies taken.
 */
uint64_t kv_serve(void *opaque, struct vcpu *c, uint64_t now, uint64_t *next_ns)
{
	struct kv *k = opaque;
	uint64_t done = 0;
	bool kick = false;

	(void)c;
	if (k->hdr->magic != NET_HDR_MAGIC)
		return 0;
	if (k->hdr->kv_cap != k->cap)
		hdr_add(k, &k->hdr->kv_cap, k->cap - k->hdr->kv_cap);
	for (uint32_t i = 0; i < NET_SLOTS; i++) {
		struct net_slot *s = &k->slots[i];

		if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != NET_SLOT_OPEN ||
		    (s->gflags & NET_G_CLOSE))
			continue;
		if (s->kind == NET_KIND_CLIENT)
			done += client_replies(k, i, &kick);
		else
			done += serve_slot(k, i, &kick);
		if (slot_done(k, i))
			kick = true;
		else if (s->kind == NET_KIND_CLIENT)
			client_send(k, i, now, next_ns, &kick);
	}
	if (kick)
		net_kick(k->net);
	return done;
}

/**
 * kv_create() - the kv workload's state over @vm's guest RAM and device.
 * @vm: the VM, its RAM mapped and its device created.
 *
 * Return: the kv, or NULL (out of memory).
 */
struct kv *kv_create(struct vm *vm)
{
	struct kv *k = calloc(1, sizeof(*k));

	if (!k)
		return NULL;
	k->g = &vm->guest;
	k->net = vm->net;
	k->hdr = net_hdr_of(k->g->ram, k->g->mem_size);
	k->slots = net_slots_of(k->g->ram, k->g->mem_size);
	k->table = (struct kv_entry *)(void *)k->g->ram;
	k->cap = (k->g->mem_size - net_region_size()) / sizeof(struct kv_entry);
	return k;
}

/**
 * kv_destroy() - free the kv (the vCPUs stopped).
 * @k: the kv (NULL is harmless).
 */
void kv_destroy(struct kv *k)
{
	free(k);
}
