"""The benchmark cases, one function each: what to run, how to reset its target, how to count what it loaded.

Every case copies the same source table into its own target table (or schema) in the destination database,
so cases never disturb each other; `reset` empties that target before each run (outside the timing) and
issues a CHECKPOINT, so no run pays for flushing the previous run's writes. Cases that load into an existing
table get one with the source's exact DDL (primary key included), like the raw COPY limit.
A case that cannot run here carries `skip` (the reason) and is reported, never dropped.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shlex
import shutil
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perf.datasets import COLUMNS, create_target
from perf.db import Server, mariadb_dump, pg_count, pg_exec

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
    shuffled_table: str | None = None  # the same rows stored shuffled against the key (cases that need it)
    sqlite_path: Path | None = None  # the same rows in a SQLite file (cases that need it)

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
    source: str = "pg"  # the source it reads: pg, mysql or sqlite (its ratio to that source's own limit)


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
                 notes: str = "", source_keys: str = "", table: str | None = None, rules: str = "") -> Case:
    target = key.replace("-", "_")
    url = (ctx.mysql.url(ctx.src_db) if source == "mysql" else f"sqlite:///{ctx.sqlite_path}" if source == "sqlite"
           else ctx.src)
    table = table or ("perf_orders" if source == "sqlite" else None)
    lines = [f"[job]\nname = \"perf_{target}\"\nrules_dir = {json.dumps(str(ROOT / 'rules'))}",
             f"[source]\nurl = {json.dumps(url)}\ntable = \"{table or ctx.table}\""
             + (f"\n{source_keys}" if source_keys else ""),
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
    # A SQLite source has naive timestamps: the engine creates its own table (timestamp, not timestamptz).
    reset = _drop(ctx, "TABLE", f"public.{target}") if source == "sqlite" else _empty_table(ctx, target)
    return Case(key, label, [str(ENGINE), "run", str(job), "--fresh", "--quiet", "--json", str(report)],
                reset, _counter(ctx, f"public.{target}"), ctx.rows,
                skip=ctx.mysql_error if source == "mysql" else None, notes=notes, report_json=report,
                source=source)


def engine_defaults(ctx: Context) -> Case:
    return _engine_case(ctx, "engine", "engine, defaults (checkpoints, validation, count verify)")


def engine_adbc(ctx: Context) -> Case:
    return _engine_case(ctx, "engine-adbc", "engine, defaults, ADBC reader ([source] reader = \"adbc\")",
                        source_keys='reader = "adbc"')


def _partitioned(ctx: Context, scheme: str, shuffled: bool) -> Case:
    """The engine's defaults with one partition scheme, on the reference table or its shuffled copy."""
    order = "shuffled" if shuffled else "ordered"
    key = f"engine-{scheme}" + ("-shuffled" if shuffled else "")
    return _engine_case(ctx, key, f"engine, defaults, partition_by = \"{scheme}\", {order} table",
                        source_keys=f'partition_by = "{scheme}"', table=ctx.shuffled_table if shuffled else None,
                        notes="rows stored in an order shuffled against the key" if shuffled else "")


def engine_keys(ctx: Context) -> Case:
    return _partitioned(ctx, "key", False)


def engine_blocks(ctx: Context) -> Case:
    return _partitioned(ctx, "blocks", False)


def engine_keys_shuffled(ctx: Context) -> Case:
    return _partitioned(ctx, "key", True)


def engine_blocks_shuffled(ctx: Context) -> Case:
    return _partitioned(ctx, "blocks", True)


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


def engine_unique_job(ctx: Context) -> Case:
    """Job-wide uniqueness over a column that is not the partition key (each ≈350-character note, distinct):
    every key goes through the run's shared hash index, the memory case of issue 12."""
    rule = {"name": "note_unique", "kind": "unique", "columns": ["note"], "scope": "job"}
    return _engine_case(ctx, "engine-unique-job", "engine, one job-wide unique rule (not on the partition key)",
                        rules="[[validate.rules]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in rule.items()),
                        notes="ratio of interest: peak RSS to engine-novalidate's")


