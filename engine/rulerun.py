"""Declarative rules applied to a partition's batches: one vectorised pass per batch, stats per rule.

`check_batch` evaluates every row-level rule of the job on a batch (compiled once per run and batch schema by
`engine.rulesets`) and returns the rows that `reject` rules send to the quarantine, each once with every
reason. `warn` rules are only counted; a failing `fail` rule stops the job. Job-wide uniqueness goes through
the run's hash index, references through the run's cached keys; completeness and reconcile gather what the
run (`engine.rulejob`) and the partition's commit (`reconcile_partition`) judge.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from engine import checkpoint, frames, lookups, pg, source, uniqueness
from engine.errors import EngineError, RuleFailed
from engine.model import PartitionResult, PartitionTask
from engine.quarantine import BAD_ROWS_SCHEMA, ROW_INDEX
from engine.ruleconfig import CompletenessRule, ExpressionRule, ReconcileRule, ReferencesRule, Rule, UniqueRule
from engine.rulesets import RowCheck, compile_checks
from engine.rulestats import RuleStats
from engine.sql import quote_ident
from engine.urls import parse_url

_compiled: dict[tuple[str, tuple[tuple[str, str], ...]], list[RowCheck]] = {}
_compiled_lock = threading.Lock()
_seed_lock = threading.Lock()
_asking = ThreadPoolExecutor(max_workers=2, thread_name_prefix="reconcile")
_expected: dict[tuple[str, int, str], Future[Any]] = {}  # (run, partition, rule) -> the source's aggregate


def start_partition(task: PartitionTask, result: PartitionResult) -> None:
    """Fresh stats for every rule; a retried partition forgets the keys its failed attempt remembered."""
    result.rule_stats = {r.name: RuleStats(r.name, r.kind, r.severity) for r in task.rules}
    for rule in task.rules:
        if isinstance(rule, ReconcileRule):  # the source's side, asked now: ready by the time the rows are loaded
            future = _asking.submit(_source_aggregate, task, rule)
            with _compiled_lock:
                _expected[(task.run_id, task.partition.id, rule.name)] = future
    for rule in task.rules:
        if isinstance(rule, UniqueRule) and rule.scope != "batch":
            index = uniqueness.index_for(task.run_id, rule.name, partition_local(task, rule), task.plan.source_rows,
                                         Path(task.staging_dir) / "unique")
            index.forget(task.partition.id)


def partition_local(task: PartitionTask, rule: UniqueRule) -> bool:
    """True when the partitions split the source on columns the job-wide rule includes, carried unchanged:
    then no key is in two partitions, and each partition's keys need only be checked among themselves."""
    if rule.scope != "job" or task.partition.kind == "blocks" or task.transform.function:
        return False  # a transform function may rewrite any column
    sources = task.plan.keyset if task.partition.kind == "keyset" else (task.plan.key,)
    carried = {c.source: c.name for c in task.plan.target_columns if c.source}
    names = [carried.get(s) if s else None for s in sources]
    return bool(names) and all(n is not None and n in rule.columns for n in names)


def needed_columns(task: PartitionTask) -> set[str]:
    """The columns the job's rules read (and the partition key, for sample keys): the rest stay in Arrow."""
    names = {task.plan.key} if task.plan.key else set()
    for rule in task.rules:
        names.update(pl.sql_expr(rule.expr).meta.root_names() if isinstance(rule, ExpressionRule)
                     else rule.columns_used)
    return names


def _checks(task: PartitionTask, schema: pl.Schema) -> list[RowCheck]:
    key = (task.run_id, tuple((n, str(t)) for n, t in schema.items()))
    with _compiled_lock:
        if key in _compiled:
            return _compiled[key]
    keys = {r.name: lookups.referenced(r, task.run_id, task.source_url, task.target_url, task.snapshot)
            for r in task.rules if isinstance(r, ReferencesRule)}
    checks = compile_checks(list(task.rules), schema, keys)
    with _compiled_lock:
        _compiled[key] = checks
    return checks


def key_hashes(frame: pl.DataFrame, columns: list[str]) -> pl.Series:
    key = pl.col(columns[0]) if len(columns) == 1 else pl.struct(columns)
    if len(columns) == 1:  # a NULL's hash is replaced by NULL: never a duplicate
        return frame.select(pl.when(key.is_null()).then(None).otherwise(key.hash(7))).to_series()
    any_null = pl.any_horizontal(pl.col(c).is_null() for c in columns)
    return frame.select(pl.when(any_null).then(None).otherwise(key.hash(7))).to_series()


def _seed(task: PartitionTask, rule: UniqueRule, index: uniqueness.HashIndex, schema: pl.Schema) -> None:
    """Before the run's first batch: scope "target" adds the keys already in the target table; scope "job" of a
    resumed run adds those of the partitions committed before the resume (selected by the partition key).
    The keys are read and hashed a stream of batches at a time: only their hashes are held."""
    sql = _seed_sql(task, rule)
    if sql is not None:
        for batch in pg.stream_batches(parse_url(task.target_url), [], sql, 16 << 20):
            rows = frames.frame(batch).select(pl.col(c).cast(schema[c], strict=False) for c in rule.columns)
            index.seed(key_hashes(rows, rule.columns))
    index.seeded_all(beyond_plan=rule.scope == "target")


