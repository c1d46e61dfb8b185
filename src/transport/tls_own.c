// SPDX-License-Identifier: MIT
/*
 * tls_own.c - ferry's own record layer for TLS 1.3 application data, on
 * the keys of the session GnuTLS negotiated (tls.c): records sealed from
 * the caller's memory into large writes and opened straight into the
 * caller's buffer (tls_rec.c does the cryptography), KeyUpdate both
 * ways, alerts and post-handshake messages.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include "transport/tls_int.h"

/**
 * fy_tls_keylog() - keep the application traffic secrets.
 *
 * GnuTLS logs each traffic secret as the handshake derives it (as for
 * SSLKEYLOGFILE, which the previous function still serves): the secrets
 * of application data ("*_TRAFFIC_SECRET_0") are what our record layer
 * needs to follow the peer's KeyUpdates and send its own.
 */
int fy_tls_keylog(gnutls_session_t s, const char *label,
		  const gnutls_datum_t *secret)
{
	struct fy_tls *t = gnutls_session_get_ptr(s);
	bool client = !strcmp(label, "CLIENT_TRAFFIC_SECRET_0");

	if ((client || !strcmp(label, "SERVER_TRAFFIC_SECRET_0")) &&
	    secret->size <= FY_TLS_SECRET_MAX) {
		memcpy(client ? t->client_secret : t->server_secret,
		       secret->data, secret->size);
		t->secret_len = secret->size;
		t->have_secrets |= client ? 1 : 2;
	}
	return t->keylog_next ? t->keylog_next(s, label, secret) : 0;
}

/* One direction's keys from GnuTLS's current state, checked against
 * the ones our key schedule derives from the logged secret. */
static int own_key(struct fy_tls *t, bool read, struct fy_tls_key *k)
{
	bool mine_client = !t->cr->server;
	const uint8_t *secret = mine_client == !read ? t->client_secret
						     : t->server_secret;
	gnutls_datum_t key, iv;
	uint8_t seq[8];
	uint64_t n = 0;
	int rc = gnutls_record_get_state(t->s, read, NULL, &iv, &key, seq);

	if (rc)
		return -EINVAL;
	for (int i = 0; i < 8; i++)
		n = n << 8 | seq[i];
	rc = fy_tls_key_init(k, t->cr->engine, gnutls_cipher_get(t->s),
			     (gnutls_mac_algorithm_t)gnutls_prf_hash_get(t->s),
			     secret, t->secret_len, n);
	if (!rc && !fy_tls_key_same(k, &key, &iv))
		rc = -EINVAL;
	return rc;
}

/**
 * fy_tls_own_start() - move a TLS 1.3 session to our record layer.
 *
 * After a TLS 1.3 handshake application data leaves GnuTLS's record
 * layer for ours (the wire stays TLS 1.3): sealed straight from the
 * caller's memory into large writes, opened straight into the caller's
 * buffer. GnuTLS keeps the session for names and nothing else. Anything
 * unexpected (TLS 1.2, a cipher without a 12-byte IV, keys that differ
 * from what GnuTLS holds, data GnuTLS already decrypted) keeps GnuTLS's
 * record layer, which is slower but always right; unless the caller
 * asked for ipsec-mb by name, which only our record layer runs, or for
 * the kernel's record layer (ktls), which takes our keys: then the
 * session fails with the reason in @err.
 */
