"""The frozen types every stage shares: the plan, its partitions, the target it writes, a run's status.

Only data and the SQL a partition's own shape implies live here; the planner builds these, the other stages
read them, so this module imports nothing of the engine but names and the type map.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from engine.config import LoadMode, TransformSection
from engine.ruleconfig import Rule
from engine.rulestats import RuleStats
from engine.sql import Dialect, TableName, quote_ident
from engine.typemap import ColumnSpec, ingest_type

RunStatus = Literal["running", "failed", "succeeded", "abandoned"]
PHASES = ("extract", "transform", "validate", "load", "commit")


PartitionKind = Literal["key", "blocks", "keyset"]


@dataclass(frozen=True)
class Partition:
    """One part of the source: a closed range [lo, hi] of the integer key (`kind = "key"`; None = unbounded),
    or of the table's block numbers (`kind = "blocks"`, read as a TID range scan; hi None = to the end), or of
    a primary key of any orderable type (`kind = "keyset"`: from `lower` included to `upper` excluded, each a
    row of SQL literals the planner rendered safely; None = unbounded)."""

    id: int
    lo: int | None = None
    hi: int | None = None
    null_keys: bool = False
    kind: PartitionKind = "key"
    lower: tuple[str, ...] | None = None
    upper: tuple[str, ...] | None = None

    def where(self, key_sql: str | None, keyset: tuple[str, ...] = ()) -> str:
        if self.kind == "keyset":
            conditions = [keyset_condition(list(keyset), bound, op)
                          for bound, op in ((self.lower, ">="), (self.upper, "<")) if bound is not None]
            return " WHERE " + " AND ".join(f"({c})" for c in conditions) if conditions else ""
        if self.kind == "blocks":
            first = f"ctid >= '({int(self.lo or 0)},0)'::tid"
            return f" WHERE {first}" if self.hi is None else f" WHERE {first} AND ctid < '({int(self.hi) + 1},0)'::tid"
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
        if self.kind == "keyset":
            return f"keys from {_short(self.lower, 'the first')} to before {_short(self.upper, 'the end')}"
        if self.kind == "blocks":
            return f"blocks [{self.lo}, {'end' if self.hi is None else self.hi}]"
        if self.null_keys:
            return "key IS NULL"
        if self.lo is None and self.hi is None:
            return "whole source"
        return f"[{'-inf' if self.lo is None else self.lo}, {'+inf' if self.hi is None else self.hi}]"


def _short(bound: tuple[str, ...] | None, none: str) -> str:
    text = none if bound is None else "(" + ", ".join(bound) + ")"
    return text if len(text) <= 60 else text[:57] + "..."


def keyset_condition(columns: list[str], values: tuple[str, ...], op: str) -> str:
    """(c1, …, cn) op (v1, …, vn) in lexicographic order, op '>=' or '<', spelled out so that every server's
    range optimizer uses the key's index: c1 >= v1 AND (c1 > v1 OR (c1 = v1 AND (c2 > v2 OR …)))."""
    strict = ">" if op == ">=" else "<"
    if len(columns) == 1:
        return f"{columns[0]} {op} {values[0]}"
    last = f"{columns[-1]} {op} {values[-1]}"
    for column, value in zip(reversed(columns[:-1]), reversed(values[:-1]), strict=True):
        last = f"{column} {strict} {value} OR ({column} = {value} AND ({last}))"
    return f"{columns[0]} {strict}= {values[0]} AND ({last})"


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
    # Block-range plans: the source table's file and write counters at plan time (`partitions.BlockState`);
    # a resume compares them with the table's now.
    source_state: dict[str, int] | None = None
    keyset: tuple[str, ...] = ()  # keyset plans: the primary key's columns, in key order

    def where(self, partition: Partition) -> str:
        keyset = tuple(quote_ident(k, self.dialect) for k in self.keyset)
        return partition.where(self.key_sql, keyset)

    @property
    def key_sql(self) -> str | None:
        return quote_ident(self.key, self.dialect) if self.key else None

    @property
    def target_key(self) -> str | None:
        """The target column holding the partition key unchanged, if any (content checks select by it)."""
        return next((c.name for c in self.target_columns if self.key and c.source == self.key), None)

    def select_sql(self, partition: Partition) -> str:
        select_list = ", ".join(
            c.select_sql if c.select_sql == quote_ident(c.name, self.dialect)
            else f"{c.select_sql} AS {quote_ident(c.name, self.dialect)}"
            for c in self.columns)
        return f"SELECT {select_list} FROM {self.from_sql}{self.where(partition)}"

    def count_sql(self, partition: Partition) -> str:
        return f"SELECT COUNT(*) FROM {self.from_sql}{self.where(partition)}"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @staticmethod
    def from_json(text: str | dict[str, Any]) -> Plan:
        data = json.loads(text) if isinstance(text, str) else text
        return Plan(
            job=data["job"], dialect=data["dialect"], from_sql=data["from_sql"], key=data["key"],
            partitions=tuple(_partition(p) for p in data["partitions"]), source_rows=data["source_rows"],
            columns=tuple(ColumnSpec(**c) for c in data["columns"]),
            target_columns=tuple(TargetColumn(**c) for c in data["target_columns"]),
            source_state=data.get("source_state"), keyset=tuple(data.get("keyset", ())))


def _partition(data: dict[str, Any]) -> Partition:
    bounds = {k: None if data.get(k) is None else tuple(data[k]) for k in ("lower", "upper")}
    return Partition(**{**data, **bounds})


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

    def ingest_type(self, name: str, pg_type: str) -> pa.DataType | None:
        return None if name in self.text_columns else ingest_type(pg_type)

    @property
    def has_text_columns(self) -> bool:
        return any(self.ingest_type(n, t) is None for n, t in self.columns)

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(n, self.ingest_type(n, t) or pa.large_string()) for n, t in self.columns])


@dataclass(frozen=True)
class PartitionTask:
    """One partition's work, self-contained and picklable: it runs the same in a thread or on a Dask worker."""

    job: str
    run_id: str
    plan: Plan
    partition: Partition
    source_url: str
    target_url: str
    target: LoadTarget
    transform: TransformSection
    rules_dir: str
    schema_ref: str | None
    batch_rows: int
    queue_depth: int
    checkpoints: bool
    staging_dir: str
    stage_batches: bool
    retries: int
    snapshot: str | None = None  # the source snapshot to read as of (PostgreSQL)
    reconnect_for: float = 0.0  # seconds to wait for a server that is down, per outage
    verify_content: bool = False
    keep_connection: bool = True  # reuse the target session for the next partition (threads, not Dask workers)
    owner: str = ""  # the invocation running the run: a partition commits only while it still is
    reader: Literal["connectorx", "adbc", "copy"] = "connectorx"  # `[source] reader`
    rules: tuple[Rule, ...] = ()  # [[validate.rules]]

    def __repr__(self) -> str:  # URLs carry secrets
        return f"PartitionTask(job={self.job!r}, run={self.run_id!r}, partition={self.partition.id})"


@dataclass
class PartitionResult:
    partition_id: int
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    attempts: int = 1
    bytes: int = 0  # Arrow bytes read
    started: float = 0.0  # epoch seconds, first attempt
    ended: float = 0.0
    worker: str = ""  # process and thread that ran it
    rule_stats: dict[str, RuleStats] = field(default_factory=dict)
    route: str = "arrow"  # how the rows went: arrow (batches), copy binary or copy text (engine.passthrough)
    snapshot: str | None = None  # the source snapshot it was read as of
    first_batch_at: float = 0.0  # epoch seconds when its first batch left the source (0: none yet)
