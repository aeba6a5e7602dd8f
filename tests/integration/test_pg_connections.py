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


def _backend(conn: pg.Connection) -> int:
    return int(pg.fetch_all(conn, "SELECT pg_backend_pid()")[0][0])


def test_a_session_lent_again_is_reset_and_one_that_ended_is_replaced(pg_db: str) -> None:
    url = parse_url(pg_db)
    pg.close_idle_connections()
    with pg.connection(url) as conn:
        first = _backend(conn)
        pg.execute(conn, "SET search_path TO nowhere")
        pg.execute(conn, "CREATE TEMP TABLE scratch (x int)")
        conn.commit()
        pg.execute(conn, "CREATE TABLE public.left_uncommitted (x int)")
    with pg.connection(url) as conn:
        assert _backend(conn) == first  # the same session, lent again
        assert pg.fetch_all(conn, "SELECT current_setting('search_path'), to_regclass('pg_temp.scratch'), "
                                  "to_regclass('public.left_uncommitted')") == [('"$user", public', None, None)]
    pg_exec(pg_db, f"SELECT pg_terminate_backend({first})")
    with pg.connection(url) as conn:  # the idle one ended: a new one, no error
        assert _backend(conn) != first
    with pg.connection(url, autocommit=True) as conn:
        pg.execute(conn, "BEGIN")  # left open by hand: not lent again
        opened = _backend(conn)
    with pg.connection(url, autocommit=True) as conn:
        assert _backend(conn) != opened
    pg.close_idle_connections()
