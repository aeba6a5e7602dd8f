"""Run metrics: what a run measured, saved with it (in `engine.runs.report` and as `metrics.json` next to its
staged files) and shown live by `engine.progress`.

- per-phase wall time of the run (plan, prepare, partitions, finish, cleanup);
- per partition: worker, start and end, rows, bytes (Arrow, as read), retries, and the time spent reading,
  transforming, validating, loading and committing;
- every second, from a sampler thread: rows and bytes read so far, resident memory, and how full the stage
  queues are; the sampler's own CPU time is recorded too (`sampler_cpu_seconds`), and it gives freed heap pages
  back to the system when memory has grown (`memory.HeapKeeper`);
- failed rows per validation rule.

The sampler reads /proc/self/statm (one small read) and a few counters each second; batches add to the
counters under a lock once per batch, so the cost stays far below a millisecond per second of run, plus a heap
trim when memory has grown (`memory.HeapKeeper`).
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from engine.memory import HEAP, rss_mb

MAX_SAMPLES = 1200  # a saved series keeps at most this many points (older ones are thinned out evenly)


class _Counters:
    """Rows and bytes read by this process's partitions, live (batches add to them as they pass)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows = 0
        self.bytes = 0

    def add(self, rows: int, nbytes: int) -> None:
        with self._lock:
            self.rows += rows
            self.bytes += nbytes

    def read(self) -> tuple[int, int]:
        with self._lock:
            return self.rows, self.bytes


LIVE = _Counters()
_stages: weakref.WeakSet[Any] = weakref.WeakSet()  # stage threads whose output queues the sampler measures


def watch_stage(stage: Any) -> None:
    """Have the sampler report how full `stage.out` (a bounded queue) is, under `stage.name`."""
    _stages.add(stage)


def queue_depths() -> dict[str, int]:
    depths: dict[str, int] = {}
    for stage in list(_stages):
        if stage.is_alive():
            depths[stage.name] = depths.get(stage.name, 0) + stage.out.qsize()
    return depths


