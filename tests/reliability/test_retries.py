"""Which errors are retried, on real servers: the errors come from PostgreSQL, MariaDB and the drivers, not
from the engine's own failpoints. Transient: connection refused, a backend terminated (what a server shutting
down or restarting does to its sessions), a serialization failure, a deadlock. Not transient: a syntax error.
And `with_retries`: exponential backoff with jitter, then "gave up after N attempts".
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from engine import pg, source
from engine.errors import SourceError, TargetError, TransientError
from engine.healing import Patience, with_retries
from engine.urls import parse_url
from tests.conftest import ROOT, pg_exec, pg_rows


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raised(action: Callable[[], Any]) -> BaseException:
    try:
        action()
    except BaseException as exc:  # ConnectorX raises Rust panics as BaseException
        return exc
    raise AssertionError("no error raised")


def driver_error(conn: pg.Connection, sql: str) -> BaseException:
    """The driver's own error for `sql` (the engine's adapter is not involved)."""
    run = pg.fetch_all if sql.startswith("SELECT") else pg.execute  # a SELECT runs until its rows are fetched
    exc = raised(lambda: run(conn, sql))
    assert pg.is_driver_error(exc), repr(exc)
    return exc


def test_connection_refused_is_transient() -> None:
    url = parse_url(f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres")
    connect_error = raised(lambda: pg.connect(url))  # the target, and a PostgreSQL source's catalog and snapshot
    assert isinstance(connect_error, TransientError) and "refused" in str(connect_error), repr(connect_error)
    assert pg.is_transient(connect_error)
    catalog = raised(lambda: source.query_rows(url, "SELECT 1"))
    assert isinstance(catalog, TransientError), repr(catalog)


def test_connection_refused_through_connectorx_is_transient() -> None:
    """A MySQL/MariaDB source is read and planned through ConnectorX, whose connection pool keeps trying for
    30 s before it reports the refusal (as "timed out waiting for connection: ... Connection refused")."""
    url = parse_url(f"mysql://root@127.0.0.1:{closed_port()}/x")
    read = raised(lambda: list(source.read_batches(url, "SELECT 1", 100, None, "reading")))
    assert isinstance(read, TransientError) and "refused" in str(read), repr(read)


TERMINATOR = """
import sys, time
from tests.conftest import pg_rows
url, marker = sys.argv[1:]
deadline = time.time() + 20
while time.time() < deadline:
    ended = pg_rows(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                         "AND state = 'active' AND query LIKE $1", (f"%{marker}%",))
    if ended:
        print(all(ok for (ok,) in ended))
        break
    time.sleep(0.02)
