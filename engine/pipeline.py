"""A run of a job: lock, plan (or resume the frozen plan), run partitions in parallel, verify, report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import resource
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from engine import checkpoint, failpoints, gc, passthrough, pg, quarantine, rulejob, tracing
from engine.batches import preload_rules
from engine.catalog import describe_source
from engine.cluster import dask_executor, explain_task_failure
from engine.config import JobConfig
from engine.errors import (
    RESUME,
    ConfigError,
    EngineError,
    ErrorBudgetExceeded,
    JobLockedError,
    SnapshotLost,
    SourceError,
    TransientError,
    with_advice,
)
from engine.healing import (
    Patience,
    SnapshotKeeper,
    at_start,
    outlasted_patience,
    wait_for_servers,
    with_retries,
)
from engine.load import prepare_target
from engine.metrics import Observer, PartitionMetrics, RunMetrics, process_age
from engine.model import LoadTarget, PartitionResult, PartitionTask, Plan
from engine.modes import mode_of
from engine.partitions import BlockState, block_facts
from engine.plan import make_plan
from engine.progress import event_line
from engine.report import RunReport
from engine.rulestats import RuleStats, merge_all
from engine.source import Reader, source_snapshot
from engine.task import run_partition
from engine.urls import redact
from engine.verify import verify_run

Progress = Callable[[str], None]


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and of waited-for children), as the kernel tracked it: free to
    read, unlike sampling /proc, which cost measurable CPU on long runs."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # Linux reports KiB


def fingerprint(config: JobConfig) -> str:
    """What must not change between a failed run and its resume."""
    parts = {"source": str(config.source_url), "table": config.source.table, "query": config.source.query,
             "partition_on": config.source.partition_on, "target": str(config.target_url),
             "target_table": config.target.table, "mode": config.target.mode, "key": config.target.key}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def check_source_unchanged(config: JobConfig, plan: Plan, run_id: str) -> None:
    """A resume reads with the frozen plan's columns: refuse if the source's columns changed meanwhile."""
    now = {c.name: c.source_type for c in describe_source(config.source_url, config.source_table,
                                                          config.source.query).columns}
    was = {c.name: c.source_type for c in plan.columns}
    changes = [f"column {n!r} is gone" for n in was if n not in now]
    changes += [f"column {n!r} changed type from {was[n]} to {now[n]}" for n in was if n in now and now[n] != was[n]]
    changes += [f"column {n!r} is new" for n in now if n not in was]
    if plan.source_state is not None and config.source_table is not None:  # block ranges: rows must not have moved
        state = block_facts(config.source_url, config.source_table.quoted()).state
        moved = state.changes_since(BlockState(**plan.source_state))
        if moved:
            raise SourceError(
                f"the source table changed since run {run_id} planned its block ranges ({'; '.join(moved)}): rows "
                "may have moved between blocks, so resuming could lose or repeat them. Nothing more was loaded. "
                "Rerun with --fresh to start over (rows that run already committed stay in the target)")
    if changes:
        raise SourceError(f"the source changed since run {run_id} started: {'; '.join(changes)}. Nothing more was "
                          "loaded. Rerun with --fresh to start over with the new columns")


def budget_error(read: int, quarantined: int, budget: float, max_errors: int | None = None
                 ) -> ErrorBudgetExceeded | None:
    if max_errors is not None and quarantined > max_errors:
        return ErrorBudgetExceeded(f"{quarantined:,} rows failed validation (> validate.max_errors {max_errors:,}); "
                                   "finished partitions are kept; fix the rules and rerun with --fresh, or raise the "
                                   "budget and rerun")
    if not read or quarantined / read <= budget:
        return None
    return ErrorBudgetExceeded(
        f"{quarantined:,} of {read:,} rows failed validation ({quarantined / read:.2%} > max_error_rate {budget:.2%}); "
        "finished partitions are kept; fix the rules and rerun with --fresh, or raise the budget and rerun")


def _say_line(progress: Progress, event: dict[str, Any]) -> None:
    text = event_line(event)
    if text is not None:
        progress(text)


def _new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class Run:
    def __init__(self, config: JobConfig, fresh: bool, progress: Progress, observer: Observer | None = None,
                 slots: threading.Semaphore | None = None, within_database: bool = False) -> None:
        self.config, self.fresh = config, fresh
        self.resuming = ""  # the run an earlier attempt of this command opened: resumed, or the run stops
        self.slots = slots  # partitions in flight, shared with the other tables' runs of a whole database
        self.within_database = within_database  # a table's run: the database's made the engine's tables and types
        self.metrics = RunMetrics(config.job.name, str(config.target_table))
        self.observer = observer
        if observer is None:
            self.metrics.listeners.append(lambda e: _say_line(progress, e))
        else:
            self.metrics.listeners.append(observer.event)
        spans = tracing.listener()
        if spans is not None:
            self.metrics.listeners.append(spans)
        self.target_url = config.target_url
        self.prior = (0, 0)  # rows read and quarantined by partitions finished before this invocation
        self.owner = uuid.uuid4().hex  # this invocation, as the run's owner
        self.lock_conn: pg.Connection  # the session holding the job's advisory lock
        self.lent: list[pg.Connection] = []  # sessions borrowed from the idle ones (`_session`)
        self.rule_stats: dict[str, RuleStats] = {}  # [[validate.rules]]: merged over this invocation's partitions
        pipeline = config.pipeline
        self.on_target = Patience(pipeline.retries, pipeline.reconnect_for, (config.target_url,))
        self.snapshots = SnapshotKeeper(None, False, self.on_target, "", None)
        self.recoveries: list[str] = []  # what went wrong and was healed, for the report
        self.marks: dict[str, float] = {}  # epoch seconds of the start-up's steps (see `_startup`)
        self.reader: Reader = config.source.reader
        self.step = "connecting to the target"  # what the run is doing: an error that ends it names it

    def _keep_recovery(self, message: str) -> None:
        if len(self.recoveries) < 100:
            self.recoveries.append(message)

    def heard(self, message: str) -> None:
        """A retry or a wait: said as it happens, and kept for the report."""
        self._keep_recovery(message)
        self.say(message)

    def open_run(self, conn: pg.Connection, report: RunReport) -> tuple[str, Plan, bool]:
        """Resume the job's unfinished run (same frozen plan), or plan a new one."""
        job = self.config.job.name
        previous = checkpoint.latest_run(conn, job)
        unfinished = previous is not None and previous.status in ("running", "failed")
        if self.resuming and (not unfinished or previous is None or previous.run_id != self.resuming):
            raise JobLockedError(f"run {self.resuming} was taken over by another process while this one waited for "
                                 "the servers; that process runs the job now")
        if unfinished and previous is not None and not self.fresh and self.config.pipeline.checkpoints:
            if previous.fingerprint != fingerprint(self.config):
                raise ConfigError(str(self.config.path), [
                    f"the job's source/target/mode changed since its unfinished run {previous.run_id} started; "
                    "rerun with --fresh to start over (rows that run already committed stay in the target)"])
            plan = Plan.from_json(previous.plan)
            check_source_unchanged(self.config, plan, previous.run_id)
            checkpoint.take_over(conn, previous.run_id, self.owner)
            self.say(f"resuming run {previous.run_id} with its frozen plan")
            return previous.run_id, plan, True
        if unfinished and previous is not None:
            checkpoint.set_status(conn, previous.run_id, "abandoned")
            note = mode_of(self.config.target.mode).abandoned_note(previous.run_id)
            if note:
                report.notes.append(note)
        self.say("planning partitions…")
        plan = make_plan(self.config, preview=False)
        run_id = _new_run_id()
        checkpoint.start_run(conn, run_id, job, fingerprint(self.config), plan.to_json(), self.owner)
        return run_id, plan, False

    def say(self, message: str) -> None:
        self.metrics.emit("message", message=redact(message))

    def retried(self, message: str) -> None:
        """A partition's retry: counted in the live display, and kept for the report."""
        self._keep_recovery(message)
        self.metrics.partition_retried(redact(message))

    def task(self, run_id: str, plan: Plan, target: LoadTarget, partition_index: int, staging: Path) -> PartitionTask:
        c = self.config
        return PartitionTask(
            job=c.job.name, run_id=run_id, plan=plan, partition=plan.partitions[partition_index],
            source_url=c.source_url.absolute, target_url=c.target_url.raw, target=target, transform=c.transform,
            rules_dir=str(c.rules_dir), schema_ref=c.validate_.schema_ref, batch_rows=c.pipeline.batch_rows,
            queue_depth=c.pipeline.queue_depth, checkpoints=c.pipeline.checkpoints, staging_dir=str(staging),
            stage_batches=c.pipeline.stage_batches, retries=c.pipeline.retries, reconnect_for=c.pipeline.reconnect_for,
            verify_content=c.pipeline.verify == "content", owner=self.owner, reader=self.reader,
            rules=tuple(c.validate_.rules))

    def _reader(self, plan: Plan, report: RunReport) -> Reader:
        """`source.reader`, unless it is "copy" and the rows are needed on the way (then ConnectorX, noted)."""
        reader = self.config.source.reader
        if reader != "copy":
            return reader
        why = passthrough.refusal(self.config)
        if why is None and any(c.source is None for c in plan.target_columns):
            why = "a column is made on the way"
        if why is None:
            return reader
        report.notes.append(f'reader = "copy" does not apply ({why}): rows read with ConnectorX')
        return "connectorx"

    def execute(self, tasks: list[PartitionTask], report: RunReport, failures: Counter[tuple[str, str]]) -> None:
        """Run partitions `workers` at a time; stop scheduling on the first failure or a blown error budget."""
        pipeline = self.config.pipeline
        if pipeline.executor == "dask":
            remote = [dataclasses.replace(t, keep_connection=False) for t in tasks]
            with dask_executor(pipeline.dask_scheduler, pipeline.workers) as pool:
                self._schedule(pool, remote, report, failures, on_retry=None)  # workers print their own retries
            return
        try:
            with ThreadPoolExecutor(pipeline.workers, thread_name_prefix="partition") as pool:
                self._schedule(pool, tasks, report, failures, on_retry=self.retried)
        finally:
            pg.close_worker_connections()
            passthrough.close_sessions()

    def _schedule(self, pool: Executor, tasks: list[PartitionTask], report: RunReport,
                  failures: Counter[tuple[str, str]], on_retry: Progress | None) -> None:
        budget = self.config.validate_.max_error_rate
        pending: dict[Future[PartitionResult], PartitionTask] = {}
        queue_ = list(reversed(tasks))
        error: BaseException | None = None
        while queue_ or pending:
            while queue_ and len(pending) < self.config.pipeline.workers and error is None:
                if self.slots is not None and not self.slots.acquire(blocking=not pending):
                    break  # the partitions of other tables' runs hold the budget: wait for one of ours instead
                task = dataclasses.replace(queue_.pop(), snapshot=self.snapshots.current)
                self.metrics.partition_started(task.partition.id)
                pending[pool.submit(run_partition, task, on_retry)] = task
            if not pending:
                break
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                task = pending.pop(future)
                if self.slots is not None:
                    self.slots.release()
                try:
                    result = future.result()
                except SnapshotLost as exc:
                    try:  # retake it (once for all the partitions that lost it), then redo this one
                        self.snapshots.lost(task.snapshot, str(exc), f"reading partition {task.partition.id}")
                        queue_.append(task)
                    except BaseException as fatal:
                        error = error or fatal
                    continue
                except BaseException as exc:
                    failure = explain_task_failure(exc)
                    error = error or failure
                    self.metrics.partition_failed(task.partition.id, redact(str(failure)))
                    continue
                self._account(result, report, failures, len(tasks))
                self.snapshots.read(result.partition_id, result.snapshot)
                try:
                    with_retries(self._hold_lock, "holding the job's lock", self.on_target, self.heard)
                except BaseException as exc:
                    error = error or exc
                over = budget_error(report.rows_read + self.prior[0], report.rows_quarantined + self.prior[1], budget,
                                    self.config.validate_.max_errors)
                over = over or rulejob.over_budget(self.config.validate_.rules, self.rule_stats)
                if over is not None and error is None:
                    report.add_failures(failures)
                    error = over
        if error is not None:
            raise error

    def _account(self, result: PartitionResult, report: RunReport, failures: Counter[tuple[str, str]],
                 total: int) -> None:
        report.partitions_run += 1
        report.rows_read += result.rows_read
        report.rows_loaded += result.rows_loaded
        report.rows_quarantined += result.rows_quarantined
        for phase, seconds in result.phases.items():
            report.phase_seconds[phase] = round(report.phase_seconds.get(phase, 0.0) + seconds, 3)
        failures.update(result.failures)
        if result.first_batch_at:
            self.marks["first_row"] = min(self.marks.get("first_row", result.first_batch_at), result.first_batch_at)
        self.metrics.partition_done(PartitionMetrics(
            result.partition_id, result.worker, result.started, result.ended or result.started + result.seconds,
            result.rows_read, result.rows_loaded, result.rows_quarantined, result.bytes, result.attempts - 1,
            {k: round(v, 4) for k, v in result.phases.items()}), result.failures)
        merge_all(self.rule_stats, result.rule_stats)

    def run(self) -> RunReport:
        with ExitStack() as sessions:
            return self._run(sessions)

    def _session(self, sessions: ExitStack, autocommit: bool = False) -> pg.Connection:
        """A new session, or for a table's run within a database run a reset idle one, given back when the run
        ends well (its DISCARD ALL lets go of the job lock) and closed when it fails: a database of hundreds of
        tables would otherwise open two sessions a table."""
        if not self.within_database:
            return pg.connect(self.target_url, autocommit=autocommit)
        conn = sessions.enter_context(pg.connection(self.target_url, autocommit=autocommit))
        self.lent.append(conn)
        return conn

    def _run(self, sessions: ExitStack) -> RunReport:
        config = self.config
        started = time.perf_counter()
        age = process_age()
        self.marks["run"] = time.time()
        self.marks["process"] = self.marks["run"] - (age or 0.0)
        report = RunReport(config.job.name, "", mode=config.target.mode, source=str(config.source_url),
                           target=f"{config.target_url} {config.target_table}")
        report.description = config.job.description
        preload_rules(config.transform, str(config.rules_dir), config.validate_.schema_ref)
        if not self.within_database:
            pg.forget_databases()  # this run sees the types created since the last one
        self.lock_conn = with_retries(lambda: self._session(sessions, autocommit=True), "connecting to the target",
                                      self.on_target, self.heard)
        conn = with_retries(lambda: self._session(sessions), "connecting to the target", self.on_target, self.heard)
        run_id = ""
        metrics = self.metrics
        metrics.start_sampler()
        if self.observer is not None:
            self.observer.start(metrics)
        try:
            self.step = "creating the engine's tables in the target"
            if not self.within_database:
                checkpoint.ensure_schema(conn)
            self.step = "taking the job's lock"
            checkpoint.try_lock_job(self.lock_conn, config.job.name)
            self.step = "opening the run (planning, or resuming its plan)"
            table = config.source_table
            with source_snapshot(config.source_url, table.quoted() if table else None) as snapshot:
                self.marks["plan"] = time.time()
                with metrics.phase("plan"):
                    run_id, plan, resumed = self.open_run(conn, report)
                report.run_id, report.resumed = run_id, resumed
                failpoints.hit("run.opened")
                report.partitions_total = len(plan.partitions)
                metrics.run_id, metrics.partitions_total = run_id, len(plan.partitions)
                self.snapshots = SnapshotKeeper(
                    snapshot, config.source.snapshot == "strict",
                    Patience(config.pipeline.retries, config.pipeline.reconnect_for, (config.source_url,)),
                    "the run resumed" if resumed else "the run started", self.heard)
                staging = Path(config.pipeline.staging_dir)
                staging = (staging if staging.is_absolute() else Path.cwd() / staging) / config.job.name / run_id
                report.staging_dir = str(staging)
                self._run_partitions(conn, plan, run_id, resumed, staging, report)
                failpoints.hit("run.after_finish")
            report.status = "succeeded"
            self._startup(report)
            with metrics.phase("cleanup"):
                self._cleanup(report)
            self._finish_metrics(report, run_id)
            return report
        except BaseException as exc:
            advised = with_advice(pg.translate(exc, self.step) if pg.is_driver_error(exc) else exc)
            if run_id:
                report.status = "failed"
                report.error = redact(str(advised) if isinstance(advised, EngineError)
                                      else f"{type(exc).__name__}: {exc}")
                self._describe_healing(report)
                self._rules_report(report)
                report.wall_seconds = round(time.perf_counter() - started, 3)
                self._finish_metrics(report, None)
                if not isinstance(exc, JobLockedError):  # else the run is another process's now: leave it be
                    self._record_failure(run_id, report)
                setattr(advised, "report", report)  # noqa: B010 - the CLI prints the report of a failed run
            if advised is exc:
                raise
            raise advised from None
        finally:
            metrics.stop_sampler()
            if run_id:
                rulejob.forget_run(run_id)
            report.wall_seconds = round(time.perf_counter() - started, 3)
            report.peak_rss_mb = round(peak_rss_mb(), 1)
            if self.observer is not None:
                self.observer.stop()
            for c in (conn, self.lock_conn):
                if any(c is lent for lent in self.lent):
                    continue  # `sessions` gives it back, or closes it
                try:
                    c.close()
                except Exception:
                    pass

    def _describe_healing(self, report: RunReport) -> None:
        """The report's account of snapshots and recoveries (before it is stored with the run's status)."""
        report.snapshots = self.snapshots.history
        report.recoveries = self.recoveries
        report.notes = [n for n in report.notes if not n.startswith("the source was read as of")]
        if len(self.snapshots.history) == 1:
            report.notes.append("the source was read as of one snapshot" + (
                " (partitions finished before the resume were read as of an earlier one)" if report.resumed else ""))
        elif self.snapshots.history:
            report.notes.append(f"the source was read as of {len(self.snapshots.history)} snapshots: the first was "
                                "lost mid-run and taken again (see snapshots)")

    def _run_partitions(self, conn: pg.Connection, plan: Plan, run_id: str, resumed: bool, staging: Path,
                        report: RunReport) -> None:
        config = self.config
        if config.pipeline.verify == "content" and plan.target_key is None:
            raise ConfigError(str(config.path), [
                "`pipeline.verify` = \"content\" selects each partition's rows in the target by its key, but the "
                "partition key is not a target column (no integer key, or renamed/dropped by [transform]); "
                "use verify = \"count\""])
        rulejob.judge_schema(config.validate_.rules, [c.name for c in plan.target_columns], report.notes)
        self.step = "preparing the target table"
        self.marks["prepare"] = time.time()
        with self.metrics.phase("prepare"):
            target = prepare_target(conn, plan, config.target_table, config.target.mode, tuple(config.target.key),
                                    config.target.create, resumed)
            done = checkpoint.done_partitions(conn, run_id) if config.pipeline.checkpoints else {}
            conn.commit()
        report.partitions_skipped = len(done)
        self.prior = (sum(c.rows_read for c in done.values()), sum(c.rows_quarantined for c in done.values()))
        metrics = self.metrics
        metrics.prior_rows, metrics.partitions_done = self.prior[0], len(done)
        metrics.planned_rows = max(plan.source_rows - self.prior[0], 0)
        metrics.emit("run_started", resumed=resumed, started=metrics.started, counts={
            "partitions_total": len(plan.partitions), "partitions_done": len(done), "planned_rows": plan.source_rows})
        if done and config.validate_.rules:
            self.rule_stats = rulejob.resumed_stats(conn, config.job.name, run_id, list(config.validate_.rules),
                                                    self.prior[0], report.notes)
            conn.commit()
        if done:
            self.say(f"{len(done)} of {len(plan.partitions)} partitions already done; running the rest")
        self.reader = self._reader(plan, report)
        tasks = [self.task(run_id, plan, target, i, staging) for i, p in enumerate(plan.partitions) if p.id not in done]
        failures: Counter[tuple[str, str]] = Counter()
        self.step = "loading partitions"
        self.marks["partitions"] = time.time()
        with metrics.phase("partitions"):
            self.execute(tasks, report, failures)
        self.step = "verifying and finishing the run"
        report.add_failures(failures)
        rulejob.judge_completeness(config.validate_.rules, self.rule_stats, report.notes)
        with metrics.phase("finish"):
            with_retries(lambda: self._finish(plan, run_id, target, report), "verifying and finishing the run",
                         self.on_target, self.heard)

    def _finish(self, plan: Plan, run_id: str, target: LoadTarget, report: RunReport) -> None:
        """Verify, swap (replace mode) and mark the run done: one transaction, safe to retry."""
        with pg.connection(self.target_url) as conn:
            if report.status == "succeeded" and checkpoint.finished_by(conn, run_id, self.owner):
                return  # an earlier attempt committed below and filled the report; only the answer was lost
            finished = checkpoint.done_partitions(conn, run_id) if self.config.pipeline.checkpoints else None
            if finished is not None:  # the budget holds for the whole run, resumed or not
                read, bad = sum(c.rows_read for c in finished.values()), sum(c.rows_quarantined for c in finished.values())
                over = budget_error(read, bad, self.config.validate_.max_error_rate, self.config.validate_.max_errors)
                if over is not None:
                    report.top_failures = quarantine.top_failures(conn, self.config.job.name, run_id)
                    raise over
            conn.commit()
            self._hold_lock()
            checkpoint.claim_run(conn, run_id, self.owner, "finishing the run")
            failpoints.hit("run.before_verify")
            self.snapshots.check("verifying the run")
            report.verification = verify_run(self.config, plan, conn, target, finished, report)
            mode_of(target.mode).finish(conn, target)  # committed together with the run's status below
            report.status = "succeeded"
            self._rules_report(report)
            self._describe_healing(report)
            report.metrics = self.metrics.to_dict()
            checkpoint.set_status(conn, run_id, "succeeded", json.loads(report.to_json()))
            failpoints.hit("run.after_commit")  # as if the commit's answer were lost with its connection

    def _startup(self, report: RunReport) -> None:
        """What happened before the first row moved, step by step: `process` is the process's age when the run
        began (for `engine run`: the interpreter, the imports and the job file), `connect` the target sessions,
        the job lock, the engine schema and the source snapshot, `plan` and `prepare` those phases (catalog
        queries, the plan, the target's DDL and checkpoints), `first_batch` from scheduling the partitions to
        the first batch read."""
        m = self.marks
        if "first_row" not in m or "partitions" not in m:
            return  # nothing was read (e.g. a resume with every partition done)
        steps = [("process", "process", "run"), ("connect", "run", "plan"), ("plan", "plan", "prepare"),
                 ("prepare", "prepare", "partitions"), ("first_batch", "partitions", "first_row")]
        report.startup = {name: round(max(m[end] - m[begin], 0.0), 3) for name, begin, end in steps}
        report.startup_seconds = round(m["first_row"] - m["process"], 3)

    def _cleanup(self, report: RunReport) -> None:
        """The cleanup phase (engine.gc.after_success); what it could not do is a note, never a failure."""
        try:
            with pg.connection(self.target_url) as conn:
                report.notes.extend(gc.after_success(conn, self.config))
        except Exception as exc:  # the run's success is committed: a lost session here must not undo its report
            report.notes.append(f"cleanup skipped: {redact(str(exc))}")

    def _finish_metrics(self, report: RunReport, run_id: str | None) -> None:
        """The run's metrics, complete: into the report, next to the staged files and (after a success, whose
        report `_finish` stored already) into `engine.runs`. Never fails the run."""
        metrics = self.metrics
        metrics.emit("run_finished", status=report.status, error=report.error, counts={
            "rows_read": report.rows_read, "rows_loaded": report.rows_loaded,
            "rows_quarantined": report.rows_quarantined, "partitions_run": report.partitions_run},
            durations={"seconds": round(time.time() - metrics.started, 3), **metrics.phases})
        metrics.stop_sampler()
        report.metrics = metrics.to_dict()
        try:
            if report.staging_dir:
                metrics.save(Path(report.staging_dir), report.metrics)
            if run_id:
                with pg.connection(self.target_url) as conn:
                    checkpoint.save_metrics(conn, run_id, report.metrics)
        except Exception as exc:  # as in `_cleanup`
            report.notes.append(f"metrics not saved: {redact(str(exc))}")

    def _rules_report(self, report: RunReport) -> None:
        if self.config.validate_.rules:
            report.rules = rulejob.report_rows(self.config.validate_.rules, self.rule_stats, report.job, report.run_id)

    def _hold_lock(self) -> None:
        """Make sure this process still holds the job's lock (taken again after a restart; another run that holds
        it now stops this one)."""
        fresh = checkpoint.hold_lock(self.lock_conn, self.target_url, self.config.job.name)
        if fresh is not None:
            self.lock_conn = fresh
            self.heard(checkpoint.LOCK_RETAKEN)

    def _record_failure(self, run_id: str, report: RunReport) -> None:
        try:
            with pg.connection(self.target_url) as conn:
                checkpoint.set_status(conn, run_id, "failed", json.loads(report.to_json()), report.error)
        except EngineError:
            pass  # the target is gone; the run stays 'running' and resumes the same way


