"""Read-only views of a job: the plan (`engine plan`), a pre-flight check (`engine check`), run status."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from engine import dbplan, ddl, passthrough, pg, rulecheck
from engine.config import JobConfig
from engine.dbschema import DatabaseSchema
from engine.errors import ConfigError, EngineError
from engine.load import preflight, target_ddl
from engine.model import Plan
from engine.modes import mode_of
from engine.plan import make_plan
from engine.report import render_rules
from engine.sql import TableName
from engine.transform import build_transform
from engine.validate import load_schema


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])


def column_mapping(plan: Plan) -> str:
    by_source = {c.name: c for c in plan.columns}
    rows = []
    for t in plan.target_columns:
        s = by_source.get(t.source or "")
        note = (s.note if s else "computed by [transform]") or ("cast by PostgreSQL on load" if t.via_text else "")
        rows.append((s.name if s else "-", s.source_type if s else "-", s.flight if s else "-", t.name, t.pg_type,
                     note))
    return _table(rows, ("source column", "source type", "in flight", "target column", "target type", "note"))


def _partitioning(plan: Plan) -> str:
    if plan.source_state is not None:
        return (f"source rows: about {plan.source_rows:,} (the catalog's estimate); partitioned by block ranges "
                "(TID range scans)")
    return f"source rows: {plan.source_rows:,}; partition key: {plan.key or '(none: one partition)'}"


def explain(config: JobConfig) -> str:
    if config.is_database:
        return _explain_database(config)
    plan = make_plan(config)
    table = config.target_table
    lines = [f"job {config.job.name}: {config.source_url} -> {config.target_url} {table} [{config.target.mode}: "
             f"{mode_of(config.target.mode).summary}]",
             _partitioning(plan),
             "", _table([(str(p.id), p.label()) for p in plan.partitions],
                        ("partition", "range of " + ("blocks" if plan.source_state else plan.key or "-"))),
             "", column_mapping(plan), ""]
    try:
        with pg.connection(config.target_url) as conn:
            existing = pg.table_columns(conn, table)
    except EngineError as exc:
        existing = None
        lines.append(f"(target not reachable: {exc})")
    if existing is None:
        key = tuple(config.target.key)
        lines += ["target table does not exist; it would be created as:", target_ddl(plan, table, key) + ";"]
    else:
        lines.append(f"target table exists with columns: {', '.join(f'{n} {t}' for n, t in existing.items())}")
    lines.append("\nnothing was written (dry run)")
    return "\n".join(lines)


def _problems(exc: EngineError) -> list[str]:
    """A ConfigError's own list, so `engine check` shows one flat list rather than lists inside it."""
    return list(exc.problems) if isinstance(exc, ConfigError) else [str(exc)]


def check(config: JobConfig) -> list[str]:
    """Every problem found, without writing anything."""
    if config.is_database:
        return _check_database(config)
    problems: list[str] = []
    for step in (lambda: build_transform(config.transform, config.rules_dir),
                 lambda: config.validate_.schema_ref and load_schema(config.rules_dir, config.validate_.schema_ref)):
        try:
            step()
        except EngineError as exc:
            problems.extend(_problems(exc))
    plan = None
    try:
        plan = make_plan(config, preview=False)  # zero dates are no problem (their rows are quarantined)
        problems += rulecheck.problems(config, plan)
    except EngineError as exc:
        problems.extend(_problems(exc))
    try:
        with pg.connection(config.target_url) as conn:
            if plan is None and pg.table_columns(conn, config.target_table) is None and not config.target.create:
                problems.append(f"`target.table`: {config.target_table} does not exist and target.create = false")
            if plan is not None:
                problems += preflight(conn, plan, config.target_table, config.target.mode, tuple(config.target.key),
                                      config.target.create)
            problems += [f"`target.types.{name}`: {pg_type!r} is not a PostgreSQL type"
                         for name, pg_type in config.target.types.items() if not pg.is_type(conn, pg_type)]
    except EngineError as exc:
        problems.append(f"target: {exc}")
    return problems


def _explain_database(config: JobConfig) -> str:
    db = dbplan.read_database(config)
    found = dbplan.problems(config, db)
    orphans = dbplan.find_orphans(config.source_url, db) if not found else []
    text = dbplan.describe(config, db, orphans, _routes(config, db, orphans) if not found else {})
    return text + ("\nproblems:\n" + "\n".join(f"  - {p}" for p in found) if found else "")


