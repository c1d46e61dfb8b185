/* SPDX-License-Identifier: MIT */
/*
 * cli.h - what the subcommands of the ferry command line share: exit codes,
 * argument parsing helpers, interrupt handling, the migration follower with
 * its progress display (ferry.c), and report and status printing
 * (report.c).
 */
#ifndef FERRY_TOOLS_CLI_H
#define FERRY_TOOLS_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <getopt.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct api_client;
struct json_object;

/* Exit codes shared by every subcommand. */
enum {
	CLI_EXIT_OK = 0,
	CLI_EXIT_FAIL = 1,	  /* the operation failed or was cancelled */
	CLI_EXIT_USAGE = 2,	  /* bad command line */
	CLI_EXIT_UNREACHABLE = 3, /* the API socket cannot be reached */
	CLI_EXIT_PAUSED = 4,	  /* a postcopy paused: it waits for an
				     operator (recover, or resume --force) */
	CLI_EXIT_INTERRUPTED = 130,
};

/* How long a command may wait for its reply, in milliseconds. */
#define CLI_REPLY_TIMEOUT_MS 10000

int cli_parse_uint(const char *s, uint64_t max, uint64_t *out);
int cli_parse_size(const char *s, uint64_t *out);
int cli_parse_rate(const char *s, double *out);
int cli_usage_error(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int cli_check_name(const char *cmd, const char *opt, const char *val,
		   const char *const *names);

/* Options that tune a migration, shared by migrate and demo: the table
 * (ends with a zero entry), its help lines, and the parser. Long-only
 * options use codes above any character. */
enum {
	CLI_OPT_CHUNK = 0x100,
	CLI_OPT_WINDOW,
	CLI_OPT_MAX_BW,
	CLI_OPT_NO_AC,
	CLI_OPT_CC,
	/* TLS (tls.c): migrate's options */
	CLI_OPT_TLS_CREDS = 0x180,
	CLI_OPT_TLS_PSK,
	CLI_OPT_TLS_PEER,
	CLI_OPT_TLS_PRIORITY,
	CLI_OPT_TLS_ENGINE,
};

/* tls.c */
extern const char cli_tls_usage[];
int cli_tls_option(const char *cmd, int c, const char *val,
		   struct json_object *args);
int cmd_tls_certs(int argc, char **argv);

extern const struct option cli_tuning_options[];
extern const char cli_tuning_usage[];
int cli_tuning_option(const char *cmd, int c, char **argv,
		      struct json_object *args);
int cli_option_error(const char *cmd, int c, char **argv);
void cli_options_join(struct option *out, size_t cap,
		      const struct option *own);
void cli_format_bytes(double bytes, char *buf, size_t len);

void cli_signals_install(void);
const volatile sig_atomic_t *cli_interrupt_counter(void);
bool cli_interrupted(void);

/* How cli_follow_migration() behaves. */
struct cli_follow_opts {
	bool cancel_on_interrupt; /* first Ctrl-C cancels, the second gives up;
				     else the first gives up */
	int timeout_ms;		  /* overall limit, -1 for none */
	/* Called about once a second and after each batch of events; a
	 * negative return ends the wait (the callback fills @err). */
	int (*tick)(void *opaque, char *err, size_t errlen);
	void *opaque;
	/* The command that starts it: NULL for "migrate"; "recover" (its
	 * args {"uri"}) goes on with a postcopy paused on the source. */
	const char *command;
};

int cli_follow_migration(struct api_client *c, struct json_object *args,
			 const struct cli_follow_opts *opts,
			 struct json_object **report, char *err, size_t errlen);
struct json_object *cli_failed_report(const char *error);
int cli_finish_report(const char *cmd, const char *what,
		      struct json_object *report, int ret, bool json,
		      const char *err);
struct api_client;
int cli_open_for_report(const char *cmd, const char *sock, bool json,
			struct json_object *args, struct api_client **c);
void cli_print_report(FILE *out, struct json_object *report);
void cli_print_json(struct json_object *obj);
bool cli_report_completed(struct json_object *report);
struct json_object *cli_get(struct json_object *obj, const char *path);
double cli_num(struct json_object *obj, const char *path, double dflt);
const char *cli_str(struct json_object *obj, const char *path,
		    const char *dflt);
const char *cli_yesno(struct json_object *obj, const char *path);
const char *cli_fmt_ms(struct json_object *obj, const char *path, char *buf,
		       size_t len);
void cli_print_status(struct json_object *greeting, struct json_object *st);

int cmd_demo(int argc, char **argv);
extern const char cli_demo_usage[];
int cli_find_ferry_vm(char *out, size_t len, char *err, size_t errlen);

/* postcopy.c: the commands of a migration in postcopy */
int cmd_postcopy(int argc, char **argv);
int cmd_recover(int argc, char **argv);
int cmd_resume(int argc, char **argv);
void cli_print_postcopy(FILE *out, struct json_object *o);
void cli_paused_hint(const char *cmd);

/* snapshot.c: live snapshots into a file */
int cmd_snapshot(int argc, char **argv);

/* inspect.c: the offline stream tools */
int cmd_inspect(int argc, char **argv);
int cmd_schema(int argc, char **argv);
extern const char cli_inspect_usage[];
extern const char cli_schema_usage[];

#endif /* FERRY_TOOLS_CLI_H */
