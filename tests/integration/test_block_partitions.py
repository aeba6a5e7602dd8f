"""Block-range partitions of PostgreSQL tables: every row in exactly one partition, whatever the table's
physical state (bloat, empty, growing), read in the run's snapshot, and a resume refused when rows may have
moved between blocks."""

from __future__ import annotations

import time
from itertools import pairwise
from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import ConfigError
from engine.extract import read_partition
from engine.pipeline import run_job
from engine.plan import make_plan
from engine.source import source_snapshot
from tests.conftest import job_toml, pg_exec, pg_rows, run_cli, write_job

COMPARE = "SELECT id, payload FROM {t} ORDER BY id"


def make_table(url: str, rows: int, name: str = "public.items") -> None:
    pg_exec(url, f"CREATE TABLE {name} (id bigint PRIMARY KEY, payload text)",
            f"INSERT INTO {name} SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, {rows}) g",
            f"ANALYZE {name}")


def job(tmp_path: Path, src: str, dst: str, name: str = "blocks", source: str = 'partition_by = "blocks"',
        extra: str = "", table: str = "public.items") -> Path:
    return write_job(tmp_path, job_toml(name, src, table, dst, table, extra_source=source, extra=extra))


def test_block_ranges_copy_every_row_once(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_table(pg_source, 20_000)
    config = load_config(job(tmp_path, pg_source, pg_db, source='partition_by = "blocks"\npartitions = 5'))
    plan = make_plan(config)
    assert [p.kind for p in plan.partitions] == ["blocks"] * 5
    assert plan.partitions[0].lo == 0 and plan.partitions[-1].hi is None  # open-ended
    assert all(a.hi is not None and a.hi + 1 == b.lo for a, b in pairwise(plan.partitions))
    assert "ctid >= '(0,0)'::tid" in plan.select_sql(plan.partitions[0])
    report = run_job(config)
    assert report.status == "succeeded" and report.rows_loaded == 20_000, report.error
    assert "5 partition(s)" in report.verification
    assert pg_rows(pg_db, COMPARE.format(t="public.items")) == pg_rows(pg_source, COMPARE.format(t="public.items"))


def test_auto_uses_blocks_only_without_an_integer_key(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_table(pg_source, 1000)
    pg_exec(pg_source, "CREATE TABLE public.nokey (id text, payload text)",
            "INSERT INTO public.nokey SELECT g::text, md5(g::text) FROM generate_series(1, 1000) g")
    keyed = make_plan(load_config(job(tmp_path, pg_source, pg_db, source="")))
    assert {p.kind for p in keyed.partitions} == {"key"}
    unkeyed = make_plan(load_config(job(tmp_path, pg_source, pg_db, source="", table="public.nokey")))
    assert {p.kind for p in unkeyed.partitions} == {"blocks"} and unkeyed.source_state is not None
    by_key = make_plan(load_config(job(tmp_path, pg_source, pg_db, source='partition_by = "key"',
                                       table="public.nokey")))
    assert [p.label() for p in by_key.partitions] == ["whole source"]


def test_a_bloated_table_is_copied_exactly(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_table(pg_source, 30_000)
    pg_exec(pg_source, "DELETE FROM public.items WHERE id <= 15000 AND id % 10 <> 0", "VACUUM ANALYZE public.items")
    config = load_config(job(tmp_path, pg_source, pg_db, source='partition_by = "blocks"\nrows_per_partition = 4000'))
    plan = make_plan(config)
    # sized from live rows per block: about 16,500 live rows, not the 30,000 the blocks once held
    assert 4 <= len(plan.partitions) <= 6, [p.label() for p in plan.partitions]
    report = run_job(config)
    assert report.status == "succeeded" and report.rows_loaded == 16_500, report.error
    assert pg_rows(pg_db, COMPARE.format(t="public.items")) == pg_rows(pg_source, COMPARE.format(t="public.items"))


def test_an_empty_table_is_one_open_range(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    pg_exec(pg_source, "CREATE TABLE public.items (id bigint PRIMARY KEY, payload text)")
    config = load_config(job(tmp_path, pg_source, pg_db))
    plan = make_plan(config)
    assert [p.label() for p in plan.partitions] == ["blocks [0, end]"]
    report = run_job(config)
    assert report.status == "succeeded" and report.rows_loaded == 0, report.error
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM public.items") == [(0,)]


def test_rows_added_after_planning_are_read_once_or_not_at_all(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    """In the run's snapshot, rows appended after planning are not read; outside it, rows stored past the
    last planned block are read by the open-ended last range, once."""
    make_table(pg_source, 5000)
    path = job(tmp_path, pg_source, pg_db, source='partition_by = "blocks"\npartitions = 4')
    config = load_config(path)
    with source_snapshot(config.source_url) as held:
        snapshot = held.id if held else None
        plan = make_plan(config)
        pg_exec(pg_source, "INSERT INTO public.items SELECT g, md5(g::text) FROM generate_series(5001, 15000) g",
                "UPDATE public.items SET payload = 'moved' WHERE id <= 100")
        ids = [v for p in plan.partitions for b in read_partition(plan, p, config.source_url, 1000, snapshot)
               for v in b.column("id").to_pylist()]
        assert sorted(ids) == list(range(1, 5001))
    ids = [v for p in plan.partitions for b in read_partition(plan, p, config.source_url, 1000)
           for v in b.column("id").to_pylist()]
    assert sorted(ids) == list(range(1, 15001))  # the updated rows moved to new blocks: read there, once


def test_blocks_are_refused_where_they_cannot_apply(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_table(pg_source, 100)
    pg_exec(pg_source, "CREATE VIEW public.v AS SELECT * FROM public.items")
    with pytest.raises(ConfigError, match="the source is a view"):
        make_plan(load_config(job(tmp_path, pg_source, pg_db, table="public.v")))
    with pytest.raises(ConfigError, match='verify = "content"'):
        make_plan(load_config(job(tmp_path, pg_source, pg_db, extra='verify = "content"')))
    # auto falls back to key ranges for both
    assert {p.kind for p in make_plan(load_config(job(tmp_path, pg_source, pg_db, source="",
                                                      table="public.v"))).partitions} == {"key"}


def _wait_for_stats(url: str, updated: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if pg_rows(url, "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'items'")[0][0] >= updated:
            return
        time.sleep(0.2)
    raise AssertionError("the statistics never showed the update")


def test_a_resume_is_refused_when_rows_may_have_moved(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_table(pg_source, 12_000)
    path = job(tmp_path, pg_source, pg_db, source='partition_by = "blocks"\npartitions = 6', extra="workers = 1")
    crashed = run_cli("run", str(path), env={"ENGINE_FAILPOINTS": "load.before_commit=exit@4"})
    assert crashed.returncode == 137, crashed.stderr
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM engine.checkpoints") == [(3,)]
    pg_exec(pg_source, "UPDATE public.items SET payload = 'moved' WHERE id % 100 = 0")  # rows move to new blocks
    _wait_for_stats(pg_source, 120)
    refused = run_cli("run", str(path))
    assert refused.returncode != 0
    assert "rows may have moved between blocks" in refused.stderr and "120 row(s) updated" in refused.stderr
    assert "--fresh" in refused.stderr
    again = run_cli("run", str(path), "--fresh")
    assert again.returncode == 0, again.stderr
    pg_exec(pg_db, "DELETE FROM public.items a USING public.items b WHERE a.ctid < b.ctid AND a.id = b.id")
    assert pg_rows(pg_db, COMPARE.format(t="public.items")) == pg_rows(pg_source, COMPARE.format(t="public.items"))


def test_a_resume_of_an_unchanged_table_loads_each_row_once(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_table(pg_source, 12_000)
    pg_exec(pg_db, "CREATE TABLE public.items (id bigint PRIMARY KEY, payload text)")  # a duplicate would fail
    path = job(tmp_path, pg_source, pg_db, source='partition_by = "blocks"\npartitions = 6', extra="workers = 1")
    crashed = run_cli("run", str(path), env={"ENGINE_FAILPOINTS": "load.before_commit=exit@4"})
    assert crashed.returncode == 137, crashed.stderr
    resumed = run_cli("run", str(path))
    assert resumed.returncode == 0, resumed.stderr
    assert "3 already done" in resumed.stdout
    assert pg_rows(pg_db, COMPARE.format(t="public.items")) == pg_rows(pg_source, COMPARE.format(t="public.items"))
