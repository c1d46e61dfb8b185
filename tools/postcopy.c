// SPDX-License-Identifier: MIT
/*
 * postcopy.c - the commands of a migration in postcopy (ferry postcopy,
 * ferry recover, ferry resume), what to do when one pauses, and the
 * postcopy lines of reports and status.
 *
 * Past the switch to postcopy the guest runs at the destination while its
 * memory still arrives from the source: neither side holds all of it. A
 * broken link pauses both sides until an operator recovers them (the
 * destination listens again, the source reconnects with --resume) or,
 * knowing the destination is gone for good, runs the source's copy with
 * 'ferry resume --force'. ferry migrate (ferry.c) starts and follows the
 * migration; these commands act on it from anywhere.
 */
#include "cli.h"

#include "apiclient.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#define POLL_MS 50

static const char postcopy_usage[] =
	"Usage: ferry postcopy SOCKET\n"
	"\n"
	"Switch the precopy migration running from the ferry-vm whose API socket\n"
	"is SOCKET (the source) to postcopy now: the running pass is cut short,\n"
	"the destination resumes the guest before all of its memory is there, and\n"
	"the rest follows, on demand for pages the guest touches and in the\n"
	"background for the others. Needs a destination that offers postcopy.\n"
	"The client that started the migration ('ferry migrate') follows it.\n"
	"\n"
	"Exit status: 0 requested, 1 refused (no migration runs, the destination\n"
	"does not offer postcopy, or it is too late), 2 usage error, 3 SOCKET\n"
	"cannot be reached.\n";

static const char recover_usage[] =
	"Usage: ferry recover SOCKET URI\n"
	"\n"
	"Go on with a migration paused in postcopy (its link broke) at the\n"
	"destination ferry-vm whose API socket is SOCKET: it listens at URI\n"
	"(tcp:HOST:PORT, where port 0 lets the kernel choose; unix:PATH) and this\n"
	"prints where, as 'listening at URI'. Then run 'ferry migrate SRC_SOCKET\n"
	"URI --resume' for the source: it reconnects with the session's token,\n"
	"the destination says which pages it has, and the source sends the rest.\n"
	"A cut during the recovery pauses both sides again: recover again.\n"
	"\n"
	"Exit status: 0 listening (or the source already reconnected), 1 refused\n"
	"or not listening within 10 s, 2 usage error (a file: URI too), 3 SOCKET\n"
	"cannot be reached.\n";

static const char resume_usage[] =
	"Usage: ferry resume SOCKET --force\n"
	"\n"
	"On the source ferry-vm whose API socket is SOCKET, paused in postcopy,\n"
	"give the migration up and run the source's copy of the guest: for a\n"
	"destination that is gone for good. The same for a source whose last\n"
	"migration ended unconfirmed (\"released\" sent, the destination never\n"
	"said it runs; the guest stays paused there): it takes the guest's\n"
	"resources back and runs its copy. Since the switch to postcopy, or the\n"
	"\"released\", the guest may have run at the destination: what it did\n"
	"there is lost, and if that copy still exists, two copies of the guest\n"
	"now run, with the same identity, disks and network connections. After a\n"
	"local migration (memory by fd) the memory is shared instead: the source\n"
	"refuses while the destination process exists, and otherwise resumes its\n"
	"state of the pause over whatever the destination wrote.\n"
	"--force says you know.\n"
	"\n"
	"Exit status: 0 the source runs its guest again, 1 refused (not a source\n"
	"paused in postcopy or unconfirmed), 2 usage error (--force missing), 3\n"
	"SOCKET cannot be reached.\n";

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { 0, (long)ms * 1000000 };

	nanosleep(&ts, NULL);
}

/* The options every command here takes: --help, and for resume --force.
 * Return: -1 to go on, else the exit code. */
static int parse(const char *cmd, int argc, char **argv, int nargs,
		 const char *usage, bool *force)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force", no_argument, NULL, 'f' },
		{ 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(usage, stdout);
			return CLI_EXIT_OK;
		}
		if (c != 'f' || !force)
			return cli_option_error(cmd, c, argv);
		*force = true;
	}
	if (argc - optind != nargs)
		return cli_usage_error(cmd, nargs == 1 ? "expected SOCKET" :
				       "expected SOCKET and URI");
	return -1;
}

/* Connect and run @command; says why on stderr when it fails. */
static int run(const char *cmd, const char *sock, const char *command,
	       json_object *args, struct api_client **c)
{
	char err[300];

	if (api_client_open(sock, CLI_REPLY_TIMEOUT_MS, c, err, sizeof(err)) < 0) {
		json_object_put(args);
		fprintf(stderr, "ferry %s: %s\n", cmd, err);
		return CLI_EXIT_UNREACHABLE;
	}
	if (api_client_execute(*c, command, args, CLI_REPLY_TIMEOUT_MS, NULL) < 0) {
		fprintf(stderr, "ferry %s: %s\n", cmd, api_client_errmsg(*c));
		return CLI_EXIT_FAIL;
	}
	return CLI_EXIT_OK;
}

