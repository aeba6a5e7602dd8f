"""PostgreSQL -> PostgreSQL: one column per common type, edge values in every row, compared value by value.

Both sides are read back as PostgreSQL's own text for each value (its canonical form), so a value that
changed in any way (a digit, a time zone, padding, an array bound, a JSON key order) shows as a difference.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import SourceError
from engine.extract import read_partition
from engine.pipeline import run_job
from engine.plan import make_plan
from tests.conftest import job_toml, matrix_value, pg_exec, pg_rows, write_job

LONG_TEXT = "'" + ("ü😀a\\" * 25_000) + "'"

# column -> (declared type, SQL literals for rows 1.. ; None = NULL). Row 4 is NULL in every column.
COLUMNS: dict[str, tuple[str, list[str | None]]] = {
    "i2": ("smallint", ["-32768", "32767", "0"]),
    "i4": ("integer", ["-2147483648", "2147483647", "0"]),
    "i8": ("bigint", ["-9223372036854775808", "9223372036854775807", "0"]),
    "n12": ("numeric(12,2)", ["-9999999999.99", "9999999999.99", "0", None, "0.01"]),
    "n12_nan": ("numeric(12,2)", ["'NaN'", "-0.01", "0"]),
    "n38": ("numeric(38,10)", ["-9999999999999999999999999999.9999999999", "9999999999999999999999999999.9999999999",
                               "0.0000000001"]),
    "n38_0": ("numeric(38,0)", ["-" + "9" * 38, "9" * 38, "0"]),
    "n50": ("numeric(50,20)", ["-" + "9" * 30 + "." + "9" * 20, "1" * 30 + "." + "0" * 19 + "1", "0"]),
    "nu": ("numeric", ["'NaN'", "'Infinity'", "'-Infinity'", None, "1e-300", "123456789012345678901234567890.123456789"]),
    "f4": ("real", ["'NaN'", "'Infinity'", "'-Infinity'", None, "3.4028235e38", "-1.4e-45", "'-0'", "0.1"]),
    "f8": ("double precision", ["'NaN'", "'Infinity'", "'-Infinity'", None, "1.7976931348623157e308", "5e-324",
                                "'-0'", "0.1"]),
    "b": ("boolean", ["true", "false", "true"]),
    "t": ("text", ["''", LONG_TEXT, "'NULL'", None, "E'tab\\t newline\\n cr\\r \\\\ quote '' \"dq\"'",
                   "'e\u0301 \u05e9\u05dc\u05d5\u05dd \U0001F469\u200d\U0001F469\u200d\U0001F467'"]),
    "vc": ("character varying(10)", ["''", "'😀😀😀😀😀😀😀😀😀😀'", "' trailing '"]),
    "ch": ("character(5)", ["''", "'😀'", "'ab'"]),
    "by": ("bytea", ["'\\x'", "'\\x00ff00'", "decode(repeat('00ff', 1000), 'hex')"]),
    "d": ("date", ["'4713-01-01 BC'", "'9999-12-31'", "'1970-01-01'", None, "'0001-01-01'", "'2000-02-29'",
                   "'0044-03-15 BC'"]),
    "d_inf": ("date", ["'-infinity'", "'infinity'", "'5874897-12-31'", None, "'2024-01-01'"]),
    "tm": ("time without time zone", ["'00:00:00'", "'23:59:59.999999'", "'12:00:00.000001'"]),
    "tm24": ("time without time zone", ["'24:00:00'", "'00:00:00'", "'23:59:59.999999'"]),
    "tm3": ("time(3) without time zone", ["'23:59:59.999'", "'00:00:00.001'", "'12:00:00'"]),
    "ttz": ("time with time zone", ["'23:59:59.999999+14'", "'00:00:00-12'", "'12:00:00+05:30'"]),
    "ts": ("timestamp without time zone", ["'4713-01-01 00:00:00 BC'", "'9999-12-31 23:59:59.999999'",
                                           "'1970-01-01 00:00:00'", None, "'0001-01-01 00:00:00'",
                                           "'2024-03-31 02:30:00'", "'2024-10-27 02:30:00.5'"]),
    "ts_inf": ("timestamp without time zone", ["'-infinity'", "'infinity'", "'294276-12-31 23:59:59.999999'", None,
                                               "'262143-01-01 00:00:00'", "'2024-01-01 00:00:00'"]),
    "ts3": ("timestamp(3) without time zone", ["'2024-01-01 00:00:00.123'", "'1999-12-31 23:59:59.999'", "'epoch'"]),
    "tstz": ("timestamp with time zone", ["'4713-01-01 00:00:00+00 BC'", "'9999-12-31 23:59:59.999999+00'",
                                          "'1970-01-01 00:00:00+00'", None, "'2024-03-31 00:59:59.999999+00'",
                                          "'2024-03-31 01:00:00+00'", "'2024-10-27 00:30:00+00'",
                                          "'2024-10-27 01:30:00+00'", "'2024-11-03 01:30:00-04'",
                                          "'2024-11-03 01:30:00-05'", "'0001-01-01 00:00:00+00'"]),
    "tstz_inf": ("timestamp with time zone", ["'-infinity'", "'infinity'", "'2024-01-01 00:00:00+00'"]),
    "iv": ("interval", ["'-178000000 years'", "'178000000 years'", "'0'", None,
                        "'1 year 2 mons -3 days 04:05:06.789'", "'-1 days +02:00:00'", "'-00:00:00.000001'"]),
    "u": ("uuid", ["'00000000-0000-0000-0000-000000000000'", "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
                   "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"]),
    "j": ("json", ["'{\"b\": 1,  \"a\": [1, 2.50, null], \"a\": 2}'", "'null'", "'\"😀\"'", None, "'1e400'",
                   "'[]'"]),
    "jb": ("jsonb", ["'{\"a\": {\"b\": [1, 2, {\"c\": \"é\"}]}}'", "'null'", "'1.000'", None, "'\"\\\\u00e9\"'",
                     "'{}'"]),
    "ai": ("integer[]", ["'{1,NULL,-2147483648}'", "'{}'", "'[0:1]={5,6}'"]),
    "a2": ("integer[]", ["'{{1,2},{3,4}}'", "'{{NULL}}'", "'{}'"]),
    "at": ("text[]", ["'{\"a,b\",NULL,\"NULL\",\"\",\"😀\",\"q\\\"uote\"}'", "'{}'", "'{\" \"}'"]),
    "an": ("numeric[]", ["'{NaN,Infinity,-Infinity,1.50}'", "'{}'", "'{0}'"]),
    "af": ("double precision[]", ["'{NaN,Infinity,-Infinity,0.1,-0,5e-324}'", "'{}'", "'{1.7976931348623157e308}'"]),
    "ab": ("boolean[]", ["'{t,f,NULL}'", "'{}'", "'{t}'"]),
    "ats": ("timestamp with time zone[]", ["'{\"2024-03-31 01:00:00+00\",infinity,-infinity}'", "'{}'",
                                           "'{\"0001-01-01 00:00:00+00\"}'"]),
    "ad": ("date[]", ["'{infinity,2024-02-29,\"0044-03-15 BC\"}'", "'{}'", "'{NULL}'"]),
    "aby": ("bytea[]", ["'{\"\\\\x00ff\",NULL}'", "'{}'", "'{\"\\\\x\"}'"]),
    "au": ("uuid[]", ["'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'", "'{}'", "'{NULL}'"]),
    "aj": ("jsonb[]", ["ARRAY['{\"a\":1}'::jsonb, 'null'::jsonb]", "'{}'", "ARRAY['[]'::jsonb]"]),
    "e": ("mood", ["'sad'", "'happy 😀'", "'ok'"]),
    "ae": ("mood[]", ["'{sad,\"happy 😀\"}'", "'{}'", "'{NULL}'"]),
    "dom": ("posint", ["1", "2147483647", "42"]),
    "ip": ("inet", ["'192.168.0.1/24'", "'::1'", "'2001:db8::ff00:42:8329/64'"]),
    "net": ("cidr", ["'10.0.0.0/8'", "'::/0'", "'192.168.1.0/24'"]),
    "bits": ("bit(4)", ["B'1010'", "B'0000'", "B'1111'"]),
    "vbits": ("bit varying", ["B''", "B'1'", "B'1010101010'"]),
    "r": ("int4range", ["'[1,10)'", "'empty'", "'(,5]'"]),
}
ROWS = max(len(v) for _, v in COLUMNS.values())

# What the target's columns are: the source's own types, but enums (the target has no such type) become
# text and a domain its base type.
EXPECTED_TYPE = {name: t for name, (t, _) in COLUMNS.items()} | {"e": "text", "ae": "text[]", "dom": "integer"}
# Columns whose values the binary path cannot carry: they travel as text, cast by PostgreSQL.
TEXT_ROUTE = {"n12_nan", "d_inf", "tm24", "ts_inf", "tstz_inf"}


def make_source(url: str) -> None:
    ddl = ", ".join(f'"{name}" {t}' for name, (t, _) in COLUMNS.items())
    statements = ["CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy 😀')",
                  "CREATE DOMAIN posint AS integer CHECK (VALUE > 0)",
                  f"CREATE TABLE public.kinds (id integer PRIMARY KEY, {ddl})"]
    for row in range(1, ROWS + 1):
        values = []
        for _, (t, literals) in COLUMNS.items():
            v = matrix_value(literals, row)
            values.append("NULL" if v is None else f"({v})::{t}")
        statements.append(f"INSERT INTO public.kinds VALUES ({row}, {', '.join(values)})")
    pg_exec(url, *statements)


def as_text(url: str, table: str) -> list[tuple[str | None, ...]]:
    select = ", ".join(f'"{name}"::text' for name in COLUMNS)
    return pg_rows(url, f"SELECT id, {select} FROM {table} ORDER BY id")


def column_types(url: str, table: str) -> dict[str, str]:
    return dict(pg_rows(url, """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
        WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped AND attname <> 'id'""", (table,)))


def assert_same(source: list[tuple[str | None, ...]], target: list[tuple[str | None, ...]]) -> None:
    assert len(source) == len(target) == ROWS
    names = ["id", *COLUMNS]
    for s, t in zip(source, target, strict=True):
        diffs = [f"{n}: {a!r:.80} != {b!r:.80}" for n, a, b in zip(names, s, t, strict=True) if a != b]
        assert not diffs, f"row {s[0]} differs: " + "; ".join(diffs)


# Session defaults under which text forms are ambiguous or lossy: day-first dates, SQL-standard intervals
# (a leading sign applies to every part), a half-hour zone, floats with 15 fewer digits, bytea escapes.
HOSTILE_SETTINGS = {"DateStyle": "SQL, DMY", "IntervalStyle": "sql_standard", "TimeZone": "America/St_Johns",
                    "extra_float_digits": "-15", "bytea_output": "escape"}


@pytest.mark.parametrize(("hostile", "mode"), [(False, "append"), (True, "append"), (False, "replace"),
                                               (False, "upsert")],
                         ids=["append", "append-hostile-settings", "replace", "upsert"])
@pytest.mark.parametrize("reader", ["connectorx", "adbc", "copy"])
def test_every_type_arrives_unchanged(hostile: bool, mode: str, reader: str, pg_source: str, pg_db: str,
                                      tmp_path: Path) -> None:
    make_source(pg_source)
    if hostile:  # both databases: what the reader and the loader sessions start with
        for url in (pg_source, pg_db):
            name = url.rsplit("/", 1)[1]
            pg_exec(url, *(f"ALTER DATABASE {name} SET {k} = '{v}'" for k, v in HOSTILE_SETTINGS.items()))
    config = load_config(write_job(tmp_path, job_toml("pg_types", pg_source, "public.kinds", pg_db, "public.kinds",
                                                      mode=mode, key=["id"],
                                                      extra_source=f"partitions = 2\nreader = {reader!r}")))
    assert config.source.reader == reader
    report = run_job(config)
    assert report.status == "succeeded", report.error
    assert report.rows_loaded == ROWS and report.rows_quarantined == 0
    # under upsert the rows are needed on the way (an INSERT … ON CONFLICT): "copy" reads them with ConnectorX
    fell_back = reader == "copy" and mode == "upsert"
    assert any("does not apply" in n for n in report.notes) == fell_back, report.notes
    routes = {r for (r,) in pg_rows(pg_db, "SELECT metrics->>'route' FROM engine.checkpoints")}
    # the target's enum columns are text, its domain column the base type: not the source's types, so text COPY
    assert routes == ({"copy text"} if reader == "copy" and not fell_back else {"arrow"}), routes
    for url in (pg_source, pg_db):  # compare under the defaults: every float digit, ISO forms
        pg_exec(url, f"ALTER DATABASE {url.rsplit('/', 1)[1]} RESET ALL")
    assert column_types(pg_db, "public.kinds") == EXPECTED_TYPE
    assert_same(as_text(pg_source, "public.kinds"), as_text(pg_db, "public.kinds"))


def test_only_columns_holding_special_values_leave_the_binary_path(pg_source: str, pg_db: str,
                                                                    tmp_path: Path) -> None:
    make_source(pg_source)
    config = load_config(write_job(tmp_path, job_toml("pg_routes", pg_source, "public.kinds", pg_db, "public.kinds")))
    plan = make_plan(config)
    by_name = {c.name: c for c in plan.columns}
    assert {n for n, c in by_name.items() if "travels as text" in c.note} == TEXT_ROUTE
    binary = {"i8": "int64", "n12": "decimal128(12,2)", "f8": "float64", "d": "date32", "tm": "time64[us]",
              "ts": "timestamp[us]", "tstz": "timestamp[us,UTC]", "by": "binary"}
    assert {n: by_name[n].flight for n in binary} == binary
    assert not any(by_name[n].via_text for n in binary)


def test_a_special_value_written_after_planning_stops_the_read(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    """A resumed run reads a newer snapshot with the old plan: a value that plan cannot carry must not be
    approximated (the driver would read 'infinity' as a date in year 262142)."""
    pg_exec(pg_source, "CREATE TABLE public.events (id integer PRIMARY KEY, at timestamptz, amount numeric(12,2))",
            "INSERT INTO public.events VALUES (1, '2024-01-01 00:00:00+00', 1.50)")
    config = load_config(write_job(tmp_path, job_toml("pg_late", pg_source, "public.events", pg_db, "public.events")))
    plan = make_plan(config)
    assert [c.flight for c in plan.columns] == ["int32", "timestamp[us,UTC]", "decimal128(12,2)"]
    pg_exec(pg_source, "UPDATE public.events SET at = 'infinity' WHERE id = 1")
    with pytest.raises(SourceError, match="column at holds infinity"):
        list(read_partition(plan, plan.partitions[0], config.source_url, 1000))
    pg_exec(pg_source, "UPDATE public.events SET at = now(), amount = 'NaN' WHERE id = 1")
    with pytest.raises(SourceError, match="column amount holds NaN"):
        list(read_partition(plan, plan.partitions[0], config.source_url, 1000))


def test_declared_text_type_keeps_the_source_text(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_source(pg_source)
    extra = '\n[target.types]\nts_inf = "text"\niv = "text"\nn38_0 = "text"\n'
    body = job_toml("pg_declared", pg_source, "public.kinds", pg_db, "public.kinds")
    body = body.replace("\n[pipeline]", extra + "\n[pipeline]")
    report = run_job(load_config(write_job(tmp_path, body)))
    assert report.status == "succeeded", report.error
    types = column_types(pg_db, "public.kinds")
    assert types["ts_inf"] == types["iv"] == types["n38_0"] == "text"
    assert_same(as_text(pg_source, "public.kinds"), as_text(pg_db, "public.kinds"))


def test_an_existing_narrower_target_column_never_rounds_silently(pg_source: str, pg_db: str,
                                                                 tmp_path: Path) -> None:
    """A target table made by hand with narrower types: a row holding a value whose decimal form the column
    cannot keep is quarantined, naming the column and the value (0.1 stays 0.1 as a real; 0.123456789 would
    not); the other rows load. Declaring the column's type accepts PostgreSQL's rounding explicitly."""
    pg_exec(pg_source, "CREATE TABLE public.m (id integer PRIMARY KEY, f double precision, n numeric(30,1))",
            "INSERT INTO public.m VALUES (1, 0.5, 1.5), (2, 0.123456789, 2.5), (3, 0.1, 12345678901234567890.1)")
    pg_exec(pg_db, "CREATE TABLE public.m (id integer PRIMARY KEY, f real, n double precision)")
    body = job_toml("pg_narrow", pg_source, "public.m", pg_db, "public.m").replace(
        "\n[pipeline]", "\n[validate]\nmax_error_rate = 1.0\n\n[pipeline]")
    report = run_job(load_config(write_job(tmp_path, body)))
    assert report.status == "succeeded", report.error
    assert report.rows_quarantined == 2
    assert pg_rows(pg_db, "SELECT id, f::text, n::text FROM public.m ORDER BY id") == [(1, "0.5", "1.5")]
    refused = pg_rows(pg_db, "SELECT source_key, checks, columns, reason FROM engine.quarantine ORDER BY source_key")
    assert [r[:3] for r in refused] == [("2", "target value_does_not_fit", "f"),
                                        ("3", "target value_does_not_fit", "n")]
    assert "the target column (real) cannot hold 0.123456789 exactly" in refused[0][3]
    assert "the target column (double precision) cannot hold" in refused[1][3]

    pg_exec(pg_db, "TRUNCATE public.m")
    pg_exec(pg_source, "UPDATE public.m SET f = 0.1 WHERE id = 2", "UPDATE public.m SET n = 2.5")
    assert run_job(load_config(write_job(tmp_path, body)), fresh=True).status == "succeeded"
    assert pg_rows(pg_db, "SELECT id, f::text, n::text FROM public.m ORDER BY id") == [
        (1, "0.5", "2.5"), (2, "0.1", "2.5"), (3, "0.1", "2.5")]

    pg_exec(pg_db, "TRUNCATE public.m")
    pg_exec(pg_source, "UPDATE public.m SET f = 0.123456789 WHERE id = 2")
    declared = body.replace("\n[pipeline]", '\n[target.types]\nf = "real"\n\n[pipeline]')
    report = run_job(load_config(write_job(tmp_path, declared)), fresh=True)
    assert report.status == "succeeded", report.error
    assert pg_rows(pg_db, "SELECT id, f::text FROM public.m ORDER BY id") == [(1, "0.5"), (2, "0.12345679"), (3, "0.1")]


def test_a_declared_type_whose_modifier_would_change_a_value_quarantines_the_row(pg_source: str, pg_db: str,
                                                                                 tmp_path: Path) -> None:
    """PostgreSQL's own casts round numeric(p,s) and timestamp(p) and truncate varchar(n) without a word: a
    value that would change is quarantined with the reason instead."""
    pg_exec(pg_source, "CREATE TABLE public.d (id integer PRIMARY KEY, n numeric(12,4), at timestamptz, s text, "
                       "a numeric[])",
            "INSERT INTO public.d VALUES (1, 2.5, '2024-01-01 10:00:00+00', 'abc', '{1.5,2}'), "
            "(2, 1.2345, '2024-01-01 10:00:00+00', 'abc', '{1}'), (3, 2.5, '2024-01-01 10:00:00.5+00', 'abc', '{1}'), "
            "(4, 2.5, '2024-01-01 10:00:00+00', 'abcdef', '{1}'), (5, 2.5, '2024-01-01 10:00:00+00', 'abc', '{1,2.125}')")
    body = job_toml("pg_typmod", pg_source, "public.d", pg_db, "public.d").replace(
        "\n[pipeline]", '\n[target.types]\nn = "numeric(10,2)"\nat = "timestamptz(0)"\ns = "varchar(3)"\n'
        'a = "numeric(5,2)[]"\n\n[pipeline]')
    body = body.replace("[source]", "[validate]\nmax_error_rate = 1.0\n\n[source]")
    report = run_job(load_config(write_job(tmp_path, body)))
    assert report.status == "succeeded", report.error
    assert pg_rows(pg_db, "SELECT id, n::text, at::text, s, a::text FROM public.d") == [
        (1, "2.50", "2024-01-01 10:00:00+00", "abc", "{1.50,2.00}")]
    assert pg_rows(pg_db, "SELECT source_key, checks, columns FROM engine.quarantine ORDER BY 1") == [
        ("2", "target value_does_not_fit", "n"), ("3", "target value_does_not_fit", "at"),
        ("4", "target value_does_not_fit", "s"), ("5", "target value_does_not_fit", "a")]


def test_an_existing_timestamp_column_with_fewer_digits_never_rounds(pg_source: str, pg_db: str,
                                                                     tmp_path: Path) -> None:
    """Binary COPY into timestamptz(0) would round 10:00:00.5 to 10:00:01: such a row is quarantined."""
    pg_exec(pg_source, "CREATE TABLE public.e (id integer PRIMARY KEY, at timestamptz)",
            "INSERT INTO public.e VALUES (1, '2024-01-01 10:00:00+00'), (2, '2024-01-01 10:00:00.5+00')")
    pg_exec(pg_db, "CREATE TABLE public.e (id integer PRIMARY KEY, at timestamptz(0))")
    body = job_toml("pg_ts0", pg_source, "public.e", pg_db, "public.e").replace(
        "[source]", "[validate]\nmax_error_rate = 1.0\n\n[source]")
    report = run_job(load_config(write_job(tmp_path, body)))
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1), report.error
    assert pg_rows(pg_db, "SELECT id, at::text FROM public.e") == [(1, "2024-01-01 10:00:00+00")]
    assert pg_rows(pg_db, "SELECT source_key, checks, columns FROM engine.quarantine") == [
        ("2", "target value_does_not_fit", "at")]
