# `make test` and `make bench` work on a fresh machine with Python 3.11+: they create .venv, install
# the pinned dependencies, build the native library, install vlmops into .venv in editable mode (so
# .venv/bin/python imports it from any directory), then run the tests or the benchmarks.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
EDITABLE := $(VENV)/.vlmops-editable
export MAX_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CXX_SOURCES = $(shell find csrc python_bindings -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' | sort)

.PHONY: all deps build native test lint format bench bench-full kernel-report clean

all: build

$(DEPS): requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

deps: $(DEPS)

# Incremental: CMake rebuilds only what changed (build/ keeps the objects).
native: $(DEPS)
	$(PY) setup.py --quiet build_ext --inplace

# Once per .venv (and when the package metadata changes): pip finds the library `native` just built
# up to date in the same build folder, and maps `import vlmops` to this checkout.
$(EDITABLE): $(DEPS) pyproject.toml setup.py | native
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	@touch $@

build: native $(EDITABLE)

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
# VLMOPS_SKIP_INSTALL_TESTS=1 skips tests/test_install.py (it builds in throwaway environments).
test: build
	@$(PY) -m pytest tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

# Checks only; every checker runs and the target fails if any complains. `make format` applies them.
lint: $(DEPS)
	@rc=0; \
	$(PY) -m ruff check . || rc=1; \
	$(PY) -m ruff format --check . || rc=1; \
	$(VENV)/bin/clang-format --dry-run -Werror $(CXX_SOURCES) || rc=1; \
	exit $$rc

format: $(DEPS)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .
	$(VENV)/bin/clang-format -i $(CXX_SOURCES)

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
