# Makefile - builds, tests, installs and demonstrates keeldb; `make test` is the whole suite.
#
#   make demo                  the demo FastAPI service on http://127.0.0.1:8000
#   make test                  bootstrap, services, build, C tests (plain, ASan+UBSan, and
#                              TSan for the threaded ones), fuzz corpora replay and a brief
#                              fuzzing run, install check, pytest (against the installed
#                              package, then against the extension built with ASan+UBSan)
#   make build                 libkeel, C tests, CLI and examples (build/c) + the Python package
#   make test-c / test-c-asan / test-c-tsan / test-python / test-python-asan / check-install
#   make bench                 keel against the peer drivers (bench/README.md); BENCH_QUICK=1 for
#                              a brief run. Installs wrk and the `bench` dependency group first.
#   make fuzz                  runs each libFuzzer target (tests/fuzz) for FUZZ_SECONDS (600)
#   make test-fuzz             replays the fuzz corpora, then fuzzes each target briefly from a fixed
#                              seed (FUZZ_SEED, 1) for a fixed number of executions: deterministic
#   make coverage              C (gcovr: lines and branches of src/ and the extension) and Python
#                              (coverage.py) coverage of both suites: build/coverage/index.html
#   make install-c PREFIX=DIR  installs libkeel, headers, keel.pc and the keel CLI under DIR
#   make format / format-check applies / checks the one C style (.clang-format) on every C file
#   make clean
#
# Targets run one after another in the order written (.NOTPARALLEL); each compile uses JOBS jobs.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.NOTPARALLEL:
.DEFAULT_GOAL := help

VENV := $(CURDIR)/.venv
PYTHON := $(VENV)/bin/python
MESON := $(VENV)/bin/meson
JOBS ?= 2
PREFIX ?= /usr/local

BUILD_C := build/c
BUILD_ASAN := build/asan
BUILD_TSAN := build/tsan
BUILD_PY := build/py
BUILD_PY_ASAN := build/py-asan
BUILD_INSTALL := build/install
BUILD_FUZZ := build/fuzz

# The libFuzzer targets are built with Debian's clang (scripts/bootstrap installs it).
FUZZ_CC ?= clang-14
FUZZ_SECONDS ?= 600
# make test-fuzz: the random seed and, when set, the executions per target (each target has its
# own default, a few seconds' worth: tests/fuzz/run).
FUZZ_SEED ?= 1
FUZZ_SMOKE_RUNS ?=

DEMO_HOST ?= 127.0.0.1
DEMO_PORT ?= 8000

# The tools installed by scripts/bootstrap come first, so meson-python finds meson and ninja.
export PATH := $(VENV)/bin:$(PATH)
export KEEL_TEST_PG_URL ?= postgresql://postgres@127.0.0.1:5432/keel_test

# Sanitizer runs fail on the first report, with a stack trace, and check for leaks at exit.
SANITIZER_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

# The C tests whose code runs on threads: the worker pool (SQLite, MongoDB, host name lookups,
# cancel requests).
TSAN_TESTS := loop_worker engines_dns engines_cancel engines_sqlite engines_pg engines_mysql \
	engines_mongo engines_lost pool_pool pool_deadline pool_lifecycle support_proxy core_db

# `keel check` against an in-memory SQLite database and the test PostgreSQL database.
CLI_CHECK_ENV := KEEL_CONFIG= KEEL_DEFAULT=local \
	KEEL_DATABASES__LOCAL__URL=sqlite::memory: \
	KEEL_DATABASES__PG__URL=$(KEEL_TEST_PG_URL)

.PHONY: help demo test build build-c build-asan build-tsan build-py build-py-asan test-c \
	test-c-asan test-c-tsan test-python test-python-asan build-fuzz fuzz test-fuzz \
	build-cov coverage install-c check-install bootstrap services clean bench format format-check

help:
	@echo "make demo                   run the demo FastAPI service on http://$(DEMO_HOST):$(DEMO_PORT)"
	@echo "make test                   the whole suite (what .ci/run runs)"
	@echo "make build                  build libkeel, the CLI, the examples and the Python package"
	@echo "make test-c                 C tests, examples/c/hello and keel check"
	@echo "make test-c-asan            the same under AddressSanitizer and UndefinedBehaviorSanitizer"
	@echo "make test-c-tsan            the threaded C tests under ThreadSanitizer"
	@echo "make test-python            pytest against the installed package"
	@echo "make test-python-asan       pytest against the extension built with ASan+UBSan"
	@echo "make fuzz                   run each libFuzzer target FUZZ_SECONDS (default 600) seconds"
	@echo "make test-fuzz              replay the fuzz corpora and fuzz each target briefly (fixed seed)"
	@echo "make coverage               C and Python test coverage: build/coverage/index.html"
	@echo "make install-c PREFIX=DIR   install libkeel, its headers, keel.pc and the keel CLI"
	@echo "make check-install          install into a temporary prefix and build hello.c with pkg-config"
	@echo "make bench                  keel against asyncpg, psycopg, aiosqlite, SQLAlchemy (BENCH_QUICK=1: brief)"
	@echo "make format                 format every C file with clang-format (.clang-format)"
	@echo "make format-check           fail when a C file is not formatted"
	@echo "make clean                  remove build/"

