"""The PostgreSQL adapter: the only module that imports the ADBC driver.

Connections (one shared ADBC database per URL, and a pool of one session per worker thread), bulk ingest,
the target's catalog, and the one classifier that splits driver errors into transient (retry may help) or not.
The target is always PostgreSQL; PostgreSQL sources use these connections for catalog and snapshot queries.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Protocol, cast

import adbc_driver_manager
import adbc_driver_manager.dbapi as dbapi
import adbc_driver_postgresql
import adbc_driver_postgresql.dbapi as pg_dbapi
import pyarrow as pa

from engine.errors import EngineError, TargetError, TransientError, sounds_transient
from engine.sql import TableName
from engine.urls import DatabaseUrl, redact

Params = tuple[Any, ...] | list[Any] | None


class Cursor(Protocol):
    """The part of a DB-API cursor (with ADBC's extensions) the engine uses."""

    def __enter__(self) -> Cursor: ...
    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None: ...
    def execute(self, operation: str, parameters: Params = None) -> None: ...
    def fetchall(self) -> list[tuple[Any, ...]]: ...
    def fetch_arrow_table(self) -> pa.Table: ...
    def adbc_ingest(self, table_name: str, data: pa.RecordBatchReader | pa.Table, mode: str = ..., *,
                    db_schema_name: str | None = ..., temporary: bool = ...) -> int: ...


class AdbcSession(Protocol):
    def set_autocommit(self, enabled: bool) -> None: ...


class Connection(Protocol):
    """A PostgreSQL session: `adbc_driver_manager.dbapi.Connection`, typed by what the engine calls."""

    @property
    def adbc_connection(self) -> AdbcSession: ...
    def cursor(self) -> Cursor: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


# SQLSTATE classes and codes worth retrying: connection exceptions, shutdown, serialization, deadlock, too many
# connections, a lock not granted within lock_timeout (its holder may be done by the next attempt).
_TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "40001", "40P01", "53300", "55P03")

# What to do about errors a retry cannot fix, by SQLSTATE.
_ADVICE = {
    "53100": "the target's disk is full: nothing of this partition was committed; free space on the target (or "
             "give the table a tablespace with room), then rerun to resume",
    "57014": "the target cancelled the statement: a statement_timeout set for the role or database (see "
             "pg_db_role_setting) is shorter than a partition's load; ALTER ROLE … SET statement_timeout = 0 for "
             "the engine's role (or use smaller partitions), then rerun to resume",
    "55P03": "another session held a lock the load needs for longer than the lock_timeout set for the role or "
             "database, on every attempt; end that session or raise lock_timeout, then rerun to resume",
}


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if any(sqlstate.startswith(code) for code in _TRANSIENT_SQLSTATES):
        return True
    return isinstance(exc, adbc_driver_manager.Error) and sounds_transient(str(exc))


def is_driver_error(exc: BaseException) -> bool:
    return isinstance(exc, adbc_driver_manager.Error)


def translate(exc: BaseException, what: str, error: type[EngineError] = TargetError) -> EngineError:
    """Wrap a driver error in the engine's tree, with the secret-free message and what was being done."""
    message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    advice = _ADVICE.get(getattr(exc, "sqlstate", None) or "")
    if "statement timeout" not in message and getattr(exc, "sqlstate", None) == "57014":
        advice = "someone cancelled the statement (pg_cancel_backend); rerun to resume"
    if advice:
        message = f"{message}: {advice}"
    if is_transient(exc):
        return TransientError(f"{what}: {message}")
    return error(f"{what}: {message}")


# One ADBC database per URL: creating one costs a connection and a scan of pg_type (≈65 ms); a connection
# made from an existing one costs ≈3 ms. It holds no open session, so a restarted server does not break it.
_databases: dict[str, Any] = {}
_databases_lock = threading.Lock()


def _database(uri: str) -> Any:
    """The cached database of `uri`, with a reference taken for the caller (who must `close` it): another
    thread's `forget_databases` must not free it between this and the connection made on it."""
    with _databases_lock:
        shared = _databases.get(uri)
        if shared is None:
            shared = dbapi._SharedDatabase(adbc_driver_postgresql.connect(uri))  # as Connection.adbc_clone shares it
            _databases[uri] = shared
        return shared.clone()


def forget_databases() -> None:
    """Drop the cached databases (their type catalogs), e.g. before a run, so it sees types created since."""
    close_idle_connections()  # they hold the old type catalogs
    with _databases_lock:
        shared = list(_databases.values())
        _databases.clear()
    for db in shared:
        try:
            db.close()  # connections still open keep their database alive
        except RuntimeError:  # one a failed connect left counted as open: let it go with its last reference
            pass


