/* SPDX-License-Identifier: MIT */
/*
 * tls_rec.h - the TLS 1.3 record protection of RFC 8446 section 5, on
 * traffic secrets a GnuTLS handshake negotiated: seal a record from
 * scattered plaintext into one buffer, open one into its final place,
 * and the key schedule's "traffic upd" step (KeyUpdate).
 *
 * No I/O here (tls.c reads and writes the socket), so the decoder can be
 * fuzzed on bytes alone (tests/fuzz/fuzz_tlsrec.c).
 */
#ifndef FY_TLS_REC_H
#define FY_TLS_REC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

#include "transport/tls_aead.h"

/* Record header; the largest plaintext; the largest record on the wire
 * (RFC 8446 5.2: TLSCiphertext.length <= 2^14 + 256). */
#define FY_TLS_REC_HDR 5
#define FY_TLS_REC_PLAIN 16384
#define FY_TLS_REC_WIRE (FY_TLS_REC_HDR + FY_TLS_REC_PLAIN + 256)

/* Content types (RFC 8446 B.1). */
#define FY_TLS_ALERT 21
#define FY_TLS_HANDSHAKE 22
#define FY_TLS_APPDATA 23

/* The largest secret (SHA-384) and IV. */
#define FY_TLS_SECRET_MAX 48
#define FY_TLS_IV 12

/* One direction's keys: the traffic secret of this generation, the AEAD
 * key and IV it gives, and the next record's sequence number. */
struct fy_tls_key {
	struct fy_aead aead;
	enum fy_aead_engine want; /* what each generation's key asks for */
	gnutls_cipher_algorithm_t alg;
	gnutls_mac_algorithm_t prf;
	unsigned secret_len, key_len, tag_len;
	uint64_t seq;
	uint64_t generation; /* KeyUpdates so far */
	uint8_t secret[FY_TLS_SECRET_MAX];
	uint8_t iv[FY_TLS_IV];
};

/*
 * fy_tls_key_init() - keys of @alg from the traffic @secret (@len bytes,
 * the length of @prf's hash), the next record numbered @seq, sealed and
 * opened by @eng (tls_aead.h). 0, or a negative errno (-EOPNOTSUPP: not
 * a TLS 1.3 AEAD cipher, or one @eng cannot run).
 */
int fy_tls_key_init(struct fy_tls_key *k, enum fy_aead_engine eng,
		    gnutls_cipher_algorithm_t alg, gnutls_mac_algorithm_t prf,
		    const uint8_t *secret, unsigned len, uint64_t seq);

/* Does @k hold this key and IV (what gnutls_record_get_state() gave)? */
bool fy_tls_key_same(const struct fy_tls_key *k, const gnutls_datum_t *key,
		     const gnutls_datum_t *iv);

/*
 * fy_tls_key_bytes() - the AEAD key of @k's generation (@k->key_len bytes)
 * into @out (@len bytes of room), for the kernel's record layer (kTLS).
 * 0, or -EINVAL. The caller wipes @out.
 */
int fy_tls_key_bytes(const struct fy_tls_key *k, uint8_t *out, size_t len);

/*
 * fy_tls_key_next() - the next generation (RFC 8446 7.2: the secret
 * expanded with "traffic upd"), sequence numbers from 0. 0 or -errno.
 */
int fy_tls_key_next(struct fy_tls_key *k);

/* Forget the keys (zeroed); harmless on a zeroed or freed key. */
void fy_tls_key_free(struct fy_tls_key *k);

/*
 * fy_tls_rec_seal() - one record of inner type @type whose plaintext is
 * the @n pieces of @iov (@len bytes in all, at most FY_TLS_REC_PLAIN),
 * encrypted into @out (room for @len + FY_TLS_REC_WIRE - FY_TLS_REC_PLAIN
 * bytes): the record's size on the wire, or a negative errno.
 */
ssize_t fy_tls_rec_seal(struct fy_tls_key *k, uint8_t type,
			const struct iovec *iov, int n, size_t len,
			uint8_t *out);

/*
 * fy_tls_rec_size() - from the @avail bytes at @p (the start of a
 * record): its size on the wire, 0 if its header is not all there yet,
 * or -EPROTO when the header is no TLS 1.3 protected record.
 */
ssize_t fy_tls_rec_size(const struct fy_tls_key *k, const uint8_t *p,
			size_t avail);

/* What a record held: its inner type and the length of its content. */
struct fy_tls_opened {
	uint8_t type;
	size_t len;
};

/* The room fy_tls_rec_open() needs for a record of @wire bytes. */
size_t fy_tls_rec_room(const struct fy_tls_key *k, size_t wire);

/*
 * fy_tls_rec_open() - decrypt the whole record of @wire bytes at @rec
 * (fy_tls_rec_size()) into @dst, which must have fy_tls_rec_room() bytes:
 * the content goes to @dst's start, the bytes after it are scratch (the
 * inner type, padding). 0 with @o filled, -EBADMSG when it does not
 * authenticate (nothing of it is left in @dst), -EPROTO when its
 * plaintext would exceed 2^14 + 1 bytes (refused before decrypting) or
 * has no content type, -EOVERFLOW when the sequence number ran out.
 */
int fy_tls_rec_open(struct fy_tls_key *k, const uint8_t *rec, size_t wire,
		    uint8_t *dst, struct fy_tls_opened *o);

/* What post-handshake messages asked for. */
enum fy_tls_hs_action {
	FY_TLS_HS_NONE,		/* only messages to ignore (tickets) */
	FY_TLS_HS_UPDATE,	/* KeyUpdate: take the peer's next keys */
	FY_TLS_HS_UPDATE_BACK,	/* the same, and send our own KeyUpdate */
};

/*
 * fy_tls_rec_handshake() - the post-handshake messages that filled one
 * record's content @p (@len bytes): *@act says what to do; 0, or
 * -EPROTO with the reason in @why (a message cut across records, a
 * KeyUpdate not last in its record, a message ferry does not take).
 */
int fy_tls_rec_handshake(const uint8_t *p, size_t len,
			 enum fy_tls_hs_action *act, char *why, size_t wlen);

/* The body of a KeyUpdate message (@ask: update_requested). */
void fy_tls_rec_key_update_msg(uint8_t msg[5], bool ask);

#endif /* FY_TLS_REC_H */
