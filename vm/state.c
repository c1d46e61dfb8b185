// SPDX-License-Identifier: MIT
/*
 * state.c - ferry-vm's vCPU and device state, described to libferry's
 * self-describing state layer (docs/state-format.md), and its console.
 *
 * Three device types, saved in this order by save_state:
 *
 *   machine   "machine"   what the guest is (workload and dirty rate, which
 *                         a destination adopts; memory and vCPUs, which
 *                         must match), its check errors, and the
 *                         verification digests
 *   vcpu      "vcpuN"     one per vCPU: the workload's registers
 *   console   "console0"  a serial console: a byte ring, its indexes, the
 *                         registers of a 16550-style UART, and the most
 *                         recent lines
 *   net       "net0"      the kv guest's network device: its connections
 *                         handed over with TCP_REPAIR (net_handoff.c); not
 *                         in the state digest (its queues are checked by
 *                         TCP itself, end to end)
 *
 * The console is a real device of the guest: vCPU 0 prints a progress line
 * into it every CON_PERIOD_NS of its own time, so its state differs from
 * one pause to the next and a migration that lost or garbled it would be
 * noticed. Only vCPU 0 writes it, only while running; save and load run
 * while every vCPU is parked, so the park handshake orders the accesses.
 *
 * Verification: when both sides verify, the machine carries a digest of the
 * state itself (the JSON text of every device, machine digests zeroed),
 * which the destination recomputes from what it loaded. The RAM is checked
 * one of two ways. By default (verify.c) the machine says
 * ram_after_release and carries no RAM digest ("enabled" stays false, so an
 * older destination, which would compare a digest, checks nothing): the
 * destination hashes its RAM after it resumed and the source compares, or,
 * restoring a snapshot file, the destination compares with the file's
 * image digest. With --verify strict "enabled" is set and ram_digest is
 * guest_digest() of the paused source, which the destination compares
 * while it is still paused. Loading goes into scratch objects and
 * is applied only when the whole section loaded and fits this VM.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <xxhash.h>

#include "net_int.h"
#include "vm.h"

#define MUST FERRY_FIELD_MUST
#define SKIP FERRY_FIELD_SKIPPABLE

#define CON_RING 4096u
#define CON_LINES 8u
#define CON_TEXT 96u
#define CON_PERIOD_NS (100ull * VM_NS_PER_MS)
#define STATE_ERR_LEN 512

/* UART registers (16550 names); the guest transmits, nothing receives. */
struct con_uart {
	uint8_t ier, iir, lcr, mcr, lsr, msr, scr;
	uint16_t divisor;
	uint64_t tx_bytes;
};

/* Where a recent line is in the ring. */
struct con_line {
	uint64_t seq;
	uint64_t time_ns; /* vCPU 0's tick when it printed the line */
	uint32_t at;	  /* ring index of its first byte */
	uint16_t len;
	uint8_t vcpu;
};

/* The console device. Plain data: the state layer visits it directly. */
struct vm_console {
	uint8_t ring[CON_RING];
	uint32_t head;	  /* where the next byte goes: written % CON_RING */
	uint32_t tail;	  /* the oldest byte kept: 0, or head once full */
	uint64_t written; /* bytes ever written */
	uint64_t printed; /* lines ever printed */
	struct con_uart uart;
	uint32_t nlines;
	struct con_line lines[CON_LINES]; /* oldest first */
	char last[CON_TEXT];		  /* the last line, without newline */
	uint64_t next_ns; /* when vCPU 0 prints next */
};

/* A vCPU's registers as a plain object (struct vcpu holds atomics). */
struct vcpu_regs {
	uint64_t cursor, sweep, prng, steps, fill_done;
	uint64_t last_tick_ns, max_gap_ns;
	uint64_t npages; /* not migrated: the limit a loaded cursor must
			    respect (0 = unchecked) */
	bool present;	 /* not migrated: the stream had this vCPU */
};

/* A destination binds this many vCPUs (ferry-vm's --vcpus limit), each
 * optional, so a stream with another count loads far enough for the
 * machine's check to name both counts. */
#define LOAD_VCPUS 64u

/* "Not in the stream": an old source ran its workload's default rate. */
#define RATE_DEFAULT UINT64_MAX

struct machine_state {
	char workload[16];
	uint64_t dirty_rate; /* bytes per second, or RATE_DEFAULT */
	uint64_t memory;
	uint32_t vcpus;
	uint64_t check_errors;
	char backing[16]; /* "anon", "memfd", "hugetlb"; "" when not said */
	bool verify; /* ram_digest is compared by the destination, in load */
	bool ram_after_release; /* the source compares RAM after release */
	uint64_t ram_digest;
	uint64_t state_digest;
	uint32_t digest_kind; /* how state_digest hashes: DIGEST_* */
};

