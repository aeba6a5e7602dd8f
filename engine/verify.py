"""Verify stage: after loading, the target must account for every source row, partition by partition.

For each partition: rows counted in the source now = rows read = rows loaded + rows quarantined.
For replace mode the new table's row count must equal the rows loaded. Any difference fails the job.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from engine import pg
from engine.catalog import source_rows
from engine.config import JobConfig
from engine.errors import VerificationError
from engine.load import LoadTarget, conform, count_rows
from engine.plan import Partition, Plan
from engine.sql import quote_ident

if TYPE_CHECKING:
    from engine.checkpoint import Checkpoint
    from engine.report import RunReport


def verify_run(config: JobConfig, plan: Plan, conn: pg.Connection, target: LoadTarget,
               finished: dict[int, Checkpoint] | None, report: RunReport) -> str:
    if config.pipeline.verify == "none":
        return "skipped (pipeline.verify = none)"
    content = " and every row's content matched before commit" if config.pipeline.verify == "content" else ""
    problems: list[str] = []
    in_source = source_counts(config, plan)
    if finished is None:  # no checkpoints: check this invocation's totals
        source_total = sum(in_source.values())
        if source_total != report.rows_read:
            problems.append(f"the source has {source_total:,} rows, {report.rows_read:,} were read")
        loaded_total = report.rows_loaded
    else:
        for partition in plan.partitions:
            done = finished.get(partition.id)
            if done is None:
                problems.append(f"partition {partition.id} {partition.label()} has no checkpoint")
                continue
            if done.rows_loaded + done.rows_quarantined != done.rows_read:
                problems.append(f"partition {partition.id}: {done.rows_read:,} read but {done.rows_loaded:,} loaded "
                                f"+ {done.rows_quarantined:,} quarantined")
            if in_source[partition.id] != done.rows_read:
                problems.append(f"partition {partition.id} {partition.label()}: the source holds "
                                f"{in_source[partition.id]:,} rows, "
                                f"{done.rows_read:,} were read (was the source written to during the run?)")
        loaded_total = sum(c.rows_loaded for c in finished.values())
    if target.mode == "replace":
        in_target = count_rows(conn, target.write_table)
        if in_target != loaded_total:
            problems.append(f"the new table holds {in_target:,} rows, {loaded_total:,} were loaded")
    if problems:
        raise VerificationError("verification failed:\n  " + "\n  ".join(problems))
    return f"ok: {len(plan.partitions)} partition(s); source rows = loaded + quarantined" + (
        "; new table row count matches" if target.mode == "replace" else "") + content


def source_counts(config: JobConfig, plan: Plan, per_query: int = 100) -> dict[int, int]:
    """Rows per partition in the source now: one query per `per_query` partitions (a scalar subquery each,
    so every count still uses the key's index), not one connection and round trip per partition."""
    counts: dict[int, int] = {}
    dialect = config.source_url.dialect
    for start in range(0, len(plan.partitions), per_query):
        chunk = plan.partitions[start:start + per_query]
        columns = ", ".join(f"({plan.count_sql(p)}) AS {quote_ident(f'p{p.id}', dialect)}" for p in chunk)
        row = source_rows(config.source_url, f"SELECT {columns}")[0]
        counts.update((p.id, int(n)) for p, n in zip(chunk, row, strict=True))
    return counts


# Content verification (pipeline.verify = "content"): before a partition commits, its rows are read back from
# the target inside the same transaction and compared row by row with what was sent, by a hash of each row.
# A difference rolls the partition back and fails the job with the first differing keys.

def target_key(plan: Plan) -> str | None:
    """The target column holding the partition key unchanged, if any (content checks select by it)."""
    return next((c.name for c in plan.target_columns if plan.key and c.source == plan.key), None)


def _canonical(batch: pa.RecordBatch | pa.Table) -> pl.DataFrame:
    """Hashable form: JSON re-serialised with sorted keys (jsonb reorders and re-spaces), uuids as bytes."""
    columns = {}
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if isinstance(field.type, pa.JsonType):
            texts = column.storage.to_pylist()
            columns[field.name] = pl.Series([None if t is None else json.dumps(json.loads(t), sort_keys=True)
                                             for t in texts], dtype=pl.String)
        elif isinstance(field.type, pa.ExtensionType):
            columns[field.name] = pl.Series(column.storage)
        else:
            columns[field.name] = pl.Series(column)
    return pl.DataFrame(columns)


def row_fingerprints(batch: pa.RecordBatch, key: str) -> pl.DataFrame:
    frame = _canonical(batch)
    return pl.DataFrame({"key": frame[key].cast(pl.String), "hash": frame.hash_rows()})


def without_rows(sent: list[pl.DataFrame], refused: list[pl.DataFrame]) -> list[pl.DataFrame]:
    """The fingerprints sent, less one occurrence per refused row (the target kept the others)."""
    if not refused or not sent:
        return sent

    def numbered(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(pl.int_range(pl.len()).over("key", "hash").alias("n"))

    kept = numbered(pl.concat(sent)).join(numbered(pl.concat(refused)), on=["key", "hash", "n"], how="anti")
    return [kept.drop("n")]


def check_partition_content(conn: pg.Connection, target: LoadTarget, plan: Plan, partition: Partition,
                            sent: list[pl.DataFrame]) -> None:
    """Compare the partition's rows now in the target with the rows sent; raise on any difference."""
    key = target_key(plan)
    assert key is not None, "content verification needs the partition key in the target"
    text = {f.name for f in target.arrow_schema() if f.type == pa.large_string()}  # sent as text: compare as text
    names = ", ".join(f"{quote_ident(n)}::text AS {quote_ident(n)}" if n in text else quote_ident(n)
                      for n, _ in target.columns)
    sql = f"SELECT {names} FROM {target.write_table.quoted()}{partition.where(quote_ident(key))}"
    stored = conform(pg.fetch_arrow(conn, sql), target)
    here = row_fingerprints(stored, key)
    there = pl.concat(sent) if sent else here.clear()
    missing = there.join(here, on=["key", "hash"], how="anti")
    unexpected = here.join(there, on=["key", "hash"], how="anti")
    if missing.height or unexpected.height or here.height != there.height:
        keys = sorted(set(missing["key"].to_list()) | set(unexpected["key"].to_list()))[:5]
        raise VerificationError(
            f"content check failed for partition {partition.id} {partition.label()}: {here.height:,} rows in the "
            f"target vs {there.height:,} sent; first differing keys: {', '.join(map(str, keys)) or '(duplicates)'}; "
            "the partition was rolled back")
