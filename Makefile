# `make test` and `make bench` work on a fresh machine with Python 3.11+: they create .venv, install
# the pinned dependencies, build the native library, then run the tests or the benchmarks.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
export MAX_JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build test bench bench-full kernel-report clean

all: build

$(DEPS): requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

deps: $(DEPS)

# Incremental: CMake + Ninja rebuild only what changed (build/ keeps the objects).
build: $(DEPS)
	$(PY) setup.py --quiet build_ext --inplace

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
test: build
	@$(PY) -m pytest tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

bench: build
	$(PY) -m benchmarks

bench-full: build
	$(PY) -m benchmarks --full

kernel-report: build
	$(PY) tools/kernel_report.py

clean:
	rm -rf build vlmops/*.so

# transformers compatibility matrix (tools/compat_matrix.py): installs every release of its RELEASES
# into its own cached folder under .compat/, runs the patch parity tests against each, then writes
# vlmops/transformers/verified.py, tools/compat_matrix.json and README's table. `make test` runs the
# oldest and newest of them through tests/test_compat_releases.py.
.PHONY: test-compat
test-compat: build
	$(PY) tools/compat_matrix.py