def process_age() -> float | None:
    """Seconds since this process started, by the kernel's clock (interpreter start and imports included);
    None where there is no /proc. Ticks are 10 ms here: so is the precision."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError):
        return None
    started_ticks = int(stat.rsplit(b")", 1)[1].split()[19])  # field 22, `starttime`, in ticks since boot
    return max(uptime - started_ticks / os.sysconf("SC_CLK_TCK"), 0.0)


@dataclass
class PartitionMetrics:
    partition: int
    worker: str
    started: float  # epoch seconds
    ended: float
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    bytes: int
    retries: int
    phases: dict[str, float]

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def thin(points: list[Any], limit: int = MAX_SAMPLES) -> list[Any]:
    """At most `limit` points, evenly spread, keeping the first and the last."""
    if len(points) <= limit:
        return points
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


class Observer(Protocol):
    """Who watches a run: `start` once with its live metrics, then every event, then `stop`."""

    def start(self, metrics: RunMetrics) -> None: ...

    def event(self, event: dict[str, Any]) -> None: ...

    def stop(self) -> None: ...


@dataclass
class RunMetrics:
    job: str
    table: str
    run_id: str = ""
    started: float = field(default_factory=time.time)
    planned_rows: int = 0  # rows the plan expects in the partitions this invocation runs (an estimate)
    prior_rows: int = 0  # rows of partitions finished before this invocation
    partitions_total: int = 0
    partitions_done: int = 0
    partitions_in_flight: int = 0
    partitions_failed: int = 0
    retries: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    partitions: list[PartitionMetrics] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    rules: Counter[str] = field(default_factory=Counter)
    sampler_cpu_seconds: float = 0.0
    interval: float = 1.0
    listeners: list[Callable[[dict[str, Any]], None]] = field(default_factory=list, repr=False)
    _base: tuple[int, int] = (0, 0)
    _done: tuple[int, int] = (0, 0)  # rows and bytes of the partitions finished so far
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- live counters --------------------------------------------------------------------------------------
    def rows_and_bytes(self) -> tuple[int, int]:
        """Rows and bytes read by this invocation so far, finished partitions and those in flight (partitions
        running in other processes, on Dask workers, count once they finish)."""
        rows, nbytes = LIVE.read()
        return max(rows - self._base[0], self._done[0]), max(nbytes - self._base[1], self._done[1])

    def rates(self, window: float = 5.0) -> tuple[float, float]:
        """Rows/s and MB/s over the last `window` seconds (from the sampler's points and the counters now)."""
        rows, nbytes = self.rows_and_bytes()
        now = time.time() - self.started
        then = next((s for s in reversed(self.samples) if now - s["t"] >= window), None)
        t0, r0, b0 = (then["t"], then["rows"], then["bytes"]) if then else (0.0, 0, 0)
        dt = now - t0
        return (rows - r0) / dt if dt > 0 else 0.0, (nbytes - b0) / dt / 2**20 if dt > 0 else 0.0

    def emit(self, event: str, **fields: Any) -> None:
        record = {"ts": round(time.time(), 3), "run_id": self.run_id, "job": self.job, "table": self.table,
                  "event": event, **fields}
        for listener in self.listeners:
            listener(record)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = round(self.phases.get(name, 0.0) + time.perf_counter() - start, 3)

    def partition_started(self, partition: int) -> None:
        with self._lock:
            self.partitions_in_flight += 1
        self.emit("partition_started", partition=partition)

    def partition_failed(self, partition: int | None, error: str) -> None:
        with self._lock:
            self.partitions_in_flight -= 1
            self.partitions_failed += 1
        self.emit("partition_failed", partition=partition, error=error)

    def partition_retried(self, message: str) -> None:
        with self._lock:
            self.retries += 1
        self.emit("partition_retry", message=message)

    def partition_done(self, p: PartitionMetrics, failures: Counter[tuple[str, str]]) -> None:
        with self._lock:
            self.partitions_in_flight -= 1
            self.partitions_done += 1
            self.partitions.append(p)
            self._done = (self._done[0] + p.rows_read, self._done[1] + p.bytes)
            for (checks, _column), n in failures.items():
                for check in checks.split(", "):
                    self.rules[check] += n
        self.emit("partition_done", partition=p.partition, worker=p.worker, started=p.started, ended=p.ended,
                  counts={"rows_read": p.rows_read, "rows_loaded": p.rows_loaded,
                          "rows_quarantined": p.rows_quarantined, "bytes": p.bytes, "retries": p.retries},
                  durations={"seconds": round(p.seconds, 3), **{k: round(v, 3) for k, v in p.phases.items()}},
                  partitions_done=self.partitions_done, partitions_total=self.partitions_total)

    # -- the sampler ----------------------------------------------------------------------------------------
    def start_sampler(self) -> None:
        self._base = LIVE.read()
        self._thread = threading.Thread(target=self._sample_loop, name="metrics-sampler", daemon=True)
        self._thread.start()

    def stop_sampler(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()

    def sample(self) -> None:
        rows, nbytes = self.rows_and_bytes()
        self.samples.append({"t": round(time.time() - self.started, 2), "rows": rows, "bytes": nbytes,
                             "rss_mb": round(rss_mb(), 1), "queues": queue_depths(),
                             "in_flight": self.partitions_in_flight})

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
            HEAP.tick(self.samples[-1]["rss_mb"])  # the holes batches leave in the heap stay resident
            if len(self.samples) > 4 * MAX_SAMPLES:  # hours-long runs: keep memory flat
                self.samples[:] = thin(self.samples, 2 * MAX_SAMPLES)
        self.sampler_cpu_seconds = round(time.thread_time(), 4)

    # -- saved form -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        samples = thin(self.samples)
        for before, now in zip([None, *samples], samples, strict=False):
            dt = now["t"] - before["t"] if before else now["t"]
            now["rows_per_second"] = round((now["rows"] - (before["rows"] if before else 0)) / dt, 1) if dt > 0 else 0.0
            now["mb_per_second"] = (round((now["bytes"] - (before["bytes"] if before else 0)) / dt / 2**20, 3)
                                    if dt > 0 else 0.0)
        return {"started": self.started, "phases": dict(self.phases),
                "partitions": [{**asdict(p), "seconds": round(p.seconds, 3)} for p in self.partitions],
                "samples": samples, "rules": dict(self.rules.most_common()), "retries": self.retries,
                "partitions_failed": self.partitions_failed, "sampler_interval": self.interval,
                "sampler_cpu_seconds": self.sampler_cpu_seconds}

    def save(self, folder: Path, data: dict[str, Any] | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "metrics.json"
        path.write_text(json.dumps(data or self.to_dict(), default=str), encoding="utf-8")
        return path
