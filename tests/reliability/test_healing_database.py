"""A whole-database run heals too: a restart of the server during an index build, a foreign key or a view is
waited for, the step is done again (it committed or left nothing), and the run finishes by itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.localpg import PostgresServer
from tests.conftest import ROOT, pg_exec, pg_rows
from tests.database.compare import assert_same_catalog, assert_same_rows, next_values
from tests.database.schemas import PG_SCHEMA
from tests.database.test_pg_database import DATA_TABLES
from tests.reliability.harness import Paused


def _job(tmp_path: Path, source: str, target: str) -> Path:
    path = tmp_path / "db.toml"
    path.write_text(f"""
[job]
name = "db_heal"
[source]
url = "{source}"
tables = ["*", "!scratch"]
[target]
url = "{target}"
schema = "app"
mode = "replace"
[pipeline]
workers = 1
staging_dir = "{ROOT / '.engine' / 'test-staging'}"
""")
    return path


@pytest.mark.parametrize("point", ["db.opening", "db.index@2", "db.indexes@2", "db.validate@2", "db.view@1", "db.swap"])
def test_a_restart_during_a_whole_database_step_heals(point: str, private_pg: PostgresServer, private_source: str,
                                                      private_target: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pg_exec(private_source, *PG_SCHEMA)
    name, _, nth = point.partition("@")
    if name == "db.index":  # each index a step of its own, as for a large table
        monkeypatch.setenv("ENGINE_INDEXES_SIDE_BY_SIDE_FROM", "0")
    run = Paused(_job(tmp_path, private_source, private_target), f"{name}=pause@{nth or 1}", tmp_path / "points")
    private_pg.restart()
    run.release()
    code, out, err, report = run.finish()
    assert code == 0, err[-3000:]
    assert "SUCCEEDED" in out, err[-3000:]
    assert report["recoveries"], "the report says nothing of the restart"
    assert_same_rows(private_source, private_target, "app", DATA_TABLES)
    assert_same_catalog(private_source, private_target, "app", skip_tables={"scratch"})
    assert next_values(private_target, "app") == next_values(private_source, "public")
    assert pg_rows(private_target, "SELECT status FROM engine.runs WHERE job = 'db_heal'") == [("succeeded",)]
    if name != "db.swap":  # a step after the restart finds the job's lock gone with its session
        assert any("lock" in r for r in report["recoveries"]), report["recoveries"]
