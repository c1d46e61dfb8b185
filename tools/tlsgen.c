// SPDX-License-Identifier: MIT
/*
 * tlsgen.c - a throwaway CA with a server and a client certificate, for
 * demos and tests. Keys are ECDSA P-256 (quick to make); the CA lives a
 * day, the leaves too; the client's ended yesterday when asked (expired).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>

#include "tlsgen.h"

#define DAY (24 * 3600)

struct ident {
	gnutls_x509_privkey_t key;
	gnutls_x509_crt_t crt;
};

static void ident_free(struct ident *id)
{
	if (id->crt)
		gnutls_x509_crt_deinit(id->crt);
	if (id->key)
		gnutls_x509_privkey_deinit(id->key);
}

/* Write @d to DIR/NAME (a key: mode 0600). */
static int write_file(const char *dir, const char *name, const gnutls_datum_t *d,
		      char *err, size_t errlen)
{
	char path[4096];
	int fd;
	ssize_t w;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		  strstr(name, "key") ? 0600 : 0644);
	if (fd < 0) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		return -errno;
	}
	w = write(fd, d->data, d->size);
	close(fd);
	if (w != (ssize_t)d->size) {
		snprintf(err, errlen, "cannot write %s", path);
		return -EIO;
	}
	return 0;
}

static int save(const char *dir, const char *stem, const struct ident *id,
		char *err, size_t errlen)
{
	gnutls_datum_t d = { NULL, 0 };
	char name[64];
	int rc;

	rc = gnutls_x509_crt_export2(id->crt, GNUTLS_X509_FMT_PEM, &d);
	if (rc < 0)
		goto gnutls_fail;
	snprintf(name, sizeof(name), "%s-cert.pem", stem);
	rc = write_file(dir, name, &d, err, errlen);
	gnutls_free(d.data);
	d.data = NULL;
	if (rc)
		return rc;
	rc = gnutls_x509_privkey_export2(id->key, GNUTLS_X509_FMT_PEM, &d);
	if (rc < 0)
		goto gnutls_fail;
	snprintf(name, sizeof(name), "%s-key.pem", stem);
	rc = write_file(dir, name, &d, err, errlen);
	gnutls_free(d.data);
	return rc;
gnutls_fail:
	snprintf(err, errlen, "exporting %s: %s", stem, gnutls_strerror(rc));
	return -EINVAL;
}

