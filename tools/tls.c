// SPDX-License-Identifier: MIT
/*
 * tls.c - the CLI's TLS: the migrate command's --tls-* options (passed to
 * the source's ferry-vm with absolute paths), and `ferry tls-certs`, a
 * throwaway CA with the files of QEMU's tls-creds-x509 directory.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <json-c/json.h>

#include "cli.h"
#include "migrate_args.h" /* the TLS engines' names */
#include "tlsgen.h"

const char cli_tls_usage[] =
	"  --tls-creds DIR          TLS with x509 on every connection: DIR holds\n"
	"                           ca-cert.pem, client-cert.pem, client-key.pem\n"
	"                           (the source presents the client certificate)\n"
	"                           and optional ca-crl.pem; the destination needs\n"
	"                           its own (ferry-vm --tls-creds). Default: the\n"
	"                           source ferry-vm's own --tls-* settings\n"
	"  --tls-psk FILE           TLS with a pre-shared key (identity:hexkey\n"
	"                           lines; the first is used)\n"
	"  --tls-peer NAME          accept only a destination whose certificate\n"
	"                           names NAME (repeatable)\n"
	"  --tls-priority STR       GnuTLS priority string (ciphers)\n"
	"  --tls-engine E           what seals and opens the source's TLS 1.3\n"
	"                           records: auto (Intel's ipsec-mb where ferry\n"
	"                           was built with it and the CPU has AES-NI, the\n"
	"                           faster; else GnuTLS), gnutls (GnuTLS's AEAD\n"
	"                           always: a policy that allows only GnuTLS's\n"
	"                           crypto, or to compare), ipsec-mb (ipsec-mb\n"
	"                           or the migration fails, saying why) or ktls\n"
	"                           (the kernel's TLS, opt-in, or the migration\n"
	"                           fails, saying why). Default:\n"
	"                           the source ferry-vm's --tls-engine (auto). The\n"
	"                           destination's is its own ferry-vm --tls-engine\n";

/* Add @path to @args under @key as an absolute path. */
static int add_path(const char *cmd, json_object *args, const char *key,
		    const char *opt, const char *path)
{
	char abs[PATH_MAX];

	if (!realpath(path, abs))
		return cli_usage_error(cmd, "%s '%s': no such file or directory",
				       opt, path);
	json_object_object_add(args, key, json_object_new_string(abs));
	return 0;
}

/**
 * cli_tls_option() - apply --tls-creds, --tls-psk, --tls-peer,
 * --tls-priority or --tls-engine (@c) to the migrate command's @args.
 *
 * Return: 0, or CLI_EXIT_USAGE after saying why.
 */
int cli_tls_option(const char *cmd, int c, const char *val, json_object *args)
{
	json_object *prev;
	char *joined;

	switch (c) {
	case CLI_OPT_TLS_CREDS:
		return add_path(cmd, args, "tls_creds", "--tls-creds", val);
	case CLI_OPT_TLS_PSK:
		return add_path(cmd, args, "tls_psk", "--tls-psk", val);
	case CLI_OPT_TLS_PRIORITY:
		json_object_object_add(args, "tls_priority",
				       json_object_new_string(val));
		return 0;
	case CLI_OPT_TLS_ENGINE:
		if (cli_check_name(cmd, "--tls-engine", val, vm_tls_engines))
			return CLI_EXIT_USAGE;
		json_object_object_add(args, "tls_engine",
				       json_object_new_string(val));
		return 0;
	case CLI_OPT_TLS_PEER:
		if (!val[0] || strchr(val, ','))
			return cli_usage_error(cmd, "--tls-peer wants one name, not '%s'", val);
		if (!json_object_object_get_ex(args, "tls_peer", &prev)) {
			json_object_object_add(args, "tls_peer",
					       json_object_new_string(val));
			return 0;
		}
		if (asprintf(&joined, "%s,%s", json_object_get_string(prev), val) < 0)
			return CLI_EXIT_USAGE;
		json_object_object_add(args, "tls_peer", json_object_new_string(joined));
		free(joined);
		return 0;
	}
	return CLI_EXIT_USAGE;
}

static const char tls_certs_usage[] =
	"Usage: ferry tls-certs DIR [OPTIONS]\n"
	"\n"
	"Make a throwaway CA and the files of a tls-creds-x509 directory in DIR\n"
	"(created if missing): ca-cert.pem, ca-key.pem, server-cert.pem,\n"
	"server-key.pem, client-cert.pem, client-key.pem. ECDSA P-256 keys,\n"
	"valid for a day. For trying TLS out and for tests: a real deployment\n"
	"uses its own CA.\n"
	"\n"
	"Options:\n"
	"  --server-name NAME   the server certificate's DNS name (default\n"
	"                       localhost; it also names 127.0.0.1 and ::1)\n"
	"  --client-name NAME   the client certificate's (default ferry-client)\n"
	"  --expired            the client certificate expired yesterday (tests)\n"
	"  -h, --help           show this help\n";

/**
 * cmd_tls_certs() - `ferry tls-certs DIR`.
 */
int cmd_tls_certs(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "server-name", required_argument, NULL, 's' },
		{ "client-name", required_argument, NULL, 'c' },
		{ "expired", no_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct tlsgen_opts o = { 0 };
	char err[512];
	int c;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			o.server_name = optarg;
			break;
		case 'c':
			o.client_name = optarg;
			break;
		case 'e':
			o.expired = true;
			break;
		case 'h':
			fputs(tls_certs_usage, stdout);
			return CLI_EXIT_OK;
		default:
			return cli_option_error("tls-certs", c, argv);
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("tls-certs", "expected DIR");
	mkdir(argv[optind], 0700);
	if (tlsgen_make(argv[optind], &o, err, sizeof(err))) {
		fprintf(stderr, "ferry tls-certs: %s\n", err);
		return CLI_EXIT_FAIL;
	}
	printf("%s: ca-cert.pem server-cert.pem server-key.pem client-cert.pem client-key.pem\n",
	       argv[optind]);
	return CLI_EXIT_OK;
}
