// SPDX-License-Identifier: MIT
/*
 * ferry.c - the ferry command line: dispatch, help, the commands that drive
 * a running ferry-vm over its API socket (migrate, status, cancel), and
 * the pieces the demo shares (migration follower, progress, report).
 */
#include "cli.h"

#include "apiclient.h"
#include "ferry.h"
#include "migrate_args.h" /* ferry-vm's migrate arguments and their ranges */

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h> /* NAN and isnan() only: ferry is not linked with libm */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

/* Counts SIGINT/SIGTERM/SIGHUP; the only mutable global, for the handler. */
static volatile sig_atomic_t cli_interrupts;

static void on_signal(int sig)
{
	(void)sig;
	cli_interrupts++;
}

/**
 * cli_signals_install() - count SIGINT, SIGTERM and SIGHUP instead of dying,
 * and ignore SIGPIPE. Blocking calls are not restarted, so waits notice.
 */
void cli_signals_install(void)
{
	struct sigaction sa = { .sa_handler = on_signal };
	int sigs[] = { SIGINT, SIGTERM, SIGHUP };

	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/**
 * cli_interrupt_counter() - the counter the signal handler increments, for
 * api_client_set_interrupt().
 */
const volatile sig_atomic_t *cli_interrupt_counter(void)
{
	return &cli_interrupts;
}

/**
 * cli_interrupted() - whether a terminating signal arrived.
 */
bool cli_interrupted(void)
{
	return cli_interrupts != 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- parsing and formatting ------------------------------------------ */

/**
 * cli_parse_uint() - parse a decimal number no larger than @max.
 *
 * Return: 0, or -EINVAL (not a number, trailing junk, too large).
 */
int cli_parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/**
 * cli_parse_size() - parse a size such as "256M", "1G", "4096" or "512KiB".
 *
 * Suffixes K, M, G, T (optionally followed by "B" or "iB", any case) are
 * powers of 1024; no suffix means bytes.
 *
 * Return: 0, or -EINVAL (malformed, zero, or overflowing).
 */
int cli_parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "KMGT";
	unsigned long long v;
	const char *u;
	char *end;
	int shift = 0;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || v == 0)
		return -EINVAL;
	if (*end) {
		u = strchr(units, toupper((unsigned char)*end));
		if (!u || (end[1] && strcasecmp(end + 1, "B") &&
			   strcasecmp(end + 1, "iB")))
			return -EINVAL;
		shift = 10 * (int)(u - units + 1);
	}
	if (shift && v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

/**
 * cli_format_bytes() - three significant digits: "1.50 GiB", "51.2 MiB",
 * "512 MiB", "12 B".
 */
void cli_format_bytes(double bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	unsigned i = 0;

	while (bytes >= 1024 && i < 4) {
		bytes /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%.0f B", bytes);
	else
		snprintf(buf, len, bytes < 10 ? "%.2f %s" :
				   bytes < 100 ? "%.1f %s" : "%.0f %s",
			 bytes, units[i]);
}

/**
 * cli_get() - look up a dotted path ("guest.settled") in a JSON object.
 *
 * Return: the member (borrowed), or NULL when absent or JSON null.
 */
struct json_object *cli_get(struct json_object *obj, const char *path)
{
	char key[64];
	const char *dot;
	size_t n;

	while (obj && *path) {
		dot = strchr(path, '.');
		n = dot ? (size_t)(dot - path) : strlen(path);
		if (n >= sizeof(key))
			return NULL;
		memcpy(key, path, n);
		key[n] = '\0';
		if (!json_object_is_type(obj, json_type_object) ||
		    !json_object_object_get_ex(obj, key, &obj))
			return NULL;
		path += n + (dot ? 1 : 0);
	}
	return obj;
}

/**
 * cli_num() - the number at a dotted path of @obj, or @dflt when absent,
 * null or not a number.
 */
double cli_num(json_object *obj, const char *path, double dflt)
{
	json_object *v = cli_get(obj, path);

	if (!v || !(json_object_is_type(v, json_type_int) ||
		    json_object_is_type(v, json_type_double)))
		return dflt;
	return json_object_get_double(v);
}

/**
 * cli_str() - the string at a dotted path of @obj (borrowed), or @dflt.
 */
const char *cli_str(json_object *obj, const char *path, const char *dflt)
{
	json_object *v = cli_get(obj, path);

	return v && json_object_is_type(v, json_type_string) ?
		       json_object_get_string(v) : dflt;
}

/**
 * cli_yesno() - a boolean at a dotted path of @obj as "yes" or "no", or
 * "-" when null or absent.
 */
const char *cli_yesno(json_object *obj, const char *path)
{
	json_object *v = cli_get(obj, path);

	if (!v || !json_object_is_type(v, json_type_boolean))
		return "-";
	return json_object_get_boolean(v) ? "yes" : "no";
}

/**
 * cli_fmt_ms() - a millisecond figure at a dotted path of @obj as
 * "12.3 ms" in @buf, or "-" when absent.
 *
 * Return: @buf.
 */
const char *cli_fmt_ms(json_object *obj, const char *path, char *buf,
		       size_t len)
{
	double v = cli_num(obj, path, NAN);

	if (isnan(v))
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.1f ms", v);
	return buf;
}

/* ---- migration tuning options (migrate and demo) ---------------------- */

const char cli_tuning_usage[] =
	"  --downtime-ms N          longest acceptable pause (default 300)\n"
	"  --connections N          data connections, 1 to 64 (default 1)\n"
	"  --compress C             none, lz4 or zstd (default none)\n"
	"  --compress-level N       the codec's level (default: its own)\n"
	"  --dirty-mode M           auto, uffd (userfaultfd + PAGEMAP_SCAN) or\n"
	"                           bitmap (the VMM's own dirty log)\n"
	"  --chunk-size SIZE        memory record size, 4K to 16M (default 1M)\n"
	"  --window N               chunks in flight per connection, 1 to 64\n"
	"                           (default: 1 within the host, else 2)\n"
	"  --max-bandwidth MB/s     cap what the source sends (10^6 bytes/s, all\n"
	"                           connections, every pass); default no cap\n"
	"  --no-auto-converge       never throttle the vCPUs when passes stop\n"
	"                           shrinking (default: throttle progressively)\n"
	"  --congestion-control CC  TCP congestion control of the source's\n"
	"                           connections (cubic, bbr, reno, ...: see\n"
	"                           net.ipv4.tcp_available_congestion_control);\n"
	"                           default: the system's, except that a pacing\n"
	"                           one (bbr) gives way to cubic within the host\n";

const struct option cli_tuning_options[] = {
	{ "downtime-ms", required_argument, NULL, 'd' },
	{ "connections", required_argument, NULL, 'n' },
	{ "compress", required_argument, NULL, 'z' },
	{ "compress-level", required_argument, NULL, 'L' },
	{ "dirty-mode", required_argument, NULL, 'D' },
	{ "chunk-size", required_argument, NULL, CLI_OPT_CHUNK },
	{ "window", required_argument, NULL, CLI_OPT_WINDOW },
	{ "max-bandwidth", required_argument, NULL, CLI_OPT_MAX_BW },
	{ "no-auto-converge", no_argument, NULL, CLI_OPT_NO_AC },
	{ "congestion-control", required_argument, NULL, CLI_OPT_CC },
	{ 0 },
};

/**
 * cli_usage_error() - print "ferry CMD: what is wrong" and where to look.
 *
 * Return: CLI_EXIT_USAGE.
 */
int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "ferry %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'ferry %s --help'.\n", cmd);
	return CLI_EXIT_USAGE;
}

/**
 * cli_check_name() - is @val one of @names (NULL-terminated)?
 * @cmd: the subcommand, for the message.
 * @opt: the option ("--compress").
 *
 * Return: 0, or CLI_EXIT_USAGE after saying "OPT is a, b or c, not 'VAL'".
 */
int cli_check_name(const char *cmd, const char *opt, const char *val,
		   const char *const *names)
{
	char list[160] = "";
	size_t n = 0, len;

	for (; names[n]; n++)
		if (!strcmp(val, names[n]))
			return 0;
	for (size_t i = 0; i < n; i++) {
		len = strlen(list);
		snprintf(list + len, sizeof(list) - len, "%s%s",
			 i == 0 ? "" : i + 1 == n ? " or " : ", ", names[i]);
	}
	return cli_usage_error(cmd, "%s is %s, not '%s'", opt, list, val);
}

/**
 * cli_parse_rate() - parse a rate in MB/s: a non-negative decimal number
 * ("100", "12.5").
 *
 * Return: 0, or -EINVAL.
 */
int cli_parse_rate(const char *s, double *out)
{
	char *end;
	double v;

	if (!s || !s[0] || !strchr("0123456789.", s[0]))
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0) || v > 1e9)
		return -EINVAL;
	*out = v;
	return 0;
}

