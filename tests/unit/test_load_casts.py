"""The load stage's pure parts: conforming batches to the target's types, the guarded SQL casts, and reading
PostgreSQL's error texts (captured from a real server through the ADBC driver) without a database."""

from __future__ import annotations

import math
import uuid
from decimal import Decimal

import pyarrow as pa
import pytest

from engine.errors import TargetError
from engine.load import _cast, conform, exact_cast, row_rejection, target_problems
from engine.model import LoadTarget, Plan, TargetColumn
from engine.refused import _database_message
from engine.refused import named_column as _named_column
from engine.sql import TableName, quote_ident
from engine.typemap import override_hint

TABLE = TableName("public", "orders")


def target(*columns: tuple[str, str], text_columns: tuple[str, ...] = ()) -> LoadTarget:
    return LoadTarget(TABLE, TABLE, "append", (), tuple(columns), text_columns)


# ---------------------------------------------------------------------------------------------- conform / _cast


def test_an_exact_type_passes_through_untouched() -> None:
    column = pa.array([1, None, 3], pa.int32())
    assert _cast(column, pa.int32(), "id", "integer") is column


@pytest.mark.parametrize("have", [pa.string(), pa.large_string()])
def test_strings_keep_their_offset_width(have: pa.DataType) -> None:
    batch = pa.record_batch({"name": pa.array(["a", None, "ü"], have)})
    out = conform(batch, target(("name", "text")))
    assert target(("name", "text")).arrow_schema().field("name").type == pa.large_string()
    assert out.schema.field("name").type == have
    assert out.column(0).to_pylist() == ["a", None, "ü"]


def test_binary_keeps_its_offset_width() -> None:
    column = pa.array([b"\x00\x01", None], pa.binary())
    assert _cast(column, pa.large_binary(), "b", "bytea") is column


def test_a_string_view_becomes_a_large_string() -> None:
    column = pa.array(["x", None, "yz"], pa.string_view())
    out = _cast(column, pa.large_string(), "s", "text")
    assert out.type == pa.large_string()
    assert out.to_pylist() == ["x", None, "yz"]


def test_conform_follows_the_target_order_and_types() -> None:
    batch = pa.table({"extra": [9, 9], "amount": pa.array([Decimal("1.5"), None], pa.decimal128(10, 1)),
                      "id": pa.array([1, 2], pa.int64())})
    out = conform(batch, target(("id", "integer"), ("amount", "numeric(5,2)")))
    assert out.schema.names == ["id", "amount"]
    assert out.schema.field("id").type == pa.int32()
    assert out.schema.field("amount").type == pa.decimal128(5, 2)
    assert out.to_pydict() == {"id": [1, 2], "amount": [Decimal("1.50"), None]}


def test_uuid_text_becomes_the_uuid_extension() -> None:
    values = ["12345678-1234-5678-1234-567812345678", "ABCDEF0123456789abcdef0123456789", None]
    out = conform(pa.record_batch({"u": pa.array(values, pa.large_string())}), target(("u", "uuid")))
    column = out.column(0)
    assert isinstance(column.type, pa.UuidType)
    assert column.storage.type == pa.binary(16)
    assert column.to_pylist() == [uuid.UUID(values[0]), uuid.UUID(values[1]), None]


def test_uuid_bytes_become_the_uuid_extension() -> None:
    raw = uuid.uuid4()
    out = _cast(pa.array([raw.bytes], pa.binary(16)), pa.uuid(), "u", "uuid")
    assert isinstance(out.type, pa.UuidType)
    assert out.to_pylist() == [raw]


def test_json_text_becomes_the_json_extension_unchanged() -> None:
    text = '{"b": 1,  "a": [1e400]}'
    out = conform(pa.record_batch({"j": pa.array([text, None])}), target(("j", "jsonb")))
    assert isinstance(out.column(0).type, pa.JsonType)
    assert out.column(0).storage.to_pylist() == [text, None]


def test_a_text_column_travels_as_text_whatever_its_type() -> None:
    t = target(("ts", "timestamp without time zone"), text_columns=("ts",))
    out = conform(pa.record_batch({"ts": pa.array(["infinity", "2024-01-01 00:00:00"])}), t)
    assert out.schema.field("ts").type == pa.string()
    assert out.column(0).to_pylist() == ["infinity", "2024-01-01 00:00:00"]


