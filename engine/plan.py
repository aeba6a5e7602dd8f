"""Plan stage: a job config -> a frozen, JSON-serialisable partition plan.

Partitions are closed ranges [lo, hi] of an integer key, cut by equal width between MIN and MAX, plus one
partition for rows whose key is NULL. The ranges cover every integer from MIN to MAX and NULL, so every
row belongs to exactly one partition. Without a usable integer key the whole source is one partition.
The plan is stored with the run and reused unchanged when the run resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import connectorx as cx
import polars as pl
import pyarrow as pa

from engine.catalog import SourceShape, describe_source, is_integer_column, source_rows
from engine.config import JobConfig
from engine.errors import ConfigError, SourceError
from engine.sql import Dialect, pg_name_problem, quote_ident
from engine.transform import build_transform
from engine.typemap import ColumnSpec, arrow_type, ingest_type, pg_type_for_arrow
from engine.urls import redact

MAX_PARTITIONS = 100_000


@dataclass(frozen=True)
class Partition:
    id: int
    lo: int | None = None
    hi: int | None = None
    null_keys: bool = False

    def where(self, key_sql: str | None) -> str:
        if key_sql is None:
            return ""
        if self.null_keys:
            return f" WHERE {key_sql} IS NULL"
        if self.lo is None and self.hi is None:
            return ""
        if self.lo is None:
            return f" WHERE {key_sql} <= {int(self.hi)}"  # type: ignore[arg-type]
        if self.hi is None:
            return f" WHERE {key_sql} >= {int(self.lo)}"
        return f" WHERE {key_sql} BETWEEN {int(self.lo)} AND {int(self.hi)}"

    def label(self) -> str:
        if self.null_keys:
            return "key IS NULL"
        if self.lo is None and self.hi is None:
            return "whole source"
        return f"[{'-inf' if self.lo is None else self.lo}, {'+inf' if self.hi is None else self.hi}]"


@dataclass(frozen=True)
class TargetColumn:
    name: str
    pg_type: str
    via_text: bool  # sent as text, cast by PostgreSQL on load
    source: str | None  # the source column it comes from unchanged, if any


@dataclass(frozen=True)
class Plan:
    job: str
    dialect: Dialect
    from_sql: str
    key: str | None
    partitions: tuple[Partition, ...]
    source_rows: int
    columns: tuple[ColumnSpec, ...]
    target_columns: tuple[TargetColumn, ...]

    @property
    def key_sql(self) -> str | None:
        return quote_ident(self.key, self.dialect) if self.key else None

    def select_sql(self, partition: Partition) -> str:
        select_list = ", ".join(
            c.select_sql if c.select_sql == quote_ident(c.name, self.dialect)
            else f"{c.select_sql} AS {quote_ident(c.name, self.dialect)}"
            for c in self.columns)
        return f"SELECT {select_list} FROM {self.from_sql}{partition.where(self.key_sql)}"

    def count_sql(self, partition: Partition) -> str:
        return f"SELECT COUNT(*) FROM {self.from_sql}{partition.where(self.key_sql)}"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @staticmethod
    def from_json(text: str | dict[str, Any]) -> Plan:
        data = json.loads(text) if isinstance(text, str) else text
        return Plan(
            job=data["job"], dialect=data["dialect"], from_sql=data["from_sql"], key=data["key"],
            partitions=tuple(Partition(**p) for p in data["partitions"]), source_rows=data["source_rows"],
            columns=tuple(ColumnSpec(**c) for c in data["columns"]),
            target_columns=tuple(TargetColumn(**c) for c in data["target_columns"]))


def choose_key(config: JobConfig, shape: SourceShape) -> str | None:
    by_name = {c.name: c for c in shape.columns}
    wanted = config.source.partition_on
    if wanted is not None:
        integer_columns = [c.name for c in shape.columns if is_integer_column(c)]
        if wanted not in by_name:
            raise ConfigError(str(config.path), [
                f"`source.partition_on`: no column {wanted!r} in the source (names are case-sensitive); "
                f"integer columns: {', '.join(integer_columns) or 'none'}"])
        if not is_integer_column(by_name[wanted]):
            raise ConfigError(str(config.path), [
                f"`source.partition_on`: column {wanted!r} is {by_name[wanted].source_type}, not an integer; "
                f"integer columns: {', '.join(integer_columns) or 'none'} (or remove the key for one partition)"])
        return wanted
    if len(shape.primary_key) == 1 and is_integer_column(by_name[shape.primary_key[0]]):
        return shape.primary_key[0]
    return None


def cut_ranges(lo: int, hi: int, rows: int, config: JobConfig) -> list[tuple[int, int]]:
    """Split [lo, hi] into equal-width closed ranges that together cover every integer in it."""
    wanted = config.source.partitions or math.ceil(max(rows, 1) / config.source.rows_per_partition)
    count = max(1, min(wanted, hi - lo + 1, MAX_PARTITIONS))
    width = hi - lo + 1
    edges = [lo + (width * i) // count for i in range(count + 1)]
    return [(edges[i], edges[i + 1] - 1) for i in range(count)]


def plan_partitions(config: JobConfig, shape: SourceShape, key: str | None) -> tuple[tuple[Partition, ...], int]:
    url = config.source_url
    if key is None:
        total = source_rows(url, f"SELECT COUNT(*) FROM {shape.from_sql}")[0][0]
        return (Partition(0),), int(total)
    k = quote_ident(key, url.dialect)
    lo, hi, total, non_null = source_rows(url, f"SELECT MIN({k}), MAX({k}), COUNT(*), COUNT({k}) FROM {shape.from_sql}")[0]
    total, non_null = int(total or 0), int(non_null or 0)
    if config.source.bounds is not None:
        lo, hi = config.source.bounds
    ranges = cut_ranges(int(lo), int(hi), non_null, config) if lo is not None else []
    parts = [Partition(i, a, b) for i, (a, b) in enumerate(ranges)]
    if config.source.bounds is not None:  # rows outside explicit bounds still belong somewhere
        parts.insert(0, Partition(len(parts), None, int(lo) - 1))
        parts.append(Partition(len(parts) + 1, int(hi) + 1, None))
        parts = [dataclasses.replace(p, id=i) for i, p in enumerate(parts)]
    if total > non_null or not parts:
        parts.append(Partition(len(parts), null_keys=True))
    return tuple(parts), total


def _flight_schema(config: JobConfig, plan_columns: tuple[ColumnSpec, ...], from_sql: str) -> pa.Schema:
    """The Arrow schema batches have in flight; asks the source only for columns typed "auto"."""
    fields = {c.name: arrow_type(c.flight) for c in plan_columns}
    auto = [c for c in plan_columns if fields[c.name] is None]
    if auto:  # only these: ConnectorX may type SQLite columns by their first value and fail on a NULL there
        url = config.source_url
        names = ", ".join(c.select_sql for c in auto)
        try:
            probe = cx.read_sql(url.connectorx, f"SELECT {names} FROM {from_sql} LIMIT 0", return_type="arrow")
        except BaseException as exc:  # ConnectorX raises panics as BaseException
            raise SourceError(f"cannot read column types from the source: {redact(str(exc).splitlines()[0])}") from None
        for column, field in zip(auto, probe.schema, strict=True):
            fields[column.name] = field.type
    return pa.schema([(n, t) for n, t in fields.items()])


def output_schema(config: JobConfig, flight: pa.Schema) -> pl.Schema:
    transform = build_transform(config.transform, config.rules_dir)
    empty = pl.from_arrow(flight.empty_table())
    assert isinstance(empty, pl.DataFrame)
    try:
        return transform(empty.lazy()).collect_schema()
    except Exception as exc:
        raise ConfigError(str(config.path), [f"[transform]: cannot apply to the source columns: {exc}"]) from None


def plan_target_columns(config: JobConfig, columns: tuple[ColumnSpec, ...], flight: pa.Schema,
                        schema: pl.Schema) -> tuple[TargetColumn, ...]:
    renamed = {new: old for old, new in config.transform.rename.items()}
    by_name = {c.name: c for c in columns}
    flight_polars = pl.from_arrow(flight.empty_table()).schema  # type: ignore[union-attr]
    result = []
    for name, dtype in schema.items():
        origin = renamed.get(name, name)
        spec = by_name.get(origin)
        unchanged = spec is not None and name not in config.transform.add and flight_polars.get(origin) == dtype
        if name in config.target.types:
            pg_type = config.target.types[name]
        elif unchanged and spec is not None and spec.pg_type != "auto":
            pg_type = spec.pg_type
        else:
            empty = pl.Series(name, [], dtype).to_arrow()
            pg_type = pg_type_for_arrow(empty.type)
        result.append(TargetColumn(name, pg_type, ingest_type(pg_type) is None, origin if unchanged else None))
    return tuple(result)


def check_target_names(config: JobConfig, targets: tuple[TargetColumn, ...] = ()) -> None:
    """Refuse target names PostgreSQL would truncate rather than load into a table of another name."""
    table = config.target_table
    problems = [p for p in (pg_name_problem(table.schema or "", "`target.table`: schema"),
                            pg_name_problem(table.name, "`target.table`: table")) if p]
    problems += [f"{p}; rename it in [transform] rename" for c in targets
                 if (p := pg_name_problem(c.name, "target column"))]
    if problems:
        raise ConfigError(str(config.path), problems)


def make_plan(config: JobConfig) -> Plan:
    """Inspect the source and build the partition plan (reads catalog and MIN/MAX/COUNT only)."""
    check_target_names(config)
    url = config.source_url
    shape = describe_source(url, config.source_table, config.source.query)
    key = choose_key(config, shape)
    partitions, total = plan_partitions(config, shape, key)
    flight = _flight_schema(config, shape.columns, shape.from_sql)
    columns = tuple(
        c if c.flight != "auto" else dataclasses.replace(c, pg_type=_auto_pg(c, flight.field(c.name).type))
        for c in shape.columns)
    schema = output_schema(config, flight)
    targets = plan_target_columns(config, columns, flight, schema)
    check_target_names(config, targets)
    return Plan(config.job.name, url.dialect, shape.from_sql, key, partitions, total, columns, targets)


def _auto_pg(column: ColumnSpec, dtype: pa.DataType) -> str:
    return column.pg_type if column.pg_type != "auto" else pg_type_for_arrow(dtype)


def flight_schema_of(plan: Plan, config: JobConfig) -> pa.Schema:
    return _flight_schema(config, plan.columns, plan.from_sql)