bootstrap:
	@scripts/bootstrap

services:
	@scripts/services

# Under make test, tests/python/test_docs.py fails (rather than skips) the docs' C blocks and keel
# commands when build/c is missing; test-c builds it before the Python suite runs.
test: export KEEL_DOCS_C := 1
test: bootstrap format-check services build test-c test-c-asan test-c-tsan test-fuzz check-install \
	test-python test-python-asan

build: build-c build-py

# meson re-runs its own configuration when a meson.build changes, so setup is needed only once
# per build directory (a directory left half-configured by a failed setup is started afresh).
build-c: bootstrap
	@if [ ! -f $(BUILD_C)/build.ninja ]; then \
		rm -rf $(BUILD_C); \
		$(MESON) setup $(BUILD_C) -Dpython=false -Dtests=true -Dcli=true; \
	fi
	$(MESON) compile -C $(BUILD_C) -j $(JOBS)

build-asan: bootstrap
	@if [ ! -f $(BUILD_ASAN)/build.ninja ]; then \
		rm -rf $(BUILD_ASAN); \
		$(MESON) setup $(BUILD_ASAN) -Dpython=false -Dtests=true -Dcli=true \
			--buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false; \
	fi
	$(MESON) compile -C $(BUILD_ASAN) -j $(JOBS)

build-tsan: bootstrap
	@if [ ! -f $(BUILD_TSAN)/build.ninja ]; then \
		rm -rf $(BUILD_TSAN); \
		$(MESON) setup $(BUILD_TSAN) -Dpython=false -Dtests=true -Dcli=false \
			--buildtype=debug -Db_sanitize=thread -Db_lundef=false; \
	fi
	$(MESON) compile -C $(BUILD_TSAN) -j $(JOBS)

# libFuzzer targets under ASan+UBSan, every UBSan report fatal (meson.build, tests/fuzz).
build-fuzz: bootstrap
	@if [ ! -f $(BUILD_FUZZ)/build.ninja ]; then \
		rm -rf $(BUILD_FUZZ); \
		CC=$(FUZZ_CC) $(MESON) setup $(BUILD_FUZZ) -Dpython=false -Dtests=false -Dcli=false \
			-Dfuzz=true --buildtype=debugoptimized -Db_sanitize=address,undefined \
			-Db_lundef=false; \
	fi
	$(MESON) compile -C $(BUILD_FUZZ) -j $(JOBS)

# Reinstalled every time so the tests run the current code; build/py keeps it incremental.
build-py: bootstrap
	$(PYTHON) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
		-Cbuild-dir=$(CURDIR)/$(BUILD_PY) .

test-c: build-c services
	$(MESON) test -C $(BUILD_C) --print-errorlogs --num-processes 1
	$(BUILD_C)/hello
	$(BUILD_C)/keel --version
	$(CLI_CHECK_ENV) $(BUILD_C)/keel check

test-c-asan: build-asan services
	$(SANITIZER_ENV) $(MESON) test -C $(BUILD_ASAN) --print-errorlogs --num-processes 1
	$(SANITIZER_ENV) $(BUILD_ASAN)/hello
	$(SANITIZER_ENV) $(CLI_CHECK_ENV) $(BUILD_ASAN)/keel check

test-c-tsan: build-tsan services
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
		$(MESON) test -C $(BUILD_TSAN) --print-errorlogs --num-processes 1 $(TSAN_TESTS)

# Run from the repository root: python/ is not on sys.path, so `import keel` is the installed
# package. pytest exits 5 when it collected no test, which is reported but is not a failure.
test-python: build-py services
	@rc=0; $(PYTHON) -m pytest tests/python -q || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "test-python: no Python tests were collected"; rc=0; fi; \
	exit $$rc

# $(call stage_site,DIR): the package's Python files and the extension built in the meson build
# directory DIR, put together in DIR/site, a directory to put first on PYTHONPATH.
define stage_site
rm -rf $(1)/site
mkdir -p $(1)/site
cp -R python/keel $(1)/site/
rm -rf $(1)/site/keel/_native $(1)/site/keel/meson.build
cp $(1)/python/keel/_native*.so $(1)/site/keel/
endef

