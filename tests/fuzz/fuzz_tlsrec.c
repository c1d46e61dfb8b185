// SPDX-License-Identifier: MIT
/*
 * fuzz_tlsrec.c - libFuzzer harness for ferry's TLS 1.3 record decoder
 * (src/transport/tls_rec.c): the bytes a peer sends after the handshake.
 *
 * Byte 0 picks the cipher (AES-128-GCM, AES-256-GCM with SHA-384,
 * CHACHA20-POLY1305), byte 1 the engines (bit 1: the sender's is GnuTLS,
 * bit 2: the receiver's; otherwise the default, ipsec-mb where ferry was
 * built with it, so records cross between the two) and the mode (bit 0):
 *  - raw (even): the rest is a stream of records read under a fixed key,
 *    as a receiver would: header, size, decryption, inner type, and the
 *    post-handshake messages of a handshake record. Nearly every input
 *    fails authentication, which is the point: the header and length
 *    checks before it, and no read past the bytes given.
 *  - sealed (odd): the rest is a list of (inner type, length, flip)
 *    entries whose plaintext is taken from the input; each is sealed with
 *    one key and opened with the same key on the other side, so the
 *    decoder's paths after authentication (inner type, padding,
 *    KeyUpdate, tickets, alerts) are reached, with a bit flipped in the
 *    record when the entry says so.
 *
 * Properties checked beyond "no crash, no sanitizer report":
 *  - the decoder fails only with -EPROTO or -EBADMSG; a bad post-
 *    handshake message always says why;
 *  - a record sealed and opened untouched gives back its type and bytes;
 *  - a record with any one bit flipped is refused;
 *  - both sides' keys stay in step over KeyUpdates.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "transport/tls_rec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t secret[48] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };

/* @pick's cipher; the engine: @gnutls, or the default (ipsec-mb where
 * built in), so that records cross from one engine to the other. */
static int keys(uint8_t pick, bool gnutls, struct fy_tls_key *k)
{
	enum fy_aead_engine e = gnutls ? FY_AEAD_GNUTLS : FY_AEAD_AUTO;

	switch (pick % 3) {
	case 0:
		return fy_tls_key_init(k, e, GNUTLS_CIPHER_AES_128_GCM,
				       GNUTLS_MAC_SHA256, secret, 32, 0);
	case 1:
		return fy_tls_key_init(k, e, GNUTLS_CIPHER_AES_256_GCM,
				       GNUTLS_MAC_SHA384, secret, 48, 0);
	default:
		return fy_tls_key_init(k, e, GNUTLS_CIPHER_CHACHA20_POLY1305,
				       GNUTLS_MAC_SHA256, secret, 32, 0);
	}
}

/* What a receiver does with an opened record's content. */
static void content(struct fy_tls_key *k, const struct fy_tls_opened *o,
		    const uint8_t *p)
{
	enum fy_tls_hs_action act;
	char why[160] = "";
	int rc;

	if (o->type != FY_TLS_HANDSHAKE)
		return;
	rc = fy_tls_rec_handshake(p, o->len, &act, why, sizeof(why));
	FZ_ASSERT(rc == 0 || (rc == -EPROTO && why[0]),
		  "handshake messages: %d without a reason", rc);
	if (!rc && act != FY_TLS_HS_NONE)
		FZ_ASSERT(fy_tls_key_next(k) == 0, "KeyUpdate failed");
}

static void raw(struct fy_tls_key *k, const uint8_t *p, size_t n)
{
	uint8_t *dst = malloc(FY_TLS_REC_WIRE);

	while (n) {
		struct fy_tls_opened o;
		ssize_t w = fy_tls_rec_size(k, p, n);
		int rc;

		FZ_ASSERT(w >= 0 || w == -EPROTO, "size: %zd", w);
		if (w <= 0 || (size_t)w > n)
			break;
		FZ_ASSERT(fy_tls_rec_room(k, (size_t)w) < FY_TLS_REC_WIRE,
			  "room %zu", fy_tls_rec_room(k, (size_t)w));
		rc = fy_tls_rec_open(k, p, (size_t)w, dst, &o);
		FZ_ASSERT(rc == 0 || rc == -EBADMSG || rc == -EPROTO,
			  "open: %d", rc);
		if (rc)
			break;
		FZ_ASSERT(o.len < fy_tls_rec_room(k, (size_t)w), "length %zu",
			  o.len);
		content(k, &o, dst);
		p += w;
		n -= (size_t)w;
	}
	free(dst);
}

static void sealed(struct fy_tls_key *tx, struct fy_tls_key *rx,
		   const uint8_t *p, size_t n)
{
	uint8_t *wire = malloc(FY_TLS_REC_WIRE), *dst = malloc(FY_TLS_REC_WIRE);
	size_t at = 0;

	while (n - at >= 5) {
		uint8_t type = p[at];
		size_t len = ((size_t)p[at + 1] << 8 | p[at + 2]) % 16385;
		size_t flip = (size_t)p[at + 3] << 8 | p[at + 4];
		const uint8_t *body = p + at + 5;
		struct iovec v[2];
		struct fy_tls_opened o;
		ssize_t w;
		int rc;

		at += 5;
		if (len > n - at)
			len = n - at;
		/* Two pieces, as a caller's headers and pages would be. */
		v[0] = (struct iovec){ (void *)body, len / 3 };
		v[1] = (struct iovec){ (void *)(body + len / 3), len - len / 3 };
		w = fy_tls_rec_seal(tx, type, v, 2, len, wire);
		FZ_ASSERT(w == (ssize_t)(len + 1 + tx->tag_len + FY_TLS_REC_HDR),
			  "sealed %zu bytes into %zd", len, w);
		at += len;
		if (flip & 0x8000) {
			/* Any bit anywhere in the record: refused. */
			flip &= 0x7fff;
			wire[(flip / 8) % (size_t)w] ^= (uint8_t)(1u << (flip % 8));
			rc = fy_tls_rec_size(rx, wire, (size_t)w) == w
				     ? fy_tls_rec_open(rx, wire, (size_t)w, dst, &o)
				     : -EPROTO;
			FZ_ASSERT(rc == -EBADMSG || rc == -EPROTO,
				  "a flipped bit went through (%d)", rc);
			break; /* the stream is dead, as on a socket */
		}
		FZ_ASSERT(fy_tls_rec_size(rx, wire, (size_t)w) == w, "size");
		rc = fy_tls_rec_open(rx, wire, (size_t)w, dst, &o);
		if (!type) {
			/* All-zero padding after the content: the type is
			 * the last nonzero byte, if any. */
			FZ_ASSERT(rc == 0 || rc == -EPROTO, "open: %d", rc);
			if (rc)
				break;
			continue;
		}
		FZ_ASSERT(rc == 0 && o.type == type && o.len == len &&
				  !memcmp(dst, body, len),
			  "round trip of %zu bytes of type %u: %d", len, type, rc);
		content(rx, &o, dst);
		if (type == FY_TLS_HANDSHAKE && rx->generation != tx->generation)
			FZ_ASSERT(fy_tls_key_next(tx) == 0, "KeyUpdate failed");
	}
	free(wire);
	free(dst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fy_tls_key tx, rx;

	if (size < 2)
		return 0;
	FZ_ASSERT(keys(data[0], data[1] & 2, &tx) == 0 &&
			  keys(data[0], data[1] & 4, &rx) == 0,
		  "keys");
	if (data[1] & 1)
		sealed(&tx, &rx, data + 2, size - 2);
	else
		raw(&rx, data + 2, size - 2);
	fy_tls_key_free(&tx);
	fy_tls_key_free(&rx);
	return 0;
}
