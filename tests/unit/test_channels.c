// SPDX-License-Identifier: MIT
/*
 * test_channels.c - the source's side of an extra data connection that
 * breaks after the source handed it its part of a pass.
 *
 * A scripted destination (this file, speaking the wire format directly)
 * throws away everything one extra connection carries in a pass, closes
 * that connection, and names it in its answer to PASS_END, as the real
 * destination does when a listed connection ended short of its count. The
 * source must give the connection up and send its part again: in the next
 * pass after a precopy pass, in another final pass after a final one. The
 * guest is idle, so nothing but that re-send can bring the thrown-away
 * pages over, and the memory comparison at the end shows it happened.
 *
 * Below that, one connection (chan.c) on its own, over loopback TCP: its
 * two directions used by two threads at once, as a postcopy return path
 * uses them.
 */
#include <errno.h>
#include <poll.h>
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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ferry.h"
#include "migrate/engine.h"
#include "transport/transport.h"
#include "wire/wire.h"

#define MEM (16u << 20)
#define CHUNK (64u << 10)
#define CONNS 3
#define WAIT_MS 10000

struct script {
	int lfd;
	char path[100];
	uint8_t *mem;		/* the destination's copy of guest memory */
	int fd[CONNS];		/* by JOIN index; 0 is the main connection */
	pthread_t reader[CONNS];
	pthread_mutex_t lock;
	pthread_cond_t cv;
	uint64_t records[CONNS]; /* arrived in this pass */
	bool drop[CONNS];	/* this pass, throw away what it carries */
	uint32_t lost_in[CONNS]; /* the pass it was named lost in, or 0 */
	uint32_t passes, finals;
	char why[256];		/* the script's first complaint */
};

struct src_job {
	ferry_session *s;
	char uri[120];
	int rc;
};

__attribute__((format(printf, 2, 3)))
static void complain(struct script *sc, const char *fmt, ...)
{
	va_list ap;

	if (sc->why[0])
		return;
	va_start(ap, fmt);
	vsnprintf(sc->why, sizeof(sc->why), fmt, ap);
	va_end(ap);
}

static int read_exact(int fd, void *buf, size_t n)
{
	uint8_t *p = buf;

	while (n) {
		ssize_t r = read(fd, p, n);

		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* One record: its header in @h, its body in @b (checksums not checked:
 * the framing is the wire layer's tests' business). */
static int read_rec(int fd, struct fy_rec_hdr *h, struct fy_buf *b)
{
	uint8_t raw[FY_REC_HDR_SIZE];
	size_t tail;

	if (read_exact(fd, raw, sizeof(raw)) || fy_rec_hdr_decode(raw, h))
		return -1;
	tail = fy_pad8(h->length) - h->length + FY_REC_TRAILER_SIZE;
	fy_buf_reset(b);
	if (fy_buf_reserve(b, h->length + tail) ||
	    read_exact(fd, b->data, h->length + tail))
		return -1;
	b->len = h->length;
	return 0;
}

static void send_rec(int fd, uint32_t type, uint32_t seq, const struct fy_buf *body)
{
	struct fy_buf b;

	fy_buf_init(&b);
	assert_int_equal(fy_rec_encode(&b, type, seq, 0, body ? body->data : NULL,
				       body ? body->len : 0), 0);
	assert_int_equal(write(fd, b.data, b.len), (ssize_t)b.len);
	fy_buf_free(&b);
}

/* A MEMORY record that arrived on connection @idx. */
static void on_memory(struct script *sc, unsigned idx, const struct fy_buf *b)
{
	struct fy_mem_hdr m;

	if (b->len < FY_MEM_HDR_SIZE) {
		complain(sc, "short MEMORY record on connection %u", idx);
		return;
	}
	fy_mem_hdr_decode(b->data, &m);
	if (m.region || m.flags || m.offset + m.length > MEM ||
	    b->len != FY_MEM_HDR_SIZE + m.length) {
		complain(sc, "unexpected MEMORY record on connection %u", idx);
		return;
	}
	pthread_mutex_lock(&sc->lock);
	if (!sc->drop[idx])
		memcpy(sc->mem + m.offset, b->data + FY_MEM_HDR_SIZE, m.length);
	sc->records[idx]++;
	pthread_cond_broadcast(&sc->cv);
	pthread_mutex_unlock(&sc->lock);
}

struct reader_arg {
	struct script *sc;
	unsigned idx;
};

static struct reader_arg reader_args[CONNS];

/* An extra connection: MEMORY records until it closes. */
static void *reader_main(void *arg)
{
	struct reader_arg *ra = arg;
	struct fy_rec_hdr h;
	struct fy_buf b;

	fy_buf_init(&b);
	while (!read_rec(ra->sc->fd[ra->idx], &h, &b)) {
		if (h.type != FY_REC_MEMORY) {
			complain(ra->sc, "record 0x%x on data connection %u",
				 h.type, ra->idx);
			break;
		}
		on_memory(ra->sc, ra->idx, &b);
	}
	fy_buf_free(&b);
	return NULL;
}

static int accept_within(int lfd)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };

	if (poll(&p, 1, WAIT_MS) != 1)
		return -1;
	return accept(lfd, NULL, NULL);
}

