# surveil — the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint bench bundle test-bundle clean venv

venv: $(STAMP)

# The venv is rebuilt whenever the lock file or the package metadata changes.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/surveil demo

# `make test` is the fast suite (< 10 min on 2 cores); the long end-to-end tests (`slow`: the
# demo through real Ray, the 50x kill -9 tee loop) run in `make test-slow`. CI runs both, and the
# bundle test (.ci/run).
test: $(STAMP)
	$(BIN)/ruff check appliance connectors tui tests bench packaging
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --ignore=tests/packaging

lint: $(STAMP)
	$(BIN)/ruff check appliance connectors tui tests bench

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

# The bundle is built in its own venv (.venv-bundle): the runtime lock plus the hashed build tools
# (PyInstaller) from packaging/requirements-bundle.lock. Output: dist/surveil-<ver>-linux-x86_64.tar.gz
# and its .sha256. See docs/install.md.
BVENV  := .venv-bundle
BSTAMP := $(BVENV)/.installed

$(BSTAMP): requirements.lock packaging/requirements-bundle.lock
	$(PYTHON) -m venv $(BVENV)
	$(BVENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes \
		-r requirements.lock -r packaging/requirements-bundle.lock
	touch $(BSTAMP)

bundle: $(BSTAMP)
	$(BVENV)/bin/python packaging/build.py

# Builds the bundle, then installs it into a clean temp dir and compares `surveil demo` with the
# venv's (tests/packaging/test_bundle.py, marked slow; skipped by plain `make test`).
test-bundle: bundle $(STAMP)
	SURVEIL_BUNDLE="$$(ls -t dist/surveil-*-linux-x86_64.tar.gz | head -n 1)" \
		$(BIN)/python -m pytest -q -m slow tests/packaging -p no:cacheprovider

clean:
	rm -rf $(VENV) build dist .pytest_cache
