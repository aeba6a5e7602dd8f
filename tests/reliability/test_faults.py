"""Exactly once under crashes, lost connections and concurrent runs: real processes, real PostgreSQL.

Each test ends with the target equal to the source: same count, same keys, no duplicates, same checksum.
The long randomized campaign lives in test_chaos.py (marked slow; `make chaos`).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from engine import checkpoint, failpoints, pg
from engine.config import load_config
from engine.errors import JobLockedError, SourceError
from engine.pipeline import run_job
from engine.urls import parse_url
from tests.conftest import ROOT, failpoint_reached, pg_exec, pg_rows, release_failpoint, run_cli
from tests.reliability.harness import (
    TABLE_FILL,
    CuttingProxy,
    Paused,
    assert_exact_copy,
    drop_advisory_locks,
    items_job,
    make_items,
)

KILL_POINTS = ["extract.batch=exit@3", "transform.batch=exit@5", "load.before_commit=exit@2",
               "load.after_commit=exit@3", "run.before_verify=exit", "load.after_commit=exit@8"]


# `reader = "copy"` too: a partition's piped rows and its checkpoint commit together as well
COPY_KILL_POINTS = ["extract.batch=exit@3", "load.before_commit=exit@2", "load.after_commit=exit@3"]


@pytest.mark.parametrize(("point", "reader"), [(p, "connectorx") for p in KILL_POINTS]
                         + [(p, "copy") for p in COPY_KILL_POINTS])
def test_killed_at_a_failpoint_then_rerun_is_exact(point: str, reader: str, pg_source: str, pg_db: str,
                                                   tmp_path: Path) -> None:
    make_items(pg_source, 8000)
    job = items_job(tmp_path, "kill_point", pg_source, pg_db, reader=reader)
    killed = run_cli("run", str(job), env={"ENGINE_FAILPOINTS": point})
    assert killed.returncode == 137, killed.stderr[-2000:]
    done_before = pg_rows(pg_db, "SELECT COUNT(*) FROM engine.checkpoints")[0][0]
    rerun = run_cli("run", str(job))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{done_before} already done" in rerun.stdout
    assert_exact_copy(pg_source, pg_db)
    routes = {r for (r,) in pg_rows(pg_db, "SELECT metrics->>'route' FROM engine.checkpoints")}
    assert routes == ({"copy binary"} if reader == "copy" else {"arrow"}), routes


KILL_SEED = int(os.environ.get("ENGINE_TEST_SEED", "20261127"))


def test_kill_9_at_a_random_moment_then_rerun_is_exact(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    """The moment is drawn from a seeded generator (ENGINE_TEST_SEED): after 0 to 8 of 12 partitions have
    committed, plus up to 0.3 s, so the kill lands anywhere in a partition's read, transform, load or commit."""
    rng = random.Random(KILL_SEED)
    after_commits, delay = rng.randint(0, 8), rng.uniform(0.0, 0.3)
    moment = f"seed {KILL_SEED}: {after_commits} commit(s) + {delay:.3f} s"
    make_items(pg_source, 30000)
    job = items_job(tmp_path, "kill_random", pg_source, pg_db, partitions=12)
    child = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(job), "--quiet"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and pg_rows(pg_db, "SELECT to_regclass('engine.checkpoints')")[0][0] is None:
        time.sleep(0.01)
    while time.time() < deadline and pg_rows(pg_db, "SELECT COUNT(*) FROM engine.checkpoints")[0][0] < after_commits:
        time.sleep(0.01)
    time.sleep(delay)
    child.kill()
    child.wait()
    assert child.returncode == -9, moment
    assert pg_rows(pg_db, "SELECT status FROM engine.runs") == [("running",)], f"killed too late ({moment})"
    done = pg_rows(pg_db, "SELECT COUNT(*) FROM engine.checkpoints")[0][0]
    rerun = run_cli("run", str(job))
    assert rerun.returncode == 0, f"{moment}: {rerun.stderr[-2000:]}"
    assert f"{12 - done} run, {done} already done" in rerun.stdout, moment
    assert_exact_copy(pg_source, pg_db)


