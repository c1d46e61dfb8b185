// SPDX-License-Identifier: MIT
/*
 * dirtyscan - how long turning a VMM's dirty bitmap into a range list
 * takes, for a 12 TiB guest at 4 KiB pages: a 384 MiB bitmap of
 * 3,221,225,472 bits. Cases: clean, and 0.1%, 1% and 5% of the pages dirty,
 * either spread (every bit set independently) or clustered (runs of 64 to
 * 512 consecutive pages). Each case is scanned with fy_bitmap_to_ranges()
 * into one struct fy_ranges reused (cleared) from run to run, as the
 * engine does between passes; the clean and 1% cases are also scanned bit
 * by bit, the obvious loop, for contrast.
 *
 * usage: dirtyscan [--runs N] [--naive-runs N] [--bits N] [--no-thp]
 *                  [--no-naive]
 * prints a table, then one JSON line per case and method:
 *   {"bench":"dirtyscan","case":"1%-spread","method":"ranges",...}
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "memory/memory.h"

#define DEFAULT_BITS 3221225472ull /* 12 TiB / 4 KiB */
#define MAX_RUNS 101
#define RUN_MIN 64
#define RUN_MAX 512

struct scase {
	const char *name;
	double dirty; /* fraction of pages */
	bool clustered;
	bool naive;   /* also run the bit-by-bit loop */
};

