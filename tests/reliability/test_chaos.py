"""A seeded campaign of kills: each case kills the engine at a failpoint or a random moment, reruns until
done, and checks the target is an exact copy. Slow: run with `make chaos` (CHAOS_CASES, CHAOS_ROWS, CHAOS_SEED).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.localpg import PostgresServer, create_database, drop_database
from tests.conftest import ROOT, pg_rows, run_cli
from tests.reliability.harness import assert_exact_copy, items_job, make_items

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

SEED = int(os.environ.get("CHAOS_SEED", "20261126"))
CASES = int(os.environ.get("CHAOS_CASES", "24"))
ROWS = int(os.environ.get("CHAOS_ROWS", "40000"))
POINTS = ["extract.batch", "transform.batch", "load.before_commit", "load.after_commit", "run.before_verify"]
MODES = ["append", "replace", "upsert"]


def _cases() -> list[tuple[int, str, str]]:
    rng = random.Random(SEED)
    cases = []
    for i in range(CASES):
        mode = MODES[i % len(MODES)]
        if i % 4 == 3:
            cases.append((i, mode, f"timer={rng.uniform(0.3, 3.0):.2f}"))
        else:
            point = rng.choice(POINTS)
            nth = 1 if point == "run.before_verify" else rng.randint(1, 12)
            cases.append((i, mode, f"{point}=exit@{nth}"))
    return cases


@pytest.mark.parametrize(("index", "mode", "kill"), _cases())
def test_chaos_kill_and_rerun(index: int, mode: str, kill: str, pg_source: str, pg_server: PostgresServer,
                              tmp_path: Path) -> None:
    make_items(pg_source, ROWS)
    name = f"engine_chaos_{os.getpid()}_{index}"
    create_database(pg_server.url, name)
    target = pg_server.database_url(name)
    try:
        job = items_job(tmp_path, f"chaos{index}", pg_source, target, mode=mode, partitions=10)
        if kill.startswith("timer="):
            child = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(job), "--quiet"], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(float(kill.split("=")[1]))
            child.kill()
            child.wait()
        else:
            killed = run_cli("run", str(job), env={"ENGINE_FAILPOINTS": kill})
            assert killed.returncode in (0, 137), killed.stderr[-2000:]  # a late hit count may never fire
        finished = pg_rows(target, "SELECT to_regclass('engine.runs')")[0][0] is not None and pg_rows(
            target, "SELECT COUNT(*) FROM engine.runs WHERE status = 'succeeded'")[0][0] > 0
        for _ in range(0 if finished else 3):  # a kill that came too late: rerunning would append a second copy
            if run_cli("run", str(job)).returncode == 0:
                break
        assert_exact_copy(pg_source, target)
    finally:
        drop_database(pg_server.url, name)
