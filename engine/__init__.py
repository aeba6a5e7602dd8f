"""engine: move tables into PostgreSQL — partitioned, transformed, validated, checkpointed, verified.

The public API. Names load on first use, so `import engine` (and `engine --help`) stays fast:

    from engine import load_config, run_job
    report = run_job(load_config("configs/orders.toml"))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.memory import tune_allocator

tune_allocator()  # before pyarrow or any driver allocates

if TYPE_CHECKING:
    from engine.config import JobConfig, load_config, parse_config
    from engine.demo import run_demo
    from engine.errors import (
        EXIT_CODES,
        ConfigError,
        EngineError,
        ErrorBudgetExceeded,
        JobLockedError,
        SourceError,
        TargetError,
        TransientError,
        VerificationError,
        WorkerLost,
    )
    from engine.explain import check as check_job
    from engine.explain import explain as explain_job
    from engine.explain import latest_staging
    from engine.explain import status as job_status
    from engine.gc import collect_garbage
    from engine.history import render_history, run_history
    from engine.htmlreport import html_report
    from engine.inspect import query as inspect_staged
    from engine.inspect import shell as inspect_shell
    from engine.jobs import run_job
    from engine.model import LoadTarget, Partition, PartitionResult, Plan, RunStatus
    from engine.monitoring import publish as publish_metrics
    from engine.plan import make_plan as plan_job
    from engine.progress import progress_observer
    from engine.report import RunReport
    from engine.typemap import type_map_markdown

_EXPORTS: dict[str, tuple[str, str]] = {
    "run_job": ("engine.jobs", "run_job"),
    "plan_job": ("engine.plan", "make_plan"),
    "check_job": ("engine.explain", "check"),
    "explain_job": ("engine.explain", "explain"),
    "job_status": ("engine.explain", "status"),
    "latest_staging": ("engine.explain", "latest_staging"),
    "inspect_staged": ("engine.inspect", "query"),
    "inspect_shell": ("engine.inspect", "shell"),
    "run_demo": ("engine.demo", "run_demo"),
    "collect_garbage": ("engine.gc", "collect_garbage"),
    "publish_metrics": ("engine.monitoring", "publish"),
    "html_report": ("engine.htmlreport", "html_report"),
    "run_history": ("engine.history", "run_history"),
    "render_history": ("engine.history", "render_history"),
    "progress_observer": ("engine.progress", "progress_observer"),
    "type_map_markdown": ("engine.typemap", "type_map_markdown"),
    "load_config": ("engine.config", "load_config"),
    "parse_config": ("engine.config", "parse_config"),
    "JobConfig": ("engine.config", "JobConfig"),
    "RunReport": ("engine.report", "RunReport"),
    "Plan": ("engine.model", "Plan"),
    "Partition": ("engine.model", "Partition"),
    "PartitionResult": ("engine.model", "PartitionResult"),
    "LoadTarget": ("engine.model", "LoadTarget"),
    "RunStatus": ("engine.model", "RunStatus"),
    **{name: ("engine.errors", name) for name in (
        "EXIT_CODES", "EngineError", "ConfigError", "JobLockedError", "SourceError", "TargetError", "TransientError",
        "WorkerLost", "ErrorBudgetExceeded", "VerificationError")},
}

__all__ = [
    "ConfigError",
    "EXIT_CODES",
    "EngineError",
    "ErrorBudgetExceeded",
    "JobConfig",
    "JobLockedError",
    "LoadTarget",
    "Partition",
    "PartitionResult",
    "Plan",
    "RunReport",
    "RunStatus",
    "SourceError",
    "TargetError",
    "TransientError",
    "VerificationError",
    "WorkerLost",
    "check_job",
    "collect_garbage",
    "explain_job",
    "html_report",
    "inspect_shell",
    "inspect_staged",
    "job_status",
    "latest_staging",
    "load_config",
    "parse_config",
    "plan_job",
    "render_history",
    "run_history",
    "progress_observer",
    "publish_metrics",
    "run_demo",
    "run_job",
    "type_map_markdown",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