/* A whole number within the range ferry-vm declares for @id. */
static int tuning_uint(const char *cmd, json_object *args, enum vm_arg_id id,
		       const char *val)
{
	const struct vm_arg_range *r = &vm_arg_ranges[id];
	char range[96];
	uint64_t v;

	if (cli_parse_uint(val, (uint64_t)r->max, &v) < 0 ||
	    !vm_arg_ok(id, (int64_t)v))
		return cli_usage_error(cmd, "%s must be %s, not '%s'", r->option,
				       vm_arg_range_text(id, range, sizeof(range)),
				       val);
	json_object_object_add(args, r->key, json_object_new_int64((int64_t)v));
	return 0;
}

/* A name from @names (NULL-terminated) as the value of @key. */
static int tuning_name(const char *cmd, json_object *args, const char *key,
		       const char *opt, const char *val,
		       const char *const *names)
{
	int rc = cli_check_name(cmd, opt, val, names);

	if (!rc)
		json_object_object_add(args, key, json_object_new_string(val));
	return rc;
}

/**
 * cli_tuning_option() - apply one of cli_tuning_options to the migrate
 * command's arguments.
 * @cmd: the subcommand, for messages.
 * @c: the option's code from getopt_long().
 * @argv: the arguments getopt_long() is parsing; its value is optarg.
 * @args: the migrate command's arguments (JSON object) to add to.
 *
 * Return: 0 applied, else CLI_EXIT_USAGE after printing what is wrong
 * (also for an option that is not one of them).
 */
