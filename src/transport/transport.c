// SPDX-License-Identifier: MIT
/*
 * transport.c - TCP and UNIX stream sockets for migration channels.
 */
#include "transport/transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
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
	if (strncmp(s, "fd:", 3) == 0) {
		char *end;
		long n;

		errno = 0;
		n = strtol(s + 3, &end, 10);
		if (s[3] < '0' || s[3] > '9' || *end || errno || n > INT_MAX) {
			snprintf(err, errlen,
				 "bad descriptor in '%s' (expected fd:N, N >= 0)",
				 s);
			return -EINVAL;
		}
		u->kind = FY_URI_FD;
		u->fd = (int)n;
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
		 "unknown URI '%s' (expected tcp:HOST:PORT, unix:PATH, file:PATH or fd:N)",
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

#ifndef TCP_CA_NAME_MAX
#define TCP_CA_NAME_MAX 16
#endif

/* One line of /proc/sys/net/ipv4/ for an error message: "?" if unread. */
static void read_sysctl(const char *name, char *buf, size_t len)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/sys/net/ipv4/%s", name);
	snprintf(buf, len, "?");
	f = fopen(path, "re");
	if (!f)
		return;
	if (fgets(buf, (int)len, f))
		buf[strcspn(buf, "\n")] = 0;
	fclose(f);
}

/* Both ends on this host: a loopback peer, or a peer at our own address
 * (the kernel carries that over the loopback device too). */
static bool peer_is_local(int fd)
{
	struct sockaddr_storage me, peer;
	socklen_t ml = sizeof(me), pl = sizeof(peer);

	if (getsockname(fd, (struct sockaddr *)&me, &ml) ||
	    getpeername(fd, (struct sockaddr *)&peer, &pl))
		return false;
	if (peer.ss_family == AF_INET) {
		const struct sockaddr_in *p = (const void *)&peer;
		const struct sockaddr_in *m = (const void *)&me;

		return (ntohl(p->sin_addr.s_addr) >> 24) == 127 ||
		       p->sin_addr.s_addr == m->sin_addr.s_addr;
	}
	if (peer.ss_family == AF_INET6) {
		const struct sockaddr_in6 *p = (const void *)&peer;
		const struct sockaddr_in6 *m = (const void *)&me;

		return IN6_IS_ADDR_LOOPBACK(&p->sin6_addr) ||
		       (IN6_IS_ADDR_V4MAPPED(&p->sin6_addr) &&
			p->sin6_addr.s6_addr[12] == 127) ||
		       !memcmp(&p->sin6_addr, &m->sin6_addr,
			       sizeof(p->sin6_addr));
	}
	return false;
}

static int set_cc(int fd, const char *name)
{
	return setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name,
			  (socklen_t)strlen(name)) ? -errno : 0;
}

/* The algorithm @fd uses, into @buf (TCP_CA_NAME_MAX + 1 bytes). */
static int get_cc(int fd, char *buf)
{
	socklen_t len = TCP_CA_NAME_MAX;

	if (getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, buf, &len))
		return -errno;
	buf[len < TCP_CA_NAME_MAX ? len : TCP_CA_NAME_MAX] = 0;
	return 0;
}

/* Set @name or say why the kernel refused it. */
static int set_named_cc(int fd, const char *name, char *err, size_t errlen)
{
	char offered[256];
	int rc = set_cc(fd, name);

	if (rc == -ENOENT) {
		read_sysctl("tcp_available_congestion_control", offered,
			    sizeof(offered));
		snprintf(err, errlen,
			 "congestion control '%s' is not available on this host (it offers: %s)",
			 name, offered);
		return -EINVAL;
	}
	if (rc == -EPERM) {
		read_sysctl("tcp_allowed_congestion_control", offered,
			    sizeof(offered));
		snprintf(err, errlen,
			 "congestion control '%s' is not allowed for this process (net.ipv4.tcp_allowed_congestion_control: %s)",
			 name, offered);
		return rc;
	}
	if (rc)
		snprintf(err, errlen, "cannot set congestion control '%s': %s",
			 name, strerror(-rc));
	return rc;
}

