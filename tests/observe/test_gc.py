"""Step 6: the cleanup phase after a successful run, and `engine gc`, which deletes only what it should:
a resumable run keeps its files and quarantined rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.gc import parse_age
from tests.conftest import pg_exec, pg_rows, run_cli
from tests.observe.helpers import make_orders, orders_job

KILL = {"ENGINE_FAILPOINTS": "load.before_commit=exit@3"}  # dies before its third commit: 2 of 4 partitions


def _runs(pg_db: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in pg_rows(pg_db, "SELECT run_id, status FROM engine.runs ORDER BY started_at")]


def _quarantined(pg_db: str) -> dict[str, int]:
    return dict(pg_rows(pg_db, "SELECT run_id, COUNT(*) FROM engine.quarantine GROUP BY 1"))


def test_gc_deletes_old_runs_files_and_rows_but_not_what_a_resume_needs(pg_source: str, pg_db: str,
                                                                       tmp_path: Path) -> None:
    make_orders(pg_source, 4000)
    staging = tmp_path / "staging"
    job = orders_job(tmp_path, "gc1", pg_source, pg_db, staging=staging)
    assert run_cli("run", str(job), "--quiet").returncode == 0  # A: succeeded
    assert run_cli("run", str(job), "--fresh", env=KILL).returncode == 137  # B: killed, 2 partitions committed
    (a, _), (b, b_status) = _runs(pg_db)
    assert b_status == "running"
    for run_id, days in ((a, 41), (b, 40)):
        pg_exec(pg_db, f"UPDATE engine.runs SET started_at = now() - interval '{days} days', finished_at = now() - "
                       f"interval '{days} days' + interval '1 minute' WHERE run_id = '{run_id}'")
    root = staging / "gc1"
    assert (root / a / "rejected").is_dir() and (root / b / "rejected").is_dir()
    assert _quarantined(pg_db) == {a: 400, b: 200}
    for run_id in (a, b):  # and three rows of each that a warn rule recorded
        pg_exec(pg_db, "INSERT INTO engine.warnings (job, run_id, partition_id, checks, columns, reason, row) "
                       "SELECT job, run_id, partition_id, checks, columns, reason, row FROM engine.quarantine "
                       f"WHERE run_id = '{run_id}' LIMIT 3")

    dry = run_cli("gc", str(job), "--older-than", "30d")
    assert dry.returncode == 0, dry.stderr
    assert f"staging folder of run {a}" in dry.stdout and f"403 quarantined or warned rows of run {a}" in dry.stdout
    assert b not in dry.stdout.split("keeping")[0] and f"run {b} may resume" in dry.stdout
    assert "rerun with --yes" in dry.stdout
    assert (root / a).is_dir() and _quarantined(pg_db) == {a: 400, b: 200}  # a dry run deletes nothing

    assert "nothing older than 60d" in run_cli("gc", str(job), "--older-than", "60d", "--yes").stdout
    assert (root / a).is_dir()

    done = run_cli("gc", str(job), "--older-than", "30d", "--yes")
    assert done.returncode == 0 and "deleted" in done.stdout
    assert not (root / a).exists() and (root / b / "rejected").is_dir()
    assert _quarantined(pg_db) == {b: 200}
    assert pg_rows(pg_db, "SELECT run_id, COUNT(*) FROM engine.warnings GROUP BY 1") == [(b, 3)]
    assert len(_runs(pg_db)) == 2  # history stays

    resumed = run_cli("run", str(job), "--quiet")  # B resumes with what it kept
    assert resumed.returncode == 0, resumed.stderr
    assert _runs(pg_db)[1] == (b, "succeeded") and _quarantined(pg_db) == {b: 400}


def test_cleanup_after_success_removes_abandoned_leftovers(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 4000)
    staging = tmp_path / "staging"
    job = orders_job(tmp_path, "clean1", pg_source, pg_db, staging=staging)
    replace = job.read_text().replace('mode = "append"', 'mode = "replace"')
    job.write_text(replace)
    assert run_cli("run", str(job), env=KILL).returncode == 137  # a replace run dies: orders__engine_new stays
    assert pg_rows(pg_db, "SELECT to_regclass('public.orders__engine_new') IS NOT NULL") == [(True,)]
    [(killed, _)] = _runs(pg_db)
    assert (staging / "clean1" / killed).is_dir()

    job.write_text(replace.replace('mode = "replace"', 'mode = "append"'))  # the job changes: --fresh
    result = run_cli("run", str(job), "--fresh")
    assert result.returncode == 0, result.stderr
    (_, abandoned), (new, _) = _runs(pg_db)
    assert abandoned == "abandoned"
    assert not (staging / "clean1" / killed).exists()  # never resumes: its folder went
    assert (staging / "clean1" / new / "rejected").is_dir() and (staging / "clean1" / new / "metrics.json").exists()
    assert pg_rows(pg_db, "SELECT to_regclass('public.orders__engine_new')") == [(None,)]
    assert "cleanup removed the table" in result.stdout


def test_a_resumable_replace_run_keeps_its_new_table(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 4000)
    job = orders_job(tmp_path, "clean2", pg_source, pg_db)
    job.write_text(job.read_text().replace('mode = "append"', 'mode = "replace"'))
    assert run_cli("run", str(job), env=KILL).returncode == 137
    out = run_cli("gc", str(job), "--older-than", "0s", "--yes").stdout
    assert "engine_new" not in out
    assert pg_rows(pg_db, "SELECT to_regclass('public.orders__engine_new') IS NOT NULL") == [(True,)]
    assert run_cli("run", str(job), "--quiet").returncode == 0  # it resumes into it


def test_ages() -> None:
    assert parse_age("30d") == 30 * 86400 and parse_age("12h") == 43200 and parse_age("2w") == 14 * 86400
    with pytest.raises(ConfigError):
        parse_age("thirty days")
