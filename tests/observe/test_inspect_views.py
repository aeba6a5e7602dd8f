"""Step 7: `engine inspect` views over the run's files (rejected, staged, partitions, metrics), and without SQL
on a terminal DuckDB's interactive shell on them, or how to open it when DuckDB's CLI is absent."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import duckdb
import pexpect

from tests.conftest import ROOT, run_cli
from tests.observe.helpers import make_orders, orders_job


def _count(job: Path, view: str) -> int:
    out = run_cli("inspect", str(job), f"SELECT COUNT(*) AS n FROM {view}")
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split("│")[-2].strip())


def test_views_over_the_runs_files(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 4000)
    job = orders_job(tmp_path, "views1", pg_source, pg_db, staging=tmp_path / "staging", extra="stage_batches = true")
    assert run_cli("run", str(job), "--quiet").returncode == 0
    assert _count(job, "rejected") == 400 and _count(job, "staged") == 3600 and _count(job, "partitions") == 4
    assert _count(job, "metrics") >= 1
    out = run_cli("inspect", str(job), "SELECT SUM(rows_read) AS r, COUNT(DISTINCT worker) AS w, "
                                       "SUM(load) > 0 AS l FROM partitions").stdout
    assert "4000" in out and "true" in out
    assert "rss_mb" in run_cli("inspect", str(job), "SELECT * FROM metrics LIMIT 1").stdout
    summary = run_cli("inspect", str(job)).stdout
    assert "views: rejected, staged, batches, partitions, metrics" in summary and "partitions: 4 rows" in summary

    # a terminal and no DuckDB CLI: the summary and how to open the shell
    env = {**os.environ, "PATH": "/nonexistent"}
    child = pexpect.spawn(sys.executable, ["-m", "engine.cli", "inspect", str(job)], cwd=str(ROOT), env=env,
                          encoding="utf-8", timeout=60)
    child.expect(pexpect.EOF)
    out = child.before or ""
    assert "DuckDB's command-line shell is not installed" in out and "duckdb -init" in out, out
    script = next((tmp_path / "staging" / "views1").glob("*/views.sql"))
    con = duckdb.connect()
    con.execute(script.read_text())
    assert con.execute("SELECT COUNT(*) FROM partitions").fetchone() == (4,)

    # a terminal and a DuckDB CLI (here a stand-in that shows what it was given): the shell opens on the views
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "duckdb"
    fake.write_text('#!/bin/sh\necho "duckdb shell: $@"\ncat "$2"\n')
    fake.chmod(0o755)
    child = pexpect.spawn(sys.executable, ["-m", "engine.cli", "inspect", str(job)], cwd=str(ROOT),
                          env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}, encoding="utf-8", timeout=60)
    child.expect(pexpect.EOF)
    out = child.before or ""
    assert f"duckdb shell: -init {script}" in out, out
    assert "CREATE OR REPLACE VIEW rejected" in out and "CREATE OR REPLACE VIEW metrics" in out
