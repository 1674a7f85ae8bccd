/*
 * dkim-keygen: a new DKIM private key in a file only its owner can read,
 * and the DNS record that publishes its public half, on stdout, on one
 * line (docs/deliverability.md says where it goes and how to rotate).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "cli.h"
#include "sign.h"
#include "xmalloc.h"

/* Writes all of data to a new file (never an existing one, never through
 * a symlink), mode 0600 whatever the umask, synced. */
static int write_new(const char *path, const char *data, size_t len, struct err *e)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		if (errno == EEXIST)
			return err_set(e, ERR_INPUT,
			               "%s exists; matrixctl never overwrites a key (remove it "
			               "first, or choose another --out)",
			               path);
		return err_sys(e, "%s", path);
	}
	int rc = fchmod(fd, 0600);
	for (size_t off = 0; rc == 0 && off < len;) {
		ssize_t n = write(fd, data + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = -1;
			break;
		}
		off += (size_t)n;
	}
	if (rc == 0)
		rc = fsync(fd);
	if (close(fd) < 0)
		rc = -1;
	if (rc < 0) {
		err_sys(e, "%s", path);
		unlink(path);
		return -1;
	}
	return 0;
}

int cmd_dkim_keygen(struct cli *c, int argc, char **argv)
{
	static const char usage[] =
	    "dkim-keygen --selector S [--type rsa|ed25519] [--bits N] --out FILE";
	static const struct option opts[] = {{"selector", required_argument, NULL, 's'},
	                                     {"type", required_argument, NULL, 't'},
	                                     {"bits", required_argument, NULL, 'b'},
	                                     {"out", required_argument, NULL, 'o'},
	                                     {NULL, 0, NULL, 0}};
	const char *selector = NULL, *out = NULL;
	enum sign_type type = SIGN_RSA;
	int bits = 0, ch;
	while ((ch = getopt_long(argc, argv, "s:t:b:o:", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			selector = optarg;
			break;
		case 't':
			if (strcmp(optarg, "rsa") == 0)
				type = SIGN_RSA;
			else if (strcmp(optarg, "ed25519") == 0)
				type = SIGN_ED25519;
			else
				return cli_usage(usage);
			break;
		case 'b': {
			char *end;
			long v = strtol(optarg, &end, 10);
			if (*end || v <= 0 || v > 65536)
				return cli_usage(usage);
			bits = (int)v;
			break;
		}
		case 'o':
			out = optarg;
			break;
		default:
			return cli_usage(usage);
		}
	}
	if (selector == NULL || out == NULL || optind != argc)
		return cli_usage(usage);
	/* what dkim.keys takes, or the key would be made for nothing */
	if (!conf_valid_labels(selector))
		return cli_failf("--selector \"%s\": letters, digits and '-' (not first or last), "
		                 "labels of up to 63 separated by dots, e.g. rsa2026",
		                 selector);
	if (type == SIGN_ED25519 && bits != 0 && bits != 256)
		return cli_failf("--bits applies to RSA keys; an Ed25519 key has 256 bits");
	if (type == SIGN_RSA && bits == 0)
		bits = 2048;
	/* the record names the signing domain: dkim.domain, else site.from's,
	 * as d= has it (an IDN in A-labels) */
	if (cli_need_conf(c) < 0)
		return EXIT_ERR;
	const char *domain = c->conf.dkim.domain;
	char *from_domain = NULL;
	if (domain == NULL || *domain == '\0') {
		from_domain = addr_domain_of(c->conf.site.from);
		if (from_domain == NULL)
			return cli_failf("site.from %s has no domain to sign for; set dkim.domain",
			                 c->conf.site.from);
		domain = from_domain;
	}
	struct buf pem, p;
	buf_init(&pem, BUF_NOLIMIT);
	buf_init(&p, BUF_NOLIMIT);
	struct err e;
	err_clear(&e);
	int rc = EXIT_ERR;
	if (sign_keygen(type, bits, &pem, &p, &e) < 0 ||
	    write_new(out, pem.data, pem.len, &e) < 0) {
		rc = cli_fail(&e);
		goto done;
	}
	printf("%s._domainkey.%s. IN TXT \"v=DKIM1; k=%s; p=%s\"\n", selector, domain,
	       type == SIGN_RSA ? "rsa" : "ed25519", buf_str(&p));
	rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_ERR;
done:
	if (pem.data)
		explicit_bzero(pem.data, pem.len);
	buf_free(&pem);
	buf_free(&p);
	free(from_domain);
	return rc;
}
