/* SPDX-License-Identifier: MIT */
/*
 * fuzz_common.h - helpers shared by the harnesses and the seed generator.
 *
 * Checksums would stop a fuzzer at the first record: a mutated byte almost
 * never comes with the matching XXH3. So the harnesses that parse records
 * treat a checksum field of all zero bytes as a placeholder for the right
 * value and fill it in before the bytes reach the code under test; any
 * other value is kept, so bad checksums are still exercised. The seed
 * corpora carry placeholders where a fuzzer should be able to go deep.
 */
#ifndef FERRY_FUZZ_COMMON_H
#define FERRY_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * fz_fix_checksums() - fill in placeholder checksums in @p (@n bytes).
 * @stream: the bytes start with a 16-byte stream header (whatever its
 *          magic); otherwise they start with a record, unless they begin
 *          with the magic "FERRYMIG".
 * Records are walked by their length fields until the bytes run out; a
 * record cut short is left as it is.
 */
void fz_fix_checksums(uint8_t *p, size_t n, bool stream);

/* Print a message naming the harness's broken property and abort (which
 * libFuzzer reports as a crash, with the input saved). */
__attribute__((noreturn, format(printf, 1, 2)))
void fz_fail(const char *fmt, ...);

#define FZ_ASSERT(cond, ...)              \
	do {                              \
		if (!(cond))              \
			fz_fail(__VA_ARGS__); \
	} while (0)

#endif /* FERRY_FUZZ_COMMON_H */
