// SPDX-License-Identifier: MIT
/*
 * test_postcopy_recv.c - the destination's side of postcopy, driven by a
 * scripted source (this file, speaking the wire format through the
 * engine's own connections) over UNIX sockets: a real destination session
 * in a thread, a fake VMM whose "vCPU" touches a page that is still at
 * the source once the guest resumes.
 *
 * What a user would notice: the guest resumes before all of its memory is
 * there, the vCPU's fault becomes a PAGE_REQ, the destination's memory
 * ends equal to the source's, the statistics say postcopy, faults and
 * requests; a DISCARD before a whole pass and a POSTCOPY with the wrong
 * count are refused (the latter with the not-run code, the guest never
 * resumed); a cut after the transition pauses the destination instead of
 * failing it, a stranger and a stale generation cannot resume it, and a
 * recovery (also after a second cut) completes the migration.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ferry.h"
#include "memory/memory.h"
#include "migrate/engine.h"
#include "transport/transport.h"
#include "wire/wire.h"

#define MEM (8u << 20)
#define PAGES (MEM / 4096)
#define CHUNK (256u << 10)
#define WAIT_MS 10000
/* The page the destination's vCPU reads once it runs: discarded. */
#define TOUCH_PAGE 1030

/* ---- the destination: a real session and a fake VMM ---- */

struct dst {
	ferry_session *s;
	uint8_t *mem;
	char path[100], uri[120];
	pthread_t thread, vcpu;
	int rc;
	atomic_bool done;
	atomic_int resumes, loads;
	atomic_bool vcpu_done;
	bool vcpu_started;
	uint64_t seen; /* what the vCPU read */
	int memfd;     /* a hugetlb backing, or -1 */
};

static void *vcpu_main(void *arg)
{
	struct dst *d = arg;

	/* A missing page: this read blocks until the page is placed. */
	d->seen = *(volatile uint64_t *)(d->mem + (uint64_t)TOUCH_PAGE * 4096);
	atomic_store(&d->vcpu_done, true);
	return NULL;
}

static int d_resume(void *o)
{
	struct dst *d = o;

	atomic_fetch_add(&d->resumes, 1);
	if (!d->vcpu_started) {
		d->vcpu_started = true;
		pthread_create(&d->vcpu, NULL, vcpu_main, d);
	}
	return 0;
}

static int d_ok(void *o)
{
	return 0;
}

static int d_load(void *o, const void *data, size_t len)
{
	struct dst *d = o;

	atomic_fetch_add(&d->loads, 1);
	return len == 5 && !memcmp(data, "state", 5) ? 0 : -EINVAL;
}

static int s_save(void *o, struct ferry_buf *out)
{
	return ferry_buf_append(out, "state", 5);
}

static const struct ferry_vmm_ops dst_ops = {
	FERRY_VMM_OPS_INIT,
	.pause = d_ok,
	.resume = d_resume,
	.save_state = s_save,
	.load_state = d_load,
	.acquire = d_ok,
};

static void *dst_main(void *arg)
{
	struct dst *d = arg;

	d->rc = ferry_session_receive(d->s, d->uri);
	atomic_store(&d->done, true);
	return NULL;
}

/* Guest memory on a hugetlb memfd (2 MiB units), or false with the
 * reason printed when the host has none to give. */
static bool map_hugetlb(struct dst *d)
{
	d->memfd = memfd_create("test-pcr", MFD_CLOEXEC | MFD_HUGETLB);
	if (d->memfd < 0 || ftruncate(d->memfd, MEM)) {
		printf("skipped: no hugetlb memfd: %s\n", strerror(errno));
		return false;
	}
	d->mem = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_SHARED, d->memfd,
		      0);
	if (d->mem == MAP_FAILED) {
		printf("skipped: no 2 MiB pages for a hugetlb guest: %s\n",
		       strerror(errno));
		return false;
	}
	return true;
}