/* The state digest over each device's JSON text (the first kind, and an
 * older source's), or over its encoded record (a fifth of the CPU time:
 * it is computed in the source's pause). */
#define DIGEST_JSON 1u
#define DIGEST_ENCODED 2u

/* ---- device descriptions ---- */

static int vcpu_visit(ferry_visitor *v, void *dev)
{
	struct vcpu_regs *r = dev;

	ferry_visit_u64(v, "cursor", &r->cursor, 0, MUST);
	ferry_visit_u64(v, "sweep", &r->sweep, 0, MUST);
	ferry_visit_u64(v, "prng", &r->prng, 0, MUST);
	ferry_visit_u64(v, "steps", &r->steps, 0, MUST);
	ferry_visit_u64(v, "fill_done", &r->fill_done, 0, MUST);
	ferry_visit_u64(v, "last_tick_ns", &r->last_tick_ns, 0, SKIP);
	ferry_visit_u64(v, "max_gap_ns", &r->max_gap_ns, 0, SKIP);
	r->present = true; /* visited: saved, or found in the stream */
	if (r->npages && (r->cursor >= r->npages || r->fill_done > r->npages))
		ferry_visit_fail(v, -ERANGE,
				 "cursor %" PRIu64 " or fill_done %" PRIu64
				 " is beyond this vCPU's %" PRIu64 " pages",
				 r->cursor, r->fill_done, r->npages);
	return ferry_visit_error(v);
}

static void machine_fields(ferry_visitor *v, struct machine_state *m,
			   bool full)
{
	ferry_visit_string(v, "workload", m->workload, sizeof(m->workload),
			   "ab", MUST);
	/* What the guest runs is guest state: the destination adopts it. */
	if (full)
		ferry_visit_u64(v, "dirty_rate", &m->dirty_rate, RATE_DEFAULT,
				SKIP);
	ferry_visit_u64(v, "memory", &m->memory, 0, MUST);
	ferry_visit_u32(v, "vcpus", &m->vcpus, 0, MUST);
	ferry_visit_u64(v, "check_errors", &m->check_errors, 0, SKIP);
	/* What guest RAM was made of: a snapshot restored from the file
	 * alone uses it again (snapshot.c); absent, the default. */
	if (full)
		ferry_visit_string(v, "backing", m->backing,
				   sizeof(m->backing), "", SKIP);
	if (ferry_visit_struct_begin(v, "verify", SKIP) == 0) {
		ferry_visit_bool(v, "enabled", &m->verify, false, SKIP);
		ferry_visit_u64(v, "ram_digest", &m->ram_digest, 0, SKIP);
		ferry_visit_u64(v, "state_digest", &m->state_digest, 0, SKIP);
		ferry_visit_bool(v, "ram_after_release", &m->ram_after_release,
				 false, SKIP);
		ferry_visit_u32(v, "digest_kind", &m->digest_kind, DIGEST_JSON,
				SKIP);
		ferry_visit_struct_end(v);
	}
}

static int machine_visit(ferry_visitor *v, void *dev)
{
	machine_fields(v, dev, true);
	return ferry_visit_error(v);
}

/* The machine as the state digest sees it: without the dirty rate and the
 * backing, which older sources did not send, so their digests still
 * compare equal. */
static int machine_digest_visit(ferry_visitor *v, void *dev)
{
	machine_fields(v, dev, false);
	return ferry_visit_error(v);
}

static void uart_visit(ferry_visitor *v, struct con_uart *u)
{
	ferry_visit_u8(v, "ier", &u->ier, 0, MUST);
	ferry_visit_u8(v, "iir", &u->iir, 0x01, MUST);
	ferry_visit_u8(v, "lcr", &u->lcr, 0x03, MUST);
	ferry_visit_u8(v, "mcr", &u->mcr, 0, MUST);
	ferry_visit_u8(v, "lsr", &u->lsr, 0x60, MUST);
	ferry_visit_u8(v, "msr", &u->msr, 0xb0, MUST);
	ferry_visit_u8(v, "scr", &u->scr, 0, SKIP);
	ferry_visit_u16(v, "divisor", &u->divisor, 1, MUST);
	ferry_visit_u64(v, "tx_bytes", &u->tx_bytes, 0, SKIP);
}

