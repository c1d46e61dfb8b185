// SPDX-License-Identifier: MIT
/*
 * inspect.c - the offline stream tools of the ferry command line:
 *
 * - ferry inspect FILE|-: decode (and with --check, validate) a stream: a
 *   recording of a migration's main connection or a snapshot file. The
 *   decoding is libferry's (ferry_inspect_fd); this file only prints.
 * - ferry schema: the device-state schemas ferry-vm uses, as JSON Schema.
 *   They are ferry-vm's, so ferry asks it (ferry-vm --print-schemas).
 */
#include "cli.h"

#include "ferry.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

extern char **environ;

const char cli_inspect_usage[] =
	"Usage: ferry inspect FILE|- [--check] [--json] [--records]\n"
	"\n"
	"Decode a ferry stream: a recording of a migration's main connection\n"
	"(ferry migrate --record-stream FILE) or a snapshot file (a migration to\n"
	"file:PATH). '-' reads standard input. Shows the stream header, then\n"
	"every record with its offset, type, flags, seq and length and what its\n"
	"body says; memory records are summarised per pass, the device state is\n"
	"decoded field by field.\n"
	"\n"
	"A snapshot file in the mapped layout (magic FERRYSNP) is read by offset\n"
	"(from a file, not a pipe): shows its superblock (regions, pages,\n"
	"where the page table, data map and state are, passes, software, when it\n"
	"was written), one line per region, the device state and a summary.\n"
	"Stream-format snapshot files of older ferry versions are decoded as\n"
	"streams.\n"
	"\n"
	"Options:\n"
	"  --check      validate everything (framing, checksums, record order,\n"
	"               memory ranges and encodings, pass counts, the state) and\n"
	"               stop at the first problem, naming its offset; for a\n"
	"               mapped snapshot every page against the page table, the\n"
	"               table, map and state hashes, the data-page counts\n"
	"  --json       one JSON object per line and item (header, record, pass,\n"
	"               region, summary, error) instead of text\n"
	"  --records    list every memory record too\n"
	"  -h, --help   show this help\n"
	"\n"
	"Without --check a problem is shown beside its record and decoding goes on\n"
	"as far as the stream allows.\n"
	"Exit status: 0 decoded (with --check: valid), 1 a problem was found,\n"
	"2 usage error, 3 FILE cannot be opened.\n";

const char cli_schema_usage[] =
	"Usage: ferry schema [--json | --pretty]\n"
	"\n"
	"Show the device-state schemas of ferry-vm's devices: each device type\n"
	"with its version and fields (type, must-understand or skippable,\n"
	"default). The schemas come from ferry-vm itself (--print-schemas),\n"
	"found through $FERRY_VM, next to this program, or in PATH.\n"
	"\n"
	"Options:\n"
	"  --json       print them as JSON Schema (draft 2020-12), one object\n"
	"               keyed by device type, on one line\n"
	"  --pretty     the same, indented\n"
	"  -h, --help   show this help\n"
	"\n"
	"Exit status: 0 ok, 1 ferry-vm failed, 2 usage error.\n";

/* ---- small helpers ---- */

