"""Step 1: metrics collected during a run and saved with it (engine.runs.report, metrics.json, checkpoints)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import failpoints
from engine.config import load_config
from engine.metrics import RunMetrics, rss_mb, thin
from engine.pipeline import run_job
from tests.conftest import pg_rows
from tests.observe.helpers import make_orders, orders_job

PHASES = {"extract", "transform", "validate", "load", "commit"}


def test_a_run_saves_its_metrics(pg_source: str, pg_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_orders(pg_source, 4000)
    monkeypatch.setenv("ENGINE_FAILPOINTS", "transform.batch=sleep@2")  # a 3 s pause: the sampler gets points
    failpoints.reset()
    job = orders_job(tmp_path, "metrics1", pg_source, pg_db, staging=tmp_path / "staging")
    report = run_job(load_config(job))
    m = report.metrics
    assert {"plan", "prepare", "partitions", "finish"} <= set(m["phases"])
    parts = m["partitions"]
    assert sorted(p["partition"] for p in parts) == [0, 1, 2, 3]
    assert sum(p["rows_read"] for p in parts) == 4000 and sum(p["rows_quarantined"] for p in parts) == 400
    for p in parts:
        assert set(p["phases"]) == PHASES and p["bytes"] > 0 and p["retries"] == 0
        assert p["started"] < p["ended"] and p["worker"].split("/")[1].startswith("partition")
    assert len({p["worker"] for p in parts}) == 2  # two workers
    samples = m["samples"]
    assert len(samples) >= 3 and samples[-1]["rows"] == 4000
    assert all(s["rss_mb"] > 10 for s in samples)
    assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)
    assert any(s["rows_per_second"] > 0 for s in samples)
    assert any(s["queues"] for s in samples)  # stage queues were sampled while partitions ran
    assert m["rules"] == {"greater_than_or_equal_to(0)": 400}
    # the sampler costs far less than 1% of one core
    assert m["sampler_cpu_seconds"] < 0.01 * report.wall_seconds + 0.02, m["sampler_cpu_seconds"]

    stored = pg_rows(pg_db, "SELECT report->'metrics' FROM engine.runs WHERE run_id = $1", (report.run_id,))[0][0]
    assert json.loads(stored)["partitions"] == parts
    on_disk = json.loads((tmp_path / "staging" / "metrics1" / report.run_id / "metrics.json").read_text())
    assert on_disk["samples"] == samples
    rows = pg_rows(pg_db, "SELECT metrics FROM engine.checkpoints WHERE run_id = $1", (report.run_id,))
    assert len(rows) == 4 and all(set(json.loads(r[0])["phases"]) == PHASES for r in rows)


def test_long_series_are_thinned_keeping_both_ends() -> None:
    points = list(range(10_000))
    out = thin(points, 100)
    assert len(out) == 100 and out[0] == 0 and out[-1] == 9999
    assert thin(points[:50], 100) == points[:50]


def test_rates_come_from_the_last_seconds() -> None:
    m = RunMetrics("j", "t")
    m.started -= 10
    m.samples = [{"t": 0.0, "rows": 0, "bytes": 0}, {"t": 4.0, "rows": 40_000, "bytes": 4 << 20}]
    m._base = (-100_000, -(10 << 20))  # the counters read 100,000 rows and 10 MiB more than at the start
    rows_per_second, mb_per_second = m.rates(window=5)
    # from t=4 (40,000 rows, 4 MiB) to t=10: at least 100,000 rows, 10 MiB
    assert rows_per_second >= (100_000 - 40_000) / 6.1 and mb_per_second >= 6 / 6.1
    assert rss_mb() > 1


def test_partitions_run_elsewhere_count_once_they_finish() -> None:
    """On Dask the batches pass through worker processes, not this one's counters: finished partitions count."""
    from collections import Counter

    from engine.metrics import PartitionMetrics

    m = RunMetrics("j", "t")
    m.start_sampler()
    m.partition_started(0)
    m.partition_done(PartitionMetrics(0, "w", 1.0, 2.0, 5000, 4990, 10, 123_456, 0, {}), Counter())
    m.stop_sampler()
    assert m.rows_and_bytes() == (5000, 123_456)
    assert (m.partitions_done, m.partitions_in_flight) == (1, 0)


def test_a_run_reports_its_start_up(pg_source: str, pg_db: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Start-up is the time to the run's first row, split into steps that add up to it: one partition's slow
    first read does not count while the other worker's partition has read already."""
    make_orders(pg_source, 1000)
    monkeypatch.setenv("ENGINE_FAILPOINTS", "extract.batch=sleep@1")  # one partition's first batch is 3 s late
    failpoints.reset()
    report = run_job(load_config(orders_job(tmp_path, "startup1", pg_source, pg_db)))
    steps = report.startup
    assert list(steps) == ["process", "connect", "plan", "prepare", "first_batch"]
    assert all(v >= 0 for v in steps.values()), steps
    assert report.startup_seconds is not None
    assert abs(sum(steps.values()) - report.startup_seconds) < 0.01, (steps, report.startup_seconds)
    assert report.wall_seconds > 3.0 and steps["first_batch"] < 2.0, (steps, report.wall_seconds)
    assert "start-up" in report.render() and json.loads(report.to_json())["startup"] == steps
