// SPDX-License-Identifier: MIT
/*
 * demo.c - "ferry demo": a whole live migration on one machine.
 *
 * Starts a destination and a source ferry-vm in a temporary directory,
 * waits until the source guest's workload is in its steady state, migrates
 * it over loopback TCP with the same progress display as "ferry migrate",
 * lets the destination guest run a little, and reports whether the guest
 * arrived intact: the stream's digest check and the running destination's
 * own page checks must both agree. Whatever happens, both VMs are stopped
 * and reaped before the command returns.
 */
#include "cli.h"
#include "migrate_args.h" /* the TLS engines' names */
#include "tlsgen.h"

#include "apiclient.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ctype.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#define READY_TIMEOUT_MS 10000	   /* both API sockets answer (+5 s/GiB) */
#define SETTLE_EXTRA_MS 500	   /* running time after the guest settled */
#define DST_RUN_MS 300		   /* destination runs before the check */
#define VERIFY_TIMEOUT_MS 5000	   /* destination publishes its verdict */
#define MIGRATE_TIMEOUT_MS 300000  /* the whole migration */
#define QUIT_TIMEOUT_MS 5000	   /* a VM exits after "quit" */

const char cli_demo_usage[] =
	"Usage: ferry demo [OPTIONS]\n"
	"\n"
	"Start a destination and a source ferry-vm on this machine, migrate the\n"
	"running guest over loopback TCP, check it arrived intact, and stop both.\n"
	"\n"
	"Options:\n"
	"  --memory SIZE        guest memory, e.g. 256M, 1G (default 1G)\n"
	"  --vcpus N            vCPUs (default 2)\n"
	"  --workload W         ab, random, fill, text or idle (default ab);\n"
	"                       fill and text write RAM once (random data,\n"
	"                       compressible words), then idle\n"
	"  --dirty-rate R       the source guest's write rate in MB/s\n"
	"  --memory-backend B   anon (transparent huge pages), memfd or hugetlb\n"
	"                       (default anon, as ferry-vm's)\n"
	"  --verify MODE        how both VMs check the migrated guest: background\n"
	"                       (default: after the pause, so the downtime does\n"
	"                       not include it), strict (inside the pause, as part\n"
	"                       of the downtime) or off\n"
	"  --no-verify          the same as --verify off\n"
	"  --tls                TLS with mutual x509 authentication on every\n"
	"                       connection, with a throwaway CA made in the\n"
	"                       demo's temporary directory (removed after)\n"
	"  --tls-creds DIR      TLS with the certificates of DIR (ferry-vm\n"
	"                       --tls-creds: both VMs use it)\n"
	"  --tls-psk FILE       TLS with a pre-shared key (identity:hexkey)\n"
	"  --tls-priority STR   GnuTLS priority string for both VMs (ciphers)\n"
	"  --tls-engine E       what seals and opens TLS 1.3 records, for both\n"
	"                       VMs: auto (default: Intel's ipsec-mb where ferry\n"
	"                       was built with it and the CPU has AES-NI, else\n"
	"                       GnuTLS), gnutls, ipsec-mb or ktls (that engine\n"
	"                       or the migration fails, saying why); ferry-vm\n"
	"                       --tls-engine\n"
	"  --json               print the report as one JSON object on stdout\n"
	"  --keep-logs          keep the temporary directory with the VMs' logs\n"
	"  -h, --help           show this help\n"
	"\n"
	"Migration options, as for ferry migrate:\n";

static const char demo_usage_tail[] =
	"\n"
	"ferry-vm is found through $FERRY_VM, then next to this program (and in\n"
	"../vm/ of a build tree), then in $PATH.\n"
	"Exit status: 0 completed and verified, 1 anything else, 2 usage error.\n";

struct demo_opts {
	uint64_t memory;
	char memory_arg[32];	/* as passed to ferry-vm */
	uint64_t vcpus;
	const char *workload;
	const char *dirty_rate; /* NULL: the workload's default */
	const char *backend;	/* NULL: ferry-vm's default */
	json_object *margs;	/* the migrate command's arguments (tuning) */
	const char *verify_mode; /* background, strict or off */
	bool verify, json, keep_logs;
	bool tls;		/* --tls: a throwaway CA in the demo's directory */
	const char *tls_creds;	/* --tls-creds DIR (or that directory) */
	const char *tls_psk;	/* --tls-psk FILE */
	const char *tls_priority; /* --tls-priority STR */
	const char *tls_engine;	/* --tls-engine E */
};

