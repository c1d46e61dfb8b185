// SPDX-License-Identifier: MIT
/*
 * tls_rec.c - TLS 1.3 record protection (RFC 8446 section 5.2) with
 * GnuTLS's AEAD API on the traffic secrets of a session GnuTLS
 * negotiated.
 *
 * A record on the wire is a 5-byte header (type 23, version 0x0303, the
 * length of what follows), then the AEAD ciphertext of the content, one
 * byte of inner content type and optional zero padding, then the tag. The
 * header is the additional data; the nonce is the IV XOR the record's
 * 64-bit sequence number, left-padded with zeros to the IV's length.
 *
 * Sealing encrypts straight from the caller's scattered plaintext into
 * the output buffer; opening decrypts in one pass from the received
 * record into its destination: neither copies the data once more. The
 * AEAD itself is tls_aead.c's (ipsec-mb's or GnuTLS's); the key schedule
 * is GnuTLS's HKDF.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "transport/tls_rec.h"

/* The most pieces one record's plaintext may come from (tls.c ends a
 * record early rather than pass more). */
#define FY_TLS_REC_IOV 64

/* HKDF-Expand-Label(@secret, @label, "", @len) of RFC 8446 7.1. */
static int expand_label(gnutls_mac_algorithm_t prf, const uint8_t *secret,
			unsigned slen, const char *label, void *out,
			size_t len)
{
	uint8_t info[2 + 1 + 255 + 1];
	size_t ll = strlen("tls13 ") + strlen(label), n = 0;
	gnutls_datum_t key = { (unsigned char *)secret, slen };
	gnutls_datum_t in;

	if (ll > 255)
		return -EINVAL;
	info[n++] = (uint8_t)(len >> 8);
	info[n++] = (uint8_t)len;
	info[n++] = (uint8_t)ll;
	memcpy(info + n, "tls13 ", 6);
	memcpy(info + n + 6, label, ll - 6);
	n += ll;
	info[n++] = 0; /* an empty context */
	in.data = info;
	in.size = (unsigned)n;
	return gnutls_hkdf_expand(prf, &key, &in, out, len) ? -EINVAL : 0;
}

/* The AEAD key and IV of the secret in @k. */
static int derive(struct fy_tls_key *k)
{
	uint8_t key[32];
	int rc;

	if (k->key_len > sizeof(key))
		return -EOPNOTSUPP;
	rc = expand_label(k->prf, k->secret, k->secret_len, "key", key,
			  k->key_len);
	if (!rc)
		rc = expand_label(k->prf, k->secret, k->secret_len, "iv", k->iv,
				  FY_TLS_IV);
	if (!rc) {
		fy_aead_free(&k->aead);
		rc = fy_aead_init(&k->aead, k->want, k->alg, key, k->key_len);
	}
	explicit_bzero(key, sizeof(key));
	return rc;
}

/**
 * fy_tls_key_init() - see tls_rec.h.
 */
int fy_tls_key_init(struct fy_tls_key *k, enum fy_aead_engine eng,
		    gnutls_cipher_algorithm_t alg, gnutls_mac_algorithm_t prf,
		    const uint8_t *secret, unsigned len, uint64_t seq)
{
	memset(k, 0, sizeof(*k));
	k->want = eng;
	switch (alg) {
	case GNUTLS_CIPHER_AES_128_GCM:
	case GNUTLS_CIPHER_AES_256_GCM:
	case GNUTLS_CIPHER_CHACHA20_POLY1305:
	case GNUTLS_CIPHER_AES_128_CCM:
	case GNUTLS_CIPHER_AES_128_CCM_8:
		break;
	default:
		return -EOPNOTSUPP;
	}
	if (len > FY_TLS_SECRET_MAX || len != gnutls_hmac_get_len(prf) ||
	    gnutls_cipher_get_iv_size(alg) != FY_TLS_IV)
		return -EOPNOTSUPP;
	k->alg = alg;
	k->prf = prf;
	k->secret_len = len;
	k->key_len = (unsigned)gnutls_cipher_get_key_size(alg);
	k->tag_len = gnutls_cipher_get_tag_size(alg);
	k->seq = seq;
	memcpy(k->secret, secret, len);
	return derive(k);
}

