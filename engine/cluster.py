"""Partitions as tasks on a Dask cluster (`[pipeline] executor = "dask"`).

A `PartitionTask` is self-contained and picklable, and running it twice is safe (its rows and its checkpoint
commit together; a partition already committed is recognised), so Dask may rerun the task of a worker that
died. On a worker a task closes its target session when it ends, so a shared worker keeps nothing of a run.
Workers need the engine installed, both databases within reach and the job's rules directory at the same
path. Without a scheduler address the run starts a local cluster of `workers` processes and stops it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Any

from engine.errors import ConfigError, WorkerLost
from engine.urls import redact


@contextmanager
def dask_executor(address: str, workers: int) -> Iterator[Executor]:
    """A concurrent.futures executor whose tasks run on Dask workers."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("pipeline.executor", [
            '`pipeline.executor` = "dask" needs the distributed package: pip install "engine[dask]" '
            "(or uv sync --extra dask)"]) from None
    cluster: Any = None
    if not address:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
    try:
        client = Client(cluster if cluster is not None else address, timeout=30)
    except OSError as exc:
        if cluster is not None:
            cluster.close()
        raise ConfigError("pipeline.dask_scheduler", [
            f"`pipeline.dask_scheduler`: cannot reach {redact(address)} ({exc})"]) from None
    try:
        # No Dask retries: a task retries transient errors itself, and Dask reruns the task of a worker that
        # died anyway (up to distributed.scheduler.allowed-failures times).
        yield client.get_executor(pure=False)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def explain_task_failure(exc: BaseException) -> BaseException:
    """Dask's KilledWorker (the task's workers kept dying: out of memory, killed) as the engine's own error."""
    if type(exc).__name__ != "KilledWorker":
        return exc
    return WorkerLost(f"the Dask workers running a partition kept dying ({exc}); committed partitions are kept: "
                      "check the workers' memory and logs, then rerun to resume")