/* The status, or NULL (said on stderr). */
static json_object *status(const char *cmd, struct api_client *c)
{
	json_object *st;

	if (api_client_execute(c, "status", NULL, CLI_REPLY_TIMEOUT_MS, &st) < 0) {
		fprintf(stderr, "ferry %s: %s\n", cmd, api_client_errmsg(c));
		return NULL;
	}
	return st;
}

/**
 * cmd_postcopy() - ferry postcopy SOCKET: switch the running precopy to
 * postcopy now (the running pass is cut short).
 *
 * Return: an exit code.
 */
int cmd_postcopy(int argc, char **argv)
{
	struct api_client *c = NULL;
	int ret = parse("postcopy", argc, argv, 1, postcopy_usage, NULL);

	if (ret >= 0)
		return ret;
	ret = run("postcopy", argv[optind], "postcopy", NULL, &c);
	if (!ret)
		printf("postcopy requested: the source cuts its running pass short and switches\n");
	api_client_close(c);
	return ret;
}

/* After "recover": poll until the destination says where it listens, or
 * the source already reconnected. */
static int recover_wait(struct api_client *c, const char *uri)
{
	int64_t end = now_ms() + CLI_REPLY_TIMEOUT_MS;
	const char *state = "?";
	json_object *st;

	while (now_ms() < end) {
		st = status("recover", c);
		if (!st)
			return CLI_EXIT_FAIL;
		state = cli_str(st, "migration.state", "?");
		if (cli_get(st, "listening")) {
			printf("listening at %s\n", cli_str(st, "listening", "?"));
			fprintf(stderr, "ferry recover: now run 'ferry migrate "
				"SRC_SOCKET %s --resume'\n",
				cli_str(st, "listening", "?"));
			json_object_put(st);
			return CLI_EXIT_OK;
		}
		if (!strcmp(state, "postcopy") || !strcmp(state, "completed")) {
			printf("recovered: the source reconnected at %s (migration %s)\n",
			       uri, state);
			json_object_put(st);
			return CLI_EXIT_OK;
		}
		json_object_put(st);
		sleep_ms(POLL_MS);
	}
	fprintf(stderr, "ferry recover: the destination did not listen at %s "
		"within %d s (migration %s; 'ferry status' says why)\n", uri,
		CLI_REPLY_TIMEOUT_MS / 1000, state);
	return CLI_EXIT_FAIL;
}

/**
 * cmd_recover() - ferry recover SOCKET URI: a destination paused in
 * postcopy listens at URI for its source again.
 *
 * Return: an exit code.
 */
int cmd_recover(int argc, char **argv)
{
	struct api_client *c = NULL;
	json_object *args;
	const char *sock, *uri;
	char err[300];
	int ret = parse("recover", argc, argv, 2, recover_usage, NULL);

	if (ret >= 0)
		return ret;
	sock = argv[optind];
	uri = argv[optind + 1];
	if (!strncmp(uri, "file:", 5))
		return cli_usage_error("recover", "%s: postcopy recovers over a "
				       "connection (tcp:HOST:PORT or unix:PATH), "
				       "not a file", uri);
	if (api_client_open(sock, CLI_REPLY_TIMEOUT_MS, &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "ferry recover: %s\n", err);
		return CLI_EXIT_UNREACHABLE;
	}
	if (!strcmp(api_client_role(c), "source")) {
		fprintf(stderr, "ferry recover: %s is a source: it reconnects with "
			"'ferry migrate %s URI --resume' once the destination "
			"listens\n", sock, sock);
		api_client_close(c);
		return CLI_EXIT_FAIL;
	}
	args = json_object_new_object();
	json_object_object_add(args, "uri", json_object_new_string(uri));
	ret = api_client_execute(c, "recover", args, CLI_REPLY_TIMEOUT_MS, NULL);
	if (ret < 0)
		fprintf(stderr, "ferry recover: %s\n", api_client_errmsg(c));
	ret = ret < 0 ? CLI_EXIT_FAIL : recover_wait(c, uri);
	api_client_close(c);
	return ret;
}

/* What a forced resume risks, when the VM does not say it better. */
static const char generic_risk[] =
	"the guest may have run at the destination since the switch to "
	"postcopy (or since the \"released\" of an unconfirmed switchover). "
	"Whatever it did there is lost, and if that copy still exists, two "
	"copies of the guest now run, with the same identity, disks and "
	"network connections.";

/**
 * cmd_resume() - ferry resume SOCKET --force: a source paused in postcopy
 * runs its own copy of the guest again.
 *
 * Return: an exit code.
 */