/**
 * fy_tls_key_same() - see tls_rec.h. Ties our key schedule to GnuTLS's:
 * keys derived here from the logged secret must be the ones GnuTLS uses.
 */
bool fy_tls_key_same(const struct fy_tls_key *k, const gnutls_datum_t *key,
		     const gnutls_datum_t *iv)
{
	uint8_t mine[32];
	bool same;

	if (key->size != k->key_len || iv->size != FY_TLS_IV ||
	    k->key_len > sizeof(mine) ||
	    expand_label(k->prf, k->secret, k->secret_len, "key", mine,
			 k->key_len))
		return false;
	same = !memcmp(mine, key->data, k->key_len) &&
	       !memcmp(k->iv, iv->data, FY_TLS_IV);
	explicit_bzero(mine, sizeof(mine));
	return same;
}

/**
 * fy_tls_key_bytes() - see tls_rec.h. The same expansion as derive()'s,
 * for a record layer that is not ours (the kernel's).
 */
int fy_tls_key_bytes(const struct fy_tls_key *k, uint8_t *out, size_t len)
{
	if (len < k->key_len || !k->key_len)
		return -EINVAL;
	return expand_label(k->prf, k->secret, k->secret_len, "key", out,
			    k->key_len);
}

/**
 * fy_tls_key_next() - see tls_rec.h.
 */
int fy_tls_key_next(struct fy_tls_key *k)
{
	uint8_t next[FY_TLS_SECRET_MAX];
	int rc = expand_label(k->prf, k->secret, k->secret_len, "traffic upd",
			      next, k->secret_len);

	if (rc)
		return rc;
	memcpy(k->secret, next, k->secret_len);
	explicit_bzero(next, sizeof(next));
	k->seq = 0;
	k->generation++;
	return derive(k);
}

/**
 * fy_tls_key_free() - see tls_rec.h.
 */
void fy_tls_key_free(struct fy_tls_key *k)
{
	fy_aead_free(&k->aead);
	explicit_bzero(k, sizeof(*k));
}

static void nonce(const struct fy_tls_key *k, uint8_t out[FY_TLS_IV])
{
	memcpy(out, k->iv, FY_TLS_IV);
	for (int i = 0; i < 8; i++)
		out[FY_TLS_IV - 1 - i] ^= (uint8_t)(k->seq >> (8 * i));
}

/**
 * fy_tls_rec_seal() - see tls_rec.h.
 */
ssize_t fy_tls_rec_seal(struct fy_tls_key *k, uint8_t type,
			const struct iovec *iov, int n, size_t len,
			uint8_t *out)
{
	struct iovec v[FY_TLS_REC_IOV + 1];
	size_t clen = len + 1 + k->tag_len;
	uint8_t iv[FY_TLS_IV];

	if (n < 0 || n > FY_TLS_REC_IOV || len > FY_TLS_REC_PLAIN ||
	    !k->tag_len)
		return -EINVAL;
	/* A sequence number never wraps (RFC 8446 5.3); KeyUpdates come
	 * long before. */
	if (k->seq == UINT64_MAX)
		return -EOVERFLOW;
	for (int i = 0; i < n; i++)
		v[i] = iov[i];
	v[n].iov_base = &type;
	v[n].iov_len = 1;
	out[0] = FY_TLS_APPDATA;
	out[1] = 3;
	out[2] = 3;
	out[3] = (uint8_t)(clen >> 8);
	out[4] = (uint8_t)clen;
	nonce(k, iv);
	if (fy_aead_seal(&k->aead, iv, out, FY_TLS_REC_HDR, v, n + 1, len + 1,
			 out + FY_TLS_REC_HDR))
		return -EIO;
	k->seq++;
	return (ssize_t)(FY_TLS_REC_HDR + clen);
}

/**
 * fy_tls_rec_size() - see tls_rec.h. After the handshake every record is
 * protected, so its outer type is application data (RFC 8446 5.2); the
 * version field is 0x0303 and the length leaves room for the inner type
 * and the tag.
 */
