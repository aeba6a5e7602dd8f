"""Inspect a run's staged batches with DuckDB: the only module that imports duckdb."""

from __future__ import annotations

from pathlib import Path

import duckdb


def staged_files(staging: Path) -> dict[str, str]:
    """View name -> Parquet glob for what a run staged: `rejected` rows and loaded `batches`."""
    views = {}
    for name in ("rejected", "batches"):
        if any((staging / name).glob("*.parquet")):
            views[name] = str(staging / name / "*.parquet")
    return views


def query(staging: Path, sql: str | None = None) -> str:
    """Run `sql` over the staged Parquet (views `rejected`, `batches`); default: a summary of each view."""
    views = staged_files(staging)
    if not views:
        return f"nothing staged in {staging} (rejected rows are staged; set pipeline.stage_batches = true for all)"
    con = duckdb.connect()
    for name, pattern in views.items():
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet(?)", [pattern])
    if sql:
        return str(con.sql(sql))
    parts = []
    for name in views:
        parts.append(f"{name}: {con.sql(f'SELECT COUNT(*) FROM {name}').fetchone()[0]:,} rows")  # type: ignore[index]
    if "rejected" in views:
        parts.append(str(con.sql("SELECT checks, COUNT(*) AS rows FROM rejected GROUP BY 1 ORDER BY 2 DESC LIMIT 10")))
    return "\n".join(parts)
