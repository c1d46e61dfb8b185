// SPDX-License-Identifier: MIT
/*
 * local_peer.c - the destination process of a live update, as the source
 * sees it. A local migration (memory by fd) that also passed the network
 * device's sockets shares both with that process: when its switchover
 * ends unconfirmed ("released" sent, no "running" back), whether that
 * process still exists decides who can own the guest and what
 * `ferry resume --force` risks, so the source keeps a pidfd of it.
 *
 * The migration's UNIX socket names the peer (SO_PEERCRED). It is read
 * when the session negotiates (the NEGOTIATING event: connected, the peer
 * certainly alive, and before the pause, which a scan of /proc/self/fd
 * must not lengthen); the pidfd then follows that very process (a pid
 * alone could be reused once it exits).
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "vm.h"

static pthread_mutex_t peer_lock = PTHREAD_MUTEX_INITIALIZER;
static int peer_fd = -1;   /* pidfd of the last local destination */
static pid_t peer_pid;

/* Is @fd a stream socket connected to the UNIX path @path? */
static bool connected_to(int fd, const char *path)
{
	struct sockaddr_un a;
	socklen_t l = sizeof(a);

	memset(&a, 0, sizeof(a));
	if (getpeername(fd, (struct sockaddr *)&a, &l) ||
	    a.sun_family != AF_UNIX || l <= offsetof(struct sockaddr_un, sun_path))
		return false;
	return !strncmp(a.sun_path, path, sizeof(a.sun_path));
}

/* The pid at the other end of this process's connection to @path, or 0.
 * The engine owns that connection; it is only looked at. */
static pid_t find_peer(const char *path)
{
	struct ucred cr;
	socklen_t l = sizeof(cr);
	struct dirent *e;
	pid_t pid = 0;
	DIR *d = opendir("/proc/self/fd");

	if (!d)
		return 0;
	while (!pid && (e = readdir(d))) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);

		if (*end || end == e->d_name || fd == dirfd(d) ||
		    !connected_to((int)fd, path))
			continue;
		if (!getsockopt((int)fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) &&
		    cr.pid > 0)
			pid = cr.pid;
	}
	closedir(d);
	return pid;
}

/**
 * vm_peer_track() - a source migrating over a UNIX socket (which may pass
 * its guest by fd): remember the destination process at its other end.
 * @vm: the VM (its migration URI is "unix:PATH").
 */
void vm_peer_track(struct vm *vm)
{
	const char *uri = vm->mig.uri;
	pid_t pid;
	int fd;

	if (strncmp(uri, "unix:", 5))
		return;
	pid = find_peer(uri + 5);
	fd = pid ? pidfd_open(pid, 0) : -1;
	pthread_mutex_lock(&peer_lock);
	if (peer_fd >= 0)
		close(peer_fd);
	peer_fd = fd;
	peer_pid = fd >= 0 ? pid : 0;
	pthread_mutex_unlock(&peer_lock);
	if (fd < 0)
		fprintf(stderr, "ferry-vm: the local destination process is not "
			"known (%s): an unconfirmed end cannot say whether it "
			"still runs\n", pid ? strerror(errno) : "no peer found");
}

/**
 * vm_peer_state() - does the last local destination still exist?
 * @pid: receives its pid (0 when not known).
 * @wait_ms: how long to wait for it to exit (0: look only).
 *
 * A killed process closes its descriptors before it is reported exited,
 * so the source can see the connection reset a moment before the pidfd
 * says so: right after that, wait a little.
 *
 * Return: 1 it exists (running, stopped or hung: it may run the guest),
 * 0 it has exited, -1 not known.
 */
int vm_peer_state(pid_t *pid, int wait_ms)
{
	struct pollfd p;
	int rc;

	pthread_mutex_lock(&peer_lock);
	*pid = peer_pid;
	if (peer_fd < 0) {
		pthread_mutex_unlock(&peer_lock);
		return -1;
	}
	/* A pidfd polls readable once its process has exited. */
	p = (struct pollfd){ .fd = peer_fd, .events = POLLIN };
	rc = poll(&p, 1, wait_ms);
	pthread_mutex_unlock(&peer_lock);
	if (rc < 0)
		return -1;
	return rc == 0;
}

/**
 * vm_peer_forget() - the guest runs here again or left for good: the
 * destination process no longer matters.
 */
void vm_peer_forget(void)
{
	pthread_mutex_lock(&peer_lock);
	if (peer_fd >= 0)
		close(peer_fd);
	peer_fd = -1;
	peer_pid = 0;
	pthread_mutex_unlock(&peer_lock);
}

/**
 * vm_local_risk() - what `ferry resume --force` risks on a source whose
 * local migration ended unconfirmed, by what is known of the destination.
 * @alive: vm_peer_state()'s answer.
 * @pid: the destination's pid (0: not known).
 * @buf: receives the text.
 * @len: size of @buf.
 */
void vm_local_risk(int alive, pid_t pid, char *buf, size_t len)
{
	static const char shared[] = "the guest's memory is shared with the "
		"destination (passed by fd): if it ran the guest before it "
		"died, the vCPU and device state of the pause resume here over "
		"the memory it wrote since";

	if (alive == 0)
		snprintf(buf, len, "the destination process (pid %d) has exited, "
			 "so no other process runs the guest; %s", (int)pid,
			 shared);
	else if (alive > 0)
		snprintf(buf, len, "the destination process (pid %d) still "
			 "exists and holds the same memory and sockets: if it "
			 "runs the guest, two processes would drive them; "
			 "'resume --force' refuses until it has exited", (int)pid);
	else
		snprintf(buf, len, "the destination process is not known: if it "
			 "still runs the guest, two processes drive the same "
			 "memory and sockets; %s", shared);
}
