"""Machines without PostgreSQL: the demo starts a private server itself, from local binaries or the wheel's."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from engine.config import load_config
from engine.localpg import create_database, pgserver_binaries, reachable, start_private
from engine.pipeline import run_job
from tests.conftest import ROOT, job_toml, pg_rows, run_cli, sqlite_exec, write_job


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_runs_end_to_end_with_no_database_reachable(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "demo.toml"
    config.write_text((ROOT / "configs" / "demo.toml").read_text())
    (tmp_path / "rules").symlink_to(ROOT / "rules")
    env = {"ENGINE_LOCAL_PG_URL": f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres", "DATABASE_URL": ""}
    result = run_cli("demo", "--rows", "4000", "--config", str(config), env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starting a private server" in result.stderr
    assert "SUCCEEDED" in result.stdout and "4,000 read" in result.stdout
    assert "stopping the private PostgreSQL server" in result.stderr
    assert (tmp_path / ".engine" / "demo" / "orders.db").exists()


def test_private_server_from_the_wheel_binaries_takes_a_job(tmp_path: Path) -> None:
    server = start_private(pgserver_binaries())
    try:
        assert reachable(server.url)
        create_database(server.url, "dst")
        db = tmp_path / "src.db"
        sqlite_exec(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
                    many=("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(1, 501)]))
        job = write_job(tmp_path, job_toml("wheel_pg", f"sqlite://{db}", "t", server.database_url("dst"), "public.t",
                                           extra_source="partitions = 2"))
        report = run_job(load_config(job))
        assert report.rows_loaded == 500
        assert pg_rows(server.database_url("dst"), "SELECT COUNT(*), MIN(v), MAX(id) FROM public.t") == [(500, "v1", 500)]
    finally:
        server.stop()
    assert not reachable(server.url)
    assert os.path.exists(str(server.data_dir)) is False
