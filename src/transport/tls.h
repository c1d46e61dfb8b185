/* SPDX-License-Identifier: MIT */
/*
 * tls.h - TLS under a migration's byte stream (GnuTLS): credentials read
 * from files, a client or server session on a connected socket with
 * mutual authentication, and record I/O that keeps the caller's rules for
 * waiting (a blocked call comes back to the caller's idle() at every
 * socket timeout, which decides whether to keep waiting).
 *
 * Knows nothing of the ferry protocol: the handshake and the peer's
 * checks complete inside fy_tls_start(), before the caller reads or writes
 * a byte of its own.
 */
#ifndef FY_TLS_H
#define FY_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* What the credentials are made of; every string is a path or a name,
 * NULL when not given. x509 (ca, cert, key; crl and peer_names optional)
 * and PSK (psk_file; psk_identity optional) exclude each other. */
struct fy_tls_config {
	const char *ca_file;
	const char *cert_file;
	const char *key_file;
	const char *crl_file;
	const char *peer_names;	  /* comma-separated names to accept */
	const char *psk_file;	  /* "identity:hexkey" lines */
	const char *psk_identity; /* client: which line (NULL: the first) */
	const char *priority;	  /* GnuTLS priority string, NULL: default */
	int engine;		  /* what seals ferry's TLS 1.3 records: 0
				     auto, 1 GnuTLS, 2 ipsec-mb, 3 the
				     kernel (tls_aead.h) */
};

struct fy_tls_creds;
struct fy_tls;

/* The largest plaintext of one TLS record, and what a send gathers. */
#define FY_TLS_RECORD 16384

/* Is any TLS configured in @c? */
bool fy_tls_config_on(const struct fy_tls_config *c);

/*
 * fy_tls_config_check() - whether @c is complete and coherent (files are
 * not opened). 0, or -EINVAL with the reason in @err.
 */
int fy_tls_config_check(const struct fy_tls_config *c, char *err,
			size_t errlen);

/*
 * fy_tls_creds_load() - read the files of @c for one role (@server: the
 * side that accepts). 0 with *@out set, or a negative errno with the
 * file's path and the reason in @err.
 */
int fy_tls_creds_load(const struct fy_tls_config *c, bool server,
		      struct fy_tls_creds **out, char *err, size_t errlen);
void fy_tls_creds_free(struct fy_tls_creds *cr);

/*
 * Called when the socket's timeout passed with nothing moved in one
 * direction (@sending), @since_ns the last time bytes moved that way: 0
 * to keep waiting, or the negative code that ends the call.
 */
typedef int (*fy_tls_idle_fn)(void *opaque, bool sending, uint64_t since_ns);

/*
 * fy_tls_start() - a TLS session on the connected socket @fd (which must
 * have send and receive timeouts): the handshake and, for x509, the
 * peer's certificate and name are checked within @deadline_ms. @idle may
 * end it sooner (a cancel). 0 with *@out set, or a negative code with the
 * cause in @err ("TLS: the peer's certificate is not signed by the CA in
 * ca-cert.pem"; -EPROTONOSUPPORT: the peer sent a ferry stream without
 * TLS). @fd stays the caller's.
 */
int fy_tls_start(const struct fy_tls_creds *cr, int fd, int deadline_ms,
		 fy_tls_idle_fn idle, void *opaque, struct fy_tls **out,
		 char *err, size_t errlen);

/*
 * fy_tls_send() - send @n iovecs whole, gathered into full records
 * (FY_TLS_RECORD). TLS 1.3 (ferry's record layer): every piece is
 * encrypted straight from its memory; TLS 1.2 (GnuTLS's): small pieces
 * are copied into one record, long runs encrypted from their memory. With
 * @more the last partial record is copied aside and held back for the
 * next call. 0 or a negative errno; after a failure the stream is broken
 * (records may be lost or half written), and every later call returns
 * the first failure's code.
 */
int fy_tls_send(struct fy_tls *t, const struct iovec *iov, int n, bool more);

/*
 * fy_tls_recv() - up to @len bytes: > 0, 0 when the peer closed, or a
 * negative errno (-EBADMSG: a record did not authenticate; -EPROTO: the
 * peer sent what is no TLS record, or cut one; fy_tls_last_error() says
 * which). A failed receive stays failed. Bytes of @buf after those
 * returned may have been written (a record is decrypted in place there
 * when it fits), and hold nothing.
 */
ssize_t fy_tls_recv(struct fy_tls *t, void *buf, size_t len);

/*
 * fy_tls_recv_cold() - fy_tls_recv() into memory the caller will not read
 * again soon (guest memory a pass fills): ferry's records are decrypted
 * and checked in a buffer that stays in the cache, and their plaintext
 * written to @buf by non-temporal stores, which need not read each line
 * first (1.3-1.7 x less CPU for the cipher's side of it here). The same
 * results as fy_tls_recv() otherwise; with the kernel's or GnuTLS's
 * records, fy_tls_recv() itself.
 */
ssize_t fy_tls_recv_cold(struct fy_tls *t, void *buf, size_t len);

/* Bytes held inside the session, not yet taken by recv: decrypted, or
 * read ahead from the socket (a record there may be incomplete: its rest
 * is on the way, and a recv waits for it). */
size_t fy_tls_pending(struct fy_tls *t);

/* "TLS1.3 AES-128-GCM, x509" or similar, for logs. */
void fy_tls_describe(struct fy_tls *t, char *buf, size_t len);

/* The negotiated protocol ("TLS1.3"), cipher ("AES-128-GCM") and key
 * exchange ("ECDHE-RSA"), as GnuTLS names them, each cut to its buffer. */
void fy_tls_names(struct fy_tls *t, char *version, size_t vlen,
		  char *cipher, size_t clen, char *kx, size_t klen);

/* Who seals and opens the records: "ipsec-mb 1.3.0 (AVX512, VAES),
 * ferry's records", "kernel kTLS (Linux 6.14), ferry's keys" (ktls),
 * "GnuTLS 3.7.9, GnuTLS's records" (TLS 1.2). */
void fy_tls_engine(struct fy_tls *t, char *buf, size_t len);

/* The session's last I/O error, in words (for logs). */
const char *fy_tls_last_error(struct fy_tls *t);

/* Why receiving failed, when the session knows ("TLS: the peer sent the
 * alert ..."), else NULL (the connection ended, or nothing failed). */
const char *fy_tls_rx_error(const struct fy_tls *t);

/* Free the session (no close_notify: the stream's own records end it);
 * the socket stays open. NULL is harmless. */
void fy_tls_free(struct fy_tls *t);

/*
 * fy_tls_own_records() - whether application data goes through ferry's
 * own TLS 1.3 record layer (on GnuTLS's keys) rather than GnuTLS's: true
 * for TLS 1.3 sessions, false for TLS 1.2 ones and for those the kernel's
 * TLS runs (tls_engine ktls; fy_tls_engine() names it).
 */
bool fy_tls_own_records(const struct fy_tls *t);

/* For tests: send a KeyUpdate after every @records records (0: the
 * default, 2^23), and the KeyUpdates sent and received so far. */
void fy_tls_set_rekey(struct fy_tls *t, uint64_t records);
void fy_tls_key_updates(const struct fy_tls *t, uint64_t *sent,
			uint64_t *received);

/*
 * fy_tls_ktls_probe() - whether the kernel offers TLS offload (the "tls"
 * upper layer protocol), which tls_engine ktls needs; @why says what was
 * found.
 */
bool fy_tls_ktls_probe(char *why, size_t len);

#endif /* FY_TLS_H */
