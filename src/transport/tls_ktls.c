// SPDX-License-Identifier: MIT
/*
 * tls_ktls.c - the kernel's TLS (kTLS: Linux's "tls" upper layer protocol)
 * as the record layer of a TLS 1.3 session GnuTLS negotiated, when the
 * caller asks for tls_engine ktls by name.
 *
 * After the handshake each direction's key, IV and sequence number go to
 * the socket (TCP_ULP "tls", then TLS_TX and TLS_RX, as the kernel's
 * Documentation/networking/tls.rst describes). From then on the caller's
 * plaintext is written with sendmsg() and the kernel seals it from the
 * caller's pages into the TCP stream; recvmsg() gets the plaintext, which
 * the kernel decrypts straight into the caller's buffer when a whole
 * record fits there. That saves the two copies of ferry's own record
 * layer: sealed records into the socket, received ones out of it.
 *
 * A record that is not application data comes to recvmsg() alone, its
 * content type in a control message (TLS_GET_RECORD_TYPE): close_notify
 * ends the stream, NewSessionTicket is ignored, a KeyUpdate takes the
 * peer's next key. The kernel takes new keys only since its TLS 1.3
 * rekey (Linux 6.14; older ones answer a second TLS_TX or TLS_RX with
 * EBUSY). Where it cannot, a KeyUpdate from the peer ends the connection
 * with that reason, none is ever sent, and a connection that sends with
 * AES-GCM ends before its 2^24.5th record under one key (RFC 8446 5.5).
 *
 * This project's machines have no kTLS (their kernel lists only mptcp in
 * tcp_available_ulp), so none of this runs in its tests but the refusals:
 * the engine is opt-in, never picked by AUTO.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>

#include "transport/tls_int.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif
#ifndef TLS_RX_EXPECT_NO_PAD
#define TLS_RX_EXPECT_NO_PAD 4
#endif

/*
 * Records one AES-GCM key may seal (RFC 8446 5.5: 2^24.5, about 380 GiB
 * of full records), for a kernel that cannot take the next key. A
 * ChaCha20-Poly1305 sequence number would wrap first.
 */
#define FY_KTLS_GCM_RECORDS 23726566ull

/* The most bytes of one sendmsg(). */
#define FY_KTLS_WRITE (1u << 30)
#define FY_KTLS_IOV 64

/* Each cipher's key and IV as the kernel takes them. */
union ktls_info {
	struct tls_crypto_info base;
	struct tls12_crypto_info_aes_gcm_128 gcm128;
	struct tls12_crypto_info_aes_gcm_256 gcm256;
	struct tls12_crypto_info_chacha20_poly1305 chacha;
};

/* Room for one control message of one byte (a record's content type). */
union ktls_cmsg {
	struct cmsghdr h;
	uint8_t buf[CMSG_SPACE(1)];
};

/* The kernel's cipher for @alg, 0 if it takes none from ferry. */
static uint16_t ktls_cipher(gnutls_cipher_algorithm_t alg)
{
	switch (alg) {
	case GNUTLS_CIPHER_AES_128_GCM:
		return TLS_CIPHER_AES_GCM_128;
	case GNUTLS_CIPHER_AES_256_GCM:
		return TLS_CIPHER_AES_GCM_256;
	case GNUTLS_CIPHER_CHACHA20_POLY1305:
		return TLS_CIPHER_CHACHA20_POLY1305;
	default:
		return 0;
	}
}

/*
 * @k as the kernel takes it, into @u (*@len bytes): TLS 1.3, the key of
 * this generation, the 12-byte IV split as the kernel's structures split
 * it (AES-GCM: a 4-byte salt and 8 bytes of "iv"; ChaCha20: 12 bytes of
 * "iv", no salt), and the next record's sequence number, big-endian.
 * The caller wipes @u.
 */