static void line_visit(ferry_visitor *v, struct con_line *l)
{
	if (ferry_visit_struct_begin(v, NULL, 0))
		return;
	ferry_visit_u64(v, "seq", &l->seq, 0, MUST);
	ferry_visit_u64(v, "time_ns", &l->time_ns, 0, MUST);
	ferry_visit_u32(v, "at", &l->at, 0, MUST);
	ferry_visit_u16(v, "len", &l->len, 0, MUST);
	ferry_visit_u8(v, "vcpu", &l->vcpu, 0, SKIP);
	ferry_visit_struct_end(v);
}

/* The ring's indexes follow from the bytes written; lines lie inside. */
static void console_check(ferry_visitor *v, const struct vm_console *c)
{
	uint32_t i;

	if (c->head != c->written % CON_RING ||
	    c->tail != (c->written >= CON_RING ? c->head : 0))
		ferry_visit_fail(v, -EINVAL,
				 "head %u and tail %u do not follow from %" PRIu64
				 " bytes written to a %u-byte ring",
				 c->head, c->tail, c->written, CON_RING);
	for (i = 0; i < c->nlines && i < CON_LINES; i++)
		if (c->lines[i].at >= CON_RING || c->lines[i].len > CON_TEXT)
			ferry_visit_fail(v, -EINVAL,
					 "line %u at %u (%u bytes) is not in the ring",
					 i, c->lines[i].at, c->lines[i].len);
}

static int console_visit(ferry_visitor *v, void *dev)
{
	struct vm_console *c = dev;
	uint32_t n = c->nlines, i;

	ferry_visit_bytes(v, "ring", c->ring, sizeof(c->ring), MUST);
	ferry_visit_u32(v, "head", &c->head, 0, MUST);
	ferry_visit_u32(v, "tail", &c->tail, 0, MUST);
	ferry_visit_u64(v, "written", &c->written, 0, MUST);
	ferry_visit_u64(v, "printed", &c->printed, 0, SKIP);
	if (ferry_visit_struct_begin(v, "uart", MUST) == 0) {
		uart_visit(v, &c->uart);
		ferry_visit_struct_end(v);
	}
	if (ferry_visit_array_begin(v, "lines", &n, CON_LINES, SKIP) == 0) {
		for (i = 0; i < n; i++)
			line_visit(v, &c->lines[i]);
		ferry_visit_array_end(v);
	}
	if (c->nlines != n) /* loading, or capturing the schema */
		c->nlines = n;
	ferry_visit_string(v, "last", c->last, sizeof(c->last), NULL, SKIP);
	ferry_visit_u64(v, "next_ns", &c->next_ns, 0, SKIP);
	console_check(v, c);
	return ferry_visit_error(v);
}

static const struct ferry_device_type machine_type = {
	.name = "machine", .version = 1,
	.size = sizeof(struct machine_state), .visit = machine_visit,
};
static const struct ferry_device_type machine_digest_type = {
	.name = "machine", .version = 1,
	.size = sizeof(struct machine_state), .visit = machine_digest_visit,
};
static const struct ferry_device_type vcpu_type = {
	.name = "vcpu", .version = 1,
	.size = sizeof(struct vcpu_regs), .visit = vcpu_visit,
};
static const struct ferry_device_type console_type = {
	.name = "console", .version = 1,
	.size = sizeof(struct vm_console), .visit = console_visit,
};

static const struct ferry_device_type *const all_types[] = {
	&machine_type, &vcpu_type, &console_type, &net_state_type, &net_fds_type,
};

/* ---- the console ---- */

static void console_putc(struct vm_console *c, uint8_t b)
{
	c->ring[c->head] = b;
	c->written++;
	c->head = (uint32_t)(c->written % CON_RING);
	c->tail = c->written >= CON_RING ? c->head : 0;
	c->uart.scr = b;
	c->uart.tx_bytes++;
	c->uart.lsr = 0x60; /* transmitter empty again: a fast line */
	c->uart.iir = c->uart.ier & 0x02 ? 0x02 : 0x01;
}

