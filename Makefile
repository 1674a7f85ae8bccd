# matrixd — one non-recursive GNU Makefile (after Redis' src/Makefile).
#
#   make            build build/matrixd and build/matrixctl
#   make run        install missing packages, build, run the demo on examples/
#   make check      install missing packages, unit tests (plain and ASan+UBSan),
#                   system tests (pytest)
#   make lint       banned functions, the include rule of docs/design.md (no
#                   SQL outside lib/), the documents comments cite,
#                   clang-format, cppcheck when present
#   make torture    the kill -9 campaign with TORTURE_TRIALS kills (default 50)
#                   per transport; make check runs it with 10
#   make fuzz       libFuzzer targets, FUZZ_SECONDS each (default 60)
#   make bench      benchmarks under bench/ (needs root for packages)
#   make install    DESTDIR=… PREFIX=… (default /usr/local)
#   make fresh-check  ./setup check in a debootstrap chroot of a clean clone (root)
#
# Quiet unless V=1. SAN=1 builds everything with ASan+UBSan into build/san.

PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
SBINDIR   ?= $(PREFIX)/sbin
DATADIR   ?= $(PREFIX)/share
MANDIR    ?= $(DATADIR)/man
SYSCONFDIR ?= /etc
UNITDIR   ?= /lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
TMPFILESDIR ?= /usr/lib/tmpfiles.d
DESTDIR   ?=

CC        ?= cc
PYTHON    := /usr/bin/python3
FUZZ_SECONDS ?= 60
TORTURE_TRIALS ?= 50

ifeq ($(SAN),1)
BUILD     ?= build/san
SANFLAGS  := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD     ?= build
SANFLAGS  :=
endif

# libetpan is linked by hand: its .pc adds -specs=no-pie-link.specs, which
# silently makes our binaries non-PIE (docs/libraries.md, Packaging).
# Evaluated once (:=), not once per compiler call.
PKGS      := libcurl libxml-2.0 libconfig libsystemd sqlite3 libcmark-gfm json-c \
             libmicrohttpd gnutls libidn2 opendkim libcrypto
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS)) -letpan -lcsv -lunistring -lpthread

WARN      := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
             -Wformat=2 -Wvla -Wno-format-nonliteral -Wno-format-truncation
ifeq ($(WERROR),1)
WARN      += -Werror
endif
OPT       ?= -O2 -g
TEMPLATE_DIR_DEFAULT ?= $(DATADIR)/matrixd/templates
CFLAGS    += -std=c17 -D_GNU_SOURCE $(OPT) $(WARN) -fPIE $(SANFLAGS) -MMD -MP \
             -Ilib $(PKG_CFLAGS) -DMATRIXD_TEMPLATE_DIR='"$(TEMPLATE_DIR_DEFAULT)"' \
             -DMATRIXD_DOC_DIR='"$(DATADIR)/doc/matrixd"' -DMATRIXD_VERSION='"$(VERSION)"'
LDFLAGS   += -pie -Wl,-z,relro,-z,now $(SANFLAGS)
VERSION   := 0.1.0

ifneq ($(V),1)
Q = @
say = @printf '  %-7s %s\n' $(1) $(2);
else
Q =
say =
endif