int cmd_resume(int argc, char **argv)
{
	struct api_client *c = NULL;
	json_object *args, *st;
	bool force = false;
	int64_t end;
	int ret = parse("resume", argc, argv, 1, resume_usage, &force);

	if (ret >= 0)
		return ret;
	if (!force)
		return cli_usage_error("resume", "--force is required: the guest may "
				       "have run at the destination since the switch "
				       "to postcopy, and running the source's copy "
				       "may make two");
	args = json_object_new_object();
	json_object_object_add(args, "force", json_object_new_boolean(true));
	ret = run("resume", argv[optind], "resume", args, &c);
	for (end = now_ms() + CLI_REPLY_TIMEOUT_MS; !ret && now_ms() < end;
	     sleep_ms(POLL_MS)) {
		st = status("resume", c);
		if (!st)
			break;
		/* Done when the guest runs and the send has ended. The VM
		 * says what this resume risked when it knows better (a local
		 * migration shares the memory: nothing there is "lost"). */
		if (!strcmp(cli_str(st, "guest.state", ""), "running") &&
		    strncmp(cli_str(st, "migration.state", ""), "postcopy", 8)) {
			fprintf(stderr, "ferry resume: warning: %s\n",
				cli_str(st, "report.forced", generic_risk));
			printf("the source's copy of the guest runs again (owner %s); "
			       "the migration failed: %s\n",
			       cli_str(st, "migration.owner", "?"),
			       cli_str(st, "migration.error", "no reason given"));
			json_object_put(st);
			api_client_close(c);
			return CLI_EXIT_OK;
		}
		json_object_put(st);
	}
	if (!ret) {
		fprintf(stderr, "ferry resume: warning: %s\n", generic_risk);
		printf("resume requested: the source's guest was not running yet "
		       "after %d s ('ferry status' shows it)\n",
		       CLI_REPLY_TIMEOUT_MS / 1000);
	}
	api_client_close(c);
	return ret;
}

/**
 * cli_paused_hint() - after a postcopy paused: what it means and how to go
 * on, on stderr.
 * @cmd: the command that saw it ("migrate").
 */
void cli_paused_hint(const char *cmd)
{
	fprintf(stderr,
		"ferry %s: the migration is paused in postcopy: its link broke after "
		"the switch. The guest runs at the destination (vCPUs that need a "
		"page still at the source wait) and the source stays paused; "
		"nothing is lost yet. To go on: 'ferry recover DST_SOCKET URI', "
		"then 'ferry migrate SRC_SOCKET URI --resume'. If the destination "
		"is gone for good: 'ferry resume SRC_SOCKET --force' (read its "
		"warning first).\n", cmd);
}

/* Microseconds at @path, "-" when absent. */
static const char *fmt_us(json_object *o, const char *path, char *buf,
			  size_t len)
{
	json_object *v = cli_get(o, path);

	if (!v)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.0f µs", cli_num(o, path, 0));
	return buf;
}

/**
 * cli_print_postcopy() - the postcopy lines of a report or of the status's
 * migration object: nothing unless the migration switched.
 * @out: where to print.
 * @o: the report or migration object.
 */
void cli_print_postcopy(FILE *out, json_object *o)
{
	json_object *pc = cli_get(o, "postcopy");
	char head[80], a[32], b[32], c[32];

	if (!pc || !json_object_is_type(pc, json_type_boolean) ||
	    !json_object_get_boolean(pc))
		return;
	if (cli_get(o, "postcopy_ms"))
		snprintf(head, sizeof(head), "all memory in %s after the switch",
			 cli_fmt_ms(o, "postcopy_ms", b, sizeof(b)));
	else
		snprintf(head, sizeof(head), "memory still arriving");
	fprintf(out, "postcopy      %s; %.0f pages requested, %.0f pushed, "
		"%.0f missing, %.0f recover%s\n", head,
		cli_num(o, "pages_requested", 0), cli_num(o, "pages_pushed", 0),
		cli_num(o, "pages_missing", 0), cli_num(o, "recoveries", 0),
		cli_num(o, "recoveries", 0) == 1 ? "y" : "ies");
	if (cli_get(o, "lazy_pages"))
		fprintf(out, "placed        %.0f of %.0f pages at the destination\n",
			cli_num(o, "lazy_placed", 0), cli_num(o, "lazy_pages", 0));
	if (cli_get(o, "faults"))
		fprintf(out, "page faults   %.0f, vCPU wait p50 %s, p99 %s, max %s\n",
			cli_num(o, "faults", 0),
			fmt_us(o, "fault_p50_us", a, sizeof(a)),
			fmt_us(o, "fault_p99_us", b, sizeof(b)),
			fmt_us(o, "fault_max_us", c, sizeof(c)));
}