def test_backends_terminated_mid_load_are_retried(pg_source: str, pg_db: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    make_items(pg_source, 20000)
    monkeypatch.setenv("ENGINE_FAILPOINTS", "transform.batch=sleep@4")  # a 2nd batch: holds a COPY open
    failpoints.reset()
    job = items_job(tmp_path, "terminate", pg_source, pg_db, partitions=10, workers=1,
                    extra='retries = 5')
    stop = threading.Event()
    killed: list[int] = []

    def terminator() -> None:
        while not stop.is_set():
            rows = pg_rows(pg_db, """SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname =
                current_database() AND pid <> pg_backend_pid() AND state = 'active' AND query ILIKE 'COPY%'""")
            killed.extend(1 for r in rows if r[0])
            if len(killed) >= 2:
                return
            time.sleep(0.01)

    thread = threading.Thread(target=terminator)
    thread.start()
    try:
        report = run_job(load_config(job))
    finally:
        stop.set()
        thread.join()
    assert killed, "no COPY was caught in flight"
    assert report.status == "succeeded"
    assert_exact_copy(pg_source, pg_db)


@pytest.mark.parametrize("reader", ["connectorx", "copy"])
@pytest.mark.parametrize("side", ["source", "target"])
def test_connection_cut_mid_stream_is_retried(side: str, reader: str, pg_source: str, pg_db: str,
                                              tmp_path: Path) -> None:
    make_items(pg_source, 20000)
    proxy = CuttingProxy(pg_db, after_bytes=300_000, cuts=1)  # the server the fixtures use
    try:
        source = proxy.url(pg_source) if side == "source" else pg_source
        target = proxy.url(pg_db) if side == "target" else pg_db
        job = items_job(tmp_path, f"cut_{side}", source, target, partitions=4, workers=1, reader=reader)
        result = run_cli("run", str(job))
        assert result.returncode == 0, result.stderr[-3000:]
        assert proxy.cut_count == 1
        assert "retry 1/3" in result.stderr
    finally:
        proxy.close()
    assert_exact_copy(pg_source, pg_db)


def test_a_second_concurrent_run_is_refused_and_data_loads_once(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_items(pg_source, 4000)
    job = items_job(tmp_path, "concurrent", pg_source, pg_db, partitions=2, workers=1)
    env = {"ENGINE_FAILPOINTS": "transform.batch=wait@1", "ENGINE_FAILPOINTS_DIR": str(tmp_path)}
    first = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(job), "--quiet"], cwd=ROOT,
                             env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        failpoint_reached(tmp_path, "transform.batch", alive=first)  # holds the job's lock, in its 1st partition
        second = run_cli("run", str(job), timeout=60)
    finally:
        release_failpoint(tmp_path, "transform.batch")
    first_out, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err[-2000:]
    assert second.returncode == 3, second.stderr
    assert "already running" in second.stderr
    assert pg_rows(pg_db, "SELECT COUNT(*), SUM(rows_loaded)::int FROM engine.checkpoints") == [(2, 4000)]
    assert_exact_copy(pg_source, pg_db)


def test_a_run_that_lost_its_lock_stops_once_another_run_took_the_job_over(pg_source: str, pg_db: str,
                                                                          tmp_path: Path) -> None:
    """The server drops an advisory lock with its session: a second run can then start the job before the first
    takes the lock again. The first must notice before it commits anything more, whatever the second did."""
    make_items(pg_source, 4000)
    job = items_job(tmp_path, "takeover", pg_source, pg_db, mode="upsert", partitions=4, workers=1)
    first = Paused(job, "transform.batch=pause@3", tmp_path / "first")  # 2 partitions committed, the 3rd read
    run_id = pg_rows(pg_db, "SELECT run_id FROM engine.runs")[0][0]
    assert drop_advisory_locks(pg_db) == 1
    second = run_cli("run", str(job), "--fresh")
    assert second.returncode == 0, second.stderr[-2000:]
    first.release()
    code, _, first_err, _ = first.finish()
    assert code == 3, first_err[-2000:]
    assert f"run {run_id} is no longer running (its status is now 'abandoned'" in first_err
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM engine.checkpoints WHERE run_id = $1", (run_id,)) == [(2,)]
    assert_exact_copy(pg_source, pg_db)


@pytest.mark.parametrize("taken", [False, True])
def test_a_run_whose_lock_was_dropped_takes_it_again_before_finishing(taken: bool, pg_source: str, pg_db: str,
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The server dropped the lock's session (a restart): the run finishes if the lock is still free, and
    stops, committing nothing more, if another run of the job holds it by then."""
    make_items(pg_source, 3000)
    job = items_job(tmp_path, "relock", pg_source, pg_db, partitions=3, workers=1)
    monkeypatch.setenv("ENGINE_FAILPOINTS", "load.after_commit=wait@3")  # after the last partition
    monkeypatch.setenv("ENGINE_FAILPOINTS_DIR", str(tmp_path))
    failpoints.reset()
    other = pg.connect(parse_url(pg_db), autocommit=True)
    committed: list[int] = []

    def drop_the_lock() -> None:
        try:
            failpoint_reached(tmp_path, "load.after_commit")
            committed.append(pg_rows(pg_db, "SELECT COUNT(*) FROM engine.checkpoints")[0][0])
            drop_advisory_locks(pg_db)
            if taken:  # as if another run had started the job meanwhile
                checkpoint.try_lock_job(other, "relock")
        finally:
            release_failpoint(tmp_path, "load.after_commit")

    thread = threading.Thread(target=drop_the_lock)
    thread.start()
    try:
        if taken:
            with pytest.raises(JobLockedError, match="already running"):
                run_job(load_config(job))
        else:
            assert run_job(load_config(job)).status == "succeeded"
    finally:
        thread.join()
        other.close()  # the other run is gone, and its lock with it
    assert committed == [3]
    # a run taken over is the other process's: this one leaves its status alone
    assert pg_rows(pg_db, "SELECT status FROM engine.runs") == [("running" if taken else "succeeded",)]
    if taken:  # the rerun finds every partition done and only finishes the run
        monkeypatch.delenv("ENGINE_FAILPOINTS")
        report = run_job(load_config(job))
        assert report.status == "succeeded" and report.partitions_skipped == 3
    assert_exact_copy(pg_source, pg_db)


@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_a_commit_whose_answer_was_lost_is_not_redone(mode: str, pg_source: str, pg_db: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection fails right after COMMIT went through: the retry finds the partition's checkpoint and
    takes the commit as done instead of loading the partition a second time."""
    make_items(pg_source, 4000)
    monkeypatch.setenv("ENGINE_FAILPOINTS", "load.after_commit=raise@2")
    failpoints.reset()
    job = items_job(tmp_path, f"in_doubt_{mode}", pg_source, pg_db, mode=mode, partitions=4, workers=1)
    retries: list[str] = []
    report = run_job(load_config(job), progress=retries.append)
    assert report.status == "succeeded", report.error
    assert any("failpoint load.after_commit; retry 1/" in line for line in retries), retries
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (4000, 4000, 0)
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM engine.quarantine") == [(0,)]
    assert_exact_copy(pg_source, pg_db)


def test_source_schema_change_between_runs_is_refused(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_items(pg_source, 6000)
    job = items_job(tmp_path, "schema_change", pg_source, pg_db, mode="replace", workers=1)
    assert run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "load.after_commit=exit@3"}).returncode == 137
    pg_exec(pg_source, "ALTER TABLE public.items DROP COLUMN label", "ALTER TABLE public.items ALTER grp TYPE text")
    staged = pg_rows(pg_db, "SELECT COUNT(*) FROM public.items__engine_new")[0][0]
    with pytest.raises(SourceError, match="column 'label' is gone; column 'grp' changed type from integer to text"):
        run_job(load_config(job))
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM public.items__engine_new")[0][0] == staged
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM public.items")[0][0] == 0  # readers never saw a partial table
    run_job(load_config(job), fresh=True)
    assert_exact_copy(pg_source, pg_db)


def test_killed_before_the_replace_swap_readers_keep_the_old_table(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_items(pg_source, 5000)
    job = items_job(tmp_path, "swap_kill", pg_source, pg_db, mode="replace")
    assert run_cli("run", str(job)).returncode == 0
    pg_exec(pg_source, "UPDATE public.items SET label = 'v2' WHERE id % 2 = 0", TABLE_FILL.format(lo=5001, hi=5500))
    old = pg_rows(pg_db, "SELECT COUNT(*), COUNT(*) FILTER (WHERE label = 'v2') FROM public.items")[0]
    counts: list[tuple[int, int]] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            counts.append(pg_rows(pg_db, "SELECT COUNT(*), COUNT(*) FILTER (WHERE label = 'v2') FROM public.items")[0])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "replace.before_swap=exit"}).returncode == 137
        assert pg_rows(pg_db, "SELECT COUNT(*), COUNT(*) FILTER (WHERE label = 'v2') FROM public.items")[0] == old
        assert run_cli("run", str(job)).returncode == 0
    finally:
        stop.set()
        thread.join()
    new = (5500, 2500)
    assert set(counts) <= {old, new} and new in counts
    assert_exact_copy(pg_source, pg_db)


