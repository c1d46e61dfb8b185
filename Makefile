# Front door for the README's commands. The real build is Meson (build/).
# As root on a fresh Debian 12 machine, `make demo` and `make check` first
# install whatever Debian packages are missing.

BUILD ?= build
MESON_OPTS ?=
DEMO_ARGS ?=

# Debian packages the build, the tests and the demo need.
DEB_PKGS = meson ninja-build pkgconf gcc clang libxxhash-dev libjson-c-dev \
	libcmocka-dev libzstd-dev liblz4-dev libgnutls28-dev gnutls-bin libclang-rt-14-dev \
	iproute2 python3 redis-tools redis-server
# Intel's ipsec-mb seals ferry's TLS 1.3 records (x86-64 only; elsewhere the
# build uses GnuTLS's AEAD alone).
ifeq ($(shell uname -m),x86_64)
DEB_PKGS += libipsec-mb-dev
endif

.PHONY: all deps build demo check test-unit test-integration clean bench help faults

all: build

help:
	@echo "make demo    - install missing packages (as root), build, migrate a running guest, print the report"
	@echo "make check   - install missing packages (as root), build, run every test"
	@echo "make build   - configure and build into $(BUILD)/"
	@echo "make bench   - the benchmarks of docs/benchmarks.md (1-13), tables with median and"
	@echo "               range, ferry's defaults against its best setting side by side"
	@echo "               (1-7: about 40-45 minutes; BENCH=3 picks one, QUICK=1 a minute each)"
	@echo "make faults  - the fault matrix (tests/faults): every fault at every moment of a migration,"
	@echo "               a table, also written into docs/faults.md (FAULTS_ONLY=kill-dst runs part)"
	@echo "make fuzz    - build the libFuzzer harnesses with clang, run each FUZZ_SECONDS (60) on its corpus"
	@echo "make soak    - ASan+UBSan build ($(ASAN_BUILD)/), then SOAK_N (1000) migrations in a ring"
	@echo "               of three ferry-vms, half with a fault; fds and RSS must stay flat"
	@echo "               (docs/soak.md; 32 minutes for 1000 on 2 loaded cores)"
	@echo "make tsan    - ThreadSanitizer build ($(TSAN_BUILD)/): the unit tests and the"
	@echo "               two-process integration tests must run without a report"
	@echo "make clean   - remove $(BUILD)/"

deps:
	@./scripts/install-deps.sh $(DEB_PKGS)

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_OPTS)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo: build
	$(BUILD)/tools/ferry demo $(DEMO_ARGS)

# Runs the whole suite and ends with "N passed, M failed" from Meson's
# own summary, so a reader (or CI) can tell that tests really ran.
check: build
	@./scripts/check.sh $(BUILD)

# Benchmarks are not tests: they take minutes and print tables with the
# commands that produced them (docs/benchmarks.md). They run ferry on its
# defaults and, beside them, with the best setting. BENCH=3 (or "1 5",
# 1 to 9) picks some; QUICK=1 runs fewer and smaller runs (about a minute
# each).
BENCH ?=
QUICK ?=
bench: build
	bench/run.sh --build $(BUILD) $(if $(filter 1 yes,$(QUICK)),--quick) $(BENCH)

clean:
	rm -rf $(BUILD)

# The fault matrix (tests/faults/matrix.py): kill -9 of either side, a cut
# connection, a stall, ENOSPC, at every moment, for 1 and 4 connections;
# prints a table and writes it into docs/faults.md. FAULTS_ONLY=FAULT or
# FAULT:MOMENT[:CONNS] (several, comma-separated) runs part of it and
# leaves docs/faults.md alone; FAULTS_STALL_MS sets the stall limit of
# every cell (default 2000).
FAULTS_ONLY ?=
FAULTS_STALL_MS ?=
faults: build
	python3 tests/faults/matrix.py --ferry $(BUILD)/tools/ferry --ferry-vm $(BUILD)/vm/ferry-vm \
		$(if $(FAULTS_ONLY),--only $(FAULTS_ONLY),--markdown docs/faults.md) \
		$(if $(FAULTS_STALL_MS),--stall-ms $(FAULTS_STALL_MS))

# libFuzzer harnesses (tests/fuzz), built with clang in their own directory
# and run one after the other; prints executions and executions/s of each.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz: deps
	tests/fuzz/run.sh --build $(FUZZ_BUILD) --seconds $(FUZZ_SECONDS)

# Sanitizer runs (docs/soak.md), each in its own build directory; neither
# is part of `make check` (minutes to an hour).
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
SOAK_N ?= 1000
SOAK_ARGS ?=
.PHONY: soak tsan
$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false \
		-Dtests=false $(MESON_OPTS)

soak: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD) vm/ferry-vm tools/ferry
	python3 tests/soak/soak.py --build $(ASAN_BUILD) -n $(SOAK_N) $(SOAK_ARGS)

$(TSAN_BUILD)/build.ninja:
	meson setup $(TSAN_BUILD) -Db_sanitize=thread -Db_lundef=false $(MESON_OPTS)

tsan: deps $(TSAN_BUILD)/build.ninja
	ninja -C $(TSAN_BUILD)
	tests/soak/tsan.sh $(TSAN_BUILD)
