"""Per batch, between extract and load: transform -> validate -> quarantine records -> conform to the target.

Rows that fail a check leave the stream here as quarantine records; the rest go on conformed to the target
table's types. The job's transform and rules are compiled once per process and reused by every partition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import polars as pl
import pyarrow as pa

from engine import failpoints, frames, quarantine, rulerun
from engine.config import TransformSection
from engine.errors import EngineError
from engine.load import conform, values_that_would_change
from engine.metrics import LIVE
from engine.model import PartitionResult, PartitionTask
from engine.quarantine import ROW_INDEX
from engine.transform import Transform, build_transform
from engine.validate import Rules, Verdict, load_schema, split_rows

_transforms: dict[tuple[str, str], Transform] = {}


def compiled_transform(section: TransformSection, rules_dir: str) -> Transform:
    key = (section.model_dump_json(), rules_dir)
    if key not in _transforms:
        _transforms[key] = build_transform(section, Path(rules_dir))
    return _transforms[key]


@lru_cache(maxsize=16)
def compiled_schema(rules_dir: str, ref: str) -> Rules:
    return load_schema(Path(rules_dir), ref)


def preload_rules(section: TransformSection, rules_dir: str, schema_ref: str | None) -> None:
    """Compile the job's transform and rules in the background (importing Pandera takes about a second),
    so that it overlaps planning instead of delaying the first partitions. Errors resurface in the tasks."""
    def compile_all() -> None:
        try:
            compiled_transform(section, rules_dir)
            if schema_ref:
                compiled_schema(rules_dir, schema_ref)
        except Exception:
            pass
    threading.Thread(target=compile_all, name="rules", daemon=True).start()


def origin(task: PartitionTask) -> quarantine.Origin:
    return quarantine.Origin(task.job, task.run_id, task.partition.id, task.plan.key)


def process(task: PartitionTask, batches: Iterator[pa.RecordBatch], result: PartitionResult,
            rejected: list[pa.Table]) -> Iterator[pa.RecordBatch]:
    """The batches to load; failing rows are appended to `rejected` as quarantine records."""
    transform = compiled_transform(task.transform, task.rules_dir)
    rules = compiled_schema(task.rules_dir, task.schema_ref) if task.schema_ref else None
    untransformed = task.transform == TransformSection()
    if task.rules:
        rulerun.start_partition(task, result)
    for number, batch in enumerate(batches):
        failpoints.hit("transform.batch")
        start = time.perf_counter()
        if not result.first_batch_at:
            result.first_batch_at = time.time()  # the run's start-up ends with its first batch
        result.rows_read += batch.num_rows
        result.bytes += batch.nbytes
        LIVE.add(batch.num_rows, batch.nbytes)
        if task.rules:
            out = _ruled(task, batch, None if untransformed else transform, rules, result, rejected)
        elif untransformed:  # rows stay in Arrow; only checked columns visit Polars
            out = _checked(task, batch, rules, result, rejected)
            result.phases["validate"] += time.perf_counter() - start
        else:
            out = _transformed_and_checked(task, batch, transform, rules, result, rejected)
        if task.stage_batches:
            _stage(task, out, number)
        if out.num_rows:
            yield out


def _checked(task: PartitionTask, batch: pa.RecordBatch, rules: Rules | None, result: PartitionResult,
             rejected: list[pa.Table]) -> pa.RecordBatch:
    """Validation without a transform: strings are not copied into Polars and back, rows are filtered in Arrow."""
    if rules is None:
        return _conformed(task, batch, result, rejected)
    checked = [n for n in rules.columns if n in batch.schema.names]
    verdict = split_rows(frames.frame(batch.select(checked) if len(checked) == len(rules.columns) else batch), rules)
    if verdict.keep is None or verdict.bad_rows.height == 0:
        return _conformed(task, batch, result, rejected)
    _reject(task, frames.frame(batch), verdict, result, rejected)
    return _conformed(task, batch.filter(frames.mask(verdict.keep)), result, rejected)


def _transformed_and_checked(task: PartitionTask, batch: pa.RecordBatch, transform: Transform, rules: Rules | None,
                             result: PartitionResult, rejected: list[pa.Table]) -> pa.RecordBatch:
    start = time.perf_counter()
    original = frames.frame(batch)
    frame = transform(original.lazy()).collect()
    if frame.height != original.height:
        raise EngineError(f"[transform] changed the row count of a batch ({original.height} -> {frame.height}); "
                          "transforms must keep every row: reject rows with validation rules instead")
    mid = time.perf_counter()
    verdict = split_rows(frame, rules)
    if verdict.bad_rows.height:
        _reject(task, original, verdict, result, rejected)
    out = _conformed(task, _one_batch(frames.arrow(verdict.good)), result, rejected)
    result.phases["transform"] += mid - start
    result.phases["validate"] += time.perf_counter() - mid
    return out


def _ruled(task: PartitionTask, batch: pa.RecordBatch, transform: Transform | None, rules: Rules | None,
           result: PartitionResult, rejected: list[pa.Table]) -> pa.RecordBatch:
    """A job with [[validate.rules]]: the schema's verdict and the rules' in one quarantine record per row."""
    start = time.perf_counter()
    if transform is None:  # only the columns the rules read visit Polars (strings are copied on the way)
        needed = rulerun.needed_columns(task) | set(rules.columns if rules else ())
        names = [n for n in batch.schema.names if n in needed]
        original = frames.frame(batch.select(names) if len(names) < batch.num_columns else batch)
    else:
        original = frames.frame(batch)
    frame = original if transform is None else transform(original.lazy()).collect()
    if frame.height != original.height:
        raise EngineError(f"[transform] changed the row count of a batch ({original.height} -> {frame.height}); "
                          "transforms must keep every row: reject rows with validation rules instead")
    mid = time.perf_counter()
    verdict = split_rows(frame, rules)
    bad = rulerun.merge_bad([verdict.bad_rows, rulerun.check_batch(task, frame, result)])
    if bad.height:
        whole = frames.frame(batch) if transform is None else original  # the whole source row, as recorded
        rejected.append(quarantine.records(origin(task), whole, bad))
        result.rows_quarantined += bad.height
        result.failures.update(zip(verdict.failures["check"], verdict.failures["column"], strict=True))
    keep = pl.int_range(0, frame.height, eager=True, dtype=pl.UInt32).is_in(bad[ROW_INDEX].implode()).not_()
    if transform is None:
        out = _conformed(task, batch.filter(frames.mask(keep)) if bad.height else batch, result, rejected)
    else:
        out = _conformed(task, _one_batch(frames.arrow(frame.filter(keep))), result, rejected)
    result.phases["transform"] += mid - start
    result.phases["validate"] += time.perf_counter() - mid
    return out


def _reject(task: PartitionTask, original: pl.DataFrame, verdict: Verdict, result: PartitionResult,
            rejected: list[pa.Table]) -> None:
    rejected.append(quarantine.records(origin(task), original, verdict.bad_rows))
    result.rows_quarantined += verdict.bad_rows.height
    result.failures.update(zip(verdict.failures["check"], verdict.failures["column"], strict=True))


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


def _conformed(task: PartitionTask, batch: pa.RecordBatch, result: PartitionResult,
               rejected: list[pa.Table]) -> pa.RecordBatch:
    """The batch in the target's types, less the rows holding a value the target column would store rounded
    (a narrower float or decimal column of an existing table): those are quarantined."""
    unfit = values_that_would_change(batch, task.target)
    if unfit:
        rows = sorted(unfit)
        check = "target value_does_not_fit"
        bad = pl.DataFrame({ROW_INDEX: pl.Series(rows, dtype=pl.UInt32), "checks": [check] * len(rows),
                            "columns": [unfit[i][0] for i in rows],
                            "reason": [f"{unfit[i][0]}: {unfit[i][1]}" for i in rows]})
        rejected.append(quarantine.records(origin(task), frames.frame_by_storage(batch), bad))
        result.rows_quarantined += len(rows)
        result.failures.update((check, unfit[i][0]) for i in rows)
        keep = pa.array([i not in unfit for i in range(batch.num_rows)])
        batch = batch.filter(keep)
    return conform(batch, task.target)


def _stage(task: PartitionTask, out: pa.RecordBatch, number: int) -> None:
    """Keep a copy of the batch as Parquet, for DuckDB (`pipeline.stage_batches`)."""
    path = Path(task.staging_dir) / "batches" / f"part-{task.partition.id:05d}-{number:05d}.parquet"
    quarantine.stage(pa.Table.from_batches([out]), path, f"partition {task.partition.id}")
