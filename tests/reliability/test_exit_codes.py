"""Exit codes through the installed `engine` command, on real failures: 69 with "rerun to resume" when a
source stays unreachable (threads executor), 1 with the traceback for an unexpected error (an exception
raised by a rules module: the engine cannot tell a bug there from its own). Each failed run then resumes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, job_toml, pg_rows, write_job
from tests.reliability.harness import CuttingProxy, assert_exact_copy, items_job, make_items
from tests.reliability.test_healing_database import _job as database_job

ENGINE = Path(sys.executable).parent / "engine"  # the console script the package installs


def engine_run(job: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ENGINE), "run", str(job), *options], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ}, timeout=300)


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_source_that_stays_unreachable_exits_69_saying_rerun_to_resume(pg_source: str, pg_db: str,
                                                                          tmp_path: Path) -> None:
    make_items(pg_source, 20000)
    # Planning and the snapshot pass; every connection that reads a partition's rows is cut mid-stream.
    proxy = CuttingProxy(pg_source, after_bytes=300_000, cuts=1000)
    try:
        job = items_job(tmp_path, "unreachable", proxy.url(pg_source), pg_db, partitions=4, workers=1,
                        extra="retries = 1")
        failed = engine_run(job)
        assert failed.returncode == 69, failed.stderr[-3000:]
        assert "retry 1/1" in failed.stderr  # retried `retries` times…
        error = error_line(failed.stderr)  # …then the partition, the error and what to do
        assert error.startswith("error: partition 0 [1, 5000]: reading partition 0 [1, 5000] from ") \
            and "127.0.0.1" in error, error
        assert error.endswith("(gave up after 2 attempts); committed partitions are kept: rerun to resume"), error
        assert pg_rows(pg_db, "SELECT status FROM engine.runs") == [("failed",)]
        with proxy.lock:
            proxy.cuts_left = 0  # the source is back
        rerun = engine_run(job)
    finally:
        proxy.close()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming run" in rerun.stderr
    assert_exact_copy(pg_source, pg_db)


def test_a_source_refusing_connections_exits_69_saying_rerun_to_resume(pg_db: str, tmp_path: Path) -> None:
    source = f"postgresql://postgres@127.0.0.1:{closed_port()}/nowhere"
    job = items_job(tmp_path, "refused", source, pg_db, extra="retries = 1")
    failed = engine_run(job)
    assert failed.returncode == 69, failed.stderr[-3000:]
    error = error_line(failed.stderr)
    assert "refused" in error and error.endswith(": rerun to resume"), error
    assert "Traceback" not in failed.stderr


def test_a_database_job_whose_source_refuses_from_the_start_exits_69_at_once(pg_db: str, tmp_path: Path) -> None:
    """A source that never answered is a mistake in the job, reported at once; one that answered and went away is
    an outage, waited out (tests/reliability/test_healing_database.py)."""
    job = database_job(tmp_path, f"postgresql://postgres@127.0.0.1:{closed_port()}/nowhere", pg_db)
    failed = engine_run(job)
    assert failed.returncode == 69, failed.stderr[-3000:]
    error = error_line(failed.stderr)
    assert "cannot connect to the source" in error and "refused" in error, error
    assert "is unreachable" not in failed.stderr  # not waited for
    assert "Traceback" not in failed.stderr


BUGGY_RULES = """
import polars as pl


def explode(frame: pl.LazyFrame) -> pl.LazyFrame:
    biggest = frame.select(pl.col("id").max()).collect().item()
    if biggest is not None and biggest > 2000:  # the 3rd partition and later; planning passes
        raise RuntimeError("a bug in the rules module")
    return frame
"""


def test_an_unexpected_error_exits_1_with_its_traceback_and_the_run_resumes(pg_source: str, pg_db: str,
                                                                          tmp_path: Path) -> None:
    make_items(pg_source, 4000)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "buggy.py").write_text(BUGGY_RULES, encoding="utf-8")
    text = job_toml("buggy", pg_source, "public.items", pg_db, "public.items", extra_source="partitions = 4",
                    extra="workers = 1\nretries = 3\n\n[transform]\nfunction = \"buggy:explode\"\n")
    job = write_job(tmp_path, text.replace(str(ROOT / "rules"), str(rules)), "buggy.toml")
    failed = engine_run(job)
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "Traceback (most recent call last)" in failed.stderr
    assert "RuntimeError: a bug in the rules module" in failed.stderr
    assert failed.stderr.rstrip().endswith("error: unexpected internal error (above); rerun to resume")
    assert "; retry 1/3" not in failed.stderr  # not transient: not retried
    assert pg_rows(pg_db, "SELECT status, error FROM engine.runs") == [
        ("failed", "RuntimeError: a bug in the rules module")]
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM engine.checkpoints") == [(2,)]  # the partitions before it stay

    (rules / "buggy.py").write_text(BUGGY_RULES.replace("> 2000", "> 10**9"), encoding="utf-8")  # fixed
    rerun = engine_run(job)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming run" in rerun.stderr and "2 of 4 partitions already done" in rerun.stderr
    assert_exact_copy(pg_source, pg_db)