def _routes(config: JobConfig, db: DatabaseSchema, orphans: list[dbplan.Orphans]) -> dict[str, str]:
    """Under `reader = "copy"`: how each table's rows will go, and why not server to server where they cannot."""
    if config.source.reader != "copy":
        return {}
    from engine.migrate import table_job  # the run's own per-table job, as the run will make it

    names = ddl.Names(db, config.target.naming)
    routes = {}
    for table in db.tables:
        if table.copy_data:
            job = table_job(config, db, names, table, config.target.schema_ or "public", config.job.name, orphans)
            why = passthrough.refusal(job)
            routes[table.name] = "rows server to server" if why is None else f"rows through batches: {why}"
    return routes


def _check_database(config: JobConfig) -> list[str]:
    try:
        db = dbplan.read_database(config)
    except EngineError as exc:
        return _problems(exc)
    found = dbplan.problems(config, db)
    problem = pg.unreachable(str(config.target_url))
    if problem:
        found.append(f"`target.url`: {problem}")
    if not found:
        error = dbplan.orphan_check(config, db)[1]
        found += [error] if error else []
    return found


def _database_status(config: JobConfig, conn: pg.Connection, run_id: str) -> list[str]:
    steps = pg.fetch_all(conn, "SELECT step, outcome, seconds, COALESCE(detail, '') FROM engine.steps "
                               "WHERE run_id = $1 ORDER BY done_at", (run_id,))
    rows = [(s, o, f"{sec:.2f}" if sec is not None else "", d[:70]) for s, o, sec, d in steps]
    return ["", f"steps of run {run_id}: {len(steps)} done", _table(rows, ("step", "outcome", "seconds", "detail"))]


def status(config: JobConfig) -> str:
    with pg.connection(config.target_url) as conn:
        if pg.table_columns(conn, TableName("engine", "runs")) is None:
            return f"job {config.job.name}: no runs yet"
        runs = pg.fetch_all(conn, """SELECT run_id, status, started_at, finished_at, error FROM engine.runs
                                     WHERE job = $1 ORDER BY started_at DESC LIMIT 10""", (config.job.name,))
        if not runs:
            return f"job {config.job.name}: no runs yet"
        lines = [f"job {config.job.name}: last {len(runs)} run(s)",
                 _table([(r[0], r[1], str(r[2])[:19], str(r[3] or "")[:19], (r[4] or "")[:60]) for r in runs],
                        ("run", "status", "started", "finished", "error"))]
        latest = runs[0][0]
        if config.is_database:
            return "\n".join(lines + _database_status(config, conn, latest))
        plan = Plan.from_json(pg.fetch_all(conn, "SELECT plan::text FROM engine.runs WHERE run_id = $1", (latest,))[0][0])
        done = {r[0]: r for r in pg.fetch_all(conn, """SELECT partition_id, rows_read, rows_loaded, rows_quarantined,
                seconds FROM engine.checkpoints WHERE run_id = $1""", (latest,))}
        rows = []
        for p in plan.partitions:
            d = done.get(p.id)
            state = "done" if d else ("in flight or failed" if runs[0][1] in ("running", "failed") else "not run")
            rows.append((str(p.id), p.label(), state, *(f"{d[i]:,}" if d else "" for i in (1, 2, 3))))
        report = pg.fetch_all(conn, "SELECT report::text FROM engine.runs WHERE run_id = $1", (latest,))[0][0]
        rules = json.loads(report).get("rules", []) if report else []
        if rules:
            lines += ["", f"validation of run {latest}:", *render_rules(rules)]
        lines += ["", f"partitions of run {latest}: {len(done)}/{len(plan.partitions)} done",
                  _table(rows, ("partition", "range", "state", "read", "loaded", "quarantined"))]
        return "\n".join(lines)


def latest_staging(config: JobConfig) -> Path | None:
    root = Path(config.pipeline.staging_dir)
    root = (root if root.is_absolute() else Path.cwd() / root) / config.job.name
    runs = sorted(p for p in root.glob("*") if p.is_dir()) if root.exists() else []
    return runs[-1] if runs else None
