// SPDX-License-Identifier: MIT
/*
 * tls_aead.c - the AEAD that seals and opens ferry's TLS 1.3 records:
 * ipsec-mb's stitched AES-GCM and ChaCha20-Poly1305 where the build and
 * the CPU allow, GnuTLS's otherwise (see tls_aead.h for why).
 *
 * ipsec-mb is used through its "direct" API only (init, update, finalize
 * on a caller's context): no job queue, no state in the manager but the
 * function pointers init_mb_mgr_auto() picked for this CPU, so one
 * manager serves every thread. Before the first use the process checks
 * ipsec-mb against GnuTLS on known data for each algorithm (sealed in
 * pieces by one, opened by the other); an engine that disagrees is not
 * used, and the reason is what fy_aead_usable() says.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/tls_aead.h"

#ifdef FY_HAVE_IPSEC_MB
#include <intel-ipsec-mb.h>
#endif

#define FY_AEAD_IV 12
#define FY_AEAD_TAG 16

/* Constant time: a tag compared byte by byte would tell a forger how many
 * of its first bytes were right. */
static bool same_tag(const uint8_t *a, const uint8_t *b, size_t n)
{
	uint8_t d = 0;

	for (size_t i = 0; i < n; i++)
		d |= a[i] ^ b[i];
	return !d;
}

static bool imb_alg(gnutls_cipher_algorithm_t alg)
{
	return alg == GNUTLS_CIPHER_AES_128_GCM ||
	       alg == GNUTLS_CIPHER_AES_256_GCM ||
	       alg == GNUTLS_CIPHER_CHACHA20_POLY1305;
}

#ifdef FY_HAVE_IPSEC_MB

/* One GCM key size's functions, as init_mb_mgr_auto() picked them for
 * this CPU; [0] decrypts, [1] encrypts. */
struct imb_gcm {
	aes_gcm_pre_t pre;
	aes_gcm_init_t init;
	aes_gcm_enc_dec_update_t update[2];
	aes_gcm_enc_dec_finalize_t finish[2];
};

static struct {
	pthread_once_t once;
	IMB_MGR *mgr;
	IMB_ARCH arch;
	struct imb_gcm gcm[2]; /* AES-128, AES-256 */
	char name[64];
	char why[160]; /* set: ipsec-mb is not used */
} imb = { .once = PTHREAD_ONCE_INIT };

static const char *arch_name(IMB_ARCH a)
{
	switch (a) {
	case IMB_ARCH_SSE:
		return "SSE";
	case IMB_ARCH_AVX:
		return "AVX";
	case IMB_ARCH_AVX2:
		return "AVX2";
	case IMB_ARCH_AVX512:
		return "AVX512";
	default:
		return "none";
	}
}

static bool chacha(const struct fy_aead *a)
{
	return a->alg == GNUTLS_CIPHER_CHACHA20_POLY1305;
}

static const struct imb_gcm *gcm_of(const struct fy_aead *a)
{
	return &imb.gcm[a->alg == GNUTLS_CIPHER_AES_256_GCM];
}

static size_t imb_key_size(const struct fy_aead *a)
{
	return chacha(a) ? 32 : sizeof(struct gcm_key_data);
}

static int imb_init(struct fy_aead *a, const uint8_t *key)
{
	/* Rounded up: aligned_alloc() takes multiples of the alignment. */
	a->imb = aligned_alloc(64, (imb_key_size(a) + 63) & ~(size_t)63);
	if (!a->imb)
		return -ENOMEM;
	if (chacha(a))
		memcpy(a->imb, key, 32);
	else
		gcm_of(a)->pre(key, a->imb);
	return 0;
}

/* Each algorithm's three steps, so that seal and open share one shape. */
union imb_ctx {
	struct gcm_context_data gcm;
	struct chacha20_poly1305_context_data chacha;
};

static void imb_start(struct fy_aead *a, union imb_ctx *c, const uint8_t *iv,
		      const uint8_t *aad, size_t aad_len)
{
	if (chacha(a))
		IMB_CHACHA20_POLY1305_INIT(imb.mgr, a->imb, &c->chacha, iv, aad,
					   aad_len);
	else
		gcm_of(a)->init(a->imb, &c->gcm, iv, aad, aad_len);
}

static void imb_update(struct fy_aead *a, union imb_ctx *c, bool enc,
		       uint8_t *dst, const uint8_t *src, size_t len)
{
	if (!chacha(a))
		gcm_of(a)->update[enc](a->imb, &c->gcm, dst, src, len);
	else if (enc)
		IMB_CHACHA20_POLY1305_ENC_UPDATE(imb.mgr, a->imb, &c->chacha,
						 dst, src, len);
	else
		IMB_CHACHA20_POLY1305_DEC_UPDATE(imb.mgr, a->imb, &c->chacha,
						 dst, src, len);
}

