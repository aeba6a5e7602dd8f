"""A job's run history (`engine runs`): run, status, started, duration, rows read / loaded / rejected, mode,
newest first. Rows count every committed partition of the run, across resumes."""

from __future__ import annotations

from typing import Any

from engine import pg
from engine.config import JobConfig
from engine.sql import TableName

_SQL = """
SELECT r.run_id, r.status, r.started_at, r.finished_at,
       EXTRACT(EPOCH FROM (COALESCE(r.finished_at, now()) - r.started_at))::float8,
       COALESCE(c.read, 0), COALESCE(c.loaded, 0), COALESCE(c.rejected, 0), COALESCE(c.parts, 0),
       jsonb_array_length(r.plan->'partitions'), r.report->>'mode', r.error
FROM engine.runs r
LEFT JOIN (SELECT run_id, SUM(rows_read)::bigint AS read, SUM(rows_loaded)::bigint AS loaded,
                  SUM(rows_quarantined)::bigint AS rejected, COUNT(*) AS parts
           FROM engine.checkpoints GROUP BY run_id) c ON c.run_id = r.run_id
WHERE r.job = $1 ORDER BY r.started_at DESC, r.run_id DESC LIMIT $2"""


def runs(conn: pg.Connection, job: str, limit: int = 50) -> list[dict[str, Any]]:
    if pg.table_columns(conn, TableName("engine", "runs")) is None:
        return []
    out = []
    for r in pg.fetch_all(conn, _SQL, (job, limit)):
        out.append({"run_id": r[0], "status": r[1], "started": r[2].isoformat(timespec="seconds"),
                    "finished": r[3].isoformat(timespec="seconds") if r[3] else None,
                    "duration_seconds": round(float(r[4]), 1), "rows_read": int(r[5]), "rows_loaded": int(r[6]),
                    "rows_rejected": int(r[7]), "partitions_done": int(r[8]), "partitions": int(r[9] or 0),
                    "mode": r[10], "error": r[11]})
    return out


def run_history(config: JobConfig, limit: int = 50) -> list[dict[str, Any]]:
    """The job's last `limit` runs, newest first."""
    with pg.connection(config.target_url) as conn:
        rows = runs(conn, config.job.name, limit)
    for row in rows:
        row["mode"] = row["mode"] or config.target.mode
    return rows


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def render_history(job: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"job {job}: no runs yet"
    header = ("run", "status", "started", "duration", "rows", "loaded", "rejected", "partitions", "mode")
    table = [(r["run_id"], r["status"], r["started"].replace("T", " ")[:19], _duration(r["duration_seconds"]),
              f"{r['rows_read']:,}", f"{r['rows_loaded']:,}", f"{r['rows_rejected']:,}",
              f"{r['partitions_done']}/{r['partitions']}", r["mode"]) for r in rows]
    widths = [max(len(str(x[i])) for x in [header, *table]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, tuple("-" * w for w in widths), *table]]
    return f"job {job}: {len(rows)} run(s), newest first\n" + "\n".join(lines)
