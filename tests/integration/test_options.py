"""Every job option the README lists does what it says: each test fails when its option is ignored."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from engine import failpoints
from engine.config import load_config
from engine.errors import ConfigError
from engine.pipeline import run_job
from tests.conftest import ROOT, failpoint_reached, job_toml, pg_exec, pg_rows, release_failpoint, run_cli, write_job
from tests.reliability.harness import assert_exact_copy, items_job, make_items

COLUMNS = "SELECT id, grp, label, amount, at FROM public.items ORDER BY id"


def test_bounds_set_the_ranges_and_rows_outside_them_still_arrive(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_items(pg_source, 1000)
    job = items_job(tmp_path, "bounds", pg_source, pg_db, partitions=3).read_text().replace(
        "partitions = 3", "partitions = 3\nbounds = [201, 800]")
    report = run_job(load_config(write_job(tmp_path, job, "bounds.toml")))
    assert report.partitions_total == 5 and report.rows_loaded == 1000
    ranges = pg_rows(pg_db, "SELECT lo::bigint, hi::bigint, rows_read FROM engine.checkpoints ORDER BY lo NULLS FIRST")
    assert ranges == [(None, 200, 200), (201, 400, 200), (401, 600, 200), (601, 800, 200), (801, None, 200)]
    assert_exact_copy(pg_source, pg_db)


def test_create_false_refuses_a_missing_table_and_loads_an_existing_one(pg_source: str, pg_db: str,
                                                                       tmp_path: Path) -> None:
    make_items(pg_source, 500)
    job = items_job(tmp_path, "nocreate", pg_source, pg_db).read_text().replace(
        'mode = "append"', 'mode = "append"\ncreate = false')
    path = write_job(tmp_path, job, "nocreate.toml")
    result = run_cli("run", str(path))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "does not exist and target.create = false" in result.stderr
    assert pg_rows(pg_db, "SELECT to_regclass('public.items')") == [(None,)]
    pg_exec(pg_db, """CREATE TABLE public.items (id bigint PRIMARY KEY, grp integer NOT NULL, label text,
        amount numeric(14,4), at timestamptz, doc jsonb)""")
    assert run_cli("run", str(path)).returncode == 0
    assert_exact_copy(pg_source, pg_db)


def test_stage_batches_writes_every_loaded_batch_for_duckdb(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_items(pg_source, 3000)
    staging = tmp_path / "staging"
    body = job_toml("staged", pg_source, "public.items", pg_db, "public.items", extra_source="partitions = 3",
                    extra="batch_rows = 1000\nstage_batches = true").replace(
        f'staging_dir = "{ROOT / ".engine" / "test-staging"}"', f'staging_dir = "{staging}"')
    job = write_job(tmp_path, body, "staged.toml")
    report = run_job(load_config(job))
    files = sorted(Path(report.staging_dir, "batches").glob("*.parquet"))
    assert Path(report.staging_dir).is_relative_to(staging) and len(files) == 3, files
    summary = run_cli("inspect", str(job)).stdout
    assert "staged: 3,000 rows" in summary, summary
    sql = "SELECT 'n=' || COUNT(*) || ' distinct=' || COUNT(DISTINCT id) || ' sum=' || SUM(id) AS a FROM staged"
    assert "n=3000 distinct=3000 sum=4501500 " in run_cli("inspect", str(job), sql).stdout

    unstaged = write_job(tmp_path, body.replace("stage_batches = true", "stage_batches = false")
                         .replace('"staged"', '"unstaged"'), "unstaged.toml")
    pg_exec(pg_db, "TRUNCATE public.items")
    report = run_job(load_config(unstaged))
    assert report.rows_loaded == 3000 and not Path(report.staging_dir, "batches").exists()


@pytest.mark.parametrize("depth", [1, 3])
def test_queue_depth_bounds_the_batches_read_ahead(depth: int, pg_source: str, pg_db: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The transform stage stops at its first batch: the reader may then hold one batch in hand and
    `queue_depth` in the queue, whatever the partition's length (20 batches here)."""
    make_items(pg_source, 20000)
    job = items_job(tmp_path, "depth", pg_source, pg_db, partitions=1, workers=1, extra=f"queue_depth = {depth}")
    # extract.batch only counts (its 10^6-th hit would fail); transform.batch stops until released
    monkeypatch.setenv("ENGINE_FAILPOINTS", "transform.batch=wait@1,extract.batch=raise@1000000")
    monkeypatch.setenv("ENGINE_FAILPOINTS_DIR", str(tmp_path))
    failpoints.reset()
    seen: list[int] = []

    def count_read_ahead() -> None:
        try:
            failpoint_reached(tmp_path, "transform.batch")
            pause, deadline = threading.Event(), time.monotonic() + 60
            while failpoints._counts["extract.batch"] < depth + 2 and time.monotonic() < deadline:
                pause.wait(0.01)
            for _ in range(25):  # then a while longer: an unbounded reader would go on reading
                seen.append(failpoints._counts["extract.batch"])
                pause.wait(0.02)
        finally:
            release_failpoint(tmp_path, "transform.batch")

    thread = threading.Thread(target=count_read_ahead)
    thread.start()
    try:
        report = run_job(load_config(job))
    finally:
        thread.join()
    assert report.rows_loaded == 20000
    assert max(seen) == depth + 2, seen  # the one being transformed, `depth` queued, one waiting to be queued
    assert_exact_copy(pg_source, pg_db)


