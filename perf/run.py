"""`make perf`: copy the reference table with the engine, the raw COPY limit and peer tools; report medians.

    python -m perf.run [--rows 1M] [--runs 3] [--cases engine,copy-limit,...] [--smoke] [--scaling]
    python -m perf.run --wholedb [--wholedb-rows 2M | --wholedb-tables 200] [--runs 3]

Cases run alternately (A B C A B C …), so drift on the machine (caches, autovacuum, thermal) spreads over all
cases instead of favouring whichever ran first. Results go to perf/results/latest.json (+ a dated copy);
`--smoke` (a tiny CI run) writes smoke.json, `--scaling` (1M vs 10M rows, workers 1/2/4) scaling-latest.json,
`--wholedb` (whole-database copies of a star schema, perf/wholedb.py) wholedb-latest.json, with
`--wholedb-tables N` (a database of N small tables, perf/manytables.py) manytables-latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from perf import datasets, manytables, wholedb
from perf.cases import (
    CASES,
    ROOT,
    SMOKE_CASES,
    Case,
    Context,
    copy_limit,
    engine_defaults,
    engine_source,
    engine_workers,
    variant,
)
from perf.db import Server, pg_create_database
from perf.measure import run_measured, wait_for_quiet
from perf.report import CaseResult, markdown, summarize, write_results

RESULTS = ROOT / "perf" / "results"
MYSQL_CASES = {"engine-mysql", "sling-mysql", "pgloader-mysql", "mariadb-limit", "bare-mysql"}
SQLITE_CASES = {"engine-sqlite", "sqlite-limit"}
GATING = {"copy-limit", "engine", "engine-novalidate", "engine-nocheckpoints", "engine-mysql"}


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def row_count(text: str) -> int:
    """`1000000`, `1M`, `10m`, `500k`, `1_000_000`."""
    t = text.strip().lower().replace("_", "").replace(",", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    value = int(float(t[:-1]) * scale) if scale > 1 else int(t)
    if value < 1:
        raise argparse.ArgumentTypeError(f"row count must be positive, got {text!r}")
    return value


def make_context(args: argparse.Namespace, rows: int, need_mysql: bool, need_shuffled: bool = False,
                 need_sqlite: bool = False) -> Context:
    pg, mysql = Server(args.pg), Server(args.mysql)
    table, data_bytes = datasets.ensure_pg(pg, args.src_db, rows, say)
    shuffled = datasets.ensure_pg_shuffled(pg, args.src_db, rows, say) if need_shuffled else None
    pg_create_database(pg, args.dst_db)
    mysql_error = None
    if need_mysql:
        try:
            datasets.ensure_mysql(mysql, args.src_db, rows, say)
        except Exception as exc:  # any driver or connection error: those cases are reported skipped
            mysql_error = f"MariaDB/MySQL source unavailable at {args.mysql}: {str(exc).splitlines()[0]}"
            say(mysql_error)
    workdir = ROOT / ".engine" / "perf" / str(rows)
    workdir.mkdir(parents=True, exist_ok=True)
    sqlite_path = datasets.ensure_sqlite(pg, args.src_db, rows, workdir, say) if need_sqlite else None
    return Context(pg, mysql, args.src_db, args.dst_db, rows, table, data_bytes, workdir, mysql_error,
                   args.sample_rows, shuffled_table=shuffled, sqlite_path=sqlite_path)


def warm_up() -> None:
    """Import every Python tool once, untimed, so each has its bytecode cached as after a normal install.

    Some environments set PYTHONDONTWRITEBYTECODE; then every engine start recompiled the modules it imports
    (≈4 s here) and so would every Python peer. The children get an environment without it instead.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    modules = ["engine.cli", "engine.pipeline", "engine.task", "engine.validate", "engine.verify", "engine.explain",
               "perf.peers", "dlt", "dlt.sources.sql_database", "pandas", "sqlalchemy", "psycopg2"]
    code = f"import importlib\nfor m in {modules!r}:\n    try: importlib.import_module(m)\n    except ImportError: pass"
    run_measured([sys.executable, "-c", code], cwd=ROOT, timeout_s=600)