/* After CONFIG: the extra connections present JOIN; answer OK. */
static void accept_joins(struct script *sc)
{
	for (unsigned i = 1; i < CONNS; i++) {
		uint8_t sh[FY_STREAM_HDR_SIZE];
		struct fy_rec_hdr h;
		struct fy_join j;
		struct fy_buf b;
		int fd = accept_within(sc->lfd);

		fy_buf_init(&b);
		assert_true(fd >= 0);
		assert_int_equal(read_exact(fd, sh, sizeof(sh)), 0);
		assert_int_equal(read_rec(fd, &h, &b), 0);
		assert_int_equal(h.type, FY_REC_JOIN);
		assert_int_equal(fy_join_decode(b.data, b.len, &j), 0);
		assert_true(j.index > 0 && j.index < CONNS && sc->fd[j.index] < 0);
		sc->fd[j.index] = fd;
		send_rec(fd, FY_REC_OK, h.seq, NULL);
		reader_args[j.index] = (struct reader_arg){ sc, j.index };
		assert_int_equal(pthread_create(&sc->reader[j.index], NULL,
						reader_main, &reader_args[j.index]), 0);
		fy_buf_free(&b);
	}
}

/*
 * The rule of this script: connection 1 loses its part of pass 1 (a
 * precopy pass), connection 2 its part of the first final pass.
 */
static void on_pass_begin(struct script *sc, const struct fy_buf *b)
{
	struct fy_pass_begin pb;

	assert_int_equal(fy_pass_begin_decode(b->data, b->len, &pb), 0);
	pthread_mutex_lock(&sc->lock);
	sc->passes++;
	sc->finals += pb.final;
	memset(sc->records, 0, sizeof(sc->records));
	sc->drop[1] = pb.pass == 1;
	sc->drop[2] = pb.final && sc->finals == 1;
	pthread_mutex_unlock(&sc->lock);
}

/* Wait until every listed connection delivered its count, then throw the
 * connections whose part was dropped out and name them in the answer. */
static void on_pass_end(struct script *sc, const struct fy_buf *b,
			struct fy_buf *reply)
{
	struct fy_pass_end pe;
	struct fy_pass_ack ack = { 0 };

	assert_int_equal(fy_pass_end_decode(b->data, b->len, &pe), 0);
	assert_true(pe.nconn > 0);
	pthread_mutex_lock(&sc->lock);
	for (uint32_t i = 0; i < pe.nconn; i++) {
		const struct fy_pass_conn *e = &pe.conn[i];
		struct timespec until;

		assert_true(e->index < CONNS);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += WAIT_MS / 1000;
		while (sc->records[e->index] < e->records &&
		       pthread_cond_timedwait(&sc->cv, &sc->lock, &until) == 0)
			;
		if (sc->records[e->index] != e->records)
			complain(sc, "connection %u delivered %llu records, PASS_END says %llu",
				 e->index, (unsigned long long)sc->records[e->index],
				 (unsigned long long)e->records);
		if (e->index && sc->drop[e->index] && e->records) {
			shutdown(sc->fd[e->index], SHUT_RDWR);
			sc->lost_in[e->index] = pe.pass;
			ack.lost[ack.nlost++] = e->index;
		}
	}
	pthread_mutex_unlock(&sc->lock);
	assert_int_equal(fy_pass_ack_encode(reply, &ack), 0);
}

