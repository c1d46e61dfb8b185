// SPDX-License-Identifier: MIT
/*
 * aeadrate.c - the single-core speed of each AEAD engine that can seal
 * ferry's TLS 1.3 records (src/transport/tls_aead.h), measured as
 * `gnutls-cli --benchmark-ciphers` measures GnuTLS's: one thread sealing
 * 16 KiB payloads from one buffer (hot in cache) for about a second per
 * cipher. Bench 13 prints it beside gnutls-cli's figure, so that a row's
 * ratio can be read against the cipher ferry actually ran.
 *
 * Prints one JSON line: {"status": "completed", "engines": {"ipsec-mb
 * 1.3.0 (AVX512, VAES)": {"AES-128-GCM": MB/s, ...}, "GnuTLS 3.7.9":
 * {...}}}. An engine this build or CPU cannot run is left out.
 *
 * usage: aeadrate [SECONDS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "transport/tls_aead.h"

#define PAYLOAD 16384

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* MB/s sealing @alg with @eng for @secs, or 0 when it cannot run. */
static double rate(enum fy_aead_engine eng, gnutls_cipher_algorithm_t alg,
		   double secs, char *name, size_t len)
{
	static uint8_t in[PAYLOAD], out[PAYLOAD + 16];
	uint8_t key[32] = { 1 }, iv[12] = { 2 }, aad[5] = { 23, 3, 3, 0x40, 0x11 };
	struct iovec v = { in, PAYLOAD };
	struct fy_aead a;
	char why[160];
	size_t bytes = 0;
	double t0, t;

	if (!fy_aead_usable(eng, alg, why, sizeof(why)) ||
	    fy_aead_init(&a, eng, alg, key,
			 (unsigned)gnutls_cipher_get_key_size(alg)))
		return 0;
	fy_aead_name(&a, name, len);
	memset(in, 0x5a, sizeof(in));
	t0 = now();
	do {
		for (int i = 0; i < 64; i++) {
			iv[11] = (uint8_t)i;
			if (fy_aead_seal(&a, iv, aad, sizeof(aad), &v, 1,
					 PAYLOAD, out)) {
				fy_aead_free(&a);
				return 0;
			}
		}
		bytes += 64 * PAYLOAD;
		t = now() - t0;
	} while (t < secs);
	fy_aead_free(&a);
	return (double)bytes / t / 1e6;
}

int main(int argc, char **argv)
{
	static const struct {
		gnutls_cipher_algorithm_t alg;
		const char *name;
	} ciphers[] = {
		{ GNUTLS_CIPHER_AES_128_GCM, "AES-128-GCM" },
		{ GNUTLS_CIPHER_AES_256_GCM, "AES-256-GCM" },
		{ GNUTLS_CIPHER_CHACHA20_POLY1305, "CHACHA20-POLY1305" },
	};
	static const enum fy_aead_engine engines[] = { FY_AEAD_IPSEC_MB,
						       FY_AEAD_GNUTLS };
	double secs = argc > 1 ? atof(argv[1]) : 1.0;
	const char *sep = "";

	if (secs <= 0 || secs > 60) {
		fprintf(stderr, "usage: aeadrate [SECONDS (0-60)]\n");
		return 2;
	}
	printf("{\"status\": \"completed\", \"engines\": {");
	for (size_t e = 0; e < sizeof(engines) / sizeof(engines[0]); e++) {
		const char *csep = "";
		char name[64] = "";
		double r[3];

		for (size_t c = 0; c < 3; c++)
			r[c] = rate(engines[e], ciphers[c].alg, secs, name,
				    sizeof(name));
		if (!name[0])
			continue;
		printf("%s\"%s\": {", sep, name);
		for (size_t c = 0; c < 3; c++) {
			if (!r[c])
				continue;
			printf("%s\"%s\": %.0f", csep, ciphers[c].name, r[c]);
			csep = ", ";
		}
		printf("}");
		sep = ", ";
	}
	printf("}}\n");
	return 0;
}