struct vm_proc {
	const char *name;	/* "source", "destination" */
	const char *tag;	/* "src", "dst": the files' names */
	pid_t pid;		/* 0 once reaped */
	int status;		/* wait status once reaped */
	char sock[PATH_MAX];
	char log[PATH_MAX];
	struct api_client *api;
};

struct demo {
	struct demo_opts o;
	char vm_path[PATH_MAX];
	char dir[64];
	int port;
	struct vm_proc src, dst;
	bool src_migrated;	/* the source may exit from now on */
};

__attribute__((format(printf, 3, 4)))
static int demo_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- options --------------------------------------------------------- */

/* ferry-vm takes sizes with a suffix; give it the shortest exact one. */
static void format_size_arg(uint64_t v, char *buf, size_t len)
{
	static const char units[] = "KMGT";
	int i = -1;

	while (i < 3 && v % 1024 == 0) {
		v /= 1024;
		i++;
	}
	if (i < 0)
		snprintf(buf, len, "%llu", (unsigned long long)v);
	else
		snprintf(buf, len, "%llu%c", (unsigned long long)v, units[i]);
}

static int demo_option(struct demo_opts *o, int c, char **argv)
{
	static const char *const workloads[] = { "ab", "random", "fill", "text",
						 "idle", NULL };
	static const char *const backends[] = { "memfd", "anon", "hugetlb", NULL };
	static const char *const verify_modes[] = { "background", "strict",
						    "off", NULL };
	double rate;

	switch (c) {
	case 'm':
		if (cli_parse_size(optarg, &o->memory) < 0 || o->memory % 4096)
			return cli_usage_error("demo", "--memory wants a size such as "
					       "256M or 1G (whole pages), not '%s'",
					       optarg);
		break;
	case 'c':
		if (cli_parse_uint(optarg, 1024, &o->vcpus) < 0 || !o->vcpus)
			return cli_usage_error("demo", "--vcpus wants a number from 1 "
					       "to 1024, not '%s'", optarg);
		break;
	case 'w':
		o->workload = optarg;
		return cli_check_name("demo", "--workload", optarg, workloads);
	case 'r':
		if (cli_parse_rate(optarg, &rate) < 0)
			return cli_usage_error("demo", "--dirty-rate wants MB/s, "
					       "not '%s'", optarg);
		o->dirty_rate = optarg;
		break;
	case 'B':
		o->backend = optarg;
		return cli_check_name("demo", "--memory-backend", optarg, backends);
	case 'V':
		o->verify_mode = "off";
		o->verify = false;
		break;
	case 'v':
		o->verify_mode = optarg;
		o->verify = strcmp(optarg, "off") != 0;
		return cli_check_name("demo", "--verify", optarg, verify_modes);
	case 'j':
		o->json = true;
		break;
	case 'k':
		o->keep_logs = true;
		break;
	case CLI_OPT_TLS_CREDS:
		o->tls_creds = optarg;
		break;
	case CLI_OPT_TLS_PSK:
		o->tls_psk = optarg;
		break;
	case CLI_OPT_TLS_PRIORITY:
		o->tls_priority = optarg;
		break;
	case CLI_OPT_TLS_ENGINE:
		o->tls_engine = optarg;
		return cli_check_name("demo", "--tls-engine", optarg,
				      vm_tls_engines);
	case 'T':
		o->tls = true;
		break;
	case 'h':
		fputs(cli_demo_usage, stdout);
		fputs(cli_tuning_usage, stdout);
		fputs(demo_usage_tail, stdout);
		return -1;
	default:
		return cli_tuning_option("demo", c, argv, o->margs);
	}
	return 0;
}

