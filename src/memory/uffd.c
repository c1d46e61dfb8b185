// SPDX-License-Identifier: MIT
/*
 * uffd.c - opening a userfaultfd, for the dirty tracker (write-protect)
 * and the lazy loader (missing pages) alike.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "memory/memory.h"

/* Debian 12's kernel headers (6.1) may lack these (Linux 6.1+); the
 * values are the kernel's UAPI ones, and the running kernel decides. */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC
#define USERFAULTFD_IOC 0xAA
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(USERFAULTFD_IOC, 0x00)
#endif

/**
 * fy_uffd_open() - open a non-blocking, close-on-exec userfaultfd.
 * @user_mode_only: may fall back to UFFD_USER_MODE_ONLY, which every
 *                  process may open but which turns faults taken in the
 *                  kernel (a read(2) into the memory) into EFAULT.
 * @why: receives the reason on failure (may be NULL).
 * @len: size of @why.
 *
 * The system call is refused to unprivileged processes unless
 * vm.unprivileged_userfaultfd=1; /dev/userfaultfd (Linux 6.1+) is governed
 * by its file permissions instead.
 * Return: the descriptor, or -ENOSYS, -EPERM or another negative code.
 */
int fy_uffd_open(bool user_mode_only, char *why, size_t len)
{
	int flags = O_CLOEXEC | O_NONBLOCK, fd, dev, e;

	fd = (int)syscall(SYS_userfaultfd, flags);
	if (fd >= 0)
		return fd;
	e = errno;
	if (e != EPERM) {
		if (why && len)
			snprintf(why, len, "userfaultfd: %s", e == ENOSYS
				 ? "not supported by this kernel (CONFIG_USERFAULTFD)"
				 : strerror(e));
		return -e;
	}
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
		close(dev);
		if (fd >= 0)
			return fd;
	}
	if (user_mode_only) {
		fd = (int)syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY);
		if (fd >= 0)
			return fd;
	}
	if (why && len)
		snprintf(why, len, "userfaultfd: %s (needs root, vm.unprivileged_userfaultfd=1 or access to /dev/userfaultfd)",
			 strerror(EPERM));
	return -EPERM;
}
