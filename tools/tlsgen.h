/* SPDX-License-Identifier: MIT */
/*
 * tlsgen.h - a throwaway CA and the certificates of QEMU's tls-creds-x509
 * directory, made with GnuTLS's x509 API (for `ferry demo --tls`,
 * `ferry tls-certs` and the tests).
 */
#ifndef FERRY_TLSGEN_H
#define FERRY_TLSGEN_H

#include <stdbool.h>
#include <stddef.h>

struct tlsgen_opts {
	const char *server_name; /* DNS name in server-cert.pem (localhost) */
	const char *client_name; /* and in client-cert.pem (ferry-client) */
	bool expired;		 /* client-cert.pem expired yesterday */
};

/*
 * tlsgen_make() - write ca-cert.pem, ca-key.pem, server-cert.pem,
 * server-key.pem, client-cert.pem and client-key.pem into @dir (which
 * exists). The server certificate also names 127.0.0.1 and ::1. 0, or a
 * negative errno with the reason in @err.
 */
int tlsgen_make(const char *dir, const struct tlsgen_opts *o, char *err,
		size_t errlen);

#endif
