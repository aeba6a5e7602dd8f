"""One partition, end to end: extract -> transform -> validate -> load -> checkpoint, in one transaction.

A `PartitionTask` is self-contained and picklable, so it runs the same in a thread or on a Dask worker.
Inside, stages overlap through bounded queues: a reader thread, a transform/validate thread, and the
loader (ADBC pulling batches as it COPYs), so memory is bounded by the queue depth times the batch size.
Running a task twice is safe: its rows and its checkpoint commit together or not at all.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine import checkpoint, failpoints, pg
from engine.config import TransformSection
from engine.errors import EngineError
from engine.extract import read_partition
from engine.load import LoadTarget, RejectedRow, conform, row_rejection, write_batches, write_isolating
from engine.plan import Partition, Plan
from engine.transform import Transform, build_transform
from engine.urls import DatabaseUrl, parse_url
from engine.validate import ROW_INDEX, Rules, Verdict, load_schema, split_rows
from engine.verify import check_partition_content, row_fingerprints, target_key, without_rows

_END = object()


@dataclass(frozen=True)
class PartitionTask:
    job: str
    run_id: str
    plan: Plan
    partition: Partition
    source_url: str
    target_url: str
    target: LoadTarget
    transform: TransformSection
    rules_dir: str
    schema_ref: str | None
    batch_rows: int
    queue_depth: int
    checkpoints: bool
    staging_dir: str
    stage_batches: bool
    retries: int
    snapshot: str | None = None
    verify_content: bool = False
    keep_connection: bool = True  # reuse the target session for the next partition (threads, not Dask workers)

    def __repr__(self) -> str:  # URLs carry secrets
        return f"PartitionTask(job={self.job!r}, run={self.run_id!r}, partition={self.partition.id})"


@dataclass
class PartitionResult:
    partition_id: int
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("extract", "transform", "validate", "load", "commit"), 0.0))
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    attempts: int = 1


_transforms: dict[tuple[str, str], Transform] = {}


def _compiled_transform(section: TransformSection, rules_dir: str) -> Transform:
    key = (section.model_dump_json(), rules_dir)
    if key not in _transforms:
        _transforms[key] = build_transform(section, Path(rules_dir))
    return _transforms[key]


@lru_cache(maxsize=16)
def _compiled_schema(rules_dir: str, ref: str) -> Rules:
    return load_schema(Path(rules_dir), ref)


def preload_rules(section: TransformSection, rules_dir: str, schema_ref: str | None) -> None:
    """Compile the job's transform and rules in the background (importing Pandera takes about a second),
    so that it overlaps planning instead of delaying the first partitions. Errors resurface in the tasks."""
    def compile_all() -> None:
        try:
            _compiled_transform(section, rules_dir)
            if schema_ref:
                _compiled_schema(rules_dir, schema_ref)
        except Exception:
            pass
    threading.Thread(target=compile_all, name="rules", daemon=True).start()


class _Stage(threading.Thread):
    """A pipeline stage thread: pulls from `source`, pushes into a bounded queue, stops on `stop`."""

    def __init__(self, name: str, source: Iterator[Any], out: queue.Queue[Any], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.source, self.out, self.stop = source, out, stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for item in self.source:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, re-raised there
            self.error = exc
        self._put(_END)

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def _drain(q: queue.Queue[Any], stage: _Stage, waited: list[float]) -> Iterator[Any]:
    while True:
        start = time.perf_counter()
        item = q.get()
        waited[0] += time.perf_counter() - start
        if item is _END:
            if stage.error is not None:
                raise stage.error
            return
        yield item


def _remember_error(source: Iterator[Any], box: list[BaseException]) -> Iterator[Any]:
    """The loader sees our errors wrapped in driver errors: keep the original to re-raise it."""
    try:
        yield from source
    except BaseException as exc:
        box.append(exc)
        raise


def _timed(source: Iterator[Any], result: PartitionResult, phase: str) -> Iterator[Any]:
    while True:
        start = time.perf_counter()
        try:
            item = next(source)
        except StopIteration:
            return
        finally:
            result.phases[phase] += time.perf_counter() - start
        yield item


def quarantine_rows(task: PartitionTask, original: pl.DataFrame, bad: pl.DataFrame) -> pa.Table:
    """Quarantine records: the source row as JSON, its key, and every failed check with its reason."""
    rows = original.with_row_index(ROW_INDEX).join(bad, on=ROW_INDEX, how="inner", maintain_order="right")
    key = task.plan.key
    source_key = (pl.col(key).cast(pl.String) if key and key in original.columns
                  else pl.lit(f"partition {task.partition.id} row ") + pl.col(ROW_INDEX).cast(pl.String))
    data = rows.select(pl.exclude(ROW_INDEX, "checks", "columns", "reason")).with_columns(
        pl.col(pl.Binary).bin.encode("hex").map_batches(lambda s: "\\x" + s, return_dtype=pl.String),
        pl.col(pl.Decimal, pl.Float32, pl.Float64).cast(pl.String))
    return pl.DataFrame({
        "job": [task.job] * rows.height, "run_id": [task.run_id] * rows.height,
        "partition_id": pl.Series([task.partition.id] * rows.height, dtype=pl.Int32),
        "source_key": rows.select(source_key.fill_null("NULL")).to_series(),
        "checks": rows["checks"], "columns": rows["columns"], "reason": rows["reason"],
        "row": data.select(pl.struct(pl.all()).struct.json_encode()).to_series(),
    }).to_arrow()


def _process(task: PartitionTask, batches: Iterator[pa.RecordBatch], result: PartitionResult,
             rejected: list[pa.Table], sent: list[pl.DataFrame]) -> Iterator[pa.RecordBatch]:
    transform = _compiled_transform(task.transform, task.rules_dir)
    rules = _compiled_schema(task.rules_dir, task.schema_ref) if task.schema_ref else None
    untransformed = task.transform == TransformSection()
    for number, batch in enumerate(batches):
        failpoints.hit("transform.batch")
        start = time.perf_counter()
        result.rows_read += batch.num_rows
        if untransformed:  # rows stay in Arrow; only checked columns visit Polars
            out = _checked(task, batch, rules, result, rejected)
            result.phases["validate"] += time.perf_counter() - start
        else:
            out = _transformed_and_checked(task, batch, transform, rules, result, rejected)
        yield from _stage(task, out, number, sent)


def _checked(task: PartitionTask, batch: pa.RecordBatch, rules: Rules | None, result: PartitionResult,
             rejected: list[pa.Table]) -> pa.RecordBatch:
    """Validation without a transform: strings are not copied into Polars and back, rows are filtered in Arrow."""
    if rules is None:
        return conform(batch, task.target)
    checked = [n for n in rules.columns if n in batch.schema.names]
    frame = pl.from_arrow(batch.select(checked) if len(checked) == len(rules.columns) else batch)
    assert isinstance(frame, pl.DataFrame)
    verdict = split_rows(frame, rules)
    if verdict.keep is None or verdict.bad_rows.height == 0:
        return conform(batch, task.target)
    _reject(task, pl.from_arrow(batch), verdict, result, rejected)  # type: ignore[arg-type]
    return conform(batch.filter(verdict.keep.to_arrow()), task.target)


def _transformed_and_checked(task: PartitionTask, batch: pa.RecordBatch, transform: Transform, rules: Rules | None,
                             result: PartitionResult, rejected: list[pa.Table]) -> pa.RecordBatch:
    start = time.perf_counter()
    original = pl.from_arrow(batch)
    assert isinstance(original, pl.DataFrame)
    frame = transform(original.lazy()).collect()
    if frame.height != original.height:
        raise EngineError(f"[transform] changed the row count of a batch ({original.height} -> {frame.height}); "
                          "transforms must keep every row: reject rows with validation rules instead")
    mid = time.perf_counter()
    verdict = split_rows(frame, rules)
    if verdict.bad_rows.height:
        _reject(task, original, verdict, result, rejected)
    out = conform(verdict.good.to_arrow(), task.target)
    result.phases["transform"] += mid - start
    result.phases["validate"] += time.perf_counter() - mid
    return out


def _reject(task: PartitionTask, original: pl.DataFrame, verdict: Verdict, result: PartitionResult,
            rejected: list[pa.Table]) -> None:
    rejected.append(quarantine_rows(task, original, verdict.bad_rows))
    result.rows_quarantined += verdict.bad_rows.height
    result.failures.update(zip(verdict.failures["check"], verdict.failures["column"], strict=True))


def _stage(task: PartitionTask, out: pa.RecordBatch, number: int, sent: list[pl.DataFrame]
           ) -> Iterator[pa.RecordBatch]:
    """Optionally keep a copy of the batch as Parquet (for DuckDB) and its row hashes, then pass it on."""
    if task.verify_content and out.num_rows:
        sent.append(row_fingerprints(out, target_key(task.plan) or ""))
    if task.stage_batches:
        folder = Path(task.staging_dir) / "batches"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_batches([out]), folder / f"part-{task.partition.id:05d}-{number:05d}.parquet")
    if out.num_rows:
        yield out


class _AlreadyCommitted(Exception):
    """Another attempt of this partition committed it first: this one rolls back and reports that one."""


class _RowsRefused(Exception):
    """The target refused some rows of the partition: redo it isolating them (see `write_isolating`)."""


def _attempt(task: PartitionTask, result: PartitionResult, isolate: bool = False) -> None:
    source, target = parse_url(task.source_url), parse_url(task.target_url)
    started = time.perf_counter()
    stop = threading.Event()
    raw: queue.Queue[Any] = queue.Queue(maxsize=task.queue_depth)
    ready: queue.Queue[Any] = queue.Queue(maxsize=task.queue_depth)
    rejected: list[pa.Table] = []
    sent: list[pl.DataFrame] = []
    waited = [0.0]
    reader = _Stage("extract", _timed(read_partition(task.plan, task.partition, source, task.batch_rows,
                                                     task.snapshot), result, "extract"), raw, stop)
    worker = _Stage("transform", _process(task, _drain(raw, reader, [0.0]), result, rejected, sent), ready, stop)
    conn = _isolating_connection(target) if isolate else _worker_connection(target)
    try:
        reader.start()
        worker.start()
        load_start = time.perf_counter()
        upstream_errors: list[BaseException] = []
        batches = _remember_error(_drain(ready, worker, waited), upstream_errors)
        first = next(batches, None)  # the stream's schema is the batches' own (string offsets vary by path)
        schema = first.schema if first is not None else task.target.arrow_schema()
        stream = pa.RecordBatchReader.from_batches(schema, itertools.chain([first] if first else [], batches))
        try:
            if isolate:
                refused: list[RejectedRow] = []
                loaded = write_isolating(conn, task.target, iter(stream), refused)
                _quarantine_refused(task, refused, result, rejected)
                if task.verify_content:
                    key = target_key(task.plan) or ""
                    sent[:] = without_rows(sent, [row_fingerprints(r.row, key) for r in refused])
            else:
                loaded = write_batches(conn, task.target, stream)
        except Exception as exc:
            if upstream_errors:
                raise upstream_errors[0] from None
            if not isolate and row_rejection(exc):
                raise _RowsRefused() from exc
            raise
        result.phases["load"] += time.perf_counter() - load_start - waited[0]
        commit_start = time.perf_counter()
        quarantined = pa.concat_tables(rejected) if rejected else None
        if quarantined is not None:
            checkpoint.write_quarantine(conn, quarantined)
            folder = Path(task.staging_dir) / "rejected"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(quarantined, folder / f"part-{task.partition.id:05d}.parquet")
        result.rows_loaded = loaded
        result.seconds = time.perf_counter() - started
        checkpoint.claim_run(conn, task.run_id, f"committing partition {task.partition.id}")
        if task.checkpoints:
            try:
                checkpoint.record_partition(conn, task.run_id, task.partition.id, task.partition.lo,
                                            task.partition.hi, result.rows_read, loaded, result.rows_quarantined,
                                            result.seconds)
            except Exception as exc:  # an earlier attempt (a task Dask reran, say) committed it: keep that one
                if getattr(exc, "sqlstate", None) == "23505":
                    raise _AlreadyCommitted() from exc
                raise
        if task.verify_content:
            check_partition_content(conn, task.target, task.plan, task.partition, sent)
        failpoints.hit("load.before_commit")
        if isolate:
            pg.execute(conn, "COMMIT")
        else:
            conn.commit()
        failpoints.hit("load.after_commit")
        result.phases["commit"] += time.perf_counter() - commit_start
    except BaseException:
        stop.set()
        _drop_worker_connection(conn)  # after an error the session may be broken: never reuse it
        raise
    finally:
        stop.set()
        if isolate or not task.keep_connection:
            _drop_worker_connection(conn)
        for thread in (reader, worker):
            thread.join(timeout=30)


_local = threading.local()
_opened: set[pg.Connection] = set()
_opened_lock = threading.Lock()


def _worker_connection(url: DatabaseUrl) -> pg.Connection:
    """One target connection per worker thread, reused across its partitions (saves a connect each)."""
    cached = getattr(_local, "conn", None)
    with _opened_lock:
        alive = cached in _opened
    if cached is not None and alive and getattr(_local, "url", None) == url.raw:
        return cached
    if cached is not None:
        _drop_worker_connection(cached)
    conn = pg.connect(url)
    # Partitions commit without waiting for the WAL flush: a server crash can only lose whole partitions,
    # rows and checkpoint together, which a resume redoes; the run's final commit waits for all of it.
    pg.execute(conn, "SET synchronous_commit = off")
    conn.commit()
    _local.conn, _local.url = conn, url.raw
    with _opened_lock:
        _opened.add(conn)
    return conn


def _isolating_connection(url: DatabaseUrl) -> pg.Connection:
    """A session for `write_isolating`: autocommit, with the partition's transaction opened by hand."""
    conn = pg.connect(url, autocommit=True)
    pg.execute(conn, "BEGIN")
    pg.execute(conn, "SET LOCAL synchronous_commit = off")
    return conn