int cli_tuning_option(const char *cmd, int c, char **argv, json_object *args)
{
	static const char *const codecs[] = { "none", "lz4", "zstd", NULL };
	static const char *const modes[] = { "auto", "uffd", "bitmap", NULL };
	const char *val = optarg;
	char range[96];
	uint64_t v;
	double mb;

	switch (c) {
	case 'd':
		return tuning_uint(cmd, args, VM_ARG_DOWNTIME, val);
	case 'n':
		return tuning_uint(cmd, args, VM_ARG_CONNECTIONS, val);
	case 'z':
		return tuning_name(cmd, args, "compress", "--compress", val, codecs);
	case 'L':
		return tuning_uint(cmd, args, VM_ARG_COMPRESS_LEVEL, val);
	case 'D':
		return tuning_name(cmd, args, "dirty_mode", "--dirty-mode", val,
				   modes);
	case CLI_OPT_WINDOW:
		return tuning_uint(cmd, args, VM_ARG_WINDOW, val);
	case CLI_OPT_CHUNK:
		if (cli_parse_size(val, &v) < 0 || v > INT64_MAX ||
		    !vm_arg_ok(VM_ARG_CHUNK, (int64_t)v))
			return cli_usage_error(cmd, "--chunk-size must be %s (such "
					       "as 256K), not '%s'",
					       vm_arg_range_text(VM_ARG_CHUNK, range,
								 sizeof(range)),
					       val);
		json_object_object_add(args, "chunk_bytes",
				       json_object_new_int64((int64_t)v));
		return 0;
	case CLI_OPT_MAX_BW:
		if (cli_parse_rate(val, &mb) < 0 || mb == 0)
			return cli_usage_error(cmd, "--max-bandwidth wants MB/s above "
					    "0, such as 100 or 12.5, not '%s'", val);
		json_object_object_add(args, "max_bandwidth",
				       json_object_new_int64((int64_t)(mb * 1e6)));
		return 0;
	case CLI_OPT_NO_AC:
		json_object_object_add(args, "auto_converge",
				       json_object_new_boolean(false));
		return 0;
	case CLI_OPT_CC:
		/* The source's VMM checks the name, its kernel decides. */
		json_object_object_add(args, "congestion_control",
				       json_object_new_string(val));
		return 0;
	}
	return cli_option_error(cmd, c, argv);
}

/* ---- progress display ------------------------------------------------ */

/* Width of the progress bar, when the terminal leaves room for it. */
#define BAR_MIN 5
#define BAR_MAX 30

struct progress {
	bool tty;
	bool drawn;		/* a bar is on the screen */
	int64_t start, last_draw;
	char state[24];
	double rate;		/* smoothed bytes per second, 0 = unknown */
	double prev_bytes, prev_ms;
	bool have_prev;
	double stopped_ms;	/* the migration's clock when the guest paused */
};

static void progress_init(struct progress *p)
{
	memset(p, 0, sizeof(*p));
	p->tty = isatty(STDERR_FILENO);
	p->start = now_ms();
	snprintf(p->state, sizeof(p->state), "starting");
}

static void progress_clear(struct progress *p)
{
	if (p->tty && p->drawn)
		fputs("\r\033[K", stderr);
	p->drawn = false;
}

static int term_columns(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
		return ws.ws_col;
	return 80;
}

/* Track the transfer rate from successive samples of bytes moved. */
static void progress_sample(struct progress *p, json_object *stats)
{
	double bytes = cli_num(stats, "bytes", NAN);
	double ms = cli_num(stats, "total_ms", NAN);
	double inst;

	if (isnan(bytes) || isnan(ms))
		return;
	if (p->have_prev && ms - p->prev_ms >= 50 && bytes >= p->prev_bytes) {
		inst = (bytes - p->prev_bytes) * 1000 / (ms - p->prev_ms);
		p->rate = p->rate > 0 ? 0.5 * p->rate + 0.5 * inst : inst;
	}
	if (!p->have_prev || ms - p->prev_ms >= 50) {
		p->prev_bytes = bytes;
		p->prev_ms = ms;
		p->have_prev = true;
	}
}

/* Past the switch to postcopy: the guest runs at the destination and
 * pages follow. */
static bool in_postcopy(const struct progress *p)
{
	return !strcmp(p->state, "postcopy");
}

/* "pass 3", "stopped pass 9", or just the state before the first pass. */
static void progress_prefix(struct progress *p, json_object *stats, char *buf,
			    size_t len)
{
	double pass = cli_num(stats, "pass", 0);

	if (pass < 1 || in_postcopy(p))
		snprintf(buf, len, "%s", p->state);
	else if (!strcmp(p->state, "precopy"))
		snprintf(buf, len, "pass %.0f", pass);
	else
		snprintf(buf, len, "%s pass %.0f", p->state, pass);
}

/* The pass under way is the final one, sent with the guest paused. */
static bool final_pass(const struct progress *p)
{
	return !strcmp(p->state, "stopped");
}

/* Postcopy's progress: pages the destination asked for, pages pushed in
 * the background, pages not there yet; @frac receives the share of RAM
 * at the destination. */
static void postcopy_text(json_object *stats, char *buf, size_t len,
			  double *frac)
{
	double ram = cli_num(stats, "ram_bytes", 0);
	double missing = cli_num(stats, "pages_missing", 0);

	*frac = ram > 0 ? 1 - missing * 4096 / ram : 0;
	if (*frac < 0)
		*frac = 0;
	snprintf(buf, len, "%3.0f%% at the destination: %.0f pages requested, "
		 "%.0f pushed, %.0f missing", *frac * 100,
		 cli_num(stats, "pages_requested", 0),
		 cli_num(stats, "pages_pushed", 0), missing);
}

/* The bar takes whatever room the text leaves, within limits. */
static int bar_width(int cols, size_t text)
{
	int room = cols - 1 - (int)text - 4; /* " [" "] " */

	if (room < BAR_MIN)
		return 0;
	return room > BAR_MAX ? BAR_MAX : room;
}