/**
 * fy_transport_connect() - open a connection to @u, a TCP one with the
 * congestion control @cc (set before connecting, so a name the kernel
 * refuses never reaches the peer).
 */
int fy_transport_connect(const struct fy_uri *u, const char *cc, int *fd,
			 char *err, size_t errlen)
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
		if (cc) {
			rc = set_named_cc(s, cc, err, errlen);
			if (rc) {
				close(s);
				freeaddrinfo(res);
				return rc;
			}
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
 * fy_transport_watch() - see a dead peer on an idle connection: TCP
 * keepalive probes after @idle_s without traffic, and a limit of
 * @idle_s * 3 on data the peer does not acknowledge (TCP_USER_TIMEOUT),
 * after which reads and writes fail with ETIMEDOUT. Postcopy's
 * connections may rightly stay silent (no fault, nothing left to push)
 * and have no other deadline. UNIX sockets need none: they end with
 * the process. Best effort.
 */
void fy_transport_watch(int fd, int idle_s)
{
	int one = 1, intvl = idle_s / 2 ? idle_s / 2 : 1, cnt = 4;
	unsigned int user = (unsigned int)idle_s * 3000u;

	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)))
		return; /* not a socket that has it */
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof(idle_s));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user, sizeof(user));
}

/**
 * fy_transport_stall_opts() - let TCP notice a dead or black-holed peer
 * within @limit_ms. TCP_USER_TIMEOUT ends the connection (ETIMEDOUT) once
 * data stays unacknowledged that long; keepalive probes, which only an
 * idle connection sends, start after half the limit (at least 1 s, the
 * option's unit) and repeat so that one is outstanding when the limit
 * ends, when the user timeout ends the connection too. A frozen peer
 * process still has its kernel acknowledge: only the engine's own limit
 * sees that.
 * @fd: a connected socket.
 * @limit_ms: the stall limit.
 * @failed: receives the option the kernel refused, on failure.
 *
 * Return: 0, 1 when @fd is not a TCP socket (nothing to set: a UNIX
 * socket ends with its process), or the negative errno of the first
 * option refused.
 */
int fy_transport_stall_opts(int fd, uint32_t limit_ms, const char **failed)
{
	int domain = 0, one = 1;
	socklen_t dl = sizeof(domain);
	unsigned int user = limit_ms;
	int idle = (int)(limit_ms / 2000), intvl = (int)(limit_ms / 4000), cnt;

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) ||
	    (domain != AF_INET && domain != AF_INET6))
		return 1;
	idle = idle < 1 ? 1 : idle;
	intvl = intvl < 1 ? 1 : intvl;
	cnt = ((int)(limit_ms / 1000) - idle) / intvl + 1;
	cnt = cnt < 1 ? 1 : cnt > 127 ? 127 : cnt;
	*failed = "TCP_USER_TIMEOUT";
	if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user, sizeof(user)))
		return -errno;
	*failed = "SO_KEEPALIVE";
	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)))
		return -errno;
	*failed = "TCP_KEEPIDLE";
	if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)))
		return -errno;
	*failed = "TCP_KEEPINTVL";
	if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)))
		return -errno;
	*failed = "TCP_KEEPCNT";
	if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)))
		return -errno;
	*failed = NULL;
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
 * fy_transport_congestion() - the automatic choice of a connected TCP
 * socket's congestion control, and the one it uses.
 *
 * BBR, the default on some hosts, paces every segment with a timer to the
 * bandwidth it estimates; on a connection within the host there is no
 * bottleneck to estimate and the pacing alone halves what a socket carries
 * here. The automatic choice therefore replaces a pacing algorithm with
 * cubic (reno where cubic is not allowed) on local connections only.
 */
