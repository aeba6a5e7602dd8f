"""Uniqueness across a whole run: a memory-bounded index of 64-bit key hashes, shared by the run's partitions.

Each key is kept as its 64-bit hash (8 bytes a key: 80 MB at 10M keys) in sorted runs of up to `RUN_CAP` keys,
merged as a binary counter merges (two runs of about one size become one), so a key is copied a few times, not
once a partition. In front of the runs sits a one-bit-per-slot filter over the hashes' top bits (at most
`FILTER_BITS`, 16 MB): a key whose slot is clear was never added, so most of a batch's new keys are settled by
one lookup, and only the rest are searched for in the runs. A partition's keys stay apart (`pending`) until it
commits: a retried partition drops its failed attempt's keys, so its rows are not mistaken for duplicates of
themselves, while the partitions in flight still see each other's keys. Two distinct keys share a hash with
probability about n²/2⁶⁵ (3 in a million at 10M keys): such a row would be reported as a duplicate.

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
import pyarrow as pa

RUN_CAP = 1 << 21
BITMAP_CAP = 1 << 24  # bits (2 MB) a partition's range may span to be kept as a bitmap
FILTER_BITS = 1 << 27  # the largest filter: 16 MB, about 7% of its slots set at 10M keys


class KeySet(Protocol):
    def __len__(self) -> int: ...
    def found(self, keys: pl.Expr) -> pl.Expr: ...
    def add(self, keys: pl.Series) -> None: ...


class SortedRuns:
    def __init__(self) -> None:
        self.runs: list[pl.Series] = []  # each sorted, larger ones first

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    def found(self, hashes: pl.Expr) -> pl.Expr:
        """True where the hash is in a run (by binary search), as one expression: one query for all runs."""
        hits = [pl.lit(run).gather(pl.lit(run).search_sorted(hashes.fill_null(0)).clip(0, len(run) - 1)) == hashes
                for run in self.runs]
        return pl.any_horizontal(hits).fill_null(False) if hits else hashes.is_in([]).fill_null(False)

    def add(self, hashes: pl.Series) -> None:
        if len(hashes):
            self.runs.append(hashes.sort())
        while (len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1])
               and len(self.runs[-2]) + len(self.runs[-1]) <= RUN_CAP):
            last, before = self.runs.pop(), self.runs.pop()
            self.runs.append(pl.DataFrame({"h": before}).merge_sorted(pl.DataFrame({"h": last}), key="h")
                             .to_series())


class Bitmap:
    """The keys of one partition that is a closed range of an integer key, as offsets from its low end."""

    def __init__(self, span: int) -> None:  # zeroed bytes as Arrow booleans: made without a Polars query
        zeros = pa.Array.from_buffers(pa.bool_(), span, [None, pa.py_buffer(bytes((span + 7) // 8))])
        self.bits = pl.Series(zeros)

    def __len__(self) -> int:
        return int(self.bits.sum())

    def contains(self, offsets: pl.Series) -> pl.Series:
        return self.bits.gather(offsets).fill_null(False)

    def found(self, offsets: pl.Expr) -> pl.Expr:
        return pl.lit(self.bits).gather(offsets).fill_null(False)

    def add(self, offsets: pl.Series) -> None:
        if len(offsets):
            self.bits.scatter(offsets, True)  # in place

    def added_if_new(self, offsets: pl.Series) -> bool:
        """Adds the offsets if, as a key range read in order usually gives them, they rise strictly (so no two
        are alike) and none was added before: a few passes over the batch, no hashing."""
        n = len(offsets)
        if offsets.null_count() or not (offsets.slice(1) > offsets.slice(0, n - 1)).all():
            return False
        if self.bits.gather(offsets).any():
            return False
        self.add(offsets)
        return True


class HashIndex:
    def __init__(self, local: bool = False, expected_keys: int = 0) -> None:
        self.committed = SortedRuns()
        # about 8 slots a key; a local index searches no runs and needs none
        width = 0 if local else min(FILTER_BITS, max(1 << 16, 8 * expected_keys)).bit_length() - 1
        self.filter, self.shift = Bitmap(1 << width), 64 - width
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
        """Keys committed before the run (target scope) or before a resume: added as if committed."""
        hashes = hashes.cast(pl.UInt64).drop_nulls()
        with self.lock:
            self.committed.add(hashes)
            self.filter.add(self._slots(hashes))

    def seeded_all(self) -> None:
        self.seeded = True

    def check_and_add(self, hashes: pl.Series, partition: int, keys: Callable[[], KeySet] = SortedRuns) -> pl.Series:
        """True where the hash was seen before (earlier in this batch, in an earlier batch or another partition);
        null hashes (a key with a NULL) are never duplicates and are not remembered. A local index may be given
        other `keys` than hashes (a partition's `Bitmap` of key offsets): `keys` makes the partition's set."""
        with self.lock:
            own = self.pending.get(partition)
            if own is None:
                own = self.pending[partition] = keys()
            if isinstance(own, Bitmap) and own.added_if_new(hashes):
                return pl.repeat(False, len(hashes), eager=True)
            k = pl.col("k")  # one query a batch: on a busy machine each one waits for Polars' threads
            seen = own.found(k) if self.local else pl.lit(self._seen(hashes))
            flags = pl.DataFrame({"k": hashes}).with_columns(
                dup=(seen | k.is_first_distinct().not_()) & k.is_not_null())
            fresh = flags.get_column("k").filter(~flags.get_column("dup") & flags.get_column("k").is_not_null())
            own.add(fresh)
            if not self.local:
                self.filter.add(self._slots(fresh))
        return flags.get_column("dup")

    def _slots(self, hashes: pl.Series) -> pl.Series:
        return (hashes // (1 << self.shift)).cast(pl.UInt32)

    def _seen(self, hashes: pl.Series) -> pl.Series:
        """Searched for in the runs only where the filter's slot is set (a clear slot: never added)."""
        maybe = self.filter.contains(self._slots(hashes))
        at = maybe.arg_true()
        seen = pl.repeat(False, len(hashes), eager=True)
        if len(at):
            candidates = pl.lit(hashes.gather(at))
            every = [self.committed, *self.pending.values()]  # a shared index's keys are all hashes in runs
            found = [r.found(candidates) for r in every if isinstance(r, SortedRuns) and r.runs]
            if found:
                seen.scatter(at, pl.select(pl.any_horizontal(found)).to_series())
        return seen


_indexes: dict[tuple[str, str], HashIndex] = {}
_indexes_lock = threading.Lock()


def index_for(run_id: str, rule: str, local: bool = False, expected_keys: int = 0) -> HashIndex:
    """The run's index for `rule`, made by the first caller's word: `local` (see above), sized for about
    `expected_keys`."""
    with _indexes_lock:
        index = _indexes.get((run_id, rule))
        if index is None:
            index = _indexes[(run_id, rule)] = HashIndex(local, expected_keys)
        return index


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
