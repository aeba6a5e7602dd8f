"""The benchmark cases, one function each: what to run, how to reset its target, how to count what it loaded.

Every case copies the same source table into its own target table (or schema) in the destination database,
so cases never disturb each other; `reset` empties that target before each run (outside the timing) and
issues a CHECKPOINT, so no run pays for flushing the previous run's writes. Cases that load into an existing
table get one with the source's exact DDL (primary key included), like the raw COPY limit.
A case that cannot run here carries `skip` (the reason) and is reported, never dropped.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perf.datasets import create_target
from perf.db import Server, pg_count, pg_exec

ROOT = Path(__file__).resolve().parent.parent
# The engine runs from its own environment, holding only its locked dependencies, as a user installs it; the
# peers (and this suite) from the one `make perf` builds with every dependency group. Sharing one would make
# the engine pay for the peers' packages: with pandas importable, pyarrow.dataset and Pandera import it too
# (about half a second of start-up).
ENGINE = ROOT / ".venv" / "bin" / "engine"
PEERS_PYTHON = Path(sys.executable)
_PEERS_INSTALL = "`make perf` installs the peers into .venv-perf"


@dataclass
class Context:
    pg: Server
    mysql: Server
    src_db: str
    dst_db: str
    rows: int
    table: str  # source table, the same name in PostgreSQL and MariaDB
    data_bytes: int  # PostgreSQL row bytes of the source table, for MB/s
    workdir: Path  # job files and JSON reports
    mysql_error: str | None = None  # why the MariaDB source is unavailable, if it is
    sample_rows: int = 100_000  # for peers too slow to run on the whole table

    @property
    def src(self) -> str:
        return self.pg.url(self.src_db)

    @property
    def dst(self) -> str:
        return self.pg.url(self.dst_db)


@dataclass
class Case:
    key: str
    label: str
    argv: list[str]
    reset: Callable[[], None]
    loaded: Callable[[], int | None]  # rows in the target after a run
    rows: int  # rows one run moves (a sample for extrapolated cases)
    env: dict[str, str] = field(default_factory=dict)
    skip: str | None = None
    notes: str = ""
    report_json: Path | None = None  # the engine's own run report


def _empty_table(ctx: Context, table: str) -> Callable[[], None]:
    create_target(ctx.dst, f"public.{table}")
    return lambda: pg_exec(ctx.dst, f"TRUNCATE public.{table}", "CHECKPOINT")


def _drop(ctx: Context, kind: str, name: str) -> Callable[[], None]:
    """For peers that create their own table (or schema): drop it, so each run creates it anew."""
    return lambda: pg_exec(ctx.dst, f"DROP {kind} IF EXISTS {name} CASCADE", "CHECKPOINT")


def _counter(ctx: Context, table: str) -> Callable[[], int | None]:
    return lambda: pg_count(ctx.dst, table)


def _missing(*modules: str) -> str | None:
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"Python package(s) {', '.join(absent)} not installed ({_PEERS_INSTALL})" if absent else None


def copy_limit(ctx: Context) -> Case:
    """The floor: PostgreSQL's own binary COPY out, piped straight into binary COPY in."""
    out = f"COPY public.{ctx.table} TO STDOUT (FORMAT binary)"
    into = "COPY public.copy_limit FROM STDIN (FORMAT binary)"
    psql = "psql -X -q -v ON_ERROR_STOP=1"
    pipe = (f"set -o pipefail; {psql} {shlex.quote(ctx.src)} -c {shlex.quote(out)} | "
            f"{psql} {shlex.quote(ctx.dst)} -c {shlex.quote(into)}")
    return Case("copy-limit", "raw COPY limit (psql -> psql, binary)", ["bash", "-c", pipe],
                _empty_table(ctx, "copy_limit"), _counter(ctx, "public.copy_limit"), ctx.rows,
                skip=None if shutil.which("psql") else "psql (PostgreSQL client) not on PATH")


def _engine_case(ctx: Context, key: str, label: str, *, source: str = "pg", validate: bool = True,
                 checkpoints: bool = True, workers: int | None = None, executor: str = "threads",
                 notes: str = "", rules: str = "") -> Case:
    target = key.replace("-", "_")
    url = ctx.mysql.url(ctx.src_db) if source == "mysql" else ctx.src
    lines = [f"[job]\nname = \"perf_{target}\"\nrules_dir = {json.dumps(str(ROOT / 'rules'))}",
             f"[source]\nurl = {json.dumps(url)}\ntable = \"{ctx.table}\"",
             f"[target]\nurl = {json.dumps(ctx.dst)}\ntable = \"public.{target}\"\nmode = \"append\""]
    if rules:
        lines.append("[validate]\nmax_error_rate = 0.0\n\n" + rules)
    elif validate:
        lines.append("[validate]\nschema = \"perf_orders.schema:PerfOrders\"\nmax_error_rate = 0.0")
    pipeline = [f"checkpoints = {str(checkpoints).lower()}", f'executor = "{executor}"']
    pipeline += [f"workers = {workers}"] if workers else []
    lines.append("[pipeline]\n" + "\n".join(pipeline))
    job = ctx.workdir / f"{target}.toml"
    job.write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    report = ctx.workdir / f"{target}.json"
    return Case(key, label, [str(ENGINE), "run", str(job), "--fresh", "--quiet", "--json", str(report)],
                _empty_table(ctx, target), _counter(ctx, f"public.{target}"), ctx.rows,
                skip=ctx.mysql_error if source == "mysql" else None, notes=notes, report_json=report)


