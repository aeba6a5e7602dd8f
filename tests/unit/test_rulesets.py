"""The pure parts of [[validate.rules]]: the job file's rule models and their errors, compilation to Polars
expressions (NULL passes all but not_null), formats, merged quarantine records, the hash index, stats."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from engine import uniqueness
from engine.config import parse_config
from engine.errors import ConfigError
from engine.quarantine import ROW_INDEX
from engine.rulejob import over_budget, quarantine_sql, schema_verdicts
from engine.rulerun import merge_bad, verdicts
from engine.rulesets import compile_checks, polars_type
from engine.rulestats import RuleStats
from engine.uniqueness import Bitmap, HashIndex, KeyFilter, SortedRuns


def _config(*rules: dict[str, Any]) -> Any:
    data = {"job": {"name": "j"}, "source": {"url": "sqlite:///x.db", "table": "t"},
            "target": {"url": "postgresql://localhost/x", "table": "t"}, "validate": {"rules": list(rules)}}
    return parse_config(data, Path("job.toml"))


def _problems(*rules: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        _config(*rules)
    return "\n".join(caught.value.problems)


def _verdicts(frame: pl.DataFrame, *rules: dict[str, Any], keys: dict[str, pl.DataFrame] | None = None
              ) -> dict[str, list[bool]]:
    checks = compile_checks(list(_config(*rules).validate_.rules), frame.schema, keys or {})
    out = verdicts(frame, checks)  # as a batch is judged: quick tests first
    return {c.rule.name: out.get_column(f"c{i}").to_list() for i, c in enumerate(checks)}


def test_errors_name_the_rule_key() -> None:
    text = _problems({"name": "a", "kind": "range", "column": "x", "mini": 0},
                     {"name": "b", "kind": "nope"},
                     {"name": "c", "kind": "range", "column": "x", "min": 5, "max": 1},
                     {"name": "d", "kind": "format", "column": "x", "regex": "(?<=a)b"},
                     {"name": "e", "kind": "expression", "expr": "x >"},
                     {"name": "f", "kind": "range", "column": "x", "min": 0, "severity": "fatal"},
                     {"name": "g", "kind": "references", "column": "x", "table": "t"})
    for key in ("validate.rules[0].mini", "validate.rules[1].kind", "validate.rules[2]", "validate.rules[3].regex",
                "validate.rules[4].expr", "validate.rules[5].severity", "validate.rules[6]"):
        assert f"`{key}`" in text, text
    assert "unknown kind 'nope'" in text and "set exactly one of `key` or `keys`" in text


def test_job_wide_uniqueness_refuses_the_dask_executor() -> None:
    data = {"job": {"name": "j"}, "source": {"url": "sqlite:///x.db", "table": "t"},
            "target": {"url": "postgresql://localhost/x", "table": "t"}, "pipeline": {"executor": "dask"},
            "validate": {"rules": [{"name": "u", "kind": "unique", "columns": ["x"], "scope": "job"}]}}
    with pytest.raises(ConfigError, match='unique rule.s. u: scope "job"'):
        parse_config(data, Path("job.toml"))
    data["validate"]["rules"][0]["scope"] = "batch"  # type: ignore[index]
    assert parse_config(data, Path("job.toml")).pipeline.executor == "dask"


def test_rule_names_are_unique() -> None:
    rule = {"name": "a", "kind": "not_null", "column": "x"}
    assert "repeated: a" in _problems(rule, rule)


def test_null_passes_every_rule_but_not_null() -> None:
    frame = pl.DataFrame({"x": [None, 5], "s": [None, "ok"]}, schema={"x": pl.Int64, "s": pl.String})
    verdicts = _verdicts(frame, {"name": "nn", "kind": "not_null", "column": "x"},
                         {"name": "r", "kind": "range", "column": "x", "min": 10},
                         {"name": "a", "kind": "allowed", "column": "s", "values": ["no"]},
                         {"name": "l", "kind": "length", "column": "s", "min": 5},
                         {"name": "f", "kind": "format", "column": "s", "format": "uuid"},
                         {"name": "d", "kind": "dtype", "column": "s", "type": "integer"},
                         {"name": "e", "kind": "expression", "expr": "x > 10"},
                         {"name": "u", "kind": "unique", "columns": ["x"], "scope": "batch"},
                         {"name": "ref", "kind": "references", "column": "x", "table": "t", "key": "id"},
                         keys={"ref": pl.DataFrame({"x": [1]})})
    assert verdicts.pop("nn") == [False, True]
    assert all(v[0] for v in verdicts.values()), verdicts
    assert verdicts.pop("u") == [True, True]  # 5 occurs once
    assert all(not v[1] for v in verdicts.values()), verdicts


@pytest.mark.parametrize(("fmt", "good", "bad"), [
    ("email", "a.b@example.org", "a@b"),
    ("uuid", "123E4567-e89b-12d3-a456-426614174000", "123e4567-e89b-12d3-a456"),
    ("iso_date", "2024-02-29", "2023-02-29"),
    ("iso_datetime", "2024-02-29T10:00:00+01:00", "2024-02-29 10"),
    ("currency", "EUR", "eur"),
    ("url", "https://example.org/a?b=1", "example.org"),
    ("ipv4", "192.168.0.255", "192.168.0.256"),
    ("e164_phone", "+4915112345678", "015112345678"),
])
def test_formats(fmt: str, good: str, bad: str) -> None:
    frame = pl.DataFrame({"s": [good, bad]})
    assert _verdicts(frame, {"name": "f", "kind": "format", "column": "s", "format": fmt}) == {"f": [True, False]}


def test_dtype_must_convert_without_loss() -> None:
    frame = pl.DataFrame({"f": [1.0, 1.5, 70000.0], "s": ["12", "1.234", "abc"]})
    verdicts = _verdicts(frame, {"name": "i", "kind": "dtype", "column": "f", "type": "smallint"},
                         {"name": "n", "kind": "dtype", "column": "s", "type": "numeric(6,2)"})
    assert verdicts == {"i": [True, False, False], "n": [True, False, False]}
    assert polars_type("character varying(12)") == (pl.String(), 12)
    with pytest.raises(ValueError, match="not supported"):
        polars_type("money")


def test_integer_dtypes_are_judged_by_range() -> None:
    frame = pl.DataFrame({"i": [-2**40, -32768, 32767, 40000, None], "s": [1, 2, 3, 4, 5]},
                         schema={"i": pl.Int64, "s": pl.Int16})
    verdicts_ = _verdicts(frame, {"name": "small", "kind": "dtype", "column": "i", "type": "smallint"},
                          {"name": "int", "kind": "dtype", "column": "i", "type": "integer"},
                          {"name": "wider", "kind": "dtype", "column": "s", "type": "integer"})
    assert verdicts_ == {"small": [False, True, True, False, True], "int": [False, True, True, True, True],
                         "wider": [True] * 5}
    huge = pl.DataFrame({"u": [2**63 + 5, 7], "w": [2**70, 7]}, schema={"u": pl.UInt64, "w": pl.Int128})
    assert _verdicts(huge, {"name": "b", "kind": "dtype", "column": "u", "type": "bigint"},
                     {"name": "w", "kind": "dtype", "column": "w", "type": "bigint"}) == {"b": [False, True],
                                                                                            "w": [False, True]}


@pytest.mark.parametrize(("values", "bounds", "expected"), [
    (["ééé", "abcd", "éééé"], {"max": 3}, [True, False, False]),  # 6 bytes, 3 characters: passes
    (["ééé", "abcd", "éééé"], {"min": 4}, [False, True, True]),
    (["abc", "de"], {"max": 3}, [True, True]),  # every row settled by the quick test in bytes
    (["aé", "a"], {"min": 1, "max": 2}, [True, True]),
    (["", "a"], {"min": 1}, [False, True]),  # one byte or more: exactly one character or more
    (["abcdefghij", "ab", "éé"], {"min": 3}, [True, False, False]),  # no quick test: only the characters
])
def test_length_counts_characters_not_bytes(values: list[str], bounds: dict[str, int], expected: list[bool]) -> None:
    frame = pl.DataFrame({"s": values})
    assert _verdicts(frame, {"name": "l", "kind": "length", "column": "s", **bounds}) == {"l": expected}


def test_range_on_timestamps_and_composite_references() -> None:
    frame = pl.DataFrame({"t": ["2023-12-31 23:00:00", "2024-06-01 00:00:00"], "a": [1, 2], "b": ["x", "y"]}
                         ).with_columns(pl.col("t").str.to_datetime(time_zone="UTC"))
    verdicts = _verdicts(frame, {"name": "r", "kind": "range", "column": "t", "min": "2024-01-01 00:00:00"},
                         {"name": "ref", "kind": "references", "columns": ["a", "b"], "table": "t",
                          "keys": ["k1", "k2"]}, keys={"ref": pl.DataFrame({"a": [2], "b": ["y"]})})
    assert verdicts == {"r": [False, True], "ref": [False, True]}


@pytest.mark.parametrize("keys", [[1, 3, 4, 7], [1, 3, 4, 10**12], [5]], ids=["bitmap", "sorted", "one key"])
def test_integer_references_by_bitmap_or_search_match_is_in(keys: list[int]) -> None:
    """Integer keys skip the hash table `is_in` builds per batch: a bitmap over a dense range, a binary search
    in a sparse one. Both must answer exactly as `is_in` does, at and beyond the keys' ends."""
    values = [None, 0, 1, 2, 3, 4, 5, 7, 8, 10**12, 10**12 + 1, -3]
    frame = pl.DataFrame({"x": values}, schema={"x": pl.Int64})
    got = _verdicts(frame, {"name": "ref", "kind": "references", "column": "x", "table": "t", "key": "id"},
                    keys={"ref": pl.DataFrame({"x": keys + [None]}, schema={"x": pl.Int32 if max(keys) < 2**31
                                                                             else pl.Int64})})
    assert got == {"ref": [v is None or v in keys for v in values]}


