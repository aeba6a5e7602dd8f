"""Uniqueness across a whole run: a memory-bounded index of 64-bit key hashes, shared by the run's partitions.

Each key is kept as its 64-bit hash in sorted runs, merged as a binary counter merges (two runs of about one size
become one), so a key is copied a few times, not once a partition. Runs of the keys of committed partitions that
grow past half of `RUN_CAP` are written to files of their own in the run's staging folder (`SpilledRun`, 8 bytes a
key on disk), and merge on disk the same way, a chunk at a time: about log2(keys / RUN_CAP) files, of which memory
holds one hash in 512. In front of the runs sits a Bloom filter (`KeyFilter`, three bits a key, 16 bits a planned
key — the source's rows, and the target's for target scope: 20 MB at 10M keys, at most 32 MB): a key it has not
seen is settled in the batch's one query, and only about five new keys in a thousand at the planned count are
searched for in the runs, on disk by reading, in each run, the one 4 KB block that can hold it. A partition's
keys stay apart (`pending`, in memory) until it commits: a retried partition drops its failed attempt's keys, so
its rows are not mistaken for duplicates of themselves, while the partitions in flight still see each other's
keys. Two distinct keys share a hash with probability about n²/2⁶⁵ (3 in a million at 10M keys): such a row
would be reported as a duplicate.

When the partitions split the source on the rule's own columns (a key or keyset range over a column the rule
includes), two partitions never share a key: the index is `local`, each partition checks only its own keys and
forgets them when it commits, so memory follows a partition's size instead of the job's. A local partition that
is a closed range of one integer key keeps its keys as bits over that range (`Bitmap`): no hashing, no search.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import polars as pl
import pyarrow as pa

from engine import frames

RUN_CAP = 1 << 19  # keys of the largest run merged in memory (4 MB)
BITMAP_CAP = 1 << 24  # bits (2 MB) a partition's range may span to be kept as a bitmap
FILTER_BITS_PER_KEY = 16
FILTER_MIN_KEYS = 1 << 20  # the room of an unknown count (an estimate of 0): 2 MB
FILTER_CAP = 1 << 28  # bits (32 MB): past 16M keys the filter fills up and more new keys are searched for
BLOCK = 512  # hashes in a block of a run on disk: 4 KB, the one read a search needs
MERGE_CHUNK = 1 << 16  # hashes read at a time from each run on disk a merge reads (512 KB)


class KeySet(Protocol):
    def __len__(self) -> int: ...
    def found(self, keys: pl.Expr) -> pl.Expr: ...
    def add(self, keys: pl.Series) -> None: ...


class SpilledRun:
    """A sorted run of hashes in a file of its own: memory keeps only each block's first hash, and a search reads
    the one block of the run that can hold the hash. Written from a stream of sorted pieces (a merge's output)."""

    def __init__(self, folder: Path, pieces: Iterable[pl.Series]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.fd, name = tempfile.mkstemp(prefix="unique-", suffix=".hashes", dir=folder)
        self.path, self.size = Path(name), 0
        firsts = []
        try:
            for piece in pieces:
                firsts.append(piece.slice(-self.size % BLOCK).gather_every(BLOCK))  # the blocks starting in it
                data = frames.value_bytes(piece)
                while data:
                    data = data[os.write(self.fd, data):]
                self.size += len(piece)
        except BaseException:
            self.close()
            raise
        self.firsts = pl.concat(firsts) if firsts else pl.Series(dtype=pl.UInt64)

    def holds(self, value: int, blocks_before: int) -> bool:
        """Whether `value` is in the run, given how many blocks start at or below it (`firsts` searched)."""
        if blocks_before == 0:
            return False
        first = (blocks_before - 1) * BLOCK
        keys = memoryview(os.pread(self.fd, min(BLOCK, self.size - first) * 8, first * 8)).cast("Q")
        at = bisect.bisect_left(keys, value)
        return at < len(keys) and keys[at] == value

    def chunks(self, keys: int) -> Iterator[pl.Series]:
        """The run's hashes in order, `keys` at a time."""
        for start in range(0, self.size, keys):
            yield frames.uint64_series(os.pread(self.fd, min(keys, self.size - start) * 8, start * 8))

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def merged(before: SpilledRun, last: SpilledRun, folder: Path) -> SpilledRun:
    """One run of two on disk, read and written a chunk at a time: memory holds a few chunks, never a run."""
    return SpilledRun(folder, merge_streams(before.chunks(MERGE_CHUNK), last.chunks(MERGE_CHUNK)))


def merge_sorted(a: pl.Series, b: pl.Series) -> pl.Series:
    """Two sorted series as one."""
    return pl.DataFrame({"h": a}).merge_sorted(pl.DataFrame({"h": b}), key="h").to_series()


def merge_streams(left: Iterator[pl.Series], right: Iterator[pl.Series]) -> Iterator[pl.Series]:
    """Two streams of sorted chunks as one: whatever is at or below both current chunks' last hash is settled."""
    a, b = next(left, None), next(right, None)
    while a is not None and b is not None:
        bound = min(a[-1], b[-1])
        upto_a, upto_b = a.search_sorted(bound, side="right"), b.search_sorted(bound, side="right")
        yield merge_sorted(a.head(upto_a), b.head(upto_b))
        a, b = a.slice(upto_a), b.slice(upto_b)
        a = a if len(a) else next(left, None)
        b = b if len(b) else next(right, None)
    for rest, stream in ((a, left), (b, right)):
        while rest is not None:
            yield rest
            rest = next(stream, None)


class SortedRuns:
    def __init__(self, spill_to: Path | None = None) -> None:
        self.runs: list[pl.Series] = []  # each sorted, larger ones first
        self.spilled: list[SpilledRun] = []  # larger ones first
        self.spill_to = spill_to  # where runs of half RUN_CAP or more go (None: they stay in memory)

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs) + sum(r.size for r in self.spilled)

    def found(self, hashes: pl.Expr) -> pl.Expr:
        """True where the hash is in a run held in memory (by binary search), as one expression: one query for
        all of them (runs on disk: `found_on_disk`)."""
        hits = [pl.lit(run).gather(pl.lit(run).search_sorted(hashes.fill_null(0)).clip(0, len(run) - 1)) == hashes
                for run in self.runs]
        return pl.any_horizontal(hits).fill_null(False) if hits else hashes.is_in([]).fill_null(False)

    def found_on_disk(self, hashes: pl.Series, found: pl.Series) -> pl.Series:
        """`found`, and true where a hash not found yet is in a run on disk: one block read a run, until found."""
        missing = found.not_().arg_true()
        if not self.spilled or not len(missing):
            return found
        values = hashes.gather(missing)
        blocks = pl.select(pl.lit(run.firsts).search_sorted(pl.lit(values), side="right").alias(str(i))
                           for i, run in enumerate(self.spilled))
        hits = [any(run.holds(v, b) for run, b in zip(self.spilled, row, strict=True))
                for v, row in zip(values.to_list(), blocks.iter_rows(), strict=True)]
        return found.scatter(missing, pl.Series(hits, dtype=pl.Boolean))

    def add(self, hashes: pl.Series) -> None:
        if len(hashes):
            self.runs.append(hashes.sort())
        while (len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1])
               and len(self.runs[-2]) + len(self.runs[-1]) <= RUN_CAP):
            last, before = self.runs.pop(), self.runs.pop()
            self.runs.append(merge_sorted(before, last))
        if self.spill_to is not None:  # by size, wherever they are: a batch may bring a run larger than RUN_CAP
            for run in [r for r in self.runs if len(r) >= RUN_CAP // 2]:
                self.spilled.append(SpilledRun(self.spill_to, [run]))  # a failed write leaves it in memory
                self.runs = [r for r in self.runs if r is not run]
                self._merge_spilled(self.spill_to)

    def hashes(self) -> Iterator[pl.Series]:
        """Every hash held, a run or a chunk at a time."""
        yield from self.runs
        for run in self.spilled:
            yield from run.chunks(MERGE_CHUNK)

    def _merge_spilled(self, folder: Path) -> None:
        """Runs on disk merge as those in memory do, so a search reads a block in each of about
        log2(keys / RUN_CAP) runs, not in one per half RUN_CAP keys; each key is rewritten as often."""
        while len(self.spilled) > 1 and self.spilled[-2].size <= 2 * self.spilled[-1].size:
            before, last = self.spilled[-2:]
            self.spilled[-2:] = [merged(before, last, folder)]  # a failed merge (disk full) loses no run
            before.close()
            last.close()

    def close(self) -> None:
        for run in self.spilled:
            with contextlib.suppress(OSError):  # the others' files are closed all the same
                run.close()
        self.spilled = []


class KeyFilter:
    """A Bloom filter over 64-bit hashes: a key sets three bits, at places taken from its hash's two halves
    and their sum. "Never added" is certain; "maybe" is wrong for about five new keys in a thousand at the
    planned count. A check is three gathers, an insert three scatters of true (repeats need no care)."""

    def __init__(self, expected_keys: int) -> None:
        # an unknown count (an estimate of 0) gets the room of a million keys (2 MB)
        self.bits = Bitmap(min(FILTER_CAP, max(FILTER_MIN_KEYS, expected_keys) * FILTER_BITS_PER_KEY))

    def places(self, h: pl.Expr) -> list[pl.Expr]:
        """The three bits of each hash, as columns p0, p1, p2."""
        span, half = len(self.bits.bits), 1 << 32
        high, low = h // half, h % half
        return [(part * span // half).cast(pl.UInt32).alias(f"p{i}")
                for i, part in enumerate((high, low, (high + low) % half))]

    def maybe(self) -> pl.Expr:
        """Over columns p0, p1, p2: false where the hash was never added (a null hash: never added)."""
        return pl.all_horizontal(self.bits.found(pl.col(f"p{i}")) for i in range(3)).fill_null(False)

    def store(self, places: pl.DataFrame) -> None:
        """Add the hashes whose places are the rows of `places` (no nulls)."""
        self.bits.add(pl.concat(places.get_column(f"p{i}") for i in range(3)))

    def add(self, hashes: pl.Series) -> None:
        self.store(pl.DataFrame({"h": hashes.drop_nulls()}).select(self.places(pl.col("h"))))


class Bitmap:
    """The keys of one partition that is a closed range of an integer key, as offsets from its low end."""

    def __init__(self, span: int) -> None:  # zeroed bytes as Arrow booleans: made without a Polars query
        zeros = pa.Array.from_buffers(pa.bool_(), span, [None, pa.py_buffer(bytes((span + 7) // 8))])
        self.bits = pl.Series(zeros)

    def __len__(self) -> int:
        return int(self.bits.sum())

    def found(self, offsets: pl.Expr) -> pl.Expr:
        return pl.lit(self.bits).gather(offsets).fill_null(False)

    def add(self, offsets: pl.Series) -> None:
        if len(offsets):
            self.bits.scatter(offsets, True)  # in place

    def added_if_new(self, offsets: pl.Series) -> bool:
        """Adds the offsets if, as a key range read in order usually gives them, they rise strictly (so no two
        are alike) and none was added before: a few passes over the batch, no hashing."""
        n = len(offsets)
        if offsets.null_count() or (n > 1 and not (offsets.slice(1) > offsets.slice(0, n - 1)).all()):
            return False
        if self.bits.gather(offsets).any():
            return False
        self.add(offsets)
        return True


class HashIndex:
    def __init__(self, local: bool = False, expected_keys: int = 0, spill_to: Path | None = None) -> None:
        self.committed = SortedRuns(spill_to)
        self.planned_keys = expected_keys
        self.filter = None if local else KeyFilter(expected_keys)  # a local index searches no runs
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
        with self.lock:  # its keys leave `pending` only once all are committed (a full disk loses none)
            runs = self.pending.get(partition)
            for run in runs.runs if isinstance(runs, SortedRuns) and not self.local else []:
                self.committed.add(run)
            self.pending.pop(partition, None)

    def seed(self, hashes: pl.Series) -> None:
        """Keys committed before the run (target scope) or before a resume: added as if committed."""
        hashes = hashes.cast(pl.UInt64).drop_nulls()
        with self.lock:
            self.committed.add(hashes)
            if self.filter is not None:
                self.filter.add(hashes)

    def seeded_all(self, beyond_plan: bool = False) -> None:
        """Seeding is over. Keys `beyond_plan` (a target's rows, which a filter sized for the source's alone would
        fill) get a filter made anew for them as well, taught from the runs: their count is known only now."""
        with self.lock:
            if beyond_plan and self.filter is not None and len(self.committed):
                self.filter = KeyFilter(self.planned_keys + len(self.committed))
                for hashes in self.committed.hashes():
                    self.filter.add(hashes)
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
            dup = self._local_repeats(own, hashes) if self.local else self._shared_repeats(hashes)
            own.add(hashes.filter(dup.not_() & hashes.is_not_null()))
        return dup

    @staticmethod
    def _local_repeats(own: KeySet, keys: pl.Series) -> pl.Series:
        k = pl.col("k")  # one query a batch: on a busy machine each one waits for Polars' threads
        return pl.DataFrame({"k": keys}).select((own.found(k) | k.is_first_distinct().not_()) & k.is_not_null()
                                                ).to_series()

    def _shared_repeats(self, hashes: pl.Series) -> pl.Series:
        """In one query: repeats within the batch, the filter's answer for each first occurrence (taken before the
        batch's keys are added: adding a key seen before changes nothing) and the hashes' places in the filter.
        The runs are searched only where the filter says maybe."""
        bloom, h = self.filter, pl.col("h")
        assert bloom is not None  # a shared index has one
        first = h.is_first_distinct() & h.is_not_null()
        flags = pl.LazyFrame({"h": hashes}).with_columns(bloom.places(h)).select(
            "p0", "p1", "p2", pl.col("h").is_not_null().alias("known"), repeat=first.not_() & h.is_not_null(),
            maybe=first & bloom.maybe()).collect()
        repeats, at = flags.get_column("repeat"), flags.get_column("maybe").arg_true()
        if len(at):
            repeats.scatter(at, self._found(hashes.gather(at)))
        bloom.store(flags.filter("known"))
        return repeats

    def _found(self, candidates: pl.Series) -> pl.Series:
        """True where the hash is in a run: in memory (a committed partition's or one in flight), or on disk."""
        every = [self.committed, *self.pending.values()]  # a shared index's keys are all hashes in runs
        found = [r.found(pl.lit(candidates)) for r in every if isinstance(r, SortedRuns) and r.runs]
        hits = pl.select(pl.any_horizontal(found)).to_series() if found else pl.repeat(False, len(candidates),
                                                                                        eager=True)
        return self.committed.found_on_disk(candidates, hits)

    def close(self) -> None:
        self.committed.close()


_indexes: dict[tuple[str, str], HashIndex] = {}
_indexes_lock = threading.Lock()


def index_for(run_id: str, rule: str, local: bool = False, expected_keys: int = 0,
              spill_to: Path | None = None) -> HashIndex:
    """The run's index for `rule`, made by the first caller's word: `local` (see above), sized for about
    `expected_keys`, its large runs written to `spill_to`."""
    with _indexes_lock:
        index = _indexes.get((run_id, rule))
        if index is None:
            if spill_to is not None and not any(run == run_id for run, _ in _indexes):
                for left in spill_to.glob("unique-*.hashes"):  # the run's files from a process that was killed
                    left.unlink(missing_ok=True)
            index = _indexes[(run_id, rule)] = HashIndex(local, expected_keys, spill_to)
        return index


def committed(run_id: str, partition: int) -> None:
    """The partition committed: its keys join every index of the run for good."""
    with _indexes_lock:
        indexes = [ix for (run, _), ix in _indexes.items() if run == run_id]
    for index in indexes:
        index.committed_partition(partition)


def drop_run(run_id: str) -> None:
    """Free a finished run's indexes and delete their files."""
    with _indexes_lock:
        for key in [k for k in _indexes if k[0] == run_id]:
            with contextlib.suppress(OSError):  # a file left behind goes when the run's folder does
                _indexes.pop(key).close()
