"""Step 4: `engine report` — one self-contained HTML file, rendered by headless Chromium from disk with no
network: charts present and not blank, no request leaves the machine, the file stays under its cap."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from engine.htmlreport import DATA_CAP, MAX_BARS, render
from engine.metrics import MAX_SAMPLES
from tests.conftest import run_cli
from tests.observe.browser import dump_dom, remote, screenshot
from tests.observe.helpers import make_orders, orders_job
from tests.observe.test_progress import SECRET, _with_password

PLOTLY_JS = 5_000_000  # plotly.js, inlined (about 4.8 MB)
CHARTS = ("chart-compare", "chart-throughput", "chart-memory", "chart-timeline")


def _chart(dom: str, div_id: str) -> str:
    """The rendered markup of one chart (up to the next chart)."""
    start = dom.index(f'id="{div_id}"')
    ends = [i for i in (dom.find('id="chart-', start + 10), dom.find("<h2>", start)) if i > 0]
    return dom[start:min(ends) if ends else len(dom)]


def test_the_report_renders_offline_in_chromium(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 4000)
    job = orders_job(tmp_path, "report1", _with_password(pg_source), _with_password(pg_db),
                     staging=tmp_path / "staging")
    assert run_cli("run", str(job), "--quiet").returncode == 0
    second = run_cli("run", str(job), "--fresh", "--quiet", env={"ENGINE_FAILPOINTS": "transform.batch=sleep@2"})
    assert second.returncode == 0, second.stderr
    page = tmp_path / "report.html"
    made = run_cli("report", str(job), "-o", str(page))
    assert made.returncode == 0, made.stderr
    assert page.stat().st_size < PLOTLY_JS + DATA_CAP
    source = page.read_text()
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", source)  # nothing to fetch: all inline
    assert "postgresql://postgres:***@" in source and SECRET not in source
    saved = list((tmp_path / "staging").rglob("*.json"))
    assert len(saved) == 2 and all(SECRET not in p.read_text() for p in saved)  # each run's metrics.json

    dom, urls = dump_dom(page, tmp_path)
    assert remote(urls) == [], remote(urls)
    assert "SUCCEEDED" in dom and "4,000 rows read, 3,600 loaded, 400 quarantined" in dom
    for div in CHARTS:
        chart = _chart(dom, div)
        assert 'class="main-svg"' in chart, f"{div} did not render"
    bars = _chart(dom, "chart-timeline").count('class="point"')
    assert bars >= 4, bars  # one bar per partition
    assert _chart(dom, "chart-compare").count('class="point"') >= 4  # this run and the previous, two series
    assert re.search(r'class="js-line" d="M[\d.]+,[\d.]+L', _chart(dom, "chart-throughput"))  # a drawn line
    assert "<th>p50</th>" in dom and "<th>p90</th>" in dom and "greater_than_or_equal_to(0)" in dom
    assert "SELECT source_key, checks, columns, reason, row FROM engine.quarantine" in dom
    assert "previous rows/s" in dom

    shot, shot_urls = screenshot(page, tmp_path)
    assert remote(shot_urls) == []
    image = Image.open(shot).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20) or []
    non_white = sum(n for n, c in colors if sum(c) < 740)
    assert len(colors) > 50 and non_white > 0.02 * image.width * image.height, (len(colors), non_white)


def test_the_network_check_sees_a_page_that_fetches(tmp_path: Path) -> None:
    """The net-log check itself: a page with a remote script and image is caught."""
    page = tmp_path / "fetches.html"
    page.write_text('<html><body><script src="https://cdn.example.com/x.js"></script>'
                    '<img src="http://example.org/a.png"></body></html>')
    _, urls = dump_dom(page, tmp_path)
    assert sorted(remote(urls)) == ["http://example.org/a.png", "https://cdn.example.com/x.js"]


def test_large_runs_are_downsampled_under_the_cap() -> None:
    parts = [{"partition": i, "rows_read": 1000, "rows_loaded": 1000, "rows_quarantined": 0, "seconds": 1 + i % 7,
              "started": 1000.0 + i, "ended": 1001.0 + i + i % 7, "worker": f"1/partition_{i % 16}", "retries": 0,
              "phases": {"extract": 0.5, "load": 0.4}, "bytes": 10} for i in range(20_000)]
    parts[12_345]["seconds"] = 500.0
    samples = [{"t": float(t), "rows": t * 100, "bytes": t, "rss_mb": 100.0, "rows_per_second": 100.0,
                "mb_per_second": 0.1} for t in range(50_000)]
    run = {"run_id": "r1", "status": "succeeded", "started": "2026-01-01T00:00:00", "duration_seconds": 50_000.0,
           "rows_read": 20_000_000, "rows_loaded": 20_000_000, "rows_rejected": 0, "partitions_done": 20_000,
           "partitions": 20_000, "error": None}
    html = render({"job": "big", "run": run, "previous": None, "report": {"metrics": {"samples": samples}},
                   "partitions": parts, "failures": []})
    assert len(html.encode()) < PLOTLY_JS + DATA_CAP
    assert "p12345" in html  # the slowest partition is always drawn
    assert html.count('"p') >= MAX_BARS // 2 and MAX_SAMPLES <= 1200


def test_a_failed_run_without_metrics_still_renders() -> None:
    run = {"run_id": "r2", "status": "failed", "started": "2026-01-01T00:00:00", "duration_seconds": 3.0,
           "rows_read": 10, "rows_loaded": 0, "rows_rejected": 10, "partitions_done": 0, "partitions": 4,
           "mode": "append", "error": "10 of 10 rows failed validation"}
    html = render({"job": "j", "run": run, "previous": None, "report": {}, "partitions": [],
                   "failures": [{"checks": "not_nullable", "columns": "a", "rows": 10}]})
    assert "banner failed" in html and "FAILED" in html and "10 of 10 rows failed validation" in html
    assert "4 of 4 partitions not committed" in html and "not_nullable" in html
