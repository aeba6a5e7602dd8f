"""The run report: what a run did, rendered for people and as JSON for machines."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class RunReport:
    job: str
    run_id: str
    status: str = "running"
    description: str = ""  # the job file's `job.description`
    resumed: bool = False
    mode: str = "append"
    source: str = ""
    target: str = ""
    partitions_total: int = 0
    partitions_skipped: int = 0
    partitions_run: int = 0
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_in_finished_partitions: int = 0
    wall_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    # Time to the first row: from the process's start (interpreter, imports, job file) through connecting,
    # planning and preparing the target to the first batch read; `startup` splits it (see engine.pipeline).
    startup_seconds: float | None = None
    startup: dict[str, float] = field(default_factory=dict)
    verification: str = "not run"
    top_failures: list[dict[str, Any]] = field(default_factory=list)
    staging_dir: str = ""
    quarantine_table: str = "engine.quarantine"
    notes: list[str] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)  # the validation report, one entry per rule
    # which partitions were read as of which source snapshot, and why each was taken (PostgreSQL sources)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    recoveries: list[str] = field(default_factory=list)  # failures healed on the way: retries, waits, re-takes
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # engine.metrics.RunMetrics.to_dict()
    # a whole-database run: tables (each one's rows and sub-run), steps, orphans, keys left NOT VALID, failures
    database: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        """A report as `to_json` stored it (keys it does not know, such as rows_per_second, are left out)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.wall_seconds if self.wall_seconds else 0.0

    def add_failures(self, failures: Counter[tuple[str, str]], limit: int = 10) -> None:
        self.top_failures = [{"check": c, "column": col, "rows": n} for (c, col), n in failures.most_common(limit)]

    def to_json(self) -> str:
        data = asdict(self)
        data["rows_per_second"] = round(self.rows_per_second, 1)
        return json.dumps(data, indent=2, default=str)

    def render(self) -> str:
        lines = [
            f"job {self.job}  run {self.run_id}  {self.status.upper()}" + ("  (resumed)" if self.resumed else ""),
            *([f"  {self.description}"] if self.description else []),
            f"  {self.source}  ->  {self.target}  [{self.mode}]",
            f"  partitions   {self.partitions_run} run, {self.partitions_skipped} already done, "
            f"{self.partitions_total} planned",
            f"  rows         {self.rows_read:,} read, {self.rows_loaded:,} loaded, "
            f"{self.rows_quarantined:,} quarantined (this invocation)",
            f"  time         {self.wall_seconds:.2f} s wall, {self.rows_per_second:,.0f} rows/s, "
            f"peak memory {self.peak_rss_mb:,.0f} MB",
            "  phases       " + ", ".join(f"{k} {v:.2f}s" for k, v in self.phase_seconds.items())
            + "  (summed over workers)",
            f"  verification {self.verification}",
        ]
        if self.startup_seconds is not None:
            lines.insert(-1, f"  start-up     {self.startup_seconds:.2f} s to the first row ("
                         + ", ".join(f"{k} {v:.2f}" for k, v in self.startup.items()) + ")")
        if self.top_failures:
            lines.append("  top failing checks:")
            lines += [f"    {f['rows']:>8,}  {f['column']}: {f['check']}" for f in self.top_failures]
        if self.rows_quarantined:
            lines.append(f"  bad rows     {self.quarantine_table} (run_id = '{self.run_id}') and "
                         f"{self.staging_dir}/rejected/*.parquet")
        lines += render_rules(self.rules)
        lines += render_database(self.database)
        lines.append(f"  staging      {self.staging_dir}  (engine inspect <job.toml> to query it with DuckDB)")
        if len(self.snapshots) > 1:
            lines.append("  snapshots    " + "; ".join(
                f"{s['snapshot']} ({s['why']}): partitions {_ids(s['partitions'])}" for s in self.snapshots))
        if self.recoveries:
            lines.append(f"  recovered    {len(self.recoveries)} time(s); last: {self.recoveries[-1]}")
        lines += [f"  note: {n}" for n in self.notes]
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)


def render_database(database: dict[str, Any]) -> list[str]:
    """A whole-database run: its tables, steps and what it left for a person to look at."""
    if not database:
        return []
    lines = [f"  tables       {len(database.get('tables', {}))} copied:"]
    for name, t in sorted(database.get("tables", {}).items()):
        if "rows_read" in t:
            lines.append(f"    {name:<28} {t['rows_loaded']:>12,} rows loaded, {t['rows_quarantined']:,} quarantined, "
                         f"{t['seconds']:.2f} s (run {t['run_id']})")
        else:
            lines.append(f"    {name:<28} loaded by an earlier invocation (run {t.get('run_id', '?')})")
    steps = database.get("steps", {})
    lines.append(f"  steps        {sum(1 for s in steps.values() if s == 'done')} done"
                 + (f", {sum(1 for s in steps.values() if s == 'failed')} failed" if "failed" in steps.values() else ""))
    lines += [f"  orphans      {o}" for o in database.get("orphans", [])]
    if database.get("not_valid"):
        lines.append(f"  NOT VALID    foreign keys left unvalidated (orphans): {', '.join(database['not_valid'])}")
    lines += [f"  not created  {what}: {why}" for what, why in database.get("failed", {}).items()]
    for item in database.get("not_carried", []):
        lines.append(f"  not carried  {item['what']}: {item['reason']}"
                     + (f"; instead: {item['suggestion']}" if item.get("suggestion") else ""))
    return lines


def render_rules(rules: list[dict[str, Any]]) -> list[str]:
    """The validation report: the worst rules first, each with its top values, sample keys and SQL."""
    if not rules:
        return []
    lines = ["  validation rules (worst first):"]
    for r in sorted(rules, key=lambda r: (-r["failures"], r["rule"])):
        lines.append(f"    {r['rule']:<24} {r['kind']:<12} {r['severity']:<6} {r['failures']:>10,} of "
                     f"{r['rows_checked']:>10,} ({r['share']:.2%})  {', '.join(r['columns'])}")
        if r["failures"]:
            values = ", ".join(f"{v['value']!r} x{v['rows']:,}" for v in r["top_values"])
            lines += [f"      top values: {values}"] if values else []
            lines += [f"      sample keys: {', '.join(r['sample_keys'])}"] if r["sample_keys"] else []
            if r.get("detail"):
                lines.append(f"      {r['detail']}")
            loaded = " (loaded all the same: severity warn)" if r["severity"] == "warn" else ""
            lines.append(f"      all rows{loaded}: {r['sql']}" if r.get("sql") else
                         "      (a verdict over partitions or the whole job: no rows to list)")
    return lines


def _ids(ids: list[int]) -> str:
    return ", ".join(str(i) for i in sorted(ids)) or "none"