def test_killed_during_an_upsert_the_partition_is_all_or_nothing(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    make_items(pg_source, 4000)
    job = items_job(tmp_path, "upsert_kill", pg_source, pg_db, mode="upsert", partitions=4, workers=1)
    assert run_cli("run", str(job)).returncode == 0
    pg_exec(pg_source, "UPDATE public.items SET label = 'v2'")
    assert run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "load.before_commit=exit@2"}).returncode == 137
    per_partition = pg_rows(pg_db, """SELECT (id - 1) / 1000 AS p, COUNT(*) FILTER (WHERE label = 'v2')
                                      FROM public.items GROUP BY 1 ORDER BY 1""")
    assert [r[1] for r in per_partition] == [1000, 0, 0, 0]
    assert run_cli("run", str(job)).returncode == 0
    assert_exact_copy(pg_source, pg_db)


def test_concurrent_writes_to_the_source_are_copied_as_of_one_snapshot(pg_source: str, pg_db: str, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    make_items(pg_source, 20000)
    monkeypatch.setenv("ENGINE_FAILPOINTS", "extract.batch=sleep@5")  # a pause mid-job: the writes land during it
    failpoints.reset()
    total = pg_rows(pg_source, "SELECT SUM(amount) FROM public.items")[0][0]
    job = items_job(tmp_path, "snapshot", pg_source, pg_db, partitions=10, workers=1)
    stop = threading.Event()
    moves = [0]

    def transfers() -> None:  # move amounts from the first partition to the last: the sum never changes
        while not stop.is_set():
            pg_exec(pg_source, "BEGIN", "UPDATE public.items SET amount = amount - 1 WHERE id = 1 + $1 % 100",
                    "UPDATE public.items SET amount = amount + 1 WHERE id = 19900 + $1 % 100", "COMMIT",
                    params=(moves[0],))
            moves[0] += 1

    thread = threading.Thread(target=transfers)
    thread.start()
    try:
        report = run_job(load_config(job))
    finally:
        stop.set()
        thread.join()
    assert moves[0] > 10
    assert pg_rows(pg_db, "SELECT SUM(amount) FROM public.items")[0][0] == total
    assert "one snapshot" in " ".join(report.notes)


def test_partitions_run_as_tasks_on_a_dask_cluster(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    """`executor = "dask"`: a local cluster of worker processes runs the partitions; a worker killed mid-task
    has its task rerun on another worker, and the copy is still exact."""
    make_items(pg_source, 12000)
    job = items_job(tmp_path, "dask", pg_source, pg_db, partitions=6, extra='executor = "dask"')
    # each worker process stops in its first task, its partition's transaction open, until released
    env = {**os.environ, "ENGINE_FAILPOINTS": "transform.batch=wait@1", "ENGINE_FAILPOINTS_DIR": str(tmp_path)}
    engine = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(job)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = failpoint_reached(tmp_path, "transform.batch", count=2, alive=engine)
        assert set(first) <= {p.pid for p in _dask_workers(engine.pid)}
        assert pg_rows(pg_db, "SELECT COUNT(*) FROM engine.checkpoints") == [(0,)]
        victim = psutil.Process(first[0])
        victim.kill()  # inside a task: the two workers hold two partitions, none committed
        victim.wait(timeout=30)
        release_failpoint(tmp_path, "transform.batch")
        out, err = engine.communicate(timeout=180)
    finally:
        engine.kill()
    assert engine.returncode == 0, err[-3000:]
    # the killed worker's partition had no checkpoint when it died: all 6 committed means its task was rerun
    assert "6 run, 0 already done" in out and "12,000 loaded" in out
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM engine.checkpoints") == [(6,)]
    assert_exact_copy(pg_source, pg_db)


def _dask_workers(pid: int) -> list[psutil.Process]:
    """The worker processes a local Dask cluster spawned under this process (zombies excluded)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "spawn" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def test_a_partition_whose_dask_workers_keep_dying_fails_the_run_which_resumes(pg_source: str, pg_db: str,
                                                                              tmp_path: Path) -> None:
    make_items(pg_source, 3000)
    job = items_job(tmp_path, "dask_dies", pg_source, pg_db, partitions=3, extra='executor = "dask"')
    failed = run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "transform.batch=exit@1"})  # every worker dies
    assert failed.returncode == 69, failed.stderr[-2000:]
    assert "the Dask workers running a partition kept dying" in failed.stderr and "rerun to resume" in failed.stderr
    assert run_cli("run", str(job)).returncode == 0
    assert_exact_copy(pg_source, pg_db)


def test_a_dask_task_rerun_after_its_commit_keeps_the_first_commit(pg_source: str, pg_db: str,
                                                                   tmp_path: Path) -> None:
    """Each worker dies right after its first COMMIT: Dask reruns that task on a new worker, which finds the
    partition committed (its checkpoint exists) and rolls its own copy back. Append into a table without a key:
    a second copy of a partition would stay as duplicate rows. The rerun's rows draw numbers from the target's
    sequence before they are rolled back (sequences are not transactional): that shows the reruns happened."""
    make_items(pg_source, 3000)
    pg_exec(pg_db, "CREATE SEQUENCE public.copied", """CREATE TABLE public.items (id bigint, grp integer NOT NULL,
        label text, amount numeric(14,4), at timestamptz, doc jsonb, n bigint DEFAULT nextval('public.copied'))""")
    job = items_job(tmp_path, "dask_rerun", pg_source, pg_db, partitions=3, extra='executor = "dask"')
    result = run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "load.after_commit=exit@1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3,000 read, 3,000 loaded" in result.stdout
    assert pg_rows(pg_db, "SELECT COUNT(*), SUM(rows_loaded)::int FROM engine.checkpoints") == [(3, 3000)]
    assert pg_rows(pg_db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM public.items") == [(3000, 3000)]
    drawn = pg_rows(pg_db, "SELECT last_value FROM public.copied")[0][0]
    assert drawn >= 3000 + 1000, f"only {drawn} rows were ever copied: no task was rerun after its commit"
    columns = "id, grp, label, amount, at, doc"
    assert pg_rows(pg_db, f"SELECT {columns} FROM public.items ORDER BY id") == pg_rows(
        pg_source, f"SELECT {columns} FROM public.items ORDER BY id")
