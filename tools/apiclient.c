// SPDX-License-Identifier: MIT
/*
 * apiclient.c - client side of ferry-vm's JSON-lines API socket.
 *
 * The connection is non-blocking and every wait goes through poll() with a
 * deadline, so a silent or vanished server turns into -ETIMEDOUT or
 * -ECONNRESET instead of a hang. Lines are parsed with json_tokener; a line
 * that is not a JSON object is skipped, so one bad line cannot desynchronise
 * the conversation.
 */
#include "apiclient.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

/* A status object or report is a few hundred bytes; this is generous. */
#define API_MAX_LINE (4u << 20)
/* Longest poll() when an interrupt counter is watched. */
#define INTR_SLICE_MS 200

struct api_client {
	int fd;
	char *buf;		/* bytes received, not yet parsed */
	size_t len, cap;
	json_tokener *tok;
	json_object *greeting;
	int next_id;
	api_event_fn on_event;
	void *opaque;
	const volatile sig_atomic_t *intr; /* interrupt counter, or NULL */
	sig_atomic_t intr_seen;
	char err[256];
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until @deadline (-1: none) in the form poll() wants. */
static int remaining(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - now_ms();
	if (left <= 0)
		return 0;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}

static int64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

__attribute__((format(printf, 3, 4)))
static int fail(struct api_client *c, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	return err;
}

/* A new interrupt (the counter moved since we last reported one)? */
static bool interrupted(struct api_client *c)
{
	if (!c->intr || *c->intr == c->intr_seen)
		return false;
	c->intr_seen = *c->intr;
	return true;
}

/* Wait for @events on the socket until @deadline. */
static int wait_fd(struct api_client *c, short events, int64_t deadline)
{
	struct pollfd pfd = { .fd = c->fd, .events = events };
	int n, left;

	for (;;) {
		if (interrupted(c))
			return fail(c, -EINTR, "interrupted");
		left = remaining(deadline);
		/* A signal landing between the check above and poll() would
		 * otherwise wait for the whole timeout. */
		if (c->intr && (left < 0 || left > INTR_SLICE_MS))
			left = INTR_SLICE_MS;
		n = poll(&pfd, 1, left);
		if (n > 0)
			return 0;
		if (n == 0 && remaining(deadline) == 0)
			return fail(c, -ETIMEDOUT, "ferry-vm did not answer in time");
		if (n == 0)
			continue;
		if (errno != EINTR)
			return fail(c, -errno, "poll: %s", strerror(errno));
	}
}

static int send_all(struct api_client *c, const char *data, size_t len,
		    int64_t deadline)
{
	ssize_t n;
	int ret;

	while (len > 0) {
		n = send(c->fd, data, len, MSG_NOSIGNAL);
		if (n > 0) {
			data += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			ret = wait_fd(c, POLLOUT, deadline);
			if (ret < 0)
				return ret;
			continue;
		}
		return fail(c, -errno, "lost the connection to ferry-vm: %s",
			    strerror(errno));
	}
	return 0;
}

/* Parse one line into a JSON object; NULL if it is not one. */
static json_object *parse_line(struct api_client *c, const char *line,
			       size_t len)
{
	json_object *obj;

	json_tokener_reset(c->tok);
	obj = json_tokener_parse_ex(c->tok, line, (int)len);
	if (!obj || json_tokener_get_error(c->tok) != json_tokener_success ||
	    !json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		return NULL;
	}
	return obj;
}

/* Take the next complete line out of the buffer, if there is one. */
static bool take_line(struct api_client *c, json_object **out)
{
	char *nl;
	size_t used;

	*out = NULL;
	if (c->len == 0)
		return false;
	while ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
		used = (size_t)(nl - c->buf) + 1;
		*out = parse_line(c, c->buf, used - 1);
		memmove(c->buf, c->buf + used, c->len - used);
		c->len -= used;
		if (*out)
			return true;
		/* Blank or malformed line: skip it. */
	}
	return false;
}