def test_job_scope_rules_are_not_compiled_per_batch() -> None:
    frame = pl.DataFrame({"x": [1, 1]})
    verdicts = _verdicts(frame, {"name": "u", "kind": "unique", "columns": ["x"], "scope": "job"},
                         {"name": "c", "kind": "completeness", "column": "x"},
                         {"name": "rc", "kind": "reconcile", "column": "x"})
    assert verdicts == {}


def test_merged_records_hold_every_reason_once_per_row() -> None:
    def part(name: str, rows: list[int]) -> pl.DataFrame:
        return pl.DataFrame({ROW_INDEX: pl.Series(rows, dtype=pl.UInt32), "checks": [name] * len(rows),
                             "columns": ["x"] * len(rows), "reason": [f"x: {name}"] * len(rows)})
    merged = merge_bad([part("a", [3, 1]), part("b", [1]), part("c", [1, 2])])
    assert merged[ROW_INDEX].to_list() == [1, 2, 3]
    assert merged.row(0) == (1, "a, b, c", "x", "x: a; x: b; x: c")


def test_hash_index_finds_repeats_and_forgets_a_retried_partition() -> None:
    index = HashIndex()
    assert index.check_and_add(pl.Series([1, 2, 2, None], dtype=pl.UInt64), 0).to_list() == [False, False, True, False]
    index.committed_partition(0)
    assert index.check_and_add(pl.Series([2, 3], dtype=pl.UInt64), 1).to_list() == [True, False]
    assert index.check_and_add(pl.Series([3], dtype=pl.UInt64), 1).to_list() == [True]  # its own earlier batch
    assert index.check_and_add(pl.Series([3, 5], dtype=pl.UInt64), 2).to_list() == [True, False]  # in flight
    index.forget(1)  # partition 1 is retried: its attempt's keys are gone, partition 2's stay
    assert index.check_and_add(pl.Series([3, 4, 5], dtype=pl.UInt64), 1).to_list() == [False, False, True]
    for start in range(0, 5000, 500):  # many batches: the sorted runs merge, nothing is lost
        index.check_and_add(pl.int_range(start + 10, start + 510, eager=True, dtype=pl.UInt64), 3)
    index.committed_partition(3)
    assert len(index) == 5005 and len(index.committed.runs) < 8
    assert index.check_and_add(pl.Series([10, 5009, 5010], dtype=pl.UInt64), 4).to_list() == [True, True, False]


