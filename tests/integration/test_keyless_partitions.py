"""Parallel reads of tables without an integer key: a SQLite table by its rowid, a MariaDB/MySQL table by
ranges of a primary key of any orderable type (text, composite, UUID), cut at keys walked in key order; every
row in exactly one partition. A table with no key at all stays one partition."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from engine.config import load_config
from engine.extract import read_partition
from engine.pipeline import run_job
from engine.plan import make_plan
from tests.conftest import job_toml, mariadb_connect, mariadb_exec, pg_rows, sqlite_exec, write_job


def _job(tmp_path: Path, src: str, dst: str, table: str, source: str = "partitions = 5") -> Path:
    return write_job(tmp_path, job_toml(f"keyless_{table}", src, table, dst, f"public.{table}", extra_source=source))


def _every_row_once(config_path: Path) -> list[tuple[object, ...]]:
    """Read every partition of the plan; return the rows (as tuples), checking none is read twice."""
    config = load_config(config_path)
    plan = make_plan(config)
    rows = [r for p in plan.partitions for b in read_partition(plan, p, config.source_url, 1000)
            for r in zip(*(c.to_pylist() for c in b.columns), strict=True)]
    assert len(rows) == len(set(rows)), "a row was read twice"
    return rows


# ------------------------------------------------------------------------------------------------------ SQLite

def test_a_sqlite_table_without_an_integer_key_is_split_by_rowid(tmp_path: Path, pg_db: str) -> None:
    db = tmp_path / "src.db"
    names = [f"name {i:05d} 'q\" `" for i in range(3000)]
    random.Random(1).shuffle(names)
    sqlite_exec(db, "CREATE TABLE people (name TEXT PRIMARY KEY, n INTEGER)",
                many=("INSERT INTO people VALUES (?, ?)", [(s, i) for i, s in enumerate(names)]))
    sqlite_exec(db, "DELETE FROM people WHERE n % 7 = 0")  # gaps in the rowids
    path = _job(tmp_path, f"sqlite:///{db}", pg_db, "people")
    plan = make_plan(load_config(path))
    assert plan.key == "rowid" and len(plan.partitions) == 5
    report = run_job(load_config(path))
    assert report.status == "succeeded" and report.rows_loaded == 3000 - 429, report.error
    assert sorted(pg_rows(pg_db, "SELECT name, n FROM public.people")) == sorted(
        (s, i) for i, s in enumerate(names) if i % 7)


def test_a_column_named_rowid_moves_the_split_to_another_name(tmp_path: Path) -> None:
    db = tmp_path / "src.db"
    sqlite_exec(db, "CREATE TABLE t (rowid TEXT, v TEXT)",
                many=("INSERT INTO t VALUES (?, ?)", [("same", str(i)) for i in range(100)]))
    path = _job(tmp_path, f"sqlite:///{db}", "postgresql://unused/x", "t")
    assert make_plan(load_config(path)).key == "_rowid_"
    assert len(_every_row_once(path)) == 100


def test_a_without_rowid_table_is_one_partition(tmp_path: Path) -> None:
    db = tmp_path / "src.db"
    sqlite_exec(db, "CREATE TABLE w (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID",
                many=("INSERT INTO w VALUES (?, ?)", [(str(i), str(i)) for i in range(100)]))
    path = _job(tmp_path, f"sqlite:///{db}", "postgresql://unused/x", "w")
    assert [p.label() for p in make_plan(load_config(path)).partitions] == ["whole source"]


# ------------------------------------------------------------------------------------------- MariaDB / MySQL


def _mariadb_copy(tmp_path: Path, mariadb_db: str, pg_db: str, table: str, columns: str, partitions: int = 5
                  ) -> None:
    path = _job(tmp_path, mariadb_db, pg_db, table, f"partitions = {partitions}")
    plan = make_plan(load_config(path))
    assert {p.kind for p in plan.partitions} == {"keyset"} and len(plan.partitions) >= 3, \
        [p.label() for p in plan.partitions]
    rows = _every_row_once(path)
    report = run_job(load_config(path))
    assert report.status == "succeeded" and report.rows_loaded == len(rows), report.error
    assert f"{len(plan.partitions)} partition(s)" in report.verification
    source = _mariadb_rows(mariadb_db, f"SELECT {columns} FROM {table}")
    assert sorted(pg_rows(pg_db, f"SELECT {columns} FROM public.{table}")) == sorted(source)
    assert len(source) == len(rows)


def _mariadb_rows(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = mariadb_connect(url.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


@pytest.mark.mariadb
def test_a_text_key_with_skew_and_a_case_insensitive_collation(tmp_path: Path, mariadb_db: str, pg_db: str) -> None:
    """Nine rows in ten share a long prefix; the column's collation (Danish: 'aa' sorts after 'z', case
    ignored) orders keys unlike bytes and unlike the server's default collation; keys hold quotes, backslashes
    and backticks (rendered as hex, never pasted)."""
    keys = [f"{'Zz' if i % 10 else 'aa' if i % 4 else 'a'}-{'common-prefix-' * 3 if i % 10 else ''}{i:05d}'\\`"
            f"{'B' if i % 3 else 'b'}" for i in range(4000)]
    mariadb_exec(mariadb_db, "CREATE TABLE t_text (k VARCHAR(100) COLLATE utf8mb4_danish_ci PRIMARY KEY, n INT)",
                 many=("INSERT INTO t_text VALUES (%s, %s)", [(k, i) for i, k in enumerate(keys)]))
    mariadb_exec(mariadb_db, "ANALYZE TABLE t_text")
    _mariadb_copy(tmp_path, mariadb_db, pg_db, "t_text", "k, n")


@pytest.mark.mariadb
def test_a_composite_key(tmp_path: Path, mariadb_db: str, pg_db: str) -> None:
    """The first column in a binary collation with mixed case ('B' sorts before 'a'), the second an integer."""
    rows = [(f"region {'aBc'[i % 3]}", i // 3 if i % 5 else -i, f"v{i}") for i in range(3000)]
    mariadb_exec(mariadb_db, "CREATE TABLE t_comp (region VARCHAR(20) COLLATE utf8mb4_bin, seq INT, v TEXT, "
                             "PRIMARY KEY (region, seq))",
                 many=("INSERT INTO t_comp VALUES (%s, %s, %s)", rows))
    mariadb_exec(mariadb_db, "ANALYZE TABLE t_comp")
    _mariadb_copy(tmp_path, mariadb_db, pg_db, "t_comp", "region, seq, v")


@pytest.mark.mariadb
@pytest.mark.parametrize("kind", ["BINARY(16)", "CHAR(36)"])
def test_a_uuid_key(kind: str, tmp_path: Path, mariadb_db: str, pg_db: str) -> None:
    ids = [uuid.UUID(int=random.Random(i).getrandbits(128)) for i in range(3000)]
    values = [(u.bytes if kind.startswith("BINARY") else str(u), i) for i, u in enumerate(ids)]
    mariadb_exec(mariadb_db, f"CREATE TABLE t_uuid (id {kind} PRIMARY KEY, n INT)",
                 many=("INSERT INTO t_uuid VALUES (%s, %s)", values))
    mariadb_exec(mariadb_db, "ANALYZE TABLE t_uuid")
    _mariadb_copy(tmp_path, mariadb_db, pg_db, "t_uuid", "n")


@pytest.mark.mariadb
def test_a_table_without_a_key_is_one_partition(tmp_path: Path, mariadb_db: str, pg_db: str) -> None:
    mariadb_exec(mariadb_db, "CREATE TABLE t_none (v VARCHAR(10), n INT)",
                 many=("INSERT INTO t_none VALUES (%s, %s)", [("x", i) for i in range(500)]))
    path = _job(tmp_path, mariadb_db, pg_db, "t_none")
    assert [p.label() for p in make_plan(load_config(path)).partitions] == ["whole source"]
    report = run_job(load_config(path))
    assert report.status == "succeeded" and report.rows_loaded == 500, report.error
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM public.t_none") == [(500,)]
