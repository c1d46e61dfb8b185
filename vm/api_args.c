// SPDX-License-Identifier: MIT
/*
 * api_args.c - the arguments of ferry-vm's API commands (docs/api-socket.md):
 * each is checked for its type and range here, with one message per way of
 * missing it, before a command touches the VM. The numeric ranges are
 * migrate_args.h's, which the ferry command line checks its options with.
 */
#include <errno.h>
#include <stdio.h>

#include "migrate_args.h"
#include "vm.h"

/* An optional integer argument within its range (migrate_args.h); -1
 * when absent or null. Every way of missing the range gets one message. */
static int arg_int(json_object *args, enum vm_arg_id id, int64_t *out,
		   char *err, size_t errlen)
{
	const char *key = vm_arg_ranges[id].key;
	char range[96];
	json_object *v;
	int64_t n;

	*out = -1;
	if (!json_object_object_get_ex(args, key, &v) || !v)
		return 0;
	errno = 0;
	n = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;
	if (!json_object_is_type(v, json_type_int) || errno || !vm_arg_ok(id, n)) {
		snprintf(err, errlen, "'%s' must be %s", key,
			 vm_arg_range_text(id, range, sizeof(range)));
		return -1;
	}
	*out = n;
	return 0;
}

/**
 * api_arg_bool() - an optional boolean argument.
 * @args: the command's arguments (may be NULL).
 * @key: the member.
 * @out: receives 0 or 1, or -1 when absent or null.
 * @err: receives the reason on failure.
 * @errlen: size of @err.
 *
 * Return: 0, or -1 when it is not a boolean.
 */
int api_arg_bool(json_object *args, const char *key, int *out, char *err,
		 size_t errlen)
{
	json_object *v;

	*out = -1;
	if (!args || !json_object_object_get_ex(args, key, &v) || !v)
		return 0;
	if (!json_object_is_type(v, json_type_boolean)) {
		snprintf(err, errlen, "'%s' must be true or false", key);
		return -1;
	}
	*out = json_object_get_boolean(v);
	return 0;
}

/* An optional enumerated string argument; -1 when absent or null. */
static int arg_enum(json_object *args, const char *key,
		    const char *const *names, int n, int *out, char *err,
		    size_t errlen)
{
	json_object *v;
	int i;

	*out = -1;
	if (!json_object_object_get_ex(args, key, &v) || !v)
		return 0;
	for (i = 0; json_object_is_type(v, json_type_string) && i < n; i++) {
		if (!strcmp(json_object_get_string(v), names[i])) {
			*out = i;
			return 0;
		}
	}
	snprintf(err, errlen, "'%s' must be one of: %s", key, names[0]);
	for (i = 1; i < n; i++) {
		size_t used = strlen(err);

		snprintf(err + used, errlen - used, ", %s", names[i]);
	}
	return -1;
}

/**
 * api_arg_known() - refuse a member of @args that is not in @known.
 * @args: the command's arguments (may be NULL).
 * @known: the members the command takes.
 * @n: how many.
 * @err: receives the reason on failure.
 * @errlen: size of @err.
 *
 * Return: 0, or -1 naming the first unknown member.
 */
int api_arg_known(json_object *args, const char *const *known, size_t n,
		  char *err, size_t errlen)
{
	size_t i;

	if (!args)
		return 0;
	json_object_object_foreach(args, key, val) {
		(void)val;
		for (i = 0; i < n; i++) {
			if (!strcmp(key, known[i]))
				break;
		}
		if (i == n) {
			snprintf(err, errlen, "unknown argument '%.64s'", key);
			return -1;
		}
	}
	return 0;
}

/**
 * api_arg_uri() - a required URI argument: a non-empty string of fewer
 * than 4096 bytes without NUL.
 * @args: the command's arguments (may be NULL).
 * @key: the member ("uri").
 * @out: receives the string (borrowed from @args).
 * @err: receives the reason on failure.
 * @errlen: size of @err.
 *
 * Return: 0, or -1.
 */
int api_arg_uri(json_object *args, const char *key, const char **out,
		char *err, size_t errlen)
{
	json_object *uri;

	if (!args || !json_object_object_get_ex(args, key, &uri) ||
	    !json_object_is_type(uri, json_type_string) ||
	    !json_object_get_string_len(uri) ||
	    json_object_get_string_len(uri) >= 4096 ||
	    strlen(json_object_get_string(uri)) !=
		    (size_t)json_object_get_string_len(uri)) {
		snprintf(err, errlen, "'%s' (a string like tcp:HOST:PORT) is required",
			 key);
		return -1;
	}
	*out = json_object_get_string(uri);
	return 0;
}