/* The tag (GCM's finalize differs by direction; ChaCha20-Poly1305's does
 * not). */
static void imb_finish(struct fy_aead *a, union imb_ctx *c, bool enc,
		       uint8_t *tag)
{
	if (chacha(a))
		IMB_CHACHA20_POLY1305_ENC_FINALIZE(imb.mgr, &c->chacha, tag,
						   FY_AEAD_TAG);
	else
		gcm_of(a)->finish[enc](a->imb, &c->gcm, tag, FY_AEAD_TAG);
}

static int imb_seal(struct fy_aead *a, const uint8_t *iv, const uint8_t *aad,
		    size_t aad_len, const struct iovec *v, int n, uint8_t *out)
{
	union imb_ctx c;

	imb_start(a, &c, iv, aad, aad_len);
	for (int i = 0; i < n; i++) {
		if (!v[i].iov_len)
			continue;
		imb_update(a, &c, true, out, v[i].iov_base, v[i].iov_len);
		out += v[i].iov_len;
	}
	imb_finish(a, &c, true, out);
	explicit_bzero(&c, sizeof(c));
	return 0;
}

/* @len bytes of ciphertext at @ct (the tag after them): all but the
 * last to @dst, the last to *@last. */
static int imb_open(struct fy_aead *a, const uint8_t *iv, const uint8_t *aad,
		    size_t aad_len, const uint8_t *ct, size_t len, uint8_t *dst,
		    uint8_t *last)
{
	uint8_t tag[FY_AEAD_TAG];
	union imb_ctx c;
	bool ok;

	imb_start(a, &c, iv, aad, aad_len);
	if (len > 1)
		imb_update(a, &c, false, dst, ct, len - 1);
	imb_update(a, &c, false, last, ct + len - 1, 1);
	imb_finish(a, &c, false, tag);
	ok = same_tag(tag, ct + len, FY_AEAD_TAG);
	explicit_bzero(&c, sizeof(c));
	return ok ? 0 : -EBADMSG;
}

static int gnutls_seal(struct fy_aead *a, const uint8_t *iv,
		       const uint8_t *aad, size_t aad_len,
		       const struct iovec *v, int n, size_t len, uint8_t *out);
static int gnutls_open(struct fy_aead *a, const uint8_t *iv,
		       const uint8_t *aad, size_t aad_len, const uint8_t *ct,
		       size_t ct_len, uint8_t *dst, uint8_t *last);

/*
 * One algorithm's check: a message in pieces of awkward lengths (a
 * partial block carried across updates, an empty piece, one byte last,
 * as a record's inner type is) sealed by each engine must give the same
 * bytes, and each must open the other's.
 */
static bool imb_agrees(gnutls_cipher_algorithm_t alg)
{
	static const size_t cut[] = { 0, 7, 16, 33, 0, 200, 1 };
	uint8_t key[32], iv[FY_AEAD_IV], aad[5] = { 23, 3, 3, 1, 2 };
	uint8_t msg[257], x[257 + FY_AEAD_TAG], y[257 + FY_AEAD_TAG], back[257];
	uint8_t last;
	struct iovec v[sizeof(cut) / sizeof(cut[0])];
	struct fy_aead g = { 0 }, m = { 0 };
	size_t off = 0;
	int n = 0;
	bool ok;

	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(i * 7 + 1);
	for (size_t i = 0; i < sizeof(iv); i++)
		iv[i] = (uint8_t)(0xa0 + i);
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 13 + 5);
	for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
		v[n].iov_base = msg + off;
		v[n++].iov_len = cut[i];
		off += cut[i];
	}
	if (fy_aead_init(&g, FY_AEAD_GNUTLS, alg, key,
			 (unsigned)gnutls_cipher_get_key_size(alg)))
		return false;
	m = (struct fy_aead){ .eng = FY_AEAD_IPSEC_MB, .alg = alg,
			      .tag_len = FY_AEAD_TAG };
	ok = !imb_init(&m, key) &&
	     !gnutls_seal(&g, iv, aad, sizeof(aad), v, n, off, x) &&
	     !imb_seal(&m, iv, aad, sizeof(aad), v, n, y) &&
	     !memcmp(x, y, off + FY_AEAD_TAG) &&
	     !imb_open(&m, iv, aad, sizeof(aad), x, off, back, &last) &&
	     !memcmp(back, msg, off - 1) && last == msg[off - 1] &&
	     !gnutls_open(&g, iv, aad, sizeof(aad), y, off + FY_AEAD_TAG,
			  back, &last) &&
	     !memcmp(back, msg, off - 1) && last == msg[off - 1];
	/* A forged tag is refused. */
	y[off] ^= 1;
	ok = ok && imb_open(&m, iv, aad, sizeof(aad), y, off, back, &last) ==
			   -EBADMSG;
	fy_aead_free(&g);
	fy_aead_free(&m);
	return ok;
}