def engine_mysql(ctx: Context) -> Case:
    return _engine_case(ctx, "engine-mysql", "engine, MariaDB -> PG (defaults)", source="mysql")


def engine_sqlite(ctx: Context) -> Case:
    return _engine_case(ctx, "engine-sqlite", "engine, SQLite -> PG (validation off)", source="sqlite",
                        validate=False, notes="the reference rules expect time zones, which SQLite has not")


def _toml_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else json.dumps(value)


def setting(text: str) -> tuple[str, str, object]:
    """`section.key=value` -> (section, key, value); the value is TOML (`32768`, `true`, `"adbc"`), or a bare
    word taken as a string (`adbc`)."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ValueError(f"a setting is section.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def variant(case: Case, settings: list[str]) -> Case:
    """An engine case with settings of its job file changed, e.g. `engine:pipeline.batch_rows=32768`: a job
    of its own (name, report) on the same target, so an A/B of a setting runs side by side in one run."""
    if case.report_json is None:
        raise ValueError(f"{case.key}: only engine cases take settings")
    job = Path(case.argv[2])
    data = tomllib.loads(job.read_text(encoding="utf-8"))
    for text in settings:
        section, key, value = setting(text)
        data.setdefault(section, {})[key] = value
    suffix = "_".join(f"{k}_{v}" for _, k, v in map(setting, settings))
    suffix = "".join(ch if ch.isalnum() else "_" for ch in suffix)
    data["job"]["name"] = f"{data['job']['name']}__{suffix}"
    path = job.with_name(f"{job.stem}__{suffix}.toml")
    path.write_text("\n".join(f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())
                              for name, values in data.items()), encoding="utf-8")
    report = path.with_suffix(".json")
    argv = [case.argv[0], case.argv[1], str(path), *case.argv[3:]]
    argv[argv.index(str(case.report_json))] = str(report)
    key = ":".join([case.key, *settings])
    return Case(key, f"{case.label}, {', '.join(settings)}", argv, case.reset, case.loaded, case.rows, case.env,
                case.skip, case.notes, report, case.source)


_UTC = {"PGOPTIONS": "-c TimeZone=UTC"}  # the limits' text timestamps are UTC


def mariadb_limit(ctx: Context) -> Case:
    """MariaDB's own floor: the `mariadb` client's raw tab-separated output piped into a text COPY."""
    m = ctx.mysql
    query = f"SELECT {', '.join(COLUMNS)} FROM {ctx.table}"
    client = mariadb_dump(m, ctx.src_db, query, "--init-command=SET time_zone = '+00:00'")
    into = "COPY public.mariadb_limit FROM STDIN (FORMAT text, NULL 'NULL')"
    pipe = (f"set -o pipefail; {shlex.join(client)} | psql -X -q -v ON_ERROR_STOP=1 {shlex.quote(ctx.dst)} "
            f"-c {shlex.quote(into)}")
    env = {**_UTC, **({"MYSQL_PWD": m.password} if m.password else {})}
    missing = [b for b in ("mariadb", "psql") if not shutil.which(b)]
    return Case("mariadb-limit", "MariaDB limit (mariadb --quick --batch --raw -> psql COPY text)",
                ["bash", "-c", pipe], _empty_table(ctx, "mariadb_limit"), _counter(ctx, "public.mariadb_limit"),
                ctx.rows, env=env, source="mysql",
                skip=ctx.mysql_error or (f"{', '.join(missing)} not on PATH (`make perf` installs them)"
                                         if missing else None))


def sqlite_limit(ctx: Context) -> Case:
    """SQLite's own floor: the `sqlite3` shell's CSV output piped into a CSV COPY."""
    path = str(ctx.sqlite_path)
    into = "COPY public.sqlite_limit FROM STDIN (FORMAT csv)"
    pipe = (f"set -o pipefail; sqlite3 -csv {shlex.quote(path)} 'SELECT * FROM perf_orders' | "
            f"psql -X -q -v ON_ERROR_STOP=1 {shlex.quote(ctx.dst)} -c {shlex.quote(into)}")
    missing = [b for b in ("sqlite3", "psql") if not shutil.which(b)]
    return Case("sqlite-limit", "SQLite limit (sqlite3 -csv -> psql COPY csv)", ["bash", "-c", pipe],
                _empty_table(ctx, "sqlite_limit"), _counter(ctx, "public.sqlite_limit"), ctx.rows, env=dict(_UTC),
                source="sqlite", skip=f"{', '.join(missing)} not on PATH (`make perf` installs them)" if missing else None)


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


def _bare(ctx: Context, key: str, reader: str, source: str = "pg") -> Case:
    """Rows to Arrow and straight back with nothing else (perf/bare.py), in the engine's environment: what the
    libraries themselves spend, with their own types, beside what the engine spends doing its work too."""
    target = key.replace("-", "_")
    src = ctx.mysql.url(ctx.src_db) if source == "mysql" else ctx.src
    argv = [str(ENGINE.parent / "python"), "-m", "perf.bare", "--reader", reader, "--src", src, "--dst",
            ctx.dst, "--table", ctx.table, "--target", target, "--rows", str(ctx.rows)]
    origin = "MariaDB, " if source == "mysql" else ""
    missing = None if ENGINE.is_file() else f"{ENGINE.relative_to(ROOT)} missing (`make setup`)"
    return Case(key, f"bare {origin}{'ConnectorX' if reader == 'connectorx' else 'ADBC'} read -> ADBC ingest "
                "(50,000-row key ranges, 2 threads, nothing else)", argv, _drop(ctx, "TABLE", f"public.{target}"),
                _counter(ctx, f"public.{target}"), ctx.rows, skip=(ctx.mysql_error if source == "mysql" else None)
                or missing, source=source, notes="the libraries' own types, into a table ADBC creates; no checks")


def bare_cx(ctx: Context) -> Case:
    return _bare(ctx, "bare-cx", "connectorx")


def bare_adbc(ctx: Context) -> Case:
    return _bare(ctx, "bare-adbc", "adbc")


def bare_mysql(ctx: Context) -> Case:
    return _bare(ctx, "bare-mysql", "connectorx", "mysql")


CASES: dict[str, Callable[[Context], Case]] = {
    "copy-limit": copy_limit, "engine": engine_defaults, "engine-adbc": engine_adbc,
    "engine-key": engine_keys, "engine-blocks": engine_blocks, "engine-key-shuffled": engine_keys_shuffled,
    "engine-blocks-shuffled": engine_blocks_shuffled, "engine-novalidate": engine_no_validation,
    "engine-nocheckpoints": engine_no_checkpoints, "engine-mysql": engine_mysql, "engine-rules": engine_rules,
    "engine-unique-job": engine_unique_job, "engine-dask": engine_dask, "mariadb-limit": mariadb_limit,
    "engine-sqlite": engine_sqlite, "sqlite-limit": sqlite_limit, "sling-pg": sling_pg,
    "sling-mysql": sling_mysql, "pgloader-pg": pgloader_pg, "pgloader-mysql": pgloader_mysql, "dlt-pg": dlt_pg,
    "polars-pg": polars_pg, "pandas-pg": pandas_pg, "bare-cx": bare_cx,
    "bare-adbc": bare_adbc, "bare-mysql": bare_mysql,
}
SMOKE_CASES = ("copy-limit", "engine", "engine-adbc", "engine-novalidate", "engine-nocheckpoints", "engine-mysql",
               "engine-rules", "mariadb-limit", "engine-sqlite", "sqlite-limit", "bare-adbc", "bare-mysql")


def engine_source() -> str:
    """A short hash of engine/*.py: which engine code a run measured (the work tree may change between runs)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "engine").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]
