"""`[source] reader = "copy"`: a PostgreSQL table whose rows need nothing on the way goes server to server.

A partition's rows leave the source as `COPY (SELECT …) TO STDOUT` and enter the target as `COPY … FROM STDIN`;
the bytes are piped through, never decoded, so the client spends next to no CPU per row (with Arrow batches the
driver decodes every value and the loader encodes it again: on 2 cores that CPU is taken from the two servers).
The partition commits with its checkpoint exactly as on the Arrow path, and is verified the same way.

Binary COPY when both ends hold the same built-in types; otherwise text, each type's own output and input
functions (enums, domains, arrays of user types: whatever the target's column accepts). A table that needs its
rows (a transform beyond renames, a rule, a schema, content verification, upsert, staged batches, a type
override) takes the Arrow path; `refusal` says why, and the run's notes repeat it.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from typing import IO, Any, cast

import psycopg2

from engine import failpoints, pg, source
from engine.config import JobConfig, TransformSection
from engine.errors import TargetError, TransientError
from engine.load import row_rejection
from engine.metrics import LIVE
from engine.model import LoadTarget, PartitionResult, PartitionTask, Plan
from engine.sql import quote_ident
from engine.typemap import canonical_type
from engine.urls import DatabaseUrl, parse_url

_FIRST_USER_OID = 16384  # PostgreSQL's FirstNormalObjectId: below it, built-in types, the same in every database
_CHUNK = 1 << 18  # bytes a COPY FROM reads from the pipe at a time


def refusal(config: JobConfig) -> str | None:
    """Why the job's rows cannot go server to server (they are needed on the way), or None when they can."""
    if config.source_url.dialect != "postgresql":
        return "the source is not PostgreSQL"
    needs = [
        (config.transform.model_copy(update={"rename": {}, "drop": []}) != TransformSection(), "a transform"),
        (bool(config.validate_.rules), "validation rules"),
        (config.validate_.schema_ref is not None, "a validation schema"),
        (config.pipeline.verify == "content", 'verify = "content"'),
        (config.pipeline.stage_batches, "staged batches"),
        (config.target.mode == "upsert", 'mode = "upsert"'),
        (bool(config.target.types), "target.types"),
    ]
    named = [what for needed, what in needs if needed]
    return f"it has {', '.join(named)}" if named else None


class RowsRefused(Exception):
    """The target refused a row (a constraint, a length): the partition is redone on the Arrow path, which
    quarantines such rows with the database's reason."""


class DriverError(Exception):
    """A psycopg2 error as the engine's translators read it: message and SQLSTATE."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _driver_error(exc: psycopg2.Error, session: _Session | None = None) -> DriverError:
    # a session cut mid-COPY says only "error with status PGRES_COPY_OUT and no message from the libpq"
    broken = (isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))
              or "no message from the libpq" in str(exc) or (session is not None and bool(session.raw.closed)))
    return DriverError(str(exc).strip() or type(exc).__name__, exc.pgcode or ("08006" if broken else ""))


class _Cursor:
    """The engine's `$1` placeholders on a psycopg2 cursor (its own are `%s`)."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *_: object) -> None:
        self._cur.close()

    def execute(self, sql: str, params: pg.Params = None) -> None:
        numbers = [int(n) for n in re.findall(r"\$(\d+)", sql)]
        text = re.sub(r"\$\d+", "%s", sql.replace("%", "%%")) if params else sql
        values = [list(params)[n - 1] for n in numbers] if params else None
        try:
            self._cur.execute(text, values)
        except psycopg2.Error as exc:
            raise _driver_error(exc) from None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._cur.fetchall())


