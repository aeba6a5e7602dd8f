"""Keep resident memory flat: glibc's malloc otherwise grows one arena per thread and keeps freed pages.

Partitions start fresh reader threads (ours and the driver's), and each new thread's arena kept the freed
batch memory of the partitions before it: RSS grew by a batch-sized step per partition. Two arenas keep RSS
at the working set; buffers up to 8 MB (a column of a default batch) are reused from the heap instead of being
mapped, faulted in and unmapped for every batch, which cost measurable kernel time. `mallopt` works at run
time, so no environment variable or re-exec is needed; on other C libraries this is a no-op.
"""

from __future__ import annotations

import ctypes
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_tuned = False


def tune_allocator() -> None:
    global _tuned
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
    except (OSError, AttributeError):
        pass