def connect(url: DatabaseUrl, autocommit: bool = False) -> Connection:
    try:
        shared = _database(url.libpq)
        try:
            conn = dbapi.Connection(shared, adbc_driver_manager.AdbcConnection(shared._db), autocommit=autocommit)
        finally:
            shared.close()  # the connection holds its own reference now
        return cast(Connection, conn)
    except adbc_driver_manager.Error as exc:
        raise translate(exc, f"cannot connect to {url}") from None


def unreachable(uri: str, timeout: float = 3.0) -> str | None:
    """Why no server answers at `uri` (a fresh connection, not a pooled one), or None when one does."""
    try:
        conn = pg_dbapi.connect(uri + ("&" if "?" in uri else "?") + f"connect_timeout={max(1, int(timeout))}")
        conn.close()
        return None
    except adbc_driver_manager.Error as exc:
        text = str(exc).strip()
        return redact(text.splitlines()[0] if text else type(exc).__name__)


def reachable(uri: str, timeout: float = 3.0) -> bool:
    """Whether a server answers at `uri`."""
    return unreachable(uri, timeout) is None


# Sessions `connection` lent and got back in good order, reset (DISCARD ALL), by URL and autocommit: a run's many
# short bookkeeping statements (its ledger, its checkpoints, a whole database's steps) do not pay a connect each.
# They wait outside any transaction, for `_IDLE_FOR` seconds at most (a long-idle session may have been cut by the
# network, and misses settings changed since), and are checked before they are lent again (a restart ends them).
# `_generation` counts `forget_databases` calls: a session made before the last one is not kept.
_idle: dict[tuple[str, bool], list[tuple[Connection, float, int]]] = {}
_idle_lock = threading.Lock()
_IDLE_PER_KEY = 4
_IDLE_FOR = 30.0
_generation = 0
_left_by_parent: list[Connection] = []  # in a forked child: the parent's sessions, never used nor closed here


@contextmanager
def connection(url: DatabaseUrl, autocommit: bool = False) -> Iterator[Connection]:
    """A session for a few statements: a reset idle one when there is one that still answers, else a new one.
    It goes back to the idle ones only when the caller's block ended without an error."""
    key = (url.libpq, autocommit)
    generation = _generation  # read before connecting: a catalog dropped meanwhile closes this one on its return
    conn, generation = _lend(key) or (connect(url, autocommit), generation)
    try:
        yield conn
    except BaseException:
        _close_quietly(conn)
        raise
    _give_back(key, conn, generation)


def _lend(key: tuple[str, bool]) -> tuple[Connection, int] | None:
    while True:
        with _idle_lock:
            idle = _idle.get(key)
            if not idle:
                return None
            conn, since, generation = idle.pop()
        if time.monotonic() - since > _IDLE_FOR or generation != _generation:
            _close_quietly(conn)
            continue
        try:
            execute(conn, "SELECT 1")
            if not key[1]:
                conn.adbc_connection.set_autocommit(False)
            return conn, generation
        except Exception:  # ended while it waited (a restart, a terminated backend): the next one, or a new one
            _close_quietly(conn)


def _give_back(key: tuple[str, bool], conn: Connection, generation: int) -> None:
    if generation != _generation:  # made before the type catalogs were dropped
        _close_quietly(conn)
        return
    try:
        if not key[1]:  # what the caller left uncommitted is not kept; DISCARD runs outside a transaction
            conn.rollback()
            conn.adbc_connection.set_autocommit(True)
        execute(conn, "DISCARD ALL")  # a transaction the caller opened by hand (BEGIN) fails it: not given back
    except Exception:
        _close_quietly(conn)
        return
    with _idle_lock:
        idle = _idle.setdefault(key, [])
        if len(idle) < _IDLE_PER_KEY:
            idle.append((conn, time.monotonic(), generation))
            return
    _close_quietly(conn)


def close_idle_connections() -> None:
    """Close the idle sessions and let those lent now be closed when they come back (the cached databases go)."""
    global _generation
    with _idle_lock:
        _generation += 1
        idle = [c for conns in _idle.values() for c, _, _ in conns]
        _idle.clear()
    for conn in idle:
        _close_quietly(conn)


def _forget_idle_in_child() -> None:
    """A forked child must neither use nor close its parent's sessions (their sockets are shared): they are kept
    referenced, so no finaliser closes them either."""
    global _idle_lock
    _left_by_parent.extend(c for conns in _idle.values() for c, _, _ in conns)
    _idle.clear()
    _idle_lock = threading.Lock()


atexit.register(close_idle_connections)
os.register_at_fork(after_in_child=_forget_idle_in_child)


def _close_quietly(conn: Connection) -> None:
    try:
        conn.close()
    except Exception:  # closing a broken connection must not hide the real error
        pass


def execute(conn: Connection, sql: str, params: Params = None) -> None:
    with conn.cursor() as cur:
        cur.execute(sql, params)