/* Return: 0 to run, -1 when help was printed, else an exit code. */
static int demo_options(int argc, char **argv, struct demo_opts *o)
{
	static const struct option own[] = {
		{ "memory", required_argument, NULL, 'm' },
		{ "vcpus", required_argument, NULL, 'c' },
		{ "workload", required_argument, NULL, 'w' },
		{ "dirty-rate", required_argument, NULL, 'r' },
		{ "memory-backend", required_argument, NULL, 'B' },
		{ "no-verify", no_argument, NULL, 'V' },
		{ "verify", required_argument, NULL, 'v' },
		{ "json", no_argument, NULL, 'j' },
		{ "keep-logs", no_argument, NULL, 'k' },
		{ "tls", no_argument, NULL, 'T' },
		{ "tls-creds", required_argument, NULL, CLI_OPT_TLS_CREDS },
		{ "tls-psk", required_argument, NULL, CLI_OPT_TLS_PSK },
		{ "tls-priority", required_argument, NULL, CLI_OPT_TLS_PRIORITY },
		{ "tls-engine", required_argument, NULL, CLI_OPT_TLS_ENGINE },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct option opts[32];
	int c, ret;

	*o = (struct demo_opts){ .memory = 1ull << 30, .vcpus = 2,
				 .workload = "ab", .verify = true,
				 .verify_mode = "background",
				 .margs = json_object_new_object() };
	cli_options_join(opts, 32, own);
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		ret = demo_option(o, c, argv);
		if (ret)
			return ret;
	}
	if (optind < argc)
		return cli_usage_error("demo", "unexpected argument '%s'",
				       argv[optind]);
	if (o->tls + !!o->tls_creds + !!o->tls_psk > 1)
		return cli_usage_error("demo", "--tls, --tls-creds and --tls-psk "
				       "exclude each other");
	format_size_arg(o->memory, o->memory_arg, sizeof(o->memory_arg));
	return 0;
}

/* ---- finding and starting ferry-vm ----------------------------------- */

static bool executable(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
	       access(path, X_OK) == 0;
}

static bool find_in_path(char *out, size_t len)
{
	const char *p = getenv("PATH");
	const char *end;

	while (p && *p) {
		end = strchrnul(p, ':');
		if (end > p && snprintf(out, len, "%.*s/ferry-vm", (int)(end - p),
					p) < (int)len && executable(out))
			return true;
		p = *end ? end + 1 : end;
	}
	return false;
}

/**
 * cli_find_ferry_vm() - where ferry-vm is: $FERRY_VM, else beside this
 * program (installed, or the build tree's tools/ferry next to
 * vm/ferry-vm), else $PATH.
 * @out: receives the path.
 * @len: size of @out.
 * @err: receives the reason on failure.
 * @errlen: size of @err.
 *
 * Return: 0, or -1 with @err set.
 */
int cli_find_ferry_vm(char *out, size_t len, char *err, size_t errlen)
{
	const char *env = getenv("FERRY_VM");
	char self[PATH_MAX], *slash;
	ssize_t n;

	if (env && *env) {
		if (!executable(env))
			return demo_fail(err, errlen, "FERRY_VM=%s is not an "
					 "executable file", env);
		snprintf(out, len, "%s", env);
		return 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash)
			*slash = '\0';
		if ((size_t)snprintf(out, len, "%s/ferry-vm", self) < len &&
		    executable(out))
			return 0;
		if ((size_t)snprintf(out, len, "%s/../vm/ferry-vm", self) < len &&
		    executable(out)) {
			/* Shown to the user: "build/vm/ferry-vm" reads better. */
			if (realpath(out, self))
				snprintf(out, len, "%s", self);
			return 0;
		}
	}
	if (find_in_path(out, len))
		return 0;
	return demo_fail(err, errlen, "cannot find ferry-vm: set FERRY_VM, or "
			 "build it (ninja -C build vm/ferry-vm), or put it in PATH");
}

/* A free loopback port: bind port 0, read what the kernel chose, close. */
static int free_port(char *err, size_t errlen)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t salen = sizeof(sa);
	int fd, port = -1;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &salen) == 0)
		port = ntohs(sa.sin_port);
	else
		demo_fail(err, errlen, "cannot find a free TCP port on 127.0.0.1: %s",
			  strerror(errno));
	if (fd >= 0)
		close(fd);
	return port;
}

/* In the child: own process group (the terminal's Ctrl-C reaches us, and
 * we stop the VMs in order), die with us, output to the log. */
static void child_exec(const char *path, char *const argv[], const char *log,
		       pid_t parent)
{
	int fd;

	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	signal(SIGPIPE, SIG_DFL);
	fd = open("/dev/null", O_RDONLY);
	if (fd >= 0)
		dup2(fd, STDIN_FILENO);
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
	if (fd >= 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
	}
	execv(path, argv);
	dprintf(STDERR_FILENO, "cannot execute %s: %s\n", path, strerror(errno));
	_exit(127);
}

