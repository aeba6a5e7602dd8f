"""`run_job`: one table (`engine.pipeline`) or a whole database (`engine.migrate`, which runs a table's job
through the pipeline once per table)."""

from __future__ import annotations

from engine.config import JobConfig
from engine.metrics import Observer
from engine.pipeline import Progress
from engine.pipeline import run_job as run_table_job
from engine.report import RunReport


def run_job(config: JobConfig, fresh: bool = False, progress: Progress | None = None,
            observer: Observer | None = None) -> RunReport:
    """Run (or resume) a job and return its report; raises an EngineError subclass on failure.

    `progress` gets one line per event; an `observer` (see `engine.progress`) gets the live metrics and every
    event instead."""
    if config.is_database:
        from engine.migrate import run_database

        return run_database(config, fresh, progress, observer)
    return run_table_job(config, fresh, progress, observer)
