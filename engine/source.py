"""The source adapter: the only module that imports ConnectorX.

Reads rows as Arrow (a partition as a stream of batches, small catalog and aggregate queries as lists), holds
the run's snapshot of a PostgreSQL source, and translates every driver error, once, into the engine's tree:
`TransientError` when the connection was lost or refused, `SourceError` otherwise.

One consistent view of a PostgreSQL source for a whole run: `source_snapshot` opens a REPEATABLE READ
transaction and exports its snapshot; every partition reader imports it (through ConnectorX's
`pre_execution_query`), and planning and verification queries run inside that transaction, so a table written
during the job is copied as of one instant. The exporting transaction must stay open while readers import it,
so it lives as long as the run. A resumed run takes a new snapshot: partitions finished before were read as of
the earlier one. If that session ends mid-run (a restart, a failover, a terminated backend, an idle timeout),
reads fail with `SnapshotLost` and the run may `retake` one (`engine.pipeline` decides, by `source.snapshot`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit, urlunsplit

import connectorx as cx
import pyarrow as pa

from engine import pg
from engine.errors import SnapshotLost, SourceError, TransientError, sounds_transient
from engine.urls import DatabaseUrl, redact

Reader = Literal["connectorx", "adbc", "copy"]  # copy: engine.passthrough; its fallback reads as connectorx

_PG_TEXT_SETTINGS = [
    # Values that travel as text must read back the same in any target session: ISO dates, intervals with
    # a sign on every part, floats with every digit, bytea in hex, times with an explicit UTC offset.
    "SET DateStyle = 'ISO, YMD'", "SET IntervalStyle = 'postgres'", "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'", "SET TimeZone = 'UTC'",
]


def translate(exc: BaseException, what: str) -> SourceError | TransientError:
    """A driver error (ConnectorX raises Rust panics as BaseException) as the engine's, secret-free."""
    message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    if "invalid snapshot identifier" in message:
        return SnapshotLost(f"{what}: the run's source snapshot is gone ({message})")
    if isinstance(exc, TransientError) or pg.is_transient(exc) or sounds_transient(message):
        return TransientError(f"{what}: {message}")
    return SourceError(f"{what}: {message}")


# Sources whose server answered the run's snapshot session in plain text although it asked for TLS if available
# (sslmode absent or "prefer", libpq's default). ConnectorX, asked the same, builds a TLS context from the system's
# certificates for every read (≈5 ms of CPU here, against under 1 ms for the rest of opening a read) only to fall
# back to plain text as well; told "disable" for the run, it skips that and ends up on the same plain session.
_PLAIN: set[str] = set()


def _tls_if_available(url: DatabaseUrl) -> bool:
    modes = parse_qs(urlsplit(url.raw).query).get("sslmode", [])
    return not modes or modes[-1] == "prefer"


def connectorx_url(url: DatabaseUrl) -> str:
    """The URL ConnectorX connects with: `sslmode=disable` added while the run knows the server refuses TLS."""
    if url.raw not in _PLAIN:
        return url.connectorx
    parts = urlsplit(url.connectorx)
    query = [p for p in parts.query.split("&") if p and not p.startswith("sslmode=")] + ["sslmode=disable"]
    return urlunsplit(parts._replace(query="&".join(query)))


def _is_interrupt(exc: BaseException) -> bool:
    return isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit))


def session_setup(url: DatabaseUrl, snapshot: str | None = None) -> list[str] | None:
    """Statements run before a read: UTC for MySQL timestamps; text settings and the run's snapshot for
    PostgreSQL."""
    if url.dialect == "mysql":
        return ["SET time_zone = '+00:00'"]
    if url.dialect == "postgresql":
        snapshot_sql = ["BEGIN ISOLATION LEVEL REPEATABLE READ", f"SET TRANSACTION SNAPSHOT '{snapshot}'"]
        return _PG_TEXT_SETTINGS + (snapshot_sql if snapshot else [])
    return None


# ADBC sizes its batches in bytes: `batch_rows` rows of this many bytes each. Only the batch count per partition
# depends on it, but every batch costs a pass of each stage (the validation rules above all): at 128 bytes the
# reference rows (≈510 bytes) came in batches of ≈2,000 rows, and the run spent 15–20% more CPU than at 512
# (`make perf` cases `engine-adbc` against `engine-adbc:pipeline.batch_rows=2048`, which asks for the old
# bytes). Narrow rows get more rows a batch, never more bytes.
_ADBC_ROW_BYTES = 512


