"""One partition, end to end: extract -> transform/validate -> load -> checkpoint, in one transaction.

Stages overlap through bounded queues (`engine.stages`): a reader thread, a transform/validate thread, and the
loader (the driver pulling batches as it COPYs). Running a task twice is safe: its rows, its quarantined rows
and its checkpoint commit together or not at all, and a retry first asks whether an earlier attempt committed.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine import checkpoint, failpoints, passthrough, pg, quarantine, rulerun, uniqueness
from engine.batches import origin, process
from engine.extract import read_partition
from engine.healing import Patience, with_retries
from engine.load import row_rejection, write_batches
from engine.model import PartitionResult, PartitionTask
from engine.quarantine import RejectedRow
from engine.refused import write_isolating
from engine.stages import Stage, drain, remember_error, timed
from engine.urls import parse_url
from engine.verify import ContentCheck


class _AlreadyCommitted(Exception):
    """Another attempt of this partition committed it first: this one rolls back and reports that one."""


class _RowsRefused(Exception):
    """The target refused some rows of the partition: redo it isolating them (see `write_isolating`)."""


def _stream(first: pa.RecordBatch | None, rest: Iterator[pa.RecordBatch], task: PartitionTask) -> pa.RecordBatchReader:
    # The stream's schema is the batches' own (string offsets vary by path).
    schema = first.schema if first is not None else task.target.arrow_schema()
    return pa.RecordBatchReader.from_batches(schema, itertools.chain([first] if first else [], rest))


def _attempt(task: PartitionTask, result: PartitionResult, isolate: bool = False) -> None:
    source, target = parse_url(task.source_url), parse_url(task.target_url)
    started = time.perf_counter()
    stop = threading.Event()
    raw: queue.Queue[Any] = queue.Queue(maxsize=task.queue_depth)
    ready: queue.Queue[Any] = queue.Queue(maxsize=task.queue_depth)
    rejected: list[pa.Table] = []
    content = ContentCheck(task.plan, task.partition, task.target) if task.verify_content else None
    waited = [0.0]
    reader = Stage("extract", timed(read_partition(task.plan, task.partition, source, task.batch_rows, task.snapshot,
                                                   task.reader),
                                    result.phases, "extract"), raw, stop)
    checked = process(task, drain(raw, reader, [0.0]), result, rejected)
    worker = Stage("transform", content.tap(checked) if content else checked, ready, stop)
    conn = pg.savepoint_connection(target) if isolate else pg.worker_connection(target)
    try:
        reader.start()
        worker.start()
        load_start = time.perf_counter()
        upstream_errors: list[BaseException] = []
        batches = remember_error(drain(ready, worker, waited), upstream_errors)
        stream = _stream(next(batches, None), batches, task)
        try:
            if isolate:
                refused: list[RejectedRow] = []
                loaded = write_isolating(conn, task.target, iter(stream), refused)
                _quarantine_refused(task, refused, result, rejected)
                if content is not None:
                    content.forget([r.row for r in refused])
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
        if rejected:
            quarantine.write(conn, rejected, Path(task.staging_dir), task.partition.id)
        result.rows_loaded = loaded
        rulerun.reconcile_partition(task, result)  # before the commit: a mismatch keeps the partition out
        result.seconds = time.perf_counter() - started
        _record(conn, task, result)
        if content is not None:
            content.check(conn)
        failpoints.hit("load.before_commit")
        if isolate:
            pg.execute(conn, "COMMIT")
        else:
            conn.commit()
        failpoints.hit("load.after_commit")
        result.phases["commit"] += time.perf_counter() - commit_start
    except BaseException:
        stop.set()
        pg.drop_connection(conn)  # after an error the session may be broken: never reuse it
        raise
    finally:
        stop.set()
        if isolate or not task.keep_connection:
            pg.drop_connection(conn)
        for thread in (reader, worker):
            thread.join(timeout=30)


def _record(conn: pg.Connection, task: PartitionTask, result: PartitionResult) -> None:
    """The checkpoint, in the partition's transaction, after making sure the run is still this process's."""
    checkpoint.claim_run(conn, task.run_id, task.owner, f"committing partition {task.partition.id}")
    if not task.checkpoints:
        return
    try:
        checkpoint.record_partition(conn, task.run_id, task.partition.id, task.partition.lo, task.partition.hi,
                                    result.rows_read, result.rows_loaded, result.rows_quarantined, result.seconds,
                                    {"bytes": result.bytes, "retries": result.attempts - 1, "worker": _worker(),
                                     "phases": {k: round(v, 4) for k, v in result.phases.items()},
                                     "route": result.route,
                                     "ended": time.time()})
    except Exception as exc:  # an earlier attempt (a task Dask reran, say) committed it: keep that one
        if getattr(exc, "sqlstate", None) == "23505":
            raise _AlreadyCommitted() from exc
        raise


def _worker() -> str:
    return f"{os.getpid()}/{threading.current_thread().name}"


def _quarantine_refused(task: PartitionTask, refused: list[RejectedRow], result: PartitionResult,
                        rejected: list[pa.Table]) -> None:
    """Rows the target refused join the partition's quarantine, with the database's reason."""
    if not refused:
        return
    rejected.append(quarantine.refused_records(origin(task), refused))
    result.rows_quarantined += len(refused)
    result.failures.update((quarantine.refused_check(r), r.column) for r in refused)


def _committed(task: PartitionTask, attempt: int) -> PartitionResult | None:
    """The partition's checkpoint, if an earlier attempt committed it: resolves a commit in doubt."""
    with pg.connection(parse_url(task.target_url)) as conn:
        done = checkpoint.done_partitions(conn, task.run_id, task.partition.id)
        if task.partition.id not in done:
            return None
        failures = quarantine.partition_failures(conn, task.job, task.run_id, task.partition.id)
    c = done[task.partition.id]
    return PartitionResult(task.partition.id, c.rows_read, c.rows_loaded, c.rows_quarantined, attempts=attempt,
                           failures=Counter({(checks, columns): rows for checks, columns, rows in failures}))


def _load_partition(task: PartitionTask, attempt: int) -> PartitionResult:
    """One attempt; if the target refuses rows, the partition is redone (on the Arrow path) loading what it
    accepts."""
    result = PartitionResult(task.partition.id, attempts=attempt)
    try:
        if task.reader == "copy":
            passthrough.copy_partition(task, result, _record)
        else:
            _attempt(task, result)
    except (_RowsRefused, passthrough.RowsRefused):
        result = PartitionResult(task.partition.id, attempts=attempt)
        _attempt(task, result, isolate=True)
    return result


def run_partition(task: PartitionTask, on_retry: Callable[[str], None] | None = None) -> PartitionResult:
    """Run one partition, retrying transient failures; each attempt starts the partition over."""
    started = time.time()
    result = _run_partition(task, on_retry)
    result.started, result.ended = started, time.time()
    result.worker = _worker()
    return result


def _run_partition(task: PartitionTask, on_retry: Callable[[str], None] | None) -> PartitionResult:
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

    patience = Patience(task.retries, task.reconnect_for, (parse_url(task.source_url), parse_url(task.target_url)))
    result = with_retries(attempt, f"partition {task.partition.id} {task.partition.label()}", patience, on_retry)
    result.snapshot = task.snapshot
    uniqueness.committed(task.run_id, task.partition.id)  # its keys count for the partitions after it
    return result
