// SPDX-License-Identifier: MIT
/*
 * tls.c - TLS sessions on migration sockets, with GnuTLS.
 *
 * Both ends authenticate: with x509 the accepting side requires a client
 * certificate, and each side checks the other's chain against its CA
 * file (and CRL), its validity dates, and, when names are configured,
 * that the certificate carries one of them (SAN or CN). With PSK both
 * prove they hold the same key. The checks run inside the handshake
 * (GnuTLS's verify callback), so a refused peer gets an alert that names
 * the class of failure, and this side's message names the cause.
 *
 * The socket keeps its short send and receive timeouts. GnuTLS reads and
 * writes through our push and pull functions, which come back to the
 * caller's idle() whenever the socket's timeout passes with nothing moved:
 * the caller's cancel flag and idle limit keep working under TLS, and
 * GnuTLS never sees a would-block (its calls never need repeating).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "transport/tls.h"
#include "transport/tls_int.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

/**
 * fy_tls_now_ns() - the monotonic clock, in nanoseconds.
 */
uint64_t fy_tls_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static bool given(const char *s)
{
	return s && s[0];
}

/**
 * fy_tls_config_on() - whether @c asks for TLS at all.
 */
bool fy_tls_config_on(const struct fy_tls_config *c)
{
	return given(c->ca_file) || given(c->cert_file) || given(c->key_file) ||
	       given(c->psk_file);
}

/**
 * fy_tls_config_check() - see tls.h.
 */
int fy_tls_config_check(const struct fy_tls_config *c, char *err,
			size_t errlen)
{
	bool x509 = given(c->ca_file) || given(c->cert_file) ||
		    given(c->key_file);
	const char *why = NULL;

	if (x509 && given(c->psk_file))
		why = "TLS: x509 files (tls_ca_file, tls_cert_file, tls_key_file) and a PSK file (tls_psk_file) exclude each other";
	else if (x509 && (!given(c->ca_file) || !given(c->cert_file) ||
			  !given(c->key_file)))
		why = "TLS: x509 needs all three of tls_ca_file, tls_cert_file and tls_key_file";
	else if (!x509 && (given(c->crl_file) || given(c->peer_names)))
		why = "TLS: tls_crl_file and tls_peer_names are for x509 (give tls_ca_file, tls_cert_file and tls_key_file)";
	else if (!given(c->psk_file) && given(c->psk_identity))
		why = "TLS: tls_psk_identity needs tls_psk_file";
	else if (!fy_tls_config_on(c) && given(c->priority))
		why = "TLS: tls_priority needs x509 files or a PSK file";
	else if (!fy_aead_engine_name((enum fy_aead_engine)c->engine))
		why = "TLS: tls_engine is none of FERRY_TLS_ENGINE_AUTO, _GNUTLS, _IPSEC_MB and _KTLS";
	if (!why)
		return 0;
	snprintf(err, errlen, "%s", why);
	return -EINVAL;
}

/* Can @path be read? The error names it. */
static int readable(const char *what, const char *path, char *err,
		    size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		close(fd);
		return 0;
	}
	snprintf(err, errlen, "TLS: cannot read the %s %s: %s", what, path,
		 strerror(errno));
	return errno == ENOENT ? -ENOENT : -EINVAL;
}

/* Is @s an even-length run of hex digits? */
static bool all_hex(const char *s)
{
	size_t n = strlen(s);

	if (!n || n % 2)
		return false;
	for (; *s; s++)
		if (!strchr("0123456789abcdefABCDEF", *s))
			return false;
	return true;
}

/* Parse one "identity:hexkey" line into @k; false if malformed. */
static bool parse_key(char *line, struct psk_key *k)
{
	char *colon;

	line[strcspn(line, "\r\n")] = 0;
	colon = strrchr(line, ':');
	if (!colon || colon == line ||
	    (size_t)(colon - line) >= sizeof(k->identity) ||
	    strlen(colon + 1) >= sizeof(k->hex) || !all_hex(colon + 1))
		return false;
	*colon = 0;
	snprintf(k->identity, sizeof(k->identity), "%.127s", line);
	snprintf(k->hex, sizeof(k->hex), "%s", colon + 1);
	return true;
}

/* Read the PSK file: "identity:hexkey" lines (QEMU's tls-creds-psk). */
static int read_keys(struct fy_tls_creds *cr, const char *path, char *err,
		     size_t errlen)
{
	char line[512];
	unsigned lineno = 0;
	FILE *f;
	int rc = readable("PSK file", path, err, errlen);

	if (rc)
		return rc;
	f = fopen(path, "re");
	if (!f)
		return readable("PSK file", path, err, errlen);
	cr->keys = calloc(FY_TLS_MAX_KEYS, sizeof(*cr->keys));
	if (!cr->keys) {
		fclose(f);
		return -ENOMEM;
	}
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		if (line[strspn(line, " \t\r\n")] == 0 || line[0] == '#')
			continue;
		if (cr->nkeys == FY_TLS_MAX_KEYS ||
		    !parse_key(line, &cr->keys[cr->nkeys])) {
			snprintf(err, errlen,
				 cr->nkeys == FY_TLS_MAX_KEYS
					 ? "TLS: %.200s has more than 64 keys (line %u)"
					 : "TLS: %.200s line %u is not identity:hexkey",
				 path, lineno);
			fclose(f);
			return -EINVAL;
		}
		cr->nkeys++;
	}
	fclose(f);
	if (!cr->nkeys) {
		snprintf(err, errlen, "TLS: %s holds no identity:hexkey line",
			 path);
		return -EINVAL;
	}
	return 0;
}

