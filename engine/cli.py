"""Command line: thin — parses arguments, calls the public API, renders output, sets the exit code."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from pathlib import Path

import engine
from engine.config import describe_keys
from engine.errors import EXIT_CODES, EXIT_INTERNAL, EngineError, TransientError
from engine.urls import redact

EXAMPLE = """\
example job file (configs/orders.toml):

  [job]
  name = "orders_copy"

  [source]
  url = "postgresql://user@127.0.0.1:5432/src"   # or mysql://…, sqlite:///abs/path.db
  table = "public.orders"
  partition_on = "id"      # optional: default is an integer primary key
  partitions = 8           # optional: default is one per 50,000 rows

  [target]
  url = "postgresql://user:${PGPASSWORD}@127.0.0.1:5432/dst"   # ${VAR} comes from the environment
  table = "public.orders"
  mode = "append"          # append | replace | upsert
  key = ["id"]             # required for upsert

a whole database instead (every table with its keys, indexes, sequences, foreign keys and views):

  [source]
  url = "mysql://root@127.0.0.1:3306/chinook"
  tables = ["*", "!tmp_*"] # glob patterns; "!" excludes
  [target]
  url = "postgresql://user@127.0.0.1:5432/dst"
  schema = "chinook"
  mode = "replace"         # built beside the old schema, swapped in at the end
  naming = "snake"         # keep | lower | snake
  orphans = "fail"         # fail | quarantine | not_valid
