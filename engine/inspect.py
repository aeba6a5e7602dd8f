"""Inspect a run's files with DuckDB: the only module that imports duckdb.

Views over the run's staging folder: `rejected` (quarantined rows), `staged` (loaded batches, when
`pipeline.stage_batches` kept them; also called `batches`), `partitions` (one row per partition: worker, start,
end, rows, bytes, retries, time per phase) and `metrics` (the run's 1 s samples: rows, bytes, RSS, queue depths,
rates), the last two from `metrics.json`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import duckdb

from engine.sql import quote_literal


def view_sql(staging: Path) -> dict[str, str]:
    """View name -> the SELECT defining it, for what the run left in `staging`."""
    views = {}
    if any((staging / "rejected").glob("*.parquet")):
        views["rejected"] = f"SELECT * FROM read_parquet({quote_literal(str(staging / 'rejected' / '*.parquet'))})"
    if any((staging / "batches").glob("*.parquet")):
        views["staged"] = f"SELECT * FROM read_parquet({quote_literal(str(staging / 'batches' / '*.parquet'))})"
        views["batches"] = "SELECT * FROM staged"
    metrics = staging / "metrics.json"
    if metrics.exists():
        source = f"read_json_auto({quote_literal(str(metrics))}, maximum_object_size = 268435456)"
        views["partitions"] = f"SELECT unnest(partitions, recursive := true) FROM {source}"
        views["metrics"] = f"SELECT unnest(samples, recursive := true) FROM {source}"
    return views


def init_script(staging: Path) -> Path:
    """A DuckDB init file creating the views (for `duckdb -init FILE`), written into the staging folder."""
    path = staging / "views.sql"
    path.write_text("".join(f"CREATE OR REPLACE VIEW {name} AS {sql};\n" for name, sql in view_sql(staging).items()),
                    encoding="utf-8")
    return path


def shell(staging: Path) -> str | None:
    """Open DuckDB's interactive shell on the views; without DuckDB's CLI, return how to open it."""
    script = init_script(staging)
    cli = shutil.which("duckdb")
    if cli is None:
        return (f"DuckDB's command-line shell is not installed; with it (https://duckdb.org/docs/installation), run:\n"
                f"  duckdb -init {script}\nor query here: engine inspect <job.toml> \"SELECT … FROM rejected\"")
    subprocess.run([cli, "-init", str(script)], check=False)
    return None


def query(staging: Path, sql: str | None = None) -> str:
    """Run `sql` over the views; default: a summary of each view."""
    views = view_sql(staging)
    if not views:
        return f"nothing staged in {staging} (rejected rows are staged; set pipeline.stage_batches = true for all)"
    con = duckdb.connect()
    for name, select in views.items():
        con.execute(f"CREATE VIEW {name} AS {select}")
    if sql:
        return str(con.sql(sql))
    parts = [f"views: {', '.join(views)}"]
    for name in views:
        if name != "batches":
            count = con.execute(f"SELECT COUNT(*) FROM {name}").fetchall()[0]
            parts.append(f"{name}: {count[0] if count else 0:,} rows")
    if "rejected" in views:
        parts.append(str(con.sql("SELECT checks, COUNT(*) AS rows FROM rejected GROUP BY 1 ORDER BY 2 DESC LIMIT 10")))
    return "\n".join(parts)
