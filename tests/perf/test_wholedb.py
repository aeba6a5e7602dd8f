"""The whole-database perf case's own parts: the star schema built alike in both servers, and the check of a copy
(a pg_dump/pg_restore copy matches; the same copy less one index, or with a sequence set back, differs)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from perf.db import Server, mysql_exec, pg_exec
from perf.wholedb import (
    FOREIGN_KEYS,
    INDEXES,
    TABLES,
    DbCase,
    StarContext,
    check_copy,
    ensure_mysql_star,
    ensure_pg_star,
    mariadb_limit_db,
    pgdump_db_pg,
    sizes,
    targets,
)
from tests.conftest import IN_CI

ROWS = 2_000  # in all, over the seven tables


def _split(url: str) -> tuple[Server, str]:
    base, name = url.rsplit("/", 1)
    return Server(base), name


def _mysql_catalog(server: Server, database: str) -> tuple[dict[str, int], int, int, int]:
    """Rows per table, non-primary indexes (unique, others) and foreign keys of the MariaDB source."""
    counts = {t.name: int(mysql_exec(server, database, f"SELECT count(*) FROM {t.name}")[0][0]) for t in TABLES}
    unique, other = mysql_exec(server, None, "SELECT sum(NON_UNIQUE = 0), sum(NON_UNIQUE = 1) FROM (SELECT DISTINCT "
                                             "TABLE_NAME, INDEX_NAME, NON_UNIQUE FROM information_schema.STATISTICS "
                                             f"WHERE TABLE_SCHEMA = '{database}' AND INDEX_NAME <> 'PRIMARY') AS i")[0]
    fks = mysql_exec(server, None, "SELECT count(*) FROM information_schema.REFERENTIAL_CONSTRAINTS "
                                   f"WHERE CONSTRAINT_SCHEMA = '{database}'")[0][0]
    return counts, int(unique), int(other), int(fks)


def test_star_schema_is_built_alike_and_the_check_tells_a_copy_that_differs(
        pg_source: str, pg_db: str, mariadb_db: str, tmp_path: Path) -> None:
    pg, source = _split(pg_source)
    mysql, my_source = _split(mariadb_db)
    said: list[str] = []
    for _ in range(2):  # the second time finds both complete and reuses them
        ensure_pg_star(pg, source, ROWS, said.append)
        ensure_mysql_star(mysql, my_source, ROWS, said.append)
    assert [m.split()[0] for m in said] == ["generating", "generating", "reusing", "reusing"], said
    assert sum(sizes(ROWS).values()) == ROWS
    # MariaDB holds what PostgreSQL holds: no index InnoDB added by itself for a foreign key
    assert _mysql_catalog(mysql, my_source) == (sizes(ROWS), sum(i.unique for i in INDEXES),
                                                sum(not i.unique for i in INDEXES), len(FOREIGN_KEYS))
    assert check_copy(pg_source, "public", ROWS) == []  # the source itself is what the check expects

    ctx = StarContext(pg, mysql, ROWS, source, _split(pg_db)[1], workdir=tmp_path)
    case = pgdump_db_pg(ctx)
    _copy_into_fresh_target(case, ctx)
    assert check_copy(pg_db, case.schema, ROWS) == []

    pg_exec(pg_db, "DROP INDEX public.orders_orderdate_idx",
            "SELECT setval(pg_get_serial_sequence('public.customer', 'c_custkey'), 3)")
    assert check_copy(pg_db, case.schema, ROWS) == [
        f"customer.c_custkey: sequence's next value 4 <= max key {sizes(ROWS)['customer']}",
        "orders: 1 secondary index(es), expected 2"]
    assert check_copy(pg_db, "star", ROWS)[0].startswith("tables missing: customer, lineitem")  # wrong schema

    # MariaDB's own floor makes the same copy, with what PostgreSQL does itself (the source there has its own name)
    floor = mariadb_limit_db(StarContext(pg, mysql, ROWS, my_source, ctx.dst_db, workdir=tmp_path))
    _copy_into_fresh_target(floor, ctx)
    assert check_copy(pg_db, floor.schema, ROWS) == []


def _copy_into_fresh_target(case: DbCase, ctx: StarContext) -> None:
    """Run `case` into a fresh target database, as the suite does (a case this machine cannot run is skipped
    here, never under CI)."""
    if case.skip and not IN_CI:
        pytest.skip(case.skip)
    case.reset(ctx)
    done = subprocess.run(case.argv, capture_output=True, text=True, timeout=300, env={**os.environ, **case.env})
    assert done.returncode == 0, done.stderr[-2000:]


def test_targets_set_the_mariadb_aim_against_the_source_floor() -> None:
    def row(case: str, seconds: float) -> dict[str, object]:
        return {"case": case, "wall_s_median": seconds, "baseline": None, "ratio_to_baseline": None}

    said = targets([row("pgloader-db-mysql", 24.0), row("engine-db-mysql", 16.0), row("mariadb-limit-db", 10.0)])
    assert said[0].endswith("(target >= 3x: NOT met)")
    assert "means 8.00 s" in said[1] and "below the floor" in said[1]
    assert said[2] == "- engine-db-mysql takes 1.60x mariadb-limit-db's time"
    assert "above the floor" in targets([row("pgloader-db-mysql", 36.0), row("mariadb-limit-db", 10.0)])[1]



def test_many_tables_database_is_built_once_and_an_engine_copy_matches_it(pg_source: str, pg_db: str,
                                                                         tmp_path: Path) -> None:
    from perf.manytables import check_many, ensure_pg_many
    from perf.wholedb import engine_db_pg

    pg, source = _split(pg_source)
    said: list[str] = []
    for _ in range(2):
        ensure_pg_many(pg, source, 5, said.append)
    assert [m.split()[0] for m in said] == ["generating", "reusing"], said
    assert check_many(pg_source, "public", 5) == []

    ctx = StarContext(pg, Server("mysql://root@127.0.0.1:3306"), 5, source, _split(pg_db)[1], workdir=tmp_path)
    case = engine_db_pg(ctx)
    done = subprocess.run(case.argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert check_many(pg_db, case.schema, 5) == []
    pg_exec(pg_db, f"DROP INDEX {case.schema}.t003_created_idx", f"ALTER TABLE {case.schema}.t004 DROP CONSTRAINT "
                   "t004_parent_id_fkey")
    assert check_many(pg_db, case.schema, 5) == ["t003: keys/indexes/foreign keys (1, 0, 1)",
                                                 "t004: keys/indexes/foreign keys (1, 1, 0)"]