ssize_t fy_tls_rec_size(const struct fy_tls_key *k, const uint8_t *p,
			size_t avail)
{
	size_t len;

	if (avail < FY_TLS_REC_HDR)
		return 0;
	len = (size_t)p[3] << 8 | p[4];
	if (p[0] != FY_TLS_APPDATA || p[1] != 3 || p[2] != 3 ||
	    len > FY_TLS_REC_WIRE - FY_TLS_REC_HDR || len < k->tag_len + 1)
		return -EPROTO;
	return (ssize_t)(FY_TLS_REC_HDR + len);
}

/**
 * fy_tls_rec_room() - see tls_rec.h.
 */
size_t fy_tls_rec_room(const struct fy_tls_key *k, size_t wire)
{
	return wire - FY_TLS_REC_HDR - k->tag_len;
}

/**
 * fy_tls_rec_open() - see tls_rec.h. The content type is the last
 * nonzero byte of the plaintext (what follows it is padding).
 */
int fy_tls_rec_open(struct fy_tls_key *k, const uint8_t *rec, size_t wire,
		    uint8_t *dst, struct fy_tls_opened *o)
{
	size_t room = fy_tls_rec_room(k, wire), got;
	uint8_t iv[FY_TLS_IV], last;

	if (fy_tls_rec_size(k, rec, wire) != (ssize_t)wire || !k->tag_len)
		return -EPROTO;
	/* RFC 8446 5.4: the inner plaintext (data, type, padding) is at most
	 * 2^14 + 1 bytes, though the record may be longer (record_overflow). */
	if (room > FY_TLS_REC_PLAIN + 1)
		return -EPROTO;
	if (k->seq == UINT64_MAX)
		return -EOVERFLOW;
	nonce(k, iv);
	/* A record that does not authenticate leaves zeros in @dst. */
	if (fy_aead_open(&k->aead, iv, rec, FY_TLS_REC_HDR,
			 rec + FY_TLS_REC_HDR, wire - FY_TLS_REC_HDR, dst,
			 &last))
		return -EBADMSG;
	k->seq++;
	/* Unpadded, as every record of ferry's and GnuTLS's is: the last
	 * byte is the type, and @dst is not read back. */
	if (last) {
		o->type = last;
		o->len = room - 1;
		return 0;
	}
	got = room - 1;
	while (got && !dst[got - 1])
		got--;
	if (!got)
		return -EPROTO;
	o->type = dst[got - 1];
	o->len = got - 1;
	return 0;
}

/**
 * fy_tls_rec_handshake() - see tls_rec.h. GnuTLS sends each
 * post-handshake message whole in one record; ferry takes KeyUpdate and
 * ignores NewSessionTicket (its sessions are never resumed).
 */
int fy_tls_rec_handshake(const uint8_t *p, size_t len,
			 enum fy_tls_hs_action *act, char *why, size_t wlen)
{
	size_t off = 0;

	*act = FY_TLS_HS_NONE;
	while (off < len) {
		size_t mlen;
		uint8_t type;

		if (len - off < 4) {
			snprintf(why, wlen, "a post-handshake message is cut across records");
			return -EPROTO;
		}
		type = p[off];
		mlen = (size_t)p[off + 1] << 16 | (size_t)p[off + 2] << 8 |
		       p[off + 3];
		if (mlen > len - off - 4) {
			snprintf(why, wlen, "a post-handshake message is cut across records");
			return -EPROTO;
		}
		if (type == 24) { /* KeyUpdate */
			if (mlen != 1 || p[off + 4] > 1 ||
			    off + 5 != len) {
				snprintf(why, wlen, "a malformed KeyUpdate (or not the last message of its record)");
				return -EPROTO;
			}
			*act = p[off + 4] ? FY_TLS_HS_UPDATE_BACK
					  : FY_TLS_HS_UPDATE;
		} else if (type != 4) { /* not NewSessionTicket */
			snprintf(why, wlen, "the peer sent a post-handshake message of type %u, which ferry does not take",
				 type);
			return -EPROTO;
		}
		off += 4 + mlen;
	}
	return 0;
}

/**
 * fy_tls_rec_key_update_msg() - see tls_rec.h.
 */
void fy_tls_rec_key_update_msg(uint8_t msg[5], bool ask)
{
	msg[0] = 24;
	msg[1] = 0;
	msg[2] = 0;
	msg[3] = 1;
	msg[4] = ask;
}