def _engine_phases(case: Case, result: CaseResult) -> None:
    """Keep the engine's own per-phase seconds, to show where its time goes."""
    if case.report_json is None or not case.report_json.is_file():
        return
    report = json.loads(case.report_json.read_text(encoding="utf-8"))
    runs = result.extra.setdefault("runs", [])
    runs.append({"wall": report.get("wall_seconds"), **report.get("phase_seconds", {})})
    keys = [k for k in runs[0] if k != "wall"]
    result.extra["phase_seconds"] = {k: round(statistics.median(r.get(k, 0.0) for r in runs), 3) for k in keys}
    result.extra["engine_wall_s"] = round(statistics.median(r["wall"] or 0.0 for r in runs), 3)
    if report.get("startup_seconds") is None:
        return
    starts = result.extra.setdefault("startups", [])
    starts.append({"seconds": report["startup_seconds"], **report.get("startup", {})})
    result.extra["startup_s"] = round(statistics.median(r["seconds"] for r in starts), 3)
    result.extra["startup"] = {k: round(statistics.median(r.get(k, 0.0) for r in starts), 3)
                               for k in starts[0] if k != "seconds"}


def run_once(case: Case, result: CaseResult, ctx: Context, label: str, timeout_s: float, quiet_s: float,
             retries: int) -> None:
    """One timed run; a failed attempt is retried up to `retries` times and stays on the record either way."""
    for attempt in range(retries + 1):
        case.reset()
        if case.report_json is not None:
            case.report_json.unlink(missing_ok=True)  # never read a previous run's report
        busy = wait_for_quiet(max_wait_s=quiet_s)
        source = engine_source()
        measured = run_measured(case.argv, env=case.env, cwd=ROOT, timeout_s=timeout_s)
        loaded = case.loaded() if measured.ok else None
        case.reset()  # empty the target now: autovacuum of a full table would otherwise land in the next case's run
        if measured.ok and loaded == case.rows:
            result.extra.setdefault("cpu_busy_before_run_pct", []).append(busy)
            if case.report_json is not None:
                result.extra.setdefault("engine_source", []).append(source)
            result.add_run(measured.wall_s, measured.peak_rss_mb, measured.cpu_s)
            _engine_phases(case, result)
            say(f"{label} {case.key} ({ctx.rows:,} rows): {measured.wall_s:.2f} s, {measured.peak_rss_mb:,.0f} MB")
            return
        reason = measured.failure() if not measured.ok else f"loaded {loaded} rows, expected {case.rows}"
        result.extra.setdefault("failed_attempts", []).append(reason)
        say(f"{label} {case.key} ({ctx.rows:,} rows): FAILED (attempt {attempt + 1}/{retries + 1}): {reason}")
    result.fail(reason)  # a case that keeps failing is not run again: its reason is what the table shows


def run_cases(cases: list[Case], ctx_rows: dict[str, Context], runs: int, timeout_s: float,
              group: str, quiet_s: float, retries: int) -> list[CaseResult]:
    results = []
    for case in cases:
        ctx = ctx_rows[case.key]
        result = CaseResult(case.key, case.label, ctx.rows, ctx.data_bytes, group=group, notes=case.notes,
                            extrapolated_from=case.rows if case.rows != ctx.rows else None, source=case.source)
        if case.skip:
            result.status, result.reason = "skipped", case.skip
            say(f"{case.key}: skipped: {case.skip}")
        results.append(result)
    active = [(c, r) for c, r in zip(cases, results, strict=True) if r.status == "ok"]
    warm_up()
    for number in range(1, runs + 1):
        for case, result in active:
            if result.status == "ok":
                run_once(case, result, ctx_rows[case.key], f"[run {number}/{runs}]", timeout_s, quiet_s, retries)
    return results


