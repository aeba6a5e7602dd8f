"""Extract stage: one partition of the source as a stream of Arrow batches typed as the plan says they travel.

Each partition is its own read (through the source adapter) so it can be checkpointed on its own; the stream
keeps memory bounded by the batch size rather than the partition size.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from engine import failpoints, frames
from engine.errors import SourceError
from engine.model import Partition, Plan
from engine.source import Reader, read_batches
from engine.typemap import NULL_FLAG, ColumnSpec, arrow_type, override_hint
from engine.urls import DatabaseUrl


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
                "`engine plan` names it; rerun with --fresh to plan again (a new plan quarantines such rows)")
    return ""


def read_partition(plan: Plan, partition: Partition, url: DatabaseUrl, batch_rows: int,
                   snapshot: str | None = None, reader: Reader = "connectorx") -> Iterator[pa.RecordBatch]:
    """Yield the partition's rows as batches typed as the plan says they travel."""
    columns = {c.name: c for c in plan.columns}
    what = f"reading partition {partition.id} {partition.label()} from {url}"
    try:
        for batch in read_batches(url, plan.select_sql(partition), batch_rows, snapshot, what, reader):
            failpoints.hit("extract.batch")
            if batch.num_rows:
                yield _to_flight(batch, columns)
    except SourceError as exc:
        hint = _type_hint(str(exc), plan)
        if hint:
            raise SourceError(str(exc) + hint) from None
        raise


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
    if isinstance(column.type, pa.BaseExtensionType):  # the ADBC reader's uuid, json and numeric-as-text
        uuid = column.type.extension_name == "arrow.uuid"
        column = column.storage
        if uuid:
            column = frames.uuid_text(column)
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
    return frames.hex_decoded(values).cast(pa.large_binary())


def _same_type(have: pa.DataType, want: pa.DataType) -> bool:
    if have == want:
        return True
    strings = (pa.string(), pa.large_string(), pa.string_view())
    binaries = (pa.binary(), pa.large_binary(), pa.binary_view())
    if have in strings and want in strings or have in binaries and want in binaries:
        return True
    return False
