"""`engine report`: one self-contained HTML file per run that opens offline.

Status banner; rows read / loaded / quarantined; the table's rows and throughput against the previous
successful run; throughput and memory over time; a partition timeline (one bar per partition, a row per
worker) with duration quantiles; the validation summary with the SQL that lists the failing rows; what was
not carried over. Charts are Plotly figures; plotly.js is inlined once, so nothing is fetched.

Size: plotly.js is about 4.8 MB; the data stays under `DATA_CAP` bytes — series are thinned to
`metrics.MAX_SAMPLES` points and the timeline to `MAX_BARS` bars (the slowest partitions are always kept).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from engine import history, pg
from engine.config import JobConfig
from engine.errors import EngineError
from engine.metrics import thin
from engine.model import PHASES
from engine.sql import quote_literal
from engine.urls import redact

MAX_BARS = 1500
DATA_CAP = 1_500_000  # bytes of report beyond plotly.js


def quantiles(values: list[float]) -> dict[str, float]:
    """min / p50 / p90 / max (nearest rank)."""
    if not values:
        return {}
    s = sorted(values)

    def rank(q: float) -> float:
        return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]

    return {"min": s[0], "p50": rank(0.5), "p90": rank(0.9), "max": s[-1]}


def gather(conn: pg.Connection, job: str, run_id: str | None = None) -> dict[str, Any]:
    """Everything the report shows, from the target's `engine` schema."""
    runs = history.runs(conn, job, 500)
    if not runs:
        raise EngineError(f"job {job!r} has no runs yet")
    index = next((i for i, r in enumerate(runs) if r["run_id"] == run_id), None) if run_id else 0
    if index is None:
        raise EngineError(f"job {job!r} has no run {run_id!r} (engine runs <job.toml> lists them)")
    run = runs[index]
    previous = next((r for r in runs[index + 1:] if r["status"] == "succeeded"), None)
    stored = pg.fetch_all(conn, "SELECT report::text FROM engine.runs WHERE run_id = $1", (run["run_id"],))[0][0]
    report = json.loads(stored) if stored else {}
    parts = []
    for r in pg.fetch_all(conn, """SELECT partition_id, rows_read, rows_loaded, rows_quarantined, seconds,
                                   metrics::text FROM engine.checkpoints WHERE run_id = $1 ORDER BY partition_id""",
                          (run["run_id"],)):
        m = json.loads(r[5]) if r[5] else {}
        seconds = float(r[4] or 0)
        ended = float(m.get("ended", 0))
        parts.append({"partition": int(r[0]), "rows_read": int(r[1]), "rows_loaded": int(r[2]),
                      "rows_quarantined": int(r[3]), "seconds": seconds, "started": ended - seconds, "ended": ended,
                      "worker": m.get("worker", "?"), "retries": m.get("retries", 0), "phases": m.get("phases", {}),
                      "bytes": m.get("bytes", 0)})
    failures = [{"checks": f[0], "columns": f[1], "rows": int(f[2])} for f in pg.fetch_all(
        conn, """SELECT checks, columns, COUNT(*) FROM engine.quarantine WHERE job = $1 AND run_id = $2
                 GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10""", (job, run["run_id"]))]
    return {"job": job, "run": run, "previous": previous, "report": report, "partitions": parts,
            "failures": failures}


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else 0.0


def _figure_html(fig: go.Figure, div_id: str) -> str:
    fig.update_layout(margin={"l": 60, "r": 20, "t": 40, "b": 40}, height=320, template="plotly_white")
    return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                           config={"displaylogo": False, "responsive": True}))