class _Session:
    """A psycopg2 session that `checkpoint` can write through, as it does through an ADBC one."""

    def __init__(self, url: DatabaseUrl, setup: list[str]) -> None:
        try:
            self.raw = psycopg2.connect(url.libpq)
            with self.raw.cursor() as cur:
                for statement in ["SET client_encoding = 'UTF8'", *setup]:
                    cur.execute(statement)
            self.raw.commit()
        except psycopg2.Error as exc:
            raise _driver_error(exc) from None

    def cursor(self) -> _Cursor:
        return _Cursor(self.raw.cursor())

    def close(self) -> None:
        try:
            self.raw.close()
        except psycopg2.Error:
            pass


# One source and one target session per thread, kept across partitions (a table of 200 small partitions
# would otherwise open 400 sessions); any error drops them.
_local = threading.local()
_opened: dict[_Session, threading.Thread] = {}
_opened_lock = threading.Lock()


def _session(role: str, url: DatabaseUrl, setup: list[str]) -> _Session:
    key = (role, url.raw)
    cached: dict[tuple[str, str], _Session] = _local.__dict__.setdefault("sessions", {})
    session = cached.get(key)
    if session is not None and not session.raw.closed:
        return session
    session = _Session(url, setup)
    cached[key] = session
    with _opened_lock:
        _opened[session] = threading.current_thread()
    return session


def _drop_sessions() -> None:
    cached: dict[tuple[str, str], _Session] = _local.__dict__.pop("sessions", {})
    for session in cached.values():
        session.close()
        with _opened_lock:
            _opened.pop(session, None)


def close_sessions() -> None:
    """Close the sessions whose threads have ended (as `pg.close_worker_connections` does: the sessions of
    another table's live workers stay theirs)."""
    with _opened_lock:
        sessions = [s for s, thread in _opened.items() if not thread.is_alive()]
        for session in sessions:
            del _opened[session]
    for session in sessions:
        session.close()


_binary: dict[tuple[str, str], bool] = {}


def _use_binary(src: _Session, task: PartitionTask, sql: str) -> bool:
    """Binary COPY when the target's columns have the source's types and all of them are built in: the binary
    form of an array or a record names its element types by OID, which differ between databases."""
    key = (task.source_url, sql)
    if key not in _binary:
        types = {c.name: canonical_type(c.source_type) for c in task.plan.columns}
        same = all(types.get(c.source or "") == canonical_type(t)
                   for c, (_, t) in zip(task.plan.target_columns, task.target.columns, strict=True))
        with src.raw.cursor() as cur:
            cur.execute(f"SELECT * FROM ({sql}) AS q LIMIT 0")
            built_in = all(d.type_code < _FIRST_USER_OID for d in cur.description)
        _binary[key] = same and built_in
    return _binary[key]


def select_sql(plan: Plan, task_target: LoadTarget, partition_where: str) -> tuple[str, str]:
    """The source query (each target column's source column, as stored) and the target's column list."""
    sources = [c.source for c in plan.target_columns]
    assert all(s is not None for s in sources), "a column made on the way cannot go server to server"
    select = ", ".join(quote_ident(s or "") for s in sources)
    names = ", ".join(quote_ident(n) for n, _ in task_target.columns)
    return f"SELECT {select} FROM {plan.from_sql}{partition_where}", names


class _Counted:
    """The pipe's read end, counting the bytes COPY FROM takes from it."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.pipe, self.bytes = pipe, 0

    def read(self, size: int = -1) -> bytes:
        data = self.pipe.read(size)
        self.bytes += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:  # psycopg2 reads text COPY by lines
        data = self.pipe.readline(size)
        self.bytes += len(data)
        return data


def copy_partition(task: PartitionTask, result: PartitionResult,
                   record: Callable[[pg.Connection, PartitionTask, PartitionResult], None]) -> None:
    """The partition's rows from source to target and its checkpoint (`record`), in one target transaction."""
    started = time.perf_counter()
    source_url, target_url = parse_url(task.source_url), parse_url(task.target_url)
    what = f"copying partition {task.partition.id} {task.partition.label()}"
    try:
        src = _session("source", source_url, source.session_setup(source_url) or [])
        # the target reads text in the same settings the source writes it (and commits as worker sessions do)
        dst = _session("target", target_url,
                       [*(source.session_setup(source_url) or []), "SET synchronous_commit = off"])
    except DriverError as exc:
        raise source.translate(exc, what) from None
    try:
        _copy(task, result, src, dst, what)
        record(cast(pg.Connection, dst), task, result)
        failpoints.hit("load.before_commit")
        dst.raw.commit()
        failpoints.hit("load.after_commit")
    except BaseException:
        _drop_sessions()  # after an error a session may be broken (or mid-COPY): never reuse it
        raise
    finally:
        if not task.keep_connection:
            _drop_sessions()
    result.seconds = time.perf_counter() - started
    LIVE.add(result.rows_loaded, result.bytes)