static void console_line(struct vm_console *c, const struct vcpu *cpu,
			 uint64_t now)
{
	uint64_t seq = c->printed++;
	struct con_line *l;
	char text[CON_TEXT];
	int n;

	n = snprintf(text, sizeof(text), "[%6" PRIu64 "] vcpu%u: %" PRIu64
		     " steps, sweep %" PRIu64 ", cursor %" PRIu64, seq,
		     cpu->idx, (uint64_t)atomic_load(&cpu->steps), cpu->sweep,
		     cpu->cursor);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(text))
		n = sizeof(text) - 1;
	if (c->nlines == CON_LINES) {
		memmove(c->lines, c->lines + 1,
			sizeof(c->lines[0]) * (CON_LINES - 1));
		c->nlines--;
	}
	l = &c->lines[c->nlines++];
	l->seq = seq;
	l->time_ns = now;
	l->at = c->head;
	l->len = (uint16_t)(n + 1);
	l->vcpu = (uint8_t)cpu->idx;
	memcpy(c->last, text, (size_t)n + 1);
	for (int i = 0; i < n; i++)
		console_putc(c, (uint8_t)text[i]);
	console_putc(c, '\n');
}

/* vCPU 0's tick hook: a line every CON_PERIOD_NS of guest time. A time
 * far ahead of now comes from another host's clock: print and resync. */
static void console_tick(void *opaque, const struct vcpu *cpu, uint64_t now)
{
	struct vm_console *c = opaque;

	if (now < c->next_ns && c->next_ns - now <= CON_PERIOD_NS)
		return;
	c->next_ns = now + CON_PERIOD_NS;
	console_line(c, cpu, now);
}

/**
 * vm_state_init() - create the devices and attach the console to vCPU 0.
 * @vm: the VM, its guest initialised but not started.
 *
 * Return: 0 or -ENOMEM.
 */
int vm_state_init(struct vm *vm)
{
	struct vm_console *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->uart.ier = 0x02; /* transmitter-empty interrupts */
	c->uart.iir = 0x01;
	c->uart.lcr = 0x03; /* 8N1 */
	c->uart.mcr = 0x0b; /* DTR, RTS, OUT2 */
	c->uart.lsr = 0x60;
	c->uart.msr = 0xb0;
	c->uart.divisor = 1; /* 115200 baud */
	vm->console = c;
	vm->guest.tick_hook = console_tick;
	vm->guest.tick_opaque = c;
	return 0;
}

/* ---- saving and loading ---- */

/* Why a save or load failed: on stderr (the engine carries only the code)
 * and in the migration's error message. */