int fy_tls_own_start(struct fy_tls *t, char *err, size_t errlen)
{
	size_t ahead = t->rlen - t->rpos;
	gnutls_cipher_algorithm_t alg = gnutls_cipher_get(t->s);
	bool ktls = t->cr->engine == FY_AEAD_KTLS;
	char why[320] = "";
	int rc = 0;

	if (gnutls_protocol_get_version(t->s) != GNUTLS_TLS1_3)
		snprintf(why, sizeof(why), "the session negotiated %s, not TLS1.3",
			 gnutls_protocol_get_name(gnutls_protocol_get_version(t->s)));
	else if (t->have_secrets != 3 || gnutls_record_check_pending(t->s) ||
		 ahead > FY_TLS_OWN_CBUF)
		snprintf(why, sizeof(why), "the session's records could not be taken from GnuTLS");
	else if (ktls ? !fy_tls_ktls_usable(alg, why, sizeof(why))
		      : !fy_aead_usable(t->cr->engine, alg, why, sizeof(why)))
		;
	else if ((rc = own_key(t, false, &t->tx)) || (rc = own_key(t, true, &t->rx)))
		snprintf(why, sizeof(why), "the session's keys could not be derived (%s)",
			 strerror(-rc));
	if (why[0])
		goto fail;
	if (ktls) {
		if (fy_tls_ktls_start(t, why, sizeof(why)))
			goto fail;
		return 0;
	}
	t->cbuf = malloc(FY_TLS_OWN_CBUF);
	t->pbuf = malloc(FY_TLS_REC_WIRE);
	free(t->wbuf);
	t->wbuf = malloc(FY_TLS_OWN_WBUF);
	if (!t->cbuf || !t->pbuf || !t->wbuf) {
		snprintf(why, sizeof(why), "out of memory");
		goto fail;
	}
	/* Ciphertext that pull() read ahead of the verdict is ours now. */
	memcpy(t->cbuf, t->rbuf + t->rpos, ahead);
	t->clen = ahead;
	t->rpos = t->rlen = 0;
	t->rekey_every = FY_TLS_REKEY_RECORDS;
	t->own = true;
	return 0;
fail:
	fy_tls_key_free(&t->tx);
	fy_tls_key_free(&t->rx);
	free(t->cbuf);
	free(t->pbuf);
	t->cbuf = t->pbuf = NULL;
	if (!t->wbuf)
		t->wbuf = malloc(FY_TLS_WBUF);
	if (t->cr->engine != FY_AEAD_IPSEC_MB && !ktls)
		return 0;
	snprintf(err, errlen, "TLS: tls_engine %s cannot run this session: %s",
		 fy_aead_engine_name(t->cr->engine), why);
	return -EOPNOTSUPP;
}

/* Seal one record of @type into the write buffer, sending the buffer
 * first when it is full, and a KeyUpdate first when this key has sealed
 * its share of records or the peer asked for one. */
static int own_seal(struct fy_tls *t, uint8_t type, const struct iovec *iov,
		    int n, size_t len)
{
	ssize_t w;
	int rc;

	if (t->wlen + 2 * FY_TLS_REC_WIRE > FY_TLS_OWN_WBUF) {
		rc = fy_tls_wflush(t);
		if (rc)
			return rc;
	}
	if (t->tx.seq >= t->rekey_every ||
	    atomic_exchange(&t->update_asked, false)) {
		uint8_t msg[5];
		struct iovec v = { msg, sizeof(msg) };

		fy_tls_rec_key_update_msg(msg, false);
		w = fy_tls_rec_seal(&t->tx, FY_TLS_HANDSHAKE, &v, 1,
				    sizeof(msg), t->wbuf + t->wlen);
		if (w < 0)
			return (int)w;
		t->wlen += (size_t)w;
		rc = fy_tls_key_next(&t->tx);
		if (rc)
			return rc;
	}
	w = fy_tls_rec_seal(&t->tx, type, iov, n, len, t->wbuf + t->wlen);
	if (w < 0)
		return (int)w;
	t->wlen += (size_t)w;
	return 0;
}

/* The pieces of a record being gathered. */
struct gather {
	struct iovec v[64];
	int n;
	size_t len;
};

/* Seal what @g holds as one record. */
static int gather_seal(struct fy_tls *t, struct gather *g)
{
	int rc = own_seal(t, FY_TLS_APPDATA, g->v, g->n, g->len);

	g->n = 0;
	g->len = 0;
	t->staged = 0; /* the stage, if it was the first piece, is sealed */
	return rc;
}

/**
 * fy_tls_own_send() - fy_tls_send() on our record layer.
 *
 * Full records are gathered from @iov and encrypted straight from it
 * into the write buffer, which leaves in one write per FY_TLS_OWN_BATCH
 * records and at the end of the call. With
 * @more a partial last record is copied to the stage, to be completed by
 * the next call.
 */
int fy_tls_own_send(struct fy_tls *t, const struct iovec *iov, int n,
		    bool more)
{
	struct gather g = { .n = 0 };
	int rc = 0;

	if (t->staged) {
		g.v[g.n++] = (struct iovec){ t->stage, t->staged };
		g.len = t->staged;
	}
	for (int i = 0; i < n && !rc; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t len = iov[i].iov_len;

		while (len && !rc) {
			size_t k = FY_TLS_REC_PLAIN - g.len;

			if (k > len)
				k = len;
			g.v[g.n++] = (struct iovec){ (void *)p, k };
			g.len += k;
			p += k;
			len -= k;
			if (g.len == FY_TLS_REC_PLAIN ||
			    g.n == (int)(sizeof(g.v) / sizeof(g.v[0])))
				rc = gather_seal(t, &g);
		}
	}
	if (!rc && g.len && !more) {
		rc = gather_seal(t, &g);
	} else if (!rc && g.len) {
		/* The stage, when it is the first piece, is in place. */
		int first = g.v[0].iov_base == t->stage ? 1 : 0;
		size_t at = first ? g.v[0].iov_len : 0;

		for (int i = first; i < g.n; i++) {
			memcpy(t->stage + at, g.v[i].iov_base, g.v[i].iov_len);
			at += g.v[i].iov_len;
		}
		t->staged = at;
	}
	if (!rc && t->wlen)
		rc = fy_tls_wflush(t);
	if (rc) {
		t->wlen = 0; /* the stream is broken: nothing more goes out */
		t->tx_err = rc;
		return rc;
	}
	if (!more)
		fy_tls_cork(t, false);
	return rc;
}

