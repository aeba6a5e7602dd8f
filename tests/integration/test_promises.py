"""README promises that had no test of their own: replace keeps the old table's indexes and names, a declared
type a value does not parse as stops the job, a resumed run says it took a new snapshot, partitions commit
without waiting for the WAL flush while the run's final commit waits, and a remote Dask scheduler runs the
partitions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from engine import pg
from engine.config import load_config
from engine.errors import TargetError
from engine.pipeline import run_job
from engine.urls import parse_url
from tests.conftest import job_toml, pg_exec, pg_rows, run_cli, write_job
from tests.integration.test_pg_to_pg import COMPARE, make_orders


def test_replace_keeps_the_old_tables_indexes_and_their_names(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 300)
    job = write_job(tmp_path, job_toml("keep_idx", pg_source, "public.orders", pg_db, "public.orders", mode="replace",
                                       key=["id"], extra_source="partitions = 2"))
    assert run_job(load_config(job)).status == "succeeded"
    pg_exec(pg_db, "CREATE INDEX orders_by_customer ON public.orders (customer_id) WHERE status = 'paid'",
            "CREATE UNIQUE INDEX orders_ref_key ON public.orders (ref)")
    pg_exec(pg_source, "DELETE FROM public.orders WHERE id > 250")
    assert run_job(load_config(job)).status == "succeeded"
    indexes = pg_rows(pg_db, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'orders' ORDER BY 1")
    assert [i[0] for i in indexes] == ["orders_by_customer", "orders_pkey", "orders_ref_key"]
    assert "WHERE ((status)::text = 'paid'::text)" in indexes[0][1] and "UNIQUE" in indexes[2][1]
    assert pg_rows(pg_db, COMPARE.format(t="public.orders")) == pg_rows(pg_source, COMPARE.format(t="public.orders"))


def test_a_value_the_declared_type_does_not_parse_stops_the_job(pg_db: str, tmp_path: Path) -> None:
    db = tmp_path / "src.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, qty TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, "7"), (2, "seven"), (3, "9")])
    body = job_toml("bad_declared", f"sqlite:///{db}", "t", pg_db, "public.t").replace(
        "\n[pipeline]", '\n[target.types]\nqty = "integer"\n\n[pipeline]')
    with pytest.raises(TargetError, match=r"column 'qty': cannot convert .*'seven'.*nothing was changed: declare a "
                                          r"type that holds the value"):
        run_job(load_config(write_job(tmp_path, body)))
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM public.t") == [(0,)]


def test_a_resumed_run_says_it_read_finished_partitions_as_of_an_earlier_snapshot(pg_source: str, pg_db: str,
                                                                                   tmp_path: Path) -> None:
    make_orders(pg_source, 3000)
    job = write_job(tmp_path, job_toml("snap_note", pg_source, "public.orders", pg_db, "public.orders",
                                       extra_source="partitions = 3", extra="workers = 1"))
    crashed = run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "load.before_commit=exit@2"})
    assert crashed.returncode == 137, crashed.stderr
    resumed = run_cli("run", str(job))
    assert resumed.returncode == 0, resumed.stderr
    assert "note: the source was read as of one snapshot (partitions finished before the resume were read as of " \
           "an earlier one)" in resumed.stdout
    fresh = run_cli("run", str(job), "--fresh")
    assert "note: the source was read as of one snapshot" in fresh.stdout and "earlier one" not in fresh.stdout


def test_partitions_commit_without_waiting_for_the_flush_and_the_final_commit_waits(pg_db: str) -> None:
    url = parse_url(pg_db)
    worker = pg.worker_connection(url)
    try:
        assert pg.fetch_all(worker, "SELECT current_setting('synchronous_commit')") == [("off",)]
    finally:
        pg.drop_connection(worker)
    with pg.connection(url) as final:  # the session `pipeline.Run._finish` commits the run's status on
        assert pg.fetch_all(final, "SELECT current_setting('synchronous_commit')") == [("on",)]


def test_partitions_run_on_a_remote_dask_scheduler(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    import distributed  # a dev dependency: the test runs wherever the suite does
    make_orders(pg_source, 2000)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        job = write_job(tmp_path, job_toml("remote_dask", pg_source, "public.orders", pg_db, "public.orders",
                                           extra_source="partitions = 4",
                                           extra=f'executor = "dask"\ndask_scheduler = "{cluster.scheduler_address}"'))
        report = run_job(load_config(job))
        finished = {str(entry[0]) for entry in cluster.scheduler.transition_log
                    if str(entry[0]).startswith("run_partition") and entry[2] == "memory"}
    assert report.status == "succeeded" and report.rows_loaded == 2000
    assert len(finished) == 4  # the scheduler at that address ran the four partitions
    assert pg_rows(pg_db, COMPARE.format(t="public.orders")) == pg_rows(pg_source, COMPARE.format(t="public.orders"))
