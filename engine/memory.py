"""Keep resident memory flat: glibc's malloc otherwise grows one arena per thread and keeps freed pages.

Partitions start fresh reader threads (ours and the driver's), and each new thread's arena kept the freed
batch memory of the partitions before it: RSS grew by a batch-sized step per partition. Two arenas keep RSS
at the working set; buffers up to 8 MB (a column of a default batch) are reused from the heap instead of being
mapped, faulted in and unmapped for every batch, which cost measurable kernel time. `mallopt` works at run
time, so no environment variable or re-exec is needed; on other C libraries this is a no-op.

Pages freed in the middle of a heap stay resident until `malloc_trim` gives them back: batches of different
sizes, freed in another order than made, leave such holes, tens of MB of them when Polars' work interleaves
with the readers'. The run's 1 s sampler asks a `HeapKeeper` to trim whenever memory has grown since its last
trim.
"""

from __future__ import annotations

import ctypes
import os
import threading

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_tuned = False
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_libc: ctypes.CDLL | None = None


def tune_allocator() -> None:
    global _tuned, _libc
    if _tuned or os.environ.get("ENGINE_KEEP_MALLOC"):
        return
    _tuned = True
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # one allocator to tune, not three
    try:
        # The C library is already loaded: look `mallopt` up in the process (ctypes.util.find_library would
        # import a dozen modules and run `ldconfig -p`, ≈35 ms of every start).
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_ARENA_MAX, 2)
        libc.mallopt(_M_MMAP_THRESHOLD, 8 << 20)  # batch-sized buffers reuse heap pages
        libc.mallopt(_M_TRIM_THRESHOLD, 8 << 20)
        _libc = libc if hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError):
        pass


def rss_mb() -> float:
    """Resident memory of this process now: one read of /proc/self/statm (psutil where there is no /proc)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except OSError:
        import psutil

        return float(psutil.Process().memory_info().rss) / 2**20


class HeapKeeper:
    """Gives freed heap pages back whenever resident memory has grown by `step_mb` since it last did (so a run
    whose memory holds still costs nothing). One for the process (`HEAP`): the heap is the process's, however many
    runs sample it side by side."""

    def __init__(self, step_mb: float = 8.0) -> None:
        self.step_mb = step_mb
        self.level = 0.0  # resident memory after the last trim
        self._lock = threading.Lock()

    def tick(self, rss: float) -> None:
        """`rss`: resident MB as just sampled."""
        if _libc is None or rss < self.level + self.step_mb:
            return
        with self._lock:
            if rss >= self.level + self.step_mb:  # not trimmed meanwhile by another run's sampler
                _libc.malloc_trim(0)
                self.level = rss_mb()


HEAP = HeapKeeper()