def validation_cost(rows: list[dict[str, Any]]) -> None:
    """engine-rules as a ratio to the same job without validation (issue 12: under 1.15)."""
    by_case = {r["case"]: r for r in rows}
    rules, plain = by_case.get("engine-rules"), by_case.get("engine-novalidate")
    if rules and plain and rules.get("wall_s_median") and plain.get("wall_s_median"):
        ratio = rules["wall_s_median"] / plain["wall_s_median"]
        rules.setdefault("extra", {})["ratio_to_novalidate"] = round(ratio, 3)
        say(f"engine-rules / engine-novalidate: {ratio:.2f}x wall, peak RSS {rules['peak_rss_mb']} MB vs "
            f"{plain['peak_rss_mb']} MB")
    unique = by_case.get("engine-unique-job")
    if unique and plain and unique.get("peak_rss_mb") and plain.get("peak_rss_mb"):
        growth = unique["peak_rss_mb"] - plain["peak_rss_mb"]
        unique.setdefault("extra", {})["rss_over_novalidate_mb"] = round(growth, 1)
        say(f"engine-unique-job: peak RSS {unique['peak_rss_mb']} MB, {growth:+.1f} MB over engine-novalidate, "
            f"{unique['wall_s_median'] / plain['wall_s_median']:.2f}x its wall")