LIB_SRC   := $(sort $(wildcard lib/*.c))
DAEMON_SRC := $(sort $(wildcard daemon/*.c))
CLI_SRC   := $(sort $(wildcard cli/*.c))
UNIT_SRC  := $(sort $(wildcard tests/unit/test_*.c))
FUZZ_SRC  := $(sort $(wildcard tests/fuzz/fuzz_*.c))

TEMPLATES := $(sort $(wildcard templates/*.mustache))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/templates.o
DAEMON_OBJ := $(DAEMON_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ   := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
LIBA      := $(BUILD)/libmatrix.a

.PHONY: all run check unit units system system-san lint torture fuzz bench install clean fresh-check
all: $(BUILD)/matrixd $(BUILD)/matrixctl

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(CFLAGS) -c -o $@ $<

# The default templates, compiled in (lib/tmpl.h).
$(BUILD)/gen/templates.c: $(TEMPLATES) scripts/embed.sh
	@mkdir -p $(dir $@)
	$(call say,GEN,$@)sh scripts/embed.sh $@ $(TEMPLATES)

$(BUILD)/obj/gen/templates.o: $(BUILD)/gen/templates.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(CFLAGS) -c -o $@ $<

$(LIBA): $(LIB_OBJ)
	$(call say,AR,$@)rm -f $@ && ar rcs $@ $^

$(BUILD)/matrixd: $(DAEMON_OBJ) $(LIBA)
	$(call say,LINK,$@)$(CC) $(LDFLAGS) -o $@ $(DAEMON_OBJ) $(LIBA) $(PKG_LIBS)

$(BUILD)/matrixctl: $(CLI_OBJ) $(LIBA)
	$(call say,LINK,$@)$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIBA) $(PKG_LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIBA)
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(filter %.o,$^) $(LIBA) \
		$(PKG_LIBS) -lcmocka $(LDFLAGS)

# Unit programs for a pure part of the daemon link its object too.
$(BUILD)/tests/test_deadline: $(BUILD)/obj/daemon/deadline.o
$(BUILD)/tests/test_deadline: CFLAGS += -Idaemon

-include $(LIB_OBJ:.o=.d) $(DAEMON_OBJ:.o=.d) $(CLI_OBJ:.o=.d)

# --- the two set-up commands -------------------------------------------------

run:
	@sh scripts/deps.sh run
	@$(MAKE) --no-print-directory all
	@sh examples/run.sh

check:
	@sh scripts/deps.sh check
	@$(MAKE) --no-print-directory WERROR=1 all units
	@$(MAKE) --no-print-directory SAN=1 WERROR=1 units
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory SAN=1 unit
	@$(MAKE) --no-print-directory system
	@$(MAKE) --no-print-directory SAN=1 WERROR=1 system-san

units: $(UNIT_BIN)

unit: units
	@sh tests/unit/run.sh "$(BUILD)/tests" "$(if $(SAN),ASan+UBSan,plain)"

system: all
	@MATRIXD_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q -n 2 -p no:cacheprovider tests/system

# The real flows again with matrixd and matrixctl built with ASan+UBSan
# (leaks included); the timing-sensitive daemon tests are left to the plain run.
SAN_SYSTEM := test_inspect.py test_config.py test_render.py test_subscribers.py \
              test_delivery.py test_failures.py test_bounce.py test_http.py test_dkim.py \
              test_addresses.py test_files.py test_web_prefs.py \
              test_web_subscribe.py test_hostile.py
system-san: all
	@echo "system tests against the ASan+UBSan build:"
	@MATRIXD_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q -n 2 -p no:cacheprovider \
		$(addprefix tests/system/,$(SAN_SYSTEM))

lint:
	@sh scripts/lint.sh

# The kill -9 campaign of tests/system/test_crash.py, longer than make
# check's 10 kills (it prints the duplicates per kill).
torture: all
	@MATRIXD_BUILD=$(abspath $(BUILD)) MATRIXD_KILL_TRIALS=$(TORTURE_TRIALS) $(PYTHON) -m pytest \
		-q -s -p no:cacheprovider tests/system/test_crash.py

# --- fuzzing (clang + libFuzzer + ASan) ---------------------------------------

FUZZ_CFLAGS = -std=c17 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
              -Ilib $(PKG_CFLAGS) -DMATRIXD_TEMPLATE_DIR='"templates"' \
              -DMATRIXD_DOC_DIR='"doc"'
fuzz:
	@sh scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory build/gen/templates.c
	@mkdir -p build/fuzz
	@set -e; for f in $(FUZZ_SRC); do \
		n=$$(basename $$f .c); \
		echo "  FUZZ    $$n ($(FUZZ_SECONDS) s)"; \
		clang $(FUZZ_CFLAGS) -o build/fuzz/$$n $$f $(LIB_SRC) build/gen/templates.c \
			$(PKG_LIBS); \
		mkdir -p build/fuzz/$$n.corpus; \
		build/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
			-artifact_prefix=build/fuzz/ build/fuzz/$$n.corpus tests/fuzz/$$n.seed \
			2>build/fuzz/$$n.log || { tail -40 build/fuzz/$$n.log; exit 1; }; \
		grep -E '^(Done|#[0-9]+.*DONE)' build/fuzz/$$n.log | tail -1; \
	done

# `./setup check` on a bare Debian 12 (debootstrap minbase) from a clean
# clone of HEAD: what a new user and CI see. Needs root and a few minutes.
fresh-check:
	@sh scripts/fresh-check.sh

bench:
	@sh scripts/deps.sh bench
	@$(MAKE) --no-print-directory all
	@sh bench/run.sh

# --- install ------------------------------------------------------------------

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) \
		$(DESTDIR)$(DATADIR)/matrixd/templates $(DESTDIR)$(SYSCONFDIR)/matrixd \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
		$(DESTDIR)$(DATADIR)/doc/matrixd
	install -m 0755 $(BUILD)/matrixd $(DESTDIR)$(SBINDIR)/matrixd
	install -m 0755 $(BUILD)/matrixctl $(DESTDIR)$(BINDIR)/matrixctl
	install -m 0644 templates/*.mustache $(DESTDIR)$(DATADIR)/matrixd/templates/
	install -m 0644 conf/matrixd.conf.example docs/*.md $(DESTDIR)$(DATADIR)/doc/matrixd/
	test -e $(DESTDIR)$(SYSCONFDIR)/matrixd/matrixd.conf || \
		install -m 0640 conf/matrixd.conf.example $(DESTDIR)$(SYSCONFDIR)/matrixd/matrixd.conf
	install -m 0644 docs/matrixd.8 docs/matrixctl.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 docs/matrixd.conf.5 $(DESTDIR)$(MANDIR)/man5/
	sed 's|@SBINDIR@|$(SBINDIR)|g' systemd/matrixd.service > $(DESTDIR)$(UNITDIR)/matrixd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/matrixd.service
	install -m 0644 systemd/matrixd.sysusers $(DESTDIR)$(SYSUSERSDIR)/matrixd.conf
	install -m 0644 systemd/matrixd.tmpfiles $(DESTDIR)$(TMPFILESDIR)/matrixd.conf

clean:
	rm -rf build
