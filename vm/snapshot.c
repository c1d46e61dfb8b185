// SPDX-License-Identifier: MIT
/*
 * snapshot.c - restoring a guest from a snapshot file alone. A mapped
 * snapshot (docs/stream-format.md, "Snapshot files") describes itself:
 * ferry_snapshot_describe() gives its memory regions and its device state,
 * whose machine device says how many vCPUs the guest has, what it runs,
 * how fast it writes and what its RAM was made of. `ferry-vm --incoming
 * file:PATH` takes all of it from the file, so it needs no other option;
 * an option that says otherwise is refused before anything starts, with
 * both values named, because a guest created in another shape could only
 * fail later, mid-restore. The backing is the exception: it is how this
 * host provides the memory, which the guest never sees, so an explicit
 * --memory-backend picks another one (with a note).
 *
 * A stream-format snapshot, which older ferry versions wrote, has no such
 * description: it restores as before, with the options given.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "vm.h"

/* The machine device of a snapshot's state, as far as creating the guest
 * needs it. */
struct snap_machine {
	char workload[16];
	double dirty_rate; /* MB/s; < 0: the workload's default */
	uint64_t memory;
	uint64_t vcpus;
	char backing[16];  /* "" when the file does not say */
};

/**
 * vm_restoring_file() - whether this VM restores a snapshot file.
 * @vm: the VM.
 *
 * Return: true for --incoming file:PATH.
 */
bool vm_restoring_file(const struct vm *vm)
{
	return vm->opts.incoming && !strncmp(vm->opts.incoming, "file:", 5);
}

/* "128 MiB", "1 GiB", or bytes when it is not a whole number of MiB. */
static const char *size_text(uint64_t v, char *buf, size_t len)
{
	if (v && !(v % (1ull << 30)))
		snprintf(buf, len, "%" PRIu64 " GiB", v >> 30);
	else if (v && !(v % (1ull << 20)))
		snprintf(buf, len, "%" PRIu64 " MiB", v >> 20);
	else
		snprintf(buf, len, "%" PRIu64 " bytes", v);
	return buf;
}

static bool get_u64(json_object *o, const char *key, uint64_t *out)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_int))
		return false;
	*out = json_object_get_uint64(v);
	return true;
}

static void get_str(json_object *o, const char *key, char *out, size_t len)
{
	json_object *v;

	out[0] = '\0';
	if (json_object_object_get_ex(o, key, &v) &&
	    json_object_is_type(v, json_type_string))
		snprintf(out, len, "%s", json_object_get_string(v));
}

/* The state of the device instance "machine" in a dump of the state
 * section, borrowed from @root, or NULL. */
static json_object *find_machine(json_object *root)
{
	json_object *devs, *d, *v;
	size_t i, n;

	if (!json_object_object_get_ex(root, "devices", &devs) ||
	    !json_object_is_type(devs, json_type_array))
		return NULL;
	n = json_object_array_length(devs);
	for (i = 0; i < n; i++) {
		d = json_object_array_get_idx(devs, i);
		if (json_object_object_get_ex(d, "instance", &v) &&
		    json_object_is_type(v, json_type_string) &&
		    !strcmp(json_object_get_string(v), "machine") &&
		    json_object_object_get_ex(d, "state", &v) &&
		    json_object_is_type(v, json_type_object))
			return v;
	}
	return NULL;
}

/* Decode the machine device from a state section; 0 or -EBADMSG with
 * @err set. */
static int machine_decode(const void *state, size_t len, struct snap_machine *m,
			  char *err, size_t errlen)
{
	char *json = NULL, why[256] = "";
	json_object *root = NULL, *mj;
	uint64_t rate;
	int rc;

	rc = ferry_state_dump_json(state, len, &json, why, sizeof(why));
	if (rc) {
		snprintf(err, errlen, "its device state does not decode: %s",
			 why[0] ? why : ferry_strerror(rc));
		return -EBADMSG;
	}
	root = json_tokener_parse(json);
	free(json);
	mj = root ? find_machine(root) : NULL;
	rc = -EBADMSG;
	if (!mj) {
		snprintf(err, errlen, "its device state has no machine device");
		goto out;
	}
	get_str(mj, "workload", m->workload, sizeof(m->workload));
	get_str(mj, "backing", m->backing, sizeof(m->backing));
	m->dirty_rate = get_u64(mj, "dirty_rate", &rate) && rate != UINT64_MAX ?
				(double)rate / 1e6 : -1;
	if (!get_u64(mj, "memory", &m->memory) || !get_u64(mj, "vcpus", &m->vcpus)) {
		snprintf(err, errlen, "its machine device gives no memory size "
			 "or vCPU count");
		goto out;
	}
	rc = 0;
out:
	json_object_put(root);
	return rc;
}

/* Whether the file describes a guest this ferry-vm can create; 0 or an
 * exit code after saying why not. */
static int machine_check(const char *path, const struct ferry_snapshot_info *info,
			 const struct snap_machine *m, enum vm_workload *w,
			 enum vm_backend *b)
{
	char a[32], c[32];
	const char *why = NULL;