# The extension, and libkeel inside it, built with ASan+UBSan (build/py-asan), then staged with
# the package's Python files in build/py-asan/site: test-python-asan imports keel from there, so
# the plain installed package is left as it is.
PY_ASAN_SITE := $(BUILD_PY_ASAN)/site

build-py-asan: bootstrap
	@if [ ! -f $(BUILD_PY_ASAN)/build.ninja ]; then \
		rm -rf $(BUILD_PY_ASAN); \
		$(MESON) setup $(BUILD_PY_ASAN) -Dpython=true -Dtests=false -Dcli=false \
			--buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false; \
	fi
	$(MESON) compile -C $(BUILD_PY_ASAN) -j $(JOBS)
	$(call stage_site,$(BUILD_PY_ASAN))

# python itself is not instrumented, so the ASan runtime the extension was linked with is
# preloaded. PYTHONMALLOC=malloc sends every Python object through malloc, so ASan sees a use of
# a freed object and LeakSanitizer an object whose reference was leaked (objects the cyclic
# collector tracks stay reachable through its lists and are not reported). tests/python/lsan.supp
# names the only leaks that are not keel's. Child processes inherit all of it.
PY_ASAN_ENV := LD_PRELOAD=$$(cc -print-file-name=libasan.so) \
	PYTHONPATH=$(CURDIR)/$(PY_ASAN_SITE) PYTHONMALLOC=malloc \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/python/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

# The Python suite against the sanitized build, all but the benchmark harness's smoke run (a
# load of several minutes under ASan that adds no extension code the suite does not run).
# pytest captures sys.stdout/stderr only, so that a sanitizer's report, written to descriptor 2
# as the process aborts, is not lost with pytest's capture files.
test-python-asan: build-py-asan services
	@$(PY_ASAN_ENV) $(PYTHON) -c 'import sys, keel._native as n; \
		sys.exit(0 if "/$(PY_ASAN_SITE)/keel/" in n.__file__ else \
		"test-python-asan: imported " + n.__file__ + ", not the ASan build")'
	$(PY_ASAN_ENV) $(PYTHON) -m pytest tests/python -q --capture=sys \
		--ignore=tests/python/test_bench_smoke.py

# make coverage (docs/coverage.md; not part of make test, since it runs both suites once more).
# One build, build/cov, holds libkeel, the C tests, the CLI, the examples and the extension, all
# compiled with --coverage at -O0: the C tests and the Python suite count into the same .gcda
# files of libkeel, so gcovr reads counters already merged. coverage.py measures python/keel/*.py
# in the same Python run (pyproject.toml [tool.coverage]). A failing test does not stop the
# reports; it fails the target after them.
BUILD_COV := build/cov
COV_REPORT := build/coverage
COV_ENV := COVERAGE_FILE=$(CURDIR)/$(COV_REPORT)/python.data PYTHONPATH=$(CURDIR)/$(BUILD_COV)/site

build-cov: bootstrap
	@if [ ! -f $(BUILD_COV)/build.ninja ]; then \
		rm -rf $(BUILD_COV); \
		$(MESON) setup $(BUILD_COV) -Dpython=true -Dtests=true -Dcli=true \
			--buildtype=debug -Db_coverage=true; \
	fi
	$(MESON) compile -C $(BUILD_COV) -j $(JOBS)
	@# The objects and gcov notes of sources that left the tree would make gcovr look for them.
	$(VENV)/bin/ninja -C $(BUILD_COV) -t cleandead >/dev/null
	@find $(BUILD_COV) -name '*.gcno' | while read -r n; do \
		[ -f "$${n%.gcno}.o" ] || rm -f "$$n"; done
	$(call stage_site,$(BUILD_COV))