/* Play the destination on the main connection until RELEASED. */
static void script_run(struct script *sc)
{
	uint8_t sh[FY_STREAM_HDR_SIZE];
	struct fy_buf b, reply;
	int fd = accept_within(sc->lfd);
	bool running = false;

	assert_true(fd >= 0);
	sc->fd[0] = fd;
	assert_int_equal(read_exact(fd, sh, sizeof(sh)), 0);
	fy_buf_init(&b);
	fy_buf_init(&reply);
	while (!running) {
		struct fy_rec_hdr h;

		if (read_rec(fd, &h, &b)) {
			complain(sc, "the source closed the main connection");
			break;
		}
		fy_buf_reset(&reply);
		switch (h.type) {
		case FY_REC_HELLO: {
			/* Raw memory records only: no zero maps, no codecs. */
			struct fy_hello_reply r = { .version = 2,
				.capabilities = FERRY_CAP_MULTI_CHANNEL,
				.session_id = 7, .token = { 1, 2, 3 } };

			assert_int_equal(fy_hello_reply_encode(&reply, &r), 0);
			break;
		}
		case FY_REC_PASS_BEGIN:
			on_pass_begin(sc, &b);
			break;
		case FY_REC_MEMORY:
			on_memory(sc, 0, &b);
			continue; /* data: no answer */
		case FY_REC_PASS_END:
			on_pass_end(sc, &b, &reply);
			break;
		case FY_REC_RELEASED: {
			struct fy_running run = { 0 };

			assert_int_equal(fy_running_encode(&reply, &run), 0);
			running = true;
			break;
		}
		case FY_REC_CONFIG:
		case FY_REC_STATE:
		case FY_REC_SWITCHOVER:
			break;
		default:
			complain(sc, "unexpected record 0x%x", h.type);
			running = true;
			continue;
		}
		send_rec(fd, FY_REC_OK, h.seq, &reply);
		if (h.type == FY_REC_CONFIG)
			accept_joins(sc);
	}
	fy_buf_free(&b);
	fy_buf_free(&reply);
}

static int op_ok(void *o)
{
	return 0;
}

static int op_save(void *o, struct ferry_buf *out)
{
	return ferry_buf_append(out, "state", 5);
}

static int op_load(void *o, const void *data, size_t len)
{
	return 0;
}

static const struct ferry_vmm_ops ops = {
	FERRY_VMM_OPS_INIT,
	.pause = op_ok,
	.resume = op_ok,
	.save_state = op_save,
	.load_state = op_load,
};

static void *src_main(void *arg)
{
	struct src_job *j = arg;

	j->rc = ferry_session_send(j->s, j->uri);
	return NULL;
}

static ferry_session *source_session(uint8_t *mem)
{
	struct ferry_region r = { .gpa = 0, .size = MEM, .host = mem,
				  .fd = -1, .name = "ram0" };
	struct ferry_config cfg;
	ferry_session *s;

	ferry_config_init(&cfg);
	cfg.ops = &ops;
	cfg.connections = CONNS;
	cfg.chunk_bytes = CHUNK;
	/* One precopy pass, then the final one, whatever the timing: the
	 * script's rule needs to know which pass is which. */
	cfg.max_passes = 1;
	cfg.timeout_strategy = FERRY_TIMEOUT_SWITCHOVER;
	assert_int_equal(ferry_session_new(&cfg, &s), 0);
	assert_int_equal(ferry_session_add_region(s, &r), 0);
	return s;
}

static void script_listen(struct script *sc)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	snprintf(sc->path, sizeof(sc->path), "/tmp/ferry-test-chan-%d.sock",
		 (int)getpid());
	unlink(sc->path);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sc->path);
	sc->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(sc->lfd >= 0);
	assert_int_equal(bind(sc->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(sc->lfd, 8), 0);
}

