"""Verify stage: after loading, the target must account for every source row, partition by partition.

For each partition: rows counted in the source now = rows read = rows loaded + rows quarantined.
For replace mode the new table's row count must equal the rows loaded. Any difference fails the job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import polars as pl
import pyarrow as pa

from engine import frames, pg
from engine.checkpoint import Checkpoint
from engine.config import JobConfig
from engine.errors import VerificationError
from engine.load import conform
from engine.model import LoadTarget, Partition, Plan
from engine.modes import mode_of
from engine.report import RunReport
from engine.source import query_rows
from engine.sql import quote_ident


def verify_run(config: JobConfig, plan: Plan, conn: pg.Connection, target: LoadTarget,
               finished: dict[int, Checkpoint] | None, report: RunReport) -> str:
    if config.pipeline.verify == "none":
        return "skipped (pipeline.verify = none)"
    content = " and every row's content matched before commit" if config.pipeline.verify == "content" else ""
    problems: list[str] = []
    source_changed = False
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
                source_changed = True
                problems.append(f"partition {partition.id} {partition.label()}: the source holds "
                                f"{in_source[partition.id]:,} rows, "
                                f"{done.rows_read:,} were read (was the source written to during the run?)")
        loaded_total = sum(c.rows_loaded for c in finished.values())
    mode = mode_of(target.mode)
    problems += mode.verify(conn, target, loaded_total)
    if problems:
        advice = ("\n  The source changed under the run (rows deleted, a table truncated, rows added): committed "
                  "partitions are kept as read; rerun with --fresh to copy the source as it is now"
                  if source_changed else "")
        raise VerificationError("verification failed:\n  " + "\n  ".join(problems) + advice)
    return f"ok: {len(plan.partitions)} partition(s); source rows = loaded + quarantined" + mode.verified() + content


# Counting a key range, InnoDB reads the range's rows again, from disk once the table outgrows the buffer pool;
# a server reads faster with several reads in flight.
_MYSQL_COUNTS_AT_ONCE = 4


def source_counts(config: JobConfig, plan: Plan, per_query: int = 100) -> dict[int, int]:
    """Rows per partition in the source now: one query per `per_query` partitions (a scalar subquery each,
    so every count still uses the key's index), not one connection and round trip per partition; a MySQL
    source is asked in several queries at once."""
    dialect = config.source_url.dialect
    parts = plan.partitions
    at_once = _MYSQL_COUNTS_AT_ONCE if dialect == "mysql" else 1
    size = max(1, min(per_query, -(-len(parts) // at_once)))
    chunks = [parts[start:start + size] for start in range(0, len(parts), size)]

    def count(chunk: tuple[Partition, ...]) -> dict[int, int]:
        columns = ", ".join(f"({plan.count_sql(p)}) AS {quote_ident(f'p{p.id}', dialect)}" for p in chunk)
        row = query_rows(config.source_url, f"SELECT {columns}")[0]
        return {p.id: int(n) for p, n in zip(chunk, row, strict=True)}

    with ThreadPoolExecutor(at_once, thread_name_prefix="count") as pool:
        return {k: v for counted in pool.map(count, chunks) for k, v in counted.items()}


# Content verification (pipeline.verify = "content"): before a partition commits, its rows are read back from
# the target inside the same transaction and compared row by row with what was sent, by a hash of each row.
# A difference rolls the partition back and fails the job with the first differing keys.

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
            columns[field.name] = frames.series(column.storage)
        else:
            columns[field.name] = frames.series(column)
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


class ContentCheck:
    """Fingerprints of the rows a partition sends, compared before commit with the rows the target then holds."""

    def __init__(self, plan: Plan, partition: Partition, target: LoadTarget) -> None:
        key = plan.target_key
        assert key is not None, "content verification needs the partition key in the target"
        self.key, self.partition, self.target = key, partition, target
        self.sent: list[pl.DataFrame] = []

    def tap(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Pass the batches on, keeping their rows' fingerprints."""
        for batch in batches:
            self.sent.append(row_fingerprints(batch, self.key))
            yield batch

    def forget(self, refused: list[pa.RecordBatch]) -> None:
        """The target refused these rows (they went to the quarantine): they are not expected there."""
        self.sent = without_rows(self.sent, [row_fingerprints(r, self.key) for r in refused])

    def check(self, conn: pg.Connection) -> None:
        """Compare the partition's rows now in the target with the rows sent; raise on any difference."""
        key, target, partition = self.key, self.target, self.partition
        text = {f.name for f in target.arrow_schema() if f.type == pa.large_string()}  # sent as text: compare as text
        names = ", ".join(f"{quote_ident(n)}::text AS {quote_ident(n)}" if n in text else quote_ident(n)
                          for n, _ in target.columns)
        sql = f"SELECT {names} FROM {target.write_table.quoted()}{partition.where(quote_ident(key))}"
        here = row_fingerprints(conform(pg.fetch_arrow(conn, sql), target), key)
        there = pl.concat(self.sent) if self.sent else here.clear()
        missing = there.join(here, on=["key", "hash"], how="anti")
        unexpected = here.join(there, on=["key", "hash"], how="anti")
        if missing.height or unexpected.height or here.height != there.height:
            keys = sorted(set(missing["key"].to_list()) | set(unexpected["key"].to_list()))[:5]
            raise VerificationError(
                f"content check failed for partition {partition.id} {partition.label()}: {here.height:,} rows in "
                f"the target vs {there.height:,} sent; first differing keys: {', '.join(map(str, keys)) or '(duplicates)'}; "
                "the partition was rolled back")
