"""MariaDB/MySQL -> PostgreSQL: every common column type compared value by value against what was inserted."""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.pipeline import run_job
from tests.conftest import job_toml, mariadb_connect, mariadb_exec, pg_rows, write_job

pytestmark = pytest.mark.mariadb

UTC = dt.UTC
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))

TYPES_DDL = """CREATE TABLE kinds (
    id int NOT NULL PRIMARY KEY,
    flag tinyint(1),
    si int,
    ui int unsigned,
    ub bigint unsigned,
    d12 decimal(12,2),
    d30 decimal(30,10),
    dbl double,
    v varchar(50),
    txt text,
    day date,
    dtm datetime(6),
    ts timestamp(6) NULL DEFAULT NULL,
    doc json,
    status enum('new','paid','shipped'),
    bin blob
) CHARACTER SET utf8mb4"""

COLUMNS = ["id", "flag", "si", "ui", "ub", "d12", "d30", "dbl", "v", "txt", "day", "dtm", "ts", "doc", "status", "bin"]

# What each column must become in PostgreSQL.
EXPECTED_TYPES = {
    "id": "integer", "flag": "smallint", "si": "integer", "ui": "bigint", "ub": "numeric(20,0)",
    "d12": "numeric(12,2)", "d30": "numeric(30,10)", "dbl": "double precision", "v": "character varying(50)",
    "txt": "text", "day": "date", "dtm": "timestamp without time zone", "ts": "timestamp with time zone",
    "doc": "jsonb", "status": "text", "bin": "bytea",
}

# Read the target as text where text is the exact form, as Python values elsewhere.
TARGET_SELECT = """SELECT id, flag, si, ui, ub::text, d12::text, d30::text, dbl, v, txt, day, dtm, ts, doc::text,
    status, bin FROM {table} ORDER BY id"""

EDGE_ROWS: list[dict[str, Any]] = [
    {"flag": 1, "si": -2147483648, "ui": 4294967295, "ub": 2**64 - 1, "d12": Decimal("-9999999999.99"),
     "d30": Decimal("12345678901234567890.0123456789"), "dbl": 1.7976931348623157e308,
     "v": "😀 emoji, ü, 中文, \"quotes\" and 'single'", "txt": "line 1\nline 2\ttab \\ backslash 🚀",
     "day": dt.date(1000, 1, 1), "dtm": dt.datetime(1000, 1, 1, 0, 0, 0), "ts": dt.datetime(1970, 1, 2, tzinfo=UTC),
     "doc": {"a": [1, 2.5, None], "ü": "😀"}, "status": "new", "bin": b"\x00\xff\x00"},
    {"flag": 0, "si": 2147483647, "ui": 0, "ub": 2**53 + 1, "d12": Decimal("9999999999.99"),
     "d30": Decimal("-0.0000000001"), "dbl": -2.2250738585072014e-308, "v": "", "txt": "",
     "day": dt.date(9999, 12, 31), "dtm": dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
     "ts": dt.datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=UTC), "doc": [], "status": "shipped", "bin": b""},
    {"flag": 1, "si": 0, "ui": 1, "ub": 2**63 + 7, "d12": Decimal("0.01"),
     "d30": Decimal("99999999999999999999.9999999999"), "dbl": 0.1, "v": "x" * 50, "txt": "é" * 5000,
     "day": dt.date(2024, 2, 29), "dtm": dt.datetime(2024, 3, 31, 2, 30, 0, 123456),
     "ts": dt.datetime(2024, 3, 31, 2, 30, 0, 1, tzinfo=IST), "doc": "just a string", "status": "paid",
     "bin": bytes(range(256))},
    {"flag": 0, "si": -1, "ui": 2147483648, "ub": 0, "d12": Decimal("-0.01"), "d30": Decimal("0E-10"),
     "dbl": -0.5, "v": "tab\tand\nnewline", "txt": "NULL", "day": dt.date(1970, 1, 1),
     "dtm": dt.datetime(1970, 1, 1), "ts": dt.datetime(2024, 10, 27, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
     "doc": {"nested": {"deep": [True, False]}}, "status": "new", "bin": b"\\x00"},
]


