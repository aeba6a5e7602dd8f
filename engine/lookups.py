"""`references` rules: the referenced keys, read once per run and shared by every partition and batch.

The keys come from the source (in the run's snapshot, through `engine.source`) or from the target (through
`engine.pg`); one read per (run, rule), held as a Polars series (a struct for composite keys) and checked with
a vectorised `is_in` semi-join.
"""

from __future__ import annotations

import threading

import polars as pl

from engine import frames, pg, source
from engine.ruleconfig import ReferencesRule
from engine.sql import Dialect, parse_table_name, quote_ident
from engine.urls import DatabaseUrl, parse_url

_cache: dict[tuple[str, str], pl.Series] = {}
_locks: dict[tuple[str, str], threading.Lock] = {}
_guard = threading.Lock()


def key_sql(rule: ReferencesRule, dialect: Dialect) -> str:
    table = parse_table_name(rule.table)
    keys = ", ".join(quote_ident(k, dialect) for k in rule.ref_keys)
    return f"SELECT DISTINCT {keys} FROM {table.quoted(dialect)}"


def _read(rule: ReferencesRule, source_url: str, target_url: str, snapshot: str | None) -> pl.DataFrame:
    if rule.in_ == "target":
        url = parse_url(target_url)
        with pg.connection(url) as conn:
            return frames.frame(pg.fetch_arrow(conn, key_sql(rule, "postgresql")))
    src: DatabaseUrl = parse_url(source_url)
    batches = list(source.read_batches(src, key_sql(rule, src.dialect), 100_000, snapshot,
                                       f"reading the keys of {rule.table} (rule {rule.name})"))
    table = source.as_table(batches)
    if table.num_columns == 0:
        return pl.DataFrame(schema=dict.fromkeys(rule.ref_keys, pl.String))
    return frames.frame(table)


def referenced(rule: ReferencesRule, run_id: str, source_url: str, target_url: str,
               snapshot: str | None) -> pl.DataFrame:
    """The referenced keys (columns named as the referencing columns), read at most once per run."""
    cache_key = (run_id, rule.name)
    with _guard:
        lock = _locks.setdefault(cache_key, threading.Lock())
    with lock:
        if cache_key not in _cache:
            keys = _read(rule, source_url, target_url, snapshot)
            keys.columns = list(rule.columns_used)
            _cache[cache_key] = keys.select(pl.struct(pl.all()).alias("k")).to_series()
    return pl.DataFrame(_cache[cache_key]).unnest("k")


def drop_run(run_id: str) -> None:
    with _guard:
        for key in [k for k in _cache if k[0] == run_id]:
            del _cache[key]
            _locks.pop(key, None)

