"""Cleanup, the last phase of a run, and `engine gc`: remove what no run will need again, never what a
resumable run still needs.

After a successful run (`after_success`):
- staging folders of the job's abandoned runs (they never resume; their quarantined rows stay in
  `engine.quarantine` until `engine gc` removes them);
- a `<table>__engine_new` left by a replace run that will never resume (the job's runs are all finished now),
  unless another job's unfinished run may still load into it.
The run's own staging folder stays: its rejected rows, its metrics and, with `pipeline.stage_batches`, its
batches are what `engine inspect` reads. Temporary tables die with their sessions.

`engine gc JOB --older-than 30d`: the staging folders and quarantined rows of the job's runs that ended that
long ago. The run a plain rerun would resume (the latest, if running or failed) is never touched. Run history
(`engine.runs`, `engine.checkpoints`) is kept. Without `--yes` it only prints what it would delete.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from engine import pg
from engine.config import JobConfig
from engine.errors import ConfigError
from engine.modes import STAGING_SUFFIX
from engine.sql import TableName

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '2w', '45s' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not match:
        raise ConfigError("--older-than", [f"{text!r} is not an age like 30d, 12h, 90m, 2w or 45s"])
    return float(match.group(1)) * _UNITS[match.group(2)]


def staging_root(config: JobConfig) -> Path:
    root = Path(config.pipeline.staging_dir)
    return (root if root.is_absolute() else Path.cwd() / root) / config.job.name


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _resumable(conn: pg.Connection, job: str) -> str | None:
    rows = pg.fetch_all(conn, """SELECT run_id, status FROM engine.runs WHERE job = $1
                                 ORDER BY started_at DESC, run_id DESC LIMIT 1""", (job,))
    return rows[0][0] if rows and rows[0][1] in ("running", "failed") else None


def leftover_staging_table(conn: pg.Connection, config: JobConfig) -> TableName | None:
    """The target's `__engine_new` table, if no unfinished run may still load into it."""
    new = config.target_table.with_suffix(STAGING_SUFFIX)
    if pg.table_columns(conn, new) is None:
        return None
    if _resumable(conn, config.job.name):
        return None
    others = pg.fetch_all(conn, """SELECT report->>'target' FROM engine.runs
                                   WHERE status IN ('running', 'failed') AND job <> $1""", (config.job.name,))
    if any(target is None or str(config.target_table) in str(target) for (target,) in others):
        return None  # another job's unfinished run may resume into it (or we cannot tell)
    return new


@dataclass
class Garbage:
    folders: list[tuple[str, Path, int]] = field(default_factory=list)  # (run, folder, bytes)
    quarantine: list[tuple[str, int]] = field(default_factory=list)  # (run, rows)
    tables: list[TableName] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        lines = [f"staging folder of run {r}: {p} ({n / 2**20:.1f} MB)" for r, p, n in self.folders]
        lines += [f"{n:,} quarantined or warned rows of run {r} in engine.quarantine / engine.warnings"
                  for r, n in self.quarantine]
        lines += [f"table {t} (left by a replace run that will not resume)" for t in self.tables]
        return lines


def find_garbage(conn: pg.Connection, config: JobConfig, older_than: float) -> Garbage:
    job, root = config.job.name, staging_root(config)
    garbage = Garbage()
    keep = _resumable(conn, job)
    old = pg.fetch_all(conn, """SELECT run_id FROM engine.runs WHERE job = $1 AND status <> 'running'
                                AND COALESCE(finished_at, started_at) < now() - make_interval(secs => $2)
                                ORDER BY started_at""", (job, older_than))
    counts = dict(pg.fetch_all(conn, """SELECT run_id, COUNT(*) FROM (
                                            SELECT run_id FROM engine.quarantine WHERE job = $1 UNION ALL
                                            SELECT run_id FROM engine.warnings WHERE job = $1) recorded
                                        GROUP BY run_id""", (job,)))
    for (run_id,) in old:
        if run_id == keep:
            garbage.kept.append(f"run {run_id}: a rerun resumes it")
            continue
        folder = root / run_id
        if folder.is_dir():
            garbage.folders.append((run_id, folder, _size(folder)))
        if counts.get(run_id):
            garbage.quarantine.append((run_id, int(counts[run_id])))
    if keep and (root / keep).is_dir():
        garbage.kept.append(f"staging folder {root / keep}: run {keep} may resume")
    table = leftover_staging_table(conn, config)
    if table is not None:
        garbage.tables.append(table)
    return garbage


def remove(conn: pg.Connection, garbage: Garbage, job: str) -> None:
    for _, folder, _ in garbage.folders:
        shutil.rmtree(folder, ignore_errors=True)
    for run_id, _ in garbage.quarantine:
        pg.execute(conn, "DELETE FROM engine.quarantine WHERE job = $1 AND run_id = $2", (job, run_id))
        pg.execute(conn, "DELETE FROM engine.warnings WHERE job = $1 AND run_id = $2", (job, run_id))
    for table in garbage.tables:
        pg.execute(conn, f"DROP TABLE IF EXISTS {table.quoted()}")
    conn.commit()


def after_success(conn: pg.Connection, config: JobConfig) -> list[str]:
    """The cleanup phase of a successful run; returns what it removed, as notes."""
    root = staging_root(config)
    garbage = Garbage()
    if root.is_dir():
        abandoned = {r for (r,) in pg.fetch_all(conn, "SELECT run_id FROM engine.runs WHERE job = $1 AND status = "
                                                      "'abandoned'", (config.job.name,))}
        garbage.folders = [(p.name, p, 0) for p in sorted(root.iterdir()) if p.is_dir() and p.name in abandoned]
    table = leftover_staging_table(conn, config)
    if table is not None:
        garbage.tables.append(table)
    remove(conn, garbage, config.job.name)
    return [f"cleanup removed the {line}" for line in garbage.describe()]


def collect_garbage(config: JobConfig, older_than: str, yes: bool = False) -> str:
    """`engine gc`: what is (or, with `yes`, was) deleted."""
    seconds = parse_age(older_than)
    with pg.connection(config.target_url) as conn:
        if pg.table_columns(conn, TableName("engine", "runs")) is None:
            return f"job {config.job.name}: no runs yet, nothing to delete"
        garbage = find_garbage(conn, config, seconds)
        lines = garbage.describe()
        kept = [f"  keeping {k}" for k in garbage.kept]
        if not lines:
            return "\n".join([f"job {config.job.name}: nothing older than {older_than} to delete", *kept])
        head = f"job {config.job.name}: {'deleted' if yes else 'would delete'} ({len(lines)} item(s)):"
        if yes:
            remove(conn, garbage, config.job.name)
        tail = [] if yes else ["(nothing deleted: rerun with --yes to delete)"]
        return "\n".join([head, *(f"  {line}" for line in lines), *kept, *tail])
