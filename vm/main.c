// SPDX-License-Identifier: MIT
/*
 * main.c - ferry-vm's command line and the migration threads that drive
 * libferry (send on a source, a receive loop on a destination). The vCPU
 * and device state, and its verification, are state.c's.
 */
#include <errno.h>
#include <sched.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "kv.h"
#include "migrate_args.h"
#include "net.h"
#include "net_fdpass.h"
#include "vm.h"

#define MAX_VCPUS VM_MAX_VCPUS
#define MAX_MEMORY VM_MAX_MEMORY
#define LAZY_PAUSE_MS 200 /* a lazy restore's pause waits this long */

/* --- command line ------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ferry-vm [options]\n"
		"\n"
		"The reference VMM of ferry: vCPU threads run a memory workload over\n"
		"guest RAM so live migration can be shown and verified.\n"
		"\n"
		"  --memory SIZE        guest RAM, K/M/G suffixes, a multiple of 4K,\n"
		"                       at least 1M (default 256M)\n"
		"  --memory-backend B   anon | memfd | hugetlb (default anon)\n"
		"                         anon: private memory with transparent huge\n"
		"                         pages; fastest, needs no host setup\n"
		"                         memfd: shared memfd (4 KiB pages unless\n"
		"                         shmem THP is enabled); shared memory\n"
		"                         hugetlb: shared 2 MiB hugetlb memfd; grows\n"
		"                         the pool (root) if it is too small\n"
		"                       Local migration by passing the RAM's fd\n"
		"                       ('ferry migrate --local') needs a shared one:\n"
		"                       memfd or hugetlb\n"
		"  --vcpus N            vCPU threads, 1-%u (default 2)\n"
		"  --workload W         ab | random | fill | text | idle | kv (default ab)\n"
		"                         ab: sweep pages incrementing a counter\n"
		"                         random: rewrite random self-checking pages\n"
		"                           (every page holds one from the start)\n"
		"                         fill: fill RAM once with random data, then idle\n"
		"                         text: fill RAM once with text-like words\n"
		"                         (compressible), then idle\n"
		"                         idle: no writes\n"
		"                         kv: vCPU 0 serves the Redis protocol (PING,\n"
		"                           ECHO, SET, GET, INCR, DEL, EXISTS, CONFIG\n"
		"                           GET) on --listen, its keys in guest RAM;\n"
		"                           needs --memory 32M or more (the network\n"
		"                           device takes the last %llu MiB)\n"
		"  --listen tcp:ADDR:PORT  kv: the guest's service socket\n"
		"  --connect tcp:HOST:PORT kv: the guest keeps one connection to a Redis\n"
		"                       server and sends INCR ferry:counter on it\n"
		"  --connect-rate N     INCRs per second (default 100)\n"
		"  --connect-count N    stop after N INCRs (default 0: never)\n"
		"  --net-address A/P --net-dev IFACE\n"
		"                       the guest's address: added to IFACE at start\n"
		"                       and when the guest arrives, removed when it\n"
		"                       leaves (root)\n"
		"  --net-prepare N      with --incoming and --listen on an address (not a\n"
		"                       wildcard): make N sockets for the connections\n"
		"                       that may come (repair mode, bound to the\n"
		"                       address) in the background when the VM starts,\n"
		"                       so the takeover does less in the pause (default\n"
		"                       and most: %u, one per slot; each costs about\n"
		"                       12 us of CPU and holds an fd until the\n"
		"                       takeover; 0: none; none with --local, whose\n"
		"                       connections come as the source's sockets)\n"
		"  --dirty-rate MB/s    pages written per second, whole guest (default\n"
		"                       50 for ab, 100 for random, fill and text\n"
		"                       unpaced; 0 = unpaced)\n"
		"  --api-socket PATH    listen for JSON commands on a UNIX socket\n"
		"                       (see docs/api-socket.md)\n"
		"  --incoming URI       be a destination: vCPUs start paused and the VM\n"
		"                       waits for a migration on URI (tcp:HOST:PORT,\n"
		"                       where port 0 lets the kernel choose one and\n"
		"                       'ferry status' shows it; unix:PATH; fd:N, a\n"
		"                       socket inherited from whoever started ferry-vm);\n"
		"                       the guest runs the workload and dirty rate the\n"
		"                       source ran (--workload is ignored, with a note);\n"
		"                       --memory and --vcpus must match the source's.\n"
		"                       A source that switches to postcopy resumes the\n"
		"                       guest here before all of its memory came: the\n"
		"                       rest follows on demand (userfaultfd); after a\n"
		"                       cut, 'ferry recover' makes it listen again.\n"
		"                       Or restore the snapshot file:PATH that 'ferry\n"
		"                       snapshot' or 'ferry migrate SOCKET file:PATH'\n"
		"                       wrote: it needs no other option, memory size,\n"
		"                       vCPUs, workload, dirty rate and backing come from\n"
		"                       the file (an option that contradicts it is\n"
		"                       refused, except --memory-backend, which picks\n"
		"                       another backing); the memory is checked against\n"
		"                       the file's image digest. A stream-format file of\n"
		"                       an older ferry needs the options as before\n"
		"  --lazy               with --incoming file:PATH: run the guest as soon\n"
		"                       as its state is loaded and load memory on demand\n"
		"                       (userfaultfd): a page the guest touches is read\n"
		"                       from the file then, a background reader fills the\n"
		"                       rest; 'ferry status' shows pages placed and how\n"
		"                       long the guest waited for them. A damaged page\n"
		"                       stops the guest for good with an error naming it\n"
		"  --local              with --incoming unix:PATH: the guest's memory\n"
		"                       comes by fd from a source on this host ('ferry\n"
		"                       migrate --local'), so this side's own RAM is\n"
		"                       neither populated nor reserved (a hugetlb\n"
		"                       guest needs no second set of huge pages); a\n"
		"                       copying migration still works, populating as\n"
		"                       it writes. Needs --memory-backend memfd or\n"
		"                       hugetlb, as the source's\n"
		"  --downtime-ms N      downtime limit for migrations (default 300)\n"
		"  --stall-timeout-ms N the stall limit of every migration, in and out\n"
		"                       (500 to 3600000, default 10000): a peer that\n"
		"                       sends or takes nothing that long (frozen, or\n"
		"                       the link black-holed) fails the migration; a\n"
		"                       source then resumes its guest, an incoming\n"
		"                       attempt is given up and this VM listens again.\n"
		"                       'ferry migrate --stall-timeout-ms' overrides it\n"
		"                       for one migration\n"
		"  --lane-cpu CPU       auto | none | N (default auto): the CPU that\n"
		"                       postcopy's page requests are served on, in and\n"
		"                       out (the threads a waiting vCPU depends on);\n"
		"                       auto takes the last CPU ferry-vm may run on,\n"
		"                       so a source and a destination on one host\n"
		"                       meet on it\n"
		"  --lane-poll-us US    0 to 10000 (default 0): how long the lane's\n"
		"                       CPU is kept from halting after each event of\n"
		"                       a postcopy page request (an idle-class thread\n"
		"                       spins there: it takes only CPU time that no\n"
		"                       other thread wants); 0: never\n"
		"  --verify MODE        background | strict | off (default background):\n"
		"                       how a migrated guest is checked (memory digests\n"
		"                       on both sides, the workload invariant on every\n"
		"                       page, the device state)\n"
		"                         background: after the pause; the destination\n"
		"                           hashes each page before the guest's first\n"
		"                           write to it, the source after release\n"
		"                         strict: inside the pause (part of the downtime)\n"
		"  --no-verify          the same as --verify off\n"
		"  --proto-version-min N, --proto-version-max N\n"
		"                       speak only these protocol versions (1 or 2)\n"
		"  --disable-cap NAME   do not offer a capability: data-checksum,\n"
		"                       multi-channel, zero-pages, lz4, zstd, postcopy\n"
		"                       (offered where userfaultfd's missing mode\n"
		"                       works and the library runs postcopy),\n"
		"                       local-fds (offered on unix: listeners),\n"
		"                       keepalive (this VM sends keep-alive records\n"
		"                       while busy; without it a busy peer is\n"
		"                       allowed 60 s of silence), device-fds (the\n"
		"                       net device's sockets by fd on a --local\n"
		"                       migration), postcopy-keepalive (keep-alives\n"
		"                       go on through postcopy; without it a source\n"
		"                       in postcopy waits on TCP alone) (repeatable)\n"
		"  --tls-creds DIR      TLS with x509 on every migration connection, in\n"
		"                       and out: DIR holds QEMU's tls-creds-x509 files,\n"
		"                       ca-cert.pem, server-cert.pem and server-key.pem\n"
		"                       (presented when receiving), client-cert.pem and\n"
		"                       client-key.pem (when sending), optional\n"
		"                       ca-crl.pem. Both sides must present a\n"
		"                       certificate of the CA ('ferry tls-certs DIR'\n"
		"                       makes a throwaway set)\n"
		"  --tls-psk FILE       TLS with a pre-shared key instead: lines of\n"
		"                       identity:hexkey (QEMU's tls-creds-psk); a source\n"
		"                       uses the first line\n"
		"  --tls-peer NAME      accept only a peer whose certificate names NAME\n"
		"                       (SAN or CN; repeatable; default: any certificate\n"
		"                       of the CA)\n"
		"  --tls-priority STR   GnuTLS priority string (ciphers), e.g.\n"
		"                       NORMAL:-CIPHER-ALL:+CHACHA20-POLY1305\n"
		"  --tls-engine E       what seals and opens TLS 1.3 records: auto\n"
		"                       (default: Intel's ipsec-mb where ferry was\n"
		"                       built with it and the CPU has AES-NI, the\n"
		"                       faster; else GnuTLS), gnutls (GnuTLS's AEAD\n"
		"                       always, e.g. where only GnuTLS's crypto is\n"
		"                       allowed, or to compare), ipsec-mb (ipsec-mb\n"
		"                       or the connection fails, saying why) or ktls\n"
		"                       (the kernel's TLS, opt-in and untested on\n"
		"                       this project's machines, or the connection\n"
		"                       fails, saying why). GnuTLS does the handshake\n"
		"                       either way; the report's tls_engine names who\n"
		"                       sealed the records\n"
		"  --self-test          pause/save/load/verify in-process, then exit\n"
		"  --print-schemas      print the device-state schemas as JSON Schema\n"
		"                       (one object keyed by device type), then exit\n"
		"  --help               this text\n"
		"\n"
		"Environment: FERRY_VM_LOG=0..3 prints engine log messages up to that\n"
		"level on stderr. FERRY_VM_API_IDLE_TIMEOUT=S drops an API client\n"
		"quiet for S seconds (default 60, 0 = never). FERRY_VM_FAULT=lose-writes\n"
		"(tests only) makes the dirty bitmap report nothing, so verification\n"
		"must fail; FERRY_VM_FAULT=corrupt-page (tests only) flips a byte of a\n"
		"page a destination just loaded, which verification must catch;\n"
		"FERRY_VM_FAULT=stall-load:MS (tests only) makes a destination's\n"
		"state load take MS longer; FERRY_VM_FAULT=stall-pause:MS (tests\n"
		"only) keeps a source paused MS longer before its state is saved;\n"
		"FERRY_VM_FAULT=acquire-fail or acquire-die (tests only): a destination's\n"
		"acquire fails, or the process exits there (after the source released\n"
		"the guest's connections); FERRY_VM_FAULT=hold-accept (tests only):\n"
		"the kv guest's device accepts no connection, which waits in the\n"
		"listener's queue until a pause takes it. FERRY_VM_FAULT=at:MOMENT:ACTION (tests\n"
		"only, vm/fault.c) kills (kill), freezes (stop) or cuts the migration's\n"
		"TCP connections (cut) at negotiation, pass1, passN, stopped, state,\n"
		"before-ready, after-ready, after-released, postcopy, handoff,\n"
		"pushing, repushing (postcopy's phase under way, before and after\n"
		"a recovery) or running.\n"
		"Items combine, comma-separated (MS: 1 to 600000); a bad item, or one\n"
		"given twice, makes ferry-vm exit with status 2, naming it.\n",
		MAX_VCPUS, (unsigned long long)(net_region_size() >> 20) + 1,
		NET_SLOTS);
}

static int bad_arg(const char *fmt, const char *what)
{
	fprintf(stderr, "ferry-vm: ");
	fprintf(stderr, fmt, what);
	fprintf(stderr, "\nTry 'ferry-vm --help'.\n");
	return 2;
}

/* "256M", "1G", "65536", "512KiB". */
static int parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0, mult = 1;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	switch (*p) {
	case 'k': case 'K': mult = 1ull << 10; p++; break;
	case 'm': case 'M': mult = 1ull << 20; p++; break;
	case 'g': case 'G': mult = 1ull << 30; p++; break;
	case 't': case 'T': mult = 1ull << 40; p++; break;
	default: break;
	}
	if (mult > 1 && (!strcmp(p, "iB") || !strcmp(p, "B")))
		p += strlen(p);
	if (*p)
		return -EINVAL;
	if (v > UINT64_MAX / mult)
		return -ERANGE;
	*out = v * mult;
	return 0;
}

