"""Stage threads joined by bounded queues: how a partition's extract, transform/validate and load overlap.

Memory stays bounded by the queue depth times the batch size. An error in a stage travels down the queues
and is raised again in the consumer; `stop` ends every stage when the consumer gives up.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from engine.metrics import watch_stage

_END = object()


class Stage(threading.Thread):
    """Pulls from `source`, pushes into a bounded queue, stops on `stop`."""

    def __init__(self, name: str, source: Iterator[Any], out: queue.Queue[Any], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.source, self.out, self.stop = source, out, stop
        self.error: BaseException | None = None
        watch_stage(self)  # the run's sampler reports how full `out` is

    def run(self) -> None:
        try:
            for item in self.source:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, re-raised there
            self.error = exc
        self._put(_END)

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def drain(q: queue.Queue[Any], stage: Stage, waited: list[float]) -> Iterator[Any]:
    """The items `stage` puts into `q`, adding the time spent waiting for them to `waited[0]`."""
    while True:
        start = time.perf_counter()
        item = q.get()
        waited[0] += time.perf_counter() - start
        if item is _END:
            if stage.error is not None:
                raise stage.error
            return
        yield item


def remember_error(source: Iterator[Any], box: list[BaseException]) -> Iterator[Any]:
    """The loader sees our errors wrapped in driver errors: keep the original to re-raise it."""
    try:
        yield from source
    except BaseException as exc:
        box.append(exc)
        raise


def timed(source: Iterator[Any], phases: dict[str, float], phase: str) -> Iterator[Any]:
    """`source`, adding the time spent producing each item to `phases[phase]`."""
    while True:
        start = time.perf_counter()
        try:
            item = next(source)
        except StopIteration:
            return
        finally:
            phases[phase] += time.perf_counter() - start
        yield item