static int spawn_vm(struct demo *d, struct vm_proc *vm, bool incoming,
		    char *err, size_t errlen)
{
	char vcpus[16], uri[64];
	const char *argv[26];
	pid_t parent = getpid();
	int n = 0;

	snprintf(vcpus, sizeof(vcpus), "%llu", (unsigned long long)d->o.vcpus);
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", d->port);
	argv[n++] = d->vm_path;
	argv[n++] = "--memory";
	argv[n++] = d->o.memory_arg;
	argv[n++] = "--vcpus";
	argv[n++] = vcpus;
	argv[n++] = "--workload";
	argv[n++] = d->o.workload;
	if (incoming) {
		argv[n++] = "--incoming";
		argv[n++] = uri;
	} else if (d->o.dirty_rate) {
		argv[n++] = "--dirty-rate";
		argv[n++] = d->o.dirty_rate;
	}
	if (d->o.backend) {
		argv[n++] = "--memory-backend";
		argv[n++] = d->o.backend;
	}
	if (d->o.tls_creds) {
		argv[n++] = "--tls-creds";
		argv[n++] = d->o.tls_creds;
	} else if (d->o.tls_psk) {
		argv[n++] = "--tls-psk";
		argv[n++] = d->o.tls_psk;
	}
	if (d->o.tls_priority) {
		argv[n++] = "--tls-priority";
		argv[n++] = d->o.tls_priority;
	}
	if (d->o.tls_engine) {
		argv[n++] = "--tls-engine";
		argv[n++] = d->o.tls_engine;
	}
	argv[n++] = "--verify";
	argv[n++] = d->o.verify_mode;
	argv[n++] = "--api-socket";
	argv[n++] = vm->sock;
	argv[n] = NULL;
	vm->pid = fork();
	if (vm->pid < 0) {
		vm->pid = 0;
		return demo_fail(err, errlen, "fork: %s", strerror(errno));
	}
	if (vm->pid == 0)
		child_exec(d->vm_path, (char *const *)argv, vm->log, parent);
	return 0;
}

/* ---- watching the VMs ------------------------------------------------ */

/* Print the last lines of a VM's log, to explain a failure. */
static void show_log_tail(const struct vm_proc *vm)
{
	char buf[2048], *line, *p;
	ssize_t n = 0;
	int fd;

	fd = open(vm->log, O_RDONLY);
	if (fd < 0)
		return;
	if (lseek(fd, 0, SEEK_END) > (off_t)sizeof(buf) - 1)
		lseek(fd, -(off_t)sizeof(buf) + 1, SEEK_END);
	else
		lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	/* Skip a partial first line unless the whole log fit. */
	line = (size_t)n == sizeof(buf) - 1 && strchr(buf, '\n') ?
		       strchr(buf, '\n') + 1 : buf;
	fprintf(stderr, "last lines of the %s's log (%s):\n", vm->name, vm->log);
	for (; *line; line = p) {
		p = strchrnul(line, '\n');
		fprintf(stderr, "  %s| %.*s\n", vm->tag, (int)(p - line), line);
		if (*p)
			p++;
	}
}

/* Has the VM exited? Reaps it if so and describes how. */
static bool vm_exited(struct vm_proc *vm, char *err, size_t errlen)
{
	int st;

	if (vm->pid == 0)
		return demo_fail(err, errlen, "the %s ferry-vm is not running",
				 vm->name) < 0;
	if (waitpid(vm->pid, &st, WNOHANG) != vm->pid)
		return false;
	vm->pid = 0;
	vm->status = st;
	if (WIFSIGNALED(st))
		demo_fail(err, errlen, "the %s ferry-vm was killed by signal %d",
			  vm->name, WTERMSIG(st));
	else
		demo_fail(err, errlen, "the %s ferry-vm exited with status %d",
			  vm->name, WEXITSTATUS(st));
	return true;
}

/* Both VMs still running (and no Ctrl-C)? */
static int check_vms(struct demo *d, char *err, size_t errlen)
{
	if (cli_interrupted())
		return demo_fail(err, errlen, "interrupted");
	if (vm_exited(&d->dst, err, errlen) ||
	    (!d->src_migrated && vm_exited(&d->src, err, errlen)))
		return -1;
	return 0;
}

static int check_vms_tick(void *opaque, char *err, size_t errlen)
{
	return check_vms(opaque, err, errlen);
}

