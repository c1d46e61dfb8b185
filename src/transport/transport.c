// SPDX-License-Identifier: MIT
/*
 * transport.c - TCP and UNIX stream sockets for migration channels.
 */
#include "transport/transport.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int fail(char *err, size_t errlen, int code, const char *fmt,
		const char *arg)
{
	snprintf(err, errlen, fmt, arg, strerror(-code));
	return code;
}

/**
 * fy_uri_parse() - split a migration URI into its parts.
 */
int fy_uri_parse(const char *s, struct fy_uri *u, char *err, size_t errlen)
{
	memset(u, 0, sizeof(*u));
	if (!s) {
		snprintf(err, errlen, "no URI given");
		return -EINVAL;
	}
	if (strncmp(s, "file:", 5) == 0) {
		if (!s[5] || strlen(s + 5) >= sizeof(u->path)) {
			snprintf(err, errlen, "bad file path in '%s'", s);
			return -EINVAL;
		}
		u->kind = FY_URI_FILE;
		strcpy(u->path, s + 5);
		return 0;
	}
	if (strncmp(s, "unix:", 5) == 0) {
		const char *p = s + 5;

		if (!*p || strlen(p) >= sizeof(u->path)) {
			snprintf(err, errlen, "bad UNIX socket path in '%s'",
				 s);
			return -EINVAL;
		}
		u->kind = FY_URI_UNIX;
		strcpy(u->path, p);
		return 0;
	}
	if (strncmp(s, "tcp:", 4) == 0) {
		const char *p = s + 4, *colon;
		size_t hl;

		if (*p == '[') {
			const char *end = strchr(p, ']');

			if (!end || end[1] != ':')
				goto bad_tcp;
			hl = (size_t)(end - p - 1);
			p++;
			colon = end + 1;
		} else {
			colon = strrchr(p, ':');
			if (!colon)
				goto bad_tcp;
			hl = (size_t)(colon - p);
		}
		if (hl == 0 || hl >= sizeof(u->host) || !colon[1] ||
		    strlen(colon + 1) >= sizeof(u->port) ||
		    strspn(colon + 1, "0123456789") != strlen(colon + 1))
			goto bad_tcp;
		u->kind = FY_URI_TCP;
		memcpy(u->host, p, hl);
		strcpy(u->port, colon + 1);
		return 0;
bad_tcp:
		snprintf(err, errlen,
			 "bad TCP URI '%s' (expected tcp:HOST:PORT)", s);
		return -EINVAL;
	}
	snprintf(err, errlen,
		 "unknown URI '%s' (expected tcp:HOST:PORT, unix:PATH or file:PATH)",
		 s);
	return -EINVAL;
}

static int unix_addr(const struct fy_uri *u, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, u->path, strlen(u->path) + 1);
	return (int)sizeof(*sa);
}

static int tcp_resolve(const struct fy_uri *u, int passive,
		       struct addrinfo **res, char *err, size_t errlen)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = passive ? AI_PASSIVE : 0,
	};
	int rc = getaddrinfo(u->host, u->port, &hints, res);

	if (rc) {
		snprintf(err, errlen, "cannot resolve %s:%s: %s", u->host,
			 u->port, gai_strerror(rc));
		return -EHOSTUNREACH;
	}
	return 0;
}

/**
 * fy_transport_connect() - open a connection to @u.
 */
int fy_transport_connect(const struct fy_uri *u, int *fd, char *err,
			 size_t errlen)
{
	int s, rc;

	if (u->kind == FY_URI_UNIX) {
		struct sockaddr_un sa;
		int len = unix_addr(u, &sa);

		s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (s < 0)
			return fail(err, errlen, -errno, "socket for %s: %s",
				    u->path);
		if (connect(s, (struct sockaddr *)&sa, (socklen_t)len) < 0) {
			rc = -errno;
			close(s);
			return fail(err, errlen, rc, "connect to unix:%s: %s",
				    u->path);
		}
		*fd = s;
		return 0;
	}

	struct addrinfo *res, *ai;

	rc = tcp_resolve(u, 0, &res, err, errlen);
	if (rc)
		return rc;
	rc = -ECONNREFUSED;
	for (ai = res; ai; ai = ai->ai_next) {
		s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
			   ai->ai_protocol);
		if (s < 0) {
			rc = -errno;
			continue;
		}
		if (connect(s, ai->ai_addr, ai->ai_addrlen) == 0) {
			freeaddrinfo(res);
			*fd = s;
			return 0;
		}
		rc = -errno;
		close(s);
	}
	freeaddrinfo(res);
	snprintf(err, errlen, "connect to tcp:%s:%s: %s", u->host, u->port,
		 strerror(-rc));
	return rc;
}

