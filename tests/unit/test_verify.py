"""Content verification's pure parts: row fingerprints and taking refused rows out of what was sent."""

from __future__ import annotations

import uuid

import polars as pl
import pyarrow as pa
import pytest

from engine.verify import row_fingerprints, without_rows

JSON = pa.json_(pa.large_string())


def batch(ids: list[int], names: list[str | None], docs: list[str | None]) -> pa.RecordBatch:
    return pa.record_batch({"id": pa.array(ids, pa.int64()), "name": pa.array(names, pa.large_string()),
                            "doc": pa.array(docs, JSON)})


def hashes(b: pa.RecordBatch) -> list[int]:
    return row_fingerprints(b, "id")["hash"].to_list()


def test_the_same_rows_give_the_same_fingerprints() -> None:
    rows = ([1, 2, 3], ["a", None, "c"], ['{"x": 1}', None, "[1, 2]"])
    first, second = row_fingerprints(batch(*rows), "id"), row_fingerprints(batch(*rows), "id")
    assert first.equals(second)
    assert first["key"].to_list() == ["1", "2", "3"]
    assert first.schema == pl.Schema({"key": pl.String, "hash": pl.UInt64})
    assert first["hash"].n_unique() == 3


@pytest.mark.parametrize(("name", "doc"), [
    ("b", '{"x": 1}'), (None, '{"x": 1}'), ("a", '{"x": 2}'), ("a", '{"x": 1, "y": null}'), ("a", None),
])
def test_a_changed_value_changes_the_fingerprint(name: str | None, doc: str | None) -> None:
    assert hashes(batch([1], ["a"], ['{"x": 1}'])) != hashes(batch([1], [name], [doc]))


def test_the_key_is_part_of_the_fingerprint() -> None:
    assert hashes(batch([1], ["a"], ["{}"])) != hashes(batch([2], ["a"], ["{}"]))


@pytest.mark.parametrize("reordered", [
    '{"b": [1, {"d": 2, "c": 3}], "a": "x"}',
    '{"a":"x","b":[1,{"c":3,"d":2}]}',
    '{\n  "b": [1, {"c": 3, "d": 2}],\n  "a": "x"\n}',
])
def test_json_with_reordered_keys_and_spacing_hashes_the_same(reordered: str) -> None:
    sent = batch([1], ["a"], ['{"a": "x", "b": [1, {"c": 3, "d": 2}]}'])
    assert hashes(sent) == hashes(batch([1], ["a"], [reordered]))


def test_json_array_order_still_counts() -> None:
    assert hashes(batch([1], ["a"], ["[1, 2]"])) != hashes(batch([1], ["a"], ["[2, 1]"]))


def test_uuids_hash_by_their_bytes() -> None:
    value = uuid.uuid4()
    column = pa.ExtensionArray.from_storage(pa.uuid(), pa.array([value.bytes], pa.binary(16)))
    other = pa.ExtensionArray.from_storage(pa.uuid(), pa.array([uuid.uuid4().bytes], pa.binary(16)))
    ids = pa.array([1], pa.int64())
    same = row_fingerprints(pa.record_batch([ids, column], names=["id", "u"]), "id")
    again = row_fingerprints(pa.record_batch([ids, pa.ExtensionArray.from_storage(
        pa.uuid(), pa.array([value.bytes], pa.binary(16)))], names=["id", "u"]), "id")
    different = row_fingerprints(pa.record_batch([ids, other], names=["id", "u"]), "id")
    assert same.equals(again)
    assert not same.equals(different)


def fingerprints(*rows: tuple[int, str]) -> pl.DataFrame:
    return row_fingerprints(batch([r[0] for r in rows], [r[1] for r in rows], ["{}"] * len(rows)), "id")


def as_rows(frames: list[pl.DataFrame], *sent: tuple[int, str]) -> list[tuple[int, str]]:
    """The fingerprints left, as the sorted (id, name) rows of `sent` they belong to."""
    row_of = dict(zip(fingerprints(*sent)["hash"].to_list(), sent, strict=True))
    left = pl.concat(frames)["hash"].to_list() if frames else []
    return sorted(row_of[h] for h in left)


SENT = ((1, "a"), (2, "b"), (2, "b"), (2, "b"), (3, "c"))


def test_without_rows_removes_one_occurrence_per_refused_row() -> None:
    sent = fingerprints(*SENT)
    kept = without_rows([sent.slice(0, 2), sent.slice(2)], [fingerprints((2, "b"))])
    assert as_rows(kept, *SENT) == [(1, "a"), (2, "b"), (2, "b"), (3, "c")]


def test_without_rows_removes_as_many_occurrences_as_were_refused() -> None:
    kept = without_rows([fingerprints(*SENT)], [fingerprints((2, "b")), fingerprints((2, "b"), (3, "c"))])
    assert as_rows(kept, *SENT) == [(1, "a"), (2, "b")]


def test_without_rows_keeps_rows_that_only_share_the_key() -> None:
    sent = ((1, "a"), (1, "b"))
    kept = without_rows([fingerprints(*sent)], [fingerprints((1, "b"))])
    assert as_rows(kept, *sent) == [(1, "a")]


def test_without_rows_ignores_a_refused_row_never_sent() -> None:
    sent = ((1, "a"), (2, "b"))
    kept = without_rows([fingerprints(*sent)], [fingerprints((3, "c")), fingerprints((1, "b"))])
    assert as_rows(kept, *sent) == [(1, "a"), (2, "b")]


def test_without_rows_with_nothing_refused_returns_what_was_sent() -> None:
    sent = [fingerprints((1, "a"))]
    assert without_rows(sent, []) is sent
    assert without_rows([], [fingerprints((1, "a"))]) == []
