// SPDX-License-Identifier: MIT
/*
 * json.c - a small JSON writer for the inspector's items. Keys are the
 * inspector's own (plain ASCII); every string that comes from a stream is
 * escaped by the state layer's escaper, so any bytes give valid JSON.
 */
#include "inspect/inspect.h"
#include "state/state.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void put(struct fy_js *j, const void *p, size_t n)
{
	if (!j->err && fy_buf_put(&j->b, p, n))
		j->err = -ENOMEM;
}

/**
 * fy_js_reset() - start a new text in the same buffer.
 * @j: the writer (zeroed before its first use).
 */
void fy_js_reset(struct fy_js *j)
{
	fy_buf_reset(&j->b);
	j->err = 0;
	j->first = true;
}

/**
 * fy_js_free() - release the buffer.
 * @j: the writer.
 */
void fy_js_free(struct fy_js *j)
{
	fy_buf_free(&j->b);
	j->err = 0;
}

/**
 * fy_js_raw() - append text as it is.
 * @j: the writer.
 * @s: the text.
 * @n: its length.
 */
void fy_js_raw(struct fy_js *j, const char *s, size_t n)
{
	put(j, s, n);
}

/**
 * fy_js_open() - open an object or an array (as a value: after a key, in
 * an array, or at the top).
 * @j: the writer.
 * @c: '{' or '['.
 */
void fy_js_open(struct fy_js *j, char c)
{
	put(j, &c, 1);
	j->first = true;
}

/**
 * fy_js_close() - close the innermost object or array.
 * @j: the writer.
 * @c: '}' or ']'.
 */
void fy_js_close(struct fy_js *j, char c)
{
	put(j, &c, 1);
	j->first = false;
}

/**
 * fy_js_key() - start a member (@key non-NULL) or an array element (NULL),
 * writing the separator the position needs.
 * @j: the writer.
 * @key: the member name, plain ASCII, or NULL.
 */
void fy_js_key(struct fy_js *j, const char *key)
{
	if (!j->first)
		put(j, ",", 1);
	j->first = false;
	if (!key)
		return;
	put(j, "\"", 1);
	put(j, key, strlen(key));
	put(j, "\":", 2);
}

static void fmt(struct fy_js *j, const char *f, ...)
	__attribute__((format(printf, 2, 3)));

static void fmt(struct fy_js *j, const char *f, ...)
{
	char tmp[64];
	va_list ap;
	int n;

	va_start(ap, f);
	n = vsnprintf(tmp, sizeof(tmp), f, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < sizeof(tmp))
		put(j, tmp, (size_t)n);
}

/**
 * fy_js_u64() - a member (or element) holding an unsigned number.
 * @j: the writer.
 * @key: the name, or NULL in an array.
 * @v: the value.
 */
void fy_js_u64(struct fy_js *j, const char *key, uint64_t v)
{
	fy_js_key(j, key);
	fmt(j, "%" PRIu64, v);
}

/**
 * fy_js_i64() - a member (or element) holding a signed number.
 * @j: the writer.
 * @key: the name, or NULL in an array.
 * @v: the value.
 */
void fy_js_i64(struct fy_js *j, const char *key, int64_t v)
{
	fy_js_key(j, key);
	fmt(j, "%" PRId64, v);
}

/**
 * fy_js_bool() - a member (or element) holding true or false.
 * @j: the writer.
 * @key: the name, or NULL in an array.
 * @v: the value.
 */
void fy_js_bool(struct fy_js *j, const char *key, bool v)
{
	fy_js_key(j, key);
	put(j, v ? "true" : "false", v ? 4 : 5);
}

/**
 * fy_js_str() - a member (or element) holding a string of any bytes.
 * @j: the writer.
 * @key: the name, or NULL in an array.
 * @s: the bytes.
 * @n: their count.
 */
void fy_js_str(struct fy_js *j, const char *key, const void *s, size_t n)
{
	fy_js_key(j, key);
	if (!j->err && fy_json_put_str(&j->b, s, n))
		j->err = -ENOMEM;
}

/**
 * fy_js_cstr() - fy_js_str() of a NUL-terminated string.
 * @j: the writer.
 * @key: the name, or NULL in an array.
 * @s: the string.
 */
void fy_js_cstr(struct fy_js *j, const char *key, const char *s)
{
	fy_js_str(j, key, s, strlen(s));
}

/**
 * fy_js_hex() - a member holding bytes as a lowercase hex string.
 * @j: the writer.
 * @key: the name, or NULL in an array.
 * @p: the bytes.
 * @n: their count.
 */
void fy_js_hex(struct fy_js *j, const char *key, const uint8_t *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	char two[2];

	fy_js_key(j, key);
	put(j, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		two[0] = digits[p[i] >> 4];
		two[1] = digits[p[i] & 15];
		put(j, two, 2);
	}
	put(j, "\"", 1);
}

/**
 * fy_js_json() - a member holding a value that is already JSON text.
 * @j: the writer.
 * @key: the name, or NULL in an array.
 * @json: the text.
 * @n: its length.
 */
void fy_js_json(struct fy_js *j, const char *key, const char *json, size_t n)
{
	fy_js_key(j, key);
	put(j, json, n);
}

/**
 * fy_js_text() - the text so far, NUL-terminated.
 * @j: the writer.
 *
 * Return: the text (valid until the writer changes), or NULL if an
 * allocation failed.
 */
const char *fy_js_text(struct fy_js *j)
{
	put(j, "", 1);
	if (j->err)
		return NULL;
	j->b.len--; /* the NUL is not part of the text */
	return (const char *)j->b.data;
}