/* Sleep @ms while watching the VMs. */
static int demo_sleep(struct demo *d, int ms, char *err, size_t errlen)
{
	int64_t end = now_ms() + ms;
	struct timespec ts;
	int64_t left;

	while ((left = end - now_ms()) > 0) {
		if (check_vms(d, err, errlen) < 0)
			return -1;
		if (left > 20)
			left = 20;
		ts = (struct timespec){ .tv_nsec = left * 1000000 };
		nanosleep(&ts, NULL);
	}
	return check_vms(d, err, errlen);
}

/* Wait until the VM answers on its API socket with the expected role. */
static int connect_vm(struct demo *d, struct vm_proc *vm, const char *role,
		      char *err, size_t errlen)
{
	/* ferry-vm answers at once; the wait only matters for a VM that
	 * hangs, since one that dies is noticed at once. */
	int timeout = READY_TIMEOUT_MS;
	int64_t deadline = now_ms() + timeout;
	char cerr[300] = "";
	int ret;

	for (;;) {
		if (check_vms(d, err, errlen) < 0)
			return -1;
		ret = api_client_open(vm->sock, 2000, &vm->api, cerr, sizeof(cerr));
		if (ret == 0)
			break;
		if (now_ms() > deadline)
			return demo_fail(err, errlen, "the %s ferry-vm did not answer "
					 "on %s within %d s (%s)", vm->name,
					 vm->sock, timeout / 1000, cerr);
		if (demo_sleep(d, 50, err, errlen) < 0)
			return -1;
	}
	api_client_set_interrupt(vm->api, cli_interrupt_counter());
	if (strcmp(api_client_role(vm->api), role))
		return demo_fail(err, errlen, "the %s ferry-vm says it is a '%s'",
				 vm->name, api_client_role(vm->api));
	return 0;
}

/* Connect again after ferry-vm dropped a quiet client, as it does with
 * the destination's connection when a migration outlasts its idle
 * timeout (docs/api-socket.md, "Connections"). */
static int reconnect_vm(struct vm_proc *vm)
{
	struct api_client *c = NULL;
	char cerr[300];

	if (api_client_open(vm->sock, 2000, &c, cerr, sizeof(cerr)) < 0)
		return -1;
	api_client_close(vm->api);
	vm->api = c;
	api_client_set_interrupt(vm->api, cli_interrupt_counter());
	return 0;
}

static int query_status(struct vm_proc *vm, json_object **st, char *err,
			size_t errlen)
{
	int ret;

	ret = api_client_execute(vm->api, "status", NULL, CLI_REPLY_TIMEOUT_MS, st);
	if (ret < 0 && ret != -EINTR && reconnect_vm(vm) == 0)
		ret = api_client_execute(vm->api, "status", NULL,
					 CLI_REPLY_TIMEOUT_MS, st);
	if (ret < 0)
		return demo_fail(err, errlen, "%s ferry-vm: %s", vm->name,
				 api_client_errmsg(vm->api));
	return 0;
}

/* Wait until the VM finished initializing: its guest runs, or on a
 * destination waits for the migration ("incoming"), with all of its RAM
 * populated. ferry-vm populates guest RAM after its API answers. On this virtualised machine, memory
 * another process just freed took over 3 s/GiB to touch again. A
 * ferry-vm that does not say (no "guest.state") is taken as ready. */
static int wait_ready(struct demo *d, struct vm_proc *vm, char *err,
		      size_t errlen)
{
	int timeout = READY_TIMEOUT_MS + (int)(d->o.memory >> 30) * 5000;
	int64_t start = now_ms();
	json_object *st, *v;
	const char *state;
	bool ready;

	for (;;) {
		if (check_vms(d, err, errlen) < 0 ||
		    query_status(vm, &st, err, errlen) < 0)
			return -1;
		v = cli_get(st, "guest.state");
		state = v ? json_object_get_string(v) : "running";
		ready = strcmp(state, "initializing") != 0;
		/* A destination listens while it populates, and a migration
		 * would then pay the first touch of every page: the demo
		 * measures VMs that are ready. */
		v = cli_get(st, "guest.populated_pct");
		if (v && json_object_get_int(v) < 100)
			ready = false;
		if (!strcmp(state, "failed")) {
			v = cli_get(st, "guest.error");
			demo_fail(err, errlen, "the %s ferry-vm failed to initialize: %s",
				  vm->name, v ? json_object_get_string(v) : "?");
			json_object_put(st);
			return -1;
		}
		json_object_put(st);
		if (ready)
			return 0;
		if (now_ms() - start > timeout)
			return demo_fail(err, errlen, "the %s ferry-vm did not "
					 "initialize within %d s", vm->name,
					 timeout / 1000);
		if (demo_sleep(d, 20, err, errlen) < 0)
			return -1;
	}
}

