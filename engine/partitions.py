"""Partition schemes: how the planner splits a source so partitions read in parallel, each row in exactly one.

- **key**: closed ranges [lo, hi] of an integer column, cut by equal width between MIN and MAX, plus one
  partition for rows whose key is NULL (and, with explicit bounds, one below and one above them).
- **blocks** (PostgreSQL 14+ heap tables): ranges of the table's blocks read as TID range scans
  (`ctid >= '(first,0)' AND ctid < '(last+1,0)'`): sequential reads, no index walk, no key needed. Sized from
  the relation's size and the catalog's rows-per-block estimate (no COUNT); the last range is open-ended, so
  rows stored past the last block at plan time still belong to a partition. Block numbers only mean the same
  rows while the table is not rewritten and no row moves: the plan records the relation's file and its write
  counters (`BlockState`), and a resume refuses to continue when they changed.
- **SQLite rowid**: a table without an integer primary key (and not WITHOUT ROWID) is split as key ranges of
  its rowid (read under whichever of `rowid`, `_rowid_`, `oid` no column takes).
- **keyset** (MySQL/MariaDB): a primary key of any orderable type (text, composite, binary UUIDs) is cut at every
  `step`-th key, walking the key's index in key order (no COUNT; the step comes from InnoDB's row estimate);
  partition i holds keys from boundary i (included) to boundary i+1 (excluded), the first and last ranges
  unbounded, so every row is in exactly one. Boundary values become hex literals in the column's character
  set and collation (ConnectorX takes no parameters), so comparisons order keys as the index does.
- **whole**: one partition (no usable key, or a query without one).

`choose_scheme` picks one; `[source] partition_by` can ask for one.
"""

from __future__ import annotations

import dataclasses
import decimal
import math
import re
from dataclasses import dataclass

from engine.catalog import SourceShape
from engine.config import JobConfig
from engine.model import Partition, keyset_condition
from engine.source import query_rows
from engine.sql import quote_ident
from engine.urls import DatabaseUrl

MAX_PARTITIONS = 100_000
TID_RANGE_SCAN_VERSION = 140000  # PostgreSQL 14 runs ctid range conditions as TID range scans
DEFAULT_BLOCK_PARTITION_BYTES = 25_000_000  # about 50,000 rows of 500 bytes, when the catalog has no estimate