def _timeline_bars(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most MAX_BARS partitions for the timeline: the slowest tenth always, the rest evenly by start."""
    if len(parts) <= MAX_BARS:
        return parts
    slow = sorted(parts, key=lambda p: p["seconds"], reverse=True)[:MAX_BARS // 10]
    keep = {p["partition"] for p in slow}
    rest = thin(sorted((p for p in parts if p["partition"] not in keep), key=lambda p: p["started"]),
                MAX_BARS - len(slow))
    return sorted(slow + rest, key=lambda p: p["started"])


def charts(data: dict[str, Any]) -> dict[str, go.Figure]:
    run, previous, metrics = data["run"], data["previous"], data["report"].get("metrics", {})
    figures: dict[str, go.Figure] = {}
    samples = thin(metrics.get("samples", []))
    if samples:
        t = [s["t"] for s in samples]
        fig = go.Figure([go.Scatter(x=t, y=[s.get("rows_per_second", 0) for s in samples], name="rows/s"),
                         go.Scatter(x=t, y=[s.get("mb_per_second", 0) for s in samples], name="MB/s", yaxis="y2")])
        fig.update_layout(title="Throughput over time", xaxis_title="seconds since start", yaxis_title="rows/s",
                          yaxis2={"title": "MB/s", "overlaying": "y", "side": "right"})
        figures["throughput"] = fig
        figures["memory"] = go.Figure([go.Scatter(x=t, y=[s["rss_mb"] for s in samples], name="RSS MB",
                                                  fill="tozeroy")]).update_layout(
            title="Resident memory", xaxis_title="seconds since start", yaxis_title="MB")
    parts = [p for p in data["partitions"] if p["ended"] > 0]
    if parts:
        origin = min(p["started"] for p in parts)
        bars = _timeline_bars(parts)
        figures["timeline"] = go.Figure([go.Bar(
            y=[p["worker"] for p in bars], x=[round(p["seconds"], 3) for p in bars],
            base=[round(p["started"] - origin, 3) for p in bars], orientation="h",
            text=[f"p{p['partition']}" for p in bars], textposition="inside",
            hovertext=[f"partition {p['partition']}: {p['rows_read']:,} rows in {p['seconds']:.2f}s, "
                       f"{p['retries']} retries" for p in bars], hoverinfo="text")]).update_layout(
            title="Partition timeline (one bar per partition, a row per worker)", xaxis_title="seconds",
            barmode="overlay")
    names = ["this run"] + (["previous run"] if previous else [])
    shown = [run] + ([previous] if previous else [])
    figures["compare"] = go.Figure([
        go.Bar(x=names, y=[r["rows_loaded"] for r in shown], name="rows loaded", offsetgroup=0),
        go.Bar(x=names, y=[round(_rate(r["rows_read"], r["duration_seconds"])) for r in shown], name="rows/s",
               yaxis="y2", offsetgroup=1)]).update_layout(
        title="Rows and throughput against the previous run", barmode="group",
        yaxis2={"title": "rows/s", "overlaying": "y", "side": "right"})
    return figures


_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
.banner{padding:14px 18px;border-radius:6px;color:#fff;font-size:1.2em}
.succeeded{background:#2e7d32}.failed{background:#c62828}.running,.abandoned{background:#f9a825;color:#222}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 10px;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}pre{background:#f5f5f5;padding:8px;white-space:pre-wrap}"""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(data: dict[str, Any]) -> str:
    run, previous, report, job = data["run"], data["previous"], data["report"], data["job"]
    rid = run["run_id"]
    figures = charts(data)
    parts = data["partitions"]
    rate = _rate(run["rows_read"], run["duration_seconds"])
    prev_rate = _rate(previous["rows_read"], previous["duration_seconds"]) if previous else None
    change = f"{(rate / prev_rate - 1):+.0%}" if prev_rate else "-"
    sections = [
        f"<div class='banner {_esc(run['status'])}' id='banner'>{_esc(run['status'].upper())} — job {_esc(job)}, run "
        f"{_esc(rid)}, started {_esc(run['started'])}, {run['duration_seconds']:,.1f} s; "
        f"{run['rows_read']:,} rows read, {run['rows_loaded']:,} loaded, {run['rows_rejected']:,} quarantined</div>",
    ]
    if report.get("source"):
        sections.append(f"<p id='route'>{_esc(redact(report['source']))} &rarr; {_esc(redact(report.get('target', '')))}"
                        f" [{_esc(run['mode'] or report.get('mode', ''))}]</p>")
    if run.get("error"):
        sections.append(f"<h2>Error</h2><pre>{_esc(run['error'])}</pre>")
    sections.append("<h2>Per table</h2>" + _table(
        ["table", "rows read", "loaded", "quarantined", "rows/s", "previous rows/s", "change"],
        [[report.get("target", "").split(" ")[-1] or job, f"{run['rows_read']:,}", f"{run['rows_loaded']:,}",
          f"{run['rows_rejected']:,}", f"{rate:,.0f}", f"{prev_rate:,.0f}" if prev_rate else "-", change]]))
    for name in ("compare", "throughput", "memory", "timeline"):
        if name in figures:
            sections.append(_figure_html(figures[name], f"chart-{name}"))
    durations = quantiles([p["seconds"] for p in parts])
    if durations:
        phase_rows = [["duration (s)", *(f"{v:.2f}" for v in durations.values())]]
        for phase in PHASES:
            q = quantiles([float(p["phases"].get(phase, 0)) for p in parts if p["phases"]])
            if q:
                phase_rows.append([phase, *(f"{v:.2f}" for v in q.values())])
        sections.append(f"<h2>Partition durations ({len(parts)} partitions)</h2>"
                        + _table(["", "min", "p50", "p90", "max"], phase_rows))
    sections.append("<h2>Validation</h2>")
    if data["failures"]:
        sections.append(_table(["check", "columns", "rows"], [[f["checks"], f["columns"], f"{f['rows']:,}"]
                                                               for f in data["failures"]]))
        top = data["failures"][0]["checks"]
        sections.append("<p>The failing rows (all of them, not a sample):</p><pre>"
                        + _esc(f"SELECT source_key, checks, columns, reason, row FROM engine.quarantine\n"
                               f"WHERE job = {quote_literal(job)} AND run_id = {quote_literal(rid)}\n"
                               f"  AND checks = {quote_literal(top)}  -- or leave this line out for every check\n"
                               "ORDER BY partition_id, id;") + "</pre>")
    else:
        sections.append("<p>No row failed validation.</p>")
    not_carried = [f"{run['rows_rejected']:,} rows quarantined (engine.quarantine and the run's rejected/*.parquet)"]
    not_carried += [str(n) for n in report.get("notes", [])]
    if run["partitions_done"] < run["partitions"]:
        not_carried.append(f"{run['partitions'] - run['partitions_done']} of {run['partitions']} partitions not "
                           "committed")
    sections.append("<h2>Not carried over</h2><ul>" + "".join(f"<li>{_esc(n)}</li>" for n in not_carried) + "</ul>")
    body = "\n".join(sections)
    if len(body) > DATA_CAP:
        raise EngineError(f"the report's data is {len(body):,} bytes, over its cap of {DATA_CAP:,}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>engine report {_esc(job)} {_esc(rid)}</title>"
            f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body>{body}</body></html>")


def html_report(config: JobConfig, run_id: str | None = None, out: Path | None = None) -> Path:
    """Write the report of a run (default: the latest) to `out` (default: `<job>-<run>.html` here)."""
    with pg.connection(config.target_url) as conn:
        data = gather(conn, config.job.name, run_id)
    path = out or Path(f"{config.job.name}-{data['run']['run_id']}.html")
    path.write_text(render(data), encoding="utf-8")
    return path
