/*
 * matrixd: options and start-up. The event loop lives in loop.c.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "log.h"

#ifndef MATRIXD_VERSION
#define MATRIXD_VERSION "dev"
#endif

static void usage(FILE *f)
{
	fprintf(f, "usage: matrixd [-c FILE] [-n] [-v] [--once] [--foreground]\n"
		   "  -c FILE       configuration (default $MATRIXD_CONF, then %s)\n"
		   "  -n            check the configuration and exit 0 (valid) or 1\n"
		   "  -v            debug logging\n"
		   "  --once        process pending issues and due deliveries, then exit\n"
		   "                (0 nothing left queued, 75 some deferred, 1 error)\n"
		   "  --foreground  accepted for compatibility; matrixd never forks\n",
		CONF_DEFAULT_PATH);
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	bool check = false;
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"check", no_argument, NULL, 'n'},
	    {"once", no_argument, NULL, 'o'},
	    {"foreground", no_argument, NULL, 'f'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	int ch;
	log_init("matrixd", 0);
	while ((ch = getopt_long(argc, argv, "c:nvhV", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'n':
			check = true;
			break;
		case 'o':
		case 'f':
			break;
		case 'v':
			log_set_level(LOG_L_DEBUG);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("matrixd %s\n", MATRIXD_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (path == NULL) {
		const char *env = getenv("MATRIXD_CONF");
		path = env && *env ? env : CONF_DEFAULT_PATH;
	}
	struct conf conf;
	struct err err;
	err_clear(&err);
	if (conf_load(&conf, path, &err) < 0) {
		fprintf(stderr, "matrixd: %s\n", err.msg);
		return 1;
	}
	if (check) {
		printf("%s: configuration ok\n", conf.path);
		conf_free(&conf);
		return 0;
	}
	conf_free(&conf);
	fprintf(stderr, "matrixd: the daemon is not built yet\n");
	return 1;
}
