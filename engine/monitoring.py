"""Monitoring a batch job, as Prometheus advises: the outcome of the last run as gauges, labelled by job and
table (never by run id), written for node_exporter's textfile collector (`--metrics-file`) and pushed to a
Pushgateway (`ENGINE_PUSHGATEWAY_URL`) with push-add, grouped by job.

`engine_last_success_timestamp_seconds` is set only by a successful run: a failed run pushes everything else
(push-add keeps the gateway's last success) and carries the file's last success over.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.report import RunReport
from engine.urls import redact

if TYPE_CHECKING:  # imported when metrics are written: a run without --metrics-file or a gateway never pays for it
    from prometheus_client import CollectorRegistry

LAST_SUCCESS = "engine_last_success_timestamp_seconds"


def _table(report: RunReport) -> str:
    return report.target.split(" ")[-1] if report.target else ""


def registry(report: RunReport, last_success: float | None) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry, Gauge

    reg = CollectorRegistry()
    job, table = report.job, _table(report)
    ok = report.status == "succeeded"

    def gauge(name: str, doc: str, value: float, **labels: str) -> None:
        g = Gauge(name, doc, ["job", *labels], registry=reg)
        g.labels(job, *labels.values()).set(value)

    if last_success is not None:
        gauge(LAST_SUCCESS, "When the job last succeeded (Unix time)", last_success)
    gauge("engine_last_run_timestamp_seconds", "When the job's last run ended (Unix time)", time.time())
    gauge("engine_last_run_success", "1 if the job's last run succeeded, else 0", 1.0 if ok else 0.0)
    gauge("engine_run_duration_seconds", "Wall time of the job's last run", report.wall_seconds)
    for name, doc, value in (("engine_rows_read", "Rows read by the last run", report.rows_read),
                             ("engine_rows_loaded", "Rows loaded by the last run", report.rows_loaded),
                             ("engine_rows_quarantined", "Rows quarantined by the last run", report.rows_quarantined)):
        gauge(name, doc, value, table=table)
    phases = Gauge("engine_phase_duration_seconds", "Time of each phase of the last run (partition phases summed "
                   "over workers)", ["job", "phase"], registry=reg)
    for phase, seconds in {**report.metrics.get("phases", {}), **report.phase_seconds}.items():
        phases.labels(job, phase).set(seconds)
    gauge("engine_partitions_run", "Partitions the last run committed", report.partitions_run)
    gauge("engine_peak_rss_bytes", "Peak resident memory of the last run", report.peak_rss_mb * 2**20)
    return reg


def _previous_success(path: Path, job: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LAST_SUCCESS and sample.labels.get("job") == job:
                return float(sample.value)
    return None


def publish(report: RunReport, metrics_file: str | None) -> list[str]:
    """Write the textfile and push to the gateway, as configured; problems come back as notes, never raised."""
    notes: list[str] = []
    ok = report.status == "succeeded"
    if metrics_file:
        path = Path(metrics_file)
        last = time.time() if ok else _previous_success(path, report.job)
        try:
            from prometheus_client import write_to_textfile

            path.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(path), registry(report, last))  # written aside, then renamed: atomic
        except OSError as exc:
            notes.append(f"metrics file not written: {exc}")
    gateway = os.environ.get("ENGINE_PUSHGATEWAY_URL")
    if gateway:
        from prometheus_client import pushadd_to_gateway

        try:
            pushadd_to_gateway(gateway, job=report.job, registry=registry(report, time.time() if ok else None),
                               timeout=10)
        except Exception as exc:
            notes.append(f"push to the Pushgateway failed: {redact(str(exc))}")
    return notes