"""


def _terminate_when_running(url: str, marker: str) -> subprocess.Popen[str]:
    """A process that ends the backend running the query containing `marker` once it runs; prints True then.
    (Not a thread: ConnectorX holds the GIL while it waits for its query.)"""
    return subprocess.Popen([sys.executable, "-c", TERMINATOR, url, marker], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)


def test_a_backend_terminated_mid_query_is_transient(pg_db: str) -> None:
    url = parse_url(pg_db)
    marker = f"m{uuid.uuid4().hex[:8]}"
    terminator = _terminate_when_running(pg_db, marker)
    with pg.connection(url, autocommit=True) as conn:
        exc = driver_error(conn, f"SELECT pg_sleep(20), '{marker}'")
    assert terminator.communicate(timeout=30)[0].strip() == "True"
    assert getattr(exc, "sqlstate", None) == "57P01", repr(exc)  # admin_shutdown, as in a fast server shutdown
    assert pg.is_transient(exc)
    assert isinstance(pg.translate(exc, "loading"), TransientError)
    assert isinstance(source.translate(exc, "reading"), TransientError)

    marker = f"m{uuid.uuid4().hex[:8]}"  # the same through ConnectorX, the source reader
    terminator = _terminate_when_running(pg_db, marker)
    read = raised(lambda: list(source.read_batches(url, f"SELECT '{marker}' AS m FROM pg_sleep(20)", 100, None, "reading")))
    assert terminator.communicate(timeout=30)[0].strip() == "True"
    assert isinstance(read, TransientError), repr(read)


def _repeatable_read(url: str) -> pg.Connection:
    conn = pg.connect(parse_url(url), autocommit=True)
    pg.execute(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ")
    return conn


def test_a_serialization_failure_is_transient(pg_db: str) -> None:
    pg_exec(pg_db, "CREATE TABLE t (id int PRIMARY KEY, v int)", "INSERT INTO t VALUES (1, 0)")
    first, second = _repeatable_read(pg_db), _repeatable_read(pg_db)
    try:
        assert pg.fetch_all(first, "SELECT v FROM t WHERE id = 1") == [(0,)]  # takes first's snapshot
        pg.execute(second, "UPDATE t SET v = 2 WHERE id = 1")
        pg.execute(second, "COMMIT")
        exc = driver_error(first, "UPDATE t SET v = 1 WHERE id = 1")
    finally:
        first.close()
        second.close()
    assert getattr(exc, "sqlstate", None) == "40001", repr(exc)
    assert pg.is_transient(exc)
    assert isinstance(pg.translate(exc, "loading"), TransientError)


def test_a_deadlock_is_transient(pg_db: str) -> None:
    pg_exec(pg_db, "CREATE TABLE t (id int PRIMARY KEY, v int)", "INSERT INTO t VALUES (1, 0), (2, 0)")
    a, b = (pg.connect(parse_url(pg_db), autocommit=True) for _ in range(2))
    errors: list[BaseException] = []

    def lock(conn: pg.Connection, row: int) -> None:
        try:
            pg.execute(conn, f"UPDATE t SET v = v + 1 WHERE id = {row}")
        except BaseException as exc:
            errors.append(exc)
            pg.execute(conn, "ROLLBACK")  # as a retried partition does: the survivor can go on

    try:
        for conn in (a, b):
            pg.execute(conn, "BEGIN")
            pg.execute(conn, "SET LOCAL deadlock_timeout = '100ms'")
        lock(a, 1)
        lock(b, 2)
        blocked = threading.Thread(target=lock, args=(a, 2))  # waits for b
        blocked.start()
        deadline = time.time() + 20
        while time.time() < deadline and not pg_rows(pg_db, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = "
                                                            "'Lock' AND datname = current_database()"):
            time.sleep(0.02)
        lock(b, 1)  # waits for a: one of the two is chosen as the deadlock victim
        blocked.join(timeout=30)
    finally:
        a.close()
        b.close()
    assert len(errors) == 1, errors
    assert getattr(errors[0], "sqlstate", None) == "40P01", repr(errors[0])
    assert pg.is_transient(errors[0])
    assert isinstance(pg.translate(errors[0], "loading"), TransientError)


def test_a_syntax_error_is_not_transient(pg_db: str, mariadb_db: str) -> None:
    url = parse_url(pg_db)
    with pg.connection(url, autocommit=True) as conn:
        exc = driver_error(conn, "SELEC 1")
    assert getattr(exc, "sqlstate", None) == "42601", repr(exc)
    assert not pg.is_transient(exc)
    translated = pg.translate(exc, "loading")
    assert isinstance(translated, TargetError) and not isinstance(translated, TransientError)
    assert type(source.translate(exc, "reading")) is SourceError
    for db in (url, parse_url(mariadb_db)):  # ConnectorX, both dialects
        read = raised(partial(lambda u: list(source.read_batches(u, "SELEC 1", 100, None, "reading")), db))
        assert type(read) is SourceError, f"{db}: {read!r}"
    calls = [0]

    def bad_sql() -> None:
        calls[0] += 1
        with pg.connection(url, autocommit=True) as conn:
            pg.execute(conn, "SELEC 1")

    retried: list[str] = []
    with pytest.raises(TargetError, match="syntax error") as info:
        with_retries(bad_sql, "loading", Patience(3, base_delay=0.01), retried.append)
    assert not isinstance(info.value, TransientError)
    assert calls == [1] and retried == []  # failed at once, no retry


def test_retries_back_off_exponentially_with_jitter_then_give_up() -> None:
    url = parse_url(f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres")  # refused every time
    base, attempts = 0.05, 3
    normalised: dict[int, list[float]] = {k: [] for k in range(attempts)}
    for _ in range(8):
        calls: list[float] = []
        retried: list[str] = []

        def connect(calls: list[float] = calls) -> pg.Connection:
            calls.append(time.monotonic())
            return pg.connect(url)

        with pytest.raises(TransientError) as info:
            with_retries(connect, "connecting to the target", Patience(attempts, base_delay=base), retried.append)
        assert len(calls) == attempts + 1
        assert f"(gave up after {attempts + 1} attempts)" in str(info.value) and "refused" in str(info.value)
        assert [m.split("; ")[1].split(" in ")[0] for m in retried] == [f"retry {k}/{attempts}" for k in
                                                                         range(1, attempts + 1)]
        assert all(m.startswith("connecting to the target: ") and "refused" in m for m in retried), retried
        for k, (before, after) in enumerate(zip(calls, calls[1:], strict=False)):
            normalised[k].append((after - before) / (base * 2**k))  # the wait before retry k+1, in base * 2^k
    for k, values in normalised.items():
        # The k-th wait is base * 2^k times a random factor in [0.5, 1.5): never less (a sleep does not end
        # early), more only by scheduling noise.
        assert min(values) >= 0.5, (k, values)
        assert max(values) < 1.5 + 0.25 / 2**k, (k, values)
    factors = [v for values in normalised.values() for v in values]
    assert min(factors) < 0.85, f"no wait shorter than its base: no jitter? {factors}"
    assert len({round(v, 2) for v in factors}) > len(factors) // 2, factors
