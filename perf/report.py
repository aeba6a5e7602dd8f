"""Results: per-case medians, ratios to the raw COPY limit, the markdown table and the JSON files.

Wall time is the median over runs (robust to one noisy run); peak RSS is the largest peak seen in any run
(memory limits are about the worst case). MB/s counts the source's row bytes (PostgreSQL `pg_column_size`),
10^6 bytes to the MB; RSS is in MiB.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "failed", "skipped"]
LIMIT_CASE = "copy-limit"
# Each source's own floor: its fastest export piped into PostgreSQL's COPY (the PostgreSQL one is LIMIT_CASE).
SOURCE_LIMITS = {"pg": LIMIT_CASE, "mysql": "mariadb-limit", "sqlite": "sqlite-limit"}


@dataclass
class CaseResult:
    case: str
    label: str
    rows: int  # rows the case stands for (the full table, also when extrapolated from a sample)
    data_bytes: int
    group: str = "cases"
    status: Status = "ok"
    reason: str | None = None
    walls: list[float] = field(default_factory=list)
    peaks_mb: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    extrapolated_from: int | None = None  # sample rows actually moved per run
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the engine's median phase seconds
    source: str = "pg"  # the source the case reads (pg, mysql, sqlite): which own limit it is measured against

    def add_run(self, wall_s: float, peak_mb: float, cpu_s: float) -> None:
        scale = self.rows / self.extrapolated_from if self.extrapolated_from else 1.0
        self.walls.append(round(wall_s * scale, 3))
        self.peaks_mb.append(peak_mb)
        self.cpus.append(round(cpu_s * scale, 2))

    def fail(self, reason: str) -> None:
        self.status, self.reason = "failed", reason

    @property
    def median(self) -> float | None:
        return statistics.median(self.walls) if self.walls and self.status == "ok" else None

    def summary(self, limit_s: float | None, source_limit_s: float | None = None) -> dict[str, Any]:
        median = self.median
        data = asdict(self)
        data.update({
            "runs": len(self.walls),
            "wall_s_median": round(median, 3) if median else None,
            "wall_s_all": data.pop("walls"),
            "rows_per_s": round(self.rows / median) if median else None,
            "mb_per_s": round(self.data_bytes / 1e6 / median, 1) if median else None,
            "ratio_to_limit": round(median / limit_s, 2) if median and limit_s else None,
            "ratio_to_source_limit": round(median / source_limit_s, 2) if median and source_limit_s else None,
            "peak_rss_mb": max(self.peaks_mb) if self.peaks_mb else None,
            "peak_rss_mb_all": data.pop("peaks_mb"),
            "cpu_s_median": round(statistics.median(self.cpus), 2) if self.cpus and median else None,
            "cpu_s_all": data.pop("cpus"),
        })
        return data


def summarize(results: list[CaseResult]) -> list[dict[str, Any]]:
    medians = {r.case: r.median for r in results}
    return [r.summary(medians.get(LIMIT_CASE), medians.get(SOURCE_LIMITS.get(r.source, LIMIT_CASE)))
            for r in results]


def _num(value: float | int | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    lines = [f"### {title}", "",
             "| case | rows | runs | median wall s | rows/s | MB/s | × COPY limit | × own source's limit | peak RSS MB "
             "| median CPU s | status |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f"**{r['status']}**: {r['reason']}"
        if r["status"] == "ok" and r.get("notes"):
            status += f" ({r['notes']})"
        if len(set(r.get("extra", {}).get("engine_source", []))) > 1:
            status += "; **engine code changed between runs**"
        failed = r.get("extra", {}).get("failed_attempts", [])
        if r["status"] == "ok" and failed:
            status += f"; **{len(failed)} failed attempt(s)**, first: {failed[0][:200]}"
        spread = ""
        if r["status"] == "ok" and len(r["wall_s_all"]) > 1:
            spread = f" ({min(r['wall_s_all']):.2f}–{max(r['wall_s_all']):.2f})"
        cells = [str(r["label"]), status]
        label, status = (c.replace("|", "\\|").replace("\n", " ") for c in cells)  # keep the table intact
        lines.append(
            f"| {label} | {r['rows']:,} | {r['runs']} | {_num(r['wall_s_median'], '.2f')}{spread} | "
            f"{_num(r['rows_per_s'], ',')} | {_num(r['mb_per_s'], '.1f')} | {_num(r['ratio_to_limit'], '.2f')} | "
            f"{_num(r.get('ratio_to_source_limit'), '.2f')} | "
            f"{_num(r['peak_rss_mb'], ',.0f')} | {_num(r.get('cpu_s_median'), '.2f')} | {status} |")
    busy = {r["case"]: max(r["extra"]["cpu_busy_before_run_pct"]) for r in rows
            if r.get("extra", {}).get("cpu_busy_before_run_pct")}
    if busy:
        noisy = ", ".join(f"{k} {v:.0f}%" for k, v in busy.items() if v >= 25) or "all quiet"
        lines += ["", "CPU s: user + system time of the case's own process tree (not the database servers)."]
        lines += ["", f"CPU busy in the second before a run (other work on the machine): "
                      f"max {max(busy.values()):.0f}% ({noisy})"]
    phases = [r for r in rows if r.get("extra", {}).get("phase_seconds")]
    if phases:
        lines += ["", "Engine phases (median seconds, summed over workers; from the engine's own JSON report):", ""]
        for r in phases:
            p = r["extra"]["phase_seconds"]
            inner = r["extra"].get("engine_wall_s")
            lines.append(f"- {r['case']}: " + ", ".join(f"{k} {v:.2f}" for k, v in p.items())
                         + (f"; engine-reported wall {inner:.2f} s (the rest is process start-up and exit)"
                            if inner else ""))
    starts = [r for r in rows if r.get("extra", {}).get("startup_s") is not None]
    if starts:
        lines += ["", "Engine start-up: seconds from the process's start to its first batch read (median; "
                      "`startup` in the engine's JSON report), and its steps:", ""]
        for r in starts:
            steps = r["extra"].get("startup", {})
            lines.append(f"- {r['case']}: start-up {r['extra']['startup_s']:.2f} s ("
                         + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()) + ")")
    return "\n".join(lines)


def write_results(rows: list[dict[str, Any]], folder: Path, name: str, dated_prefix: str | None) -> list[Path]:
    """Write `<name>.json` (and `<dated_prefix><date>.json`), atomically: a killed run never leaves half a file."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(rows, indent=2) + "\n"
    paths = [folder / f"{name}.json"]
    if dated_prefix is not None:
        paths.append(folder / f"{dated_prefix}{time.strftime('%Y-%m-%d')}.json")
    for path in paths:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return paths
