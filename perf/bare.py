"""A bare copy through the engine's libraries: `python -m perf.bare --reader adbc|connectorx --src … --dst …`.

The engine's partitions (key ranges of `--rows-per-partition` rows) read on `--workers` threads, each batch
handed straight to ADBC bulk ingest with the reader's own types, into a table ADBC creates from them: no
types kept, no checks, no checkpoints, no counts, no pipeline. It is what the libraries themselves spend to
turn rows into Arrow and back; an engine that looks at its rows (validation needs them as Arrow) pays at least
that. Run it from the engine's environment (`.venv`), as the engine runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
from adbc_driver_postgresql import dbapi

BATCH_ROWS = 8_192  # the engine's default batch


def _batches(reader: str, src: str, sql: str) -> Iterator[pa.RecordBatch]:
    if reader == "connectorx":
        import connectorx as cx

        yield from cx.read_sql(src, sql, return_type="arrow_stream", batch_size=BATCH_ROWS)
        return
    with dbapi.connect(src) as conn, conn.cursor() as cur:
        cur.execute(sql)
        yield from cur.fetch_record_batch()


def _copy(reader: str, src: str, dst: str, sql: str, target: str, mode: str) -> int:
    batches = _batches(reader, src, sql)
    first = next(batches)
    stream = pa.RecordBatchReader.from_batches(first.schema, _chain(first, batches))
    with dbapi.connect(dst) as conn, conn.cursor() as cur:
        rows = int(cur.adbc_ingest(target, stream, mode=mode))
        conn.commit()
    return rows


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.bare", description=__doc__.splitlines()[0])
    parser.add_argument("--reader", choices=("adbc", "connectorx"), required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--table", required=True, help="source table, with an integer key `id` from 1 up")
    parser.add_argument("--target", required=True, help="a table this makes (the first partition creates it)")
    parser.add_argument("--rows", type=int, required=True, help="rows in the source table")
    parser.add_argument("--rows-per-partition", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    step = args.rows_per_partition
    queries = [f"SELECT * FROM {args.table} WHERE id BETWEEN {lo} AND {lo + step - 1}"
               for lo in range(1, args.rows + 1, step)]
    moved = _copy(args.reader, args.src, args.dst, queries[0], args.target, "create")
    with ThreadPoolExecutor(args.workers) as pool:
        moved += sum(pool.map(lambda sql: _copy(args.reader, args.src, args.dst, sql, args.target, "append"),
                              queries[1:]))
    print(f"bare {args.reader}: {moved} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