def _quarantine_refused(task: PartitionTask, refused: list[RejectedRow], result: PartitionResult,
                        rejected: list[pa.Table]) -> None:
    """Rows the target refused join the partition's quarantine, with the database's reason."""
    if not refused:
        return
    rows = pa.Table.from_batches([r.row for r in refused]).combine_chunks()
    original = pl.from_arrow(pa.table(  # Polars takes extension columns (json, uuid) by their storage
        [c.storage if isinstance(c, pa.ExtensionArray) else c for c in rows.to_batches()[0].columns],
        names=rows.column_names))
    assert isinstance(original, pl.DataFrame)
    checks = [f"target {r.condition}" for r in refused]
    bad = pl.DataFrame({ROW_INDEX: pl.Series(range(len(refused)), dtype=pl.UInt32), "checks": checks,
                        "columns": [r.column for r in refused],
                        "reason": [f"{r.column}: {r.message}" for r in refused]})
    rejected.append(quarantine_rows(task, original, bad))
    result.rows_quarantined += len(refused)
    result.failures.update(zip(checks, (r.column for r in refused), strict=True))


def _drop_worker_connection(conn: pg.Connection) -> None:
    if getattr(_local, "conn", None) is conn:
        _local.conn = None
    with _opened_lock:
        _opened.discard(conn)
    try:
        conn.rollback()
        conn.close()
    except Exception:
        pass


