// SPDX-License-Identifier: MIT
/*
 * test_tls.c - TLS sessions (src/transport/tls.c) over a socketpair with
 * certificates made at test time: a good x509 handshake (mutual) and a
 * good PSK one, each carrying data both ways, and every refusal with the
 * message that names its cause. The server side runs in a thread, as a
 * destination's listener would.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <gnutls/gnutls.h>

#include "tlsgen.h"
#include "transport/tls.h"

static char good[256], other[256], expired[256], top[256];

struct end {
	struct fy_tls_config cfg;
	bool server;
	int fd;
	int rc;
	char err[512];
	size_t payload; /* bytes to send after the handshake, then echo */
	uint8_t *got;
};

static void path(char *out, size_t n, const char *dir, const char *f)
{
	snprintf(out, n, "%.400s/%.40s", dir, f);
}

/* x509 files of one role from @dir (CA from @cadir). */
static char files[8][4][512];
static int nfiles;
static struct fy_tls_config x509(const char *cadir, const char *dir,
				 const char *role, const char *peers)
{
	char (*f)[512] = files[nfiles++ % 8];
	struct fy_tls_config c = { 0 };
	char cert[64], key[64];

	snprintf(cert, sizeof(cert), "%s-cert.pem", role);
	snprintf(key, sizeof(key), "%s-key.pem", role);
	path(f[0], 512, cadir, "ca-cert.pem");
	path(f[1], 512, dir, cert);
	path(f[2], 512, dir, key);
	c.ca_file = f[0];
	c.cert_file = f[1];
	c.key_file = f[2];
	c.peer_names = peers;
	return c;
}

static int make_dir(char *out, size_t n, const char *name,
		    const struct tlsgen_opts *o)
{
	char err[256];

	snprintf(out, n, "%.200s/%.20s", top, name);
	if (mkdir(out, 0700))
		return -1;
	return tlsgen_make(out, o, err, sizeof(err));
}

static int setup(void **state)
{
	struct tlsgen_opts old = { .expired = true };
	char tmpl[] = "/tmp/ferry-tls-test-XXXXXX";

	(void)state;
	if (!mkdtemp(tmpl))
		return -1;
	snprintf(top, sizeof(top), "%s", tmpl);
	if (make_dir(good, sizeof(good), "good", NULL) ||
	    make_dir(other, sizeof(other), "other", NULL) ||
	    make_dir(expired, sizeof(expired), "expired", &old))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", top);
	return system(cmd) == 0 ? 0 : -1;
}

static int idle_ok(void *opaque, bool sending, uint64_t since)
{
	(void)opaque;
	(void)sending;
	(void)since;
	return 0;
}

/* Send the payload: a small piece, a long run, a small piece. */
static int give(struct fy_tls *t, const struct end *e)
{
	uint8_t *out = malloc(e->payload);
	int rc;

	for (size_t i = 0; i < e->payload; i++)
		out[i] = (uint8_t)(i * 7 + e->server);
	struct iovec iov[3] = { { out, 5 },
				{ out + 5, e->payload - 10 },
				{ out + e->payload - 5, 5 } };
	rc = fy_tls_send(t, iov, 3, false);
	free(out);
	return rc;
}

/* Receive the peer's payload into e->got. */
static int take(struct fy_tls *t, struct end *e)
{
	size_t got = 0;

	e->got = malloc(e->payload);
	while (got < e->payload) {
		ssize_t r = fy_tls_recv(t, e->got + got, e->payload - got);

		if (r <= 0)
			return r ? (int)r : -ECONNRESET;
		got += (size_t)r;
	}
	return 0;
}

/* One end: load, handshake, then send @payload and read it back. */
static void *run_end(void *arg)
{
	struct end *e = arg;
	struct fy_tls_creds *cr = NULL;
	struct fy_tls *t = NULL;

	e->rc = fy_tls_creds_load(&e->cfg, e->server, &cr, e->err,
				  sizeof(e->err));
	if (!e->rc)
		e->rc = fy_tls_start(cr, e->fd, 3000, idle_ok, NULL, &t, e->err,
				     sizeof(e->err));
	if (!e->rc && e->payload) {
		/* The client sends first, the server reads first: neither
		 * waits on a full socket while the other does too. */
		if (e->server)
			e->rc = take(t, e);
		if (!e->rc)
			e->rc = give(t, e);
		if (!e->rc && !e->server)
			e->rc = take(t, e);
	}
	if (!e->rc)
		fy_tls_describe(t, e->err, sizeof(e->err));
	fy_tls_free(t);
	fy_tls_creds_free(cr);
	/* The peer sees the end of the connection at once. */
	shutdown(e->fd, SHUT_RDWR);
	return NULL;
}