def make_rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """`n` rows: the edge rows first, then seeded random ones; every column is NULL in some rows."""
    rng = random.Random(seed)
    rows = []
    for i in range(1, n + 1):
        if i <= len(EDGE_ROWS):
            row = dict(EDGE_ROWS[i - 1])
        else:
            row = {
                "flag": rng.choice([0, 1]), "si": rng.randint(-2**31, 2**31 - 1), "ui": rng.randint(0, 2**32 - 1),
                "ub": rng.choice([rng.randint(0, 2**53), rng.randint(2**53 + 1, 2**64 - 1)]),
                "d12": Decimal(f"{rng.randint(-10**12 + 1, 10**12 - 1)}e-2"),
                "d30": Decimal(f"{rng.randint(-10**30 + 1, 10**30 - 1)}e-10"),
                "dbl": rng.uniform(-1e9, 1e9), "v": f"name {i} ✓ 😀", "txt": f"text {i} " + "ß" * (i % 40),
                "day": dt.date(2000, 1, 1) + dt.timedelta(days=rng.randint(0, 20000)),
                "dtm": dt.datetime(2000, 1, 1) + dt.timedelta(microseconds=rng.randint(0, 10**15)),
                "ts": dt.datetime(1990, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=rng.randint(0, 10**15)),
                "doc": {"i": i, "tags": ["a", "ü"]}, "status": rng.choice(["new", "paid", "shipped"]),
                "bin": rng.randbytes(rng.randint(0, 40)),
            }
        row["id"] = i
        if i > len(EDGE_ROWS) and i % 7 == 0:  # NULL in every nullable column
            row = {c: (i if c == "id" else None) for c in COLUMNS}
        elif i > len(EDGE_ROWS):  # and NULL in one column of many other rows
            column = COLUMNS[1 + i % (len(COLUMNS) - 1)]
            row[column] = None
        rows.append(row)
    return rows


def to_source(row: dict[str, Any]) -> tuple[Any, ...]:
    """A row as pymysql parameters; timestamps in the inserting session's zone (+05:30)."""
    values = []
    for c in COLUMNS:
        v = row[c]
        if v is not None and c == "ts":
            v = v.astimezone(IST).replace(tzinfo=None)
        elif v is not None and c == "doc":
            v = json.dumps(v, ensure_ascii=False)
        elif v is not None and c in ("d12", "d30"):
            v = str(v)
        values.append(v)
    return tuple(values)


def expected_target(row: dict[str, Any]) -> tuple[Any, ...]:
    """The row as TARGET_SELECT must return it."""
    out = []
    for c in COLUMNS:
        v = row[c]
        if v is None:
            out.append(None)
        elif c == "ub":
            out.append(str(v))
        elif c in ("d12", "d30"):
            out.append(f"{v:.{2 if c == 'd12' else 10}f}")
        elif c == "ts":
            out.append(v.astimezone(UTC))
        else:
            out.append(v)
    return tuple(out)


def normalise_target(row: tuple[Any, ...]) -> tuple[Any, ...]:
    values = list(row)
    doc = COLUMNS.index("doc")
    if values[doc] is not None:
        values[doc] = json.loads(values[doc])
    ts = COLUMNS.index("ts")
    if values[ts] is not None:
        values[ts] = values[ts].astimezone(UTC)
    for i, c in enumerate(COLUMNS):
        if c == "bin" and values[i] is not None:
            values[i] = bytes(values[i])
    return tuple(values)


