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
from collections.abc import Callable

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_tuned = False
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


class HeapKeeper:
    """Gives freed heap pages back whenever resident memory has grown by `step_mb` since it last did (so a run
    whose memory holds still costs nothing; a trim is about 4 ms of CPU)."""

    def __init__(self, rss_mb: Callable[[], float], step_mb: float = 8.0) -> None:
        self.rss_mb, self.step_mb = rss_mb, step_mb
        self.level = 0.0  # resident memory after the last trim

    def tick(self, rss: float) -> None:
        if _libc is not None and rss >= self.level + self.step_mb:
            _libc.malloc_trim(0)
            self.level = self.rss_mb()