static int ktls_info(const struct fy_tls_key *k, union ktls_info *u,
		     socklen_t *len)
{
	uint8_t key[32], seq[8];
	int rc = fy_tls_key_bytes(k, key, sizeof(key));

	if (rc)
		return rc;
	for (int i = 0; i < 8; i++)
		seq[i] = (uint8_t)(k->seq >> (56 - 8 * i));
	memset(u, 0, sizeof(*u));
	u->base.version = TLS_1_3_VERSION;
	u->base.cipher_type = ktls_cipher(k->alg);
	switch (u->base.cipher_type) {
	case TLS_CIPHER_AES_GCM_128:
		memcpy(u->gcm128.salt, k->iv, 4);
		memcpy(u->gcm128.iv, k->iv + 4, 8);
		memcpy(u->gcm128.key, key, sizeof(u->gcm128.key));
		memcpy(u->gcm128.rec_seq, seq, 8);
		*len = sizeof(u->gcm128);
		break;
	case TLS_CIPHER_AES_GCM_256:
		memcpy(u->gcm256.salt, k->iv, 4);
		memcpy(u->gcm256.iv, k->iv + 4, 8);
		memcpy(u->gcm256.key, key, sizeof(u->gcm256.key));
		memcpy(u->gcm256.rec_seq, seq, 8);
		*len = sizeof(u->gcm256);
		break;
	case TLS_CIPHER_CHACHA20_POLY1305:
		memcpy(u->chacha.iv, k->iv, 12);
		memcpy(u->chacha.key, key, sizeof(u->chacha.key));
		memcpy(u->chacha.rec_seq, seq, 8);
		*len = sizeof(u->chacha);
		break;
	default:
		rc = -EOPNOTSUPP;
	}
	explicit_bzero(key, sizeof(key));
	return rc;
}

/* Give the kernel @k for sending (@tx) or receiving: 0 or -errno. */
static int ktls_set(struct fy_tls *t, bool tx, const struct fy_tls_key *k)
{
	union ktls_info u;
	socklen_t len = 0;
	int rc = ktls_info(k, &u, &len);

	if (!rc && setsockopt(t->fd, SOL_TLS, tx ? TLS_TX : TLS_RX, &u, len))
		rc = -errno;
	explicit_bzero(&u, sizeof(u));
	return rc;
}

/*
 * Does the kernel take new keys (TLS 1.3 rekey)? Asked without changing
 * anything: a second TLS_TX that names another cipher is refused by a
 * kernel with rekey for the cipher (EINVAL: the cipher may not change),
 * by one without for being a second (EBUSY), before either reads a key.
 * A rekey kernel counts it in TlsTxRekeyError. Were the answer wrong, the
 * first KeyUpdate would fail the connection saying so, not corrupt it.
 */
static bool ktls_can_rekey(struct fy_tls *t)
{
	struct tls_crypto_info other = {
		.version = TLS_1_3_VERSION,
		.cipher_type = ktls_cipher(t->tx.alg) == TLS_CIPHER_AES_GCM_128
				       ? TLS_CIPHER_AES_GCM_256
				       : TLS_CIPHER_AES_GCM_128,
	};

	return setsockopt(t->fd, SOL_TLS, TLS_TX, &other, sizeof(other)) &&
	       errno == EINVAL;
}

/**
 * fy_tls_ktls_usable() - see tls_int.h. @why is written only on refusal.
 */
bool fy_tls_ktls_usable(gnutls_cipher_algorithm_t alg, char *why, size_t len)
{
	char probe[256];

	if (!ktls_cipher(alg)) {
		const char *name = gnutls_cipher_get_name(alg);

		snprintf(why, len, "the kernel's TLS takes AES-128-GCM, AES-256-GCM and CHACHA20-POLY1305 from ferry, not %s",
			 name ? name : "this cipher");
		return false;
	}
	if (!fy_tls_ktls_probe(probe, sizeof(probe))) {
		snprintf(why, len, "%s", probe);
		return false;
	}
	return true;
}

/**
 * fy_tls_ktls_start() - see tls_int.h.
 *
 * The kernel parses the stream from where GnuTLS stopped reading: pull()
 * reads no further than GnuTLS asks for on such a session, so nothing was
 * read ahead; were anything, it is refused rather than lost.
 */