def load_kinds(mariadb_db: str, rows: list[dict[str, Any]], ddl: str = TYPES_DDL) -> None:
    placeholders = ", ".join(["%s"] * len(COLUMNS))
    mariadb_exec(mariadb_db, ddl, "SET time_zone = '+05:30'",
                 many=(f"INSERT INTO kinds ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                       [to_source(r) for r in rows]))


def target_types(pg_db: str, schema: str, table: str) -> dict[str, str]:
    return dict(pg_rows(pg_db, """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
        WHERE attrelid = to_regclass(quote_ident($1) || '.' || quote_ident($2)) AND attnum > 0 AND NOT attisdropped""",
                        (schema, table)))


def test_every_common_type_arrives_exactly(mariadb_db: str, pg_db: str, tmp_path: Path) -> None:
    rows = make_rows(2600)
    load_kinds(mariadb_db, rows)
    job = write_job(tmp_path, job_toml("maria_kinds", mariadb_db, "kinds", pg_db, "public.kinds",
                                       extra_source="partitions = 4", extra="batch_rows = 1000"))
    report = run_job(load_config(job))

    assert report.status == "succeeded", report.error
    assert report.partitions_total == 4 and report.rows_read == report.rows_loaded == len(rows)
    assert target_types(pg_db, "public", "kinds") == EXPECTED_TYPES
    got = [normalise_target(r) for r in pg_rows(pg_db, TARGET_SELECT.format(table="public.kinds"))]
    want = [expected_target(r) for r in rows]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g == w, f"row {w[0]} differs: " + ", ".join(
            f"{c}: {a!r} != {b!r}" for c, a, b in zip(COLUMNS, g, w, strict=True) if a != b)
    counts = pg_rows(pg_db, "SELECT COUNT(*), SUM(rows_loaded)::bigint FROM engine.checkpoints")
    assert counts == [(4, len(rows))]


def test_the_source_read_back_matches_the_target_as_text(mariadb_db: str, pg_db: str, tmp_path: Path) -> None:
    """Independent of the Python-side expectations: the source's own text form equals the target's."""
    rows = make_rows(300, seed=11)
    load_kinds(mariadb_db, rows)
    job = write_job(tmp_path, job_toml("maria_text", mariadb_db, "kinds", pg_db, "public.kinds",
                                       extra_source="partitions = 3"))
    assert run_job(load_config(job)).status == "succeeded"
    conn = mariadb_connect(mariadb_db.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute("""SELECT id, CAST(ub AS CHAR), CAST(d12 AS CHAR), CAST(d30 AS CHAR),
                DATE_FORMAT(dtm, '%Y-%m-%d %H:%i:%s.%f'), DATE_FORMAT(ts, '%Y-%m-%d %H:%i:%s.%f'), HEX(bin), v, txt
                FROM kinds ORDER BY id""")
            source = [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()
    target = pg_rows(pg_db, """SELECT id, ub::text, d12::text, d30::text, to_char(dtm, 'YYYY-MM-DD HH24:MI:SS.US'),
        to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), upper(encode(bin, 'hex')), v, txt
        FROM public.kinds ORDER BY id""")
    assert target == source


def _load_big_keys(mariadb_db: str, pg_db: str, tmp_path: Path, keys: list[int], name: str) -> None:
    mariadb_exec(mariadb_db, "CREATE TABLE big (id bigint unsigned PRIMARY KEY, note varchar(20))",
                 many=("INSERT INTO big VALUES (%s, %s)", [(k, f"k{k % 1000}") for k in keys]))
    job = write_job(tmp_path, job_toml(name, mariadb_db, "big", pg_db, "public.big", extra_source="partitions = 5"))
    report = run_job(load_config(job))
    assert report.status == "succeeded" and report.rows_loaded == len(keys)
    assert report.partitions_total >= 5
    got = pg_rows(pg_db, "SELECT id::text AS key, note FROM public.big ORDER BY big.id")
    assert got == [(str(k), f"k{k % 1000}") for k in sorted(keys)]


def test_unsigned_bigint_key_above_2_pow_53_partitions_exactly(mariadb_db: str, pg_db: str, tmp_path: Path) -> None:
    """Keys a double cannot tell apart must still land in exactly one partition each."""
    keys = [2**53 + i for i in range(40)] + [2**62 + i for i in range(40)] + [2**63 - 1 - i for i in range(40)]
    _load_big_keys(mariadb_db, pg_db, tmp_path, keys, "maria_big")


def test_unsigned_bigint_key_above_2_pow_63(mariadb_db: str, pg_db: str, tmp_path: Path) -> None:
    keys = [2**63 + i for i in range(40)] + [2**64 - 1 - i for i in range(40)]
    _load_big_keys(mariadb_db, pg_db, tmp_path, keys, "maria_huge")


def test_table_without_primary_key_loads_as_one_partition(mariadb_db: str, pg_db: str, tmp_path: Path) -> None:
    rows = make_rows(500, seed=3)
    for r in rows[::5]:
        r["id"] = rows[0]["id"]  # duplicates are fine without a key
    load_kinds(mariadb_db, rows, ddl=TYPES_DDL.replace("id int NOT NULL PRIMARY KEY", "id int"))
    job = write_job(tmp_path, job_toml("maria_nokey", mariadb_db, "kinds", pg_db, "public.kinds_nokey"))
    report = run_job(load_config(job))

    assert report.status == "succeeded", report.error
    assert report.partitions_total == 1 and report.rows_loaded == len(rows)
    assert target_types(pg_db, "public", "kinds_nokey") == EXPECTED_TYPES
    got = sorted((normalise_target(r) for r in pg_rows(pg_db, TARGET_SELECT.format(table="public.kinds_nokey"))),
                 key=repr)
    want = sorted((expected_target(r) for r in rows), key=repr)
    assert got == want
    assert pg_rows(pg_db, "SELECT lo, hi FROM engine.checkpoints") == [(None, None)]