static void imb_setup(void)
{
	static const gnutls_cipher_algorithm_t algs[] = {
		GNUTLS_CIPHER_AES_128_GCM, GNUTLS_CIPHER_AES_256_GCM,
		GNUTLS_CIPHER_CHACHA20_POLY1305
	};

	imb.mgr = alloc_mb_mgr(0);
	if (!imb.mgr) {
		snprintf(imb.why, sizeof(imb.why), "ipsec-mb: out of memory");
		return;
	}
	init_mb_mgr_auto(imb.mgr, &imb.arch);
	imb.gcm[0] = (struct imb_gcm){
		imb.mgr->gcm128_pre, imb.mgr->gcm128_init,
		{ imb.mgr->gcm128_dec_update, imb.mgr->gcm128_enc_update },
		{ imb.mgr->gcm128_dec_finalize, imb.mgr->gcm128_enc_finalize },
	};
	imb.gcm[1] = (struct imb_gcm){
		imb.mgr->gcm256_pre, imb.mgr->gcm256_init,
		{ imb.mgr->gcm256_dec_update, imb.mgr->gcm256_enc_update },
		{ imb.mgr->gcm256_dec_finalize, imb.mgr->gcm256_enc_finalize },
	};
	if (imb_get_errno(imb.mgr) || imb.arch < IMB_ARCH_SSE) {
		snprintf(imb.why, sizeof(imb.why),
			 "ipsec-mb: the CPU has no AES-NI (or the library refused it)");
		goto off;
	}
	/* The library's own known-answer tests, where it has them. */
	if ((imb.mgr->features & IMB_FEATURE_SELF_TEST) &&
	    !(imb.mgr->features & IMB_FEATURE_SELF_TEST_PASS)) {
		snprintf(imb.why, sizeof(imb.why),
			 "ipsec-mb: its self-test failed");
		goto off;
	}
	snprintf(imb.name, sizeof(imb.name), "ipsec-mb %s (%s%s)",
		 imb_get_version_str(), arch_name(imb.arch),
		 (imb.mgr->features & IMB_FEATURE_VAES) ? ", VAES" : "");
	for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
		if (!imb_agrees(algs[i])) {
			snprintf(imb.why, sizeof(imb.why),
				 "ipsec-mb: its %s disagrees with GnuTLS's on known data",
				 gnutls_cipher_get_name(algs[i]));
			goto off;
		}
	}
	return;
off:
	free_mb_mgr(imb.mgr);
	imb.mgr = NULL;
}

static const char *imb_unusable(void)
{
	pthread_once(&imb.once, imb_setup);
	return imb.why[0] ? imb.why : NULL;
}

#else /* !FY_HAVE_IPSEC_MB */

static const char *imb_unusable(void)
{
	return "ferry was built without ipsec-mb (Debian's libipsec-mb-dev)";
}

static int imb_init(struct fy_aead *a, const uint8_t *key)
{
	return -EOPNOTSUPP;
}

static size_t imb_key_size(const struct fy_aead *a)
{
	return 0;
}

static int imb_seal(struct fy_aead *a, const uint8_t *iv, const uint8_t *aad,
		    size_t aad_len, const struct iovec *v, int n, uint8_t *out)
{
	return -EIO;
}

static int imb_open(struct fy_aead *a, const uint8_t *iv, const uint8_t *aad,
		    size_t aad_len, const uint8_t *ct, size_t len, uint8_t *dst,
		    uint8_t *last)
{
	return -EBADMSG;
}

#endif /* FY_HAVE_IPSEC_MB */

/**
 * fy_aead_usable() - see tls_aead.h.
 */
bool fy_aead_usable(enum fy_aead_engine eng, gnutls_cipher_algorithm_t alg,
		    char *why, size_t len)
{
	const char *no;

	if (eng != FY_AEAD_IPSEC_MB)
		return true;
	no = imb_unusable();
	if (!no && !imb_alg(alg)) {
		snprintf(why, len, "ipsec-mb: ferry does not use it for %s",
			 gnutls_cipher_get_name(alg));
		return false;
	}
	if (no)
		snprintf(why, len, "%s", no);
	return !no;
}

/**
 * fy_aead_init() - see tls_aead.h.
 */
