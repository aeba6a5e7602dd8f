"""Declarative rules judged over the whole run: schema (when planning), budgets (after each partition),
completeness (at the end), and the validation report (per rule, with the SQL listing its rows)."""

from __future__ import annotations

from typing import Any

from engine import lookups, pg, rulerun, uniqueness
from engine.errors import RuleFailed
from engine.ruleconfig import CompletenessRule, Rule, SchemaRule
from engine.rulestats import RuleStats
from engine.sql import quote_literal


def schema_verdicts(rules: list[Rule], columns: list[str]) -> list[tuple[Rule, str]]:
    """(rule, what is wrong) for each schema rule the planned columns break."""
    out: list[tuple[Rule, str]] = []
    for rule in rules:
        if not isinstance(rule, SchemaRule):
            continue
        missing = [c for c in rule.columns if c not in columns]
        extra = [c for c in columns if c not in rule.columns] if rule.extra == "forbid" else []
        words = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + (
            [f"unexpected column(s) {', '.join(extra)} (extra = \"forbid\")"] if extra else [])
        if words:
            out.append((rule, "; ".join(words)))
    return out


def judge_schema(rules: list[Rule], columns: list[str], notes: list[str]) -> None:
    for rule, problem in schema_verdicts(rules, columns):
        if rule.severity == "warn":
            notes.append(f"rule {rule.name} (schema, warn): {problem}")
        else:
            raise RuleFailed(f"rule {rule.name} (schema) failed: {problem}; nothing was loaded")


def over_budget(rules: list[Rule], stats: dict[str, RuleStats]) -> RuleFailed | None:
    for rule in rules:
        s = stats.get(rule.name)
        why = s.over_budget(rule.max_errors, rule.max_error_rate) if s else None
        if why:
            return RuleFailed(f"rule {rule.name} ({rule.kind}) is over its budget: {why}; finished partitions are "
                              "kept; fix the data or the rule and rerun")
    return None


def judge_completeness(rules: list[Rule], stats: dict[str, RuleStats], notes: list[str]) -> None:
    for rule in rules:
        s = stats.get(rule.name)
        if not isinstance(rule, CompletenessRule) or s is None or not s.checked:
            continue
        if s.share > rule.max_null_ratio:
            s.detail = (f"{s.failures:,} NULLs in {s.checked:,} rows ({s.share:.2%} > max_null_ratio "
                        f"{rule.max_null_ratio:.2%})")
            if rule.severity == "warn":
                notes.append(f"rule {rule.name} (completeness, warn): {s.detail}")
            else:
                raise RuleFailed(f"rule {rule.name} (completeness) failed: {rule.column}: {s.detail}; the loaded "
                                 "partitions are kept, the run is not marked succeeded")


def quarantine_sql(job: str, run_id: str, rule: str, table: str = "quarantine", select: str = "*") -> str:
    """The SQL listing the rows the rule failed in engine.quarantine (or engine.warnings: loaded rows)."""
    return (f"SELECT {select} FROM engine.{table} WHERE job = {quote_literal(job)} AND run_id = "
            f"{quote_literal(run_id)} AND {quote_literal(rule)} = ANY(string_to_array(checks, ', '))")


def _listing(rule: Rule, job: str, run_id: str) -> str | None:
    if not rule.row_level or rule.severity == "fail":  # a fail rule stops the partition: nothing to list
        return None
    if rule.severity == "reject":
        return quarantine_sql(job, run_id, rule.name)
    # a warn rule's rows: loaded (engine.warnings), or quarantined by another rule (their record names it too)
    return (quarantine_sql(job, run_id, rule.name, "warnings", "*, 'loaded' AS outcome") + " UNION ALL "
            + quarantine_sql(job, run_id, rule.name, "quarantine", "*, 'quarantined' AS outcome"))


def report_rows(rules: list[Rule], stats: dict[str, RuleStats], job: str, run_id: str) -> list[dict[str, Any]]:
    rows = []
    for rule in rules:
        s = stats.get(rule.name) or RuleStats(rule.name, rule.kind, rule.severity)
        rows.append({
            "rule": rule.name, "kind": rule.kind, "severity": rule.severity, "columns": list(rule.columns_used),
            "rows_checked": s.checked, "failures": s.failures, "share": round(s.share, 6),
            "top_values": [{"value": v, "rows": n} for v, n in s.values.most_common(5)],
            "sample_keys": s.keys[:5], "detail": s.detail,
            "sql": _listing(rule, job, run_id),
        })
    return rows


def forget_run(run_id: str) -> None:
    """Free what the run cached: referenced keys, uniqueness indexes, compiled checks."""
    lookups.drop_run(run_id)
    uniqueness.drop_run(run_id)
    rulerun.drop_run(run_id)


def resumed_stats(conn: pg.Connection, job: str, run_id: str, rules: list[Rule], rows_read: int,
                  notes: list[str]) -> dict[str, RuleStats]:
    """On resume, what the partitions finished before did, so budgets and the report cover the whole run: their
    rows, and each reject rule's failures as recorded in the quarantine (warn rules' counts were not kept)."""
    counted = dict(pg.fetch_all(conn, """SELECT c, COUNT(*) FROM engine.quarantine, unnest(string_to_array(checks, ', ')) c
                                         WHERE job = $1 AND run_id = $2 GROUP BY c""", (job, run_id)))
    stats = {}
    for rule in rules:
        if rule.row_level:
            stats[rule.name] = RuleStats(rule.name, rule.kind, rule.severity, rows_read,
                                         int(counted.get(rule.name, 0)))
    notes.append("rule counts of the partitions finished before the resume come from the quarantine"
                 + (" (warn rules: not counted there)" if any(r.severity == "warn" for r in rules) else ""))
    return stats
