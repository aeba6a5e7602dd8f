"""Named failpoints for fault-injection tests: `ENGINE_FAILPOINTS="name=action[@n],…"`.

Actions: `raise` (a transient error), `fatal` (a non-transient error), `exit` (the process dies at once,
like kill -9, with no cleanup), `sleep` (pauses 3 s: widens a window for concurrency tests), `wait` (explicit
synchronisation for tests: creates `<name>.<pid>.reached` in `ENGINE_FAILPOINTS_DIR`, then blocks until
`<name>.go` exists there; after 300 s it raises, so a test that never releases it fails instead of hanging),
`pause` (waits for the test: creates `<name>.paused` in `$ENGINE_FAILPOINTS_DIR` and carries on once the test
deletes it, so a test can restart a server at exactly that moment; see tests/reliability/harness.py `Paused`).
`@n` fires on the n-th time the point is reached in this process (default 1).
Unset in production: `hit` is then a dictionary lookup.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from engine.errors import EngineError, TransientError

POINTS = ("run.opened", "extract.batch", "transform.batch", "load.before_commit", "load.after_commit",
          "run.before_verify", "run.after_commit", "run.after_finish", "replace.before_swap", "db.opening",
          "db.pre-data", "db.index", "db.indexes", "db.sequences", "db.fk", "db.validate", "db.view", "db.trigger",
          "db.swap")

_counts: Counter[str] = Counter()
_lock = threading.Lock()


def _parse() -> dict[str, tuple[str, int]]:
    spec = os.environ.get("ENGINE_FAILPOINTS", "")
    points = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, action = item.partition("=")
        action, _, nth = action.partition("@")
        points[name] = (action or "raise", int(nth or 1))
    return points


def reset() -> None:
    """Forget hit counts (tests that set ENGINE_FAILPOINTS in-process call this)."""
    with _lock:
        _counts.clear()


def hit(name: str) -> None:
    if "ENGINE_FAILPOINTS" not in os.environ:
        return
    point = _parse().get(name)
    if point is None:
        return
    with _lock:
        _counts[name] += 1
        count = _counts[name]
    action, nth = point
    if count != nth:
        return
    if action == "exit":
        os._exit(137)
    if action == "sleep":
        time.sleep(3)
        return
    if action == "wait":
        _wait(name)
        return
    if action == "pause":
        _pause(name)
        return
    if action == "fatal":
        raise EngineError(f"failpoint {name} (fatal)")
    raise TransientError(f"failpoint {name}")


def _wait(name: str, timeout_s: float = 300.0) -> None:
    """Tell a test this point was reached (a file naming the process), then block until the test releases it."""
    folder = Path(os.environ.get("ENGINE_FAILPOINTS_DIR", "."))
    (folder / f"{name}.{os.getpid()}.reached").touch()
    go = folder / f"{name}.go"
    deadline = time.monotonic() + timeout_s
    while not go.exists():
        if time.monotonic() > deadline:
            raise EngineError(f"failpoint {name} (wait): {go} did not appear within {timeout_s:.0f} s")
        time.sleep(0.02)


def pause_file(name: str) -> Path:
    return Path(os.environ.get("ENGINE_FAILPOINTS_DIR") or tempfile.gettempdir()) / f"{name}.paused"


def _pause(name: str, timeout: float = 600.0) -> None:
    marker = pause_file(name)
    marker.write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout
    while marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
