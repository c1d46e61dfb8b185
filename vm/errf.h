/* SPDX-License-Identifier: MIT */
/*
 * errf.h - the one-line reasons that ferry-vm's system-facing modules
 * (tcprepair.c, netaddr.c) give with their negative codes.
 */
#ifndef FERRY_VM_ERRF_H
#define FERRY_VM_ERRF_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static inline int vm_errf(char *err, size_t len, int code, const char *fmt,
			  ...) __attribute__((format(printf, 4, 5)));

/* Write "<text>: <strerror(-code)>" into @err and return @code. */
static inline int vm_errf(char *err, size_t len, int code, const char *fmt,
			  ...)
{
	va_list ap;
	int n = 0;

	if (err && len) {
		va_start(ap, fmt);
		n = vsnprintf(err, len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < len)
			snprintf(err + n, len - (size_t)n, ": %s",
				 strerror(-code));
	}
	return code;
}

#endif /* FERRY_VM_ERRF_H */
