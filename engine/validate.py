"""Validate stage: split a batch into rows to load and rows to quarantine, each with its reasons.

Checks come from a Pandera (polars) schema in rules/, run with lazy=True so every failure is collected;
schemas made of built-in column checks run as compiled Polars expressions (engine/checks.py), same verdicts.
Failures tied to a row send that row to the quarantine; failures of the whole frame (a missing column, a
wrong dtype) mean the rules and the data disagree, which stops the job with the schema's own message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from engine.checks import CompiledSchema, compile_schema, failure_cases
from engine.errors import ConfigError, EngineError
from engine.quarantine import BAD_ROWS_SCHEMA, ROW_INDEX
from engine.rules import load_rule

if TYPE_CHECKING:  # pandera costs a quarter second to import: only jobs that validate pay it
    import pandera.polars as pa


class SchemaMismatch(EngineError):
    """The data's shape does not match the validation schema at all (not a bad row)."""


@dataclass
class Verdict:
    good: pl.DataFrame
    bad_rows: pl.DataFrame  # ROW_INDEX, checks, columns, reason
    failures: pl.DataFrame  # one row per failed (check, column): for the report's top checks
    keep: pl.Series | None = None  # per input row: loaded (True) or quarantined; None when all are kept


@dataclass(frozen=True)
class Rules:
    schema: pa.DataFrameSchema
    compiled: CompiledSchema | None  # None: Pandera runs the schema itself

    @property
    def columns(self) -> list[str]:
        return list(self.schema.columns)


def load_schema(rules_dir: Path, ref: str) -> Rules:
    import pandera.polars as pa

    rule = load_rule(rules_dir, ref, "validate.schema")
    if isinstance(rule, type) and issubclass(rule, pa.DataFrameModel):
        rule = rule.to_schema()
    if isinstance(rule, pa.DataFrameSchema):
        return Rules(rule, compile_schema(rule))
    raise ConfigError("validate.schema", [f"`validate.schema` = {ref!r} is neither a pandera.polars "
                                          "DataFrameModel nor a DataFrameSchema"])


_EMPTY_BAD = pl.DataFrame(schema=BAD_ROWS_SCHEMA)
_EMPTY_FAILURES = pl.DataFrame(schema={"check": pl.String, "column": pl.String})


def split_rows(frame: pl.DataFrame, rules: Rules | None) -> Verdict:
    """Run every check; return the passing rows and, for failing rows, their position and reasons."""
    if rules is None:
        return Verdict(frame, _EMPTY_BAD, _EMPTY_FAILURES)
    if rules.compiled is not None and rules.compiled.applies_to(frame):
        keep, cases = failure_cases(frame, rules.compiled)
        if cases.height == 0:
            return Verdict(frame, _EMPTY_BAD, _EMPTY_FAILURES)
        return _verdict(frame, cases, keep)
    return _pandera_verdict(frame, rules.schema)


def _pandera_verdict(frame: pl.DataFrame, schema: pa.DataFrameSchema) -> Verdict:
    from pandera.errors import SchemaError, SchemaErrors

    cases: Any
    try:
        schema.validate(frame, lazy=True)
        return Verdict(frame, _EMPTY_BAD, _EMPTY_FAILURES)
    except SchemaErrors as exc:
        cases = exc.failure_cases
    except SchemaError as exc:
        raise SchemaMismatch(f"validation schema failed on the whole batch: {exc}") from None
    return _verdict(frame, cases, None)


def _verdict(frame: pl.DataFrame, cases: pl.DataFrame, keep: pl.Series | None) -> Verdict:
    frame_level = cases.filter(pl.col("index").is_null())
    if frame_level.height:
        details = "; ".join(f"{r['column'] or '(frame)'}: {r['check']} ({r['failure_case']})"
                            for r in frame_level.head(5).iter_rows(named=True))
        raise SchemaMismatch(f"the data does not fit the validation schema: {details}. Fix the schema in rules/ "
                             "or add a [transform] cast")
    rows = cases.with_columns(
        pl.col("index").cast(pl.UInt32).alias(ROW_INDEX),
        pl.col("column").fill_null("(row)"),
        (pl.col("column").fill_null("(row)") + ": " + pl.col("check") + " failed for value "
         + pl.col("failure_case").fill_null("null")).alias("reason"),
    )
    bad = (rows.group_by(ROW_INDEX, maintain_order=True)
           .agg(pl.col("check").unique(maintain_order=True).str.join(", ").alias("checks"),
                pl.col("column").unique(maintain_order=True).str.join(", ").alias("columns"),
                pl.col("reason").str.join("; ").alias("reason")))
    if keep is None:
        keep = pl.Series(ROW_INDEX, range(frame.height), pl.UInt32).is_in(bad[ROW_INDEX].implode()).not_()
    return Verdict(frame.filter(keep), bad, rows.select("check", "column"), keep)
