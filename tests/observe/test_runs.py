"""Step 3: `engine runs JOB` — the run history, newest first, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from tests.observe.helpers import make_orders, orders_job


def test_run_history_newest_first(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_orders(pg_source, 4000)
    job = orders_job(tmp_path, "hist1", pg_source, pg_db)
    assert run_cli("runs", str(job)).stdout.strip() == "job hist1: no runs yet"
    killed = run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "load.before_commit=exit@3"})
    assert killed.returncode == 137
    fresh = run_cli("run", str(job), "--fresh", "--quiet")
    assert fresh.returncode == 0, fresh.stderr

    rows = json.loads(run_cli("runs", str(job), "--json").stdout)
    assert [r["status"] for r in rows] == ["succeeded", "abandoned"]
    new, old = rows
    assert f"run {new['run_id']}" in fresh.stdout
    assert (new["rows_read"], new["rows_loaded"], new["rows_rejected"]) == (4000, 3600, 400)
    assert (new["partitions_done"], new["partitions"], new["mode"]) == (4, 4, "append")
    assert old["partitions_done"] == 2 and old["rows_read"] == 2000 and old["started"] <= new["started"]
    assert new["duration_seconds"] > 0 and new["finished"] is not None

    table = run_cli("runs", str(job)).stdout.splitlines()
    assert table[0] == "job hist1: 2 run(s), newest first"
    assert table[1].split() == ["run", "status", "started", "duration", "rows", "loaded", "rejected", "partitions",
                                "mode"]
    assert table[3].startswith(new["run_id"]) and "succeeded" in table[3] and "4,000" in table[3] and "400" in table[3]
    assert table[4].startswith(old["run_id"]) and "abandoned" in table[4] and "2/4" in table[4]