static void progress_draw(struct progress *p, json_object *stats)
{
	double done = cli_num(stats, "pass_bytes", 0);
	double total = cli_num(stats, "pass_total", 0);
	double rate = p->rate > 0 ? p->rate : cli_num(stats, "mb_per_s", 0) * 1e6;
	char prefix[48], text[160], bar[BAR_MAX + 1], moved[32], eta[24];
	double frac = 0;
	int cols = term_columns(), width, filled;

	if (total > 0)
		frac = done >= total ? 1.0 : done / total;
	progress_prefix(p, stats, prefix, sizeof(prefix));
	cli_format_bytes(cli_num(stats, "bytes", 0), moved, sizeof(moved));
	if (rate > 0 && total > done)
		snprintf(eta, sizeof(eta), "%.1fs", (total - done) / rate);
	else
		snprintf(eta, sizeof(eta), "-");
	/* Fixed-width fields keep the line (and the bar) from jittering.
	 * Once the guest is paused, the dirty rate and the predicted
	 * downtime are those of the last precopy pass: not shown again. */
	if (in_postcopy(p))
		postcopy_text(stats, text, sizeof(text), &frac);
	else if (final_pass(p))
		snprintf(text, sizeof(text), "%3.0f%% %8s %4.0f MB/s guest paused",
			 frac * 100, moved, rate / 1e6);
	else
		snprintf(text, sizeof(text), "%3.0f%% %8s %4.0f MB/s dirty %4.1f MB/s "
			 "ETA %4s downtime %.1fms", frac * 100, moved, rate / 1e6,
			 cli_num(stats, "dirty_mb_per_s", 0), eta,
			 cli_num(stats, "expected_downtime_ms", 0));
	width = cli_num(stats, "pass", 0) < 1 ? 0 :
		bar_width(cols, strlen(prefix) + strlen(text));
	filled = (int)(frac * width + 0.5);
	memset(bar, '#', (size_t)filled);
	memset(bar + filled, '.', (size_t)(width - filled));
	bar[width] = '\0';
	/* A line that wraps can no longer be redrawn in place: cut it. */
	if (cli_num(stats, "pass", 0) < 1)
		fprintf(stderr, "\r%.*s\033[K", cols - 1, prefix);
	else if (width)
		fprintf(stderr, "\r%s [%s] %.*s\033[K", prefix, bar,
			cols - 5 - (int)strlen(prefix) - width, text);
	else
		fprintf(stderr, "\r%s %.*s\033[K", prefix,
			cols - 2 - (int)strlen(prefix), text);
	fflush(stderr);
	p->drawn = true;
	p->last_draw = now_ms();
}

