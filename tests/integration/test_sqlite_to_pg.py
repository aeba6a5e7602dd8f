"""SQLite -> PostgreSQL: round trips compared row by row, NULL keys, empty, one-row and sparse-key tables."""

from __future__ import annotations

import datetime as dt
import random
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine import failpoints
from engine.config import load_config
from engine.errors import VerificationError
from engine.pipeline import run_job
from tests.conftest import failpoint_reached, job_toml, pg_rows, release_failpoint, sqlite_exec, write_job

ITEMS_DDL = """CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER, score REAL, name TEXT, amount NUMERIC(12,2),
    day DATE, at TIMESTAMP, data BLOB, grp INTEGER)"""
COLUMNS = ["id", "qty", "score", "name", "amount", "day", "at", "data", "grp"]
EXPECTED_TYPES = {
    "id": "bigint", "qty": "bigint", "score": "double precision", "name": "text", "amount": "numeric(12,2)",
    "day": "date", "at": "timestamp without time zone", "data": "bytea", "grp": "bigint",
}
TARGET_SELECT = "SELECT id, qty, score, name, amount::text, day, at, data, grp FROM {table} ORDER BY id"


def make_items(n: int, seed: int = 5, first_id: int = 1) -> list[dict[str, Any]]:
    """Rows whose first one is NULL in every column but the key, then edge values, then seeded random ones."""
    rng = random.Random(seed)
    edges: list[dict[str, Any]] = [
        {c: None for c in COLUMNS},
        {"qty": 2**63 - 1, "score": 1.7976931348623157e308, "name": "😀 ü 中文 'quote' \"dq\" \\", "amount": "9999999999.99",
         "day": dt.date(1, 1, 1), "at": dt.datetime(1970, 1, 1), "data": b"\x00\xff\x00", "grp": 0},
        {"qty": -(2**63), "score": -0.0, "name": "", "amount": "-9999999999.99", "day": dt.date(9999, 12, 31),
         "at": dt.datetime(9999, 12, 31, 23, 59, 59, 999999), "data": b"", "grp": -5},
        {"qty": 0, "score": 0.1, "name": "line\nbreak\ttab", "amount": "12.00", "day": dt.date(2024, 2, 29),
         "at": dt.datetime(2024, 3, 31, 2, 30, 0, 1), "data": bytes(range(256)), "grp": None},
        {"qty": 1, "score": 5e-324, "name": "NULL", "amount": "0.01", "day": dt.date(1970, 1, 1),
         "at": dt.datetime(2000, 1, 1, 12, 0, 0, 500000), "data": b"NULL", "grp": 7},
    ]
    rows = []
    for i in range(n):
        if i < len(edges):
            row = dict(edges[i])
        else:
            row = {
                "qty": rng.randint(-10**12, 10**12), "score": rng.uniform(-1e6, 1e6), "name": f"item {i} ✓ ß",
                "amount": f"{rng.randint(-10**11, 10**11) / 100:.2f}",
                "day": dt.date(1990, 1, 1) + dt.timedelta(days=rng.randint(0, 15000)),
                "at": dt.datetime(1990, 1, 1) + dt.timedelta(microseconds=rng.randint(0, 10**15)),
                "data": rng.randbytes(rng.randint(0, 30)), "grp": rng.choice([None, rng.randint(-50, 50)]),
            }
            if i % 9 == 0:
                row[COLUMNS[1 + i % (len(COLUMNS) - 1)]] = None
        row["id"] = first_id + i
        rows.append(row)
    return rows


def to_sqlite(row: dict[str, Any]) -> tuple[Any, ...]:
    values = []
    for c in COLUMNS:
        v = row[c]
        if isinstance(v, (dt.date, dt.datetime)):
            v = v.isoformat(sep=" ", timespec="microseconds") if isinstance(v, dt.datetime) else v.isoformat()
        values.append(v)
    return tuple(values)