def run_job(config: JobConfig, fresh: bool = False, progress: Progress | None = None,
            observer: Observer | None = None, slots: threading.Semaphore | None = None,
            within_database: bool = False) -> RunReport:
    """Run (or resume) a job and return its report; raises an EngineError subclass on failure.

    `progress` gets one line per event; an `observer` (see `engine.progress`) gets the live metrics and every
    event instead."""
    os.environ.setdefault("POLARS_MAX_THREADS", str(max(2, os.cpu_count() or 2)))
    say = progress or (lambda _: None)
    if within_database:  # the database run waits out its tables' outages itself (engine.migrate)
        return Run(config, fresh, say, observer, slots, True).run()
    return _run_healed(config, fresh, say, observer)


def _run_healed(config: JobConfig, fresh: bool, say: Progress, observer: Observer | None) -> RunReport:
    """A run that ends on a transient failure (a restart while it plans or prepares the target, a session found
    dead after one) is resumed once its servers answer, `pipeline.retries` times, as a database run does for its
    tables. It resumes the run it had opened, never a new one, and not one whose success committed. Before a run
    opened, a server is looked for `START_GRACE` seconds only (a source refusing from the start is a mistake to
    report); a failure after a whole `reconnect_for` of waiting ends it."""
    patience = Patience(config.pipeline.retries, config.pipeline.reconnect_for, (config.source_url, config.target_url))
    healed: list[str] = []
    opened = ""

    notices = RunMetrics(config.job.name, str(config.target_table))  # said between attempts, as a run says them
    notices.listeners.append(observer.event if observer is not None else partial(_say_line, say))

    def heard(message: str) -> None:
        healed.append(redact(message))
        notices.emit("message", message=redact(message))

    # Without checkpoints an opened run cannot be resumed, only redone (rows twice); under a strict snapshot it
    # must not be read on as of another: those runs end on the failure, for the user to rerun.
    resumable = config.pipeline.checkpoints and config.source.snapshot != "strict"
    attempt = 0
    while True:
        done = (with_retries(partial(checkpoint.succeeded_report, config.target_url, config.job.name, opened),
                             "the run", patience, heard) if opened else None)
        if done is not None:
            return done
        try:
            run = Run(config, fresh and not opened, say, observer)
            run.resuming = opened
            report = run.run()
            report.recoveries[:0] = healed
            return report
        except TransientError as exc:
            failed = getattr(exc, "report", None)
            opened = opened or (failed.run_id if isinstance(failed, RunReport) else "")
            if attempt == patience.retries or outlasted_patience(exc) or (opened and not resumable):
                raise
            try:
                if opened:
                    waited = wait_for_servers(patience, "the run", heard)
                else:  # servers not yet heard from: looked for briefly and quietly
                    waited = wait_for_servers(at_start(patience), "", None)
            except TransientError:
                raise exc from None  # its own error says what happened and what to do
            if not waited:
                ended = str(exc).splitlines()[0].removesuffix(f"; {RESUME}")
                heard(f"the run ended on {redact(ended)}; resuming it "
                      f"(retry {attempt + 1}/{patience.retries})")
            attempt += 1

