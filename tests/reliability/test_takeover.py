"""A run that lost its lock, resumed by another process (a plain rerun, not --fresh): one process runs it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import pg_rows
from tests.reliability.harness import Paused, assert_exact_copy, drop_advisory_locks, items_job, make_items


def test_a_plain_resume_takes_the_run_over_and_the_first_process_stops(pg_source: str, pg_db: str,
                                                                       tmp_path: Path) -> None:
    make_items(pg_source, 4000)
    job = items_job(tmp_path, "resume_takeover", pg_source, pg_db, partitions=4, workers=1)
    first = Paused(job, "transform.batch=pause@2", tmp_path / "first")  # 1 partition committed, the 2nd read
    run_id = pg_rows(pg_db, "SELECT run_id FROM engine.runs")[0][0]
    assert drop_advisory_locks(pg_db) == 1
    # Resumes the same run and pauses as it reads its first partition: the first process tries to commit meanwhile.
    second = Paused(job, "transform.batch=pause@1", tmp_path / "second")
    first.release()
    code, _, first_err, _ = first.finish()
    assert code == 3, first_err[-2000:]
    assert f"run {run_id} was resumed by another process" in first_err
    second.release()
    code, _, second_err, _ = second.finish()
    assert code == 0, second_err[-2000:]
    assert f"resuming run {run_id}" in second_err
    assert pg_rows(pg_db, "SELECT status FROM engine.runs WHERE run_id = $1", (run_id,)) == [("succeeded",)]
    assert pg_rows(pg_db, "SELECT COUNT(*) FROM engine.checkpoints WHERE run_id = $1", (run_id,)) == [(4,)]
    assert_exact_copy(pg_source, pg_db)  # append mode: a partition committed twice would show as duplicates
