"""Load stage: Arrow batches into the PostgreSQL target over ADBC bulk ingest (binary COPY).

Every batch is first conformed to the target table's own column types (binary COPY rejects, or worse
misreads, values of another type). Columns no Arrow type can carry exactly are sent as text into a
temporary table and cast by PostgreSQL. Modes:
- append:  COPY straight into the table (or through the temporary table when a column needs a cast);
- replace: COPY into a staging table `<table>__engine_new`; `swap` replaces the table in one transaction;
- upsert:  COPY into a temporary table, then INSERT … ON CONFLICT (key) DO UPDATE.
Nothing here commits: the caller commits each partition's rows with its checkpoint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from engine import pg
from engine.catalog import target_columns, target_unique_keys
from engine.config import LoadMode
from engine.errors import ConfigError, TargetError
from engine.plan import Plan
from engine.sql import TableName, quote_ident
from engine.typemap import e_literal, ingest_type, override_hint
from engine.urls import redact

STAGING_SUFFIX = "__engine_new"
BATCH_TABLE = "engine_batch"


@dataclass(frozen=True)
class LoadTarget:
    """Where and how a run writes: serialisable, so partition tasks can run anywhere."""

    table: TableName
    write_table: TableName  # the table partitions COPY into (the staging table for replace)
    mode: LoadMode
    key: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]  # (name, PostgreSQL type) of the loaded columns, in batch order
    # Columns whose values travel as text whatever the target type (e.g. a timestamp holding 'infinity'):
    # binary COPY cannot carry them, PostgreSQL's cast can.
    text_columns: tuple[str, ...] = ()

    def _ingest_type(self, name: str, pg_type: str) -> pa.DataType | None:
        return None if name in self.text_columns else ingest_type(pg_type)

    @property
    def via_text(self) -> bool:
        return self.mode == "upsert" or any(self._ingest_type(n, t) is None for n, t in self.columns)

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(n, self._ingest_type(n, t) or pa.large_string()) for n, t in self.columns])


_ALIASES = {"timestamptz": "timestamp with time zone", "timestamp": "timestamp without time zone",
            "time": "time without time zone", "timetz": "time with time zone", "int": "integer", "int4": "integer",
            "int8": "bigint", "int2": "smallint", "bool": "boolean", "float8": "double precision", "float4": "real",
            "varchar": "character varying", "char": "character", "decimal": "numeric"}


def canonical_type(pg_type: str) -> str:
    """A PostgreSQL type name as format_type() spells it, so declared and existing types compare equal."""
    t = " ".join(pg_type.lower().split())
    base, paren, rest = t.partition("(")
    base = _ALIASES.get(base.strip(), base.strip())
    return base + (paren + rest.replace(" ", "") if paren else "")


def create_table_sql(table: TableName, columns: list[tuple[str, str]], key: tuple[str, ...]) -> str:
    body = [f"{quote_ident(n)} {t}" for n, t in columns]
    if key:
        body.append(f"PRIMARY KEY ({', '.join(quote_ident(k) for k in key)})")
    return f"CREATE TABLE {table.quoted()} (\n  " + ",\n  ".join(body) + "\n)"


def target_ddl(plan: Plan, table: TableName, key: tuple[str, ...]) -> str:
    return create_table_sql(table, [(c.name, c.pg_type) for c in plan.target_columns], key)


def prepare_target(conn: pg.Connection, plan: Plan, table: TableName, mode: LoadMode, key: tuple[str, ...],
                   create: bool, resuming: bool) -> LoadTarget:
    """Create what the run writes into, check the target fits the data, and commit that DDL."""
    if table.schema:
        pg.execute(conn, f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
    existing = target_columns(conn, table)
    if existing is None and not create:
        raise ConfigError("target.table", [f"`target.table`: {table} does not exist and target.create = false"])
    write_table = table.with_suffix(STAGING_SUFFIX) if mode == "replace" else table
    if mode == "replace":
        # The new table keeps the old one's definition (indexes, defaults) when its columns are exactly the job's.
        staged = target_columns(conn, write_table) if resuming else None
        if staged is None:
            pg.execute(conn, f"DROP TABLE IF EXISTS {write_table.quoted()}")
            wanted = {c.name: canonical_type(c.pg_type) for c in plan.target_columns}
            fits = existing is not None and {n: canonical_type(t) for n, t in existing.items()} == wanted
            pg.execute(conn, f"CREATE TABLE {write_table.quoted()} (LIKE {table.quoted()} INCLUDING ALL)" if fits
                       else target_ddl(plan, write_table, key))
        if existing is None:  # the swap needs a table to replace
            pg.execute(conn, f"CREATE TABLE {table.quoted()} (LIKE {write_table.quoted()})")
    elif existing is None:
        pg.execute(conn, target_ddl(plan, table, key))
    written = target_columns(conn, write_table)
    assert written is not None
    missing = [c.name for c in plan.target_columns if c.name not in written]
    if missing:
        raise ConfigError("target.table", [
            f"`target.table`: {table} has no column(s) {', '.join(map(repr, missing))}; add them to the table, "
            f"or drop/rename them in [transform] (it has: {', '.join(written)})"])
    if mode == "upsert" and set(key) not in target_unique_keys(conn, table):
        raise ConfigError("target.key", [
            f"`target.key`: {table} has no unique index or primary key on ({', '.join(key)}); "
            "upsert needs one (CREATE UNIQUE INDEX … or let the engine create the table)"])
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
        if pa.types.is_fixed_size_binary(have):
            storage = column.cast(pa.binary(16))
        else:
            hexed = pl.Series(column).cast(pl.String).str.replace_all("-", "").str.decode("hex")
            storage = hexed.to_arrow().cast(pa.binary(16))
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
    before, after = column.cast(pa.string()), cast.cast(pa.string())
    same_text = pc.fill_null(pc.equal(before, after), False)
    both_null = pc.and_(pc.is_null(before), pc.is_null(after))
    for i in pc.indices_nonzero(pc.invert(pc.or_(same_text, both_null))).to_pylist():  # e.g. '1.50' vs '1.5'
        was, now = before[i].as_py(), after[i].as_py()
        if was is None or now is None or not _same_number(Decimal(was), Decimal(now)):
            return int(i)
    return None


def _same_number(was: Decimal, now: Decimal) -> bool:
    return (was.is_nan() and now.is_nan()) or was == now


_DOES_NOT_FIT = "[does not fit]"
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
    reason = e_literal(f'{_DOES_NOT_FIT} column "{name}" holds a value {pg_type} would change: ')
    return (f"CASE WHEN {expr}::{pg_type}::{base} IS DISTINCT FROM {expr}::{base} "
            f"THEN ({reason} || {expr}::text)::integer::text::{pg_type} ELSE {expr}::{pg_type} END")


def write_batches(conn: pg.Connection, target: LoadTarget, reader: pa.RecordBatchReader) -> int:
    """COPY the batches into the target per its mode, inside the caller's transaction."""
    if not target.via_text:
        return pg.ingest(conn, target.write_table.name, target.write_table.schema, reader, mode="append")
    pg.execute(conn, f"DROP TABLE IF EXISTS pg_temp.{quote_ident(BATCH_TABLE)}")
    rows = pg.ingest(conn, BATCH_TABLE, None, reader, mode="create", temporary=True)
    names = ", ".join(quote_ident(n) for n, _ in target.columns)
    casts = ", ".join(exact_cast(n, t) for n, t in target.columns)
    sql = f"INSERT INTO {target.write_table.quoted()} ({names}) SELECT {casts} FROM pg_temp.{quote_ident(BATCH_TABLE)}"
    if target.mode == "upsert":
        keys = ", ".join(quote_ident(k) for k in target.key)
        updates = [f"{quote_ident(n)} = EXCLUDED.{quote_ident(n)}" for n, _ in target.columns if n not in target.key]
        sql += f" ON CONFLICT ({keys}) " + (f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING")
    pg.execute(conn, sql)
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
MAX_REJECTED_ROWS = 1000  # per partition: beyond this the data or the table is wrong, not a few rows


@dataclass(frozen=True)
class RejectedRow:
    """A row the target refused: the one-row batch as sent, and why."""

    row: pa.RecordBatch
    condition: str  # PostgreSQL's name for the error, e.g. check_violation
    column: str  # the column the message names, or "(row)"
    message: str


def row_rejection(exc: BaseException) -> str | None:
    """The condition name when the target refused a row's values (constraint, length, range), else None."""
    return _ROW_ERRORS.get(getattr(exc, "sqlstate", None) or "")


def write_isolating(conn: pg.Connection, target: LoadTarget, batches: Iterator[pa.RecordBatch],
                    rejected: list[RejectedRow]) -> int:
    """Load batch by batch, each under a savepoint; split a refused batch in halves until the rows the target
    refuses are alone, and hand those back instead of failing. Needs an explicit transaction on an autocommit
    session (the driver cannot roll back to a savepoint once a statement failed otherwise)."""
    loaded = 0
    for batch in batches:
        loaded += _load_or_split(conn, target, batch, rejected)
    return loaded


def _load_or_split(conn: pg.Connection, target: LoadTarget, batch: pa.RecordBatch, rejected: list[RejectedRow]) -> int:
    pg.execute(conn, "SAVEPOINT engine_rows")
    try:
        rows = write_batches(conn, target, pa.RecordBatchReader.from_batches(batch.schema, [batch]))
        pg.execute(conn, "RELEASE SAVEPOINT engine_rows")
        return rows
    except Exception as exc:
        condition = row_rejection(exc)
        if condition is None:
            raise
        pg.execute(conn, "ROLLBACK TO SAVEPOINT engine_rows")
        pg.execute(conn, "RELEASE SAVEPOINT engine_rows")  # else every refusal nests the next savepoint deeper
        if batch.num_rows > 1:
            half = batch.num_rows // 2
            return (_load_or_split(conn, target, batch.slice(0, half), rejected)
                    + _load_or_split(conn, target, batch.slice(half), rejected))
        message = _database_message(exc)
        if _DOES_NOT_FIT in message:  # exact_cast's refusal: its reason is the cast's input
            condition, message = "value_does_not_fit", message.split(_DOES_NOT_FIT, 1)[1].strip().rstrip('"')
        rejected.append(RejectedRow(batch, condition, _named_column(str(exc)), message))
        if len(rejected) > MAX_REJECTED_ROWS:
            raise TargetError(f"the target refused more than {MAX_REJECTED_ROWS:,} rows of this partition "
                              f"(e.g. {rejected[0].condition}: {rejected[0].message}); fix the target table's "
                              "constraints or the data, then rerun to resume") from None
        return 0


def _database_message(exc: BaseException) -> str:
    """PostgreSQL's ERROR and DETAIL lines, without the driver's wrapping."""
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [re.sub(r"^.*?ERROR:\s*", "", line) for line in lines if "ERROR:" in line or line.startswith("DETAIL:")]
    return redact(" ".join(kept) or (lines[0] if lines else type(exc).__name__))


def _named_column(message: str) -> str:
    """The column PostgreSQL's message names (`column "x"`, or COPY's context `…, line 3, column x: …`)."""
    message = message.split("ERROR:", 1)[-1]  # the driver puts the failed query first
    m = re.search(r'column "((?:[^"]|"")+)"', message)
    if m:
        return m.group(1).replace('""', '"')
    m = re.search(r"COPY [^\n]*?, line \d+, column (.+?)(?::|\n|$)", message)
    return m.group(1) if m else "(row)"


def swap_in(conn: pg.Connection, target: LoadTarget) -> None:
    """Replace mode: the staging table becomes the table in one transaction (readers see old or new)."""
    pg.execute(conn, f"LOCK TABLE {target.table.quoted()} IN ACCESS EXCLUSIVE MODE")
    pg.execute(conn, f"DROP TABLE {target.table.quoted()}")
    pg.execute(conn, f"ALTER TABLE {target.write_table.quoted()} RENAME TO {quote_ident(target.table.name)}")
    _drop_staging_suffix(conn, target.table)


def _drop_staging_suffix(conn: pg.Connection, table: TableName) -> None:
    """Indexes (and with them their constraints) and owned sequences of the swapped-in table were named after
    the staging table: give them the names the old table's had (`orders_pkey`, not `orders__engine_new_pkey`)."""
    owned = pg.fetch_all(conn, """
        SELECT c.relname, c.relkind::text, n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = to_regclass($1))
           OR c.oid IN (SELECT objid FROM pg_depend WHERE refobjid = to_regclass($1)
                        AND classid = 'pg_class'::regclass AND deptype IN ('a', 'i'))""", (table.quoted(),))
    for name, kind, schema in owned:
        if STAGING_SUFFIX not in name or kind not in ("i", "S"):
            continue
        wanted = name.replace(STAGING_SUFFIX, "", 1)
        if pg.fetch_all(conn, "SELECT to_regclass($1)", (f"{quote_ident(schema)}.{quote_ident(wanted)}",))[0][0]:
            continue  # the name is taken by something else: keep the staging name rather than fail the swap
        what = "INDEX" if kind == "i" else "SEQUENCE"
        pg.execute(conn, f"ALTER {what} {quote_ident(schema)}.{quote_ident(name)} RENAME TO {quote_ident(wanted)}")


def count_rows(conn: pg.Connection, table: TableName) -> int:
    return int(pg.fetch_all(conn, f"SELECT COUNT(*) FROM {table.quoted()}")[0][0])
