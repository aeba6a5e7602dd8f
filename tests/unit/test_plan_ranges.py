"""cut_ranges: the ranges cover every integer from lo to hi exactly once, in order, never more than there are."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.config import JobConfig, parse_config
from engine.plan import MAX_PARTITIONS, cut_ranges

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # optional: a seeded random loop covers the same ground
    given = None


def config(partitions: int | None = None, rows_per_partition: int = 250_000) -> JobConfig:
    source = {"url": "sqlite:///tmp/none.db", "table": "t", "rows_per_partition": rows_per_partition}
    if partitions is not None:
        source["partitions"] = partitions
    return parse_config({"job": {"name": "ranges"}, "source": source,
                         "target": {"url": "postgresql://localhost/x", "table": "t"}}, Path("job.toml"))


def check_cover(lo: int, hi: int, ranges: list[tuple[int, int]], wanted: int) -> None:
    """Contiguous, non-empty, ordered ranges from lo to hi: every integer in exactly one of them."""
    assert ranges, "no ranges"
    assert ranges[0][0] == lo and ranges[-1][1] == hi
    for a, b in ranges:
        assert a <= b, f"empty range {(a, b)}"
    for (_, b), (c, _) in zip(ranges, ranges[1:], strict=False):
        assert c == b + 1, f"gap or overlap between ...{b}] and [{c}..."
    assert len(ranges) <= hi - lo + 1
    assert len(ranges) == max(1, min(wanted, hi - lo + 1, MAX_PARTITIONS))
    widths = [b - a + 1 for a, b in ranges]
    assert max(widths) - min(widths) <= 1  # equal width, give or take one


def brute_force_cover(lo: int, hi: int, ranges: list[tuple[int, int]]) -> None:
    """For small spans, literally count how many ranges hold each integer."""
    for k in range(lo, hi + 1):
        assert sum(a <= k <= b for a, b in ranges) == 1, f"{k} is not in exactly one range"
    assert not any(a <= lo - 1 <= b or a <= hi + 1 <= b for a, b in ranges)


EDGES = [
    (0, 0, 1, 1), (5, 5, 1, 10), (-3, -3, 0, 7), (1, 2, 2, 5), (1, 3, 3, 2), (-10, 10, 21, 4), (-1, 0, 2, 100),
    (1, 10**12, 4, 4), (-(2**62), 2**62, 10**6, 7), (-(2**62), 2**62, 3, 100_000), (-(2**63), 2**63 - 1, 10, 3),
    (0, 2**64 - 1, 5, 9), (2**62 - 5, 2**62, 6, 6), (-(2**62), -(2**62) + 2, 3, 64), (0, 99_999, 10**5, 100_000),
    (0, 10**9, 10**9, 100_000),
]


@pytest.mark.parametrize(("lo", "hi", "rows", "partitions"), EDGES)
def test_edge_cases_cover_exactly_once(lo: int, hi: int, rows: int, partitions: int) -> None:
    ranges = cut_ranges(lo, hi, rows, config(partitions))
    check_cover(lo, hi, ranges, partitions)
    if hi - lo <= 2_000:
        brute_force_cover(lo, hi, ranges)


def test_partition_count_follows_rows_per_partition() -> None:
    assert len(cut_ranges(1, 10**6, 1_000_000, config(rows_per_partition=250_000))) == 4
    assert len(cut_ranges(1, 10**6, 1_000_001, config(rows_per_partition=250_000))) == 5
    assert len(cut_ranges(1, 10**6, 0, config(rows_per_partition=250_000))) == 1  # no rows: still one range
    assert len(cut_ranges(1, 3, 10**6, config(rows_per_partition=1))) == 3  # never more ranges than keys


def test_seeded_random_spans_cover_exactly_once() -> None:
    rng = random.Random(20240331)
    for _ in range(2000):
        scale = rng.choice([1, 10, 1_000, 10**6, 2**40, 2**62])
        lo = rng.randint(-scale, scale)
        hi = lo + rng.choice([0, 1, 2, rng.randint(0, 50), rng.randint(0, scale), rng.randint(0, 2 * scale)])
        partitions = rng.choice([1, 2, 3, 7, rng.randint(1, 200), rng.randint(1, 5_000)])
        rows = rng.randint(0, 10**7)
        ranges = cut_ranges(lo, hi, rows, config(partitions))
        check_cover(lo, hi, ranges, partitions)
        if hi - lo <= 60:
            brute_force_cover(lo, hi, ranges)


def test_seeded_random_without_explicit_partitions() -> None:
    rng = random.Random(7)
    for _ in range(500):
        lo = rng.randint(-(2**62), 2**62)
        hi = lo + rng.randint(0, 2**62)
        per = rng.choice([1, 1000, 250_000])
        rows = rng.randint(0, 5_000 if per == 1 else 10**7)
        ranges = cut_ranges(lo, hi, rows, config(rows_per_partition=per))
        expected = -(-max(rows, 1) // per)
        check_cover(lo, hi, ranges, expected)


if given is not None:

    @settings(max_examples=400, deadline=None)
    @given(lo=st.integers(-(2**62), 2**62), span=st.one_of(st.integers(0, 100), st.integers(0, 2**63)),
           rows=st.integers(0, 10**9), partitions=st.integers(1, MAX_PARTITIONS))
    def test_property_ranges_cover_exactly_once(lo: int, span: int, rows: int, partitions: int) -> None:
        ranges = cut_ranges(lo, lo + span, rows, config(partitions))
        check_cover(lo, lo + span, ranges, partitions)
        if span <= 100:
            brute_force_cover(lo, lo + span, ranges)


def test_keyset_conditions_order_rows_as_row_values_do() -> None:
    """The spelled-out keyset condition selects exactly the rows a row-value comparison selects (SQLite
    evaluates both), for one to three key columns, every boundary and both directions."""
    import itertools
    import sqlite3

    from engine.model import keyset_condition

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a, b, c)")
    values = list(itertools.product(range(3), repeat=3))
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", values)
    for width in (1, 2, 3):
        columns = ["a", "b", "c"][:width]
        for bound in itertools.product(range(3), repeat=width):
            literals = tuple(str(v) for v in bound)
            for op in (">=", "<"):
                mine = conn.execute(f"SELECT a, b, c FROM t WHERE {keyset_condition(columns, literals, op)} "
                                    "ORDER BY 1, 2, 3").fetchall()
                rows = f"({', '.join(columns)})" if width > 1 else columns[0]
                wanted = f"({', '.join(literals)})" if width > 1 else literals[0]
                theirs = conn.execute(f"SELECT a, b, c FROM t WHERE {rows} {op} {wanted} ORDER BY 1, 2, 3").fetchall()
                assert mine == theirs, (columns, bound, op)


def test_block_ranges_apply_only_to_heap_tables_on_postgresql_14_or_later() -> None:
    from engine.partitions import BlockFacts, BlockState

    def facts(version: int = 150000, relkind: str = "r", am: str = "heap") -> BlockFacts:
        return BlockFacts(version, relkind, am, 8192 * 10, 8192, 100.0, 10, BlockState(1, 0, 0, 0))

    assert facts().unfit() is None and facts(relkind="m").unfit() is None
    assert "PostgreSQL 13" in (facts(version=130011).unfit() or "")
    assert "partitioned table" in (facts(relkind="p", am="").unfit() or "")
    assert "a view" in (facts(relkind="v", am="").unfit() or "")
    assert "'columnar', not heap" in (facts(am="columnar").unfit() or "")


def test_block_ranges_cover_every_block_and_leave_the_last_open() -> None:
    from engine.partitions import BlockFacts, BlockState, block_partitions

    for blocks, wanted in [(0, 4), (1, 4), (10, 3), (1000, 7), (5, 5)]:
        facts = BlockFacts(150000, "r", "heap", 8192 * blocks, 8192, -1.0, 0, BlockState(1, 0, 0, 0))
        parts, _ = block_partitions(config(partitions=wanted), facts)
        assert parts[0].lo == 0 and parts[-1].hi is None and len(parts) == max(1, min(wanted, blocks))
        for a, b in zip(parts, parts[1:], strict=False):
            assert a.hi is not None and b.lo == a.hi + 1 and a.lo is not None and a.lo <= a.hi
