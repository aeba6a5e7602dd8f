"""Long runs heal themselves: transient failures are retried, and a server that is down is waited for.

`with_retries` runs an action (a partition, a connect, the run's finish) and, on a transient failure, first
looks at the servers the action talks to. While one of them is down (refused, restarting, shutting down) it
waits with exponential backoff and jitter, saying so each time, for up to `pipeline.reconnect_for`; a failure
that an outage explains costs no attempt. Failures against servers that answer are retried `pipeline.retries`
times. Each attempt starts over (a partition redoes its transaction; the server rolled back the lost one).
"""

from __future__ import annotations

import bisect
import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from engine import pg
from engine.errors import EngineError, SnapshotLost, TransientError
from engine.source import Snapshot, unreachable
from engine.urls import DatabaseUrl, redact

T = TypeVar("T")
Say = Callable[[str], None]

MAX_PAUSE = 30.0  # seconds: the longest single wait between two looks at a server that is down
STAYED_DOWN = "stayed unreachable for"
# Seconds a server that does not answer before a run has opened is looked for: more likely a mistake in the job
# (a wrong port) than an outage, but long enough for a restart's gap. Once a run is open, `reconnect_for` holds.
START_GRACE = 5.0


def outlasted_patience(exc: BaseException) -> bool:
    """Whether `exc` ends a wait for a server that stayed down for all of `reconnect_for` (not to be waited again)."""
    return STAYED_DOWN in str(exc)


@dataclass(frozen=True)
class Patience:
    """How hard to try: `retries` attempts after the first against servers that answer, and `reconnect_for`
    seconds of waiting for each outage of `servers`."""

    retries: int
    reconnect_for: float = 0.0
    servers: Sequence[DatabaseUrl] = ()
    base_delay: float = 0.5


def at_start(patience: Patience) -> Patience:
    """`patience` for servers not yet heard from: `START_GRACE` seconds of looking, not all of `reconnect_for`."""
    return dataclasses.replace(patience, reconnect_for=min(START_GRACE, patience.reconnect_for))


def wait_for_servers(patience: Patience, what: str, say: Say | None) -> float:
    """Wait until every server of `patience` answers; how long that took (0: none was down). Raises a
    TransientError naming the server once one stayed down for `reconnect_for`."""
    started = time.monotonic()
    delay = patience.base_delay
    was_down = False
    while True:
        down = [(url, why) for url in patience.servers if (why := unreachable(url)) is not None]
        waited = time.monotonic() - started
        if not down:
            if was_down and say:
                say(f"{what}: {', '.join(str(u) for u in patience.servers)} answering again after {waited:.1f}s")
            return waited if was_down else 0.0
        was_down = True
        url, why = down[0]
        if waited >= patience.reconnect_for:
            raise TransientError(f"{what}: {url} {STAYED_DOWN} {waited:.0f}s "
                                 f"(pipeline.reconnect_for = {patience.reconnect_for:g}s): {why}")
        pause = min(delay * (0.5 + random.random()), MAX_PAUSE, patience.reconnect_for - waited)
        if say:
            say(f"{what}: {url} is unreachable ({why}); waiting {pause:.1f}s "
                f"({waited:.0f}s of pipeline.reconnect_for = {patience.reconnect_for:g}s)")
        time.sleep(max(pause, 0.05))
        delay *= 2


def with_retries(action: Callable[[], T], what: str, patience: Patience, say: Say | None = None) -> T:
    """Run `action`, retrying transient failures: outages are waited for, other failures retried with
    exponential backoff and jitter; then the last error, saying what was being done and how often it was tried."""
    failed = 0
    attempts = 0
    while True:
        attempts += 1
        try:
            return action()
        except Exception as exc:
            if not pg.is_transient(exc):
                if not pg.is_driver_error(exc):
                    raise
                raise pg.translate(exc, what) from None
            error = exc if isinstance(exc, EngineError) else pg.translate(exc, what)
            if patience.servers and wait_for_servers(patience, what, say):
                continue  # the servers were down: an outage, not a failed attempt
            if failed == patience.retries:
                suffix = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
                named = str(error) if str(error).startswith(what) else f"{what}: {error}"
                raise type(error)(f"{named}{suffix}") from None
            delay = patience.base_delay * 2**failed * (0.5 + random.random())
            failed += 1
            if say:
                say(f"{what}: {redact(str(exc).splitlines()[0])}; retry {failed}/{patience.retries} in {delay:.1f}s")
            time.sleep(delay)


class SnapshotKeeper:
    """The run's source snapshot over the run: which partitions were read as of which snapshot, and why it
    changed. A lost snapshot is taken again (`source.snapshot = "retake"`) or fails the run ("strict")."""

    def __init__(self, snapshot: Snapshot | None, strict: bool, patience: Patience, why: str,
                 say: Say | None) -> None:
        self.snapshot, self.strict, self.patience, self.say = snapshot, strict, patience, say
        self.history: list[dict[str, Any]] = []
        if snapshot is not None:
            self._began(why)

    @property
    def current(self) -> str | None:
        return self.snapshot.id if self.snapshot is not None else None

    def _began(self, why: str) -> None:
        assert self.snapshot is not None
        taken = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.snapshot.taken_at))
        self.history.append({"snapshot": self.snapshot.id, "taken_at": taken, "why": why, "partitions": []})

    def read(self, partition_id: int, snapshot_id: str | None) -> None:
        """Partition `partition_id` was read (and committed) as of `snapshot_id`."""
        for entry in self.history:
            if entry["snapshot"] == snapshot_id:
                bisect.insort(entry["partitions"], partition_id)  # a run can have 100,000 partitions
                break

    def check(self, doing: str) -> None:
        """Before work that reads as of the snapshot (verification): retake it now if its session is gone."""
        if self.snapshot is not None and (reason := self.snapshot.lost()) is not None:
            self.lost(self.snapshot.id, reason, doing)

    def lost(self, failed: str | None, cause: str, doing: str) -> None:
        """A read as of snapshot `failed` found it gone: take a new one (once per loss), or fail if strict."""
        if self.snapshot is None or failed != self.snapshot.id:
            return  # no snapshot, or already retaken since that read began
        old = self.snapshot.id
        reason = self.snapshot.lost() or cause
        if self.strict:
            raise SnapshotLost(
                f"{doing}: the source snapshot {old} was lost ({reason}); source.snapshot = \"strict\" reads every "
                "partition as of one snapshot, so the run stops here; committed partitions are kept: rerun to "
                "resume (the unfinished partitions are then read as of a new snapshot), or rerun with --fresh to "
                "read everything as of one")
        if self.say:
            self.say(f"the source snapshot {old} was lost while {doing} ({reason}); taking a new one")
        source_only = Patience(self.patience.retries, self.patience.reconnect_for, (self.snapshot.url,))
        with_retries(self.snapshot.take, "taking a new source snapshot", source_only, self.say)
        self._began(f"retaken: snapshot {old} was lost while {doing} ({reason})")
        if self.say:
            self.say(f"unfinished partitions are now read as of snapshot {self.snapshot.id}")
