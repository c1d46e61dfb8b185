/* SPDX-License-Identifier: MIT */
/*
 * tls_int.h - what tls.c (credentials, handshake, GnuTLS's record layer)
 * and tls_own.c (our own TLS 1.3 record layer after the handshake) share:
 * the session and the socket I/O that keeps the caller's waiting rules.
 */
#ifndef FY_TLS_INT_H
#define FY_TLS_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <gnutls/gnutls.h>

#include "transport/tls.h"
#include "transport/tls_rec.h"

#define FY_TLS_MAX_KEYS 64
/* Records per sendmsg() in a bulk send, and the buffer they need (a
 * record's header, inner type, tag and padding fit in 256 bytes). */
#define FY_TLS_BATCH 4
#define FY_TLS_WBUF (FY_TLS_BATCH * (FY_TLS_RECORD + 256))
#define FY_TLS_PATH 4096

/* Our own record layer (TLS 1.3): records sealed per write() and the
 * ciphertext one read() may take. */
#define FY_TLS_OWN_BATCH 16
#define FY_TLS_OWN_WBUF (FY_TLS_OWN_BATCH * FY_TLS_REC_WIRE)
#define FY_TLS_OWN_CBUF (16 * FY_TLS_REC_WIRE)
/*
 * Records sent under one key before a KeyUpdate. RFC 8446 5.5 allows
 * AES-GCM 2^24.5 full-size records per key (and AES-CCM 2^23.5); 2^23,
 * every 128 GiB, stays below both for every cipher.
 */
#define FY_TLS_REKEY_RECORDS (1ull << 23)

struct psk_key {
	char identity[128];
	char hex[257]; /* up to 128 key bytes, as hex */
};

struct fy_tls_creds {
	bool server, psk;
	enum fy_aead_engine engine; /* what seals ferry's TLS 1.3 records */
	gnutls_certificate_credentials_t x509;
	gnutls_psk_client_credentials_t psk_client;
	gnutls_psk_server_credentials_t psk_server;
	gnutls_priority_t prio;
	char ca_file[FY_TLS_PATH];
	char crl_file[FY_TLS_PATH];
	char psk_file[FY_TLS_PATH];
	char peer_names[1024];
	struct psk_key *keys;
	size_t nkeys;
};

struct fy_tls {
	gnutls_session_t s;
	int fd;
	const struct fy_tls_creds *cr;
	fy_tls_idle_fn idle;
	void *opaque;
	/* When bytes last moved each way. Each is written and read by its
	 * own direction's thread only (a keep-alive sends while the owner
	 * reads); atomic, so that the compiler cannot load both to pick
	 * one (GCC turns fy_tls_wait_more()'s choice into two loads and a
	 * cmov, which ThreadSanitizer reports as a race with the sender). */
	_Atomic uint64_t tx_since, rx_since;
	uint64_t deadline_ns; /* during the handshake, else 0 */
	int io_err;	      /* what ended the last push or pull, or 0 */
	uint8_t head[8];      /* the peer's first bytes, to name a non-TLS peer */
	size_t nhead;
	char why[320];	      /* the verify callback's reason */
	/* Ciphertext of whole records waiting for one sendmsg() (see
	 * push()); t->batch while fy_tls_send() runs. */
	bool batch;
	bool corked;	      /* TCP_CORK is on (a send is under way) */
	size_t wlen;
	uint8_t *wbuf;
	/* Ciphertext read ahead: GnuTLS asks for a record's header, then its
	 * body; one recv() takes several records instead. */
	size_t rpos, rlen;
	uint8_t rbuf[4 * FY_TLS_RECORD];
	size_t staged;
	uint8_t stage[FY_TLS_RECORD];
	/* TLS 1.3 application data through our own record layer (see
	 * own_start()): the traffic secrets GnuTLS logged, the keys of
	 * each direction, the ciphertext read ahead (cbuf) and the
	 * plaintext of a record the caller has not taken whole (pbuf). */
	bool own;
	uint8_t have_secrets; /* 1: client's, 2: server's */
	unsigned secret_len;
	uint8_t client_secret[FY_TLS_SECRET_MAX];
	uint8_t server_secret[FY_TLS_SECRET_MAX];
	gnutls_keylog_func keylog_next;
	struct fy_tls_key tx, rx;
	uint64_t rekey_every;
	atomic_bool update_asked; /* the peer asked for our KeyUpdate */
	uint8_t *cbuf, *pbuf;
	size_t cpos, clen, ppos, plen;
	bool rx_eof;
	int rx_err;
	char rx_why[200];
	/* A send that failed left records unsent or half written: every
	 * later send, on either record layer, returns this, so that nothing
	 * goes out with sequence numbers the peer never saw the records
	 * before of. tx_why: its reason, where a record layer gave one. */
	int tx_err;
	char tx_why[240];
	/* The kernel's record layer (kTLS, tls_ktls.c) on the same keys,
	 * in place of ours (tls_engine ktls): whether it takes new keys
	 * (TLS 1.3 rekey), an upper bound of the records sealed under the
	 * send key, whether a MSG_MORE left a record open, and the kernel
	 * ("Linux 6.14"). pbuf and the keys' sequence numbers serve it as
	 * they serve ours. */
	bool ktls, ktls_rekey, ktls_open;
	bool ktls_ulp; /* the socket has the kernel's TLS (even if unkeyed) */
	uint64_t ktls_sent;
	char ktls_kernel[48];
};

