"""The performance suite stays runnable: a tiny smoke run (raw COPY and the engine cases) on every test run."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from engine.localpg import PostgresServer, drop_database
from tests.conftest import ROOT, mariadb_exec


def test_perf_smoke_runs_and_reports_every_case(pg_server: PostgresServer, mariadb_db: str) -> None:
    tag = uuid.uuid4().hex[:8]
    try:
        _smoke(tag, pg_server)
    finally:
        for name in (f"engine_smoke_src_{tag}", f"engine_smoke_dst_{tag}"):
            drop_database(pg_server.url, name)
        mariadb_exec(mariadb_db, f"DROP DATABASE IF EXISTS `engine_smoke_src_{tag}`")


def _smoke(tag: str, pg_server: PostgresServer) -> None:
    result = subprocess.run([sys.executable, "-m", "perf.run", "--rows", "20000", "--runs", "1", "--smoke",
                             "--src-db", f"engine_smoke_src_{tag}", "--dst-db", f"engine_smoke_dst_{tag}",
                             "--pg", pg_server.url.rsplit("/", 1)[0]],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    results = json.loads((ROOT / "perf" / "results" / "smoke.json").read_text())
    cases = {r["case"]: r for r in results}
    assert {"copy-limit", "engine"} <= set(cases)
    assert cases["engine"]["status"] == "ok" and cases["engine"]["wall_s_median"] > 0
    assert "| case" in result.stdout or "|" in result.stdout
