"""Rows the target refuses are isolated without overflowing PostgreSQL's subtransaction cache, and a partition
with more refused rows than the limit fails."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from engine import pg, refused
from engine.errors import TargetError
from engine.model import LoadTarget
from engine.quarantine import RejectedRow
from engine.sql import TableName
from engine.urls import parse_url
from tests.conftest import pg_exec, pg_rows

TARGET = LoadTarget(TableName("public", "t"), TableName("public", "t"), "append", ("id",),
                    (("id", "bigint"), ("v", "integer")))


def _batches(rows: int, bad_every: int, batch_rows: int = 8192) -> Iterator[pa.RecordBatch]:
    """Rows whose v is negative every `bad_every` rows (the table's CHECK refuses them)."""
    for start in range(0, rows, batch_rows):
        ids = list(range(start, min(start + batch_rows, rows)))
        yield pa.record_batch([pa.array(ids, pa.int64()), pa.array([-1 if i % bad_every == 0 else i for i in ids],
                                                                   pa.int32())], names=["id", "v"])


def _suboverflowed(url: str) -> bool:
    """Whether a snapshot taken now on the server is marked overflowed: some running transaction holds more
    subtransactions than PostgreSQL caches (read from the exported snapshot's file, which says `sof:`)."""
    pg_rows(url, "SELECT txid_current()")  # a later transaction: the snapshot must then account for ours
    conn = pg.connect(parse_url(url))
    try:
        pg.execute(conn, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        snapshot = pg.fetch_all(conn, "SELECT pg_export_snapshot()")[0][0]
        text = pg.fetch_all(conn, "SELECT pg_read_file('pg_snapshots/' || $1)", (snapshot,))[0][0]
        return "sof:1" in text
    finally:
        conn.rollback()
        conn.close()


def _load(url: str, rows: int, bad_every: int) -> tuple[int, list[RejectedRow], bool]:
    conn = pg.savepoint_connection(parse_url(url))
    try:
        found: list[RejectedRow] = []
        loaded = refused.write_isolating(conn, TARGET, _batches(rows, bad_every), found)
        overflowed = _suboverflowed(url)  # while the partition's transaction is still open
        pg.execute(conn, "COMMIT")
        return loaded, found, overflowed
    finally:
        pg.drop_connection(conn)


def test_a_thousand_refused_rows_are_isolated_without_overflowing_the_subtransaction_cache(pg_db: str) -> None:
    pg_exec(pg_db, "CREATE TABLE public.t (id bigint PRIMARY KEY, v integer CHECK (v >= 0))")
    assert not _suboverflowed(pg_db)
    loaded, found, overflowed = _load(pg_db, 100_000, bad_every=100)  # 1,000 refused, spread over 2 groups
    assert not overflowed
    assert (loaded, len(found)) == (99_000, 1_000)
    assert {r.condition for r in found} == {"check_violation"}
    assert sorted(r.row.column("id")[0].as_py() for r in found) == list(range(0, 100_000, 100))
    assert pg_rows(pg_db, "SELECT COUNT(*), COUNT(*) FILTER (WHERE v < 0), SUM(id)::bigint FROM public.t") == [
        (99_000, 0, sum(range(100_000)) - sum(range(0, 100_000, 100)))]


def test_the_cache_check_sees_an_overflowing_transaction(pg_db: str) -> None:
    """The check above can fail: 70 released savepoints that wrote overflow the cache."""
    pg_exec(pg_db, "CREATE TABLE public.t (id bigint PRIMARY KEY, v integer)")
    conn = pg.savepoint_connection(parse_url(pg_db))
    try:
        for i in range(70):
            pg.execute(conn, "SAVEPOINT s")
            pg.execute(conn, f"INSERT INTO public.t VALUES ({i}, {i})")
            pg.execute(conn, "RELEASE SAVEPOINT s")
        assert _suboverflowed(pg_db)
    finally:
        pg.drop_connection(conn)


def test_more_refused_rows_than_the_limit_fail_the_partition(pg_db: str) -> None:
    pg_exec(pg_db, "CREATE TABLE public.t (id bigint PRIMARY KEY, v integer CHECK (v >= 0))")
    with pytest.raises(TargetError, match="refused more than 1,000 rows of this partition .*rerun to resume"):
        _load(pg_db, 3_000, bad_every=2)
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM public.t") == [(0,)]