static int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_opt(struct vm_opts *o, int opt, const char *arg)
{
	uint64_t v;
	char *end;

	switch (opt) {
	case 'm':
		if (parse_size(arg, &o->mem_size) || o->mem_size < (1u << 20) ||
		    o->mem_size % VM_PAGE_SIZE || o->mem_size > MAX_MEMORY)
			return bad_arg("--memory '%s': need a size like 256M, a multiple of 4K, 1M to 1T", arg);
		o->memory_given = true;
		o->memory_arg = arg;
		return 0;
	case 'b':
		if (vm_backend_parse(arg, &o->backend))
			return bad_arg("--memory-backend '%s': need anon, memfd or hugetlb", arg);
		o->backend_given = true;
		return 0;
	case 'c':
		if (parse_uint(arg, 1, MAX_VCPUS, &v))
			return bad_arg("--vcpus '%s': need an integer from 1 to 64", arg);
		o->nvcpus = (unsigned)v;
		o->vcpus_given = true;
		return 0;
	case 'w':
		if (vm_workload_parse(arg, &o->workload))
			return bad_arg("--workload '%s': need ab, random, fill, text, idle or kv", arg);
		o->workload_given = true;
		return 0;
	case 'r':
		errno = 0;
		o->dirty_rate = strtod(arg, &end);
		if (errno || end == arg || *end || !isfinite(o->dirty_rate) ||
		    o->dirty_rate < 0 || o->dirty_rate > 1e6)
			return bad_arg("--dirty-rate '%s': need MB/s from 0 to 1000000", arg);
		return 0;
	case 'd': {
		const struct vm_arg_range *r = &vm_arg_ranges[VM_ARG_DOWNTIME];
		char range[96];

		if (parse_uint(arg, (uint64_t)r->min, (uint64_t)r->max, &v)) {
			fprintf(stderr, "ferry-vm: --downtime-ms must be %s, not '%s'\nTry 'ferry-vm --help'.\n",
				vm_arg_range_text(VM_ARG_DOWNTIME, range, sizeof(range)), arg);
			return 2;
		}
		o->downtime_ms = (uint32_t)v;
		return 0;
	}
	case 0x110: {
		const struct vm_arg_range *r = &vm_arg_ranges[VM_ARG_STALL_TIMEOUT];
		char range[96];

		if (parse_uint(arg, (uint64_t)r->min, (uint64_t)r->max, &v)) {
			fprintf(stderr, "ferry-vm: --stall-timeout-ms must be %s, not '%s'\nTry 'ferry-vm --help'.\n",
				vm_arg_range_text(VM_ARG_STALL_TIMEOUT, range, sizeof(range)), arg);
			return 2;
		}
		o->stall_timeout_ms = (uint32_t)v;
		return 0;
	}
	case 0x111:
		if (!strcmp(arg, "auto")) {
			o->lane_cpu = FERRY_LANE_CPU_AUTO;
		} else if (!strcmp(arg, "none")) {
			o->lane_cpu = FERRY_LANE_CPU_NONE;
		} else if (!parse_uint(arg, 0, CPU_SETSIZE - 1, &v)) {
			o->lane_cpu = (int32_t)v + 1;
		} else {
			fprintf(stderr, "ferry-vm: --lane-cpu must be auto, none or a CPU's number from 0 to %d, not '%s'\nTry 'ferry-vm --help'.\n",
				CPU_SETSIZE - 1, arg);
			return 2;
		}
		return 0;
	case 0x112:
		if (parse_uint(arg, 0, FERRY_LANE_POLL_MAX_US, &v)) {
			fprintf(stderr, "ferry-vm: --lane-poll-us must be a number of microseconds from 0 to %d, not '%s'\nTry 'ferry-vm --help'.\n",
				FERRY_LANE_POLL_MAX_US, arg);
			return 2;
		}
		o->lane_poll_us = (int32_t)v;
		return 0;
	case 's':
		if (!*arg || strlen(arg) >= 108)
			return bad_arg("--api-socket '%s': need a path shorter than 108 bytes", arg);
		o->api_path = arg;
		return 0;
	case 'i':
		if (!*arg || strlen(arg) >= 4096)
			return bad_arg("--incoming '%s': need a URI (tcp:HOST:PORT, unix:PATH, fd:N, file:PATH)", arg);
		o->incoming = arg;
		return 0;
	case 'n':
		o->verify = VM_VERIFY_OFF;
		return 0;
	case 'v':
		if (vm_verify_mode_parse(arg, &o->verify))
			return bad_arg("--verify '%s': need background, strict or off", arg);
		return 0;
	case 'V':
	case 'X':
		if (strcmp(arg, "1") && strcmp(arg, "2"))
			return bad_arg("protocol version '%s': 1 or 2", arg);
		if (opt == 'V')
			o->version_min = (uint32_t)(arg[0] - '0');
		else
			o->version_max = (uint32_t)(arg[0] - '0');
		return 0;
	case 'C': {
		static const char *const names[] = { "data-checksum",
			"multi-channel", "zero-pages", "lz4", "zstd", "postcopy",
			"local-fds", "keepalive", "device-fds",
			"postcopy-keepalive" };

		static_assert((1ull << (sizeof(names) / sizeof(names[0]))) - 1 ==
				      FERRY_CAP_ALL,
			      "every capability bit has a name");
		for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (!strcmp(arg, names[i])) {
				o->disabled_caps |= 1ull << i;
				return 0;
			}
		return bad_arg("--disable-cap '%s': data-checksum, multi-channel, zero-pages, lz4, zstd, postcopy, local-fds, keepalive, device-fds or postcopy-keepalive", arg);
	}
	case 'F':
		o->local = true;
		return 0;
	case 'T':
		o->self_test = true;
		return 0;
	case 'l':
		o->lazy = true;
		return 0;
	case 0x100: case 0x101: case 0x102: case 0x103: case 0x104: {
		static const char *const keys[] = { "creds", "psk", "peer",
						    "priority", "engine" };
		char err[300];

		if (vm_tls_set(&o->tls, keys[opt - 0x100], arg, err, sizeof(err)))
			return bad_arg("--%s", err);
		return 0;
	}
	case 'L':
		o->listen = arg;
		return 0;
	case 'K':
		o->connect = arg;
		return 0;
	case 'R':
		if (parse_uint(arg, 1, 1000000, &o->connect_rate))
			return bad_arg("--connect-rate '%s': need INCRs per second, 1 to 1000000", arg);
		return 0;
	case 'U':
		if (parse_uint(arg, 0, UINT64_MAX, &o->connect_count))
			return bad_arg("--connect-count '%s': need a count", arg);
		return 0;
	case 'A':
		o->net_address = arg;
		return 0;
	case 'D':
		o->net_dev = arg;
		return 0;
	case 'P':
		if (parse_uint(arg, 0, NET_SLOTS, &o->net_prepare)) {
			fprintf(stderr, "ferry-vm: --net-prepare '%s': need a count "
				"of sockets, 0 to %u\nTry 'ferry-vm --help'.\n",
				arg, NET_SLOTS);
			return 2;
		}
		return 0;
	default:
		return bad_arg("%s", "invalid option");
	}
}