uint64_t fy_tls_now_ns(void);
/* Nothing moved within the socket's timeout: 0 to wait on, or the code. */
int fy_tls_wait_more(struct fy_tls *t, bool sending);
/* Send the records gathered in the write buffer: 0, or the code. */
int fy_tls_wflush(struct fy_tls *t);
/* TCP_CORK on or off (only when it changes). */
void fy_tls_cork(struct fy_tls *t, bool on);

/* GnuTLS's keylog callback: keeps the application traffic secrets. */
int fy_tls_keylog(gnutls_session_t s, const char *label,
		  const gnutls_datum_t *secret);
/* Keep a failure of one direction (@tx: sending), which every later call
 * that way returns, with its reason in words (fy_tls_last_error()):
 * @code, for the caller to return. */
int fy_tls_fail(struct fy_tls *t, bool tx, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* After the handshake: move a TLS 1.3 session to our record layer
 * (t->own), or leave it on GnuTLS's; an error (in @err) only when the
 * caller asked for an engine only our record layer runs. */
int fy_tls_own_start(struct fy_tls *t, char *err, size_t errlen);
/* fy_tls_send() and fy_tls_recv() on our record layer. */
int fy_tls_own_send(struct fy_tls *t, const struct iovec *iov, int n,
		    bool more);
ssize_t fy_tls_own_recv(struct fy_tls *t, uint8_t *buf, size_t len,
			bool cold);

/* Can the kernel's TLS (kTLS) run a TLS 1.3 session of @alg here? true,
 * or false with the reason in @why (a cipher it does not take from
 * ferry, or fy_tls_ktls_probe()'s words). */
bool fy_tls_ktls_usable(gnutls_cipher_algorithm_t alg, char *why, size_t len);
/* Hand the session's keys (t->tx, t->rx) to the kernel (t->ktls): 0, or
 * a negative errno with the reason in @why; the socket may then be
 * half-configured, and the session is over. */
int fy_tls_ktls_start(struct fy_tls *t, char *why, size_t len);
/* fy_tls_send() and fy_tls_recv() through the kernel's record layer. */
int fy_tls_ktls_send(struct fy_tls *t, const struct iovec *iov, int n,
		     bool more);
ssize_t fy_tls_ktls_recv(struct fy_tls *t, uint8_t *buf, size_t len);
/* "kernel kTLS (Linux 6.14), ferry's keys": for fy_tls_engine(). */
void fy_tls_ktls_name(const struct fy_tls *t, char *buf, size_t len);

#endif /* FY_TLS_INT_H */
