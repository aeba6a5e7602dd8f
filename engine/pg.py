"""PostgreSQL connections over ADBC: the only module that imports the ADBC driver.

Driver errors are translated here into the engine's tree, split into transient (retry may help) or not.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias, TypeVar

import adbc_driver_manager
import adbc_driver_manager.dbapi as dbapi
import adbc_driver_postgresql
import pyarrow as pa

from engine.errors import EngineError, TargetError, TransientError
from engine.urls import DatabaseUrl, redact

Connection: TypeAlias = Any  # adbc_driver_manager.dbapi.Connection; the driver ships no type hints
T = TypeVar("T")

# SQLSTATE classes and codes worth retrying: connection exceptions, shutdown, serialization, deadlock.
_TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "40001", "40P01", "53300")
_TRANSIENT_WORDS = ("connection refused", "server closed the connection", "connection reset", "terminating connection",
                    "could not connect", "no connection to the server", "broken pipe", "the database system is")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if any(sqlstate.startswith(code) for code in _TRANSIENT_SQLSTATES):
        return True
    text = str(exc).lower()
    return isinstance(exc, adbc_driver_manager.Error) and any(w in text for w in _TRANSIENT_WORDS)


def translate(exc: BaseException, what: str, error: type[EngineError] = TargetError) -> EngineError:
    """Wrap a driver error in the engine's tree, with the secret-free message and what was being done."""
    message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    if is_transient(exc):
        return TransientError(f"{what}: {message}")
    return error(f"{what}: {message}")


# One ADBC database per URL: creating one costs a connection and a scan of pg_type (≈65 ms); a connection
# made from an existing one costs ≈3 ms. It holds no open session, so a restarted server does not break it.
_databases: dict[str, Any] = {}
_databases_lock = threading.Lock()


def _database(uri: str) -> Any:
    with _databases_lock:
        shared = _databases.get(uri)
        if shared is None:
            shared = dbapi._SharedDatabase(adbc_driver_postgresql.connect(uri))  # as Connection.adbc_clone shares it
            _databases[uri] = shared
        return shared


def forget_databases() -> None:
    """Drop the cached databases (their type catalogs), e.g. before a run, so it sees types created since."""
    with _databases_lock:
        shared = list(_databases.values())
        _databases.clear()
    for db in shared:
        db.close()  # connections still open keep their database alive


def connect(url: DatabaseUrl, autocommit: bool = False) -> Connection:
    try:
        shared = _database(url.libpq)
        return dbapi.Connection(shared, adbc_driver_manager.AdbcConnection(shared._db), autocommit=autocommit)
    except adbc_driver_manager.Error as exc:
        raise translate(exc, f"cannot connect to {url}") from None


@contextmanager
def connection(url: DatabaseUrl, autocommit: bool = False) -> Iterator[Connection]:
    conn = connect(url, autocommit)
    try:
        yield conn
    finally:
        try:
            conn.close()
        except Exception:  # closing a broken connection must not hide the real error
            pass


def execute(conn: Connection, sql: str, params: tuple[Any, ...] | list[Any] | None = None) -> None:
    with conn.cursor() as cur:
        cur.execute(sql, params)


def fetch_all(conn: Connection, sql: str, params: tuple[Any, ...] | list[Any] | None = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def fetch_arrow(conn: Connection, sql: str, params: tuple[Any, ...] | None = None) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetch_arrow_table()


def ingest(conn: Connection, table: str, schema_name: str | None, data: pa.RecordBatchReader | pa.Table,
           mode: str = "append", temporary: bool = False) -> int:
    """Bulk-load Arrow data with binary COPY; returns rows written."""
    with conn.cursor() as cur:
        if temporary:
            return int(cur.adbc_ingest(table, data, mode=mode, temporary=True))
        return int(cur.adbc_ingest(table, data, mode=mode, db_schema_name=schema_name))


def with_retries(action: Callable[[], T], what: str, attempts: int, on_retry: Callable[[str], None] | None = None,
                 base_delay: float = 0.5) -> T:
    """Run `action`, retrying transient failures with exponential backoff and jitter."""
    for attempt in range(attempts + 1):
        try:
            return action()
        except Exception as exc:
            if not is_transient(exc) or attempt == attempts:
                if not is_transient(exc) and not isinstance(exc, adbc_driver_manager.Error):
                    raise
                engine_exc = exc if isinstance(exc, EngineError) else translate(exc, what)
                if attempt:
                    raise type(engine_exc)(f"{engine_exc} (gave up after {attempt + 1} attempts)") from None
                raise engine_exc from None
            delay = base_delay * 2**attempt * (0.5 + random.random())
            if on_retry:
                on_retry(f"{what}: {redact(str(exc).splitlines()[0])}; retry {attempt + 1}/{attempts} in {delay:.1f}s")
            time.sleep(delay)
    raise AssertionError("unreachable")
