"""Identifiers end to end (PostgreSQL -> PostgreSQL): odd names are quoted, hostile names inject nothing,
and names PostgreSQL would silently truncate are refused up front."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import ConfigError
from engine.pipeline import run_job
from engine.sql import quote_ident
from tests.conftest import job_toml, pg_exec, pg_rows, write_job

ODD_SCHEMA = "My Schema"
ODD_TABLE = 'Odd "Name" Table'
HOSTILE = 'x"; DROP TABLE victim;--'
ODD_COLUMN = 'Amount "net" €'


def qualified(schema: str, table: str) -> str:
    """The SQL (and job-file) spelling of schema.table, each part double-quoted."""
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def make_source(url: str, schema: str, table: str, rows: int = 300, key: str = "id",
                extra_column: str = "label") -> None:
    t = qualified(schema, table)
    statements = [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}"] if schema != "public" else []
    pg_exec(url, *statements,
            f"CREATE TABLE {t} ({quote_ident(key)} bigint PRIMARY KEY, {quote_ident(extra_column)} text, "
            f"amount numeric(12,2))",
            f"INSERT INTO {t} SELECT g, 'row ' || g || ' \"q\" ''s''', g * 1.25 FROM generate_series(1, {rows}) g")


def table_exists(url: str, schema: str, table: str) -> bool:
    return pg_rows(url, "SELECT to_regclass($1) IS NOT NULL", (qualified(schema, table),))[0][0]


def contents(url: str, schema: str, table: str, key: str = "id", extra_column: str = "label") -> list[tuple]:
    return pg_rows(url, f"SELECT {quote_ident(key)}, {quote_ident(extra_column)}, amount::text "
                        f"FROM {qualified(schema, table)} ORDER BY 1")


def test_quoted_mixed_case_names_with_spaces_round_trip(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_source(pg_source, ODD_SCHEMA, ODD_TABLE)
    make_source(pg_source, "public", "odd name table")  # a look-alike that must not be read instead
    pg_exec(pg_source, 'UPDATE public."odd name table" SET label = \'wrong table\'')
    job = write_job(tmp_path, job_toml("odd_names", pg_source, qualified(ODD_SCHEMA, ODD_TABLE), pg_db,
                                       qualified(ODD_SCHEMA, ODD_TABLE), extra_source="partitions = 3"))
    report = run_job(load_config(job))

    assert report.status == "succeeded" and report.rows_loaded == 300 and report.partitions_total == 3
    assert contents(pg_db, ODD_SCHEMA, ODD_TABLE) == contents(pg_source, ODD_SCHEMA, ODD_TABLE)
    names = pg_rows(pg_db, "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                           "WHERE c.relkind = 'r' AND n.nspname NOT IN ('engine', 'pg_catalog', 'information_schema')")
    assert names == [(ODD_SCHEMA, ODD_TABLE)]  # exact case, spaces and quotes; nothing else created


def test_dotted_names_in_quotes_are_one_part(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_source(pg_source, "s.x", "t.y", rows=50)
    job = write_job(tmp_path, job_toml("dotted", pg_source, '"s.x"."t.y"', pg_db, '"tgt.schema"."t.y"'))
    assert run_job(load_config(job)).rows_loaded == 50
    assert contents(pg_db, "tgt.schema", "t.y") == contents(pg_source, "s.x", "t.y")


def test_hostile_table_name_injects_nothing(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    for url in (pg_source, pg_db):
        pg_exec(url, "CREATE TABLE public.victim (id int)", "INSERT INTO public.victim VALUES (42)")
    make_source(pg_source, "public", HOSTILE, rows=120)
    job = write_job(tmp_path, job_toml("hostile", pg_source, qualified("public", HOSTILE), pg_db,
                                       qualified("public", HOSTILE), extra_source="partitions = 2"))
    report = run_job(load_config(job))

    assert report.status == "succeeded" and report.rows_loaded == 120
    for url in (pg_source, pg_db):
        assert pg_rows(url, "SELECT id FROM public.victim") == [(42,)]
    assert contents(pg_db, "public", HOSTILE) == contents(pg_source, "public", HOSTILE)


def test_hostile_unquoted_target_name_is_one_identifier(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    """Written without quotes in the job file, the whole text (minus the schema) is still one exact name."""
    pg_exec(pg_db, "CREATE TABLE public.victim (id int)")
    make_source(pg_source, "public", "plain", rows=10)
    hostile = "victim; DROP TABLE victim;--"
    job = write_job(tmp_path, job_toml("hostile_bare", pg_source, "plain", pg_db, f"public.{hostile}"))
    assert run_job(load_config(job)).rows_loaded == 10
    assert table_exists(pg_db, "public", "victim") and table_exists(pg_db, "public", hostile)
    assert pg_rows(pg_db, f"SELECT COUNT(*) FROM {qualified('public', hostile)}") == [(10,)]


def test_column_names_with_quotes_and_spaces(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    key = 'Row "ID"'
    make_source(pg_source, "public", "cols", rows=200, key=key, extra_column=ODD_COLUMN)
    job = write_job(tmp_path, job_toml("odd_columns", pg_source, "public.cols", pg_db, "public.cols",
                                       extra_source=f"partitions = 4\npartition_on = {_toml(key)}"))
    report = run_job(load_config(job))

    assert report.status == "succeeded" and report.partitions_total == 4 and report.rows_loaded == 200
    assert contents(pg_db, "public", "cols", key, ODD_COLUMN) == contents(pg_source, "public", "cols", key, ODD_COLUMN)
    columns = [r[0] for r in pg_rows(pg_db, "SELECT attname FROM pg_attribute WHERE attrelid = 'public.cols'::regclass "
                                            "AND attnum > 0 ORDER BY attnum")]
    assert columns == [key, ODD_COLUMN, "amount"]


def test_hostile_column_name_injects_nothing(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    pg_exec(pg_db, "CREATE TABLE public.victim (id int)")
    column = 'c"; DROP TABLE victim;--'
    make_source(pg_source, "public", "t", rows=30, extra_column=column)
    job = write_job(tmp_path, job_toml("hostile_column", pg_source, "public.t", pg_db, "public.t",
                                       extra_source="partitions = 2"))
    assert run_job(load_config(job)).rows_loaded == 30
    assert table_exists(pg_db, "public", "victim")
    assert contents(pg_db, "public", "t", extra_column=column) == contents(pg_source, "public", "t", extra_column=column)


def _toml(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.mark.parametrize("target", [
    "t" * 64,  # one byte over
    "é" * 32,  # 64 bytes in 32 characters
    f'{qualified("s" * 64, "t")}',  # the schema part
], ids=["64-ascii", "64-bytes-32-chars", "64-byte-schema"])
def test_target_names_over_63_bytes_are_refused(pg_source: str, pg_db: str, tmp_path: Path, target: str) -> None:
    """PostgreSQL would truncate such a name silently, so two long names could write into one table."""
    make_source(pg_source, "public", "src", rows=5)
    job = write_job(tmp_path, job_toml("long_name", pg_source, "public.src", pg_db, target))
    with pytest.raises(ConfigError) as caught:
        run_job(load_config(job))
    assert "63" in str(caught.value)
    tables = pg_rows(pg_db, "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE c.relkind = 'r' AND n.nspname NOT IN ('engine', 'pg_catalog', 'information_schema')")
    assert tables == []  # nothing created under a truncated name
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM pg_namespace WHERE nspname LIKE 'sss%'") == [(0,)]


def test_target_name_of_exactly_63_bytes_works(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_source(pg_source, "public", "src", rows=5)
    name = "é" * 31 + "x"  # 63 bytes
    for mode in ("append", "replace"):  # replace also builds a staging table from the name
        job = write_job(tmp_path, job_toml(f"exact_63_{mode}", pg_source, "public.src", pg_db, qualified("public", name),
                                           mode=mode), name=f"{mode}.toml")
        assert run_job(load_config(job)).rows_loaded == 5
    assert pg_rows(pg_db, f"SELECT COUNT(*) FROM {qualified('public', name)}") == [(5,)]


def test_target_column_name_over_63_bytes_is_refused(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_source(pg_source, "public", "src", rows=5)
    long_name = "label_" + "x" * 58
    job = write_job(tmp_path, job_toml("long_column", pg_source, "public.src", pg_db, "public.dst",
                                       extra=f"[transform]\nrename = {{ label = {_toml(long_name)} }}"))
    with pytest.raises(ConfigError) as caught:
        run_job(load_config(job))
    assert long_name in str(caught.value) and "63" in str(caught.value)
    assert not table_exists(pg_db, "public", "dst")