def engine_defaults(ctx: Context) -> Case:
    return _engine_case(ctx, "engine", "engine, defaults (checkpoints, validation, count verify)")


def engine_no_validation(ctx: Context) -> Case:
    return _engine_case(ctx, "engine-novalidate", "engine, validation off", validate=False)


def engine_no_checkpoints(ctx: Context) -> Case:
    return _engine_case(ctx, "engine-nocheckpoints", "engine, checkpoints off", checkpoints=False)


REFERENCE_ROWS = 100_000
# One declarative rule of every kind, all passing on the reference data (so every row is loaded and counted).
EVERY_KIND: list[dict[str, Any]] = [
    {"kind": "schema", "columns": ["id", "customer_id", "status", "amount", "currency", "email"]},
    {"kind": "dtype", "column": "customer_id", "type": "integer"},
    {"kind": "not_null", "column": "status"},
    {"kind": "range", "column": "amount", "min": 0, "max": 1_000_000},
    {"kind": "allowed", "column": "status", "values": ["new", "paid", "shipped", "delivered", "cancelled", "refunded"]},
    {"kind": "length", "column": "note", "max": 2000},
    {"kind": "references", "column": "customer_id", "table": "public.perf_customers", "key": "id"},
    {"kind": "expression", "expr": "amount >= 0 OR status = 'refunded'"},
    {"kind": "completeness", "column": "note", "max_null_ratio": 0.1},
    {"kind": "reconcile", "column": "amount", "agg": "sum"},
    {"kind": "unique", "columns": ["id"], "scope": "job"},
    {"kind": "format", "column": "email", "format": "email"},
    {"kind": "format", "column": "currency", "format": "currency"},
]


