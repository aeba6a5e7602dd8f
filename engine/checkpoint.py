"""Run state in the target database (schema `engine`): runs and per-partition checkpoints (the quarantine's
table is `engine.quarantine`'s, created here with the others).

A partition's checkpoint row is written in the same transaction as its rows and its quarantined rows,
so after any crash a partition is either wholly loaded and recorded, or neither.
A session-level advisory lock keyed by the job name refuses a second concurrent run of the same job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine import pg, quarantine
from engine.errors import JobLockedError
from engine.model import RunStatus
from engine.report import RunReport
from engine.urls import DatabaseUrl

_SCHEMA_DDL = [
    "CREATE SCHEMA IF NOT EXISTS engine",
    """CREATE TABLE IF NOT EXISTS engine.runs (
        run_id text PRIMARY KEY, job text NOT NULL, status text NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz,
        fingerprint text NOT NULL, plan jsonb NOT NULL, report jsonb, error text)""",
    "CREATE INDEX IF NOT EXISTS runs_job_idx ON engine.runs (job, started_at)",

    """CREATE TABLE IF NOT EXISTS engine.checkpoints (
        run_id text NOT NULL REFERENCES engine.runs ON DELETE CASCADE, partition_id integer NOT NULL,
        lo numeric, hi numeric, rows_read bigint NOT NULL, rows_loaded bigint NOT NULL,
        rows_quarantined bigint NOT NULL, seconds double precision, done_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (run_id, partition_id))""",
    *quarantine.TABLE_DDL,
    # A whole-database run's steps (schema, a table's data, its indexes, sequences, a foreign key, a view), each
    # recorded in the transaction that did it: a resume neither replays nor skips one.
    """CREATE TABLE IF NOT EXISTS engine.steps (
        run_id text NOT NULL REFERENCES engine.runs ON DELETE CASCADE, step text NOT NULL,
        outcome text NOT NULL DEFAULT 'done', detail text, seconds double precision,
        done_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run_id, step))""",
]


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    job: str
    status: RunStatus
    started_at: datetime
    fingerprint: str
    plan: dict[str, Any]


@dataclass(frozen=True)
class Checkpoint:
    partition_id: int
    rows_read: int
    rows_loaded: int
    rows_quarantined: int


# Columns added to tables made before them: (table, column, type).
_ADDED_COLUMNS = [
    # The invocation running the run now: a resume by another process takes the run over, and the one it took
    # it from stops at its next commit.
    ("runs", "owner", "text"),
    # The partition's timings (phases, bytes, retries, worker), for reports over every invocation of a run.
    ("checkpoints", "metrics", "jsonb"),
]


def ensure_schema(conn: pg.Connection) -> None:
    """Create the engine's tables, or add what is missing. Even `IF NOT EXISTS` DDL waits for the locks of
    a running job's open transaction, so a complete schema is left alone (a second run must not wait to be
    refused)."""
    if _schema_complete(conn):
        return
    pg.execute(conn, "SELECT pg_advisory_xact_lock(hashtext('engine:schema'))")  # concurrent first runs
    for statement in _SCHEMA_DDL:
        pg.execute(conn, statement)
    for table, column, kind in _ADDED_COLUMNS:
        pg.execute(conn, f"ALTER TABLE engine.{table} ADD COLUMN IF NOT EXISTS {column} {kind}")
    conn.commit()


def _schema_complete(conn: pg.Connection) -> bool:
    found = pg.fetch_all(conn, """SELECT to_regclass('engine.checkpoints') IS NOT NULL
                                         AND to_regclass('engine.quarantine_run_idx') IS NOT NULL
                                         AND to_regclass('engine.warnings_run_idx') IS NOT NULL
                                         AND to_regclass('engine.steps') IS NOT NULL""")[0][0]
    for table, column, _ in _ADDED_COLUMNS:
        found = found and pg.fetch_all(conn, """SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attnum > 0
                                                AND attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped)""",
                                       (f"engine.{table}", column))[0][0]
    conn.commit()
    return bool(found)


def try_lock_job(conn: pg.Connection, job: str) -> None:
    """Hold the job's advisory lock for this (autocommit) session, or refuse."""
    got = pg.fetch_all(conn, "SELECT pg_try_advisory_lock(hashtext('engine:job'), hashtext($1))", (job,))[0][0]
    if not got:
        raise JobLockedError(f"job {job!r} is already running (another process holds its lock in the target "
                             "database); wait for it to finish, or stop it, then rerun to resume")