static void socket_pair(int sv[2])
{
	struct timeval tv = { 0, 100 * 1000 };

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	for (int i = 0; i < 2; i++) {
		setsockopt(sv[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(sv[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
}

/* Run a client and a server against each other. */
static void pair(struct end *cli, struct end *srv)
{
	pthread_t th;
	int sv[2];

	socket_pair(sv);
	cli->server = false;
	srv->server = true;
	cli->fd = sv[0];
	srv->fd = sv[1];
	assert_int_equal(pthread_create(&th, NULL, run_end, srv), 0);
	run_end(cli);
	pthread_join(th, NULL);
	close(sv[0]);
	close(sv[1]);
}

static void check_data(const struct end *e, int from_server)
{
	for (size_t i = 0; i < e->payload; i++)
		if (e->got[i] != (uint8_t)(i * 7 + from_server))
			fail_msg("byte %zu differs", i);
}

static void test_x509_mutual(void **state)
{
	struct end cli = { .cfg = x509(good, good, "client", "localhost"),
			   .payload = 1 << 20 };
	struct end srv = { .cfg = x509(good, good, "server", "ferry-client"),
			   .payload = 1 << 20 };

	(void)state;
	pair(&cli, &srv);
	assert_int_equal(cli.rc, 0);
	assert_int_equal(srv.rc, 0);
	assert_non_null(strstr(srv.err, "x509"));
	check_data(&cli, 1);
	check_data(&srv, 0);
	free(cli.got);
	free(srv.got);
}

static const char *psk_file(const char *name, const char *line)
{
	static char p[4][300];
	static int n;
	char *out = p[n++ % 4];
	FILE *f;

	snprintf(out, 300, "%s/%s", top, name);
	f = fopen(out, "w");
	assert_non_null(f);
	fputs(line, f);
	fclose(f);
	return out;
}

static void test_psk(void **state)
{
	const char *keys = psk_file("keys.psk",
				    "# comment\nother:00112233\nferry:0123456789abcdef0123456789abcdef\n");
	struct end cli = { .cfg = { .psk_file = keys, .psk_identity = "ferry" },
			   .payload = 300000 };
	struct end srv = { .cfg = { .psk_file = keys }, .payload = 300000 };

	(void)state;
	pair(&cli, &srv);
	assert_int_equal(cli.rc, 0);
	assert_int_equal(srv.rc, 0);
	assert_non_null(strstr(cli.err, "PSK"));
	check_data(&cli, 1);
	check_data(&srv, 0);
	free(cli.got);
	free(srv.got);
}

static void test_psk_mismatch(void **state)
{
	struct end cli = { .cfg = { .psk_file = psk_file("a.psk", "ferry:00112233445566778899aabbccddeeff\n") } };
	struct end srv = { .cfg = { .psk_file = psk_file("b.psk", "ferry:ffeeddccbbaa99887766554433221100\n") } };

	(void)state;
	pair(&cli, &srv);
	assert_int_not_equal(cli.rc, 0);
	assert_int_not_equal(srv.rc, 0);
	print_message("client: %s\nserver: %s\n", cli.err, srv.err);
	assert_non_null(strstr(srv.err, "pre-shared key"));
}

static void test_psk_unknown_identity(void **state)
{
	struct end cli = { .cfg = { .psk_file = psk_file("c.psk", "stranger:00112233445566778899aabbccddeeff\n") } };
	struct end srv = { .cfg = { .psk_file = psk_file("d.psk", "ferry:00112233445566778899aabbccddeeff\n") } };

	(void)state;
	pair(&cli, &srv);
	assert_int_not_equal(srv.rc, 0);
	assert_int_not_equal(cli.rc, 0);
	print_message("client: %s\nserver: %s\n", cli.err, srv.err);
	assert_non_null(strstr(srv.err, "\"stranger\" is not in"));
}

static void test_other_ca(void **state)
{
	struct end cli = { .cfg = x509(other, other, "client", NULL) };
	struct end srv = { .cfg = x509(good, good, "server", NULL) };

	(void)state;
	/* The client trusts the server's CA, but its own certificate is
	 * from another CA: the server refuses it. */
	cli.cfg.ca_file = srv.cfg.ca_file;
	pair(&cli, &srv);
	print_message("client: %s\nserver: %s\n", cli.err, srv.err);
	assert_int_equal(srv.rc, -EACCES);
	assert_non_null(strstr(srv.err, "is not signed by the CA in"));
	assert_non_null(strstr(srv.err, "good/ca-cert.pem"));
	assert_int_not_equal(cli.rc, 0);
	assert_non_null(strstr(cli.err, "did not accept our certificate"));
}

static void test_server_from_other_ca(void **state)
{
	struct end cli = { .cfg = x509(good, good, "client", NULL) };
	struct end srv = { .cfg = x509(other, other, "server", NULL) };

	(void)state;
	srv.cfg.ca_file = cli.cfg.ca_file;
	pair(&cli, &srv);
	assert_int_equal(cli.rc, -EACCES);
	assert_non_null(strstr(cli.err, "is not signed by the CA in"));
	assert_int_not_equal(srv.rc, 0);
}

static void test_wrong_peer_name(void **state)
{
	struct end cli = { .cfg = x509(good, good, "client", NULL) };
	struct end srv = { .cfg = x509(good, good, "server", "alice,bob") };

	(void)state;
	pair(&cli, &srv);
	print_message("server: %s\n", srv.err);
	assert_int_equal(srv.rc, -EACCES);
	assert_non_null(strstr(srv.err, "names none of the accepted peers (alice,bob)"));
	assert_int_not_equal(cli.rc, 0);
}

static void test_expired(void **state)
{
	struct end cli = { .cfg = x509(expired, expired, "client", NULL) };
	struct end srv = { .cfg = x509(expired, expired, "server", NULL) };

	(void)state;
	pair(&cli, &srv);
	print_message("client: %s\nserver: %s\n", cli.err, srv.err);
	assert_int_equal(srv.rc, -EACCES);
	assert_non_null(strstr(srv.err, "the peer's certificate expired on"));
	assert_int_not_equal(cli.rc, 0);
}

/* A server without a client certificate request answered by a raw GnuTLS
 * client that has no certificate. */
static void *bare_client(void *arg)
{
	struct end *e = arg;
	gnutls_certificate_credentials_t cred;
	gnutls_session_t s;

	gnutls_certificate_allocate_credentials(&cred);
	gnutls_certificate_set_x509_trust_file(cred, e->cfg.ca_file,
					       GNUTLS_X509_FMT_PEM);
	gnutls_init(&s, GNUTLS_CLIENT);
	gnutls_set_default_priority(s);
	gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred);
	gnutls_transport_set_int(s, e->fd);
	do {
		e->rc = gnutls_handshake(s);
	} while (e->rc == GNUTLS_E_AGAIN || e->rc == GNUTLS_E_INTERRUPTED);
	if (!e->rc) {
		/* TLS 1.3: the server's refusal comes after our Finished. */
		char b[16];

		do {
			e->rc = (int)gnutls_record_recv(s, b, sizeof(b));
		} while (e->rc == GNUTLS_E_AGAIN || e->rc == GNUTLS_E_INTERRUPTED);
	}
	gnutls_deinit(s);
	gnutls_certificate_free_credentials(cred);
	shutdown(e->fd, SHUT_RDWR);
	return NULL;
}

static void test_no_client_certificate(void **state)
{
	struct end cli = { .cfg = x509(good, good, "client", NULL) };
	struct end srv = { .cfg = x509(good, good, "server", NULL),
			   .server = true };
	pthread_t th;
	int sv[2];

	(void)state;
	socket_pair(sv);
	cli.fd = sv[0];
	srv.fd = sv[1];
	assert_int_equal(pthread_create(&th, NULL, bare_client, &cli), 0);
	run_end(&srv);
	pthread_join(th, NULL);
	close(sv[0]);
	close(sv[1]);
	print_message("server: %s\n", srv.err);
	assert_int_equal(srv.rc, -EACCES);
	assert_non_null(strstr(srv.err, "presented no certificate"));
	assert_true(cli.rc < 0);
}

/* A peer that writes @bytes in plaintext and reads what comes. */
struct plain {
	int fd;
	const void *bytes;
	size_t len;
};

static void *plain_peer(void *arg)
{
	struct plain *p = arg;
	char sink[4096];

	if (write(p->fd, p->bytes, p->len) != (ssize_t)p->len)
		return NULL;
	for (int i = 0; i < 20 && recv(p->fd, sink, sizeof(sink), 0) != 0; i++)
		;
	shutdown(p->fd, SHUT_RDWR);
	return NULL;
}

static void against_plain(struct end *e, const void *bytes, size_t len)
{
	struct plain p = { .bytes = bytes, .len = len };
	pthread_t th;
	int sv[2];

	socket_pair(sv);
	p.fd = sv[0];
	e->fd = sv[1];
	assert_int_equal(pthread_create(&th, NULL, plain_peer, &p), 0);
	run_end(e);
	pthread_join(th, NULL);
	close(sv[0]);
	close(sv[1]);
}

static void test_plaintext_client(void **state)
{
	static const char stream[] = "FERRYMIG\x01\x00\x00\x00\xaa\xbb\xcc\xdd";
	struct end srv = { .cfg = x509(good, good, "server", NULL),
			   .server = true };

	(void)state;
	against_plain(&srv, stream, sizeof(stream) - 1);
	assert_int_equal(srv.rc, -EPROTONOSUPPORT);
	assert_non_null(strstr(srv.err, "plaintext ferry stream"));
}

static void test_plaintext_server(void **state)
{
	/* What a listener without TLS answers a stranger: an ERROR record. */
	static const uint8_t error_rec[] = { 0x01, 0x01, 0, 0, 40, 0, 0, 0,
					     0, 0, 0, 0, 0, 0, 0, 0 };
	struct end cli = { .cfg = x509(good, good, "client", NULL) };

	(void)state;
	against_plain(&cli, error_rec, sizeof(error_rec));
	print_message("client: %s\n", cli.err);
	assert_int_equal(cli.rc, -EPROTO);
	assert_non_null(strstr(cli.err, "does not use TLS"));
}

static void test_silent_peer_deadline(void **state)
{
	struct end cli = { .cfg = x509(good, good, "client", NULL) };
	int sv[2];

	(void)state;
	socket_pair(sv);
	cli.fd = sv[0];
	run_end(&cli); /* nobody answers: the 3 s deadline ends it */
	close(sv[0]);
	close(sv[1]);
	assert_int_equal(cli.rc, -ETIMEDOUT);
	assert_non_null(strstr(cli.err, "did not complete in time"));
}

static void test_missing_files(void **state)
{
	struct fy_tls_config c = x509(good, good, "client", NULL);
	struct fy_tls_creds *cr;
	char err[512];

	(void)state;
	c.key_file = "/nonexistent/client-key.pem";
	assert_int_equal(fy_tls_creds_load(&c, false, &cr, err, sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/client-key.pem"));
	c = (struct fy_tls_config){ .psk_file = psk_file("bad.psk", "ferry:xyz\n") };
	assert_int_equal(fy_tls_creds_load(&c, true, &cr, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "line 1 is not identity:hexkey"));
	c = (struct fy_tls_config){ .ca_file = "/x", .psk_file = "/y" };
	assert_int_equal(fy_tls_config_check(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "exclude each other"));
}

/* A failed send is kept: the peer that stopped reading -------------- */

struct stall {
	const char *prio;
	const char *keys; /* written once, before the server starts */
	int fd;
	int rc;
	char err[512];
	pthread_barrier_t step;
};

/* Ends a wait on a full socket with -ETIMEDOUT while *@opaque is set. */
static int idle_fail(void *opaque, bool sending, uint64_t since)
{
	(void)sending;
	(void)since;
	return *(volatile int *)opaque ? -ETIMEDOUT : 0;
}

/* The server: handshake, then read nothing until the client's send has
 * failed, then take every byte off the socket so that a later send
 * would find room. */
static void *stall_server(void *arg)
{
	struct stall *s = arg;
	struct fy_tls_config c = { .psk_file = s->keys, .priority = s->prio };
	struct fy_tls_creds *cr = NULL;
	struct fy_tls *t = NULL;
	uint8_t junk[65536];

	s->rc = fy_tls_creds_load(&c, true, &cr, s->err, sizeof(s->err));
	if (!s->rc)
		s->rc = fy_tls_start(cr, s->fd, 3000, idle_ok, NULL, &t,
				     s->err, sizeof(s->err));
	pthread_barrier_wait(&s->step); /* handshake done */
	pthread_barrier_wait(&s->step); /* the client's send failed */
	while (recv(s->fd, junk, sizeof(junk), MSG_DONTWAIT) > 0)
		;
	pthread_barrier_wait(&s->step); /* drained */
	pthread_barrier_wait(&s->step); /* the client is done */
	fy_tls_free(t);
	fy_tls_creds_free(cr);
	return NULL;
}

/* A send that failed (here: the caller's idle() ended a wait on a full
 * socket, with records already sealed) is returned by every later send, even once the socket has
 * room again: records sent after lost ones would carry sequence numbers
 * the peer cannot follow. Both record layers: ours (TLS 1.3) and
 * GnuTLS's (TLS 1.2). */
static void failed_send_is_kept(const char *prio, const char *layer)
{
	/* One file for both ends, written before the server thread reads
	 * it (psk_file() is not for two threads, and rewriting the file
	 * while the other end loads it gave that end an empty key file). */
	const char *keys = psk_file("stall.psk", "ferry:00112233445566778899aabbccddeeff\n");
	struct stall s = { .prio = prio, .keys = keys };
	struct fy_tls_config c = { .psk_file = keys, .priority = prio };
	struct fy_tls_creds *cr = NULL;
	struct fy_tls *t = NULL;
	size_t big = 8 << 20;
	uint8_t *buf = calloc(1, big);
	volatile int fail = 0;
	char err[512], what[200];
	pthread_t th;
	int sv[2];

	assert_non_null(buf);
	socket_pair(sv);
	s.fd = sv[1];
	pthread_barrier_init(&s.step, NULL, 2);
	assert_int_equal(pthread_create(&th, NULL, stall_server, &s), 0);
	assert_int_equal(fy_tls_creds_load(&c, false, &cr, err, sizeof(err)), 0);
	assert_int_equal(fy_tls_start(cr, sv[0], 3000, idle_fail, (void *)&fail,
				      &t, err, sizeof(err)), 0);
	pthread_barrier_wait(&s.step);
	assert_int_equal(s.rc, 0);
	fy_tls_describe(t, what, sizeof(what));
	print_message("%s\n", what);
	assert_non_null(strstr(what, layer));
	/* Fill the socket behind the session's back, so that the records
	 * of a small send are sealed (GnuTLS's sequence numbers move on)
	 * and then find no room. */
	for (size_t k = 65536; k; k /= 2)
		while (send(sv[0], buf, k, MSG_DONTWAIT) > 0)
			;
	fail = 1;
	struct iovec v = { buf, 1000 };
	assert_int_equal(fy_tls_send(t, &v, 1, false), -ETIMEDOUT);
	pthread_barrier_wait(&s.step);
	pthread_barrier_wait(&s.step);
	fail = 0;
	v.iov_len = 100;
	assert_int_equal(fy_tls_send(t, &v, 1, false), -ETIMEDOUT);
	fail = 1; /* a wrong answer must not hang the test */
	v.iov_len = big;
	assert_int_equal(fy_tls_send(t, &v, 1, true), -ETIMEDOUT);
	pthread_barrier_wait(&s.step);
	pthread_join(th, NULL);
	pthread_barrier_destroy(&s.step);
	fy_tls_free(t);
	fy_tls_creds_free(cr);
	close(sv[0]);
	close(sv[1]);
	free(buf);
}

static void test_failed_send_kept_tls13(void **state)
{
	(void)state;
	failed_send_is_kept(NULL, "ferry's records");
}

static void test_failed_send_kept_tls12(void **state)
{
	(void)state;
	failed_send_is_kept("NORMAL:-VERS-ALL:+VERS-TLS1.2", "GnuTLS's records");
}

static void test_ktls_probe(void **state)
{
	char why[256];

	(void)state;
	if (!fy_tls_ktls_probe(why, sizeof(why))) {
		print_message("skipped: %s\n", why);
		skip();
	}
	print_message("%s\n", why);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_x509_mutual),
		cmocka_unit_test(test_psk),
		cmocka_unit_test(test_psk_mismatch),
		cmocka_unit_test(test_psk_unknown_identity),
		cmocka_unit_test(test_other_ca),
		cmocka_unit_test(test_server_from_other_ca),
		cmocka_unit_test(test_wrong_peer_name),
		cmocka_unit_test(test_expired),
		cmocka_unit_test(test_no_client_certificate),
		cmocka_unit_test(test_plaintext_client),
		cmocka_unit_test(test_plaintext_server),
		cmocka_unit_test(test_silent_peer_deadline),
		cmocka_unit_test(test_missing_files),
		cmocka_unit_test(test_failed_send_kept_tls13),
		cmocka_unit_test(test_failed_send_kept_tls12),
		cmocka_unit_test(test_ktls_probe),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
