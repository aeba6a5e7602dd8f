"""Freed heap pages go back to the system: the run's sampler trims glibc's heap when memory has grown."""

from __future__ import annotations

import ctypes
import platform
import time

import pytest

import engine  # noqa: F401  (importing the engine tunes the allocator)
from engine import memory, metrics
from engine.memory import rss_mb

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")

_libc = ctypes.CDLL(None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]


def _holes(megabytes: int) -> list[int]:
    """Leaves `megabytes` of freed, touched 1 MB chunks inside the heap, each between two live ones (so none
    joins the heap's top, which glibc gives back by itself). Returns the live ones."""
    blocks = []
    for _ in range(2 * megabytes):
        block = _libc.malloc(1 << 20)
        ctypes.memset(block, 1, 1 << 20)
        blocks.append(block)
    for block in blocks[::2]:
        _libc.free(block)
    return blocks[1::2]


def test_a_trim_gives_back_freed_pages_only_once_memory_has_grown() -> None:
    assert memory._libc is not None, "the engine's import should have tuned glibc's malloc"
    keeper = memory.HeapKeeper(step_mb=16)
    pins = _holes(64)
    try:
        before = rss_mb()
        keeper.tick(before)  # far above a level of 0: trims
        assert rss_mb() < before - 40, "the freed 64 MB should have left the resident set"
        assert keeper.level == pytest.approx(rss_mb(), abs=8)

        pins += _holes(64)
        grown = rss_mb()
        keeper.tick(keeper.level + 1)  # within the step: no trim, the holes stay resident
        assert rss_mb() > grown - 8
        keeper.tick(grown)
        assert rss_mb() < grown - 40
    finally:
        for pin in pins:
            _libc.free(pin)


def test_the_run_sampler_offers_every_sample_to_the_heap_keeper(monkeypatch: pytest.MonkeyPatch) -> None:
    offered: list[float] = []

    class Recorder:
        def tick(self, rss: float) -> None:
            offered.append(rss)

    monkeypatch.setattr(metrics, "HEAP", Recorder())
    run = metrics.RunMetrics("j", "t", interval=0.05)
    run.start_sampler()
    deadline = time.monotonic() + 30  # however busy the machine: three samples, then stop
    while len(offered) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    run.stop_sampler()
    assert len(offered) >= 3 and offered == [s["rss_mb"] for s in run.samples][:len(offered)]
