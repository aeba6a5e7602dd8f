"""The quarantine: rows that are not loaded, each with every check it failed and why.

A record holds the job, run and partition, the row's key, the checks and columns that failed, the reasons
and the whole source row as JSON. Records reach `engine.quarantine` in the partition's own transaction (so
they commit with its rows and checkpoint, or not at all) and a Parquet file in the run's staging folder (for
`engine inspect`). Two sources of records: validation (`bad` frames from `engine.validate`) and the target
refusing a row on load (`RejectedRow`, from `engine.load`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine import frames, pg
from engine.errors import RESUME, StagingError

ROW_INDEX = "__engine_row"  # a failing row's position in its batch
# A `bad` frame, as validation hands it over: one row per failing row of a batch.
BAD_ROWS_SCHEMA = {ROW_INDEX: pl.UInt32, "checks": pl.String, "columns": pl.String, "reason": pl.String}

TABLE_DDL = [
    """CREATE TABLE IF NOT EXISTS engine.quarantine (
        id bigserial PRIMARY KEY, job text NOT NULL, run_id text NOT NULL, partition_id integer NOT NULL,
        source_key text, checks text NOT NULL, columns text NOT NULL, reason text NOT NULL, row jsonb NOT NULL,
        quarantined_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX IF NOT EXISTS quarantine_run_idx ON engine.quarantine (job, run_id)",
    # Rows that failed a `warn` rule: loaded all the same, recorded here the same way, so that they can be listed.
    """CREATE TABLE IF NOT EXISTS engine.warnings (
        id bigserial PRIMARY KEY, job text NOT NULL, run_id text NOT NULL, partition_id integer NOT NULL,
        source_key text, checks text NOT NULL, columns text NOT NULL, reason text NOT NULL, row jsonb NOT NULL,
        warned_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX IF NOT EXISTS warnings_run_idx ON engine.warnings (job, run_id)",
]
WARNINGS = b"warnings"  # schema metadata marking records of loaded rows (`warned`), not quarantined ones

RECORD_SCHEMA = pa.schema([
    ("job", pa.large_string()), ("run_id", pa.large_string()), ("partition_id", pa.int32()),
    ("source_key", pa.large_string()), ("checks", pa.large_string()), ("columns", pa.large_string()),
    ("reason", pa.large_string()), ("row", pa.json_(pa.large_string())),
])


@dataclass(frozen=True)
class RejectedRow:
    """A row the target refused: the one-row batch as sent, and why."""

    row: pa.RecordBatch
    condition: str  # PostgreSQL's name for the error, e.g. check_violation
    column: str  # the column the message names, or "(row)"
    message: str


@dataclass(frozen=True)
class Origin:
    """Whose rows these are."""

    job: str
    run_id: str
    partition_id: int
    key: str | None  # the partition key column, which identifies a row in the source


def records(origin: Origin, original: pl.DataFrame, bad: pl.DataFrame) -> pa.Table:
    """Quarantine records: the source row as JSON, its key, and every failed check with its reason."""
    rows = original.with_row_index(ROW_INDEX).join(bad, on=ROW_INDEX, how="inner", maintain_order="right")
    key = origin.key
    source_key = (pl.col(key).cast(pl.String) if key and key in original.columns
                  else pl.lit(f"partition {origin.partition_id} row ") + pl.col(ROW_INDEX).cast(pl.String))
    data = rows.select(pl.exclude(ROW_INDEX, "checks", "columns", "reason")).with_columns(
        pl.col(pl.Binary).bin.encode("hex").map_batches(lambda s: "\\x" + s, return_dtype=pl.String),
        pl.col(pl.Decimal, pl.Float32, pl.Float64).cast(pl.String))
    n = rows.height
    return frames.arrow(pl.DataFrame({
        "job": [origin.job] * n, "run_id": [origin.run_id] * n,
        "partition_id": pl.Series([origin.partition_id] * n, dtype=pl.Int32),
        "source_key": rows.select(source_key.fill_null("NULL")).to_series(),
        "checks": rows["checks"], "columns": rows["columns"], "reason": rows["reason"],
        "row": data.select(pl.struct(pl.all()).struct.json_encode()).to_series(),
    }))


def refused_records(origin: Origin, refused: list[RejectedRow]) -> pa.Table:
    """Rows the target refused, as records with the database's condition and message."""
    original = frames.frame_by_storage(frames.one_batch(pa.Table.from_batches([r.row for r in refused])))
    bad = pl.DataFrame({ROW_INDEX: pl.Series(range(len(refused)), dtype=pl.UInt32),
                        "checks": [refused_check(r) for r in refused], "columns": [r.column for r in refused],
                        "reason": [f"{r.column}: {r.message}" for r in refused]})
    return records(origin, original, bad)


def refused_check(row: RejectedRow) -> str:
    return f"target {row.condition}"


def warned(records: pa.Table) -> pa.Table:
    """`records` of rows that are loaded all the same (a `warn` rule failed): `write` puts them in
    engine.warnings."""
    return records.replace_schema_metadata({b"engine.table": WARNINGS})


def write(conn: pg.Connection, records: list[pa.Table], staging_dir: Path, partition_id: int) -> int:
    """Insert the records in the caller's transaction (the quarantined rows' also staged as Parquet);
    returns the quarantined rows written."""
    def is_warning(r: pa.Table) -> bool:
        return (r.schema.metadata or {}).get(b"engine.table") == WARNINGS

    warnings = [r.cast(RECORD_SCHEMA) for r in records if is_warning(r)]
    if sum(w.num_rows for w in warnings):
        pg.ingest(conn, "warnings", "engine", pa.concat_tables(warnings), mode="append")
    rows = pa.concat_tables([r.cast(RECORD_SCHEMA) for r in records if not is_warning(r)])
    if rows.num_rows == 0:
        return 0
    stage(rows, staging_dir / "rejected" / f"part-{partition_id:05d}.parquet", f"partition {partition_id}")
    return pg.ingest(conn, "quarantine", "engine", rows, mode="append")


def stage(rows: pa.Table, path: Path, what: str) -> None:
    """Write staged rows as Parquet; a full or unwritable staging disk is a StagingError saying what to do
    (the partition's transaction then rolls back: nothing of it is committed, and a rerun redoes it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, path)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise StagingError(
            f"{what}: cannot write {path.name} to the staging directory {path.parent} ({exc.strerror or exc}); "
            "nothing of this partition was committed; free space there or point pipeline.staging_dir elsewhere; "
            f"{RESUME}") from None


def top_failures(conn: pg.Connection, job: str, run_id: str, limit: int = 10) -> list[dict[str, Any]]:
    rows = pg.fetch_all(conn, """SELECT checks, columns, COUNT(*) FROM engine.quarantine WHERE job = $1 AND run_id = $2
                                 GROUP BY 1, 2 ORDER BY 3 DESC LIMIT $3""", (job, run_id, limit))
    return [{"check": r[0], "column": r[1], "rows": int(r[2])} for r in rows]


def partition_failures(conn: pg.Connection, job: str, run_id: str, partition_id: int) -> list[tuple[str, str, int]]:
    """(checks, columns, rows) of one committed partition: its counts after a commit in doubt."""
    rows = pg.fetch_all(conn, """SELECT checks, columns, COUNT(*) FROM engine.quarantine
                                 WHERE job = $1 AND run_id = $2 AND partition_id = $3 GROUP BY 1, 2""",
                        (job, run_id, partition_id))
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]