def fetch_all(conn: Connection, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def fetch_arrow(conn: Connection, sql: str, params: Params = None) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetch_arrow_table()


def stream_batches(url: DatabaseUrl, setup: list[str], sql: str, batch_bytes: int) -> Iterator[pa.RecordBatch]:
    """The rows of `sql` as a stream of Arrow batches of about `batch_bytes` each (ADBC's COPY-based reader),
    on a session of its own that first runs `setup` (settings, a transaction, the run's snapshot)."""
    conn = connect(url, autocommit=True)
    try:
        for statement in setup:
            execute(conn, statement)
        cur: Any = conn.cursor()
        try:
            cur.adbc_statement.set_options(
                **{adbc_driver_postgresql.StatementOptions.BATCH_SIZE_HINT_BYTES.value: str(batch_bytes)})
            cur.execute(sql)
            reader: pa.RecordBatchReader = cur.fetch_record_batch()
            yield from reader
        finally:
            cur.close()
    finally:
        try:
            conn.close()
        except Exception:
            pass


def ingest(conn: Connection, table: str, schema_name: str | None, data: pa.RecordBatchReader | pa.Table,
           mode: str = "append", temporary: bool = False) -> int:
    """Bulk-load Arrow data with binary COPY; returns rows written."""
    with conn.cursor() as cur:
        if temporary:
            return int(cur.adbc_ingest(table, data, mode=mode, temporary=True))
        return int(cur.adbc_ingest(table, data, mode=mode, db_schema_name=schema_name))


# The target's catalog.

def table_columns(conn: Connection, table: TableName) -> dict[str, str] | None:
    """Column -> declared type of a table, or None when it does not exist."""
    rows = fetch_all(conn, """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
        WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
                     (table.quoted(),))
    return {r[0]: r[1] for r in rows} if rows else None


def unique_keys(conn: Connection, table: TableName) -> list[set[str]]:
    """The column sets of a table's unique indexes (without predicates) and primary key."""
    rows = fetch_all(conn, """
        SELECT i.indexrelid, a.attname FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL""", (table.quoted(),))
    keys: dict[Any, set[str]] = {}
    for index_id, name in rows:
        keys.setdefault(index_id, set()).add(name)
    return list(keys.values())


def count_rows(conn: Connection, table: TableName) -> int:
    return int(fetch_all(conn, f"SELECT COUNT(*) FROM {table.quoted()}")[0][0])


def is_type(conn: Connection, pg_type: str) -> bool:
    """Whether `pg_type` names a type the server knows."""
    try:
        fetch_all(conn, "SELECT $1::regtype", (pg_type,))
        return True
    except Exception:
        conn.rollback()
        return False


# The pool: one session per worker thread, reused across its partitions (saves a connect each).

_local = threading.local()
_opened: dict[Connection, threading.Thread] = {}  # each pooled session and the worker thread it belongs to
_opened_lock = threading.Lock()


def worker_connection(url: DatabaseUrl) -> Connection:
    """This thread's target session, opened on first use."""
    cached = getattr(_local, "conn", None)
    with _opened_lock:
        alive = cached in _opened
    if cached is not None and alive and getattr(_local, "url", None) == url.raw:
        return cast(Connection, cached)
    if cached is not None:
        drop_connection(cached)
    conn = connect(url)
    # Partitions commit without waiting for the WAL flush: a server crash can only lose whole partitions,
    # rows and checkpoint together, which a resume redoes; the run's final commit waits for all of it.
    execute(conn, "SET synchronous_commit = off")
    conn.commit()
    _local.conn, _local.url = conn, url.raw
    with _opened_lock:
        _opened[conn] = threading.current_thread()
    return conn


def savepoint_connection(url: DatabaseUrl) -> Connection:
    """An autocommit session with a transaction opened by hand: after a failed statement the driver can
    roll back to a savepoint only on such a session."""
    conn = connect(url, autocommit=True)
    execute(conn, "BEGIN")
    execute(conn, "SET LOCAL synchronous_commit = off")
    return conn


def drop_connection(conn: Connection) -> None:
    """Close a session (rolling back what it had open) and forget it if the pool held it."""
    if getattr(_local, "conn", None) is conn:
        _local.conn = None
    with _opened_lock:
        _opened.pop(conn, None)
    try:
        conn.rollback()
        conn.close()
    except Exception:
        pass


def close_worker_connections() -> None:
    """Close the pooled sessions whose worker threads have ended (a run calls this once its pool has shut down;
    the sessions of another run's live workers in this process stay theirs)."""
    with _opened_lock:
        conns = [c for c, thread in _opened.items() if not thread.is_alive()]
        for conn in conns:
            del _opened[conn]
    for conn in conns:
        try:
            conn.close()
        except Exception:
            pass