void fy_transport_congestion(int fd, bool automatic, char *used,
			     size_t usedlen)
{
	char cur[TCP_CA_NAME_MAX + 1];

	snprintf(used, usedlen, "%s", "");
	if (get_cc(fd, cur))
		return; /* not TCP: nothing to choose */
	if (automatic && !strncmp(cur, "bbr", 3) && peer_is_local(fd)) {
		/* Refused both: the default stays. */
		if (set_cc(fd, "cubic"))
			set_cc(fd, "reno");
		if (get_cc(fd, cur))
			return;
	}
	snprintf(used, usedlen, "%s", cur);
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
 * fy_transport_borrow() - duplicate the caller's socket of an "fd:N" URI.
 */
int fy_transport_borrow(const struct fy_uri *u, int *fd, bool *listening,
			char *err, size_t errlen)
{
	int type = 0, acc = 0, s, rc;
	socklen_t len = sizeof(type);

	if (getsockopt(u->fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
	    type != SOCK_STREAM) {
		rc = errno == EBADF ? -EBADF : -ENOTSOCK;
		snprintf(err, errlen, "fd:%d is not %s", u->fd,
			 rc == -EBADF ? "an open descriptor" : "a stream socket");
		return rc;
	}
	len = sizeof(acc);
	if (getsockopt(u->fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0)
		acc = 0;
	s = fcntl(u->fd, F_DUPFD_CLOEXEC, 0);
	if (s < 0) {
		rc = -errno;
		snprintf(err, errlen, "duplicating fd:%d: %s", u->fd,
			 strerror(-rc));
		return rc;
	}
	*fd = s;
	*listening = acc != 0;
	return 0;
}

/**
 * fy_transport_listen_uri() - where a listener can be reached.
 */
void fy_transport_listen_uri(const struct fy_uri *u, int lfd, char *buf,
			     size_t len)
{
	char name[NI_MAXHOST + NI_MAXSERV + 4];

	if (u->kind == FY_URI_UNIX) {
		snprintf(buf, len, "unix:%s", u->path);
		return;
	}
	if (u->kind == FY_URI_FD) {
		snprintf(buf, len, "fd:%d", u->fd);
		return;
	}
	fy_transport_local_name(lfd, name, sizeof(name));
	if (!strcmp(name, "?"))
		snprintf(buf, len, "tcp:%s:%s", u->host, u->port);
	else
		snprintf(buf, len, "tcp:%s", name);
}

/**
 * fy_transport_unlink() - remove a UNIX listener's socket file.
 */
void fy_transport_unlink(const struct fy_uri *u)
{
	if (u->kind == FY_URI_UNIX)
		unlink(u->path);
}

/**
 * fy_pread_full() - read @n bytes at @off unless the file ends first.
 * @fd: the file.
 * @buf: where to put them.
 * @n: how many.
 * @off: the file offset.
 * @got: receives how many were read (less than @n at the end of the file).
 *
 * Return: 0, or a negative errno from pread(2).
 */
int fy_pread_full(int fd, void *buf, size_t n, uint64_t off, size_t *got)
{
	uint8_t *p = buf;
	ssize_t r;

	*got = 0;
	while (*got < n) {
		r = pread(fd, p + *got, n - *got, (off_t)(off + *got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		*got += (size_t)r;
	}
	return 0;
}

/**
 * fy_pwrite_full() - write all @n bytes of @buf at @off.
 * @fd: the file.
 * @buf: the bytes.
 * @n: how many.
 * @off: the file offset.
 *
 * Return: 0, or a negative errno from pwrite(2) (-EIO if it wrote nothing).
 */
int fy_pwrite_full(int fd, const void *buf, size_t n, uint64_t off)
{
	const uint8_t *p = buf;
	ssize_t r;

	while (n) {
		r = pwrite(fd, p, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		p += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}
