"""Keep resident memory flat: glibc's malloc otherwise grows one arena per thread and keeps freed pages.

Partitions start fresh reader threads (ours and the driver's), and each new thread's arena kept the freed
batch memory of the partitions before it: RSS grew by a batch-sized step per partition. Two arenas and
eager trimming keep RSS at the working set. `mallopt` works at run time, so no environment variable or
re-exec is needed; on other C libraries this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_ARENA_MAX, 2)
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)  # big buffers come from mmap and go back on free
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        pass