/* The string arguments: record_stream and congestion_control. */
static int migrate_strings(json_object *args, struct vm_migrate_args *a,
			   char *err, size_t errlen)
{
	json_object *v;

	a->record_stream = NULL;
	if (json_object_object_get_ex(args, "record_stream", &v) && v) {
		if (!json_object_is_type(v, json_type_string) ||
		    !json_object_get_string_len(v) ||
		    json_object_get_string_len(v) >= 4096) {
			snprintf(err, errlen, "'record_stream' must be a file path");
			return -1;
		}
		a->record_stream = json_object_get_string(v);
	}
	a->congestion_control = NULL;
	if (json_object_object_get_ex(args, "congestion_control", &v) && v) {
		if (!json_object_is_type(v, json_type_string) ||
		    !json_object_get_string_len(v) ||
		    json_object_get_string_len(v) >
			    FERRY_CONGESTION_CONTROL_MAX) {
			snprintf(err, errlen, "'congestion_control' must be the name of a kernel algorithm (1 to %d characters), such as cubic",
				 FERRY_CONGESTION_CONTROL_MAX);
			return -1;
		}
		a->congestion_control = json_object_get_string(v);
	}
	return 0;
}

/* TLS for this migration: tls_creds (a directory), tls_psk (a file),
 * tls_peer (names, comma-separated), tls_priority, tls_engine (a name of
 * vm_tls_engines); checked as ferry-vm's --tls-* options are. */
static int migrate_tls(json_object *args, struct vm_migrate_args *a,
		       char *err, size_t errlen)
{
	static const char *const keys[] = { "tls_creds", "tls_psk", "tls_peer",
					    "tls_priority" };
	const char **out[] = { &a->tls_creds, &a->tls_psk, &a->tls_peer,
			       &a->tls_priority };
	struct vm_tls check = { 0 };

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_object *v;

		*out[i] = NULL;
		if (!json_object_object_get_ex(args, keys[i], &v) || !v)
			continue;
		if (!json_object_is_type(v, json_type_string)) {
			snprintf(err, errlen, "'%s' must be a string", keys[i]);
			return -1;
		}
		*out[i] = json_object_get_string(v);
		if (i != 2 &&
		    vm_tls_set(&check, keys[i] + 4, *out[i], err, errlen))
			return -1;
	}
	return arg_enum(args, "tls_engine", vm_tls_engines,
			FERRY_TLS_ENGINE_KTLS + 1, &a->tls_engine, err,
			errlen);
}

/* What only some destinations take: a snapshot file has no postcopy (no
 * page requests come back from a file), a stream no file options. */
static int migrate_combinations(struct vm_migrate_args *a, char *err,
				size_t errlen)
{
	bool file = !strncmp(a->uri, "file:", 5);

	if (a->postcopy_after_passes >= 0 && a->postcopy < 0)
		a->postcopy = FERRY_POSTCOPY_AFTER;
	if (a->postcopy_after_passes >= 0 && a->postcopy != FERRY_POSTCOPY_AFTER) {
		snprintf(err, errlen, "'postcopy_after_passes' goes with postcopy \"after\" (it says after how many passes to switch)");
		return -1;
	}
	if (file && (a->postcopy > FERRY_POSTCOPY_OFF ||
		     a->timeout_strategy == FERRY_TIMEOUT_POSTCOPY)) {
		snprintf(err, errlen, "'%s' applies to a migration to a destination: a snapshot file cannot ask for pages",
			 a->postcopy > FERRY_POSTCOPY_OFF ? "postcopy" :
							    "timeout_strategy");
		return -1;
	}
	/* Descriptors pass over UNIX sockets only; the library says the
	 * same, but the command can refuse before anything starts. */
	if (a->local > 0 && strncmp(a->uri, "unix:", 5)) {
		snprintf(err, errlen, "'local' passes the guest's memory by fd, over a UNIX socket: the uri must be unix:PATH (a destination on this host), not %.200s",
			 a->uri);
		return -1;
	}
	/* They shape how a snapshot file is written; a stream has none. */
	if (!file && (a->keep_running >= 0 || a->io_threads >= 0)) {
		snprintf(err, errlen, "'%s' applies to a snapshot (a file:PATH uri) only",
			 a->keep_running >= 0 ? "keep_running" : "io_threads");
		return -1;
	}
	return 0;
}

