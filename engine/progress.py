"""How a run shows itself while it runs: a live display on a terminal (rich), plain timestamped lines
elsewhere (at most one status line every few seconds), JSON lines for log aggregators, or nothing.

Each form is an `engine.metrics.Observer`: it gets the run's live metrics once and then every event. Every
line passes `engine.urls.redact` before it is written.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

from engine.metrics import Observer, RunMetrics
from engine.urls import redact


def event_line(event: dict[str, Any]) -> str | None:
    """One human line for an event, or None for events that only matter to machines."""
    kind = event["event"]
    if kind in ("message", "partition_retry"):
        return str(event["message"])
    if kind == "partition_done":
        c, d = event["counts"], event["durations"]
        total = event["partitions_total"]
        retried = f", {c['retries'] + 1} attempts" if c["retries"] else ""
        return (f"[{event['partitions_done']:>{len(str(total))}}/{total}] partition {event['partition']}: "
                f"{c['rows_read']:,} rows read, {c['rows_loaded']:,} loaded, {c['rows_quarantined']:,} quarantined "
                f"in {d['seconds']:.1f}s{retried}")
    if kind == "partition_failed":
        return f"partition {event['partition']} failed: {event['error']}"
    return None


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def status(m: RunMetrics) -> dict[str, Any]:
    """Where the run stands now: rows done of planned, recent rates, partitions, ETA."""
    rows, nbytes = m.rows_and_bytes()
    rps, mbps = m.rates()
    remaining = max(m.planned_rows - rows, 0)
    return {"rows_done": rows + m.prior_rows, "rows_planned": m.planned_rows + m.prior_rows, "bytes": nbytes,
            "rows_per_second": round(rps, 1), "mb_per_second": round(mbps, 2),
            "partitions_done": m.partitions_done, "partitions_total": m.partitions_total,
            "partitions_in_flight": m.partitions_in_flight, "partitions_failed": m.partitions_failed,
            "retries": m.retries, "eta_seconds": round(remaining / rps, 1) if rps > 0 else None}


def status_line(m: RunMetrics) -> str:
    s = status(m)
    pct = f" ({s['rows_done'] / s['rows_planned']:.0%})" if s["rows_planned"] else ""
    return (f"{m.table}: {s['rows_done']:,}/{s['rows_planned']:,} rows{pct}, {s['rows_per_second']:,.0f} rows/s, "
            f"{s['mb_per_second']:.1f} MB/s; partitions {s['partitions_done']}/{s['partitions_total']} done, "
            f"{s['partitions_in_flight']} in flight, {s['partitions_failed']} failed, {s['retries']} retried; "
            f"ETA {_eta(s['eta_seconds'])}")


class _Ticker:
    """Calls `tick` every `every` seconds until stopped."""

    def __init__(self, every: float, tick: Any) -> None:
        self.every, self.tick = every, tick
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def _loop(self, done: threading.Event) -> None:
        while not done.wait(self.every):
            self.tick()

    def start(self) -> None:
        """Start ticking; again after `stop` too (a run resumed within one invocation starts its observer again),
        with an event of its own, so a thread that has not noticed the last stop yet cannot tick on."""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, args=(self.done,), name="progress", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        if self.thread is not None and self.thread.is_alive():
            self.thread.join(timeout=5)


class PlainProgress:
    """Timestamped lines: messages, retries and failures as they happen; a status line every `every` seconds."""

    def __init__(self, stream: TextIO, every: float = 5.0) -> None:
        self.stream, self.lock = stream, threading.Lock()
        self.metrics: RunMetrics | None = None
        self.ticker = _Ticker(every, self._tick)

    def _write(self, text: str) -> None:
        with self.lock:
            print(f"{time.strftime('%H:%M:%S')} {redact(text)}", file=self.stream, flush=True)

    def start(self, metrics: RunMetrics) -> None:
        self.metrics = metrics
        self.ticker.start()

    def _tick(self) -> None:
        if self.metrics is not None and self.metrics.run_id:
            self._write(status_line(self.metrics))

    def event(self, event: dict[str, Any]) -> None:
        if event["event"] in ("message", "partition_retry", "partition_failed"):
            self._write(event_line(event) or "")
        elif event["event"] == "run_finished":
            self._tick()

    def stop(self) -> None:
        self.ticker.stop()


class JsonProgress:
    """One JSON object per line: every event, and a `progress` event every `every` seconds."""

    def __init__(self, stream: TextIO, every: float = 5.0) -> None:
        self.stream, self.lock = stream, threading.Lock()
        self.metrics: RunMetrics | None = None
        self.ticker = _Ticker(every, self._tick)

    def _write(self, record: dict[str, Any]) -> None:
        line = redact(json.dumps(record, default=str))
        with self.lock:
            print(line, file=self.stream, flush=True)

    def start(self, metrics: RunMetrics) -> None:
        self.metrics = metrics
        self.ticker.start()

    def _tick(self) -> None:
        m = self.metrics
        if m is not None and m.run_id:
            self._write({"ts": round(time.time(), 3), "run_id": m.run_id, "job": m.job, "table": m.table,
                         "partition": None, "event": "progress", "counts": status(m)})

    def event(self, event: dict[str, Any]) -> None:
        if event["event"] == "run_finished":
            self._tick()  # where it ended, however short the run
        self._write({"partition": None, **event})

    def stop(self) -> None:
        self.ticker.stop()


class QuietProgress:
    def start(self, metrics: RunMetrics) -> None:
        pass

    def event(self, event: dict[str, Any]) -> None:
        pass

    def stop(self) -> None:
        pass


class LiveProgress:
    """The live display on a terminal (rich): rows done of planned with a bar, recent rows/s and MB/s,
    partitions done / in flight / failed / retried, ETA; messages scroll above it. Redrawn 4 times a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live: Any = None

    def start(self, metrics: RunMetrics) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.stream, force_terminal=True)
        self.live = Live(_LiveView(metrics), console=console, refresh_per_second=4)
        self.live.start()

    def event(self, event: dict[str, Any]) -> None:
        text = event_line(event)
        if text is not None and self.live is not None:
            self.live.console.print(f"{time.strftime('%H:%M:%S')} {redact(text)}", markup=False, highlight=False)

    def stop(self) -> None:
        if self.live is not None:
            self.live.refresh()
            self.live.stop()