def _seed_sql(task: PartitionTask, rule: UniqueRule) -> str | None:
    cols = ", ".join(quote_ident(c) for c in rule.columns)
    with pg.connection(parse_url(task.target_url)) as conn:
        table, where = task.target.table, ""
        if rule.scope == "job":
            done = checkpoint.done_partitions(conn, task.run_id)
            key = task.plan.target_key
            ranges = [p.where(quote_ident(key)).removeprefix(" WHERE ") for p in task.plan.partitions
                      if p.id in done] if key else []
            if not ranges:
                return None
            table = task.target.write_table
            where = "" if "" in ranges else " WHERE " + " OR ".join(f"({r})" for r in ranges)
        existing = pg.table_columns(conn, table)
    if existing is None or any(c not in existing for c in rule.columns):
        return None
    return f"SELECT {cols} FROM {table.quoted()}{where}"


def _unique_passes(task: PartitionTask, frame: pl.DataFrame) -> dict[str, pl.Series]:
    out = {}
    for rule in task.rules:
        if isinstance(rule, UniqueRule) and rule.scope != "batch":
            index = uniqueness.index_for(task.run_id, rule.name)  # made by start_partition
            with _seed_lock:
                if not index.seeded:
                    _seed(task, rule, index, frame.schema)
            span = _bitmap_span(task, rule, frame.schema) if index.local else None
            if span is None:
                out[rule.name] = ~index.check_and_add(key_hashes(frame, rule.columns), task.partition.id)
            else:
                offsets = _offsets(frame.get_column(rule.columns[0]), task.partition.lo or 0, span)
                out[rule.name] = ~index.check_and_add(offsets, task.partition.id,
                                                      partial(uniqueness.Bitmap, span))
    return out


def _bitmap_span(task: PartitionTask, rule: UniqueRule, schema: pl.Schema) -> int | None:
    """The width of the partition's key range when its keys can be kept as bits (see engine.uniqueness)."""
    p = task.partition
    if p.kind != "key" or p.lo is None or p.hi is None or len(rule.columns) != 1:
        return None
    span = p.hi - p.lo + 1
    return span if schema[rule.columns[0]].is_integer() and span <= uniqueness.BITMAP_CAP else None


def _offsets(keys: pl.Series, low: int, span: int) -> pl.Series:
    offsets = (keys.cast(pl.Int64) - low)
    lowest, highest = offsets.min(), offsets.max()
    if lowest is not None and (lowest < 0 or highest >= span):  # type: ignore[operator]
        raise EngineError(f"key {keys.name} has values outside its partition's range (the source changed its "
                          "partition key while it was read?)")
    return offsets.cast(pl.UInt32)


def _sample_keys(task: PartitionTask, frame: pl.DataFrame, failed: pl.Series) -> list[str]:
    key = task.plan.key
    if key and key in frame.columns:
        return [str(v) for v in frame.get_column(key).filter(failed).head(5).to_list()]
    rows = pl.int_range(0, frame.height, eager=True).filter(failed).head(5).to_list()
    return [f"partition {task.partition.id} row {i}" for i in rows]


def verdicts(frame: pl.DataFrame, checks: list[RowCheck]) -> pl.DataFrame:
    """Column c{i}: true where the row passes check i. Quick tests first, in one query; the full tests only
    where a quick one did not pass the whole batch."""
    if not checks:
        return pl.DataFrame()
    first = frame.select((c.passes if c.quick is None else c.quick).alias(f"c{i}") for i, c in enumerate(checks))
    again = [i for i, c in enumerate(checks) if c.quick is not None and not first.get_column(f"c{i}").all()]
    return first.with_columns(frame.select(checks[i].passes.alias(f"c{i}") for i in again)) if again else first


