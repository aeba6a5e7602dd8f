"""Plan stage: a job config -> a frozen, JSON-serialisable partition plan (the types are `engine.model`'s).

Partitions are ranges of an integer key or of a PostgreSQL table's blocks (`engine.partitions` holds the
schemes); every row belongs to exactly one partition. The plan is stored with the run and reused unchanged when
the run resumes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from engine import frames, passthrough
from engine.catalog import SourceShape, describe_source, is_integer_column, sqlite_storage_classes, unfit_values
from engine.config import JobConfig
from engine.errors import ConfigError
from engine.model import Partition, Plan, TargetColumn
from engine.partitions import (
    MAX_PARTITIONS,
    BlockFacts,
    block_facts,
    block_partitions,
    cut_ranges,
    key_partitions,
    mysql_keyset_partitions,
    sqlite_rowid,
)
from engine.source import query_rows, result_schema
from engine.sql import pg_name_problem
from engine.transform import build_transform
from engine.typemap import (
    ColumnSpec,
    arrow_type,
    as_text_route,
    canonical_type,
    declared_route,
    ingest_type,
    override_hint,
    pg_type_for_arrow,
    sqlite_by_values,
    unfit_advice,
)

__all__ = ["MAX_PARTITIONS", "cut_ranges", "make_plan"]


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


@dataclass(frozen=True)
class Partitioning:
    partitions: tuple[Partition, ...]
    rows: int  # the source's rows (the catalog's estimate for block and keyset ranges)
    key: str | None  # the integer key the ranges are of (the SQLite rowid's name included)
    state: dict[str, int] | None = None  # block ranges: the table state they depend on
    keyset: tuple[str, ...] = ()  # keyset ranges: the primary key's columns


def choose_partitions(config: JobConfig, shape: SourceShape, key: str | None) -> Partitioning:
    """The partitions, by the scheme `[source] partition_by` asks for or the best that applies (see
    `engine.partitions`): an integer key; else PostgreSQL block ranges, a SQLite table's rowid, or ranges of a
    MySQL primary key of any type; else one partition."""
    url, wanted, table = config.source_url, config.source.partition_by, config.source_table
    if wanted == "blocks" or (wanted == "auto" and key is None):
        facts = block_facts(url, table.quoted()) if url.dialect == "postgresql" and table is not None else None
        reasons = _no_blocks(config, facts)
        if wanted == "blocks" and reasons:
            raise ConfigError(str(config.path), [f'`source.partition_by = "blocks"`: {reasons}; use "key" or "auto"'])
        if facts is not None and not reasons:
            parts, rows = block_partitions(config, facts)
            return Partitioning(parts, rows, key, dataclasses.asdict(facts.state))
    if key is None and table is not None and url.dialect == "sqlite":
        key = sqlite_rowid(url, table.name, [c.name for c in shape.columns])
    if key is None and table is not None and url.dialect == "mysql" and shape.primary_key:
        found = mysql_keyset_partitions(config, shape, shape.primary_key)
        if found is not None:
            return Partitioning(found[0], found[1], None, keyset=shape.primary_key)
    if key is None:
        total = query_rows(url, f"SELECT COUNT(*) FROM {shape.from_sql}")[0][0]
        return Partitioning((Partition(0),), int(total), None)
    parts, rows = key_partitions(config, shape, key)
    return Partitioning(parts, rows, key)


def _no_blocks(config: JobConfig, facts: BlockFacts | None) -> str:
    """Why this job cannot be split by block ranges ('' when it can)."""
    if config.source_url.dialect != "postgresql":
        return "block ranges split PostgreSQL tables only"
    if config.source.query is not None:
        return "a [source] query has no blocks of its own"
    if config.pipeline.verify == "content":
        return 'verify = "content" selects each partition\'s rows in the target by the integer key'
    if config.source.partition_on is not None or config.source.bounds is not None:
        return "`partition_on` and `bounds` describe key ranges"
    return facts.unfit() or "" if facts is not None else "the source is not a table"


def _flight_schema(config: JobConfig, plan_columns: tuple[ColumnSpec, ...], from_sql: str) -> pa.Schema:
    """The Arrow schema batches have in flight; asks the source only for columns typed "auto"."""
    fields = {c.name: arrow_type(c.flight) for c in plan_columns}
    auto = [c for c in plan_columns if fields[c.name] is None]
    if auto:  # only these: ConnectorX may type SQLite columns by their first value and fail on a NULL there
        url = config.source_url
        names = ", ".join(c.select_sql for c in auto)
        probe = result_schema(url, f"SELECT {names} FROM {from_sql} LIMIT 0", "cannot read column types from the source")
        for column, field in zip(auto, probe, strict=True):
            fields[column.name] = field.type
    return pa.schema([(n, t) for n, t in fields.items()])


def output_schema(config: JobConfig, flight: pa.Schema) -> pl.Schema:
    transform = build_transform(config.transform, config.rules_dir)
    try:
        return transform(frames.empty_frame(flight).lazy()).collect_schema()
    except Exception as exc:
        raise ConfigError(str(config.path), [f"[transform]: cannot apply to the source columns: {exc}"]) from None


def plan_target_columns(config: JobConfig, columns: tuple[ColumnSpec, ...], flight: pa.Schema,
                        schema: pl.Schema) -> tuple[TargetColumn, ...]:
    renamed = {new: old for old, new in config.transform.rename.items()}
    by_name = {c.name: c for c in columns}
    flight_polars = frames.empty_frame(flight).schema
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
            pg_type = pg_type_for_arrow(frames.arrow_type_of(dtype))
        # A column whose values travel as text is cast by PostgreSQL even where its type has an Arrow form.
        via_text = ingest_type(pg_type) is None or (unchanged and spec is not None and spec.via_text)
        result.append(TargetColumn(name, pg_type, via_text, origin if unchanged else None))
    return tuple(result)


_SOURCE_NAMES = {"postgresql": "PostgreSQL", "mysql": "MySQL", "sqlite": "SQLite"}


def fit_columns(config: JobConfig, shape: SourceShape, preview: bool = True) -> tuple[ColumnSpec, ...]:
    """The source columns' mappings after the declared types and a look at the values the source holds.

    A value a mapping cannot carry is never changed: a PostgreSQL column holding one travels as text (which
    PostgreSQL parses back exactly); a MySQL zero date is read as NULL beside its text and its row quarantined
    (`typemap.UNFIT_TEXT`), so a run does not scan the table for them first (`preview = False`: on a server
    whose table is larger than its buffer pool that scan costs as much as the copy's own read), while
    `engine plan` counts them (in each column's note); another source's column is refused, naming the column, the
    values and the override that keeps them.
    """
    url = config.source_url
    columns = [_declared(config, c) for c in shape.columns]
    problems = _type_untyped_sqlite(config, shape.from_sql, columns)
    # rows copied server to server carry every value as it is: a run need not look for the unfit ones
    piped = not preview and config.source.reader == "copy" and passthrough.refusal(config) is None
    found = {} if piped else unfit_values(url, shape.from_sql,
                                          tuple(c for c in columns if preview or c.tagged != "unfit"))
    for i, c in enumerate(columns):
        if c.name not in found:
            continue
        count, example = found[c.name]
        if url.dialect == "postgresql":
            columns[i] = as_text_route(c, f"holds {c.unfit_what}: travels as text, cast by PostgreSQL")
            continue
        held = (f"column {c.name!r} ({_SOURCE_NAMES[url.dialect]} {c.source_type or 'without a declared type'} -> "
                f"PostgreSQL {c.pg_type}): {count:,} row(s) hold {c.unfit_what}, e.g. {example}")
        if c.tagged == "unfit":
            advice = unfit_advice(url.dialect, c)
            columns[i] = dataclasses.replace(c, note=f"{held}: their rows are quarantined; {advice}")
            continue
        problems.append(f"{held}; {unfit_advice(url.dialect, c)}")
    if problems:
        raise ConfigError(str(config.path), problems)
    return tuple(columns)


def _declared(config: JobConfig, column: ColumnSpec) -> ColumnSpec:
    """The column as `[target] types` declares it, when it reaches the target unchanged by [transform]."""
    target_name = config.transform.rename.get(column.name, column.name)
    declared = config.target.types.get(target_name)
    if declared is None or column.name in config.transform.cast or target_name in config.transform.add:
        return column
    if column.pg_type != "auto" and canonical_type(declared) == canonical_type(column.pg_type):
        return column
    return declared_route(config.source_url.dialect, column, declared)


def _type_untyped_sqlite(config: JobConfig, from_sql: str, columns: list[ColumnSpec]) -> list[str]:
    """SQLite columns without a usable declared type take the type of their values (refused when mixed)."""
    untyped = [i for i, c in enumerate(columns) if c.pg_type == "auto" and config.source_url.dialect == "sqlite"]
    classes = sqlite_storage_classes(config.source_url, from_sql, [columns[i].name for i in untyped])
    problems = []
    for i in untyped:
        c = columns[i]
        typed = sqlite_by_values(c, classes[c.name])
        if typed is None:
            problems.append(
                f"column {c.name!r} (SQLite, declared {c.source_type or 'without a type'}) holds values of several "
                f"storage classes ({', '.join(sorted(classes[c.name]))}); declare {override_hint(c.name)} (or "
                "another type that holds them all) to load them unchanged")
        else:
            columns[i] = typed
    return problems


def check_target_names(config: JobConfig, targets: tuple[TargetColumn, ...] = ()) -> None:
    """Refuse target names PostgreSQL would truncate rather than load into a table of another name."""
    table = config.target_table
    problems = [p for p in (pg_name_problem(table.schema or "", "`target.table`: schema"),
                            pg_name_problem(table.name, "`target.table`: table")) if p]
    problems += [f"{p}; rename it in [transform] rename" for c in targets
                 if (p := pg_name_problem(c.name, "target column"))]
    if problems:
        raise ConfigError(str(config.path), problems)


def make_plan(config: JobConfig, preview: bool = True) -> Plan:
    """Inspect the source and build the partition plan (reads catalog and MIN/MAX/COUNT only).
    `preview`: also count the values that reading will quarantine (`fit_columns`); a run does not."""
    check_target_names(config)
    url = config.source_url
    shape = describe_source(url, config.source_table, config.source.query)
    shape = dataclasses.replace(shape, columns=fit_columns(config, shape, preview))
    key = choose_key(config, shape)
    parts = choose_partitions(config, shape, key)
    flight = _flight_schema(config, shape.columns, shape.from_sql)
    columns = tuple(
        c if c.flight != "auto" else dataclasses.replace(c, pg_type=_auto_pg(c, flight.field(c.name).type))
        for c in shape.columns)
    schema = output_schema(config, flight)
    targets = plan_target_columns(config, columns, flight, schema)
    check_target_names(config, targets)
    return Plan(config.job.name, url.dialect, shape.from_sql, parts.key, parts.partitions, parts.rows, columns,
                targets, parts.state, parts.keyset)


def _auto_pg(column: ColumnSpec, dtype: pa.DataType) -> str:
    return column.pg_type if column.pg_type != "auto" else pg_type_for_arrow(dtype)


def flight_schema_of(plan: Plan, config: JobConfig) -> pa.Schema:
    return _flight_schema(config, plan.columns, plan.from_sql)
