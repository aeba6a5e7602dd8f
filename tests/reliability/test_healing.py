"""Long runs heal themselves: a server restarted or down for a while, a lost source snapshot. Real servers.

Tests that restart a server run against a private PostgreSQL of their own (`engine.localpg.start_private`),
so they can stop and start it freely; the moment is chosen with a `pause` failpoint, not a sleep. Each run
finishes by itself with an exact copy and says what happened; with `source.snapshot = "strict"` a lost
snapshot fails the run with the reason instead, and a rerun resumes to an exact copy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from engine.localpg import PostgresServer
from tests.conftest import pg_exec, pg_rows, run_cli
from tests.reliability.harness import Paused, assert_exact_copy, items_job, make_items

ROWS, PARTITIONS = 12_000, 12


def _strict(strict: bool) -> str:
    return 'snapshot = "strict"' if strict else ""


def _job(tmp_path: Path, name: str, source: str, target: str, strict: bool = False, extra: str = "") -> Path:
    job = items_job(tmp_path, name, source, target, partitions=PARTITIONS, workers=2, extra=extra)
    if strict:
        text = job.read_text().replace("partitions = ", 'snapshot = "strict"\npartitions = ', 1)
        job.write_text(text)
    return job


def _assert_failed_for_the_lost_snapshot(code: int, err: str, report: dict[str, Any]) -> None:
    assert code == 69, err[-3000:]
    assert "the source snapshot" in err and "was lost" in err and 'source.snapshot = "strict"' in err, err[-3000:]
    assert "rerun to resume" in err
    assert report["status"] == "failed" and "was lost" in report["error"]


def _assert_retaken(report: dict[str, Any], cause: str) -> None:
    snapshots = report["snapshots"]
    assert len(snapshots) >= 2, snapshots
    assert snapshots[0]["why"] == "the run started"
    assert snapshots[1]["why"].startswith(f"retaken: snapshot {snapshots[0]['snapshot']} was lost while reading "
                                          "partition"), snapshots[1]
    assert cause in snapshots[1]["why"].lower(), snapshots[1]
    read = sorted(p for s in snapshots for p in s["partitions"])
    assert read == list(range(PARTITIONS)) or read == list(range(1, PARTITIONS + 1)), read
    assert snapshots[0]["partitions"] and snapshots[-1]["partitions"], snapshots


@pytest.mark.parametrize("strict", [False, True], ids=["retake", "strict"])
def test_a_restart_of_the_server_holding_source_and_target_heals(strict: bool, private_pg: PostgresServer,
                                                                 private_source: str, private_target: str,
                                                                 tmp_path: Path) -> None:
    make_items(private_source, ROWS)
    job = _job(tmp_path, "restart_both", private_source, private_target, strict)
    run = Paused(job, "load.after_commit=pause@3", tmp_path)
    private_pg.restart()
    run.release()
    code, out, err, report = run.finish()
    if strict:
        _assert_failed_for_the_lost_snapshot(code, err, report)
        assert run_cli("run", str(job)).returncode == 0  # a rerun resumes
    else:
        assert code == 0, err[-3000:]
        assert f"{PARTITIONS} run, 0 already done" in out and f"{ROWS:,} read, {ROWS:,} loaded" in out
        _assert_retaken(report, "terminating connection")
        assert report["recoveries"], "the report says nothing of the restart"
        assert "snapshots" in out and "recovered" in out
    assert_exact_copy(private_source, private_target)


def test_a_restart_of_the_target_alone_heals_and_the_job_lock_is_taken_again(private_pg: PostgresServer,
                                                                             private_target: str, pg_source: str,
                                                                             tmp_path: Path) -> None:
    make_items(pg_source, ROWS)
    job = _job(tmp_path, "restart_target", pg_source, private_target, strict=True)  # the snapshot survives
    run = Paused(job, "load.after_commit=pause@3", tmp_path)
    private_pg.restart()
    run.release()
    code, out, err, report = run.finish()
    assert code == 0, err[-3000:]
    assert len(report["snapshots"]) == 1 and len(report["snapshots"][0]["partitions"]) == PARTITIONS
    assert any("lock was lost with its session" in r and "taken again" in r for r in report["recoveries"]), report
    retaken = err.index("lock was lost with its session")
    assert retaken < err.index(f"partitions {PARTITIONS}/{PARTITIONS} done"), err  # taken again as the target came back
    assert pg_rows(private_target, "SELECT status FROM engine.runs") == [("succeeded",)]
    assert_exact_copy(pg_source, private_target)


def test_a_restart_while_the_run_opens_is_waited_out_and_the_run_it_opened_resumed(
        private_pg: PostgresServer, private_source: str, private_target: str, tmp_path: Path) -> None:
    """The run's sessions die after it planned and before its target is ready: the run ends on that, is resumed
    (not planned again) once the server answers, and the report says so."""
    make_items(private_source, ROWS)
    job = _job(tmp_path, "restart_opening", private_source, private_target, strict=False)
    run = Paused(job, "run.opened=pause@1", tmp_path)
    private_pg.restart()
    run.release()
    code, out, err, report = run.finish()
    assert code == 0, err[-3000:]
    assert err.count("planning partitions") == 1 and "resuming run" in err, err[-3000:]
    assert any(r.startswith(("the run ended on preparing the target table", "the run: ")) and "rerun" not in r
               for r in report["recoveries"]), report["recoveries"]
    assert pg_rows(private_target, "SELECT status FROM engine.runs") == [("succeeded",)]
    assert_exact_copy(private_source, private_target)


def test_a_run_taken_over_while_it_waited_stops_instead_of_resuming(
        private_pg: PostgresServer, private_source: str, private_target: str, tmp_path: Path) -> None:
    """The restart drops the run's lock; another process runs the job with --fresh meanwhile. The first one,
    back, must not resume (nor start afresh and load the rows a second time): it stops, exit 3."""
    make_items(private_source, ROWS)
    job = _job(tmp_path, "taken_over", private_source, private_target, strict=False)
    run = Paused(job, "run.opened=pause@1", tmp_path)
    private_pg.restart()
    other = run_cli("run", str(job), "--fresh")
    assert other.returncode == 0, other.stderr[-3000:]
    run.release()
    code, out, err, report = run.finish()
    assert code == 3 and "was taken over by another process" in err, err[-3000:]
    assert_exact_copy(private_source, private_target)


@pytest.mark.parametrize("strict", [False, True], ids=["retake", "strict"])
def test_a_terminated_snapshot_session_is_retaken(strict: bool, pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_items(pg_source, ROWS)
    job = _job(tmp_path, "snapshot_killed", pg_source, pg_db, strict)
    run = Paused(job, "load.after_commit=pause@2", tmp_path)
    ended = pg_rows(pg_source, """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                                  WHERE datname = current_database() AND application_name = 'engine snapshot'""")
    assert ended == [(True,)]
    run.release()
    code, out, err, report = run.finish()
    if strict:
        _assert_failed_for_the_lost_snapshot(code, err, report)
        assert run_cli("run", str(job)).returncode == 0
    else:
        assert code == 0, err[-3000:]
        _assert_retaken(report, "the session holding it ended")
    assert_exact_copy(pg_source, pg_db)


def _down_for(seconds: float, private_pg: PostgresServer, source: str, target: str, tmp_path: Path,
              reconnect_for: str) -> tuple[int, str, str, dict[str, Any]]:
    make_items(source, ROWS)
    job = _job(tmp_path, "down", source, target, extra=f'reconnect_for = "{reconnect_for}"')
    run = Paused(job, "load.after_commit=pause@3", tmp_path)
    private_pg.halt()
    try:
        run.release()
        time.sleep(seconds)  # the outage itself
    finally:
        private_pg.resume()
    return run.finish()


@pytest.mark.slow
def test_a_server_down_for_20_seconds_is_waited_for(private_pg: PostgresServer, private_source: str,
                                                    private_target: str, tmp_path: Path) -> None:
    code, out, err, report = _down_for(20, private_pg, private_source, private_target, tmp_path, "2m")
    assert code == 0, err[-3000:]
    waits = [line for line in err.splitlines() if "is unreachable" in line and "waiting" in line]
    assert len(waits) >= 3, err[-3000:]  # backoff: several looks, each said
    assert "answering again after" in err
    _assert_retaken(report, "terminating connection")
    assert_exact_copy(private_source, private_target)


def test_a_target_down_longer_than_reconnect_for_fails_the_run_which_resumes(private_pg: PostgresServer,
                                                                            pg_source: str, private_target: str,
                                                                            tmp_path: Path) -> None:
    code, out, err, report = _down_for(6, private_pg, pg_source, private_target, tmp_path, "2s")
    assert code == 69, err[-3000:]
    waits = [line for line in err.splitlines() if "is unreachable" in line and "waiting" in line]
    assert waits and "of pipeline.reconnect_for = 2s" in waits[0], err[-3000:]
    assert "stayed unreachable for" in err and "(pipeline.reconnect_for = 2s)" in err and "rerun to resume" in err
    assert report["status"] == "running" or report["error"]  # the target was gone: the run stays resumable
    assert run_cli("run", str(tmp_path / "down.toml")).returncode == 0
    assert_exact_copy(pg_source, private_target)


def test_an_idle_timeout_on_the_source_does_not_end_the_snapshot(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    """The snapshot's session sits idle in its transaction for the whole run: it turns the timeout off for itself."""
    make_items(pg_source, ROWS)
    database = pg_source.rsplit("/", 1)[1]
    pg_exec(pg_source, f"ALTER DATABASE {database} SET idle_in_transaction_session_timeout = '300ms'")
    job = _job(tmp_path, "idle", pg_source, pg_db, strict=True)
    run = Paused(job, "load.after_commit=pause@2", tmp_path)
    time.sleep(1.5)  # idle, five times the timeout
    run.release()
    code, out, err, report = run.finish()
    assert code == 0, err[-3000:]
    assert len(report["snapshots"]) == 1
    assert_exact_copy(pg_source, pg_db)