static const struct scase cases[] = {
	{ "0%", 0, false, true },
	{ "0.1%-spread", 0.001, false, false },
	{ "0.1%-clustered", 0.001, true, false },
	{ "1%-spread", 0.01, false, true },
	{ "1%-clustered", 0.01, true, true },
	{ "5%-spread", 0.05, false, false },
	{ "5%-clustered", 0.05, true, false },
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

struct result {
	const char *method;
	uint64_t set_bits, ranges;
	double med, min, max;
	unsigned int runs;
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static uint64_t rng(uint64_t *s)
{
	uint64_t x = (*s += 0x9e3779b97f4a7c15ull);

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Uniform in (0, 1]. */
static double unit(uint64_t *s)
{
	return ((double)(rng(s) >> 11) + 1.0) / 9007199254740992.0;
}

static void set_run(uint64_t *bm, uint64_t start, uint64_t len)
{
	while (len) {
		unsigned int b = (unsigned int)(start % 64);
		uint64_t n = 64 - b < len ? 64 - b : len;
		uint64_t mask = n == 64 ? ~UINT64_C(0) :
					  ((UINT64_C(1) << n) - 1) << b;

		bm[start / 64] |= mask;
		start += n;
		len -= n;
	}
}

/*
 * Spread: every bit set with probability p, drawn as geometric gaps so the
 * bitmap is written in order. Clustered: runs of RUN_MIN..RUN_MAX pages
 * separated by uniform gaps whose mean gives the same density.
 */
static void generate(uint64_t *bm, uint64_t bits, const struct scase *c)
{
	uint64_t s = 0x6469727479ull, pos = 0;
	double mean_run = (RUN_MIN + RUN_MAX) / 2.0, mean_gap;

	memset(bm, 0, (bits + 63) / 64 * 8);
	if (c->dirty <= 0)
		return;
	if (!c->clustered) {
		double l1p = log1p(-c->dirty);

		for (;;) {
			pos += (uint64_t)floor(log(unit(&s)) / l1p);
			if (pos >= bits)
				return;
			bm[pos / 64] |= UINT64_C(1) << (pos % 64);
			pos++;
		}
	}
	mean_gap = mean_run * (1 - c->dirty) / c->dirty;
	for (;;) {
		uint64_t gap = (uint64_t)(unit(&s) * 2 * mean_gap);
		uint64_t len = RUN_MIN + rng(&s) % (RUN_MAX - RUN_MIN + 1);

		pos += gap;
		if (pos >= bits)
			return;
		if (len > bits - pos)
			len = bits - pos;
		set_run(bm, pos, len);
		pos += len + 1; /* keep runs apart */
	}
}

static uint64_t popcount(const uint64_t *bm, uint64_t bits)
{
	uint64_t n = 0, w;

	for (w = 0; w < (bits + 63) / 64; w++)
		n += (uint64_t)__builtin_popcountll(bm[w]);
	return n;
}

/* The obvious loop: test every bit, add every set page. */
static int naive_scan(struct fy_ranges *r, const uint64_t *bm, uint64_t bits)
{
	uint64_t i;

	for (i = 0; i < bits; i++) {
		if ((bm[i / 64] >> (i % 64)) & 1) {
			int rc = fy_ranges_add(r, 0, i * FY_PAGE_SIZE, FY_PAGE_SIZE);

			if (rc)
				return rc;
		}
	}
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int measure(struct fy_ranges *r, const uint64_t *bm, uint64_t bits,
		   bool naive, unsigned int runs, struct result *res)
{
	double t[MAX_RUNS];
	unsigned int i;

	for (i = 0; i < runs; i++) {
		double t0;
		int rc;

		fy_ranges_clear(r);
		t0 = now_ms();
		rc = naive ? naive_scan(r, bm, bits) :
			     fy_bitmap_to_ranges(r, 0, bm, (size_t)bits);
		t[i] = now_ms() - t0;
		if (rc)
			return rc;
	}
	qsort(t, runs, sizeof(t[0]), cmp_double);
	res->method = naive ? "naive" : "ranges";
	res->ranges = r->n;
	res->runs = runs;
	res->min = t[0];
	res->max = t[runs - 1];
	res->med = runs % 2 ? t[runs / 2] : (t[runs / 2 - 1] + t[runs / 2]) / 2;
	if (r->bytes / FY_PAGE_SIZE != res->set_bits)
		return -1; /* the ranges must cover exactly the set bits */
	return 0;
}

static void print_row(const struct scase *c, const struct result *res,
		      uint64_t bits)
{
	printf("%-16s %-7s %12llu %11llu %10.1f %10.1f %10.1f %8.1f\n", c->name,
	       res->method, (unsigned long long)res->set_bits,
	       (unsigned long long)res->ranges, res->med, res->min, res->max,
	       (double)bits / 8 / (res->med / 1e3) / 1e9);
}

static void print_json(const struct scase *c, const struct result *res,
		       uint64_t bits, bool thp)
{
	printf("{\"bench\":\"dirtyscan\",\"case\":\"%s\",\"method\":\"%s\","
	       "\"bits\":%llu,\"dirty_fraction\":%g,\"clustered\":%s,"
	       "\"dirty_bits\":%llu,\"ranges\":%llu,\"runs\":%u,"
	       "\"median_ms\":%.2f,\"min_ms\":%.2f,\"max_ms\":%.2f,\"thp\":%s}\n",
	       c->name, res->method, (unsigned long long)bits, c->dirty,
	       c->clustered ? "true" : "false",
	       (unsigned long long)res->set_bits,
	       (unsigned long long)res->ranges, res->runs, res->med, res->min,
	       res->max, thp ? "true" : "false");
}

struct opts {
	unsigned int runs, naive_runs;
	uint64_t bits;
	bool thp, naive;
};

static int parse(int argc, char **argv, struct opts *o)
{
	int i;

	*o = (struct opts){ .runs = 7, .naive_runs = 3, .bits = DEFAULT_BITS,
			    .thp = true, .naive = true };
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--no-thp"))
			o->thp = false;
		else if (!strcmp(argv[i], "--no-naive"))
			o->naive = false;
		else if (i + 1 < argc && !strcmp(argv[i], "--runs"))
			o->runs = (unsigned int)strtoul(argv[++i], NULL, 0);
		else if (i + 1 < argc && !strcmp(argv[i], "--naive-runs"))
			o->naive_runs = (unsigned int)strtoul(argv[++i], NULL, 0);
		else if (i + 1 < argc && !strcmp(argv[i], "--bits"))
			o->bits = strtoull(argv[++i], NULL, 0);
		else
			return -1;
	}
	if (!o->runs || o->runs > MAX_RUNS || !o->naive_runs ||
	    o->naive_runs > MAX_RUNS || o->bits < 64)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct result res[NCASES][2];
	int nres[NCASES] = { 0 };
	struct fy_ranges r;
	struct opts o;
	uint64_t *bm;
	size_t bytes, k;
	int j;

	if (parse(argc, argv, &o)) {
		fprintf(stderr, "usage: dirtyscan [--runs N] [--naive-runs N] [--bits N] [--no-thp] [--no-naive]\n");
		return 2;
	}
	bytes = (size_t)((o.bits + 63) / 64 * 8);
	bm = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (bm == MAP_FAILED) {
		perror("dirtyscan: mmap");
		return 1;
	}
	if (o.thp)
		madvise(bm, bytes, MADV_HUGEPAGE);
	fy_ranges_init(&r);
	printf("dirty bitmap: %llu bits (%.0f MiB, %s), ranges run %u times, naive %u\n",
	       (unsigned long long)o.bits, bytes / 1048576.0,
	       o.thp ? "THP" : "4 KiB pages", o.runs, o.naive_runs);
	printf("%-16s %-7s %12s %11s %10s %10s %10s %8s\n", "case", "method",
	       "dirty pages", "ranges", "median ms", "min ms", "max ms", "GB/s");
	for (k = 0; k < NCASES; k++) {
		const struct scase *c = &cases[k];
		uint64_t set;

		generate(bm, o.bits, c);
		set = popcount(bm, o.bits);
		for (j = 0; j < 1 + (o.naive && c->naive); j++) {
			struct result *x = &res[k][j];

			x->set_bits = set;
			if (measure(&r, bm, o.bits, j == 1,
				    j ? o.naive_runs : o.runs, x)) {
				fprintf(stderr, "dirtyscan: %s: scan failed or lost pages\n",
					c->name);
				return 1;
			}
			print_row(c, x, o.bits);
			fflush(stdout);
			nres[k]++;
		}
	}
	for (k = 0; k < NCASES; k++) {
		for (j = 0; j < nres[k]; j++)
			print_json(&cases[k], &res[k][j], o.bits, o.thp);
	}
	fy_ranges_free(&r);
	munmap(bm, bytes);
	return 0;
}
