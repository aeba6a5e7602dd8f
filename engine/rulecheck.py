"""`engine check` for [[validate.rules]]: every problem at once, each naming its key (`validate.rules[2].column`).

The job file's own shape (kinds, keys, regexes, expressions) is checked when it is read (`engine.config`); here
the rules meet the planned columns, the referenced tables and the executor.
"""

from __future__ import annotations

import polars as pl

from engine import pg, source
from engine.config import JobConfig
from engine.errors import EngineError
from engine.model import Plan
from engine.ruleconfig import DtypeRule, ExpressionRule, ReferencesRule, Rule
from engine.rulejob import schema_verdicts
from engine.rulesets import polars_type
from engine.sql import parse_table_name, quote_ident


def _columns_key(rule: Rule) -> str:
    return "column" if getattr(rule, "column", None) is not None else "columns"


def problems(config: JobConfig, plan: Plan) -> list[str]:
    columns = [c.name for c in plan.target_columns]
    found: list[str] = []
    for i, rule in enumerate(config.validate_.rules):
        key = f"validate.rules[{i}]"
        used = list(rule.columns_used)
        if isinstance(rule, ExpressionRule):
            used = pl.sql_expr(rule.expr).meta.root_names()
        unknown = [c for c in used if c not in columns]
        if unknown:
            where = "expr" if isinstance(rule, ExpressionRule) else _columns_key(rule)
            found.append(f"`{key}.{where}`: rule {rule.name}: no column {', '.join(map(repr, unknown))}; the "
                         f"columns are: {', '.join(columns)}")
        if isinstance(rule, DtypeRule):
            try:
                polars_type(rule.type)
            except ValueError as exc:
                found.append(f"`{key}.type`: {exc}")
        if isinstance(rule, ReferencesRule):
            found += _reference_problems(config, rule, key)
    found += [f"`validate.rules`: rule {rule.name} (schema): {why}" for rule, why in
              schema_verdicts(list(config.validate_.rules), columns)]
    return found


def _reference_problems(config: JobConfig, rule: ReferencesRule, key: str) -> list[str]:
    keys_key = "key" if rule.key is not None else "keys"
    try:
        table = parse_table_name(rule.table)
    except ValueError as exc:
        return [f"`{key}.table`: {exc}"]
    try:
        if rule.in_ == "target":
            with pg.connection(config.target_url) as conn:
                existing = pg.table_columns(conn, table)
            if existing is None:
                return [f"`{key}.table`: rule {rule.name}: table {rule.table} does not exist in the target"]
            names = list(existing)
        else:
            url = config.source_url
            try:
                schema = source.result_schema(url, f"SELECT * FROM {table.quoted(url.dialect)} WHERE 1 = 0",
                                              f"rule {rule.name}")
            except EngineError as exc:
                return [f"`{key}.table`: rule {rule.name}: table {rule.table} cannot be read in the source ({exc})"]
            names = schema.names
    except EngineError as exc:
        return [f"`{key}.table`: rule {rule.name}: {exc}"]
    missing = [k for k in rule.ref_keys if k not in names]
    if missing:
        return [f"`{key}.{keys_key}`: rule {rule.name}: {rule.table} has no column "
                f"{', '.join(quote_ident(k) for k in missing)}; it has: {', '.join(names)}"]
    return []
