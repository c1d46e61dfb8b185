// SPDX-License-Identifier: MIT
/*
 * fuzz_state.c - libFuzzer harness for the device-state reader (src/state):
 * the input is a state section, the body of a STATE record. Placeholder
 * checksums in it are filled in (fuzz_common.h).
 *
 * It goes through the three readers a destination or an inspector runs:
 *  - fy_state_dump_json() and fy_state_dump_schemas_json(), which decode
 *    with the schemas the section carries: on success the text must be
 *    valid JSON (json-c parses it);
 *  - ferry_state_load() into objects of the local types (state_dev.h),
 *    each allocated at its exact size: nothing may be written past them,
 *    and every capacity (array counts, byte lengths, terminated strings)
 *    holds afterwards.
 * Cross-checks: the loader and the dumper walk sections the same way, so
 * a section the loader accepts is one the dumper accepts; and a loaded
 * object saved again, loaded again and saved again gives the same bytes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ferry.h"
#include "fuzz_common.h"
#include "state/state.h"
#include "state_dev.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void valid_json(const char *what, const struct fy_buf *b)
{
	json_tokener *tok = json_tokener_new();
	json_object *o;

	if (!tok)
		return;
	o = json_tokener_parse_ex(tok, (const char *)b->data, (int)b->len);
	FZ_ASSERT(o && json_tokener_get_error(tok) == json_tokener_success,
		  "%s is not valid JSON: %.*s", what, (int)b->len, b->data);
	json_object_put(o);
	json_tokener_free(tok);
}

static int dump(const uint8_t *p, size_t n)
{
	struct fy_buf b;
	char err[FY_STATE_MSG_MAX];
	int rc;

	fy_buf_init(&b);
	rc = fy_state_dump_json(p, n, &b, err, sizeof(err));
	if (!rc)
		valid_json("dump", &b);
	else
		FZ_ASSERT(rc < 0 && b.len == 0, "failed dump left output (%d)",
			  rc);
	fy_buf_reset(&b);
	if (!fy_state_dump_schemas_json(p, n, &b, err, sizeof(err)))
		valid_json("schema dump", &b);
	fy_buf_free(&b);
	return rc;
}

/* Save @d (of @t) as the whole section in @out. */
static int save_one(const struct ferry_device_type *t, void *d,
		    struct fy_buf *out)
{
	char err[FY_STATE_MSG_MAX];
	int rc = fy_state_save(out, t, "dev0", d, err, sizeof(err));

	return rc ? rc : fy_state_end(out, err, sizeof(err));
}

/* Save, load, save: a loaded object survives its own round trip. */
static void round_trip(struct fz_dev *d)
{
	struct fz_dev *again = calloc(1, sizeof(*again));
	struct ferry_state_binding b = { &fz_dev_v1, "dev0", again, 0 };
	struct fy_buf one, two;
	char err[FY_STATE_MSG_MAX];
	int rc;

	if (!again)
		return;
	fy_buf_init(&one);
	fy_buf_init(&two);
	rc = save_one(&fz_dev_v1, d, &one);
	FZ_ASSERT(rc == 0, "a loaded object does not save (%d)", rc);
	rc = ferry_state_load(one.data, one.len, &b, 1, err, sizeof(err));
	FZ_ASSERT(rc == 0, "a saved object does not load (%d): %s", rc, err);
	rc = save_one(&fz_dev_v1, again, &two);
	FZ_ASSERT(rc == 0 && one.len == two.len &&
			  !memcmp(one.data, two.data, one.len),
		  "save(load(save(x))) differs from save(x)");
	fy_buf_free(&one);
	fy_buf_free(&two);
	free(again);
}

static int load(const uint8_t *p, size_t n)
{
	struct fz_dev *d0 = calloc(1, sizeof(*d0));
	struct fz_dev *d1 = calloc(1, sizeof(*d1));
	struct fz_small *s0 = calloc(1, sizeof(*s0));
	char err[FY_STATE_MSG_MAX];
	int rc = -ENOMEM;

	if (d0 && d1 && s0) {
		const struct ferry_state_binding b[] = {
			{ &fz_dev_v1, "dev0", d0, 0 },
			{ &fz_dev_v1, "dev1", d1, FERRY_BINDING_OPTIONAL },
			{ &fz_small_type, "small0", s0, FERRY_BINDING_OPTIONAL },
		};

		rc = ferry_state_load(p, n, b, 3, err, sizeof(err));
		if (getenv("FUZZ_VERBOSE"))
			fprintf(stderr, "load: %d %s\n", rc, rc ? err : "");
		fz_dev_check(d0);
		fz_dev_check(d1);
		fz_small_check(s0);
		if (!rc)
			round_trip(d0);
	}
	free(d0);
	free(d1);
	free(s0);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *in = malloc(size ? size : 1);
	int drc, lrc;

	if (!in)
		return 0;
	memcpy(in, data, size);
	fz_fix_checksums(in, size, false);
	drc = dump(in, size);
	lrc = load(in, size);
	FZ_ASSERT(lrc != 0 || drc == 0,
		  "the loader accepted a section the dumper refuses (%d)", drc);
	free(in);
	return 0;
}