static int state_fail(struct vm *vm, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int state_fail(struct vm *vm, int rc, const char *fmt, ...)
{
	char msg[STATE_ERR_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "ferry-vm: state: %s\n", msg);
	pthread_mutex_lock(&vm->mig.lock);
	snprintf(vm->mig.vmm_err, sizeof(vm->mig.vmm_err), "state: %.240s", msg);
	pthread_mutex_unlock(&vm->mig.lock);
	return rc;
}

/* Every device of a VM, as plain objects the state layer visits. */
struct devices {
	struct machine_state machine;
	struct vm_console *console;
	struct net_state *net; /* the device's, saved or to be loaded, or NULL */
	struct net_fds_state *netfds; /* its sockets by fd (live update), or NULL */
	unsigned nvcpus;
	struct vcpu_regs vcpus[];
};

static struct devices *devices_new(unsigned nvcpus)
{
	struct devices *d = calloc(1, sizeof(*d) + nvcpus * sizeof(d->vcpus[0]));

	if (d)
		d->nvcpus = nvcpus;
	return d;
}

static void devices_free(struct devices *d)
{
	if (d)
		free(d->console);
	free(d);
}

/**
 * vm_state_fini() - free the devices (after the vCPUs stopped).
 * @vm: the VM.
 */
void vm_state_fini(struct vm *vm)
{
	free(vm->console);
	vm->console = NULL;
	devices_free(vm->mig.loaded);
	vm->mig.loaded = NULL;
}

static void devices_from_vm(struct vm *vm, struct devices *d)
{
	struct guest *g = &vm->guest;

	snprintf(d->machine.workload, sizeof(d->machine.workload), "%s",
		 vm_workload_name(g->workload));
	d->machine.dirty_rate = (uint64_t)(g->dirty_rate * 1e6 + 0.5);
	d->machine.memory = g->mem_size;
	d->machine.vcpus = g->nvcpus;
	snprintf(d->machine.backing, sizeof(d->machine.backing), "%s",
		 vm_backend_name(g->backend));
	d->machine.check_errors = guest_check_errors(g);
	for (unsigned i = 0; i < g->nvcpus; i++) {
		const struct vcpu *c = &g->vcpus[i];

		d->vcpus[i] = (struct vcpu_regs){
			.cursor = c->cursor, .sweep = c->sweep, .prng = c->prng,
			.steps = atomic_load(&c->steps),
			.fill_done = c->fill_done,
			.last_tick_ns = c->last_tick_ns,
			.max_gap_ns = c->max_gap_ns,
		};
	}
	d->console = vm->console;
}

static int hash_device(XXH3_state_t *h, struct ferry_buf *scratch,
		       uint32_t kind, const struct ferry_device_type *t,
		       const char *name, void *dev, char *err, size_t errlen)
{
	char *json;
	int rc;

	/* Encoded: the records gather in @scratch, hashed at the end. */
	if (kind != DIGEST_JSON)
		return ferry_state_save(scratch, t, name, dev, err, errlen);
	rc = ferry_state_print_json(t, dev, &json, err, errlen);
	if (rc)
		return rc;
	XXH3_64bits_update(h, json, strlen(json) + 1);
	free(json);
	return 0;
}

/* The digest of the state, of @kind: every device in save order (as JSON
 * text, or encoded as a state section's records), the machine's digests
 * left out. */
static int state_digest(struct devices *d, uint32_t kind, uint64_t *out,
			char *err, size_t errlen)
{
	struct machine_state m = d->machine;
	XXH3_state_t *h = XXH3_createState();
	struct ferry_buf *scratch = kind == DIGEST_JSON ? NULL : ferry_buf_new();
	char name[32];
	int rc;

	if (!h || (kind != DIGEST_JSON && !scratch)) {
		XXH3_freeState(h);
		ferry_buf_free(scratch);
		return -ENOMEM;
	}
	XXH3_64bits_reset(h);
	m.state_digest = 0;
	m.digest_kind = 0;
	rc = hash_device(h, scratch, kind, &machine_digest_type, "machine", &m,
			 err, errlen);
	for (unsigned i = 0; !rc && i < d->nvcpus; i++) {
		snprintf(name, sizeof(name), "vcpu%u", i);
		rc = hash_device(h, scratch, kind, &vcpu_type, name,
				 &d->vcpus[i], err, errlen);
	}
	if (!rc)
		rc = hash_device(h, scratch, kind, &console_type, "console0",
				 d->console, err, errlen);
	if (!rc && kind != DIGEST_JSON) {
		size_t len;
		const void *p = ferry_buf_data(scratch, &len);

		XXH3_64bits_update(h, p, len);
	}
	*out = XXH3_64bits_digest(h);
	XXH3_freeState(h);
	ferry_buf_free(scratch);
	return rc;
}

static int save_all(struct devices *d, struct ferry_buf *out, char *err,
		    size_t errlen)
{
	char name[32];
	int rc;

	rc = ferry_state_save(out, &machine_type, "machine", &d->machine, err,
			      errlen);
	for (unsigned i = 0; !rc && i < d->nvcpus; i++) {
		snprintf(name, sizeof(name), "vcpu%u", i);
		rc = ferry_state_save(out, &vcpu_type, name, &d->vcpus[i], err,
				      errlen);
	}
	if (!rc)
		rc = ferry_state_save(out, &console_type, "console0", d->console,
				      err, errlen);
	if (!rc && d->net)
		rc = ferry_state_save(out, &net_state_type, "net0", d->net, err,
				      errlen);
	if (!rc && d->netfds)
		rc = ferry_state_save(out, &net_fds_type, "net0fds", d->netfds,
				      err, errlen);
	if (!rc)
		rc = ferry_state_end(out);
	return rc;
}

/**
 * vm_state_save() - the save_state callback: every device of the paused
 * guest into a state section, with the digests when verifying.
 * @opaque: the VM.
 * @out: the section.
 *
 * Return: 0, or the state layer's code (its message on stderr).
 */
int vm_state_save(void *opaque, struct ferry_buf *out)
{
	struct vm *vm = opaque;
	struct devices *d = devices_new(vm->guest.nvcpus);
	char err[STATE_ERR_LEN] = "";
	uint64_t t0;
	int rc = 0;

	if (!d)
		return state_fail(vm, -ENOMEM, "out of memory");
	devices_from_vm(vm, d);
	vm->mig.src_digest_ms = 0;
	if (vm->opts.verify == VM_VERIFY_STRICT) {
		t0 = vm_now_ns();
		d->machine.verify = true;
		d->machine.ram_digest = guest_digest(&vm->guest);
		vm->mig.src_digest_ms = (double)(vm_now_ns() - t0) / 1e6;
	} else if (vm->opts.verify) {
		d->machine.ram_after_release = true;
	}
	if (vm->opts.verify) {
		d->machine.digest_kind = DIGEST_ENCODED;
		rc = state_digest(d, DIGEST_ENCODED, &d->machine.state_digest,
				  err, sizeof(err));
	}
	if (!rc && vm->net && vm->guest.workload == VM_WL_KV) {
		d->net = vm->net->saved;
		/* A live update passes the sockets themselves: no dump. */
		if (vm->net->fdp.active) {
			net_fdpass_fill(vm->net, d->net);
			d->netfds = &vm->net->fdp.st;
		} else {
			rc = net_save(vm->net, d->net, err, sizeof(err));
		}
	}
	if (!rc)
		rc = save_all(d, out, err, sizeof(err));
	free(d);
	if (rc)
		return state_fail(vm, rc, "saving: %s", err[0] ? err :
				  ferry_strerror(rc));
	return 0;
}

/* Whether the machine in the stream has this VM's shape (what it runs
 * is adopted from the stream, not checked). */
static int machine_fits(struct vm *vm, const struct machine_state *m)
{
	const struct guest *g = &vm->guest;
	enum vm_workload w;

	if (vm_workload_parse(m->workload, &w))
		return state_fail(vm, -EINVAL, "machine.workload: the stream "
				  "runs '%s', a workload this ferry-vm does not "
				  "know", m->workload);
	if (m->memory != g->mem_size)
		return state_fail(vm, -EINVAL, "machine.memory: the stream has "
				  "%" PRIu64 " bytes, this VM %" PRIu64,
				  m->memory, g->mem_size);
	if (m->vcpus != g->nvcpus)
		return state_fail(vm, -EINVAL, "machine.vcpus: the guest has "
				  "%u vCPUs, this VM %u", m->vcpus, g->nvcpus);
	return 0;
}

/* The guest runs what the stream says; a --workload or --dirty-rate given
 * to this destination that says otherwise is ignored, with a note. */
static void machine_adopt(struct vm *vm, const struct machine_state *m)
{
	struct guest *g = &vm->guest;
	enum vm_workload w = g->workload;
	double rate;

	vm_workload_parse(m->workload, &w); /* checked by machine_fits() */
	rate = m->dirty_rate == RATE_DEFAULT ? guest_default_rate(w) :
					       (double)m->dirty_rate / 1e6;
	if (vm->opts.workload_given && w != vm->opts.workload)
		fprintf(stderr, "ferry-vm: note: ignoring --workload %s: the "
			"guest runs %s, as the stream says\n",
			vm_workload_name(vm->opts.workload), m->workload);
	else if (vm->opts.dirty_rate >= 0 &&
		 (rate > g->dirty_rate + 1e-6 || rate < g->dirty_rate - 1e-6))
		fprintf(stderr, "ferry-vm: note: ignoring --dirty-rate %g: the "
			"guest writes %g MB/s, as the stream says\n",
			vm->opts.dirty_rate, rate);
	guest_set_workload(g, w, rate);
}

static void devices_to_vm(struct vm *vm, const struct devices *d)
{
	struct guest *g = &vm->guest;

	machine_adopt(vm, &d->machine);

	for (unsigned i = 0; i < g->nvcpus; i++) {
		const struct vcpu_regs *r = &d->vcpus[i];
		struct vcpu *c = &g->vcpus[i];

		c->cursor = r->cursor;
		c->sweep = r->sweep;
		c->prng = r->prng;
		atomic_store(&c->steps, r->steps);
		c->fill_done = r->fill_done;
		c->last_tick_ns = r->last_tick_ns;
		c->max_gap_ns = r->max_gap_ns;
	}
	atomic_store(&g->check_errors, d->machine.check_errors);
	memcpy(vm->console, d->console, sizeof(*vm->console));
	guest_reset_derived(g);
}

/* The digest of the state as loaded against the source's. */
static void state_check(struct devices *d, struct guest_verify *v)
{
	char err[STATE_ERR_LEN] = "";
	uint64_t sd = 0;

	v->state_ok = !state_digest(d, d->machine.digest_kind, &sd, err,
				    sizeof(err)) &&
		      sd == d->machine.state_digest;
	v->state_done = true;
	if (!v->state_ok)
		fprintf(stderr, "ferry-vm: device state digest differs from the source's%s%s\n",
			err[0] ? ": " : "", err);
}

/* A copy of loaded devices that outlives the load. */
static struct devices *devices_copy(const struct devices *d)
{
	struct devices *c = devices_new(d->nvcpus);

	if (!c)
		return NULL;
	c->machine = d->machine;
	memcpy(c->vcpus, d->vcpus, d->nvcpus * sizeof(d->vcpus[0]));
	c->console = malloc(sizeof(*c->console));
	if (!c->console) {
		free(c);
		return NULL;
	}
	memcpy(c->console, d->console, sizeof(*c->console));
	return c;
}

/* RAM compared by the source after release: hash now (strict) or arm the
 * background check for the resume (verify.c). */
static void verify_ram_later(struct vm *vm, struct guest_verify *v)
{
	struct guest *g = &vm->guest;

	/* A mapped snapshot file carries the digest of its image: the
	 * restore compares with it itself. */
	v->ram_vs_image = vm_restoring_file(vm) && vm->snap.mapped;
	v->ram_at_source = !v->ram_vs_image;
	if (vm->opts.verify != VM_VERIFY_STRICT) {
		v->background = true;
		v->pending = true;
		return;
	}
	v->in_pause = true;
	v->ram_digest = guest_page_digest(g);
	v->digest_match = v->ram_vs_image &&
			  v->ram_digest == vm->snap.image_digest;
	if (v->ram_vs_image && !v->digest_match)
		fprintf(stderr, "ferry-vm: memory digest differs from the snapshot's image digest\n");
	v->invariant_ok = guest_check_invariant(g, &v->pages_checked);
	v->done = true;
}

/* The loaded image against the source's digests, then the workload
 * invariant on every page (or, by default, the state digest now and the
 * rest after the resume). */
static void verify_loaded(struct vm *vm, struct devices *d)
{
	struct guest *g = &vm->guest;
	struct guest_verify v = { 0 };
	struct devices *keep = NULL, *old;
	uint64_t t0;
	int verified = -1;

	/* A mapped snapshot carries its own image digest: compare with that,
	 * whatever the source's machine says (a strict source's in-pause
	 * digest would hash, and so fault in, all of a lazy guest's memory
	 * before it runs). */
	bool later = d->machine.ram_after_release ||
		     (vm_restoring_file(vm) && vm->snap.mapped);

	if ((d->machine.verify || later) && vm->opts.verify) {
		t0 = vm_now_ns();
		if (later)
			verify_ram_later(vm, &v);
		/* In the background even the state digest waits for the
		 * resume: 0.2-0.4 ms here, for nothing the pause needs. */
		if (v.background)
			keep = devices_copy(d);
		if (!keep)
			state_check(d, &v);
		if (!later) {
			v.in_pause = true;
			v.digest_match = guest_digest(g) == d->machine.ram_digest;
			if (!v.digest_match)
				fprintf(stderr, "ferry-vm: memory digest differs from the source's\n");
			v.invariant_ok = guest_check_invariant(g, &v.pages_checked);
			v.done = true;
		}
		v.verify_ms = (double)(vm_now_ns() - t0) / 1e6;
		v.digest_match = v.digest_match && v.state_ok;
		if (v.done)
			verified = (v.ram_at_source || v.digest_match) &&
				   v.state_ok && v.invariant_ok &&
				   guest_check_errors(g) == 0;
	}
	pthread_mutex_lock(&vm->mig.lock);
	vm->mig.check = v;
	vm->mig.verified = verified;
	vm->mig.src_ram_match = -2;
	old = vm->mig.loaded;
	vm->mig.loaded = keep;
	pthread_mutex_unlock(&vm->mig.lock);
	devices_free(old);
}

/**
 * vm_state_check_loaded() - compare the digest of the state as loaded with
 * the source's, when a background verification deferred it to after the
 * resume. Once: the kept state is freed. Called with vm->mig.lock held,
 * so whoever asks next sees the result (it takes well under a
 * millisecond).
 * @vm: the VM.
 *
 * Return: 1 equal, 0 different, -1 nothing was kept.
 */
int vm_state_check_loaded(struct vm *vm)
{
	struct guest_verify v = { 0 };
	struct devices *d = vm->mig.loaded;

	vm->mig.loaded = NULL;
	if (!d)
		return -1;
	state_check(d, &v);
	devices_free(d);
	return v.state_ok;
}

/* What this VM expects in a section, and where each instance goes. */
static struct ferry_state_binding *bindings_new(struct vm *vm,
						struct devices *d,
						char (*names)[16], size_t *n)
{
	const struct guest *g = &vm->guest;
	struct ferry_state_binding *b = calloc(LOAD_VCPUS + 4, sizeof(*b));

	if (!b)
		return NULL;
	b[0] = (struct ferry_state_binding){ &machine_type, "machine",
					     &d->machine, 0 };
	for (unsigned i = 0; i < LOAD_VCPUS; i++) {
		snprintf(names[i], sizeof(names[i]), "vcpu%u", i);
		d->vcpus[i].npages = i < g->nvcpus ? g->vcpus[i].npages : 0;
		b[i + 1] = (struct ferry_state_binding){ &vcpu_type, names[i],
							 &d->vcpus[i],
							 FERRY_BINDING_OPTIONAL };
	}
	b[LOAD_VCPUS + 1] = (struct ferry_state_binding){ &console_type,
							  "console0", d->console,
							  0 };
	*n = LOAD_VCPUS + 2;
	if (d->net)
		b[(*n)++] = (struct ferry_state_binding){ &net_state_type, "net0",
							  d->net,
							  FERRY_BINDING_OPTIONAL };
	if (d->netfds)
		b[(*n)++] = (struct ferry_state_binding){ &net_fds_type, "net0fds",
							  d->netfds,
							  FERRY_BINDING_OPTIONAL };
	return b;
}

/**
 * vm_state_load() - the load_state callback: load a section into this
 * paused guest and, when both sides verify, check the loaded image.
 * @opaque: the VM.
 * @data: the section.
 * @len: its size.
 *
 * Nothing of the VM changes unless the whole section loads and describes
 * this machine.
 *
 * Return: 0, or the state layer's code, or -EINVAL for another machine
 * (the message on stderr and in the migration's error).
 */
int vm_state_load(void *opaque, const void *data, size_t len)
{
	struct vm *vm = opaque;
	struct devices *d = devices_new(LOAD_VCPUS);
	char (*names)[16] = calloc(LOAD_VCPUS, sizeof(*names));
	struct ferry_state_binding *b = NULL;
	char err[STATE_ERR_LEN] = "";
	size_t n = 0;
	int rc = -ENOMEM;

	if (d)
		d->console = calloc(1, sizeof(*d->console));
	if (d && vm->net) {
		d->net = calloc(1, sizeof(*d->net));
		d->netfds = calloc(1, sizeof(*d->netfds));
	}
	if (d && d->console && names && (!vm->net || (d->net && d->netfds)))
		b = bindings_new(vm, d, names, &n);
	if (!b) {
		state_fail(vm, rc, "out of memory");
		goto out;
	}
	rc = ferry_state_load(data, len, b, n, err, sizeof(err));
	if (rc)
		state_fail(vm, rc, "%s", err[0] ? err : ferry_strerror(rc));
	else
		rc = machine_fits(vm, &d->machine);
	for (unsigned i = 0; !rc && i < vm->guest.nvcpus; i++)
		if (!d->vcpus[i].present)
			rc = state_fail(vm, FERRY_EMISMATCH, "device vcpu%u "
					"(type vcpu) is missing from the stream", i);
	/* Sockets passed by fd must be those the state names. */
	if (!rc && vm->net) {
		rc = net_fdpass_bind(vm->net, d->netfds, err, sizeof(err));
		if (rc)
			state_fail(vm, rc, "net0fds: %s", err);
	}
	if (!rc) {
		d->nvcpus = vm->guest.nvcpus;
		devices_to_vm(vm, d);
		if (d->net) {
			/* The dumps wait for acquire; the old ones go. */
			struct net_state *old = vm->net->saved;

			vm->net->saved = d->net;
			d->net = old;
		}
		vm_verify_loaded_page_fault(vm);
		verify_loaded(vm, d);
	}
out:
	free(b);
	free(names);
	if (d) {
		free(d->console);
		net_state_clear(d->net);
		free(d->net);
		free(d->netfds);
	}
	free(d);
	return rc;
}

/**
 * vm_state_print_schemas() - print the JSON Schema of every device type
 * on stdout, as one object keyed by type name (ferry-vm --print-schemas).
 *
 * Return: 0, or a negative code (a message on stderr).
 */
int vm_state_print_schemas(void)
{
	json_object *all = json_object_new_object(), *one;
	char err[STATE_ERR_LEN] = "", *json;
	size_t i;
	int rc = 0;

	for (i = 0; i < sizeof(all_types) / sizeof(all_types[0]); i++) {
		rc = ferry_state_schema_json(all_types[i], &json, err,
					     sizeof(err));
		if (rc)
			break;
		one = json_tokener_parse(json);
		free(json);
		if (!one) {
			rc = -EINVAL;
			snprintf(err, sizeof(err), "not JSON");
			break;
		}
		json_object_object_add(all, all_types[i]->name, one);
	}
	if (rc)
		fprintf(stderr, "ferry-vm: schema of %s: %s\n",
			all_types[i]->name, err);
	else
		printf("%s\n", json_object_to_json_string_ext(all,
			       JSON_C_TO_STRING_PLAIN |
			       JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(all);
	return rc;
}
