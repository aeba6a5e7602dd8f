"""Extract stage: one partition of the source as a stream of Arrow record batches (ConnectorX).

The only module that reads source rows. Each partition is its own ConnectorX call so it can be checkpointed
on its own; `arrow_stream` keeps memory bounded by the batch size rather than the partition size.
"""

from __future__ import annotations

from collections.abc import Iterator

import connectorx as cx
import pyarrow as pa
import pyarrow.compute as pc

from engine import failpoints
from engine.errors import SourceError, TransientError
from engine.plan import Partition, Plan
from engine.typemap import arrow_type
from engine.urls import DatabaseUrl, redact

_TRANSIENT_WORDS = ("connection refused", "connection reset", "broken pipe", "timed out", "closed",
                    "terminating connection", "shutting down", "lost connection", "gone away", "08006", "57p01",
                    "unexpected eof", "connection error", "i/o error", "error communicating", "kind: io",
                    "bytes remaining on stream")


def _source_error(exc: BaseException, url: DatabaseUrl, partition: Partition) -> Exception:
    message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    what = f"reading partition {partition.id} {partition.label()} from {url}: {message}"
    if any(w in message.lower() for w in _TRANSIENT_WORDS):
        return TransientError(what)
    return SourceError(what)


def session_setup(url: DatabaseUrl, snapshot: str | None = None) -> list[str] | None:
    """Statements run before the read: UTC for MySQL timestamps; the run's snapshot for PostgreSQL."""
    if url.dialect == "mysql":
        return ["SET time_zone = '+00:00'"]
    if url.dialect == "postgresql" and snapshot:
        return ["BEGIN ISOLATION LEVEL REPEATABLE READ", f"SET TRANSACTION SNAPSHOT '{snapshot}'"]
    return None


def read_partition(plan: Plan, partition: Partition, url: DatabaseUrl, batch_rows: int,
                   snapshot: str | None = None) -> Iterator[pa.RecordBatch]:
    """Yield the partition's rows as batches typed as the plan says they travel."""
    sql = plan.select_sql(partition)
    casts = {c.name: arrow_type(c.flight) for c in plan.columns}
    empty_is_null = frozenset(c.name for c in plan.columns if c.empty_is_null)
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
                yield _to_flight(batch, casts, empty_is_null)
    except (SourceError, TransientError):
        raise
    except BaseException as exc:  # ConnectorX reports Rust panics as BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise _source_error(exc, url, partition) from None


def _to_flight(batch: pa.RecordBatch, casts: dict[str, pa.DataType | None],
               empty_is_null: frozenset[str] = frozenset()) -> pa.RecordBatch:
    columns = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        wanted = casts.get(field.name)
        if field.name in empty_is_null and _same_type(column.type, pa.string()):
            column = pc.if_else(pc.equal(column, ""), pa.scalar(None, column.type), column)
        if wanted is not None and not _same_type(column.type, wanted):
            column = column.cast(wanted)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _same_type(have: pa.DataType, want: pa.DataType) -> bool:
    if have == want:
        return True
    strings = (pa.string(), pa.large_string(), pa.string_view())
    binaries = (pa.binary(), pa.large_binary(), pa.binary_view())
    if have in strings and want in strings or have in binaries and want in binaries:
        return True
    return False