static json_object *get(json_object *o, const char *key)
{
	json_object *v = NULL;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

static uint64_t get_u64(json_object *o, const char *key)
{
	json_object *v = get(o, key);

	return v ? (uint64_t)json_object_get_uint64(v) : 0;
}

static const char *get_s(json_object *o, const char *key)
{
	json_object *v = get(o, key);

	return v && json_object_is_type(v, json_type_string) ?
		       json_object_get_string(v) : "";
}

static const char *bytes(uint64_t n, char *buf, size_t len)
{
	cli_format_bytes((double)n, buf, len);
	return buf;
}

/* Print @o pretty, each line indented by @indent spaces. */
static void print_indented(json_object *o, int indent)
{
	const char *s = json_object_to_json_string_ext(o,
		JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
		JSON_C_TO_STRING_NOSLASHESCAPE);
	const char *nl;

	for (; *s; s = nl + 1) {
		nl = strchrnul(s, '\n');
		printf("%*s%.*s\n", indent, "", (int)(nl - s), s);
		if (!*nl)
			break;
	}
}

/* ---- inspect: text ---- */

struct inspect_opts {
	bool check, json, records;
	uint64_t hidden; /* memory records not listed */
};

static void text_hello(json_object *b)
{
	json_object *caps = get(b, "capabilities");
	size_t n = caps ? json_object_array_length(caps) : 0;

	printf("versions %" PRIu64 "..%" PRIu64 ", capabilities ",
	       get_u64(b, "version_min"), get_u64(b, "version_max"));
	for (size_t i = 0; i < n; i++)
		printf("%s%s", i ? "," : "",
		       json_object_get_string(json_object_array_get_idx(caps, i)));
	printf("%s; software \"%s\", boot id %s\n", n ? "" : "none",
	       get_s(b, "software"), *get_s(b, "boot_id") ? get_s(b, "boot_id") : "-");
}

static void text_config(json_object *b)
{
	json_object *regs = get(b, "regions");
	size_t n = regs ? json_object_array_length(regs) : 0;
	char sz[32];

	printf("page size %" PRIu64 ", %zu region%s\n", get_u64(b, "page_size"),
	       n, n == 1 ? "" : "s");
	for (size_t i = 0; i < n; i++) {
		json_object *r = json_object_array_get_idx(regs, i);

		printf("%48sregion %" PRIu64 " %s: gpa 0x%" PRIx64 ", %s\n", "",
		       get_u64(r, "index"), get_s(r, "name"), get_u64(r, "gpa"),
		       bytes(get_u64(r, "size"), sz, sizeof(sz)));
	}
}

static void text_memory(json_object *b)
{
	char pl[32];

	printf("region %" PRIu64 "%s%s [0x%" PRIx64 ", +0x%" PRIx64 "), %" PRIu64
	       " pages, %" PRIu64 " zero, %s, payload %s\n",
	       get_u64(b, "region"), *get_s(b, "name") ? " " : "",
	       get_s(b, "name"), get_u64(b, "offset"), get_u64(b, "length"),
	       get_u64(b, "pages"), get_u64(b, "zero_pages"), get_s(b, "codec"),
	       bytes(get_u64(b, "payload"), pl, sizeof(pl)));
}

static void text_state(json_object *b)
{
	json_object *sec = get(b, "section");
	json_object *devs = get(sec, "devices"), *types = get(sec, "types");

	if (!sec) {
		printf("%" PRIu64 " bytes, not decodable: %s\n",
		       get_u64(b, "bytes"), get_s(b, "error"));
		return;
	}
	printf("%" PRIu64 " bytes: %zu device types, %zu devices\n",
	       get_u64(b, "bytes"),
	       types ? json_object_array_length(types) : 0,
	       devs ? json_object_array_length(devs) : 0);
	print_indented(sec, 12);
}

/* MEMORY_FDS: the files a local migration passed (not in the capture:
 * only their description is). */
static void text_memory_fds(json_object *b)
{
	json_object *regs = get(b, "regions");
	size_t n = regs ? json_object_array_length(regs) : 0;
	char sz[32];

	printf("%zu file%s passed (SCM_RIGHTS, not in the capture)\n", n,
	       n == 1 ? "" : "s");
	for (size_t i = 0; i < n; i++) {
		json_object *r = json_object_array_get_idx(regs, i);

		printf("%48sregion %" PRIu64 ": %s at offset %" PRIu64
		       " of its file, %" PRIu64 "-byte pages\n", "",
		       get_u64(r, "index"),
		       bytes(get_u64(r, "size"), sz, sizeof(sz)),
		       get_u64(r, "fd_offset"), get_u64(r, "page_size"));
	}
}

/* The decoded body of a record, after its offset, name and framing. */
static void text_body(const struct ferry_inspect_item *it, json_object *b)
{
	char sz[32];

	if (!strcmp(it->name, "HELLO"))
		return text_hello(b);
	if (!strcmp(it->name, "CONFIG"))
		return text_config(b);
	if (!strcmp(it->name, "MEMORY"))
		return text_memory(b);
	if (!strcmp(it->name, "STATE"))
		return text_state(b);
	if (!strcmp(it->name, "MEMORY_FDS"))
		return text_memory_fds(b);
	if (!strcmp(it->name, "PASS_BEGIN")) {
		printf("pass %" PRIu64 "%s, planned %s\n", get_u64(b, "pass"),
		       json_object_get_boolean(get(b, "final")) ? " (final)" : "",
		       bytes(get_u64(b, "planned"), sz, sizeof(sz)));
		return;
	}
	if (!strcmp(it->name, "PASS_END")) {
		printf("pass %" PRIu64 ": %" PRIu64 " records, %s\n",
		       get_u64(b, "pass"), get_u64(b, "records"),
		       bytes(get_u64(b, "bytes"), sz, sizeof(sz)));
		return;
	}
	if (!strcmp(it->name, "ABORT") || !strcmp(it->name, "ERROR")) {
		printf("code %s (%s): %s\n", json_object_get_string(get(b, "code")),
		       get_s(b, "error"), get_s(b, "message"));
		return;
	}
	if (!strcmp(it->name, "INDEX")) {
		printf("%" PRIu64 " memory records, STATE at offset %" PRIu64 "\n",
		       get_u64(b, "entries"), get_u64(b, "state_offset"));
		return;
	}
	if (!strcmp(it->name, "FOOTER")) {
		printf("INDEX at offset %" PRIu64 ", %" PRIu64 " bytes\n",
		       get_u64(b, "index_offset"), get_u64(b, "index_size"));
		return;
	}
	if (!strcmp(it->name, "JOIN")) {
		printf("session %" PRIu64 ", connection %" PRIu64 " of %" PRIu64 "\n",
		       get_u64(b, "session_id"), get_u64(b, "index"),
		       get_u64(b, "channels"));
		return;
	}
	if (get(b, "skipped"))
		printf("optional record 0x%08x, %u bytes, skipped\n", it->type,
		       it->length);
	else if (json_object_object_length(b))
		printf("%s\n", json_object_to_json_string_ext(b,
			       JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE));
	else
		printf("\n");
}

static void text_pass(json_object *p)
{
	json_object *regs = get(p, "regions");
	size_t n = regs ? json_object_array_length(regs) : 0;
	char a[32], b[32], c[32];

	printf("%10s  pass %" PRIu64 "%s%s: %" PRIu64 " memory records covering %s"
	       " (%" PRIu64 " pages, %" PRIu64 " zero), payload %s, %" PRIu64
	       " compressed (%s)\n", "",
	       get_u64(p, "pass"),
	       json_object_get_boolean(get(p, "final")) ? " (final)" : "",
	       json_object_get_boolean(get(p, "ended")) ? "" : " (not ended)",
	       get_u64(p, "records"), bytes(get_u64(p, "bytes"), a, sizeof(a)),
	       get_u64(p, "pages"), get_u64(p, "zero_pages"),
	       bytes(get_u64(p, "payload_bytes"), b, sizeof(b)),
	       get_u64(p, "compressed_records"),
	       bytes(get_u64(p, "compressed_bytes"), c, sizeof(c)));
	for (size_t i = 0; i < n; i++) {
		json_object *r = json_object_array_get_idx(regs, i);
		const char *name = get_s(r, "name");

		printf("%14sregion %" PRIu64 "%s%s: %" PRIu64 " records, %s, "
		       "first 0x%" PRIx64 ", last 0x%" PRIx64 ", end 0x%" PRIx64 "\n",
		       "", get_u64(r, "region"), *name ? " " : "", name,
		       get_u64(r, "records"), bytes(get_u64(r, "bytes"), a, sizeof(a)),
		       get_u64(r, "first"), get_u64(r, "last"), get_u64(r, "end"));
	}
}

/* The superblock of a mapped snapshot file. */
static void text_snapshot_header(json_object *b)
{
	char a[32], c[32];

	printf("snapshot file (mapped layout): format version %" PRIu64
	       ", %" PRIu64 " region%s, %" PRIu64 " pages of %" PRIu64
	       " bytes (%" PRIu64 " with data), %s\n",
	       get_u64(b, "format_version"), get_u64(b, "regions"),
	       get_u64(b, "regions") == 1 ? "" : "s", get_u64(b, "pages"),
	       get_u64(b, "page_size"), get_u64(b, "data_pages"),
	       bytes(get_u64(b, "file_bytes"), a, sizeof(a)));
	printf("  written by \"%s\" at %s in %" PRIu64 " memory pass%s; "
	       "image digest %s\n", get_s(b, "software"), get_s(b, "created"),
	       get_u64(b, "passes"), get_u64(b, "passes") == 1 ? "" : "es",
	       get_s(b, "table_hash"));
	printf("  page table at %" PRIu64 ", data map at %" PRIu64
	       ", state at %" PRIu64 " (%s)\n", get_u64(b, "table_offset"),
	       get_u64(b, "map_offset"), get_u64(b, "state_offset"),
	       bytes(get_u64(b, "state_bytes"), c, sizeof(c)));
	printf("%10s  %s\n", "offset", "part");
}

static void text_region(json_object *b)
{
	char sz[32];

	printf("region %" PRIu64 " %s: gpa 0x%" PRIx64 ", %s, %" PRIu64
	       " pages from global page %" PRIu64 ": %" PRIu64 " data, %" PRIu64
	       " zero%s\n", get_u64(b, "index"), get_s(b, "name"),
	       get_u64(b, "gpa"), bytes(get_u64(b, "size"), sz, sizeof(sz)),
	       get_u64(b, "pages"), get_u64(b, "first_page"),
	       get_u64(b, "data_pages"), get_u64(b, "zero_pages"),
	       json_object_get_boolean(get(b, "checked")) ?
		       ", every page checked" : "");
}

static void text_item(const struct ferry_inspect_item *it, json_object *b,
		      struct inspect_opts *o)
{
	switch (it->what) {
	case FERRY_INSPECT_HEADER:
		if (!strcmp(get_s(b, "magic"), "FERRYSNP")) {
			text_snapshot_header(b);
			break;
		}
		printf("stream header: %s, format version %" PRIu64 ", flags %" PRIu64 "\n",
		       get_s(b, "magic"), get_u64(b, "format_version"),
		       get_u64(b, "flags"));
		printf("%10s  %-11s %5s %6s %9s\n", "offset", "record", "flags",
		       "seq", "length");
		if (!o->records)
			printf("%10s  (memory records are summarised per pass; "
			       "--records lists them)\n", "");
		break;
	case FERRY_INSPECT_RECORD:
		printf("%10" PRIu64 "  %-11s %5s %6u %9u%s", it->offset, it->name,
		       it->flags & 1 ? "head" : "-", it->seq, it->length,
		       json_object_object_length(b) ? "  " : "");
		text_body(it, b);
		break;
	case FERRY_INSPECT_PASS:
		text_pass(b);
		break;
	case FERRY_INSPECT_REGION:
		printf("%10" PRIu64 "  ", it->offset);
		text_region(b);
		break;
	case FERRY_INSPECT_SUMMARY:
		break;
	}
	if (it->problem)
		printf("%10s  ! %s\n", "", it->problem);
}

/* ---- inspect: driving the library ---- */

static void json_item(const struct ferry_inspect_item *it, json_object *b)
{
	static const char *const what[] = { "?", "header", "record", "pass",
					    "summary", "region" };
	static_assert(sizeof(what) / sizeof(what[0]) ==
			      FERRY_INSPECT_REGION + 1,
		      "a name for every kind of item");
	json_object *o = json_object_new_object();

	json_object_object_add(o, "what", json_object_new_string(what[it->what]));
	json_object_object_add(o, "offset", json_object_new_uint64(it->offset));
	if (it->what == FERRY_INSPECT_RECORD) {
		json_object_object_add(o, "type", json_object_new_string(it->name));
		json_object_object_add(o, "type_id", json_object_new_uint64(it->type));
		json_object_object_add(o, "flags", json_object_new_uint64(it->flags));
		json_object_object_add(o, "seq", json_object_new_uint64(it->seq));
		json_object_object_add(o, "length", json_object_new_uint64(it->length));
	}
	json_object_object_add(o, it->what == FERRY_INSPECT_RECORD ? "body" : "data",
			       json_object_get(b));
	json_object_object_add(o, "problem", it->problem ?
			       json_object_new_string(it->problem) : NULL);
	cli_print_json(o);
	json_object_put(o);
}

static int on_item(void *opaque, const struct ferry_inspect_item *it)
{
	struct inspect_opts *o = opaque;
	json_object *b;

	if (it->what == FERRY_INSPECT_RECORD && !strcmp(it->name, "MEMORY") &&
	    !o->records && !it->problem) {
		o->hidden++;
		return 0;
	}
	b = json_tokener_parse(it->json);
	if (!b)
		return -EBADMSG; /* the library's JSON is always valid */
	if (o->json)
		json_item(it, b);
	else if (it->what != FERRY_INSPECT_SUMMARY)
		text_item(it, b, o);
	if (it->what == FERRY_INSPECT_SUMMARY && !o->json &&
	    !strcmp(get_s(b, "format"), "mapped")) {
		char sz[32], mem[32];

		printf("%s: snapshot of %" PRIu64 " region%s, %s of memory "
		       "(%" PRIu64 " data pages, %" PRIu64 " zero), state %" PRIu64
		       " bytes, file %s, image digest %s%s\n",
		       o->check ? "ok" : "end", get_u64(b, "regions"),
		       get_u64(b, "regions") == 1 ? "" : "s",
		       bytes(get_u64(b, "memory_bytes"), mem, sizeof(mem)),
		       get_u64(b, "data_pages"), get_u64(b, "zero_pages"),
		       get_u64(b, "state_bytes"),
		       bytes(get_u64(b, "file_bytes"), sz, sizeof(sz)),
		       get_s(b, "image_digest"),
		       json_object_get_boolean(get(b, "pages_checked")) ?
			       ", every page checked" :
			       " (pages not checked: --check reads them)");
	} else if (it->what == FERRY_INSPECT_SUMMARY && !o->json) {
		char sz[32], mem[32];

		printf("%s: %" PRIu64 " records, %s, %" PRIu64 " pass%s with %" PRIu64
		       " memory records covering %s, state %" PRIu64 " bytes, "
		       "%" PRIu64 " optional records skipped, ends in state %s%s\n",
		       o->check ? "ok" : "end", get_u64(b, "records"),
		       bytes(get_u64(b, "stream_bytes"), sz, sizeof(sz)),
		       get_u64(b, "passes"), get_u64(b, "passes") == 1 ? "" : "es",
		       get_u64(b, "memory_records"),
		       bytes(get_u64(b, "memory_bytes"), mem, sizeof(mem)),
		       get_u64(b, "state_bytes"), get_u64(b, "skipped"),
		       get_s(b, "final_state"),
		       json_object_get_boolean(get(b, "complete")) ? "" :
		       " (incomplete)");
	}
	json_object_put(b);
	fflush(stdout);
	return 0;
}

static int inspect_options(int argc, char **argv, struct inspect_opts *o)
{
	static const struct option opts[] = {
		{ "check", no_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "records", no_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'c': o->check = true; break;
		case 'j': o->json = true; break;
		case 'r': o->records = true; break;
		case 'h':
			fputs(cli_inspect_usage, stdout);
			return -1;
		default:
			fprintf(stderr, "ferry inspect: %s '%s'\nTry 'ferry inspect --help'.\n",
				c == ':' ? "option needs a value:" : "unknown option",
				argv[optind - 1]);
			return CLI_EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		fprintf(stderr, "ferry inspect: expected FILE or -\n"
				"Try 'ferry inspect --help'.\n");
		return CLI_EXIT_USAGE;
	}
	return 0;
}

/**
 * cmd_inspect() - `ferry inspect`: decode and check a stream.
 * @argc: arguments after "ferry".
 * @argv: them.
 *
 * Return: the exit status.
 */
int cmd_inspect(int argc, char **argv)
{
	struct inspect_opts o = { 0 };
	const char *path;
	char err[700];
	uint64_t at = 0;
	int fd, rc;

	rc = inspect_options(argc, argv, &o);
	if (rc)
		return rc < 0 ? CLI_EXIT_OK : rc;
	path = argv[optind];
	fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
	if (fd < 0) {
		fprintf(stderr, "ferry inspect: cannot open %s: %s\n", path,
			strerror(errno));
		return CLI_EXIT_UNREACHABLE;
	}
	rc = ferry_inspect_fd(fd, o.check ? FERRY_INSPECT_CHECK : 0, on_item, &o,
			      &at, err, sizeof(err));
	if (fd != STDIN_FILENO)
		close(fd);
	if (!rc)
		return CLI_EXIT_OK;
	if (o.json) {
		json_object *e = json_object_new_object();

		json_object_object_add(e, "what", json_object_new_string("error"));
		json_object_object_add(e, "offset", json_object_new_uint64(at));
		json_object_object_add(e, "error", json_object_new_string(err));
		json_object_object_add(e, "code", json_object_new_int(rc));
		cli_print_json(e);
		json_object_put(e);
	}
	fflush(stdout);
	fprintf(stderr, "ferry inspect: %s: %s (%s)\n", path, err,
		ferry_strerror(rc));
	return CLI_EXIT_FAIL;
}

/* ---- schema ---- */

/* Everything @fd gives until EOF, NUL-terminated, at most 64 MiB. */
static char *read_all(int fd)
{
	size_t len = 0, cap = 1 << 16;
	char *buf = malloc(cap), *nb;
	ssize_t r;

	while (buf) {
		if (cap - len < 2) {
			nb = cap < (64u << 20) ? realloc(buf, cap * 2) : NULL;
			if (!nb)
				break;
			buf = nb;
			cap *= 2;
		}
		r = read(fd, buf + len, cap - len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			buf[len] = '\0';
			return r == 0 ? buf : (free(buf), NULL);
		}
		len += (size_t)r;
	}
	free(buf);
	return NULL;
}

/* Run ferry-vm --print-schemas and parse what it prints. */
static json_object *fetch_schemas(char *err, size_t errlen)
{
	char path[PATH_MAX], arg[] = "--print-schemas", *text;
	char *args[] = { path, arg, NULL };
	posix_spawn_file_actions_t fa;
	json_object *all = NULL;
	int p[2], status = 0, rc;
	pid_t pid;

	if (cli_find_ferry_vm(path, sizeof(path), err, errlen) < 0)
		return NULL;
	if (pipe2(p, O_CLOEXEC)) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		return NULL;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], STDOUT_FILENO);
	rc = posix_spawn(&pid, path, &fa, NULL, args, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (rc) {
		close(p[0]);
		snprintf(err, errlen, "cannot run %s: %s", path, strerror(rc));
		return NULL;
	}
	text = read_all(p[0]);
	close(p[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		snprintf(err, errlen, "%s --print-schemas failed (status 0x%x)",
			 path, status);
	else if (!text || !(all = json_tokener_parse(text)) ||
		 !json_object_is_type(all, json_type_object))
		snprintf(err, errlen, "%s --print-schemas did not print a JSON "
			 "object", path);
	free(text);
	if (all && !json_object_is_type(all, json_type_object)) {
		json_object_put(all);
		all = NULL;
	}
	return all;
}

static void schema_fields(json_object *props, int depth);

static void schema_field(const char *name, json_object *f, int depth)
{
	json_object *mu = get(f, "x-ferry-must-understand");
	json_object *def = get(f, "default"), *items = get(f, "items");
	int pad = 2 + 2 * depth;

	printf("%*s%-*s %-24s %-*s", pad, "", 24 - pad, name,
	       get_s(f, "x-ferry-type"), def ? 16 : 0,
	       !mu ? "" : json_object_get_boolean(mu) ? "must-understand" :
							"skippable");
	if (def)
		printf(" %s", json_object_to_json_string_ext(def,
			       JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	printf("\n");
	if (get(f, "properties"))
		schema_fields(get(f, "properties"), depth + 1);
	else if (items && get(items, "properties"))
		schema_fields(get(items, "properties"), depth + 1);
}

static void schema_fields(json_object *props, int depth)
{
	json_object_object_foreach(props, key, val)
		schema_field(key, val, depth);
}

static void schema_text(json_object *all)
{
	bool first = true;

	json_object_object_foreach(all, type, s) {
		json_object *props = get(s, "properties");

		printf("%s%s  version %" PRIu64 ", %d fields\n", first ? "" : "\n",
		       type, get_u64(s, "x-ferry-version"),
		       props ? json_object_object_length(props) : 0);
		printf("  %-22s %-24s %-16s %s\n", "field", "type", "flags",
		       "default");
		if (props)
			schema_fields(props, 0);
		first = false;
	}
}

/**
 * cmd_schema() - `ferry schema`: the device-state schemas of ferry-vm.
 * @argc: arguments after "ferry".
 * @argv: them.
 *
 * Return: the exit status.
 */
int cmd_schema(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "pretty", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c, mode = 0; /* 0 text, 'j' one line, 'p' pretty */
	json_object *all;
	char err[PATH_MAX + 100];

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(cli_schema_usage, stdout);
			return CLI_EXIT_OK;
		}
		if (c != 'j' && c != 'p') {
			fprintf(stderr, "ferry schema: unknown option '%s'\n"
					"Try 'ferry schema --help'.\n", argv[optind - 1]);
			return CLI_EXIT_USAGE;
		}
		mode = c;
	}
	if (optind < argc) {
		fprintf(stderr, "ferry schema: unexpected argument '%s'\n"
				"Try 'ferry schema --help'.\n", argv[optind]);
		return CLI_EXIT_USAGE;
	}
	all = fetch_schemas(err, sizeof(err));
	if (!all) {
		fprintf(stderr, "ferry schema: %s\n", err);
		return CLI_EXIT_FAIL;
	}
	if (mode == 'j')
		cli_print_json(all);
	else if (mode == 'p')
		printf("%s\n", json_object_to_json_string_ext(all,
			       JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
			       JSON_C_TO_STRING_NOSLASHESCAPE));
	else
		schema_text(all);
	json_object_put(all);
	return CLI_EXIT_OK;
}
