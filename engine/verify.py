"""Verify stage: after loading, the target must account for every source row, partition by partition.

For each partition: rows counted in the source now = rows read = rows loaded + rows quarantined.
For replace mode the new table's row count must equal the rows loaded. Any difference fails the job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine import pg
from engine.catalog import source_rows
from engine.config import JobConfig
from engine.errors import VerificationError
from engine.load import LoadTarget, count_rows
from engine.plan import Plan

if TYPE_CHECKING:
    from engine.checkpoint import Checkpoint
    from engine.report import RunReport


def verify_run(config: JobConfig, plan: Plan, conn: pg.Connection, target: LoadTarget,
               finished: dict[int, Checkpoint] | None, report: RunReport) -> str:
    if config.pipeline.verify == "none":
        return "skipped (pipeline.verify = none)"
    url = config.source_url
    problems: list[str] = []
    if finished is None:  # no checkpoints: check this invocation's totals
        source_total = sum(int(source_rows(url, plan.count_sql(p))[0][0]) for p in plan.partitions)
        if source_total != report.rows_read:
            problems.append(f"the source has {source_total:,} rows, {report.rows_read:,} were read")
        loaded_total = report.rows_loaded
    else:
        for partition in plan.partitions:
            done = finished.get(partition.id)
            if done is None:
                problems.append(f"partition {partition.id} {partition.label()} has no checkpoint")
                continue
            if done.rows_loaded + done.rows_quarantined != done.rows_read:
                problems.append(f"partition {partition.id}: {done.rows_read:,} read but {done.rows_loaded:,} loaded "
                                f"+ {done.rows_quarantined:,} quarantined")
            in_source = int(source_rows(url, plan.count_sql(partition))[0][0])
            if in_source != done.rows_read:
                problems.append(f"partition {partition.id} {partition.label()}: the source holds {in_source:,} rows, "
                                f"{done.rows_read:,} were read (was the source written to during the run?)")
        loaded_total = sum(c.rows_loaded for c in finished.values())
    if target.mode == "replace":
        in_target = count_rows(conn, target.write_table)
        if in_target != loaded_total:
            problems.append(f"the new table holds {in_target:,} rows, {loaded_total:,} were loaded")
    if problems:
        raise VerificationError("verification failed:\n  " + "\n  ".join(problems))
    return f"ok: {len(plan.partitions)} partition(s); source rows = loaded + quarantined" + (
        "; new table row count matches" if target.mode == "replace" else "")