def read_batches(url: DatabaseUrl, sql: str, batch_rows: int, snapshot: str | None, what: str,
                 reader: Reader = "connectorx") -> Iterator[pa.RecordBatch]:
    """The rows of `sql` as a stream of Arrow batches (memory bounded by the batch size, not the result's).

    `reader = "adbc"` (PostgreSQL only) reads through the ADBC driver's COPY-based reader instead of
    ConnectorX, in a session set up the same way; the batches' types may differ (e.g. numeric as text), and
    the extract stage converts them to the plan's flight types either way."""
    kwargs: dict[str, Any] = {}
    setup = session_setup(url, snapshot)
    if setup:
        kwargs["pre_execution_query"] = setup
    if url.sqlite_path is not None and not url.sqlite_path.is_file():
        raise SourceError(f"SQLite file {url.sqlite_path} does not exist")
    try:
        if reader == "adbc":
            assert url.dialect == "postgresql", "the ADBC reader reads PostgreSQL sources only"
            yield from pg.stream_batches(url, setup or [], sql, batch_rows * _ADBC_ROW_BYTES)
            return
        stream = cx.read_sql(connectorx_url(url), sql, return_type="arrow_stream", batch_size=batch_rows, **kwargs)
        yield from stream
    except (SourceError, TransientError):
        raise
    except BaseException as exc:
        if _is_interrupt(exc):
            raise
        raise translate(exc, what) from None


def unreachable(url: DatabaseUrl) -> str | None:
    """Why the source or target server at `url` does not answer now, or None when it does (a fresh session)."""
    if url.dialect == "postgresql":
        return pg.unreachable(url.libpq)
    if url.dialect != "mysql":
        return None
    try:
        cx.read_sql(url.connectorx, "SELECT 1 AS up", return_type="arrow")
        return None
    except BaseException as exc:
        if _is_interrupt(exc):
            raise
        return redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def result_schema(url: DatabaseUrl, sql: str, what: str) -> pa.Schema:
    """The Arrow schema ConnectorX gives the rows of `sql` (run it with LIMIT 0)."""
    try:
        return cx.read_sql(connectorx_url(url), sql, return_type="arrow").schema
    except BaseException as exc:
        if _is_interrupt(exc):
            raise
        raise translate(exc, what) from None


