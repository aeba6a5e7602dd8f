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
        con.read_parquet(pattern).create_view(name)
    if sql:
        return str(con.sql(sql))
    parts = []
    for name in views:
        count = con.execute(f"SELECT COUNT(*) FROM {name}").fetchall()[0]
        parts.append(f"{name}: {count[0] if count else 0:,} rows")
    if "rejected" in views:
        parts.append(str(con.sql("SELECT checks, COUNT(*) AS rows FROM rejected GROUP BY 1 ORDER BY 2 DESC LIMIT 10")))
    return "\n".join(parts)
