"""The Python peers, each as its own process: `python -m perf.peers NAME --src URL --dst URL --table T --target T`.

Each does what that library's documentation shows for copying a table between databases, with the
settings a careful user would pick on a 2-core machine; nothing engine-specific. Imports stay inside the
functions: a peer whose package is missing fails alone, and the engine cases never need these packages.
"""

from __future__ import annotations

import argparse
import sys
import tempfile


def polars_copy(src: str, dst: str, table: str, target: str, limit: int | None) -> int:
    """Whole table into one DataFrame (ConnectorX, 2 partitions), then ADBC bulk ingest into a new table."""
    import polars as pl

    where = f" WHERE id <= {int(limit)}" if limit else ""
    frame = pl.read_database_uri(f"SELECT * FROM {table}{where}", src, engine="connectorx",
                                 partition_on="id", partition_num=2)
    return int(frame.write_database(target, dst, engine="adbc", if_table_exists="replace"))


def pandas_copy(src: str, dst: str, table: str, target: str, limit: int | None) -> int:
    """pandas.read_sql + DataFrame.to_sql over SQLAlchemy/psycopg2 (the common tutorial path)."""
    import pandas as pd
    import sqlalchemy

    source = sqlalchemy.create_engine(src.replace("postgresql://", "postgresql+psycopg2://", 1))
    target_engine = sqlalchemy.create_engine(dst.replace("postgresql://", "postgresql+psycopg2://", 1))
    where = f" WHERE id <= {int(limit)}" if limit else ""
    # psycopg2 hands jsonb back as dicts, which to_sql cannot insert: read it as text, as users end up doing.
    columns = "id, customer_id, status, amount, currency, created_at, updated_at, email, note, payload::text AS payload"
    frame = pd.read_sql(f"SELECT {columns} FROM {table}{where}", source)
    frame.to_sql(target, target_engine, if_exists="replace", index=False, chunksize=10_000)
    return len(frame)


def dlt_copy(src: str, dst: str, table: str, target: str, limit: int | None) -> int:
    """dlt sql_table source with the ConnectorX backend into the postgres destination (dataset `target`)."""
    import os

    import dlt
    from dlt.sources.sql_database import sql_table

    # dlt insists on a password even where the server trusts the client; a password-less URL gets a dummy.
    os.environ.setdefault("DESTINATION__POSTGRES__CREDENTIALS__PASSWORD", "unused")
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    with tempfile.TemporaryDirectory(prefix="perf-dlt-") as pipelines_dir:
        pipeline = dlt.pipeline(pipeline_name="perf_dlt", pipelines_dir=pipelines_dir,
                                destination=dlt.destinations.postgres(dst), dataset_name=target)
        # SQLAlchemy 2.1 defaults postgresql:// to psycopg 3; the reflection needs a driver that is installed.
        resource = sql_table(credentials=src.replace("postgresql://", "postgresql+psycopg2://", 1), table=table,
                             backend="connectorx")
        # csv is dlt's COPY path for Arrow-backed sources into postgres (insert_values is the default).
        info = pipeline.run(resource, write_disposition="replace", loader_file_format="csv")
        info.raise_on_failed_jobs()
        trace = pipeline.last_trace
        counts = trace.last_normalize_info.row_counts if trace and trace.last_normalize_info else {}
        return int(counts.get(table, 0))


PEERS = {"polars": polars_copy, "pandas": pandas_copy, "dlt": dlt_copy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.peers")
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--limit", type=int, default=None, help="copy only rows with id <= LIMIT")
    args = parser.parse_args(argv)
    rows = PEERS[args.peer](args.src, args.dst, args.table, args.target, args.limit)
    print(f"{args.peer}: {rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