def cut_ranges(lo: int, hi: int, rows: int, config: JobConfig) -> list[tuple[int, int]]:
    """Split [lo, hi] into equal-width closed ranges that together cover every integer in it."""
    wanted = config.source.partitions or math.ceil(max(rows, 1) / config.source.rows_per_partition)
    count = max(1, min(wanted, hi - lo + 1, MAX_PARTITIONS))
    width = hi - lo + 1
    edges = [lo + (width * i) // count for i in range(count + 1)]
    return [(edges[i], edges[i + 1] - 1) for i in range(count)]


# ------------------------------------------------------------------------------------------ integer key ranges

def _key_stats(config: JobConfig, shape: SourceShape, key: str) -> tuple[int | None, int | None, int, int]:
    """MIN, MAX, row count and non-NULL key count. InnoDB counts by scanning the whole table (seconds per
    million rows), so for a MySQL table the count is the catalog's estimate — it only sizes partitions —
    and NULL keys are probed through the key's index; the ranges themselves never depend on the count."""
    url = config.source_url
    k = quote_ident(key, url.dialect)
    if url.dialect == "mysql" and config.source_table is not None:
        lo, hi, has_null = query_rows(url, f"SELECT MIN({k}), MAX({k}), EXISTS(SELECT 1 FROM {shape.from_sql} "
                                           f"WHERE {k} IS NULL) FROM {shape.from_sql}")[0]
        estimate = mysql_row_estimate(url, config) if lo is not None else 0
        if lo is not None and estimate == 0:  # statistics not gathered yet: count after all
            estimate = int(query_rows(url, f"SELECT COUNT({k}) FROM {shape.from_sql}")[0][0])
        return _int(lo), _int(hi), estimate + int(bool(has_null)), estimate
    lo, hi, total, non_null = query_rows(url, f"SELECT MIN({k}), MAX({k}), COUNT(*), COUNT({k}) FROM {shape.from_sql}")[0]
    return _int(lo), _int(hi), int(total or 0), int(non_null or 0)


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _mysql_where(url: DatabaseUrl, config: JobConfig) -> str:
    """information_schema's condition for the job's source table, its names as hex literals."""
    table = config.source_table
    assert table is not None
    schema = table.schema or url.database
    return (f"TABLE_SCHEMA = CONVERT(X'{schema.encode().hex()}' USING utf8mb4) "
            f"AND TABLE_NAME = CONVERT(X'{table.name.encode().hex()}' USING utf8mb4)")


def mysql_row_estimate(url: DatabaseUrl, config: JobConfig) -> int:
    """InnoDB's estimate of a table's rows (information_schema.TABLES), 0 when it has none."""
    where = _mysql_where(url, config)
    return int(query_rows(url, f"SELECT TABLE_ROWS FROM information_schema.TABLES WHERE {where}")[0][0] or 0)


def key_partitions(config: JobConfig, shape: SourceShape, key: str) -> tuple[tuple[Partition, ...], int]:
    lo, hi, total, non_null = _key_stats(config, shape, key)
    if config.source.bounds is not None:
        lo, hi = config.source.bounds
    ranges = cut_ranges(lo, hi, non_null, config) if lo is not None and hi is not None else []
    parts = [Partition(i, a, b) for i, (a, b) in enumerate(ranges)]
    if config.source.bounds is not None:  # rows outside explicit bounds still belong somewhere
        low, high = config.source.bounds
        parts.insert(0, Partition(len(parts), None, low - 1))
        parts.append(Partition(len(parts) + 1, high + 1, None))
        parts = [dataclasses.replace(p, id=i) for i, p in enumerate(parts)]
    if total > non_null or not parts:
        parts.append(Partition(len(parts), null_keys=True))
    return tuple(parts), total


# ----------------------------------------------------------------------------------------------- block ranges

@dataclass(frozen=True)
class BlockState:
    """What a PostgreSQL table's block numbers depend on: its file (a rewrite changes it) and its write
    counters (an insert or update may place a row in any block with room)."""

    relfilenode: int
    inserted: int
    updated: int
    deleted: int

    def changes_since(self, before: BlockState) -> list[str]:
        found = []
        if self.relfilenode != before.relfilenode:
            found.append("the table was rewritten (VACUUM FULL, CLUSTER, TRUNCATE or ALTER TABLE)")
        for what in ("inserted", "updated", "deleted"):
            delta = getattr(self, what) - getattr(before, what)
            if delta:
                found.append(f"{delta:,} row(s) {what}")
        return found


_BLOCK_FACTS = """
    SELECT current_setting('server_version_num')::int, c.relkind::text, COALESCE(am.amname::text, ''),
           c.relfilenode::bigint, pg_relation_size(c.oid, 'main'), current_setting('block_size')::int,
           c.reltuples::float8, c.relpages::bigint,
           COALESCE(s.n_tup_ins, 0), COALESCE(s.n_tup_upd, 0), COALESCE(s.n_tup_del, 0)
    FROM pg_class c LEFT JOIN pg_am am ON am.oid = c.relam LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
    WHERE c.oid = to_regclass($1)"""


@dataclass(frozen=True)
class BlockFacts:
    version: int
    relkind: str
    access_method: str
    size_bytes: int
    block_size: int
    reltuples: float
    relpages: int
    state: BlockState

    def unfit(self) -> str | None:
        """Why block ranges cannot split this relation, or None."""
        if self.version < TID_RANGE_SCAN_VERSION:
            return f"the server is PostgreSQL {self.version // 10000}; TID range scans need 14 or later"
        if self.relkind not in ("r", "m"):
            kinds = {"v": "a view", "p": "a partitioned table", "f": "a foreign table"}
            return f"the source is {kinds.get(self.relkind, 'not a plain table')}"
        if self.access_method != "heap":
            return f"the table's access method is {self.access_method!r}, not heap"
        return None


def block_facts(url: DatabaseUrl, relation: str) -> BlockFacts:
    """The relation's size and kind, and its write counters (read fresh, not from a cached stats snapshot)."""
    query_rows(url, "SELECT pg_stat_clear_snapshot()")
    row = query_rows(url, _BLOCK_FACTS, (relation,))[0]
    return BlockFacts(int(row[0]), str(row[1]), str(row[2]), int(row[4]), int(row[5]), float(row[6]), int(row[7]),
                      BlockState(int(row[3]), int(row[8]), int(row[9]), int(row[10])))


def block_partitions(config: JobConfig, facts: BlockFacts) -> tuple[tuple[Partition, ...], int]:
    """Equal ranges of the table's blocks; the last is open-ended. Returns them and the catalog's row estimate."""
    blocks = facts.size_bytes // facts.block_size
    rows = max(int(facts.reltuples), 0)  # -1: never vacuumed or analyzed
    if config.source.partitions:
        wanted = config.source.partitions
    elif rows and facts.relpages:  # the catalog's live rows per block: a bloated table gets fewer rows a block
        rows_per_block = rows / facts.relpages
        wanted = math.ceil(blocks * rows_per_block / config.source.rows_per_partition)
    else:
        wanted = math.ceil(facts.size_bytes / DEFAULT_BLOCK_PARTITION_BYTES)
    count = max(1, min(wanted, blocks, MAX_PARTITIONS))
    edges = [(blocks * i) // count for i in range(count + 1)]
    parts = [Partition(i, edges[i], edges[i + 1] - 1 if i < count - 1 else None, kind="blocks")
             for i in range(count)]
    return tuple(parts), rows


# ------------------------------------------------------------------------------------------------- SQLite rowid

_ROWID_NAMES = ("rowid", "_rowid_", "oid")


def sqlite_rowid(url: DatabaseUrl, table: str, columns: list[str]) -> str | None:
    """The name that reads a SQLite table's rowid (None for a WITHOUT ROWID table, or when columns use all
    three names): its integer ranges split a table that has no integer primary key."""
    try:
        listed = query_rows(url, "SELECT wr FROM pragma_table_list WHERE name = ?", (table,))
    except Exception:  # SQLite before 3.37: read the statement that created the table
        sql = query_rows(url, "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        tail = str(sql[0][0] or "").rsplit(")", 1)[-1] if sql else ""
        listed = [(int(bool(re.search(r"\bWITHOUT\s+ROWID\b", tail, re.IGNORECASE))),)]
    if not listed or listed[0][0]:
        return None
    taken = {c.lower() for c in columns}
    return next((n for n in _ROWID_NAMES if n not in taken), None)


# ------------------------------------------------------------------------------------ MySQL keyset (any PK)

_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_DECIMAL = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


def mysql_literal(value: object, charset: str | None, collation: str | None) -> str:
    """A key value as a MySQL literal, never pasted as text: integers through int(), strings and bytes as hex
    (strings converted to the column's character set and compared in its collation)."""
    if isinstance(value, bool) or isinstance(value, int):
        return str(int(value))
    if isinstance(value, (bytes, bytearray)):
        return f"X'{bytes(value).hex()}'" if value else "''"
    if isinstance(value, str):
        if charset is None or collation is None or not (_NAME.match(charset) and _NAME.match(collation)):
            raise ValueError(f"no character set for a string key value ({charset!r}, {collation!r})")
        text = f"CONVERT(X'{value.encode().hex()}' USING utf8mb4)" if value else "''"
        return f"CONVERT({text} USING {charset}) COLLATE {collation}"
    if isinstance(value, decimal.Decimal) and _DECIMAL.match(str(value)):
        return str(value)
    raise ValueError(f"a key value of type {type(value).__name__} has no safe literal here")


def mysql_keyset_partitions(config: JobConfig, shape: SourceShape, key: tuple[str, ...]
                            ) -> tuple[tuple[Partition, ...], int] | None:
    """Ranges of a MySQL/MariaDB primary key of any orderable type, cut at every `step`-th key in key order
    (a walk of the key's index, no COUNT): [first, b1), [b1, b2), …, [bn, last]. None when a key column's
    values have no safe literal (the table is then read as one partition)."""
    url, table = config.source_url, config.source_table
    assert table is not None
    collations = _mysql_collations(url, config, key)
    estimate = mysql_row_estimate(url, config)
    wanted = config.source.partitions or math.ceil(max(estimate, 1) / config.source.rows_per_partition)
    if wanted <= 1 or estimate <= 1:
        return None
    step = max(1, estimate // wanted)
    quoted = [quote_ident(k, "mysql") for k in key]
    order = ", ".join(quoted)
    bounds: list[tuple[str, ...]] = []
    for _ in range(min(wanted, MAX_PARTITIONS) - 1):
        where = f" WHERE {keyset_condition(quoted, bounds[-1], '>=')}" if bounds else ""
        found = query_rows(url, f"SELECT {order} FROM {shape.from_sql}{where} ORDER BY {order} LIMIT 1 OFFSET {step}")
        if not found:
            break
        try:
            bounds.append(tuple(mysql_literal(v, *collations[k]) for k, v in zip(key, found[0], strict=True)))
        except ValueError:
            return None
    edges: list[tuple[str, ...] | None] = [None, *bounds, None]
    parts = tuple(Partition(i, kind="keyset", lower=edges[i], upper=edges[i + 1]) for i in range(len(edges) - 1))
    return parts, estimate


def _mysql_collations(url: DatabaseUrl, config: JobConfig, key: tuple[str, ...]) -> dict[str, tuple[str | None, str | None]]:
    rows = query_rows(url, "SELECT COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
                           f"WHERE {_mysql_where(url, config)}")
    found = {str(r[0]): (None if r[1] is None else str(r[1]), None if r[2] is None else str(r[2])) for r in rows}
    return {k: found.get(k, (None, None)) for k in key}