/**
 * api_migrate_args() - check and take the migrate command's arguments.
 * @args: the arguments object.
 * @a: receives them (strings borrowed from @args); -1 for numbers and
 *     choices not given.
 * @err: receives the reason on failure.
 * @errlen: size of @err.
 *
 * Return: 0, or -1.
 */
int api_migrate_args(json_object *args, struct vm_migrate_args *a, char *err,
		     size_t errlen)
{
	static const char *const strategies[] = { "cancel", "switchover",
						  "postcopy" };
	static const char *const modes[] = { "auto", "uffd", "bitmap" };
	static const char *const codecs[] = { "none", "lz4", "zstd" };
	static const char *const postcopy[] = { "off", "auto", "after" };
	static const char *const known[] = { "uri", "downtime_ms", "max_passes",
					     "max_precopy_ms", "timeout_strategy",
					     "dirty_mode", "connections", "compress",
					     "compress_level", "record_stream",
					     "window", "chunk_bytes", "max_bandwidth",
					     "auto_converge", "congestion_control",
					     "keep_running", "io_threads", "postcopy",
					     "postcopy_after_passes", "max_pause_ms",
					     "stall_timeout_ms",
					     "local", "tls_creds", "tls_psk", "tls_peer",
					     "tls_priority", "tls_engine" };

	static_assert(sizeof(strategies) / sizeof(strategies[0]) ==
			      FERRY_TIMEOUT_POSTCOPY + 1,
		      "every timeout strategy has a name");
	static_assert(sizeof(postcopy) / sizeof(postcopy[0]) ==
			      FERRY_POSTCOPY_AFTER + 1,
		      "every postcopy mode has a name");
	if (api_arg_known(args, known, sizeof(known) / sizeof(known[0]), err,
			  errlen) ||
	    api_arg_uri(args, "uri", &a->uri, err, errlen) ||
	    migrate_strings(args, a, err, errlen) ||
	    migrate_tls(args, a, err, errlen))
		return -1;
	if (arg_int(args, VM_ARG_DOWNTIME, &a->downtime_ms, err, errlen) ||
	    arg_int(args, VM_ARG_MAX_PASSES, &a->max_passes, err, errlen) ||
	    arg_int(args, VM_ARG_MAX_PRECOPY, &a->max_precopy_ms, err, errlen) ||
	    arg_int(args, VM_ARG_MAX_PAUSE, &a->max_pause_ms, err, errlen) ||
	    arg_int(args, VM_ARG_STALL_TIMEOUT, &a->stall_timeout_ms, err,
		    errlen) ||
	    arg_enum(args, "timeout_strategy", strategies, 3, &a->timeout_strategy, err, errlen) ||
	    arg_enum(args, "dirty_mode", modes, 3, &a->dirty_mode, err, errlen) ||
	    arg_int(args, VM_ARG_CONNECTIONS, &a->connections, err, errlen) ||
	    arg_enum(args, "compress", codecs, 3, &a->compress, err, errlen) ||
	    arg_int(args, VM_ARG_COMPRESS_LEVEL, &a->compress_level, err, errlen) ||
	    arg_int(args, VM_ARG_WINDOW, &a->window, err, errlen) ||
	    arg_int(args, VM_ARG_CHUNK, &a->chunk_bytes, err, errlen) ||
	    arg_int(args, VM_ARG_MAX_BANDWIDTH, &a->max_bandwidth, err, errlen) ||
	    api_arg_bool(args, "auto_converge", &a->auto_converge, err, errlen) ||
	    api_arg_bool(args, "keep_running", &a->keep_running, err, errlen) ||
	    arg_int(args, VM_ARG_IO_THREADS, &a->io_threads, err, errlen) ||
	    arg_enum(args, "postcopy", postcopy, 3, &a->postcopy, err, errlen) ||
	    arg_int(args, VM_ARG_POSTCOPY_AFTER, &a->postcopy_after_passes, err,
		    errlen) ||
	    api_arg_bool(args, "local", &a->local, err, errlen))
		return -1;
	return migrate_combinations(a, err, errlen);
}
