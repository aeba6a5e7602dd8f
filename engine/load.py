"""Load stage: Arrow batches into the PostgreSQL target over bulk ingest (binary COPY).

Every batch is first conformed to the target table's own column types (binary COPY rejects, or worse
misreads, values of another type). Columns no Arrow type can carry exactly are sent as text into a
temporary table and cast by PostgreSQL, with guards that refuse a value a type modifier would change.
What differs between append, replace and upsert is the mode's (`engine.modes`).
Nothing here commits: the caller commits each partition's rows with its checkpoint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from engine import frames, pg
from engine.errors import ConfigError, TargetError
from engine.model import LoadMode, LoadTarget, Plan
from engine.modes import mode_of
from engine.sql import TableName, quote_ident
from engine.typemap import canonical_type, e_literal, override_hint

BATCH_TABLE = "engine_batch"


def create_table_sql(table: TableName, columns: list[tuple[str, str]], key: tuple[str, ...]) -> str:
    body = [f"{quote_ident(n)} {t}" for n, t in columns]
    if key:
        body.append(f"PRIMARY KEY ({', '.join(quote_ident(k) for k in key)})")
    return f"CREATE TABLE {table.quoted()} (\n  " + ",\n  ".join(body) + "\n)"


def target_ddl(plan: Plan, table: TableName, key: tuple[str, ...]) -> str:
    return create_table_sql(table, [(c.name, c.pg_type) for c in plan.target_columns], key)


def target_problems(plan: Plan, table: TableName, existing: dict[str, str] | None, create: bool) -> list[str]:
    """Why the target table cannot take the plan's columns (`existing` is its columns, None when missing)."""
    if existing is None:
        return [] if create else [f"`target.table`: {table} does not exist and target.create = false"]
    missing = [c.name for c in plan.target_columns if c.name not in existing]
    if not missing:
        return []
    return [f"`target.table`: {table} has no column(s) {', '.join(map(repr, missing))}; add them to the table, "
            f"or drop/rename them in [transform] (it has: {', '.join(existing)})"]


def preflight(conn: pg.Connection, plan: Plan, table: TableName, mode: LoadMode, key: tuple[str, ...],
              create: bool) -> list[str]:
    """Every reason the run could not load into the target, found without writing anything."""
    return (target_problems(plan, table, pg.table_columns(conn, table), create)
            + mode_of(mode).problems(conn, table, key))


