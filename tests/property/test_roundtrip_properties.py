"""Round-trip properties: random values of each type, a batch of rows per example, one job per example.

PostgreSQL -> PostgreSQL is compared by each value's canonical text on both sides; SQLite -> PostgreSQL
against the exact Python values that were written. Hypothesis shrinks any difference to a minimal row.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import load_config
from engine.localpg import PostgresServer, create_database, drop_database
from engine.pipeline import run_job
from tests.conftest import job_toml, pg_exec, pg_rows, write_job

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _nullable(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _decimals(precision: int, scale: int) -> st.SearchStrategy[Decimal]:
    """Every digit count up to numeric(precision, scale), extremes included (built from text: exact)."""
    digits = st.one_of(st.integers(-(10**precision - 1), 10**precision - 1),
                       st.sampled_from([10**precision - 1, -(10**precision - 1), 0, 1, -1]))
    return digits.map(lambda n: Decimal(f"{n}E-{scale}"))


TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)  # no NUL in PG
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
DST_ZONES = st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]).map(ZoneInfo)
# Any instant with any offset (year 1 at +14:00 is 1 BC in UTC), and wall times around DST changes.
ZONED = st.one_of(st.datetimes(timezones=OFFSETS),
                  st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2040, 1, 1),
                               timezones=DST_ZONES, allow_imaginary=False))
SPECIAL_DECIMALS = st.sampled_from([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])

# column -> (PostgreSQL type, strategy for its values)
PG_COLUMNS: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    "i2": ("smallint", st.integers(-2**15, 2**15 - 1)),
    "i4": ("integer", st.integers(-2**31, 2**31 - 1)),
    "i8": ("bigint", st.integers(-2**63, 2**63 - 1)),
    "n12": ("numeric(12,2)", _decimals(12, 2)),
    "n28": ("numeric(28,10)", _decimals(28, 10)),
    "n38": ("numeric(38,0)", _decimals(38, 0)),
    "n40": ("numeric(40,20)", _decimals(40, 20)),
    "nu": ("numeric", st.one_of(SPECIAL_DECIMALS, _decimals(60, 30))),
    "f4": ("real", st.floats(width=32)),
    "f8": ("double precision", st.floats()),
    "b": ("boolean", st.booleans()),
    "t": ("text", TEXT),
    "vc": ("character varying(12)", st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                                            max_size=12)),
    "by": ("bytea", st.binary(max_size=40)),
    "d": ("date", st.dates()),
    "ts": ("timestamp without time zone", st.datetimes()),
    "tz": ("timestamp with time zone", ZONED),
    "iv": ("interval", st.timedeltas(min_value=dt.timedelta(days=-10**6), max_value=dt.timedelta(days=10**6))),
    "ai": ("bigint[]", st.lists(_nullable(st.integers(-2**63, 2**63 - 1)), max_size=4)),
    "at": ("text[]", st.lists(_nullable(TEXT), max_size=4)),
}
PG_ROWS = st.lists(st.tuples(*(_nullable(s) for _, s in PG_COLUMNS.values())), min_size=1, max_size=12)


def _text_literal(s: str) -> str:
    return "E'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pg_literal(value: Any, pg_type: str) -> str:
    """A value as a PostgreSQL literal of `pg_type` (NULL for None)."""
    if value is None:
        return "NULL"
    if isinstance(value, list):
        return f"ARRAY[{', '.join(pg_literal(v, pg_type[:-2]) for v in value)}]::{pg_type}"
    if isinstance(value, bool | int):
        text = str(value).lower()
    elif isinstance(value, Decimal):
        text = f"'{value}'"  # NaN and ±Infinity included
    elif isinstance(value, float):
        text = f"'{value!r}'"  # 'nan', 'inf', '-0.0' read back exactly
    elif isinstance(value, str):
        text = _text_literal(value)
    elif isinstance(value, bytes):
        text = f"'\\x{value.hex()}'"
    elif isinstance(value, dt.timedelta):
        text = f"'{value.days} days {value.seconds} seconds {value.microseconds} microseconds'"
    else:
        text = f"'{value.isoformat()}'"
    return f"({text})::{pg_type}"


@pytest.fixture(scope="module")
def pg_pair(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """One source and one target database for the module; each example replaces the tables."""
    suffix = uuid.uuid4().hex[:10]
    names = [f"engine_prop_src_{suffix}", f"engine_prop_dst_{suffix}"]
    for name in names:
        create_database(pg_server.url, name)
    yield pg_server.database_url(names[0]), pg_server.database_url(names[1]), tmp_path_factory.mktemp("prop")
    for name in names:
        drop_database(pg_server.url, name)


def _run(folder: Path, name: str, source_url: str, table: str, target_url: str, source_extra: str = "") -> None:
    job = job_toml(name, source_url, table, target_url, f"public.{table}", mode="replace", extra_source=source_extra)
    report = run_job(load_config(write_job(folder, job, name=f"{name}.toml")))
    assert report.status == "succeeded", report.error


@pytest.mark.parametrize("reader", ["connectorx", "adbc"])
@SETTINGS
@given(rows=PG_ROWS)
def test_postgres_values_round_trip(pg_pair: tuple[str, str, Path], reader: str, rows: list[tuple[Any, ...]]) -> None:
    source, target, folder = pg_pair
    types = [t for t, _ in PG_COLUMNS.values()]
    values = ", ".join(f"({i}, {', '.join(pg_literal(v, t) for v, t in zip(row, types, strict=True))})"
                       for i, row in enumerate(rows))
    ddl = ", ".join(f"{n} {t}" for n, (t, _) in PG_COLUMNS.items())
    pg_exec(source, "DROP TABLE IF EXISTS public.props", f"CREATE TABLE public.props (id integer PRIMARY KEY, {ddl})",
            f"INSERT INTO public.props VALUES {values}")
    _run(folder, "prop_pg", source, "props", target, f"reader = {reader!r}")
    compare = f"SELECT id, {', '.join(f'{n}::text' for n in PG_COLUMNS)} FROM public.props ORDER BY id"
    assert pg_rows(target, compare) == pg_rows(source, compare)


SQLITE_COLUMNS: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    "i": ("INTEGER", st.integers(-2**63, 2**63 - 1)),
    "r": ("REAL", st.floats(allow_nan=False)),  # SQLite stores NaN as NULL
    "t": ("TEXT", TEXT),
    "bl": ("BLOB", st.binary(max_size=40)),
    "n": ("NUMERIC(12,2)", _decimals(12, 2)),
    "d": ("DATE", st.dates()),
    "dtm": ("DATETIME", st.datetimes()),
    "bo": ("BOOLEAN", st.booleans()),
    "u": ("", st.floats(allow_nan=False)),
}
SQLITE_ROWS = st.lists(st.tuples(*(_nullable(s) for _, s in SQLITE_COLUMNS.values())), min_size=1, max_size=12)


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)  # a NUMERIC column holds REALs: 12 digits are exact in a double's 15
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _expected(value: Any, declared: str) -> Any:
    """What the source holds: a REAL column stores -0.0 as 0.0 (SQLite keeps whole REALs as integers)."""
    if isinstance(value, float):
        return (value + 0.0 if declared == "REAL" else value).hex()
    return value


def _got(value: Any, declared: str) -> Any:
    if isinstance(value, float):
        return value.hex()
    if isinstance(value, (bytes, memoryview)):
        return bytes(value)
    if declared.startswith("NUMERIC") and value is not None:
        return Decimal(value)
    return value


@SETTINGS
@given(rows=SQLITE_ROWS)
def test_sqlite_values_round_trip(pg_pair: tuple[str, str, Path], rows: list[tuple[Any, ...]]) -> None:
    _, target, folder = pg_pair
    db = folder / "props.db"
    db.unlink(missing_ok=True)
    declared = [t for t, _ in SQLITE_COLUMNS.values()]
    with sqlite3.connect(db) as conn:
        conn.execute(f"CREATE TABLE props (id INTEGER PRIMARY KEY, "
                     f"{', '.join(f'{n} {t}' for n, (t, _) in SQLITE_COLUMNS.items())})")
        conn.executemany(f"INSERT INTO props VALUES ({', '.join('?' * (len(SQLITE_COLUMNS) + 1))})",
                          [(i, *(_sqlite_value(v) for v in row)) for i, row in enumerate(rows)])
    _run(folder, "prop_sqlite", f"sqlite://{db}", "props", target)
    select = ", ".join(f"{n}::text" if t.startswith("NUMERIC") else n for n, (t, _) in SQLITE_COLUMNS.items())
    got = [tuple(_got(v, t) for v, t in zip(r, declared, strict=True))
           for r in pg_rows(target, f"SELECT {select} FROM public.props ORDER BY id")]
    assert got == [tuple(_expected(v, t) for v, t in zip(row, declared, strict=True)) for row in rows]