@pytest.mark.parametrize(("column", "pg_type", "wanted"), [
    (pa.array([1, 40_000], pa.int64()), "smallint", pa.int16()),
    (pa.array(["7", "seven"]), "integer", pa.int32()),
    (pa.array([Decimal("123456.7")], pa.decimal128(10, 1)), "numeric(5,2)", pa.decimal128(5, 2)),
])
def test_a_value_that_does_not_fit_names_the_column(column: pa.Array, pg_type: str, wanted: pa.DataType) -> None:
    with pytest.raises(TargetError) as err:
        conform(pa.record_batch({"qty": column}), target(("qty", pg_type)))
    message = str(err.value)
    assert message.startswith("column 'qty': cannot convert")
    assert str(wanted) in message
    assert override_hint("qty") in message


@pytest.mark.parametrize(("values", "have", "pg_type", "bad", "stored"), [
    ([0.5, 0.123456789], pa.float64(), "real", 0.123456789, "0.1234567"),
    ([1.0, 1e300], pa.float64(), "real", 1e300, "inf"),
    ([1.25, 1.005], pa.float64(), "numeric(5,2)", 1.005, "Decimal('1.00')"),
    ([Decimal("0.5"), Decimal("0.12345678901234567891")], pa.decimal128(38, 20), "double precision",
     Decimal("0.12345678901234567891"), "0.1234567890123456"),
])
def test_a_narrower_float_or_decimal_refuses_a_changed_value(values: list[object], have: pa.DataType, pg_type: str,
                                                             bad: object, stored: str) -> None:
    t = target(("x", pg_type))
    with pytest.raises(TargetError) as err:
        conform(pa.record_batch({"x": pa.array(values, have)}), t)
    message = str(err.value)
    assert message.startswith(f"column 'x': the target column ({pg_type}) cannot hold the value {bad!r} exactly")
    assert f"(it would be stored as {stored}" in message
    assert f'[target] types = {{ x = "{pg_type}" }}' in message


def numbers(column: pa.Array) -> list[object]:
    """Each value as an exact number (NaN as text), so 1.5 and 1.50 compare equal and 0.15 and 0.1500001 do not."""
    texts = column.cast(pa.string()).to_pylist()
    return [None if t is None else "NaN" if Decimal(t).is_nan() else Decimal(t) for t in texts]


@pytest.mark.parametrize(("values", "have", "pg_type"), [
    ([0.1, 2.5, -0.0, None, math.inf, math.nan], pa.float64(), "real"),
    ([1.5, 0.25, None], pa.float64(), "numeric(5,2)"),
    ([Decimal("0.1"), Decimal("12.75"), None], pa.decimal128(10, 2), "double precision"),
])
def test_a_narrower_float_or_decimal_takes_values_it_keeps(values: list[object], have: pa.DataType,
                                                           pg_type: str) -> None:
    t = target(("x", pg_type))
    out = conform(pa.record_batch({"x": pa.array(values, have)}), t)
    assert out.schema.field("x").type == t.arrow_schema().field("x").type
    assert numbers(out.column(0)) == numbers(pa.array(values, have))


def test_point_one_into_real_loads() -> None:
    out = _cast(pa.array([0.1]), pa.float32(), "r", "real")
    assert out.type == pa.float32()
    assert str(out[0].as_py())[:10] == "0.10000000"  # float32's nearest value, whose shortest form is 0.1
    assert out.cast(pa.string()).to_pylist() == ["0.1"]


# ---------------------------------------------------------------------------------------------- exact_cast


@pytest.mark.parametrize("pg_type", [
    "integer", "text", "numeric", "interval", "timestamp without time zone", "character varying", "integer[]",
    "numeric[]", "jsonb", "uuid", "geometry(Point,4326)",
])
def test_a_type_without_a_changing_modifier_is_a_plain_cast(pg_type: str) -> None:
    assert exact_cast("amount", pg_type) == f'"amount"::{pg_type}'


def test_a_plain_cast_quotes_the_column() -> None:
    assert exact_cast('we"ird col', "integer") == '"we""ird col"::integer'