/* A key and a certificate with @cn, valid from @from to @to, serial @sn. */
static int make_base(struct ident *id, const char *cn, time_t from, time_t to,
		     unsigned char sn)
{
	int rc;

	rc = gnutls_x509_privkey_init(&id->key);
	if (!rc)
		rc = gnutls_x509_privkey_generate(
			id->key, GNUTLS_PK_ECDSA,
			GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
	if (!rc)
		rc = gnutls_x509_crt_init(&id->crt);
	if (!rc)
		rc = gnutls_x509_crt_set_version(id->crt, 3);
	if (!rc)
		rc = gnutls_x509_crt_set_serial(id->crt, &sn, 1);
	if (!rc)
		rc = gnutls_x509_crt_set_activation_time(id->crt, from);
	if (!rc)
		rc = gnutls_x509_crt_set_expiration_time(id->crt, to);
	if (!rc)
		rc = gnutls_x509_crt_set_dn_by_oid(id->crt,
						   GNUTLS_OID_X520_COMMON_NAME,
						   0, cn, (unsigned)strlen(cn));
	if (!rc)
		rc = gnutls_x509_crt_set_key(id->crt, id->key);
	return rc;
}

/* Each CA has a name of its own: two throwaway CAs are told apart. */
static int make_ca(struct ident *ca, time_t now)
{
	unsigned char r[4] = { 0 };
	char name[64];
	int rc;

	gnutls_rnd(GNUTLS_RND_NONCE, r, sizeof(r));
	snprintf(name, sizeof(name), "ferry throwaway CA %02x%02x%02x%02x",
		 r[0], r[1], r[2], r[3]);
	rc = make_base(ca, name, now - DAY, now + DAY, 1);

	if (!rc)
		rc = gnutls_x509_crt_set_basic_constraints(ca->crt, 1, -1);
	if (!rc)
		rc = gnutls_x509_crt_set_key_usage(ca->crt,
						   GNUTLS_KEY_KEY_CERT_SIGN |
						   GNUTLS_KEY_CRL_SIGN);
	if (!rc)
		rc = gnutls_x509_crt_sign2(ca->crt, ca->crt, ca->key,
					   GNUTLS_DIG_SHA256, 0);
	return rc;
}

/* A leaf for @name signed by @ca; @server adds the loopback addresses
 * and the server purpose. */
static int make_leaf(struct ident *id, const struct ident *ca,
		     const char *name, bool server, bool expired, time_t now,
		     unsigned char sn)
{
	const char *purpose = server ? GNUTLS_KP_TLS_WWW_SERVER
				     : GNUTLS_KP_TLS_WWW_CLIENT;
	unsigned char v4[4], v6[16];
	int rc = make_base(id, name, expired ? now - 2 * DAY : now - DAY,
			   expired ? now - DAY : now + DAY, sn);

	if (!rc)
		rc = gnutls_x509_crt_set_basic_constraints(id->crt, 0, -1);
	if (!rc)
		rc = gnutls_x509_crt_set_key_usage(id->crt,
						   GNUTLS_KEY_DIGITAL_SIGNATURE);
	if (!rc)
		rc = gnutls_x509_crt_set_key_purpose_oid(id->crt, purpose, 0);
	if (!rc)
		rc = gnutls_x509_crt_set_subject_alt_name(
			id->crt, GNUTLS_SAN_DNSNAME, name,
			(unsigned)strlen(name), GNUTLS_FSAN_APPEND);
	if (!rc && server) {
		inet_pton(AF_INET, "127.0.0.1", v4);
		inet_pton(AF_INET6, "::1", v6);
		rc = gnutls_x509_crt_set_subject_alt_name(
			id->crt, GNUTLS_SAN_IPADDRESS, v4, 4, GNUTLS_FSAN_APPEND);
		if (!rc)
			rc = gnutls_x509_crt_set_subject_alt_name(
				id->crt, GNUTLS_SAN_IPADDRESS, v6, 16,
				GNUTLS_FSAN_APPEND);
	}
	if (!rc)
		rc = gnutls_x509_crt_sign2(id->crt, ca->crt, ca->key,
					   GNUTLS_DIG_SHA256, 0);
	return rc;
}

/**
 * tlsgen_make() - see tlsgen.h.
 */
int tlsgen_make(const char *dir, const struct tlsgen_opts *o, char *err,
		size_t errlen)
{
	struct ident ca = { 0 }, srv = { 0 }, cli = { 0 };
	const char *sname = o && o->server_name ? o->server_name : "localhost";
	const char *cname = o && o->client_name ? o->client_name : "ferry-client";
	bool expired = o && o->expired;
	time_t now = time(NULL);
	int rc;

	rc = make_ca(&ca, now);
	if (!rc)
		rc = make_leaf(&srv, &ca, sname, true, false, now, 2);
	if (!rc)
		rc = make_leaf(&cli, &ca, cname, false, expired, now, 3);
	if (rc) {
		snprintf(err, errlen, "making certificates: %s",
			 gnutls_strerror(rc));
		rc = -EINVAL;
	}
	if (!rc)
		rc = save(dir, "ca", &ca, err, errlen);
	if (!rc)
		rc = save(dir, "server", &srv, err, errlen);
	if (!rc)
		rc = save(dir, "client", &cli, err, errlen);
	ident_free(&cli);
	ident_free(&srv);
	ident_free(&ca);
	return rc;
}