int fy_tls_ktls_start(struct fy_tls *t, char *why, size_t len)
{
	static const char ulp[] = "tls";
	struct utsname u;
	unsigned major = 0, minor = 0;
	int one = 1, rc;

	if (t->rlen != t->rpos) {
		snprintf(why, len, "%zu bytes of the peer's records were read ahead of the kernel",
			 t->rlen - t->rpos);
		return -EPROTO;
	}
	if (setsockopt(t->fd, IPPROTO_TCP, TCP_ULP, ulp, sizeof(ulp))) {
		rc = -errno;
		snprintf(why, len, "the connection takes no kTLS: setting TCP_ULP \"tls\" failed (%s)",
			 strerror(-rc));
		return rc;
	}
	t->ktls_ulp = true;
	rc = ktls_set(t, true, &t->tx);
	if (rc) {
		snprintf(why, len, "kTLS refused the send key (TLS_TX: %s)",
			 strerror(-rc));
		return rc;
	}
	t->ktls_rekey = ktls_can_rekey(t);
	rc = ktls_set(t, false, &t->rx);
	if (rc) {
		snprintf(why, len, "kTLS refused the receive key (TLS_RX: %s)",
			 strerror(-rc));
		return rc;
	}
	/* ferry's and GnuTLS's records are not padded: the kernel may then
	 * decrypt a record straight into the caller's buffer (it checks,
	 * and decrypts again a record that was padded). Older kernels lack
	 * the option; they decrypt in place, then copy. */
	setsockopt(t->fd, SOL_TLS, TLS_RX_EXPECT_NO_PAD, &one, sizeof(one));
	t->pbuf = malloc(FY_TLS_REC_WIRE);
	if (!t->pbuf) {
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	if (!uname(&u))
		sscanf(u.release, "%u.%u", &major, &minor);
	snprintf(t->ktls_kernel, sizeof(t->ktls_kernel), "Linux %u.%u%s",
		 major, minor, t->ktls_rekey ? "" : ", no rekey");
	t->ktls_sent = t->tx.seq;
	t->rekey_every = FY_TLS_REKEY_RECORDS;
	t->ktls = true;
	return 0;
}

/* A send error, kept (every later send returns it), said in words. */
#define ktls_tx_fail(t, ...) fy_tls_fail(t, true, __VA_ARGS__)

/* Records one key may seal before the next: ferry's rekey interval when
 * the kernel takes new keys, else what RFC 8446 allows the cipher. */
static uint64_t ktls_limit(const struct fy_tls *t)
{
	if (t->ktls_rekey)
		return t->rekey_every > 2 ? t->rekey_every : 3;
	if (t->tx.alg == GNUTLS_CIPHER_CHACHA20_POLY1305)
		return UINT64_MAX / 2;
	return FY_KTLS_GCM_RECORDS;
}

/* Send one record of content type @type holding @p (@len bytes, 0: none,
 * which only closes the record a MSG_MORE left open). */
static int ktls_send_type(struct fy_tls *t, uint8_t type, void *p, size_t len)
{
	union ktls_cmsg cm;
	struct iovec v = { p, len };
	struct msghdr mh = { .msg_iov = len ? &v : NULL,
			     .msg_iovlen = len ? 1 : 0,
			     .msg_control = cm.buf,
			     .msg_controllen = sizeof(cm.buf) };
	struct cmsghdr *c;

	memset(&cm, 0, sizeof(cm));
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_TLS;
	c->cmsg_type = TLS_SET_RECORD_TYPE;
	c->cmsg_len = CMSG_LEN(1);
	*CMSG_DATA(c) = type;
	for (;;) {
		ssize_t w = sendmsg(t->fd, &mh, MSG_NOSIGNAL);
		int rc;

		if (w == (ssize_t)len) {
			atomic_store_explicit(&t->tx_since, fy_tls_now_ns(),
					      memory_order_relaxed);
			t->ktls_open = false;
			return 0;
		}
		if (w >= 0)
			return -EIO; /* part of a 5-byte record: not finishable */
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		rc = fy_tls_wait_more(t, true);
		if (rc)
			return rc;
	}
}

/* Our KeyUpdate, then the next send key (RFC 8446 4.6.3): the kernel
 * closes the open record before the KeyUpdate's. */
static int ktls_key_update(struct fy_tls *t)
{
	uint8_t msg[5];
	int rc;

	fy_tls_rec_key_update_msg(msg, false);
	rc = ktls_send_type(t, FY_TLS_HANDSHAKE, msg, sizeof(msg));
	if (rc)
		return ktls_tx_fail(t, rc, "TLS: sending a KeyUpdate through kTLS failed (%s)",
				    strerror(-rc));
	rc = fy_tls_key_next(&t->tx);
	if (!rc)
		rc = ktls_set(t, true, &t->tx);
	if (rc)
		return ktls_tx_fail(t, rc, "TLS: kTLS refused the send key after our KeyUpdate (TLS_TX: %s)",
				    strerror(-rc));
	t->ktls_sent = 0;
	return 0;
}

/* The kernel's own count of the records sealed under the send key. */
static int ktls_sealed(struct fy_tls *t, uint64_t *seq)
{
	union ktls_info u;
	socklen_t len = 0;
	const uint8_t *rs;
	int rc = ktls_info(&t->tx, &u, &len);

	if (!rc && getsockopt(t->fd, SOL_TLS, TLS_TX, &u, &len))
		rc = -errno;
	if (!rc) {
		rs = u.base.cipher_type == TLS_CIPHER_AES_GCM_128 ? u.gcm128.rec_seq
		     : u.base.cipher_type == TLS_CIPHER_AES_GCM_256 ? u.gcm256.rec_seq
								   : u.chacha.rec_seq;
		*seq = 0;
		for (int i = 0; i < 8; i++)
			*seq = *seq << 8 | rs[i];
	}
	explicit_bzero(&u, sizeof(u));
	return rc;
}

/*
 * Before @len bytes go out: room for their records under this key, or a
 * KeyUpdate first (the limit reached, or the peer asked), or the end of
 * the connection where the kernel cannot take a new key. t->ktls_sent is
 * an upper bound (each write may close a partial record and open
 * another); near the limit the kernel's own count replaces it.
 */
static int ktls_room(struct fy_tls *t, size_t len)
{
	uint64_t need = len / FY_TLS_REC_PLAIN + 2, limit = ktls_limit(t);
	bool asked = atomic_exchange(&t->update_asked, false);
	uint64_t seq;
	int rc;

	if (!asked && t->ktls_sent + need > limit) {
		rc = ktls_sealed(t, &seq);
		if (rc)
			return ktls_tx_fail(t, rc, "TLS: kTLS did not say how many records it sealed (%s)",
					    strerror(-rc));
		t->ktls_sent = seq;
	}
	if (asked || t->ktls_sent + need > limit) {
		if (!t->ktls_rekey)
			return ktls_tx_fail(t, -EOVERFLOW,
					    "TLS: %" PRIu64 " records sent under one key, the most RFC 8446 5.5 allows AES-GCM, and this kernel's TLS cannot take the next key (TLS 1.3 rekey came with Linux 6.14): the connection ends here",
					    t->ktls_sent);
		rc = ktls_key_update(t);
		if (rc)
			return rc;
	}
	t->ktls_sent += need;
	return 0;
}

/* The next sendmsg()'s pieces from @iov[*@i] at *@off: at most @cap
 * bytes; *@last when they are all that is left. */
static int ktls_pieces(const struct iovec *iov, int n, int i, size_t off,
		       size_t cap, struct iovec *v, size_t *bytes, bool *last)
{
	int k = 0;

	*bytes = 0;
	for (; i < n && k < FY_KTLS_IOV && *bytes < cap; i++, off = 0) {
		size_t take = iov[i].iov_len - off;

		if (!take)
			continue;
		if (take > cap - *bytes)
			take = cap - *bytes;
		v[k++] = (struct iovec){ (uint8_t *)iov[i].iov_base + off, take };
		*bytes += take;
		if (off + take < iov[i].iov_len)
			break;
	}
	*last = true;
	for (; i < n && *last; i++, off = 0)
		if (iov[i].iov_len > off)
			*last = false;
	return k;
}

/**
 * fy_tls_ktls_send() - fy_tls_send() through the kernel: the plaintext
 * of @iov in sendmsg() calls, MSG_MORE on all but the last (and on that
 * one too with @more: the kernel keeps the record open, as ferry's own
 * layer keeps its stage).
 */
int fy_tls_ktls_send(struct fy_tls *t, const struct iovec *iov, int n,
		     bool more)
{
	uint64_t limit = ktls_limit(t);
	size_t cap = limit - 2 < FY_KTLS_WRITE / FY_TLS_REC_PLAIN
			     ? (size_t)(limit - 2) * FY_TLS_REC_PLAIN
			     : FY_KTLS_WRITE;
	size_t off = 0;
	int i = 0, rc;

	for (;;) {
		struct iovec v[FY_KTLS_IOV];
		struct msghdr mh = { .msg_iov = v };
		size_t bytes;
		bool last;
		ssize_t w;

		while (i < n && off == iov[i].iov_len) {
			i++;
			off = 0;
		}
		if (i == n)
			break;
		mh.msg_iovlen = (size_t)ktls_pieces(iov, n, i, off, cap, v,
						    &bytes, &last);
		rc = ktls_room(t, bytes);
		if (rc)
			return rc;
		w = sendmsg(t->fd, &mh,
			    MSG_NOSIGNAL | (more || !last ? MSG_MORE : 0));
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return ktls_tx_fail(t, -errno, "TLS: sending through kTLS failed (%s)",
					    strerror(errno));
		if (w < 0) {
			rc = fy_tls_wait_more(t, true);
			if (rc)
				return ktls_tx_fail(t, rc, "TLS: sending through kTLS: %s",
						    strerror(-rc));
			continue;
		}
		atomic_store_explicit(&t->tx_since, fy_tls_now_ns(),
				      memory_order_relaxed);
		t->ktls_open = more || !last || (size_t)w < bytes;
		for (size_t left = (size_t)w; left;) {
			size_t k = iov[i].iov_len - off;

			k = k < left ? k : left;
			off += k;
			left -= k;
			if (off == iov[i].iov_len) {
				i++;
				off = 0;
			}
		}
	}
	/* Nothing more came, yet the record left open must go out. */
	if (!more && t->ktls_open) {
		rc = ktls_send_type(t, FY_TLS_APPDATA, NULL, 0);
		if (rc)
			return ktls_tx_fail(t, rc, "TLS: closing a record through kTLS failed (%s)",
					    strerror(-rc));
	}
	if (!more)
		fy_tls_cork(t, false);
	return 0;
}

/* A receive error: kept (every later call returns it), said in words. */
#define ktls_rx_fail(t, ...) fy_tls_fail(t, false, __VA_ARGS__)

/* One recvmsg() into @dst (@len bytes) and the content type of what it
 * returned: > 0, 0 at the end of the stream, or a negative errno. */
static ssize_t ktls_read(struct fy_tls *t, uint8_t *dst, size_t len,
			 uint8_t *type)
{
	for (;;) {
		union ktls_cmsg cm;
		struct iovec v = { dst, len };
		struct msghdr mh = { .msg_iov = &v, .msg_iovlen = 1,
				     .msg_control = cm.buf,
				     .msg_controllen = sizeof(cm.buf) };
		ssize_t r = recvmsg(t->fd, &mh, 0);
		struct cmsghdr *c;
		int rc;

		if (r > 0) {
			atomic_store_explicit(&t->rx_since, fy_tls_now_ns(),
					      memory_order_relaxed);
			*type = FY_TLS_APPDATA;
			for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
				if (c->cmsg_level == SOL_TLS &&
				    c->cmsg_type == TLS_GET_RECORD_TYPE)
					*type = *CMSG_DATA(c);
			return r;
		}
		if (r == 0)
			return 0;
		switch (errno) {
		case EINTR:
			continue;
		case EAGAIN:
#if EWOULDBLOCK != EAGAIN
		case EWOULDBLOCK:
#endif
			/* Not kept: the caller's idle() may have ended a
			 * wait it can start again. */
			rc = fy_tls_wait_more(t, false);
			if (rc)
				return rc;
			continue;
		case EBADMSG:
			return ktls_rx_fail(t, -EBADMSG, "TLS: a record did not authenticate (the stream was altered or is not from this session; kTLS)");
		case EKEYEXPIRED:
			return ktls_rx_fail(t, -EPROTO, "TLS: kTLS holds the peer's records back for a key ferry did not give it");
		case EMSGSIZE:
		case EINVAL:
		case EPROTO:
			return ktls_rx_fail(t, -EPROTO, "TLS: the peer sent bytes that are no TLS 1.3 record of this session (kTLS: %s)",
					    strerror(errno));
		default:
			return -errno;
		}
	}
}

/* The peer's KeyUpdate: its next key to the kernel, and ours to follow
 * when it asked. */
static ssize_t ktls_peer_update(struct fy_tls *t, bool back)
{
	int rc;

	if (!t->ktls_rekey)
		return ktls_rx_fail(t, -EPROTO, "TLS: the peer updated its keys (KeyUpdate) and this kernel's TLS cannot take new keys (TLS 1.3 rekey came with Linux 6.14)");
	rc = fy_tls_key_next(&t->rx);
	if (!rc)
		rc = ktls_set(t, false, &t->rx);
	if (rc)
		return ktls_rx_fail(t, -EPROTO, "TLS: kTLS refused the peer's next key after its KeyUpdate (TLS_RX: %s)",
				    strerror(-rc));
	if (back)
		atomic_store(&t->update_asked, true);
	return 0;
}

/* What a record that is not application data means (@p, @len bytes of
 * content): 0 to go on, or the error. */
static ssize_t ktls_control(struct fy_tls *t, uint8_t type, const uint8_t *p,
			    size_t len)
{
	enum fy_tls_hs_action act;
	char why[160];
	const char *name;

	switch (type) {
	case FY_TLS_HANDSHAKE:
		if (fy_tls_rec_handshake(p, len, &act, why, sizeof(why)))
			return ktls_rx_fail(t, -EPROTO, "TLS: %s", why);
		if (act == FY_TLS_HS_NONE)
			return 0;
		return ktls_peer_update(t, act == FY_TLS_HS_UPDATE_BACK);
	case FY_TLS_ALERT:
		if (len == 2 && p[1] == GNUTLS_A_CLOSE_NOTIFY) {
			t->rx_eof = true;
			return 0;
		}
		if (len == 2 && p[1] == GNUTLS_A_USER_CANCELED)
			return 0; /* a close_notify follows */
		name = len == 2 ? gnutls_alert_get_name(p[1]) : NULL;
		return ktls_rx_fail(t, -ECONNRESET, "TLS: the peer sent the alert \"%s\"",
				    name ? name : "?");
	default:
		return ktls_rx_fail(t, -EPROTO, "TLS: a record of content type %u after the handshake",
				    type);
	}
}

/**
 * fy_tls_ktls_recv() - fy_tls_recv() through the kernel. A buffer that
 * holds a whole record's plaintext takes the kernel's output directly;
 * a smaller one is served from pbuf, which does (a record that is not
 * application data, never mixed with data in one recvmsg(), must come
 * whole to be understood).
 */
ssize_t fy_tls_ktls_recv(struct fy_tls *t, uint8_t *buf, size_t len)
{
	if (t->rx_err)
		return t->rx_err;
	while (len) {
		bool direct = len >= FY_TLS_REC_PLAIN;
		uint8_t *dst = direct ? buf : t->pbuf;
		uint8_t type = FY_TLS_APPDATA;
		ssize_t r, rc;
		size_t k;

		if (t->ppos < t->plen) {
			k = t->plen - t->ppos < len ? t->plen - t->ppos : len;
			memcpy(buf, t->pbuf + t->ppos, k);
			t->ppos += k;
			return (ssize_t)k;
		}
		if (t->rx_eof)
			return 0;
		r = ktls_read(t, dst, direct ? len : FY_TLS_REC_PLAIN, &type);
		if (r <= 0)
			return r;
		if (type != FY_TLS_APPDATA) {
			rc = ktls_control(t, type, dst, (size_t)r);
			if (rc)
				return rc;
			continue;
		}
		if (direct)
			return r;
		t->ppos = 0;
		t->plen = (size_t)r;
	}
	return 0;
}

/**
 * fy_tls_ktls_name() - see tls_int.h.
 */
void fy_tls_ktls_name(const struct fy_tls *t, char *buf, size_t len)
{
	snprintf(buf, len, "kernel kTLS (%s), ferry's keys", t->ktls_kernel);
}