def hold_lock(conn: pg.Connection, url: DatabaseUrl, job: str) -> pg.Connection | None:
    """Make sure the session `conn` still holds the job's lock: the server drops it with its session (a restart,
    a terminated backend). Take it again on a new session if it is free (returned: the caller keeps it); if
    another run holds it now, JobLockedError. None: the lock was never lost."""
    try:
        pg.fetch_all(conn, "SELECT 1")
        return None
    except Exception:
        pass
    try:
        conn.close()
    except Exception:
        pass
    fresh = pg.connect(url, autocommit=True)
    try:
        try_lock_job(fresh, job)
    except BaseException:
        fresh.close()
        raise
    return fresh


LOCK_RETAKEN = "the job's lock was lost with its session (a restart or a terminated backend) and taken again"


def claim_run(conn: pg.Connection, run_id: str, owner: str, doing: str) -> None:
    """Hold the run's row (FOR SHARE) until this transaction ends, refusing if the run is no longer running.

    The advisory lock dies with its session; if the server dropped it, another process may have started the
    job meanwhile. Whatever it did to this run (abandoned it with --fresh, or finished it) is visible here,
    and it cannot change the run's status before this transaction commits.
    """
    rows = pg.fetch_all(conn, "SELECT status, owner FROM engine.runs WHERE run_id = $1 FOR SHARE", (run_id,))
    status, holder = rows[0] if rows else ("deleted", None)
    if status == "running" and holder not in (None, owner):
        raise JobLockedError(f"run {run_id} was resumed by another process after this one lost its connection; "
                             f"that process runs it now; this one stopped before {doing}")
    if status != "running":
        raise JobLockedError(f"run {run_id} is no longer running (its status is now {status!r}: another process "
                             f"took the job over after this one lost its connection); stopped before {doing}")


def finished_by(conn: pg.Connection, run_id: str, owner: str) -> bool:
    """Whether `owner` marked the run succeeded: its commit landed though its answer was lost with the session."""
    rows = pg.fetch_all(conn, "SELECT status = 'succeeded' AND owner = $2 FROM engine.runs WHERE run_id = $1",
                        (run_id, owner))
    return bool(rows and rows[0][0])


def succeeded_report(url: DatabaseUrl, job: str, run_id: str | None = None) -> RunReport | None:
    """The stored report of the job's run (or of run `run_id`) that succeeded, if one did."""
    with pg.connection(url) as conn:
        rows = pg.fetch_all(conn, """SELECT run_id, report::text FROM engine.runs WHERE job = $1
                                     AND status = 'succeeded' AND run_id = COALESCE($2, run_id)
                                     ORDER BY started_at DESC LIMIT 1""", (job, run_id))
    if not rows:
        return None
    return RunReport.from_dict({**json.loads(rows[0][1] or "{}"), "job": job, "run_id": rows[0][0]})


def latest_run(conn: pg.Connection, job: str) -> RunRecord | None:
    rows = pg.fetch_all(conn, """SELECT run_id, job, status, started_at, fingerprint, plan::text FROM engine.runs
                                 WHERE job = $1 ORDER BY started_at DESC, run_id DESC LIMIT 1""", (job,))
    if not rows:
        return None
    r = rows[0]
    return RunRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]))


def start_run(conn: pg.Connection, run_id: str, job: str, fingerprint: str, plan_json: str, owner: str) -> None:
    pg.execute(conn, "INSERT INTO engine.runs (run_id, job, status, fingerprint, plan, owner) VALUES ($1, $2, 'running', "
                     "$3, $4::jsonb, $5)", (run_id, job, fingerprint, plan_json, owner))
    conn.commit()


