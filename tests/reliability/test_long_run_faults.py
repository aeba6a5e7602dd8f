"""Faults of long runs, each ending the run with a message that says what happened and what to do, and
nothing lost: a full staging disk, a target out of disk, a statement or lock timeout set on the target role,
a source table truncated mid-run. Real servers; disks are small tmpfs mounts (root only, else skipped)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_postgresql.dbapi as pgdbapi
import pytest

from engine.localpg import PostgresServer
from tests.conftest import IN_CI, job_toml, mariadb_exec, pg_exec, pg_rows, run_cli, write_job
from tests.reliability.harness import TABLE_DDL, CuttingProxy, Paused, assert_exact_copy, items_job, make_items


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A 1 MB tmpfs mount (resize it with `_resize`), where a private server's user can reach it."""
    mount = Path(tempfile.mkdtemp(prefix="engine-small-"))
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        message = "mounting a small tmpfs needs root (CAP_SYS_ADMIN)"
        if IN_CI:  # CI runs as root: a fault test that cannot run there is a failure, not a skip
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def _resize(mount: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


def _fill(mount: Path) -> Path:
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def _with_staging(job: Path, staging: Path) -> Path:
    text = job.read_text()
    start = text.index("staging_dir = ")
    end = text.index("\n", start)
    job.write_text(text[:start] + f'staging_dir = "{staging}"' + text[end:] + "\n[validate]\nmax_error_rate = 0.2\n")
    return job


def test_a_full_staging_disk_fails_the_run_saying_so_and_the_rerun_loses_nothing(pg_source: str, pg_db: str,
                                                                                  tmp_path: Path, tmpfs: Path) -> None:
    make_items(pg_source, 6000)
    pg_exec(pg_db, TABLE_DDL, "ALTER TABLE public.items ADD CONSTRAINT not_3 CHECK (grp <> 3)")  # refuses some rows
    job = _with_staging(items_job(tmp_path, "staging_full", pg_source, pg_db, partitions=6), tmpfs / "staging")
    filler = _fill(tmpfs)
    failed = run_cli("run", str(job))
    assert failed.returncode == 73, failed.stderr[-3000:]
    assert "No space left on device" in failed.stderr and "pipeline.staging_dir" in failed.stderr
    assert "nothing of this partition was committed" in failed.stderr and "rerun to resume" in failed.stderr
    assert not list((tmpfs / "staging").rglob("*.parquet")), "a half-written Parquet file was left behind"
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM engine.checkpoints") == [(0,)]
    filler.unlink()
    rerun = run_cli("run", str(job))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    refused = pg_rows(pg_source, "SELECT COUNT(*) FROM public.items WHERE grp = 3")[0][0]
    assert refused > 0
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM engine.quarantine") == [(refused,)]
    assert pg_rows(pg_db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM public.items") == [(6000 - refused,) * 2]
    assert len(list((tmpfs / "staging").rglob("*.parquet"))) == 6


def test_a_target_out_of_disk_fails_the_run_saying_so_and_the_rerun_is_exact(private_pg: PostgresServer,
                                                                             private_target: str, pg_source: str,
                                                                             tmp_path: Path, tmpfs: Path) -> None:
    """The target table lives in a tablespace on a 1 MB disk: COPY fails with PostgreSQL's disk_full."""
    if private_pg.run_as:
        subprocess.run(["chown", private_pg.run_as, str(tmpfs)], check=True)
    space = f"tiny_{uuid.uuid4().hex[:8]}"
    pg_exec(private_pg.url, f"CREATE TABLESPACE {space} LOCATION '{tmpfs}'")
    try:
        pg_exec(private_target, f"{TABLE_DDL} TABLESPACE {space}")
        make_items(pg_source, 12000)  # ≈2.5 MB in the target
        job = items_job(tmp_path, "target_full", pg_source, private_target, partitions=12)
        failed = run_cli("run", str(job))
        assert failed.returncode == 69, failed.stderr[-3000:]
        assert "No space left on device" in failed.stderr and "the target's disk is full" in failed.stderr
        assert "rerun to resume" in failed.stderr and "partition" in failed.stderr
        committed = pg_rows(private_target, "SELECT COALESCE(SUM(rows_loaded), 0)::int FROM engine.checkpoints")[0][0]
        assert pg_rows(private_target, "SELECT COUNT(*) FROM public.items") == [(committed,)]  # nothing half done
        assert committed < 12000
        _resize(tmpfs, "64m")
        rerun = run_cli("run", str(job))
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert_exact_copy(pg_source, private_target)
    finally:
        pg_exec(private_target, "DROP TABLE IF EXISTS public.items")
        pg_exec(private_pg.url, f"DROP TABLESPACE IF EXISTS {space}")


@pytest.mark.parametrize("setting, says", [
    ("statement_timeout", "a statement_timeout set for the role or database"),
    ("lock_timeout", "for longer than the lock_timeout set for the role or database"),
])
def test_a_timeout_set_on_the_target_role_fails_the_run_saying_so(setting: str, says: str, pg_source: str,
                                                                  pg_db: str, tmp_path: Path) -> None:
    """Another session holds a lock on the target table: the role's timeout cancels the engine's COPY."""
    make_items(pg_source, 4000)
    role = f"engine_to_{uuid.uuid4().hex[:8]}"
    pg_exec(pg_db, f"CREATE ROLE {role} LOGIN SUPERUSER", f"ALTER ROLE {role} SET {setting} = '300ms'", TABLE_DDL)
    as_role = pg_db.replace("postgres@", f"{role}@", 1)
    assert as_role != pg_db
    holder = pgdbapi.connect(pg_db)  # not autocommit: the lock is held until rollback
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE public.items IN ACCESS EXCLUSIVE MODE")
        job = items_job(tmp_path, f"role_{setting}", pg_source, as_role, partitions=4, workers=1, extra="retries = 1")
        failed = run_cli("run", str(job))
        assert failed.returncode == 69, failed.stderr[-3000:]
        assert says in failed.stderr and "partition 0" in failed.stderr and "rerun to resume" in failed.stderr
        holder.rollback()
        pg_exec(pg_db, f"ALTER ROLE {role} RESET ALL")
        rerun = run_cli("run", str(job))
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert_exact_copy(pg_source, pg_db)
    finally:
        holder.close()
        pg_exec(pg_db, f"REASSIGN OWNED BY {role} TO postgres", f"DROP ROLE {role}")


def test_a_source_table_truncated_mid_run_fails_verification(mariadb_db: str, pg_db: str, tmp_path: Path) -> None:
    mariadb_exec(mariadb_db, "CREATE TABLE items (id BIGINT PRIMARY KEY, grp INT NOT NULL, label TEXT)",
                 many=("INSERT INTO items VALUES (%s, %s, %s)", [(i, i % 17, f"row {i}") for i in range(1, 4001)]))
    job = write_job(tmp_path, job_toml("truncated", mariadb_db, "items", pg_db, "public.items",
                                       extra_source="partitions = 4", extra="workers = 1"), "truncated.toml")
    run = Paused(job, "load.after_commit=pause@2", tmp_path)
    mariadb_exec(mariadb_db, "TRUNCATE TABLE items")
    run.release()
    code, out, err, report = run.finish()
    assert code == 66, err[-3000:]
    assert "verification failed" in err and "the source holds 0 rows, 1,000 were read" in err
    assert "The source changed under the run" in err and "rerun with --fresh" in err
    assert report["status"] == "failed"
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM public.items") == [(2000,)]  # what was committed stays, once


def test_a_partition_that_keeps_failing_ends_the_run_naming_it_and_saying_rerun_to_resume(pg_source: str,
                                                                                         pg_db: str,
                                                                                         tmp_path: Path) -> None:
    make_items(pg_source, 4000)
    job = items_job(tmp_path, "gives_up", pg_source, pg_db, partitions=4, workers=1, extra="retries = 0")
    report = tmp_path / "report.json"
    failed = run_cli("run", str(job), "--json", str(report), env={"ENGINE_FAILPOINTS": "load.before_commit=raise@2"})
    assert failed.returncode == 69, failed.stderr[-3000:]
    said = "partition 1 [1001, 2000]: failpoint load.before_commit; committed partitions are kept: rerun to resume"
    assert f"error: {said}" in failed.stderr
    assert json.loads(report.read_text())["error"] == said
    assert run_cli("run", str(job)).returncode == 0
    assert_exact_copy(pg_source, pg_db)


def test_a_postgresql_source_cannot_be_truncated_under_a_run(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    """The snapshot's session holds a share lock on the source table, a retaken one too: TRUNCATE waits."""
    make_items(pg_source, 4000)
    job = items_job(tmp_path, "no_truncate", pg_source, pg_db, partitions=4, workers=1)
    run = Paused(job, "load.after_commit=pause@2,load.before_commit=pause@4", tmp_path)
    pg_exec(pg_source, """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                          WHERE datname = current_database() AND application_name = 'engine snapshot'""")
    run.release()  # the next partition finds the snapshot gone; the run takes a new one
    run.wait("load.before_commit")
    try:
        with pytest.raises(Exception, match="lock timeout"):
            pg_exec(pg_source, "SET lock_timeout = '300ms'", "TRUNCATE public.items")
    finally:
        run.release("load.before_commit")
    code, out, err, report = run.finish()
    assert code == 0, err[-3000:]
    assert len(report["snapshots"]) == 2
    assert_exact_copy(pg_source, pg_db)


def test_a_run_whose_success_committed_unheard_succeeds_and_loads_once(pg_source: str, pg_db: str,
                                                                        tmp_path: Path) -> None:
    """The commit of the run's status landed but its answer was lost with the session: the retry finds the run
    finished by this process and reports it so, instead of refusing it as another's or loading it again."""
    make_items(pg_source, 2000)
    job = items_job(tmp_path, "unheard", pg_source, pg_db, partitions=2, workers=1)
    done = run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "run.after_commit=raise"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "failpoint run.after_commit; retry 1/" in done.stderr
    assert pg_rows(pg_db, "SELECT status FROM engine.runs WHERE job = 'unheard'") == [("succeeded",)]
    assert_exact_copy(pg_source, pg_db)


def test_a_failure_after_the_success_committed_leaves_the_run_succeeded(pg_source: str, pg_db: str,
                                                                        tmp_path: Path) -> None:
    make_items(pg_source, 2000)
    job = items_job(tmp_path, "late_failure", pg_source, pg_db, partitions=2, workers=1)
    failed = run_cli("run", str(job), env={"ENGINE_FAILPOINTS": "run.after_finish=fatal"})
    assert failed.returncode != 0 and "failpoint run.after_finish" in failed.stderr
    assert pg_rows(pg_db, "SELECT status FROM engine.runs WHERE job = 'late_failure'") == [("succeeded",)]
    assert_exact_copy(pg_source, pg_db)


def test_a_run_without_checkpoints_is_not_resumed_by_itself(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    """Without checkpoints a run cannot be resumed, only redone (what it had committed, twice): after a failure
    it ends; with them, the same failure is resumed within the command."""
    make_items(pg_source, 20000)
    proxy = CuttingProxy(pg_source, after_bytes=300_000, cuts=1000)  # every partition's read is cut
    try:
        ended = {}
        for checkpoints in ("false", "true"):
            job = items_job(tmp_path, f"cut_{checkpoints}", proxy.url(pg_source), pg_db, partitions=4, workers=1,
                            extra=f"retries = 1\ncheckpoints = {checkpoints}")
            ended[checkpoints] = run_cli("run", str(job))
    finally:
        proxy.close()
    assert ended["false"].returncode == 69 and "resuming it" not in ended["false"].stderr, ended["false"].stderr
    assert ended["true"].returncode == 69 and "resuming it (retry 1/1)" in ended["true"].stderr, ended["true"].stderr
