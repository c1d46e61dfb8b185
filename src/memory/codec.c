// SPDX-License-Identifier: MIT
/*
 * codec.c - per-chunk compression with Debian's liblz4 and libzstd.
 *
 * A chunk is compressed on its own (no dictionary or history shared with
 * other chunks), so chunks can be sent on any channel and decoded in any
 * order. What is kept between calls is only the libraries' working memory:
 * an LZ4 (or LZ4 HC) state and a ZSTD_CCtx/ZSTD_DCtx, allocated once per
 * codec so the hot path does not allocate.
 *
 * The sender only wants compressed output that is smaller than the input:
 * otherwise it sends the chunk raw. Both libraries are therefore given an
 * output limit of n - 1 bytes and asked to give up when the output does
 * not fit, which LZ4 does early and cheaply on incompressible data.
 *
 * Decompression runs on bytes from the network. Only the bounds-checked
 * decoders are used (LZ4_decompress_safe, ZSTD_decompressDCtx), the output
 * capacity handed to them is exactly the size the record announced, and
 * the result must be exactly that size.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <lz4hc.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "memory/memory.h"

/* lz4: levels from this one on use the HC compressor. */
#define LZ4_HC_FROM 3
/* lz4: most negative level (acceleration 65537 is LZ4's maximum). */
#define LZ4_LEVEL_MIN (-65536)

struct fy_codec {
	enum fy_codec_kind kind;
	int level;
	void *lz4_state;     /* LZ4_stream_t or LZ4_streamHC_t working memory */
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
};

static const char *const codec_names[] = {
	[FY_CODEC_NONE] = "none",
	[FY_CODEC_LZ4] = "lz4",
	[FY_CODEC_ZSTD] = "zstd",
};
static_assert(sizeof(codec_names) / sizeof(codec_names[0]) == FY_CODEC_KINDS,
	      "every codec kind has a name");

/**
 * fy_codec_name() - the configuration name of a codec kind.
 * @kind: codec kind
 *
 * Return: "none", "lz4" or "zstd"; "unknown" for an invalid value.
 */
const char *fy_codec_name(enum fy_codec_kind kind)
{
	if ((unsigned int)kind < sizeof(codec_names) / sizeof(codec_names[0]))
		return codec_names[kind];
	return "unknown";
}

/**
 * fy_codec_parse() - parse a codec name.
 * @name: "none", "lz4" or "zstd"
 * @out:  receives the kind
 *
 * Return: 0, or -EINVAL for an unknown name (@out untouched).
 */
int fy_codec_parse(const char *name, enum fy_codec_kind *out)
{
	unsigned int i;

	if (!name)
		return -EINVAL;
	for (i = 0; i < sizeof(codec_names) / sizeof(codec_names[0]); i++) {
		if (!strcmp(name, codec_names[i])) {
			*out = (enum fy_codec_kind)i;
			return 0;
		}
	}
	return -EINVAL;
}

/**
 * fy_codec_levels() - the compression levels @kind takes, besides 0 (the
 * default): @min to @max; 0 to 0 for none or an unknown kind.
 */
void fy_codec_levels(enum fy_codec_kind kind, int *min, int *max)
{
	*min = *max = 0;
	if (kind == FY_CODEC_LZ4) {
		*min = LZ4_LEVEL_MIN;
		*max = LZ4HC_CLEVEL_MAX;
	} else if (kind == FY_CODEC_ZSTD) {
		*min = ZSTD_minCLevel();
		*max = ZSTD_maxCLevel();
	}
}

/* Resolve level 0 to the default and check the range for @kind. */
static int codec_level(enum fy_codec_kind kind, int level, int *out)
{
	if (!level)
		level = 1;
	switch (kind) {
	case FY_CODEC_NONE:
		*out = 0;
		return 0;
	case FY_CODEC_LZ4:
		if (level < LZ4_LEVEL_MIN || level > LZ4HC_CLEVEL_MAX)
			return -EINVAL;
		break;
	case FY_CODEC_ZSTD:
		if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}
	*out = level;
	return 0;
}

static int codec_alloc(struct fy_codec *c)
{
	size_t st;

	switch (c->kind) {
	case FY_CODEC_LZ4:
		st = (size_t)(c->level >= LZ4_HC_FROM ? LZ4_sizeofStateHC() :
							LZ4_sizeofState());
		c->lz4_state = malloc(st);
		return c->lz4_state ? 0 : -ENOMEM;
	case FY_CODEC_ZSTD:
		c->cctx = ZSTD_createCCtx();
		c->dctx = ZSTD_createDCtx();
		if (!c->cctx || !c->dctx)
			return -ENOMEM;
		if (ZSTD_isError(ZSTD_CCtx_setParameter(
			    c->cctx, ZSTD_c_compressionLevel, c->level)))
			return -EINVAL;
		return 0;
	default:
		return 0;
	}
}

/**
 * fy_codec_new() - create a codec with its reusable library contexts.
 * @kind:  FY_CODEC_NONE, FY_CODEC_LZ4 or FY_CODEC_ZSTD
 * @level: compression level, 0 for the default (see memory.h); the
 *         decoder does not depend on it
 * @out:   receives the codec, owned by the caller (fy_codec_free())
 *
 * Return: 0, -EINVAL for an unknown kind or a level out of range, or
 * -ENOMEM.
 */
int fy_codec_new(enum fy_codec_kind kind, int level, struct fy_codec **out)
{
	struct fy_codec *c;
	int lvl, rc;

	*out = NULL;
	rc = codec_level(kind, level, &lvl);
	if (rc)
		return rc;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->kind = kind;
	c->level = lvl;
	rc = codec_alloc(c);
	if (rc) {
		fy_codec_free(c);
		return rc;
	}
	*out = c;
	return 0;
}

