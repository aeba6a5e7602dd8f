# `make demo` and `make test` work on a fresh clone: `make setup` installs everything into .venv first.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
ENGINE := $(VENV)/bin/engine

.PHONY: setup demo test test-all chaos lint perf perf-refused perf-smoke clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet --compile-bytecode
	touch $@

setup: $(VENV)/.synced

demo: setup
	$(ENGINE) demo

test: setup
	$(VENV)/bin/pytest -q -m "not slow"

test-all: setup
	$(VENV)/bin/pytest -q

chaos: setup
	$(VENV)/bin/pytest -q -m chaos tests/reliability/test_chaos.py tests/reliability/test_chaos_restarts.py

# ruff everywhere; mypy (strict about untyped defs) over engine, rules and perf, as pyproject.toml sets it.
lint: setup
	$(VENV)/bin/ruff check engine rules tests perf
	$(VENV)/bin/mypy

# The peers are optional: the perf group brings the Python ones into their own environment (.venv-perf,
# bytecode compiled, as after a normal install), so the engine keeps running from .venv with only its own
# locked dependencies; pgloader (and pgcopydb, for WHOLEDB=1) come from apt when they can, else their cases are
# reported as skipped. `make perf WHOLEDB=1 [WHOLEDB_ROWS=2M]` runs the whole-database cases (perf/wholedb.py),
# `make perf MANYTABLES=200` the same copies of a database of 200 small tables (perf/manytables.py).
PERF_VENV := .venv-perf

perf: setup
	$(UV) sync --frozen --compile-bytecode --quiet
	UV_PROJECT_ENVIRONMENT=$(PERF_VENV) $(UV) sync --frozen --all-groups --compile-bytecode --quiet
	@command -v pgloader >/dev/null 2>&1 || (apt-get install -y -qq pgloader || (apt-get update -qq && \
		apt-get install -y -qq pgloader)) >/dev/null 2>&1 || echo "pgloader not installable here: reported as skipped"
	@command -v pgcopydb >/dev/null 2>&1 || (apt-get install -y -qq pgcopydb || (apt-get update -qq && \
		apt-get install -y -qq pgcopydb)) >/dev/null 2>&1 || echo "pgcopydb not installable here: reported as skipped"
	@command -v sqlite3 >/dev/null 2>&1 || (apt-get install -y -qq sqlite3 || (apt-get update -qq && \
		apt-get install -y -qq sqlite3)) >/dev/null 2>&1 || echo "sqlite3 not installable here: sqlite-limit is reported as skipped"
	@command -v mariadb >/dev/null 2>&1 || (apt-get install -y -qq mariadb-client || (apt-get update -qq && \
		apt-get install -y -qq mariadb-client)) >/dev/null 2>&1 || echo "mariadb client not installable here: mariadb-limit is reported as skipped"
	$(PERF_VENV)/bin/python -m perf.run $(if $(ROWS),--rows $(ROWS),) $(if $(RUNS),--runs $(RUNS),) \
		$(if $(SCALING),--scaling,) $(if $(WHOLEDB),--wholedb,) $(if $(WHOLEDB_ROWS),--wholedb-rows $(WHOLEDB_ROWS),) \
		$(if $(MANYTABLES),--wholedb --wholedb-tables $(MANYTABLES),) \
		$(PERF_ARGS)

perf-refused: setup
	$(VENV)/bin/python -m perf.refused

perf-smoke: setup
	$(VENV)/bin/python -m perf.run --rows 20000 --runs 1 --smoke

clean:
	rm -rf .engine .pytest_cache .venv-perf