static int listen_unix(const struct fy_uri *u, int *fd, char *err,
		       size_t errlen)
{
	struct sockaddr_un sa;
	struct stat st;
	int len = unix_addr(u, &sa), s, rc;

	/* Replace a stale socket left by an earlier run, but never another
	 * kind of file. */
	if (lstat(u->path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a socket",
				 u->path);
			return -EEXIST;
		}
		unlink(u->path);
	}
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return fail(err, errlen, -errno, "socket for %s: %s", u->path);
	if (bind(s, (struct sockaddr *)&sa, (socklen_t)len) < 0 ||
	    listen(s, 16) < 0) {
		rc = -errno;
		close(s);
		return fail(err, errlen, rc, "listen on unix:%s: %s", u->path);
	}
	*fd = s;
	return 0;
}

/**
 * fy_transport_listen() - listen on @u for incoming channels.
 */
int fy_transport_listen(const struct fy_uri *u, int *fd, char *err,
			size_t errlen)
{
	struct addrinfo *res, *ai;
	int s, rc, one = 1;

	if (u->kind == FY_URI_UNIX)
		return listen_unix(u, fd, err, errlen);
	rc = tcp_resolve(u, 1, &res, err, errlen);
	if (rc)
		return rc;
	rc = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
			   ai->ai_protocol);
		if (s < 0) {
			rc = -errno;
			continue;
		}
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(s, 16) == 0) {
			freeaddrinfo(res);
			*fd = s;
			return 0;
		}
		rc = -errno;
		close(s);
	}
	freeaddrinfo(res);
	snprintf(err, errlen, "listen on tcp:%s:%s: %s", u->host, u->port,
		 strerror(-rc));
	return rc;
}

/**
 * fy_transport_accept() - accept one connection within @timeout_ms.
 */
int fy_transport_accept(int lfd, int *fd, int timeout_ms)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	int rc = poll(&p, 1, timeout_ms), s;

	if (rc < 0)
		return errno == EINTR ? -ETIMEDOUT : -errno;
	if (rc == 0)
		return -ETIMEDOUT;
	s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (s < 0)
		return errno == EAGAIN || errno == EINTR ? -ETIMEDOUT : -errno;
	*fd = s;
	return 0;
}

/**
 * fy_transport_tune() - per-socket settings for migration channels.
 */
void fy_transport_tune(int fd, int tick_ms)
{
	struct timeval tv = {
		.tv_sec = tick_ms / 1000,
		.tv_usec = (tick_ms % 1000) * 1000,
	};
	int one = 1;

	/* Fails harmlessly on UNIX sockets. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/**
 * fy_transport_set_buffer() - size a socket's send (@send) or receive
 * buffer to hold @bytes of data.
 *
 * SO_SNDBUFFORCE / SO_RCVBUFFORCE go past net.core.wmem_max / rmem_max
 * when the process may (CAP_NET_ADMIN); otherwise the plain option gets
 * what the limit allows. Either way the kernel doubles the value for its
 * bookkeeping and stops tuning that buffer by itself.
 *
 * Return: the size the kernel settled on (as getsockopt reports it), or a
 * negative errno.
 */
int fy_transport_set_buffer(int fd, bool send, size_t bytes)
{
	int val = bytes > INT_MAX / 2 ? INT_MAX / 2 : (int)bytes;
	int force = send ? SO_SNDBUFFORCE : SO_RCVBUFFORCE;
	int plain = send ? SO_SNDBUF : SO_RCVBUF;
	socklen_t len = sizeof(val);

	if (setsockopt(fd, SOL_SOCKET, force, &val, sizeof(val)) &&
	    setsockopt(fd, SOL_SOCKET, plain, &val, sizeof(val)))
		return -errno;
	if (getsockopt(fd, SOL_SOCKET, plain, &val, &len))
		return -errno;
	return val;
}

/**
 * fy_transport_local_name() - "ADDR:PORT" of the socket's own end, for
 * logs (an operator matches it against ss or a firewall log); "unix" for
 * a UNIX socket, "?" when unknown.
 */
void fy_transport_local_name(int fd, char *buf, size_t len)
{
	struct sockaddr_storage sa;
	socklen_t salen = sizeof(sa);
	char host[NI_MAXHOST], port[NI_MAXSERV];

	snprintf(buf, len, "?");
	if (getsockname(fd, (struct sockaddr *)&sa, &salen))
		return;
	if (sa.ss_family == AF_UNIX) {
		snprintf(buf, len, "unix");
		return;
	}
	if (getnameinfo((struct sockaddr *)&sa, salen, host, sizeof(host),
			port, sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV))
		return;
	snprintf(buf, len, sa.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
		 host, port);
}

/**
 * fy_transport_rcvbuf_ceiling() - the most the kernel's receive buffer
 * autotuning gives a TCP socket (the third field of net.ipv4.tcp_rmem);
 * 6 MiB, the kernel's default, when it cannot be read.
 */
size_t fy_transport_rcvbuf_ceiling(void)
{
	unsigned long lo, def, max = 6ul << 20;
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_rmem", "re");

	if (f) {
		if (fscanf(f, "%lu %lu %lu", &lo, &def, &max) != 3)
			max = 6ul << 20;
		fclose(f);
	}
	return max;
}

/**
 * fy_transport_unlink() - remove a UNIX listener's socket file.
 */
void fy_transport_unlink(const struct fy_uri *u)
{
	if (u->kind == FY_URI_UNIX)
		unlink(u->path);
}
