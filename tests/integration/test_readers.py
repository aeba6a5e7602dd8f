"""`[source] reader`: the ADBC reader is the one used when asked, and reads in the run's snapshot.

Value fidelity of both readers is the PostgreSQL type matrix's (tests/integration/test_types_postgres.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import engine.source
from engine.config import load_config
from engine.errors import SourceError
from engine.extract import read_partition
from engine.pipeline import run_job
from engine.plan import make_plan
from engine.source import connectorx_url, read_batches, source_snapshot
from engine.urls import parse_url
from tests.conftest import job_toml, pg_exec, pg_rows, write_job


def _source(url: str) -> None:
    pg_exec(url, "CREATE TABLE public.t (id integer PRIMARY KEY, u uuid, n numeric(12,2), j jsonb)",
            "INSERT INTO public.t SELECT g, md5(g::text)::uuid, g / 100.0, jsonb_build_object('g', g) "
            "FROM generate_series(1, 5000) g")


def _forbid_connectorx_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    real = engine.source.cx.read_sql

    def no_stream(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("return_type") == "arrow_stream":
            raise AssertionError("ConnectorX read a partition")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.source.cx, "read_sql", no_stream)


def test_the_adbc_reader_reads_without_connectorx(pg_source: str, pg_db: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _source(pg_source)
    _forbid_connectorx_reads(monkeypatch)
    body = job_toml("readers", pg_source, "public.t", pg_db, "public.t", extra_source="partitions = 3")
    with pytest.raises(SourceError, match="ConnectorX read a partition"):
        run_job(load_config(write_job(tmp_path, body)))
    report = run_job(load_config(write_job(tmp_path, body.replace("partitions = 3", 'partitions = 3\nreader = "adbc"'))),
                     fresh=True)
    assert report.status == "succeeded", report.error
    query = "SELECT id, u::text, n::text, j::text FROM public.t ORDER BY id"
    assert pg_rows(pg_db, query) == pg_rows(pg_source, query)


def test_the_adbc_reader_reads_as_of_the_runs_snapshot(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    _source(pg_source)
    config = load_config(write_job(tmp_path, job_toml("readers_snap", pg_source, "public.t", pg_db, "public.t")))
    plan = make_plan(config)
    with source_snapshot(config.source_url) as held:
        snapshot = held.id if held else None
        pg_exec(pg_source, "INSERT INTO public.t VALUES (5001, NULL, 1, NULL)", "DELETE FROM public.t WHERE id = 1")
        rows = sum(b.num_rows for p in plan.partitions
                   for b in read_partition(plan, p, config.source_url, 1000, snapshot, "adbc"))
        assert rows == 5000
        ids = [v for p in plan.partitions for b in read_partition(plan, p, config.source_url, 1000, snapshot, "adbc")
               for v in b.column("id").to_pylist()]
        assert 1 in ids and 5001 not in ids
    ids = [v for p in plan.partitions for b in read_partition(plan, p, config.source_url, 1000, None, "adbc")
           for v in b.column("id").to_pylist()]
    assert 1 not in ids  # without the snapshot the delete is seen


def test_connectorx_skips_tls_only_while_the_run_knows_the_server_refuses_it(pg_source: str) -> None:
    """With sslmode absent or "prefer", the run's snapshot session learns whether the server speaks TLS; if it
    does not, ConnectorX is told `sslmode=disable` (the same plain session, without building a TLS context per
    read); a server with TLS, or any other sslmode, keeps the URL as written."""
    _source(pg_source)
    server_tls = pg_rows(pg_source, "SELECT current_setting('ssl')")[0][0] == "on"
    sep = "&" if "?" in pg_source else "?"
    for text, skipped in ((pg_source, not server_tls), (f"{pg_source}{sep}sslmode=prefer", not server_tls),
                          (f"{pg_source}{sep}sslmode=disable", False)):
        url = parse_url(text)
        assert connectorx_url(url) == url.connectorx
        with source_snapshot(url) as snapshot:
            used = connectorx_url(url)
            if skipped:
                assert parse_qs(urlsplit(used).query)["sslmode"] == ["disable"], used  # the one sslmode
                assert used.split("?")[0] == url.connectorx.split("?")[0], used
            else:
                assert used == url.connectorx, text
            rows = sum(b.num_rows for b in read_batches(url, "SELECT * FROM public.t", 1000,
                                                        snapshot.id if snapshot else None, "reading"))
            assert rows == 5000
        assert connectorx_url(url) == url.connectorx  # only for the run that looked


# ------------------------------------------------------------------------------------ reader = "copy"

def _builtin_source(url: str) -> None:
    """Built-in types only, with values Arrow cannot hold (NaN, infinities, dates past year 262142)."""
    pg_exec(url, "CREATE TABLE public.b (id integer PRIMARY KEY, n numeric(12,2), d date, ts timestamptz, "
                 "a integer[], t text, j jsonb)",
            "INSERT INTO public.b SELECT g, CASE WHEN g = 7 THEN 'NaN' ELSE g / 100.0 END, "
            "CASE WHEN g = 8 THEN 'infinity'::date WHEN g = 9 THEN '5874897-12-31' ELSE date '2024-01-01' + g END, "
            "CASE WHEN g = 10 THEN '-infinity' ELSE timestamptz '2024-01-01 00:00:00+00' + g * interval '1 s' END, "
            "ARRAY[g, NULL], CASE WHEN g % 50 = 0 THEN NULL ELSE E'tab\\t nl\\n ' || g END, "
            "jsonb_build_object('g', g) FROM generate_series(1, 3000) g")


def test_the_copy_reader_moves_rows_server_to_server_without_connectorx(pg_source: str, pg_db: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Same built-in types at both ends: binary COPY, every value as the source has it (NaN and infinity too,
    which the Arrow path cannot carry), with a checkpoint per partition and the count verification."""
    _builtin_source(pg_source)
    _forbid_connectorx_reads(monkeypatch)
    pg_exec(pg_db, "CREATE TABLE public.b (id integer PRIMARY KEY, n numeric(12,2), d date, ts timestamptz, "
                   "a integer[], t text, j jsonb)")
    body = job_toml("copy_reader", pg_source, "public.b", pg_db, "public.b",
                    extra_source='partitions = 3\nreader = "copy"')
    report = run_job(load_config(write_job(tmp_path, body)))
    assert report.status == "succeeded", report.error
    assert report.rows_loaded == 3000 and report.verification.startswith("ok: 3 partition(s)"), report.verification
    query = "SELECT id, n::text, d::text, ts::text, a::text, t, j::text FROM public.b ORDER BY id"
    assert pg_rows(pg_db, query) == pg_rows(pg_source, query)
    assert pg_rows(pg_db, "SELECT metrics->>'route', count(*) FROM engine.checkpoints GROUP BY 1") == [("copy binary", 3)]


