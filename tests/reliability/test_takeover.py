"""A run that lost its lock, resumed by another process (a plain rerun, not --fresh): one process runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, pg_rows, run_cli
from tests.reliability.harness import assert_exact_copy, drop_advisory_locks, items_job, make_items


def _wait_for_checkpoints(url: str, count: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (pg_rows(url, "SELECT to_regclass('engine.checkpoints')")[0][0] is not None
                and pg_rows(url, "SELECT COUNT(*) FROM engine.checkpoints")[0][0] >= count):
            return
        time.sleep(0.05)
    raise AssertionError(f"no {count} checkpoint(s) within {timeout} s")


def test_a_plain_resume_takes_the_run_over_and_the_first_process_stops(pg_source: str, pg_db: str,
                                                                       tmp_path: Path) -> None:
    make_items(pg_source, 4000)
    job = items_job(tmp_path, "resume_takeover", pg_source, pg_db, partitions=4, workers=1)
    slow = "load.before_commit=sleep@2,transform.batch=sleep@3"  # a pause after the first commit
    first = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(job), "--quiet"], cwd=ROOT,
                             env={**os.environ, "ENGINE_FAILPOINTS": slow}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoints(pg_db, 1)
    run_id = pg_rows(pg_db, "SELECT run_id FROM engine.runs")[0][0]
    assert drop_advisory_locks(pg_db) == 1
    # Resumes the same run, and pauses before its first commit: the first process commits meanwhile, or tries to.
    second = run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "load.before_commit=sleep@1"})
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming run {run_id}" in second.stderr
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 3, first_err[-2000:]
    assert f"run {run_id} was resumed by another process" in first_err
    assert pg_rows(pg_db, "SELECT status FROM engine.runs WHERE run_id = $1", (run_id,)) == [("succeeded",)]
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM engine.checkpoints WHERE run_id = $1", (run_id,)) == [(4,)]
    assert_exact_copy(pg_source, pg_db)  # append mode: a partition committed twice would show as duplicates
