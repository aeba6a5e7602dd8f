# `make demo` and `make test` work on a fresh clone: `make setup` installs everything into .venv first.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
ENGINE := $(VENV)/bin/engine

.PHONY: setup demo test test-all chaos lint perf perf-smoke clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	touch $@

setup: $(VENV)/.synced

demo: setup
	$(ENGINE) demo

test: setup
	$(VENV)/bin/pytest -q -m "not slow"

test-all: setup
	$(VENV)/bin/pytest -q

chaos: setup
	$(VENV)/bin/pytest -q -m chaos tests/reliability/test_chaos.py

lint: setup
	$(VENV)/bin/ruff check engine rules tests perf
	$(VENV)/bin/mypy engine

perf: setup
	$(VENV)/bin/python -m perf.run $(if $(ROWS),--rows $(ROWS),)

perf-smoke: setup
	$(VENV)/bin/python -m perf.run --rows 20000 --runs 1 --smoke

clean:
	rm -rf .engine .pytest_cache