/* The network options fit together and with the workload; -1 to go on. */
static int net_args_check(const struct vm_opts *o)
{
	bool kv = o->workload == VM_WL_KV;

	if (!o->incoming && !kv && (o->listen || o->connect))
		return bad_arg("%s", "--listen and --connect serve the kv workload: "
			       "add --workload kv");
	if ((kv || o->listen || o->connect) &&
	    o->mem_size < net_region_size() + (16ull << 20))
		return bad_arg("%s", "--workload kv needs --memory 32M or more");
	if (!o->net_address != !o->net_dev)
		return bad_arg("%s", "--net-address and --net-dev go together");
	return -1;
}

/* Returns -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, struct vm_opts *o)
{
	static const struct option longopts[] = {
		{ "memory", required_argument, NULL, 'm' },
		{ "memory-backend", required_argument, NULL, 'b' },
		{ "vcpus", required_argument, NULL, 'c' },
		{ "workload", required_argument, NULL, 'w' },
		{ "dirty-rate", required_argument, NULL, 'r' },
		{ "api-socket", required_argument, NULL, 's' },
		{ "incoming", required_argument, NULL, 'i' },
		{ "downtime-ms", required_argument, NULL, 'd' },
		{ "stall-timeout-ms", required_argument, NULL, 0x110 },
		{ "lane-cpu", required_argument, NULL, 0x111 },
		{ "lane-poll-us", required_argument, NULL, 0x112 },
		{ "no-verify", no_argument, NULL, 'n' },
		{ "verify", required_argument, NULL, 'v' },
		{ "proto-version-min", required_argument, NULL, 'V' },
		{ "proto-version-max", required_argument, NULL, 'X' },
		{ "disable-cap", required_argument, NULL, 'C' },
		{ "lazy", no_argument, NULL, 'l' },
		{ "local", no_argument, NULL, 'F' },
		{ "tls-creds", required_argument, NULL, 0x100 },
		{ "tls-psk", required_argument, NULL, 0x101 },
		{ "tls-peer", required_argument, NULL, 0x102 },
		{ "tls-priority", required_argument, NULL, 0x103 },
		{ "tls-engine", required_argument, NULL, 0x104 },
		{ "listen", required_argument, NULL, 'L' },
		{ "connect", required_argument, NULL, 'K' },
		{ "connect-rate", required_argument, NULL, 'R' },
		{ "connect-count", required_argument, NULL, 'U' },
		{ "net-address", required_argument, NULL, 'A' },
		{ "net-dev", required_argument, NULL, 'D' },
		{ "net-prepare", required_argument, NULL, 'P' },
		{ "self-test", no_argument, NULL, 'T' },
		{ "print-schemas", no_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int opt, rc;

	o->mem_size = 256ull << 20;
	o->backend = VM_MEM_ANON;
	o->nvcpus = 2;
	o->workload = VM_WL_AB;
	o->dirty_rate = -1;
	o->verify = VM_VERIFY_BACKGROUND;
	o->lane_poll_us = -1;
	o->connect_rate = 100;
	o->net_prepare = NET_SLOTS;
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (opt == 'h') {
			usage(stdout);
			return 0;
		}
		if (opt == 'S')
			return vm_state_print_schemas() ? 1 : 0;
		if (opt == '?') {
			fprintf(stderr, "Try 'ferry-vm --help'.\n");
			return 2;
		}
		rc = parse_opt(o, opt, optarg);
		if (rc)
			return rc;
	}
	if (optind < argc)
		return bad_arg("unexpected argument '%s'", argv[optind]);
	if (o->lazy && (!o->incoming || strncmp(o->incoming, "file:", 5)))
		return bad_arg("%s", "--lazy restores a snapshot file: it needs "
			       "--incoming file:PATH");
	if (o->lazy && o->verify == VM_VERIFY_STRICT)
		return bad_arg("%s", "--lazy with --verify strict: a strict check "
			       "hashes all of RAM before the guest runs, which "
			       "would load every page first; use --verify "
			       "background (the default)");
	if (o->local && (!o->incoming || strncmp(o->incoming, "unix:", 5)))
		return bad_arg("%s", "--local receives the guest's memory by fd: "
			       "it needs --incoming unix:PATH");
	if (o->local && o->backend == VM_MEM_ANON)
		return bad_arg("%s", "--local maps the source's memory files: it "
			       "needs --memory-backend memfd or hugetlb (as the "
			       "source's)");
	if (o->mem_size / VM_PAGE_SIZE < o->nvcpus)
		return bad_arg("%s", "--memory is too small for that many vCPUs");
	return net_args_check(o);
}

/* --- engine callbacks --------------------------------------------------- */

/*
 * Memory is still arriving while the guest may run: a lazy restore, or a
 * postcopy destination from its resume to the end of the receive (a
 * vCPU that touches a page not placed yet waits for it). Called on the
 * thread that drives the session (the engine's callbacks), which alone
 * sets mig.session.
 */
static bool memory_arriving(struct vm *vm)
{
	struct ferry_stats st = { FERRY_STATS_INIT };
	bool arrived;

	if (!vm->opts.incoming)
		return false;
	pthread_mutex_lock(&vm->mig.lock);
	arrived = vm->mig.arrived || vm->mig.lazy_done;
	pthread_mutex_unlock(&vm->mig.lock);
	if (arrived)
		return false;
	if (vm->opts.lazy)
		return true;
	return vm->mig.session && !ferry_session_stats(vm->mig.session, &st) &&
	       st.postcopy;
}

/* FERRY_VM_TRACE=1: each migration callback's start and end (and each
 * engine event) go to stderr with the monotonic clock in microseconds,
 * which both processes of a live update share, so that their two logs
 * merge into one timeline of the pause (docs/network.md). */
static bool trace_on;