def _copy(task: PartitionTask, result: PartitionResult, src: _Session, dst: _Session, what: str) -> None:
    started = time.perf_counter()
    sql, names = select_sql(task.plan, task.target, task.plan.where(task.partition))
    try:
        src.raw.autocommit = True  # the transaction is opened by hand, to import the snapshot first
        with src.raw.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            if task.snapshot:
                cur.execute(f"SET TRANSACTION SNAPSHOT '{task.snapshot}'")
        form = " (FORMAT binary)" if _use_binary(src, task, sql) else ""
    except psycopg2.Error as exc:
        raise source.translate(_driver_error(exc), what) from None
    failpoints.hit("extract.batch")
    result.first_batch_at = result.first_batch_at or time.time()
    read_end, write_end = os.pipe()
    produced: dict[str, Any] = {}
    producer = threading.Thread(target=_produce, args=(src, f"COPY ({sql}) TO STDOUT{form}", write_end, produced),
                                name=threading.current_thread().name + "-copy", daemon=True)
    producer.start()
    counted = _Counted(os.fdopen(read_end, "rb", buffering=_CHUNK))
    try:
        with dst.raw.cursor() as cur:
            cur.copy_expert(f"COPY {task.target.write_table.quoted()} ({names}) FROM STDIN{form}", counted, _CHUNK)
            loaded = cur.rowcount
    except psycopg2.Error as exc:
        counted.pipe.close()  # the producer then stops on a broken pipe
        producer.join()
        if "error" in produced:  # the source failed first (the target then saw the stream cut short)
            raise produced["error"] from None
        error = _driver_error(exc, dst)
        if row_rejection(error):
            raise RowsRefused(str(error)) from None
        raise pg.translate(error, what, TargetError) from None
    finally:
        counted.pipe.close()
    producer.join()
    if "error" in produced or "stopped" in produced:  # a truncated stream: the transaction is rolled back
        raise produced.get("error") or TransientError(f"{what}: the target stopped reading the rows")
    if produced["rows"] != loaded:
        raise TargetError(f"{what}: the source sent {produced['rows']} rows and the target took {loaded}")
    result.rows_read, result.rows_loaded, result.bytes = produced["rows"], loaded, counted.bytes
    result.route = "copy binary" if form else "copy text"
    result.phases["load"] += time.perf_counter() - started


def _produce(src: _Session, copy_sql: str, write_end: int, produced: dict[str, Any]) -> None:
    """The source's COPY into the pipe, then its transaction ended; the outcome lands in `produced`."""
    try:
        with os.fdopen(write_end, "wb", buffering=_CHUNK) as pipe, src.raw.cursor() as cur:
            cur.copy_expert(copy_sql, pipe)
            produced["rows"] = cur.rowcount
            cur.execute("COMMIT")
    except BrokenPipeError:  # the target's COPY failed: its error is the one to report
        produced["stopped"] = True
    except psycopg2.Error as exc:
        produced["error"] = source.translate(_driver_error(exc, src), "reading the source")
    except BaseException as exc:
        produced["error"] = exc
