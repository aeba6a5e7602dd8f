"""One consistent view of a PostgreSQL source for a whole run.

The planner opens a REPEATABLE READ transaction on the source and exports its snapshot; every partition
reader imports it (through ConnectorX's `pre_execution_query`), and planning and verification queries run
inside that transaction, so a table written during the job is copied as of one instant. The exporting
transaction must stay open while readers import it, so it lives as long as the run. A resumed run takes
a new snapshot: partitions finished before the crash were read as of the earlier one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from engine import pg
from engine.urls import DatabaseUrl

_pinned: dict[str, pg.Connection] = {}
_pinned_lock = threading.Lock()


def pinned_connection(url: DatabaseUrl) -> pg.Connection | None:
    """The run's snapshot connection for this source, if one is open."""
    with _pinned_lock:
        return _pinned.get(url.raw)


@contextmanager
def source_snapshot(url: DatabaseUrl) -> Iterator[str | None]:
    """Yield a snapshot id for PostgreSQL sources (None for others); source queries use it meanwhile."""
    if url.dialect != "postgresql":
        yield None
        return
    conn = pg.connect(url)
    try:
        pg.execute(conn, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        snapshot = str(pg.fetch_all(conn, "SELECT pg_export_snapshot()")[0][0])
        with _pinned_lock:
            _pinned[url.raw] = conn
        yield snapshot
    finally:
        with _pinned_lock:
            _pinned.pop(url.raw, None)
        try:
            conn.rollback()
            conn.close()
        except Exception:
            pass