def test_a_shared_index_finds_repeats_in_runs_written_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """Committed runs past half of RUN_CAP go to files (searched one block at a time): every repeat is still
    found, at a block's first and last hash and between, on disk, in memory and in flight; closing deletes them."""
    monkeypatch.setattr(uniqueness, "RUN_CAP", 64)
    monkeypatch.setattr(uniqueness, "BLOCK", 4)
    index = HashIndex(expected_keys=2000, spill_to=tmp_path / "unique")
    hashes = pl.int_range(0, 2000, eager=True).hash(11)
    for partition in range(20):  # 100 keys a partition, in batches of 50
        for start in (0, 50):
            batch = hashes.slice(partition * 100 + start, 50)
            assert not index.check_and_add(batch, partition).any()
        index.committed_partition(partition)
    spilled = index.committed.spilled
    assert sum(r.size for r in spilled) > 1500 and len(spilled) <= 6  # merged on disk: about log2(2000 / 32)
    assert [r.size for r in spilled] == sorted((r.size for r in spilled), reverse=True)
    assert len(list((tmp_path / "unique").iterdir())) == len(spilled)  # a file a run; merged ones deleted
    ordered = hashes.sort()
    probe = pl.concat([ordered.head(9), ordered.tail(9), hashes.gather([7, 777, 1999]), hashes.gather([5])])
    fresh = pl.int_range(5000, 5200, eager=True).hash(11)
    verdict = index.check_and_add(pl.concat([probe, fresh]), 20)
    assert verdict.head(len(probe)).all() and not verdict.tail(len(fresh)).any()
    assert index.check_and_add(fresh.head(3), 21).to_list() == [True] * 3  # partition 20 is in flight
    assert len(index) == 2000 + 200
    index.close()
    assert not list((tmp_path / "unique").iterdir())


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_runs_on_disk_merge_a_chunk_at_a_time_into_one_sorted_run(tmp_path: Path, chunk: int,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Any chunk size, runs of unequal length, repeats across them, one run exhausted long before the other: the
    merged run holds every hash in order, its block firsts are every BLOCK-th of them, and the two files are gone
    once the merge is taken."""
    monkeypatch.setattr(uniqueness, "BLOCK", 4)
    monkeypatch.setattr(uniqueness, "MERGE_CHUNK", chunk)
    left = pl.Series([1, 5, 5, 9, 200, 201, 202, 203, 204, 205], dtype=pl.UInt64)
    right = pl.Series([0, 5, 6, 7, 8, 10, 11], dtype=pl.UInt64)
    folder = tmp_path / "unique"
    runs = SortedRuns(folder)
    a = uniqueness.SpilledRun(folder, [left.head(3), left.slice(3)])  # written in pieces, as a merge writes
    b = uniqueness.SpilledRun(folder, [right])
    runs.spilled = [a, b]
    runs._merge_spilled(folder)
    [both] = runs.spilled
    whole = pl.concat([left, right]).sort()
    assert pl.concat(both.chunks(5)).to_list() == whole.to_list()
    assert both.firsts.to_list() == whole.gather_every(4).to_list()
    assert [p.name for p in folder.iterdir()] == [both.path.name]
    blocks = both.firsts.search_sorted(pl.Series([0, 7, 204, 3], dtype=pl.UInt64), side="right").to_list()
    assert [both.holds(v, n) for v, n in zip([0, 7, 204, 3], blocks, strict=True)] == [True, True, True, False]
    runs.close()
    assert not list(folder.iterdir())


def test_a_merge_that_fails_on_disk_loses_no_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that fills during a merge fails the batch, but the runs it was merging stay searched."""
    folder = tmp_path / "unique"
    runs = SortedRuns(folder)
    runs.spilled = [uniqueness.SpilledRun(folder, [pl.Series([1, 3], dtype=pl.UInt64)]),
                    uniqueness.SpilledRun(folder, [pl.Series([2, 4], dtype=pl.UInt64)])]

    def full(*_: object) -> uniqueness.SpilledRun:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(uniqueness, "merged", full)
    with pytest.raises(OSError, match="No space"):
        runs._merge_spilled(folder)
    probe = pl.Series([1, 2, 3, 4, 5], dtype=pl.UInt64)
    assert runs.found_on_disk(probe, pl.repeat(False, 5, eager=True)).to_list() == [True] * 4 + [False]
    runs.close()


def test_a_commit_that_cannot_write_its_keys_to_disk_loses_none(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The partition's first run fails to be written (a full disk): its keys, and those of its other run, are
    still found; and once the disk has room again the same commit takes them all."""
    monkeypatch.setattr(uniqueness, "RUN_CAP", 8)
    index = HashIndex(expected_keys=100, spill_to=tmp_path / "unique")
    first, second = pl.int_range(0, 6, eager=True).hash(5), pl.int_range(6, 8, eager=True).hash(5)
    assert not index.check_and_add(first, 0).any() and not index.check_and_add(second, 0).any()
    write = uniqueness.SpilledRun.__init__

    def full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(uniqueness.SpilledRun, "__init__", full)
    with pytest.raises(OSError, match="No space"):
        index.committed_partition(0)
    assert index.check_and_add(pl.concat([first, second]), 1).all()
    monkeypatch.setattr(uniqueness.SpilledRun, "__init__", write)
    index.committed_partition(0)
    assert 0 not in index.pending and index.committed.spilled
    assert index.check_and_add(pl.concat([first, second]), 2).all()
    index.close()


def test_a_resumed_run_deletes_the_files_its_killed_process_left(tmp_path: Path) -> None:
    (tmp_path / "unique-left.hashes").write_bytes(b"\0" * 64)
    (tmp_path / "rejected.parquet").write_bytes(b"kept")
    uniqueness.index_for("resumed", "u", expected_keys=10, spill_to=tmp_path)
    uniqueness.index_for("resumed", "v", expected_keys=10, spill_to=tmp_path)
    uniqueness.drop_run("resumed")
    assert [p.name for p in tmp_path.iterdir()] == ["rejected.parquet"]


def test_the_key_filter_is_capped_and_its_places_stay_in_it() -> None:
    bloom = KeyFilter(expected_keys=10**9)
    extremes = pl.Series([0, 2**32 - 1, 2**32, 2**63, 2**64 - 1], dtype=pl.UInt64)
    places = pl.DataFrame({"h": extremes}).select(bloom.places(pl.col("h")))
    assert len(bloom.bits.bits) == uniqueness.FILTER_CAP
    assert places.max_horizontal().max() < uniqueness.FILTER_CAP  # type: ignore[operator]
    assert places.get_column("p0").tail(1).item() > uniqueness.FILTER_CAP // 2  # the high half spreads them


def test_the_key_filter_never_misses_and_rarely_guesses() -> None:
    keys = pl.int_range(0, 100_000, eager=True).hash(3)
    others = pl.int_range(100_000, 200_000, eager=True).hash(3)
    bloom = KeyFilter(expected_keys=100_000)
    bloom.add(keys)

    def maybe(hashes: pl.Series) -> pl.Series:
        return pl.DataFrame({"h": hashes}).with_columns(bloom.places(pl.col("h"))).select(bloom.maybe()).to_series()

    assert maybe(keys).all()
    assert maybe(others).mean() < 0.01  # type: ignore[operator]
    assert not maybe(pl.Series([None], dtype=pl.UInt64)).any()


def test_a_local_index_checks_a_partition_against_itself_only() -> None:
    index = HashIndex(local=True)
    bits = partial(Bitmap, 100)
    assert index.check_and_add(pl.Series([1, 99, 1, None], dtype=pl.UInt32), 0, bits).to_list() == [
        False, False, True, False]
    assert index.check_and_add(pl.Series([99, 98], dtype=pl.UInt32), 0, bits).to_list() == [True, False]
    assert index.check_and_add(pl.Series([1, 2], dtype=pl.UInt32), 1, bits).to_list() == [False, False]
    index.committed_partition(0)
    assert len(index) == 2 and len(index.committed) == 0  # partition 0's keys are let go when it commits
    index.forget(1)
    assert index.check_and_add(pl.Series([1, 2], dtype=pl.UInt32), 1, bits).to_list() == [False, False]
    # keys in rising order (a range read in key order) take the quick way unless one was seen before
    assert index.check_and_add(pl.Series([3, 50, 60], dtype=pl.UInt32), 1, bits).to_list() == [False] * 3
    assert index.check_and_add(pl.Series([4, 50, 70], dtype=pl.UInt32), 1, bits).to_list() == [False, True, False]
    assert index.check_and_add(pl.Series([70, 71], dtype=pl.UInt32), 1, bits).to_list() == [True, False]
    assert index.check_and_add(pl.Series([80, 80], dtype=pl.UInt32), 1, bits).to_list() == [False, True]
    assert index.check_and_add(pl.Series([], dtype=pl.UInt32), 1, bits).to_list() == []
    assert index.check_and_add(pl.Series([81], dtype=pl.UInt32), 1, bits).to_list() == [False]
    assert index.check_and_add(pl.Series([81], dtype=pl.UInt32), 1, bits).to_list() == [True]
    assert index.check_and_add(pl.Series([83, None, 82, 82], dtype=pl.UInt32), 1, bits).to_list() == [
        False, False, False, True]
    assert len(index) == 12


def test_budgets_and_schema_verdicts() -> None:
    config = _config({"name": "r", "kind": "not_null", "column": "x", "max_errors": 2},
                     {"name": "q", "kind": "not_null", "column": "y", "max_error_rate": 0.1},
                     {"name": "s", "kind": "schema", "columns": ["x", "z"], "extra": "forbid"})
    rules = list(config.validate_.rules)
    stats = {"r": RuleStats("r", "not_null", "reject", 100, 2), "q": RuleStats("q", "not_null", "reject", 100, 10)}
    assert over_budget(rules, stats) is None
    stats["q"].add(0, failures=1)
    assert "rule q (not_null) is over its budget" in str(over_budget(rules, stats))
    assert schema_verdicts(rules, ["x", "y"])[0][1] == "missing column(s) z; unexpected column(s) y (extra = \"forbid\")"
    assert "'it''s' = ANY(string_to_array(checks, ', '))" in quarantine_sql("j", "r", "it's")
