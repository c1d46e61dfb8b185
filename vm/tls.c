// SPDX-License-Identifier: MIT
/*
 * tls.c - ferry-vm's TLS options: --tls-creds DIR (the files of QEMU's
 * tls-creds-x509 directory), --tls-psk FILE (identity:hexkey lines, as
 * QEMU's tls-creds-psk), --tls-peer NAME, --tls-priority STRING and
 * --tls-engine auto|gnutls|ipsec-mb|ktls, and the same as arguments of the
 * migrate command. The role picks the files: a destination (the side
 * that accepts) presents server-*.pem, a source client-*.pem; both trust
 * ca-cert.pem and honour ca-crl.pem when the directory has one.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migrate_args.h"
#include "vm.h"

/* Is @path a directory? */
static bool is_dir(const char *path)
{
	struct stat st;

	return !stat(path, &st) && S_ISDIR(st.st_mode);
}

/* Append @name to the comma-separated list @list. */
static int add_peer(char *list, size_t len, const char *name)
{
	size_t used = strlen(list);

	if (!name[0] || strchr(name, ',') ||
	    used + strlen(name) + 2 > len)
		return -1;
	snprintf(list + used, len - used, "%s%s", used ? "," : "", name);
	return 0;
}

/* @arg as a FERRY_TLS_ENGINE_* value, or -1. */
static int engine_of(const char *arg)
{
	for (int i = 0; vm_tls_engines[i]; i++)
		if (!strcmp(arg, vm_tls_engines[i]))
			return i;
	return -1;
}

/**
 * vm_tls_set() - take one TLS setting (@key: "creds", "psk", "peer",
 * "priority", "engine") into @t, with the reason in @err when it is
 * refused.
 * Return: 0 or -1.
 */
int vm_tls_set(struct vm_tls *t, const char *key, const char *arg, char *err,
	       size_t errlen)
{
	if (!strcmp(key, "creds")) {
		if (!is_dir(arg) || strlen(arg) >= sizeof(t->dir)) {
			snprintf(err, errlen, "tls-creds '%s': need a directory holding ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem and client-key.pem", arg);
			return -1;
		}
		snprintf(t->dir, sizeof(t->dir), "%s", arg);
	} else if (!strcmp(key, "psk")) {
		if (access(arg, R_OK) || strlen(arg) >= sizeof(t->psk)) {
			snprintf(err, errlen, "tls-psk '%s': need a readable file of identity:hexkey lines", arg);
			return -1;
		}
		snprintf(t->psk, sizeof(t->psk), "%s", arg);
	} else if (!strcmp(key, "peer")) {
		if (add_peer(t->peers, sizeof(t->peers), arg)) {
			snprintf(err, errlen, "tls-peer '%s': need a name (no comma; at most 1000 bytes of names in all)", arg);
			return -1;
		}
	} else if (!strcmp(key, "priority")) {
		if (!arg[0] || strlen(arg) >= sizeof(t->prio)) {
			snprintf(err, errlen, "tls-priority: need a GnuTLS priority string shorter than %zu bytes", sizeof(t->prio));
			return -1;
		}
		snprintf(t->prio, sizeof(t->prio), "%s", arg);
	} else if (!strcmp(key, "engine")) {
		t->engine = engine_of(arg);
		if (t->engine < 0) {
			t->engine = FERRY_TLS_ENGINE_AUTO;
			snprintf(err, errlen, "tls-engine '%.64s': need auto, gnutls, ipsec-mb or ktls", arg);
			return -1;
		}
	} else {
		snprintf(err, errlen, "unknown TLS setting '%s'", key);
		return -1;
	}
	if (t->dir[0] && t->psk[0]) {
		snprintf(err, errlen, "tls-creds and tls-psk exclude each other: x509 or a pre-shared key");
		return -1;
	}
	return 0;
}

/* @t's directory + @name into @out; "" if @optional and absent. */
static void file_of(const struct vm_tls *t, const char *name, bool optional,
		    char *out, size_t len)
{
	snprintf(out, len, "%.4000s/%s", t->dir, name);
	if (optional && access(out, F_OK))
		out[0] = 0;
}

/**
 * vm_tls_apply() - put @t into @cfg for a @server (destination) or a
 * source. The paths live in @t, which must outlive ferry_session_new()
 * (the library copies them).
 */
void vm_tls_apply(struct vm_tls *t, struct ferry_config *cfg, bool server)
{
	const char *role = server ? "server" : "client";
	char name[32];

	if (t->dir[0]) {
		file_of(t, "ca-cert.pem", false, t->ca, sizeof(t->ca));
		snprintf(name, sizeof(name), "%s-cert.pem", role);
		file_of(t, name, false, t->cert, sizeof(t->cert));
		snprintf(name, sizeof(name), "%s-key.pem", role);
		file_of(t, name, false, t->key, sizeof(t->key));
		file_of(t, "ca-crl.pem", true, t->crl, sizeof(t->crl));
		cfg->tls_ca_file = t->ca;
		cfg->tls_cert_file = t->cert;
		cfg->tls_key_file = t->key;
		cfg->tls_crl_file = t->crl[0] ? t->crl : NULL;
		cfg->tls_peer_names = t->peers[0] ? t->peers : NULL;
	}
	if (t->psk[0])
		cfg->tls_psk_file = t->psk;
	if (t->prio[0] && (t->dir[0] || t->psk[0]))
		cfg->tls_priority = t->prio;
	cfg->tls_engine = (uint32_t)t->engine;
}

/**
 * vm_tls_describe() - "x509 DIR", "PSK FILE" (and the engine when one is
 * asked for: "x509 DIR, engine gnutls") or "off", for the start-up line.
 */
void vm_tls_describe(const struct vm_tls *t, char *buf, size_t len)
{
	const char *eng = t->engine != FERRY_TLS_ENGINE_AUTO ?
				  vm_tls_engines[t->engine] : NULL;

	if (t->dir[0])
		snprintf(buf, len, "x509 %.200s", t->dir);
	else if (t->psk[0])
		snprintf(buf, len, "PSK %.200s", t->psk);
	else
		snprintf(buf, len, "off");
	if (eng && (t->dir[0] || t->psk[0]))
		snprintf(buf + strlen(buf), len - strlen(buf), ", engine %s", eng);
}