def expected(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(f"{Decimal(row[c]):.2f}" if c == "amount" and row[c] is not None else row[c] for c in COLUMNS)


def normalise(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else v for v in row)


def write_items(db: Path, rows: list[dict[str, Any]], table: str = "items") -> None:
    sqlite_exec(db, ITEMS_DDL.replace("items", table, 1),
                many=(f"INSERT INTO {table} VALUES ({', '.join('?' * len(COLUMNS))})", [to_sqlite(r) for r in rows]))


def target_types(pg_db: str, table: str) -> dict[str, str]:
    return dict(pg_rows(pg_db, """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
        WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped""", (table,)))


def run(tmp_path: Path, name: str, db: Path, pg_db: str, table: str, target: str, extra_source: str = "",
        extra: str = "") -> Any:
    job = write_job(tmp_path, job_toml(name, f"sqlite://{db}", table, pg_db, target, extra_source=extra_source,
                                       extra=extra), name=f"{name}.toml")
    report = run_job(load_config(job))
    assert report.status == "succeeded", report.error
    return report


def assert_same_rows(pg_db: str, target: str, rows: list[dict[str, Any]]) -> None:
    got = [normalise(r) for r in pg_rows(pg_db, TARGET_SELECT.format(table=target))]
    want = [expected(r) for r in sorted(rows, key=lambda r: r["id"])]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g == w, f"row {w[0]}: " + ", ".join(
            f"{c}: {a!r} != {b!r}" for c, a, b in zip(COLUMNS, g, w, strict=True) if a != b)


def test_round_trip_is_row_for_row_identical(tmp_path: Path, pg_db: str) -> None:
    db = tmp_path / "src.db"
    rows = make_items(3000)
    write_items(db, rows)
    report = run(tmp_path, "sqlite_round_trip", db, pg_db, "items", "public.items", "partitions = 4",
                 "batch_rows = 1000")
    assert report.partitions_total == 4 and report.rows_read == report.rows_loaded == 3000
    assert target_types(pg_db, "public.items") == EXPECTED_TYPES
    assert_same_rows(pg_db, "public.items", rows)
    assert pg_rows(pg_db, "SELECT COUNT(*), SUM(rows_loaded)::bigint FROM engine.checkpoints") == [(4, 3000)]


def test_rows_with_null_partition_keys_all_arrive(tmp_path: Path, pg_db: str) -> None:
    db = tmp_path / "src.db"
    rows = make_items(1200, seed=9)
    nulls = sum(r["grp"] is None for r in rows)
    assert 0 < nulls < len(rows)
    write_items(db, rows)
    report = run(tmp_path, "sqlite_null_keys", db, pg_db, "items", "public.items",
                 'partition_on = "grp"\npartitions = 3')
    assert report.partitions_total == 4  # three ranges of grp, one for grp IS NULL
    assert report.rows_loaded == len(rows)
    assert_same_rows(pg_db, "public.items", rows)
    per_partition = pg_rows(pg_db, "SELECT lo::bigint, hi::bigint, rows_read FROM engine.checkpoints ORDER BY partition_id")
    assert per_partition[-1] == (None, None, nulls)
    assert sum(r[2] for r in per_partition) == len(rows)


def test_empty_table_creates_the_target_and_loads_nothing(tmp_path: Path, pg_db: str) -> None:
    db = tmp_path / "src.db"
    write_items(db, [])
    report = run(tmp_path, "sqlite_empty", db, pg_db, "items", "public.items", "partitions = 4")
    assert report.rows_read == report.rows_loaded == 0
    assert target_types(pg_db, "public.items") == EXPECTED_TYPES
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM public.items") == [(0,)]


def test_one_row_table(tmp_path: Path, pg_db: str) -> None:
    db = tmp_path / "src.db"
    rows = make_items(2)[1:]  # the all-values edge row only
    write_items(db, rows)
    report = run(tmp_path, "sqlite_one", db, pg_db, "items", "public.items", "partitions = 8")
    assert report.partitions_total == 1 and report.rows_loaded == 1
    assert_same_rows(pg_db, "public.items", rows)


def test_one_row_of_nulls(tmp_path: Path, pg_db: str) -> None:
    db = tmp_path / "src.db"
    rows = make_items(1)
    write_items(db, rows)
    run(tmp_path, "sqlite_one_null", db, pg_db, "items", "public.items")
    assert_same_rows(pg_db, "public.items", rows)


def test_sparse_key_loads_every_row(tmp_path: Path, pg_db: str) -> None:
    db = tmp_path / "src.db"
    rows = make_items(6, seed=2)[2:]
    for row, key in zip(rows, [1, 2, 3, 10**12], strict=True):
        row["id"] = key
    write_items(db, rows)
    report = run(tmp_path, "sqlite_sparse", db, pg_db, "items", "public.items", "partitions = 4")
    assert report.partitions_total == 4 and report.rows_loaded == 4
    assert_same_rows(pg_db, "public.items", rows)
    sql = "SELECT SUM(rows_read)::bigint, MIN(lo)::bigint, MAX(hi)::bigint FROM engine.checkpoints"
    assert pg_rows(pg_db, sql) == [(4, 1, 10**12)]


def test_a_source_row_gone_before_verification_fails_the_run_naming_the_partition(
        tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "src.db"
    write_items(db, make_items(2000))
    monkeypatch.setenv("ENGINE_FAILPOINTS", "run.before_verify=wait")  # stops between loading and verifying
    monkeypatch.setenv("ENGINE_FAILPOINTS_DIR", str(tmp_path))
    failpoints.reset()

    loaded: list[int] = []

    def delete_once_loaded() -> None:
        try:
            failpoint_reached(tmp_path, "run.before_verify")
            loaded.append(pg_rows(pg_db, "SELECT COUNT(*) FROM engine.checkpoints")[0][0])
            sqlite_exec(db, "DELETE FROM items WHERE id = 1500")
        finally:
            release_failpoint(tmp_path, "run.before_verify")

    thread = threading.Thread(target=delete_once_loaded)
    thread.start()
    job = write_job(tmp_path, job_toml("sqlite_verify", f"sqlite://{db}", "items", pg_db, "public.items",
                                       extra_source="partitions = 4"), name="verify.toml")
    try:
        with pytest.raises(VerificationError) as failed:
            run_job(load_config(job))
    finally:
        thread.join()
    assert loaded == [4]  # the row went once every partition had committed, before verification
    assert "partition 2 [1001, 1500]: the source holds 499 rows, 500 were read" in str(failed.value)
    assert pg_rows(pg_db, "SELECT status FROM engine.runs") == [("failed",)]