@pytest.mark.parametrize(("pg_type", "unconstrained"), [
    ("character varying(10)", "text"),
    ("character(3)", "bpchar"),
    ("bit(4)", "varbit"),
    ("bit varying(5)", "varbit"),
    ("numeric(5,2)", "numeric"),
    ("numeric(7)", "numeric"),
    ("timestamp(3) without time zone", "timestamp without time zone"),
    ("timestamp(0) with time zone", "timestamp with time zone"),
    ("time(3) without time zone", "time without time zone"),
    ("interval(2)", "interval"),
    ("interval hour to minute", "interval"),
    ("interval day to second(0)", "interval"),
    ("numeric(5,2)[]", "numeric[]"),
    ("character varying(3)[]", "text[]"),
    ("timestamp(3) with time zone[][]", "timestamp with time zone[][]"),
])
def test_a_modifier_that_could_change_a_value_gets_the_guard(pg_type: str, unconstrained: str) -> None:
    sql = exact_cast("amount", pg_type)
    reason = f"E'[does not fit] column \"amount\" holds a value {pg_type} would change: '"
    assert sql == (f'CASE WHEN "amount"::{pg_type}::{unconstrained} IS DISTINCT FROM "amount"::{unconstrained} '
                   f'THEN ({reason} || "amount"::text)::integer::text::{pg_type} ELSE "amount"::{pg_type} END')


def test_the_guard_reason_is_a_safe_literal() -> None:
    sql = exact_cast("it's", "numeric(5,2)")
    assert "E'[does not fit] column \"it\\'s\" holds" in sql
    assert sql.endswith("ELSE " + quote_ident("it's") + "::numeric(5,2) END")


# ---------------------------------------------------------------------------------------------- database errors


class DriverError(Exception):
    """What the ADBC driver raises: the message text and the SQLSTATE as an attribute."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


UNIQUE = ("INTEGRITY: [libpq] Failed to execute query 'INSERT INTO t VALUES (1, 'b', 1)': ERROR:  duplicate key value "
          "violates unique constraint \"t_pkey\"\nDETAIL:  Key (id)=(1) already exists.\n. SQLSTATE: 23505")
CHECK = ("INTEGRITY: [libpq] Failed to execute query 'INSERT INTO t VALUES (2, 'b', -1)': ERROR:  new row for relation "
         "\"t\" violates check constraint \"t_n_check\"\nDETAIL:  Failing row contains (2, b, -1.00).\n. SQLSTATE: 23514")
NOT_NULL = ("INTEGRITY: [libpq] Failed to execute query 'INSERT INTO t (id, n) VALUES (NULL, 1)': ERROR:  null value in "
            "column \"id\" of relation \"t\" violates not-null constraint\nDETAIL:  Failing row contains (null, null, "
            "1.00).\n. SQLSTATE: 23502")
COPY_TOO_LONG = ("INVALID_DATA: [libpq] Failed to execute COPY statement: PGRES_FATAL_ERROR ERROR:  value too long for "
                 "type character varying(3)\nCONTEXT:  COPY t, line 1, column Na\"me\n. SQLSTATE: 22001")
COPY_UNIQUE = ("INTEGRITY: [libpq] Failed to execute COPY statement: PGRES_FATAL_ERROR ERROR:  duplicate key value "
               "violates unique constraint \"t_pkey\"\nDETAIL:  Key (id)=(1) already exists.\nCONTEXT:  COPY t, line 1\n"
               ". SQLSTATE: 23505")


def guard_refusal(failing: str, other: str = "a") -> str:
    """The driver's text when exact_cast refuses a row: the failed query (naming every column) comes first."""
    query = (f'INSERT INTO "t" ("{other}", "{failing}") SELECT {exact_cast(other, "character varying(3)")}, '
             f'{exact_cast(failing, "numeric(5,2)")} FROM pg_temp."engine_batch"')
    return (f"INVALID_DATA: [libpq] Failed to execute query '{query}': ERROR:  invalid input syntax for type integer: "
            f"\"[does not fit] column \"{failing}\" holds a value numeric(5,2) would change: 1.005\"\n. SQLSTATE: 22P02")


@pytest.mark.parametrize(("sqlstate", "condition"), [
    ("23505", "unique_violation"), ("23514", "check_violation"), ("23502", "not_null_violation"),
    ("23503", "foreign_key_violation"), ("22001", "string_data_right_truncation"),
    ("22003", "numeric_value_out_of_range"), ("22P02", "invalid_text_representation"),
    ("21000", "cardinality_violation"),
])
def test_a_refused_row_is_named_by_its_condition(sqlstate: str, condition: str) -> None:
    assert row_rejection(DriverError("ERROR:  boom", sqlstate)) == condition


