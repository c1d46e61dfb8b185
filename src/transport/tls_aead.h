/* SPDX-License-Identifier: MIT */
/*
 * tls_aead.h - the AEAD under ferry's TLS 1.3 records: GnuTLS's, or
 * Intel's ipsec-mb library (Debian's libipsec-mb) where ferry was built
 * with it and the CPU has AES-NI.
 *
 * Why two: GnuTLS 3.7.9 stitches AES and GHASH only for one contiguous
 * plaintext, and uses neither VAES nor AVX-512; ipsec-mb's GCM runs
 * stitched over scattered pieces (init, update per piece, finalize) and
 * with VAES/AVX-512 where the CPU has them: 1.8-2.0 x GnuTLS's speed from
 * cold memory, 2.8 x on a cached buffer, on this project's machine
 * (docs/design-notes.md, "TLS records are sealed by ipsec-mb"). GnuTLS still
 * does everything else: the handshake, certificates, PSK, the key
 * schedule, TLS 1.2. The records on the wire are the same whichever
 * engine seals them (unit test tls_rec checks both against GnuTLS's own
 * record layer and against each other). A third, FY_AEAD_KTLS, is no
 * AEAD of ferry's: the kernel's record layer on ferry's keys
 * (tls_ktls.c), only when asked for by name.
 */
#ifndef FY_TLS_AEAD_H
#define FY_TLS_AEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

/* Which engine: what a caller asks for (the values of ferry.h's
 * FERRY_TLS_ENGINE_*), and what a key then uses (never AUTO). */
enum fy_aead_engine {
	FY_AEAD_AUTO = 0,     /* ipsec-mb when it can, else GnuTLS */
	FY_AEAD_GNUTLS = 1,
	FY_AEAD_IPSEC_MB = 2, /* ipsec-mb or an error */
	FY_AEAD_KTLS = 3,     /* the kernel's TLS (tls_ktls.c) or an error;
				 never picked by AUTO */
};

/* One key of one AEAD algorithm, ready to seal or open records. */
struct fy_aead {
	enum fy_aead_engine eng;
	gnutls_cipher_algorithm_t alg;
	unsigned tag_len;
	gnutls_aead_cipher_hd_t h; /* GnuTLS */
	void *imb;		   /* ipsec-mb: expanded key (or ChaCha20's) */
};

/*
 * fy_aead_usable() - whether @eng can run @alg in this process: true, or
 * false with the reason in @why ("ferry was built without ipsec-mb", "the
 * CPU has no AES-NI", "ipsec-mb does not do AES-128-CCM"). AUTO and
 * GNUTLS can always run what GnuTLS can.
 */
bool fy_aead_usable(enum fy_aead_engine eng, gnutls_cipher_algorithm_t alg,
		    char *why, size_t len);

/*
 * fy_aead_init() - @a for @alg with @key (@key_len bytes) on @eng (AUTO:
 * ipsec-mb for what it does, GnuTLS for the rest). 0, -EOPNOTSUPP when
 * @eng cannot run @alg, -ENOMEM, or -EINVAL.
 */
int fy_aead_init(struct fy_aead *a, enum fy_aead_engine eng,
		 gnutls_cipher_algorithm_t alg, const uint8_t *key,
		 unsigned key_len);

/* Forget the key (zeroed); harmless on a zeroed or freed one. */
void fy_aead_free(struct fy_aead *a);

/*
 * fy_aead_seal() - encrypt the @n pieces of @v (@len bytes in all) under
 * the 12-byte @iv with @aad (@aad_len bytes) as additional data, into
 * @out: the ciphertext (@len bytes), then the tag. 0 or -EIO.
 */
int fy_aead_seal(struct fy_aead *a, const uint8_t *iv, const uint8_t *aad,
		 size_t aad_len, const struct iovec *v, int n, size_t len,
		 uint8_t *out);

/*
 * fy_aead_open() - decrypt @ct (@ct_len bytes: the ciphertext, then the
 * tag) and check it: the plaintext's last byte goes to *@last, the rest
 * to @dst (@ct_len - tag - 1 bytes; @dst may be written one byte
 * further). 0, or -EBADMSG when it does not authenticate (then @dst and
 * *@last hold zeros). The last byte apart: a TLS 1.3 record's inner
 * type is read there, and reading it back from @dst (guest memory just
 * written, its line still on its way from memory) would stall.
 */
int fy_aead_open(struct fy_aead *a, const uint8_t *iv, const uint8_t *aad,
		 size_t aad_len, const uint8_t *ct, size_t ct_len,
		 uint8_t *dst, uint8_t *last);

/* "ipsec-mb 1.3.0 (AVX512, VAES)", "GnuTLS 3.7.9": who seals @a's records. */
void fy_aead_name(const struct fy_aead *a, char *buf, size_t len);

/* The engine's name for a user ("auto", "gnutls", "ipsec-mb", "ktls"), or
 * NULL. */
const char *fy_aead_engine_name(enum fy_aead_engine eng);

#endif /* FY_TLS_AEAD_H */