def test_verify_none_skips_verification(pg_source: str, pg_db: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A source row deleted between loading and verifying fails a counted run; with verify = "none" the
    run does not look, and its report says verification was skipped."""
    make_items(pg_source, 2000)
    monkeypatch.setenv("ENGINE_FAILPOINTS", "run.before_verify=wait")
    monkeypatch.setenv("ENGINE_FAILPOINTS_DIR", str(tmp_path))
    failpoints.reset()

    def delete_a_row() -> None:
        try:
            failpoint_reached(tmp_path, "run.before_verify")
            pg_exec(pg_source, "DELETE FROM public.items WHERE id = 1500")
        finally:
            release_failpoint(tmp_path, "run.before_verify")

    thread = threading.Thread(target=delete_a_row)
    thread.start()
    try:
        report = run_job(load_config(items_job(tmp_path, "noverify", pg_source, pg_db, extra='verify = "none"')))
    finally:
        thread.join()
    assert report.status == "succeeded" and report.verification == "skipped (pipeline.verify = none)"
    assert report.rows_loaded == 2000 and pg_rows(pg_db, "SELECT COUNT(*) FROM public.items") == [(2000,)]


def test_transform_drop_and_cast_shape_the_created_table(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_items(pg_source, 1000)
    job = items_job(tmp_path, "drop_cast", pg_source, pg_db, partitions=2).read_text() + (
        '\n[transform]\ndrop = ["doc"]\ncast = { grp = "Int64", amount = "Float64" }\n')
    report = run_job(load_config(write_job(tmp_path, job, "drop_cast.toml")))
    assert report.rows_loaded == 1000
    types = dict(pg_rows(pg_db, """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
        WHERE attrelid = 'public.items'::regclass AND attnum > 0 AND NOT attisdropped"""))
    assert "doc" not in types and types["grp"] == "bigint" and types["amount"] == "double precision", types
    compare = "SELECT id, grp::bigint, label, amount::float8, at FROM public.items ORDER BY id"
    assert pg_rows(pg_db, compare) == pg_rows(pg_source, compare)


def test_job_description_is_shown_in_the_run_report(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_items(pg_source, 100)
    job = items_job(tmp_path, "described", pg_source, pg_db).read_text().replace(
        '[job]\n', '[job]\ndescription = "nightly copy of items for reporting"\n')
    path = write_job(tmp_path, job, "described.toml")
    result = run_cli("run", str(path), "--json", str(tmp_path / "report.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nightly copy of items for reporting" in result.stdout.splitlines()[1]  # under the job's name
    assert json.loads((tmp_path / "report.json").read_text())["description"] == "nightly copy of items for reporting"
    stored = pg_rows(pg_db, "SELECT report->>'description' FROM engine.runs")
    assert stored == [("nightly copy of items for reporting",)]


def test_append_without_checkpoints_reruns_from_scratch_and_says_rows_stay(pg_source: str, pg_db: str,
                                                                          tmp_path: Path) -> None:
    """`checkpoints = false` turns resume off: an append run killed midway, rerun, appends every row again
    on top of what the killed run committed. The option's help and the rerun's report say so."""
    make_items(pg_source, 4000)
    pg_exec(pg_db, """CREATE TABLE public.items (id bigint, grp integer NOT NULL, label text,
        amount numeric(14,4), at timestamptz, doc jsonb)""")
    job = items_job(tmp_path, "nockpt", pg_source, pg_db, partitions=4, workers=1, extra="checkpoints = false")
    killed = run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "load.after_commit=exit@2"})
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM public.items") == [(2000,)]
    rerun = run_cli("run", str(job))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "4 run, 0 already done" in rerun.stdout and "rows it had committed stay in the target" in rerun.stdout
    assert pg_rows(pg_db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM public.items") == [(6000, 4000)]
    assert "append rerun" in " ".join(run_cli("run", "--help").stdout.split())


def test_checkpoints_cannot_be_turned_off_on_dask(tmp_path: Path) -> None:
    body = job_toml("x", "sqlite:///tmp/none.db", "t", "postgresql://u@h/d", "public.t",
                    extra='checkpoints = false\nexecutor = "dask"')
    with pytest.raises(ConfigError, match="`pipeline.checkpoints` must stay true"):
        load_config(write_job(tmp_path, body))
