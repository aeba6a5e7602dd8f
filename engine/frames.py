"""Arrow <-> Polars: the one place batches change representation.

Batches travel between stages as Arrow; a stage that computes with Polars converts here, so the copies (and
the extension types Polars does not take, such as json and uuid) are handled once.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa


def frame(data: pa.RecordBatch | pa.Table) -> pl.DataFrame:
    """A batch as a Polars frame (zero-copy where the types allow)."""
    result = pl.from_arrow(data)
    assert isinstance(result, pl.DataFrame)
    return result


def one_batch(table: pa.Table) -> pa.RecordBatch:
    """A table as one record batch (its chunks combined; an empty batch of its schema when it has no rows)."""
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


def frame_by_storage(data: pa.RecordBatch) -> pl.DataFrame:
    """A batch as a Polars frame, extension columns (json, uuid) by their storage."""
    columns = [c.storage if isinstance(c, pa.ExtensionArray) else c for c in data.columns]
    return frame(pa.table(columns, names=data.schema.names))


def series(column: pa.Array | pa.ChunkedArray) -> pl.Series:
    return pl.Series(column)


def arrow(frame_: pl.DataFrame) -> pa.Table:
    return frame_.to_arrow()


def value_bytes(values: pl.Series) -> memoryview:
    """The bytes of a fixed-width series without nulls, in memory order (what a file of its values holds)."""
    data = values.rechunk().to_arrow()
    width = data.type.bit_width // 8
    return memoryview(data.buffers()[1])[data.offset * width:(data.offset + len(data)) * width]


def uint64_series(data: bytes) -> pl.Series:
    """Unsigned 64-bit values from their bytes in memory order (what `value_bytes` wrote), without a copy."""
    return pl.Series(pa.Array.from_buffers(pa.uint64(), len(data) // 8, [None, pa.py_buffer(data)]))


def mask(keep: pl.Series) -> pa.Array:
    """A Polars boolean series as an Arrow filter."""
    return keep.to_arrow()


def empty_frame(schema: pa.Schema) -> pl.DataFrame:
    return frame(schema.empty_table())


def arrow_type_of(dtype: pl.DataType) -> pa.DataType:
    """The Arrow type Polars writes a column of `dtype` as."""
    return pl.Series("x", [], dtype).to_arrow().type


def hex_decoded(text: pa.Array) -> pa.Array:
    """Hex text -> bytes."""
    return pl.Series(text).str.decode("hex").to_arrow()


def uuid_bytes(text: pa.Array) -> pa.Array:
    """UUIDs as text (with or without dashes) -> their 16 bytes."""
    return pl.Series(text).cast(pl.String).str.replace_all("-", "").str.decode("hex").to_arrow().cast(pa.binary(16))


def uuid_text(data: pa.Array) -> pa.Array:
    """UUIDs as 16 bytes -> their canonical text (lower-case hex, dashed 8-4-4-4-12)."""
    hexed = pl.DataFrame({"h": pl.Series(data.cast(pa.binary())).bin.encode("hex")})
    parts = [pl.col("h").str.slice(start, length) for start, length in ((0, 8), (8, 4), (12, 4), (16, 4), (20, 12))]
    return hexed.select(pl.concat_str(parts, separator="-")).to_series().to_arrow()