/* Server side of PSK: the key of the identity the client named. */
static int psk_lookup(gnutls_session_t s, const char *identity,
		      gnutls_datum_t *key)
{
	struct fy_tls *t = gnutls_session_get_ptr(s);
	const struct fy_tls_creds *cr = t->cr;

	for (size_t i = 0; i < cr->nkeys; i++) {
		gnutls_datum_t hex;
		size_t len = strlen(cr->keys[i].hex) / 2;

		if (strcmp(cr->keys[i].identity, identity))
			continue;
		hex.data = (unsigned char *)cr->keys[i].hex;
		hex.size = (unsigned)strlen(cr->keys[i].hex);
		key->data = gnutls_malloc(len);
		key->size = (unsigned)len;
		if (!key->data || gnutls_hex_decode(&hex, key->data, &len))
			return -1;
		return 0;
	}
	snprintf(t->why, sizeof(t->why),
		 "the peer's PSK identity \"%.64s\" is not in %.200s", identity,
		 cr->psk_file);
	return -1;
}

/* Describe a verification @status of the peer's chain. */
static void status_words(const struct fy_tls_creds *cr, unsigned status,
			 time_t expires, time_t starts, char *out, size_t len)
{
	char when[64] = "";
	struct tm tm;

	if (status & GNUTLS_CERT_REVOKED) {
		snprintf(out, len, "the peer's certificate is revoked (CRL %.200s)",
			 cr->crl_file[0] ? cr->crl_file : "?");
	} else if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND |
			     GNUTLS_CERT_SIGNER_NOT_CA |
			     GNUTLS_CERT_SIGNATURE_FAILURE)) {
		/* A CA of the same name that did not sign it fails the
		 * signature rather than the search for a signer. */
		snprintf(out, len,
			 "the peer's certificate is not signed by the CA in %.200s",
			 cr->ca_file);
	} else if (status & GNUTLS_CERT_EXPIRED) {
		if (gmtime_r(&expires, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
		snprintf(out, len, "the peer's certificate expired on %s", when);
	} else if (status & GNUTLS_CERT_NOT_ACTIVATED) {
		if (gmtime_r(&starts, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
		snprintf(out, len, "the peer's certificate is not valid before %s",
			 when);
	} else {
		gnutls_datum_t d = { NULL, 0 };

		gnutls_certificate_verification_status_print(
			status, GNUTLS_CRT_X509, &d, 0);
		snprintf(out, len, "the peer's certificate is refused: %s",
			 d.data ? (char *)d.data : "verification failed");
		gnutls_free(d.data);
	}
}

/* Does @crt carry one of the comma-separated @names? */
static bool names_match(gnutls_x509_crt_t crt, const char *names)
{
	char copy[1024], *save = NULL;

	snprintf(copy, sizeof(copy), "%s", names);
	for (char *n = strtok_r(copy, ",", &save); n;
	     n = strtok_r(NULL, ",", &save))
		if (n[0] && gnutls_x509_crt_check_hostname2(crt, n, 0))
			return true;
	return false;
}

/* The peer's first certificate, imported; NULL (and t->why) if none. */
static gnutls_x509_crt_t peer_cert(struct fy_tls *t)
{
	const gnutls_datum_t *list;
	unsigned n = 0;
	gnutls_x509_crt_t crt;

	list = gnutls_certificate_get_peers(t->s, &n);
	if (!list || !n) {
		snprintf(t->why, sizeof(t->why),
			 "the peer presented no certificate (a certificate signed by the CA in %.200s is required)",
			 t->cr->ca_file);
		return NULL;
	}
	if (gnutls_x509_crt_init(&crt))
		return NULL;
	if (gnutls_x509_crt_import(crt, &list[0], GNUTLS_X509_FMT_DER)) {
		gnutls_x509_crt_deinit(crt);
		snprintf(t->why, sizeof(t->why),
			 "the peer's certificate cannot be parsed");
		return NULL;
	}
	return crt;
}

/* The x509 checks, during the handshake: chain, dates, CRL, names. */
static int verify_peer(gnutls_session_t s)
{
	struct fy_tls *t = gnutls_session_get_ptr(s);
	gnutls_x509_crt_t crt = peer_cert(t);
	unsigned status = 0;
	char dn[256];
	size_t dnlen = sizeof(dn);
	int rc = GNUTLS_E_CERTIFICATE_ERROR;

	if (!crt)
		return rc;
	if (gnutls_certificate_verify_peers2(s, &status) < 0) {
		snprintf(t->why, sizeof(t->why),
			 "the peer's certificate could not be verified");
	} else if (status) {
		status_words(t->cr, status,
			     gnutls_x509_crt_get_expiration_time(crt),
			     gnutls_x509_crt_get_activation_time(crt), t->why,
			     sizeof(t->why));
	} else if (t->cr->peer_names[0] &&
		   !names_match(crt, t->cr->peer_names)) {
		if (gnutls_x509_crt_get_dn(crt, dn, &dnlen))
			snprintf(dn, sizeof(dn), "?");
		snprintf(t->why, sizeof(t->why),
			 "the peer's certificate (%.100s) names none of the accepted peers (%.150s)",
			 dn, t->cr->peer_names);
	} else {
		rc = 0;
	}
	gnutls_x509_crt_deinit(crt);
	return rc;
}

static int load_x509(struct fy_tls_creds *cr, const struct fy_tls_config *c,
		     char *err, size_t errlen)
{
	int rc = readable("CA file", c->ca_file, err, errlen);

	if (!rc)
		rc = readable("certificate", c->cert_file, err, errlen);
	if (!rc)
		rc = readable("private key", c->key_file, err, errlen);
	if (!rc && given(c->crl_file))
		rc = readable("CRL", c->crl_file, err, errlen);
	if (rc)
		return rc;
	if (gnutls_certificate_allocate_credentials(&cr->x509))
		return -ENOMEM;
	rc = gnutls_certificate_set_x509_trust_file(cr->x509, c->ca_file,
						    GNUTLS_X509_FMT_PEM);
	if (rc <= 0) {
		snprintf(err, errlen, "TLS: no CA certificate in %s: %s",
			 c->ca_file, rc ? gnutls_strerror(rc) : "empty");
		return -EINVAL;
	}
	rc = gnutls_certificate_set_x509_key_file(cr->x509, c->cert_file,
						  c->key_file,
						  GNUTLS_X509_FMT_PEM);
	if (rc < 0) {
		snprintf(err, errlen,
			 "TLS: the certificate %s with the key %s: %s",
			 c->cert_file, c->key_file, gnutls_strerror(rc));
		return -EINVAL;
	}
	if (given(c->crl_file)) {
		rc = gnutls_certificate_set_x509_crl_file(cr->x509, c->crl_file,
							  GNUTLS_X509_FMT_PEM);
		if (rc < 0) {
			snprintf(err, errlen, "TLS: the CRL %s: %s",
				 c->crl_file, gnutls_strerror(rc));
			return -EINVAL;
		}
	}
	gnutls_certificate_set_verify_function(cr->x509, verify_peer);
	snprintf(cr->ca_file, sizeof(cr->ca_file), "%s", c->ca_file);
	snprintf(cr->crl_file, sizeof(cr->crl_file), "%s",
		 given(c->crl_file) ? c->crl_file : "");
	snprintf(cr->peer_names, sizeof(cr->peer_names), "%s",
		 given(c->peer_names) ? c->peer_names : "");
	return 0;
}

static int load_psk(struct fy_tls_creds *cr, const struct fy_tls_config *c,
		    char *err, size_t errlen)
{
	const struct psk_key *k = NULL;
	gnutls_datum_t key;
	int rc = read_keys(cr, c->psk_file, err, errlen);

	if (rc)
		return rc;
	snprintf(cr->psk_file, sizeof(cr->psk_file), "%s", c->psk_file);
	if (cr->server) {
		if (gnutls_psk_allocate_server_credentials(&cr->psk_server))
			return -ENOMEM;
		gnutls_psk_set_server_credentials_function(cr->psk_server,
							   psk_lookup);
		return 0;
	}
	for (size_t i = 0; i < cr->nkeys && !k; i++)
		if (!given(c->psk_identity) ||
		    !strcmp(cr->keys[i].identity, c->psk_identity))
			k = &cr->keys[i];
	if (!k) {
		snprintf(err, errlen, "TLS: no key for the identity \"%s\" in %s",
			 c->psk_identity, c->psk_file);
		return -EINVAL;
	}
	if (gnutls_psk_allocate_client_credentials(&cr->psk_client))
		return -ENOMEM;
	key.data = (unsigned char *)k->hex;
	key.size = (unsigned)strlen(k->hex);
	rc = gnutls_psk_set_client_credentials(cr->psk_client, k->identity,
					       &key, GNUTLS_PSK_KEY_HEX);
	if (rc < 0) {
		snprintf(err, errlen, "TLS: the key of \"%s\" in %s: %s",
			 k->identity, c->psk_file, gnutls_strerror(rc));
		return -EINVAL;
	}
	return 0;
}

/*
 * The default priorities: GnuTLS's NORMAL, except that on a CPU with AES
 * and carry-less multiply instructions ChaCha20-Poly1305 goes last. NORMAL
 * lists it before AES-128-GCM, and a TLS 1.3 PSK session (whose binder
 * hash is SHA-256, which rules out AES-256-GCM-SHA384) would take it: here
 * it encrypts at 0.24 GB/s against 2.6-2.8 GB/s for AES-GCM (GnuTLS's
 * AES-NI/PCLMUL code; bench 13). Without those instructions ChaCha20 is
 * the faster one and NORMAL stays as it is.
 */
static const char *default_priority(void)
{
#if defined(__x86_64__) || defined(__i386__)
	if (__builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul"))
		return "NORMAL:-CHACHA20-POLY1305:+CHACHA20-POLY1305";
#endif
	return "NORMAL";
}

/* The priority string: the caller's or the default, PSK key exchanges
 * added for PSK. */
static int load_priority(struct fy_tls_creds *cr, const struct fy_tls_config *c,
			 char *err, size_t errlen)
{
	char prio[512];
	const char *at = NULL;
	int rc;

	snprintf(prio, sizeof(prio), "%s%s",
		 given(c->priority) ? c->priority : default_priority(),
		 cr->psk ? ":+ECDHE-PSK:+DHE-PSK:+PSK" : "");
	rc = gnutls_priority_init(&cr->prio, prio, &at);
	if (rc < 0) {
		snprintf(err, errlen, "TLS: the priority string \"%s\": %s (at \"%s\")",
			 prio, gnutls_strerror(rc), at ? at : "");
		cr->prio = NULL;
		return -EINVAL;
	}
	return 0;
}

/**
 * fy_tls_creds_load() - see tls.h.
 */
int fy_tls_creds_load(const struct fy_tls_config *c, bool server,
		      struct fy_tls_creds **out, char *err, size_t errlen)
{
	struct fy_tls_creds *cr;
	int rc = fy_tls_config_check(c, err, errlen);
	char why[160];

	*out = NULL;
	if (rc)
		return rc;
	if (!fy_tls_config_on(c)) {
		snprintf(err, errlen, "TLS: no credentials configured");
		return -EINVAL;
	}
	cr = calloc(1, sizeof(*cr));
	if (!cr)
		return -ENOMEM;
	cr->server = server;
	cr->psk = given(c->psk_file);
	cr->engine = (enum fy_aead_engine)c->engine;
	if (!fy_aead_usable(cr->engine, GNUTLS_CIPHER_AES_128_GCM, why,
			    sizeof(why))) {
		snprintf(err, errlen, "TLS: tls_engine ipsec-mb: %s", why);
		free(cr);
		return -EOPNOTSUPP;
	}
	rc = cr->psk ? load_psk(cr, c, err, errlen)
		     : load_x509(cr, c, err, errlen);
	if (!rc)
		rc = load_priority(cr, c, err, errlen);
	if (rc) {
		if (rc == -ENOMEM)
			snprintf(err, errlen, "TLS: out of memory");
		fy_tls_creds_free(cr);
		return rc;
	}
	*out = cr;
	return 0;
}

/**
 * fy_tls_creds_free() - free what fy_tls_creds_load() made; NULL is
 * harmless. No session may use them any more.
 */
void fy_tls_creds_free(struct fy_tls_creds *cr)
{
	if (!cr)
		return;
	if (cr->x509)
		gnutls_certificate_free_credentials(cr->x509);
	if (cr->psk_client)
		gnutls_psk_free_client_credentials(cr->psk_client);
	if (cr->psk_server)
		gnutls_psk_free_server_credentials(cr->psk_server);
	if (cr->prio)
		gnutls_priority_deinit(cr->prio);
	if (cr->keys)
		explicit_bzero(cr->keys, FY_TLS_MAX_KEYS * sizeof(*cr->keys));
	free(cr->keys);
	free(cr);
}

/**
 * fy_tls_wait_more() - nothing moved within the socket's timeout: the
 * deadline of the handshake, then the caller, decide.
 */
int fy_tls_wait_more(struct fy_tls *t, bool sending)
{
	if (t->deadline_ns && fy_tls_now_ns() > t->deadline_ns) {
		snprintf(t->why, sizeof(t->why),
			 "the handshake did not complete in time");
		return -ETIMEDOUT;
	}
	if (!t->idle)
		return 0;
	return t->idle(t->opaque, sending,
		       atomic_load_explicit(sending ? &t->tx_since : &t->rx_since,
					    memory_order_relaxed));
}

/* During the handshake, before every read or write, not only when the
 * peer is silent: a stranger that trickles a byte per tick must not hold
 * the connection past the deadline, nor past a cancel. */
static int handshake_allowed(struct fy_tls *t, bool sending)
{
	uint64_t now;

	if (!t->deadline_ns)
		return 0;
	now = fy_tls_now_ns();
	if (now > t->deadline_ns) {
		snprintf(t->why, sizeof(t->why),
			 "the handshake did not complete in time");
		return -ETIMEDOUT;
	}
	/* Since now: only a cancel can end it here. */
	return t->idle ? t->idle(t->opaque, sending, now) : 0;
}

/* A failed push or pull: keep the code, tell GnuTLS it failed. */
static ssize_t io_fail(struct fy_tls *t, int code)
{
	t->io_err = code;
	gnutls_transport_set_errno(t->s, EIO);
	return -1;
}

/* One sendmsg() of @iov, waiting while the socket has no room: the bytes
 * it took, or -1 with the code in t->io_err. */
static ssize_t send_once(struct fy_tls *t, const struct iovec *iov, int n)
{
	struct msghdr mh = { .msg_iov = (struct iovec *)iov,
			     .msg_iovlen = (size_t)n };

	for (;;) {
		int rc = handshake_allowed(t, true);
		ssize_t w;

		if (rc)
			return io_fail(t, rc);
		w = sendmsg(t->fd, &mh, MSG_NOSIGNAL);
		if (w >= 0) {
			atomic_store_explicit(&t->tx_since, fy_tls_now_ns(),
					      memory_order_relaxed);
			return w;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return io_fail(t, -errno);
		rc = fy_tls_wait_more(t, true);
		if (rc)
			return io_fail(t, rc);
	}
}

/**
 * fy_tls_wflush() - send the records gathered in the write buffer: 0,
 * or the code.
 */
int fy_tls_wflush(struct fy_tls *t)
{
	size_t done = 0;

	while (done < t->wlen) {
		struct iovec v = { t->wbuf + done, t->wlen - done };
		ssize_t w = send_once(t, &v, 1);

		/* Part of the buffer may be out: the stream is broken, and
		 * a later send must not repeat what went. */
		if (w < 0) {
			t->wlen = 0;
			return t->io_err ? t->io_err : -EIO;
		}
		done += (size_t)w;
	}
	t->wlen = 0;
	return 0;
}

/**
 * fy_tls_cork() - TCP_CORK on or off.
 *
 * Four records are a little more than 64 KiB, the loopback's segment: a
 * socket that is not corked sends their tail as a small segment of its
 * own, and the receiver wakes for it. Corked while a send lasts, the
 * kernel fills whole segments, and uncorking at its end sends the rest at
 * once (uncorked batches were slower: docs/benchmarks.md, bench 13).
 */
void fy_tls_cork(struct fy_tls *t, bool on)
{
	int v = on;

	if (t->corked == on)
		return;
	if (!setsockopt(t->fd, IPPROTO_TCP, TCP_CORK, &v, sizeof(v)))
		t->corked = on;
}

/*
 * GnuTLS hands over each record (16 KiB) as it is encrypted. While a
 * bulk send lasts (t->batch), records are gathered in the write buffer
 * and leave FY_TLS_BATCH of them per system call: one sendmsg() per
 * record costs more than the copy of a record that is still in the
 * cache. The handshake and single records go straight out.
 */
static ssize_t push(gnutls_transport_ptr_t p, const giovec_t *iov, int n)
{
	struct fy_tls *t = p;
	size_t len = 0;

	if (!t->batch || !t->wbuf)
		return send_once(t, (const struct iovec *)iov, n);
	for (int i = 0; i < n; i++)
		len += iov[i].iov_len;
	if (t->wlen + len > FY_TLS_WBUF) {
		int rc = fy_tls_wflush(t);

		if (rc)
			return io_fail(t, rc);
	}
	if (len > FY_TLS_WBUF)
		return send_once(t, (const struct iovec *)iov, n);
	for (int i = 0; i < n; i++) {
		memcpy(t->wbuf + t->wlen, iov[i].iov_base, iov[i].iov_len);
		t->wlen += iov[i].iov_len;
	}
	return (ssize_t)len;
}

/* Hand GnuTLS up to @len bytes of what was read ahead. */
static ssize_t take_ahead(struct fy_tls *t, void *buf, size_t len)
{
	size_t k = t->rlen - t->rpos;

	if (k > len)
		k = len;
	memcpy(buf, t->rbuf + t->rpos, k);
	t->rpos += k;
	return (ssize_t)k;
}

static ssize_t pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
	struct fy_tls *t = p;

	if (t->rpos < t->rlen)
		return take_ahead(t, buf, len);
	for (;;) {
		int rc = handshake_allowed(t, false);
		ssize_t r;

		if (rc)
			return io_fail(t, rc);
		/* The kernel's record layer (ktls) parses the stream from
		 * where GnuTLS stops: nothing past what it asks for. */
		r = recv(t->fd, t->rbuf,
			 t->cr->engine == FY_AEAD_KTLS && len < sizeof(t->rbuf)
				 ? len : sizeof(t->rbuf), 0);
		if (r > 0) {
			size_t k = sizeof(t->head) - t->nhead;

			if (k > (size_t)r)
				k = (size_t)r;
			memcpy(t->head + t->nhead, t->rbuf, k);
			t->nhead += k;
			atomic_store_explicit(&t->rx_since, fy_tls_now_ns(),
					      memory_order_relaxed);
			t->rpos = 0;
			t->rlen = (size_t)r;
			return take_ahead(t, buf, len);
		}
		if (r == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return io_fail(t, -errno);
		rc = fy_tls_wait_more(t, false);
		if (rc)
			return io_fail(t, rc);
	}
}

/* What the peer's first bytes say about it, when it is not TLS; *@ferry:
 * it is a ferry stream without TLS. */
static const char *not_tls(const struct fy_tls *t, bool *ferry)
{
	*ferry = t->nhead >= 5 && !memcmp(t->head, "FERRYMIG", t->nhead);
	if (*ferry)
		return "the peer sent a plaintext ferry stream: this side requires TLS (give the peer TLS credentials too)";
	if (t->nhead >= 4 && t->head[0] == 0x01 && t->head[1] == 0x01 &&
	    !t->head[2] && !t->head[3])
		return "the peer answered with a plaintext ferry error: it does not use TLS (a listener without TLS credentials?)";
	if (t->nhead && (t->head[0] < 0x14 || t->head[0] > 0x18))
		return "the peer does not speak TLS (its first bytes are no TLS record)";
	return NULL;
}

/* An alert the peer sent, in words. */
static void alert_words(struct fy_tls *t, char *err, size_t errlen)
{
	gnutls_alert_description_t a = gnutls_alert_get(t->s);
	const char *name = gnutls_alert_get_name(a);
	const char *hint = "";

	switch ((int)a) {
	case GNUTLS_A_BAD_CERTIFICATE:
	case GNUTLS_A_UNKNOWN_CA:
	case GNUTLS_A_CERTIFICATE_EXPIRED:
	case GNUTLS_A_CERTIFICATE_REVOKED:
	case GNUTLS_A_CERTIFICATE_UNKNOWN:
	case GNUTLS_A_UNSUPPORTED_CERTIFICATE:
	case GNUTLS_A_CERTIFICATE_REQUIRED:
	case GNUTLS_A_ACCESS_DENIED:
		hint = ": it did not accept our certificate (its log says why)";
		break;
	case GNUTLS_A_UNKNOWN_PSK_IDENTITY:
		hint = ": it does not know our PSK identity";
		break;
	case GNUTLS_A_BAD_RECORD_MAC:
	case GNUTLS_A_DECRYPT_ERROR:
	case GNUTLS_A_ILLEGAL_PARAMETER:
		hint = t->cr->psk ? ": our pre-shared keys differ"
				  : ": the handshake did not verify";
		break;
	case GNUTLS_A_INTERNAL_ERROR:
		/* GnuTLS answers so for an identity it has no key for. */
		hint = t->cr->psk ? ": it may not know our PSK identity" : "";
		break;
	default:
		break;
	}
	snprintf(err, errlen, "TLS: the peer refused the handshake (alert \"%s\")%s",
		 name ? name : "?", hint);
}

/* Say why the handshake failed with GnuTLS's @rc. */
static int handshake_error(struct fy_tls *t, int rc, char *err, size_t errlen)
{
	bool ferry;
	const char *plain = not_tls(t, &ferry);

	if (t->why[0]) {
		snprintf(err, errlen, "TLS: %s", t->why);
		return t->io_err ? t->io_err : -EACCES;
	}
	if (plain) {
		snprintf(err, errlen, "TLS: %s", plain);
		/* A ferry peer without TLS: the caller may answer it so. */
		return ferry ? -EPROTONOSUPPORT : -EPROTO;
	}
	if (t->io_err) {
		snprintf(err, errlen, "TLS: during the handshake: %s",
			 strerror(-t->io_err < 4096 && t->io_err < 0 ? -t->io_err : EIO));
		return t->io_err;
	}
	switch (rc) {
	case GNUTLS_E_FATAL_ALERT_RECEIVED:
		alert_words(t, err, errlen);
		return -EACCES;
	case GNUTLS_E_NO_CERTIFICATE_FOUND:
	case GNUTLS_E_CERTIFICATE_REQUIRED:
		snprintf(err, errlen,
			 "TLS: the peer presented no certificate (a certificate signed by the CA in %s is required)",
			 t->cr->ca_file);
		return -EACCES;
	case GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER:
		if (!t->cr->psk)
			goto other;
		/* TLS 1.3's binder did not verify: the keys differ. */
		__attribute__((fallthrough));
	case GNUTLS_E_DECRYPTION_FAILED:
	case GNUTLS_E_KEY_USAGE_VIOLATION:
		snprintf(err, errlen, "TLS: %s",
			 t->cr->psk ? "the peer's pre-shared key differs from ours"
				    : "the handshake did not verify");
		return -EACCES;
	case GNUTLS_E_PREMATURE_TERMINATION:
	case GNUTLS_E_PULL_ERROR:
		snprintf(err, errlen,
			 "TLS: the peer closed the connection during the handshake (it may have refused our credentials or not speak TLS)");
		return -ECONNRESET;
	default:
	other:
		snprintf(err, errlen, "TLS: the handshake failed: %s",
			 gnutls_strerror(rc));
		return -EPROTO;
	}
}

static int session_setup(struct fy_tls *t)
{
	const struct fy_tls_creds *cr = t->cr;
	unsigned flags = (cr->server ? GNUTLS_SERVER : GNUTLS_CLIENT) |
			 GNUTLS_NO_SIGNAL | GNUTLS_NO_TICKETS;
	int rc;

	if (gnutls_init(&t->s, flags))
		return -ENOMEM;
	gnutls_session_set_ptr(t->s, t);
	rc = gnutls_priority_set(t->s, cr->prio);
	if (!rc && cr->psk)
		rc = gnutls_credentials_set(t->s, GNUTLS_CRD_PSK,
					    cr->server ? (void *)cr->psk_server
						       : (void *)cr->psk_client);
	else if (!rc)
		rc = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE,
					    cr->x509);
	if (rc)
		return -EINVAL;
	if (cr->server && !cr->psk) {
		gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
		/* No CA names in the request: a client holding a certificate
		 * of another CA sends it, and hears that it is refused for
		 * that, rather than sending none. */
		gnutls_certificate_send_x509_rdn_sequence(t->s, 1);
	}
	t->keylog_next = gnutls_session_get_keylog_function(t->s);
	gnutls_session_set_keylog_function(t->s, fy_tls_keylog);
	gnutls_transport_set_ptr(t->s, t);
	gnutls_transport_set_vec_push_function(t->s, push);
	gnutls_transport_set_pull_function(t->s, pull);
	return 0;
}

/* After a good handshake with x509: the peer did present a certificate
 * that passed (the verify callback runs only when one is sent). */
static int check_after(struct fy_tls *t)
{
	if (t->cr->psk)
		return 0;
	if (gnutls_certificate_type_get(t->s) != GNUTLS_CRT_X509 ||
	    verify_peer(t->s))
		return -EACCES;
	return 0;
}

/*
 * The accepting side's verdict. In TLS 1.3 a client's handshake ends
 * before the server has checked the client's certificate, so a refusal
 * would reach the client only as an alert in the middle of its first
 * exchange. The server therefore sends one byte (FY_TLS_ACCEPTED) once
 * it has accepted the client, and the client reads it before it calls
 * the connection ready: both sides start the stream authenticated, and
 * a refused client hears why at once.
 */
#define FY_TLS_ACCEPTED 0x01

static int verdict(struct fy_tls *t, char *err, size_t errlen)
{
	uint8_t b = FY_TLS_ACCEPTED;
	ssize_t r;

	if (t->cr->server) {
		r = gnutls_record_send(t->s, &b, 1);
		if (r == 1)
			return 0;
		snprintf(err, errlen, "TLS: sending the handshake's verdict: %s",
			 t->io_err ? strerror(-t->io_err < 4096 ? -t->io_err : EIO)
				   : gnutls_strerror((int)r));
		return t->io_err ? t->io_err : -EPROTO;
	}
	do {
		r = gnutls_record_recv(t->s, &b, 1);
	} while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
	if (r == 1 && b == FY_TLS_ACCEPTED)
		return 0;
	if (r == 1 || r == 0) {
		snprintf(err, errlen, r ? "TLS: the peer's verdict is not one ferry sends (%#x)"
					: "TLS: the peer closed the connection after the handshake (it may have refused our certificate; its log says why)",
			 b);
		return r ? -EPROTO : -ECONNRESET;
	}
	return handshake_error(t, (int)r, err, errlen);
}

/**
 * fy_tls_start() - see tls.h.
 */
int fy_tls_start(const struct fy_tls_creds *cr, int fd, int deadline_ms,
		 fy_tls_idle_fn idle, void *opaque, struct fy_tls **out,
		 char *err, size_t errlen)
{
	struct fy_tls *t = calloc(1, sizeof(*t));
	int rc;

	*out = NULL;
	if (!t) {
		snprintf(err, errlen, "TLS: out of memory");
		return -ENOMEM;
	}
	t->fd = fd;
	t->cr = cr;
	t->idle = idle;
	t->opaque = opaque;
	t->deadline_ns = fy_tls_now_ns();
	atomic_init(&t->tx_since, t->deadline_ns);
	atomic_init(&t->rx_since, t->deadline_ns);
	t->deadline_ns += (uint64_t)deadline_ms * 1000000ull;
	rc = session_setup(t);
	if (rc) {
		snprintf(err, errlen, "TLS: cannot set up a session");
		fy_tls_free(t);
		return rc;
	}
	do {
		rc = gnutls_handshake(t->s);
	} while (rc < 0 && !gnutls_error_is_fatal(rc) && !t->io_err);
	if (!rc && check_after(t))
		rc = GNUTLS_E_CERTIFICATE_ERROR;
	if (rc) {
		int code = handshake_error(t, rc, err, errlen);

		/* The peer learns the class of refusal (best effort; not
		 * into a connection that already failed, nor to a peer that
		 * does not speak TLS: the caller may answer it in its own
		 * words). */
		if (!t->io_err && code != -EPROTONOSUPPORT && code != -EPROTO)
			gnutls_alert_send_appropriate(t->s, rc);
		fy_tls_free(t);
		return code;
	}
	rc = verdict(t, err, errlen);
	if (rc) {
		fy_tls_free(t);
		return rc;
	}
	t->deadline_ns = 0;
	/* Without the buffer, records go out one by one. */
	t->wbuf = malloc(FY_TLS_WBUF);
	rc = fy_tls_own_start(t, err, errlen);
	if (rc) {
		/* The peer finished its handshake and waits for the stream:
		 * it hears a refusal in TLS, not a closed connection it
		 * would take for a broken one (best effort; not once the
		 * socket is the kernel's TLS, which would seal it again). */
		if (!t->ktls_ulp)
			gnutls_alert_send(t->s, GNUTLS_AL_FATAL,
					  GNUTLS_A_HANDSHAKE_FAILURE);
		fy_tls_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

/* Send all of @p: GnuTLS takes one record per call. */
static int send_all(struct fy_tls *t, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t w = gnutls_record_send(t->s, p, len);

		if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED)
			continue;
		if (w < 0)
			return t->io_err ? t->io_err : -EPIPE;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/**
 * fy_tls_send() - see tls.h. Pieces smaller than a record are gathered in
 * the stage (one copy of a few bytes of framing); a long run with the
 * stage empty goes straight to GnuTLS in whole records, its tail staged.
 */
int fy_tls_send(struct fy_tls *t, const struct iovec *iov, int n, bool more)
{
	int rc = 0;

	if (t->tx_err)
		return t->tx_err;
	fy_tls_cork(t, true);
	if (t->own)
		return fy_tls_own_send(t, iov, n, more);
	if (t->ktls)
		return fy_tls_ktls_send(t, iov, n, more);
	t->batch = true;
	for (int i = 0; i < n && !rc; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t len = iov[i].iov_len;

		while (len && !rc) {
			size_t k;

			if (!t->staged && len >= FY_TLS_RECORD) {
				k = len - len % FY_TLS_RECORD;
				rc = send_all(t, p, k);
			} else {
				k = FY_TLS_RECORD - t->staged;
				if (k > len)
					k = len;
				memcpy(t->stage + t->staged, p, k);
				t->staged += k;
				if (t->staged == FY_TLS_RECORD) {
					rc = send_all(t, t->stage, t->staged);
					t->staged = 0;
				}
			}
			p += k;
			len -= k;
		}
	}
	if (!rc && !more && t->staged) {
		rc = send_all(t, t->stage, t->staged);
		t->staged = 0;
	}
	/* What was gathered leaves now: the caller may wait for an answer
	 * next. A partial record stays staged while @more. */
	t->batch = false;
	if (!rc && t->wlen)
		rc = fy_tls_wflush(t);
	if (rc) {
		/* The stream is broken: nothing more goes out, and every
		 * later send (a keep-alive) returns this failure rather than
		 * records the peer could not place after the lost ones. */
		t->wlen = 0;
		t->tx_err = rc;
		return rc;
	}
	if (!more)
		fy_tls_cork(t, false);
	return 0;
}

/**
 * fy_tls_recv() - see tls.h.
 */
ssize_t fy_tls_recv(struct fy_tls *t, void *buf, size_t len)
{
	if (t->own)
		return fy_tls_own_recv(t, buf, len, false);
	if (t->ktls)
		return fy_tls_ktls_recv(t, buf, len);
	for (;;) {
		ssize_t r = gnutls_record_recv(t->s, buf, len);

		if (r >= 0)
			return r;
		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED ||
		    r == GNUTLS_E_REHANDSHAKE ||
		    (r == GNUTLS_E_WARNING_ALERT_RECEIVED))
			continue;
		if (r == GNUTLS_E_PREMATURE_TERMINATION)
			return 0;
		if (r == GNUTLS_E_PULL_ERROR && t->io_err)
			return t->io_err;
		if (r == GNUTLS_E_FATAL_ALERT_RECEIVED) {
			const char *a = gnutls_alert_get_name(gnutls_alert_get(t->s));

			/* As ferry's own records say it. */
			snprintf(t->rx_why, sizeof(t->rx_why),
				 "TLS: the peer sent the alert \"%s\"",
				 a ? a : "?");
			return -ECONNRESET;
		}
		snprintf(t->rx_why, sizeof(t->rx_why), "TLS: %s",
			 gnutls_strerror((int)r));
		if (r == GNUTLS_E_DECRYPTION_FAILED)
			return -EBADMSG;
		return -EPROTO;
	}
}

/**
 * fy_tls_recv_cold() - see tls.h.
 */
ssize_t fy_tls_recv_cold(struct fy_tls *t, void *buf, size_t len)
{
	if (t->own)
		return fy_tls_own_recv(t, buf, len, true);
	return fy_tls_recv(t, buf, len);
}

/**
 * fy_tls_pending() - see tls.h.
 */
size_t fy_tls_pending(struct fy_tls *t)
{
	if (t->own)
		return (t->plen - t->ppos) + (t->clen - t->cpos);
	if (t->ktls)
		return t->plen - t->ppos;
	return gnutls_record_check_pending(t->s) + (t->rlen - t->rpos);
}

/**
 * fy_tls_describe() - see tls.h.
 */
void fy_tls_describe(struct fy_tls *t, char *buf, size_t len)
{
	const char *v = gnutls_protocol_get_name(gnutls_protocol_get_version(t->s));
	const char *c = gnutls_cipher_get_name(gnutls_cipher_get(t->s));
	char eng[64];

	fy_tls_engine(t, eng, sizeof(eng));
	snprintf(buf, len, "%s %s, %s, %s", v ? v : "?", c ? c : "?",
		 t->cr->psk ? "PSK" : "x509, mutual", eng);
}

/**
 * fy_tls_engine() - see tls.h.
 */
void fy_tls_engine(struct fy_tls *t, char *buf, size_t len)
{
	char name[48];

	if (t->ktls) {
		fy_tls_ktls_name(t, buf, len);
		return;
	}
	if (!t->own) {
		snprintf(buf, len, "GnuTLS %s, GnuTLS's records",
			 gnutls_check_version(NULL));
		return;
	}
	fy_aead_name(&t->tx.aead, name, sizeof(name));
	snprintf(buf, len, "%s, ferry's records", name);
}

/**
 * fy_tls_names() - see tls.h.
 */
void fy_tls_names(struct fy_tls *t, char *version, size_t vlen,
		  char *cipher, size_t clen, char *kx, size_t klen)
{
	const char *v = gnutls_protocol_get_name(gnutls_protocol_get_version(t->s));
	const char *c = gnutls_cipher_get_name(gnutls_cipher_get(t->s));
	const char *k = gnutls_kx_get_name(gnutls_kx_get(t->s));

	snprintf(version, vlen, "%s", v ? v : "");
	snprintf(cipher, clen, "%s", c ? c : "");
	snprintf(kx, klen, "%s", k ? k : "");
}

/**
 * fy_tls_rx_error() - see tls.h.
 */
const char *fy_tls_rx_error(const struct fy_tls *t)
{
	return t->rx_why[0] ? t->rx_why : NULL;
}

/**
 * fy_tls_last_error() - see tls.h.
 */
const char *fy_tls_last_error(struct fy_tls *t)
{
	if (t->rx_why[0])
		return t->rx_why;
	if (t->tx_why[0])
		return t->tx_why;
	return t->io_err ? strerror(t->io_err < 0 && t->io_err > -4096
					    ? -t->io_err : EIO)
			 : "no error";
}

/**
 * fy_tls_free() - see tls.h.
 */
void fy_tls_free(struct fy_tls *t)
{
	if (!t)
		return;
	if (t->s)
		gnutls_deinit(t->s);
	explicit_bzero(t->stage, sizeof(t->stage));
	explicit_bzero(t->client_secret, sizeof(t->client_secret));
	explicit_bzero(t->server_secret, sizeof(t->server_secret));
	fy_tls_key_free(&t->tx);
	fy_tls_key_free(&t->rx);
	if (t->pbuf)
		explicit_bzero(t->pbuf, FY_TLS_REC_WIRE);
	free(t->pbuf);
	free(t->cbuf);
	free(t->wbuf);
	free(t);
}

/* Is "tls" among the kernel's upper layer protocols? */
static bool ulp_listed(char *list, size_t len)
{
	int fd = open("/proc/sys/net/ipv4/tcp_available_ulp", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	list[0] = 0;
	if (fd < 0)
		return false;
	n = read(fd, list, len - 1);
	close(fd);
	list[n > 0 ? n : 0] = 0;
	list[strcspn(list, "\n")] = 0;
	for (char *p = strstr(list, "tls"); p; p = strstr(p + 1, "tls"))
		if ((p == list || p[-1] == ' ') && (!p[3] || p[3] == ' '))
			return true;
	return false;
}

/**
 * fy_tls_ktls_probe() - see tls.h. The list in /proc first; a kernel
 * that builds TLS as a module lists it only once loaded, so a socket
 * asks for it too (ENOTCONN: the module is there, the socket is merely
 * not connected).
 */
bool fy_tls_ktls_probe(char *why, size_t len)
{
	char list[256];
	int fd, rc, e = 0;

	if (ulp_listed(list, sizeof(list))) {
		snprintf(why, len, "the kernel offers kTLS (tcp_available_ulp: %s)",
			 list);
		return true;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, len, "no socket to probe kTLS with: %s",
			 strerror(errno));
		return false;
	}
	rc = setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls"));
	e = rc ? errno : 0;
	close(fd);
	if (!rc || e == ENOTCONN) {
		snprintf(why, len, "the kernel offers kTLS (the tls module loaded)");
		return true;
	}
	snprintf(why, len,
		 "the kernel offers no kTLS: tcp_available_ulp lists \"%s\" and setting TCP_ULP \"tls\" fails (%s)",
		 list, strerror(e));
	return false;
}