/* Read the next JSON object from the server, waiting until @deadline. */
static int read_object(struct api_client *c, int64_t deadline,
		       json_object **out)
{
	ssize_t n;
	int ret;

	while (!take_line(c, out)) {
		if (c->len == c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 8192;
			char *nbuf;

			if (cap > API_MAX_LINE)
				return fail(c, -EMSGSIZE,
					    "ferry-vm sent a line longer than %u bytes",
					    API_MAX_LINE);
			nbuf = realloc(c->buf, cap);
			if (!nbuf)
				return fail(c, -ENOMEM, "out of memory");
			c->buf = nbuf;
			c->cap = cap;
		}
		n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (n > 0) {
			c->len += (size_t)n;
			continue;
		}
		if (n == 0)
			return fail(c, -ECONNRESET,
				    "ferry-vm closed the API connection");
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return fail(c, -errno, "lost the connection to ferry-vm: %s",
				    strerror(errno));
		ret = wait_fd(c, POLLIN, deadline);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/*
 * If @msg is an event, hand it to the callback and return true. Other
 * messages (replies) are left to the caller.
 */
static bool dispatch_event(struct api_client *c, json_object *msg)
{
	json_object *name, *data = NULL;

	if (!json_object_object_get_ex(msg, "event", &name))
		return false;
	json_object_object_get_ex(msg, "data", &data);
	if (c->on_event && json_object_is_type(name, json_type_string))
		c->on_event(c->opaque, json_object_get_string(name), data);
	return true;
}

static int connect_unix(const char *path, int *fdp, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -errno;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		struct stat st;
		const char *why = strerror(e);

		if (stat(path, &st) == 0 && !S_ISSOCK(st.st_mode))
			why = "not a socket";
		else if (e == ECONNREFUSED)
			why = "nothing is listening (is ferry-vm running?)";
		snprintf(err, errlen, "cannot connect to %s: %s", path, why);
		close(fd);
		return -e;
	}
	*fdp = fd;
	return 0;
}

/* Read the greeting and check that it is ferry-vm's. */
static int read_greeting(struct api_client *c, const char *path,
			 int timeout_ms)
{
	char why[sizeof(c->err)];
	json_object *msg, *vm;
	int ret;

	ret = read_object(c, deadline_of(timeout_ms), &msg);
	if (ret < 0) {
		snprintf(why, sizeof(why), "%s", c->err);
		return fail(c, ret, "%s: no greeting from ferry-vm (%s)", path, why);
	}
	if (!json_object_object_get_ex(msg, "ferry-vm", &vm) ||
	    !json_object_is_type(vm, json_type_object)) {
		json_object_put(msg);
		return fail(c, -EPROTO, "%s: not a ferry-vm API socket", path);
	}
	c->greeting = msg;
	return 0;
}

/**
 * api_client_open() - connect to a ferry-vm API socket and read its greeting.
 * @path: the UNIX socket path.
 * @timeout_ms: how long to wait for the greeting (-1: forever).
 * @out: receives the client.
 * @err: receives a one-line message on failure.
 * @errlen: size of @err.
 *
 * Return: 0; -ENOENT, -ECONNREFUSED, -EACCES... when the socket cannot be
 * reached; -ETIMEDOUT or -EPROTO when the peer is not a ferry-vm.
 */
int api_client_open(const char *path, int timeout_ms, struct api_client **out,
		    char *err, size_t errlen)
{
	struct api_client *c;
	int ret;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c || !(c->tok = json_tokener_new())) {
		free(c);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	c->fd = -1;
	c->next_id = 1;
	ret = connect_unix(path, &c->fd, err, errlen);
	if (ret == 0) {
		ret = read_greeting(c, path, timeout_ms);
		if (ret < 0)
			snprintf(err, errlen, "%s", c->err);
	}
	if (ret < 0) {
		api_client_close(c);
		return ret;
	}
	*out = c;
	return 0;
}

/**
 * api_client_close() - close the connection and free the client.
 * @c: the client; NULL is harmless.
 */
void api_client_close(struct api_client *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	json_object_put(c->greeting);
	json_tokener_free(c->tok);
	free(c->buf);
	free(c);
}

/**
 * api_client_greeting() - the greeting's "ferry-vm" member (version, role,
 * pid). Borrowed; valid until the client is closed.
 */
struct json_object *api_client_greeting(const struct api_client *c)
{
	json_object *vm = NULL;

	json_object_object_get_ex(c->greeting, "ferry-vm", &vm);
	return vm;
}

/**
 * api_client_role() - "source" or "destination" as the greeting said, or
 * "" when it did not say.
 */
const char *api_client_role(const struct api_client *c)
{
	json_object *role;

	if (!json_object_object_get_ex(api_client_greeting(c), "role", &role) ||
	    !json_object_is_type(role, json_type_string))
		return "";
	return json_object_get_string(role);
}

/**
 * api_client_set_events() - set the callback that receives events.
 * @c: the client.
 * @fn: the callback, or NULL to drop events.
 * @opaque: passed to @fn.
 */
void api_client_set_events(struct api_client *c, api_event_fn fn,
			   void *opaque)
{
	c->on_event = fn;
	c->opaque = opaque;
}

/**
 * api_client_set_interrupt() - make waits interruptible.
 * @c: the client.
 * @counter: a counter a signal handler increments, or NULL.
 *
 * Each time the counter moves, the wait in progress (or the next one)
 * returns -EINTR once. Waits poll in slices short enough that a signal
 * landing just before poll() is noticed promptly.
 */
void api_client_set_interrupt(struct api_client *c,
			      const volatile sig_atomic_t *counter)
{
	c->intr = counter;
	c->intr_seen = counter ? *counter : 0;
}

/* Turn a reply into the result of api_client_execute(). */
static int take_reply(struct api_client *c, const char *command,
		      json_object *msg, json_object **ret)
{
	json_object *val, *cls = NULL, *desc = NULL;

	if (json_object_object_get_ex(msg, "return", &val)) {
		if (ret)
			*ret = json_object_get(val);
		return 0;
	}
	if (json_object_object_get_ex(msg, "error", &val)) {
		json_object_object_get_ex(val, "class", &cls);
		json_object_object_get_ex(val, "desc", &desc);
		return fail(c, -EREMOTEIO, "%s (%s)",
			    desc ? json_object_get_string(desc) : "failed",
			    cls ? json_object_get_string(cls) : "error");
	}
	return fail(c, -EPROTO, "malformed reply from ferry-vm to %s", command);
}

/* Is @msg the reply to the command with @id? */
static bool is_reply_to(json_object *msg, int id)
{
	json_object *mid;

	if (!json_object_object_get_ex(msg, "return", NULL) &&
	    !json_object_object_get_ex(msg, "error", NULL))
		return false;
	/* A ParseError reply cannot carry the id of a line it could not
	 * read; only one command is ever outstanding, so it is ours. */
	if (!json_object_object_get_ex(msg, "id", &mid))
		return json_object_object_get_ex(msg, "error", NULL);
	return json_object_is_type(mid, json_type_int) &&
	       json_object_get_int(mid) == id;
}

static int send_command(struct api_client *c, const char *command,
			json_object *args, int id, int64_t deadline)
{
	json_object *cmd = json_object_new_object();
	const char *line;
	size_t len;
	char *buf;
	int ret;

	json_object_object_add(cmd, "execute", json_object_new_string(command));
	if (args)
		json_object_object_add(cmd, "arguments", args);
	json_object_object_add(cmd, "id", json_object_new_int(id));
	line = json_object_to_json_string_ext(cmd, JSON_C_TO_STRING_PLAIN |
						   JSON_C_TO_STRING_NOSLASHESCAPE);
	len = strlen(line);
	buf = malloc(len + 1);
	if (!buf) {
		json_object_put(cmd);
		return fail(c, -ENOMEM, "out of memory");
	}
	memcpy(buf, line, len);
	buf[len] = '\n';
	ret = send_all(c, buf, len + 1, deadline);
	free(buf);
	json_object_put(cmd);
	return ret;
}

/**
 * api_client_execute() - run one command and wait for its reply.
 * @c: the client.
 * @command: the command name ("status").
 * @args: its arguments object, or NULL; consumed in every case.
 * @timeout_ms: how long to wait for the reply (-1: forever).
 * @ret: receives a new reference to the "return" member, or NULL.
 *
 * Events that arrive before the reply go to the event callback.
 *
 * Return: 0; -EREMOTEIO when ferry-vm answered with an error (the message
 * has its class and text); -ETIMEDOUT, -ECONNRESET, -EINTR, -EPROTO.
 */
int api_client_execute(struct api_client *c, const char *command,
		       struct json_object *args, int timeout_ms,
		       struct json_object **ret)
{
	int64_t deadline = deadline_of(timeout_ms);
	int id = c->next_id++, err;
	json_object *msg;

	if (ret)
		*ret = NULL;
	err = send_command(c, command, args, id, deadline);
	if (err < 0)
		return err;
	for (;;) {
		err = read_object(c, deadline, &msg);
		if (err < 0)
			return err;
		if (is_reply_to(msg, id))
			break;
		dispatch_event(c, msg); /* a stray reply is dropped too */
		json_object_put(msg);
	}
	err = take_reply(c, command, msg, ret);
	json_object_put(msg);
	return err;
}

/**
 * api_client_wait() - wait for events.
 * @c: the client.
 * @timeout_ms: how long to wait for the first one (-1: forever).
 *
 * Delivers at least one event to the callback, plus any others already
 * received, then returns.
 *
 * Return: the number of events delivered; -ETIMEDOUT when none came in
 * time; -ECONNRESET, -EINTR...
 */
int api_client_wait(struct api_client *c, int timeout_ms)
{
	int64_t deadline = deadline_of(timeout_ms);
	json_object *msg;
	int n = 0, err;

	do {
		err = read_object(c, deadline, &msg);
		if (err < 0)
			return n ? n : err;
		if (dispatch_event(c, msg))
			n++;
		json_object_put(msg);
	} while (n == 0 || (c->len && memchr(c->buf, '\n', c->len)));
	return n;
}

/**
 * api_client_errmsg() - a one-line description of the last failure.
 */
const char *api_client_errmsg(const struct api_client *c)
{
	return c->err;
}