static void progress_plain(struct progress *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void progress_plain(struct progress *p, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "[%7.2f s] ", (double)(now_ms() - p->start) / 1000);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

static void progress_state(struct progress *p, json_object *data)
{
	json_object *stats = cli_get(data, "stats");
	const char *state = cli_str(data, "state",
				    cli_str(stats, "state", "?"));

	if (!strcmp(state, p->state))
		return;
	snprintf(p->state, sizeof(p->state), "%s", state);
	if (final_pass(p))
		p->stopped_ms = cli_num(stats, "total_ms", 0);
	if (p->tty)
		progress_draw(p, stats);
	else
		progress_plain(p, "state %s", state);
}

static void progress_pass(struct progress *p, json_object *stats)
{
	char moved[32], dirty[32];

	progress_sample(p, stats);
	if (p->tty) {
		progress_draw(p, stats);
		return;
	}
	cli_format_bytes(cli_num(stats, "bytes", 0), moved, sizeof(moved));
	if (final_pass(p)) {
		/* The rates and the prediction in @stats are still those of
		 * the last precopy pass; what is new is this pass's size and
		 * how long it kept the guest paused so far. */
		cli_format_bytes(cli_num(stats, "pass_bytes", 0), dirty,
				 sizeof(dirty));
		progress_plain(p, "pass %.0f done (final, guest paused): %s in "
			       "%.1f ms, %s moved", cli_num(stats, "pass", 0),
			       dirty, cli_num(stats, "total_ms", 0) - p->stopped_ms,
			       moved);
		return;
	}
	cli_format_bytes(cli_num(stats, "dirty_bytes", 0), dirty, sizeof(dirty));
	progress_plain(p, "pass %.0f done: %s moved, %.0f MB/s, %s dirty "
		       "(%.1f MB/s), expected downtime %.1f ms",
		       cli_num(stats, "pass", 0), moved,
		       cli_num(stats, "mb_per_s", 0), dirty,
		       cli_num(stats, "dirty_mb_per_s", 0),
		       cli_num(stats, "expected_downtime_ms", 0));
}

static void progress_throttle(struct progress *p, json_object *stats)
{
	double pct = cli_num(stats, "throttle_pct", 0);

	if (p->tty)
		progress_clear(p);
	if (pct > 0)
		progress_plain(p, "auto-converge: vCPUs throttled to %.0f%%", pct);
	else
		progress_plain(p, "auto-converge: throttle lifted");
	if (p->tty)
		progress_draw(p, stats);
}

static void progress_update(struct progress *p, json_object *stats)
{
	char text[160];
	double frac;

	progress_sample(p, stats);
	/* Redraw at most ten times a second. */
	if (p->tty && now_ms() - p->last_draw >= 100)
		progress_draw(p, stats);
	/* Postcopy has no passes to mark its progress: a line a second. */
	if (!p->tty && in_postcopy(p) && now_ms() - p->last_draw >= 1000) {
		postcopy_text(stats, text, sizeof(text), &frac);
		progress_plain(p, "postcopy: %s", text);
		p->last_draw = now_ms();
	}
}

/* ---- following a migration ------------------------------------------- */

struct follow {
	struct progress prog;
	json_object *report;	/* from DONE, or made when postcopy paused */
};

/* A postcopy whose link broke waits for an operator, who may be elsewhere:
 * following ends with a report of the pause (status "postcopy-paused"),
 * made from the stats. */
static json_object *paused_report(json_object *stats)
{
	json_object *r = NULL;

	if (!stats || json_object_deep_copy(stats, &r, NULL) < 0)
		return cli_failed_report("postcopy paused (no statistics)");
	json_object_object_add(r, "status",
			       json_object_new_string("postcopy-paused"));
	json_object_object_add(r, "passes", json_object_new_int64(
				       (int64_t)cli_num(stats, "pass", 0)));
	return r;
}

static void follow_event(void *opaque, const char *event, json_object *data)
{
	struct follow *f = opaque;
	json_object *stats = cli_get(data, "stats");

	if (f->report)
		return; /* DONE is the last event of a migration */
	if (!strcmp(event, "DONE")) {
		progress_clear(&f->prog);
		f->report = data ? json_object_get(data) : cli_failed_report(
						"DONE event without a report");
	} else if (!strcmp(event, "STATE") &&
		   !strcmp(cli_str(data, "state", ""), "postcopy-paused")) {
		progress_clear(&f->prog);
		f->report = paused_report(stats);
	} else if (!strcmp(event, "STATE")) {
		progress_state(&f->prog, data);
	} else if (!strcmp(event, "PASS")) {
		progress_pass(&f->prog, stats);
	} else if (!strcmp(event, "PROGRESS")) {
		progress_update(&f->prog, stats);
	} else if (!strcmp(event, "THROTTLE")) {
		progress_throttle(&f->prog, stats);
	} else if (!strcmp(event, "OWNER") && !f->prog.tty) {
		progress_plain(&f->prog, "owner %s", cli_str(data, "owner", "?"));
	}
}

/* Ask for the status when events are quiet: proves ferry-vm is alive and
 * keeps the display fresh. */
static int follow_refresh(struct api_client *c, struct follow *f)
{
	json_object *st;
	int ret;

	ret = api_client_execute(c, "status", NULL, CLI_REPLY_TIMEOUT_MS, &st);
	if (ret < 0)
		return ret;
	if (!f->report && f->prog.tty && cli_get(st, "migration"))
		progress_update(&f->prog, cli_get(st, "migration"));
	json_object_put(st);
	return 0;
}

/* The first interrupt cancels (when asked to), the next one gives up. */
static int follow_interrupt(struct api_client *c, struct follow *f,
			    const struct cli_follow_opts *o, int *count)
{
	int ret;

	if (!o->cancel_on_interrupt || ++*count > 1)
		return -EINTR;
	progress_clear(&f->prog);
	fprintf(stderr, "ferry: interrupted, cancelling the migration "
			"(interrupt again to stop waiting)\n");
	ret = api_client_execute(c, "cancel", NULL, CLI_REPLY_TIMEOUT_MS, NULL);
	/* Refused: in postcopy (the reason says what to do), or it just
	 * ended. */
	if (ret == -EREMOTEIO)
		fprintf(stderr, "ferry: cancel refused: %s\n", api_client_errmsg(c));
	return ret == -EREMOTEIO ? 0 : ret;
}

static int follow_loop(struct api_client *c, struct follow *f,
		       const struct cli_follow_opts *o, char *err,
		       size_t errlen)
{
	int64_t deadline = o->timeout_ms < 0 ? -1 : now_ms() + o->timeout_ms;
	int ret, interrupts = 0;

	while (!f->report) {
		ret = api_client_wait(c, 1000);
		if (ret == -ETIMEDOUT)
			ret = follow_refresh(c, f);
		if (ret == -EINTR)
			ret = follow_interrupt(c, f, o, &interrupts);
		if (ret == -EINTR) {
			snprintf(err, errlen, "interrupted%s", interrupts ?
				 " (cancel requested; see 'ferry status')" : "");
			return ret;
		}
		if (ret < 0 && !f->report) {
			snprintf(err, errlen, "lost track of the migration: %s",
				 api_client_errmsg(c));
			return ret;
		}
		if (f->report)
			break;
		if (o->tick && (ret = o->tick(o->opaque, err, errlen)) < 0)
			return ret;
		if (deadline >= 0 && now_ms() > deadline) {
			snprintf(err, errlen, "the migration did not finish within %d s",
				 o->timeout_ms / 1000);
			return -ETIMEDOUT;
		}
	}
	return 0;
}

/**
 * cli_follow_migration() - start a migration and follow it to its end.
 * @c: a client connected to the source ferry-vm.
 * @args: the arguments of the migrate command; consumed.
 * @opts: behaviour on interrupt, overall timeout, periodic check.
 * @report: receives the report of the DONE event (a new reference).
 * @err: receives a one-line message on failure.
 * @errlen: size of @err.
 *
 * Shows progress on stderr: a bar redrawn in place on a terminal, else a
 * line per state change and per pass (and a line a second in postcopy).
 * A postcopy that pauses ends the wait with a report whose status is
 * "postcopy-paused".
 *
 * Return: 0 with a report (whatever its status); negative when the
 * migration could not be started or followed (no report).
 */
int cli_follow_migration(struct api_client *c, struct json_object *args,
			 const struct cli_follow_opts *opts,
			 struct json_object **report, char *err, size_t errlen)
{
	struct follow f;
	int ret;

	*report = NULL;
	progress_init(&f.prog);
	f.report = NULL;
	api_client_set_events(c, follow_event, &f);
	api_client_set_interrupt(c, cli_interrupt_counter());
	ret = api_client_execute(c, opts->command ? opts->command : "migrate",
				 args, CLI_REPLY_TIMEOUT_MS, NULL);
	if (ret < 0) {
		snprintf(err, errlen, "cannot %s the migration: %s",
			 opts->command ? "resume" : "start", api_client_errmsg(c));
	} else {
		ret = follow_loop(c, &f, opts, err, errlen);
	}
	progress_clear(&f.prog);
	api_client_set_events(c, NULL, NULL);
	if (ret < 0) {
		json_object_put(f.report);
		return ret;
	}
	*report = f.report;
	return 0;
}

/* ---- commands -------------------------------------------------------- */

struct command {
	const char *name;
	const char *summary;
	int (*run)(int argc, char **argv);
};

static const char migrate_usage[] =
	"Usage: ferry migrate SOCKET URI [OPTIONS]\n"
	"\n"
	"Migrate the guest of the ferry-vm whose API socket is SOCKET to URI,\n"
	"showing progress until the migration ends. URI is one of:\n"
	"  tcp:HOST:PORT, unix:PATH  where a destination ferry-vm started with\n"
	"                            --incoming URI listens\n"
	"  file:PATH                 a snapshot: the guest is written to PATH in\n"
	"                            passes while it runs, then stays paused (the\n"
	"                            file takes it over; 'ferry snapshot' writes\n"
	"                            one and lets the guest run on). PATH appears\n"
	"                            only when complete; 'ferry-vm --incoming\n"
	"                            file:PATH' restores it\n"
	"\n"
	"Options:\n"
	"  --max-passes N           most precopy passes before the timeout strategy\n"
	"  --max-precopy-ms N       longest precopy phase before it\n"
	"  --max-pause-ms N         longest the guest may stay paused before the\n"
	"                           destination is ready to run it; past it the\n"
	"                           source gives up and resumes it (default 0:\n"
	"                           4 x --downtime-ms, at least 2000, and at\n"
	"                           least 3 x the pause predicted when it began)\n"
	"  --stall-timeout-ms N     the stall limit (500 to 3600000; default: the\n"
	"                           ferry-vm's --stall-timeout-ms, else 10000): a\n"
	"                           destination that sends or takes nothing for\n"
	"                           that long (frozen, or the link black-holed)\n"
	"                           fails the migration with 'timeout'; before the\n"
	"                           point of no return the guest resumes here.\n"
	"                           'ferry cancel' ends a stalled migration at once\n"
	"  --timeout-strategy S     cancel (give up, the source keeps running),\n"
	"                           switchover (pause anyway and finish) or\n"
	"                           postcopy (switch to postcopy; as switchover\n"
	"                           when the destination does not offer it)\n"
	"  --postcopy               switch to postcopy when precopy cannot meet\n"
	"                           the downtime limit (passes stop shrinking, or\n"
	"                           --max-passes / --max-precopy-ms is reached):\n"
	"                           the destination runs the guest, its memory\n"
	"                           follows on demand and in the background\n"
	"                           ('ferry postcopy SOCKET' switches at once)\n"
	"  --postcopy-after-passes N  switch to postcopy after N precopy passes\n"
	"                           (1 to --max-passes, default 30)\n"
	"  --resume                 go on with this source's migration paused in\n"
	"                           postcopy, connecting to URI, where 'ferry\n"
	"                           recover DST_SOCKET URI' made the destination\n"
	"                           listen; takes no other migration option\n"
	"  --record-stream FILE     also write the stream to FILE (ferry inspect\n"
	"                           reads it); uses a single connection\n"
	"  --local                  local migration (URI unix:PATH, a destination\n"
	"                           ferry-vm on this host): pass the guest RAM's\n"
	"                           memfd over the socket instead of copying it;\n"
	"                           the destination maps the same pages, the\n"
	"                           guest pauses for its state only. Needs\n"
	"                           --memory-backend memfd or hugetlb on the\n"
	"                           source; the source's RAM is unmapped once the\n"
	"                           destination runs the guest\n"
	"  --json                   print the report as one JSON object on stdout\n"
	"  -h, --help               show this help\n";

static const char migrate_usage_tail[] =
	"\n"
	"Progress goes to stderr. Ctrl-C cancels the migration; a second Ctrl-C\n"
	"stops waiting for it. In postcopy a cancel is refused (the guest may\n"
	"run at the destination); when its link breaks, both sides pause and\n"
	"this command ends saying how to recover.\n"
	"Exit status: 0 completed, 1 failed or cancelled, 2 usage error,\n"
	"3 SOCKET cannot be reached, 4 paused in postcopy (waiting for 'ferry\n"
	"recover' and 'ferry migrate --resume', or 'ferry resume --force'),\n"
	"130 a second Ctrl-C stopped waiting.\n";

static const char status_usage[] =
	"Usage: ferry status SOCKET [--json]\n"
	"\n"
	"Show the guest and migration status of the ferry-vm whose API socket is\n"
	"SOCKET (source or destination).\n"
	"\n"
	"Options:\n"
	"  --json       print the status object as one line of JSON\n"
	"  -h, --help   show this help\n"
	"\n"
	"Exit status: 0 ok, 1 error reply, 2 usage error, 3 SOCKET cannot be reached.\n";

static const char cancel_usage[] =
	"Usage: ferry cancel SOCKET\n"
	"\n"
	"Cancel the migration running on the ferry-vm whose API socket is SOCKET.\n"
	"The source keeps running its guest unless the destination already owns\n"
	"it. The client that started the migration reports how it ended.\n"
	"A migration in postcopy is not cancelled (the guest may already run at\n"
	"the destination, and neither side holds all of its memory): the refusal\n"
	"says why and what to do instead.\n"
	"\n"
	"Exit status: 0 requested, 1 refused, 2 usage error, 3 SOCKET cannot be\n"
	"reached.\n";

static const char help_usage[] =
	"Usage: ferry help [COMMAND]\n"
	"\n"
	"Show the list of commands, or the help of COMMAND.\n";

/**
 * cli_option_error() - report what getopt_long() did not like: a missing
 * value (':') or an unknown option (anything else).
 *
 * Return: CLI_EXIT_USAGE.
 */
int cli_option_error(const char *cmd, int c, char **argv)
{
	const char *opt = argv[optind - 1];

	if (c == ':')
		return cli_usage_error(cmd, "option '%s' needs a value", opt);
	return cli_usage_error(cmd, "unknown option '%s'", opt);
}

static int open_client(const char *cmd, const char *path,
		       struct api_client **c)
{
	char err[300];

	if (api_client_open(path, CLI_REPLY_TIMEOUT_MS, c, err, sizeof(err)) < 0) {
		fprintf(stderr, "ferry %s: %s\n", cmd, err);
		return -1;
	}
	return 0;
}

/* getopt_long's table: @own options, then the shared tuning ones. */
void cli_options_join(struct option *out, size_t cap, const struct option *own)
{
	size_t n = 0;

	for (; own->name && n + 1 < cap; own++)
		out[n++] = *own;
	for (own = cli_tuning_options; own->name && n + 1 < cap; own++)
		out[n++] = *own;
	out[n] = (struct option){ 0 };
}

/* --postcopy and --postcopy-after-passes: two ways to say when. */
static int postcopy_option(json_object *args, const char *mode,
			   const char *passes)
{
	if (json_object_object_get_ex(args, "postcopy", NULL))
		return cli_usage_error("migrate", "--postcopy and "
				       "--postcopy-after-passes say when to switch: "
				       "give one of them, once");
	if (passes && tuning_uint("migrate", args, VM_ARG_POSTCOPY_AFTER, passes))
		return CLI_EXIT_USAGE;
	json_object_object_add(args, "postcopy", json_object_new_string(mode));
	return 0;
}

/* --resume goes on with the migration as it was started: only the URI
 * and --json go with it. */
static int resume_check(json_object *args, bool resume)
{
	if (!resume || !json_object_object_length(args))
		return 0;
	return cli_usage_error("migrate", "--resume goes on with the migration "
			       "paused in postcopy as it was started: it takes "
			       "no other migration option");
}

/* Parse the options of migrate into the arguments of the command. */
static int migrate_options(int argc, char **argv, json_object *args,
			   bool *json, bool *resume)
{
	static const char *const strategies[] = { "cancel", "switchover",
						  "postcopy", NULL };
	static const struct option own[] = {
		{ "max-passes", required_argument, NULL, 'p' },
		{ "max-precopy-ms", required_argument, NULL, 'P' },
		{ "max-pause-ms", required_argument, NULL, 'Z' },
		{ "stall-timeout-ms", required_argument, NULL, 'T' },
		{ "timeout-strategy", required_argument, NULL, 's' },
		{ "record-stream", required_argument, NULL, 'R' },
		{ "postcopy", no_argument, NULL, 'o' },
		{ "postcopy-after-passes", required_argument, NULL, 'O' },
		{ "resume", no_argument, NULL, 'r' },
		{ "local", no_argument, NULL, 'l' },
		{ "json", no_argument, NULL, 'j' },
		{ "tls-creds", required_argument, NULL, CLI_OPT_TLS_CREDS },
		{ "tls-psk", required_argument, NULL, CLI_OPT_TLS_PSK },
		{ "tls-peer", required_argument, NULL, CLI_OPT_TLS_PEER },
		{ "tls-priority", required_argument, NULL, CLI_OPT_TLS_PRIORITY },
		{ "tls-engine", required_argument, NULL, CLI_OPT_TLS_ENGINE },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct option opts[32];
	int c, ret = 0;

	cli_options_join(opts, 32, own);
	while (ret == 0 && (c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			ret = tuning_uint("migrate", args, VM_ARG_MAX_PASSES, optarg);
			break;
		case 'P':
			ret = tuning_uint("migrate", args, VM_ARG_MAX_PRECOPY, optarg);
			break;
		case 'Z':
			ret = tuning_uint("migrate", args, VM_ARG_MAX_PAUSE, optarg);
			break;
		case 'T':
			ret = tuning_uint("migrate", args, VM_ARG_STALL_TIMEOUT,
					  optarg);
			break;
		case 's':
			ret = tuning_name("migrate", args, "timeout_strategy",
					  "--timeout-strategy", optarg, strategies);
			break;
		case 'R':
			json_object_object_add(args, "record_stream",
					       json_object_new_string(optarg));
			break;
		case 'o':
			ret = postcopy_option(args, "auto", NULL);
			break;
		case 'O':
			ret = postcopy_option(args, "after", optarg);
			break;
		case 'r':
			*resume = true;
			break;
		case 'l':
			json_object_object_add(args, "local",
					       json_object_new_boolean(true));
			break;
		case 'j':
			*json = true;
			break;
		case CLI_OPT_TLS_CREDS:
		case CLI_OPT_TLS_PSK:
		case CLI_OPT_TLS_PEER:
		case CLI_OPT_TLS_PRIORITY:
		case CLI_OPT_TLS_ENGINE:
			ret = cli_tls_option("migrate", c, optarg, args);
			break;
		case 'h':
			fputs(migrate_usage, stdout);
			fputs(cli_tls_usage, stdout);
			fputs(cli_tuning_usage, stdout);
			fputs(migrate_usage_tail, stdout);
			return -1;
		default:
			ret = cli_tuning_option("migrate", c, argv, args);
		}
	}
	if (ret == 0 && argc - optind != 2)
		return cli_usage_error("migrate", "expected SOCKET and URI");
	return ret ? ret : resume_check(args, *resume);
}

static int cmd_migrate(int argc, char **argv)
{
	struct cli_follow_opts fo = { .cancel_on_interrupt = true,
				      .timeout_ms = -1 };
	json_object *args = json_object_new_object(), *report = NULL;
	struct api_client *c = NULL;
	bool json = false, resume = false;
	char err[600];
	int ret;

	ret = migrate_options(argc, argv, args, &json, &resume);
	if (ret != 0) {
		json_object_put(args);
		return ret < 0 ? CLI_EXIT_OK : ret;
	}
	json_object_object_add(args, "uri", json_object_new_string(argv[optind + 1]));
	if (resume)
		fo.command = "recover";
	cli_signals_install();
	ret = cli_open_for_report("migrate", argv[optind], json, args, &c);
	if (ret)
		return ret;
	ret = cli_follow_migration(c, args, &fo, &report, err, sizeof(err));
	api_client_close(c);
	return cli_finish_report("migrate", "migration", report, ret, json, err);
}

static int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct api_client *c;
	json_object *st;
	bool json = false;
	int opt;

	while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(status_usage, stdout);
			return CLI_EXIT_OK;
		}
		if (opt != 'j')
			return cli_option_error("status", opt, argv);
		json = true;
	}
	if (argc - optind != 1)
		return cli_usage_error("status", "expected SOCKET");
	if (open_client("status", argv[optind], &c) < 0)
		return CLI_EXIT_UNREACHABLE;
	if (api_client_execute(c, "status", NULL, CLI_REPLY_TIMEOUT_MS, &st) < 0) {
		fprintf(stderr, "ferry status: %s\n", api_client_errmsg(c));
		api_client_close(c);
		return CLI_EXIT_FAIL;
	}
	if (json)
		cli_print_json(st);
	else
		cli_print_status(api_client_greeting(c), st);
	json_object_put(st);
	api_client_close(c);
	return CLI_EXIT_OK;
}