/* Wait until the source workload reached its steady state (fill writes
 * all of memory first). A ferry-vm that does not say is taken as settled. */
static int wait_settled(struct demo *d, char *err, size_t errlen)
{
	int timeout = 30000 + (int)(d->o.memory >> 30) * 10000;
	int64_t start = now_ms();
	bool said = false, settled = false;
	json_object *st, *v;

	while (!settled) {
		if (query_status(&d->src, &st, err, errlen) < 0)
			return -1;
		v = cli_get(st, "guest.settled");
		settled = !v || json_object_get_boolean(v);
		json_object_put(st);
		if (settled)
			break;
		if (now_ms() - start > timeout)
			return demo_fail(err, errlen, "the source guest did not settle "
					 "within %d s", timeout / 1000);
		if (!said && now_ms() - start > 1000) {
			fprintf(stderr, "waiting for the %s workload to settle...\n",
				d->o.workload);
			said = true;
		}
		if (demo_sleep(d, 100, err, errlen) < 0)
			return -1;
	}
	return demo_sleep(d, SETTLE_EXTRA_MS, err, errlen);
}

/* ---- the demo's steps ------------------------------------------------ */

static int make_dir(struct demo *d, char *err, size_t errlen)
{
	const char *tmp = getenv("TMPDIR");

	/* The sockets' paths must fit in sockaddr_un. */
	if (!tmp || !*tmp || strlen(tmp) > 40)
		tmp = "/tmp";
	snprintf(d->dir, sizeof(d->dir), "%s/ferry-demo.XXXXXX", tmp);
	if (!mkdtemp(d->dir)) {
		d->dir[0] = '\0';
		return demo_fail(err, errlen, "cannot create a directory in %s: %s",
				 tmp, strerror(errno));
	}
	snprintf(d->dst.sock, sizeof(d->dst.sock), "%s/%s.sock", d->dir, d->dst.tag);
	snprintf(d->dst.log, sizeof(d->dst.log), "%s/%s.log", d->dir, d->dst.tag);
	snprintf(d->src.sock, sizeof(d->src.sock), "%s/%s.sock", d->dir, d->src.tag);
	snprintf(d->src.log, sizeof(d->src.log), "%s/%s.log", d->dir, d->src.tag);
	return 0;
}