static void trace(const char *what)
{
	struct timespec ts;

	if (!trace_on)
		return;
	/* The thread's CPU time next to the clock: under load the wall
	 * clock of a step says more about the other jobs than about it. */
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	fprintf(stderr, "ferry-vm: trace %.1f us (thread CPU %.1f us) %s\n",
		(double)vm_now_ns() / 1e3,
		(double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3, what);
}

/* The session of the running migration (callbacks run inside it). */
static ferry_session *mig_session(struct vm *vm)
{
	ferry_session *s;

	pthread_mutex_lock(&vm->mig.lock);
	s = vm->mig.session;
	pthread_mutex_unlock(&vm->mig.lock);
	return s;
}

/* A migration or its reacquire, not a snapshot's file. */
static bool live_uri(struct vm *vm)
{
	const char *u = vm->opts.incoming && !vm->mig.arrived ? vm->opts.incoming
							       : vm->mig.uri;

	return strncmp(u, "file:", 5) != 0;
}

/* While memory arrives the engine pauses the guest only to stop it for
 * good (a lazy restore's page failed its checksum): a vCPU blocked on a
 * page that never comes must not hang the pause, nor a verifier thread
 * blocked the same way. */
static int cb_pause(void *opaque)
{
	struct vm *vm = opaque;
	char stuck[256];

	if (memory_arriving(vm)) {
		if (guest_pause_bounded(&vm->guest, LAZY_PAUSE_MS, stuck,
					sizeof(stuck)))
			fprintf(stderr, "ferry-vm: pause: %s did not park within "
				"%d ms (waiting for a page that is not in); it "
				"stays stopped there\n", stuck, LAZY_PAUSE_MS);
		vm_verify_abandon(vm);
		return 0;
	}
	trace("pause");
	guest_pause(&vm->guest);
	trace("pause: vcpus parked");
	net_pause(vm->net);
	trace("pause: backend parked");
	/* A live update passes the sockets by fd: nothing to freeze. */
	if (vm->guest.workload == VM_WL_KV &&
	    !net_fdpass_want(vm->net, mig_session(vm))) {
		char err[256] = "";
		int rc = net_freeze(vm->net, err, sizeof(err));

		if (rc) {
			/* The engine resumes only a guest whose pause
			 * succeeded: this one runs on as it was. */
			fprintf(stderr, "ferry-vm: net: %s\n", err);
			pthread_mutex_lock(&vm->mig.lock);
			snprintf(vm->mig.vmm_err, sizeof(vm->mig.vmm_err),
				 "net: %.200s", err);
			pthread_mutex_unlock(&vm->mig.lock);
			net_resume(vm->net);
			guest_resume(&vm->guest);
			return rc;
		}
	}
	vm_fault_at(vm, VM_AT_HANDOFF);
	vm_verify_pause(vm);
	trace("pause: done");
	return 0;
}

/* The point of no return on a source: the connections go. */
static int cb_release(void *opaque)
{
	struct vm *vm = opaque;

	vm_fault_at(vm, VM_AT_AFTER_READY);
	trace("release");
	if (vm->guest.workload == VM_WL_KV && net_fdpass_active(vm->net)) {
		net_fdpass_release(vm->net);
	} else if (vm->guest.workload == VM_WL_KV) {
		net_release(vm->net);
		if (live_uri(vm))
			net_note_repair(vm->net);
	}
	trace("release: done");
	return 0;
}

/* A destination takes the connections over (or, on a source whose
 * "released" was refused, takes them back) from the saved dumps. */
static int cb_acquire(void *opaque)
{
	struct vm *vm = opaque;
	int rc;

	if (vm->opts.incoming && !vm->mig.arrived)
		vm_fault_at(vm, VM_AT_AFTER_RELEASED);
	trace("acquire");
	if (vm->guest.workload != VM_WL_KV || !vm->net)
		return 0;
	/* A source whose "released" was refused: its sockets never left. */
	if (net_fdpass_active(vm->net)) {
		net_fdpass_back(vm->net);
		trace("acquire: done");
		return 0;
	}
	/* Test hooks for the failure points after "released": a refusal
	 * (the source takes its connections back) and a death (they are
	 * lost with this process). */
	if (vm->opts.incoming && !vm->mig.arrived) {
		if (vm->fault_acquire_fail) {
			pthread_mutex_lock(&vm->mig.lock);
			snprintf(vm->mig.vmm_err, sizeof(vm->mig.vmm_err),
				 "FERRY_VM_FAULT=acquire-fail");
			pthread_mutex_unlock(&vm->mig.lock);
			return -EIO;
		}
		if (vm->fault_acquire_die)
			_exit(9);
	}
	if (net_fdpass_pending(vm->net)) {
		rc = net_fdpass_acquire(vm->net);
	} else {
		rc = net_acquire(vm->net);
		if (live_uri(vm))
			net_note_repair(vm->net);
	}
	trace("acquire: done");
	return rc;
}

static int cb_throttle(void *opaque, uint32_t percent)
{
	struct vm *vm = opaque;

	guest_throttle(&vm->guest, percent);
	return 0;
}

static int cb_resume(void *opaque)
{
	struct vm *vm = opaque;

	trace("resume");
	if (memory_arriving(vm))
		atomic_store(&vm->mig.lazy_ran, true);
	vm_verify_resume(vm);
	trace("resume: vcpus go");
	if (vm->guest.workload == VM_WL_KV) {
		/* A source resumes only when it keeps its guest. */
		net_fdpass_back(vm->net);
		net_resume_frozen(vm->net);
		net_resume(vm->net);
	}
	trace("resume: done");
	return 0;
}

static int cb_dirty_bitmap(void *opaque, uint32_t region, uint64_t *bitmap,
			   size_t pages)
{
	struct vm *vm = opaque;
	int rc;

	if (region != 0)
		return -EINVAL;
	rc = guest_dirty_bitmap(&vm->guest, bitmap, pages);
	/* Test hook: lose every write, so tests can see verification fail. */
	if (!rc && vm->fault_lose_writes)
		memset(bitmap, 0, (pages + 63) / 64 * sizeof(uint64_t));
	return rc;
}

/* load_state, after FERRY_VM_FAULT=stall-load:MS's stall (tests: a
 * destination that stops answering while the source's guest is paused). */
static int cb_load_state(void *opaque, const void *data, size_t len)
{
	struct vm *vm = opaque;
	int rc;

	trace("load_state");
	vm_fault_at(vm, VM_AT_STATE);
	if (vm->fault_stall_load_ms)
		usleep((useconds_t)vm->fault_stall_load_ms * 1000);
	/* The connections' restores are staged while the source lets them
	 * go (net_handoff.c); new dumps replace any staged from old ones. */
	net_stage_expect(vm->net);
	rc = vm_state_load(opaque, data, len);
	if (!rc)
		net_stage_start(vm->net);
	trace("load_state: done");
	return rc;
}

/* Destination, after resume: the verification result and the stall the
 * guest saw travel back to the source in the note. */
static void cb_running_note(void *opaque, char *note, size_t len)
{
	vm_verify_note(opaque, note, len);
	vm_fault_at(opaque, VM_AT_RUNNING);
}

static void cb_event(void *opaque, const struct ferry_event *ev)
{
	struct vm *vm = opaque;

	/* A recovering destination's new listener is announced by a
	 * LISTENING after the last pause (the status shows it). */
	if (trace_on) {
		char what[64];

		snprintf(what, sizeof(what), "event %d state %d", ev->kind,
			 ev->state);
		trace(what);
	}
	if (ev->kind == FERRY_EVENT_LISTENING)
		atomic_fetch_add(&vm->mig.listens, 1);
	/* A source on a UNIX socket may pass its memory and sockets by fd:
	 * an unconfirmed end must be able to say whether the process that
	 * shares them still exists. Read now, connected, not in the pause. */
	if (ev->kind == FERRY_EVENT_STATE &&
	    ev->state == FERRY_STATE_NEGOTIATING &&
	    !strcmp(vm_role(vm), "source"))
		vm_peer_track(vm);
	if (ev->kind == FERRY_EVENT_STATE &&
	    ev->state == FERRY_STATE_POSTCOPY_PAUSED)
		atomic_store(&vm->mig.paused_at, atomic_load(&vm->mig.listens));
	api_event(vm, vm->mig.client, ev);
	vm_fault_event(vm, ev);
	trace("event: done");
}

/* save_fds: on a live update, the network device's sockets. */
static int cb_save_fds(void *opaque, int *fds, size_t max, size_t *n)
{
	struct vm *vm = opaque;
	int rc;

	trace("save_fds");
	rc = net_fdpass_save(vm->guest.workload == VM_WL_KV ? vm->net : NULL,
			     fds, max, n);
	if (rc) {
		pthread_mutex_lock(&vm->mig.lock);
		snprintf(vm->mig.vmm_err, sizeof(vm->mig.vmm_err),
			 "net: more sockets than %zu descriptors", max);
		pthread_mutex_unlock(&vm->mig.lock);
	}
	trace("save_fds: done");
	return rc;
}

/* load_fds: the source's sockets, kept until the state names them. */
static int cb_load_fds(void *opaque, const int *fds, size_t n)
{
	struct vm *vm = opaque;
	char err[200] = "";
	int rc;

	trace("load_fds");
	rc = net_fdpass_load(vm->net,
			     fds, n, err, sizeof(err));
	if (rc) {
		pthread_mutex_lock(&vm->mig.lock);
		snprintf(vm->mig.vmm_err, sizeof(vm->mig.vmm_err), "net: %s", err);
		pthread_mutex_unlock(&vm->mig.lock);
	}
	trace("load_fds: done");
	return rc;
}

/* save_state, after the FERRY_VM_FAULT hook of the moment "state". */
static int cb_save_state(void *opaque, struct ferry_buf *out)
{
	int rc;

	trace("save_state");
	vm_fault_at(opaque, VM_AT_STATE);
	rc = vm_state_save(opaque, out);
	trace("save_state: done");
	return rc;
}

static void cb_log(void *opaque, int level, const char *msg)
{
	struct vm *vm = opaque;

	if (level <= vm->log_level)
		fprintf(stderr, "ferry-vm: engine: %s\n", msg);
}

/**
 * vm_role() - "destination" while the VM waits for its guest to arrive,
 * else "source" (a destination whose guest arrived may migrate on).
 * @vm: the VM.
 *
 * Return: a static string.
 */
const char *vm_role(struct vm *vm)
{
	bool arrived;

	pthread_mutex_lock(&vm->mig.lock);
	arrived = vm->mig.arrived;
	pthread_mutex_unlock(&vm->mig.lock);
	return vm->opts.incoming && !arrived ? "destination" : "source";
}

/**
 * vm_verified() - the verification verdict as the status shows it.
 * @vm: the VM.
 *
 * On a destination: the check of the loaded image, turned false by any
 * later check error of the running guest. On a source: the destination's
 * verdict from its note.
 *
 * Return: -1 (not checked), 0 or 1.
 */
int vm_verified(struct vm *vm)
{
	int v;

	vm_verify_poll(vm);
	pthread_mutex_lock(&vm->mig.lock);
	v = vm->mig.verified;
	pthread_mutex_unlock(&vm->mig.lock);
	if (v == 1 && vm->opts.incoming && guest_check_errors(&vm->guest))
		v = 0;
	return v;
}

/* --- migration threads -------------------------------------------------- */

static void config_base(struct vm *vm, struct ferry_config *cfg)
{
	ferry_config_init(cfg);
	cfg->ops = &vm->ops;
	cfg->opaque = vm;
	cfg->on_event = cb_event;
	cfg->on_log = cb_log;
	if (vm->opts.downtime_ms)
		cfg->downtime_limit_ms = vm->opts.downtime_ms;
	cfg->version_min = vm->opts.version_min;
	cfg->version_max = vm->opts.version_max;
	cfg->capabilities &= ~vm->opts.disabled_caps;
	cfg->stall_timeout_ms = vm->opts.stall_timeout_ms;
	cfg->lane_cpu = vm->opts.lane_cpu;
	if (vm->opts.lane_poll_us >= 0)
		cfg->lane_poll_us = (uint32_t)vm->opts.lane_poll_us;
}

static int session_make(struct vm *vm, ferry_session **out)
{
	struct ferry_region r;
	ferry_session *s;
	int rc;

	guest_ram_region(&vm->guest, &r);

	rc = ferry_session_new(&vm->mig.cfg, &s);
	if (rc)
		return rc;
	rc = ferry_session_add_region(s, &r);
	if (rc) {
		ferry_session_destroy(s);
		return rc;
	}
	*out = s;
	return 0;
}

/* Run one send or receive; fills @st and @errmsg whatever happens. */
static int session_run(struct vm *vm, bool send, struct ferry_stats *st,
		       char *errmsg, size_t errlen)
{
	ferry_session *s = NULL;
	bool keep;
	int rc;

	memset(st, 0, sizeof(*st));
	st->struct_size = sizeof(*st);
	errmsg[0] = '\0';
	rc = session_make(vm, &s);
	if (rc) {
		st->state = FERRY_STATE_FAILED;
		st->error = rc;
		st->ram_bytes = vm->guest.mem_size;
		/* Nothing left this VM: a source keeps its guest. */
		st->owner = send ? FERRY_OWNER_SOURCE : FERRY_OWNER_NONE;
		snprintf(errmsg, errlen, "cannot create a session");
		return rc;
	}
	pthread_mutex_lock(&vm->mig.lock);
	vm->mig.session = s;
	vm->mig.receiving = !send;
	vm->mig.vmm_err[0] = '\0';
	if (atomic_load(&vm->mig.cancel_requested) || vm->mig.stopping)
		ferry_session_cancel(s);
	pthread_mutex_unlock(&vm->mig.lock);

	rc = send ? ferry_session_send(s, vm->mig.uri) :
		    ferry_session_receive(s, vm->mig.uri);

	ferry_session_stats(s, st);
	ferry_session_errmsg(s, errmsg, errlen);
	/* A lazy restore or a postcopy receive that failed after the guest
	 * ran: its session is never destroyed, because that would release
	 * the userfaultfd and a vCPU waiting for a page would run on zeros. */
	keep = rc && !send && (atomic_load(&vm->mig.lazy_ran) || st->postcopy);
	if (keep)
		fprintf(stderr, "ferry-vm: the guest stopped for good: %s\n",
			errmsg[0] ? errmsg : ferry_strerror(rc));
	pthread_mutex_lock(&vm->mig.lock);
	vm->mig.session = NULL;
	vm->mig.last = *st;
	vm->mig.have_last = true;
	snprintf(vm->mig.last_err, sizeof(vm->mig.last_err), "%s", errmsg);
	if (keep) {
		vm->mig.kept = s;
		snprintf(vm->mig.lost, sizeof(vm->mig.lost), "%s",
			 errmsg[0] ? errmsg : ferry_strerror(rc));
	}
	pthread_mutex_unlock(&vm->mig.lock);
	if (!keep)
		ferry_session_destroy(s);
	return rc;
}

/* Keep @report as the last one; @verified -2 leaves the verdict as it is
 * (a destination set it when it checked the loaded image). */
static void mig_store_report(struct vm *vm, json_object *report, int verified,
			     bool migrated)
{
	pthread_mutex_lock(&vm->mig.lock);
	json_object_put(vm->mig.report);
	vm->mig.report = report;
	if (verified != -2)
		vm->mig.verified = verified;
	if (migrated)
		vm->mig.migrated = true;
	pthread_mutex_unlock(&vm->mig.lock);
}

/* A migrate sent while the guest initialises waits here until it is
 * ready (a cancel ends the wait; the session then sees it). Returns 0 to
 * go on, or FERRY_EVMM with @st and @errmsg filled when it never will. */
static int init_wait(struct vm *vm, struct ferry_stats *st, char *errmsg,
		     size_t errlen)
{
	int state;

	pthread_mutex_lock(&vm->mig.lock);
	while ((state = atomic_load(&vm->init.state)) == VM_INIT_RUNNING &&
	       !atomic_load(&vm->mig.cancel_requested) && !vm->mig.stopping)
		pthread_cond_wait(&vm->mig.cond, &vm->mig.lock);
	if (state == VM_INIT_FAILED) {
		memset(st, 0, sizeof(*st));
		st->struct_size = sizeof(*st);
		st->state = FERRY_STATE_FAILED;
		st->error = FERRY_EVMM;
		st->ram_bytes = vm->guest.mem_size;
		st->owner = FERRY_OWNER_SOURCE;
		snprintf(errmsg, errlen, "the guest failed to initialize%s%s",
			 vm->init.err[0] ? ": " : "", vm->init.err);
		vm->mig.last = *st;
		vm->mig.have_last = true;
		snprintf(vm->mig.last_err, sizeof(vm->mig.last_err),
			 "the guest failed to initialize%s%.400s",
			 vm->init.err[0] ? ": " : "", vm->init.err);
	}
	pthread_mutex_unlock(&vm->mig.lock);
	return state == VM_INIT_FAILED ? FERRY_EVMM : 0;
}

/*
 * A local migration ended unconfirmed: the memory (and on a live update
 * the sockets) went by fd, so nothing was lost here, but the destination
 * process shares them. The error the operator reads says where the
 * connections are, whether that process still exists, and what a
 * forced resume risks (the report's "unconfirmed" says it in fields).
 */
static void local_unconfirmed(struct vm *vm, char *errmsg, size_t len)
{
	size_t at = strlen(errmsg);
	unsigned conns = 0, listeners = 0;
	char risk[400];
	pid_t pid;
	int alive = vm_peer_state(&pid, PEER_EXIT_WAIT_MS);

	vm_local_risk(alive, pid, risk, sizeof(risk));
	net_counts(vm->guest.workload == VM_WL_KV ? vm->net : NULL, &conns,
		   &listeners);
	snprintf(errmsg + at, len - at, "; the guest's memory%s still held "
		 "here (passed by fd, the guest paused%s); what 'ferry "
		 "resume --force' would risk: %s", conns ? " and its connections are" :
		 " is",
		 conns ? ", the sockets parked: their clients wait, nothing is "
			 "reset" : "", risk);
}

static void *send_main(void *arg)
{
	struct vm *vm = arg;
	struct ferry_stats st = { FERRY_STATS_INIT };
	char errmsg[768];
	json_object *report, *event, *v;
	bool gone;
	int rc;

	rc = init_wait(vm, &st, errmsg, sizeof(errmsg));
	if (!rc)
		rc = session_run(vm, true, &st, errmsg, sizeof(errmsg));
	net_outcome(vm->net, rc);
	net_fdpass_outcome(vm->net, rc);
	if (rc == FERRY_EUNCONFIRMED && st.local_fds)
		local_unconfirmed(vm, errmsg, sizeof(errmsg));
	else
		vm_peer_forget();
	/* The destination maps the very pages of this guest and runs it:
	 * this side must never touch them again, and cannot. */
	if (!rc && st.local_fds)
		guest_ram_release(&vm->guest);
	vm_verify_source(vm, rc, &st);
	report = api_report(vm, rc, &st, errmsg, st.peer_note);
	api_log_result("migration", rc, &st, errmsg, report);
	/* The events the pause deferred come before DONE. */
	api_events_flush(vm);
	event = json_object_new_object();
	json_object_object_add(event, "event", json_object_new_string("DONE"));
	/* A copy: json-c reference counts are not atomic and the stored
	 * report is shared with the API thread's status replies. */
	json_object_object_add(event, "data", api_copy(report));
	v = json_object_object_get(report, "verified");
	/* A checkpoint leaves the guest running here. A postcopy that ended
	 * without the source's copy running again leaves the guest to the
	 * destination, whose copy may have run. */
	gone = !rc ? !vm->mig.keep_running :
	       rc == FERRY_EPOSTCOPY && st.owner == FERRY_OWNER_DESTINATION;
	mig_store_report(vm, report, v ? json_object_get_boolean(v) : -1, gone);

	/* A new migrate may start as soon as the client sees DONE, which
	 * goes to whoever follows the migration now (a recovery's client). */
	pthread_mutex_lock(&vm->mig.lock);
	vm->mig.active = false;
	pthread_mutex_unlock(&vm->mig.lock);
	api_send(vm, vm->mig.client, event);
	json_object_put(event);
	return NULL;
}

/* Errors that mean we could not listen at all (or never will): listening
 * again at once would only fail again. */
static bool listen_error(int rc)
{
	return rc == -EADDRINUSE || rc == -EADDRNOTAVAIL || rc == -EACCES ||
	       rc == -EPERM || rc == -EINVAL || rc == -ENOENT ||
	       rc == -EAFNOSUPPORT || rc == -ENOSYS || rc == -ENOMEM ||
	       rc == -EMFILE;
}

/* After a failed attempt: listen again at once, so a real migration can
 * follow a bad one, unless listening itself failed; then back off (0.1 s
 * doubling to 2 s) so a permanent error does not spin. Returns false when
 * stopping. */
static bool recv_backoff(struct vm *vm, int rc, unsigned *fails)
{
	uint64_t ms, dl;
	struct timespec ts;
	bool stop;

	if (!listen_error(rc)) {
		*fails = 0;
		return true;
	}
	ms = 100ull << (*fails < 5 ? *fails : 5);
	if (ms > 2000)
		ms = 2000;
	(*fails)++;
	dl = vm_now_ns() + ms * VM_NS_PER_MS;
	ts.tv_sec = (time_t)(dl / 1000000000ull);
	ts.tv_nsec = (long)(dl % 1000000000ull);
	pthread_mutex_lock(&vm->mig.lock);
	while (!vm->mig.stopping &&
	       pthread_cond_timedwait(&vm->mig.cond, &vm->mig.lock, &ts) == 0)
		;
	stop = vm->mig.stopping;
	pthread_mutex_unlock(&vm->mig.lock);
	return !stop;
}

/* The engine asks why save_state/load_state failed, to tell both sides. */
static void cb_errmsg(void *opaque, char *buf, size_t len)
{
	struct vm *vm = opaque;

	pthread_mutex_lock(&vm->mig.lock);
	snprintf(buf, len, "%s", vm->mig.vmm_err);
	pthread_mutex_unlock(&vm->mig.lock);
}

/* A failed (or cancelled) incoming attempt: its report becomes the last
 * report, and the status's migration object shows it as last_failure,
 * with the time, while the destination listens again. */
static void recv_failed(struct vm *vm, int rc, const struct ferry_stats *st,
			const char *errmsg)
{
	json_object *report = api_report(vm, rc, st, errmsg, "");
	json_object *f = json_object_new_object(), *v;
	struct timespec now;
	struct tm tm;
	char at[64];

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(at + strlen(at), sizeof(at) - strlen(at), ".%03ldZ",
		 now.tv_nsec / 1000000);
	v = json_object_object_get(report, "status");
	json_object_object_add(f, "state", api_copy(v));
	v = json_object_object_get(report, "error");
	json_object_object_add(f, "error", api_copy(v));
	json_object_object_add(f, "at", json_object_new_string(at));
	json_object_object_add(f, "report", api_copy(report));
	pthread_mutex_lock(&vm->mig.lock);
	json_object_put(vm->mig.last_failure);
	vm->mig.last_failure = f;
	pthread_mutex_unlock(&vm->mig.lock);
	mig_store_report(vm, report, -2, false);
}

static void *recv_main(void *arg)
{
	struct vm *vm = arg;
	struct ferry_stats st = { FERRY_STATS_INIT };
	char errmsg[768];
	unsigned fails = 0;
	bool stop;
	int rc;

	for (;;) {
		pthread_mutex_lock(&vm->mig.lock);
		stop = vm->mig.stopping;
		atomic_store(&vm->mig.cancel_requested, false);
		vm->mig.verified = -1;
		memset(&vm->mig.check, 0, sizeof(vm->mig.check));
		pthread_mutex_unlock(&vm->mig.lock);
		if (stop)
			break;
		rc = session_run(vm, false, &st, errmsg, sizeof(errmsg));
		api_events_flush(vm);
		/* Sockets the source passed stay the source's after a
		 * failure: this side's duplicates go; once the guest runs
		 * here, the sockets made ahead for a TCP_REPAIR handoff do. */
		if (rc)
			net_fdpass_discard(vm->net);
		else
			net_fdpass_arrived(vm->net);
		/* Every page is in: the verdict may take a while, but nothing
		 * is loading any more (a cancel or a pause is ordinary). */
		pthread_mutex_lock(&vm->mig.lock);
		vm->mig.lazy_done = !rc;
		stop = vm->mig.stopping;
		pthread_mutex_unlock(&vm->mig.lock);
		if (!rc && vm_restoring_file(vm) && !stop)
			vm_verify_restored(vm, &st);
		if (!rc) {
			json_object *report = api_report(vm, 0, &st, "", vm->mig.note);

			api_log_result("incoming migration", 0, &st, errmsg, report);
			mig_store_report(vm, report, -2, false);
			/* The guest runs here now: an ordinary VM, which
			 * may migrate on. */
			pthread_mutex_lock(&vm->mig.lock);
			vm->mig.arrived = true;
			pthread_mutex_unlock(&vm->mig.lock);
			break;
		}
		pthread_mutex_lock(&vm->mig.lock);
		stop = vm->mig.stopping;
		pthread_mutex_unlock(&vm->mig.lock);
		if (stop)
			break;
		/* A listener that keeps failing the same way says so once. */
		if (!fails || !listen_error(rc))
			api_log_result("incoming migration", rc, &st, errmsg, NULL);
		recv_failed(vm, rc, &st, errmsg);
		/* A snapshot file restores once: reading it again changes
		 * nothing. A guest that ran before all of its memory came
		 * stays as it is: no other migration may write its RAM. The
		 * failure stays in the status. */
		if (!strncmp(vm->mig.uri, "file:", 5) || vm->mig.kept)
			break;
		if (!recv_backoff(vm, rc, &fails))
			break;
	}
	pthread_mutex_lock(&vm->mig.lock);
	vm->mig.active = false;
	pthread_mutex_unlock(&vm->mig.lock);
	return NULL;
}

/* The migration's TLS: the migrate command's settings (checked by
 * api_args.c) in place of the VM's own when it gives any. */
static void tls_args(struct vm *vm, const struct vm_migrate_args *a)
{
	char err[300];

	vm->mig.tls = vm->opts.tls;
	if (!a->tls_creds && !a->tls_psk && !a->tls_peer && !a->tls_priority &&
	    a->tls_engine < 0)
		return;
	if (a->tls_creds || a->tls_psk)
		memset(&vm->mig.tls, 0, sizeof(vm->mig.tls));
	if (a->tls_peer)
		vm->mig.tls.peers[0] = 0;
	if (a->tls_creds)
		vm_tls_set(&vm->mig.tls, "creds", a->tls_creds, err, sizeof(err));
	if (a->tls_psk)
		vm_tls_set(&vm->mig.tls, "psk", a->tls_psk, err, sizeof(err));
	if (a->tls_priority)
		vm_tls_set(&vm->mig.tls, "priority", a->tls_priority, err,
			   sizeof(err));
	if (a->tls_engine >= 0)
		vm->mig.tls.engine = a->tls_engine;
	if (a->tls_peer) {
		char peers[1024], *save = NULL;

		snprintf(peers, sizeof(peers), "%s", a->tls_peer);
		for (char *n = strtok_r(peers, ",", &save); n;
		     n = strtok_r(NULL, ",", &save))
			vm_tls_set(&vm->mig.tls, "peer", n, err, sizeof(err));
	}
}

static void args_to_config(struct vm *vm, const struct vm_migrate_args *a)
{
	struct ferry_config *cfg = &vm->mig.cfg;

	config_base(vm, cfg);
	if (a->downtime_ms >= 0)
		cfg->downtime_limit_ms = (uint32_t)a->downtime_ms;
	if (a->max_passes >= 0)
		cfg->max_passes = (uint32_t)a->max_passes;
	if (a->max_precopy_ms >= 0)
		cfg->max_precopy_ms = (uint32_t)a->max_precopy_ms;
	if (a->max_pause_ms >= 0)
		cfg->max_pause_ms = (uint32_t)a->max_pause_ms;
	if (a->stall_timeout_ms >= 0)
		cfg->stall_timeout_ms = (uint32_t)a->stall_timeout_ms;
	if (a->timeout_strategy >= 0)
		cfg->timeout_strategy = (enum ferry_timeout_strategy)a->timeout_strategy;
	if (a->dirty_mode >= 0)
		cfg->dirty_mode = (enum ferry_dirty_mode)a->dirty_mode;
	if (a->connections > 0)
		cfg->connections = (uint32_t)a->connections;
	if (a->compress >= 0)
		cfg->compress = (enum ferry_compress)a->compress;
	/* Copied by ferry_session_new(), which runs before args go away. */
	cfg->record_stream = NULL;
	snprintf(vm->mig.record, sizeof(vm->mig.record), "%s",
		 a->record_stream ? a->record_stream : "");
	if (vm->mig.record[0])
		cfg->record_stream = vm->mig.record;
	if (a->compress_level >= 0)
		cfg->compress_level = (int)a->compress_level;
	if (a->window > 0)
		cfg->window = (uint32_t)a->window;
	if (a->chunk_bytes > 0)
		cfg->chunk_bytes = (uint32_t)a->chunk_bytes;
	if (a->max_bandwidth >= 0)
		cfg->max_bandwidth = (uint64_t)a->max_bandwidth;
	if (a->auto_converge >= 0)
		cfg->auto_converge = a->auto_converge;
	snprintf(vm->mig.cc, sizeof(vm->mig.cc), "%s",
		 a->congestion_control ? a->congestion_control : "");
	cfg->congestion_control = vm->mig.cc[0] ? vm->mig.cc : NULL;
	cfg->keep_running = a->keep_running > 0;
	vm->mig.keep_running = cfg->keep_running;
	if (a->io_threads > 0)
		cfg->io_threads = (uint32_t)a->io_threads;
	if (a->postcopy >= 0)
		cfg->postcopy = (enum ferry_postcopy)a->postcopy;
	if (a->postcopy_after_passes > 0)
		cfg->postcopy_after_passes = (uint32_t)a->postcopy_after_passes;
	cfg->local_fds = a->local > 0;
	snprintf(vm->mig.uri, sizeof(vm->mig.uri), "%s", a->uri);
	tls_args(vm, a);
	if (strncmp(a->uri, "file:", 5))
		vm_tls_apply(&vm->mig.tls, cfg, false);
}

/**
 * vm_migrate_start() - start migrating the guest in the background.
 * @vm: the VM (a source).
 * @a: the migrate command's arguments, already type-checked.
 * @client: the API client that receives the events (0 for none).
 * @err: receives the reason on failure.
 * @errlen: size of @err.
 *
 * Return: VM_OK, VM_ERR_STATE when a migration cannot start now,
 * VM_ERR_ARG when the library refuses the configuration, or
 * VM_ERR_GENERIC.
 */
enum vm_err vm_migrate_start(struct vm *vm, const struct vm_migrate_args *a,
			     uint64_t client, char *err, size_t errlen)
{
	enum vm_err e = VM_OK;
	int rc;

	pthread_mutex_lock(&vm->mig.lock);
	if (vm->opts.incoming && !vm->mig.arrived) {
		snprintf(err, errlen, "this VM is a migration destination waiting "
			 "for its guest");
		e = VM_ERR_STATE;
	} else if (vm->mig.active) {
		snprintf(err, errlen, "a migration is already running");
		e = VM_ERR_STATE;
	} else if (vm->mig.migrated) {
		snprintf(err, errlen, "the guest was migrated away");
		e = VM_ERR_STATE;
	} else if (atomic_load(&vm->init.state) == VM_INIT_FAILED) {
		snprintf(err, errlen, "the guest failed to initialize");
		e = VM_ERR_STATE;
	} else if (atomic_load(&vm->init.state) == VM_INIT_DONE &&
		   !guest_running(&vm->guest)) {
		/* While it initialises, the migration thread waits for it. */
		snprintf(err, errlen, "the guest is not running");
		e = VM_ERR_STATE;
	}
	if (e)
		goto out;
	if (vm->guest.workload == VM_WL_KV &&
	    net_handoff_check(vm->net, a->uri, a->local > 0, err, errlen))
		e = VM_ERR_GENERIC;
	if (e)
		goto out;
	if (vm->mig.joinable) {
		/* The last thread cleared "active" as its final use of the
		 * lock, so joining here cannot deadlock. */
		pthread_join(vm->mig.thread, NULL);
		vm->mig.joinable = false;
	}
	args_to_config(vm, a);
	/* The library's own check, so that a refused combination (such as
	 * postcopy_after_passes above max_passes) is the command's error. */
	if (ferry_config_check(&vm->mig.cfg, err, errlen)) {
		e = VM_ERR_ARG;
		goto out;
	}
	vm->mig.client = client;
	atomic_store(&vm->mig.cancel_requested, false);
	vm->mig.active = true;
	rc = pthread_create(&vm->mig.thread, NULL, send_main, vm);
	if (rc) {
		vm->mig.active = false;
		snprintf(err, errlen, "cannot start the migration thread: %s",
			 strerror(rc));
		e = VM_ERR_GENERIC;
		goto out;
	}
	pthread_setname_np(vm->mig.thread, "migrate-out");
	vm->mig.joinable = true;
out:
	pthread_mutex_unlock(&vm->mig.lock);
	return e;
}

/**
 * vm_migrate_cancel() - cancel the running migration (on a destination:
 * the incoming attempt, after which it listens again).
 * @vm: the VM.
 * @err: receives the reason on failure.
 * @errlen: size of @err.
 *
 * Return: VM_OK, or VM_ERR_STATE when nothing runs or the migration is
 * past the point where a cancel could give the guest back (postcopy).
 */
enum vm_err vm_migrate_cancel(struct vm *vm, char *err, size_t errlen)
{
	enum vm_err e = VM_OK;

	pthread_mutex_lock(&vm->mig.lock);
	if (!vm->mig.active) {
		snprintf(err, errlen, "no migration is running");
		e = VM_ERR_STATE;
	} else if (vm->opts.lazy && !vm->mig.arrived && !vm->mig.lazy_done &&
		   (atomic_load(&vm->mig.lazy_ran) ||
		    vm_postcopy_refuse_cancel(vm, err, errlen))) {
		/* There is no source to go back to: the guest would stop
		 * for good with its memory half loaded. (The library's lazy
		 * restore reports postcopy's state before lazy_ran is set:
		 * the snapshot is no source that recovery could reach.) */
		snprintf(err, errlen, "the guest already runs from the snapshot "
			 "while its memory loads; cancelling would stop it for good");
		e = VM_ERR_STATE;
	} else if (vm_postcopy_refuse_cancel(vm, err, errlen)) {
		e = VM_ERR_STATE;
	} else {
		atomic_store(&vm->mig.cancel_requested, true);
		if (vm->mig.session)
			ferry_session_cancel(vm->mig.session);
		pthread_cond_broadcast(&vm->mig.cond); /* a wait for init */
	}
	pthread_mutex_unlock(&vm->mig.lock);
	return e;
}

static int incoming_start(struct vm *vm)
{
	int rc;

	config_base(vm, &vm->mig.cfg);
	vm->mig.cfg.lazy = vm->opts.lazy;
	vm->mig.tls = vm->opts.tls;
	if (strncmp(vm->opts.incoming, "file:", 5))
		vm_tls_apply(&vm->mig.tls, &vm->mig.cfg, true);
	snprintf(vm->mig.uri, sizeof(vm->mig.uri), "%s", vm->opts.incoming);
	pthread_mutex_lock(&vm->mig.lock);
	vm->mig.active = true;
	rc = pthread_create(&vm->mig.thread, NULL, recv_main, vm);
	if (rc) {
		vm->mig.active = false;
	} else {
		pthread_setname_np(vm->mig.thread, "migrate-in");
		vm->mig.joinable = true;
	}
	pthread_mutex_unlock(&vm->mig.lock);
	return -rc;
}

static void mig_shutdown(struct vm *vm)
{
	if (vm_postcopy_abandon(vm))
		return;
	pthread_mutex_lock(&vm->mig.lock);
	vm->mig.stopping = true;
	atomic_store(&vm->mig.cancel_requested, true);
	if (vm->mig.session)
		ferry_session_cancel(vm->mig.session);
	pthread_cond_broadcast(&vm->mig.cond);
	pthread_mutex_unlock(&vm->mig.lock);
	if (vm->mig.joinable)
		pthread_join(vm->mig.thread, NULL);
	vm->mig.joinable = false;
}

/* --- start-up ----------------------------------------------------------- */

/* Everything slow about starting: populate RAM and, on a source, start
 * the vCPUs (a random guest writes all of its RAM first). */
static int init_guest(struct vm *vm, char *err, size_t errlen)
{
	int rc = 0;

	/* userfaultfd's missing mode needs memory that is not there yet: a
	 * lazy restore places every page itself. A full restore from a file
	 * writes every page that has data anyway, and populating first only
	 * competes with its reads for the memory map's lock. */
	/* A local destination maps the source's pages over its RAM: its
	 * own would only be freed again, so there is nothing to prepare. */
	if (vm->opts.local)
		atomic_store(&vm->guest.populated, vm->guest.mem_size);
	else if (!vm_restoring_file(vm))
		rc = guest_ram_populate(&vm->guest, &vm->init.abort);
	if (rc) {
		snprintf(err, errlen, "cannot populate %" PRIu64 " MiB of guest RAM: %s",
			 vm->guest.mem_size >> 20, strerror(-rc));
		return rc;
	}
	if (vm->opts.incoming)
		return 0; /* started parked, and listening, by main() */
	if (vm->guest.workload == VM_WL_KV) {
		rc = net_start(vm->net, true, err, errlen);
		if (rc)
			return rc;
	}
	rc = guest_start(&vm->guest, false);
	if (rc)
		snprintf(err, errlen, "cannot start vCPUs: %s", strerror(-rc));
	return rc;
}

/* The init thread: the API already answers while it runs. A failure ends
 * the process (the API loop is woken to exit), with the reason on stderr
 * and in the status meanwhile. */
static void *init_main(void *arg)
{
	struct vm *vm = arg;
	char err[sizeof(vm->init.err)] = "";
	int rc = init_guest(vm, err, sizeof(err));

	/* On a destination populating only saves the receive its first
	 * touches, and the guest may already have arrived and run here:
	 * ending the process would lose it. The pages fault in as used. */
	if (rc && rc != -ECANCELED && vm->opts.incoming) {
		fprintf(stderr, "ferry-vm: warning: %s; pages are populated as "
			"they are first used instead\n", err);
		rc = 0;
		err[0] = '\0';
	}
	if (rc && rc != -ECANCELED)
		fprintf(stderr, "ferry-vm: %s\n", err);
	pthread_mutex_lock(&vm->mig.lock);
	snprintf(vm->init.err, sizeof(vm->init.err), "%s", err);
	atomic_store(&vm->init.state, rc ? VM_INIT_FAILED : VM_INIT_DONE);
	pthread_cond_broadcast(&vm->mig.cond);
	pthread_mutex_unlock(&vm->mig.lock);
	if (rc)
		api_wake(vm);
	return NULL;
}

static int init_start(struct vm *vm)
{
	int rc = pthread_create(&vm->init.thread, NULL, init_main, vm);

	if (rc) {
		fprintf(stderr, "ferry-vm: cannot start the init thread: %s\n",
			strerror(rc));
		return -rc;
	}
	pthread_setname_np(vm->init.thread, "init");
	vm->init.joinable = true;
	return 0;
}

/* Stop populating (the process is exiting) and wait for the thread. */
static void init_join(struct vm *vm)
{
	atomic_store(&vm->init.abort, true);
	if (vm->init.joinable)
		pthread_join(vm->init.thread, NULL);
	vm->init.joinable = false;
}

/**
 * vm_guest_state() - the guest's state as the status shows it.
 * @vm: the VM.
 * @populated_pct: receives how much of RAM is populated, in percent.
 * @err: receives why initialisation failed ("" otherwise).
 * @errlen: size of @err.
 *
 * Return: "initializing" (a source populating RAM), "failed", "incoming"
 * (a destination waiting for its guest), "running", "paused" or
 * "migrated" (the guest now runs at the destination).
 */
const char *vm_guest_state(struct vm *vm, unsigned *populated_pct,
			   char *err, size_t errlen)
{
	struct guest *g = &vm->guest;
	int st = atomic_load(&vm->init.state);
	uint64_t done = atomic_load(&g->populated);
	struct ferry_stats ms;
	bool migrated, arrived, lost;

	*populated_pct = g->mem_size ? (unsigned)(done * 100 / g->mem_size) : 100;
	pthread_mutex_lock(&vm->mig.lock);
	snprintf(err, errlen, "%s", st == VM_INIT_FAILED ? vm->init.err :
		 vm->mig.lost[0] ? vm->mig.lost : "");
	migrated = vm->mig.migrated;
	arrived = vm->mig.arrived;
	lost = vm->mig.lost[0];
	/* A restore from a file populates RAM as it places or reads pages. */
	if (vm_restoring_file(vm)) {
		memset(&ms, 0, sizeof(ms));
		ms.struct_size = sizeof(ms);
		if (vm->mig.session)
			ferry_session_stats(vm->mig.session, &ms);
		else if (vm->mig.have_last)
			ms = vm->mig.last;
		if (vm->opts.lazy)
			*populated_pct = arrived ? 100 : ms.lazy_pages ?
					 (unsigned)(ms.lazy_placed * 100 / ms.lazy_pages) : 0;
		else
			*populated_pct = arrived ? 100 : ms.ram_bytes ?
					 (unsigned)(ms.pass_bytes * 100 / ms.ram_bytes) : 0;
	} else if (vm->opts.incoming && !arrived && vm_postcopy_live(vm, &ms) &&
		   ms.lazy_pages) {
		/* A postcopy destination's RAM fills as pages are placed. */
		*populated_pct = (unsigned)(ms.lazy_placed * 100 / ms.lazy_pages);
	}
	pthread_mutex_unlock(&vm->mig.lock);
	if (st == VM_INIT_FAILED || lost)
		return "failed";
	/* A destination receives while it populates. */
	if (st == VM_INIT_RUNNING && !vm->opts.incoming)
		return "initializing";
	if (guest_running(g))
		return "running";
	if (migrated)
		return "migrated";
	return vm->opts.incoming && !arrived ? "incoming" : "paused";
}

/* A destination's vCPUs start parked, which is quick, and it listens for
 * the migration before the API socket appears, so whoever waits for the
 * socket finds it ready. Receiving while the init thread populates RAM is
 * safe: population never changes what a page holds, and nothing else
 * writes a destination's RAM before its state is loaded. */
static int incoming_setup(struct vm *vm)
{
	int rc = guest_start(&vm->guest, true);

	if (rc) {
		fprintf(stderr, "ferry-vm: cannot start vCPUs: %s\n", strerror(-rc));
		return rc;
	}
	rc = incoming_start(vm);
	if (rc)
		fprintf(stderr, "ferry-vm: cannot start receiving: %s\n",
			strerror(-rc));
	return rc;
}

/* --- self test ---------------------------------------------------------- */

/* Latency of pause (until every vCPU parked) and of resume (until every
 * vCPU ticked again). */
static void self_test_pause(struct guest *g)
{
	enum { N = 200 };
	uint64_t sum[2] = { 0 }, max[2] = { 0 }, lat[2], t, r;
	struct timespec gap = { 0, 2000000 };
	double stall;
	unsigned i, k, v;

	for (i = 0; i < N; i++) {
		t = vm_now_ns();
		guest_pause(g);
		lat[0] = vm_now_ns() - t;
		t = vm_now_ns();
		guest_resume(g);
		guest_wait_first_ticks(g, 1000, &stall);
		for (lat[1] = 0, v = 0; v < g->nvcpus; v++) {
			r = atomic_load(&g->vcpus[v].first_tick_ns);
			if (r > t && r - t > lat[1])
				lat[1] = r - t;
		}
		for (k = 0; k < 2; k++) {
			sum[k] += lat[k];
			max[k] = lat[k] > max[k] ? lat[k] : max[k];
		}
		nanosleep(&gap, NULL);
	}
	for (k = 0; k < 2; k++)
		printf("%s: mean %.1f us, max %.1f us over %d\n",
		       k ? "resume" : "pause", (double)sum[k] / N / 1e3,
		       (double)max[k] / 1e3, N);
}

/* Pause/resume latency, then a save/load round trip in this process with
 * the full verification, then a short run to see the guest still agrees
 * with its memory. */
static int self_test(struct vm *vm)
{
	struct guest *g = &vm->guest;
	struct timespec run = { 0, 300000000 };
	struct ferry_buf *buf = ferry_buf_new();
	const void *sec;
	uint64_t t;
	size_t len = 0;
	int rc, v;

	/* Both ends of the round trip are this guest: the source's RAM
	 * cannot be hashed after the destination ran, so check in the
	 * pause. */
	if (vm->opts.verify)
		vm->opts.verify = VM_VERIFY_STRICT;
	nanosleep(&run, NULL);
	self_test_pause(g);
	guest_pause(g);
	t = vm_now_ns();
	rc = buf ? vm_state_save(vm, buf) : -ENOMEM;
	sec = ferry_buf_data(buf, &len);
	printf("save_state: %zu bytes in %.1f ms (rc %d)\n", len,
	       (double)(vm_now_ns() - t) / 1e6, rc);
	if (rc) {
		ferry_buf_free(buf);
		return 1;
	}
	rc = vm_state_load(vm, sec, len);
	ferry_buf_free(buf);
	guest_resume(g);
	nanosleep(&run, NULL);
	v = vm_verified(vm);
	printf("load_state: rc %d, digest_match %d, invariant_ok %d, pages %" PRIu64
	       ", verify %.1f ms, steps %" PRIu64 ", check_errors %" PRIu64
	       ", settled %d, verified %d\n",
	       rc, vm->mig.check.digest_match, vm->mig.check.invariant_ok,
	       vm->mig.check.pages_checked, vm->mig.check.verify_ms,
	       guest_steps(g), guest_check_errors(g), guest_settled(g), v);
	return rc || (vm->opts.verify && v != 1) || guest_check_errors(g) ? 1 : 0;
}

/* --- main --------------------------------------------------------------- */

/* FERRY_VM_FAULT=stall-pause:MS (tests only): the source stays paused
 * MS longer before its state is saved, so that a test can kill the
 * destination between the pause and "ready". */
static int cb_pause_stalled(void *opaque)
{
	struct vm *vm = opaque;
	struct timespec ts = { vm->fault_stall_pause_ms / 1000,
			       (long)(vm->fault_stall_pause_ms % 1000) * 1000000 };
	int rc = cb_pause(opaque);

	fprintf(stderr, "ferry-vm: fault: paused, stalling %u ms\n",
		vm->fault_stall_pause_ms);
	nanosleep(&ts, NULL);
	return rc;
}

static int vm_setup(struct vm *vm)
{
	char err[512];
	const char *lvl = getenv("FERRY_VM_LOG");
	const char *fault = getenv("FERRY_VM_FAULT");
	pthread_condattr_t ca;

	pthread_mutex_init(&vm->mig.lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->mig.cond, &ca);
	pthread_condattr_destroy(&ca);
	vm->mig.verified = -1;
	vm->mig.src_ram_match = -1;
	vm->log_level = lvl && *lvl ? atoi(lvl) : -1;
	trace_on = getenv("FERRY_VM_TRACE") && *getenv("FERRY_VM_TRACE") == '1';
	/* Every item of FERRY_VM_FAULT, or a refusal naming the bad one. */
	if (vm_fault_parse(vm, fault, err, sizeof(err))) {
		fprintf(stderr, "ferry-vm: %s\n", err);
		return 2;
	}
	vm->ops.struct_size = sizeof(vm->ops);
	vm->ops.pause = cb_pause;
	vm->ops.resume = cb_resume;
	vm->ops.save_state = cb_save_state;
	vm->ops.load_state = cb_load_state;
	vm->ops.get_dirty_bitmap = cb_dirty_bitmap;
	vm->ops.running_note = cb_running_note;
	vm->ops.errmsg = cb_errmsg;
	vm->ops.throttle = cb_throttle;
	if (vm->fault_stall_pause_ms)
		vm->ops.pause = cb_pause_stalled;
	vm->ops.release = cb_release;
	vm->ops.reacquire = cb_acquire;
	vm->ops.acquire = cb_acquire;
	vm->ops.save_fds = cb_save_fds;
	vm->ops.load_fds = cb_load_fds;
	return 0;
}

static void log_startup(struct vm *vm)
{
	const struct vm_opts *o = &vm->opts;

	fprintf(stderr,
		"ferry-vm: pid %d, %s, %" PRIu64 " MiB %s, %u vcpus, workload %s",
		(int)getpid(), o->incoming ? "destination" : "source",
		o->mem_size >> 20, vm_backend_name(o->backend), o->nvcpus,
		vm_workload_name(o->workload));
	if (vm->guest.dirty_rate > 0 && o->workload != VM_WL_IDLE)
		fprintf(stderr, " at %.0f MB/s", vm->guest.dirty_rate);
	if (o->incoming)
		fprintf(stderr, ", incoming %s", o->incoming);
	if (o->api_path)
		fprintf(stderr, ", api %s", o->api_path);
	fprintf(stderr, ", verify %s", vm_verify_mode_name(o->verify));
	if (o->tls.dir[0] || o->tls.psk[0]) {
		char tls[256];

		vm_tls_describe(&o->tls, tls, sizeof(tls));
		fprintf(stderr, ", TLS %s", tls);
	}
	fputc('\n', stderr);
}

/* The network device and the kv service, for a guest that may run kv:
 * a source that does, or a destination (the stream says what it runs). */
static int net_setup(struct vm *vm)
{
	char err[256] = "";
	int rc;

	if (vm->guest.workload != VM_WL_KV &&
	    (!vm->opts.incoming || vm->guest.mem_size < net_region_size() + (16ull << 20)))
		return 0;
	rc = net_create(vm, &vm->net, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "ferry-vm: %s\n", err);
		return rc;
	}
	vm->kv = kv_create(vm);
	if (!vm->kv) {
		fprintf(stderr, "ferry-vm: out of memory\n");
		return -ENOMEM;
	}
	vm->guest.serve = kv_serve;
	vm->guest.serve_opaque = vm->kv;
	return 0;
}