coverage: build-cov services
	find $(BUILD_COV) -name '*.gcda' -delete
	rm -rf $(COV_REPORT)
	mkdir -p $(COV_REPORT)/c
	@rc=0; \
	$(MESON) test -C $(BUILD_COV) --print-errorlogs --num-processes 1 || rc=1; \
	$(BUILD_COV)/hello >/dev/null || rc=1; \
	$(BUILD_COV)/keel --version || rc=1; \
	$(CLI_CHECK_ENV) $(BUILD_COV)/keel check || rc=1; \
	$(COV_ENV) $(PYTHON) -c 'import sys, keel._native as n; \
		sys.exit(0 if "/$(BUILD_COV)/site/keel/" in n.__file__ else \
		"coverage: imported " + n.__file__ + ", not the build of $(BUILD_COV)")'; \
	$(COV_ENV) $(PYTHON) -m coverage run -m pytest tests/python -q \
		--ignore=tests/python/test_bench_smoke.py || rc=1; \
	$(COV_ENV) $(PYTHON) -m coverage combine -q; \
	$(COV_ENV) $(PYTHON) -m coverage html -q -d $(COV_REPORT)/python; \
	$(COV_ENV) $(PYTHON) -m coverage json -q -o $(COV_REPORT)/python.json; \
	$(VENV)/bin/gcovr --root . --object-directory $(BUILD_COV) -j $(JOBS) \
		--filter 'src/' --filter 'python/keel/_native/' --exclude-unreachable-branches \
		--html-nested $(COV_REPORT)/c/index.html --json-summary $(COV_REPORT)/c.json \
		--txt $(COV_REPORT)/c.txt; \
	$(PYTHON) scripts/coverage-report $(COV_REPORT); \
	if [ $$rc -ne 0 ]; then echo "coverage: some tests failed (see above); the figures are partial"; fi; \
	exit $$rc

# Every committed input once, then a brief fuzzing run of each target that makes the same
# executions every time (a fixed seed and count: CI fails only when the code changed), see
# docs/fuzzing.md. Random exploration is `make fuzz`.
test-fuzz: build-fuzz
	BUILD_FUZZ=$(BUILD_FUZZ) tests/fuzz/run replay
	BUILD_FUZZ=$(BUILD_FUZZ) FUZZ_SEED=$(FUZZ_SEED) FUZZ_SMOKE_RUNS=$(FUZZ_SMOKE_RUNS) \
		tests/fuzz/run smoke

# Each target FUZZ_SECONDS, one after another; crashes land in build/fuzz-artifacts/.
fuzz: build-fuzz
	BUILD_FUZZ=$(BUILD_FUZZ) tests/fuzz/run fuzz $(FUZZ_SECONDS)

install-c: bootstrap
	@if [ -f $(BUILD_INSTALL)/build.ninja ]; then \
		$(MESON) setup --reconfigure $(BUILD_INSTALL) -Dinstall_c=true -Dtests=false \
			-Dpython=false -Dcli=true --prefix=$(abspath $(PREFIX)) --libdir=lib >/dev/null; \
	else \
		rm -rf $(BUILD_INSTALL); \
		$(MESON) setup $(BUILD_INSTALL) -Dinstall_c=true -Dtests=false -Dpython=false \
			-Dcli=true --buildtype=release --prefix=$(abspath $(PREFIX)) --libdir=lib >/dev/null; \
	fi
	$(MESON) compile -C $(BUILD_INSTALL) -j $(JOBS)
	$(MESON) install -C $(BUILD_INSTALL) --quiet
	@echo "install-c: installed into $(abspath $(PREFIX))"

# Installs into a temporary prefix and builds examples/c/hello.c against it the way a user would:
# with nothing but pkg-config.
check-install:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(MAKE) --no-print-directory install-c PREFIX="$$tmp"; \
	flags=$$(PKG_CONFIG_PATH="$$tmp/lib/pkgconfig" pkg-config --cflags --libs keel); \
	echo "check-install: pkg-config --cflags --libs keel: $$flags"; \
	cc -std=c11 -Wall -Wextra -Werror -o "$$tmp/hello" examples/c/hello.c $$flags \
		-Wl,-rpath,"$$tmp/lib"; \
	"$$tmp/hello" >/dev/null; \
	"$$tmp/bin/keel" --version; \
	echo "check-install: hello built with pkg-config and ran"

demo: bootstrap build-py
	@echo "demo: http://$(DEMO_HOST):$(DEMO_PORT)/docs (Ctrl-C stops it)"
	$(VENV)/bin/uvicorn --app-dir examples/service app:app --host $(DEMO_HOST) --port $(DEMO_PORT)

# The peers and wrk are installed here only (bench/setup.sh), never by `make test`. The results
# go to bench/results/latest.md and latest.json; the table is printed too.
bench: bootstrap services build-py
	bash bench/setup.sh
	$(PYTHON) -m bench.run

# Every C file the repository tracks, in one style (.clang-format, clang-format 14 from Debian).
CLANG_FORMAT ?= clang-format-14
C_FILES = $(shell git ls-files '*.c' '*.h')

format: bootstrap
	$(CLANG_FORMAT) -i $(C_FILES)

format-check: bootstrap
	$(CLANG_FORMAT) --dry-run --Werror $(C_FILES)
	@echo "format-check: $(words $(C_FILES)) C files follow .clang-format"

clean:
	rm -rf build