static void remove_dir(const char *dir)
{
	char path[PATH_MAX];
	struct dirent *e;
	DIR *dp;

	if (!dir[0] || !(dp = opendir(dir)))
		return;
	while ((e = readdir(dp)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	closedir(dp);
	rmdir(dir);
}

/* --tls: the throwaway CA and both certificates go into the demo's own
 * directory (0700), removed with it. */
static int demo_tls(struct demo *d, char *err, size_t errlen)
{
	if (!d->o.tls)
		return 0;
	if (tlsgen_make(d->dir, NULL, err, errlen))
		return -1;
	d->o.tls_creds = d->dir;
	if (!d->o.json)
		fprintf(stderr, "ferry demo: TLS with mutual x509 authentication, "
			"a throwaway CA in %s\n", d->dir);
	return 0;
}

/* Start both VMs and wait until the source guest is ready to migrate. */
static int demo_setup(struct demo *d, char *err, size_t errlen)
{
	char mem[32];

	if (make_dir(d, err, errlen) < 0 || demo_tls(d, err, errlen) < 0)
		return -1;
	d->port = free_port(err, errlen);
	if (d->port < 0)
		return -1;
	cli_format_bytes((double)d->o.memory, mem, sizeof(mem));
	fprintf(stderr, "ferry demo: %s guest, %llu vCPUs, workload %s; "
		"%s -> tcp:127.0.0.1:%d\n", mem, (unsigned long long)d->o.vcpus,
		d->o.workload, d->vm_path, d->port);
	if (spawn_vm(d, &d->dst, true, err, errlen) < 0 ||
	    spawn_vm(d, &d->src, false, err, errlen) < 0)
		return -1;
	if (connect_vm(d, &d->dst, "destination", err, errlen) < 0 ||
	    connect_vm(d, &d->src, "source", err, errlen) < 0 ||
	    wait_ready(d, &d->dst, err, errlen) < 0 ||
	    wait_ready(d, &d->src, err, errlen) < 0)
		return -1;
	return wait_settled(d, err, errlen);
}

/* After completion: let the destination run, then read its verdict. */
static int destination_verdict(struct demo *d, json_object **dst_st,
			       char *err, size_t errlen)
{
	int64_t deadline;
	json_object *st;

	if (demo_sleep(d, DST_RUN_MS, err, errlen) < 0)
		return -1;
	/* With --no-verify there is no verdict to wait for. */
	deadline = now_ms() + (d->o.verify ? VERIFY_TIMEOUT_MS : 0);
	for (;;) {
		if (query_status(&d->dst, &st, err, errlen) < 0)
			return -1;
		if (cli_get(st, "verified") || now_ms() > deadline)
			break;
		json_object_put(st);
		if (demo_sleep(d, 100, err, errlen) < 0)
			return -1;
	}
	*dst_st = st;
	return 0;
}

static int demo_migrate(struct demo *d, json_object **report,
			json_object **dst_st, char *err, size_t errlen)
{
	const struct cli_follow_opts fo = { .timeout_ms = MIGRATE_TIMEOUT_MS,
					    .tick = check_vms_tick, .opaque = d };
	json_object *args, *st;
	char uri[64];

	/* A status first: it connects again if ferry-vm dropped the
	 * connection while the guest settled. */
	if (query_status(&d->src, &st, err, errlen) < 0)
		return -1;
	json_object_put(st);
	args = json_object_new_object();
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", d->port);
	json_object_object_add(args, "uri", json_object_new_string(uri));
	json_object_object_foreach(d->o.margs, key, val)
		json_object_object_add(args, key, json_object_get(val));
	if (cli_follow_migration(d->src.api, args, &fo, report, err, errlen) < 0)
		return -1;
	if (!cli_report_completed(*report))
		return 0;
	/* The destination owns the guest now; the source may go its way. */
	d->src_migrated = true;
	return destination_verdict(d, dst_st, err, errlen);
}

static json_object *copy_or_null(json_object *v)
{
	json_object *out = NULL;

	if (v && json_object_deep_copy(v, &out, NULL) < 0)
		out = NULL;
	return out;
}

/* The report of the migration plus the destination's own verdict. */
static json_object *demo_report(struct demo *d, json_object *report,
				json_object *dst_st)
{
	json_object *r = copy_or_null(report), *rv = cli_get(report, "verified");
	json_object *dv = cli_get(dst_st, "verified");
	json_object *errs = cli_get(dst_st, "guest.check_errors");
	bool verified;

	verified = cli_report_completed(report) &&
		   rv && json_object_get_boolean(rv) &&
		   dv && json_object_get_boolean(dv) &&
		   errs && json_object_get_int64(errs) == 0;
	/* --no-verify: nothing was checked, so there is no verdict. */
	json_object_object_add(r, "verified", d->o.verify ?
			       json_object_new_boolean(verified) : NULL);
	json_object_object_add(r, "report_verified", copy_or_null(rv));
	json_object_object_add(r, "destination_verified", copy_or_null(dv));
	json_object_object_add(r, "destination_check_errors", copy_or_null(errs));
	/* The report is the source's: the destination's view beside it, so
	 * both sides' word on who runs the guest is in one place. */
	json_object_object_add(r, "destination_owner",
			       copy_or_null(cli_get(dst_st, "migration.owner")));
	json_object_object_add(r, "workload", json_object_new_string(d->o.workload));
	json_object_object_add(r, "memory",
			       json_object_new_int64((int64_t)d->o.memory));
	json_object_object_add(r, "vcpus", json_object_new_int64((int64_t)d->o.vcpus));
	return r;
}

/* "stream digest matched, destination verified, 0 bad pages ..." */
static void describe_checks(json_object *r, char *buf, size_t len)
{
	json_object *dv = cli_get(r, "destination_verified");
	json_object *rv = cli_get(r, "report_verified");
	json_object *errs = cli_get(r, "destination_check_errors");

	if (!cli_get(r, "verified") && cli_report_completed(r)) {
		snprintf(buf, len, "skipped (--no-verify)");
		return;
	}
	snprintf(buf, len, "stream digest %s, destination %s, %s bad pages "
		 "found by the running guest",
		 rv ? (json_object_get_boolean(rv) ? "matched" : "MISMATCH") : "-",
		 dv ? (json_object_get_boolean(dv) ? "verified" : "FAILED") : "-",
		 errs ? json_object_get_string(errs) : "-");
}

static void print_demo_report(json_object *r)
{
	char checks[160];

	describe_checks(r, checks, sizeof(checks));
	cli_print_report(stdout, r);
	printf("checks        %s\n", checks);
}

/* With --json, stderr still says in words why the demo did not succeed. */
static void explain_failure(json_object *r)
{
	char checks[160];

	if (!cli_report_completed(r)) {
		fprintf(stderr, "ferry demo: migration %s: %s\n",
			json_object_get_string(cli_get(r, "status")),
			cli_get(r, "error") ?
				json_object_get_string(cli_get(r, "error")) :
				"no reason given");
	} else if (cli_get(r, "verified") &&
		   !json_object_get_boolean(cli_get(r, "verified"))) {
		describe_checks(r, checks, sizeof(checks));
		fprintf(stderr, "ferry demo: the guest was not verified: %s\n",
			checks);
	}
}

/* Stop a VM: "quit" and a grace period when @gently, else SIGKILL. */
static void stop_vm(struct vm_proc *vm, bool gently)
{
	int64_t deadline = now_ms() + QUIT_TIMEOUT_MS;
	struct timespec ts = { .tv_nsec = 20 * 1000000 };
	char ignored[128];

	if (gently && vm->pid && vm->api)
		api_client_execute(vm->api, "quit", NULL, 2000, NULL);
	api_client_close(vm->api);
	vm->api = NULL;
	while (gently && vm->pid && !vm_exited(vm, ignored, sizeof(ignored)) &&
	       now_ms() < deadline)
		nanosleep(&ts, NULL);
	if (vm->pid) {
		if (gently)
			fprintf(stderr, "ferry demo: the %s ferry-vm did not exit "
				"after quit; killing it\n", vm->name);
		kill(vm->pid, SIGKILL);
		while (waitpid(vm->pid, &vm->status, 0) < 0 && errno == EINTR)
			;
		vm->pid = 0;
	}
}

/**
 * cmd_demo() - run "ferry demo" (see cli_demo_usage).
 * @argc: argument count, argv[0] being "demo".
 * @argv: the arguments.
 *
 * Return: the exit status: 0 when the migration completed and the guest
 * was verified on the destination.
 */
int cmd_demo(int argc, char **argv)
{
	struct demo d = { .src = { .name = "source", .tag = "src" },
			  .dst = { .name = "destination", .tag = "dst" } };
	json_object *report = NULL, *dst_st = NULL, *out = NULL;
	char err[600] = "";
	int ret;

	ret = demo_options(argc, argv, &d.o);
	if (ret) {
		json_object_put(d.o.margs);
		return ret < 0 ? CLI_EXIT_OK : ret;
	}
	cli_signals_install();
	if (cli_find_ferry_vm(d.vm_path, sizeof(d.vm_path), err, sizeof(err)) < 0) {
		fprintf(stderr, "ferry demo: %s\n", err);
		return CLI_EXIT_FAIL;
	}
	ret = demo_setup(&d, err, sizeof(err));
	if (ret == 0)
		ret = demo_migrate(&d, &report, &dst_st, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "ferry demo: %s\n", err);
		if (!cli_interrupted()) {
			show_log_tail(&d.src);
			show_log_tail(&d.dst);
		}
		out = cli_failed_report(err);
	} else {
		out = demo_report(&d, report, dst_st);
		if (d.o.json)
			explain_failure(out);
		if (!cli_report_completed(report)) {
			show_log_tail(&d.src);
			show_log_tail(&d.dst);
		}
	}
	/* Stop the VMs before printing, so the report is the last word. */
	stop_vm(&d.src, ret == 0);
	stop_vm(&d.dst, ret == 0);
	if (d.o.json)
		cli_print_json(out);
	else if (ret == 0)
		print_demo_report(out);
	if (d.o.keep_logs && d.dir[0])
		fprintf(stderr, "ferry demo: logs kept in %s\n", d.dir);
	else
		remove_dir(d.dir);
	if (cli_interrupted())
		ret = CLI_EXIT_INTERRUPTED;
	else
		ret = cli_report_completed(out) &&
		      (!d.o.verify ||
		       json_object_get_boolean(cli_get(out, "verified"))) ?
			      CLI_EXIT_OK : CLI_EXIT_FAIL;
	json_object_put(report);
	json_object_put(dst_st);
	json_object_put(out);
	json_object_put(d.o.margs);
	return ret;
}