int main(int argc, char **argv)
{
	struct vm vm = { 0 };
	sigset_t sigs;
	int rc;

	rc = parse_args(argc, argv, &vm.opts);
	if (rc < 0 && vm.opts.incoming && !strncmp(vm.opts.incoming, "file:", 5))
		rc = vm_snapshot_options(&vm.opts, &vm.snap);
	if (rc >= 0)
		return rc;
	/* Signals are read from a signalfd by the API loop, so every thread
	 * started from here on must have them blocked. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (vm_setup(&vm))
		return 2;

	if (vm.opts.local)
		guest_ram_by_fd();
	rc = guest_init(&vm.guest, &vm.opts);
	if (rc) {
		fprintf(stderr, "ferry-vm: cannot create %" PRIu64 " MiB of guest RAM: %s\n",
			vm.opts.mem_size >> 20, strerror(-rc));
		goto out_guest;
	}
	rc = vm_state_init(&vm);
	if (rc) {
		fprintf(stderr, "ferry-vm: cannot create the devices: %s\n",
			strerror(-rc));
		goto out_guest;
	}
	rc = net_setup(&vm);
	if (rc)
		goto out_guest;
	if (vm.opts.self_test) {
		init_main(&vm);
		rc = atomic_load(&vm.init.state) == VM_INIT_DONE ? self_test(&vm) : 1;
		goto out_stop;
	}
	if (vm.opts.incoming && (rc = incoming_setup(&vm)))
		goto out_stop;
	/* The API answers at once, whatever the memory size: populating RAM
	 * and starting a source's vCPUs happen on the init thread, and the
	 * status says "initializing" until they are done. */
	rc = api_open(&vm);
	if (!rc)
		rc = init_start(&vm);
	if (!rc) {
		log_startup(&vm);
		rc = api_run(&vm);
	}
	if (atomic_load(&vm.init.state) == VM_INIT_FAILED &&
	    !atomic_load(&vm.init.abort))
		rc = 1;
out_stop:
	init_join(&vm);
	mig_shutdown(&vm);
	/* A guest stopped for good by a failed lazy restore may have vCPUs
	 * and verifier threads blocked on pages that never come: they can be
	 * neither joined nor unmapped under, so the process ends with them. */
	if (vm.mig.abandoned) {
		/* A run in postcopy goes on using the guest and the API
		 * until the process ends. */
		api_abandon(&vm);
		return 1;
	}
	if (vm.mig.kept || guest_is_stuck(&vm.guest)) {
		api_close(&vm);
		return 1;
	}
	guest_stop(&vm.guest);
	api_close(&vm);
out_guest:
	net_destroy(vm.net);
	kv_destroy(vm.kv);
	guest_fini(&vm.guest);
	vm_state_fini(&vm);
	json_object_put(vm.mig.report);
	json_object_put(vm.mig.last_failure);
	pthread_cond_destroy(&vm.mig.cond);
	pthread_mutex_destroy(&vm.mig.lock);
	return rc ? 1 : 0;
}