static void test_lost_parts_are_sent_again(void **state)
{
	struct script sc = { .fd = { -1, -1, -1 } };
	struct src_job j = { 0 };
	struct ferry_stats st;
	char msg[512];
	pthread_t t;
	uint8_t *src = mmap(NULL, MEM, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	(void)state;
	assert_true(src != MAP_FAILED);
	for (size_t i = 0; i < MEM; i += 8)
		*(uint64_t *)(src + i) = i * 0x9e3779b97f4a7c15ull + 1;
	sc.mem = calloc(1, MEM);
	assert_non_null(sc.mem);
	pthread_mutex_init(&sc.lock, NULL);
	pthread_cond_init(&sc.cv, NULL);
	script_listen(&sc);
	j.s = source_session(src);
	snprintf(j.uri, sizeof(j.uri), "unix:%s", sc.path);
	assert_int_equal(pthread_create(&t, NULL, src_main, &j), 0);

	script_run(&sc);
	pthread_join(t, NULL);
	for (unsigned i = 0; i < CONNS; i++)
		if (sc.fd[i] >= 0)
			shutdown(sc.fd[i], SHUT_RDWR);
	for (unsigned i = 1; i < CONNS; i++)
		if (sc.fd[i] >= 0)
			pthread_join(sc.reader[i], NULL);

	if (sc.why[0])
		fail_msg("script: %s", sc.why);
	if (j.rc)
		fail_msg("send: %s: %s", ferry_strerror(j.rc),
			 ferry_session_errmsg(j.s, msg, sizeof(msg)));
	ferry_session_stats(j.s, &st);
	/* Connection 1's part of pass 1 (about a third of 256 chunks) went
	 * again in the final pass, pass 2, over the main connection and
	 * connection 2; connection 2 lost its part of that, which a second
	 * final pass sent over the main connection alone. */
	assert_int_equal(sc.lost_in[1], 1);
	assert_int_equal(sc.lost_in[2], 2);
	assert_int_equal(sc.finals, 2);
	assert_int_equal(sc.passes, 3);
	assert_int_equal(st.pass, 3);
	assert_int_equal(st.connections, 1);
	assert_memory_equal(sc.mem, src, MEM);

	for (unsigned i = 0; i < CONNS; i++)
		if (sc.fd[i] >= 0)
			close(sc.fd[i]);
	close(sc.lfd);
	unlink(sc.path);
	ferry_session_destroy(j.s);
	free(sc.mem);
	munmap(src, MEM);
}

/* Two ends of a loopback TCP connection, each wrapped as a channel. */
#define CMEM (8u << 20)
#define CREC (64u << 10)

struct conn_pair {
	ferry_session *s;
	struct fy_chan a, b;	/* a: the source's end, b: the destination's */
	struct fy_region src, dst;
};

static void pair_open(struct conn_pair *p, uint32_t chunk)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	struct ferry_config cfg;
	int l, fd[2];

	ferry_config_init(&cfg);
	cfg.ops = &ops;
	cfg.chunk_bytes = chunk;
	assert_int_equal(ferry_session_new(&cfg, &p->s), 0);
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(l >= 0);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &len), 0);
	fd[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(fd[0], (struct sockaddr *)&sa, len), 0);
	fd[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(fd[1] >= 0);
	close(l);
	/* As the engine's sockets: blocked calls come back to look at the
	 * cancel flag, which a failing thread of a test raises. */
	fy_transport_tune(fd[0], FY_TICK_MS);
	fy_transport_tune(fd[1], FY_TICK_MS);
	assert_int_equal(fy_chan_init(&p->a, p->s, fd[0]), 0);
	assert_int_equal(fy_chan_init(&p->b, p->s, fd[1]), 0);
	p->src = (struct fy_region){ .size = CMEM, .fd = -1, .name = "ram0" };
	p->dst = p->src;
	p->src.host = mmap(NULL, CMEM, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	p->dst.host = mmap(NULL, CMEM, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p->src.host != MAP_FAILED && p->dst.host != MAP_FAILED);
	/* Every 4th page zero, the rest a pattern that compresses somewhat. */
	for (size_t i = 0; i < CMEM; i += 8)
		if ((i / 4096) % 4 != 3)
			*(uint64_t *)(p->src.host + i) = (i / 64) * 0x9e37ull;
}

static void pair_close(struct conn_pair *p)
{
	fy_chan_close(&p->a);
	fy_chan_close(&p->b);
	munmap(p->src.host, CMEM);
	munmap(p->dst.host, CMEM);
	ferry_session_destroy(p->s);
}

/* Send every record of the source's memory, @rounds times, and flush. */
static int send_all(struct conn_pair *p, unsigned rounds)
{
	for (unsigned r = 0; r < rounds; r++)
		for (uint64_t off = 0; off < CMEM; off += CREC) {
			struct fy_mem_hdr m = { 0, 0, off, CREC };
			int rc = fy_chan_send_mem(&p->a, &p->src, &m, true);

			if (rc)
				return rc;
		}
	return fy_chan_flush(&p->a);
}

struct duplex {
	struct conn_pair *p;
	unsigned rounds;
	atomic_bool pages_done;	/* the destination has every page record */
	uint32_t requests;	/* sent while the pages flowed */
	int rc_pages, rc_recv, rc_requests;
	char err[256];
};

/* The last request: its seq says the stream of requests is over. */
#define LAST_REQUEST UINT32_MAX

static void *pages_out(void *arg)
{
	struct duplex *d = arg;

	d->rc_pages = send_all(d->p, d->rounds);
	return NULL;
}

/* The destination's receiver: every memory record into its memory. */
static void *pages_in(void *arg)
{
	struct duplex *d = arg;
	unsigned want = d->rounds * (CMEM / CREC);

	for (unsigned i = 0; i < want && !d->rc_recv; i++) {
		struct fy_rec_hdr h;
		struct fy_mem_hdr m;

		d->rc_recv = fy_chan_recv_hdr(&d->p->b, &h, WAIT_MS);
		if (!d->rc_recv && h.type != FY_REC_MEMORY)
			d->rc_recv = -EPROTO;
		if (!d->rc_recv)
			d->rc_recv = fy_chan_recv_mem(&d->p->b, &h, &d->p->dst, 1,
						      &m, d->err, sizeof(d->err));
	}
	if (d->rc_recv) /* the source's thread must not wait for it forever */
		atomic_store(&d->p->s->cancel, true);
	atomic_store(&d->pages_done, true);
	return NULL;
}

/* The destination's requests, the other way on the same connection, for
 * as long as the pages flow. */
static void *requests_out(void *arg)
{
	struct duplex *d = arg;
	uint8_t body[40];
	uint32_t i;

	for (i = 0; !atomic_load(&d->pages_done) && !d->rc_requests; i++) {
		memset(body, (int)(i & 0xff), sizeof(body));
		d->rc_requests = fy_chan_send_rec(&d->p->b, FY_REC_OK, i, body,
						  sizeof(body));
	}
	d->requests = i;
	if (!d->rc_requests)
		d->rc_requests = fy_chan_send_rec(&d->p->b, FY_REC_OK,
						  LAST_REQUEST, NULL, 0);
	return NULL;
}

/*
 * Pages flow one way while requests flow the other, each direction driven
 * by its own thread: every record on both sides arrives whole and passes
 * its checksum, and the memory arrives intact. With one checksum state
 * for both directions, the sender's hashing of a page record and the
 * receiver's hashing of a request would mix, and checksums would fail.
 */
static void test_both_directions_at_once(void **state)
{
	struct conn_pair p;
	struct duplex d = { .p = &p, .rounds = 8 };
	struct fy_rec_hdr h;
	pthread_t t[3];
	uint32_t got = 0;

	(void)state;
	pair_open(&p, CREC);
	p.a.tx.zero_pages = true;
	assert_int_equal(fy_chan_prepare(&p.a), 0);
	assert_int_equal(pthread_create(&t[0], NULL, pages_out, &d), 0);
	assert_int_equal(pthread_create(&t[1], NULL, pages_in, &d), 0);
	assert_int_equal(pthread_create(&t[2], NULL, requests_out, &d), 0);
	for (;; got++) {
		uint8_t want[40];

		assert_int_equal(fy_chan_recv_hdr(&p.a, &h, WAIT_MS), 0);
		assert_int_equal(fy_chan_recv_body(&p.a, &h), 0);
		if (h.seq == LAST_REQUEST)
			break;
		assert_int_equal(h.seq, got);
		memset(want, (int)(got & 0xff), sizeof(want));
		assert_int_equal(p.a.rx.in.len, sizeof(want));
		assert_memory_equal(p.a.rx.in.data, want, sizeof(want));
	}
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(got, d.requests);
	/* The requests did flow while the pages did. */
	assert_true(got > 100);
	if (d.rc_recv)
		fail_msg("receive: %s: %s", ferry_strerror(d.rc_recv), d.err);
	assert_int_equal(d.rc_pages, 0);
	assert_int_equal(d.rc_requests, 0);
	assert_memory_equal(p.dst.host, p.src.host, CMEM);
	/* Each side counted what it sent and what it received. */
	assert_int_equal(fy_chan_wire_bytes(&p.a), fy_chan_wire_bytes(&p.b));
	pair_close(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lost_parts_are_sent_again),
		cmocka_unit_test(test_both_directions_at_once),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
