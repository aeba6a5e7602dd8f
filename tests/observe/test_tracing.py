"""Step 8: OpenTelemetry spans of a run (the `otel` extra), checked with the SDK's in-memory exporter."""

from __future__ import annotations

from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from engine.config import load_config
from engine.pipeline import run_job
from tests.observe.helpers import make_orders, orders_job

EXPORTER = InMemorySpanExporter()


def _provider() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)  # once per process; later calls are ignored with a warning


def test_a_run_is_traced(pg_source: str, pg_db: str, tmp_path: Path) -> None:
    _provider()
    EXPORTER.clear()
    make_orders(pg_source, 4000)
    report = run_job(load_config(orders_job(tmp_path, "otel1", pg_source, pg_db)))
    spans = EXPORTER.get_finished_spans()
    by_name = {s.name: s for s in spans}
    run, table = by_name["run otel1"], by_name['table "public"."orders"']
    assert run.parent is None and table.parent is not None and table.parent.span_id == run.context.span_id
    assert run.attributes is not None and run.attributes["engine.run_id"] == report.run_id
    assert run.attributes["cicd.pipeline.result"] == "success" and run.attributes["engine.rows_loaded"] == 3600
    partitions = [s for s in spans if s.name.startswith("partition ")]
    assert len(partitions) == 4
    for p in partitions:
        assert p.parent is not None and p.parent.span_id == table.context.span_id
        assert p.attributes is not None and p.attributes["engine.rows_read"] == 1000
        assert run.start_time is not None and p.start_time is not None and p.end_time is not None
        assert run.start_time <= p.start_time < p.end_time
        phases = [s for s in spans if s.parent is not None and s.parent.span_id == p.context.span_id]
        assert sorted(s.name for s in phases) == ["commit", "extract", "load", "transform", "validate"]
    assert len(spans) == 2 + 4 * 6
