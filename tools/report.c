// SPDX-License-Identifier: MIT
/*
 * report.c - what the ferry command line prints about migrations: the
 * report of one that ended (for humans or as JSON, and a report shaped
 * like ferry-vm's when there is none), and the status of a ferry-vm.
 */
#include "cli.h"

#include "apiclient.h"

#include <errno.h>
#include <math.h> /* NAN and isnan() only: ferry is not linked with libm */
#include <string.h>

#include <json-c/json.h>

/**
 * cli_finish_report() - show how a followed migration or snapshot ended
 * and turn it into the exit code.
 * @cmd: the command ("migrate"), for messages.
 * @what: what it ran ("migration"), for messages.
 * @report: its report (owned; released here), or NULL when @ret < 0.
 * @ret: what cli_follow_migration() returned.
 * @json: print the report as JSON on stdout instead of for humans.
 * @err: why, when @ret < 0.
 *
 * Return: CLI_EXIT_OK (completed), CLI_EXIT_FAIL, CLI_EXIT_PAUSED (a
 * postcopy paused: how to go on is printed), CLI_EXIT_INTERRUPTED.
 */
int cli_finish_report(const char *cmd, const char *what, json_object *report,
		      int ret, bool json, const char *err)
{
	if (ret < 0) {
		fprintf(stderr, "ferry %s: %s\n", cmd, err);
		report = cli_failed_report(err);
	} else if (!json) {
		cli_print_report(stdout, report);
	}
	if (json && ret == 0 && !cli_report_completed(report))
		fprintf(stderr, "ferry %s: %s %s: %s\n", cmd, what,
			cli_str(report, "status", "?"),
			cli_str(report, "error", "no reason given"));
	if (json)
		cli_print_json(report);
	if (ret == -EINTR)
		ret = CLI_EXIT_INTERRUPTED;
	else if (!strcmp(cli_str(report, "status", ""), "postcopy-paused"))
		ret = CLI_EXIT_PAUSED;
	else
		ret = cli_report_completed(report) ? CLI_EXIT_OK : CLI_EXIT_FAIL;
	if (ret == CLI_EXIT_PAUSED)
		cli_paused_hint(cmd);
	json_object_put(report);
	return ret;
}

/**
 * cli_open_for_report() - open the API socket at @sock for @cmd
 * ("migrate"); when it cannot be reached, say why on stderr and, with
 * @json, print a failed report, and release @args.
 *
 * Return: 0 with *@c open, or CLI_EXIT_UNREACHABLE.
 */
int cli_open_for_report(const char *cmd, const char *sock, bool json,
			struct json_object *args, struct api_client **c)
{
	json_object *report;
	char err[512];

	if (api_client_open(sock, CLI_REPLY_TIMEOUT_MS, c, err,
			    sizeof(err)) >= 0)
		return 0;
	json_object_put(args);
	fprintf(stderr, "ferry %s: %s\n", cmd, err);
	if (json) {
		report = cli_failed_report(err);
		cli_print_json(report);
		json_object_put(report);
	}
	return CLI_EXIT_UNREACHABLE;
}

/**
 * cli_failed_report() - a report for a migration that produced none (it
 * could not start, or the connection was lost), shaped like the real one.
 */
struct json_object *cli_failed_report(const char *error)
{
	static const char *const nulls[] = {
		"owner", "workload", "ram_bytes", "total_ms", "downtime_ms",
		"downtime_limit_ms", "guest_stall_ms", "bytes", "wire_bytes",
		"passes", "connections", "protocol_version", "capabilities",
		"dirty_mode", "mb_per_s",
		"verified",
		"final_pass_ms", "state_ms", "switchover_ms", "verify_ms",
		"keep_running", "snapshot", "image_digest", "lazy_pages",
		"lazy_placed",
		"page_faults", "page_wait_p50_ms", "page_wait_p99_ms",
		"page_wait_max_ms", "lazy_complete_ms", "postcopy", "postcopy_ms",
		"faults", "fault_p50_us", "fault_p99_us", "fault_max_us",
		"pages_requested", "pages_pushed", "pages_missing",
		"recoveries", "local_fds", "tls_cipher", "tls_version", "tls_kx",
		"tls_engine",
		"stall_timeout_ms", "stall_detect_ms",
	};
	json_object *r = json_object_new_object();

	json_object_object_add(r, "status", json_object_new_string("failed"));
	json_object_object_add(r, "error", json_object_new_string(error));
	for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
		json_object_object_add(r, nulls[i], NULL);
	return r;
}

/**
 * cli_report_completed() - whether a report says "completed".
 */