def prepare_target(conn: pg.Connection, plan: Plan, table: TableName, mode: LoadMode, key: tuple[str, ...],
                   create: bool, resuming: bool) -> LoadTarget:
    """Create what the run writes into, check the target fits the data, and commit that DDL."""
    behaviour = mode_of(mode)
    if table.schema:
        pg.execute(conn, f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
    existing = pg.table_columns(conn, table)
    if existing is None and not create:
        raise ConfigError("target.table", target_problems(plan, table, existing, create))
    write_table = behaviour.write_table(table)
    wanted = {c.name: canonical_type(c.pg_type) for c in plan.target_columns}
    like_existing = existing is not None and {n: canonical_type(t) for n, t in existing.items()} == wanted
    behaviour.prepare(conn, table, target_ddl(plan, write_table, key), like_existing, resuming)
    written = pg.table_columns(conn, write_table)
    problems = target_problems(plan, table, written, create)
    if problems:
        raise ConfigError("target.table", problems)
    problems = behaviour.problems(conn, table, key)
    if problems:
        raise ConfigError("target.key", problems)
    assert written is not None
    columns = tuple((c.name, written[c.name]) for c in plan.target_columns)
    conn.commit()
    return LoadTarget(table, write_table, mode, key, columns, tuple(c.name for c in plan.target_columns if c.via_text))


_STRINGS = (pa.string(), pa.large_string())
_BINARIES = (pa.binary(), pa.large_binary())


def conform(data: pa.RecordBatch | pa.Table, target: LoadTarget) -> pa.RecordBatch:
    """The batch with the target's column types, in the target's column order.

    String and binary columns keep whichever offset width they arrived with (copying them is the most
    expensive thing a cast could do); everything else is cast exactly to what binary COPY needs.
    """
    arrays, pg_types = [], dict(target.columns)
    for field in target.arrow_schema():
        column = data.column(field.name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        arrays.append(_cast(column, field.type, field.name, pg_types[field.name]))
    names = [n for n, _ in target.columns]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _cast(column: pa.Array, wanted: pa.DataType, name: str, pg_type: str) -> pa.Array:
    have = column.type
    if have == wanted or (wanted in _STRINGS and have in _STRINGS) or (wanted in _BINARIES and have in _BINARIES):
        return column
    if pa.types.is_string_view(have) or pa.types.is_binary_view(have):
        return _cast(column.cast(pa.large_string() if pa.types.is_string_view(have) else pa.large_binary()),
                     wanted, name, pg_type)
    if isinstance(wanted, pa.UuidType):
        storage = column.cast(pa.binary(16)) if pa.types.is_fixed_size_binary(have) else frames.uuid_bytes(column)
        return pa.ExtensionArray.from_storage(wanted, storage)
    if isinstance(wanted, pa.JsonType):
        storage = column if have in _STRINGS else column.cast(pa.large_string())
        return pa.ExtensionArray.from_storage(pa.json_(storage.type), storage)
    try:
        cast = column.cast(wanted)  # safe cast: overflow, lost decimals and unparsable text raise
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise TargetError(f"column {name!r}: cannot convert {have} to the target's type {wanted} ({exc}); nothing "
                          f"was changed: declare a type that holds the value in [target] types, e.g. "
                          f"{override_hint(name)}") from None
    changed = _first_changed(column, cast) if _may_round(have, wanted) else None
    if changed is not None:
        accept = override_hint(name).replace('"text"', json.dumps(pg_type))
        raise TargetError(
            f"column {name!r}: the target column ({pg_type}) cannot hold the value {column[changed].as_py()!r} exactly "
            f"(it would be stored as {cast[changed].as_py()!r}); nothing was changed: widen the target column "
            f"(ALTER TABLE … ALTER COLUMN … TYPE) or drop the table to let the engine create it, or, to accept "
            f"PostgreSQL's rounding, declare {accept}")
    return cast


def _may_round(have: pa.DataType, wanted: pa.DataType) -> bool:
    """Casts Arrow's safe mode lets round silently: floats into narrower floats (1e300 -> inf) and between
    floats and decimals (doubles hold 15-17 digits, decimals up to 38)."""
    floating, decimal = pa.types.is_floating, pa.types.is_decimal
    return ((floating(have) and floating(wanted) and have.bit_width > wanted.bit_width)
            or (floating(have) and decimal(wanted)) or (decimal(have) and floating(wanted)))


def _first_changed(column: pa.Array, cast: pa.Array) -> int | None:
    """Position of the first value whose shortest decimal form the cast changes (0.1 stays 0.1 as a real;
    0.123456789 would read back as 0.12345679, 1e300 as inf). Only for the rare casts `_may_round` names."""
    return next(_changed_positions(column, cast), None)


def _changed_positions(column: pa.Array, cast: pa.Array) -> Iterator[int]:
    before, after = column.cast(pa.string()), cast.cast(pa.string())
    same_text = pc.fill_null(pc.equal(before, after), False)
    both_null = pc.and_(pc.is_null(before), pc.is_null(after))
    for i in pc.indices_nonzero(pc.invert(pc.or_(same_text, both_null))).to_pylist():  # e.g. '1.50' vs '1.5'
        was, now = before[i].as_py(), after[i].as_py()
        if was is None or now is None or not _same_number(Decimal(was), Decimal(now)):
            yield int(i)


def values_that_would_change(data: pa.RecordBatch, target: LoadTarget) -> dict[int, tuple[str, str]]:
    """Rows holding a value the target's narrower float or decimal column would store rounded: row position ->
    (column, reason). Such rows are quarantined rather than loaded changed (or failing the whole load)."""
    found: dict[int, tuple[str, str]] = {}
    pg_types = dict(target.columns)
    for field in target.arrow_schema():
        column = data.column(field.name)
        if not _may_round(column.type, field.type):
            continue
        try:
            cast = column.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue  # `conform` reports it, naming the column
        for i in _changed_positions(column, cast):
            found.setdefault(i, (field.name, f"the target column ({pg_types[field.name]}) cannot hold "
                                             f"{column[i].as_py()!r} exactly (it would be stored as {cast[i].as_py()!r})"))
    return found


def _same_number(was: Decimal, now: Decimal) -> bool:
    return (was.is_nan() and now.is_nan()) or was == now


DOES_NOT_FIT = "[does not fit]"  # marks exact_cast's refusal in the error text
# Types whose modifier can change a value on a cast (others, like PostGIS geometry(Point,4326), are left alone).
_MODIFIED_TYPES = ("numeric", "character", "bit", "timestamp", "time", "interval")
_UNCONSTRAINED = {"character varying": "text", "character": "bpchar", "bit": "varbit", "bit varying": "varbit"}


def exact_cast(name: str, pg_type: str) -> str:
    """`column::pg_type`, refusing the row instead of letting a type modifier change the value: casts to
    varchar(n) and bit varying(n) truncate, numeric(p,s), timestamp(p) and interval(p) round. The refusal is a
    failed cast whose input is the reason, so the row is quarantined with it."""
    expr = quote_ident(name)
    dims = pg_type[len(pg_type.rstrip("[]")):]  # arrays: guard per element
    element = pg_type[:len(pg_type) - len(dims)]
    base = re.sub(r"\(\d+(,\d+)?\)", "", element).strip()
    modified = base != element or base.startswith("interval ")  # `interval hour to minute` drops the seconds
    if not modified or not base.startswith(_MODIFIED_TYPES):
        return f"{expr}::{pg_type}"
    base = _UNCONSTRAINED.get(base, "interval" if base.startswith("interval") else base) + dims
    reason = e_literal(f'{DOES_NOT_FIT} column "{name}" holds a value {pg_type} would change: ')
    return (f"CASE WHEN {expr}::{pg_type}::{base} IS DISTINCT FROM {expr}::{base} "
            f"THEN ({reason} || {expr}::text)::integer::text::{pg_type} ELSE {expr}::{pg_type} END")


def write_batches(conn: pg.Connection, target: LoadTarget, reader: pa.RecordBatchReader) -> int:
    """COPY the batches into the target per its mode, inside the caller's transaction."""
    mode = mode_of(target.mode)
    if not mode.always_via_text and not target.has_text_columns:
        return pg.ingest(conn, target.write_table.name, target.write_table.schema, reader, mode="append")
    pg.execute(conn, f"DROP TABLE IF EXISTS pg_temp.{quote_ident(BATCH_TABLE)}")
    rows = pg.ingest(conn, BATCH_TABLE, None, reader, mode="create", temporary=True)
    names = ", ".join(quote_ident(n) for n, _ in target.columns)
    casts = ", ".join(exact_cast(n, t) for n, t in target.columns)
    # the source's values go in as they are, as COPY puts them, into a GENERATED ALWAYS identity too
    pg.execute(conn, f"INSERT INTO {target.write_table.quoted()} ({names}) OVERRIDING SYSTEM VALUE SELECT {casts} "
                     f"FROM pg_temp.{quote_ident(BATCH_TABLE)}{mode.insert_clause(target)}")
    pg.execute(conn, f"DROP TABLE pg_temp.{quote_ident(BATCH_TABLE)}")
    return rows


# Errors PostgreSQL raises for a row's values, not for the load as a whole: the row is quarantined with the
# database's own message. 22P03 (bad binary format) is not among them: it would mean a wrong batch type.
_ROW_ERRORS = {"23505": "unique_violation", "23503": "foreign_key_violation", "23514": "check_violation",
               "23502": "not_null_violation", "23P01": "exclusion_violation", "21000": "cardinality_violation",
               "22001": "string_data_right_truncation", "22003": "numeric_value_out_of_range",
               "22P02": "invalid_text_representation", "22007": "invalid_datetime_format",
               "22008": "datetime_field_overflow", "22023": "invalid_parameter_value",
               "22P05": "untranslatable_character", "22021": "character_not_in_repertoire",
               "22026": "string_data_length_mismatch"}
def row_rejection(exc: BaseException) -> str | None:
    """The condition name when the target refused a row's values (constraint, length, range), else None."""
    return _ROW_ERRORS.get(getattr(exc, "sqlstate", None) or "")