def check_batch(task: PartitionTask, frame: pl.DataFrame, result: PartitionResult
                ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The batch's rows that `reject` rules refuse and those that only `warn` rules fail (BAD_ROWS_SCHEMA
    both), one per row with every reason of its kind."""
    checks = _checks(task, frame.schema)
    rules = {r.name: r for r in task.rules}
    passes = verdicts(frame, checks)
    passing = {c.rule.name: passes.get_column(f"c{i}") for i, c in enumerate(checks)}
    passing.update(_unique_passes(task, frame))
    values = {c.rule.name: c.value for c in checks}
    parts: dict[str, list[pl.DataFrame]] = {"reject": [], "warn": []}
    for name, ok in passing.items():
        rule, stats = rules[name], result.rule_stats[name]
        if ok.all():  # the usual case: every row passes
            stats.add(frame.height)
            continue
        n = frame.height - int(ok.sum())
        failed = ~ok
        label = ", ".join(rule.columns_used) or "(row)"
        shown = frame.filter(failed).select(values.get(name, _joined(rule))).to_series()
        top = shown.value_counts(sort=True).head(20)
        stats.add(frame.height, Counter(dict(zip(top[:, 0].to_list(), top[:, 1].to_list(), strict=True))), n,
                  _sample_keys(task, frame, failed))
        if rule.severity == "fail":
            raise RuleFailed(f"rule {name} ({rule.kind}, severity fail) failed on {n:,} row(s) of partition "
                             f"{task.partition.id}, e.g. {label} = {shown[0]}; nothing of that partition was loaded")
        if rule.severity == "reject":
            result.failures[(name, label)] += n
        parts[rule.severity].append(pl.DataFrame({
            ROW_INDEX: pl.int_range(0, frame.height, eager=True, dtype=pl.UInt32).filter(failed), "values": shown,
        }).select(ROW_INDEX, pl.lit(name).alias("checks"), pl.lit(label).alias("columns"),
                  (pl.lit(f"{label}: {name} failed for value ") + pl.col("values")).alias("reason")))
    gather(task, frame, result)
    return merge_bad(parts["reject"]), merge_bad(parts["warn"])


def _joined(rule: Rule) -> pl.Expr:
    return pl.concat_str([pl.col(c).cast(pl.String).fill_null("null") for c in rule.columns_used], separator="|")


_NO_BAD_ROWS = pl.DataFrame(schema=BAD_ROWS_SCHEMA)


def merge_bad(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Several rules' failing rows as one row each, reasons in rule order."""
    parts = [p for p in parts if p.height]
    if not parts:
        return _NO_BAD_ROWS
    return (pl.concat(parts).group_by(ROW_INDEX, maintain_order=True)
            .agg(pl.col("checks").str.join(", "), pl.col("columns").unique(maintain_order=True).str.join(", "),
                 pl.col("reason").str.join("; ")).sort(ROW_INDEX).cast(BAD_ROWS_SCHEMA))  # type: ignore[arg-type]


def gather(task: PartitionTask, frame: pl.DataFrame, result: PartitionResult) -> None:
    """The job-wide figures of the batch's rows: completeness counts, reconcile aggregates (every row read
    counts, loaded or quarantined)."""
    for rule in task.rules:
        stats = result.rule_stats[rule.name]
        if isinstance(rule, CompletenessRule):
            stats.add(frame.height, failures=frame.get_column(rule.column).null_count())
        elif isinstance(rule, ReconcileRule):
            stats.aggregate = _accumulate(rule, stats.aggregate, frame.get_column(rule.column))


def _accumulate(rule: ReconcileRule, so_far: Any, column: pl.Series) -> Any:
    if rule.agg == "count_distinct":
        values = column.drop_nulls().unique()
        return values if so_far is None else pl.concat([so_far, values]).unique()
    value = {"sum": column.sum, "min": column.min, "max": column.max}[rule.agg]()
    if value is None or so_far is None:
        return so_far if value is None else value
    return so_far + value if rule.agg == "sum" else (min if rule.agg == "min" else max)(so_far, value)


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float, Decimal)) and isinstance(b, (int, float, Decimal)):
        x, y = Decimal(str(a)), Decimal(str(b))
        return abs(x - y) <= Decimal("1e-9") * max(Decimal(1), abs(x))
    return str(a) == str(b)


def _source_aggregate(task: PartitionTask, rule: ReconcileRule) -> Any:
    """The rule's aggregate over the source partition, by SQL in the run's snapshot."""
    col = quote_ident(rule.column, task.plan.dialect)
    agg = {"sum": f"SUM({col})", "count_distinct": f"COUNT(DISTINCT {col})", "min": f"MIN({col})",
           "max": f"MAX({col})"}[rule.agg]
    where = task.plan.where(task.partition)  # key, block or keyset range alike
    return source.query_rows(parse_url(task.source_url), f"SELECT {agg} FROM {task.plan.from_sql}{where}")[0][0]


def reconcile_partition(task: PartitionTask, result: PartitionResult) -> None:
    """Each reconcile rule: the source partition's aggregate (by SQL, in the run's snapshot) equals that of the
    rows loaded plus quarantined. Runs before the partition commits; a mismatch stops it unless the rule warns."""
    for rule in task.rules:
        if not isinstance(rule, ReconcileRule):
            continue
        with _compiled_lock:
            future = _expected.pop((task.run_id, task.partition.id, rule.name), None)
        expected = future.result() if future else _source_aggregate(task, rule)
        stats = result.rule_stats[rule.name]
        got = stats.aggregate
        if rule.agg == "count_distinct":
            got = 0 if got is None else len(got)
        stats.aggregate = None
        if _same(expected, got):
            stats.add(1)
            continue
        message = (f"partition {task.partition.id}: source {rule.agg}({rule.column}) = {expected}, "
                   f"loaded + quarantined = {got}")
        stats.add(1, Counter({f"source {expected} / rows {got}": 1}), 1, [f"partition {task.partition.id}"])
        stats.detail = message
        if rule.severity != "warn":
            raise RuleFailed(f"rule {rule.name} (reconcile) failed: {message}; the partition was not committed")


def drop_run(run_id: str) -> None:
    with _compiled_lock:
        for key in [k for k in _compiled if k[0] == run_id]:
            del _compiled[key]
        for asked in [k for k in _expected if k[0] == run_id]:
            del _expected[asked]
