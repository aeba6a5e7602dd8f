"""OpenTelemetry traces of a run (the optional `otel` extra): a span per run, per table, per partition and
per phase of a partition, with the engine's counts as attributes. Spans go to whatever tracer provider the
application set up; without opentelemetry installed there are none and this costs nothing.

Spans are built from the run's events (`engine.metrics`), with the times the run measured, in the process
that runs the job (partitions on Dask workers included). A partition's stages overlap (extract, transform and
load run on their own threads), so its phase spans start with the partition and last as long as the phase's
summed time (`engine.phase.cumulative` says so).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.model import PHASES

try:
    from opentelemetry import trace
except ImportError:  # the extra is not installed
    trace = None  # type: ignore[assignment]


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class RunTrace:
    """Turns a run's events into spans."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self.run: Any = None
        self.table: Any = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "run_started":
            attrs = {"engine.job": event["job"], "engine.run_id": event["run_id"], "engine.resumed": event["resumed"]}
            start = _ns(event["started"])
            self.run = self.tracer.start_span(f"run {event['job']}", attributes=attrs, start_time=start)
            context = trace.set_span_in_context(self.run)
            self.table = self.tracer.start_span(f"table {event['table']}", context=context, start_time=start,
                                                attributes={**attrs, "engine.table": event["table"]})
        elif kind == "partition_done" and self.table is not None:
            self._partition(event)
        elif kind == "run_finished" and self.run is not None:
            ok = event["status"] == "succeeded"
            for span in (self.table, self.run):
                span.set_attributes({f"engine.{k}": v for k, v in event["counts"].items()})
                span.set_attribute("cicd.pipeline.result", "success" if ok else "failure")
                if not ok:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, str(event.get("error") or "")))
                span.end(end_time=_ns(event["ts"]))
            self.run = self.table = None

    def _partition(self, event: dict[str, Any]) -> None:
        durations, counts = event["durations"], event["counts"]
        start = event["started"]
        span = self.tracer.start_span(
            f"partition {event['partition']}", context=trace.set_span_in_context(self.table), start_time=_ns(start),
            attributes={"engine.job": event["job"], "engine.run_id": event["run_id"], "engine.table": event["table"],
                        "engine.partition": event["partition"], "engine.worker": event["worker"],
                        **{f"engine.{k}": v for k, v in counts.items()}})
        context = trace.set_span_in_context(span)
        for phase in PHASES:
            seconds = float(durations.get(phase, 0.0))
            child = self.tracer.start_span(phase, context=context, start_time=_ns(start),
                                           attributes={"engine.phase": phase, "engine.phase.cumulative": True})
            child.end(end_time=_ns(start + seconds))
        span.end(end_time=_ns(event["ended"]))


def listener() -> Callable[[dict[str, Any]], None] | None:
    """An event listener making the run's spans, or None without opentelemetry."""
    if trace is None:
        return None
    return RunTrace(trace.get_tracer("engine"))
