"""A seeded campaign of server restarts: each case restarts the private server holding source and target at a
random moment of a run, which must finish by itself with an exact copy. Slow: run with `make chaos`
(CHAOS_CASES, CHAOS_SEED)."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from engine.localpg import PostgresServer
from tests.conftest import pg_exec
from tests.database.compare import assert_same_rows
from tests.database.schemas import PG_SCHEMA
from tests.database.test_pg_database import DATA_TABLES
from tests.reliability.harness import Paused, assert_exact_copy, items_job, make_items
from tests.reliability.test_healing_database import _job as database_job

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

SEED = int(os.environ.get("CHAOS_SEED", "20261206"))
CASES = int(os.environ.get("CHAOS_CASES", "24"))


def _delays(salt: str) -> list[float]:
    """Seconds after the start: the first few fall before any row moves (the run reads schemas and plans)."""
    rng = random.Random(f"{SEED}-{salt}")
    return [round(rng.uniform(0.3, 2.5), 2) for _ in range(CASES)]


def _restart_after(delay: float, job: Path, server: PostgresServer, folder: Path) -> None:
    run = Paused(job, "", folder, wait=False)
    time.sleep(delay)
    server.restart()
    code, _, err, _ = run.finish()
    assert code == 0, err[-3000:]


@pytest.mark.parametrize("delay", _delays("table"))
def test_a_table_run_restarted_at_a_random_moment_finishes_exactly(delay: float, private_pg: PostgresServer,
                                                                   private_source: str, private_target: str,
                                                                   tmp_path: Path) -> None:
    make_items(private_source, 20_000)
    job = items_job(tmp_path, "restarted", private_source, private_target, partitions=4)
    _restart_after(delay, job, private_pg, tmp_path)
    assert_exact_copy(private_source, private_target)


@pytest.mark.parametrize("delay", _delays("database"))
def test_a_database_run_restarted_at_a_random_moment_finishes_exactly(delay: float, private_pg: PostgresServer,
                                                                      private_source: str, private_target: str,
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pg_exec(private_source, *PG_SCHEMA)
    monkeypatch.setenv("ENGINE_INDEXES_SIDE_BY_SIDE_FROM", "0")  # many small steps: more moments to land in
    _restart_after(delay, database_job(tmp_path, private_source, private_target), private_pg, tmp_path)
    assert_same_rows(private_source, private_target, "app", DATA_TABLES)