bool cli_report_completed(struct json_object *report)
{
	return !strcmp(cli_str(report, "status", ""), "completed");
}

/**
 * cli_print_json() - print @obj as one line on stdout.
 */
void cli_print_json(struct json_object *obj)
{
	printf("%s\n", json_object_to_json_string_ext(obj,
		       JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	fflush(stdout);
}

/* The encryption line: what TLS negotiated and who sealed the records
 * ("ipsec-mb 1.3.0 (AVX512, VAES)"; the report's ", ferry's records"
 * tail, which says whose record layer ran, is left to --json). */
static void print_encryption(FILE *out, json_object *report)
{
	const char *eng = cli_str(report, "tls_engine", "");
	const char *tail = strstr(eng, ", ferry's records");
	int eng_len = tail ? (int)(tail - eng) : (int)strlen(eng);

	fprintf(out, "encryption    %s %s%s%s%s%.*s\n",
		cli_str(report, "tls_version", "TLS"),
		cli_str(report, "tls_cipher", ""),
		cli_str(report, "tls_kx", "")[0] ? ", key exchange " : "",
		cli_str(report, "tls_kx", ""),
		eng_len ? ", sealed by " : "", eng_len, eng);
}

/* How the two sides talked: connections, protocol, dirty tracking. */
static void print_link(FILE *out, json_object *report)
{
	static const struct { const char *mode, *what; } modes[] = {
		{ "bitmap", "the VMM's dirty log (bitmap)" },
		{ "uffd", "userfaultfd write-protect + PAGEMAP_SCAN (uffd)" },
		{ "none", "none: stop-and-copy" },
	};
	json_object *caps = cli_get(report, "capabilities");
	const char *mode = cli_str(report, "dirty_mode", "");
	double n = cli_num(report, "connections", 0);
	size_t i, len;

	if (n >= 1) {
		fprintf(out, "link          %.0f connection%s", n, n == 1 ? "" : "s");
		if (cli_str(report, "congestion_control", "")[0])
			fprintf(out, ", TCP congestion control %s",
				cli_str(report, "congestion_control", ""));
		fputc('\n', out);
	}
	if (cli_str(report, "tls_cipher", "")[0])
		print_encryption(out, report);
	if (cli_num(report, "protocol_version", 0) >= 1) {
		fprintf(out, "protocol      version %.0f, capabilities ",
			cli_num(report, "protocol_version", 0));
		len = caps && json_object_is_type(caps, json_type_array) ?
			      json_object_array_length(caps) : 0;
		for (i = 0; i < len; i++)
			fprintf(out, "%s%s", i ? ", " : "", json_object_get_string(
					json_object_array_get_idx(caps, i)));
		fputs(len ? "\n" : "none\n", out);
	}
	for (i = 0; *mode && i < sizeof(modes) / sizeof(modes[0]); i++)
		if (!strcmp(mode, modes[i].mode))
			break;
	if (*mode)
		fprintf(out, "dirty pages   %s\n",
			i < sizeof(modes) / sizeof(modes[0]) ? modes[i].what : mode);
	if (!strcmp(cli_yesno(report, "local_fds"), "yes"))
		fprintf(out, "memory        local: passed by fd (SCM_RIGHTS), "
			"mapped by the destination, nothing copied\n");
}

/* Snapshot files (a report, or the status's migration object): what the
 * file holds and, for a lazy restore, how far it is and how long the
 * guest waited for pages. Nothing for other migrations. */
static void print_snapshot(FILE *out, json_object *o)
{
	json_object *keep = cli_get(o, "keep_running");
	char size[32], a[32], b[32], c[32];

	if (cli_get(o, "image_digest") &&
	    !strcmp(cli_str(o, "snapshot", ""), "read")) {
		cli_format_bytes(cli_num(o, "wire_bytes", 0), size, sizeof(size));
		fprintf(out, "snapshot      restored from a file (%s read), image "
			"digest %s\n", size, cli_str(o, "image_digest", "?"));
	} else if (cli_get(o, "image_digest")) {
		cli_format_bytes(cli_num(o, "wire_bytes", 0), size, sizeof(size));
		fprintf(out, "snapshot      file %s, %.0f pass%s, pause %s, image "
			"digest %s%s\n", size, cli_num(o, "passes", cli_num(o, "pass", 0)),
			cli_num(o, "passes", cli_num(o, "pass", 0)) == 1 ? "" : "es",
			cli_fmt_ms(o, "downtime_ms", a, sizeof(a)),
			cli_str(o, "image_digest", "?"),
			!keep ? "" : json_object_get_boolean(keep) ?
			", the guest runs on (checkpoint)" :
			", the guest stays paused here (handed over to the file)");
	}
	/* A postcopy destination's pages are postcopy's lines. */
	if (!cli_get(o, "lazy_pages") ||
	    !strcmp(cli_yesno(o, "postcopy"), "yes"))
		return;
	fprintf(out, "lazy restore  %.0f of %.0f pages placed, %.0f page faults, "
		"page wait p50 %s, p99 %s, max %s", cli_num(o, "lazy_placed", 0),
		cli_num(o, "lazy_pages", 0), cli_num(o, "page_faults", 0),
		cli_fmt_ms(o, "page_wait_p50_ms", a, sizeof(a)),
		cli_fmt_ms(o, "page_wait_p99_ms", b, sizeof(b)),
		cli_fmt_ms(o, "page_wait_max_ms", c, sizeof(c)));
	if (cli_get(o, "lazy_complete_ms"))
		fprintf(out, ", all in after %s",
			cli_fmt_ms(o, "lazy_complete_ms", a, sizeof(a)));
	fputc('\n', out);
}

/*
 * Who may run the guest, in one line (a report, or the status's migration
 * object). A snapshot writer's "destination" is the file: whoever
 * restores it.
 */
static void print_owner(FILE *out, json_object *o)
{
	const char *owner = cli_str(o, "owner", NULL);

	if (!owner)
		return;
	if (!strcmp(owner, "none"))
		fprintf(out, "owner         none: no guest has reached this side\n");
	else if (!strcmp(owner, "destination") &&
		 !strcmp(cli_str(o, "snapshot", ""), "written"))
		fprintf(out, "owner         destination: the snapshot file holds "
			"the guest (whoever restores it runs it); the source "
			"must not run it\n");
	else if (!strcmp(owner, "destination"))
		fprintf(out, "owner         destination: only the destination "
			"may run the guest\n");
	else
		fprintf(out, "owner         %s: only the source may run the "
			"guest\n", owner);
}

/**
 * cli_print_report() - print a migration report for humans.
 */
void cli_print_report(FILE *out, struct json_object *report)
{
	char a[32], b[32], c[32], d[32], bytes[32];
	const char *verified = cli_yesno(report, "verified");
	double passes;

	fprintf(out, "status        %s\n", cli_str(report, "status", "?"));
	if (cli_get(report, "error"))
		fprintf(out, "error         %s\n", cli_str(report, "error", "?"));
	print_owner(out, report);
	if (cli_get(report, "ram_bytes")) {
		cli_format_bytes(cli_num(report, "ram_bytes", 0), a, sizeof(a));
		fprintf(out, "guest         %s, workload %s\n", a,
			cli_str(report, "workload", "-"));
	}
	fprintf(out, "total         %s\n", cli_fmt_ms(report, "total_ms", a, sizeof(a)));
	fprintf(out, "downtime      %s", cli_fmt_ms(report, "downtime_ms", a, sizeof(a)));
	if (cli_get(report, "downtime_limit_ms"))
		fprintf(out, ", limit %.0f ms",
			cli_num(report, "downtime_limit_ms", 0));
	fprintf(out, " (final pass %s, state %s, switchover %s)\n",
		cli_fmt_ms(report, "final_pass_ms", b, sizeof(b)),
		cli_fmt_ms(report, "state_ms", c, sizeof(c)),
		cli_fmt_ms(report, "switchover_ms", d, sizeof(d)));
	fprintf(out, "guest stall   %s\n",
		cli_fmt_ms(report, "guest_stall_ms", a, sizeof(a)));
	cli_format_bytes(cli_num(report, "bytes", 0), bytes, sizeof(bytes));
	passes = cli_num(report, "passes", 0);
	fprintf(out, "moved         %s in %.0f pass%s, %.1f MB/s\n", bytes, passes,
		passes == 1 ? "" : "es", cli_num(report, "mb_per_s", 0));
	print_link(out, report);
	print_snapshot(out, report);
	cli_print_postcopy(out, report);
	if (cli_num(report, "throttle_peak_pct", 0) > 0)
		fprintf(out, "throttled     vCPUs held up to %.0f%% of the time "
			"(auto-converge)\n", cli_num(report, "throttle_peak_pct", 0));
	if (cli_get(report, "verify.destination_ms") &&
	    !strcmp(cli_str(report, "verify.method", ""), "background"))
		fprintf(out, "verified      %s (after the pause: destination %s, "
			"source %s)\n", verified,
			cli_fmt_ms(report, "verify.destination_ms", a, sizeof(a)),
			cli_fmt_ms(report, "verify.source_ms", b, sizeof(b)));
	else if (!strcmp(cli_str(report, "verify.method", ""), "image"))
		fprintf(out, "verified      %s (the source's RAM against the "
			"image it wrote, after the pause: %s)\n", verified,
			cli_fmt_ms(report, "verify.source_ms", a, sizeof(a)));
	else if (cli_get(report, "verify.note"))
		fprintf(out, "verified      %s (%s)\n", verified,
			cli_str(report, "verify.note", ""));
	else if (cli_get(report, "verify_ms"))
		fprintf(out, "verified      %s (check %s, inside the pause)\n",
			verified, cli_fmt_ms(report, "verify_ms", a, sizeof(a)));
	else
		fprintf(out, "verified      %s\n", verified);
	fflush(out);
}

/* ---- status ---------------------------------------------------------- */

static void print_guest(json_object *g)
{
	char mem[32], pop[48] = "";
	json_object *settled = cli_get(g, "settled");
	const char *state = cli_str(g, "state", NULL);
	double pct = cli_num(g, "populated_pct", 100);

	/* ferry-vm before guest.state said only running or not. */
	if (!state)
		state = !strcmp(cli_yesno(g, "running"), "yes") ? "running" : "paused";
	if (pct < 100)
		snprintf(pop, sizeof(pop), ", RAM %.0f%% populated", pct);
	cli_format_bytes(cli_num(g, "memory", 0), mem, sizeof(mem));
	printf("guest         %s%s, workload %s, %s, %.0f vCPUs, %.0f steps, "
	       "%.0f check errors%s\n", state, pop,
	       cli_str(g, "workload", "?"), mem, cli_num(g, "vcpus", 0),
	       cli_num(g, "steps", 0), cli_num(g, "check_errors", 0),
	       settled && !json_object_get_boolean(settled) ? ", settling" : "");
	if (cli_get(g, "error"))
		printf("guest error   %s\n", cli_str(g, "error", "?"));
}

static void print_migration(json_object *m)
{
	const char *state = cli_str(m, "state", "none");
	char moved[32], wire[32];

	if (!strcmp(state, "none")) {
		printf("migration     none\n");
		print_owner(stdout, m);
		return;
	}
	cli_format_bytes(cli_num(m, "bytes", 0), moved, sizeof(moved));
	cli_format_bytes(cli_num(m, "wire_bytes", 0), wire, sizeof(wire));
	printf("migration     %s, pass %.0f, %s moved (%s on the wire), "
	       "%.1f s elapsed\n", state, cli_num(m, "pass", 0), moved, wire,
	       cli_num(m, "total_ms", 0) / 1000);
	printf("rates         %.1f MB/s, dirty %.1f MB/s, expected downtime "
	       "%.1f ms\n", cli_num(m, "mb_per_s", 0),
	       cli_num(m, "dirty_mb_per_s", 0),
	       cli_num(m, "expected_downtime_ms", 0));
	print_owner(stdout, m);
	print_snapshot(stdout, m);
	cli_print_postcopy(stdout, m);
	if (cli_get(m, "error"))
		printf("error         %s\n", cli_str(m, "error", "?"));
}

void cli_print_status(json_object *greeting, json_object *st)
{
	json_object *r = cli_get(st, "report");
	char ms[32];

	printf("ferry-vm      %s, pid %.0f, %s\n",
	       cli_str(greeting, "version", "?"), cli_num(greeting, "pid", 0),
	       cli_str(st, "role", cli_str(greeting, "role", "?")));
	if (cli_get(st, "guest"))
		print_guest(cli_get(st, "guest"));
	if (cli_get(st, "listening"))
		printf("listening     %s\n", cli_str(st, "listening", "?"));
	print_migration(cli_get(st, "migration"));
	if (cli_get(st, "migration.last_failure"))
		printf("last failure  %s at %s: %s\n",
		       cli_str(cli_get(st, "migration.last_failure"), "state", "?"),
		       cli_str(cli_get(st, "migration.last_failure"), "at", "?"),
		       cli_str(cli_get(st, "migration.last_failure"), "error", "?"));
	printf("verified      %s\n", cli_yesno(st, "verified"));
	if (r)
		printf("last report   %s in %s, downtime %.1f ms, %.0f passes, "
		       "%.1f MB/s, verified %s\n", cli_str(r, "status", "?"),
		       cli_fmt_ms(r, "total_ms", ms, sizeof(ms)),
		       cli_num(r, "downtime_ms", 0), cli_num(r, "passes", 0),
		       cli_num(r, "mb_per_s", 0), cli_yesno(r, "verified"));
}
