"""Per batch, between extract and load: transform -> validate -> quarantine records -> conform to the target.

Rows that fail a check leave the stream here as quarantine records; the rest go on conformed to the target
table's types. The job's transform and rules are compiled once per process and reused by every partition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
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
from engine.typemap import UNFIT_TEXT, ColumnSpec, unfit_advice
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
    needed: set[str] = set()
    unfit = [c for c in task.plan.columns if c.tagged == "unfit"]  # read beside their text (MySQL zero dates)
    if task.rules:
        rulerun.start_partition(task, result)
        needed = rulerun.needed_columns(task) | set(rules.columns if rules else ())
    for number, batch in enumerate(batches):
        failpoints.hit("transform.batch")
        start = time.perf_counter()
        if not result.first_batch_at:
            result.first_batch_at = time.time()  # the run's start-up ends with its first batch
        result.rows_read += batch.num_rows
        nbytes = batch.nbytes  # walks every buffer: once
        result.bytes += nbytes
        LIVE.add(batch.num_rows, nbytes)
        if unfit:
            batch = _without_unfit(task, batch, unfit, None if untransformed else transform, result, rejected)
        if task.rules:
            out = _ruled(task, batch, None if untransformed else transform, rules, needed, result, rejected)
        elif untransformed:  # rows stay in Arrow; only checked columns visit Polars
            out = _checked(task, batch, rules, result, rejected)
            result.phases["validate"] += time.perf_counter() - start
        else:
            out = _transformed_and_checked(task, batch, transform, rules, result, rejected)
        if task.stage_batches:
            _stage(task, out, number)
        if out.num_rows:
            yield out


def _without_unfit(task: PartitionTask, batch: pa.RecordBatch, unfit: list[ColumnSpec], transform: Transform | None,
                   result: PartitionResult, rejected: list[pa.Table]) -> pa.RecordBatch:
    """The batch less the hidden columns that carry the `unfit` columns' values as text (`typemap.UNFIT_TEXT`,
    MySQL zero dates): the rows holding one are quarantined, the column, its value as the source has it and
    what to declare named."""
    hidden = [c.name + UNFIT_TEXT for c in unfit]
    clean = batch.drop_columns(hidden)
    if all(batch.column(n).null_count == batch.num_rows for n in hidden):  # Arrow keeps the count: no pass
        return clean
    start = time.perf_counter()
    texts = frames.frame(batch.select(hidden))
    parts = []
    for spec, name in zip(unfit, hidden, strict=True):
        reason = (f"{spec.name}: " + pl.col(name) + f" has a zero year, month or day, which PostgreSQL "
                  f"{spec.pg_type} cannot hold; {unfit_advice(task.plan.dialect, spec)}")
        parts.append(texts.with_row_index(ROW_INDEX).filter(pl.col(name).is_not_null()).select(
            ROW_INDEX, checks=pl.lit("source zero_date"), columns=pl.lit(spec.name), reason=reason))
    bad = rulerun.merge_bad(parts)
    as_read = frames.frame(batch).with_columns(  # the recorded row holds the value as the source has it
        pl.coalesce(pl.col(n), pl.col(c.name).cast(pl.String)).alias(c.name)
        for c, n in zip(unfit, hidden, strict=True)).drop(hidden)
    _quarantine(task, as_read, bad, zip(bad["checks"], bad["columns"], strict=True), result, rejected)
    keep = pl.int_range(0, batch.num_rows, eager=True, dtype=pl.UInt32).is_in(bad[ROW_INDEX].implode()).not_()
    if task.rules:  # reconcile and completeness count every row read: these too (their dates as NULL)
        removed = frames.frame(clean.filter(frames.mask(keep.not_())))
        rulerun.gather(task, removed if transform is None else _transformed(removed, transform), result)
    result.phases["validate"] += time.perf_counter() - start
    return clean.filter(frames.mask(keep))


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
    frame = _transformed(original, transform)
    mid = time.perf_counter()
    verdict = split_rows(frame, rules)
    if verdict.bad_rows.height:
        _reject(task, original, verdict, result, rejected)
    out = _conformed(task, frames.one_batch(frames.arrow(verdict.good)), result, rejected)
    result.phases["transform"] += mid - start
    result.phases["validate"] += time.perf_counter() - mid
    return out


def _ruled(task: PartitionTask, batch: pa.RecordBatch, transform: Transform | None, rules: Rules | None,
           needed: set[str], result: PartitionResult, rejected: list[pa.Table]) -> pa.RecordBatch:
    """A job with [[validate.rules]]: the schema's verdict and the rules' in one quarantine record per row.
    `needed`: the columns the rules and the schema read (only those visit Polars when nothing is transformed)."""
    start = time.perf_counter()
    if transform is None:  # strings are copied on the way into Polars: only the columns read
        names = [n for n in batch.schema.names if n in needed]
        original = frames.frame(batch.select(names) if len(names) < batch.num_columns else batch)
    else:
        original = frames.frame(batch)
    frame = original if transform is None else _transformed(original, transform)
    mid = time.perf_counter()
    verdict = split_rows(frame, rules)
    refused, warned = rulerun.check_batch(task, frame, result)
    bad = rulerun.merge_bad([verdict.bad_rows, refused])
    if warned.height and bad.height:  # a quarantined row's record holds its warnings too
        also = warned.get_column(ROW_INDEX).is_in(bad.get_column(ROW_INDEX).implode())
        bad, warned = rulerun.merge_bad([bad, warned.filter(also)]), warned.filter(~also)
    whole = frames.frame(batch) if transform is None and (bad.height or warned.height) else original
    if warned.height:  # rows that are loaded all the same, recorded with the rules they failed
        rejected.append(quarantine.warned(quarantine.records(origin(task), whole, warned)))
    if bad.height:  # the whole source row, as recorded
        _quarantine(task, whole, bad, zip(verdict.failures["check"], verdict.failures["column"], strict=True),
                    result, rejected)
        keep = pl.int_range(0, frame.height, eager=True, dtype=pl.UInt32).is_in(bad[ROW_INDEX].implode()).not_()
        out = _conformed(task, batch.filter(frames.mask(keep)) if transform is None
                         else frames.one_batch(frames.arrow(frame.filter(keep))), result, rejected)
    else:
        out = _conformed(task, batch if transform is None else frames.one_batch(frames.arrow(frame)), result, rejected)
    result.phases["transform"] += mid - start
    result.phases["validate"] += time.perf_counter() - mid
    return out


def _transformed(original: pl.DataFrame, transform: Transform) -> pl.DataFrame:
    frame = transform(original.lazy()).collect()
    if frame.height != original.height:
        raise EngineError(f"[transform] changed the row count of a batch ({original.height} -> {frame.height}); "
                          "transforms must keep every row: reject rows with validation rules instead")
    return frame


def _reject(task: PartitionTask, original: pl.DataFrame, verdict: Verdict, result: PartitionResult,
            rejected: list[pa.Table]) -> None:
    _quarantine(task, original, verdict.bad_rows, zip(verdict.failures["check"], verdict.failures["column"],
                                                      strict=True), result, rejected)


def _quarantine(task: PartitionTask, original: pl.DataFrame, bad: pl.DataFrame, failures: Iterable[tuple[str, str]],
                result: PartitionResult, rejected: list[pa.Table]) -> None:
    """Rows of `original` named in `bad` leave the stream as quarantine records, counted in the result."""
    rejected.append(quarantine.records(origin(task), original, bad))
    result.rows_quarantined += bad.height
    result.failures.update(failures)


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
        _quarantine(task, frames.frame_by_storage(batch), bad, ((check, unfit[i][0]) for i in rows), result, rejected)
        keep = pa.array([i not in unfit for i in range(batch.num_rows)])
        batch = batch.filter(keep)
    return conform(batch, task.target)


def _stage(task: PartitionTask, out: pa.RecordBatch, number: int) -> None:
    """Keep a copy of the batch as Parquet, for DuckDB (`pipeline.stage_batches`)."""
    path = Path(task.staging_dir) / "batches" / f"part-{task.partition.id:05d}-{number:05d}.parquet"
    quarantine.stage(pa.Table.from_batches([out]), path, f"partition {task.partition.id}")