def take_over(conn: pg.Connection, run_id: str, owner: str) -> None:
    """Resume a run in this invocation: from now on only `owner` commits its partitions."""
    pg.execute(conn, "UPDATE engine.runs SET status = 'running', owner = $2, finished_at = NULL WHERE run_id = $1",
               (run_id, owner))
    conn.commit()


def set_status(conn: pg.Connection, run_id: str, status: RunStatus, report: dict[str, Any] | None = None,
               error: str | None = None) -> None:
    # A success that committed stays one: a failure met after it (its answer lost, say) is not the run's.
    pg.execute(conn, """UPDATE engine.runs SET status = $2, report = COALESCE($3::jsonb, report), error = $4,
                        finished_at = CASE WHEN $2 = 'running' THEN NULL ELSE now() END
                        WHERE run_id = $1 AND NOT ($2 = 'failed' AND status = 'succeeded')""",
               (run_id, status, json.dumps(report, default=str) if report is not None else None, error))
    conn.commit()


def save_metrics(conn: pg.Connection, run_id: str, metrics: dict[str, Any]) -> None:
    """The run's final metrics into its stored report."""
    pg.execute(conn, """UPDATE engine.runs SET report = jsonb_set(COALESCE(report, '{}'::jsonb), '{metrics}', $2::jsonb)
                        WHERE run_id = $1""", (run_id, json.dumps(metrics, default=str)))
    conn.commit()


def done_partitions(conn: pg.Connection, run_id: str, partition_id: int | None = None) -> dict[int, Checkpoint]:
    """Finished partitions of a run (or just the one asked for)."""
    rows = pg.fetch_all(conn, """SELECT partition_id, rows_read, rows_loaded, rows_quarantined
                                 FROM engine.checkpoints WHERE run_id = $1 AND partition_id = COALESCE($2, partition_id)""",
                        (run_id, partition_id))
    return {int(r[0]): Checkpoint(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows}


def record_partition(conn: pg.Connection, run_id: str, partition_id: int, lo: int | None, hi: int | None,
                     read: int, loaded: int, quarantined: int, seconds: float,
                     metrics: dict[str, Any] | None = None) -> None:
    """Write the checkpoint row (in the caller's transaction, with the partition's rows)."""
    pg.execute(conn, """INSERT INTO engine.checkpoints (run_id, partition_id, lo, hi, rows_read, rows_loaded,
                        rows_quarantined, seconds, metrics)
                        VALUES ($1, $2, $3::numeric, $4::numeric, $5, $6, $7, $8, $9::jsonb)""",
               (run_id, partition_id, None if lo is None else str(lo), None if hi is None else str(hi), read, loaded,
                quarantined, seconds, json.dumps(metrics) if metrics is not None else None))  # keys: numeric, MySQL unsigned


def done_steps(conn: pg.Connection, run_id: str) -> dict[str, tuple[str, str | None]]:
    """A whole-database run's finished steps: step -> (outcome, detail)."""
    rows = pg.fetch_all(conn, "SELECT step, outcome, detail FROM engine.steps WHERE run_id = $1", (run_id,))
    return {str(step): (str(outcome), detail) for step, outcome, detail in rows}


def record_step(conn: pg.Connection, run_id: str, step: str, outcome: str = "done", detail: str | None = None,
                seconds: float | None = None) -> None:
    """Record a step in the caller's transaction (the one that did its work)."""
    pg.execute(conn, "INSERT INTO engine.steps (run_id, step, outcome, detail, seconds) VALUES ($1, $2, $3, $4, $5) "
                     "ON CONFLICT DO NOTHING", (run_id, step, outcome, detail, seconds))


def step_done(conn: pg.Connection, run_id: str, step: str) -> bool:
    """Whether a step committed (asked again after a connection lost around its COMMIT)."""
    return bool(pg.fetch_all(conn, "SELECT 1 FROM engine.steps WHERE run_id = $1 AND step = $2", (run_id, step)))
