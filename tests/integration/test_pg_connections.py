"""Target connections share one ADBC database per URL; a run drops the cache so it sees types created since."""

from __future__ import annotations

import pyarrow as pa

from engine import pg
from engine.urls import parse_url
from tests.conftest import pg_exec


def _mood_type(url: str) -> pa.DataType:
    conn = pg.connect(parse_url(url))
    try:
        return pg.fetch_arrow(conn, "SELECT 'ok'::mood AS m").schema.field("m").type
    finally:
        conn.close()


def test_types_created_after_the_cache_need_forget_databases(pg_db: str) -> None:
    pg.forget_databases()
    conn = pg.connect(parse_url(pg_db))  # caches the database, with the type catalog of this moment
    conn.close()
    pg_exec(pg_db, "CREATE TYPE mood AS ENUM ('ok', 'sad')")
    assert _mood_type(pg_db) != pa.string()  # the cached catalog does not know the new type
    pg.forget_databases()  # what every run does first
    assert _mood_type(pg_db) == pa.string()


def test_connections_of_one_url_share_a_database_and_outlive_forgetting_it(pg_db: str) -> None:
    pg.forget_databases()
    first, second = pg.connect(parse_url(pg_db)), pg.connect(parse_url(pg_db), autocommit=True)
    try:
        assert first._db is second._db
        pg.forget_databases()
        assert pg.fetch_all(first, "SELECT 1") == [(1,)]  # still open on the forgotten database
        third = pg.connect(parse_url(pg_db))
        assert third._db is not first._db
        third.close()
    finally:
        first.close()
        second.close()