def test_a_restart_while_the_run_verifies_and_finishes_heals(private_pg: PostgresServer, private_source: str,
                                                            private_target: str, tmp_path: Path) -> None:
    """Every partition is in; the server restarts as the run verifies: it takes a new snapshot, reconnects and
    verifies and finishes again (one transaction, safe to redo)."""
    make_items(private_source, ROWS)
    job = _job(tmp_path, "restart_verify", private_source, private_target)
    run = Paused(job, "run.before_verify=pause", tmp_path)
    private_pg.restart()
    run.release()
    code, out, err, report = run.finish()
    assert code == 0, err[-3000:]
    assert report["snapshots"][-1]["why"].startswith("retaken: snapshot") and "while verifying the run" in \
        report["snapshots"][-1]["why"]
    assert "verifying and finishing the run" in " ".join(report["recoveries"]), report["recoveries"]
    assert pg_rows(private_target, "SELECT status FROM engine.runs") == [("succeeded",)]
    assert_exact_copy(private_source, private_target)


def test_a_terminated_snapshot_session_is_retaken_with_partitions_on_dask(pg_source: str, pg_db: str,
                                                                         tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    make_items(pg_source, ROWS)
    job = _job(tmp_path, "snapshot_killed_dask", pg_source, pg_db, extra='executor = "dask"')
    run = Paused(job, "load.after_commit=pause@2", tmp_path)  # in a Dask worker process
    ended = pg_rows(pg_source, """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                                  WHERE datname = current_database() AND application_name = 'engine snapshot'""")
    assert ended == [(True,)]
    run.release()
    code, out, err, report = run.finish()
    assert code == 0, err[-3000:]
    _assert_retaken(report, "the session holding it ended")
    assert_exact_copy(pg_source, pg_db)
