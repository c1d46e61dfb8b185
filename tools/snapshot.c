// SPDX-License-Identifier: MIT
/*
 * snapshot.c - `ferry snapshot`: a live snapshot of a running ferry-vm's
 * guest into a file. It is ferry-vm's migrate command to file:PATH with
 * keep_running set: precopy passes write the pages while the guest runs,
 * the guest pauses only for the last ones and its state, and then runs on
 * (a checkpoint). With --stop it stays paused and the file takes the guest
 * over, as `ferry migrate SOCKET file:PATH` does.
 */
#include "cli.h"

#include "apiclient.h"
#include "ferry.h"
#include "migrate_args.h" /* ferry-vm's migrate arguments and their ranges */

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

static const char snapshot_usage[] =
	"Usage: ferry snapshot SOCKET PATH [OPTIONS]\n"
	"\n"
	"Save the guest of the ferry-vm whose API socket is SOCKET to the file\n"
	"PATH while it runs: memory is written in passes at fixed places in the\n"
	"file while the guest keeps running, and the guest pauses only for the\n"
	"last pages and its device state (a live snapshot). The guest then runs\n"
	"on: the file is a checkpoint. The file appears at PATH only when it is\n"
	"complete. 'ferry-vm --incoming file:PATH' restores it with no other\n"
	"option (add --lazy to run the guest at once and load memory on demand).\n"
	"\n"
	"Options:\n"
	"  --stop              leave the guest paused once the file is written:\n"
	"                      the file takes the guest over, as with\n"
	"                      'ferry migrate SOCKET file:PATH'\n"
	"  --io-threads N      threads writing the file, 1 to 64 (default 4)\n"
	"  --downtime-ms N     longest acceptable pause (default 300)\n"
	"  --json              print the report as one JSON object on stdout\n"
	"  -h, --help          show this help\n"
	"\n"
	"The report gives the pause (downtime), the passes, the file's size and\n"
	"the image digest, which a restore of the file checks its memory against.\n"
	"Progress goes to stderr. Ctrl-C cancels the snapshot (the guest runs\n"
	"on); a second Ctrl-C stops waiting for it.\n"
	"Exit status: 0 written, 1 failed or cancelled, 2 usage error, 3 SOCKET\n"
	"cannot be reached, 130 a second Ctrl-C stopped waiting.\n";

/* A whole number within the range ferry-vm declares for @id. */
static int snapshot_uint(json_object *args, enum vm_arg_id id, const char *val)
{
	const struct vm_arg_range *r = &vm_arg_ranges[id];
	char range[96];
	uint64_t v;

	if (cli_parse_uint(val, (uint64_t)r->max, &v) < 0 ||
	    !vm_arg_ok(id, (int64_t)v))
		return cli_usage_error("snapshot", "%s must be %s, not '%s'",
				       r->option, vm_arg_range_text(id, range,
								    sizeof(range)),
				       val);
	json_object_object_add(args, r->key, json_object_new_int64((int64_t)v));
	return 0;
}

/* Parse the options into the migrate command's arguments; -1 after the
 * help, else 0 or an exit code. */
static int snapshot_options(int argc, char **argv, json_object *args,
			    bool *json)
{
	static const struct option opts[] = {
		{ "stop", no_argument, NULL, 's' },
		{ "io-threads", required_argument, NULL, 't' },
		{ "downtime-ms", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	bool keep = true;
	int c, ret = 0;

	while (ret == 0 && (c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			keep = false;
			break;
		case 't':
			ret = snapshot_uint(args, VM_ARG_IO_THREADS, optarg);
			break;
		case 'd':
			ret = snapshot_uint(args, VM_ARG_DOWNTIME, optarg);
			break;
		case 'j':
			*json = true;
			break;
		case 'h':
			fputs(snapshot_usage, stdout);
			return -1;
		default:
			return cli_option_error("snapshot", c, argv);
		}
	}
	if (ret == 0 && argc - optind != 2)
		return cli_usage_error("snapshot", "expected SOCKET and PATH");
	if (ret == 0 && (!argv[optind + 1][0] || strlen(argv[optind + 1]) > 4000))
		return cli_usage_error("snapshot", "PATH must be 1 to 4000 bytes long");
	json_object_object_add(args, "keep_running", json_object_new_boolean(keep));
	return ret;
}

/**
 * cmd_snapshot() - `ferry snapshot SOCKET PATH`: a live snapshot.
 * @argc: arguments, the command's name first.
 * @argv: the arguments.
 *
 * Return: the exit code.
 */
int cmd_snapshot(int argc, char **argv)
{
	const struct cli_follow_opts fo = { .cancel_on_interrupt = true,
					    .timeout_ms = -1 };
	json_object *args = json_object_new_object(), *report = NULL;
	struct api_client *c = NULL;
	char err[4200];
	bool json = false;
	int ret;

	ret = snapshot_options(argc, argv, args, &json);
	if (ret != 0) {
		json_object_put(args);
		return ret < 0 ? CLI_EXIT_OK : ret;
	}
	snprintf(err, sizeof(err), "file:%s", argv[optind + 1]);
	json_object_object_add(args, "uri", json_object_new_string(err));
	cli_signals_install();
	ret = cli_open_for_report("snapshot", argv[optind], json, args, &c);
	if (ret)
		return ret;
	ret = cli_follow_migration(c, args, &fo, &report, err, sizeof(err));
	api_client_close(c);
	return cli_finish_report("snapshot", "snapshot", report, ret, json, err);
}
