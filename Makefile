# surveil — the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench bundle test-bundle clean venv

venv: $(STAMP)

# The venv is rebuilt whenever the lock file or the package metadata changes.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/surveil demo

test: $(STAMP)
	$(BIN)/ruff check appliance connectors tui tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check appliance connectors tui tests bench

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

bundle: $(STAMP)
	@echo "make bundle: the PyInstaller bundle is built by issue #3 (packaging/)"; exit 1

clean:
	rm -rf $(VENV) build dist .pytest_cache
