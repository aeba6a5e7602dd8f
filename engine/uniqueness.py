"""Uniqueness across a whole run: a memory-bounded index of 64-bit key hashes, shared by the run's partitions.

Each key is kept as its 64-bit hash (8 bytes a key: 80 MB at 10M keys) in sorted runs of up to `RUN_CAP` keys
(new keys merge into the last run, so a merge never copies more than that), and a batch is checked by binary
search in each run: five runs at 10M keys. A partition's keys stay apart (`pending`) until it commits: a retried
partition drops its failed attempt's keys, so its rows are not mistaken for duplicates of themselves, while the
partitions in flight still see each other's keys. Two distinct keys share a hash with probability about n²/2⁶⁵
(3 in a million at 10M keys): such a row would be reported as a duplicate.

When the partitions split the source on the rule's own columns (a key or keyset range over a column the rule
includes), two partitions never share a key: the index is `local`, each partition checks only its own keys and
forgets them when it commits, so memory follows a partition's size instead of the job's. A local partition that
is a closed range of one integer key keeps its keys as bits over that range (`Bitmap`): no hashing, no search.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import polars as pl

RUN_CAP = 1 << 21
BITMAP_CAP = 1 << 24  # bits (2 MB) a partition's range may span to be kept as a bitmap


class KeySet(Protocol):
    def __len__(self) -> int: ...
    def contains(self, keys: pl.Series) -> pl.Series: ...
    def add(self, keys: pl.Series) -> None: ...


class SortedRuns:
    def __init__(self) -> None:
        self.runs: list[pl.Series] = []  # each sorted; all but the last hold RUN_CAP keys or nearly

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    def contains(self, hashes: pl.Series) -> pl.Series:
        seen = pl.repeat(False, len(hashes), eager=True)
        probe = hashes.fill_null(0)
        for run in self.runs:
            at = run.search_sorted(probe).clip(0, len(run) - 1)
            seen = seen | (run.gather(at) == hashes).fill_null(False)
        return seen

    def add(self, hashes: pl.Series) -> None:
        """Merged into the open (last) run while it stays under RUN_CAP: few runs, so few searches a batch."""
        run = hashes.sort()
        if self.runs and len(self.runs[-1]) + len(run) <= RUN_CAP:
            run = pl.DataFrame({"h": self.runs.pop()}).merge_sorted(pl.DataFrame({"h": run}), key="h").to_series()
        if len(run):
            self.runs.append(run)


class Bitmap:
    """The keys of one partition that is a closed range of an integer key, as offsets from its low end."""

    def __init__(self, span: int) -> None:
        self.bits = pl.repeat(False, span, eager=True, dtype=pl.Boolean)

    def __len__(self) -> int:
        return int(self.bits.sum())

    def contains(self, offsets: pl.Series) -> pl.Series:
        return self.bits.gather(offsets).fill_null(False)

    def add(self, offsets: pl.Series) -> None:
        if len(offsets):
            self.bits.scatter(offsets, True)  # in place


class HashIndex:
    def __init__(self, local: bool = False) -> None:
        self.committed = SortedRuns()
        self.pending: dict[int, KeySet] = {}  # partition -> keys of its attempt in flight
        self.lock = threading.Lock()
        self.local = local
        self.seeded = local  # a local index has nothing to learn from earlier partitions

    def __len__(self) -> int:
        return len(self.committed) + sum(len(p) for p in self.pending.values())

    def forget(self, partition: int) -> None:
        """A new attempt of `partition`: the keys of the last one (never committed) are dropped."""
        with self.lock:
            self.pending.pop(partition, None)

    def committed_partition(self, partition: int) -> None:
        with self.lock:
            runs = self.pending.pop(partition, None)
            for run in runs.runs if isinstance(runs, SortedRuns) and not self.local else []:
                self.committed.add(run)

    def seed(self, hashes: pl.Series) -> None:
        with self.lock:
            for start in range(0, len(hashes), RUN_CAP):
                self.committed.add(hashes.slice(start, RUN_CAP).cast(pl.UInt64))
            self.seeded = True

    def check_and_add(self, hashes: pl.Series, partition: int, keys: Callable[[], KeySet] = SortedRuns) -> pl.Series:
        """True where the hash was seen before (earlier in this batch, in an earlier batch or another partition);
        null hashes (a key with a NULL) are never duplicates and are not remembered. A local index may be given
        other `keys` than hashes (a partition's `Bitmap` of key offsets): `keys` makes the partition's set."""
        within = ~hashes.is_first_distinct()
        with self.lock:
            own = self.pending.setdefault(partition, keys())
            others = [own] if self.local else [self.committed, *self.pending.values()]
            seen = others[0].contains(hashes)
            for runs in others[1:]:
                seen = seen | runs.contains(hashes)
            own.add(hashes.filter(~seen & ~within & hashes.is_not_null()))
        return (seen | within) & hashes.is_not_null()


_indexes: dict[tuple[str, str], HashIndex] = {}
_indexes_lock = threading.Lock()


def index_for(run_id: str, rule: str, local: bool = False) -> HashIndex:
    """The run's index for `rule`, made `local` (see above) by the first caller's word."""
    with _indexes_lock:
        return _indexes.setdefault((run_id, rule), HashIndex(local))


def committed(run_id: str, partition: int) -> None:
    """The partition committed: its keys join every index of the run for good."""
    with _indexes_lock:
        indexes = [ix for (run, _), ix in _indexes.items() if run == run_id]
    for index in indexes:
        index.committed_partition(partition)


def drop_run(run_id: str) -> None:
    """Free a finished run's indexes."""
    with _indexes_lock:
        for key in [k for k in _indexes if k[0] == run_id]:
            del _indexes[key]
