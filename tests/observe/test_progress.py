"""Step 2: progress while a run runs — live on a real pseudo-terminal, plain lines and JSON lines through
pipes, nothing with --quiet; no password in any of them."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pexpect

from tests.conftest import ROOT, run_cli
from tests.observe.helpers import make_orders, orders_job

SECRET = "s3cr3t-canary-pw"
SLOW = {"ENGINE_FAILPOINTS": "transform.batch=sleep@2"}  # a 3 s pause, so the display redraws a few times


def _with_password(url: str) -> str:
    """The same database, with a password in the URL (trust auth ignores it; the engine must hide it)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@", 1)


def _job(tmp_path: Path, name: str, pg_source: str, pg_db: str) -> Path:
    make_orders(pg_source, 4000)
    assert "postgresql://postgres@" in pg_db
    return orders_job(tmp_path, name, _with_password(pg_source), _with_password(pg_db))


def test_live_display_on_a_terminal(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    job = _job(tmp_path, "live1", pg_source, pg_db)
    child = pexpect.spawn(sys.executable, ["-m", "engine.cli", "run", str(job)], cwd=str(ROOT),
                          env={**os.environ, **SLOW, "TERM": "xterm-256color"}, dimensions=(40, 140),
                          encoding="utf-8", timeout=120)
    child.expect("rows/s")  # the display is up while the run runs
    child.expect(pexpect.EOF)
    child.close()
    out = child.before or ""
    screen = "rows/s" + out
    assert child.exitstatus == 0, out[-2000:]
    assert "\x1b[?25l" in screen or "\x1b[2K" in screen or "\x1b[1A" in screen  # redrawn in place
    assert "━" in screen  # the bar
    assert re.search(r"4,000 / 4,000 rows \(100%\)", screen) and "partitions 4/4 done" in screen
    assert "ETA" in screen and "MB/s" in screen and "in flight" in screen and "retried" in screen
    assert SECRET not in screen


def test_plain_lines_without_a_terminal(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    job = _job(tmp_path, "plain1", pg_source, pg_db)
    start = time.time()
    result = run_cli("run", str(job), env=SLOW)
    wall = time.time() - start
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines), lines
    assert "\x1b[" not in result.stderr  # no terminal codes in a pipe
    status = [line for line in lines if "rows/s" in line]
    assert status and len(status) <= 2 + wall / 5, status  # one status line every few seconds at most
    assert "4,000/4,000 rows (100%)" in status[-1] and "partitions 4/4 done" in status[-1]
    assert SECRET not in result.stderr + result.stdout


def test_json_lines_carry_the_ids(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    job = _job(tmp_path, "json1", pg_source, pg_db)
    result = run_cli("run", str(job), "--log-format", "json", env=SLOW)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    run_id = next(e["run_id"] for e in events if e["event"] == "run_started")
    assert run_id and f"run {run_id}" in result.stdout
    for e in events:
        assert {"ts", "job", "table", "partition", "event"} <= set(e) and e["job"] == "json1"
    done = [e for e in events if e["event"] == "partition_done"]
    assert sorted(e["partition"] for e in done) == [0, 1, 2, 3] and all(e["run_id"] == run_id for e in done)
    assert sum(e["counts"]["rows_read"] for e in done) == 4000 and sum(e["counts"]["rows_quarantined"] for e in done) == 400
    assert all(e["durations"]["seconds"] > 0 and "load" in e["durations"] for e in done)
    assert events[-1]["event"] == "run_finished" and events[-1]["counts"]["rows_loaded"] == 3600
    assert any(e["event"] == "progress" and e["counts"]["rows_planned"] == 4000 for e in events)
    assert all(e["table"] == '"public"."orders"' or e["table"] == "public.orders" for e in events)
    assert SECRET not in result.stderr + result.stdout


def test_quiet_prints_no_progress(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    job = _job(tmp_path, "quiet1", pg_source, pg_db)
    result = run_cli("run", str(job), "--quiet")
    assert result.returncode == 0 and result.stderr == "" and "SUCCEEDED" in result.stdout