def test_the_copy_reader_leaves_rows_that_are_needed_on_the_way_to_the_arrow_path(pg_source: str, pg_db: str,
                                                                                    tmp_path: Path) -> None:
    """A rule needs the rows: they are read with ConnectorX (the run says so) and the rule quarantines."""
    _builtin_source(pg_source)
    body = job_toml("copy_ruled", pg_source, "public.b", pg_db, "public.b", extra_source='reader = "copy"')
    body += '\n[[validate.rules]]\nname = "small"\nkind = "range"\ncolumn = "id"\nmax = 2990\n'
    report = run_job(load_config(write_job(tmp_path, body)))
    assert report.status == "succeeded", report.error
    assert 'reader = "copy" does not apply (it has validation rules): rows read with ConnectorX' in report.notes
    assert report.rows_quarantined == 10
    assert pg_rows(pg_db, "SELECT DISTINCT metrics->>'route' FROM engine.checkpoints") == [("arrow",)]


def test_a_row_the_target_refuses_under_the_copy_reader_is_quarantined_with_its_reason(
        pg_source: str, pg_db: str, tmp_path: Path) -> None:
    """The partition is redone on the Arrow path, which isolates the refused row; the others still load."""
    pg_exec(pg_source, "CREATE TABLE public.c (id integer PRIMARY KEY, v integer)",
            "INSERT INTO public.c SELECT g, CASE WHEN g = 42 THEN -1 ELSE g END FROM generate_series(1, 500) g")
    pg_exec(pg_db, "CREATE TABLE public.c (id integer PRIMARY KEY, v integer CHECK (v >= 0))")
    body = job_toml("copy_refused", pg_source, "public.c", pg_db, "public.c", extra_source='reader = "copy"')
    body = body.replace('mode = "append"', 'mode = "append"\ncreate = false')
    report = run_job(load_config(write_job(tmp_path, body)))
    assert report.status == "succeeded", report.error
    assert (report.rows_loaded, report.rows_quarantined) == (499, 1)
    assert pg_rows(pg_db, "SELECT count(*), min(v) FROM public.c") == [(499, 0 + 1)]
    reasons = pg_rows(pg_db, "SELECT checks, reason FROM engine.quarantine WHERE job = 'copy_refused'")
    assert len(reasons) == 1 and "check_violation" in reasons[0][0] and "c_v_check" in reasons[0][1], reasons


def test_a_refused_row_deep_in_a_large_copied_partition_is_quarantined(pg_source: str, pg_db: str,
                                                                      tmp_path: Path) -> None:
    """The target reports the refusal when the whole stream has gone through: the partition (100,000 rows) is
    redone through batches, and only the refused row stays out."""
    pg_exec(pg_source, "CREATE TABLE public.c (id integer PRIMARY KEY, v integer, pad text)",
            "INSERT INTO public.c SELECT g, CASE WHEN g = 1000 THEN -1 ELSE g END, repeat('x', 200) "
            "FROM generate_series(1, 100000) g")
    pg_exec(pg_db, "CREATE TABLE public.c (id integer PRIMARY KEY, v integer CHECK (v >= 0), pad text)")
    body = job_toml("copy_refused_deep", pg_source, "public.c", pg_db, "public.c",
                    extra_source='partitions = 1\nreader = "copy"')
    body = body.replace('mode = "append"', 'mode = "append"\ncreate = false')
    report = run_job(load_config(write_job(tmp_path, body)))
    assert report.status == "succeeded", report.error
    assert (report.rows_loaded, report.rows_quarantined) == (99_999, 1)
    assert pg_rows(pg_db, "SELECT count(*) FROM public.c WHERE v < 0") == [(0,)]