@pytest.mark.parametrize("sqlstate", ["22P03", "40001", "57P01", "42P01", "", None])
def test_other_errors_are_not_row_refusals(sqlstate: str | None) -> None:
    assert row_rejection(DriverError("ERROR:  boom", sqlstate)) is None


def test_an_error_without_sqlstate_is_not_a_row_refusal() -> None:
    assert row_rejection(RuntimeError("duplicate key value violates unique constraint")) is None


@pytest.mark.parametrize(("text", "column"), [
    (NOT_NULL, "id"),
    (COPY_TOO_LONG, 'Na"me'),
    (COPY_UNIQUE, "(row)"),
    (UNIQUE, "(row)"),
    (CHECK, "(row)"),
    (guard_refusal("n"), "n"),
    (guard_refusal("price", other="name"), "price"),
    (guard_refusal("two words"), "two words"),
])
def test_the_named_column_is_read_from_the_error_not_the_query(text: str, column: str) -> None:
    assert _named_column(text) == column


@pytest.mark.parametrize("text", [
    ("INTEGRITY: [libpq] Failed to execute query 'INSERT INTO t VALUES (NULL, 1)': ERROR:  null value in column "
     "\"Na\"me\" of relation \"t\" violates not-null constraint\nDETAIL:  Failing row contains (null, 1).\n"
     ". SQLSTATE: 23502"),
    guard_refusal('Na"me'),
])
def test_a_column_name_holding_a_quote_is_read_whole(text: str) -> None:
    """PostgreSQL prints a name as it is (a quote stays one quote): the table's own names resolve it."""
    assert _named_column(text, ["id", "Na", 'Na"me']) == 'Na"me'


@pytest.mark.parametrize(("text", "message"), [
    (UNIQUE, 'duplicate key value violates unique constraint "t_pkey" DETAIL:  Key (id)=(1) already exists.'),
    (CHECK, 'new row for relation "t" violates check constraint "t_n_check" '
            "DETAIL:  Failing row contains (2, b, -1.00)."),
    (COPY_TOO_LONG, "value too long for type character varying(3)"),
    (COPY_UNIQUE, 'duplicate key value violates unique constraint "t_pkey" DETAIL:  Key (id)=(1) already exists.'),
    (guard_refusal("n"), 'invalid input syntax for type integer: "[does not fit] column "n" holds a value '
                         'numeric(5,2) would change: 1.005"'),
])
def test_the_database_message_keeps_error_and_detail_only(text: str, message: str) -> None:
    assert _database_message(DriverError(text, None)) == message


def test_a_message_without_error_lines_falls_back() -> None:
    assert _database_message(RuntimeError("connection lost\nsecond line")) == "connection lost"
    assert _database_message(RuntimeError("")) == "RuntimeError"


def test_the_database_message_hides_passwords() -> None:
    text = "ERROR:  could not reach postgresql://app:s3cret@db.example/prod"
    assert _database_message(RuntimeError(text)) == "could not reach postgresql://app:***@db.example/prod"


# ---------------------------------------------------------------------------------------------- target_problems


def plan_with(*names: str) -> Plan:
    return Plan(job="j", dialect="postgresql", from_sql='"src"', key=None, partitions=(), source_rows=0, columns=(),
                target_columns=tuple(TargetColumn(n, "integer", False, n) for n in names))


def test_a_missing_table_is_a_problem_only_when_not_created() -> None:
    assert target_problems(plan_with("id"), TABLE, None, create=True) == []
    problems = target_problems(plan_with("id"), TABLE, None, create=False)
    assert problems == ['`target.table`: "public"."orders" does not exist and target.create = false']


def test_missing_columns_are_listed_with_what_the_table_has() -> None:
    existing = {"id": "integer", "note": "text"}
    problems = target_problems(plan_with("id", "amount", "status"), TABLE, existing, create=True)
    assert len(problems) == 1
    assert problems[0].startswith("`target.table`: \"public\".\"orders\" has no column(s) 'amount', 'status';")
    assert problems[0].endswith("(it has: id, note)")


def test_a_table_with_every_column_has_no_problem() -> None:
    existing = {"status": "text", "id": "integer", "more": "text"}
    assert target_problems(plan_with("id", "status"), TABLE, existing, create=False) == []