/**
 * fy_codec_free() - release a codec and its contexts.
 * @c: codec, may be NULL
 */
void fy_codec_free(struct fy_codec *c)
{
	if (!c)
		return;
	free(c->lz4_state);
	ZSTD_freeCCtx(c->cctx);
	ZSTD_freeDCtx(c->dctx);
	free(c);
}

/**
 * fy_codec_kind_of() - the kind a codec was created with.
 * @c: codec
 *
 * Return: its kind.
 */
enum fy_codec_kind fy_codec_kind_of(const struct fy_codec *c)
{
	return c->kind;
}

/**
 * fy_codec_bound() - the largest output compressing @n bytes can produce.
 * @kind: codec kind
 * @n:    input size
 *
 * fy_codec_compress() never returns more than @n - 1 bytes, so a buffer
 * of @n bytes is enough for it; this is the libraries' own worst case, for
 * callers that size buffers generically.
 *
 * Return: the bound, or 0 if @n is beyond what the codec accepts.
 */
size_t fy_codec_bound(enum fy_codec_kind kind, size_t n)
{
	size_t b;

	switch (kind) {
	case FY_CODEC_NONE:
		return n;
	case FY_CODEC_LZ4:
		if (n > LZ4_MAX_INPUT_SIZE)
			return 0;
		return (size_t)LZ4_compressBound((int)n);
	case FY_CODEC_ZSTD:
		b = ZSTD_compressBound(n);
		return ZSTD_isError(b) ? 0 : b;
	default:
		return 0;
	}
}

static long lz4_compress(struct fy_codec *c, const void *src, size_t n,
			 void *dst, size_t limit)
{
	int r;

	if (n > LZ4_MAX_INPUT_SIZE)
		return -EINVAL;
	if (limit > INT_MAX)
		limit = INT_MAX;
	if (c->level >= LZ4_HC_FROM)
		r = LZ4_compress_HC_extStateHC(c->lz4_state, src, dst, (int)n,
					       (int)limit, c->level);
	else
		r = LZ4_compress_fast_extState(c->lz4_state, src, dst, (int)n,
					       (int)limit,
					       c->level < 0 ? 1 - c->level : 1);
	/* 0 means "does not fit in limit": send raw. */
	return r > 0 ? (long)r : 0;
}

static long zstd_compress(struct fy_codec *c, const void *src, size_t n,
			  void *dst, size_t limit)
{
	size_t r = ZSTD_compress2(c->cctx, dst, limit, src, n);

	if (!ZSTD_isError(r))
		return (long)r;
	switch (ZSTD_getErrorCode(r)) {
	case ZSTD_error_dstSize_tooSmall:
		return 0;
	case ZSTD_error_memory_allocation:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

/**
 * fy_codec_compress() - compress one chunk.
 * @c:   codec (one per thread)
 * @src: @n bytes to compress
 * @n:   input size
 * @dst: output buffer of @cap bytes
 * @cap: output capacity; @n is always enough, a smaller value demands a
 *       larger saving (zstd may refuse output that comes within a few
 *       bytes of the limit, which then goes raw)
 *
 * Nothing is written past @dst + min(@cap, @n - 1).
 *
 * Return: the compressed size (1 .. @n - 1); 0 when the result would not
 * be smaller than @n or would not fit in @cap, including for
 * FY_CODEC_NONE and empty input (send the chunk raw); -EINVAL for input
 * too large for the codec; -ENOMEM or -EIO if the library failed.
 */
long fy_codec_compress(struct fy_codec *c, const void *src, size_t n,
		       void *dst, size_t cap)
{
	size_t limit = cap < n - 1 ? cap : n - 1;

	if (!n || !limit)
		return 0;
	if (n > LONG_MAX)
		return -EINVAL;
	switch (c->kind) {
	case FY_CODEC_LZ4:
		return lz4_compress(c, src, n, dst, limit);
	case FY_CODEC_ZSTD:
		return zstd_compress(c, src, n, dst, limit);
	default:
		return 0;
	}
}

/**
 * fy_codec_decompress() - decompress one chunk received from the network.
 * @c:      codec (one per thread); its level does not matter
 * @src:    @n compressed bytes, untrusted
 * @n:      compressed size
 * @dst:    output, @expect bytes
 * @expect: the uncompressed size the record announced
 *
 * For FY_CODEC_NONE the input is copied and must be exactly @expect bytes.
 * Nothing is written past @dst + @expect, whatever @src holds; on failure
 * the contents of @dst are unspecified.
 *
 * Return: 0 when exactly @expect bytes were produced; -EBADMSG for input
 * that is corrupt, truncated, or decodes to more or fewer bytes.
 */
int fy_codec_decompress(struct fy_codec *c, const void *src, size_t n,
			void *dst, size_t expect)
{
	size_t r;
	int k;

	switch (c->kind) {
	case FY_CODEC_NONE:
		if (n != expect)
			return -EBADMSG;
		memcpy(dst, src, n);
		return 0;
	case FY_CODEC_LZ4:
		if (n > INT_MAX || expect > INT_MAX)
			return -EBADMSG;
		k = LZ4_decompress_safe(src, dst, (int)n, (int)expect);
		return k >= 0 && (size_t)k == expect ? 0 : -EBADMSG;
	case FY_CODEC_ZSTD:
		r = ZSTD_decompressDCtx(c->dctx, dst, expect, src, n);
		return !ZSTD_isError(r) && r == expect ? 0 : -EBADMSG;
	default:
		return -EBADMSG;
	}
}
