"""Extract stage: one partition of the source as a stream of Arrow record batches (ConnectorX).

The only module that reads source rows. Each partition is its own ConnectorX call so it can be checkpointed
on its own; `arrow_stream` keeps memory bounded by the batch size rather than the partition size.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import connectorx as cx
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from engine import failpoints
from engine.errors import SourceError, TransientError
from engine.plan import Partition, Plan
from engine.typemap import NULL_FLAG, ColumnSpec, arrow_type, override_hint
from engine.urls import DatabaseUrl, redact

_TRANSIENT_WORDS = ("connection refused", "connection reset", "broken pipe", "timed out", "closed",
                    "terminating connection", "shutting down", "lost connection", "gone away", "08006", "57p01",
                    "unexpected eof", "connection error", "i/o error", "error communicating", "kind: io",
                    "bytes remaining on stream")


def _source_error(exc: BaseException, url: DatabaseUrl, partition: Partition, plan: Plan | None = None) -> Exception:
    message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    what = f"reading partition {partition.id} {partition.label()} from {url}: {message}"
    if any(w in message.lower() for w in _TRANSIENT_WORDS):
        return TransientError(what)
    hint = _type_hint(message, plan) if plan is not None else ""
    return SourceError(what + hint)


def _type_hint(message: str, plan: Plan) -> str:
    """What to do when the driver meets a value the plan did not expect (written after planning)."""
    m = (re.search(r"Invalid column type (\w+) at index: \d+, name: (.+)$", message)
         or re.search(r'InvalidColumnType\(\d+, "(.+)", (\w+)\)', message))  # SQLite, two wordings
    if m:
        name, kind = (m.group(2), m.group(1)) if m.re.pattern.startswith("Invalid ") else (m.group(1), m.group(2))
        mapped = next((c.pg_type for c in plan.columns if c.name == name), "")
        return (f". Column {name!r} holds a {kind.upper()} value its declared type cannot carry; `engine check` "
                f"lists such values; declare {override_hint(name, mapped)} to load them unchanged and rerun with "
                "--fresh (a resumed run keeps its plan)")
    if "Couldn't convert the value" in message and ("Date(" in message or "Time(" in message):  # MySQL
        dates = [c.name for c in plan.columns if c.unfit_what.startswith("zero dates")]
        return (f". A zero date (or a zero month or day) is in one of the date columns ({', '.join(dates)}); "
                "`engine check` names it; rerun with --fresh to plan again")
    return ""


_PG_TEXT_SETTINGS = [
    # Values that travel as text must read back the same in any target session: ISO dates, intervals with
    # a sign on every part, floats with every digit, bytea in hex, times with an explicit UTC offset.
    "SET DateStyle = 'ISO, YMD'", "SET IntervalStyle = 'postgres'", "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'", "SET TimeZone = 'UTC'",
]


def session_setup(url: DatabaseUrl, snapshot: str | None = None) -> list[str] | None:
    """Statements run before the read: UTC for MySQL timestamps; text settings and the run's snapshot for
    PostgreSQL."""
    if url.dialect == "mysql":
        return ["SET time_zone = '+00:00'"]
    if url.dialect == "postgresql":
        snapshot_sql = ["BEGIN ISOLATION LEVEL REPEATABLE READ", f"SET TRANSACTION SNAPSHOT '{snapshot}'"]
        return _PG_TEXT_SETTINGS + (snapshot_sql if snapshot else [])
    return None


def read_partition(plan: Plan, partition: Partition, url: DatabaseUrl, batch_rows: int,
                   snapshot: str | None = None) -> Iterator[pa.RecordBatch]:
    """Yield the partition's rows as batches typed as the plan says they travel."""
    sql = plan.select_sql(partition)
    columns = {c.name: c for c in plan.columns}
    kwargs = {}
    setup = session_setup(url, snapshot)
    if setup:
        kwargs["pre_execution_query"] = setup
    if url.sqlite_path is not None and not url.sqlite_path.is_file():
        raise SourceError(f"SQLite file {url.sqlite_path} does not exist")
    try:
        reader = cx.read_sql(url.connectorx, sql, return_type="arrow_stream", batch_size=batch_rows,  # type: ignore[call-overload]
                             **kwargs)
        for batch in reader:
            failpoints.hit("extract.batch")
            if batch.num_rows:
                yield _to_flight(batch, columns)
    except (SourceError, TransientError):
        raise
    except BaseException as exc:  # ConnectorX reports Rust panics as BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise _source_error(exc, url, partition, plan) from None


def _to_flight(batch: pa.RecordBatch, columns: dict[str, ColumnSpec]) -> pa.RecordBatch:
    """The batch as the plan says it travels, without the hidden NULL-flag columns."""
    names, arrays = [], []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if field.name.endswith(NULL_FLAG):
            continue
        spec = columns.get(field.name)
        if spec is not None and spec.tagged == "flag":
            flag = batch.column(field.name + NULL_FLAG)
            column = pc.if_else(pc.equal(flag, 0), column, pa.scalar(None, column.type))
        if spec is not None:
            column = _column_to_flight(column, spec)
        names.append(field.name)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _column_to_flight(column: pa.Array, spec: ColumnSpec) -> pa.Array:
    """One column as the plan says it travels; a value that does not convert exactly stops the read."""
    if spec.tagged in ("text", "hex") and _same_type(column.type, pa.string()):
        column = _untag(column, spec.tagged == "hex")
    elif spec.empty_is_null and _same_type(column.type, pa.string()):
        column = pc.if_else(pc.equal(column, ""), pa.scalar(None, column.type), column)
    wanted = arrow_type(spec.flight)
    if wanted is None or _same_type(column.type, wanted):
        return column
    try:
        return column.cast(wanted)  # safe cast: unparsable text, lost digits and overflow raise
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SourceError(
            f"column {spec.name!r} ({spec.source_type}): a value cannot be read as {spec.pg_type} exactly ({exc}); "
            f"nothing was loaded from this partition; declare {override_hint(spec.name, spec.pg_type)} (or another "
            "type that holds it) to load it unchanged and rerun with --fresh (a resumed run keeps its plan)") from None


def _untag(column: pa.Array, hexed: bool) -> pa.Array:
    """'' -> NULL, 'v<text>' -> <text> (and hex text -> bytes): see `typemap._tagged_sql`."""
    values = pc.utf8_slice_codeunits(column, 1)
    values = pc.if_else(pc.equal(column, ""), pa.scalar(None, values.type), values)
    if not hexed:
        return values
    decoded = pl.Series(values).str.decode("hex").to_arrow()
    return decoded.cast(pa.large_binary())


def _same_type(have: pa.DataType, want: pa.DataType) -> bool:
    if have == want:
        return True
    strings = (pa.string(), pa.large_string(), pa.string_view())
    binaries = (pa.binary(), pa.large_binary(), pa.binary_view())
    if have in strings and want in strings or have in binaries and want in binaries:
        return True
    return False
