"""Uniqueness across a whole run: a memory-bounded index of 64-bit row hashes, shared by the run's partitions.

Each key is kept as its 64-bit hash and the partition that saw it (12 bytes a row: about 120 MB at 10M rows),
in a few sorted runs whose sizes double (a log-structured merge), so a batch is checked by binary search in
each run and adding a batch costs amortised O(log n) per row. A retried partition first forgets its own
hashes, so its rows are not mistaken for duplicates of themselves. Two distinct keys share a hash with
probability about n²/2⁶⁵ (3 in a million at 10M rows): such a row would be reported as a duplicate.
"""

from __future__ import annotations

import threading

import polars as pl

SEEDED = 2**32 - 1  # the partition id of hashes read from the target (unique scope "target")
_SCHEMA = {"h": pl.UInt64, "p": pl.UInt32}


class HashIndex:
    def __init__(self) -> None:
        self.runs: list[pl.DataFrame] = []  # each sorted by h; sizes roughly doubling from last to first
        self.lock = threading.Lock()
        self.seeded = False

    def __len__(self) -> int:
        return sum(r.height for r in self.runs)

    def forget(self, partition: int) -> None:
        with self.lock:
            self.runs = [r.filter(pl.col("p") != partition) for r in self.runs]

    def seed(self, hashes: pl.Series) -> None:
        with self.lock:
            self._add(pl.DataFrame({"h": hashes, "p": pl.repeat(SEEDED, len(hashes), dtype=pl.UInt32, eager=True)}))
            self.seeded = True

    def check_and_add(self, hashes: pl.Series, partition: int) -> pl.Series:
        """True where the hash was seen before (in an earlier batch or partition, or earlier in this batch);
        null hashes (a key with a NULL) are never duplicates and are not remembered."""
        hashes = hashes.cast(pl.UInt64)
        within = pl.select(hashes.is_duplicated() & ~hashes.is_first_distinct()).to_series()
        with self.lock:
            seen = pl.repeat(False, len(hashes), eager=True)
            for run in self.runs:
                sorted_h = run.get_column("h")
                at = sorted_h.search_sorted(hashes.fill_null(0)).clip(0, max(run.height - 1, 0))
                seen = seen | (sorted_h.gather(at) == hashes).fill_null(False)
            fresh = hashes.filter(~seen & ~within & hashes.is_not_null())
            self._add(pl.DataFrame({"h": fresh, "p": pl.repeat(partition, len(fresh), dtype=pl.UInt32, eager=True)}))
        return (seen | within) & hashes.is_not_null()

    def _add(self, rows: pl.DataFrame) -> None:
        run = rows.cast(_SCHEMA).sort("h")  # type: ignore[arg-type]
        while self.runs and self.runs[-1].height <= run.height * 2:
            run = self.runs.pop().merge_sorted(run, key="h")
        if run.height:
            self.runs.append(run)


_indexes: dict[tuple[str, str], HashIndex] = {}
_indexes_lock = threading.Lock()


def index_for(run_id: str, rule: str) -> HashIndex:
    with _indexes_lock:
        return _indexes.setdefault((run_id, rule), HashIndex())


def drop_run(run_id: str) -> None:
    """Free a finished run's indexes."""
    with _indexes_lock:
        for key in [k for k in _indexes if k[0] == run_id]:
            del _indexes[key]