def rules_toml() -> str:
    tables = []
    for i, rule in enumerate(EVERY_KIND):
        keys = {"name": f"r{i}_{rule['kind']}", **rule}
        tables.append("[[validate.rules]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in keys.items()))
    return "\n\n".join(tables)


def engine_rules(ctx: Context) -> Case:
    """Every rule kind active, against a 100k-row reference table: compare with engine-novalidate."""
    pg_exec(ctx.src, "CREATE TABLE IF NOT EXISTS public.perf_customers (id bigint PRIMARY KEY, name text)",
            f"INSERT INTO public.perf_customers SELECT i, 'customer ' || i FROM generate_series(1, {REFERENCE_ROWS}) i "
            "ON CONFLICT DO NOTHING")
    return _engine_case(ctx, "engine-rules", "engine, [[validate.rules]]: one rule of every kind (12)",
                        rules=rules_toml(), notes=f"references a {REFERENCE_ROWS:,}-row table; "
                        "ratio of interest: to engine-novalidate")


def engine_mysql(ctx: Context) -> Case:
    return _engine_case(ctx, "engine-mysql", "engine, MariaDB -> PG (defaults)", source="mysql",
                        notes="ratio is to the PostgreSQL COPY limit")


def engine_dask(ctx: Context) -> Case:
    return _engine_case(ctx, "engine-dask", "engine, defaults, partitions on a local Dask cluster", executor="dask",
                        notes="2 worker processes, started and stopped by the run")


def engine_workers(ctx: Context, workers: int) -> Case:
    return _engine_case(ctx, f"engine-w{workers}", f"engine, defaults, workers = {workers}", workers=workers)


def _sling(ctx: Context, key: str, source: str) -> Case:
    spec = importlib.util.find_spec("sling_linux_amd64")
    binary = Path(spec.origin).parent / "bin" / "sling-linux-amd64" if spec and spec.origin else None
    skip = None if binary and binary.is_file() else f"PyPI wheel sling-linux-amd64 not installed ({_PEERS_INSTALL})"
    src_url = (ctx.mysql.url(ctx.src_db) if source == "mysql" else ctx.src + "?sslmode=disable")
    stream = f"{ctx.src_db}.{ctx.table}" if source == "mysql" else f"public.{ctx.table}"
    target = key.replace("-", "_")
    env = {"PERF_SLING_SRC": src_url, "PERF_SLING_DST": ctx.dst + "?sslmode=disable",
           "SLING_DISABLE_TELEMETRY": "true", "SLING_HOME_DIR": str(ctx.workdir / "sling")}
    argv = [str(binary), "run", "--src-conn", "PERF_SLING_SRC", "--src-stream", stream, "--tgt-conn",
            "PERF_SLING_DST", "--tgt-object", f"public.{target}", "--mode", "truncate"]
    return Case(key, f"Sling, {'MariaDB' if source == 'mysql' else 'PG'} -> PG (mode truncate)", argv,
                _empty_table(ctx, target), _counter(ctx, f"public.{target}"), ctx.rows, env=env,
                skip=skip or (ctx.mysql_error if source == "mysql" else None))


def sling_pg(ctx: Context) -> Case:
    return _sling(ctx, "sling-pg", "pg")


def sling_mysql(ctx: Context) -> Case:
    return _sling(ctx, "sling-mysql", "mysql")


def _pgloader(ctx: Context, key: str, source: str) -> Case:
    target = key.replace("-", "_")
    if source == "mysql":
        src = ctx.mysql.url(ctx.src_db)
        only = f"INCLUDING ONLY TABLE NAMES MATCHING '{ctx.table}'"
        rename = (f"ALTER TABLE NAMES MATCHING '{ctx.table}' RENAME TO '{target}'\n"
                  f"  ALTER SCHEMA '{ctx.src_db}' RENAME TO 'public'")  # else it loads into schema <database>
    else:
        src = ctx.src.replace("postgresql://", "pgsql://", 1)
        only = f"INCLUDING ONLY TABLE NAMES MATCHING '{ctx.table}' IN SCHEMA 'public'"
        rename = f"ALTER TABLE NAMES MATCHING '{ctx.table}' IN SCHEMA 'public' RENAME TO '{target}'"
    command = (f"LOAD DATABASE\n  FROM {src}\n  INTO {ctx.dst.replace('postgresql://', 'pgsql://', 1)}\n"
               "  WITH data only, truncate, prefetch rows = 10000, batch rows = 10000, workers = 2, "
               f"concurrency = 1\n  {only}\n  {rename};\n")
    load = ctx.workdir / f"{target}.load"
    load.write_text(command, encoding="utf-8")
    binary = shutil.which("pgloader")
    return Case(key, f"pgloader, {'MariaDB' if source == 'mysql' else 'PG'} -> PG (batch/prefetch 10k)",
                [binary or "pgloader", "--no-ssl-cert-verification", str(load)], _empty_table(ctx, target),
                _counter(ctx, f"public.{target}"), ctx.rows,
                skip=(None if binary else "pgloader not on PATH (Debian package `pgloader`: apt-get install pgloader)")
                or (ctx.mysql_error if source == "mysql" else None))


def pgloader_pg(ctx: Context) -> Case:
    return _pgloader(ctx, "pgloader-pg", "pg")


def pgloader_mysql(ctx: Context) -> Case:
    return _pgloader(ctx, "pgloader-mysql", "mysql")


def _python_peer(ctx: Context, peer: str, target: str, limit: int | None = None) -> list[str]:
    argv = [str(PEERS_PYTHON), "-m", "perf.peers", peer, "--src", ctx.src, "--dst", ctx.dst,
            "--table", ctx.table, "--target", target]
    return argv + (["--limit", str(limit)] if limit else [])


def dlt_pg(ctx: Context) -> Case:
    return Case("dlt-pg", "dlt sql_table (ConnectorX backend, csv/COPY), PG -> PG", _python_peer(ctx, "dlt", "peer_dlt"),
                _drop(ctx, "SCHEMA", "peer_dlt"), _counter(ctx, f"peer_dlt.{ctx.table}"), ctx.rows,
                env={"RUNTIME__DLTHUB_TELEMETRY": "false"}, skip=_missing("dlt", "sqlalchemy", "psycopg2"),
                notes="creates its own table (+ _dlt_load_id, _dlt_id), text as varchar")


def polars_pg(ctx: Context) -> Case:
    return Case("polars-pg", "Polars read_database_uri + write_database(adbc), PG -> PG",
                _python_peer(ctx, "polars", "peer_polars"), _drop(ctx, "TABLE", "public.peer_polars"),
                _counter(ctx, "public.peer_polars"), ctx.rows,
                notes="whole table in memory; creates its own table: jsonb, char(3) -> text, numeric(12,2) -> numeric")


def pandas_pg(ctx: Context) -> Case:
    sample = min(ctx.rows, ctx.sample_rows)
    return Case("pandas-pg", f"pandas read_sql + to_sql ({sample:,}-row sample, extrapolated)",
                _python_peer(ctx, "pandas", "peer_pandas", sample), _drop(ctx, "TABLE", "public.peer_pandas"),
                _counter(ctx, "public.peer_pandas"), sample, skip=_missing("pandas", "sqlalchemy", "psycopg2"),
                notes="creates its own table: numeric -> double precision, jsonb read as text")


CASES: dict[str, Callable[[Context], Case]] = {
    "copy-limit": copy_limit, "engine": engine_defaults, "engine-novalidate": engine_no_validation,
    "engine-nocheckpoints": engine_no_checkpoints, "engine-mysql": engine_mysql, "engine-rules": engine_rules,
    "engine-dask": engine_dask,
    "sling-pg": sling_pg,
    "sling-mysql": sling_mysql, "pgloader-pg": pgloader_pg, "pgloader-mysql": pgloader_mysql, "dlt-pg": dlt_pg,
    "polars-pg": polars_pg, "pandas-pg": pandas_pg,
}
SMOKE_CASES = ("copy-limit", "engine", "engine-novalidate", "engine-nocheckpoints", "engine-mysql", "engine-rules")