int fy_aead_init(struct fy_aead *a, enum fy_aead_engine eng,
		 gnutls_cipher_algorithm_t alg, const uint8_t *key,
		 unsigned key_len)
{
	gnutls_datum_t d = { (unsigned char *)key, key_len };
	char why[160];

	memset(a, 0, sizeof(*a));
	if (key_len != (unsigned)gnutls_cipher_get_key_size(alg) ||
	    gnutls_cipher_get_tag_size(alg) > FY_AEAD_TAG)
		return -EINVAL;
	if (eng == FY_AEAD_AUTO)
		eng = imb_alg(alg) && !imb_unusable() ? FY_AEAD_IPSEC_MB
						      : FY_AEAD_GNUTLS;
	/* The kernel seals a kTLS session's records; the key kept here
	 * serves its key schedule only, and GnuTLS's AEAD holds it. */
	if (eng == FY_AEAD_KTLS)
		eng = FY_AEAD_GNUTLS;
	if (!fy_aead_usable(eng, alg, why, sizeof(why)))
		return -EOPNOTSUPP;
	a->eng = eng;
	a->alg = alg;
	a->tag_len = gnutls_cipher_get_tag_size(alg);
	if (eng == FY_AEAD_IPSEC_MB)
		return imb_init(a, key);
	return gnutls_aead_cipher_init(&a->h, alg, &d) ? -EINVAL : 0;
}

/**
 * fy_aead_free() - see tls_aead.h.
 */
void fy_aead_free(struct fy_aead *a)
{
	if (a->h)
		gnutls_aead_cipher_deinit(a->h);
	if (a->imb) {
		explicit_bzero(a->imb, imb_key_size(a));
		free(a->imb);
	}
	memset(a, 0, sizeof(*a));
}

static int gnutls_seal(struct fy_aead *a, const uint8_t *iv,
		       const uint8_t *aad, size_t aad_len,
		       const struct iovec *v, int n, size_t len, uint8_t *out)
{
	giovec_t ad = { (void *)aad, aad_len };
	size_t got = len + a->tag_len;

	if (gnutls_aead_cipher_encryptv(a->h, iv, FY_AEAD_IV, &ad, 1,
					a->tag_len, (const giovec_t *)v, n,
					out, &got) ||
	    got != len + a->tag_len)
		return -EIO;
	return 0;
}

/* GnuTLS decrypts in one call, the last byte into @dst too. */
static int gnutls_open(struct fy_aead *a, const uint8_t *iv,
		       const uint8_t *aad, size_t aad_len, const uint8_t *ct,
		       size_t ct_len, uint8_t *dst, uint8_t *last)
{
	size_t room = ct_len - a->tag_len, got = room;

	if (gnutls_aead_cipher_decrypt(a->h, iv, FY_AEAD_IV, aad, aad_len,
				       a->tag_len, ct, ct_len, dst, &got) ||
	    got != room)
		return -EBADMSG;
	*last = dst[room - 1];
	return 0;
}

/**
 * fy_aead_seal() - see tls_aead.h.
 */
int fy_aead_seal(struct fy_aead *a, const uint8_t *iv, const uint8_t *aad,
		 size_t aad_len, const struct iovec *v, int n, size_t len,
		 uint8_t *out)
{
	if (a->eng == FY_AEAD_IPSEC_MB)
		return imb_seal(a, iv, aad, aad_len, v, n, out);
	if (!a->h)
		return -EIO;
	return gnutls_seal(a, iv, aad, aad_len, v, n, len, out);
}

/**
 * fy_aead_open() - see tls_aead.h.
 */
int fy_aead_open(struct fy_aead *a, const uint8_t *iv, const uint8_t *aad,
		 size_t aad_len, const uint8_t *ct, size_t ct_len,
		 uint8_t *dst, uint8_t *last)
{
	size_t room;
	int rc;

	*last = 0;
	if (ct_len <= a->tag_len || (!a->h && !a->imb))
		return -EBADMSG;
	room = ct_len - a->tag_len;
	rc = a->eng == FY_AEAD_IPSEC_MB
		     ? imb_open(a, iv, aad, aad_len, ct, room, dst, last)
		     : gnutls_open(a, iv, aad, aad_len, ct, ct_len, dst, last);
	/* Both engines leave what they decrypted: nothing of a record that
	 * did not authenticate may stay. */
	if (rc) {
		explicit_bzero(dst, room);
		*last = 0;
	}
	return rc;
}

/**
 * fy_aead_name() - see tls_aead.h.
 */
void fy_aead_name(const struct fy_aead *a, char *buf, size_t len)
{
#ifdef FY_HAVE_IPSEC_MB
	if (a->eng == FY_AEAD_IPSEC_MB) {
		snprintf(buf, len, "%s", imb.name);
		return;
	}
#endif
	snprintf(buf, len, "GnuTLS %s", gnutls_check_version(NULL));
}

/**
 * fy_aead_engine_name() - see tls_aead.h.
 */
const char *fy_aead_engine_name(enum fy_aead_engine eng)
{
	switch (eng) {
	case FY_AEAD_AUTO:
		return "auto";
	case FY_AEAD_GNUTLS:
		return "gnutls";
	case FY_AEAD_IPSEC_MB:
		return "ipsec-mb";
	case FY_AEAD_KTLS:
		return "ktls";
	}
	return NULL;
}