static int cmd_cancel(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct api_client *c;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (opt != 'h')
			return cli_option_error("cancel", opt, argv);
		fputs(cancel_usage, stdout);
		return CLI_EXIT_OK;
	}
	if (argc - optind != 1)
		return cli_usage_error("cancel", "expected SOCKET");
	if (open_client("cancel", argv[optind], &c) < 0)
		return CLI_EXIT_UNREACHABLE;
	ret = api_client_execute(c, "cancel", NULL, CLI_REPLY_TIMEOUT_MS, NULL);
	if (ret < 0)
		fprintf(stderr, "ferry cancel: %s\n", api_client_errmsg(c));
	else
		printf("cancel requested\n");
	api_client_close(c);
	return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

static int cmd_help(int argc, char **argv);

/*
 * The subcommands. inspect and schema (tools/inspect.c) work offline, on
 * streams and on ferry-vm's device descriptions.
 */
static const struct command commands[] = {
	{ "migrate", "migrate a running ferry-vm's guest to a destination",
	  cmd_migrate },
	{ "snapshot", "save a running ferry-vm's guest to a file while it runs",
	  cmd_snapshot },
	{ "status", "show a ferry-vm's guest and migration status",
	  cmd_status },
	{ "cancel", "cancel a ferry-vm's running migration",
	  cmd_cancel },
	{ "postcopy", "switch a running migration to postcopy now",
	  cmd_postcopy },
	{ "recover", "make a destination paused in postcopy listen again",
	  cmd_recover },
	{ "resume", "run a source's guest again, giving up its paused postcopy",
	  cmd_resume },
	{ "demo", "start two ferry-vms, migrate between them, verify",
	  cmd_demo },
	{ "inspect", "decode and check a recorded stream or a snapshot file",
	  cmd_inspect },
	{ "schema", "show the device-state schemas of ferry-vm's devices",
	  cmd_schema },
	{ "tls-certs", "make a throwaway CA and TLS certificates (tests, demos)",
	  cmd_tls_certs },
	{ "help", "show help for a command", cmd_help },
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

static void print_usage(FILE *out)
{
	fprintf(out,
		"Usage: ferry COMMAND [ARGS...]\n"
		"\n"
		"ferry moves a running virtual machine between hosts. This command\n"
		"drives the reference VMM, ferry-vm, over its API socket.\n"
		"\n"
		"Commands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(out,
		"\n"
		"Run 'ferry help COMMAND' or 'ferry COMMAND --help' for details.\n"
		"Options: -h, --help (this help), -V, --version.\n");
}

static int cmd_help(int argc, char **argv)
{
	const struct command *cmd;

	if (argc < 2) {
		print_usage(stdout);
		return CLI_EXIT_OK;
	}
	if (argc > 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(help_usage, argc > 2 ? stderr : stdout);
		return argc > 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
	}
	cmd = find_command(argv[1]);
	if (!cmd) {
		fprintf(stderr, "ferry help: no command '%s'. Commands: ", argv[1]);
		for (size_t i = 0; i < N_COMMANDS; i++)
			fprintf(stderr, "%s%s", i ? ", " : "", commands[i].name);
		fputs(".\n", stderr);
		return CLI_EXIT_USAGE;
	}
	/* Each command prints its own help, shared parts included. */
	{
		char *args[] = { argv[1], "--help", NULL };

		optind = 0;
		return cmd->run(2, args);
	}
}

int main(int argc, char **argv)
{
	const struct command *cmd;

	signal(SIGPIPE, SIG_IGN);
	if (argc < 2) {
		print_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		print_usage(stdout);
		return CLI_EXIT_OK;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("ferry %s\n", FERRY_VERSION_STRING);
		return CLI_EXIT_OK;
	}
	cmd = find_command(argv[1]);
	if (!cmd) {
		fprintf(stderr, "ferry: unknown command '%s'\n"
				"Try 'ferry --help'.\n", argv[1]);
		return CLI_EXIT_USAGE;
	}
	/* getopt_long() prints nothing itself (':' and opterr 0); the
	 * command's own name leads every message. */
	opterr = 0;
	optind = 1;
	return cmd->run(argc - 1, argv + 1);
}