def main_suite(args: argparse.Namespace) -> list[dict[str, Any]]:
    wanted = SMOKE_CASES if args.smoke else tuple(args.cases or CASES)
    keys = [k.split(":")[0] for k in wanted]  # `engine:pipeline.batch_rows=32768`: a case with settings
    unknown = [k for k in keys if k not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    ctx = make_context(args, args.rows, need_mysql=bool(MYSQL_CASES & set(keys)),
                       need_shuffled=any(k.endswith("-shuffled") for k in keys),
                       need_sqlite=bool(SQLITE_CASES & set(keys)))
    try:
        cases = [variant(CASES[k](ctx), w.split(":")[1:]) if ":" in w else CASES[k](ctx)
                 for k, w in zip(keys, wanted, strict=True)]
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    results = run_cases(cases, {c.key: ctx for c in cases}, args.runs, args.timeout, "cases", args.quiet_wait,
                        args.retries)
    rows = summarize(results)
    validation_cost(rows)
    name = args.out or ("smoke" if args.smoke else "latest")
    paths = write_results(rows, RESULTS, name, None if args.smoke or args.out else "")
    print(markdown(rows, f"{ctx.rows:,} rows ({ctx.data_bytes / 1e6:,.0f} MB), {args.runs} run(s) each, "
                         f"{os.cpu_count()} cores"))
    print(f"\nresults: {', '.join(str(p.relative_to(ROOT)) for p in paths)}")
    return rows


def scaling_suite(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The engine (defaults) and the COPY limit at each size, and the engine at workers 1/2/4 (smallest size)."""
    sizes = [row_count(s) for s in args.scaling_rows.split(",")]
    contexts = [make_context(args, rows, need_mysql=False) for rows in sizes]
    cases: list[Case] = []
    owner: dict[str, Context] = {}
    for ctx in contexts:
        for case in (copy_limit(ctx), engine_defaults(ctx)):
            case.key, case.label = f"{case.key}@{ctx.rows}", f"{case.label} @ {ctx.rows:,} rows"
            cases.append(case)
            owner[case.key] = ctx
    for workers in (1, 2, 4):
        case = engine_workers(contexts[0], workers)
        cases.append(case)
        owner[case.key] = contexts[0]
    results = run_cases(cases, owner, args.runs, args.timeout, "scaling", args.quiet_wait,
                        args.retries)
    for ctx in contexts:  # each size's ratio is to the COPY limit at that size
        limit = next((r.median for r in results if r.case == f"copy-limit@{ctx.rows}"), None)
        for r in results:
            if owner[r.case] is ctx and r.median and limit:
                r.extra["ratio_to_limit_same_size"] = round(r.median / limit, 2)
    rows = summarize(results)
    for row in rows:  # summarize() knows one limit; here each size has its own
        row["ratio_to_limit"] = row["extra"].get("ratio_to_limit_same_size")
    paths = write_results(rows, RESULTS, "scaling-latest", "scaling-")
    print(markdown(rows, f"Scaling: {', '.join(f'{s:,}' for s in sizes)} rows; {args.runs} run(s) each"))
    print("\n" + scaling_lines(rows, sizes))
    print(f"\nresults: {', '.join(str(p.relative_to(ROOT)) for p in paths)}")
    return rows


def scaling_lines(rows: list[dict[str, Any]], sizes: list[int]) -> str:
    by_case = {str(r["case"]): r for r in rows}
    lines = ["| what | rows | median s | × smallest size's time (linear = × rows) | "
             "× COPY limit at that size | peak RSS MB |", "|---|---:|---:|---:|---:|---:|"]
    for prefix in ("engine", "copy-limit"):
        base = by_case.get(f"{prefix}@{sizes[0]}", {}).get("wall_s_median")
        for size in sizes:
            r = by_case.get(f"{prefix}@{size}")
            if not r or not r.get("wall_s_median"):
                continue
            ratio = f"{float(r['wall_s_median']) / float(base):.2f} (rows × {size / sizes[0]:g})" if base else "–"
            same = r.get("extra", {}).get("ratio_to_limit_same_size", "–")
            lines.append(f"| {prefix} | {size:,} | {r['wall_s_median']} | {ratio} | {same} | {r['peak_rss_mb']} |")
    for workers in (1, 2, 4):
        r = by_case.get(f"engine-w{workers}")
        if r and r.get("wall_s_median"):
            lines.append(f"| engine, workers = {workers} | {sizes[0]:,} | {r['wall_s_median']} | – | "
                         f"{r.get('extra', {}).get('ratio_to_limit_same_size', '–')} | "
                         f"{r['peak_rss_mb']} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m perf.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=row_count, default=1_000_000, help="source rows (1M, 10M, 500k …; default 1M)")
    p.add_argument("--runs", type=int, default=3, help="runs per case (default 3; the median is reported)")
    p.add_argument("--cases", type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
                   help=f"comma-separated subset of: {', '.join(CASES)}; an engine case takes settings of its job "
                        "file after colons, e.g. engine:pipeline.batch_rows=32768:source.reader=adbc, to run an A/B "
                        "of a setting side by side")
    p.add_argument("--smoke", action="store_true", help="tiny CI run: raw COPY and the engine cases only")
    p.add_argument("--out", help="results file name under perf/results (default latest, or smoke); no dated copy")
    p.add_argument("--scaling", action="store_true", help="run the scaling table instead of the cases")
    p.add_argument("--scaling-rows", default="1M,10M", help="sizes for --scaling (default 1M,10M)")
    p.add_argument("--wholedb", action="store_true",
                   help="run the whole-database cases instead (engine, pgloader, pgcopydb, pg_dump/pg_restore); "
                        "--cases then picks among engine-db-mysql, engine-db-pg, engine-db-pg-copy, pgloader-db-mysql, "
                        "pgloader-db-pg, pgcopydb-db-pg, pgdump-db-pg")
    p.add_argument("--wholedb-rows", type=row_count, default=2_000_000,
                   help="rows in all over the star schema's tables for --wholedb (default 2M)")
    p.add_argument("--wholedb-tables", type=int, default=0,
                   help="copy a database of this many small tables (as --wholedb does the star schema) "
                        "(perf/manytables.py; --cases among engine-db-pg, engine-db-pg-copy, pgcopydb-db-pg, "
                        "pgdump-db-pg)")
    p.add_argument("--sample-rows", type=row_count, default=100_000, help="rows for extrapolated peers (pandas)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds before one run is killed")
    p.add_argument("--retries", type=int, default=2,
                   help="re-run a failed run up to this many times (every failure is kept in the results)")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="before each run, wait up to this many seconds for the CPUs to be idle (default 60)")
    p.add_argument("--pg", default=os.environ.get("PERF_PG_URL", "postgresql://postgres@127.0.0.1:5432"))
    p.add_argument("--mysql", default=os.environ.get("PERF_MYSQL_URL", "mysql://root@127.0.0.1:3306"))
    p.add_argument("--src-db", default="engine_perf_src")
    p.add_argument("--dst-db", default="engine_perf_dst")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    if args.smoke:
        args.quiet_wait = 0.0  # the smoke run checks that the suite works, not how fast
    if args.wholedb or args.wholedb_tables > 0:  # a copy that differs or a peer that fails is reported, never fatal
        (manytables.suite if args.wholedb_tables > 0 else wholedb.suite)(args, say, warm_up)
        return 0
    rows = scaling_suite(args) if args.scaling else main_suite(args)
    failed = [str(r["case"]) for r in rows if r["status"] == "failed" and str(r["case"]).split("@")[0] in GATING]
    if failed:
        say(f"failed: {', '.join(failed)} (the engine or the COPY limit must always run)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
