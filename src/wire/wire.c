/* SPDX-License-Identifier: MIT */
/*
 * wire.c - encoding and decoding of the ferry stream: stream header, record
 * framing, checksums and message bodies.
 *
 * Everything here is pure: no I/O, no logging, no global state. Integers go
 * through the little-endian helpers of wire.h one field at a time, so the
 * layout never depends on the compiler's struct padding or the host's byte
 * order. Decoders treat their input as hostile (they are fuzz targets): every
 * length is checked before it is used and anything not exactly as the
 * format describes is rejected.
 */
#include "wire/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/*
 * XXH_STATIC_LINKING_ONLY exposes XXH3_state_t so that the one-shot record
 * checksum can keep its state on the stack: fy_rec_csum() has no error
 * return and must not allocate. The header and the library come from the
 * same Debian package, so the layout matches.
 */
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "ferry.h"

/* ---- growable buffer ---- */

/**
 * fy_buf_init() - make @b an empty buffer that owns no memory yet.
 * @b: the buffer.
 */
void fy_buf_init(struct fy_buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

/**
 * fy_buf_free() - release the memory of @b and leave it empty (reusable).
 * @b: the buffer.
 */
void fy_buf_free(struct fy_buf *b)
{
	free(b->data);
	fy_buf_init(b);
}

/**
 * fy_buf_reset() - forget the contents of @b but keep its memory, so a
 * buffer reused for every record stops allocating once it is big enough.
 * @b: the buffer.
 */
void fy_buf_reset(struct fy_buf *b)
{
	b->len = 0;
}

/**
 * fy_buf_reserve() - make room for @extra more bytes after the contents.
 * @b: the buffer.
 * @extra: bytes the caller is about to append.
 *
 * Capacity doubles so that appending byte by byte stays linear.
 *
 * Return: 0, or -ENOMEM (including when the size would overflow).
 */
int fy_buf_reserve(struct fy_buf *b, size_t extra)
{
	size_t need, cap;
	uint8_t *p;

	if (extra > SIZE_MAX - b->len)
		return -ENOMEM;
	need = b->len + extra;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 64;
	while (cap < need) {
		if (cap > SIZE_MAX / 2) {
			cap = need;
			break;
		}
		cap *= 2;
	}
	p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

/**
 * fy_buf_put() - append @n bytes from @p.
 * @b: the buffer.
 * @p: the bytes; may be NULL when @n is 0.
 * @n: how many.
 *
 * Return: 0, or -ENOMEM (the buffer is unchanged).
 */
int fy_buf_put(struct fy_buf *b, const void *p, size_t n)
{
	int rc;

	if (n == 0)
		return 0;
	rc = fy_buf_reserve(b, n);
	if (rc)
		return rc;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

/**
 * fy_buf_put_u32() - append @v as 4 little-endian bytes.
 * @b: the buffer.
 * @v: the value.
 *
 * Return: 0, or -ENOMEM.
 */
int fy_buf_put_u32(struct fy_buf *b, uint32_t v)
{
	uint8_t tmp[4];

	fy_put_u32(tmp, v);
	return fy_buf_put(b, tmp, sizeof(tmp));
}

/**
 * fy_buf_put_u64() - append @v as 8 little-endian bytes.
 * @b: the buffer.
 * @v: the value.
 *
 * Return: 0, or -ENOMEM.
 */
int fy_buf_put_u64(struct fy_buf *b, uint64_t v)
{
	uint8_t tmp[8];

	fy_put_u64(tmp, v);
	return fy_buf_put(b, tmp, sizeof(tmp));
}

/* Append a string of known length: u32 length, then the bytes, no NUL. */
static int buf_put_strn(struct fy_buf *b, const char *s, size_t n)
{
	int rc;

	if (n > UINT32_MAX)
		return -EMSGSIZE;
	/* Reserve both parts first so a failure never leaves half a string. */
	rc = fy_buf_reserve(b, 4 + n);
	if (rc)
		return rc;
	fy_buf_put_u32(b, (uint32_t)n);
	return fy_buf_put(b, s, n);
}

/**
 * fy_buf_put_str() - append a string: u32 length, then its bytes without
 * the terminating NUL.
 * @b: the buffer.
 * @s: a NUL-terminated string; NULL is encoded as "".
 *
 * Return: 0, -ENOMEM, or -EMSGSIZE for a string longer than 4 GiB.
 */
int fy_buf_put_str(struct fy_buf *b, const char *s)
{
	if (!s)
		s = "";
	return buf_put_strn(b, s, strlen(s));
}

/*
 * Append a string held in a fixed array of @cap bytes. The decoder accepts
 * at most @cap - 1 bytes for such a field, so an array without a NUL is an
 * encoding error rather than something the peer would reject later.
 */
static int buf_put_field(struct fy_buf *b, const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);

	if (n == cap)
		return -EINVAL;
	return buf_put_strn(b, s, n);
}

/* ---- decoding cursor ---- */

/**
 * fy_cur_init() - start decoding @len bytes at @p.
 * @c: the cursor.
 * @p: the body; may be NULL when @len is 0.
 * @len: its length.
 */
void fy_cur_init(struct fy_cur *c, const void *p, size_t len)
{
	c->p = p;
	c->len = len;
	c->off = 0;
	c->bad = false;
}

/*
 * Claim the next @n bytes. Fails (stickily) when fewer remain, so that a
 * decoder can read every field and check the outcome once at the end.
 */
static const uint8_t *cur_take(struct fy_cur *c, size_t n)
{
	const uint8_t *p;

	if (c->bad || n > c->len - c->off) {
		c->bad = true;
		return NULL;
	}
	p = c->p + c->off;
	c->off += n;
	return p;
}

/**
 * fy_cur_u32() - read a little-endian u32.
 * @c: the cursor.
 * @v: receives the value (0 on failure).
 *
 * Return: 0, or -EBADMSG when the body is too short or the cursor failed
 * before.
 */
int fy_cur_u32(struct fy_cur *c, uint32_t *v)
{
	const uint8_t *p = cur_take(c, 4);

	*v = p ? fy_get_u32(p) : 0;
	return p ? 0 : -EBADMSG;
}

/**
 * fy_cur_u64() - read a little-endian u64.
 * @c: the cursor.
 * @v: receives the value (0 on failure).
 *
 * Return: 0, or -EBADMSG.
 */
int fy_cur_u64(struct fy_cur *c, uint64_t *v)
{
	const uint8_t *p = cur_take(c, 8);

	*v = p ? fy_get_u64(p) : 0;
	return p ? 0 : -EBADMSG;
}

/**
 * fy_cur_i32() - read a signed 32-bit value stored as its two's-complement
 * u32.
 * @c: the cursor.
 * @v: receives the value (0 on failure).
 *
 * Return: 0, or -EBADMSG.
 */
int fy_cur_i32(struct fy_cur *c, int32_t *v)
{
	uint32_t u;
	int rc = fy_cur_u32(c, &u);

	/* Written out rather than cast: converting an out-of-range value to
	 * a signed type is implementation-defined in C11. */
	*v = u <= INT32_MAX ? (int32_t)u : -(int32_t)(UINT32_MAX - u) - 1;
	return rc;
}

/**
 * fy_cur_str() - read a string (u32 length + bytes) into @out.
 * @c: the cursor.
 * @out: receives the string, NUL-terminated ("" on failure).
 * @cap: size of @out; the string may have at most @cap - 1 bytes.
 *
 * A string containing a NUL byte is rejected too: the encoder never
 * produces one and the C string it would decode to would silently lose its
 * tail.
 *
 * Return: 0, or -EBADMSG.
 */
int fy_cur_str(struct fy_cur *c, char *out, size_t cap)
{
	const uint8_t *p;
	uint32_t n;

	if (cap)
		out[0] = '\0';
	if (fy_cur_u32(c, &n))
		return -EBADMSG;
	if (cap == 0 || n > cap - 1) {
		c->bad = true;
		return -EBADMSG;
	}
	p = cur_take(c, n);
	if (!p)
		return -EBADMSG;
	if (memchr(p, '\0', n)) {
		c->bad = true;
		return -EBADMSG;
	}
	memcpy(out, p, n);
	out[n] = '\0';
	return 0;
}

/**
 * fy_cur_bytes() - claim a run of @n bytes without copying.
 * @c: the cursor.
 * @out: receives a pointer into the body (NULL on failure).
 * @n: how many bytes.
 *
 * Return: 0, or -EBADMSG.
 */
int fy_cur_bytes(struct fy_cur *c, const uint8_t **out, size_t n)
{
	*out = cur_take(c, n);
	return *out ? 0 : -EBADMSG;
}

/**
 * fy_cur_done() - check that decoding consumed the whole body.
 * @c: the cursor.
 *
 * Trailing bytes are an error: a body is either exactly what this version
 * describes or it is malformed (extensions are new record types, not longer
 * bodies).
 *
 * Return: 0, or -EBADMSG.
 */
int fy_cur_done(const struct fy_cur *c)
{
	return !c->bad && c->off == c->len ? 0 : -EBADMSG;
}

/* ---- stream header ---- */

/**
 * fy_stream_hdr_encode() - write the 16-byte stream header of this format
 * version.
 * @out: receives the header.
 */
void fy_stream_hdr_encode(uint8_t out[FY_STREAM_HDR_SIZE])
{
	memcpy(out, FY_MAGIC, 8);
	fy_put_u16(out + 8, FY_FORMAT_VERSION);
	fy_put_u16(out + 10, 0);
	fy_put_u32(out + 12, XXH32(out, 12, 0));
}

/**
 * fy_stream_hdr_decode() - check a stream header.
 * @in: the 16 bytes read first from the main connection.
 * @version: receives the format version when magic and checksum are good
 *           (also on FERRY_EVERSION, so the caller can report it).
 *
 * The checksum is verified before the version so that a corrupted version
 * field is reported as corruption, not as an unsupported peer. No header
 * flags are defined yet, so any set flag is rejected as malformed.
 *
 * Return: 0, -EBADMSG (bad magic, checksum or flags), FERRY_EVERSION.
 */
int fy_stream_hdr_decode(const uint8_t in[FY_STREAM_HDR_SIZE],
			 uint16_t *version)
{
	if (memcmp(in, FY_MAGIC, 8) != 0)
		return -EBADMSG;
	if (fy_get_u32(in + 12) != XXH32(in, 12, 0))
		return -EBADMSG;
	*version = fy_get_u16(in + 8);
	if (*version != FY_FORMAT_VERSION)
		return FERRY_EVERSION;
	if (fy_get_u16(in + 10) != 0)
		return -EBADMSG;
	return 0;
}

/* ---- record framing ---- */

/**
 * fy_rec_hdr_encode() - write a record header.
 * @h: the header fields.
 * @out: receives 16 bytes.
 */
void fy_rec_hdr_encode(const struct fy_rec_hdr *h, uint8_t out[FY_REC_HDR_SIZE])
{
	fy_put_u32(out, h->type);
	fy_put_u32(out + 4, h->length);
	fy_put_u32(out + 8, h->seq);
	fy_put_u32(out + 12, h->flags);
}

/* The rules a header must follow, shared by the encoder and the decoder. */
static int rec_hdr_check(const struct fy_rec_hdr *h)
{
	if (fy_rec_number(h->type) == 0)
		return -EBADMSG;
	if (h->length > FY_REC_MAX_BODY)
		return -EMSGSIZE;
	if (h->flags & ~FY_RF_CSUM_HEAD)
		return -EBADMSG;
	/* Only memory records have a header worth protecting separately
	 * from their payload; on anything else the flag would leave control
	 * data unprotected. */
	if ((h->flags & FY_RF_CSUM_HEAD) && h->type != FY_REC_MEMORY)
		return -EBADMSG;
	return 0;
}

/**
 * fy_rec_hdr_decode() - decode and validate a record header.
 * @in: 16 bytes.
 * @h: receives the fields (filled even when validation fails, for error
 *     messages).
 *
 * The length is checked before anything is allocated or read for the body,
 * so a hostile length cannot make the reader commit memory.
 *
 * Return: 0, -EMSGSIZE (length above FY_REC_MAX_BODY), -EBADMSG (type
 * number 0, unknown flag bits, FY_RF_CSUM_HEAD on a non-memory record).
 */
int fy_rec_hdr_decode(const uint8_t in[FY_REC_HDR_SIZE], struct fy_rec_hdr *h)
{
	h->type = fy_get_u32(in);
	h->length = fy_get_u32(in + 4);
	h->seq = fy_get_u32(in + 8);
	h->flags = fy_get_u32(in + 12);
	return rec_hdr_check(h);
}

/**
 * fy_rec_csum_len() - how many body bytes the checksum of a record covers.
 * @h: a validated header.
 *
 * Return: the whole length, or at most FY_MEM_HDR_SIZE with FY_RF_CSUM_HEAD.
 */
size_t fy_rec_csum_len(const struct fy_rec_hdr *h, const uint8_t *body)
{
	struct fy_mem_hdr m;
	size_t meta;

	if (!(h->flags & FY_RF_CSUM_HEAD) || h->length <= FY_MEM_HDR_SIZE)
		return h->length;
	fy_mem_hdr_decode(body, &m);
	meta = fy_mem_meta_len(&m);
	return meta < h->length ? meta : h->length;
}

/**
 * fy_mem_meta_len() - the header and, with FY_MEMF_ZMAP, the zero map.
 * @m: a decoded memory header (its length need not be valid yet; an
 *     absurd length gives a meta longer than any record).
 */
size_t fy_mem_meta_len(const struct fy_mem_hdr *m)
{
	uint64_t pages = m->length / FY_MEM_PAGE;

	if (!(m->flags & FY_MEMF_ZMAP))
		return FY_MEM_HDR_SIZE;
	if (pages > ((uint64_t)FY_REC_MAX_BODY << 3))
		return (size_t)FY_REC_MAX_BODY + 1;
	return FY_MEM_HDR_SIZE + (size_t)((pages + 63) / 64) * 8;
}

/**
 * fy_csum_init() - allocate the state of an incremental checksum.
 * @c: the checksum.
 *
 * Return: 0, or -ENOMEM.
 */
int fy_csum_init(struct fy_csum *c)
{
	c->state = XXH3_createState();
	return c->state ? 0 : -ENOMEM;
}

/**
 * fy_csum_free() - release the state; harmless on a freed or failed one.
 * @c: the checksum.
 */
void fy_csum_free(struct fy_csum *c)
{
	if (c->state)
		XXH3_freeState(c->state);
	c->state = NULL;
}

/**
 * fy_csum_reset() - start the checksum of a new record.
 * @c: an initialised checksum.
 * @hdr: the record's 16 header bytes as on the wire.
 */
void fy_csum_reset(struct fy_csum *c, const uint8_t hdr[FY_REC_HDR_SIZE])
{
	XXH3_64bits_reset(c->state);
	XXH3_64bits_update(c->state, hdr, FY_REC_HDR_SIZE);
}

/**
 * fy_csum_update() - add the next covered body bytes.
 * @c: the checksum.
 * @p: the bytes.
 * @n: how many.
 */
void fy_csum_update(struct fy_csum *c, const void *p, size_t n)
{
	if (n)
		XXH3_64bits_update(c->state, p, n);
}

/**
 * fy_csum_digest() - the checksum of everything added since the reset.
 * @c: the checksum.
 *
 * Return: the XXH3-64 value to compare with the record's trailer.
 */
uint64_t fy_csum_digest(struct fy_csum *c)
{
	return XXH3_64bits_digest(c->state);
}

/**
 * fy_rec_csum() - one-shot checksum of a record held in memory.
 * @hdr: the 16 header bytes.
 * @body: the body; may be NULL when @covered is 0.
 * @covered: the covered body bytes (fy_rec_csum_len()).
 *
 * Return: the same value as fy_csum_reset/update/digest over the same bytes.
 */
uint64_t fy_rec_csum(const uint8_t hdr[FY_REC_HDR_SIZE], const void *body,
		     size_t covered)
{
	XXH3_state_t st;

	XXH3_INITSTATE(&st);
	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, hdr, FY_REC_HDR_SIZE);
	if (covered)
		XXH3_64bits_update(&st, body, covered);
	return XXH3_64bits_digest(&st);
}

/**
 * fy_rec_encode() - append a whole record to @out: header, body, zero
 * padding and checksum.
 * @out: the buffer (appended to; unchanged on failure).
 * @type: the record type, with FY_REC_OPTIONAL if it is optional.
 * @seq: request sequence number, echoed seq for a response, 0 for data.
 * @flags: FY_RF_* flags.
 * @body: the body, copied; may be NULL when @len is 0.
 * @len: its length.
 *
 * Return: 0, -ENOMEM, -EMSGSIZE (body above FY_REC_MAX_BODY), or -EINVAL
 * for a header a reader would reject (type number 0, unknown flags,
 * FY_RF_CSUM_HEAD on a non-memory record).
 */
int fy_rec_encode(struct fy_buf *out, uint32_t type, uint32_t seq,
		  uint32_t flags, const void *body, size_t len)
{
	struct fy_rec_hdr h = { type, 0, seq, flags };
	uint8_t *p;
	size_t padded;
	int rc;

	if (len > FY_REC_MAX_BODY)
		return -EMSGSIZE;
	h.length = (uint32_t)len;
	rc = rec_hdr_check(&h);
	if (rc)
		return rc == -EMSGSIZE ? rc : -EINVAL;
	rc = fy_buf_reserve(out, fy_rec_wire_size(h.length));
	if (rc)
		return rc;
	p = out->data + out->len;
	padded = fy_pad8(len);
	fy_rec_hdr_encode(&h, p);
	if (len)
		memcpy(p + FY_REC_HDR_SIZE, body, len);
	memset(p + FY_REC_HDR_SIZE + len, 0, padded - len);
	fy_put_u64(p + FY_REC_HDR_SIZE + padded,
		   fy_rec_csum(p, p + FY_REC_HDR_SIZE, fy_rec_csum_len(&h, p + FY_REC_HDR_SIZE)));
	out->len += fy_rec_wire_size(h.length);
	return 0;
}

/**
 * fy_rec_decode() - decode one whole record from a contiguous buffer.
 * @in: the bytes; may hold more than one record.
 * @len: how many bytes are available.
 * @h: receives the header.
 * @body: receives a pointer to the body inside @in (NULL on failure).
 * @consumed: receives the record's wire size (0 on failure).
 *
 * Padding is not covered by the checksum, so it is checked to be zero
 * separately: otherwise it would be an unprotected side channel that two
 * readers could disagree about.
 *
 * Return: 0, -EAGAIN (the buffer ends before the record does), -EBADMSG,
 * -EMSGSIZE, FERRY_ECHECKSUM.
 */
int fy_rec_decode(const uint8_t *in, size_t len, struct fy_rec_hdr *h,
		  const uint8_t **body, size_t *consumed)
{
	const uint8_t *b = in + FY_REC_HDR_SIZE;
	size_t wire, padded;
	int rc;

	*body = NULL;
	*consumed = 0;
	if (len < FY_REC_HDR_SIZE)
		return -EAGAIN;
	rc = fy_rec_hdr_decode(in, h);
	if (rc)
		return rc;
	wire = fy_rec_wire_size(h->length);
	if (len < wire)
		return -EAGAIN;
	padded = fy_pad8(h->length);
	for (size_t i = h->length; i < padded; i++)
		if (b[i] != 0)
			return -EBADMSG;
	if (fy_get_u64(b + padded) != fy_rec_csum(in, b, fy_rec_csum_len(h, b)))
		return FERRY_ECHECKSUM;
	*body = b;
	*consumed = wire;
	return 0;
}

/* ---- message bodies ---- */

/*
 * Encoders append to @b and, on failure, cut it back to where it was, so a
 * caller never sends half a message. They finish through this helper.
 */
static int enc_finish(struct fy_buf *b, size_t start, int rc)
{
	if (rc)
		b->len = start;
	return rc;
}

/**
 * fy_hello_encode() - append a HELLO body.
 * @b: the buffer.
 * @m: the message; its strings must be NUL-terminated within their arrays.
 *
 * Return: 0, -ENOMEM, -EINVAL (unterminated string).
 */
int fy_hello_encode(struct fy_buf *b, const struct fy_hello *m)
{
	size_t start = b->len;
	int rc;

	rc = fy_buf_put_u32(b, m->version_min);
	if (!rc)
		rc = fy_buf_put_u32(b, m->version_max);
	if (!rc)
		rc = fy_buf_put_u64(b, m->capabilities);
	if (!rc)
		rc = buf_put_field(b, m->boot_id, sizeof(m->boot_id));
	if (!rc)
		rc = buf_put_field(b, m->software, sizeof(m->software));
	return enc_finish(b, start, rc);
}

/**
 * fy_hello_decode() - decode a HELLO body.
 * @p: the body.
 * @n: its length.
 * @m: receives the message (zeroed first; unspecified on failure).
 *
 * The version range is not judged here: finding no common version is a
 * negotiation outcome (FERRY_EVERSION), not a malformed body.
 *
 * Return: 0, or -EBADMSG.
 */
int fy_hello_decode(const uint8_t *p, size_t n, struct fy_hello *m)
{
	struct fy_cur c;

	memset(m, 0, sizeof(*m));
	fy_cur_init(&c, p, n);
	fy_cur_u32(&c, &m->version_min);
	fy_cur_u32(&c, &m->version_max);
	fy_cur_u64(&c, &m->capabilities);
	fy_cur_str(&c, m->boot_id, sizeof(m->boot_id));
	fy_cur_str(&c, m->software, sizeof(m->software));
	return fy_cur_done(&c);
}

/**
 * fy_hello_reply_encode() - append the body of the OK answering HELLO.
 * @b: the buffer.
 * @m: the reply.
 *
 * Return: 0, -ENOMEM, -EINVAL (unterminated string).
 */
int fy_hello_reply_encode(struct fy_buf *b, const struct fy_hello_reply *m)
{
	size_t start = b->len;
	int rc;

	rc = fy_buf_put_u32(b, m->version);
	if (!rc)
		rc = fy_buf_put_u64(b, m->capabilities);
	if (!rc)
		rc = fy_buf_put_u64(b, m->session_id);
	if (!rc)
		rc = fy_buf_put(b, m->token, sizeof(m->token));
	if (!rc)
		rc = buf_put_field(b, m->boot_id, sizeof(m->boot_id));
	if (!rc)
		rc = buf_put_field(b, m->software, sizeof(m->software));
	return enc_finish(b, start, rc);
}

/**
 * fy_hello_reply_decode() - decode the body of the OK answering HELLO.
 * @p: the body.
 * @n: its length.
 * @m: receives the reply (zeroed first).
 *
 * Return: 0, or -EBADMSG.
 */
int fy_hello_reply_decode(const uint8_t *p, size_t n, struct fy_hello_reply *m)
{
	const uint8_t *token;
	struct fy_cur c;

	memset(m, 0, sizeof(*m));
	fy_cur_init(&c, p, n);
	fy_cur_u32(&c, &m->version);
	fy_cur_u64(&c, &m->capabilities);
	fy_cur_u64(&c, &m->session_id);
	if (fy_cur_bytes(&c, &token, sizeof(m->token)) == 0)
		memcpy(m->token, token, sizeof(m->token));
	fy_cur_str(&c, m->boot_id, sizeof(m->boot_id));
	fy_cur_str(&c, m->software, sizeof(m->software));
	return fy_cur_done(&c);
}

/**
 * fy_config_encode() - append a CONFIG body.
 * @b: the buffer.
 * @m: the configuration.
 *
 * Only what would make the encoding itself impossible is checked here;
 * the decoder applies the full rules, so a bad layout is caught by the
 * peer with a clear error.
 *
 * Return: 0, -ENOMEM, -EINVAL (too many regions, unterminated name).
 */
int fy_config_encode(struct fy_buf *b, const struct fy_config_msg *m)
{
	size_t start = b->len;
	int rc;

	if (m->nregions > FY_MAX_REGIONS)
		return -EINVAL;
	rc = fy_buf_put_u32(b, m->page_size);
	if (!rc)
		rc = fy_buf_put_u32(b, m->nregions);
	for (uint32_t i = 0; !rc && i < m->nregions; i++) {
		const struct fy_region_desc *r = &m->regions[i];

		rc = fy_buf_put_u64(b, r->gpa);
		if (!rc)
			rc = fy_buf_put_u64(b, r->size);
		if (!rc)
			rc = buf_put_field(b, r->name, sizeof(r->name));
	}
	return enc_finish(b, start, rc);
}

/* A page size is a power of two from 4 KiB to 1 GiB (x86 and arm64 pages). */
static bool page_size_valid(uint32_t ps)
{
	return ps >= 4096 && ps <= (1u << 30) && (ps & (ps - 1)) == 0;
}

/* A region is page aligned, not empty and does not wrap the address space. */
static bool region_valid(const struct fy_region_desc *r, uint32_t page_size)
{
	if (r->size == 0 || r->size % page_size || r->gpa % page_size)
		return false;
	return r->size <= UINT64_MAX - r->gpa;
}

/**
 * fy_config_decode() - decode and validate a CONFIG body.
 * @p: the body.
 * @n: its length.
 * @m: receives the configuration (zeroed first).
 *
 * The region count is checked before any region is read, so a hostile
 * count can neither overrun @m->regions nor make the decoder loop long.
 *
 * Return: 0, or -EBADMSG (truncated, trailing bytes, more than
 * FY_MAX_REGIONS regions, bad page size, unaligned, empty or wrapping
 * region, name too long).
 */
int fy_config_decode(const uint8_t *p, size_t n, struct fy_config_msg *m)
{
	struct fy_cur c;

	memset(m, 0, sizeof(*m));
	fy_cur_init(&c, p, n);
	fy_cur_u32(&c, &m->page_size);
	fy_cur_u32(&c, &m->nregions);
	if (c.bad || m->nregions > FY_MAX_REGIONS ||
	    !page_size_valid(m->page_size))
		return -EBADMSG;
	for (uint32_t i = 0; i < m->nregions; i++) {
		struct fy_region_desc *r = &m->regions[i];

		fy_cur_u64(&c, &r->gpa);
		fy_cur_u64(&c, &r->size);
		fy_cur_str(&c, r->name, sizeof(r->name));
		if (c.bad || !region_valid(r, m->page_size))
			return -EBADMSG;
	}
	return fy_cur_done(&c);
}

/**
 * fy_pass_begin_encode() - append a PASS_BEGIN body.
 * @b: the buffer.
 * @m: the message.
 *
 * Return: 0, or -ENOMEM.
 */
int fy_pass_begin_encode(struct fy_buf *b, const struct fy_pass_begin *m)
{
	size_t start = b->len;
	int rc;

	rc = fy_buf_put_u32(b, m->pass);
	if (!rc)
		rc = fy_buf_put_u32(b, m->final);
	if (!rc)
		rc = fy_buf_put_u64(b, m->planned);
	return enc_finish(b, start, rc);
}

/**
 * fy_pass_begin_decode() - decode a PASS_BEGIN body.
 * @p: the body.
 * @n: its length.
 * @m: receives the message.
 *
 * Return: 0, or -EBADMSG.
 */
int fy_pass_begin_decode(const uint8_t *p, size_t n, struct fy_pass_begin *m)
{
	struct fy_cur c;

	memset(m, 0, sizeof(*m));
	fy_cur_init(&c, p, n);
	fy_cur_u32(&c, &m->pass);
	fy_cur_u32(&c, &m->final);
	fy_cur_u64(&c, &m->planned);
	return fy_cur_done(&c);
}

/**
 * fy_pass_end_encode() - append a PASS_END body: pass, number of
 * connection entries, totals, then the entries.
 * @b: the buffer.
 * @m: the message; m->nconn entries of m->conn are written.
 *
 * Return: 0, -ENOMEM, or -EINVAL for more than FY_PASS_MAX_CONN entries.
 */
int fy_pass_end_encode(struct fy_buf *b, const struct fy_pass_end *m)
{
	size_t start = b->len;
	int rc;

	if (m->nconn > FY_PASS_MAX_CONN)
		return -EINVAL;
	rc = fy_buf_put_u32(b, m->pass);
	if (!rc)
		rc = fy_buf_put_u32(b, m->nconn);
	if (!rc)
		rc = fy_buf_put_u64(b, m->records);
	if (!rc)
		rc = fy_buf_put_u64(b, m->bytes);
	for (uint32_t i = 0; !rc && i < m->nconn; i++) {
		rc = fy_buf_put_u32(b, m->conn[i].index);
		if (!rc)
			rc = fy_buf_put_u32(b, 0);
		if (!rc)
			rc = fy_buf_put_u64(b, m->conn[i].records);
		if (!rc)
			rc = fy_buf_put_u64(b, m->conn[i].bytes);
	}
	return enc_finish(b, start, rc);
}

/* The entries of PASS_END: each connection once, by increasing index,
 * reserved words zero, and adding up to the totals. */
static int pass_conns_valid(const struct fy_pass_end *m,
			    const uint32_t *reserved)
{
	uint64_t records = 0, bytes = 0;

	for (uint32_t i = 0; i < m->nconn; i++) {
		const struct fy_pass_conn *e = &m->conn[i];

		if (reserved[i] || e->index >= FY_PASS_MAX_CONN ||
		    (i && e->index <= m->conn[i - 1].index))
			return -EBADMSG;
		if (e->records > UINT64_MAX - records ||
		    e->bytes > UINT64_MAX - bytes)
			return -EBADMSG;
		records += e->records;
		bytes += e->bytes;
	}
	if (m->nconn && (records != m->records || bytes != m->bytes))
		return -EBADMSG;
	return 0;
}

/**
 * fy_pass_end_decode() - decode a PASS_END body.
 * @p: the body.
 * @n: its length.
 * @m: receives the message.
 *
 * Return: 0, or -EBADMSG (also for entries out of order, duplicated, with
 * reserved bits set, or not adding up to the totals).
 */
int fy_pass_end_decode(const uint8_t *p, size_t n, struct fy_pass_end *m)
{
	uint32_t reserved[FY_PASS_MAX_CONN];
	struct fy_cur c;

	memset(m, 0, sizeof(*m));
	fy_cur_init(&c, p, n);
	fy_cur_u32(&c, &m->pass);
	fy_cur_u32(&c, &m->nconn);
	fy_cur_u64(&c, &m->records);
	fy_cur_u64(&c, &m->bytes);
	if (c.bad || m->nconn > FY_PASS_MAX_CONN)
		return -EBADMSG;
	for (uint32_t i = 0; i < m->nconn; i++) {
		fy_cur_u32(&c, &m->conn[i].index);
		fy_cur_u32(&c, &reserved[i]);
		fy_cur_u64(&c, &m->conn[i].records);
		fy_cur_u64(&c, &m->conn[i].bytes);
	}
	if (fy_cur_done(&c))
		return -EBADMSG;
	return pass_conns_valid(m, reserved);
}

/**
 * fy_pass_ack_encode() - append the OK body answering PASS_END: the count
 * of lost connections, then their indices; nothing at all when none was
 * lost (the answer of a single connection, and of version-1 peers).
 * @b: the buffer.
 * @m: the message.
 *
 * Return: 0, -ENOMEM, or -EINVAL for too many entries.
 */
int fy_pass_ack_encode(struct fy_buf *b, const struct fy_pass_ack *m)
{
	size_t start = b->len;
	int rc;

	if (m->nlost > FY_PASS_MAX_CONN - 1)
		return -EINVAL;
	if (!m->nlost)
		return 0;
	rc = fy_buf_put_u32(b, m->nlost);
	for (uint32_t i = 0; !rc && i < m->nlost; i++)
		rc = fy_buf_put_u32(b, m->lost[i]);
	return enc_finish(b, start, rc);
}

/**
 * fy_pass_ack_decode() - decode the OK body answering PASS_END. An empty
 * body means nothing was lost.
 * @p: the body.
 * @n: its length.
 * @m: receives the message.
 *
 * Return: 0, or -EBADMSG (also for a count of 0, which is written as an
 * empty body, the main connection's index 0, an index past the last
 * connection, or indices not strictly increasing).
 */
int fy_pass_ack_decode(const uint8_t *p, size_t n, struct fy_pass_ack *m)
{
	struct fy_cur c;

	memset(m, 0, sizeof(*m));
	if (!n)
		return 0;
	fy_cur_init(&c, p, n);
	fy_cur_u32(&c, &m->nlost);
	if (c.bad || !m->nlost || m->nlost > FY_PASS_MAX_CONN - 1)
		return -EBADMSG;
	for (uint32_t i = 0; i < m->nlost; i++) {
		fy_cur_u32(&c, &m->lost[i]);
		if (c.bad || !m->lost[i] || m->lost[i] >= FY_PASS_MAX_CONN ||
		    (i && m->lost[i] <= m->lost[i - 1]))
			return -EBADMSG;
	}
	return fy_cur_done(&c);
}

/**
 * fy_error_encode() - append an ERROR (or ABORT) body: code, message.
 * @b: the buffer.
 * @m: the message.
 *
 * Return: 0, -ENOMEM, -EINVAL (unterminated message).
 */
int fy_error_encode(struct fy_buf *b, const struct fy_error_msg *m)
{
	size_t start = b->len;
	int rc;

	/* Signed to unsigned conversion is defined (modulo 2^32), so this
	 * is the two's-complement bit pattern on any host. */
	rc = fy_buf_put_u32(b, (uint32_t)m->code);
	if (!rc)
		rc = buf_put_field(b, m->message, sizeof(m->message));
	return enc_finish(b, start, rc);
}

/**
 * fy_error_decode() - decode an ERROR (or ABORT) body.
 * @p: the body.
 * @n: its length.
 * @m: receives the message.
 *
 * Return: 0, or -EBADMSG.
 */
int fy_error_decode(const uint8_t *p, size_t n, struct fy_error_msg *m)
{
	struct fy_cur c;

	memset(m, 0, sizeof(*m));
	fy_cur_init(&c, p, n);
	fy_cur_i32(&c, &m->code);
	fy_cur_str(&c, m->message, sizeof(m->message));
	return fy_cur_done(&c);
}

/**
 * fy_running_encode() - append the body of the OK answering RELEASED.
 * @b: the buffer.
 * @m: the message.
 *
 * Return: 0, -ENOMEM, -EINVAL (unterminated note).
 */
int fy_running_encode(struct fy_buf *b, const struct fy_running *m)
{
	size_t start = b->len;
	int rc;

	rc = fy_buf_put_u64(b, m->resumed_ns);
	if (!rc)
		rc = buf_put_field(b, m->note, sizeof(m->note));
	return enc_finish(b, start, rc);
}

/**
 * fy_running_decode() - decode the body of the OK answering RELEASED.
 * @p: the body.
 * @n: its length.
 * @m: receives the message.
 *
 * Return: 0, or -EBADMSG.
 */
int fy_running_decode(const uint8_t *p, size_t n, struct fy_running *m)
{
	struct fy_cur c;

	memset(m, 0, sizeof(*m));
	fy_cur_init(&c, p, n);
	fy_cur_u64(&c, &m->resumed_ns);
	fy_cur_str(&c, m->note, sizeof(m->note));
	return fy_cur_done(&c);
}

/**
 * fy_join_encode() - encode the body of JOIN.
 * @b: the buffer to append to.
 * @m: the message.
 *
 * Return: 0, or -ENOMEM.
 */
int fy_join_encode(struct fy_buf *b, const struct fy_join *m)
{
	size_t start = b->len;
	int rc;

	rc = fy_buf_put_u64(b, m->session_id);
	if (!rc)
		rc = fy_buf_put(b, m->token, sizeof(m->token));
	if (!rc)
		rc = fy_buf_put_u32(b, m->index);
	if (!rc)
		rc = fy_buf_put_u32(b, m->channels);
	return enc_finish(b, start, rc);
}

/**
 * fy_keepalive_encode() - encode the body of KEEPALIVE (wire.h).
 */
int fy_keepalive_encode(struct fy_buf *b, uint32_t interval_ms)
{
	size_t start = b->len;
	int rc = fy_buf_put_u32(b, interval_ms);

	if (!rc)
		rc = fy_buf_put_u32(b, 0);
	return enc_finish(b, start, rc);
}

/**
 * fy_keepalive_decode() - decode the body of KEEPALIVE. Bytes past the
 * first 8 are a later version's and are ignored, as the record is.
 * @p: the body.
 * @n: its length.
 * @interval_ms: receives the sender's period.
 *
 * Return: 0, or -EBADMSG.
 */
int fy_keepalive_decode(const uint8_t *p, size_t n, uint32_t *interval_ms)
{
	uint32_t reserved;
	struct fy_cur c;

	*interval_ms = 0;
	fy_cur_init(&c, p, n);
	fy_cur_u32(&c, interval_ms);
	fy_cur_u32(&c, &reserved);
	return c.bad || !*interval_ms ? -EBADMSG : 0;
}

/**
 * fy_join_decode() - decode the body of JOIN.
 * @p: the body.
 * @n: its length.
 * @m: receives the message.
 *
 * Return: 0, or -EBADMSG (also for an index outside 1..channels-1 or more
 * than 64 channels).
 */
int fy_join_decode(const uint8_t *p, size_t n, struct fy_join *m)
{
	const uint8_t *tok;
	struct fy_cur c;

	memset(m, 0, sizeof(*m));
	fy_cur_init(&c, p, n);
	fy_cur_u64(&c, &m->session_id);
	if (!fy_cur_bytes(&c, &tok, sizeof(m->token)))
		memcpy(m->token, tok, sizeof(m->token));
	fy_cur_u32(&c, &m->index);
	fy_cur_u32(&c, &m->channels);
	if (fy_cur_done(&c) || m->channels > 64 || m->index == 0 ||
	    m->index >= m->channels)
		return -EBADMSG;
	return 0;
}

/**
 * fy_mem_hdr_encode() - write the fixed header of a memory record body.
 * @m: the header.
 * @out: receives FY_MEM_HDR_SIZE bytes.
 */
void fy_mem_hdr_encode(const struct fy_mem_hdr *m, uint8_t out[FY_MEM_HDR_SIZE])
{
	fy_put_u32(out, m->region);
	fy_put_u32(out + 4, m->flags);
	fy_put_u64(out + 8, m->offset);
	fy_put_u64(out + 16, m->length);
}

/**
 * fy_mem_hdr_decode() - read the fixed header of a memory record body.
 * @in: FY_MEM_HDR_SIZE bytes.
 * @m: receives the header.
 *
 * Only the layout is decoded: whether the range lies inside a configured
 * region is for the receiver to check against its own regions, never
 * against anything the sender said.
 */
void fy_mem_hdr_decode(const uint8_t in[FY_MEM_HDR_SIZE], struct fy_mem_hdr *m)
{
	m->region = fy_get_u32(in);
	m->flags = fy_get_u32(in + 4);
	m->offset = fy_get_u64(in + 8);
	m->length = fy_get_u64(in + 16);
}

/**
 * fy_rec_name() - a short name for a record type, for logs and errors.
 * @type: the type as on the wire.
 * @buf: where an unknown type is formatted ("0x7123", "0x7123?" when
 *       optional); may be NULL.
 * @len: size of @buf.
 *
 * Types are known by their exact value, optional bit included, the same
 * way the protocol classifies them.
 *
 * Return: a static name, @buf, or "?" when @buf cannot hold anything;
 * never NULL.
 */
const char *fy_rec_name(uint32_t type, char *buf, size_t len)
{
	/* On the enum, so that a record type without a name does not
	 * compile (-Wswitch). */
	switch ((enum fy_rec_type)type) {
	case FY_REC_HELLO:	return "HELLO";
	case FY_REC_CONFIG:	return "CONFIG";
	case FY_REC_PASS_BEGIN:	return "PASS_BEGIN";
	case FY_REC_PASS_END:	return "PASS_END";
	case FY_REC_STATE:	return "STATE";
	case FY_REC_SWITCHOVER:	return "SWITCHOVER";
	case FY_REC_RELEASED:	return "RELEASED";
	case FY_REC_ABORT:	return "ABORT";
	case FY_REC_JOIN:	return "JOIN";
	case FY_REC_INDEX:	return "INDEX";
	case FY_REC_FOOTER:	return "FOOTER";
	case FY_REC_OK:		return "OK";
	case FY_REC_ERROR:	return "ERROR";
	case FY_REC_MEMORY:	return "MEMORY";
	case FY_REC_DISCARD:	return "DISCARD";
	case FY_REC_POSTCOPY:	return "POSTCOPY";
	case FY_REC_PAGE_REQ:	return "PAGE_REQ";
	case FY_REC_POSTCOPY_END: return "POSTCOPY_END";
	case FY_REC_RESUME:	return "RESUME";
	case FY_REC_MEMORY_FDS:	return "MEMORY_FDS";
	case FY_REC_DEVICE_FDS:	return "DEVICE_FDS";
	case FY_REC_KEEPALIVE:	return "KEEPALIVE";
	}
	if (!buf || len == 0)
		return "?";
	snprintf(buf, len, "0x%x%s", fy_rec_number(type),
		 fy_rec_optional(type) ? "?" : "");
	return buf;
}