class _LiveView:
    def __init__(self, metrics: RunMetrics) -> None:
        self.metrics = metrics

    def __rich__(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        m, s = self.metrics, status(self.metrics)
        planned = max(s["rows_planned"], s["rows_done"], 1)
        grid = Table.grid(padding=(0, 2))
        grid.add_row(Text(f"{m.job} -> {m.table}", style="bold"), Text(f"run {m.run_id or '(planning)'}"))
        grid.add_row(ProgressBar(total=planned, completed=s["rows_done"], width=40),
                     Text(f"{s['rows_done']:,} / {s['rows_planned']:,} rows ({s['rows_done'] / planned:.0%})"))
        grid.add_row(Text(f"{s['rows_per_second']:,.0f} rows/s  {s['mb_per_second']:.1f} MB/s"),
                     Text(f"ETA {_eta(s['eta_seconds'])}"))
        grid.add_row(Text(f"partitions {s['partitions_done']}/{s['partitions_total']} done"),
                     Text(f"{s['partitions_in_flight']} in flight, {s['partitions_failed']} failed, "
                          f"{s['retries']} retried"))
        return grid


def progress_observer(log_format: str = "text", quiet: bool = False, stream: TextIO | None = None) -> Observer:
    """The observer for a command line: live on a terminal, plain lines elsewhere, JSON lines, or quiet."""
    out = stream or sys.stderr
    if quiet:
        return QuietProgress()
    if log_format == "json":
        return JsonProgress(out)
    if out.isatty():
        return LiveProgress(out)
    return PlainProgress(out)