	if (info->nregions != 1 || info->regions[0].gpa != 0)
		why = "ferry-vm guests have one memory region at address 0";
	else if (info->regions[0].size != m->memory)
		why = "its machine device and its memory region disagree on the size";
	else if (m->memory < (1u << 20) || m->memory > VM_MAX_MEMORY ||
		 m->memory % VM_PAGE_SIZE)
		why = "its memory size is not one ferry-vm can create";
	else if (m->vcpus < 1 || m->vcpus > VM_MAX_VCPUS ||
		 m->memory / VM_PAGE_SIZE < m->vcpus)
		why = "its vCPU count is not one ferry-vm can create";
	else if (vm_workload_parse(m->workload, w))
		why = "its guest runs a workload this ferry-vm does not know";
	else if (m->backing[0] && vm_backend_parse(m->backing, b))
		why = "its RAM has a backing this ferry-vm does not know";
	if (!why)
		return 0;
	fprintf(stderr, "ferry-vm: snapshot %s (%s, %" PRIu64 " vCPUs, workload "
		"'%s', %u regions, %s in the first): %s\n", path,
		size_text(m->memory, a, sizeof(a)), m->vcpus, m->workload,
		info->nregions, size_text(info->regions[0].size, c, sizeof(c)),
		why);
	return 1;
}

/* An explicit option that says otherwise than the file: refused, both
 * values named. Returns 0 or 2. */
static int options_match(struct vm_opts *o, const struct snap_machine *m,
			 enum vm_workload w, double rate)
{
	char a[32];

	if (o->memory_given && o->mem_size != m->memory) {
		fprintf(stderr, "ferry-vm: --memory %s, but the snapshot holds %s "
			"of RAM\n", o->memory_arg, size_text(m->memory, a, sizeof(a)));
		return 2;
	}
	if (o->vcpus_given && o->nvcpus != m->vcpus) {
		fprintf(stderr, "ferry-vm: --vcpus %u, but the snapshot's guest "
			"has %" PRIu64 " vCPUs\n", o->nvcpus, m->vcpus);
		return 2;
	}
	if (o->workload_given && o->workload != w) {
		fprintf(stderr, "ferry-vm: --workload %s, but the snapshot's guest "
			"runs %s\n", vm_workload_name(o->workload), m->workload);
		return 2;
	}
	if (o->dirty_rate >= 0 && fabs(o->dirty_rate - rate) > 1e-6) {
		fprintf(stderr, "ferry-vm: --dirty-rate %g, but the snapshot's "
			"guest writes %g MB/s\n", o->dirty_rate, rate);
		return 2;
	}
	return 0;
}

/* Take the guest's shape from a described snapshot. */
static int adopt(struct vm_opts *o, const char *path,
		 const struct ferry_snapshot_info *info,
		 const struct snap_machine *m)
{
	enum vm_workload w = VM_WL_AB;
	enum vm_backend b = VM_MEM_ANON;
	double rate;
	int rc;

	rc = machine_check(path, info, m, &w, &b);
	if (rc)
		return rc;
	rate = m->dirty_rate >= 0 ? m->dirty_rate : guest_default_rate(w);
	rc = options_match(o, m, w, rate);
	if (rc)
		return rc;
	if (o->backend_given && o->backend != b)
		fprintf(stderr, "ferry-vm: note: guest RAM is %s (--memory-backend), "
			"the snapshot's was %s\n", vm_backend_name(o->backend),
			vm_backend_name(b));
	else
		o->backend = b;
	o->mem_size = m->memory;
	o->nvcpus = (unsigned)m->vcpus;
	o->workload = w;
	o->dirty_rate = rate;
	return 0;
}

/* Whether @path starts with a ferry stream's magic (an older ferry's
 * stop-and-copy snapshot). */
static bool is_stream_file(const char *path)
{
	char m[8];
	FILE *f = fopen(path, "rbe");
	bool yes = f && fread(m, 1, sizeof(m), f) == sizeof(m) &&
		   !memcmp(m, "FERRYMIG", sizeof(m));

	if (f)
		fclose(f);
	return yes;
}

/**
 * vm_snapshot_options() - for --incoming file:PATH, set the guest's memory
 * size, vCPUs, workload, dirty rate and backing from the snapshot file,
 * refusing options that contradict it. Before the guest is created.
 * @o: the parsed options.
 * @snap: receives what the file says (mapped false for a stream file).
 *
 * Return: -1 to go on, else the exit code (the reason on stderr).
 */
int vm_snapshot_options(struct vm_opts *o, struct vm_snap *snap)
{
	struct ferry_snapshot_info *info = calloc(1, sizeof(*info));
	struct snap_machine m = { 0 };
	const char *path = o->incoming + 5;
	char err[512] = "";
	void *state = NULL;
	size_t len = 0;
	int rc;

	memset(snap, 0, sizeof(*snap));
	if (!info) {
		fprintf(stderr, "ferry-vm: %s\n", strerror(ENOMEM));
		return 1;
	}
	rc = ferry_snapshot_describe(path, info, &state, &len, err, sizeof(err));
	/* Only a stream file restores without a description; a damaged or
	 * foreign one is refused now rather than started as a stream. */
	if (rc == -EBADMSG && is_stream_file(path)) {
		free(info);
		if (o->lazy) {
			fprintf(stderr, "ferry-vm: --lazy restores a mapped snapshot "
				"file: %s\n", err[0] ? err : path);
			return 2;
		}
		fprintf(stderr, "ferry-vm: note: %s; restoring it as a stream, "
			"with --memory, --vcpus and --memory-backend as given "
			"(they must be the source's)\n", err[0] ? err : path);
		return -1;
	}
	if (rc) {
		free(info);
		fprintf(stderr, "ferry-vm: cannot restore %s\n", err[0] ? err : path);
		return 1;
	}
	rc = machine_decode(state, len, &m, err, sizeof(err));
	free(state);
	if (rc) {
		free(info);
		fprintf(stderr, "ferry-vm: cannot restore %s: %s\n", path, err);
		return 1;
	}
	rc = adopt(o, path, info, &m);
	if (!rc) {
		snap->mapped = true;
		snap->image_digest = info->image_digest;
		snap->file_bytes = info->file_bytes;
		snap->passes = info->passes;
	}
	free(info);
	return rc ? rc : -1;
}