"""


def _exit_codes() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {redact(message)}", file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    gc.disable()  # the imports build hundreds of thousands of objects and no garbage: skip collecting them
    run_job = engine.run_job
    gc.freeze()
    gc.enable()

    config = engine.load_config(args.config)
    try:
        report = run_job(config, fresh=args.fresh,
                         observer=engine.progress_observer(args.log_format, quiet=args.quiet))
    except BaseException as exc:  # an engine error, a bug or an interrupt: a run that started has a report
        failed = getattr(exc, "report", None)
        if failed is not None:
            _publish(failed, args.metrics_file)
            print(redact(failed.render()))
            _write_json(args.json, failed.to_json())
        raise
    _publish(report, args.metrics_file)
    print(redact(report.render()))
    _write_json(args.json, report.to_json())
    return 0


def _publish(report: engine.RunReport, metrics_file: str | None) -> None:
    report.notes.extend(engine.publish_metrics(report, metrics_file))


def _write_json(path: str | None, text: str) -> None:
    if path:
        Path(path).write_text(redact(text) + "\n", encoding="utf-8")


def cmd_plan(args: argparse.Namespace) -> int:
    print(redact(engine.explain_job(engine.load_config(args.config))))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    problems = engine.check_job(engine.load_config(args.config))
    if problems:
        print(f"{args.config}: {len(problems)} problem(s):")
        for p in problems:
            print(f"  - {redact(p)}")
        return 2
    print(f"{args.config}: ok (config valid, source and target reachable, rules load, columns fit)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    print(redact(engine.job_status(engine.load_config(args.config))))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    config = engine.load_config(args.config)
    rows = engine.run_history(config, args.limit)
    if args.json:
        print(redact(json.dumps(rows, indent=2)))
    else:
        print(redact(engine.render_history(config.job.name, rows)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    path = engine.html_report(engine.load_config(args.config), args.run, Path(args.output) if args.output else None)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB, opens offline)")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    print(redact(engine.collect_garbage(engine.load_config(args.config), args.older_than, args.yes)))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    config = engine.load_config(args.config)
    staging = engine.latest_staging(config)
    if staging is None:
        print(f"no staged runs for job {config.job.name!r} yet")
        return 0
    if args.sql is None and sys.stdin.isatty() and sys.stdout.isatty():
        how = engine.inspect_shell(staging)  # DuckDB's shell on the views, or how to open it
        if how is not None:
            print(f"-- {staging}")
            print(engine.inspect_staged(staging))
            print(how)
        return 0
    print(f"-- {staging}")
    print(engine.inspect_staged(staging, args.sql))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    report = engine.run_demo(args.config, args.rows, args.regenerate, _say)
    print(redact(report.render()))
    return 0


def cmd_types(args: argparse.Namespace) -> int:
    print(engine.type_map_markdown())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine",
        description="Move tables from PostgreSQL, MySQL/MariaDB or SQLite into PostgreSQL: partitioned, "
                    "transformed, validated, checkpointed and verified.",
        epilog=EXAMPLE + "\n" + _exit_codes(), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, extra: str = "") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=extra,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("config", metavar="CONFIG", help="the job file, e.g. configs/orders.toml")
        return p

    run = add("run", "Run the job (or resume its unfinished run) and print a report.",
              "Resume: rerunning a failed or killed job skips partitions already committed.\n\n"
              "Every key of a job file:\n\n" + describe_keys() + "\n\n" + _exit_codes())
    run.add_argument("--fresh", action="store_true", help="start a new run even if an unfinished one exists")
    run.add_argument("--json", metavar="PATH", help="also write the run report as JSON to PATH")
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    run.add_argument("--metrics-file", metavar="PATH",
                     help="write Prometheus metrics of the run to PATH (node_exporter's textfile collector); "
                          "ENGINE_PUSHGATEWAY_URL also pushes them to a Pushgateway")
    run.add_argument("--log-format", choices=("text", "json"), default="text",
                     help="progress on stderr: text (a live display on a terminal, else a timestamped line every "
                          "few seconds) or json (one object per line: run_id, job, table, partition, event, counts, "
                          "durations)")
    run.set_defaults(func=cmd_run)
    add("plan", "Dry run: partitions, column type mapping and target DDL (a whole database: its tables, keys, "
        "views, sequences, orphan rows and what is not carried). Writes nothing.").set_defaults(func=cmd_plan)
    add("check", "Validate the job: config, connections, rules, target columns (a whole database: patterns that "
        "match nothing, names the naming would merge, orphans); lists every problem.").set_defaults(func=cmd_check)
    add("status", "Show the job's runs and, for the latest, which partitions (or whole-database steps) are done."
        ).set_defaults(func=cmd_status)
    runs = add("runs", "The job's run history, newest first: run, status, started, duration, rows, rejected, mode.")
    runs.add_argument("--json", action="store_true", help="print the history as JSON, for scripts")
    runs.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50)")
    runs.set_defaults(func=cmd_runs)
    report = add("report", "Write a run's report as one self-contained HTML file (charts included; opens offline).")
    report.add_argument("--run", metavar="ID", help="the run (default: the latest; engine runs lists them)")
    report.add_argument("-o", "--output", metavar="FILE.html", help="where to write it (default: <job>-<run>.html)")
    report.set_defaults(func=cmd_report)
    gc_ = add("gc", "Delete old runs' staging files and quarantined rows (what a resumable run needs is kept); "
                    "prints what it would delete unless --yes.")
    gc_.add_argument("--older-than", required=True, metavar="AGE", help="runs that ended this long ago: 30d, 12h, 2w")
    gc_.add_argument("--yes", action="store_true", help="delete (without it, only print what would be deleted)")
    gc_.set_defaults(func=cmd_gc)
    inspect = add("inspect", "Query the latest run's files with DuckDB (views: rejected, staged, partitions, "
                             "metrics); without SQL on a terminal, DuckDB's interactive shell on them.")
    inspect.add_argument("sql", nargs="?", help="SQL over the views, e.g. \"SELECT reason FROM rejected LIMIT 5\"")
    inspect.set_defaults(func=cmd_inspect)
    types = sub.add_parser("types", help="Print the type map: source type -> Arrow in flight -> PostgreSQL type.")
    types.set_defaults(func=cmd_types)
    demo = sub.add_parser("demo", help="Generate demo data and run configs/demo.toml into PostgreSQL "
                          "(local service, DATABASE_URL, or a private server it starts).")
    demo.add_argument("--config", default="configs/demo.toml")
    demo.add_argument("--rows", type=int, default=300_000)
    demo.add_argument("--regenerate", action="store_true")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RUST_BACKTRACE", "0")  # driver panics are reported as errors, not Rust backtraces
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # idle BLAS threads (via numpy) only take CPU from the work
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except EngineError as exc:
        message = redact(str(exc))
        if isinstance(exc, TransientError) and "rerun" not in message.lower():
            message += "; rerun to resume"  # a database stayed unreachable (exit 69): a later rerun may succeed
        print(f"error: {message}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception:
        print(redact(traceback.format_exc()), file=sys.stderr)
        print("error: unexpected internal error (above); rerun to resume", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "build_parser"]