static bool dst_start_on(struct dst *d, bool hugetlb)
{
	struct ferry_config cfg;
	struct ferry_region r = { .gpa = 0, .size = MEM, .fd = -1,
				  .name = "ram0" };

	memset(d, 0, sizeof(*d));
	d->memfd = -1;
	if (hugetlb) {
		if (!map_hugetlb(d)) {
			if (d->memfd >= 0)
				close(d->memfd);
			return false;
		}
		r.fd = d->memfd;
	} else {
		d->mem = mmap(NULL, MEM, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		assert_true(d->mem != MAP_FAILED);
	}
	r.host = d->mem;
	ferry_config_init(&cfg);
	cfg.ops = &dst_ops;
	cfg.opaque = d;
	assert_int_equal(ferry_session_new(&cfg, &d->s), 0);
	assert_int_equal(ferry_session_add_region(d->s, &r), 0);
	snprintf(d->path, sizeof(d->path), "/tmp/ferry-test-pcr-%d.sock",
		 (int)getpid());
	unlink(d->path);
	snprintf(d->uri, sizeof(d->uri), "unix:%s", d->path);
	pthread_create(&d->thread, NULL, dst_main, d);
	return true;
}

static void dst_start(struct dst *d)
{
	dst_start_on(d, false);
}

static void dst_join(struct dst *d)
{
	pthread_join(d->thread, NULL);
	if (d->vcpu_started)
		pthread_join(d->vcpu, NULL);
}

static void dst_free(struct dst *d)
{
	ferry_session_destroy(d->s);
	munmap(d->mem, MEM);
	if (d->memfd >= 0)
		close(d->memfd);
	unlink(d->path);
}

static struct ferry_stats dst_stats(struct dst *d)
{
	struct ferry_stats st = { FERRY_STATS_INIT };

	assert_int_equal(ferry_session_stats(d->s, &st), 0);
	return st;
}

/* Wait until the destination reports @state. */
static void dst_wait_state(struct dst *d, enum ferry_state state)
{
	for (int i = 0; i < WAIT_MS / 10; i++) {
		if (dst_stats(d).state == state)
			return;
		usleep(10000);
	}
	fail_msg("destination never reached state %d (it is in %d)", state,
		 dst_stats(d).state);
}

/* ---- the scripted source ---- */

struct src {
	ferry_session *s; /* only for the connections' bookkeeping */
	uint64_t caps;	  /* offered in HELLO (0: FERRY_CAP_ALL) */
	uint8_t *mem;
	struct fy_region r;
	struct fy_chan main, data;
	uint64_t session_id;
	uint8_t token[16];
	uint32_t seq;
	uint64_t records, bytes; /* MEMORY since the last OK of POSTCOPY */
	uint32_t page_reqs;	 /* PAGE_REQ seen */
	uint32_t keepalives;	 /* KEEPALIVE seen since the last OK of
				    POSTCOPY or RESUME */
	uint64_t req_page;	 /* the first page asked for */
	uint64_t req_pages;	 /* and how many */
	uint64_t unit;		 /* the destination's, in pages (1: 4 KiB) */
};

static const struct ferry_vmm_ops src_ops = {
	FERRY_VMM_OPS_INIT,
	.pause = d_ok,
	.resume = d_ok,
	.save_state = s_save,
	.load_state = d_load,
};

static void src_init(struct src *sc)
{
	struct ferry_config cfg;

	memset(sc, 0, sizeof(*sc));
	ferry_config_init(&cfg);
	cfg.ops = &src_ops;
	assert_int_equal(ferry_session_new(&cfg, &sc->s), 0);
	sc->mem = mmap(NULL, MEM, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(sc->mem != MAP_FAILED);
	for (size_t i = 0; i < MEM; i += 8)
		*(uint64_t *)(sc->mem + i) = i * 0x9e3779b97f4a7c15ull + 1;
	sc->r = (struct fy_region){ .size = MEM, .host = sc->mem, .fd = -1,
				    .name = "ram0" };
	sc->unit = 1;
	fy_chan_clear(&sc->main);
	fy_chan_clear(&sc->data);
}

static void src_free(struct src *sc)
{
	fy_chan_close(&sc->main);
	fy_chan_close(&sc->data);
	munmap(sc->mem, MEM);
	ferry_session_destroy(sc->s);
}

/* Connect to @path (it may not listen yet), open a channel, send the
 * stream header. */
static void chan_open(struct src *sc, struct fy_chan *c, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uint8_t sh[FY_STREAM_HDR_SIZE];
	struct iovec iov = { sh, sizeof(sh) };
	int fd = -1;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	for (int i = 0; i < WAIT_MS / 10; i++) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(fd >= 0);
		if (!connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
			break;
		close(fd);
		fd = -1;
		usleep(10000);
	}
	assert_true(fd >= 0);
	fy_transport_tune(fd, FY_TICK_MS);
	assert_int_equal(fy_chan_init(c, sc->s, fd), 0);
	assert_int_equal(fy_chan_prepare(c), 0);
	fy_stream_hdr_encode(sh);
	assert_int_equal(fy_chan_write_all(c, &iov, 1), 0);
}

/* A PAGE_REQ that arrived on the main connection. */
static void on_page_req(struct src *sc)
{
	struct fy_page_list l;
	struct fy_page_range r;
	char err[200];

	assert_int_equal(fy_page_req_decode(sc->main.rx.in.data,
					    sc->main.rx.in.len, &l, err,
					    sizeof(err)), 0);
	fy_page_list_get(&l, 0, &r);
	if (!sc->page_reqs++) {
		sc->req_page = r.first;
		sc->req_pages = r.pages;
	}
}

/* The next answer on the main connection (PAGE_REQs on the way are
 * noted); its body in main.rx.in. Returns its type, or a negative code. */
static int answer(struct src *sc, uint32_t seq)
{
	struct fy_rec_hdr h;
	int rc;

	for (;;) {
		rc = fy_chan_recv_hdr(&sc->main, &h, WAIT_MS);
		if (!rc)
			rc = fy_chan_recv_body(&sc->main, &h);
		if (rc)
			return rc;
		if (h.type == FY_REC_PAGE_REQ) {
			on_page_req(sc);
			continue;
		}
		/* Keep-alives, as a source skips them. */
		if (fy_rec_optional(h.type))
			continue;
		assert_int_equal(h.seq, seq);
		return (int)h.type;
	}
}

/* Send request @type with @body, return the answer's type (OK/ERROR). */
static int request(struct src *sc, uint32_t type, const struct fy_buf *body)
{
	uint32_t seq = ++sc->seq;

	assert_int_equal(fy_chan_send_rec(&sc->main, type, seq,
					  body ? body->data : NULL,
					  body ? body->len : 0), 0);
	return answer(sc, seq);
}

/* The code an ERROR answer carried. */
static int error_code(struct fy_chan *c)
{
	struct fy_error_msg e;

	assert_int_equal(fy_error_decode(c->rx.in.data, c->rx.in.len, &e), 0);
	return e.code;
}

static void hello_config(struct src *sc, const char *path)
{
	struct fy_hello h = { FY_PROTO_VERSION_MIN, FY_PROTO_VERSION_MAX,
			      sc->caps ? sc->caps : FERRY_CAP_ALL, "",
			      "script" };
	struct fy_hello_reply r;
	static struct fy_config_msg m;
	struct fy_buf b;

	chan_open(sc, &sc->main, path);
	fy_buf_init(&b);
	assert_int_equal(fy_hello_encode(&b, &h), 0);
	assert_int_equal(request(sc, FY_REC_HELLO, &b), FY_REC_OK);
	assert_int_equal(fy_hello_reply_decode(sc->main.rx.in.data,
					       sc->main.rx.in.len, &r), 0);
	/* The destination can run postcopy here, so it offers it. */
	assert_true(r.capabilities & FERRY_CAP_POSTCOPY);
	sc->session_id = r.session_id;
	memcpy(sc->token, r.token, sizeof(r.token));
	m.page_size = FY_PAGE_SIZE;
	m.nregions = 1;
	m.regions[0] = (struct fy_region_desc){ 0, MEM, "ram0" };
	fy_buf_reset(&b);
	assert_int_equal(fy_config_encode(&b, &m), 0);
	assert_int_equal(request(sc, FY_REC_CONFIG, &b), FY_REC_OK);
	fy_buf_free(&b);
}

/* A data connection joins as index 1 of 2. */
static void join(struct src *sc, const char *path)
{
	struct fy_join j = { sc->session_id, { 0 }, 1, 2 };
	struct fy_rec_hdr h;
	struct fy_buf b;

	memcpy(j.token, sc->token, sizeof(j.token));
	chan_open(sc, &sc->data, path);
	fy_buf_init(&b);
	assert_int_equal(fy_join_encode(&b, &j), 0);
	assert_int_equal(fy_chan_send_rec(&sc->data, FY_REC_JOIN, 1, b.data,
					  b.len), 0);
	fy_buf_free(&b);
	assert_int_equal(fy_chan_recv_hdr(&sc->data, &h, WAIT_MS), 0);
	assert_int_equal(fy_chan_recv_body(&sc->data, &h), 0);
	assert_int_equal(h.type, FY_REC_OK);
}

/* Pass 1: every page, alternately on the main and the data connection. */
static void full_pass(struct src *sc)
{
	struct fy_pass_begin pb = { 1, 0, MEM };
	struct fy_pass_end pe = { .pass = 1, .nconn = 2 };
	struct fy_buf b;
	unsigned k = 0;

	fy_buf_init(&b);
	assert_int_equal(fy_pass_begin_encode(&b, &pb), 0);
	assert_int_equal(request(sc, FY_REC_PASS_BEGIN, &b), FY_REC_OK);
	pe.conn[1].index = 1;
	for (uint64_t off = 0; off < MEM; off += CHUNK, k ^= 1) {
		struct fy_mem_hdr m = { 0, 0, off, CHUNK };

		assert_int_equal(fy_chan_send_mem(k ? &sc->data : &sc->main,
						  &sc->r, &m, true), 0);
		pe.conn[k].records++;
		pe.conn[k].bytes += CHUNK;
		pe.records++;
		pe.bytes += CHUNK;
	}
	assert_int_equal(fy_chan_flush(&sc->main), 0);
	assert_int_equal(fy_chan_flush(&sc->data), 0);
	fy_buf_reset(&b);
	assert_int_equal(fy_pass_end_encode(&b, &pe), 0);
	assert_int_equal(request(sc, FY_REC_PASS_END, &b), FY_REC_OK);
	fy_buf_free(&b);
}

/* The pages the source wrote after pass 1 (its guest ran on). */
static const struct fy_page_range dirty[] = {
	{ 0, 10, 10 }, { 0, 600, 1 }, { 0, 1024, 300 }, { 0, 2040, 8 },
};
#define NDIRTY (sizeof(dirty) / sizeof(dirty[0]))
#define DIRTY_PAGES (10 + 1 + 300 + 8)

static void write_dirty(struct src *sc)
{
	for (size_t i = 0; i < NDIRTY; i++)
		for (uint64_t p = dirty[i].first;
		     p < dirty[i].first + dirty[i].pages; p++)
			memset(sc->mem + p * 4096, (int)(p & 0x7f) + 1, 4096);
}

/* DISCARD (in two records, one page named twice), STATE. */
static void discard_state(struct src *sc)
{
	struct fy_page_range again = { 0, 600, 1 };
	struct fy_units un;
	struct fy_buf b;

	fy_buf_init(&b);
	assert_int_equal(fy_discard_encode(&b, dirty, 2), 0);
	assert_int_equal(request(sc, FY_REC_DISCARD, &b), FY_REC_OK);
	fy_buf_reset(&b);
	assert_int_equal(fy_discard_encode(&b, &again, 1), 0);
	assert_int_equal(request(sc, FY_REC_DISCARD, &b), FY_REC_OK);
	fy_buf_reset(&b);
	assert_int_equal(fy_discard_encode(&b, dirty + 2, NDIRTY - 2), 0);
	assert_int_equal(request(sc, FY_REC_DISCARD, &b), FY_REC_OK);
	/* The answer says what the destination places at once. */
	assert_int_equal(fy_units_decode(sc->main.rx.in.data,
					 sc->main.rx.in.len, &un), 0);
	assert_int_equal(un.nregions, 1);
	assert_int_equal(un.unit[0], sc->unit * 4096);
	fy_buf_reset(&b);
	assert_int_equal(fy_buf_put(&b, "state", 5), 0);
	assert_int_equal(request(sc, FY_REC_STATE, &b), FY_REC_OK);
	fy_buf_free(&b);
}

static int postcopy(struct src *sc, uint64_t discarded)
{
	struct fy_postcopy p = { discarded };
	struct fy_buf b;
	int rc;

	fy_buf_init(&b);
	assert_int_equal(fy_postcopy_encode(&b, &p), 0);
	rc = request(sc, FY_REC_POSTCOPY, &b);
	fy_buf_free(&b);
	sc->records = 0;
	sc->bytes = 0;
	sc->keepalives = 0;
	return rc;
}

/* Read one record the destination sends unasked on the main connection
 * in postcopy: a PAGE_REQ or a KEEPALIVE. */
static void next_unasked(struct src *sc)
{
	struct fy_rec_hdr h;

	assert_int_equal(fy_chan_recv_hdr(&sc->main, &h, WAIT_MS), 0);
	assert_int_equal(fy_chan_recv_body(&sc->main, &h), 0);
	if (h.type == FY_REC_KEEPALIVE) {
		sc->keepalives++;
		return;
	}
	assert_int_equal(h.type, FY_REC_PAGE_REQ);
	on_page_req(sc);
}

/* Wait on the main connection for a PAGE_REQ. */
static void wait_page_req(struct src *sc)
{
	while (!sc->page_reqs)
		next_unasked(sc);
}

/*
 * Wait for a KEEPALIVE: with the capability, the destination writes them
 * through its postcopy phase whenever the lane is quiet (here its vCPU
 * waits for a page the source has not sent yet), so that the source can
 * take silence for a stalled destination. Without them the read times
 * out and the test fails.
 */
static void wait_keepalive(struct src *sc)
{
	while (!sc->keepalives)
		next_unasked(sc);
}

static void send_pages(struct src *sc, struct fy_chan *c, uint64_t first,
		       uint64_t pages)
{
	uint64_t most = CHUNK / 4096 > sc->unit ? CHUNK / 4096 : sc->unit;

	while (pages) {
		uint64_t n = pages < most ? pages : most;
		struct fy_mem_hdr m = { 0, 0, first * 4096, n * 4096 };

		assert_int_equal(fy_chan_send_mem(c, &sc->r, &m, true), 0);
		sc->records++;
		sc->bytes += n * 4096;
		first += n;
		pages -= n;
	}
	assert_int_equal(fy_chan_flush(c), 0);
}

/* Answer the request on the main connection, push every discarded page
 * on the data connection, end with POSTCOPY_END. */
static void serve_and_end(struct src *sc)
{
	struct fy_postcopy_end e;
	struct fy_buf b;

	wait_page_req(sc);
	send_pages(sc, &sc->main, sc->req_page, sc->req_pages);
	/* Whole units of the destination's: a unit with a discarded page is
	 * missing there whole. */
	for (uint64_t u = 0, done = 0; u < PAGES; u += sc->unit) {
		for (size_t i = 0; i < NDIRTY; i++)
			if (dirty[i].first < u + sc->unit &&
			    dirty[i].first + dirty[i].pages > u && u >= done) {
				send_pages(sc, &sc->data, u, sc->unit);
				done = u + sc->unit;
			}
	}
	e.records = sc->records;
	e.bytes = sc->bytes;
	fy_buf_init(&b);
	assert_int_equal(fy_postcopy_end_encode(&b, &e), 0);
	assert_int_equal(request(sc, FY_REC_POSTCOPY_END, &b), FY_REC_OK);
	fy_buf_free(&b);
}

static bool userfaultfd_works(void)
{
	char why[200];
	int fd = fy_uffd_open(false, why, sizeof(why));

	if (fd < 0) {
		printf("skipped: no userfaultfd here: %s\n", why);
		return false;
	}
	close(fd);
	return true;
}

static void check_completed(struct dst *d, struct src *sc)
{
	struct ferry_stats st;

	dst_join(d);
	assert_int_equal(d->rc, 0);
	st = dst_stats(d);
	assert_int_equal(st.state, FERRY_STATE_COMPLETED);
	assert_int_equal(st.owner, FERRY_OWNER_DESTINATION);
	assert_true(st.postcopy);
	assert_true(st.page_faults >= 1);
	assert_true(st.pages_requested >= 1);
	assert_int_equal(st.pages_missing, 0);
	assert_int_equal(st.lazy_placed, st.lazy_pages);
	assert_int_equal(st.lazy_pages, PAGES);
	assert_int_equal(atomic_load(&d->resumes), 1);
	/* The vCPU read the source's page, not a hole. */
	assert_true(atomic_load(&d->vcpu_done));
	assert_int_equal(d->seen, *(uint64_t *)(sc->mem + TOUCH_PAGE * 4096ull));
	assert_memory_equal(d->mem, sc->mem, MEM);
}

/* A session offering @caps (0: all) through one pass and the dirty
 * pages' discard to POSTCOPY, accepted: the destination runs the guest. */
static void reach_postcopy(struct src *sc, struct dst *d, uint64_t caps,
			   bool hugetlb)
{
	src_init(sc);
	sc->caps = caps;
	sc->unit = hugetlb ? FY_HUGE_PAGE_SIZE / 4096 : 1;
	hello_config(sc, d->path);
	join(sc, d->path);
	full_pass(sc);
	write_dirty(sc);
	discard_state(sc);
	assert_int_equal(postcopy(sc, DIRTY_PAGES), FY_REC_OK);
	/* The guest runs here before its memory is all here. */
	dst_wait_state(d, FERRY_STATE_POSTCOPY);
}

static void test_postcopy_completes(void **state)
{
	bool hugetlb = *(bool *)*state;
	struct dst d;
	struct src sc;

	if (!userfaultfd_works() || !dst_start_on(&d, hugetlb))
		skip();
	reach_postcopy(&sc, &d, 0, hugetlb);
	assert_int_equal(dst_stats(&d).owner, FERRY_OWNER_DESTINATION);
	assert_int_equal(atomic_load(&d.resumes), 1);
	/* The vCPU waits for its page: the lane is quiet but for
	 * keep-alives (hello_config offered the capability). */
	wait_page_req(&sc);
	wait_keepalive(&sc);
	serve_and_end(&sc);
	/* The vCPU's unit, as the destination places it. */
	assert_int_equal(sc.req_page, TOUCH_PAGE / sc.unit * sc.unit);
	assert_int_equal(sc.req_pages, sc.unit);
	check_completed(&d, &sc);
	src_free(&sc);
	dst_free(&d);
}

/*
 * A source that does not offer postcopy-keepalive (an older one) applies
 * no limit to the lane's silence, and may not expect records there it
 * does not wait for: the destination's keeper stays off through
 * postcopy. 600 ms is nearly five of its periods (FY_KEEP_EVERY_MS).
 */
static void test_postcopy_quiet_for_an_older_source(void **state)
{
	struct fy_rec_hdr h;
	struct dst d;
	struct src sc;

	(void)state;
	if (!userfaultfd_works() || !dst_start_on(&d, false))
		skip();
	reach_postcopy(&sc, &d, FERRY_CAP_ALL & ~FERRY_CAP_POSTCOPY_KEEPALIVE,
		       false);
	wait_page_req(&sc);
	assert_int_equal(fy_chan_recv_hdr(&sc.main, &h, 600), -ETIMEDOUT);
	serve_and_end(&sc);
	check_completed(&d, &sc);
	src_free(&sc);
	dst_free(&d);
}

/* Before the transition a refusal gives the guest back: a DISCARD before
 * a whole pass, and a POSTCOPY whose count disagrees (not-run). */
static void test_refusals_before_the_transition(void **state)
{
	struct dst d;
	struct src sc;
	struct fy_buf b;

	(void)state;
	if (!userfaultfd_works())
		skip();
	dst_start(&d);
	src_init(&sc);
	hello_config(&sc, d.path);
	join(&sc, d.path);
	fy_buf_init(&b);
	assert_int_equal(fy_discard_encode(&b, dirty, 1), 0);
	assert_int_equal(request(&sc, FY_REC_DISCARD, &b), FY_REC_ERROR);
	assert_int_equal(error_code(&sc.main), FERRY_EPROTO);
	fy_buf_free(&b);
	dst_join(&d);
	assert_int_equal(d.rc, FERRY_EPROTO);
	assert_int_equal(atomic_load(&d.resumes), 0);
	src_free(&sc);
	dst_free(&d);

	dst_start(&d);
	src_init(&sc);
	hello_config(&sc, d.path);
	join(&sc, d.path);
	full_pass(&sc);
	discard_state(&sc);
	assert_int_equal(postcopy(&sc, DIRTY_PAGES + 1), FY_REC_ERROR);
	assert_int_equal(error_code(&sc.main), FY_ERR_NOT_RUN);
	dst_join(&d);
	assert_int_equal(d.rc, FERRY_EPROTO);
	assert_int_equal(atomic_load(&d.resumes), 0);
	assert_int_equal(dst_stats(&d).owner, FERRY_OWNER_SOURCE);
	src_free(&sc);
	dst_free(&d);
}


/* A recovery connection to @path: stream header, RESUME. Returns the
 * answer's type; with OK, the have-map is checked against what was
 * placed: every page but the discarded ones. */
static int resume(struct src *sc, const char *path, uint32_t generation,
		  bool good_token)
{
	struct fy_resume r = { sc->session_id, { 0 }, generation };
	struct fy_have_map hm;
	struct fy_buf b;
	char err[200];
	int type;

	memcpy(r.token, sc->token, sizeof(r.token));
	if (!good_token)
		r.token[3] ^= 0x40;
	fy_chan_close(&sc->main);
	fy_chan_clear(&sc->main);
	chan_open(sc, &sc->main, path);
	sc->seq = 0;
	fy_buf_init(&b);
	assert_int_equal(fy_resume_encode(&b, &r), 0);
	type = request(sc, FY_REC_RESUME, &b);
	fy_buf_free(&b);
	sc->records = 0;
	sc->bytes = 0;
	sc->page_reqs = 0;
	sc->keepalives = 0;
	if (type != FY_REC_OK)
		return type;
	assert_int_equal(fy_have_map_decode(sc->main.rx.in.data,
					    sc->main.rx.in.len, &hm, err,
					    sizeof(err)), 0);
	assert_int_equal(hm.flags, FY_HAVE_RAN | FY_HAVE_RUNNING);
	assert_int_equal(hm.missing, DIRTY_PAGES);
	assert_true(fy_have_map_test(&hm, 0, 0));
	assert_true(fy_have_map_test(&hm, 0, 9));
	assert_false(fy_have_map_test(&hm, 0, 10));
	assert_false(fy_have_map_test(&hm, 0, TOUCH_PAGE));
	assert_true(fy_have_map_test(&hm, 0, PAGES - 9));
	assert_false(fy_have_map_test(&hm, 0, PAGES - 1));
	return type;
}

/*
 * A cut after the transition pauses the destination: its guest stays,
 * the vCPU waiting on a missing page stays blocked, nothing returns.
 * Recovery on a new listener refuses a stranger's token and a stale
 * generation, survives a second cut, and completes the migration.
 */
static void test_cut_pauses_and_recovers(void **state)
{
	struct dst d;
	struct src sc;
	struct ferry_stats st;
	char path2[120], uri2[140];

	(void)state;
	if (!userfaultfd_works())
		skip();
	dst_start(&d);
	src_init(&sc);
	snprintf(path2, sizeof(path2), "%s.2", d.path);
	snprintf(uri2, sizeof(uri2), "unix:%s", path2);
	unlink(path2);
	hello_config(&sc, d.path);
	join(&sc, d.path);
	full_pass(&sc);
	write_dirty(&sc);
	discard_state(&sc);
	assert_int_equal(postcopy(&sc, DIRTY_PAGES), FY_REC_OK);
	wait_page_req(&sc);

	/* Cut: a data connection breaks. */
	fy_chan_close(&sc.data);
	fy_chan_clear(&sc.data);
	dst_wait_state(&d, FERRY_STATE_POSTCOPY_PAUSED);
	st = dst_stats(&d);
	assert_int_equal(st.owner, FERRY_OWNER_DESTINATION);
	assert_int_equal(st.pages_missing, DIRTY_PAGES);
	assert_true(st.postcopy);
	usleep(200000);
	assert_false(atomic_load(&d.done));
	assert_false(atomic_load(&d.vcpu_done));
	/* Nothing to recover with a file. */
	assert_int_equal(ferry_session_recover(d.s, "file:/tmp/x"), -EINVAL);

	/* A URI it cannot listen on: paused again, saying why. */
	assert_int_equal(ferry_session_recover(d.s, "unix:/nonexistent-dir/x.sock"), 0);
	for (int i = 0; ferry_session_recover(d.s, uri2); i++) {
		assert_true(i < WAIT_MS / 10);
		usleep(10000);
	}
	{
		char msg[512];

		ferry_session_errmsg(d.s, msg, sizeof(msg));
		assert_non_null(strstr(msg, "postcopy paused"));
		assert_non_null(strstr(msg, "nonexistent-dir"));
	}
	assert_int_equal(resume(&sc, path2, 1, false), FY_REC_ERROR);
	assert_int_equal(error_code(&sc.main), -EACCES);
	assert_int_equal(resume(&sc, path2, 1, true), FY_REC_OK);
	/* A second cut, during the recovery: before the data connection is
	 * back. */
	dst_wait_state(&d, FERRY_STATE_POSTCOPY);
	fy_chan_close(&sc.main);
	fy_chan_clear(&sc.main);
	dst_wait_state(&d, FERRY_STATE_POSTCOPY_PAUSED);
	assert_false(atomic_load(&d.done));

	assert_int_equal(ferry_session_recover(d.s, uri2), 0);
	assert_int_equal(resume(&sc, path2, 1, true), FY_REC_ERROR);
	assert_int_equal(error_code(&sc.main), -ESTALE);
	assert_int_equal(resume(&sc, path2, 2, true), FY_REC_OK);
	join(&sc, path2);
	/* The recovered phase has its keep-alives again. */
	wait_keepalive(&sc);
	/* The waiting vCPU's page is asked for again on the new connection. */
	serve_and_end(&sc);
	assert_int_equal(sc.req_page, TOUCH_PAGE);
	check_completed(&d, &sc);
	st = dst_stats(&d);
	assert_int_equal(st.recoveries, 2);
	assert_int_equal(atomic_load(&d.resumes), 1);
	src_free(&sc);
	dst_free(&d);
	unlink(path2);
}

static bool anon = false, hugetlb = true;

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_prestate(test_postcopy_completes, &anon),
		cmocka_unit_test_prestate(test_postcopy_completes, &hugetlb),
		cmocka_unit_test(test_postcopy_quiet_for_an_older_source),
		cmocka_unit_test(test_refusals_before_the_transition),
		cmocka_unit_test(test_cut_pauses_and_recovers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