def close_worker_connections() -> None:
    """Close every cached worker connection (a run calls this once its partitions are done)."""
    with _opened_lock:
        conns = list(_opened)
        _opened.clear()
    for conn in conns:
        try:
            conn.close()
        except Exception:
            pass


def _committed(task: PartitionTask, attempt: int) -> PartitionResult | None:
    """The partition's checkpoint, if an earlier attempt committed it: resolves a commit in doubt."""
    with pg.connection(parse_url(task.target_url)) as conn:
        done = checkpoint.done_partitions(conn, task.run_id, task.partition.id)
    if task.partition.id not in done:
        return None
    c = done[task.partition.id]
    return PartitionResult(task.partition.id, c.rows_read, c.rows_loaded, c.rows_quarantined, attempts=attempt)


def _load_partition(task: PartitionTask, attempt: int) -> PartitionResult:
    """One attempt; if the target refuses rows, the partition is redone loading what it accepts."""
    result = PartitionResult(task.partition.id, attempts=attempt)
    try:
        _attempt(task, result)
    except _RowsRefused:
        result = PartitionResult(task.partition.id, attempts=attempt)
        _attempt(task, result, isolate=True)
    return result


def run_partition(task: PartitionTask, on_retry: Callable[[str], None] | None = None) -> PartitionResult:
    """Run one partition, retrying transient failures; each attempt starts the partition over."""
    attempts = [0]

    def attempt() -> PartitionResult:
        attempts[0] += 1
        if attempts[0] > 1 and task.checkpoints:
            committed = _committed(task, attempts[0])
            if committed is not None:  # the last attempt's COMMIT went through; only its answer was lost
                return committed
        try:
            return _load_partition(task, attempts[0])
        except _AlreadyCommitted:
            committed = _committed(task, attempts[0])
            assert committed is not None
            return committed

    return pg.with_retries(attempt, f"partition {task.partition.id} {task.partition.label()}", task.retries, on_retry)