def query_rows(url: DatabaseUrl, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run a small catalog or aggregate query on the source (inside the run's snapshot, when there is one)."""
    try:
        if url.dialect == "postgresql":
            pinned = pinned_connection(url)
            if pinned is not None:
                with _pinned_use:  # one session: partitions (reconcile rules) take turns
                    return pg.fetch_all(pinned, sql, params)
            with pg.connection(url, autocommit=True) as conn:
                return pg.fetch_all(conn, sql, params)
        if url.dialect == "sqlite":
            if not url.sqlite_path or not url.sqlite_path.exists():
                raise SourceError(f"SQLite file {url.sqlite_path} does not exist")
            with sqlite3.connect(f"file:{url.sqlite_path}?mode=ro", uri=True) as conn:
                return list(conn.execute(sql, params).fetchall())
        assert not params, "MySQL catalog queries take no parameters"
        table = cx.read_sql(url.connectorx, sql, return_type="arrow")
        return [tuple(row.values()) for row in table.to_pylist()]
    except SourceError:
        raise
    except Exception as exc:
        raise _source_error(exc, f"source query failed on {url}") from None


def _source_error(exc: BaseException, what: str) -> SourceError | TransientError:
    """A driver's error as the run handles it: transient (waited out, retried) or the source's to report."""
    error = translate(exc, what)
    return error if isinstance(error, TransientError) else SourceError(str(error))


@dataclass
class Snapshot:
    """The run's exported snapshot of a PostgreSQL source and the session that holds it open."""

    url: DatabaseUrl
    table: str | None = None  # the source table, quoted: its share lock keeps TRUNCATE and DDL off it meanwhile
    id: str = ""
    taken_at: float = 0.0
    conn: pg.Connection | None = field(default=None, repr=False)

    def take(self) -> str:
        """Export a new snapshot from a new session (the old one, if any, is let go)."""
        with _pinned_use:
            return self._take()

    def _take(self) -> str:
        self.release()
        conn = pg.connect(self.url)
        try:
            # The session sits idle in its transaction for the whole run: no idle timeout may end it.
            pg.execute(conn, "SET application_name = 'engine snapshot'")
            pg.execute(conn, "SET idle_in_transaction_session_timeout = 0")
            conn.commit()
            pg.execute(conn, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            self.id = str(pg.fetch_all(conn, "SELECT pg_export_snapshot()")[0][0])
            if self.table:
                pg.execute(conn, f"LOCK TABLE {self.table} IN ACCESS SHARE MODE")
            tls = pg.fetch_all(conn, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        except Exception as exc:
            _close(conn)
            raise pg.translate(exc, f"exporting a snapshot of {self.url}", SourceError) from None
        self.conn, self.taken_at = conn, time.time()
        _pin(self.url, conn)
        if _tls_if_available(self.url) and bool(tls) and not tls[0][0]:  # the server has TLS off
            _PLAIN.add(self.url.raw)
        return self.id

    def lost(self) -> str | None:
        """Why the session holding the snapshot is gone, or None while it holds it."""
        if self.conn is None:
            return "no session holds it"
        try:
            with _pinned_use:
                pg.fetch_all(self.conn, "SELECT 1")
            return None
        except Exception as exc:
            text = str(exc).strip()
            return "the session holding it ended: " + redact(text.splitlines()[0] if text else type(exc).__name__)

    def release(self) -> None:
        with _pinned_use:
            self._release()

    def _release(self) -> None:
        if self.conn is not None:
            if _unpin(self.url, self.conn):
                _PLAIN.discard(self.url.raw)
            _close(self.conn)
        self.conn = None


def _close(conn: pg.Connection) -> None:
    try:
        conn.rollback()
        conn.close()
    except Exception:
        pass


_pinned: dict[str, pg.Connection] = {}
_pinned_lock = threading.Lock()
# One statement at a time on the snapshot's session (the driver's sessions are not for two threads at once):
# source queries, the checks that it still lives, and taking or letting it go, from every run of this process.
_pinned_use = threading.RLock()


def _pin(url: DatabaseUrl, conn: pg.Connection) -> None:
    with _pinned_lock:
        _pinned[url.raw] = conn


def _unpin(url: DatabaseUrl, conn: pg.Connection) -> bool:
    """Let `conn` go as the source's pinned session, if it still is (True then)."""
    with _pinned_lock:
        if _pinned.get(url.raw) is not conn:
            return False
        del _pinned[url.raw]
        return True


def pinned_connection(url: DatabaseUrl) -> pg.Connection | None:
    """The run's snapshot connection for this source, if one is open."""
    with _pinned_lock:
        return _pinned.get(url.raw)


@contextmanager
def one_session(url: DatabaseUrl) -> Iterator[None]:
    """Source queries made meanwhile share one session of a PostgreSQL source (the snapshot's, when one is open):
    reading the catalog of many tables opens one connection, not one a query."""
    if url.dialect != "postgresql" or pinned_connection(url) is not None:
        yield
        return
    try:
        conn = pg.connect(url, autocommit=True)
    except Exception as exc:
        raise _source_error(exc, f"cannot connect to the source {url}") from None
    _pin(url, conn)
    try:
        yield
    finally:
        with _pinned_use:
            _unpin(url, conn)
        _close(conn)


_shared: dict[str, Snapshot] = {}


@contextmanager
def source_snapshot(url: DatabaseUrl, table: str | None = None) -> Iterator[Snapshot | None]:
    """The run's snapshot for PostgreSQL sources (None for others); source queries use it meanwhile. Its session
    holds a share lock on `table` (quoted; several, comma-separated), as any read would, so TRUNCATE or DDL on it
    wait for the run. Inside `shared_snapshot` of the same source, the shared one is used (and kept)."""
    if url.dialect != "postgresql":
        yield None
        return
    if url.raw in _shared:
        yield _shared[url.raw]
        return
    snapshot = Snapshot(url, table)
    snapshot.take()
    try:
        yield snapshot
    finally:
        snapshot.release()


@contextmanager
def shared_snapshot(url: DatabaseUrl, tables: str | None = None) -> Iterator[Snapshot | None]:
    """One snapshot for every run started meanwhile against this source: a whole database read as of one
    instant, so a child row never arrives without the parent row it had in the source."""
    with source_snapshot(url, tables) as snapshot:
        if snapshot is None:
            yield None
            return
        _shared[url.raw] = snapshot
        try:
            yield snapshot
        finally:
            _shared.pop(url.raw, None)


def as_table(batches: list[pa.RecordBatch]) -> pa.Table:
    """Batches read by `read_batches` as one table (an empty one when the query returned no batch)."""
    if batches:
        return pa.Table.from_batches(batches)
    return pa.table({})