/**
 * fy_tls_fail() - see tls_int.h.
 */
int fy_tls_fail(struct fy_tls *t, bool tx, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (tx)
		vsnprintf(t->tx_why, sizeof(t->tx_why), fmt, ap);
	else
		vsnprintf(t->rx_why, sizeof(t->rx_why), fmt, ap);
	va_end(ap);
	if (tx)
		t->tx_err = code;
	else
		t->rx_err = code;
	return code;
}

/* A receive error: kept, said in words. */
#define own_fail(t, ...) fy_tls_fail(t, false, __VA_ARGS__)

/* Read more ciphertext (making room for a whole record first): > 0, 0
 * at the end of the stream, or a negative errno. */
static ssize_t own_fill(struct fy_tls *t)
{
	if (t->cpos == t->clen) {
		t->cpos = t->clen = 0;
	} else if (FY_TLS_OWN_CBUF - t->cpos < FY_TLS_REC_WIRE) {
		memmove(t->cbuf, t->cbuf + t->cpos, t->clen - t->cpos);
		t->clen -= t->cpos;
		t->cpos = 0;
	}
	for (;;) {
		ssize_t r = recv(t->fd, t->cbuf + t->clen,
				 FY_TLS_OWN_CBUF - t->clen, 0);
		int rc;

		if (r > 0) {
			atomic_store_explicit(&t->rx_since, fy_tls_now_ns(),
					      memory_order_relaxed);
			t->clen += (size_t)r;
			return r;
		}
		if (r == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		rc = fy_tls_wait_more(t, false);
		if (rc)
			return rc;
	}
}

/* What a record that is not application data means: 0 to go on, or the
 * error. @p holds its content. */
static ssize_t own_control(struct fy_tls *t, const struct fy_tls_opened *o,
			   const uint8_t *p)
{
	enum fy_tls_hs_action act;
	char why[160];
	const char *name;

	switch (o->type) {
	case FY_TLS_HANDSHAKE:
		if (fy_tls_rec_handshake(p, o->len, &act, why, sizeof(why)))
			return own_fail(t, -EPROTO, "TLS: %s", why);
		if (act == FY_TLS_HS_NONE)
			return 0;
		if (act == FY_TLS_HS_UPDATE_BACK)
			atomic_store(&t->update_asked, true);
		if (fy_tls_key_next(&t->rx))
			return own_fail(t, -EIO, "TLS: cannot derive the peer's next keys");
		return 0;
	case FY_TLS_ALERT:
		if (o->len == 2 && p[1] == GNUTLS_A_CLOSE_NOTIFY) {
			t->rx_eof = true;
			return 0;
		}
		if (o->len == 2 && p[1] == GNUTLS_A_USER_CANCELED)
			return 0; /* a close_notify follows */
		name = o->len == 2 ? gnutls_alert_get_name(p[1]) : NULL;
		return own_fail(t, -ECONNRESET, "TLS: the peer sent the alert \"%s\"",
				name ? name : "?");
	default:
		return own_fail(t, -EPROTO, "TLS: a record of content type %u after the handshake",
				o->type);
	}
}

/*
 * Copy @n bytes to @dst, memory the caller will not read again soon,
 * with non-temporal stores: each line is written without first being
 * read into the cache, as an ordinary store of a line not cached does.
 * The ends, to 16-byte alignment, by ordinary stores. Elsewhere than
 * x86-64, a plain copy.
 */
static void copy_cold(uint8_t *dst, const uint8_t *src, size_t n)
{
#if defined(__x86_64__)
	size_t head = (16 - ((uintptr_t)dst & 15)) & 15;

	if (head > n)
		head = n;
	memcpy(dst, src, head);
	dst += head;
	src += head;
	n -= head;
	for (; n >= 16; n -= 16, dst += 16, src += 16)
		_mm_stream_si128((__m128i *)dst,
				 _mm_loadu_si128((const __m128i *)src));
#endif
	memcpy(dst, src, n);
}

/* Non-temporal stores are weakly ordered: fenced before the caller, or
 * another thread after it, reads what they wrote. */
static void cold_fence(void)
{
#if defined(__x86_64__)
	_mm_sfence();
#endif
}

/**
 * fy_tls_own_recv() - fy_tls_recv() on our record layer.
 *
 * A record whose plaintext fits in what is left of @buf is decrypted
 * straight into it; another goes to pbuf and is handed out from there.
 * Once some data is there, the call takes only the records already read,
 * and none that would go through pbuf: it never waits with data in hand,
 * nor copies what the next call could take straight.
 *
 * @cold (fy_tls_recv_cold()): @buf is memory not read again soon (guest
 * memory a pass fills). A record is then decrypted and checked in pbuf,
 * which stays in the cache, and its plaintext copied to @buf by
 * non-temporal stores: decrypting straight into memory that is not
 * cached read every line before writing it, and took 1.3-1.7 x the CPU
 * (docs/benchmarks.md, bench 13, session 22). No plaintext of a record
 * that does not authenticate reaches @buf then.
 */
ssize_t fy_tls_own_recv(struct fy_tls *t, uint8_t *buf, size_t len, bool cold)
{
	size_t done = 0;
	bool fence = false;

	if (t->rx_err)
		return t->rx_err;
	while (done < len) {
		struct fy_tls_opened o;
		ssize_t w, r;
		size_t room;
		uint8_t *dst;
		int rc;

		if (t->ppos < t->plen) {
			size_t k = t->plen - t->ppos;

			if (k > len - done)
				k = len - done;
			memcpy(buf + done, t->pbuf + t->ppos, k);
			t->ppos += k;
			done += k;
			continue;
		}
		if (t->rx_eof)
			break;
		w = fy_tls_rec_size(&t->rx, t->cbuf + t->cpos, t->clen - t->cpos);
		if (w < 0)
			return own_fail(t, -EPROTO, "TLS: the peer sent bytes that are no TLS 1.3 record (type %u)",
					t->cbuf[t->cpos]);
		if (!w || t->clen - t->cpos < (size_t)w) {
			if (done)
				break;
			r = own_fill(t);
			/* Not kept: the caller's idle() may have ended a
			 * wait it can start again. */
			if (r < 0)
				return r;
			if (!r && t->cpos == t->clen)
				return 0; /* the stream ended between records */
			if (!r)
				return own_fail(t, -ECONNRESET, "TLS: the connection ended inside a record");
			continue;
		}
		room = fy_tls_rec_room(&t->rx, (size_t)w);
		if (done && len - done < room)
			break;
		dst = len - done >= room && !cold ? buf + done : t->pbuf;
		if (room > FY_TLS_REC_PLAIN + 1)
			return own_fail(t, -EPROTO, "TLS: a record holds more than 2^14 + 1 bytes of plaintext (record_overflow)");
		rc = fy_tls_rec_open(&t->rx, t->cbuf + t->cpos, (size_t)w, dst, &o);
		if (rc == -EBADMSG)
			return own_fail(t, rc, "TLS: a record did not authenticate (the stream was altered or is not from this session)");
		if (rc == -EOVERFLOW)
			return own_fail(t, rc, "TLS: the record sequence number ran out");
		if (rc)
			return own_fail(t, rc, "TLS: a record holds no content type");
		t->cpos += (size_t)w;
		if (o.type != FY_TLS_APPDATA) {
			r = own_control(t, &o, dst);
			if (r)
				return r;
		} else if (cold && len - done >= o.len) {
			copy_cold(buf + done, t->pbuf, o.len);
			fence = true;
			done += o.len;
		} else if (dst == t->pbuf) {
			t->ppos = 0;
			t->plen = o.len;
		} else {
			done += o.len;
		}
	}
	if (fence)
		cold_fence();
	return (ssize_t)done;
}

/**
 * fy_tls_own_records() - see tls.h.
 */
bool fy_tls_own_records(const struct fy_tls *t)
{
	return t->own;
}

/**
 * fy_tls_set_rekey() - see tls.h.
 */
void fy_tls_set_rekey(struct fy_tls *t, uint64_t records)
{
	t->rekey_every = records ? records : FY_TLS_REKEY_RECORDS;
}

/**
 * fy_tls_key_updates() - see tls.h.
 */
void fy_tls_key_updates(const struct fy_tls *t, uint64_t *sent,
			uint64_t *received)
{
	*sent = t->tx.generation;
	*received = t->rx.generation;
}
